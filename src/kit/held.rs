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

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::engine::cog::EventId;
use crate::engine::escapement::Ctx;
use crate::kit::on_error::LogLimiter;

/// Hashes event ids: they are numbers the engine hands out, not input, so one
/// multiplication spreads them well enough, at a fraction of SipHash's cost (a map of
/// held ids is looked up once per acknowledged datum).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Ids a folding cog holds for data not yet acknowledged, at most: about 8 MiB of ids
/// and their carriers' entries.
pub const MAX_HELD_IDS: usize = 1 << 20;

/// A map keyed by event ids, hashed with [`IdHasher`].
pub type IdMap<V> = HashMap<EventId, V, BuildHasherDefault<IdHasher>>;

/// Carrier id → the ids it stands for, acknowledged with it; see the module doc.
#[derive(Debug, Default)]
pub struct Held {
    map: IdMap<Vec<EventId>>,
    /// Carriers in the order they were first held, for releasing the oldest at the bound;
    /// places of carriers already acknowledged are skipped (and dropped from the front as
    /// acknowledgements come, mostly in order).
    order: VecDeque<EventId>,
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
            max_ids: max_ids.max(1),
            ..Held::default()
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
        self.add(carrier, ids);
        self.bound(cog, cx);
    }

    /// Adds `ids` to what `carrier` holds.
    fn add(&mut self, carrier: EventId, ids: Vec<EventId>) {
        match self.map.entry(carrier) {
            Entry::Occupied(o) => o.into_mut().extend(ids),
            Entry::Vacant(v) => {
                v.insert(ids);
                self.order.push_back(carrier);
                self.tidy();
            }
        }
    }

    /// Drops the places of acknowledged carriers from the front of the order, and
    /// rebuilds it when stale places outnumber live ones (a carrier never acknowledged
    /// at the front).
    fn tidy(&mut self) {
        while let Some(front) = self.order.front() {
            if self.map.contains_key(front) {
                break;
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            let mut seen = IdMap::<()>::default();
            self.order
                .retain(|c| map.contains_key(c) && seen.insert(*c, ()).is_none());
        }
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
        if let Some(held) = self.map.remove(&old) {
            self.add(new, held);
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
            let Some(c) = self.order.pop_front() else {
                break;
            };
            let Some(held) = self.map.remove(&c) else {
                continue;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A carrier never acknowledged at the front does not let the order grow with every
    /// carrier acknowledged behind it; a renamed carrier keeps one live place.
    #[test]
    fn order_stays_bounded_behind_a_carrier_never_acknowledged() {
        let mut h = Held::new(usize::MAX);
        h.add(1, vec![100]);
        for c in 2..10_000 {
            h.add(c, vec![c * 10]);
            h.map.remove(&c);
        }
        assert!(h.order.len() <= 2 * h.map.len() + 1025, "{}", h.order.len());
        assert_eq!(h.order.front(), Some(&1));
        h.rename(1, 7);
        h.add(8, vec![80]);
        assert_eq!(h.map.get(&7), Some(&vec![100]));
        h.map.remove(&8);
        h.tidy();
        assert_eq!(h.order.iter().filter(|c| h.map.contains_key(c)).count(), 1);
    }
}
