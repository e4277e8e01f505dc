//! How drains render a [`Record`] as one line: `raw`, `json` or `template`.

use crate::config::{CogParams, ConfigError, Param, ParamType};
use crate::record::{Path, Record, Value};
use crate::supply::message_key;

/// The `format` and `template` keys every drain takes.
pub const FORMAT_PARAMS: [Param; 2] = [
    Param::opt(
        "format",
        ParamType::Choice(&["raw", "json", "template"]),
        "raw",
        "raw: the `message` field as it came in; json: the whole record; template: see `template`",
    ),
    Param::unset(
        "template",
        ParamType::Str,
        "with format = \"template\": text with {field} and {a.b} placeholders; {{ and }} are literal braces",
    ),
];

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
    /// Reads `format` and `template` from a drain's parameters.
    pub fn from_params(p: &CogParams<'_>) -> Result<OutputFormat, ConfigError> {
        match p.choice_or("format", &["raw", "json", "template"], "raw")? {
            "json" => Ok(OutputFormat::Json),
            "template" => {
                let t = p.str("template")?.ok_or_else(|| {
                    p.error("format", "format = \"template\" needs a `template` key")
                })?;
                Template::parse(t)
                    .map(OutputFormat::Template)
                    .map_err(|m| p.error("template", m))
            }
            _ => {
                if p.node("template").is_some() {
                    return Err(p.error(
                        "template",
                        "`template` is used only with format = \"template\"",
                    ));
                }
                Ok(OutputFormat::Raw)
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

#[derive(Debug, Clone)]
enum Piece {
    Text(Vec<u8>),
    Field(Path),
}

/// A parsed `template`: literal text and `{field.path}` placeholders. Missing fields
/// render as nothing.
#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses a template; the error says which column is wrong.
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
                    let name = &s[i + 1..i + 1 + len];
                    let path = Path::parse(name.trim()).map_err(|e| {
                        format!("template column {}: bad field {name:?}: {e}", i + 2)
                    })?;
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Field(path));
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
            }
        }
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
    fn raw_writes_message_bytes_unchanged() {
        let mut r = Record::new();
        r.insert(message_key(), Value::Bytes(b"caf\xe9 \x01".to_vec()));
        let mut out = Vec::new();
        OutputFormat::Raw.write(&r, &mut out);
        assert_eq!(out, b"caf\xe9 \x01\n");
    }
}
