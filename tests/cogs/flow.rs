//! `flow` cogs (`filter`, `route`, `tee`) driven through the real binary with configs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");

/// Ten lines; every third is an error, and the offsets are 0, 10, 20...
const INPUT: &str = "GET /a ok\nGET /b ok\nERROR 1 \nPOST /c  \nGET /d ok\nERROR 2 \n\
                     GET /e ok\nPUT /f ok\nERROR 3 \nGET /g ok\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn deadbeat(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Runs `config` (in a directory holding `in.log`) to the end; returns stderr.
fn run_ok(dir: &TempDir, config: &str) -> String {
    write(dir.path(), "in.log", INPUT);
    let cfg = write(dir.path(), "deadbeat.toml", config);
    let res = deadbeat(&["run", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&res.stderr).into_owned();
    assert!(res.status.success(), "exit {:?}: {err}", res.status);
    err
}

/// Runs `deadbeat check` on `config`; returns (exit code, stderr).
fn check(dir: &TempDir, config: &str) -> (Option<i32>, String) {
    let cfg = write(dir.path(), "deadbeat.toml", config);
    let res = deadbeat(&["check", cfg.to_str().unwrap()]);
    (
        res.status.code(),
        String::from_utf8_lossy(&res.stderr).into_owned(),
    )
}

fn read(dir: &TempDir, name: &str) -> String {
    std::fs::read_to_string(dir.path().join(name)).unwrap_or_default()
}

fn lines_where(pred: impl Fn(usize, &str) -> bool) -> String {
    let mut s = String::new();
    let mut offset = 0;
    for l in INPUT.lines() {
        if pred(offset, l) {
            s.push_str(l);
            s.push('\n');
        }
        offset += l.len() + 1;
    }
    s
}

fn train(name: &str, cogs: &str) -> String {
    format!("[[train]]\nname = \"{name}\"\n{cogs}")
}

const FILE_IN: &str = "[[train.cog]]\ntype = \"file_in\"\npaths = [\"in.log\"]\n";

fn cog(ty: &str, keys: &str) -> String {
    format!("[[train.cog]]\ntype = \"{ty}\"\n{keys}")
}

fn file_out(path: &str) -> String {
    cog("file_out", &format!("path = \"{path}\"\n"))
}

#[test]
fn filter_keeps_and_drops_and_counts_what_it_drops() {
    let dir = TempDir::new("flow-filter");
    let config = [
        train(
            "keep",
            &[
                FILE_IN,
                &cog(
                    "filter",
                    "keep = 'message contains \"ERROR\" or (offset >= 60 and not path == \"x\")'\n",
                ),
                &file_out("keep.out"),
            ]
            .concat(),
        ),
        train(
            "drop",
            &[
                FILE_IN,
                &cog(
                    "filter",
                    "drop = 'offset < 30 or message in [\"POST /c  \"]'\n",
                ),
                &file_out("drop.out"),
            ]
            .concat(),
        ),
    ]
    .concat();
    let err = run_ok(&dir, &config);
    let keep = lines_where(|o, l| l.contains("ERROR") || o >= 60);
    assert_eq!(read(&dir, "keep.out"), keep);
    let drop = lines_where(|o, l| !(o < 30 || l == "POST /c  "));
    assert_eq!(read(&dir, "drop.out"), drop);
    // Counted as dropped (and acknowledged: the run ends, nothing waits for them).
    assert!(
        err.contains(&format!(
            "cog=filter#2 in=10 out={} dropped={} errors=0",
            keep.lines().count(),
            10 - keep.lines().count()
        )),
        "{err}"
    );
    assert!(
        err.contains("cog=filter#2 in=10 out=6 dropped=4 errors=0"),
        "{err}"
    );
}

#[cfg(feature = "regex")]
#[test]
fn filter_matches_a_regular_expression() {
    let dir = TempDir::new("flow-matches");
    let config = train(
        "t",
        &[
            FILE_IN,
            &cog("filter", "keep = 'message matches \"^GET /[a-d] \"'\n"),
            &file_out("get.out"),
        ]
        .concat(),
    );
    run_ok(&dir, &config);
    assert_eq!(read(&dir, "get.out"), "GET /a ok\nGET /b ok\nGET /d ok\n");
}

#[test]
fn route_moves_matching_records_to_another_train() {
    let dir = TempDir::new("flow-route");
    let config = [
        train(
            "main",
            &[
                FILE_IN,
                &cog(
                    "route",
                    "train = \"errors\"\nwhen = 'message contains \"ERROR\"'\n",
                ),
                &cog("route", "train = \"all\"\nwhen = 'offset >= 80'\n"),
                &file_out("rest.out"),
            ]
            .concat(),
        ),
        // Fed only by routes: no supply needed.
        train("errors", &file_out("errors.out")),
        train("all", &cog("route", "train = \"errors\"\n")),
    ]
    .concat();
    let err = run_ok(&dir, &config);
    let errors = lines_where(|o, l| l.contains("ERROR") || o >= 80);
    assert_eq!(read(&dir, "errors.out"), errors);
    let rest = lines_where(|o, l| !l.contains("ERROR") && o < 80);
    assert_eq!(read(&dir, "rest.out"), rest);
    assert!(!err.contains("errors=1"), "{err}");
}

#[test]
fn tee_copies_matching_records_and_keeps_the_originals() {
    let dir = TempDir::new("flow-tee");
    let config = [
        train(
            "main",
            &[
                FILE_IN,
                &cog("tee", "train = \"copies\"\nwhen = 'offset >= 50'\n"),
                &cog("tee", "train = \"everything\"\n"),
                &file_out("main.out"),
            ]
            .concat(),
        ),
        train("copies", &file_out("copies.out")),
        train("everything", &file_out("everything.out")),
    ]
    .concat();
    run_ok(&dir, &config);
    assert_eq!(read(&dir, "main.out"), INPUT);
    assert_eq!(read(&dir, "everything.out"), INPUT);
    assert_eq!(read(&dir, "copies.out"), lines_where(|o, _| o >= 50));
}

#[test]
fn an_unknown_train_is_refused_at_the_key() {
    let dir = TempDir::new("flow-unknown");
    for ty in ["route", "tee"] {
        let config = [
            train(
                "main",
                &[FILE_IN, &cog(ty, "train = \"nope\"\n"), &file_out("o")].concat(),
            ),
            train("other", &[FILE_IN, &file_out("p")].concat()),
        ]
        .concat();
        let (code, err) = check(&dir, &config);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains(&format!(":8:9: train \"main\", cog {ty}#2, ")),
            "{err}"
        );
        assert!(err.contains("key \"train\""), "{err}");
        assert!(
            err.contains("no train named \"nope\" (trains: \"main\", \"other\")"),
            "{err}"
        );
    }
    let config = train(
        "main",
        &[FILE_IN, &cog("route", "train = \"main\"\n")].concat(),
    );
    let (code, err) = check(&dir, &config);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot send records to itself"), "{err}");
}

#[test]
fn a_route_cycle_is_refused_by_check() {
    let dir = TempDir::new("flow-cycle");
    let config = [
        train("a", &[FILE_IN, &cog("route", "train = \"b\"\n")].concat()),
        train(
            "b",
            &[cog("tee", "train = \"c\"\n"), cog("drop", "")].concat(),
        ),
        train(
            "c",
            &[
                cog("route", "train = \"a\"\nwhen = 'offset > 5'\n"),
                cog("drop", ""),
            ]
            .concat(),
        ),
    ]
    .concat();
    let (code, err) = check(&dir, &config);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("send records to each other"), "{err}");
}

#[test]
fn check_reports_expression_errors_with_both_columns() {
    let dir = TempDir::new("flow-check");
    let (code, err) = check(
        &dir,
        &train(
            "t",
            &[FILE_IN, &cog("filter", "keep = 'offset >> 3'\n")].concat(),
        ),
    );
    assert_eq!(code, Some(2), "{err}");
    // Line 8 of the file; `'` is at column 8, so the second `>` is at column 8 + 9.
    assert!(
        err.contains(
            "deadbeat.toml:8:17: train \"t\", cog filter#2, key \"keep\": in the condition \
             at column 9: expected a string, a number, true or false, found `>`"
        ),
        "{err}"
    );
    // With escapes the file position is the value's; the message still has the column.
    let (code, err) = check(
        &dir,
        &(train(
            "t",
            &[
                FILE_IN,
                &cog("route", "train = \"t2\"\nwhen = \"a == \\\"x\\\" an\"\n"),
            ]
            .concat(),
        ) + &train("t2", &file_out("o"))),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(":9:8: train \"t\", cog route#2, key \"when\""),
        "{err}"
    );
    assert!(
        err.contains("at column 10: expected `and`, `or` or the end"),
        "{err}"
    );
    for (keys, want) in [
        ("keep = 'a in_cidr [\"10.0.0.0/33\"]'\n", "is not a network"),
        ("keep = 'a < true'\n", "not booleans"),
        ("keep = 'a exists'\ndrop = 'b exists'\n", "not both"),
        ("", "give a condition in `keep`"),
        ("keep = 3\n", "expected a string"),
    ] {
        let (code, err) = check(&dir, &train("t", &[FILE_IN, &cog("filter", keys)].concat()));
        assert_eq!(code, Some(2), "{keys}: {err}");
        assert!(err.contains(want), "{keys}: {err}");
    }
    let deep = format!("keep = '{}a exists{}'\n", "(".repeat(100), ")".repeat(100));
    let (code, err) = check(
        &dir,
        &train("t", &[FILE_IN, &cog("filter", &deep)].concat()),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nested more than"), "{err}");
}

/// The cogs on a datum of a program's own, in an escapement built by hand: what `filter`
/// drops is acknowledged, a `tee` copy travels under a fresh id, the original under its own.
#[test]
fn filter_and_tee_on_any_datum_acknowledge_correctly() {
    use std::rc::Rc;

    use deadbeat::Escapement;
    use deadbeat::cogs::flow::filter::Filter;
    use deadbeat::cogs::flow::inbox::Inbox;
    use deadbeat::cogs::flow::tee::Tee;
    use deadbeat::engine::mailbox::Mailbox;
    use deadbeat::prelude::*;
    use deadbeat::record::expr::{Condition, Expr};
    use deadbeat::record::{Path as FieldPath, Value};

    use crate::engine::{Log, Probe, counting_supply, opts, run};

    #[derive(Debug, Clone)]
    struct Hit {
        id: EventId,
        status: Value,
    }
    fn get<'a>(h: &'a Hit, p: &FieldPath) -> Option<&'a Value> {
        (p.to_string() == "status").then_some(&h.status)
    }

    let log = Log::default();
    let hits: Vec<Hit> = [200, 404, 301, 503, 200, 500]
        .into_iter()
        .enumerate()
        .map(|(i, s)| Hit {
            id: 1000 + i as EventId,
            status: Value::Int(s),
        })
        .collect();
    let acked = Rc::new(std::cell::RefCell::new(Vec::<EventId>::new()));
    let a = acked.clone();
    let supply = counting_supply("supply", &log, hits)
        .on_event_done(move |ids, _| a.borrow_mut().extend(ids));
    let errors = Condition::new(Expr::parse("status >= 400").unwrap(), get);
    let five = Condition::new(Expr::parse("status >= 500").unwrap(), get);
    let mailbox = Rc::new(Mailbox::new());
    let l = log.clone();
    let main = Train::new("main")
        .cog(supply)
        .cog(Filter::keep(errors, Getter::new(|h: &Hit| Some(&h.id))))
        .cog(Tee::new(
            mailbox.clone(),
            Some(five),
            Setter::new(|h: &mut Hit, id| h.id = id),
        ))
        .cog(Probe::new("drain", &log).on_process(move |h: Hit, _, cx| {
            l.push(format!("kept {}", h.id));
            cx.event_done(h.id);
        }));
    let l = log.clone();
    let copies =
        Train::new("copies")
            .cog(Inbox::new(mailbox))
            .cog(Probe::new("copy", &log).on_process(move |h: Hit, _, cx| {
                l.push(format!("copied {} {}", h.id, h.status));
                cx.event_done(h.id);
            }));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(main).unwrap();
    esc.add_train(copies).unwrap();
    esc.add_feed(0, 1).unwrap();
    run(&mut esc, &log);

    assert_eq!(
        log.only(&["kept "]),
        ["kept 1001", "kept 1003", "kept 1005"]
    );
    let copies = log.only(&["copied "]);
    assert_eq!(copies.len(), 2, "{log:?}");
    assert!(
        copies[0].ends_with(" 503") && copies[1].ends_with(" 500"),
        "{copies:?}"
    );
    assert!(
        !copies.iter().any(|c| c.starts_with("copied 100")),
        "copies take fresh ids: {copies:?}"
    );
    let mut originals: Vec<EventId> = acked
        .borrow()
        .iter()
        .copied()
        .filter(|i| *i >= 1000)
        .collect();
    originals.sort();
    assert_eq!(
        originals,
        (1000..1006).collect::<Vec<_>>(),
        "every original acknowledged once"
    );
}
