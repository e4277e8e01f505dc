//! Supplied cogs, one per file, grouped by what they touch.
//!
//! Cogs here use the crate's public API only, as a cog written in another crate would.

use crate::kit::CogDescriptor;

pub mod fields;
pub mod flow;
pub mod fs;
pub mod ip;
pub mod net;
pub mod parse;
pub mod registry;
pub mod stdio;
pub mod text;

pub use registry::Registry;

/// Descriptors of every supplied cog, for the [`Registry`](crate::cogs::Registry).
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![
        stdio::stdin::DESCRIPTOR,
        stdio::stdout::DESCRIPTOR,
        fs::file_in::DESCRIPTOR,
        fs::file_out::DESCRIPTOR,
        fs::tail::DESCRIPTOR,
        fs::spool::DESCRIPTOR,
        flow::pass::DESCRIPTOR,
    ]
    .into_iter()
    .chain(flow::descriptors())
    .chain(text::descriptors())
    .chain(parse::descriptors())
    .chain(fields::descriptors())
    .chain(ip::descriptors())
    .chain(net::descriptors())
    .collect()
}
