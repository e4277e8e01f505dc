//! A train: an ordered chain of cogs through which data flow, with per-cog counters.

use std::time::{Duration, Instant};

use crate::engine::cog::{BoxError, Cog, JobId, JobResult, Local, Out, Wake};
use crate::engine::control::{Inspection, Rewind, RewindError};
use crate::engine::escapement::{Broadcast, Core, Ctx, Handle, Phase, Slot};

/// Counters the train keeps for one cog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CogMetrics {
    /// The cog's name ([`Cog::name`], its type in a configuration).
    pub name: String,
    /// The cog's id in its train: unique there, `NAME#N` (N its 1-based position) unless
    /// given with [`Train::push_with_id`] (the `name` key of a configured cog).
    pub id: String,
    /// Data handed to the cog by the previous cog.
    pub data_in: u64,
    /// Data the cog emitted (from `process`, wakes, jobs and `finish`).
    pub data_out: u64,
    /// Data the cog said it dropped on purpose.
    pub dropped: u64,
    /// Data the cog said it failed on.
    pub errors: u64,
    /// Time spent inside the cog's callbacks that carry data.
    pub busy: Duration,
}

/// The counters of one train, cog by cog in train order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrainMetrics {
    /// The train's name.
    pub name: String,
    /// One entry per cog.
    pub cogs: Vec<CogMetrics>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    data_in: u64,
    data_out: u64,
    dropped: u64,
    errors: u64,
    busy: Duration,
}

/// An ordered chain of cogs over data of type `D`: what a cog emits flows to the next.
///
/// Data move stage by stage through two swapped buffers, so a warmed-up train allocates
/// nothing per datum. What the last cog emits is discarded (a drain emits nothing).
///
/// # Contract
///
/// A train is built with its cogs in order ([`cog`](Train::cog), [`push`](Train::push),
/// [`push_with_id`](Train::push_with_id)) and handed to an
/// [`Escapement`](crate::Escapement), which owns and drives it; many trains, of different
/// datum types, share one escapement.
///
/// When a cog emits (from a wake, a job result, `finish`), the whole batch moves down one
/// stage at a time: the next cog's [`process_batch`](Cog::process_batch) takes all of it
/// before the cog after that sees any, and so on to the end of the train, before the loop
/// does anything else. Data thus keep their order within a train, and a cog sees each
/// batch once. The train counts, per cog, the data in and out, what the cog counted as
/// dropped or failed ([`Out::count_dropped`], [`Out::count_errors`]) and the time spent in
/// its callbacks ([`CogMetrics`], from [`Escapement::metrics`](crate::Escapement::metrics)).
///
/// Backpressure and shutdown work per train: a [`Ctx::pause_supplies`] pauses the
/// supplies of the caller's own train, and a train finishes its cogs in order, each once
/// everything before it is idle (see [`Cog::finish`]).
///
/// # Example
///
/// A supply of words, a cog that drops the short ones (and says so), and a drain; the
/// counters show what each stage saw.
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
///
/// use deadbeat::prelude::*;
///
/// struct Words(Vec<&'static str>);
///
/// impl Cog<String> for Words {
///     fn name(&self) -> &str {
///         "words"
///     }
///     fn is_supply(&self) -> bool {
///         true
///     }
///     fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
///         cx.enqueue(0);
///         Ok(())
///     }
///     fn wake(&mut self, _local: Local, _why: Wake<'_>, out: &mut Out<String>, cx: &mut Ctx) {
///         // One batch: the next cogs see all four words in one process_batch call.
///         out.extend(self.0.drain(..).map(String::from));
///         cx.exhausted();
///     }
/// }
///
/// struct Long(usize);
///
/// impl Cog<String> for Long {
///     fn name(&self) -> &str {
///         "long"
///     }
///     fn process(&mut self, w: String, out: &mut Out<String>, _cx: &mut Ctx) {
///         if w.len() >= self.0 {
///             out.push(w);
///         } else {
///             out.count_dropped(1);
///         }
///     }
/// }
///
/// struct Keep(Rc<RefCell<Vec<String>>>);
///
/// impl Cog<String> for Keep {
///     fn name(&self) -> &str {
///         "keep"
///     }
///     fn process(&mut self, w: String, _out: &mut Out<String>, _cx: &mut Ctx) {
///         self.0.borrow_mut().push(w);
///     }
/// }
///
/// let kept = Rc::new(RefCell::new(Vec::new()));
/// let mut train = Train::new("words")
///     .cog(Words(vec!["a", "cog", "in", "motion"]))
///     .cog(Long(3));
/// train.push_with_id(Box::new(Keep(Rc::clone(&kept))), "out".to_string());
/// assert_eq!(train.cog_id(1), Some("long#2"));
///
/// let mut esc = Escapement::new()?;
/// esc.add_train(train)?;
/// esc.run()?;
/// assert_eq!(*kept.borrow(), ["cog", "motion"]);
/// let long = &esc.metrics()[0].cogs[1];
/// assert_eq!((long.data_in, long.data_out, long.dropped), (4, 2, 2));
/// # Ok::<(), BoxError>(())
/// ```
///
/// # Pitfalls
///
/// - **Data past the last cog.** What the last cog emits is discarded (counted only as
///   its data out): end a train with a drain, which writes data out and emits nothing.
/// - **A supply's position.** Data enter a train only where a cog emits them; a cog gets
///   [`process`](Cog::process) calls only from the cogs before it, so the first cog never
///   gets any.
/// - **Ids.** Cog ids name cogs in logs, counters and errors; ids given with
///   [`push_with_id`](Train::push_with_id) are not checked, so keep them unique in the
///   train.
/// - **Long trains of short batches.** The per-batch cost (a virtual call and a clock
///   read per stage) is paid per batch, not per datum: a supply that emits one datum per
///   wake pays it for every datum; emit what is at hand as one batch.
pub struct Train<D> {
    name: String,
    cogs: Vec<Box<dyn Cog<D>>>,
    ids: Vec<String>,
    counters: Vec<Counters>,
    a: Out<D>,
    b: Out<D>,
    index: u16,
    /// Per cog: whether it was last told to pause (supplies only).
    paused: Vec<bool>,
    /// Next cog to receive `finish`.
    finish_cursor: usize,
}

impl<D: 'static> std::fmt::Debug for Train<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Train")
            .field("name", &self.name)
            .field("cogs", &self.cogs)
            .finish()
    }
}

impl<D: 'static> Train<D> {
    /// An empty train.
    pub fn new(name: impl Into<String>) -> Self {
        Train {
            name: name.into(),
            cogs: Vec::new(),
            ids: Vec::new(),
            counters: Vec::new(),
            a: Out::with_capacity(1024),
            b: Out::with_capacity(1024),
            index: 0,
            paused: Vec::new(),
            finish_cursor: 0,
        }
    }

    /// Appends a cog (builder style).
    pub fn cog<C: Cog<D>>(mut self, cog: C) -> Self {
        self.push(Box::new(cog));
        self
    }

    /// Appends a boxed cog, with the id `NAME#N` (N: its 1-based position).
    pub fn push(&mut self, cog: Box<dyn Cog<D>>) {
        let id = format!("{}#{}", cog.name(), self.cogs.len() + 1);
        self.push_with_id(cog, id);
    }

    /// Appends a boxed cog with the id that names it in logs, counters and errors (keep it
    /// unique in the train: nothing else tells two cogs of one type apart).
    pub fn push_with_id(&mut self, cog: Box<dyn Cog<D>>, id: String) {
        self.cogs.push(cog);
        self.ids.push(id);
        self.counters.push(Counters::default());
        self.paused.push(false);
    }

    /// The id of cog `i` (0-based index), as logs and counters show it.
    pub fn cog_id(&self, i: usize) -> Option<&str> {
        self.ids.get(i).map(String::as_str)
    }

    /// The train's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of cogs.
    pub fn len(&self) -> usize {
        self.cogs.len()
    }

    /// Whether the train has no cogs.
    pub fn is_empty(&self) -> bool {
        self.cogs.is_empty()
    }

    pub(crate) fn attach(&mut self, index: u16) {
        self.index = index;
    }

    /// The core's view of each cog, with a logger that names train and cog on every line
    /// the cog logs.
    pub(crate) fn slots(&self, logger: &slog::Logger) -> Vec<Slot> {
        self.cogs
            .iter()
            .zip(&self.ids)
            .map(|(c, id)| {
                let log = logger.new(slog::o!("train" => self.name.clone(), "cog" => id.clone()));
                Slot::new(c.is_supply(), log)
            })
            .collect()
    }

    fn handle(&self, cog: usize) -> Handle {
        Handle {
            train: self.index,
            cog: cog as u16,
        }
    }

    /// Calls cog `i` with the output buffer, then carries what it emitted down the train.
    fn call_and_flow(
        &mut self,
        i: usize,
        core: &mut Core,
        f: impl FnOnce(&mut dyn Cog<D>, &mut Out<D>, &mut Ctx<'_>),
    ) {
        let t1 = self.call(i, core, f);
        self.flow(i + 1, core, t1);
    }

    /// Calls cog `i` with the output buffer `a` and counts what it emitted; returns when
    /// the call ended.
    #[inline]
    fn call(
        &mut self,
        i: usize,
        core: &mut Core,
        f: impl FnOnce(&mut dyn Cog<D>, &mut Out<D>, &mut Ctx<'_>),
    ) -> Instant {
        let t0 = Instant::now();
        {
            let mut cx = Ctx::new(core, self.handle(i));
            f(&mut *self.cogs[i], &mut self.a, &mut cx);
        }
        let t1 = Instant::now();
        let c = &mut self.counters[i];
        c.busy += t1 - t0;
        c.data_out += self.a.buf.len() as u64;
        c.dropped += std::mem::take(&mut self.a.dropped);
        c.errors += std::mem::take(&mut self.a.errors);
        t1
    }

    /// Moves the batch in `a` through cogs `from..`, one whole stage at a time; what the
    /// last cog emits is discarded.
    fn flow(&mut self, from: usize, core: &mut Core, t: Instant) {
        self.flow_on(from, core, t);
        self.a.buf.clear();
    }

    /// Moves the batch in `a` through cogs `from..`, leaving what the last cog emitted in
    /// `a`.
    #[inline]
    fn flow_on(&mut self, from: usize, core: &mut Core, mut t: Instant) {
        let mut j = from;
        while j < self.cogs.len() && !self.a.buf.is_empty() {
            let n = self.a.buf.len() as u64;
            {
                let mut cx = Ctx::new(core, self.handle(j));
                self.cogs[j].process_batch(&mut self.a.buf, &mut self.b, &mut cx);
            }
            self.a.buf.clear();
            let t1 = Instant::now();
            let c = &mut self.counters[j];
            c.data_in += n;
            c.data_out += self.b.buf.len() as u64;
            c.dropped += std::mem::take(&mut self.b.dropped);
            c.errors += std::mem::take(&mut self.b.errors);
            c.busy += t1 - t;
            t = t1;
            std::mem::swap(&mut self.a, &mut self.b);
            j += 1;
        }
    }

    /// For a [`Detached`](crate::engine::escapement::Detached) train: moves `batch` through
    /// every cog and leaves in it what the last cog emitted; returns the data the cogs
    /// said they dropped and failed on.
    pub(crate) fn pass_through(&mut self, batch: &mut Vec<D>, core: &mut Core) -> (u64, u64) {
        let before = self.dropped_and_errors();
        // What a panicking cog left behind belongs to no batch.
        self.a.buf.clear();
        self.b.buf.clear();
        std::mem::swap(&mut self.a.buf, batch);
        self.flow_on(0, core, Instant::now());
        std::mem::swap(&mut self.a.buf, batch);
        let after = self.dropped_and_errors();
        (after.0 - before.0, after.1 - before.1)
    }

    /// For a [`Detached`](crate::engine::escapement::Detached) train: `finish` to every cog
    /// in order, what each emits carried down the rest of the train and appended to `out`.
    pub(crate) fn finish_through(&mut self, out: &mut Vec<D>, core: &mut Core) {
        for i in 0..self.cogs.len() {
            let h = self.handle(i);
            core.slots[h.train as usize][i].phase = Phase::Finishing;
            let t1 = self.call(i, core, |c, out, cx| c.finish(out, cx));
            self.flow_on(i + 1, core, t1);
            out.append(&mut self.a.buf);
            core.set_phase(h, Phase::Finished);
        }
    }

    /// The core's view of each cog of a [`Detached`](crate::engine::escapement::Detached)
    /// train: its logger names the cog as `sub_cog`, beside what `logger` names.
    pub(crate) fn detached_slots(&self, logger: &slog::Logger) -> Vec<Slot> {
        self.cogs
            .iter()
            .zip(&self.ids)
            .map(|(c, id)| Slot::new(c.is_supply(), logger.new(slog::o!("sub_cog" => id.clone()))))
            .collect()
    }

    fn dropped_and_errors(&self) -> (u64, u64) {
        self.counters
            .iter()
            .fold((0, 0), |(d, e), c| (d + c.dropped, e + c.errors))
    }

    /// Calls every cog that has not had `done` yet: a finished supply still wants to hear
    /// its data were acknowledged, a done cog has released everything.
    fn each_cog(&mut self, core: &mut Core, mut f: impl FnMut(&mut dyn Cog<D>, &mut Ctx<'_>)) {
        for i in 0..self.cogs.len() {
            if core.slots[self.index as usize][i].phase == Phase::Done {
                continue;
            }
            let mut cx = Ctx::new(core, self.handle(i));
            f(&mut *self.cogs[i], &mut cx);
        }
    }
}

/// What the escapement needs of a train, whatever its datum type.
pub(crate) trait Driven {
    fn start(&mut self, core: &mut Core) -> Result<(), BoxError>;
    fn wake(&mut self, cog: u16, local: Local, why: Wake<'_>, core: &mut Core);
    fn job_done(&mut self, cog: u16, job: JobId, result: JobResult, core: &mut Core);
    fn broadcast(&mut self, b: &Broadcast<'_>, core: &mut Core);
    fn set_paused(&mut self, paused: bool, core: &mut Core);
    /// Whether cog `cog` was last told to pause.
    fn is_paused(&self, cog: usize) -> bool;
    /// What cog `cog` reports of itself ([`Cog::inspect`]).
    fn inspect(&self, cog: usize, into: &mut Inspection);
    /// Rolls supply `cog` back ([`Cog::rewind`]).
    fn rewind(&mut self, cog: usize, to: &Rewind, core: &mut Core) -> Result<u64, RewindError>;
    /// Calls `finish` on every cog whose upstream is idle; true once all have finished.
    fn finish_step(&mut self, core: &mut Core) -> bool;
    fn done(&mut self, core: &mut Core);
    fn metrics(&self) -> TrainMetrics;
}

impl<D: 'static> Driven for Train<D> {
    fn start(&mut self, core: &mut Core) -> Result<(), BoxError> {
        for i in 0..self.cogs.len() {
            let mut cx = Ctx::new(core, self.handle(i));
            self.cogs[i].start(&mut cx).map_err(|e| {
                format!(
                    "train {:?}, cog {}: start failed: {}",
                    self.name, self.ids[i], e
                )
            })?;
        }
        Ok(())
    }

    fn wake(&mut self, cog: u16, local: Local, why: Wake<'_>, core: &mut Core) {
        self.call_and_flow(cog as usize, core, |c, out, cx| c.wake(local, why, out, cx));
    }

    fn job_done(&mut self, cog: u16, job: JobId, result: JobResult, core: &mut Core) {
        self.call_and_flow(cog as usize, core, |c, out, cx| {
            c.job_done(job, result, out, cx)
        });
    }

    fn broadcast(&mut self, b: &Broadcast<'_>, core: &mut Core) {
        match *b {
            Broadcast::Done(ids) => self.each_cog(core, |c, cx| c.event_done(ids, cx)),
            Broadcast::Rename(old, new) => {
                self.each_cog(core, |c, cx| c.event_rename(old, new, cx))
            }
            Broadcast::Reopen => self.each_cog(core, |c, cx| c.reopen(cx)),
        }
    }

    fn set_paused(&mut self, paused: bool, core: &mut Core) {
        for i in 0..self.cogs.len() {
            let h = self.handle(i);
            let slot = &core.slots[h.train as usize][i];
            // A supply held by the service stays paused whatever backpressure wants.
            let want = paused || slot.service_hold;
            if !slot.supply || slot.phase != Phase::Running || want == self.paused[i] {
                continue;
            }
            self.paused[i] = want;
            let mut cx = Ctx::new(core, h);
            if want {
                self.cogs[i].pause(&mut cx);
            } else {
                self.cogs[i].resume(&mut cx);
            }
        }
    }

    fn is_paused(&self, cog: usize) -> bool {
        self.paused.get(cog).copied().unwrap_or(false)
    }

    fn inspect(&self, cog: usize, into: &mut Inspection) {
        if let Some(c) = self.cogs.get(cog) {
            c.inspect(into);
        }
    }

    fn rewind(&mut self, cog: usize, to: &Rewind, core: &mut Core) -> Result<u64, RewindError> {
        if cog >= self.cogs.len() {
            return Err(RewindError::NoSource(format!("no cog {cog}")));
        }
        let mut cx = Ctx::new(core, self.handle(cog));
        self.cogs[cog].rewind(to, &mut cx)
    }

    fn finish_step(&mut self, core: &mut Core) -> bool {
        while self.finish_cursor < self.cogs.len() {
            let i = self.finish_cursor;
            if !core.upstream_idle(self.index, i) {
                return false;
            }
            // `Ctx::linger` inside `finish` can override this; bindings are released only
            // after the call, once the phase is known.
            let h = self.handle(i);
            core.slots[h.train as usize][i].phase = Phase::Finishing;
            self.finish_cursor += 1;
            self.call_and_flow(i, core, |c, out, cx| c.finish(out, cx));
            if core.slots[h.train as usize][i].phase == Phase::Finishing {
                core.set_phase(h, Phase::Finished);
            }
        }
        core.upstream_idle(self.index, self.cogs.len())
    }

    fn done(&mut self, core: &mut Core) {
        for i in 0..self.cogs.len() {
            let h = self.handle(i);
            if core.slots[h.train as usize][i].phase == Phase::Done {
                continue;
            }
            // Done before the call: a job submitted or a binding made in `done` would
            // never be delivered, so the escapement refuses them there.
            core.set_phase(h, Phase::Done);
            let mut cx = Ctx::new(core, h);
            self.cogs[i].done(&mut cx);
        }
    }

    fn metrics(&self) -> TrainMetrics {
        TrainMetrics {
            name: self.name.clone(),
            cogs: self
                .cogs
                .iter()
                .zip(&self.ids)
                .zip(&self.counters)
                .map(|((cog, id), c)| CogMetrics {
                    name: cog.name().to_string(),
                    id: id.clone(),
                    data_in: c.data_in,
                    data_out: c.data_out,
                    dropped: c.dropped,
                    errors: c.errors,
                    busy: c.busy,
                })
                .collect(),
        }
    }
}
