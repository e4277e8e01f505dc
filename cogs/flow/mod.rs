//! Cogs that shape the flow of data: pass it on, filter it, send it to other trains.

pub mod dedup;
pub mod drop;
pub mod filter;
pub mod inbox;
pub mod merge;
pub mod parallel;
pub mod pass;
pub mod route;
pub mod tee;
pub mod threshold;
pub mod throttle;
pub mod window;

use crate::kit::CogDescriptor;

/// Descriptors of the flow cogs beyond `pass` (filter, route, tee, drop, dedup, throttle,
/// window, threshold, merge).
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![
        filter::DESCRIPTOR,
        route::DESCRIPTOR,
        tee::DESCRIPTOR,
        drop::DESCRIPTOR,
        dedup::DESCRIPTOR,
        throttle::DESCRIPTOR,
        window::DESCRIPTOR,
        threshold::DESCRIPTOR,
        merge::DESCRIPTOR,
        parallel::DESCRIPTOR,
    ]
}

/// A [`SettingError`](crate::schema::SettingError) as a configuration error: at its key
/// when the configuration gives that key, else about the cog as a whole (a key left out is
/// the cog's mistake; the message says which keys to give).
pub(crate) fn setting_error(
    p: &crate::schema::CogParams<'_>,
    e: crate::schema::SettingError,
) -> crate::schema::ConfigError {
    if p.node(e.key).is_some() {
        p.setting_error(e)
    } else {
        p.cog_error(e.msg)
    }
}
