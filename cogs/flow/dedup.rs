//! `dedup`: drops a datum whose key was seen a short while ago.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::kit::event_time::{CogTime, bind_record_time};
use crate::kit::keyed::{KEY_CAP, cap_key, state_file};
use crate::kit::on_error::{OnError, OnErrorSettings};
use crate::kit::seen_keys::SeenKeys;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Path, Record, Value, id_field};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::setting_error;

/// The format name and version of `dedup`'s state file.
const FORMAT: &str = "dedup";
/// The format name of a state file of event times (not interchangeable with arrival times).
const FORMAT_EVENT_TIME: &str = "dedup-event-time";
const VERSION: u32 = 1;

/// Writes a datum's key into the buffer; `false` when the datum has no key (it passes).
pub type KeyFn<D> = Box<dyn Fn(&D, &mut Vec<u8>) -> bool>;

/// Drops a datum whose key was seen within `within`: of the data with one key, one passes,
/// the repeats arriving less than `within` after it are dropped, and the first to arrive
/// later passes and starts a new `within`. Time is the arrival time (the event loop's
/// clock), or with `time = "FIELD"` the event's own time (read as `window` reads it): a
/// repeat is then a datum whose time is less than `within` before or after the time its
/// key passed, whatever order the data come in, so a file replayed at full speed is
/// deduplicated as it was when written; a datum whose time is missing or unparsable goes
/// per `on_error`. The key is made of the fields in `fields` (dotted paths; a datum lacking one of
/// them is not deduplicated and passes), or of the whole record (its fields rendered as
/// JSON, the event id left out) when `fields` is empty; the whole record includes what the
/// supply adds (`tail`'s `offset` differs on every line: name the fields then).
///
/// Dropped data are acknowledged, so the supply's checkpoint moves past them, and counted as
/// dropped. At most `max_keys` keys are remembered: when full, the key that passed longest
/// ago is forgotten first (it is the one whose `within` ends first); evictions are counted
/// and logged (at most 10 lines a second). With `persist = true` the remembered keys are
/// saved under `[state] dir` at shutdown (file `dedup-TRAIN-COG-HASH.state`, named after
/// the train and the cog's id: give the cog a `name` to keep it across edits of the train)
/// and loaded at start, so a repeat arriving after a restart is still dropped; wall-clock
/// time is saved, so the time the daemon was stopped counts towards `within`. A state file
/// that cannot be read (corrupt, cut short, of another format) is logged and ignored.
/// Keys saved with a time ahead of the clock (the wall clock was set back while the daemon
/// was stopped) count as seen now, so they are not kept longer than `within`.
///
/// **Memory.** Besides `max_keys`, the remembered keys' bytes are bounded by `max_bytes`
/// in total (when a new key does not fit, the oldest are forgotten, counted as
/// evictions). A key longer than 256 bytes (a huge field, the whole record) is remembered
/// as its first 241 bytes and a 128-bit digest of all of it, so one key costs at most 257
/// bytes: two long keys are told apart by their digests (not cryptographic: input crafted
/// to collide could get one repeat dropped), where cutting them would confuse every pair
/// with the same head. Keys are bytes: invalid UTF-8 is kept as it is.
///
/// ```toml
/// [[train.cog]]
/// type = "dedup"
/// fields = ["host", "message"]
/// within = "10m"
/// max_keys = 100000
/// max_bytes = "8MiB"
/// persist = true
/// time = "arrival"  # or the field holding the event time, e.g. "time"
/// ```
///
/// From its typed settings, without TOML, on any datum (a key writer and an id getter):
/// `Dedup::from_settings(&DedupSettings { within: Duration::from_secs(60), ..Default::default() }, key, id, None)`;
/// with `time` naming a field, then [`Dedup::with_event_time`] with the field's getter.
pub struct Dedup<D> {
    key: KeyFn<D>,
    id: Getter<D, EventId>,
    within_ms: u64,
    seen: SeenKeys,
    state_file: Option<PathBuf>,
    /// The loop's clock and the wall clock at one moment: arrival times are kept as Unix
    /// milliseconds (so they survive a restart) computed from the loop's clock.
    anchor: Option<(Instant, u64)>,
    /// The batch's keys, one after another.
    keys: Vec<u8>,
    /// Each datum's key in `keys` and its hash, in batch order.
    pending: Vec<Pending>,
    /// Arrival time, or the event time `time` names.
    time: CogTime<D>,
    /// By event time, the greatest time seen: keys that passed `within` before it are
    /// forgotten.
    watermark: u64,
}

/// An event time (Unix ms, maybe before 1970) as the table's unsigned time, in the same
/// order and at the same distances.
fn table_time(t: i64) -> u64 {
    (t as u64) ^ (1 << 63)
}

/// A datum's key, found before any is looked up.
#[derive(Debug, Clone, Copy)]
struct Pending {
    hash: u64,
    start: usize,
    /// `NO_KEY` when the datum has no key (it passes).
    end: usize,
}

const NO_KEY: usize = usize::MAX;

/// The keys' bytes of a batch `dedup` makes room for when made.
const BATCH_KEY_BYTES: usize = 64 << 10;

impl<D> std::fmt::Debug for Dedup<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedup")
            .field("within_ms", &self.within_ms)
            .field("keys", &self.seen.len())
            .field("state_file", &self.state_file)
            .finish()
    }
}

impl<D> Dedup<D> {
    /// A `dedup` made from its settings: `key` writes a datum's key, `id` reads the id to
    /// acknowledge dropped data with, `state_file` is where the keys are saved and loaded
    /// (`None`: not kept across runs, whatever `s.persist` says).
    pub fn from_settings(
        s: &DedupSettings,
        key: KeyFn<D>,
        id: Getter<D, EventId>,
        state_file: Option<PathBuf>,
    ) -> Result<Self, SettingError> {
        if s.within.is_zero() {
            return Err(SettingError::new(
                "within",
                "must be longer than 0s (0s would keep nothing)",
            ));
        }
        if s.max_keys == 0 {
            return Err(SettingError::new("max_keys", "must be at least 1"));
        }
        check_max_bytes(s.max_bytes)?;
        Ok(Dedup {
            key,
            id,
            within_ms: u64::try_from(s.within.as_millis()).unwrap_or(u64::MAX),
            seen: SeenKeys::new(s.max_keys, s.max_bytes),
            state_file,
            anchor: None,
            // Room for a typical batch's keys from the start: made before the first batch's
            // records, they do not sit among them in the heap.
            keys: Vec::with_capacity(BATCH_KEY_BYTES),
            pending: Vec::with_capacity(BATCH_KEY_BYTES / 16),
            time: CogTime::new(&s.time, &s.time_format)?,
            watermark: 0,
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

    /// A batch by event time: one datum after another (each may be late, or fail).
    fn by_event_time(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx, now: u64)
    where
        D: 'static,
    {
        let within = self.within_ms;
        // Forgetting follows the greatest time seen before the batch: a datum of the batch
        // with an earlier time still finds what it repeats.
        self.seen.expire(self.watermark, within);
        let now_ms = i64::try_from(now).unwrap_or(i64::MAX);
        let mut dropped = 0;
        for d in batch.drain(..) {
            self.keys.clear();
            if !(self.key)(&d, &mut self.keys) {
                out.push(d);
                continue;
            }
            let Some((d, t)) = self.time.read(d, now_ms, "dedup", out, cx) else {
                continue;
            };
            let t = table_time(t);
            self.watermark = self.watermark.max(t);
            cap_key(&mut self.keys);
            let hash = self.seen.hash(&self.keys);
            if !self.seen.seen_or_insert_at(&self.keys, hash, t, within) {
                out.push(d);
                continue;
            }
            if let Some(id) = self.id.get(&d) {
                cx.event_done(*id);
            }
            dropped += 1;
        }
        out.count_dropped(dropped);
        self.seen.report_evictions("dedup", cx);
    }

    /// How many keys were forgotten to stay within `max_keys` or `max_bytes`.
    pub fn evictions(&self) -> u64 {
        self.seen.evictions()
    }

    /// How many keys are remembered, and their bytes in total.
    pub fn held(&self) -> (usize, usize) {
        (self.seen.len(), self.seen.bytes())
    }

    /// `now` of the loop as Unix milliseconds.
    fn unix_ms(&mut self, now: Instant) -> u64 {
        let (at, ms) = *self.anchor.get_or_insert_with(|| (now, wall_ms()));
        ms.saturating_add(u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(0))
    }
}

/// The bytes a key counts towards `max_bytes`.
pub(super) fn key_len(k: &Rc<[u8]>) -> usize {
    k.len()
}

/// `max_bytes` must hold one key at its longest.
pub(super) fn check_max_bytes(max_bytes: usize) -> Result<(), SettingError> {
    if max_bytes <= KEY_CAP {
        return Err(SettingError::new(
            "max_bytes",
            format!(
                "must be at least {} bytes (one key at its longest)",
                KEY_CAP + 1
            ),
        ));
    }
    Ok(())
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl<D: 'static> Cog<D> for Dedup<D> {
    fn name(&self) -> &str {
        "dedup"
    }

    fn inspect(&self, into: &mut crate::engine::control::Inspection) {
        into.keys(self.seen.len(), Some(self.seen.max_keys()));
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.time.check("dedup")?;
        let now = cx.now();
        self.anchor = Some((now, wall_ms()));
        let now_ms = self.unix_ms(now);
        let format = self.format();
        if let Some(path) = &self.state_file {
            match self.seen.load(path, format, VERSION) {
                Ok(n) => {
                    if n > 0 {
                        if self.time.is_event_time() {
                            // Event time does not pass while stopped: the greatest time
                            // saved is where forgetting goes on from.
                            self.watermark = self.seen.iter().map(|(_, t)| t).max().unwrap_or(0);
                        } else {
                            // A time ahead of now (the wall clock went back while stopped)
                            // counts as now: the key is not kept beyond `within`.
                            self.seen.clamp_times(now_ms);
                        }
                        slog::info!(cx.logger(), "dedup state loaded";
                            "file" => %path.display(), "keys" => n);
                    }
                }
                Err(e) => {
                    slog::warn!(cx.logger(), "dedup state ignored, starting empty";
                        "reason" => %e);
                }
            }
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        let now = self.unix_ms(cx.now());
        if self.time.is_event_time() {
            self.by_event_time(batch, out, cx, now);
            return;
        }
        let within = self.within_ms;
        // Keys are inserted in arrival order, so those past `within` are all at the old end
        // (and every key still held after this is a repeat if seen again in this batch).
        self.seen.expire(now, within);
        // First every key, its hash, and a prefetch of its index slot (and, when each new
        // key evicts one, of the slot of the key it evicts): the lookups that follow then
        // find what they read on its way or in cache rather than waiting on each in turn.
        self.keys.clear();
        self.pending.clear();
        let evicting = self.seen.is_full();
        for (n, d) in batch.iter().enumerate() {
            let start = self.keys.len();
            if !(self.key)(d, &mut self.keys) {
                self.keys.truncate(start);
                self.pending.push(Pending {
                    hash: 0,
                    start,
                    end: NO_KEY,
                });
                continue;
            }
            if self.keys.len() - start > KEY_CAP {
                let mut long = self.keys.split_off(start);
                cap_key(&mut long);
                self.keys.extend_from_slice(&long);
            }
            let hash = self.seen.hash(&self.keys[start..]);
            self.seen.prefetch(hash);
            if evicting {
                self.seen.prefetch_oldest(n);
            }
            self.pending.push(Pending {
                hash,
                start,
                end: self.keys.len(),
            });
        }
        // Then each key looked up, in order; the data passing stay where they are (moved
        // only past a dropped one) and go on as one batch.
        let mut dropped = 0;
        let mut next = self.pending.iter();
        let (seen, keys, id) = (&mut self.seen, &self.keys, &self.id);
        batch.retain(|d| {
            let Some(p) = next.next().filter(|p| p.end != NO_KEY) else {
                return true;
            };
            if !seen.seen_or_insert(&keys[p.start..p.end], p.hash, now, within) {
                return true;
            }
            if let Some(id) = id.get(d) {
                cx.event_done(*id);
            }
            dropped += 1;
            false
        });
        out.push_all(batch);
        out.count_dropped(dropped);
        self.seen.report_evictions("dedup", cx);
    }

    fn done(&mut self, cx: &mut Ctx) {
        self.seen.report_evictions("dedup", cx);
        let now = self.unix_ms(cx.now());
        let Some(path) = &self.state_file else {
            return;
        };
        let at = if self.time.is_event_time() {
            self.watermark
        } else {
            now
        };
        let format = self.format();
        self.seen.expire(at, self.within_ms);
        match self.seen.save(path, format, VERSION) {
            Ok(()) => slog::info!(cx.logger(), "dedup state saved";
                "file" => %path.display(), "keys" => self.seen.len()),
            Err(e) => slog::error!(cx.logger(), "dedup state not saved"; "reason" => %e),
        }
    }
}

/// The descriptor of `dedup`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "dedup",
    kind: CogKind::Transform,
    summary: "drops records whose key (some fields, or the whole record) was seen within a \
              time; dropped records are acknowledged",
    params: DedupSettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `dedup`.
    pub struct DedupSettings {
        /// dotted paths of the fields making the key; empty: the whole record
        fields: Vec<String>,
        /// a repeat of a key arriving less than this after it passed is dropped
        within: Duration = "10m",
        /// most keys remembered; beyond it the oldest are forgotten (counted, logged)
        max_keys: usize = "100000",
        /// most bytes of keys remembered in total (a key longer than 256 bytes counts 257: its head and a digest); beyond it the oldest are forgotten (counted, logged)
        #[setting(size)]
        max_bytes: usize = "8MiB",
        /// save the remembered keys under `[state] dir` at shutdown and load them at start
        persist: bool = "false",
        /// "arrival" (the wall clock when a record comes) or the field holding the event time (timestamp, epoch seconds, RFC 3339 or time_format text): a repeat is within `within` of the time its key passed, before or after
        time: String = "arrival",
        /// strftime format of a text time field; empty: timestamp, epoch seconds or RFC 3339. A format without a year takes the wall clock's (the one before if that puts the time more than a day ahead)
        time_format: String = "",
        /// What to do with a record whose time (`time` naming a field) is missing or unparsable.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

/// Appends the key of `r` made of the fields at `paths` (the whole record if none);
/// `false` if a field is missing.
pub fn record_key(paths: &[Path], r: &Record, out: &mut Vec<u8>) -> bool {
    if paths.is_empty() {
        r.write_json(out);
        return true;
    }
    for p in paths {
        let Some(v) = r.get_path(p) else {
            return false;
        };
        key_part(v, out);
    }
    true
}

/// One field's part of a key, unambiguous whatever the field holds: text and bytes with
/// their length before them, other values as JSON (which has no raw NUL) ended by a NUL.
pub(crate) fn key_part(v: &Value, out: &mut Vec<u8>) {
    match v.as_bytes() {
        Some(b) => {
            let [l0, l1, l2, l3] = u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes();
            out.extend_from_slice(&[b's', l0, l1, l2, l3]);
            out.extend_from_slice(b);
        }
        None => {
            out.push(b'v');
            v.write_json(out);
            out.push(0);
        }
    }
}

fn build(p: &CogParams<'_>, bx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: DedupSettings = p.settings()?;
    let mut paths = Vec::with_capacity(s.fields.len());
    for f in &s.fields {
        paths.push(Path::parse(f).map_err(|e| p.error("fields", format!("{f:?}: {e}")))?);
    }
    let state = s.persist.then(|| {
        // The configuration check then makes sure the state directory can be written.
        bx.state_used.set(true);
        state_file("dedup", p, bx.state_dir)
    });
    let key: KeyFn<Record> = Box::new(move |r, out| record_key(&paths, r, out));
    let mut dedup =
        Dedup::from_settings(&s, key, id_field().get, state).map_err(|e| setting_error(p, e))?;
    bind_record_time(&mut dedup.time, &s.time, &s.on_error, p, bx)?;
    Ok(Box::new(dedup))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::keyed::Keyed;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("deadbeat-dedup-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A state file written the way `dedup` wrote it before its own table (`Keyed::save`
    /// of the keys and their Unix milliseconds) loads into `dedup`'s table with every key
    /// and time, and a file this table writes loads into `Keyed` alike, byte for byte the
    /// same when saved again.
    #[test]
    fn state_files_are_the_same_format_as_keyed_wrote() {
        let dir = temp("compat");
        let (old, new) = (dir.join("old.state"), dir.join("new.state"));
        let mut keyed: Keyed<Rc<[u8]>, u64> = Keyed::new(1000).with_max_bytes(1 << 20, key_len);
        let mut key = Vec::new();
        for i in 0..300u64 {
            key.clear();
            key_part(&Value::from(format!("host {i}\n%x")), &mut key);
            if i % 50 == 0 {
                key.extend_from_slice(&[0xff; 300]);
                cap_key(&mut key);
            }
            keyed.insert(Rc::from(&key[..]), 1_700_000_000_000 + i * 7);
        }
        keyed.save(&old, FORMAT, VERSION).unwrap();

        let mut seen = SeenKeys::new(1000, 1 << 20);
        assert_eq!(seen.load(&old, FORMAT, VERSION).unwrap(), 300);
        let want: Vec<(Vec<u8>, u64)> = keyed.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
        let got: Vec<(Vec<u8>, u64)> = seen.iter().map(|(k, v)| (k.to_vec(), v)).collect();
        assert_eq!(got, want);
        seen.save(&new, FORMAT, VERSION).unwrap();
        assert_eq!(std::fs::read(&old).unwrap(), std::fs::read(&new).unwrap());

        let mut back: Keyed<Rc<[u8]>, u64> = Keyed::new(1000);
        assert_eq!(back.load(&new, FORMAT, VERSION).unwrap(), 300);
        let again: Vec<(Vec<u8>, u64)> = back.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
        assert_eq!(again, want);

        // A corrupt file is refused whole.
        let mut bad = std::fs::read(&old).unwrap();
        let at = bad.len() / 2;
        bad[at] ^= 1;
        std::fs::write(&old, &bad).unwrap();
        let mut fresh = SeenKeys::new(1000, 1 << 20);
        assert!(fresh.load(&old, FORMAT, VERSION).is_err());
        assert!(fresh.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
