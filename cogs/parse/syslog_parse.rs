//! `syslog_parse`: RFC 3164 and RFC 5424 syslog lines become fields.

use std::sync::{Arc, OnceLock};

use crate::engine::getset::Getter;
use crate::kit::on_error::{OnError, OnErrorSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::Cog;
use crate::record::timefmt::{civil_from_days, days_from_civil, month_len as days_in_month};
use crate::record::{Key, Map, Merge, Record, Timestamp, Value};
use crate::schema::{CogParams, ConfigError, Settings};

use super::common::{
    InputSettings, ParseCog, ParseError, Parser, input_key, record_parts, text, text_owned,
};

/// Parses syslog lines: RFC 5424 (`<165>1 2003-10-11T22:14:15.003Z host app 42 ID47
/// [exampleSDID@32473 iut="3"] msg`), RFC 3164 (`<34>Oct 11 22:14:15 host su[42]: msg`)
/// and the same without `<PRI>` as syslog daemons write files (`Dec 10 06:55:46 LabSZ
/// sshd[24200]: msg`).
///
/// Fields (absent when the line does not carry them, or carries the `-` nil value):
/// `facility` and `severity` as names (`auth`, `local7`...; `emerg` ... `debug`, the
/// names of `syslog(3)` and rsyslog) from the PRI, which must be 0..=191; `timestamp` as a
/// time; `host`; `app` (APP-NAME or the 3164 tag); `pid` (an integer, or the text when a
/// 5424 PROCID is not a number); `msgid`; `sd`, a map of SD-ID to a map of its parameters
/// (escapes `\"` `\\` `\]` decoded, duplicate SD-IDs: the last wins); and `message`, the
/// MSG part (a leading UTF-8 BOM removed), which replaces the input when `field` is
/// `message` and `target` is unset. Text that is not UTF-8 is kept as bytes.
///
/// RFC 3164 timestamps carry neither year nor zone: they are read as UTC in the current
/// year, except that December lines read in January belong to the previous year and
/// January lines read in December to the next. An RFC 3339 timestamp in place of the
/// 3164 one (rsyslog's high-precision format) is accepted too. A 3164 header whose first
/// word after the timestamp is a tag (`sshd[1]:` or `sshd:`) has no host. Octet-counted
/// framing must be removed before this cog.
///
/// Failures (`on_error`, with the byte offset): a bad PRI, a missing or invalid timestamp,
/// a 5424 header cut short, malformed structured data.
///
/// ```toml
/// [[train.cog]]
/// type = "syslog_parse"
/// field = "message"        # default
/// # target = "syslog"      # default: top level
/// on_error = "keep"
/// ```
///
/// From Rust, on any datum, with the getter of the text, a [`Merge`] storing the fields
/// and an [`OnError`]:
/// `SyslogParse::from_settings(&SyslogParseSettings { ..Default::default() }, input, output, on_error)`.
pub type SyslogParse<D> = ParseCog<D, SyslogParser>;

/// The current year and month, for RFC 3164 timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// The year, e.g. 2026.
    pub year: i64,
    /// The month, 1..=12.
    pub month: u32,
}

impl Now {
    /// The year and month (UTC) of a time in seconds since the epoch.
    pub fn from_secs(secs: i64) -> Now {
        let (year, month, _) = civil_from_days(secs.div_euclid(86_400));
        Now { year, month }
    }

    /// The year and month now (UTC).
    pub fn current() -> Now {
        Now::from_secs(Timestamp::now().secs)
    }
}

/// The parser of `syslog_parse`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyslogParser {
    /// Fixed "now" for tests; the clock when `None`.
    pub now: Option<Now>,
}

impl Parser for SyslogParser {
    fn parse(&mut self, input: &[u8], out: &mut Map) -> Result<(), ParseError> {
        parse(input, self.now.unwrap_or_else(Now::current), out)
    }
}

struct Keys {
    facility: Key,
    severity: Key,
    timestamp: Key,
    host: Key,
    app: Key,
    pid: Key,
    msgid: Key,
    sd: Key,
    message: Key,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        facility: Key::new("facility"),
        severity: Key::new("severity"),
        timestamp: Key::new("timestamp"),
        host: Key::new("host"),
        app: Key::new("app"),
        pid: Key::new("pid"),
        msgid: Key::new("msgid"),
        sd: Key::new("sd"),
        message: Key::new("message"),
    })
}

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Facility and severity names as shared text: a reference count per line instead of
/// two small allocations.
type Names = (Vec<Arc<str>>, Vec<Arc<str>>);

/// The facility and severity names, indexed by `PRI / 8` and `PRI % 8`.
pub(crate) fn pri_names() -> &'static Names {
    static NAMES: OnceLock<Names> = OnceLock::new();
    NAMES.get_or_init(|| {
        (
            FACILITIES.iter().map(|&n| Arc::from(n)).collect(),
            SEVERITIES.iter().map(|&n| Arc::from(n)).collect(),
        )
    })
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses one syslog line into `out`; `now` dates RFC 3164 timestamps.
pub fn parse(line: &[u8], now: Now, out: &mut Map) -> Result<(), ParseError> {
    let k = keys();
    let mut p = 0;
    let mut has_pri = false;
    if line.first() == Some(&b'<') {
        let (pri, after) = pri(line)?;
        let names = pri_names();
        out.insert(k.facility, Value::Shared(names.0[pri / 8].clone().into()));
        out.insert(k.severity, Value::Shared(names.1[pri % 8].clone().into()));
        p = after;
        has_pri = true;
    }
    if has_pri && line[p..].starts_with(b"1 ") {
        rfc5424(line, p + 2, out)
    } else {
        rfc3164(line, p, now, out)
    }
}

/// The PRI value and the position after `>`; the line starts with `<`.
pub(crate) fn pri(line: &[u8]) -> Result<(usize, usize), ParseError> {
    let mut v = 0usize;
    let mut i = 1;
    while let Some(&c @ b'0'..=b'9') = line.get(i) {
        if i > 3 {
            return Err(ParseError::at(1, "bad PRI: more than 3 digits"));
        }
        v = v * 10 + usize::from(c - b'0');
        i += 1;
    }
    if i == 1 || line.get(i) != Some(&b'>') {
        return Err(ParseError::at(i, "bad PRI: expected <digits>"));
    }
    if v > 191 {
        return Err(ParseError::owned(1, format!("bad PRI: {v} is above 191")));
    }
    Ok((v, i + 1))
}

/// The token from `p` to the next space (or the end) and the position of its end.
fn token(line: &[u8], p: usize) -> (&[u8], usize) {
    let rest = line.get(p..).unwrap_or_default();
    let n = rest.iter().position(|&c| c == b' ').unwrap_or(rest.len());
    (&rest[..n], p + n)
}

fn rfc5424(line: &[u8], mut p: usize, out: &mut Map) -> Result<(), ParseError> {
    let k = keys();
    const HEADER: [&str; 5] = ["timestamp", "host", "app", "procid", "msgid"];
    let mut parts: [&[u8]; 5] = [b""; 5];
    for (i, what) in HEADER.iter().enumerate() {
        let (t, end) = token(line, p);
        if t.is_empty() || end >= line.len() {
            return Err(ParseError::owned(
                p,
                format!("truncated RFC 5424 header: no {what} followed by a space"),
            ));
        }
        parts[i] = t;
        if i == 0 && t != b"-" {
            let ts = rfc3339(t).ok_or_else(|| ParseError::at(p, "invalid RFC 5424 timestamp"))?;
            out.insert(k.timestamp, Value::Time(ts));
        }
        p = end + 1;
    }
    let [_, host, app, procid, msgid] = parts;
    for (key, v) in [
        (k.host, host),
        (k.app, app),
        (k.pid, procid),
        (k.msgid, msgid),
    ] {
        if v != b"-" {
            out.insert(key, if key == k.pid { pid(v) } else { text(v) });
        }
    }
    match line.get(p) {
        Some(b'-') => p += 1,
        Some(b'[') => {
            let mut sd = Map::new();
            while line.get(p) == Some(&b'[') {
                p = sd_element(line, p, &mut sd)?;
            }
            out.insert(k.sd, Value::Map(sd));
        }
        _ => return Err(ParseError::at(p, "expected structured data ('-' or '[')")),
    }
    let msg = match line.get(p) {
        None => b"".as_slice(),
        Some(b' ') => &line[p + 1..],
        Some(_) => return Err(ParseError::at(p, "expected a space after structured data")),
    };
    out.insert(k.message, text(msg.strip_prefix(BOM).unwrap_or(msg)));
    Ok(())
}

/// Parses one `[SD-ID param="value" ...]` at `p` into `sd`; returns the position after `]`.
fn sd_element(line: &[u8], p: usize, sd: &mut Map) -> Result<usize, ParseError> {
    let start = p + 1;
    let mut i = start;
    while let Some(&c) = line.get(i) {
        if c == b' ' || c == b']' {
            break;
        }
        if !sd_name_byte(c) {
            return Err(ParseError::at(i, "invalid character in SD-ID"));
        }
        i += 1;
    }
    if i == start {
        return Err(ParseError::at(i, "empty SD-ID"));
    }
    let id = std::str::from_utf8(&line[start..i])
        .map_err(|_| ParseError::at(start, "SD-ID is not ASCII"))?;
    let mut params = Map::new();
    loop {
        match line.get(i) {
            None => return Err(ParseError::at(i, "unterminated structured data")),
            Some(b']') => {
                sd.insert(input_key(id, start)?, Value::Map(params));
                return Ok(i + 1);
            }
            Some(b' ') => i += 1,
            Some(_) => return Err(ParseError::at(i, "expected ' ' or ']' in structured data")),
        }
        let name_start = i;
        while let Some(&c) = line.get(i) {
            if !sd_name_byte(c) {
                break;
            }
            i += 1;
        }
        if i == name_start {
            return Err(ParseError::at(i, "empty SD-PARAM name"));
        }
        let name = std::str::from_utf8(&line[name_start..i])
            .map_err(|_| ParseError::at(name_start, "SD-PARAM name is not ASCII"))?;
        if line.get(i..i + 2) != Some(b"=\"".as_slice()) {
            return Err(ParseError::at(i, "expected =\" after SD-PARAM name"));
        }
        i += 2;
        let (value, after) = sd_value(line, i)?;
        params.insert(input_key(name, name_start)?, text_owned(value));
        i = after;
    }
}

/// PRINTUSASCII except `=`, space, `]` and `"` (RFC 5424 SD-NAME).
fn sd_name_byte(c: u8) -> bool {
    (33..=126).contains(&c) && !matches!(c, b'=' | b']' | b'"')
}

/// Decodes a PARAM-VALUE starting after its opening quote; returns it and the position
/// after the closing quote.
fn sd_value(line: &[u8], from: usize) -> Result<(Vec<u8>, usize), ParseError> {
    let rest = line.get(from..).unwrap_or_default();
    let mut v = Vec::new();
    let mut i = 0;
    loop {
        // Copy runs without quotes or backslashes whole.
        let Some(j) = rest
            .get(i..)
            .and_then(|r| r.iter().position(|&c| c == b'"' || c == b'\\'))
        else {
            return Err(ParseError::at(from, "unterminated SD-PARAM value"));
        };
        let j = i + j;
        v.extend_from_slice(&rest[i..j]);
        if rest[j] == b'"' {
            return Ok((v, from + j + 1));
        }
        match rest.get(j + 1) {
            Some(&c @ (b'"' | b'\\' | b']')) => {
                v.push(c);
                i = j + 2;
            }
            // RFC 5424 6.3.3: a backslash before anything else is kept as written.
            _ => {
                v.push(b'\\');
                i = j + 1;
            }
        }
    }
}

fn pid(b: &[u8]) -> Value {
    if !b.is_empty() && b.len() <= 18 && b.iter().all(u8::is_ascii_digit) {
        Value::Int(b.iter().fold(0i64, |n, &c| n * 10 + i64::from(c - b'0')))
    } else {
        text(b)
    }
}

fn rfc3164(line: &[u8], p: usize, now: Now, out: &mut Map) -> Result<(), ParseError> {
    let k = keys();
    let (ts, mut p) = match bsd_timestamp(line, p, now) {
        Some(r) => r,
        None => {
            let (t, end) = token(line, p);
            match rfc3339(t) {
                Some(ts) => (ts, end),
                None => return Err(ParseError::at(p, "expected a syslog timestamp")),
            }
        }
    };
    out.insert(k.timestamp, Value::Time(ts));
    match line.get(p) {
        Some(b' ') => p += 1,
        None => return Err(ParseError::at(p, "truncated after the timestamp")),
        Some(_) => return Err(ParseError::at(p, "expected a space after the timestamp")),
    }
    let (first, end) = token(line, p);
    let first_is_tag = first.ends_with(b":") || first.contains(&b'[');
    if !first_is_tag {
        if !first.is_empty() {
            out.insert(k.host, text(first));
        }
        p = (end + 1).min(line.len());
    }
    // The tag: up to `[`, `:` or a space; only a tag if `[` or `:` ends it.
    let rest = &line[p..];
    let n = rest
        .iter()
        .position(|&c| matches!(c, b' ' | b'[' | b':'))
        .unwrap_or(rest.len());
    let tag = &rest[..n];
    let mut msg_at = p;
    match rest.get(n) {
        Some(b'[') => {
            if let Some(close) = rest[n..].iter().position(|&c| c == b']') {
                let after = n + close + 1;
                if !tag.is_empty() {
                    out.insert(k.app, text(tag));
                }
                let id = &rest[n + 1..n + close];
                if !id.is_empty() {
                    out.insert(k.pid, pid(id));
                }
                msg_at = p + after;
                if rest.get(after) == Some(&b':') {
                    msg_at += 1;
                }
            }
        }
        Some(b':') => {
            if !tag.is_empty() {
                out.insert(k.app, text(tag));
            }
            msg_at = p + n + 1;
        }
        _ => {}
    }
    if msg_at > p && line.get(msg_at) == Some(&b' ') {
        msg_at += 1;
    }
    let msg = &line[msg_at.min(line.len())..];
    out.insert(k.message, text(msg.strip_prefix(BOM).unwrap_or(msg)));
    Ok(())
}

/// `Mmm dd hh:mm:ss` (day space-padded or not, an optional year after it) at `p`; the
/// timestamp and the position after it.
fn bsd_timestamp(line: &[u8], p: usize, now: Now) -> Option<(Timestamp, usize)> {
    let b = line.get(p..)?;
    let month = MONTHS
        .iter()
        .position(|m| b.get(..3) == Some(m.as_slice()))? as u32
        + 1;
    let mut i = 3;
    if b.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    if b.get(i) == Some(&b' ') {
        i += 1;
    }
    let (day, n) = digits(b, i, 2)?;
    i += n;
    if b.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    // Some devices (Cisco) put the year here.
    let mut year = None;
    if let Some((y, 4)) = digits(b, i, 4)
        && b.get(i + 4) == Some(&b' ')
    {
        year = Some(i64::from(y));
        i += 5;
    }
    let (h, m, s) = hms(b, i)?;
    i += 8;
    let year = year.unwrap_or(match (month, now.month) {
        (12, 1) => now.year - 1,
        (1, 12) => now.year + 1,
        _ => now.year,
    });
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + i64::from(h * 3600 + m * 60 + s);
    Some((Timestamp::new(secs, 0, 0), p + i))
}

/// Up to `max` (at least one) decimal digits at `i`: their value and count.
fn digits(b: &[u8], i: usize, max: usize) -> Option<(u32, usize)> {
    let mut v = 0u32;
    let mut n = 0;
    while n < max {
        match b.get(i + n) {
            Some(&c @ b'0'..=b'9') => v = v * 10 + u32::from(c - b'0'),
            _ => break,
        }
        n += 1;
    }
    (n > 0).then_some((v, n))
}

/// Exactly `n` digits at `i`.
fn fixed(b: &[u8], i: usize, n: usize) -> Option<u32> {
    match digits(b, i, n) {
        Some((v, got)) if got == n => Some(v),
        _ => None,
    }
}

/// `hh:mm:ss` at `i`, validated.
fn hms(b: &[u8], i: usize) -> Option<(u32, u32, u32)> {
    let h = fixed(b, i, 2)?;
    let m = fixed(b, i + 3, 2)?;
    let s = fixed(b, i + 6, 2)?;
    (b.get(i + 2) == Some(&b':') && b.get(i + 5) == Some(&b':') && h < 24 && m < 60 && s < 60)
        .then_some((h, m, s))
}

/// A whole RFC 3339 date-time: `YYYY-MM-DDThh:mm:ss[.frac](Z|+hh:mm|-hh:mm)`.
pub fn rfc3339(b: &[u8]) -> Option<Timestamp> {
    let year = i64::from(fixed(b, 0, 4)?);
    let month = fixed(b, 5, 2)?;
    let day = fixed(b, 8, 2)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't'))
    {
        return None;
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let (h, m, s) = hms(b, 11)?;
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(&c @ b'0'..=b'9') = b.get(i) {
            // Digits beyond nanoseconds are read and ignored.
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        if n < 9 {
            nanos *= 10u32.pow((9 - n) as u32);
        }
    }
    let offset_min: i32 = match b.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = fixed(b, i + 1, 2)?;
            let om = fixed(b, i + 4, 2)?;
            if b.get(i + 3) != Some(&b':') || oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let o = (oh * 60 + om) as i32;
            if sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    if i != b.len() {
        return None;
    }
    let local = days_from_civil(year, month, day) * 86_400 + i64::from(h * 3600 + m * 60 + s);
    Some(Timestamp::new(
        local - i64::from(offset_min) * 60,
        nanos,
        offset_min as i16,
    ))
}

impl<D: 'static> SyslogParse<D> {
    /// A `syslog_parse` made from its settings: `input` reads the text (what `field` names),
    /// `output` stores the fields (what `target` says), failures go to `on_error` (what
    /// `on_error` says); the format itself has no settings.
    pub fn from_settings(
        _: &SyslogParseSettings,
        input: Getter<D, [u8]>,
        output: Merge<D>,
        on_error: OnError<D>,
    ) -> Self {
        SyslogParse::new(input, output, on_error)
    }

    /// A `syslog_parse` cog reading `input`, merging with `output`.
    pub fn new(input: Getter<D, [u8]>, output: Merge<D>, on_error: OnError<D>) -> Self {
        ParseCog::with_parser(
            "syslog_parse",
            SyslogParser::default(),
            input,
            output,
            on_error,
        )
    }
}

/// The descriptor of `syslog_parse`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "syslog_parse",
    kind: CogKind::Transform,
    summary: "parses RFC 3164 / RFC 5424 syslog lines (PRI optional) into fields",
    params: SyslogParseSettings::PARAMS,
    fields: &[
        (
            "facility",
            "facility name from the PRI (kern, user, ..., local7)",
        ),
        (
            "severity",
            "severity name from the PRI (emerg, alert, crit, err, warning, notice, info, debug)",
        ),
        (
            "timestamp",
            "time of the event (RFC 3164: UTC, current year with rollover)",
        ),
        ("host", "HOSTNAME"),
        ("app", "APP-NAME, or the RFC 3164 tag"),
        ("pid", "PROCID as an integer (text if not a number)"),
        ("msgid", "MSGID (RFC 5424)"),
        (
            "sd",
            "structured data: map of SD-ID to map of parameters (RFC 5424)",
        ),
        ("message", "the MSG part, BOM removed"),
    ],
    build,
};

crate::settings! {
    /// Settings of `syslog_parse`.
    pub struct SyslogParseSettings {
        /// Where the text is read and the fields go.
        #[setting(flatten)]
        input: InputSettings,
        /// What to do with a line that does not parse.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: SyslogParseSettings = p.settings()?;
    let (input, output, on_error) = record_parts(&s.input, &s.on_error, p, cx)?;
    Ok(Box::new(SyslogParse::from_settings(
        &s, input, output, on_error,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Now = Now {
        year: 2025,
        month: 6,
    };

    fn sys_at(now: Now, line: &[u8]) -> Result<String, ParseError> {
        let mut m = Map::new();
        parse(line, now, &mut m)?;
        let mut out = Vec::new();
        m.write_json(&mut out);
        Ok(String::from_utf8(out).unwrap())
    }

    fn sys(line: &[u8]) -> Result<String, ParseError> {
        sys_at(NOW, line)
    }

    #[test]
    fn rfc5424_examples() {
        assert_eq!(
            sys(b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xEF\xBB\xBF'su root' failed for lonvick on /dev/pts/8").unwrap(),
            r#"{"facility":"auth","severity":"crit","timestamp":"2003-10-11T22:14:15.003Z","host":"mymachine.example.com","app":"su","msgid":"ID47","message":"'su root' failed for lonvick on /dev/pts/8"}"#
        );
        assert_eq!(
            sys(b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.").unwrap(),
            r#"{"facility":"local4","severity":"notice","timestamp":"2003-08-24T05:14:15.000003-07:00","host":"192.0.2.1","app":"myproc","pid":8710,"message":"%% It's time to make the do-nuts."}"#
        );
        assert_eq!(
            sys(br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#).unwrap(),
            r#"{"facility":"local4","severity":"notice","timestamp":"2003-10-11T22:14:15.003Z","host":"mymachine.example.com","app":"evntslog","msgid":"ID47","sd":{"exampleSDID@32473":{"iut":"3","eventSource":"Application","eventID":"1011"},"examplePriority@32473":{"class":"high"}},"message":""}"#
        );
    }

    #[test]
    fn rfc5424_escapes_and_nil() {
        assert_eq!(
            sys(br#"<14>1 - - - abc - [x@1 a="q\"b\\s\]e\n"] m"#).unwrap(),
            r#"{"facility":"user","severity":"info","pid":"abc","sd":{"x@1":{"a":"q\"b\\s]e\\n"}},"message":"m"}"#
        );
    }

    #[test]
    fn rfc3164_examples() {
        assert_eq!(
            sys(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8")
                .unwrap(),
            r#"{"facility":"auth","severity":"crit","timestamp":"2025-10-11T22:14:15Z","host":"mymachine","app":"su","message":"'su root' failed for lonvick on /dev/pts/8"}"#
        );
        assert_eq!(
            sys(b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!").unwrap(),
            r#"{"facility":"user","severity":"notice","timestamp":"2025-02-05T17:32:18Z","host":"10.0.0.99","message":"Use the BFG!"}"#
        );
        assert_eq!(
            sys(b"<30>Jun  1 00:00:00 systemd[1]: Started x.").unwrap(),
            r#"{"facility":"daemon","severity":"info","timestamp":"2025-06-01T00:00:00Z","app":"systemd","pid":1,"message":"Started x."}"#
        );
    }

    #[test]
    fn no_pri_openssh() {
        assert_eq!(
            sys(b"Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186")
                .unwrap(),
            r#"{"timestamp":"2025-12-10T06:55:46Z","host":"LabSZ","app":"sshd","pid":24200,"message":"Invalid user webmaster from 173.234.31.186"}"#
        );
        assert_eq!(
            sys(b"2024-03-01T10:00:00.5+01:00 web1 nginx: up").unwrap(),
            r#"{"timestamp":"2024-03-01T10:00:00.500+01:00","host":"web1","app":"nginx","message":"up"}"#
        );
        assert_eq!(
            sys(b"Mar  1 2024 10:00:00 rtr1 %LINK-3-UPDOWN: down").unwrap(),
            r#"{"timestamp":"2024-03-01T10:00:00Z","host":"rtr1","app":"%LINK-3-UPDOWN","message":"down"}"#
        );
    }

    #[test]
    fn year_rollover() {
        let jan = Now {
            year: 2026,
            month: 1,
        };
        assert!(
            sys_at(jan, b"Dec 31 23:59:59 h a: x")
                .unwrap()
                .contains("2025-12-31T23:59:59Z")
        );
        assert!(
            sys_at(jan, b"Jan  1 00:00:01 h a: x")
                .unwrap()
                .contains("2026-01-01")
        );
        let dec = Now {
            year: 2025,
            month: 12,
        };
        assert!(
            sys_at(dec, b"Jan  1 00:00:01 h a: x")
                .unwrap()
                .contains("2026-01-01")
        );
        assert!(sys_at(NOW, b"Feb 29 00:00:00 h a: x").is_err());
        let leap = Now {
            year: 2024,
            month: 3,
        };
        assert!(sys_at(leap, b"Feb 29 00:00:00 h a: x").is_ok());
        assert_eq!(
            Now::from_secs(0),
            Now {
                year: 1970,
                month: 1
            }
        );
        assert_eq!(
            Now::from_secs(1_767_225_599),
            Now {
                year: 2025,
                month: 12
            }
        );
    }

    #[test]
    fn malformed() {
        for (line, offset) in [
            (&b"<999>1 - - - - - -"[..], 1),
            (b"<1000>x", 1),
            (b"<>x", 1),
            (b"<13", 3),
            (b"<34>Oct 11 22:14", 4),
            (b"<34>1 2003-10-11T22:14:15Z host", 27),
            (b"<34>1 2003-13-11T22:14:15Z h a p m -", 6),
            (b"<34>1 - h a p m [x a=\"1\"", 24),
            (b"<34>1 - h a p m [x a=1]", 20),
            (b"<34>1 - h a p m [] m", 17),
            (b"<34>1 - h a p m x", 16),
            (b"<34>1 - h a p m -x", 17),
            (b"", 0),
            (b"hello world", 0),
            (b"Dec 10 06:55:46", 15),
            (b"Dec 32 06:55:46 h x", 0),
            (b"Dec 10 25:55:46 h x", 0),
        ] {
            let e = sys(line).expect_err(&String::from_utf8_lossy(line));
            assert_eq!(
                e.offset(),
                Some(offset),
                "{e} for {:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert!(
            sys(b"<999>x")
                .unwrap_err()
                .to_string()
                .contains("above 191")
        );
    }

    #[test]
    fn odd_but_accepted() {
        assert!(
            sys(b"<0>Dec 10 06:55:46 h")
                .unwrap()
                .contains(r#""host":"h","message":"""#)
        );
        assert!(
            sys(b"<191>1 - - - - - -")
                .unwrap()
                .contains(r#""facility":"local7","severity":"debug""#)
        );
        assert!(
            sys(b"Dec 10 06:55:46 h a[x: m")
                .unwrap()
                .contains(r#""message":"a[x: m""#)
        );
        assert!(
            sys(b"Dec 10 06:55:46 h \xff[1]: \xfe")
                .unwrap()
                .contains("\u{fffd}")
        );
        assert!(
            sys(b"Dec 10 06:55:46 h a[]: \xEF\xBB\xBFm")
                .unwrap()
                .contains(r#""app":"a","message":"m""#)
        );
    }

    #[test]
    fn openssh_sample_file() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/OpenSSH_2k.log");
        let Ok(data) = std::fs::read(&path) else {
            eprintln!("skipped: {} is absent", path.display());
            return;
        };
        let mut m = Map::new();
        let mut n = 0;
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            parse(line, NOW, &mut m).unwrap_or_else(|e| {
                panic!("{e}: {}", String::from_utf8_lossy(line));
            });
            assert!(m.get(keys().host).is_some() && m.get(keys().app).is_some());
            m.clear();
            n += 1;
        }
        assert_eq!(n, 2000);
    }
}
