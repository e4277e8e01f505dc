//! Timers: one heap of deadlines for every cog, set through [`Ctx`] and fired by the
//! loop once per turn.

use std::cmp::Reverse;
use std::io;
use std::time::{Duration, Instant};

use crate::engine::cog::Local;
use crate::engine::cog::Wake;

use super::core::Core;
use super::ctx::Ctx;
use super::{Escapement, Handle};

/// A timer set by a cog; cancel it with [`Ctx::cancel_timer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

pub(super) struct TimerEntry {
    pub(super) h: Handle,
    pub(super) local: Local,
    pub(super) period: Option<Duration>,
}

impl Core {
    pub(super) fn add_timer(
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
    pub(super) fn compact_timers(&mut self) {
        if self.timers.len() > 64 && self.timers.len() > 2 * self.timer_entries.len() {
            let live = &self.timer_entries;
            self.timers.retain(|Reverse((_, id))| live.contains_key(id));
        }
    }
}

impl Ctx<'_> {
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
}

impl Escapement {
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        // Cancelled timers stay in the heap until they surface; drop them here.
        while let Some(Reverse((at, id))) = self.core.timers.peek() {
            if self.core.timer_entries.contains_key(id) {
                return Some(*at);
            }
            self.core.timers.pop();
        }
        None
    }

    pub(super) fn fire_timers(&mut self) {
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
}
