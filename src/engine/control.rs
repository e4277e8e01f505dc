//! What a cog shows of itself beyond its counters ([`Inspection`], from
//! [`Cog::inspect`](crate::Cog::inspect)) and the rollback of a supply ([`Rewind`], through
//! [`Cog::rewind`](crate::Cog::rewind)). A [`Service`](crate::engine::escapement::Service)
//! (the daemon's control server) asks for both; neither is ever on the per-datum path.

use std::fmt;

/// A source a supply reads (a file, say) and how far it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceState {
    /// The source as the supply names it (a file's path).
    pub path: String,
    /// Byte offset reading has reached: past the last line handed out.
    pub read: u64,
    /// Byte offset up to which every datum handed out was acknowledged (what a
    /// checkpoint holds), for supplies that follow acknowledgements.
    pub acknowledged: Option<u64>,
}

/// A bounded queue or buffer a cog holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferState {
    /// What it holds, in a word or two (`unacknowledged`, `queued`).
    pub name: &'static str,
    /// How much it holds now.
    pub fill: u64,
    /// Its bound, if it has one.
    pub limit: Option<u64>,
}

/// What [`Cog::inspect`](crate::Cog::inspect) reports: sources with their offsets, keys held
/// by a stateful cog, buffers. Empty by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspection {
    /// Sources of a supply, each with its read and acknowledged offsets.
    pub sources: Vec<SourceState>,
    /// Sources left out of `sources` (a supply lists at most [`Inspection::MAX_SOURCES`]).
    pub sources_omitted: u64,
    /// Keys held by a stateful cog (windows, groups, buckets...) and their bound.
    pub keys: Option<(u64, Option<u64>)>,
    /// Buffers, each with its fill and limit.
    pub buffers: Vec<BufferState>,
}

impl Inspection {
    /// Most sources one cog lists; the rest are only counted, so a supply following
    /// thousands of files keeps a status small.
    pub const MAX_SOURCES: usize = 1000;

    /// Adds a source (counted in `sources_omitted` beyond [`Inspection::MAX_SOURCES`]).
    pub fn source(&mut self, path: impl Into<String>, read: u64, acknowledged: Option<u64>) {
        if self.sources.len() >= Self::MAX_SOURCES {
            self.sources_omitted += 1;
            return;
        }
        self.sources.push(SourceState {
            path: path.into(),
            read,
            acknowledged,
        });
    }

    /// Sets the count of keys held and their bound.
    pub fn keys(&mut self, held: usize, limit: Option<usize>) {
        self.keys = Some((held as u64, limit.map(|l| l as u64)));
    }

    /// Adds a buffer.
    pub fn buffer(&mut self, name: &'static str, fill: usize, limit: Option<usize>) {
        self.buffers.push(BufferState {
            name,
            fill: fill as u64,
            limit: limit.map(|l| l as u64),
        });
    }

    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
            && self.sources_omitted == 0
            && self.keys.is_none()
            && self.buffers.is_empty()
    }
}

/// Where a [`Rewind`] makes a supply read again from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// A byte offset (the start of a line: `0`, or just past a newline).
    Offset(u64),
    /// A line number, the first line being 1.
    Line(u64),
    /// A time (RFC 3339 text), for supplies that can seek by time.
    Time(String),
}

/// A rollback: read source `source` again from `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewind {
    /// The source, as the supply names it in its [`Inspection`] (a file's path).
    pub source: String,
    /// Where to read again from.
    pub to: Position,
}

/// Why a [`Rewind`] was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RewindError {
    /// The cog cannot do it at all, or not in its present state (what it is doing, why).
    Unsupported(String),
    /// The cog reads no such source.
    NoSource(String),
    /// The position is not one in the source (past its end, not a line start, line 0).
    Invalid(String),
}

impl fmt::Display for RewindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewindError::Unsupported(s) | RewindError::NoSource(s) | RewindError::Invalid(s) => {
                f.write_str(s)
            }
        }
    }
}

impl std::error::Error for RewindError {}
