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
//! bounded by counts, which cost nothing to keep: at most [`MAX_SPARES`] field vectors of
//! at most `MAX_ENTRIES` entries (5 MiB), and per buffer size class as many buffers as
//! [`MAX_CLASS_BYTES`] holds with each spare's bookkeeping counted (so at most 11 MiB over
//! all classes, of which a workload uses one or two). Beyond that, and for buffers above
//! the largest class, storage goes back to the allocator as usual. Everything here is an
//! optimisation only: a record that is never recycled is simply freed.
//!
//! When records are made on one thread and finished on another (`parallel`), each
//! thread's surplus goes to the other with the batches ([`take_spares`], [`give_spares`]);
//! what a thread is given may take a class to four times its limit, so that results
//! coming back together do not overflow it.

use std::cell::RefCell;

use crate::record::{Key, Map, Record, SharedStr, Value};

/// Field vectors kept: the records of one 256 KiB read of lines of 32 bytes or more.
pub const MAX_SPARES: usize = 8192;
/// Bytes kept in buffers of one size class, at most: a class nobody takes from (small
/// strings a parser outside the pool made) cannot crowd out the others. Counted as buffers
/// (see `CLASS_SPARES`): class `c` holds buffers smaller than `2^(c+1)` bytes, each also
/// costing `SPARE_OVERHEAD` (its `Vec` and the allocator's header) of bookkeeping.
pub const MAX_CLASS_BYTES: usize = 1 << 20;
/// Field vectors with more room than this are not kept (a parsed apache line needs 14).
const MAX_ENTRIES: usize = 16;
/// Buffers are kept by size class: class `c` holds buffers with room for `2^c` to
/// `2^(c+1) - 1` bytes, so any spare of the class a request rounds up to is large enough.
const MIN_CLASS: u32 = 4;
const MAX_CLASS: u32 = 14;
const CLASSES: usize = (MAX_CLASS - MIN_CLASS + 1) as usize;

/// What a spare buffer costs beyond its bytes: the `Vec` kept here and the allocator's
/// header.
const SPARE_OVERHEAD: usize = std::mem::size_of::<Vec<u8>>() + 16;

/// How many buffers each class (counted from [`MIN_CLASS`]) keeps: as many as fit in
/// [`MAX_CLASS_BYTES`] at their largest, bookkeeping included. Worked out at compile time
/// (no division per buffer kept).
const CLASS_SPARES: [usize; CLASSES] = {
    let mut n = [0; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        n[c] = MAX_CLASS_BYTES / ((1 << (c + MIN_CLASS as usize + 1)) + SPARE_OVERHEAD);
        c += 1;
    }
    n
};

#[derive(Default)]
struct Stash {
    entries: Vec<Vec<(Key, Value)>>,
    buffers: [Vec<Vec<u8>>; CLASSES],
    /// Per class, the buffers the stash would hold had this thread taken as many as its
    /// own recycling kept: what lies beyond is recycling no take used, what lacks is takes
    /// no recycling made up (see [`Spares`]).
    marks: [usize; CLASSES],
}

/// The class whose spares all have room for `n` bytes; `None` above the largest.
#[inline]
fn class_for(n: usize) -> Option<u32> {
    let c = n.max(1).next_power_of_two().trailing_zeros().max(MIN_CLASS);
    (c <= MAX_CLASS).then_some(c)
}

impl Stash {
    #[inline]
    fn keep_buffer(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if !(1 << MIN_CLASS..1 << (MAX_CLASS + 1)).contains(&cap) {
            return;
        }
        let class = (usize::BITS - 1 - cap.leading_zeros()) as usize - MIN_CLASS as usize;
        let kept = &mut self.buffers[class];
        if kept.len() < CLASS_SPARES[class] {
            buf.clear();
            kept.push(buf);
        }
    }

    #[inline]
    fn take_entries(&mut self) -> Option<Vec<(Key, Value)>> {
        self.entries.pop()
    }

    #[inline]
    fn take_buffer(&mut self, class: u32) -> Option<Vec<u8>> {
        let c = (class - MIN_CLASS) as usize;
        let taken = self.buffers[c].pop();
        if taken.is_none() {
            // A take the stash could not serve is a take all the same (see `marks`).
            self.marks[c] += 1;
        }
        taken
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
        self.empty_entries(&mut entries);
        if (1..=MAX_ENTRIES).contains(&entries.capacity()) && self.entries.len() < MAX_SPARES {
            self.entries.push(entries);
        }
    }

    /// Keeps the storage of every value in `entries` and leaves it empty, with its room.
    #[inline(always)]
    fn empty_entries(&mut self, entries: &mut Vec<(Key, Value)>) {
        // Storage is taken out where it lies, and the vector is then emptied without a
        // generic drop per value (a third of recycling) nor a copy of each value out of it.
        for (_, v) in entries.iter_mut() {
            match v {
                Value::Bytes(b) => self.keep_buffer(std::mem::take(b)),
                Value::Str(s) => self.keep_buffer(std::mem::take(s).into_bytes()),
                Value::List(_) | Value::Map(_) => self.keep_value(std::mem::take(v)),
                Value::Shared(SharedStr::Counted(_)) | Value::BigInt(_) => *v = Value::Null,
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

/// Empties `fields`, giving the storage of its values back for reuse on this thread; the
/// map keeps its room (what a cog replacing all of a record's fields uses).
pub fn clear_fields(fields: &mut Map) {
    let entries = fields.entries_mut();
    if with_stash(|s| s.empty_entries(entries)).is_none() {
        entries.clear();
    }
}

/// An empty record with room for `n` fields, its field vector taken from this thread's
/// stash when one is kept (what a cog building new records, such as `window`, uses).
pub fn record(n: usize) -> Record {
    let mut r = Record::new();
    if let Some(Some(kept)) = with_stash(|s| s.take_entries()) {
        *r.fields.entries_mut() = kept;
    }
    r.fields.entries_mut().reserve(n);
    r
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
    with_stock(|s| s.fill_fields(fields, key, bytes, n));
}

/// This thread's stash, borrowed once for a whole batch of new records, from
/// [`with_stock`]: taking it per record (a thread-local lookup and a `RefCell` check) costs
/// as much as the rest of filling a line record. Without a stash (thread teardown, or a
/// stock already taken further up the stack) records are simply allocated.
///
/// ```
/// use deadbeat::record::pool::with_stock;
/// use deadbeat::record::{Key, Record, Value};
/// let message = Key::new("message");
/// let records: Vec<Record> = with_stock(|stock| {
///     ["first line", "second line"]
///         .iter()
///         .map(|line| {
///             let mut r = Record::new();
///             stock.fill_fields(&mut r.fields, message, line.as_bytes(), 1);
///             r
///         })
///         .collect()
/// });
/// assert_eq!(records[1].get(message), Some(&Value::Bytes(b"second line".to_vec())));
/// ```
pub struct Stock<'a>(Option<&'a mut Stash>);

/// Runs `f` with this thread's stash borrowed as a [`Stock`]: what a supply building a
/// batch of records goes through. Other pool calls made inside `f` ([`buffer`],
/// [`recycle`]...) find the stash taken and allocate or free as usual, so take what the
/// batch needs from the stock itself.
pub fn with_stock<T>(f: impl FnOnce(&mut Stock<'_>) -> T) -> T {
    let mut f = Some(f);
    let ran = with_stash(|s| f.take().map(|f| f(&mut Stock(Some(s)))));
    if let Some(Some(t)) = ran {
        return t;
    }
    match f {
        Some(f) => f(&mut Stock(None)),
        None => unreachable!("`f` returned a value when it ran"),
    }
}

impl Stock<'_> {
    /// [`fill_fields`], from this stock: `fields` gets one entry, `key` holding a copy
    /// of `bytes` as [`Value::Bytes`], and room for `n` entries in all.
    ///
    /// `fields` must be empty (checked in debug builds): a reused vector replaces its
    /// entries.
    #[inline(always)]
    pub fn fill_fields(&mut self, fields: &mut Map, key: Key, bytes: &[u8], n: usize) {
        debug_assert!(fields.is_empty(), "fill_fields into a map with entries");
        let mut stash = self.0.as_deref_mut();
        if let Some(kept) = stash.as_mut().and_then(|s| s.take_entries()) {
            *fields.entries_mut() = kept;
        }
        fields.entries_mut().reserve(n.max(1));
        // Everything is stored where it ends up (`Map::append_slot`), the buffer too
        // (docs/architecture.md#store-forwarding).
        let Value::Bytes(buf) = fields.append_slot(key).set(Value::Bytes(Vec::new())) else {
            unreachable!("just stored")
        };
        *buf = buffer_from(stash, bytes.len());
        buf.extend_from_slice(bytes);
    }
}

/// An empty buffer with room for at least `n` bytes.
#[inline]
pub fn buffer(n: usize) -> Vec<u8> {
    with_stock(|s| buffer_from(s.0.as_deref_mut(), n))
}

/// An empty buffer with room for at least `n` bytes, a spare from `stash` if it has one.
#[inline(always)]
fn buffer_from(stash: Option<&mut Stash>, n: usize) -> Vec<u8> {
    let Some(class) = class_for(n) else {
        return Vec::with_capacity(n);
    };
    stash
        .and_then(|s| s.take_buffer(class))
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

/// Spare buffers on their way from one thread's stash to another's ([`take_spares`],
/// [`give_spares`]).
///
/// When records are built on one thread and finished on another, each stash fills with
/// buffers only the other thread takes: the thread that reads lines recycles the text
/// parsed out of them, the thread that parses recycles the lines. Handed to the allocator,
/// those buffers cross threads one by one, each a call under the arena's lock; carried
/// with the records' batches, they cross a size class at a time.
///
/// What goes, class by class, is what this thread's own recycling kept beyond what it took:
/// a class it takes more of than it keeps stays (what it took beyond is counted, up to a
/// class's limit, and later recycling makes up for it first), so a thread never gives away
/// what it uses itself, even when the two alternate from one call to the next; and what
/// another thread gave it counts as supply, not as recycling. Dropping a `Spares` frees
/// what it holds.
#[derive(Default)]
pub struct Spares {
    buffers: [Vec<Vec<u8>>; CLASSES],
}

impl std::fmt::Debug for Spares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spares")
            .field("buffers", &self.len())
            .finish()
    }
}

impl Spares {
    /// How many buffers are held.
    pub fn len(&self) -> usize {
        self.buffers.iter().map(Vec::len).sum()
    }

    /// Whether no buffer is held.
    pub fn is_empty(&self) -> bool {
        self.buffers.iter().all(Vec::is_empty)
    }

    /// Adds the buffers of `other`.
    pub fn append(&mut self, mut other: Spares) {
        for (held, more) in self.buffers.iter_mut().zip(other.buffers.iter_mut()) {
            if held.is_empty() {
                std::mem::swap(held, more);
            } else {
                held.append(more);
            }
        }
    }

    /// Splits off `part / of` of the buffers of each class (rounded up; all of them when
    /// `part >= of`): the share of one batch's spares that goes with a part of the batch.
    pub fn split(&mut self, part: usize, of: usize) -> Spares {
        let mut out = Spares::default();
        for (held, taken) in self.buffers.iter_mut().zip(out.buffers.iter_mut()) {
            let n = if part >= of {
                held.len()
            } else {
                (held.len() * part).div_ceil(of.max(1))
            };
            if n > 0 {
                taken.extend(held.drain(held.len() - n..));
            }
        }
        out
    }
}

/// Takes the buffers this thread's own recycling kept in its stash beyond what it took,
/// class by class, for another thread: see [`Spares`]. Empty when the stash is
/// unavailable.
pub fn take_spares() -> Spares {
    let mut out = Spares::default();
    with_stash(|s| {
        let Stash { buffers, marks, .. } = s;
        for (c, ((kept, mark), taken)) in buffers
            .iter_mut()
            .zip(marks)
            .zip(&mut out.buffers)
            .enumerate()
        {
            if kept.len() > *mark {
                taken.extend(kept.drain(*mark..));
            } else {
                // Takes beyond recycling are remembered up to the class's limit: a thread
                // that stops taking a class soon gives its recycling of it away again.
                *mark = (*mark).min(kept.len() + CLASS_SPARES[c]);
            }
        }
    });
    out
}

/// How many times its usual limit a class may hold with what other threads gave: results
/// coming back from several batches at once bring more than one batch's worth, which the
/// next batches take.
const GIVEN_FACTOR: usize = 4;

/// Puts `spares` (from another thread's [`take_spares`]) into this thread's stash, up to
/// four times its usual limits (results of several batches can come back at once); the
/// rest is freed.
pub fn give_spares(mut spares: Spares) {
    with_stash(|s| {
        let Stash { buffers, marks, .. } = s;
        for (c, ((kept, mark), given)) in buffers
            .iter_mut()
            .zip(marks)
            .zip(&mut spares.buffers)
            .enumerate()
        {
            let room = (GIVEN_FACTOR * CLASS_SPARES[c]).saturating_sub(kept.len());
            let n = given.len().min(room);
            kept.extend(given.drain(..n));
            *mark += n;
        }
    });
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

    fn class_counts() -> [usize; CLASSES] {
        with_stash(|s| std::array::from_fn(|c| s.buffers[c].len())).unwrap_or_default()
    }

    #[test]
    fn a_full_class_does_not_crowd_out_the_others() {
        // Tiny and outsized buffers are not kept.
        let before = class_counts();
        recycle_value(Value::Bytes(Vec::with_capacity(3)));
        recycle_value(Value::Bytes(Vec::with_capacity(1 << (MAX_CLASS + 1))));
        assert_eq!(class_counts(), before);
        // One class fills up to its own limit...
        let c1000 = 9 - MIN_CLASS as usize;
        for _ in 0..CLASS_SPARES[c1000] + 10 {
            recycle_value(Value::Bytes(Vec::with_capacity(1000)));
        }
        let counts = class_counts();
        assert_eq!(counts[c1000], CLASS_SPARES[c1000]);
        assert!(counts[c1000] * 1000 <= MAX_CLASS_BYTES, "{counts:?}");
        assert!(
            counts[c1000] * 1000 > MAX_CLASS_BYTES / 2 - 1000,
            "{counts:?}"
        );
        // ...and another class is still kept.
        let c300 = 8 - MIN_CLASS as usize;
        recycle_value(Value::Bytes(Vec::with_capacity(300)));
        assert_eq!(class_counts()[c300], counts[c300] + 1);
        // A request is served from a class whose spares all fit it.
        assert_eq!(buffer(400).capacity(), 1000);
        // Every class keeps at most MAX_CLASS_BYTES, bookkeeping included, whatever the
        // sizes in it.
        for size in [2047, 4095, 8191, 16383, 30000] {
            for _ in 0..MAX_CLASS_BYTES / size + 10 {
                recycle_value(Value::Bytes(Vec::with_capacity(size)));
            }
        }
        let kept: usize = with_stash(|s| {
            s.buffers
                .iter()
                .map(|b| {
                    let bytes = b
                        .iter()
                        .map(|b| b.capacity() + SPARE_OVERHEAD)
                        .sum::<usize>();
                    assert!(bytes <= MAX_CLASS_BYTES, "{bytes}");
                    bytes
                })
                .sum()
        })
        .unwrap_or_default();
        assert!(kept <= CLASSES * MAX_CLASS_BYTES, "{kept}");
    }

    #[test]
    fn spares_are_what_this_thread_recycled_and_cross_to_another() {
        // A thread of its own: a fresh stash, and the other thread's is another one.
        std::thread::spawn(|| {
            let c300 = 8 - MIN_CLASS as usize;
            let c16 = 4 - MIN_CLASS as usize;
            let _ = take_spares();
            // Recycling (the "lines" this thread parsed) is handed on...
            for _ in 0..5 {
                recycle_value(Value::Bytes(Vec::with_capacity(300)));
            }
            let mut spares = take_spares();
            assert_eq!(spares.len(), 5);
            assert_eq!(spares.buffers[c300].len(), 5);
            assert_eq!(class_counts()[c300], 0, "nothing recycled stays");
            // ...once: a second call finds nothing new.
            assert!(take_spares().is_empty());
            // A share for a part of a batch: 2 of 5 records take ceil(5 * 2 / 5) = 2.
            let share = spares.split(2, 5);
            assert_eq!((share.len(), spares.len()), (2, 3));
            assert_eq!(spares.split(3, 3).len(), 3);
            assert!(spares.is_empty());

            // What another thread gives is this thread's supply, not its recycling: it is
            // not handed back, and what is taken of it does not count against recycling.
            let other = std::thread::spawn(|| {
                for _ in 0..4 {
                    recycle_value(Value::Bytes(Vec::with_capacity(16)));
                }
                take_spares()
            })
            .join()
            .unwrap_or_default();
            assert_eq!(other.buffers[c16].len(), 4);
            give_spares(other);
            assert_eq!(class_counts()[c16], 4);
            assert!(take_spares().is_empty(), "given spares are not handed back");
            let taken = buffer(16);
            assert_eq!(taken.capacity(), 16, "a given buffer serves a take");
            recycle_value(Value::Bytes(Vec::with_capacity(300)));
            let back = take_spares();
            assert_eq!((back.len(), back.buffers[c300].len()), (1, 1));
            assert_eq!(class_counts()[c16], 3);
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    fn given_spares_are_bounded() {
        std::thread::spawn(|| {
            let c = 6 - MIN_CLASS as usize;
            let mut many = Spares::default();
            let n = GIVEN_FACTOR * CLASS_SPARES[c] + 10;
            many.buffers[c] = (0..n).map(|_| Vec::with_capacity(64)).collect();
            give_spares(many);
            assert_eq!(class_counts()[c], GIVEN_FACTOR * CLASS_SPARES[c]);
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    fn field_vectors_are_kept_up_to_the_limits() {
        let spare = |cap: usize| {
            let mut r = Record::with_capacity(cap);
            r.insert(Key::new("pool_test_spare"), Value::Int(1));
            r
        };
        let count = || with_stash(|s| s.entries.len()).unwrap_or_default();
        let before = count();
        recycle([spare(MAX_ENTRIES * 2)]);
        assert_eq!(count(), before, "an oversized vector is freed");
        recycle((0..MAX_SPARES + 10).map(|_| spare(4)));
        assert_eq!(count(), MAX_SPARES);
    }
}
