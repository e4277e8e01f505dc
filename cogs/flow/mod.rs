//! Cogs that shape the flow of data: pass it on, filter it, send it to other trains.

pub mod drop;
pub mod filter;
pub mod inbox;
pub mod pass;
pub mod route;
pub mod tee;

use crate::kit::CogDescriptor;

/// Descriptors of the flow cogs beyond `pass` (filter, route, tee, drop).
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![
        filter::DESCRIPTOR,
        route::DESCRIPTOR,
        tee::DESCRIPTOR,
        drop::DESCRIPTOR,
    ]
}
