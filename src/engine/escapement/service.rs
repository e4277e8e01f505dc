//! [`Service`]: something the escapement drives beside the trains, on the same loop, that
//! sees every train's counters and states and can hold supplies (a control server).

use std::io;
use std::time::Instant;

use mio::Interest;
use mio::event::{Event, Source};
use slog::Logger;

use crate::engine::cog::{BoxError, Local};
use crate::engine::control::{Inspection, Rewind, RewindError};
use crate::engine::train::{Driven, TrainMetrics};

use super::core::{Core, Phase};
use super::{Handle, MAX_TRAINS};

/// The handle of the service's bindings: a train index no train gets, cog 0, so its
/// tokens collide neither with cogs' nor with the reserved ones (those have cog `0xFFFF`).
const SERVICE: Handle = Handle {
    train: MAX_TRAINS as u16,
    cog: 0,
};

/// Whether a token belongs to the service.
pub(super) fn is_service(h: Handle) -> bool {
    h == SERVICE
}

/// Where a cog is in its life, as a service shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CogState {
    /// Started and taking data.
    Running,
    /// A supply held by backpressure or by [`ServiceCx::hold`].
    Paused,
    /// Finishing (or lingering in its finish) during the shutdown.
    Finishing,
    /// Finished (or done).
    Finished,
}

impl CogState {
    /// The state's name in lower case: `running`, `paused`, `finishing`, `finished`.
    pub fn as_str(self) -> &'static str {
        match self {
            CogState::Running => "running",
            CogState::Paused => "paused",
            CogState::Finishing => "finishing",
            CogState::Finished => "finished",
        }
    }
}

/// Something the escapement drives beside the trains: it binds file descriptors and asks
/// for a wake-up at a time, and sees the trains through a [`ServiceCx`].
///
/// # Contract
///
/// [`Escapement::set_service`](super::Escapement::set_service) installs at most one
/// service; the escapement calls [`start`](Service::start) before starting the cogs (an
/// error there starts nothing), [`ready`](Service::ready) for readiness of what it
/// registered through the `ServiceCx`, and [`tick`](Service::tick) once the time given to
/// [`ServiceCx::wake_at`] has passed. Callbacks run on the loop's thread: a service never
/// blocks, or it stalls every train. It lives until the escapement is dropped, through the
/// shutdown.
pub trait Service {
    /// Binds what the service listens on.
    fn start(&mut self, cx: &mut ServiceCx<'_>) -> Result<(), BoxError>;
    /// Readiness of a source registered with `local` (edge-triggered, as for cogs).
    fn ready(&mut self, local: Local, event: &Event, cx: &mut ServiceCx<'_>);
    /// The time given to [`ServiceCx::wake_at`] has passed.
    fn tick(&mut self, cx: &mut ServiceCx<'_>);
}

/// What a [`Service`] callback can do: bind file descriptors, read every train's counters
/// and states, hold and release supplies.
pub struct ServiceCx<'a> {
    pub(super) core: &'a mut Core,
    pub(super) trains: &'a mut [Box<dyn Driven>],
    pub(super) wake: &'a mut Option<Instant>,
}

impl std::fmt::Debug for ServiceCx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCx")
            .field("trains", &self.trains.len())
            .finish()
    }
}

impl ServiceCx<'_> {
    /// The time the loop woke up at.
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// The escapement's logger.
    pub fn logger(&self) -> &Logger {
        &self.core.logger
    }

    /// Registers an event source; readiness comes to [`Service::ready`] with `local`.
    pub fn register<S: Source + ?Sized>(
        &mut self,
        src: &mut S,
        local: Local,
        interest: Interest,
    ) -> io::Result<()> {
        self.core
            .poll
            .registry()
            .register(src, SERVICE.token(local), interest)
    }

    /// Stops readiness events of a source.
    pub fn deregister<S: Source + ?Sized>(&mut self, src: &mut S) -> io::Result<()> {
        self.core.poll.registry().deregister(src)
    }

    /// Asks for [`Service::tick`] once `at` has passed (replacing an earlier request).
    pub fn wake_at(&mut self, at: Instant) {
        *self.wake = Some(at);
    }

    /// The counters of every cog of every train.
    pub fn metrics(&self) -> Vec<TrainMetrics> {
        self.trains.iter().map(|t| t.metrics()).collect()
    }

    /// The state of cog `cog` of train `train`; `None` if there is no such cog.
    pub fn cog_state(&self, train: usize, cog: usize) -> Option<CogState> {
        let slot = self.core.slots.get(train)?.get(cog)?;
        Some(match slot.phase {
            Phase::Running if self.trains[train].is_paused(cog) => CogState::Paused,
            Phase::Running => CogState::Running,
            Phase::Finishing | Phase::Lingering => CogState::Finishing,
            Phase::Finished | Phase::Done => CogState::Finished,
        })
    }

    /// Whether cog `cog` of train `train` is a supply.
    pub fn is_supply(&self, train: usize, cog: usize) -> bool {
        self.core
            .slots
            .get(train)
            .and_then(|t| t.get(cog))
            .is_some_and(|s| s.supply)
    }

    /// Whether supply `cog` of train `train` is held by [`hold`](ServiceCx::hold).
    pub fn is_held(&self, train: usize, cog: usize) -> bool {
        self.core
            .slots
            .get(train)
            .and_then(|t| t.get(cog))
            .is_some_and(|s| s.service_hold)
    }

    /// Holds (pauses) or releases the supply `cog` of train `train`, as backpressure
    /// does: the supply's [`Cog::pause`](crate::Cog::pause) or
    /// [`Cog::resume`](crate::Cog::resume) is called at once, so what the service reads
    /// next ([`cog_state`](ServiceCx::cog_state)) already shows it. A released supply
    /// stays paused while a cog of its train asks for backpressure. An error when the cog
    /// is not a supply.
    pub fn hold(&mut self, train: usize, cog: usize, held: bool) -> Result<(), String> {
        let Some(slot) = self.core.slots.get_mut(train).and_then(|t| t.get_mut(cog)) else {
            return Err(format!("no cog {cog} in train {train}"));
        };
        if !slot.supply {
            return Err("only supplies can be paused".into());
        }
        if slot.service_hold != held {
            slot.service_hold = held;
            self.apply_pause(train);
        }
        Ok(())
    }

    /// Tells the supplies of `train` to pause or resume as their holds and the train's
    /// backpressure now say. Done here rather than when the callback has returned: a
    /// service may answer another request in the same callback (a client that pauses and
    /// at once asks for the status), and it must see the supplies as they now are.
    fn apply_pause(&mut self, train: usize) {
        let want = self.core.slots[train].iter().any(|s| s.wants_pause);
        self.trains[train].set_paused(want, self.core);
    }

    /// What cog `cog` of train `train` reports of itself beyond its counters
    /// ([`Cog::inspect`](crate::Cog::inspect)); empty for no such cog.
    pub fn inspect(&self, train: usize, cog: usize) -> Inspection {
        let mut into = Inspection::default();
        if let Some(t) = self.trains.get(train) {
            t.inspect(cog, &mut into);
        }
        into
    }

    /// Rolls the supply `cog` of train `train` back ([`Cog::rewind`](crate::Cog::rewind)):
    /// every supply of the train is paused, the supply rewound, and the supplies resumed
    /// (those held before stay held). Returns the byte offset reading resumes at. A supply
    /// that had said it was exhausted reads again, so the run does not end under it.
    pub fn rewind(&mut self, train: usize, cog: usize, to: &Rewind) -> Result<u64, RewindError> {
        let Some(slots) = self.core.slots.get(train) else {
            return Err(RewindError::NoSource(format!("no train {train}")));
        };
        match slots.get(cog) {
            None => {
                return Err(RewindError::NoSource(format!(
                    "no cog {cog} in train {train}"
                )));
            }
            Some(s) if !s.supply => {
                return Err(RewindError::Unsupported(
                    "only a supply can be rewound".into(),
                ));
            }
            Some(s) if s.phase != Phase::Running || self.core.shutdown => {
                return Err(RewindError::Unsupported("the train is stopping".into()));
            }
            Some(_) => {}
        }
        let before: Vec<bool> = slots.iter().map(|s| s.service_hold).collect();
        for s in self.core.slots[train].iter_mut().filter(|s| s.supply) {
            s.service_hold = true;
        }
        self.apply_pause(train);
        let result = self.trains[train].rewind(cog, to, self.core);
        for (s, held) in self.core.slots[train].iter_mut().zip(before) {
            s.service_hold = held;
        }
        if result.is_ok() {
            self.core.slots[train][cog].exhausted = false;
        }
        self.apply_pause(train);
        result
    }

    /// Whether the shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.core.shutdown
    }
}
