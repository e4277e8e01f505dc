//! `csv_parse`: one CSV record becomes named fields.

use crate::engine::getset::Getter;
use crate::kit::on_error::{OnError, OnErrorSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::Cog;
use crate::record::{Key, Map, Merge, Record};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::common::{InputSettings, ParseCog, ParseError, Parser, record_parts, text, text_owned};

/// Parses a field as one CSV record (RFC 4180) into string fields named by `columns`.
///
/// Fields are split on `delimiter` (one ASCII character). A field in double quotes may hold
/// delimiters, newlines and `""` (one quote); a quote inside an unquoted field is kept as
/// is. An empty field is the empty string. One `\r` ending the record (CRLF files) is
/// dropped. Failures go to `on_error` with the byte offset: more fields than columns
/// ("too many fields: expected 3 columns"), fewer ("too few fields: expected 3 columns,
/// found 2"), an unterminated quote, text after a closing quote. Invalid UTF-8 is kept as
/// bytes (rendered with U+FFFD).
///
/// ```toml
/// [[train.cog]]
/// type = "csv_parse"
/// columns = ["time", "user", "action"]   # required
/// delimiter = ","                        # default; "\t" for TSV
/// field = "message"
/// # target = "csv"
/// on_error = "keep"
/// ```
///
/// From Rust, on any datum, with the getter of the text, a [`Merge`] storing the fields
/// and an [`OnError`]:
/// `CsvParse::from_settings(&CsvParseSettings { columns: vec!["a".into()], ..Default::default() }, input, output, on_error)`.
pub type CsvParse<D> = ParseCog<D, CsvParser>;

/// The parser of `csv_parse`, with its columns.
#[derive(Debug, Clone)]
pub struct CsvParser {
    columns: Vec<Key>,
    delimiter: u8,
}

impl CsvParser {
    /// A parser naming fields `columns` (at least one), splitting on `delimiter`, which
    /// must not be `"`, `\r` or `\n`.
    pub fn new(columns: &[&str], delimiter: u8) -> Option<CsvParser> {
        if columns.is_empty() || matches!(delimiter, b'"' | b'\r' | b'\n') {
            return None;
        }
        Some(CsvParser {
            columns: columns.iter().map(|c| Key::new(c)).collect(),
            delimiter,
        })
    }

    /// The parser `s` describes (`columns`, `delimiter`).
    pub fn from_settings(s: &CsvParseSettings) -> Result<CsvParser, SettingError> {
        if s.columns.is_empty() {
            return Err(SettingError::new("columns", "give at least one column"));
        }
        if let Some(c) = s.columns.iter().find(|c| c.is_empty()) {
            return Err(SettingError::new(
                "columns",
                format!("column names must not be empty: {c:?}"),
            ));
        }
        let delimiter = match s.delimiter.as_bytes() {
            &[b] if b.is_ascii() => b,
            _ => {
                return Err(SettingError::new(
                    "delimiter",
                    "must be exactly one ASCII character",
                ));
            }
        };
        let columns: Vec<&str> = s.columns.iter().map(String::as_str).collect();
        CsvParser::new(&columns, delimiter)
            .ok_or_else(|| SettingError::new("delimiter", "must not be a quote, \\r or \\n"))
    }

    /// Parses `input` into `out`.
    pub fn parse(&self, input: &[u8], out: &mut Map) -> Result<(), ParseError> {
        let input = input.strip_suffix(b"\r").unwrap_or(input);
        let d = self.delimiter;
        let mut pos = 0;
        let mut n = 0;
        loop {
            let Some(&key) = self.columns.get(n) else {
                return Err(ParseError::owned(
                    pos,
                    format!("too many fields: expected {} columns", self.columns.len()),
                ));
            };
            let end;
            if input.get(pos) == Some(&b'"') {
                let (value, after) = unquote(input, pos + 1)
                    .ok_or_else(|| ParseError::at(pos, "unterminated quote"))?;
                match input.get(after) {
                    None => end = after,
                    Some(&c) if c == d => end = after,
                    Some(_) => return Err(ParseError::at(after, "text after closing quote")),
                }
                out.insert(key, text_owned(value));
            } else {
                end = input[pos..]
                    .iter()
                    .position(|&c| c == d)
                    .map_or(input.len(), |i| pos + i);
                out.insert(key, text(&input[pos..end]));
            }
            n += 1;
            if end >= input.len() {
                break;
            }
            pos = end + 1;
        }
        if n < self.columns.len() {
            return Err(ParseError::owned(
                input.len(),
                format!(
                    "too few fields: expected {} columns, found {n}",
                    self.columns.len()
                ),
            ));
        }
        Ok(())
    }
}

/// Decodes a quoted field starting just after its opening quote; returns it and the
/// position after the closing quote, or `None` if the quote is never closed.
fn unquote(input: &[u8], from: usize) -> Option<(Vec<u8>, usize)> {
    let rest = input.get(from..)?;
    let mut v = Vec::new();
    let mut i = 0;
    loop {
        // Copy runs between quotes whole rather than byte by byte.
        let q = rest.get(i..)?.iter().position(|&c| c == b'"')? + i;
        v.extend_from_slice(&rest[i..q]);
        if rest.get(q + 1) == Some(&b'"') {
            v.push(b'"');
            i = q + 2;
        } else {
            return Some((v, from + q + 1));
        }
    }
}

impl Parser for CsvParser {
    fn parse(&mut self, input: &[u8], out: &mut Map) -> Result<(), ParseError> {
        CsvParser::parse(self, input, out)
    }
}

/// Parses `input` as a record of `columns` separated by `delimiter`: a convenience for
/// fuzzing and programs (build a [`CsvParser`] once when parsing many).
pub fn parse(
    input: &[u8],
    columns: &[&str],
    delimiter: u8,
    out: &mut Map,
) -> Result<(), ParseError> {
    match CsvParser::new(columns, delimiter) {
        Some(p) => p.parse(input, out),
        None => Err(ParseError::at(0, "no columns or bad delimiter")),
    }
}

impl<D: 'static> CsvParse<D> {
    /// A `csv_parse` cog running `parser` on what `input` reads, merging with `output`.
    pub fn new(
        parser: CsvParser,
        input: Getter<D, [u8]>,
        output: Merge<D>,
        on_error: OnError<D>,
    ) -> Self {
        ParseCog::with_parser("csv_parse", parser, input, output, on_error)
    }

    /// A `csv_parse` made from its settings: `input` reads the text (what `field` names),
    /// `output` stores the fields (what `target` says), failures go to `on_error`.
    pub fn from_settings(
        s: &CsvParseSettings,
        input: Getter<D, [u8]>,
        output: Merge<D>,
        on_error: OnError<D>,
    ) -> Result<Self, SettingError> {
        Ok(CsvParse::new(
            CsvParser::from_settings(s)?,
            input,
            output,
            on_error,
        ))
    }
}

/// The descriptor of `csv_parse`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "csv_parse",
    kind: CogKind::Transform,
    summary: "parses a CSV record (RFC 4180 quoting) into fields named by columns",
    params: CsvParseSettings::PARAMS,
    fields: &[("<columns>", "one string per column")],
    build,
};

crate::settings! {
    /// Settings of `csv_parse`.
    pub struct CsvParseSettings {
        /// names of the fields, in order
        #[setting(required)]
        columns: Vec<String>,
        /// one ASCII character between fields (not a quote or newline)
        delimiter: String = ",",
        /// Where the text is read and the fields go.
        #[setting(flatten)]
        input: InputSettings,
        /// What to do with a line that does not parse.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: CsvParseSettings = p.settings()?;
    let parser = CsvParser::from_settings(&s).map_err(|e| p.setting_error(e))?;
    let (input, output, on_error) = record_parts(&s.input, &s.on_error, p, cx)?;
    Ok(Box::new(CsvParse::new(parser, input, output, on_error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(cols: &[&str], d: u8, input: &[u8]) -> Result<String, ParseError> {
        let mut m = Map::new();
        parse(input, cols, d, &mut m)?;
        let mut out = Vec::new();
        m.write_json(&mut out);
        Ok(String::from_utf8(out).unwrap())
    }

    const ABC: &[&str] = &["a", "b", "c"];

    #[test]
    fn plain_and_quoted() {
        assert_eq!(
            csv(ABC, b',', b"1,two,3").unwrap(),
            r#"{"a":"1","b":"two","c":"3"}"#
        );
        assert_eq!(
            csv(ABC, b',', b"\"x, y\",\"say \"\"hi\"\"\",\"multi\nline\"").unwrap(),
            r#"{"a":"x, y","b":"say \"hi\"","c":"multi\nline"}"#
        );
        assert_eq!(csv(ABC, b',', b",,").unwrap(), r#"{"a":"","b":"","c":""}"#);
        assert_eq!(
            csv(ABC, b',', b"\"\",a\"b,\r").unwrap(),
            r#"{"a":"","b":"a\"b","c":""}"#
        );
        assert_eq!(
            csv(ABC, b'\t', b"2024-01-01\tGET /x,y\t200").unwrap(),
            r#"{"a":"2024-01-01","b":"GET /x,y","c":"200"}"#
        );
        assert_eq!(csv(&["only"], b',', b"").unwrap(), r#"{"only":""}"#);
    }

    #[test]
    fn apache_like_export() {
        assert_eq!(
            csv(
                &["ip", "ts", "req", "status"],
                b',',
                b"10.0.0.1,2024-01-02T03:04:05Z,\"GET /a?x=1,2 HTTP/1.1\",200"
            )
            .unwrap(),
            r#"{"ip":"10.0.0.1","ts":"2024-01-02T03:04:05Z","req":"GET /a?x=1,2 HTTP/1.1","status":"200"}"#
        );
    }

    #[test]
    fn field_count_errors() {
        let e = csv(ABC, b',', b"1,2,3,4").unwrap_err();
        assert_eq!(
            e.to_string(),
            "at byte 6: too many fields: expected 3 columns"
        );
        let e = csv(ABC, b',', b"1,2").unwrap_err();
        assert_eq!(
            e.to_string(),
            "at byte 3: too few fields: expected 3 columns, found 2"
        );
        assert!(
            csv(ABC, b',', b"")
                .unwrap_err()
                .to_string()
                .contains("found 1")
        );
    }

    #[test]
    fn malformed_quotes() {
        let e = csv(ABC, b',', b"1,\"open,3").unwrap_err();
        assert_eq!(e.to_string(), "at byte 2: unterminated quote");
        let e = csv(ABC, b',', b"1,\"x\"y,3").unwrap_err();
        assert_eq!(e.to_string(), "at byte 5: text after closing quote");
        assert!(csv(ABC, b',', b"\"").is_err());
        assert!(csv(ABC, b',', b"\"\"\"").is_err());
    }

    #[test]
    fn invalid_utf8_kept_as_bytes() {
        assert_eq!(
            csv(ABC, b',', b"\xff,\"\xfe\",ok").unwrap(),
            "{\"a\":\"\u{fffd}\",\"b\":\"\u{fffd}\",\"c\":\"ok\"}"
        );
    }

    #[test]
    fn bad_setup() {
        assert!(CsvParser::new(&[], b',').is_none());
        assert!(CsvParser::new(&["a"], b'"').is_none());
    }
}
