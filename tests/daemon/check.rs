//! `check` reports every error of a configuration at once, and what `run` would fail on at
//! once: output, log and state directories that are missing or not writable.

use super::*;

fn check_in(dir: &Path, text: &str) -> (i32, String) {
    let cfg = write_config(dir, text);
    let out = Command::new(BIN)
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const STDIN_STDOUT: &str =
    "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n[[train.cog]]\ntype = \"stdout\"\n";

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn check_reports_every_error_in_file_order() {
    let dir = TempDir::new("check-all");
    let text = "[log]\nlevel = \"loud\"\nformat = \"xml\"\ncolour = 1\n\
                [[train]]\nname = \"a\"\n\
                [[train.cog]]\ntype = \"stdin\"\nmax_line_bytes = true\nshade = \"red\"\n\
                [[train.cog]]\ntype = \"stdout\"\nformat = \"xml\"\n\
                [[train]]\nname = \"b\"\n\
                [[train.cog]]\ntype = \"stdin\"\n\
                [[train.cog]]\ntype = \"filter\"\nkeep = 'a >> 1'\n\
                [[train.cog]]\ntype = \"file_out\"\n";
    let (code, err) = check_in(dir.path(), text);
    assert_eq!(code, 2, "{err}");
    let want = [
        ":2:9: key \"level\": [log] expected error|warn|info|debug|trace",
        ":3:10: key \"format\": [log] expected \"text\" or \"json\"",
        ":4:1: key \"colour\": unknown key in [log]",
        ":9:18: train \"a\", cog stdin#1, key \"max_line_bytes\": expected a size",
        ":10:1: train \"a\", cog stdin#1, key \"shade\": unknown key",
        ":13:10: train \"a\", cog stdout#2, key \"format\": expected one of",
        ":20:12: train \"b\", cog filter#2, key \"keep\": in the condition",
        ":21:1: train \"b\", cog file_out#3: missing required key \"path\"",
    ];
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), want.len(), "{err}");
    for (line, want) in lines.iter().zip(want) {
        assert!(
            line.contains(want),
            "wanted {want:?} in {line:?}\nall:\n{err}"
        );
    }
}

#[test]
fn check_finds_output_directories_run_would_fail_on() {
    let dir = TempDir::new("check-out");
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    let with_out = |keys: &str| {
        format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"file_out\"\n{keys}"
        )
    };
    // A missing directory, not to be created.
    let (code, err) = check_in(dir.path(), &with_out("path = \"no/such/out.log\"\n"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(":7:8: train \"t\", cog file_out#2, key \"path\": directory ")
            && err.contains("no/such does not exist (create it, or set create_dirs = true)"),
        "{err}"
    );
    // The same, created by the cog: fine.
    let (code, err) = check_in(
        dir.path(),
        &with_out("path = \"no/such/out.log\"\ncreate_dirs = true\n"),
    );
    assert_eq!(code, 0, "{err}");
    // A templated path is checked up to its first placeholder.
    let (code, err) = check_in(dir.path(), &with_out("path = \"out/{message}.log\"\n"));
    assert_eq!(code, 0, "{err}");
    let (code, err) = check_in(dir.path(), &with_out("path = \"a-file/{message}.log\"\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a-file/: Not a directory"), "{err}");
    // The output is a directory.
    let (code, err) = check_in(dir.path(), &with_out("path = \".\"\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a directory"), "{err}");
    if !running_as_root() {
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let mut perm = std::fs::metadata(&ro).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o555);
        std::fs::set_permissions(&ro, perm).unwrap();
        let (code, err) = check_in(dir.path(), &with_out("path = \"ro/out.log\"\n"));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("cannot create files in"), "{err}");
    }
}

#[test]
fn check_finds_a_missing_spool_directory() {
    let dir = TempDir::new("check-spool");
    let text = "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"spool\"\ndir = \"incoming\"\n\
                done = \"delete\"\n[[train.cog]]\ntype = \"stdout\"\n";
    let (code, err) = check_in(dir.path(), text);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(":5:7: train \"t\", cog spool#1, key \"dir\": directory ")
            && err.ends_with("incoming does not exist\n"),
        "{err}"
    );
    std::fs::create_dir(dir.path().join("incoming")).unwrap();
    assert_eq!(check_in(dir.path(), text), (0, String::new()));
}

#[test]
fn check_and_run_find_a_missing_log_directory() {
    let dir = TempDir::new("check-log");
    let text = format!("[log]\ntarget = \"file:logs/deadbeat.log\"\n{STDIN_STDOUT}");
    let (code, err) = check_in(dir.path(), &text);
    assert_eq!(code, 2, "{err}");
    let want = ":2:10: key \"target\": [log] directory ";
    assert!(
        err.contains(want) && err.contains("logs does not exist"),
        "{err}"
    );
    // `run` refuses it the same way, before starting anything.
    let cfg = write_config(dir.path(), &text);
    let out = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run_err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{run_err}");
    assert!(run_err.contains(want), "{run_err}");
}

#[test]
fn the_state_directory_is_made_only_for_cogs_that_keep_checkpoints() {
    let dir = TempDir::new("check-state");
    let cfg = write_config(dir.path(), STDIN_STDOUT);
    let (st, out, err) = run_with_stdin(&cfg, b"x\n");
    assert!(st.success(), "{err}");
    assert_eq!(out, b"x\n");
    assert!(
        !dir.path().join("var").exists(),
        "no cog keeps checkpoints: no var/state"
    );
    // A state directory that cannot be made is found by `check` when a cog needs it.
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    let tail = "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"tail\"\npaths = [\"*.log\"]\n\
                [[train.cog]]\ntype = \"stdout\"\n";
    let (code, err) = check_in(
        dir.path(),
        &format!("[state]\ndir = \"a-file/state\"\n{tail}"),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(":2:7: key \"dir\": [state] the state directory (checkpoints): "),
        "{err}"
    );
    let (code, err) = check_in(
        dir.path(),
        &format!("[state]\ndir = \"a-file/state\"\n{STDIN_STDOUT}"),
    );
    assert_eq!(code, 0, "no cog needs it: {err}");
}
