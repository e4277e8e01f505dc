//! Supplied cogs, one per file, grouped by what they touch.
//!
//! Cogs here use only the public API of the layers below them, as a cog written in another
//! crate would: the fast paths they take (`Map::append_slot`, `pool::with_stock`,
//! `kit::supply::FileFields`, `record::write_ip`...) are public and documented. What they
//! share among themselves (the socket server code of `net`, say) stays crate-private.

use crate::kit::CogDescriptor;

pub mod enrich;
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

/// Descriptors of every supplied cog, for the [`Registry`].
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
    .chain(enrich::descriptors())
    .collect()
}
