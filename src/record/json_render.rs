//! JSON rendering: string escaping and number writing.

use std::io::Write as _;

use super::time::put_word;

/// Per byte: 0 if it can be copied into a JSON string as is, else the letter of its
/// escape (`u` for `\u00XX`). Also marks the bytes the parser must stop at in a string.
pub(super) const ESCAPE: [u8; 256] = {
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

pub(super) const TOO_MANY_KEYS: &str =
    "too many distinct field names in the input (see MAX_INPUT_KEYS)";

/// Where [`scan`] stopped.
pub(super) struct Scan {
    /// Index of the first control character, `"` or `\`, or the length if none.
    pub(super) at: usize,
    /// Whether every byte scanned before `at` was ASCII.
    pub(super) ascii: bool,
}

/// Finds the first control character, `"` or `\` in `s` at or after `i`, noting on the way
/// whether all bytes before it are ASCII.
///
/// Most strings need no escaping at all, so this scan is most of the cost of rendering and
/// of parsing strings; it checks 16 bytes at a time with SSE2 where available (part of the
/// x86-64 baseline) and with plain integer arithmetic elsewhere. Callers that ignore
/// `ascii` get that part optimised away once this is inlined.
#[inline]
pub(super) fn scan(s: &[u8], mut i: usize) -> Scan {
    // Bits of non-ASCII bytes seen; only whether it is zero matters.
    let mut high = 0;
    while let Some(chunk) = s.get(i..).and_then(<[u8]>::first_chunk::<16>) {
        let (special, h) = masks16(chunk);
        if special != 0 {
            let at = special.trailing_zeros();
            return Scan {
                at: i + at as usize,
                ascii: high | (h & ((1 << at) - 1)) == 0,
            };
        }
        high |= h;
        i += 16;
    }
    if i >= s.len() {
        return Scan {
            at: s.len(),
            ascii: high == 0,
        };
    }
    match s.last_chunk::<16>() {
        // Rescan the last 16 bytes, ignoring those before `i`: already scanned, or before
        // where the caller asked to start.
        Some(chunk) => {
            let base = s.len() - 16;
            let keep = u32::MAX << (i - base);
            let (special, h) = masks16(chunk);
            let end = (special & keep).trailing_zeros().min(16);
            Scan {
                at: base + end as usize,
                ascii: high | (h & keep & ((1 << end) - 1)) == 0,
            }
        }
        // Short strings: byte by byte beats assembling a padded chunk.
        None => {
            let tail = s.get(i..).unwrap_or_default();
            let n = tail
                .iter()
                .position(|&b| ESCAPE[usize::from(b)] != 0)
                .unwrap_or(tail.len());
            Scan {
                at: i + n,
                ascii: high == 0 && tail.get(..n).is_some_and(<[u8]>::is_ascii),
            }
        }
    }
}

/// Index of the first control character, `"` or `\` in `s` at or after `i`, or `s.len()`.
#[inline]
pub(super) fn find_special(s: &[u8], i: usize) -> usize {
    scan(s, i).at
}

/// Bit `n` of the first mask is set when `chunk[n]` is a control character, `"` or `\`; of
/// the second, when `chunk[n]` is not ASCII.
#[inline]
pub(super) fn masks16(chunk: &[u8; 16]) -> (u32, u32) {
    let [lo, hi] = [0, 8].map(|at| {
        let mut w = [0; 8];
        w.copy_from_slice(&chunk[at..at + 8]);
        u64::from_le_bytes(w)
    });
    masks(lo, hi)
}

/// [`masks16`] of the 16 bytes `lo` then `hi`, each little-endian.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
pub(super) fn masks(lo: u64, hi: u64) -> (u32, u32) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8,
    };
    // SAFETY: these intrinsics need only SSE2, which the `cfg` above guarantees is enabled
    // for the whole build, and they touch no memory. (Taking two integers rather than a
    // pointer for `_mm_loadu_si128` keeps callers in safe code; for bytes in memory the
    // compiler still emits one vector load.) SSE2 rather than `masks_swar` everywhere: it
    // takes far fewer instructions, and this scan is most of rendering and of parsing text.
    unsafe {
        let v = _mm_set_epi64x(hi as i64, lo as i64);
        // `max(v, 0x1f) == 0x1f` is an unsigned `v <= 0x1f`, which SSE2 lacks.
        let ctl = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        let special = _mm_or_si128(_mm_or_si128(ctl, quote), backslash);
        (
            _mm_movemask_epi8(special) as u32,
            _mm_movemask_epi8(v) as u32,
        )
    }
}

/// Portable version of the SSE2 `masks`, with plain integer arithmetic.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
#[inline]
pub(super) fn masks_swar(lo: u64, hi: u64) -> (u32, u32) {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // High bit of each byte of `w` that is zero. Adding 0x7f to the low seven bits sets a
    // byte's high bit unless they are all zero, and never carries into the next byte.
    let zero = |w: u64| !(((w & LOW7) + LOW7) | w) & HIGHS;
    // Gathers the high bits of the eight bytes into the low eight bits.
    let gather = |m: u64| ((m >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32;
    let word = |w: u64| {
        // Below 0x20: the low seven bits plus 0x60 stay below 0x80, and the high bit is clear.
        let ctl = !(((w & LOW7) + ONES * 0x60) | w) & HIGHS;
        let quote = zero(w ^ (ONES * u64::from(b'"')));
        let backslash = zero(w ^ (ONES * u64::from(b'\\')));
        (gather(ctl | quote | backslash), gather(w & HIGHS))
    };
    let ((s0, h0), (s1, h1)) = (word(lo), word(hi));
    (s0 | s1 << 8, h0 | h1 << 8)
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
pub(super) use masks_swar as masks;

/// The bytes of `s`, at most 16, as two little-endian words padded with spaces.
///
/// Assembled in registers from overlapping fixed-size loads: copying into a stack buffer
/// and reading it back as one vector stalls (docs/architecture.md#store-forwarding), and a
/// short copy of variable length is a call to `memcpy`.
#[inline]
pub(super) fn short_words(s: &[u8]) -> (u64, u64) {
    const SPACES: u64 = 0x2020_2020_2020_2020;
    let n = s.len() as u32;
    if let (Some(head), Some(tail)) = (s.first_chunk::<8>(), s.last_chunk::<8>()) {
        // `tail` is s[n-8..n]; shifting out its overlap with `head` leaves s[8..n].
        let rest = u64::from_le_bytes(*tail)
            .checked_shr(8 * (16 - n))
            .unwrap_or(0);
        let pad = SPACES.checked_shl(8 * (n - 8)).unwrap_or(0);
        (u64::from_le_bytes(*head), rest | pad)
    } else if let (Some(head), Some(tail)) = (s.first_chunk::<4>(), s.last_chunk::<4>()) {
        // Overlapping bytes are equal, so or-ing them is harmless.
        let head = u64::from(u32::from_le_bytes(*head));
        let tail = u64::from(u32::from_le_bytes(*tail)) << (8 * (n - 4));
        (head | tail | SPACES << (8 * n), SPACES)
    } else {
        let w = s.iter().rev().fold(0, |w, &b| w << 8 | u64::from(b));
        (w | SPACES << (8 * n), SPACES)
    }
}

/// Appends `s` as the body of a JSON string, escaping only what RFC 8259 requires.
#[inline]
fn write_escaped_body(out: &mut Vec<u8>, s: &[u8]) {
    match find_special(s, 0) {
        i if i == s.len() => out.extend_from_slice(s),
        i => write_escaped_from(out, s, i),
    }
}

/// Appends `s` as the body of a JSON string, where `s[i]` is the first byte to escape.
/// Kept out of line so the common no-escape case stays small enough to inline.
#[inline(never)]
fn write_escaped_from(out: &mut Vec<u8>, s: &[u8], mut i: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut run = 0;
    loop {
        out.extend_from_slice(s.get(run..i).unwrap_or_default());
        let Some(&b) = s.get(i) else {
            return;
        };
        match ESCAPE[usize::from(b)] {
            b'u' => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            e => out.extend_from_slice(&[b'\\', e]),
        }
        run = i + 1;
        i = find_special(s, run);
    }
}

/// Appends valid UTF-8 as a quoted JSON string.
#[inline]
pub(super) fn write_escaped(out: &mut Vec<u8>, s: &[u8]) {
    // Most values in logs are short: check those for bytes to escape in one go, and append
    // them with their quotes as two or three whole words.
    if s.len() <= 16 {
        let (lo, hi) = short_words(s);
        if masks(lo, hi).0 == 0 {
            const SPACES: u64 = 0x2020_2020_2020_2020;
            let mut words = [
                lo << 8 | u64::from(b'"'),
                hi << 8 | lo >> 56,
                hi >> 56 | SPACES << 8,
            ];
            // The closing quote goes over the padding: a space with one bit flipped.
            let close = s.len() + 1;
            words[close / 8] ^= 0x02 << (8 * (close % 8));
            let end = out.len() + s.len() + 2;
            out.reserve(24);
            let [w0, w1, w2] = words;
            out.extend_from_slice(&w0.to_le_bytes());
            out.extend_from_slice(&w1.to_le_bytes());
            if s.len() > 14 {
                out.extend_from_slice(&w2.to_le_bytes());
            }
            out.truncate(end);
            return;
        }
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    write_escaped_body(out, s);
    out.push(b'"');
}

/// Appends `bytes[..len]` by appending all of `bytes` and truncating: a fixed-size copy is a
/// few vector moves, where a short variable-length one is a call to `memcpy`.
#[inline(always)]
pub(super) fn extend_padded<const N: usize>(out: &mut Vec<u8>, bytes: &[u8; N], len: usize) {
    let end = out.len() + len.min(N);
    out.extend_from_slice(bytes);
    out.truncate(end);
}

/// Appends arbitrary bytes as a quoted JSON string, with each invalid UTF-8 sequence
/// replaced by U+FFFD (as `String::from_utf8_lossy` does), so the output is always valid.
pub(super) fn write_escaped_lossy(out: &mut Vec<u8>, b: &[u8]) {
    // `from_utf8` checks ASCII a word at a time, where `utf8_chunks` goes byte by byte, and
    // raw log lines are nearly always valid: the quick check first is the common path.
    if std::str::from_utf8(b).is_ok() {
        write_escaped(out, b);
        return;
    }
    out.push(b'"');
    for chunk in b.utf8_chunks() {
        write_escaped_body(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
    out.push(b'"');
}

/// Appends arbitrary bytes as the inside of a JSON string (no quotes): what JSON requires
/// is escaped and invalid UTF-8 becomes U+FFFD, so text put between two quotes in a
/// template stays valid JSON whatever the value holds.
pub fn write_json_str_body(out: &mut Vec<u8>, b: &[u8]) {
    if std::str::from_utf8(b).is_ok() {
        write_escaped_body(out, b);
        return;
    }
    for chunk in b.utf8_chunks() {
        write_escaped_body(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
}

/// `"00" "01" … "99"`, for writing integers two digits at a time.
pub(super) const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Appends `n` in decimal.
#[inline]
pub(super) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    // Up to eight digits fit a word built in a register (see `write_rfc3339`).
    if n < 100_000_000 {
        let mut w = 0;
        let mut len = 0;
        loop {
            w = w << 8 | (n % 10 + u64::from(b'0'));
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        put_word(out, w, len);
        return;
    }
    let digits = n.checked_ilog10().map_or(1, |d| d as usize + 1);
    let mut buf = [0u8; 20];
    let mut i = digits;
    while n >= 100 {
        let d = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    }
    if n >= 10 {
        let d = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DIGIT_PAIRS[d..d + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    extend_padded(out, &buf, digits);
}

/// Appends `n` in decimal.
#[inline]
pub(super) fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Appends a float as the shortest text that parses back to it, `null` if non-finite.
pub(super) fn write_f64(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        // `{:?}` is shortest-round-trip, keeps a `.0` on integral values (so they parse back
        // as floats) and switches to exponent form for very large or small magnitudes; all
        // of its finite outputs are valid JSON numbers. Writing to a Vec cannot fail.
        let _ = write!(out, "{f:?}");
    } else {
        out.extend_from_slice(b"null");
    }
}
