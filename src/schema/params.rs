//! The parameters of one cog as written in a configuration, read with errors that point
//! at the key.

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::de::TableDe;
use super::error::{ConfigError, SettingError};
use super::node::{Node, NodeValue, Source};
use super::param::{Param, ParamType};
use super::settings::Settings;
use crate::record::expr::FieldKind;

/// The parameters of one cog in a train, with what is needed to report errors precisely.
#[derive(Debug)]
pub struct CogParams<'a> {
    pub(crate) src: &'a Source,
    pub(crate) train: &'a str,
    pub(crate) index: usize,
    pub(crate) ty: &'a str,
    pub(crate) id: Cow<'a, str>,
    pub(crate) named: bool,
    /// Fields whose kind the cogs before this one make known.
    pub(crate) kinds: Vec<(String, FieldKind)>,
    pub(crate) table_span: Range<usize>,
    pub(crate) entries: &'a [(Spanned<String>, Node)],
    pub(crate) base_dir: &'a Path,
    /// The cog this one is declared in ([`CogParams::nested_cogs`]), which errors name.
    pub(crate) outer: Option<Outer>,
}

/// The cog a nested cog is declared in (a cog of `parallel`'s sub-train): errors about the
/// nested cog name it, its key and the nested cog's id.
#[derive(Debug, Clone)]
pub(crate) struct Outer {
    index: usize,
    ty: String,
    id: String,
    named: bool,
}

/// A cog's parameters detached from the configuration they were read from: owned and
/// `Send`, so the cog can be built again on another thread (`parallel` builds its
/// sub-train on each of its workers). [`OwnedParams::params`] lends them out again, with
/// errors that still point into the file.
#[derive(Debug, Clone)]
pub struct OwnedParams {
    src: Arc<Source>,
    train: String,
    index: usize,
    ty: String,
    id: String,
    named: bool,
    kinds: Vec<(String, FieldKind)>,
    table_span: Range<usize>,
    entries: Vec<(Spanned<String>, Node)>,
    base_dir: PathBuf,
    outer: Option<Outer>,
}

impl OwnedParams {
    /// The parameters, as the cog's builder takes them.
    pub fn params(&self) -> CogParams<'_> {
        CogParams {
            src: &self.src,
            train: &self.train,
            index: self.index,
            ty: &self.ty,
            id: Cow::Borrowed(&self.id),
            named: self.named,
            kinds: self.kinds.clone(),
            table_span: self.table_span.clone(),
            entries: &self.entries,
            base_dir: &self.base_dir,
            outer: self.outer.clone(),
        }
    }
}

impl<'a> CogParams<'a> {
    /// An error about this cog, at `key` if it is given.
    pub fn error(&self, key: &str, msg: impl Into<String>) -> ConfigError {
        let span = self
            .node(key)
            .map(|n| n.span.clone())
            .unwrap_or(self.table_span.clone());
        self.error_at(&span, Some(key), msg)
    }

    /// An error about this cog as a whole.
    pub fn cog_error(&self, msg: impl Into<String>) -> ConfigError {
        self.error_at(&self.table_span, None, msg)
    }

    pub(crate) fn error_at(
        &self,
        span: &Range<usize>,
        key: Option<&str>,
        msg: impl Into<String>,
    ) -> ConfigError {
        let mut e = self.src.error(Some(span), msg);
        e.train = Some(self.train.to_string());
        match &self.outer {
            None => {
                e.cog = Some((self.index + 1, self.ty.to_string()));
                e.cog_name = self.named.then(|| self.id.to_string());
            }
            Some(o) => {
                e.cog = Some((o.index + 1, o.ty.clone()));
                e.cog_name = o.named.then(|| o.id.clone());
                e.msg = format!("in its cog {}: {}", self.id, e.msg);
            }
        }
        e.key = key.map(str::to_string);
        e
    }

    /// The type of this cog (its `type` key).
    pub fn cog_type(&self) -> &str {
        self.ty
    }

    /// The cogs declared inside this one under `key` (`[[train.cog.KEY]]` tables, in
    /// order), each with its parameters: errors about them name this cog, the nested
    /// cog's id (its `name`, or `TYPE#N` with N its 1-based place in the list) and the key.
    /// An error when `key` is not a list of tables, a table has no string `type`, or two
    /// share a name. Their keys are not checked yet: see [`CogParams::validate`].
    pub fn nested_cogs(&self, key: &str) -> Result<Vec<CogParams<'a>>, ConfigError> {
        let items = match self.node(key) {
            None => return Ok(Vec::new()),
            Some(Node {
                value: NodeValue::Array(items),
                ..
            }) => items,
            Some(n) => return Err(self.wrong_type(key, "cog tables", n)),
        };
        let outer = Outer {
            index: self.index,
            ty: self.ty.to_string(),
            id: self.id.to_string(),
            named: self.named,
        };
        let mut cogs: Vec<CogParams<'a>> = Vec::with_capacity(items.len());
        for (i, n) in items.iter().enumerate() {
            let NodeValue::Table(entries) = &n.value else {
                return Err(self.error_at(
                    &n.span,
                    Some(key),
                    format!("expected a cog table, found a {}", n.value.type_name()),
                ));
            };
            let find = |k: &str| entries.iter().find(|(x, _)| x.get_ref() == k);
            let ty = match find("type") {
                Some((
                    _,
                    Node {
                        value: NodeValue::Str(s),
                        ..
                    },
                )) => s.as_str(),
                Some((_, other)) => {
                    return Err(self.error_at(
                        &other.span,
                        Some(key),
                        format!("cog {} of `{key}`: its type must be a string", i + 1),
                    ));
                }
                None => {
                    return Err(self.error_at(
                        &n.span,
                        Some(key),
                        format!("cog {} of `{key}` has no `type`", i + 1),
                    ));
                }
            };
            let (id, named) = match find("name") {
                Some((
                    _,
                    Node {
                        value: NodeValue::Str(s),
                        ..
                    },
                )) if !s.trim().is_empty() => (s.as_str(), true),
                Some((_, other)) => {
                    return Err(self.error_at(
                        &other.span,
                        Some(key),
                        format!(
                            "cog {} of `{key}`: a cog's name must be a non-empty string",
                            i + 1
                        ),
                    ));
                }
                None => ("", false),
            };
            let id: Cow<'a, str> = if named {
                Cow::Borrowed(id)
            } else {
                Cow::Owned(format!("{ty}#{}", i + 1))
            };
            if cogs.iter().any(|c| c.id == id) {
                return Err(self.error_at(
                    &n.span,
                    Some(key),
                    format!("two cogs of `{key}` are named {id:?}: names are unique"),
                ));
            }
            cogs.push(CogParams {
                src: self.src,
                train: self.train,
                index: i,
                ty,
                id,
                named,
                kinds: Vec::new(),
                table_span: n.span.clone(),
                entries,
                base_dir: self.base_dir,
                outer: Some(outer.clone()),
            });
        }
        Ok(cogs)
    }

    /// These parameters, owned: see [`OwnedParams`].
    pub fn to_owned_params(&self) -> OwnedParams {
        OwnedParams {
            src: Arc::new(self.src.clone()),
            train: self.train.to_string(),
            index: self.index,
            ty: self.ty.to_string(),
            id: self.id.to_string(),
            named: self.named,
            kinds: self.kinds.clone(),
            table_span: self.table_span.clone(),
            entries: self.entries.to_vec(),
            base_dir: self.base_dir.to_path_buf(),
            outer: self.outer.clone(),
        }
    }

    /// The cog's typed settings, read from its keys (see [`settings!`](crate::settings)).
    /// Errors point at the value and name the key, as validation's do.
    pub fn settings<T: Settings>(&self) -> Result<T, ConfigError> {
        self.read_settings(None)
    }

    /// A group of the cog's settings (an output format, forwarding), read on its own: the
    /// cog's other keys are left to it.
    pub fn group<T: Settings>(&self) -> Result<T, ConfigError> {
        self.read_settings(Some(T::PARAMS))
    }

    fn read_settings<T: Settings>(&self, only: Option<&[Param]>) -> Result<T, ConfigError> {
        let d = TableDe {
            entries: self.entries,
            skip: &["type", "name"],
            only,
        };
        T::from_map(d).map_err(|e| {
            let span = e.span.clone().unwrap_or_else(|| self.table_span.clone());
            self.error_at(&span, e.key.as_deref(), e.msg)
        })
    }

    /// A [`SettingError`] found in this cog's settings, at its key.
    pub fn setting_error(&self, e: SettingError) -> ConfigError {
        self.error(e.key, e.msg)
    }

    /// Name of the train the cog is in.
    pub fn train(&self) -> &str {
        self.train
    }

    /// What the field at `path` (dotted) holds when the cogs before this one in its train
    /// make it known: a `regex` pattern's `types`, a constant of `set`. `None` when it
    /// cannot be known (most parsers set fields of any kind).
    pub fn field_kind(&self, path: &str) -> Option<FieldKind> {
        self.kinds.iter().find(|(p, _)| p == path).map(|(_, k)| *k)
    }

    /// The cog's id in its train, as logs and counters show it: its `name` key, or
    /// `TYPE#N` with N its 1-based position in the train.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The raw value of a key.
    pub fn node(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, n)| n)
    }

    fn wrong_type(&self, key: &str, want: &str, n: &Node) -> ConfigError {
        self.error(
            key,
            format!("expected {want}, found {}", n.value.type_name()),
        )
    }

    /// A string value.
    pub fn str(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.node(key) {
            None => Ok(None),
            Some(Node {
                value: NodeValue::Str(s),
                ..
            }) => Ok(Some(s)),
            Some(n) => Err(self.wrong_type(key, "a string", n)),
        }
    }

    /// A string value, or `default`.
    pub fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str, ConfigError> {
        Ok(self.str(key)?.unwrap_or(default))
    }

    /// A string that must be given.
    pub fn required_str(&self, key: &str) -> Result<&'a str, ConfigError> {
        self.str(key)?
            .ok_or_else(|| self.cog_error(format!("missing key {key:?}")))
    }

    /// An integer value.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.node(key) {
            None => Ok(None),
            Some(Node {
                value: NodeValue::Int(i),
                ..
            }) => Ok(Some(*i)),
            Some(n) => Err(self.wrong_type(key, "an integer", n)),
        }
    }

    /// A boolean value, or `default`.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.node(key) {
            None => Ok(default),
            Some(Node {
                value: NodeValue::Bool(b),
                ..
            }) => Ok(*b),
            Some(n) => Err(self.wrong_type(key, "true or false", n)),
        }
    }

    /// A duration (`"1s"`, `"250ms"`, or an integer of seconds), or `default`.
    pub fn duration_or(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.node(key) {
            None => Ok(default),
            Some(n) => node_duration(n).map_err(|m| self.error(key, m)),
        }
    }

    /// A size in bytes (`"64KiB"`, `"1MiB"`, or an integer), or `default`.
    pub fn size_or(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        match self.node(key) {
            None => Ok(default),
            Some(n) => node_size(n).map_err(|m| self.error(key, m)),
        }
    }

    /// One of `choices`, or `default`.
    pub fn choice_or(
        &self,
        key: &str,
        choices: &[&str],
        default: &'a str,
    ) -> Result<&'a str, ConfigError> {
        let v = self.str_or(key, default)?;
        if choices.contains(&v) {
            Ok(v)
        } else {
            let quoted: Vec<String> = choices.iter().map(|s| format!("{s:?}")).collect();
            Err(self.error(
                key,
                format!("expected one of {}, found {v:?}", quoted.join(", ")),
            ))
        }
    }

    /// A path, resolved against the configuration file's directory.
    pub fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.str(key)?.map(|s| self.resolve(s)))
    }

    /// Resolves a path written in the configuration.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A list of strings (a single string counts as a list of one).
    pub fn str_list(&self, key: &str) -> Result<Option<Vec<&'a str>>, ConfigError> {
        match self.node(key) {
            None => Ok(None),
            Some(Node {
                value: NodeValue::Str(s),
                ..
            }) => Ok(Some(vec![s.as_str()])),
            Some(Node {
                value: NodeValue::Array(items),
                ..
            }) => items
                .iter()
                .map(|n| match &n.value {
                    NodeValue::Str(s) => Ok(s.as_str()),
                    other => Err(self.error_at(
                        &n.span,
                        Some(key),
                        format!(
                            "expected a list of strings, found a {} in it",
                            other.type_name()
                        ),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(n) => Err(self.wrong_type(key, "a list of strings", n)),
        }
    }

    /// A list of paths, resolved against the configuration file's directory.
    pub fn path_list(&self, key: &str) -> Result<Option<Vec<PathBuf>>, ConfigError> {
        Ok(self
            .str_list(key)?
            .map(|l| l.into_iter().map(|s| self.resolve(s)).collect()))
    }

    /// Checks every key against the parameters cog type `cog` declares: unknown keys,
    /// missing required keys and values of the wrong type are errors. The configuration
    /// runs it on every cog of a train; a cog that declares cogs inside it
    /// ([`CogParams::nested_cogs`]) runs it on those.
    pub fn validate(&self, cog: &str, params: &[Param]) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (k, n) in self.entries {
            let key = k.get_ref().as_str();
            // Keys every cog takes; `parse_trains` checks them.
            if key == "type" || key == "name" {
                continue;
            }
            let Some(p) = params.iter().find(|p| p.name == key) else {
                let known: Vec<&str> = params.iter().map(|p| p.name).collect();
                let hint = if known.is_empty() {
                    "this cog takes no keys".to_string()
                } else {
                    format!("known keys: {}", known.join(", "))
                };
                errors.push(self.error_at(
                    &k.span(),
                    Some(key),
                    format!("unknown key for cog {cog:?} ({hint})"),
                ));
                continue;
            };
            errors.extend(self.check_type(p, n).err());
        }
        for p in params.iter().filter(|p| p.required) {
            if self.node(p.name).is_none() {
                errors.push(self.cog_error(format!(
                    "missing required key {:?} ({}: {})",
                    p.name,
                    p.ty,
                    p.help_line()
                )));
            }
        }
        errors
    }

    fn check_type(&self, p: &Param, n: &Node) -> Result<(), ConfigError> {
        let ok = match (p.ty, &n.value) {
            (ParamType::Str | ParamType::Path, NodeValue::Str(_)) => true,
            (ParamType::Int, NodeValue::Int(_)) => true,
            (ParamType::Float, NodeValue::Float(_) | NodeValue::Int(_)) => true,
            (ParamType::Bool, NodeValue::Bool(_)) => true,
            (ParamType::Duration, _) => {
                return node_duration(n)
                    .map(|_| ())
                    .map_err(|m| self.error(p.name, m));
            }
            (ParamType::Size, _) => {
                return node_size(n).map(|_| ()).map_err(|m| self.error(p.name, m));
            }
            (ParamType::StrList | ParamType::PathList, NodeValue::Str(_)) => true,
            (ParamType::StrList | ParamType::PathList, NodeValue::Array(_)) => {
                return self.str_list(p.name).map(|_| ());
            }
            (ParamType::Table, NodeValue::Table(_)) => true,
            (ParamType::Cogs, NodeValue::Array(items)) => {
                return match items
                    .iter()
                    .find(|n| !matches!(n.value, NodeValue::Table(_)))
                {
                    None => Ok(()),
                    Some(n) => Err(self.error_at(
                        &n.span,
                        Some(p.name),
                        format!(
                            "expected cog tables ([[train.cog.{}]]), found a {} in the list",
                            p.name,
                            n.value.type_name()
                        ),
                    )),
                };
            }
            (ParamType::Choice(c), NodeValue::Str(_)) => {
                return self.choice_or(p.name, c, "").map(|_| ());
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            let want = match p.ty {
                ParamType::Choice(_) => format!("one of {}", p.ty),
                ParamType::Cogs => format!("cog tables ([[train.cog.{}]])", p.name),
                ty => format!("a {ty}"),
            };
            Err(self.wrong_type(p.name, &want, n))
        }
    }
}

fn node_duration(n: &Node) -> Result<Duration, String> {
    match &n.value {
        NodeValue::Int(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
        NodeValue::Str(s) => parse_duration(s).ok_or_else(|| {
            format!("expected a duration such as \"500ms\", \"1s\", \"5m\", \"1h\", found {s:?}")
        }),
        v => Err(format!(
            "expected a duration such as \"1s\", found {}",
            v.type_name()
        )),
    }
}

fn node_size(n: &Node) -> Result<usize, String> {
    match &n.value {
        NodeValue::Int(i) if *i >= 0 => Ok(*i as usize),
        NodeValue::Str(s) => parse_size(s)
            .ok_or_else(|| format!("expected a size such as \"64KiB\", \"1MiB\", found {s:?}")),
        v => Err(format!(
            "expected a size such as \"1MiB\", found {}",
            v.type_name()
        )),
    }
}

/// Parses `"250ms"`, `"1s"`, `"1.5s"`, `"5m"`, `"2h"`, `"1d"`, `"100us"`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let x: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ns" => x / 1e9,
        "us" | "µs" => x / 1e6,
        "ms" => x / 1e3,
        "s" | "sec" => x,
        "m" | "min" => x * 60.0,
        "h" => x * 3600.0,
        "d" => x * 86400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// Parses `"512"`, `"64KiB"`, `"1MiB"`, `"2GiB"`, `"10kB"`, `"5MB"` into bytes.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}
