//! `check`, `cogs`, stdin → stdout formats, the bundled quick start, the cog reference.

use super::*;

const STDIN_TO_STDOUT: &str =
    "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n[[train.cog]]\ntype = \"stdout\"\n";

#[test]
fn stdin_to_stdout_raw_keeps_bytes() {
    let dir = TempDir::new("raw");
    let cfg = write_config(dir.path(), &format!("{STDIN_TO_STDOUT}format = \"raw\"\n"));
    let (st, out, err) = run_with_stdin(&cfg, b"one\r\ntwo\n\xff\xfe bytes\nlast without newline");
    assert!(st.success(), "{err}");
    assert_eq!(out, b"one\ntwo\n\xff\xfe bytes\nlast without newline\n");
}

#[test]
fn stdin_to_stdout_json_is_always_valid() {
    let dir = TempDir::new("json");
    let cfg = write_config(dir.path(), &format!("{STDIN_TO_STDOUT}format = \"json\"\n"));
    let (st, out, err) = run_with_stdin(
        &cfg,
        b"plain\nquote \" back \\ tab\t\nbad \xc3\x28 utf8\nctl \x01\x1f\n",
    );
    assert!(st.success(), "{err}");
    let text = String::from_utf8(out).expect("json output is UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"message":"plain"}"#,
            r#"{"message":"quote \" back \\ tab\t"}"#,
            "{\"message\":\"bad \u{fffd}( utf8\"}",
            r#"{"message":"ctl \u0001\u001f"}"#,
        ]
    );
}

#[test]
fn stdin_to_stdout_template() {
    let dir = TempDir::new("template");
    let cfg = write_config(
        dir.path(),
        &format!(
            "{STDIN_TO_STDOUT}format = \"template\"\ntemplate = \"<{{message}}> {{missing}}|{{{{x}}}}\"\n"
        ),
    );
    let (st, out, err) = run_with_stdin(&cfg, b"a\nb\n");
    assert!(st.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "<a> |{x}\n<b> |{x}\n");
}

#[test]
fn over_long_lines_are_cut_counted_and_flagged() {
    let dir = TempDir::new("long");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\nmax_line_bytes = 8\n[[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n",
    );
    let mut input = b"short\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 1 << 20));
    input.extend_from_slice(b"\nafter\n");
    let (st, out, err) = run_with_stdin(&cfg, &input);
    assert!(st.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "{\"message\":\"short\"}\n{\"message\":\"xxxxxxxx\",\"truncated\":true}\n{\"message\":\"after\"}\n"
    );
    assert!(err.contains("line longer than max_line_bytes cut"), "{err}");
    assert!(
        err.contains("cog=stdin#1 in=0 out=3 dropped=0 errors=1"),
        "{err}"
    );
}

fn check(text: &str) -> (i32, String, String) {
    let dir = TempDir::new("check");
    let cfg = write_config(dir.path(), text);
    let out = Command::new(BIN)
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_good_config() {
    let (code, out, err) = check(&format!("{STDIN_TO_STDOUT}format = \"json\"\n"));
    assert_eq!((code, out.as_str()), (0, "ok\n"), "{err}");
}

#[test]
fn check_rejects_broken_configs_naming_line_and_key() {
    let cases: &[(&str, &str)] = &[
        // unknown cog
        (
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdn\"\n",
            ":4:8: train \"t\", cog stdn#1, key \"type\": unknown cog type \"stdn\"",
        ),
        // unknown key
        (
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n[[train.cog]]\ntype = \"stdout\"\nformt = \"json\"\n",
            ":7:1: train \"t\", cog stdout#2, key \"formt\": unknown key",
        ),
        // wrong type
        (
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\nmax_line_bytes = true\n[[train.cog]]\ntype = \"stdout\"\n",
            ":5:18: train \"t\", cog stdin#1, key \"max_line_bytes\": expected a size",
        ),
        // bad value
        (
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n[[train.cog]]\ntype = \"stdout\"\nformat = \"xml\"\n",
            ":7:10: train \"t\", cog stdout#2, key \"format\": expected one of \"raw\", \"json\", \"template\", found \"xml\"",
        ),
        // bad TOML
        ("[[train]]\nname = \"t\n", ":2:"),
        // missing required key
        (
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"file_in\"\n[[train.cog]]\ntype = \"stdout\"\n",
            ":3:1: train \"t\", cog file_in#1: missing required key \"paths\"",
        ),
    ];
    for (text, want) in cases {
        let (code, out, err) = check(text);
        assert_eq!(code, 2, "config:\n{text}\nstdout: {out}\nstderr: {err}");
        assert!(
            err.contains(want),
            "config:\n{text}\nwanted {want:?} in:\n{err}"
        );
        assert_eq!(
            err.lines().count(),
            1,
            "one line a person can act on: {err}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["run", "/nonexistent/deadbeat.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/deadbeat.toml"));
}

#[test]
fn unknown_flags_are_named_with_a_suggestion() {
    let dir = TempDir::new("flags");
    let cfg = write_config(dir.path(), STDIN_TO_STDOUT);
    let cfg = cfg.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", cfg, "--deamon"],
            "unknown option \"--deamon\" for `run` (did you mean \"--daemon\"?)",
        ),
        (
            &["run", "--daemno", cfg],
            "unknown option \"--daemno\" for `run` (did you mean \"--daemon\"?)",
        ),
        (
            &["run", cfg, "--verbose"],
            "unknown option \"--verbose\" for `run` (it takes: --daemon, --quiet)",
        ),
        (
            &["check", cfg, "--strict"],
            "unknown option \"--strict\": `check` takes no options",
        ),
        (
            &["cogs", "--markdwon"],
            "unknown option \"--markdwon\" for `cogs` (did you mean \"--markdown\"?)",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(BIN).args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: wanted {want:?} in:\n{err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing runs");
    }
}

#[test]
fn cogs_lists_and_describes() {
    let out = Command::new(BIN).arg("cogs").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["stdin", "stdout", "file_in", "file_out"] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{text}"
        );
    }
    let out = Command::new(BIN)
        .args(["cogs", "file_out"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("path (path, required)"), "{text}");
    let out = Command::new(BIN).args(["cogs", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cog_reference_in_docs_is_current() {
    let out = Command::new(BIN)
        .args(["cogs", "--markdown"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cogs.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == String::from_utf8_lossy(&out.stdout),
        "docs/cogs.md is stale: regenerate it with `cargo run -- cogs --markdown > docs/cogs.md`"
    );
}

#[test]
fn quickstart_runs_and_writes_json() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new("quickstart");
    // The bundled config with its output and state moved into the temp dir.
    let text = std::fs::read_to_string(root.join("config/quickstart.toml"))
        .unwrap()
        .replace(
            "../var/quickstart.json",
            dir.path().join("out.json").to_str().unwrap(),
        )
        .replace("../var/state", dir.path().join("state").to_str().unwrap())
        .replace(
            "data/access.log",
            root.join("config/data/access.log").to_str().unwrap(),
        );
    let cfg = write_config(dir.path(), &text);
    let out = Command::new(BIN)
        .args(["run", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let input = std::fs::read_to_string(root.join("config/data/access.log")).unwrap();
    let output = std::fs::read_to_string(dir.path().join("out.json")).unwrap();
    assert_eq!(output.lines().count(), input.lines().count());
    let first = input.lines().next().unwrap().replace('"', "\\\"");
    assert!(
        output.starts_with(&format!("{{\"message\":\"{first}\"")),
        "{output:.300}"
    );
}
