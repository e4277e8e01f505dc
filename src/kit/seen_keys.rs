//! The keys `dedup` remembers, in a table made for its access pattern: a key is looked up
//! once per datum, inserted when new, and forgotten in the order it was inserted (by
//! expiry, or evicted to stay within `max_keys` and `max_bytes`). That order is first in,
//! first out, so nothing needs a per-key allocation or a linked order:
//!
//! - **Entries** lie in a ring in insertion order (`{tag, time, position, length}`), a new
//!   one at the back, the oldest leaving from the front. An entry's number (counted since
//!   the table was made) gives its place in the ring.
//! - **Key bytes** lie in an arena written in the same order and freed from its front: a
//!   ring of bytes, each key contiguous (one that would cross the end starts again at the
//!   beginning, the bytes skipped left as a gap). It grows by doubling as needed, up to
//!   `max_bytes` plus one key at its longest, which is enough for the keys' bytes (bounded
//!   by `max_bytes`) and any gap: eviction by bytes alone always leaves room.
//! - **The index** is open addressing with linear probing and backward-shift deletion over
//!   64-bit words: the key's hash above `seq_bits` bits, the entry's number in the low
//!   `seq_bits`. The word tells a probe whether to look further without touching the
//!   entry or the key bytes (only a word matching on all its hash bits leads to them), and
//!   gives the home slot of the entry it names without reading it (to move it on deletion,
//!   or to rehash when the index grows). The index is at most half full.
//!
//! A key given a new time while held (only when the times are out of order, as a state
//! file edited by hand may have them) is moved to the newest end: its old entry stays in
//! the ring, dead, until it reaches the front, its bytes still counted towards
//! `max_bytes` and its place towards `max_keys`. With times in order (what `dedup`
//! inserts, and what it saves) this never happens, and the table evicts exactly what
//! [`Keyed`](crate::kit::keyed::Keyed) with the same bounds would.
//!
//! Keys are hashed with [`FastState`] (seeded per table). The state file is
//! [`Keyed::save`](crate::kit::keyed::Keyed::save)'s format, keys as their bytes and times
//! as decimal numbers, so a file written by either loads in the other.

use std::hash::{BuildHasher, Hasher};
use std::path::Path;

use crate::engine::escapement::Ctx;
use crate::kit::keyed::{
    Evictions, FastState, KEY_CAP, StateCodec, StateError, StateWriter, cap_key, load_state,
};
use crate::kit::prefetch_line;

/// The most entries a table holds, whatever `max_keys` says (an entry's number takes at
/// most 31 bits of an index word).
const MAX_ENTRIES: usize = 1 << 31;

/// The arena's size when the first key comes.
#[cfg(not(test))]
const ARENA_START: usize = 64 << 10;
/// Small in tests, so that their arenas grow too.
#[cfg(test)]
const ARENA_START: usize = 4096;

/// The most entries the ring and the index are made for at once (so that the default
/// `max_keys`, 100,000, never waits for them to grow): their memory is only reserved, and
/// becomes resident as keys come (the ring's in order, the index's a page at a time).
/// Beyond it they double as needed.
#[cfg(not(test))]
const PRESIZED_ENTRIES: usize = 1 << 17;
/// Small in tests, so that their small tables grow too.
#[cfg(test)]
const PRESIZED_ENTRIES: usize = 4;

/// The bit set in every occupied index word, so an empty slot (0) is never one.
const OCCUPIED: u64 = 1 << 63;

/// The bit set in an entry's `len` once its key moved to a newer entry.
const DEAD: u32 = 1 << 31;

/// The longest key held (what [`cap_key`] leaves).
const KEY_MAX: usize = KEY_CAP + 1;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The index word of this entry without its number: the hash's high bits.
    tag: u64,
    /// When the key was seen (the caller's unit, `dedup`'s Unix milliseconds).
    time: u64,
    /// Where its bytes start in the arena.
    pos: usize,
    /// Its length, with [`DEAD`] set once the key moved to a newer entry.
    len: u32,
}

impl Entry {
    const EMPTY: Entry = Entry {
        tag: 0,
        time: 0,
        pos: 0,
        len: 0,
    };

    #[inline]
    fn bytes(&self) -> usize {
        (self.len & !DEAD) as usize
    }

    #[inline]
    fn live(&self) -> bool {
        self.len & DEAD == 0
    }
}

/// The keys seen and when, evicted first in, first out; see the module doc.
pub struct SeenKeys {
    /// Index words (0: empty); the length is a power of two.
    slots: Vec<u64>,
    /// `slots.len() - 1`.
    idx_mask: usize,
    /// The live entries the index takes before it doubles (half its slots).
    idx_limit: usize,
    /// The entries, entry number `s` at `s & (ring_cap - 1)`; filled by pushing until it
    /// first holds `ring_cap` entries.
    ring: Vec<Entry>,
    /// The ring's size: a power of two, at most `2^seq_bits`.
    ring_cap: usize,
    /// The number of the oldest entry, and of the next one.
    front: u64,
    back: u64,
    /// How many low bits of an index word hold the entry's number.
    seq_bits: u32,
    /// The hash bits a tag keeps: those above `seq_bits` (fewer in tests that force
    /// collisions).
    tag_mask: u64,
    /// Live entries (the ring's length less the dead ones).
    live: usize,
    /// The bytes of the keys in the ring, dead ones included (counted against `max_bytes`).
    bytes: usize,
    max_keys: usize,
    /// `max_keys` within [`MAX_ENTRIES`]: the ring's length never exceeds it.
    cap_entries: usize,
    max_bytes: usize,
    arena: Vec<u8>,
    /// Where the next key's bytes go.
    head: usize,
    /// While the bytes wrap around (the newest at the arena's beginning, the oldest nearer
    /// its end), the number of the first entry at the beginning: the bytes wrap while
    /// `front < wrap_seq`.
    wrap_seq: u64,
    hasher: FastState,
    evicted: Evictions,
}

impl std::fmt::Debug for SeenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenKeys")
            .field("keys", &self.live)
            .field("bytes", &self.bytes)
            .field("max_keys", &self.max_keys)
            .field("max_bytes", &self.max_bytes)
            .field("evictions", &self.evicted.total())
            .finish()
    }
}

/// Copies a key of the same length as `dst`: short ones as two overlapping words, without
/// the call `copy_from_slice` makes for a length it does not know.
#[inline(always)]
fn copy_key(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if (8..=16).contains(&n)
        && let (Some(a), Some(b)) = (src.first_chunk::<8>(), src.last_chunk::<8>())
    {
        let (a, b) = (*a, *b);
        if let Some(d) = dst.first_chunk_mut::<8>() {
            *d = a;
        }
        if let Some(d) = dst.last_chunk_mut::<8>() {
            *d = b;
        }
    } else if (17..=32).contains(&n)
        && let (Some(a), Some(b)) = (src.first_chunk::<16>(), src.last_chunk::<16>())
    {
        let (a, b) = (*a, *b);
        if let Some(d) = dst.first_chunk_mut::<16>() {
            *d = a;
        }
        if let Some(d) = dst.last_chunk_mut::<16>() {
            *d = b;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

impl SeenKeys {
    /// An empty table holding at most `max_keys` keys (at least one) of at most
    /// `max_bytes` bytes in total (at least one key at its longest, `KEY_CAP + 1`).
    pub fn new(max_keys: usize, max_bytes: usize) -> Self {
        let max_keys = max_keys.max(1);
        let cap_entries = max_keys.min(MAX_ENTRIES);
        let seq_bits = cap_entries.next_power_of_two().trailing_zeros().max(1);
        let ring_cap = (1usize << seq_bits).min(PRESIZED_ENTRIES);
        let index = 2 * ring_cap;
        SeenKeys {
            slots: vec![0; index],
            idx_mask: index - 1,
            idx_limit: index / 2,
            ring: Vec::with_capacity(ring_cap),
            ring_cap,
            front: 0,
            back: 0,
            seq_bits,
            tag_mask: !((1u64 << seq_bits) - 1),
            live: 0,
            bytes: 0,
            max_keys,
            cap_entries,
            max_bytes: max_bytes.max(KEY_MAX),
            arena: Vec::new(),
            head: 0,
            wrap_seq: 0,
            hasher: FastState::default(),
            evicted: Evictions::default(),
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The keys' bytes counted against `max_bytes`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The bound on keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How many keys were evicted to keep the bounds, since creation.
    pub fn evictions(&self) -> u64 {
        self.evicted.total()
    }

    /// The hash of `key`, for [`prefetch`](SeenKeys::prefetch) and
    /// [`seen_or_insert`](SeenKeys::seen_or_insert).
    #[inline]
    pub fn hash(&self, key: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        h.finish()
    }

    /// The index word of `hash` without an entry number.
    #[inline]
    fn tag(&self, hash: u64) -> u64 {
        (hash & self.tag_mask) | OCCUPIED
    }

    #[inline]
    fn seq_mask(&self) -> u64 {
        (1u64 << self.seq_bits) - 1
    }

    /// The slot where the probe for a word (or a tag) starts.
    #[inline]
    fn home(&self, word: u64) -> usize {
        ((word >> self.seq_bits) as usize) & self.idx_mask
    }

    /// The ring place of entry number `seq` (or of the entry an index word names).
    #[inline]
    fn at(&self, seq: u64) -> usize {
        (seq as usize) & (self.ring_cap - 1)
    }

    /// How many entries the ring holds, dead ones included.
    #[inline]
    fn ring_len(&self) -> usize {
        (self.back - self.front) as usize
    }

    /// Starts reading the index slot where the lookup of `hash` begins.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let at = self.home(self.tag(hash));
        prefetch_line(self.slots.as_ptr().wrapping_add(at).cast());
    }

    /// Starts reading the index slot of the `nth` oldest entry, which a new key evicts
    /// when the table is full (nothing beyond the ring).
    #[inline]
    pub fn prefetch_oldest(&self, nth: usize) {
        if nth < self.ring_len() {
            let e = &self.ring[self.at(self.front + nth as u64)];
            let at = self.home(e.tag);
            prefetch_line(self.slots.as_ptr().wrapping_add(at).cast());
        }
    }

    /// Whether a new key now evicts one (the ring is at `max_keys`, or the bytes are
    /// within a long key of `max_bytes`).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.ring_len() >= self.cap_entries || self.bytes + KEY_MAX > self.max_bytes
    }

    /// The slot and ring place of `key` (whose tag is `tag`), or the empty slot ending the
    /// probe.
    #[inline(always)]
    fn find(&self, key: &[u8], tag: u64) -> Result<(usize, usize), usize> {
        let not_seq = !self.seq_mask();
        let mut i = self.home(tag);
        loop {
            let w = self.slots[i];
            if w == 0 {
                return Err(i);
            }
            if w & not_seq == tag {
                let at = self.at(w);
                let e = &self.ring[at];
                if e.len as usize == key.len()
                    && self.arena.get(e.pos..e.pos + key.len()) == Some(key)
                {
                    return Ok((i, at));
                }
            }
            i = (i + 1) & self.idx_mask;
        }
    }

    /// When `key` (whose [`hash`](SeenKeys::hash) is `hash`) was seen, if held.
    pub fn get(&self, key: &[u8], hash: u64) -> Option<u64> {
        if key.len() > KEY_MAX {
            let mut k = key.to_vec();
            cap_key(&mut k);
            return self.get(&k, self.hash(&k));
        }
        let (_, at) = self.find(key, self.tag(hash)).ok()?;
        Some(self.ring[at].time)
    }

    /// Whether `key` (whose [`hash`](SeenKeys::hash) is `hash`) was seen less than
    /// `within` before `now`; if not, it is remembered as seen `now`, as the newest key
    /// (evicting the oldest, counted, if the table is full). Keys made from input are
    /// brought within `KEY_CAP + 1` bytes by [`cap_key`] first; one still longer is taken
    /// as `cap_key` makes it (with a second hash).
    #[inline(always)]
    pub fn seen_or_insert(&mut self, key: &[u8], hash: u64, now: u64, within: u64) -> bool {
        if key.len() > KEY_MAX {
            return self.seen_or_insert_long(key, now, within);
        }
        let tag = self.tag(hash);
        match self.find(key, tag) {
            Ok((slot, at)) => {
                if now.saturating_sub(self.ring[at].time) < within {
                    return true;
                }
                self.kill(slot, at);
                self.push_new(key, tag, now, None);
            }
            Err(empty) => self.push_new(key, tag, now, Some(empty)),
        }
        false
    }

    /// [`seen_or_insert`](SeenKeys::seen_or_insert) for event times, which may come out
    /// of order: `key` is a repeat if seen less than `within` before or after `t`. If not,
    /// a key seen earlier is remembered as seen at `t` (the newest key); one seen `within`
    /// or more after `t` stays as it is (`t` is late for it).
    pub fn seen_or_insert_at(&mut self, key: &[u8], hash: u64, t: u64, within: u64) -> bool {
        if key.len() > KEY_MAX {
            let mut k = key.to_vec();
            cap_key(&mut k);
            let h = self.hash(&k);
            return self.seen_or_insert_at(&k, h, t, within);
        }
        let tag = self.tag(hash);
        match self.find(key, tag) {
            Ok((slot, at)) => {
                let seen = self.ring[at].time;
                if seen.abs_diff(t) < within {
                    return true;
                }
                if t > seen {
                    self.kill(slot, at);
                    self.push_new(key, tag, t, None);
                }
            }
            Err(empty) => self.push_new(key, tag, t, Some(empty)),
        }
        false
    }

    #[cold]
    fn seen_or_insert_long(&mut self, key: &[u8], now: u64, within: u64) -> bool {
        let mut k = key.to_vec();
        cap_key(&mut k);
        let h = self.hash(&k);
        self.seen_or_insert(&k, h, now, within)
    }

    /// Remembers `key` as seen at `time`, as the newest key (what loading a state file
    /// does, oldest first): a held key is moved there with the new time; a new one evicts
    /// the oldest (counted) if the table is full.
    pub fn insert(&mut self, key: &[u8], time: u64) {
        if key.len() > KEY_MAX {
            let mut k = key.to_vec();
            cap_key(&mut k);
            return self.insert(&k, time);
        }
        let tag = self.tag(self.hash(key));
        match self.find(key, tag) {
            Ok((slot, at)) => {
                self.kill(slot, at);
                self.push_new(key, tag, time, None);
            }
            Err(empty) => self.push_new(key, tag, time, Some(empty)),
        }
    }

    /// The entry at ring place `at`, whose index word is in `slot`, is dead: out of the
    /// index and the count, its place and bytes left until it reaches the front.
    #[cold]
    fn kill(&mut self, slot: usize, at: usize) {
        self.ring[at].len |= DEAD;
        self.live -= 1;
        self.delete_slot(slot);
    }

    /// Adds `key` (not held, at most `KEY_CAP + 1` bytes) as the newest entry; `empty` is
    /// the slot its probe ended at, if nothing changed the index since.
    #[inline(always)]
    fn push_new(&mut self, key: &[u8], tag: u64, time: u64, mut empty: Option<usize>) {
        let n = key.len();
        // The bounds, as `Keyed` keeps them: by count first, then by bytes (never both
        // with the ring empty: a key fits `max_bytes` alone).
        while self.ring_len() >= self.cap_entries || self.bytes + n > self.max_bytes {
            self.evict_front();
            empty = None;
        }
        let wrapped = self.front < self.wrap_seq;
        let end = if wrapped {
            self.ring[self.at(self.front)].pos
        } else {
            self.arena.len()
        };
        let pos = if self.head + n <= end {
            self.head
        } else {
            empty = None;
            self.room_for(n)
        };
        if self.live >= self.idx_limit {
            self.grow_index();
            empty = None;
        }
        if self.ring_len() == self.ring_cap {
            self.grow_ring();
        }
        let slot = match empty {
            Some(i) => i,
            None => self.empty_slot(tag),
        };
        let seq = self.back;
        self.slots[slot] = tag | (seq & self.seq_mask());
        copy_key(&mut self.arena[pos..pos + n], key);
        let at = self.at(seq);
        let e = Entry {
            tag,
            time,
            pos,
            len: n as u32,
        };
        if at < self.ring.len() {
            self.ring[at] = e;
        } else {
            self.ring.push(e);
        }
        self.back += 1;
        self.live += 1;
        self.bytes += n;
        self.head = pos + n;
    }

    /// The first empty slot of the probe for `tag`.
    #[inline(always)]
    fn empty_slot(&self, tag: u64) -> usize {
        let mut i = self.home(tag);
        while self.slots[i] != 0 {
            i = (i + 1) & self.idx_mask;
        }
        i
    }

    /// Where `n` more bytes go in the arena when they do not fit at the head: at the
    /// beginning (the bytes wrap), else in a bigger arena. At its full size there is always
    /// room (see the module doc); should there not be, the oldest keys are evicted
    /// (counted) until there is.
    #[cold]
    fn room_for(&mut self, n: usize) -> usize {
        loop {
            if self.front == self.back {
                self.head = 0;
                if self.arena.len() < n {
                    self.grow_arena(n);
                }
                return 0;
            }
            let r = self.ring[self.at(self.front)].pos;
            if self.front >= self.wrap_seq {
                if self.head + n <= self.arena.len() {
                    return self.head;
                }
                if n <= r {
                    self.wrap_seq = self.back;
                    return 0;
                }
            } else if self.head + n <= r {
                return self.head;
            }
            if self.arena.len() < self.arena_max() {
                self.grow_arena(n);
            } else {
                debug_assert!(false, "no room for {n} bytes in a full-size arena");
                self.evict_front();
            }
        }
    }

    /// The arena's largest size: `max_bytes` of keys and the gap left when they wrap
    /// (less than one key at its longest).
    fn arena_max(&self) -> usize {
        self.max_bytes.saturating_add(KEY_MAX)
    }

    /// Doubles the arena (at least room for `n` more bytes, at most
    /// [`arena_max`](SeenKeys::arena_max)), the keys moved to its beginning in order.
    fn grow_arena(&mut self, n: usize) {
        let wrapped = self.front < self.wrap_seq;
        let (upper, lower) = if self.front == self.back {
            ((0, 0), (0, 0))
        } else {
            let start = self.ring[self.at(self.front)].pos;
            if wrapped {
                let last = self.ring[self.at(self.wrap_seq - 1)];
                ((start, last.pos + last.bytes()), (0, self.head))
            } else {
                ((start, self.head), (0, 0))
            }
        };
        let used = (upper.1 - upper.0) + (lower.1 - lower.0);
        let size = (self.arena.len() * 2)
            .max(ARENA_START)
            .min(self.arena_max())
            .max(used + n);
        let mut arena = vec![0u8; size];
        arena[..upper.1 - upper.0].copy_from_slice(&self.arena[upper.0..upper.1]);
        arena[upper.1 - upper.0..used].copy_from_slice(&self.arena[lower.0..lower.1]);
        // The upper part moves to the beginning, the lower after it.
        for seq in self.front..self.back {
            let at = self.at(seq);
            let e = &mut self.ring[at];
            if wrapped && seq >= self.wrap_seq {
                e.pos += upper.1 - upper.0;
            } else {
                e.pos -= upper.0;
            }
        }
        self.arena = arena;
        self.head = used;
        self.wrap_seq = self.front;
    }

    /// Doubles the ring, each entry moved to its place in the new one.
    fn grow_ring(&mut self) {
        let mut ring = vec![Entry::EMPTY; self.ring_cap * 2];
        let mask = ring.len() - 1;
        for seq in self.front..self.back {
            ring[(seq as usize) & mask] = self.ring[self.at(seq)];
        }
        self.ring = ring;
        self.ring_cap *= 2;
    }

    /// Doubles the index, each word moved to its new home.
    fn grow_index(&mut self) {
        let bigger = vec![0; self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, bigger);
        self.idx_mask = self.slots.len() - 1;
        self.idx_limit = self.slots.len() / 2;
        for w in old.into_iter().filter(|&w| w != 0) {
            let i = self.empty_slot(w);
            self.slots[i] = w;
        }
    }

    /// Empties `slot`, moving back the words after it that may take its place (so that
    /// every probe still finds its key before an empty slot).
    #[inline(always)]
    fn delete_slot(&mut self, slot: usize) {
        let mask = self.idx_mask;
        let mut hole = slot;
        let mut j = slot;
        loop {
            j = (j + 1) & mask;
            let w = self.slots[j];
            if w == 0 {
                break;
            }
            let home = self.home(w);
            // The word at j may fill the hole if its home is not after the hole (going
            // round from the hole to j).
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = w;
                hole = j;
            }
        }
        self.slots[hole] = 0;
    }

    /// Removes the oldest entry (the ring is not empty); whether it was live (what
    /// eviction and expiry count).
    #[inline(always)]
    fn pop_front(&mut self) -> bool {
        let e = self.ring[self.at(self.front)];
        let live = e.live();
        if live {
            let word = e.tag | (self.front & self.seq_mask());
            let mut i = self.home(word);
            loop {
                let w = self.slots[i];
                if w == word {
                    self.delete_slot(i);
                    break;
                }
                if w == 0 {
                    debug_assert!(false, "a live entry missing from the index");
                    break;
                }
                i = (i + 1) & self.idx_mask;
            }
            self.live -= 1;
        }
        self.front += 1;
        self.bytes -= e.bytes();
        if self.front == self.back {
            self.head = 0;
        }
        live
    }

    /// Removes the oldest entry to make room, counting it as an eviction if it was live.
    #[inline(always)]
    fn evict_front(&mut self) {
        if self.pop_front() {
            self.evicted.count();
        }
    }

    /// Forgets the oldest keys seen `within` or longer before `now` (not counted as
    /// evictions), stopping at the first that is not; returns how many.
    pub fn expire(&mut self, now: u64, within: u64) -> usize {
        let mut n = 0;
        while self.front < self.back {
            let e = &self.ring[self.at(self.front)];
            if e.live() && now.saturating_sub(e.time) < within {
                break;
            }
            if self.pop_front() {
                n += 1;
            }
        }
        n
    }

    /// Makes every time at most `max` (keys saved with a time ahead of the clock).
    pub fn clamp_times(&mut self, max: u64) {
        for seq in self.front..self.back {
            let at = self.at(seq);
            self.ring[at].time = self.ring[at].time.min(max);
        }
    }

    /// The keys held and when they were seen, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> {
        (self.front..self.back)
            .map(|seq| &self.ring[self.at(seq)])
            .filter(|e| e.live())
            .map(|e| {
                let key = self.arena.get(e.pos..e.pos + e.bytes());
                (key.unwrap_or(&[]), e.time)
            })
    }

    /// Logs the evictions since the last report, if any, as
    /// [`Keyed::report_evictions`](crate::kit::keyed::Keyed::report_evictions) does (at
    /// most [`LOG_BURST`](crate::kit::on_error::LOG_BURST) lines a second).
    pub fn report_evictions(&mut self, cog: &str, cx: &mut Ctx<'_>) {
        self.evicted.report(cog, self.max_keys, cx);
    }

    /// Writes the keys to `path` atomically in [`Keyed::save`](crate::kit::keyed::Keyed::save)'s
    /// format (`deadbeat-state FORMAT VERSION`, one `KEY TIME` line per key, oldest first).
    pub fn save(&self, path: &Path, format: &str, version: u32) -> Result<(), StateError> {
        let mut w = StateWriter::new(format, version, self.live);
        let mut time = Vec::new();
        for (key, at) in self.iter() {
            time.clear();
            at.encode(&mut time);
            w.entry(key, &time);
        }
        w.finish(path)
    }

    /// Inserts the keys saved in `path` (by [`save`](SeenKeys::save) or `Keyed::save`
    /// with the same `format` and `version`), oldest first, so the order and the bounds
    /// hold (what does not fit is evicted, counted). Returns how many were read: 0 when the
    /// file does not exist. Nothing is inserted unless the whole file checks out.
    pub fn load(&mut self, path: &Path, format: &str, version: u32) -> Result<usize, StateError> {
        let entries = load_state::<Vec<u8>, u64>(path, format, version)?;
        for (key, at) in &entries {
            self.insert(key, *at);
        }
        Ok(entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SeenKeys {
        /// Checks every invariant the module doc states, in full (slow: tests only).
        fn check(&self) {
            let entries: Vec<(u64, Entry)> = (self.front..self.back)
                .map(|seq| (seq, self.ring[self.at(seq)]))
                .collect();
            let live = entries.iter().filter(|(_, e)| e.live()).count();
            assert_eq!(live, self.live, "live count");
            let bytes: usize = entries.iter().map(|(_, e)| e.bytes()).sum();
            assert_eq!(bytes, self.bytes, "bytes count");
            assert!(entries.len() <= self.cap_entries);
            assert!(entries.len() <= self.ring.len());
            assert!(self.bytes <= self.max_bytes);
            assert!(self.arena.len() <= self.arena_max());
            let words = self.slots.iter().filter(|&&w| w != 0).count();
            assert_eq!(words, self.live, "index words");
            assert!(self.live <= self.idx_limit);
            assert_eq!(self.idx_limit * 2, self.slots.len());
            // Every live entry is found by its probe, under its own number; keys do not
            // overlap in the arena.
            let mut spans = Vec::new();
            for (seq, e) in &entries {
                let key = &self.arena[e.pos..e.pos + e.bytes()];
                spans.push((e.pos, e.pos + e.bytes()));
                if e.live() {
                    let (slot, found) = self.find(key, e.tag).expect("live key in the index");
                    assert_eq!(found, self.at(*seq), "found at its own place");
                    assert_eq!(self.slots[slot] & self.seq_mask(), seq & self.seq_mask());
                }
            }
            spans.retain(|(a, b)| a < b);
            spans.sort();
            for w in spans.windows(2) {
                assert!(w[0].1 <= w[1].0, "keys overlap: {w:?}");
            }
            if self.front == self.back {
                assert_eq!(self.head, 0);
            }
        }

        /// Forces hashes to share all but the bits of `mask`.
        fn with_hash_mask(mut self, mask: u64) -> Self {
            self.tag_mask &= mask;
            self
        }
    }

    fn seen(t: &mut SeenKeys, key: &[u8], now: u64, within: u64) -> bool {
        let h = t.hash(key);
        t.seen_or_insert(key, h, now, within)
    }

    fn held(t: &SeenKeys) -> Vec<(Vec<u8>, u64)> {
        t.iter().map(|(k, v)| (k.to_vec(), v)).collect()
    }

    #[test]
    fn a_repeat_within_the_time_is_seen_and_a_new_key_inserted() {
        let mut t = SeenKeys::new(10, 1000);
        assert!(!seen(&mut t, b"a", 0, 10));
        assert!(seen(&mut t, b"a", 9, 10));
        assert!(!seen(&mut t, b"b", 9, 10));
        // At `within`, the key is new again and its time the new one.
        assert!(!seen(&mut t, b"a", 10, 10));
        assert!(seen(&mut t, b"a", 19, 10));
        t.check();
        assert_eq!(held(&t), [(b"b".to_vec(), 9), (b"a".to_vec(), 10)]);
        assert_eq!(t.len(), 2);
        // The old place of a stays, dead, until the front passes it.
        assert_eq!(t.bytes(), 3);
        assert_eq!(t.get(b"a", t.hash(b"a")), Some(10));
        assert_eq!(t.get(b"c", t.hash(b"c")), None);
        assert_eq!(t.evictions(), 0);
    }

    #[test]
    fn eviction_by_count_takes_the_oldest_and_is_counted() {
        let mut t = SeenKeys::new(3, 1000);
        for k in [b"1", b"2", b"3", b"4"] {
            assert!(!seen(&mut t, k, 0, 100));
        }
        t.check();
        assert_eq!(t.evictions(), 1);
        assert_eq!(
            held(&t).iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            [b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]
        );
        // 1 was forgotten: new again, evicting 2.
        assert!(!seen(&mut t, b"1", 1, 100));
        assert!(!seen(&mut t, b"2", 1, 100));
        assert!(seen(&mut t, b"4", 1, 100));
        assert_eq!(t.evictions(), 3);
        assert_eq!(t.len(), 3);
        t.check();
    }

    #[test]
    fn eviction_by_bytes_frees_enough_for_the_new_key() {
        let mut t = SeenKeys::new(1000, 300);
        let key = |i: u8, n: usize| vec![i; n];
        assert!(!seen(&mut t, &key(1, 100), 0, 100));
        assert!(!seen(&mut t, &key(2, 100), 0, 100));
        assert!(!seen(&mut t, &key(3, 90), 0, 100));
        assert_eq!(t.evictions(), 0);
        // 290 + 257 > 300, and so are 190 + 257 and 90 + 257: 1, 2 and 3 go.
        assert!(!seen(&mut t, &key(4, 257), 0, 100));
        assert_eq!(t.evictions(), 3);
        assert_eq!(t.bytes(), 257);
        assert!(!seen(&mut t, &key(5, 43), 0, 100));
        assert_eq!(t.evictions(), 3);
        assert_eq!(t.bytes(), 300);
        assert!(!seen(&mut t, &key(6, 1), 0, 100));
        assert_eq!(t.evictions(), 4);
        assert_eq!(held(&t).len(), 2);
        t.check();
    }

    #[test]
    fn the_arena_wraps_around_and_keys_stay_whole() {
        // Keys of 1 to 257 bytes through a table bounded by bytes: the arena reaches its
        // full size and the write position goes round it many times.
        let mut t = SeenKeys::new(1000, 1000);
        let mut wraps = 0;
        let mut last_head = 0;
        for i in 0..5000u32 {
            let n = 1 + (i as usize * 37) % 257;
            let mut k = vec![(i % 251) as u8; n];
            k[0] = (i >> 8) as u8;
            k[n - 1] = i as u8;
            assert!(!seen(&mut t, &k, u64::from(i), u64::MAX), "{i}");
            if t.head < last_head {
                wraps += 1;
            }
            last_head = t.head;
            // The newest key reads back whole, and is a repeat.
            assert!(seen(&mut t, &k, u64::from(i), u64::MAX), "{i}");
            if i % 97 == 0 {
                t.check();
            }
        }
        t.check();
        assert!(wraps > 100, "{wraps} wraps");
        assert_eq!(t.arena.len(), t.arena_max());
        assert!(t.evictions() > 4000);
    }

    #[test]
    fn the_arena_grows_while_wrapped_and_keys_stay_whole() {
        // Bounded by count, with room for many bytes: the arena wraps before it is at its
        // full size, then longer keys make it grow while wrapped (and again unwrapped).
        let mut t = SeenKeys::new(50, 100_000);
        let (mut grown_wrapped, mut wraps) = (0, 0);
        for i in 0..3000u32 {
            let n = if i < 1000 {
                100
            } else {
                100 + (i as usize - 1000) / 13
            }
            .min(KEY_MAX);
            let mut k = vec![(i % 253) as u8; n];
            k[..4].copy_from_slice(&i.to_le_bytes());
            let (wrapped, size) = (t.front < t.wrap_seq, t.arena.len());
            assert!(!seen(&mut t, &k, 0, 10), "{i}");
            if wrapped && t.arena.len() > size {
                grown_wrapped += 1;
            }
            if !wrapped && t.front < t.wrap_seq {
                wraps += 1;
            }
            // Every key held reads back whole: the newest 50 are repeats.
            for back in i.saturating_sub(49)..=i {
                let n = if back < 1000 {
                    100
                } else {
                    100 + (back as usize - 1000) / 13
                };
                let mut k = vec![(back % 253) as u8; n.min(KEY_MAX)];
                k[..4].copy_from_slice(&back.to_le_bytes());
                assert!(seen(&mut t, &k, 0, 10), "{back} after {i}");
            }
            if i % 50 == 0 {
                t.check();
            }
        }
        t.check();
        assert!(grown_wrapped > 0 && wraps > 10, "{grown_wrapped} {wraps}");
        assert!(t.arena.len() < t.arena_max());
        assert_eq!(t.len(), 50);
    }

    #[test]
    fn colliding_hashes_are_told_apart_by_the_keys() {
        // All hashes equal (one home, one tag), then one home with tags that differ.
        for mask in [0, 0xffff_0000_0000_0000] {
            let mut t = SeenKeys::new(50, 10_000).with_hash_mask(mask);
            for i in 0..200u32 {
                let k = format!("key{i}");
                assert!(!seen(&mut t, k.as_bytes(), 0, 10), "{mask:x} {i}");
                // The keys still held are repeats, the evicted ones new.
                let back = format!("key{}", i.saturating_sub(49));
                assert!(seen(&mut t, back.as_bytes(), 0, 10), "{mask:x} {i}");
                t.check();
            }
            assert!(!seen(&mut t, b"key0", 0, 10));
            assert_eq!(t.len(), 50);
            // Keys of one length differing in one byte, and prefixes of each other.
            for k in [&b"key"[..], b"ke", b"key1x", b""] {
                assert!(!seen(&mut t, k, 1, 10), "{k:?}");
                assert!(seen(&mut t, k, 1, 10), "{k:?}");
            }
            t.check();
        }
    }

    #[test]
    fn long_keys_are_capped_as_cap_key_makes_them() {
        let mut t = SeenKeys::new(100, 10_000);
        let long = |tail: u8| {
            let mut k = vec![b'h'; 10_000];
            k.push(tail);
            k
        };
        assert!(!seen(&mut t, &long(1), 0, 10));
        assert!(!seen(&mut t, &long(2), 0, 10));
        assert!(seen(&mut t, &long(1), 0, 10));
        let mut capped = long(1);
        cap_key(&mut capped);
        assert!(seen(&mut t, &capped, 0, 10), "held as its capped form");
        assert_eq!(t.bytes(), 2 * (KEY_CAP + 1));
        assert!(held(&t).iter().all(|(k, _)| k.len() == KEY_CAP + 1));
        t.check();
    }

    #[test]
    fn expiry_takes_from_the_oldest_end_and_skips_dead_places() {
        let mut t = SeenKeys::new(10, 1000);
        for i in 0..6u64 {
            t.insert(format!("k{i}").as_bytes(), i * 10);
        }
        // k1 seen again later (times out of order, as a file edited by hand may have).
        t.insert(b"k1", 55);
        // k0, k2 and k3 are past, k1's old place goes with them uncounted, k4 is not.
        assert_eq!(t.expire(41, 10), 3);
        t.check();
        assert_eq!(
            held(&t),
            [
                (b"k4".to_vec(), 40),
                (b"k5".to_vec(), 50),
                (b"k1".to_vec(), 55)
            ]
        );
        assert_eq!(t.expire(41, 10), 0);
        assert_eq!(t.expire(1000, 10), 3);
        assert!(t.is_empty());
        assert_eq!(t.bytes(), 0);
        assert_eq!(t.evictions(), 0);
        t.check();
        // Empty, it starts over at the arena's beginning.
        assert!(!seen(&mut t, b"again", 2000, 10));
        assert_eq!(t.head, 5);
    }

    #[test]
    fn times_are_clamped_and_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("deadbeat-seen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("state");
        let mut t = SeenKeys::new(100, 10_000);
        for i in 0..20u64 {
            t.insert(format!("k {i}\n%").as_bytes(), 100 + i);
        }
        t.clamp_times(110);
        assert_eq!(held(&t)[19], (b"k 19\n%".to_vec(), 110));
        assert_eq!(held(&t)[5], (b"k 5\n%".to_vec(), 105));
        t.save(&path, "dedup", 1).unwrap();
        let mut back = SeenKeys::new(10, 10_000);
        assert_eq!(back.load(&path, "dedup", 1).unwrap(), 20);
        assert_eq!(held(&back), held(&t)[10..]);
        assert_eq!(back.evictions(), 10);
        back.check();
        assert_eq!(back.load(&dir.join("none"), "dedup", 1).unwrap(), 0);
        std::fs::write(&path, b"deadbeat-state dedup 1\nk 1\n").unwrap();
        assert!(matches!(
            back.load(&path, "dedup", 1),
            Err(StateError::Truncated(_))
        ));
        assert_eq!(back.len(), 10, "nothing loaded from a bad file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A small deterministic generator (xorshift), so a failure is reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The model: the module doc's rules written as simply as possible, a queue of
    /// `(key, time, live)` in insertion order searched from end to end.
    #[derive(Default)]
    struct Model {
        order: std::collections::VecDeque<(Vec<u8>, u64, bool)>,
        evictions: u64,
    }

    impl Model {
        fn bytes(&self) -> usize {
            self.order.iter().map(|(k, ..)| k.len()).sum()
        }
        fn held(&self) -> Vec<(Vec<u8>, u64)> {
            let live = self.order.iter().filter(|(.., live)| *live);
            live.map(|(k, t, _)| (k.clone(), *t)).collect()
        }
        fn live(&mut self, key: &[u8]) -> Option<&mut (Vec<u8>, u64, bool)> {
            self.order.iter_mut().find(|(k, _, live)| *live && k == key)
        }
        fn pop(&mut self) -> bool {
            let live = self.order.pop_front().is_some_and(|(.., live)| live);
            if live {
                self.evictions += 1;
            }
            live
        }
        fn push(&mut self, key: &[u8], time: u64, mk: usize, mb: usize) {
            if let Some(e) = self.live(key) {
                e.2 = false;
            }
            while self.order.len() >= mk {
                self.pop();
            }
            while !self.order.is_empty() && self.bytes() + key.len() > mb {
                self.pop();
            }
            self.order.push_back((key.to_vec(), time, true));
        }
        fn seen_or_insert(
            &mut self,
            key: &[u8],
            now: u64,
            within: u64,
            mk: usize,
            mb: usize,
        ) -> bool {
            if self
                .live(key)
                .is_some_and(|e| now.saturating_sub(e.1) < within)
            {
                return true;
            }
            self.push(key, now, mk, mb);
            false
        }
        fn expire(&mut self, now: u64, within: u64) -> usize {
            let mut n = 0;
            while let Some((_, t, live)) = self.order.front() {
                if *live && now.saturating_sub(*t) < within {
                    break;
                }
                if self.order.pop_front().is_some_and(|(.., live)| live) {
                    n += 1;
                }
            }
            n
        }
    }

    /// A random key: mostly short, some empty, some over the cap.
    fn random_key(rng: &mut Rng, distinct: u64) -> Vec<u8> {
        let i = rng.below(distinct);
        let len = match rng.below(10) {
            0 => rng.below(301) as usize,
            1 => 0,
            _ => 1 + (i as usize % 24),
        };
        if len == 0 {
            return Vec::new();
        }
        let mut key = format!("{i}:").into_bytes();
        key.resize(len.max(key.len()), (i % 256) as u8);
        key
    }

    /// What the table is given for a key made from input: the capped key (as `dedup`
    /// gives it), or the key itself when longer than the cap (the table caps it).
    fn given(key: &[u8]) -> Vec<u8> {
        let mut k = key.to_vec();
        if k.len() <= KEY_CAP + 1 {
            cap_key(&mut k);
        }
        k
    }

    fn hash_mask_of_round(round: u64) -> u64 {
        match round % 4 {
            0 => 0,
            1 => 0xf000_0000_0000_0000,
            _ => u64::MAX,
        }
    }

    fn rounds() -> u64 {
        std::env::var("DEADBEAT_SEEN_KEYS_ROUNDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40)
    }

    /// Many random operations on small bounds (the arena wraps and keys are evicted all
    /// the time), times out of order included, with forced hash collisions in some
    /// rounds, against the model.
    #[test]
    fn random_operations_match_the_model() {
        for round in 0..rounds() {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (round + 1).wrapping_mul(0x2545_f491));
            let max_keys = 1 + rng.below(40) as usize;
            let max_bytes = KEY_CAP + 1 + rng.below(2000) as usize;
            let mut t =
                SeenKeys::new(max_keys, max_bytes).with_hash_mask(hash_mask_of_round(round));
            let mut m = Model::default();
            let within = 1 + rng.below(50);
            let mut now = 0u64;
            let distinct = 1 + rng.below(120);
            for op in 0..5000 {
                let what = rng.below(100);
                let mut key = random_key(&mut rng, distinct);
                if op > 2500 && rng.below(2) == 0 {
                    // Longer keys later on: the arena must grow with the bytes wrapped.
                    key.resize(100 + rng.below(158) as usize, b'+');
                }
                if what < 3 {
                    now += rng.below(20);
                    assert_eq!(t.expire(now, within), m.expire(now, within), "{round}/{op}");
                } else if what < 8 {
                    // As loading does: any time, out of order too.
                    let at = now.saturating_sub(rng.below(3 * within));
                    t.insert(&given(&key), at);
                    cap_key(&mut key);
                    m.push(&key, at, max_keys, max_bytes);
                } else {
                    let got = seen(&mut t, &given(&key), now, within);
                    cap_key(&mut key);
                    let want = m.seen_or_insert(&key, now, within, max_keys, max_bytes);
                    assert_eq!(got, want, "round {round} op {op}: {key:?}");
                }
                if what.is_multiple_of(10) {
                    now += 1;
                }
                assert_eq!(t.len(), m.held().len(), "round {round} op {op}");
                assert_eq!(t.evictions(), m.evictions, "round {round} op {op}");
                assert_eq!(t.bytes(), m.bytes(), "round {round} op {op}");
                if op % 64 == 0 {
                    t.check();
                    assert_eq!(held(&t), m.held(), "round {round} op {op}");
                }
            }
            t.check();
            assert_eq!(held(&t), m.held(), "round {round}");
        }
    }

    /// `dedup`'s pattern (expiry at each batch's start, then each datum's key looked up
    /// and inserted if new, at one time a batch) run on this table and on `Keyed` as
    /// `dedup` used it: the same answers, counts, bytes and keys in the same order, and
    /// byte-identical state files.
    #[test]
    fn dedup_pattern_matches_keyed() {
        use crate::kit::keyed::Keyed;
        use std::rc::Rc;
        fn len(k: &Rc<[u8]>) -> usize {
            k.len()
        }
        let dir = std::env::temp_dir().join(format!("deadbeat-seen-k-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for round in 0..rounds() {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (round + 7).wrapping_mul(0x9e37_79b9));
            let max_keys = 1 + rng.below(60) as usize;
            let max_bytes = KEY_CAP + 1 + rng.below(3000) as usize;
            let mut t =
                SeenKeys::new(max_keys, max_bytes).with_hash_mask(hash_mask_of_round(round));
            let mut k: Keyed<Rc<[u8]>, u64> = Keyed::new(max_keys).with_max_bytes(max_bytes, len);
            let within = 1 + rng.below(30);
            let distinct = 1 + rng.below(200);
            let mut now = 1_000u64;
            for batch in 0..300 {
                now += rng.below(4);
                t.expire(now, within);
                k.expire_oldest(|&at| now.saturating_sub(at) >= within);
                for _ in 0..rng.below(40) {
                    let mut key = random_key(&mut rng, distinct);
                    cap_key(&mut key);
                    let got = seen(&mut t, &key, now, within);
                    let want = k
                        .get(&key[..])
                        .is_some_and(|&at| now.saturating_sub(at) < within);
                    if !want {
                        k.insert(Rc::from(&key[..]), now);
                    }
                    assert_eq!(got, want, "round {round} batch {batch}: {key:?}");
                }
                assert_eq!(
                    (t.len(), t.bytes()),
                    (k.len(), k.bytes()),
                    "{round}/{batch}"
                );
                assert_eq!(t.evictions(), k.evictions(), "round {round} batch {batch}");
            }
            let from_keyed: Vec<_> = k.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
            assert_eq!(held(&t), from_keyed, "round {round}");
            t.check();
            let (a, b) = (dir.join("seen"), dir.join("keyed"));
            t.save(&a, "dedup", 1).unwrap();
            k.save(&b, "dedup", 1).unwrap();
            assert_eq!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&b).unwrap(),
                "round {round}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
