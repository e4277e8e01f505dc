//! `stdin`: lines from standard input.

use std::io;
use std::os::fd::AsFd;

use crate::kit::lines::LineSplitter;
use crate::kit::supply::{
    PauseGate, ReadStatus, StreamInput, emit_lines, emit_rest, emit_rest_at_stop,
};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::Record;
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

/// Reads at most this many times per turn before letting other events in.
const READS_PER_TURN: usize = 16;

/// A turn's reads stop once they bring this much, a file's batch: one turn's lines are one
/// batch through the train, and sixteen reads would make it 1 MiB from a pipe (some
/// 35,000 short lines in flight) or 4 MiB from a file, raising the peak RSS.
const TURN_BYTES: usize = LineSplitter::BATCH_READ_SIZE;

/// Lines from standard input; exhausted at end of input (the train then finishes).
///
/// Pipes, sockets and terminals are read without blocking through the escapement; a
/// regular file redirected to stdin is read in turns. Fields: `message` (the raw line).
/// A stop in the middle of a line reads the rest of that line when it has arrived (and
/// nothing after it); a line still unfinished is emitted flagged `partial = true` and
/// counted as an error.
///
/// ```toml
/// [[train.cog]]
/// type = "stdin"
/// max_line_bytes = "1MiB"   # longer lines are cut, flagged `truncated` and counted
/// ```
///
/// From Rust: `Stdin::from_settings(&StdinSettings { max_line_bytes: 4096, ..Default::default() })`.
#[derive(Debug)]
pub struct Stdin {
    input: Option<StreamInput>,
    splitter: LineSplitter,
    gate: PauseGate,
    /// Standard input is a regular file: its reads count in the batch progress.
    counted: bool,
}

/// The descriptor of `stdin`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "stdin",
    kind: CogKind::Supply,
    summary: "lines from standard input; exhausted at end of input",
    params: StdinSettings::PARAMS,
    fields: &[("message", "the line, without its newline, as raw bytes")],
    build,
};

crate::settings! {
    /// Settings of `stdin`.
    pub struct StdinSettings {
        /// longer lines are cut, flagged `truncated` and counted
        #[setting(size)]
        max_line_bytes: usize = "1MiB",
    }
}

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: StdinSettings = p.settings()?;
    Ok(Box::new(
        Stdin::from_settings(&s).map_err(|e| p.setting_error(e))?,
    ))
}

impl Stdin {
    /// A `stdin` supply made from its settings, without a configuration file.
    pub fn from_settings(s: &StdinSettings) -> Result<Self, SettingError> {
        if s.max_line_bytes == 0 {
            return Err(SettingError::new("max_line_bytes", "must be above 0"));
        }
        Ok(Stdin {
            input: None,
            splitter: LineSplitter::new(s.max_line_bytes)
                .with_read_size(LineSplitter::BATCH_READ_SIZE),
            gate: PauseGate::new(0),
            counted: false,
        })
    }

    fn read_some(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        let Some(input) = self.input.as_mut() else {
            return;
        };
        let start = self.splitter.received();
        for _ in 0..READS_PER_TURN {
            let before = self.splitter.received();
            match input.read(&mut self.splitter) {
                Ok(ReadStatus::Data) => {
                    let lines = emit_lines(&mut self.splitter, 0, out, cx, |_, _| {});
                    if self.counted {
                        let bytes = self.splitter.received() - before;
                        crate::kit::progress::batch().advance(bytes, lines as u64);
                    }
                    if self.splitter.received().wrapping_sub(start) >= TURN_BYTES as u64 {
                        break;
                    }
                }
                Ok(ReadStatus::Wait) => return,
                Ok(ReadStatus::Eof) => return self.end(out, cx),
                Err(e) => {
                    slog::error!(cx.logger(), "reading standard input failed; treating it as ended"; "error" => %e);
                    out.count_errors(1);
                    return self.end(out, cx);
                }
            }
        }
        // More may be waiting, and edge-triggered readiness will not say so again.
        cx.enqueue(0);
    }

    fn end(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        emit_rest(&mut self.splitter, 0, out, cx, |_, _| {});
        if let Some(mut input) = self.input.take() {
            input.unbind(cx);
        }
        cx.dequeue(0);
        cx.exhausted();
    }
}

impl Cog<Record> for Stdin {
    fn name(&self) -> &str {
        "stdin"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        // A duplicate, so that dropping it never closes the process's fd 0.
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("standard input: {e}"))?;
        let file = std::fs::File::from(fd);
        if let Some(size) = crate::kit::progress::remaining_size(&file) {
            crate::kit::progress::batch().expect(size);
            self.counted = true;
        }
        let mut input = StreamInput::new(file);
        input
            .bind(cx, 0)
            .map_err(|e| format!("standard input: {e}"))?;
        self.input = Some(input);
        // Read once at start in any case: a regular file never signals readiness.
        cx.enqueue(0);
        Ok(())
    }

    fn wake(&mut self, _: Local, _: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.gate.is_open() {
            self.read_some(out, cx);
        }
    }

    fn pause(&mut self, cx: &mut Ctx) {
        self.gate.pause(cx);
    }

    fn resume(&mut self, cx: &mut Ctx) {
        self.gate.resume(cx);
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        // Lines already read are handed on; nothing more is read but the rest of a line
        // begun.
        if let Some(mut input) = self.input.take() {
            emit_rest_at_stop(
                &mut input,
                &mut self.splitter,
                0,
                "standard input",
                out,
                cx,
                |_, _| {},
            );
            input.unbind(cx);
        }
    }
}
