//! `exec`: records piped through an external program, one JSON object per line each way.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::Interest;
use mio::unix::pipe::{Receiver, Sender};

use crate::kit::on_error::{self, LogLimiter, OnError, OnErrorSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Key, Map, Merge, Record, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

/// Writes a datum as one JSON object (no newline, no raw newline inside).
pub type RenderFn<D> = Box<dyn Fn(&D, &mut Vec<u8>)>;

/// How `exec` reads and changes its data: how a datum is written to the program, and how
/// an answer's fields go into it.
pub struct ExecFields<D> {
    /// Writes the datum as one JSON object.
    pub render: RenderFn<D>,
    /// Stores an answer's fields into the datum (replacing its fields, or merging).
    pub answer: Merge<D>,
}

impl<D> std::fmt::Debug for ExecFields<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecFields")
    }
}

/// The fields of `exec` over [`Record`]: the record rendered as JSON (its id left out), an
/// answer replacing its fields (the id kept) or, with `merge`, merged into them.
pub fn record_fields(merge: bool) -> ExecFields<Record> {
    ExecFields {
        render: Box::new(|r: &Record, out: &mut Vec<u8>| r.write_json(out)),
        answer: if merge {
            Merge::new(|r: &mut Record, m: &mut Map| r.fields.merge_from(m))
        } else {
            Merge::new(|r: &mut Record, m: &mut Map| std::mem::swap(&mut r.fields, m))
        },
    }
}

crate::choice! {
    /// How `exec` runs its program: one long-running process (`stream`), or one process
    /// per batch that answers at the end of its input (`spawn`).
    pub enum ExecMode { Stream = "stream", Spawn = "spawn" }
}

crate::settings! {
    /// Settings of `exec`.
    pub struct ExecSettings {
        /// the program and its arguments, run without a shell (a program without `/` is looked up in PATH; a relative path is taken from the configuration file's directory)
        #[setting(required)]
        command: Vec<String>,
        /// stream: one long-running program answers line by line; spawn: the program is run once per batch and answers at the end of its input
        mode: ExecMode = "stream",
        /// merge the answer's fields into the record instead of replacing its fields with them
        merge: bool = "false",
        /// most records sent to the program and not yet answered; more pause the supplies
        max_in_flight: usize = "10000",
        /// most bytes of rendered records not yet taken by the program; more pause the supplies
        #[setting(size)]
        buffer_bytes: usize = "4MiB",
        /// a record without an answer this long after it was sent goes to `on_error` (the program is restarted); also how long a spawned run may take, and how long the shutdown waits without an answer
        timeout: Duration = "10s",
        /// first wait before restarting a program that died; doubles up to `backoff_max`
        backoff_initial: Duration = "100ms",
        /// longest wait between restarts
        backoff_max: Duration = "10s",
        /// programs (or runs) that may fail before answering a record; then it goes to `on_error`
        attempts: usize = "3",
        /// a field added to each record sent, holding its sequence number; an answer carrying it back is checked against it (extra or missing answers are detected at once), and it is removed from the answer. "" sends records unchanged
        seq_field: String = "_exec_seq",
        /// with mode = "spawn": most records per run
        batch_records: usize = "1000",
        /// with mode = "spawn": longest a record waits for its batch to fill
        linger: Duration = "1s",
        /// What to do with a record without an answer.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

/// What `exec` counted besides the train's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExecStats {
    /// Programs started after the first (stream), or runs retried (spawn).
    pub restarts: u64,
    /// Records sent again to a new program (or run) because the last one failed.
    pub resent: u64,
    /// Lines from the program that were not a JSON object or carried a wrong sequence number.
    pub bad_lines: u64,
    /// Lines from the program beyond one per record.
    pub extra_lines: u64,
    /// Records without an answer within `timeout`.
    pub timeouts: u64,
    /// Records the program skipped (a later record's answer came first).
    pub skipped: u64,
    /// Lines the program wrote to its standard error.
    pub stderr_lines: u64,
    /// Programs run (spawn mode: one per batch).
    pub runs: u64,
}

/// Pipes records through an external program, like a filter coprocess: each record is
/// written to the program's standard input as one JSON object on a line, and the program
/// answers each with one JSON object on a line of its standard output, in the same order.
/// The answer replaces the record's fields (`merge = true`: its fields are merged into the
/// record); the record keeps its event id, so acknowledgements go on as before.
///
/// **Stream mode** (the default) keeps one program running. At most `max_in_flight`
/// records are sent and unanswered, and at most `buffer_bytes` wait to be taken by the
/// program: beyond either, the supplies are paused (the program's input pipe being full
/// pauses them too). A program that dies or closes its output is restarted after a
/// backoff (`backoff_initial`, doubling up to `backoff_max`, back to the start after a
/// good answer); the records it held unanswered are sent again to the new one (counted
/// as `resent`, logged). A record that is still unanswered by `attempts` programs in a row
/// goes to `on_error`, so one record that crashes the program cannot stall the stream. A
/// record without an answer `timeout` after it was sent goes to `on_error` and the program
/// is restarted (its later answers would otherwise land on the wrong records).
///
/// **Never a shifted answer.** Each record is sent with its sequence number in the field
/// `seq_field` (`"_exec_seq"`); a program that copies the record it read (echo, or add
/// fields to it) sends it back, and `exec` checks it and removes it: an extra line for an
/// earlier record is counted and skipped, a record the program skipped goes to
/// `on_error`. An answer without the field is matched by position. A line that is not a
/// JSON object (or carries a wrong number), and a line when every record written is
/// answered, are counted and logged; the record whose answer was due goes to `on_error`,
/// the program is restarted and the others are sent again. `seq_field = ""` sends
/// records unchanged (answers are then matched by position only).
///
/// The program's standard error goes to the log, line by line (at most 10 lines a second,
/// the rest counted), as warnings naming the cog. The program runs in its own process group,
/// so a Ctrl-C at the terminal reaches deadbeat only, which stops it in order: at shutdown
/// every record is sent, the program's input is closed, and its answers are awaited (as
/// long as one comes every `timeout`); what is left then goes to `on_error`. The program
/// is sent SIGTERM (then SIGKILL) if it has not exited when the daemon is done. A program
/// that cannot be started at all (missing, not executable) stops the start with an error
/// naming the cog and the command. The program must flush its output after each answer
/// (`python3 -u`, `fflush`): a program that holds its answers in a buffer until it is full
/// makes the last records wait for their timeout.
///
/// **Spawn mode** runs the command once per batch of at most `batch_records` records
/// (a batch waits at most `linger` to fill) for programs that read all of their input and
/// answer at its end, with the same one-line-per-record contract. A run that fails (killed
/// after `timeout`, or with answers that cannot be matched to the records) is retried with
/// backoff up to `attempts` runs; then what can be matched is used and the rest goes to
/// `on_error`.
///
/// ```toml
/// [[train.cog]]
/// type = "exec"
/// command = ["python3", "-u", "enrich.py", "--db", "assets.db"]
/// mode = "stream"            # stream | spawn
/// merge = true
/// max_in_flight = 10000
/// timeout = "10s"
/// on_error = "keep"          # drop | keep | train:NAME
/// ```
///
/// From its typed settings, on any datum:
/// `Exec::from_settings(&ExecSettings { command: vec!["cat".into()], ..Default::default() }, record_fields(false), on_error)`.
pub struct Exec<D> {
    program: PathBuf,
    args: Vec<String>,
    s: ExecSettings,
    fields: ExecFields<D>,
    on_error: OnError<D>,
    seq_key: Option<Key>,
    /// The seq field as it is written in JSON: `,"NAME":`.
    seq_json: Vec<u8>,
    proc: Option<Proc>,
    generation: u32,
    /// Accepted, not yet sent.
    waiting: VecDeque<D>,
    /// Sent (or rendered for sending), not yet answered, in order; their seqs are
    /// `head_seq`, `head_seq + 1`...
    in_flight: VecDeque<(D, Instant)>,
    head_seq: u64,
    outbuf: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    scratch: Option<Box<[u8]>>,
    errbuf: Vec<u8>,
    paused: bool,
    timeout_timer: Option<TimerId>,
    restart_timer: Option<TimerId>,
    linger_timer: Option<TimerId>,
    finish_timer: Option<TimerId>,
    backoff: Duration,
    head_attempts: usize,
    finishing: bool,
    lingering: bool,
    last_progress: Instant,
    reaping: Vec<Child>,
    stats: Rc<Cell<ExecStats>>,
    limiter: LogLimiter,
    err_limiter: LogLimiter,
    // spawn mode: the records of the run in progress, and how many runs it took
    run: Vec<D>,
    run_attempts: usize,
}

impl<D> std::fmt::Debug for Exec<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("mode", &self.s.mode)
            .field("in_flight", &self.in_flight.len())
            .field("waiting", &self.waiting.len())
            .finish()
    }
}

/// One running program and its pipes.
struct Proc {
    child: Child,
    stdin: Option<Sender>,
    stdout: Option<Receiver>,
    stderr: Option<Receiver>,
    generation: u32,
    /// Complete lines written to its input.
    lines_written: u64,
    /// Records taken out of `in_flight` (answered or failed) while it ran.
    popped: u64,
}

/// Locals: pipes carry the program's generation (so a late event of a replaced program is
/// told apart), timers have the top bit set.
const STDIN: u32 = 0;
const STDOUT: u32 = 1;
const STDERR: u32 = 2;
const TIMER: u32 = 1 << 31;
const TIMEOUT: Local = TIMER | 1;
const RESTART: Local = TIMER | 2;
const LINGER: Local = TIMER | 3;
const FINISH: Local = TIMER | 4;

/// Longest answer line accepted; a longer one is a protocol error, not a memory hog.
const MAX_LINE: usize = 64 << 20;
/// Bytes read per system call.
const READ_CHUNK: usize = 256 << 10;
/// How long `done` waits for the program to end by itself, then after SIGTERM.
const GRACE: Duration = Duration::from_millis(500);
/// Longest stderr line logged; longer ones are cut.
const MAX_ERR_LINE: usize = 4096;

fn local(generation: u32, kind: u32) -> Local {
    ((generation & 0x0FFF_FFFF) << 2) | kind
}

/// Why a program was given up.
enum Lost {
    /// It exited or closed a pipe.
    Died(String),
    /// It wrote something that breaks the contract; the due record goes to `on_error`.
    Protocol(String),
    /// It wrote a line beyond every record written to it.
    Extra(String),
    /// Records timed out (they already went to `on_error`).
    Timeout,
}

/// Finds the program to run: a name without `/` in PATH, a path as it is; it must be an
/// executable file.
pub fn resolve_program(prog: &str) -> Result<PathBuf, String> {
    let check = |p: &Path| -> Result<(), String> {
        let md = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if !md.is_file() {
            return Err(format!("{} is not a file", p.display()));
        }
        if md.permissions().mode() & 0o111 == 0 {
            return Err(format!("{} is not executable", p.display()));
        }
        Ok(())
    };
    if prog.is_empty() {
        return Err("the program name is empty".into());
    }
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        check(&p)?;
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(prog);
        if check(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(format!("program {prog:?} not found in PATH"))
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(st) => match (st.code(), st.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "ended".into(),
        },
        None => "still running".into(),
    }
}

impl<D: 'static> Exec<D> {
    /// An `exec` made from its settings: `fields` says how a datum is written and how an
    /// answer goes into it, records without an answer go to `on_error`. The program
    /// (`command[0]`) must exist now: a name is looked up in PATH.
    pub fn from_settings(
        s: &ExecSettings,
        fields: ExecFields<D>,
        on_error: OnError<D>,
    ) -> Result<Self, SettingError> {
        let Some((prog, args)) = s.command.split_first() else {
            return Err(SettingError::new(
                "command",
                "must name a program (an array: program and arguments)",
            ));
        };
        let program = resolve_program(prog).map_err(|m| SettingError::new("command", m))?;
        if s.max_in_flight == 0 {
            return Err(SettingError::new("max_in_flight", "must be at least 1"));
        }
        if s.batch_records == 0 {
            return Err(SettingError::new("batch_records", "must be at least 1"));
        }
        if s.attempts == 0 {
            return Err(SettingError::new("attempts", "must be at least 1"));
        }
        if s.timeout.is_zero() {
            return Err(SettingError::new("timeout", "must be longer than 0s"));
        }
        if s.buffer_bytes == 0 {
            return Err(SettingError::new("buffer_bytes", "must be at least 1 byte"));
        }
        let (seq_key, seq_json) = if s.seq_field.is_empty() {
            (None, Vec::new())
        } else {
            let mut j = b",\"".to_vec();
            crate::record::write_json_str_body(&mut j, s.seq_field.as_bytes());
            j.extend_from_slice(b"\":");
            (Some(Key::new(&s.seq_field)), j)
        };
        Ok(Exec {
            program,
            args: args.to_vec(),
            s: s.clone(),
            fields,
            on_error,
            seq_key,
            seq_json,
            proc: None,
            generation: 0,
            waiting: VecDeque::new(),
            in_flight: VecDeque::new(),
            head_seq: 0,
            outbuf: Vec::new(),
            out_pos: 0,
            inbuf: Vec::new(),
            scratch: None,
            errbuf: Vec::new(),
            paused: false,
            timeout_timer: None,
            restart_timer: None,
            linger_timer: None,
            finish_timer: None,
            backoff: s.backoff_initial,
            head_attempts: 0,
            finishing: false,
            lingering: false,
            last_progress: Instant::now(),
            reaping: Vec::new(),
            stats: Rc::new(Cell::new(ExecStats::default())),
            limiter: LogLimiter::default(),
            err_limiter: LogLimiter::default(),
            run: Vec::new(),
            run_attempts: 0,
        })
    }

    /// What this cog counted, shared: it stays readable after the cog moved into a train.
    pub fn stats(&self) -> Rc<Cell<ExecStats>> {
        Rc::clone(&self.stats)
    }

    fn count(&self, f: impl FnOnce(&mut ExecStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn command_line(&self) -> String {
        let mut v = vec![self.program.display().to_string()];
        v.extend(self.args.iter().cloned());
        format!("{v:?}")
    }

    // --- the program

    fn spawn(&mut self, cx: &mut Ctx) -> io::Result<()> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C for deadbeat does not kill it mid-stream;
            // deadbeat stops it in order.
            .process_group(0)
            .spawn()?;
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let pipes = (|| -> io::Result<(Sender, Receiver, Receiver)> {
            let stdin = Sender::from(
                child
                    .stdin
                    .take()
                    .ok_or_else(|| io::Error::other("no stdin pipe"))?,
            );
            let stdout = Receiver::from(
                child
                    .stdout
                    .take()
                    .ok_or_else(|| io::Error::other("no stdout pipe"))?,
            );
            let stderr = Receiver::from(
                child
                    .stderr
                    .take()
                    .ok_or_else(|| io::Error::other("no stderr pipe"))?,
            );
            stdin.set_nonblocking(true)?;
            stdout.set_nonblocking(true)?;
            stderr.set_nonblocking(true)?;
            Ok((stdin, stdout, stderr))
        })();
        let (mut stdin, mut stdout, mut stderr) = match pipes {
            Ok(p) => p,
            Err(e) => {
                let _ = child.kill();
                self.reaping.push(child);
                return Err(e);
            }
        };
        let reg = cx
            .register(&mut stdin, local(generation, STDIN), Interest::WRITABLE)
            .and_then(|()| cx.register(&mut stdout, local(generation, STDOUT), Interest::READABLE))
            .and_then(|()| cx.register(&mut stderr, local(generation, STDERR), Interest::READABLE));
        if let Err(e) = reg {
            let _ = cx.deregister(&mut stdin);
            let _ = cx.deregister(&mut stdout);
            let _ = cx.deregister(&mut stderr);
            let _ = child.kill();
            self.reaping.push(child);
            return Err(e);
        }
        self.proc = Some(Proc {
            child,
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr: Some(stderr),
            generation,
            lines_written: 0,
            popped: 0,
        });
        self.inbuf.clear();
        self.errbuf.clear();
        self.outbuf.clear();
        self.out_pos = 0;
        self.count(|s| s.runs += 1);
        Ok(())
    }

    /// Stops the program (killed if it still runs) and releases its pipes; its status if
    /// it has ended.
    fn stop_proc(&mut self, cx: &mut Ctx, kill: bool) -> Option<ExitStatus> {
        let mut p = self.proc.take()?;
        if let Some(mut s) = p.stdin.take() {
            let _ = cx.deregister(&mut s);
        }
        if let Some(mut s) = p.stdout.take() {
            let _ = cx.deregister(&mut s);
        }
        if let Some(mut s) = p.stderr.take() {
            // What it wrote to stderr last is often why it died.
            self.read_stderr_from(&mut s, cx);
            let _ = cx.deregister(&mut s);
        }
        self.flush_errbuf(cx);
        let status = p.child.try_wait().ok().flatten();
        if status.is_none() {
            if kill {
                let _ = p.child.kill();
            }
            self.reaping.push(p.child);
        }
        self.reap();
        status
    }

    /// Collects programs that have ended.
    fn reap(&mut self) {
        self.reaping
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
    }

    fn restart_later(&mut self, cx: &mut Ctx) {
        if self.restart_timer.is_some() {
            return;
        }
        match cx.timer_after(self.backoff, RESTART) {
            Ok(t) => self.restart_timer = Some(t),
            Err(e) => {
                slog::error!(cx.logger(), "exec: cannot set the restart timer"; "error" => %e)
            }
        }
        self.backoff = (self.backoff * 2).min(self.s.backoff_max.max(self.s.backoff_initial));
    }

    fn restart_now(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        match self.spawn(cx) {
            Ok(()) => {
                self.count(|s| s.restarts += 1);
                slog::info!(cx.logger(), "exec: program restarted";
                    "cog" => "exec", "command" => self.command_line(),
                    "resending" => self.waiting.len().min(self.s.max_in_flight));
                self.pump(out, cx);
            }
            Err(e) => {
                slog::error!(cx.logger(), "exec: cannot restart the program";
                    "cog" => "exec", "command" => self.command_line(), "error" => %e);
                self.restart_later(cx);
            }
        }
    }

    /// The program is given up: records it held unanswered go back to the front of the
    /// queue (the one due is charged an attempt) and a new one starts after the backoff.
    fn lost(&mut self, why: Lost, out: &mut Out<D>, cx: &mut Ctx) {
        let (written, popped) = self
            .proc
            .as_ref()
            .map_or((0, 0), |p| (p.lines_written, p.popped));
        let status = self.stop_proc(cx, true);
        let held = self.in_flight.len();
        let (reason, charge) = match &why {
            Lost::Died(r) => (format!("{r} ({})", describe(status)), true),
            Lost::Protocol(r) => (r.clone(), false),
            Lost::Extra(r) => (r.clone(), false),
            Lost::Timeout => ("records without an answer within timeout".into(), false),
        };
        if let Lost::Protocol(r) = &why
            && let Some((d, _)) = self.in_flight.pop_front()
        {
            self.head_seq += 1;
            self.head_attempts = 0;
            self.on_error
                .fail(d, "exec", &format!("the program's answer: {r}"), out, cx);
        }
        if charge && !self.in_flight.is_empty() {
            self.head_attempts += 1;
            if self.head_attempts >= self.s.attempts
                && let Some((d, _)) = self.in_flight.pop_front()
            {
                self.head_seq += 1;
                self.head_attempts = 0;
                let why = format!(
                    "{} programs in a row ended without answering it: {reason}",
                    self.s.attempts
                );
                self.on_error.fail(d, "exec", &why, out, cx);
            }
        }
        let sent = written
            .saturating_sub(popped)
            .min(self.in_flight.len() as u64);
        if sent > 0 {
            self.count(|s| s.resent += sent);
        }
        for (d, _) in self.in_flight.drain(..).rev() {
            self.waiting.push_front(d);
        }
        self.outbuf.clear();
        self.out_pos = 0;
        if let Some(t) = self.timeout_timer.take() {
            cx.cancel_timer(t);
        }
        slog::warn!(cx.logger(), "exec: program given up, restarting it";
            "cog" => "exec", "command" => self.command_line(), "reason" => %reason,
            "unanswered" => held, "resent" => sent, "backoff" => ?self.backoff);
        self.restart_later(cx);
        self.settle(cx);
        self.check_finished(out, cx);
    }

    // --- sending

    /// Renders waiting records while there is room, writes what the pipe takes, and pauses
    /// or resumes the supplies.
    fn pump(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        if self.s.mode == ExecMode::Spawn {
            self.pump_spawn(out, cx);
            return;
        }
        if self.proc.as_ref().is_some_and(|p| p.stdin.is_some()) {
            let now = cx.now();
            let mut seq = self.head_seq + self.in_flight.len() as u64;
            while self.in_flight.len() < self.s.max_in_flight
                && self.outbuf.len() - self.out_pos < self.s.buffer_bytes
            {
                let Some(d) = self.waiting.pop_front() else {
                    break;
                };
                self.render(&d, seq);
                seq += 1;
                self.in_flight.push_back((d, now));
            }
            if !self.in_flight.is_empty() && self.timeout_timer.is_none() {
                self.arm_timeout(cx);
            }
            if let Err(why) = self.write_out(cx) {
                self.lost(why, out, cx);
                return;
            }
        }
        self.settle(cx);
    }

    fn render(&mut self, d: &D, seq: u64) {
        let start = self.outbuf.len();
        (self.fields.render)(d, &mut self.outbuf);
        if self.seq_key.is_some() && self.outbuf.last() == Some(&b'}') {
            self.outbuf.pop();
            if self.outbuf.len() == start + 1 {
                // `{}`: no comma before the first key.
                self.outbuf.extend_from_slice(&self.seq_json[1..]);
            } else {
                self.outbuf.extend_from_slice(&self.seq_json);
            }
            let _ = write!(self.outbuf, "{seq}}}");
        }
        self.outbuf.push(b'\n');
    }

    /// Writes the out-buffer until the pipe is full; closes the program's input once
    /// everything is written at shutdown.
    fn write_out(&mut self, cx: &mut Ctx) -> Result<(), Lost> {
        let Some(p) = self.proc.as_mut() else {
            return Ok(());
        };
        let Some(stdin) = p.stdin.as_mut() else {
            return Ok(());
        };
        while self.out_pos < self.outbuf.len() {
            match stdin.write(&self.outbuf[self.out_pos..]) {
                Ok(0) => return Err(Lost::Died("its input pipe took nothing".into())),
                Ok(n) => {
                    let chunk = &self.outbuf[self.out_pos..self.out_pos + n];
                    p.lines_written += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
                    self.out_pos += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Lost::Died(format!("writing to it failed: {e}"))),
            }
        }
        if self.out_pos == self.outbuf.len() {
            self.outbuf.clear();
            self.out_pos = 0;
            if self.finishing
                && self.waiting.is_empty()
                && let Some(mut s) = p.stdin.take()
            {
                // End of input: the program answers what is left and exits.
                let _ = cx.deregister(&mut s);
            }
        } else if self.out_pos >= (1 << 20) {
            self.outbuf.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Pauses the supplies when too much is held, resumes them at half.
    fn settle(&mut self, cx: &mut Ctx) {
        let held = self.waiting.len() + self.in_flight.len() + self.run.len();
        let high = if self.s.mode == ExecMode::Spawn {
            self.s.max_in_flight.max(2 * self.s.batch_records)
        } else {
            self.s.max_in_flight
        };
        let unwritten = self.outbuf.len() - self.out_pos;
        if !self.paused && (held >= high || unwritten >= self.s.buffer_bytes) {
            self.paused = true;
            cx.pause_supplies();
        } else if self.paused && held <= high / 2 && unwritten <= self.s.buffer_bytes / 2 {
            self.paused = false;
            cx.resume_supplies();
        }
    }

    fn arm_timeout(&mut self, cx: &mut Ctx) {
        let Some((_, at)) = self.in_flight.front() else {
            return;
        };
        match cx.timer_at(*at + self.s.timeout, TIMEOUT) {
            Ok(t) => self.timeout_timer = Some(t),
            Err(e) => slog::error!(cx.logger(), "exec: cannot set the timeout"; "error" => %e),
        }
    }

    /// Records sent `timeout` ago or more go to `on_error`, and the program is restarted.
    fn timed_out(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        self.timeout_timer = None;
        let now = Instant::now();
        let mut n = 0u64;
        while let Some((_, at)) = self.in_flight.front() {
            if *at + self.s.timeout > now {
                break;
            }
            if let Some((d, _)) = self.in_flight.pop_front() {
                self.head_seq += 1;
                if let Some(p) = self.proc.as_mut() {
                    p.popped += 1;
                }
                n += 1;
                let why = format!("no answer from the program within {:?}", self.s.timeout);
                self.on_error.fail(d, "exec", &why, out, cx);
            }
        }
        if n > 0 {
            self.head_attempts = 0;
            self.count(|s| s.timeouts += n);
            self.last_progress = now;
            self.lost(Lost::Timeout, out, cx);
        } else {
            self.arm_timeout(cx);
        }
    }

    // --- receiving

    fn read_answers(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        let generation = self.generation;
        loop {
            let Some(stdout) = self.proc.as_mut().and_then(|p| p.stdout.as_mut()) else {
                return;
            };
            // Read into a buffer zeroed once: growing `inbuf` to read into it would zero
            // its spare room at every read.
            let len = self.inbuf.len();
            let scratch = self
                .scratch
                .get_or_insert_with(|| vec![0; READ_CHUNK].into_boxed_slice());
            let r = stdout.read(scratch);
            if let Ok(n) = r {
                self.inbuf.extend_from_slice(&scratch[..n]);
            }
            match r {
                Ok(0) => {
                    self.inbuf.truncate(len);
                    if self.s.mode == ExecMode::Spawn {
                        self.run_ended(out, cx);
                    } else if self.finishing && self.in_flight.is_empty() && self.waiting.is_empty()
                    {
                        // It answered everything and ended at the end of its input.
                        self.stop_proc(cx, false);
                        self.check_finished(out, cx);
                    } else {
                        self.lost(Lost::Died("the program closed its output".into()), out, cx);
                    }
                    return;
                }
                Ok(n) => {
                    self.inbuf.truncate(len + n);
                    if self.s.mode == ExecMode::Stream {
                        if let Err(why) = self.take_lines(out, cx) {
                            self.lost(why, out, cx);
                            return;
                        }
                        if self.generation != generation {
                            return;
                        }
                    } else if self.inbuf.len() > MAX_LINE.max(self.s.buffer_bytes * 4) {
                        self.run_failed("the program wrote too much".into(), out, cx);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.inbuf.truncate(len);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.inbuf.truncate(len),
                Err(e) => {
                    self.inbuf.truncate(len);
                    let why = format!("reading its output failed: {e}");
                    if self.s.mode == ExecMode::Spawn {
                        self.run_failed(why, out, cx);
                    } else {
                        self.lost(Lost::Died(why), out, cx);
                    }
                    return;
                }
            }
        }
        if self.s.mode == ExecMode::Stream {
            // Answers made room: send more.
            self.pump(out, cx);
            self.check_finished(out, cx);
        }
    }

    /// Handles every complete line of `inbuf`.
    fn take_lines(&mut self, out: &mut Out<D>, cx: &mut Ctx) -> Result<(), Lost> {
        let mut start = 0;
        let buf = std::mem::take(&mut self.inbuf);
        let mut result = Ok(());
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            start += nl + 1;
            if let Err(why) = self.answer(line, out, cx) {
                result = Err(why);
                break;
            }
        }
        self.inbuf = buf;
        if result.is_err() {
            self.inbuf.clear();
            return result;
        }
        self.inbuf.drain(..start);
        if self.inbuf.len() > MAX_LINE {
            return Err(Lost::Protocol(format!(
                "an answer line longer than {MAX_LINE} bytes"
            )));
        }
        Ok(())
    }

    /// One answer line of the stream.
    fn answer(&mut self, line: &[u8], out: &mut Out<D>, cx: &mut Ctx) -> Result<(), Lost> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (written, popped) = self
            .proc
            .as_ref()
            .map_or((0, 0), |p| (p.lines_written, p.popped));
        let mut m = match parse_answer(line) {
            Ok(m) => m,
            Err(e) => {
                self.bad_line(line, &e, cx);
                if popped >= written {
                    self.count(|s| s.extra_lines += 1);
                    return Err(Lost::Extra(format!("{e}, while no record was unanswered")));
                }
                return Err(Lost::Protocol(e));
            }
        };
        if let Some(k) = self.seq_key
            && let Some(v) = m.remove(k)
        {
            let Value::Int(n) = v else {
                let e = format!("{} is not a sequence number", self.s.seq_field);
                self.bad_line(line, &e, cx);
                return Err(Lost::Protocol(e));
            };
            let n = u64::try_from(n).unwrap_or(u64::MAX);
            let sent_end = self.head_seq + written.saturating_sub(popped);
            if n < self.head_seq {
                // A second answer to a record answered already: skipped, no shift.
                self.count(|s| s.extra_lines += 1);
                if self.limiter.allow("program output", "exec", cx) {
                    slog::warn!(cx.logger(), "exec: an extra answer for a record answered already, skipped";
                        "cog" => "exec", "seq" => n, "expected" => self.head_seq);
                }
                return Ok(());
            }
            if n >= sent_end {
                let e = format!("an answer for record {n}, which was not sent");
                self.bad_line(line, &e, cx);
                return Err(Lost::Protocol(e));
            }
            while self.head_seq < n {
                // The program skipped these: they go to on_error, the rest stay in step.
                if let Some((d, _)) = self.in_flight.pop_front() {
                    self.head_seq += 1;
                    if let Some(p) = self.proc.as_mut() {
                        p.popped += 1;
                    }
                    self.count(|s| s.skipped += 1);
                    self.on_error
                        .fail(d, "exec", &"the program skipped it (no answer)", out, cx);
                }
            }
        } else if popped >= written {
            let e = "an answer beyond every record written to the program".to_string();
            self.count(|s| s.extra_lines += 1);
            self.bad_line(line, &e, cx);
            return Err(Lost::Extra(e));
        }
        let Some((mut d, _)) = self.in_flight.pop_front() else {
            return Err(Lost::Extra("an answer with no record waiting".into()));
        };
        self.head_seq += 1;
        if let Some(p) = self.proc.as_mut() {
            p.popped += 1;
        }
        self.fields.answer.merge(&mut d, &mut m);
        out.push(d);
        self.head_attempts = 0;
        self.backoff = self.s.backoff_initial;
        self.last_progress = cx.now();
        Ok(())
    }

    fn bad_line(&mut self, line: &[u8], why: &str, cx: &mut Ctx) {
        self.count(|s| s.bad_lines += 1);
        if self.limiter.allow("program output", "exec", cx) {
            let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
            slog::warn!(cx.logger(), "exec: bad line from the program";
                "cog" => "exec", "reason" => why, "line" => shown);
        }
    }

    fn read_stderr(&mut self, cx: &mut Ctx) {
        let Some(mut s) = self.proc.as_mut().and_then(|p| p.stderr.take()) else {
            return;
        };
        let open = self.read_stderr_from(&mut s, cx);
        if open {
            if let Some(p) = self.proc.as_mut() {
                p.stderr = Some(s);
            }
        } else {
            self.flush_errbuf(cx);
            let _ = cx.deregister(&mut s);
        }
    }

    /// Reads stderr until it would block; false at its end.
    fn read_stderr_from(&mut self, s: &mut Receiver, cx: &mut Ctx) -> bool {
        let mut chunk = [0u8; 8192];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.errbuf.extend_from_slice(&chunk[..n]);
                    while let Some(nl) = self.errbuf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = self.errbuf.drain(..=nl).collect();
                        self.log_stderr(&line[..line.len() - 1], cx);
                    }
                    if self.errbuf.len() > MAX_ERR_LINE {
                        let line = std::mem::take(&mut self.errbuf);
                        self.log_stderr(&line, cx);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    fn flush_errbuf(&mut self, cx: &mut Ctx) {
        if !self.errbuf.is_empty() {
            let line = std::mem::take(&mut self.errbuf);
            self.log_stderr(&line, cx);
        }
    }

    fn log_stderr(&mut self, line: &[u8], cx: &mut Ctx) {
        self.count(|s| s.stderr_lines += 1);
        if self.err_limiter.allow("program stderr lines", "exec", cx) {
            let shown = String::from_utf8_lossy(&line[..line.len().min(MAX_ERR_LINE)]);
            slog::warn!(cx.logger(), "exec: program stderr";
                "cog" => "exec", "line" => %shown.trim_end());
        }
    }

    // --- shutdown

    /// Completes a lingering finish once nothing is held.
    fn check_finished(&mut self, _out: &mut Out<D>, cx: &mut Ctx) {
        if !self.lingering
            || !self.waiting.is_empty()
            || !self.in_flight.is_empty()
            || !self.run.is_empty()
        {
            return;
        }
        self.lingering = false;
        if let Some(t) = self.finish_timer.take() {
            cx.cancel_timer(t);
        }
        self.close_input(cx);
        cx.finished();
    }

    /// What the program wrote after the last answer the cog waited for (it has ended, so
    /// the pipe holds all of it): lines for no record, counted and logged, never given to
    /// one.
    fn count_late_lines(&mut self, out: &mut Receiver, cx: &mut Ctx) {
        let mut late = std::mem::take(&mut self.inbuf);
        let mut buf = [0u8; 4096];
        while late.len() <= MAX_LINE {
            match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => late.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let lines = late
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .count() as u64;
        if lines > 0 {
            self.count(|s| s.extra_lines += lines);
            slog::warn!(cx.logger(), "exec: the program wrote lines after its last answer; they belong to no record and are dropped";
                "cog" => "exec", "lines" => lines, "command" => self.command_line());
        }
    }

    fn close_input(&mut self, cx: &mut Ctx) {
        if let Some(p) = self.proc.as_mut()
            && let Some(mut s) = p.stdin.take()
        {
            let _ = cx.deregister(&mut s);
        }
    }

    /// The shutdown waited `timeout` without an answer: what is held goes to `on_error`.
    fn give_up(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        let n = self.waiting.len() + self.in_flight.len() + self.run.len();
        slog::error!(cx.logger(), "exec: no answer from the program within timeout at shutdown";
            "cog" => "exec", "command" => self.command_line(), "records" => n);
        let why = format!(
            "no answer from the program within {:?} at shutdown",
            self.s.timeout
        );
        self.count(|s| s.timeouts += n as u64);
        let held: Vec<D> = self
            .run
            .drain(..)
            .chain(self.in_flight.drain(..).map(|(d, _)| d))
            .chain(self.waiting.drain(..))
            .collect();
        for d in held {
            self.on_error.fail(d, "exec", &why, out, cx);
        }
        self.stop_proc(cx, true);
        self.check_finished(out, cx);
    }

    // --- spawn mode

    fn pump_spawn(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        if self.proc.is_none() && self.run.is_empty() && self.restart_timer.is_none() {
            let full = self.waiting.len() >= self.s.batch_records;
            if full || (self.finishing && !self.waiting.is_empty()) {
                let n = self.waiting.len().min(self.s.batch_records);
                self.run = self.waiting.drain(..n).collect();
                self.run_attempts = 0;
                self.start_run(out, cx);
            } else if !self.waiting.is_empty() && self.linger_timer.is_none() {
                match cx.timer_after(self.s.linger, LINGER) {
                    Ok(t) => self.linger_timer = Some(t),
                    Err(e) => {
                        slog::error!(cx.logger(), "exec: cannot set the linger timer"; "error" => %e)
                    }
                }
            }
        }
        self.settle(cx);
    }

    /// Runs the program over `run` (again, after a failure).
    fn start_run(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        if let Some(t) = self.linger_timer.take() {
            cx.cancel_timer(t);
        }
        if let Err(e) = self.spawn(cx) {
            self.run_failed(format!("cannot start the program: {e}"), out, cx);
            return;
        }
        let run = std::mem::take(&mut self.run);
        for (i, d) in run.iter().enumerate() {
            self.render(d, i as u64);
        }
        self.run = run;
        match cx.timer_after(self.s.timeout, TIMEOUT) {
            Ok(t) => self.timeout_timer = Some(t),
            Err(e) => slog::error!(cx.logger(), "exec: cannot set the timeout"; "error" => %e),
        }
        self.write_run(out, cx);
    }

    fn write_run(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        let finishing = std::mem::replace(&mut self.finishing, true);
        let waiting = std::mem::take(&mut self.waiting);
        // The whole batch is the input: closed once written (write_out closes it when
        // `finishing` and nothing waits).
        let r = self.write_out(cx);
        self.waiting = waiting;
        self.finishing = finishing;
        if let Err(Lost::Died(why)) = r {
            self.run_failed(why, out, cx);
        }
    }

    /// The program closed its output: match its answers to the run's records.
    fn run_ended(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        let status = self.stop_proc(cx, false);
        if let Some(t) = self.timeout_timer.take() {
            cx.cancel_timer(t);
        }
        let buf = std::mem::take(&mut self.inbuf);
        let mut lines: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let n = self.run.len();
        let mut answers: Vec<Option<Result<Map, String>>> = (0..n).map(|_| None).collect();
        let mut by_seq = self.seq_key.is_some();
        let mut extra = 0u64;
        let mut parsed: Vec<Result<(Option<u64>, Map), String>> = Vec::with_capacity(lines.len());
        for l in &lines {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            parsed.push(parse_answer(l).map(|mut m| {
                let seq = self.seq_key.and_then(|k| match m.remove(k) {
                    Some(Value::Int(i)) => u64::try_from(i).ok(),
                    _ => None,
                });
                (seq, m)
            }));
        }
        if by_seq {
            by_seq = !parsed.is_empty()
                && parsed
                    .iter()
                    .all(|p| matches!(p, Ok((Some(s), _)) if (*s as usize) < n));
        }
        let complete;
        if by_seq {
            for p in parsed {
                if let Ok((Some(s), m)) = p {
                    let slot = &mut answers[s as usize];
                    if slot.is_some() {
                        extra += 1;
                    } else {
                        *slot = Some(Ok(m));
                    }
                }
            }
            complete = answers.iter().all(Option::is_some);
        } else if parsed.len() == n {
            for (slot, p) in answers.iter_mut().zip(parsed) {
                *slot = Some(match p {
                    Ok((Some(s), _)) if self.seq_key.is_some() && s as usize >= n => {
                        Err(format!("{} out of range", self.s.seq_field))
                    }
                    Ok((_, m)) => Ok(m),
                    Err(e) => Err(e),
                });
            }
            complete = true;
        } else {
            complete = false;
            let e = format!("the program wrote {} lines for {n} records", parsed.len());
            if parsed.len() > n {
                extra += (parsed.len() - n) as u64;
            }
            for slot in answers.iter_mut() {
                *slot = Some(Err(e.clone()));
            }
        }
        let bad = answers.iter().filter(|a| matches!(a, Some(Err(_)))).count() as u64;
        if extra > 0 || bad > 0 {
            self.count(|s| {
                s.extra_lines += extra;
                s.bad_lines += bad.min(lines.len() as u64);
            });
        }
        let failed_run = !complete || bad > 0 || status.is_some_and(|s| !s.success());
        if failed_run && self.run_attempts + 1 < self.s.attempts {
            let why = if complete && bad == 0 {
                describe(status)
            } else {
                format!(
                    "{} of {n} answers usable ({})",
                    answers.iter().filter(|a| matches!(a, Some(Ok(_)))).count(),
                    describe(status)
                )
            };
            self.run_failed(why, out, cx);
            return;
        }
        if let Some(st) = status
            && !st.success()
        {
            slog::warn!(cx.logger(), "exec: the program ended badly, its answers are used";
                "cog" => "exec", "status" => describe(Some(st)));
        }
        let run = std::mem::take(&mut self.run);
        for (mut d, a) in run.into_iter().zip(answers) {
            match a {
                Some(Ok(mut m)) => {
                    self.fields.answer.merge(&mut d, &mut m);
                    out.push(d);
                }
                Some(Err(e)) => self.on_error.fail(d, "exec", &e, out, cx),
                None => {
                    self.on_error
                        .fail(d, "exec", &"the program gave no answer for it", out, cx)
                }
            }
        }
        self.backoff = self.s.backoff_initial;
        self.last_progress = cx.now();
        self.run_attempts = 0;
        self.pump_spawn(out, cx);
        self.check_finished(out, cx);
    }

    /// A run failed: tried again after the backoff, or its records go to `on_error`.
    fn run_failed(&mut self, why: String, out: &mut Out<D>, cx: &mut Ctx) {
        self.stop_proc(cx, true);
        if let Some(t) = self.timeout_timer.take() {
            cx.cancel_timer(t);
        }
        self.inbuf.clear();
        self.outbuf.clear();
        self.out_pos = 0;
        self.run_attempts += 1;
        if self.run_attempts < self.s.attempts {
            let n = self.run.len() as u64;
            self.count(|s| s.resent += n);
            slog::warn!(cx.logger(), "exec: run failed, trying again";
                "cog" => "exec", "command" => self.command_line(), "reason" => %why,
                "records" => n, "attempt" => self.run_attempts, "backoff" => ?self.backoff);
            self.restart_later(cx);
        } else {
            let e = format!("{} runs of the program failed: {why}", self.s.attempts);
            for d in std::mem::take(&mut self.run) {
                self.on_error.fail(d, "exec", &e, out, cx);
            }
            self.run_attempts = 0;
            self.pump_spawn(out, cx);
        }
        self.settle(cx);
        self.check_finished(out, cx);
    }
}

/// One answer line as fields.
fn parse_answer(line: &[u8]) -> Result<Map, String> {
    match Value::parse_json(line) {
        Ok(Value::Map(m)) => Ok(m),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not JSON ({e})")),
    }
}

impl<D: 'static> Cog<D> for Exec<D> {
    fn name(&self) -> &str {
        "exec"
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.last_progress = cx.now();
        if self.s.mode == ExecMode::Stream {
            self.spawn(cx).map_err(|e| {
                format!(
                    "exec: cannot start the program {}: {e}",
                    self.command_line()
                )
            })?;
        } else {
            // Checked now rather than at the first batch.
            resolve_program(&self.program.to_string_lossy()).map_err(|e| {
                format!("exec: cannot run the program {}: {e}", self.command_line())
            })?;
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        self.waiting.extend(batch.drain(..));
        self.pump(out, cx);
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<D>, cx: &mut Ctx) {
        match (local, why) {
            (TIMEOUT, Wake::Timer(t)) if self.timeout_timer == Some(t) => {
                if self.s.mode == ExecMode::Spawn {
                    self.timeout_timer = None;
                    let why = format!("the run took longer than {:?}", self.s.timeout);
                    self.count(|s| s.timeouts += 1);
                    self.run_failed(why, out, cx);
                } else {
                    self.timed_out(out, cx);
                }
            }
            (RESTART, Wake::Timer(t)) if self.restart_timer == Some(t) => {
                self.restart_timer = None;
                self.reap();
                if self.s.mode == ExecMode::Spawn {
                    if self.run.is_empty() {
                        self.pump_spawn(out, cx);
                    } else {
                        self.count(|s| s.restarts += 1);
                        self.start_run(out, cx);
                    }
                } else {
                    self.restart_now(out, cx);
                }
            }
            (LINGER, Wake::Timer(t)) if self.linger_timer == Some(t) => {
                self.linger_timer = None;
                if self.proc.is_none() && self.run.is_empty() && !self.waiting.is_empty() {
                    let n = self.waiting.len().min(self.s.batch_records);
                    self.run = self.waiting.drain(..n).collect();
                    self.run_attempts = 0;
                    self.start_run(out, cx);
                }
            }
            (FINISH, Wake::Timer(t)) if self.finish_timer == Some(t) => {
                self.finish_timer = None;
                let now = Instant::now();
                let due = self.last_progress + self.s.timeout;
                if now >= due {
                    self.give_up(out, cx);
                } else {
                    match cx.timer_at(due, FINISH) {
                        Ok(t) => self.finish_timer = Some(t),
                        Err(_) => self.give_up(out, cx),
                    }
                }
            }
            (l, Wake::Ready(_)) if l & TIMER == 0 => {
                let Some(generation) = self.proc.as_ref().map(|p| p.generation) else {
                    return;
                };
                if l >> 2 != generation & 0x0FFF_FFFF {
                    return;
                }
                match l & 3 {
                    STDIN if self.s.mode == ExecMode::Spawn => self.write_run(out, cx),
                    STDIN => self.pump(out, cx),
                    STDOUT => self.read_answers(out, cx),
                    STDERR => self.read_stderr(cx),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        self.finishing = true;
        // Lingering first: what the pump binds (timers, a restarted program) is accepted.
        cx.linger();
        self.lingering = true;
        self.last_progress = cx.now();
        self.pump(out, cx);
        if self.lingering {
            match cx.timer_after(self.s.timeout, FINISH) {
                Ok(t) => self.finish_timer = Some(t),
                Err(e) => {
                    slog::error!(cx.logger(), "exec: cannot set the shutdown deadline"; "error" => %e)
                }
            }
        }
        self.check_finished(out, cx);
    }

    fn done(&mut self, cx: &mut Ctx) {
        let held = self.waiting.len() + self.in_flight.len() + self.run.len();
        if held > 0 {
            slog::error!(cx.logger(), "exec: records still held when stopped (not acknowledged)";
                "cog" => "exec", "records" => held);
        }
        self.close_input(cx);
        let mut late_out = None;
        if let Some(mut p) = self.proc.take() {
            if let Some(mut s) = p.stdout.take() {
                let _ = cx.deregister(&mut s);
                late_out = Some(s);
            }
            if let Some(mut s) = p.stderr.take() {
                self.read_stderr_from(&mut s, cx);
                let _ = cx.deregister(&mut s);
            }
            self.flush_errbuf(cx);
            self.reaping.push(p.child);
        }
        // The program had its input closed: it gets a moment to end by itself (its last
        // words on stderr are logged above), then SIGTERM, then SIGKILL.
        let start = Instant::now();
        let mut termed = false;
        loop {
            self.reap();
            if self.reaping.is_empty() {
                break;
            }
            let waited = start.elapsed();
            if !termed && waited >= GRACE {
                for c in &self.reaping {
                    if let Ok(pid) = i32::try_from(c.id()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                }
                termed = true;
            }
            if waited >= 2 * GRACE {
                for c in &mut self.reaping {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                self.reaping.clear();
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Some(mut out) = late_out
            && self.s.mode == ExecMode::Stream
        {
            self.count_late_lines(&mut out, cx);
        }
        let st = self.stats.get();
        slog::info!(cx.logger(), "exec totals";
            "cog" => "exec", "runs" => st.runs, "restarts" => st.restarts,
            "resent" => st.resent, "bad_lines" => st.bad_lines,
            "extra_lines" => st.extra_lines, "timeouts" => st.timeouts,
            "skipped" => st.skipped, "stderr_lines" => st.stderr_lines);
    }
}

/// The descriptor of `exec`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "exec",
    kind: CogKind::Transform,
    summary: "pipes records through an external program (one JSON object per line each way); \
              order kept, restarted with backoff, timeouts to on_error",
    params: ExecSettings::PARAMS,
    fields: &[("*", "the fields of the program's answer")],
    build,
};

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: ExecSettings = p.settings()?;
    if let Some(prog) = s.command.first_mut()
        && prog.contains('/')
        && !Path::new(prog.as_str()).is_absolute()
    {
        *prog = p.resolve(prog).to_string_lossy().into_owned();
    }
    let on_error = on_error::from_settings(&s.on_error, p, cx)?;
    let exec = Exec::from_settings(&s, record_fields(s.merge), on_error)
        .map_err(|e| super::setting_error(p, e))?;
    Ok(Box::new(exec))
}
