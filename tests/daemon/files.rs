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
    let res = run_ok(&cfg);
    let err = String::from_utf8_lossy(&res.stderr);
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(got, format!("{lines}b1\nb2\n"));
    // The missing file is reported and counted, not fatal.
    assert!(
        err.contains("cannot open input file") && err.contains("missing.log"),
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
