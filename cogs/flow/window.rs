//! `window`: aggregates data per key over tumbling, hopping or session windows of event
//! time, and emits one record per closed window.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::engine::mailbox::Mailbox;
use crate::kit::keyed::state_file;
use crate::kit::on_error::{self, LogLimiter, OnError};
pub use crate::kit::window::Put;
use crate::kit::window::{
    Added, CloseWhy, Closed, Held, Lookup, WinState, WindowSettings, Windows,
};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Key, Path, Record, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::setting_error;

/// Consumed inputs whose acknowledgement is held at most (over all windows). A
/// checkpointing supply stops reading at 100,000 unacknowledged data (`tail`); beyond this
/// bound inputs are acknowledged when counted (a crash may then lose them from their
/// window), counted and logged.
pub const MAX_HELD: usize = 50_000;

/// Builds an output datum from an event id and its fields, in order (indexes into the
/// names, with their values; drained).
pub type MakeFn<D> = Box<dyn Fn(EventId, &[Path], &mut Vec<(usize, Value)>) -> D>;
/// Builds a closed window's output datum in place: from its event id, the windows and the
/// window's state (with [`Windows::output_to`] and a [`Put`] of the datum's own), and the
/// flag field to set `true` (`partial`, `evicted`) if any.
pub type FillFn<D> = Box<dyn Fn(EventId, &Windows<D>, &mut WinState, Option<usize>) -> D>;
/// Takes one consumed input back (a record pool).
pub type RecycleFn<D> = Box<dyn Fn(D)>;
/// Sets a field of a datum.
pub type SetFn<D> = Rc<dyn Fn(&mut D, &Path, Value)>;

/// How [`Window`] reads and writes a datum.
pub struct WindowFields<D> {
    /// Reads a field (key, time, aggregate inputs, conditions).
    pub get: Lookup<D>,
    /// The datum's event id (shared with `on_error`).
    pub id: Rc<Getter<D, EventId>>,
    /// Builds a window's output datum.
    pub make: MakeFn<D>,
    /// Builds a window's output datum in place, its fields handed over one by one (no
    /// vector between): used by `window` instead of `make` when given.
    pub fill: Option<FillFn<D>>,
    /// Sets a field (the `late` flag, the `error` reason).
    pub set: SetFn<D>,
    /// Takes each consumed input back for reuse as soon as it is counted (while its
    /// storage is still in cache, and in time for the window it closes to reuse it);
    /// `None`: they are dropped.
    pub recycle: Option<RecycleFn<D>>,
}

impl<D> std::fmt::Debug for WindowFields<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WindowFields")
    }
}

/// The fields of records: `Record::get_path`, `Record::set_path`.
pub fn record_fields() -> WindowFields<Record> {
    WindowFields {
        get: Rc::new(crate::kit::window::record_get),
        id: Rc::new(crate::record::id_field().get),
        make: Box::new({
            let plain = PlainKeys::default();
            move |id, names, fields| {
                let mut r = crate::record::pool::record(fields.len());
                r.id = id;
                plain.with(names, |keys| match keys {
                    Some(keys) => {
                        for (i, v) in fields.drain(..) {
                            if let Some(k) = keys.get(i) {
                                r.fields.append_new(*k, v);
                            }
                        }
                    }
                    None => {
                        for (i, v) in fields.drain(..) {
                            set_named(&mut r, names, i, v);
                        }
                    }
                });
                r
            }
        }),
        fill: Some(Box::new({
            let plain = PlainKeys::default();
            move |id, w: &Windows<Record>, state: &mut WinState, flag: Option<usize>| {
                let names = w.names();
                let mut r =
                    crate::record::pool::record(w.output_len() + usize::from(flag.is_some()));
                r.id = id;
                plain.with(names, |keys| {
                    let mut put = RecordPut {
                        r: &mut r,
                        keys,
                        names,
                        pending: None,
                        scratch: Value::Null,
                    };
                    w.output_to(state, &mut put);
                    if let Some(ix) = flag {
                        put.set(ix, || Value::Bool(true));
                    }
                    put.flush();
                });
                r
            }
        })),
        set: Rc::new(|r: &mut Record, p: &Path, v: Value| r.set_path(p, v)),
        recycle: Some(Box::new(|r| crate::record::pool::recycle([r]))),
    }
}

/// The keys of a cog's output names when they are distinct top-level fields (its names,
/// fixed once built), worked out once per list of names: each field is then appended by
/// index, without looking for it first.
#[derive(Default)]
struct PlainKeys(std::cell::RefCell<(*const Path, usize, Option<Vec<Key>>)>);

impl PlainKeys {
    #[inline]
    fn with<T>(&self, names: &[Path], f: impl FnOnce(Option<&[Key]>) -> T) -> T {
        let mut plain = self.0.borrow_mut();
        if plain.0 != names.as_ptr() || plain.1 != names.len() {
            let distinct = names.iter().enumerate().all(|(i, p)| {
                p.keys().len() == 1 && names[..i].iter().all(|q| q.keys() != p.keys())
            });
            let keys = distinct.then(|| {
                names
                    .iter()
                    .filter_map(|p| p.keys().first().copied())
                    .collect()
            });
            *plain = (names.as_ptr(), names.len(), keys);
        }
        f(plain.2.as_deref())
    }
}

/// [`Put`] into a record: plain names get a new entry each, filled where it lies; other
/// names (dotted, repeated) are set by name once filled.
struct RecordPut<'a> {
    r: &'a mut Record,
    keys: Option<&'a [Key]>,
    names: &'a [Path],
    /// The field whose value is in `scratch`, to be set by name.
    pending: Option<usize>,
    scratch: Value,
}

impl RecordPut<'_> {
    /// Sets the field filled in `scratch`, if any.
    fn flush(&mut self) {
        if let Some(i) = self.pending.take() {
            set_named(self.r, self.names, i, std::mem::take(&mut self.scratch));
        }
    }
}

impl Put for RecordPut<'_> {
    #[inline]
    fn field(&mut self, i: usize) -> &mut Value {
        if let Some(k) = self.keys.and_then(|keys| keys.get(i)) {
            return self.r.fields.append_slot(*k).set(Value::Null);
        }
        self.flush();
        if self.keys.is_none() {
            self.pending = Some(i);
        }
        self.scratch = Value::Null;
        &mut self.scratch
    }
}

/// Sets output field `i` (an index into `names`) of a record, wherever its name leads.
fn set_named(r: &mut Record, names: &[Path], i: usize, v: Value) {
    match names.get(i).map(|p| (p, p.keys())) {
        Some((_, [k])) => {
            r.fields.insert(*k, v);
        }
        Some((p, _)) => r.set_path(p, v),
        None => {}
    }
}

/// Where late data go.
#[derive(Debug)]
pub enum Late<D> {
    /// Acknowledged and dropped (counted).
    Drop,
    /// Passed on flagged `late = true`.
    Emit,
    /// Sent flagged `late = true` to another train.
    Train(Rc<Mailbox<D>>),
}

/// Parses `on_late`; `train` finds the mailbox of a train by name.
pub fn late_from<D>(
    setting: &str,
    train: impl Fn(&str) -> Option<Rc<Mailbox<D>>>,
) -> Result<Late<D>, SettingError> {
    match setting {
        "drop" => Ok(Late::Drop),
        "emit" => Ok(Late::Emit),
        other => match other.strip_prefix("train:") {
            Some(name) => train(name)
                .map(Late::Train)
                .ok_or_else(|| SettingError::new("on_late", format!("no train named {name:?}"))),
            None => Err(SettingError::new(
                "on_late",
                format!("expected \"drop\", \"emit\" or \"train:NAME\", found {other:?}"),
            )),
        },
    }
}

/// Aggregates data per key over windows of their own time (or of their arrival), and emits
/// one record per window when it closes: `window_start`, `window_end` (timestamps), the
/// key fields, then the aggregates in the order written.
///
/// **Windows.** `tumbling`: `[k·size, (k+1)·size)`; `hopping`: windows of `size` starting
/// every `step` (a datum counts in each it falls in); `session`: per key, from its first
/// datum until `gap` passes without one (a datum after the gap ends the session and
/// starts the next).
///
/// **Event time.** The watermark is the greatest time seen; a window closes when it
/// reaches the window's end plus `lateness`. A datum whose windows have all closed is late
/// (time going backwards, a clock reset): counted, and dropped (acknowledged), passed on
/// (`emit`) or sent to a train, flagged `late = true`. Closing follows the data alone, so
/// a file replayed at full speed gives the windows that reading it live gave. With
/// `time = "arrival"` the wall clock is the time and windows close by timer. A datum with
/// no time, or one that does not parse, goes per `on_error` (counted, logged with its id).
///
/// **Aggregates.** `count`, `count(CONDITION)` (the filter language), `sum(F)` (null and
/// missing count 0; integers stay integers), `min(F)`, `max(F)`, `mean(F)` (skip null and
/// missing), `first(F)`, `last(F)`, `count_distinct(F)` (exact, on 64-bit hashes, up to
/// `distinct_exact` values, then a HyperLogLog estimate with `F_estimated = true`, where F
/// is the output name), `values(F)` (at most `max_values`, then `F_truncated = true`).
///
/// **Inputs** are consumed (counted as dropped) unless `pass = true`. A consumed input is
/// acknowledged only once the record of its window is (a drain wrote it): a checkpointing
/// supply (`tail`) never commits past an input still in an open window, so a kill -9
/// re-reads the open windows' inputs. At most [`MAX_HELD`] acknowledgements are held;
/// beyond, inputs are acknowledged at once (counted, logged).
///
/// **Bounds.** At most `max_keys` open (key, window) states and about `max_bytes` of keys
/// and values; beyond, the window closing soonest is emitted early flagged `evicted = true`
/// (counted, logged at most 10 lines a second).
///
/// **Shutdown.** Open windows are emitted flagged `partial = true`; with `persist = true`
/// (or `at_finish = "persist"`) they are saved under `[state] dir` instead (file
/// `window-TRAIN-COG-HASH.state`) with the watermark, their inputs acknowledged, and loaded
/// at start, so a restart mid-window continues the same counts. A state file that cannot be
/// read is logged and ignored.
///
/// ```toml
/// [[train.cog]]
/// type = "window"
/// key = ["client"]
/// time = "time"
/// kind = "tumbling"   # hopping (size + step) | session (gap)
/// size = "60s"
/// lateness = "0s"
/// on_late = "drop"
/// aggregate = { requests = "count", bytes = "sum(bytes)", errors = "count(status >= 400)" }
/// ```
///
/// From its typed settings, without TOML, on any datum (see [`WindowFields`]):
/// `Window::from_settings(&WindowSettings { key: vec!["client".into()], aggregate: Aggregates(vec![("n".into(), "count".into())]), ..Default::default() }, fields, |_| None, None)`.
pub type Window<D> = Windowed<D, EmitWindows>;

/// What a cog on [`Windowed`] does with windows: `window` emits each, `threshold` alerts.
pub trait Handler<D>: 'static {
    /// The cog's name.
    const NAME: &'static str;

    /// A window handed out by the bookkeeping: the handler emits what it emits, gives the
    /// window's held ids to [`Core::hold_or_ack`], and the state back with
    /// [`Windows::release`].
    fn closed(&mut self, core: &mut Core<D>, c: Closed, out: &mut Out<D>, cx: &mut Ctx);

    /// A datum was counted (its windows are in `core.w.touched` when tracked).
    fn counted(&mut self, _core: &mut Core<D>, _out: &mut Out<D>, _cx: &mut Ctx) {}

    /// Outputs acknowledged downstream.
    fn event_done(&mut self, _ids: &[EventId]) {}

    /// What the handler remembers per group-by key across windows (hashes, oldest first),
    /// saved with the windows by `persist`.
    fn groups(&self) -> Vec<u64> {
        Vec::new()
    }

    /// The groups saved by a previous run, given back at start.
    fn restore_groups(&mut self, _groups: Vec<u64>) {}
}

/// `window`'s handler: one record per window.
#[derive(Debug)]
pub struct EmitWindows {
    partial_ix: usize,
    evicted_ix: usize,
}

impl<D: 'static> Handler<D> for EmitWindows {
    const NAME: &'static str = "window";

    fn closed(&mut self, core: &mut Core<D>, mut c: Closed, out: &mut Out<D>, cx: &mut Ctx) {
        let id = cx.new_event_id();
        let flag = match c.why {
            CloseWhy::Closed => None,
            CloseWhy::Evicted => Some(self.evicted_ix),
            CloseWhy::Partial => Some(self.partial_ix),
        };
        let d = match &core.fields.fill {
            Some(fill) => fill(id, &core.w, &mut c.state, flag),
            None => {
                core.w.output(&mut c.state, &mut core.out_buf);
                if let Some(ix) = flag {
                    core.out_buf.push((ix, Value::Bool(true)));
                }
                let d = (core.fields.make)(id, core.w.names(), &mut core.out_buf);
                core.out_buf.clear();
                d
            }
        };
        core.hold_or_ack(Some(id), &mut c, cx);
        core.w.release(c.state);
        out.push(d);
    }
}

/// What `window` and `threshold` share around [`Windows`]: the datum's fields, where
/// late and failed data go, the held acknowledgements, the clock.
#[derive(Debug)]
pub struct Core<D> {
    /// The windows.
    pub w: Windows<D>,
    /// How the datum is read and made.
    pub fields: WindowFields<D>,
    pass: bool,
    late: Late<D>,
    on_error: OnError<D>,
    state_file: Option<PathBuf>,
    /// Output id → ids of the inputs it counts, acknowledged with it.
    held: Held,
    /// Inputs held by open windows.
    open_held: usize,
    early_acks: u64,
    anchor: Option<(Instant, i64)>,
    armed: Option<i64>,
    limiter: LogLimiter,
    late_path: Path,
    /// Reused output fields.
    pub out_buf: Vec<(usize, Value)>,
    /// `finish` began: open windows are being emitted.
    finishing: bool,
    closed_buf: Vec<Closed>,
}

/// A cog keeping windows, with a [`Handler`] for what closes.
#[derive(Debug)]
pub struct Windowed<D, H> {
    core: Core<D>,
    handler: H,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A one-segment output path.
pub(crate) fn fixed(name: &str) -> Path {
    Path::parse(name).unwrap_or_else(|_| Path::from(crate::record::Key::new(name)))
}

impl<D: 'static> Window<D> {
    /// A `window` made from its settings: `fields` reads and writes the datum, `train`
    /// finds the mailbox of a train named by `on_late` / `on_error`, `state_file` is where
    /// open windows are kept across runs (`None`: not kept, whatever the settings say).
    pub fn from_settings(
        s: &WindowSettings,
        fields: WindowFields<D>,
        train: impl Fn(&str) -> Option<Rc<Mailbox<D>>>,
        state_file: Option<PathBuf>,
    ) -> Result<Self, SettingError> {
        let mut core = Core::from_settings(s, fields, &[], train, state_file)?;
        let partial_ix = core.w.add_name(fixed("partial"));
        let evicted_ix = core.w.add_name(fixed("evicted"));
        Ok(Windowed {
            core,
            handler: EmitWindows {
                partial_ix,
                evicted_ix,
            },
        })
    }
}

impl<D: 'static, H> Windowed<D, H> {
    /// Makes the cog from its core and handler.
    pub fn new(core: Core<D>, handler: H) -> Self {
        Windowed { core, handler }
    }

    /// Late data seen so far.
    pub fn late(&self) -> u64 {
        self.core.w.late
    }

    /// Windows emitted early to stay within max_keys / max_bytes.
    pub fn evictions(&self) -> u64 {
        self.core.w.evictions()
    }
}

impl<D: 'static> Core<D> {
    /// The shared part made from the window settings; `evidence` names fields of the
    /// first and last datum kept per window.
    pub fn from_settings(
        s: &WindowSettings,
        fields: WindowFields<D>,
        evidence: &[String],
        train: impl Fn(&str) -> Option<Rc<Mailbox<D>>>,
        state_file: Option<PathBuf>,
    ) -> Result<Self, SettingError> {
        let w = Windows::from_settings(s, fields.get.clone(), evidence)?;
        let late = late_from(&s.on_late, &train)?;
        let set = fields.set.clone();
        let error_path = fixed("error");
        let on_error = on_error::for_datum(
            &s.on_error.on_error,
            &train,
            Getter::new({
                let id = fields.id.clone();
                move |d: &D| id.get(d)
            }),
            Setter::new(move |d: &mut D, why: String| set(d, &error_path, Value::Str(why))),
        )?;
        Ok(Core {
            w,
            fields,
            pass: s.pass,
            late,
            on_error,
            state_file: state_file.filter(|_| s.persists()),
            held: Held::default(),
            open_held: 0,
            early_acks: 0,
            anchor: None,
            armed: None,
            limiter: LogLimiter::default(),
            late_path: fixed("late"),
            out_buf: Vec::new(),
            finishing: false,
            closed_buf: Vec::new(),
        })
    }

    /// The held ids of a window handed out: held until `out` (its output) is
    /// acknowledged, or acknowledged now when it has none.
    pub fn hold_or_ack(&mut self, out: Option<EventId>, c: &mut Closed, cx: &mut Ctx) {
        let ids = std::mem::take(&mut c.state.held);
        self.open_held = self.open_held.saturating_sub(ids.len());
        match out {
            Some(id) => self.held.hold(id, ids),
            None => {
                for i in ids.iter() {
                    cx.event_done(i);
                }
            }
        }
    }

    /// A consumed input is done with: its storage goes back at once.
    #[inline]
    fn spend(&self, d: D) {
        match &self.fields.recycle {
            Some(recycle) => recycle(d),
            None => drop(d),
        }
    }

    fn now_ms(&mut self, now: Instant) -> i64 {
        let (at, ms) = *self.anchor.get_or_insert_with(|| (now, wall_ms()));
        ms.saturating_add(i64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(0))
    }

    /// With arrival time: arms the timer for the next window to close.
    fn arm(&mut self, name: &str, cx: &mut Ctx) {
        if !self.w.is_arrival() {
            return;
        }
        let Some(at) = self.w.next_close() else {
            return;
        };
        if self.armed.is_some_and(|a| a <= at) {
            return;
        }
        let Some((i, ms)) = self.anchor else {
            return;
        };
        let when = i + Duration::from_millis(u64::try_from(at.saturating_sub(ms)).unwrap_or(0));
        match cx.timer_at(when, 0) {
            Ok(_) => self.armed = Some(at),
            Err(e) => {
                if self.limiter.allow("timer failures", name, cx) {
                    slog::warn!(cx.logger(), "cannot arm the window timer; windows close with the next data or at shutdown";
                        "cog" => name, "error" => %e);
                }
            }
        }
    }
}

impl<D: 'static, H: Handler<D>> Windowed<D, H> {
    /// Hands the windows closed so far to the handler.
    fn emit_closed(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        let core = &mut self.core;
        if core.w.closed.is_empty() {
            return;
        }
        std::mem::swap(&mut core.closed_buf, &mut core.w.closed);
        let mut closed = std::mem::take(&mut core.closed_buf);
        for c in closed.drain(..) {
            self.handler.closed(core, c, out, cx);
        }
        core.closed_buf = closed;
        core.w.report_evictions(H::NAME, cx);
    }

    fn one(&mut self, mut d: D, out: &mut Out<D>, cx: &mut Ctx) {
        let core = &mut self.core;
        let t = match core.w.time_of(&d) {
            Ok(t) => t,
            Err(e) => {
                core.on_error.fail(d, H::NAME, &e, out, cx);
                return;
            }
        };
        let id = core.fields.id.get(&d).copied().unwrap_or(0);
        let mut hold = !core.pass && id != 0;
        if hold && core.held.total() + core.open_held >= MAX_HELD {
            hold = false;
        }
        let added = core.w.add(&d, t, id, hold);
        self.emit_closed(out, cx);
        let core = &mut self.core;
        match added {
            Added::Counted => {
                if hold {
                    core.open_held += 1;
                } else if !core.pass && id != 0 {
                    core.early_acks += 1;
                    if core.limiter.allow("early acknowledgements", H::NAME, cx) {
                        slog::warn!(cx.logger(), "too many inputs held in open windows; acknowledged at once (a crash may lose them from their window)";
                            "cog" => H::NAME, "event" => id, "max_held" => MAX_HELD, "so_far" => core.early_acks);
                    }
                    cx.event_done(id);
                }
                if core.pass {
                    out.push(d);
                } else {
                    out.count_dropped(1);
                    core.spend(d);
                }
                self.handler.counted(&mut self.core, out, cx);
            }
            Added::Late => {
                if core.limiter.allow("late data", H::NAME, cx) {
                    slog::info!(cx.logger(), "late datum: its windows have closed";
                        "cog" => H::NAME, "event" => id, "late_so_far" => core.w.late);
                }
                match &core.late {
                    Late::Drop => {
                        cx.event_done(id);
                        out.count_dropped(1);
                        core.spend(d);
                    }
                    Late::Emit => {
                        (core.fields.set)(&mut d, &core.late_path, Value::Bool(true));
                        out.push(d);
                    }
                    Late::Train(m) => {
                        (core.fields.set)(&mut d, &core.late_path, Value::Bool(true));
                        m.send(d, cx);
                    }
                }
            }
        }
    }
}

impl<D: 'static, H: Handler<D> + std::fmt::Debug> Cog<D> for Windowed<D, H> {
    fn name(&self) -> &str {
        H::NAME
    }

    fn inspect(&self, into: &mut crate::engine::control::Inspection) {
        let w = &self.core.w;
        into.keys(w.open(), Some(w.max_keys()));
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let core = &mut self.core;
        let now = cx.now();
        core.anchor = Some((now, wall_ms()));
        if let Some(path) = &core.state_file {
            match core.w.load(path, H::NAME) {
                Ok((n, groups)) => {
                    self.handler.restore_groups(groups);
                    if n > 0 {
                        slog::info!(cx.logger(), "window state loaded";
                            "cog" => H::NAME, "file" => %path.display(), "windows" => n);
                    }
                }
                Err(e) => {
                    slog::warn!(cx.logger(), "window state ignored, starting empty";
                        "cog" => H::NAME, "reason" => %e);
                }
            }
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        let now = self.core.now_ms(cx.now());
        self.core.w.set_now(now);
        if self.core.w.is_arrival() {
            self.core.w.advance(now);
            self.emit_closed(out, cx);
        }
        for d in batch.drain(..) {
            self.one(d, out, cx);
        }
        self.core.arm(H::NAME, cx);
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<D>, cx: &mut Ctx) {
        if self.core.finishing {
            if local == FINISH_CHUNK && matches!(why, Wake::Immediate) {
                if self.emit_open(out, cx) {
                    self.totals(cx);
                    cx.finished();
                } else {
                    cx.enqueue(FINISH_CHUNK);
                }
            }
            return;
        }
        if let Wake::Timer(_) = why {
            self.core.armed = None;
            let now = self.core.now_ms(cx.now());
            self.core.w.set_now(now);
            self.core.w.advance(now);
            self.emit_closed(out, cx);
            self.core.arm(H::NAME, cx);
        }
    }

    fn event_done(&mut self, ids: &[EventId], cx: &mut Ctx) {
        self.handler.event_done(ids);
        self.core.held.done(ids, cx);
    }

    fn event_rename(&mut self, old: EventId, new: EventId, _: &mut Ctx) {
        self.core.held.rename(old, new);
    }

    fn finish(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        let core = &mut self.core;
        if let Some(path) = core.state_file.clone() {
            let groups = self.handler.groups();
            match core.w.save(&path, H::NAME, &groups) {
                Ok(n) => {
                    slog::info!(cx.logger(), "window state saved";
                        "cog" => H::NAME, "file" => %path.display(), "windows" => n);
                    // Saved: their inputs are done with (a restart continues the counts).
                    while let Some(mut c) = core.w.pop_oldest(CloseWhy::Partial) {
                        core.hold_or_ack(None, &mut c, cx);
                    }
                    return;
                }
                Err(e) => {
                    slog::error!(cx.logger(), "window state not saved; open windows emitted partial";
                        "cog" => H::NAME, "reason" => %e);
                }
            }
        }
        self.emit_closed(out, cx);
        self.core.finishing = true;
        if self.emit_open(out, cx) {
            self.totals(cx);
        } else {
            // The rest in later turns: the records of one chunk are written (and their
            // storage reused) before the next is made.
            cx.linger();
            cx.enqueue(FINISH_CHUNK);
        }
    }
}

/// The immediate call emitting the next open windows at shutdown.
const FINISH_CHUNK: Local = 1;

/// Open windows emitted per turn at shutdown: about one read's worth of records, so that
/// what a chunk needs on its way down (the batch, the writer's buffer, the acknowledgements
/// held) stays small beside the windows it frees.
const FINISH_WINDOWS: usize = 512;

impl<D: 'static, H: Handler<D>> Windowed<D, H> {
    /// Emits up to [`FINISH_WINDOWS`] open windows, flagged partial; true when none is
    /// left.
    fn emit_open(&mut self, out: &mut Out<D>, cx: &mut Ctx) -> bool {
        for _ in 0..FINISH_WINDOWS {
            let Some(c) = self.core.w.pop_oldest(CloseWhy::Partial) else {
                return true;
            };
            self.handler.closed(&mut self.core, c, out, cx);
        }
        self.core.w.open() == 0
    }

    fn totals(&self, cx: &mut Ctx) {
        let core = &self.core;
        if core.w.late > 0 || self.evictions() > 0 || core.early_acks > 0 {
            slog::info!(cx.logger(), "window totals";
                "cog" => H::NAME, "late" => core.w.late, "evictions" => self.evictions(),
                "early_acks" => core.early_acks);
        }
    }
}

crate::settings! {
    /// Settings of `window`: the shared window keys.
    pub struct WindowCogSettings {
        /// The window keys shared with `threshold`.
        #[setting(flatten)]
        window: WindowSettings,
    }
}

/// The descriptor of `window`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "window",
    kind: CogKind::Transform,
    summary: "aggregates records per key over tumbling, hopping or session windows of event \
              time (or arrival); one record per closed window",
    params: WindowCogSettings::PARAMS,
    fields: &[
        ("window_start", "the window's start (timestamp)"),
        ("window_end", "the window's end (timestamp)"),
        ("partial", "true on windows emitted open at shutdown"),
        (
            "evicted",
            "true on windows emitted early at max_keys / max_bytes",
        ),
        (
            "late",
            "true on late data passed on (on_late = \"emit\" or a train)",
        ),
    ],
    build,
};

fn build(p: &CogParams<'_>, bx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: WindowCogSettings = p.settings()?;
    let s = s.window;
    on_error::from_settings(&s.on_error, p, bx)?;
    let state = s.persists().then(|| {
        bx.state_used.set(true);
        state_file("window", p, bx.state_dir)
    });
    let cog = Window::from_settings(&s, record_fields(), |name| bx.mailbox(name), state)
        .map_err(|e| setting_error(p, e))?;
    Ok(Box::new(cog))
}
