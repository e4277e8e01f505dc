//! Hand-written parsers behind the `regex` cog's presets (see `docs/presets.md`).
//!
//! They produce what a regular expression with named groups would, but walk the line once
//! with byte searches: the Common Log Format family is the hot path of access-log
//! pipelines, and a regex with eleven groups costs several times more per line.

// `ParseError` has owned variants, so an eager `ok_or(ParseError::…)` builds and drops one
// at every successful step of a parse, a cost paid on every line of the hot path.
#![allow(clippy::unnecessary_lazy_evaluations)]

use std::net::IpAddr;
use std::sync::Arc;

use memchr::memmem;

use crate::cogs::parse::ParseError;
use crate::record::timefmt::parse_clf;
use crate::record::{InlineStr, Key, Map, SharedStr, Slot, Value};

crate::choice! {
    /// A preset of `regex`, by name.
    pub enum PresetName {
        ApacheCombined = "apache_combined",
        ApacheCommon = "apache_common",
        NginxCombined = "nginx_combined",
        Sshd = "sshd",
    }
}

/// The preset names `preset` accepts.
pub const PRESET_NAMES: &[&str] = PresetName::NAMES;

/// A preset: which hand-written parser, with its field keys interned once.
#[derive(Debug, Clone)]
pub enum Preset {
    /// `apache_combined`, `apache_common` and `nginx_combined`.
    Clf(Clf),
    /// `sshd`.
    Sshd(Sshd),
}

impl Preset {
    /// The preset called `name`, if there is one.
    pub fn named(name: &str) -> Option<Preset> {
        Some(match name {
            "apache_combined" | "nginx_combined" => Preset::Clf(Clf::new(true)),
            "apache_common" => Preset::Clf(Clf::new(false)),
            "sshd" => Preset::Sshd(Sshd::new()),
            _ => return None,
        })
    }

    /// Parses `line` into `out`; on failure `out` may hold some fields, which the caller
    /// clears.
    #[inline]
    pub fn parse(&mut self, line: &[u8], out: &mut Map) -> Result<(), ParseError> {
        match self {
            Preset::Clf(p) => p.parse(line, out),
            Preset::Sshd(p) => p.parse(line, out),
        }
    }
}

/// Text as a `Str` when it is UTF-8 (nearly always), else as `Bytes`, which render with
/// U+FFFD: a stray byte in a user agent must not cost the record.
#[inline]
pub fn text_value(b: &[u8]) -> Value {
    // For short ASCII fields (addresses, paths) the plain ASCII check is several times
    // cheaper than `from_utf8`'s setup.
    if b.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        let s = unsafe { std::str::from_utf8_unchecked(b) };
        if let Some(short) = InlineStr::new(s) {
            return Value::Shared(SharedStr::Inline(short));
        }
        // SAFETY: ASCII is UTF-8.
        return Value::Str(crate::record::pool::text(s));
    }
    match std::str::from_utf8(b) {
        Ok(s) => Value::Str(crate::record::pool::text(s)),
        Err(_) => Value::Bytes(crate::record::pool::bytes(b)),
    }
}

/// Fills `slot` with [`text_value`]`(b)`, short text in place: built elsewhere and then
/// moved in, the inline bytes stall on their own copy (see "Store forwarding" in
/// `docs/architecture.md`).
#[inline]
fn fill_text(slot: Slot<'_>, b: &[u8]) {
    if b.len() <= InlineStr::CAPACITY && b.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        let s = unsafe { std::str::from_utf8_unchecked(b) };
        if let Value::Shared(SharedStr::Inline(i)) =
            slot.set(Value::Shared(SharedStr::Inline(InlineStr::EMPTY)))
        {
            i.set(s);
        }
        return;
    }
    slot.set(text_value(b));
}

/// A decimal integer with an optional sign; `None` on anything else or overflow.
#[inline]
pub fn parse_int(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        let d = d.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        // Accumulating negatively reaches i64::MIN without overflowing.
        n = n.checked_mul(10)?.checked_sub(i64::from(d))?;
    }
    if neg { Some(n) } else { n.checked_neg() }
}

/// Recently seen values of a low-cardinality field (methods, protocols, `-`, user agents)
/// as shared text: a hit costs no allocation and no free, which would otherwise be the
/// largest cost of the apache preset. Values are interned while the process-wide budget
/// lasts ([`SharedStr::interned_value`]), so a hit does not even count a reference
/// (atomic operations on every line otherwise); later ones are counted.
///
/// A value is admitted to its slot only when it misses twice in a row there: a field with
/// endless distinct values (referers) then costs a compare per line and plain text, not a
/// shared copy per line, and its one-off values do not use up the interning budget.
#[derive(Debug, Clone)]
struct SharedCache {
    slots: Vec<CacheSlot>,
    /// The value interner's budget is spent: misses are counted without asking it.
    interner_full: bool,
}

/// A hash of every byte of `b` (at least 8 bytes long), a word at a time.
#[inline]
fn whole_hash(b: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let words = b.chunks_exact(8);
    // The last word overlaps the full ones when the length is not a multiple of 8.
    let last = b.last_chunk::<8>().map_or(0, |w| u64::from_le_bytes(*w));
    words
        .map(|w| w.try_into().map_or(0, u64::from_le_bytes))
        .chain([last, b.len() as u64])
        .fold(0u64, |h, w| (h ^ w).wrapping_mul(K).rotate_left(31))
}

#[derive(Debug, Clone, Default)]
struct CacheSlot {
    kept: Option<SharedStr>,
    /// Hash of every byte of the last value that missed here.
    candidate: u64,
}

impl SharedCache {
    const SLOTS: usize = 64;
    /// Longer values are rarely repeated; they are not worth a slot.
    const MAX_LEN: usize = 512;

    fn new() -> SharedCache {
        SharedCache {
            slots: vec![CacheSlot::default(); Self::SLOTS],
            interner_full: false,
        }
    }

    #[inline]
    fn value(&mut self, b: &[u8]) -> Value {
        // Short values are cheaper held inline than looked up.
        if b.len() <= InlineStr::CAPACITY || b.len() > Self::MAX_LEN {
            return text_value(b);
        }
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let (head, tail) = match (b.first_chunk::<8>(), b.last_chunk::<8>()) {
            (Some(h), Some(t)) => (u64::from_le_bytes(*h), u64::from_le_bytes(*t)),
            _ => (b.iter().fold(0, |w, &c| w << 8 | u64::from(c)), 0),
        };
        let h = ((head ^ b.len() as u64).wrapping_mul(K).rotate_left(29) ^ tail).wrapping_mul(K);
        let slot = &mut self.slots[(h >> 58) as usize % Self::SLOTS];
        if let Some(a) = &slot.kept
            && a.as_bytes() == b
        {
            return Value::Shared(a.clone());
        }
        // The slot's hash sees only both ends and the length, which one-off values of a
        // kind often share (`https://host/…/page`): a candidate is judged on all its bytes.
        let whole = whole_hash(b);
        if slot.candidate != whole {
            slot.candidate = whole;
            return text_value(b);
        }
        self.admit(b, h)
    }

    /// Fills `slot` with [`SharedCache::value`]`(b)`, short text in place.
    #[inline]
    fn fill(&mut self, slot: Slot<'_>, b: &[u8]) {
        if b.len() <= InlineStr::CAPACITY {
            fill_text(slot, b);
        } else {
            slot.set(self.value(b));
        }
    }

    #[cold]
    fn admit(&mut self, b: &[u8], h: u64) -> Value {
        let Ok(s) = std::str::from_utf8(b) else {
            return text_value(b);
        };
        let kept = match (!self.interner_full).then(|| SharedStr::interned_value(s)) {
            Some(Some(kept)) => kept,
            Some(None) | None => {
                self.interner_full = true;
                SharedStr::Counted(Arc::from(s))
            }
        };
        self.slots[(h >> 58) as usize % Self::SLOTS].kept = Some(kept.clone());
        Value::Shared(kept)
    }
}

#[inline]
fn find(hay: &[u8], b: u8) -> Option<usize> {
    hay.iter().position(|&c| c == b)
}

/// The Common Log Format family: `%h %l %u %t "%r" %>s %b`, and for `combined` also
/// `"%{Referer}i" "%{User-agent}i"`. nginx's `combined` has the same shape.
#[derive(Debug, Clone)]
pub struct Clf {
    combined: bool,
    client: Key,
    ident: Key,
    user: Key,
    time: Key,
    method: Key,
    path: Key,
    protocol: Key,
    request: Key,
    status: Key,
    bytes: Key,
    referer: Key,
    agent: Key,
    /// Per field, so a field with many values does not evict another's few.
    caches: Box<[SharedCache; 6]>,
}

/// Indexes into [`Clf::caches`].
const C_IDENT: usize = 0;
const C_USER: usize = 1;
const C_METHOD: usize = 2;
const C_PROTOCOL: usize = 3;
const C_REFERER: usize = 4;
const C_AGENT: usize = 5;

impl Clf {
    fn new(combined: bool) -> Clf {
        Clf {
            combined,
            client: Key::new("client"),
            ident: Key::new("ident"),
            user: Key::new("user"),
            time: Key::new("time"),
            method: Key::new("method"),
            path: Key::new("path"),
            protocol: Key::new("protocol"),
            request: Key::new("request"),
            status: Key::new("status"),
            bytes: Key::new("bytes"),
            referer: Key::new("referer"),
            agent: Key::new("agent"),
            caches: Box::new(std::array::from_fn(|_| SharedCache::new())),
        }
    }

    /// Parses one line; what follows the last field (extra fields of a custom format) is
    /// ignored, as a line that merely extends the format is still that format.
    pub fn parse(&mut self, line: &[u8], out: &mut Map) -> Result<(), ParseError> {
        let sp =
            find(line, b' ').ok_or_else(|| ParseError::NoMatch("expected a client address"))?;
        let (client, rest) = (&line[..sp], &line[sp + 1..]);
        if client.is_empty() {
            return Err(ParseError::NoMatch("expected a client address"));
        }
        let sp = find(rest, b' ').ok_or_else(|| ParseError::NoMatch("expected an ident"))?;
        let (ident, rest) = (&rest[..sp], &rest[sp + 1..]);
        // The user name is taken up to the bracket so a name with a space still parses.
        let mut br = 0;
        loop {
            br +=
                find(&rest[br..], b'[').ok_or_else(|| ParseError::NoMatch("expected a [time]"))?;
            if br > 0 && rest[br - 1] == b' ' {
                break;
            }
            br += 1;
        }
        let br = br - 1;
        let (user, rest) = (&rest[..br], &rest[br + 2..]);
        let end = find(rest, b']').ok_or_else(|| ParseError::NoMatch("expected a [time]"))?;
        let (time, rest) = (&rest[..end], &rest[end + 1..]);
        let time =
            parse_clf(time).ok_or_else(|| ParseError::convert(self.time, "a timestamp", time))?;
        let rest = rest
            .strip_prefix(b" \"")
            .ok_or_else(|| ParseError::NoMatch("expected a quoted request line"))?;
        let (request, rest) =
            quoted(rest).ok_or_else(|| ParseError::NoMatch("unterminated request line"))?;
        let rest = rest
            .strip_prefix(b" ")
            .ok_or_else(|| ParseError::NoMatch("expected a status"))?;
        let sp = find(rest, b' ').unwrap_or(rest.len());
        let (status, rest) = (&rest[..sp], &rest[sp..]);
        let status = parse_int(status)
            .filter(|s| *s >= 0)
            .ok_or_else(|| ParseError::convert(self.status, "an int", status))?;
        let rest = rest
            .strip_prefix(b" ")
            .ok_or_else(|| ParseError::NoMatch("expected a size"))?;
        let sp = find(rest, b' ').unwrap_or(rest.len());
        let (bytes, rest) = (&rest[..sp], &rest[sp..]);
        let bytes = match bytes {
            b"-" => Value::Null,
            b => Value::Int(
                parse_int(b)
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| ParseError::convert(self.bytes, "an int", b))?,
            ),
        };
        let (referer, agent) = if self.combined {
            let rest = rest
                .strip_prefix(b" \"")
                .ok_or_else(|| ParseError::NoMatch("expected a quoted referer"))?;
            let (referer, rest) =
                quoted(rest).ok_or_else(|| ParseError::NoMatch("unterminated referer"))?;
            let rest = rest
                .strip_prefix(b" \"")
                .ok_or_else(|| ParseError::NoMatch("expected a quoted user agent"))?;
            let (agent, _) =
                quoted(rest).ok_or_else(|| ParseError::NoMatch("unterminated user agent"))?;
            (Some(referer), Some(agent))
        } else {
            (None, None)
        };

        fill_text(out.append_slot(self.client), client);
        self.caches[C_IDENT].fill(out.append_slot(self.ident), ident);
        self.caches[C_USER].fill(out.append_slot(self.user), user);
        out.append_slot(self.time).set(Value::Time(time));
        self.request_line(&request, out);
        out.append_slot(self.status).set(Value::Int(status));
        out.append_slot(self.bytes).set(bytes);
        if let (Some(referer), Some(agent)) = (referer, agent) {
            self.fill_quoted(out.append_slot(self.referer), C_REFERER, referer);
            self.fill_quoted(out.append_slot(self.agent), C_AGENT, agent);
        }
        Ok(())
    }

    /// Fills `slot` with a quoted field: through cache `cache` when it had no escapes.
    fn fill_quoted(&mut self, slot: Slot<'_>, cache: usize, t: Text<'_>) {
        match t {
            Text::Raw(b) => self.caches[cache].fill(slot, b),
            t => {
                slot.set(t.into_value());
            }
        }
    }

    /// `METHOD PATH PROTOCOL`, or `METHOD PATH` (HTTP/0.9). Anything else (Apache logs `-`
    /// when no request line arrived, and scanners send binary) leaves method, path and
    /// protocol null and keeps the text in `request`, so the line is not lost.
    fn request_line(&mut self, request: &Text<'_>, out: &mut Map) {
        let r = request.bytes();
        let split = find(r, b' ').and_then(|sp| {
            let (method, target) = (&r[..sp], &r[sp + 1..]);
            let method_ok = !method.is_empty()
                && method
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
            if !method_ok {
                return None;
            }
            // A path with a space in it (a broken client) stays whole: the protocol is the
            // last word, and only when it looks like one.
            let (path, proto) = match target.iter().rposition(|&b| b == b' ') {
                Some(sp) if target[sp + 1..].starts_with(b"HTTP/") => {
                    (&target[..sp], Some(&target[sp + 1..]))
                }
                _ => (target, None),
            };
            (!path.is_empty() && (proto.is_some() || !path.contains(&b' ')))
                .then_some((method, path, proto))
        });
        match split {
            Some((method, path, proto)) => {
                self.caches[C_METHOD].fill(out.append_slot(self.method), method);
                fill_text(out.append_slot(self.path), path);
                let slot = out.append_slot(self.protocol);
                if let Some(p) = proto {
                    self.caches[C_PROTOCOL].fill(slot, p);
                }
            }
            None => {
                out.append_new(self.method, Value::Null);
                out.append_new(self.path, Value::Null);
                out.append_new(self.protocol, Value::Null);
                out.append_new(self.request, text_value(r));
            }
        }
    }
}

/// The inside of a quoted field: borrowed when it has no escapes, else unescaped.
enum Text<'a> {
    Raw(&'a [u8]),
    Unescaped(Vec<u8>),
}

impl Text<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Raw(b) => b,
            Text::Unescaped(v) => v,
        }
    }

    fn into_value(self) -> Value {
        match self {
            Text::Raw(b) => text_value(b),
            Text::Unescaped(v) => match String::from_utf8(v) {
                Ok(s) => Value::Str(s),
                Err(e) => Value::Bytes(e.into_bytes()),
            },
        }
    }
}

/// The first `"` or `\\` in `s`, eight bytes at a time: user agents and referers are long
/// enough that a byte loop would be the largest cost of the parse.
#[inline]
fn find_quote_or_backslash(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = s.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let w = u64::from_le_bytes(*chunk);
        let q = w ^ (LO * u64::from(b'"'));
        let b = w ^ (LO * u64::from(b'\\'));
        // Zero bytes of q or b are the hits; a borrow can only mark bytes above a true
        // hit, so the lowest marked byte is exact.
        let hits = (q.wrapping_sub(LO) & !q | b.wrapping_sub(LO) & !b) & HI;
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|p| i + p)
}

/// Splits `s` (just past an opening quote) at its closing quote, returning the text and
/// what follows the quote. Apache writes `"` as `\"` and `\` as `\\`; those two are undone.
/// `\xhh` escapes of control bytes are kept as written: decoding them would put raw
/// control bytes (or invalid UTF-8) into the field for no gain.
#[inline]
fn quoted(s: &[u8]) -> Option<(Text<'_>, &[u8])> {
    let stop = find_quote_or_backslash(s)?;
    if s[stop] == b'"' {
        return Some((Text::Raw(&s[..stop]), &s[stop + 1..]));
    }
    let mut buf = s[..stop].to_vec();
    let mut i = stop;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => return Some((Text::Unescaped(buf), &s[i + 1..])),
            b'\\' => match s.get(i + 1) {
                Some(&e @ (b'"' | b'\\')) => {
                    buf.push(e);
                    i += 2;
                }
                _ => {
                    buf.push(b'\\');
                    i += 1;
                }
            },
            _ => {
                buf.push(b);
                i += 1;
            }
        }
    }
    None
}

/// OpenSSH's sshd lines as syslog writes them, with or without a priority:
/// `Dec 10 06:55:46 host sshd[24200]: Failed password for root from 1.2.3.4 port 22 ssh2`,
/// `<38>Dec 10 06:55:46 host sshd[24200]: ...`, and `sshd(pam_unix)[24200]: ...` as older
/// PAM stacks log.
#[derive(Debug, Clone)]
pub struct Sshd {
    facility: Key,
    severity: Key,
    time: Key,
    host: Key,
    module: Key,
    pid: Key,
    message: Key,
    user: Key,
    client: Key,
    port: Key,
    /// `rhost=`, the one wording [`Marks::of`] does not find; searched for only when the
    /// others name no client.
    rhost: Box<memmem::Finder<'static>>,
}

impl Sshd {
    fn new() -> Sshd {
        Sshd {
            facility: Key::new("facility"),
            severity: Key::new("severity"),
            time: Key::new("time"),
            host: Key::new("host"),
            module: Key::new("module"),
            pid: Key::new("pid"),
            message: Key::new("message"),
            user: Key::new("user"),
            client: Key::new("client"),
            port: Key::new("port"),
            rhost: Box::new(memmem::Finder::new(b"rhost=").into_owned()),
        }
    }

    /// Parses one line into `out`, which holds none of this preset's fields (the parse
    /// cog's map starts empty); `facility` and `severity` are set only when the line has
    /// a priority, `module` only for `sshd(MODULE)[pid]`, and `user`, `client` and `port`
    /// only when the message names them (in the wordings sshd and its PAM module use).
    pub fn parse(&self, line: &[u8], out: &mut Map) -> Result<(), ParseError> {
        let mut pri = None;
        let mut line = line;
        if line.first() == Some(&b'<') {
            // As `syslog_parse` reads it: the same rules, the same names.
            let (p, after) = crate::cogs::parse::syslog_parse::pri(line)
                .map_err(|_| ParseError::NoMatch("bad priority: expected <0> to <191>"))?;
            pri = Some(p);
            line = &line[after..];
        }
        // `Mmm dd hh:mm:ss`, the day padded with a space: 15 bytes.
        let time = line
            .get(..15)
            .filter(|t| t[3] == b' ' && t[6] == b' ' && t[9] == b':' && t[12] == b':')
            .ok_or_else(|| ParseError::NoMatch("expected a syslog time"))?;
        let rest = line[15..]
            .strip_prefix(b" ")
            .ok_or_else(|| ParseError::NoMatch("expected a host"))?;
        let sp = find(rest, b' ').ok_or_else(|| ParseError::NoMatch("expected a host"))?;
        let (host, rest) = (&rest[..sp], &rest[sp + 1..]);
        let rest = rest
            .strip_prefix(b"sshd")
            .ok_or_else(|| ParseError::NoMatch("not an sshd line"))?;
        // OpenSSH 9.8 and later log each session from its own `sshd-session` process.
        let rest = rest.strip_prefix(b"-session").unwrap_or(rest);
        let (module, rest) = match rest {
            [b'[', rest @ ..] => (None, rest),
            [b'(', rest @ ..] => {
                let close = find(rest, b')')
                    .filter(|&c| c > 0 && rest.get(c + 1) == Some(&b'['))
                    .ok_or_else(|| ParseError::NoMatch("expected sshd(module)[pid]"))?;
                (Some(&rest[..close]), &rest[close + 2..])
            }
            _ => return Err(ParseError::NoMatch("not an sshd line")),
        };
        let end = find(rest, b']').ok_or_else(|| ParseError::NoMatch("expected sshd[pid]"))?;
        let pid = &rest[..end];
        let pid = parse_int(pid).ok_or_else(|| ParseError::convert(self.pid, "an int", pid))?;
        let message = rest[end + 1..]
            .strip_prefix(b": ")
            .ok_or_else(|| ParseError::NoMatch("expected ': ' after sshd[pid]"))?;

        if let Some(p) = pri {
            let (facilities, severities) = crate::cogs::parse::syslog_parse::pri_names();
            out.append_new(
                self.facility,
                Value::Shared(facilities[p / 8].clone().into()),
            );
            out.append_new(
                self.severity,
                Value::Shared(severities[p % 8].clone().into()),
            );
        }
        fill_text(out.append_slot(self.time), time);
        fill_text(out.append_slot(self.host), host);
        if let Some(module) = module {
            fill_text(out.append_slot(self.module), module);
        }
        out.append_slot(self.pid).set(Value::Int(pid));
        fill_text(out.append_slot(self.message), message);
        let marks = Marks::of(message);
        if let Some(user) = marks.user(message) {
            fill_text(out.append_slot(self.user), user);
        }
        if let Some(client) = marks.client(message, &self.rhost) {
            fill_text(out.append_slot(self.client), client);
        }
        if let Some(port) = marks.port(message) {
            out.append_slot(self.port).set(Value::Int(port));
        }
        Ok(())
    }
}

/// Where, in an sshd message, the first occurrence of each wording that `user`, `client`
/// and `port` follow ends (`rhost=` aside): the offset of what follows it.
#[derive(Debug, Default, PartialEq)]
struct Marks {
    /// `nvalid user ` (`Invalid user x from …`, `… for invalid user x from …`).
    invalid_user: Option<usize>,
    /// ` for `.
    for_: Option<usize>,
    /// ` user=` (pam_unix).
    user_eq: Option<usize>,
    /// ` from `.
    from: Option<usize>,
    /// ` by `.
    by: Option<usize>,
    /// ` [`.
    bracket: Option<usize>,
    /// ` port `.
    port: Option<usize>,
}

/// Sets `slot` to the end of `pat` at `at` when `hay` starts with it there and `slot` is
/// still empty; whether it did.
#[inline]
fn mark(slot: &mut Option<usize>, hay: &[u8], at: usize, pat: &[u8]) -> bool {
    let hit = slot.is_none() && hay[at..].starts_with(pat);
    if hit {
        *slot = Some(at + pat.len());
    }
    hit
}

impl Marks {
    /// One walk over the spaces of `msg`. Every wording but `nvalid user ` starts with a
    /// space, and that one holds a space six bytes in: each occurrence sits at one space,
    /// so the first space a wording is found at is its first occurrence. A search per
    /// wording would read the message up to eight times.
    #[inline]
    fn of(msg: &[u8]) -> Marks {
        let mut m = Marks::default();
        for sp in memchr::memchr_iter(b' ', msg) {
            let at = sp + 1;
            match msg.get(at) {
                Some(b'f') => {
                    let _ =
                        mark(&mut m.for_, msg, at, b"for ") || mark(&mut m.from, msg, at, b"from ");
                }
                Some(b'b') => {
                    mark(&mut m.by, msg, at, b"by ");
                }
                Some(b'[') => {
                    m.bracket.get_or_insert(at + 1);
                }
                Some(b'p') => {
                    mark(&mut m.port, msg, at, b"port ");
                }
                Some(b'u') => {
                    let invalid = !mark(&mut m.user_eq, msg, at, b"user=")
                        && m.invalid_user.is_none()
                        && msg[at..].starts_with(b"user ")
                        && msg[..sp].ends_with(b"nvalid");
                    if invalid {
                        m.invalid_user = Some(at + 5);
                    }
                }
                _ => {}
            }
        }
        m
    }

    /// The user name: after `invalid user`, else `for NAME from`, else pam_unix's `user=`.
    fn user<'a>(&self, msg: &'a [u8]) -> Option<&'a [u8]> {
        if let Some(at) = self.invalid_user {
            return Some(word(&msg[at..])).filter(|w| !w.is_empty());
        }
        // "Failed password for root from ...", "Accepted publickey for git from ...".
        if let Some(at) = self.for_ {
            let rest = &msg[at..];
            let w = word(rest);
            if !w.is_empty() && rest[w.len()..].starts_with(b" from ") {
                return Some(w);
            }
        }
        // pam_unix: "... ruser= rhost=1.2.3.4  user=root".
        self.user_eq
            .map(|at| word(&msg[at..]))
            .filter(|w| !w.is_empty())
    }

    /// The client address: the first of ` from `, ` by `, `rhost=` and ` [` followed by an
    /// IP address (in brackets, or before a colon, as some wordings write it).
    fn client<'a>(&self, msg: &'a [u8], rhost: &memmem::Finder<'_>) -> Option<&'a [u8]> {
        let ip_at = |at: usize| {
            let w = word(&msg[at..]);
            let w = w.strip_suffix(b"]").unwrap_or(w);
            if is_ip(w) {
                Some(w)
            } else {
                // "Received disconnect from 1.2.3.4: 11: Bye Bye".
                w.strip_suffix(b":").filter(|w| is_ip(w))
            }
        };
        self.from
            .and_then(ip_at)
            .or_else(|| self.by.and_then(ip_at))
            .or_else(|| rhost.find(msg).and_then(|i| ip_at(i + b"rhost=".len())))
            .or_else(|| self.bracket.and_then(ip_at))
    }

    /// The number after ` port `, when it is one.
    fn port(&self, msg: &[u8]) -> Option<i64> {
        self.port.and_then(|at| parse_int(word(&msg[at..])))
    }
}

/// Whether `b` is an IPv4 or IPv6 address as the standard library reads them.
#[inline]
fn is_ip(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok_and(|s| s.parse::<IpAddr>().is_ok())
}

/// The text up to the next space.
#[inline]
fn word(s: &[u8]) -> &[u8] {
    &s[..find(s, b' ').unwrap_or(s.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(preset: &str, line: &str) -> Result<String, String> {
        let mut p = Preset::named(preset).expect("preset");
        let mut m = Map::new();
        p.parse(line.as_bytes(), &mut m)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        m.write_json(&mut out);
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    const COMBINED: &str = r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#;

    #[test]
    fn apache_combined_real_line() {
        assert_eq!(
            parse("apache_combined", COMBINED).as_deref(),
            Ok(concat!(
                r#"{"client":"127.0.0.1","ident":"-","user":"frank","time":"2000-10-10T13:55:36-07:00","#,
                r#""method":"GET","path":"/apache_pb.gif","protocol":"HTTP/1.0","status":200,"bytes":2326,"#,
                r#""referer":"http://www.example.com/start.html","agent":"Mozilla/4.08 [en] (Win98; I ;Nav)"}"#
            ))
        );
        // Common: the same line stops after the size; extra fields are ignored.
        assert_eq!(
            parse("apache_common", COMBINED).as_deref(),
            Ok(concat!(
                r#"{"client":"127.0.0.1","ident":"-","user":"frank","time":"2000-10-10T13:55:36-07:00","#,
                r#""method":"GET","path":"/apache_pb.gif","protocol":"HTTP/1.0","status":200,"bytes":2326}"#
            ))
        );
    }

    #[test]
    fn apache_combined_edge_cases() {
        let ipv6 = r#"2001:db8::1 - - [22/Nov/2024:10:00:00 +0000] "HEAD / HTTP/2.0" 304 - "-" "curl/8.4.0""#;
        assert_eq!(
            parse("apache_combined", ipv6).as_deref(),
            Ok(concat!(
                r#"{"client":"2001:db8::1","ident":"-","user":"-","time":"2024-11-22T10:00:00Z","#,
                r#""method":"HEAD","path":"/","protocol":"HTTP/2.0","status":304,"bytes":null,"#,
                r#""referer":"-","agent":"curl/8.4.0"}"#
            ))
        );
        let quotes = r#"10.0.0.1 - - [22/Nov/2024:10:00:00 +0000] "GET /q?a=\"b\" HTTP/1.1" 200 5 "-" "Evil \"Agent\" \\o/ \x07""#;
        let got = parse("apache_combined", quotes).expect("parses");
        assert!(got.contains(r#""path":"/q?a=\"b\"""#), "{got}");
        assert!(
            got.contains(r#""agent":"Evil \"Agent\" \\o/ \\x07"}"#),
            "{got}"
        );
        // No request line (a 408): Apache logs "-".
        let dash = r#"10.0.0.1 - - [22/Nov/2024:10:00:00 +0000] "-" 408 - "-" "-""#;
        let got = parse("apache_combined", dash).expect("parses");
        assert!(
            got.contains(r#""method":null,"path":null,"protocol":null,"request":"-","status":408"#),
            "{got}"
        );
        let garbage =
            r#"10.0.0.1 - - [22/Nov/2024:10:00:00 +0000] "\x16\x03\x01\x02" 400 226 "-" "-""#;
        let got = parse("apache_combined", garbage).expect("parses");
        assert!(got.contains(r#""request":"\\x16\\x03\\x01\\x02""#), "{got}");
        // HTTP/0.9 has no protocol; a path with a space stays whole.
        let old = r#"10.0.0.1 - - [22/Nov/2024:10:00:00 +0000] "GET /" 200 5 "-" "-""#;
        let got = parse("apache_combined", old).expect("parses");
        assert!(got.contains(r#""path":"/","protocol":null"#), "{got}");
        let spaced =
            r#"10.0.0.1 - - [22/Nov/2024:10:00:00 +0000] "GET /a b HTTP/1.1" 200 5 "-" "-""#;
        let got = parse("apache_combined", spaced).expect("parses");
        assert!(
            got.contains(r#""path":"/a b","protocol":"HTTP/1.1""#),
            "{got}"
        );
    }

    #[test]
    fn apache_combined_failures() {
        let base = r#"10.0.0.1 - - [22/Nov/2024:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "-""#;
        assert!(parse("apache_combined", base).is_ok());
        assert_eq!(
            parse("apache_combined", &base.replace(" 5 ", " x ")),
            Err(r#"field bytes: not an int: "x""#.into())
        );
        assert_eq!(
            parse("apache_combined", &base.replace(" 200 ", " OK ")),
            Err(r#"field status: not an int: "OK""#.into())
        );
        assert_eq!(
            parse("apache_combined", &base.replace("Nov", "Foo")),
            Err(r#"field time: not a timestamp: "22/Foo/2024:10:00:00 +0000""#.into())
        );
        // Every truncation fails cleanly (the full line is the only success).
        for end in 0..base.len() - 1 {
            let r = parse("apache_combined", &base[..end]);
            assert!(
                r.as_ref()
                    .is_err_and(|e| e.starts_with("no match") || e.starts_with("field")),
                "{end}: {r:?}"
            );
        }
        assert_eq!(
            parse("apache_combined", ""),
            Err("no match: expected a client address".into())
        );
    }

    #[test]
    fn nginx_combined_line() {
        let line = r#"203.0.113.9 - alice [05/Mar/2024:08:01:02 +0100] "POST /api/v1/items?id=3 HTTP/1.1" 201 0 "https://example.com/" "Mozilla/5.0 \x22quoted\x22""#;
        let got = parse("nginx_combined", line).expect("parses");
        assert!(
            got.contains(r#""user":"alice","time":"2024-03-05T08:01:02+01:00""#),
            "{got}"
        );
        assert!(got.contains(r#""status":201,"bytes":0,"#), "{got}");
    }

    #[test]
    fn sshd_lines() {
        let l = "Dec 10 06:55:48 LabSZ sshd[24200]: Failed password for invalid user webmaster from 173.234.31.186 port 38926 ssh2";
        assert_eq!(
            parse("sshd", l).as_deref(),
            Ok(concat!(
                r#"{"time":"Dec 10 06:55:48","host":"LabSZ","pid":24200,"#,
                r#""message":"Failed password for invalid user webmaster from 173.234.31.186 port 38926 ssh2","#,
                r#""user":"webmaster","client":"173.234.31.186","port":38926}"#
            ))
        );
        let got = parse("sshd", "Dec 10 07:02:47 LabSZ sshd[24203]: Received disconnect from 52.80.34.196: 11: Bye Bye [preauth]").expect("parses");
        assert!(got.ends_with(r#""client":"52.80.34.196"}"#), "{got}");
        let got = parse("sshd", "Dec  1 07:08:28 LabSZ sshd[24208]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=112.95.230.3  user=root").expect("parses");
        assert!(
            got.ends_with(r#""user":"root","client":"112.95.230.3"}"#),
            "{got}"
        );
        let got = parse("sshd", "Dec 10 06:55:46 LabSZ sshd[24200]: reverse mapping checking getaddrinfo for ns.example.com [173.234.31.186] failed - POSSIBLE BREAK-IN ATTEMPT!").expect("parses");
        assert!(got.ends_with(r#""client":"173.234.31.186"}"#), "{got}");
        assert_eq!(
            parse("sshd", "Dec 10 06:55:46 LabSZ cron[1]: x"),
            Err("no match: not an sshd line".into())
        );
        assert_eq!(
            parse("sshd", "Dec 10 06:55:46 LabSZ sshd[x]: y"),
            Err(r#"field pid: not an int: "x""#.into())
        );
        assert!(parse("sshd", "Dec 10").is_err());
    }

    #[test]
    fn sshd_session_processes() {
        assert_eq!(
            parse("sshd", "Dec  4 10:00:00 host sshd-session[77]: Failed password for root from 10.0.0.9 port 22 ssh2").as_deref(),
            Ok(concat!(
                r#"{"time":"Dec  4 10:00:00","host":"host","pid":77,"#,
                r#""message":"Failed password for root from 10.0.0.9 port 22 ssh2","#,
                r#""user":"root","client":"10.0.0.9","port":22}"#
            ))
        );
        assert!(parse("sshd", "Dec  4 10:00:00 host sshd-other[77]: x").is_err());
    }

    #[test]
    fn sshd_priority_and_module() {
        // A priority gives facility and severity, as `syslog_parse` names them.
        assert_eq!(
            parse("sshd", "<38>Jan  1 00:00:00 host sshd[1]: Accepted publickey for git from 10.0.0.1 port 2222 ssh2").as_deref(),
            Ok(concat!(
                r#"{"facility":"auth","severity":"info","time":"Jan  1 00:00:00","host":"host","pid":1,"#,
                r#""message":"Accepted publickey for git from 10.0.0.1 port 2222 ssh2","#,
                r#""user":"git","client":"10.0.0.1","port":2222}"#
            ))
        );
        // `sshd(pam_unix)[pid]`: the part in parentheses is the module.
        assert_eq!(
            parse("sshd", "Jan  1 00:00:00 host sshd(pam_unix)[1234]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4").as_deref(),
            Ok(concat!(
                r#"{"time":"Jan  1 00:00:00","host":"host","module":"pam_unix","pid":1234,"#,
                r#""message":"authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4","#,
                r#""client":"218.188.2.4"}"#
            ))
        );
        let got = parse(
            "sshd",
            "<86>Jun 14 15:16:02 combo sshd(pam_unix)[19937]: check pass; user unknown",
        )
        .expect("parses");
        assert!(
            got.starts_with(r#"{"facility":"authpriv","severity":"info","time":"Jun 14 15:16:02","host":"combo","module":"pam_unix","pid":19937,"#),
            "{got}"
        );
        for (bad, why) in [
            (
                "<192>Jan  1 00:00:00 h sshd[1]: x",
                "no match: bad priority: expected <0> to <191>",
            ),
            (
                "<38 Jan  1 00:00:00 h sshd[1]: x",
                "no match: bad priority: expected <0> to <191>",
            ),
            (
                "<38>Jan  1 00:00:00 h cron[1]: x",
                "no match: not an sshd line",
            ),
            (
                "Jan  1 00:00:00 h sshdx[1]: x",
                "no match: not an sshd line",
            ),
            (
                "Jan  1 00:00:00 h sshd()[1]: x",
                "no match: expected sshd(module)[pid]",
            ),
            (
                "Jan  1 00:00:00 h sshd(pam_unix): x",
                "no match: expected sshd(module)[pid]",
            ),
        ] {
            assert_eq!(parse("sshd", bad), Err(why.into()), "{bad}");
        }
    }

    /// The sshd preset's user, client and port as they were read before the one-pass walk
    /// ([`Marks`]): a search per wording, in the order of preference. The reference the
    /// walk is checked against.
    mod searched {
        use super::*;

        fn after<'a>(hay: &'a [u8], pat: &[u8]) -> Option<&'a [u8]> {
            hay.windows(pat.len())
                .position(|w| w == pat)
                .map(|i| &hay[i + pat.len()..])
        }

        pub fn user(msg: &[u8]) -> Option<&[u8]> {
            if let Some(rest) = after(msg, b"nvalid user ") {
                return Some(word(rest)).filter(|w| !w.is_empty());
            }
            if let Some(rest) = after(msg, b" for ") {
                let w = word(rest);
                if !w.is_empty() && rest[w.len()..].starts_with(b" from ") {
                    return Some(w);
                }
            }
            after(msg, b" user=").map(word).filter(|w| !w.is_empty())
        }

        pub fn client(msg: &[u8]) -> Option<&[u8]> {
            [&b" from "[..], b" by ", b"rhost=", b" ["]
                .iter()
                .filter_map(|pat| after(msg, pat))
                .map(|rest| {
                    let w = word(rest);
                    w.strip_suffix(b"]").unwrap_or(w)
                })
                .find_map(|w| {
                    let ip = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<IpAddr>().ok();
                    if ip(w).is_some() {
                        Some(w)
                    } else {
                        w.strip_suffix(b":").filter(|w| ip(w).is_some())
                    }
                })
        }

        pub fn port(msg: &[u8]) -> Option<i64> {
            after(msg, b" port ").and_then(|p| parse_int(word(p)))
        }
    }

    fn agrees_with_searches(msg: &[u8], rhost: &memmem::Finder<'_>) {
        let m = Marks::of(msg);
        let shown = String::from_utf8_lossy(msg);
        assert_eq!(m.user(msg), searched::user(msg), "user of {shown:?}");
        assert_eq!(
            m.client(msg, rhost),
            searched::client(msg),
            "client of {shown:?}"
        );
        assert_eq!(m.port(msg), searched::port(msg), "port of {shown:?}");
    }

    #[test]
    fn sshd_walk_agrees_with_a_search_per_wording() {
        let rhost = memmem::Finder::new(b"rhost=");
        // Real wordings, and odd ones.
        for msg in [
            "Failed password for root from 1.2.3.4 port 22 ssh2",
            "Failed password for invalid user admin from 1.2.3.4 port 22 ssh2",
            "Invalid user test from 10.0.0.1 port 4242",
            "Invalid user  from 10.0.0.1 port 4242",
            "Invalid user oracle from 10.0.0.1",
            "input_userauth_request: invalid user test [preauth]",
            "Accepted publickey for git from 2001:db8::1 port 2222 ssh2: ED25519 SHA256:x",
            "Received disconnect from 52.80.34.196: 11: Bye Bye [preauth]",
            "Received disconnect from 1.2.3.4 port 8946:11: disconnected by user",
            "Connection closed by 192.97.155.73 port 56480 [preauth]",
            "Connection closed by ::1 port 22",
            "Disconnected from user bob 1.2.3.4 port 22",
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=112.95.230.3  user=root",
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=host.example  user=",
            "pam_unix(sshd:session): session opened for user bob by (uid=0)",
            "pam_unix(sshd:session): session closed for user bob",
            "reverse mapping checking getaddrinfo for ns.example.com [173.234.31.186] failed - POSSIBLE BREAK-IN ATTEMPT!",
            "Address 1.2.3.4 maps to x, but this does not map back to the address [preauth]",
            "Did not receive identification string from 1.2.3.4",
            "error: connect from fe80::1%eth0 port x",
            "Failed password for ünïcødé from 10.0.0.1 port 65536 ssh2",
            "Failed password for root from 10.0.0.256 port -1 ssh2",
            "for root from 1.2.3.4",
            " for  from 1.2.3.4 port  port 7",
            "nvalid user x",
            "port 22",
            "",
            " ",
            "[1.2.3.4]",
            " [1.2.3.4]",
            " by 1.2.3.4:",
            "xrhost=1.2.3.4 from 5.6.7.8 by 9.9.9.9",
            "from nothing by nothing rhost=nothing [1.1.1.1] rhost=2.2.2.2",
        ] {
            agrees_with_searches(msg.as_bytes(), &rhost);
        }
        // Invalid UTF-8 around the wordings.
        for msg in [
            &b"Failed password for \xff\xfe from 1.2.3.4 port 22 ssh2"[..],
            b"Invalid user \xc3 from 1.2.3.4 port 22",
            b"Received disconnect from 1.2.3.\xff port 22",
            b"\xffnvalid user a from \xff",
        ] {
            agrees_with_searches(msg, &rhost);
        }
        // Random messages from the wordings' pieces, joined with and without spaces: a
        // small xorshift generator, so every run checks the same messages.
        let pieces: &[&[u8]] = &[
            b"for",
            b"from",
            b"by",
            b"port",
            b"user",
            b"user=",
            b"rhost=",
            b"[",
            b"]",
            b"Invalid",
            b"invalid",
            b"nvalid",
            b"1.2.3.4",
            b"1.2.3.4:",
            b"[::1]",
            b"2001:db8::2",
            b"22",
            b"-3",
            b"root",
            b"x",
            b"",
            b"\xff",
            b"\xc3\xbc",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut msg = Vec::new();
        for _ in 0..20_000 {
            msg.clear();
            for _ in 0..next(12) {
                msg.extend_from_slice(pieces[next(pieces.len())]);
                if next(4) != 0 {
                    msg.push(b' ');
                }
            }
            agrees_with_searches(&msg, &rhost);
        }
    }

    #[test]
    fn sshd_odd_lines() {
        // No user.
        assert_eq!(
            parse(
                "sshd",
                "Dec 10 07:02:47 h sshd[1]: Connection closed by 10.0.0.1 port 22 [preauth]"
            )
            .as_deref(),
            Ok(concat!(
                r#"{"time":"Dec 10 07:02:47","host":"h","pid":1,"#,
                r#""message":"Connection closed by 10.0.0.1 port 22 [preauth]","client":"10.0.0.1","port":22}"#
            ))
        );
        // An IPv6 client.
        assert_eq!(
            parse("sshd", "Dec 10 07:02:47 h sshd[1]: Failed password for root from 2001:db8::17 port 2200 ssh2").as_deref(),
            Ok(concat!(
                r#"{"time":"Dec 10 07:02:47","host":"h","pid":1,"#,
                r#""message":"Failed password for root from 2001:db8::17 port 2200 ssh2","user":"root","client":"2001:db8::17","port":2200}"#
            ))
        );
        // `Invalid user` without a port; and with no name.
        assert_eq!(
            parse(
                "sshd",
                "Dec 10 07:02:47 h sshd[1]: Invalid user oracle from 10.1.2.3"
            )
            .as_deref(),
            Ok(concat!(
                r#"{"time":"Dec 10 07:02:47","host":"h","pid":1,"#,
                r#""message":"Invalid user oracle from 10.1.2.3","user":"oracle","client":"10.1.2.3"}"#
            ))
        );
        assert_eq!(
            parse(
                "sshd",
                "Dec 10 07:02:47 h sshd[1]: Invalid user  from 10.1.2.3 port 5"
            )
            .as_deref(),
            Ok(concat!(
                r#"{"time":"Dec 10 07:02:47","host":"h","pid":1,"#,
                r#""message":"Invalid user  from 10.1.2.3 port 5","client":"10.1.2.3","port":5}"#
            ))
        );
        // No address where one is expected, and a port that is not a number.
        let got = parse(
            "sshd",
            "Dec 10 07:02:47 h sshd[1]: Disconnected from user bob 10.0.0.1 port 22:11: x",
        )
        .expect("parses");
        assert!(
            got.ends_with(r#""message":"Disconnected from user bob 10.0.0.1 port 22:11: x"}"#),
            "{got}"
        );
        // Invalid UTF-8: the message and the user as bytes (rendered with U+FFFD), the
        // rest as usual.
        let mut m = Map::new();
        Sshd::new()
            .parse(
                b"Dec 10 07:02:47 h sshd[1]: Failed password for r\xffot from 10.0.0.1 port 22 ssh2",
                &mut m,
            )
            .expect("parses");
        let bytes = |k: &str| {
            m.get(Key::new(k))
                .and_then(Value::as_bytes)
                .map(<[u8]>::to_vec)
        };
        assert_eq!(bytes("user").as_deref(), Some(&b"r\xffot"[..]));
        assert!(matches!(m.get(Key::new("message")), Some(Value::Bytes(_))));
        assert_eq!(
            m.get(Key::new("client")).and_then(Value::as_str),
            Some("10.0.0.1")
        );
        assert_eq!(m.get(Key::new("port")), Some(&Value::Int(22)));
    }

    #[test]
    fn shared_cache_admits_repeated_values_and_returns_every_text_unchanged() {
        let mut cache = SharedCache::new();
        let agent = b"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
        let kinds: Vec<bool> = (0..3)
            .map(|_| {
                let v = cache.value(agent);
                assert_eq!(v.as_bytes(), Some(&agent[..]));
                matches!(v, Value::Shared(_))
            })
            .collect();
        assert_eq!(
            kinds,
            [false, true, true],
            "admitted on its second miss, then hit"
        );
        let mut admitted = 0;
        for i in 0..1000 {
            let one_off = format!("https://example.com/referer/{i}/with/a/long/path");
            let v = cache.value(one_off.as_bytes());
            assert_eq!(v.as_str(), Some(&one_off[..]));
            admitted += usize::from(matches!(v, Value::Shared(_)));
        }
        // Same ends, same length: only a hash of every byte tells them apart.
        assert_eq!(admitted, 0, "one-off values were admitted");
        let bad = b"agent with an invalid byte \xff here and enough length";
        for _ in 0..3 {
            assert_eq!(cache.value(bad).as_bytes(), Some(&bad[..]));
        }
        assert_eq!(cache.value(b"-").as_str(), Some("-"));
    }

    #[test]
    fn quote_scan_agrees_with_a_byte_loop() {
        let naive = |s: &[u8]| s.iter().position(|&b| b == b'"' || b == b'\\');
        let mut s = vec![b'a'; 40];
        assert_eq!(find_quote_or_backslash(&s), None);
        for at in 0..40 {
            for c in [b'"', b'\\'] {
                s[at] = c;
                // A second hit after the first must not win; bytes next to hits (0x21,
                // 0x5b, 0xff) must not count.
                if at + 3 < 40 {
                    s[at + 3] = b'"';
                }
                if at > 0 {
                    s[at - 1] = if at % 2 == 0 { 0x21 } else { 0xff };
                }
                for len in 0..=40 {
                    assert_eq!(
                        find_quote_or_backslash(&s[..len]),
                        naive(&s[..len]),
                        "{at} {len}"
                    );
                }
                s.fill(b'a');
            }
        }
    }

    #[test]
    fn ints() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_int(b"+12"), Some(12));
        for bad in [&b""[..], b"-", b"1x", b" 1", b"1.0"] {
            assert_eq!(parse_int(bad), None);
        }
    }
}
