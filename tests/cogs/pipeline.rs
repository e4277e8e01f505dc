//! `pipeline` cogs.
