//! Every cog has an id (`name`, or `TYPE#N` with N its 1-based position in its train) that
//! logs, counters and errors use, so two cogs of one type can be told apart.

use super::*;

fn stdin_train(cogs: &str) -> String {
    format!("[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n{cogs}")
}

#[test]
fn counters_and_logs_name_each_cog() {
    let dir = TempDir::new("ids");
    let cfg = write_config(
        dir.path(),
        &stdin_train(
            "[[train.cog]]\ntype = \"json_parse\"\n\
             [[train.cog]]\ntype = \"filter\"\nkeep = 'a exists'\n\
             [[train.cog]]\ntype = \"filter\"\nname = \"no-b\"\ndrop = 'b exists'\n\
             [[train.cog]]\ntype = \"stdout\"\n",
        ),
    );
    let (st, out, err) =
        run_with_stdin(&cfg, b"{\"a\":1}\n{\"a\":1,\"b\":2}\n{\"c\":3}\nnot json\n");
    assert!(st.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out).lines().count(), 1, "{err}");
    for want in [
        "final counters train=t cog=stdin#1 in=0 out=4 ",
        "final counters train=t cog=json_parse#2 in=4 out=4 dropped=0 errors=1",
        "final counters train=t cog=filter#3 in=4 out=2 dropped=2 ",
        "final counters train=t cog=no-b in=2 out=1 dropped=1 ",
        "final counters train=t cog=stdout#5 in=1 out=0 ",
    ] {
        assert!(err.contains(want), "wanted {want:?} in:\n{err}");
    }
    // A cog's own log lines carry its train and id, once.
    let warn = err
        .lines()
        .find(|l| l.contains("WARN failed on a record"))
        .unwrap_or_else(|| panic!("no warning in:\n{err}"));
    assert!(warn.ends_with("train=t cog=json_parse#2"), "{warn}");
    assert_eq!(warn.matches("cog=").count(), 1, "{warn}");
}

#[test]
fn sigusr1_counters_name_each_cog() {
    let dir = TempDir::new("ids-usr1");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[log]\ntarget = \"file:deadbeat.log\"\n{}",
            stdin_train(
                "[[train.cog]]\ntype = \"pass\"\n[[train.cog]]\ntype = \"pass\"\n\
                 [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n"
            )
        ),
    );
    let log = dir.path().join("deadbeat.log");
    let (mut child, mut stdin) = spawn_with_stdin(&cfg);
    stdin.write_all(b"one\n").unwrap();
    wait_for("a line written", || {
        line_count(&dir.path().join("out.log")) == 1
    });
    kill(child.id(), libc::SIGUSR1);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("counters in the log", || {
        read_log().contains("cog=file_out#4")
    });
    drop(stdin);
    assert!(wait_exit(&mut child).success());
    let text = read_log();
    for want in [
        "counters train=t cog=pass#2 in=1 out=1 ",
        "counters train=t cog=pass#3 in=1 out=1 ",
    ] {
        assert!(text.contains(want), "wanted {want:?} in:\n{text}");
    }
}

#[test]
fn names_are_unique_in_a_train_and_errors_use_them() {
    let dir = TempDir::new("ids-check");
    let check = |text: &str| {
        let cfg = write_config(dir.path(), text);
        let out = Command::new(BIN)
            .args(["check", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check(&stdin_train(
        "[[train.cog]]\ntype = \"pass\"\nname = \"x\"\n\
         [[train.cog]]\ntype = \"stdout\"\nname = \"x\"\n",
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            ":10:8: train \"t\", cog \"x\" (stdout#3), key \"name\": cog pass#2 is already named \"x\""
        ),
        "{err}"
    );
    // A name that is some other cog's default id is a duplicate too.
    let (code, err) = check(&stdin_train(
        "[[train.cog]]\ntype = \"pass\"\nname = \"stdin#1\"\n[[train.cog]]\ntype = \"stdout\"\n",
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("already named \"stdin#1\""), "{err}");
    // The same name in two trains is fine.
    let two = stdin_train("[[train.cog]]\ntype = \"stdout\"\nname = \"out\"\n")
        + "[[train]]\nname = \"u\"\n[[train.cog]]\ntype = \"stdin\"\n\
           [[train.cog]]\ntype = \"stdout\"\nname = \"out\"\n";
    let (code, err) = check(&two);
    assert_eq!(code, Some(0), "{err}");
    // Errors name a named cog by its name, with type and 1-based position.
    let (code, err) = check(&stdin_train(
        "[[train.cog]]\ntype = \"stdout\"\nname = \"screen\"\nformat = \"xml\"\n",
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("train \"t\", cog \"screen\" (stdout#2), key \"format\""),
        "{err}"
    );
}

#[test]
fn a_start_failure_names_the_cog_from_one() {
    let dir = TempDir::new("ids-start");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"tcp_in\"\nlisten = \"127.0.0.1:{port}\"\n\
             [[train.cog]]\ntype = \"stdout\"\n"
        ),
    );
    let out = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("train \"t\", cog tcp_in#2: start failed"),
        "{err}"
    );
}
