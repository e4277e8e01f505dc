//! [`Detached`]: a train run outside the escapement, on a thread of its caller's choosing,
//! with a core of its own that binds nothing and delivers nothing.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mio::{Poll, Waker};
use slog::Logger;

use crate::engine::cog::{BoxError, EventId};
use crate::engine::train::{Driven, Train, TrainMetrics};

use super::core::{Core, Notice};
use super::{Options, WAKER};

/// Event ids handed out by detached trains come in blocks of this many, far above the ids
/// of the escapement (which counts up from 1), so they never collide with them or with
/// each other.
const ID_BLOCK: u64 = 1 << 40;
const FIRST_ID: EventId = 1 << 63;
static NEXT_BLOCK: AtomicU64 = AtomicU64::new(0);

/// What the cogs of a [`Detached`] train asked of the escapement while they ran: the
/// broadcasts (acknowledgements, renames, reopen) in the order they asked, the reasons
/// they marked the run failed, and whether they asked for the shutdown. The owner replays
/// them on the loop's thread ([`Ctx::event_done`](super::Ctx::event_done) and so on), so
/// the supplies hear them as if the cogs ran in the train.
#[derive(Debug, Default)]
pub struct Effects {
    /// Broadcasts, in order.
    pub notices: Vec<Notice>,
    /// Reasons given to [`Ctx::fail`](super::Ctx::fail).
    pub failures: Vec<String>,
    /// Whether a cog called [`Ctx::shutdown`](super::Ctx::shutdown).
    pub shutdown: bool,
}

/// A train run by hand outside the escapement, for a cog that runs a chain of transforms
/// on worker threads (`parallel`): it is built, started and driven on one thread (its cogs
/// need not be `Send`), batch by batch.
///
/// # Contract
///
/// Its cogs get the calls a train gives them (`start`, `process_batch` in train order,
/// `finish`, `done`) with a [`Ctx`](super::Ctx) on a core of its own. They may log,
/// acknowledge, rename, take fresh event ids (from a block of the process's id space that
/// no other train uses) and fail the run: [`take_effects`](Detached::take_effects) hands
/// these back. They get no broadcasts, no wakes and no job results: binding an event or
/// submitting a job is refused with an error, and a cog that asks for an immediate call in
/// `start` makes [`start`](Detached::start) fail. Pause requests are ignored. So only
/// transforms that need nothing but their data belong here.
///
/// # Example
///
/// ```
/// use deadbeat::engine::escapement::{Detached, Effects, Notice};
/// use deadbeat::prelude::*;
///
/// struct Halve;
/// impl Cog<u64> for Halve {
///     fn name(&self) -> &str {
///         "halve"
///     }
///     fn process(&mut self, n: u64, out: &mut Out<u64>, cx: &mut Ctx) {
///         if n % 2 == 0 {
///             out.push(n / 2);
///         } else {
///             out.count_dropped(1);
///             cx.event_done(n); // here the datum is its own id
///         }
///     }
/// }
///
/// let logger = slog::Logger::root(slog::Discard, slog::o!());
/// let mut t = Detached::new(Train::new("sub").cog(Halve), &logger)?;
/// t.start()?;
/// let mut batch = vec![2, 3, 4];
/// assert_eq!(t.process(&mut batch), (1, 0)); // one dropped, no errors
/// assert_eq!(batch, [1, 2]);
/// let mut effects = Effects::default();
/// t.take_effects(&mut effects);
/// assert_eq!(effects.notices, [Notice::Done(3)]);
/// t.done();
/// # Ok::<(), BoxError>(())
/// ```
pub struct Detached<D> {
    train: Train<D>,
    core: Core,
}

impl<D: 'static> std::fmt::Debug for Detached<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detached")
            .field("train", &self.train)
            .finish()
    }
}

impl<D: 'static> Detached<D> {
    /// `train`, detached; its cogs log through `logger`, each naming itself as `sub_cog`.
    pub fn new(train: Train<D>, logger: &Logger) -> io::Result<Self> {
        let mut train = train;
        train.attach(0);
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let block = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
        let options = Options {
            inotify: false,
            shutdown_on_signals: false,
            ..Options::default()
        };
        let first_id = FIRST_ID.saturating_add(block.saturating_mul(ID_BLOCK));
        let mut core = Core::new(poll, waker, None, first_id, logger.clone(), options, true);
        core.slots.push(train.detached_slots(logger));
        Ok(Detached { train, core })
    }

    /// Starts every cog; an error names the cog that failed, or that asked for an
    /// immediate call (which a detached train never makes).
    pub fn start(&mut self) -> Result<(), BoxError> {
        self.core.now = Instant::now();
        self.train.start(&mut self.core)?;
        if let Some((h, _)) = self.core.immediate.front() {
            return Err(format!(
                "cog {} asked to be woken, which it cannot be on a worker thread",
                self.train.cog_id(h.cog as usize).unwrap_or("?")
            )
            .into());
        }
        Ok(())
    }

    /// Moves `batch` through the train, leaving in it what the last cog emitted; returns
    /// how many data the cogs said they dropped and failed on.
    pub fn process(&mut self, batch: &mut Vec<D>) -> (u64, u64) {
        self.core.now = Instant::now();
        self.train.pass_through(batch, &mut self.core)
    }

    /// `finish` to every cog in train order; what they emit (and what it becomes down the
    /// train) is appended to `out`.
    pub fn finish(&mut self, out: &mut Vec<D>) {
        self.core.now = Instant::now();
        self.train.finish_through(out, &mut self.core);
    }

    /// `done` to every cog: the last call.
    pub fn done(&mut self) {
        self.train.done(&mut self.core);
    }

    /// Appends what the cogs asked of the escapement since the last call to `into`.
    pub fn take_effects(&mut self, into: &mut Effects) {
        into.notices.append(&mut self.core.notices);
        into.failures.append(&mut self.core.failures);
        into.shutdown |= std::mem::take(&mut self.core.shutdown);
    }

    /// The counters of every cog, as a train keeps them.
    pub fn metrics(&self) -> TrainMetrics {
        self.train.metrics()
    }
}
