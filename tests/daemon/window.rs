//! `window` in the daemon: configuration errors naming the key, data without a time per
//! `on_error`, open windows carried across a SIGTERM restart with `persist` (with `tail`'s
//! checkpoint), a bad state file ignored, and the `max_keys` bound.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{
    PATIENCE, deadbeat, kill, line_count, run_ok, run_with_stdin, stderr_of, wait_exit, wait_for,
    write_config,
};
use crate::engine::TempDir;

/// stdin → json_parse → window (with `keys`) → stdout json.
fn stdin_config(dir: &Path, keys: &str) -> std::path::PathBuf {
    // The dead-letter train, when the cog sends to it.
    let dead = if keys.contains("train:dead") {
        "[[train]]\nname = \"dead\"\n[[train.cog]]\ntype = \"file_out\"\npath = \"dead.log\"\nformat = \"json\"\n"
    } else {
        ""
    };
    write_config(
        dir,
        &format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"json_parse\"\n\
             [[train.cog]]\ntype = \"window\"\ntime = \"t\"\nsize = \"10s\"\n{keys}\n\
             [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n{dead}"
        ),
    )
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = TempDir::new("window-check");
    for (keys, want) in [
        (
            "aggregate = { n = \"summ(x)\" }",
            "key \"aggregate\": n: unknown function \"summ\"",
        ),
        (
            "aggregate = { n = \"sum(a..b)\" }",
            "key \"aggregate\": n: \"a..b\" is not a field path",
        ),
        (
            "aggregate = { n = \"count(x >>> 1)\" }",
            "key \"aggregate\": n: in the condition at column",
        ),
        (
            "aggregate = { n = \"count\" }\nstep = \"5s\"",
            "key \"step\": only kind = \"hopping\" takes a step",
        ),
        (
            "aggregate = { n = \"count\" }\nkind = \"session\"",
            "kind = \"session\" needs a gap",
        ),
        (
            "aggregate = { n = \"count\" }\nkind = \"sliding\"",
            "key \"kind\"",
        ),
        (
            "aggregate = { n = \"count\" }\non_late = \"train:nope\"",
            "key \"on_late\": no train named \"nope\"",
        ),
        ("aggregate = { n = 3 }", "key \"aggregate\""),
    ] {
        let cfg = stdin_config(dir.path(), keys);
        let res = deadbeat()
            .args(["check", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{keys}");
        assert!(err.contains(want), "{keys}: {err}");
    }
}

#[test]
fn data_without_a_time_go_per_on_error_and_are_counted() {
    let dir = TempDir::new("window-notime");
    let cfg = stdin_config(
        dir.path(),
        "key = [\"k\"]\naggregate = { n = \"count\" }\non_error = \"train:dead\"",
    );
    let input = concat!(
        "{\"k\":\"a\",\"t\":1}\n",
        "{\"k\":\"a\"}\n",
        "{\"k\":\"a\",\"t\":\"yesterday\"}\n",
        "{\"k\":\"a\",\"t\":\"1970-01-01T00:00:03Z\"}\n",
        "{\"k\":\"a\",\"t\":12.5}\n",
        "{\"k\":\"a\",\"t\":9223372036854775807}\n",
        "{\"k\":\"a\",\"t\":-1e300}\n",
    );
    let (st, stdout, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "{\"window_start\":\"1970-01-01T00:00:00Z\",\"window_end\":\"1970-01-01T00:00:10Z\",\"k\":\"a\",\"n\":2}\n\
         {\"window_start\":\"1970-01-01T00:00:10Z\",\"window_end\":\"1970-01-01T00:00:20Z\",\"k\":\"a\",\"n\":1,\"partial\":true}\n",
        "{err}"
    );
    assert!(err.contains("cog=window#3 in=7 out=2"), "{err}");
    assert!(err.contains("errors=4"), "{err}");
    assert!(err.contains("out of range (years 1 to 9999)"), "{err}");
    assert!(err.contains("no time field `t`"), "{err}");
    assert!(err.contains("is no RFC 3339 time"), "{err}");
    let dead = std::fs::read_to_string(dir.path().join("dead.log")).unwrap();
    assert_eq!(dead.lines().count(), 4, "{dead}");
    assert!(dead.contains("\"error\":\"no time field `t`\""), "{dead}");
}

#[test]
fn dotted_output_names_are_set_by_name_in_order() {
    // Output names that are not plain top-level fields (a dotted key, dotted aggregates)
    // go through the record's paths, not the plain appends.
    let dir = TempDir::new("window-dotted");
    let cfg = stdin_config(
        dir.path(),
        "key = [\"host.name\"]\naggregate = { \"stats.n\" = \"count\", \"stats.sum\" = \"sum(x)\", total = \"sum(x)\" }",
    );
    let input = concat!(
        "{\"host\":{\"name\":\"a\"},\"t\":1,\"x\":2}\n",
        "{\"host\":{\"name\":\"a\"},\"t\":2,\"x\":3}\n",
        "{\"host\":{\"name\":\"b\"},\"t\":12,\"x\":4}\n",
    );
    let (st, stdout, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "{\"window_start\":\"1970-01-01T00:00:00Z\",\"window_end\":\"1970-01-01T00:00:10Z\",\"host\":{\"name\":\"a\"},\"stats\":{\"n\":2,\"sum\":5},\"total\":5}\n\
         {\"window_start\":\"1970-01-01T00:00:10Z\",\"window_end\":\"1970-01-01T00:00:20Z\",\"host\":{\"name\":\"b\"},\"stats\":{\"n\":1,\"sum\":4},\"total\":4,\"partial\":true}\n",
        "{err}"
    );
}

#[test]
fn the_bound_holds_and_evicted_windows_are_emitted_flagged() {
    let dir = TempDir::new("window-bound");
    let cfg = stdin_config(
        dir.path(),
        "key = [\"k\"]\naggregate = { n = \"count\" }\nmax_keys = 100",
    );
    let n: usize = std::env::var("DEADBEAT_WINDOW_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mut input = String::new();
    for i in 0..n {
        input.push_str(&format!("{{\"k\":\"k{i}\",\"t\":1}}\n"));
    }
    let (st, stdout, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    let out = String::from_utf8_lossy(&stdout);
    assert_eq!(out.lines().count(), n, "{err}");
    assert_eq!(out.matches("\"evicted\":true").count(), n - 100);
    assert_eq!(out.matches("\"partial\":true").count(), 100);
    let logged = err.matches("state full: oldest keys evicted").count();
    assert!(logged >= 1, "{err}");
    assert!(logged <= 100, "{logged} eviction lines");

    // Within the bound, every window is open at the end: emitted partial over several
    // turns (a few thousand at a time), none lost.
    let cfg = stdin_config(dir.path(), "key = [\"k\"]\naggregate = { n = \"count\" }");
    let (st, stdout, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    let out = String::from_utf8_lossy(&stdout);
    assert_eq!(out.lines().count(), n, "{err}");
    assert_eq!(out.matches("\"partial\":true").count(), n);
    assert!(
        err.contains(&format!("cog=window#3 in={n} out={n}")),
        "{err}"
    );
}

/// Lines `{"k":K,"t":T,"b":B}` for times `from..to`, three keys by turns.
fn data(from: i64, to: i64) -> String {
    let mut s = String::new();
    for t in from..to {
        for k in ["a", "b", "c"] {
            s.push_str(&format!("{{\"k\":\"{k}\",\"t\":{t},\"b\":{}}}\n", t % 7));
        }
    }
    s
}

/// tail (following) → json_parse → window persisting → file_out out.log.
fn tail_config(dir: &Path, follow: bool) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"tail\"\n\
             paths = [\"logs/*.log\"]\nfollow = {follow}\nstart_at = \"beginning\"\n\
             [[train.cog]]\ntype = \"json_parse\"\n\
             [[train.cog]]\ntype = \"window\"\nname = \"w\"\ntime = \"t\"\nsize = \"10s\"\n\
             key = [\"k\"]\npersist = true\n\
             aggregate = {{ n = \"count\", b = \"sum(b)\", hi = \"max(b)\" }}\n\
             [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"json\"\n"
        ),
    )
}

fn sorted_lines(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn a_sigterm_restart_mid_window_continues_the_same_counts() {
    // The whole file in one run: the reference.
    let once = TempDir::new("window-once");
    std::fs::create_dir_all(once.path().join("logs")).unwrap();
    // The last line is far ahead: it closes every window but its own.
    let tail_line = "{\"k\":\"z\",\"t\":100000,\"b\":0}\n";
    let whole = format!("{}{}{tail_line}", data(0, 96), data(96, 200));
    std::fs::write(once.path().join("logs/app.log"), &whole).unwrap();
    let res = run_ok(&tail_config(once.path(), false));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("window state saved"), "{err}");
    let want = sorted_lines(&once.path().join("out.log"));
    assert_eq!(want.len(), 60, "{err}");

    // Two runs, stopped by SIGTERM in the middle of the windows [90, 100).
    let dir = TempDir::new("window-twice");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/app.log");
    std::fs::write(&log, data(0, 96)).unwrap();
    let cfg = tail_config(dir.path(), true);
    let out = dir.path().join("out.log");
    let mut child = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_for("the windows closed by the first half", || {
        line_count(&out) == 27
    });
    kill(child.id(), libc::SIGTERM);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "{err}");
    assert!(err.contains("window state saved"), "{err}");

    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, format!("{}{tail_line}", data(96, 200)).as_bytes()).unwrap();
    drop(f);
    let mut child = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_for("every window closed", || line_count(&out) == 60);
    kill(child.id(), libc::SIGTERM);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "{err}");
    assert!(err.contains("window state loaded"), "{err}");
    assert_eq!(sorted_lines(&out), want, "{err}");

    // A corrupt state file: logged, ignored, the run goes on.
    let st_dir = dir.path().join("st");
    let file = std::fs::read_dir(&st_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("window-"))
        })
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let res = run_ok(&tail_config(dir.path(), false));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("window state ignored, starting empty"),
        "{err}"
    );
    assert!(err.contains("corrupt"), "{err}");
}

/// stdin → json_parse → threshold (with `keys`) → stdout json.
fn threshold_config(dir: &Path, keys: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"json_parse\"\n\
             [[train.cog]]\ntype = \"threshold\"\nkey = [\"src_ip\"]\ntime = \"time\"\n\
             time_format = \"%b %e %H:%M:%S\"\nsize = \"10m\"\n\
             aggregate = {{ failures = \"count\" }}\n{keys}\n\
             [[train.cog]]\ntype = \"remove\"\nfields = [\"first_id\", \"last_id\"]\n\
             [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n"
        ),
    )
}

#[test]
fn threshold_alerts_per_address_on_syslog_times_without_a_year() {
    let dir = TempDir::new("threshold");
    let cfg = threshold_config(
        dir.path(),
        "when = \"failures >= 3\"\nfire = \"close\"\nevidence = [\"user\"]",
    );
    let mut input = String::new();
    // 10.0.0.1 fails 4 times in the 10:00 window, 10.0.0.2 twice; one line has no time.
    for (ip, user, at) in [
        ("10.0.0.1", "root", "Mar  5 10:01:00"),
        ("10.0.0.2", "bob", "Mar  5 10:02:00"),
        ("10.0.0.1", "admin", "Mar  5 10:03:00"),
        ("10.0.0.1", "oracle", "Mar  5 10:04:00"),
        ("10.0.0.2", "bob", "Mar  5 10:05:00"),
        ("10.0.0.1", "test", "Mar  5 10:09:59"),
        ("10.0.0.3", "x", "Mar  5 10:30:00"),
    ] {
        input.push_str(&format!(
            "{{\"src_ip\":\"{ip}\",\"user\":\"{user}\",\"time\":\"{at}\"}}\n"
        ));
    }
    input.push_str("{\"src_ip\":\"10.0.0.1\",\"time\":\"yesterday\"}\n");
    let (st, stdout, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    let out = String::from_utf8_lossy(&stdout);
    let lines: Vec<&str> = out.lines().collect();
    // The year is the wall clock's (or the one before): only month, day and time are
    // checked here.
    assert_eq!(lines.len(), 2, "{out}\n{err}");
    assert!(lines[0].contains("-03-05T10:00:00Z\""), "{out}");
    assert!(
        lines[0].contains(
            "\"src_ip\":\"10.0.0.1\",\"failures\":4,\"first_user\":\"root\",\"last_user\":\"test\"}"
        ),
        "{out}"
    );
    // The line without a usable time goes per on_error (keep: on, with the reason).
    assert!(
        lines[1].contains("\"error\":\"time field `time` is not a time"),
        "{out}"
    );
    assert!(err.contains("cog=threshold#3 in=8"), "{err}");

    // Errors name the key.
    for (keys, want) in [
        ("fire = \"close\"", "missing required key \"when\""),
        (
            "when = \"failures >=\"",
            "key \"when\": in the condition at column",
        ),
        ("when = \"failures >= 3\"\nfire = \"later\"", "key \"fire\""),
    ] {
        let cfg = threshold_config(dir.path(), keys);
        let res = deadbeat()
            .args(["check", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{keys}");
        assert!(err.contains(want), "{keys}: {err}");
    }
}

#[test]
fn arrival_time_windows_close_by_timer_while_input_waits() {
    let dir = TempDir::new("window-arrival");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"window\"\ntime = \"arrival\"\nsize = \"200ms\"\n\
         aggregate = { n = \"count\" }\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"json\"\n",
    );
    let (mut child, mut stdin) = super::spawn_with_stdin(&cfg);
    std::io::Write::write_all(&mut stdin, b"a\nb\nc\n").unwrap();
    let out = dir.path().join("out.log");
    // The three lines fall in one window or, at a boundary, two.
    let total = |text: &str| -> i64 {
        text.lines()
            .filter_map(|l| {
                let at = l.find("\"n\":")? + 4;
                l[at..]
                    .trim_end_matches('}')
                    .split(',')
                    .next()?
                    .parse::<i64>()
                    .ok()
            })
            .sum()
    };
    // Emitted by the timer: stdin is still open and nothing else comes.
    wait_for("the windows closed by their timer", || {
        total(&std::fs::read_to_string(&out).unwrap_or_default()) == 3
    });
    drop(stdin);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(total(&text), 3, "{text}");
    assert!(!text.contains("partial"), "{text}");
}

#[test]
fn a_kill_9_mid_window_loses_no_input() {
    // The reference: the whole file in one run, every window emitted.
    let once = TempDir::new("window-k9-once");
    std::fs::create_dir_all(once.path().join("logs")).unwrap();
    let tail_line = "{\"k\":\"z\",\"t\":100000,\"b\":0}\n";
    let whole = format!("{}{}{tail_line}", data(0, 96), data(96, 200));
    std::fs::write(once.path().join("logs/app.log"), &whole).unwrap();
    let cfg = kill_config(once.path(), false);
    let res = run_ok(&cfg);
    let err = String::from_utf8_lossy(&res.stderr);
    let want: Vec<String> = sorted_lines(&once.path().join("out.log"))
        .into_iter()
        .filter(|l| !l.contains("partial"))
        .collect();
    assert_eq!(want.len(), 60, "{err}");

    // Killed with windows open: their inputs were not acknowledged, so `tail` reads them
    // again and the next run counts them whole.
    let dir = TempDir::new("window-k9");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/app.log");
    std::fs::write(&log, data(0, 96)).unwrap();
    let out = dir.path().join("out.log");
    let mut child = deadbeat()
        .args(["run", kill_config(dir.path(), true).to_str().unwrap()])
        .spawn()
        .unwrap();
    wait_for("the windows closed by the first half", || {
        line_count(&out) >= 27
    });
    kill(child.id(), libc::SIGKILL);
    let _ = wait_exit(&mut child);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, format!("{}{tail_line}", data(96, 200)).as_bytes()).unwrap();
    drop(f);
    let res = run_ok(&kill_config(dir.path(), false));
    let err = String::from_utf8_lossy(&res.stderr);
    // At least once: every window of the reference is there whole (a window written but
    // not yet acknowledged at the kill may come again, and one whose inputs were read
    // again from the middle may come again in part).
    let got = sorted_lines(&out);
    for w in &want {
        assert!(got.contains(w), "window lost: {w}\n{err}");
    }
}

/// tail → json_parse → window (no persist) → file_out out.log.
fn kill_config(dir: &Path, follow: bool) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"tail\"\n\
             paths = [\"logs/*.log\"]\nfollow = {follow}\nstart_at = \"beginning\"\n\
             [[train.cog]]\ntype = \"json_parse\"\n\
             [[train.cog]]\ntype = \"window\"\ntime = \"t\"\nsize = \"10s\"\nkey = [\"k\"]\n\
             aggregate = {{ n = \"count\", b = \"sum(b)\", hi = \"max(b)\" }}\n\
             [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"json\"\n"
        ),
    )
}

/// VmHWM (peak resident set) of a process, in KiB, from /proc.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The bound on the peak RSS an open window adds (a `count` aggregate, a short key):
/// the window's one allocation (head with its key bytes inline, and the aggregate: a
/// 128-byte chunk), its table, slab and closing places, with room for the spread of the
/// train's own peak (figures in docs/performance.md); 100,000 of them then add at most
/// 19 MiB.
const WINDOW_BYTES_BOUND: u64 = 200;

/// Runs `stdin → json_parse → MIDDLE → file_out` on `n` lines `{"k":"kNNNNNNNNN","t":15}`
/// between a first line `{"k":"w","t":15}` and a last, late one `{"k":"END","t":5}`
/// (passed on by `MIDDLE`), and returns the daemon's peak RSS in KiB, read once `END` is
/// written: every key then has its window open (none closes: the time stands still).
fn peak_with(dir: &Path, middle: &str, n: u64) -> u64 {
    let cfg = write_config(
        dir,
        &format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"json_parse\"\n{middle}\n\
             [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"json\"\n"
        ),
    );
    let out = dir.join("out.log");
    let _ = std::fs::remove_file(&out);
    let err_log = std::fs::File::create(dir.join("err.log")).unwrap();
    let mut child = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stderr(err_log)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut chunk = Vec::with_capacity(1 << 16);
        chunk.extend_from_slice(b"{\"k\":\"w\",\"t\":15}\n");
        for i in 0..n {
            writeln!(chunk, "{{\"k\":\"k{i:09}\",\"t\":15}}").unwrap();
            if chunk.len() > 60_000 {
                stdin.write_all(&chunk).unwrap();
                chunk.clear();
            }
        }
        chunk.extend_from_slice(b"{\"k\":\"END\",\"t\":5}\n");
        stdin.write_all(&chunk).unwrap();
        // Kept open: the daemon stays up, its windows open, until the peak is read.
        stdin
    });
    let ends = || std::fs::read_to_string(&out).is_ok_and(|t| t.contains("\"END\""));
    // Scaled to the input: a debug build passes some 100,000 lines a second.
    let deadline = Instant::now() + PATIENCE + Duration::from_micros(30 * n);
    while !ends() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the last line: {}",
            std::fs::read_to_string(dir.join("err.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let peak = peak_rss_kib(child.id()).expect("VmHWM of the daemon");
    drop(writer.join().unwrap());
    let st = wait_exit(&mut child);
    let err = std::fs::read_to_string(dir.join("err.log")).unwrap_or_default();
    assert!(st.success(), "{err}");
    peak
}

/// Memory per open window: DEADBEAT_WINDOW_RSS_KEYS distinct keys (100,000 by default,
/// the figure) open at once in `window` (a `count`) add at most
/// WINDOW_BYTES_BOUND bytes each to the peak RSS of the same train without `window`
/// (a `filter` passing the last line alone). Measured in release for
/// docs/performance.md: `DEADBEAT_WINDOW_RSS_KEYS=100000 cargo test --release --test main
/// open_windows -- --nocapture`.
#[test]
fn open_windows_take_little_memory_each() {
    let n: u64 = std::env::var("DEADBEAT_WINDOW_RSS_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let dir = TempDir::new("window-rss");
    let base = peak_with(
        dir.path(),
        "[[train.cog]]\ntype = \"filter\"\nkeep = 'k == \"END\"'",
        n,
    );
    let with = peak_with(
        dir.path(),
        &format!(
            "[[train.cog]]\ntype = \"window\"\nkey = [\"k\"]\ntime = \"t\"\nsize = \"10s\"\n\
             aggregate = {{ n = \"count\" }}\non_late = \"emit\"\nmax_keys = {}",
            n + 10
        ),
        n,
    );
    let per_window = with.saturating_sub(base) * 1024 / n.max(1);
    eprintln!(
        "window: {n} open windows: peak RSS {with} KiB, the train without window {base} KiB: \
         {per_window} B per window"
    );
    assert!(
        per_window <= WINDOW_BYTES_BOUND,
        "{per_window} B per open window (peak {with} KiB, without window {base} KiB), \
         over {WINDOW_BYTES_BOUND}"
    );
}

/// stdin → json_parse → threshold (count per `k` over 10 s of `t`, `rearm`, `persist`)
/// → stdout json.
fn rearm_config(dir: &Path) -> std::path::PathBuf {
    write_config(
        dir,
        "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"json_parse\"\n\
         [[train.cog]]\ntype = \"threshold\"\nkey = [\"k\"]\ntime = \"t\"\nsize = \"10s\"\n\
         aggregate = { n = \"count\" }\nwhen = \"n >= 3\"\nrearm = true\npersist = true\n\
         [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n",
    )
}

/// Lines `{"k":"a","t":T}` for each T.
fn at(times: &[i64]) -> String {
    times
        .iter()
        .map(|t| format!("{{\"k\":\"a\",\"t\":{t}}}\n"))
        .collect()
}

/// `rearm` survives a restart: a key quiet since its alert stays quiet in the next run
/// (its next windows holding `when` give no alert) until one of its windows ends with
/// `when` false, after which it alerts again.
#[test]
fn threshold_rearm_survives_a_restart() {
    let dir = TempDir::new("threshold-rearm");
    let cfg = rearm_config(dir.path());
    let alerts = |stdout: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(stdout)
            .lines()
            .filter_map(|l| {
                let at = l.find("\"window_start\":\"")? + 16;
                Some(l[at..at + 20].to_string())
            })
            .collect()
    };
    // Run 1: [0, 10) crosses (an alert), [10, 20) is open at the end, the key quiet.
    let (st, stdout, err) = run_with_stdin(&cfg, at(&[1, 2, 3, 12]).as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(alerts(&stdout), ["1970-01-01T00:00:00Z"], "{err}");
    assert!(err.contains("window state saved"), "{err}");
    // Run 2: [10, 20) and [20, 30) cross, but the key is still quiet: no alert. [20, 30)
    // ends holding `when`, so the key stays quiet; [30, 40) is open at the end.
    let (st, stdout, err) = run_with_stdin(&cfg, at(&[13, 14, 21, 22, 23, 35]).as_bytes());
    assert!(st.success(), "{err}");
    assert!(err.contains("window state loaded"), "{err}");
    assert_eq!(alerts(&stdout), Vec::<String>::new(), "{err}");
    // Run 3: [30, 40) closes with n = 1 (`when` false): re-armed, [40, 50) alerts.
    let (st, stdout, err) = run_with_stdin(&cfg, at(&[41, 42, 43]).as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(alerts(&stdout), ["1970-01-01T00:00:40Z"], "{err}");
}

/// Time going backwards (data out of order, then a clock reset) past the closed windows:
/// each such datum is late, counted, logged, and sent per `on_late` (here to another train,
/// flagged `late = true`, acknowledged there when written); the windows already emitted
/// stay as they were.
#[test]
fn time_going_backwards_is_late_counted_and_sent_per_on_late() {
    let dir = TempDir::new("window-late");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"json_parse\"\n\
         [[train.cog]]\ntype = \"remove\"\nfields = [\"message\"]\n\
         [[train.cog]]\ntype = \"window\"\nkey = [\"k\"]\ntime = \"t\"\nsize = \"10s\"\n\
         aggregate = { n = \"count\" }\non_late = \"train:late\"\n\
         [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n\
         [[train]]\nname = \"late\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"late.log\"\nformat = \"json\"\n",
    );
    let input = concat!(
        "{\"k\":\"a\",\"t\":1}\n",
        "{\"k\":\"a\",\"t\":2}\n",
        "{\"k\":\"a\",\"t\":12}\n",                       // closes [0, 10)
        "{\"k\":\"a\",\"t\":3}\n",                        // out of order: [0, 10) has closed
        "{\"k\":\"b\",\"t\":25}\n",                       // closes [10, 20)
        "{\"k\":\"b\",\"t\":\"1970-01-01T00:00:05Z\"}\n", // a clock set back
        "{\"k\":\"b\",\"t\":26}\n",
    );
    let (st, stdout, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "{\"window_start\":\"1970-01-01T00:00:00Z\",\"window_end\":\"1970-01-01T00:00:10Z\",\"k\":\"a\",\"n\":2}\n\
         {\"window_start\":\"1970-01-01T00:00:10Z\",\"window_end\":\"1970-01-01T00:00:20Z\",\"k\":\"a\",\"n\":1}\n\
         {\"window_start\":\"1970-01-01T00:00:20Z\",\"window_end\":\"1970-01-01T00:00:30Z\",\"k\":\"b\",\"n\":2,\"partial\":true}\n",
        "{err}"
    );
    let late = std::fs::read_to_string(dir.path().join("late.log")).unwrap_or_default();
    assert_eq!(
        late,
        "{\"k\":\"a\",\"t\":3,\"late\":true}\n\
         {\"k\":\"b\",\"t\":\"1970-01-01T00:00:05Z\",\"late\":true}\n",
        "{err}"
    );
    assert!(err.contains("late datum: its windows have closed"), "{err}");
    assert!(err.contains("window totals"), "{err}");
    assert!(err.contains("late=2"), "{err}");
}

/// Keys of any size, and invalid UTF-8, are held within `max_bytes`: 40 windows keyed by
/// 20 KB lines (about three fit in 64 KiB) are closed early as new ones open, flagged
/// `evicted`, counted and logged; every line is counted once; an invalid UTF-8 key is a
/// key like any other (its two lines in one window).
#[test]
fn huge_and_invalid_utf8_keys_stay_within_max_bytes() {
    let dir = TempDir::new("window-bytes");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"window\"\nkey = [\"message\"]\ntime = \"arrival\"\n\
         size = \"1h\"\nmax_bytes = \"64KiB\"\naggregate = { n = \"count\" }\n\
         [[train.cog]]\ntype = \"remove\"\nfields = [\"message\"]\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"json\"\n",
    );
    let head = "h".repeat(20_000);
    let mut input = Vec::new();
    for i in 0..40 {
        input.extend_from_slice(format!("{head}-{i}\n").as_bytes());
    }
    input.extend_from_slice(b"\xff\xfeA\n\xff\xfeA\n");
    let (st, _, err) = run_with_stdin(&cfg, &input);
    assert!(st.success(), "{err}");
    let out = std::fs::read_to_string(dir.path().join("out.log")).unwrap_or_default();
    let counts: Vec<i64> = out
        .lines()
        .filter_map(|l| {
            let at = l.find("\"n\":")? + 4;
            l[at..].split([',', '}']).next()?.parse().ok()
        })
        .collect();
    // An hour's boundary during the run would split one key's window in two.
    assert!(
        (41..=42).contains(&counts.len()),
        "{} windows\n{out}\n{err}",
        counts.len()
    );
    assert_eq!(counts.iter().sum::<i64>(), 42, "{out}");
    let evicted = out.matches("\"evicted\":true").count();
    assert!(evicted >= 36, "{evicted} evicted\n{err}");
    assert!(err.contains("state full: oldest keys evicted"), "{err}");
    assert!(err.contains("evictions="), "{err}");
}

/// State stays bounded whatever the number of keys: DEADBEAT_WINDOW_BOUND_KEYS distinct
/// keys (300,000 by default; 10,000,000 for the figure, in release) through
/// `window` and through `threshold` with `max_keys = 100000`: the oldest windows are
/// closed early, and the daemon's peak RSS stays under 64 MiB (figures in
/// docs/performance.md, "Keyed state: bytes and peak RSS").
#[test]
fn peak_rss_stays_bounded_over_many_distinct_keys() {
    let n: u64 = std::env::var("DEADBEAT_WINDOW_BOUND_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300_000);
    let dir = TempDir::new("window-bound-rss");
    for (cog, extra) in [("window", ""), ("threshold", "when = \"n >= 2\"\n")] {
        let peak = peak_with(
            dir.path(),
            &format!(
                "[[train.cog]]\ntype = \"{cog}\"\nkey = [\"k\"]\ntime = \"t\"\nsize = \"10s\"\n\
                 aggregate = {{ n = \"count\" }}\non_late = \"emit\"\nmax_keys = 100000\n{extra}"
            ),
            n,
        );
        let err = std::fs::read_to_string(dir.path().join("err.log")).unwrap_or_default();
        eprintln!("{cog}: {n} distinct keys, max_keys = 100000: peak RSS {peak} KiB");
        if n > 100_000 {
            assert!(
                err.contains("state full: oldest keys evicted"),
                "{cog}: {err}"
            );
        }
        assert!(
            peak <= 64 * 1024,
            "{cog}: peak RSS {peak} KiB over 64 MiB with {n} distinct keys"
        );
    }
}
