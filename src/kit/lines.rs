//! Byte-stream line splitting shared by every byte-stream supply (stdin, files, TCP).
//!
//! [`LineSplitter`] owns one reusable buffer. A supply either reads straight into it with
//! [`LineSplitter::read_from`] (no intermediate copy) or hands it bytes with
//! [`LineSplitter::push`], then drains complete lines with [`LineSplitter::next_line`] or
//! [`LineSplitter::for_each_line`]. Lines borrow the buffer: nothing is allocated per line,
//! and the unfinished tail is moved to the front at most once per read, never per line.
//!
//! Rules:
//! - A line ends at LF; a CR directly before the LF is part of the terminator. Neither is
//!   part of [`Line::bytes`]. A CR anywhere else stays in the line.
//! - Bytes are never validated or decoded: invalid UTF-8 passes through unchanged.
//! - Each line carries the stream offset of its first byte (counted from the start of the
//!   stream, or from the offset given to [`LineSplitter::reset`]), so a tail supply can
//!   checkpoint [`LineSplitter::consumed`] and resume there.
//! - A line longer than `max_line_bytes` is cut: its first `max_line_bytes` bytes come out
//!   flagged [`LineInfo::truncated`] and the rest, up to and including its LF, is dropped as
//!   it arrives, so memory stays bounded by about `max_line_bytes + read_size` whatever the
//!   input.
//! - An unterminated last line is held until [`LineSplitter::finish`] hands it out, flagged
//!   [`LineInfo::unterminated`].
//!
//! ```
//! use deadbeat::kit::lines::LineSplitter;
//!
//! let mut input: &[u8] = b"GET / 200\r\nPOST /login 302\npartial";
//! let mut splitter = LineSplitter::default();
//! let mut seen = Vec::new();
//! // A supply loops like this until `read_from` returns 0 (EOF) or WouldBlock.
//! while splitter.read_from(&mut input)? != 0 {
//!     while let Some(line) = splitter.next_line() {
//!         seen.push((line.info.offset, line.bytes.to_vec()));
//!     }
//! }
//! assert_eq!(splitter.pending_len(), 7);
//! if let Some(line) = splitter.finish() {
//!     assert!(line.info.unterminated);
//!     seen.push((line.info.offset, line.bytes.to_vec()));
//! }
//! assert_eq!(
//!     seen,
//!     [
//!         (0, b"GET / 200".to_vec()),
//!         (11, b"POST /login 302".to_vec()),
//!         (27, b"partial".to_vec()),
//!     ]
//! );
//! assert_eq!(splitter.consumed(), 34);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io::{self, Read};

/// Metadata reported with every line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineInfo {
    /// Stream offset of the line's first byte.
    pub offset: u64,
    /// The line was longer than `max_line_bytes`; only its first `max_line_bytes` bytes are
    /// reported and the rest of it was (or will be) discarded.
    pub truncated: bool,
    /// Set only on the held tail handed out by [`LineSplitter::finish`]: the stream ended
    /// without an LF. (A line cut for length is handed out as soon as it is known to be too
    /// long, before its end is seen, so it normally carries only `truncated`.)
    pub unterminated: bool,
}

/// A line borrowed from the splitter's buffer, valid until the splitter is used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line without its LF / CRLF terminator.
    pub bytes: &'a [u8],
    /// Offset and flags.
    pub info: LineInfo,
}

/// Splits a byte stream into LF / CRLF terminated lines with bounded memory.
///
/// Contract: after each [`read_from`](Self::read_from) or [`push`](Self::push), drain lines
/// with [`next_line`](Self::next_line) until it returns `None` (or use
/// [`for_each_line`](Self::for_each_line)). Draining is what keeps memory bounded; stopping
/// early for backpressure is fine as long as the rest is drained before the next read.
///
/// ```
/// use deadbeat::kit::lines::LineSplitter;
///
/// let mut s = LineSplitter::new(8).with_read_size(64 * 1024);
/// s.push(b"short\nthis line is too long\nok\r\n");
/// let mut out = Vec::new();
/// s.for_each_line(|bytes, info| out.push((bytes.to_vec(), info.offset, info.truncated)));
/// assert_eq!(
///     out,
///     [
///         (b"short".to_vec(), 0, false),
///         (b"this lin".to_vec(), 6, true),
///         (b"ok".to_vec(), 28, false),
///     ]
/// );
/// assert_eq!(s.truncated_lines(), 1);
/// assert_eq!(s.consumed(), 32);
/// ```
pub struct LineSplitter {
    /// Fully initialised storage (so reads can target it safely); only `start..end` is live.
    buf: Vec<u8>,
    /// First byte not yet handed out or discarded.
    start: usize,
    /// End of the bytes received so far.
    end: usize,
    /// Bytes before `scan` have been searched for LF: every LF in `start..scan` is queued in
    /// `lfs[lf_head..lf_tail]` (ascending), so each byte is searched once, even when a line
    /// arrives over many reads.
    scan: usize,
    /// LF positions found by the last batch search. Searching in batches of whole 64-byte
    /// blocks, instead of one search per line, keeps the per-line cost to a queue pop.
    lfs: [usize; LF_QUEUE],
    lf_head: usize,
    lf_tail: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    max_line_bytes: usize,
    read_size: usize,
    /// Dropping the remainder of a truncated line up to its LF.
    skipping: bool,
    truncated_lines: u64,
}

impl LineSplitter {
    /// Default cap on a line's length: 1 MiB.
    pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;
    /// Default number of bytes [`read_from`](Self::read_from) asks for per read: 64 KiB.
    pub const DEFAULT_READ_SIZE: usize = 64 << 10;
    /// Read size of the file and stream supplies: one read is one batch through the train,
    /// and about 1,500 typical lines keep a batch's records in the L2 cache from one cog to
    /// the next. Larger reads overflow that cache and raise the peak RSS; smaller ones add
    /// system calls without a gain (figures in `docs/performance.md`).
    pub const BATCH_READ_SIZE: usize = 256 << 10;
    /// Largest accepted read size: 64 MiB (a typo in a config must not allocate gigabytes).
    pub const MAX_READ_SIZE: usize = 64 << 20;

    /// Creates a splitter cutting lines longer than `max_line_bytes`.
    ///
    /// `0` is treated as "unset" and means [`DEFAULT_MAX_LINE_BYTES`](Self::DEFAULT_MAX_LINE_BYTES)
    /// (a zero-byte cap would turn every line into an empty truncated line). No memory is
    /// allocated until the first read or push.
    pub fn new(max_line_bytes: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            start: 0,
            end: 0,
            scan: 0,
            lfs: [0; LF_QUEUE],
            lf_head: 0,
            lf_tail: 0,
            base: 0,
            max_line_bytes: if max_line_bytes == 0 {
                Self::DEFAULT_MAX_LINE_BYTES
            } else {
                max_line_bytes
            },
            read_size: Self::DEFAULT_READ_SIZE,
            skipping: false,
            truncated_lines: 0,
        }
    }

    /// Sets how many bytes [`read_from`](Self::read_from) asks for per read (`0` means
    /// [`DEFAULT_READ_SIZE`](Self::DEFAULT_READ_SIZE); values above
    /// [`MAX_READ_SIZE`](Self::MAX_READ_SIZE) are clamped to it). The buffer never grows past
    /// `max_line_bytes + 1 + read_size` through `read_from`.
    pub fn with_read_size(mut self, read_size: usize) -> Self {
        self.read_size = match read_size {
            0 => Self::DEFAULT_READ_SIZE,
            n => n.min(Self::MAX_READ_SIZE),
        };
        self
    }

    /// The line length cap in effect.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// Performs one `read` into the buffer's spare space and returns its result: `Ok(0)`
    /// means EOF. `Interrupted` is retried; any other error (including `WouldBlock`) is
    /// returned unchanged with the splitter untouched. An edge-triggered supply calls it until
    /// `WouldBlock`, draining lines after every successful read.
    ///
    /// Fails with [`io::ErrorKind::OutOfMemory`] only if the caller keeps reading without
    /// draining lines and the buffer is at its bound.
    pub fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<usize> {
        self.make_room(self.read_size);
        let limit = self.read_limit();
        let want = self.end.saturating_add(self.read_size).min(limit);
        if self.buf.len() < want {
            self.grow_to(want, limit);
        }
        let stop = self.buf.len().min(self.end.saturating_add(self.read_size));
        if stop <= self.end {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "LineSplitter buffer full: drain lines before reading more",
            ));
        }
        let spare = &mut self.buf[self.end..stop];
        let n = loop {
            match reader.read(spare) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        // A misbehaving reader may claim more than it was given; trusting it would break the
        // buffer invariants.
        let n = n.min(stop - self.end);
        self.end += n;
        Ok(n)
    }

    /// Appends bytes (for supplies that already hold them in their own buffer).
    ///
    /// While the remainder of a truncated line is being dropped, that remainder is skipped
    /// straight from `bytes` without being copied. Memory is bounded by `max_line_bytes + 1`
    /// plus whatever is pushed between two drains.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.skipping && self.start == self.end {
            self.rebase();
            match find_lf(bytes) {
                Some(i) => {
                    self.base = self.base.wrapping_add(i as u64 + 1);
                    self.skipping = false;
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.base = self.base.wrapping_add(bytes.len() as u64);
                    return;
                }
            }
        }
        if bytes.is_empty() {
            return;
        }
        self.make_room(bytes.len());
        let want = self.end.saturating_add(bytes.len());
        if self.buf.len() < want {
            self.grow_to(want, self.read_limit().max(want));
        }
        self.buf[self.end..want].copy_from_slice(bytes);
        self.end = want;
    }

    /// Returns the next complete line, or `None` when only an unterminated tail (or nothing)
    /// is left.
    #[inline]
    pub fn next_line(&mut self) -> Option<Line<'_>> {
        let (s, e, info) = self.advance()?;
        Some(Line {
            bytes: &self.buf[s..e],
            info,
        })
    }

    /// Calls `f` for every complete line currently buffered and returns how many there were.
    /// Use [`next_line`](Self::next_line) instead when the consumer may need to stop early.
    #[inline]
    pub fn for_each_line(&mut self, mut f: impl FnMut(&[u8], LineInfo)) -> usize {
        let mut n = 0;
        while let Some((s, e, info)) = self.advance() {
            f(&self.buf[s..e], info);
            n += 1;
        }
        n
    }

    /// Treats the current position as the end of the stream (EOF, rotation, shutdown).
    ///
    /// Returns any complete lines still buffered first, then the held unterminated tail once,
    /// flagged [`LineInfo::unterminated`] (a trailing CR stays in it, since no LF followed),
    /// then `None`. Call it in a loop, or once after [`next_line`](Self::next_line) returned
    /// `None`. The splitter stays usable: later bytes start a new line at
    /// [`consumed`](Self::consumed).
    pub fn finish(&mut self) -> Option<Line<'_>> {
        let (s, e, info) = match self.advance() {
            Some(r) => r,
            None => self.take_tail()?,
        };
        Some(Line {
            bytes: &self.buf[s..e],
            info,
        })
    }

    /// Drops held bytes and any pending truncation and restarts at stream `offset` (after a
    /// file was truncated or reopened). [`truncated_lines`](Self::truncated_lines) is a
    /// lifetime counter and is kept.
    pub fn reset(&mut self, offset: u64) {
        self.base = offset;
        self.start = 0;
        self.end = 0;
        self.scan = 0;
        self.lf_head = 0;
        self.lf_tail = 0;
        self.skipping = false;
    }

    /// Stream offset of the first byte not yet handed out or discarded: the place to resume
    /// from. Bytes of the unterminated tail are not consumed. While the rest of a truncated
    /// line is being dropped, the dropped bytes count as consumed, so resuming from a
    /// checkpoint taken then yields the remainder of that line as a line of its own.
    pub fn consumed(&self) -> u64 {
        self.base.wrapping_add(self.start as u64)
    }

    /// Stream offset just past the last byte read or pushed.
    pub fn received(&self) -> u64 {
        self.base.wrapping_add(self.end as u64)
    }

    /// Number of bytes held that have not been handed out or discarded yet; after draining,
    /// the length of the unterminated tail.
    pub fn pending_len(&self) -> usize {
        self.end - self.start
    }

    /// Number of lines cut to `max_line_bytes` since the splitter was created.
    pub fn truncated_lines(&self) -> u64 {
        self.truncated_lines
    }

    /// Bytes of buffer this splitter holds (its allocation, whatever it holds now).
    pub fn buffer_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Gives back memory beyond what the held bytes need (e.g. for an idle connection after a
    /// burst of long lines). The next read re-allocates.
    pub fn shrink_to_fit(&mut self) {
        self.make_room(usize::MAX);
        self.buf.truncate(self.end);
        self.buf.shrink_to_fit();
    }

    /// Core of `next_line`/`finish`: returns the line as a range of `buf` plus its info, so
    /// callers can borrow the buffer only after all bookkeeping is done.
    // Always inlined: returned through memory, the line's info is copied out with a wide
    // load that stalls on the narrow stores that just wrote it (see "Store forwarding" in
    // docs/architecture.md).
    #[inline(always)]
    fn advance(&mut self) -> Option<(usize, usize, LineInfo)> {
        if self.skipping {
            match self.next_lf() {
                Some(lf) => {
                    self.start = lf + 1;
                    self.skipping = false;
                }
                None => {
                    self.start = self.end;
                    return None;
                }
            }
        }
        let line_start = self.start;
        match self.next_lf() {
            Some(lf) => {
                self.start = lf + 1;
                let mut line_end = lf;
                if line_end > line_start && self.buf[line_end - 1] == b'\r' {
                    line_end -= 1;
                }
                let truncated = line_end - line_start > self.max_line_bytes;
                if truncated {
                    self.truncated_lines += 1;
                    line_end = line_start + self.max_line_bytes;
                }
                Some((
                    line_start,
                    line_end,
                    self.info(line_start, truncated, false),
                ))
            }
            None => {
                // `next_lf` searched everything: no LF in `start..end`.
                let held = self.end - line_start;
                // A held line of exactly max + 1 bytes ending in CR may still be a max-byte
                // line whose LF is in the next read, so it is not cut yet.
                if held <= self.max_line_bytes
                    || (held - 1 == self.max_line_bytes && self.buf[self.end - 1] == b'\r')
                {
                    return None;
                }
                self.truncated_lines += 1;
                // The rest is already known to hold no LF: drop it now so the next read
                // starts with an empty buffer.
                self.skipping = true;
                self.start = self.end;
                Some((
                    line_start,
                    line_start + self.max_line_bytes,
                    self.info(line_start, true, false),
                ))
            }
        }
    }

    /// Position of the next LF at or after `start`, or `None` once all of `start..end` is
    /// known to hold none (then `scan == end`).
    #[inline]
    fn next_lf(&mut self) -> Option<usize> {
        if self.lf_head == self.lf_tail {
            self.index_lfs();
            if self.lf_tail == 0 {
                return None;
            }
        }
        let lf = self.lfs[self.lf_head];
        self.lf_head += 1;
        Some(lf)
    }

    /// Refills the (empty) LF queue by searching forward from `scan` in 64-byte blocks until
    /// the queue might not fit another block's worth or the buffer is searched to `end`.
    fn index_lfs(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            unsafe { self.index_lfs_avx2() };
            return;
        }
        // SAFETY: without AVX2 instructions there is nothing to require.
        unsafe { self.index_lfs_with::<false>() };
    }

    /// [`index_lfs`](Self::index_lfs) compiled for AVX2: a 64-byte block is two compares
    /// instead of four, so fewer instructions per line of log data.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn index_lfs_avx2(&mut self) {
        // SAFETY: this function runs only on a CPU with AVX2 (its own contract).
        unsafe { self.index_lfs_with::<true>() };
    }

    /// The search of [`index_lfs`](Self::index_lfs), with AVX2 compares or without.
    ///
    /// # Safety
    ///
    /// With `AVX2 = true` the CPU must have AVX2.
    #[inline(always)]
    unsafe fn index_lfs_with<const AVX2: bool>(&mut self) {
        let mask = |block: &[u8; 64]| {
            #[cfg(target_arch = "x86_64")]
            if AVX2 {
                // SAFETY: the caller guarantees AVX2 when `AVX2` is true.
                return unsafe { lf_mask_avx2(block) };
            }
            lf_mask(block)
        };
        let buf = &self.buf[..self.end];
        let mut scan = self.scan;
        let mut tail = 0;
        while tail + 64 <= LF_QUEUE {
            let Some(block) = buf.get(scan..scan + 64) else {
                break;
            };
            let block: &[u8; 64] = block.try_into().expect("64-byte range");
            tail = queue_bits(&mut self.lfs, tail, scan, mask(block));
            scan += 64;
        }
        if tail + 64 <= LF_QUEUE && scan < buf.len() {
            // Zero padding contains no LF, so the short tail can use the block search too.
            let rest = &buf[scan..];
            let mut block = [0u8; 64];
            block[..rest.len()].copy_from_slice(rest);
            tail = queue_bits(&mut self.lfs, tail, scan, mask(&block));
            scan = buf.len();
        }
        self.scan = scan;
        self.lf_head = 0;
        self.lf_tail = tail;
    }

    /// Hands out the held tail once (after `advance` found no complete line).
    fn take_tail(&mut self) -> Option<(usize, usize, LineInfo)> {
        // At end of stream a pending skip is over: the next byte starts a new line.
        self.skipping = false;
        let s = self.start;
        let held = self.end - s;
        if held == 0 {
            return None;
        }
        self.start = self.end;
        let truncated = held > self.max_line_bytes;
        if truncated {
            self.truncated_lines += 1;
        }
        Some((
            s,
            s + held.min(self.max_line_bytes),
            self.info(s, truncated, true),
        ))
    }

    #[inline]
    fn info(&self, pos: usize, truncated: bool, unterminated: bool) -> LineInfo {
        LineInfo {
            offset: self.base.wrapping_add(pos as u64),
            truncated,
            unterminated,
        }
    }

    /// Moves the live bytes to the front of the buffer, adjusting `base`.
    fn rebase(&mut self) {
        if self.start == 0 {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.base = self.base.wrapping_add(self.start as u64);
        self.end -= self.start;
        self.scan -= self.start;
        for lf in &mut self.lfs[self.lf_head..self.lf_tail] {
            *lf -= self.start;
        }
        self.start = 0;
    }

    /// Compacts when that is free (nothing held) or needed to fit `incoming` bytes; called
    /// once per read/push, so a drained partial line is copied at most once per read.
    fn make_room(&mut self, incoming: usize) {
        if self.start == self.end || self.buf.len() - self.end < incoming {
            self.rebase();
        }
    }

    /// Largest buffer `read_from` grows to: a held line that may still fit plus one read.
    fn read_limit(&self) -> usize {
        self.max_line_bytes
            .saturating_add(1)
            .saturating_add(self.read_size)
    }

    /// Grows the initialised length to at least `want` (which must not exceed `limit`),
    /// geometrically so a line accumulating over many reads causes O(log n) reallocations.
    fn grow_to(&mut self, want: usize, limit: usize) {
        let len = self.buf.len();
        let new_len = want.max(len.saturating_add(len / 2).min(limit));
        self.buf.reserve_exact(new_len - len);
        self.buf.resize(new_len, 0);
    }
}

impl Default for LineSplitter {
    /// Same as `LineSplitter::new(0)`: 1 MiB lines, 64 KiB reads.
    fn default() -> Self {
        Self::new(0)
    }
}

impl fmt::Debug for LineSplitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineSplitter")
            .field("consumed", &self.consumed())
            .field("pending_len", &self.pending_len())
            .field("skipping", &self.skipping)
            .field("truncated_lines", &self.truncated_lines)
            .field("max_line_bytes", &self.max_line_bytes)
            .field("read_size", &self.read_size)
            .field("buffer_len", &self.buf.len())
            .finish()
    }
}

/// Position of the first LF in `hay`.
fn find_lf(hay: &[u8]) -> Option<usize> {
    let mut blocks = hay.chunks_exact(64);
    let mut base = 0;
    for block in &mut blocks {
        let mask = lf_mask(block.try_into().expect("64-byte chunk"));
        if mask != 0 {
            return Some(base + mask.trailing_zeros() as usize);
        }
        base += 64;
    }
    let tail = blocks.remainder().iter().position(|&b| b == b'\n');
    tail.map(|i| base + i)
}

/// Capacity of the LF queue; refills stop while fewer than 64 slots (one block) are free.
const LF_QUEUE: usize = 128;

/// Appends `base + i` for every set bit `i` of `mask` to `queue[tail..]`, returning the new tail.
/// Requires `tail + 64 <= queue.len()`.
#[inline(always)]
fn queue_bits(queue: &mut [usize; LF_QUEUE], mut tail: usize, base: usize, mask: u64) -> usize {
    // Most 64-byte blocks of log data hold at most one LF, so the first one is stored
    // unconditionally (a stale slot is overwritten later) and only further ones branch: this
    // avoids a hard-to-predict branch per block.
    queue[tail] = base + mask.trailing_zeros() as usize;
    tail += (mask != 0) as usize;
    let mut rest = mask & mask.wrapping_sub(1);
    while rest != 0 {
        queue[tail] = base + rest.trailing_zeros() as usize;
        tail += 1;
        rest &= rest - 1;
    }
    tail
}

/// Bit `i` is set iff `block[i] == b'\n'`.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn lf_mask(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is statically enabled (cfg above; it is part of the x86_64 baseline), so
    // the intrinsics are available. Each unaligned load reads 16 bytes at offsets 0, 16, 32
    // and 48 of a 64-byte array. The intrinsics keep splitting cheaper than the kernel's
    // read copy, which the safe fallback below does not (figures in docs/performance.md).
    unsafe {
        let nl = _mm_set1_epi8(b'\n' as i8);
        let p = block.as_ptr().cast::<__m128i>();
        let m = |i: usize| {
            _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(p.add(i)), nl)) as u16 as u64
        };
        m(0) | m(1) << 16 | m(2) << 32 | m(3) << 48
    }
}

/// Bit `i` is set iff `block[i] == b'\n'`, with two 32-byte compares.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn lf_mask_avx2(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_set1_epi8,
    };
    let nl = _mm256_set1_epi8(b'\n' as i8);
    let p = block.as_ptr().cast::<__m256i>();
    // SAFETY: each unaligned load reads 32 bytes at offset 0 or 32 of a 64-byte array.
    let (lo, hi) = unsafe { (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1))) };
    let m = |v| _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, nl)) as u32 as u64;
    m(lo) | m(hi) << 32
}

/// Bit `i` is set iff `block[i] == b'\n'` (portable version).
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
#[inline(always)]
fn lf_mask_portable(block: &[u8; 64]) -> u64 {
    // The byte-wise compare auto-vectorises; packing its 0/1 bytes with a multiply is the
    // fastest safe form, far ahead of a bit loop (figures in docs/performance.md).
    let mut eq = [0u8; 64];
    for (e, &b) in eq.iter_mut().zip(block) {
        *e = u8::from(b == b'\n');
    }
    let mut mask = 0;
    for (i, bytes) in eq.chunks_exact(8).enumerate() {
        let ones = u64::from_le_bytes(bytes.try_into().expect("8-byte chunk"));
        // Each byte is 0 or 1, so the products land on distinct bits with no carries:
        // byte k's bit ends up at bit 56 + k.
        mask |= (ones.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * i);
    }
    mask
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn lf_mask(block: &[u8; 64]) -> u64 {
    lf_mask_portable(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Out {
        bytes: Vec<u8>,
        offset: u64,
        truncated: bool,
        unterminated: bool,
    }

    fn out(line: Line<'_>) -> Out {
        Out {
            bytes: line.bytes.to_vec(),
            offset: line.info.offset,
            truncated: line.info.truncated,
            unterminated: line.info.unterminated,
        }
    }

    fn plain(bytes: &[u8], offset: u64) -> Out {
        Out {
            bytes: bytes.to_vec(),
            offset,
            truncated: false,
            unterminated: false,
        }
    }

    /// The whole-input definition the streaming splitter must match, whatever the chunking.
    fn reference(input: &[u8], max: usize) -> Vec<Out> {
        let mut lines = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let mut content = &rest[..i];
                    if let [head @ .., b'\r'] = content {
                        content = head;
                    }
                    lines.push(Out {
                        bytes: content[..content.len().min(max)].to_vec(),
                        offset: pos as u64,
                        truncated: content.len() > max,
                        unterminated: false,
                    });
                    pos += i + 1;
                }
                None => {
                    let n = rest.len();
                    // Cut as soon as it is known to be too long, i.e. before EOF is known,
                    // unless the last byte might be the CR of a CRLF.
                    let cut_early = n > max + 1 || (n == max + 1 && rest[n - 1] != b'\r');
                    lines.push(Out {
                        bytes: rest[..n.min(max)].to_vec(),
                        offset: pos as u64,
                        truncated: n > max,
                        unterminated: !cut_early,
                    });
                    pos = input.len();
                }
            }
        }
        lines
    }

    fn drain(s: &mut LineSplitter, into: &mut Vec<Out>) {
        while let Some(line) = s.next_line() {
            into.push(out(line));
        }
    }

    /// Takes at most `limit` lines, like a consumer stopping early for backpressure.
    fn drain_some(s: &mut LineSplitter, into: &mut Vec<Out>, limit: usize) {
        for _ in 0..limit {
            match s.next_line() {
                Some(line) => into.push(out(line)),
                None => break,
            }
        }
    }

    fn finish_all(s: &mut LineSplitter, into: &mut Vec<Out>) {
        while let Some(line) = s.finish() {
            into.push(out(line));
        }
        assert!(s.finish().is_none());
        assert_eq!(s.pending_len(), 0);
    }

    /// Pushes `chunks` in order, draining after each, then finishes; checks the bookkeeping.
    fn split_pushed(chunks: &[&[u8]], max: usize) -> Vec<Out> {
        let mut s = LineSplitter::new(max).with_read_size(16);
        let mut lines = Vec::new();
        for chunk in chunks {
            s.push(chunk);
            drain(&mut s, &mut lines);
        }
        finish_all(&mut s, &mut lines);
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        assert_eq!(s.consumed(), total as u64);
        assert_eq!(s.received(), total as u64);
        let truncated = lines.iter().filter(|l| l.truncated).count() as u64;
        assert_eq!(s.truncated_lines(), truncated);
        lines
    }

    fn check_chunks(input: &[u8], cuts: &[usize], max: usize) {
        let mut chunks = Vec::new();
        let mut prev = 0;
        for &cut in cuts {
            chunks.push(&input[prev..cut]);
            prev = cut;
        }
        chunks.push(&input[prev..]);
        assert_eq!(
            split_pushed(&chunks, max),
            reference(input, max),
            "input {:?} cuts {cuts:?} max {max}",
            String::from_utf8_lossy(input)
        );
    }

    /// Hand-rolled xorshift64* so the property tests need no dependency and are reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A reader that hands out its data in pseudo-random pieces and sometimes interrupts.
    struct ChoppyReader<'a> {
        data: &'a [u8],
        rng: Rng,
        max_piece: usize,
    }

    impl Read for ChoppyReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.rng.below(8) == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = (1 + self.rng.below(self.max_piece))
                .min(buf.len())
                .min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn random_input(rng: &mut Rng, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| match rng.below(10) {
                0 | 1 => b'\n',
                2 => b'\r',
                3 => rng.next() as u8,
                _ => b'a' + rng.below(3) as u8,
            })
            .collect()
    }

    #[test]
    fn lf_lines() {
        let lines = split_pushed(&[b"alpha\nbeta\ngamma\n"], 100);
        assert_eq!(
            lines,
            [plain(b"alpha", 0), plain(b"beta", 6), plain(b"gamma", 11)]
        );
    }

    #[test]
    fn crlf_lines() {
        let lines = split_pushed(&[b"alpha\r\nbeta\r\n"], 100);
        assert_eq!(lines, [plain(b"alpha", 0), plain(b"beta", 7)]);
    }

    #[test]
    fn mixed_terminators_and_lone_cr() {
        let lines = split_pushed(&[b"a\r\nb\nc\rd\r\n\re\n\r\r\n"], 100);
        assert_eq!(
            lines,
            [
                plain(b"a", 0),
                plain(b"b", 3),
                plain(b"c\rd", 5),
                plain(b"\re", 10),
                plain(b"\r", 13),
            ]
        );
    }

    #[test]
    fn empty_lines() {
        let lines = split_pushed(&[b"\n\r\n\nx\n\n"], 100);
        assert_eq!(
            lines,
            [
                plain(b"", 0),
                plain(b"", 1),
                plain(b"", 3),
                plain(b"x", 4),
                plain(b"", 6),
            ]
        );
    }

    #[test]
    fn every_split_position() {
        let input: &[u8] = b"ab\r\ncd\n\n\r\nef\rgh\r\r\nlonger line\nx\r\n\ry\r";
        for max in [1, 2, 3, 4, 11, 100] {
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    check_chunks(input, &[i, j], max);
                }
            }
        }
    }

    #[test]
    fn every_split_position_around_blocks() {
        // Lines that straddle the 64-byte search blocks.
        let mut input = Vec::new();
        for len in [0, 1, 62, 63, 64, 65, 127, 128, 3] {
            input.extend(std::iter::repeat_n(b'q', len));
            input.extend_from_slice(if len % 2 == 0 { b"\n" } else { b"\r\n" });
        }
        input.extend_from_slice(b"tail");
        for max in [63, 64, 65, 1000] {
            for i in 0..=input.len() {
                check_chunks(&input, &[i], max);
            }
        }
    }

    #[test]
    fn cr_split_from_lf() {
        let mut s = LineSplitter::new(100);
        s.push(b"abc\r");
        assert!(s.next_line().is_none());
        assert_eq!(s.pending_len(), 4);
        s.push(b"\nd");
        assert_eq!(out(s.next_line().unwrap()), plain(b"abc", 0));
        assert!(s.next_line().is_none());
        assert_eq!(s.consumed(), 5);
        assert_eq!(s.pending_len(), 1);
    }

    #[test]
    fn line_of_exactly_max_with_crlf_split_before_lf() {
        // `abc\r` is max + 1 bytes: it must wait for the next byte before deciding.
        assert_eq!(split_pushed(&[b"abc\r", b"\n"], 3), [plain(b"abc", 0)]);
        let cut = split_pushed(&[b"abc\r", b"x\nok\n"], 3);
        assert_eq!(cut[0].bytes, b"abc");
        assert!(cut[0].truncated);
        assert_eq!(cut[1], plain(b"ok", 6));
        let at_eof = split_pushed(&[b"abc\r"], 3);
        assert_eq!(
            at_eof,
            [Out {
                bytes: b"abc".to_vec(),
                offset: 0,
                truncated: true,
                unterminated: true
            }]
        );
    }

    #[test]
    fn offsets_across_compactions() {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for i in 0..2000usize {
            let offset = input.len() as u64;
            let line: Vec<u8> = (0..i % 97).map(|j| b'a' + (j % 26) as u8).collect();
            input.extend_from_slice(&line);
            input.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
            expected.push(plain(&line, offset));
        }
        for read_size in [1, 7, 64, 100, 4096] {
            let mut s = LineSplitter::new(1000).with_read_size(read_size);
            let mut reader = ChoppyReader {
                data: &input,
                rng: Rng(read_size as u64),
                max_piece: 200,
            };
            let mut lines = Vec::new();
            while s.read_from(&mut reader).unwrap() != 0 {
                drain(&mut s, &mut lines);
                // Drained: consumed up to just after the last LF received, nothing beyond it.
                let (consumed, received) = (s.consumed() as usize, s.received() as usize);
                assert!(consumed == 0 || input[consumed - 1] == b'\n');
                assert!(!input[consumed..received].contains(&b'\n'));
                assert_eq!(received - consumed, s.pending_len());
            }
            finish_all(&mut s, &mut lines);
            assert_eq!(lines, expected, "read_size {read_size}");
            assert_eq!(s.consumed(), input.len() as u64);
        }
    }

    #[test]
    fn over_long_line_cut_and_rest_skipped_across_reads() {
        let mut s = LineSplitter::new(4);
        let mut lines = Vec::new();
        for chunk in [&b"ok\nabcdef"[..], b"ghij", b"klm", b"n\r\nnext\n"] {
            s.push(chunk);
            drain(&mut s, &mut lines);
            assert!(s.pending_len() <= 5);
        }
        assert_eq!(
            lines,
            [
                plain(b"ok", 0),
                Out {
                    bytes: b"abcd".to_vec(),
                    offset: 3,
                    truncated: true,
                    unterminated: false
                },
                plain(b"next", 19),
            ]
        );
        assert_eq!(s.truncated_lines(), 1);
        assert_eq!(s.consumed(), 24);
    }

    #[test]
    fn over_long_complete_line_in_one_read() {
        let lines = split_pushed(&[b"abcdefgh\r\nxy\n"], 4);
        assert_eq!(lines[0].bytes, b"abcd");
        assert!(lines[0].truncated);
        assert_eq!(lines[1], plain(b"xy", 10));
    }

    #[test]
    fn skip_ends_exactly_at_read_boundary() {
        // The skipped line's LF is the last byte of one read...
        let lines = split_pushed(&[b"abcdefgh", b"ijk\n", b"next\n"], 4);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].truncated);
        assert_eq!(lines[1], plain(b"next", 12));
        // ...or the first byte of the next one.
        let lines = split_pushed(&[b"abcdefgh", b"\nnext\n"], 4);
        assert_eq!(lines[1], plain(b"next", 9));
        // Same through read_from.
        let mut s = LineSplitter::new(4).with_read_size(8);
        let mut input: &[u8] = b"abcdefghijklmno\nnext\n";
        let mut lines = Vec::new();
        while s.read_from(&mut input).unwrap() != 0 {
            drain(&mut s, &mut lines);
        }
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], plain(b"next", 16));
        assert_eq!(s.truncated_lines(), 1);
    }

    #[test]
    fn huge_line_without_newline_stays_bounded() {
        let max = 1 << 20;
        let read_size = 64 << 10;
        let chunk = vec![b'x'; read_size];
        let mut pushed = LineSplitter::new(max).with_read_size(read_size);
        let mut read = LineSplitter::new(max).with_read_size(read_size);
        let mut lines = Vec::new();
        for _ in 0..160 {
            // 10 MiB in total.
            pushed.push(&chunk);
            drain(&mut pushed, &mut lines);
            let n = read.read_from(&mut &chunk[..]).unwrap();
            assert_eq!(n, read_size);
            drain(&mut read, &mut lines);
            for s in [&pushed, &read] {
                assert!(s.buf.capacity() <= max + 1 + read_size, "{s:?}");
            }
        }
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.bytes.len() == max && l.truncated));
        for s in [&mut pushed, &mut read] {
            assert_eq!(s.consumed(), 160 * read_size as u64);
            assert!(s.finish().is_none());
            s.push(b"after\n");
            assert_eq!(
                out(s.next_line().unwrap()),
                plain(b"after", 160 * read_size as u64)
            );
            assert_eq!(s.truncated_lines(), 1);
        }
    }

    #[test]
    fn partial_last_line_via_finish() {
        let mut s = LineSplitter::new(100);
        s.push(b"one\ntwo");
        assert_eq!(out(s.next_line().unwrap()), plain(b"one", 0));
        assert!(s.next_line().is_none());
        assert_eq!(s.pending_len(), 3);
        assert_eq!(s.consumed(), 4);
        assert_eq!(
            out(s.finish().unwrap()),
            Out {
                bytes: b"two".to_vec(),
                offset: 4,
                truncated: false,
                unterminated: true
            }
        );
        assert!(s.finish().is_none());
        assert_eq!(s.consumed(), 7);
        // The stream may go on (e.g. a tail supply that finished at a pause).
        s.push(b"three\n");
        assert_eq!(out(s.next_line().unwrap()), plain(b"three", 7));
    }

    #[test]
    fn finish_returns_undrained_lines_first() {
        let mut s = LineSplitter::new(100);
        s.push(b"a\nb\r\nc");
        let mut lines = Vec::new();
        finish_all(&mut s, &mut lines);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], plain(b"b", 2));
        assert!(lines[2].unterminated);
    }

    #[test]
    fn finish_while_skipping_drops_the_rest() {
        let mut s = LineSplitter::new(2);
        s.push(b"abcdef");
        assert!(s.next_line().unwrap().info.truncated);
        assert!(s.finish().is_none());
        s.push(b"gh\n");
        assert_eq!(out(s.next_line().unwrap()), plain(b"gh", 6));
    }

    #[test]
    fn reset_drops_held_bytes() {
        let mut s = LineSplitter::new(3);
        s.push(b"abc\ndefgh");
        assert_eq!(out(s.next_line().unwrap()), plain(b"abc", 0));
        assert!(s.next_line().unwrap().info.truncated);
        s.push(b"ij");
        s.reset(1000);
        assert_eq!(s.pending_len(), 0);
        assert_eq!(s.consumed(), 1000);
        s.push(b"xy\nz");
        let mut lines = Vec::new();
        finish_all(&mut s, &mut lines);
        assert_eq!(lines[0], plain(b"xy", 1000));
        assert_eq!(lines[1].offset, 1003);
        assert_eq!(s.consumed(), 1004);
        assert_eq!(s.truncated_lines(), 1);
        // Reset with undrained lines queued.
        s.push(b"p\nq\nr\n");
        assert!(s.next_line().is_some());
        s.reset(5);
        s.push(b"s\n");
        assert_eq!(out(s.next_line().unwrap()), plain(b"s", 5));
        assert!(s.next_line().is_none());
    }

    #[test]
    fn binary_garbage() {
        let mut rng = Rng(0x5eed);
        let input: Vec<u8> = (0..200_000).map(|_| rng.next() as u8).collect();
        for max in [1, 100, 1000] {
            let mut cuts: Vec<usize> = (0..300).map(|_| rng.below(input.len())).collect();
            cuts.sort_unstable();
            check_chunks(&input, &cuts, max);
        }
    }

    #[test]
    fn matches_reference_on_random_input() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut full_hits = 0;
        for case in 0..3000 {
            let len = rng.below(if case % 10 == 0 { 3000 } else { 300 });
            let input = random_input(&mut rng, len);
            let max = match rng.below(4) {
                0 => 1 + rng.below(3),
                1 => 1 + rng.below(20),
                2 => 60 + rng.below(10),
                _ => 1000,
            };
            let read_size = 1 + rng.below(40);
            let use_reader = rng.below(2) == 0;
            let drain_every = 1 + rng.below(3);
            // Sometimes stop draining early, leaving found LFs queued across the next read.
            let drain_limit = if rng.below(3) == 0 {
                rng.below(4)
            } else {
                usize::MAX
            };
            let mut s = LineSplitter::new(max).with_read_size(read_size);
            let mut lines = Vec::new();
            if use_reader {
                let mut reader = ChoppyReader {
                    data: &input,
                    rng: Rng(rng.next() | 1),
                    max_piece: 1 + rng.below(50),
                };
                let mut reads = 0;
                loop {
                    match s.read_from(&mut reader) {
                        Ok(0) => break,
                        Ok(_) => {}
                        // Reading without draining is allowed to fill the buffer up.
                        Err(e) if e.kind() == io::ErrorKind::OutOfMemory => {
                            assert!(s.pending_len() > max + 1);
                            full_hits += 1;
                            drain(&mut s, &mut lines);
                            continue;
                        }
                        Err(e) => panic!("{e}"),
                    }
                    reads += 1;
                    if reads % drain_every == 0 {
                        drain_some(&mut s, &mut lines, drain_limit);
                    }
                    assert!(s.buf.len() <= s.read_limit());
                }
            } else {
                let mut rest = &input[..];
                let mut pushes = 0;
                while !rest.is_empty() {
                    let n = (1 + rng.below(read_size * 2)).min(rest.len());
                    s.push(&rest[..n]);
                    rest = &rest[n..];
                    pushes += 1;
                    if pushes % drain_every == 0 {
                        drain_some(&mut s, &mut lines, drain_limit);
                    }
                }
            }
            drain(&mut s, &mut lines);
            finish_all(&mut s, &mut lines);
            assert_eq!(
                lines,
                reference(&input, max),
                "case {case} max {max} read_size {read_size} reader {use_reader}"
            );
            assert_eq!(s.consumed(), input.len() as u64);
            let truncated = lines.iter().filter(|l| l.truncated).count() as u64;
            assert_eq!(s.truncated_lines(), truncated);
        }
        assert!(full_hits > 0, "the buffer-full path was not exercised");
    }

    #[test]
    fn for_each_line_visits_all_complete_lines() {
        let mut s = LineSplitter::new(3);
        s.push(b"a\nbcdef\r\ng");
        let mut seen = Vec::new();
        let n = s.for_each_line(|bytes, info| seen.push((bytes.to_vec(), info)));
        assert_eq!(n, 2);
        assert_eq!(seen[0].0, b"a");
        assert_eq!(seen[1].0, b"bcd");
        assert!(seen[1].1.truncated);
        assert_eq!(seen[1].1.offset, 2);
        assert_eq!(s.pending_len(), 1);
    }

    #[test]
    fn read_errors_pass_through() {
        struct Failing(io::ErrorKind);
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(self.0.into())
            }
        }
        let mut s = LineSplitter::new(10);
        s.push(b"ab");
        let err = s.read_from(&mut Failing(io::ErrorKind::WouldBlock));
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(s.pending_len(), 2);
        s.push(b"\n");
        assert_eq!(out(s.next_line().unwrap()), plain(b"ab", 0));
    }

    #[test]
    fn reading_without_draining_is_bounded() {
        let mut s = LineSplitter::new(10).with_read_size(8);
        let mut endless = std::iter::repeat(b"ab\n").flatten().copied();
        let mut full = None;
        for _ in 0..100 {
            let chunk: Vec<u8> = endless.by_ref().take(8).collect();
            match s.read_from(&mut &chunk[..]) {
                Ok(_) => assert!(s.buf.len() <= s.read_limit()),
                Err(e) => {
                    full = Some(e.kind());
                    break;
                }
            }
        }
        assert_eq!(full, Some(io::ErrorKind::OutOfMemory));
        let mut lines = Vec::new();
        drain(&mut s, &mut lines);
        assert!(lines.iter().all(|l| l.bytes == b"ab"));
        assert_eq!(s.read_from(&mut &b"cd\n"[..]).unwrap(), 3);
    }

    #[test]
    fn lying_reader_cannot_break_invariants() {
        struct Liar;
        impl Read for Liar {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(b'\n');
                Ok(buf.len() + 1000)
            }
        }
        let mut s = LineSplitter::new(10).with_read_size(4);
        assert_eq!(s.read_from(&mut Liar).unwrap(), 4);
        let mut lines = Vec::new();
        drain(&mut s, &mut lines);
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn zero_settings_mean_defaults() {
        let s = LineSplitter::new(0).with_read_size(0);
        assert_eq!(s.max_line_bytes(), LineSplitter::DEFAULT_MAX_LINE_BYTES);
        assert_eq!(s.read_size, LineSplitter::DEFAULT_READ_SIZE);
        let s = LineSplitter::new(usize::MAX).with_read_size(usize::MAX);
        assert_eq!(s.read_size, LineSplitter::MAX_READ_SIZE);
        assert_eq!(s.read_limit(), usize::MAX);
        // No arithmetic overflows with an effectively unlimited line length.
        let mut s = s;
        s.push(b"a\r\nb");
        let mut lines = Vec::new();
        finish_all(&mut s, &mut lines);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].offset, 3);
        assert_eq!(
            LineSplitter::default().max_line_bytes(),
            LineSplitter::DEFAULT_MAX_LINE_BYTES
        );
    }

    #[test]
    fn shrink_to_fit_keeps_pending_bytes() {
        let mut s = LineSplitter::new(1 << 16).with_read_size(1 << 16);
        s.push(&vec![b'x'; 100_000]);
        s.push(b"\npartial");
        drain(&mut s, &mut Vec::new());
        s.shrink_to_fit();
        assert!(s.buf.capacity() < 1024);
        s.push(b" line\n");
        assert_eq!(out(s.next_line().unwrap()), plain(b"partial line", 100_001));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn lf_search_is_the_same_with_and_without_avx2() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let mut rng = Rng(7);
        for round in 0..300 {
            // Dense and sparse LFs, lengths around the 64-byte blocks and the queue size.
            let len = rng.below(700);
            let every = 1 + round % 90;
            let bytes: Vec<u8> = (0..len)
                .map(|_| if rng.below(every) == 0 { b'\n' } else { b'x' })
                .collect();
            let mut s = LineSplitter::new(1 << 20);
            s.push(&bytes);
            let mut queued = Vec::new();
            loop {
                let (scan, head) = (s.scan, s.lf_head);
                // SAFETY: the SSE2 path needs nothing beyond x86_64.
                unsafe { s.index_lfs_with::<false>() };
                let sse2 = (s.scan, s.lfs[..s.lf_tail].to_vec());
                (s.scan, s.lf_head) = (scan, head);
                // SAFETY: the CPU has AVX2 (checked above).
                unsafe { s.index_lfs_avx2() };
                assert_eq!((s.scan, s.lfs[..s.lf_tail].to_vec()), sse2, "round {round}");
                if s.lf_tail == 0 {
                    break;
                }
                queued.extend_from_slice(&s.lfs[..s.lf_tail]);
                s.lf_head = s.lf_tail;
            }
            let expected: Vec<usize> = (0..len).filter(|&i| bytes[i] == b'\n').collect();
            assert_eq!(queued, expected, "round {round}");
        }
    }

    #[test]
    fn lf_mask_matches_naive() {
        let naive =
            |block: &[u8; 64]| (0..64).fold(0u64, |m, i| m | u64::from(block[i] == b'\n') << i);
        let mut rng = Rng(99);
        // Bytes around LF and with the high bit set are the ones a SWAR trick could confuse.
        let alphabet = [b'\n', 0x0b, 0x09, 0x8a, 0x0a ^ 0x80, 0, 0xff, b'a', 0x01];
        for _ in 0..20_000 {
            let mut block = [0u8; 64];
            for b in &mut block {
                *b = alphabet[rng.below(alphabet.len())];
            }
            assert_eq!(lf_mask(&block), naive(&block));
            assert_eq!(lf_mask_portable(&block), naive(&block));
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                assert_eq!(unsafe { lf_mask_avx2(&block) }, naive(&block));
            }
        }
        for i in 0..64 {
            let mut block = [b'\n'; 64];
            block[i] = b'x';
            assert_eq!(lf_mask_portable(&block), !(1 << i));
            assert_eq!(lf_mask(&block), !(1 << i));
        }
        assert_eq!(find_lf(&[b'x'; 200]), None);
        let mut hay = vec![b'x'; 200];
        hay[130] = b'\n';
        hay[199] = b'\n';
        assert_eq!(find_lf(&hay), Some(130));
        assert_eq!(find_lf(&hay[131..]), Some(68));
    }
}
