//! The one integration-test binary: each area of the crate is a module below.

mod cogs;
mod daemon;
mod engine;
mod net;
mod reliability;
mod support;
