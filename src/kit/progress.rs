//! How far batch supplies have read: bytes of a known total, and lines, for the progress
//! bar `deadbeat run` shows on a terminal.
//!
//! Supplies that read inputs of known size to their end (`file_in`, `stdin` redirected
//! from a regular file) add the sizes with [`BatchProgress::expect`] when they start and
//! what each read brought with [`BatchProgress::advance`]. The counters are process-wide
//! relaxed atomics, one addition per read (not per line), so counting costs nothing
//! measurable; a program running several escapements sees their sums.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes expected and read, and lines read, by the process's batch supplies.
#[derive(Debug, Default)]
pub struct BatchProgress {
    total: AtomicU64,
    read: AtomicU64,
    lines: AtomicU64,
}

/// A reading of [`BatchProgress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Bytes the batch supplies will read, as known so far.
    pub total: u64,
    /// Bytes read.
    pub read: u64,
    /// Lines read.
    pub lines: u64,
}

static BATCH: BatchProgress = BatchProgress {
    total: AtomicU64::new(0),
    read: AtomicU64::new(0),
    lines: AtomicU64::new(0),
};

/// The process's batch progress.
pub fn batch() -> &'static BatchProgress {
    &BATCH
}

impl BatchProgress {
    /// `bytes` more will be read (an input's size, when it is opened or known).
    pub fn expect(&self, bytes: u64) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A read brought `bytes` and `lines`.
    pub fn advance(&self, bytes: u64, lines: u64) {
        self.read.fetch_add(bytes, Ordering::Relaxed);
        self.lines.fetch_add(lines, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            total: self.total.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
            lines: self.lines.load(Ordering::Relaxed),
        }
    }
}

/// The size of the regular file `f` from its current offset to its end; `None` for a
/// pipe, a terminal or a socket, whose size is not known in advance.
pub fn remaining_size(f: &std::fs::File) -> Option<u64> {
    use std::io::Seek;
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    // `Seek` on `&File` only asks for the offset: the file is not moved.
    let at = (&mut &*f).stream_position().ok()?;
    Some(meta.len().saturating_sub(at))
}
