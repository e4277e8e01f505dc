//! `text` cogs.
