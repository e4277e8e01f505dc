//! Windows over event time, shared by `window` and `threshold`: the event time of a datum,
//! window assignment (tumbling, hopping, session), the watermark with its lateness, bounded
//! per-(key, window) state, the aggregators, and the state file (written with [`Keyed`]).
//!
//! **Time.** A datum's time is read from the `time` field: a timestamp, epoch seconds (an
//! integer or a float), RFC 3339 text, or text in `time_format` (a strftime format, see
//! [`crate::record::timefmt`]; a format without a year takes the wall clock's year, or the
//! year before when that would put the time more than a day ahead). `time = "arrival"`
//! takes the wall clock when the datum arrives. Times are kept as Unix milliseconds.
//!
//! **Watermark.** The watermark is the greatest event time seen. A window `[start, end)`
//! closes once the watermark reaches `end + lateness`; a datum whose every window has
//! closed is late (time going backwards beyond the lateness is late too). Closing only
//! follows the data, never the batches they come in, so replaying a file at full speed
//! gives the windows that reading it live gives.
//!
//! **Closing is cheap.** Each open window has one place in a map from the time windows
//! close to the windows closing then, in the order they opened (tumbling windows of one
//! period share one entry); advancing the watermark takes the entries it passes and
//! touches nothing else. A session's end moves as data come; its place is left as it was
//! and put back at the new end when it comes up.
//!
//! **Bounds.** At most `max_keys` open (key, window) states and about `max_bytes` of keys
//! and values: beyond, the window closing soonest (the oldest, but for a session that
//! grew) is closed early ([`CloseWhy::Evicted`], counted and logged rate-limited).
//!
//! **Memory.** The open windows are states in a slab, each one allocation (its head,
//! aggregates and `threshold`'s bookkeeping behind one pointer), found through an
//! open-addressing table of slab indexes keyed by the window's key bytes, which the state
//! holds (one hash per datum, no key made to look one up); the closing order names
//! windows by index (what an open window costs: docs/performance.md, and the bound of
//! tests/daemon/window.rs, `open_windows_take_little_memory_each`).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::Path as FsPath;
use std::rc::Rc;
use std::time::Duration;

use crate::engine::cog::EventId;
use crate::engine::escapement::Ctx;
use crate::kit::checkpoint::fingerprint;
use crate::kit::event_time::EventTime;
use crate::kit::keyed::{Evictions, FastState, Keyed, StateCodec, StateError};
use crate::kit::on_error::OnErrorSettings;
use crate::record::expr::{Condition, Expr};
use crate::record::{InlineStr, Path, Record, SharedStr, Value};
use crate::schema::settings::de::{Deserializer, MapAccess, Visitor};
use crate::schema::{ParamType, SettingError, SettingValue};

crate::choice! {
    /// How `window` and `threshold` cut time into windows.
    pub enum WindowKind {
        Tumbling = "tumbling",
        Hopping = "hopping",
        Session = "session",
    }
}

crate::choice! {
    /// What happens to open windows at shutdown.
    pub enum AtFinish {
        Emit = "emit",
        Persist = "persist",
    }
}

crate::settings! {
    /// The keys `window` and `threshold` share (flattened into both).
    pub struct WindowSettings {
        /// group-by fields (dotted paths); empty: one group for everything
        key: Vec<String>,
        /// the field holding the event time (timestamp, epoch seconds, RFC 3339 or time_format text), or "arrival" (the wall clock)
        time: String = "time",
        /// strftime format of a text time field; empty: timestamp, epoch seconds or RFC 3339. A format without a year takes the wall clock's (the one before if that puts the time more than a day ahead)
        time_format: String = "",
        /// tumbling | hopping | session
        kind: WindowKind = "tumbling",
        /// tumbling and hopping: the window's length
        size: Duration = "60s",
        /// hopping: how far each window starts after the one before
        step: Option<Duration>,
        /// session: a key's session ends after this long without data
        gap: Option<Duration>,
        /// a window closes when the event time seen passes its end plus this
        lateness: Duration = "0s",
        /// late data: drop | emit (passed on flagged late = true) | train:NAME
        on_late: String = "drop",
        /// true: the inputs go on too (after the window's bookkeeping)
        pass: bool = "false",
        /// emit: open windows are emitted at shutdown flagged partial = true; persist: saved under `[state] dir` and loaded at start
        at_finish: AtFinish = "emit",
        /// save open windows under `[state] dir` at shutdown and load them at start (as at_finish = "persist")
        persist: bool = "false",
        /// open (key, window) states at most; beyond, the oldest is closed early (flagged evicted, counted, logged)
        max_keys: usize = "100000",
        /// bound on the bytes of keys and values held (value lists, count_distinct sets); beyond, the oldest window is closed early
        #[setting(size)]
        max_bytes: usize = "64MiB",
        /// output field = function, in the order written: count | count(CONDITION) | sum(F) | min(F) | max(F) | mean(F) | first(F) | last(F) | count_distinct(F) | values(F)
        aggregate: Aggregates,
        /// count_distinct is exact up to this many values, then a HyperLogLog estimate (OUT_estimated = true)
        distinct_exact: usize = "10000",
        /// values(F) keeps at most this many values (OUT_truncated = true beyond)
        max_values: usize = "100",
        /// What to do with a datum whose time is missing or unparsable.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

impl WindowSettings {
    /// Whether open windows are saved at shutdown and loaded at start.
    pub fn persists(&self) -> bool {
        self.persist || self.at_finish == AtFinish::Persist
    }
}

/// The `aggregate` table: output field and function text, in the order written. From Rust:
/// `Aggregates(vec![("requests".into(), "count".into())])`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregates(pub Vec<(String, String)>);

impl SettingValue for Aggregates {
    const TYPE: ParamType = ParamType::Table;

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Aggregates;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table such as { requests = \"count\", bytes = \"sum(bytes)\" }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Aggregates, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    out.push((name, map.next_value::<String>()?));
                }
                Ok(Aggregates(out))
            }
        }
        d.deserialize_any(V)
    }

    fn from_default(_: &str) -> Option<Self> {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

pub use crate::kit::event_time::{TimeError, ms_ts, ts_ms};

/// The longest size, step, gap or lateness: 100 years.
const MAX_SPAN: i64 = 100 * 366 * 86_400_000;

// ---------------------------------------------------------------------------------------------
// Aggregators
// ---------------------------------------------------------------------------------------------

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Count,
    CountIf,
    Sum,
    Min,
    Max,
    Mean,
    First,
    Last,
    CountDistinct,
    Values,
}

/// One aggregate: its output field, function, input field (or condition).
#[derive(Debug)]
struct AggSpec {
    name: String,
    out: Path,
    /// Index of `out` and of the flag in the output names (0: no flag).
    out_ix: usize,
    flag_ix: usize,
    func: Func,
    field: Option<Path>,
    /// The lookup's hint for `field` (see [`Lookup`]).
    hint: Cell<u32>,
    /// For count(CONDITION): its index in the conditions.
    cond: usize,
    /// For count(CONDITION): the condition as an integer comparison, when it is one (see
    /// [`IntCmp`]).
    fast: Option<IntCmp>,
    /// The flag field (`NAME_estimated`, `NAME_truncated`).
    flag: Option<Path>,
}

/// A number kept by sum, min, max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// While every number was an integer (and the sum fits).
    Int(i64),
    /// Otherwise.
    Float(f64),
}

impl Num {
    fn of(v: &Value) -> Option<Num> {
        match v {
            Value::Int(i) => Some(Num::Int(*i)),
            Value::Float(f) => Some(Num::Float(*f)),
            Value::Bool(_) | Value::Null => None,
            other => {
                let s = other.as_str()?.trim();
                s.parse::<i64>()
                    .map(Num::Int)
                    .ok()
                    .or_else(|| s.parse::<f64>().ok().map(Num::Float))
            }
        }
    }
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
    fn value(self) -> Value {
        match self {
            Num::Int(i) => Value::Int(i),
            Num::Float(f) => Value::Float(f),
        }
    }
    fn less(self, o: Num) -> bool {
        match (self, o) {
            (Num::Int(a), Num::Int(b)) => a < b,
            (a, b) => a.f() < b.f(),
        }
    }
}

/// HyperLogLog registers (2^12): about 1.6% standard error.
const HLL_BITS: u32 = 12;
const HLL_M: usize = 1 << HLL_BITS;

/// The state of one aggregate in one window.
#[derive(Debug, Clone, PartialEq)]
pub enum Agg {
    /// count, count(CONDITION).
    Count(u64),
    /// sum: integers while they fit, then a float.
    Sum(Num),
    /// min or max.
    Extreme(Option<Num>),
    /// mean: sum and count.
    Mean(f64, u64),
    /// first or last.
    One(Option<Box<Value>>),
    /// count_distinct: hashes of the values while exact.
    Exact(Box<HashSet<u64>>),
    /// count_distinct beyond distinct_exact.
    Hll(Box<[u8]>),
    /// values: the values, and whether some were left out.
    Values(Box<(Vec<Value>, bool)>),
}

impl Agg {
    fn new(f: Func) -> Agg {
        match f {
            Func::Count | Func::CountIf => Agg::Count(0),
            Func::Sum => Agg::Sum(Num::Int(0)),
            Func::Min | Func::Max => Agg::Extreme(None),
            Func::Mean => Agg::Mean(0.0, 0),
            Func::First | Func::Last => Agg::One(None),
            Func::CountDistinct => Agg::Exact(Box::default()),
            Func::Values => Agg::Values(Box::default()),
        }
    }

    /// Whether it holds memory of its own (values, sets, registers).
    fn holds_memory(&self) -> bool {
        matches!(
            self,
            Agg::One(Some(_)) | Agg::Exact(_) | Agg::Hll(_) | Agg::Values(_)
        )
    }

    /// Back to `Agg::new(f)`, in place when it is already of that kind.
    #[inline]
    fn reset(&mut self, f: Func) {
        match (&mut *self, f) {
            (Agg::Count(n), Func::Count | Func::CountIf) => *n = 0,
            (Agg::Sum(x), Func::Sum) => *x = Num::Int(0),
            (Agg::Extreme(x), Func::Min | Func::Max) => *x = None,
            (Agg::Mean(a, n), Func::Mean) => (*a, *n) = (0.0, 0),
            _ => *self = Agg::new(f),
        }
    }

    /// The output value and whether its flag is set.
    fn output(&self) -> (Value, bool) {
        match self {
            Agg::Count(n) => (Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)), false),
            Agg::Sum(n) => (n.value(), false),
            Agg::Extreme(n) => (n.map_or(Value::Null, Num::value), false),
            Agg::Mean(s, n) => (
                if *n == 0 {
                    Value::Null
                } else {
                    Value::Float(s / *n as f64)
                },
                false,
            ),
            Agg::One(v) => (v.as_deref().cloned().unwrap_or(Value::Null), false),
            Agg::Exact(set) => (Value::Int(set.len() as i64), false),
            Agg::Hll(regs) => (Value::Int(hll_estimate(regs) as i64), true),
            Agg::Values(v) => (Value::List(v.0.clone()), v.1),
        }
    }
}

fn hll_add(regs: &mut [u8], h: u64) {
    let idx = (h >> (64 - HLL_BITS)) as usize;
    let rank = ((h << HLL_BITS) | (1 << (HLL_BITS - 1))).leading_zeros() + 1;
    if let Some(r) = regs.get_mut(idx) {
        *r = (*r).max(rank as u8);
    }
}

fn hll_estimate(regs: &[u8]) -> u64 {
    let m = regs.len() as f64;
    let sum: f64 = regs.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let e = alpha * m * m / sum;
    let zeros = regs.iter().filter(|&&r| r == 0).count();
    if e <= 2.5 * m && zeros > 0 {
        (m * (m / zeros as f64).ln()).round() as u64
    } else {
        e.round() as u64
    }
}

/// A stable 64-bit hash of a value (the state file keeps hashes across runs).
fn value_hash(v: &Value, buf: &mut Vec<u8>) -> u64 {
    buf.clear();
    key_part(v, buf);
    // Mixed so that the high bits (the HyperLogLog register) depend on every byte.
    let mut h = fingerprint(buf);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One field's part of a key, unambiguous whatever it holds: text and bytes with their
/// length first, other values as JSON ended by a NUL.
fn key_part(v: &Value, out: &mut Vec<u8>) {
    match v.as_bytes() {
        Some(b) => {
            let n = u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes();
            out.reserve(5 + b.len());
            out.extend_from_slice(&[b's', n[0], n[1], n[2], n[3]]);
            out.extend_from_slice(b);
        }
        None => {
            out.push(b'v');
            v.write_json(out);
            out.push(0);
        }
    }
}

/// Whether short bytes (at most [`InlineStr::CAPACITY`]) are ASCII: a few overlapping word
/// reads, where the general check goes byte by byte up to its word alignment.
#[inline]
fn short_ascii(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = b.len();
    debug_assert!(n <= 24, "short_ascii reads three words at most");
    let word = |i: usize| {
        b.get(i..i + 8)
            .and_then(|w| w.try_into().ok())
            .map_or(HIGH, u64::from_le_bytes)
    };
    match n {
        // Up to three words, the last one ending at the end (overlapping the others).
        8.. => (word(0) | word(n.min(16).saturating_sub(8)) | word(n - 8)) & HIGH == 0,
        4..8 => {
            let half = |i: usize| {
                b.get(i..i + 4)
                    .and_then(|w| w.try_into().ok())
                    .map_or(0x8080_8080, u32::from_le_bytes)
            };
            (half(0) | half(n - 4)) & 0x8080_8080 == 0
        }
        _ => b.iter().all(u8::is_ascii),
    }
}

/// A text key value read back from a window's key bytes: short ASCII text (an address, a
/// name) held inline (no allocation), other UTF-8 as text, the rest as bytes.
#[inline]
fn text_key_value(b: &[u8]) -> Value {
    if b.len() <= InlineStr::CAPACITY
        && short_ascii(b)
        // SAFETY: ASCII is UTF-8.
        && let Some(short) = InlineStr::new(unsafe { std::str::from_utf8_unchecked(b) })
    {
        return Value::Shared(SharedStr::Inline(short));
    }
    match std::str::from_utf8(b) {
        Ok(t) => Value::Str(t.to_string()),
        Err(_) => Value::Bytes(b.to_vec()),
    }
}

/// Where the output fields of a window go ([`Windows::output_to`]): each value is written
/// into the place of its field. Handed over by value through a call instead, a value is
/// copied from where it was just built, and the copy waits for the stores that built it
/// (docs/architecture.md#store-forwarding).
pub trait Put {
    /// The place of output field `i` (an index into [`Windows::names`]), holding `Null`.
    fn field(&mut self, i: usize) -> &mut Value;

    /// Sets output field `i` to the value `v` makes, made once the field's place is known
    /// (and so written there, not built before the call and copied in).
    #[inline(always)]
    fn set(&mut self, i: usize, v: impl FnOnce() -> Value)
    where
        Self: Sized,
    {
        write_value(self.field(i), v());
    }
}

/// Stores `v` in `place`: without a drop when it holds `Null` (the drop's call skipped).
#[inline(always)]
fn write_value(place: &mut Value, v: Value) {
    if matches!(place, Value::Null) {
        // SAFETY: `place` is a valid, exclusive place holding `Null`, which owns nothing:
        // overwriting it without a drop leaks nothing.
        unsafe { std::ptr::write(place, v) };
    } else {
        *place = v;
    }
}

/// Stores in `place` the text key value [`text_key_value`] gives, short text copied into
/// the place itself: built elsewhere, an inline text is copied in with loads that span the
/// narrower stores that just built it, and wait for them
/// (docs/architecture.md#store-forwarding).
#[inline(always)]
fn fill_key_text(place: &mut Value, b: &[u8]) {
    if b.len() <= InlineStr::CAPACITY && short_ascii(b) {
        write_value(place, Value::Shared(SharedStr::Inline(InlineStr::EMPTY)));
        if let Value::Shared(SharedStr::Inline(i)) = place {
            // SAFETY: ASCII is UTF-8.
            i.set(unsafe { std::str::from_utf8_unchecked(b) });
        }
        return;
    }
    write_value(place, text_key_value(b));
}

/// A key field as a window's key bytes hold it ([`Windows::key_values`]).
enum KeyPart<'k> {
    /// Text (or bytes), read back from the key bytes.
    Text(&'k [u8]),
    /// Another value, the next of the window's `key`.
    Other,
    /// No more key bytes (not expected: a key has all its parts).
    Missing,
}

/// [`Put`] into a vector of (index, value) pairs.
struct ToVec<'a>(&'a mut Vec<(usize, Value)>);

impl Put for ToVec<'_> {
    fn field(&mut self, i: usize) -> &mut Value {
        self.0.push((i, Value::Null));
        let last = self.0.len() - 1;
        &mut self.0[last].1
    }
}

/// A condition that is one comparison of a field with an integer (`status >= 400`, the
/// usual `count(CONDITION)`), tested directly when the field holds an integer: the same
/// answer as the expression's, for a tenth of the work. Any other value (a float, text,
/// none) goes to the expression, so its rules (numbers in text, mismatches) stay whole.
#[derive(Debug, Clone)]
struct IntCmp {
    path: Path,
    /// The lookup's hint for `path` (see [`Lookup`]).
    hint: Cell<u32>,
    n: i64,
    /// Whether it holds when the value is less than, equal to, greater than `n`.
    when: [bool; 3],
}

impl IntCmp {
    /// The comparison `text` is, if it is `FIELD OP DIGITS` exactly (a dotted field of
    /// letters, digits and `_`, not a word of the language; OP one of `==`, `!=`, `<`,
    /// `<=`, `>`, `>=`).
    fn of(text: &str) -> Option<IntCmp> {
        let t = text.trim();
        let field_end = t
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(t.len());
        let (field, rest) = t.split_at(field_end);
        let words_ok = !field.is_empty()
            && field.split('.').all(|w| {
                w.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && !matches!(
                        w,
                        "and"
                            | "or"
                            | "not"
                            | "exists"
                            | "contains"
                            | "matches"
                            | "in"
                            | "true"
                            | "false"
                            | "null"
                    )
            });
        if !words_ok {
            return None;
        }
        let rest = rest.trim_start();
        let (when, digits) = [
            ("==", [false, true, false]),
            ("!=", [true, false, true]),
            ("<=", [true, true, false]),
            (">=", [false, true, true]),
            ("<", [true, false, false]),
            (">", [false, false, true]),
        ]
        .iter()
        .find_map(|(op, when)| Some((*when, rest.strip_prefix(op)?)))?;
        let digits = digits.trim();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(IntCmp {
            path: Path::parse(field).ok()?,
            hint: Cell::new(0),
            n: digits.parse().ok()?,
            when,
        })
    }

    #[inline]
    fn holds(&self, i: i64) -> bool {
        self.when[(i.cmp(&self.n) as i8 + 1) as usize]
    }
}

/// Parses `count`, `count(CONDITION)`, `sum(F)`... into a function and its argument.
fn parse_func(text: &str) -> Result<(Func, Option<&str>), String> {
    let t = text.trim();
    let (name, arg) = match t.find('(') {
        None => (t, None),
        Some(open) => {
            let Some(inner) = t[open + 1..].strip_suffix(')') else {
                return Err(format!(
                    "{text:?}: expected FUNCTION(FIELD), with a closing `)`"
                ));
            };
            (t[..open].trim(), Some(inner.trim()))
        }
    };
    let func = match name {
        "count" => {
            if arg.is_some() {
                Func::CountIf
            } else {
                Func::Count
            }
        }
        "sum" => Func::Sum,
        "min" => Func::Min,
        "max" => Func::Max,
        "mean" => Func::Mean,
        "first" => Func::First,
        "last" => Func::Last,
        "count_distinct" => Func::CountDistinct,
        "values" => Func::Values,
        other => {
            return Err(format!(
                "unknown function {other:?} (functions: count, count(CONDITION), sum, min, max, \
                 mean, first, last, count_distinct, values)"
            ));
        }
    };
    if func != Func::Count && arg.is_none_or(str::is_empty) {
        return Err(format!("{name} needs a field: {name}(FIELD)"));
    }
    Ok((func, arg))
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// The fixed part of the state of one (key, window): what [`WinState`] holds before its
/// aggregates (88 bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct WinHead {
    /// Window start and end, Unix milliseconds (a session's end is its last time + gap).
    pub start: i64,
    /// See `start`.
    pub end: i64,
    /// Tells this state's place in the closing order from a place left by a state closed
    /// or evicted before (its store index reused). 32 bits, wrapping: a stale place is
    /// taken for a live one only if its index was reused a multiple of 2^32 times while it
    /// waited, and then, for tumbling and hopping windows, at the window's own close time.
    generation: u32,
    /// The window's key bytes: the key fields (see `key_part`), then the start for
    /// tumbling and hopping windows; inline when short.
    kb: KeyBytes,
    /// The low half of the key bytes' hash: the window's place in the store's table.
    hash: u32,
    /// The key fields' values that are not text, in order: text ones (the usual key, an
    /// address or a name) are read back from the window's key bytes, which hold them
    /// anyway, so that a window keeps no copy of them.
    pub key: Box<[Value]>,
    /// Ids of consumed inputs, acknowledged once the window's output is.
    pub held: Ids,
}

impl WinHead {
    /// A head for the window `[start, end)` with no key bytes yet.
    fn new(start: i64, end: i64) -> WinHead {
        WinHead {
            start,
            end,
            generation: 0,
            kb: KeyBytes::default(),
            hash: 0,
            key: Box::default(),
            held: Ids::default(),
        }
    }
}

pub use thin::WinState;

/// The state of one (key, window) in one allocation: its [`WinHead`], the bytes it counts
/// against max_bytes, its aggregates (their number fixed per cog) and, for `threshold`,
/// its [`Extra`]. One allocation a window rather than one per part: one allocator header
/// and one rounding instead of three, and no pointers from the head to its parts (168
/// bytes for three aggregates, a 176-byte chunk with glibc's header). The state moves
/// as a pointer, as a box does: a window is never copied.
mod thin {
    use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
    use std::fmt;
    use std::marker::PhantomData;
    use std::ptr::{self, NonNull};

    use super::{Agg, Extra, WinHead};

    /// What begins the allocation: the head, then what tells the allocation's shape (the
    /// number of aggregates, whether `Extra` follows them), kept out of the head so that
    /// safe code swapping or overwriting heads never changes a shape.
    #[repr(C)]
    struct Start {
        head: WinHead,
        bytes: u32,
        aggs: u16,
        extra: bool,
    }

    /// Where the aggregates begin: right after `Start` (its size is a multiple of their
    /// alignment, checked below).
    const AGGS_AT: usize = size_of::<Start>();
    const _: () = assert!(AGGS_AT.is_multiple_of(align_of::<Agg>()));
    const _: () = assert!(align_of::<Agg>() <= align_of::<Start>());
    const _: () = assert!(size_of::<Agg>().is_multiple_of(align_of::<Extra>()));
    const _: () = assert!(AGGS_AT.is_multiple_of(align_of::<Extra>()));
    const _: () = assert!(align_of::<Extra>() <= align_of::<Start>());

    /// The most aggregates a window holds.
    pub(super) const MAX_AGGS: usize = u16::MAX as usize;

    /// Where `Extra` begins, after `n` aggregates.
    #[inline(always)]
    const fn extra_at(n: usize) -> usize {
        AGGS_AT + n * size_of::<Agg>()
    }

    /// The allocation's layout for `n` aggregates (at most [`MAX_AGGS`]: a few MiB, far
    /// from the largest layout) and `Extra` or not.
    pub(super) fn layout(n: usize, extra: bool) -> Layout {
        let size = extra_at(n) + if extra { size_of::<Extra>() } else { 0 };
        Layout::from_size_align(size, align_of::<Start>())
            .unwrap_or_else(|_| unreachable!("at most {MAX_AGGS} aggregates: a small layout"))
    }

    /// See the module doc. Owns its head, aggregates and `Extra` as a `Box` owns its value.
    pub struct WinState {
        ptr: NonNull<Start>,
        _owns: PhantomData<Start>,
    }

    /// A window's parts, borrowed apart.
    pub(super) struct Parts<'a> {
        pub head: &'a mut WinHead,
        pub aggs: &'a mut [Agg],
        pub extra: Option<&'a mut Extra>,
        pub bytes: &'a mut u32,
    }

    /// Drops what was written of a state being made, and frees its allocation, if making
    /// an aggregate panics.
    struct Partial {
        ptr: NonNull<Start>,
        layout: Layout,
        aggs: usize,
    }

    impl Drop for Partial {
        fn drop(&mut self) {
            let p = self.ptr.as_ptr();
            // SAFETY: the head and the first `self.aggs` aggregates were written (`make`
            // counts each once written) and nothing else owns them; `layout` is the one
            // allocated with, and the allocation is freed once.
            unsafe {
                ptr::drop_in_place(&raw mut (*p).head);
                let aggs = p.cast::<u8>().add(AGGS_AT).cast::<Agg>();
                ptr::drop_in_place(ptr::slice_from_raw_parts_mut(aggs, self.aggs));
                dealloc(p.cast(), self.layout);
            }
        }
    }

    impl WinState {
        /// A state of `head`, `n` aggregates made by `agg` (0 to n - 1, in order), `extra`
        /// if given and counting `bytes`. `n` is at most [`MAX_AGGS`] (the settings refuse
        /// more).
        pub(super) fn make(
            head: WinHead,
            n: usize,
            mut agg: impl FnMut(usize) -> Agg,
            extra: Option<Extra>,
            bytes: u32,
        ) -> WinState {
            assert!(n <= MAX_AGGS, "{n} aggregates: at most {MAX_AGGS}");
            let layout = layout(n, extra.is_some());
            // SAFETY: the layout's size is never 0 (it holds `Start`).
            let raw = unsafe { alloc(layout) };
            let Some(ptr) = NonNull::new(raw.cast::<Start>()) else {
                handle_alloc_error(layout)
            };
            let p = ptr.as_ptr();
            let has_extra = extra.is_some();
            // SAFETY: `p` is a fresh allocation of `layout`: `Start` at its beginning,
            // `n` aggregates from `AGGS_AT`, `Extra` (when given) from `extra_at(n)`, all
            // aligned (checked above) and inside it. Each place is written once; should
            // `agg` panic, `Partial` drops what was written and frees the allocation.
            unsafe {
                ptr::write(
                    p,
                    Start {
                        head,
                        bytes,
                        aggs: n as u16,
                        extra: has_extra,
                    },
                );
                let mut partial = Partial {
                    ptr,
                    layout,
                    aggs: 0,
                };
                let aggs = p.cast::<u8>().add(AGGS_AT).cast::<Agg>();
                for i in 0..n {
                    ptr::write(aggs.add(i), agg(i));
                    partial.aggs = i + 1;
                }
                std::mem::forget(partial);
                if let Some(x) = extra {
                    ptr::write(p.cast::<u8>().add(extra_at(n)).cast::<Extra>(), x);
                }
            }
            WinState {
                ptr,
                _owns: PhantomData,
            }
        }

        #[inline(always)]
        fn start(&self) -> &Start {
            // SAFETY: `ptr` holds an initialized `Start` while `self` lives.
            unsafe { self.ptr.as_ref() }
        }

        /// The aggregates, in the order written.
        #[inline]
        pub fn aggs(&self) -> &[Agg] {
            let n = usize::from(self.start().aggs);
            // SAFETY: `n` aggregates are initialized from `AGGS_AT`, borrowed with `self`.
            unsafe {
                std::slice::from_raw_parts(
                    self.ptr.as_ptr().cast::<u8>().add(AGGS_AT).cast::<Agg>(),
                    n,
                )
            }
        }

        /// What `threshold` keeps, if this state keeps it.
        #[inline]
        pub fn extra(&self) -> Option<&Extra> {
            let s = self.start();
            // SAFETY: with `extra` set, an initialized `Extra` lies at `extra_at(aggs)`.
            s.extra.then(|| unsafe {
                &*self
                    .ptr
                    .as_ptr()
                    .cast::<u8>()
                    .add(extra_at(usize::from(s.aggs)))
                    .cast::<Extra>()
            })
        }

        /// The bytes counted against max_bytes.
        #[inline]
        pub fn bytes(&self) -> u32 {
            self.start().bytes
        }

        /// The head, aggregates, `Extra` and byte count, each borrowed mutably.
        #[inline]
        pub(super) fn parts(&mut self) -> Parts<'_> {
            let p = self.ptr.as_ptr();
            // SAFETY: the four places are disjoint parts of the allocation (`Start`'s
            // head and bytes fields, the aggregates after it, `Extra` after them), all
            // initialized, borrowed mutably with `self` (which owns them alone).
            unsafe {
                let n = usize::from((*p).aggs);
                let has_extra = (*p).extra;
                let base = p.cast::<u8>();
                Parts {
                    head: &mut (*p).head,
                    aggs: std::slice::from_raw_parts_mut(base.add(AGGS_AT).cast::<Agg>(), n),
                    extra: has_extra.then(|| &mut *base.add(extra_at(n)).cast::<Extra>()),
                    bytes: &mut (*p).bytes,
                }
            }
        }

        /// The aggregates, mutably.
        #[inline]
        pub fn aggs_mut(&mut self) -> &mut [Agg] {
            self.parts().aggs
        }

        /// `Extra`, mutably, if kept.
        #[inline]
        pub fn extra_mut(&mut self) -> Option<&mut Extra> {
            self.parts().extra
        }
    }

    impl Drop for WinState {
        fn drop(&mut self) {
            let p = self.ptr.as_ptr();
            // SAFETY: everything `make` wrote is initialized and owned by `self` alone;
            // each is dropped once, then the allocation is freed with the layout `make`
            // computed from the same shape (which nothing changes after `make`).
            unsafe {
                let n = usize::from((*p).aggs);
                let has_extra = (*p).extra;
                let base = p.cast::<u8>();
                ptr::drop_in_place(&raw mut (*p).head);
                ptr::drop_in_place(ptr::slice_from_raw_parts_mut(
                    base.add(AGGS_AT).cast::<Agg>(),
                    n,
                ));
                if has_extra {
                    ptr::drop_in_place(base.add(extra_at(n)).cast::<Extra>());
                }
                dealloc(base, layout(n, has_extra));
            }
        }
    }

    impl std::ops::Deref for WinState {
        type Target = WinHead;
        #[inline(always)]
        fn deref(&self) -> &WinHead {
            &self.start().head
        }
    }

    impl std::ops::DerefMut for WinState {
        #[inline(always)]
        fn deref_mut(&mut self) -> &mut WinHead {
            self.parts().head
        }
    }

    impl Clone for WinState {
        fn clone(&self) -> WinState {
            let aggs = self.aggs();
            WinState::make(
                self.start().head.clone(),
                aggs.len(),
                |i| aggs[i].clone(),
                self.extra().cloned(),
                self.bytes(),
            )
        }
    }

    impl PartialEq for WinState {
        fn eq(&self, o: &WinState) -> bool {
            **self == **o
                && self.aggs() == o.aggs()
                && self.extra() == o.extra()
                && self.bytes() == o.bytes()
        }
    }

    impl fmt::Debug for WinState {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("WinState")
                .field("head", &**self)
                .field("bytes", &self.bytes())
                .field("aggs", &self.aggs())
                .field("extra", &self.extra())
                .finish()
        }
    }
}

/// Key bytes held inline up to this length: a text key of up to 17 bytes (a name, an
/// IPv4 address) with its 5-byte prefix and a window's 8-byte start.
const KEY_INLINE: usize = 30;

/// A window's key bytes: inline when short (32 bytes in all, no allocation: most keys),
/// else in a vector of their own (kept by a spare state for the next long key). Made by
/// [`KeyBytes::new`] and [`KeyBytes::set`] alone, so that equal bytes are always held the
/// same way.
#[derive(Clone)]
enum KeyBytes {
    Inline(u8, [u8; KEY_INLINE]),
    Boxed(Vec<u8>),
}

impl KeyBytes {
    #[inline]
    fn new(b: &[u8]) -> KeyBytes {
        let mut k = KeyBytes::default();
        k.set(b);
        k
    }

    /// Holds `b` instead, in the room already there when it fits: inline, or a long key's
    /// vector when it is at most twice as long as needed (a spare's room never grows a
    /// window much).
    #[inline]
    fn set(&mut self, b: &[u8]) {
        let n = b.len();
        match self {
            KeyBytes::Inline(len, a) if n <= KEY_INLINE => {
                copy_short(a, b);
                *len = n as u8;
            }
            KeyBytes::Boxed(v) if n > KEY_INLINE && v.capacity() <= 2 * n => {
                v.clear();
                v.extend_from_slice(b);
            }
            _ if n <= KEY_INLINE => {
                let mut a = [0; KEY_INLINE];
                copy_short(&mut a, b);
                *self = KeyBytes::Inline(n as u8, a);
            }
            _ => *self = KeyBytes::Boxed(b.to_vec()),
        }
    }

    fn is_long(&self) -> bool {
        matches!(self, KeyBytes::Boxed(_))
    }
}

/// Copies up to [`KEY_INLINE`] bytes to the start of `to` with two overlapping fixed-size
/// copies, where one of variable length is a call to `memcpy` costing more than the rest.
#[inline]
fn copy_short(to: &mut [u8; KEY_INLINE], from: &[u8]) {
    fn overlap<const W: usize>(to: &mut [u8], from: &[u8]) {
        let n = from.len();
        if let (Some(head), Some(tail)) = (from.first_chunk::<W>(), from.last_chunk::<W>()) {
            to[..W].copy_from_slice(head);
            to[n - W..n].copy_from_slice(tail);
        }
    }
    match from.len() {
        31.. => {}
        16.. => overlap::<16>(to, from),
        8..16 => overlap::<8>(to, from),
        4..8 => overlap::<4>(to, from),
        _ => {
            for (t, f) in to.iter_mut().zip(from) {
                *t = *f;
            }
        }
    }
}

impl Default for KeyBytes {
    fn default() -> Self {
        KeyBytes::Inline(0, [0; KEY_INLINE])
    }
}

impl std::ops::Deref for KeyBytes {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            KeyBytes::Inline(n, a) => &a[..usize::from(*n)],
            KeyBytes::Boxed(b) => b,
        }
    }
}

impl PartialEq for KeyBytes {
    fn eq(&self, o: &KeyBytes) -> bool {
        **self == **o
    }
}

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// What a window keeps for `threshold` beside its aggregates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra {
    /// Event ids of the first and last datum counted.
    pub first_id: EventId,
    /// See `first_id`.
    pub last_id: EventId,
    /// Evidence fields of the first datum, then of the last.
    pub evidence: Evidence,
    /// The id of the alert this window fired (0: none).
    pub alert: EventId,
    /// A hash of the group-by key alone (without the window), to remember per key.
    pub group: u64,
}

/// A window's evidence values: a boxed vector when evidence fields are named, so that
/// [`Extra`] without them is 40 bytes of the window's allocation (a vector inline would
/// make it 56).
#[derive(Debug, Clone, Default)]
// Boxed on purpose: 8 bytes per window instead of 24 when no evidence is named.
#[allow(clippy::box_collection)]
pub struct Evidence(Option<Box<Vec<Value>>>);

impl Evidence {
    /// Empties it, keeping its room.
    pub fn clear(&mut self) {
        if let Some(v) = &mut self.0 {
            v.clear();
        }
    }

    /// Adds a value.
    pub fn push(&mut self, v: Value) {
        self.0.get_or_insert_with(Box::default).push(v);
    }

    /// Appends a copy of what it holds (the first datum's values stand for the last too).
    fn repeat_once(&mut self) {
        if let Some(v) = &mut self.0 {
            v.extend_from_within(..);
        }
    }

    /// The values.
    pub fn into_vec(self) -> Vec<Value> {
        self.0.map(|v| *v).unwrap_or_default()
    }
}

impl From<Vec<Value>> for Evidence {
    fn from(v: Vec<Value>) -> Self {
        Evidence((!v.is_empty()).then(|| Box::new(v)))
    }
}

impl std::ops::Deref for Evidence {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        self.0.as_deref().map_or(&[], |v| &v[..])
    }
}

impl std::ops::DerefMut for Evidence {
    fn deref_mut(&mut self) -> &mut [Value] {
        self.0.as_deref_mut().map_or(&mut [], |v| &mut v[..])
    }
}

impl PartialEq for Evidence {
    fn eq(&self, o: &Evidence) -> bool {
        **self == **o
    }
}

impl WinState {
    /// The id of the alert this window fired (0: none, or not kept).
    pub fn alert(&self) -> EventId {
        self.extra().map_or(0, |x| x.alert)
    }

    /// The hash of the group-by key (0 when not kept).
    pub fn group(&self) -> u64 {
        self.extra().map_or(0, |x| x.group)
    }

    /// The `threshold` bookkeeping, zeros when not kept.
    fn extra_or_default(&self) -> Extra {
        self.extra().cloned().unwrap_or_default()
    }

    /// The bytes counted against max_bytes.
    fn size(&self) -> usize {
        self.bytes() as usize
    }

    fn add_bytes(&mut self, n: usize) {
        add_bytes(self.parts().bytes, n);
    }
}

/// Adds `n` to a window's byte count, saturating.
#[inline]
fn add_bytes(bytes: &mut u32, n: usize) {
    *bytes = bytes.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
}

/// Event ids held by a window: the first inline, since most windows hold one or few
/// (no allocation for one), the rest in a boxed vector (16 bytes in all).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ids {
    /// The first id; 0: none (event ids held are never 0).
    one: EventId,
    // Boxed on purpose: 8 bytes per window instead of 24 while it holds one id.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<EventId>>>,
}

impl Ids {
    /// Adds an id (0 is not held).
    #[inline]
    pub fn push(&mut self, id: EventId) {
        if id == 0 {
            return;
        }
        if self.one == 0 {
            self.one = id;
        } else {
            self.more.get_or_insert_with(Box::default).push(id);
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        usize::from(self.one != 0) + self.more.as_ref().map_or(0, |m| m.len())
    }

    /// Whether none.
    pub fn is_empty(&self) -> bool {
        self.one == 0
    }

    /// The ids, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = EventId> + '_ {
        (self.one != 0)
            .then_some(self.one)
            .into_iter()
            .chain(self.more.iter().flat_map(|m| m.iter().copied()))
    }

    /// Adds every id of `other`.
    pub fn append(&mut self, other: Ids) {
        for id in other.iter() {
            self.push(id);
        }
    }
}

/// Acknowledgements held until an output is acknowledged: output id → the ids of the
/// inputs it counts. Output ids come from `Ctx::new_event_id`, which only grows, and drains
/// acknowledge in order, so the outputs wait in a queue in id order and an
/// acknowledgement mostly takes the front: no hashing per output.
#[derive(Debug, Default)]
pub struct Held {
    queue: VecDeque<(EventId, Ids)>,
    /// Outputs renamed downstream, or held out of order.
    others: HashMap<EventId, Ids>,
    total: usize,
}

impl Held {
    /// Holds `ids` until `out` is acknowledged.
    pub fn hold(&mut self, out: EventId, ids: Ids) {
        if ids.is_empty() {
            return;
        }
        self.total += ids.len();
        match self.queue.back() {
            Some((last, _)) if *last >= out => self.others.entry(out).or_default().append(ids),
            _ => self.queue.push_back((out, ids)),
        }
    }

    /// Inputs held, over all outputs.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Outputs acknowledged: acknowledges what they held.
    pub fn done(&mut self, ids: &[EventId], cx: &mut Ctx<'_>) {
        if self.total == 0 {
            return;
        }
        for id in ids {
            let ids = match self.queue.front() {
                Some((first, _)) if first == id => self.queue.pop_front().map(|(_, ids)| ids),
                _ => match self.queue.binary_search_by_key(id, |(o, _)| *o) {
                    // Left empty in place; the front is cleared below.
                    Ok(i) => self.queue.get_mut(i).map(|(_, ids)| std::mem::take(ids)),
                    Err(_) => self.others.remove(id),
                },
            };
            if let Some(ids) = ids {
                self.total = self.total.saturating_sub(ids.len());
                for i in ids.iter() {
                    cx.event_done(i);
                }
            }
        }
        while self.queue.front().is_some_and(|(_, ids)| ids.is_empty()) {
            self.queue.pop_front();
        }
    }

    /// An output renamed downstream: what it held moves with it.
    pub fn rename(&mut self, old: EventId, new: EventId) {
        let ids = match self.queue.binary_search_by_key(&old, |(o, _)| *o) {
            Ok(i) => self.queue.get_mut(i).map(|(_, ids)| std::mem::take(ids)),
            Err(_) => self.others.remove(&old),
        };
        if let Some(ids) = ids {
            self.others.entry(new).or_default().append(ids);
        }
    }
}

/// Why a window was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseWhy {
    /// The watermark passed its end plus the lateness (or the timer, on arrival time).
    Closed,
    /// Closed early to stay within max_keys / max_bytes.
    Evicted,
    /// Open at shutdown.
    Partial,
}

/// A window handed out by [`Windows`].
#[derive(Debug)]
pub struct Closed {
    /// Its state.
    pub state: WinState,
    /// Why.
    pub why: CloseWhy,
}

/// What became of a datum given to [`Windows::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Counted in at least one window.
    Counted,
    /// Every window it falls in has closed.
    Late,
}

/// A window's place in the closing order: its generation and its index in the store
/// (8 bytes: with 100,000 windows open, the order's queues hold some 200,000 places).
type Place = (u32, u32);

/// Whether the place (`generation`, at close time `at`) is window `s`'s own: its
/// generation, and for tumbling and hopping windows its close time too (fixed for them),
/// so that a place whose index was reused 2^32 times passes only at the same time.
#[inline]
fn owns_place(kind: WindowKind, lateness: i64, s: &WinState, generation: u32, at: i64) -> bool {
    s.generation == generation
        && (kind == WindowKind::Session || s.end.saturating_add(lateness) == at)
}

/// The open windows: states in a slab, found by key through an open-addressing
/// table of slab indexes. The key is hashed once per datum, looked up by its bytes
/// (no key made to look up), and kept once, in its state; a closing place names a
/// window by index. Each open window costs its allocation, 8 bytes of slab and 8 to 16 of
/// table, where a general map keyed by shared key bytes cost a key allocation, a map
/// entry and an eviction queue beside.
/// From this many slots on, the store's table fills up to 7/8 before it doubles: 100,000
/// windows (the default max_keys) fit in 2^17 slots (1 MiB) instead of 2^18.
const BIG_TABLE: usize = 1 << 17;

#[derive(Debug, Default)]
struct Store {
    slab: Vec<Option<WinState>>,
    /// Free slab indexes.
    free: Vec<u32>,
    /// Linear probing, a power of two long, at most half full while short (few probes
    /// where they are most of a lookup's cost), at most 7/8 full from [`BIG_TABLE`]
    /// slots on (where memory is what counts and a probe is one more compare of 8 bytes
    /// in a cache line already read): 0 is empty, else the low
    /// half of the key's hash << 32 | (slab index + 1).
    table: Vec<u64>,
    /// The most windows the table holds before it doubles (set by `grow`).
    max_len: usize,
    len: usize,
    hasher: FastState,
}

impl Store {
    /// The hash of key bytes (the low half is kept).
    #[inline]
    fn hash(&self, key: &[u8]) -> u32 {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        h.finish() as u32
    }

    /// The slab index of the window with key `key` (hash `h`), if open.
    #[inline]
    fn find(&self, h: u32, key: &[u8]) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let e = *self.table.get(i)?;
            if e == 0 {
                return None;
            }
            if (e >> 32) as u32 == h {
                let ix = (e as u32).wrapping_sub(1);
                if let Some(Some(s)) = self.slab.get(ix as usize)
                    && s.kb[..] == *key
                {
                    return Some(ix);
                }
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn get(&self, ix: u32) -> Option<&WinState> {
        self.slab.get(ix as usize)?.as_ref()
    }

    #[inline]
    fn get_mut(&mut self, ix: u32) -> Option<&mut WinState> {
        self.slab.get_mut(ix as usize)?.as_mut()
    }

    /// Adds a window whose key (`s.kb`, hash `s.hash`) is not open; returns its index.
    fn insert(&mut self, s: WinState) -> u32 {
        if self.len + 1 > self.max_len {
            self.grow();
        }
        let h = s.hash;
        let ix = match self.free.pop() {
            Some(ix) => {
                self.slab[ix as usize] = Some(s);
                ix
            }
            None => {
                self.slab.push(Some(s));
                (self.slab.len() - 1) as u32
            }
        };
        self.put((u64::from(h) << 32) | (u64::from(ix) + 1));
        self.len += 1;
        ix
    }

    /// Puts a table entry in the first empty slot from its hash's.
    #[inline]
    fn put(&mut self, e: u64) {
        let mask = self.table.len() - 1;
        let mut i = (e >> 32) as usize & mask;
        while self.table[i] != 0 {
            i = (i + 1) & mask;
        }
        self.table[i] = e;
    }

    fn grow(&mut self) {
        let n = (self.table.len() * 2).max(16);
        self.max_len = if n < BIG_TABLE { n / 2 } else { n / 8 * 7 };
        let old = std::mem::replace(&mut self.table, vec![0; n]);
        for e in old {
            if e != 0 {
                self.put(e);
            }
        }
    }

    /// Takes the window at `ix` out.
    #[inline(always)]
    fn remove(&mut self, ix: u32) -> Option<WinState> {
        let s = self.slab.get_mut(ix as usize)?.take()?;
        self.free.push(ix);
        self.len -= 1;
        let mask = self.table.len() - 1;
        let want = (u64::from(s.hash) << 32) | (u64::from(ix) + 1);
        let mut i = s.hash as usize & mask;
        while self.table[i] != want {
            if self.table[i] == 0 {
                return Some(s);
            }
            i = (i + 1) & mask;
        }
        // Backward shift: an entry after the hole moves into it when the hole lies on
        // its probe path (from its hash's slot to where it is), so that no probe stops
        // early at the hole.
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let e = self.table[j];
            if e == 0 {
                break;
            }
            let home = (e >> 32) as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(i) & mask) {
                self.table[i] = e;
                i = j;
            }
        }
        self.table[i] = 0;
        Some(s)
    }

    /// Any open window, taken out.
    fn pop_any(&mut self) -> Option<WinState> {
        let ix = self.slab.iter().position(Option::is_some)?;
        self.remove(ix as u32)
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &WinState)> {
        self.slab
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as u32, s.as_ref()?)))
    }
}

/// The [`Lookup`] of records: a top-level field is looked for first where the hint says
/// (one comparison when records keep one shape), then by the usual search, which moves the
/// hint; deeper paths are walked as [`Record::get_path`] walks them.
#[inline]
pub fn record_get<'a>(r: &'a Record, p: &Path, hint: &Cell<u32>) -> Option<&'a Value> {
    let [k] = p.keys() else {
        return r.get_path(p);
    };
    let mut fields = r.fields.iter();
    if let Some((at, v)) = fields.nth(hint.get() as usize)
        && at == *k
    {
        return Some(v);
    }
    let (i, v) = r
        .fields
        .iter()
        .enumerate()
        .find_map(|(i, (at, v))| (at == *k).then_some((i, v)))?;
    hint.set(i as u32);
    Some(v)
}

/// A field lookup over the datum: the datum, the field's path, and a hint the lookup may
/// keep for that field (where it was found: a position among a record's fields) and try
/// first the next time, since data of one train mostly have one shape. A datum without
/// positions ignores it.
pub type Lookup<D> = Rc<dyn for<'a> Fn(&'a D, &Path, &Cell<u32>) -> Option<&'a Value>>;

/// What counting a datum into a window reads: the aggregates and the evidence.
struct Spec<D> {
    get: Lookup<D>,
    aggs: Vec<AggSpec>,
    conds: Vec<Condition<D>>,
    evidence: Vec<Path>,
    /// The lookup's hints for `evidence`.
    evidence_hints: Vec<Cell<u32>>,
    distinct_exact: usize,
    max_values: usize,
    hash_buf: Vec<u8>,
    /// Some aggregate may hold memory of its own (first, last, count_distinct, values).
    may_hold_memory: bool,
    /// Aggregates with a flag field (count_distinct, values).
    flags: usize,
}

/// The bookkeeping of windows over any datum: see the module doc.
pub struct Windows<D> {
    get: Lookup<D>,
    keys: Vec<Path>,
    /// The lookup's hints for `keys`.
    key_hints: Vec<Cell<u32>>,
    key_names: Vec<String>,
    time: EventTime,
    kind: WindowKind,
    size: i64,
    step: i64,
    gap: i64,
    lateness: i64,
    spec: Spec<D>,
    max_bytes: usize,
    /// The open windows.
    states: Store,
    max_keys: usize,
    /// Windows closed early to stay within max_keys / max_bytes.
    evicted: Evictions,
    /// Close time → (generation, index) of the windows closing then, oldest first. It is
    /// the eviction order too: the window closing soonest goes first.
    order: BTreeMap<i64, VecDeque<Place>>,
    /// Places in `order`, stale ones included.
    places: usize,
    watermark: i64,
    next_generation: u32,
    bytes: usize,
    /// The wall clock as Unix milliseconds, set by the cog per batch.
    now_ms: i64,
    buf: Vec<u8>,
    /// Every key field of the datum whose key is in `buf` is text (none to keep apart).
    key_text: bool,
    /// Output field names, indexed by [`Windows::output`].
    names: Vec<Path>,
    /// Windows handed out, for the cog to take.
    pub closed: Vec<Closed>,
    /// Released states, reused by new ones (no allocation per window; a state is a
    /// pointer, and a spare one keeps its vectors' room).
    spare: Vec<WinState>,
    /// The same, of states whose key bytes are long (`KeyBytes::Boxed`): their vectors
    /// serve the next long keys.
    spare_long: Vec<WinState>,
    /// With [`Windows::track_touched`]: the windows the last datum counted in (see
    /// [`Windows::state`]).
    pub touched: Vec<u32>,
    track: bool,
    track_groups: bool,
    /// Windows keep [`Extra`] (`threshold`).
    extra: bool,
    /// Late data seen.
    pub late: u64,
}

impl<D> fmt::Debug for Windows<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Windows")
            .field("kind", &self.kind)
            .field("open", &self.states.len)
            .field("watermark", &self.watermark)
            .finish()
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn path(key: &'static str, p: &str) -> Result<Path, SettingError> {
    Path::parse(p).map_err(|e| SettingError::new(key, format!("{p:?}: {e}")))
}

/// Counts value `v` into an aggregate other than a count or a sum (kept apart from the
/// usual ones); returns how many bytes it grew by.
fn update_other(
    spec: &AggSpec,
    agg: &mut Agg,
    v: Option<&Value>,
    hash_buf: &mut Vec<u8>,
    distinct_exact: usize,
    max_values: usize,
) -> usize {
    let mut grew = 0;
    match agg {
        Agg::Count(_) | Agg::Sum(_) => {}
        Agg::Extreme(cur) => {
            if let Some(x) = v.and_then(Num::of) {
                let better = match *cur {
                    None => true,
                    Some(c) if spec.func == Func::Min => x.less(c),
                    Some(c) => c.less(x),
                };
                if better {
                    *cur = Some(x);
                }
            }
        }
        Agg::Mean(sum, n) => {
            if let Some(x) = v.and_then(Num::of) {
                *sum += x.f();
                *n += 1;
            }
        }
        Agg::One(cur) => {
            if let Some(x) = v
                && (spec.func == Func::Last || cur.is_none())
            {
                *cur = Some(Box::new(x.clone()));
            }
        }
        Agg::Exact(set) => {
            if let Some(x) = v {
                let h = value_hash(x, hash_buf);
                if set.insert(h) {
                    grew += 12;
                    if set.len() > distinct_exact {
                        let mut regs = vec![0u8; HLL_M].into_boxed_slice();
                        for &h in set.iter() {
                            hll_add(&mut regs, h);
                        }
                        grew += HLL_M;
                        *agg = Agg::Hll(regs);
                    }
                }
            }
        }
        Agg::Hll(regs) => {
            if let Some(x) = v {
                hll_add(regs, value_hash(x, hash_buf));
            }
        }
        Agg::Values(vals) => {
            if let Some(x) = v {
                if vals.0.len() < max_values {
                    grew += 32 + x.as_bytes().map_or(0, <[u8]>::len);
                    vals.0.push(x.clone());
                } else {
                    vals.1 = true;
                }
            }
        }
    }
    grew
}

impl<D> Spec<D> {
    /// Counts `d` into `s`; returns how many bytes it grew by.
    #[inline]
    fn update(&mut self, s: &mut WinState, d: &D, id: EventId, hold: bool) -> usize {
        let mut grew = 0usize;
        let parts = s.parts();
        for (spec, agg) in self.aggs.iter().zip(parts.aggs.iter_mut()) {
            match agg {
                Agg::Count(n) => {
                    let hit = spec.func == Func::Count
                        || match &spec.fast {
                            // An integer field compared with an integer: no evaluator.
                            Some(f) => match (self.get)(d, &f.path, &f.hint) {
                                Some(Value::Int(i)) => f.holds(*i),
                                _ => self.conds.get(spec.cond).is_some_and(|c| c.test(d)),
                            },
                            None => self.conds.get(spec.cond).is_some_and(|c| c.test(d)),
                        };
                    if hit {
                        *n += 1;
                    }
                }
                Agg::Sum(sum) => {
                    let v = spec
                        .field
                        .as_ref()
                        .and_then(|p| (self.get)(d, p, &spec.hint));
                    // An integer (the usual) read without the general conversion.
                    let x = match v {
                        Some(Value::Int(i)) => Some(Num::Int(*i)),
                        v => v.and_then(Num::of),
                    };
                    if let Some(x) = x {
                        *sum = match (*sum, x) {
                            (Num::Int(a), Num::Int(b)) => a
                                .checked_add(b)
                                .map_or(Num::Float(a as f64 + b as f64), Num::Int),
                            (a, b) => Num::Float(a.f() + b.f()),
                        };
                    }
                }
                _ => {
                    let v = spec
                        .field
                        .as_ref()
                        .and_then(|p| (self.get)(d, p, &spec.hint));
                    grew += update_other(
                        spec,
                        agg,
                        v,
                        &mut self.hash_buf,
                        self.distinct_exact,
                        self.max_values,
                    );
                }
            }
        }
        if let Some(x) = parts.extra {
            if x.first_id == 0 {
                x.first_id = id;
                for (p, h) in self.evidence.iter().zip(&self.evidence_hints) {
                    x.evidence
                        .push((self.get)(d, p, h).cloned().unwrap_or(Value::Null));
                }
                x.evidence.repeat_once();
            } else if !self.evidence.is_empty() {
                let n = self.evidence.len();
                for (i, (p, h)) in self.evidence.iter().zip(&self.evidence_hints).enumerate() {
                    x.evidence[n + i] = (self.get)(d, p, h).cloned().unwrap_or(Value::Null);
                }
            }
            x.last_id = id;
        }
        if hold && id != 0 {
            parts.head.held.push(id);
        }
        add_bytes(parts.bytes, grew);
        grew
    }
}

impl<D: 'static> Windows<D> {
    /// Windows made from their settings; `get` reads a datum's fields (key, time,
    /// aggregate inputs and conditions), `evidence` names fields of the first and last
    /// datum kept per window (`threshold`).
    pub fn from_settings(
        s: &WindowSettings,
        get: Lookup<D>,
        evidence: &[String],
    ) -> Result<Self, SettingError> {
        let keys = s
            .key
            .iter()
            .map(|k| path("key", k))
            .collect::<Result<Vec<_>, _>>()?;
        let time = EventTime::new(&s.time, &s.time_format)?;
        let (size, step, gap) = match s.kind {
            WindowKind::Tumbling => {
                if s.step.is_some() {
                    return Err(SettingError::new(
                        "step",
                        "only kind = \"hopping\" takes a step (tumbling windows follow each other)",
                    ));
                }
                if s.gap.is_some() {
                    return Err(SettingError::new(
                        "gap",
                        "only kind = \"session\" takes a gap",
                    ));
                }
                (ms(s.size), ms(s.size), 0)
            }
            WindowKind::Hopping => {
                if s.gap.is_some() {
                    return Err(SettingError::new(
                        "gap",
                        "only kind = \"session\" takes a gap",
                    ));
                }
                let Some(step) = s.step else {
                    return Err(SettingError::new(
                        "step",
                        "kind = \"hopping\" needs a step (how far each window starts after the one before)",
                    ));
                };
                let step = ms(step);
                if step <= 0 || step > ms(s.size) {
                    return Err(SettingError::new(
                        "step",
                        "must be at least 1ms and at most the size",
                    ));
                }
                if ms(s.size) / step > 1000 {
                    return Err(SettingError::new(
                        "step",
                        "more than 1000 windows per datum (size / step): take a longer step",
                    ));
                }
                (ms(s.size), step, 0)
            }
            WindowKind::Session => {
                if s.step.is_some() {
                    return Err(SettingError::new(
                        "step",
                        "only kind = \"hopping\" takes a step",
                    ));
                }
                let Some(gap) = s.gap else {
                    return Err(SettingError::new(
                        "gap",
                        "kind = \"session\" needs a gap (a key's session ends after this long without data)",
                    ));
                };
                if gap.is_zero() {
                    return Err(SettingError::new("gap", "must be longer than 0s"));
                }
                (0, 0, ms(gap))
            }
        };
        for (key, span) in [
            ("size", ms(s.size)),
            ("step", s.step.map_or(0, ms)),
            ("gap", s.gap.map_or(0, ms)),
            ("lateness", ms(s.lateness)),
        ] {
            if span > MAX_SPAN {
                return Err(SettingError::new(key, "must be at most 100 years"));
            }
        }
        if s.kind != WindowKind::Session && size < 1 {
            return Err(SettingError::new("size", "must be at least 1ms"));
        }
        if s.max_keys == 0 {
            return Err(SettingError::new("max_keys", "must be at least 1"));
        }
        if s.aggregate.0.is_empty() {
            return Err(SettingError::new(
                "aggregate",
                "give at least one aggregate, e.g. { requests = \"count\" }",
            ));
        }
        if s.aggregate.0.len() > thin::MAX_AGGS {
            return Err(SettingError::new(
                "aggregate",
                format!("at most {} aggregates", thin::MAX_AGGS),
            ));
        }
        let mut aggs = Vec::new();
        let mut conds = Vec::new();
        for (name, text) in &s.aggregate.0 {
            let err = |msg: String| SettingError::new("aggregate", format!("{name}: {msg}"));
            let (func, arg) = parse_func(text).map_err(err)?;
            let out = Path::parse(name).map_err(|e| err(format!("bad field name: {e}")))?;
            let mut spec = AggSpec {
                name: name.clone(),
                out,
                out_ix: 0,
                flag_ix: 0,
                func,
                field: None,
                hint: Cell::new(0),
                cond: 0,
                fast: None,
                flag: None,
            };
            match (func, arg) {
                (Func::CountIf, Some(c)) => {
                    let expr = Expr::parse(c).map_err(|e| {
                        err(format!(
                            "in the condition at column {}: {}",
                            e.column, e.message
                        ))
                    })?;
                    let g = get.clone();
                    spec.cond = conds.len();
                    spec.fast = IntCmp::of(expr.as_str());
                    // The evaluator reads any fields: one hint for them all.
                    let hint = Cell::new(0);
                    conds.push(Condition::new(expr, move |d: &D, p: &Path| g(d, p, &hint)));
                }
                (_, Some(f)) => {
                    spec.field = Some(
                        Path::parse(f)
                            .map_err(|e| err(format!("{f:?} is not a field path ({e})")))?,
                    );
                }
                _ => {}
            }
            spec.flag = match func {
                Func::CountDistinct => Some(Path::parse(&format!("{name}_estimated"))),
                Func::Values => Some(Path::parse(&format!("{name}_truncated"))),
                _ => None,
            }
            .transpose()
            .map_err(|e| err(e.to_string()))?;
            aggs.push(spec);
        }
        let evidence = evidence
            .iter()
            .map(|e| path("evidence", e))
            .collect::<Result<Vec<_>, _>>()?;
        let fixed = |p: &str| path("key", p);
        // The output names: window_start, window_end, the keys, each aggregate and its flag.
        let mut names = vec![fixed("window_start")?, fixed("window_end")?];
        names.extend(keys.iter().cloned());
        for a in &mut aggs {
            a.out_ix = names.len();
            names.push(a.out.clone());
            if let Some(f) = &a.flag {
                a.flag_ix = names.len();
                names.push(f.clone());
            }
        }
        let flags = aggs.iter().filter(|a| a.flag.is_some()).count();
        let may_hold_memory = aggs.iter().any(|a| {
            !matches!(
                a.func,
                Func::Count | Func::CountIf | Func::Sum | Func::Min | Func::Max | Func::Mean
            )
        });
        Ok(Windows {
            names,
            get: get.clone(),
            key_names: s.key.clone(),
            key_hints: keys.iter().map(|_| Cell::new(0)).collect(),
            keys,
            time,
            kind: s.kind,
            size,
            step,
            gap,
            lateness: ms(s.lateness),
            spec: Spec {
                get,
                aggs,
                conds,
                evidence_hints: evidence.iter().map(|_| Cell::new(0)).collect(),
                evidence,
                distinct_exact: s.distinct_exact,
                max_values: s.max_values,
                hash_buf: Vec::new(),
                may_hold_memory,
                flags,
            },
            max_bytes: s.max_bytes.max(1),
            states: Store::default(),
            max_keys: s.max_keys,
            evicted: Evictions::default(),
            order: BTreeMap::new(),
            places: 0,
            watermark: i64::MIN,
            next_generation: 1,
            bytes: 0,
            now_ms: 0,
            buf: Vec::new(),
            key_text: true,
            closed: Vec::new(),
            spare: Vec::new(),
            spare_long: Vec::new(),
            touched: Vec::new(),
            track: false,
            track_groups: false,
            extra: false,
            late: 0,
        })
    }

    /// Makes [`Windows::add`] list in `touched` the windows each datum counted in (what
    /// `threshold` evaluates when it fires on crossing).
    pub fn track_touched(&mut self) {
        self.track = true;
    }

    /// Makes each window remember a hash of its group-by key ([`WinState::group`]), for
    /// what is remembered per key across windows (`threshold`'s `rearm`).
    pub fn track_groups(&mut self) {
        self.track_groups = true;
    }

    /// Makes each window keep [`Extra`]: the first and last event ids, the evidence, the
    /// alert fired and the group (what `threshold` reads).
    pub fn keep_extra(&mut self) {
        self.extra = true;
    }

    /// Whether time is the wall clock at arrival.
    pub fn is_arrival(&self) -> bool {
        self.time.is_arrival()
    }

    /// Sets the wall clock (Unix milliseconds): the arrival time, and the year of
    /// yearless formats.
    pub fn set_now(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
    }

    /// The greatest event time seen (milliseconds; `i64::MIN` before any).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Open (key, window) states.
    pub fn open(&self) -> usize {
        self.states.len
    }

    /// The bound on open (key, window) states.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// The open window at index `ix` (from [`Windows::touched`]), if still open.
    pub fn state(&self, ix: u32) -> Option<&WinState> {
        self.states.get(ix)
    }

    /// See [`Windows::state`].
    pub fn state_mut(&mut self, ix: u32) -> Option<&mut WinState> {
        self.states.get_mut(ix)
    }

    /// The open windows, in no particular order.
    pub fn states(&self) -> impl Iterator<Item = &WinState> {
        self.states.iter().map(|(_, s)| s)
    }

    /// Windows closed early to stay within max_keys / max_bytes, since creation.
    pub fn evictions(&self) -> u64 {
        self.evicted.total()
    }

    /// Logs the evictions since the last report, if any, at most
    /// [`LOG_BURST`](crate::kit::on_error::LOG_BURST) lines a second. `cog` names the cog.
    pub fn report_evictions(&mut self, cog: &str, cx: &mut Ctx<'_>) {
        self.evicted.report(cog, self.max_keys, cx);
    }

    /// The event time of `d`, milliseconds: years 1 to 9999 (beyond, the time is
    /// refused, so that window arithmetic never overflows).
    #[inline]
    pub fn time_of(&self, d: &D) -> Result<i64, TimeError> {
        let v = match self.time.field() {
            Some((path, hint)) => (self.get)(d, path, hint),
            None => None,
        };
        self.time.read(v, self.now_ms)
    }

    /// Writes the key of `d` into `self.buf`.
    #[inline]
    fn write_key(&mut self, d: &D) {
        self.buf.clear();
        self.key_text = true;
        for (p, h) in self.keys.iter().zip(&self.key_hints) {
            let v = (self.get)(d, p, h).unwrap_or(&Value::Null);
            self.key_text &= v.as_bytes().is_some();
            key_part(v, &mut self.buf);
        }
    }

    /// Counts `d` at time `t` in its windows, advancing the watermark first (closing what
    /// it passes into `closed`). `id` is held by the window when `hold` (a consumed
    /// input; with hopping windows, by the last window it falls in, which closes last).
    pub fn add(&mut self, d: &D, t: i64, id: EventId, hold: bool) -> Added {
        if self.track {
            self.touched.clear();
        }
        if !self.is_arrival() && t > self.watermark {
            self.advance(t);
        }
        self.write_key(d);
        let key_len = self.buf.len();
        match self.kind {
            WindowKind::Tumbling => {
                let start = t.div_euclid(self.size) * self.size;
                if self.closed_at(start + self.size) {
                    self.late += 1;
                    return Added::Late;
                }
                self.count_in(d, start, start + self.size, key_len, id, hold);
            }
            WindowKind::Hopping => {
                // Windows starting at multiples of step within (t - size, t].
                let last = t.div_euclid(self.step) * self.step;
                let mut start = last - (self.size - 1).div_euclid(self.step) * self.step;
                let mut counted = false;
                while start <= last {
                    let end = start + self.size;
                    if t < end && !self.closed_at(end) {
                        // The id is held by the window that closes last (the one starting
                        // at `last`: open whenever any is), so it is acknowledged only once
                        // every window counting it is written.
                        self.count_in(d, start, end, key_len, id, hold && start == last);
                        counted = true;
                    }
                    start += self.step;
                }
                if !counted {
                    self.late += 1;
                    return Added::Late;
                }
            }
            WindowKind::Session => {
                if self.closed_at(t + self.gap) {
                    self.late += 1;
                    return Added::Late;
                }
                self.count_session(d, t, id, hold);
            }
        }
        Added::Counted
    }

    /// Whether a window ending at `end` has closed.
    #[inline]
    fn closed_at(&self, end: i64) -> bool {
        end.saturating_add(self.lateness) <= self.watermark
    }

    #[inline]
    fn count_in(&mut self, d: &D, start: i64, end: i64, key_len: usize, id: EventId, hold: bool) {
        self.buf.truncate(key_len);
        self.buf.extend_from_slice(&start.to_be_bytes());
        // One hash of the key, looked up by its bytes; a new window is made only when none
        // is open.
        let h = self.states.hash(&self.buf);
        match self.states.find(h, &self.buf) {
            Some(ix) => {
                let Some(s) = self.states.get_mut(ix) else {
                    return;
                };
                let grew = self.spec.update(s, d, id, hold);
                if self.track {
                    self.touched.push(ix);
                }
                self.grew(grew);
            }
            None => self.open_state(d, h, start, end, id, hold),
        }
    }

    fn count_session(&mut self, d: &D, t: i64, id: EventId, hold: bool) {
        let gap = self.gap;
        let h = self.states.hash(&self.buf);
        let open = self
            .states
            .find(h, &self.buf)
            .and_then(|ix| self.states.get(ix).map(|s| (ix, s.start, s.end)));
        match open {
            Some((ix, start, end)) if t < end && t >= start - gap => {
                let Some(s) = self.states.get_mut(ix) else {
                    return;
                };
                s.start = s.start.min(t);
                s.end = s.end.max(t + gap);
                let grew = self.spec.update(s, d, id, hold);
                if self.track {
                    self.touched.push(ix);
                }
                self.grew(grew);
            }
            Some((ix, ..)) => {
                // The datum falls outside the key's session: that one ends here.
                if let Some(s) = self.take(ix) {
                    self.closed.push(Closed {
                        state: s,
                        why: CloseWhy::Closed,
                    });
                }
                self.open_state(d, h, t, t + gap, id, hold);
            }
            None => self.open_state(d, h, t, t + gap, id, hold),
        }
    }

    /// Takes the window at `ix` out, its bytes counted out.
    fn take(&mut self, ix: u32) -> Option<WinState> {
        let s = self.states.remove(ix)?;
        self.bytes = self.bytes.saturating_sub(s.size());
        Some(s)
    }

    /// Bytes grown by an update: beyond max_bytes, the oldest windows close early.
    #[inline]
    fn grew(&mut self, grew: usize) {
        if grew > 0 {
            self.bytes += grew;
            while self.bytes > self.max_bytes && self.states.len > 1 && self.evict_one() {}
        }
    }

    /// Gives back a window handed out and done with: its vectors serve the next ones.
    pub fn release(&mut self, mut s: WinState) {
        // A spare serves only as a state of this cog's shape (every state made here is).
        if self.spare.len() + self.spare_long.len() < 1024
            && s.aggs().len() == self.spec.aggs.len()
            && s.extra().is_some() == self.extra
        {
            if !s.key.is_empty() {
                s.key = Box::default();
            }
            let parts = s.parts();
            // Numbers stay for new_state to reset in place; what holds memory goes now.
            if self.spec.may_hold_memory {
                for a in parts.aggs.iter_mut() {
                    if a.holds_memory() {
                        *a = Agg::Count(0);
                    }
                }
            }
            if let Some(x) = parts.extra {
                x.evidence.clear();
            }
            if s.kb.is_long() {
                self.spare_long.push(s);
            } else {
                self.spare.push(s);
            }
        }
    }

    /// A new state for key `self.buf` (hash `h`) and the window `[start, end)`, from a
    /// spare one when there is one.
    fn new_state(&mut self, d: &D, h: u32, start: i64, end: i64) -> WinState {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let group = if self.track_groups {
            fingerprint(&self.buf[..self.key_len()])
        } else {
            0
        };
        // A long key takes a spare whose key room is long too (no allocation).
        let spare = if self.buf.len() > KEY_INLINE {
            self.spare_long.pop().or_else(|| self.spare.pop())
        } else {
            self.spare.pop().or_else(|| self.spare_long.pop())
        };
        let aggs = &self.spec.aggs;
        let mut s = match spare {
            Some(mut s) => {
                let p = s.parts();
                p.head.start = start;
                p.head.end = end;
                p.head.generation = generation;
                p.head.held = Ids::default();
                for (a, spec) in p.aggs.iter_mut().zip(aggs) {
                    a.reset(spec.func);
                }
                if let Some(x) = p.extra {
                    x.first_id = 0;
                    x.last_id = 0;
                    x.evidence.clear();
                    x.alert = 0;
                    x.group = group;
                }
                *p.bytes = 0;
                s
            }
            None => {
                let mut head = WinHead::new(start, end);
                head.generation = generation;
                let extra = self.extra.then(|| Extra {
                    group,
                    ..Extra::default()
                });
                WinState::make(head, aggs.len(), |i| Agg::new(aggs[i].func), extra, 0)
            }
        };
        s.kb.set(&self.buf);
        s.hash = h;
        // Text values are in the key bytes already (see `WinHead::key`): most keys
        // allocate nothing here.
        if !self.key_text {
            let mut others = Vec::new();
            for (p, h) in self.keys.iter().zip(&self.key_hints) {
                let v = (self.get)(d, p, h).unwrap_or(&Value::Null);
                if v.as_bytes().is_none() {
                    others.push(v.clone());
                }
            }
            s.key = others.into_boxed_slice();
        }
        let key_values = s.key.len();
        s.add_bytes(2 * self.buf.len() + 256 + 24 * self.spec.aggs.len() + 32 * key_values);
        s
    }

    /// Opens the state of key `self.buf` (hash `h`) for the window `[start, end)`,
    /// counting `d`.
    fn open_state(&mut self, d: &D, h: u32, start: i64, end: i64, id: EventId, hold: bool) {
        let mut state = self.new_state(d, h, start, end);
        while self.states.len > 0
            && (self.states.len >= self.max_keys || self.bytes + state.size() > self.max_bytes)
            && self.evict_one()
        {}
        let generation = state.generation;
        let grew = self.spec.update(&mut state, d, id, hold);
        state.add_bytes(grew);
        self.bytes += state.size();
        let ix = self.states.insert(state);
        self.place(end.saturating_add(self.lateness), generation, ix);
        if self.track {
            self.touched.push(ix);
        }
        if self.places > 2 * self.states.len + 1024 {
            self.compact_order();
        }
        while self.bytes > self.max_bytes && self.states.len > 1 && self.evict_one() {}
    }

    /// The length of the group-by key in `self.buf` (tumbling and hopping keys end with
    /// the window's start).
    fn key_len(&self) -> usize {
        match self.kind {
            WindowKind::Session => self.buf.len(),
            _ => self.buf.len().saturating_sub(8),
        }
    }

    /// The next live window in the closing order, taken out with its place; a session
    /// that grew since its place was made is put back at its new end (when `replace`).
    /// `None` when no window is open.
    fn take_first(&mut self, replace: bool) -> Option<WinState> {
        while let Some(mut entry) = self.order.first_entry() {
            let at = *entry.key();
            let place = entry.get_mut().pop_front();
            if entry.get().is_empty() {
                entry.remove();
            }
            let Some((generation, ix)) = place else {
                continue;
            };
            self.places = self.places.saturating_sub(1);
            let Some(s) = self.states.get(ix) else {
                continue;
            };
            if !owns_place(self.kind, self.lateness, s, generation, at) {
                continue;
            }
            if replace && self.kind == WindowKind::Session {
                let close_at = s.end.saturating_add(self.lateness);
                if close_at > at {
                    self.place(close_at, generation, ix);
                    continue;
                }
            }
            return self.take(ix);
        }
        // Every open window has a place; this only empties a store that lost one.
        let s = self.states.pop_any()?;
        self.bytes = self.bytes.saturating_sub(s.size());
        Some(s)
    }

    /// Closes the window closing soonest early (counted); false when none is open.
    fn evict_one(&mut self) -> bool {
        let Some(s) = self.take_first(true) else {
            return false;
        };
        self.evicted.count();
        self.closed.push(Closed {
            state: s,
            why: CloseWhy::Evicted,
        });
        true
    }

    /// Puts a window in the closing order.
    #[inline]
    fn place(&mut self, close_at: i64, generation: u32, ix: u32) {
        self.order
            .entry(close_at)
            .or_default()
            .push_back((generation, ix));
        self.places += 1;
    }

    /// Drops places whose window is gone (closed early), so that a flood of keys with a
    /// watermark standing still keeps the order within the bound too.
    fn compact_order(&mut self) {
        let (states, kind, lateness) = (&self.states, self.kind, self.lateness);
        let mut places = 0;
        self.order.retain(|&at, v| {
            v.retain(|&(g, ix)| {
                states
                    .get(ix)
                    .is_some_and(|s| owns_place(kind, lateness, s, g, at))
            });
            places += v.len();
            !v.is_empty()
        });
        self.places = places;
    }

    /// Moves the watermark to `wm` (never back) and closes what it passes.
    pub fn advance(&mut self, wm: i64) {
        if wm > self.watermark {
            self.watermark = wm;
        }
        while let Some(entry) = self.order.first_entry() {
            if *entry.key() > self.watermark {
                break;
            }
            let (at, places) = entry.remove_entry();
            self.places = self.places.saturating_sub(places.len());
            for (generation, ix) in places {
                let Some(s) = self.states.get(ix) else {
                    continue;
                };
                // A place left by a window closed before is skipped: its generation differs.
                if !owns_place(self.kind, self.lateness, s, generation, at) {
                    continue;
                }
                if self.kind == WindowKind::Session {
                    let close_at = s.end.saturating_add(self.lateness);
                    if close_at > at {
                        // A session that grew since: back in at its new end.
                        self.place(close_at, generation, ix);
                        continue;
                    }
                }
                if let Some(s) = self.take(ix) {
                    self.closed.push(Closed {
                        state: s,
                        why: CloseWhy::Closed,
                    });
                }
            }
        }
    }

    /// When the next window closes (milliseconds), if one is open (perhaps earlier: a
    /// session may have grown since).
    pub fn next_close(&self) -> Option<i64> {
        self.order.keys().next().copied()
    }

    /// Takes the open window closing soonest out, as `why` (one at a time, so shutdown
    /// does not hold every window twice).
    pub fn pop_oldest(&mut self, why: CloseWhy) -> Option<Closed> {
        let Some(s) = self.take_first(false) else {
            self.order.clear();
            self.places = 0;
            self.bytes = 0;
            return None;
        };
        Some(Closed { state: s, why })
    }

    /// Hands out every open window, closing soonest first, as `why`.
    pub fn close_all(&mut self, why: CloseWhy) {
        while let Some(c) = self.pop_oldest(why) {
            self.closed.push(c);
        }
    }

    /// Appends the output fields of a window, as indexes into [`Windows::names`] with
    /// their values: `window_start`, `window_end`, the key fields, the aggregates in the
    /// order written (with their flags when set).
    /// The key values that are not text are moved out of `s`.
    pub fn output(&self, s: &mut WinState, out: &mut Vec<(usize, Value)>) {
        out.reserve(self.output_len());
        self.output_to(s, &mut ToVec(out));
    }

    /// How many fields [`Windows::output`] gives at most (flags included): exactly, since
    /// reused field vectors are often made for that many.
    pub fn output_len(&self) -> usize {
        2 + self.keys.len() + self.spec.aggs.len() + self.spec.flags
    }

    /// The output fields of a window as [`Windows::output`] gives them, each written into
    /// the place `put` gives it instead of collected.
    #[inline]
    pub fn output_to<P: Put>(&self, s: &mut WinState, put: &mut P) {
        let thin::Parts { head, aggs, .. } = s.parts();
        put.set(0, || Value::Time(ms_ts(head.start)));
        put.set(1, || Value::Time(ms_ts(head.end)));
        let mut others = head.key.iter_mut();
        self.key_values(&head.kb, |i, part| match part {
            KeyPart::Text(t) => fill_key_text(put.field(2 + i), t),
            KeyPart::Other => put.set(2 + i, || {
                others.next().map(std::mem::take).unwrap_or_default()
            }),
            KeyPart::Missing => put.set(2 + i, || Value::Null),
        });
        for (spec, agg) in self.spec.aggs.iter().zip(&*aggs) {
            // Counts and sums (most aggregates, never flagged) without the general call.
            match agg {
                Agg::Count(n) => put.set(spec.out_ix, || {
                    Value::Int(i64::try_from(*n).unwrap_or(i64::MAX))
                }),
                Agg::Sum(n) => put.set(spec.out_ix, || n.value()),
                _ => {
                    let (v, flag) = agg.output();
                    put.set(spec.out_ix, || v);
                    if flag && spec.flag_ix != 0 {
                        put.set(spec.flag_ix, || Value::Bool(true));
                    }
                }
            }
        }
    }

    /// The key fields of a window, by index, as its key bytes hold them: text (read back
    /// with [`text_key_value`]), or another value (kept in the window's `key`, in order).
    fn key_values<'k>(&self, key: &'k [u8], mut f: impl FnMut(usize, KeyPart<'k>)) {
        let mut rest = key;
        for i in 0..self.keys.len() {
            match rest.split_first() {
                Some((b's', r)) if r.len() >= 4 => {
                    let n = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize;
                    let text = r.get(4..4 + n).unwrap_or(&r[4..]);
                    rest = &r[(4 + text.len()).min(r.len())..];
                    f(i, KeyPart::Text(text));
                }
                Some((_, r)) => {
                    // A value as JSON ended by a NUL (JSON text holds no raw NUL).
                    let end = r.iter().position(|&b| b == 0).map_or(r.len(), |e| e + 1);
                    rest = &r[end..];
                    f(i, KeyPart::Other);
                }
                None => f(i, KeyPart::Missing),
            }
        }
    }

    /// The output field names [`Windows::output`] indexes.
    pub fn names(&self) -> &[Path] {
        &self.names
    }

    /// Adds an output name of the cog's own (a flag, evidence); returns its index.
    pub fn add_name(&mut self, p: Path) -> usize {
        self.names.push(p);
        self.names.len() - 1
    }

    /// The aggregates of `s` by output name (what `threshold`'s condition reads), with the
    /// key fields.
    pub fn values(&self, s: &WinState) -> crate::record::Record {
        let mut r = crate::record::Record::new();
        let mut others = s.key.iter();
        self.key_values(&s.kb, |i, part| {
            let v = match part {
                KeyPart::Text(t) => text_key_value(t),
                KeyPart::Other => others.next().cloned().unwrap_or_default(),
                KeyPart::Missing => Value::Null,
            };
            if let Some(p) = self.keys.get(i) {
                r.set_path(p, v);
            }
        });
        for (spec, agg) in self.spec.aggs.iter().zip(s.aggs()) {
            r.set_path(&spec.out, agg.output().0);
        }
        r
    }

    /// The evidence paths.
    pub fn evidence_paths(&self) -> &[Path] {
        &self.spec.evidence
    }

    /// The key field names, as configured.
    pub fn key_names(&self) -> &[String] {
        &self.key_names
    }

    /// The aggregate output names, in order.
    pub fn aggregate_names(&self) -> impl Iterator<Item = &str> {
        self.spec.aggs.iter().map(|a| a.name.as_str())
    }

    /// Saves the open windows, the watermark and `groups` (what the cog remembers per
    /// group-by key across windows: `threshold`'s keys quiet since their alert) to `path`,
    /// in the format `format`, and empties the windows. The held ids are left in the
    /// states for the caller to acknowledge first (they are not saved).
    pub fn save(
        &mut self,
        path: &FsPath,
        format: &str,
        groups: &[u64],
    ) -> Result<usize, StateError> {
        let mut file: Keyed<Vec<u8>, Saved> = Keyed::new(self.states.len + groups.len() + 1);
        file.insert(WATERMARK_KEY.to_vec(), Saved::Watermark(self.watermark));
        for &g in groups {
            let mut k = QUIET_KEY.to_vec();
            k.extend_from_slice(&g.to_be_bytes());
            file.insert(k, Saved::Group(g));
        }
        let n = self.states.len;
        // In the closing order (each open window has one live place).
        for (&at, places) in &self.order {
            for &(g, ix) in places {
                if let Some(s) = self.states.get(ix)
                    && owns_place(self.kind, self.lateness, s, g, at)
                {
                    file.insert(s.kb.to_vec(), Saved::Window(SavedWin::of(s)));
                }
            }
        }
        file.save(path, format, STATE_VERSION)?;
        Ok(n)
    }

    /// Loads windows saved by [`save`](Windows::save); the watermark is restored. Returns
    /// how many windows were loaded and the groups saved with them, oldest first. A file
    /// of version 1 (before the groups were saved) loads too, with no groups.
    pub fn load(&mut self, path: &FsPath, format: &str) -> Result<(usize, Vec<u64>), StateError> {
        let mut file: Keyed<Vec<u8>, Saved> = Keyed::new(usize::MAX / 2);
        match file.load(path, format, STATE_VERSION) {
            Ok(_) => {}
            // Version 1 differs only by having no groups: its entries read the same.
            Err(e @ StateError::Version(..)) => match file.load(path, format, 1) {
                Ok(_) => {}
                // Neither: the error names the version this build writes.
                Err(StateError::Version(..)) => return Err(e),
                Err(other) => return Err(other),
            },
            Err(e) => return Err(e),
        }
        let mut n = 0;
        let mut groups = Vec::new();
        while let Some((k, v)) = file.pop_oldest() {
            match v {
                Saved::Watermark(wm) => self.watermark = self.watermark.max(wm),
                Saved::Group(g) => groups.push(g),
                Saved::Window(saved) => {
                    let SavedWin {
                        mut head,
                        aggs,
                        extra,
                        bytes,
                    } = saved;
                    if aggs.len() != self.spec.aggs.len() {
                        continue;
                    }
                    let h = self.states.hash(&k);
                    if self.states.find(h, &k).is_some() {
                        continue;
                    }
                    while self.states.len >= self.max_keys && self.evict_one() {}
                    // Version 1 kept every key value: the text ones are in the key.
                    let mut others = std::mem::take(&mut head.key).into_vec();
                    others.retain(|v| v.as_bytes().is_none());
                    head.key = others.into_boxed_slice();
                    head.generation = self.next_generation;
                    self.next_generation = self.next_generation.wrapping_add(1);
                    head.kb = KeyBytes::new(&k);
                    head.hash = h;
                    let (close_at, generation) =
                        (head.end.saturating_add(self.lateness), head.generation);
                    let n_aggs = aggs.len();
                    let mut aggs = aggs.into_iter();
                    let s = WinState::make(
                        head,
                        n_aggs,
                        |_| aggs.next().unwrap_or(Agg::Count(0)),
                        self.extra.then_some(extra),
                        bytes,
                    );
                    self.bytes += s.size();
                    let ix = self.states.insert(s);
                    self.place(close_at, generation, ix);
                    n += 1;
                }
            }
        }
        Ok((n, groups))
    }
}

/// The version of the windows' state file: 2 adds the groups (`threshold`'s quiet keys);
/// version 1 files still load.
const STATE_VERSION: u32 = 2;
/// The entry holding the watermark: no window key is this (keys are empty, 8 bytes of
/// start, or begin with `s` or `v`).
const WATERMARK_KEY: &[u8] = b"\0watermark";
/// The entries holding groups: this, then the group's 8 bytes (no window key begins with
/// a NUL either).
const QUIET_KEY: &[u8] = b"\0group";

/// An entry of the state file.
enum Saved {
    Watermark(i64),
    /// A group-by key remembered across windows (its hash).
    Group(u64),
    Window(SavedWin),
}

/// A window as the state file holds it: its parts apart (`Extra` zeros when not kept).
#[derive(Debug, Clone, PartialEq)]
struct SavedWin {
    head: WinHead,
    aggs: Vec<Agg>,
    extra: Extra,
    bytes: u32,
}

impl SavedWin {
    /// A copy of the parts of `s`.
    fn of(s: &WinState) -> SavedWin {
        SavedWin {
            head: (**s).clone(),
            aggs: s.aggs().to_vec(),
            extra: s.extra_or_default(),
            bytes: s.bytes(),
        }
    }
}

impl StateCodec for Saved {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Saved::Watermark(wm) => {
                let _ = write!(out, "w {wm}");
            }
            Saved::Group(g) => {
                let _ = write!(out, "g {g}");
            }
            Saved::Window(s) => {
                out.extend_from_slice(b"s ");
                s.to_json().write_json(out);
            }
        }
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        if let Some(rest) = bytes.strip_prefix(b"w ") {
            return std::str::from_utf8(rest)
                .ok()?
                .parse()
                .ok()
                .map(Saved::Watermark);
        }
        if let Some(rest) = bytes.strip_prefix(b"g ") {
            return std::str::from_utf8(rest)
                .ok()?
                .parse()
                .ok()
                .map(Saved::Group);
        }
        let rest = bytes.strip_prefix(b"s ")?;
        SavedWin::from_json(&Value::parse_json(rest).ok()?).map(Saved::Window)
    }
}

fn num_json(n: Num) -> Value {
    match n {
        Num::Int(i) => Value::List(vec![Value::Str("i".into()), Value::Int(i)]),
        Num::Float(f) => Value::List(vec![Value::Str("f".into()), Value::Int(f.to_bits() as i64)]),
    }
}

fn json_num(v: &Value) -> Option<Num> {
    let Value::List(l) = v else { return None };
    match (l.first()?.as_str()?, l.get(1)?) {
        ("i", Value::Int(i)) => Some(Num::Int(*i)),
        ("f", Value::Int(b)) => Some(Num::Float(f64::from_bits(*b as u64))),
        _ => None,
    }
}

impl SavedWin {
    fn to_json(&self) -> Value {
        let tag = |t: &str| Value::Str(t.into());
        let aggs = self
            .aggs
            .iter()
            .map(|a| {
                Value::List(match a {
                    Agg::Count(n) => vec![tag("c"), Value::Int(*n as i64)],
                    Agg::Sum(n) => vec![tag("s"), num_json(*n)],
                    Agg::Extreme(n) => vec![tag("x"), n.map_or(Value::Null, num_json)],
                    Agg::Mean(s, n) => vec![
                        tag("m"),
                        Value::Int(s.to_bits() as i64),
                        Value::Int(*n as i64),
                    ],
                    Agg::One(v) => vec![
                        tag("o"),
                        v.as_deref().cloned().unwrap_or(Value::Null),
                        Value::Bool(v.is_some()),
                    ],
                    Agg::Exact(set) => vec![
                        tag("e"),
                        Value::List(set.iter().map(|&h| Value::Int(h as i64)).collect()),
                    ],
                    Agg::Hll(regs) => vec![
                        tag("h"),
                        Value::Str(regs.iter().map(|r| char::from(b'a' + r.min(&60))).collect()),
                    ],
                    Agg::Values(v) => vec![tag("v"), Value::List(v.0.clone()), Value::Bool(v.1)],
                })
            })
            .collect();
        let x = self.extra.clone();
        Value::List(vec![
            Value::Int(self.head.start),
            Value::Int(self.head.end),
            Value::List(self.head.key.to_vec()),
            Value::List(aggs),
            Value::Int(x.first_id as i64),
            Value::Int(x.last_id as i64),
            Value::List(x.evidence.into_vec()),
            Value::Int(i64::from(self.bytes)),
            Value::Int(x.alert as i64),
            Value::Int(x.group as i64),
        ])
    }

    fn from_json(v: &Value) -> Option<SavedWin> {
        let Value::List(l) = v else { return None };
        let int = |i: usize| match l.get(i) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let list = |i: usize| match l.get(i) {
            Some(Value::List(v)) => Some(v),
            _ => None,
        };
        let mut aggs = Vec::new();
        for a in list(3)? {
            let Value::List(a) = a else { return None };
            let n = |i: usize| match a.get(i) {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            };
            aggs.push(match a.first()?.as_str()? {
                "c" => Agg::Count(u64::try_from(n(1)?).ok()?),
                "s" => Agg::Sum(json_num(a.get(1)?)?),
                "x" => Agg::Extreme(match a.get(1)? {
                    Value::Null => None,
                    v => Some(json_num(v)?),
                }),
                "m" => Agg::Mean(f64::from_bits(n(1)? as u64), u64::try_from(n(2)?).ok()?),
                "o" => Agg::One(match a.get(2)? {
                    Value::Bool(true) => Some(Box::new(a.get(1)?.clone())),
                    _ => None,
                }),
                "e" => {
                    let Value::List(hs) = a.get(1)? else {
                        return None;
                    };
                    let mut set = HashSet::with_capacity(hs.len());
                    for h in hs {
                        let Value::Int(h) = h else { return None };
                        set.insert(*h as u64);
                    }
                    Agg::Exact(Box::new(set))
                }
                "h" => {
                    let regs: Box<[u8]> = a
                        .get(1)?
                        .as_str()?
                        .bytes()
                        .map(|b| b.wrapping_sub(b'a'))
                        .collect();
                    if regs.len() != HLL_M || regs.iter().any(|&r| r > 60) {
                        return None;
                    }
                    Agg::Hll(regs)
                }
                "v" => {
                    let Value::List(v) = a.get(1)? else {
                        return None;
                    };
                    Agg::Values(Box::new((v.clone(), a.get(2)?.as_bool()?)))
                }
                _ => return None,
            });
        }
        let mut head = WinHead::new(int(0)?, int(1)?);
        head.key = list(2)?.clone().into_boxed_slice();
        Some(SavedWin {
            head,
            aggs,
            bytes: u32::try_from(usize::try_from(int(7)?).ok()?).unwrap_or(u32::MAX),
            extra: Extra {
                first_id: u64::try_from(int(4)?).ok()?,
                last_id: u64::try_from(int(5)?).ok()?,
                evidence: list(6)?.clone().into(),
                alert: u64::try_from(int(8)?).ok()?,
                group: int(9)? as u64,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ascii_finds_a_high_byte_wherever_it_is() {
        for n in 0..=InlineStr::CAPACITY {
            let mut b = vec![b'a'; n];
            assert!(short_ascii(&b), "{n} ASCII bytes");
            for i in 0..n {
                b[i] = 0xc3;
                assert!(!short_ascii(&b), "{n} bytes, byte {i} high");
                assert_eq!(short_ascii(&b), b.is_ascii());
                b[i] = b'a';
            }
        }
        assert_eq!(text_key_value(b"10.1.2.3"), Value::from("10.1.2.3"));
        assert_eq!(
            text_key_value("caf\u{e9}".as_bytes()),
            Value::Str("caf\u{e9}".into())
        );
        assert_eq!(text_key_value(b"\xff"), Value::Bytes(vec![0xff]));
    }

    #[test]
    fn record_lookups_follow_their_hint_and_move_it_when_the_shape_changes() {
        use crate::record::Key;
        let (a, b, c) = (Key::new("a"), Key::new("b"), Key::new("c"));
        let mut one = Record::new();
        one.insert(a, Value::Int(1));
        one.insert(b, Value::Int(2));
        one.insert(c, Value::Int(3));
        let mut other = Record::new();
        other.insert(c, Value::Int(30));
        other.insert(a, Value::Int(10));
        let (pb, pc) = (Path::from(b), Path::from(c));
        let hint = Cell::new(0);
        assert_eq!(record_get(&one, &pc, &hint), Some(&Value::Int(3)));
        assert_eq!(hint.get(), 2);
        assert_eq!(record_get(&one, &pc, &hint), Some(&Value::Int(3)));
        // Where the hint points at another field, or past the end, the search finds it.
        assert_eq!(record_get(&other, &pc, &hint), Some(&Value::Int(30)));
        assert_eq!(hint.get(), 0);
        assert_eq!(record_get(&other, &pb, &hint), None);
        assert_eq!(hint.get(), 0, "a missing field leaves the hint");
        hint.set(7);
        assert_eq!(record_get(&one, &pb, &hint), Some(&Value::Int(2)));
        assert_eq!(hint.get(), 1);
        // Deeper paths are walked.
        let mut nested = Record::new();
        nested.set_path(&Path::parse("x.y").unwrap(), Value::Int(5));
        let h = Cell::new(0);
        assert_eq!(
            record_get(&nested, &Path::parse("x.y").unwrap(), &h),
            Some(&Value::Int(5))
        );
        assert_eq!(record_get(&nested, &Path::parse("x.z").unwrap(), &h), None);
    }

    #[test]
    fn hyperloglog_estimates_within_a_few_percent() {
        let mut regs = vec![0u8; HLL_M];
        let mut buf = Vec::new();
        for i in 0..100_000i64 {
            hll_add(&mut regs, value_hash(&Value::Int(i), &mut buf));
        }
        let e = hll_estimate(&regs) as f64;
        assert!((e - 100_000.0).abs() / 100_000.0 < 0.05, "{e}");
    }

    #[test]
    fn functions_parse_and_bad_ones_say_why() {
        assert_eq!(parse_func("count").unwrap(), (Func::Count, None));
        assert_eq!(
            parse_func("count(status >= 400)").unwrap(),
            (Func::CountIf, Some("status >= 400"))
        );
        assert_eq!(
            parse_func(" sum( bytes ) ").unwrap(),
            (Func::Sum, Some("bytes"))
        );
        assert!(
            parse_func("summ(bytes)")
                .unwrap_err()
                .contains("unknown function")
        );
        assert!(parse_func("sum").unwrap_err().contains("needs a field"));
        assert!(parse_func("sum(bytes").unwrap_err().contains("closing"));
    }

    /// An integer comparison answers as the expression does for every integer, and only
    /// plain `FIELD OP DIGITS` conditions are taken as one.
    #[test]
    fn integer_comparisons_agree_with_the_expression() {
        use crate::record::Record;
        let texts = [
            "status >= 400",
            " status>400 ",
            "status < 0",
            "status <= 7",
            "status == 404",
            "status != 404",
            "a.b_c >= 10",
        ];
        let values = [i64::MIN, -1, 0, 7, 8, 10, 399, 400, 401, 404, i64::MAX];
        for text in texts {
            let f = IntCmp::of(text).unwrap_or_else(|| panic!("{text:?} not taken"));
            let expr = Expr::parse(text).unwrap();
            for v in values {
                let mut r = Record::new();
                r.set_path(&f.path, Value::Int(v));
                assert_eq!(f.holds(v), expr.eval(&r), "{text:?} on {v}");
            }
        }
        for text in [
            "status >= 4.5",
            "status >= -1",
            "status >= \"400\"",
            "not >= 3",
            "status >= 400 and x == 1",
            "status exists",
            "9a >= 1",
            "status >= 99999999999999999999",
        ] {
            assert!(IntCmp::of(text).is_none(), "{text:?} taken");
        }
    }

    /// Key bytes take 32 bytes of a window's head, `Extra` 40 of its allocation: the
    /// bound on memory per window counts on it.
    #[test]
    fn key_bytes_hold_short_keys_inline_and_long_ones_boxed() {
        for len in [0, 1, KEY_INLINE - 1, KEY_INLINE, KEY_INLINE + 1, 200] {
            let b: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let k = KeyBytes::new(&b);
            assert_eq!(k[..], b[..], "{len}");
            assert_eq!(
                matches!(k, KeyBytes::Inline(..)),
                len <= KEY_INLINE,
                "{len}"
            );
            assert_eq!(k.clone(), KeyBytes::new(&b));
            let mut other = b.clone();
            other.push(1);
            assert_ne!(k, KeyBytes::new(&other), "{len}");
        }
        assert_eq!(std::mem::size_of::<KeyBytes>(), 32);
        assert_eq!(std::mem::size_of::<Extra>(), 40);
    }

    #[test]
    fn key_bytes_set_anew_hold_what_new_holds_reusing_room_that_fits() {
        let lens = [
            0,
            3,
            4,
            7,
            8,
            15,
            16,
            17,
            KEY_INLINE,
            KEY_INLINE + 1,
            45,
            100,
            200,
        ];
        for from in lens {
            for to in lens {
                let a: Vec<u8> = (0..from).map(|i| i as u8 ^ 0x5a).collect();
                let b: Vec<u8> = (0..to).map(|i| i as u8 ^ 0xa5).collect();
                let mut k = KeyBytes::new(&a);
                k.set(&b);
                assert_eq!(k[..], b[..], "{from} -> {to}");
                assert_eq!(k, KeyBytes::new(&b), "{from} -> {to}");
                assert_eq!(k.is_long(), to > KEY_INLINE, "{from} -> {to}");
                if let KeyBytes::Boxed(v) = &k {
                    assert!(
                        v.capacity() <= 2 * to,
                        "{from} -> {to}: room {}",
                        v.capacity()
                    );
                }
            }
        }
        // A long key's room serves the next long key that fits it.
        let mut k = KeyBytes::new(&[1; 45]);
        let at = k.as_ptr();
        k.set(&[2; 40]);
        assert_eq!(k.as_ptr(), at);
    }

    #[test]
    fn a_place_is_a_windows_own_only_with_its_generation_and_close_time() {
        let mut head = WinHead::new(0, 10_000);
        head.generation = 7;
        head.kb = KeyBytes::new(b"k");
        let s = WinState::make(head, 0, |_| Agg::Count(0), None, 0);
        for kind in [WindowKind::Tumbling, WindowKind::Hopping] {
            assert!(owns_place(kind, 500, &s, 7, 10_500));
            assert!(!owns_place(kind, 500, &s, 6, 10_500));
            // A place of the same generation (its index reused 2^32 times) at another
            // time is a stale one.
            assert!(!owns_place(kind, 500, &s, 7, 3_000));
        }
        // A session's place may lie before its close time (it grew since): put back.
        assert!(owns_place(WindowKind::Session, 500, &s, 7, 3_000));
        assert!(!owns_place(WindowKind::Session, 500, &s, 8, 10_500));
    }

    /// A window is one pointer (in the slab too), its allocation the head and its parts:
    /// 168 bytes for W5's three aggregates and 160 for `threshold`'s one with `Extra`
    /// (176-byte chunks with glibc's header), where the bound on memory per window counts
    /// on it.
    #[test]
    fn a_window_state_stays_small() {
        assert_eq!(std::mem::size_of::<WinHead>(), 88);
        assert_eq!(std::mem::size_of::<WinState>(), 8);
        assert_eq!(std::mem::size_of::<Option<WinState>>(), 8);
        assert_eq!(thin::layout(3, false).size(), 168);
        assert_eq!(thin::layout(1, true).size(), 160);
        assert_eq!(thin::layout(0, false).size(), 96);
    }

    /// A value whose clones are counted (its `Arc`'s strong count).
    fn counted(a: &std::sync::Arc<str>) -> Value {
        Value::Shared(SharedStr::Counted(a.clone()))
    }

    /// A state of every shape holding counted values in its head, aggregates and `Extra`:
    /// each is dropped exactly once (with the state, its clone, or when replaced), what a
    /// clone holds equals the original, and parts written through `parts` are read back.
    #[test]
    fn window_states_drop_and_clone_what_they_hold_exactly_once() {
        let a: std::sync::Arc<str> = "counted".into();
        let strong = || std::sync::Arc::strong_count(&a);
        for n in [0usize, 1, 2, 3, 10] {
            for with_extra in [false, true] {
                let mut head = WinHead::new(n as i64, 1_000);
                head.key = vec![counted(&a)].into();
                head.kb = KeyBytes::new(&[7; 45]);
                let extra = with_extra.then(|| Extra {
                    first_id: 1,
                    evidence: vec![counted(&a), counted(&a)].into(),
                    ..Extra::default()
                });
                let mut s = WinState::make(
                    head,
                    n,
                    |i| {
                        if i % 2 == 0 {
                            Agg::One(Some(Box::new(counted(&a))))
                        } else {
                            Agg::Values(Box::new((vec![counted(&a), counted(&a)], false)))
                        }
                    },
                    extra,
                    n as u32 * 3,
                );
                let held = 1 + n.div_ceil(2) + 2 * (n / 2) + if with_extra { 2 } else { 0 };
                assert_eq!(strong(), 1 + held, "{n} {with_extra}");
                assert_eq!(s.aggs().len(), n);
                assert_eq!(s.extra().is_some(), with_extra);
                assert_eq!(s.bytes(), n as u32 * 3);
                assert_eq!(s.start, n as i64);
                assert_eq!(s.kb[..], [7; 45]);
                let c = s.clone();
                assert_eq!(strong(), 1 + 2 * held);
                assert_eq!(c, s);
                drop(c);
                assert_eq!(strong(), 1 + held);
                {
                    let p = s.parts();
                    for agg in p.aggs.iter_mut() {
                        *agg = Agg::Count(5);
                    }
                    if let Some(x) = p.extra {
                        x.evidence.clear();
                        x.alert = 9;
                    }
                    *p.bytes = 11;
                    p.head.end = 2_000;
                }
                assert_eq!(strong(), 2);
                assert!(s.aggs().iter().all(|g| *g == Agg::Count(5)));
                assert_eq!(s.alert(), if with_extra { 9 } else { 0 });
                assert_eq!((s.bytes(), s.end), (11, 2_000));
                // Heads swapped between states of different shapes leave each its own.
                let mut other = WinState::make(WinHead::new(-1, -1), 2, |_| Agg::Count(1), None, 0);
                std::mem::swap(&mut *s, &mut *other);
                assert_eq!((s.start, other.start), (-1, n as i64));
                assert_eq!(s.aggs().len(), n);
                assert_eq!(other.aggs().len(), 2);
                drop(s);
                assert_eq!(strong(), 2);
                drop(other);
                assert_eq!(strong(), 1);
            }
        }
    }

    /// An aggregate that panics while a state is made: what was made is dropped, once.
    #[test]
    fn a_state_whose_making_panics_drops_what_was_made() {
        let a: std::sync::Arc<str> = "counted".into();
        let mut head = WinHead::new(0, 1);
        head.key = vec![counted(&a)].into();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            WinState::make(
                head,
                4,
                |i| {
                    assert!(i < 2, "aggregate {i}");
                    Agg::One(Some(Box::new(counted(&a))))
                },
                Some(Extra::default()),
                0,
            )
        }));
        assert!(r.is_err());
        assert_eq!(std::sync::Arc::strong_count(&a), 1);
    }

    /// The store finds every open key by its bytes and none of the removed ones, through
    /// growth and removals in any order (the backward shift keeps probe paths whole).
    #[test]
    fn store_finds_what_it_holds_through_growth_and_removals() {
        let mut st = Store::default();
        let mut held: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let state = |kb: Vec<u8>, hash: u32| {
            let mut head = WinHead::new(0, 0);
            head.kb = KeyBytes::new(&kb);
            head.hash = hash;
            WinState::make(head, 1, |_| Agg::Count(0), None, 0)
        };
        for round in 0..20_000u32 {
            // Every seventh key too long to be held inline.
            let n = next() % 3000;
            let k = format!(
                "k{n}{}",
                if n % 7 == 0 {
                    "-".repeat(40)
                } else {
                    String::new()
                }
            )
            .into_bytes();
            let h = st.hash(&k);
            match (st.find(h, &k), held.get(&k)) {
                (Some(ix), Some(&want)) => {
                    assert_eq!(ix, want);
                    if round % 3 != 0 {
                        assert_eq!(st.remove(ix).unwrap().kb[..], k[..]);
                        held.remove(&k);
                    }
                }
                (None, None) => {
                    let ix = st.insert(state(k.clone(), h));
                    held.insert(k, ix);
                }
                other => panic!(
                    "round {round}: store {:?}, reference {:?}",
                    other.0, other.1
                ),
            }
            assert_eq!(st.len, held.len());
        }
        for (k, &ix) in &held {
            assert_eq!(st.find(st.hash(k), k), Some(ix));
        }
        assert!(st.find(st.hash(b"absent"), b"absent").is_none());
        while st.pop_any().is_some() {}
        assert_eq!(st.len, 0);
        assert!(st.table.iter().all(|&e| e == 0));
    }

    /// 100,000 windows (the default max_keys) fit in a table of 2^17 slots, filled past
    /// half (a doubling to 2^18 would cost 1 MiB more), and each is found, and removed
    /// with the backward shift, at that load.
    #[test]
    fn store_holds_max_keys_in_a_table_filled_past_half() {
        let mut st = Store::default();
        let state = |kb: &[u8], hash: u32| {
            let mut head = WinHead::new(0, 0);
            head.kb = KeyBytes::new(kb);
            head.hash = hash;
            WinState::make(head, 1, |_| Agg::Count(0), None, 0)
        };
        let keys: Vec<Vec<u8>> = (0..100_000u32)
            .map(|i| format!("k{i:09}").into_bytes())
            .collect();
        for k in &keys {
            let h = st.hash(k);
            assert!(st.find(h, k).is_none());
            st.insert(state(k, h));
        }
        assert_eq!(st.table.len(), BIG_TABLE);
        assert_eq!(st.table.iter().filter(|&&e| e != 0).count(), 100_000);
        for k in keys.iter().step_by(2) {
            let ix = st.find(st.hash(k), k).expect("held");
            assert_eq!(st.remove(ix).expect("held").kb[..], k[..]);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(st.find(st.hash(k), k).is_some(), i % 2 == 1, "{i}");
        }
        // Past 7/8 it doubles.
        for i in 0..(BIG_TABLE / 8 * 7 - 50_000 + 1) {
            let k = format!("x{i}").into_bytes();
            let h = st.hash(&k);
            st.insert(state(&k, h));
        }
        assert_eq!(st.table.len(), 2 * BIG_TABLE);
    }

    /// Key text written in place is the value `text_key_value` makes, whatever the text
    /// (inline or not, ASCII or not, valid UTF-8 or not) and whatever the place held.
    #[test]
    fn key_text_filled_in_place_is_the_same_value() {
        let long = "x".repeat(InlineStr::CAPACITY + 1);
        let texts: [&[u8]; 7] = [
            b"",
            b"10.0.0.1",
            &long.as_bytes()[1..],
            long.as_bytes(),
            "caf\u{e9}".as_bytes(),
            b"\xff\xfe",
            b"2001:db8:85a3::8a2e:370:7334",
        ];
        for t in texts {
            for before in [Value::Null, Value::Str("old".into()), Value::Int(3)] {
                let mut place = before;
                fill_key_text(&mut place, t);
                assert_eq!(place, text_key_value(t), "{t:?}");
            }
        }
    }

    /// Key values come back whole from a closed window, text ones read from the key bytes
    /// (invalid UTF-8 as bytes), the others as they were (an integer, an address, a
    /// missing field as null), in the key's order.
    #[test]
    fn key_values_come_back_whatever_their_type() {
        use crate::record::Record;
        let settings = WindowSettings {
            key: vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into()],
            time: "t".into(),
            aggregate: Aggregates(vec![("n".into(), "count".into())]),
            ..Default::default()
        };
        let get: Lookup<Record> = Rc::new(record_get);
        let mut w = Windows::from_settings(&settings, get, &[]).unwrap();
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let mut r = Record::new();
        r.set_path(&Path::parse("a").unwrap(), Value::Int(5));
        r.set_path(&Path::parse("b").unwrap(), Value::Str("x y".into()));
        r.set_path(&Path::parse("d").unwrap(), Value::Bytes(vec![0xff, 0]));
        r.set_path(&Path::parse("e").unwrap(), Value::Ip(ip));
        w.add(&r, 1_000, 1, false);
        assert_eq!(
            w.values(w.states().next().unwrap())
                .get_path(&Path::parse("e").unwrap()),
            Some(&Value::Ip(ip))
        );
        w.close_all(CloseWhy::Partial);
        let mut c = w.closed.pop().unwrap();
        let mut out = Vec::new();
        w.output(&mut c.state, &mut out);
        let keys: Vec<Value> = out[2..7].iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(
            keys,
            [
                Value::Int(5),
                Value::Str("x y".into()),
                Value::Null,
                Value::Bytes(vec![0xff, 0]),
                Value::Ip(ip),
            ]
        );
        assert_eq!(out[7], (7, Value::Int(1)));
    }

    /// Groups round-trip with the windows; a version 1 file (no groups) still loads; a
    /// later version is refused and changes nothing.
    #[test]
    fn groups_are_saved_and_version_1_files_still_load() {
        use crate::record::Record;
        let settings = WindowSettings {
            key: vec!["k".into()],
            time: "t".into(),
            aggregate: Aggregates(vec![("n".into(), "count".into())]),
            ..Default::default()
        };
        let make = || {
            let get: Lookup<Record> = Rc::new(record_get);
            Windows::from_settings(&settings, get, &[]).unwrap()
        };
        let mut w = make();
        let mut r = Record::new();
        r.set_path(&Path::parse("k").unwrap(), Value::Str("a".into()));
        w.add(&r, 1_000, 1, false);
        let dir = std::env::temp_dir().join(format!("deadbeat-winstate-{}", std::process::id()));
        let path = dir.join("state");
        assert_eq!(w.save(&path, "window", &[7, u64::MAX]).unwrap(), 1);
        let mut back = make();
        assert_eq!(back.load(&path, "window").unwrap(), (1, vec![7, u64::MAX]));
        assert_eq!(back.open(), 1);
        assert_eq!(back.watermark(), 1_000);

        let mut w = make();
        w.add(&r, 2_000, 1, false);
        w.save(&path, "window", &[]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let v1 = text.replacen("deadbeat-state window 2", "deadbeat-state window 1", 1);
        assert_ne!(v1, text);
        std::fs::write(&path, &v1).unwrap();
        let mut back = make();
        assert_eq!(back.load(&path, "window").unwrap(), (1, vec![]));
        assert_eq!(back.watermark(), 2_000);
        let v3 = text.replacen("deadbeat-state window 2", "deadbeat-state window 3", 1);
        std::fs::write(&path, &v3).unwrap();
        let mut back = make();
        let e = back.load(&path, "window").unwrap_err();
        assert!(e.to_string().contains("unsupported state version"), "{e}");
        assert_eq!(back.open(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn state_round_trips_through_its_text() {
        let mut head = WinHead::new(60_000, 120_000);
        head.generation = 3;
        head.key = vec![Value::Str("10.0.0.1".into())].into();
        let s = SavedWin {
            head,
            aggs: vec![
                Agg::Count(4),
                Agg::Sum(Num::Float(1.5)),
                Agg::Extreme(Some(Num::Int(-3))),
                Agg::Extreme(None),
                Agg::Mean(2.5, 2),
                Agg::One(Some(Box::new(Value::Str("x".into())))),
                Agg::One(None),
                Agg::Exact(Box::new([1u64, u64::MAX].into_iter().collect())),
                Agg::Hll(vec![7u8; HLL_M].into_boxed_slice()),
                Agg::Values(Box::new((vec![Value::Int(1)], true))),
            ],
            bytes: 400,
            extra: Extra {
                first_id: 5,
                last_id: 9,
                evidence: vec![Value::Str("root".into()), Value::Str("admin".into())].into(),
                alert: 0,
                group: u64::MAX,
            },
        };
        let mut text = Vec::new();
        Saved::Window(s.clone()).encode(&mut text);
        let Some(Saved::Window(mut back)) = Saved::decode(&text) else {
            panic!("not decoded: {}", String::from_utf8_lossy(&text));
        };
        back.head.generation = 3;
        assert_eq!(back, s);
    }
}
