//! Adding, renaming, removing and copying fields.
//!
//! The four cogs address fields by dotted path (`src.ip`). They never fail on a record:
//! a source field that is missing is skipped silently (optional fields are normal in
//! logs), so they take no `on_error` key.

use std::fmt;

use crate::kit::CogDescriptor;
use crate::record::{Path, Record, Value};
use crate::schema::settings::de::{
    self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor,
};
use crate::schema::{
    CogParams, ConfigError, Node, NodeValue, ParamType, SettingError, SettingValue,
};

pub mod copy;
pub mod remove;
pub mod rename;
pub mod set;

/// Descriptors of the cogs in this folder.
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![
        set::DESCRIPTOR,
        rename::DESCRIPTOR,
        remove::DESCRIPTOR,
        copy::DESCRIPTOR,
    ]
}

type TakeFn<D> = dyn Fn(&mut D) -> Option<Value>;

/// Removes a piece of a datum and hands it over: what `rename` and `remove` need beyond
/// a [`Setter`](crate::engine::getset::Setter).
pub struct Taker<D> {
    f: Box<TakeFn<D>>,
}

impl<D> Taker<D> {
    /// Wraps a closure that removes the piece from the datum.
    pub fn new(f: impl Fn(&mut D) -> Option<Value> + 'static) -> Self {
        Taker { f: Box::new(f) }
    }

    /// Removes the piece and returns it, if the datum has it.
    #[inline]
    pub fn take(&self, d: &mut D) -> Option<Value> {
        (self.f)(d)
    }
}

impl<D> fmt::Debug for Taker<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Taker")
    }
}

/// Removes the value at a dotted path of a record.
pub fn take_at(path: Path) -> Taker<Record> {
    Taker::new(move |r: &mut Record| r.remove_path(&path))
}

/// The entries of the table at `key` with nested tables flattened into dotted paths, in
/// file order: `{ geo.country = "FR" }` and `{ "geo.country" = "FR" }` both name the
/// path `geo.country`, so an unquoted dotted key does not replace the whole `geo` map.
/// An empty table is kept as a value.
pub(crate) fn flat_table<'a>(
    p: &CogParams<'a>,
    key: &str,
) -> Result<Vec<(String, &'a Node)>, ConfigError> {
    fn walk<'a>(prefix: &str, n: &'a Node, out: &mut Vec<(String, &'a Node)>) {
        match &n.value {
            NodeValue::Table(entries) if !entries.is_empty() && !prefix.is_empty() => {
                for (k, v) in entries {
                    walk(&format!("{prefix}.{}", k.get_ref()), v, out);
                }
            }
            NodeValue::Table(entries) if prefix.is_empty() => {
                for (k, v) in entries {
                    walk(k.get_ref(), v, out);
                }
            }
            _ => out.push((prefix.to_string(), n)),
        }
    }
    let node = p
        .node(key)
        .ok_or_else(|| p.cog_error(format!("missing key {key:?}")))?;
    if !matches!(node.value, NodeValue::Table(_)) {
        return Err(p.error(
            key,
            format!("expected a table, found {}", node.value.type_name()),
        ));
    }
    let mut out = Vec::new();
    walk("", node, &mut out);
    if out.is_empty() {
        return Err(p.error(key, "give at least one field"));
    }
    Ok(out)
}

/// Parses a field path written in the configuration, as an error at `key` naming it.
pub(crate) fn parse_path(p: &CogParams<'_>, key: &str, path: &str) -> Result<Path, ConfigError> {
    Path::parse(path).map_err(|e| {
        let mut err = p.error(key, format!("bad field path {path:?}: {e}"));
        err.key = Some(format!("{key}.{path}"));
        err
    })
}

/// The table at `key` as `source path → destination path` pairs (`rename`, `copy`).
pub(crate) fn path_pairs(p: &CogParams<'_>, key: &str) -> Result<Vec<(Path, Path)>, ConfigError> {
    flat_table(p, key)?
        .into_iter()
        .map(|(from, n)| {
            let NodeValue::Str(to) = &n.value else {
                let mut err = p.error(
                    key,
                    format!(
                        "expected a field path (a string) for {from:?}, found {}",
                        n.value.type_name()
                    ),
                );
                err.key = Some(format!("{key}.{from}"));
                return Err(err);
            };
            Ok((parse_path(p, key, &from)?, parse_path(p, key, to)?))
        })
        .collect()
}

/// The `fields` table of `set`, `copy` and `rename`: dotted field paths with their values,
/// in the order written. A nested table is read as dotted paths (`{ geo = { country =
/// "FR" } }` names `geo.country`, as `{ "geo.country" = "FR" }` does); an empty one is kept
/// as a value. From Rust: `[("client", "client_raw")].into_iter().collect()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldTable(pub Vec<(String, toml::Value)>);

impl<K: Into<String>, V: Into<toml::Value>> FromIterator<(K, V)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        FieldTable(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl FieldTable {
    /// The entries with their paths parsed; none is an error.
    pub(crate) fn paths(&self) -> Result<Vec<(Path, &toml::Value)>, SettingError> {
        if self.0.is_empty() {
            return Err(SettingError::new("fields", "give at least one field"));
        }
        self.0
            .iter()
            .map(|(name, v)| Ok((setting_path(name)?, v)))
            .collect()
    }

    /// The entries as `source path → destination path` pairs (`rename`, `copy`).
    pub(crate) fn path_pairs(&self) -> Result<Vec<(Path, Path)>, SettingError> {
        self.paths()?
            .into_iter()
            .map(|(from, v)| {
                let toml::Value::String(to) = v else {
                    return Err(SettingError::new(
                        "fields",
                        format!(
                            "expected a field path (a string) for {:?}, found {}",
                            from.to_string(),
                            v.type_str()
                        ),
                    ));
                };
                Ok((from, setting_path(to)?))
            })
            .collect()
    }
}

/// Parses a field path given in settings.
pub(crate) fn setting_path(path: &str) -> Result<Path, SettingError> {
    Path::parse(path)
        .map_err(|e| SettingError::new("fields", format!("bad field path {path:?}: {e}")))
}

impl SettingValue for FieldTable {
    const TYPE: ParamType = ParamType::Table;

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        d.deserialize_any(Entries {
            prefix: String::new(),
            out: &mut out,
        })?;
        Ok(FieldTable(out))
    }

    fn from_default(_: &str) -> Option<Self> {
        None
    }
}

/// Reads the value under `prefix` into `out`: a non-empty table as more dotted paths, any
/// other value (an empty table included) as itself.
struct Entries<'o> {
    prefix: String,
    out: &'o mut Vec<(String, toml::Value)>,
}

impl Entries<'_> {
    fn leaf<E>(self, v: toml::Value) -> Result<(), E> {
        self.out.push((self.prefix, v));
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Entries<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Entries<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of dotted field paths")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut any = false;
        while let Some(k) = map.next_key::<String>()? {
            any = true;
            let prefix = if self.prefix.is_empty() {
                k
            } else {
                format!("{}.{k}", self.prefix)
            };
            map.next_value_seed(Entries {
                prefix,
                out: &mut *self.out,
            })?;
        }
        if !any && !self.prefix.is_empty() {
            self.out
                .push((self.prefix, toml::Value::Table(toml::Table::new())));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<toml::Value>()? {
            items.push(v);
        }
        self.leaf(toml::Value::Array(items))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.leaf(toml::Value::String(s.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(toml::Value::Integer(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(i) => self.leaf(toml::Value::Integer(i)),
            Err(_) => Err(E::custom(format!("integer {v} is too large"))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(toml::Value::Float(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(toml::Value::Boolean(v))
    }
}
