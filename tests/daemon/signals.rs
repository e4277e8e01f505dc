//! SIGTERM, SIGHUP and daemon mode against the real binary.

use super::*;

const STDIN_TO_FILE: &str = "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
                             [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n";

fn stdin_to_file(dir: &Path) -> PathBuf {
    write_config(dir, STDIN_TO_FILE)
}

/// [`stdin_to_file`], logging to `deadbeat.log` in `dir`.
fn stdin_to_file_logging(dir: &Path) -> PathBuf {
    write_config(
        dir,
        &format!("[log]\ntarget = \"file:deadbeat.log\"\n{STDIN_TO_FILE}"),
    )
}

#[test]
fn sigterm_mid_stream_loses_nothing_already_read() {
    let dir = TempDir::new("sigterm");
    let cfg = stdin_to_file(dir.path());
    let out = dir.path().join("out.log");
    let (mut child, mut stdin) = spawn_with_stdin(&cfg);
    let first = numbered(5_000);
    stdin.write_all(first.as_bytes()).unwrap();
    wait_for("the first lines to be written", || {
        line_count(&out) == 5_000
    });
    // A complete line and a partial one in one write: once the complete line is out, the
    // partial one has been read too and must survive the shutdown.
    stdin.write_all(b"complete\npartial").unwrap();
    wait_for("the complete line", || line_count(&out) == 5_001);
    kill(child.id(), libc::SIGTERM);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "exit {st:?}: {err}");
    drop(stdin);
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(got, format!("{first}complete\npartial\n"));
    // The unfinished line is not passed on as if whole: flagged in the log and counted.
    assert!(err.contains("stopped in the middle of a line"), "{err}");
    assert!(
        err.contains("cog=stdin#1 in=0 out=5002 dropped=0 errors=1"),
        "{err}"
    );
}

#[test]
fn sigterm_in_the_middle_of_a_line_flags_it_partial() {
    let dir = TempDir::new("sigterm-partial");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"json\"\n",
    );
    let out = dir.path().join("out.log");
    let (mut child, mut stdin) = spawn_with_stdin(&cfg);
    stdin.write_all(b"whole\nhalf a li").unwrap();
    wait_for("the whole line", || line_count(&out) == 1);
    kill(child.id(), libc::SIGTERM);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "exit {st:?}: {err}");
    drop(stdin);
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        got, "{\"message\":\"whole\"}\n{\"message\":\"half a li\",\"partial\":true}\n",
        "{err}"
    );
}

#[test]
fn sigterm_during_a_batch_file_cuts_no_line_in_two() {
    // file_in reads large blocks: a stop between two blocks lands inside a line, whose
    // rest is in the file already and is read before the line is handed on.
    let dir = TempDir::new("sigterm-file-in");
    let input = dir.path().join("in.log");
    let lines = 1_000_000;
    std::fs::write(&input, numbered(lines)).unwrap();
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"file_in\"\npaths = [\"in.log\"]\n\
         [[train.cog]]\ntype = \"exec\"\ncommand = [\"cat\"]\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"json\"\n",
    );
    let out = dir.path().join("out.log");
    let mut child = deadbeat()
        .args(["run", cfg.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("some lines written", || line_count(&out) >= 1_000);
    kill(child.id(), libc::SIGTERM);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "exit {st:?}: {err}");
    let got = std::fs::read_to_string(&out).unwrap();
    let want: Vec<String> = numbered(lines).lines().map(str::to_string).collect();
    let got: Vec<&str> = got.lines().collect();
    assert!(
        got.len() < lines,
        "the stop came after the end: {} lines",
        got.len()
    );
    for (i, l) in got.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["message"], want[i].as_str(), "line {i}: {err}");
        assert!(v.get("partial").is_none(), "line {i}: {l}");
    }
}

#[test]
fn sighup_reopens_the_output_at_its_path() {
    let dir = TempDir::new("sighup");
    let cfg = stdin_to_file(dir.path());
    let out = dir.path().join("out.log");
    let rotated = dir.path().join("out.log.1");
    let (mut child, mut stdin) = spawn_with_stdin(&cfg);
    stdin.write_all(b"before 1\nbefore 2\n").unwrap();
    wait_for("lines before rotation", || line_count(&out) == 2);
    std::fs::rename(&out, &rotated).unwrap();
    kill(child.id(), libc::SIGHUP);
    wait_for("the reopened file", || out.exists());
    stdin.write_all(b"after 1\nafter 2\n").unwrap();
    drop(stdin);
    let st = wait_exit(&mut child);
    assert!(st.success(), "{}", stderr_of(&mut child));
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap(),
        "before 1\nbefore 2\n"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "after 1\nafter 2\n");
}

#[test]
fn daemon_mode_detaches_writes_pidfile_and_stops_on_sigterm() {
    let dir = TempDir::new("daemon");
    let input = dir.path().join("in.fifo");
    let c_path = std::ffi::CString::new(input.to_str().unwrap()).unwrap();
    // SAFETY: creating a FIFO at a path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let cfg = write_config(
        dir.path(),
        "[daemon]\npidfile = \"deadbeat.pid\"\n[log]\ntarget = \"file:deadbeat.log\"\n\
         [[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"file_in\"\npaths = [\"in.fifo\"]\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n",
    );
    let pidfile = dir.path().join("deadbeat.pid");
    // Read-write, so the FIFO has a writer for as long as the test holds it.
    let mut writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&input)
        .unwrap();
    let res = Command::new(BIN)
        .args(["run", cfg.to_str().unwrap(), "--daemon"])
        .output()
        .unwrap();
    assert_eq!(
        res.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    // The parent exits only once the trains started: the pidfile is there already.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) };
    assert_eq!(alive, 0, "daemon {pid} is not running");
    writer.write_all(b"through the daemon\n").unwrap();
    let out = dir.path().join("out.log");
    wait_for("the daemon to write", || line_count(&out) == 1);
    // SAFETY: stopping the daemon we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait_for("the pidfile to be removed", || !pidfile.exists());
    // SAFETY: signal 0 only checks that the process exists.
    wait_for("the daemon to exit", || unsafe { libc::kill(pid, 0) } != 0);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "through the daemon\n"
    );
    let log = std::fs::read_to_string(dir.path().join("deadbeat.log")).unwrap();
    assert!(
        log.contains("trains started") && log.contains("stopped"),
        "{log}"
    );
}

#[test]
fn sigusr1_logs_every_cogs_counters() {
    let dir = TempDir::new("sigusr1");
    let cfg = stdin_to_file_logging(dir.path());
    let log = dir.path().join("deadbeat.log");
    let out = dir.path().join("out.log");
    let (mut child, mut stdin) = spawn_with_stdin(&cfg);
    stdin.write_all(b"one\ntwo\n").unwrap();
    wait_for("two lines written", || line_count(&out) == 2);
    kill(child.id(), libc::SIGUSR1);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("counters in the log", || {
        read_log().contains("cog=file_out#2")
    });
    drop(stdin);
    assert!(wait_exit(&mut child).success());
    let text = read_log();
    assert!(
        text.contains("counters train=t cog=stdin#1 in=0 out=2 dropped=0 errors=0"),
        "{text}"
    );
    assert!(
        text.contains("counters train=t cog=file_out#2 in=2 out=0 dropped=0 errors=0"),
        "{text}"
    );
}

#[test]
fn sighup_reopens_the_log_file() {
    let dir = TempDir::new("logrotate");
    let cfg = stdin_to_file_logging(dir.path());
    let log = dir.path().join("deadbeat.log");
    let rotated = dir.path().join("deadbeat.log.1");
    let (mut child, stdin) = spawn_with_stdin(&cfg);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_for("the start to be logged", || {
        read(&log).contains("trains started")
    });
    std::fs::rename(&log, &rotated).unwrap();
    kill(child.id(), libc::SIGHUP);
    wait_for("a fresh log file", || log.exists());
    drop(stdin);
    assert!(wait_exit(&mut child).success());
    assert!(read(&rotated).contains("trains started"));
    let fresh = read(&log);
    assert!(
        fresh.contains("stopped") && !fresh.contains("trains started"),
        "{fresh}"
    );
}
