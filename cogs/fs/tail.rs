//! `tail`: files followed as they grow, across rotation and truncation, with checkpoints.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use inotify::{EventMask, WatchDescriptor, WatchMask};

use crate::cogs::fs::file_in::Missing;
use crate::engine::control::{Inspection, Position, Rewind, RewindError};
use crate::kit::ack::AckTracker;
use crate::kit::checkpoint::{CheckpointStore, Entry, EntryRef, fingerprint};
use crate::kit::glob::{Glob, split_path};
use crate::kit::lines::LineSplitter;
use crate::kit::rewind::{names, offset_in};
use crate::kit::supply::{FileFields, PauseGate, with_line_emitter};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Record, SharedStr};
use crate::schema::Settings as _;
use crate::schema::{CogParams, ConfigError, SettingError};

const READ: Local = 0;
/// The first turn after start, where a `follow = false` supply with nothing to read ends.
const FIRST_TURN: Local = 1;
const TICK: Local = 2;
const SAVE: Local = 3;
const ROTATE: Local = 4;
const WATCH: Local = 5;
const RETRY: Local = 6;
const SETTLE: Local = 7;
const SAVE_SOON: Local = 8;

/// How long a fresh file that may still be being copied is left before it is judged again.
const SETTLE_WAIT: Duration = Duration::from_millis(50);

/// Descriptors left to the rest of the process (drains, sockets, logs, the event loop)
/// when `max_open_files` is checked against the process's limit.
const FD_RESERVE: u64 = 32;
/// First and longest wait before opening again after running out of descriptors.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// After running out of descriptors, the budget doubles back towards `max_open_files`
/// at most this often.
const RAISE_EVERY: Duration = Duration::from_millis(250);

/// One read asks for this much (see [`LineSplitter::BATCH_READ_SIZE`]).
const READ_SIZE: usize = LineSplitter::BATCH_READ_SIZE;
/// Bytes one turn reads before yielding to the other cogs (fairness).
const TURN_BYTES: usize = 1 << 20;
/// Head bytes that identify a file besides its inode (inodes are reused).
const HEAD_BYTES: usize = 256;
/// Above this many unacknowledged lines reading stops, so slow drains bound memory.
const MAX_PENDING: usize = 100_000;
/// Checkpoints of files not seen for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Above this many open files, a file that reached its end gives its read buffer back.
const KEEP_BUFFERS: usize = 32;
/// How often checkpoints are synced to disk (they are written after every acknowledgement
/// that moved them, and otherwise at this pace when changed).
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Above this many checkpoint entries, saves after acknowledgements come at most once
/// per `SAVE_GAP` (a save writes every entry).
const HEAVY_SAVE: usize = 64;
const SAVE_GAP: Duration = Duration::from_millis(10);

/// Follows files as they grow: globs, rotation (rename, copytruncate, or while the daemon
/// was stopped), truncation, and checkpoints committed only once the drains acknowledged
/// the lines (at-least-once across crashes; after a clean stop, exactly once).
///
/// - **Discovery.** The directory of each pattern is watched with inotify (new, renamed,
///   deleted and written files); without inotify (or with `[engine] inotify = false`),
///   it is scanned every `poll_interval`. Wildcards (`*`, `?`, `[...]`, `{a,b}`) are
///   allowed in the file name only (a literal brace is written `\{`). `exclude` patterns without a `/` match the file name, others
///   the whole path.
/// - **Identity.** A file is known by its content first: a fingerprint of its first
///   256 bytes, with its device and inode to follow it across renames. A new file whose
///   first 256 bytes are those of a file already read is a copy of it (copytruncate,
///   `cp`, a copy matched by the glob, also while the daemon was stopped): it is read
///   from where that file's reading was, not again from its start. A file shorter than
///   256 bytes is known by its device and inode only (a short head, one line, starts
///   too many different files). While the original still holds its content, a copy
///   must also hold the same 256 bytes just before where the original's reading was, so
///   files sharing a long header (daily files) are told apart. Once the original is
///   gone or truncated, the head alone decides, and a new file starting with the same
///   256 bytes counts as its copy: set `fingerprint = "inode"` to know every file by its
///   device and inode only (copies are then read whole). An inode reused
///   by a new file is told apart by its head. A file smaller than where reading stopped,
///   or whose head changed, was truncated: it is read again from its start.
/// - **Rotation.** When a file is renamed or deleted, its descriptor stays open and it is
///   read to its end until `rotate_wait` has passed (lines the application still
///   appends to it are read); its replacement is read from its start. A rotated file
///   found at start (rotated while the daemon was stopped) is read from its checkpoint.
/// - **Start.** A file without a checkpoint is read from its end when it was there at
///   start and `start_at = "end"` (the default when following), from its start when it
///   appears later. With `follow = false`, every matched file is read to its end (from its
///   checkpoint, or from its start by default), then the supply is exhausted.
/// - **Missing files.** Following, a pattern that matches no file yet is normal: it is
///   logged once at info level and the file is waited for. With `follow = false`, a
///   pattern that matches no file, or a file that cannot be opened, is handled as
///   `missing` says (as for `file_in`): `"error"` (the default) logs and counts it and
///   the run fails (exit 1) at its end, `"warn"` logs a warning, `"ignore"` skips it.
/// - **Partial lines.** A last line without newline is held until completed. It is
///   emitted, with `partial = true`, only at the true end of its file: once a file
///   rotated away has been read to its end (after `rotate_wait`), or read to its end with
///   `follow = false`. A stop never splits a line: a partial line held at shutdown
///   (while catching up, paused, or following) is not sent, and the checkpoint stays at
///   its start, so the next run reads it whole. (A file truncated while the writer was
///   in the middle of a line also sends the part it held, flagged: nothing is lost, and
///   a copy continues after it.)
/// - **Checkpoints** go to `[state] dir`, one file per cog (named after the train and a
///   hash of `paths`), written after every acknowledgement that moved them (appended to
///   a journal beside it, see `deadbeat::checkpoint`), so a crash re-sends at most the
///   batch in flight;
///   synced to disk every second and at shutdown, so a power loss loses at most about a
///   second of progress (those lines are sent again). They also keep the heads of the
///   last 256 files truncated or read for good (for a day), so a copy of one that appears
///   after a restart still continues where its reading was. A file not judged yet (a new one that may be
///   a copy) is not saved.
/// - **Limits.** At most `max_open_files` descriptors: beyond it, files that reached
///   their end are closed (and reopened when they change). At start it is lowered (with
///   a warning) to the process's descriptor limit (`ulimit -n`) less 32 for the rest of
///   the process. Running out of descriptors anyway (EMFILE, ENFILE) is transient: the
///   budget drops to the files open now, logged, and the file is opened again after a
///   backoff (50 ms doubling to 5 s); the budget then doubles back to
///   `max_open_files` every 250 ms (logged when it is back). Reading stops while 100,000
///   lines wait for acknowledgement and when the train pauses the supplies.
///
/// - **Rewind.** The control server's `rewind` makes a followed file read again from an
///   offset or a line ([`Cog::rewind`]); its checkpoint goes back there at once and moves
///   on as the lines read again are acknowledged.
///
/// Fields: `message` (the raw line), `path`, `offset` (of the line's first byte), and
/// `partial` (true) on a last line that had no newline.
///
/// ```toml
/// [[train.cog]]
/// type = "tail"
/// paths = ["/var/log/app/*.log", "/var/log/syslog"]
/// exclude = ["*.gz"]
/// start_at = "end"          # or "beginning"; for files without a checkpoint
/// follow = true
/// poll_interval = "1s"
/// rotate_wait = "5s"
/// idle_close = "5m"
/// max_open_files = 1024
/// max_line_bytes = "1MiB"
/// missing = "error"         # follow = false: or "warn", "ignore"
/// fingerprint = "content"   # or "inode": copies are not recognised
/// ```
///
/// From Rust: `Tail::from_settings(&TailSettings { paths: vec!["app.log".into()], follow: false,
/// ..Default::default() }, None)`, with a [`CheckpointStore`] instead of `None` to keep
/// checkpoints (relative paths are relative to the working directory).
pub struct Tail {
    set: Settings,
    dirs: Vec<Dir>,
    excludes: Vec<(bool, Glob)>,
    files: HashMap<u64, Tracked>,
    by_path: HashMap<PathBuf, u64>,
    by_inode: HashMap<(u64, u64), u64>,
    next_fid: u64,
    queue: VecDeque<u64>,
    /// See [`Head`]; newest last.
    heads: VecDeque<Head>,
    open_files: usize,
    acks: AckTracker,
    store: Option<CheckpointStore>,
    saved: HashMap<(u64, u64), Entry>,
    dirty: bool,
    /// The last checkpoint write failed: only the timer tries again (a failing disk is
    /// not hammered once per batch).
    save_failing: bool,
    /// The checkpoint's text, rendered again at each save (its buffer kept).
    save_buf: Vec<u8>,
    last_save: Option<Instant>,
    save_soon_armed: bool,
    gate: PauseGate,
    blocked: bool,
    scanned: bool,
    watching: bool,
    finished: bool,
    errors: u64,
    /// Files whose open ran out of descriptors, opened again when the RETRY timer fires.
    starved: Vec<u64>,
    retry_after: Duration,
    retry_armed: bool,
    starved_logged: bool,
    /// `max_open_files` as configured (and fitted to the descriptor limit):
    /// `set.max_open_files` is the budget now, cut by EMFILE and raised back to this.
    open_limit: usize,
    /// Not before this is the cut budget raised again.
    raise_at: Option<Instant>,
    /// Fresh files judged again when the SETTLE timer fires.
    settling: Vec<u64>,
    settle_armed: bool,
}

#[derive(Debug, Clone)]
struct Settings {
    start_at_end: bool,
    follow: bool,
    poll_interval: Duration,
    max_open_files: usize,
    idle_close: Duration,
    max_line_bytes: usize,
    rotate_wait: Duration,
    missing: Missing,
    /// `fingerprint = "content"`: a new file may be a copy of one already read.
    by_content: bool,
}

struct Dir {
    path: PathBuf,
    names: Vec<Glob>,
    /// The patterns of `names` as written in `paths`, for messages.
    patterns: Vec<String>,
    /// Whether the first scan found a file for each of `names`.
    matched: Vec<bool>,
    wd: Option<WatchDescriptor>,
}

struct Tracked {
    path: PathBuf,
    name: SharedStr,
    dev: u64,
    ino: u64,
    head_len: u32,
    head_hash: u64,
    file: Option<File>,
    splitter: Option<LineSplitter>,
    /// Where to resume when the file is reopened: past the last line handed out.
    resume: u64,
    /// Size when last read or stat'ed: a change means there is something to read.
    known_size: u64,
    /// A checkpoint to check against the file's head before trusting its offset.
    verify: Option<Entry>,
    /// Renamed or deleted: read until this instant, then closed for good.
    rotated: Option<Instant>,
    /// Closed for good; kept until its lines are acknowledged.
    gone: bool,
    queued: bool,
    at_eof: bool,
    failed: bool,
    /// Its last open failed for want of descriptors (EMFILE, ENFILE): retried later.
    starved: bool,
    /// Taken in at offset 0 without a checkpoint and not read yet: at its first read, it
    /// may turn out to be a copy of a file already read (copytruncate).
    fresh: bool,
    /// A fresh file's head length at its last check: a short head is trusted only once
    /// it stopped changing (a copy being written is not judged on its first bytes).
    fresh_len: usize,
    /// A fresh file's size at its last check: a copy shorter than where its original's
    /// reading was is trusted only once its size stopped changing (still being copied).
    fresh_size: u64,
    last_data: Instant,
    /// Not before this is the head read again to see whether the file was rewritten.
    head_due: Instant,
}

/// The head of a file no longer followed under its identity (truncated, or forgotten),
/// and how far it was read: a copy of it continues there.
#[derive(Debug, Clone)]
struct Head {
    len: u32,
    hash: u64,
    at: u64,
    path: PathBuf,
    /// When it was kept (Unix seconds): heads are forgotten after `FORGET_AFTER`.
    seen: u64,
}

/// Heads are saved in the checkpoint as entries of this device and inode (no file has
/// inode 0), so a copy that appears after a restart is still recognised; older versions
/// read them as entries of a file that is never found.
const HEAD_KEY: (u64, u64) = (0, 0);

/// What to do with a fresh file (see [`Tail::check_copy`]).
enum Check {
    /// Read it (from where the check left it).
    Read,
    /// Its original is still being read: queue it again.
    Busy,
    /// It may still be being copied: judge it again after `SETTLE_WAIT`.
    Later,
    /// Empty: wait for it to change.
    Empty,
}

/// Heads of truncated or forgotten files kept for recognising their copies.
const KEEP_HEADS: usize = 256;

/// The descriptor of `tail`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "tail",
    kind: CogKind::Supply,
    summary: "follows files as they grow (globs, rotation, truncation), with acknowledged checkpoints",
    params: TailSettings::PARAMS,
    fields: &[
        ("message", "the line, without its newline, as raw bytes"),
        ("path", "the file the line comes from"),
        ("offset", "byte offset of the line's first byte in the file"),
        (
            "partial",
            "true on a last line emitted without its newline (at the true end of its file)",
        ),
    ],
    build,
};

crate::choice! {
    /// Where `tail` starts a file without a checkpoint that was there at start (`start_at`).
    pub enum StartAt { End = "end", Beginning = "beginning" }
}

crate::choice! {
    /// How `tail` knows a file (`fingerprint`): by the content of its head, then device and
    /// inode (`Content`), or by device and inode only (`Inode`).
    pub enum Fingerprint { Content = "content", Inode = "inode" }
}

crate::settings! {
    /// Settings of `tail`.
    pub struct TailSettings {
        /// files to follow; wildcards `*`, `?`, `[...]`, `{a,b}` in the file name
        #[setting(required)]
        paths: Vec<PathBuf>,
        /// patterns of files not to follow (without `/`: matched against the file name)
        exclude: Vec<String>,
        /// `end` or `beginning`: where to start files without a checkpoint found at start
        /// (files appearing later are read from their start); unset: `end`, or `beginning`
        /// if follow = false
        start_at: Option<StartAt>,
        /// false: read every matched file to its end, then be exhausted
        follow: bool = "true",
        /// how often files are checked without inotify (and as a safety net with it)
        poll_interval: Duration = "1s",
        /// most descriptors held; files beyond it are read in turn
        max_open_files: usize = "1024",
        /// close a file not written for this long (it is reopened when it changes)
        idle_close: Duration = "5m",
        /// longer lines are cut, flagged `truncated` and counted
        #[setting(size)]
        max_line_bytes: usize = "1MiB",
        /// how long a renamed or deleted file is still read
        rotate_wait: Duration = "5s",
        /// an input that cannot be opened: `error` (logged, counted, the run exits 1), `warn`
        /// (logged) or `ignore`
        missing: Missing = "error",
        /// `content`: a new file starting with the 256 first bytes of a file already read is
        /// a copy of it, read from where that one was; `inode`: files are known by device
        /// and inode only (files sharing a long header)
        fingerprint: Fingerprint = "content",
    }
}

fn build(p: &CogParams<'_>, bx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: TailSettings = p.settings()?;
    s.paths = s.paths.iter().map(|f| super::resolve(p, f)).collect();
    // A stable name: the same config finds its checkpoint again after a restart.
    let mut key = Vec::new();
    for path in &s.paths {
        key.extend_from_slice(path.as_os_str().as_bytes());
        key.push(0);
    }
    let mut tail = Tail::from_settings(&s, None).map_err(|e| p.setting_error(e))?;
    let train: String = p
        .train()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let name = format!("tail-{train}-{:016x}.state", fingerprint(&key));
    let mut store = CheckpointStore::new(bx.state_dir, &name);
    if let Some(ledger) = bx.supply_ledger() {
        store = store.with_ledger(&ledger).map_err(|m| p.cog_error(m))?;
    }
    tail.store = Some(store);
    Ok(Box::new(tail))
}

/// The entry of `was`'s directory with inode `(dev, ino)`: where a rotated file went.
fn find_inode(was: &Path, dev: u64, ino: u64) -> Option<PathBuf> {
    let rd = std::fs::read_dir(was.parent()?).ok()?;
    rd.flatten()
        .filter(|e| e.ino() == ino)
        .map(|e| e.path())
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Remembers the head of content no longer followed under its identity, for its copies.
fn keep_head(heads: &mut VecDeque<Head>, head: Head) {
    if head.len > 0 && head.at > 0 {
        heads.push_back(head);
        if heads.len() > KEEP_HEADS {
            heads.pop_front();
        }
    }
}

/// Reads the first bytes of `f` into `buf` (without moving its position); how many.
fn read_head(f: &File, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    got
}

/// Whether `copy` holds the same bytes as the file at `original` just before `at` (the
/// 256 bytes before it), when that file still holds the content whose head `head` is
/// (a file that starts like another, a long common header, is not taken for its copy).
/// When the original can no longer tell (gone, truncated, rewritten), the head decides.
fn same_before(copy: &File, original: &Path, head: u64, at: u64) -> bool {
    if at <= HEAD_BYTES as u64 {
        // The heads, already equal, cover it.
        return true;
    }
    let Ok(o) = File::open(original) else {
        return true;
    };
    let intact = o.metadata().is_ok_and(|m| m.len() >= at)
        && head_of(&o, HEAD_BYTES).is_ok_and(|x| x == (HEAD_BYTES as u32, head));
    if !intact {
        return true;
    }
    let (mut a, mut b) = ([0u8; HEAD_BYTES], [0u8; HEAD_BYTES]);
    let from = at - HEAD_BYTES as u64;
    match (
        copy.read_exact_at(&mut a, from),
        o.read_exact_at(&mut b, from),
    ) {
        (Ok(()), Ok(())) => a == b,
        _ => true,
    }
}

/// Hash of the first up to `len` bytes of `f`, with how many there were.
fn head_of(f: &File, len: usize) -> std::io::Result<(u32, u64)> {
    let mut buf = [0u8; HEAD_BYTES];
    let want = len.min(HEAD_BYTES);
    let mut got = 0;
    while got < want {
        match f.read_at(&mut buf[got..want], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((got as u32, fingerprint(&buf[..got])))
}

impl Tail {
    /// A `tail` supply made from its settings, without a configuration file; `store`
    /// keeps its checkpoints (`None`: every run starts as the first).
    pub fn from_settings(
        s: &TailSettings,
        store: Option<CheckpointStore>,
    ) -> Result<Self, SettingError> {
        if s.paths.is_empty() {
            return Err(SettingError::new(
                "paths",
                "give at least one file or pattern",
            ));
        }
        if !(1..=1_000_000).contains(&s.max_open_files) {
            return Err(SettingError::new(
                "max_open_files",
                "must be between 1 and 1000000",
            ));
        }
        if s.poll_interval.is_zero() {
            return Err(SettingError::new("poll_interval", "must be above 0"));
        }
        if s.max_line_bytes == 0 {
            return Err(SettingError::new("max_line_bytes", "must be above 0"));
        }
        let start_at = s.start_at.unwrap_or(if s.follow {
            StartAt::End
        } else {
            StartAt::Beginning
        });
        let set = Settings {
            start_at_end: start_at == StartAt::End,
            follow: s.follow,
            poll_interval: s.poll_interval,
            max_open_files: s.max_open_files,
            idle_close: s.idle_close,
            max_line_bytes: s.max_line_bytes,
            rotate_wait: s.rotate_wait,
            missing: s.missing,
            by_content: s.fingerprint == Fingerprint::Content,
        };
        let mut dirs: Vec<Dir> = Vec::new();
        for path in &s.paths {
            let (dir, name) = split_path(path)
                .map_err(|m| SettingError::new("paths", format!("{}: {m}", path.display())))?;
            match dirs.iter_mut().find(|d| d.path == dir) {
                Some(d) => {
                    d.names.push(name);
                    d.patterns.push(path.display().to_string());
                    d.matched.push(false);
                }
                None => dirs.push(Dir {
                    path: dir,
                    names: vec![name],
                    patterns: vec![path.display().to_string()],
                    matched: vec![false],
                    wd: None,
                }),
            }
        }
        let excludes = s
            .exclude
            .iter()
            .map(|x| {
                Glob::new(x)
                    .map(|g| (x.contains('/'), g))
                    .map_err(|m| SettingError::new("exclude", format!("{x:?}: {m}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Tail::assembled(set, dirs, excludes, store))
    }

    fn assembled(
        set: Settings,
        dirs: Vec<Dir>,
        excludes: Vec<(bool, Glob)>,
        store: Option<CheckpointStore>,
    ) -> Self {
        Tail {
            open_limit: set.max_open_files,
            raise_at: None,
            set,
            dirs,
            excludes,
            files: HashMap::new(),
            by_path: HashMap::new(),
            by_inode: HashMap::new(),
            next_fid: 0,
            queue: VecDeque::new(),
            heads: VecDeque::new(),
            open_files: 0,
            acks: AckTracker::new(),
            store,
            saved: HashMap::new(),
            dirty: false,
            save_failing: false,
            save_buf: Vec::new(),
            last_save: None,
            save_soon_armed: false,
            gate: PauseGate::new(READ),
            blocked: false,
            scanned: false,
            watching: false,
            finished: false,
            errors: 0,
            starved: Vec::new(),
            retry_after: RETRY_FIRST,
            retry_armed: false,
            starved_logged: false,
            settling: Vec::new(),
            settle_armed: false,
        }
    }

    fn wanted(&self, d: usize, name: &[u8], path: &Path) -> bool {
        if !self.dirs[d].names.iter().any(|g| g.matches(name)) {
            return false;
        }
        !self.excludes.iter().any(|(whole, g)| {
            if *whole {
                g.matches(path.as_os_str().as_bytes())
            } else {
                g.matches(name)
            }
        })
    }

    fn push_queue(&mut self, fid: u64) {
        if let Some(t) = self.files.get_mut(&fid)
            && !t.queued
            && !t.gone
        {
            t.queued = true;
            self.queue.push_back(fid);
        }
    }

    // --- discovery

    /// Lists directory `d` and takes in every wanted file; files it followed that are no
    /// longer there are rotated away.
    fn scan_dir(&mut self, d: usize, initial: bool, cx: &mut Ctx) {
        let dir = self.dirs[d].path.clone();
        let mut seen = HashSet::new();
        match std::fs::read_dir(&dir) {
            Ok(rd) => {
                for ent in rd.flatten() {
                    let name = ent.file_name();
                    let path = dir.join(&name);
                    if !self.wanted(d, name.as_bytes(), &path) {
                        continue;
                    }
                    if self.check_path(&path, initial, cx) {
                        if initial {
                            let dir = &mut self.dirs[d];
                            for (g, m) in dir.names.iter().zip(dir.matched.iter_mut()) {
                                *m |= g.matches(name.as_bytes());
                            }
                        }
                        seen.insert(path);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                if initial {
                    slog::error!(cx.logger(), "cannot list directory"; "path" => %dir.display(), "error" => %e);
                    self.errors += 1;
                }
                return;
            }
        }
        let vanished: Vec<u64> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir.as_path()) && !seen.contains(*p))
            .map(|(_, &fid)| fid)
            .collect();
        for fid in vanished {
            self.rotate_away(fid, cx);
        }
    }

    /// Looks at `path` now: takes in a new file, notices a replaced one, queues a changed
    /// one. Returns whether a regular file is there.
    fn check_path(&mut self, path: &Path, initial: bool, cx: &mut Ctx) -> bool {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(_) => {
                if let Some(&fid) = self.by_path.get(path) {
                    self.rotate_away(fid, cx);
                }
                return false;
            }
        };
        if !meta.is_file() {
            return false;
        }
        let key = (meta.dev(), meta.ino());
        if let Some(&fid) = self.by_inode.get(&key)
            && !self.inode_reused(fid, path)
        {
            let t_path_same = self.files.get(&fid).is_some_and(|t| t.path == path);
            if !t_path_same {
                // Known under another name (renamed into a followed name): follow it here.
                if let Some(old) = self.by_path.insert(path.to_path_buf(), fid)
                    && old != fid
                {
                    self.rotate_away(old, cx);
                }
                if let Some(t) = self.files.get_mut(&fid) {
                    if self.by_path.get(&t.path) == Some(&fid) && t.path != path {
                        self.by_path.remove(&t.path);
                    }
                    t.path = path.to_path_buf();
                    t.name = SharedStr::interned(&path.to_string_lossy());
                    t.rotated = None;
                    // Renamed back under a followed name after it was read for good.
                    t.gone = false;
                }
            }
            if self
                .files
                .get(&fid)
                .is_some_and(|t| t.known_size != meta.len() || t.rotated.is_some())
            {
                self.push_queue(fid);
            }
            return true;
        }
        if let Some(&old) = self.by_path.get(path) {
            // Another file took the name: the one followed so far was rotated away.
            self.rotate_away(old, cx);
        }
        let verify = self.saved.remove(&key);
        let start = match &verify {
            Some(e) => e.offset,
            None if initial && self.set.start_at_end => meta.len(),
            None => 0,
        };
        let fid = self.add(path, key, start, verify, cx);
        self.by_path.insert(path.to_path_buf(), fid);
        self.push_queue(fid);
        true
    }

    /// Whether the file at `path`, whose inode is that of `fid`, is another file: `fid`
    /// was deleted or renamed away and its inode given to a new file (copies made by
    /// copytruncate often get the inode of the copy just deleted). Its head tells. If so,
    /// `fid` keeps its descriptor but no longer owns the inode.
    fn inode_reused(&mut self, fid: u64, path: &Path) -> bool {
        let Some(t) = self.files.get(&fid) else {
            return false;
        };
        if (t.path == path && t.rotated.is_none() && !t.gone) || t.head_len == 0 {
            return false;
        }
        let other = File::open(path)
            .and_then(|f| head_of(&f, t.head_len as usize))
            .is_ok_and(|x| x != (t.head_len, t.head_hash));
        if other {
            self.by_inode.remove(&(t.dev, t.ino));
        }
        other
    }

    fn add(
        &mut self,
        path: &Path,
        key: (u64, u64),
        start: u64,
        verify: Option<Entry>,
        cx: &mut Ctx,
    ) -> u64 {
        let fid = self.next_fid;
        self.next_fid += 1;
        let fresh = self.set.by_content && start == 0 && verify.is_none();
        slog::debug!(cx.logger(), "following file"; "path" => %path.display(), "offset" => start);
        self.files.insert(
            fid,
            Tracked {
                path: path.to_path_buf(),
                name: SharedStr::interned(&path.to_string_lossy()),
                dev: key.0,
                ino: key.1,
                head_len: 0,
                head_hash: fingerprint(&[]),
                file: None,
                splitter: None,
                resume: start,
                known_size: u64::MAX,
                verify,
                rotated: None,
                gone: false,
                queued: false,
                at_eof: false,
                failed: false,
                starved: false,
                fresh,
                fresh_len: usize::MAX,
                fresh_size: u64::MAX,
                last_data: cx.now(),
                head_due: cx.now(),
            },
        );
        self.by_inode.insert(key, fid);
        self.acks.open(fid, start);
        self.dirty = true;
        fid
    }

    /// The file `fid` no longer has its name: read what is left in it until
    /// `rotate_wait` has passed, then close it.
    fn rotate_away(&mut self, fid: u64, cx: &mut Ctx) {
        let Some(t) = self.files.get_mut(&fid) else {
            return;
        };
        if self.by_path.get(&t.path) == Some(&fid) {
            self.by_path.remove(&t.path);
        }
        if t.rotated.is_some() || t.gone {
            return;
        }
        if t.file.is_none() {
            // Closed while idle: the old inode is reachable only under its new name, if it
            // is still in the same directory.
            match find_inode(&t.path, t.dev, t.ino) {
                Some(p) => t.path = p,
                None => {
                    t.gone = true;
                    return;
                }
            }
        }
        slog::debug!(cx.logger(), "file rotated away; reading it to its end"; "path" => %t.path.display());
        let until = cx.now() + self.set.rotate_wait;
        t.rotated = Some(until);
        let _ = cx.timer_at(until, ROTATE);
        self.push_queue(fid);
    }

    /// After the first scan: files of the checkpoint not found under their names, renamed
    /// while the daemon was stopped, are looked for by inode in their directory.
    fn find_renamed(&mut self, cx: &mut Ctx) {
        if self.saved.is_empty() {
            return;
        }
        let mut dirs: HashSet<PathBuf> = HashSet::new();
        for e in self.saved.values() {
            if let Some(d) = e.path.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        for dir in dirs {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for ent in rd.flatten() {
                let ino = ent.ino();
                if !self.saved.keys().any(|k| k.1 == ino) {
                    continue;
                }
                let path = ent.path();
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let key = (meta.dev(), meta.ino());
                if !meta.is_file() || self.by_inode.contains_key(&key) {
                    continue;
                }
                let Some(e) = self.saved.remove(&key) else {
                    continue;
                };
                if meta.len() <= e.offset {
                    continue;
                }
                slog::info!(cx.logger(), "reading the rest of a file rotated while stopped";
                    "path" => %path.display(), "was" => %e.path.display(), "offset" => e.offset);
                let was = SharedStr::interned(&e.path.to_string_lossy());
                let fid = self.add(&path, key, e.offset, Some(e), cx);
                if let Some(t) = self.files.get_mut(&fid) {
                    t.name = was;
                    t.rotated = Some(cx.now() + self.set.rotate_wait);
                }
                let _ = cx.timer_after(self.set.rotate_wait, ROTATE);
                self.push_queue(fid);
            }
        }
    }

    /// After the first scan: patterns that matched no file. Following, that is normal (the
    /// file is waited for); reading once (`follow = false`), `missing` says what it is.
    fn report_unmatched(&mut self, cx: &mut Ctx) {
        for d in &self.dirs {
            for (pattern, _) in d.patterns.iter().zip(&d.matched).filter(|(_, m)| !**m) {
                if self.set.follow {
                    slog::info!(cx.logger(), "no file matches yet; waiting for it"; "path" => pattern);
                } else if self.set.missing.report("tail", pattern, "no such file", cx) {
                    self.errors += 1;
                }
            }
        }
    }

    // --- descriptors

    /// Opens `fid` if needed; false if it cannot be read now.
    fn ensure_open(&mut self, fid: u64, cx: &mut Ctx) -> bool {
        match self.files.get(&fid) {
            Some(t) if t.file.is_some() => return true,
            Some(t) if t.gone => return false,
            Some(_) => {}
            None => return false,
        }
        if self.open_files >= self.set.max_open_files && !self.close_idle_one() {
            return false;
        }
        let Some(t) = self.files.get_mut(&fid) else {
            return false;
        };
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&t.path)
            .and_then(|f| f.metadata().map(|m| (f, m)));
        let (mut f, meta) = match opened {
            Ok(x) => x,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                // Transient: descriptors free up. Hold no more files than are open now
                // (what the process can afford), and open this one again later.
                let budget = self.open_files.max(1);
                if !self.starved_logged || budget < self.set.max_open_files {
                    slog::warn!(cx.logger(), "out of file descriptors; holding fewer files open and retrying";
                        "path" => %t.path.display(), "error" => %e, "max_open_files" => budget.min(self.set.max_open_files));
                    self.starved_logged = true;
                }
                self.set.max_open_files = budget.min(self.set.max_open_files);
                self.raise_at = Some(cx.now() + RAISE_EVERY);
                t.starved = true;
                return false;
            }
            Err(e) => {
                if !t.failed {
                    t.failed = true;
                    if self.set.follow {
                        slog::error!(cx.logger(), "cannot open file"; "path" => %t.path.display(), "error" => %e);
                        self.errors += 1;
                    } else if self.set.missing.report(
                        "tail",
                        &t.path.display().to_string(),
                        &e.to_string(),
                        cx,
                    ) {
                        self.errors += 1;
                    }
                }
                t.known_size = std::fs::metadata(&t.path).map_or(0, |m| m.len());
                return false;
            }
        };
        if (meta.dev(), meta.ino()) != (t.dev, t.ino) {
            // The name points at another file since it was last looked at; the scan or the
            // next event takes the new one in.
            let path = t.path.clone();
            self.rotate_away(fid, cx);
            self.check_path(&path, false, cx);
            return false;
        }
        t.failed = false;
        self.retry_after = RETRY_FIRST;
        let size = meta.len();
        if let Some(e) = t.verify.take() {
            let same = head_of(&f, e.head_len as usize)
                .is_ok_and(|(n, h)| n == e.head_len && h == e.head_hash);
            if !same || size < e.offset {
                slog::info!(cx.logger(), "file changed since its checkpoint; reading it from its start";
                    "path" => %t.path.display(), "checkpoint" => e.offset, "size" => size);
                t.resume = 0;
                self.acks.open(fid, 0);
                // Its old content may live on in a copy (copytruncate while stopped).
                let head = Head {
                    len: e.head_len,
                    hash: e.head_hash,
                    at: e.offset,
                    path: e.path.clone(),
                    seen: unix_now(),
                };
                keep_head(&mut self.heads, head);
            }
        } else if size < t.resume {
            slog::info!(cx.logger(), "file truncated while closed; reading it from its start"; "path" => %t.path.display());
            t.resume = 0;
        }
        if let Err(e) = f.seek(SeekFrom::Start(t.resume)) {
            slog::error!(cx.logger(), "cannot seek in file"; "path" => %t.path.display(), "error" => %e);
            self.errors += 1;
            return false;
        }
        if let Ok((n, h)) = head_of(&f, HEAD_BYTES) {
            t.head_len = n;
            t.head_hash = h;
        }
        // Small files get small buffers: thousands of them may be read in one turn.
        let left = size.saturating_sub(t.resume);
        let read_size = usize::try_from(left).map_or(READ_SIZE, |l| l.clamp(64 << 10, READ_SIZE));
        let mut sp = LineSplitter::new(self.set.max_line_bytes).with_read_size(read_size);
        sp.reset(t.resume);
        t.splitter = Some(sp);
        t.file = Some(f);
        t.at_eof = false;
        self.open_files += 1;
        self.raise_budget(cx);
        true
    }

    /// Closes `fid`'s descriptor; a held partial line is read again on reopening.
    fn close(&mut self, fid: u64) {
        if let Some(t) = self.files.get_mut(&fid)
            && t.file.take().is_some()
        {
            self.open_files -= 1;
            if let Some(sp) = t.splitter.take() {
                t.resume = sp.consumed();
                t.known_size = sp.received();
            }
        }
    }

    /// Makes room under `max_open_files`: closes the open file idle for longest.
    fn close_idle_one(&mut self) -> bool {
        let victim = self
            .files
            .iter()
            .filter(|(_, t)| t.file.is_some() && t.at_eof && t.rotated.is_none() && !t.queued)
            .min_by_key(|(_, t)| t.last_data)
            .map(|(&fid, _)| fid);
        match victim {
            Some(fid) => {
                self.close(fid);
                true
            }
            None => false,
        }
    }

    // --- reading

    fn read_turn(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        let mut budget = TURN_BYTES;
        let mut tries = self.queue.len();
        while budget > 0 && tries > 0 && self.gate.is_open() {
            if self.acks.pending() >= MAX_PENDING {
                self.blocked = true;
                break;
            }
            let Some(fid) = self.queue.pop_front() else {
                break;
            };
            tries -= 1;
            if let Some(t) = self.files.get_mut(&fid) {
                t.queued = false;
            }
            if !self.ensure_open(fid, cx) {
                match self.files.get_mut(&fid) {
                    Some(t) if t.starved => {
                        t.starved = false;
                        self.starved.push(fid);
                        if !self.retry_armed && cx.timer_after(self.retry_after, RETRY).is_ok() {
                            self.retry_armed = true;
                        }
                    }
                    // Waiting for a free descriptor under `max_open_files`.
                    Some(t) if !t.failed && !t.gone => self.push_queue(fid),
                    _ => {}
                }
                continue;
            }
            budget = budget.saturating_sub(self.read_once(fid, out, cx));
        }
        if !self.set.follow
            && self.scanned
            && self.queue.is_empty()
            && self.starved.is_empty()
            && self.settling.is_empty()
        {
            cx.exhausted();
        }
    }

    /// The RETRY timer: files that ran out of descriptors are queued again, and the next
    /// wait doubles (up to `RETRY_MAX`) until an open succeeds.
    fn retry_starved(&mut self, cx: &mut Ctx) {
        self.raise_budget(cx);
        self.retry_armed = false;
        self.retry_after = (self.retry_after * 2).min(RETRY_MAX);
        for fid in std::mem::take(&mut self.starved) {
            self.push_queue(fid);
        }
    }

    /// Lowers `max_open_files` to what the process's descriptor limit allows, with a
    /// warning: beyond it, opens would fail.
    fn fit_descriptor_limit(&mut self, cx: &mut Ctx) {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
            || lim.rlim_cur == libc::RLIM_INFINITY
        {
            return;
        }
        let cur: u64 = lim.rlim_cur;
        let allowed = usize::try_from(cur.saturating_sub(FD_RESERVE).max(cur / 2).max(1))
            .unwrap_or(usize::MAX);
        if self.set.max_open_files > allowed {
            slog::warn!(cx.logger(), "max_open_files is above the process's descriptor limit; lowering it";
                "max_open_files" => self.set.max_open_files, "limit" => cur, "now" => allowed);
            self.set.max_open_files = allowed;
        }
        self.open_limit = self.set.max_open_files;
    }

    /// After running out of descriptors: doubles the budget back towards
    /// `max_open_files`, at most every `RAISE_EVERY` (a descriptor shortage passes; if
    /// it has not, the next EMFILE cuts the budget again).
    fn raise_budget(&mut self, cx: &mut Ctx) {
        let Some(at) = self.raise_at else {
            return;
        };
        let now = cx.now();
        if now < at {
            return;
        }
        self.set.max_open_files = (self.set.max_open_files * 2).min(self.open_limit);
        if self.set.max_open_files >= self.open_limit {
            self.raise_at = None;
            self.starved_logged = false;
            slog::info!(cx.logger(), "file descriptors available again; open-file budget back to max_open_files";
                "max_open_files" => self.open_limit);
        } else {
            self.raise_at = Some(now + RAISE_EVERY);
            slog::debug!(cx.logger(), "raising the open-file budget"; "now" => self.set.max_open_files);
        }
    }

    /// At the first read of a fresh file: if it starts with the whole head of a file
    /// already read (its first 256 bytes, or all of it when shorter), it is a copy of that
    /// file (copytruncate, `cp`): reading continues where that file's reading was, not
    /// from the start. Content, not the inode, identifies it. An empty file is decided at
    /// a later read, and so is a copy of a file still being read (the copy continues where
    /// that file's reading ends).
    fn check_copy(&mut self, fid: u64, cx: &mut Ctx) -> Check {
        let Some(t) = self.files.get(&fid) else {
            return Check::Read;
        };
        let Some(f) = t.file.as_ref() else {
            return Check::Read;
        };
        let mut buf = [0u8; HEAD_BYTES];
        let got = read_head(f, &mut buf);
        if got == 0 {
            // Nothing to judge (a copy just created, say): its next change queues it.
            return Check::Empty;
        }
        if got < HEAD_BYTES {
            let Some(t) = self.files.get_mut(&fid) else {
                return Check::Read;
            };
            if got != t.fresh_len {
                t.fresh_len = got;
                return Check::Later;
            }
            // A short head says too little (a one-line file's line starts many files):
            // the file is known by its device and inode only, a new one read from its start.
            t.fresh = false;
            return Check::Read;
        }
        let whole = fingerprint(&buf);
        let mut best: Option<(u32, u64, PathBuf)> = None;
        let mut busy = false;
        let mut consider = |len: u32, hash: u64, at: u64, path: &Path| {
            // Only a whole head identifies content (see the short head above).
            if len as usize == HEAD_BYTES
                && at > 0
                && hash == whole
                && best.as_ref().is_none_or(|(_, a, _)| at > *a)
            {
                best = Some((len, at, path.to_path_buf()));
                true
            } else {
                false
            }
        };
        for (&other, o) in &self.files {
            if other == fid {
                continue;
            }
            match &o.verify {
                Some(e) => {
                    consider(e.head_len, e.head_hash, e.offset, &o.path);
                }
                None => {
                    let at = o.splitter.as_ref().map_or(o.resume, |sp| sp.consumed());
                    // Its reading goes on (or it grew since it was read to its end): where
                    // it ends is where the copy continues.
                    let unread = || match (&o.file, &o.splitter) {
                        (Some(f), Some(sp)) if !o.gone => {
                            !o.at_eof || f.metadata().is_ok_and(|m| m.len() > sp.received())
                        }
                        _ => false,
                    };
                    busy |= consider(o.head_len, o.head_hash, at, &o.path) && unread();
                }
            }
        }
        if busy {
            return Check::Busy;
        }
        for h in &self.heads {
            consider(h.len, h.hash, h.at, &h.path);
        }
        for e in self.saved.values() {
            consider(e.head_len, e.head_hash, e.offset, &e.path);
        }
        slog::debug!(cx.logger(), "checked a new file for a copy"; "path" => %t.path.display(),
            "head" => got, "copy_of" => ?best);
        let found = best.map(|(_, at, p)| (at, p));
        let Some(t) = self.files.get_mut(&fid) else {
            return Check::Read;
        };
        let size = t
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        if let Some((at, _)) = &found
            && *at > size
            && size != t.fresh_size
        {
            t.fresh_size = size;
            return Check::Later;
        }
        t.fresh = false;
        let Some((at, of)) = found else {
            return Check::Read;
        };
        let (Some(f), Some(sp)) = (t.file.as_mut(), t.splitter.as_mut()) else {
            return Check::Read;
        };
        let at = at.min(size);
        if !same_before(f, &of, whole, at) {
            slog::debug!(cx.logger(), "a new file starts like one already read but differs before where that one's reading was; reading it from its start";
                "path" => %t.path.display(), "like" => %of.display(), "offset" => at);
            return Check::Read;
        }
        if f.seek(SeekFrom::Start(at)).is_err() {
            return Check::Read;
        }
        slog::info!(cx.logger(), "file is a copy of one already read; continuing where that one was";
            "path" => %t.path.display(), "copy_of" => %of.display(), "offset" => at);
        sp.reset(at);
        t.resume = at;
        t.known_size = at;
        self.acks.open(fid, at);
        Check::Read
    }

    /// One read of `fid`; returns the bytes read.
    fn read_once(&mut self, fid: u64, out: &mut Out<Record>, cx: &mut Ctx) -> usize {
        if self.files.get(&fid).is_some_and(|t| t.fresh) {
            match self.check_copy(fid, cx) {
                Check::Read => {}
                Check::Busy => {
                    self.push_queue(fid);
                    return 0;
                }
                Check::Later => {
                    self.settling.push(fid);
                    if !self.settle_armed && cx.timer_after(SETTLE_WAIT, SETTLE).is_ok() {
                        self.settle_armed = true;
                    }
                    return 0;
                }
                Check::Empty => {
                    if let Some(t) = self.files.get_mut(&fid) {
                        t.at_eof = true;
                        t.known_size = 0;
                    }
                    return 0;
                }
            }
        }
        let Some(t) = self.files.get_mut(&fid) else {
            return 0;
        };
        let (Some(f), Some(sp)) = (t.file.as_mut(), t.splitter.as_mut()) else {
            return 0;
        };
        // Truncated and written again past where reading was (copytruncate, then the
        // application's next lines): the size does not show it, the head does. Checked
        // at a wake of a file that had reached its end, at most once per
        // `poll_interval` (not one more syscall per wake of a slowly written file; a
        // truncation the size shows is caught after the read below).
        let now = cx.now();
        let rewritten = t.at_eof && t.head_len > 0 && now >= t.head_due && {
            t.head_due = now + self.set.poll_interval;
            head_of(f, t.head_len as usize).is_ok_and(|x| x != (t.head_len, t.head_hash))
        };
        let mut got = 0;
        loop {
            if rewritten {
                break;
            }
            match sp.read_from(f) {
                Ok(0) => break,
                Ok(n) => {
                    t.at_eof = false;
                    t.last_data = cx.now();
                    t.known_size = sp.received();
                    emit(sp, fid, &t.name, &mut self.acks, false, out, cx);
                    if t.head_len < HEAD_BYTES as u32
                        && sp.received() > t.head_len as u64
                        && let Ok((len, h)) = head_of(f, HEAD_BYTES)
                    {
                        t.head_len = len;
                        t.head_hash = h;
                    }
                    got += n;
                    // A short read usually means the end is reached: confirm it now, so
                    // the buffer of a small file is given back at once instead of after
                    // every other queued file was read (thousands of buffers at a time).
                    if got >= READ_SIZE {
                        self.push_queue(fid);
                        return got;
                    }
                }
                Err(e) => {
                    slog::error!(cx.logger(), "reading file failed; closing it"; "path" => %t.path.display(), "error" => %e);
                    self.errors += 1;
                    if !self.set.follow {
                        cx.fail(format!("tail: reading {} failed: {e}", t.path.display()));
                    }
                    emit(sp, fid, &t.name, &mut self.acks, true, out, cx);
                    t.resume = sp.consumed();
                    self.close(fid);
                    return got;
                }
            }
        }
        // End of the file for now: truncated, finished, or waiting for more.
        let size = f.metadata().map_or(u64::MAX, |m| m.len());
        if rewritten || size < sp.received() {
            slog::info!(cx.logger(), "file truncated; reading it from its start";
                "path" => %t.path.display(), "size" => size, "was" => sp.received());
            emit(sp, fid, &t.name, &mut self.acks, true, out, cx);
            // A copy of what it held (copytruncate) continues where its reading stopped.
            let head = Head {
                len: t.head_len,
                hash: t.head_hash,
                at: sp.consumed(),
                path: t.path.clone(),
                seen: unix_now(),
            };
            if f.seek(SeekFrom::Start(0)).is_ok() {
                sp.reset(0);
                t.known_size = 0;
                t.head_len = 0;
                self.push_queue(fid);
            }
            keep_head(&mut self.heads, head);
            return got;
        }
        t.at_eof = true;
        t.known_size = sp.received();
        let expired = t.rotated.is_some_and(|until| until <= cx.now());
        if !self.set.follow || expired {
            emit(sp, fid, &t.name, &mut self.acks, true, out, cx);
            t.resume = sp.consumed();
            let rotated = t.rotated.is_some();
            self.close(fid);
            if rotated || !self.set.follow {
                self.retire(fid);
            }
        } else if self.open_files > KEEP_BUFFERS {
            sp.shrink_to_fit();
        }
        got
    }

    /// `fid` is read for good; it is forgotten once its lines are acknowledged.
    fn retire(&mut self, fid: u64) {
        if let Some(t) = self.files.get_mut(&fid) {
            t.gone = true;
            t.rotated = None;
            if self.by_path.get(&t.path) == Some(&fid) && self.set.follow {
                self.by_path.remove(&t.path);
            }
        }
    }

    // --- periodic work

    fn tick(&mut self, cx: &mut Ctx) {
        self.raise_budget(cx);
        let now = cx.now();
        if self.watching {
            for d in 0..self.dirs.len() {
                if self.dirs[d].wd.is_none() {
                    // Not watchable yet (missing directory): try again, and poll it meanwhile.
                    self.watch_dir(d, cx);
                    self.scan_dir(d, false, cx);
                }
            }
            // Safety net: a modification inotify did not report.
            let grown: Vec<u64> = self
                .files
                .iter()
                .filter_map(|(&fid, t)| {
                    let f = t.file.as_ref()?;
                    let len = f.metadata().ok()?.len();
                    (len != t.known_size).then_some(fid)
                })
                .collect();
            for fid in grown {
                self.push_queue(fid);
            }
        } else {
            for d in 0..self.dirs.len() {
                self.scan_dir(d, false, cx);
            }
        }
        let mut rotated = Vec::new();
        let mut idle = Vec::new();
        let mut settled = Vec::new();
        for (&fid, t) in &self.files {
            if t.rotated.is_some() {
                rotated.push(fid);
            } else if t.file.is_some()
                && t.at_eof
                && !t.queued
                && now.duration_since(t.last_data) >= self.set.idle_close
            {
                idle.push(fid);
            }
            if t.gone && self.acks.is_settled(fid) {
                settled.push(fid);
            }
        }
        for fid in rotated {
            self.push_queue(fid);
        }
        for fid in idle {
            self.close(fid);
        }
        for fid in settled {
            if let Some(t) = self.files.remove(&fid) {
                keep_head(
                    &mut self.heads,
                    Head {
                        len: t.head_len,
                        hash: t.head_hash,
                        at: t.resume,
                        path: t.path.clone(),
                        seen: unix_now(),
                    },
                );
                if self.by_inode.get(&(t.dev, t.ino)) == Some(&fid) {
                    self.by_inode.remove(&(t.dev, t.ino));
                }
                if self.by_path.get(&t.path) == Some(&fid) {
                    self.by_path.remove(&t.path);
                }
            }
            self.acks.close(fid);
            self.dirty = true;
        }
        let oldest = unix_now().saturating_sub(FORGET_AFTER.as_secs());
        let before = self.saved.len();
        self.saved.retain(|_, e| e.seen >= oldest);
        let heads = self.heads.len();
        self.heads.retain(|h| h.seen >= oldest);
        self.dirty |= self.saved.len() != before || self.heads.len() != heads;
    }

    fn watch_dir(&mut self, d: usize, cx: &mut Ctx) {
        let mask = WatchMask::CREATE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::DELETE
            | WatchMask::MODIFY
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF;
        if let Ok(wd) = cx.watch(&self.dirs[d].path, mask, WATCH) {
            self.dirs[d].wd = Some(wd);
        }
    }

    fn on_inotify(&mut self, ev: &crate::engine::cog::InotifyEvent<'_>, cx: &mut Ctx) {
        if ev.mask.contains(EventMask::Q_OVERFLOW) {
            slog::warn!(cx.logger(), "inotify queue overflowed; rescanning");
            for d in 0..self.dirs.len() {
                self.scan_dir(d, false, cx);
            }
            return;
        }
        let Some(d) = self.dirs.iter().position(|x| x.wd.as_ref() == Some(ev.wd)) else {
            return;
        };
        if ev
            .mask
            .intersects(EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF)
        {
            // The directory went away: the tick watches it again once it is back.
            if let Some(wd) = self.dirs[d].wd.take() {
                let _ = cx.unwatch(&wd);
            }
            self.scan_dir(d, false, cx);
            return;
        }
        let Some(name) = ev.name else {
            return;
        };
        let path = self.dirs[d].path.join(name);
        if !self.wanted(d, name.as_bytes(), &path) {
            // Perhaps a rotated file written under its new name.
            let rotated: Vec<u64> = self
                .files
                .iter()
                .filter(|(_, t)| t.rotated.is_some())
                .map(|(&fid, _)| fid)
                .collect();
            for fid in rotated {
                self.push_queue(fid);
            }
            return;
        }
        if ev.mask.contains(EventMask::MODIFY)
            && let Some(&fid) = self.by_path.get(&path)
        {
            self.push_queue(fid);
            return;
        }
        self.check_path(&path, false, cx);
    }

    // --- checkpoints

    fn save(&mut self, cx: &mut Ctx) {
        let Some(store) = &self.store else {
            return;
        };
        self.last_save = Some(cx.now());
        let seen = unix_now();
        // Rendered straight from the tracked files: no entry or path is cloned.
        let mut text = std::mem::take(&mut self.save_buf);
        text.clear();
        for (&fid, t) in &self.files {
            if t.fresh {
                // Not judged yet (it may be a copy): nothing of it was sent, and an entry
                // at offset 0 would make the next run read it whole, copy or not.
                continue;
            }
            if let Some(e) = &t.verify {
                // Never opened since start: its checkpoint stands as it was.
                EntryRef { seen, ..e.as_ref() }.render(&mut text);
                continue;
            }
            let Some(offset) = self.acks.committed(fid) else {
                continue;
            };
            EntryRef {
                dev: t.dev,
                ino: t.ino,
                head_len: t.head_len,
                head_hash: t.head_hash,
                offset,
                seen,
                path: &t.path,
            }
            .render(&mut text);
        }
        for e in self.saved.values() {
            e.as_ref().render(&mut text);
        }
        for h in &self.heads {
            EntryRef {
                dev: HEAD_KEY.0,
                ino: HEAD_KEY.1,
                head_len: h.len,
                head_hash: h.hash,
                offset: h.at,
                seen: h.seen,
                path: &h.path,
            }
            .render(&mut text);
        }
        // A failure leaves `dirty` set: the timer tries again.
        let saved = store.save_lines(&text);
        self.save_buf = text;
        self.save_failing = saved.is_err();
        match saved {
            Ok(()) => self.dirty = false,
            Err(e) => {
                slog::error!(cx.logger(), "cannot write checkpoint"; "path" => %store.path().display(), "error" => %e);
                self.errors += 1;
            }
        }
    }

    /// Makes the last checkpoint written durable (see [`CheckpointStore::sync`]).
    fn sync(&mut self, cx: &mut Ctx) {
        let Some(store) = &self.store else {
            return;
        };
        if let Err(e) = store.sync() {
            slog::error!(cx.logger(), "cannot sync checkpoint"; "path" => %store.path().display(), "error" => %e);
            self.errors += 1;
        }
    }

    fn load(&mut self, cx: &mut Ctx) {
        let Some(store) = &self.store else {
            return;
        };
        match store.load() {
            Ok(entries) => {
                for e in entries {
                    if (e.dev, e.ino) == HEAD_KEY {
                        let head = Head {
                            len: e.head_len,
                            hash: e.head_hash,
                            at: e.offset,
                            path: e.path,
                            seen: e.seen,
                        };
                        keep_head(&mut self.heads, head);
                    } else {
                        self.saved.insert((e.dev, e.ino), e);
                    }
                }
            }
            Err(e) => {
                slog::error!(cx.logger(), "checkpoint unreadable; ignoring it";
                    "path" => %store.path().display(), "error" => %e);
                self.errors += 1;
            }
        }
    }

    fn kick(&mut self, cx: &mut Ctx) {
        if !self.queue.is_empty() && self.gate.is_open() && !self.blocked {
            cx.enqueue(READ);
        }
    }
}

impl Tail {
    // --- rollback

    /// The file a rewind names: by its path now, else by the name its lines carry.
    fn find_source(&self, source: &str) -> Result<u64, RewindError> {
        if let Some(&fid) = self.by_path.get(Path::new(source)) {
            return Ok(fid);
        }
        let mut found: Vec<u64> = self
            .files
            .iter()
            .filter(|(_, t)| names(&t.path, source) || t.name.as_str() == source)
            .map(|(&fid, _)| fid)
            .collect();
        found.sort_unstable();
        // The newest file of that name that is still read, if any.
        match found
            .iter()
            .rev()
            .find(|f| self.files.get(f).is_some_and(|t| !t.gone))
        {
            Some(&fid) => Ok(fid),
            None if found.is_empty() => Err(RewindError::NoSource(
                "tail follows no file of that path".into(),
            )),
            None => Err(RewindError::Unsupported(
                "the file was read to its end for good (rotated away or follow = false): \
                 it is no longer followed"
                    .into(),
            )),
        }
    }

    /// Makes `fid` read again from `to`: the position is checked against the file, the
    /// reading moves there, and the acknowledgements and checkpoint follow.
    fn rewind_to(&mut self, to: &Rewind, cx: &mut Ctx) -> Result<u64, RewindError> {
        let fid = self.find_source(&to.source)?;
        let Some(t) = self.files.get_mut(&fid) else {
            return Err(RewindError::NoSource(
                "tail follows no file of that path".into(),
            ));
        };
        let shown = t.path.display().to_string();
        let opened;
        let file = match t.file.as_ref() {
            Some(f) => f,
            None => {
                let f = File::open(&t.path)
                    .map_err(|e| RewindError::Unsupported(format!("{shown}: {e}")))?;
                let same = f
                    .metadata()
                    .is_ok_and(|m| (m.dev(), m.ino()) == (t.dev, t.ino));
                if !same {
                    return Err(RewindError::Unsupported(format!(
                        "{shown} is no longer the file followed under that name"
                    )));
                }
                opened = f;
                &opened
            }
        };
        let offset = offset_in(file, &shown, &to.to, "tail")?;
        let was = t.splitter.as_ref().map_or(t.resume, LineSplitter::consumed);
        if let (Some(f), Some(sp)) = (t.file.as_mut(), t.splitter.as_mut()) {
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| RewindError::Unsupported(format!("{shown}: cannot seek: {e}")))?;
            sp.reset(offset);
        }
        // Whatever the checkpoint or a copy check would have said, the reader decided.
        t.verify = None;
        t.fresh = false;
        t.failed = false;
        t.resume = offset;
        t.at_eof = false;
        t.known_size = u64::MAX;
        self.acks.rewind(fid, offset);
        self.dirty = true;
        self.save(cx);
        self.push_queue(fid);
        slog::info!(cx.logger(), "rewound: reading the file again";
            "path" => &shown, "from" => was, "to" => offset);
        Ok(offset)
    }
}

/// Emits the complete lines `sp` holds (and its unterminated tail if `rest`), recording
/// each line's end for the acknowledgements.
fn emit(
    sp: &mut LineSplitter,
    fid: u64,
    name: &SharedStr,
    acks: &mut AckTracker,
    rest: bool,
    out: &mut Out<Record>,
    cx: &mut Ctx,
) {
    let fields = FileFields::new(name);
    with_line_emitter(|em| {
        loop {
            let line = if rest { sp.finish() } else { sp.next_line() };
            let Some(line) = line else {
                break;
            };
            let r = em.emit(line.bytes, &line.info, 2, out, cx);
            fields.add(r, line.info.offset);
            if line.info.unterminated {
                mark_partial(r);
            }
            let id = r.id;
            acks.sent(fid, id, sp.consumed());
        }
    })
}

/// Flags a last line emitted without its newline (`partial = true`).
#[cold]
fn mark_partial(r: &mut Record) {
    static KEY: std::sync::OnceLock<crate::record::Key> = std::sync::OnceLock::new();
    let key = *KEY.get_or_init(|| crate::record::Key::new("partial"));
    r.insert(key, crate::record::Value::Bool(true));
}

impl Cog<Record> for Tail {
    fn name(&self) -> &str {
        "tail"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.fit_descriptor_limit(cx);
        self.load(cx);
        if self.set.follow {
            if cx.has_inotify() {
                self.watching = true;
                // Watches first, scan second: nothing created in between is missed.
                for d in 0..self.dirs.len() {
                    self.watch_dir(d, cx);
                }
            }
            cx.timer_every(self.set.poll_interval, TICK)?;
        }
        cx.timer_every(SAVE_EVERY, SAVE)?;
        // The first scan belongs to the start: once the trains have started, a file that
        // appears is new (read from its start), never taken for one that was there.
        for d in 0..self.dirs.len() {
            self.scan_dir(d, true, cx);
        }
        self.find_renamed(cx);
        self.report_unmatched(cx);
        self.scanned = true;
        cx.enqueue(FIRST_TURN);
        Ok(())
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        match (local, why) {
            (FIRST_TURN, _) if self.queue.is_empty() && !self.set.follow => cx.exhausted(),
            (READ, _) => self.read_turn(out, cx),
            (TICK, _) => self.tick(cx),
            (SAVE, _) => {
                if self.dirty {
                    self.save(cx);
                }
                self.sync(cx);
            }
            (ROTATE, _) => {
                let now = cx.now();
                let due: Vec<u64> = self
                    .files
                    .iter()
                    .filter(|(_, t)| t.rotated.is_some_and(|u| u <= now))
                    .map(|(&fid, _)| fid)
                    .collect();
                for fid in due {
                    self.push_queue(fid);
                }
            }
            (WATCH, Wake::Inotify(ev)) => self.on_inotify(&ev, cx),
            (RETRY, _) => self.retry_starved(cx),
            (SAVE_SOON, _) => {
                self.save_soon_armed = false;
                if self.dirty && !self.save_failing {
                    self.save(cx);
                }
            }
            (SETTLE, _) => {
                self.settle_armed = false;
                for fid in std::mem::take(&mut self.settling) {
                    self.push_queue(fid);
                }
            }
            _ => {}
        }
        if self.errors > 0 {
            out.count_errors(std::mem::take(&mut self.errors));
        }
        self.kick(cx);
    }

    fn event_done(&mut self, ids: &[EventId], cx: &mut Ctx) {
        if self.acks.done(ids) {
            // Written at once (not synced: a process crash keeps it), so a crash re-sends
            // at most the batch in flight.
            self.dirty = true;
            let now = cx.now();
            let due = self.last_save.map_or(now, |t| t + SAVE_GAP);
            if self.save_failing {
                // Only the SAVE timer tries again.
            } else if self.files.len() + self.saved.len() > HEAVY_SAVE && now < due {
                // Many files make a save heavy: while acknowledgements keep coming, one
                // save per SAVE_GAP (a kill -9 still re-sends only a few batches).
                if !self.save_soon_armed && cx.timer_at(due, SAVE_SOON).is_ok() {
                    self.save_soon_armed = true;
                }
            } else {
                self.save(cx);
            }
        }
        if self.blocked && self.acks.pending() < MAX_PENDING / 2 {
            self.blocked = false;
            self.kick(cx);
        }
    }

    fn event_rename(&mut self, old: EventId, new: EventId, _: &mut Ctx) {
        self.acks.rename(old, new);
    }

    fn inspect(&self, into: &mut Inspection) {
        let mut fids: Vec<u64> = self.files.keys().copied().collect();
        fids.sort_unstable();
        for fid in fids {
            let Some(t) = self.files.get(&fid) else {
                continue;
            };
            if t.gone && self.acks.is_settled(fid) {
                continue;
            }
            let read = t.splitter.as_ref().map_or(t.resume, LineSplitter::consumed);
            let acked = match &t.verify {
                Some(e) => Some(e.offset),
                None if t.fresh => None,
                None => self.acks.committed(fid),
            };
            into.source(t.path.to_string_lossy(), read, acked);
        }
        into.buffer("unacknowledged", self.acks.pending(), Some(MAX_PENDING));
    }

    fn rewind(&mut self, to: &Rewind, cx: &mut Ctx) -> Result<u64, RewindError> {
        if self.finished {
            return Err(RewindError::Unsupported("tail is stopping".into()));
        }
        if let Position::Time(_) = to.to {
            return Err(RewindError::Unsupported(
                "tail cannot seek by time: give \"offset\" or \"line\"".into(),
            ));
        }
        self.rewind_to(to, cx)
    }

    fn pause(&mut self, cx: &mut Ctx) {
        self.gate.pause(cx);
    }

    fn resume(&mut self, cx: &mut Ctx) {
        // A turn is queued only if there is something to read.
        self.gate.open();
        self.kick(cx);
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        self.finished = true;
        // A held partial line is emitted (flagged `partial`) only if it truly ends its
        // file: everything was read, and no more is coming (`follow = false`, or the file
        // was rotated away). Otherwise (catching up, paused, or a writer that may still
        // end the line) it stays unsent and the checkpoint at its start: the next run
        // reads it whole.
        // (Inside its `rotate_wait`, a rotated file's writer may still end the line.)
        let now = cx.now();
        let fids: Vec<u64> = self.files.keys().copied().collect();
        for fid in fids {
            if let Some(t) = self.files.get_mut(&fid)
                && let (Some(f), Some(sp)) = (t.file.as_ref(), t.splitter.as_mut())
                && sp.pending_len() > 0
                && (!self.set.follow || t.rotated.is_some_and(|until| until <= now))
                && f.metadata().is_ok_and(|m| m.len() == sp.received())
            {
                emit(sp, fid, &t.name, &mut self.acks, true, out, cx);
            }
        }
        for d in 0..self.dirs.len() {
            if let Some(wd) = self.dirs[d].wd.take() {
                let _ = cx.unwatch(&wd);
            }
        }
        if self.errors > 0 {
            out.count_errors(std::mem::take(&mut self.errors));
        }
    }

    fn done(&mut self, cx: &mut Ctx) {
        // The drains have finished: every acknowledgement is in.
        self.save(cx);
        self.sync(cx);
        let fids: Vec<u64> = self.files.keys().copied().collect();
        for fid in fids {
            self.close(fid);
        }
    }
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field(
                "dirs",
                &self.dirs.iter().map(|d| &d.path).collect::<Vec<_>>(),
            )
            .field("files", &self.files.len())
            .field("open_files", &self.open_files)
            .field("pending", &self.acks.pending())
            .finish()
    }
}
