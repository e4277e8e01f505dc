//! `parse` cogs.
