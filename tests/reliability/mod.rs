//! Reliability suite: crashes, reopen, disk full, wrapped JSON and malformed input storms,
//! each driving the real binary and counting every line at the end.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::engine::TempDir;

mod broken_output;
mod disk_buffer;
mod disk_full;
mod exactly_once;
mod kill9;
mod malformed;
pub(crate) mod numbered;
mod sighup;
mod wrapped_json;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");

/// Longest any condition is waited for; a healthy run takes far less.
const PATIENCE: Duration = Duration::from_secs(30);

/// Writes a config file into `dir`.
fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("deadbeat.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Polls `cond` every few milliseconds until it holds; panics with `what` after `patience`.
fn wait_within(what: &str, patience: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_within(what, PATIENCE, cond);
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a child we started.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

fn line_count(p: &Path) -> usize {
    std::fs::read(p)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn append(p: &Path, text: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap();
    f.write_all(text).unwrap();
}

/// A deterministic generator (xorshift64*), so every run picks the same points.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A running daemon, its stderr appended to `err.log` beside its config.
struct Daemon {
    child: Child,
    err: PathBuf,
}

impl Daemon {
    fn start(cfg: &Path, stdin: Stdio) -> Daemon {
        let err = cfg.parent().unwrap().join("err.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&err)
            .unwrap();
        let child = Command::new(BIN)
            .args(["run", cfg.to_str().unwrap()])
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Daemon { child, err }
    }

    fn id(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the exit, killing the daemon (and failing) after PATIENCE.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("deadbeat did not exit in time; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGTERM and a clean exit; returns the stderr.
    fn stop(mut self) -> String {
        kill(self.id(), libc::SIGTERM);
        self.exit_ok()
    }

    /// Waits for exit status 0; returns the stderr.
    fn exit_ok(&mut self) -> String {
        let st = self.wait_exit();
        let err = self.stderr();
        assert!(st.success(), "exit {st:?}: {err}");
        err
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[in, out, dropped, errors]` of the cog named `cog` in the final counters of `log`.
fn final_counters(log: &str, cog: &str) -> [u64; 4] {
    let line = log
        .lines()
        .rfind(|l| l.contains("final counters") && l.contains(&format!(" cog={cog}#")))
        .unwrap_or_else(|| panic!("no final counters of {cog}:\n{log}"));
    let get = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
    };
    [get("in"), get("out"), get("dropped"), get("errors")]
}
