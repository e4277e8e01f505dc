//! The daemon: configuration files loaded and assembled into trains, the process around
//! them (detach, pidfile, privileges), its log, and the generated cog reference.

pub mod cli;
pub mod config;
pub mod graph;
pub mod http;
pub mod log;
pub mod process;
pub mod progress;
pub mod reference;
pub mod top;
pub mod trial;

pub use cli::main;
pub use config::Config;
