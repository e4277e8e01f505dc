//! `lookup` in the daemon on real files: a table replaced by rename-over while lines
//! flow through stdin is picked up without a restart, a bad replacement is logged with
//! file:line and the old table kept, and a bad table at start fails the run naming it.

use std::io::Write;
use std::path::Path;

use super::{run_with_stdin, spawn_with_stdin, stderr_of, wait_exit, wait_for, write_config};
use crate::engine::TempDir;

fn config(dir: &Path) -> std::path::PathBuf {
    write_config(
        dir,
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"lookup\"\npath = \"users.csv\"\nkey = \"user\"\n\
         field = \"message\"\ntarget = \"u\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"json\"\n",
    )
}

fn out(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("out.log")).unwrap_or_default()
}

fn replace(dir: &Path, text: &str) {
    let tmp = dir.join("users.csv.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("users.csv")).unwrap();
}

#[test]
fn a_replaced_table_is_used_without_a_restart_and_a_bad_one_is_refused() {
    let dir = TempDir::new("daemon-lookup");
    std::fs::write(dir.path().join("users.csv"), "user,team\nann,red\n").unwrap();
    let cfg = config(dir.path());
    let (mut child, mut stdin) = spawn_with_stdin(&cfg);
    writeln!(stdin, "ann").unwrap();
    stdin.flush().unwrap();
    wait_for("the first line", || out(dir.path()).contains("\"red\""));

    // A bad replacement: the old table stays. (Half a second of lines lets the refused
    // reload end before the next replacement; the counters at the end check it did.)
    replace(dir.path(), "user,team\nann,blue\nann,green\n");
    let mut n = 0;
    wait_for("the second line with the old table", || {
        n += 1;
        writeln!(stdin, "ann").unwrap();
        stdin.flush().unwrap();
        out(dir.path()).lines().count() >= 2 && n > 100
    });
    assert!(!out(dir.path()).contains("blue"), "{}", out(dir.path()));

    // A good one is picked up while lines keep coming.
    replace(dir.path(), "user,team\nann,blue\n");
    wait_for("a line with the new table", || {
        writeln!(stdin, "ann").unwrap();
        stdin.flush().unwrap();
        out(dir.path()).contains("\"blue\"")
    });
    drop(stdin);
    let status = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(status.success(), "{err}");
    let want = format!(
        "{}:3: duplicate key \\\"ann\\\" (first on line 2)",
        dir.path().join("users.csv").display()
    );
    assert!(
        err.contains("lookup table not reloaded") && err.contains(&want),
        "{err}"
    );
    assert!(err.contains("reloads=1 reload_failures=1"), "{err}");
    // Every line got a team: none lost, none without.
    let text = out(dir.path());
    assert!(text.lines().all(|l| l.contains("\"team\"")), "{text}");
}

#[test]
fn a_bad_table_at_start_fails_the_run_naming_file_and_line() {
    let dir = TempDir::new("daemon-lookup-bad");
    std::fs::write(dir.path().join("users.csv"), "user,team\nann,red\nbob\n").unwrap();
    let cfg = config(dir.path());
    let (status, _, err) = run_with_stdin(&cfg, b"ann\n");
    assert!(!status.success());
    let want = format!(
        "{}:3: 1 cells where the header has 2",
        dir.path().join("users.csv").display()
    );
    assert!(err.contains(&want), "{err}");
}
