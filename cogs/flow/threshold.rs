//! `threshold`: an alert record when a condition over a window's aggregates holds.

use std::collections::HashSet;
use std::path::PathBuf;
use std::rc::Rc;

use crate::engine::mailbox::Mailbox;
use crate::kit::keyed::{Keyed, state_file};
use crate::kit::on_error;
use crate::kit::window::{CloseWhy, Closed, WinState, WindowSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::expr::Expr;
use crate::record::{Record, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::setting_error;
use super::window::{Core, Handler, WindowFields, Windowed, fixed, record_fields};

crate::choice! {
    /// When `threshold` alerts.
    pub enum Fire {
        Crossing = "crossing",
        Close = "close",
    }
}

crate::settings! {
    /// Settings of `threshold`.
    pub struct ThresholdSettings {
        /// The window keys shared with `window`.
        #[setting(flatten)]
        window: WindowSettings,
        /// condition over the aggregates and key fields (the filter language), e.g. "failures >= 10"
        #[setting(required)]
        when: String,
        /// crossing: alert as soon as `when` holds (once per key per window); close: alert when the window closes, with its final aggregates
        fire: Fire = "crossing",
        /// true: after an alert a key stays quiet until a window of it ends with `when` false (one alert per attack across hopping windows)
        rearm: bool = "false",
        /// fields of the first and last datum counted, kept as first_F and last_F
        evidence: Vec<String>,
    }
}

/// Alerts when a condition over the aggregates of a window holds: windows, keys, time,
/// lateness, bounds and persistence as in `window` (every `window` key is taken), and
/// `when` evaluated over the aggregates (and the key fields) by name.
///
/// `fire = "crossing"` alerts as soon as `when` holds, once per key and window, with the
/// aggregates at that moment; `fire = "close"` alerts when a window closes and `when`
/// holds for its final aggregates (windows emitted early or at shutdown too, flagged
/// `evicted` / `partial`). With `rearm = true`, after an alert the key stays quiet until
/// one of its windows ends with `when` false: hopping windows over one attack then give
/// one alert, not one per hop. With `persist = true` the quiet keys are saved with the
/// open windows, so a restart between an alert and the re-arm does not alert again.
///
/// An alert holds `window_start`, `window_end`, the key fields, the aggregates, `first_id`
/// and `last_id` (event ids of the first and last datum counted) and, for each `evidence`
/// field F, `first_F` and `last_F`. The inputs are consumed (unless `pass = true`) and
/// acknowledged once their window's alert is, or when their window closes without one.
///
/// ```toml
/// [[train.cog]]
/// type = "threshold"
/// key = ["src_ip"]
/// time = "time"
/// time_format = "%b %e %H:%M:%S"
/// size = "10m"
/// aggregate = { failures = "count" }
/// when = "failures >= 10"
/// fire = "close"
/// evidence = ["user"]
/// ```
///
/// From its typed settings, without TOML, on any datum (see
/// [`WindowFields`]):
/// `Threshold::from_settings(&ThresholdSettings { when: "n >= 10".into(), window: WindowSettings { aggregate: Aggregates(vec![("n".into(), "count".into())]), ..Default::default() }, ..Default::default() }, fields, |_| None, None)`.
pub type Threshold<D> = Windowed<D, Alerts>;

/// `threshold`'s handler: evaluates `when`, emits alerts.
#[derive(Debug)]
pub struct Alerts {
    when: Expr,
    fire: Fire,
    rearm: bool,
    /// Keys (hashes of the group-by key) quiet since their alert.
    quiet: Keyed<u64, ()>,
    /// Alerts emitted and not acknowledged yet.
    outstanding: HashSet<EventId>,
    first_id_ix: usize,
    last_id_ix: usize,
    /// first_F for each evidence field, then last_F.
    evidence_ix: Vec<usize>,
    partial_ix: usize,
    evicted_ix: usize,
    alerts: u64,
}

impl<D: 'static> Threshold<D> {
    /// A `threshold` made from its settings: `fields` reads and writes the datum, `train`
    /// finds the mailbox of a train named by `on_late` / `on_error`, `state_file` is where
    /// open windows are kept across runs (`None`: not kept).
    pub fn from_settings(
        s: &ThresholdSettings,
        fields: WindowFields<D>,
        train: impl Fn(&str) -> Option<Rc<Mailbox<D>>>,
        state_file: Option<PathBuf>,
    ) -> Result<Self, SettingError> {
        let when = Expr::parse(&s.when).map_err(|e| {
            SettingError::new(
                "when",
                format!("in the condition at column {}: {}", e.column, e.message),
            )
        })?;
        let mut core = Core::from_settings(&s.window, fields, &s.evidence, train, state_file)?;
        core.w.keep_extra();
        if s.fire == Fire::Crossing {
            core.w.track_touched();
        }
        if s.rearm {
            core.w.track_groups();
        }
        let first_id_ix = core.w.add_name(fixed("first_id"));
        let last_id_ix = core.w.add_name(fixed("last_id"));
        let mut evidence_ix = Vec::new();
        for prefix in ["first_", "last_"] {
            for e in &s.evidence {
                let p = crate::record::Path::parse(&format!("{prefix}{e}"))
                    .map_err(|err| SettingError::new("evidence", format!("{e:?}: {err}")))?;
                evidence_ix.push(core.w.add_name(p));
            }
        }
        let partial_ix = core.w.add_name(fixed("partial"));
        let evicted_ix = core.w.add_name(fixed("evicted"));
        Ok(Windowed::new(
            core,
            Alerts {
                when,
                fire: s.fire,
                rearm: s.rearm,
                quiet: Keyed::new(s.window.max_keys.max(1)),
                outstanding: HashSet::new(),
                first_id_ix,
                last_id_ix,
                evidence_ix,
                partial_ix,
                evicted_ix,
                alerts: 0,
            },
        ))
    }
}

impl Alerts {
    /// Whether `when` holds for the aggregates of `s`.
    fn holds<D: 'static>(&self, core: &Core<D>, s: &WinState) -> bool {
        self.when.eval(&core.w.values(s))
    }

    /// Emits the alert of `s` (its key values cloned when `keep`, for a window that stays
    /// open); returns its id.
    fn alert<D: 'static>(
        &mut self,
        core: &mut Core<D>,
        s: &mut WinState,
        why: CloseWhy,
        keep: bool,
        out: &mut Out<D>,
        cx: &mut Ctx,
    ) -> EventId {
        let id = cx.new_event_id();
        if keep {
            let mut copy = s.clone();
            core.w.output(&mut copy, &mut core.out_buf);
        } else {
            core.w.output(s, &mut core.out_buf);
        }
        let x = s.extra();
        let ids = x.map_or([0, 0], |x| [x.first_id, x.last_id]);
        core.out_buf
            .push((self.first_id_ix, Value::Int(ids[0] as i64)));
        core.out_buf
            .push((self.last_id_ix, Value::Int(ids[1] as i64)));
        let evidence = x.map_or(&[][..], |x| &x.evidence[..]);
        for (ix, v) in self.evidence_ix.iter().zip(evidence) {
            core.out_buf.push((*ix, v.clone()));
        }
        match why {
            CloseWhy::Closed => {}
            CloseWhy::Evicted => core.out_buf.push((self.evicted_ix, Value::Bool(true))),
            CloseWhy::Partial => core.out_buf.push((self.partial_ix, Value::Bool(true))),
        }
        let d = (core.fields.make)(id, core.w.names(), &mut core.out_buf);
        core.out_buf.clear();
        out.push(d);
        self.alerts += 1;
        self.outstanding.insert(id);
        if self.rearm {
            self.quiet.insert(s.group(), ());
        }
        id
    }

    fn is_quiet(&self, group: u64) -> bool {
        self.rearm && self.quiet.get(&group).is_some()
    }
}

impl<D: 'static> Handler<D> for Alerts {
    const NAME: &'static str = "threshold";

    fn counted(&mut self, core: &mut Core<D>, out: &mut Out<D>, cx: &mut Ctx) {
        if self.fire != Fire::Crossing {
            return;
        }
        let touched = std::mem::take(&mut core.w.touched);
        for &ix in &touched {
            let Some(s) = core.w.state(ix) else {
                continue;
            };
            if s.alert() != 0 || self.is_quiet(s.group()) || !self.holds(core, s) {
                continue;
            }
            let mut s = s.clone();
            let id = self.alert(core, &mut s, CloseWhy::Closed, true, out, cx);
            if let Some(x) = core.w.state_mut(ix).and_then(|s| s.extra_mut()) {
                x.alert = id;
            }
        }
        core.w.touched = touched;
    }

    fn closed(&mut self, core: &mut Core<D>, mut c: Closed, out: &mut Out<D>, cx: &mut Ctx) {
        let holds = self.holds(core, &c.state);
        let mut alert = None;
        match self.fire {
            Fire::Close => {
                if holds && !self.is_quiet(c.state.group()) {
                    alert = Some(self.alert(core, &mut c.state, c.why, false, out, cx));
                }
            }
            Fire::Crossing => {
                let id = c.state.alert();
                if id != 0 && self.outstanding.contains(&id) {
                    alert = Some(id);
                }
            }
        }
        if self.rearm && !holds {
            self.quiet.remove(&c.state.group());
        }
        core.hold_or_ack(alert, &mut c, cx);
        core.w.release(c.state);
    }

    fn groups(&self) -> Vec<u64> {
        self.quiet.iter().map(|(g, ())| *g).collect()
    }

    fn restore_groups(&mut self, groups: Vec<u64>) {
        if self.rearm {
            for g in groups {
                self.quiet.insert(g, ());
            }
        }
    }

    fn event_done(&mut self, ids: &[EventId]) {
        if self.outstanding.is_empty() {
            return;
        }
        for id in ids {
            self.outstanding.remove(id);
        }
    }
}

/// The descriptor of `threshold`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "threshold",
    kind: CogKind::Transform,
    summary: "alerts when a condition over a window's aggregates holds (on crossing or when \
              the window closes), with the key, the window, the values and evidence",
    params: ThresholdSettings::PARAMS,
    fields: &[
        ("window_start", "the window's start (timestamp)"),
        ("window_end", "the window's end (timestamp)"),
        ("first_id", "event id of the first datum counted"),
        ("last_id", "event id of the last datum counted"),
        (
            "first_F, last_F",
            "the evidence field F of the first and last datum",
        ),
        (
            "partial",
            "true on alerts of windows open at shutdown (fire = \"close\")",
        ),
        (
            "evicted",
            "true on alerts of windows closed early at max_keys / max_bytes",
        ),
        (
            "late",
            "true on late data passed on (on_late = \"emit\" or a train)",
        ),
    ],
    build,
};

fn build(p: &CogParams<'_>, bx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: ThresholdSettings = p.settings()?;
    on_error::from_settings(&s.window.on_error, p, bx)?;
    let state = s.window.persists().then(|| {
        bx.state_used.set(true);
        state_file("threshold", p, bx.state_dir)
    });
    let cog = Threshold::from_settings(&s, record_fields(), |name| bx.mailbox(name), state)
        .map_err(|e| setting_error(p, e))?;
    Ok(Box::new(cog))
}
