//! Reuse of record storage on one thread.
//!
//! A line supply builds a record per line and a drain drops it a moment later, a whole
//! batch at a time. Handed to the allocator, those thousands of frees per batch coalesce
//! into large free chunks and make glibc sweep its fast bins on every batch; the allocations
//! of the next batch then miss its per-thread cache. Drains that are done with records give
//! them back here instead ([`recycle`]), and line supplies and parsers take their field
//! vectors and text buffers from here ([`fill_fields`], [`buffer`], [`text`]), so a steady
//! stream runs with almost no allocator calls.
//!
//! The stash is per thread (the escapement thread; a worker thread keeps its own) and
//! bounded: at most [`MAX_SPARES`] field vectors, [`MAX_CLASS_BYTES`] per buffer size class
//! and [`MAX_STASHED_BYTES`] in all (each spare counted with its bookkeeping); beyond that,
//! and for buffers above the largest class, storage goes back to the allocator as usual.
//! Everything here is an optimisation only: a record that is never recycled is simply
//! freed.

use std::cell::RefCell;

use crate::record::{Key, Map, Record, SharedStr, Value};

/// Field vectors kept.
pub const MAX_SPARES: usize = 16384;
/// Bytes kept in buffers of one size class: a class nobody takes from (small strings a
/// parser outside the pool made) cannot crowd out the others.
pub const MAX_CLASS_BYTES: usize = 2 << 20;
/// Bytes kept in all, buffers and field vectors.
pub const MAX_STASHED_BYTES: usize = 8 << 20;
/// Field vectors with more room than this are not kept.
const MAX_ENTRIES: usize = 64;
/// Buffers are kept by size class: class `c` holds buffers with room for `2^c` to
/// `2^(c+1) - 1` bytes, so any spare of the class a request rounds up to is large enough.
const MIN_CLASS: u32 = 4;
const MAX_CLASS: u32 = 14;
const CLASSES: usize = (MAX_CLASS - MIN_CLASS + 1) as usize;
/// What a spare costs beyond its bytes: the `Vec` kept here and the allocator's header.
const SPARE_OVERHEAD: usize = std::mem::size_of::<Vec<u8>>() + 16;

#[derive(Default)]
struct Stash {
    entries: Vec<Vec<(Key, Value)>>,
    buffers: [Vec<Vec<u8>>; CLASSES],
    class_bytes: [usize; CLASSES],
    stashed_bytes: usize,
}

/// The class whose spares all have room for `n` bytes; `None` above the largest.
#[inline]
fn class_for(n: usize) -> Option<u32> {
    let c = n.max(1).next_power_of_two().trailing_zeros().max(MIN_CLASS);
    (c <= MAX_CLASS).then_some(c)
}

/// What a stashed field vector counts against [`MAX_STASHED_BYTES`] (it is empty).
fn entries_cost(v: &mut Vec<(Key, Value)>) -> usize {
    std::mem::size_of_val(v.spare_capacity_mut()) + SPARE_OVERHEAD
}

impl Stash {
    #[inline]
    fn keep_buffer(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if !(1 << MIN_CLASS..1 << (MAX_CLASS + 1)).contains(&cap) {
            return;
        }
        let class = (usize::BITS - 1 - cap.leading_zeros()) as usize - MIN_CLASS as usize;
        let cost = cap + SPARE_OVERHEAD;
        if self.class_bytes[class] + cost > MAX_CLASS_BYTES
            || self.stashed_bytes + cost > MAX_STASHED_BYTES
        {
            return;
        }
        buf.clear();
        self.class_bytes[class] += cost;
        self.stashed_bytes += cost;
        self.buffers[class].push(buf);
    }

    fn take_entries(&mut self) -> Option<Vec<(Key, Value)>> {
        let mut v = self.entries.pop()?;
        self.stashed_bytes -= entries_cost(&mut v);
        Some(v)
    }

    fn take_buffer(&mut self, class: u32) -> Option<Vec<u8>> {
        let class = (class - MIN_CLASS) as usize;
        let b = self.buffers[class].pop()?;
        let cost = b.capacity() + SPARE_OVERHEAD;
        self.class_bytes[class] -= cost;
        self.stashed_bytes -= cost;
        Some(b)
    }

    fn keep_value(&mut self, v: Value) {
        match v {
            Value::Bytes(b) => self.keep_buffer(b),
            Value::Str(s) => self.keep_buffer(s.into_bytes()),
            Value::List(list) => list.into_iter().for_each(|v| self.keep_value(v)),
            Value::Map(m) => self.keep_entries(m.into_entries()),
            _ => {}
        }
    }

    fn keep_entries(&mut self, mut entries: Vec<(Key, Value)>) {
        // Storage is taken out where it lies, and the vector is then emptied without a
        // generic drop per value (a third of recycling) nor a copy of each value out of it.
        for (_, v) in entries.iter_mut() {
            match v {
                Value::Bytes(b) => self.keep_buffer(std::mem::take(b)),
                Value::Str(s) => self.keep_buffer(std::mem::take(s).into_bytes()),
                Value::List(_) | Value::Map(_) => self.keep_value(std::mem::take(v)),
                Value::Shared(SharedStr::Counted(_)) => *v = Value::Null,
                // Listed rather than `_`: a new variant that owns memory must get an arm.
                Value::Shared(SharedStr::Interned(_) | SharedStr::Inline(_))
                | Value::Null
                | Value::Bool(_)
                | Value::Int(_)
                | Value::Float(_)
                | Value::Time(_)
                | Value::Ip(_)
                | Value::Net(_) => {}
            }
        }
        // SAFETY: no value left owns memory (the arms above took or dropped all that did,
        // and emptied vectors and strings hold no allocation), so forgetting them all is
        // exactly dropping them; and a length of zero is always in bounds.
        unsafe { entries.set_len(0) };
        let cost = entries_cost(&mut entries);
        if entries.capacity() > 0
            && entries.capacity() <= MAX_ENTRIES
            && self.entries.len() < MAX_SPARES
            && self.stashed_bytes + cost <= MAX_STASHED_BYTES
        {
            self.stashed_bytes += cost;
            self.entries.push(entries);
        }
    }
}

thread_local! {
    static STASH: RefCell<Stash> = RefCell::new(Stash::default());
}

/// Runs `f` on this thread's stash; `None` when it is unavailable (thread teardown, or a
/// call from inside another stash operation), in which case callers just allocate.
#[inline]
fn with_stash<T>(f: impl FnOnce(&mut Stash) -> T) -> Option<T> {
    STASH
        .try_with(|s| s.try_borrow_mut().ok().map(|mut s| f(&mut s)))
        .ok()
        .flatten()
}

/// Gives the storage of finished records back for reuse on this thread. (Without a stash,
/// the records are simply dropped with the closure that would have kept them.)
pub fn recycle(records: impl IntoIterator<Item = Record>) {
    with_stash(|s| {
        for r in records {
            s.keep_entries(r.fields.into_entries());
        }
    });
}

/// Gives the storage of one finished value (a removed field, say) back for reuse.
pub fn recycle_value(v: Value) {
    if matches!(
        v,
        Value::Bytes(_) | Value::Str(_) | Value::List(_) | Value::Map(_)
    ) {
        with_stash(|s| s.keep_value(v));
    }
}

/// Fills `fields` (empty) with the fields of a new line record: `key` holding a copy of
/// `bytes`, with room for `n` entries in all. One visit to the stash for both the vector
/// and the buffer.
#[inline]
pub fn fill_fields(fields: &mut Map, key: Key, bytes: &[u8], n: usize) {
    // Everything is stored where it ends up (`Map::append_slot`): a vector or a pair taken
    // or built in one place and then moved to another was copied with wide loads that
    // stalled on the narrow stores just made (store forwarding), most of a line record's
    // cost.
    fn append_empty(fields: &mut Map, key: Key, n: usize) -> &mut Vec<u8> {
        fields.entries_mut().reserve(n.max(1));
        match fields.append_slot(key).set(Value::Bytes(Vec::new())) {
            Value::Bytes(b) => b,
            _ => unreachable!("just stored"),
        }
    }
    debug_assert!(fields.is_empty(), "fill_fields into a map with entries");
    let class = class_for(bytes.len());
    let stashed = with_stash(|s| {
        if let Some(kept) = s.take_entries() {
            *fields.entries_mut() = kept;
        }
        let buf = append_empty(fields, key, n);
        if let Some(b) = class.and_then(|c| s.take_buffer(c)) {
            *buf = b;
        }
    });
    let buf = match stashed {
        Some(()) => match fields.entries_mut().last_mut() {
            Some((_, Value::Bytes(b))) => b,
            _ => return,
        },
        None => append_empty(fields, key, n),
    };
    if buf.capacity() == 0 {
        *buf = match class {
            Some(c) => Vec::with_capacity(1 << c),
            None => Vec::with_capacity(bytes.len()),
        };
    }
    buf.extend_from_slice(bytes);
}

/// An empty buffer with room for at least `n` bytes.
#[inline]
pub fn buffer(n: usize) -> Vec<u8> {
    let Some(class) = class_for(n) else {
        return Vec::with_capacity(n);
    };
    with_stash(|s| s.take_buffer(class))
        .flatten()
        // A new buffer gets the whole class, so it returns to the class it was taken for.
        .unwrap_or_else(|| Vec::with_capacity(1 << class))
}

/// A copy of `bytes` in a reused buffer.
#[inline]
pub fn bytes(src: &[u8]) -> Vec<u8> {
    let mut b = buffer(src.len());
    b.extend_from_slice(src);
    b
}

/// A copy of `s` in a reused buffer.
#[inline]
pub fn text(s: &str) -> String {
    // SAFETY: the buffer holds exactly the bytes of `s`, which is UTF-8.
    unsafe { String::from_utf8_unchecked(bytes(s.as_bytes())) }
}

/// `v.push(x)`, but stored straight into place when there is room. With `push`, the
/// possible call to grow the vector comes between building `x` and storing it, so the
/// compiler builds `x` on the stack with narrow stores and copies it with wide loads,
/// which stall: the CPU cannot forward a load from several smaller stores. On the line
/// supplies that stall was the largest single cost of building a record.
#[inline(always)]
pub(crate) fn push_in_place<T>(v: &mut Vec<T>, x: T) {
    let len = v.len();
    if len < v.capacity() {
        // SAFETY: there is room for one more element; it is written before the length
        // covers it, and nothing in between can panic.
        unsafe {
            v.as_mut_ptr().add(len).write(x);
            v.set_len(len + 1);
        }
    } else {
        v.push(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stash_sizes() -> (usize, usize, usize) {
        with_stash(|s| {
            let short: usize = s.buffers[..3].iter().map(Vec::len).sum();
            let long: usize = s.buffers[3..].iter().map(Vec::len).sum();
            (s.entries.len(), short, long)
        })
        .unwrap_or_default()
    }

    #[test]
    fn recycled_storage_is_reused_and_bounded() {
        let before = stash_sizes();
        let k = Key::new("pool_test_message");
        let mut r = Record::with_capacity(4);
        r.insert(k, Value::Bytes(vec![b'x'; 300]));
        r.insert(
            Key::new("pool_test_client"),
            Value::Str("10.1.2.3".repeat(2)),
        );
        r.insert(Key::new("pool_test_n"), Value::Int(1));
        recycle([r]);
        let after = stash_sizes();
        assert_eq!(after.0, before.0 + 1);
        assert_eq!(after.1, before.1 + 1);
        assert_eq!(after.2, before.2 + 1);

        let long = bytes(&[b'y'; 150]);
        // Not a byte of the recycled record's content is left in the reused buffer.
        assert_eq!(long.capacity(), 300, "the long buffer came back");
        assert_eq!(long, vec![b'y'; 150]);
        let short = text("10.0.0.1");
        assert_eq!(short, "10.0.0.1");
        let mut m = Map::new();
        fill_fields(&mut m, k, b"z", 2);
        let e = m.into_entries();
        assert!(
            e.len() == 1 && e.capacity() >= 4,
            "the field vector came back"
        );
        assert_eq!(stash_sizes(), before);
    }

    fn class_sizes() -> ([usize; CLASSES], usize) {
        with_stash(|s| (s.class_bytes, s.stashed_bytes)).unwrap_or_default()
    }

    #[test]
    fn a_full_class_does_not_crowd_out_the_others() {
        // Tiny and outsized buffers are not kept.
        let before = class_sizes();
        recycle_value(Value::Bytes(Vec::with_capacity(3)));
        recycle_value(Value::Bytes(Vec::with_capacity(1 << (MAX_CLASS + 1))));
        assert_eq!(class_sizes(), before);
        // One class fills up to its own limit...
        for _ in 0..MAX_CLASS_BYTES / 1000 + 10 {
            recycle_value(Value::Bytes(Vec::with_capacity(1000)));
        }
        let (classes, _) = class_sizes();
        let c1000 = 9 - MIN_CLASS as usize;
        assert!(classes[c1000] <= MAX_CLASS_BYTES, "{classes:?}");
        assert!(classes[c1000] > MAX_CLASS_BYTES - 1100, "{classes:?}");
        // ...and another class is still kept.
        recycle_value(Value::Bytes(Vec::with_capacity(300)));
        assert_eq!(
            class_sizes().0[8 - MIN_CLASS as usize],
            300 + SPARE_OVERHEAD
        );
        // A request is served from a class whose spares all fit it.
        assert_eq!(buffer(400).capacity(), 1000);
        // Filling more classes stops at the overall limit.
        for size in [2000, 4000, 8000, 16000, 30000] {
            for _ in 0..MAX_CLASS_BYTES / size + 10 {
                recycle_value(Value::Bytes(Vec::with_capacity(size)));
            }
        }
        let (_, total) = class_sizes();
        assert!(total <= MAX_STASHED_BYTES, "{total}");
        assert!(total > MAX_STASHED_BYTES - 40_000, "{total}");
    }
}
