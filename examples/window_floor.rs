//! The W5 and W6 floors: minimal programs that parse each line and update a hash map per
//! event-time window, so that deadbeat's `window` and `threshold` figures can be read
//! against what the parsing and the counting cost on their own (issue 16;
//! `../shared/bench/README.md`).
//!
//!     target/release/examples/window_floor w5 INPUT [OUTPUT]   # apache corpus
//!     target/release/examples/window_floor w6 INPUT [OUTPUT]   # sshd corpus
//!
//! `bench/run.sh` builds it (`cargo build --release --example window_floor`), runs it timed
//! and pinned like deadbeat, and checks its output against the reference
//! (`bench/reference/w5.py`, `w6.py`) as it does deadbeat's.
//!
//! - **w5**: the W2 floor's expression (`examples/w2_floor.rs`, one-pass, over bytes) on
//!   every line; per `client` and 60-second tumbling window of the request time: requests,
//!   sum of bytes (`-` counts 0), requests with status >= 400. Writes
//!   `{"window_start","client","requests","bytes","errors"}` per (window, client).
//! - **w6**: the syslog header read by hand (`Mmm dd hh:mm:ss host sshd[pid]: message`), the
//!   failure wordings (`Failed password`, `Invalid user`, `authentication failure`) searched
//!   with one `regex` (literal search); for a failure, its address (the IP after ` from ` or
//!   `rhost=`) and per `src_ip` and 10-minute tumbling window a count. Writes
//!   `{"window_start","src_ip","failures"}` per (window, address) with at least 10. The
//!   year of the syslog time is deadbeat's: the wall clock's, or the one before when that
//!   puts the time more than a day ahead.
//!
//! What both do, and nothing more: 1 MiB reads, lines split at `\n` (a `\r` before it is
//! dropped), open windows as a map from window start to a hash map (FxHash-style, keys
//! allocated once per (window, key)); a window is written out, in hash order, as soon as a
//! line's time passes its end (lateness 0; a line older than a closed window is counted and
//! dropped); the windows still open at the end are written too. Windows start on multiples
//! of their size since the epoch, in UTC, and `window_start` is RFC 3339 in UTC (`Z`).
//! Unparsable lines are counted, the count goes to stderr at the end. No configuration, no
//! checkpoints, no bounds on the number of keys.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, ErrorKind, Read, Write};
use std::net::IpAddr;
use std::process::ExitCode;

use regex::bytes::{CaptureLocations, Regex};

/// The W2 floor's Apache combined expression (see `examples/w2_floor.rs` for why it is
/// written this way). Group 1 the client, 4 the time (26 bytes), 8 the status, 9 the size.
const COMBINED: &str = concat!(
    r#"(?-u)^([^ ]+) ([^ ]*) ([^ ]*) "#,
    r#"\[([0-9]{2}/[A-Za-z]{3}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4})\] "#,
    r#""([A-Za-z0-9_-]+) ((?:[^ "\\]|\\.)*) (HTTP/(?:[^ "\\]|\\.)*)" "#,
    r#"([0-9]+) ([0-9]+|-) "#,
    r#""((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)""#,
);
const FAILURES: &str = "(?-u)Failed password|Invalid user|authentication failure";

const READ_CHUNK: usize = 1 << 20;
const OUT_BUF: usize = 1 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str);
    if !(3..=4).contains(&args.len()) || !matches!(mode, Some("w5" | "w6")) {
        eprintln!("usage: window_floor w5|w6 INPUT [OUTPUT]   (OUTPUT: stdout when absent)");
        return ExitCode::from(2);
    }
    let res = match mode {
        Some("w5") => W5::new().and_then(|w| run(w, &args[2], args.get(3))),
        _ => W6::new().and_then(|w| run(w, &args[2], args.get(3))),
    };
    match res {
        Ok((bad, late)) => {
            if bad > 0 {
                eprintln!("window_floor: {bad} lines did not parse, skipped");
            }
            if late > 0 {
                eprintln!("window_floor: {late} lines late for a closed window, dropped");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("window_floor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One workload: what a line adds to the windows, and how a closed window is written.
trait Workload {
    type Agg: Default;
    /// Window length in seconds.
    const SIZE: i64;
    /// Parses `line`: its event time and key, and folds it into the aggregate that
    /// `agg(time, key)` returns. `Err(())` for a line that does not parse; `Ok(false)` for
    /// one that does not count.
    fn line(&mut self, line: &[u8], windows: &mut Windows<Self::Agg>) -> Result<bool, ()>;
    /// Writes one window's record; `start` is its start, already rendered as JSON.
    fn write(out: &mut Vec<u8>, start: &[u8], key: &[u8], agg: &Self::Agg);
}

/// One window's aggregates by key.
type Window<A> = HashMap<Box<[u8]>, A, BuildHasherDefault<Fx>>;

/// Open windows: start → key → aggregate; plus the counts of what was skipped.
struct Windows<A> {
    open: BTreeMap<i64, Window<A>>,
    /// Windows starting before this are closed.
    closed_before: i64,
    late: u64,
}

impl<A: Default> Windows<A> {
    /// The aggregate of `key` in the window of `time`, or None when that window is closed.
    #[inline]
    fn agg(&mut self, time: i64, size: i64, key: &[u8]) -> Option<&mut A> {
        let start = time - time.rem_euclid(size);
        if start < self.closed_before {
            self.late += 1;
            return None;
        }
        let map = self.open.entry(start).or_default();
        // Looked up by the borrowed slice; the key is copied only for a new entry.
        if map.contains_key(key) {
            map.get_mut(key)
        } else {
            Some(map.entry(key.into()).or_default())
        }
    }
}

fn run<W: Workload>(mut w: W, input: &str, output: Option<&String>) -> io::Result<(u64, u64)> {
    let mut input = File::open(input)?;
    let mut sink: Box<dyn Write> = match output {
        Some(path) => Box::new(File::create(path)?),
        None => Box::new(io::stdout().lock()),
    };
    let mut windows: Windows<W::Agg> = Windows {
        open: BTreeMap::new(),
        closed_before: i64::MIN,
        late: 0,
    };
    let mut out = Vec::with_capacity(OUT_BUF + 64 * 1024);
    let mut bad = 0u64;
    // The latest event time seen; windows ending at or before it are closed.
    let mut watermark = i64::MIN;
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut start, mut end) = (0, 0);
    let mut eof = false;
    while !eof {
        if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if end == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match input.read(&mut buf[end..]) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        eof = n == 0;
        end += n;
        loop {
            let line = match buf[start..end].iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let l = &buf[start..start + nl];
                    start += nl + 1;
                    l
                }
                None if eof && end > start => {
                    let l = &buf[start..end];
                    start = end;
                    l
                }
                None => break,
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let before = windows.open.last_key_value().map(|(s, _)| *s);
            match w.line(line, &mut windows) {
                Err(()) => bad += 1,
                Ok(_) => {
                    // A line opened a later window: close what its time has passed.
                    let newest = windows.open.last_key_value().map(|(s, _)| *s);
                    if newest != before
                        && let Some(s) = newest
                    {
                        watermark = watermark.max(s);
                        close::<W>(&mut windows, watermark, &mut out);
                    }
                }
            }
        }
        if out.len() >= OUT_BUF {
            sink.write_all(&out)?;
            out.clear();
        }
    }
    close::<W>(&mut windows, i64::MAX, &mut out);
    sink.write_all(&out)?;
    sink.flush()?;
    Ok((bad, windows.late))
}

/// Writes out and forgets the windows that end at or before `time`.
fn close<W: Workload>(windows: &mut Windows<W::Agg>, time: i64, out: &mut Vec<u8>) {
    while let Some(entry) = windows.open.first_entry() {
        let start = *entry.key();
        if start.saturating_add(W::SIZE) > time {
            break;
        }
        let mut rendered = Vec::with_capacity(24);
        write_time(&mut rendered, start);
        for (key, agg) in entry.remove() {
            W::write(out, &rendered, &key, &agg);
        }
        windows.closed_before = start + W::SIZE;
    }
}

struct W5 {
    re: Regex,
    locs: CaptureLocations,
}

#[derive(Default)]
struct W5Agg {
    requests: u64,
    bytes: u64,
    errors: u64,
}

impl W5 {
    fn new() -> io::Result<W5> {
        let re = Regex::new(COMBINED).map_err(io::Error::other)?;
        Ok(W5 {
            locs: re.capture_locations(),
            re,
        })
    }
}

impl Workload for W5 {
    type Agg = W5Agg;
    const SIZE: i64 = 60;

    fn line(&mut self, line: &[u8], windows: &mut Windows<W5Agg>) -> Result<bool, ()> {
        self.re.captures_read(&mut self.locs, line).ok_or(())?;
        let locs = &self.locs;
        let g = |i: usize| locs.get(i).map_or(&b""[..], |(s, e)| &line[s..e]);
        let time = clf_time(g(4)).ok_or(())?;
        let status = int(g(8)).ok_or(())?;
        let bytes = match g(9) {
            b"-" => 0,
            b => int(b).ok_or(())?,
        };
        if let Some(a) = windows.agg(time, Self::SIZE, g(1)) {
            a.requests += 1;
            a.bytes += bytes;
            a.errors += u64::from(status >= 400);
        }
        Ok(true)
    }

    fn write(out: &mut Vec<u8>, start: &[u8], key: &[u8], a: &W5Agg) {
        out.extend_from_slice(b"{\"window_start\":");
        out.extend_from_slice(start);
        out.extend_from_slice(b",\"client\":");
        write_str(out, key);
        out.extend_from_slice(b",\"requests\":");
        write_u64(out, a.requests);
        out.extend_from_slice(b",\"bytes\":");
        write_u64(out, a.bytes);
        out.extend_from_slice(b",\"errors\":");
        write_u64(out, a.errors);
        out.extend_from_slice(b"}\n");
    }
}

struct W6 {
    failures: Regex,
    /// The wall clock's year, and its time in epoch seconds: a syslog time that would be
    /// more than a day past `now` in that year is taken in the year before.
    year: i64,
    now: i64,
}

impl W6 {
    fn new() -> io::Result<W6> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(io::Error::other)?
            .as_secs() as i64;
        Ok(W6 {
            failures: Regex::new(FAILURES).map_err(io::Error::other)?,
            year: civil_from_days(now.div_euclid(86_400)).0,
            now,
        })
    }
}

impl Workload for W6 {
    type Agg = u64;
    const SIZE: i64 = 600;

    fn line(&mut self, line: &[u8], windows: &mut Windows<u64>) -> Result<bool, ()> {
        // `Mmm dd hh:mm:ss host sshd[pid]: message`, the day padded with a space.
        let time = line.get(..15).ok_or(())?;
        let rest = line[15..].strip_prefix(b" ").ok_or(())?;
        let sp = rest.iter().position(|&b| b == b' ').ok_or(())?;
        let rest = rest[sp + 1..].strip_prefix(b"sshd").ok_or(())?;
        let rest = rest.strip_prefix(b"-session").unwrap_or(rest);
        let open = rest.iter().position(|&b| b == b'[').ok_or(())?;
        let close = rest.iter().position(|&b| b == b']').ok_or(())?;
        int(rest.get(open + 1..close).ok_or(())?).ok_or(())?;
        let message = rest[close + 1..].strip_prefix(b": ").ok_or(())?;
        if !self.failures.is_match(message) {
            return Ok(false);
        }
        let Some(ip) = address(message) else {
            return Ok(false);
        };
        let (month, day, secs) = syslog_time(time).ok_or(())?;
        let mut t = days_from_civil(self.year, month, day) * 86_400 + secs;
        if t > self.now + 86_400 {
            t = days_from_civil(self.year - 1, month, day) * 86_400 + secs;
        }
        if let Some(n) = windows.agg(t, Self::SIZE, ip) {
            *n += 1;
        }
        Ok(true)
    }

    fn write(out: &mut Vec<u8>, start: &[u8], key: &[u8], n: &u64) {
        if *n < 10 {
            return;
        }
        out.extend_from_slice(b"{\"window_start\":");
        out.extend_from_slice(start);
        out.extend_from_slice(b",\"src_ip\":");
        write_str(out, key);
        out.extend_from_slice(b",\"failures\":");
        write_u64(out, *n);
        out.extend_from_slice(b"}\n");
    }
}

/// The IP address after ` from ` (sshd) or `rhost=` (PAM), if the word there is one.
fn address(msg: &[u8]) -> Option<&[u8]> {
    [&b" from "[..], b"rhost="].iter().find_map(|pat| {
        let at = msg.windows(pat.len()).position(|w| w == *pat)? + pat.len();
        let rest = &msg[at..];
        let word = &rest[..rest.iter().position(|&b| b == b' ').unwrap_or(rest.len())];
        std::str::from_utf8(word)
            .ok()?
            .parse::<IpAddr>()
            .ok()
            .map(|_| word)
    })
}

/// The number of an English month abbreviation, in any case.
fn month(name: &[u8]) -> Option<u32> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(name))
        .map(|i| i as u32 + 1)
}

/// `Mmm dd hh:mm:ss` as (month, day, seconds into the day).
fn syslog_time(t: &[u8]) -> Option<(u32, u32, i64)> {
    let month = month(&t[0..3])?;
    let day = int(t[4..6].trim_ascii_start())? as u32;
    let hms = int(&t[7..9])? * 3600 + int(&t[10..12])? * 60 + int(&t[13..15])?;
    (1..=31).contains(&day).then_some((month, day, hms as i64))
}

/// `dd/Mon/yyyy:HH:MM:SS +zzzz` as epoch seconds.
fn clf_time(t: &[u8]) -> Option<i64> {
    let t: &[u8; 26] = t.try_into().ok()?;
    let m = month(&t[3..6])?;
    let day = int(&t[0..2])? as u32;
    let year = int(&t[7..11])? as i64;
    let secs = int(&t[12..14])? * 3600 + int(&t[15..17])? * 60 + int(&t[18..20])?;
    let off = (int(&t[22..24])? * 60 + int(&t[24..26])?) as i64 * 60;
    let off = if t[21] == b'-' { -off } else { off };
    Some(days_from_civil(year, m, day) * 86_400 + secs as i64 - off)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Epoch seconds as `"yyyy-mm-ddTHH:MM:SSZ"`.
fn write_time(out: &mut Vec<u8>, secs: i64) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "\"{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z\"",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
}

/// A run of ASCII digits as an integer.
#[inline]
fn int(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let d = d.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[inline]
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `s` as a JSON string; keys are addresses, copied as they are unless they need escaping.
#[inline]
fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    if s.iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(s);
        out.push(b'"');
        return;
    }
    for c in String::from_utf8_lossy(s).chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// FxHash (rustc's): a multiply and a rotate per word; keys are short addresses.
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}
