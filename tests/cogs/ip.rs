//! `ip` cogs.
