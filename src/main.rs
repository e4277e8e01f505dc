//! The `deadbeat` daemon: runs TOML-configured trains of the supplied cogs.
//!
//! The command line lives in the library ([`deadbeat::daemon::cli`]) so that a program
//! with cogs of its own is the same daemon (see `examples/custom_daemon.rs`).

use std::process::ExitCode;

fn main() -> ExitCode {
    deadbeat::daemon::main(deadbeat::cogs::Registry::builtin())
}
