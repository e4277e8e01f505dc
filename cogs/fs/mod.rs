//! Files.

pub mod file_in;
pub mod file_out;
pub mod spool;
pub mod tail;
