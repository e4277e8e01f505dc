//! `deadbeat top [--url URL]`: a terminal view of a running daemon's `GET /status` (its
//! trains, cogs, rates, counters, errors and held supplies), redrawn in place once a
//! second until `q` is pressed. A table taller than the terminal scrolls (`j`/`k`, the
//! arrows, space/`b`, PgDn/PgUp, `g`/`G`, Home/End).
//!
//! `URL` is the daemon's `[http] listen` address: `http://HOST:PORT` (default
//! `http://127.0.0.1:8686`, a path prefix allowed for a proxy in front) or `unix:PATH`.
//! The view takes the terminal's alternate screen with input unbuffered and unechoed, and
//! gives the terminal back as it was on every way out: `q`, Ctrl-C, SIGTERM, SIGHUP, an
//! error. When stdin or stdout is not a terminal, one view is printed, without colours,
//! and `top` exits (as a snapshot for a script). A daemon that stops answering is shown
//! as such, and `top` keeps trying; one that does not answer the first time ends `top`
//! with exit code 1.

use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::record::{Key as FieldKey, Value};

/// The address `top` asks unless given `--url`: the example `[http] listen`.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8686";

/// How often the view is redrawn.
const REFRESH: Duration = Duration::from_secs(1);
/// How long connecting, sending and reading a status may take: less than a refresh, so
/// a daemon that hangs cannot stall the view (or `q`) for long.
const TIMEOUT: Duration = Duration::from_millis(900);
/// The largest status accepted; a status is a few hundred bytes a cog.
const MAX_STATUS: u64 = 16 << 20;

/// Where the status is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `http://HOST[:PORT][/PREFIX]`: `authority` is `HOST:PORT`, `prefix` has no
    /// trailing `/`.
    Http {
        /// `HOST:PORT`, also sent as `Host`.
        authority: String,
        /// The path before `/status` (empty, or `/something`).
        prefix: String,
    },
    /// `unix:PATH`: the daemon's Unix socket.
    Unix(PathBuf),
}

impl Target {
    /// Parses `http://HOST[:PORT][/PREFIX]` (port 80 unless given) or `unix:PATH`.
    pub fn parse(url: &str) -> Result<Target, String> {
        if let Some(p) = url.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(format!("{url:?}: unix: needs a socket path"));
            }
            return Ok(Target::Unix(PathBuf::from(p)));
        }
        let Some(rest) = url.strip_prefix("http://") else {
            let why = if url.starts_with("https://") {
                "https is not served by the daemon; use http:// on a loopback address"
            } else {
                "the URL must start with http:// or unix:"
            };
            return Err(format!("{url:?}: {why}"));
        };
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if host.is_empty() || host.contains('@') {
            return Err(format!("{url:?}: no host"));
        }
        let has_port = match host.rfind(':') {
            // `[::1]` has colons but no port; `[::1]:8686` has one after the bracket.
            Some(i) => !host.starts_with('[') || host[..i].ends_with(']'),
            None => false,
        };
        let authority = if has_port {
            let port = &host[host.rfind(':').unwrap_or(0) + 1..];
            if port.parse::<u16>().is_err() {
                return Err(format!("{url:?}: the port {port:?} is not a number"));
            }
            host.to_string()
        } else {
            format!("{host}:80")
        };
        Ok(Target::Http {
            authority,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// `GET /status`: its body, or why there is none.
    fn get_status(&self) -> Result<Vec<u8>, String> {
        let (mut stream, host, path): (Box<dyn ReadWrite>, &str, String) = match self {
            Target::Http { authority, prefix } => {
                let addrs = authority
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve {authority}: {e}"))?;
                let mut last = format!("{authority} resolves to no address");
                let mut found = None;
                for a in addrs {
                    match TcpStream::connect_timeout(&a, TIMEOUT) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = format!("cannot connect to {a}: {e}"),
                    }
                }
                let s = found.ok_or(last)?;
                s.set_read_timeout(Some(TIMEOUT))
                    .map_err(|e| e.to_string())?;
                s.set_write_timeout(Some(TIMEOUT))
                    .map_err(|e| e.to_string())?;
                (Box::new(s), authority.as_str(), format!("{prefix}/status"))
            }
            Target::Unix(p) => {
                let s = std::os::unix::net::UnixStream::connect(p)
                    .map_err(|e| format!("cannot connect to {}: {e}", p.display()))?;
                s.set_read_timeout(Some(TIMEOUT))
                    .map_err(|e| e.to_string())?;
                s.set_write_timeout(Some(TIMEOUT))
                    .map_err(|e| e.to_string())?;
                (Box::new(s), "localhost", "/status".to_string())
            }
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("cannot send the request: {e}"))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_STATUS)
            .read_to_end(&mut raw)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    format!("no answer within {} ms", TIMEOUT.as_millis())
                }
                _ => format!("cannot read the answer: {e}"),
            })?;
        parse_response(&raw)
    }
}

/// A socket of either kind, read and written as one.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The body of a complete `200` response (by `Content-Length`, chunked, or to its end).
fn parse_response(raw: &[u8]) -> Result<Vec<u8>, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP (no end of its head)")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let code = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("the answer is not HTTP: {:?}", clean(status_line, 60)))?;
    if code != 200 {
        let first = String::from_utf8_lossy(body);
        let first = first.lines().next().unwrap_or("");
        return Err(format!(
            "GET /status answered {code}: {}",
            clean(first.trim(), 120)
        ));
    }
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return dechunk(body);
    }
    match header("content-length").map(|v| v.parse::<usize>()) {
        Some(Ok(n)) if n <= body.len() => Ok(body[..n].to_vec()),
        Some(Ok(n)) => Err(format!(
            "the answer ended after {} of its {n} bytes",
            body.len()
        )),
        Some(Err(_)) => Err("the answer has an invalid Content-Length".into()),
        None => Ok(body.to_vec()),
    }
}

/// Decodes a chunked body (a proxy in front of the daemon may send one).
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunked answer ended early")?;
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("a chunked answer has an invalid chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("a chunked answer ended early".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// `deadbeat top [--url URL]`: exit code 0 after `q`, 1 when the daemon cannot be read
/// at start or the terminal fails, 2 for a URL that cannot be parsed.
pub fn main(url: &str) -> ExitCode {
    let target = match Target::parse(url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("deadbeat: top: {e}");
            return ExitCode::from(2);
        }
    };
    let first = match fetch(&target) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("deadbeat: top: cannot read the status of {url}: {e}");
            eprintln!(
                "deadbeat: top: is the daemon running with [http] listen = {:?}?",
                listen_hint(&target)
            );
            return ExitCode::from(1);
        }
    };
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        let view = View {
            url,
            width: usize::MAX,
            height: usize::MAX,
            color: false,
            clock: None,
            trouble: None,
            scroll: 0,
        };
        let mut out = std::io::stdout().lock();
        for line in view.frame(&first).0 {
            let _ = writeln!(out, "{line}");
        }
        return ExitCode::SUCCESS;
    }
    match interactive(&target, url, first) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deadbeat: top: {e}");
            ExitCode::from(1)
        }
    }
}

fn listen_hint(t: &Target) -> String {
    match t {
        Target::Http { authority, .. } => authority.clone(),
        Target::Unix(p) => format!("unix:{}", p.display()),
    }
}

/// The status, parsed.
fn fetch(target: &Target) -> Result<Value, String> {
    let body = target.get_status()?;
    match Value::parse_json(&body) {
        Ok(v @ Value::Map(_)) => Ok(v),
        Ok(_) => Err("the status is not a JSON object".into()),
        Err(e) => Err(format!("the status is not JSON: {e}")),
    }
}

/// The terminal in the view's mode; put back as it was when dropped.
struct Terminal {
    saved: libc::termios,
}

impl Terminal {
    /// Input unbuffered and unechoed (Ctrl-C and Ctrl-Z arrive as keys, so the view
    /// always ends through its own way out), the alternate screen, no cursor.
    fn enter() -> Result<Terminal, String> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails (checked).
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is open (a terminal, checked by the caller); `saved` is valid.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(format!(
                "cannot read the terminal's settings: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        raw.c_iflag &= !(libc::IXON | libc::ICRNL);
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: fd 0 is a terminal; `raw` is a valid termios derived from its own.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &raw) } != 0 {
            return Err(format!(
                "cannot set the terminal's mode: {}",
                std::io::Error::last_os_error()
            ));
        }
        let term = Terminal { saved };
        let mut out = std::io::stdout().lock();
        out.write_all(b"\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J")
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to the terminal: {e}"))?;
        Ok(term)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b"\x1b[0m\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
        // SAFETY: restores the settings read from the same terminal in `enter`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &self.saved);
        }
    }
}

/// The terminal's size as (columns, rows), 80×24 when it cannot be told.
fn terminal_size() -> (usize, usize) {
    // SAFETY: winsize is plain data, filled by the ioctl or left zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ on stdout writes a winsize into `ws` or fails (checked).
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (usize::from(ws.ws_col), usize::from(ws.ws_row))
    } else {
        (80, 24)
    }
}

/// What a key asks of the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Quit,
    /// Scroll the table by this many rows.
    Scroll(i32),
    PageDown,
    PageUp,
    Home,
    End,
}

/// The keys in `bytes`: `q`, `Q`, Ctrl-C and Ctrl-D quit; `j`/`k` and the arrows scroll a
/// row, space/`b` and PgDn/PgUp a page, `g`/`G` and Home/End to an end.
fn keys(bytes: &[u8]) -> Vec<Key> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let (key, len) = match rest {
            [b'q' | b'Q' | 3 | 4, ..] => (Some(Key::Quit), 1),
            [0x1b, b'[' | b'O', b'A', ..] => (Some(Key::Scroll(-1)), 3),
            [0x1b, b'[' | b'O', b'B', ..] => (Some(Key::Scroll(1)), 3),
            [0x1b, b'[' | b'O', b'H', ..] => (Some(Key::Home), 3),
            [0x1b, b'[' | b'O', b'F', ..] => (Some(Key::End), 3),
            [0x1b, b'[', b'5', b'~', ..] => (Some(Key::PageUp), 4),
            [0x1b, b'[', b'6', b'~', ..] => (Some(Key::PageDown), 4),
            [0x1b, b'[', b'1' | b'7', b'~', ..] => (Some(Key::Home), 4),
            [0x1b, b'[', b'4' | b'8', b'~', ..] => (Some(Key::End), 4),
            [b'j', ..] => (Some(Key::Scroll(1)), 1),
            [b'k', ..] => (Some(Key::Scroll(-1)), 1),
            [b' ', ..] => (Some(Key::PageDown), 1),
            [b'b', ..] => (Some(Key::PageUp), 1),
            [b'g', ..] => (Some(Key::Home), 1),
            [b'G', ..] => (Some(Key::End), 1),
            _ => (None, 1),
        };
        out.extend(key);
        i += len;
    }
    out
}

/// Waits up to `timeout` for keys on stdin and returns them (none when the time passed).
fn read_keys(timeout: Duration) -> Result<Vec<Key>, String> {
    let mut fds = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = unsafe { libc::poll(&mut fds, 1, ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted {
            Ok(Vec::new())
        } else {
            Err(format!("cannot wait for keys: {e}"))
        };
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    if fds.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
        && fds.revents & libc::POLLIN == 0
    {
        return Ok(vec![Key::Quit]); // the terminal is gone: nobody is left to press `q`
    }
    let mut buf = [0u8; 64];
    match std::io::stdin().lock().read(&mut buf) {
        Ok(n) => Ok(keys(&buf[..n])),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read keys: {e}")),
    }
}

fn interactive(target: &Target, url: &str, first: Value) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _term = Terminal::enter()?;
    let mut status = first;
    let mut last_ok = std::time::SystemTime::now();
    let mut trouble: Option<String> = None;
    let mut out = std::io::stdout();
    let mut scroll = 0usize;
    let mut next_fetch = Instant::now() + REFRESH;
    loop {
        let (width, height) = terminal_size();
        let view = View {
            url,
            width,
            height,
            color,
            clock: Some(clock(std::time::SystemTime::now())),
            trouble: trouble.as_deref(),
            scroll,
        };
        let (lines, shown) = view.frame(&status);
        scroll = shown.first;
        let mut frame = String::from("\x1b[H");
        for line in lines {
            frame.push_str(&line);
            frame.push_str("\x1b[K\r\n");
        }
        // The last line without its newline, so a full screen does not scroll.
        if frame.ends_with("\r\n") {
            frame.truncate(frame.len() - 2);
        }
        frame.push_str("\x1b[J");
        out.write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to the terminal: {e}"))?;

        // Until the next status is due: keys redraw at once, signals end the view.
        let mut moved = false;
        while !moved {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let left = next_fetch.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Short waits, so that a signal is seen promptly.
            for key in read_keys(left.min(Duration::from_millis(200)))? {
                let page = shown.room.max(1);
                scroll = match key {
                    Key::Quit => return Ok(()),
                    Key::Scroll(n) => scroll.saturating_add_signed(n as isize),
                    Key::PageDown => scroll.saturating_add(page),
                    Key::PageUp => scroll.saturating_sub(page),
                    Key::Home => 0,
                    Key::End => usize::MAX,
                };
                moved = true;
            }
        }
        if moved {
            continue;
        }
        next_fetch = Instant::now() + REFRESH;
        match fetch(target) {
            Ok(s) => {
                status = s;
                last_ok = std::time::SystemTime::now();
                trouble = None;
            }
            Err(e) => trouble = Some(format!("no answer since {}: {e}; retrying", clock(last_ok))),
        }
    }
}

/// `HH:MM:SS` in local time.
fn clock(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as libc::time_t;
    // SAFETY: tm is plain data; localtime_r fills it from `secs` or returns null (checked).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is thread-safe.
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return String::from("--:--:--");
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

// ---------------------------------------------------------------------------------------
// The view
// ---------------------------------------------------------------------------------------

/// What one frame is drawn with.
struct View<'a> {
    url: &'a str,
    /// Columns and rows; lines are cut to the width, the table to the height.
    width: usize,
    height: usize,
    color: bool,
    /// The time shown at the top right.
    clock: Option<String>,
    /// Why the status shown is not fresh.
    trouble: Option<&'a str>,
    /// The first row of the table shown (clamped to the rows there are).
    scroll: usize,
}

/// Which rows of the table a frame shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shown {
    /// The first row shown, the scroll clamped.
    first: usize,
    /// How many rows fit.
    room: usize,
    /// How many rows there are.
    total: usize,
}

/// Colours of text (SGR parameters).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ink {
    Plain,
    Bold,
    Dim,
    Red,
    BoldRed,
    Yellow,
    Cyan,
    Reverse,
}

impl Ink {
    fn sgr(self) -> &'static str {
        match self {
            Ink::Plain => "",
            Ink::Bold => "1",
            Ink::Dim => "2",
            Ink::Red => "31",
            Ink::BoldRed => "1;31",
            Ink::Yellow => "33",
            Ink::Cyan => "36",
            Ink::Reverse => "7",
        }
    }
}

/// A line being built: pieces of text with their colours.
#[derive(Default)]
struct Line(Vec<(String, Ink)>);

impl Line {
    fn push(&mut self, text: impl Into<String>, ink: Ink) -> &mut Self {
        self.0.push((text.into(), ink));
        self
    }

    /// A cell of `width` columns, right-aligned or left-aligned (cut with `…`).
    fn cell(&mut self, text: &str, width: usize, right: bool, ink: Ink) -> &mut Self {
        let text = fit(text, width);
        // Padding in the text's ink, so that a heading bar (reversed) has no holes.
        let pad = " ".repeat(width.saturating_sub(text.chars().count()));
        if right {
            self.push(pad, ink).push(text, ink)
        } else {
            self.push(text, ink).push(pad, ink)
        }
    }

    /// The line cut to `width` columns, with colours when `color`.
    fn render(&self, width: usize, color: bool) -> String {
        let mut out = String::new();
        let mut left = width;
        for (text, ink) in &self.0 {
            if left == 0 {
                break;
            }
            let piece: String = text.chars().take(left).collect();
            left -= piece.chars().count();
            if color && *ink != Ink::Plain {
                out.push_str("\x1b[");
                out.push_str(ink.sgr());
                out.push('m');
                out.push_str(&piece);
                out.push_str("\x1b[0m");
            } else {
                out.push_str(&piece);
            }
        }
        if !color {
            let kept = out.trim_end().len();
            out.truncate(kept);
        }
        out
    }
}

/// Text from the daemon made safe to print: control characters (which could move the
/// cursor or retitle the terminal) become `?`.
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_control() || ('\u{80}'..='\u{9f}').contains(&c) {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// `s`, cleaned and cut to `width` columns with `…` at the end when longer.
fn fit(s: &str, width: usize) -> String {
    let s = clean(s, usize::MAX);
    if s.chars().count() <= width {
        return s;
    }
    if width == 0 {
        return String::new();
    }
    let mut t: String = s.chars().take(width - 1).collect();
    t.push('…');
    t
}

fn get<'v>(v: &'v Value, name: &str) -> Option<&'v Value> {
    match v {
        Value::Map(m) => m.get(FieldKey::try_existing(name)?),
        _ => None,
    }
}

fn num(v: &Value, name: &str) -> f64 {
    get(v, name).and_then(Value::as_f64).unwrap_or(0.0)
}

fn text<'v>(v: &'v Value, name: &str) -> &'v str {
    get(v, name).and_then(Value::as_str).unwrap_or("")
}

fn list<'v>(v: &'v Value, name: &str) -> &'v [Value] {
    match get(v, name) {
        Some(Value::List(l)) => l,
        _ => &[],
    }
}

/// Three significant digits with a k/M/G suffix: `0`, `0.4`, `12.3`, `987`, `1.23k`.
pub fn si(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return "0".into();
    }
    let units = ["", "k", "M", "G", "T"];
    let mut x = x;
    let mut i = 0;
    while x.abs() >= 999.5 && i < units.len() - 1 {
        x /= 1000.0;
        i += 1;
    }
    let a = x.abs();
    let digits = if i == 0 {
        if a >= 100.0 || x.fract() == 0.0 {
            0
        } else if a < 0.1 {
            2
        } else {
            1
        }
    } else if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.digits$}{}", units[i])
}

/// A counter: exact below ten million, then [`si`].
fn count(n: f64) -> String {
    if n < 1e7 {
        format!("{}", n.max(0.0) as u64)
    } else {
        si(n)
    }
}

/// `1d 02:03:04`, `02:03:04`, `03:04`.
fn duration(s: f64) -> String {
    let s = if s.is_finite() { s.max(0.0) as u64 } else { 0 };
    let (d, h, m, sec) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    match (d, h) {
        (0, 0) => format!("{m:02}:{sec:02}"),
        (0, _) => format!("{h:02}:{m:02}:{sec:02}"),
        _ => format!("{d}d {h:02}:{m:02}:{sec:02}"),
    }
}

/// The headline rate of a cog: what a supply or an inbox emits, what others take in.
fn headline(cog: &Value) -> f64 {
    let emits =
        get(cog, "supply").and_then(Value::as_bool) == Some(true) || text(cog, "type") == "inbox";
    if emits {
        num(cog, "rate_out")
    } else {
        num(cog, "rate_in")
    }
}

/// A buffer's `(fill, limit)` when the status gives one: the fullest of `buffers`
/// (`[{name, fill, limit}]`), else `buffer: {fill, limit}` or `buffer_fill`/`buffer_limit`.
fn buffer(cog: &Value) -> Option<(f64, f64)> {
    let fullest = list(cog, "buffers")
        .iter()
        .filter_map(|b| Some((get(b, "fill")?.as_f64()?, get(b, "limit")?.as_f64()?)))
        .filter(|&(_, limit)| limit > 0.0)
        .max_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
    if fullest.is_some() {
        return fullest;
    }
    let (fill, limit) = match get(cog, "buffer") {
        Some(b @ Value::Map(_)) => (get(b, "fill")?, get(b, "limit")?),
        _ => (get(cog, "buffer_fill")?, get(cog, "buffer_limit")?),
    };
    Some((fill.as_f64()?, limit.as_f64()?))
}

/// Column widths of the table after the name column; the errors come early, so that a
/// narrow terminal still shows them.
const COLS: [(&str, usize); 9] = [
    ("TYPE", 11),
    ("STATE", 9),
    ("RATE/s", 8),
    ("ERRORS", 8),
    ("IN", 10),
    ("OUT", 10),
    ("DROPPED", 9),
    ("BUSY", 6),
    ("BUFFER", 13),
];

impl View<'_> {
    /// The frame's lines, cut to the width and height.
    #[cfg(test)]
    fn lines(&self, st: &Value) -> Vec<String> {
        self.frame(st).0
    }

    /// The frame's lines, cut to the width and height, and the rows of the table shown.
    fn frame(&self, st: &Value) -> (Vec<String>, Shown) {
        let width = self.width;
        let trains = list(st, "trains");
        let mut out = Vec::new();

        // The daemon, and the time.
        let mut l = Line::default();
        l.push("deadbeat top", Ink::Bold);
        let version = text(st, "version");
        if !version.is_empty() {
            l.push(format!(" {}", clean(version, 20)), Ink::Dim);
        }
        let mut facts = format!("  pid {}", num(st, "pid") as u64);
        facts.push_str(&format!("  up {}", duration(num(st, "uptime_s"))));
        l.push(facts, Ink::Plain);
        let config = text(st, "config");
        if !config.is_empty() {
            l.push(format!("  {}", clean(config, 300)), Ink::Dim);
        }
        out.push(self.with_clock(l));

        // Totals: read by supplies, written by drains' inputs (cogs without output).
        let (mut read, mut written, mut errors, mut held) = (0.0, 0.0, 0.0, 0usize);
        for t in trains {
            let cogs = list(t, "cogs");
            for (i, c) in cogs.iter().enumerate() {
                if get(c, "supply").and_then(Value::as_bool) == Some(true) {
                    read += num(c, "rate_out");
                }
                if i + 1 == cogs.len() {
                    written += num(c, "rate_in");
                }
                errors += num(c, "errors");
                if get(c, "held").and_then(Value::as_bool) == Some(true) {
                    held += 1;
                }
            }
        }
        let mut l = Line::default();
        l.push("read ", Ink::Dim)
            .push(format!("{}/s", si(read)), Ink::Cyan)
            .push("   written ", Ink::Dim)
            .push(format!("{}/s", si(written)), Ink::Cyan)
            .push("   errors ", Ink::Dim)
            .push(
                count(errors),
                if errors > 0.0 {
                    Ink::BoldRed
                } else {
                    Ink::Plain
                },
            );
        if held > 0 {
            l.push("   held ", Ink::Dim)
                .push(held.to_string(), Ink::Yellow);
        }
        let window = num(st, "rate_window_s");
        if window > 0.0 {
            l.push(format!("   rates over {window:.0} s"), Ink::Dim);
        }
        out.push(l.render(width, self.color));
        match self.trouble {
            Some(t) => {
                let mut l = Line::default();
                l.push(clean(t, 500), Ink::BoldRed);
                out.push(l.render(width, self.color));
            }
            None => out.push(String::new()),
        }

        // The table.
        let name_w = trains
            .iter()
            .flat_map(|t| {
                std::iter::once(text(t, "name").chars().count()).chain(
                    list(t, "cogs")
                        .iter()
                        .map(|c| text(c, "name").chars().count() + 2),
                )
            })
            .max()
            .unwrap_or(0)
            .clamp(16, 28);
        let show_buffer = trains
            .iter()
            .any(|t| list(t, "cogs").iter().any(|c| buffer(c).is_some()));
        let cols = if show_buffer {
            &COLS[..]
        } else {
            &COLS[..COLS.len() - 1]
        };
        let mut l = Line::default();
        l.cell("TRAIN / COG", name_w, false, Ink::Reverse);
        for (i, (h, w)) in cols.iter().enumerate() {
            l.push(" ", Ink::Reverse).cell(h, *w, i >= 2, Ink::Reverse);
        }
        // The heading bar spans the width.
        let used: usize = name_w + cols.iter().map(|(_, w)| w + 1).sum::<usize>();
        if width != usize::MAX && width > used {
            l.push(" ".repeat(width - used), Ink::Reverse);
        }
        out.push(l.render(width, self.color));

        let mut rows = Vec::new();
        for t in trains {
            let state = text(t, "state");
            let mut l = Line::default();
            l.cell(text(t, "name"), name_w, false, Ink::Bold);
            l.push(" ", Ink::Plain).cell("", 11, false, Ink::Plain);
            l.push(" ", Ink::Plain)
                .cell(state, 9, false, state_ink(state));
            rows.push(l);
            for c in list(t, "cogs") {
                rows.push(self.cog_row(c, name_w, show_buffer, num(st, "uptime_s")));
            }
        }
        if trains.is_empty() {
            let mut l = Line::default();
            l.push("no trains", Ink::Dim);
            rows.push(l);
        }
        // Rows between the heading and the last line (none without a terminal, where
        // every row is printed).
        let room = if self.clock.is_some() {
            self.height.saturating_sub(out.len() + 1)
        } else {
            rows.len()
        };
        let first = self.scroll.min(rows.len().saturating_sub(room));
        for l in rows.iter().skip(first).take(room) {
            out.push(l.render(width, self.color));
        }
        let shown = Shown {
            first,
            room,
            total: rows.len(),
        };
        // The last line: how to leave, what is watched, where the table is scrolled.
        if self.clock.is_some() {
            while out.len() + 1 < self.height {
                out.push(String::new());
            }
            let mut l = Line::default();
            l.push(" q ", Ink::Reverse).push(" quit  ", Ink::Plain);
            if rows.len() > room {
                let last = (first + room).min(rows.len());
                l.push(" \u{2191}\u{2193} ", Ink::Reverse).push(
                    format!(" rows {}-{last} of {}  ", first + 1, rows.len()),
                    Ink::Plain,
                );
            }
            l.push(clean(self.url, 200), Ink::Dim)
                .push("   every 1 s", Ink::Dim);
            out.push(l.render(width, self.color));
        }
        (out, shown)
    }

    /// One cog's row; `up` is the daemon's uptime in seconds.
    fn cog_row(&self, c: &Value, name_w: usize, show_buffer: bool, up: f64) -> Line {
        let held = get(c, "held").and_then(Value::as_bool) == Some(true);
        let state = if held { "held" } else { text(c, "state") };
        let errors = num(c, "errors");
        let rate = headline(c);
        let mut l = Line::default();
        l.push("  ", Ink::Plain).cell(
            text(c, "name"),
            name_w - 2,
            false,
            if errors > 0.0 { Ink::Red } else { Ink::Plain },
        );
        l.push(" ", Ink::Plain)
            .cell(text(c, "type"), 11, false, Ink::Dim);
        l.push(" ", Ink::Plain)
            .cell(state, 9, false, state_ink(state));
        l.push(" ", Ink::Plain).cell(
            &si(rate),
            8,
            true,
            if rate > 0.0 { Ink::Cyan } else { Ink::Dim },
        );
        l.push(" ", Ink::Plain).cell(
            &count(errors),
            8,
            true,
            if errors > 0.0 { Ink::BoldRed } else { Ink::Dim },
        );
        l.push(" ", Ink::Plain)
            .cell(&count(num(c, "in")), 10, true, Ink::Plain);
        l.push(" ", Ink::Plain)
            .cell(&count(num(c, "out")), 10, true, Ink::Plain);
        let dropped = num(c, "dropped");
        l.push(" ", Ink::Plain).cell(
            &count(dropped),
            9,
            true,
            if dropped > 0.0 { Ink::Plain } else { Ink::Dim },
        );
        // The share of the daemon's run spent in the cog.
        let busy = match get(c, "busy_s").and_then(Value::as_f64) {
            Some(b) if up > 0.0 => format!("{:.1}%", (b / up * 100.0).clamp(0.0, 100.0)),
            _ => String::new(),
        };
        l.push(" ", Ink::Plain).cell(&busy, 6, true, Ink::Dim);
        if show_buffer {
            let b = match buffer(c) {
                Some((fill, limit)) => format!("{}/{}", si(fill), si(limit)),
                None => String::new(),
            };
            let full = buffer(c).is_some_and(|(f, l)| l > 0.0 && f >= 0.9 * l);
            l.push(" ", Ink::Plain)
                .cell(&b, 13, true, if full { Ink::Yellow } else { Ink::Plain });
        }
        l
    }

    /// `l` with the clock at the right edge, when there is one and room for it.
    fn with_clock(&self, mut l: Line) -> String {
        if let Some(clock) = &self.clock {
            let used: usize = l.0.iter().map(|(t, _)| t.chars().count()).sum();
            let room = self.width.saturating_sub(used);
            if self.width != usize::MAX && room > clock.len() + 2 {
                l.push(" ".repeat(room - clock.len()), Ink::Plain)
                    .push(clock.clone(), Ink::Dim);
            }
        }
        l.render(self.width, self.color)
    }
}

fn state_ink(state: &str) -> Ink {
    match state {
        "running" => Ink::Plain,
        "paused" | "held" => Ink::Yellow,
        _ => Ink::Dim,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed() {
        assert_eq!(
            Target::parse("http://127.0.0.1:8686"),
            Ok(Target::Http {
                authority: "127.0.0.1:8686".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            Target::parse("http://localhost/deadbeat/"),
            Ok(Target::Http {
                authority: "localhost:80".into(),
                prefix: "/deadbeat".into()
            })
        );
        assert_eq!(
            Target::parse("http://[::1]:9"),
            Ok(Target::Http {
                authority: "[::1]:9".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            Target::parse("http://[::1]"),
            Ok(Target::Http {
                authority: "[::1]:80".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            Target::parse("unix:/run/d.sock"),
            Ok(Target::Unix("/run/d.sock".into()))
        );
        for bad in [
            "127.0.0.1:8686",
            "https://x",
            "http://",
            "http://h:port",
            "unix:",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_are_framed() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra";
        assert_eq!(parse_response(ok).unwrap(), b"{}");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n3\r\na\":\r\n1\r\n1\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), b"{\"a\":1}");
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}";
        assert!(parse_response(short).unwrap_err().contains("ended after 2"));
        let e = parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n404 Not Found: no such resource\n");
        assert_eq!(
            e.unwrap_err(),
            "GET /status answered 404: 404 Not Found: no such resource"
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    #[test]
    fn keys_are_read() {
        assert_eq!(
            keys(b"jk\x1b[A\x1b[B\x1bOB \x1b[6~b\x1b[5~gG\x1b[H\x1b[Fxq"),
            [
                Key::Scroll(1),
                Key::Scroll(-1),
                Key::Scroll(-1),
                Key::Scroll(1),
                Key::Scroll(1),
                Key::PageDown,
                Key::PageDown,
                Key::PageUp,
                Key::PageUp,
                Key::Home,
                Key::End,
                Key::Home,
                Key::End,
                Key::Quit
            ]
        );
        assert_eq!(keys(b"\x03"), [Key::Quit]);
        assert_eq!(keys(b"\x1b"), []);
    }

    #[test]
    fn numbers_are_short() {
        let cases = [
            (0.0, "0"),
            (0.04, "0.04"),
            (0.4, "0.4"),
            (3.0, "3"),
            (12.34, "12.3"),
            (987.0, "987"),
            (1234.0, "1.23k"),
            (45_600.0, "45.6k"),
            (999_600.0, "1.00M"),
        ];
        for (x, s) in cases {
            assert_eq!(si(x), s, "{x}");
        }
        assert_eq!(duration(65.0), "01:05");
        assert_eq!(duration(3_725.0), "01:02:05");
        assert_eq!(duration(90_061.0), "1d 01:01:01");
        assert_eq!(count(12_345.0), "12345");
        assert_eq!(count(12_345_678.0), "12.3M");
    }

    fn status() -> Value {
        let json = br#"{"version":"0.1.0","pid":42,"uptime_s":75.5,"config":"/etc/d.toml",
            "rate_window_s":10,"trains":[{"name":"web","state":"running","cogs":[
            {"name":"in\u001b]0;owned\u0007","type":"stdin","state":"running","supply":true,
             "held":true,"in":0,"out":500,"dropped":0,"errors":0,"busy_s":0.5,
             "rate_in":0,"rate_out":50},
            {"name":"json_parse#2","type":"json_parse","state":"running","supply":false,
             "held":false,"in":500,"out":490,"dropped":0,"errors":10,"busy_s":0.1,
             "rate_in":50,"rate_out":49}]}]}"#;
        Value::parse_json(json).unwrap()
    }

    #[test]
    fn the_view_shows_cogs_rates_errors_and_held_supplies() {
        let view = View {
            url: "http://127.0.0.1:8686",
            width: 120,
            height: 30,
            color: false,
            clock: Some("12:00:00".into()),
            trouble: None,
            scroll: 0,
        };
        let lines = view.lines(&status());
        let text = lines.join("\n");
        assert!(lines[0].starts_with("deadbeat top 0.1.0  pid 42  up 01:15  /etc/d.toml"));
        assert!(lines[0].ends_with("12:00:00"), "{}", lines[0]);
        assert!(
            text.contains("read 50/s   written 50/s   errors 10   held 1"),
            "{text}"
        );
        let parser = lines.iter().find(|l| l.contains("json_parse#2")).unwrap();
        assert_eq!(
            parser.split_whitespace().collect::<Vec<_>>(),
            [
                "json_parse#2",
                "json_parse",
                "running",
                "50",
                "10",
                "500",
                "490",
                "0",
                "0.1%"
            ]
        );
        let supply = lines.iter().find(|l| l.contains("stdin")).unwrap();
        assert!(supply.contains(" held "), "{supply}");
        // The escape sequence in the name is not passed to the terminal.
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(supply.contains("in?]0;owned?"), "{supply}");
        assert_eq!(lines.len(), 30);
        assert!(lines[29].contains("q  quit"));
        assert!(lines.iter().all(|l| l.chars().count() <= 120));
    }

    #[test]
    fn a_small_terminal_cuts_lines_and_rows() {
        let view = View {
            url: "u",
            width: 40,
            height: 6,
            color: true,
            clock: Some("12:00:00".into()),
            trouble: Some("no answer since 11:59:58: refused; retrying"),
            scroll: 0,
        };
        let lines = view.lines(&status());
        assert_eq!(lines.len(), 6);
        assert!(lines[2].contains("no answer since"), "{lines:?}");
        assert!(lines[4].contains("web"), "{lines:?}");
        assert!(lines[5].contains("rows 1-1 of 3"), "{lines:?}");
        // Scrolled past the end: the last row.
        let end = View {
            scroll: 99,
            color: false,
            ..view
        };
        let (lines, shown) = end.frame(&status());
        assert_eq!(
            shown,
            Shown {
                first: 2,
                room: 1,
                total: 3
            }
        );
        assert!(lines[4].contains("json_parse#2"), "{lines:?}");
        assert!(lines[5].contains("rows 3-3 of 3"), "{lines:?}");
        for l in &lines {
            // Visible width, without the colour sequences.
            let mut visible = 0;
            let mut in_esc = false;
            for c in l.chars() {
                match (in_esc, c) {
                    (false, '\u{1b}') => in_esc = true,
                    (true, 'm') => in_esc = false,
                    (true, _) => {}
                    (false, _) => visible += 1,
                }
            }
            assert!(visible <= 40, "{l:?}");
        }
    }
}
