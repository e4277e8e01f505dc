//! The [`Cog`] trait and what a cog receives and emits.

use std::any::Any;
use std::ffi::OsStr;

use crate::engine::control::{Inspection, Rewind, RewindError};
use crate::engine::escapement::{Ctx, TimerId};

/// Identity a supply gives each datum, so drains can acknowledge it ([`Cog::event_done`]).
pub type EventId = u64;

/// A cog's own name for one of its bindings (a socket, a timer, a watch...).
/// The escapement hands it back on [`Cog::wake`]; it never interprets it.
pub type Local = u32;

/// Sequence number of a worker job, counted per submitting cog from 0.
pub type JobId = u64;

/// The value a worker job returns; the cog downcasts it.
pub type JobOutput = Box<dyn Any + Send>;

/// A job's outcome: its output, or the panic message if the job panicked.
pub type JobResult = Result<JobOutput, JobPanic>;

/// Error type returned by fallible cog and engine operations.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A worker job panicked; the message is the panic payload when it was a string.
#[derive(Debug, Clone)]
pub struct JobPanic(pub String);

impl std::fmt::Display for JobPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "worker job panicked: {}", self.0)
    }
}

impl std::error::Error for JobPanic {}

/// What woke a cog in [`Cog::wake`].
#[derive(Debug)]
pub enum Wake<'a> {
    /// The cog asked to be called soon with [`Ctx::enqueue`].
    Immediate,
    /// A registered source is ready (edge-triggered: read or write until `WouldBlock`).
    Ready(&'a mio::event::Event),
    /// A timer fired.
    Timer(TimerId),
    /// An inotify watch reported a change.
    Inotify(InotifyEvent<'a>),
    /// A bound signal arrived (possibly several deliveries folded into one).
    Signal(i32),
}

/// One inotify event, as delivered to a watching cog.
#[derive(Debug, Clone, Copy)]
pub struct InotifyEvent<'a> {
    /// The watch the event belongs to, as returned by [`Ctx::watch`].
    pub wd: &'a inotify::WatchDescriptor,
    /// What happened.
    pub mask: inotify::EventMask,
    /// Links the two halves of a rename.
    pub cookie: u32,
    /// The entry's name for events on a watched directory.
    pub name: Option<&'a OsStr>,
}

/// The output buffer a cog pushes its data into; the train reuses it, so pushing does not
/// allocate after warm-up.
///
/// A cog that drops a datum or fails on it says so here, so the train's counters show it.
#[derive(Debug)]
pub struct Out<D> {
    pub(crate) buf: Vec<D>,
    pub(crate) dropped: u64,
    pub(crate) errors: u64,
}

impl<D> Default for Out<D> {
    fn default() -> Self {
        Out {
            buf: Vec::new(),
            dropped: 0,
            errors: 0,
        }
    }
}

impl<D> Out<D> {
    /// An empty buffer with room for `n` data.
    pub fn with_capacity(n: usize) -> Self {
        Out {
            buf: Vec::with_capacity(n),
            dropped: 0,
            errors: 0,
        }
    }

    /// Emits one datum to the next cog.
    #[inline(always)]
    pub fn push(&mut self, d: D) {
        push_in_place(&mut self.buf, d);
    }

    /// Emits every datum of `it`, in order.
    #[inline]
    pub fn extend<I: IntoIterator<Item = D>>(&mut self, it: I) {
        self.buf.extend(it);
    }

    /// Emits all of `batch`, in order, leaving it empty: when nothing was emitted before,
    /// the vectors are swapped and no datum moves.
    #[inline]
    pub fn push_all(&mut self, batch: &mut Vec<D>) {
        if self.buf.is_empty() {
            std::mem::swap(&mut self.buf, batch);
        } else {
            self.buf.append(batch);
        }
    }

    /// The batch loop of a cog that changes data in place: `change` runs on each datum
    /// where it lies, and while it succeeds the batch is passed on whole ([`Out::push_all`]).
    /// Moving each datum into the output right after changing it costs a stall per datum
    /// (the copy reloads what was just stored; see "Store forwarding" in
    /// `docs/architecture.md`). A datum `change` fails on goes to
    /// `failed` with the error; from there on data are moved one by one, in order.
    #[inline]
    pub fn change_each<E>(
        &mut self,
        batch: &mut Vec<D>,
        mut change: impl FnMut(&mut D) -> Result<(), E>,
        mut failed: impl FnMut(D, E, &mut Out<D>),
    ) {
        let Some((at, first_error)) = batch
            .iter_mut()
            .enumerate()
            .find_map(|(i, d)| change(d).err().map(|e| (i, e)))
        else {
            self.push_all(batch);
            return;
        };
        let mut rest = batch.drain(..);
        self.buf.extend(rest.by_ref().take(at));
        if let Some(d) = rest.next() {
            failed(d, first_error, self);
        }
        for mut d in rest {
            match change(&mut d) {
                Ok(()) => self.push(d),
                Err(e) => failed(d, e, self),
            }
        }
    }

    /// Counts `n` data this cog dropped on purpose (filtered out, merged away...).
    /// A cog that drops a datum for good also acknowledges it (`Ctx::event_done` with its
    /// id), or the supply that sent it would hold its checkpoint back forever.
    #[inline]
    pub fn count_dropped(&mut self, n: u64) {
        self.dropped += n;
    }

    /// Counts `n` data this cog failed on (whatever it then did with them).
    #[inline]
    pub fn count_errors(&mut self, n: u64) {
        self.errors += n;
    }

    /// Data emitted so far in this call.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was emitted so far in this call.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Gives the buffered data to the caller; used by code that runs cogs outside a train
    /// (tests, tools).
    pub fn take(&mut self) -> Vec<D> {
        std::mem::take(&mut self.buf)
    }

    /// Data dropped and failed on so far, as `(dropped, errors)`.
    pub fn counts(&self) -> (u64, u64) {
        (self.dropped, self.errors)
    }
}

/// One stage of a train. Every method but [`name`](Cog::name) has a default, so a cog
/// implements only what its job needs.
///
/// Calls come from the one escapement thread and never overlap: a cog is never re-entered.
/// Anything a cog pushes into `out` flows to the next cog of its train.
///
/// # Contract
///
/// **When each method is called.** [`start`](Cog::start) once, for every cog of every
/// train in train order, before the loop runs. Then, until the shutdown reaches the cog:
/// [`process_batch`](Cog::process_batch) (by default [`process`](Cog::process) per datum)
/// whenever the previous cog emitted something, so the first cog of a train never gets
/// data this way; [`wake`](Cog::wake) when one of its bindings fires (immediate call, fd
/// readiness, timer, inotify watch, signal), with the [`Local`] it chose when binding;
/// [`job_done`](Cog::job_done) for each [`Ctx::submit`] result, in submission order.
/// Whatever the cog pushes into `out` from any of these (and from `finish`) goes down the
/// train as one batch before the loop does anything else.
///
/// **What a cog may do from a callback.** Everything [`Ctx`] offers: bind and unbind
/// events, submit jobs, acknowledge data, ask for a pause or the shutdown. It may not
/// block: the loop, every train and every timer wait while a callback runs. It cannot
/// reach other cogs except through the escapement ([`Ctx::enqueue_cog`], a
/// [`Mailbox`](crate::engine::mailbox::Mailbox)) and broadcasts.
///
/// **Event ids and acknowledgement.** A supply that wants to know when its data are
/// written out gives each datum an id from [`Ctx::new_event_id`]. The cog that ends a
/// datum's journey calls [`Ctx::event_done`] with it: a drain once its bytes are written,
/// a filter that drops it for good. Once the callback has returned, the escapement
/// broadcasts [`event_done`](Cog::event_done) to every cog of every train (runs of ids as
/// one slice), so each cog checks the ids it owns. A cog that merges or splits data
/// says so with [`Ctx::event_rename`], broadcast as [`event_rename`](Cog::event_rename).
///
/// **Pause and resume.** A cog that cannot keep up calls [`Ctx::pause_supplies`]; the
/// supplies of its train ([`is_supply`](Cog::is_supply) true, not yet finishing) get
/// [`pause`](Cog::pause) once, and [`resume`](Cog::resume) once no cog of the train wants
/// a pause any more. Both are requests to stop and restart injecting: data already in
/// the train keep flowing, and what a paused supply still emits is still processed.
///
/// **Shutdown: `finish`, then `done`.** When the escapement shuts down (signal,
/// [`Ctx::shutdown`], [`ShutdownHandle`](crate::ShutdownHandle), or every supply
/// [`exhausted`](Ctx::exhausted)), each train calls [`finish`](Cog::finish) on its cogs in
/// order, cog *k* only once every cog before it has finished and has no job in flight,
/// so what an upstream cog emits while finishing still reaches it. After `finish`
/// returns, the escapement releases the cog's timers, immediate calls, watches and
/// signals, drops its events and refuses new bindings and jobs; broadcasts and results of
/// jobs already submitted still arrive. A cog that needs longer (a drain flushing to a
/// slow peer) calls [`Ctx::linger`] in `finish`, keeps its bindings and calls
/// [`Ctx::finished`] later; the cogs after it wait. Once every train has finished, every
/// cog gets [`done`](Cog::done): the last call. A cog that fails to start, a forced stop
/// (second signal, [`Options::stop_timeout`](crate::Options::stop_timeout)) and a failed
/// poll skip `finish` and go straight to `done`.
///
/// # Example
///
/// A supply that counts to five, one datum per turn of the loop, and a drain that sums
/// what reaches it and acknowledges each datum; the supply hears every acknowledgement,
/// then the run ends because its only supply is exhausted.
///
/// ```
/// use std::cell::{Cell, RefCell};
/// use std::rc::Rc;
///
/// use deadbeat::prelude::*;
///
/// type D = (EventId, u64);
///
/// struct Count {
///     next: u64,
///     last: u64,
///     acked: Rc<RefCell<Vec<EventId>>>,
/// }
///
/// impl Cog<D> for Count {
///     fn name(&self) -> &str {
///         "count"
///     }
///     fn is_supply(&self) -> bool {
///         true
///     }
///     fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
///         cx.enqueue(0); // first call in the loop's first turn
///         Ok(())
///     }
///     fn wake(&mut self, _local: Local, _why: Wake<'_>, out: &mut Out<D>, cx: &mut Ctx) {
///         out.push((cx.new_event_id(), self.next));
///         self.next += 1;
///         if self.next > self.last {
///             cx.exhausted(); // nothing more: the run ends once the data are through
///         } else {
///             cx.enqueue(0);
///         }
///     }
///     fn event_done(&mut self, ids: &[EventId], _cx: &mut Ctx) {
///         self.acked.borrow_mut().extend_from_slice(ids);
///     }
/// }
///
/// struct Sum(Rc<Cell<u64>>);
///
/// impl Cog<D> for Sum {
///     fn name(&self) -> &str {
///         "sum"
///     }
///     fn process(&mut self, (id, n): D, _out: &mut Out<D>, cx: &mut Ctx) {
///         self.0.set(self.0.get() + n);
///         cx.event_done(id); // written out for good: the supply may forget it
///     }
/// }
///
/// let acked = Rc::new(RefCell::new(Vec::new()));
/// let total = Rc::new(Cell::new(0));
/// let mut esc = Escapement::new()?;
/// let count = Count { next: 1, last: 5, acked: Rc::clone(&acked) };
/// esc.add_train(Train::new("main").cog(count).cog(Sum(Rc::clone(&total))))?;
/// esc.run()?;
/// assert_eq!(total.get(), 15);
/// assert_eq!(acked.borrow().len(), 5);
/// # Ok::<(), BoxError>(())
/// ```
///
/// # Pitfalls
///
/// - **Blocking.** A callback that blocks (a blocking read or write, `sleep`, a lock held
///   by another thread, a slow computation) stops every train on the escapement. Register
///   non-blocking sources ([`Ctx::register`]) and move slow work to [`Ctx::submit`].
/// - **Readiness is edge-triggered.** After [`Wake::Ready`], read or write until
///   `WouldBlock`, or no further wake comes for what is left. A cog that stops early (to
///   share the loop) asks for a [`Wake::Immediate`] with [`Ctx::enqueue`] to go on.
/// - **Holding data across `finish`.** What a cog still holds when `finish` returns is
///   never emitted: emit it in `finish` (or linger and emit it later). Its wakes stop after
///   `finish`, so a timer meant to flush it later does not fire.
/// - **Forgetting to acknowledge.** A cog that drops a datum for good and does not call
///   [`Ctx::event_done`] with its id makes the supply that sent it wait for it: a
///   checkpointing supply then holds its checkpoint back forever. Count it with
///   [`Out::count_dropped`] too.
/// - **Forgetting to release bindings.** The escapement releases timers, immediate calls,
///   watches and signals after `finish`, but file descriptors are the cog's: deregister
///   and close them in `finish` or `done`, or they stay open (their events are ignored).
/// - **Leaving data in a batch.** An overridden [`process_batch`](Cog::process_batch)
///   must drain `batch`: the train clears it afterwards, and what is left is lost
///   without being counted.
/// - **Binding or submitting late.** New bindings are refused (an error, no panic) from
///   `finish` on, jobs once `finish` has returned, both in `done`; a cog that called
///   [`Ctx::linger`] may still do both until [`Ctx::finished`]. Handle the `Err` instead
///   of unwrapping it.
/// - **Treating every `event_done` id as one's own.** Acknowledgements are broadcast to
///   every cog: ignore ids you did not hand out.
pub trait Cog<D>: 'static {
    /// Name used in logs, errors and counters (e.g. the config's cog type).
    fn name(&self) -> &str;

    /// Whether this cog injects data of its own (it then receives [`pause`](Cog::pause) /
    /// [`resume`](Cog::resume) and takes part in exhaustion: the escapement shuts down
    /// once every supply has called [`Ctx::exhausted`]).
    fn is_supply(&self) -> bool {
        false
    }

    /// Called once before the loop runs: bind sockets, timers, watches, signals.
    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let _ = cx;
        Ok(())
    }

    /// Takes one datum from the previous cog and emits none, one or many.
    fn process(&mut self, d: D, out: &mut Out<D>, cx: &mut Ctx) {
        let _ = cx;
        out.push(d);
    }

    /// Takes a whole batch (and must leave `batch` empty). The default calls
    /// [`process`](Cog::process) per datum; a cog overrides it when a batch is cheaper
    /// to handle at once (one write call for many lines, say).
    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        for d in batch.drain(..) {
            self.process(d, out, cx);
        }
    }

    /// A binding of this cog fired; `local` is the cog's own token for it.
    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<D>, cx: &mut Ctx) {
        let _ = (local, why, out, cx);
    }

    /// A worker job submitted by this cog finished; jobs come back in submission order.
    fn job_done(&mut self, job: JobId, result: JobResult, out: &mut Out<D>, cx: &mut Ctx) {
        let _ = (job, result, out, cx);
    }

    /// Broadcast: these data were written out for good (acknowledged by a drain).
    fn event_done(&mut self, ids: &[EventId], cx: &mut Ctx) {
        let _ = (ids, cx);
    }

    /// Broadcast: datum `old` now travels as `new` (a cog merged or split data).
    fn event_rename(&mut self, old: EventId, new: EventId, cx: &mut Ctx) {
        let _ = (old, new, cx);
    }

    /// Stop injecting data until [`resume`](Cog::resume) (backpressure); supplies only.
    fn pause(&mut self, cx: &mut Ctx) {
        let _ = cx;
    }

    /// Injecting data may go on.
    fn resume(&mut self, cx: &mut Ctx) {
        let _ = cx;
    }

    /// Broadcast: reopen files and connections (SIGHUP in the daemon).
    fn reopen(&mut self, cx: &mut Ctx) {
        let _ = cx;
    }

    /// Shutdown, in train order once everything upstream is idle: flush, emit what is
    /// held, release bindings. Jobs submitted until now (also here) still come back and
    /// cogs downstream wait for them. Afterwards the escapement refuses new bindings and
    /// jobs and drops events of this cog, unless it called [`Ctx::linger`] here to finish
    /// asynchronously.
    fn finish(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        let _ = (out, cx);
    }

    /// Last call, after every cog of every train has finished: release everything.
    fn done(&mut self, cx: &mut Ctx) {
        let _ = cx;
    }

    /// Reports what a status shows beyond the counters: a supply's sources with their
    /// offsets, the keys a stateful cog holds, bounded buffers. Called only when a status
    /// is asked for, never per datum; the default reports nothing.
    fn inspect(&self, into: &mut Inspection) {
        let _ = into;
    }

    /// Rollback: makes a supply read `to.source` again from `to.to`, returning the byte
    /// offset reading resumes at. Called with the supply paused (it is resumed after the
    /// call); what was handed out before still gets acknowledged, and a checkpoint follows
    /// the new position once it is acknowledged. The default refuses.
    fn rewind(&mut self, to: &Rewind, cx: &mut Ctx) -> Result<u64, RewindError> {
        let _ = (to, cx);
        Err(RewindError::Unsupported(format!(
            "{} cannot read its input again",
            self.name()
        )))
    }
}

impl<D: 'static> std::fmt::Debug for dyn Cog<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cog({})", self.name())
    }
}

/// `v.push(x)`, but stored straight into place when there is room. With `push`, the
/// possible call to grow the vector comes between building `x` and storing it, so the
/// compiler builds `x` on the stack with narrow stores and copies it with wide loads,
/// which stall: the CPU cannot forward a load from several smaller stores (see "Store
/// forwarding" in `docs/architecture.md`).
#[inline(always)]
pub(crate) fn push_in_place<T>(v: &mut Vec<T>, x: T) {
    let len = v.len();
    if len < v.capacity() {
        // SAFETY: there is room for one more element; it is written before the length
        // covers it, and nothing in between can panic.
        unsafe {
            v.as_mut_ptr().add(len).write(x);
            v.set_len(len + 1);
        }
    } else {
        v.push(x);
    }
}

#[cfg(test)]
mod tests {
    use super::Out;

    /// Multiplies odd numbers by ten; even ones fail and are emitted negated.
    fn run(batch: Vec<i64>, already_out: &[i64]) -> (Vec<i64>, Vec<i64>) {
        let mut batch = batch;
        let mut out = Out::default();
        out.extend(already_out.iter().copied());
        let mut failures = Vec::new();
        out.change_each(
            &mut batch,
            |d: &mut i64| {
                if *d % 2 == 0 {
                    return Err(*d);
                }
                *d *= 10;
                Ok(())
            },
            |d, e, out| {
                assert_eq!(d, e, "a failed datum comes back unchanged");
                failures.push(d);
                out.push(-d);
            },
        );
        assert!(batch.is_empty(), "the batch is left empty");
        (out.buf, failures)
    }

    #[test]
    fn changes_in_place_keep_order_and_route_failures() {
        assert_eq!(run(vec![1, 3, 5], &[]), (vec![10, 30, 50], vec![]));
        assert_eq!(run(vec![1, 3], &[7]), (vec![7, 10, 30], vec![]));
        assert_eq!(
            run(vec![2, 1, 4, 3, 6], &[]),
            (vec![-2, 10, -4, 30, -6], vec![2, 4, 6])
        );
        assert_eq!(
            run(vec![1, 3, 4, 5], &[9]),
            (vec![9, 10, 30, -4, 50], vec![4])
        );
        assert_eq!(run(vec![], &[]), (vec![], vec![]));
    }
}
