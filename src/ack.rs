//! Following data until drains acknowledge them, so a supply commits checkpoints only
//! up to the oldest datum not yet written out (at-least-once across crashes).

use std::collections::{HashMap, VecDeque};

use crate::cog::EventId;

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
    sources: HashMap<u64, Source>,
    /// `new id → old ids` for data that travel on under another id.
    renamed: HashMap<EventId, Vec<EventId>>,
    pending: usize,
}

#[derive(Debug, Default)]
struct Source {
    queue: VecDeque<Sent>,
    committed: u64,
}

impl AckTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts following a source whose data before `offset` need no acknowledgement (a
    /// checkpoint read at start, or 0).
    pub fn open(&mut self, source: u64, offset: u64) {
        let s = self.sources.entry(source).or_default();
        if s.queue.is_empty() {
            s.committed = offset;
        }
    }

    /// Forgets a source and whatever of it was unacknowledged.
    pub fn close(&mut self, source: u64) {
        if let Some(s) = self.sources.remove(&source) {
            self.pending -= s.queue.iter().filter(|e| !e.done).count();
        }
    }

    /// Records that datum `id`, ending at `end` in `source`, was handed out.
    #[inline]
    pub fn sent(&mut self, source: u64, id: EventId, end: u64) {
        let s = self.sources.entry(source).or_default();
        s.queue.push_back(Sent {
            id,
            end,
            done: false,
        });
        self.pending += 1;
    }

    /// Marks data acknowledged; returns whether any source's committed offset advanced.
    pub fn done(&mut self, ids: &[EventId]) -> bool {
        let mut advanced = false;
        for &id in ids {
            if let Some(olds) = self.renamed.remove(&id) {
                advanced |= self.done(&olds);
                continue;
            }
            for s in self.sources.values_mut() {
                let (Some(first), Some(last)) = (s.queue.front(), s.queue.back()) else {
                    continue;
                };
                if id < first.id || id > last.id {
                    continue;
                }
                // Sources' id ranges interleave when several are read at once.
                let Ok(i) = s.queue.binary_search_by_key(&id, |e| e.id) else {
                    continue;
                };
                if !s.queue[i].done {
                    s.queue[i].done = true;
                    self.pending -= 1;
                }
                while let Some(front) = s.queue.front() {
                    if !front.done {
                        break;
                    }
                    s.committed = front.end;
                    s.queue.pop_front();
                    advanced = true;
                }
                break;
            }
        }
        advanced
    }

    /// Datum `old` now travels as `new`: acknowledging `new` acknowledges `old`.
    pub fn rename(&mut self, old: EventId, new: EventId) {
        let olds = self.renamed.remove(&old).unwrap_or_else(|| vec![old]);
        self.renamed.entry(new).or_default().extend(olds);
    }

    /// The offset up to which every datum of `source` was acknowledged.
    pub fn committed(&self, source: u64) -> Option<u64> {
        self.sources.get(&source).map(|s| s.committed)
    }

    /// Whether every datum of `source` handed out so far was acknowledged.
    pub fn is_settled(&self, source: u64) -> bool {
        self.sources.get(&source).is_none_or(|s| s.queue.is_empty())
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
