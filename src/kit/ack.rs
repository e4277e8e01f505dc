//! Following data until drains acknowledge them, so a supply commits checkpoints only
//! up to the oldest datum not yet written out (at-least-once across crashes).

use std::collections::{HashMap, VecDeque};

use crate::engine::cog::EventId;

#[derive(Debug, Clone, Copy)]
struct Sent {
    id: EventId,
    end: u64,
    done: bool,
}

/// What a supply has handed out and not yet seen acknowledged, per source (a file, say).
///
/// A supply calls [`sent`](AckTracker::sent) for every datum with the source offset just
/// past it, [`done`](AckTracker::done) from [`Cog::event_done`](crate::Cog::event_done),
/// and reads [`committed`](AckTracker::committed): the offset up to which every datum of
/// a source has been acknowledged, the safe place to resume after a crash. Ids must
/// increase within a source (as `Ctx::new_event_id` gives them); acknowledgements may come
/// in any order, and ids the tracker never saw are ignored.
#[derive(Debug, Default)]
pub struct AckTracker {
    sources: Vec<Source>,
    /// Source key → index in `sources`.
    index: HashMap<u64, usize>,
    /// The source used last: consecutive lines mostly come from one file, and
    /// acknowledgements mostly arrive in the order the lines were sent.
    last: Option<usize>,
    /// `new id → old ids` for data that travel on under another id.
    renamed: HashMap<EventId, Vec<EventId>>,
    pending: usize,
}

#[derive(Debug)]
struct Source {
    key: u64,
    queue: VecDeque<Sent>,
    committed: u64,
}

impl Source {
    fn covers(&self, id: EventId) -> bool {
        match (self.queue.front(), self.queue.back()) {
            (Some(first), Some(last)) => first.id <= id && id <= last.id,
            _ => false,
        }
    }

    /// Marks `id` done if it is here; returns (found, newly done, committed advanced).
    fn ack(&mut self, id: EventId) -> (bool, bool, bool) {
        let i = match self.queue.front() {
            Some(front) if front.id == id => 0,
            _ => match self.queue.binary_search_by_key(&id, |e| e.id) {
                Ok(i) => i,
                Err(_) => return (false, false, false),
            },
        };
        let newly = !std::mem::replace(&mut self.queue[i].done, true);
        let mut advanced = false;
        while let Some(front) = self.queue.front() {
            if !front.done {
                break;
            }
            self.committed = front.end;
            self.queue.pop_front();
            advanced = true;
        }
        (true, newly, advanced)
    }
}

impl AckTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&mut self, source: u64) -> usize {
        if let Some(i) = self
            .last
            .filter(|&i| self.sources.get(i).is_some_and(|s| s.key == source))
        {
            return i;
        }
        let i = match self.index.get(&source) {
            Some(&i) => i,
            None => {
                self.sources.push(Source {
                    key: source,
                    queue: VecDeque::new(),
                    committed: 0,
                });
                self.index.insert(source, self.sources.len() - 1);
                self.sources.len() - 1
            }
        };
        self.last = Some(i);
        i
    }

    /// Starts following a source whose data before `offset` need no acknowledgement (a
    /// checkpoint read at start, or 0).
    pub fn open(&mut self, source: u64, offset: u64) {
        let i = self.slot(source);
        let s = &mut self.sources[i];
        if s.queue.is_empty() {
            s.committed = offset;
        }
    }

    /// Forgets a source and whatever of it was unacknowledged.
    pub fn close(&mut self, source: u64) {
        let Some(i) = self.index.remove(&source) else {
            return;
        };
        let s = self.sources.swap_remove(i);
        self.pending -= s.queue.iter().filter(|e| !e.done).count();
        if let Some(moved) = self.sources.get(i) {
            self.index.insert(moved.key, i);
        }
        self.last = None;
    }

    /// Records that datum `id`, ending at `end` in `source`, was handed out.
    #[inline]
    pub fn sent(&mut self, source: u64, id: EventId, end: u64) {
        let i = self.slot(source);
        self.sources[i].queue.push_back(Sent {
            id,
            end,
            done: false,
        });
        self.pending += 1;
    }

    /// Marks data acknowledged; returns whether any source's committed offset advanced.
    pub fn done(&mut self, ids: &[EventId]) -> bool {
        let mut advanced = false;
        let mut hint = self.last;
        for &id in ids {
            if let Some(olds) = self.renamed.remove(&id) {
                advanced |= self.done(&olds);
                continue;
            }
            // Sources' id ranges interleave when several are read at once: try the source
            // that held the previous id first, then every source covering this id.
            let order = hint.into_iter().chain(0..self.sources.len());
            for i in order {
                let Some(s) = self.sources.get_mut(i) else {
                    continue;
                };
                if !s.covers(id) {
                    continue;
                }
                let (found, newly, moved) = s.ack(id);
                if found {
                    self.pending -= newly as usize;
                    advanced |= moved;
                    hint = Some(i);
                    break;
                }
            }
        }
        advanced
    }

    /// Datum `old` now travels as `new`: acknowledging `new` acknowledges `old`.
    pub fn rename(&mut self, old: EventId, new: EventId) {
        let olds = self.renamed.remove(&old).unwrap_or_else(|| vec![old]);
        self.renamed.entry(new).or_default().extend(olds);
    }

    /// `source` is read again from `offset` (a rollback): its committed offset goes back
    /// to `offset` at once if it was past it, and data handed out before and still
    /// unacknowledged no longer carry it past `offset` once acknowledged (they are still
    /// followed and counted). Data sent from now on move it on as usual.
    pub fn rewind(&mut self, source: u64, offset: u64) {
        let i = self.slot(source);
        let s = &mut self.sources[i];
        s.committed = s.committed.min(offset);
        for e in s.queue.iter_mut() {
            e.end = e.end.min(offset);
        }
    }

    /// The offset recorded with the oldest datum of `source` not yet acknowledged.
    pub fn oldest_pending(&self, source: u64) -> Option<u64> {
        let i = *self.index.get(&source)?;
        self.sources[i]
            .queue
            .iter()
            .find(|e| !e.done)
            .map(|e| e.end)
    }

    /// The offset up to which every datum of `source` was acknowledged.
    pub fn committed(&self, source: u64) -> Option<u64> {
        self.index.get(&source).map(|&i| self.sources[i].committed)
    }

    /// Whether every datum of `source` handed out so far was acknowledged.
    pub fn is_settled(&self, source: u64) -> bool {
        self.index
            .get(&source)
            .is_none_or(|&i| self.sources[i].queue.is_empty())
    }

    /// Data handed out and not acknowledged yet, over all sources (to bound memory: a
    /// supply stops reading above a limit).
    pub fn pending(&self) -> usize {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_up_to_the_oldest_unacknowledged() {
        let mut t = AckTracker::new();
        t.open(7, 100);
        t.sent(7, 1, 110);
        t.sent(7, 2, 120);
        t.sent(7, 3, 130);
        assert_eq!(t.committed(7), Some(100));
        assert!(!t.done(&[2]));
        assert_eq!(t.committed(7), Some(100));
        assert!(t.done(&[1]));
        assert_eq!(t.committed(7), Some(120));
        assert_eq!(t.pending(), 1);
        assert!(t.done(&[3, 3, 99]));
        assert_eq!(t.committed(7), Some(130));
        assert!(t.is_settled(7));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn sources_commit_independently_and_close_forgets() {
        let mut t = AckTracker::new();
        t.sent(1, 10, 5);
        t.sent(2, 11, 50);
        t.sent(1, 12, 9);
        t.done(&[11]);
        assert_eq!(t.committed(2), Some(50));
        assert_eq!(t.committed(1), Some(0));
        t.close(1);
        assert_eq!(t.pending(), 0);
        assert_eq!(t.committed(1), None);
    }

    #[test]
    fn many_sources_and_out_of_order_acks() {
        let mut t = AckTracker::new();
        for f in 0..50u64 {
            t.open(f, 0);
        }
        let mut id = 0;
        for round in 1..=4u64 {
            for f in 0..50u64 {
                id += 1;
                t.sent(f, id, round * 10);
            }
        }
        let all: Vec<EventId> = (1..=id).rev().collect();
        t.done(&all[..100]);
        assert_eq!(t.committed(7), Some(0));
        t.close(3);
        t.done(&all[100..]);
        assert_eq!(t.pending(), 0);
        for f in (0..50u64).filter(|f| *f != 3) {
            assert_eq!(t.committed(f), Some(40), "source {f}");
        }
    }

    #[test]
    fn a_rewind_commits_its_offset_and_in_flight_data_never_pass_it() {
        let mut t = AckTracker::new();
        t.open(1, 0);
        t.sent(1, 1, 10);
        t.sent(1, 2, 20);
        t.sent(1, 3, 30);
        t.done(&[1, 2]);
        assert_eq!(t.committed(1), Some(20));
        // Back to 5: the checkpoint says 5 at once, and the datum still in flight (3)
        // does not carry it to 30 when it is acknowledged.
        t.rewind(1, 5);
        assert_eq!(t.committed(1), Some(5));
        assert_eq!(t.oldest_pending(1), Some(5));
        t.sent(1, 4, 10);
        t.sent(1, 5, 20);
        t.done(&[4]);
        assert_eq!(t.committed(1), Some(5), "3 is still in flight");
        t.done(&[3]);
        assert_eq!(t.committed(1), Some(10));
        t.done(&[5]);
        assert_eq!(t.committed(1), Some(20));
        assert_eq!(t.pending(), 0);
        assert_eq!(t.oldest_pending(1), None);
    }

    #[test]
    fn a_rewind_forward_keeps_what_is_in_flight_behind_it() {
        let mut t = AckTracker::new();
        t.sent(1, 1, 10);
        t.sent(1, 2, 20);
        t.rewind(1, 100);
        t.sent(1, 3, 110);
        t.done(&[3]);
        assert_eq!(t.committed(1), Some(0));
        t.done(&[1, 2]);
        assert_eq!(t.committed(1), Some(110));
    }

    #[test]
    fn renamed_data_are_acknowledged_through_their_new_id() {
        let mut t = AckTracker::new();
        t.sent(1, 1, 10);
        t.sent(1, 2, 20);
        t.rename(1, 100);
        t.rename(2, 100);
        t.done(&[1000]);
        assert_eq!(t.committed(1), Some(0));
        t.done(&[100]);
        assert_eq!(t.committed(1), Some(20));
    }
}
