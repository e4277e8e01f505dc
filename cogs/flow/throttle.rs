//! `throttle`: lets at most `rate` data a second per key through, with bursts.

use std::rc::Rc;
use std::time::Instant;

use crate::engine::mailbox::Mailbox;
use crate::kit::keyed::Keyed;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Path, Record, id_field};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::dedup::{KeyFn, record_key};
use super::setting_error;

/// A token bucket per key: each key's bucket holds up to `burst` tokens and fills at `rate`
/// tokens a second (arrival time, the event loop's clock); a datum takes one token to pass.
/// A datum that finds its bucket empty is excess: with `on_excess = "drop"` it is dropped,
/// acknowledged (so the supply's checkpoint moves past it) and counted as dropped; with
/// `on_excess = "train:NAME"` it is sent to the head of train NAME (as `route` does), which
/// acknowledges it when it writes it. The key is made of the fields in `fields` (a datum
/// lacking one of them is not throttled); without `fields` all data share one bucket.
///
/// At most `max_keys` buckets are kept: when full, the bucket used longest ago is forgotten
/// (counted and logged, at most 10 lines a second); a forgotten key starts again with a
/// full bucket.
///
/// ```toml
/// [[train.cog]]
/// type = "throttle"
/// fields = ["src_ip"]
/// rate = 10.0      # per second
/// burst = 50
/// on_excess = "train:excess"
/// ```
///
/// From its typed settings, without TOML, on any datum (a key writer, an id getter, and the
/// mailbox of the train excess goes to, if any):
/// `Throttle::from_settings(&ThrottleSettings { rate: 5.0, burst: Some(10), ..Default::default() }, key, id, None)`.
pub struct Throttle<D> {
    key: KeyFn<D>,
    id: Getter<D, EventId>,
    rate: f64,
    burst: f64,
    excess: Option<Rc<Mailbox<D>>>,
    buckets: Keyed<Rc<[u8]>, Bucket>,
    buf: Vec<u8>,
}

/// One key's tokens, as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
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
            buckets: Keyed::new(s.max_keys),
            buf: Vec::new(),
        })
    }

    /// How many buckets were forgotten to stay within `max_keys`.
    pub fn evictions(&self) -> u64 {
        self.buckets.evictions()
    }

    /// Whether the datum with the key in `self.buf` may pass now (taking a token).
    fn take(&mut self, now: Instant) -> bool {
        let key = &self.buf[..];
        if let Some(b) = self.buckets.get_mut(key) {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
            b.at = now;
            let pass = b.tokens >= 1.0;
            if pass {
                b.tokens -= 1.0;
            }
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

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        let now = cx.now();
        let mut dropped = 0;
        for d in batch.drain(..) {
            self.buf.clear();
            if !(self.key)(&d, &mut self.buf) || self.take(now) {
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

    fn done(&mut self, cx: &mut Ctx) {
        self.buckets.report_evictions("throttle", cx);
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
        /// drop: acknowledge, count and drop the excess; train:NAME: send it to train NAME
        on_excess: String = "drop",
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
    let throttle = Throttle::from_settings(&s, key, id_field().get, excess)
        .map_err(|e| setting_error(p, e))?;
    Ok(Box::new(throttle))
}
