//! JSON parsing into [`Value`]s and [`Map`]s.

use std::collections::HashMap;
use std::fmt;

use super::json_render::{Scan, TOO_MANY_KEYS, find_special, scan};
use super::key::Key;
use super::map::Map;
use super::value::Value;

/// Why a JSON text did not parse, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset into the input where the problem was found.
    pub offset: usize,
    /// What was wrong.
    pub msg: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.msg)
    }
}

impl std::error::Error for JsonError {}

/// Deepest nesting of arrays and objects accepted; keeps recursion well inside the stack.
pub(super) const MAX_DEPTH: usize = 128;

/// Objects with more entries than this get a hash index while parsing, so a hostile object
/// with many keys costs linear time instead of quadratic duplicate checks.
const INDEX_OBJECT_ABOVE: usize = 16;

impl Value {
    /// Parses one JSON text (RFC 8259) into a value.
    ///
    /// Objects become `Map`s (duplicate keys: the last value wins, at the first key's
    /// position), integers that fit an `i64` become `Int`, other integers `BigInt` (their
    /// text, so they render back unchanged) and other numbers `Float`.
    /// Nesting deeper than 128 arrays/objects, fractions or exponents beyond `f64` range, lone surrogate
    /// escapes, invalid UTF-8 and anything after the value are errors. Never panics.
    pub fn parse_json(input: &[u8]) -> Result<Value, JsonError> {
        let mut p = Parser { input, pos: 0 };
        let mut v = Value::Null;
        p.value(0, &mut v)?;
        p.skip_ws();
        if p.pos < input.len() {
            return Err(p.err("trailing characters after JSON value"));
        }
        Ok(v)
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

/// A parsed JSON string before it becomes a value or a key.
enum Piece {
    /// `input[from..to]` holds the text as is; its UTF-8 is not yet checked unless `ascii`.
    Raw { from: usize, to: usize, ascii: bool },
    /// The text had escapes and was decoded (and checked).
    Decoded(String),
}

impl<'a> Parser<'a> {
    fn err(&self, msg: &'static str) -> JsonError {
        JsonError {
            offset: self.pos,
            msg,
        }
    }

    fn err_at(offset: usize, msg: &'static str) -> JsonError {
        JsonError { offset, msg }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Parses a value at `depth` containers deep, after optional whitespace, into `out`.
    ///
    /// Values are parsed in place, into their final slot in the parent list or map, rather
    /// than returned and copied through the stack (docs/architecture.md#store-forwarding).
    fn value(&mut self, depth: usize, out: &mut Value) -> Result<(), JsonError> {
        self.skip_ws();
        match self.peek() {
            None => return Err(self.err("unexpected end of input")),
            Some(b'{' | b'[') if depth >= MAX_DEPTH => return Err(self.err("nesting too deep")),
            Some(b'{') => {
                self.pos += 1;
                // Top-level objects are usually records of a dozen or so fields: sized up
                // front, they skip the reallocations of growing from empty.
                let map = if depth == 0 {
                    Map::with_capacity(16)
                } else {
                    Map::new()
                };
                *out = Value::Map(map);
                if let Value::Map(map) = out {
                    self.object(depth + 1, map)?;
                }
            }
            Some(b'[') => {
                self.pos += 1;
                *out = Value::List(Vec::new());
                if let Value::List(items) = out {
                    self.array(depth + 1, items)?;
                }
            }
            Some(b'"') => {
                self.pos += 1;
                *out = Value::Str(self.string()?);
            }
            Some(b't') => *out = self.literal(b"true", Value::Bool(true))?,
            Some(b'f') => *out = self.literal(b"false", Value::Bool(false))?,
            Some(b'n') => *out = self.literal(b"null", Value::Null)?,
            Some(b'-' | b'0'..=b'9') => *out = self.number()?,
            Some(_) => return Err(self.err("expected a JSON value")),
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8], v: Value) -> Result<Value, JsonError> {
        if self
            .input
            .get(self.pos..)
            .is_some_and(|r| r.starts_with(word))
        {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    /// After the `[`.
    fn array(&mut self, depth: usize, items: &mut Vec<Value>) -> Result<(), JsonError> {
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            items.push(Value::Null);
            if let Some(slot) = items.last_mut() {
                self.value(depth, slot)?;
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                None => return Err(self.err("unexpected end of input")),
                Some(_) => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    /// After the `{`.
    fn object(&mut self, depth: usize, map: &mut Map) -> Result<(), JsonError> {
        let mut index: Option<HashMap<Key, usize>> = None;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'"') => self.pos += 1,
                None => return Err(self.err("unexpected end of input")),
                Some(_) => return Err(self.err("expected a string key")),
            }
            let key = self.key()?;
            self.skip_ws();
            match self.peek() {
                Some(b':') => self.pos += 1,
                None => return Err(self.err("unexpected end of input")),
                Some(_) => return Err(self.err("expected ':'")),
            }
            let entries = &mut map.entries;
            if index.is_none() && entries.len() >= INDEX_OBJECT_ABOVE {
                index = Some(
                    entries
                        .iter()
                        .enumerate()
                        .map(|(i, (k, _))| (*k, i))
                        .collect(),
                );
            }
            // A duplicate key is parsed over the earlier value: the last one wins, in the
            // first one's position.
            let next = entries.len();
            let i = match &mut index {
                None => entries.iter().position(|(k, _)| *k == key).unwrap_or(next),
                Some(index) => *index.entry(key).or_insert(next),
            };
            if i == next {
                // Rather than `push`, which assembles the pair on the stack and copies it out
                // (docs/architecture.md#store-forwarding).
                entries.resize_with(next + 1, || (key, Value::Null));
            }
            if let Some((_, slot)) = entries.get_mut(i) {
                self.value(depth, slot)?;
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                None => return Err(self.err("unexpected end of input")),
                Some(_) => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    /// Checks `input[from..to]` (a run between escapes) is UTF-8. Escapes are ASCII, so no
    /// valid character can straddle one and each run must be valid on its own.
    fn utf8(&self, from: usize, to: usize) -> Result<&'a str, JsonError> {
        let input = self.input;
        let run = input.get(from..to).unwrap_or_default();
        std::str::from_utf8(run)
            .map_err(|e| Parser::err_at(from + e.valid_up_to(), "invalid UTF-8 in string"))
    }

    /// A string value, after its opening `"`.
    fn string(&mut self) -> Result<String, JsonError> {
        match self.string_piece()? {
            Piece::Raw {
                from,
                to,
                ascii: true,
            } => {
                let ascii = self.input.get(from..to).unwrap_or_default();
                // SAFETY: `scan` found only ASCII bytes in this span, and ASCII is UTF-8. The
                // unchecked conversion spares a second pass over the text.
                Ok(String::from(unsafe {
                    std::str::from_utf8_unchecked(ascii)
                }))
            }
            Piece::Raw { from, to, .. } => self.utf8(from, to).map(String::from),
            Piece::Decoded(s) => Ok(s),
        }
    }

    /// An object key, after its opening `"`.
    fn key(&mut self) -> Result<Key, JsonError> {
        match self.string_piece()? {
            // A cache hit matched the bytes of a valid name, so they need no UTF-8 check.
            Piece::Raw { from, to, .. } => {
                match Key::cached(self.input.get(from..to).unwrap_or_default()) {
                    Some(k) => Ok(k),
                    None => {
                        let name = self.utf8(from, to)?;
                        Key::from_input(name).ok_or_else(|| Parser::err_at(from, TOO_MANY_KEYS))
                    }
                }
            }
            Piece::Decoded(s) => {
                Key::from_input(&s).ok_or_else(|| Parser::err_at(self.pos, TOO_MANY_KEYS))
            }
        }
    }

    /// The contents of a string, after its opening `"`: the span of the input when there are
    /// no escapes (UTF-8 not yet checked), else the decoded text.
    fn string_piece(&mut self) -> Result<Piece, JsonError> {
        let start = self.pos;
        let Scan { at: mut i, ascii } = scan(self.input, start);
        match self.input.get(i) {
            Some(b'"') => {
                self.pos = i + 1;
                return Ok(Piece::Raw {
                    from: start,
                    to: i,
                    ascii,
                });
            }
            Some(b'\\') => {}
            Some(_) => return Err(Parser::err_at(i, "control character in string")),
            None => return Err(Parser::err_at(i, "unterminated string")),
        }
        let mut buf = String::with_capacity(i - start + 16);
        let mut run = start;
        loop {
            buf.push_str(self.utf8(run, i)?);
            match self.input.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(Piece::Decoded(buf));
                }
                Some(b'\\') => i = self.escape(i, &mut buf)?,
                Some(_) => return Err(Parser::err_at(i, "control character in string")),
                None => return Err(Parser::err_at(i, "unterminated string")),
            }
            run = i;
            i = find_special(self.input, i);
        }
    }

    /// Decodes the escape whose `\` is at `at` into `buf`; returns the offset after it.
    fn escape(&self, at: usize, buf: &mut String) -> Result<usize, JsonError> {
        let c = match self.input.get(at + 1) {
            None => return Err(Parser::err_at(at + 1, "unterminated string")),
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let hi = self.hex4(at + 2)?;
                let (cp, end) = match hi {
                    0xD800..=0xDBFF => {
                        if self.input.get(at + 6..at + 8) != Some(b"\\u") {
                            return Err(Parser::err_at(at, "lone surrogate in \\u escape"));
                        }
                        let lo = self.hex4(at + 8)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(Parser::err_at(at, "lone surrogate in \\u escape"));
                        }
                        (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), at + 12)
                    }
                    _ => (hi, at + 6),
                };
                // Fails only for a low surrogate on its own.
                let c = char::from_u32(cp)
                    .ok_or_else(|| Parser::err_at(at, "lone surrogate in \\u escape"))?;
                buf.push(c);
                return Ok(end);
            }
            Some(_) => return Err(Parser::err_at(at + 1, "invalid escape")),
        };
        buf.push(c);
        Ok(at + 2)
    }

    fn hex4(&self, at: usize) -> Result<u32, JsonError> {
        let Some(digits) = self.input.get(at..at + 4) else {
            return Err(Parser::err_at(
                at.min(self.input.len()),
                "truncated \\u escape",
            ));
        };
        let mut n = 0;
        for (i, &d) in digits.iter().enumerate() {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(Parser::err_at(at + i, "invalid hex digit in \\u escape")),
            };
            n = n << 4 | u32::from(v);
        }
        Ok(n)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        let neg = self.peek() == Some(b'-');
        if neg {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        let int_end = self.pos;
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.err("expected digits after '.'"));
            }
            float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("expected digits in exponent"));
            }
            float = true;
        }
        if !float {
            // Accumulate negatively so i64::MIN fits.
            let mut acc: Option<i64> = Some(0);
            for &d in self.input.get(int_start..int_end).unwrap_or_default() {
                acc = acc
                    .and_then(|a| a.checked_mul(10))
                    .and_then(|a| a.checked_sub(i64::from(d - b'0')));
            }
            if let Some(n) = if neg {
                acc
            } else {
                acc.and_then(i64::checked_neg)
            } {
                return Ok(Value::Int(n));
            }
            // Beyond i64: a float would lose digits, so the text is kept as it is. `-0`
            // fits, so the text never has a leading zero.
            let text = self.utf8(start, self.pos)?;
            return Ok(Value::BigInt(text.into()));
        }
        let text = self.utf8(start, self.pos)?;
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Float(f)),
            _ => Err(Parser::err_at(start, "number out of range")),
        }
    }
}
