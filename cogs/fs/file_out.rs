//! `file_out`: records appended to a file.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{BuildCx, CogDescriptor, CogKind, CogParams, ConfigError, Param, ParamType};
use crate::drain::LineBuffer;
use crate::format::{FORMAT_PARAMS, OutputFormat};
use crate::prelude::*;
use crate::record::Record;

const RETRY: Local = 1;

/// Appends each record to a file in the chosen format. Each batch is written with one
/// `write(2)`; records are acknowledged (`event_done`) once written. On SIGHUP the file is
/// reopened at its path, so after logrotate moved it new lines go to a fresh file.
///
/// A failed write (disk full, say) keeps the unwritten data, pauses the supplies, logs
/// once and retries every second; nothing is dropped.
///
/// ```toml
/// [[train.cog]]
/// type = "file_out"
/// path = "out/events.json"
/// format = "json"            # raw | json | template
/// ```
pub struct FileOut {
    path: PathBuf,
    file: Option<File>,
    lines: LineBuffer,
    failing: bool,
}

/// The descriptor of `file_out`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "file_out",
    kind: CogKind::Drain,
    summary: "appends records to a file (raw, json or template); reopens it on SIGHUP",
    params: &[
        Param::req(
            "path",
            ParamType::Path,
            "the file to append to; its directory must exist",
        ),
        FORMAT_PARAMS[0],
        FORMAT_PARAMS[1],
    ],
    fields: &[],
    build,
};

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let path = p
        .path("path")?
        .ok_or_else(|| p.cog_error("missing key \"path\""))?;
    Ok(Box::new(FileOut::new(path, OutputFormat::from_params(p)?)))
}

impl FileOut {
    /// Appends to `path` in `format`.
    pub fn new(path: PathBuf, format: OutputFormat) -> Self {
        FileOut {
            path,
            file: None,
            lines: LineBuffer::new(format, 256 << 10),
            failing: false,
        }
    }

    fn open(&self) -> std::io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
    }

    fn flush(&mut self, cx: &mut Ctx) {
        if self.lines.pending_bytes() == 0 {
            return;
        }
        let result = match &mut self.file {
            Some(f) => self.lines.flush(f, cx),
            None => match self.open() {
                Ok(f) => self.lines.flush(self.file.insert(f), cx),
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    slog::info!(cx.logger(), "output file writable again"; "path" => %self.path.display());
                    cx.resume_supplies();
                }
            }
            Err(e) => {
                if !self.failing {
                    slog::error!(cx.logger(), "writing output file failed; holding data, pausing supplies, retrying";
                        "path" => %self.path.display(), "error" => %e, "pending_records" => self.lines.pending_records());
                    self.failing = true;
                    cx.pause_supplies();
                }
                let _ = cx.timer_after(Duration::from_secs(1), RETRY);
            }
        }
    }
}

impl Cog<Record> for FileOut {
    fn name(&self) -> &str {
        "file_out"
    }

    fn start(&mut self, _: &mut Ctx) -> Result<(), BoxError> {
        let f = self
            .open()
            .map_err(|e| format!("cannot open {} for appending: {e}", self.path.display()))?;
        self.file = Some(f);
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Vec<Record>, _: &mut Out<Record>, cx: &mut Ctx) {
        for r in batch.drain(..) {
            self.lines.push(&r);
        }
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

    fn reopen(&mut self, cx: &mut Ctx) {
        // Whatever is buffered belongs to the old file's period; write it there first.
        self.flush(cx);
        match self.open() {
            Ok(f) => {
                self.file = Some(f);
                slog::info!(cx.logger(), "output file reopened"; "path" => %self.path.display());
            }
            Err(e) => {
                slog::error!(cx.logger(), "reopening output file failed; will retry on the next write";
                    "path" => %self.path.display(), "error" => %e);
                self.file = None;
            }
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

    fn done(&mut self, _: &mut Ctx) {
        self.file = None;
    }
}
