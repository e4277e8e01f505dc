//! `flow` cogs.
