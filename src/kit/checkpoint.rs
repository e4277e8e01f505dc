//! Checkpoints of file supplies, stored atomically: written to a temporary file in the
//! same directory, then renamed over the previous one, so a process crash at any point
//! leaves either the old or the new checkpoint, never a torn one.
//!
//! Saving after every acknowledged batch (so a `kill -9` re-sends at most one batch) must
//! be cheap, and a process crash does not lose what the process wrote (it is in the page
//! cache). So a save between two syncs is appended to a journal beside the checkpoint
//! (`.NAME.live`: records `@ LEN HASH\n` + the checkpoint text, one `write` each), not
//! synced; [`CheckpointStore::sync`], called on a timer (every second) and at shutdown,
//! writes the last save durably (temporary file synced, renamed, directory synced) and
//! empties the journal. Loading takes the journal's last whole record, or the checkpoint
//! if the journal has none: a record torn by a crash, or lost with the page cache at a
//! power loss, fails its hash and the previous one counts (at worst the synced
//! checkpoint, at most about a second old), so the state is never torn, only older.
//!
//! Every write carries a generation number in its header (`deadbeat-checkpoint 1 gen N`,
//! counting up across runs): loading takes the newer of the journal's last record and
//! the checkpoint file, so a journal left behind by a failed emptying (after its state
//! was renamed in as the checkpoint) never wins over a later checkpoint. A header
//! without a generation (older versions) counts as generation 0.
//!
//! Format: a header line, then one line per file:
//! `dev ino head_len head_hash offset seen path`, and one line per exactly-once output:
//! `sink dev ino size path`; paths are percent-escaped.
//!
//! A checkpoint may carry a [`Ledger`]: the output sizes of exactly-once file drains fed
//! by the supply. They are saved in the same write as the supply's offsets, so after a
//! crash the offsets and the sizes always belong to the same moment: a drain cuts its
//! output back to the saved size and the supply reads again from the saved offsets.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

const HEADER: &str = "deadbeat-checkpoint 1";
const SINK: &[u8] = b"sink ";

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

/// An [`Entry`] by reference, rendered straight into a checkpoint's text (see
/// [`CheckpointStore::save_lines`]): saving many files clones no path.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    /// See [`Entry::dev`].
    pub dev: u64,
    /// See [`Entry::ino`].
    pub ino: u64,
    /// See [`Entry::head_len`].
    pub head_len: u32,
    /// See [`Entry::head_hash`].
    pub head_hash: u64,
    /// See [`Entry::offset`].
    pub offset: u64,
    /// See [`Entry::seen`].
    pub seen: u64,
    /// See [`Entry::path`].
    pub path: &'a Path,
}

impl EntryRef<'_> {
    /// Appends this entry's line to `text`.
    pub fn render(&self, text: &mut Vec<u8>) {
        let _ = write!(
            text,
            "{} {} {} {} {} {} ",
            self.dev, self.ino, self.head_len, self.head_hash, self.offset, self.seen
        );
        escape(self.path.as_os_str().as_bytes(), text);
        text.push(b'\n');
    }
}

impl Entry {
    /// This entry by reference.
    pub fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            dev: self.dev,
            ino: self.ino,
            head_len: self.head_len,
            head_hash: self.head_hash,
            offset: self.offset,
            seen: self.seen,
            path: &self.path,
        }
    }
}

/// How much of one output file an exactly-once drain had written and acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Device of the output file.
    pub dev: u64,
    /// Inode of the output file.
    pub ino: u64,
    /// Bytes written and acknowledged.
    pub size: u64,
    /// The output's path.
    pub path: PathBuf,
}

/// FNV-1a over `bytes`: a cheap fingerprint of a file's head.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    fingerprint_more(0xcbf2_9ce4_8422_2325, bytes)
}

/// The [`fingerprint`] of what `h` covers followed by `bytes`.
fn fingerprint_more(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The header of generation `generation`.
fn header(generation: u64, out: &mut Vec<u8>) {
    let _ = writeln!(out, "{HEADER} gen {generation}");
}

/// The generation in a checkpoint text's header: 0 if it has none (older versions),
/// `None` if the header is not one.
fn generation_of(text: &[u8]) -> Option<u64> {
    let first = text.split(|&c| c == b'\n').next()?;
    let rest = first.strip_prefix(HEADER.as_bytes())?;
    if rest.is_empty() {
        return Some(0);
    }
    std::str::from_utf8(rest.strip_prefix(b" gen ")?)
        .ok()?
        .parse()
        .ok()
}

/// One checkpoint file.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    path: PathBuf,
    tmp: PathBuf,
    live: PathBuf,
    ledger: Option<Ledger>,
    /// Shared by the clones (the ledger's writes go through one), so one `sync` covers
    /// every write.
    state: Rc<WriteState>,
}

#[derive(Debug, Default)]
struct WriteState {
    /// The directory exists (created once, not checked on every write).
    dir_made: Cell<bool>,
    /// Written since the last sync.
    unsynced: Cell<bool>,
    /// The journal, open for appending; `None` until the first write of this process
    /// (which goes to the checkpoint durably and empties the journal) and after a failed
    /// append.
    live: RefCell<Option<File>>,
    /// Bytes in the journal.
    live_len: Cell<u64>,
    /// The last journal record written; its text, from `last_at`, is for `sync` to store
    /// durably.
    last: RefCell<Vec<u8>>,
    last_at: Cell<usize>,
    /// The generation of the last write; `None` until read from disk at the first write.
    generation: Cell<Option<u64>>,
}

/// Above this, the journal is emptied by a durable write at once.
const LIVE_MAX: u64 = 8 << 20;
const LIVE_MARK: &[u8] = b"@ ";

impl CheckpointStore {
    /// The checkpoint `name` in `dir` (created if missing when first saved).
    pub fn new(dir: &Path, name: &str) -> Self {
        CheckpointStore {
            path: dir.join(name),
            tmp: dir.join(format!(".{name}.tmp")),
            live: dir.join(format!(".{name}.live")),
            ledger: None,
            state: Rc::default(),
        }
    }

    /// Saves `ledger`'s marks with every checkpoint, and lets the ledger save through this
    /// store. Fails if the ledger already belongs to another store: one ledger, one
    /// supply's checkpoint.
    pub fn with_ledger(mut self, ledger: &Ledger) -> Result<Self, String> {
        ledger.attach(&self)?;
        self.ledger = Some(ledger.clone());
        Ok(self)
    }

    /// Where the checkpoint lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the checkpoint; a missing one is empty. A malformed one is an
    /// `InvalidData` error: the caller logs it and starts afresh.
    pub fn load(&self) -> io::Result<Vec<Entry>> {
        match self.current()? {
            Some(bytes) => Ok(parse(&bytes).ok_or_else(malformed)?.0),
            None => Ok(Vec::new()),
        }
    }

    /// The text of the last save that is whole: of the journal's last record and the
    /// checkpoint file, the one of the newer generation (the journal's on a tie); `None`
    /// if there is neither.
    fn current(&self) -> io::Result<Option<Vec<u8>>> {
        let journal = match std::fs::read(&self.live) {
            Ok(journal) => last_record(&journal).map(<[u8]>::to_vec),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let file = match std::fs::read(&self.path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(match (journal, file) {
            (Some(j), Some(f)) => {
                let newer = generation_of(&f).unwrap_or(0) > generation_of(&j).unwrap_or(0);
                Some(if newer { f } else { j })
            }
            (j, f) => j.or(f),
        })
    }

    /// Replaces the checkpoint with `entries` (and the ledger's marks), atomically; durably
    /// once [`sync`](CheckpointStore::sync) has run.
    pub fn save(&self, entries: &[Entry]) -> io::Result<()> {
        let mut text = Vec::with_capacity(entries.len() * 96);
        for e in entries {
            render_entry(e, &mut text);
        }
        self.save_lines(&text)
    }

    /// Like [`save`](CheckpointStore::save), with the entries already rendered (one
    /// [`EntryRef::render`] each) into `lines`.
    pub fn save_lines(&self, lines: &[u8]) -> io::Result<()> {
        match &self.ledger {
            Some(l) => l.save_entries(lines, |parts| self.write(parts)),
            None => self.write(&[lines]),
        }
    }

    /// Writes `body` (the lines after the header) as the whole checkpoint, under the next
    /// generation: appended to the journal, or durably if this is the process's first
    /// write or the journal is large (see the module doc).
    fn write(&self, body: &[&[u8]]) -> io::Result<()> {
        let st = &self.state;
        let generation = match st.generation.get() {
            Some(g) => g + 1,
            // The first write of this process counts on from what is on disk.
            None => {
                let on_disk = self.current().ok().flatten();
                on_disk.and_then(|t| generation_of(&t)).unwrap_or(0) + 1
            }
        };
        st.generation.set(Some(generation));
        let mut head = Vec::with_capacity(48);
        header(generation, &mut head);
        let fresh = st.live.borrow().is_none() || st.live_len.get() > LIVE_MAX;
        if fresh {
            let mut text = head;
            for part in body {
                text.extend_from_slice(part);
            }
            return self.write_durable(&text);
        }
        let len = head.len() + body.iter().map(|p| p.len()).sum::<usize>();
        let hash = body
            .iter()
            .fold(fingerprint(&head), |h, part| fingerprint_more(h, part));
        // The record is built in the buffer of the previous one and kept as the last
        // write for `sync`: no allocation, no second copy.
        let mut rec = std::mem::take(&mut *st.last.borrow_mut());
        rec.clear();
        rec.reserve(len + 48);
        let _ = writeln!(rec, "@ {len} {hash}");
        st.last_at.set(rec.len());
        rec.extend_from_slice(&head);
        for part in body {
            rec.extend_from_slice(part);
        }
        let appended = match st.live.borrow_mut().as_mut() {
            Some(f) => f.write_all(&rec),
            None => Ok(()),
        };
        let rec_len = rec.len() as u64;
        *st.last.borrow_mut() = rec;
        if let Err(e) = appended {
            // A partial record would hide the ones after it: the next write starts a
            // fresh journal.
            *st.live.borrow_mut() = None;
            return Err(e);
        }
        st.live_len.set(st.live_len.get() + rec_len);
        st.unsynced.set(true);
        Ok(())
    }

    /// Writes `text` to the checkpoint file durably (temporary file synced, renamed,
    /// directory synced), then empties the journal.
    fn write_durable(&self, text: &[u8]) -> io::Result<()> {
        let st = &self.state;
        if !st.dir_made.get() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            st.dir_made.set(true);
        }
        let mut f = File::create(&self.tmp)?;
        f.write_all(text)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path)?;
        // The rename itself is durable only once the directory is synced.
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        // Only now may the journal's records go: the checkpoint holds a later state.
        let live = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.live)?;
        live.set_len(0)?;
        *st.live.borrow_mut() = Some(live);
        st.live_len.set(0);
        st.unsynced.set(false);
        Ok(())
    }

    /// Makes the last write durable and empties the journal; does nothing if nothing was
    /// written since the last sync.
    pub fn sync(&self) -> io::Result<()> {
        if !self.state.unsynced.get() {
            return Ok(());
        }
        let last = self.state.last.borrow();
        let text = last.get(self.state.last_at.get()..).unwrap_or_default();
        self.write_durable(text)
    }

    /// Whether something was written since the last [`sync`](CheckpointStore::sync).
    pub fn is_unsynced(&self) -> bool {
        self.state.unsynced.get()
    }
}

/// Output sizes of exactly-once file drains, saved with the checkpoint of the supply that
/// feeds them (see the module doc). Cloning shares it: the supply's store and the drains
/// of one train hold the same ledger. Single-threaded, like the escapement.
#[derive(Debug, Clone, Default)]
pub struct Ledger(Rc<RefCell<LedgerInner>>);

#[derive(Debug, Default)]
struct LedgerInner {
    /// The store that saves the marks (unset until a supply attaches one).
    store: Option<CheckpointStore>,
    /// The supply's entry lines as last loaded or saved: kept so a drain can save its
    /// marks between two saves of the supply.
    entries: Vec<u8>,
    /// Marks found in the checkpoint at load.
    saved: Vec<Mark>,
    loaded: bool,
    /// Marks to save, by output path.
    marks: BTreeMap<PathBuf, Mark>,
}

impl Ledger {
    /// An empty ledger, attached to no store yet.
    pub fn new() -> Self {
        Ledger::default()
    }

    /// Whether a supply's checkpoint carries this ledger.
    pub fn is_attached(&self) -> bool {
        self.0.borrow().store.is_some()
    }

    fn attach(&self, store: &CheckpointStore) -> Result<(), String> {
        let mut inner = self.0.borrow_mut();
        if let Some(other) = &inner.store {
            return Err(format!(
                "the ledger of this train is kept with checkpoint {} already; \
                 exactly-once output takes one checkpointing supply per train",
                other.path.display()
            ));
        }
        inner.store = Some(CheckpointStore {
            ledger: None,
            ..store.clone()
        });
        Ok(())
    }

    fn ensure_loaded(inner: &mut LedgerInner) -> io::Result<()> {
        if inner.loaded {
            return Ok(());
        }
        let Some(store) = &inner.store else {
            return Err(io::Error::other(
                "no checkpointing supply keeps this ledger",
            ));
        };
        let bytes = store.current()?.unwrap_or_default();
        let (entries, saved) = if bytes.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            parse(&bytes).ok_or_else(malformed)?
        };
        inner.entries.clear();
        for e in &entries {
            render_entry(e, &mut inner.entries);
        }
        inner.saved = saved;
        inner.loaded = true;
        Ok(())
    }

    /// The mark the previous run saved for the output at `path`, if any.
    pub fn saved_mark(&self, path: &Path) -> io::Result<Option<Mark>> {
        let mut inner = self.0.borrow_mut();
        Self::ensure_loaded(&mut inner)?;
        Ok(inner.saved.iter().find(|m| m.path == path).cloned())
    }

    /// Sets the mark of `mark.path`, saved with the supply's next checkpoint.
    pub fn set_mark(&self, mark: Mark) {
        let mut inner = self.0.borrow_mut();
        match inner.marks.get_mut(&mark.path) {
            Some(m) => *m = mark,
            None => {
                inner.marks.insert(mark.path.clone(), mark);
            }
        }
    }

    /// Saves the checkpoint now: the supply's entries as last loaded or saved, and the
    /// current marks. A drain calls this at start, so its output has a mark before it
    /// writes anything.
    pub fn save_now(&self) -> io::Result<()> {
        let mut inner = self.0.borrow_mut();
        Self::ensure_loaded(&mut inner)?;
        let Some(store) = inner.store.clone() else {
            return Err(io::Error::other(
                "no checkpointing supply keeps this ledger",
            ));
        };
        let marks = Self::render_marks(&inner);
        store.write(&[&inner.entries, &marks])
    }

    fn save_entries(
        &self,
        entries: &[u8],
        write: impl FnOnce(&[&[u8]]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut inner = self.0.borrow_mut();
        // The previous run's marks must survive a supply save that comes before its
        // drains asked for them. An unreadable checkpoint has none to keep; the supply
        // reports it when it loads its entries.
        if Self::ensure_loaded(&mut inner).is_err() {
            inner.saved.clear();
            inner.loaded = true;
        }
        inner.entries.clear();
        inner.entries.extend_from_slice(entries);
        let marks = Self::render_marks(&inner);
        write(&[&inner.entries, &marks])
    }

    /// The checkpoint's lines of the marks.
    fn render_marks(inner: &LedgerInner) -> Vec<u8> {
        let mut text = Vec::with_capacity(96);
        for m in inner.marks.values() {
            let _ = write!(text, "sink {} {} {} ", m.dev, m.ino, m.size);
            escape(m.path.as_os_str().as_bytes(), &mut text);
            text.push(b'\n');
        }
        // Marks of the previous run whose drain has not set one yet stay, so a drain that
        // starts late still finds its own.
        for m in &inner.saved {
            if !inner.marks.contains_key(&m.path) {
                let _ = write!(text, "sink {} {} {} ", m.dev, m.ino, m.size);
                escape(m.path.as_os_str().as_bytes(), &mut text);
                text.push(b'\n');
            }
        }
        text
    }
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed checkpoint file")
}

/// The text of the last whole record of a journal: records are read in order up to the
/// first one that is torn or fails its hash.
fn last_record(journal: &[u8]) -> Option<&[u8]> {
    let mut last = None;
    let mut pos = 0;
    while pos < journal.len() {
        let rest = &journal[pos..];
        let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
            break;
        };
        let Some(head) = rest[..nl].strip_prefix(LIVE_MARK) else {
            break;
        };
        let mut f = head.split(|&c| c == b' ');
        let num = |f: Option<&[u8]>| -> Option<u64> { std::str::from_utf8(f?).ok()?.parse().ok() };
        let (Some(len), Some(hash)) = (num(f.next()), num(f.next())) else {
            break;
        };
        // The length is read from disk: a corrupt one must not overflow.
        let Some(text) = usize::try_from(len)
            .ok()
            .and_then(|len| (nl + 1).checked_add(len))
            .and_then(|end| rest.get(nl + 1..end))
        else {
            break;
        };
        if fingerprint(text) != hash {
            break;
        }
        last = Some(text);
        pos += nl + 1 + text.len();
    }
    last
}

fn render_entry(e: &Entry, text: &mut Vec<u8>) {
    e.as_ref().render(text);
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

fn parse(bytes: &[u8]) -> Option<(Vec<Entry>, Vec<Mark>)> {
    generation_of(bytes)?;
    let mut lines = bytes.split(|&c| c == b'\n');
    lines.next()?;
    let mut entries = Vec::new();
    let mut marks = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let num = |f: Option<&[u8]>| -> Option<u64> { std::str::from_utf8(f?).ok()?.parse().ok() };
        let to_path = |b: Vec<u8>| PathBuf::from(std::ffi::OsString::from_vec(b));
        if let Some(rest) = line.strip_prefix(SINK) {
            let mut f = rest.splitn(4, |&c| c == b' ');
            let (dev, ino, size) = (num(f.next())?, num(f.next())?, num(f.next())?);
            let path = to_path(unescape(f.next()?)?);
            marks.push(Mark {
                dev,
                ino,
                size,
                path,
            });
            continue;
        }
        let mut f = line.splitn(7, |&c| c == b' ');
        let (dev, ino, head_len, head_hash, offset, seen) = (
            num(f.next())?,
            num(f.next())?,
            num(f.next())?,
            num(f.next())?,
            num(f.next())?,
            num(f.next())?,
        );
        let path = unescape(f.next()?)?;
        entries.push(Entry {
            dev,
            ino,
            head_len: u32::try_from(head_len).ok()?,
            head_hash,
            offset,
            seen,
            path: to_path(path),
        });
    }
    Some((entries, marks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("deadbeat-ckpt-{tag}-{}", std::process::id()))
    }

    fn entry(offset: u64) -> Entry {
        Entry {
            dev: 1,
            ino: 2,
            head_len: 256,
            head_hash: fingerprint(b"x"),
            offset,
            seen: 5,
            path: PathBuf::from("/a dir/100%\nodd.log"),
        }
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let dir = temp_dir("rt");
        let store = CheckpointStore::new(&dir, "t.state");
        assert_eq!(store.load().unwrap(), Vec::new());
        let e = entry(99);
        store.save(std::slice::from_ref(&e)).unwrap();
        assert_eq!(store.load().unwrap(), vec![e]);
        std::fs::write(store.path(), "deadbeat-checkpoint 1\n1 2 x\n").unwrap();
        assert_eq!(store.load().unwrap_err().kind(), io::ErrorKind::InvalidData);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn saves_go_to_the_journal_until_synced_and_a_torn_record_falls_back() {
        let dir = temp_dir("sync");
        let ledger = Ledger::new();
        let store = CheckpointStore::new(&dir, "t.state")
            .with_ledger(&ledger)
            .unwrap();
        store.sync().unwrap();
        // The first save of a process is durable and empties an old journal.
        store.save(&[entry(1)]).unwrap();
        assert!(!store.is_unsynced());
        let on_disk = |p: &Path| parse(&std::fs::read(p).unwrap()).unwrap().0;
        assert_eq!(on_disk(store.path()), vec![entry(1)]);
        // Later saves are appended to the journal, which loading prefers.
        store.save(&[entry(2)]).unwrap();
        store.save(&[entry(3)]).unwrap();
        assert!(store.is_unsynced());
        assert_eq!(on_disk(store.path()), vec![entry(1)]);
        assert_eq!(store.load().unwrap(), vec![entry(3)]);
        // A record torn by a crash: the one before it counts.
        let live = dir.join(".t.state.live");
        let journal = std::fs::read(&live).unwrap();
        std::fs::write(&live, &journal[..journal.len() - 3]).unwrap();
        assert_eq!(store.load().unwrap(), vec![entry(2)]);
        // A journal of garbage (lost at a power loss): the synced checkpoint counts.
        std::fs::write(&live, b"\0\0\0\0").unwrap();
        assert_eq!(store.load().unwrap(), vec![entry(1)]);
        std::fs::write(&live, &journal).unwrap();
        // Syncing writes the last save durably and empties the journal.
        store.sync().unwrap();
        assert!(!store.is_unsynced());
        assert_eq!(on_disk(store.path()), vec![entry(3)]);
        assert_eq!(std::fs::metadata(&live).unwrap().len(), 0);
        // A drain's save through the ledger is synced by the supply's store.
        ledger.save_now().unwrap();
        assert!(store.is_unsynced());
        store.sync().unwrap();
        assert!(!store.is_unsynced());
        assert_eq!(store.load().unwrap(), vec![entry(3)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_journal_length_falls_back_without_overflow() {
        let dir = temp_dir("overflow");
        let store = CheckpointStore::new(&dir, "t.state");
        store.save(&[entry(1)]).unwrap();
        let live = dir.join(".t.state.live");
        std::fs::write(&live, format!("@ {} 0\nxyz", u64::MAX)).unwrap();
        assert_eq!(store.load().unwrap(), vec![entry(1)]);
        std::fs::write(&live, format!("@ {} 0\nxyz", usize::MAX - 2)).unwrap();
        assert_eq!(store.load().unwrap(), vec![entry(1)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_newer_generation_wins_and_old_headers_load() {
        let dir = temp_dir("gen");
        let store = CheckpointStore::new(&dir, "t.state");
        store.save(&[entry(1)]).unwrap();
        store.save(&[entry(2)]).unwrap();
        let live = dir.join(".t.state.live");
        let journal = std::fs::read(&live).unwrap();
        // The journal was not emptied after a later durable write: the checkpoint wins.
        store.sync().unwrap();
        store.save(&[entry(3)]).unwrap();
        store.sync().unwrap();
        std::fs::write(&live, &journal).unwrap();
        assert_eq!(store.load().unwrap(), vec![entry(3)]);
        // A new process counts on from the generation on disk.
        let next = CheckpointStore::new(&dir, "t.state");
        next.save(&[entry(4)]).unwrap();
        next.save(&[entry(5)]).unwrap();
        assert_eq!(next.load().unwrap(), vec![entry(5)]);
        let text = std::fs::read(next.path()).unwrap();
        assert!(
            generation_of(&text).unwrap() > 3,
            "{}",
            String::from_utf8_lossy(&text)
        );
        // A checkpoint of an older version (no generation) loads.
        std::fs::remove_file(&live).unwrap();
        let mut old = b"deadbeat-checkpoint 1\n".to_vec();
        render_entry(&entry(6), &mut old);
        std::fs::write(next.path(), &old).unwrap();
        assert_eq!(next.load().unwrap(), vec![entry(6)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ledger_marks_travel_with_the_entries() {
        let dir = temp_dir("ledger");
        let ledger = Ledger::new();
        assert!(!ledger.is_attached());
        let store = CheckpointStore::new(&dir, "t.state")
            .with_ledger(&ledger)
            .unwrap();
        assert!(ledger.is_attached());
        // A second supply cannot take the same ledger.
        assert!(
            CheckpointStore::new(&dir, "u.state")
                .with_ledger(&ledger)
                .is_err()
        );

        let out = PathBuf::from("/out dir/o.json");
        assert_eq!(ledger.saved_mark(&out).unwrap(), None);
        let mark = |size| Mark {
            dev: 7,
            ino: 8,
            size,
            path: out.clone(),
        };
        // The drain saves its first mark before the supply saved anything.
        ledger.set_mark(mark(10));
        ledger.save_now().unwrap();
        assert_eq!(store.load().unwrap(), Vec::new());
        // The supply's save carries the latest mark.
        ledger.set_mark(mark(20));
        store.save(&[entry(5)]).unwrap();
        // A drain saving between two supply saves keeps the supply's entries.
        ledger.set_mark(mark(30));
        ledger.save_now().unwrap();
        assert_eq!(store.load().unwrap(), vec![entry(5)]);

        // The next run sees both from one file.
        let next = Ledger::new();
        let store2 = CheckpointStore::new(&dir, "t.state")
            .with_ledger(&next)
            .unwrap();
        assert_eq!(next.saved_mark(&out).unwrap(), Some(mark(30)));
        assert_eq!(store2.load().unwrap(), vec![entry(5)]);
        // Until its drain sets a new mark, the old one is kept across supply saves.
        store2.save(&[entry(6)]).unwrap();
        let third = Ledger::new();
        let _store3 = CheckpointStore::new(&dir, "t.state")
            .with_ledger(&third)
            .unwrap();
        assert_eq!(third.saved_mark(&out).unwrap(), Some(mark(30)));

        // A supply that saves before its drain asked for the mark keeps it too.
        let fourth = Ledger::new();
        let store4 = CheckpointStore::new(&dir, "t.state")
            .with_ledger(&fourth)
            .unwrap();
        store4.save(&[entry(7)]).unwrap();
        assert_eq!(fourth.saved_mark(&out).unwrap(), Some(mark(30)));
        let fifth = Ledger::new();
        let _store5 = CheckpointStore::new(&dir, "t.state")
            .with_ledger(&fifth)
            .unwrap();
        assert_eq!(fifth.saved_mark(&out).unwrap(), Some(mark(30)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
