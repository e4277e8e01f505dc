//! `stdout`: records to standard output.

use std::io;
use std::time::Duration;

use crate::kit::drain::{HoldRetry, LineBuffer};
use crate::kit::format::{FormatSettings, OutputFormat};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::Record;
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

const RETRY: Local = 1;
/// Wait between attempts while writes fail.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Writes each record to standard output in the chosen format, one write per batch,
/// flushed on finish. Records are acknowledged once written.
///
/// Writes block when the reader is slow: stdout is for pipelines and terminals, where
/// that is the expected backpressure. A reader that closes the pipe (`| head -1`) is final,
/// as for `cat`: the daemon stops (exit 1) and logs once how many records were not
/// written; supplies with checkpoints send them again on the next run. Other write errors
/// keep the data, pause the supplies and retry every second (until `[engine]
/// stop_timeout` ends a stop).
///
/// ```toml
/// [[train.cog]]
/// type = "stdout"
/// format = "json"            # raw | json | template
/// # template = "{host} {message}"
/// ```
///
/// From Rust: `Stdout::from_settings(&StdoutSettings { format: FormatSettings { format: Format::Json,
/// ..Default::default() } })`.
pub struct Stdout {
    lines: LineBuffer,
    hold: HoldRetry,
    /// The reader closed the pipe: nothing can be written any more.
    closed: bool,
    /// Records and bytes dropped since the pipe closed.
    lost: (usize, usize),
    reported: bool,
}

/// The descriptor of `stdout`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "stdout",
    kind: CogKind::Drain,
    summary: "writes records to standard output (raw, json or template), flushed per batch",
    params: StdoutSettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `stdout`.
    pub struct StdoutSettings {
        /// How each record is rendered.
        #[setting(flatten)]
        format: FormatSettings,
    }
}

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: StdoutSettings = p.settings()?;
    Ok(Box::new(
        Stdout::from_settings(&s).map_err(|e| p.setting_error(e))?,
    ))
}

impl Stdout {
    /// A `stdout` drain made from its settings, without a configuration file.
    pub fn from_settings(s: &StdoutSettings) -> Result<Self, SettingError> {
        Ok(Stdout::with_format(OutputFormat::new(&s.format)?))
    }

    /// Writes in `format`.
    pub fn with_format(format: OutputFormat) -> Self {
        Stdout {
            lines: LineBuffer::new(format, 256 << 10),
            hold: HoldRetry::new(RETRY, RETRY_EVERY, RETRY_EVERY),
            closed: false,
            lost: (0, 0),
            reported: false,
        }
    }

    /// Drops what is held once the pipe is closed; counts it as errors.
    fn drop_held(&mut self, out: &mut Out<Record>) {
        let (records, bytes) = self.lines.discard();
        out.count_errors(records as u64);
        self.lost.0 += records;
        self.lost.1 += bytes;
    }

    fn flush(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.closed {
            self.drop_held(out);
            return;
        }
        let mut w = io::stdout().lock();
        match self.lines.flush(&mut w, cx) {
            Ok(()) => self.hold.succeeded(cx, |cx| {
                slog::info!(cx.logger(), "standard output writable again");
            }),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                self.drop_held(out);
                self.hold.give_up(cx);
                cx.fail("standard output was closed by its reader (broken pipe)");
                cx.shutdown();
            }
            Err(e) => {
                let pending = self.lines.pending_records();
                self.hold.failed(cx, |cx| {
                    slog::error!(cx.logger(), "writing standard output failed; holding data and retrying";
                        "error" => %e, "pending_records" => pending);
                });
                self.hold.retry_later(cx);
            }
        }
    }

    /// Logs, once, what was never written: dropped after the pipe closed, or still held
    /// when a stop ended without finishing.
    fn report(&mut self, cx: &mut Ctx) {
        if self.reported {
            return;
        }
        let (held, held_bytes) = (self.lines.pending_records(), self.lines.pending_bytes());
        let (records, bytes) = (self.lost.0 + held, self.lost.1 + held_bytes);
        if self.closed {
            self.reported = true;
            slog::error!(cx.logger(), "standard output was closed by its reader: records not written";
                "cog" => "stdout", "records" => records, "bytes" => bytes);
        } else if records > 0 {
            self.reported = true;
            slog::error!(cx.logger(), "stopped before standard output took everything: records not written";
                "cog" => "stdout", "records" => records, "bytes" => bytes);
        }
    }
}

impl Cog<Record> for Stdout {
    fn name(&self) -> &str {
        "stdout"
    }

    fn process_batch(&mut self, batch: &mut Vec<Record>, out: &mut Out<Record>, cx: &mut Ctx) {
        for r in batch.iter() {
            self.lines.push(r);
        }
        crate::record::pool::recycle(batch.drain(..));
        if !self.hold.is_failing() {
            self.flush(out, cx);
        }
    }

    fn wake(&mut self, _: Local, _: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        self.flush(out, cx);
        if !self.hold.is_failing() && cx.is_shutting_down() {
            cx.finished();
        }
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.closed {
            self.drop_held(out);
            self.report(cx);
        } else if self.lines.pending_bytes() > 0 || self.hold.is_failing() {
            cx.linger();
            self.flush(out, cx);
            if !self.hold.is_failing() {
                cx.finished();
            }
        }
    }

    fn done(&mut self, cx: &mut Ctx) {
        self.report(cx);
    }
}
