//! `file_in` → `file_out` in batch mode.

use super::*;

#[test]
fn file_in_to_file_out_keeps_every_line_in_order() {
    let dir = TempDir::new("batch");
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.log");
    let out = dir.path().join("out.log");
    let lines = numbered(100_000);
    std::fs::write(&a, &lines).unwrap();
    // A second file without a final newline: its last line still arrives.
    std::fs::write(&b, "b1\r\nb2").unwrap();
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"file_in\"\npaths = [\"a.log\", \"missing.log\", \"b.log\"]\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n",
    );
    let res = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(got, format!("{lines}b1\nb2\n"));
    // The missing file is reported and counted; the others are read, and the run fails.
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot read input") && err.contains("missing.log"),
        "{err}"
    );
    assert!(
        err.contains("cog=file_in#1 in=0 out=100002 dropped=0 errors=1"),
        "{err}"
    );
    assert!(err.contains("cog=file_out#2 in=100002 out=0"), "{err}");
}

#[test]
fn file_out_json_carries_path_and_offset() {
    let dir = TempDir::new("meta");
    std::fs::write(dir.path().join("in.log"), "first\nsecond\n").unwrap();
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"file_in\"\npaths = [\"in.log\"]\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.json\"\nformat = \"json\"\n",
    );
    run_ok(&cfg);
    let got = std::fs::read_to_string(dir.path().join("out.json")).unwrap();
    let path = dir.path().join("in.log");
    let path = path.to_str().unwrap();
    assert_eq!(
        got,
        format!(
            "{{\"message\":\"first\",\"path\":\"{path}\",\"offset\":0}}\n{{\"message\":\"second\",\"path\":\"{path}\",\"offset\":6}}\n"
        )
    );
}

#[test]
fn a_missing_output_directory_is_a_config_error_with_the_path() {
    let dir = TempDir::new("unwritable");
    std::fs::write(dir.path().join("in.log"), "x\n").unwrap();
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"file_in\"\npaths = [\"in.log\"]\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"no/such/dir/out.log\"\n",
    );
    let res = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    // Found before anything starts, as `check` finds it.
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("no/such/dir") && err.contains("file_out#2"),
        "{err}"
    );
}

#[test]
fn a_torn_last_line_is_ended_before_appending() {
    let dir = TempDir::new("torn");
    std::fs::write(dir.path().join("in.log"), "one\ntwo\n").unwrap();
    // What a process killed in the middle of a write leaves behind.
    std::fs::write(dir.path().join("out.log"), "zero\nhalf a li").unwrap();
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"file_in\"\npaths = [\"in.log\"]\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n",
    );
    run_ok(&cfg);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.log")).unwrap(),
        "zero\nhalf a li\none\ntwo\n"
    );
}

/// A `file_in` config reading `paths` (TOML array items) with `keys`, into out.log.
fn file_in_config(dir: &Path, paths: &str, keys: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"file_in\"\npaths = [{paths}]\n{keys}\n\
             [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n"
        ),
    )
}

#[test]
fn missing_input_fails_the_run_unless_told_otherwise() {
    let dir = TempDir::new("missing-in");
    // Every input missing or unreadable: exit 1, naming them.
    std::fs::create_dir(dir.path().join("a_dir")).unwrap();
    let cfg = file_in_config(dir.path(), "\"nope.log\", \"a_dir/nope2.log\"", "");
    let res = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nope.log") && err.contains("nope2.log") && err.contains("the run failed"),
        "{err}"
    );
    // `warn`: logged, the run succeeds.
    std::fs::write(dir.path().join("here.log"), "x\n").unwrap();
    let cfg = file_in_config(
        dir.path(),
        "\"nope.log\", \"here.log\"",
        "missing = \"warn\"",
    );
    let res = run_ok(&cfg);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("WARN") && err.contains("nope.log"), "{err}");
    // `ignore`: not a word at the default level.
    let cfg = file_in_config(
        dir.path(),
        "\"nope.log\", \"here.log\"",
        "missing = \"ignore\"",
    );
    let res = run_ok(&cfg);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!err.contains("nope.log"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.log")).unwrap(),
        "x\nx\n"
    );
}

#[test]
fn tail_without_follow_applies_missing_and_with_follow_waits() {
    let dir = TempDir::new("missing-tail");
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    std::fs::write(dir.path().join("logs/here.log"), "x\n").unwrap();
    let cfg = |keys: &str| {
        // Each run its own state: no checkpoint of a previous run.
        let state = keys.len();
        write_config(
            dir.path(),
            &format!(
                "[state]\ndir = \"st{state}\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"tail\"\n\
                 paths = [\"logs/here.log\", \"logs/nope.log\", \"nodir/*.log\"]\n{keys}\n\
                 [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n"
            ),
        )
    };
    let res = deadbeat()
        .args(["run", cfg("follow = false").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(
        err.contains("logs/nope.log") && err.contains("nodir/*.log"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.log")).unwrap(),
        "x\n"
    );
    let res = run_ok(&cfg("follow = false\nmissing = \"warn\""));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("WARN") && err.contains("logs/nope.log"),
        "{err}"
    );
    // Following, a missing file is waited for: said once, at info level.
    std::fs::remove_file(dir.path().join("out.log")).unwrap();
    let mut child = deadbeat()
        .args(["run", cfg("start_at = \"beginning\"").to_str().unwrap()])
        .spawn()
        .unwrap();
    let out = dir.path().join("out.log");
    wait_for("the present file", || line_count(&out) >= 1);
    kill(child.id(), libc::SIGTERM);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "{err}");
    assert_eq!(err.matches("waiting for it").count(), 2, "{err}");
    assert!(
        err.contains("logs/nope.log") && !err.contains("ERRO"),
        "{err}"
    );
}
