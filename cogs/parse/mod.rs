//! Structured formats: JSON, syslog, CSV, key=value.
//!
//! Each cog is a [`common::ParseCog`] around a hand-written parser; the parsers are public
//! functions too (`json_parse::parse`, `syslog_parse::parse`, ...) for programs and fuzz
//! targets that call them directly.

use crate::kit::CogDescriptor;

pub mod common;
pub mod csv_parse;
pub mod json_parse;
pub mod kv_parse;
pub mod syslog_parse;

pub use common::{ParseCog, ParseError, Parser};

/// Descriptors of the cogs in this folder.
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![
        json_parse::DESCRIPTOR,
        syslog_parse::DESCRIPTOR,
        csv_parse::DESCRIPTOR,
        kv_parse::DESCRIPTOR,
    ]
}
