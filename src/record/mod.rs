//! The dynamic datum of TOML-built trains: a [`Record`] of named [`Value`]s, with fast
//! hand-written JSON rendering and parsing.
//!
//! Field names are interned once, when a train is built, into [`Key`]s; cogs then address
//! fields by `Key` or by a pre-parsed dotted [`Path`], so the per-record work is integer
//! compares over a short vector rather than string hashing.
//!
//! ```
//! use deadbeat::record::{Key, Path, Record, Value};
//! let mut rec = Record::new();
//! rec.insert(Key::new("status"), Value::Int(404));
//! rec.set_path(&Path::parse("src.ip").unwrap(), Value::from("10.0.0.1"));
//! let mut line = Vec::new();
//! rec.write_json(&mut line);
//! assert_eq!(line, br#"{"status":404,"src":{"ip":"10.0.0.1"}}"#);
//! assert_eq!(Record::parse_json(&line).unwrap(), rec);
//! ```

pub mod expr;
pub mod pool;
pub mod timefmt;

mod ip;
mod json_parse;
mod json_render;
mod key;
mod map;
mod path;
mod shared;
mod time;
mod value;

pub use ip::{parse_ip, write_ip};
pub use json_parse::JsonError;
pub use json_render::write_json_str_body;
pub use key::{Key, MAX_INPUT_KEYS};
pub use map::{Map, Slot};
pub use path::{Path, PathError};
pub use shared::{InlineStr, MAX_INTERNED, MAX_INTERNED_VALUE_LEN, MAX_INTERNED_VALUES, SharedStr};
pub use time::Timestamp;
pub use value::Value;

use std::fmt;

use crate::EventId;
use crate::engine::getset::{Field, Getter, MutGetter, Setter};

// ---------------------------------------------------------------------------------------------
// Record
// ---------------------------------------------------------------------------------------------

/// The datum of TOML-built trains: an event id plus named fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    /// The event's id, assigned by the input.
    pub id: EventId,
    /// The fields, in insertion order.
    pub fields: Map,
}

impl Record {
    /// An empty record with id 0.
    pub fn new() -> Record {
        Record::default()
    }

    /// An empty record with room for `n` top-level fields.
    pub fn with_capacity(n: usize) -> Record {
        Record {
            id: 0,
            fields: Map::with_capacity(n),
        }
    }

    /// The top-level field `key`.
    #[inline]
    pub fn get(&self, key: Key) -> Option<&Value> {
        self.fields.get(key)
    }

    /// The top-level field `key`, mutably.
    #[inline]
    pub fn get_mut(&mut self, key: Key) -> Option<&mut Value> {
        self.fields.get_mut(key)
    }

    /// Sets the top-level field `key`, returning the old value.
    #[inline]
    pub fn insert(&mut self, key: Key, value: Value) -> Option<Value> {
        self.fields.insert(key, value)
    }

    /// Removes the top-level field `key`.
    pub fn remove(&mut self, key: Key) -> Option<Value> {
        self.fields.remove(key)
    }

    /// The value at `path`; `None` if a step is missing or not a map.
    pub fn get_path(&self, path: &Path) -> Option<&Value> {
        let (first, rest) = path.keys.split_first()?;
        let mut v = self.fields.get(*first)?;
        for k in rest {
            v = match v {
                Value::Map(m) => m.get(*k)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// The value at `path`, mutably.
    pub fn get_path_mut(&mut self, path: &Path) -> Option<&mut Value> {
        let (first, rest) = path.keys.split_first()?;
        let mut v = self.fields.get_mut(*first)?;
        for k in rest {
            v = match v {
                Value::Map(m) => m.get_mut(*k)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// Stores `value` at `path`, creating missing intermediate maps and replacing
    /// intermediate values that are not maps.
    pub fn set_path(&mut self, path: &Path, value: Value) {
        let Some((last, parents)) = path.keys.split_last() else {
            return;
        };
        let mut map = &mut self.fields;
        for k in parents {
            let slot = map.slot(*k);
            if !matches!(slot, Value::Map(_)) {
                *slot = Value::Map(Map::new());
            }
            let Value::Map(m) = slot else {
                return;
            };
            map = m;
        }
        map.insert(*last, value);
    }

    /// Removes and returns the value at `path`.
    pub fn remove_path(&mut self, path: &Path) -> Option<Value> {
        let (last, parents) = path.keys.split_last()?;
        let mut map = &mut self.fields;
        for k in parents {
            map = match map.get_mut(*k)? {
                Value::Map(m) => m,
                _ => return None,
            };
        }
        map.remove(*last)
    }

    /// Empties the record for reuse: id 0, no fields, allocation kept.
    pub fn clear(&mut self) {
        self.id = 0;
        self.fields.clear();
    }

    /// Appends the fields as one JSON object, without a trailing newline. The id is not
    /// rendered; copy it into a field first if the output needs it.
    #[inline]
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.fields.write_json(out);
    }

    /// Parses a JSON object into a record with id 0; see [`Value::parse_json`].
    pub fn parse_json(input: &[u8]) -> Result<Record, JsonError> {
        match Value::parse_json(input)? {
            Value::Map(fields) => Ok(Record { id: 0, fields }),
            _ => Err(JsonError {
                offset: input
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .unwrap_or(0),
                msg: "expected a JSON object",
            }),
        }
    }
}

type MergeFn<D> = dyn Fn(&mut D, &mut Map);

/// Stores fields a cog produced (a parser's captures, say) into a datum, whatever its
/// layout: the counterpart of a [`Setter`] for many named values at once. The map is
/// left empty, its allocation kept for the next datum.
pub struct Merge<D> {
    f: Box<MergeFn<D>>,
}

impl<D> Merge<D> {
    /// Wraps a closure that moves the entries of the map into the datum.
    pub fn new(f: impl Fn(&mut D, &mut Map) + 'static) -> Self {
        Merge { f: Box::new(f) }
    }

    /// Moves `fields` into `d`.
    #[inline]
    pub fn merge(&self, d: &mut D, fields: &mut Map) {
        (self.f)(d, fields);
        fields.clear();
    }
}

impl<D> fmt::Debug for Merge<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Merge")
    }
}

/// Merges fields into a record: at the top level (`None`), or into the map at `target`
/// (created if missing, replacing a non-map value there).
pub fn merge_into(target: Option<Path>) -> Merge<Record> {
    match target {
        None => Merge::new(|r: &mut Record, fields: &mut Map| r.fields.merge_from(fields)),
        Some(path) => Merge::new(move |r: &mut Record, fields: &mut Map| {
            if !matches!(r.get_path(&path), Some(Value::Map(_))) {
                r.set_path(&path, Value::Map(Map::with_capacity(fields.len())));
            }
            if let Some(Value::Map(m)) = r.get_path_mut(&path) {
                for (k, v) in fields.drain() {
                    m.insert(k, v);
                }
            }
        }),
    }
}

/// Reads the text or bytes at a dotted path (`Str`, `Shared` or `Bytes`), the input of
/// parsing cogs.
pub fn bytes_at(path: Path) -> Getter<Record, [u8]> {
    Getter::new(move |r: &Record| r.get_path(&path).and_then(Value::as_bytes))
}

/// Getter and setter for the value at a dotted path: the setter creates intermediate maps.
pub fn field(path: &str) -> Result<Field<Record, Value>, PathError> {
    let get_path = Path::parse(path)?;
    let set_path = get_path.clone();
    Ok(Field::new(
        Getter::new(move |r: &Record| r.get_path(&get_path)),
        Setter::new(move |r: &mut Record, v: Value| r.set_path(&set_path, v)),
    ))
}

/// Mutable getter for the value at a dotted path, for cogs rewriting a value in place.
pub fn field_mut(path: &str) -> Result<MutGetter<Record, Value>, PathError> {
    let path = Path::parse(path)?;
    Ok(MutGetter::new(move |r: &mut Record| r.get_path_mut(&path)))
}

/// Getter and setter for the record's event id.
pub fn id_field() -> Field<Record, EventId> {
    Field::new(
        Getter::new(|r: &Record| Some(&r.id)),
        Setter::new(|r: &mut Record, id: EventId| r.id = id),
    )
}

#[cfg(test)]
mod tests;
