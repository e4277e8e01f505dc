//! A collector (deadbeat `tcp_in` → `file_out`) restarted three times during a stream
//! from `tail` → `tcp_out`: with SIGTERM nothing is lost (`tcp_in` reads what its kernel
//! holds before closing, `tcp_out` sends again what it did not see acknowledged); with
//! kill -9 what the collector's kernel acknowledged may be lost, which is measured.
//! Each stop comes once the collector wrote a further quarter of the input and the sender
//! is connected again; the counts are printed (`--nocapture`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::stream_out::{Daemon, listener, numbered};
use crate::engine::TempDir;

/// Bytes of each line of `numbered`.
const LINE: usize = 33;
const RESTARTS: usize = 3;
/// How long the input takes to be written, whatever its size: faster than the collector
/// writes it, so that a backlog waits in the sender's socket at each restart.
const STREAM_FOR: Duration = Duration::from_millis(500);
/// Longest wait for the collector to have everything after the input is complete.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Lines streamed: `DEADBEAT_RESTART_LINES`, default 100,000 (the check is 500,000).
fn lines() -> usize {
    match std::env::var("DEADBEAT_RESTART_LINES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("DEADBEAT_RESTART_LINES={v:?}: not a number")),
        Err(_) => 100_000,
    }
}

/// The collector; `fsync = "always"` makes it slower than the sender, so that a backlog
/// waits in the sender's socket when it stops.
fn collector(dir: &Path, port: u16) -> Daemon {
    let cfg = dir.join("collector.toml");
    let text = format!(
        "[[train]]\nname = \"collect\"\n[[train.cog]]\ntype = \"tcp_in\"\n\
         listen = \"127.0.0.1:{port}\"\nframing = \"newline\"\n[[train.cog]]\n\
         type = \"file_out\"\npath = {:?}\nfsync = \"always\"\n",
        dir.join("out.log")
    );
    std::fs::write(&cfg, text).unwrap();
    let mut d = Daemon::start(&cfg, false);
    d.wait_log("trains started");
    d
}

fn signal(d: &Daemon, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(d.child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// What the collector wrote, line by line: (each number's count, lines that are not a
/// complete numbered line).
fn tally(out: &Path, n: usize) -> (Vec<u32>, usize) {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut seen = vec![0u32; n];
    let mut fragments = 0;
    for l in text.lines() {
        match l
            .strip_prefix("line ")
            .filter(|_| l.len() + 1 == LINE)
            .and_then(|r| r.get(..7)?.parse::<usize>().ok())
            .filter(|&i| i < n && l == numbered(i, i + 1).trim_end())
        {
            Some(i) => seen[i] += 1,
            None => fragments += 1,
        }
    }
    (seen, fragments)
}

/// Streams `lines()` lines through `tail` → `tcp_out` while the collector is stopped with
/// `sig` and started again `RESTARTS` times; returns (lost, duplicated, fragments).
fn restarts(name: &str, sig: libc::c_int) -> (usize, usize, usize) {
    let n = lines();
    let dir = TempDir::new(name);
    let (l, port) = listener();
    drop(l);
    let input = dir.path().join("in.log");
    std::fs::write(&input, "").unwrap();
    let mut c = collector(dir.path(), port);
    let cfg = dir.path().join("sender.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[train]]\nname = \"send\"\n[[train.cog]]\ntype = \"tail\"\npaths = [{input:?}]\n\
             start_at = \"beginning\"\n[[train.cog]]\ntype = \"tcp_out\"\n\
             address = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let mut sender = Daemon::start(&cfg, false);
    let mut connected = sender.wait_log_from(0, "INFO connected ");
    // The input grows at a steady pace over STREAM_FOR.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, written, input) = (stop.clone(), written.clone(), input.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&input)
                .unwrap();
            let steps = 200;
            let per = (n - 1).div_ceil(steps);
            let mut i = 0;
            // The last line waits for the last restart (below): a kill -9 may lose what
            // the collector held, so only a line sent after it must arrive.
            while i < n - 1 && !stop.load(Ordering::Relaxed) {
                let to = (i + per).min(n - 1);
                f.write_all(numbered(i, to).as_bytes()).unwrap();
                i = to;
                std::thread::sleep(STREAM_FOR / steps as u32);
            }
            written.store(true, Ordering::Relaxed);
        })
    };
    let started = Instant::now();
    let out = dir.path().join("out.log");
    for k in 1..=RESTARTS {
        // Evenly inside the stream, once the collector got that far.
        let at = (n * k / (RESTARTS + 1) * LINE) as u64;
        let deadline = started + CATCH_UP;
        // A killed collector loses what its kernel held, so the output may never reach
        // `at`: once everything is written and the output stops growing, stop it anyway.
        let mut last = (0, Instant::now());
        loop {
            let len = std::fs::metadata(&out).map_or(0, |m| m.len());
            if len >= at {
                break;
            }
            if len != last.0 {
                last = (len, Instant::now());
            } else if written.load(Ordering::Relaxed) && last.1.elapsed() > Duration::from_secs(2) {
                break;
            }
            assert!(Instant::now() < deadline, "the collector stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(&c, sig);
        let (ok, log) = c.wait();
        assert!(
            ok || sig == libc::SIGKILL,
            "the collector failed to stop:\n{log}"
        );
        c = collector(dir.path(), port);
        // The next stop must find the sender connected again.
        connected = sender.wait_log_from(connected + 1, "INFO connected ");
    }
    writer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap()
        .write_all(numbered(n - 1, n).as_bytes())
        .unwrap();
    // Everything written must arrive (the last line last).
    let deadline = Instant::now() + CATCH_UP;
    let want = numbered(n - 1, n);
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.ends_with(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the last line never arrived; sender log:\n{}",
            sender.seen.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&sender, libc::SIGTERM);
    let (ok, slog) = sender.wait();
    assert!(ok, "{slog}");
    for l in slog.lines().filter(|l| l.contains("connection lost")) {
        eprintln!("{l}");
    }
    signal(&c, libc::SIGTERM);
    let (ok, clog) = c.wait();
    assert!(ok, "{clog}");
    let (seen, fragments) = tally(&out, n);
    let lost = seen.iter().filter(|&&c| c == 0).count();
    let dups: usize = seen.iter().map(|&c| c.saturating_sub(1) as usize).sum();
    let first_lost = seen.iter().position(|&c| c == 0);
    eprintln!(
        "{name}: {n} lines, collector stopped {RESTARTS} times with signal {sig}: {lost} lost \
         (first: {first_lost:?}), {dups} duplicated, {fragments} fragments (partial records)"
    );
    (lost, dups, fragments)
}

/// SIGTERM: the collector reads what its kernel holds before closing, the sender resends
/// what the collector did not acknowledge: nothing is lost (duplicates are allowed).
#[test]
fn collector_restarted_with_sigterm_loses_nothing() {
    let (lost, _, _) = restarts("restart-term", libc::SIGTERM);
    assert_eq!(lost, 0, "records lost across graceful collector restarts");
}

/// kill -9: what the collector's kernel acknowledged and the process had not written is
/// lost (plain TCP syslog cannot know); bounded by what a receive queue and one read of
/// the collector hold per kill.
#[test]
fn collector_killed_loses_at_most_what_it_held() {
    let (lost, _, _) = restarts("restart-kill", libc::SIGKILL);
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(6 << 20);
    let bound = RESTARTS * (rmem_max + (1 << 20)) / LINE;
    assert!(lost <= bound, "{lost} lines lost, bound {bound}");
}
