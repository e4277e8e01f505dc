//! Acknowledgements held for data that travel on inside another datum.
//!
//! A cog that folds several data into one (`merge`, `multiline`) emits one datum, the
//! *carrier*, that stands for all of them. The supplies that sent the others wait for
//! their acknowledgement before moving a checkpoint past them, and no drain will ever
//! acknowledge them: they were merged away. [`Held`] keeps, per carrier id, the ids it
//! stands for, and acknowledges them (`Ctx::event_done`) when the carrier is
//! acknowledged. So a checkpointing supply (`tail`) never commits past a datum folded into
//! a datum not yet written, and a crash re-reads it.
//!
//! Give the carrier a fresh id (`Ctx::new_event_id`) and hold every constituent's id, the
//! first's included: the supply then hears the whole group acknowledged in one
//! broadcast. Were the carrier to keep its first datum's id, the supply would hear that
//! one acknowledged first and could save a checkpoint inside the group for a moment; a
//! crash at that moment splits the group across the restart.
//!
//! This holds the acknowledgements rather than broadcasting `event_rename` for each
//! folded datum because a rename only helps a supply that follows renames; holding works
//! with every supply. When a cog downstream renames the carrier, [`Held::rename`] moves
//! what is held with it.
//!
//! **Bounds.** At most `max_ids` ids are held: a cog downstream that never acknowledges
//! (a custom drain, say) cannot make memory grow without end. Beyond the bound the ids of
//! the carrier held longest are acknowledged at once (their supplies may then commit
//! past data not yet written: at-least-once weakens to at-most-once for them); such early
//! releases are counted and logged at a bounded rate.

use crate::engine::cog::EventId;
use crate::engine::escapement::Ctx;
use crate::kit::keyed::Keyed;
use crate::kit::on_error::LogLimiter;

/// Carrier id → the ids it stands for, acknowledged with it; see the module doc.
#[derive(Debug)]
pub struct Held {
    map: Keyed<EventId, Vec<EventId>>,
    /// Ids held, over every carrier.
    ids: usize,
    max_ids: usize,
    released_early: u64,
    limiter: LogLimiter,
}

impl Held {
    /// Holds at most `max_ids` ids (at least 1).
    pub fn new(max_ids: usize) -> Self {
        Held {
            map: Keyed::new(usize::MAX),
            ids: 0,
            max_ids: max_ids.max(1),
            released_early: 0,
            limiter: LogLimiter::default(),
        }
    }

    /// Holds `ids` until `carrier` is acknowledged. A carrier without an id (`None` or 0)
    /// will never be acknowledged: `ids` are acknowledged at once. `cog` names the cog in
    /// the log line of an early release.
    pub fn hold(
        &mut self,
        carrier: Option<EventId>,
        ids: Vec<EventId>,
        cog: &str,
        cx: &mut Ctx<'_>,
    ) {
        if ids.is_empty() {
            return;
        }
        let carrier = match carrier {
            None | Some(0) => {
                for id in ids {
                    cx.event_done(id);
                }
                return;
            }
            Some(c) => c,
        };
        self.ids += ids.len();
        match self.map.get_mut(&carrier) {
            Some(held) => held.extend(ids),
            None => {
                self.map.insert(carrier, ids);
            }
        }
        self.bound(cog, cx);
    }

    /// Acknowledges what the acknowledged `ids` stand for (from `Cog::event_done`).
    #[inline]
    pub fn done(&mut self, ids: &[EventId], cx: &mut Ctx<'_>) {
        if self.map.is_empty() {
            return;
        }
        for id in ids {
            if let Some(held) = self.map.remove(id) {
                self.ids -= held.len();
                for h in held {
                    cx.event_done(h);
                }
            }
        }
    }

    /// The carrier `old` travels on as `new` (from `Cog::event_rename`): what it holds
    /// moves with it.
    pub fn rename(&mut self, old: EventId, new: EventId) {
        if old == new {
            return;
        }
        let Some(held) = self.map.remove(&old) else {
            return;
        };
        match self.map.get_mut(&new) {
            Some(h) => h.extend(held),
            None => {
                self.map.insert(new, held);
            }
        }
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.ids
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.ids == 0
    }

    /// How many carriers hold ids.
    pub fn carriers(&self) -> usize {
        self.map.len()
    }

    /// How many ids were acknowledged before their carrier, to keep within `max_ids`.
    pub fn released_early(&self) -> u64 {
        self.released_early
    }

    /// Acknowledges the ids of the carriers held longest while more than `max_ids` are held.
    fn bound(&mut self, cog: &str, cx: &mut Ctx<'_>) {
        let mut released = 0;
        while self.ids > self.max_ids {
            let Some((_, held)) = self.map.pop_oldest() else {
                break;
            };
            self.ids -= held.len();
            released += held.len() as u64;
            for h in held {
                cx.event_done(h);
            }
        }
        if released > 0 {
            self.released_early += released;
            if self.limiter.allow("early acknowledgements", cog, cx) {
                slog::warn!(cx.logger(), "too many acknowledgements held for merged data not yet acknowledged; the oldest acknowledged early";
                    "cog" => cog, "released" => released, "total" => self.released_early,
                    "max_held" => self.max_ids);
            }
        }
    }
}
