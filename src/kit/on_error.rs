//! What a cog does with a datum it failed on: `on_error = "drop" | "keep" | "train:NAME"`.
//!
//! Nothing is dropped silently: every failure is counted as an error of the cog and
//! logged with the event id (at most [`LOG_BURST`] lines a second per cog, then a count of
//! what was not logged).

use std::fmt::Display;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::engine::cog::{EventId, Out};
use crate::engine::escapement::Ctx;
use crate::engine::getset::{Getter, Setter};
use crate::engine::mailbox::Mailbox;
use crate::kit::BuildCx;
use crate::record::{Key, Record, Value};
use crate::schema::{CogParams, ConfigError, SettingError};

/// Failures logged per second and cog before the rest are only counted.
pub const LOG_BURST: u32 = 10;

crate::settings! {
    /// The `on_error` key every failing cog takes (flatten it into a cog's settings).
    pub struct OnErrorSettings {
        /// drop: acknowledge and drop; keep: pass the record on unchanged with the reason in
        /// `error`; train:NAME: send it, with the reason in `error`, to the dead-letter train NAME
        on_error: String = "keep",
    }
}

/// Where a failed datum goes.
#[derive(Debug)]
pub enum ErrorAction<D> {
    /// Dropped (and acknowledged, so its supply does not wait for it).
    Drop,
    /// Passed on unchanged but for the reason.
    Keep,
    /// Sent with the reason to another train.
    Train(String, Rc<Mailbox<D>>),
}

/// Keeps a stream of warnings about bad input to [`LOG_BURST`] lines a second: a storm of
/// bad records must not flood the log (or its disk) while each is still counted.
#[derive(Debug, Default)]
pub struct LogLimiter {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// Whether one more warning may be logged now. Opening a new one-second window first
    /// logs how many were held back in the last, as `what` (e.g. "failures") from `cog`.
    pub fn allow(&mut self, what: &str, cog: &str, cx: &mut Ctx<'_>) -> bool {
        let now = cx.now();
        let fresh = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1));
        if fresh {
            if self.suppressed > 0 {
                slog::warn!(cx.logger(), "warnings held back";
                    "what" => what, "cog" => cog, "count" => self.suppressed);
            }
            self.window_start = Some(now);
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < LOG_BURST {
            self.logged += 1;
            true
        } else {
            if self.suppressed == 0 {
                // Said at once: the window's count only comes with the next warning.
                slog::warn!(cx.logger(), "more warnings held back for a second (all are counted)";
                    "what" => what, "cog" => cog);
            }
            self.suppressed += 1;
            false
        }
    }
}

/// Handles data a cog failed on, the same way in every cog.
pub struct OnError<D> {
    action: ErrorAction<D>,
    id: Getter<D, EventId>,
    reason: Setter<D, String>,
    limiter: LogLimiter,
}

impl<D> std::fmt::Debug for OnError<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = match &self.action {
            ErrorAction::Drop => "drop".to_string(),
            ErrorAction::Keep => "keep".to_string(),
            ErrorAction::Train(name, _) => format!("train:{name}"),
        };
        f.debug_struct("OnError").field("action", &action).finish()
    }
}

impl<D: 'static> OnError<D> {
    /// Handles failures with `action`; `id` reads a datum's event id, `reason` stores why
    /// it failed (for `keep` and dead-letter trains).
    pub fn new(action: ErrorAction<D>, id: Getter<D, EventId>, reason: Setter<D, String>) -> Self {
        OnError {
            action,
            id,
            reason,
            limiter: LogLimiter::default(),
        }
    }

    /// Counts, logs and routes a datum that `cog` failed on.
    pub fn fail(
        &mut self,
        mut d: D,
        cog: &str,
        why: &dyn Display,
        out: &mut Out<D>,
        cx: &mut Ctx<'_>,
    ) {
        out.count_errors(1);
        let id = self.id.get(&d).copied().unwrap_or_default();
        self.log(cog, id, why, cx);
        match &self.action {
            ErrorAction::Drop => {
                cx.event_done(id);
                out.count_dropped(1);
            }
            ErrorAction::Keep => {
                self.reason.set(&mut d, why.to_string());
                out.push(d);
            }
            ErrorAction::Train(_, mailbox) => {
                self.reason.set(&mut d, why.to_string());
                mailbox.send(d, cx);
            }
        }
    }

    fn log(&mut self, cog: &str, id: EventId, why: &dyn Display, cx: &mut Ctx<'_>) {
        if self.limiter.allow("failures", cog, cx) {
            slog::warn!(cx.logger(), "failed on a record"; "cog" => cog, "event" => id, "reason" => %why);
        }
    }
}

fn error_key() -> Key {
    static KEY: std::sync::OnceLock<Key> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| Key::new("error"))
}

/// Reads `on_error` for a cog over `Record`: the reason goes in the field `error`.
pub fn from_params(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<OnError<Record>, ConfigError> {
    let s: OnErrorSettings = p.group()?;
    from_settings(&s, p, cx)
}

/// Builds what `on_error` says from a cog's typed settings; errors point at the cog's key.
pub fn from_settings(
    s: &OnErrorSettings,
    p: &CogParams<'_>,
    cx: &BuildCx<'_>,
) -> Result<OnError<Record>, ConfigError> {
    if let Some(name) = s.on_error.strip_prefix("train:")
        && cx.mailbox(name).is_none()
    {
        return Err(p.error(
            "on_error",
            format!(
                "no train named {name:?} (trains: {})",
                cx.train_names().join(", ")
            ),
        ));
    }
    for_datum(
        &s.on_error,
        |name| cx.mailbox(name),
        Getter::new(|r: &Record| Some(&r.id)),
        Setter::new(|r: &mut Record, why: String| {
            r.insert(error_key(), Value::Str(why));
        }),
    )
    .map_err(|e| p.setting_error(e))
}

/// The [`OnError`] an `on_error` setting names, over any datum: `"drop"`, `"keep"`, or
/// `"train:NAME"` with `train` giving the mailbox of the train NAME. `id` reads a datum's
/// event id, `reason` stores why it failed. (What the configuration builds for records is
/// [`from_settings`], on top of this.)
pub fn for_datum<D: 'static>(
    setting: &str,
    train: impl Fn(&str) -> Option<Rc<Mailbox<D>>>,
    id: Getter<D, EventId>,
    reason: Setter<D, String>,
) -> Result<OnError<D>, SettingError> {
    let action = match setting {
        "drop" => ErrorAction::Drop,
        "keep" => ErrorAction::Keep,
        other => match other.strip_prefix("train:") {
            Some(name) => match train(name) {
                Some(m) => ErrorAction::Train(name.to_string(), m),
                None => {
                    return Err(SettingError::new(
                        "on_error",
                        format!("no train named {name:?}"),
                    ));
                }
            },
            None => {
                return Err(SettingError::new(
                    "on_error",
                    format!("expected \"drop\", \"keep\" or \"train:NAME\", found {other:?}"),
                ));
            }
        },
    };
    Ok(OnError::new(action, id, reason))
}
