//! `tee`: sends a copy of the data that satisfy a condition to another train.

use std::rc::Rc;

use crate::engine::mailbox::Mailbox;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::expr::Condition;
use crate::record::{Path, Record, Value, id_field};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::filter::{expr_param, parse_condition};
use super::route::target;
use super::setting_error;

/// Sends a copy of each datum that satisfies `when` (every datum, without it) to the head
/// of another train; the original continues down this one.
///
/// The copy travels under a fresh event id, and the supply's checkpoint follows the
/// original only: **a copy is best-effort with respect to acknowledgements**. Once the
/// original is written, a crash may lose a copy still on its way. (Sharing the id would
/// be worse: the first of the two acknowledgements would advance the checkpoint past a
/// datum whose other half was not yet written.)
///
/// ```toml
/// [[train.cog]]
/// type = "tee"
/// train = "audit"
/// when = 'path contains "auth"'
/// ```
///
/// From its typed settings, without TOML, with the receiving train's mailbox at hand:
/// `Tee::from_settings(&TeeSettings { train: "audit".into(), ..Default::default() }, mailbox, get, set_id)`.
#[derive(Debug)]
pub struct Tee<D> {
    to: Rc<Mailbox<D>>,
    when: Option<Condition<D>>,
    set_id: Setter<D, EventId>,
}

impl<D> Tee<D> {
    /// Sends copies of the data that satisfy `when` (all, if `None`) to `to`; `set_id`
    /// gives each copy its fresh id.
    pub fn new(to: Rc<Mailbox<D>>, when: Option<Condition<D>>, set_id: Setter<D, EventId>) -> Self {
        Tee { to, when, set_id }
    }

    /// A `tee` made from its settings: `to` is the mailbox of the train `s.train` names,
    /// `get` reads the fields `when` names, `set_id` gives each copy its fresh id.
    pub fn from_settings<F>(
        s: &TeeSettings,
        to: Rc<Mailbox<D>>,
        get: F,
        set_id: Setter<D, EventId>,
    ) -> Result<Self, SettingError>
    where
        F: for<'a> Fn(&'a D, &Path) -> Option<&'a Value> + 'static,
    {
        let when = match &s.when {
            Some(text) => Some(Condition::new(parse_condition("when", text)?, get)),
            None => None,
        };
        Ok(Tee::new(to, when, set_id))
    }
}

impl<D: Clone + 'static> Cog<D> for Tee<D> {
    fn name(&self) -> &str {
        "tee"
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        for d in batch.drain(..) {
            if self.when.as_ref().is_none_or(|c| c.test(&d)) {
                let mut copy = d.clone();
                self.set_id.set(&mut copy, cx.new_event_id());
                self.to.send(copy, cx);
            }
            out.push(d);
        }
    }
}

/// The descriptor of `tee`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "tee",
    kind: CogKind::Transform,
    summary: "sends a copy of records that satisfy a condition to another train (best-effort \
              with respect to checkpoints); the originals continue",
    params: TeeSettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `tee`.
    pub struct TeeSettings {
        /// the train to send copies to
        #[setting(required)]
        train: String,
        /// condition: copy only the records that satisfy it (default: every record)
        when: Option<String>,
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: TeeSettings = p.settings()?;
    // Checked here first, where the position in the file and the fields' kinds are known.
    expr_param(p, "when")?;
    let to = target(p, cx, &s.train)?;
    let tee = Tee::from_settings(&s, to, |r: &Record, p: &Path| r.get_path(p), id_field().set)
        .map_err(|e| setting_error(p, e))?;
    Ok(Box::new(tee))
}
