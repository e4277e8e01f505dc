//! Shared machinery of line drains: render records into one buffer, write it in as few
//! system calls as possible, acknowledge only what was written.

use std::io::{self, Write};
use std::time::Duration;

use crate::engine::cog::{EventId, Local};
use crate::engine::escapement::Ctx;
use crate::kit::format::OutputFormat;
use crate::record::Record;

/// Rendered lines waiting to be written, with the ids of the records they came from.
///
/// A drain renders a whole batch, then calls [`flush`](LineBuffer::flush) once: one
/// `write(2)` for many lines. Records are acknowledged (`event_done`) only once every byte
/// of theirs has been written; after a failed write the unwritten rest stays buffered, so
/// retrying neither loses nor repeats a line.
#[derive(Debug)]
pub struct LineBuffer {
    format: OutputFormat,
    buf: Vec<u8>,
    ids: Vec<EventId>,
}

impl LineBuffer {
    /// An empty buffer rendering with `format`.
    pub fn new(format: OutputFormat, capacity: usize) -> Self {
        LineBuffer {
            format,
            buf: Vec::with_capacity(capacity),
            ids: Vec::new(),
        }
    }

    /// Renders one record.
    #[inline]
    pub fn push(&mut self, r: &Record) {
        self.format.write(r, &mut self.buf);
        self.ids.push(r.id);
    }

    /// Bytes waiting to be written.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Records waiting to be acknowledged.
    pub fn pending_records(&self) -> usize {
        self.ids.len()
    }

    /// Writes everything buffered to `w`, then acknowledges the records. On error, what
    /// was written is dropped from the buffer and the rest is kept for the next attempt.
    pub fn flush<W: Write + ?Sized>(&mut self, w: &mut W, cx: &mut Ctx<'_>) -> io::Result<()> {
        self.write_to(w)?;
        self.acknowledge(cx);
        Ok(())
    }

    /// Writes everything buffered to `w` but keeps the records unacknowledged, for a
    /// drain that must make the bytes durable (fsync) before it may acknowledge them.
    /// On error, what was written is dropped from the buffer and the rest is kept.
    pub fn write_to<W: Write + ?Sized>(&mut self, w: &mut W) -> io::Result<()> {
        let mut written = 0;
        let result = loop {
            if written == self.buf.len() {
                break w.flush();
            }
            match w.write(&self.buf[written..]) {
                Ok(0) => {
                    break Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the output accepts no more bytes",
                    ));
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..written);
        result
    }

    /// Acknowledges every held record, once all their bytes are written; a no-op while
    /// some are still buffered, because the held ids cannot tell written lines from the
    /// rest.
    pub fn acknowledge(&mut self, cx: &mut Ctx<'_>) {
        if !self.buf.is_empty() {
            return;
        }
        for &id in &self.ids {
            cx.event_done(id);
        }
        self.ids.clear();
    }

    /// Drops every held line and record without acknowledging them, for a drain whose
    /// output is gone for good; returns `(records, bytes)` dropped. Unacknowledged records
    /// are sent again on the next run by supplies that keep checkpoints.
    pub fn discard(&mut self) -> (usize, usize) {
        let dropped = (self.ids.len(), self.buf.len());
        self.buf.clear();
        self.ids.clear();
        dropped
    }

    /// Releases the buffer's memory beyond `keep` bytes; a drain with many idle outputs
    /// calls it so that one burst does not pin a large buffer per output.
    pub fn shrink_to(&mut self, keep: usize) {
        if self.buf.is_empty() {
            self.buf.shrink_to(keep);
        }
        if self.ids.is_empty() {
            self.ids.shrink_to(keep / 64);
        }
    }
}

/// Hold-and-retry for a drain whose writes fail: the data stay held, the supplies are
/// paused while failing, and a timer on `local` brings the next attempt, after a wait
/// that doubles from `first` up to `max`.
///
/// The drain calls [`failed`](HoldRetry::failed) for each failed write and
/// [`retry_later`](HoldRetry::retry_later) once per failed attempt, and
/// [`succeeded`](HoldRetry::succeeded) when everything held was written.
#[derive(Debug)]
pub struct HoldRetry {
    local: Local,
    first: Duration,
    max: Duration,
    /// The wait before the next attempt.
    delay: Duration,
    failing: bool,
}

impl HoldRetry {
    /// Retries on the timer `local`, first after `first`, then doubling up to `max`.
    pub fn new(local: Local, first: Duration, max: Duration) -> Self {
        HoldRetry {
            local,
            first,
            max,
            delay: first,
            failing: false,
        }
    }

    /// Whether writes are failing (data held, supplies paused).
    pub fn is_failing(&self) -> bool {
        self.failing
    }

    /// A write failed. The first failure of a run is reported by `log` (only called then:
    /// once per outage, however many writes fail) and pauses the supplies.
    pub fn failed(&mut self, cx: &mut Ctx<'_>, log: impl FnOnce(&mut Ctx<'_>)) {
        if !self.failing {
            log(cx);
            self.failing = true;
            cx.pause_supplies();
        }
    }

    /// Sets the timer of the next attempt; each one waits twice as long, up to `max`.
    pub fn retry_later(&mut self, cx: &mut Ctx<'_>) {
        let _ = cx.timer_after(self.delay, self.local);
        self.delay = (self.delay * 2).min(self.max);
    }

    /// Everything held was written: the waits start over and, after an outage, `log` says
    /// so and the supplies resume.
    pub fn succeeded(&mut self, cx: &mut Ctx<'_>, log: impl FnOnce(&mut Ctx<'_>)) {
        self.delay = self.first;
        if self.failing {
            log(cx);
        }
        self.give_up(cx);
    }

    /// Leaves the failing state without having written (the output is gone for good): the
    /// supplies resume.
    pub fn give_up(&mut self, cx: &mut Ctx<'_>) {
        if std::mem::take(&mut self.failing) {
            cx.resume_supplies();
        }
    }
}
