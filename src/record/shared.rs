//! [`SharedStr`], text that clones cheaply, and [`InlineStr`], short text held in place.

use std::fmt;
use std::sync::OnceLock;

/// Text that clones cheaply ([`Value::Shared`]): a reference-counted string, one interned
/// for the life of the process ([`SharedStr::interned`]), or a short one held inline
/// ([`SharedStr::short`]). Clones and drops of the last two cost nothing, not even the
/// atomic count of an `Arc`. Dereferences to `str`.
///
/// [`Value::Shared`]: super::Value::Shared
#[derive(Clone)]
pub enum SharedStr {
    /// Counted: freed with its last clone.
    Counted(std::sync::Arc<str>),
    /// Kept until the process exits.
    Interned(&'static str),
    /// Held in the value itself: no allocation at all.
    Inline(InlineStr),
}

/// Up to [`InlineStr::CAPACITY`] bytes of UTF-8 held in place: most fields parsed out of a
/// log line (addresses, methods, `-`, short paths) fit, and then cost neither an
/// allocation nor a free.
#[derive(Clone, Copy)]
pub struct InlineStr {
    len: u8,
    bytes: [u8; InlineStr::CAPACITY],
}

impl InlineStr {
    /// The longest text held inline: what fits beside the tags in a 32-byte
    /// [`Value`](super::Value).
    pub const CAPACITY: usize = 22;

    /// No text.
    pub const EMPTY: InlineStr = InlineStr {
        len: 0,
        bytes: [0; InlineStr::CAPACITY],
    };

    /// `s` held inline; `None` if it is longer than [`InlineStr::CAPACITY`].
    #[inline]
    pub fn new(s: &str) -> Option<InlineStr> {
        let mut i = InlineStr::EMPTY;
        i.set(s).then_some(i)
    }

    /// Replaces the text with `s`, in place (a value filled where it lies is not copied
    /// again); `false`, with the text unchanged, if `s` is longer than
    /// [`InlineStr::CAPACITY`].
    #[inline]
    pub fn set(&mut self, s: &str) -> bool {
        let b = s.as_bytes();
        let n = b.len();
        if n > InlineStr::CAPACITY {
            return false;
        }
        // Two overlapping fixed-size copies instead of one of variable length, which would
        // be a call to `memcpy` costing more than the rest of this.
        fn overlap<const W: usize>(to: &mut [u8], from: &[u8]) {
            let n = from.len();
            if let (Some(head), Some(tail)) = (from.first_chunk::<W>(), from.last_chunk::<W>()) {
                to[..W].copy_from_slice(head);
                to[n - W..n].copy_from_slice(tail);
            }
        }
        match n {
            16.. => overlap::<16>(&mut self.bytes, b),
            8..16 => overlap::<8>(&mut self.bytes, b),
            4..8 => overlap::<4>(&mut self.bytes, b),
            _ => {
                for (to, from) in self.bytes.iter_mut().zip(b) {
                    *to = *from;
                }
            }
        }
        self.len = n as u8;
        true
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        let b = &self.bytes[..usize::from(self.len).min(InlineStr::CAPACITY)];
        // SAFETY: `set` is the only writer, and copies the bytes of a `str` whole before it
        // sets the length; the bytes beyond the length are never read.
        unsafe { std::str::from_utf8_unchecked(b) }
    }
}

/// Distinct strings [`SharedStr::interned`] keeps before it hands out counted ones: names
/// of sources (file paths) are few, but a daemon that runs for years must not grow without
/// bound if they are not. The first names stay: where files get new names forever (dated
/// rotations, one file per pod), later ones are counted, which costs an atomic count per
/// record, nothing more.
pub const MAX_INTERNED: usize = 4096;

/// Distinct field values [`SharedStr::interned_value`] keeps.
pub const MAX_INTERNED_VALUES: usize = 4096;

/// Longest field value [`SharedStr::interned_value`] keeps.
pub const MAX_INTERNED_VALUE_LEN: usize = 512;

/// Strings kept for the life of the process, each once.
struct Interner(OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>>);

impl Interner {
    const fn new() -> Interner {
        Interner(OnceLock::new())
    }

    /// The kept copy of `s`, kept now if fewer than `max` strings are; `None` if not.
    fn intern(&self, s: &str, max: usize) -> Option<&'static str> {
        let mut table = self
            .0
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&kept) = table.get(s) {
            return Some(kept);
        }
        if table.len() >= max {
            return None;
        }
        let kept: &'static str = Box::leak(s.into());
        table.insert(kept);
        Some(kept)
    }
}

impl SharedStr {
    /// `s` interned, so that records carrying it (every line of a file carries the file's
    /// path) clone it for free; counted instead once [`MAX_INTERNED`] strings are kept.
    pub fn interned(s: &str) -> SharedStr {
        static NAMES: Interner = Interner::new();
        match NAMES.intern(s, MAX_INTERNED) {
            Some(kept) => SharedStr::Interned(kept),
            None => SharedStr::Counted(s.into()),
        }
    }

    /// `s` interned like [`SharedStr::interned`], from a separate budget for field values
    /// (user agents, methods, `-`): at most [`MAX_INTERNED_VALUES`] strings of at most
    /// [`MAX_INTERNED_VALUE_LEN`] bytes, so the leak is bounded (2 MiB) and file names never
    /// compete with values. `None` once the budget is spent and `s` is not kept.
    pub fn interned_value(s: &str) -> Option<SharedStr> {
        static VALUES: Interner = Interner::new();
        if s.len() > MAX_INTERNED_VALUE_LEN {
            return None;
        }
        VALUES
            .intern(s, MAX_INTERNED_VALUES)
            .map(SharedStr::Interned)
    }

    /// `s` held inline if it is short enough ([`InlineStr::CAPACITY`]), else counted.
    #[inline]
    pub fn short(s: &str) -> SharedStr {
        match InlineStr::new(s) {
            Some(i) => SharedStr::Inline(i),
            None => SharedStr::Counted(s.into()),
        }
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match self {
            SharedStr::Counted(a) => a,
            SharedStr::Interned(s) => s,
            SharedStr::Inline(i) => i.as_str(),
        }
    }
}

impl std::ops::Deref for SharedStr {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for SharedStr {
    fn eq(&self, other: &SharedStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SharedStr {}

impl std::hash::Hash for SharedStr {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h);
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<std::sync::Arc<str>> for SharedStr {
    fn from(a: std::sync::Arc<str>) -> SharedStr {
        SharedStr::Counted(a)
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> SharedStr {
        SharedStr::Counted(s.into())
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> SharedStr {
        SharedStr::Counted(s.into())
    }
}
