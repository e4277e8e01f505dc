//! Enrichment and offload: fields added from tables and databases kept outside the daemon,
//! and records handed to something slower than the loop (an external program, a DNS server)
//! and brought back in order.

use crate::kit::CogDescriptor;
use crate::schema::{CogParams, ConfigError, SettingError};

pub mod dns_reverse;
pub mod exec;
#[cfg(feature = "geoip")]
pub mod geoip;
pub mod lookup;
pub mod reload;

/// Descriptors of the cogs in this folder.
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![
        dns_reverse::DESCRIPTOR,
        exec::DESCRIPTOR,
        #[cfg(feature = "geoip")]
        geoip::DESCRIPTOR,
        lookup::DESCRIPTOR,
    ]
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
