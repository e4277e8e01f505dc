//! The event time of a datum, as the cogs that take a `time` key read it (`window`,
//! `threshold`, `dedup`, `throttle`): a timestamp, epoch seconds (an integer or a float),
//! RFC 3339 text, or text in `time_format` (a strftime format, see
//! [`crate::record::timefmt`]; a format without a year takes the wall clock's year, or the
//! year before when that would put the time more than a day ahead). `time = "arrival"`
//! takes the wall clock when the datum arrives. Times are Unix milliseconds, years 1 to
//! 9999 (beyond, a time is refused, so that arithmetic on it never overflows).

use std::cell::Cell;
use std::fmt;

use crate::engine::cog::Out;
use crate::engine::escapement::Ctx;
use crate::engine::getset::Getter;
use crate::kit::BuildCx;
use crate::kit::on_error::{self, OnError, OnErrorSettings};
use crate::record::timefmt::{TimeFormat, civil_from_days, days_from_civil};
use crate::record::{Path, Record, Timestamp, Value, field};
use crate::schema::{CogParams, ConfigError, SettingError};

/// Milliseconds of a timestamp.
pub fn ts_ms(t: &Timestamp) -> i64 {
    t.secs
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos / 1_000_000))
}

/// A timestamp (UTC) of milliseconds.
pub fn ms_ts(ms: i64) -> Timestamp {
    Timestamp::new(
        ms.div_euclid(1000),
        (ms.rem_euclid(1000) as u32) * 1_000_000,
        0,
    )
}

/// The earliest event time taken: 0001-01-01T00:00:00Z, in milliseconds.
const MIN_TIME: i64 = -62_135_596_800_000;
/// The latest: 9999-12-31T23:59:59.999Z.
const MAX_TIME: i64 = 253_402_300_799_999;

/// Why a datum has no event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeError {
    /// The time field is missing.
    Missing(String),
    /// The time field holds what is not a time.
    Unparsable(String, String),
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeError::Missing(field) => write!(f, "no time field `{field}`"),
            TimeError::Unparsable(field, why) => {
                write!(f, "time field `{field}` is not a time: {why}")
            }
        }
    }
}

/// RFC 3339 with and without a fraction, `T` or a space between date and time.
struct Rfc3339 {
    forms: [TimeFormat; 4],
}

fn rfc3339() -> &'static Rfc3339 {
    static R: std::sync::OnceLock<Option<Rfc3339>> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        Some(Rfc3339 {
            forms: [
                TimeFormat::new("%Y-%m-%dT%H:%M:%S%z").ok()?,
                TimeFormat::new("%Y-%m-%dT%H:%M:%S.%f%z").ok()?,
                TimeFormat::new("%Y-%m-%d %H:%M:%S%z").ok()?,
                TimeFormat::new("%Y-%m-%d %H:%M:%S.%f%z").ok()?,
            ],
        })
    })
    .as_ref()
    .unwrap_or_else(|| unreachable!("the RFC 3339 formats are valid"))
}

pub(crate) fn parse_rfc3339(s: &[u8]) -> Option<Timestamp> {
    let r = rfc3339();
    let t = s.get(10).copied();
    let frac = s.contains(&b'.');
    let i = usize::from(t == Some(b' ')) * 2 + usize::from(frac);
    r.forms[i].parse(s).ok()
}

/// Whether a strftime format gives the year (or the whole date, as epoch seconds do).
pub(crate) fn format_has_year(f: &str) -> bool {
    ["%Y", "%y", "%F", "%s"].iter().any(|x| f.contains(x))
}

/// Moves a time parsed without a year (so in 1970) to the year of `now_ms`, or the year
/// before when that puts it more than a day after `now_ms`.
pub(crate) fn infer_year(ms: i64, now_ms: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    let (days, rest) = (ms.div_euclid(DAY), ms.rem_euclid(DAY));
    let (_, m, d) = civil_from_days(days);
    let (year, _, _) = civil_from_days(now_ms.div_euclid(DAY));
    let at = |y: i64| days_from_civil(y, m, d) * DAY + rest;
    let this = at(year);
    if this > now_ms + DAY {
        at(year - 1)
    } else {
        this
    }
}

/// How a cog reads the event time, made from its `time` and `time_format` settings.
#[derive(Debug)]
pub struct EventTime {
    source: Source,
}

#[derive(Debug)]
enum Source {
    Arrival,
    Field {
        path: Path,
        /// A lookup's hint for `path` (for callers that look fields up with hints).
        hint: Cell<u32>,
        name: String,
        format: Option<TimeFormat>,
        /// The format gives no year: the wall clock's is taken.
        yearless: bool,
        /// A yearless format read with a leap year before it (`%Y ` + format), so that
        /// February 29 parses (the format alone reads the date in 1970).
        leap: Option<TimeFormat>,
    },
}

impl EventTime {
    /// The time `time` names: `"arrival"` (the wall clock; no `time_format` then) or a
    /// field's dotted path, its text read with `time_format` if one is given.
    pub fn new(time: &str, time_format: &str) -> Result<EventTime, SettingError> {
        if time == "arrival" {
            if !time_format.is_empty() {
                return Err(SettingError::new(
                    "time_format",
                    "time = \"arrival\" takes the wall clock: no time_format",
                ));
            }
            return Ok(EventTime {
                source: Source::Arrival,
            });
        }
        let format =
            if time_format.is_empty() {
                None
            } else {
                Some(TimeFormat::new(time_format).map_err(|e| {
                    SettingError::new("time_format", format!("{time_format:?}: {e}"))
                })?)
            };
        let yearless = format.is_some() && !format_has_year(time_format);
        // A weekday would be checked against the year put before: not for those.
        let leap = (yearless && !time_format.contains("%a") && !time_format.contains("%A"))
            .then(|| TimeFormat::new(&format!("%Y {time_format}")).ok())
            .flatten();
        let path =
            Path::parse(time).map_err(|e| SettingError::new("time", format!("{time:?}: {e}")))?;
        Ok(EventTime {
            source: Source::Field {
                path,
                hint: Cell::new(0),
                name: time.to_string(),
                format,
                yearless,
                leap,
            },
        })
    }

    /// Whether time is the wall clock at arrival.
    pub fn is_arrival(&self) -> bool {
        matches!(self.source, Source::Arrival)
    }

    /// The field holding the time and a lookup hint for it; `None` for arrival time.
    pub fn field(&self) -> Option<(&Path, &Cell<u32>)> {
        match &self.source {
            Source::Arrival => None,
            Source::Field { path, hint, .. } => Some((path, hint)),
        }
    }

    /// The time of a datum whose time field holds `v` (`None`: it has none), `now_ms` being
    /// the wall clock (Unix milliseconds): the arrival time, and the year of yearless
    /// formats.
    #[inline]
    pub fn read(&self, v: Option<&Value>, now_ms: i64) -> Result<i64, TimeError> {
        // A timestamp (what parsers make of a time) taken at once; the rest below.
        if let Some(Value::Time(t)) = v
            && (MIN_TIME..=MAX_TIME).contains(&ts_ms(t))
        {
            return Ok(ts_ms(t));
        }
        let t = self.read_any(v, now_ms)?;
        if (MIN_TIME..=MAX_TIME).contains(&t) {
            Ok(t)
        } else {
            let name = match &self.source {
                Source::Field { name, .. } => name.clone(),
                Source::Arrival => "arrival".to_string(),
            };
            Err(TimeError::Unparsable(
                name,
                "out of range (years 1 to 9999)".to_string(),
            ))
        }
    }

    fn read_any(&self, v: Option<&Value>, now_ms: i64) -> Result<i64, TimeError> {
        let (name, format, yearless, leap) = match &self.source {
            Source::Arrival => return Ok(now_ms),
            Source::Field {
                name,
                format,
                yearless,
                leap,
                ..
            } => (name, format, *yearless, leap),
        };
        let Some(v) = v else {
            return Err(TimeError::Missing(name.clone()));
        };
        let bad = |why: &str| TimeError::Unparsable(name.clone(), why.to_string());
        match v {
            Value::Time(t) => Ok(ts_ms(t)),
            Value::Int(i) => Ok(i.saturating_mul(1000)),
            Value::Float(f) if f.is_finite() => Ok((f * 1000.0) as i64),
            other => {
                let Some(text) = other.as_bytes() else {
                    return Err(bad(&format!("it holds {}", other.type_name())));
                };
                match format {
                    Some(f) => {
                        let mut with_year = [0u8; 128];
                        let parsed = match leap {
                            Some(l) if text.len() + 5 <= with_year.len() => {
                                with_year[..5].copy_from_slice(b"2000 ");
                                with_year[5..5 + text.len()].copy_from_slice(text);
                                l.parse(&with_year[..5 + text.len()])
                            }
                            _ => f.parse(text),
                        };
                        let t = parsed.map_err(|e| {
                            bad(&format!(
                                "{:?} does not match time_format: {e}",
                                String::from_utf8_lossy(text)
                            ))
                        })?;
                        let t = ts_ms(&t);
                        Ok(if yearless { infer_year(t, now_ms) } else { t })
                    }
                    None => parse_rfc3339(text).map(|t| ts_ms(&t)).ok_or_else(|| {
                        bad(&format!(
                            "{:?} is no RFC 3339 time (give time_format)",
                            String::from_utf8_lossy(text)
                        ))
                    }),
                }
            }
        }
    }
}

/// The event time of a datum of any type, for cogs that read it through a getter: the
/// parsed `time` setting and, unless time is the arrival time, the getter of its field.
#[derive(Debug)]
pub struct TimeOf<D> {
    time: EventTime,
    get: Option<Getter<D, Value>>,
}

impl<D> TimeOf<D> {
    /// Arrival time (the wall clock).
    pub fn arrival() -> TimeOf<D> {
        TimeOf {
            time: EventTime {
                source: Source::Arrival,
            },
            get: None,
        }
    }

    /// The time `time` says, read through `get` when it names a field (`get` is unused for
    /// arrival time); an error if a field is named and no getter is given.
    pub fn new(time: EventTime, get: Option<Getter<D, Value>>) -> Result<TimeOf<D>, SettingError> {
        if !time.is_arrival() && get.is_none() {
            return Err(SettingError::new(
                "time",
                "names a field: the cog needs a getter of that field",
            ));
        }
        Ok(TimeOf { time, get })
    }

    /// Whether time is the wall clock at arrival.
    pub fn is_arrival(&self) -> bool {
        self.time.is_arrival()
    }

    /// The time of `d` (Unix milliseconds), `now_ms` being the wall clock.
    #[inline]
    pub fn of(&self, d: &D, now_ms: i64) -> Result<i64, TimeError> {
        let v = match &self.get {
            Some(g) if !self.time.is_arrival() => g.get(d),
            _ => None,
        };
        self.time.read(v, now_ms)
    }
}

/// The time of a cog over any datum that takes `time` (`dedup`, `throttle`): the arrival
/// time, or the event time in a field once the field's getter is bound, with where data
/// lacking one go (`on_error`).
pub struct CogTime<D> {
    bound: Bound<D>,
}

enum Bound<D> {
    Arrival,
    /// A field is named; its getter is still to come.
    Unbound(EventTime),
    Field(TimeOf<D>, OnError<D>),
}

impl<D> fmt::Debug for CogTime<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.bound {
            Bound::Arrival => "arrival",
            Bound::Unbound(_) => "event time, no getter",
            Bound::Field(..) => "event time",
        };
        f.write_str(kind)
    }
}

impl<D> CogTime<D> {
    /// The time `time` and `time_format` name (see [`EventTime::new`]).
    pub fn new(time: &str, time_format: &str) -> Result<CogTime<D>, SettingError> {
        let t = EventTime::new(time, time_format)?;
        Ok(CogTime {
            bound: if t.is_arrival() {
                Bound::Arrival
            } else {
                Bound::Unbound(t)
            },
        })
    }

    /// Reads the named field through `get`, data without a time going per `on_error`
    /// (nothing for arrival time).
    pub fn bind(
        &mut self,
        get: Getter<D, Value>,
        on_error: OnError<D>,
    ) -> Result<(), SettingError> {
        if let Bound::Unbound(t) = std::mem::replace(&mut self.bound, Bound::Arrival) {
            self.bound = Bound::Field(TimeOf::new(t, Some(get))?, on_error);
        }
        Ok(())
    }

    /// Whether time is an event time (a field), rather than the arrival time.
    pub fn is_event_time(&self) -> bool {
        !matches!(self.bound, Bound::Arrival)
    }

    /// The name of a state file's format: `arrival`'s or `event_time`'s, as this time is
    /// (times saved by one are not times of the other).
    pub fn state_format(&self, arrival: &'static str, event_time: &'static str) -> &'static str {
        if self.is_event_time() {
            event_time
        } else {
            arrival
        }
    }

    /// At start: an error if a field is named and no getter was bound.
    pub fn check(&self, cog: &str) -> Result<(), String> {
        match self.bound {
            Bound::Unbound(_) => Err(format!(
                "{cog}: `time` names a field, but no getter of it was given (with_event_time)"
            )),
            _ => Ok(()),
        }
    }
}

impl<D: 'static> CogTime<D> {
    /// `d` and its time (`now_ms` for arrival time), or `None` when it has none: then it
    /// went per `on_error` (counted and logged as a failure of `cog`).
    #[inline]
    pub fn read(
        &mut self,
        d: D,
        now_ms: i64,
        cog: &str,
        out: &mut Out<D>,
        cx: &mut Ctx<'_>,
    ) -> Option<(D, i64)> {
        match &mut self.bound {
            Bound::Field(time, on_error) => match time.of(&d, now_ms) {
                Ok(t) => Some((d, t)),
                Err(e) => {
                    on_error.fail(d, cog, &e, out, cx);
                    None
                }
            },
            _ => Some((d, now_ms)),
        }
    }
}

/// For a cog over records: binds the field `time` names (if it names one) and the
/// cog's `on_error`.
pub fn bind_record_time(
    cog_time: &mut CogTime<Record>,
    time: &str,
    on_error: &OnErrorSettings,
    p: &CogParams<'_>,
    bx: &BuildCx<'_>,
) -> Result<(), ConfigError> {
    if !cog_time.is_event_time() {
        return Ok(());
    }
    let on_error = on_error::from_settings(on_error, p, bx)?;
    let get = field(time)
        .map_err(|e| p.error("time", format!("{time:?}: {e}")))?
        .get;
    cog_time.bind(get, on_error).map_err(|e| p.setting_error(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yearless_times_take_the_wall_clock_year_or_the_one_before() {
        let f = TimeFormat::new("%b %e %H:%M:%S").unwrap();
        let t = ts_ms(&f.parse(b"Mar  5 10:00:00").unwrap());
        // Now: 2026-06-01.
        let now = days_from_civil(2026, 6, 1) * 86_400_000;
        assert_eq!(
            ms_ts(infer_year(t, now)).to_string(),
            "2026-03-05T10:00:00Z"
        );
        // December seen in January: last year's.
        let t = ts_ms(&f.parse(b"Dec 31 23:59:59").unwrap());
        let now = days_from_civil(2027, 1, 1) * 86_400_000;
        assert_eq!(
            ms_ts(infer_year(t, now)).to_string(),
            "2026-12-31T23:59:59Z"
        );
        // February 29 of a leap year (a yearless format is read in a leap year).
        let l = TimeFormat::new("%Y %b %e %H:%M:%S").unwrap();
        let t = ts_ms(&l.parse(b"2000 Feb 29 12:00:00").unwrap());
        let now = days_from_civil(2028, 3, 1) * 86_400_000;
        assert_eq!(
            ms_ts(infer_year(t, now)).to_string(),
            "2028-02-29T12:00:00Z"
        );
        assert!(!format_has_year("%b %e %H:%M:%S"));
        assert!(format_has_year("%d/%b/%Y:%H:%M:%S %z"));
    }

    #[test]
    fn rfc3339_text_parses_with_or_without_fraction() {
        for (s, want) in [
            ("2024-11-22T10:00:00Z", "2024-11-22T10:00:00Z"),
            (
                "2024-11-22T10:00:00.250+01:00",
                "2024-11-22T10:00:00.250+01:00",
            ),
            ("2024-11-22 10:00:00Z", "2024-11-22T10:00:00Z"),
        ] {
            assert_eq!(parse_rfc3339(s.as_bytes()).unwrap().to_string(), want);
        }
        assert!(parse_rfc3339(b"yesterday").is_none());
    }

    #[test]
    fn a_field_time_reads_timestamps_numbers_and_text_and_says_why_not() {
        let t = EventTime::new("t", "").unwrap();
        assert!(!t.is_arrival());
        assert_eq!(t.read(Some(&Value::Int(15)), 0), Ok(15_000));
        assert_eq!(t.read(Some(&Value::Float(1.5)), 0), Ok(1_500));
        assert_eq!(
            t.read(Some(&Value::Str("1970-01-01T00:00:02Z".into())), 0),
            Ok(2_000)
        );
        assert_eq!(t.read(None, 0), Err(TimeError::Missing("t".into())));
        assert!(matches!(
            t.read(Some(&Value::Str("soon".into())), 0),
            Err(TimeError::Unparsable(..))
        ));
        assert!(matches!(
            t.read(Some(&Value::Int(i64::MAX / 1000)), 0),
            Err(TimeError::Unparsable(..))
        ));
        let a = EventTime::new("arrival", "").unwrap();
        assert!(a.is_arrival());
        assert_eq!(a.read(Some(&Value::Int(15)), 7), Ok(7));
        assert!(EventTime::new("arrival", "%s").is_err());
        assert!(EventTime::new("t", "%Q").is_err());
    }

    #[test]
    fn a_field_time_without_a_getter_is_refused() {
        let t = EventTime::new("t", "").unwrap();
        assert!(TimeOf::<u32>::new(t, None).is_err());
        let get = Getter::new(|v: &Value| Some(v));
        let t = TimeOf::new(EventTime::new("t", "").unwrap(), Some(get)).unwrap();
        assert_eq!(t.of(&Value::Int(3), 0), Ok(3_000));
    }
}
