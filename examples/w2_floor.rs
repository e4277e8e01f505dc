//! The W2 floor: a minimal program that does only what benchmark W2 asks for, parse the
//! Apache combined corpus with one regular expression and write one JSON object per line,
//! so that deadbeat's W2 figures can be read against what the `regex` crate and a write
//! loop cost on their own (issue 7; `../shared/bench/README.md`).
//!
//!     target/release/examples/w2_floor INPUT [OUTPUT]     # OUTPUT: stdout when absent
//!
//! `bench/run.sh` builds it (`cargo build --release --example w2_floor`) and runs it, timed
//! like deadbeat and pinned to the same core, as the `floor` row of W2 and of W3 (W3 is W2
//! plus anonymising `client`; the floor does not anonymise, it is the same program), so the
//! summary prints deadbeat/floor for both.
//!
//! What it does, and nothing more: reads the file in 1 MiB chunks, splits lines with a
//! word-at-a-time newline search, runs `captures_read` with one `CaptureLocations` reused
//! for every line, converts `status` and `bytes` to integers (`-` is `null`), escapes the
//! strings for JSON and appends to a 1 MiB buffer written out whenever it fills. No
//! configuration, no error routing, no checkpoints. A line the expression does not match
//! (or with an unknown month or an integer beyond i64) is skipped and counted; the count
//! goes to stderr at the end, so a run whose output is short says why.
//!
//! The output is what deadbeat writes for W2, byte for byte on the corpus (`cmp` it with
//! deadbeat's `w2.json`):
//! - the same keys, in the order deadbeat currently writes them: `path` first, because
//!   `file_in` sets `path` (the file) before the preset overwrites it with the request path
//!   in place, then `client, ident, user, time, method, protocol, status, bytes, referer,
//!   agent`;
//! - `time` as RFC 3339, as deadbeat writes it (`22/Nov/2024:10:00:00 +0000` becomes
//!   `2024-11-22T10:00:00Z`), by moving the digits; the date is not validated;
//! - Apache's `\"` and `\\` in quoted fields mean `"` and `\`, which JSON writes the same
//!   way; any other backslash (Apache's `\xhh`) is kept as text, i.e. written `\\`;
//! - invalid UTF-8 becomes U+FFFD, as deadbeat renders it.
//!
//! The expression is the usual `(\S+) (\S+) (\S+) \[time\] "(\S+) (\S+) (\S+)" ...` one,
//! written over bytes without Unicode classes and so that it is one-pass: anchored, the
//! regex crate resolves its groups with its one-pass DFA, its fastest engine for captures.
//! The price is that a user name or a request path with a space in it, HTTP/0.9 request
//! lines (no protocol) and `"-"` request lines do not match, where deadbeat parses them;
//! the generated corpus has none. (Taking the user up to ` [` and a path with spaces makes
//! the expression not one-pass; on the 1M corpus that took 2.5 times as long.)

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::process::ExitCode;

use regex::bytes::{CaptureLocations, Regex};

/// The Apache combined format, one group per field. Group 4 is the time, 26 bytes.
const COMBINED: &str = concat!(
    r#"(?-u)^([^ ]+) ([^ ]*) ([^ ]*) "#,
    r#"\[([0-9]{2}/[A-Za-z]{3}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4})\] "#,
    r#""([A-Za-z0-9_-]+) ((?:[^ "\\]|\\.)*) (HTTP/(?:[^ "\\]|\\.)*)" "#,
    r#"([0-9]+) ([0-9]+|-) "#,
    r#""((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)""#,
);
const CLIENT: usize = 1;
const IDENT: usize = 2;
const USER: usize = 3;
const TIME: usize = 4;
const METHOD: usize = 5;
const PATH: usize = 6;
const PROTOCOL: usize = 7;
const STATUS: usize = 8;
const BYTES: usize = 9;
const REFERER: usize = 10;
const AGENT: usize = 11;

const READ_CHUNK: usize = 1 << 20;
const OUT_BUF: usize = 1 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 || args.len() > 3 {
        eprintln!("usage: w2_floor INPUT [OUTPUT]   (OUTPUT: stdout when absent)");
        return ExitCode::from(2);
    }
    match run(&args[1], args.get(2).map(String::as_str)) {
        Ok(floor) => {
            if floor.unmatched > 0 {
                eprintln!("w2_floor: {} lines did not match, skipped", floor.unmatched);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("w2_floor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(input: &str, output: Option<&str>) -> io::Result<Floor> {
    let mut input = File::open(input)?;
    let mut sink: Box<dyn Write> = match output {
        Some(path) => Box::new(File::create(path)?),
        None => Box::new(io::stdout().lock()),
    };
    let re = Regex::new(COMBINED).map_err(io::Error::other)?;
    let mut floor = Floor {
        locs: re.capture_locations(),
        re,
        out: Vec::with_capacity(OUT_BUF + 64 * 1024),
        unmatched: 0,
    };

    // buf[start..end] is read but not yet processed: at most one partial line.
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut start, mut end) = (0, 0);
    loop {
        if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if end == buf.len() {
            // A line longer than the buffer.
            buf.resize(buf.len() * 2, 0);
        }
        let n = match input.read(&mut buf[end..]) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if end > start {
                // The last line has no newline.
                floor.line(&buf[start..end]);
            }
            break;
        }
        end += n;
        while let Some(nl) = find_newline(&buf[start..end]) {
            floor.line(&buf[start..start + nl]);
            start += nl + 1;
        }
        if floor.out.len() >= OUT_BUF {
            sink.write_all(&floor.out)?;
            floor.out.clear();
        }
    }
    sink.write_all(&floor.out)?;
    sink.flush()?;
    Ok(floor)
}

struct Floor {
    re: Regex,
    locs: CaptureLocations,
    out: Vec<u8>,
    unmatched: u64,
}

impl Floor {
    fn line(&mut self, line: &[u8]) {
        let lossy;
        let line = if std::str::from_utf8(line).is_ok() {
            line
        } else {
            lossy = String::from_utf8_lossy(line).into_owned();
            lossy.as_bytes()
        };
        if self.re.captures_read(&mut self.locs, line).is_none() {
            self.unmatched += 1;
            return;
        }
        let locs = &self.locs;
        // Every group takes part in a match; the fallback only avoids a panic path.
        let g = |i: usize| locs.get(i).map_or(&b""[..], |(s, e)| &line[s..e]);
        let time: Option<&[u8; 26]> = g(TIME).try_into().ok();
        let (Some(status), Some(time), Some(month)) = (int(g(STATUS)), time, time.and_then(month))
        else {
            self.unmatched += 1;
            return;
        };
        let bytes = match g(BYTES) {
            b"-" => None,
            b => {
                let Some(n) = int(b) else {
                    self.unmatched += 1;
                    return;
                };
                Some(n)
            }
        };

        let out = &mut self.out;
        out.extend_from_slice(b"{\"path\":");
        write_str(out, g(PATH), true);
        out.extend_from_slice(b",\"client\":");
        write_str(out, g(CLIENT), false);
        out.extend_from_slice(b",\"ident\":");
        write_str(out, g(IDENT), false);
        out.extend_from_slice(b",\"user\":");
        write_str(out, g(USER), false);
        out.extend_from_slice(b",\"time\":");
        write_time(out, time, month);
        out.extend_from_slice(b",\"method\":");
        write_str(out, g(METHOD), false);
        out.extend_from_slice(b",\"protocol\":");
        write_str(out, g(PROTOCOL), true);
        out.extend_from_slice(b",\"status\":");
        write_u64(out, status);
        out.extend_from_slice(b",\"bytes\":");
        match bytes {
            Some(n) => write_u64(out, n),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"referer\":");
        write_str(out, g(REFERER), true);
        out.extend_from_slice(b",\"agent\":");
        write_str(out, g(AGENT), true);
        out.extend_from_slice(b"}\n");
    }
}

/// The first `\n` in `s`, eight bytes at a time.
#[inline]
fn find_newline(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = s.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*chunk) ^ (LO * u64::from(b'\n'));
        // Zero bytes of w are newlines; the lowest marked byte is exact.
        let hits = w.wrapping_sub(LO) & !w & HI;
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..].iter().position(|&b| b == b'\n').map(|p| i + p)
}

/// A run of ASCII digits (the expression matched only digits) as an integer that fits an
/// i64, as deadbeat requires.
#[inline]
fn int(digits: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for &d in digits {
        let d = d.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    i64::try_from(n).is_ok().then_some(n)
}

/// The two digits of the month of a CLF time, whose abbreviation may be in any case.
#[inline]
fn month(time: &[u8; 26]) -> Option<[u8; 2]> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    const DIGITS: [[u8; 2]; 12] = [
        *b"01", *b"02", *b"03", *b"04", *b"05", *b"06", *b"07", *b"08", *b"09", *b"10", *b"11",
        *b"12",
    ];
    let lower = [time[3], time[4], time[5]].map(|b| b.to_ascii_lowercase());
    MONTHS.iter().position(|m| **m == lower).map(|i| DIGITS[i])
}

/// `dd/Mon/yyyy:HH:MM:SS +zzzz` (26 bytes, checked by the expression) as
/// `"yyyy-mm-ddTHH:MM:SS+zz:zz"`, `Z` for a zero offset.
#[inline]
fn write_time(out: &mut Vec<u8>, t: &[u8; 26], month: [u8; 2]) {
    out.push(b'"');
    out.extend_from_slice(&t[7..11]);
    out.push(b'-');
    out.extend_from_slice(&month);
    out.push(b'-');
    out.extend_from_slice(&t[0..2]);
    out.push(b'T');
    out.extend_from_slice(&t[12..20]);
    if &t[22..26] == b"0000" {
        out.extend_from_slice(b"Z\"");
    } else {
        out.extend_from_slice(&t[21..24]);
        out.push(b':');
        out.extend_from_slice(&t[24..26]);
        out.push(b'"');
    }
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

/// Per byte: 0 if it goes into a JSON string as is, else the letter of its escape (`u` for
/// `\u00XX`).
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// `s` (valid UTF-8) as a JSON string. In a field Apache quoted (`quoted`), `\"` and `\\`
/// are its escapes of `"` and `\`: JSON spells them the same, so they are copied.
#[inline]
fn write_str(out: &mut Vec<u8>, s: &[u8], quoted: bool) {
    out.push(b'"');
    let (mut run, mut i) = (0, 0);
    while let Some(&b) = s.get(i) {
        let esc = ESCAPE[usize::from(b)];
        if esc == 0 {
            i += 1;
            continue;
        }
        out.extend_from_slice(&s[run..i]);
        if quoted && b == b'\\' && matches!(s.get(i + 1), Some(b'"' | b'\\')) {
            out.extend_from_slice(&s[i..i + 2]);
            i += 2;
        } else {
            if esc == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            } else {
                out.push(b'\\');
                out.push(esc);
            }
            i += 1;
        }
        run = i;
    }
    out.extend_from_slice(&s[run..]);
    out.push(b'"');
}
