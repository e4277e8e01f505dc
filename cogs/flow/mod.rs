//! Cogs that shape the flow of data without looking inside it.

pub mod inbox;
pub mod pass;

use crate::config::CogDescriptor;

/// Descriptors of the flow cogs beyond `pass` (filter, route, tee).
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![]
}
