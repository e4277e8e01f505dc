//! Enrichment: fields looked up elsewhere (reverse DNS).

use crate::kit::CogDescriptor;

pub mod dns_reverse;

/// Descriptors of the cogs in this folder.
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![dns_reverse::DESCRIPTOR]
}
