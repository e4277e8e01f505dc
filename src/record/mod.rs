//! The dynamic datum of TOML-built trains: a [`Record`] of named [`Value`]s, with fast
//! hand-written JSON rendering and parsing.
//!
//! Field names are interned once, when a train is built, into [`Key`]s; cogs then address
//! fields by `Key` or by a pre-parsed dotted [`Path`], so the per-record work is integer
//! compares over a short vector rather than string hashing.
//!
//! ```
//! use deadbeat::record::{Key, Path, Record, Value};
//! let mut rec = Record::new();
//! rec.insert(Key::new("status"), Value::Int(404));
//! rec.set_path(&Path::parse("src.ip").unwrap(), Value::from("10.0.0.1"));
//! let mut line = Vec::new();
//! rec.write_json(&mut line);
//! assert_eq!(line, br#"{"status":404,"src":{"ip":"10.0.0.1"}}"#);
//! assert_eq!(Record::parse_json(&line).unwrap(), rec);
//! ```

pub mod expr;
pub mod pool;
pub mod timefmt;

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::EventId;
use crate::engine::getset::{Field, Getter, MutGetter, Setter};

// ---------------------------------------------------------------------------------------------
// Key interner
// ---------------------------------------------------------------------------------------------

/// An interned field name: a `u32` that compares, hashes and copies like an integer.
///
/// Names live for the rest of the process, so build keys once (when a train is set up) and
/// keep them; [`Key::as_str`] is then a couple of plain loads, lock-free.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(u32);

/// What the interner keeps per key: the name, and the name already rendered as a JSON
/// object key after a comma (`,"name":`) so rendering a field name is a single copy.
struct KeyName {
    name: &'static str,
    json: &'static [u8],
    /// `json` padded to a fixed size, when it fits, for [`extend_padded`].
    padded: Option<[u8; 32]>,
}

/// Segment `s` of [`NAMES`] holds `1 << (FIRST_SEGMENT_BITS + s)` names.
const FIRST_SEGMENT_BITS: u32 = 6;
/// Enough doubling segments to cover every `u32` id.
const SEGMENTS: usize = 33 - FIRST_SEGMENT_BITS as usize;

/// Names by id, readable without a lock: segments are allocated once and never move, and
/// each slot is written once, before its `Key` is handed out.
static NAMES: [OnceLock<Box<[OnceLock<KeyName>]>>; SEGMENTS] =
    [const { OnceLock::new() }; SEGMENTS];

/// Ids by name; only consulted when interning.
fn ids() -> &'static RwLock<HashMap<&'static str, Key>> {
    static IDS: OnceLock<RwLock<HashMap<&'static str, Key>>> = OnceLock::new();
    IDS.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Segment and index of a key id in [`NAMES`].
#[inline]
fn slot_of(id: u32) -> (usize, usize) {
    let n = u64::from(id) + (1 << FIRST_SEGMENT_BITS);
    let bits = 63 - n.leading_zeros();
    (
        (bits - FIRST_SEGMENT_BITS) as usize,
        (n - (1 << bits)) as usize,
    )
}

/// Slots in the per-thread key cache: a power of two, at most 256 (see `cache_slot`).
const KEY_CACHE_SLOTS: usize = 256;

/// A cached name and its key.
type CachedKey = Cell<Option<(&'static [u8], Key)>>;

thread_local! {
    /// Recently interned names by a cheap hash of their bytes. Parsing JSON interns every
    /// object key of every record, and the interner's lock and SipHash would otherwise cost
    /// more than the rest of the parse. A collision only costs a miss, so the weak hash does
    /// not expose the interner (which keeps SipHash) to hash flooding.
    static KEY_CACHE: [CachedKey; KEY_CACHE_SLOTS] =
        const { [const { Cell::new(None) }; KEY_CACHE_SLOTS] };
}

/// Slot of `name` in [`KEY_CACHE`], from its length and first and last eight bytes.
#[inline]
fn cache_slot(name: &[u8]) -> usize {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let (head, tail) = match (name.first_chunk::<8>(), name.last_chunk::<8>()) {
        (Some(h), Some(t)) => (u64::from_le_bytes(*h), u64::from_le_bytes(*t)),
        _ => (name.iter().fold(0, |w, &b| w << 8 | u64::from(b)), 0),
    };
    let h = (head ^ name.len() as u64).wrapping_mul(K);
    let h = (h.rotate_left(29) ^ tail).wrapping_mul(K);
    (h >> 56) as usize % KEY_CACHE_SLOTS
}

/// `a == b`, without a call to `memcmp` for the short strings that field names are.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && if a.len() <= 16 {
            short_words(a) == short_words(b)
        } else {
            a == b
        }
}

/// How many distinct field names the interner accepts from input data
/// ([`Key::from_input`]); names from configuration are always accepted.
pub const MAX_INPUT_KEYS: usize = 1 << 16;

impl Key {
    /// Interns `name`, returning the same key for the same name from any thread.
    ///
    /// The name is leaked: the set of keys only grows. That is the right trade for field
    /// names from configuration, but see [`Key::try_existing`] for untrusted names.
    pub fn new(name: &str) -> Key {
        if let Some(k) = Key::cached(name.as_bytes()) {
            return k;
        }
        let key = Key::intern(name);
        let name = key.as_str().as_bytes();
        let _ = KEY_CACHE.try_with(|c| c[cache_slot(name)].set(Some((name, key))));
        key
    }

    /// The key for `name` if this thread interned or looked it up recently.
    #[inline]
    fn cached(name: &[u8]) -> Option<Key> {
        let slot = cache_slot(name);
        KEY_CACHE
            .try_with(|c| match c[slot].get() {
                Some((n, k)) if same_bytes(n, name) => Some(k),
                _ => None,
            })
            .ok()
            .flatten()
    }

    fn intern(name: &str) -> Key {
        // A poisoned lock only means another thread panicked mid-insert; the map is still
        // consistent because the slot is filled before the map entry is added.
        if let Some(&k) = ids().read().unwrap_or_else(|e| e.into_inner()).get(name) {
            return k;
        }
        let mut ids = ids().write().unwrap_or_else(|e| e.into_inner());
        if let Some(&k) = ids.get(name) {
            return k;
        }
        // Four billion leaked names would exhaust memory long before this triggers.
        let id = u32::try_from(ids.len()).expect("key interner full");
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let mut json = Vec::with_capacity(name.len() + 4);
        json.push(b',');
        write_escaped(&mut json, name.as_bytes());
        json.push(b':');
        let json: &'static [u8] = Box::leak(json.into_boxed_slice());
        let (seg, idx) = slot_of(id);
        let segment = NAMES[seg].get_or_init(|| {
            let len = 1usize << (seg + FIRST_SEGMENT_BITS as usize);
            (0..len).map(|_| OnceLock::new()).collect()
        });
        let padded = (json.len() <= 32).then(|| {
            let mut p = [0; 32];
            p[..json.len()].copy_from_slice(json);
            p
        });
        // Unique ids under the write lock mean the slot is always empty here.
        let _ = segment[idx].set(KeyName { name, json, padded });
        let key = Key(id);
        ids.insert(name, key);
        key
    }

    /// Interns a name that comes from input data (a JSON object key, a `key=value` pair, a
    /// syslog structured-data name): like [`Key::new`], but refused (`None`) once the
    /// interner holds [`MAX_INPUT_KEYS`] names and `name` is not among them. Names are never
    /// freed, so without this bound a sender inventing new names would grow the daemon's
    /// memory for as long as it runs.
    pub fn from_input(name: &str) -> Option<Key> {
        Key::from_input_within(name, MAX_INPUT_KEYS)
    }

    fn from_input_within(name: &str, limit: usize) -> Option<Key> {
        if let Some(k) = Key::try_existing(name) {
            return Some(k);
        }
        if ids().read().unwrap_or_else(|e| e.into_inner()).len() >= limit {
            return None;
        }
        Some(Key::new(name))
    }

    /// Returns the key for `name` if it was already interned, without interning it.
    ///
    /// Interning names taken from untrusted input (JSON object keys, say) lets a sender grow
    /// the interner without bound, since names are never freed. Cogs that only care about
    /// known fields can look names up with this instead and skip the rest. The JSON parser
    /// still uses [`Key::new`], keeping every key of the input, which is simpler and right for
    /// inputs whose set of field names is bounded.
    pub fn try_existing(name: &str) -> Option<Key> {
        if let Some(k) = Key::cached(name.as_bytes()) {
            return Some(k);
        }
        ids()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }

    fn entry(self) -> Option<&'static KeyName> {
        let (seg, idx) = slot_of(self.0);
        NAMES[seg].get()?.get(idx)?.get()
    }

    /// The interned name.
    #[inline]
    pub fn as_str(self) -> &'static str {
        // Keys are only made by `Key::new`, which fills the slot first.
        self.entry().map_or("", |e| e.name)
    }

    /// Appends the name as a JSON object key with its colon, after a comma: `,"name":`.
    #[inline]
    fn write_json_key(self, out: &mut Vec<u8>) {
        match self.entry() {
            Some(KeyName {
                padded: Some(p),
                json,
                ..
            }) => extend_padded(out, p, json.len()),
            Some(e) => out.extend_from_slice(e.json),
            None => out.extend_from_slice(b",\"\":"),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", self.as_str())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keys order by name, not by id, so sorted output does not depend on interning order.
impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.0 == other.0 {
            std::cmp::Ordering::Equal
        } else {
            self.as_str().cmp(other.as_str())
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

// ---------------------------------------------------------------------------------------------
// Timestamp
// ---------------------------------------------------------------------------------------------

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
        // check the Vec's capacity, and a stack buffer read back as vectors stalls on store
        // forwarding; either costs more than the date arithmetic.
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
fn put_word(out: &mut Vec<u8>, w: u64, len: usize) {
    extend_padded(out, &w.to_le_bytes(), len);
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(35);
        self.write_rfc3339(&mut buf);
        f.write_str(&String::from_utf8_lossy(&buf))
    }
}

// ---------------------------------------------------------------------------------------------
// Value
// ---------------------------------------------------------------------------------------------

/// One datum of a record.
///
/// Text compares equal whether it is held as `Str` or `Shared`.
#[derive(Clone, Debug, Default)]
pub enum Value {
    /// No value; renders as JSON `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A float; non-finite ones render as `null`.
    Float(f64),
    /// An integer beyond `i64` (a JSON number such as `18446744073709551615`), kept as its
    /// decimal text so that it renders back exactly. It reads as a float
    /// ([`Value::as_f64`]), never as an `i64`.
    // A box rather than a `SharedStr`: a second `SharedStr` variant cost `Shared` the niche
    // that holds the value's tag, and rendering a template of plain fields took 20% longer.
    BigInt(Box<str>),
    /// Text.
    Str(String),
    /// Text shared by many records (a file's path, a peer's address): cloning it only
    /// counts a reference, so supplies add such fields to every record cheaply.
    Shared(SharedStr),
    /// Raw bytes, e.g. an input line not yet parsed; may be invalid UTF-8.
    Bytes(Vec<u8>),
    /// A point in time.
    Time(Timestamp),
    /// An IP address.
    Ip(IpAddr),
    /// An IP network, e.g. `10.0.0.0/8`.
    Net(IpNet),
    /// An ordered list.
    List(Vec<Value>),
    /// Named values.
    Map(Map),
}

impl Value {
    /// The text of a `Str`, or of `Bytes` that are valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Shared(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The bytes of a `Str` or `Bytes`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(s) => Some(s.as_bytes()),
            Value::Shared(s) => Some(s.as_bytes()),
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The integer of an `Int`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(n) => Some(n),
            _ => None,
        }
    }

    /// The number of a `Float`, or of an `Int` or `BigInt` (rounded to the nearest float).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Float(f) => Some(f),
            Value::Int(n) => Some(n as f64),
            Value::BigInt(ref s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The truth of a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The address of an `Ip`, or of a `Str`/`Bytes` holding one in text.
    pub fn as_ip(&self) -> Option<IpAddr> {
        match self {
            Value::Ip(ip) => Some(*ip),
            Value::Str(_) | Value::Shared(_) | Value::Bytes(_) => self.as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// The name of the variant, for error messages: `null`, `bool`, `int`, `float`,
    /// `string`, `bytes`, `time`, `ip`, `net`, `list` or `map`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) | Value::Shared(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Time(_) => "time",
            Value::Ip(_) => "ip",
            Value::Net(_) => "net",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// Whether this is `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Appends this value as JSON.
    ///
    /// Always produces valid UTF-8 JSON: invalid UTF-8 in `Bytes` becomes U+FFFD, and
    /// non-finite floats become `null`. `Time`, `Ip` and `Net` render as strings.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(n) => write_i64(out, *n),
            Value::Float(f) => write_f64(out, *f),
            Value::BigInt(s) => out.extend_from_slice(s.as_bytes()),
            Value::Str(s) => write_escaped(out, s.as_bytes()),
            Value::Shared(s) => write_escaped(out, s.as_bytes()),
            Value::Bytes(b) => write_escaped_lossy(out, b),
            Value::Time(t) => {
                out.push(b'"');
                t.write_rfc3339(out);
                out.push(b'"');
            }
            Value::Ip(ip) => {
                out.push(b'"');
                write_ip(out, ip);
                out.push(b'"');
            }
            Value::Net(net) => {
                out.push(b'"');
                write_ip(out, &net.addr());
                out.push(b'/');
                write_u64(out, u64::from(net.prefix_len()));
                out.push(b'"');
            }
            Value::List(items) => {
                out.push(b'[');
                let mut items = items.iter();
                if let Some(first) = items.next() {
                    first.write_json(out);
                    for v in items {
                        out.push(b',');
                        v.write_json(out);
                    }
                }
                out.push(b']');
            }
            Value::Map(m) => m.write_json(out),
        }
    }

    /// Parses one JSON text (RFC 8259) into a value.
    ///
    /// Objects become `Map`s (duplicate keys: the last value wins, at the first key's
    /// position), integers that fit an `i64` become `Int`, other integers `BigInt` (their
    /// text, so they render back unchanged) and other numbers `Float`.
    /// Nesting deeper than 128 arrays/objects, fractions or exponents beyond `f64` range, lone surrogate
    /// escapes, invalid UTF-8 and anything after the value are errors. Never panics.
    pub fn parse_json(input: &[u8]) -> Result<Value, JsonError> {
        let mut p = Parser { input, pos: 0 };
        let mut v = Value::Null;
        p.value(0, &mut v)?;
        p.skip_ws();
        if p.pos < input.len() {
            return Err(p.err("trailing characters after JSON value"));
        }
        Ok(v)
    }
}

/// Renders as JSON.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            // The text of an integer beyond i64 is canonical (no leading zero, no `+`).
            (Value::BigInt(a), Value::BigInt(b)) => a == b,
            (Value::Str(_) | Value::Shared(_), Value::Str(_) | Value::Shared(_)) => {
                self.as_str() == other.as_str()
            }
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Time(a), Value::Time(b)) => a == b,
            (Value::Ip(a), Value::Ip(b)) => a == b,
            (Value::Net(a), Value::Net(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::new();
        self.write_json(&mut buf);
        f.write_str(&String::from_utf8_lossy(&buf))
    }
}

macro_rules! value_from {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Value {
                Value::$v(x.into())
            }
        }
    )*};
}

// No `u64`/`usize`: they have no lossless mapping onto `Int`.
value_from! {
    bool => Bool,
    i8 => Int, i16 => Int, i32 => Int, i64 => Int, u8 => Int, u16 => Int, u32 => Int,
    f32 => Float, f64 => Float,
    String => Str, &str => Str, Box<str> => Str, std::sync::Arc<str> => Shared,
    SharedStr => Shared,
    Vec<u8> => Bytes, &[u8] => Bytes,
    Timestamp => Time,
    IpAddr => Ip, Ipv4Addr => Ip, Ipv6Addr => Ip,
    IpNet => Net,
    Vec<Value> => List,
    Map => Map,
}

impl From<Cow<'_, str>> for Value {
    fn from(s: Cow<'_, str>) -> Value {
        Value::Str(s.into_owned())
    }
}

/// `None` becomes `Null`.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

// ---------------------------------------------------------------------------------------------
// Map
// ---------------------------------------------------------------------------------------------

/// An insertion-ordered map from [`Key`] to [`Value`].
///
/// A plain vector scanned linearly: records have a handful of fields, where comparing a few
/// `u32`s beats hashing. Equality ignores order.
#[derive(Clone, Debug, Default)]
pub struct Map {
    entries: Vec<(Key, Value)>,
}

impl Map {
    /// An empty map.
    pub fn new() -> Map {
        Map::default()
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Map {
        Map {
            entries: Vec::with_capacity(n),
        }
    }

    #[inline]
    fn position(&self, key: Key) -> Option<usize> {
        self.entries.iter().position(|(k, _)| *k == key)
    }

    /// The value under `key`.
    #[inline]
    pub fn get(&self, key: Key) -> Option<&Value> {
        self.entries
            .iter()
            .find_map(|(k, v)| (*k == key).then_some(v))
    }

    /// The value under `key`, mutably.
    #[inline]
    pub fn get_mut(&mut self, key: Key) -> Option<&mut Value> {
        self.entries
            .iter_mut()
            .find_map(|(k, v)| (*k == key).then_some(v))
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: Key) -> bool {
        self.position(key).is_some()
    }

    /// The entries, for [`crate::record::pool::recycle`].
    pub(crate) fn into_entries(self) -> Vec<(Key, Value)> {
        self.entries
    }

    /// The entries' vector, for [`crate::record::pool::fill_fields`] to put a reused one in place
    /// and reserve room; keys must stay distinct.
    pub(crate) fn entries_mut(&mut self) -> &mut Vec<(Key, Value)> {
        &mut self.entries
    }

    /// Appends `key` without looking for an existing entry: for a parser filling an
    /// empty map with keys it knows to be distinct. A duplicate key would make the map
    /// render it twice (checked in debug builds).
    #[inline(always)]
    pub(crate) fn append_new(&mut self, key: Key, value: Value) {
        debug_assert!(!self.contains_key(key), "append_new with a present key");
        crate::engine::cog::push_in_place(&mut self.entries, (key, value));
    }

    /// [`Map::append_new`] of a null value, returned to be filled in place: a value built
    /// elsewhere and then moved in can stall on its own copy (store forwarding).
    #[inline(always)]
    pub(crate) fn append_slot(&mut self, key: Key) -> Slot<'_> {
        debug_assert!(!self.contains_key(key), "append_slot with a present key");
        self.entries.reserve(1);
        let len = self.entries.len();
        // SAFETY: `reserve` made room for one more entry. Its two parts are written where
        // they lie (a pair built on the stack first was copied out with wide loads that
        // stalled on its narrow stores) before the length covers it.
        unsafe {
            let p = self.entries.as_mut_ptr().add(len);
            (&raw mut (*p).0).write(key);
            (&raw mut (*p).1).write(Value::Null);
            self.entries.set_len(len + 1);
            Slot(&mut (*p).1)
        }
    }

    /// Moves every entry of `other` into this map, as [`Map::insert`] would one by one,
    /// leaving `other` empty with its allocation. Only keys this map may hold (by a 64-bit
    /// summary of its keys) are searched for.
    pub fn merge_from(&mut self, other: &mut Map) {
        let bit = |k: Key| 1u64 << (k.0 & 63);
        let present = self.entries.iter().fold(0u64, |s, (k, _)| s | bit(*k));
        // Keys this map may hold replace their values in place; the rest (the keys of one
        // map are distinct) then move over in one copy. Pushing them one by one cost more:
        // each pair went through the stack in pieces that stalled the copy.
        if other.entries.iter().any(|(k, _)| present & bit(*k) != 0) {
            other.entries.retain_mut(|(k, v)| {
                let slot = (present & bit(*k) != 0).then(|| self.get_mut(*k)).flatten();
                match slot {
                    Some(slot) => {
                        *slot = std::mem::take(v);
                        false
                    }
                    None => true,
                }
            });
        }
        self.entries.append(&mut other.entries);
    }

    /// Sets `key` to `value`, returning the old value. A replaced entry keeps its position;
    /// a new one goes last.
    pub fn insert(&mut self, key: Key, value: Value) -> Option<Value> {
        match self.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    /// The value under `key`, inserting `Null` first if absent.
    fn slot(&mut self, key: Key) -> &mut Value {
        let i = match self.position(key) {
            Some(i) => i,
            None => {
                self.entries.push((key, Value::Null));
                self.entries.len() - 1
            }
        };
        &mut self.entries[i].1
    }

    /// Removes `key`, keeping the order of the others.
    pub fn remove(&mut self, key: Key) -> Option<Value> {
        let i = self.position(key)?;
        Some(self.entries.remove(i).1)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (Key, &Value)> + DoubleEndedIterator {
        self.entries.iter().map(|(k, v)| (*k, v))
    }

    /// The entries in order, values mutably.
    pub fn iter_mut(
        &mut self,
    ) -> impl ExactSizeIterator<Item = (Key, &mut Value)> + DoubleEndedIterator {
        self.entries.iter_mut().map(|(k, v)| (*k, v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes all entries, keeping the allocation.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Makes room for `n` more entries (one allocation instead of several as a parser's
    /// fields are merged in).
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
    }

    /// Takes every entry out, in order, keeping the allocation.
    pub fn drain(&mut self) -> impl Iterator<Item = (Key, Value)> + '_ {
        self.entries.drain(..)
    }

    /// Appends this map as a JSON object.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Every key is written after a comma; the first comma then becomes the `{`.
        let start = out.len();
        for (k, v) in &self.entries {
            k.write_json_key(out);
            // Strings are most fields of most records: skip the dispatch for them.
            match v {
                Value::Str(s) => write_escaped(out, s.as_bytes()),
                Value::Shared(s) => write_escaped(out, s.as_bytes()),
                v => v.write_json(out),
            }
        }
        match out.get_mut(start) {
            Some(brace) => *brace = b'{',
            None => out.push(b'{'),
        }
        out.push(b'}');
    }
}

impl PartialEq for Map {
    fn eq(&self, other: &Map) -> bool {
        // Keys are unique, so equal lengths plus every entry found means the same set.
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl FromIterator<(Key, Value)> for Map {
    /// Later duplicates replace earlier ones, as with [`Map::insert`].
    fn from_iter<I: IntoIterator<Item = (Key, Value)>>(iter: I) -> Map {
        let mut m = Map::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl IntoIterator for Map {
    type Item = (Key, Value);
    type IntoIter = std::vec::IntoIter<(Key, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

// ---------------------------------------------------------------------------------------------
// Path
// ---------------------------------------------------------------------------------------------

/// A pre-parsed dotted field path such as `src.ip`: a key into the record, then a key into
/// each nested map. Names containing `.` cannot be addressed this way.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    // Never empty.
    keys: Vec<Key>,
}

/// A field path that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathError {
    /// The path as written.
    pub path: String,
    /// 1-based character column of the empty segment.
    pub column: usize,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field path {:?}: empty name at column {}",
            self.path, self.column
        )
    }
}

impl std::error::Error for PathError {}

impl Path {
    /// Parses and interns a dotted path; every dot-separated name must be non-empty.
    pub fn parse(path: &str) -> Result<Path, PathError> {
        let mut keys = Vec::new();
        let mut column = 1;
        for name in path.split('.') {
            if name.is_empty() {
                return Err(PathError {
                    path: path.to_owned(),
                    column,
                });
            }
            keys.push(Key::new(name));
            column += name.chars().count() + 1;
        }
        Ok(Path { keys })
    }

    /// The keys, outermost first; never empty.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

/// A path of one top-level field.
impl From<Key> for Path {
    fn from(key: Key) -> Path {
        Path { keys: vec![key] }
    }
}

impl std::str::FromStr for Path {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Path, PathError> {
        Path::parse(s)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(k.as_str())?;
        }
        Ok(())
    }
}

// SharedStr
// ---------------------------------------------------------------------------------------------

/// Text that clones cheaply ([`Value::Shared`]): a reference-counted string, one interned
/// for the life of the process ([`SharedStr::interned`]), or a short one held inline
/// ([`SharedStr::short`]). Clones and drops of the last two cost nothing, not even the
/// atomic count of an `Arc`. Dereferences to `str`.
#[derive(Clone)]
pub enum SharedStr {
    /// Counted: freed with its last clone.
    Counted(std::sync::Arc<str>),
    /// Kept until the process exits.
    Interned(&'static str),
    /// Held in the value itself: no allocation at all.
    Inline(InlineStr),
}

/// Up to [`InlineStr::CAPACITY`] bytes of UTF-8 held in place: most fields parsed out of a
/// log line (addresses, methods, `-`, short paths) fit, and then cost neither an
/// allocation nor a free.
#[derive(Clone, Copy)]
pub struct InlineStr {
    len: u8,
    bytes: [u8; InlineStr::CAPACITY],
}

/// The value of a new entry ([`Map::append_slot`]), still null, to be filled in place.
pub(crate) struct Slot<'a>(&'a mut Value);

impl<'a> Slot<'a> {
    /// Stores `x`, returning it in place.
    #[inline(always)]
    pub(crate) fn set(self, x: Value) -> &'a mut Value {
        // SAFETY: `self.0` is a valid, exclusive place. It holds `Value::Null`, which owns
        // nothing, so overwriting it without a drop leaks nothing; and not reading it first
        // avoids stalling on the store that just put it there.
        unsafe { std::ptr::write(self.0, x) };
        self.0
    }
}

// Inline text must not make every value larger.
const _: () = assert!(std::mem::size_of::<Value>() == 32);

impl InlineStr {
    /// The longest text held inline: what fits beside the tags in a 32-byte [`Value`].
    pub const CAPACITY: usize = 22;

    /// No text.
    pub const EMPTY: InlineStr = InlineStr {
        len: 0,
        bytes: [0; InlineStr::CAPACITY],
    };

    /// `s` held inline; `None` if it is longer than [`InlineStr::CAPACITY`].
    #[inline]
    pub fn new(s: &str) -> Option<InlineStr> {
        let mut i = InlineStr::EMPTY;
        i.set(s).then_some(i)
    }

    /// Replaces the text with `s`, in place (a value filled where it lies is not copied
    /// again); `false`, with the text unchanged, if `s` is longer than
    /// [`InlineStr::CAPACITY`].
    #[inline]
    pub fn set(&mut self, s: &str) -> bool {
        let b = s.as_bytes();
        let n = b.len();
        if n > InlineStr::CAPACITY {
            return false;
        }
        // Two overlapping fixed-size copies instead of one of variable length, which would
        // be a call to `memcpy` costing more than the rest of this.
        fn overlap<const W: usize>(to: &mut [u8], from: &[u8]) {
            let n = from.len();
            if let (Some(head), Some(tail)) = (from.first_chunk::<W>(), from.last_chunk::<W>()) {
                to[..W].copy_from_slice(head);
                to[n - W..n].copy_from_slice(tail);
            }
        }
        match n {
            16.. => overlap::<16>(&mut self.bytes, b),
            8..16 => overlap::<8>(&mut self.bytes, b),
            4..8 => overlap::<4>(&mut self.bytes, b),
            _ => {
                for (to, from) in self.bytes.iter_mut().zip(b) {
                    *to = *from;
                }
            }
        }
        self.len = n as u8;
        true
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        let b = &self.bytes[..usize::from(self.len).min(InlineStr::CAPACITY)];
        // SAFETY: `set` is the only writer, and copies the bytes of a `str` whole before it
        // sets the length; the bytes beyond the length are never read.
        unsafe { std::str::from_utf8_unchecked(b) }
    }
}

/// Distinct strings [`SharedStr::interned`] keeps before it hands out counted ones: names
/// of sources (file paths) are few, but a daemon that runs for years must not grow without
/// bound if they are not. The first names stay: where files get new names forever (dated
/// rotations, one file per pod), later ones are counted, which costs an atomic count per
/// record, nothing more.
pub const MAX_INTERNED: usize = 4096;

/// Distinct field values [`SharedStr::interned_value`] keeps.
pub const MAX_INTERNED_VALUES: usize = 4096;

/// Longest field value [`SharedStr::interned_value`] keeps.
pub const MAX_INTERNED_VALUE_LEN: usize = 512;

/// Strings kept for the life of the process, each once.
struct Interner(OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>>);

impl Interner {
    const fn new() -> Interner {
        Interner(OnceLock::new())
    }

    /// The kept copy of `s`, kept now if fewer than `max` strings are; `None` if not.
    fn intern(&self, s: &str, max: usize) -> Option<&'static str> {
        let mut table = self
            .0
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&kept) = table.get(s) {
            return Some(kept);
        }
        if table.len() >= max {
            return None;
        }
        let kept: &'static str = Box::leak(s.into());
        table.insert(kept);
        Some(kept)
    }
}

impl SharedStr {
    /// `s` interned, so that records carrying it (every line of a file carries the file's
    /// path) clone it for free; counted instead once [`MAX_INTERNED`] strings are kept.
    pub fn interned(s: &str) -> SharedStr {
        static NAMES: Interner = Interner::new();
        match NAMES.intern(s, MAX_INTERNED) {
            Some(kept) => SharedStr::Interned(kept),
            None => SharedStr::Counted(s.into()),
        }
    }

    /// `s` interned like [`SharedStr::interned`], from a separate budget for field values
    /// (user agents, methods, `-`): at most [`MAX_INTERNED_VALUES`] strings of at most
    /// [`MAX_INTERNED_VALUE_LEN`] bytes, so the leak is bounded (2 MiB) and file names never
    /// compete with values. `None` once the budget is spent and `s` is not kept.
    pub fn interned_value(s: &str) -> Option<SharedStr> {
        static VALUES: Interner = Interner::new();
        if s.len() > MAX_INTERNED_VALUE_LEN {
            return None;
        }
        VALUES
            .intern(s, MAX_INTERNED_VALUES)
            .map(SharedStr::Interned)
    }

    /// `s` held inline if it is short enough ([`InlineStr::CAPACITY`]), else counted.
    #[inline]
    pub fn short(s: &str) -> SharedStr {
        match InlineStr::new(s) {
            Some(i) => SharedStr::Inline(i),
            None => SharedStr::Counted(s.into()),
        }
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match self {
            SharedStr::Counted(a) => a,
            SharedStr::Interned(s) => s,
            SharedStr::Inline(i) => i.as_str(),
        }
    }
}

impl std::ops::Deref for SharedStr {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for SharedStr {
    fn eq(&self, other: &SharedStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SharedStr {}

impl std::hash::Hash for SharedStr {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h);
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<std::sync::Arc<str>> for SharedStr {
    fn from(a: std::sync::Arc<str>) -> SharedStr {
        SharedStr::Counted(a)
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> SharedStr {
        SharedStr::Counted(s.into())
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> SharedStr {
        SharedStr::Counted(s.into())
    }
}

// ---------------------------------------------------------------------------------------------
// Record
// ---------------------------------------------------------------------------------------------

/// The datum of TOML-built trains: an event id plus named fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// The event's id, assigned by the input.
    pub id: EventId,
    /// The fields, in insertion order.
    pub fields: Map,
}

impl Record {
    /// An empty record with id 0.
    pub fn new() -> Record {
        Record::default()
    }

    /// An empty record with room for `n` top-level fields.
    pub fn with_capacity(n: usize) -> Record {
        Record {
            id: 0,
            fields: Map::with_capacity(n),
        }
    }

    /// The top-level field `key`.
    #[inline]
    pub fn get(&self, key: Key) -> Option<&Value> {
        self.fields.get(key)
    }

    /// The top-level field `key`, mutably.
    #[inline]
    pub fn get_mut(&mut self, key: Key) -> Option<&mut Value> {
        self.fields.get_mut(key)
    }

    /// Sets the top-level field `key`, returning the old value.
    #[inline]
    pub fn insert(&mut self, key: Key, value: Value) -> Option<Value> {
        self.fields.insert(key, value)
    }

    /// Removes the top-level field `key`.
    pub fn remove(&mut self, key: Key) -> Option<Value> {
        self.fields.remove(key)
    }

    /// The value at `path`; `None` if a step is missing or not a map.
    pub fn get_path(&self, path: &Path) -> Option<&Value> {
        let (first, rest) = path.keys.split_first()?;
        let mut v = self.fields.get(*first)?;
        for k in rest {
            v = match v {
                Value::Map(m) => m.get(*k)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// The value at `path`, mutably.
    pub fn get_path_mut(&mut self, path: &Path) -> Option<&mut Value> {
        let (first, rest) = path.keys.split_first()?;
        let mut v = self.fields.get_mut(*first)?;
        for k in rest {
            v = match v {
                Value::Map(m) => m.get_mut(*k)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// Stores `value` at `path`, creating missing intermediate maps and replacing
    /// intermediate values that are not maps.
    pub fn set_path(&mut self, path: &Path, value: Value) {
        let Some((last, parents)) = path.keys.split_last() else {
            return;
        };
        let mut map = &mut self.fields;
        for k in parents {
            let slot = map.slot(*k);
            if !matches!(slot, Value::Map(_)) {
                *slot = Value::Map(Map::new());
            }
            let Value::Map(m) = slot else {
                return;
            };
            map = m;
        }
        map.insert(*last, value);
    }

    /// Removes and returns the value at `path`.
    pub fn remove_path(&mut self, path: &Path) -> Option<Value> {
        let (last, parents) = path.keys.split_last()?;
        let mut map = &mut self.fields;
        for k in parents {
            map = match map.get_mut(*k)? {
                Value::Map(m) => m,
                _ => return None,
            };
        }
        map.remove(*last)
    }

    /// Empties the record for reuse: id 0, no fields, allocation kept.
    pub fn clear(&mut self) {
        self.id = 0;
        self.fields.clear();
    }

    /// Appends the fields as one JSON object, without a trailing newline. The id is not
    /// rendered; copy it into a field first if the output needs it.
    #[inline]
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.fields.write_json(out);
    }

    /// Parses a JSON object into a record with id 0; see [`Value::parse_json`].
    pub fn parse_json(input: &[u8]) -> Result<Record, JsonError> {
        match Value::parse_json(input)? {
            Value::Map(fields) => Ok(Record { id: 0, fields }),
            _ => Err(JsonError {
                offset: input
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .unwrap_or(0),
                msg: "expected a JSON object",
            }),
        }
    }
}

type MergeFn<D> = dyn Fn(&mut D, &mut Map);

/// Stores fields a cog produced (a parser's captures, say) into a datum, whatever its
/// layout: the counterpart of a [`Setter`] for many named values at once. The map is
/// left empty, its allocation kept for the next datum.
pub struct Merge<D> {
    f: Box<MergeFn<D>>,
}

impl<D> Merge<D> {
    /// Wraps a closure that moves the entries of the map into the datum.
    pub fn new(f: impl Fn(&mut D, &mut Map) + 'static) -> Self {
        Merge { f: Box::new(f) }
    }

    /// Moves `fields` into `d`.
    #[inline]
    pub fn merge(&self, d: &mut D, fields: &mut Map) {
        (self.f)(d, fields);
        fields.clear();
    }
}

impl<D> fmt::Debug for Merge<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Merge")
    }
}

/// Merges fields into a record: at the top level (`None`), or into the map at `target`
/// (created if missing, replacing a non-map value there).
pub fn merge_into(target: Option<Path>) -> Merge<Record> {
    match target {
        None => Merge::new(|r: &mut Record, fields: &mut Map| r.fields.merge_from(fields)),
        Some(path) => Merge::new(move |r: &mut Record, fields: &mut Map| {
            if !matches!(r.get_path(&path), Some(Value::Map(_))) {
                r.set_path(&path, Value::Map(Map::with_capacity(fields.len())));
            }
            if let Some(Value::Map(m)) = r.get_path_mut(&path) {
                for (k, v) in fields.drain() {
                    m.insert(k, v);
                }
            }
        }),
    }
}

/// Reads the text or bytes at a dotted path (`Str`, `Shared` or `Bytes`), the input of
/// parsing cogs.
pub fn bytes_at(path: Path) -> Getter<Record, [u8]> {
    Getter::new(move |r: &Record| r.get_path(&path).and_then(Value::as_bytes))
}

/// Getter and setter for the value at a dotted path: the setter creates intermediate maps.
pub fn field(path: &str) -> Result<Field<Record, Value>, PathError> {
    let get_path = Path::parse(path)?;
    let set_path = get_path.clone();
    Ok(Field::new(
        Getter::new(move |r: &Record| r.get_path(&get_path)),
        Setter::new(move |r: &mut Record, v: Value| r.set_path(&set_path, v)),
    ))
}

/// Mutable getter for the value at a dotted path, for cogs rewriting a value in place.
pub fn field_mut(path: &str) -> Result<MutGetter<Record, Value>, PathError> {
    let path = Path::parse(path)?;
    Ok(MutGetter::new(move |r: &mut Record| r.get_path_mut(&path)))
}

/// Getter and setter for the record's event id.
pub fn id_field() -> Field<Record, EventId> {
    Field::new(
        Getter::new(|r: &Record| Some(&r.id)),
        Setter::new(|r: &mut Record, id: EventId| r.id = id),
    )
}

// ---------------------------------------------------------------------------------------------
// JSON rendering
// ---------------------------------------------------------------------------------------------

/// Per byte: 0 if it can be copied into a JSON string as is, else the letter of its
/// escape (`u` for `\u00XX`). Also marks the bytes the parser must stop at in a string.
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

const TOO_MANY_KEYS: &str = "too many distinct field names in the input (see MAX_INPUT_KEYS)";

/// Where [`scan`] stopped.
struct Scan {
    /// Index of the first control character, `"` or `\`, or the length if none.
    at: usize,
    /// Whether every byte scanned before `at` was ASCII.
    ascii: bool,
}

/// Finds the first control character, `"` or `\` in `s` at or after `i`, noting on the way
/// whether all bytes before it are ASCII.
///
/// Most strings need no escaping at all, so this scan is most of the cost of rendering and
/// of parsing strings; it checks 16 bytes at a time with SSE2 where available (part of the
/// x86-64 baseline) and with plain integer arithmetic elsewhere. Callers that ignore
/// `ascii` get that part optimised away once this is inlined.
#[inline]
fn scan(s: &[u8], mut i: usize) -> Scan {
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
fn find_special(s: &[u8], i: usize) -> usize {
    scan(s, i).at
}

/// Bit `n` of the first mask is set when `chunk[n]` is a control character, `"` or `\`; of
/// the second, when `chunk[n]` is not ASCII.
#[inline]
fn masks16(chunk: &[u8; 16]) -> (u32, u32) {
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
fn masks(lo: u64, hi: u64) -> (u32, u32) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8,
    };
    // SAFETY: these intrinsics need only SSE2, which the `cfg` above guarantees is enabled
    // for the whole build, and they touch no memory. (Taking two integers rather than a
    // pointer for `_mm_loadu_si128` keeps callers in safe code; for bytes in memory the
    // compiler still emits one vector load.) Measured on the apache-like record of the speed example: with
    // `masks_swar` instead, rendering takes about 38% more instructions and 25% more time,
    // parsing about 30% more instructions and 18% more time.
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
fn masks_swar(lo: u64, hi: u64) -> (u32, u32) {
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
use masks_swar as masks;

/// The bytes of `s`, at most 16, as two little-endian words padded with spaces.
///
/// Assembled in registers from overlapping fixed-size loads: copying into a stack buffer
/// and reading it back as one vector stalls on store forwarding, and a short copy of
/// variable length is a call to `memcpy`.
#[inline]
fn short_words(s: &[u8]) -> (u64, u64) {
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
fn write_escaped(out: &mut Vec<u8>, s: &[u8]) {
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
fn extend_padded<const N: usize>(out: &mut Vec<u8>, bytes: &[u8; N], len: usize) {
    let end = out.len() + len.min(N);
    out.extend_from_slice(bytes);
    out.truncate(end);
}

/// Appends arbitrary bytes as a quoted JSON string, with each invalid UTF-8 sequence
/// replaced by U+FFFD (as `String::from_utf8_lossy` does), so the output is always valid.
fn write_escaped_lossy(out: &mut Vec<u8>, b: &[u8]) {
    // `from_utf8` checks ASCII a word at a time, where `utf8_chunks` goes byte by byte:
    // on raw log lines (nearly always valid) that was a fifth of a whole JSON run.
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
const DIGIT_PAIRS: [u8; 200] = {
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
fn write_u64(out: &mut Vec<u8>, mut n: u64) {
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
fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Appends a float as the shortest text that parses back to it, `null` if non-finite.
fn write_f64(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        // `{:?}` is shortest-round-trip, keeps a `.0` on integral values (so they parse back
        // as floats) and switches to exponent form for very large or small magnitudes; all
        // of its finite outputs are valid JSON numbers. Writing to a Vec cannot fail.
        let _ = write!(out, "{f:?}");
    } else {
        out.extend_from_slice(b"null");
    }
}

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

/// Appends the text of `ip`, as its `Display` writes it.
pub(crate) fn write_ip(out: &mut Vec<u8>, ip: &IpAddr) {
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
fn write_ipv6(out: &mut Vec<u8>, a: &Ipv6Addr) {
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

// ---------------------------------------------------------------------------------------------
// JSON parsing
// ---------------------------------------------------------------------------------------------

/// Why a JSON text did not parse, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset into the input where the problem was found.
    pub offset: usize,
    /// What was wrong.
    pub msg: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.msg)
    }
}

impl std::error::Error for JsonError {}

/// Deepest nesting of arrays and objects accepted; keeps recursion well inside the stack.
const MAX_DEPTH: usize = 128;

/// Objects with more entries than this get a hash index while parsing, so a hostile object
/// with many keys costs linear time instead of quadratic duplicate checks.
const INDEX_OBJECT_ABOVE: usize = 16;

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

/// A parsed JSON string before it becomes a value or a key.
enum Piece {
    /// `input[from..to]` holds the text as is; its UTF-8 is not yet checked unless `ascii`.
    Raw { from: usize, to: usize, ascii: bool },
    /// The text had escapes and was decoded (and checked).
    Decoded(String),
}

impl<'a> Parser<'a> {
    fn err(&self, msg: &'static str) -> JsonError {
        JsonError {
            offset: self.pos,
            msg,
        }
    }

    fn err_at(offset: usize, msg: &'static str) -> JsonError {
        JsonError { offset, msg }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Parses a value at `depth` containers deep, after optional whitespace, into `out`.
    ///
    /// Values are parsed in place, into their final slot in the parent list or map:
    /// returning them instead copies each through the stack, twice, and those copies stall
    /// on store forwarding.
    fn value(&mut self, depth: usize, out: &mut Value) -> Result<(), JsonError> {
        self.skip_ws();
        match self.peek() {
            None => return Err(self.err("unexpected end of input")),
            Some(b'{' | b'[') if depth >= MAX_DEPTH => return Err(self.err("nesting too deep")),
            Some(b'{') => {
                self.pos += 1;
                // Top-level objects are usually records of a dozen or so fields: sized up
                // front, they skip the reallocations of growing from empty.
                let map = if depth == 0 {
                    Map::with_capacity(16)
                } else {
                    Map::new()
                };
                *out = Value::Map(map);
                if let Value::Map(map) = out {
                    self.object(depth + 1, map)?;
                }
            }
            Some(b'[') => {
                self.pos += 1;
                *out = Value::List(Vec::new());
                if let Value::List(items) = out {
                    self.array(depth + 1, items)?;
                }
            }
            Some(b'"') => {
                self.pos += 1;
                *out = Value::Str(self.string()?);
            }
            Some(b't') => *out = self.literal(b"true", Value::Bool(true))?,
            Some(b'f') => *out = self.literal(b"false", Value::Bool(false))?,
            Some(b'n') => *out = self.literal(b"null", Value::Null)?,
            Some(b'-' | b'0'..=b'9') => *out = self.number()?,
            Some(_) => return Err(self.err("expected a JSON value")),
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8], v: Value) -> Result<Value, JsonError> {
        if self
            .input
            .get(self.pos..)
            .is_some_and(|r| r.starts_with(word))
        {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    /// After the `[`.
    fn array(&mut self, depth: usize, items: &mut Vec<Value>) -> Result<(), JsonError> {
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            items.push(Value::Null);
            if let Some(slot) = items.last_mut() {
                self.value(depth, slot)?;
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                None => return Err(self.err("unexpected end of input")),
                Some(_) => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    /// After the `{`.
    fn object(&mut self, depth: usize, map: &mut Map) -> Result<(), JsonError> {
        let mut index: Option<HashMap<Key, usize>> = None;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'"') => self.pos += 1,
                None => return Err(self.err("unexpected end of input")),
                Some(_) => return Err(self.err("expected a string key")),
            }
            let key = self.key()?;
            self.skip_ws();
            match self.peek() {
                Some(b':') => self.pos += 1,
                None => return Err(self.err("unexpected end of input")),
                Some(_) => return Err(self.err("expected ':'")),
            }
            let entries = &mut map.entries;
            if index.is_none() && entries.len() >= INDEX_OBJECT_ABOVE {
                index = Some(
                    entries
                        .iter()
                        .enumerate()
                        .map(|(i, (k, _))| (*k, i))
                        .collect(),
                );
            }
            // A duplicate key is parsed over the earlier value: the last one wins, in the
            // first one's position.
            let next = entries.len();
            let i = match &mut index {
                None => entries.iter().position(|(k, _)| *k == key).unwrap_or(next),
                Some(index) => *index.entry(key).or_insert(next),
            };
            if i == next {
                // Rather than `push`, which assembles the pair on the stack and copies it out
                // with wide loads that stall on the narrow stores just made.
                entries.resize_with(next + 1, || (key, Value::Null));
            }
            if let Some((_, slot)) = entries.get_mut(i) {
                self.value(depth, slot)?;
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                None => return Err(self.err("unexpected end of input")),
                Some(_) => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    /// Checks `input[from..to]` (a run between escapes) is UTF-8. Escapes are ASCII, so no
    /// valid character can straddle one and each run must be valid on its own.
    fn utf8(&self, from: usize, to: usize) -> Result<&'a str, JsonError> {
        let input = self.input;
        let run = input.get(from..to).unwrap_or_default();
        std::str::from_utf8(run)
            .map_err(|e| Parser::err_at(from + e.valid_up_to(), "invalid UTF-8 in string"))
    }

    /// A string value, after its opening `"`.
    fn string(&mut self) -> Result<String, JsonError> {
        match self.string_piece()? {
            Piece::Raw {
                from,
                to,
                ascii: true,
            } => {
                let ascii = self.input.get(from..to).unwrap_or_default();
                // SAFETY: `scan` found only ASCII bytes in this span, and ASCII is UTF-8.
                // Measured: skipping a second pass over the text saves about a tenth of the
                // instructions spent parsing the apache-like record of the speed example.
                Ok(String::from(unsafe {
                    std::str::from_utf8_unchecked(ascii)
                }))
            }
            Piece::Raw { from, to, .. } => self.utf8(from, to).map(String::from),
            Piece::Decoded(s) => Ok(s),
        }
    }

    /// An object key, after its opening `"`.
    fn key(&mut self) -> Result<Key, JsonError> {
        match self.string_piece()? {
            // A cache hit matched the bytes of a valid name, so they need no UTF-8 check.
            Piece::Raw { from, to, .. } => {
                match Key::cached(self.input.get(from..to).unwrap_or_default()) {
                    Some(k) => Ok(k),
                    None => {
                        let name = self.utf8(from, to)?;
                        Key::from_input(name).ok_or_else(|| Parser::err_at(from, TOO_MANY_KEYS))
                    }
                }
            }
            Piece::Decoded(s) => {
                Key::from_input(&s).ok_or_else(|| Parser::err_at(self.pos, TOO_MANY_KEYS))
            }
        }
    }

    /// The contents of a string, after its opening `"`: the span of the input when there are
    /// no escapes (UTF-8 not yet checked), else the decoded text.
    fn string_piece(&mut self) -> Result<Piece, JsonError> {
        let start = self.pos;
        let Scan { at: mut i, ascii } = scan(self.input, start);
        match self.input.get(i) {
            Some(b'"') => {
                self.pos = i + 1;
                return Ok(Piece::Raw {
                    from: start,
                    to: i,
                    ascii,
                });
            }
            Some(b'\\') => {}
            Some(_) => return Err(Parser::err_at(i, "control character in string")),
            None => return Err(Parser::err_at(i, "unterminated string")),
        }
        let mut buf = String::with_capacity(i - start + 16);
        let mut run = start;
        loop {
            buf.push_str(self.utf8(run, i)?);
            match self.input.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(Piece::Decoded(buf));
                }
                Some(b'\\') => i = self.escape(i, &mut buf)?,
                Some(_) => return Err(Parser::err_at(i, "control character in string")),
                None => return Err(Parser::err_at(i, "unterminated string")),
            }
            run = i;
            i = find_special(self.input, i);
        }
    }

    /// Decodes the escape whose `\` is at `at` into `buf`; returns the offset after it.
    fn escape(&self, at: usize, buf: &mut String) -> Result<usize, JsonError> {
        let c = match self.input.get(at + 1) {
            None => return Err(Parser::err_at(at + 1, "unterminated string")),
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let hi = self.hex4(at + 2)?;
                let (cp, end) = match hi {
                    0xD800..=0xDBFF => {
                        if self.input.get(at + 6..at + 8) != Some(b"\\u") {
                            return Err(Parser::err_at(at, "lone surrogate in \\u escape"));
                        }
                        let lo = self.hex4(at + 8)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(Parser::err_at(at, "lone surrogate in \\u escape"));
                        }
                        (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), at + 12)
                    }
                    _ => (hi, at + 6),
                };
                // Fails only for a low surrogate on its own.
                let c = char::from_u32(cp)
                    .ok_or_else(|| Parser::err_at(at, "lone surrogate in \\u escape"))?;
                buf.push(c);
                return Ok(end);
            }
            Some(_) => return Err(Parser::err_at(at + 1, "invalid escape")),
        };
        buf.push(c);
        Ok(at + 2)
    }

    fn hex4(&self, at: usize) -> Result<u32, JsonError> {
        let Some(digits) = self.input.get(at..at + 4) else {
            return Err(Parser::err_at(
                at.min(self.input.len()),
                "truncated \\u escape",
            ));
        };
        let mut n = 0;
        for (i, &d) in digits.iter().enumerate() {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(Parser::err_at(at + i, "invalid hex digit in \\u escape")),
            };
            n = n << 4 | u32::from(v);
        }
        Ok(n)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        let neg = self.peek() == Some(b'-');
        if neg {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        let int_end = self.pos;
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.err("expected digits after '.'"));
            }
            float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("expected digits in exponent"));
            }
            float = true;
        }
        if !float {
            // Accumulate negatively so i64::MIN fits.
            let mut acc: Option<i64> = Some(0);
            for &d in self.input.get(int_start..int_end).unwrap_or_default() {
                acc = acc
                    .and_then(|a| a.checked_mul(10))
                    .and_then(|a| a.checked_sub(i64::from(d - b'0')));
            }
            if let Some(n) = if neg {
                acc
            } else {
                acc.and_then(i64::checked_neg)
            } {
                return Ok(Value::Int(n));
            }
            // Beyond i64: a float would lose digits, so the text is kept as it is. `-0`
            // fits, so the text never has a leading zero.
            let text = self.utf8(start, self.pos)?;
            return Ok(Value::BigInt(text.into()));
        }
        let text = self.utf8(start, self.pos)?;
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Float(f)),
            _ => Err(Parser::err_at(start, "number out of range")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_text_is_kept_once_and_compares_as_text() {
        let a = SharedStr::interned("/var/log/interned-test.log");
        let b = SharedStr::interned(&String::from("/var/log/interned-test.log"));
        match (&a, &b) {
            (SharedStr::Interned(x), SharedStr::Interned(y)) => assert!(std::ptr::eq(*x, *y)),
            _ => panic!("not interned: {a:?} {b:?}"),
        }
        assert_eq!(a, SharedStr::from("/var/log/interned-test.log"));
        assert_eq!(
            Value::Shared(a.clone()),
            Value::Str("/var/log/interned-test.log".into())
        );
        assert_eq!(&*a, "/var/log/interned-test.log");
    }

    #[test]
    fn short_text_is_held_inline_whole() {
        let text = "ab\u{e9}cd\u{1F600}efghijklmnopqrstuvwxyz0123456789";
        for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let s = &text[..end];
            let shared = SharedStr::short(s);
            assert_eq!(shared.as_str(), s);
            assert_eq!(shared.clone().as_str(), s);
            match (&shared, InlineStr::new(s)) {
                (SharedStr::Inline(i), Some(_)) => {
                    assert!(s.len() <= InlineStr::CAPACITY);
                    assert_eq!(i.as_str(), s);
                }
                (SharedStr::Counted(_), None) => assert!(s.len() > InlineStr::CAPACITY),
                (other, inline) => panic!("{s:?}: {other:?} / inline {:?}", inline.is_some()),
            }
            assert_eq!(Value::Shared(shared), Value::Str(s.to_string()));
        }
    }

    #[test]
    fn interned_values_are_bounded_in_count_and_length() {
        let first = SharedStr::interned_value("Mozilla/5.0 (interned-value-test)");
        let again = SharedStr::interned_value("Mozilla/5.0 (interned-value-test)");
        match (&first, &again) {
            (Some(SharedStr::Interned(x)), Some(SharedStr::Interned(y))) => {
                assert!(std::ptr::eq(*x, *y))
            }
            _ => panic!("not interned: {first:?} {again:?}"),
        }
        let long = "x".repeat(MAX_INTERNED_VALUE_LEN + 1);
        assert!(SharedStr::interned_value(&long).is_none());
        // Other tests intern values too: count the refusals, not the insertions.
        let refused = (0..=MAX_INTERNED_VALUES)
            .filter(|i| SharedStr::interned_value(&format!("budget-test-{i}")).is_none())
            .count();
        assert!(
            refused >= 1,
            "the budget of {MAX_INTERNED_VALUES} values was not enforced"
        );
        assert!(
            SharedStr::interned_value("Mozilla/5.0 (interned-value-test)").is_some(),
            "a kept value is still found once the budget is spent"
        );
    }

    #[test]
    fn parse_ip_agrees_with_the_standard_parser() {
        let fixed = [
            "1.2.3.4",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3",
            "1.2.3.4.",
            ".1.2.3.4",
            "1..2.3",
            "1.2.3.4.5",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.-4",
            "1.2.3.+4",
            "1000.1.1.1",
            "10.0.0.0",
            "::1",
            "::",
            "fe80::1%eth0",
            "2001:db8::1",
            "::ffff:1.2.3.4",
            "",
            "a.b.c.d",
            "1.2.3.4a",
            "0.00.0.0",
        ];
        let mut inputs: Vec<Vec<u8>> = fixed.iter().map(|s| s.as_bytes().to_vec()).collect();
        // And random strings over the characters that matter.
        let alphabet = b"0123456789.:af";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 17) as usize;
            inputs.push(
                (0..len)
                    .map(|i| alphabet[((x >> (i * 3)) % alphabet.len() as u64) as usize])
                    .collect(),
            );
        }
        // IPv6-like strings: few symbols, so that valid forms come up often.
        let alphabet = b"0:1::fA";
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 2 + (x % 24) as usize;
            let mut y = x;
            inputs.push(
                (0..len)
                    .map(|_| {
                        y = y.wrapping_mul(6364136223846793005).wrapping_add(1);
                        alphabet[(y >> 59) as usize % alphabet.len()]
                    })
                    .collect(),
            );
        }
        for s in [
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8::",
        ] {
            inputs.push(s.as_bytes().to_vec());
        }
        let mut accepted = 0;
        for input in &inputs {
            let std = std::str::from_utf8(input)
                .ok()
                .and_then(|s| s.parse::<IpAddr>().ok());
            assert_eq!(parse_ip(input), std, "{:?}", String::from_utf8_lossy(input));
            accepted += usize::from(std.is_some());
        }
        assert!(accepted > 1000, "only {accepted} valid inputs tried");
    }

    #[test]
    fn ip_text_is_what_display_writes() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut out = Vec::new();
        for i in 0..50_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Groups are zero half the time, to make runs of every length.
            let mut g = [0u16; 8];
            for (k, slot) in g.iter_mut().enumerate() {
                if x >> (k + 40) & 1 == 1 {
                    *slot = (x >> (k * 5)) as u16 & [0xf, 0xff, 0xfff, 0xffff][k % 4];
                }
            }
            if i % 97 == 0 {
                g[..6].copy_from_slice(&[0, 0, 0, 0, 0, 0xffff]);
            }
            let a = Ipv6Addr::from(g);
            out.clear();
            write_ipv6(&mut out, &a);
            assert_eq!(std::str::from_utf8(&out), Ok(a.to_string().as_str()));
            // And IPv4, every octet value in every position over the run.
            let v4 = Ipv4Addr::from((x as u32).rotate_left(i % 32) ^ ((i % 256) * 0x0101_0101));
            out.clear();
            write_ip(&mut out, &IpAddr::V4(v4));
            assert_eq!(std::str::from_utf8(&out), Ok(v4.to_string().as_str()));
        }
    }

    fn json(v: &Value) -> String {
        let mut out = Vec::new();
        v.write_json(&mut out);
        String::from_utf8(out).expect("rendered JSON is UTF-8")
    }

    fn parse(s: &str) -> Result<Value, JsonError> {
        Value::parse_json(s.as_bytes())
    }

    fn ts(t: Timestamp) -> String {
        let mut out = Vec::new();
        t.write_rfc3339(&mut out);
        String::from_utf8(out).expect("timestamp is ASCII")
    }

    fn map(entries: &[(&str, Value)]) -> Map {
        entries
            .iter()
            .map(|(k, v)| (Key::new(k), v.clone()))
            .collect()
    }

    fn path(s: &str) -> Path {
        Path::parse(s).expect("valid path")
    }

    // --- keys -------------------------------------------------------------------------------

    #[test]
    fn names_from_input_are_refused_once_the_interner_is_full() {
        let known = Key::new("known-name");
        assert_eq!(Key::from_input_within("known-name", 0), Some(known));
        assert_eq!(
            Key::from_input_within("a-name-nobody-interned-yet", 0),
            None
        );
        assert!(Key::try_existing("a-name-nobody-interned-yet").is_none());
        assert!(Key::from_input("a-name-nobody-interned-yet").is_some());
    }

    #[test]
    fn merge_into_top_level_and_target() {
        let mut fields = Map::new();
        let mut r = Record::new();
        r.insert(Key::new("message"), Value::from("x"));
        fields.insert(Key::new("status"), Value::Int(200));
        merge_into(None).merge(&mut r, &mut fields);
        assert!(fields.is_empty());
        fields.insert(Key::new("ip"), Value::from("10.0.0.1"));
        r.insert(Key::new("src"), Value::Int(1));
        merge_into(Some(Path::parse("src").unwrap())).merge(&mut r, &mut fields);
        let mut json = Vec::new();
        r.write_json(&mut json);
        assert_eq!(
            json,
            br#"{"message":"x","status":200,"src":{"ip":"10.0.0.1"}}"#
        );
        assert_eq!(
            bytes_at(Path::parse("message").unwrap()).get(&r),
            Some(&b"x"[..])
        );
        assert_eq!(bytes_at(Path::parse("status").unwrap()).get(&r), None);
    }

    #[test]
    fn merge_from_is_insert_one_by_one() {
        // 150 keys: ids collide in the 64-bit summary, so both the in-place and the
        // false-alarm paths run.
        let keys: Vec<Key> = (0..150)
            .map(|i| Key::new(&format!("merge-key-{i}")))
            .collect();
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..2_000 {
            let mut a = Map::new();
            let mut b = Map::new();
            for _ in 0..next(12) {
                a.insert(keys[next(150) as usize], Value::Int(round));
            }
            for i in 0..next(12) {
                b.insert(keys[next(150) as usize], Value::Int(-(i as i64)));
            }
            let mut want = a.clone();
            for (k, v) in b.iter() {
                want.insert(k, v.clone());
            }
            let mut from = b.clone();
            a.merge_from(&mut from);
            assert!(from.is_empty());
            let order = |m: &Map| m.iter().map(|(k, v)| (k, v.clone())).collect::<Vec<_>>();
            assert_eq!(order(&a), order(&want), "round {round}");
        }
    }

    #[test]
    fn shared_text_renders_and_compares_as_text() {
        let shared = Value::from(std::sync::Arc::<str>::from("/var/log/a \"b\".log"));
        assert_eq!(shared.to_string(), r#""/var/log/a \"b\".log""#);
        assert_eq!(shared, Value::Str("/var/log/a \"b\".log".into()));
        assert_eq!(shared.type_name(), "string");
        assert_ne!(shared, Value::Bytes(b"/var/log/a \"b\".log".to_vec()));
        assert_eq!(
            Value::from(std::sync::Arc::<str>::from("::1")).as_ip(),
            Some("::1".parse().unwrap())
        );
    }

    #[test]
    fn keys_intern_and_order_by_name() {
        let a = Key::new("zeta-test-key");
        let b = Key::new("alpha-test-key");
        assert_eq!(a, Key::new("zeta-test-key"));
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "zeta-test-key");
        assert_eq!(a.to_string(), "zeta-test-key");
        assert_eq!(format!("{a:?}"), "Key(\"zeta-test-key\")");
        assert!(b < a);
        assert_eq!(Key::try_existing("zeta-test-key"), Some(a));
        assert_eq!(Key::try_existing("never-interned-key-xyz"), None);
    }

    #[test]
    fn keys_span_segments_and_threads() {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    (0..300)
                        .map(|i| {
                            let name = format!("seg-{}-{i}", i % 150);
                            let k = Key::new(&name);
                            assert_eq!(k.as_str(), name, "thread {t}");
                            k
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Vec<Key>> = handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect();
        for keys in &all[1..] {
            assert_eq!(keys, &all[0]);
        }
    }

    #[test]
    fn slot_layout() {
        assert_eq!(slot_of(0), (0, 0));
        assert_eq!(slot_of(63), (0, 63));
        assert_eq!(slot_of(64), (1, 0));
        assert_eq!(slot_of(191), (1, 127));
        assert_eq!(slot_of(192), (2, 0));
        assert_eq!(slot_of(u32::MAX).0, SEGMENTS - 1);
    }

    #[test]
    fn key_with_quote_renders_escaped() {
        let m = map(&[("we\"ird\n", Value::Int(1))]);
        assert_eq!(json(&Value::Map(m)), r#"{"we\"ird\n":1}"#);
        // Names too long for the padded copy take the plain one.
        let long = "a-field-name-well-past-thirty-two-bytes-long";
        let m = map(&[
            ("x", Value::Null),
            (long, Value::Int(2)),
            ("", Value::Int(3)),
        ]);
        let text = json(&Value::Map(m.clone()));
        assert_eq!(text, format!(r#"{{"x":null,"{long}":2,"":3}}"#));
        assert_eq!(parse(&text), Ok(Value::Map(m)));
    }

    #[test]
    fn escaped_object_keys_intern_to_the_same_key() {
        let v = parse(r#"{"a\u0062":1,"\u00e9t\u00e9":2}"#).expect("valid");
        let Value::Map(m) = v else {
            panic!("expected a map");
        };
        assert_eq!(m.get(Key::new("ab")), Some(&Value::Int(1)));
        assert_eq!(m.get(Key::new("été")), Some(&Value::Int(2)));
    }

    // --- rendering --------------------------------------------------------------------------

    #[test]
    fn renders_every_variant() {
        assert_eq!(json(&Value::Null), "null");
        assert_eq!(json(&Value::Bool(true)), "true");
        assert_eq!(json(&Value::Bool(false)), "false");
        assert_eq!(json(&Value::Int(0)), "0");
        assert_eq!(json(&Value::Int(-42)), "-42");
        assert_eq!(json(&Value::Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(json(&Value::Int(i64::MAX)), "9223372036854775807");
        assert_eq!(json(&Value::Float(1.5)), "1.5");
        assert_eq!(json(&Value::Float(2.0)), "2.0");
        assert_eq!(json(&Value::Float(-0.0)), "-0.0");
        assert_eq!(json(&Value::Float(1e300)), "1e300");
        assert_eq!(json(&Value::Float(1.5e-7)), "1.5e-7");
        assert_eq!(json(&Value::Float(f64::NAN)), "null");
        assert_eq!(json(&Value::Float(f64::INFINITY)), "null");
        assert_eq!(json(&Value::Float(f64::NEG_INFINITY)), "null");
        assert_eq!(json(&Value::from("héllo")), r#""héllo""#);
        assert_eq!(json(&Value::Bytes(b"raw line".to_vec())), r#""raw line""#);
        assert_eq!(
            json(&Value::Time(Timestamp::new(1_795_776_277, 123_000_000, 60))),
            r#""2026-11-27T11:44:37.123+01:00""#
        );
        let v4: IpAddr = "192.168.0.255".parse().expect("ip");
        assert_eq!(json(&Value::Ip(v4)), r#""192.168.0.255""#);
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(json(&Value::Ip(v6)), r#""2001:db8::1""#);
        let net: IpNet = "10.0.0.0/8".parse().expect("net");
        assert_eq!(json(&Value::Net(net)), r#""10.0.0.0/8""#);
        let net6: IpNet = "fe80::/10".parse().expect("net");
        assert_eq!(json(&Value::Net(net6)), r#""fe80::/10""#);
        assert_eq!(json(&Value::List(vec![])), "[]");
        assert_eq!(
            json(&Value::List(vec![Value::Int(1), Value::Null, "x".into()])),
            r#"[1,null,"x"]"#
        );
        assert_eq!(json(&Value::Map(Map::new())), "{}");
        let m = map(&[
            ("a", Value::Int(1)),
            (
                "b",
                Value::Map(map(&[("c", Value::List(vec![Value::Bool(true)]))])),
            ),
        ]);
        assert_eq!(json(&Value::Map(m)), r#"{"a":1,"b":{"c":[true]}}"#);
        assert_eq!(Value::Int(7).to_string(), "7");
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        let s: String = (0u8..0x20).map(char::from).collect();
        assert_eq!(
            json(&Value::Str(s)),
            "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\
             \\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\
             \\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\""
        );
        assert_eq!(
            json(&Value::from("say \"hi\" \\ bye\u{7f}/")),
            "\"say \\\"hi\\\" \\\\ bye\u{7f}/\""
        );
        // Escapes at every position around the 8-byte word boundaries.
        for n in 0..20 {
            let s = format!("{}\"{}", "a".repeat(n), "b".repeat(n));
            assert_eq!(
                json(&Value::Str(s)),
                format!("\"{}\\\"{}\"", "a".repeat(n), "b".repeat(n))
            );
        }
    }

    #[test]
    fn scan_matches_bytewise_scan() {
        // Small LCG so the test needs no dependency.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let alphabet = b"ab\"\\\x00\x1f \x7f\x80\xff\xe2\x21\x5b\x5d\x20\x1e";
        for _ in 0..2000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let len = (seed >> 58) as usize;
            let s: Vec<u8> = (0..len)
                .map(|i| {
                    let x = seed.rotate_left(i as u32 * 5);
                    if x.is_multiple_of(5) {
                        alphabet[(x >> 8) as usize % alphabet.len()]
                    } else {
                        b'a' + (x >> 16) as u8 % 26
                    }
                })
                .collect();
            for from in 0..=s.len() {
                let naive = (from..s.len())
                    .find(|&i| ESCAPE[usize::from(s[i])] != 0)
                    .unwrap_or(s.len());
                let got = scan(&s, from);
                assert_eq!(got.at, naive, "{s:?} from {from}");
                assert_eq!(got.ascii, s[from..naive].is_ascii(), "{s:?} from {from}");
            }
            if let Some(chunk) = s.first_chunk::<16>() {
                let special = (0..16)
                    .filter(|&i| ESCAPE[usize::from(chunk[i])] != 0)
                    .fold(0, |m, i| m | 1 << i);
                let high = (0..16)
                    .filter(|&i| chunk[i] >= 0x80)
                    .fold(0, |m, i| m | 1 << i);
                assert_eq!(masks16(chunk), (special, high), "{chunk:?}");
                let lo = u64::from_le_bytes(*chunk.first_chunk::<8>().expect("16 bytes"));
                let hi = u64::from_le_bytes(*chunk.last_chunk::<8>().expect("16 bytes"));
                assert_eq!(masks_swar(lo, hi), (special, high), "{chunk:?}");
            }
            if s.len() <= 16 {
                let mut padded = [b' '; 16];
                padded[..s.len()].copy_from_slice(&s);
                let (lo, hi) = short_words(&s);
                assert_eq!([lo.to_le_bytes(), hi.to_le_bytes()].concat(), padded);
            }
        }
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([b; 8]);
            assert_eq!(masks(w, w), masks_swar(w, w), "{b}");
        }
    }

    /// The plain, obviously right escaper that the fast one must agree with.
    fn reference_json_string(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn escaping_agrees_with_reference_at_every_length() {
        let pieces = [
            "a", "Z", "\"", "\\", "\n", "\u{1}", "\u{1f}", "é", "€", "😀", " ", "\u{7f}",
        ];
        let mut seed = 7u64;
        for len in 0..70 {
            for _ in 0..40 {
                let mut s = String::new();
                while s.len() < len {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    // Mostly plain letters, as real text is.
                    let i = (seed >> 59) as usize;
                    s.push_str(pieces.get(i).copied().unwrap_or("x"));
                }
                let want = reference_json_string(&s);
                assert_eq!(json(&Value::Str(s.clone())), want, "{s:?}");
                assert_eq!(json(&Value::Bytes(s.clone().into_bytes())), want, "{s:?}");
                let mut raw = s.clone().into_bytes();
                raw.push(0xff);
                raw.extend_from_slice(s.as_bytes());
                assert_eq!(
                    json(&Value::Bytes(raw.clone())),
                    reference_json_string(&String::from_utf8_lossy(&raw)),
                    "{raw:?}"
                );
                assert_eq!(parse(&want), Ok(Value::Str(s)));
            }
        }
    }

    #[test]
    fn integers_render_like_display() {
        let mut cases = vec![0, 1, -1, 9, 10, 99, 100, i64::MAX, i64::MIN, i64::MIN + 1];
        for p in 1..19 {
            let n = 10i64.pow(p);
            cases.extend([n - 1, n, n + 1, -n + 1, -n, -n - 1]);
        }
        for n in cases {
            assert_eq!(json(&Value::Int(n)), n.to_string());
            assert_eq!(parse(&n.to_string()), Ok(Value::Int(n)));
        }
    }

    #[test]
    fn invalid_utf8_bytes_become_replacement_chars() {
        let v = Value::Bytes(b"ok \xff\xfe end \xe2\x82 \"q\"".to_vec());
        let out = json(&v);
        assert_eq!(out, "\"ok \u{FFFD}\u{FFFD} end \u{FFFD} \\\"q\\\"\"");
        assert_eq!(
            parse(&out).expect("valid JSON"),
            Value::from("ok \u{FFFD}\u{FFFD} end \u{FFFD} \"q\"")
        );
        assert_eq!(v.as_str(), None);
        assert_eq!(v.as_bytes().map(<[u8]>::len), Some(16));
    }

    #[test]
    fn record_renders_fields_without_id() {
        let mut r = Record::with_capacity(4);
        r.id = 99;
        r.insert(Key::new("msg"), Value::Bytes(b"hello\tworld".to_vec()));
        r.insert(Key::new("n"), Value::Int(3));
        let mut out = b"prefix ".to_vec();
        r.write_json(&mut out);
        assert_eq!(out, b"prefix {\"msg\":\"hello\\tworld\",\"n\":3}");
    }

    // --- parsing ----------------------------------------------------------------------------

    #[test]
    fn round_trips_nested_values() {
        let v = Value::Map(map(&[
            ("null", Value::Null),
            ("t", Value::Bool(true)),
            ("f", Value::Bool(false)),
            ("int", Value::Int(-17)),
            ("min", Value::Int(i64::MIN)),
            ("max", Value::Int(i64::MAX)),
            ("float", Value::Float(0.1)),
            ("whole", Value::Float(3.0)),
            ("tiny", Value::Float(5e-324)),
            ("huge", Value::Float(f64::MAX)),
            ("s", Value::from("tab\t \"quote\" \\ \u{1} ünï 😀 \u{7f}")),
            ("empty", Value::from("")),
            (
                "list",
                Value::List(vec![
                    Value::List(vec![]),
                    Value::Map(Map::new()),
                    Value::List(vec![Value::Int(1), Value::Map(map(&[("x", Value::Null)]))]),
                ]),
            ),
            (
                "m",
                Value::Map(map(&[("deep", Value::Map(map(&[("er", 1.into())])))])),
            ),
        ]));
        let text = json(&v);
        assert_eq!(parse(&text), Ok(v.clone()));
        // And with whitespace everywhere it is allowed.
        let spaced = text
            .replace(',', " ,\n ")
            .replace(':', "\t:\r ")
            .replace('[', "[ ")
            .replace('{', " { ");
        // (No string in `v` contains any of the replaced characters.)
        assert_eq!(
            parse(&format!("\n {spaced} \n")).map(|p| json(&p)),
            Ok(text)
        );
    }

    #[test]
    fn parses_escapes_and_surrogates() {
        assert_eq!(
            parse(r#""\"\\\/\b\f\n\r\t\u0041\u00e9\u20AC\ud83d\ude00""#),
            Ok(Value::from("\"\\/\u{8}\u{c}\n\r\tAé€😀"))
        );
        assert_eq!(parse(r#""a\u0000b""#), Ok(Value::from("a\0b")));
        for bad in [
            r#""\ud83d""#,
            r#""\ud83dx""#,
            r#""\ud83d\n""#,
            r#""\ud83d\u0041""#,
            r#""\ude00""#,
            r#""\ude00\ud83d""#,
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.msg, "lone surrogate in \\u escape", "{bad}");
        }
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"", 0, "unexpected end of input"),
            (b"   ", 3, "unexpected end of input"),
            (b"{", 1, "unexpected end of input"),
            (b"{\"a\"", 4, "unexpected end of input"),
            (b"{\"a\":", 5, "unexpected end of input"),
            (b"{\"a\":1", 6, "unexpected end of input"),
            (b"[1,", 3, "unexpected end of input"),
            (b"[1", 2, "unexpected end of input"),
            (b"\"abc", 4, "unterminated string"),
            (b"\"abc\\", 5, "unterminated string"),
            (b"\"\\u12", 3, "truncated \\u escape"),
            (b"\"\\x\"", 2, "invalid escape"),
            (b"\"\\u12g4\"", 5, "invalid hex digit in \\u escape"),
            (b"\"a\nb\"", 2, "control character in string"),
            (b"\"\xff\"", 1, "invalid UTF-8 in string"),
            (b"\"ok\\n\xc3\"", 5, "invalid UTF-8 in string"),
            (b"tru", 0, "invalid literal"),
            (b"nul", 0, "invalid literal"),
            (b"True", 0, "expected a JSON value"),
            (b"1 2", 2, "trailing characters after JSON value"),
            (b"{}x", 2, "trailing characters after JSON value"),
            (b"truex", 4, "trailing characters after JSON value"),
            (b"01", 1, "trailing characters after JSON value"),
            (b"[1,]", 3, "expected a JSON value"),
            (b"[1 2]", 3, "expected ',' or ']'"),
            (b"{\"a\":1,}", 7, "expected a string key"),
            (b"{a:1}", 1, "expected a string key"),
            (b"{\"a\" 1}", 5, "expected ':'"),
            (b"{\"a\":1 \"b\":2}", 7, "expected ',' or '}'"),
            (b"-", 1, "invalid number"),
            (b"-a", 1, "invalid number"),
            (b"1.", 2, "expected digits after '.'"),
            (b"1.e3", 2, "expected digits after '.'"),
            (b"1e", 2, "expected digits in exponent"),
            (b"1e+", 3, "expected digits in exponent"),
            (b".5", 0, "expected a JSON value"),
            (b"+1", 0, "expected a JSON value"),
            (b"1e400", 0, "number out of range"),
            (b"-1e400", 0, "number out of range"),
        ];
        for &(input, offset, msg) in cases {
            let e = Value::parse_json(input).expect_err(&String::from_utf8_lossy(input));
            assert_eq!(
                (e.offset, e.msg),
                (offset, msg),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let e = JsonError {
            offset: 3,
            msg: "invalid escape",
        };
        assert_eq!(e.to_string(), "at byte 3: invalid escape");
        let _: &dyn std::error::Error = &e;
    }

    #[test]
    fn nesting_is_limited() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            parse(&too_deep),
            Err(JsonError {
                offset: MAX_DEPTH,
                msg: "nesting too deep"
            })
        );
        let deep_objects = "{\"a\":".repeat(1000) + &"}".repeat(1000);
        assert_eq!(
            parse(&deep_objects).map_err(|e| e.msg),
            Err("nesting too deep")
        );
        let deep_arrays = "[".repeat(1000);
        assert_eq!(
            parse(&deep_arrays).map_err(|e| e.msg),
            Err("nesting too deep")
        );
    }

    #[test]
    fn numbers() {
        let n = |s: &str| parse(s).expect(s);
        assert_eq!(n("0"), Value::Int(0));
        assert_eq!(n("-0"), Value::Int(0));
        assert_eq!(n("42"), Value::Int(42));
        assert_eq!(n("9223372036854775807"), Value::Int(i64::MAX));
        assert_eq!(n("-9223372036854775808"), Value::Int(i64::MIN));
        // Integers beyond i64 stay exact, as their text.
        let big = |s: &str| Value::BigInt(s.into());
        for text in [
            "9223372036854775808",
            "18446744073709551615",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "-340282366920938463463374607431768211457",
        ] {
            let v = n(text);
            assert_eq!(v, big(text));
            assert_eq!(json(&v), text);
            assert_eq!(v.type_name(), "int");
            assert_eq!(v.as_i64(), None);
            assert_eq!(v.as_f64(), text.parse::<f64>().ok());
        }
        assert_ne!(big("18446744073709551615"), big("18446744073709551614"));
        let text = r#"{"id":18446744073709551615,"l":[-99999999999999999999,1]}"#;
        assert_eq!(json(&parse(text).expect("valid")), text);
        assert_eq!(n("1.5"), Value::Float(1.5));
        assert_eq!(n("-0.0"), Value::Float(-0.0));
        assert_eq!(n("1e3"), Value::Float(1000.0));
        assert_eq!(n("1E+3"), Value::Float(1000.0));
        assert_eq!(n("25e-1"), Value::Float(2.5));
        assert_eq!(n("-1.25E-2"), Value::Float(-0.0125));
        assert_eq!(n("1e-400"), Value::Float(0.0));
        assert_eq!(n(" 7 "), Value::Int(7));
    }

    #[test]
    fn duplicate_keys_last_wins_in_place() {
        let v = parse(r#"{"a":1,"b":2,"a":3}"#).expect("valid");
        assert_eq!(json(&v), r#"{"a":3,"b":2}"#);
        // Large objects take the indexed path; same semantics.
        let mut text = String::from("{");
        for i in 0..40 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k3\":\"again\",\"k39\":null}");
        let Ok(Value::Map(m)) = parse(&text) else {
            panic!("expected a map");
        };
        assert_eq!(m.len(), 40);
        assert_eq!(m.get(Key::new("k3")), Some(&Value::from("again")));
        assert_eq!(m.get(Key::new("k39")), Some(&Value::Null));
        assert_eq!(m.iter().nth(3).map(|(k, _)| k.as_str()), Some("k3"));
    }

    #[test]
    fn record_parse_json() {
        let r = Record::parse_json(br#" {"a":{"b":[1]}} "#).expect("object");
        assert_eq!(
            r.get_path(&path("a.b")),
            Some(&Value::List(vec![Value::Int(1)]))
        );
        assert_eq!(
            Record::parse_json(b"  [1]"),
            Err(JsonError {
                offset: 2,
                msg: "expected a JSON object"
            })
        );
    }

    #[test]
    fn never_panics_on_truncations_and_mutations() {
        let text = br#"{"a":[1,-2.5e3,"x\u00e9\ud83d\ude00\n",true,false,null,{"b":{}}],"c":"\"q\"","long key with escapes \t":"a longer string value, past sixteen bytes"}"#;
        // Whatever parses must render to JSON that parses back to the same value.
        let check = |input: &[u8]| {
            if let Ok(v) = Value::parse_json(input) {
                let mut out = Vec::new();
                v.write_json(&mut out);
                assert_eq!(
                    Value::parse_json(&out),
                    Ok(v),
                    "{:?}",
                    String::from_utf8_lossy(input)
                );
            }
        };
        for end in 0..text.len() {
            check(&text[..end]);
            for b in [
                b'"', b'\\', b'{', b']', 0xff, b'0', b'e', b'u', b'-', 0, b'\n', 0xc3,
            ] {
                let mut m = text.to_vec();
                m[end] = b;
                check(&m);
            }
        }
        // And a deterministic pseudo-random walk of multi-byte mutations.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut m = text.to_vec();
            for _ in 0..3 {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let at = (seed >> 33) as usize % m.len();
                match seed % 3 {
                    0 => m[at] = (seed >> 8) as u8,
                    1 => {
                        m.remove(at);
                    }
                    _ => m.insert(at, b"{}[]\\\",:0"[(seed >> 16) as usize % 9]),
                }
            }
            check(&m);
        }
        assert!(Value::parse_json(text).is_ok());
    }

    // --- timestamps -------------------------------------------------------------------------

    #[test]
    fn timestamps() {
        assert_eq!(ts(Timestamp::new(0, 0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            ts(Timestamp::new(1_709_164_800, 0, 0)),
            "2024-02-29T00:00:00Z"
        );
        assert_eq!(
            ts(Timestamp::new(1_709_164_800 + 86_399, 0, 0)),
            "2024-02-29T23:59:59Z"
        );
        assert_eq!(
            ts(Timestamp::new(1_709_164_800 + 86_400, 0, 0)),
            "2024-03-01T00:00:00Z"
        );
        assert_eq!(
            ts(Timestamp::new(1_709_164_800, 0, -300)),
            "2024-02-28T19:00:00-05:00"
        );
        assert_eq!(
            ts(Timestamp::new(1_709_164_800, 0, -570)),
            "2024-02-28T14:30:00-09:30"
        );
        assert_eq!(
            ts(Timestamp::new(1_795_776_277, 123_000_000, 60)),
            "2026-11-27T11:44:37.123+01:00"
        );
        assert_eq!(
            ts(Timestamp::new(0, 120_000, 0)),
            "1970-01-01T00:00:00.000120Z"
        );
        assert_eq!(
            ts(Timestamp::new(0, 1, 0)),
            "1970-01-01T00:00:00.000000001Z"
        );
        assert_eq!(
            ts(Timestamp::new(0, 500_000_000, 0)),
            "1970-01-01T00:00:00.500Z"
        );
        assert_eq!(
            ts(Timestamp::new(0, 123_456_789, 0)),
            "1970-01-01T00:00:00.123456789Z"
        );
        assert_eq!(
            ts(Timestamp::new(0, 120_456_000, 330)),
            "1970-01-01T05:30:00.120456+05:30"
        );
        // Out-of-range nanos are clamped, out-of-range offsets written in full.
        assert_eq!(
            ts(Timestamp::new(0, 2_000_000_000, 0)),
            "1970-01-01T00:00:00.999999999Z"
        );
        assert_eq!(
            ts(Timestamp::new(0, 0, -6001)),
            "1969-12-27T19:59:00-100:01"
        );
        assert_eq!(ts(Timestamp::new(-1, 0, 0)), "1969-12-31T23:59:59Z");
        assert_eq!(
            ts(Timestamp::new(951_782_400, 0, 0)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            ts(Timestamp::new(4_107_542_400, 0, 0)),
            "2100-03-01T00:00:00Z"
        );
        assert_eq!(
            ts(Timestamp::new(-62_135_596_800, 0, 0)),
            "0001-01-01T00:00:00Z"
        );
        assert_eq!(
            ts(Timestamp::new(253_402_300_799, 0, 0)),
            "9999-12-31T23:59:59Z"
        );
        // Out of RFC 3339's range: still written, never a panic.
        assert_eq!(
            ts(Timestamp::new(253_402_300_800, 0, 0)),
            "10000-01-01T00:00:00Z"
        );
        for secs in [i64::MIN, i64::MAX] {
            let _ = ts(Timestamp::new(secs, u32::MAX, i16::MIN));
            let _ = ts(Timestamp::new(secs, u32::MAX, i16::MAX));
        }
        let now = Timestamp::now();
        assert!(now.secs > 1_700_000_000 && now.nanos < 1_000_000_000 && now.offset_min == 0);
        assert_eq!(Timestamp::new(0, 0, 0).to_string(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn civil_from_days_agrees_with_day_counting() {
        // Walk day by day from 1600-03-01 to 2400 and check against a naive calendar.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_len = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut y, mut m, mut d) = (1600i64, 3u32, 1u32);
        for days in -135_080..157_000 {
            assert_eq!(
                crate::record::timefmt::civil_from_days(days),
                (y, m, d),
                "day {days}"
            );
            d += 1;
            if d > month_len(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    // --- value helpers ----------------------------------------------------------------------

    #[test]
    fn value_helpers() {
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(Value::from("10.1.2.3").as_ip(), Some(ip));
        assert_eq!(Value::Bytes(b"10.1.2.3".to_vec()).as_ip(), Some(ip));
        assert_eq!(Value::Ip(ip).as_ip(), Some(ip));
        assert_eq!(Value::from("nope").as_ip(), None);
        assert_eq!(Value::Int(1).as_ip(), None);
        assert_eq!(Value::Bytes(b"txt".to_vec()).as_str(), Some("txt"));
        assert_eq!(Value::from("txt").as_bytes(), Some(&b"txt"[..]));
        assert_eq!(Value::Int(1).as_str(), None);
        assert_eq!(Value::Int(5).as_i64(), Some(5));
        assert_eq!(Value::Float(5.0).as_i64(), None);
        assert_eq!(Value::Int(5).as_f64(), Some(5.0));
        assert_eq!(Value::Float(0.5).as_f64(), Some(0.5));
        assert_eq!(Value::Bool(true).as_bool(), Some(true));
        assert_eq!(Value::Null.as_bool(), None);
        assert!(Value::Null.is_null());
        assert!(!Value::Int(0).is_null());
        assert!(Value::default().is_null());
        let names: Vec<_> = [
            Value::Null,
            true.into(),
            1i32.into(),
            1.0f64.into(),
            "s".into(),
            b"b".as_slice().into(),
            Timestamp::new(0, 0, 0).into(),
            Ipv4Addr::LOCALHOST.into(),
            "::/0".parse::<IpNet>().expect("net").into(),
            Vec::<Value>::new().into(),
            Map::new().into(),
        ]
        .iter()
        .map(Value::type_name)
        .collect();
        assert_eq!(
            names,
            [
                "null", "bool", "int", "float", "string", "bytes", "time", "ip", "net", "list",
                "map"
            ]
        );
        assert_eq!(Value::from(None::<i64>), Value::Null);
        assert_eq!(Value::from(Some(3u16)), Value::Int(3));
        assert_eq!(
            Value::from(Cow::Borrowed("c")),
            Value::from(String::from("c"))
        );
    }

    #[test]
    fn map_operations() {
        let (a, b, c) = (Key::new("a"), Key::new("b"), Key::new("c"));
        let mut m = Map::with_capacity(8);
        assert!(m.is_empty());
        assert_eq!(m.insert(a, 1.into()), None);
        assert_eq!(m.insert(b, 2.into()), None);
        assert_eq!(m.insert(c, 3.into()), None);
        assert_eq!(m.insert(a, 10.into()), Some(Value::Int(1)));
        assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), [a, b, c]);
        assert_eq!(m.get(a), Some(&Value::Int(10)));
        if let Some(v) = m.get_mut(b) {
            *v = Value::Int(20);
        }
        assert!(m.contains_key(b));
        assert_eq!(m.remove(b), Some(Value::Int(20)));
        assert_eq!(m.remove(b), None);
        assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), [a, c]);
        for (_, v) in m.iter_mut() {
            *v = Value::Null;
        }
        assert_eq!(m.len(), 2);
        // Equality ignores order.
        let reordered: Map = [(c, Value::Null), (a, Value::Null)].into_iter().collect();
        assert_eq!(m, reordered);
        assert_ne!(m, Map::new());
        m.clear();
        assert!(m.is_empty() && m.entries.capacity() >= 8);
    }

    // --- paths and records ------------------------------------------------------------------

    #[test]
    fn paths_parse_and_display() {
        let p = path("src.ip");
        assert_eq!(p.keys(), [Key::new("src"), Key::new("ip")]);
        assert_eq!(p.to_string(), "src.ip");
        assert_eq!(
            "a.b.c".parse::<Path>().map(|p| p.to_string()),
            Ok("a.b.c".into())
        );
        assert_eq!(Path::from(Key::new("x")).to_string(), "x");
        for (bad, column) in [("", 1), (".a", 1), ("a.", 3), ("a..b", 3), ("ünï..b", 5)] {
            let e = Path::parse(bad).expect_err(bad);
            assert_eq!(e.column, column, "{bad}");
            assert_eq!(e.path, bad);
        }
        assert_eq!(
            Path::parse("a..b").map_err(|e| e.to_string()),
            Err("field path \"a..b\": empty name at column 3".into())
        );
    }

    #[test]
    fn record_paths() {
        let mut r = Record::new();
        let deep = path("http.request.method");
        r.set_path(&deep, "GET".into());
        assert_eq!(r.get_path(&deep), Some(&Value::from("GET")));
        assert_eq!(r.get(Key::new("http")).map(|v| v.type_name()), Some("map"));
        // A non-map intermediate is replaced by a map.
        r.insert(Key::new("src"), Value::from("oops"));
        r.set_path(&path("src.ip"), Value::from("10.0.0.1"));
        assert_eq!(
            r.get_path(&path("src.ip")).and_then(Value::as_ip),
            "10.0.0.1".parse().ok()
        );
        // Traversing through a non-map finds nothing.
        r.set_path(&path("n"), 5.into());
        assert_eq!(r.get_path(&path("n.x")), None);
        assert_eq!(r.get_path(&path("missing.x")), None);
        assert_eq!(r.get_path_mut(&path("n.x")), None);
        assert_eq!(r.remove_path(&path("n.x")), None);
        if let Some(v) = r.get_path_mut(&path("http.request.method")) {
            *v = "POST".into();
        }
        r.set_path(&path("http.request.bytes"), 12.into());
        let mut out = Vec::new();
        r.write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            r#"{"http":{"request":{"method":"POST","bytes":12}},"src":{"ip":"10.0.0.1"},"n":5}"#
        );
        assert_eq!(r.remove_path(&deep), Some(Value::from("POST")));
        assert_eq!(r.remove_path(&deep), None);
        assert_eq!(r.remove(Key::new("n")), Some(Value::Int(5)));
        assert_eq!(
            r.get_path(&path("http.request.bytes")),
            Some(&Value::Int(12))
        );
        if let Some(v) = r.get_mut(Key::new("src")) {
            *v = Value::Null;
        }
        r.id = 7;
        r.clear();
        assert_eq!(r, Record::new());
        assert!(r.fields.entries.capacity() >= 3);
    }

    #[test]
    fn field_getters_and_setters() {
        let f = field("user.name").expect("path");
        let mut r = Record::new();
        assert_eq!(f.get.get(&r), None);
        f.set.set(&mut r, "alice".into());
        assert_eq!(f.get.get(&r), Some(&Value::from("alice")));
        let m = field_mut("user.name").expect("path");
        if let Some(Value::Str(s)) = m.get_mut(&mut r) {
            s.push_str("@example");
        }
        assert_eq!(f.get.get(&r).and_then(Value::as_str), Some("alice@example"));
        assert!(field("user..name").is_err());
        assert!(field_mut("").is_err());
        let id = id_field();
        id.set.set(&mut r, 41);
        assert_eq!(id.get.get(&r), Some(&41));
        assert_eq!(r.id, 41);
    }
}
