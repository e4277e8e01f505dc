//! The engine: the escapement (one single-threaded event loop on mio), the [`Cog`] trait,
//! trains of cogs, mailboxes between trains, and the getters/setters through which cogs
//! reach the data.
//!
//! The engine knows nothing of records, configuration or files: it moves any datum `D`.
//!
//! [`Cog`]: cog::Cog

pub mod cog;
pub mod control;
pub mod escapement;
pub mod getset;
pub mod mailbox;
pub mod train;
