//! `json_parse`: a field holding a JSON object becomes fields.

use crate::engine::getset::Getter;
use crate::kit::on_error::{OnError, OnErrorSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::Cog;
use crate::record::{Map, Merge, Record, Value};
use crate::schema::{CogParams, ConfigError, Settings};

use super::common::{InputSettings, ParseCog, ParseError, Parser, record_parts};

/// Parses a field as one JSON object (RFC 8259) and merges its keys as fields, at the top
/// level or under `target`. Nested objects become maps, arrays lists, integers that fit
/// 64 bits integers, larger integers exact big integers (kept as their digits: they render
/// back unchanged, and read as floats in comparisons), other numbers floats.
///
/// Only objects are accepted: an array, a string, a number, `true`/`false`/`null` at the
/// top fail ("expected a JSON object, found ...") as invalid JSON does ("at byte N: ..."),
/// and go to `on_error`. The field parsed stays as it is unless the object has a key of
/// the same name. Duplicate keys: the last value wins. A string holding JSON (wrapped
/// JSON) stays a string: it is decoded once and re-encoded as the same JSON string.
///
/// ```toml
/// [[train.cog]]
/// type = "json_parse"
/// field = "message"        # default
/// # target = "json"        # default: top level
/// on_error = "keep"        # drop | keep | train:NAME
/// ```
///
/// From Rust, on any datum, with the getter of the text, a [`Merge`] storing the fields
/// and an [`OnError`]:
/// `JsonParse::from_settings(&JsonParseSettings { ..Default::default() }, input, output, on_error)`.
pub type JsonParse<D> = ParseCog<D, JsonParser>;

/// The parser of `json_parse`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonParser;

impl Parser for JsonParser {
    fn parse(&mut self, input: &[u8], out: &mut Map) -> Result<(), ParseError> {
        parse(input, out)
    }
}

/// Parses a JSON object from `input` into `out` (its entries in order).
pub fn parse(input: &[u8], out: &mut Map) -> Result<(), ParseError> {
    match Value::parse_json(input) {
        Ok(Value::Map(m)) => {
            if out.is_empty() {
                *out = m;
            } else {
                for (k, v) in m {
                    out.insert(k, v);
                }
            }
            Ok(())
        }
        Ok(other) => Err(ParseError::owned(
            input
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(0),
            format!("expected a JSON object, found {}", json_type(&other)),
        )),
        Err(e) => Err(ParseError::at(e.offset, e.msg)),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::BigInt(_) | Value::Float(_) => "a number",
        Value::List(_) => "an array",
        _ => "a string",
    }
}

impl<D: 'static> JsonParse<D> {
    /// A `json_parse` made from its settings: `input` reads the text (what `field` names),
    /// `output` stores the fields (what `target` says), failures go to `on_error` (what
    /// `on_error` says); the format itself has no settings.
    pub fn from_settings(
        _: &JsonParseSettings,
        input: Getter<D, [u8]>,
        output: Merge<D>,
        on_error: OnError<D>,
    ) -> Self {
        JsonParse::new(input, output, on_error)
    }

    /// A `json_parse` cog reading `input`, merging with `output`.
    pub fn new(input: Getter<D, [u8]>, output: Merge<D>, on_error: OnError<D>) -> Self {
        ParseCog::with_parser("json_parse", JsonParser, input, output, on_error)
    }
}

/// The descriptor of `json_parse`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "json_parse",
    kind: CogKind::Transform,
    summary: "parses a field holding a JSON object into fields",
    params: JsonParseSettings::PARAMS,
    fields: &[("*", "every key of the object, with its JSON type")],
    build,
};

crate::settings! {
    /// Settings of `json_parse`.
    pub struct JsonParseSettings {
        /// Where the text is read and the fields go.
        #[setting(flatten)]
        input: InputSettings,
        /// What to do with a line that does not parse.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: JsonParseSettings = p.settings()?;
    let (input, output, on_error) = record_parts(&s.input, &s.on_error, p, cx)?;
    Ok(Box::new(JsonParse::from_settings(
        &s, input, output, on_error,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(input: &[u8]) -> Result<String, ParseError> {
        let mut m = Map::new();
        parse(input, &mut m)?;
        let mut out = Vec::new();
        m.write_json(&mut out);
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn objects_become_fields() {
        assert_eq!(
            json(br#" {"level":"info","n":3,"x":1.5,"ok":true,"tags":["a"],"u":{"id":7}} "#)
                .unwrap(),
            r#"{"level":"info","n":3,"x":1.5,"ok":true,"tags":["a"],"u":{"id":7}}"#
        );
        assert_eq!(json(b"{}").unwrap(), "{}");
    }

    #[test]
    fn wrapped_json_stays_a_string() {
        let input = br#"{"inner":"{\"a\":1,\"s\":\"q\\\"\"}"}"#;
        let mut m = Map::new();
        parse(input, &mut m).unwrap();
        let inner = m.get(crate::record::Key::new("inner")).unwrap();
        assert_eq!(inner.as_str(), Some(r#"{"a":1,"s":"q\""}"#));
        let mut out = Vec::new();
        m.write_json(&mut out);
        assert_eq!(out, input);
    }

    #[test]
    fn duplicates_last_wins() {
        assert_eq!(json(br#"{"a":1,"b":2,"a":3}"#).unwrap(), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn failures_carry_offsets() {
        let e = json(br#"{"a":1,"#).unwrap_err();
        assert_eq!(e.offset(), Some(7));
        assert!(json(b"").is_err());
        assert!(json(br#"{"a":"unterminated}"#).is_err());
        assert!(json(b"{\"a\":\"\xff\"}").is_err());
        assert!(json(br#"{"a":1} x"#).is_err());
        let e = json(b"  [1,2]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "at byte 2: expected a JSON object, found an array"
        );
        assert!(
            json(b"\"str\"")
                .unwrap_err()
                .to_string()
                .contains("a string")
        );
        assert!(json(b"42").is_err());
        assert!(json(b"null").is_err());
    }

    #[test]
    fn deep_nesting_fails_without_overflow() {
        let mut s = Vec::new();
        s.push(b'{');
        s.extend_from_slice(br#""a":"#);
        s.extend(std::iter::repeat_n(b'[', 100_000));
        assert!(json(&s).is_err());
    }
}
