//! The cog kit: what supplied cogs share and what a cog written in another crate uses to
//! match them — line splitting and framing, supply and drain helpers, output formats,
//! `on_error` routing, acknowledgements and checkpoints, globs, the forwarding buffer,
//! HTTP request framing, and the descriptors and build context through which cogs are
//! built from configuration.

pub mod ack;
mod build;
pub mod checkpoint;
pub mod disk_buffer;
pub mod drain;
pub mod event_time;
pub mod format;
pub mod forward;
pub mod framing;
pub mod glob;
pub mod held;
pub mod http;
pub mod keyed;
pub mod lines;
pub mod on_error;
pub mod progress;
pub mod rewind;
pub mod seen_keys;
pub mod supply;
pub mod tls;
pub mod window;

pub use build::{BuildCx, BuildFn, Built, CogDescriptor, CogKind};
