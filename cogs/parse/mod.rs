//! Structured formats: JSON, syslog, CSV, key=value.

use crate::config::CogDescriptor;

/// Descriptors of the cogs in this folder.
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![]
}
