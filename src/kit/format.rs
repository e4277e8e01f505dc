//! How drains render a [`Record`] as one line: `raw`, `json` or `template`.

use crate::kit::supply::message_key;
use crate::record::{Path, Record, Value, write_json_str_body};
use crate::schema::{CogParams, ConfigError, SettingError};

crate::choice! {
    /// How a drain renders each record (`format`).
    pub enum Format { Raw = "raw", Json = "json", Template = "template" }
}

crate::settings! {
    /// The `format`, `template` and `escape` keys every drain takes.
    pub struct FormatSettings {
        /// raw: the `message` field as it came in; json: the whole record; template: see `template`
        format: Format = "raw",
        /// with format = "template": text with {field} and {a.b} placeholders; {field|json}
        /// renders the value as JSON (strings quoted and escaped, null when missing); {{ and }}
        /// are literal braces
        template: Option<String>,
        /// with format = "template": json escapes every placeholder's text as the inside of a
        /// JSON string (quotes, backslashes, control characters), for templates shaped as JSON
        escape: Escape = "none",
    }
}

/// One line per record, in one of three renderings.
#[derive(Debug, Clone)]
pub enum OutputFormat {
    /// The `message` field's bytes unchanged (other fields are not written).
    Raw,
    /// The whole record as one JSON object.
    Json,
    /// Literal text with placeholders for fields.
    Template(Template),
}

impl OutputFormat {
    /// Reads `format`, `template` and `escape` from a drain's parameters.
    pub fn from_params(p: &CogParams<'_>) -> Result<OutputFormat, ConfigError> {
        let s: FormatSettings = p.group()?;
        OutputFormat::new(&s).map_err(|e| p.setting_error(e))
    }

    /// The rendering `s` describes.
    pub fn new(s: &FormatSettings) -> Result<OutputFormat, SettingError> {
        match s.format {
            Format::Template => {
                let t = s.template.as_deref().ok_or_else(|| {
                    SettingError::new("format", "format = \"template\" needs a `template` key")
                })?;
                Template::parse(t)
                    .map(|t| OutputFormat::Template(t.escaped(s.escape)))
                    .map_err(|m| SettingError::new("template", m))
            }
            format => {
                if s.template.is_some() {
                    return Err(SettingError::new(
                        "template",
                        "`template` is used only with format = \"template\"",
                    ));
                }
                if s.escape != Escape::None {
                    return Err(SettingError::new(
                        "escape",
                        "`escape` is used only with format = \"template\"",
                    ));
                }
                Ok(if format == Format::Json {
                    OutputFormat::Json
                } else {
                    OutputFormat::Raw
                })
            }
        }
    }

    /// Appends the record's line, newline included, to `out`.
    #[inline]
    pub fn write(&self, r: &Record, out: &mut Vec<u8>) {
        match self {
            OutputFormat::Raw => {
                if let Some(v) = r.get(message_key()) {
                    write_plain(v, out);
                }
            }
            OutputFormat::Json => r.write_json(out),
            OutputFormat::Template(t) => t.write(r, out),
        }
        out.push(b'\n');
    }
}

/// Writes a value as text: strings and bytes as they are, others as JSON would render them.
fn write_plain(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Bytes(b) => out.extend_from_slice(b),
        Value::Str(_) | Value::Shared(_) => out.extend_from_slice(v.as_bytes().unwrap_or_default()),
        Value::Null => {}
        other => {
            let start = out.len();
            other.write_json(out);
            // Timestamps, addresses and networks render as JSON strings: drop the quotes.
            if out.len() - start >= 2 && out[start] == b'"' && out[out.len() - 1] == b'"' {
                out.pop();
                out.remove(start);
            }
        }
    }
}

crate::choice! {
    /// How a template writes the text of its placeholders: as it is (`none`), or escaped as
    /// the inside of a JSON string (`json`), so a template such as `{{"msg":"{message}"}}`
    /// writes valid JSON whatever the value holds.
    pub enum Escape { None = "none", Json = "json" }
}

#[derive(Debug, Clone)]
enum Piece {
    Text(Vec<u8>),
    /// A field written as text.
    Field(Path),
    /// A field written as text escaped for the inside of a JSON string.
    Escaped(Path),
    /// A field written as a JSON value (`{field|json}`): `null` when missing.
    Json(Path),
}

/// A parsed `template`: literal text and `{field.path}` placeholders. Missing fields
/// render as nothing.
///
/// A `|` in a placeholder starts a filter (so field names cannot hold one), and
/// `{field|json}` writes the value as a JSON value whatever the escaping: strings and raw
/// bytes quoted and escaped (invalid UTF-8 as U+FFFD), numbers and booleans bare, maps and
/// lists as JSON, a missing field as `null`. With [`Escape::Json`] every other placeholder
/// writes its text escaped as the inside of a JSON string (without quotes: the template
/// has them), non-text values as they render in plain text.
#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// The filters a placeholder may name after `|`.
const FILTERS: &str = "json";

impl Template {
    /// Parses a template (with [`Escape::None`]); the error says which column is wrong.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'{' if bytes.get(i + 1) == Some(&b'{') => {
                    text.push(b'{');
                    i += 2;
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    text.push(b'}');
                    i += 2;
                }
                b'{' => {
                    let Some(len) = s[i + 1..].find('}') else {
                        return Err(format!("template column {}: `{{` is never closed", i + 1));
                    };
                    let inner = &s[i + 1..i + 1 + len];
                    let (name, filter) = match inner.rsplit_once('|') {
                        Some((name, filter)) => (name, Some(filter.trim())),
                        None => (inner, None),
                    };
                    let path = Path::parse(name.trim()).map_err(|e| {
                        format!("template column {}: bad field {name:?}: {e}", i + 2)
                    })?;
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(match filter {
                        None => Piece::Field(path),
                        Some("json") => Piece::Json(path),
                        Some(f) => {
                            return Err(format!(
                                "template column {}: unknown filter {f:?} (known: {FILTERS})",
                                i + 3 + name.len()
                            ));
                        }
                    });
                    i += len + 2;
                }
                b'}' => {
                    return Err(format!(
                        "template column {}: unmatched `}}` (write `}}}}`)",
                        i + 1
                    ));
                }
                c => {
                    text.push(c);
                    i += 1;
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template { pieces })
    }

    /// The same template, writing placeholders' text with `escape`.
    pub fn escaped(mut self, escape: Escape) -> Template {
        // Decided here once, so that writing a plain placeholder tests nothing more.
        for p in &mut self.pieces {
            *p = match std::mem::replace(p, Piece::Text(Vec::new())) {
                Piece::Field(path) | Piece::Escaped(path) => match escape {
                    Escape::None => Piece::Field(path),
                    Escape::Json => Piece::Escaped(path),
                },
                other => other,
            };
        }
        self
    }

    /// Appends the rendered template (without newline).
    pub fn write(&self, r: &Record, out: &mut Vec<u8>) {
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Field(path) => {
                    if let Some(v) = r.get_path(path) {
                        write_plain(v, out);
                    }
                }
                other => write_json_piece(other, r, out),
            }
        }
    }
}

/// Writes an escaped or `|json` placeholder. Kept out of line so that plain templates
/// render as fast as they did before these existed.
#[inline(never)]
fn write_json_piece(p: &Piece, r: &Record, out: &mut Vec<u8>) {
    match p {
        Piece::Escaped(path) => {
            if let Some(v) = r.get_path(path) {
                write_plain_json_escaped(v, out);
            }
        }
        Piece::Json(path) => match r.get_path(path) {
            Some(v) => v.write_json(out),
            None => out.extend_from_slice(b"null"),
        },
        Piece::Text(_) | Piece::Field(_) => {}
    }
}

/// Writes a value's plain text (as [`write_plain`]) escaped as the inside of a JSON string.
fn write_plain_json_escaped(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Bytes(b) => write_json_str_body(out, b),
        Value::Str(_) | Value::Shared(_) => {
            write_json_str_body(out, v.as_bytes().unwrap_or_default())
        }
        Value::List(_) | Value::Map(_) => {
            // Their rendering holds quotes: escape it as a whole.
            let mut text = Vec::new();
            v.write_json(&mut text);
            write_json_str_body(out, &text);
        }
        // Numbers, booleans, times and addresses render with nothing to escape.
        other => write_plain(other, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Key;

    #[test]
    fn template_renders_fields_and_braces() {
        let t = Template::parse("{host} {{x}} {a.b}!").unwrap();
        let mut r = Record::new();
        r.insert(Key::new("host"), Value::Str("web1".into()));
        r.set_path(&Path::parse("a.b").unwrap(), Value::Int(7));
        let mut out = Vec::new();
        t.write(&r, &mut out);
        assert_eq!(out, b"web1 {x} 7!");
        assert!(Template::parse("{open").is_err());
        assert!(Template::parse("close}").is_err());
        assert!(Template::parse("{a..b}").is_err());
    }

    #[test]
    fn json_escape_and_filter() {
        let mut r = Record::new();
        r.insert(Key::new("m"), Value::Bytes(b"a\"b\\c\nd\x01\xff".to_vec()));
        r.insert(Key::new("n"), Value::Int(-3));
        let render = |t: Template| {
            let mut out = Vec::new();
            t.write(&r, &mut out);
            String::from_utf8(out).unwrap()
        };
        let t = Template::parse(r#"{{"m":"{m}","n":{n}}}"#).unwrap();
        assert_eq!(
            render(t.escaped(Escape::Json)),
            "{\"m\":\"a\\\"b\\\\c\\nd\\u0001\u{FFFD}\",\"n\":-3}"
        );
        let t = Template::parse("{m|json} {n | json} {x|json}").unwrap();
        assert_eq!(render(t), "\"a\\\"b\\\\c\\nd\\u0001\u{FFFD}\" -3 null");
        let e = Template::parse("{m|csv}").unwrap_err();
        assert!(e.contains("column 4: unknown filter \"csv\""), "{e}");
    }

    #[test]
    fn raw_writes_message_bytes_unchanged() {
        let mut r = Record::new();
        r.insert(message_key(), Value::Bytes(b"caf\xe9 \x01".to_vec()));
        let mut out = Vec::new();
        OutputFormat::Raw.write(&r, &mut out);
        assert_eq!(out, b"caf\xe9 \x01\n");
    }
}
