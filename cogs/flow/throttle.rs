//! `throttle`: lets at most `rate` data a second per key through, with bursts.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::kit::event_time::{CogTime, bind_record_time};
use crate::kit::on_error::{OnError, OnErrorSettings};

use crate::engine::mailbox::Mailbox;
use crate::kit::keyed::{Keyed, StateCodec, cap_key, state_file};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Path, Record, Value, id_field};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::dedup::{KeyFn, check_max_bytes, key_len, record_key};
use super::setting_error;

/// A token bucket per key: each key's bucket holds up to `burst` tokens and fills at `rate`
/// tokens a second; a datum takes one token to pass. Time is the arrival time (the event
/// loop's clock) by default, or with `time = "FIELD"` the event's own time (a timestamp,
/// epoch seconds, RFC 3339 or `time_format` text, as `window` reads it): a bucket then
/// refills for the event time that passed between its data, so replaying a file at full
/// speed passes what reading it live passed, and a time going back refills nothing. A datum
/// whose time is missing or unparsable goes per `on_error` (counted, logged with its id).
/// A datum that finds its bucket empty is excess: with `on_excess = "drop"` it is dropped,
/// acknowledged (so the supply's checkpoint moves past it) and counted as dropped; with
/// `on_excess = "train:NAME"` it is sent to the head of train NAME (as `route` does), which
/// acknowledges it when it writes it. The key is made of the fields in `fields` (a datum
/// lacking one of them is not throttled); without `fields` all data share one bucket.
///
/// At most `max_keys` buckets are kept: when full, the bucket used longest ago is forgotten
/// (counted and logged, at most 10 lines a second); a forgotten key starts again with a
/// full bucket. The keys' bytes are bounded by `max_bytes` in total, a key longer than 256
/// bytes counting 257 (its head and a 128-bit digest of all of it, as `dedup` does).
///
/// With `persist = true` every bucket (its tokens and the time of its last refill) is saved
/// under `[state] dir` at shutdown (file `throttle-TRAIN-COG-HASH.state`) and loaded at
/// start; with arrival time it is refilled for the time the daemon was stopped (with event
/// time, for the event time to come): a restart does not hand every key a full bucket. A
/// file saved with the other kind of time is reported and ignored. A bucket saved with a time ahead of the clock (the wall
/// clock was set back) gets no tokens for it; the loop's clock never runs back, and a
/// bucket never refills for time before its last refill, so no clock mints tokens. A state
/// file that cannot be read is logged and ignored.
///
/// ```toml
/// [[train.cog]]
/// type = "throttle"
/// fields = ["src_ip"]
/// rate = 10.0      # per second
/// burst = 50
/// max_keys = 100000
/// max_bytes = "8MiB"
/// persist = true
/// on_excess = "train:excess"
/// time = "arrival"  # or the field holding the event time, e.g. "time"
/// ```
///
/// From its typed settings, without TOML, on any datum (a key writer, an id getter, and the
/// mailbox of the train excess goes to, if any):
/// `Throttle::from_settings(&ThrottleSettings { rate: 5.0, burst: Some(10), ..Default::default() }, key, id, None)`;
/// with `time` naming a field, then [`Throttle::with_event_time`] with the field's getter.
pub struct Throttle<D> {
    key: KeyFn<D>,
    id: Getter<D, EventId>,
    rate: f64,
    burst: f64,
    excess: Option<Rc<Mailbox<D>>>,
    buckets: Keyed<Rc<[u8]>, Bucket>,
    buf: Vec<u8>,
    /// Arrival time, or the event time `time` names.
    time: CogTime<D>,
    state_file: Option<PathBuf>,
    /// The loop's clock and the wall clock at start, to save refill times as wall-clock
    /// milliseconds.
    anchor: Option<(Instant, i64)>,
}

/// The format names and version of `throttle`'s state file: times of arrival (wall-clock
/// milliseconds) and event times are not interchangeable.
const FORMAT: &str = "throttle";
const FORMAT_EVENT_TIME: &str = "throttle-event-time";
const VERSION: u32 = 1;

/// One key's tokens, as of `at` (its last refill, Unix milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: i64,
}

impl Bucket {
    /// A bucket holding `tokens`, last refilled at `at` (Unix milliseconds).
    pub fn new(tokens: f64, at: i64) -> Bucket {
        Bucket { tokens, at }
    }

    /// The tokens held as of the last refill.
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// Refills for the time from the last refill to `now` (none if `now` is not later: a
    /// time before the last refill has been paid for already) at `rate` a second up to
    /// `burst`, then takes a token if there is one.
    pub fn take(&mut self, now: i64, rate: f64, burst: f64) -> bool {
        self.refill(now, rate, burst);
        let pass = self.tokens >= 1.0;
        if pass {
            self.tokens -= 1.0;
        }
        pass
    }
}

impl Bucket {
    /// Refills for the time from the last refill to `now` (none if `now` is not later) at
    /// `rate` a second up to `burst`.
    fn refill(&mut self, now: i64, rate: f64, burst: f64) {
        if now > self.at {
            let elapsed = now.saturating_sub(self.at) as f64 / 1000.0;
            self.tokens = (self.tokens + elapsed * rate).min(burst);
            self.at = now;
        }
    }
}

/// A bucket as saved: tokens and the time of its last refill (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Saved {
    tokens: f64,
    at_ms: i64,
}

impl StateCodec for Saved {
    fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = write!(out, "{} {}", self.tokens, self.at_ms);
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (tokens, at) = text.split_once(' ')?;
        let tokens: f64 = tokens.parse().ok()?;
        // A count that is not a finite number is damage, not a bucket.
        (tokens.is_finite() && tokens >= 0.0).then_some(())?;
        Some(Saved {
            tokens,
            at_ms: at.parse().ok()?,
        })
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl<D> std::fmt::Debug for Throttle<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .field("keys", &self.buckets.len())
            .field("routes_excess", &self.excess.is_some())
            .finish()
    }
}

impl<D> Throttle<D> {
    /// A `throttle` made from its settings: `key` writes a datum's key, `id` reads the id to
    /// acknowledge dropped data with, `excess` is the mailbox of the train that
    /// `on_excess = "train:NAME"` names (`None` for `"drop"`).
    pub fn from_settings(
        s: &ThrottleSettings,
        key: KeyFn<D>,
        id: Getter<D, EventId>,
        excess: Option<Rc<Mailbox<D>>>,
    ) -> Result<Self, SettingError> {
        if !(s.rate.is_finite() && s.rate > 0.0) {
            return Err(SettingError::new(
                "rate",
                "must be a number of data per second above 0",
            ));
        }
        let burst = match s.burst {
            Some(0) => return Err(SettingError::new("burst", "must be at least 1")),
            Some(b) => b as f64,
            None => s.rate.ceil().max(1.0),
        };
        if s.max_keys == 0 {
            return Err(SettingError::new("max_keys", "must be at least 1"));
        }
        check_max_bytes(s.max_bytes)?;
        match (s.on_excess.as_str(), &excess) {
            ("drop", None) => {}
            ("drop", Some(_)) => {
                return Err(SettingError::new(
                    "on_excess",
                    "\"drop\" takes no train to send excess to",
                ));
            }
            (other, _) if !other.starts_with("train:") => {
                return Err(SettingError::new(
                    "on_excess",
                    format!("expected \"drop\" or \"train:NAME\", found {other:?}"),
                ));
            }
            (other, None) => {
                return Err(SettingError::new(
                    "on_excess",
                    format!("no train to send excess to for {other:?}"),
                ));
            }
            (_, Some(_)) => {}
        }
        Ok(Throttle {
            key,
            id,
            rate: s.rate,
            burst,
            excess,
            buckets: Keyed::new(s.max_keys).with_max_bytes(s.max_bytes, key_len),
            buf: Vec::new(),
            time: CogTime::new(&s.time, &s.time_format)?,
            state_file: None,
            anchor: None,
        })
    }

    /// Reads the event time through `get` (the field `time` names) and sends data without
    /// one per `on_error`; needed when `time` names a field, ignored for arrival time.
    pub fn with_event_time(
        mut self,
        get: Getter<D, Value>,
        on_error: OnError<D>,
    ) -> Result<Self, SettingError> {
        self.time.bind(get, on_error)?;
        Ok(self)
    }

    /// The state file's format: it depends on the kind of time.
    fn format(&self) -> &'static str {
        self.time.state_format(FORMAT, FORMAT_EVENT_TIME)
    }

    /// Saves the buckets to `state_file` at shutdown and loads them at start (`None`: not
    /// kept across runs). The daemon passes the file under `[state] dir` when
    /// `persist = true`.
    pub fn with_state_file(mut self, state_file: Option<PathBuf>) -> Self {
        self.state_file = state_file;
        self
    }

    /// How many keys have a bucket, and their bytes in total.
    pub fn held(&self) -> (usize, usize) {
        (self.buckets.len(), self.buckets.bytes())
    }

    /// The tokens in the bucket of `key` as of its last refill, if it has one.
    pub fn tokens(&self, key: &[u8]) -> Option<f64> {
        self.buckets.get(key).map(Bucket::tokens)
    }

    /// Loads the saved buckets. With arrival time they are refilled for the wall-clock
    /// time since they were saved (none if the clock went back), as of `now_ms`; event
    /// times are taken as saved.
    fn load(
        &mut self,
        path: &std::path::Path,
        now_ms: i64,
    ) -> Result<usize, crate::kit::keyed::StateError> {
        let mut saved: Keyed<Rc<[u8]>, Saved> = Keyed::new(self.buckets.max_keys());
        let n = saved.load(path, self.format(), VERSION)?;
        let arrival = !self.time.is_event_time();
        while let Some((k, s)) = saved.pop_oldest() {
            let mut b = Bucket::new(s.tokens.min(self.burst), s.at_ms);
            if arrival {
                // A time ahead of now (the clock set back) is paid as now: no tokens.
                b.at = b.at.min(now_ms);
                b.refill(now_ms, self.rate, self.burst);
            }
            self.buckets.insert(k, b);
        }
        Ok(n)
    }

    /// Saves the buckets, oldest first, with their refill times.
    fn save(&self, path: &std::path::Path) -> Result<usize, crate::kit::keyed::StateError> {
        let mut saved: Keyed<Rc<[u8]>, Saved> = Keyed::new(self.buckets.len().max(1));
        for (k, b) in self.buckets.iter() {
            saved.insert(
                k.clone(),
                Saved {
                    tokens: b.tokens,
                    at_ms: b.at,
                },
            );
        }
        saved.save(path, self.format(), VERSION)?;
        Ok(saved.len())
    }

    /// The loop's clock as wall-clock Unix milliseconds, from the moment taken at start.
    fn unix_ms(&mut self, now: Instant) -> i64 {
        let (at, ms) = *self.anchor.get_or_insert_with(|| (now, wall_ms()));
        ms.saturating_add(i64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(0))
    }

    /// How many buckets were forgotten to stay within `max_keys` or `max_bytes`.
    pub fn evictions(&self) -> u64 {
        self.buckets.evictions()
    }

    /// Whether the datum with the key in `self.buf` may pass at `now` (Unix ms), taking a
    /// token.
    fn take(&mut self, now: i64) -> bool {
        cap_key(&mut self.buf);
        let key = &self.buf[..];
        if let Some(b) = self.buckets.get_mut(key) {
            let pass = b.take(now, self.rate, self.burst);
            // Last-use order: a busy key's bucket is the last to be forgotten.
            self.buckets.touch(key);
            pass
        } else {
            self.buckets.insert(
                Rc::from(key),
                Bucket {
                    tokens: self.burst - 1.0,
                    at: now,
                },
            );
            true
        }
    }
}

impl<D: 'static> Cog<D> for Throttle<D> {
    fn name(&self) -> &str {
        "throttle"
    }

    fn inspect(&self, into: &mut crate::engine::control::Inspection) {
        into.keys(self.buckets.len(), Some(self.buckets.max_keys()));
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        let now = self.unix_ms(cx.now());
        let mut dropped = 0;
        for d in batch.drain(..) {
            self.buf.clear();
            if !(self.key)(&d, &mut self.buf) {
                out.push(d);
                continue;
            }
            let Some((d, at)) = self.time.read(d, now, "throttle", out, cx) else {
                continue;
            };
            if self.take(at) {
                out.push(d);
                continue;
            }
            match &self.excess {
                Some(mailbox) => mailbox.send(d, cx),
                None => {
                    if let Some(id) = self.id.get(&d) {
                        cx.event_done(*id);
                    }
                    dropped += 1;
                }
            }
        }
        out.count_dropped(dropped);
        self.buckets.report_evictions("throttle", cx);
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.time.check("throttle")?;
        let now = cx.now();
        self.anchor = Some((now, wall_ms()));
        let now_ms = self.unix_ms(now);
        if let Some(path) = self.state_file.clone() {
            match self.load(&path, now_ms) {
                Ok(0) => {}
                Ok(n) => slog::info!(cx.logger(), "throttle state loaded";
                    "file" => %path.display(), "keys" => n),
                Err(e) => slog::warn!(cx.logger(), "throttle state ignored, starting empty";
                    "reason" => %e),
            }
        }
        Ok(())
    }

    fn done(&mut self, cx: &mut Ctx) {
        self.buckets.report_evictions("throttle", cx);
        let Some(path) = &self.state_file else {
            return;
        };
        match self.save(path) {
            Ok(n) => slog::info!(cx.logger(), "throttle state saved";
                "file" => %path.display(), "keys" => n),
            Err(e) => slog::error!(cx.logger(), "throttle state not saved"; "reason" => %e),
        }
    }
}

/// The descriptor of `throttle`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "throttle",
    kind: CogKind::Transform,
    summary: "token bucket per key (rate a second, burst): excess records dropped \
              (acknowledged, counted) or sent to another train",
    params: ThrottleSettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `throttle`.
    pub struct ThrottleSettings {
        /// dotted paths of the fields making the key; empty: one bucket for all records
        fields: Vec<String>,
        /// records a second each key may pass, on average
        #[setting(required)]
        rate: f64,
        /// most records a key may pass at once (the bucket's size; default: rate, at least 1)
        burst: Option<u64>,
        /// most keys kept; beyond it the bucket used longest ago is forgotten (counted, logged)
        max_keys: usize = "100000",
        /// most bytes of keys kept in total (a key longer than 256 bytes counts 257: its head and a digest); beyond it the bucket used longest ago is forgotten (counted, logged)
        #[setting(size)]
        max_bytes: usize = "8MiB",
        /// save the buckets (tokens, last refill) under `[state] dir` at shutdown and load them at start
        persist: bool = "false",
        /// drop: acknowledge, count and drop the excess; train:NAME: send it to train NAME
        on_excess: String = "drop",
        /// "arrival" (the wall clock when a record comes) or the field holding the event time (timestamp, epoch seconds, RFC 3339 or time_format text): buckets refill for the time passed
        time: String = "arrival",
        /// strftime format of a text time field; empty: timestamp, epoch seconds or RFC 3339. A format without a year takes the wall clock's (the one before if that puts the time more than a day ahead)
        time_format: String = "",
        /// What to do with a record whose time (`time` naming a field) is missing or unparsable.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

fn build(p: &CogParams<'_>, bx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: ThrottleSettings = p.settings()?;
    let mut paths = Vec::with_capacity(s.fields.len());
    for f in &s.fields {
        paths.push(Path::parse(f).map_err(|e| p.error("fields", format!("{f:?}: {e}")))?);
    }
    let excess = match s.on_excess.strip_prefix("train:") {
        Some(name) if name == p.train() => {
            return Err(p.error(
                "on_excess",
                format!("train {name:?} cannot send records to itself"),
            ));
        }
        Some(name) => Some(bx.mailbox(name).ok_or_else(|| {
            let names: Vec<String> = bx.train_names().iter().map(|n| format!("{n:?}")).collect();
            p.error(
                "on_excess",
                format!("no train named {name:?} (trains: {})", names.join(", ")),
            )
        })?),
        None => None,
    };
    // Without fields, every record has the same (empty) key: one bucket.
    let key: KeyFn<Record> = Box::new(move |r, out| paths.is_empty() || record_key(&paths, r, out));
    let state = s.persist.then(|| {
        // The configuration check then makes sure the state directory can be written.
        bx.state_used.set(true);
        state_file("throttle", p, bx.state_dir)
    });
    let mut throttle = Throttle::from_settings(&s, key, id_field().get, excess)
        .map_err(|e| setting_error(p, e))?
        .with_state_file(state);
    bind_record_time(&mut throttle.time, &s.time, &s.on_error, p, bx)?;
    Ok(Box::new(throttle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that runs back neither panics nor mints tokens: the time before the last
    /// refill is not paid twice.
    #[test]
    fn a_clock_running_back_mints_no_tokens() {
        let t0 = 1_000_000i64;
        let (rate, burst) = (1.0, 10.0);
        let mut b = Bucket::new(0.0, t0 + 10_000);
        // Back by 5 s: nothing refilled, nothing to take.
        assert!(!b.take(t0 + 5_000, rate, burst));
        assert_eq!(b.tokens(), 0.0);
        // Forward to where it was: still nothing (those 5 s were not new time).
        assert!(!b.take(t0 + 10_000, rate, burst));
        assert_eq!(b.tokens(), 0.0);
        // Two seconds on: two tokens, one taken.
        assert!(b.take(t0 + 12_000, rate, burst));
        assert!((b.tokens() - 1.0).abs() < 1e-9, "{}", b.tokens());
        // Far back (before any refill): no panic, no token.
        assert!(b.take(t0, rate, burst));
        assert!(!b.take(t0, rate, burst));
        assert!(!b.take(i64::MIN, rate, burst));
    }

    /// Refills add up whatever the steps: no token is lost to rounding at 1 ms steps (the
    /// 25th comes at 10 s, give or take the float sum's error).
    #[test]
    fn refills_in_small_steps_add_up() {
        let mut b = Bucket::new(0.0, 0);
        let mut passed = 0;
        for ms in 0..=10_010i64 {
            passed += u32::from(b.take(ms, 2.5, 2.0));
        }
        assert_eq!(passed, 25, "2.5 a second for 10 s");
    }

    fn throttle(rate: f64, burst: u64) -> Throttle<()> {
        Throttle::from_settings(
            &ThrottleSettings {
                rate,
                burst: Some(burst),
                ..Default::default()
            },
            Box::new(|_, _| true),
            Getter::new(|_: &()| None),
            None,
        )
        .unwrap()
    }

    /// Saved buckets come back refilled for the wall-clock time since the save, and not at
    /// all when the wall clock is now behind the save.
    #[test]
    fn loaded_buckets_refill_for_the_time_stopped_and_never_for_a_clock_set_back() {
        let dir = std::env::temp_dir().join(format!("deadbeat-throttle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("t.state");
        let mut t = throttle(1.0, 5);
        t.buckets
            .insert(Rc::from(&b"a"[..]), Bucket::new(0.0, 1_000_000));
        t.buckets
            .insert(Rc::from(&b"b"[..]), Bucket::new(2.5, 1_000_000));
        t.save(&path).unwrap();

        let mut later = throttle(1.0, 5);
        assert_eq!(later.load(&path, 1_002_000).unwrap(), 2);
        assert_eq!(later.tokens(b"a"), Some(2.0));
        assert_eq!(later.tokens(b"b"), Some(4.5));

        let mut back = throttle(1.0, 5);
        back.load(&path, 990_000).unwrap();
        assert_eq!(back.tokens(b"a"), Some(0.0));
        assert_eq!(back.tokens(b"b"), Some(2.5));

        let mut long = throttle(1.0, 5);
        long.load(&path, 9_000_000).unwrap();
        assert_eq!(
            long.tokens(b"a"),
            Some(5.0),
            "refilled up to burst, not beyond"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Huge keys are capped and their bytes bounded by `max_bytes`; evictions counted.
    #[test]
    fn huge_keys_stay_within_max_bytes() {
        let mut t = Throttle::<()>::from_settings(
            &ThrottleSettings {
                rate: 1.0,
                max_bytes: 1024,
                ..Default::default()
            },
            Box::new(|_, _| true),
            Getter::new(|_: &()| None),
            None,
        )
        .unwrap();
        let now = 1_000_000;
        for i in 0..100u32 {
            t.buf.clear();
            t.buf.resize(50_000, 0xff);
            t.buf.extend_from_slice(&i.to_le_bytes());
            assert!(t.take(now), "a new key has a full bucket");
            let (_, bytes) = t.held();
            assert!(bytes <= 1024, "{bytes}");
        }
        assert_eq!(t.held(), (3, 3 * 257));
        assert_eq!(t.evictions(), 97);
        // The same huge key again finds its bucket (burst 1, spent).
        t.buf.clear();
        t.buf.resize(50_000, 0xff);
        t.buf.extend_from_slice(&99u32.to_le_bytes());
        assert!(!t.take(now));
    }

    /// Token counts that are not finite, non-negative numbers are damage.
    #[test]
    fn saved_buckets_decode_only_sane_counts() {
        assert_eq!(
            Saved::decode(b"1.5 42"),
            Some(Saved {
                tokens: 1.5,
                at_ms: 42
            })
        );
        for bad in [&b"NaN 1"[..], b"inf 1", b"-1 1", b"1", b"1 x", b"\xff 1"] {
            assert_eq!(Saved::decode(bad), None, "{bad:?}");
        }
    }
}
