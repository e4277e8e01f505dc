//! IP addresses: anonymisation, network tagging.

use std::rc::Rc;

use crate::engine::mailbox::Mailbox;
use crate::kit::CogDescriptor;
use crate::kit::on_error::{ErrorAction, OnError};
use crate::prelude::*;
use crate::schema::{CogParams, ConfigError, SettingError};

pub mod anonymise;
pub mod cidr_tag;

/// Descriptors of the cogs in this folder.
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![anonymise::DESCRIPTOR, cidr_tag::DESCRIPTOR]
}

/// A [`SettingError`] as a configuration error: at its key when the configuration gives
/// that key, else about the cog as a whole (a key left out is the cog's mistake; the
/// message says which keys to give).
pub(crate) fn setting_error(p: &CogParams<'_>, e: SettingError) -> ConfigError {
    if p.node(e.key).is_some() {
        p.setting_error(e)
    } else {
        p.cog_error(e.msg)
    }
}

/// The [`OnError`] an `on_error` setting names, over any datum: `"drop"`, `"keep"`, or
/// `"train:NAME"` with `train` giving the mailbox of the train NAME. `id` reads a datum's
/// event id, `reason` stores why it failed. (What the configuration builds for records is
/// [`on_error::from_settings`](crate::kit::on_error::from_settings).)
pub fn on_error_from<D: 'static>(
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
