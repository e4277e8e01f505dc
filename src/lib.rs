//! deadbeat: event and log processing on one single-threaded event loop.
//!
//! An [`Escapement`] (the event loop, on `mio`) drives [`Train`]s: ordered chains of
//! [`Cog`]s. A supply cog binds itself to events (file descriptors, timers, inotify,
//! signals) and injects data; each cog takes one datum and emits none, one or many; drains
//! write data out and acknowledge it. Cogs reach the pieces of a datum through
//! [`getset`](engine::getset) closures, so the same cogs work on the daemon's dynamic
//! records and on a program's own structs.
//!
//! The crate is six layers, each a module; a layer uses only the ones before it:
//!
//! | layer | what it holds |
//! |---|---|
//! | [`engine`] | the escapement, the `Cog` trait, trains, mailboxes, getters/setters; any datum |
//! | [`record`] | the daemon's datum: `Record`, `Value`, keys, paths, time, JSON, conditions |
//! | [`schema`] | configuration values with their place in the file; typed settings ([`settings!`]) |
//! | [`kit`] | what cogs share: lines, framing, supply and drain helpers, formats, `on_error`, checkpoints, forwarding |
//! | [`cogs`] | the supplied cogs and their [`Registry`](cogs::Registry) |
//! | [`daemon`] | configuration files into trains, the command line ([`daemon::main`]), the process |
//!
//! Start with [`prelude`], the examples in `examples/`, and `docs/` for the user guide
//! (`docs/architecture.md` draws the layers).

#![warn(missing_docs)]

// The layers, lowest first. Each imports only the layers above it in this list
// (tests/layers.rs checks it).
#[path = "../cogs/mod.rs"]
pub mod cogs;
pub mod daemon;
pub mod engine;
pub mod kit;
pub mod record;
pub mod schema;

pub use engine::cog::{
    BoxError, Cog, EventId, InotifyEvent, JobId, JobOutput, JobPanic, JobResult, Local, Out, Wake,
};
pub use engine::escapement::{CogRef, Ctx, Escapement, Options, ShutdownHandle, TimerId};
pub use engine::train::{CogMetrics, Train, TrainMetrics};

/// Re-exported so cogs name the same versions the escapement uses.
pub use {inotify, mio, slog};

/// Everything a cog or an embedding program usually needs.
pub mod prelude {
    pub use crate::engine::cog::{
        BoxError, Cog, EventId, InotifyEvent, JobId, JobOutput, JobPanic, JobResult, Local, Out,
        Wake,
    };
    pub use crate::engine::escapement::{
        CogRef, Ctx, Escapement, Options, ShutdownHandle, TimerId,
    };
    pub use crate::engine::getset::{Field, Getter, MutGetter, Setter};
    pub use crate::engine::train::{CogMetrics, Train, TrainMetrics};
    pub use mio::Interest;
}
