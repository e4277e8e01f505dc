//! `filter`: keeps or drops data by a condition.

use crate::kit::on_error::LogLimiter;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::expr::{Condition, Expr, Mismatch};
use crate::record::{Path, Record, Value, id_field};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::setting_error;

/// Keeps the data that satisfy a condition (`keep`), or drops them (`drop`). Dropped data
/// are acknowledged, so the supply that sent them still advances its checkpoint, and
/// counted as dropped.
///
/// The condition language is described in [`crate::record::expr`] and in the user guide;
/// it is parsed and checked when the configuration loads, and a condition on a missing
/// field is false. A comparison of a field known to hold numbers with a string is a configuration
/// error; one that the data make impossible (a number compared with a string, text that
/// is no number with a number) is false, counted as an error of the cog and logged with
/// the event id (at most 10 lines a second).
///
/// ```toml
/// [[train.cog]]
/// type = "filter"
/// keep = 'status >= 400 and client in_cidr ["10.0.0.0/8", "2001:db8::/32"]'
///
/// [[train.cog]]
/// type = "filter"
/// drop = 'message contains "healthcheck"'
/// ```
///
/// On any datum, with a field lookup and an id getter:
///
/// ```
/// use deadbeat::cogs::flow::filter::Filter;
/// use deadbeat::record::expr::{Condition, Expr};
/// use deadbeat::prelude::*;
/// use deadbeat::record::{Path, Value};
/// struct Hit { id: EventId, status: Value }
/// fn get<'a>(h: &'a Hit, p: &Path) -> Option<&'a Value> {
///     (p.to_string() == "status").then_some(&h.status)
/// }
/// let cond = Condition::new(Expr::parse("status >= 500").unwrap(), get);
/// let _errors_only = Filter::keep(cond, Getter::new(|h: &Hit| Some(&h.id)));
/// ```
///
/// From its typed settings, without TOML:
/// `Filter::from_settings(&FilterSettings { keep: Some("status >= 500".into()), ..Default::default() }, get, id)`.
#[derive(Debug)]
pub struct Filter<D> {
    cond: Condition<D>,
    keep: bool,
    id: Getter<D, EventId>,
    limiter: LogLimiter,
}

impl<D> Filter<D> {
    /// Passes on the data that satisfy `cond`; `id` reads the id to acknowledge the others.
    pub fn keep(cond: Condition<D>, id: Getter<D, EventId>) -> Self {
        Filter {
            cond,
            keep: true,
            id,
            limiter: LogLimiter::default(),
        }
    }

    /// Drops the data that satisfy `cond`; `id` reads the id to acknowledge them.
    pub fn drop(cond: Condition<D>, id: Getter<D, EventId>) -> Self {
        Filter {
            cond,
            keep: false,
            id,
            limiter: LogLimiter::default(),
        }
    }

    /// A `filter` made from its settings: `get` reads the fields the condition names,
    /// `id` the id to acknowledge dropped data with. Exactly one of `keep` and `drop`
    /// must be given.
    pub fn from_settings<F>(
        s: &FilterSettings,
        get: F,
        id: Getter<D, EventId>,
    ) -> Result<Self, SettingError>
    where
        F: for<'a> Fn(&'a D, &Path) -> Option<&'a Value> + 'static,
    {
        match (&s.keep, &s.drop) {
            (Some(e), None) => Ok(Filter::keep(
                Condition::new(parse_condition("keep", e)?, get),
                id,
            )),
            (None, Some(e)) => Ok(Filter::drop(
                Condition::new(parse_condition("drop", e)?, get),
                id,
            )),
            (Some(_), Some(_)) => Err(SettingError::new(
                "drop",
                "give either `keep` or `drop`, not both",
            )),
            (None, None) => Err(SettingError::new(
                "keep",
                "give a condition in `keep` (records to pass on) or `drop` (records to drop)",
            )),
        }
    }
}

/// Parses the condition given under `key`.
pub(crate) fn parse_condition(key: &'static str, text: &str) -> Result<Expr, SettingError> {
    Expr::parse(text).map_err(|e| {
        SettingError::new(
            key,
            format!("in the condition at column {}: {}", e.column, e.message),
        )
    })
}

impl<D: 'static> Cog<D> for Filter<D> {
    fn name(&self) -> &str {
        "filter"
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        let mut dropped = 0;
        let mut errors = 0;
        for d in batch.drain(..) {
            let mut mismatch = None;
            let pass = self.cond.test_checked(&d, &mut mismatch) == self.keep;
            if let Some(m) = mismatch {
                errors += 1;
                mismatch_warning(&mut self.limiter, m, self.id.get(&d).copied(), cx);
            }
            if pass {
                out.push(d);
            } else {
                if let Some(id) = self.id.get(&d) {
                    cx.event_done(*id);
                }
                dropped += 1;
            }
        }
        out.count_dropped(dropped);
        out.count_errors(errors);
    }
}

/// The descriptor of `filter`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "filter",
    kind: CogKind::Transform,
    summary: "keeps (keep) or drops (drop) records by a condition; dropped records are \
              acknowledged",
    params: FilterSettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `filter`.
    pub struct FilterSettings {
        /// condition: pass on only the records that satisfy it (give keep or drop)
        keep: Option<String>,
        /// condition: drop the records that satisfy it (give keep or drop)
        drop: Option<String>,
    }
}

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: FilterSettings = p.settings()?;
    // Checked here first: only the configuration knows where a mistake sits in the file
    // and what the cogs before this one put in each field.
    expr_param(p, "keep")?;
    expr_param(p, "drop")?;
    let filter = Filter::from_settings(&s, |r: &Record, p: &Path| r.get_path(p), id_field().get)
        .map_err(|e| setting_error(p, e))?;
    Ok(Box::new(filter))
}

/// Logs a comparison the data made impossible, within the limiter's rate.
pub(crate) fn mismatch_warning(
    limiter: &mut LogLimiter,
    m: Mismatch<'_>,
    event: Option<EventId>,
    cx: &mut Ctx,
) {
    if limiter.allow("condition type mismatches", "", cx) {
        slog::warn!(cx.logger(), "condition compares values of different kinds";
            "event" => event, "why" => %m);
    }
}

/// Parses the condition under `key`, if given. An error is placed at the key's value and
/// names the column within the expression; when the value is written without escapes on one
/// line, the reported file position is that of the offending character itself.
pub fn expr_param(p: &CogParams<'_>, key: &str) -> Result<Option<Expr>, ConfigError> {
    let Some(text) = p.str(key)? else {
        return Ok(None);
    };
    Expr::parse(text)
        .and_then(|e| {
            e.check_kinds(|path| p.field_kind(&path.to_string()))
                .map(|()| e)
        })
        .map(Some)
        .map_err(|e| {
            let mut err = p.error(
                key,
                format!("in the condition at column {}: {}", e.column, e.message),
            );
            // Only a plain one-line string is its own text plus two quotes: anything longer
            // has escapes or is multi-line, and columns no longer map one to one.
            let plain = p
                .node(key)
                .is_some_and(|n| n.span.len() == text.len() + 2 && !text.contains('\n'));
            if let (true, Some((line, col))) = (plain, err.at) {
                err.at = Some((line, col + e.column));
            }
            err
        })
}
