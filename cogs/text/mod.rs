//! Text parsing with regular expressions and presets.
//!
//! The `regex` cog is always registered: its presets are hand-written parsers. Only
//! `pattern` needs the `regex` cargo feature (on by default); without it a `pattern` is a
//! configuration error that says so.

use crate::kit::CogDescriptor;

pub mod multiline;
pub mod presets;
pub mod regex;
#[cfg(feature = "regex")]
pub mod simple_pattern;

/// Descriptors of the cogs in this folder.
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![regex::DESCRIPTOR, multiline::DESCRIPTOR]
}
