//! The daemon's own logging: a small `slog` drain with text/JSON formatting
//! and stderr, file and syslog targets.
//!
//! Every record is formatted into a reused per-thread buffer and handed to
//! the kernel with a single `write(2)`/`send(2)`, so lines never interleave
//! with other writers (other threads, other processes appending to the same
//! file). Logging never panics and never blocks on syslog: failures are
//! counted ([`LogHandle::write_errors`]) or routed to stderr.

use std::cell::RefCell;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use slog::{Drain, KV, Key, Level, Logger, OwnedKVList, Record, Serializer};

/// Program name used in syslog messages.
const SYSLOG_IDENT: &str = "deadbeat";
/// Standard local syslog socket.
const SYSLOG_PATH: &str = "/dev/log";
/// syslog facility `daemon`.
const SYSLOG_FACILITY: u8 = 3;
/// After a syslog failure, records go to stderr for this long before
/// reconnecting, so a missing `/dev/log` costs no syscalls per record.
const SYSLOG_RETRY: Duration = Duration::from_secs(1);
/// Mode for newly created log files (before umask); logs may hold
/// information not meant for every local user.
const FILE_MODE: u32 = 0o640;
/// Per-thread buffers larger than this are released after a record, so one
/// huge record does not pin memory in every thread forever.
const MAX_RETAINED: usize = 64 * 1024;

/// Output encoding of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `TS LEVEL message key=value ...`
    Text,
    /// One JSON object per line.
    Json,
}

/// Where records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error.
    Stderr,
    /// RFC 3164-style datagrams to `/dev/log`, facility `daemon`.
    Syslog,
    /// Appended to this file; see [`LogHandle::reopen`] for rotation.
    File(PathBuf),
}

/// Logging configuration.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// Least severe level that is emitted.
    pub level: Level,
    /// Where records go.
    pub target: LogTarget,
    /// How records are written.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: Level::Info,
            target: LogTarget::Stderr,
            format: LogFormat::Text,
        }
    }
}

/// Parses `error|warn|info|debug|trace` (ASCII case-insensitive).
pub fn parse_level(s: &str) -> Option<Level> {
    const LEVELS: [(&str, Level); 5] = [
        ("error", Level::Error),
        ("warn", Level::Warning),
        ("info", Level::Info),
        ("debug", Level::Debug),
        ("trace", Level::Trace),
    ];
    LEVELS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|&(_, level)| level)
}

/// Parses `stderr`, `syslog` or `file:PATH` (keywords ASCII
/// case-insensitive, PATH verbatim and non-empty).
pub fn parse_target(s: &str) -> Option<LogTarget> {
    if s.eq_ignore_ascii_case("stderr") {
        return Some(LogTarget::Stderr);
    }
    if s.eq_ignore_ascii_case("syslog") {
        return Some(LogTarget::Syslog);
    }
    // `get` rather than slicing: a multi-byte char at index 5 must not panic.
    match (s.get(..5), s.get(5..)) {
        (Some(prefix), Some(path)) if prefix.eq_ignore_ascii_case("file:") && !path.is_empty() => {
            Some(LogTarget::File(PathBuf::from(path)))
        }
        _ => None,
    }
}

/// Parses `text` or `json` (ASCII case-insensitive).
pub fn parse_format(s: &str) -> Option<LogFormat> {
    if s.eq_ignore_ascii_case("text") {
        Some(LogFormat::Text)
    } else if s.eq_ignore_ascii_case("json") {
        Some(LogFormat::Json)
    } else {
        None
    }
}

/// Builds the root logger and a handle for reopening/statistics.
///
/// A relative file path is made absolute now, so [`LogHandle::reopen`]
/// still finds it after the daemon changes directory. Syslog connects on
/// the first record.
///
/// # Errors
/// Only when a file target cannot be opened (or the working directory
/// cannot be read to make its path absolute).
pub fn build(s: &LogSettings) -> io::Result<(Logger, LogHandle)> {
    build_with_syslog_path(s, Path::new(SYSLOG_PATH))
}

/// [`build`] with the syslog socket at `syslog_path` (tests bind their own).
pub(crate) fn build_with_syslog_path(
    s: &LogSettings,
    syslog_path: &Path,
) -> io::Result<(Logger, LogHandle)> {
    let out = match &s.target {
        LogTarget::Stderr => Output::Stderr,
        LogTarget::Syslog => Output::Syslog(Mutex::new(SyslogOut {
            path: syslog_path.to_path_buf(),
            sock: None,
            retry_at: None,
            warned: false,
        })),
        LogTarget::File(path) => {
            let path = std::path::absolute(path)?;
            let file = open_append(&path)?;
            Output::File(Mutex::new(FileOut { path, file }))
        }
    };
    let inner = Arc::new(Inner {
        level: s.level,
        format: s.format,
        out,
        write_errors: AtomicU64::new(0),
    });
    let drain = LogDrain {
        inner: Arc::clone(&inner),
    };
    Ok((Logger::root(drain, slog::o!()), LogHandle { inner }))
}

/// Control over a logger built by [`build`]; cheap to clone.
#[derive(Clone)]
pub struct LogHandle {
    inner: Arc<Inner>,
}

impl LogHandle {
    /// Reopens a file target at its original path (creating it), e.g. on
    /// SIGHUP after logrotate renamed the file. No-op for stderr/syslog.
    ///
    /// Takes a lock and allocates: call it from a normal thread, not from
    /// inside a signal handler.
    ///
    /// # Errors
    /// When the file cannot be opened; the old file then stays in use.
    pub fn reopen(&self) -> io::Result<()> {
        let Output::File(m) = &self.inner.out else {
            return Ok(());
        };
        let path = lock(m).path.clone();
        // Open outside the lock so a slow filesystem does not stall loggers.
        let file = open_append(&path)?;
        let old = std::mem::replace(&mut lock(m).file, file);
        drop(old);
        Ok(())
    }

    /// Number of records dropped because writing them failed.
    pub fn write_errors(&self) -> u64 {
        self.inner.write_errors.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.inner.out {
            Output::Stderr => "stderr",
            Output::File(_) => "file",
            Output::Syslog(_) => "syslog",
        };
        f.debug_struct("LogHandle")
            .field("level", &self.inner.level)
            .field("format", &self.inner.format)
            .field("target", &target)
            .field("write_errors", &self.write_errors())
            .finish()
    }
}

struct Inner {
    level: Level,
    format: LogFormat,
    out: Output,
    write_errors: AtomicU64,
}

enum Output {
    Stderr,
    File(Mutex<FileOut>),
    Syslog(Mutex<SyslogOut>),
}

struct FileOut {
    path: PathBuf,
    file: File,
}

struct SyslogOut {
    path: PathBuf,
    sock: Option<UnixDatagram>,
    /// While set and in the future, don't try to reconnect.
    retry_at: Option<Instant>,
    /// The stderr fallback has been announced; it is announced only once so
    /// a flapping syslogd cannot flood stderr with warnings.
    warned: bool,
}

impl SyslogOut {
    /// Sends one datagram. On failure returns the error the first time
    /// ever (so the caller warns once), else `None`.
    fn send(&mut self, msg: &[u8]) -> Result<(), Option<io::Error>> {
        if self.sock.is_none() {
            if let Some(at) = self.retry_at
                && Instant::now() < at
            {
                return Err(None);
            }
            match connect_syslog(&self.path) {
                Ok(sock) => self.sock = Some(sock),
                Err(e) => {
                    self.retry_at = Some(Instant::now() + SYSLOG_RETRY);
                    return Err(self.warn_once(e));
                }
            }
        }
        let Some(sock) = &self.sock else {
            return Err(None);
        };
        match sock.send(msg) {
            Ok(_) => Ok(()),
            Err(e) => {
                // A full queue or an oversized record concerns this record
                // only; anything else (syslogd restarted, socket gone) needs
                // a fresh connection.
                let transient = e.kind() == io::ErrorKind::WouldBlock
                    || matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::ENOBUFS));
                if !transient {
                    self.sock = None;
                    self.retry_at = Some(Instant::now() + SYSLOG_RETRY);
                }
                Err(self.warn_once(e))
            }
        }
    }

    fn warn_once(&mut self, e: io::Error) -> Option<io::Error> {
        if self.warned {
            None
        } else {
            self.warned = true;
            Some(e)
        }
    }
}

fn connect_syslog(path: &Path) -> io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.connect(path)?;
    // A full syslogd queue must not stall the daemon; EAGAIN falls back.
    sock.set_nonblocking(true)?;
    Ok(sock)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Poisoning only means another thread panicked mid-write; the file or
/// socket is still usable, so logging carries on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes a record with one `write(2)`; only a short write (disk nearly
/// full, signal) is completed with further calls, because leaving half a
/// line would corrupt the next record too.
/// Writes a record to stderr, clearing the progress bar of batch runs first if it is shown.
fn to_stderr(buf: &[u8]) -> io::Result<()> {
    crate::daemon::progress::around_stderr(|| write_record(&mut io::stderr(), buf))
}

fn write_record<W: Write>(w: &mut W, buf: &[u8]) -> io::Result<()> {
    let mut off = 0;
    let mut tries = 0;
    while off < buf.len() {
        tries += 1;
        if tries > 8 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        match w.write(&buf[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

struct LogDrain {
    inner: Arc<Inner>,
}

impl Drain for LogDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        if record.level().is_at_least(self.inner.level) {
            self.inner.emit(record, values);
        }
        Ok(())
    }

    fn is_enabled(&self, level: Level) -> bool {
        level.is_at_least(self.inner.level)
    }
}

impl Inner {
    fn emit(&self, record: &Record<'_>, values: &OwnedKVList) {
        let now = SystemTime::now();
        with_bufs(|b| match &self.out {
            Output::Stderr => {
                b.format(self.format, None, now, record, values);
                self.count(to_stderr(&b.line));
            }
            Output::File(m) => {
                // Format before locking: values' Display impls may be slow
                // or may even log themselves.
                b.format(self.format, None, now, record, values);
                self.count(write_record(&mut lock(m).file, &b.line));
            }
            Output::Syslog(m) => {
                b.format(
                    self.format,
                    Some(syslog_pri(record.level())),
                    now,
                    record,
                    values,
                );
                let sent = lock(m).send(&b.line);
                if let Err(first_failure) = sent {
                    if let Some(e) = first_failure {
                        self.warn_syslog_fallback(b, now, values, m, &e);
                    }
                    b.format(self.format, None, now, record, values);
                    self.count(to_stderr(&b.line));
                }
            }
        });
    }

    fn warn_syslog_fallback(
        &self,
        b: &mut Bufs,
        now: SystemTime,
        values: &OwnedKVList,
        m: &Mutex<SyslogOut>,
        e: &io::Error,
    ) {
        let path = lock(m).path.clone();
        let rs = slog::record_static!(Level::Warning, "");
        // One statement: `b!` and `format_args!` borrow temporaries.
        b.format(
            self.format,
            None,
            now,
            &Record::new(
                &rs,
                &format_args!("syslog unavailable, logging to stderr"),
                slog::b!("socket" => %path.display(), "error" => %e),
            ),
            values,
        );
        // Not a record of the daemon's, so not counted if it is lost.
        let _ = to_stderr(&b.line);
    }

    fn count(&self, r: io::Result<()>) {
        if r.is_err() {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn syslog_pri(level: Level) -> u8 {
    let severity = match level {
        Level::Critical => 2,
        Level::Error => 3,
        Level::Warning => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    };
    SYSLOG_FACILITY * 8 + severity
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Critical => "CRITICAL",
        Level::Error => "ERROR",
        Level::Warning => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// Reusable formatting buffers.
#[derive(Default)]
struct Bufs {
    /// The finished record.
    line: Vec<u8>,
    /// Key-value segments of one KV group, in slog's (reverse) order.
    kv: Vec<u8>,
    /// Start offset of each segment in `kv`.
    starts: Vec<usize>,
    /// Scratch for values that arrive as `fmt::Arguments`.
    tmp: String,
    /// The logger's context pairs, formatted.
    context: Vec<u8>,
    /// Keys of the context pairs: a record pair with one of these keys is left out.
    context_keys: Vec<Key>,
}

thread_local! {
    static BUFS: RefCell<Bufs> = RefCell::new(Bufs::default());
}

/// Runs `f` with this thread's buffers, or fresh ones when they are busy (a
/// value's `Display` logging re-entrantly) or gone (thread teardown).
fn with_bufs(f: impl FnOnce(&mut Bufs)) {
    let mut f = Some(f);
    let _ = BUFS.try_with(|cell| {
        // Take `f` only once the borrow succeeded, so the fallback below
        // still has it.
        if let Ok(mut b) = cell.try_borrow_mut()
            && let Some(g) = f.take()
        {
            g(&mut b);
            b.trim();
        }
    });
    if let Some(g) = f {
        g(&mut Bufs::default());
    }
}

impl Bufs {
    fn trim(&mut self) {
        if self.line.capacity() > MAX_RETAINED {
            self.line = Vec::new();
        }
        if self.kv.capacity() > MAX_RETAINED {
            self.kv = Vec::new();
        }
        if self.tmp.capacity() > MAX_RETAINED {
            self.tmp = String::new();
        }
    }

    /// Formats `record` into `self.line`: a newline-terminated line, or
    /// with `syslog_pri` a `<PRI>ident[pid]: ` datagram without timestamp,
    /// level (both carried by syslog) or newline.
    fn format(
        &mut self,
        format: LogFormat,
        syslog_pri: Option<u8>,
        now: SystemTime,
        record: &Record<'_>,
        values: &OwnedKVList,
    ) {
        let json = format == LogFormat::Json;
        self.line.clear();
        let line = &mut self.line;
        if let Some(pri) = syslog_pri {
            let _ = write!(line, "<{pri}>{SYSLOG_IDENT}[{}]: ", std::process::id());
        }
        if json {
            line.extend_from_slice(b"{\"ts\":\"");
            write_timestamp(line, now);
            line.extend_from_slice(b"\",\"level\":\"");
            line.extend_from_slice(level_name(record.level()).as_bytes());
            line.extend_from_slice(b"\",\"msg\":\"");
            write_args(line, record.msg(), true);
            line.push(b'"');
        } else {
            if syslog_pri.is_none() {
                write_timestamp(line, now);
                line.push(b' ');
                line.extend_from_slice(level_name(record.level()).as_bytes());
                line.push(b' ');
            }
            write_args(line, record.msg(), false);
        }

        // The context (a cog's logger carries `train` and `cog`) goes last but wins: a
        // record pair with the same key is left out, so every line has one `cog`.
        self.context.clear();
        self.context_keys.clear();
        let mut ser = KvSer {
            out: &mut self.kv,
            starts: &mut self.starts,
            tmp: &mut self.tmp,
            json,
            keys: KeyFilter::Collect(&mut self.context_keys),
        };
        // A KV impl returning an error loses only its own pairs.
        let _ = values.serialize(record, &mut ser);
        ser.flush_group(&mut self.context);
        let mut ser = KvSer {
            out: &mut self.kv,
            starts: &mut self.starts,
            tmp: &mut self.tmp,
            json,
            keys: KeyFilter::Skip(&self.context_keys),
        };
        let _ = record.kv().serialize(record, &mut ser);
        ser.flush_group(&mut self.line);
        self.line.extend_from_slice(&self.context);

        if json {
            self.line.push(b'}');
        }
        if syslog_pri.is_none() {
            self.line.push(b'\n');
        }
    }
}

/// Writes UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn write_timestamp(out: &mut Vec<u8>, t: SystemTime) {
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // Floor, not truncate, so 0.5 ms before the epoch is 23:59:59.999.
        Err(e) => {
            i64::try_from(e.duration().as_nanos().div_ceil(1_000_000)).map_or(i64::MIN, |v| -v)
        }
    };
    let c = Civil::from_unix_ms(ms);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.min, c.sec, c.ms
    );
}

/// Broken-down UTC time.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    ms: u32,
}

impl Civil {
    /// Proleptic Gregorian calendar, via Howard Hinnant's
    /// `civil_from_days` (exact for the whole `i64` millisecond range).
    fn from_unix_ms(ms: i64) -> Civil {
        let secs = ms.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (year, month, day) = crate::record::timefmt::civil_from_days(days);
        // Bounded by the ranges above: the casts cannot truncate.
        Civil {
            year,
            month,
            day,
            hour: (sod / 3600) as u32,
            min: (sod / 60 % 60) as u32,
            sec: (sod % 60) as u32,
            ms: ms.rem_euclid(1000) as u32,
        }
    }
}

/// Appends `s`, escaping what would break the line or the quoting: control
/// characters and U+2028/9 always, `"` and `\` when `quoted`. Escapes are
/// JSON-style (`\n`, `\u001b`), valid in both formats.
fn escape_into(out: &mut Vec<u8>, s: &str, quoted: bool) {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let short: &[u8] = match c {
            '"' if quoted => b"\\\"",
            '\\' if quoted => b"\\\\",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => b"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        if short.is_empty() {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.extend_from_slice(short);
        }
        start = i + c.len_utf8();
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
}

/// `fmt::Write` adapter that escapes on the way into the buffer, so
/// formatted messages need no intermediate `String`.
struct Escaper<'a> {
    out: &'a mut Vec<u8>,
    quoted: bool,
}

impl fmt::Write for Escaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.out, s, self.quoted);
        Ok(())
    }
}

fn write_args(out: &mut Vec<u8>, args: &fmt::Arguments<'_>, quoted: bool) {
    match args.as_str() {
        Some(s) => escape_into(out, s, quoted),
        // A failing Display impl leaves what it wrote so far.
        None => {
            let _ = fmt::write(&mut Escaper { out, quoted }, *args);
        }
    }
}

/// Text values are bare unless they could be misread: empty, or containing
/// whitespace, `"`, `=` or control characters.
fn write_text_value(out: &mut Vec<u8>, s: &str) {
    let needs_quotes = s.is_empty()
        || s.chars()
            .any(|c| c == '"' || c == '=' || c.is_whitespace() || c.is_control());
    if needs_quotes {
        out.push(b'"');
        escape_into(out, s, true);
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// Works for both `&'static str` keys and slog's `dynamic-keys` `Key`.
fn key_str<K: AsRef<str> + ?Sized>(k: &K) -> &str {
    k.as_ref()
}

/// Serializes key-values as ` key=value` (text) or `,"key":value` (JSON)
/// segments.
struct KvSer<'a> {
    out: &'a mut Vec<u8>,
    starts: &'a mut Vec<usize>,
    tmp: &'a mut String,
    json: bool,
    keys: KeyFilter<'a>,
}

/// What a [`KvSer`] does with the keys it sees.
enum KeyFilter<'a> {
    /// Notes them (the context's keys).
    Collect(&'a mut Vec<Key>),
    /// Leaves out pairs with these keys.
    Skip(&'a [Key]),
}

impl KvSer<'_> {
    /// Whether the pair with `key` is left out; notes the key when collecting.
    fn skipped(&mut self, key: &Key) -> bool {
        match &mut self.keys {
            KeyFilter::Collect(keys) => {
                keys.push(Key::clone(key));
                false
            }
            KeyFilter::Skip(keys) => keys.iter().any(|k| key_str(k) == key_str(key)),
        }
    }

    /// slog hands out each group (record, then each `o!` from the innermost
    /// logger outwards) last pair first; reversing the segments restores
    /// source order within the record and puts context root-first.
    fn flush_group(&mut self, line: &mut Vec<u8>) {
        let mut end = self.out.len();
        for &start in self.starts.iter().rev() {
            line.extend_from_slice(&self.out[start..end]);
            end = start;
        }
        self.out.clear();
        self.starts.clear();
    }

    fn key(&mut self, key: &Key) {
        self.starts.push(self.out.len());
        let key = key_str(key);
        if self.json {
            self.out.extend_from_slice(b",\"");
            escape_into(self.out, key, true);
            self.out.extend_from_slice(b"\":");
        } else {
            self.out.push(b' ');
            write_text_value(self.out, key);
            self.out.push(b'=');
        }
    }

    /// A value that is valid bare in both formats (numbers, booleans).
    fn bare(&mut self, key: Key, v: impl fmt::Debug) -> slog::Result {
        if self.skipped(&key) {
            return Ok(());
        }
        self.key(&key);
        let _ = write!(self.out, "{v:?}");
        Ok(())
    }

    fn string(&mut self, key: Key, s: &str) -> slog::Result {
        if self.skipped(&key) {
            return Ok(());
        }
        self.key(&key);
        if self.json {
            self.out.push(b'"');
            escape_into(self.out, s, true);
            self.out.push(b'"');
        } else {
            write_text_value(self.out, s);
        }
        Ok(())
    }

    fn float(&mut self, key: Key, v: f64, finite: bool) -> slog::Result {
        if finite || !self.json {
            return self.bare(key, v);
        }
        // JSON has no NaN/infinity numbers.
        let s = if v.is_nan() {
            "NaN"
        } else if v > 0.0 {
            "inf"
        } else {
            "-inf"
        };
        self.string(key, s)
    }

    fn null(&mut self, key: Key, text: &str) -> slog::Result {
        if self.skipped(&key) {
            return Ok(());
        }
        self.key(&key);
        let s = if self.json { "null" } else { text };
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

macro_rules! emit_bare {
    ($($name:ident: $t:ty),* $(,)?) => {
        $(fn $name(&mut self, key: Key, val: $t) -> slog::Result {
            self.bare(key, val)
        })*
    };
}

impl Serializer for KvSer<'_> {
    emit_bare! {
        emit_usize: usize, emit_isize: isize, emit_bool: bool,
        emit_u8: u8, emit_i8: i8, emit_u16: u16, emit_i16: i16,
        emit_u32: u32, emit_i32: i32, emit_u64: u64, emit_i64: i64,
        emit_u128: u128, emit_i128: i128,
    }

    fn emit_f32(&mut self, key: Key, val: f32) -> slog::Result {
        // Via f32's own Debug: widening first would print 0.1f32 as
        // 0.10000000149011612.
        if val.is_finite() || !self.json {
            self.bare(key, val)
        } else {
            self.float(key, f64::from(val), false)
        }
    }

    fn emit_f64(&mut self, key: Key, val: f64) -> slog::Result {
        self.float(key, val, val.is_finite())
    }

    fn emit_char(&mut self, key: Key, val: char) -> slog::Result {
        self.string(key, val.encode_utf8(&mut [0; 4]))
    }

    fn emit_str(&mut self, key: Key, val: &str) -> slog::Result {
        self.string(key, val)
    }

    fn emit_unit(&mut self, key: Key) -> slog::Result {
        self.null(key, "()")
    }

    fn emit_none(&mut self, key: Key) -> slog::Result {
        self.null(key, "None")
    }

    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        if let Some(s) = val.as_str() {
            return self.string(key, s);
        }
        // Taken out so `string` can borrow `self` mutably.
        let mut tmp = std::mem::take(self.tmp);
        tmp.clear();
        let _ = fmt::write(&mut tmp, *val);
        let r = self.string(key, &tmp);
        *self.tmp = tmp;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slog::{error, info, o, warn};
    use std::fs;
    use std::sync::atomic::AtomicUsize;

    /// Logs at `level` bypassing slog's compile-time level cap (which drops
    /// `debug!`/`trace!` from release builds), so the drain's own filter is
    /// what gets tested.
    fn log_at(log: &Logger, level: Level, msg: &str) {
        let rs = slog::record_static!(level, "");
        log.log(&Record::new(&rs, &format_args!("{msg}"), slog::b!()));
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "deadbeat-log-{}-{}-{}",
                std::process::id(),
                tag,
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn file_logger(path: &Path, level: Level, format: LogFormat) -> (Logger, LogHandle) {
        build(&LogSettings {
            level,
            target: LogTarget::File(path.to_path_buf()),
            format,
        })
        .unwrap()
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Checks `YYYY-MM-DDTHH:MM:SS.mmmZ` shape.
    fn is_ts(ts: &str) -> bool {
        let b = ts.as_bytes();
        b.len() == 24
            && b.iter().enumerate().all(|(i, &c)| match i {
                4 | 7 => c == b'-',
                10 => c == b'T',
                13 | 16 => c == b':',
                19 => c == b'.',
                23 => c == b'Z',
                _ => c.is_ascii_digit(),
            })
    }

    #[test]
    fn context_pairs_win_over_record_pairs_with_the_same_key() {
        let dir = TempDir::new("context");
        for format in [LogFormat::Text, LogFormat::Json] {
            let path = dir.path(&format!("{format:?}.log"));
            let (root, _h) = file_logger(&path, Level::Info, format);
            let log = root.new(slog::o!("train" => "t", "cog" => "tcp_in#1"));
            slog::info!(log, "connected"; "cog" => "tcp_in", "peer" => "p");
            let line = lines(&path).pop().unwrap();
            match format {
                LogFormat::Text => {
                    assert_eq!(
                        split_text(&line).1,
                        "INFO connected peer=p train=t cog=tcp_in#1"
                    )
                }
                LogFormat::Json => assert_eq!(
                    strip_json_ts(&line),
                    r#"{"ts":"TS","level":"INFO","msg":"connected","peer":"p","train":"t","cog":"tcp_in#1"}"#
                ),
            }
        }
    }

    /// Splits a text line into (timestamp, rest).
    fn split_text(line: &str) -> (&str, &str) {
        let (ts, rest) = line.split_once(' ').unwrap();
        assert!(is_ts(ts), "bad timestamp in {line:?}");
        (ts, rest)
    }

    /// Replaces the JSON timestamp value by `TS`.
    fn strip_json_ts(line: &str) -> String {
        let rest = line.strip_prefix("{\"ts\":\"").unwrap();
        let (ts, rest) = rest.split_once('"').unwrap();
        assert!(is_ts(ts), "bad timestamp in {line:?}");
        format!("{{\"ts\":\"TS\"{rest}")
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_level("error"), Some(Level::Error));
        assert_eq!(parse_level("WARN"), Some(Level::Warning));
        assert_eq!(parse_level("Info"), Some(Level::Info));
        assert_eq!(parse_level("debug"), Some(Level::Debug));
        assert_eq!(parse_level("trace"), Some(Level::Trace));
        assert_eq!(parse_level("warning"), None);
        assert_eq!(parse_level(""), None);

        assert_eq!(parse_target("stderr"), Some(LogTarget::Stderr));
        assert_eq!(parse_target("SYSLOG"), Some(LogTarget::Syslog));
        assert_eq!(
            parse_target("file:/var/log/Deadbeat.log"),
            Some(LogTarget::File("/var/log/Deadbeat.log".into()))
        );
        assert_eq!(parse_target("File:x"), Some(LogTarget::File("x".into())));
        assert_eq!(parse_target("file:"), None);
        assert_eq!(parse_target("file"), None);
        assert_eq!(parse_target("fileé:x"), None);
        assert_eq!(parse_target("filé:x"), None);
        assert_eq!(parse_target("/var/log/x"), None);

        assert_eq!(parse_format("text"), Some(LogFormat::Text));
        assert_eq!(parse_format("JSON"), Some(LogFormat::Json));
        assert_eq!(parse_format("yaml"), None);

        let d = LogSettings::default();
        assert_eq!(
            (d.level, d.target, d.format),
            (Level::Info, LogTarget::Stderr, LogFormat::Text)
        );
    }

    #[test]
    fn civil_time() {
        let fmt = |ms: i64| {
            let mut v = Vec::new();
            write_timestamp(
                &mut v,
                if ms >= 0 {
                    UNIX_EPOCH + Duration::from_millis(ms as u64)
                } else {
                    UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
                },
            );
            String::from_utf8(v).unwrap()
        };
        assert_eq!(fmt(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(fmt(1_795_779_877_123), "2026-11-27T11:44:37.123Z");
        assert_eq!(fmt(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(fmt(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(fmt(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(fmt(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(fmt(-62_135_596_800_000), "0001-01-01T00:00:00.000Z");
        let mut v = Vec::new();
        write_timestamp(&mut v, UNIX_EPOCH - Duration::from_micros(500));
        assert_eq!(v, b"1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn text_format() {
        let dir = TempDir::new("text");
        let path = dir.path("t.log");
        let (root, _h) = file_logger(&path, Level::Trace, LogFormat::Text);
        let log = root.new(o!("svc" => "deadbeat", "port" => 514u16));
        let child = log.new(o!("conn" => 7));
        info!(child, "hello world"; "a" => 1, "b" => -2i64, "s" => "two words");
        warn!(log, "esc"; "q" => "say \"hi\"", "eq" => "a=b", "nl" => "x\ny",
            "ctl" => "\u{1}\u{7f}", "bs" => "C:\\dir", "bsq" => "a \\ b", "empty" => "",
            "t" => true, "f" => 1.5, "none" => None::<u8>, "unit" => (), "c" => 'x',
            "fmt" => format_args!("{}-{}", 1, 2), "disp" => %"p q");
        error!(log, "multi\nline\tmsg \"quoted\" {}", 42);
        log_at(&log, Level::Debug, "");

        let got = lines(&path);
        assert_eq!(got.len(), 4, "{got:?}");
        let rest: Vec<&str> = got.iter().map(|l| split_text(l).1).collect();
        assert_eq!(
            rest[0],
            "INFO hello world a=1 b=-2 s=\"two words\" svc=deadbeat port=514 conn=7"
        );
        assert_eq!(
            rest[1],
            "WARN esc q=\"say \\\"hi\\\"\" eq=\"a=b\" nl=\"x\\ny\" ctl=\"\\u0001\\u007f\" \
             bs=C:\\dir bsq=\"a \\\\ b\" empty=\"\" t=true f=1.5 none=None unit=() c=x \
             fmt=1-2 disp=\"p q\" svc=deadbeat port=514"
        );
        assert_eq!(
            rest[2],
            "ERROR multi\\nline\\tmsg \"quoted\" 42 svc=deadbeat port=514"
        );
        assert_eq!(rest[3], "DEBUG  svc=deadbeat port=514");
    }

    #[test]
    fn json_format() {
        let dir = TempDir::new("json");
        let path = dir.path("j.log");
        let (root, _h) = file_logger(&path, Level::Info, LogFormat::Json);
        let log = root.new(o!("svc" => "deadbeat"));
        info!(log, "hello \"world\"\n\u{1b}[0m\\"; "u" => 18_446_744_073_709_551_615u64,
            "i" => -9_223_372_036_854_775_808i64, "f" => 0.25, "f32" => 0.1f32,
            "big" => 1e300, "nan" => f64::NAN, "inf" => f64::INFINITY, "ninf" => f64::NEG_INFINITY,
            "t" => false, "none" => None::<&str>, "unit" => (), "c" => '"',
            "s" => "tab\there\r\u{2028}", "k\"ey" => 1, "fmt" => format_args!("{:>3}", 7));
        warn!(log, "{} items", 3; "n" => 3usize);

        let got = lines(&path);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            strip_json_ts(&got[0]),
            r#"{"ts":"TS","level":"INFO","msg":"hello \"world\"\n\u001b[0m\\","u":18446744073709551615,"i":-9223372036854775808,"f":0.25,"f32":0.1,"big":1e300,"nan":"NaN","inf":"inf","ninf":"-inf","t":false,"none":null,"unit":null,"c":"\"","s":"tab\there\r\u2028","k\"ey":1,"fmt":"  7","svc":"deadbeat"}"#
        );
        assert_eq!(
            strip_json_ts(&got[1]),
            r#"{"ts":"TS","level":"WARN","msg":"3 items","n":3,"svc":"deadbeat"}"#
        );
        for l in &got {
            assert!(json_ok(l), "not JSON: {l}");
        }
    }

    /// Minimal RFC 8259 validator for a flat object of scalars.
    fn json_ok(s: &str) -> bool {
        fn string(b: &[u8], mut i: usize) -> Option<usize> {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            i += 1;
            loop {
                match *b.get(i)? {
                    b'"' => return Some(i + 1),
                    b'\\' => match *b.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' => {
                            let hex = b.get(i + 2..i + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            i += 6;
                        }
                        _ => return None,
                    },
                    c if c < 0x20 => return None,
                    _ => i += 1,
                }
            }
        }
        fn scalar(b: &[u8], i: usize) -> Option<usize> {
            if b.get(i) == Some(&b'"') {
                return string(b, i);
            }
            for lit in [&b"true"[..], b"false", b"null"] {
                if b[i..].starts_with(lit) {
                    return Some(i + lit.len());
                }
            }
            let end = b[i..]
                .iter()
                .position(|c| !b"+-.0123456789eE".contains(c))
                .map_or(b.len(), |p| i + p);
            let num = std::str::from_utf8(&b[i..end]).ok()?;
            let int = num.strip_prefix('-').unwrap_or(num);
            let int = int.split(['.', 'e', 'E']).next()?;
            let ok = num.parse::<f64>().is_ok()
                && !int.is_empty()
                && int.bytes().all(|c| c.is_ascii_digit())
                && (int == "0" || !int.starts_with('0'));
            ok.then_some(end)
        }
        let b = s.as_bytes();
        if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
            return false;
        }
        let mut i = 1;
        loop {
            let Some(j) = string(b, i) else { return false };
            if b.get(j) != Some(&b':') {
                return false;
            }
            let Some(k) = scalar(b, j + 1) else {
                return false;
            };
            match b.get(k) {
                Some(b',') => i = k + 1,
                Some(b'}') => return k + 1 == b.len(),
                _ => return false,
            }
        }
    }

    #[test]
    fn json_validator_rejects_garbage() {
        assert!(json_ok(r#"{"a":1,"b":"x\n","c":null}"#));
        assert!(!json_ok("{\"a\":\"x\ny\"}"));
        assert!(!json_ok(r#"{"a":NaN}"#));
        assert!(!json_ok(r#"{"a":01}"#));
        assert!(!json_ok(r#"{"a":"\x"}"#));
    }

    #[test]
    fn level_filtering() {
        let dir = TempDir::new("level");
        let path = dir.path("l.log");
        let (log, _h) = file_logger(&path, Level::Warning, LogFormat::Text);
        log_at(&log, Level::Trace, "t");
        log_at(&log, Level::Debug, "d");
        info!(log, "i");
        warn!(log, "w");
        error!(log, "e");
        slog::crit!(log, "c");
        let got: Vec<String> = lines(&path)
            .iter()
            .map(|l| split_text(l).1.to_owned())
            .collect();
        assert_eq!(got, ["WARN w", "ERROR e", "CRITICAL c"]);
        assert!(!log.is_enabled(Level::Info));
        assert!(log.is_enabled(Level::Warning));
    }

    #[test]
    fn file_target_appends() {
        let dir = TempDir::new("append");
        let path = dir.path("a.log");
        fs::write(&path, "existing\n").unwrap();
        for i in 0..2 {
            let (log, h) = file_logger(&path, Level::Info, LogFormat::Text);
            info!(log, "run"; "i" => i);
            assert_eq!(h.write_errors(), 0);
        }
        let got = lines(&path);
        assert_eq!(got[0], "existing");
        assert_eq!(split_text(&got[1]).1, "INFO run i=0");
        assert_eq!(split_text(&got[2]).1, "INFO run i=1");
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn relative_path_is_made_absolute() {
        let name = format!("deadbeat-log-relative-{}.log", std::process::id());
        let (_log, h) = build(&LogSettings {
            target: LogTarget::File(name.into()),
            ..LogSettings::default()
        })
        .unwrap();
        let Output::File(m) = &h.inner.out else {
            panic!("not a file target")
        };
        let path = lock(m).path.clone();
        assert!(path.is_absolute());
        let _ = fs::remove_file(path);
    }

    #[test]
    fn open_failure_is_an_error() {
        let dir = TempDir::new("openfail");
        let r = build(&LogSettings {
            target: LogTarget::File(dir.path("missing/dir/x.log")),
            ..LogSettings::default()
        });
        assert!(r.is_err());
    }

    #[test]
    fn reopen_after_rename() {
        let dir = TempDir::new("reopen");
        let path = dir.path("d.log");
        let rotated = dir.path("d.log.1");
        let (log, h) = file_logger(&path, Level::Info, LogFormat::Text);
        info!(log, "one");
        fs::rename(&path, &rotated).unwrap();
        info!(log, "two");
        h.clone().reopen().unwrap();
        info!(log, "three");

        let msgs = |p: &Path| -> Vec<String> {
            lines(p)
                .iter()
                .map(|l| split_text(l).1.to_owned())
                .collect()
        };
        assert_eq!(msgs(&rotated), ["INFO one", "INFO two"]);
        assert_eq!(msgs(&path), ["INFO three"]);

        // Reopening when the file was not moved keeps appending.
        h.reopen().unwrap();
        info!(log, "four");
        assert_eq!(msgs(&path), ["INFO three", "INFO four"]);
    }

    #[test]
    fn reopen_failure_keeps_old_file() {
        let dir = TempDir::new("reopenfail");
        let sub = dir.path("sub");
        fs::create_dir(&sub).unwrap();
        let path = sub.join("x.log");
        let (log, h) = file_logger(&path, Level::Info, LogFormat::Text);
        let moved = dir.path("moved");
        fs::rename(&sub, &moved).unwrap();
        assert!(h.reopen().is_err());
        info!(log, "still here");
        assert_eq!(lines(&moved.join("x.log")).len(), 1);
        assert_eq!(h.write_errors(), 0);
    }

    #[test]
    fn reopen_is_noop_for_stderr_and_syslog() {
        let (_l, h) = build(&LogSettings::default()).unwrap();
        h.reopen().unwrap();
        let (_l, h) = build(&LogSettings {
            target: LogTarget::Syslog,
            ..LogSettings::default()
        })
        .unwrap();
        h.reopen().unwrap();
    }

    #[test]
    fn write_errors_are_counted() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        let (log, h) = file_logger(full, Level::Info, LogFormat::Text);
        info!(log, "dropped");
        info!(log, "dropped too");
        assert_eq!(h.write_errors(), 2);
    }

    fn bind(dir: &TempDir) -> (UnixDatagram, PathBuf) {
        let path = dir.path("log.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (sock, path)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn syslog_logger(path: &Path, format: LogFormat) -> (Logger, LogHandle) {
        build_with_syslog_path(
            &LogSettings {
                level: Level::Debug,
                target: LogTarget::Syslog,
                format,
            },
            path,
        )
        .unwrap()
    }

    #[test]
    fn syslog_target() {
        let dir = TempDir::new("syslog");
        let (sock, path) = bind(&dir);
        let (log, h) = syslog_logger(&path, LogFormat::Text);
        let pid = std::process::id();

        info!(log, "hello");
        assert_eq!(recv(&sock), format!("<30>deadbeat[{pid}]: hello"));
        error!(log.new(o!("svc" => "x")), "bad"; "k" => "v w");
        assert_eq!(
            recv(&sock),
            format!("<27>deadbeat[{pid}]: bad k=\"v w\" svc=x")
        );
        warn!(log, "w");
        assert_eq!(recv(&sock), format!("<28>deadbeat[{pid}]: w"));
        log_at(&log, Level::Debug, "d");
        assert_eq!(recv(&sock), format!("<31>deadbeat[{pid}]: d"));
        slog::crit!(log, "c");
        assert_eq!(recv(&sock), format!("<26>deadbeat[{pid}]: c"));
        log_at(&log, Level::Trace, "filtered");
        info!(log, "next");
        assert_eq!(recv(&sock), format!("<30>deadbeat[{pid}]: next"));
        assert_eq!(h.write_errors(), 0);

        let (jlog, _h) = syslog_logger(&path, LogFormat::Json);
        info!(jlog, "j"; "n" => 1);
        let got = recv(&sock);
        let body = got.strip_prefix(&format!("<30>deadbeat[{pid}]: ")).unwrap();
        assert_eq!(
            strip_json_ts(body),
            r#"{"ts":"TS","level":"INFO","msg":"j","n":1}"#
        );
    }

    #[test]
    fn syslog_falls_back_and_recovers() {
        let dir = TempDir::new("sysfallback");
        let path = dir.path("log.sock");
        let (log, h) = syslog_logger(&path, LogFormat::Text);
        // No socket yet: goes to stderr, must neither panic nor block.
        info!(log, "to stderr 1");
        info!(log, "to stderr 2");
        assert_eq!(h.write_errors(), 0);

        let (sock, _) = bind(&dir);
        std::thread::sleep(SYSLOG_RETRY + Duration::from_millis(100));
        info!(log, "back");
        assert_eq!(
            recv(&sock),
            format!("<30>deadbeat[{}]: back", std::process::id())
        );

        // The receiver going away mid-run falls back again.
        drop(sock);
        info!(log, "gone");
        assert_eq!(h.write_errors(), 0);
    }

    #[test]
    fn concurrent_writers_produce_whole_lines() {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 2000;
        let dir = TempDir::new("concurrent");
        let path = dir.path("c.log");
        // Two loggers mean two open file descriptions, as with two processes
        // appending to one file: only O_APPEND plus one write keeps lines whole.
        let (a, ha) = file_logger(&path, Level::Info, LogFormat::Text);
        let (b, hb) = file_logger(&path, Level::Info, LogFormat::Text);
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = if t % 2 == 0 { a.clone() } else { b.clone() };
                std::thread::spawn(move || {
                    for i in 0..PER_THREAD {
                        let pad = "x".repeat(1 + (i * 37) % 5000);
                        info!(log, "m"; "t" => t, "i" => i, "pad" => pad, "end" => "e");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let got = lines(&path);
        assert_eq!(got.len(), THREADS * PER_THREAD);
        let mut seen = vec![0usize; THREADS];
        for l in &got {
            let rest = split_text(l).1;
            let rest = rest.strip_prefix("INFO m t=").unwrap();
            let (t, rest) = rest.split_once(" i=").unwrap();
            let (i, rest) = rest.split_once(" pad=").unwrap();
            let pad = rest.strip_suffix(" end=e").unwrap();
            let i: usize = i.parse().unwrap();
            assert_eq!(pad.len(), 1 + (i * 37) % 5000);
            assert!(pad.bytes().all(|c| c == b'x'));
            seen[t.parse::<usize>().unwrap()] += 1;
        }
        assert_eq!(seen, [PER_THREAD; THREADS]);
        assert_eq!(ha.write_errors() + hb.write_errors(), 0);
    }

    #[test]
    fn reentrant_logging_does_not_deadlock() {
        struct Loud(Logger);
        impl fmt::Display for Loud {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                info!(self.0, "inner");
                f.write_str("outer-value")
            }
        }
        let dir = TempDir::new("reentrant");
        let path = dir.path("r.log");
        let (log, _h) = file_logger(&path, Level::Info, LogFormat::Text);
        info!(log, "outer"; "v" => %Loud(log.clone()));
        let got: Vec<String> = lines(&path)
            .iter()
            .map(|l| split_text(l).1.to_owned())
            .collect();
        assert_eq!(got, ["INFO inner", "INFO outer v=outer-value"]);
    }

    #[test]
    fn logger_and_handle_are_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Logger>();
        check::<LogHandle>();
    }
}
