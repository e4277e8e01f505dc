//! `file_out`: records appended to a file, or to one file per value of some fields.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use inotify::{EventMask, WatchDescriptor, WatchMask};

use crate::kit::checkpoint::{Ledger, Mark};
use crate::kit::drain::{HoldRetry, LineBuffer};
use crate::kit::format::{FormatSettings, OutputFormat, Template};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::Record;
use crate::schema::settings::{de, serde};
use crate::schema::{
    CogParams, ConfigError, ParamType, SettingError, SettingValue, Settings, parse_duration,
};

const RETRY: Local = 1;
const CHECK: Local = 2;
const SYNC: Local = 3;
/// Watch of slot `i` wakes with local `WATCH_BASE + i`.
const WATCH_BASE: Local = 16;

/// What replaces every placeholder of a path template whose rendering was refused.
const UNKNOWN: &str = "_unknown_";

/// Bad rendered paths logged per `reopen_check` period; the rest are only counted, so a
/// stream of hostile field values cannot flood the log.
const BAD_PATH_LOGS: u32 = 10;

/// First wait before retrying a failed write; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two retries of a failed write.
const RETRY_MAX: Duration = Duration::from_secs(16);

/// Buffer kept by an idle templated output after a burst.
const IDLE_BUFFER: usize = 64 << 10;

/// Appends each record to a file in the chosen format. Each batch is written with one
/// `write(2)` per file; records are acknowledged (`event_done`) once written (and synced,
/// when `fsync` asks for it).
///
/// **Path templates.** `path` may hold `{field}` / `{a.b}` placeholders (as the `template`
/// format; `{{` and `}}` are literal braces): each record goes to the file its fields name,
/// e.g. one file per host and day. A missing field renders as nothing. Every file lies under
/// the directory named by the literal text before the first placeholder (for
/// `out/{host}/x.log`, `out/`); field values may add subdirectories (a `/` in a value) but
/// a rendered path with a `..` component, a NUL byte or no file name is refused: the record
/// is counted as an error, logged with its event id, and written to the *fallback* file,
/// the template with every placeholder replaced by `_unknown_` (`out/_unknown_/x.log`), so
/// nothing is lost and nothing is written outside that directory. The same happens when the
/// operating system rejects the name (too long, a directory in the way...). Missing
/// directories are created (`create_dirs`, on by default for templates). At most
/// `max_open_files` files are kept open: when a new one is needed the least recently
/// written is flushed, synced if `fsync` says so, and closed.
///
/// **Existing data.** Each file is appended to (`mode = "append"`, the default): running
/// the same configuration twice adds the records again. `mode = "truncate"` empties each
/// file the first time it is opened in a run (not at a reopen after rotation, nor when a
/// templated file closed for `max_open_files` is opened again). The first open of each
/// file is logged at info with its path and how many bytes it already held. `truncate`
/// is a configuration error in a train whose supply keeps checkpoints (`tail`): after a
/// restart the supply goes on from its checkpoint, so emptying the file would lose what
/// earlier runs wrote.
///
/// A plain path (no placeholder) keeps the single-file behaviour: its directory must exist
/// unless `create_dirs = true`, and an unopenable file is an error at start.
///
/// **Rotation.** On SIGHUP every open file is reopened at its path. A file removed or
/// renamed while open is noticed (inotify when available, and a `stat` comparison every
/// `reopen_check` as a safety net) and reopened: lines buffered before a rename still go to
/// the renamed file, new lines to a fresh file at the path.
///
/// **Symbolic links.** A file is opened with `O_NOFOLLOW`: a symbolic link at the path
/// (planted there to make the daemon append to another file) is refused and logged. For a
/// plain path the records are held and retried until the link is gone; for a templated
/// path the record goes to the fallback file, counted as an error. `follow_symlinks = true`
/// follows them (a path that is a link on purpose). Only the last component is checked:
/// directories of the path are trusted.
///
/// **Exactly-once.** With `exactly_once = true` (a plain path, in a train fed by one
/// `tail` and nothing else), the file's size is kept in the tail's checkpoint, written in
/// the same atomic save as the tail's offsets: before acknowledging records, the drain
/// marks the size they end at (with `fsync`, the synced size). At start the file is cut
/// back to the marked size if it is the marked file (same device and inode) and longer,
/// which removes what was written after the last checkpoint, since the tail sends it again
/// from the saved offsets; the cut is logged. Then the current size is marked and saved
/// before anything is written. So a crash (`kill -9`) neither loses nor repeats a record.
/// After a power loss, what the page cache lost is sent again only if it was not yet
/// acknowledged: use `fsync = "always"` or `"interval:..."` for that promise. Limits:
/// a file replaced at the path or shorter than its mark is not cut (warned, appended
/// to), and records acknowledged into a rotated file after the last checkpoint are written
/// again to the new file after a crash. `exactly_once` is a configuration error with a
/// template, with `mode = "truncate"`, without a `tail` before the drain, with another
/// supply in the train, when other trains send records to it, or when records leave the
/// train under their own ids (`route`, `on_error = "train:..."`): the checkpoint would wait
/// for them while the mark moved past them.
///
/// **Durability.** `fsync = "never"` acknowledges after the write; `"always"` calls
/// `fdatasync` after each batch's write, before acknowledging; `"interval:5s"` syncs every
/// open file that was written to every five seconds and acknowledges records only after the
/// sync covering them (a supply's checkpoint then trails by up to the interval).
///
/// A failed write or sync (disk full, a file it may not write) keeps the unwritten data,
/// pauses the supplies, logs once and retries after a second, backing off to every 16 s;
/// nothing is dropped while the daemon runs. A stop waits for the retries up to `[engine]
/// stop_timeout` (30 s by default); if that passes, the records still held are logged
/// (records, bytes, files) and not written: supplies with checkpoints send them again on
/// the next run.
///
/// ```toml
/// [[train.cog]]
/// type = "file_out"
/// path = "out/{host}/{day}.log"   # or a plain path: "out/events.json"
/// format = "json"                 # raw | json | template
/// create_dirs = true              # default: true for templates, false for a plain path
/// max_open_files = 256
/// mode = "append"                 # append | truncate (empty each file at its first open)
/// fsync = "interval:5s"           # never | always | interval:DURATION
/// reopen_check = "1s"             # "0s": only SIGHUP and inotify
/// follow_symlinks = false         # true: write through a symbolic link at the path
/// exactly_once = false            # true: plain path fed by one tail: no loss, no repeat
/// ```
///
/// From Rust: `FileOut::from_settings(&FileOutSettings { path: "out.log".into(),
/// ..Default::default() }, None)` (a relative path is relative to the working directory).
pub struct FileOut {
    format: OutputFormat,
    template: Option<PathTemplate>,
    create_dirs: bool,
    max_open: usize,
    fsync: Fsync,
    reopen_check: Duration,
    follow_symlinks: bool,
    mode: Mode,
    /// With `exactly_once`: the ledger saved with the feeding supply's checkpoint.
    ledger: Option<Ledger>,
    /// Paths opened in this run: truncated (`mode = "truncate"`) and logged on the first
    /// open only.
    opened: HashSet<PathBuf>,
    /// Outputs by slot; a plain path lives in slot 0 for good.
    slots: Vec<Option<OutFile>>,
    free: Vec<usize>,
    /// Rendered path → slot, for templates; looked up with a borrowed slice, so a record
    /// bound for an open file allocates nothing.
    index: HashMap<Box<[u8]>, usize>,
    open_count: usize,
    path_buf: Vec<u8>,
    clock: u64,
    hold: HoldRetry,
    bad_logged: u32,
}

crate::choice! {
    /// What happens to data already in a file when it is first opened in a run: `Append`
    /// keeps it and writes after it, `Truncate` empties the file first.
    pub enum Mode { Append = "append", Truncate = "truncate" }
}

/// When written data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Never explicitly: acknowledge once written.
    Never,
    /// `fdatasync` after every batch write, before acknowledging.
    Always,
    /// `fdatasync` every period; acknowledge on the sync.
    Interval(Duration),
}

impl Fsync {
    /// Parses `never`, `always` or `interval:DURATION`.
    pub fn parse(s: &str) -> Option<Fsync> {
        match s.trim() {
            "never" => Some(Fsync::Never),
            "always" => Some(Fsync::Always),
            s => {
                let d = parse_duration(s.strip_prefix("interval:")?)?;
                (!d.is_zero()).then_some(Fsync::Interval(d))
            }
        }
    }
}

impl SettingValue for Fsync {
    const TYPE: ParamType = ParamType::Str;
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        Fsync::parse(&s).ok_or_else(|| {
            <D::Error as de::Error>::custom(format!(
                "expected \"never\", \"always\" or \"interval:DURATION\" (e.g. \"interval:5s\"), found {s:?}"
            ))
        })
    }
    fn from_default(text: &str) -> Option<Self> {
        Fsync::parse(text)
    }
}

/// A `path` with placeholders.
struct PathTemplate {
    /// Bytes put before the rendered template: the configuration's directory for a relative
    /// template, nothing for an absolute one.
    base: Vec<u8>,
    template: Template,
    /// Length of the fixed directory every rendered path starts with (through its `/`).
    root_len: usize,
    fallback: Vec<u8>,
}

impl PathTemplate {
    /// `None` when `raw` has no placeholder (a plain path).
    fn parse(raw: &str, base: Vec<u8>) -> Result<Option<PathTemplate>, String> {
        let template = Template::parse(raw)?;
        // Template keeps its pieces private: find the placeholders with the same rules.
        let bytes = raw.as_bytes();
        let mut literal = Vec::new();
        let mut fallback = Vec::new();
        let mut first_field: Option<usize> = None;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'{' if bytes.get(i + 1) == Some(&b'{') => {
                    fallback.push(b'{');
                    i += 2;
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    fallback.push(b'}');
                    i += 2;
                }
                b'{' => {
                    first_field.get_or_insert(fallback.len());
                    fallback.extend_from_slice(UNKNOWN.as_bytes());
                    i += raw[i..].find('}').map_or(bytes.len() - i, |n| n + 1);
                }
                c => {
                    fallback.push(c);
                    i += 1;
                }
            }
        }
        let Some(first) = first_field else {
            return Ok(None);
        };
        literal.extend_from_slice(&base);
        literal.extend_from_slice(&fallback[..first]);
        let root_len = literal
            .iter()
            .rposition(|&c| c == b'/')
            .map_or(0, |p| p + 1);
        let mut full = base.clone();
        full.extend_from_slice(&fallback);
        let t = PathTemplate {
            base,
            template,
            root_len,
            fallback: full,
        };
        check_rendered(&t.fallback, t.root_len).map_err(|why| {
            format!(
                "every rendered path would be refused: with fields replaced by {UNKNOWN} it {why}"
            )
        })?;
        Ok(Some(t))
    }

    fn root(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.fallback[..self.root_len]))
    }
}

/// Why a rendered path is refused, if it is.
fn check_rendered(path: &[u8], root_len: usize) -> Result<(), &'static str> {
    if path.contains(&0) {
        return Err("contains a NUL byte");
    }
    let rest = path.get(root_len..).unwrap_or_default();
    if rest.split(|&c| c == b'/').any(|c| c == b"..") {
        return Err("has a `..` component");
    }
    let name = rest.rsplit(|&c| c == b'/').next().unwrap_or_default();
    if name.is_empty() || name == b"." {
        return Err("has no file name");
    }
    Ok(())
}

/// Cuts the file just opened at `path` back to the size the previous run's checkpoint
/// marked, if it is the file that was marked; returns its length afterwards.
fn honour_mark(ledger: &Ledger, file: &File, path: &Path, cx: &mut Ctx) -> io::Result<u64> {
    let meta = file.metadata()?;
    let len = meta.len();
    let Some(mark) = ledger.saved_mark(path)? else {
        return Ok(len);
    };
    let shown = path.display().to_string();
    if (mark.dev, mark.ino) != (meta.dev(), meta.ino()) {
        slog::warn!(cx.logger(), "exactly-once: the output file is not the one the checkpoint marked (replaced or rotated since); cannot cut it back, appending";
            "path" => shown, "marked_size" => mark.size);
        return Ok(len);
    }
    if len > mark.size {
        file.set_len(mark.size)?;
        slog::info!(cx.logger(), "exactly-once: cut {} bytes written after the last checkpoint", len - mark.size;
            "path" => shown, "size" => mark.size);
        return Ok(mark.size);
    }
    if len < mark.size {
        slog::warn!(cx.logger(), "exactly-once: the output file is shorter than the checkpoint marked (cut by someone else?); appending";
            "path" => shown, "size" => len, "marked_size" => mark.size);
    }
    Ok(len)
}

/// Acknowledges what slot `s` holds once all of it is written; for an exactly-once
/// output, first marks the size those records end at, so the checkpoint saved when the
/// supply sees the acknowledgement carries it.
fn acknowledge(s: &mut OutFile, ledger: Option<&Ledger>, cx: &mut Ctx) {
    if let Some(ledger) = ledger
        && s.lines.pending_bytes() == 0
        && s.lines.pending_records() > 0
    {
        ledger.set_mark(Mark {
            dev: s.identity.0,
            ino: s.identity.1,
            size: s.size,
            path: s.path.clone(),
        });
    }
    s.lines.acknowledge(cx);
}

/// A process killed in the middle of a write can leave its last line without a newline;
/// ends it, so the first line appended now does not glue onto that fragment.
fn end_torn_line(file: &mut File) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] != b'\n' {
        io::Write::write_all(file, b"\n")?;
    }
    Ok(())
}

fn is_path_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EISDIR | libc::ENOTDIR | libc::ENAMETOOLONG | libc::ELOOP | libc::EINVAL)
    ) || e.get_ref().is_some_and(|e| e.is::<SymlinkRefused>())
}

/// The path of an output is a symbolic link and `follow_symlinks` is off.
#[derive(Debug)]
struct SymlinkRefused(PathBuf);

impl std::fmt::Display for SymlinkRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is a symbolic link; refusing to write through it (follow_symlinks = false)",
            self.0.display()
        )
    }
}

impl std::error::Error for SymlinkRefused {}

/// One output file.
struct OutFile {
    path: PathBuf,
    /// The rendered path, as indexed; empty for a plain path.
    key: Box<[u8]>,
    file: Option<File>,
    /// `(dev, inode)` of the open file, to notice it was replaced at its path.
    identity: (u64, u64),
    wd: Option<WatchDescriptor>,
    lines: LineBuffer,
    last_used: u64,
    /// Bytes were written since the last `fdatasync`.
    unsynced: bool,
    /// Length of the open file: its length when opened plus what was written since.
    size: u64,
}

impl OutFile {
    fn new(path: PathBuf, key: Box<[u8]>, lines: LineBuffer) -> Self {
        OutFile {
            path,
            key,
            file: None,
            identity: (0, 0),
            wd: None,
            lines,
            last_used: 0,
            unsynced: false,
            size: 0,
        }
    }

    /// Nothing buffered and nothing waiting for an acknowledgement.
    fn is_idle(&self) -> bool {
        self.lines.pending_bytes() == 0 && self.lines.pending_records() == 0
    }
}

/// The descriptor of `file_out`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "file_out",
    kind: CogKind::Drain,
    summary: "appends records to a file or per-record templated files (raw, json or template); \
              reopens on SIGHUP and when the file is moved or removed",
    params: FileOutSettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `file_out`.
    pub struct FileOutSettings {
        /// the file to append to; {field} placeholders make one file per value (refused
        /// renderings, with `..`, NUL or no file name, go to the path with `_unknown_` in
        /// every placeholder)
        #[setting(required)]
        path: PathBuf,
        /// How each record is rendered.
        #[setting(flatten)]
        format: FormatSettings,
        /// create missing directories of the path; default true for a templated path,
        /// false for a plain one (whose directory must then exist)
        create_dirs: Option<bool>,
        /// templated paths: files kept open; the least recently written is closed first
        max_open_files: usize = "256",
        /// never: acknowledge once written; always: fdatasync each batch before
        /// acknowledging; interval:DURATION (e.g. "interval:5s"): fdatasync every period and
        /// acknowledge on the sync
        fsync: Fsync = "never",
        /// how often to stat the path and reopen a file that was moved or removed (besides
        /// inotify); "0s" turns the check off
        reopen_check: Duration = "1s",
        /// append: write after what each file holds; truncate: empty each file when it is
        /// first opened in this run
        mode: Mode = "append",
        /// plain path fed by one `tail` in the same train: keep the output's size in the
        /// tail's checkpoint and cut the file back to it at start, so a crash neither loses
        /// nor repeats a record
        exactly_once: bool = "false",
        /// write through a symbolic link at the path; by default a link there is refused
        /// (logged; the records are held, or go to the fallback file of a template)
        follow_symlinks: bool = "false",
    }
}

fn build(p: &CogParams<'_>, bx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: FileOutSettings = p.settings()?;
    let raw = s.path.to_string_lossy().into_owned();
    let base = if s.path.is_absolute() {
        Vec::new()
    } else {
        p.resolve("").into_os_string().into_encoded_bytes()
    };
    if s.mode == Mode::Truncate && bx.checkpointing_supplies() > 0 {
        return Err(p.error(
            "mode",
            "a supply of this train keeps checkpoints: after a restart it goes on from its \
             checkpoint, and mode = \"truncate\" would empty what earlier runs wrote",
        ));
    }
    let out = FileOut::configured(s, base, || bx.drain_ledger()).map_err(|e| p.setting_error(e))?;
    bx.will_write(&p.resolve(&raw), "path", out.create_dirs);
    Ok(Box::new(out))
}

impl FileOut {
    /// A `file_out` drain made from its settings, without a configuration file. `ledger`:
    /// with `exactly_once`, the ledger the checkpoint of the feeding supply carries
    /// ([`CheckpointStore::with_ledger`](crate::kit::checkpoint::CheckpointStore::with_ledger)).
    pub fn from_settings(
        s: &FileOutSettings,
        ledger: Option<Ledger>,
    ) -> Result<Self, SettingError> {
        let s = s.clone();
        FileOut::configured(s, Vec::new(), || {
            ledger.ok_or_else(|| {
                "exactly-once output needs the ledger of the checkpointing supply that feeds it"
                    .to_string()
            })
        })
    }

    /// The drain `s` describes; a relative path is taken after `base` (the configuration's
    /// directory, with its trailing `/`). `ledger` is asked for only with `exactly_once`,
    /// once the other checks passed.
    fn configured(
        s: FileOutSettings,
        base: Vec<u8>,
        ledger: impl FnOnce() -> Result<Ledger, String>,
    ) -> Result<Self, SettingError> {
        let Some(raw) = s.path.to_str() else {
            return Err(SettingError::new("path", "must be valid UTF-8"));
        };
        let template =
            PathTemplate::parse(raw, base.clone()).map_err(|m| SettingError::new("path", m))?;
        let format = OutputFormat::new(&s.format)?;
        if s.max_open_files == 0 {
            return Err(SettingError::new("max_open_files", "must be at least 1"));
        }
        if s.fsync == Fsync::Interval(Duration::ZERO) {
            return Err(SettingError::new("fsync", "the interval must be above 0"));
        }
        let ledger = if s.exactly_once {
            if template.is_some() {
                return Err(SettingError::new(
                    "exactly_once",
                    "exactly-once output takes a plain path, not a template",
                ));
            }
            if s.mode == Mode::Truncate {
                return Err(SettingError::new(
                    "exactly_once",
                    "mode = \"truncate\" would empty what the checkpoint counts as written; \
                     exactly-once output appends",
                ));
            }
            Some(ledger().map_err(|m| SettingError::new("exactly_once", m))?)
        } else {
            None
        };
        let mut out = match template {
            Some(t) => FileOut::templated(t, format),
            None => {
                use std::os::unix::ffi::OsStringExt;
                // Without placeholders `{{` and `}}` still stand for single braces.
                let mut path = base;
                path.extend_from_slice(raw.replace("{{", "{").replace("}}", "}").as_bytes());
                FileOut::new(PathBuf::from(std::ffi::OsString::from_vec(path)), format)
            }
        };
        out.create_dirs = s.create_dirs.unwrap_or(out.template.is_some());
        out.max_open = s.max_open_files;
        out.fsync = s.fsync;
        out.reopen_check = s.reopen_check;
        out.follow_symlinks = s.follow_symlinks;
        out.mode = s.mode;
        out.ledger = ledger;
        Ok(out)
    }

    /// Appends to the plain path `path` in `format`, with the defaults of the other keys.
    pub fn new(path: PathBuf, format: OutputFormat) -> Self {
        let mut out = FileOut::empty(format, None);
        let lines = LineBuffer::new(out.format.clone(), 256 << 10);
        out.slots
            .push(Some(OutFile::new(path, Box::default(), lines)));
        out
    }

    /// Sets when written data is synced (and so when records are acknowledged).
    pub fn with_fsync(mut self, fsync: Fsync) -> Self {
        self.fsync = fsync;
        self
    }

    fn templated(t: PathTemplate, format: OutputFormat) -> Self {
        FileOut::empty(format, Some(t))
    }

    fn empty(format: OutputFormat, template: Option<PathTemplate>) -> Self {
        let d = FileOutSettings::default();
        FileOut {
            create_dirs: template.is_some(),
            format,
            template,
            max_open: d.max_open_files,
            fsync: d.fsync,
            reopen_check: d.reopen_check,
            follow_symlinks: d.follow_symlinks,
            mode: d.mode,
            ledger: None,
            opened: HashSet::new(),
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            open_count: 0,
            path_buf: Vec::new(),
            clock: 0,
            hold: HoldRetry::new(RETRY, RETRY_FIRST, RETRY_MAX),
            bad_logged: 0,
        }
    }

    fn slot(&mut self, i: usize) -> Option<&mut OutFile> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    fn open_path(&self, path: &Path) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = if self.follow_symlinks {
            0
        } else {
            libc::O_NOFOLLOW
        };
        let open = || {
            let r = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .custom_flags(flags)
                .open(path);
            match r {
                Err(e)
                    if e.raw_os_error() == Some(libc::ELOOP)
                        && !self.follow_symlinks
                        && std::fs::symlink_metadata(path)
                            .is_ok_and(|m| m.file_type().is_symlink()) =>
                {
                    Err(io::Error::other(SymlinkRefused(path.to_path_buf())))
                }
                r => r,
            }
        };
        match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.create_dirs => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                open()
            }
            r => r,
        }
    }

    /// Prepares a file just opened at `path` for appending: empties it on its first open
    /// in this run with `mode = "truncate"`, else ends a torn last line; logs where the
    /// output goes the first time.
    fn prepare(&mut self, file: &mut File, path: &Path, cx: &mut Ctx) -> io::Result<()> {
        let first = !self.opened.contains(path);
        let mut existing = file.metadata()?.len();
        if first && let Some(ledger) = &self.ledger {
            existing = honour_mark(ledger, file, path, cx)?;
        }
        if first && self.mode == Mode::Truncate {
            file.set_len(0)?;
        } else {
            end_torn_line(file)?;
        }
        if first {
            self.opened.insert(path.to_path_buf());
            let shown = path.display().to_string();
            match (self.mode, existing) {
                (Mode::Truncate, n) if n > 0 => {
                    slog::info!(cx.logger(), "writing to output file, truncated {} existing bytes", n;
                        "path" => shown, "mode" => "truncate")
                }
                (_, 0) => slog::info!(cx.logger(), "writing to output file, new or empty";
                    "path" => shown),
                (_, n) => {
                    slog::info!(cx.logger(), "writing to output file, appending to {} existing bytes", n;
                        "path" => shown, "mode" => "append")
                }
            }
        }
        if let Some(ledger) = &self.ledger {
            // Saved before anything is written, so a crash before the supply's first
            // checkpoint still finds where this file ended.
            let meta = file.metadata()?;
            ledger.set_mark(Mark {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.len(),
                path: path.to_path_buf(),
            });
            ledger.save_now().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot save the exactly-once mark in the checkpoint: {e}"),
                )
            })?;
        }
        Ok(())
    }

    /// Opens slot `i`'s file (closing the least recently written one if at the limit)
    /// and watches it.
    fn attach(&mut self, i: usize, cx: &mut Ctx) -> io::Result<()> {
        self.make_room(i, cx);
        let Some(path) = self.slot(i).map(|s| s.path.clone()) else {
            return Ok(());
        };
        let mut file = self.open_path(&path)?;
        self.prepare(&mut file, &path, cx)?;
        let meta = file.metadata()?;
        let wd = if cx.has_inotify() {
            let local = Local::try_from(i)
                .ok()
                .and_then(|l| l.checked_add(WATCH_BASE));
            // ATTRIB: unlinking an open file only changes its link count; DELETE_SELF comes
            // when the last descriptor (ours) is closed.
            let mask = WatchMask::ATTRIB | WatchMask::DELETE_SELF | WatchMask::MOVE_SELF;
            match local.map(|l| cx.watch(&path, mask, l)) {
                Some(Ok(wd)) => Some(wd),
                Some(Err(e)) => {
                    slog::debug!(cx.logger(), "cannot watch output file; relying on reopen_check";
                        "path" => %path.display(), "error" => %e);
                    None
                }
                None => None,
            }
        } else {
            None
        };
        let newly_open = match self.slot(i) {
            Some(s) => {
                let was_closed = s.file.is_none();
                s.file = Some(file);
                s.identity = (meta.dev(), meta.ino());
                s.size = meta.len();
                s.wd = wd;
                was_closed
            }
            None => false,
        };
        if newly_open {
            self.open_count += 1;
        }
        Ok(())
    }

    /// Closes slot `i`'s file without flushing it.
    fn detach(&mut self, i: usize, cx: &mut Ctx) {
        let Some(s) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if s.file.take().is_some() {
            self.open_count -= 1;
        }
        s.unsynced = false;
        if let Some(wd) = s.wd.take() {
            let _ = cx.unwatch(&wd);
        }
    }

    /// Drops slot `i` when it is closed and holds nothing (templates only).
    fn release(&mut self, i: usize) {
        if self.template.is_none() {
            return;
        }
        let idle = matches!(self.slots.get(i), Some(Some(s)) if s.file.is_none() && s.is_idle());
        if idle && let Some(s) = self.slots[i].take() {
            self.index.remove(&s.key);
            self.free.push(i);
        }
    }

    /// Closes least recently written files until one more may be opened; `keep` is the
    /// slot about to be opened.
    fn make_room(&mut self, keep: usize, cx: &mut Ctx) {
        while self.open_count >= self.max_open {
            let victim = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(j, s)| s.as_ref().map(|s| (j, s)))
                .filter(|(j, s)| *j != keep && s.file.is_some())
                .min_by_key(|(_, s)| s.last_used)
                .map(|(j, _)| j);
            let Some(j) = victim else {
                return;
            };
            let r = self.write_slot(j, cx).and_then(|()| self.sync_slot(j, cx));
            if let Err(e) = r {
                self.note_failure(j, &e, cx);
            }
            self.detach(j, cx);
            self.release(j);
        }
    }

    /// Writes slot `i`'s buffered lines; acknowledges them unless they must be synced
    /// first (then `sync_slot` does).
    fn write_slot(&mut self, i: usize, cx: &mut Ctx) -> io::Result<()> {
        let Some(s) = self.slot(i) else {
            return Ok(());
        };
        if s.lines.pending_bytes() > 0 {
            if s.file.is_none() {
                self.attach(i, cx)?;
            }
            let Some(s) = self.slot(i) else {
                return Ok(());
            };
            if let Some(f) = &mut s.file {
                let before = s.lines.pending_bytes();
                let r = s.lines.write_to(f);
                let written = before - s.lines.pending_bytes();
                s.size += written as u64;
                s.unsynced |= written > 0;
                r?;
            }
        }
        let fsync = self.fsync;
        let ledger = self.ledger.as_ref();
        if let Some(Some(s)) = self.slots.get_mut(i) {
            match fsync {
                Fsync::Never => acknowledge(s, ledger, cx),
                Fsync::Always => {
                    if s.unsynced
                        && let Some(f) = &s.file
                    {
                        f.sync_data()?;
                        s.unsynced = false;
                    }
                    acknowledge(s, ledger, cx);
                }
                Fsync::Interval(_) => {}
            }
        }
        Ok(())
    }

    /// Syncs slot `i`'s file if it was written to, then acknowledges what it holds.
    fn sync_slot(&mut self, i: usize, cx: &mut Ctx) -> io::Result<()> {
        let ledger = self.ledger.as_ref();
        let Some(Some(s)) = self.slots.get_mut(i) else {
            return Ok(());
        };
        if s.unsynced
            && let Some(f) = &s.file
        {
            f.sync_data()?;
            s.unsynced = false;
        }
        acknowledge(s, ledger, cx);
        Ok(())
    }

    fn note_failure(&mut self, i: usize, e: &io::Error, cx: &mut Ctx) {
        let slots = &self.slots;
        self.hold.failed(cx, |cx| {
            let (path, pending) = match slots.get(i) {
                Some(Some(s)) => (s.path.display().to_string(), s.lines.pending_records()),
                _ => (String::new(), 0),
            };
            slog::error!(cx.logger(), "writing output file failed; holding data, pausing supplies, retrying";
                "path" => path, "error" => %e, "pending_records" => pending);
        });
    }

    /// Writes (and, with `sync`, syncs) every output holding data; enters or leaves the
    /// failing state accordingly.
    fn flush_all(&mut self, sync: bool, cx: &mut Ctx) {
        let mut ok = true;
        for i in 0..self.slots.len() {
            let busy = match &self.slots[i] {
                Some(s) => !s.is_idle() || (sync && s.unsynced),
                None => false,
            };
            if !busy {
                continue;
            }
            let mut r = self.write_slot(i, cx);
            if sync && r.is_ok() {
                r = self.sync_slot(i, cx);
            }
            if let Err(e) = r {
                self.note_failure(i, &e, cx);
                ok = false;
            }
        }
        if ok {
            self.hold.succeeded(cx, |cx| {
                slog::info!(cx.logger(), "output files writable again");
            });
        } else {
            self.hold.retry_later(cx);
        }
    }

    fn sync_on_flush(&self) -> bool {
        self.fsync != Fsync::Never
    }

    /// The slot of the rendered path in `path_buf`, creating (and opening) it.
    fn route_new(&mut self, id: EventId, out: &mut Out<Record>, cx: &mut Ctx) -> usize {
        let Some(root_len) = self.template.as_ref().map(|t| t.root_len) else {
            return 0;
        };
        let mut refused = check_rendered(&self.path_buf, root_len)
            .err()
            .map(str::to_owned);
        if refused.is_none() {
            let key: Box<[u8]> = self.path_buf.as_slice().into();
            let i = self.new_slot(key);
            match self.attach(i, cx) {
                Err(e) if is_path_error(&e) => {
                    refused = Some(format!("cannot be opened: {e}"));
                    self.release(i);
                }
                // Other errors (permissions, disk full...) may pass: the lines wait in the
                // slot and the failing state retries.
                _ => return i,
            }
        }
        out.count_errors(1);
        let Some(t) = &self.template else {
            return 0;
        };
        if self.bad_logged < BAD_PATH_LOGS {
            self.bad_logged += 1;
            slog::warn!(cx.logger(), "refused rendered output path; writing the record to the fallback file";
                "event" => id, "path" => %String::from_utf8_lossy(&self.path_buf),
                "why" => refused.unwrap_or_default(),
                "fallback" => %String::from_utf8_lossy(&t.fallback));
        }
        let fallback = t.fallback.clone();
        if let Some(&i) = self.index.get(fallback.as_slice()) {
            return i;
        }
        let i = self.new_slot(fallback.into_boxed_slice());
        if let Err(e) = self.attach(i, cx) {
            // The lines wait in the slot; the write will fail and be retried.
            slog::error!(cx.logger(), "cannot open fallback output file"; "error" => %e);
        }
        i
    }

    fn new_slot(&mut self, key: Box<[u8]>) -> usize {
        let path = PathBuf::from(OsStr::from_bytes(&key));
        let lines = LineBuffer::new(self.format.clone(), 0);
        let file = OutFile::new(path, key.clone(), lines);
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(file);
                i
            }
            None => {
                self.slots.push(Some(file));
                self.slots.len() - 1
            }
        };
        self.index.insert(key, i);
        i
    }

    fn route_batch(&mut self, batch: &[Record], out: &mut Out<Record>, cx: &mut Ctx) {
        self.clock += 1;
        for r in batch.iter() {
            // Never `None` here (`process_batch` checks, and nothing in the loop clears it);
            // borrowed anew per record because `route_new` needs all of `self`.
            let Some(t) = &self.template else {
                continue;
            };
            self.path_buf.clear();
            self.path_buf.extend_from_slice(&t.base);
            t.template.write(r, &mut self.path_buf);
            let i = match self.index.get(self.path_buf.as_slice()) {
                Some(&i) => i,
                None => self.route_new(r.id, out, cx),
            };
            let clock = self.clock;
            if let Some(s) = self.slot(i) {
                s.last_used = clock;
                s.lines.push(r);
            }
        }
    }

    /// Whether slot `i`'s open file is no longer the one at its path; `Some(deleted)`.
    fn replaced(&self, i: usize) -> Option<bool> {
        let s = self.slots.get(i)?.as_ref()?;
        let f = s.file.as_ref()?;
        let deleted = f.metadata().is_ok_and(|m| m.nlink() == 0);
        // Without following links, a link planted at the path is a replacement too.
        let meta = if self.follow_symlinks {
            std::fs::metadata(&s.path)
        } else {
            std::fs::symlink_metadata(&s.path)
        };
        let moved = match meta {
            Ok(m) => (m.dev(), m.ino()) != s.identity,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        (deleted || moved).then_some(deleted)
    }

    /// Reopens slot `i` at its path. Lines buffered before a rename belong to the old
    /// file and are written there first; after a removal they go to the new one.
    fn reopen_slot(&mut self, i: usize, deleted: bool, cx: &mut Ctx) {
        if !deleted {
            let r = self.write_slot(i, cx);
            if let Err(e) = r {
                self.note_failure(i, &e, cx);
            }
        }
        if let Err(e) = self.sync_slot(i, cx) {
            self.note_failure(i, &e, cx);
        }
        self.detach(i, cx);
        let path = match self.slots.get(i) {
            Some(Some(s)) => s.path.display().to_string(),
            _ => return,
        };
        match self.attach(i, cx) {
            Ok(()) => slog::info!(cx.logger(), "output file reopened"; "path" => path),
            Err(e) => {
                slog::error!(cx.logger(), "reopening output file failed; will retry on the next write";
                    "path" => path, "error" => %e);
                self.release(i);
            }
        }
    }

    fn check_slot(&mut self, i: usize, cx: &mut Ctx) {
        if let Some(deleted) = self.replaced(i) {
            if let Some(Some(s)) = self.slots.get(i) {
                slog::info!(cx.logger(), "output file was moved or removed; reopening";
                    "path" => %s.path.display(), "removed" => deleted);
            }
            self.reopen_slot(i, deleted, cx);
        }
    }

    fn check_all(&mut self, cx: &mut Ctx) {
        for i in 0..self.slots.len() {
            self.check_slot(i, cx);
        }
    }
}

impl Cog<Record> for FileOut {
    fn name(&self) -> &str {
        "file_out"
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        match &self.template {
            None => {
                self.attach(0, cx).map_err(|e| {
                    let path = self.slots.first().and_then(Option::as_ref).map(|s| &s.path);
                    format!(
                        "cannot open {} for appending: {e}",
                        path.map(|p| p.display().to_string()).unwrap_or_default()
                    )
                })?;
            }
            Some(t) => {
                let root = t.root();
                if !self.create_dirs && !root.is_dir() {
                    return Err(format!(
                        "output directory {} does not exist (create_dirs = false)",
                        root.display()
                    )
                    .into());
                }
            }
        }
        if !self.reopen_check.is_zero() {
            cx.timer_every(self.reopen_check, CHECK)?;
        }
        if let Fsync::Interval(d) = self.fsync {
            cx.timer_every(d, SYNC)?;
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Vec<Record>, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.template.is_some() {
            self.route_batch(batch, out, cx);
        } else if let Some(Some(s)) = self.slots.first_mut() {
            for r in batch.iter() {
                s.lines.push(r);
            }
        }
        crate::record::pool::recycle(batch.drain(..));
        if !self.hold.is_failing() {
            self.flush_all(false, cx);
        }
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, _: &mut Out<Record>, cx: &mut Ctx) {
        match local {
            RETRY => {
                let sync = self.sync_on_flush();
                self.flush_all(sync, cx);
                if !self.hold.is_failing() && cx.is_shutting_down() {
                    cx.finished();
                }
            }
            CHECK => {
                self.bad_logged = 0;
                self.check_all(cx);
                if self.template.is_some() {
                    for s in self.slots.iter_mut().flatten() {
                        s.lines.shrink_to(IDLE_BUFFER);
                    }
                }
            }
            // While failing, RETRY syncs too.
            SYNC if !self.hold.is_failing() => self.flush_all(true, cx),
            l if l >= WATCH_BASE => {
                let Wake::Inotify(ev) = why else {
                    return;
                };
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    self.check_all(cx);
                    return;
                }
                let i = (l - WATCH_BASE) as usize;
                let ours =
                    matches!(self.slots.get(i), Some(Some(s)) if s.wd.as_ref() == Some(ev.wd));
                if ours {
                    self.check_slot(i, cx);
                }
            }
            _ => {}
        }
        // A reopen may have moved held lines to a new file.
        if !self.hold.is_failing()
            && self
                .slots
                .iter()
                .flatten()
                .any(|s| s.lines.pending_bytes() > 0)
        {
            let sync = self.sync_on_flush();
            self.flush_all(sync, cx);
        }
    }

    fn reopen(&mut self, cx: &mut Ctx) {
        for i in 0..self.slots.len() {
            let open = matches!(self.slots.get(i), Some(Some(s)) if s.file.is_some());
            if open {
                self.reopen_slot(i, false, cx);
            }
        }
    }

    fn finish(&mut self, _: &mut Out<Record>, cx: &mut Ctx) {
        let busy = self.hold.is_failing()
            || self
                .slots
                .iter()
                .flatten()
                .any(|s| !s.is_idle() || s.unsynced);
        if busy {
            cx.linger();
            let sync = self.sync_on_flush();
            self.flush_all(sync, cx);
            if !self.hold.is_failing() {
                cx.finished();
            }
        }
    }

    fn done(&mut self, cx: &mut Ctx) {
        // Anything still held here was never written: the stop ended without finishing.
        let (mut records, mut bytes, mut files) = (0, 0, Vec::new());
        for s in self.slots.iter().flatten() {
            if s.lines.pending_records() > 0 || s.lines.pending_bytes() > 0 {
                records += s.lines.pending_records();
                bytes += s.lines.pending_bytes();
                if files.len() < 5 {
                    files.push(s.path.display().to_string());
                }
            }
        }
        if records > 0 || bytes > 0 {
            slog::error!(cx.logger(), "stopped before every output file was written: records not written";
                "cog" => "file_out", "records" => records, "bytes" => bytes,
                "files" => files.join(", "));
        }
        for s in self.slots.iter_mut().flatten() {
            s.file = None;
        }
        self.open_count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_modes_parse() {
        assert_eq!(Fsync::parse("never"), Some(Fsync::Never));
        assert_eq!(Fsync::parse("always"), Some(Fsync::Always));
        assert_eq!(
            Fsync::parse("interval:250ms"),
            Some(Fsync::Interval(Duration::from_millis(250)))
        );
        assert_eq!(Fsync::parse("interval:0s"), None);
        assert_eq!(Fsync::parse("sometimes"), None);
    }

    #[test]
    fn templates_find_their_root_and_fallback() {
        let t = PathTemplate::parse("out/web-{host}/{{x}}.log", b"/etc/d/".to_vec())
            .unwrap()
            .unwrap();
        assert_eq!(t.root(), Path::new("/etc/d/out/"));
        assert_eq!(t.fallback, b"/etc/d/out/web-_unknown_/{x}.log");
        assert!(
            PathTemplate::parse("out/{{plain}}.log", Vec::new())
                .unwrap()
                .is_none()
        );
        assert!(PathTemplate::parse("/var/{a}/../x", Vec::new()).is_err());
        assert!(PathTemplate::parse("/var/{a", Vec::new()).is_err());
    }

    #[test]
    fn rendered_paths_stay_under_the_root() {
        let root = b"/o/".len();
        assert!(check_rendered(b"/o/a/b.log", root).is_ok());
        assert!(check_rendered(b"/o//tmp/x/a.log.copy", root).is_ok());
        assert!(check_rendered(b"/o/../etc/passwd", root).is_err());
        assert!(check_rendered(b"/o/a/../../x", root).is_err());
        assert!(check_rendered(b"/o/a/", root).is_err());
        assert!(check_rendered(b"/o/.", root).is_err());
        assert!(check_rendered(b"/o/a\0b", root).is_err());
        assert!(check_rendered(b"/o/web-..x", root).is_ok());
    }
}
