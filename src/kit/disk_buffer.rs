//! A disk buffer for forwarding drains: when a drain's memory buffer is full (or its peer
//! is away), rendered frames spill to append-only segment files, are acknowledged to the
//! supplies once they are on disk, and are handed back, oldest first, when the peer can
//! take them.
//!
//! **Adoption.** What a drain's memory buffer holds can be written to disk too, behind
//! what is there and ahead of newer records ([`DiskBuffer::adopt`], [`Spill::adopt`]):
//! the drains do it when the connection is lost, at the first spill and at the stop, so
//! that a stop or a kill -9 while the peer is away loses nothing that memory held (the
//! drains built on [`Outbox`] through [`Spill::adopt`], `http_out` and `redis_out` through
//! [`Spill::adopt_frames`]). Adopted records stay in memory to be sent from there; on disk they count
//! as handed back, and the peer's confirmations reach the disk in their order.
//!
//! **Files.** The buffer owns one directory (`buffer_dir`). Each segment is a file named
//! `NNNNNNNNNNNNNNNNNNNN.seg` (a sequence number, 20 digits, so names sort by age)
//! starting with the 8-byte magic `DBTBUF1\n`, followed by records: a 4-byte
//! little-endian length, a 4-byte little-endian CRC-32C of the length and the frame, then
//! the frame (the bytes the drain sends). A segment is closed and a new one started once
//! it holds [`DiskOptions::segment_bytes`]; it is deleted once every record in it has been
//! confirmed by the peer (or dropped, see below). A `lock` file, held with `flock`, keeps
//! two drains out of one directory. Anything else in the directory is reported at start
//! and left alone.
//!
//! **Writes and syncs.** Frames are gathered in memory and written with one `write` per
//! batch of the drain (or per MiB). A record is acknowledged (`event_done`, which moves
//! the checkpoints of the supplies) only after a `fdatasync` of its segment has
//! completed: the drain runs the sync on a worker thread ([`DiskBuffer::sync_job`]) and
//! acknowledges what it covered when it returns ([`DiskBuffer::synced`]); records written
//! meanwhile wait for the next sync (group commit). A new segment's directory entry is
//! synced with its first sync.
//!
//! **Restart.** [`DiskBuffer::open`] reads every segment left in the directory, checks
//! each record's length and CRC, and truncates a segment at its first bad record (a torn
//! write from a kill -9 or a crash during a write): the cut is counted and logged, never a
//! crash. A file without the magic is reported and skipped. What is left is handed back
//! first, before any newer record. A graceful stop records in a `cursor` file where the
//! oldest segment's confirmed records end, and the next run starts there; after a crash
//! a segment that was partly confirmed is sent again whole (duplicates, at most one
//! segment's worth: delivery is at least once).
//!
//! **Bound.** `max_bytes` bounds the segment files. With `when_full = "block"`, the drain
//! pauses its supplies while the files hold that much ([`DiskBuffer::pressure`]): records
//! it has taken are written all the same, so the files may exceed `max_bytes` by the
//! batch being written when it is reached, and by what the memory buffer held (at most
//! about `buffer_bytes`) when it is adopted. Refusing those would leave records in
//! memory only, behind newer ones on disk (a stop would lose them), for a bound that is
//! the point where the supplies pause. With `"drop_oldest"`, the oldest segments are
//! deleted until the files are back under `max_bytes` (the segment being written, at
//! most `segment_bytes`, excepted), after an adoption too: its records not yet handed
//! back are counted as dropped and logged; those handed back and not confirmed are in
//! the drain's memory, sent from there, and lose only their copy on disk (logged as
//! `in_memory_records`, no longer among the records on disk). They are counted as
//! dropped, once, only if the drain gives up on its peer at a stop before the peer
//! confirms them ([`Spill::give_up`]), and logged as lost if a forced stop comes first.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::kit::BuildCx;
use crate::kit::forward::Outbox;
use crate::prelude::*;
use crate::schema::{CogParams, SettingError};
use slog::Logger;

/// The id a frame read back from disk carries in a memory buffer: its record was
/// acknowledged when it reached the disk, so its confirmation by the peer is counted
/// ([`DiskBuffer::confirm`]) instead. Event ids count from 1: 0 is never a record's.
pub const REPLAYED: EventId = 0;

/// The file naming the oldest segment's confirmed prefix at a graceful stop.
const CURSOR: &str = "cursor";
/// The first bytes of every segment file.
const MAGIC: &[u8; 8] = b"DBTBUF1\n";
/// Length and CRC before each frame.
const HEADER: usize = 8;
/// Frames gathered in memory before they are written, whatever the batch.
const WRITE_AT: usize = 1 << 20;
/// Bytes read from a segment per `pread` when frames are handed back.
const READ_CHUNK: usize = 1 << 20;

crate::choice! {
    /// Where a forwarding drain keeps records while its peer is slow or away.
    pub enum BufferKind { Memory = "memory", Disk = "disk" }
}

crate::choice! {
    /// What a full disk buffer does.
    pub enum WhenFull { Block = "block", DropOldest = "drop_oldest" }
}

crate::settings! {
    /// The disk buffer keys of a forwarding drain.
    pub struct BufferSettings {
        /// memory: records wait in buffer_bytes of memory; disk: beyond that, and all of them while the peer is away, they go to segment files in buffer_dir
        buffer: BufferKind = "memory",
        /// directory of the disk buffer (default: `[state]` dir/buffer-TRAIN-COG)
        buffer_dir: Option<PathBuf>,
        /// the most the disk buffer's files hold
        #[setting(size)]
        max_bytes: usize = "1GiB",
        /// when max_bytes is reached: block pauses the supplies; drop_oldest deletes the oldest segment (counted, logged)
        when_full: WhenFull = "block",
    }
}

/// How a disk buffer is set up.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// The directory of its segment files.
    pub dir: PathBuf,
    /// The most its files hold.
    pub max_bytes: u64,
    /// What happens at `max_bytes`.
    pub when_full: WhenFull,
    /// Size at which a segment is closed: `max_bytes / 16`, between 64 KiB and 64 MiB,
    /// so that dropping or deleting one frees a small part of the bound.
    pub segment_bytes: u64,
}

impl DiskOptions {
    /// The options of `s`, if it asks for a disk buffer; an error naming `buffer_dir` if
    /// it is not given (a relative one is taken from the working directory).
    pub fn new(s: &BufferSettings) -> Result<Option<DiskOptions>, SettingError> {
        if s.buffer == BufferKind::Memory {
            return Ok(None);
        }
        let dir = match &s.buffer_dir {
            Some(d) if d.as_os_str().is_empty() => {
                return Err(SettingError::new("buffer_dir", "must not be empty"));
            }
            Some(d) => d.clone(),
            None => {
                return Err(SettingError::new(
                    "buffer_dir",
                    "buffer = \"disk\" needs buffer_dir (or a `[state]` dir to put it under)",
                ));
            }
        };
        if s.max_bytes < (1 << 20) {
            return Err(SettingError::new("max_bytes", "must be at least 1MiB"));
        }
        let max_bytes = s.max_bytes as u64;
        Ok(Some(DiskOptions {
            dir,
            max_bytes,
            when_full: s.when_full,
            segment_bytes: (max_bytes / 16).clamp(64 << 10, 64 << 20),
        }))
    }

    /// For a cog's `build`: a relative `buffer_dir` is taken from the configuration's
    /// directory; none given, it is `buffer-TRAIN-COG` under `[state] dir`. The directory
    /// is declared, so that `check` reports one that cannot be written.
    pub fn resolve(s: &mut BufferSettings, p: &CogParams<'_>, bx: &BuildCx<'_>) {
        if s.buffer == BufferKind::Memory {
            return;
        }
        s.buffer_dir = match s.buffer_dir.take() {
            Some(d) if d.as_os_str().is_empty() => Some(d),
            Some(d) => Some(match d.to_str() {
                Some(t) => p.resolve(t),
                None => d,
            }),
            None => Self::default_dir(bx.state_dir, p.train(), p.id()),
        };
        if let Some(d) = &s.buffer_dir
            && !d.as_os_str().is_empty()
        {
            bx.will_write_in(d, "buffer_dir", true);
        }
    }

    /// The default directory of a drain's disk buffer: `buffer-TRAIN-COG` under
    /// `state_dir`, or none when there is no state directory.
    pub fn default_dir(state_dir: &Path, train: &str, cog: &str) -> Option<PathBuf> {
        if state_dir.as_os_str().is_empty() {
            return None;
        }
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect()
        };
        Some(state_dir.join(format!("buffer-{}-{}", clean(train), clean(cog))))
    }
}

/// A frame sink: the memory outbox and the disk buffer both take frames rendered in place.
pub trait FrameSink {
    /// Appends the frame of record `id`, written by `render` at the end of the buffer.
    fn push_with(&mut self, id: EventId, render: impl FnOnce(&mut Vec<u8>));
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// Valid bytes of the file (magic and records written).
    len: u64,
    /// Records in the file (written).
    records: u64,
    /// Records handed back to memory.
    loaded: u64,
    /// File offset of the next record to hand back.
    read_off: u64,
    /// Handed-back records the peer confirmed.
    confirmed: u64,
    /// The end offsets of the records handed back and not yet confirmed, oldest first.
    ends: VecDeque<u64>,
    /// File offset just past the last confirmed record.
    confirmed_off: u64,
    /// Deleted by `drop_oldest` before every record was handed back.
    dropped: bool,
    /// The place of its first record in the order of all records written in this run
    /// (those of an earlier run first).
    first: u64,
}

/// The files to `fdatasync` for the records written so far, run on a worker thread.
#[derive(Debug)]
pub struct SyncJob {
    files: Vec<File>,
    dir: Option<File>,
    /// A file to sync could not be opened (or its descriptor duplicated): the sync
    /// fails, as a failed `fdatasync` does, since it cannot cover every record.
    missing: Option<io::Error>,
}

impl SyncJob {
    /// Syncs every file; the first error ends it.
    pub fn run(self) -> io::Result<()> {
        if let Some(e) = self.missing {
            return Err(e);
        }
        for f in &self.files {
            f.sync_data()?;
        }
        if let Some(d) = &self.dir {
            d.sync_all()?;
        }
        Ok(())
    }
}

/// What [`DiskBuffer::open`] found in the directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Segments with records.
    pub segments: usize,
    /// Records in them.
    pub records: u64,
    /// Bytes cut from segments at a bad record (torn writes).
    pub torn_bytes: u64,
    /// Segments cut so.
    pub torn_segments: usize,
    /// Files that are not segments, or segments without the magic, skipped.
    pub skipped: usize,
}

/// The segment files of one drain, their write and read positions, and the records
/// waiting for a sync. See the [module documentation](self).
pub struct DiskBuffer {
    opts: DiskOptions,
    /// Oldest first; the last one is written to while `writer` is open.
    segments: VecDeque<Segment>,
    writer: Option<File>,
    /// The directory, synced with the first sync after a segment was created.
    dir_dirty: bool,
    next_seq: u64,
    /// Frames gathered, not yet written, and their ids.
    wbuf: Vec<u8>,
    wbuf_ids: Vec<EventId>,
    /// Records written, waiting for the next sync.
    written_ids: Vec<EventId>,
    /// Records the running sync covers.
    syncing_ids: Vec<EventId>,
    /// The place of the next record written (see `Segment::first`), and that of the first
    /// record the running sync covers.
    next_place: u64,
    syncing_from: u64,
    /// Records whose sync failed, with their places, oldest first: acknowledged once the
    /// peer confirms them (or their segment goes).
    unsynced: VecDeque<(u64, EventId)>,
    syncing: bool,
    /// Closed segments written since the last sync started.
    dirty: Vec<File>,
    /// The open segment was written since the last sync started.
    writer_dirty: bool,
    /// The segment being read and a window of it.
    reader: Option<(u64, File)>,
    rbuf: Vec<u8>,
    /// File offset of `rbuf[0]` in the reader's segment.
    rbuf_off: u64,
    /// Bytes of the segment files (valid ones) and records not yet confirmed or dropped.
    bytes: u64,
    held: u64,
    /// Records not yet handed back (written or gathered).
    unloaded: u64,
    /// Records dropped by `drop_oldest` since the start.
    dropped: u64,
    /// Records handed back (in the drain's memory) whose segment `drop_oldest` deleted,
    /// not yet confirmed by the peer: memory holds their only copy.
    orphans: u64,
    /// A write failed: the buffer takes no more until one succeeds.
    failing: bool,
    _lock: File,
}

impl std::fmt::Debug for DiskBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskBuffer")
            .field("dir", &self.opts.dir)
            .field("bytes", &self.bytes)
            .field("records", &self.held)
            .finish()
    }
}

impl DiskBuffer {
    /// Opens (creating it if needed) and locks the directory, and reads what a previous
    /// run left there. Torn records and foreign files are logged under `cog`.
    pub fn open(opts: DiskOptions, cog: &str, log: &Logger) -> io::Result<(Self, Recovered)> {
        let ctx = |what: &str, p: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
        };
        std::fs::create_dir_all(&opts.dir).map_err(|e| ctx("cannot create", &opts.dir, e))?;
        let lock_path = opts.dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| ctx("cannot open", &lock_path, e))?;
        // SAFETY: flock on a descriptor owned by `lock`, alive for the call.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(ctx(
                "the disk buffer is in use by another drain:",
                &lock_path,
                e,
            ));
        }
        let mut found = Vec::new();
        let mut rec = Recovered::default();
        let mut next_seq = 1;
        for entry in std::fs::read_dir(&opts.dir).map_err(|e| ctx("cannot list", &opts.dir, e))? {
            let entry = entry.map_err(|e| ctx("cannot list", &opts.dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == "lock" || name == CURSOR {
                continue;
            }
            let seq = name
                .strip_suffix(".seg")
                .filter(|s| s.len() == 20)
                .and_then(|s| s.parse::<u64>().ok());
            match seq {
                Some(seq) => {
                    next_seq = next_seq.max(seq + 1);
                    found.push((seq, entry.path()));
                }
                None => {
                    rec.skipped += 1;
                    slog::warn!(log, "a file in the disk buffer's directory is not a segment; skipped";
                        "cog" => cog, "file" => %entry.path().display());
                }
            }
        }
        found.sort();
        let mut segments = VecDeque::new();
        let mut bytes = 0;
        let mut held = 0;
        for (seq, path) in found {
            match scan(&path) {
                Ok(Scan::Foreign) => {
                    rec.skipped += 1;
                    slog::error!(log, "a segment of the disk buffer has no valid header; skipped";
                        "cog" => cog, "file" => %path.display());
                }
                Ok(Scan::Valid { len, records, cut }) => {
                    if cut > 0 {
                        rec.torn_bytes += cut;
                        rec.torn_segments += 1;
                        slog::warn!(log, "a torn or corrupt record at the end of a disk buffer segment; truncated";
                            "cog" => cog, "file" => %path.display(), "valid_records" => records,
                            "valid_bytes" => len, "cut_bytes" => cut);
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| ctx("cannot open", &path, e))?;
                        f.set_len(len)
                            .map_err(|e| ctx("cannot truncate", &path, e))?;
                        f.sync_all().map_err(|e| ctx("cannot sync", &path, e))?;
                    }
                    if records == 0 {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    rec.segments += 1;
                    rec.records += records;
                    bytes += len;
                    held += records;
                    segments.push_back(Segment {
                        seq,
                        path,
                        len,
                        records,
                        loaded: 0,
                        read_off: MAGIC.len() as u64,
                        confirmed: 0,
                        ends: VecDeque::new(),
                        confirmed_off: MAGIC.len() as u64,
                        dropped: false,
                        first: 0,
                    });
                }
                Err(e) => {
                    rec.skipped += 1;
                    slog::error!(log, "cannot read a segment of the disk buffer; skipped";
                        "cog" => cog, "file" => %path.display(), "error" => %e);
                }
            }
        }
        // The confirmed prefix a graceful stop recorded: read once, then removed (a crash
        // later must not skip records the new run hands out).
        let cursor_path = opts.dir.join(CURSOR);
        if let Ok(text) = std::fs::read_to_string(&cursor_path) {
            let _ = std::fs::remove_file(&cursor_path);
            let mut f = text.split_whitespace().map(str::parse::<u64>);
            if let (Some(Ok(seq)), Some(Ok(off)), Some(Ok(n))) = (f.next(), f.next(), f.next())
                && let Some(s) = segments.front_mut().filter(|s| s.seq == seq)
                && n < s.records
                && off < s.len
                && scan_count(&s.path, off).is_ok_and(|c| c == Some(n))
            {
                s.read_off = off;
                s.loaded = n;
                s.confirmed = n;
                s.confirmed_off = off;
                held -= n;
                rec.records -= n;
            }
        }
        let mut next_place = 0;
        for s in segments.iter_mut() {
            s.first = next_place;
            next_place += s.records;
        }
        let buf = DiskBuffer {
            opts,
            segments,
            next_place,
            syncing_from: 0,
            unsynced: VecDeque::new(),
            writer: None,
            dir_dirty: false,
            next_seq,
            wbuf: Vec::new(),
            wbuf_ids: Vec::new(),
            written_ids: Vec::new(),
            syncing_ids: Vec::new(),
            syncing: false,
            dirty: Vec::new(),
            writer_dirty: false,
            reader: None,
            rbuf: Vec::new(),
            rbuf_off: 0,
            bytes,
            held,
            unloaded: held,
            dropped: 0,
            orphans: 0,
            failing: false,
            _lock: lock,
        };
        Ok((buf, rec))
    }

    /// The options it was opened with.
    pub fn options(&self) -> &DiskOptions {
        &self.opts
    }

    /// Bytes of its segment files and of frames gathered for them.
    pub fn bytes(&self) -> u64 {
        self.bytes + self.wbuf.len() as u64
    }

    /// Records on disk (or gathered) not yet confirmed by the peer nor dropped.
    pub fn records(&self) -> u64 {
        self.held + self.wbuf_ids.len() as u64
    }

    /// Records dropped by `drop_oldest` since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Records the drain's memory holds whose segment `drop_oldest` deleted and which the
    /// peer has not confirmed: sent from memory, but no longer on disk (not among
    /// [`records`](Self::records)).
    pub fn orphans(&self) -> u64 {
        self.orphans
    }

    /// The drain gives up on its peer at a stop: its [`orphans`](Self::orphans) will not
    /// be confirmed, and are dropped now. Returns how many.
    pub fn give_up_orphans(&mut self) -> u64 {
        std::mem::take(&mut self.orphans)
    }

    /// Whether records of a drain's memory buffer may be put on disk
    /// ([`adopt`](Self::adopt)): no record written waits to be handed back.
    pub fn can_adopt(&self) -> bool {
        self.unloaded == 0
    }

    /// Whether records wait to be handed back: newer records must then follow them here,
    /// so that the order holds.
    pub fn has_unloaded(&self) -> bool {
        self.unloaded > 0 || !self.wbuf_ids.is_empty()
    }

    /// Whether the last write failed (the frames wait for the next attempt).
    pub fn is_failing(&self) -> bool {
        self.failing
    }

    /// Records gathered and not written yet (a write failed), and the bytes of their
    /// frames: only memory holds them.
    pub fn unwritten(&self) -> (u64, u64) {
        let n = self.wbuf_ids.len() as u64;
        (
            n,
            (self.wbuf.len() as u64).saturating_sub(n * HEADER as u64),
        )
    }

    /// Records written to the segment files and not yet confirmed nor dropped, and the
    /// bytes of the files.
    pub fn written(&self) -> (u64, u64) {
        (self.held, self.bytes)
    }

    /// Whether frames wait to be written or records to be synced and acknowledged.
    pub fn has_pending(&self) -> bool {
        !self.wbuf_ids.is_empty() || !self.written_ids.is_empty() || self.syncing
    }

    /// The fill that backpressure compares with `max_bytes`: the bytes held with `block`,
    /// nothing with `drop_oldest` (it never pauses), and `max_bytes` while writes fail.
    pub fn pressure(&self) -> usize {
        if self.failing {
            return usize::MAX;
        }
        match self.opts.when_full {
            WhenFull::Block => self.bytes() as usize,
            WhenFull::DropOldest => 0,
        }
    }

    /// Writes the frames gathered so far (one `write`), rotating segments and, with
    /// `drop_oldest`, deleting the oldest ones beyond `max_bytes`. Returns the records
    /// dropped so. A failed write keeps the frames for the next call (logged by the
    /// caller); the buffer reports full pressure meanwhile.
    pub fn write_pending(&mut self, cog: &str, log: &Logger) -> io::Result<u64> {
        if self.wbuf_ids.is_empty() {
            return Ok(0);
        }
        if self.writer.is_none()
            && let Err(e) = self.create_segment()
        {
            self.failing = true;
            return Err(e);
        }
        let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            return Err(io::Error::other("no segment to write to"));
        };
        if let Err(e) = write_at_end(w, seg, &self.wbuf) {
            self.failing = true;
            return Err(e);
        }
        self.failing = false;
        let n = self.wbuf_ids.len() as u64;
        seg.len += self.wbuf.len() as u64;
        seg.records += n;
        self.bytes += self.wbuf.len() as u64;
        self.held += n;
        self.unloaded += n;
        self.next_place += n;
        self.wbuf.clear();
        self.written_ids.append(&mut self.wbuf_ids);
        self.writer_dirty = true;
        if seg.len >= self.opts.segment_bytes {
            // Closed: the next write starts a new segment.
            self.close_writer();
        }
        Ok(self.drop_oldest(cog, log))
    }

    /// Writes `frames`, the records a drain's memory buffer holds (ids and frames, oldest
    /// first), after every record on disk, with one `write`: they are acknowledged by the
    /// next sync, as spilled records are, and survive a stop or a kill. They stay in
    /// memory to be sent from there: on disk they count as handed back already, so the
    /// peer's confirmations of them ([`confirm`](Self::confirm)) come in their order.
    ///
    /// Only while no record written waits on disk to be handed back (those are newer than
    /// what memory holds, so nothing could go ahead of them): `Ok(None)` then, nothing
    /// done. Frames gathered whose write failed (newer too) go after them in the same
    /// write, to be handed back from the disk. `Ok(Some(dropped))` once written
    /// (`dropped`: records `drop_oldest` dropped to make room). A failed write changes
    /// nothing: the records stay in memory only, the gathered frames wait.
    pub fn adopt<'a>(
        &mut self,
        frames: impl IntoIterator<Item = (EventId, &'a [u8])>,
        cog: &str,
        log: &Logger,
    ) -> io::Result<Option<u64>> {
        if !self.can_adopt() {
            return Ok(None);
        }
        // The adopted frames go first; the record ends are kept relative to them.
        let gathered = std::mem::take(&mut self.wbuf);
        let gathered_ids = std::mem::take(&mut self.wbuf_ids);
        let mut ends = Vec::new();
        for (id, f) in frames {
            self.push_with(id, |v| v.extend_from_slice(f));
            ends.push(self.wbuf.len() as u64);
        }
        if ends.is_empty() {
            self.wbuf = gathered;
            self.wbuf_ids = gathered_ids;
            return Ok(Some(0));
        }
        let adopted_len = self.wbuf.len() as u64;
        let m = gathered_ids.len() as u64;
        self.wbuf.extend_from_slice(&gathered);
        self.wbuf_ids.extend_from_slice(&gathered_ids);
        let written = self.write_adopted();
        if written.is_err() {
            self.wbuf = gathered;
            self.wbuf_ids = gathered_ids;
        }
        let start = written?;
        let n = ends.len() as u64;
        let Some(seg) = self.segments.back_mut() else {
            return Err(io::Error::other("no segment written to"));
        };
        seg.len += self.wbuf.len() as u64;
        seg.records += n + m;
        seg.loaded += n;
        seg.read_off = start + adopted_len;
        seg.ends.extend(ends.into_iter().map(|e| start + e));
        self.bytes += self.wbuf.len() as u64;
        self.held += n + m;
        self.unloaded += m;
        self.next_place += n + m;
        self.failing = false;
        self.wbuf.clear();
        if self.wbuf.capacity() > 2 * WRITE_AT {
            // A whole memory buffer was gathered: its room is not kept for the spills.
            self.wbuf = Vec::new();
        }
        self.written_ids.append(&mut self.wbuf_ids);
        self.writer_dirty = true;
        // The read window no longer matches the segment's read offset.
        self.reader = None;
        if seg.len >= self.opts.segment_bytes {
            self.close_writer();
        }
        Ok(Some(self.drop_oldest(cog, log)))
    }

    /// Writes the gather buffer to the open segment (creating one if needed); returns
    /// the offset it starts at. On failure the segment is cut back to its last record.
    fn write_adopted(&mut self) -> io::Result<u64> {
        if self.writer.is_none() {
            self.create_segment()?;
        }
        let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            return Err(io::Error::other("no segment to write to"));
        };
        write_at_end(w, seg, &self.wbuf)?;
        Ok(seg.len)
    }

    fn create_segment(&mut self) -> io::Result<()> {
        let seq = self.next_seq;
        let path = self.opts.dir.join(format!("{seq:020}.seg"));
        // Not appending: every write goes at the end of the valid records
        // (`write_at_end`), over what a failed one left if it could not be cut back.
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
            })?;
        // The name is spent whether or not the header goes in: a file left behind by a
        // failed write would refuse every later segment of that name (EEXIST).
        self.next_seq += 1;
        if let Err(e) = f.write_all(MAGIC) {
            drop(f);
            // Best effort: a file left here is skipped as foreign when the buffer reopens.
            let _ = std::fs::remove_file(&path);
            return Err(io::Error::new(
                e.kind(),
                format!("cannot write to {}: {e}", path.display()),
            ));
        }
        self.dir_dirty = true;
        self.bytes += MAGIC.len() as u64;
        self.segments.push_back(Segment {
            seq,
            path,
            len: MAGIC.len() as u64,
            records: 0,
            loaded: 0,
            read_off: MAGIC.len() as u64,
            confirmed: 0,
            ends: VecDeque::new(),
            confirmed_off: MAGIC.len() as u64,
            dropped: false,
            first: self.next_place,
        });
        self.writer = Some(f);
        Ok(())
    }

    fn drop_oldest(&mut self, cog: &str, log: &Logger) -> u64 {
        if self.opts.when_full != WhenFull::DropOldest {
            return 0;
        }
        let mut dropped = 0;
        while self.bytes > self.opts.max_bytes {
            let writing = self.writer.is_some();
            let last = self.segments.len() - 1;
            let Some((_, s)) = self
                .segments
                .iter_mut()
                .enumerate()
                .find(|(i, s)| !(s.dropped || (writing && *i == last)))
            else {
                break;
            };
            // Records not handed back are dropped; those handed back and not confirmed
            // are in the drain's memory, sent from there: they lose their copy on disk
            // only, and are dropped if the drain stops before the peer confirms them
            // (`give_up_orphans`).
            let lost = s.records - s.loaded;
            let orphaned = s.loaded - s.confirmed;
            s.dropped = true;
            s.records = s.loaded;
            self.bytes -= s.len;
            self.held -= lost + orphaned;
            self.unloaded -= lost;
            self.orphans += orphaned;
            dropped += lost;
            let _ = std::fs::remove_file(&s.path);
            slog::warn!(log, "disk buffer full: oldest segment dropped";
                "cog" => cog, "file" => %s.path.display(), "dropped_records" => lost,
                "in_memory_records" => orphaned, "max_bytes" => self.opts.max_bytes);
            if self.reader.as_ref().is_some_and(|r| r.0 == s.seq) {
                self.reader = None;
            }
        }
        self.dropped += dropped;
        self.collect();
        dropped
    }

    /// The sync to run on a worker thread for the records written since the last one,
    /// unless one runs or nothing waits.
    pub fn sync_job(&mut self) -> Option<SyncJob> {
        if self.syncing || self.written_ids.is_empty() {
            return None;
        }
        self.syncing = true;
        // The records written since the last sync started are the last ones written.
        self.syncing_from = self.next_place - self.written_ids.len() as u64;
        std::mem::swap(&mut self.syncing_ids, &mut self.written_ids);
        let mut files = std::mem::take(&mut self.dirty);
        let mut missing = None;
        if std::mem::take(&mut self.writer_dirty)
            && let Some(w) = self.writer.as_ref()
        {
            match w.try_clone() {
                Ok(f) => files.push(f),
                Err(e) => {
                    // Written again before the next sync, it is synced then.
                    self.writer_dirty = true;
                    let path = self.segments.back().map(|s| s.path.display().to_string());
                    missing = Some(io::Error::new(
                        e.kind(),
                        format!("cannot reopen {} to sync it: {e}", path.unwrap_or_default()),
                    ));
                }
            }
        }
        let dir = if std::mem::take(&mut self.dir_dirty) {
            match File::open(&self.opts.dir) {
                Ok(d) => Some(d),
                Err(e) => {
                    // The new segment's entry is synced with the next sync that can.
                    self.dir_dirty = true;
                    missing.get_or_insert(io::Error::new(
                        e.kind(),
                        format!("cannot open {} to sync it: {e}", self.opts.dir.display()),
                    ));
                    None
                }
            }
        } else {
            None
        };
        Some(SyncJob {
            files,
            dir,
            missing,
        })
    }

    /// The sync [`sync_job`](Self::sync_job) handed out has returned: on success its
    /// records are acknowledged. On failure they are once the peer confirms them (after a
    /// restart first, their supplies read them again) and the error is returned for the
    /// caller to log.
    pub fn synced(&mut self, r: io::Result<()>, cx: &mut Ctx<'_>) -> io::Result<()> {
        self.synced_with(r, |id| cx.event_done(id))
    }

    /// [`synced`](Self::synced), acknowledging with `ack`.
    fn synced_with(&mut self, r: io::Result<()>, mut ack: impl FnMut(EventId)) -> io::Result<()> {
        self.syncing = false;
        let ids = &self.syncing_ids;
        if r.is_ok() {
            for &id in ids {
                ack(id);
            }
        } else {
            // A sync is not tried again: after a failed fdatasync the kernel may have
            // dropped the pages, and a second one can succeed without writing them. The
            // peer's confirmation covers them instead (records adopted from memory may
            // have had it already).
            let from = self.syncing_from;
            self.unsynced
                .extend(ids.iter().enumerate().map(|(i, &id)| (from + i as u64, id)));
            self.release(&mut ack);
        }
        self.syncing_ids.clear();
        r
    }

    /// Acknowledges the records whose sync failed and which the peer has confirmed since,
    /// or whose segment went (confirmed whole, or dropped).
    fn release(&mut self, ack: &mut impl FnMut(EventId)) {
        while let Some(&(place, id)) = self.unsynced.front() {
            let confirmed = match self.segments.iter().rev().find(|s| s.first <= place) {
                Some(s) => place - s.first < s.confirmed,
                // Its segment went.
                None => true,
            };
            if !confirmed {
                break;
            }
            ack(id);
            self.unsynced.pop_front();
        }
    }

    /// Writes and syncs on this thread, then acknowledges: at the end of a run.
    pub fn sync_now(&mut self, cog: &str, cx: &mut Ctx<'_>) -> io::Result<()> {
        let log = cx.logger().clone();
        self.write_pending(cog, &log)?;
        if self.syncing {
            // The worker's result arrives later; these go with the next one.
            return Ok(());
        }
        match self.sync_job() {
            Some(job) => {
                let r = job.run();
                self.synced(r, cx)
            }
            None => Ok(()),
        }
    }

    /// Hands back written frames, oldest first, to `push`, until `budget` bytes of frames
    /// went out or none is left on disk. Returns the records handed back. A frame whose
    /// CRC fails (the file changed under the buffer) ends its segment: logged, and its
    /// remaining records count as dropped.
    pub fn load(
        &mut self,
        budget: usize,
        cog: &str,
        log: &Logger,
        mut push: impl FnMut(&[u8]),
    ) -> u64 {
        let mut given = 0usize;
        let mut n = 0;
        while given < budget && self.unloaded > 0 {
            let Some(s) = self.segments.iter_mut().find(|s| s.loaded < s.records) else {
                break;
            };
            if self.reader.as_ref().is_none_or(|r| r.0 != s.seq) {
                match File::open(&s.path) {
                    Ok(f) => self.reader = Some((s.seq, f)),
                    Err(e) => {
                        lose_rest(s, &mut self.held, &mut self.unloaded, &mut self.dropped);
                        slog::error!(log, "cannot read a disk buffer segment; its records are lost";
                            "cog" => cog, "file" => %s.path.display(), "error" => %e);
                        continue;
                    }
                }
                self.rbuf.clear();
                self.rbuf_off = s.read_off;
            }
            let Some((_, f)) = &self.reader else { break };
            // The window holds [rbuf_off, rbuf_off + rbuf.len()); the next record starts at
            // read_off.
            let at = (s.read_off - self.rbuf_off) as usize;
            let have = self.rbuf.len() - at;
            let need = if have >= HEADER {
                let b = &self.rbuf[at..at + 4];
                HEADER + u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
            } else {
                HEADER
            };
            if have < need {
                // Refill: keep the partial record, read at least a chunk after it.
                self.rbuf.drain(..at);
                self.rbuf_off = s.read_off;
                let want = need.max(READ_CHUNK);
                let old = self.rbuf.len();
                let avail = (s.len - s.read_off) as usize;
                let to = want.min(avail).max(old);
                self.rbuf.resize(to, 0);
                if let Err(e) = f.read_exact_at(&mut self.rbuf[old..], s.read_off + old as u64) {
                    self.rbuf.truncate(old);
                    lose_rest(s, &mut self.held, &mut self.unloaded, &mut self.dropped);
                    slog::error!(log, "cannot read a disk buffer segment; its records are lost";
                        "cog" => cog, "file" => %s.path.display(), "error" => %e);
                    continue;
                }
                if self.rbuf.len() < need {
                    lose_rest(s, &mut self.held, &mut self.unloaded, &mut self.dropped);
                    slog::error!(log, "a disk buffer segment ends inside a record; its remaining records are lost";
                        "cog" => cog, "file" => %s.path.display());
                    continue;
                }
                continue;
            }
            let h = &self.rbuf[at..at + HEADER];
            let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            let frame = &self.rbuf[at + HEADER..at + need];
            if crc32c_update(crc32c_update(0, &h[..4]), frame) != crc {
                lose_rest(s, &mut self.held, &mut self.unloaded, &mut self.dropped);
                slog::error!(log, "a record of a disk buffer segment fails its CRC; the rest of the segment is lost";
                    "cog" => cog, "file" => %s.path.display(), "offset" => s.read_off);
                continue;
            }
            push(frame);
            given += frame.len();
            s.read_off += need as u64;
            s.ends.push_back(s.read_off);
            s.loaded += 1;
            self.unloaded -= 1;
            n += 1;
        }
        n
    }

    /// The peer confirmed the next `n` records handed back: a segment all of whose
    /// records are confirmed is deleted. The count runs in the order the records were
    /// handed back (read back or adopted): a drain whose peer may confirm them in another
    /// order (`http_out`'s `_bulk` items sent again) passes on only the records confirmed
    /// in a row from the oldest. Records whose sync failed are acknowledged with `ack`
    /// once confirmed.
    pub fn confirm(&mut self, mut n: u64, mut ack: impl FnMut(EventId)) {
        while n > 0 {
            let Some(s) = self.segments.iter_mut().find(|s| s.confirmed < s.loaded) else {
                break;
            };
            let k = n.min(s.loaded - s.confirmed);
            s.confirmed += k;
            for _ in 0..k {
                if let Some(e) = s.ends.pop_front() {
                    s.confirmed_off = e;
                }
            }
            if s.dropped {
                // Given up at a stop, they are no longer counted.
                self.orphans = self.orphans.saturating_sub(k);
            } else {
                self.held -= k;
            }
            n -= k;
        }
        self.collect();
        if !self.unsynced.is_empty() {
            self.release(&mut ack);
        }
    }

    /// Closes the open segment; written and not yet synced, it waits in `dirty`.
    fn close_writer(&mut self) {
        if let Some(w) = self.writer.take()
            && std::mem::take(&mut self.writer_dirty)
        {
            self.dirty.push(w);
        }
    }

    /// Writes the `cursor` file: where the oldest segment's confirmed records end, so
    /// that the next run does not send them again (at a graceful stop; a crash sends the
    /// segment again whole).
    pub fn save_cursor(&self) -> io::Result<()> {
        let path = self.opts.dir.join(CURSOR);
        match self
            .segments
            .front()
            .filter(|s| !s.dropped && s.confirmed > 0)
        {
            Some(s) => {
                let text = format!("{} {} {}\n", s.seq, s.confirmed_off, s.confirmed);
                let tmp = self.opts.dir.join("cursor.tmp");
                std::fs::write(&tmp, text)?;
                std::fs::rename(&tmp, &path)
            }
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// Deletes the oldest segments whose records are all confirmed (or dropped).
    fn collect(&mut self) {
        while let Some(s) = self.segments.front() {
            let writing = self.writer.is_some() && self.segments.len() == 1;
            if s.confirmed < s.records || (writing && !s.dropped && s.records == 0) {
                break;
            }
            let Some(s) = self.segments.pop_front() else {
                break;
            };
            if writing {
                // Everything written was confirmed: the next spill starts a new segment.
                self.close_writer();
            }
            if !s.dropped {
                self.bytes -= s.len;
                let _ = std::fs::remove_file(&s.path);
            }
            if self.reader.as_ref().is_some_and(|r| r.0 == s.seq) {
                self.reader = None;
            }
        }
    }
}

impl FrameSink for DiskBuffer {
    #[inline]
    fn push_with(&mut self, id: EventId, render: impl FnOnce(&mut Vec<u8>)) {
        let at = self.wbuf.len();
        self.wbuf.extend_from_slice(&[0; HEADER]);
        render(&mut self.wbuf);
        let len = (self.wbuf.len() - at - HEADER) as u32;
        let lb = len.to_le_bytes();
        let crc = crc32c_update(crc32c_update(0, &lb), &self.wbuf[at + HEADER..]);
        self.wbuf[at..at + 4].copy_from_slice(&lb);
        self.wbuf[at + 4..at + HEADER].copy_from_slice(&crc.to_le_bytes());
        self.wbuf_ids.push(id);
    }
}

impl DiskBuffer {
    /// Whether enough frames are gathered to write them now, whatever the batch.
    pub fn should_write(&self) -> bool {
        let open = match (&self.writer, self.segments.back()) {
            (Some(_), Some(s)) => s.len,
            _ => MAGIC.len() as u64,
        };
        self.wbuf.len() >= WRITE_AT || open + self.wbuf.len() as u64 >= self.opts.segment_bytes
    }
}

/// How long after a failed write to a disk buffer it is tried again.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a drain's `done` waits for a sync still running on a worker (the end of
/// `drain_timeout` came first): its result would come after the drain finished, refused.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The result of a sync running on a worker thread, which the loop can also wait for at
/// the end of a stop (the engine hands it back as a job result only to a running cog).
#[derive(Debug, Clone, Default)]
struct SyncSlot(std::sync::Arc<(std::sync::Mutex<Option<io::Result<()>>>, std::sync::Condvar)>);

impl SyncSlot {
    /// On the worker: the sync's result (a copy: `io::Error` does not clone).
    fn put(&self, r: &io::Result<()>) {
        let copy = match r {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        let (m, c) = &*self.0;
        *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(copy);
        c.notify_all();
    }

    /// The result, once the sync returned, waiting at most `bound`.
    fn wait(&self, bound: std::time::Duration) -> Option<io::Result<()>> {
        let (m, c) = &*self.0;
        let g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut g, _) = c
            .wait_timeout_while(g, bound, |r| r.is_none())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.take()
    }
}

/// A drain's disk buffer with its plumbing on the loop: opened by `start`, writes retried
/// after a failure, syncs on a worker thread and the acknowledgements they bring, status,
/// and the stop. Without options (`buffer = "memory"`) every call does nothing.
#[derive(Debug)]
pub struct Spill {
    name: &'static str,
    opts: Option<DiskOptions>,
    buf: Option<DiskBuffer>,
    sync_job: Option<JobId>,
    /// The running sync's result, for a `done` that comes before it is handed back.
    sync_slot: SyncSlot,
    retry: Option<TimerId>,
    retry_local: Local,
    /// Records `drop_oldest` dropped while the memory buffer was adopted, for the next
    /// [`step`](Spill::step) to report.
    dropped: u64,
    /// At a parked stop, records only memory holds (their adoption by the disk failed):
    /// tried again with the retry timer; the drain waits for them until `drain_timeout`.
    memory_only: u64,
    /// The key the user sets for the drain's bound on a stop, named in the logs.
    timeout_key: &'static str,
}

impl Spill {
    /// The disk buffer of the drain `name` (for logs), if `opts` asks for one; a failed
    /// write is retried with a timer of `retry_local`.
    pub fn new(name: &'static str, opts: Option<DiskOptions>, retry_local: Local) -> Self {
        Spill {
            name,
            opts,
            buf: None,
            sync_job: None,
            sync_slot: SyncSlot::default(),
            retry: None,
            retry_local,
            dropped: 0,
            memory_only: 0,
            timeout_key: "drain_timeout",
        }
    }

    /// The same, for a drain whose bound on a stop the user sets as `key` (`http_out`:
    /// `shutdown_timeout`), so that the logs name the key the user knows.
    pub fn with_timeout_key(mut self, key: &'static str) -> Self {
        self.timeout_key = key;
        self
    }

    /// The bound of the files, with a disk buffer.
    pub fn max_bytes(&self) -> Option<u64> {
        self.opts
            .as_ref()
            .or(self.buf.as_ref().map(DiskBuffer::options))
            .map(|o| o.max_bytes)
    }

    /// The buffer, once opened.
    pub fn buffer(&self) -> Option<&DiskBuffer> {
        self.buf.as_ref()
    }

    /// The buffer, once opened.
    pub fn buffer_mut(&mut self) -> Option<&mut DiskBuffer> {
        self.buf.as_mut()
    }

    /// Opens the buffer (for the drain's `start`); logs what an earlier run left.
    pub fn start(&mut self, cx: &mut Ctx<'_>) -> Result<(), BoxError> {
        let Some(opts) = self.opts.take() else {
            return Ok(());
        };
        let dir = opts.dir.clone();
        let (buf, found) = DiskBuffer::open(opts, self.name, cx.logger())
            .map_err(|e| format!("{}: disk buffer {}: {e}", self.name, dir.display()))?;
        if found.records > 0 {
            slog::info!(cx.logger(), "disk buffer holds records of an earlier run; they go first";
                "cog" => self.name, "dir" => %dir.display(), "records" => found.records,
                "segments" => found.segments, "torn_segments" => found.torn_segments,
                "torn_bytes" => found.torn_bytes, "skipped_files" => found.skipped);
        }
        self.buf = Some(buf);
        Ok(())
    }

    /// Writes the frames gathered and starts a sync; returns the records `drop_oldest`
    /// dropped (for the drain's counters). A failed write is logged once and tried again
    /// after a second.
    pub fn step(&mut self, cx: &mut Ctx<'_>) -> u64 {
        let Some(buf) = self.buf.as_mut() else {
            return 0;
        };
        let log = cx.logger().clone();
        let was_failing = buf.is_failing();
        let written = buf.write_pending(self.name, &log);
        let dropped = std::mem::take(&mut self.dropped)
            + match written {
                Ok(d) => {
                    if was_failing {
                        slog::info!(log, "the disk buffer is writable again";
                            "cog" => self.name, "records" => self.records());
                    }
                    d
                }
                Err(e) => {
                    if !was_failing {
                        slog::error!(log, "cannot write to the disk buffer; pausing the supplies and retrying";
                        "cog" => self.name, "error" => %e,
                        "retry_in_ms" => RETRY_AFTER.as_millis() as u64);
                    }
                    self.arm_retry(cx);
                    0
                }
            };
        self.start_sync(cx);
        dropped
    }

    /// While records wait for a failed write to be tried again, sets its timer unless it
    /// is set: for a drain's `finish` once it lingers (a cog that finishes gets no timer
    /// before [`Ctx::linger`]).
    pub fn keep_retrying(&mut self, cx: &mut Ctx<'_>) {
        if self.unwritten() > 0 {
            self.arm_retry(cx);
        }
    }

    /// Sets the timer that tries a failed write again, unless it is set.
    fn arm_retry(&mut self, cx: &mut Ctx<'_>) {
        if self.retry.is_none() {
            self.retry = cx.timer_after(RETRY_AFTER, self.retry_local).ok();
        }
    }

    /// Records gathered and not written yet (a write failed), and at a parked stop the
    /// records whose adoption failed: only memory holds them.
    pub fn unwritten(&self) -> u64 {
        self.buf.as_ref().map_or(0, |b| b.unwritten().0) + self.memory_only
    }

    /// At a parked stop, for a drain with its own memory buffer: `n` records only memory
    /// holds (their adoption by the disk failed, or none if 0). While some do, the retry
    /// timer tries the adoption again and the drain waits for it
    /// ([`has_pending`](Spill::has_pending)) until `drain_timeout`.
    pub fn held_in_memory(&mut self, n: u64, cx: &mut Ctx<'_>) {
        // Records written to the disk after a failed adoption are newer: memory's cannot
        // follow them there, and no retry changes that.
        self.memory_only = match &self.buf {
            Some(b) if b.can_adopt() => n,
            _ => 0,
        };
        self.keep_retrying(cx);
    }

    /// Starts a sync of what was written, on a worker thread, unless one runs.
    pub fn start_sync(&mut self, cx: &mut Ctx<'_>) {
        if self.sync_job.is_none()
            && let Some(job) = self.buf.as_mut().and_then(DiskBuffer::sync_job)
        {
            // The sync runs on a worker thread: the loop goes on receiving meanwhile.
            let slot = SyncSlot::default();
            self.sync_slot = slot.clone();
            match cx.submit(move || {
                let r = job.run();
                slot.put(&r);
                r
            }) {
                Ok(id) => self.sync_job = Some(id),
                Err(e) => self.synced(Err(e), cx),
            }
        }
    }

    /// Puts the records `outbox` holds that are not on disk yet onto it, after what it
    /// holds (see [`DiskBuffer::adopt`]), and starts their sync: what memory holds then
    /// survives a stop or a kill while the peer is away. The records stay in the outbox,
    /// to be sent from there, their confirmations counted for the disk. Records
    /// `drop_oldest` dropped meanwhile are reported by the next [`step`](Spill::step).
    pub fn adopt(&mut self, outbox: &mut Outbox, cx: &mut Ctx<'_>) {
        if self.adopt_only(outbox, cx) {
            self.start_sync(cx);
        }
    }

    /// [`adopt`](Spill::adopt) without starting the sync; whether records were written.
    fn adopt_only(&mut self, outbox: &mut Outbox, cx: &mut Ctx<'_>) -> bool {
        if self.buf.is_none() {
            return false;
        }
        let first = outbox.first_fresh();
        let n = outbox.records() - first;
        if n == 0 {
            return false;
        }
        let written = self.adopt_frames(outbox.frames_from(first), n, cx);
        if written {
            outbox.mark_replayed(first);
        }
        written
    }

    /// For a drain with its own memory buffer: writes `frames` (`n` records: ids and
    /// frames, oldest first, none read back from the disk) as [`DiskBuffer::adopt`] does,
    /// without starting their sync ([`start_sync`](Spill::start_sync), or
    /// [`finish`](Spill::finish) at a stop). Whether they were written: the drain then
    /// counts their confirmations for the disk, as those of records read back.
    pub fn adopt_frames<'a>(
        &mut self,
        frames: impl IntoIterator<Item = (EventId, &'a [u8])>,
        n: usize,
        cx: &mut Ctx<'_>,
    ) -> bool {
        let Some(buf) = self.buf.as_mut() else {
            return false;
        };
        let log = cx.logger().clone();
        match buf.adopt(frames, self.name, &log) {
            Ok(Some(dropped)) => {
                self.dropped += dropped;
                true
            }
            Ok(None) => {
                // Only after a failed write: the records in memory go out first anyway.
                slog::debug!(log, "records wait on disk: the memory buffer stays in memory only";
                    "cog" => self.name, "records" => n);
                false
            }
            Err(e) => {
                // A parked stop retries every second: its first failure was logged.
                if self.memory_only == 0 {
                    slog::error!(log, "cannot write the records held in memory to the disk buffer; they stay in memory only";
                        "cog" => self.name, "records" => n, "error" => %e);
                }
                false
            }
        }
    }

    /// At a stop that does not wait for the peer (it is away, or `drain_timeout` ran
    /// out): counts what the peer confirmed, puts what `outbox` holds onto the disk, and
    /// writes and syncs on this thread, unless a sync runs on a worker. Returns the
    /// records `drop_oldest` dropped, and whether every record is acknowledged (else the
    /// drain waits for the running sync to return, [`has_pending`](Spill::has_pending)).
    pub fn stopping(&mut self, outbox: &mut Outbox, cx: &mut Ctx<'_>) -> (u64, bool) {
        if self.buf.is_none() {
            return (0, true);
        }
        self.confirm(outbox.take_replayed(), cx);
        self.adopt_only(outbox, cx);
        let dropped = self.finish(cx);
        (dropped, !self.has_pending())
    }

    /// At a stop with the peer away, which the drain does not wait for: as
    /// [`stopping`](Spill::stopping), and logs that the records stay on disk for the next
    /// run; `who` is what the drain calls its peer ("peer", "server"), `peer` where it is.
    /// Returns the records `drop_oldest` dropped.
    pub fn park(
        &mut self,
        outbox: &mut Outbox,
        who: &str,
        peer: &dyn std::fmt::Display,
        cx: &mut Ctx<'_>,
    ) -> u64 {
        let dropped = self.repark(outbox, cx);
        self.log_parked(who, peer, cx);
        dropped
    }

    /// At a parked stop, and at each retry after it: puts what `outbox` holds onto the
    /// disk, syncs, and notes what memory still holds (see
    /// [`held_in_memory`](Spill::held_in_memory)). Returns the records `drop_oldest`
    /// dropped.
    fn repark(&mut self, outbox: &mut Outbox, cx: &mut Ctx<'_>) -> u64 {
        let (dropped, _) = self.stopping(outbox, cx);
        let fresh = outbox.records() - outbox.first_fresh();
        self.held_in_memory(fresh as u64, cx);
        dropped + self.give_up(cx)
    }

    /// The drain gives up on its peer at a stop (it is away, or `drain_timeout` ran out):
    /// the records its memory holds whose segment `drop_oldest` deleted will not be
    /// confirmed, and are dropped now (see [`DiskBuffer::give_up_orphans`]): logged, and
    /// returned for the drain's `dropped` counter, once.
    pub fn give_up(&mut self, cx: &mut Ctx<'_>) -> u64 {
        let Some(b) = self.buf.as_mut() else {
            return 0;
        };
        let n = b.give_up_orphans();
        if n > 0 {
            slog::error!(cx.logger(), "stopping before the peer confirmed the records held in memory whose disk buffer segment drop_oldest deleted: dropped";
                "cog" => self.name, "dropped_records" => n);
        }
        n
    }

    /// Logs a stop with the peer away, which the drain does not wait for: its records
    /// stay on disk for the next run, or, while the disk takes no write, the drain goes on
    /// trying until `drain_timeout` (for drains that park without [`park`](Spill::park)).
    pub fn log_parked(&self, who: &str, peer: &dyn std::fmt::Display, cx: &mut Ctx<'_>) {
        let unwritten = self.unwritten();
        if unwritten > 0 {
            slog::warn!(cx.logger(), "stopping with the {} away and the disk buffer not writable: retrying the write until {}", who, self.timeout_key;
                "cog" => self.name, "peer" => %peer, "unwritten_records" => unwritten,
                "disk_buffer_records" => self.buf.as_ref().map_or(0, |b| b.written().0),
                "retry_in_ms" => RETRY_AFTER.as_millis() as u64);
        } else {
            slog::info!(cx.logger(), "stopping with the {} away: its records stay in the disk buffer for the next run", who;
                "cog" => self.name, "peer" => %peer, "disk_buffer_records" => self.records());
        }
    }

    /// Writes and syncs what spilled (see [`step`](Spill::step)) and, while the peer is
    /// `connected`, refills `outbox` from the disk, oldest first, up to `high` bytes once
    /// it holds less than half of them. Returns the records `drop_oldest` dropped.
    pub fn refill(
        &mut self,
        outbox: &mut Outbox,
        high: usize,
        connected: bool,
        cx: &mut Ctx<'_>,
    ) -> u64 {
        // Parked, the retry of an adoption that failed: before the gathered frames are
        // written, which are newer and go after the adopted ones.
        let mut dropped = match self.memory_only {
            0 => 0,
            _ => self.repark(outbox, cx),
        };
        dropped += self.step(cx);
        let b = outbox.buffered();
        if let Some(buf) = self.buf.as_mut()
            && connected
            && b < high / 2
        {
            let log = cx.logger().clone();
            buf.load(high - b, self.name, &log, |frame| {
                outbox.push_with(REPLAYED, |v| v.extend_from_slice(frame));
            });
        }
        dropped
    }

    /// Whether records on disk wait to be written, or synced and acknowledged; at a
    /// parked stop, also whether records only memory holds wait to be put on disk.
    pub fn has_pending(&self) -> bool {
        self.memory_only > 0 || self.buf.as_ref().is_some_and(DiskBuffer::has_pending)
    }

    fn synced(&mut self, r: io::Result<()>, cx: &mut Ctx<'_>) {
        let Some(buf) = self.buf.as_mut() else {
            return;
        };
        if let Err(e) = buf.synced(r, cx) {
            slog::error!(cx.logger(), "cannot sync the disk buffer; its records stay unacknowledged";
                "cog" => self.name, "dir" => %buf.options().dir.display(), "error" => %e);
        }
    }

    /// A job came back: if it is this buffer's sync, acknowledges what it covered and
    /// returns `None`; else gives the result back.
    pub fn job_done(
        &mut self,
        job: JobId,
        result: JobResult,
        cx: &mut Ctx<'_>,
    ) -> Option<JobResult> {
        if self.sync_job != Some(job) {
            return Some(result);
        }
        self.sync_job = None;
        let r = match result {
            Ok(v) => v
                .downcast::<io::Result<()>>()
                .map_or_else(|_| Err(io::Error::other("unexpected sync result")), |r| *r),
            Err(p) => Err(io::Error::other(p.to_string())),
        };
        self.synced(r, cx);
        None
    }

    /// Whether timer `t` is the retry of a failed write (the drain then flushes again).
    pub fn is_retry(&mut self, t: TimerId) -> bool {
        if self.retry == Some(t) {
            self.retry = None;
            return true;
        }
        false
    }

    /// The timer of a retry, to cancel when the drain closes.
    pub fn take_retry(&mut self) -> Option<TimerId> {
        self.retry.take()
    }

    /// The peer confirmed `n` more records read back from the buffer.
    pub fn confirm(&mut self, n: u64, cx: &mut Ctx<'_>) {
        if let Some(b) = self.buf.as_mut()
            && n > 0
        {
            b.confirm(n, |id| cx.event_done(id));
        }
    }

    /// Whether records wait on disk to be handed back.
    pub fn has_unloaded(&self) -> bool {
        self.buf.as_ref().is_some_and(DiskBuffer::has_unloaded)
    }

    /// Whether nothing waits on disk, to be handed back or synced.
    pub fn is_drained(&self) -> bool {
        self.buf
            .as_ref()
            .is_none_or(|b| !b.has_unloaded() && !b.has_pending())
    }

    /// Records on disk not yet confirmed.
    pub fn records(&self) -> u64 {
        self.buf.as_ref().map_or(0, DiskBuffer::records)
    }

    /// Reports `disk_bytes` (limit `max_bytes`) and `disk_records`.
    pub fn inspect(&self, into: &mut crate::engine::control::Inspection) {
        if let Some(b) = &self.buf {
            let max = usize::try_from(b.options().max_bytes).ok();
            into.buffer("disk_bytes", b.bytes() as usize, max);
            into.buffer("disk_records", b.records() as usize, None);
        }
    }

    /// At the drain's `finish`: writes and syncs what spilled, on this thread unless a
    /// sync runs. Returns the records `drop_oldest` dropped. A failed write is tried
    /// again by the retry timer, for a drain that lingers: the records it could not write
    /// are only in memory.
    pub fn finish(&mut self, cx: &mut Ctx<'_>) -> u64 {
        let Some(b) = self.buf.as_mut() else {
            return 0;
        };
        let log = cx.logger().clone();
        let was_failing = b.is_failing();
        let written = b.write_pending(self.name, &log);
        // With a sync running on a worker, the next one starts when it returns.
        let job = if self.sync_job.is_none() {
            b.sync_job()
        } else {
            None
        };
        let dropped = std::mem::take(&mut self.dropped)
            + match written {
                Ok(d) => d,
                Err(e) => {
                    if !was_failing {
                        slog::error!(log, "cannot write to the disk buffer at the stop; retrying";
                            "cog" => self.name, "error" => %e,
                            "retry_in_ms" => RETRY_AFTER.as_millis() as u64);
                    }
                    self.arm_retry(cx);
                    0
                }
            };
        if let Some(job) = job {
            let r = job.run();
            self.synced(r, cx);
        }
        dropped
    }

    /// At the drain's `done`: frames still gathered are written (they survive the stop),
    /// and what is left for the next run is logged; so is, at error level, what could
    /// not be written, with the records only memory holds (`memory`: records and bytes
    /// the drain kept in memory and not on disk): those are lost unless their supply
    /// reads them again (one with a checkpoint does; `stdin` and `udp_in` cannot).
    pub fn done_with(&mut self, memory: (u64, u64), cx: &mut Ctx<'_>) {
        if self.buf.is_none() {
            return;
        }
        if self.sync_job.take().is_some() {
            // drain_timeout ended the stop while a sync ran: its result would come too
            // late, refused; waited for here (bounded), its records are acknowledged.
            match self.sync_slot.wait(SYNC_WAIT) {
                Some(r) => self.synced(r, cx),
                None => {
                    slog::error!(cx.logger(), "the disk buffer's sync did not return in time; its records stay unacknowledged (sent again after a restart)";
                        "cog" => self.name, "waited_ms" => SYNC_WAIT.as_millis() as u64);
                }
            }
        }
        let Some(b) = self.buf.as_mut() else {
            return;
        };
        let was_failing = b.is_failing();
        if let Err(e) = b.sync_now(self.name, cx)
            && !was_failing
        {
            slog::error!(cx.logger(), "cannot write the disk buffer at the stop"; "cog" => self.name, "error" => %e);
        }
        if let Err(e) = b.save_cursor() {
            slog::warn!(cx.logger(), "cannot save the disk buffer's cursor; confirmed records may be sent again";
                "cog" => self.name, "error" => %e);
        }
        if b.orphans() > 0 {
            // The stop ended without giving up on the peer (stop_timeout, a second
            // signal): no counter can take them now.
            slog::error!(cx.logger(), "stopped before the peer confirmed the records held in memory whose disk buffer segment drop_oldest deleted: lost";
                "cog" => self.name, "records" => b.give_up_orphans());
        }
        let (lost, lost_bytes) = b.unwritten();
        let (lost, lost_bytes) = (lost + memory.0, lost_bytes + memory.1);
        if lost > 0 {
            slog::error!(cx.logger(), "stopped before these records could be written to the disk buffer: records not written, lost unless their supply reads them again";
                "cog" => self.name, "records" => lost, "bytes" => lost_bytes);
        }
        let (records, bytes) = b.written();
        if records > 0 {
            slog::info!(cx.logger(), "records left in the disk buffer for the next run";
                "cog" => self.name, "records" => records, "bytes" => bytes);
        }
    }

    /// [`done_with`](Spill::done_with) for a drain built on [`Outbox`]: its records not
    /// on disk are counted with the unwritten ones.
    pub fn done_outbox(&mut self, outbox: &Outbox, cx: &mut Ctx<'_>) {
        let first = outbox.first_fresh();
        let n = outbox.records() - first;
        let bytes = match n {
            0 => 0,
            _ => outbox.frames_from(first).map(|(_, f)| f.len() as u64).sum(),
        };
        self.done_with((n as u64, bytes), cx);
    }
}

/// Writes `buf` to segment `seg` (open as `w`) just past its valid records. After a
/// failed write the file is cut back to them; if even that fails (the file then ends in
/// part of a frame), the error says so: the next write goes over that part, the reader
/// never reads past the valid records, and a restart cuts what is left (logged).
fn write_at_end(w: &File, seg: &Segment, buf: &[u8]) -> io::Result<()> {
    let Err(e) = w.write_all_at(buf, seg.len) else {
        return Ok(());
    };
    let msg = match w.set_len(seg.len) {
        Ok(()) => format!("cannot write to {}: {e}", seg.path.display()),
        Err(t) => format!(
            "cannot write to {}: {e}; nor cut it back to its last whole record ({t}): the next \
             write goes over the partial one",
            seg.path.display()
        ),
    };
    Err(io::Error::new(e.kind(), msg))
}

fn lose_rest(s: &mut Segment, held: &mut u64, unloaded: &mut u64, dropped: &mut u64) {
    let lost = s.records - s.loaded;
    s.records = s.loaded;
    *held -= lost;
    *unloaded -= lost;
    *dropped += lost;
}

enum Scan {
    /// No magic: not a segment.
    Foreign,
    /// The valid prefix: its length, its records and the bytes after it.
    Valid { len: u64, records: u64, cut: u64 },
}

/// How many records of a segment end exactly at `off` (`None` if none ends there).
fn scan_count(path: &Path, off: u64) -> io::Result<Option<u64>> {
    let f = File::open(path)?;
    let mut at = MAGIC.len() as u64;
    let mut n = 0;
    let mut h = [0u8; 4];
    while at < off {
        f.read_exact_at(&mut h, at)?;
        at += (HEADER + u32::from_le_bytes(h) as usize) as u64;
        n += 1;
    }
    Ok((at == off).then_some(n))
}

/// Reads a segment, checking each record's length and CRC.
fn scan(path: &Path) -> io::Result<Scan> {
    let f = File::open(path)?;
    let size = f.metadata()?.len();
    let mut magic = [0u8; 8];
    if size < MAGIC.len() as u64 || f.read_exact_at(&mut magic, 0).is_err() || &magic != MAGIC {
        return Ok(Scan::Foreign);
    }
    let mut off = MAGIC.len() as u64;
    let mut records = 0;
    let mut buf = Vec::new();
    let mut buf_off = off;
    loop {
        let at = (off - buf_off) as usize;
        let have = buf.len() - at;
        let need = if have >= HEADER {
            HEADER + u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize
        } else {
            HEADER
        };
        if off + need as u64 > size {
            break;
        }
        if have < need {
            buf.drain(..at);
            buf_off = off;
            let old = buf.len();
            let to = (need.max(READ_CHUNK) as u64).min(size - off) as usize;
            buf.resize(to.max(old), 0);
            f.read_exact_at(&mut buf[old..], off + old as u64)?;
            continue;
        }
        let h = &buf[at..at + HEADER];
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if crc32c_update(crc32c_update(0, &h[..4]), &buf[at + HEADER..at + need]) != crc {
            break;
        }
        off += need as u64;
        records += 1;
    }
    Ok(Scan::Valid {
        len: off,
        records,
        cut: size - off,
    })
}

/// CRC-32C (Castagnoli) tables for slicing by 8.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut j = 1;
    while j < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[j - 1][i];
            t[j][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        j += 1;
    }
    t
};

/// Continues the CRC-32C `crc` (0 to start) over `data`.
pub fn crc32c_update(crc: u32, data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut c = !crc;
    let mut chunks = data.chunks_exact(8);
    for b in &mut chunks {
        let lo = c ^ u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        c = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][b[4] as usize]
            ^ t[2][b[5] as usize]
            ^ t[1][b[6] as usize]
            ^ t[0][b[7] as usize];
    }
    for &b in chunks.remainder() {
        c = (c >> 8) ^ t[0][((c ^ u32::from(b)) & 0xff) as usize];
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("deadbeat-disk-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn opts(d: &Path, when_full: WhenFull) -> DiskOptions {
        DiskOptions {
            dir: d.to_path_buf(),
            max_bytes: 1 << 20,
            when_full,
            segment_bytes: 64 << 10,
        }
    }

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    /// A buffer on `d` that blocks when full.
    fn open(d: &Path) -> (DiskBuffer, Recovered) {
        DiskBuffer::open(opts(d, WhenFull::Block), "t", &log()).unwrap()
    }

    /// The frame of record `i` (its id is `i + 1`).
    fn record(i: u64) -> String {
        format!("record {i:06}\n")
    }

    fn records(from: u64, to: u64) -> Vec<String> {
        (from..to).map(record).collect()
    }

    /// Adopts records `from..to` as a drain's memory would hand them over.
    fn adopt(b: &mut DiskBuffer, from: u64, to: u64) -> io::Result<Option<u64>> {
        let frames: Vec<(EventId, String)> = (from..to).map(|i| (i + 1, record(i))).collect();
        b.adopt(
            frames.iter().map(|(id, f)| (*id, f.as_bytes())),
            "t",
            &log(),
        )
    }

    fn fill(b: &mut DiskBuffer, from: u64, to: u64) {
        for i in from..to {
            b.push_with(i + 1, |v| v.extend_from_slice(record(i).as_bytes()));
            if b.should_write() {
                b.write_pending("t", &log()).unwrap();
            }
        }
        b.write_pending("t", &log()).unwrap();
    }

    fn take(b: &mut DiskBuffer, budget: usize) -> Vec<String> {
        let mut got = Vec::new();
        b.load(budget, "t", &log(), |f| {
            got.push(String::from_utf8_lossy(f).into_owned())
        });
        got
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c_update(0, b"123456789"), 0xE306_9283);
        let split = crc32c_update(crc32c_update(0, b"1234"), b"56789");
        assert_eq!(split, 0xE306_9283);
    }

    /// A failed sync acknowledges nothing; the peer's confirmations then do, each record
    /// once, in order: adopted ones confirmed while the sync ran at once, the rest as
    /// confirmed, across segments. A later sync that succeeds acknowledges its own.
    #[test]
    fn records_whose_sync_failed_are_acknowledged_once_the_peer_confirms_them() {
        let d = dir("sync-failed");
        let (mut b, _) = open(&d);
        let mut acked = Vec::new();
        // Memory held ids 1..=3 (adopted, handed back); ids 4..=20000 spilled.
        assert_eq!(adopt(&mut b, 0, 3).unwrap(), Some(0));
        fill(&mut b, 3, 20_000);
        assert!(b.segments.len() > 3, "{} segments", b.segments.len());
        let _job = b.sync_job().expect("a sync to run");
        // The peer confirms two adopted records while the sync runs.
        b.confirm(2, |id| acked.push(id));
        assert_eq!(acked, Vec::<EventId>::new());
        let e = b.synced_with(Err(io::Error::other("EIO")), |id| acked.push(id));
        assert!(e.is_err());
        assert_eq!(acked, vec![1, 2], "the confirmed ones at once, no more");
        // Newer records, synced: acknowledged by their sync, not again later.
        fill(&mut b, 20_000, 20_010);
        let job = b.sync_job().expect("a sync to run");
        b.synced_with(job.run(), |id| acked.push(id)).unwrap();
        assert_eq!(acked[2..], (20_001..=20_010).collect::<Vec<_>>()[..]);
        acked.truncate(2);
        b.confirm(1, |id| acked.push(id));
        assert_eq!(acked, vec![1, 2, 3]);
        let mut got = Vec::new();
        while b.has_unloaded() {
            let part = take(&mut b, 7_000);
            b.confirm(part.len() as u64, |id| acked.push(id));
            got.extend(part);
        }
        assert_eq!(got, records(3, 20_010));
        assert_eq!(acked, (1..=20_000).collect::<Vec<_>>());
        assert!(b.unsynced.is_empty());
        assert_eq!(b.records(), 0);
    }

    /// A failed sync's records are not acknowledged while the peer has not confirmed
    /// them: a stop leaves them to the next run (their supplies read them again).
    #[test]
    fn records_whose_sync_failed_stay_unacknowledged_until_confirmed() {
        let d = dir("sync-failed-unconfirmed");
        let (mut b, _) = open(&d);
        let mut acked = Vec::new();
        fill(&mut b, 0, 10);
        let _job = b.sync_job().expect("a sync to run");
        let _ = b.synced_with(Err(io::Error::other("EIO")), |id| acked.push(id));
        assert_eq!(take(&mut b, usize::MAX).len(), 10);
        b.confirm(4, |id| acked.push(id));
        assert_eq!(acked, vec![1, 2, 3, 4]);
        assert_eq!(b.unsynced.len(), 6);
    }

    /// A sync that cannot open the directory (for the new segment's entry) cannot make
    /// its records durable: it fails as a failed `fdatasync` does, acknowledging nothing
    /// until the peer confirms; the next sync that can open it syncs the entry.
    #[test]
    fn a_sync_that_cannot_open_the_directory_acknowledges_nothing() {
        let d = dir("sync-no-dir");
        let moved = d.with_extension("moved");
        let _ = std::fs::remove_dir_all(&moved);
        let (mut b, _) = open(&d);
        let mut acked = Vec::new();
        fill(&mut b, 0, 10);
        std::fs::rename(&d, &moved).unwrap();
        let job = b.sync_job().expect("a sync to run");
        let r = b.synced_with(job.run(), |id| acked.push(id));
        assert!(r.is_err(), "the sync succeeded without its directory");
        assert_eq!(acked, Vec::<EventId>::new());
        assert_eq!(b.unsynced.len(), 10);
        // Back in place: the peer's confirmations acknowledge them, and the next sync
        // covers the directory entry and its own records.
        std::fs::rename(&moved, &d).unwrap();
        assert_eq!(take(&mut b, usize::MAX).len(), 10);
        b.confirm(3, |id| acked.push(id));
        assert_eq!(acked, vec![1, 2, 3]);
        fill(&mut b, 10, 12);
        let job = b.sync_job().expect("a sync to run");
        assert!(job.dir.is_some(), "the directory entry is not synced");
        b.synced_with(job.run(), |id| acked.push(id)).unwrap();
        assert_eq!(acked, vec![1, 2, 3, 11, 12]);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The result of a sync on another thread reaches a wait that began before it
    /// returned; a wait for one that does not return ends at its bound, with nothing.
    #[test]
    fn a_stop_waits_for_a_running_sync_within_its_bound() {
        let slot = SyncSlot::default();
        let worker = {
            let slot = slot.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                slot.put(&Err(io::Error::other("EIO")));
            })
        };
        let started = std::time::Instant::now();
        let r = slot.wait(std::time::Duration::from_secs(30));
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(
            r.map(|r| r.map_err(|e| e.to_string())),
            Some(Err("EIO".into()))
        );
        worker.join().unwrap();
        let idle = SyncSlot::default();
        let started = std::time::Instant::now();
        assert!(idle.wait(std::time::Duration::from_millis(100)).is_none());
        assert!(started.elapsed() >= std::time::Duration::from_millis(100));
    }

    /// Frames gathered and not written (their write failed) are newer than what memory
    /// holds: an adoption writes memory's records first and the gathered ones after them,
    /// in one write; only the gathered ones are handed back, and a kill keeps all.
    #[test]
    fn an_adoption_goes_ahead_of_frames_whose_write_failed() {
        let d = dir("adopt-gathered");
        {
            let (mut b, _) = open(&d);
            for i in 5..8 {
                b.push_with(i + 1, |v| v.extend_from_slice(record(i).as_bytes()));
            }
            b.failing = true;
            assert_eq!(adopt(&mut b, 0, 5).unwrap(), Some(0));
            assert!(!b.is_failing());
            assert_eq!(b.unwritten(), (0, 0));
            assert_eq!(b.records(), 8);
            let job = b.sync_job().expect("a sync to run");
            let mut acked = Vec::new();
            b.synced_with(job.run(), |id| acked.push(id)).unwrap();
            assert_eq!(acked, (1..=8).collect::<Vec<_>>());
            assert_eq!(take(&mut b, usize::MAX), records(5, 8));
            // Killed: nothing confirmed, no cursor.
        }
        let (mut b, found) = open(&d);
        assert_eq!(found.records, 8);
        assert_eq!(take(&mut b, usize::MAX), records(0, 8));
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_confirmed_segments_go() {
        let d = dir("order");
        let (mut b, found) = open(&d);
        assert_eq!(found, Recovered::default());
        fill(&mut b, 0, 20_000);
        assert!(b.segments.len() > 3, "{} segments", b.segments.len());
        assert_eq!(b.records(), 20_000);
        let mut all = Vec::new();
        while b.has_unloaded() {
            let got = take(&mut b, 10_000);
            b.confirm(got.len() as u64, |_| {});
            all.extend(got);
        }
        assert_eq!(all, records(0, 20_000));
        assert_eq!(b.records(), 0);
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("lock")],
            "segments left"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn adopted_records_go_ahead_of_newer_ones_and_survive_a_kill() {
        let d = dir("adopt");
        {
            let (mut b, _) = open(&d);
            // Records 0..3 were read back earlier and wait for the peer in memory.
            fill(&mut b, 0, 3);
            assert_eq!(take(&mut b, usize::MAX).len(), 3);
            // Memory holds 3..8 besides: adopted, they count as handed back.
            assert_eq!(adopt(&mut b, 3, 8).unwrap(), Some(0));
            assert_eq!((b.records(), b.has_unloaded()), (8, false));
            // Their ids are acknowledged by the next sync, after the spilled ones'.
            let job = b.sync_job().expect("a sync to run");
            assert_eq!(b.syncing_ids, vec![1, 2, 3, 4, 5, 6, 7, 8]);
            job.run().unwrap();
            b.syncing = false;
            b.syncing_ids.clear();
            // Newer records follow them; only those are handed back.
            fill(&mut b, 8, 12);
            assert_eq!(take(&mut b, usize::MAX), records(8, 12));
            // With records waiting on disk, memory could not go ahead of them.
            fill(&mut b, 12, 13);
            let late = b"record 999999\n".as_slice();
            assert_eq!(b.adopt([(99, late)], "t", &log()).unwrap(), None);
            // The peer confirms the first four in memory; then the process is killed
            // (no cursor saved).
            b.confirm(4, |_| {});
            assert_eq!(b.records(), 9);
        }
        let (mut b, found) = open(&d);
        // The segment was only partly confirmed: it is sent again whole, in order.
        assert_eq!(found.records, 13);
        assert_eq!(take(&mut b, usize::MAX), records(0, 13));
        b.confirm(13, |_| {});
        assert_eq!(b.records(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn confirming_adopted_records_deletes_their_segments_and_a_cursor_keeps_the_rest() {
        let d = dir("adopt-cursor");
        {
            let (mut b, _) = open(&d);
            // More than a segment (64 KiB) adopted at once, then more than another
            // spilled after it.
            assert_eq!(adopt(&mut b, 0, 5000).unwrap(), Some(0));
            fill(&mut b, 5000, 10_000);
            assert!(b.segments.len() >= 2, "{} segments", b.segments.len());
            // The peer confirms the adopted ones: their segment goes.
            b.confirm(5000, |_| {});
            assert_eq!(b.records(), 5000);
            assert!(!d.join(format!("{:020}.seg", 1)).exists());
            assert_eq!(take(&mut b, 140).len(), 10);
            b.confirm(3, |_| {});
            b.save_cursor().unwrap();
        }
        let (mut b, found) = open(&d);
        assert_eq!(found.records, 4997);
        let got = take(&mut b, usize::MAX);
        assert_eq!(got.first().map(String::as_str), Some("record 005003\n"));
        assert_eq!(got.len(), 4997);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_last_record_is_cut_and_a_foreign_file_skipped_at_reopen() {
        let d = dir("torn");
        {
            let (mut b, _) = open(&d);
            fill(&mut b, 0, 100);
            // A second drain on the same directory is refused.
            assert!(DiskBuffer::open(opts(&d, WhenFull::Block), "t", &log()).is_err());
        }
        let seg = d.join(format!("{:020}.seg", 1));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        // A header announcing 100 bytes, then only 10 of them: a write cut by a kill.
        f.write_all(&100u32.to_le_bytes()).unwrap();
        f.write_all(&[7; 14]).unwrap();
        std::fs::write(d.join("notes.txt"), "not a segment").unwrap();
        std::fs::write(d.join(format!("{:020}.seg", 7)), "garbage").unwrap();
        let (mut b, found) = open(&d);
        assert_eq!(found.records, 100);
        assert_eq!((found.torn_segments, found.torn_bytes), (1, 18));
        assert_eq!(found.skipped, 2);
        let got = take(&mut b, usize::MAX);
        assert_eq!(got.len(), 100);
        assert_eq!(got[99], "record 000099\n");
        // New records go to a new segment, after the skipped one's number.
        fill(&mut b, 100, 101);
        assert!(d.join(format!("{:020}.seg", 8)).exists());
        assert_eq!(
            take(&mut b, usize::MAX),
            vec!["record 000100\n".to_string()]
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A failed write whose cut back failed too leaves part of a frame at the end of the
    /// segment: the next write goes over it, so that no record is read as garbage or cut
    /// at a restart; what a shorter write leaves of it is cut at the restart, records kept.
    #[test]
    fn a_partial_frame_left_by_a_failed_cut_is_written_over() {
        let d = dir("partial-frame");
        let seg = d.join(format!("{:020}.seg", 1));
        let torn = |bytes: usize| {
            let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
            f.write_all(&1000u32.to_le_bytes()).unwrap();
            f.write_all(&vec![7; bytes - 4]).unwrap();
        };
        {
            let (mut b, _) = open(&d);
            fill(&mut b, 0, 10);
            torn(18);
            fill(&mut b, 10, 20);
            torn(300);
            fill(&mut b, 20, 21);
            assert_eq!(take(&mut b, usize::MAX), records(0, 21));
            assert_eq!(b.dropped(), 0);
        }
        let (mut b, found) = open(&d);
        assert_eq!(found.records, 21);
        assert_eq!(
            found.torn_segments, 1,
            "the rest of the second partial frame"
        );
        assert_eq!(take(&mut b, usize::MAX), records(0, 21));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_graceful_stop_keeps_the_confirmed_prefix_out_of_the_next_run() {
        let d = dir("cursor");
        {
            let (mut b, _) = open(&d);
            fill(&mut b, 0, 1000);
            assert_eq!(take(&mut b, 140).len(), 10);
            b.confirm(7, |_| {});
            b.save_cursor().unwrap();
        }
        let (mut b, found) = open(&d);
        assert_eq!(found.records, 993);
        assert_eq!(b.records(), 993);
        let got = take(&mut b, usize::MAX);
        assert_eq!(got.len(), 993);
        assert_eq!(got[0], "record 000007\n");
        // Read once: a crash of this run sends from the segment's start again.
        assert!(!d.join(CURSOR).exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn drop_oldest_deletes_whole_segments_and_counts_their_records() {
        let d = dir("drop");
        let (mut b, _) = DiskBuffer::open(opts(&d, WhenFull::DropOldest), "t", &log()).unwrap();
        assert_eq!(b.pressure(), 0);
        fill(&mut b, 0, 150_000);
        assert!(b.bytes() <= 1 << 20, "{} bytes", b.bytes());
        assert!(b.dropped() > 0);
        assert_eq!(b.dropped() + b.records(), 150_000);
        let got = take(&mut b, usize::MAX);
        assert_eq!(got.len() as u64, b.records());
        assert_eq!(got.last().map(String::as_str), Some("record 149999\n"));
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Memory's records adopted while the peer is away, then a long outage: drop_oldest
    /// deletes their segment. Those not yet handed back are dropped, counted; the adopted
    /// ones are in memory only: not counted as on disk, not dropped while the peer may
    /// still confirm them, dropped once (when the drain gives up on the peer) otherwise.
    #[test]
    fn drop_oldest_after_an_adoption_counts_each_record_once() {
        let d = dir("drop-adopted");
        let (mut b, _) = DiskBuffer::open(opts(&d, WhenFull::DropOldest), "t", &log()).unwrap();
        assert_eq!(adopt(&mut b, 0, 1000).unwrap(), Some(0));
        fill(&mut b, 1000, 150_000);
        assert!(b.bytes() <= 1 << 20, "{} bytes", b.bytes());
        assert!(b.dropped() > 0);
        assert_eq!(
            b.orphans(),
            1000,
            "the adopted records' copy on disk is gone"
        );
        let on_disk = b.records();
        assert_eq!(b.dropped() + on_disk + b.orphans(), 150_000);
        assert_eq!(b.written().0, on_disk);
        // The peer is back: memory's records go first, then the disk's; each confirmed
        // once, nothing more dropped.
        let dropped = b.dropped();
        b.confirm(1000, |_| {});
        assert_eq!((b.orphans(), b.records()), (0, on_disk));
        let got = take(&mut b, usize::MAX);
        assert_eq!(
            got.len() as u64,
            on_disk,
            "records counted on disk and not there"
        );
        assert_eq!(got.last().map(String::as_str), Some("record 149999\n"));
        b.confirm(on_disk, |_| {});
        assert_eq!((b.records(), b.dropped(), b.orphans()), (0, dropped, 0));

        // Again, and the drain stops before the peer confirms memory's records: they are
        // given up once, and a late confirmation changes nothing.
        let d2 = dir("drop-adopted-stop");
        let (mut b, _) = DiskBuffer::open(opts(&d2, WhenFull::DropOldest), "t", &log()).unwrap();
        assert_eq!(adopt(&mut b, 0, 1000).unwrap(), Some(0));
        fill(&mut b, 1000, 150_000);
        let on_disk = b.records();
        assert_eq!(b.give_up_orphans(), 1000);
        assert_eq!(b.give_up_orphans(), 0);
        b.confirm(1000, |_| {});
        assert_eq!((b.records(), b.orphans()), (on_disk, 0));
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(&d2);
    }

    #[test]
    fn block_reports_its_fill_as_pressure() {
        let d = dir("block");
        let (mut b, _) = open(&d);
        fill(&mut b, 0, 100_000);
        assert_eq!(b.dropped(), 0);
        assert!(b.pressure() as u64 > 1 << 20);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_disk_buffer_without_a_directory_names_the_key() {
        let s = BufferSettings {
            buffer: BufferKind::Disk,
            ..Default::default()
        };
        let e = DiskOptions::new(&s).unwrap_err();
        assert_eq!(e.key, "buffer_dir");
        assert!(
            DiskOptions::new(&BufferSettings::default())
                .unwrap()
                .is_none()
        );
    }
}
