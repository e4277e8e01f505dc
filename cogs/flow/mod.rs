//! Cogs that shape the flow of data without looking inside it.

pub mod pass;
