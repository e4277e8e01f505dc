//! What the parsing cogs share (the structured formats here, and `regex` with its
//! presets): the failure type, the generic cog around a parser, the common keys (`field`,
//! `target`, `on_error`) and small byte helpers.

use std::borrow::Cow;
use std::fmt;

use crate::kit::BuildCx;
use crate::kit::on_error::{self, OnError, OnErrorSettings};
use crate::prelude::*;
use crate::record::{self, Key, Map, Merge, Path, Record, Value};
use crate::schema::{CogParams, ConfigError, Param};

/// Why a datum did not parse: the reason a failed record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A structured format is broken at byte `offset` of the input.
    At {
        /// Byte offset into the input where the problem was found.
        offset: usize,
        /// What was wrong.
        msg: Cow<'static, str>,
    },
    /// The input field (named here) is absent or not text.
    Missing(String),
    /// The line does not have the expected shape; the detail says where, if known.
    NoMatch(&'static str),
    /// A field was found but does not convert to its type.
    Convert {
        /// The field.
        field: Key,
        /// What it should have been ("an int").
        want: &'static str,
        /// The text found, lossily decoded.
        text: String,
    },
}

impl ParseError {
    /// An error at `offset` with a fixed message.
    pub fn at(offset: usize, msg: &'static str) -> ParseError {
        ParseError::At {
            offset,
            msg: Cow::Borrowed(msg),
        }
    }

    /// An error at `offset` with a composed message (only built on failure).
    pub fn owned(offset: usize, msg: String) -> ParseError {
        ParseError::At {
            offset,
            msg: Cow::Owned(msg),
        }
    }

    /// A conversion failure of `field`, keeping the offending text for the reason.
    pub fn convert(field: Key, want: &'static str, text: &[u8]) -> ParseError {
        ParseError::Convert {
            field,
            want,
            text: String::from_utf8_lossy(text).into_owned(),
        }
    }

    /// The byte offset of an [`At`](ParseError::At) error.
    pub fn offset(&self) -> Option<usize> {
        match self {
            ParseError::At { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// Interns a field name found in the input, refusing new names once the interner is full
/// (see [`record::MAX_INPUT_KEYS`]): the record then fails instead of growing memory.
pub fn input_key(name: &str, offset: usize) -> Result<crate::record::Key, ParseError> {
    crate::record::Key::from_input(name).ok_or_else(|| {
        ParseError::at(
            offset,
            "too many distinct field names in the input (see MAX_INPUT_KEYS)",
        )
    })
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::At { offset, msg } => write!(f, "at byte {offset}: {msg}"),
            ParseError::Missing(field) => write!(f, "field {field}: missing or not text"),
            ParseError::NoMatch("") => f.write_str("no match"),
            ParseError::NoMatch(detail) => write!(f, "no match: {detail}"),
            ParseError::Convert { field, want, text } => {
                write!(f, "field {field}: not {want}: {text:?}")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// One format: turns the bytes of a field into named values.
pub trait Parser: 'static {
    /// Parses `input`, adding fields to `out` (empty on entry). On error `out` may hold
    /// some fields; the cog discards them.
    fn parse(&mut self, input: &[u8], out: &mut Map) -> Result<(), ParseError>;
}

/// A parsing cog: reads bytes with a getter, parses them, merges the fields into the
/// datum, and hands failures to `on_error`. The structured-format cogs and `regex` are
/// this struct with their own [`Parser`].
pub struct ParseCog<D, P> {
    name: &'static str,
    parse: ParseInto<D, P>,
    on_error: OnError<D>,
}

/// What a parsing cog does to one datum, apart from its error handling (so that the batch
/// loop can borrow the two at once).
struct ParseInto<D, P> {
    input: Getter<D, [u8]>,
    output: Merge<D>,
    parser: P,
    /// The reason given for a datum without the input.
    missing: ParseError,
    /// Reused for every datum so that parsing allocates only the values themselves.
    fields: Map,
}

impl<D, P: Parser> ParseInto<D, P> {
    /// Parses the datum's text and merges the fields into it; on failure it is unchanged.
    #[inline]
    fn apply(&mut self, d: &mut D) -> Result<(), ParseError> {
        let res = match self.input.get(d) {
            Some(text) => self.parser.parse(text, &mut self.fields),
            None => Err(self.missing.clone()),
        };
        match res {
            Ok(()) => {
                self.output.merge(d, &mut self.fields);
                Ok(())
            }
            Err(why) => {
                self.fields.clear();
                Err(why)
            }
        }
    }
}

impl<D: 'static, P: Parser> ParseCog<D, P> {
    /// A cog named `name` running `parser` on what `input` reads, merging with `output`.
    pub fn with_parser(
        name: &'static str,
        parser: P,
        input: Getter<D, [u8]>,
        output: Merge<D>,
        on_error: OnError<D>,
    ) -> Self {
        ParseCog {
            name,
            parse: ParseInto {
                input,
                output,
                parser,
                missing: ParseError::at(0, "input field missing or not text"),
                fields: Map::with_capacity(16),
            },
            on_error,
        }
    }

    /// Sets the reason given for a datum without the input (by default
    /// `at byte 0: input field missing or not text`).
    pub fn with_missing_reason(mut self, why: ParseError) -> Self {
        self.parse.missing = why;
        self
    }
}

impl<D, P> fmt::Debug for ParseCog<D, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParseCog")
            .field("name", &self.name)
            .field("on_error", &self.on_error)
            .finish()
    }
}

impl<D: 'static, P: Parser> Cog<D> for ParseCog<D, P> {
    fn name(&self) -> &str {
        self.name
    }

    #[inline]
    fn process(&mut self, mut d: D, out: &mut Out<D>, cx: &mut Ctx) {
        match self.parse.apply(&mut d) {
            Ok(()) => out.push(d),
            Err(why) => self.on_error.fail(d, self.name, &why, out, cx),
        }
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        let (parse, on_error, name) = (&mut self.parse, &mut self.on_error, self.name);
        out.change_each(
            batch,
            |d| parse.apply(d),
            |d, why, out| on_error.fail(d, name, &why, out, cx),
        );
    }
}

crate::settings! {
    /// Where a parsing cog reads its input and puts the fields (flatten it into a parsing
    /// cog's settings; with `on_error`, what a structured-format cog takes).
    pub struct InputSettings {
        /// dotted path of the text to parse
        field: String = "message",
        /// dotted path of a map to put the parsed fields in (created if missing); by default they go at the top level, replacing fields of the same name
        target: Option<String>,
    }
}

/// `field`: where the input is read (for descriptors not written with typed settings).
pub const FIELD_PARAM: Param = <InputSettings as crate::schema::Settings>::PARAMS[0];

/// `target`: where the parsed fields go (for descriptors not written with typed settings).
pub const TARGET_PARAM: Param = <InputSettings as crate::schema::Settings>::PARAMS[1];

/// What every parsing cog over `Record` is built from: its input, output and failure
/// handling.
pub type RecordParts = (Getter<Record, [u8]>, Merge<Record>, OnError<Record>);

/// The input, output and failure handling that `input` and `on_error` say, for a parsing
/// cog over `Record`; errors point at the cog's keys.
pub fn record_parts(
    input: &InputSettings,
    on_error: &OnErrorSettings,
    p: &CogParams<'_>,
    cx: &BuildCx<'_>,
) -> Result<RecordParts, ConfigError> {
    let field = Path::parse(&input.field).map_err(|e| p.error("field", e.to_string()))?;
    let target = match &input.target {
        Some(t) => Some(Path::parse(t).map_err(|e| p.error("target", e.to_string()))?),
        None => None,
    };
    Ok((
        record::bytes_at(field),
        record::merge_into(target),
        on_error::from_settings(on_error, p, cx)?,
    ))
}

/// Reads `field`, `target` and `on_error` for a parsing cog over `Record`.
pub fn common_from_params(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<RecordParts, ConfigError> {
    let input: InputSettings = p.group()?;
    let on_error: OnErrorSettings = p.group()?;
    record_parts(&input, &on_error, p, cx)
}

/// Text as a `Str` when it is valid UTF-8, else the raw bytes (rendered with U+FFFD):
/// a parser never loses what it was given.
#[inline]
pub(crate) fn text(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::Str(s.to_owned()),
        Err(_) => Value::Bytes(b.to_vec()),
    }
}

/// Text already decoded into a buffer of bytes, without copying it again.
#[inline]
pub(crate) fn text_owned(b: Vec<u8>) -> Value {
    match String::from_utf8(b) {
        Ok(s) => Value::Str(s),
        Err(e) => Value::Bytes(e.into_bytes()),
    }
}

/// Position of `needle` in `hay` at or after `from`.
#[inline]
pub(crate) fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let hay = hay.get(from..)?;
    match needle {
        [] => Some(from),
        [b] => hay.iter().position(|c| c == b).map(|i| i + from),
        [first, rest @ ..] => {
            let mut i = 0;
            while let Some(j) = hay.get(i..)?.iter().position(|c| c == first) {
                let at = i + j;
                if hay.get(at + 1..at + 1 + rest.len()) == Some(rest) {
                    return Some(at + from);
                }
                i = at + 1;
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_substrings() {
        assert_eq!(find(b"a, b", 0, b", "), Some(1));
        assert_eq!(find(b"a,,b", 2, b","), Some(2));
        assert_eq!(find(b"a,", 0, b",,"), None);
        assert_eq!(find(b"ab", 5, b"b"), None);
        assert_eq!(find(b"xxab", 0, b"ab"), Some(2));
    }
}
