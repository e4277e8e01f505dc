//! Standard input and output.

pub mod stdin;
pub mod stdout;
