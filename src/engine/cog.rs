//! The [`Cog`] trait and what a cog receives and emits.

use std::any::Any;
use std::ffi::OsStr;

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
