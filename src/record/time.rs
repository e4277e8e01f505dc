//! [`Timestamp`], a point in time with its UTC offset, and its RFC 3339 writer.

use super::json_render::{DIGIT_PAIRS, extend_padded, write_i64, write_u64};
use std::cell::Cell;
use std::fmt;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

/// A point in time, with the UTC offset it was written with so it renders back the same way.
///
/// Ordering is chronological, then by offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds past `secs`, below 1e9.
    pub nanos: u32,
    /// Offset from UTC in minutes, used only for rendering.
    pub offset_min: i16,
}

impl Timestamp {
    /// A timestamp from its parts.
    pub fn new(secs: i64, nanos: u32, offset_min: i16) -> Timestamp {
        Timestamp {
            secs,
            nanos,
            offset_min,
        }
    }

    /// The current time, in UTC.
    pub fn now() -> Timestamp {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp::new(
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
                0,
            ),
            // A clock set before 1970: count backwards.
            Err(e) => {
                let d = e.duration();
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                match d.subsec_nanos() {
                    0 => Timestamp::new(-secs, 0, 0),
                    n => Timestamp::new(-secs - 1, 1_000_000_000 - n, 0),
                }
            }
        }
    }

    /// Appends the RFC 3339 form, e.g. `2026-11-27T11:44:37.123+01:00`.
    ///
    /// Fractional seconds appear only when `nanos` is non-zero, as 3, 6 or 9 digits, whichever
    /// is shortest exact. Years outside 0000..=9999 are written in full, which RFC 3339
    /// cannot express but which keeps the output honest.
    pub fn write_rfc3339(&self, out: &mut Vec<u8>) {
        // Records of one read share their `received_at`, and log times repeat within a
        // second: the last rendering on this thread is kept and copied when it matches.
        type Last = (Timestamp, [u8; 40], u8);
        thread_local! {
            static LAST: Cell<Last> = const {
                Cell::new((Timestamp { secs: i64::MIN, nanos: 0, offset_min: 0 }, [0; 40], 0))
            };
        }
        let last = LAST.with(Cell::get);
        if last.2 != 0 && last.0 == *self {
            extend_padded(out, &last.1, usize::from(last.2));
            return;
        }
        let start = out.len();
        self.write_rfc3339_uncached(out);
        if let Some(text) = out.get(start..).filter(|t| t.len() <= 40) {
            let mut bytes = [0; 40];
            bytes[..text.len()].copy_from_slice(text);
            LAST.with(|c| c.set((*self, bytes, text.len() as u8)));
        }
    }

    fn write_rfc3339_uncached(&self, out: &mut Vec<u8>) {
        // Assembled a word at a time in registers and stored whole: byte-by-byte pushes each
        // check the Vec's capacity, and a stack buffer read back as vectors stalls
        // (docs/architecture.md#store-forwarding); either costs more than the date arithmetic.
        let local = self.secs.saturating_add(i64::from(self.offset_min) * 60);
        let days = local.div_euclid(86_400);
        let sod = local.rem_euclid(86_400) as u32;
        let (y, m, d) = crate::record::timefmt::civil_from_days(days);
        let (hh, mm, ss) = (sod / 3600, sod / 60 % 60, sod % 60);
        let dash = u64::from(b'-');
        let month_day = dash | pair(m) << 8 | dash << 24 | pair(d) << 32 | u64::from(b'T') << 48;
        if (0..=9999).contains(&y) {
            let y = y as u32;
            put_word(
                out,
                pair(y / 100) | pair(y % 100) << 16 | month_day << 32,
                8,
            );
            put_word(out, month_day >> 32, 3);
        } else {
            // Beyond RFC 3339's four-digit years; written in full rather than truncated.
            write_i64(out, y);
            put_word(out, month_day, 7);
        }
        let colon = u64::from(b':');
        put_word(
            out,
            pair(hh) | colon << 16 | pair(mm) << 24 | colon << 40 | pair(ss) << 48,
            8,
        );
        let nanos = self.nanos.min(999_999_999);
        if nanos != 0 {
            let dot = u64::from(b'.');
            if nanos.is_multiple_of(1_000_000) {
                put_word(out, dot | digits3(nanos / 1_000_000) << 8, 4);
            } else if nanos.is_multiple_of(1000) {
                let us = nanos / 1000;
                put_word(
                    out,
                    dot | digits3(us / 1000) << 8 | digits3(us % 1000) << 32,
                    7,
                );
            } else {
                put_word(out, dot | digits3(nanos / 1_000_000) << 8, 4);
                put_word(
                    out,
                    digits3(nanos / 1000 % 1000) | digits3(nanos % 1000) << 24,
                    6,
                );
            }
        }
        let off = u32::from(self.offset_min.unsigned_abs());
        let sign = u64::from(if self.offset_min < 0 { b'-' } else { b'+' });
        match off {
            0 => out.push(b'Z'),
            1..6000 => put_word(
                out,
                sign | pair(off / 60) << 8 | colon << 24 | pair(off % 60) << 32,
                6,
            ),
            // Beyond RFC 3339's two-digit hours; written in full rather than truncated.
            _ => {
                put_word(out, sign, 1);
                write_u64(out, u64::from(off / 60));
                put_word(out, colon | pair(off % 60) << 8, 3);
            }
        }
    }
}

/// `n % 100` as two ASCII digits in the low bytes of a little-endian word.
#[inline]
fn pair(n: u32) -> u64 {
    let i = (n % 100) as usize * 2;
    u64::from(DIGIT_PAIRS[i]) | u64::from(DIGIT_PAIRS[i + 1]) << 8
}

/// `n % 1000` as three ASCII digits in the low bytes of a little-endian word.
#[inline]
fn digits3(n: u32) -> u64 {
    u64::from(b'0' + (n / 100 % 10) as u8) | pair(n) << 8
}

/// Appends the first `len` (at most 8) bytes of the little-endian word `w`.
#[inline]
pub(super) fn put_word(out: &mut Vec<u8>, w: u64, len: usize) {
    extend_padded(out, &w.to_le_bytes(), len);
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(35);
        self.write_rfc3339(&mut buf);
        f.write_str(&String::from_utf8_lossy(&buf))
    }
}
