//! Interned field names: [`Key`].

use super::json_render::{extend_padded, short_words, write_escaped};
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use std::sync::RwLock;

/// An interned field name: a `u32` that compares, hashes and copies like an integer.
///
/// Names live for the rest of the process, so build keys once (when a train is set up) and
/// keep them; [`Key::as_str`] is then a couple of plain loads, lock-free.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub(super) u32);

/// What the interner keeps per key: the name, and the name already rendered as a JSON
/// object key after a comma (`,"name":`) so rendering a field name is a single copy.
struct KeyName {
    name: &'static str,
    json: &'static [u8],
    /// `json` padded to a fixed size, when it fits, for [`extend_padded`].
    padded: Option<[u8; 32]>,
}

/// Segment `s` of [`NAMES`] holds `1 << (FIRST_SEGMENT_BITS + s)` names.
const FIRST_SEGMENT_BITS: u32 = 6;
/// Enough doubling segments to cover every `u32` id.
pub(super) const SEGMENTS: usize = 33 - FIRST_SEGMENT_BITS as usize;

/// Names by id, readable without a lock: segments are allocated once and never move, and
/// each slot is written once, before its `Key` is handed out.
static NAMES: [OnceLock<Box<[OnceLock<KeyName>]>>; SEGMENTS] =
    [const { OnceLock::new() }; SEGMENTS];

/// Ids by name; only consulted when interning.
fn ids() -> &'static RwLock<HashMap<&'static str, Key>> {
    static IDS: OnceLock<RwLock<HashMap<&'static str, Key>>> = OnceLock::new();
    IDS.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Segment and index of a key id in [`NAMES`].
#[inline]
pub(super) fn slot_of(id: u32) -> (usize, usize) {
    let n = u64::from(id) + (1 << FIRST_SEGMENT_BITS);
    let bits = 63 - n.leading_zeros();
    (
        (bits - FIRST_SEGMENT_BITS) as usize,
        (n - (1 << bits)) as usize,
    )
}

/// Slots in the per-thread key cache: a power of two, at most 256 (see `cache_slot`).
const KEY_CACHE_SLOTS: usize = 256;

/// A cached name and its key.
type CachedKey = Cell<Option<(&'static [u8], Key)>>;

thread_local! {
    /// Recently interned names by a cheap hash of their bytes. Parsing JSON interns every
    /// object key of every record, and the interner's lock and SipHash would otherwise cost
    /// more than the rest of the parse. A collision only costs a miss, so the weak hash does
    /// not expose the interner (which keeps SipHash) to hash flooding.
    static KEY_CACHE: [CachedKey; KEY_CACHE_SLOTS] =
        const { [const { Cell::new(None) }; KEY_CACHE_SLOTS] };
}

/// Slot of `name` in [`KEY_CACHE`], from its length and first and last eight bytes.
#[inline]
fn cache_slot(name: &[u8]) -> usize {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let (head, tail) = match (name.first_chunk::<8>(), name.last_chunk::<8>()) {
        (Some(h), Some(t)) => (u64::from_le_bytes(*h), u64::from_le_bytes(*t)),
        _ => (name.iter().fold(0, |w, &b| w << 8 | u64::from(b)), 0),
    };
    let h = (head ^ name.len() as u64).wrapping_mul(K);
    let h = (h.rotate_left(29) ^ tail).wrapping_mul(K);
    (h >> 56) as usize % KEY_CACHE_SLOTS
}

/// `a == b`, without a call to `memcmp` for the short strings that field names are.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && if a.len() <= 16 {
            short_words(a) == short_words(b)
        } else {
            a == b
        }
}

/// How many distinct field names the interner accepts from input data
/// ([`Key::from_input`]); names from configuration are always accepted.
pub const MAX_INPUT_KEYS: usize = 1 << 16;

impl Key {
    /// Interns `name`, returning the same key for the same name from any thread.
    ///
    /// The name is leaked: the set of keys only grows. That is the right trade for field
    /// names from configuration, but see [`Key::try_existing`] for untrusted names.
    pub fn new(name: &str) -> Key {
        if let Some(k) = Key::cached(name.as_bytes()) {
            return k;
        }
        let key = Key::intern(name);
        let name = key.as_str().as_bytes();
        let _ = KEY_CACHE.try_with(|c| c[cache_slot(name)].set(Some((name, key))));
        key
    }

    /// The key for `name` if this thread interned or looked it up recently.
    #[inline]
    pub(super) fn cached(name: &[u8]) -> Option<Key> {
        let slot = cache_slot(name);
        KEY_CACHE
            .try_with(|c| match c[slot].get() {
                Some((n, k)) if same_bytes(n, name) => Some(k),
                _ => None,
            })
            .ok()
            .flatten()
    }

    fn intern(name: &str) -> Key {
        // A poisoned lock only means another thread panicked mid-insert; the map is still
        // consistent because the slot is filled before the map entry is added.
        if let Some(&k) = ids().read().unwrap_or_else(|e| e.into_inner()).get(name) {
            return k;
        }
        let mut ids = ids().write().unwrap_or_else(|e| e.into_inner());
        if let Some(&k) = ids.get(name) {
            return k;
        }
        // Four billion leaked names would exhaust memory long before this triggers.
        let id = u32::try_from(ids.len()).expect("key interner full");
        let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let mut json = Vec::with_capacity(name.len() + 4);
        json.push(b',');
        write_escaped(&mut json, name.as_bytes());
        json.push(b':');
        let json: &'static [u8] = Box::leak(json.into_boxed_slice());
        let (seg, idx) = slot_of(id);
        let segment = NAMES[seg].get_or_init(|| {
            let len = 1usize << (seg + FIRST_SEGMENT_BITS as usize);
            (0..len).map(|_| OnceLock::new()).collect()
        });
        let padded = (json.len() <= 32).then(|| {
            let mut p = [0; 32];
            p[..json.len()].copy_from_slice(json);
            p
        });
        // Unique ids under the write lock mean the slot is always empty here.
        let _ = segment[idx].set(KeyName { name, json, padded });
        let key = Key(id);
        ids.insert(name, key);
        key
    }

    /// Interns a name that comes from input data (a JSON object key, a `key=value` pair, a
    /// syslog structured-data name): like [`Key::new`], but refused (`None`) once the
    /// interner holds [`MAX_INPUT_KEYS`] names and `name` is not among them. Names are never
    /// freed, so without this bound a sender inventing new names would grow the daemon's
    /// memory for as long as it runs.
    pub fn from_input(name: &str) -> Option<Key> {
        Key::from_input_within(name, MAX_INPUT_KEYS)
    }

    pub(super) fn from_input_within(name: &str, limit: usize) -> Option<Key> {
        if let Some(k) = Key::try_existing(name) {
            return Some(k);
        }
        if ids().read().unwrap_or_else(|e| e.into_inner()).len() >= limit {
            return None;
        }
        Some(Key::new(name))
    }

    /// Returns the key for `name` if it was already interned, without interning it.
    ///
    /// Interning names taken from untrusted input (JSON object keys, say) lets a sender grow
    /// the interner without bound, since names are never freed. Cogs that only care about
    /// known fields can look names up with this instead and skip the rest. The JSON parser
    /// still uses [`Key::new`], keeping every key of the input, which is simpler and right for
    /// inputs whose set of field names is bounded.
    pub fn try_existing(name: &str) -> Option<Key> {
        if let Some(k) = Key::cached(name.as_bytes()) {
            return Some(k);
        }
        ids()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }

    fn entry(self) -> Option<&'static KeyName> {
        let (seg, idx) = slot_of(self.0);
        NAMES[seg].get()?.get(idx)?.get()
    }

    /// The interned name.
    #[inline]
    pub fn as_str(self) -> &'static str {
        // Keys are only made by `Key::new`, which fills the slot first.
        self.entry().map_or("", |e| e.name)
    }

    /// Appends the name as a JSON object key with its colon, after a comma: `,"name":`.
    #[inline]
    pub(super) fn write_json_key(self, out: &mut Vec<u8>) {
        match self.entry() {
            Some(KeyName {
                padded: Some(p),
                json,
                ..
            }) => extend_padded(out, p, json.len()),
            Some(e) => out.extend_from_slice(e.json),
            None => out.extend_from_slice(b",\"\":"),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", self.as_str())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keys order by name, not by id, so sorted output does not depend on interning order.
impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.0 == other.0 {
            std::cmp::Ordering::Equal
        } else {
            self.as_str().cmp(other.as_str())
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
