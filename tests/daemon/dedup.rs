//! `dedup` in the daemon: repeats dropped within `within`, passed after it, remembered
//! across a restart with `persist`, a bad state file ignored, dropped lines acknowledged.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{
    PATIENCE, deadbeat, kill, line_count, run_ok, run_with_stdin, spawn_with_stdin, stderr_of,
    wait_exit, wait_for, write_config,
};
use crate::engine::TempDir;

/// stdin → dedup (with `keys`) → file_out out.log, state in `st/`.
fn config(dir: &Path, keys: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"dedup\"\n{keys}\n\
             [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n"
        ),
    )
}

fn out(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("out.log")).unwrap_or_default()
}

fn state_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("st"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("dedup-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn repeats_within_the_time_are_dropped_and_the_rest_pass_in_order() {
    let dir = TempDir::new("dedup-basic");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"json_parse\"\n\
         [[train.cog]]\ntype = \"dedup\"\nfields = [\"host\", \"n\"]\n\
         [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n",
    );
    let input = concat!(
        "{\"host\":\"a\",\"n\":1,\"x\":1}\n",
        "{\"host\":\"a\",\"n\":2,\"x\":2}\n",
        "{\"host\":\"a\",\"n\":1,\"x\":3}\n", // repeat of the first, other fields differ
        "{\"host\":\"b\",\"n\":1,\"x\":4}\n",
        "{\"host\":\"a1\",\"n\":1,\"x\":5}\n", // no confusion of a+"1" with a1
        "{\"host\":\"b\",\"x\":6}\n",          // lacks n: passes
        "{\"host\":\"b\",\"x\":7}\n",          // lacks n: passes
        "{\"host\":\"a\",\"n\":2,\"x\":8}\n",
    );
    let (st, stdout, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    let xs: Vec<String> = String::from_utf8_lossy(&stdout)
        .lines()
        .map(|l| {
            let at = l.find("\"x\":").unwrap() + 4;
            l[at..].trim_end_matches('}').to_string()
        })
        .collect();
    assert_eq!(xs, ["1", "2", "4", "5", "6", "7"], "{err}");
    assert!(
        err.contains("cog=dedup#3 in=8 out=6 dropped=2 errors=0"),
        "{err}"
    );

    // Without fields, the whole record is the key.
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"dedup\"\n\
         [[train.cog]]\ntype = \"stdout\"\n",
    );
    let (st, stdout, err) = run_with_stdin(&cfg, b"a\nb\na\nc\nb\na\nd\n");
    assert!(st.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&stdout), "a\nb\nc\nd\n", "{err}");
    assert!(err.contains("cog=dedup#2 in=7 out=4 dropped=3"), "{err}");
}

#[test]
fn a_repeat_after_the_time_passes() {
    let dir = TempDir::new("dedup-within");
    let cfg = config(dir.path(), "within = \"300ms\"");
    let (mut child, mut stdin) = spawn_with_stdin(&cfg);
    stdin.write_all(b"a\nb\na\n").unwrap();
    wait_for("the first two lines", || {
        line_count(&dir.path().join("out.log")) == 2
    });
    let since = Instant::now();
    // The point of the test is time passing: wait out `within`, bounded.
    std::thread::sleep(Duration::from_millis(400));
    assert!(since.elapsed() < PATIENCE);
    stdin.write_all(b"a\na\nb\n").unwrap();
    wait_for("the repeats after within", || {
        line_count(&dir.path().join("out.log")) == 4
    });
    drop(stdin);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "{err}");
    assert_eq!(out(dir.path()), "a\nb\na\nb\n", "{err}");
    assert!(err.contains("cog=dedup#2 in=6 out=4 dropped=2"), "{err}");
}

#[test]
fn persisted_keys_survive_a_sigterm_restart_and_a_bad_state_file_is_ignored() {
    let dir = TempDir::new("dedup-persist");
    let cfg = config(dir.path(), "persist = true\nname = \"seen\"");
    let (mut child, mut stdin) = spawn_with_stdin(&cfg);
    stdin.write_all(b"x\ny\nx\n").unwrap();
    wait_for("two lines", || line_count(&dir.path().join("out.log")) == 2);
    kill(child.id(), libc::SIGTERM);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "{err}");
    drop(stdin);
    assert!(err.contains("dedup state saved"), "{err}");
    let files = state_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let saved = std::fs::read(&files[0]).unwrap();
    assert!(saved.starts_with(b"deadbeat-state dedup 1\n"));

    // Restarted: x and y are still known.
    let (st, _, err) = run_with_stdin(&cfg, b"x\nz\ny\n");
    assert!(st.success(), "{err}");
    assert!(err.contains("dedup state loaded"), "{err}");
    assert_eq!(out(dir.path()), "x\ny\nz\n", "{err}");
    assert!(err.contains("cog=seen in=3 out=1 dropped=2"), "{err}");

    // A corrupt, then a cut, state file: logged, ignored, the run works and remembers
    // nothing of it (x passes again).
    let good = std::fs::read(&files[0]).unwrap();
    let mut corrupt = good.clone();
    let at = good.len() / 2;
    corrupt[at] ^= 0x01;
    for (what, bytes) in [
        ("corrupt", corrupt),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("not a state file", b"\x7fELF\x02\x01\x01 garbage".to_vec()),
    ] {
        std::fs::write(dir.path().join("out.log"), "").unwrap();
        std::fs::write(&files[0], &bytes).unwrap();
        let (st, _, err) = run_with_stdin(&cfg, b"x\nx\n");
        assert!(st.success(), "{what}: {err}");
        assert!(err.contains("dedup state ignored, starting empty"), "{err}");
        assert!(err.contains(what), "{what}: {err}");
        assert_eq!(out(dir.path()), "x\n", "{what}: {err}");
        // The state is saved again at the end, whole.
        let again = std::fs::read(&files[0]).unwrap();
        assert!(again.starts_with(b"deadbeat-state dedup 1\n"), "{what}");
    }
}

#[test]
fn dropped_lines_are_acknowledged_so_the_checkpoint_moves_past_them() {
    let dir = TempDir::new("dedup-ack");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    // The file ends with repeats: if they were not acknowledged, the checkpoint would
    // stay before them and the next run would read them again (and, with a fresh cache,
    // pass them).
    std::fs::write(dir.path().join("logs/app.log"), "a\nb\na\nb\na\n").unwrap();
    let cfg = write_config(
        dir.path(),
        "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"tail\"\n\
         paths = [\"logs/*.log\"]\nfollow = false\n\
         [[train.cog]]\ntype = \"dedup\"\nfields = [\"message\"]\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n",
    );
    let res = run_ok(&cfg);
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(out(dir.path()), "a\nb\n", "{err}");
    assert!(err.contains("cog=dedup#2 in=5 out=2 dropped=3"), "{err}");
    let res = run_ok(&cfg);
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(out(dir.path()), "a\nb\n", "second run: {err}");
    assert!(err.contains("cog=dedup#2 in=0 out=0 dropped=0"), "{err}");
}

#[test]
fn bad_settings_are_configuration_errors() {
    let dir = TempDir::new("dedup-check");
    for (keys, want) in [
        ("within = \"0s\"", "key \"within\": must be longer than 0s"),
        ("max_keys = 0", "key \"max_keys\": must be at least 1"),
        (
            "max_bytes = 256",
            "key \"max_bytes\": must be at least 257 bytes",
        ),
        ("fields = [\"a..b\"]", "key \"fields\": \"a..b\""),
    ] {
        let cfg = config(dir.path(), keys);
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
fn the_bound_holds_evictions_are_logged_at_a_bounded_rate() {
    let dir = TempDir::new("dedup-bound");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"dedup\"\nmax_keys = 10\n\
         [[train.cog]]\ntype = \"stdout\"\n",
    );
    let n: usize = std::env::var("DEADBEAT_DEDUP_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mut input = String::new();
    for i in 0..n {
        input.push_str(&format!("k{i}\n"));
    }
    // The newest ten are still known; the first was forgotten long ago.
    input.push_str(&format!("k{}\nk0\n", n - 1));
    let (st, stdout, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    let lines = String::from_utf8_lossy(&stdout).lines().count();
    assert_eq!(lines, n + 1, "{err}");
    assert!(
        err.contains(&format!("cog=dedup#2 in={} out={} dropped=1", n + 2, n + 1)),
        "{err}"
    );
    let logged = err.matches("state full: oldest keys evicted").count();
    assert!(logged >= 1, "{err}");
    // One line per batch at most, and at most 10 a second whatever the input.
    assert!(logged <= 100, "{logged} eviction lines");
}

/// Keys of any size, and invalid UTF-8, stay within `max_bytes`: 40 keys of 20 KB sharing
/// their head are told apart (each remembered as 257 bytes), a repeat of a recent one is
/// dropped, and the oldest, evicted for bytes (about 15 fit in 4 KiB), passes again.
#[test]
fn long_and_invalid_utf8_keys_stay_within_max_bytes() {
    let dir = TempDir::new("dedup-bytes");
    let cfg = config(dir.path(), "fields = [\"message\"]\nmax_bytes = \"4KiB\"");
    let head = "h".repeat(20_000);
    let mut input = Vec::new();
    for i in 0..40 {
        input.extend_from_slice(format!("{head}-{i}\n").as_bytes());
    }
    input.extend_from_slice(b"\xff\xfeA\n\xff\xfeA\n");
    input.extend_from_slice(format!("{head}-39\n{head}-0\n").as_bytes());
    let (st, _, err) = run_with_stdin(&cfg, &input);
    assert!(st.success(), "{err}");
    let text = std::fs::read(dir.path().join("out.log")).unwrap();
    let lines: Vec<&[u8]> = text
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 42, "{err}");
    assert_eq!(lines[40], b"\xff\xfeA");
    assert_eq!(lines[41], format!("{head}-0").as_bytes());
    assert!(err.contains("cog=dedup#2 in=44 out=42 dropped=2"), "{err}");
    assert!(err.contains("state full: oldest keys evicted"), "{err}");
}

/// VmHWM (peak resident set) of a process, in KiB, from /proc.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The peak RSS bound of the test below (and of docs/performance.md): 100,000 keys
/// remembered of any number of distinct ones.
const RSS_BOUND_MIB: u64 = 64;

/// Memory is bounded whatever the input: DEADBEAT_DEDUP_RSS_KEYS distinct keys (300,000 by
/// default; the figure is 10,000,000, run in release) through `dedup` with
/// `max_keys = 100000` keep the daemon's peak RSS under RSS_BOUND_MIB. The peak is read
/// from /proc while the daemon still runs, once the last line is written.
#[test]
fn peak_rss_stays_bounded_over_many_distinct_keys() {
    let n: u64 = std::env::var("DEADBEAT_DEDUP_RSS_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300_000);
    let dir = TempDir::new("dedup-rss");
    let cfg = config(dir.path(), "fields = [\"message\"]\nmax_keys = 100000");
    let err_log = std::fs::File::create(dir.path().join("err.log")).unwrap();
    let mut child = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stderr(err_log)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut chunk = Vec::with_capacity(1 << 16);
        for i in 0..n {
            writeln!(chunk, "k{i:09}").unwrap();
            if chunk.len() > 60_000 {
                stdin.write_all(&chunk).unwrap();
                chunk.clear();
            }
        }
        chunk.extend_from_slice(b"END\n");
        stdin.write_all(&chunk).unwrap();
        // Kept open: the daemon stays up until the peak is read.
        stdin
    });
    let out = dir.path().join("out.log");
    let ends = || {
        use std::io::{Read, Seek, SeekFrom};
        let mut tail = [0u8; 4];
        std::fs::File::open(&out)
            .and_then(|mut f| {
                f.seek(SeekFrom::End(-4))?;
                f.read_exact(&mut tail)
            })
            .is_ok_and(|()| &tail == b"END\n")
    };
    // Scaled to the input: a debug build passes some 100,000 lines a second.
    let deadline = Instant::now() + PATIENCE + Duration::from_micros(20 * n);
    while !ends() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the last line"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let peak = peak_rss_kib(child.id()).expect("VmHWM of the daemon");
    drop(writer.join().unwrap());
    let st = wait_exit(&mut child);
    let err = std::fs::read_to_string(dir.path().join("err.log")).unwrap_or_default();
    assert!(st.success(), "{err}");
    assert_eq!(line_count(&out) as u64, n + 1, "{err}");
    if n > 100_000 {
        assert!(err.contains("state full: oldest keys evicted"), "{err}");
    }
    eprintln!(
        "dedup: {n} distinct keys, max_keys 100000: peak RSS {} KiB",
        peak
    );
    assert!(
        peak <= RSS_BOUND_MIB * 1024,
        "peak RSS {peak} KiB over {RSS_BOUND_MIB} MiB with {n} keys"
    );
}

/// FNV-1a, as the state file's trailer hashes its entry lines.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A key saved with a time ahead of the clock (the wall clock was set back while the
/// daemon was stopped) counts as seen at start: it is dropped within `within` and passes
/// once `within` has gone by, not only after the saved time.
#[test]
fn a_saved_time_ahead_of_the_clock_counts_as_now() {
    let dir = TempDir::new("dedup-clock-back");
    let cfg = config(
        dir.path(),
        "fields = [\"message\"]\nwithin = \"1s\"\npersist = true\nname = \"seen\"",
    );
    let (st, _, err) = run_with_stdin(&cfg, b"x\n");
    assert!(st.success(), "{err}");
    let files = state_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    // Move the saved time ten days ahead, with a trailer that matches.
    let text = std::fs::read(&files[0]).unwrap();
    let lines: Vec<&[u8]> = text.split(|&c| c == b'\n').collect();
    assert!(lines[0].starts_with(b"deadbeat-state dedup 1"));
    let entry = lines[1];
    let space = entry.iter().rposition(|&c| c == b' ').unwrap();
    let ms: u64 = std::str::from_utf8(&entry[space + 1..])
        .unwrap()
        .parse()
        .unwrap();
    let mut body = entry[..space + 1].to_vec();
    body.extend_from_slice(format!("{}\n", ms + 10 * 86_400_000).as_bytes());
    let mut edited = lines[0].to_vec();
    edited.push(b'\n');
    edited.extend_from_slice(&body);
    edited.extend_from_slice(format!("end 1 {:016x}\n", fnv1a(&body)).as_bytes());
    std::fs::write(&files[0], &edited).unwrap();

    let (st, _, err) = run_with_stdin(&cfg, b"x\n");
    assert!(st.success(), "{err}");
    assert!(err.contains("dedup state loaded"), "{err}");
    assert!(err.contains("cog=seen in=1 out=0 dropped=1"), "{err}");
    // Once `within` has gone by, x passes again (it would not for ten days if the saved
    // time were kept).
    wait_for("x to pass again", || {
        std::thread::sleep(Duration::from_millis(100));
        let (st, _, _) = run_with_stdin(&cfg, b"x\n");
        st.success() && out(dir.path()) == "x\nx\n"
    });
}

/// stdin → json_parse → dedup on `host` by the event time in `t` (epoch seconds, `within`
/// 5 s) → stdout as JSON, with `extra` settings; state in `st/`.
fn event_time_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"json_parse\"\n\
             [[train.cog]]\ntype = \"dedup\"\nname = \"once\"\nfields = [\"host\"]\n\
             within = \"5s\"\ntime = \"t\"\n{extra}\n\
             [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n"
        ),
    )
}

/// One JSON line of host `a` at event time `t` (seconds), numbered `x`.
fn at(t: i64, x: usize) -> String {
    format!("{{\"host\":\"a\",\"t\":{t},\"x\":{x}}}\n")
}

/// The `x` of each JSON line.
fn xs(text: &[u8]) -> Vec<usize> {
    String::from_utf8_lossy(text)
        .lines()
        .map(|l| {
            let from = l.find("\"x\":").unwrap() + 4;
            let end = l[from..].find([',', '}']).map_or(l.len(), |e| from + e);
            l[from..end].parse().unwrap()
        })
        .collect()
}

/// By event time, a replay read at full speed is deduplicated as living through it was:
/// one datum passes per 5 s of event time, and a datum a little older than the key's pass
/// (out of order) is a repeat too, while one far older is not.
#[test]
fn by_event_time_a_replay_is_deduplicated_as_it_was_lived() {
    let dir = TempDir::new("dedup-event-time");
    let input: String = (0..100).map(|x| at(1_000 + x as i64 / 10, x)).collect();
    let (st, stdout, err) = run_with_stdin(&event_time_config(dir.path(), ""), input.as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(xs(&stdout), [0, 50], "{err}");
    assert!(
        err.contains("cog=once in=100 out=2 dropped=98 errors=0"),
        "{err}"
    );

    // By arrival time the same replay passes the first only.
    let arrival = config(dir.path(), "fields = [\"host\"]\nwithin = \"5s\"");
    let arrival = std::fs::read_to_string(&arrival).unwrap().replace(
        "type = \"stdin\"\n",
        "type = \"stdin\"\n[[train.cog]]\ntype = \"json_parse\"\n",
    );
    std::fs::write(dir.path().join("arrival.toml"), arrival).unwrap();
    let (st, _, err) = run_with_stdin(&dir.path().join("arrival.toml"), input.as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(line_count(&dir.path().join("out.log")), 1, "{err}");

    // Out of order: 1010 passes, 1008 (2 s before it) is a repeat, 1004 (6 s before) is
    // not, and 1012 is still a repeat of 1010.
    let input = [
        at(1_010, 0),
        at(1_008, 1),
        at(1_004, 2),
        at(1_012, 3),
        at(1_016, 4),
    ]
    .concat();
    let (st, stdout, err) = run_with_stdin(&event_time_config(dir.path(), ""), input.as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(xs(&stdout), [0, 2, 4], "{err}");
}

/// A datum whose time is missing or not a time goes per `on_error`: counted, logged with
/// its event id, and dropped (acknowledged) or kept with the reason.
#[test]
fn by_event_time_data_without_a_time_go_per_on_error() {
    let dir = TempDir::new("dedup-event-time-bad");
    let input = format!(
        "{}{{\"host\":\"a\",\"x\":1}}\n{{\"host\":\"a\",\"t\":\"soon\",\"x\":2}}\n{}",
        at(1_000, 0),
        at(1_010, 3)
    );
    let cfg = event_time_config(dir.path(), "on_error = \"drop\"");
    let (st, stdout, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(xs(&stdout), [0, 3], "{err}");
    assert!(
        err.contains("cog=once in=4 out=2 dropped=2 errors=2"),
        "{err}"
    );
    assert!(err.contains("no time field `t`"), "{err}");

    let (st, stdout, err) = run_with_stdin(&event_time_config(dir.path(), ""), input.as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(xs(&stdout), [0, 1, 2, 3], "{err}");
    assert_eq!(
        String::from_utf8_lossy(&stdout)
            .matches("\"error\":")
            .count(),
        2
    );
}

/// Persisted by event time, the keys come back with their times (event time does not pass
/// while the daemon is stopped); a file saved by arrival time is not taken for one.
#[test]
fn by_event_time_persisted_keys_continue_and_arrival_state_is_not_mixed_in() {
    let dir = TempDir::new("dedup-event-time-persist");
    let cfg = event_time_config(dir.path(), "persist = true");
    let (st, stdout, err) = run_with_stdin(&cfg, at(1_000, 0).as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(xs(&stdout), [0], "{err}");
    assert!(err.contains("dedup state saved"), "{err}");
    let (st, stdout, err) = run_with_stdin(&cfg, [at(1_003, 1), at(1_006, 2)].concat().as_bytes());
    assert!(st.success(), "{err}");
    assert!(err.contains("dedup state loaded"), "{err}");
    assert_eq!(
        xs(&stdout),
        [2],
        "1003 repeats the 1000 of the run before: {err}"
    );

    let arrival = config(
        dir.path(),
        "name = \"once\"\nfields = [\"message\"]\npersist = true",
    );
    let (st, _, err) = run_with_stdin(&arrival, b"a\n");
    assert!(st.success(), "{err}");
    assert!(err.contains("dedup state ignored, starting empty"), "{err}");
}
