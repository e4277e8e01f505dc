//! Outputs that never come back: a closed standard output ends the run at once; an output
//! file that cannot be written is retried, but a graceful stop still ends.

use std::io::Write as _;

use super::*;

/// `deadbeat run CFG | head -1` through a real pipe: once `head` has its line and exits,
/// the daemon exits within a second, with status 1 and one line saying what it did not
/// write.
#[test]
fn closed_stdout_ends_the_run_within_a_second() {
    let dir = TempDir::new("rel-head");
    let n = 100_000;
    let input: String = (0..n)
        .map(|i| format!("line {i:07} the quick brown fox\n"))
        .collect();
    std::fs::write(dir.path().join("in.log"), &input).unwrap();
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"file_in\"\npaths = [\"in.log\"]\n\
         [[train.cog]]\ntype = \"stdout\"\n",
    );
    let err = dir.path().join("err.log");
    let mut d = Command::new(BIN)
        .args(["run", cfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let pipe = d.stdout.take().unwrap();
    let head = Command::new("head")
        .arg("-1")
        .stdin(Stdio::from(pipe))
        .output()
        .unwrap();
    let closed = Instant::now();
    assert_eq!(head.stdout, b"line 0000000 the quick brown fox\n");
    let deadline = closed + Duration::from_secs(1);
    let st = loop {
        if let Some(st) = d.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = d.kill();
            let _ = d.wait();
            panic!(
                "still running a second after the reader closed the pipe:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let log = std::fs::read_to_string(&err).unwrap();
    assert_eq!(st.code(), Some(1), "{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("standard output was closed by its reader: records not written"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    let records: usize = lines[0]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("records="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no record count: {log}"));
    assert!(
        records > 0 && records < n,
        "{records} records not written: {log}"
    );
    assert!(!log.contains("holding data and retrying"), "{log}");
    eprintln!(
        "head -1: exit 1 {:?} after the pipe closed, {records} records not written",
        closed.elapsed()
    );
}

/// A directory no file may be created in, whoever runs the test: a read-only tmpfs as
/// root, a mode 0555 directory otherwise. `None` if that cannot be set up.
struct ReadOnlyDir(PathBuf, bool);

impl ReadOnlyDir {
    fn new(p: &Path) -> Option<ReadOnlyDir> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(p).ok()?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
                .arg(p)
                .status()
                .is_ok_and(|s| s.success());
            ok.then(|| ReadOnlyDir(p.to_path_buf(), true))
        } else {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o555)).ok()?;
            Some(ReadOnlyDir(p.to_path_buf(), false))
        }
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt as _;
        if self.1 {
            let ok = Command::new("umount")
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        } else {
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// A templated `file_out` whose files cannot be created retries while running; SIGTERM
/// then ends the run within `stop_timeout`, exit 1, saying how many records were not
/// written.
#[test]
fn unwritable_templated_output_stops_within_stop_timeout() {
    let dir = TempDir::new("rel-unwritable");
    let cfg = write_config(
        dir.path(),
        "[engine]\nstop_timeout = \"1s\"\n[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"ro/{message}.log\"\n",
    );
    let mut d = Daemon::start(&cfg, Stdio::piped());
    // Read-only only once running: `run` refuses a directory it cannot write at start.
    wait_for("the daemon to start", || {
        d.stderr().contains("trains started")
    });
    let Some(_ro) = ReadOnlyDir::new(&dir.path().join("ro")) else {
        eprintln!("skipped: cannot make a read-only directory");
        return;
    };
    let mut stdin = d.child.stdin.take().unwrap();
    stdin.write_all(b"a\nb\na\n").unwrap();
    wait_for("the write failure to be logged", || {
        d.stderr().contains("writing output file failed")
    });
    assert!(d.running(), "{}", d.stderr());
    let stopping = Instant::now();
    kill(d.id(), libc::SIGTERM);
    let st = d.wait_exit();
    let took = stopping.elapsed();
    let log = d.stderr();
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        took < Duration::from_millis(2500),
        "the stop took {took:?}:\n{log}"
    );
    assert!(log.contains("stop_timeout passed"), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("records not written"))
        .unwrap_or_else(|| panic!("no account of the unwritten records:\n{log}"));
    assert!(
        line.contains("records=3") && line.contains("bytes=6"),
        "{line}"
    );
    drop(stdin);
}

/// A standard output that refuses writes (`/dev/full`) holds the records, says so once
/// however many attempts fail (the first write, the timer's retries, the one at the
/// stop), and SIGTERM still ends the run within `stop_timeout`, saying what was not
/// written.
#[test]
fn full_stdout_holds_logs_once_and_stops_within_stop_timeout() {
    let dir = TempDir::new("rel-full-stdout");
    let cfg = write_config(
        dir.path(),
        "[engine]\nstop_timeout = \"1s\"\n[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"stdin\"\n[[train.cog]]\ntype = \"stdout\"\n",
    );
    let err = dir.path().join("err.log");
    let Ok(full) = OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipped: no /dev/full");
        return;
    };
    let mut child = Command::new(BIN)
        .args(["run", cfg.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(full)
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&err).unwrap_or_default();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"a\nb\n").unwrap();
    wait_for("the write failure to be logged", || {
        log().contains("writing standard output failed; holding data and retrying")
    });
    let stopping = Instant::now();
    kill(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + PATIENCE;
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("deadbeat did not exit in time; stderr:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let took = stopping.elapsed();
    let log = log();
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        took < Duration::from_millis(2500),
        "the stop took {took:?}:\n{log}"
    );
    assert_eq!(
        log.matches("writing standard output failed").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("writable again"), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("stopped before standard output took everything"))
        .unwrap_or_else(|| panic!("no account of the unwritten records:\n{log}"));
    assert!(
        line.contains("records=2") && line.contains("bytes=4"),
        "{line}"
    );
    drop(stdin);
}
