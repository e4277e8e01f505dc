//! Trains that would lose records without a word are configuration errors: every record
//! must reach a drain (`drop` when ending there is meant), and every cog must be reachable.

use super::*;

fn cog(ty: &str, keys: &str) -> String {
    format!("[[train.cog]]\ntype = \"{ty}\"\n{keys}")
}

fn train(name: &str, cogs: &[String]) -> String {
    format!("[[train]]\nname = \"{name}\"\n{}", cogs.concat())
}

fn check(text: &str) -> (i32, String) {
    let dir = TempDir::new("topology");
    std::fs::write(dir.path().join("in.log"), "a\nb\n").unwrap();
    let cfg = write_config(dir.path(), text);
    let out = Command::new(BIN)
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stdin() -> String {
    cog("stdin", "")
}
fn stdout() -> String {
    cog("stdout", "")
}
fn file_out(path: &str) -> String {
    cog("file_out", &format!("path = \"{path}\"\n"))
}

#[test]
fn records_that_reach_no_drain_are_refused() {
    let cases: Vec<(String, &str)> = vec![
        // No drain at all.
        (
            train("t", &[stdin(), cog("pass", "")]),
            "train \"t\", cog pass#2: records from cog stdin#1 reach no drain",
        ),
        // Two drains in a row: the second never receives anything.
        (
            train("t", &[stdin(), stdout(), file_out("o.log")]),
            "train \"t\", cog file_out#3: no record ever reaches this cog: cog stdout#2 \
             before it is a drain",
        ),
        // A supply after the drain: its lines fall off the end.
        (
            train(
                "t",
                &[stdin(), stdout(), cog("file_in", "paths = [\"in.log\"]\n")],
            ),
            "train \"t\", cog file_in#3: records from cog file_in#3 reach no drain",
        ),
        // A transform after the drain.
        (
            train("t", &[stdin(), stdout(), cog("pass", "")]),
            "cog pass#3: no record ever reaches this cog",
        ),
        // A transform before the first supply.
        (
            train("t", &[cog("pass", ""), stdin(), stdout()]),
            "cog pass#1: no record ever reaches this cog: no supply comes before it",
        ),
        // What a conditional route does not send continues, and falls off the end.
        (
            train(
                "t",
                &[stdin(), cog("route", "train = \"u\"\nwhen = 'a exists'\n")],
            ) + &train("u", &[stdout()]),
            "train \"t\", cog route#2: records from cog stdin#1 reach no drain",
        ),
        // A tee's originals continue.
        (
            train("t", &[stdin(), cog("tee", "train = \"u\"\n")]) + &train("u", &[stdout()]),
            "train \"t\", cog tee#2: records from cog stdin#1 reach no drain",
        ),
        // A train fed by another must bring what it receives to a drain too.
        (
            train("t", &[stdin(), cog("route", "train = \"u\"\n")])
                + &train("u", &[cog("pass", "")]),
            "train \"u\", cog pass#1: records sent from other trains reach no drain",
        ),
        // Nothing follows an unconditional route.
        (
            train("t", &[stdin(), cog("route", "train = \"u\"\n"), stdout()])
                + &train("u", &[stdout()]),
            "train \"t\", cog stdout#3: no record ever reaches this cog: cog route#2 \
             before it sends every record to another train",
        ),
    ];
    for (text, want) in &cases {
        let (code, err) = check(text);
        assert_eq!(code, 2, "config:\n{text}\nstderr: {err}");
        assert!(
            err.contains(want),
            "config:\n{text}\nwanted {want:?} in:\n{err}"
        );
    }
}

#[test]
fn trains_whose_records_all_end_somewhere_are_accepted() {
    let cases: Vec<String> = vec![
        train("t", &[stdin(), cog("pass", ""), stdout()]),
        // Two flows in one train, each with its drain.
        train(
            "t",
            &[
                stdin(),
                stdout(),
                cog("file_in", "paths = [\"in.log\"]\n"),
                file_out("o.log"),
            ],
        ),
        // Ending on purpose.
        train("t", &[stdin(), cog("drop", "")]),
        train(
            "t",
            &[
                stdin(),
                cog("route", "train = \"u\"\nwhen = 'a exists'\n"),
                cog("drop", ""),
            ],
        ) + &train("u", &[stdout()]),
        // An unconditional route ends the train's flow.
        train("t", &[stdin(), cog("route", "train = \"u\"\n")]) + &train("u", &[stdout()]),
        // A fed train with a supply of its own.
        train("t", &[stdin(), cog("route", "train = \"u\"\n")])
            + &train("u", &[cog("file_in", "paths = [\"in.log\"]\n"), stdout()]),
    ];
    for text in &cases {
        let (code, err) = check(text);
        assert_eq!(code, 0, "config:\n{text}\nstderr: {err}");
    }
}

#[test]
fn run_refuses_a_train_without_a_drain_before_reading() {
    let dir = TempDir::new("topology-run");
    let cfg = write_config(dir.path(), &train("t", &[stdin()]));
    let out = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains("reach no drain"), "{err}");
}

#[test]
fn drop_acknowledges_and_counts_what_it_ends() {
    let dir = TempDir::new("drop");
    let cfg = write_config(dir.path(), &train("t", &[stdin(), cog("drop", "")]));
    let (st, out, err) = run_with_stdin(&cfg, b"one\ntwo\nthree\n");
    assert!(st.success(), "{err}");
    assert!(out.is_empty());
    let counters = err
        .lines()
        .find(|l| l.contains("final counters") && l.contains("cog=drop"))
        .unwrap_or_else(|| panic!("no counters for drop in:\n{err}"));
    assert!(counters.contains("in=3 out=0 dropped=3"), "{counters}");
}
