//! deadbeat: event and log processing on one single-threaded event loop.
//!
//! An [`Escapement`] (the event loop, on `mio`) drives [`Train`]s: ordered chains of
//! [`Cog`]s. A supply cog binds itself to events (file descriptors, timers, inotify,
//! signals) and injects data; each cog takes one datum and emits none, one or many; drains
//! write data out and acknowledge it. Cogs reach the pieces of a datum through
//! [`getset`] closures, so the same cogs work on the daemon's dynamic records and on a
//! program's own structs.
//!
//! Start with [`prelude`], the examples in `examples/`, and `docs/` for the user guide.

#![warn(missing_docs)]

pub mod ack;
pub mod checkpoint;
pub mod cog;
pub mod config;
pub mod daemon;
pub mod drain;
pub mod escapement;
pub mod expr;
pub mod format;
pub mod forward;
pub mod framing;
pub mod getset;
pub mod glob;
pub mod lines;
pub mod log;
pub mod mailbox;
pub mod on_error;
pub mod pool;
pub mod record;
pub mod reference;
pub mod supply;
pub mod timefmt;
pub mod train;

#[path = "../cogs/mod.rs"]
pub mod cogs;

pub use cog::{
    BoxError, Cog, EventId, InotifyEvent, JobId, JobOutput, JobPanic, JobResult, Local, Out, Wake,
};
pub use escapement::{CogRef, Ctx, Escapement, Options, ShutdownHandle, TimerId};
pub use train::{CogMetrics, Train, TrainMetrics};

/// Re-exported so cogs name the same versions the escapement uses.
pub use {inotify, mio, slog};

/// Everything a cog or an embedding program usually needs.
pub mod prelude {
    pub use crate::cog::{
        BoxError, Cog, EventId, InotifyEvent, JobId, JobOutput, JobPanic, JobResult, Local, Out,
        Wake,
    };
    pub use crate::escapement::{CogRef, Ctx, Escapement, Options, ShutdownHandle, TimerId};
    pub use crate::getset::{Field, Getter, MutGetter, Setter};
    pub use crate::train::{CogMetrics, Train, TrainMetrics};
    pub use mio::Interest;
}
