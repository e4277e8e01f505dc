//! `lookup` in an escapement built by hand: hits and misses, every `on_missing`, the
//! table formats and their errors with line numbers, reloads while data flow (rewrite in
//! place, rename over, inotify or polling), a bad reload keeping the old table, and a
//! large table reloaded without holding up the loop.

use std::cell::{Cell, RefCell};
use std::path::Path as FsPath;
use std::rc::Rc;
use std::time::{Duration, Instant};

use deadbeat::cogs::enrich::lookup::{Lookup, LookupCounters, LookupSettings, TableFormat};
use deadbeat::cogs::flow::inbox::Inbox;
use deadbeat::engine::mailbox::Mailbox;
use deadbeat::prelude::*;
use deadbeat::record::{self, Key, Path, Record, Value};
use deadbeat::{Escapement, Options};

use crate::engine::{Log, Probe, TempDir, opts, run};

/// Keeps what the escapement logs, as `"msg key=value ..."` lines.
#[derive(Clone, Default)]
pub(crate) struct Capture(pub(crate) std::sync::Arc<std::sync::Mutex<Vec<String>>>);

struct Line<'a>(&'a mut String);

impl deadbeat::slog::Serializer for Line<'_> {
    fn emit_arguments(
        &mut self,
        key: deadbeat::slog::Key,
        val: &std::fmt::Arguments<'_>,
    ) -> deadbeat::slog::Result {
        self.0.push_str(&format!(" {key}={val}"));
        Ok(())
    }
}

impl deadbeat::slog::Drain for Capture {
    type Ok = ();
    type Err = deadbeat::slog::Never;

    fn log(
        &self,
        record: &deadbeat::slog::Record<'_>,
        _: &deadbeat::slog::OwnedKVList,
    ) -> Result<(), Self::Err> {
        use deadbeat::slog::KV;
        let mut line = record.msg().to_string();
        let _ = record.kv().serialize(record, &mut Line(&mut line));
        self.0.lock().unwrap().push(line);
        Ok(())
    }
}

impl Capture {
    /// Options logging into this capture, with `opts()`'s other choices.
    pub(crate) fn options(&self) -> Options {
        Options {
            logger: Some(deadbeat::slog::Logger::root(
                self.clone(),
                deadbeat::slog::o!(),
            )),
            ..opts()
        }
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Settings over `dir/NAME` keyed by `ip`, looking up the field `client`.
fn settings(path: &FsPath) -> LookupSettings {
    LookupSettings {
        path: path.to_path_buf(),
        key: "ip".into(),
        field: "client".into(),
        poll_interval: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// A `lookup` over records, with `target` and `train` for `on_missing = "train:..."`.
fn lookup(s: &LookupSettings, mailbox: Option<Rc<Mailbox<Record>>>) -> Lookup<Record> {
    let f = record::field(&s.field).unwrap();
    let target = s.target.as_deref().map(|t| Path::parse(t).unwrap());
    Lookup::from_settings(
        s,
        f.get,
        record::merge_into(target),
        record::id_field().get,
        move |_| mailbox.clone(),
    )
    .unwrap()
}

fn rec(id: EventId, client: &str) -> Record {
    let mut r = Record::new();
    r.id = id;
    r.insert(Key::new("client"), Value::from(client));
    r
}

fn json(r: &Record) -> String {
    let mut out = Vec::new();
    r.write_json(&mut out);
    String::from_utf8(out).unwrap()
}

/// A drain that logs `"<name> JSON"` and acknowledges each record.
fn drain(name: &str, log: &Log) -> Probe<Record> {
    let l = log.clone();
    let n = name.to_string();
    Probe::new(name, log).on_process(move |r: Record, _, cx| {
        l.push(format!("{n} {}", json(&r)));
        cx.event_done(r.id);
    })
}

/// Runs `records` through `lk` into a drain; returns the drain's lines, the acknowledged
/// ids and the metrics' dropped count of the lookup.
fn run_once(lk: Lookup<Record>, records: Vec<Record>) -> (Vec<String>, Vec<EventId>, u64) {
    let log = Log::default();
    let acked = Rc::new(RefCell::new(Vec::new()));
    let a = acked.clone();
    let supply = crate::engine::counting_supply("s", &log, records)
        .on_event_done(move |ids, _| a.borrow_mut().extend_from_slice(ids));
    let train = Train::new("main")
        .cog(supply)
        .cog(lk)
        .cog(drain("out", &log));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(train).unwrap();
    run(&mut esc, &log);
    let dropped = esc.metrics()[0].cogs[1].dropped;
    let mut acked = acked.borrow().clone();
    acked.sort();
    (log.only(&["out "]), acked, dropped)
}

const ASSETS: &str = "ip,owner,site\n10.0.0.1,alice,paris\n10.0.0.2,bob,\"lyon, \"\"east\"\"\"\n";

/// A temp dir named after `tag` holding `assets.csv` (`ASSETS`); its path.
fn assets(tag: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(tag);
    let path = dir.path().join("assets.csv");
    std::fs::write(&path, ASSETS).unwrap();
    (dir, path)
}

#[test]
fn hits_copy_the_columns_and_misses_pass_untouched() {
    let (_dir, path) = assets("lookup-hits");
    let lk = lookup(&settings(&path), None);
    let counters = lk.counters();
    let (out, acked, _) = run_once(
        lk,
        vec![
            rec(1, "10.0.0.1"),
            rec(2, "10.0.0.9"),
            rec(3, "10.0.0.2"),
            Record::new(),
        ],
    );
    assert_eq!(
        out,
        [
            r#"out {"client":"10.0.0.1","owner":"alice","site":"paris"}"#,
            r#"out {"client":"10.0.0.9"}"#,
            r#"out {"client":"10.0.0.2","owner":"bob","site":"lyon, \"east\""}"#,
            r#"out {}"#,
        ]
    );
    assert_eq!(acked, [0, 1, 2, 3]);
    assert_eq!((counters.hits(), counters.misses()), (2, 2));
}

#[test]
fn fields_rename_prefix_and_target_shape_the_output() {
    let (dir, path) = assets("lookup-shape");
    let s = LookupSettings {
        fields: vec!["site".into()],
        rename: toml::from_str("site = \"where\"").unwrap(),
        prefix: "a_".into(),
        target: Some("asset".into()),
        ..settings(&path)
    };
    let (out, _, _) = run_once(lookup(&s, None), vec![rec(1, "10.0.0.1")]);
    assert_eq!(
        out,
        [r#"out {"client":"10.0.0.1","asset":{"a_where":"paris"}}"#]
    );
    // Addresses held as ip values and integers are looked up by their text.
    let ids = dir.path().join("ids.json");
    std::fs::write(
        &ids,
        "[{\"id\": 7, \"who\": \"x\"},\n {\"id\": \"10.0.0.1\", \"who\": {\"n\": [1]}}]",
    )
    .unwrap();
    let s = LookupSettings {
        key: "id".into(),
        ..settings(&ids)
    };
    let mut by_int = Record::new();
    by_int.insert(Key::new("client"), Value::Int(7));
    let mut by_ip = Record::new();
    by_ip.insert(Key::new("client"), Value::Ip("10.0.0.1".parse().unwrap()));
    let (out, _, _) = run_once(lookup(&s, None), vec![by_int, by_ip]);
    assert_eq!(
        out,
        [
            r#"out {"client":7,"who":"x"}"#,
            r#"out {"client":"10.0.0.1","who":{"n":[1]}}"#,
        ]
    );
}

#[test]
fn on_missing_default_writes_the_default_fields() {
    let (_dir, path) = assets("lookup-default");
    let s = LookupSettings {
        on_missing: "default".into(),
        default: toml::from_str("owner = \"unknown\"\nsite = \"-\"").unwrap(),
        target: Some("asset".into()),
        ..settings(&path)
    };
    let lk = lookup(&s, None);
    let counters = lk.counters();
    let (out, _, _) = run_once(lk, vec![rec(1, "10.0.0.1"), rec(2, "192.0.2.1")]);
    assert_eq!(
        out,
        [
            r#"out {"client":"10.0.0.1","asset":{"owner":"alice","site":"paris"}}"#,
            r#"out {"client":"192.0.2.1","asset":{"owner":"unknown","site":"-"}}"#,
        ]
    );
    assert_eq!((counters.hits(), counters.misses()), (1, 1));
}

#[test]
fn on_missing_drop_acknowledges_and_counts() {
    let (_dir, path) = assets("lookup-drop");
    let s = LookupSettings {
        on_missing: "drop".into(),
        ..settings(&path)
    };
    let (out, acked, dropped) = run_once(
        lookup(&s, None),
        vec![rec(1, "nope"), rec(2, "10.0.0.2"), rec(3, "nope")],
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].contains("bob"), "{out:?}");
    assert_eq!(acked, [1, 2, 3], "dropped records are acknowledged too");
    assert_eq!(dropped, 2);
}

#[test]
fn on_missing_train_sends_the_miss_elsewhere() {
    let (_dir, path) = assets("lookup-train");
    let s = LookupSettings {
        on_missing: "train:unknown".into(),
        ..settings(&path)
    };
    let mailbox = Rc::new(Mailbox::new());
    let lk = lookup(&s, Some(mailbox.clone()));
    let log = Log::default();
    let supply =
        crate::engine::counting_supply("s", &log, vec![rec(1, "nope"), rec(2, "10.0.0.1")]);
    let main = Train::new("main")
        .cog(supply)
        .cog(lk)
        .cog(drain("main", &log));
    let other = Train::new("unknown")
        .cog(Inbox::new(mailbox))
        .cog(drain("unknown", &log));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(main).unwrap();
    esc.add_train(other).unwrap();
    esc.add_feed(0, 1).unwrap();
    run(&mut esc, &log);
    assert_eq!(log.only(&["unknown "]), [r#"unknown {"client":"nope"}"#]);
    assert_eq!(
        log.only(&["main "]),
        [r#"main {"client":"10.0.0.1","owner":"alice","site":"paris"}"#]
    );
    // A train that does not exist is refused when the cog is built.
    let f = record::field("client").unwrap();
    let err = Lookup::<Record>::from_settings(
        &s,
        f.get,
        record::merge_into(None),
        record::id_field().get,
        |_| None,
    )
    .unwrap_err();
    assert_eq!(err.key, "on_missing");
}

#[test]
fn settings_mistakes_are_refused() {
    let base = settings(FsPath::new("t.csv"));
    let f = || record::field("client").unwrap();
    let try_build = |s: &LookupSettings| {
        Lookup::<Record>::from_settings(
            s,
            f().get,
            record::merge_into(None),
            record::id_field().get,
            |_| None,
        )
        .err()
        .map(|e| e.key)
    };
    let cases: Vec<(LookupSettings, &str)> = vec![
        (
            LookupSettings {
                on_missing: "default".into(),
                ..base.clone()
            },
            "default",
        ),
        (
            LookupSettings {
                default: toml::from_str("a = 1").unwrap(),
                ..base.clone()
            },
            "default",
        ),
        (
            LookupSettings {
                on_missing: "skip".into(),
                ..base.clone()
            },
            "on_missing",
        ),
        (
            LookupSettings {
                path: "t.txt".into(),
                ..base.clone()
            },
            "format",
        ),
        (
            LookupSettings {
                delimiter: ";;".into(),
                ..base.clone()
            },
            "delimiter",
        ),
        (
            LookupSettings {
                rename: toml::from_str("a = 1").unwrap(),
                ..base.clone()
            },
            "rename",
        ),
    ];
    for (s, key) in cases {
        assert_eq!(try_build(&s), Some(key), "{s:?}");
    }
    assert_eq!(try_build(&base), None);
}

/// `Err(message)` of loading `text` as the table `name`.
fn load_error(name: &str, text: &str, s: impl Fn(LookupSettings) -> LookupSettings) -> String {
    let dir = TempDir::new("lookup-bad");
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let mut lk = lookup(&s(settings(&path)), None);
    let e = lk.load_now().unwrap_err();
    let prefix = format!("{}:", path.display());
    assert!(e.starts_with(&prefix), "{e}");
    e[prefix.len()..].to_string()
}

#[test]
fn bad_tables_are_reported_with_their_line() {
    let same = |s| s;
    let cases = [
        (
            "t.csv",
            "ip,owner\n1,a\n2,b\n\n1,c\n",
            "5: duplicate key \"1\" (first on line 2)",
        ),
        (
            "t.csv",
            "ip,owner\n1,a\n2,b,c\n",
            "3: 3 cells where the header has 2",
        ),
        (
            "t.csv",
            "ip,owner\n1,\"a\nb\"\n2,\"open\n",
            "4: a quoted cell is not closed",
        ),
        (
            "t.csv",
            "ip,owner\n1,\"a\"x\n",
            "2: text after a closing quote",
        ),
        (
            "t.csv",
            "addr,owner\n1,a\n",
            "1: no column \"ip\" for the key",
        ),
        ("t.csv", "ip,owner\n,a\n", "2: empty key"),
        ("t.csv", "", " empty file"),
        (
            "t.json",
            "[\n {\"ip\": \"1\"},\n {\"ip\": \"1\"}\n]",
            "3: duplicate key \"1\" (first on line 2)",
        ),
        (
            "t.json",
            "[\n {\"ip\": \"1\"},\n {\"ip\":\n  \"2\",,}\n]",
            "4: bad JSON",
        ),
        (
            "t.json",
            "[\n {\"ip\": \"1\"},\n {\"owner\": \"x\"}\n]",
            "3: no \"ip\" (the key) in this object",
        ),
        ("t.json", "[{\"ip\": [1]}]", "1: the key \"ip\" is a list"),
        ("t.json", "{\"ip\": 1}", "1: expected a JSON array"),
        ("t.json", "[{\"ip\": 1}] x", "1: text after the closing ]"),
        ("t.ndjson", "{\"ip\": 1}\n\n{\"ip\": 2\n", "3: bad JSON"),
        ("t.jsonl", "{\"ip\": 1}\n[2]\n", "2: expected an object"),
    ];
    for (name, text, want) in cases {
        let e = load_error(name, text, same);
        assert!(e.starts_with(want), "{name} {text:?}: {e}");
    }
    let e = load_error("t.csv", "ip,a,b\n1,x,y\n", |s| LookupSettings {
        rename: toml::from_str("a = \"b\"").unwrap(),
        ..s
    });
    assert!(
        e.starts_with("1: columns \"a\" and \"b\" would both be written as \"b\""),
        "{e}"
    );
    let e = load_error("t.csv", "ip\n1\n", |s| LookupSettings {
        fields: vec!["owner".into()],
        ..s
    });
    assert!(e.starts_with("1: no column \"owner\""), "{e}");
    let dir = TempDir::new("lookup-missing");
    let mut lk = lookup(&settings(&dir.path().join("none.csv")), None);
    assert!(lk.load_now().unwrap_err().contains("cannot read"));
}

#[test]
fn formats_parse_alike() {
    let dir = TempDir::new("lookup-formats");
    let files = [
        (
            "t.csv",
            "\u{feff}ip;owner\r\n1;a\r\n\r\n2;\"b\r\nc\"\r\n",
            ";",
        ),
        (
            "t.json",
            "[{\"ip\":\"1\",\"owner\":\"a\"},{\"owner\":\"b\\r\\nc\",\"ip\":2}]",
            ",",
        ),
        (
            "t.ndjson",
            "{\"ip\":\"1\",\"owner\":\"a\"}\r\n\n{\"ip\":2,\"owner\":\"b\\r\\nc\"}",
            ",",
        ),
    ];
    for (name, text, delim) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let s = LookupSettings {
            delimiter: delim.into(),
            ..settings(&path)
        };
        let mut lk = lookup(&s, None);
        lk.load_now().unwrap();
        assert_eq!(lk.table().len(), 2, "{name}");
        let (out, _, _) = run_once(lk, vec![rec(1, "1"), rec(2, "2")]);
        assert_eq!(
            out,
            [
                r#"out {"client":"1","owner":"a"}"#,
                r#"out {"client":"2","owner":"b\r\nc"}"#,
            ],
            "{name}"
        );
    }
    // A format given wins over the extension.
    let path = dir.path().join("table.txt");
    std::fs::write(&path, "{\"ip\":\"1\",\"owner\":\"a\"}\n").unwrap();
    let mut lk = lookup(
        &LookupSettings {
            format: TableFormat::Ndjson,
            ..settings(&path)
        },
        None,
    );
    lk.load_now().unwrap();
    assert_eq!(lk.table().len(), 1);
}

/// How the table is replaced while data flow.
#[derive(Clone, Copy, Debug)]
enum Replace {
    /// Written in place (truncated and rewritten).
    Rewrite,
    /// A new file written beside it and renamed over it.
    RenameOver,
}

fn replace(path: &FsPath, text: &str, how: Replace) {
    match how {
        Replace::Rewrite => std::fs::write(path, text).unwrap(),
        Replace::RenameOver => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }
}

/// What a flowing run saw: the drain's lines, in order, and where the table was
/// replaced and where the reload had been seen (as indexes into the lines).
struct Flowed {
    lines: Vec<String>,
    replaced_at: usize,
    reloaded_at: usize,
}

/// Emits a record every 2 ms; after 5, replaces the table with `new` (as `how` says),
/// goes on until `until(counters)` holds, then emits 5 more and stops.
fn flow(
    lk: Lookup<Record>,
    options: Options,
    path: &FsPath,
    new: &str,
    how: Replace,
    until: fn(&LookupCounters) -> bool,
) -> Flowed {
    let counters = lk.counters();
    let log = Log::default();
    let emitted = Rc::new(Cell::new(0usize));
    let replaced_at = Rc::new(Cell::new(usize::MAX));
    let reloaded_at = Rc::new(Cell::new(usize::MAX));
    let (e, r1, r2) = (emitted.clone(), replaced_at.clone(), reloaded_at.clone());
    let path = path.to_path_buf();
    let new = new.to_string();
    let supply = Probe::<Record>::new("s", &log)
        .supply()
        .on_start(|cx| {
            cx.timer_every(Duration::from_millis(2), 0)?;
            Ok(())
        })
        .on_wake(move |_, _, out, cx| {
            let n = e.get();
            if n == 5 {
                replace(&path, &new, how);
                r1.set(n);
            }
            if r1.get() != usize::MAX && r2.get() == usize::MAX && until(&counters) {
                r2.set(n);
            }
            if r2.get() != usize::MAX && n >= r2.get() + 5 {
                cx.exhausted();
                return;
            }
            out.push(rec(n as EventId, "10.0.0.1"));
            e.set(n + 1);
        });
    let train = Train::new("main")
        .cog(supply)
        .cog(lk)
        .cog(drain("out", &log));
    let mut esc = Escapement::with_options(options).unwrap();
    esc.add_train(train).unwrap();
    run(&mut esc, &log);
    Flowed {
        lines: log.only(&["out "]),
        replaced_at: replaced_at.get(),
        reloaded_at: reloaded_at.get(),
    }
}

/// Data before the replacement see the old table, data after the reload the new one,
/// and the lines in between one or the other, switching once.
fn check_switch(f: &Flowed, old: &str, new: &str) {
    assert!(f.reloaded_at != usize::MAX, "{:#?}", f.lines);
    assert_eq!(f.lines.len(), f.reloaded_at + 5, "nothing lost");
    for (i, l) in f.lines.iter().enumerate() {
        if i < f.replaced_at {
            assert!(l.contains(old), "line {i} {l}");
        } else if i >= f.reloaded_at {
            assert!(l.contains(new), "line {i} {l}");
        }
    }
    let switches = f
        .lines
        .windows(2)
        .filter(|w| w[0].contains(old) && w[1].contains(new))
        .count();
    assert_eq!(switches, 1, "{:#?}", f.lines);
}

#[test]
fn a_table_rewritten_in_place_is_reloaded_while_data_flow() {
    for how in [Replace::Rewrite, Replace::RenameOver] {
        let dir = TempDir::new("lookup-reload");
        let path = dir.path().join("assets.csv");
        std::fs::write(&path, ASSETS).unwrap();
        let lk = lookup(&settings(&path), None);
        let counters = lk.counters();
        let f = flow(lk, opts(), &path, "ip,owner\n10.0.0.1,carol\n", how, |c| {
            c.reloads() == 1
        });
        check_switch(&f, "alice", "carol");
        assert_eq!(counters.reloads(), 1, "{how:?}");
        assert_eq!(counters.reload_failures(), 0, "{how:?}");
    }
}

#[test]
fn without_inotify_the_file_is_polled() {
    let (_dir, path) = assets("lookup-poll");
    let s = LookupSettings {
        poll_interval: Duration::from_millis(20),
        ..settings(&path)
    };
    let lk = lookup(&s, None);
    let options = Options {
        inotify: false,
        ..opts()
    };
    // A new inode (renamed over) is a change even with the same size and second.
    let f = flow(
        lk,
        options,
        &path,
        &ASSETS.replace("alice", "zelda"),
        Replace::RenameOver,
        |c| c.reloads() == 1,
    );
    check_switch(&f, "alice", "zelda");
}

#[test]
fn a_bad_reload_keeps_the_old_table_and_logs_the_line() {
    let (_dir, path) = assets("lookup-badreload");
    let lk = lookup(&settings(&path), None);
    let counters = lk.counters();
    let capture = Capture::default();
    let f = flow(
        lk,
        capture.options(),
        &path,
        "ip,owner\n10.0.0.1,carol\n10.0.0.1,dave\n",
        Replace::Rewrite,
        |c| c.reload_failures() == 1,
    );
    assert!(f.reloaded_at != usize::MAX);
    assert!(
        f.lines.iter().all(|l| l.contains("alice")),
        "{:#?}",
        f.lines
    );
    assert_eq!((counters.reloads(), counters.reload_failures()), (0, 1));
    let want = format!(
        "{}:3: duplicate key \"10.0.0.1\" (first on line 2)",
        path.display()
    );
    let lines = capture.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("lookup table not reloaded") && l.contains(&want)),
        "{lines:#?}"
    );
    // The counters are logged when the run ends.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("lookup counters") && l.contains("reload_failures=1")),
        "{lines:#?}"
    );
}

/// A table of `n` rows whose owners end with `tag`.
fn big_table(n: usize, tag: &str) -> String {
    let mut t = String::from("ip,owner,site,rack\n");
    for i in 0..n {
        t.push_str(&format!(
            "10.{}.{}.{},owner-{i}-{tag},site-{},rack-{}\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255,
            i % 97,
            i % 13
        ));
    }
    t
}

#[test]
fn a_large_table_reloads_without_holding_up_the_loop() {
    let dir = TempDir::new("lookup-big");
    let path = dir.path().join("big.csv");
    let rows = 50_000;
    std::fs::write(&path, big_table(rows, "old")).unwrap();
    let lk = lookup(&settings(&path), None);
    let counters = lk.counters();
    let log = Log::default();
    // A ticker on its own train notes the longest gap between its ticks while the reload
    // runs: were the table parsed on the loop, the gap would be the whole parse.
    let ticks: Rc<RefCell<Vec<Instant>>> = Rc::default();
    let t = ticks.clone();
    let ticker = Probe::<Record>::new("ticker", &log)
        .on_start(|cx| {
            cx.timer_every(Duration::from_millis(2), 0)?;
            Ok(())
        })
        .on_wake(move |_, _, _, _| t.borrow_mut().push(Instant::now()));
    let replaced: Rc<Cell<Option<Instant>>> = Rc::default();
    let reloaded: Rc<Cell<Option<Instant>>> = Rc::default();
    let (r1, r2, c) = (replaced.clone(), reloaded.clone(), counters.clone());
    let mut n = 0u64;
    let p = path.clone();
    let supply = Probe::<Record>::new("s", &log)
        .supply()
        .on_start(|cx| {
            cx.timer_every(Duration::from_millis(2), 0)?;
            Ok(())
        })
        .on_wake(move |_, _, out, cx| {
            if n == 3 {
                std::fs::write(&p, big_table(rows, "new")).unwrap();
                r1.set(Some(Instant::now()));
            }
            if r2.get().is_none() && c.reloads() == 1 {
                r2.set(Some(Instant::now()));
            }
            if r2.get().is_some() {
                out.push(rec(n, "10.0.1.2"));
                cx.exhausted();
                cx.shutdown();
                return;
            }
            out.push(rec(n, "10.0.1.2"));
            n += 1;
        });
    let main = Train::new("main")
        .cog(supply)
        .cog(lk)
        .cog(drain("out", &log));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(main).unwrap();
    esc.add_train(Train::new("tick").cog(ticker)).unwrap();
    run(&mut esc, &log);
    let (Some(from), Some(to)) = (replaced.get(), reloaded.get()) else {
        panic!("no reload: {counters:?}");
    };
    let ticks = ticks.borrow();
    let during: Vec<Instant> = ticks
        .iter()
        .copied()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    let mut gaps: Vec<Duration> = during.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.push(during.first().map_or(to - from, |t| *t - from));
    let longest = gaps.iter().max().copied().unwrap_or_default();
    let took = to - from;
    eprintln!(
        "reload of {rows} rows: {took:?}, {} ticks meanwhile, longest gap {longest:?}",
        during.len()
    );
    let lines = log.only(&["out "]);
    assert!(lines.last().unwrap().contains("owner-258-new"), "{lines:?}");
    assert!(lines[0].contains("owner-258-old"), "{lines:?}");
    // The loop kept turning: the ticks came at their pace through the reload.
    assert!(
        longest < Duration::from_millis(250),
        "longest gap {longest:?}, reload {took:?}"
    );
    assert!(
        took < Duration::from_millis(20) || during.len() >= 3,
        "{} ticks in {took:?}",
        during.len()
    );
}
