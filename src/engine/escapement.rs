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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use mio::event::Source;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slog::{Logger, o};

use crate::engine::cog::Wake;
use crate::engine::cog::{
    BoxError, EventId, InotifyEvent, JobId, JobOutput, JobPanic, JobResult, Local,
};
use crate::engine::train::{Driven, Train, TrainMetrics};

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

/// A timer set by a cog; cancel it with [`Ctx::cancel_timer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

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

/// Where a cog is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Inside its `finish` call: it may still submit jobs or [`Ctx::linger`], but binds
    /// nothing new.
    Finishing,
    /// `finish` was called and the cog asked to complete it later ([`Ctx::linger`]).
    Lingering,
    Finished,
    Done,
}

/// What the core keeps per cog.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) phase: Phase,
    pub(crate) supply: bool,
    exhausted: bool,
    pub(crate) wants_pause: bool,
    next_job: JobId,
    next_delivery: JobId,
    held: BTreeMap<JobId, JobResult>,
    /// The escapement's logger with the cog's train and id.
    logger: Logger,
}

impl Slot {
    pub(crate) fn new(supply: bool, logger: Logger) -> Self {
        Slot {
            logger,
            phase: Phase::Running,
            supply,
            exhausted: false,
            wants_pause: false,
            next_job: 0,
            next_delivery: 0,
            held: BTreeMap::new(),
        }
    }

    pub(crate) fn jobs_in_flight(&self) -> u64 {
        self.next_job - self.next_delivery
    }

    fn accepts_bindings(&self) -> bool {
        matches!(self.phase, Phase::Running | Phase::Lingering)
    }
}

/// A broadcast waiting to be delivered to every cog of every train.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Notice {
    Done(EventId),
    Rename(EventId, EventId),
    Reopen,
}

/// One broadcast as the trains deliver it: acknowledgements come in runs.
#[derive(Debug)]
pub(crate) enum Broadcast<'a> {
    Done(&'a [EventId]),
    Rename(EventId, EventId),
    Reopen,
}

struct TimerEntry {
    h: Handle,
    local: Local,
    period: Option<Duration>,
}

struct WatchSub {
    h: Handle,
    local: Local,
    mask: WatchMask,
}

type Job = Box<dyn FnOnce() -> JobOutput + Send>;

struct JobMsg {
    h: Handle,
    seq: JobId,
    job: Job,
}

/// State shared with worker threads and [`ShutdownHandle`]s.
struct Shared {
    finished_jobs: Mutex<Vec<(Handle, JobId, JobResult)>>,
    stop: AtomicBool,
}

struct Pool {
    tx: Option<mpsc::Sender<JobMsg>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(n: usize, shared: &Arc<Shared>, waker: &Arc<Waker>) -> io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<JobMsg>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rx = Arc::clone(&rx);
            let shared = Arc::clone(shared);
            let waker = Arc::clone(waker);
            let t = std::thread::Builder::new()
                .name(format!("deadbeat-worker-{i}"))
                .spawn(move || worker(&rx, &shared, &waker))?;
            threads.push(t);
        }
        Ok(Pool {
            tx: Some(tx),
            threads,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the channel ends every worker once the queue is empty.
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(rx: &Mutex<mpsc::Receiver<JobMsg>>, shared: &Shared, waker: &Waker) {
    loop {
        let msg = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(msg) = msg else { return };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(msg.job))
            .map_err(|p| JobPanic(panic_message(p.as_ref())));
        shared
            .finished_jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((msg.h, msg.seq, result));
        // A failed wake only delays delivery until the loop's next wakeup; nothing to do.
        let _ = waker.wake();
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
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

/// Everything the escapement owns but the cogs: what a [`Ctx`] borrows.
pub struct Core {
    poll: Poll,
    pub(crate) slots: Vec<Vec<Slot>>,
    immediate: VecDeque<(Handle, Local)>,
    /// What `immediate` holds, so asking twice stays one call without a scan of the queue
    /// (a listener with thousands of busy connections asks often).
    immediate_set: HashSet<(Handle, Local)>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_entries: HashMap<u64, TimerEntry>,
    next_timer: u64,
    signals: Option<Signals>,
    signal_subs: Vec<(i32, Handle, Local)>,
    inotify: Option<Inotify>,
    watch_subs: HashMap<WatchDescriptor, Vec<WatchSub>>,
    workers: usize,
    pool: Option<Pool>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
    pub(crate) notices: Vec<Notice>,
    pause_dirty: bool,
    shutdown: bool,
    /// Why the run failed although it ran to its end (see [`Ctx::fail`]).
    failures: Vec<String>,
    metrics_requested: bool,
    next_event_id: EventId,
    now: Instant,
    logger: Logger,
    options: Options,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("trains", &self.slots.len())
            .field("timers", &self.timer_entries.len())
            .field("shutdown", &self.shutdown)
            .finish()
    }
}

impl Core {
    fn slot(&self, h: Handle) -> &Slot {
        &self.slots[h.train as usize][h.cog as usize]
    }

    fn slot_mut(&mut self, h: Handle) -> &mut Slot {
        &mut self.slots[h.train as usize][h.cog as usize]
    }

    fn check_binding(&self, h: Handle) -> io::Result<()> {
        if self.slot(h).accepts_bindings() {
            Ok(())
        } else {
            Err(io::Error::other(
                "the cog has finished: the escapement binds nothing new for it",
            ))
        }
    }

    fn ensure_signals(&mut self, sig: i32) -> io::Result<()> {
        if signal_hook::consts::FORBIDDEN.contains(&sig) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("signal {sig} cannot be caught"),
            ));
        }
        match &self.signals {
            Some(s) => s.add_signal(sig),
            None => {
                let mut s = Signals::new([sig])?;
                self.poll
                    .registry()
                    .register(&mut s, SIGNALS, Interest::READABLE)?;
                self.signals = Some(s);
                Ok(())
            }
        }
    }

    fn add_timer(
        &mut self,
        h: Handle,
        at: Instant,
        local: Local,
        period: Option<Duration>,
    ) -> TimerId {
        let id = self.next_timer;
        self.next_timer += 1;
        self.timers.push(Reverse((at, id)));
        self.timer_entries
            .insert(id, TimerEntry { h, local, period });
        TimerId(id)
    }

    /// Cancelled timers stay in the heap until their deadline surfaces. A cog that re-arms
    /// a long timeout on every read (an idle timeout, say) would pile them up, so once they
    /// outnumber the live ones they go: amortised constant time per cancel.
    fn compact_timers(&mut self) {
        if self.timers.len() > 64 && self.timers.len() > 2 * self.timer_entries.len() {
            let live = &self.timer_entries;
            self.timers.retain(|Reverse((_, id))| live.contains_key(id));
        }
    }

    /// Drops every binding the core holds for a cog (its fds are the cog's to deregister;
    /// their events are ignored from now on).
    fn release(&mut self, h: Handle) {
        self.immediate.retain(|(x, _)| *x != h);
        self.immediate_set.retain(|(x, _)| *x != h);
        self.timer_entries.retain(|_, e| e.h != h);
        self.compact_timers();
        self.signal_subs.retain(|(_, x, _)| *x != h);
        let mut emptied = Vec::new();
        for (wd, subs) in self.watch_subs.iter_mut() {
            subs.retain(|s| s.h != h);
            if subs.is_empty() {
                emptied.push(wd.clone());
            }
        }
        for wd in emptied {
            self.watch_subs.remove(&wd);
            if let Some(ino) = &self.inotify {
                let _ = ino.watches().remove(wd);
            }
        }
    }

    pub(crate) fn set_phase(&mut self, h: Handle, phase: Phase) {
        self.slot_mut(h).phase = phase;
        if matches!(phase, Phase::Finished | Phase::Done) {
            self.release(h);
        }
    }

    /// Whether every cog before `cog` in train `train` has finished and has no job in flight.
    pub(crate) fn upstream_idle(&self, train: u16, cog: usize) -> bool {
        self.slots[train as usize][..cog]
            .iter()
            .all(|s| matches!(s.phase, Phase::Finished | Phase::Done) && s.jobs_in_flight() == 0)
    }
}

/// What a cog's callback can do with the escapement: bind and unbind events, submit jobs,
/// acknowledge data, ask for backpressure or shutdown.
///
/// It borrows the escapement's core for the duration of one callback.
pub struct Ctx<'a> {
    core: &'a mut Core,
    h: Handle,
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

    /// Asks for a [`Wake::Immediate`] call with `local` in the loop's next turn, before it
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

    /// Asks for a [`Wake::Immediate`] call of another cog (in any train), e.g. to tell the
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
    /// readiness is edge-triggered and delivered as [`Wake::Ready`] with `local`.
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

    // --- timers

    /// A one-shot timer firing after `after`.
    pub fn timer_after(&mut self, after: Duration, local: Local) -> io::Result<TimerId> {
        let at = Instant::now() + after;
        self.timer_at(at, local)
    }

    /// A one-shot timer firing at `at` (at once if `at` has passed).
    pub fn timer_at(&mut self, at: Instant, local: Local) -> io::Result<TimerId> {
        self.core.check_binding(self.h)?;
        Ok(self.core.add_timer(self.h, at, local, None))
    }

    /// A periodic timer firing every `period`, first after one period. A loop that fell
    /// behind fires once and then keeps the cadence from now (no bursts of catch-up).
    pub fn timer_every(&mut self, period: Duration, local: Local) -> io::Result<TimerId> {
        self.core.check_binding(self.h)?;
        if period.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a periodic timer needs a period above zero",
            ));
        }
        let at = Instant::now() + period;
        Ok(self.core.add_timer(self.h, at, local, Some(period)))
    }

    /// Cancels a timer; `false` if it already fired (one-shot) or was cancelled.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        match self.core.timer_entries.get(&id.0) {
            Some(e) if e.h == self.h => {
                self.core.timer_entries.remove(&id.0);
                self.core.compact_timers();
                true
            }
            _ => false,
        }
    }

    // --- inotify

    /// Whether inotify watches are available; when not, a cog polls instead.
    pub fn has_inotify(&self) -> bool {
        self.core.inotify.is_some()
    }

    /// Watches a path; events matching `mask` arrive as [`Wake::Inotify`] with `local`.
    /// Watches of one inode are shared by the kernel: the descriptor may equal another
    /// cog's, and each cog still gets only its own `mask`'s events.
    pub fn watch<P: AsRef<Path>>(
        &mut self,
        path: P,
        mask: WatchMask,
        local: Local,
    ) -> io::Result<WatchDescriptor> {
        self.core.check_binding(self.h)?;
        let Some(ino) = &self.core.inotify else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "inotify is not available",
            ));
        };
        // MASK_ADD keeps the masks of other cogs watching the same inode.
        let wd = ino.watches().add(path, mask | WatchMask::MASK_ADD)?;
        let subs = self.core.watch_subs.entry(wd.clone()).or_default();
        subs.retain(|s| !(s.h == self.h && s.local == local));
        subs.push(WatchSub {
            h: self.h,
            local,
            mask,
        });
        Ok(wd)
    }

    /// Removes this cog's watch; the kernel watch goes when no cog uses it any more.
    pub fn unwatch(&mut self, wd: &WatchDescriptor) -> io::Result<()> {
        let Some(subs) = self.core.watch_subs.get_mut(wd) else {
            return Ok(());
        };
        subs.retain(|s| s.h != self.h);
        if subs.is_empty() {
            self.core.watch_subs.remove(wd);
            if let Some(ino) = &self.core.inotify {
                // The kernel already dropped watches of deleted files: not an error here.
                let _ = ino.watches().remove(wd.clone());
            }
        }
        Ok(())
    }

    // --- signals

    /// Delivers signal `sig` as [`Wake::Signal`] with `local`. A cog that binds SIGTERM or
    /// SIGINT takes over the escapement's default shutdown on it.
    pub fn signal(&mut self, sig: i32, local: Local) -> io::Result<()> {
        self.core.check_binding(self.h)?;
        self.core.ensure_signals(sig)?;
        let h = self.h;
        if !self.core.signal_subs.contains(&(sig, h, local)) {
            self.core.signal_subs.push((sig, h, local));
        }
        Ok(())
    }

    /// Stops delivering `sig` to this cog. The process keeps catching the signal (its
    /// handler cannot be uninstalled safely); unbound signals are ignored, or handled by the
    /// escapement's defaults.
    pub fn unsignal(&mut self, sig: i32) {
        let h = self.h;
        self.core
            .signal_subs
            .retain(|(s, x, _)| !(*s == sig && *x == h));
    }

    // --- worker jobs

    /// Runs `job` on a worker thread; its result comes back through
    /// [`Cog::job_done`](crate::engine::cog::Cog::job_done) with the returned id, in submission order among this cog's jobs.
    /// Refused once the cog has finished (unless it lingers).
    pub fn submit<F, T>(&mut self, job: F) -> io::Result<JobId>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // A job started later than its cog's finish could emit into cogs that have
        // finished behind it; a cog that needs one lingers.
        if matches!(self.core.slot(self.h).phase, Phase::Finished | Phase::Done) {
            return Err(io::Error::other("the cog has finished: no new jobs"));
        }
        if self.core.pool.is_none() {
            let n = match self.core.workers {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            };
            self.core.pool = Some(Pool::start(n, &self.core.shared, &self.core.waker)?);
        }
        let h = self.h;
        let slot = self.core.slot_mut(h);
        let seq = slot.next_job;
        let msg = JobMsg {
            h,
            seq,
            job: Box::new(move || Box::new(job()) as JobOutput),
        };
        let sent = match self.core.pool.as_ref().and_then(|p| p.tx.as_ref()) {
            Some(tx) => tx.send(msg).is_ok(),
            None => false,
        };
        if !sent {
            return Err(io::Error::other("the worker pool has stopped"));
        }
        self.core.slot_mut(h).next_job += 1;
        Ok(seq)
    }

    /// Jobs of this cog submitted and not yet handed back.
    pub fn jobs_in_flight(&self) -> u64 {
        self.core.slot(self.h).jobs_in_flight()
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
    /// stopping it: the trains go on, and [`Escapement::run`] returns an error naming every
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

/// The event loop: owns the trains and drives them until they have all finished.
///
/// ```no_run
/// use deadbeat::prelude::*;
/// # struct Lines; impl Cog<String> for Lines { fn name(&self) -> &str { "lines" } }
/// let mut esc = Escapement::new().unwrap();
/// esc.add_train(Train::new("main").cog(Lines)).unwrap();
/// esc.run().unwrap();
/// ```
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
        let core = Core {
            poll,
            slots: Vec::new(),
            immediate: VecDeque::new(),
            immediate_set: HashSet::new(),
            timers: BinaryHeap::new(),
            timer_entries: HashMap::new(),
            next_timer: 0,
            signals: None,
            signal_subs: Vec::new(),
            inotify,
            watch_subs: HashMap::new(),
            workers: options.workers,
            pool: None,
            waker,
            shared: Arc::new(Shared {
                finished_jobs: Mutex::new(Vec::new()),
                stop: AtomicBool::new(false),
            }),
            notices: Vec::new(),
            pause_dirty: false,
            shutdown: false,
            failures: Vec::new(),
            metrics_requested: false,
            next_event_id: 1,
            now: Instant::now(),
            logger,
            options,
        };
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
            [timer, self.stop_deadline]
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
                    }
                }
            }
        }
        events.clear();
        self.events = events;

        self.fire_timers();
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

    fn next_deadline(&mut self) -> Option<Instant> {
        // Cancelled timers stay in the heap until they surface; drop them here.
        while let Some(Reverse((at, id))) = self.core.timers.peek() {
            if self.core.timer_entries.contains_key(id) {
                return Some(*at);
            }
            self.core.timers.pop();
        }
        None
    }

    fn is_live(&self, h: Handle) -> bool {
        self.core
            .slots
            .get(h.train as usize)
            .and_then(|s| s.get(h.cog as usize))
            .is_some_and(|s| s.accepts_bindings())
    }

    fn fire_timers(&mut self) {
        let now = self.core.now;
        // Take every due timer first: one a callback sets for now (or earlier) waits for
        // the next turn, so a cog re-arming itself at once cannot keep the loop from
        // polling.
        let mut due = std::mem::take(&mut self.due_timers);
        while let Some(Reverse((at, id))) = self.core.timers.peek().copied() {
            if at > now {
                break;
            }
            self.core.timers.pop();
            due.push((at, id));
        }
        for &(at, id) in &due {
            // A callback earlier in this round may have cancelled it.
            let Some(entry) = self.core.timer_entries.get(&id) else {
                continue;
            };
            let (h, local) = (entry.h, entry.local);
            match entry.period {
                Some(p) => {
                    let mut next = at + p;
                    if next <= now {
                        next = now + p;
                    }
                    self.core.timers.push(Reverse((next, id)));
                }
                None => {
                    self.core.timer_entries.remove(&id);
                }
            }
            if self.is_live(h) {
                self.trains[h.train as usize].wake(
                    h.cog,
                    local,
                    Wake::Timer(TimerId(id)),
                    &mut self.core,
                );
                self.settle();
            }
        }
        due.clear();
        self.due_timers = due;
    }

    fn deliver_jobs(&mut self) {
        {
            let mut done = self
                .core
                .shared
                .finished_jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *done, &mut self.job_buf);
        }
        if self.core.shared.stop.load(Ordering::SeqCst) {
            self.core.shutdown = true;
        }
        let mut finished = std::mem::take(&mut self.job_buf);
        let mut touched: Vec<Handle> = Vec::new();
        for (h, seq, result) in finished.drain(..) {
            self.core.slot_mut(h).held.insert(seq, result);
            if !touched.contains(&h) {
                touched.push(h);
            }
        }
        self.job_buf = finished;
        for h in touched {
            loop {
                let slot = self.core.slot_mut(h);
                let seq = slot.next_delivery;
                let Some(result) = slot.held.remove(&seq) else {
                    break;
                };
                slot.next_delivery += 1;
                if slot.phase != Phase::Done {
                    self.trains[h.train as usize].job_done(h.cog, seq, result, &mut self.core);
                    self.settle();
                }
            }
        }
    }

    fn deliver_signals(&mut self) {
        let mut arrived: Vec<i32> = Vec::new();
        if let Some(s) = self.core.signals.as_mut() {
            arrived.extend(s.pending());
        }
        for sig in arrived {
            self.targets.clear();
            self.targets.extend(
                self.core
                    .signal_subs
                    .iter()
                    .filter(|(s, _, _)| *s == sig)
                    .map(|(_, h, l)| (*h, *l)),
            );
            if self.targets.is_empty() {
                self.default_signal(sig);
                continue;
            }
            let targets = std::mem::take(&mut self.targets);
            for &(h, local) in &targets {
                if self.is_live(h) {
                    self.trains[h.train as usize].wake(
                        h.cog,
                        local,
                        Wake::Signal(sig),
                        &mut self.core,
                    );
                    self.settle();
                }
            }
            self.targets = targets;
        }
    }

    fn default_signal(&mut self, sig: i32) {
        let opts = &self.core.options;
        if (sig == SIGTERM || sig == SIGINT) && opts.shutdown_on_signals {
            if self.core.shutdown {
                // The operator insists: a drain may be waiting for a peer that never comes.
                slog::warn!(self.core.logger, "second signal: stopping without finishing"; "signal" => sig);
                self.forced = true;
            } else {
                slog::info!(self.core.logger, "signal received: shutting down"; "signal" => sig);
            }
            self.core.shutdown = true;
        } else if sig == SIGHUP && opts.control_signals {
            slog::info!(self.core.logger, "SIGHUP: reopening files");
            self.core.notices.push(Notice::Reopen);
            self.settle();
        } else if sig == SIGUSR1 && opts.control_signals {
            self.core.metrics_requested = true;
        }
    }

    fn deliver_inotify(&mut self) {
        let Some(ino) = self.core.inotify.as_mut() else {
            return;
        };
        self.inotify_events.clear();
        loop {
            match ino.read_events(&mut self.inotify_buf) {
                Ok(evs) => {
                    for e in evs {
                        self.inotify_events.push((
                            e.wd,
                            e.mask,
                            e.cookie,
                            e.name.map(|n| n.to_os_string()),
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    slog::error!(self.core.logger, "reading inotify events failed"; "error" => %e);
                    break;
                }
            }
        }
        let events = std::mem::take(&mut self.inotify_events);
        for (wd, mask, cookie, name) in &events {
            self.targets.clear();
            if mask.contains(EventMask::Q_OVERFLOW) {
                // Events were lost: every watcher must rescan.
                for subs in self.core.watch_subs.values() {
                    for s in subs {
                        if !self.targets.contains(&(s.h, s.local)) {
                            self.targets.push((s.h, s.local));
                        }
                    }
                }
            } else if let Some(subs) = self.core.watch_subs.get(wd) {
                let always = EventMask::IGNORED | EventMask::UNMOUNT;
                for s in subs {
                    if mask.bits() & s.mask.bits() != 0 || mask.intersects(always) {
                        self.targets.push((s.h, s.local));
                    }
                }
            }
            if mask.contains(EventMask::IGNORED) {
                // The kernel removed the watch (file deleted, unmounted): forget it.
                self.core.watch_subs.remove(wd);
            }
            let targets = std::mem::take(&mut self.targets);
            for &(h, local) in &targets {
                if self.is_live(h) {
                    let ev = InotifyEvent {
                        wd,
                        mask: *mask,
                        cookie: *cookie,
                        name: name.as_deref(),
                    };
                    self.trains[h.train as usize].wake(
                        h.cog,
                        local,
                        Wake::Inotify(ev),
                        &mut self.core,
                    );
                    self.settle();
                }
            }
            self.targets = targets;
        }
        self.inotify_events = events;
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
