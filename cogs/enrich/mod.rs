//! Enrichment and offload: cogs that hand records to something slower than the loop (an
//! external program) and bring them back in order.

use crate::kit::CogDescriptor;
use crate::schema::{CogParams, ConfigError, SettingError};

pub mod exec;

/// Descriptors of the cogs in this folder.
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![exec::DESCRIPTOR]
}

/// A [`SettingError`] as a configuration error: at its key when the configuration gives
/// that key, else about the cog as a whole.
pub(crate) fn setting_error(p: &CogParams<'_>, e: SettingError) -> ConfigError {
    if p.node(e.key).is_some() {
        p.setting_error(e)
    } else {
        p.cog_error(e.msg)
    }
}
