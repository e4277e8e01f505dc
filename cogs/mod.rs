//! Supplied cogs, one per file, grouped by what they touch.
//!
//! Every cog here uses only the crate's public API ([`crate::prelude`]), exactly as a cog
//! written in another crate would.

pub mod flow;
