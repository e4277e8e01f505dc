//! Adding, renaming, removing and copying fields.
//!
//! The four cogs address fields by dotted path (`src.ip`). They never fail on a record:
//! a source field that is missing is skipped silently (optional fields are normal in
//! logs), so they take no `on_error` key.

use std::fmt;

use crate::kit::CogDescriptor;
use crate::record::{Path, Record, Value};
use crate::schema::{CogParams, ConfigError, Node, NodeValue};

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
