use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, ConfigErrorDetails};

/// The text of a configuration file, to turn byte offsets into lines and columns.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) line_starts: Vec<usize>,
    pub(crate) text: String,
}

impl Source {
    pub(crate) fn new(path: &Path, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            path: path.to_path_buf(),
            line_starts,
            text,
        }
    }

    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = self
            .text
            .get(start..offset.min(self.text.len()))
            .map_or(1, |s| s.chars().count() + 1);
        (line, col)
    }

    pub(crate) fn error(&self, span: Option<&Range<usize>>, msg: impl Into<String>) -> ConfigError {
        ConfigError(Box::new(ConfigErrorDetails {
            file: self.path.clone(),
            at: span.map(|s| self.line_col(s.start)),
            train: None,
            cog: None,
            cog_name: None,
            key: None,
            msg: msg.into(),
        }))
    }
}

/// A configuration value with its place in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Byte range in the file.
    pub span: Range<usize>,
    /// The value.
    pub value: NodeValue,
}

/// A configuration value (TOML's data model, owned).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A TOML date-time, as written.
    Datetime(String),
    /// An array.
    Array(Vec<Node>),
    /// A table: keys with their spans, in file order.
    Table(Vec<(Spanned<String>, Node)>),
}

impl NodeValue {
    /// The TOML name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeValue::Str(_) => "string",
            NodeValue::Int(_) => "integer",
            NodeValue::Float(_) => "float",
            NodeValue::Bool(_) => "boolean",
            NodeValue::Datetime(_) => "datetime",
            NodeValue::Array(_) => "array",
            NodeValue::Table(_) => "table",
        }
    }
}

pub(crate) fn convert(v: &Spanned<DeValue<'_>>, src: &Source) -> Result<Node, ConfigError> {
    let span = v.span();
    let value = match v.get_ref() {
        DeValue::String(s) => NodeValue::Str(s.to_string()),
        DeValue::Integer(i) => {
            let n = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).map_err(|_| {
                src.error(
                    Some(&span),
                    format!("integer {} does not fit in 64 bits", i.as_str()),
                )
            })?;
            NodeValue::Int(n)
        }
        DeValue::Float(f) => match f.as_str().replace('_', "").parse::<f64>() {
            Ok(x) => NodeValue::Float(x),
            Err(_) => match f.as_str() {
                "inf" | "+inf" => NodeValue::Float(f64::INFINITY),
                "-inf" => NodeValue::Float(f64::NEG_INFINITY),
                _ => NodeValue::Float(f64::NAN),
            },
        },
        DeValue::Boolean(b) => NodeValue::Bool(*b),
        DeValue::Datetime(d) => NodeValue::Datetime(d.to_string()),
        DeValue::Array(a) => NodeValue::Array(
            a.iter()
                .map(|x| convert(x, src))
                .collect::<Result<_, _>>()?,
        ),
        DeValue::Table(t) => NodeValue::Table(convert_table(t, src)?),
    };
    Ok(Node { span, value })
}

pub(crate) fn convert_table(
    t: &DeTable<'_>,
    src: &Source,
) -> Result<Vec<(Spanned<String>, Node)>, ConfigError> {
    let mut out = Vec::with_capacity(t.len());
    for (k, v) in t.iter() {
        out.push((
            Spanned::new(k.span(), k.get_ref().to_string()),
            convert(v, src)?,
        ));
    }
    // Keep file order: the parser's map may not.
    out.sort_by_key(|(k, _)| k.span().start);
    Ok(out)
}
