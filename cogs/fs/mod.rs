//! Files.

pub mod file_in;
pub mod file_out;
pub mod spool;
pub mod tail;

use std::path::{Path, PathBuf};

use crate::schema::CogParams;

/// A path read from a cog's settings, resolved against the configuration file's directory.
fn resolve(p: &CogParams<'_>, path: &Path) -> PathBuf {
    // Paths in settings read from TOML come from UTF-8 text: nothing is lost.
    p.resolve(&path.to_string_lossy())
}
