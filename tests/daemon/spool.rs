//! `spool`: a directory of whole files, read once each, then moved or deleted.

use super::*;

use std::os::unix::fs::OpenOptionsExt;

/// A spool → file_out config; `spool_keys` and `out_path` vary per test.
fn spool_config(dir: &Path, inotify: bool, spool_keys: &str, out_path: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[engine]\ninotify = {inotify}\n[[train]]\nname = \"t\"\n\
             [[train.cog]]\ntype = \"spool\"\ndir = \"in\"\npoll_interval = \"50ms\"\n{spool_keys}\n\
             [[train.cog]]\ntype = \"file_out\"\npath = \"{out_path}\"\n"
        ),
    )
}

fn start(cfg: &Path) -> Child {
    deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .spawn()
        .unwrap()
}

fn stop(child: &mut Child) -> String {
    kill(child.id(), libc::SIGTERM);
    let st = wait_exit(child);
    let err = stderr_of(child);
    assert!(st.success(), "exit {st:?}: {err}");
    err
}

/// `n` lines tagged with `tag`, so every file's lines are distinct.
fn tagged(tag: &str, n: usize) -> String {
    (0..n).map(|i| format!("{tag} {i:05}\n")).collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: creating a FIFO at a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut v: Vec<&str> = text.lines().collect();
    v.sort_unstable();
    v
}

fn present_and_arriving_files(inotify: bool) {
    let dir = TempDir::new(if inotify { "spool-ino" } else { "spool-poll" });
    let spool = dir.path().join("in");
    let done = dir.path().join("done");
    let out = dir.path().join("out.log");
    std::fs::create_dir_all(spool.join("sub")).unwrap();
    std::fs::create_dir_all(&done).unwrap();
    // Already in `done`: the new a.log must not replace it.
    std::fs::write(done.join("a.log"), "old\n").unwrap();
    std::fs::write(spool.join("a.log"), tagged("a", 100)).unwrap();
    std::fs::write(spool.join("b.log"), tagged("b", 100)).unwrap();
    std::fs::write(spool.join("skip.txt"), "not matched\n").unwrap();
    std::fs::write(spool.join(".hidden.log"), "hidden\n").unwrap();
    std::fs::write(spool.join("sub").join("nested.log"), "nested\n").unwrap();
    let cfg = spool_config(
        dir.path(),
        inotify,
        "done = \"move:done\"\npattern = \"*.log\"",
        "out.log",
    );
    let mut child = start(&cfg);
    wait_for("the files present at start", || line_count(&out) == 200);

    // Written elsewhere and moved in, as filers do.
    let staged = dir.path().join("c.log");
    std::fs::write(&staged, tagged("c", 100)).unwrap();
    std::fs::rename(&staged, spool.join("c.log")).unwrap();
    // Written in place.
    std::fs::write(spool.join("d.log"), tagged("d", 100)).unwrap();
    // Being written: never taken under its temporary name.
    std::fs::write(spool.join("e.log.tmp"), tagged("e", 100)).unwrap();
    wait_for("the files moved in", || line_count(&out) == 400);
    wait_for("c and d to leave the spool", || {
        !spool.join("c.log").exists() && !spool.join("d.log").exists()
    });
    assert!(spool.join("e.log.tmp").exists());
    assert!(!std::fs::read_to_string(&out).unwrap().contains("e 000"));

    std::fs::rename(spool.join("e.log.tmp"), spool.join("e.log")).unwrap();
    wait_for("the renamed temporary file", || line_count(&out) == 500);
    wait_for("every taken file to leave the spool", || {
        names_in(&spool) == [".hidden.log", "skip.txt", "sub"]
    });
    let err = stop(&mut child);

    assert_eq!(
        names_in(&done),
        ["a.log", "a.log.1", "b.log", "c.log", "d.log", "e.log"],
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(done.join("a.log")).unwrap(),
        "old\n"
    );
    assert_eq!(
        std::fs::read_to_string(done.join("a.log.1")).unwrap(),
        tagged("a", 100)
    );
    let got = std::fs::read_to_string(&out).unwrap();
    let want: String = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|t| tagged(t, 100))
        .collect();
    // Each line exactly once.
    assert_eq!(sorted_lines(&got), sorted_lines(&want));
    // Files present at start are read in name order, each file in order.
    assert!(got.starts_with(&format!("{}{}", tagged("a", 100), tagged("b", 100))));
}

#[test]
fn spool_reads_present_and_arriving_files_once_with_inotify() {
    present_and_arriving_files(true);
}

#[test]
fn spool_reads_present_and_arriving_files_once_by_polling() {
    present_and_arriving_files(false);
}

/// Opens the reading end of a FIFO without waiting for a writer.
fn open_fifo_reader(p: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .unwrap()
}

#[test]
fn spool_file_half_processed_at_kill_9_is_read_again_in_full_then_deleted() {
    let dir = TempDir::new("spool-kill9");
    let spool = dir.path().join("in");
    std::fs::create_dir_all(&spool).unwrap();
    let lines = numbered(50_000);
    std::fs::write(spool.join("big.log"), &lines).unwrap();
    // The first run writes into a pipe the test stops reading: the drain stalls with most of
    // the file unwritten, so it is half processed when killed.
    let pipe = dir.path().join("out.pipe");
    mkfifo(&pipe);
    let mut reader = open_fifo_reader(&pipe);
    let cfg = spool_config(dir.path(), true, "done = \"delete\"", "out.pipe");
    let mut child = start(&cfg);
    let mut first = Vec::new();
    wait_for("the first lines through the pipe", || {
        let mut buf = [0u8; 65536];
        match reader.read(&mut buf) {
            Ok(n) => first.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading the pipe: {e}"),
        }
        first.iter().filter(|&&c| c == b'\n').count() >= 1_000
    });
    // Its lines are not all written: the file must still be there.
    assert!(spool.join("big.log").exists());
    kill(child.id(), libc::SIGKILL);
    let _ = wait_exit(&mut child);
    drop(reader);
    assert!(spool.join("big.log").exists());
    let first = String::from_utf8(first).unwrap();
    assert!(lines.starts_with(first.trim_end_matches(|c| c != '\n')));

    let out = dir.path().join("out.log");
    let cfg = spool_config(dir.path(), true, "done = \"delete\"", "out.log");
    let mut child = start(&cfg);
    wait_for("the file to be deleted", || !spool.join("big.log").exists());
    // Deleted only once written: every line is already in the output.
    assert_eq!(line_count(&out), 50_000);
    stop(&mut child);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), lines);
}

#[test]
fn spool_sigterm_mid_file_keeps_it_unless_every_line_was_written() {
    let dir = TempDir::new("spool-term");
    let spool = dir.path().join("in");
    std::fs::create_dir_all(&spool).unwrap();
    let lines = numbered(200_000);
    std::fs::write(spool.join("big.log"), &lines).unwrap();
    let out = dir.path().join("out.log");
    let cfg = spool_config(dir.path(), true, "done = \"delete\"", "out.log");
    let mut child = start(&cfg);
    wait_for("the first lines", || line_count(&out) > 0);
    stop(&mut child);
    // Whether the stop came mid-file depends on speed; either way nothing is lost.
    if spool.join("big.log").exists() {
        let before = line_count(&out);
        let mut child = start(&cfg);
        wait_for("the file to be deleted", || !spool.join("big.log").exists());
        stop(&mut child);
        let got = std::fs::read_to_string(&out).unwrap();
        let (first, second) = got.split_at(
            got.match_indices('\n')
                .nth(before.wrapping_sub(1))
                .map_or(0, |(i, _)| i + 1),
        );
        assert!(lines.starts_with(first));
        assert_eq!(second, lines, "the whole file again after the restart");
    } else {
        assert_eq!(std::fs::read_to_string(&out).unwrap(), lines);
    }
}

fn unreadable_files(inotify: bool, with_errors_dir: bool) {
    let dir = TempDir::new("spool-errors");
    let spool = dir.path().join("in");
    let errors = dir.path().join("err");
    let out = dir.path().join("out.log");
    std::fs::create_dir_all(&spool).unwrap();
    // Not a regular file: fails whoever runs the test (root reads a chmod 000 file).
    mkfifo(&spool.join("bad.log"));
    std::fs::write(spool.join("good.log"), "g1\ng2\n").unwrap();
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    if !as_root {
        let locked = spool.join("locked.log");
        std::fs::write(&locked, "secret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let keys = if with_errors_dir {
        "done = \"delete\"\nerrors = \"err\""
    } else {
        "done = \"delete\""
    };
    let cfg = spool_config(dir.path(), inotify, keys, "out.log");
    let mut child = start(&cfg);
    wait_for("the good file", || {
        line_count(&out) == 2 && !spool.join("good.log").exists()
    });
    if with_errors_dir {
        wait_for("the bad file in errors", || errors.join("bad.log").exists());
        assert!(!spool.join("bad.log").exists());
        if !as_root {
            wait_for("the locked file in errors", || {
                errors.join("locked.log").exists()
            });
        }
    }
    // A later file goes through: the spool went on, and several scans passed over the bad
    // file left in place.
    std::fs::write(spool.join("later.log"), "l1\n").unwrap();
    wait_for("the later file", || {
        line_count(&out) == 3 && !spool.join("later.log").exists()
    });
    let err = stop(&mut child);
    let failures = if as_root { 1 } else { 2 };
    assert_eq!(
        err.matches("cannot read spool file").count(),
        failures,
        "logged once per file: {err}"
    );
    assert!(err.contains("bad.log"), "{err}");
    assert!(
        err.contains(&format!(
            "cog=spool#1 in=0 out=3 dropped=0 errors={failures}"
        )),
        "{err}"
    );
    if !with_errors_dir {
        assert!(spool.join("bad.log").exists());
        assert!(!errors.exists());
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "g1\ng2\nl1\n");
}

#[test]
fn spool_moves_unreadable_files_to_errors() {
    unreadable_files(true, true);
}

#[test]
fn spool_moves_unreadable_files_to_errors_by_polling() {
    unreadable_files(false, true);
}

#[test]
fn spool_without_errors_dir_leaves_unreadable_files_and_logs_once() {
    unreadable_files(false, false);
}

#[test]
fn spool_start_and_config_errors_name_the_culprit() {
    let dir = TempDir::new("spool-config");
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("plain"), "").unwrap();
    // A done directory that cannot be created: runtime error naming it.
    let cfg = spool_config(dir.path(), true, "done = \"move:plain/done\"", "out.log");
    let res = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(err.contains("plain/done"), "{err}");
    // A missing spool directory: found before anything starts, as `check` finds it.
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"spool\"\ndir = \"nope\"\ndone = \"delete\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n",
    );
    let res = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains("nope"), "{err}");
    // Bad `done` and `pattern` values are configuration errors.
    for (keys, key) in [
        ("done = \"archive\"", "\"done\""),
        ("done = \"delete\"\npattern = \"[ab\"", "\"pattern\""),
        ("done = \"delete\"\npattern = \"a/b\"", "\"pattern\""),
    ] {
        let cfg = spool_config(dir.path(), true, keys, "out.log");
        let res = deadbeat()
            .args(["check", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{keys}: {err}");
        assert!(err.contains(key) && err.contains("spool"), "{keys}: {err}");
    }
}
