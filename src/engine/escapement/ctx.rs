//! [`Ctx`]: what a cog's callback can do with the escapement. The bindings of each kind
//! of event (timers, signals, inotify, worker jobs) are in that kind's module.

use std::io;
use std::time::Instant;

use mio::Interest;
use mio::event::Source;
use slog::Logger;

use crate::engine::cog::{EventId, Local};

use super::core::{Core, Notice, Phase};
use super::{CogRef, Handle};

/// What a cog's callback can do with the escapement: bind and unbind events, submit jobs,
/// acknowledge data, ask for backpressure or shutdown.
///
/// It borrows the escapement's core for the duration of one callback.
///
/// # Contract
///
/// Every callback of a [`Cog`](crate::Cog) gets a `Ctx` for that cog: what it binds is
/// bound to that cog, and comes back to it as [`Cog::wake`](crate::Cog::wake) with the
/// [`Local`] it passed. A cog chooses its locals; the escapement never interprets them.
///
/// - **Immediate calls** ([`enqueue`](Ctx::enqueue), [`enqueue_cog`](Ctx::enqueue_cog)):
///   a [`Wake::Immediate`](crate::Wake::Immediate) in the loop's next turn, before it
///   waits for anything; asking twice before the call gives one call.
/// - **File descriptors** ([`register`](Ctx::register)): readiness, edge-triggered, as
///   [`Wake::Ready`](crate::Wake::Ready).
/// - **Timers** ([`timer_after`](Ctx::timer_after), [`timer_at`](Ctx::timer_at),
///   [`timer_every`](Ctx::timer_every)): [`Wake::Timer`](crate::Wake::Timer) with the
///   [`TimerId`](super::TimerId) they returned.
/// - **inotify** ([`watch`](Ctx::watch)) and **signals** ([`signal`](Ctx::signal)):
///   [`Wake::Inotify`](crate::Wake::Inotify), [`Wake::Signal`](crate::Wake::Signal).
/// - **Worker jobs** ([`submit`](Ctx::submit)): the closure runs on a worker thread, its
///   result comes back to [`Cog::job_done`](crate::Cog::job_done) on the loop's thread, in
///   submission order among this cog's jobs; a panic comes back as a
///   [`JobPanic`](crate::JobPanic).
/// - **Broadcasts** ([`event_done`](Ctx::event_done), [`event_rename`](Ctx::event_rename),
///   [`reopen_all`](Ctx::reopen_all)) and **pause requests**
///   ([`pause_supplies`](Ctx::pause_supplies)) are queued and delivered once the current
///   callback has returned, never from inside it.
/// - **Life cycle**: [`exhausted`](Ctx::exhausted) (a supply has nothing more),
///   [`shutdown`](Ctx::shutdown), [`fail`](Ctx::fail) (the run goes on and then returns
///   an error), [`linger`](Ctx::linger) and [`finished`](Ctx::finished) (a finish that
///   completes later).
///
/// Bindings are accepted while the cog runs and while it lingers; from `finish` on they
/// are refused with an error, and what the cog had bound (except its file descriptors) is
/// released once it has finished.
///
/// # Example
///
/// A supply that sets a periodic timer, hands a computation to a worker thread on each
/// tick and emits the results; after three it cancels the timer and is exhausted.
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use std::time::Duration;
///
/// use deadbeat::prelude::*;
///
/// const TICK: Local = 1;
///
/// #[derive(Default)]
/// struct Squares {
///     timer: Option<TimerId>,
///     submitted: u64,
///     received: u64,
/// }
///
/// impl Cog<u64> for Squares {
///     fn name(&self) -> &str {
///         "squares"
///     }
///     fn is_supply(&self) -> bool {
///         true
///     }
///     fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
///         self.timer = Some(cx.timer_every(Duration::from_millis(1), TICK)?);
///         Ok(())
///     }
///     fn wake(&mut self, local: Local, why: Wake<'_>, _out: &mut Out<u64>, cx: &mut Ctx) {
///         if local != TICK || !matches!(why, Wake::Timer(_)) {
///             return;
///         }
///         if self.submitted == 3 {
///             if let Some(id) = self.timer.take() {
///                 cx.cancel_timer(id);
///             }
///             return;
///         }
///         self.submitted += 1;
///         let n = self.submitted;
///         if let Err(e) = cx.submit(move || n * n) {
///             slog::error!(cx.logger(), "cannot submit"; "error" => %e);
///         }
///     }
///     fn job_done(&mut self, _job: JobId, result: JobResult, out: &mut Out<u64>, cx: &mut Ctx) {
///         match result.map(|o| o.downcast::<u64>()) {
///             Ok(Ok(square)) => out.push(*square),
///             _ => out.count_errors(1),
///         }
///         self.received += 1;
///         if self.received == 3 {
///             cx.exhausted();
///         }
///     }
/// }
///
/// struct Collect(Rc<RefCell<Vec<u64>>>);
///
/// impl Cog<u64> for Collect {
///     fn name(&self) -> &str {
///         "collect"
///     }
///     fn process(&mut self, n: u64, _out: &mut Out<u64>, _cx: &mut Ctx) {
///         self.0.borrow_mut().push(n);
///     }
/// }
///
/// let seen = Rc::new(RefCell::new(Vec::new()));
/// let mut esc = Escapement::new()?;
/// let train = Train::new("main").cog(Squares::default()).cog(Collect(Rc::clone(&seen)));
/// esc.add_train(train)?;
/// esc.run()?;
/// assert_eq!(*seen.borrow(), [1, 4, 9]);
/// # Ok::<(), BoxError>(())
/// ```
///
/// # Pitfalls
///
/// - **Keeping it.** A `Ctx` lives for one callback; a cog that needs to reach another
///   cog later keeps its [`CogRef`] ([`me`](Ctx::me)) and wakes it with
///   [`enqueue_cog`](Ctx::enqueue_cog).
/// - **Unwrapping a binding.** `register`, `watch`, `signal`, the timers and `submit`
///   fail once the cog is finishing or done, and for reasons of the system (a path that
///   cannot be watched, a signal that cannot be caught, no inotify); a cog reports the
///   error with its context instead of panicking.
/// - **Sharing state with a job.** A submitted closure runs on another thread: it takes
///   what it needs by value (`Send + 'static`) and hands its result back; the cog's own
///   state stays on the loop's thread.
/// - **Pausing without resuming.** Every [`pause_supplies`](Ctx::pause_supplies) needs a
///   [`resume_supplies`](Ctx::resume_supplies) from the same cog, or its train's supplies
///   stay paused; the pause reaches the supplies of the calling cog's train only.
/// - **Binding SIGTERM or SIGINT.** A cog that binds them takes over the escapement's
///   graceful shutdown on them; [`unsignal`](Ctx::unsignal) stops the delivery but cannot
///   uninstall the process's handler.
/// - **Acknowledging someone else's id, or twice.** [`event_done`](Ctx::event_done)
///   reaches every cog; an id belongs to the supply that made it with
///   [`new_event_id`](Ctx::new_event_id), and only the cog that ends a datum's journey
///   acknowledges it.
/// - **`now()` in a long callback.** [`now`](Ctx::now) is when the loop woke, the same
///   for every cog in that turn; the timers themselves count from `Instant::now()`.
pub struct Ctx<'a> {
    pub(super) core: &'a mut Core,
    pub(super) h: Handle,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("handle", &self.h).finish()
    }
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(core: &'a mut Core, h: Handle) -> Self {
        Ctx { core, h }
    }

    /// The time the loop woke up at; cheaper than `Instant::now()` and the same for every
    /// cog called in one turn.
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// The escapement's logger, naming the calling cog's train and id (`train`, `cog`) on
    /// every line.
    pub fn logger(&self) -> &Logger {
        &self.core.slot(self.h).logger
    }

    /// Index of the calling cog's train, in the order trains were added.
    pub fn train_index(&self) -> usize {
        self.h.train as usize
    }

    /// Index of the calling cog within its train.
    pub fn cog_index(&self) -> usize {
        self.h.cog as usize
    }

    // --- immediate events

    /// Asks for a [`Wake::Immediate`](crate::engine::cog::Wake::Immediate) call with `local` in the loop's next turn, before it
    /// waits for anything. Asking twice before the call still gives one call.
    pub fn enqueue(&mut self, local: Local) {
        if !self.core.slot(self.h).accepts_bindings() {
            return;
        }
        let item = (self.h, local);
        if self.core.immediate_set.insert(item) {
            self.core.immediate.push_back(item);
        }
    }

    /// This cog's address, for other cogs to wake it with [`enqueue_cog`](Ctx::enqueue_cog).
    pub fn me(&self) -> CogRef {
        CogRef(self.h)
    }

    /// Asks for a [`Wake::Immediate`](crate::engine::cog::Wake::Immediate) call of another cog (in any train), e.g. to tell the
    /// head of a train that data were handed to it. Ignored once that cog has finished.
    pub fn enqueue_cog(&mut self, target: CogRef, local: Local) {
        let Some(slot) = self
            .core
            .slots
            .get(target.0.train as usize)
            .and_then(|t| t.get(target.0.cog as usize))
        else {
            return;
        };
        let item = (target.0, local);
        if slot.accepts_bindings() && self.core.immediate_set.insert(item) {
            self.core.immediate.push_back(item);
        }
    }

    /// Cancels an [`enqueue`](Ctx::enqueue) not yet delivered.
    pub fn dequeue(&mut self, local: Local) {
        let item = (self.h, local);
        if self.core.immediate_set.remove(&item) {
            self.core.immediate.retain(|x| *x != item);
        }
    }

    // --- file descriptors

    /// Registers an event source (socket, pipe, any fd through `mio::unix::SourceFd`);
    /// readiness is edge-triggered and delivered as [`Wake::Ready`](crate::engine::cog::Wake::Ready) with `local`.
    pub fn register<S: Source + ?Sized>(
        &mut self,
        src: &mut S,
        local: Local,
        interest: Interest,
    ) -> io::Result<()> {
        self.core.check_binding(self.h)?;
        self.core
            .poll
            .registry()
            .register(src, self.h.token(local), interest)
    }

    /// Changes the interest or the local token of a registered source.
    pub fn reregister<S: Source + ?Sized>(
        &mut self,
        src: &mut S,
        local: Local,
        interest: Interest,
    ) -> io::Result<()> {
        self.core.check_binding(self.h)?;
        self.core
            .poll
            .registry()
            .reregister(src, self.h.token(local), interest)
    }

    /// Stops readiness events of a source. Always allowed, also after `finish`.
    pub fn deregister<S: Source + ?Sized>(&mut self, src: &mut S) -> io::Result<()> {
        self.core.poll.registry().deregister(src)
    }

    // --- acknowledgements and broadcasts

    /// A fresh id for a datum, unique in this process.
    pub fn new_event_id(&mut self) -> EventId {
        let id = self.core.next_event_id;
        self.core.next_event_id += 1;
        id
    }

    /// Acknowledges a datum: broadcast as [`Cog::event_done`](crate::engine::cog::Cog::event_done) to every cog once the
    /// current callback has returned.
    pub fn event_done(&mut self, id: EventId) {
        self.core.notices.push(Notice::Done(id));
    }

    /// Broadcasts [`Cog::event_rename`](crate::engine::cog::Cog::event_rename): datum `old` travels on as `new`.
    pub fn event_rename(&mut self, old: EventId, new: EventId) {
        self.core.notices.push(Notice::Rename(old, new));
    }

    /// Broadcasts [`Cog::reopen`](crate::engine::cog::Cog::reopen) to every cog (as SIGHUP does in the daemon).
    pub fn reopen_all(&mut self) {
        self.core.notices.push(Notice::Reopen);
    }

    /// Backpressure: asks for the supplies of this train to be paused until this cog calls
    /// [`resume_supplies`](Ctx::resume_supplies). Supplies resume when no cog wants a pause.
    pub fn pause_supplies(&mut self) {
        let h = self.h;
        let slot = self.core.slot_mut(h);
        if !slot.wants_pause {
            slot.wants_pause = true;
            self.core.pause_dirty = true;
        }
    }

    /// Withdraws this cog's [`pause_supplies`](Ctx::pause_supplies).
    pub fn resume_supplies(&mut self) {
        let h = self.h;
        let slot = self.core.slot_mut(h);
        if slot.wants_pause {
            slot.wants_pause = false;
            self.core.pause_dirty = true;
        }
    }

    // --- life cycle

    /// A supply says it has nothing more to inject. Once every supply of every train has
    /// said so, the escapement shuts down (batch mode).
    pub fn exhausted(&mut self) {
        let h = self.h;
        self.core.slot_mut(h).exhausted = true;
    }

    /// Marks the run failed for `reason` (an input that could not be read, say) without
    /// stopping it: the trains go on, and [`Escapement::run`](super::Escapement::run) returns an error naming every
    /// reason once they have finished (the daemon exits 1). `reason` says what failed and
    /// where (cog, path). A cog that cannot go on at all (its output closed for good)
    /// calls [`shutdown`](Ctx::shutdown) too.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.core.failures.push(reason.into());
    }

    /// Starts the graceful shutdown of the whole escapement.
    pub fn shutdown(&mut self) {
        self.core.shutdown = true;
    }

    /// Whether the shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.core.shutdown
    }

    /// Called in [`Cog::finish`](crate::engine::cog::Cog::finish): the cog keeps its bindings and completes its finish later
    /// with [`finished`](Ctx::finished) (a drain still flushing to a slow peer, say). Cogs
    /// downstream wait for it. Anywhere else it does nothing: cogs downstream may have
    /// finished already.
    pub fn linger(&mut self) {
        let h = self.h;
        if self.core.slot(h).phase == Phase::Finishing {
            self.core.slot_mut(h).phase = Phase::Lingering;
        }
    }

    /// Completes a finish that [`linger`](Ctx::linger) postponed; releases the bindings.
    pub fn finished(&mut self) {
        let h = self.h;
        if self.core.slot(h).phase == Phase::Lingering {
            self.core.set_phase(h, Phase::Finished);
        }
    }
}
