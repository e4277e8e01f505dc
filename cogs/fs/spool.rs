//! `spool`: a directory of whole files, each read once and then moved away or deleted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use inotify::{EventMask, WatchDescriptor, WatchMask};

use crate::engine::control::{Inspection, Rewind, RewindError};
use crate::kit::ack::AckTracker;
use crate::kit::glob::Glob;
use crate::kit::lines::LineSplitter;
use crate::kit::rewind::{names, offset_in};
use crate::kit::supply::{PauseGate, emit_lines, emit_rest, offset_key, path_key};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Record, Value};
use crate::schema::settings::{de, serde};
use crate::schema::{CogParams, ConfigError, ParamType, SettingError, SettingValue, Settings};

/// Local token of the reading turns (immediate calls).
const STEP: Local = 0;
/// Local token of the directory watch.
const WATCH: Local = 1;
/// Local token of the periodic rescan.
const POLL: Local = 2;

/// Files read and not yet fully acknowledged; past this the spool opens no further file,
/// so a stalled drain holds a bounded number of descriptors and tracker entries.
const MAX_FILES_IN_FLIGHT: usize = 32;
/// Lines handed out and not acknowledged; past this the spool stops reading (memory bound
/// while a drain is slow). One read may overshoot it by the lines of one chunk.
const MAX_PENDING_LINES: usize = 100_000;
/// Bytes asked for per read: one turn hands at most this much down the train.
const READ_SIZE: usize = LineSplitter::BATCH_READ_SIZE;

/// Reads a spool directory: whole files that writers put there complete, as Warden-style
/// filers do. Each file is read line by line, and once every one of its lines has been
/// acknowledged by the drains it is deleted or moved to another directory; until then it
/// stays where it is.
///
/// **Which files.** Regular files of `dir` itself (not of subdirectories, which are
/// ignored, so `done` and `errors` may live inside `dir`) whose name matches `pattern`
/// (`*`, `?`, `[abc]`, `[a-z]`, `[!a-z]`, `{a,b}` on the file name; a literal brace is
/// written `\{`). Hidden files (name starting
/// with `.`) and names ending in `.tmp` are never taken, whatever the pattern: writers
/// create files under such names and rename them into place when complete.
///
/// **When.** With inotify, a file is taken as soon as it is renamed into `dir`
/// (`IN_MOVED_TO`) or closed after writing in place (`IN_CLOSE_WRITE`; a writer that closes
/// and reopens the file to append loses the race: rename into place instead). The files
/// present at start are all taken at once. A rescan every `poll_interval` is the safety
/// net (and the only way in without inotify): a file it finds is taken once two
/// consecutive scans saw it with the same size and modification time, so without inotify
/// a file arrives within about two intervals.
///
/// **Order.** Files waiting are read in byte order of their names, one at a time; a file
/// that arrives while others wait takes its place among them by name.
///
/// **Guarantee: at least once per file.** A file leaves `dir` only after all its lines are
/// acknowledged. After a crash (`kill -9`, power loss) or a stop (`finish` stops reading;
/// files not fully acknowledged stay), every file still in `dir` is read again in full at
/// the next start: its lines may arrive twice, none is lost. Nothing is checkpointed.
///
/// **Done and errors.** `done = "delete"` removes the file; `done = "move:DIR"` renames it
/// into `DIR` under the same name, or `NAME.1`, `NAME.2`... if that name is taken (an
/// existing file is never overwritten). A file that cannot be read (not a regular file,
/// permission denied, read error) is logged with its path, counted as an error of the cog
/// and moved to `errors` the same way; without `errors` it stays in `dir`, logged once,
/// and is retried only at the next start. Lines of it read before a read error have been
/// sent on. `DIR` and `errors` are created if missing (an error at start, naming the path,
/// if that fails) and must be on the filesystem of `dir`: moves are renames, atomic and
/// never copies; a different filesystem is an error at start.
///
/// Backpressure: paused supplies stop reading; at most 32 files are read and awaiting
/// acknowledgement at once, and reading stops while 100000 lines are unacknowledged.
///
/// The control server's `rewind` makes a file being read, or read and not yet all
/// acknowledged, read again from an offset or a line ([`Cog::rewind`]).
///
/// Fields: `message` (the raw line), `path` (the file's path in `dir` when it was read),
/// `offset` (of the line's first byte).
///
/// ```toml
/// [[train.cog]]
/// type = "spool"
/// dir = "/var/spool/deadbeat"
/// pattern = "*.idea"
/// done = "move:/var/spool/deadbeat/done"   # or "delete"
/// errors = "/var/spool/deadbeat/errors"
/// poll_interval = "1s"
/// max_line_bytes = "1MiB"
/// ```
///
/// From Rust: `Spool::from_settings(&SpoolSettings { dir: "spool".into(), done: Done::Delete,
/// ..Default::default() })` (relative paths are relative to the working directory).
pub struct Spool {
    dir: PathBuf,
    done: Done,
    errors: Option<PathBuf>,
    pattern: Glob,
    poll_interval: Duration,
    splitter: LineSplitter,
    /// Names waiting to be read, in name order.
    queue: BTreeSet<OsString>,
    /// Names taken (being read, awaiting acknowledgement) or failed and left in place: a
    /// scan or a watch event does not queue them again.
    taken: HashSet<OsString>,
    /// What the previous scan saw of files not yet taken: (size, mtime).
    seen: HashMap<OsString, (u64, Option<SystemTime>)>,
    /// Files read (or being read) whose lines are not all acknowledged, by source id.
    files: HashMap<u64, InFlight>,
    /// The file being read.
    current: Option<(u64, File)>,
    tracker: AckTracker,
    next_source: u64,
    watch: Option<WatchDescriptor>,
    gate: PauseGate,
    finishing: bool,
}

/// What becomes of a spool file once all its lines are acknowledged (`done`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Done {
    /// `"delete"`: it is removed.
    #[default]
    Delete,
    /// `"move:DIR"`: it is renamed into this directory.
    Move(PathBuf),
}

impl Done {
    /// Reads `"delete"` or `"move:DIR"`.
    pub fn parse(s: &str) -> Option<Done> {
        match s {
            "delete" => Some(Done::Delete),
            s => match s.strip_prefix("move:") {
                Some(d) if !d.is_empty() => Some(Done::Move(PathBuf::from(d))),
                _ => None,
            },
        }
    }
}

impl SettingValue for Done {
    const TYPE: ParamType = ParamType::Str;
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        Done::parse(&s).ok_or_else(|| {
            <D::Error as de::Error>::custom(format!(
                "expected \"delete\" or \"move:DIR\", found {s:?}"
            ))
        })
    }
    fn from_default(text: &str) -> Option<Self> {
        Done::parse(text)
    }
}

#[derive(Debug)]
struct InFlight {
    name: OsString,
    path: Value,
    /// Every line of the file has been handed out.
    read_all: bool,
    /// Where reading ended, once `read_all`.
    read_to: u64,
}

/// The descriptor of `spool`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "spool",
    kind: CogKind::Supply,
    summary: "reads whole files put into a directory, then deletes or moves each once all its lines are acknowledged",
    params: SpoolSettings::PARAMS,
    fields: &[
        ("message", "the line, without its newline, as raw bytes"),
        (
            "path",
            "the file the line comes from, in the spool directory",
        ),
        ("offset", "byte offset of the line's first byte in the file"),
    ],
    build,
};

crate::settings! {
    /// Settings of `spool`.
    pub struct SpoolSettings {
        /// the spool directory; must exist (only its own entries are read, not
        /// subdirectories)
        #[setting(required)]
        dir: PathBuf,
        /// "delete", or "move:DIR" (same filesystem as dir, created if missing; a clashing
        /// name gets a .N suffix)
        #[setting(required)]
        done: Done,
        /// directory unreadable files are moved to (same filesystem as dir, created if
        /// missing); unset: they stay, logged once
        errors: Option<PathBuf>,
        /// glob on file names (* ? [a-z] [!a-z]); hidden files and names ending in .tmp are
        /// never taken
        pattern: String = "*",
        /// rescan period: the way files are found without inotify, and a safety net with
        /// it
        poll_interval: Duration = "1s",
        /// longer lines are cut, flagged `truncated` and counted
        #[setting(size)]
        max_line_bytes: usize = "1MiB",
    }
}

fn build(p: &CogParams<'_>, bx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: SpoolSettings = p.settings()?;
    s.dir = super::resolve(p, &s.dir);
    if let Done::Move(to) = &mut s.done {
        *to = super::resolve(p, to);
    }
    s.errors = s.errors.map(|e| super::resolve(p, &e));
    bx.will_write_in(&s.dir, "dir", false);
    Ok(Box::new(
        Spool::from_settings(&s).map_err(|e| p.setting_error(e))?,
    ))
}

impl Spool {
    /// A `spool` supply made from its settings, without a configuration file.
    pub fn from_settings(s: &SpoolSettings) -> Result<Self, SettingError> {
        let s = s.clone();
        let pattern = build_pattern(&s.pattern).map_err(|m| SettingError::new("pattern", m))?;
        if s.poll_interval.is_zero() {
            return Err(SettingError::new("poll_interval", "must be above 0"));
        }
        if s.max_line_bytes == 0 {
            return Err(SettingError::new("max_line_bytes", "must be above 0"));
        }
        Ok(Spool {
            dir: s.dir,
            done: s.done,
            errors: s.errors,
            pattern,
            poll_interval: s.poll_interval,
            splitter: LineSplitter::new(s.max_line_bytes).with_read_size(READ_SIZE),
            queue: BTreeSet::new(),
            taken: HashSet::new(),
            seen: HashMap::new(),
            files: HashMap::new(),
            current: None,
            tracker: AckTracker::new(),
            next_source: 0,
            watch: None,
            gate: PauseGate::new(STEP),
            finishing: false,
        })
    }

    /// Whether a name is one the spool takes at all.
    fn wanted(&self, name: &OsStr) -> bool {
        let b = name.as_bytes();
        !b.starts_with(b".") && !b.ends_with(b".tmp") && self.pattern.matches(b)
    }

    fn offer(&mut self, name: OsString) {
        if !self.taken.contains(&name) {
            self.queue.insert(name);
        }
    }

    /// Lists `dir`. The first scan (at start) queues everything; later ones only files
    /// unchanged since the previous scan, since without an event nothing says a writer
    /// working in place has finished.
    fn scan(&mut self, at_start: bool, cx: &mut Ctx) {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                slog::error!(cx.logger(), "cannot list the spool directory";
                    "dir" => %self.dir.display(), "error" => %e);
                return;
            }
        };
        let mut seen = HashMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !self.wanted(&name) || self.taken.contains(&name) || self.queue.contains(&name) {
                continue;
            }
            // Subdirectories are where `done` and `errors` often live: not input.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                continue;
            }
            let stamp = (meta.len(), meta.modified().ok());
            if at_start || self.seen.get(&name) == Some(&stamp) {
                self.queue.insert(name);
            } else {
                seen.insert(name, stamp);
            }
        }
        self.seen = seen;
        if !self.queue.is_empty() {
            cx.enqueue(STEP);
        }
    }

    fn may_read(&self) -> bool {
        self.gate.is_open() && !self.finishing && self.tracker.pending() < MAX_PENDING_LINES
    }

    /// Opens the next queued file that can be read; false when none can be now.
    fn open_next(&mut self, out: &mut Out<Record>, cx: &mut Ctx) -> bool {
        while self.files.len() < MAX_FILES_IN_FLIGHT {
            let Some(name) = self.queue.pop_first() else {
                return false;
            };
            let path = self.dir.join(&name);
            match open_regular(&path) {
                Ok(f) => {
                    let id = self.next_source;
                    self.next_source += 1;
                    self.tracker.open(id, 0);
                    self.splitter.reset(0);
                    self.taken.insert(name.clone());
                    self.seen.remove(&name);
                    self.files.insert(
                        id,
                        InFlight {
                            name,
                            path: Value::Str(path.to_string_lossy().into_owned()),
                            read_all: false,
                            read_to: 0,
                        },
                    );
                    self.current = Some((id, f));
                    return true;
                }
                // Gone since it was seen (a stale event, another consumer): nothing to do.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.taken.insert(name.clone());
                    self.failed(&name, &e.to_string(), out, cx);
                }
            }
        }
        false
    }

    /// One read of the current file (opening the next one if needed).
    fn step(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if !self.may_read() {
            return;
        }
        if self.current.is_none() && !self.open_next(out, cx) {
            return;
        }
        let Some((id, file)) = self.current.as_mut() else {
            return;
        };
        let id = *id;
        let Some(fl) = self.files.get(&id) else {
            self.current = None;
            return;
        };
        let path = fl.path.clone();
        let tracker = &mut self.tracker;
        let mut fill = |r: &mut Record, info: &crate::kit::lines::LineInfo| {
            r.insert(path_key(), path.clone());
            r.insert(offset_key(), Value::Int(info.offset as i64));
            tracker.sent(id, r.id, info.offset);
        };
        match self.splitter.read_from(file) {
            Ok(0) => {
                emit_rest(&mut self.splitter, 2, out, cx, &mut fill);
                self.current = None;
                if let Some(fl) = self.files.get_mut(&id) {
                    fl.read_all = true;
                    fl.read_to = self.splitter.consumed();
                }
                let errs = self.settle(cx);
                out.count_errors(errs);
            }
            Ok(_) => {
                emit_lines(&mut self.splitter, 2, out, cx, &mut fill);
            }
            Err(e) => {
                // The lines before the error are on their way; the file goes to `errors`.
                let msg = format!("read failed at offset {}: {e}", self.splitter.received());
                self.current = None;
                if let Some(fl) = self.files.remove(&id) {
                    self.tracker.close(id);
                    self.failed(&fl.name, &msg, out, cx);
                }
            }
        }
        cx.enqueue(STEP);
    }

    /// Deletes or moves every file read in full whose lines are all acknowledged; returns
    /// how many of them could not be (logged here).
    fn settle(&mut self, cx: &mut Ctx) -> u64 {
        let mut errors = 0;
        let ready: Vec<u64> = self
            .files
            .iter()
            .filter(|(id, f)| f.read_all && self.tracker.is_settled(**id))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            let Some(fl) = self.files.remove(&id) else {
                continue;
            };
            self.tracker.close(id);
            let path = self.dir.join(&fl.name);
            let res = match &self.done {
                Done::Delete => std::fs::remove_file(&path).map(|()| None),
                Done::Move(to) => move_into(&path, to, &fl.name).map(Some),
            };
            match res {
                Ok(to) => {
                    self.taken.remove(&fl.name);
                    slog::debug!(cx.logger(), "spool file done";
                        "path" => %path.display(), "moved_to" => to.map(|p| p.display().to_string()));
                }
                Err(e) => {
                    // Left in `taken`: reading it again now would only duplicate it; the
                    // next start does, which is the at-least-once promise.
                    slog::error!(cx.logger(), "cannot remove a spool file whose lines are all written; it stays and will be read again at the next start";
                        "path" => %path.display(), "error" => %e);
                    errors += 1;
                }
            }
        }
        // Room for another file or fewer pending lines may unblock reading.
        if !self.queue.is_empty() || self.current.is_some() {
            cx.enqueue(STEP);
        }
        errors
    }

    /// A file that cannot be read: counted, logged and moved to `errors` (or left).
    fn failed(&mut self, name: &OsStr, why: &str, out: &mut Out<Record>, cx: &mut Ctx) {
        out.count_errors(1);
        let path = self.dir.join(name);
        let Some(errors) = &self.errors else {
            slog::error!(cx.logger(), "cannot read spool file; it stays until the next start (no errors directory)";
                "path" => %path.display(), "error" => why);
            return;
        };
        match move_into(&path, errors, name) {
            Ok(to) => {
                self.taken.remove(name);
                slog::error!(cx.logger(), "cannot read spool file; moved to the errors directory";
                    "path" => %path.display(), "moved_to" => %to.display(), "error" => why);
            }
            Err(e) => {
                slog::error!(cx.logger(), "cannot read spool file, nor move it to the errors directory; it stays until the next start";
                    "path" => %path.display(), "error" => why, "move_error" => %e);
            }
        }
    }

    fn on_inotify(&mut self, ev: &InotifyEvent<'_>, cx: &mut Ctx) {
        if ev.mask.contains(EventMask::Q_OVERFLOW) {
            slog::warn!(cx.logger(), "inotify queue overflowed; rescanning the spool directory";
                "dir" => %self.dir.display());
            self.scan(false, cx);
            return;
        }
        if ev.mask.contains(EventMask::IGNORED) {
            self.watch = None;
            slog::error!(cx.logger(), "the spool directory is no longer watched (removed or unmounted?); polling only";
                "dir" => %self.dir.display());
            return;
        }
        if ev.mask.contains(EventMask::ISDIR) {
            return;
        }
        if let Some(name) = ev.name
            && self.wanted(name)
        {
            self.offer(name.to_os_string());
            cx.enqueue(STEP);
        }
    }
}

impl Spool {
    /// Makes the spool read a file in flight (being read, or read and not yet all
    /// acknowledged) again from `to`; the file leaves `dir` only once what is read again
    /// is acknowledged too.
    fn rewind_to(&mut self, to: &Rewind, cx: &mut Ctx) -> Result<u64, RewindError> {
        let found = self
            .files
            .iter()
            .find(|(_, f)| names(&self.dir.join(&f.name), &to.source))
            .map(|(&id, _)| id);
        let Some(id) = found else {
            let queued = self
                .queue
                .iter()
                .any(|n| names(&self.dir.join(n), &to.source));
            return Err(if queued {
                RewindError::Unsupported(
                    "the file is not read yet: it will be read from its start".into(),
                )
            } else {
                RewindError::NoSource(
                    "the spool is reading no file of that path (done files are gone)".into(),
                )
            });
        };
        let path = self.dir.join(&self.files[&id].name);
        let shown = path.display().to_string();
        match self.current.as_mut() {
            Some((cur, f)) if *cur == id => {
                let offset = offset_in(f, &shown, &to.to, "spool")?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(|e| RewindError::Unsupported(format!("{shown}: cannot seek: {e}")))?;
                self.splitter.reset(offset);
                self.tracker.rewind(id, offset);
                slog::info!(cx.logger(), "rewound: reading the spool file again";
                    "path" => &shown, "to" => offset);
                return Ok(offset);
            }
            Some(_) => {
                return Err(RewindError::Unsupported(
                    "the spool is reading another file now: rewind once it is read".into(),
                ));
            }
            None => {}
        }
        let mut f = open_regular(&path)
            .map_err(|e| RewindError::Unsupported(format!("cannot open {shown}: {e}")))?;
        let offset = offset_in(&f, &shown, &to.to, "spool")?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| RewindError::Unsupported(format!("{shown}: cannot seek: {e}")))?;
        if let Some(fl) = self.files.get_mut(&id) {
            fl.read_all = false;
        }
        self.splitter.reset(offset);
        self.tracker.rewind(id, offset);
        self.current = Some((id, f));
        slog::info!(cx.logger(), "rewound: reading the spool file again";
            "path" => &shown, "to" => offset);
        Ok(offset)
    }
}

/// Opens a file for reading, refusing anything but a regular file. Non-blocking so that a
/// FIFO left in the spool cannot stall the loop at open.
fn open_regular(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// Renames `from` into directory `to` under `name`, or `name.N` if that is taken; never
/// replaces an existing file.
fn move_into(from: &Path, to: &Path, name: &OsStr) -> std::io::Result<PathBuf> {
    for n in 0u32..10_000 {
        let mut target = name.to_os_string();
        if n > 0 {
            target.push(format!(".{n}"));
        }
        let target = to.join(target);
        match rename_noreplace(from, &target) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "{} and 10000 suffixed names are all taken in {}",
        name.to_string_lossy(),
        to.display()
    )))
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    let (Ok(f), Ok(t)) = (
        CString::new(from.as_os_str().as_bytes()),
        CString::new(to.as_os_str().as_bytes()),
    ) else {
        return Err(std::io::Error::other("path contains a NUL byte"));
    };
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD as in rename(2).
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // Filesystems without RENAME_NOREPLACE: check, then rename (racy only against
        // another process creating the same name in the done directory at that instant).
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(from, to)
        }
        _ => Err(e),
    }
}

/// Creates a target directory if missing and checks it shares `dir`'s filesystem.
fn prepare_target(dir: &Path, dev: u64, target: &Path, what: &str) -> Result<(), BoxError> {
    std::fs::create_dir_all(target).map_err(|e| {
        format!(
            "spool: cannot create the {what} directory {}: {e}",
            target.display()
        )
    })?;
    let meta = std::fs::metadata(target)
        .map_err(|e| format!("spool: {what} directory {}: {e}", target.display()))?;
    if !meta.is_dir() {
        return Err(format!("spool: {what} {} is not a directory", target.display()).into());
    }
    // Moving files into `dir` itself would take them again, endlessly.
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(dir), std::fs::canonicalize(target))
        && a == b
    {
        return Err(format!(
            "spool: the {what} directory {} is the spool directory itself",
            target.display()
        )
        .into());
    }
    if meta.dev() != dev {
        return Err(format!(
            "spool: the {what} directory {} is not on the filesystem of {} (files are moved by rename)",
            target.display(),
            dir.display()
        )
        .into());
    }
    Ok(())
}

impl Cog<Record> for Spool {
    fn name(&self) -> &str {
        "spool"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let meta = std::fs::metadata(&self.dir)
            .map_err(|e| format!("spool: directory {}: {e}", self.dir.display()))?;
        if !meta.is_dir() {
            return Err(format!("spool: {} is not a directory", self.dir.display()).into());
        }
        if let Done::Move(to) = &self.done {
            prepare_target(&self.dir, meta.dev(), to, "done")?;
        }
        if let Some(errors) = &self.errors {
            prepare_target(&self.dir, meta.dev(), errors, "errors")?;
        }
        if cx.has_inotify() {
            // Watching before the first scan: a file arriving in between is seen by both,
            // and the queue keeps it once.
            match cx.watch(
                &self.dir,
                WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE | WatchMask::ONLYDIR,
                WATCH,
            ) {
                Ok(wd) => self.watch = Some(wd),
                Err(e) => {
                    slog::warn!(cx.logger(), "cannot watch the spool directory; polling it";
                        "dir" => %self.dir.display(), "error" => %e);
                }
            }
        }
        cx.timer_every(self.poll_interval, POLL)?;
        self.scan(true, cx);
        Ok(())
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.finishing {
            return;
        }
        match (local, why) {
            (WATCH, Wake::Inotify(ev)) => self.on_inotify(&ev, cx),
            (POLL, Wake::Timer(_)) => self.scan(false, cx),
            _ => self.step(out, cx),
        }
    }

    fn event_done(&mut self, ids: &[EventId], cx: &mut Ctx) {
        if self.tracker.done(ids) {
            // A broadcast has no `out` to count into: failures are logged by `settle`.
            let _ = self.settle(cx);
        }
        // Reading may have stopped on too many pending lines.
        if !self.finishing && (self.current.is_some() || !self.queue.is_empty()) {
            cx.enqueue(STEP);
        }
    }

    fn event_rename(&mut self, old: EventId, new: EventId, _: &mut Ctx) {
        self.tracker.rename(old, new);
    }

    fn inspect(&self, into: &mut Inspection) {
        let mut ids: Vec<u64> = self.files.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(fl) = self.files.get(&id) else {
                continue;
            };
            let read = match &self.current {
                Some((cur, _)) if *cur == id => self.splitter.consumed(),
                _ => fl.read_to,
            };
            // The tracker holds each line's start: the oldest line not acknowledged
            // starts where the acknowledged ones end.
            let acked = self.tracker.oldest_pending(id).unwrap_or(read);
            into.source(self.dir.join(&fl.name).to_string_lossy(), read, Some(acked));
        }
        into.buffer(
            "unacknowledged",
            self.tracker.pending(),
            Some(MAX_PENDING_LINES),
        );
        into.buffer(
            "files_in_flight",
            self.files.len(),
            Some(MAX_FILES_IN_FLIGHT),
        );
        into.buffer("queued_files", self.queue.len(), None);
    }

    fn rewind(&mut self, to: &Rewind, cx: &mut Ctx) -> Result<u64, RewindError> {
        if self.finishing {
            return Err(RewindError::Unsupported("the spool is stopping".into()));
        }
        self.rewind_to(to, cx)
    }

    fn pause(&mut self, cx: &mut Ctx) {
        self.gate.pause(cx);
    }

    fn resume(&mut self, cx: &mut Ctx) {
        self.gate.resume(cx);
    }

    fn finish(&mut self, _: &mut Out<Record>, cx: &mut Ctx) {
        // The file being read stays unfinished (never `read_all`), so it stays in `dir`;
        // its held partial line is not sent: the whole file is read again next start.
        self.finishing = true;
        self.current = None;
        self.queue.clear();
        if let Some(wd) = self.watch.take() {
            let _ = cx.unwatch(&wd);
        }
    }
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("done", &self.done)
            .field("queued", &self.queue.len())
            .field("in_flight", &self.files.len())
            .finish()
    }
}

/// The spool's `pattern`: a name pattern, never a path.
fn build_pattern(pattern: &str) -> Result<Glob, String> {
    if pattern.contains('/') {
        return Err("the pattern applies to file names: it cannot contain '/'".into());
    }
    Glob::new(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_and_tmp_names_are_never_wanted() {
        let s = Spool::from_settings(&SpoolSettings {
            dir: PathBuf::from("/nonexistent"),
            ..Default::default()
        })
        .expect("the default settings are valid");
        assert!(s.wanted(OsStr::new("a.log")));
        assert!(!s.wanted(OsStr::new(".a.log")));
        assert!(!s.wanted(OsStr::new("a.log.tmp")));
    }

    #[test]
    fn patterns_name_files_only() {
        assert!(build_pattern("a/b").is_err());
        assert!(build_pattern("*.log").is_ok());
    }
}
