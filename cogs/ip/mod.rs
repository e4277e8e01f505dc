//! IP addresses: anonymisation, network tagging.

use crate::config::CogDescriptor;

/// Descriptors of the cogs in this folder.
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![]
}
