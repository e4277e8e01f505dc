//! The escapement: one single-threaded event loop per process, on `mio::Poll`.
//!
//! It drives five kinds of events, each bound to a cog and a cog-local token
//! ([`Local`]): immediate calls, file-descriptor readiness, timers, inotify watches and
//! signals; plus results of worker jobs, which come back through a `mio::Waker` and are
//! handed to the submitting cog in submission order.
//!
//! The escapement owns the trains (and through them the cogs) and a separate [`Core`]
//! with the registry, timers, signals, watches and jobs. A cog's callback receives a
//! [`Ctx`] that borrows the core only, so cogs bind events without shared ownership.
//!
//! The files follow those parts: this one holds the [`Escapement`] (trains, feeds, the run
//! loop, shutdown) and the token layout; `core` the [`Core`] and what it keeps per cog;
//! `ctx` the [`Ctx`]; `timers`, `signals`, `inotify` and `jobs` one kind of event each:
//! the `Ctx` methods that bind it, the core's bookkeeping and the loop's delivery.

use std::ffi::OsString;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ::inotify::{EventMask, Inotify, WatchDescriptor};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use slog::{Logger, o};

use crate::engine::cog::Wake;
use crate::engine::cog::{BoxError, EventId, JobId, JobResult, Local};
use crate::engine::train::{Driven, Train, TrainMetrics};

mod core;
mod ctx;
mod detached;
mod inotify;
mod jobs;
mod service;
mod signals;
mod timers;

pub(crate) use self::core::{Broadcast, Phase, Slot};
pub use self::core::{Core, Notice};
pub use self::ctx::Ctx;
pub use self::detached::{Detached, Effects};
pub use self::jobs::Completion;
pub use self::service::{CogState, Service, ServiceCx};
pub use self::timers::TimerId;

use self::jobs::Shared;

const _: () = assert!(
    usize::BITS == 64,
    "tokens pack train, cog and local into 64 bits"
);

const WAKER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
const INOTIFY: Token = Token(usize::MAX - 2);
/// Train indices stay below this so cog tokens never collide with the reserved ones.
const MAX_TRAINS: usize = 0xFFFF;
const MAX_COGS: usize = 0x1_0000;

/// Which cog a binding belongs to: train index and cog index within the train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Handle {
    pub(crate) train: u16,
    pub(crate) cog: u16,
}

impl Handle {
    fn token(self, local: Local) -> Token {
        Token(((self.train as usize) << 48) | ((self.cog as usize) << 32) | local as usize)
    }

    fn from_token(t: Token) -> (Handle, Local) {
        let h = Handle {
            train: (t.0 >> 48) as u16,
            cog: (t.0 >> 32) as u16,
        };
        (h, t.0 as u32)
    }
}

/// The address of a cog in a running escapement (see [`Ctx::me`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CogRef(Handle);

/// Settings of an [`Escapement`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Use inotify when the kernel offers it; `false` makes [`Ctx::has_inotify`] answer
    /// `false`, so cogs take their polling fallback (useful for tests and odd filesystems).
    pub inotify: bool,
    /// Worker threads for [`Ctx::submit`]; 0 means one per core. Started on first use.
    pub workers: usize,
    /// Start a graceful shutdown on SIGTERM and SIGINT unless a cog binds them itself; a
    /// second one during the shutdown stops at once ([`Escapement::run`] returns an error).
    pub shutdown_on_signals: bool,
    /// Broadcast [`Cog::reopen`](crate::engine::cog::Cog::reopen) on SIGHUP and log every cog's counters on SIGUSR1, unless a
    /// cog binds those signals itself.
    pub control_signals: bool,
    /// Where the escapement logs; discarded by default.
    pub logger: Option<Logger>,
    /// How many readiness events one `poll` call may return.
    pub events_capacity: usize,
    /// Longest a shutdown may take: once it has run this long, the escapement stops as on
    /// a second signal ([`Escapement::run`] returns an error; what unfinished cogs held is
    /// not written, and drains log how much in `done`). `None` (the default here) waits for
    /// every cog to finish; the daemon sets it from `[engine] stop_timeout`, 30 s unless
    /// configured (`"0s"` there means no limit).
    pub stop_timeout: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            inotify: true,
            workers: 0,
            shutdown_on_signals: true,
            control_signals: false,
            logger: None,
            events_capacity: 1024,
            stop_timeout: None,
        }
    }
}

/// Stops a running escapement from any thread: a graceful shutdown, as on SIGTERM.
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Starts the graceful shutdown (finish, then done) and wakes the loop.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShutdownHandle")
    }
}

/// The event loop: owns the trains and drives them until they have all finished.
///
/// # Contract
///
/// An escapement is built ([`new`](Escapement::new), [`with_options`](Escapement::with_options)),
/// given its trains ([`add_train`](Escapement::add_train)) and the feeds between them
/// ([`add_feed`](Escapement::add_feed)), then run once ([`run`](Escapement::run)). `run`
/// calls every cog's `start` (unless [`start`](Escapement::start) did, so a daemon can
/// bind its sockets and then drop privileges), then turns the loop on the calling thread
/// until every train has finished and every cog has received `done`.
///
/// One turn waits for events (not at all when immediate calls are queued; at most until
/// the next timer), then delivers, in this order: readiness events as the kernel reported
/// them, with worker results, signals and inotify events among them; due timers; the
/// immediate calls queued before that step (calls queued during it wait a turn, so a busy
/// cog cannot starve the others). After every callback the escapement carries what the
/// cog emitted down its train and then delivers the broadcasts and pause changes it asked
/// for.
///
/// The shutdown starts on SIGTERM or SIGINT (with [`Options::shutdown_on_signals`], unless
/// a cog binds them), from a [`ShutdownHandle`], from [`Ctx::shutdown`], or once every
/// supply of every train has called [`Ctx::exhausted`]. Each train then finishes its cogs
/// in order (see [`Cog::finish`](crate::Cog::finish)); a train fed by others starts
/// finishing once they all have. `run` returns `Ok` when everything finished and no cog
/// marked the run failed ([`Ctx::fail`]); it returns an error when a cog failed to start,
/// polling failed, a second signal or [`Options::stop_timeout`] stopped the shutdown, or
/// a cog marked the run failed.
///
/// # Example
///
/// Two trains on one loop: each counts to three and sums what it counted; the run ends
/// when both supplies are exhausted, and the counters show what went through each cog.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
///
/// use deadbeat::prelude::*;
///
/// struct Count(u64);
///
/// impl Cog<u64> for Count {
///     fn name(&self) -> &str {
///         "count"
///     }
///     fn is_supply(&self) -> bool {
///         true
///     }
///     fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
///         cx.enqueue(0);
///         Ok(())
///     }
///     fn wake(&mut self, _local: Local, _why: Wake<'_>, out: &mut Out<u64>, cx: &mut Ctx) {
///         self.0 += 1;
///         out.push(self.0);
///         if self.0 == 3 {
///             cx.exhausted();
///         } else {
///             cx.enqueue(0);
///         }
///     }
/// }
///
/// struct Sum(Rc<Cell<u64>>);
///
/// impl Cog<u64> for Sum {
///     fn name(&self) -> &str {
///         "sum"
///     }
///     fn process(&mut self, n: u64, _out: &mut Out<u64>, _cx: &mut Ctx) {
///         self.0.set(self.0.get() + n);
///     }
/// }
///
/// let (a, b) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
/// let mut esc = Escapement::with_options(Options {
///     shutdown_on_signals: false, // this program keeps SIGTERM's default
///     ..Options::default()
/// })?;
/// esc.add_train(Train::new("a").cog(Count(0)).cog(Sum(Rc::clone(&a))))?;
/// esc.add_train(Train::new("b").cog(Count(0)).cog(Sum(Rc::clone(&b))))?;
/// esc.run()?;
/// assert_eq!((a.get(), b.get()), (6, 6));
/// let metrics = esc.metrics();
/// assert_eq!(metrics[1].cogs[1].id, "sum#2");
/// assert_eq!(metrics[1].cogs[1].data_in, 3);
/// # Ok::<(), BoxError>(())
/// ```
///
/// # Pitfalls
///
/// - **No supply, no end.** Exhaustion ends a run only when there is at least one
///   supply ([`Cog::is_supply`](crate::Cog::is_supply)); a loop of cogs that are not
///   supplies runs until something shuts it down.
/// - **A shutdown that never ends.** A cog that lingers for a peer that never comes
///   back holds the shutdown; [`Options::stop_timeout`] is `None` by default, so set it
///   (the daemon does) or keep a [`ShutdownHandle`] and a second signal in mind.
/// - **Undeclared feeds.** A train that hands data to another through a
///   [`Mailbox`](crate::engine::mailbox::Mailbox) must be declared with
///   [`add_feed`](Escapement::add_feed), or the receiving train may finish before what
///   the sender emits while finishing reaches it.
/// - **Process-wide signals.** Signal handlers belong to the process: with the defaults,
///   starting an escapement catches SIGTERM and SIGINT (and SIGHUP and SIGUSR1 with
///   [`Options::control_signals`]) for the whole process, and a handler cannot be
///   uninstalled safely (see [`Ctx::unsignal`]). A library or test that keeps the
///   program's own handling sets [`Options::shutdown_on_signals`] to `false`.
/// - **One thread.** The escapement and its cogs stay on the thread that built them
///   (it is not `Send`); other threads reach it through a [`ShutdownHandle`], cogs'
///   worker jobs through [`Ctx::submit`].
/// - **Once.** Trains are added before the start; `start` and `run` each succeed once.
pub struct Escapement {
    core: Core,
    trains: Vec<Box<dyn Driven>>,
    events: Events,
    notice_buf: Vec<Notice>,
    ids_buf: Vec<EventId>,
    inotify_buf: Vec<u8>,
    inotify_events: Vec<(WatchDescriptor, EventMask, u32, Option<OsString>)>,
    targets: Vec<(Handle, Local)>,
    job_buf: Vec<(Handle, JobId, JobResult)>,
    due_timers: Vec<(Instant, u64)>,
    reopen_hooks: Vec<Box<dyn FnMut()>>,
    /// Driven beside the trains (see [`Escapement::set_service`]).
    service: Option<Box<dyn Service>>,
    /// When the service asked for its next [`Service::tick`].
    service_wake: Option<Instant>,
    /// `(from, to)`: train `from` hands data to train `to`.
    feeds: Vec<(usize, usize)>,
    trains_finished: Vec<bool>,
    /// A second SIGTERM/SIGINT arrived during the shutdown.
    forced: bool,
    /// When the shutdown must be over, with [`Options::stop_timeout`].
    stop_deadline: Option<Instant>,
    started: bool,
    ran: bool,
}

impl std::fmt::Debug for Escapement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Escapement")
            .field("core", &self.core)
            .field("trains", &self.trains.len())
            .finish()
    }
}

impl Escapement {
    /// An escapement with default [`Options`].
    pub fn new() -> io::Result<Self> {
        Self::with_options(Options::default())
    }

    /// An escapement with the given options.
    pub fn with_options(options: Options) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let logger = options
            .logger
            .clone()
            .unwrap_or_else(|| Logger::root(slog::Discard, o!()));
        let inotify = if options.inotify {
            match Inotify::init() {
                Ok(ino) => {
                    use std::os::fd::AsRawFd;
                    let fd = ino.as_raw_fd();
                    poll.registry().register(
                        &mut mio::unix::SourceFd(&fd),
                        INOTIFY,
                        Interest::READABLE,
                    )?;
                    Some(ino)
                }
                Err(e) => {
                    slog::warn!(logger, "inotify unavailable, cogs fall back to polling"; "error" => %e);
                    None
                }
            }
        } else {
            None
        };
        let core = Core::new(poll, waker, inotify, 1, logger, options, false);
        let cap = core.options.events_capacity.max(16);
        Ok(Escapement {
            core,
            trains: Vec::new(),
            events: Events::with_capacity(cap),
            notice_buf: Vec::new(),
            ids_buf: Vec::new(),
            inotify_buf: vec![0; 64 * 1024],
            inotify_events: Vec::new(),
            targets: Vec::new(),
            job_buf: Vec::new(),
            due_timers: Vec::new(),
            reopen_hooks: Vec::new(),
            service: None,
            service_wake: None,
            feeds: Vec::new(),
            trains_finished: Vec::new(),
            forced: false,
            stop_deadline: None,
            started: false,
            ran: false,
        })
    }

    /// Whether inotify is in use (see [`Options::inotify`]).
    pub fn has_inotify(&self) -> bool {
        self.core.inotify.is_some()
    }

    /// Adds a train; returns its index. Trains run side by side on this one loop.
    pub fn add_train<D: 'static>(&mut self, train: Train<D>) -> Result<usize, BoxError> {
        if self.started {
            return Err("trains cannot be added to a running escapement".into());
        }
        if self.trains.len() >= MAX_TRAINS {
            return Err(format!("too many trains (at most {MAX_TRAINS})").into());
        }
        if train.len() >= MAX_COGS {
            return Err(format!(
                "train {:?} has too many cogs (at most {})",
                train.name(),
                MAX_COGS - 1
            )
            .into());
        }
        let index = self.trains.len();
        let mut train = train;
        train.attach(index as u16);
        self.core.slots.push(train.slots(&self.core.logger));
        self.trains.push(Box::new(train));
        self.trains_finished.push(false);
        Ok(index)
    }

    /// Declares that train `from` hands data to train `to` (through a
    /// [`Mailbox`](crate::engine::mailbox::Mailbox)): `to` starts finishing only after `from` has
    /// finished. Feeds may not form a cycle, or neither train could finish first.
    pub fn add_feed(&mut self, from: usize, to: usize) -> Result<(), BoxError> {
        let n = self.trains.len();
        if from >= n || to >= n {
            return Err(format!("feed {from} -> {to}: no such train").into());
        }
        if self.feeds.contains(&(from, to)) {
            return Ok(());
        }
        // A cycle exists if `from` is already reachable from `to`.
        let mut seen = vec![false; n];
        let mut stack = vec![to];
        while let Some(t) = stack.pop() {
            if t == from {
                return Err(format!(
                    "trains {from} and {to} would feed each other (directly or through others): \
                     neither could finish first"
                )
                .into());
            }
            if !std::mem::replace(&mut seen[t], true) {
                stack.extend(
                    self.feeds
                        .iter()
                        .filter(|(f, _)| *f == t)
                        .map(|(_, to)| *to),
                );
            }
        }
        self.feeds.push((from, to));
        Ok(())
    }

    /// A handle that stops the loop gracefully from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.core.shared),
            waker: Arc::clone(&self.core.waker),
        }
    }

    /// The counters of every cog of every train.
    pub fn metrics(&self) -> Vec<TrainMetrics> {
        self.trains.iter().map(|t| t.metrics()).collect()
    }

    /// Registers a function called on every reopen broadcast (SIGHUP with
    /// [`Options::control_signals`], or [`Ctx::reopen_all`]), e.g. to reopen a log file.
    pub fn on_reopen(&mut self, f: impl FnMut() + 'static) {
        self.reopen_hooks.push(Box::new(f));
    }

    /// Installs the [`Service`] driven beside the trains (a control server, say),
    /// replacing an earlier one; before the start only.
    pub fn set_service(&mut self, service: Box<dyn Service>) -> Result<(), BoxError> {
        if self.started {
            return Err("a service cannot be set on a running escapement".into());
        }
        self.service = Some(service);
        Ok(())
    }

    /// Calls the service, if any, with a [`ServiceCx`], then delivers the pause changes
    /// it asked for.
    fn with_service(&mut self, f: impl FnOnce(&mut dyn Service, &mut ServiceCx<'_>)) {
        let Some(service) = self.service.as_mut() else {
            return;
        };
        let mut cx = ServiceCx {
            core: &mut self.core,
            trains: &mut self.trains,
            wake: &mut self.service_wake,
        };
        f(service.as_mut(), &mut cx);
        self.settle();
    }

    /// Starts every cog (they bind sockets, timers, watches) without running the loop yet;
    /// a daemon drops privileges between this and [`run`](Escapement::run). On error every
    /// cog receives `done`.
    pub fn start(&mut self) -> Result<(), BoxError> {
        if self.started {
            return Err("an escapement starts once".into());
        }
        self.started = true;
        let result = self.start_cogs();
        if result.is_err() {
            // Every cog got `done` (or none started): a loop run now would wait forever
            // for events nobody is bound to.
            self.ran = true;
        }
        result
    }

    fn start_cogs(&mut self) -> Result<(), BoxError> {
        self.core.now = Instant::now();
        if self.core.options.shutdown_on_signals {
            self.core.ensure_signals(SIGTERM)?;
            self.core.ensure_signals(SIGINT)?;
        }
        if self.core.options.control_signals {
            self.core.ensure_signals(SIGHUP)?;
            self.core.ensure_signals(SIGUSR1)?;
        }
        if let Some(service) = self.service.as_mut() {
            let mut cx = ServiceCx {
                core: &mut self.core,
                trains: &mut self.trains,
                wake: &mut self.service_wake,
            };
            service.start(&mut cx)?;
        }
        for t in 0..self.trains.len() {
            if let Err(e) = self.trains[t].start(&mut self.core) {
                for tr in self.trains.iter_mut() {
                    tr.done(&mut self.core);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Starts every cog unless [`start`](Escapement::start) did, then runs the loop until
    /// every train has finished and every cog has received `done`. Returns an error if a
    /// cog fails to start, polling fails, the stop was forced, or a cog marked the run
    /// failed ([`Ctx::fail`]).
    pub fn run(&mut self) -> Result<(), BoxError> {
        if self.ran {
            return Err("an escapement runs once".into());
        }
        if !self.started {
            self.start()?;
        }
        self.ran = true;
        let mut result = self.turn_until_done();
        if result.is_err() {
            for tr in self.trains.iter_mut() {
                tr.done(&mut self.core);
            }
        }
        if result.is_ok() && !self.core.failures.is_empty() {
            for f in &self.core.failures {
                slog::error!(self.core.logger, "the run failed"; "reason" => f);
            }
            result = Err(self.core.failures.join("; ").into());
        }
        // Join the workers now rather than when the escapement is dropped.
        self.core.pool = None;
        result
    }

    fn turn_until_done(&mut self) -> Result<(), BoxError> {
        loop {
            self.settle();
            if !self.core.shutdown && self.all_supplies_exhausted() {
                slog::debug!(self.core.logger, "every supply is exhausted: shutting down");
                self.core.shutdown = true;
            }
            if self.core.shutdown && self.step_shutdown() {
                return Ok(());
            }
            if self.core.shutdown && self.stop_deadline.is_none() {
                self.stop_deadline = self.core.options.stop_timeout.map(|t| Instant::now() + t);
            }
            if self.stop_deadline.is_some_and(|d| Instant::now() >= d) {
                slog::warn!(self.core.logger, "stop_timeout passed: stopping without finishing";
                    "stop_timeout" => ?self.core.options.stop_timeout);
                return Err("stop_timeout passed before every cog had finished: \
                            data held by unfinished cogs were not written"
                    .into());
            }
            if self.forced {
                // `run` gives every cog `done`: bindings are released, nothing more flows.
                return Err("stopped by a second signal before every cog had finished: \
                            data held by unfinished cogs were not written"
                    .into());
            }
            self.turn()?;
        }
    }

    fn all_supplies_exhausted(&self) -> bool {
        let mut supplies = self
            .core
            .slots
            .iter()
            .flatten()
            .filter(|s| s.supply)
            .peekable();
        supplies.peek().is_some() && supplies.all(|s| s.exhausted)
    }

    /// Moves every train's finish as far as it can go; true once all have finished and
    /// `done` went to every cog.
    fn step_shutdown(&mut self) -> bool {
        let mut all = true;
        for t in 0..self.trains.len() {
            if self.trains_finished[t] {
                continue;
            }
            // A train fed by others starts finishing once they all have: what they hand
            // on while finishing still reaches it.
            let feeders_finished = self
                .feeds
                .iter()
                .filter(|(_, to)| *to == t)
                .all(|(from, _)| self.trains_finished[*from]);
            if feeders_finished && self.trains[t].finish_step(&mut self.core) {
                self.trains_finished[t] = true;
            } else {
                all = false;
            }
            self.settle();
        }
        if all {
            for tr in self.trains.iter_mut() {
                tr.done(&mut self.core);
            }
            self.settle();
        }
        all
    }

    /// One turn: wait for events (not at all if immediate calls are queued), then deliver
    /// readiness, timers, signals, inotify, job results and immediate calls.
    fn turn(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let timeout = if !self.core.immediate.is_empty() {
            Some(Duration::ZERO)
        } else {
            let timer = self.next_deadline();
            [timer, self.stop_deadline, self.service_wake]
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.saturating_duration_since(now))
        };
        self.poll(timeout)?;
        self.core.now = Instant::now();

        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for ev in events.iter() {
            match ev.token() {
                WAKER => self.deliver_jobs(),
                SIGNALS => self.deliver_signals(),
                INOTIFY => self.deliver_inotify(),
                token => {
                    let (h, local) = Handle::from_token(token);
                    if self.is_live(h) {
                        self.trains[h.train as usize].wake(
                            h.cog,
                            local,
                            Wake::Ready(ev),
                            &mut self.core,
                        );
                        self.settle();
                    } else if service::is_service(h) {
                        self.with_service(|s, cx| s.ready(local, ev, cx));
                    }
                }
            }
        }
        events.clear();
        self.events = events;

        self.fire_timers();
        if self.service_wake.is_some_and(|at| at <= self.core.now) {
            self.service_wake = None;
            self.with_service(|s, cx| s.tick(cx));
        }
        let n = self.core.immediate.len();
        for _ in 0..n {
            let Some((h, local)) = self.core.immediate.pop_front() else {
                break;
            };
            self.core.immediate_set.remove(&(h, local));
            if self.is_live(h) {
                self.trains[h.train as usize].wake(h.cog, local, Wake::Immediate, &mut self.core);
                self.settle();
            }
        }
        if self.core.shared.stop.load(Ordering::SeqCst) {
            self.core.shutdown = true;
        }
        if std::mem::take(&mut self.core.metrics_requested) {
            self.log_metrics();
        }
        Ok(())
    }

    fn poll(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut timeout = timeout;
        loop {
            match self.core.poll.poll(&mut self.events, timeout) {
                Ok(()) => return Ok(()),
                // A signal landed: its self-pipe is now readable, so poll again at once.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn is_live(&self, h: Handle) -> bool {
        self.core
            .slots
            .get(h.train as usize)
            .and_then(|s| s.get(h.cog as usize))
            .is_some_and(|s| s.accepts_bindings())
    }

    /// Delivers queued broadcasts and pause changes until none are left.
    fn settle(&mut self) {
        while !self.core.notices.is_empty() || self.core.pause_dirty {
            std::mem::swap(&mut self.core.notices, &mut self.notice_buf);
            let mut notices = std::mem::take(&mut self.notice_buf);
            let mut i = 0;
            while i < notices.len() {
                match notices[i] {
                    Notice::Done(_) => {
                        self.ids_buf.clear();
                        while let Some(Notice::Done(id)) = notices.get(i) {
                            self.ids_buf.push(*id);
                            i += 1;
                        }
                        let ids = std::mem::take(&mut self.ids_buf);
                        for t in self.trains.iter_mut() {
                            t.broadcast(&Broadcast::Done(&ids), &mut self.core);
                        }
                        self.ids_buf = ids;
                        continue;
                    }
                    Notice::Rename(old, new) => {
                        for t in self.trains.iter_mut() {
                            t.broadcast(&Broadcast::Rename(old, new), &mut self.core);
                        }
                    }
                    Notice::Reopen => {
                        for hook in self.reopen_hooks.iter_mut() {
                            hook();
                        }
                        for t in self.trains.iter_mut() {
                            t.broadcast(&Broadcast::Reopen, &mut self.core);
                        }
                    }
                }
                i += 1;
            }
            notices.clear();
            self.notice_buf = notices;
            if std::mem::take(&mut self.core.pause_dirty) {
                for (t, train) in self.trains.iter_mut().enumerate() {
                    let want = self.core.slots[t].iter().any(|s| s.wants_pause);
                    train.set_paused(want, &mut self.core);
                }
            }
        }
    }

    fn log_metrics(&self) {
        for t in self.metrics() {
            for c in &t.cogs {
                slog::info!(self.core.logger, "counters";
                    "train" => &t.name, "cog" => &c.id,
                    "in" => c.data_in, "out" => c.data_out, "dropped" => c.dropped,
                    "errors" => c.errors, "busy_ms" => c.busy.as_millis() as u64);
            }
        }
    }
}
