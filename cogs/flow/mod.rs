//! Cogs that shape the flow of data without looking inside it.

pub mod inbox;
pub mod pass;
