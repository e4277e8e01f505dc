//! `fields` cogs.
