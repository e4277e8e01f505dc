//! Supplied cogs: parsing, fields, filtering and routing, IP, driven through TOML trains.

pub(crate) mod dns_reverse;
mod fields;
mod flow;
mod ip;
mod keyed;
mod merge;
mod multiline;
mod parse;
mod pipeline;
mod template;
mod text;
mod typed;
mod typed_fs;
mod window;
