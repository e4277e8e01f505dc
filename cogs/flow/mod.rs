//! Cogs that shape the flow of data: pass it on, filter it, send it to other trains.

pub mod filter;
pub mod inbox;
pub mod pass;
pub mod route;
pub mod tee;

use crate::config::CogDescriptor;

/// Descriptors of the flow cogs beyond `pass` (filter, route, tee).
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![filter::DESCRIPTOR, route::DESCRIPTOR, tee::DESCRIPTOR]
}
