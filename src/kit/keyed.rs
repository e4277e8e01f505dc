//! Bounded per-key state, shared by the cogs that remember data (`throttle` and the
//! windows of issue 16; `dedup` keeps its keys in [`seen_keys`](crate::kit::seen_keys),
//! first in, first out, and writes the same state files): a map from a key to a
//! cog-defined value that never holds more than `max_keys` entries, counts what it
//! evicts, logs evictions at a bounded rate, and can be saved to and loaded from a file.
//!
//! **Eviction order.** When full, the entry that was *written* (inserted, or given a new
//! value with [`Keyed::insert`]) longest ago goes first. Reading does not reorder: for
//! `dedup` the entry written longest ago is the one whose `within` ends first, so it is the
//! one that matters least. A cog whose hot keys must stay (a token bucket read on every
//! datum) calls [`Keyed::touch`] on use, which makes the order last-use order for it.
//! Moving an entry to the newest end costs O(1): the order is a queue of `(sequence, key)`
//! in which an entry's older places are left behind as stale and skipped, and the queue
//! is compacted once stale places outnumber live ones.
//!
//! **Bytes.** [`Keyed::with_max_bytes`] bounds, besides the count, the bytes of the keys
//! held in total (as a given function measures them): a new key first evicts, oldest
//! first, until it fits (counted as evictions like the others). Memory is then at most
//! `max_keys` entries' bookkeeping plus `max_bytes` of keys, whatever the input. Keys
//! made from input are first brought within [`KEY_CAP`] bytes with [`cap_key`], so that
//! one huge value cannot take the whole budget either.
//!
//! **Persistence.** [`Keyed::save`] writes, atomically (temporary file in the same
//! directory, fsync, rename, directory fsync), a header line `deadbeat-state FORMAT
//! VERSION`, one line per entry `KEY VALUE` (percent-escaped, oldest first) and a trailer
//! `end COUNT HASH` over the entry lines. [`Keyed::load`] checks all of it before
//! changing anything: a foreign, corrupt or truncated file is a [`StateError`] (the cog
//! logs it and starts empty), never a panic. Keys and values are written through the
//! [`StateCodec`] trait.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::engine::escapement::Ctx;
use crate::kit::checkpoint::fingerprint;
use crate::kit::on_error::LogLimiter;

/// The first word of every state file's header.
const MAGIC: &str = "deadbeat-state";

/// How a key or a value is written to a state file and read back. The bytes may be any:
/// the file escapes them.
pub trait StateCodec: Sized {
    /// Appends this key or value's bytes.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one back; `None` if the bytes are not one.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl StateCodec for Rc<[u8]> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Rc::from(bytes))
    }
}

impl StateCodec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

impl StateCodec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

macro_rules! number_codec {
    ($($t:ty),*) => {$(
        impl StateCodec for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                let _ = write!(out, "{self}");
            }
            fn decode(bytes: &[u8]) -> Option<Self> {
                std::str::from_utf8(bytes).ok()?.parse().ok()
            }
        }
    )*};
}
number_codec!(u64, i64, u32, f64);

/// Why a state file was not loaded (or not saved); the cog logs it and goes on without it.
#[derive(Debug)]
pub enum StateError {
    /// The file could not be read or written.
    Io(PathBuf, io::Error),
    /// The file is not a state file of this kind (another format, or not ours at all).
    Foreign(PathBuf, String),
    /// The file is of this kind but of a version this build does not read.
    Version(PathBuf, String),
    /// The file is damaged: a line that does not parse, or a count or hash that does not
    /// match its entries.
    Corrupt(PathBuf, String),
    /// The file ends before its trailer: cut short.
    Truncated(PathBuf),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            StateError::Foreign(p, why) => {
                write!(f, "{}: not a state file of this cog ({why})", p.display())
            }
            StateError::Version(p, why) => {
                write!(f, "{}: unsupported state version ({why})", p.display())
            }
            StateError::Corrupt(p, why) => write!(f, "{}: corrupt state file ({why})", p.display()),
            StateError::Truncated(p) => {
                write!(f, "{}: truncated state file (no trailer)", p.display())
            }
        }
    }
}

impl std::error::Error for StateError {}

/// The longest key kept as it is by [`cap_key`]; a longer one is kept as its first
/// `KEY_CAP + 1 - 16` bytes followed by a 128-bit digest of all of it (`KEY_CAP + 1`
/// bytes, so never equal to a key kept as it is).
pub const KEY_CAP: usize = 256;

/// Brings a key made from input within `KEY_CAP + 1` bytes: a longer one becomes its
/// head followed by a 128-bit digest of the whole key. Two long keys are then told apart
/// by their digests: they could be taken for one only if the digests collide (about one
/// chance in 2^128 for a pair; the digest is not cryptographic, so input crafted against
/// it could make two keys collide, which at worst makes `dedup` drop one repeat or
/// `throttle` share a bucket). Cutting instead would make every pair of long keys with
/// the same head one key.
pub fn cap_key(key: &mut Vec<u8>) {
    if key.len() <= KEY_CAP {
        return;
    }
    let d = digest128(key);
    key.truncate(KEY_CAP + 1 - 16);
    key.extend_from_slice(&d);
}

/// A 128-bit digest: two 64-bit lanes over the 8-byte words, each word multiplied and
/// rotated in, the length folded in, both lanes finished with the avalanche of
/// MurmurHash3's `fmix64`. Stable across builds and runs (keys are saved to files).
fn digest128(b: &[u8]) -> [u8; 16] {
    const K1: u64 = 0x87c3_7b91_1142_53d5;
    const K2: u64 = 0x4cf5_ad43_2745_937f;
    fn fmix(mut h: u64) -> u64 {
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
    let (mut a, mut c) = (0x9e37_79b9_7f4a_7c15u64, 0x6a09_e667_f3bc_c909u64);
    let mut chunks = b.chunks_exact(8);
    for w in &mut chunks {
        let mut x = [0u8; 8];
        x.copy_from_slice(w);
        let w = u64::from_le_bytes(x);
        a = (a ^ w.wrapping_mul(K1).rotate_left(31))
            .rotate_left(27)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        c = (c ^ w.wrapping_mul(K2).rotate_left(33))
            .rotate_left(31)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    let w = u64::from_le_bytes(tail);
    a ^= w.wrapping_mul(K1).rotate_left(31) ^ b.len() as u64;
    c ^= w.wrapping_mul(K2).rotate_left(33) ^ (b.len() as u64).rotate_left(32);
    a = a.wrapping_add(c);
    c = c.wrapping_add(a);
    let (a, c) = (fmix(a), fmix(c));
    let (a, c) = (a.wrapping_add(c), c.wrapping_add(a.wrapping_add(c)));
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&c.to_le_bytes());
    out
}

/// The hasher of the maps of per-key state ([`Keyed`], the windows' sets): a
/// multiply-and-fold hash over 8-byte words, seeded per map from the standard library's
/// random keys. Several times cheaper than the standard SipHash on the short keys these
/// maps hold (a client address, a window's key); not a cryptographic function, so input
/// crafted against it could make keys collide, which the per-process seed makes hard to
/// aim and which costs time, never correctness.
#[derive(Debug, Clone, Copy)]
pub struct FastState {
    seed: u64,
}

impl Default for FastState {
    fn default() -> Self {
        FastState {
            seed: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) | 1,
        }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;
    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher { h: self.seed }
    }
}

/// The hasher of [`FastState`].
#[derive(Debug, Clone, Copy)]
pub struct FastHasher {
    h: u64,
}

/// The multiplier of [`FastHasher`] (an odd constant with well-spread bits).
const FAST_K: u64 = 0x9e37_79b9_7f4a_7c15;

impl FastHasher {
    #[inline]
    fn mix(&mut self, w: u64) {
        // A folded 64x64 multiply: every input bit reaches both halves of the result.
        let p = u128::from(self.h ^ w) * u128::from(FAST_K);
        self.h = (p as u64) ^ ((p >> 64) as u64);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        let n = rest.len();
        if n == 0 {
            return;
        }
        // The last bytes as one word, read without a copy of variable length (a call to
        // `memcpy` costing more than the rest): the last eight bytes when there are that
        // many (overlapping the words before), else two overlapping halves or the bytes
        // one by one.
        let w = if let Some(last) = bytes.last_chunk::<8>() {
            u64::from_le_bytes(*last)
        } else if let (Some(lo), Some(hi)) = (rest.first_chunk::<4>(), rest.last_chunk::<4>()) {
            u64::from(u32::from_le_bytes(*lo)) | (u64::from(u32::from_le_bytes(*hi)) << 32)
        } else {
            rest.iter().fold(0, |w, &b| (w << 8) | u64::from(b))
        };
        // The length tells `ab` from `ab\0`.
        self.mix(w ^ ((n as u64) << 59));
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.h
    }
}

/// A hash map with [`FastState`].
pub type FastMap<K, V> = HashMap<K, V, FastState>;
/// A hash set with [`FastState`].
pub type FastSet<K> = std::collections::HashSet<K, FastState>;

/// The state file of a cog under `state_dir` (`[state] dir`): named after its kind
/// (`dedup`, `window`...), train and id, with a hash of train and id so that names
/// differing only in the characters replaced here (anything but ASCII letters and digits)
/// stay apart. Every cog keeping state across runs names its file so.
pub fn state_file(kind: &str, p: &crate::schema::CogParams<'_>, state_dir: &Path) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    let mut both = p.train().as_bytes().to_vec();
    both.push(0);
    both.extend_from_slice(p.id().as_bytes());
    state_dir.join(format!(
        "{kind}-{}-{}-{:08x}.state",
        clean(p.train()),
        clean(p.id()),
        fingerprint(&both) as u32
    ))
}

/// How many bytes a key counts towards a byte bound.
pub type KeySize<K> = fn(&K) -> usize;

#[derive(Debug)]
struct Slot<V> {
    value: V,
    /// The sequence number of this entry's live place in the order queue.
    seq: u64,
}

/// A map from keys to values holding at most `max_keys` entries; see the module doc for
/// the eviction order and the file format.
#[derive(Debug)]
pub struct Keyed<K, V> {
    map: FastMap<K, Slot<V>>,
    /// Oldest first; places whose sequence no longer matches their entry's are stale.
    order: VecDeque<(u64, K)>,
    next_seq: u64,
    max_keys: usize,
    /// The bound on the keys' bytes in total and how a key's bytes are counted, if set.
    max_bytes: Option<(usize, KeySize<K>)>,
    /// The keys' bytes held, counted when `max_bytes` is set.
    bytes: usize,
    evicted: Evictions,
}

impl<K: Hash + Eq + Clone, V> Keyed<K, V> {
    /// An empty map holding at most `max_keys` entries (at least one).
    pub fn new(max_keys: usize) -> Self {
        Keyed {
            map: HashMap::default(),
            order: VecDeque::new(),
            next_seq: 0,
            max_keys: max_keys.max(1),
            max_bytes: None,
            bytes: 0,
            evicted: Evictions::default(),
        }
    }

    /// Bounds the keys' bytes in total too, each key counting `size(key)`: a new key first
    /// evicts the oldest entries until it fits (it is kept even if it alone is over).
    pub fn with_max_bytes(mut self, max_bytes: usize, size: KeySize<K>) -> Self {
        self.bytes = self.map.keys().map(size).sum();
        self.max_bytes = Some((max_bytes, size));
        self
    }

    /// The keys' bytes held, as counted for `with_max_bytes` (0 without it).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Counts `key` out of the bytes held.
    fn forget_bytes(&mut self, key: &K) {
        if let Some((_, size)) = self.max_bytes {
            self.bytes = self.bytes.saturating_sub(size(key));
        }
    }

    /// The value of `key`, if held. Reading does not change the eviction order.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|s| &s.value)
    }

    /// The held key equal to `key`, and its value.
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_key_value(key).map(|(k, s)| (k, &s.value))
    }

    /// The value of `key` to change in place, if held (the eviction order stays).
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_mut(key).map(|s| &mut s.value)
    }

    /// Moves `key` to the newest end of the eviction order (for last-use order).
    pub fn touch<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some((k, _)) = self.map.get_key_value(key) else {
            return;
        };
        let k = k.clone();
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(slot) = self.map.get_mut(key) {
            slot.seq = seq;
        }
        self.order.push_back((seq, k));
        self.compact();
    }

    /// Sets the value of `key`, which becomes the newest entry; returns the value it had.
    /// A new key in a full map first evicts the oldest entry (counted).
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(slot) = self.map.get_mut(&key) {
            slot.seq = seq;
            let old = std::mem::replace(&mut slot.value, value);
            self.order.push_back((seq, key));
            self.compact();
            return Some(old);
        }
        self.make_room(&key);
        self.order.push_back((seq, key.clone()));
        self.map.insert(key, Slot { value, seq });
        None
    }

    /// Evicts the oldest entries (counted) until a new `key` fits the bounds on count and
    /// bytes, and counts its bytes in.
    fn make_room(&mut self, key: &K) {
        while self.map.len() >= self.max_keys {
            if self.pop_oldest().is_none() {
                break;
            }
            self.evicted.count();
        }
        if let Some((max, size)) = self.max_bytes {
            let need = size(key);
            while !self.map.is_empty() && self.bytes + need > max {
                if self.pop_oldest().is_none() {
                    break;
                }
                self.evicted.count();
            }
            self.bytes += need;
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (k, slot) = self.map.remove_entry(key)?;
        self.forget_bytes(&k);
        self.forget_place(slot.seq);
        Some(slot.value)
    }

    /// Removes `key` if `pred` holds for its value, with one hash of the key; returns the
    /// value.
    pub fn remove_if(&mut self, key: K, pred: impl FnOnce(&V) -> bool) -> Option<V> {
        match self.map.entry(key) {
            Entry::Occupied(e) if pred(&e.get().value) => {
                let (k, slot) = e.remove_entry();
                self.forget_bytes(&k);
                self.forget_place(slot.seq);
                Some(slot.value)
            }
            _ => None,
        }
    }

    /// Inserts `key`, which the caller knows is not held (one hash of the key instead of
    /// two), as the newest entry; a full map first evicts the oldest (counted).
    pub fn insert_new(&mut self, key: K, value: V) {
        debug_assert!(!self.map.contains_key(&key), "insert_new of a held key");
        self.make_room(&key);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((seq, key.clone()));
        self.map.insert(key, Slot { value, seq });
    }

    /// The value of `key`, with one hash of the key: `value` is inserted as the newest
    /// entry when the key is not held, else handed back beside the held one. `None` (and
    /// nothing done) when the map is full, by count or by bytes: the caller evicts first.
    pub fn get_or_insert(&mut self, key: K, value: V) -> Option<(&mut V, Option<V>)> {
        if self.map.len() >= self.max_keys {
            return None;
        }
        let need = match self.max_bytes {
            Some((max, size)) => {
                let need = size(&key);
                if self.bytes + need > max && !self.map.contains_key(&key) {
                    return None;
                }
                need
            }
            None => 0,
        };
        match self.map.entry(key) {
            Entry::Occupied(e) => Some((&mut e.into_mut().value, Some(value))),
            Entry::Vacant(e) => {
                self.bytes += need;
                let seq = self.next_seq;
                self.next_seq += 1;
                self.order.push_back((seq, e.key().clone()));
                Some((&mut e.insert(Slot { value, seq }).value, None))
            }
        }
    }

    /// The place `seq` of a removed entry is stale: taken at once when it is the oldest
    /// (state removed in the order it was written, as windows close), else left for
    /// [`compact`](Keyed::compact).
    fn forget_place(&mut self, seq: u64) {
        if self.order.front().is_some_and(|(s, _)| *s == seq) {
            self.order.pop_front();
        } else {
            self.compact();
        }
    }

    /// Removes entries from the oldest end as long as `expired` says so (not counted as
    /// evictions); returns how many. For state whose write order is time order (`dedup`),
    /// this drops what has run out without walking the rest.
    pub fn expire_oldest(&mut self, mut expired: impl FnMut(&V) -> bool) -> usize {
        let mut n = 0;
        while let Some((seq, key)) = self.order.front() {
            match self.map.get(key) {
                Some(slot) if slot.seq == *seq => {
                    if !expired(&slot.value) {
                        break;
                    }
                    self.map.remove(key);
                    if let Some((_, size)) = self.max_bytes {
                        self.bytes = self.bytes.saturating_sub(size(key));
                    }
                    n += 1;
                }
                _ => {}
            }
            self.order.pop_front();
        }
        n
    }

    /// Removes and returns the oldest entry.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        while let Some((seq, key)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|s| s.seq == seq)
                && let Some(slot) = self.map.remove(&key)
            {
                self.forget_bytes(&key);
                return Some((key, slot.value));
            }
        }
        None
    }

    /// Removes and returns the oldest entry, counted as an eviction (for a cog that must
    /// see what it evicts, e.g. to emit a window early), and reported by
    /// [`Keyed::report_evictions`].
    pub fn evict_oldest(&mut self) -> Option<(K, V)> {
        let e = self.pop_oldest()?;
        self.evicted.count();
        Some(e)
    }

    /// Changes every value in place (the order stays): to correct what was loaded.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.map.values_mut().map(|s| &mut s.value)
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.order.iter().filter_map(|(seq, key)| {
            let slot = self.map.get(key)?;
            (slot.seq == *seq).then_some((key, &slot.value))
        })
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The bound on entries.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How many entries were evicted to keep the bound, since creation.
    pub fn evictions(&self) -> u64 {
        self.evicted.total()
    }

    /// Logs the evictions since the last report, if any, at most
    /// [`LOG_BURST`](crate::kit::on_error::LOG_BURST) lines a second (what is held back is
    /// reported by the next line that passes). `cog` names the cog in the line.
    pub fn report_evictions(&mut self, cog: &str, cx: &mut Ctx<'_>) {
        self.evicted.report(cog, self.max_keys, cx);
    }

    /// Drops stale places once they outnumber the live ones, so the queue stays within
    /// twice the entries (plus a little) and each write costs O(1) amortised.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(seq, key)| map.get(key).is_some_and(|s| s.seq == *seq));
        }
    }
}

impl<K: Hash + Eq + Clone + StateCodec, V: StateCodec> Keyed<K, V> {
    /// Writes the entries to `path` atomically (creating its directory), under the header
    /// `deadbeat-state FORMAT VERSION`.
    pub fn save(&self, path: &Path, format: &str, version: u32) -> Result<(), StateError> {
        let mut w = StateWriter::new(format, version, self.map.len());
        let (mut key, mut value) = (Vec::new(), Vec::new());
        for (k, v) in self.iter() {
            key.clear();
            k.encode(&mut key);
            value.clear();
            v.encode(&mut value);
            w.entry(&key, &value);
        }
        w.finish(path)
    }

    /// Reads the entries saved in `path` by [`save`](Keyed::save) with the same `format`
    /// and `version`, and inserts them (oldest first, so the order and the bound hold).
    /// Returns how many were read: 0 when the file does not exist. Nothing is inserted
    /// unless the whole file checks out.
    pub fn load(&mut self, path: &Path, format: &str, version: u32) -> Result<usize, StateError> {
        let entries = load_state::<K, V>(path, format, version)?;
        let n = entries.len();
        for (k, v) in entries {
            self.insert(k, v);
        }
        Ok(n)
    }
}

/// A state file being written: the header, then entries in the order they are given, then
/// (by [`finish`](StateWriter::finish)) the trailer, written out atomically. The format of
/// [`Keyed::save`], for tables of other shapes that must write the same files.
pub(crate) struct StateWriter {
    text: Vec<u8>,
    body_start: usize,
    count: u64,
}

impl StateWriter {
    /// A file of `format` and `version`, with room for about `entries` entries.
    pub(crate) fn new(format: &str, version: u32, entries: usize) -> Self {
        let mut text = Vec::with_capacity(64 + 32 * entries);
        let _ = writeln!(text, "{MAGIC} {format} {version}");
        let body_start = text.len();
        StateWriter {
            text,
            body_start,
            count: 0,
        }
    }

    /// One entry, its key's and value's bytes as their codecs encode them (escaped here).
    pub(crate) fn entry(&mut self, key: &[u8], value: &[u8]) {
        escape(key, &mut self.text);
        self.text.push(b' ');
        escape(value, &mut self.text);
        self.text.push(b'\n');
        self.count += 1;
    }

    /// Adds the trailer and writes the file to `path` atomically (temporary file in the
    /// same directory, fsync, rename, directory fsync), creating its directory.
    pub(crate) fn finish(mut self, path: &Path) -> Result<(), StateError> {
        let io_err = |e| StateError::Io(path.to_path_buf(), e);
        let hash = fingerprint(&self.text[self.body_start..]);
        let _ = writeln!(self.text, "end {} {hash:016x}", self.count);

        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{}.tmp", name.unwrap_or_default()));
        let mut f = File::create(&tmp).map_err(io_err)?;
        f.write_all(&self.text).map_err(io_err)?;
        f.sync_data().map_err(io_err)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io_err)?;
        // The rename itself is durable only once the directory is synced.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        Ok(())
    }
}

/// The entries of the state file at `path` (as [`Keyed::save`] and [`StateWriter`] write
/// it), oldest first, if it is of `format` and `version` and checks out whole; none when
/// the file does not exist.
pub(crate) fn load_state<K: StateCodec, V: StateCodec>(
    path: &Path,
    format: &str,
    version: u32,
) -> Result<Vec<(K, V)>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StateError::Io(path.to_path_buf(), e)),
    };
    parse::<K, V>(&bytes, format, version).map_err(|e| e.at(path))
}

/// A [`StateError`] before it knows its path.
enum ParseError {
    Foreign(String),
    Version(String),
    Corrupt(String),
    Truncated,
}

impl ParseError {
    fn at(self, path: &Path) -> StateError {
        let p = path.to_path_buf();
        match self {
            ParseError::Foreign(w) => StateError::Foreign(p, w),
            ParseError::Version(w) => StateError::Version(p, w),
            ParseError::Corrupt(w) => StateError::Corrupt(p, w),
            ParseError::Truncated => StateError::Truncated(p),
        }
    }
}

fn parse<K: StateCodec, V: StateCodec>(
    bytes: &[u8],
    format: &str,
    version: u32,
) -> Result<Vec<(K, V)>, ParseError> {
    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
        return Err(if bytes.starts_with(MAGIC.as_bytes()) {
            ParseError::Truncated
        } else {
            ParseError::Foreign("no header line".into())
        });
    };
    let header = String::from_utf8_lossy(&bytes[..nl]);
    let mut words = header.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(ParseError::Foreign(format!(
            "header {:?}",
            header.chars().take(60).collect::<String>()
        )));
    }
    let (found_format, found_version) = (words.next(), words.next());
    if found_format != Some(format) || words.next().is_some() {
        return Err(ParseError::Foreign(format!(
            "format {:?}, expected {format:?}",
            found_format.unwrap_or("")
        )));
    }
    if found_version != Some(version.to_string().as_str()) {
        return Err(ParseError::Version(format!(
            "version {:?}, this build reads {version}",
            found_version.unwrap_or("")
        )));
    }
    let body = &bytes[nl + 1..];
    // The trailer is the last whole line; anything after it, or no trailer at all, means
    // the file was cut or added to.
    let Some(body) = body.strip_suffix(b"\n") else {
        return Err(ParseError::Truncated);
    };
    let trailer_at = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let trailer = &body[trailer_at..];
    let Some(trailer) = trailer.strip_prefix(b"end ") else {
        return Err(ParseError::Truncated);
    };
    let trailer = std::str::from_utf8(trailer)
        .map_err(|_| ParseError::Corrupt("trailer is not text".into()))?;
    let (count, hash) = trailer
        .split_once(' ')
        .and_then(|(c, h)| Some((c.parse::<u64>().ok()?, u64::from_str_radix(h, 16).ok()?)))
        .ok_or_else(|| ParseError::Corrupt(format!("trailer {trailer:?}")))?;
    let lines = &bytes[nl + 1..nl + 1 + trailer_at];
    if fingerprint(lines) != hash {
        return Err(ParseError::Corrupt(
            "entries do not match their hash".into(),
        ));
    }
    let mut entries = Vec::new();
    let mut key = Vec::new();
    let mut value = Vec::new();
    for (i, line) in lines.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let lineno = i + 2;
        let bad = |what: &str| ParseError::Corrupt(format!("line {lineno}: {what}"));
        let (k, v) = line
            .iter()
            .position(|&b| b == b' ')
            .map(|at| (&line[..at], &line[at + 1..]))
            .ok_or_else(|| bad("no value"))?;
        key.clear();
        value.clear();
        if !unescape(k, &mut key) || !unescape(v, &mut value) {
            return Err(bad("bad escape"));
        }
        let k = K::decode(&key).ok_or_else(|| bad("bad key"))?;
        let v = V::decode(&value).ok_or_else(|| bad("bad value"))?;
        entries.push((k, v));
    }
    if entries.len() as u64 != count {
        return Err(ParseError::Corrupt(format!(
            "{} entries, trailer says {count}",
            entries.len()
        )));
    }
    Ok(entries)
}

/// Percent-escapes what would break a line of `KEY VALUE`: `%`, spaces, control bytes.
fn escape(b: &[u8], out: &mut Vec<u8>) {
    for &c in b {
        if c == b'%' || c == b' ' || c < 0x20 || c == 0x7f {
            let _ = write!(out, "%{c:02x}");
        } else {
            out.push(c);
        }
    }
}

fn unescape(b: &[u8], out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let Some(hex) = b.get(i + 1..i + 3) else {
                return false;
            };
            let Some(c) = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            else {
                return false;
            };
            out.push(c);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    true
}

/// The evictions of a bounded state (the oldest forgotten to stay within its bounds):
/// counted since creation, and logged at a bounded rate.
#[derive(Debug, Default)]
pub struct Evictions {
    total: u64,
    /// Evictions not yet logged.
    unreported: u64,
    limiter: LogLimiter,
}

impl Evictions {
    /// One more eviction.
    #[inline]
    pub fn count(&mut self) {
        self.total += 1;
        self.unreported += 1;
    }

    /// Evictions since creation.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Logs the evictions since the last report, if any, at most
    /// [`LOG_BURST`](crate::kit::on_error::LOG_BURST) lines a second (what is held back
    /// goes with the next line). `cog` names the cog, `max_keys` the bound kept.
    pub fn report(&mut self, cog: &str, max_keys: usize, cx: &mut Ctx<'_>) {
        if self.unreported == 0 || !self.limiter.allow("evictions", cog, cx) {
            return;
        }
        slog::warn!(cx.logger(), "state full: oldest keys evicted";
            "cog" => cog, "evicted" => self.unreported, "total" => self.total,
            "max_keys" => max_keys);
        self.unreported = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_hash_tells_apart_prefixes_trailing_zeros_and_each_byte() {
        let state = FastState::default();
        let hash = |b: &[u8]| {
            let mut h = state.build_hasher();
            h.write(b);
            h.finish()
        };
        let text: Vec<u8> = (1..=40u8).collect();
        let mut seen = std::collections::HashSet::new();
        for n in 0..=text.len() {
            assert!(seen.insert(hash(&text[..n])), "prefix of {n} bytes");
            let mut zero = text[..n].to_vec();
            zero.push(0);
            assert!(seen.insert(hash(&zero)), "{n} bytes and a NUL");
            // Every byte counts, whatever the length (the tail word overlaps the others).
            for i in 0..n {
                let mut other = text[..n].to_vec();
                other[i] ^= 0x80;
                assert_ne!(hash(&other), hash(&text[..n]), "{n} bytes, byte {i}");
            }
        }
        assert_eq!(hash(b"same key"), hash(b"same key"));
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("deadbeat-keyed-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn key(i: u64) -> Rc<[u8]> {
        Rc::from(format!("key {i}\n%").as_bytes())
    }

    #[test]
    fn the_bound_holds_and_evictions_are_counted() {
        let n: u64 = std::env::var("DEADBEAT_KEYED_KEYS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        let mut k: Keyed<u64, u64> = Keyed::new(10_000);
        for i in 0..n {
            k.insert(i, i);
            assert!(k.len() <= 10_000);
        }
        assert_eq!(k.len(), 10_000);
        assert_eq!(k.evictions(), n - 10_000);
        // The newest stay, oldest first.
        let kept: Vec<u64> = k.iter().map(|(k, _)| *k).collect();
        assert_eq!(kept, (n - 10_000..n).collect::<Vec<_>>());
        // The order queue stays bounded too.
        assert!(k.order.len() <= 2 * k.len() + 64);
    }

    #[test]
    fn writes_and_touches_reorder_reads_do_not() {
        let mut k: Keyed<u64, &str> = Keyed::new(3);
        k.insert(1, "a");
        k.insert(2, "b");
        k.insert(3, "c");
        assert_eq!(k.get(&1), Some(&"a"));
        k.insert(2, "B"); // rewritten: newest
        k.insert(4, "d"); // evicts 1, the oldest write
        assert_eq!(k.get(&1), None);
        k.touch(&3); // used: newest
        k.insert(5, "e"); // evicts 2
        assert_eq!(k.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![4, 3, 5]);
        assert_eq!(k.evictions(), 2);
        // Many rewrites of one key leave the queue bounded.
        for i in 0..10_000 {
            k.insert(5, if i % 2 == 0 { "x" } else { "y" });
        }
        assert!(k.order.len() <= 2 * k.len() + 64);
        assert_eq!(k.len(), 3);
        assert_eq!(k.remove(&4), Some("d"));
        assert_eq!(k.pop_oldest(), Some((3, "c")));
    }

    #[test]
    fn expiry_takes_from_the_oldest_end_only() {
        let mut k: Keyed<u64, u64> = Keyed::new(10);
        for i in 0..6 {
            k.insert(i, i * 10);
        }
        assert_eq!(k.expire_oldest(|v| *v < 30), 3);
        assert_eq!(k.len(), 3);
        assert_eq!(k.evictions(), 0);
        assert_eq!(k.expire_oldest(|v| *v < 30), 0);
    }

    /// The keys' bytes stay within `max_bytes` whatever their sizes, evictions are
    /// counted, and every way out (remove, expiry, pop) gives the bytes back.
    #[test]
    fn the_byte_bound_holds_and_is_counted_back() {
        fn size(k: &Rc<[u8]>) -> usize {
            k.len()
        }
        let mut k: Keyed<Rc<[u8]>, u64> = Keyed::new(1000).with_max_bytes(100, size);
        let held = |k: &Keyed<Rc<[u8]>, u64>| k.iter().map(|(k, _)| k.len()).sum::<usize>();
        for i in 0..200u64 {
            let key: Rc<[u8]> = Rc::from(vec![b'x'; 1 + (i as usize * 7) % 40].as_slice());
            let mut key = key.to_vec();
            key.extend_from_slice(&i.to_le_bytes());
            k.insert(Rc::from(key), i);
            assert!(k.bytes() <= 100, "{} bytes after {i}", k.bytes());
            assert_eq!(k.bytes(), held(&k));
        }
        assert!(k.evictions() > 150, "{}", k.evictions());
        assert!(k.len() < 10);
        // A replaced value keeps its key's bytes counted once.
        let (first, _) = k.iter().next().map(|(a, b)| (a.clone(), *b)).unwrap();
        k.insert(first.clone(), 7);
        assert_eq!(k.bytes(), held(&k));
        k.remove(&first[..]);
        assert_eq!(k.bytes(), held(&k));
        k.expire_oldest(|_| true);
        assert_eq!((k.bytes(), k.len()), (0, 0));
        k.insert(Rc::from(&b"abc"[..]), 1);
        k.pop_oldest();
        assert_eq!(k.bytes(), 0);
    }

    /// Long keys become `KEY_CAP + 1` bytes, told apart by their digests even with the
    /// same head, never equal to a key kept as it is; short keys (invalid UTF-8 too) stay.
    #[test]
    fn long_keys_are_capped_by_digest() {
        let mut short = vec![0xff, 0xfe, b'a'];
        cap_key(&mut short);
        assert_eq!(short, [0xff, 0xfe, b'a']);
        let mut at_cap = vec![b'k'; KEY_CAP];
        cap_key(&mut at_cap);
        assert_eq!(at_cap.len(), KEY_CAP);

        let long = |tail: &[u8]| {
            let mut k = vec![0xffu8; 100_000];
            k.extend_from_slice(tail);
            cap_key(&mut k);
            k
        };
        let (a, b, a2) = (long(b"a"), long(b"b"), long(b"a"));
        assert_eq!(a.len(), KEY_CAP + 1);
        assert_eq!(a, a2, "the same key, the same capped key");
        assert_ne!(a, b, "same head, other tail: other keys");
        // Lengths differing only by a zero byte are other keys too.
        let (mut z1, mut z2) = (vec![0u8; 1000], vec![0u8; 1001]);
        cap_key(&mut z1);
        cap_key(&mut z2);
        assert_ne!(z1, z2);
        // No two of many long keys collide.
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000u32 {
            let mut k = vec![b'x'; 300];
            k.extend_from_slice(&i.to_le_bytes());
            cap_key(&mut k);
            assert!(seen.insert(k), "collision at {i}");
        }
    }

    #[test]
    fn save_and_load_round_trip_in_order() {
        let dir = temp_dir("round");
        let path = dir.join("sub/state");
        let mut k: Keyed<Rc<[u8]>, u64> = Keyed::new(100);
        for i in 0..50 {
            k.insert(key(i), i * 7);
        }
        k.insert(key(3), 1); // moves to the end
        k.save(&path, "test", 1).unwrap();
        let mut back: Keyed<Rc<[u8]>, u64> = Keyed::new(100);
        assert_eq!(back.load(&path, "test", 1).unwrap(), 50);
        let a: Vec<_> = k.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let b: Vec<_> = back.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(a, b);
        // Loaded into a smaller map, the newest stay.
        let mut small: Keyed<Rc<[u8]>, u64> = Keyed::new(10);
        assert_eq!(small.load(&path, "test", 1).unwrap(), 50);
        assert_eq!(small.len(), 10);
        assert_eq!(small.get(&key(3)[..]), Some(&1));
        // No temporary file is left behind; a missing file is nothing to load.
        assert_eq!(std::fs::read_dir(dir.join("sub")).unwrap().count(), 1);
        assert_eq!(back.load(&dir.join("none"), "test", 1).unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn foreign_corrupt_and_truncated_files_are_errors_and_change_nothing() {
        let dir = temp_dir("bad");
        let path = dir.join("state");
        let mut k: Keyed<Rc<[u8]>, u64> = Keyed::new(100);
        for i in 0..20 {
            k.insert(key(i), i);
        }
        k.save(&path, "test", 1).unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut fresh: Keyed<Rc<[u8]>, u64> = Keyed::new(100);

        let check = |bytes: &[u8], want: &str| {
            let mut fresh: Keyed<Rc<[u8]>, u64> = Keyed::new(100);
            std::fs::write(&path, bytes).unwrap();
            let err = fresh.load(&path, "test", 1).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(want), "{want:?} not in {text:?}");
            assert!(text.contains("state"), "{text}");
            assert!(fresh.is_empty());
        };
        // Cut anywhere: truncated or corrupt, never loaded.
        for cut in [0, 5, 20, good.len() / 2, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            let e = fresh.load(&path, "test", 1).unwrap_err();
            assert!(
                matches!(
                    e,
                    StateError::Truncated(_) | StateError::Corrupt(..) | StateError::Foreign(..)
                ),
                "cut at {cut}: {e}"
            );
            assert!(fresh.is_empty());
        }
        let mut flipped = good.clone();
        let at = good.len() / 2;
        flipped[at] = if flipped[at] == b'1' { b'2' } else { b'1' };
        check(&flipped, "corrupt");
        check(b"deadbeat-checkpoint 1 gen 4\n1 2 3\n", "not a state file");
        check(b"\x00\x01\x02 binary garbage\n\xff", "not a state file");
        let other = String::from_utf8_lossy(&good).replacen("test", "other", 1);
        check(other.as_bytes(), "not a state file");
        let newer = String::from_utf8_lossy(&good).replacen("test 1", "test 2", 1);
        check(newer.as_bytes(), "unsupported state version");
        // A bad value (not a number) with a matching hash is still refused.
        let mut forged = b"deadbeat-state test 1\n".to_vec();
        let lines = b"k notanumber\n";
        forged.extend_from_slice(lines);
        forged.extend_from_slice(format!("end 1 {:016x}\n", fingerprint(lines)).as_bytes());
        check(&forged, "bad value");
        // An unreadable path (a directory) is an I/O error.
        let e = fresh.load(&dir, "test", 1).unwrap_err();
        assert!(matches!(e, StateError::Io(..)), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
