//! Supplied cogs: parsing, fields, filtering and routing, IP, driven through TOML trains.

pub(crate) mod dns_reverse;
mod exec;
mod fields;
mod flow;
#[cfg(feature = "geoip")]
mod geoip;
mod ip;
mod keyed;
mod lookup;
mod merge;
mod multiline;
mod parallel;
mod parse;
mod pipeline;
mod template;
mod text;
mod typed;
mod typed_fs;
mod window;
