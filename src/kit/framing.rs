//! RFC 6587 framing of syslog (and plain line) streams: newline-terminated messages,
//! octet counting (`LEN SP MSG`), or auto-detection per connection from its first bytes.
//!
//! A [`Deframer`] belongs to one connection. Newline framing goes straight through a
//! [`LineSplitter`] (no extra copy); octet counting keeps its own bounded buffer.
//!
//! Octet counting rules, as RFC 6587 §3.4.1 writes them: `LEN` is a non-zero digit followed
//! by digits (at most [`MAX_LEN_DIGITS`]), one space, then exactly `LEN` bytes of message.
//! A frame longer than `max_line_bytes` is cut like an over-long line (its first
//! `max_line_bytes` bytes are handed out flagged `truncated`, the rest is skipped as it
//! arrives). One trailing LF (or CRLF) inside a frame is removed, since some senders add
//! one; stray CR/LF bytes between frames are skipped for the same reason. Anything else
//! where a `LEN` is expected is garbage: the framing of the stream is lost, so the
//! deframer reports a [`FramingError`] and the caller closes the connection.
//!
//! Auto-detection never loses data: a stream is octet-counted only when it starts with a
//! well-formed header followed by a syslog `PRI` (`LEN SP <N>`, e.g. `57 <34>1 ...`) and at
//! least `LEN` bytes (or `max_line_bytes` of them) have arrived; anything else, such as
//! an application log line starting with a date (`2026-12-04 10:00 x`), is read as lines.
//! A detected octet-counted stream that later breaks the rules is read as lines from the
//! bad header on (the error is still reported, with [`FramingError::recovered`] set).
//!
//! ```
//! use deadbeat::kit::framing::{Deframer, Framing};
//!
//! let mut d = Deframer::new(Framing::Auto, 1024, 4096);
//! d.push(b"9 <13>hello15 <13>hello world\n");
//! let mut got = Vec::new();
//! d.for_each_message(|m, _| got.push(m.to_vec())).unwrap();
//! assert_eq!(got, [b"<13>hello".to_vec(), b"<13>hello world".to_vec()]);
//!
//! // A line starting with digits is a line.
//! let mut d = Deframer::new(Framing::Auto, 1024, 4096);
//! d.push(b"2026-12-04 10:00 x\n");
//! let mut got = Vec::new();
//! d.for_each_message(|m, _| got.push(m.to_vec())).unwrap();
//! assert_eq!(got, [b"2026-12-04 10:00 x".to_vec()]);
//! ```

use std::fmt;
use std::io::{self, Read};

use crate::kit::lines::{LineInfo, LineSplitter};

/// Longest accepted `LEN` of an octet-counted frame, in digits (up to 9 999 999 999 bytes,
/// of which at most `max_line_bytes` are kept).
pub const MAX_LEN_DIGITS: usize = 10;

/// How a stream is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// LF (or CRLF) terminated messages.
    Newline,
    /// `LEN SP MSG` frames (RFC 6587 §3.4.1).
    OctetCounting,
    /// Decided per stream from its first bytes: octet counting when they are `LEN SP`
    /// followed by a syslog `PRI` (`<N>`) and `LEN` bytes, newline framing otherwise (a
    /// line of any kind, an ISO-dated application log line included).
    Auto,
}

impl Framing {
    /// The names used in configurations.
    pub const NAMES: &'static [&'static str] = &["newline", "octet_counting", "auto"];

    /// Parses `"newline"`, `"octet_counting"` or `"auto"`.
    pub fn parse(s: &str) -> Option<Framing> {
        match s {
            "newline" => Some(Framing::Newline),
            "octet_counting" => Some(Framing::OctetCounting),
            "auto" => Some(Framing::Auto),
            _ => None,
        }
    }
}

/// The stream broke the octet-counting rules; its framing cannot be recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramingError {
    /// Stream offset of the offending header.
    pub offset: u64,
    /// Up to 32 bytes from there, for the log.
    pub sample: Vec<u8>,
    /// What was wrong.
    pub reason: &'static str,
    /// The stream was auto-detected as octet-counted: from the bad header on it is read
    /// as lines, and the connection can stay open.
    pub recovered: bool,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at offset {}: {:?}",
            self.reason,
            self.offset,
            String::from_utf8_lossy(&self.sample)
        )
    }
}

impl std::error::Error for FramingError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Undecided,
    Lines,
    Octets,
}

/// Cuts one stream into messages; see the [module documentation](self).
#[derive(Debug)]
pub struct Deframer {
    mode: Mode,
    lines: LineSplitter,
    /// Octet-counting buffer; live bytes are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Bytes of an over-long frame still to skip.
    skip: u64,
    max: usize,
    read_size: usize,
    failed: bool,
    truncated_frames: u64,
    /// Configured as [`Framing::Auto`]: a broken octet-counted stream falls back to lines.
    auto: bool,
}

/// What the first bytes of an auto-framed stream say.
#[derive(Debug, PartialEq, Eq)]
enum Guess {
    Lines,
    Octets,
    NeedMore,
}

/// Whether `held`, the first bytes of a stream, start an octet-counted frame: `LEN SP`
/// (RFC 6587), then a syslog `PRI` (`<` one to three digits `>`), and at least
/// `min(LEN, max)` body bytes received.
fn guess(held: &[u8], max: usize) -> Guess {
    let mut len: u64 = 0;
    let mut i = 0;
    loop {
        let Some(&b) = held.get(i) else {
            return Guess::NeedMore;
        };
        match b {
            b'1'..=b'9' if i < MAX_LEN_DIGITS => len = len * 10 + u64::from(b - b'0'),
            b'0' if i > 0 && i < MAX_LEN_DIGITS => len *= 10,
            b' ' if i > 0 => break,
            _ => return Guess::Lines,
        }
        i += 1;
    }
    let body = &held[i + 1..];
    // `<` DIGIT{1,3} `>`
    let mut j = 0;
    loop {
        let Some(&b) = body.get(j) else {
            return Guess::NeedMore;
        };
        let ok = match j {
            0 => b == b'<',
            1 => b.is_ascii_digit(),
            2..=4 if b == b'>' => break,
            2 | 3 => b.is_ascii_digit(),
            _ => false,
        };
        if !ok {
            return Guess::Lines;
        }
        j += 1;
    }
    // The frame must hold at least the PRI seen.
    if len < (j + 1) as u64 {
        return Guess::Lines;
    }
    if (body.len() as u64) < len.min(max as u64) {
        return Guess::NeedMore;
    }
    Guess::Octets
}

impl Deframer {
    /// A deframer keeping at most `max_line_bytes` of a message, reading `read_size` bytes
    /// at a time.
    pub fn new(framing: Framing, max_line_bytes: usize, read_size: usize) -> Self {
        let max = if max_line_bytes == 0 {
            LineSplitter::DEFAULT_MAX_LINE_BYTES
        } else {
            max_line_bytes
        };
        let read_size = match read_size {
            0 => LineSplitter::DEFAULT_READ_SIZE,
            n => n.min(LineSplitter::MAX_READ_SIZE),
        };
        Deframer {
            mode: match framing {
                Framing::Newline => Mode::Lines,
                Framing::OctetCounting => Mode::Octets,
                Framing::Auto => Mode::Undecided,
            },
            lines: LineSplitter::new(max).with_read_size(read_size),
            buf: Vec::new(),
            start: 0,
            end: 0,
            base: 0,
            skip: 0,
            max,
            read_size,
            failed: false,
            truncated_frames: 0,
            auto: framing == Framing::Auto,
        }
    }

    /// The framing in effect: `Auto` until the first byte has been seen.
    pub fn framing(&self) -> Framing {
        match self.mode {
            Mode::Undecided => Framing::Auto,
            Mode::Lines => Framing::Newline,
            Mode::Octets => Framing::OctetCounting,
        }
    }

    /// One `read` into the buffer (`Ok(0)` at end of stream); `Interrupted` is retried,
    /// other errors (`WouldBlock` included) are returned. Drain messages with
    /// [`for_each_message`](Self::for_each_message) after every successful read: that is
    /// what keeps memory bounded (by `max_line_bytes` + a header + `read_size`).
    pub fn read_from<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.mode == Mode::Lines {
            return self.lines.read_from(r);
        }
        self.make_room(self.read_size);
        let stop = self.end + self.read_size;
        if self.buf.len() < stop {
            self.buf.resize(stop, 0);
        }
        let n = loop {
            match r.read(&mut self.buf[self.end..stop]) {
                Ok(n) => break n.min(stop - self.end),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.end += n;
        self.decide();
        Ok(n)
    }

    /// Appends bytes already received (datagram payloads, tests).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.mode == Mode::Lines {
            return self.lines.push(bytes);
        }
        self.make_room(bytes.len());
        let stop = self.end + bytes.len();
        if self.buf.len() < stop {
            self.buf.resize(stop, 0);
        }
        self.buf[self.end..stop].copy_from_slice(bytes);
        self.end = stop;
        self.decide();
    }

    /// Bytes received and not yet handed out (the partial message held).
    pub fn pending_len(&self) -> usize {
        match self.mode {
            Mode::Lines => self.lines.pending_len(),
            _ => self.end - self.start,
        }
    }

    /// Bytes of buffer this deframer holds (its allocations, whatever they hold now).
    pub fn buffer_bytes(&self) -> usize {
        self.lines.buffer_bytes() + self.buf.capacity()
    }

    /// Gives back buffer memory beyond what the held bytes need (an idle connection, a
    /// listener short of memory); the next read allocates again.
    pub fn shrink(&mut self) {
        self.lines.shrink_to_fit();
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        self.buf.truncate(self.end);
        self.buf.shrink_to_fit();
    }

    /// Lines or frames cut to `max_line_bytes` so far.
    pub fn truncated(&self) -> u64 {
        self.lines.truncated_lines() + self.truncated_frames
    }

    fn decide(&mut self) {
        if self.mode != Mode::Undecided || self.start == self.end {
            return;
        }
        match guess(&self.buf[self.start..self.end], self.max) {
            Guess::Octets => self.mode = Mode::Octets,
            Guess::Lines => self.switch_to_lines(),
            Guess::NeedMore => {}
        }
    }

    /// Hands the held bytes to the line splitter and reads the rest of the stream as lines.
    fn switch_to_lines(&mut self) {
        self.mode = Mode::Lines;
        self.lines.reset(self.base + self.start as u64);
        self.lines.push(&self.buf[self.start..self.end]);
        self.buf = Vec::new();
        self.start = 0;
        self.end = 0;
        self.skip = 0;
    }

    /// Moves live bytes to the front when that makes room for `more` bytes.
    fn make_room(&mut self, more: usize) {
        if self.start > 0 && (self.start == self.end || self.end + more > self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Hands every complete message to `f` and returns how many there were. After a
    /// [`FramingError`] (reported once; messages before it were handed out) the stream is
    /// useless: further calls hand out nothing. Unless the framing was auto-detected: then
    /// the lines from the bad header on are handed out too, the error says
    /// [`recovered`](FramingError::recovered), and the stream goes on as lines.
    pub fn for_each_message(
        &mut self,
        mut f: impl FnMut(&[u8], LineInfo),
    ) -> Result<usize, FramingError> {
        match self.mode {
            Mode::Lines => Ok(self.lines.for_each_line(f)),
            Mode::Undecided => Ok(0),
            Mode::Octets => {
                if self.failed {
                    return Ok(0);
                }
                let mut n = 0;
                loop {
                    match self.next_frame() {
                        Ok(Some((s, e, info))) => {
                            f(&self.buf[s..e], info);
                            n += 1;
                        }
                        Ok(None) => return Ok(n),
                        Err(mut err) if self.auto => {
                            err.recovered = true;
                            self.switch_to_lines();
                            self.lines.for_each_line(f);
                            return Err(err);
                        }
                        Err(err) => {
                            self.failed = true;
                            return Err(err);
                        }
                    }
                }
            }
        }
    }

    /// The end of the stream: hands out complete messages, then what is held of an
    /// unfinished one, flagged `unterminated`. Returns how many messages, and whether the
    /// stream ended inside an octet-counted frame or header (the sender promised more).
    pub fn finish(&mut self, mut f: impl FnMut(&[u8], LineInfo)) -> (usize, bool) {
        match self.mode {
            Mode::Lines => {
                let mut n = 0;
                while let Some(l) = self.lines.finish() {
                    f(l.bytes, l.info);
                    n += 1;
                }
                (n, false)
            }
            Mode::Undecided => {
                // Too few bytes to be a frame: they are a line.
                self.switch_to_lines();
                self.finish(f)
            }
            Mode::Octets => {
                let mut n = match self.for_each_message(&mut f) {
                    Ok(n) => n,
                    // Fell back to lines: what is left is a line's tail.
                    Err(e) if e.recovered => return self.finish(f),
                    Err(_) => 0,
                };
                let mut cut = self.skip > 0;
                if !self.failed && self.start < self.end {
                    cut = true;
                    let held = &self.buf[self.start..self.end];
                    // Inside a frame, hand out the body received; a bare header carries
                    // nothing worth keeping.
                    if let Some(sp) = held.iter().position(|&b| b == b' ') {
                        let body = &held[sp + 1..];
                        let body = &body[..body.len().min(self.max)];
                        f(
                            body,
                            LineInfo {
                                offset: self.base + (self.start + sp + 1) as u64,
                                truncated: false,
                                unterminated: true,
                            },
                        );
                        n += 1;
                    }
                }
                self.start = self.end;
                self.skip = 0;
                (n, cut)
            }
        }
    }

    /// The next complete frame as a range of `buf`, `None` if more bytes are needed.
    fn next_frame(&mut self) -> Result<Option<(usize, usize, LineInfo)>, FramingError> {
        if self.skip > 0 {
            let avail = (self.end - self.start) as u64;
            let n = avail.min(self.skip);
            self.start += n as usize;
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        while self.start < self.end && matches!(self.buf[self.start], b'\n' | b'\r') {
            self.start += 1;
        }
        let held = &self.buf[self.start..self.end];
        if held.is_empty() {
            return Ok(None);
        }
        let mut len: u64 = 0;
        let mut digits = 0;
        let body_at = loop {
            let Some(&b) = held.get(digits) else {
                return Ok(None);
            };
            match b {
                b'0'..=b'9' if digits == 0 && b == b'0' => {
                    return Err(self.garbage("octet count starting with 0"));
                }
                b'0'..=b'9' if digits < MAX_LEN_DIGITS => {
                    len = len * 10 + u64::from(b - b'0');
                    digits += 1;
                }
                b'0'..=b'9' => return Err(self.garbage("octet count too long")),
                b' ' if digits > 0 => break digits + 1,
                _ => return Err(self.garbage("bad octet count")),
            }
        };
        let offset = self.base + (self.start + body_at) as u64;
        let keep = len.min(self.max as u64) as usize;
        if held.len() < body_at + keep {
            return Ok(None);
        }
        let s = self.start + body_at;
        let mut e = s + keep;
        let truncated = len > keep as u64;
        if truncated {
            self.skip = len - keep as u64;
            self.start = e;
            self.truncated_frames += 1;
        } else {
            self.start = e;
            if e > s && self.buf[e - 1] == b'\n' {
                e -= 1;
                if e > s && self.buf[e - 1] == b'\r' {
                    e -= 1;
                }
            }
        }
        Ok(Some((
            s,
            e,
            LineInfo {
                offset,
                truncated,
                unterminated: false,
            },
        )))
    }

    fn garbage(&self, reason: &'static str) -> FramingError {
        let held = &self.buf[self.start..self.end];
        FramingError {
            offset: self.base + self.start as u64,
            sample: held[..held.len().min(32)].to_vec(),
            reason,
            recovered: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(d: &mut Deframer) -> Result<Vec<(Vec<u8>, bool)>, FramingError> {
        let mut v = Vec::new();
        d.for_each_message(|m, i| v.push((m.to_vec(), i.truncated)))?;
        Ok(v)
    }

    #[test]
    fn octet_frames_split_across_pushes() {
        let mut d = Deframer::new(Framing::OctetCounting, 100, 0);
        let s = b"3 abc12 <13>hi there\n10 0123456789";
        for b in s.chunks(1) {
            d.push(b);
        }
        let got = all(&mut d).unwrap();
        assert_eq!(
            got,
            [
                (b"abc".to_vec(), false),
                (b"<13>hi there".to_vec(), false),
                (b"0123456789".to_vec(), false)
            ]
        );
    }

    #[test]
    fn auto_detects_newline_and_octets() {
        let mut d = Deframer::new(Framing::Auto, 100, 0);
        d.push(b"<13>a\n<13>b\n");
        assert_eq!(d.framing(), Framing::Newline);
        assert_eq!(all(&mut d).unwrap().len(), 2);
        let mut d = Deframer::new(Framing::Auto, 100, 0);
        d.push(b"4 <1>a");
        assert_eq!(d.framing(), Framing::OctetCounting);
        assert_eq!(all(&mut d).unwrap(), [(b"<1>a".to_vec(), false)]);
    }

    #[test]
    fn auto_reads_lines_starting_with_digits_as_lines() {
        let max = 100;
        for (input, lines) in [
            (&b"2026-12-04 10:00 x\n"[..], true),
            (b"12 hello world\n", true),
            (b"42\n", true),
            (b"0 <13>x\n", true),
            (b"3 <13>x\n", true),
            (b"8 <13x>abc\n", true),
            (b"10 <1234>abc\n", true),
            (b"12345678901 <1>x\n", true),
            (b"4 <1>a", false),
            (b"7 <134>ab", false),
        ] {
            assert_eq!(guess(input, max) == Guess::Lines, lines, "{input:?}");
        }
        // Undecided until the header, the PRI and the frame's bytes are there.
        assert_eq!(guess(b"12", max), Guess::NeedMore);
        assert_eq!(guess(b"12 <1", max), Guess::NeedMore);
        assert_eq!(guess(b"12 <13>abc", max), Guess::NeedMore);
        assert_eq!(guess(b"12 <13>abcdefgh", max), Guess::Octets);
        // A frame longer than max_line_bytes is decided once max bytes are there.
        assert_eq!(guess(b"500 <13>abcdefgh", 8), Guess::Octets);

        // Every byte of a digit-led line stream comes out, split byte by byte too.
        let s = b"2026-12-04 10:00 x\n2026-12-04 10:01 y\n12 z\n";
        let mut d = Deframer::new(Framing::Auto, max, 0);
        for b in s.chunks(1) {
            d.push(b);
        }
        let got: Vec<Vec<u8>> = all(&mut d).unwrap().into_iter().map(|m| m.0).collect();
        assert_eq!(
            got,
            [
                b"2026-12-04 10:00 x".to_vec(),
                b"2026-12-04 10:01 y".to_vec(),
                b"12 z".to_vec()
            ]
        );
        // A stream ending before it could be decided is a line.
        let mut d = Deframer::new(Framing::Auto, max, 0);
        d.push(b"12 <1");
        let mut got = Vec::new();
        d.finish(|m, i| got.push((m.to_vec(), i.unterminated)));
        assert_eq!(got, [(b"12 <1".to_vec(), true)]);
    }

    #[test]
    fn auto_falls_back_to_lines_after_bad_octet_count() {
        let mut d = Deframer::new(Framing::Auto, 100, 0);
        d.push(b"7 <1>okay12x4 junk\nnext line\ntail");
        let mut got = Vec::new();
        let err = d.for_each_message(|m, _| got.push(m.to_vec())).unwrap_err();
        assert!(err.recovered);
        assert_eq!(
            got,
            [
                b"<1>okay".to_vec(),
                b"12x4 junk".to_vec(),
                b"next line".to_vec()
            ]
        );
        assert_eq!(d.framing(), Framing::Newline);
        d.push(b" end\n");
        got.clear();
        d.for_each_message(|m, _| got.push(m.to_vec())).unwrap();
        assert_eq!(got, [b"tail end".to_vec()]);
        // Configured octet counting does not fall back.
        let mut d = Deframer::new(Framing::OctetCounting, 100, 0);
        d.push(b"7 <1>okay12x4 junk\n");
        let err = d.for_each_message(|_, _| {}).unwrap_err();
        assert!(!err.recovered);
    }

    #[test]
    fn long_frames_are_cut_and_the_rest_skipped() {
        let mut d = Deframer::new(Framing::OctetCounting, 4, 0);
        d.push(b"10 0123");
        assert_eq!(all(&mut d).unwrap(), [(b"0123".to_vec(), true)]);
        d.push(b"456789");
        d.push(b"2 ok");
        assert_eq!(all(&mut d).unwrap(), [(b"ok".to_vec(), false)]);
        assert_eq!(d.truncated(), 1);
    }

    #[test]
    fn garbage_is_an_error_after_the_good_frames() {
        let mut d = Deframer::new(Framing::OctetCounting, 100, 0);
        d.push(b"2 okhello world\n");
        let mut n = 0;
        let err = d.for_each_message(|_, _| n += 1).unwrap_err();
        assert_eq!(n, 1);
        assert_eq!(err.offset, 4);
        assert_eq!(d.for_each_message(|_, _| n += 1), Ok(0));
        for bad in [&b"05 hello"[..], b"12345678901 x", b" 3 abc"] {
            let mut d = Deframer::new(Framing::OctetCounting, 100, 0);
            d.push(bad);
            assert!(all(&mut d).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shrink_keeps_what_is_held() {
        for framing in [Framing::Newline, Framing::OctetCounting] {
            let mut d = Deframer::new(framing, 100, 4096);
            let mut input: &[u8] = match framing {
                Framing::Newline => b"a\nbcd",
                _ => b"1 a5 bcd",
            };
            d.read_from(&mut input).unwrap();
            let mut got = Vec::new();
            d.for_each_message(|m, _| got.push(m.to_vec())).unwrap();
            assert!(d.buffer_bytes() >= 4096);
            d.shrink();
            assert!(d.buffer_bytes() < 16, "{framing:?}");
            d.push(b"e\n");
            if framing == Framing::OctetCounting {
                d.push(b"2 fg");
            }
            d.for_each_message(|m, _| got.push(m.to_vec())).unwrap();
            assert_eq!(got[0], b"a");
            assert_eq!(got[1], b"bcde");
        }
    }

    #[test]
    fn finish_hands_out_partial_frames() {
        let mut d = Deframer::new(Framing::OctetCounting, 100, 0);
        d.push(b"10 01234");
        assert_eq!(all(&mut d).unwrap(), []);
        let mut got = Vec::new();
        let (n, cut) = d.finish(|m, i| got.push((m.to_vec(), i.unterminated)));
        assert_eq!((n, cut), (1, true));
        assert_eq!(got, [(b"01234".to_vec(), true)]);
        let mut d = Deframer::new(Framing::Newline, 100, 0);
        d.push(b"a\nb");
        let mut got = Vec::new();
        let (n, cut) = d.finish(|m, _| got.push(m.to_vec()));
        assert_eq!((n, cut), (2, false));
        assert_eq!(got, [b"a".to_vec(), b"b".to_vec()]);
    }
}
