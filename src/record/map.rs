//! [`Map`], the insertion-ordered fields of a record, and [`Slot`], a new entry filled in
//! place.

use super::json_render::write_escaped;
use super::key::Key;
use super::value::Value;

/// An insertion-ordered map from [`Key`] to [`Value`].
///
/// A plain vector scanned linearly: records have a handful of fields, where comparing a few
/// `u32`s beats hashing. Equality ignores order.
#[derive(Clone, Debug, Default)]
pub struct Map {
    pub(super) entries: Vec<(Key, Value)>,
}

impl Map {
    /// An empty map.
    pub fn new() -> Map {
        Map::default()
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Map {
        Map {
            entries: Vec::with_capacity(n),
        }
    }

    #[inline]
    fn position(&self, key: Key) -> Option<usize> {
        self.entries.iter().position(|(k, _)| *k == key)
    }

    /// The value under `key`.
    #[inline]
    pub fn get(&self, key: Key) -> Option<&Value> {
        self.entries
            .iter()
            .find_map(|(k, v)| (*k == key).then_some(v))
    }

    /// The value under `key`, mutably.
    #[inline]
    pub fn get_mut(&mut self, key: Key) -> Option<&mut Value> {
        self.entries
            .iter_mut()
            .find_map(|(k, v)| (*k == key).then_some(v))
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: Key) -> bool {
        self.position(key).is_some()
    }

    /// The entries, for [`crate::record::pool::recycle`].
    pub(crate) fn into_entries(self) -> Vec<(Key, Value)> {
        self.entries
    }

    /// The entries' vector, for [`crate::record::pool::fill_fields`] to put a reused one in place
    /// and reserve room; keys must stay distinct.
    pub(crate) fn entries_mut(&mut self) -> &mut Vec<(Key, Value)> {
        &mut self.entries
    }

    /// Appends `key` with `value` without looking for an existing entry: for a parser or
    /// supply filling a map with keys it knows to be distinct, where [`Map::insert`] would
    /// scan the entries first.
    ///
    /// # Contract
    ///
    /// `key` must not be in the map. Debug builds panic if it is; release builds do not
    /// check (the check is the scan this method exists to skip). A duplicate never makes
    /// memory unsafe, but it leaves the map with two entries for `key`: [`Map::get`],
    /// [`Map::insert`] and [`Map::remove`] see only the first, [`Map::write_json`] renders
    /// both, and comparisons with another map can be wrong. Where the key may be present,
    /// use [`Map::insert`].
    ///
    /// ```
    /// use deadbeat::record::{Key, Map, Value};
    /// let mut m = Map::with_capacity(2);
    /// m.append_new(Key::new("method"), Value::from("GET"));
    /// m.append_new(Key::new("status"), Value::Int(200));
    /// let mut json = Vec::new();
    /// m.write_json(&mut json);
    /// assert_eq!(json, br#"{"method":"GET","status":200}"#);
    /// ```
    #[inline(always)]
    pub fn append_new(&mut self, key: Key, value: Value) {
        debug_assert!(!self.contains_key(key), "append_new with a present key");
        crate::engine::cog::push_in_place(&mut self.entries, (key, value));
    }

    /// Appends a null entry for `key` and returns its value as a [`Slot`] to fill in place
    /// with [`Slot::set`]: the fastest way to add a field, since the value is written where
    /// it lies instead of being built elsewhere and copied in (see
    /// docs/architecture.md#store-forwarding). A slot dropped unfilled leaves `Null`.
    ///
    /// # Contract
    ///
    /// As for [`Map::append_new`]: `key` must not be in the map, checked in debug builds
    /// only; a duplicate leaves two entries for `key` (never memory unsafety).
    ///
    /// ```
    /// use deadbeat::record::{Key, Map, Value};
    /// let (status, bytes) = (Key::new("status"), Key::new("bytes"));
    /// let mut m = Map::with_capacity(2);
    /// m.append_slot(status).set(Value::Int(404));
    /// let v = m.append_slot(bytes).set(Value::Int(0));
    /// *v = Value::Int(512); // `set` returns the value where it lies
    /// assert_eq!(m.get(status), Some(&Value::Int(404)));
    /// assert_eq!(m.get(bytes), Some(&Value::Int(512)));
    /// ```
    #[inline(always)]
    pub fn append_slot(&mut self, key: Key) -> Slot<'_> {
        debug_assert!(!self.contains_key(key), "append_slot with a present key");
        self.entries.reserve(1);
        let len = self.entries.len();
        // SAFETY: `reserve` made room for one more entry. Its two parts are written where
        // they lie before the length covers it (docs/architecture.md#store-forwarding).
        unsafe {
            let p = self.entries.as_mut_ptr().add(len);
            (&raw mut (*p).0).write(key);
            (&raw mut (*p).1).write(Value::Null);
            self.entries.set_len(len + 1);
            Slot(&mut (*p).1)
        }
    }

    /// Moves every entry of `other` into this map, as [`Map::insert`] would one by one,
    /// leaving `other` empty with its allocation. Only keys this map may hold (by a 64-bit
    /// summary of its keys) are searched for.
    pub fn merge_from(&mut self, other: &mut Map) {
        let bit = |k: Key| 1u64 << (k.0 & 63);
        let present = self.entries.iter().fold(0u64, |s, (k, _)| s | bit(*k));
        // Keys this map may hold replace their values in place; the rest (the keys of one
        // map are distinct) then move over in one copy rather than a push per pair, which
        // moves each pair through the stack (docs/architecture.md#store-forwarding).
        if other.entries.iter().any(|(k, _)| present & bit(*k) != 0) {
            other.entries.retain_mut(|(k, v)| {
                let slot = (present & bit(*k) != 0).then(|| self.get_mut(*k)).flatten();
                match slot {
                    Some(slot) => {
                        *slot = std::mem::take(v);
                        false
                    }
                    None => true,
                }
            });
        }
        self.entries.append(&mut other.entries);
    }

    /// Sets `key` to `value`, returning the old value. A replaced entry keeps its position;
    /// a new one goes last.
    pub fn insert(&mut self, key: Key, value: Value) -> Option<Value> {
        match self.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    /// The value under `key`, inserting `Null` first if absent.
    pub(super) fn slot(&mut self, key: Key) -> &mut Value {
        let i = match self.position(key) {
            Some(i) => i,
            None => {
                self.entries.push((key, Value::Null));
                self.entries.len() - 1
            }
        };
        &mut self.entries[i].1
    }

    /// Removes `key`, keeping the order of the others.
    pub fn remove(&mut self, key: Key) -> Option<Value> {
        let i = self.position(key)?;
        Some(self.entries.remove(i).1)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (Key, &Value)> + DoubleEndedIterator {
        self.entries.iter().map(|(k, v)| (*k, v))
    }

    /// The entries in order, values mutably.
    pub fn iter_mut(
        &mut self,
    ) -> impl ExactSizeIterator<Item = (Key, &mut Value)> + DoubleEndedIterator {
        self.entries.iter_mut().map(|(k, v)| (*k, v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes all entries, keeping the allocation.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Makes room for `n` more entries (one allocation instead of several as a parser's
    /// fields are merged in).
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
    }

    /// Takes every entry out, in order, keeping the allocation.
    pub fn drain(&mut self) -> impl Iterator<Item = (Key, Value)> + '_ {
        self.entries.drain(..)
    }

    /// Appends this map as a JSON object.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Every key is written after a comma; the first comma then becomes the `{`.
        let start = out.len();
        for (k, v) in &self.entries {
            k.write_json_key(out);
            // Strings are most fields of most records: skip the dispatch for them.
            match v {
                Value::Str(s) => write_escaped(out, s.as_bytes()),
                Value::Shared(s) => write_escaped(out, s.as_bytes()),
                v => v.write_json(out),
            }
        }
        match out.get_mut(start) {
            Some(brace) => *brace = b'{',
            None => out.push(b'{'),
        }
        out.push(b'}');
    }
}

impl PartialEq for Map {
    fn eq(&self, other: &Map) -> bool {
        // Keys are unique, so equal lengths plus every entry found means the same set.
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl FromIterator<(Key, Value)> for Map {
    /// Later duplicates replace earlier ones, as with [`Map::insert`].
    fn from_iter<I: IntoIterator<Item = (Key, Value)>>(iter: I) -> Map {
        let mut m = Map::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl IntoIterator for Map {
    type Item = (Key, Value);
    type IntoIter = std::vec::IntoIter<(Key, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// The value of a new entry ([`Map::append_slot`]), still `Null`, to be filled in place
/// with [`Slot::set`]. It borrows the map until it is filled or dropped.
pub struct Slot<'a>(&'a mut Value);

impl<'a> Slot<'a> {
    /// Stores `x` in the entry and returns it where it lies, to be finished in place. The
    /// `Null` it replaces is not read or dropped (it owns nothing).
    #[inline(always)]
    pub fn set(self, x: Value) -> &'a mut Value {
        // SAFETY: `self.0` is a valid, exclusive place. It holds `Value::Null`, which owns
        // nothing, so overwriting it without a drop leaks nothing; and not reading it first
        // avoids waiting on the store that just put it there
        // (docs/architecture.md#store-forwarding).
        unsafe { std::ptr::write(self.0, x) };
        self.0
    }
}
