//! `kv_parse`: `key=value key2="quoted value"` lines become fields.

use crate::engine::getset::Getter;
use crate::kit::on_error::{OnError, OnErrorSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::Cog;
use crate::record::{Map, Merge, Record};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::common::{
    InputSettings, ParseCog, ParseError, Parser, find, input_key, record_parts, text, text_owned,
};

/// Parses `key=value` pairs (logfmt, firewall and audit logs) into string fields.
///
/// Pairs are split on `separator` (runs of it count as one), keys from values on the first
/// `pair`; spaces and tabs around keys and unquoted values are trimmed. A value in double
/// quotes may hold separators and `pair`, with `\"` and `\\` escapes (any other backslash
/// is kept as written); an unquoted value runs to the next separator and may contain
/// `pair` (`url=/a?b=c`). Values are strings (no type guessing); an empty value is `""`.
/// Duplicate keys: the last value wins, at the first one's position.
///
/// Malformed pieces (no `pair`, an empty key, a key that is not UTF-8, an unterminated
/// quote or text glued after a closing quote) are skipped when `strict = false` (the
/// default: the well-formed pairs around them are kept) and fail the whole record with
/// their byte offset when `strict = true`. A record without any pair is not an error.
///
/// ```toml
/// [[train.cog]]
/// type = "kv_parse"
/// field = "message"     # default
/// separator = " "       # between pairs
/// pair = "="            # between key and value
/// strict = false        # true: malformed pairs send the record to on_error
/// # target = "kv"
/// on_error = "keep"
/// ```
///
/// From Rust, on any datum, with the getter of the text, a [`Merge`] storing the fields
/// and an [`OnError`]:
/// `KvParse::from_settings(&KvParseSettings { separator: ",".into(), ..Default::default() }, input, output, on_error)`.
pub type KvParse<D> = ParseCog<D, KvParser>;

/// The parser of `kv_parse`, with its delimiters.
#[derive(Debug, Clone)]
pub struct KvParser {
    separator: Vec<u8>,
    pair: Vec<u8>,
    strict: bool,
}

impl Default for KvParser {
    fn default() -> Self {
        KvParser {
            separator: b" ".to_vec(),
            pair: b"=".to_vec(),
            strict: false,
        }
    }
}

impl KvParser {
    /// A parser splitting pairs on `separator` and keys from values on `pair` (both
    /// non-empty); `strict` turns malformed pairs into errors.
    pub fn new(separator: &str, pair: &str, strict: bool) -> Option<KvParser> {
        if separator.is_empty() || pair.is_empty() || separator == pair {
            return None;
        }
        Some(KvParser {
            separator: separator.as_bytes().to_vec(),
            pair: pair.as_bytes().to_vec(),
            strict,
        })
    }

    /// The parser `s` describes (`separator`, `pair`, `strict`).
    pub fn from_settings(s: &KvParseSettings) -> Result<KvParser, SettingError> {
        KvParser::new(&s.separator, &s.pair, s.strict).ok_or_else(|| {
            SettingError::new(
                "separator",
                "separator and pair must be non-empty and different from each other",
            )
        })
    }

    /// Parses `input` into `out`; returns the number of malformed pieces skipped.
    pub fn parse(&self, input: &[u8], out: &mut Map) -> Result<usize, ParseError> {
        let sep = &self.separator[..];
        let mut skipped = 0;
        let mut pos = 0;
        while pos < input.len() {
            // Leading separators and blanks: empty pieces are not malformed.
            if input[pos..].starts_with(sep) {
                pos += sep.len();
                continue;
            }
            if matches!(input[pos], b' ' | b'\t') {
                pos += 1;
                continue;
            }
            let start = pos;
            let piece_end = find(input, pos, sep).unwrap_or(input.len());
            let eq = find(input, pos, &self.pair).filter(|&e| e < piece_end);
            let Some(eq) = eq else {
                self.malformed(start, "no key/value delimiter", &mut skipped)?;
                pos = piece_end;
                continue;
            };
            let key = trim(&input[start..eq]);
            let key = match std::str::from_utf8(key) {
                Ok("") => {
                    self.malformed(start, "empty key", &mut skipped)?;
                    None
                }
                Ok(k) => Some(k),
                Err(_) => {
                    self.malformed(start, "key is not UTF-8", &mut skipped)?;
                    None
                }
            };
            let vstart = eq + self.pair.len();
            if input.get(vstart) == Some(&b'"') {
                match unquote(input, vstart + 1) {
                    Some((value, after)) => {
                        // A closing quote must end the piece: `a="x"y` is not a pair.
                        let rest_end = find(input, after, sep).unwrap_or(input.len());
                        if trim(&input[after..rest_end]).is_empty() {
                            if let Some(k) = key {
                                out.insert(input_key(k, pos)?, text_owned(value));
                            }
                        } else {
                            self.malformed(after, "text after closing quote", &mut skipped)?;
                        }
                        pos = rest_end;
                    }
                    None => {
                        self.malformed(vstart, "unterminated quote", &mut skipped)?;
                        pos = input.len();
                    }
                }
            } else {
                if let Some(k) = key {
                    out.insert(input_key(k, pos)?, text(trim(&input[vstart..piece_end])));
                }
                pos = piece_end;
            }
        }
        Ok(skipped)
    }

    fn malformed(
        &self,
        at: usize,
        why: &'static str,
        skipped: &mut usize,
    ) -> Result<(), ParseError> {
        if self.strict {
            return Err(ParseError::at(at, why));
        }
        *skipped += 1;
        Ok(())
    }
}

/// Decodes a quoted value starting just after its opening quote; returns it and the
/// position after the closing quote, or `None` if the quote is never closed.
fn unquote(input: &[u8], from: usize) -> Option<(Vec<u8>, usize)> {
    let rest = input.get(from..)?;
    // Fast path: no escapes before the closing quote, one copy.
    let close = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    if rest[close] == b'"' {
        return Some((rest[..close].to_vec(), from + close + 1));
    }
    let mut v = Vec::with_capacity(rest.len());
    v.extend_from_slice(&rest[..close]);
    let mut i = close;
    while i < rest.len() {
        match rest[i] {
            b'"' => return Some((v, from + i + 1)),
            b'\\' => match rest.get(i + 1) {
                Some(&c @ (b'"' | b'\\')) => {
                    v.push(c);
                    i += 2;
                }
                _ => {
                    v.push(b'\\');
                    i += 1;
                }
            },
            c => {
                v.push(c);
                i += 1;
            }
        }
    }
    None
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

impl Parser for KvParser {
    fn parse(&mut self, input: &[u8], out: &mut Map) -> Result<(), ParseError> {
        KvParser::parse(self, input, out).map(|_| ())
    }
}

/// Parses `input` with the default delimiters (`" "`, `"="`), lenient: a convenience for
/// fuzzing and programs.
pub fn parse(input: &[u8], out: &mut Map) -> Result<usize, ParseError> {
    KvParser::default().parse(input, out)
}

impl<D: 'static> KvParse<D> {
    /// A `kv_parse` cog running `parser` on what `input` reads, merging with `output`.
    pub fn new(
        parser: KvParser,
        input: Getter<D, [u8]>,
        output: Merge<D>,
        on_error: OnError<D>,
    ) -> Self {
        ParseCog::with_parser("kv_parse", parser, input, output, on_error)
    }

    /// A `kv_parse` made from its settings: `input` reads the text (what `field` names),
    /// `output` stores the fields (what `target` says), failures go to `on_error`.
    pub fn from_settings(
        s: &KvParseSettings,
        input: Getter<D, [u8]>,
        output: Merge<D>,
        on_error: OnError<D>,
    ) -> Result<Self, SettingError> {
        Ok(KvParse::new(
            KvParser::from_settings(s)?,
            input,
            output,
            on_error,
        ))
    }
}

/// The descriptor of `kv_parse`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "kv_parse",
    kind: CogKind::Transform,
    summary: "parses key=value pairs (quoted values allowed) into string fields",
    params: KvParseSettings::PARAMS,
    fields: &[("*", "each key, with its value as a string")],
    build,
};

crate::settings! {
    /// Settings of `kv_parse`.
    pub struct KvParseSettings {
        /// Where the text is read and the fields go.
        #[setting(flatten)]
        input: InputSettings,
        /// between pairs (runs count as one)
        separator: String = " ",
        /// between a key and its value
        pair: String = "=",
        /// false: skip malformed pairs; true: send the record to on_error
        strict: bool = "false",
        /// What to do with a line that does not parse.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: KvParseSettings = p.settings()?;
    let parser = KvParser::from_settings(&s).map_err(|e| p.cog_error(e.msg))?;
    let (input, output, on_error) = record_parts(&s.input, &s.on_error, p, cx)?;
    Ok(Box::new(KvParse::new(parser, input, output, on_error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv_with(p: &KvParser, input: &[u8]) -> Result<(String, usize), ParseError> {
        let mut m = Map::new();
        let skipped = p.parse(input, &mut m)?;
        let mut out = Vec::new();
        m.write_json(&mut out);
        Ok((String::from_utf8(out).unwrap(), skipped))
    }

    fn kv(input: &[u8]) -> (String, usize) {
        kv_with(&KvParser::default(), input).unwrap()
    }

    #[test]
    fn logfmt_line() {
        assert_eq!(
            kv(br#"ts=2024-01-02T03:04:05Z level=info msg="user logged in" user=bob dur=1.5ms"#),
            (
                r#"{"ts":"2024-01-02T03:04:05Z","level":"info","msg":"user logged in","user":"bob","dur":"1.5ms"}"#.into(),
                0
            )
        );
    }

    #[test]
    fn fortigate_like_line() {
        assert_eq!(
            kv(br#"date=2024-05-01 devname="FG 100" srcip=10.0.0.1 url=/a?b=c&d=e empty= x="""#),
            (
                r#"{"date":"2024-05-01","devname":"FG 100","srcip":"10.0.0.1","url":"/a?b=c&d=e","empty":"","x":""}"#.into(),
                0
            )
        );
    }

    #[test]
    fn escapes_and_duplicates() {
        assert_eq!(
            kv(br#"a=1 q="say \"hi\" \\ \n" a=2"#),
            (r#"{"a":"2","q":"say \"hi\" \\ \\n"}"#.into(), 0)
        );
    }

    #[test]
    fn custom_delimiters() {
        let p = KvParser::new(", ", ":", false).unwrap();
        assert_eq!(
            kv_with(&p, b"a:1, b: two words , c:\"x, y\"").unwrap(),
            (r#"{"a":"1","b":"two words","c":"x, y"}"#.into(), 0)
        );
        let p = KvParser::new("&", "=", false).unwrap();
        assert_eq!(
            kv_with(&p, b"a=1&&b=2&").unwrap(),
            (r#"{"a":"1","b":"2"}"#.into(), 0)
        );
        assert!(KvParser::new("", "=", false).is_none());
        assert!(KvParser::new("=", "=", false).is_none());
    }

    #[test]
    fn malformed_lenient_and_strict() {
        assert_eq!(
            kv(br#"junk a=1 =nokey b="x"y c=3"#),
            (r#"{"a":"1","c":"3"}"#.into(), 3)
        );
        assert_eq!(
            kv(br#"a=1 b="unterminated c=3"#),
            (r#"{"a":"1"}"#.into(), 1)
        );
        assert_eq!(kv(b""), ("{}".into(), 0));
        assert_eq!(kv(b"   "), ("{}".into(), 0));
        assert_eq!(kv(b"\xff=1 k=\xfe"), ("{\"k\":\"\u{fffd}\"}".into(), 1));
        let strict = KvParser::new(" ", "=", true).unwrap();
        let e = kv_with(&strict, b"a=1 junk").unwrap_err();
        assert_eq!(e.to_string(), "at byte 4: no key/value delimiter");
        let e = kv_with(&strict, br#"a="open"#).unwrap_err();
        assert_eq!(e.offset(), Some(2));
        assert!(kv_with(&strict, b"a=1 b=2").is_ok());
    }
}
