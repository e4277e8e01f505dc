//! IP address text: a fast reader ([`parse_ip`]) and writer ([`write_ip`]).

use super::json_render::extend_padded;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;

/// Parses an IP address as [`IpAddr`]'s `FromStr` does (dotted quad without leading
/// zeros, or any IPv6 text form), from bytes. Dotted quads, most addresses in logs, are
/// read by hand at a fraction of the standard parser's cost.
pub fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = parse_ipv4(text) {
        return Some(IpAddr::V4(v4));
    }
    if let Some(v6) = parse_ipv6(text) {
        return Some(IpAddr::V6(v6));
    }
    // Forms the fast paths leave out (an IPv6 address ending in a dotted quad), and the
    // errors.
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Plain IPv6 text (hex groups, at most one `::`) as `Ipv6Addr::from_str` reads it, at
/// a tenth of its cost; `None` for anything else, including the forms with an embedded
/// dotted quad, which [`parse_ip`] leaves to the standard parser.
fn parse_ipv6(text: &[u8]) -> Option<Ipv6Addr> {
    if !(2..=39).contains(&text.len()) {
        return None;
    }
    let mut groups = [0u16; 8];
    let (mut n, mut gap) = (0, None);
    let mut i = 0;
    if text.starts_with(b"::") {
        gap = Some(0);
        i = 2;
    }
    while i < text.len() {
        let start = i;
        let mut v = 0u16;
        while let Some(d) = text.get(i).and_then(|&b| char::from(b).to_digit(16)) {
            if i - start == 4 {
                return None;
            }
            v = v << 4 | d as u16;
            i += 1;
        }
        if i == start || n == 8 {
            return None;
        }
        groups[n] = v;
        n += 1;
        match text.get(i..) {
            Some([]) => break,
            Some([b':', b':', ..]) if gap.is_none() => {
                gap = Some(n);
                i += 2;
            }
            Some([b':', _, ..]) => i += 1,
            _ => return None,
        }
    }
    match gap {
        // `::` stands for at least one group of zeros.
        Some(at) if n <= 7 => {
            let tail = n - at;
            groups.copy_within(at..n, 8 - tail);
            groups[at..8 - tail].fill(0);
        }
        None if n == 8 => {}
        _ => return None,
    }
    Some(Ipv6Addr::from(groups))
}

/// A dotted quad as `Ipv4Addr::from_str` accepts it: four decimal octets of one to three
/// digits, no leading zero, at most 255.
#[inline]
fn parse_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let (mut i, mut n, mut digits) = (0, 0u32, 0);
    for &b in text {
        if b.is_ascii_digit() {
            // A second digit after a leading zero, or a fourth digit.
            if (digits == 1 && n == 0) || digits == 3 {
                return None;
            }
            n = n * 10 + u32::from(b - b'0');
            digits += 1;
        } else if b == b'.' && digits > 0 && i < 3 {
            octets[i] = u8::try_from(n).ok()?;
            (i, n, digits) = (i + 1, 0, 0);
        } else {
            return None;
        }
    }
    if i != 3 || digits == 0 {
        return None;
    }
    octets[3] = u8::try_from(n).ok()?;
    Some(Ipv4Addr::from(octets))
}

/// Appends the text of `ip`, exactly as its `Display` writes it (RFC 5952 for IPv6), with
/// no formatter in between: for cogs that render addresses per record.
///
/// ```
/// use deadbeat::record::{parse_ip, write_ip};
/// let mut out = b"addr=".to_vec();
/// let ip = parse_ip(b"2001:db8:0:0:0:0:0:1").unwrap();
/// write_ip(&mut out, &ip);
/// assert_eq!(out, b"addr=2001:db8::1");
/// ```
pub fn write_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        // IPv4 is the common case in logs and cheap to do by hand.
        IpAddr::V4(v4) => {
            // Each octet's digits come from a table; the text is assembled on the stack
            // and appended in one copy.
            const OCTETS: [[u8; 4]; 256] = {
                let mut t = [[0u8; 4]; 256];
                let mut i = 0;
                while i < 256 {
                    let (h, d, u) = ((i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8);
                    t[i] = match i {
                        0..10 => [b'0' + u, 0, 0, 1],
                        10..100 => [b'0' + d, b'0' + u, 0, 2],
                        _ => [b'0' + h, b'0' + d, b'0' + u, 3],
                    };
                    i += 1;
                }
                t
            };
            let mut text = [0u8; 16];
            let mut n = 0;
            for o in v4.octets() {
                let [a, b, c, len] = OCTETS[usize::from(o)];
                text[n..n + 4].copy_from_slice(&[a, b, c, b'.']);
                n += usize::from(len);
                text[n] = b'.';
                n += 1;
            }
            extend_padded(out, &text, n - 1);
        }
        IpAddr::V6(v6) => write_ipv6(out, v6),
    }
}

/// Writes `a` exactly as its `Display` does (RFC 5952: lowercase, the first longest run
/// of two or more zero groups as `::`, IPv4-mapped addresses with a dotted quad).
pub(super) fn write_ipv6(out: &mut Vec<u8>, a: &Ipv6Addr) {
    if let Some(v4) = a.to_ipv4_mapped() {
        out.extend_from_slice(b"::ffff:");
        return write_ip(out, &IpAddr::V4(v4));
    }
    let groups = a.segments();
    // The first longest run of zero groups, if two or more long.
    let (mut best, mut best_len, mut run) = (0, 0, 0);
    for (i, &g) in groups.iter().enumerate() {
        run = if g == 0 { run + 1 } else { 0 };
        if run > best_len {
            (best, best_len) = (i + 1 - run, run);
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let group = |out: &mut Vec<u8>, g: u16| {
        let digits = (16 - g.leading_zeros()).div_ceil(4).max(1);
        for k in (0..digits).rev() {
            out.push(HEX[usize::from(g >> (4 * k) & 0xf)]);
        }
    };
    if best_len < 2 {
        for (i, &g) in groups.iter().enumerate() {
            if i > 0 {
                out.push(b':');
            }
            group(out, g);
        }
        return;
    }
    for (i, &g) in groups[..best].iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        group(out, g);
    }
    out.extend_from_slice(b"::");
    for (i, &g) in groups[best + best_len..].iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        group(out, g);
    }
}
