//! `file_in`: whole files read once from the start (batch mode).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

use std::path::PathBuf;

use crate::engine::control::{Inspection, Rewind, RewindError};
use crate::kit::lines::LineSplitter;
use crate::kit::rewind::{names, offset_in};
use crate::kit::supply::{
    FileFields, PauseGate, ReadStatus, StreamInput, emit_lines, emit_rest, emit_rest_at_stop,
};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Record, SharedStr};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

/// Reads files in the order given, each from its start to its end, then is exhausted: the
/// batch-mode supply (the `tail` supply follows files as they grow).
///
/// Reads are large (1 MiB) and each turn hands one read's lines down the train. Named
/// pipes are read as they are written, until their last writer closes them.
///
/// A file that cannot be opened (missing, unreadable) is handled as `missing` says:
/// `"error"` (the default) logs it, counts it as an error, reads the other files, and
/// makes the run fail (exit 1) at its end; `"warn"` logs a warning and the run succeeds;
/// `"ignore"` skips it silently. A read that fails in the middle of a file is always an
/// error that fails the run (the lines before it are delivered). A stop in the middle of
/// a file reads the rest of the line under way, so that no line is cut in two.
/// The control server's `rewind` makes it read on from an offset or a line of any of its
/// files ([`Cog::rewind`]), the files after it following.
/// Fields: `message` (the raw line), `path`, `offset` (of the line's first byte).
///
/// ```toml
/// [[train.cog]]
/// type = "file_in"
/// paths = ["data/access.log", "data/error.log"]
/// missing = "error"         # or "warn", "ignore": a file that cannot be opened
/// max_line_bytes = "1MiB"
/// ```
///
/// From Rust: `FileIn::from_settings(&FileInSettings { paths: vec!["access.log".into()],
/// ..Default::default() })` (relative paths are relative to the working directory).
pub struct FileIn {
    paths: Vec<PathBuf>,
    next: usize,
    current: Option<(StreamInput, SharedStr)>,
    splitter: LineSplitter,
    gate: PauseGate,
    missing: Missing,
}

crate::choice! {
    /// What a supply does about an input that cannot be opened (`missing` key of `file_in`,
    /// and of `tail` with `follow = false`): `Error` logs it, counts it as an error and
    /// makes the run fail (exit 1) at its end; `Warn` logs a warning and the run
    /// succeeds; `Ignore` skips it without a word (logged at debug level).
    pub enum Missing { Error = "error", Warn = "warn", Ignore = "ignore" }
}

impl Missing {
    /// Reports that input `what` (a path or pattern) of cog `cog` could not be read
    /// because of `why`; returns whether it counts as an error.
    pub fn report(self, cog: &str, what: &str, why: &str, cx: &mut Ctx) -> bool {
        match self {
            Missing::Error => {
                slog::error!(cx.logger(), "cannot read input; the run will fail";
                    "cog" => cog, "path" => what, "error" => why);
                cx.fail(format!("{cog}: cannot read {what}: {why}"));
                true
            }
            Missing::Warn => {
                slog::warn!(cx.logger(), "cannot read input; skipping it";
                    "cog" => cog, "path" => what, "error" => why);
                false
            }
            Missing::Ignore => {
                slog::debug!(cx.logger(), "cannot read input; skipping it";
                    "cog" => cog, "path" => what, "error" => why);
                false
            }
        }
    }
}

crate::settings! {
    /// Settings of `file_in`.
    pub struct FileInSettings {
        /// files to read, in this order
        #[setting(required)]
        paths: Vec<PathBuf>,
        /// an input that cannot be opened: `error` (logged, counted, the run exits 1), `warn`
        /// (logged) or `ignore`
        missing: Missing = "error",
        /// longer lines are cut, flagged `truncated` and counted
        #[setting(size)]
        max_line_bytes: usize = "1MiB",
    }
}

/// The descriptor of `file_in`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "file_in",
    kind: CogKind::Supply,
    summary: "reads whole files once from the start, then is exhausted (batch mode)",
    params: FileInSettings::PARAMS,
    fields: &[
        ("message", "the line, without its newline, as raw bytes"),
        ("path", "the file the line comes from"),
        ("offset", "byte offset of the line's first byte in the file"),
    ],
    build,
};

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: FileInSettings = p.settings()?;
    s.paths = s.paths.iter().map(|f| super::resolve(p, f)).collect();
    Ok(Box::new(
        FileIn::from_settings(&s).map_err(|e| p.setting_error(e))?,
    ))
}

impl FileIn {
    /// A `file_in` supply made from its settings, without a configuration file.
    pub fn from_settings(s: &FileInSettings) -> Result<Self, SettingError> {
        let s = s.clone();
        if s.paths.is_empty() {
            return Err(SettingError::new("paths", "give at least one file"));
        }
        if s.max_line_bytes == 0 {
            return Err(SettingError::new("max_line_bytes", "must be above 0"));
        }
        Ok(FileIn {
            paths: s.paths,
            next: 0,
            current: None,
            splitter: LineSplitter::new(s.max_line_bytes)
                .with_read_size(LineSplitter::BATCH_READ_SIZE),
            gate: PauseGate::new(0),
            missing: s.missing,
        })
    }

    fn open(path: &std::path::Path, cx: &mut Ctx) -> std::io::Result<StreamInput> {
        // Non-blocking, so that opening a FIFO without a writer does not stall the loop.
        let f: File = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        let mut input = StreamInput::new(f);
        input.bind(cx, 0)?;
        Ok(input)
    }

    /// Opens the next readable file; false when there is none left.
    fn open_next(&mut self, out: &mut Out<Record>, cx: &mut Ctx) -> bool {
        while self.next < self.paths.len() {
            let path = &self.paths[self.next];
            self.next += 1;
            match Self::open(path, cx) {
                Ok(input) => {
                    self.splitter.reset(0);
                    let name = SharedStr::interned(&path.to_string_lossy());
                    self.current = Some((input, name));
                    return true;
                }
                Err(e) => {
                    let what = path.display().to_string();
                    if self.missing.report("file_in", &what, &e.to_string(), cx) {
                        out.count_errors(1);
                    }
                }
            }
        }
        false
    }

    fn step(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.current.is_none() && !self.open_next(out, cx) {
            cx.exhausted();
            return;
        }
        let Some((input, name)) = self.current.as_mut() else {
            return;
        };
        let fill = file_fields(name);
        let before = self.splitter.received();
        match input.read(&mut self.splitter) {
            Ok(ReadStatus::Data) => {
                let lines = emit_lines(&mut self.splitter, 2, out, cx, fill);
                let bytes = self.splitter.received() - before;
                crate::kit::progress::batch().advance(bytes, lines as u64);
            }
            Ok(ReadStatus::Wait) => return,
            Ok(ReadStatus::Eof) => {
                let lines = emit_rest(&mut self.splitter, 2, out, cx, fill);
                crate::kit::progress::batch().advance(0, lines as u64);
                input.unbind(cx);
                self.current = None;
            }
            Err(e) => {
                let lost = self
                    .paths
                    .get(self.next - 1)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                slog::error!(cx.logger(), "reading input file failed; going on with the next";
                    "path" => &lost, "offset" => self.splitter.received(), "error" => %e);
                cx.fail(format!("file_in: reading {lost} failed: {e}"));
                out.count_errors(1);
                emit_rest(&mut self.splitter, 2, out, cx, fill);
                input.unbind(cx);
                self.current = None;
            }
        }
        cx.enqueue(0);
    }
}

impl FileIn {
    /// Makes the supply read on from `to`: the file it is reading, or any other of its
    /// files (opened anew; the files after it in `paths` follow, as in a first run).
    fn rewind_to(&mut self, to: &Rewind, cx: &mut Ctx) -> Result<u64, RewindError> {
        let Some(i) = self.paths.iter().position(|p| names(p, &to.source)) else {
            return Err(RewindError::NoSource(
                "file_in reads no file of that path".into(),
            ));
        };
        let path = self.paths[i].clone();
        let shown = path.display().to_string();
        let from = self.splitter.consumed();
        if self.next == i + 1
            && let Some((input, _)) = self.current.as_mut()
        {
            let offset = offset_in(input.file(), &shown, &to.to, "file_in")?;
            let mut f = input.file();
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| RewindError::Unsupported(format!("{shown}: cannot seek: {e}")))?;
            self.splitter.reset(offset);
            slog::info!(cx.logger(), "rewound: reading the file again";
                "path" => &shown, "from" => from, "to" => offset);
            return Ok(offset);
        }
        let input = Self::open(&path, cx)
            .map_err(|e| RewindError::Unsupported(format!("cannot open {shown}: {e}")))?;
        let offset = offset_in(input.file(), &shown, &to.to, "file_in")?;
        let mut f = input.file();
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| RewindError::Unsupported(format!("{shown}: cannot seek: {e}")))?;
        if let Some((mut old, _)) = self.current.take() {
            old.unbind(cx);
        }
        self.splitter.reset(offset);
        self.current = Some((input, SharedStr::interned(&path.to_string_lossy())));
        self.next = i + 1;
        slog::info!(cx.logger(), "rewound: reading the file again";
            "path" => &shown, "to" => offset);
        Ok(offset)
    }
}

/// Adds the file's fields, `path` and `offset`, to a line record of the file `name`.
fn file_fields(name: &SharedStr) -> impl FnMut(&mut Record, &crate::kit::lines::LineInfo) + '_ {
    let fields = FileFields::new(name);
    move |r, info| fields.add(r, info.offset)
}

impl Cog<Record> for FileIn {
    fn name(&self) -> &str {
        "file_in"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        // The sizes now, for the progress bar of batch runs (a named pipe has none).
        let sizes = self.paths.iter().filter_map(|p| std::fs::metadata(p).ok());
        let total = sizes.filter(|m| m.is_file()).map(|m| m.len()).sum();
        crate::kit::progress::batch().expect(total);
        cx.enqueue(0);
        Ok(())
    }

    fn wake(&mut self, _: Local, _: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.gate.is_open() {
            self.step(out, cx);
        }
    }

    fn inspect(&self, into: &mut Inspection) {
        if let Some((_, name)) = &self.current {
            into.source(name.as_str(), self.splitter.consumed(), None);
        }
    }

    fn rewind(&mut self, to: &Rewind, cx: &mut Ctx) -> Result<u64, RewindError> {
        self.rewind_to(to, cx)
    }

    fn pause(&mut self, cx: &mut Ctx) {
        self.gate.pause(cx);
    }

    fn resume(&mut self, cx: &mut Ctx) {
        self.gate.resume(cx);
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if let Some((mut input, name)) = self.current.take() {
            emit_rest_at_stop(
                &mut input,
                &mut self.splitter,
                2,
                name.as_str(),
                out,
                cx,
                file_fields(&name),
            );
            input.unbind(cx);
        }
    }
}

impl std::fmt::Debug for FileIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileIn")
            .field("paths", &self.paths)
            .field("next", &self.next)
            .finish()
    }
}
