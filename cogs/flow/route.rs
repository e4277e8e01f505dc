//! `route`: sends the data that satisfy a condition to another train.

use std::rc::Rc;

use crate::engine::mailbox::Mailbox;
use crate::kit::on_error::LogLimiter;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::expr::Condition;
use crate::record::{Path, Record, Value, id_field};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::filter::{expr_param, mismatch_warning, parse_condition};
use super::setting_error;

/// Sends the data that satisfy `when` (every datum, without it) to the head of another
/// train; the others continue down this one. A routed datum keeps its event id: the other
/// train's drain acknowledges it, as this train's would have.
///
/// The receiving train finishes after this one at shutdown, so nothing routed is lost;
/// two trains routing to each other (directly or through others) are refused by `check`.
/// A train fed only by routes needs no supply. A comparison in `when` that the data make
/// impossible (a number compared with a string) is false, counted as an error of the cog
/// and logged with the event id, as in `filter`.
///
/// ```toml
/// [[train]]
/// name = "main"
///   [[train.cog]]
///   type = "file_in"
///   paths = ["app.log"]
///   [[train.cog]]
///   type = "route"
///   train = "errors"
///   when = 'message contains "ERROR"'
///   [[train.cog]]
///   type = "file_out"
///   path = "out/rest.log"
///
/// [[train]]
/// name = "errors"
///   [[train.cog]]
///   type = "file_out"
///   path = "out/errors.log"
/// ```
///
/// From its typed settings, without TOML, with the receiving train's mailbox at hand:
/// `Route::from_settings(&RouteSettings { train: "errors".into(), when: Some(..), ..Default::default() }, mailbox, get, id)`.
#[derive(Debug)]
pub struct Route<D> {
    to: Rc<Mailbox<D>>,
    when: Option<Condition<D>>,
    id: Option<Getter<D, EventId>>,
    limiter: LogLimiter,
}

impl<D> Route<D> {
    /// Sends the data that satisfy `when` (all, if `None`) to `to`.
    pub fn new(to: Rc<Mailbox<D>>, when: Option<Condition<D>>) -> Self {
        Route {
            to,
            when,
            id: None,
            limiter: LogLimiter::default(),
        }
    }

    /// Reads event ids with `id`, to name the data that `when` could not be tested on.
    pub fn with_ids(mut self, id: Getter<D, EventId>) -> Self {
        self.id = Some(id);
        self
    }

    /// A `route` made from its settings: `to` is the mailbox of the train `s.train`
    /// names, `get` reads the fields `when` names, `id` the event ids.
    pub fn from_settings<F>(
        s: &RouteSettings,
        to: Rc<Mailbox<D>>,
        get: F,
        id: Getter<D, EventId>,
    ) -> Result<Self, SettingError>
    where
        F: for<'a> Fn(&'a D, &Path) -> Option<&'a Value> + 'static,
    {
        let when = match &s.when {
            Some(text) => Some(Condition::new(parse_condition("when", text)?, get)),
            None => None,
        };
        Ok(Route::new(to, when).with_ids(id))
    }
}

impl<D: 'static> Cog<D> for Route<D> {
    fn name(&self) -> &str {
        "route"
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        let mut errors = 0;
        for d in batch.drain(..) {
            let mut mismatch = None;
            let send = self
                .when
                .as_ref()
                .is_none_or(|c| c.test_checked(&d, &mut mismatch));
            if let Some(m) = mismatch {
                errors += 1;
                let id = self.id.as_ref().and_then(|g| g.get(&d)).copied();
                mismatch_warning(&mut self.limiter, m, id, cx);
            }
            if send {
                self.to.send(d, cx);
            } else {
                out.push(d);
            }
        }
        out.count_errors(errors);
    }
}

/// The descriptor of `route`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "route",
    kind: CogKind::Transform,
    summary: "sends records that satisfy a condition to another train; the others continue",
    params: RouteSettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `route`.
    pub struct RouteSettings {
        /// the train to send records to
        #[setting(required)]
        train: String,
        /// condition: send only the records that satisfy it (default: every record)
        when: Option<String>,
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: RouteSettings = p.settings()?;
    // Checked here first, where the position in the file and the fields' kinds are known.
    expr_param(p, "when")?;
    let to = target(p, cx, &s.train)?;
    let route = Route::from_settings(&s, to, |r: &Record, p: &Path| r.get_path(p), id_field().get)
        .map_err(|e| setting_error(p, e))?;
    Ok(Box::new(route))
}

/// The mailbox of the train `name` (the value of `train`), with errors at that key.
pub(crate) fn target(
    p: &CogParams<'_>,
    cx: &BuildCx<'_>,
    name: &str,
) -> Result<Rc<Mailbox<Record>>, ConfigError> {
    if name == p.train() {
        return Err(p.error(
            "train",
            format!("train {name:?} cannot send records to itself"),
        ));
    }
    cx.mailbox(name).ok_or_else(|| {
        let names: Vec<String> = cx.train_names().iter().map(|n| format!("{n:?}")).collect();
        p.error(
            "train",
            format!("no train named {name:?} (trains: {})", names.join(", ")),
        )
    })
}
