//! `deadbeat test CONFIG --input FILE [--train NAME]`: runs one train of a configuration on
//! the lines of FILE and prints to stdout what its drains would write, touching neither
//! outputs nor state. The way to try a parser before deploying it.
//!
//! The configuration is rewritten before it is built, so every cog in between is built and
//! runs exactly as `run` would build and run it:
//!
//! - the train tested is the first (or NAME), with the trains it sends records to
//!   (`route`, `tee`, `on_error`, `on_late`, `on_excess`: every edge `graph` draws),
//!   and theirs, and so on; the other trains are left out;
//! - its first supply reads FILE from start to end instead of its own input (lines as
//!   `file_in` reads them; the fields the replaced supply does not give, such as `path` and
//!   `offset` for `stdin`, are taken off); its other supplies, and the supplies of the trains
//!   it reaches, are left out; a train without a supply gets FILE at its head;
//! - every drain but `drop` writes to stdout in its own `format` (`template`, `escape`),
//!   lines of the trains reached prefixed with `[TRAIN] `; what it would have written to a
//!   file, socket or peer is not written;
//! - `persist` is turned off (and `at_finish = "persist"` back to `"emit"`), and `[state]
//!   dir` is a fresh temporary directory removed at the end: stateful cogs start empty,
//!   no checkpoint or state file is read or written;
//! - the log goes to stderr at warning level (or `debug`/`trace` when `[log] level` says
//!   so), and a summary of what went through ends it.
//!
//! Errors of the configuration are reported as `check` reports them (exit 2), except the
//! paths of outputs and state, which are not written.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use slog::Level;
use toml::Spanned;

use crate::cogs::Registry;
use crate::cogs::fs::file_in::{FileIn, FileInSettings, Missing};
use crate::daemon::config::{CogConfig, Config};
use crate::daemon::graph::Graph;
use crate::daemon::log::{self, LogSettings, LogTarget};
use crate::kit::format::OutputFormat;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Key, Record};
use crate::schema::{CogParams, ConfigError, Node, NodeValue};

/// The synthesized key that gives a replaced supply the input file.
const INPUT_KEY: &str = "deadbeat test input";
/// The synthesized key listing the fields a replaced supply takes off the lines it reads.
const STRIP_KEY: &str = "deadbeat test strip";
/// The synthesized key giving a replaced drain the prefix of its lines.
const PREFIX_KEY: &str = "deadbeat test prefix";
/// The type of the supply put at the head of a tested train that has none.
const HEAD_INPUT: &str = "deadbeat test input";

crate::settings! {
    /// The keys a replaced supply keeps from its own settings.
    struct InputSettings {
        /// longer lines are cut, flagged `truncated` and counted
        #[setting(size)]
        max_line_bytes: usize = "1MiB",
    }
}

/// Runs the `test` command; the exit code is that of the `deadbeat` binary (0: ran, 1:
/// the run failed, 2: usage or configuration error).
pub fn main(
    config_path: &Path,
    input: &Path,
    train: Option<&str>,
    registry: &Registry,
) -> ExitCode {
    let mut config = match Config::load_unchecked(config_path, registry) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let tested = match train {
        Some(name) => config.trains.iter().position(|t| t.name == name),
        None => (!config.trains.is_empty()).then_some(0),
    };
    let Some(tested) = tested else {
        let names: Vec<&str> = config.trains.iter().map(|t| t.name.as_str()).collect();
        match train {
            Some(name) => eprintln!(
                "deadbeat: no train named {name:?} in {} (trains: {})",
                config_path.display(),
                names.join(", ")
            ),
            None => eprintln!("deadbeat: {} has no train", config_path.display()),
        }
        return ExitCode::from(2);
    };
    let input = match readable_input(input) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("deadbeat: {e}");
            return ExitCode::from(2);
        }
    };
    let state = match TempState::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("deadbeat: cannot create a temporary state directory: {e}");
            return ExitCode::from(1);
        }
    };
    let keep = rewrite(&mut config, tested, &input, registry);
    config.state_dir = state.0.join("state");
    let settings = LogSettings {
        level: match config.log.level {
            Level::Debug | Level::Trace => config.log.level,
            _ => Level::Warning,
        },
        target: LogTarget::Stderr,
        format: config.log.format,
    };
    let logger = match log::build(&settings) {
        Ok((logger, _)) => logger,
        Err(e) => {
            eprintln!("deadbeat: cannot set up logging to stderr: {e}");
            return ExitCode::from(1);
        }
    };
    ORIGINAL.with(|o| *o.borrow_mut() = Some(registry.clone()));
    let built = config.build(&test_registry(registry), &logger);
    ORIGINAL.with(|o| o.borrow_mut().take());
    let built = match built {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // A cog of one's own may name a train in a way the edges of `graph` do not show.
    if let Some(&(from, to)) = built.feeds.iter().find(|(f, t)| keep[*f] && !keep[*t]) {
        eprintln!(
            "deadbeat: train {:?} sends records to train {:?} through a setting `test` does \
             not know; it cannot run them",
            config.trains[from].name, config.trains[to].name
        );
        return ExitCode::from(2);
    }
    match run(built, &keep, &config, &logger) {
        Ok(summary) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("deadbeat: {e}");
            ExitCode::from(1)
        }
    }
}

/// `input` made absolute (the `path` field of its lines is then what a configuration
/// naming it by its absolute path gives), once it is known to be a readable file.
fn readable_input(input: &Path) -> Result<PathBuf, String> {
    let shown = input.display();
    let meta = std::fs::metadata(input).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if meta.is_dir() {
        return Err(format!("cannot read {shown}: it is a directory"));
    }
    std::fs::File::open(input).map_err(|e| format!("cannot read {shown}: {e}"))?;
    std::path::absolute(input).map_err(|e| format!("cannot read {shown}: {e}"))
}

/// Runs the built trains to their end; a summary of what went through, for stderr.
fn run(
    built: crate::kit::Built,
    keep: &[bool],
    config: &Config,
    logger: &slog::Logger,
) -> Result<String, String> {
    let mut esc = Escapement::with_options(Options {
        inotify: config.engine.inotify,
        workers: config.engine.workers,
        stop_timeout: config.engine.stop_timeout,
        shutdown_on_signals: true,
        control_signals: false,
        logger: Some(logger.clone()),
        ..Options::default()
    })
    .map_err(|e| format!("cannot start the event loop: {e}"))?;
    // Only the trains reached: the others were built for their errors alone.
    let mut index = vec![None; keep.len()];
    for (ti, t) in built.trains.into_iter().enumerate() {
        if keep[ti] {
            index[ti] = Some(esc.add_train(t).map_err(|e| e.to_string())?);
        }
    }
    for (from, to) in built.feeds {
        if let (Some(from), Some(to)) = (index[from], index[to]) {
            esc.add_feed(from, to).map_err(|e| e.to_string())?;
        }
    }
    esc.start().map_err(|e| e.to_string())?;
    let result = esc.run().map_err(|e| e.to_string());
    let mut lines = Vec::new();
    for t in esc.metrics() {
        let read: u64 = t
            .cogs
            .iter()
            .filter(|c| c.name == "test input")
            .map(|c| c.data_out)
            .sum();
        let written: u64 = t
            .cogs
            .iter()
            .filter(|c| c.name == "test output")
            .map(|c| c.data_in)
            .sum();
        let errors: u64 = t.cogs.iter().map(|c| c.errors).sum();
        let dropped: u64 = t.cogs.iter().map(|c| c.dropped).sum();
        let read = if read > 0 {
            format!("{}, ", count(read, "line", "lines") + " read")
        } else {
            String::new()
        };
        lines.push(format!(
            "test: train {}: {read}{} written, {dropped} dropped, {}",
            t.name,
            count(written, "record", "records"),
            count(errors, "error", "errors"),
        ));
    }
    result.map(|()| lines.join("\n"))
}

/// `n` and the noun that goes with it.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Rewrites `config` into what `test` runs: in the train `tested` and those it reaches
/// (returned, per train), supplies replaced or left out; in every train, drains writing to
/// stdout and persistence off.
fn rewrite(config: &mut Config, tested: usize, input: &Path, registry: &Registry) -> Vec<bool> {
    let graph = Graph::of(config, registry, &[]);
    let mut keep = vec![false; config.trains.len()];
    let mut todo = vec![tested];
    while let Some(t) = todo.pop() {
        if std::mem::replace(&mut keep[t], true) {
            continue;
        }
        todo.extend(graph.edges.iter().filter(|e| e.from == t).map(|e| e.to));
    }
    let kind = |c: &CogConfig| registry.get(&c.ty).map(|d| d.kind);
    for (ti, t) in config.trains.iter_mut().enumerate() {
        let main = ti == tested;
        let first_supply = t.cogs.iter().position(|c| kind(c) == Some(CogKind::Supply));
        let mut cogs = Vec::with_capacity(t.cogs.len() + 1);
        if main && first_supply.is_none() {
            let span = t.cogs.first().map_or(0..0, |c| c.span.clone());
            cogs.push(CogConfig {
                ty: HEAD_INPUT.into(),
                id: "input".into(),
                named: true,
                valid: true,
                span: span.clone(),
                entries: vec![entry(INPUT_KEY, &span, path_value(input))],
            });
        }
        for (ci, mut c) in std::mem::take(&mut t.cogs).into_iter().enumerate() {
            match kind(&c) {
                Some(CogKind::Supply) if main && Some(ci) == first_supply => {
                    let span = c.span.clone();
                    let theirs = registry.get(&c.ty).map_or(&[][..], |d| d.fields);
                    let strip: Vec<Node> = crate::cogs::fs::file_in::DESCRIPTOR
                        .fields
                        .iter()
                        .filter(|(f, _)| *f != "message" && !theirs.iter().any(|(g, _)| g == f))
                        .map(|(f, _)| Node {
                            span: span.clone(),
                            value: NodeValue::Str(f.to_string()),
                        })
                        .collect();
                    c.entries.push(entry(INPUT_KEY, &span, path_value(input)));
                    c.entries
                        .push(entry(STRIP_KEY, &span, NodeValue::Array(strip)));
                    cogs.push(c);
                }
                // The supplies of a train the tested one does not reach stay: that train
                // is built (for its errors) but not run.
                Some(CogKind::Supply) if keep[ti] => {}
                Some(CogKind::Drain) if c.ty != "drop" => {
                    let prefix = if main {
                        String::new()
                    } else {
                        format!("[{}] ", t.name)
                    };
                    let span = c.span.clone();
                    c.entries
                        .push(entry(PREFIX_KEY, &span, NodeValue::Str(prefix)));
                    cogs.push(c);
                }
                _ => cogs.push(c),
            }
        }
        for c in &mut cogs {
            no_persistence(c);
        }
        t.cogs = cogs;
    }
    keep
}

/// Turns off what would save state: `persist = true`, `at_finish = "persist"`.
fn no_persistence(c: &mut CogConfig) {
    c.entries.retain(|(k, n)| {
        !(k.get_ref() == "at_finish" && matches!(&n.value, NodeValue::Str(s) if s == "persist"))
    });
    for (k, n) in &mut c.entries {
        if k.get_ref() == "persist" && n.value == NodeValue::Bool(true) {
            n.value = NodeValue::Bool(false);
        }
    }
}

fn path_value(p: &Path) -> NodeValue {
    NodeValue::Str(p.to_string_lossy().into_owned())
}

fn entry(key: &str, span: &std::ops::Range<usize>, value: NodeValue) -> (Spanned<String>, Node) {
    (
        Spanned::new(span.clone(), key.to_string()),
        Node {
            span: span.clone(),
            value,
        },
    )
}

/// `registry` with every supply built as the reader of the input file and every drain but
/// `drop` as a writer to stdout, each keeping its name, role and parameters (so errors and
/// logs name them as `run` does).
fn test_registry(registry: &Registry) -> Registry {
    let mut r = registry.clone();
    for d in registry.all() {
        match d.kind {
            CogKind::Supply => r.add(CogDescriptor {
                build: build_supply,
                ..*d
            }),
            CogKind::Drain if d.name != "drop" => r.add(CogDescriptor {
                build: build_output,
                ..*d
            }),
            _ => {}
        }
    }
    r.add(CogDescriptor {
        name: HEAD_INPUT,
        kind: CogKind::Supply,
        summary: "the lines of the input file of `deadbeat test`",
        params: &[],
        fields: crate::cogs::fs::file_in::DESCRIPTOR.fields,
        build: build_input,
    });
    r
}

thread_local! {
    /// The registry `test` was given, while the rewritten configuration is built: supplies
    /// of trains that are not run are built by their own descriptors, for their errors.
    static ORIGINAL: std::cell::RefCell<Option<Registry>> = const { std::cell::RefCell::new(None) };
}

/// A supply: the input file where the rewrite gave one, else the supply itself (of a train
/// that is built but not run).
fn build_supply(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    if p.node(INPUT_KEY).is_some() {
        return build_input(p, cx);
    }
    let own = ORIGINAL.with(|o| {
        o.borrow()
            .as_ref()
            .and_then(|r| r.get(p.ty).map(|d| d.build))
    });
    match own {
        Some(build) => build(p, cx),
        None => Err(p.cog_error("no input file (a supply left out of `deadbeat test`)")),
    }
}

fn build_input(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let path = p
        .str(INPUT_KEY)?
        .ok_or_else(|| p.cog_error("no input file (a supply left out of `deadbeat test`)"))?;
    let s: InputSettings = p.group()?;
    let strip: Vec<Key> = match p.node(STRIP_KEY).map(|n| &n.value) {
        Some(NodeValue::Array(items)) => items
            .iter()
            .filter_map(|n| match &n.value {
                NodeValue::Str(f) => Some(Key::new(f)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let file_in = FileIn::from_settings(&FileInSettings {
        paths: vec![PathBuf::from(path)],
        missing: Missing::Error,
        max_line_bytes: s.max_line_bytes,
    })
    .map_err(|e| p.setting_error(e))?;
    Ok(Box::new(TestInput {
        inner: file_in,
        strip,
    }))
}

fn build_output(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let format = OutputFormat::from_params(p)?;
    let prefix = p.str(PREFIX_KEY)?.unwrap_or_default().as_bytes().to_vec();
    Ok(Box::new(TestOutput {
        format,
        prefix,
        buf: Vec::new(),
        line: Vec::new(),
        closed: false,
    }))
}

/// The input file read by `file_in`, with the fields the replaced supply would not have
/// given taken off each line.
struct TestInput {
    inner: FileIn,
    strip: Vec<Key>,
}

impl TestInput {
    /// Takes the stripped fields off the records emitted from `from` on.
    fn strip(&self, out: &mut Out<Record>, from: usize) {
        if self.strip.is_empty() || out.len() <= from {
            return;
        }
        let mut batch = out.take();
        for r in &mut batch[from..] {
            for &k in &self.strip {
                if let Some(v) = r.remove(k) {
                    crate::record::pool::recycle_value(v);
                }
            }
        }
        out.push_all(&mut batch);
    }
}

impl Cog<Record> for TestInput {
    fn name(&self) -> &str {
        "test input"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.inner.start(cx)
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        let from = out.len();
        self.inner.wake(local, why, out, cx);
        self.strip(out, from);
    }

    fn pause(&mut self, cx: &mut Ctx) {
        self.inner.pause(cx);
    }

    fn resume(&mut self, cx: &mut Ctx) {
        self.inner.resume(cx);
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        let from = out.len();
        self.inner.finish(out, cx);
        self.strip(out, from);
    }

    fn done(&mut self, cx: &mut Ctx) {
        self.inner.done(cx);
    }
}

/// A drain's records written to stdout in its format, each line after `prefix`.
struct TestOutput {
    format: OutputFormat,
    prefix: Vec<u8>,
    buf: Vec<u8>,
    line: Vec<u8>,
    /// The reader closed stdout: nothing more can be written.
    closed: bool,
}

impl Cog<Record> for TestOutput {
    fn name(&self) -> &str {
        "test output"
    }

    fn process_batch(&mut self, batch: &mut Vec<Record>, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.closed {
            out.count_errors(batch.len() as u64);
            crate::record::pool::recycle(batch.drain(..));
            return;
        }
        self.buf.clear();
        for r in batch.iter() {
            if self.prefix.is_empty() {
                self.format.write(r, &mut self.buf);
                continue;
            }
            self.line.clear();
            self.format.write(r, &mut self.line);
            for l in self.line.split_inclusive(|&b| b == b'\n') {
                self.buf.extend_from_slice(&self.prefix);
                self.buf.extend_from_slice(l);
            }
        }
        let written = {
            let mut w = io::stdout().lock();
            w.write_all(&self.buf).and_then(|()| w.flush())
        };
        match written {
            Ok(()) => {
                for r in batch.iter() {
                    cx.event_done(r.id);
                }
            }
            Err(e) => {
                self.closed = true;
                out.count_errors(batch.len() as u64);
                cx.fail(format!("writing standard output failed: {e}"));
                cx.shutdown();
            }
        }
        crate::record::pool::recycle(batch.drain(..));
    }
}

/// A temporary directory, removed with what it holds when dropped.
struct TempState(PathBuf);

impl TempState {
    fn new() -> io::Result<TempState> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for n in 0..100u32 {
            let p = base.join(format!(
                "deadbeat-test-state-{}-{stamp}-{n}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(TempState(p)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "every name tried was taken",
        ))
    }
}

impl Drop for TempState {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
