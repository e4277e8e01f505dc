//! `POST /trains/{train}/cogs/{cog}/rewind`: the body read into a [`Rewind`].
//!
//! The body is one flat JSON object, `{"source": PATH, "offset": N}` (or `"line": N`, or
//! `"time": TEXT`), read by the small parser below: the daemon's JSON parser interns the
//! keys it meets for the rest of the process, which a request from outside must not be
//! able to make it do. Errors name what is wrong, never what was sent.

use crate::engine::control::{Position, Rewind};

/// A value of the body: text or a whole number.
#[derive(Debug, PartialEq)]
enum Val {
    Str(String),
    Num(u64),
}

/// Reads the body of a rewind request.
pub(super) fn parse(body: &[u8]) -> Result<Rewind, &'static str> {
    const SHAPE: &str =
        "the body must be a JSON object: {\"source\": PATH, \"offset\": N} (or \"line\": N)";
    let fields = Object { b: body, at: 0 }
        .read()
        .map_err(|e| e.unwrap_or(SHAPE))?;
    let mut source = None;
    let mut to = None;
    for (i, (key, val)) in fields.iter().enumerate() {
        if fields[..i].iter().any(|(k, _)| k == key) {
            return Err("a key is given twice");
        }
        let pos = match (key.as_str(), val) {
            ("source", Val::Str(s)) => {
                source = Some(s.clone());
                continue;
            }
            ("source", _) => return Err("source must be a path (a string)"),
            ("offset", Val::Num(n)) => Position::Offset(*n),
            ("line", Val::Num(n)) => Position::Line(*n),
            ("time", Val::Str(t)) => Position::Time(t.clone()),
            ("offset" | "line", _) => return Err("offset and line are whole numbers"),
            ("time", _) => return Err("time must be RFC 3339 text"),
            _ => return Err("unknown key: give source and one of offset, line, time"),
        };
        if to.replace(pos).is_some() {
            return Err("give only one of offset, line, time");
        }
    }
    let Some(source) = source.filter(|s| !s.is_empty()) else {
        return Err("source (the path of the file to read again) is required");
    };
    let Some(to) = to else {
        return Err("give one of offset, line, time");
    };
    Ok(Rewind { source, to })
}

/// A cursor over the body; errors are `None` for "not the expected shape" or a reason.
struct Object<'a> {
    b: &'a [u8],
    at: usize,
}

type Res<T> = Result<T, Option<&'static str>>;

impl Object<'_> {
    fn ws(&mut self) {
        while self.b.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn read(mut self) -> Res<Vec<(String, Val)>> {
        if !self.eat(b'{') {
            return Err(None);
        }
        let mut out = Vec::new();
        if !self.eat(b'}') {
            loop {
                self.ws();
                let key = self.string()?;
                if !self.eat(b':') {
                    return Err(None);
                }
                self.ws();
                let val = match self.b.get(self.at) {
                    Some(b'"') => Val::Str(self.string()?),
                    Some(b'0'..=b'9') => Val::Num(self.number()?),
                    Some(b'-') => return Err(Some("offset and line are whole numbers from 0")),
                    _ => return Err(Some("values are strings or whole numbers")),
                };
                out.push((key, val));
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b'}') {
                    break;
                }
                return Err(None);
            }
        }
        self.ws();
        if self.at != self.b.len() {
            return Err(None);
        }
        Ok(out)
    }

    fn number(&mut self) -> Res<u64> {
        let start = self.at;
        while self.b.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        if matches!(self.b.get(self.at), Some(b'.' | b'e' | b'E')) {
            return Err(Some("offset and line are whole numbers"));
        }
        let digits = &self.b[start..self.at];
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(None);
        }
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or(Some("the number is too large"))
    }

    fn hex4(&mut self) -> Res<u32> {
        let h = self.b.get(self.at..self.at + 4).ok_or(None)?;
        self.at += 4;
        std::str::from_utf8(h)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or(None)
    }

    fn string(&mut self) -> Res<String> {
        if self.b.get(self.at) != Some(&b'"') {
            return Err(None);
        }
        self.at += 1;
        let mut s: Vec<u8> = Vec::new();
        loop {
            let c = *self.b.get(self.at).ok_or(None)?;
            self.at += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = *self.b.get(self.at).ok_or(None)?;
                    self.at += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(self.at..self.at + 2) != Some(b"\\u") {
                                    return Err(None);
                                }
                                self.at += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(None);
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or(None)?
                        }
                        _ => return Err(None),
                    };
                    let mut buf = [0u8; 4];
                    s.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return Err(None),
                c => s.push(c),
            }
        }
        String::from_utf8(s).map_err(|_| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Rewind {
        parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    #[test]
    fn positions_are_read() {
        let r = ok(r#"{"source": "/var/log/a.log", "offset": 0}"#);
        assert_eq!(
            (r.source.as_str(), r.to),
            ("/var/log/a.log", Position::Offset(0))
        );
        let r = ok(r#" { "line" : 17 , "source":"a\"b\\c\u00e9\ud83d\ude00" } "#);
        assert_eq!(
            (r.source.as_str(), r.to),
            ("a\"b\\cé😀", Position::Line(17))
        );
        let r = ok(r#"{"source":"x","time":"2026-12-05T07:00:00Z"}"#);
        assert_eq!(r.to, Position::Time("2026-12-05T07:00:00Z".into()));
        let r = ok(r#"{"source":"x","offset":18446744073709551615}"#);
        assert_eq!(r.to, Position::Offset(u64::MAX));
    }

    #[test]
    fn wrong_bodies_are_refused_without_echo() {
        for body in [
            "",
            "[]",
            "{",
            "{\"source\":\"x\",\"offset\":1",
            "{\"source\":\"x\",\"offset\":1} x",
            "{\"source\":\"x\",\"offset\":-1}",
            "{\"source\":\"x\",\"offset\":1.5}",
            "{\"source\":\"x\",\"offset\":01}",
            "{\"source\":\"x\",\"offset\":\"1\"}",
            "{\"source\":\"x\",\"offset\":99999999999999999999}",
            "{\"source\":\"x\",\"offset\":1,\"line\":2}",
            "{\"source\":\"x\",\"source\":\"y\",\"offset\":1}",
            "{\"source\":\"x\"}",
            "{\"offset\":1}",
            "{\"source\":\"\",\"offset\":1}",
            "{\"source\":7,\"offset\":1}",
            "{\"source\":\"x\",\"offset\":1,\"<script>\":1}",
            "{\"source\":\"x\",\"offset\":true}",
            "{\"source\":\"x\\q\",\"offset\":1}",
            "{\"source\":\"x\\ud800\",\"offset\":1}",
            "{\"source\":\"a\nb\",\"offset\":1}",
        ] {
            let e = parse(body.as_bytes()).expect_err(body);
            assert!(!e.contains("script"), "{e}");
        }
        assert!(parse(b"{\"source\":\"\xff\",\"offset\":1}").is_err());
    }
}
