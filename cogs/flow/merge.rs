//! `merge`: folds consecutive data with the same key into one (Vector's `reduce`).

use std::cmp::Ordering;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::de::{Deserializer, MapAccess, Visitor};

use crate::kit::held::{Held, MAX_HELD_IDS};
use crate::kit::keyed::Keyed;
use crate::kit::on_error::LogLimiter;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::expr::Condition;
use crate::record::{Path, Record, Value, id_field};
use crate::schema::NodeValue;
use crate::schema::{CogParams, ConfigError, ParamType, SettingError, SettingValue, Settings};

use super::dedup::key_part;
use super::filter::{expr_param, mismatch_warning, parse_condition};
use super::setting_error;

/// Reads a field of a datum by its path.
pub type LookupFn<D> = dyn for<'a> Fn(&'a D, &Path) -> Option<&'a Value>;
/// Stores a field of a datum at its path.
pub type StoreFn<D> = dyn Fn(&mut D, &Path, Value);

/// Folds consecutive data with the same key into one datum (Vector calls it `reduce`):
/// the data of each key (the fields in `key`; `[]`: all data are one group) are gathered
/// into a group, apart from the other keys' (interleaved keys fold separately), until
///
/// - a datum satisfies `end` (a condition, as in `filter`); it is the group's last;
/// - the group holds `max_events` data;
/// - the key has been quiet for `idle` (a timer emits the group; `"0s"`: never);
/// - the next datum would take the group's merged text and lists beyond `max_bytes`: the
///   group is emitted as it is, cut, with `truncated = true`, and that datum starts the
///   next group (nothing is dropped); cuts are counted and logged;
/// - shutdown (`finish`): every open group is emitted.
///
/// The merged datum is the group's first datum with the fields named in `strategies`
/// replaced by their merge over the group: `concat` (the values as text, joined by
/// `separator`), `array` (the list of the values), `sum`, `max`, `min` (numbers, or text
/// compared byte-wise, or times), `first`, `last` (the first or last value present).
/// **Fields not named keep the first datum's value.** A datum lacking a named field (or
/// holding null) adds nothing to it (`array` keeps nulls). A value that cannot be summed or
/// compared (text in a `sum`) is left out, counted as an error and logged. `count_field`,
/// when given, receives the number of data merged.
///
/// **Keys.** At most `max_keys` groups are open; a datum of one more key first emits the
/// group quiet the longest (counted and logged, at most 10 lines a second).
///
/// **Acknowledgement.** A merged datum of two data or more travels under a new event id;
/// the ids of every datum of its group are held ([`Held`]) and acknowledged together, in
/// one acknowledgement, when the merged datum's is, that is once a drain has written it
/// (or a filter dropped it); a downstream `event_rename` of the merged datum moves them
/// with it. So a checkpointing supply (`tail`) never commits past a datum held in an open
/// group, and a crash re-reads the group from its first datum: nothing is lost, and a
/// group is never split across a restart. (Were the first datum's id kept, the supply
/// would hear it acknowledged before the others and could save a checkpoint inside the
/// group.) A group of one datum keeps its id. The data merged away are counted as dropped,
/// so the train's counts add up.
///
/// ```toml
/// [[train.cog]]
/// type = "merge"
/// key = ["host", "request_id"]
/// strategies = { message = "concat", bytes = "sum", status = "max", user = "first", tags = "array" }
/// separator = "\n"
/// end = 'message contains "request done"'
/// max_events = 1000
/// idle = "5s"
/// count_field = "merged"
/// ```
///
/// From its typed settings, without TOML, on any datum (a field lookup, a field store and
/// an id getter in [`MergeFields`]):
/// `Merge::from_settings(&MergeSettings { key: vec!["host".into()], ..Default::default() }, fields)`.
pub struct Merge<D> {
    fields: MergeFields<D>,
    keys: Vec<Path>,
    strategies: Vec<(Path, MergeStrategy)>,
    separator: Vec<u8>,
    end: Option<Condition<D>>,
    max_events: usize,
    max_bytes: usize,
    idle: Duration,
    count_field: Option<Path>,
    truncated: Path,
    /// Open groups; their order is last-use order (a group is touched on every datum).
    groups: Keyed<Rc<[u8]>, Group<D>>,
    held: Held,
    timer_armed: bool,
    evictions: u64,
    cuts: u64,
    limiter: LogLimiter,
    buf: Vec<u8>,
}

impl<D> std::fmt::Debug for Merge<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merge")
            .field("groups", &self.groups.len())
            .field("held", &self.held.len())
            .finish()
    }
}

/// How [`Merge`] reads and writes a datum.
pub struct MergeFields<D> {
    /// Reads a field by path: the key fields, the fields merged, those `end` names.
    pub get: Rc<LookupFn<D>>,
    /// Stores a field by path: the merged values, `count_field`, `truncated`.
    pub set: Box<StoreFn<D>>,
    /// Reads the datum's event id, and gives the merged datum its own.
    pub id: Field<D, EventId>,
}

impl<D> MergeFields<D> {
    /// The fields from a lookup, a store and an id getter.
    pub fn new<G, S>(get: G, set: S, id: Field<D, EventId>) -> Self
    where
        G: for<'a> Fn(&'a D, &Path) -> Option<&'a Value> + 'static,
        S: Fn(&mut D, &Path, Value) + 'static,
    {
        MergeFields {
            get: Rc::new(get),
            set: Box::new(set),
            id,
        }
    }
}

impl<D> std::fmt::Debug for MergeFields<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MergeFields")
    }
}

/// What became of a datum's key's open group.
enum Found {
    /// The datum was merged into it.
    Merged,
    /// The datum was merged into it and completed it.
    Complete,
    /// The datum would take it beyond `max_bytes`.
    Full,
}

/// Takes `d`'s values into `accs`; counts and logs what could not be taken.
#[allow(clippy::too_many_arguments)]
fn fold<D>(
    strategies: &[(Path, MergeStrategy)],
    fields: &MergeFields<D>,
    sep: &[u8],
    limiter: &mut LogLimiter,
    accs: &mut [Acc],
    d: &D,
    out: &mut Out<D>,
    cx: &mut Ctx,
) {
    for ((p, s), acc) in strategies.iter().zip(accs.iter_mut()) {
        let v = (fields.get)(d, p);
        if !acc.take(*s, v, sep) {
            out.count_errors(1);
            if limiter.allow("values not merged", "merge", cx) {
                slog::warn!(cx.logger(), "value cannot be merged with its strategy; left out";
                    "cog" => "merge", "field" => %p, "value" => v.map_or("null", Value::type_name),
                    "strategy" => s.as_str(), "event" => fields.id.get.get(d).copied());
            }
        }
    }
}

/// An open group.
struct Group<D> {
    first: D,
    /// One per strategy, in the same order.
    accs: Vec<Acc>,
    count: usize,
    /// Bytes of merged text and lists so far.
    bytes: usize,
    /// The ids of the data of the group, the first's included.
    ids: Vec<EventId>,
    /// When its last datum came.
    last: Instant,
}

/// What a strategy has gathered.
#[derive(Debug)]
enum Acc {
    Concat(Option<Vec<u8>>),
    Array(Vec<Value>),
    Sum(Option<Num>),
    Best(Option<Value>),
}

/// A number as `sum` adds it: integers stay exact until they overflow.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of(v: &Value) -> Option<Num> {
        match v {
            Value::Int(n) => Some(Num::Int(*n)),
            Value::Float(f) => Some(Num::Float(*f)),
            Value::BigInt(_) => v.as_f64().map(Num::Float),
            _ => {
                let t = v.as_str()?.trim();
                t.parse::<i64>()
                    .map(Num::Int)
                    .ok()
                    .or_else(|| t.parse::<f64>().ok().map(Num::Float))
            }
        }
    }

    fn add(self, o: Num) -> Num {
        match (self, o) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_add(b)
                .map_or(Num::Float(a as f64 + b as f64), Num::Int),
            (a, b) => Num::Float(a.f64() + b.f64()),
        }
    }

    fn f64(self) -> f64 {
        match self {
            Num::Int(n) => n as f64,
            Num::Float(f) => f,
        }
    }

    fn value(self) -> Value {
        match self {
            Num::Int(n) => Value::Int(n),
            Num::Float(f) => Value::Float(f),
        }
    }
}

/// The order of two values for `max` and `min`: numbers (text that reads as one included)
/// as numbers, other text byte-wise, times and addresses in their order; `None` for values
/// of different kinds.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (Num::of(a), Num::of(b)) {
        return match (x, y) {
            (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
            (x, y) => x.f64().partial_cmp(&y.f64()),
        };
    }
    match (a, b) {
        (Value::Time(x), Value::Time(y)) => Some(x.cmp(y)),
        (Value::Ip(x), Value::Ip(y)) => Some(x.cmp(y)),
        (Value::Int(_) | Value::Float(_) | Value::BigInt(_), _)
        | (_, Value::Int(_) | Value::Float(_) | Value::BigInt(_)) => None,
        _ => Some(a.as_bytes()?.cmp(b.as_bytes()?)),
    }
}

/// The bytes a value adds to a group's size: its text, or about its JSON's.
fn size_of(v: &Value) -> usize {
    match v {
        Value::Str(s) => s.len(),
        Value::Shared(s) => s.len(),
        Value::Bytes(b) => b.len(),
        Value::List(l) => l.iter().map(size_of).sum::<usize>() + l.len() + 2,
        Value::Map(_) => {
            let mut out = Vec::new();
            v.write_json(&mut out);
            out.len()
        }
        _ => 8,
    }
}

/// Appends a value to `concat`'s text: text as it is, anything else as JSON.
fn push_text(v: &Value, out: &mut Vec<u8>) {
    match v.as_bytes() {
        Some(b) => out.extend_from_slice(b),
        None => v.write_json(out),
    }
}

impl Acc {
    fn new(s: MergeStrategy) -> Acc {
        match s {
            MergeStrategy::Concat => Acc::Concat(None),
            MergeStrategy::Array => Acc::Array(Vec::new()),
            MergeStrategy::Sum => Acc::Sum(None),
            MergeStrategy::Max
            | MergeStrategy::Min
            | MergeStrategy::First
            | MergeStrategy::Last => Acc::Best(None),
        }
    }

    /// Takes `v` (the field's value in the next datum, if any) into the accumulation;
    /// `false` when the value cannot be taken (text in a `sum`, kinds that do not compare).
    fn take(&mut self, s: MergeStrategy, v: Option<&Value>, sep: &[u8]) -> bool {
        if let Acc::Array(list) = self {
            if let Some(v) = v {
                list.push(v.clone());
            }
            return true;
        }
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return true;
        };
        match self {
            Acc::Concat(Some(t)) => {
                t.extend_from_slice(sep);
                push_text(v, t);
            }
            Acc::Concat(text) => {
                let mut t = Vec::new();
                push_text(v, &mut t);
                *text = Some(t);
            }
            Acc::Sum(sum) => {
                let Some(n) = Num::of(v) else {
                    return false;
                };
                *sum = Some(sum.map_or(n, |s| s.add(n)));
            }
            Acc::Best(best @ None) => *best = Some(v.clone()),
            Acc::Best(Some(b)) => {
                let replace = match s {
                    MergeStrategy::First => false,
                    MergeStrategy::Last => true,
                    MergeStrategy::Max => match compare(v, b) {
                        Some(o) => o == Ordering::Greater,
                        None => return false,
                    },
                    _ => match compare(v, b) {
                        Some(o) => o == Ordering::Less,
                        None => return false,
                    },
                };
                if replace {
                    *b = v.clone();
                }
            }
            Acc::Array(_) => {}
        }
        true
    }

    /// The merged value; `None` when no datum had one.
    fn result(self) -> Option<Value> {
        match self {
            Acc::Concat(t) => t.map(|t| match String::from_utf8(t) {
                Ok(s) => Value::Str(s),
                Err(e) => Value::Bytes(e.into_bytes()),
            }),
            Acc::Array(l) => (!l.is_empty()).then_some(Value::List(l)),
            Acc::Sum(n) => n.map(Num::value),
            Acc::Best(v) => v,
        }
    }
}

impl<D: 'static> Merge<D> {
    /// A `merge` made from its settings; `fields` reads and writes the datum. The paths in
    /// `key`, `strategies` and `count_field` must parse, `end` must be a valid condition,
    /// and `max_events`, `max_bytes` and `max_keys` be at least 1.
    pub fn from_settings(s: &MergeSettings, fields: MergeFields<D>) -> Result<Self, SettingError> {
        let mut keys = Vec::with_capacity(s.key.len());
        for k in &s.key {
            keys.push(Path::parse(k).map_err(|e| SettingError::new("key", format!("{k:?}: {e}")))?);
        }
        let mut strategies = Vec::with_capacity(s.strategies.0.len());
        for (f, st) in &s.strategies.0 {
            let p = Path::parse(f)
                .map_err(|e| SettingError::new("strategies", format!("{f:?}: {e}")))?;
            strategies.push((p, *st));
        }
        let count_field = match &s.count_field {
            Some(c) => Some(
                Path::parse(c)
                    .map_err(|e| SettingError::new("count_field", format!("{c:?}: {e}")))?,
            ),
            None => None,
        };
        let end = match &s.end {
            Some(e) => {
                let get = fields.get.clone();
                Some(Condition::new(
                    parse_condition("end", e)?,
                    move |d: &D, p: &Path| get(d, p),
                ))
            }
            None => None,
        };
        for (key, v) in [
            ("max_events", s.max_events),
            ("max_bytes", s.max_bytes),
            ("max_keys", s.max_keys),
        ] {
            if v == 0 {
                return Err(SettingError::new(key, "must be at least 1"));
            }
        }
        let truncated = Path::parse("truncated")
            .map_err(|e| SettingError::new("count_field", e.to_string()))?;
        Ok(Merge {
            fields,
            keys,
            strategies,
            separator: s.separator.as_bytes().to_vec(),
            end,
            max_events: s.max_events,
            max_bytes: s.max_bytes,
            idle: s.idle,
            count_field,
            truncated,
            groups: Keyed::new(s.max_keys),
            held: Held::new(MAX_HELD_IDS),
            timer_armed: false,
            evictions: 0,
            cuts: 0,
            limiter: LogLimiter::default(),
            buf: Vec::new(),
        })
    }

    /// How many groups were emitted early to keep within `max_keys`.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// How many ids are held for merged data not yet acknowledged.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Writes the key of `d` into `self.buf`.
    fn key_of(&mut self, d: &D) {
        self.buf.clear();
        for p in &self.keys {
            key_part(
                (self.fields.get)(d, p).unwrap_or(&Value::Null),
                &mut self.buf,
            );
        }
    }

    /// The bytes `d` adds to a group (its text and list values).
    fn size(&self, d: &D) -> usize {
        let mut n = 0;
        for (p, s) in &self.strategies {
            if matches!(s, MergeStrategy::Concat | MergeStrategy::Array)
                && let Some(v) = (self.fields.get)(d, p)
            {
                n += size_of(v) + self.separator.len();
            }
        }
        n
    }

    /// Opens a group with `d`.
    fn open(
        &mut self,
        d: D,
        size: usize,
        now: Instant,
        out: &mut Out<D>,
        cx: &mut Ctx,
    ) -> Group<D> {
        let ids = match self.fields.id.get.get(&d) {
            Some(&id) if id != 0 => vec![id],
            _ => Vec::new(),
        };
        let mut accs: Vec<Acc> = self.strategies.iter().map(|(_, s)| Acc::new(*s)).collect();
        fold(
            &self.strategies,
            &self.fields,
            &self.separator,
            &mut self.limiter,
            &mut accs,
            &d,
            out,
            cx,
        );
        Group {
            first: d,
            accs,
            count: 1,
            bytes: size,
            ids,
            last: now,
        }
    }

    /// Emits a group: the merged values into its first datum, its acknowledgements held.
    fn emit(&mut self, g: Group<D>, truncated: bool, out: &mut Out<D>, cx: &mut Ctx) {
        let mut d = g.first;
        for ((p, _), acc) in self.strategies.iter().zip(g.accs) {
            if let Some(v) = acc.result() {
                (self.fields.set)(&mut d, p, v);
            }
        }
        if let Some(c) = &self.count_field {
            let n = i64::try_from(g.count).unwrap_or(i64::MAX);
            (self.fields.set)(&mut d, c, Value::Int(n));
        }
        if truncated {
            (self.fields.set)(&mut d, &self.truncated, Value::Bool(true));
        }
        if g.count > 1 {
            // A fresh id, whose acknowledgement releases every datum of the group in one
            // piece (see the type's doc).
            let id = cx.new_event_id();
            self.fields.id.set.set(&mut d, id);
            self.held.hold(Some(id), g.ids, "merge", cx);
        }
        out.push(d);
    }

    fn datum(&mut self, d: D, now: Instant, out: &mut Out<D>, cx: &mut Ctx) {
        self.key_of(&d);
        let ends = match &self.end {
            Some(c) => {
                let mut mismatch = None;
                let e = c.test_checked(&d, &mut mismatch);
                if let Some(m) = mismatch {
                    out.count_errors(1);
                    mismatch_warning(
                        &mut self.limiter,
                        m,
                        self.fields.id.get.get(&d).copied(),
                        cx,
                    );
                }
                e
            }
            None => false,
        };
        let size = self.size(&d);
        let key = std::mem::take(&mut self.buf);
        // What became of the key's open group: none, merged `d` (complete or not), or too
        // full to take it.
        let mut found = None;
        if let Some(g) = self.groups.get_mut(&key[..]) {
            if g.bytes + size > self.max_bytes {
                found = Some(Found::Full);
            } else {
                fold(
                    &self.strategies,
                    &self.fields,
                    &self.separator,
                    &mut self.limiter,
                    &mut g.accs,
                    &d,
                    out,
                    cx,
                );
                g.count += 1;
                g.bytes += size;
                g.last = now;
                if let Some(&id) = self.fields.id.get.get(&d)
                    && id != 0
                {
                    g.ids.push(id);
                }
                found = Some(if ends || g.count >= self.max_events {
                    Found::Complete
                } else {
                    Found::Merged
                });
            }
        }
        match found {
            None => self.start(key, d, size, ends, now, out, cx),
            Some(Found::Merged) => {
                out.count_dropped(1);
                self.groups.touch(&key[..]);
                self.buf = key;
            }
            Some(Found::Complete) => {
                out.count_dropped(1);
                if let Some(g) = self.groups.remove(&key[..]) {
                    self.emit(g, false, out, cx);
                }
                self.buf = key;
            }
            Some(Found::Full) => {
                if let Some(g) = self.groups.remove(&key[..]) {
                    self.cuts += 1;
                    if self.limiter.allow("cut groups", "merge", cx) {
                        slog::warn!(cx.logger(), "group cut at max_bytes; emitted flagged truncated";
                            "cog" => "merge", "event" => self.fields.id.get.get(&g.first).copied(),
                            "data" => g.count, "bytes" => g.bytes, "cuts_so_far" => self.cuts);
                    }
                    self.emit(g, true, out, cx);
                }
                self.start(key, d, size, ends, now, out, cx);
            }
        }
    }

    /// Opens the group of `key` with `d`, after making room for it; emits it at once if it
    /// is already complete.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        key: Vec<u8>,
        d: D,
        size: usize,
        ends: bool,
        now: Instant,
        out: &mut Out<D>,
        cx: &mut Ctx,
    ) {
        let g = self.open(d, size, now, out, cx);
        if ends || self.max_events <= 1 {
            self.emit(g, false, out, cx);
        } else {
            if self.groups.len() >= self.groups.max_keys()
                && let Some((_, old)) = self.groups.pop_oldest()
            {
                self.evictions += 1;
                if self.limiter.allow("evictions", "merge", cx) {
                    slog::warn!(cx.logger(), "too many open groups; the quietest emitted early";
                        "cog" => "merge", "event" => self.fields.id.get.get(&old.first).copied(),
                        "max_keys" => self.groups.max_keys(), "evictions_so_far" => self.evictions);
                }
                self.emit(old, false, out, cx);
            }
            self.groups.insert(Rc::from(&key[..]), g);
        }
        self.buf = key;
    }

    /// Arms the idle timer for `at` unless one is armed.
    fn arm(&mut self, at: Instant, cx: &mut Ctx) {
        if self.timer_armed || self.idle.is_zero() {
            return;
        }
        match cx.timer_at(at, 0) {
            Ok(_) => self.timer_armed = true,
            Err(e) => {
                if self.limiter.allow("timer failures", "merge", cx) {
                    slog::warn!(cx.logger(), "cannot arm the idle timer; open groups wait for their end or shutdown";
                        "cog" => "merge", "error" => %e);
                }
            }
        }
    }

    /// Emits the groups quiet for `idle`, oldest first; re-arms for the next.
    fn flush_idle(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        let now = cx.now();
        loop {
            let Some(last) = self.groups.iter().next().map(|(_, g)| g.last) else {
                return;
            };
            if now.saturating_duration_since(last) < self.idle {
                self.arm(last + self.idle, cx);
                return;
            }
            if let Some((_, g)) = self.groups.pop_oldest() {
                self.emit(g, false, out, cx);
            }
        }
    }
}

impl<D: 'static> Cog<D> for Merge<D> {
    fn name(&self) -> &str {
        "merge"
    }

    fn inspect(&self, into: &mut crate::engine::control::Inspection) {
        into.keys(self.groups.len(), Some(self.groups.max_keys()));
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        let now = cx.now();
        for d in batch.drain(..) {
            self.datum(d, now, out, cx);
        }
        if !self.timer_armed && !self.groups.is_empty() {
            self.arm(now + self.idle, cx);
        }
    }

    fn wake(&mut self, _: Local, why: Wake<'_>, out: &mut Out<D>, cx: &mut Ctx) {
        if let Wake::Timer(_) = why {
            self.timer_armed = false;
            self.flush_idle(out, cx);
        }
    }

    fn event_done(&mut self, ids: &[EventId], cx: &mut Ctx) {
        self.held.done(ids, cx);
    }

    fn event_rename(&mut self, old: EventId, new: EventId, _: &mut Ctx) {
        self.held.rename(old, new);
    }

    fn finish(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        while let Some((_, g)) = self.groups.pop_oldest() {
            self.emit(g, false, out, cx);
        }
        if self.cuts > 0 || self.evictions > 0 {
            slog::info!(cx.logger(), "groups cut at max_bytes, or emitted early at max_keys";
                "cog" => "merge", "cuts" => self.cuts, "evictions" => self.evictions);
        }
    }
}

crate::choice! {
    /// How `merge` folds a field's values.
    pub enum MergeStrategy {
        Concat = "concat",
        Array = "array",
        Sum = "sum",
        Max = "max",
        Min = "min",
        First = "first",
        Last = "last",
    }
}

/// The `strategies` of `merge`: each field with its strategy, in the order written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Strategies(pub Vec<(String, MergeStrategy)>);

impl<K: Into<String>> FromIterator<(K, MergeStrategy)> for Strategies {
    fn from_iter<I: IntoIterator<Item = (K, MergeStrategy)>>(it: I) -> Self {
        Strategies(it.into_iter().map(|(k, s)| (k.into(), s)).collect())
    }
}

impl SettingValue for Strategies {
    const TYPE: ParamType = ParamType::Table;

    fn deserialize<'de, De: Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strategies;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table such as { message = \"concat\" }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strategies, A::Error> {
                let mut out = Vec::new();
                while let Some(field) = map.next_key::<String>()? {
                    let s = map.next_value_seed(
                        crate::schema::settings::Seed::<MergeStrategy>::default(),
                    )?;
                    out.push((field, s));
                }
                Ok(Strategies(out))
            }
        }
        d.deserialize_any(V)
    }

    fn from_default(_: &str) -> Option<Self> {
        None
    }
}

crate::settings! {
    /// Settings of `merge`.
    pub struct MergeSettings {
        /// dotted paths of the fields grouping data; empty: all data are one group
        key: Vec<String>,
        /// field = "concat" | "array" | "sum" | "max" | "min" | "first" | "last"; fields not named keep the first datum's value
        strategies: Strategies,
        /// what `concat` puts between values (by default one space)
        separator: String = " ",
        /// condition: a datum satisfying it ends its group (and is part of it)
        end: Option<String>,
        /// data in a group at most; the group is emitted when it holds this many
        max_events: usize = "1000",
        /// a group whose key has been quiet this long is emitted; "0s" waits for its end or shutdown
        idle: Duration = "30s",
        /// bytes of merged text and lists in a group at most; beyond, it is emitted cut with truncated = true
        #[setting(size)]
        max_bytes: usize = "1MiB",
        /// open groups at most; beyond, the group quiet the longest is emitted early (counted, logged)
        max_keys: usize = "10000",
        /// dotted path receiving the number of data merged
        count_field: Option<String>,
    }
}

/// The descriptor of `merge`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "merge",
    kind: CogKind::Transform,
    summary: "folds consecutive records with the same key into one until an end condition, \
              max_events, max_bytes or idle, merging fields per strategy (concat, array, sum, \
              max, min, first, last); the records merged away are acknowledged with the merged one",
    params: MergeSettings::PARAMS,
    fields: &[
        (
            "(strategies)",
            "each field named in `strategies`, merged over the group",
        ),
        ("(count_field)", "the number of records merged, when given"),
        ("truncated", "true when the group was cut at max_bytes"),
    ],
    build,
};

/// The field lookup, store and id getter of `merge` on records.
pub fn record_fields() -> MergeFields<Record> {
    MergeFields::new(
        |r: &Record, p: &Path| r.get_path(p),
        |r: &mut Record, p: &Path, v: Value| r.set_path(p, v),
        id_field(),
    )
}

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    // Checked on the configuration first: its errors name the field (`strategies.NAME`)
    // and the place in the file, and the condition's the column.
    check_strategies(p)?;
    expr_param(p, "end")?;
    let s: MergeSettings = p.settings()?;
    let merge = Merge::from_settings(&s, record_fields()).map_err(|e| setting_error(p, e))?;
    Ok(Box::new(merge))
}

/// Checks `strategies` on the configuration: each entry a known strategy's name.
fn check_strategies(p: &CogParams<'_>) -> Result<(), ConfigError> {
    let Some(node) = p.node("strategies") else {
        return Ok(());
    };
    let NodeValue::Table(entries) = &node.value else {
        return Err(p.error(
            "strategies",
            "expected a table such as { message = \"concat\" }",
        ));
    };
    for (field, v) in entries {
        let field = field.get_ref();
        let at = |msg: String| {
            let mut e = p.error("strategies", msg);
            e.key = Some(format!("strategies.{field}"));
            e
        };
        let NodeValue::Str(name) = &v.value else {
            return Err(at(format!(
                "expected a strategy name as a string, found {}",
                v.value.type_name()
            )));
        };
        if MergeStrategy::from_name(name).is_none() {
            let names: Vec<String> = MergeStrategy::NAMES
                .iter()
                .map(|n| format!("{n:?}"))
                .collect();
            return Err(at(format!(
                "unknown strategy {name:?} (expected one of {})",
                names.join(", ")
            )));
        }
        Path::parse(field).map_err(|e| at(e.to_string()))?;
    }
    Ok(())
}
