//! `throttle` in the daemon: a deterministic burst per key, excess dropped (acknowledged,
//! counted) or sent to another train, tokens coming back with time.

use std::io::Write;
use std::time::Duration;

use super::{
    line_count, run_ok, run_with_stdin, spawn_with_stdin, stderr_of, wait_exit, wait_for,
    write_config,
};
use crate::engine::TempDir;

/// Ten lines of host a and two of host b, interleaved, numbered by `x`.
fn burst_input() -> String {
    let hosts = ["a", "a", "b", "a", "a", "a", "b", "a", "a", "a", "a", "a"];
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| format!("{{\"host\":\"{h}\",\"x\":{i}}}\n"))
        .collect()
}

/// The `x` of each JSON line.
fn xs(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let at = l.find("\"x\":").unwrap() + 4;
            let end = l[at..].find([',', '}']).map_or(l.len(), |e| at + e);
            l[at..end].to_string()
        })
        .collect()
}

#[test]
fn a_burst_per_key_passes_and_the_excess_is_dropped() {
    let dir = TempDir::new("throttle-drop");
    // A rate so low that no token comes back during the test: the burst alone decides.
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"json_parse\"\n\
         [[train.cog]]\ntype = \"throttle\"\nfields = [\"host\"]\nrate = 0.001\nburst = 3\n\
         [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n",
    );
    let (st, stdout, err) = run_with_stdin(&cfg, burst_input().as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(
        xs(&String::from_utf8_lossy(&stdout)),
        ["0", "1", "2", "3", "6"],
        "{err}"
    );
    assert!(
        err.contains("cog=throttle#3 in=12 out=5 dropped=7 errors=0"),
        "{err}"
    );
}

#[test]
fn the_excess_goes_to_another_train() {
    let dir = TempDir::new("throttle-route");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"json_parse\"\n\
         [[train.cog]]\ntype = \"throttle\"\nfields = [\"host\"]\nrate = 0.001\nburst = 3\n\
         on_excess = \"train:excess\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.json\"\nformat = \"json\"\n\
         [[train]]\nname = \"excess\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"excess.json\"\nformat = \"json\"\n",
    );
    let (st, _, err) = run_with_stdin(&cfg, burst_input().as_bytes());
    assert!(st.success(), "{err}");
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert_eq!(xs(&read("out.json")), ["0", "1", "2", "3", "6"], "{err}");
    assert_eq!(
        xs(&read("excess.json")),
        ["4", "5", "7", "8", "9", "10", "11"],
        "{err}"
    );
    assert!(
        err.contains("cog=throttle#3 in=12 out=5 dropped=0"),
        "{err}"
    );
}

#[test]
fn tokens_come_back_with_time_and_dropped_lines_are_acknowledged() {
    let dir = TempDir::new("throttle-refill");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"throttle\"\nrate = 20\nburst = 1\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n",
    );
    let out = dir.path().join("out.log");
    let (mut child, mut stdin) = spawn_with_stdin(&cfg);
    // Written at once, the two lines arrive together: the second finds no token.
    stdin.write_all(b"a\nb\n").unwrap();
    wait_for("the first line", || line_count(&out) == 1);
    // A token comes back every 50 ms; the point of the test is time passing (bounded).
    std::thread::sleep(Duration::from_millis(150));
    stdin.write_all(b"c\n").unwrap();
    wait_for("the line after the refill", || line_count(&out) == 2);
    drop(stdin);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\nc\n", "{err}");
    assert!(err.contains("cog=throttle#2 in=3 out=2 dropped=1"), "{err}");

    // With tail, the dropped lines are acknowledged: a second run reads nothing again.
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    std::fs::write(dir.path().join("logs/app.log"), "1\n2\n3\n4\n").unwrap();
    let cfg = write_config(
        dir.path(),
        "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"tail\"\n\
         paths = [\"logs/*.log\"]\nfollow = false\n\
         [[train.cog]]\ntype = \"throttle\"\nrate = 0.001\nburst = 2\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"tail.log\"\n",
    );
    let res = run_ok(&cfg);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("cog=throttle#2 in=4 out=2 dropped=2"), "{err}");
    let res = run_ok(&cfg);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("cog=throttle#2 in=0 out=0 dropped=0"), "{err}");
    let got = std::fs::read_to_string(dir.path().join("tail.log")).unwrap();
    assert_eq!(got, "1\n2\n", "{err}");
}

#[test]
fn bad_settings_are_configuration_errors() {
    let dir = TempDir::new("throttle-check");
    for (keys, want) in [
        (
            "rate = 0.0",
            "key \"rate\": must be a number of data per second above 0",
        ),
        ("rate = 1.0\nburst = 0", "key \"burst\": must be at least 1"),
        (
            "rate = 1.0\non_excess = \"nope\"",
            "expected \"drop\" or \"train:NAME\"",
        ),
        (
            "rate = 1.0\non_excess = \"train:none\"",
            "no train named \"none\"",
        ),
        (
            "rate = 1.0\non_excess = \"train:t\"",
            "cannot send records to itself",
        ),
        ("burst = 2", "rate"),
        (
            "rate = 1.0\ntime_format = \"%s\"",
            "time = \"arrival\" takes the wall clock: no time_format",
        ),
        (
            "rate = 1.0\ntime = \"t\"\ntime_format = \"%Q\"",
            "key \"time_format\"",
        ),
        ("rate = 1.0\ntime = \"a..b\"", "key \"time\""),
        (
            "rate = 1.0\ntime = \"t\"\non_error = \"train:none\"",
            "no train named \"none\"",
        ),
    ] {
        let cfg = write_config(
            dir.path(),
            &format!(
                "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
                 [[train.cog]]\ntype = \"throttle\"\n{keys}\n\
                 [[train.cog]]\ntype = \"stdout\"\n"
            ),
        );
        let res = super::deadbeat()
            .args(["check", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{keys}");
        assert!(err.contains(want), "{keys}: {err}");
    }
}

/// stdin → throttle (one bucket per line text, 3 tokens, next to no refill, persisted) →
/// file_out out.log, state in `st/`.
fn persist_config(dir: &std::path::Path) -> std::path::PathBuf {
    write_config(
        dir,
        "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"throttle\"\nname = \"gate\"\nfields = [\"message\"]\n\
         rate = 0.001\nburst = 3\npersist = true\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n",
    )
}

/// With `persist = true` a restart does not refill the buckets: what a key spent before it
/// stays spent. A damaged state file is logged and ignored (the buckets start full).
#[test]
fn persisted_buckets_survive_a_restart_and_a_bad_state_file_is_ignored() {
    let dir = TempDir::new("throttle-persist");
    let cfg = persist_config(dir.path());
    let out = |d: &std::path::Path| std::fs::read_to_string(d.join("out.log")).unwrap_or_default();
    let (st, _, err) = run_with_stdin(&cfg, b"a\na\na\na\nb\n");
    assert!(st.success(), "{err}");
    assert_eq!(out(dir.path()), "a\na\na\nb\n", "{err}");
    assert!(err.contains("throttle state saved"), "{err}");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("st"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("throttle-t-gate-"))
        })
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        std::fs::read(&files[0])
            .unwrap()
            .starts_with(b"deadbeat-state throttle 1\n")
    );

    // a spent its three tokens; b has two left.
    let (st, _, err) = run_with_stdin(&cfg, b"a\na\nb\nb\nb\n");
    assert!(st.success(), "{err}");
    assert!(err.contains("throttle state loaded"), "{err}");
    assert_eq!(out(dir.path()), "a\na\na\nb\nb\nb\n", "{err}");
    assert!(err.contains("cog=gate in=5 out=2 dropped=3"), "{err}");

    // A damaged file: ignored, a full bucket again.
    std::fs::write(&files[0], b"deadbeat-state throttle 1\ngarbage").unwrap();
    std::fs::write(dir.path().join("out.log"), "").unwrap();
    let (st, _, err) = run_with_stdin(&cfg, b"a\na\na\na\n");
    assert!(st.success(), "{err}");
    assert!(
        err.contains("throttle state ignored, starting empty"),
        "{err}"
    );
    assert_eq!(out(dir.path()), "a\na\na\n", "{err}");
}

/// stdin → json_parse → throttle on `host` by the event time in `t` (epoch seconds) →
/// stdout, with `extra` settings.
fn event_time_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"json_parse\"\n\
             [[train.cog]]\ntype = \"throttle\"\nname = \"gate\"\nfields = [\"host\"]\n\
             rate = 1\nburst = 1\ntime = \"t\"\n{extra}\n\
             [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n"
        ),
    )
}

/// Ten data a second of event time for `secs` seconds from `from` (1,000 or later), host a,
/// numbered by `x` from ten times the seconds after 1,000.
fn ten_a_second(from: u64, secs: u64) -> String {
    (0..secs * 10)
        .map(|i| {
            let x = (from - 1_000) * 10 + i;
            format!("{{\"host\":\"a\",\"t\":{},\"x\":{x}}}\n", from + i / 10)
        })
        .collect()
}

/// With `time` naming a field, a bucket refills for the event time between data: a replay
/// read at full speed passes one datum per second of event time, as living through those
/// seconds would have; by arrival time the same replay passes only the first.
#[test]
fn by_event_time_a_replay_passes_what_living_it_passed() {
    let dir = TempDir::new("throttle-event-time");
    let input = ten_a_second(1_000, 10);
    let (st, stdout, err) = run_with_stdin(&event_time_config(dir.path(), ""), input.as_bytes());
    assert!(st.success(), "{err}");
    let want: Vec<String> = (0..10).map(|s| (s * 10).to_string()).collect();
    assert_eq!(xs(&String::from_utf8_lossy(&stdout)), want, "{err}");
    assert!(
        err.contains("cog=gate in=100 out=10 dropped=90 errors=0"),
        "{err}"
    );

    let arrival = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"json_parse\"\n\
         [[train.cog]]\ntype = \"throttle\"\nfields = [\"host\"]\nrate = 0.001\nburst = 1\n\
         [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n",
    );
    let (st, stdout, err) = run_with_stdin(&arrival, input.as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(xs(&String::from_utf8_lossy(&stdout)), ["0"], "{err}");

    // Time going back (an older file read after a newer one) refills nothing.
    let back = format!("{}{}", ten_a_second(2_000, 1), ten_a_second(1_000, 3));
    let (st, stdout, err) = run_with_stdin(&event_time_config(dir.path(), ""), back.as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(xs(&String::from_utf8_lossy(&stdout)), ["10000"], "{err}");
}

/// A datum whose time is missing or not a time goes per `on_error`: counted as an error,
/// logged with its event id, dropped (acknowledged) or kept with the reason.
#[test]
fn by_event_time_data_without_a_time_go_per_on_error() {
    let dir = TempDir::new("throttle-event-time-bad");
    let input = "{\"host\":\"a\",\"t\":1000,\"x\":0}\n{\"host\":\"a\",\"x\":1}\n\
                 {\"host\":\"a\",\"t\":\"soon\",\"x\":2}\n{\"host\":\"a\",\"t\":1001,\"x\":3}\n";
    let cfg = event_time_config(dir.path(), "on_error = \"drop\"");
    let (st, stdout, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(xs(&String::from_utf8_lossy(&stdout)), ["0", "3"], "{err}");
    assert!(
        err.contains("cog=gate in=4 out=2 dropped=2 errors=2"),
        "{err}"
    );
    assert!(err.contains("no time field `t`"), "{err}");
    assert!(err.contains("\\\"soon\\\" is no RFC 3339 time"), "{err}");

    // The default, keep: passed on with the reason, unthrottled.
    let (st, stdout, err) = run_with_stdin(&event_time_config(dir.path(), ""), input.as_bytes());
    assert!(st.success(), "{err}");
    let out = String::from_utf8_lossy(&stdout);
    assert_eq!(xs(&out), ["0", "1", "2", "3"], "{err}");
    assert_eq!(out.matches("\"error\":").count(), 2, "{out}");
}

/// Persisted by event time, a bucket comes back as it was saved (event time does not pass
/// while the daemon is stopped); a state file saved by arrival time is not taken for one
/// saved by event time.
#[test]
fn by_event_time_persisted_buckets_continue_and_arrival_state_is_not_mixed_in() {
    let dir = TempDir::new("throttle-event-time-persist");
    let cfg = event_time_config(dir.path(), "persist = true");
    let (st, stdout, err) = run_with_stdin(&cfg, ten_a_second(1_000, 1).as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(xs(&String::from_utf8_lossy(&stdout)), ["0"], "{err}");
    assert!(err.contains("throttle state saved"), "{err}");
    // The same second again after a restart: the token is still spent; the next second
    // brings one.
    let again = format!("{}{}", ten_a_second(1_000, 1), ten_a_second(1_001, 1));
    let (st, stdout, err) = run_with_stdin(&cfg, again.as_bytes());
    assert!(st.success(), "{err}");
    assert!(err.contains("throttle state loaded"), "{err}");
    assert_eq!(xs(&String::from_utf8_lossy(&stdout)), ["10"], "{err}");

    // The same cog by arrival time finds a file of the other kind: reported, ignored.
    let arrival = write_config(
        dir.path(),
        "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"json_parse\"\n\
         [[train.cog]]\ntype = \"throttle\"\nname = \"gate\"\nfields = [\"host\"]\n\
         rate = 0.001\nburst = 1\npersist = true\n\
         [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n",
    );
    let (st, stdout, err) = run_with_stdin(&arrival, ten_a_second(1_000, 1).as_bytes());
    assert!(st.success(), "{err}");
    assert!(
        err.contains("throttle state ignored, starting empty"),
        "{err}"
    );
    assert_eq!(xs(&String::from_utf8_lossy(&stdout)), ["0"], "{err}");
}
