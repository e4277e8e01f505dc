//! The `deadbeat` binary driven as operators drive it: configs, stdin, files, signals.

pub(crate) use crate::support::line_count;
use crate::support::wait_until;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::engine::TempDir;

mod check;
mod cli;
mod cli_graph;
mod cli_test;
mod cli_top;
mod cog_ids;
mod conditions;
mod custom_daemon;
mod dedup;
mod dns_reverse;
mod enrich;
mod exec;
mod file_out;
mod files;
mod http_control;
mod http_page;
mod http_rewind;
mod merge;
mod multiline;
mod parallel;
mod signals;
mod spool;
mod sshd_bruteforce;
mod tail;
mod throttle;
mod topology;
mod window;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");

/// Longest any condition is waited for; a healthy run takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

fn deadbeat() -> Command {
    let mut c = Command::new(BIN);
    c.stderr(Stdio::piped());
    c
}

/// Runs `deadbeat run CONFIG` to its end and checks it succeeded.
fn run_ok(config: &Path) -> std::process::Output {
    let res = deadbeat()
        .args(["run", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    res
}

/// Starts `deadbeat run CONFIG` with a pipe on its standard input.
fn spawn_with_stdin(config: &Path) -> (Child, std::process::ChildStdin) {
    let mut child = deadbeat()
        .args(["run", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Writes a config file into `dir`.
fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("deadbeat.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Polls `cond` every few milliseconds until it holds; panics with `what` after PATIENCE.
fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_until(what, PATIENCE, cond);
}

/// Waits for a child to exit, killing it (and failing) if it takes longer than PATIENCE.
fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(e) = child.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("deadbeat did not exit in time; stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(e) = child.stderr.as_mut() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a child we started.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Runs the binary with `input` on stdin and returns (status, stdout, stderr).
pub(crate) fn run_with_stdin(config: &Path, input: &[u8]) -> (ExitStatus, Vec<u8>, String) {
    let mut child = deadbeat()
        .args(["run", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // A daemon that refuses its config exits before reading: a broken pipe is its
        // answer, which the caller checks through the exit status and stderr.
        if let Err(e) = stdin.write_all(&input) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "writing stdin: {e}"
            );
        }
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    writer.join().unwrap();
    let err = stderr_of(&mut child);
    let st = wait_exit(&mut child);
    (st, out, err)
}

/// `n` distinct numbered lines.
fn numbered(n: usize) -> String {
    let mut s = String::with_capacity(n * 40);
    for i in 0..n {
        s.push_str(&format!("line {i:07} the quick brown fox\n"));
    }
    s
}
