//! The RELP frame codec (Reliable Event Logging Protocol, as rsyslog and librelp speak it),
//! shared by `relp_in` and `relp_out`.
//!
//! A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`: TXNR and DATALEN are 1 to 9
//! digits, COMMAND 1 to 32 ASCII letters (and `_`, which librelp uses), DATA exactly
//! DATALEN bytes, present (with its leading space) only when DATALEN is above 0.
//! Transaction numbers go from 1 to 999,999,999 and wrap back to 1; `serverclose` is sent
//! with 0.

use std::fmt;
use std::io::{self, Read};

/// Highest transaction number; the next one is 1 again.
pub const MAX_TXNR: u32 = 999_999_999;
/// Longest command name.
const MAX_COMMAND: usize = 32;
/// Longest number (TXNR, DATALEN) in digits.
const MAX_DIGITS: usize = 9;
/// Bytes asked for per read.
const READ_SIZE: usize = 64 << 10;

/// The transaction number after `t` (1 after [`MAX_TXNR`]).
pub fn next_txnr(t: u32) -> u32 {
    if t >= MAX_TXNR { 1 } else { t + 1 }
}

/// How many [`next_txnr`] steps lead from `from` to `to` (across the wrap from
/// 999,999,999 to 1).
pub fn txnr_distance(from: u32, to: u32) -> u32 {
    if to >= from {
        to - from
    } else {
        MAX_TXNR - from + to
    }
}

/// One frame, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Transaction number.
    pub txnr: u32,
    /// Command (`open`, `syslog`, `close`, `rsp`, `serverclose`...).
    pub command: &'a [u8],
    /// The command's data (empty when DATALEN is 0).
    pub data: &'a [u8],
}

/// Why bytes are not a RELP frame; the stream cannot be resynchronised after any of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// TXNR is not 1 to 9 digits followed by a space.
    BadTxnr,
    /// COMMAND is not 1 to 32 letters followed by a space.
    BadCommand,
    /// DATALEN is not 1 to 9 digits followed by a space (or, when 0, by the trailer).
    BadLength,
    /// DATALEN exceeds the configured maximum.
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The byte after DATA is not LF.
    MissingTrailer,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadTxnr => f.write_str("bad transaction number"),
            FrameError::BadCommand => f.write_str("bad command"),
            FrameError::BadLength => f.write_str("bad data length"),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes over max_frame_bytes ({max})")
            }
            FrameError::MissingTrailer => f.write_str("frame not terminated by LF"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Reads a number of 1 to 9 digits ending with a space (or, when `lf_ok`, an LF) at
/// `buf[at..]`. Returns the number and the position of its terminator, `Ok(None)` when
/// more bytes are needed.
fn number(buf: &[u8], at: usize, lf_ok: bool) -> Result<Option<(u32, usize)>, ()> {
    let mut n: u32 = 0;
    let mut i = at;
    loop {
        let Some(&c) = buf.get(i) else {
            return Ok(None);
        };
        match c {
            b'0'..=b'9' if i - at < MAX_DIGITS => n = n * 10 + u32::from(c - b'0'),
            b' ' if i > at => return Ok(Some((n, i))),
            b'\n' if lf_ok && i > at => return Ok(Some((n, i))),
            _ => return Err(()),
        }
        i += 1;
    }
}

/// Parses the frame at the start of `buf`: `Ok(Some((frame, length)))`, `Ok(None)` when
/// `buf` holds only the beginning of a frame, or the error as soon as the bytes show it
/// (an oversize DATALEN is refused before its data arrive).
pub fn parse(buf: &[u8], max_data: usize) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some((txnr, sp)) = number(buf, 0, false).map_err(|()| FrameError::BadTxnr)? else {
        return Ok(None);
    };
    let cmd_at = sp + 1;
    let mut i = cmd_at;
    loop {
        let Some(&c) = buf.get(i) else {
            return Ok(None);
        };
        match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' if i - cmd_at < MAX_COMMAND => {}
            b' ' if i > cmd_at => break,
            _ => return Err(FrameError::BadCommand),
        }
        i += 1;
    }
    let command = &buf[cmd_at..i];
    let Some((len, end)) = number(buf, i + 1, true).map_err(|()| FrameError::BadLength)? else {
        return Ok(None);
    };
    let len = len as usize;
    if len > max_data {
        return Err(FrameError::TooLarge { len, max: max_data });
    }
    let (data, trailer) = match (len, buf[end]) {
        (0, b'\n') => (&buf[end..end], end),
        (0, _) => {
            // librelp writes `0` followed by the trailer, but a space before it is harmless.
            let Some(&c) = buf.get(end + 1) else {
                return Ok(None);
            };
            if c != b'\n' {
                return Err(FrameError::MissingTrailer);
            }
            (&buf[end..end], end + 1)
        }
        (_, b' ') => {
            let from = end + 1;
            let Some(data) = buf.get(from..from + len) else {
                return Ok(None);
            };
            (data, from + len)
        }
        _ => return Err(FrameError::BadLength),
    };
    match buf.get(trailer) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((
            Frame {
                txnr,
                command,
                data,
            },
            trailer + 1,
        ))),
        Some(_) => Err(FrameError::MissingTrailer),
    }
}

/// Appends one frame to `out`.
pub fn write_frame(out: &mut Vec<u8>, txnr: u32, command: &str, data: &[u8]) {
    use std::io::Write;
    let _ = write!(out, "{txnr} {command} {}", data.len());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// The response code at the start of an `rsp` frame's data (`200 OK...`).
pub fn rsp_code(data: &[u8]) -> Option<u16> {
    let d = data.get(..3)?;
    if !d.iter().all(u8::is_ascii_digit) || data.get(3).is_some_and(|c| !b" \n".contains(c)) {
        return None;
    }
    Some(d.iter().fold(0, |n, c| n * 10 + u16::from(c - b'0')))
}

/// The value of offer `name` in `open` data (`relp_version=0\ncommands=syslog\n...`).
pub fn offer<'a>(data: &'a [u8], name: &str) -> Option<&'a [u8]> {
    data.split(|&c| c == b'\n').find_map(|line| {
        let (k, v) = match line.iter().position(|&c| c == b'=') {
            Some(p) => (&line[..p], &line[p + 1..]),
            None => (line, &line[line.len()..]),
        };
        (k == name.as_bytes()).then_some(v)
    })
}

/// Whether the `commands` offer of `open` data lists `command`.
pub fn offers_command(data: &[u8], command: &str) -> bool {
    offer(data, "commands")
        .is_some_and(|v| v.split(|&c| c == b',').any(|c| c == command.as_bytes()))
}

/// Frames read from a byte stream: a buffer that grows to one frame at most.
#[derive(Debug)]
pub struct FrameReader {
    /// Zero-filled once as it grows; `start..end` holds the bytes not consumed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_data: usize,
}

impl FrameReader {
    /// A reader refusing frames whose data exceed `max_data` bytes.
    pub fn new(max_data: usize) -> Self {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_data,
        }
    }

    /// Room for `n` more bytes after `end`: consumed bytes are dropped first, then the
    /// buffer grows (zero-filled only when it grows, not before every read).
    fn make_room(&mut self, n: usize) {
        if self.start > 0 && (self.start == self.end || self.start >= self.end / 2) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < n {
            self.buf.resize(self.end + n, 0);
        }
    }

    /// One read from `src` appended to the buffer; `Ok(0)` at end of stream.
    pub fn read_from<R: Read + ?Sized>(&mut self, src: &mut R) -> io::Result<usize> {
        self.make_room(READ_SIZE);
        let n = src.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Appends bytes as if read (tests, fuzzing).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// The next complete frame, `Ok(None)` when the buffer holds none yet.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        match parse(&self.buf[self.start..self.end], self.max_data)? {
            Some((f, used)) => {
                self.start += used;
                Ok(Some(f))
            }
            None => Ok(None),
        }
    }

    /// Bytes held that are not a complete frame yet.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Frees the buffer once it is empty (an idle connection keeps no 64 KiB).
    pub fn shrink_if_empty(&mut self) {
        if self.pending() == 0 {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txnr_distance_follows_next_txnr_across_the_wrap() {
        for from in [1, 2, 500, MAX_TXNR - 3, MAX_TXNR] {
            let mut t = from;
            for steps in 0..10 {
                assert_eq!(txnr_distance(from, t), steps, "{from} -> {t}");
                t = next_txnr(t);
            }
        }
    }

    #[test]
    fn frames_split_across_feeds_and_buffer_reuse() {
        let mut all = Vec::new();
        for t in 1..=200u32 {
            write_frame(&mut all, t, "syslog", format!("message {t}").as_bytes());
        }
        let mut r = FrameReader::new(1 << 10);
        let mut next = 1;
        for chunk in all.chunks(7) {
            r.feed(chunk);
            while let Some(f) = r.next_frame().unwrap() {
                assert_eq!(f.txnr, next);
                assert_eq!(f.data, format!("message {next}").as_bytes());
                next += 1;
            }
        }
        assert_eq!(next, 201);
        assert_eq!(r.pending(), 0);
    }

    fn all(bytes: &[u8], max: usize) -> Result<Vec<(u32, String, Vec<u8>)>, FrameError> {
        let mut r = FrameReader::new(max);
        r.feed(bytes);
        let mut v = Vec::new();
        while let Some(f) = r.next_frame()? {
            v.push((
                f.txnr,
                String::from_utf8_lossy(f.command).into_owned(),
                f.data.to_vec(),
            ));
        }
        Ok(v)
    }

    const STREAM: &[u8] = b"1 open 34 relp_version=0\ncommands=syslog\nx=y\n\
        2 syslog 5 hello\n3 syslog 13 <13>a\nb c  d \n4 close 0\n0 serverclose 0\n";

    #[test]
    fn parses_a_stream_of_frames() {
        let got = all(STREAM, 1024).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].0, 1);
        assert_eq!(got[0].1, "open");
        assert!(offers_command(&got[0].2, "syslog"));
        assert_eq!(offer(&got[0].2, "relp_version"), Some(&b"0"[..]));
        assert_eq!(got[1], (2, "syslog".into(), b"hello".to_vec()));
        assert_eq!(got[2].2, b"<13>a\nb c  d ".to_vec());
        assert_eq!(got[3], (4, "close".into(), vec![]));
        assert_eq!(got[4], (0, "serverclose".into(), vec![]));
    }

    #[test]
    fn split_reads_at_every_byte_give_the_same_frames() {
        let whole = all(STREAM, 1024).unwrap();
        for cut in 0..=STREAM.len() {
            let mut r = FrameReader::new(1024);
            let mut got = Vec::new();
            for part in [&STREAM[..cut], &STREAM[cut..]] {
                r.feed(part);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push((
                        f.txnr,
                        String::from_utf8_lossy(f.command).into_owned(),
                        f.data.to_vec(),
                    ));
                }
            }
            assert_eq!(got, whole, "cut at {cut}");
            assert_eq!(r.pending(), 0);
        }
        // One byte at a time.
        let mut r = FrameReader::new(1024);
        let mut n = 0;
        for b in STREAM {
            r.feed(std::slice::from_ref(b));
            while r.next_frame().unwrap().is_some() {
                n += 1;
            }
        }
        assert_eq!(n, whole.len());
    }

    #[test]
    fn an_oversize_frame_is_refused_before_its_data() {
        assert_eq!(
            parse(b"1 syslog 2000 ", 1000),
            Err(FrameError::TooLarge {
                len: 2000,
                max: 1000
            })
        );
        assert!(parse(b"1 syslog 1000 ", 1000).unwrap().is_none());
    }

    #[test]
    fn bad_frames_are_errors() {
        let cases: &[(&[u8], FrameError)] = &[
            (b"x syslog 1 a\n", FrameError::BadTxnr),
            (b" 1 syslog 1 a\n", FrameError::BadTxnr),
            (b"1234567890 syslog 1 a\n", FrameError::BadTxnr),
            (b"-1 syslog 1 a\n", FrameError::BadTxnr),
            (b"1 sys1og 1 a\n", FrameError::BadCommand),
            (b"1  syslog 1 a\n", FrameError::BadCommand),
            (
                b"1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 1 a\n",
                FrameError::BadCommand,
            ),
            (b"1 syslog x a\n", FrameError::BadLength),
            (b"1 syslog 1x a\n", FrameError::BadLength),
            (b"1 syslog 1234567890 a\n", FrameError::BadLength),
            (b"1 syslog 1\na\n", FrameError::BadLength),
            (b"1 syslog 1 ab\n", FrameError::MissingTrailer),
            (b"1 syslog 0 x", FrameError::MissingTrailer),
            (b"1 syslog 3 abc 2 syslog", FrameError::MissingTrailer),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                parse(bytes, 1 << 20).err().as_ref(),
                Some(want),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// What the fuzz target checks, over seeded mutations of a valid stream: no panic, the
    /// same frames (or error) whatever the split, and frames that write back as read.
    #[test]
    fn mutated_streams_parse_the_same_whatever_the_split() {
        let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let frames = |parts: &[&[u8]], max: usize| {
            let mut r = FrameReader::new(max);
            let mut got = Vec::new();
            for part in parts {
                r.feed(part);
                loop {
                    match r.next_frame() {
                        Ok(Some(f)) => got.push((f.txnr, f.command.to_vec(), f.data.to_vec())),
                        Ok(None) => break,
                        Err(e) => return (got, Some(e)),
                    }
                }
            }
            (got, None)
        };
        for _ in 0..20_000 {
            let mut s = STREAM.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() % s.len() as u64) as usize;
                match next() % 4 {
                    0 => s[at] = next() as u8,
                    1 => s[at] = b"0123456789 \n"[(next() % 12) as usize],
                    2 => {
                        s.remove(at);
                    }
                    _ => s.insert(at, b"9 \n"[(next() % 3) as usize]),
                }
            }
            let max = 1 + (next() % 64) as usize;
            let cut = (next() % (s.len() as u64 + 1)) as usize;
            let whole = frames(&[&s], max);
            assert_eq!(
                whole,
                frames(&[&s[..cut], &s[cut..]], max),
                "{s:?} cut {cut}"
            );
            for (txnr, cmd, data) in whole.0 {
                let mut b = Vec::new();
                write_frame(&mut b, txnr, std::str::from_utf8(&cmd).unwrap(), &data);
                let (again, err) = frames(&[&b], max);
                assert!(err.is_none());
                assert_eq!(again, vec![(txnr, cmd, data)]);
            }
        }
    }

    #[test]
    fn written_frames_parse_back() {
        let mut b = Vec::new();
        write_frame(&mut b, 7, "rsp", b"200 OK");
        write_frame(&mut b, 0, "serverclose", b"");
        assert_eq!(&b, b"7 rsp 6 200 OK\n0 serverclose 0\n");
        let got = all(&b, 100).unwrap();
        assert_eq!(rsp_code(&got[0].2), Some(200));
        assert_eq!(rsp_code(b"500"), Some(500));
        assert_eq!(rsp_code(b"20"), None);
        assert_eq!(rsp_code(b"200x"), None);
        assert_eq!(next_txnr(MAX_TXNR), 1);
        assert_eq!(next_txnr(1), 2);
    }
}
