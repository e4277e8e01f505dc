//! IP addresses: anonymisation, network tagging.

use crate::kit::CogDescriptor;

pub mod anonymise;
pub mod cidr_tag;

/// Descriptors of the cogs in this folder.
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![anonymise::DESCRIPTOR, cidr_tag::DESCRIPTOR]
}
