//! IP addresses: anonymisation, network tagging.

use crate::kit::CogDescriptor;
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
