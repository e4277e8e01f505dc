//! Checkpoints of file supplies, stored atomically: written to a temporary file in the
//! same directory, synced, then renamed over the previous one, so a crash at any point
//! leaves either the old or the new checkpoint, never a torn one.
//!
//! Format: a header line, then one line per file:
//! `dev ino head_len head_hash offset seen path`, with the path percent-escaped.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

const HEADER: &str = "deadbeat-checkpoint 1";

/// Where reading one file stopped, and how to recognise that file again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
    /// How many head bytes [`head_hash`](Entry::head_hash) covers.
    pub head_len: u32,
    /// [`fingerprint`] of the file's first `head_len` bytes.
    pub head_hash: u64,
    /// Offset up to which every line was acknowledged.
    pub offset: u64,
    /// When the file was last seen (Unix seconds); long-gone files are forgotten.
    pub seen: u64,
    /// Where the file was last seen.
    pub path: PathBuf,
}

/// FNV-1a over `bytes`: a cheap fingerprint of a file's head.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One checkpoint file.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    path: PathBuf,
    tmp: PathBuf,
}

impl CheckpointStore {
    /// The checkpoint `name` in `dir` (created if missing when first saved).
    pub fn new(dir: &Path, name: &str) -> Self {
        CheckpointStore {
            path: dir.join(name),
            tmp: dir.join(format!(".{name}.tmp")),
        }
    }

    /// Where the checkpoint lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the checkpoint; a missing one is empty. A malformed one is an
    /// `InvalidData` error: the caller logs it and starts afresh.
    pub fn load(&self) -> io::Result<Vec<Entry>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        parse(&bytes)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed checkpoint file"))
    }

    /// Replaces the checkpoint with `entries`, atomically and durably.
    pub fn save(&self, entries: &[Entry]) -> io::Result<()> {
        let mut text = Vec::with_capacity(64 + entries.len() * 96);
        text.extend_from_slice(HEADER.as_bytes());
        text.push(b'\n');
        for e in entries {
            let _ = write!(
                text,
                "{} {} {} {} {} {} ",
                e.dev, e.ino, e.head_len, e.head_hash, e.offset, e.seen
            );
            escape(e.path.as_os_str().as_bytes(), &mut text);
            text.push(b'\n');
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = File::create(&self.tmp)?;
        f.write_all(&text)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path)?;
        // The rename itself is durable only once the directory is synced.
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn escape(b: &[u8], out: &mut Vec<u8>) {
    for &c in b {
        if c <= b' ' || c == b'%' || c == 0x7f {
            let _ = write!(out, "%{c:02x}");
        } else {
            out.push(c);
        }
    }
}

fn unescape(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn parse(bytes: &[u8]) -> Option<Vec<Entry>> {
    let mut lines = bytes.split(|&c| c == b'\n');
    if lines.next()? != HEADER.as_bytes() {
        return None;
    }
    let mut out = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let mut f = line.splitn(7, |&c| c == b' ');
        let mut num = || -> Option<u64> { std::str::from_utf8(f.next()?).ok()?.parse().ok() };
        let (dev, ino, head_len, head_hash, offset, seen) =
            (num()?, num()?, num()?, num()?, num()?, num()?);
        let path = unescape(f.next()?)?;
        out.push(Entry {
            dev,
            ino,
            head_len: u32::try_from(head_len).ok()?,
            head_hash,
            offset,
            seen,
            path: PathBuf::from(std::ffi::OsString::from_vec(path)),
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let dir = std::env::temp_dir().join(format!("deadbeat-ckpt-{}", std::process::id()));
        let store = CheckpointStore::new(&dir, "t.state");
        assert_eq!(store.load().unwrap(), Vec::new());
        let e = Entry {
            dev: 1,
            ino: 2,
            head_len: 256,
            head_hash: fingerprint(b"x"),
            offset: 99,
            seen: 5,
            path: PathBuf::from("/a dir/100%\nodd.log"),
        };
        store.save(std::slice::from_ref(&e)).unwrap();
        assert_eq!(store.load().unwrap(), vec![e]);
        std::fs::write(store.path(), "deadbeat-checkpoint 1\n1 2 x\n").unwrap();
        assert_eq!(store.load().unwrap_err().kind(), io::ErrorKind::InvalidData);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
