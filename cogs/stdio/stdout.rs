//! `stdout`: records to standard output.

use std::io;
use std::time::Duration;

use crate::config::{BuildCx, CogDescriptor, CogKind, CogParams, ConfigError};
use crate::drain::LineBuffer;
use crate::format::{FORMAT_PARAMS, OutputFormat};
use crate::prelude::*;
use crate::record::Record;

const RETRY: Local = 1;

/// Writes each record to standard output in the chosen format, one write per batch,
/// flushed on finish. Records are acknowledged once written.
///
/// Writes block when the reader is slow: stdout is for pipelines and terminals, where
/// that is the expected backpressure. A failed write (closed pipe) keeps the data,
/// pauses the supplies and retries every second.
///
/// ```toml
/// [[train.cog]]
/// type = "stdout"
/// format = "json"            # raw | json | template
/// # template = "{host} {message}"
/// ```
pub struct Stdout {
    lines: LineBuffer,
    failing: bool,
}

/// The descriptor of `stdout`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "stdout",
    kind: CogKind::Drain,
    summary: "writes records to standard output (raw, json or template), flushed per batch",
    params: &FORMAT_PARAMS,
    fields: &[],
    build,
};

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    Ok(Box::new(Stdout::new(OutputFormat::from_params(p)?)))
}

impl Stdout {
    /// Writes in `format`.
    pub fn new(format: OutputFormat) -> Self {
        Stdout {
            lines: LineBuffer::new(format, 256 << 10),
            failing: false,
        }
    }

    fn flush(&mut self, cx: &mut Ctx) {
        let mut w = io::stdout().lock();
        match self.lines.flush(&mut w, cx) {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    slog::info!(cx.logger(), "standard output writable again");
                    cx.resume_supplies();
                }
            }
            Err(e) => {
                if !self.failing {
                    slog::error!(cx.logger(), "writing standard output failed; holding data and retrying";
                        "error" => %e, "pending_records" => self.lines.pending_records());
                    self.failing = true;
                    cx.pause_supplies();
                }
                let _ = cx.timer_after(Duration::from_secs(1), RETRY);
            }
        }
    }
}

impl Cog<Record> for Stdout {
    fn name(&self) -> &str {
        "stdout"
    }

    fn process_batch(&mut self, batch: &mut Vec<Record>, _: &mut Out<Record>, cx: &mut Ctx) {
        for r in batch.iter() {
            self.lines.push(r);
        }
        crate::pool::recycle(batch.drain(..));
        if !self.failing {
            self.flush(cx);
        }
    }

    fn wake(&mut self, _: Local, _: Wake<'_>, _: &mut Out<Record>, cx: &mut Ctx) {
        self.flush(cx);
        if !self.failing && cx.is_shutting_down() {
            cx.finished();
        }
    }

    fn finish(&mut self, _: &mut Out<Record>, cx: &mut Ctx) {
        if self.lines.pending_bytes() > 0 || self.failing {
            cx.linger();
            self.flush(cx);
            if !self.failing {
                cx.finished();
            }
        }
    }
}
