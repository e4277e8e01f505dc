//! The escapement's [`Core`]: everything it owns but the cogs, and what it keeps per cog
//! ([`Slot`]): phase, jobs, pause wish. A [`Ctx`] borrows the core for one callback.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ::inotify::{Inotify, WatchDescriptor};
use mio::{Poll, Waker};
use signal_hook_mio::v1_0::Signals;
use slog::Logger;

use crate::engine::cog::{EventId, JobId, JobResult, Local};

use super::inotify::WatchSub;
use super::jobs::{Pool, Shared};
use super::timers::TimerEntry;
use super::{Handle, Options};

/// Why a cog of a [`Detached`](super::Detached) train cannot bind an event or submit a job.
pub(super) const DETACHED_REFUSES: &str =
    "a cog run on a worker thread (inside `parallel`) cannot bind events or submit jobs";

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
    pub(super) exhausted: bool,
    pub(crate) wants_pause: bool,
    /// A supply held paused by the escapement's [`Service`](super::Service).
    pub(crate) service_hold: bool,
    pub(super) next_job: JobId,
    pub(super) next_delivery: JobId,
    pub(super) held: BTreeMap<JobId, JobResult>,
    /// The escapement's logger with the cog's train and id.
    pub(super) logger: Logger,
}

impl Slot {
    pub(crate) fn new(supply: bool, logger: Logger) -> Self {
        Slot {
            logger,
            phase: Phase::Running,
            supply,
            exhausted: false,
            wants_pause: false,
            service_hold: false,
            next_job: 0,
            next_delivery: 0,
            held: BTreeMap::new(),
        }
    }

    pub(crate) fn jobs_in_flight(&self) -> u64 {
        self.next_job - self.next_delivery
    }

    pub(super) fn accepts_bindings(&self) -> bool {
        matches!(self.phase, Phase::Running | Phase::Lingering)
    }
}

/// A broadcast a cog asked for, waiting to be delivered to every cog of every train; a
/// [`Detached`](super::Detached) train hands its cogs' notices back as these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// [`Ctx::event_done`](super::Ctx::event_done).
    Done(EventId),
    /// [`Ctx::event_rename`](super::Ctx::event_rename): old, new.
    Rename(EventId, EventId),
    /// [`Ctx::reopen_all`](super::Ctx::reopen_all).
    Reopen,
}

/// One broadcast as the trains deliver it: acknowledgements come in runs.
#[derive(Debug)]
pub(crate) enum Broadcast<'a> {
    Done(&'a [EventId]),
    Rename(EventId, EventId),
    Reopen,
}

/// Everything the escapement owns but the cogs: what a [`Ctx`](super::Ctx) borrows.
pub struct Core {
    pub(super) poll: Poll,
    pub(crate) slots: Vec<Vec<Slot>>,
    pub(super) immediate: VecDeque<(Handle, Local)>,
    /// What `immediate` holds, so asking twice stays one call without a scan of the queue
    /// (a listener with thousands of busy connections asks often).
    pub(super) immediate_set: HashSet<(Handle, Local)>,
    pub(super) timers: BinaryHeap<Reverse<(Instant, u64)>>,
    pub(super) timer_entries: HashMap<u64, TimerEntry>,
    pub(super) next_timer: u64,
    pub(super) signals: Option<Signals>,
    pub(super) signal_subs: Vec<(i32, Handle, Local)>,
    pub(super) inotify: Option<Inotify>,
    pub(super) watch_subs: HashMap<WatchDescriptor, Vec<WatchSub>>,
    pub(super) workers: usize,
    pub(super) pool: Option<Pool>,
    pub(super) waker: Arc<Waker>,
    pub(super) shared: Arc<Shared>,
    pub(crate) notices: Vec<Notice>,
    pub(crate) pause_dirty: bool,
    pub(super) shutdown: bool,
    /// Why the run failed although it ran to its end (see [`Ctx::fail`]).
    pub(super) failures: Vec<String>,
    pub(super) metrics_requested: bool,
    pub(super) next_event_id: EventId,
    pub(super) now: Instant,
    pub(super) logger: Logger,
    pub(super) options: Options,
    /// The core of a [`Detached`](super::Detached) train: nothing it binds would ever be
    /// delivered, so it refuses bindings and jobs.
    pub(super) detached: bool,
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
    /// A core with nothing bound yet; the escapement and a detached train differ only in
    /// what they pass here.
    pub(super) fn new(
        poll: Poll,
        waker: Arc<Waker>,
        inotify: Option<Inotify>,
        next_event_id: EventId,
        logger: Logger,
        options: Options,
        detached: bool,
    ) -> Self {
        Core {
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
            workers: if detached { 0 } else { options.workers },
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
            next_event_id,
            now: Instant::now(),
            logger,
            options,
            detached,
        }
    }

    pub(super) fn slot(&self, h: Handle) -> &Slot {
        &self.slots[h.train as usize][h.cog as usize]
    }

    pub(super) fn slot_mut(&mut self, h: Handle) -> &mut Slot {
        &mut self.slots[h.train as usize][h.cog as usize]
    }

    pub(super) fn check_binding(&self, h: Handle) -> io::Result<()> {
        if self.detached {
            Err(io::Error::other(DETACHED_REFUSES))
        } else if self.slot(h).accepts_bindings() {
            Ok(())
        } else {
            Err(io::Error::other(
                "the cog has finished: the escapement binds nothing new for it",
            ))
        }
    }

    /// Drops every binding the core holds for a cog (its fds are the cog's to deregister;
    /// their events are ignored from now on).
    pub(super) fn release(&mut self, h: Handle) {
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
