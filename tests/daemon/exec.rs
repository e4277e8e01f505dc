//! `exec` in the daemon, with small programs the tests write: order over 100k records, a
//! transformer, a program that exits (restarted, nothing lost, re-sent counted), garbage,
//! two lines for one, no answer (timeout), stderr in the log, a missing program, a spawn
//! per batch, and SIGTERM mid-stream.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{
    deadbeat, kill, line_count, run_with_stdin, spawn_with_stdin, stderr_of, wait_exit, wait_for,
    write_config,
};
use crate::engine::TempDir;

/// The Python interpreter, or `None` (the test then says it skips).
fn python() -> Option<&'static str> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "pass"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some("python3")
    } else {
        eprintln!("skipped: python3 is not installed");
        None
    }
}

/// Writes a Python program into `dir` and returns its path.
fn program(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// stdin → exec (with `keys`) → stdout as JSON.
fn config(dir: &Path, keys: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"exec\"\n{keys}\n\
             [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n"
        ),
    )
}

fn py_command(py: &str, prog: &Path) -> String {
    format!("command = [\"{py}\", \"-u\", \"{}\"]", prog.display())
}

fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::to_string)
        .collect()
}

fn input(n: usize) -> String {
    (0..n).map(|i| format!("{i}\n")).collect()
}

#[test]
fn cat_keeps_the_order_of_100k_records() {
    let dir = TempDir::new("exec-cat");
    let cfg = config(dir.path(), "command = [\"cat\"]\nmax_in_flight = 5000");
    let (st, out, err) = run_with_stdin(&cfg, input(100_000).as_bytes());
    assert!(st.success(), "{err}");
    let got = lines(&out);
    assert_eq!(got.len(), 100_000, "{err}");
    for (i, l) in got.iter().enumerate() {
        assert_eq!(*l, format!("{{\"message\":\"{i}\"}}"));
    }
    assert!(
        err.contains("cog=exec#2 in=100000 out=100000 dropped=0 errors=0"),
        "{err}"
    );
}

#[test]
fn a_transformer_replaces_or_merges() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("exec-transform");
    // Copies the record and adds a field: the sequence number goes back with it.
    let add = program(
        dir.path(),
        "add.py",
        "import sys, json\nfor l in sys.stdin:\n    d = json.loads(l)\n    \
         d['double'] = int(d['message']) * 2\n    print(json.dumps(d))\n",
    );
    let cfg = config(dir.path(), &py_command(py, &add));
    let (st, out, err) = run_with_stdin(&cfg, input(1000).as_bytes());
    assert!(st.success(), "{err}");
    let got = lines(&out);
    assert_eq!(got.len(), 1000, "{err}");
    for (i, l) in got.iter().enumerate() {
        assert_eq!(*l, format!("{{\"message\":\"{i}\",\"double\":{}}}", i * 2));
    }
    // A fresh object per answer, merged: matched by position.
    let fresh = program(
        dir.path(),
        "fresh.py",
        "import sys, json\nfor l in sys.stdin:\n    d = json.loads(l)\n    \
         print(json.dumps({'len': len(d['message'])}))\n",
    );
    let cfg = config(
        dir.path(),
        &format!("{}\nmerge = true", py_command(py, &fresh)),
    );
    let (st, out, err) = run_with_stdin(&cfg, b"a\nbbb\n\nxy\n");
    assert!(st.success(), "{err}");
    assert_eq!(
        lines(&out),
        [
            r#"{"message":"a","len":1}"#,
            r#"{"message":"bbb","len":3}"#,
            r#"{"message":"","len":0}"#,
            r#"{"message":"xy","len":2}"#,
        ],
        "{err}"
    );
    // Without merge the answer replaces the fields.
    let cfg = config(dir.path(), &py_command(py, &fresh));
    let (st, out, err) = run_with_stdin(&cfg, b"abcd\n");
    assert!(st.success(), "{err}");
    assert_eq!(lines(&out), [r#"{"len":4}"#], "{err}");
}

#[test]
fn a_program_that_exits_is_restarted_and_nothing_is_lost() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("exec-exits");
    // Answers 300 records, then exits with what it read next unanswered.
    let prog = program(
        dir.path(),
        "exits.py",
        "import sys\nn = 0\nfor l in sys.stdin:\n    if n == 300:\n        sys.exit(3)\n    \
         sys.stdout.write(l)\n    sys.stdout.flush()\n    n += 1\n",
    );
    let cfg = config(
        dir.path(),
        &format!(
            "{}\nbackoff_initial = \"10ms\"\nbackoff_max = \"50ms\"",
            py_command(py, &prog)
        ),
    );
    let (st, out, err) = run_with_stdin(&cfg, input(2000).as_bytes());
    assert!(st.success(), "{err}");
    let got = lines(&out);
    assert_eq!(got.len(), 2000, "{err}");
    for (i, l) in got.iter().enumerate() {
        assert_eq!(*l, format!("{{\"message\":\"{i}\"}}"), "{err}");
    }
    // The end is seen as the exit status, or, when the loop reads the closed output
    // before the process has finished exiting, as that.
    assert!(
        err.contains("exit status 3") || err.contains("closed its output (still running)"),
        "{err}"
    );
    let restarts = counter(&err, "restarts");
    assert!(restarts >= 6, "2000 records at 300 a program: {err}");
    assert!(counter(&err, "resent") >= restarts, "{err}");
    assert!(
        err.contains("cog=exec#2 in=2000 out=2000 dropped=0 errors=0"),
        "{err}"
    );
}

/// The value of `name=N` in the `exec totals` line.
fn counter(err: &str, name: &str) -> u64 {
    let line = err
        .lines()
        .find(|l| l.contains("exec totals"))
        .unwrap_or_else(|| panic!("no exec totals in:\n{err}"));
    let at = line.find(&format!(" {name}=")).unwrap() + name.len() + 2;
    line[at..].split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn garbage_fails_the_due_record_and_restarts_the_program() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("exec-garbage");
    let prog = program(
        dir.path(),
        "garbage.py",
        "import sys\nfor l in sys.stdin:\n    if '\"7\"' in l:\n        print('oops, not json')\n    \
         else:\n        sys.stdout.write(l)\n    sys.stdout.flush()\n",
    );
    let cfg = config(
        dir.path(),
        &format!("{}\nbackoff_initial = \"10ms\"", py_command(py, &prog)),
    );
    let (st, out, err) = run_with_stdin(&cfg, input(20).as_bytes());
    assert!(st.success(), "{err}");
    let got = lines(&out);
    assert_eq!(got.len(), 20, "{err}");
    for (i, l) in got.iter().enumerate() {
        if i == 7 {
            assert!(
                l.starts_with(r#"{"message":"7","error":"the program's answer: not JSON"#),
                "{l}"
            );
        } else {
            assert_eq!(*l, format!("{{\"message\":\"{i}\"}}"), "{err}");
        }
    }
    assert_eq!(counter(&err, "bad_lines"), 1, "{err}");
    assert_eq!(counter(&err, "restarts"), 1, "{err}");
    assert!(err.contains("oops, not json"), "the line is logged: {err}");
    assert!(
        err.contains("cog=exec#2 in=20 out=20 dropped=0 errors=1"),
        "{err}"
    );
}

#[test]
fn two_lines_for_one_record_shift_nothing() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("exec-two");
    let prog = program(
        dir.path(),
        "two.py",
        "import sys\nfor l in sys.stdin:\n    sys.stdout.write(l)\n    \
         if '\"3\"' in l:\n        sys.stdout.write(l)\n    sys.stdout.flush()\n",
    );
    let cfg = config(dir.path(), &py_command(py, &prog));
    let (st, out, err) = run_with_stdin(&cfg, input(50).as_bytes());
    assert!(st.success(), "{err}");
    let got = lines(&out);
    assert_eq!(got.len(), 50, "{err}");
    for (i, l) in got.iter().enumerate() {
        assert_eq!(*l, format!("{{\"message\":\"{i}\"}}"), "{err}");
    }
    assert_eq!(counter(&err, "extra_lines"), 1, "{err}");
    assert_eq!(counter(&err, "restarts"), 0, "{err}");

    // Fresh objects carry no sequence number: a line beyond every record written is
    // caught (the program is restarted), not given to the next record.
    let prog = program(
        dir.path(),
        "two_fresh.py",
        // Two writes: the second line may come while the answer is handled, or only after
        // the input ended and the cog finished; it is counted either way.
        "import sys\nfor l in sys.stdin:\n    print('{\"x\": 1}', flush=True)\n    \
         print('{\"x\": 2}', flush=True)\n",
    );
    let cfg = config(
        dir.path(),
        &format!(
            "{}\nbackoff_initial = \"10ms\"\nmerge = true",
            py_command(py, &prog)
        ),
    );
    let (st, out, err) = run_with_stdin(&cfg, b"only\n");
    assert!(st.success(), "{err}");
    assert_eq!(lines(&out), [r#"{"message":"only","x":1}"#], "{err}");
    assert_eq!(counter(&err, "extra_lines"), 1, "{err}");
}

#[test]
fn lines_written_after_the_last_answer_are_counted() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("exec-late");
    // Answers every record, then, a moment after its input has ended, one more line: the
    // daemon is stopping by then (the program gets a grace period to end), and the line
    // is counted as extra, given to no record.
    let prog = program(
        dir.path(),
        "late.py",
        "import sys, time\nfor l in sys.stdin:\n    sys.stdout.write(l)\n    sys.stdout.flush()\n\
         time.sleep(0.2)\nprint('{\"late\": 1}', flush=True)\n",
    );
    let cfg = config(dir.path(), &py_command(py, &prog));
    let (st, out, err) = run_with_stdin(&cfg, input(20).as_bytes());
    assert!(st.success(), "{err}");
    let got = lines(&out);
    assert_eq!(got.len(), 20, "{err}");
    assert_eq!(got[19], r#"{"message":"19"}"#, "{err}");
    assert_eq!(counter(&err, "extra_lines"), 1, "{err}");
    assert!(err.contains("after its last answer"), "{err}");
}

#[test]
fn no_answer_within_timeout_goes_to_on_error() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("exec-silent");
    let prog = program(
        dir.path(),
        "silent.py",
        // Reads everything, answers nothing, and stays (its input's end included).
        "import sys, time\nfor l in sys.stdin:\n    pass\ntime.sleep(30)\n",
    );
    let cfg = config(
        dir.path(),
        &format!(
            "{}\ntimeout = \"300ms\"\nbackoff_initial = \"10ms\"",
            py_command(py, &prog)
        ),
    );
    let (st, out, err) = run_with_stdin(&cfg, input(5).as_bytes());
    assert!(st.success(), "{err}");
    let got = lines(&out);
    assert_eq!(got.len(), 5, "{err}");
    for (i, l) in got.iter().enumerate() {
        assert_eq!(
            *l,
            format!(
                "{{\"message\":\"{i}\",\"error\":\"no answer from the program within 300ms\"}}"
            ),
            "{err}"
        );
    }
    assert_eq!(counter(&err, "timeouts"), 5, "{err}");
    assert!(
        err.contains("cog=exec#2 in=5 out=5 dropped=0 errors=5"),
        "{err}"
    );

    // With on_error = "drop" they are dropped (and acknowledged).
    let cfg = config(
        dir.path(),
        &format!(
            "{}\ntimeout = \"200ms\"\non_error = \"drop\"",
            py_command(py, &prog)
        ),
    );
    let (st, out, err) = run_with_stdin(&cfg, input(3).as_bytes());
    assert!(st.success(), "{err}");
    assert!(out.is_empty(), "{err}");
    assert!(
        err.contains("cog=exec#2 in=3 out=0 dropped=3 errors=3"),
        "{err}"
    );
}

#[test]
fn stderr_of_the_program_reaches_the_log() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("exec-stderr");
    let prog = program(
        dir.path(),
        "talk.py",
        "import sys\nfor l in sys.stdin:\n    sys.stderr.write('saw ' + l)\n    \
         sys.stderr.flush()\n    sys.stdout.write(l)\n    sys.stdout.flush()\n",
    );
    let cfg = config(dir.path(), &py_command(py, &prog));
    let (st, out, err) = run_with_stdin(&cfg, input(30).as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(lines(&out).len(), 30, "{err}");
    let logged: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("exec: program stderr"))
        .collect();
    assert!(!logged.is_empty(), "{err}");
    assert!(logged[0].contains("saw {"), "{err}");
    assert!(logged[0].contains("cog=exec#2"), "{err}");
    // Rate-limited: 10 lines a second, the rest counted.
    assert!(logged.len() <= 10, "{err}");
    assert_eq!(counter(&err, "stderr_lines"), 30, "{err}");
}

#[test]
fn a_missing_program_is_a_clear_error_naming_the_cog_and_the_command() {
    let dir = TempDir::new("exec-missing");
    let cfg = config(dir.path(), "command = [\"/nonexistent/filter\", \"--x\"]");
    for cmd in ["check", "run"] {
        let res = deadbeat()
            .args([cmd, cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(res.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(err.contains("exec#2"), "{cmd}: {err}");
        assert!(err.contains("command"), "{cmd}: {err}");
        assert!(err.contains("/nonexistent/filter"), "{cmd}: {err}");
    }
    let cfg = config(dir.path(), "command = [\"no-such-program-deadbeat\"]");
    let res = deadbeat()
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("\"no-such-program-deadbeat\" not found in PATH"),
        "{err}"
    );
    let cfg = config(dir.path(), "command = []");
    let res = deadbeat()
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("must name a program"), "{err}");
}

#[test]
fn spawn_mode_runs_the_command_per_batch() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("exec-spawn");
    // Reads everything, answers at the end, in reverse order of writing but each line
    // carrying its sequence number back.
    let prog = program(
        dir.path(),
        "batch.py",
        "import sys, json\nrows = [json.loads(l) for l in sys.stdin]\n\
         out = []\nfor d in rows:\n    d['n'] = len(rows)\n    out.append(json.dumps(d))\n\
         print('\\n'.join(reversed(out)))\n",
    );
    let cfg = config(
        dir.path(),
        &format!(
            "{}\nmode = \"spawn\"\nbatch_records = 100\nlinger = \"50ms\"",
            py_command(py, &prog)
        ),
    );
    let (st, out, err) = run_with_stdin(&cfg, input(450).as_bytes());
    assert!(st.success(), "{err}");
    let got = lines(&out);
    assert_eq!(got.len(), 450, "{err}");
    for (i, l) in got.iter().enumerate() {
        let n = if i < 400 { 100 } else { 50 };
        assert_eq!(*l, format!("{{\"message\":\"{i}\",\"n\":{n}}}"), "{err}");
    }
    assert_eq!(counter(&err, "runs"), 5, "{err}");

    // A run that answers one line short is tried again, then its records fail.
    let prog = program(
        dir.path(),
        "short.py",
        "import sys\nrows = sys.stdin.readlines()\nsys.stdout.write(''.join(rows[1:]))\n",
    );
    let cfg = config(
        dir.path(),
        &format!(
            "{}\nmode = \"spawn\"\nseq_field = \"\"\nattempts = 2\nbackoff_initial = \"10ms\"",
            py_command(py, &prog)
        ),
    );
    let (st, out, err) = run_with_stdin(&cfg, input(3).as_bytes());
    assert!(st.success(), "{err}");
    let got = lines(&out);
    assert_eq!(got.len(), 3, "{err}");
    assert!(
        got.iter()
            .all(|l| l.contains("the program wrote 2 lines for 3 records")),
        "{got:?}"
    );
    assert_eq!(counter(&err, "runs"), 2, "{err}");
}

#[test]
fn sigterm_mid_stream_loses_nothing() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("exec-sigterm");
    let prog = program(
        dir.path(),
        "echo.py",
        "import sys\nfor l in sys.stdin:\n    sys.stdout.write(l)\n    sys.stdout.flush()\n",
    );
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"exec\"\n{}\n\
             [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"json\"\n",
            py_command(py, &prog)
        ),
    );
    let out = dir.path().join("out.log");
    let (mut child, mut stdin) = spawn_with_stdin(&cfg);
    stdin.write_all(input(20_000).as_bytes()).unwrap();
    wait_for("some records through the program", || {
        line_count(&out) >= 1000
    });
    kill(child.id(), libc::SIGTERM);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "exit {st:?}: {err}");
    drop(stdin);
    // Everything read went through the program and was written, in order.
    let read: usize = {
        let l = err
            .lines()
            .find(|l| l.contains("final counters") && l.contains("cog=stdin#1"))
            .unwrap();
        let at = l.find(" out=").unwrap() + 5;
        l[at..].split(' ').next().unwrap().parse().unwrap()
    };
    let got = std::fs::read_to_string(&out).unwrap();
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got.len(), read, "{err}");
    for (i, l) in got.iter().enumerate() {
        assert_eq!(*l, format!("{{\"message\":\"{i}\"}}"), "{err}");
    }
    assert!(err.contains("errors=0"), "{err}");
}
