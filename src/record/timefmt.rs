//! strptime-style timestamp parsing into [`Timestamp`]s, for parsers that read times out of
//! text (`types = { time = "timestamp:%d/%b/%Y:%H:%M:%S %z" }` in the `regex` cog).
//!
//! The format is compiled once; parsing a value then walks the compiled items without
//! allocating. Supported conversions:
//!
//! | spec | reads |
//! |---|---|
//! | `%Y` | year, 1 to 4 digits |
//! | `%y` | two-digit year: 69-99 are 19xx, 00-68 are 20xx (POSIX) |
//! | `%m` | month, 1 or 2 digits |
//! | `%b` `%h` `%B` | English month name, abbreviated or full, any case |
//! | `%a` `%A` | English weekday name, abbreviated or full, any case (see below) |
//! | `%d` | day of the month, 1 or 2 digits; `%e` also allows a leading space |
//! | `%j` | day of the year, 1 to 3 digits |
//! | `%H` `%M` `%S` | hour, minute, second (60 allowed for leap seconds) |
//! | `%f` | fraction of a second, 1 to 9 digits (an extension: write `%S.%f`) |
//! | `%z` | UTC offset: `+hhmm`, `+hh:mm`, `+hh` or `Z` |
//! | `%s` | seconds since the epoch, possibly negative |
//! | `%T` `%F` | `%H:%M:%S` and `%Y-%m-%d` |
//! | `%%` | a literal `%` |
//! | whitespace, `%n`, `%t` | any run of whitespace, possibly empty |
//!
//! Other characters must match exactly. Parts the format does not give default to the
//! epoch's (1970-01-01 00:00:00, UTC), as with strptime; a value with text left over after
//! the format, or with a field out of range (month 13, 31 April), is an error.
//!
//! A weekday (`%a`, `%A`) must agree with the date when the format gives the year (`%Y`,
//! `%y`, `%F`) or epoch seconds (`%s`, whose date is taken at the value's `%z` offset):
//! `Tue 2024-01-01` is an error, which catches a value read with the wrong format. Without
//! a year the weekday cannot be checked and is only read (`%a %b %e %T`, as in some
//! syslog-style lines).
//!
//! ```
//! use deadbeat::record::timefmt::TimeFormat;
//! let f = TimeFormat::new("%d/%b/%Y:%H:%M:%S %z").unwrap();
//! let t = f.parse(b"10/Oct/2000:13:55:36 -0700").unwrap();
//! assert_eq!(t.to_string(), "2000-10-10T13:55:36-07:00");
//! ```

use std::fmt;

use crate::record::Timestamp;

/// One compiled piece of a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Lit(u8),
    Space,
    Year,
    Year2,
    Month,
    MonthName,
    WeekDay,
    Day { space: bool },
    YearDay,
    Hour,
    Minute,
    Second,
    Frac,
    Zone,
    Epoch,
}

/// A compiled strptime-style format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFormat {
    text: String,
    items: Vec<Item>,
}

/// Why a value did not parse; static, so failing costs nothing until it is displayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeError(pub &'static str);

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TimeError {}

impl fmt::Display for TimeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TimeFormat {
    /// Compiles `format`; the error names the first unsupported conversion.
    pub fn new(format: &str) -> Result<TimeFormat, String> {
        let mut items = Vec::with_capacity(format.len());
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                if c.is_whitespace() {
                    if items.last() != Some(&Item::Space) {
                        items.push(Item::Space);
                    }
                } else {
                    let mut buf = [0; 4];
                    items.extend(c.encode_utf8(&mut buf).bytes().map(Item::Lit));
                }
                continue;
            }
            let spec = chars
                .next()
                .ok_or_else(|| format!("time format {format:?} ends with a lone '%'"))?;
            match spec {
                'Y' => items.push(Item::Year),
                'y' => items.push(Item::Year2),
                'm' => items.push(Item::Month),
                'b' | 'h' | 'B' => items.push(Item::MonthName),
                'a' | 'A' => items.push(Item::WeekDay),
                'd' => items.push(Item::Day { space: false }),
                'e' => items.push(Item::Day { space: true }),
                'j' => items.push(Item::YearDay),
                'H' => items.push(Item::Hour),
                'M' => items.push(Item::Minute),
                'S' => items.push(Item::Second),
                'f' => items.push(Item::Frac),
                'z' => items.push(Item::Zone),
                's' => items.push(Item::Epoch),
                'T' => items.extend([
                    Item::Hour,
                    Item::Lit(b':'),
                    Item::Minute,
                    Item::Lit(b':'),
                    Item::Second,
                ]),
                'F' => items.extend([
                    Item::Year,
                    Item::Lit(b'-'),
                    Item::Month,
                    Item::Lit(b'-'),
                    Item::Day { space: false },
                ]),
                '%' => items.push(Item::Lit(b'%')),
                'n' | 't' => items.push(Item::Space),
                other => {
                    return Err(format!(
                        "time format {format:?}: unsupported conversion %{other} \
                         (supported: %Y %y %m %b %h %B %a %A %d %e %j %H %M %S %f %z %s %T %F %% %n %t)"
                    ));
                }
            }
        }
        Ok(TimeFormat {
            text: format.to_string(),
            items,
        })
    }

    /// Parses the whole of `s`.
    pub fn parse(&self, s: &[u8]) -> Result<Timestamp, TimeError> {
        let mut p = Fields::default();
        let mut i = 0;
        for item in &self.items {
            match *item {
                Item::Lit(c) => {
                    if s.get(i) != Some(&c) {
                        return Err(TimeError("text does not match the format"));
                    }
                    i += 1;
                }
                Item::Space => {
                    while s.get(i).is_some_and(u8::is_ascii_whitespace) {
                        i += 1;
                    }
                }
                Item::Year => {
                    p.year = i64::from(digits(s, &mut i, 4, "expected a year")?);
                    p.has_year = true;
                }
                Item::Year2 => {
                    let y = i64::from(digits(s, &mut i, 2, "expected a two-digit year")?);
                    p.year = if y < 69 { 2000 + y } else { 1900 + y };
                    p.has_year = true;
                }
                Item::Month => p.month = digits(s, &mut i, 2, "expected a month")?,
                Item::MonthName => p.month = month_name(s, &mut i)?,
                Item::WeekDay => p.wday = Some(weekday_name(s, &mut i)?),
                Item::Day { space } => {
                    if space && s.get(i) == Some(&b' ') {
                        i += 1;
                    }
                    p.day = digits(s, &mut i, 2, "expected a day")?;
                }
                Item::YearDay => p.yday = Some(digits(s, &mut i, 3, "expected a day of year")?),
                Item::Hour => p.hour = digits(s, &mut i, 2, "expected an hour")?,
                Item::Minute => p.minute = digits(s, &mut i, 2, "expected minutes")?,
                Item::Second => p.second = digits(s, &mut i, 2, "expected seconds")?,
                Item::Frac => {
                    let start = i;
                    let mut nanos = 0u32;
                    while let Some(d) = s.get(i).filter(|b| b.is_ascii_digit()) {
                        if i - start < 9 {
                            nanos = nanos * 10 + u32::from(d - b'0');
                        }
                        i += 1;
                    }
                    if i == start {
                        return Err(TimeError("expected a fraction of a second"));
                    }
                    for _ in (i - start)..9 {
                        nanos *= 10;
                    }
                    p.nanos = nanos;
                }
                Item::Zone => p.offset = zone(s, &mut i)?,
                Item::Epoch => {
                    let neg = s.get(i) == Some(&b'-');
                    i += usize::from(neg);
                    let start = i;
                    let mut n: i64 = 0;
                    while let Some(d) = s.get(i).filter(|b| b.is_ascii_digit()) {
                        n = n
                            .checked_mul(10)
                            .and_then(|n| n.checked_add(i64::from(d - b'0')))
                            .ok_or(TimeError("epoch seconds out of range"))?;
                        i += 1;
                    }
                    if i == start {
                        return Err(TimeError("expected epoch seconds"));
                    }
                    p.epoch = Some(if neg { -n } else { n });
                }
            }
        }
        if i != s.len() {
            return Err(TimeError("text left over after the format"));
        }
        p.finish()
    }
}

/// What a format read, before it is turned into a timestamp.
struct Fields {
    year: i64,
    has_year: bool,
    month: u32,
    day: u32,
    yday: Option<u32>,
    /// Days since Sunday, when the format reads a weekday.
    wday: Option<u32>,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    offset: i16,
    epoch: Option<i64>,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            year: 1970,
            has_year: false,
            month: 1,
            day: 1,
            yday: None,
            wday: None,
            hour: 0,
            minute: 0,
            second: 0,
            nanos: 0,
            offset: 0,
            epoch: None,
        }
    }
}

impl Fields {
    fn finish(self) -> Result<Timestamp, TimeError> {
        if let Some(secs) = self.epoch {
            let local = secs.saturating_add(i64::from(self.offset) * 60);
            check_weekday(self.wday, local.div_euclid(86_400))?;
            return Ok(Timestamp::new(secs, self.nanos, self.offset));
        }
        if self.hour > 23 || self.minute > 59 || self.second > 60 {
            return Err(TimeError("time of day out of range"));
        }
        let days = match self.yday {
            Some(yd) => {
                let len = if is_leap(self.year) { 366 } else { 365 };
                if yd == 0 || yd > len {
                    return Err(TimeError("day of year out of range"));
                }
                days_from_civil(self.year, 1, 1) + i64::from(yd) - 1
            }
            None => {
                if !(1..=12).contains(&self.month) {
                    return Err(TimeError("month out of range"));
                }
                if self.day == 0 || self.day > month_len(self.year, self.month) {
                    return Err(TimeError("day out of range"));
                }
                days_from_civil(self.year, self.month, self.day)
            }
        };
        if self.has_year {
            check_weekday(self.wday, days)?;
        }
        let local = days * 86_400 + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
            - i64::from(self.offset) * 60;
        Ok(Timestamp::new(local, self.nanos, self.offset))
    }
}

/// Reads 1 to `max` ASCII digits.
#[inline]
fn digits(s: &[u8], i: &mut usize, max: usize, what: &'static str) -> Result<u32, TimeError> {
    let start = *i;
    let mut n = 0u32;
    while *i - start < max {
        match s.get(*i) {
            Some(d) if d.is_ascii_digit() => {
                n = n * 10 + u32::from(d - b'0');
                *i += 1;
            }
            _ => break,
        }
    }
    if *i == start {
        Err(TimeError(what))
    } else {
        Ok(n)
    }
}

const MONTHS: [&[u8]; 12] = [
    b"january",
    b"february",
    b"march",
    b"april",
    b"may",
    b"june",
    b"july",
    b"august",
    b"september",
    b"october",
    b"november",
    b"december",
];

/// Month (1-12) of a three-letter English abbreviation, any case.
#[inline]
pub fn month_abbrev(b: [u8; 3]) -> Option<u32> {
    let lower = [
        b[0].to_ascii_lowercase(),
        b[1].to_ascii_lowercase(),
        b[2].to_ascii_lowercase(),
    ];
    MONTHS
        .iter()
        .position(|m| m[..3] == lower)
        .map(|i| i as u32 + 1)
}

/// Reads an abbreviated or full English month name.
fn month_name(s: &[u8], i: &mut usize) -> Result<u32, TimeError> {
    const WHAT: TimeError = TimeError("expected a month name");
    let abbr = s.get(*i..*i + 3).ok_or(WHAT)?;
    let m = month_abbrev([abbr[0], abbr[1], abbr[2]]).ok_or(WHAT)?;
    *i += 3;
    // The full name is taken when the rest of it follows.
    let rest = &MONTHS[m as usize - 1][3..];
    if !rest.is_empty()
        && s.get(*i..*i + rest.len())
            .is_some_and(|r| r.eq_ignore_ascii_case(rest))
    {
        *i += rest.len();
    }
    Ok(m)
}

const WEEKDAYS: [&[u8]; 7] = [
    b"sunday",
    b"monday",
    b"tuesday",
    b"wednesday",
    b"thursday",
    b"friday",
    b"saturday",
];

/// Reads an abbreviated or full English weekday name, as days since Sunday.
fn weekday_name(s: &[u8], i: &mut usize) -> Result<u32, TimeError> {
    const WHAT: TimeError = TimeError("expected a weekday name");
    let abbr = s.get(*i..*i + 3).ok_or(WHAT)?;
    let d = WEEKDAYS
        .iter()
        .position(|d| d[..3].eq_ignore_ascii_case(abbr))
        .ok_or(WHAT)?;
    *i += 3;
    // The full name is taken when the rest of it follows.
    let rest = &WEEKDAYS[d][3..];
    if s.get(*i..*i + rest.len())
        .is_some_and(|r| r.eq_ignore_ascii_case(rest))
    {
        *i += rest.len();
    }
    Ok(d as u32)
}

/// Checks a weekday read from the text against the day it belongs to (days since
/// 1970-01-01, a Thursday).
fn check_weekday(wday: Option<u32>, days: i64) -> Result<(), TimeError> {
    match wday {
        Some(w) if i64::from(w) != (days + 4).rem_euclid(7) => {
            Err(TimeError("weekday does not match the date"))
        }
        _ => Ok(()),
    }
}

/// Reads `Z`, `+hh`, `+hhmm` or `+hh:mm` as minutes east of UTC.
fn zone(s: &[u8], i: &mut usize) -> Result<i16, TimeError> {
    const WHAT: TimeError = TimeError("expected a UTC offset such as +0200 or Z");
    let sign = match s.get(*i) {
        Some(b'Z' | b'z') => {
            *i += 1;
            return Ok(0);
        }
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(WHAT),
    };
    *i += 1;
    let two = |s: &[u8], at: usize| match s.get(at..at + 2) {
        Some([a, b]) if a.is_ascii_digit() && b.is_ascii_digit() => {
            Some(i16::from(a - b'0') * 10 + i16::from(b - b'0'))
        }
        _ => None,
    };
    let hh = two(s, *i).ok_or(WHAT)?;
    *i += 2;
    if s.get(*i) == Some(&b':') {
        *i += 1;
    }
    let mm = match two(s, *i) {
        Some(mm) => {
            *i += 2;
            mm
        }
        None if s.get(*i - 1) == Some(&b':') => return Err(WHAT),
        None => 0,
    };
    if hh > 23 || mm > 59 {
        return Err(TimeError("UTC offset out of range"));
    }
    Ok(sign * (hh * 60 + mm))
}

/// Whether `y` is a Gregorian leap year.
#[inline]
pub fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days in month `m` (1-12) of year `y`.
#[inline]
pub fn month_len(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Year, month (1-12) and day (1-31) of a day count since 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of the (March-based) year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`); month and day are not checked.
#[inline]
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    // Years start in March so the leap day is the last day of the year.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses the Common Log Format time `10/Oct/2000:13:55:36 -0700` (26 bytes exactly), the
/// hot path of the apache and nginx presets: fixed offsets, no format walk.
#[inline]
pub fn parse_clf(s: &[u8]) -> Option<Timestamp> {
    let s: &[u8; 26] = s.try_into().ok()?;
    let d2 = |a: u8, b: u8| -> Option<u32> {
        let (a, b) = (a.wrapping_sub(b'0'), b.wrapping_sub(b'0'));
        (a < 10 && b < 10).then(|| u32::from(a) * 10 + u32::from(b))
    };
    if s[2] != b'/'
        || s[6] != b'/'
        || s[11] != b':'
        || s[14] != b':'
        || s[17] != b':'
        || s[20] != b' '
    {
        return None;
    }
    let day = d2(s[0], s[1])?;
    let month = month_abbrev([s[3], s[4], s[5]])?;
    let year = d2(s[7], s[8])? * 100 + d2(s[9], s[10])?;
    let (hh, mm, ss) = (d2(s[12], s[13])?, d2(s[15], s[16])?, d2(s[18], s[19])?);
    let sign: i16 = match s[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (oh, om) = (d2(s[22], s[23])?, d2(s[24], s[25])?);
    let year = i64::from(year);
    if day == 0
        || day > month_len(year, month)
        || hh > 23
        || mm > 59
        || ss > 60
        || oh > 23
        || om > 59
    {
        return None;
    }
    let offset = sign * (oh * 60 + om) as i16;
    let secs = days_from_civil(year, month, day) * 86_400 + i64::from(hh * 3600 + mm * 60 + ss)
        - i64::from(offset) * 60;
    Some(Timestamp::new(secs, 0, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(fmt: &str, s: &str) -> Result<String, TimeError> {
        let f = TimeFormat::new(fmt).expect("format");
        f.parse(s.as_bytes()).map(|t| t.to_string())
    }

    #[test]
    fn common_formats() {
        let clf = "%d/%b/%Y:%H:%M:%S %z";
        assert_eq!(
            ts(clf, "10/Oct/2000:13:55:36 -0700").as_deref(),
            Ok("2000-10-10T13:55:36-07:00")
        );
        assert_eq!(
            ts("%FT%T%z", "2024-02-29T23:59:59+05:30").as_deref(),
            Ok("2024-02-29T23:59:59+05:30")
        );
        assert_eq!(
            ts("%FT%T.%f%z", "2024-02-29T23:59:59.25Z").as_deref(),
            Ok("2024-02-29T23:59:59.250Z")
        );
        assert_eq!(
            ts("%s", "1700000000").as_deref(),
            Ok("2023-11-14T22:13:20Z")
        );
        assert_eq!(ts("%s", "-1").as_deref(), Ok("1969-12-31T23:59:59Z"));
        assert_eq!(
            ts("%Y %j", "2024 366").as_deref(),
            Ok("2024-12-31T00:00:00Z")
        );
        assert_eq!(
            ts("%m/%e/%y %H:%M", "12/ 5/99 01:02").as_deref(),
            Ok("1999-12-05T01:02:00Z")
        );
        assert_eq!(
            ts("%B %d %Y", "february 3 2030").as_deref(),
            Ok("2030-02-03T00:00:00Z")
        );
        assert_eq!(ts("%y", "68").as_deref(), Ok("2068-01-01T00:00:00Z"));
        assert_eq!(
            ts("100%% %Y", "100% 2001").as_deref(),
            Ok("2001-01-01T00:00:00Z")
        );
    }

    #[test]
    fn rejects_bad_values_and_formats() {
        let clf = "%d/%b/%Y:%H:%M:%S %z";
        for bad in [
            "",
            "10/Oct/2000:13:55:36",
            "10/Oct/2000:13:55:36 -0700 extra",
            "31/Apr/2000:13:55:36 +0000",
            "29/Feb/2001:00:00:00 +0000",
            "10/Foo/2000:13:55:36 +0000",
            "10/Oct/2000:24:00:00 +0000",
            "10/Oct/2000:13:55:36 +2400",
            "10/Oct/2000:13:55:36 +07:",
        ] {
            assert!(ts(clf, bad).is_err(), "{bad:?}");
        }
        assert!(ts("%Y %j", "2023 366").is_err());
        assert!(ts("%s", "99999999999999999999").is_err());
        assert!(TimeFormat::new("%Q").is_err());
        assert!(TimeFormat::new("abc%").is_err());
    }

    #[test]
    fn weekdays() {
        // ctime / asctime, as in many application logs.
        let ctime = "%a %b %e %H:%M:%S %Y";
        assert_eq!(
            ts(ctime, "Mon Jan  1 00:00:00 2024").as_deref(),
            Ok("2024-01-01T00:00:00Z")
        );
        assert_eq!(
            ts("%A, %d %B %Y", "thursday, 29 February 2024").as_deref(),
            Ok("2024-02-29T00:00:00Z")
        );
        // %a and %A read either form.
        assert_eq!(
            ts("%A %F", "Sat 2000-01-01").as_deref(),
            Ok("2000-01-01T00:00:00Z")
        );
        assert_eq!(
            ts("%a %F", "SATURDAY 2000-01-01").as_deref(),
            Ok("2000-01-01T00:00:00Z")
        );
        assert_eq!(
            ts("%a %y%m%d", "Wed 691231").as_deref(),
            Ok("1969-12-31T00:00:00Z")
        );
        // The wrong day for the date is an error.
        assert_eq!(
            ts(ctime, "Tue Jan  1 00:00:00 2024"),
            Err(TimeError("weekday does not match the date"))
        );
        assert!(ts("%a", "Mo").is_err());
        assert!(ts("%a", "Xyz").is_err());
        // Epoch seconds: the weekday of the local date, at the offset given.
        assert_eq!(
            ts("%a %s %z", "Tue 1700000000 +0000").as_deref(),
            Ok("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            ts("%a %s %z", "Wed 1700000000 +0200").as_deref(),
            Ok("2023-11-15T00:13:20+02:00")
        );
        assert!(ts("%a %s %z", "Tue 1700000000 +0200").is_err());
        // Without a year the weekday is read, not checked.
        assert_eq!(
            ts("%a %b %e %T", "Sun Jan  1 00:00:00").as_deref(),
            Ok("1970-01-01T00:00:00Z")
        );
    }

    #[test]
    fn clf_fast_path_agrees_with_the_format() {
        let f = TimeFormat::new("%d/%b/%Y:%H:%M:%S %z").expect("format");
        for s in [
            "10/Oct/2000:13:55:36 -0700",
            "29/Feb/2024:00:00:00 +0000",
            "01/Jan/1970:00:00:00 +0100",
            "31/Dec/9999:23:59:59 -2359",
            "22/nov/2024:10:00:00 +0530",
        ] {
            assert_eq!(parse_clf(s.as_bytes()), f.parse(s.as_bytes()).ok(), "{s}");
        }
        for bad in [
            "10/Oct/2000:13:55:36 -07000",
            "1/Oct/2000:13:55:36 -0700",
            "10/Oct/2000:13:55:36 *0700",
            "31/Jun/2000:13:55:36 +0000",
            "10/Oct/2000 13:55:36 +0000",
        ] {
            assert_eq!(parse_clf(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn days_from_civil_round_trips() {
        for (y, m, d, days) in [
            (1970, 1, 1, 0),
            (2000, 3, 1, 11_017),
            (1969, 12, 31, -1),
            (1, 1, 1, -719_162),
        ] {
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
