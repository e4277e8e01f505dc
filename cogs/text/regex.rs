//! `regex`: parses a text field with a regular expression's named groups, or with a preset.

use crate::cogs::parse::common::{self, ParseCog, ParseError};
use crate::engine::getset::Getter;
use crate::kit::on_error::{self, OnError, OnErrorSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::timefmt::TimeFormat;
use crate::record::{self, Key, Map, Merge, Path, Record, Value};
use crate::schema::settings::de::{Deserializer, MapAccess, Visitor};
use crate::schema::{
    CogParams, ConfigError, NodeValue, ParamType, SettingError, SettingValue, Settings,
};

use super::presets::{PRESET_NAMES, Preset, PresetName, parse_int, text_value};

/// Parses a text field into named fields, with a regular expression or a preset.
///
/// With `pattern`, every named group `(?P<name>...)` (or `(?<name>...)`) that took part in
/// the match becomes a field, as a string unless `types` says otherwise; a group that did
/// not take part is not set. The pattern is searched for anywhere in the text: anchor it
/// with `^...$` to match whole lines. With `preset`, a hand-written parser yields a fixed
/// set of fields (see `docs/presets.md`); `apache_combined` gives `client, ident, user,
/// time, method, path, protocol, status, bytes, referer, agent`.
///
/// Fields go to the top level of the record, or into the map at `target`. A line that
/// does not match, a capture that does not convert, and a record without the input field
/// are failures, handled per `on_error` with a reason such as `no match` or
/// `field bytes: not an int: "x"`.
///
/// Types: `string` (UTF-8 text; otherwise bytes), `int`, `float`, `bool` (`true`/`false`,
/// `yes`/`no`, `on`/`off`, `1`/`0`), `ip`, and `timestamp:FORMAT` with a strptime-style
/// format (see [`crate::record::timefmt`]).
///
/// Built without the `regex` cargo feature, the cog keeps its presets but refuses `pattern`.
///
/// ```toml
/// [[train.cog]]
/// type = "regex"
/// field = "message"
/// pattern = '^(?P<client>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+)[^"]*" (?P<status>\d+) (?P<bytes>\d+|-)'
/// types = { status = "int", bytes = "int", time = "timestamp:%d/%b/%Y:%H:%M:%S %z" }
/// target = "http"
/// on_error = "train:dead"
///
/// [[train.cog]]
/// type = "regex"
/// preset = "apache_combined"
/// ```
///
/// From Rust, on any datum: give the getter of the text, a [`Merge`] that stores the
/// fields, an [`OnError`] and a [`Parser`]; or the typed settings with the same three:
/// `Regex::from_settings(&RegexSettings { preset: Some(PresetName::ApacheCombined), ..Default::default() }, input, output, on_error)`.
pub type Regex<D> = ParseCog<D, Parser>;

/// The descriptor of `regex`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "regex",
    kind: CogKind::Transform,
    summary: "parses a text field with a regular expression's named groups or a preset (apache_combined, apache_common, nginx_combined, sshd)",
    params: RegexSettings::PARAMS,
    fields: &[
        (
            "(groups)",
            "with `pattern`: each named group that matched, typed per `types`",
        ),
        (
            "client, ident, user",
            "apache/nginx presets: remote host, identd name, authenticated user, as logged (`-` when absent)",
        ),
        (
            "time",
            "apache/nginx presets: the request time as a timestamp; sshd: the syslog time as written (it has no year)",
        ),
        (
            "method, path, protocol",
            "apache/nginx presets: the request line; all null when it is not `METHOD PATH [PROTOCOL]`, the text then being in `request`",
        ),
        (
            "status, bytes",
            "apache/nginx presets: integers; `bytes` is null for `-`",
        ),
        (
            "referer, agent",
            "apache_combined, nginx_combined: the quoted headers, `\\\"` and `\\\\` unescaped",
        ),
        (
            "host, pid, message",
            "sshd: the syslog host, sshd's pid (int) and its message",
        ),
        (
            "user, client, port",
            "sshd: when the message names them (port as an int)",
        ),
        (
            "facility, severity, module",
            "sshd: the names of a `<PRI>` in front, as syslog_parse gives them; MODULE of `sshd(MODULE)[pid]`",
        ),
    ],
    build,
};

crate::settings! {
    /// Settings of `regex`.
    pub struct RegexSettings {
        /// the field holding the text to parse
        field: String = "message",
        /// regular expression (Rust `regex` syntax) whose named groups become fields; give this or `preset`
        pattern: Option<String>,
        /// a built-in format instead of `pattern` (docs/presets.md)
        preset: Option<PresetName>,
        /// with `pattern`: group = "int" | "float" | "bool" | "ip" | "string" | "timestamp:FORMAT" (strptime-style, e.g. "timestamp:%d/%b/%Y:%H:%M:%S %z"); others stay strings
        types: Option<GroupTypes>,
        /// dotted path of a map to put the fields in; default: the top level of the record
        target: Option<String>,
        /// What to do with a line that does not match.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

/// The `types` of `regex`: each group with its type name, in the order written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupTypes(pub Vec<(String, String)>);

impl SettingValue for GroupTypes {
    const TYPE: ParamType = ParamType::Table;

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GroupTypes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table such as { status = \"int\" }")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GroupTypes, A::Error> {
                let mut out = Vec::new();
                while let Some(group) = map.next_key::<String>()? {
                    out.push((group, map.next_value::<String>()?));
                }
                Ok(GroupTypes(out))
            }
        }
        d.deserialize_any(V)
    }

    fn from_default(_: &str) -> Option<Self> {
        None
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    // `types` is checked on the configuration first: its errors name the group.
    types_param(p)?;
    let s: RegexSettings = p.settings()?;
    let input = Path::parse(&s.field).map_err(|e| p.error("field", e.to_string()))?;
    let target = match &s.target {
        Some(t) => Some(Path::parse(t).map_err(|e| p.error("target", e.to_string()))?),
        None => None,
    };
    let parser = Parser::from_settings(&s).map_err(|e| {
        if e.key.is_empty() {
            p.cog_error(e.msg)
        } else {
            p.setting_error(e)
        }
    })?;
    let on_error = on_error::from_settings(&s.on_error, p, cx)?;
    Ok(Box::new(
        Regex::new(
            record::bytes_at(input),
            record::merge_into(target),
            on_error,
            parser,
        )
        .with_input_name(&s.field),
    ))
}

/// The `types` table as (group, type) pairs.
fn types_param(p: &CogParams<'_>) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(node) = p.node("types") else {
        return Ok(Vec::new());
    };
    let NodeValue::Table(entries) = &node.value else {
        return Err(p.error("types", "expected a table such as { status = \"int\" }"));
    };
    entries
        .iter()
        .map(|(k, v)| match &v.value {
            NodeValue::Str(t) => Ok((k.get_ref().clone(), t.clone())),
            other => Err(p.error(
                "types",
                format!(
                    "group {:?}: expected a type name as a string, found {}",
                    k.get_ref(),
                    other.type_name()
                ),
            )),
        })
        .collect()
}

impl<D: 'static> Regex<D> {
    /// Parses the text `input` reads with `parser`, stores the fields with `output`, and
    /// hands failures to `on_error`.
    pub fn new(
        input: Getter<D, [u8]>,
        output: Merge<D>,
        on_error: OnError<D>,
        parser: Parser,
    ) -> Self {
        ParseCog::with_parser("regex", parser, input, output, on_error).with_input_name("message")
    }

    /// A `regex` made from its settings: `input` reads the text (what `field` names, which
    /// failure reasons name too), `output` stores the fields (what `target` says), failures
    /// go to `on_error`.
    pub fn from_settings(
        s: &RegexSettings,
        input: Getter<D, [u8]>,
        output: Merge<D>,
        on_error: OnError<D>,
    ) -> Result<Self, SettingError> {
        let parser = Parser::from_settings(s)?;
        Ok(Regex::new(input, output, on_error, parser).with_input_name(&s.field))
    }

    /// Names the input in failure reasons (`field NAME: missing or not text`).
    pub fn with_input_name(self, name: &str) -> Self {
        self.with_missing_reason(ParseError::Missing(name.to_string()))
    }
}

/// How the text is taken apart.
#[derive(Debug)]
pub enum Parser {
    /// A regular expression's named groups.
    #[cfg(feature = "regex")]
    Pattern(Box<Pattern>),
    /// A hand-written parser.
    Preset(Preset),
}

/// Why [`Parser::pattern`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// The pattern does not compile or has no named group.
    Pattern(String),
    /// A type is unknown or names no group.
    Types(String),
}

impl Parser {
    /// The parser `s` describes: its `pattern` with `types`, or its `preset`. An error
    /// about the settings as a whole (neither or both given) has an empty key.
    pub fn from_settings(s: &RegexSettings) -> Result<Parser, SettingError> {
        match (&s.pattern, s.preset) {
            (Some(_), Some(_)) => Err(SettingError::new(
                "",
                "give either `pattern` or `preset`, not both",
            )),
            (None, None) => Err(SettingError::new(
                "",
                format!(
                    "give a `pattern` with named groups or a `preset` ({})",
                    PRESET_NAMES.join(", ")
                ),
            )),
            (Some(pattern), None) => {
                let types: Vec<(&str, &str)> = s
                    .types
                    .iter()
                    .flat_map(|t| &t.0)
                    .map(|(g, t)| (g.as_str(), t.as_str()))
                    .collect();
                Parser::pattern(pattern, &types).map_err(|e| match e {
                    PatternError::Pattern(m) => SettingError::new("pattern", m),
                    PatternError::Types(m) => SettingError::new("types", m),
                })
            }
            (None, Some(name)) => {
                if s.types.is_some() {
                    return Err(SettingError::new(
                        "types",
                        "`types` applies to `pattern`; a preset's fields have fixed types",
                    ));
                }
                Parser::preset(name.as_str()).map_err(|m| SettingError::new("preset", m))
            }
        }
    }

    /// The preset called `name` (`apache_combined`, `apache_common`, `nginx_combined`, `sshd`).
    pub fn preset(name: &str) -> Result<Parser, String> {
        Preset::named(name)
            .map(Parser::Preset)
            .ok_or_else(|| format!("no preset {name:?} (presets: {})", PRESET_NAMES.join(", ")))
    }

    /// A regular expression whose named groups become fields, converted per `types`
    /// (`(group, type)` pairs; see [`Conv::parse`]).
    pub fn pattern(pattern: &str, types: &[(&str, &str)]) -> Result<Parser, PatternError> {
        #[cfg(feature = "regex")]
        {
            Pattern::new(pattern, types).map(|p| Parser::Pattern(Box::new(p)))
        }
        #[cfg(not(feature = "regex"))]
        {
            let _ = (pattern, types);
            Err(PatternError::Pattern(
                "this build has no regular expressions (cargo feature `regex`); use a preset"
                    .into(),
            ))
        }
    }

    /// Parses `text` into `out`; on failure `out` may hold some fields.
    #[inline]
    pub fn parse(&mut self, text: &[u8], out: &mut Map) -> Result<(), ParseError> {
        match self {
            #[cfg(feature = "regex")]
            Parser::Pattern(p) => p.parse(text, out),
            Parser::Preset(p) => p.parse(text, out),
        }
    }
}

impl common::Parser for Parser {
    #[inline]
    fn parse(&mut self, text: &[u8], out: &mut Map) -> Result<(), ParseError> {
        Parser::parse(self, text, out)
    }
}

/// A compiled pattern with its reused capture slots.
#[cfg(feature = "regex")]
#[derive(Debug)]
pub struct Pattern {
    re: regex::bytes::Regex,
    locs: regex::bytes::CaptureLocations,
    groups: Vec<(usize, Key, Conv)>,
    /// The one-pass form of an anchored pattern that has one (see
    /// [`super::simple_pattern`]), with its capture slots; the regex engine otherwise.
    simple: Option<(super::simple_pattern::SimplePattern, Vec<usize>)>,
}

#[cfg(feature = "regex")]
impl Pattern {
    fn new(pattern: &str, types: &[(&str, &str)]) -> Result<Pattern, PatternError> {
        let re =
            regex::bytes::Regex::new(pattern).map_err(|e| PatternError::Pattern(e.to_string()))?;
        let names: Vec<(usize, &str)> = re
            .capture_names()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (i, n)))
            .collect();
        if names.is_empty() {
            return Err(PatternError::Pattern(
                "the pattern has no named group such as (?P<status>\\d+): it would set no field"
                    .into(),
            ));
        }
        for (group, _) in types {
            if !names.iter().any(|(_, n)| n == group) {
                let known: Vec<&str> = names.iter().map(|(_, n)| *n).collect();
                return Err(PatternError::Types(format!(
                    "no group named {group:?} in the pattern (groups: {})",
                    known.join(", ")
                )));
            }
        }
        let mut groups = Vec::with_capacity(names.len());
        for (i, name) in names {
            let conv = match types.iter().rev().find(|(g, _)| *g == name) {
                Some((_, t)) => Conv::parse(t)
                    .map_err(|m| PatternError::Types(format!("group {name:?}: {m}")))?,
                None => Conv::Str,
            };
            groups.push((i, Key::new(name), conv));
        }
        let locs = re.capture_locations();
        let simple = super::simple_pattern::SimplePattern::new(pattern).map(|sp| {
            let slots = vec![0; sp.slots()];
            (sp, slots)
        });
        Ok(Pattern {
            re,
            locs,
            groups,
            simple,
        })
    }

    #[inline]
    fn parse(&mut self, text: &[u8], out: &mut Map) -> Result<(), ParseError> {
        if let Some((sp, slots)) = &mut self.simple {
            // Every group of a one-pass pattern takes part in its match.
            if !sp.captures(text, slots) {
                return Err(ParseError::NoMatch(""));
            }
            for (i, key, conv) in &self.groups {
                out.insert(
                    *key,
                    conv.apply(*key, &text[slots[2 * i]..slots[2 * i + 1]])?,
                );
            }
            return Ok(());
        }
        if self.re.captures_read(&mut self.locs, text).is_none() {
            return Err(ParseError::NoMatch(""));
        }
        for (i, key, conv) in &self.groups {
            if let Some((s, e)) = self.locs.get(*i) {
                out.insert(*key, conv.apply(*key, &text[s..e])?);
            }
        }
        Ok(())
    }
}

/// What a capture is converted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conv {
    /// Text (bytes when not UTF-8).
    Str,
    /// A decimal integer.
    Int,
    /// A finite decimal number.
    Float,
    /// `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`, any case.
    Bool,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A timestamp in a strptime-style format.
    Time(TimeFormat),
}

impl Conv {
    /// `"string"`, `"int"`, `"float"`, `"bool"`, `"ip"` or `"timestamp:FORMAT"`.
    pub fn parse(spec: &str) -> Result<Conv, String> {
        Ok(match spec {
            "string" => Conv::Str,
            "int" => Conv::Int,
            "float" => Conv::Float,
            "bool" => Conv::Bool,
            "ip" => Conv::Ip,
            "timestamp" => {
                return Err("give the format: \"timestamp:%d/%b/%Y:%H:%M:%S %z\", say".into());
            }
            other => match other.strip_prefix("timestamp:") {
                Some(fmt) => Conv::Time(TimeFormat::new(fmt)?),
                None => {
                    return Err(format!(
                        "unknown type {other:?} (types: string, int, float, bool, ip, timestamp:FORMAT)"
                    ));
                }
            },
        })
    }

    /// Converts the text captured for `key`.
    #[inline]
    pub fn apply(&self, key: Key, b: &[u8]) -> Result<Value, ParseError> {
        match self {
            Conv::Str => Ok(text_value(b)),
            Conv::Int => parse_int(b)
                .map(Value::Int)
                .ok_or_else(|| ParseError::convert(key, "an int", b)),
            Conv::Float => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|f| f.is_finite())
                .map(Value::Float)
                .ok_or_else(|| ParseError::convert(key, "a float", b)),
            Conv::Bool => {
                let any = |words: [&[u8]; 4]| words.iter().any(|w| w.eq_ignore_ascii_case(b));
                if any([b"true", b"yes", b"on", b"1"]) {
                    Ok(Value::Bool(true))
                } else if any([b"false", b"no", b"off", b"0"]) {
                    Ok(Value::Bool(false))
                } else {
                    Err(ParseError::convert(key, "a bool", b))
                }
            }
            Conv::Ip => record::parse_ip(b)
                .map(Value::Ip)
                .ok_or_else(|| ParseError::convert(key, "an IP address", b)),
            Conv::Time(f) => f
                .parse(b)
                .map(Value::Time)
                .map_err(|_| ParseError::convert(key, "a timestamp", b)),
        }
    }
}
