//! `exec` in-process, built from its typed settings over records: order over 100k records
//! through `cat`, event ids kept, a restarted program (re-sent records counted), backpressure
//! from a program that reads nothing (the supplies paused, the records timed out and
//! acknowledged when dropped), and a program that skips a record.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use deadbeat::Escapement;
use deadbeat::cogs::enrich::exec::{Exec, ExecSettings, ExecStats, record_fields};
use deadbeat::kit::on_error::for_datum;
use deadbeat::prelude::*;
use deadbeat::record::{Key, Record, Value};

use crate::engine::{Log, Probe, TempDir, opts, run};

/// Ids of the records: far from 0, so a lost id shows.
const ID0: EventId = 1_000;

/// What a run saw: the records out, the ids acknowledged, how often the supply was paused.
struct Seen {
    out: Vec<Record>,
    acked: Vec<EventId>,
    pauses: usize,
    stats: ExecStats,
}

fn on_error(action: &str) -> deadbeat::kit::on_error::OnError<Record> {
    for_datum(
        action,
        |_| None,
        Getter::new(|r: &Record| Some(&r.id)),
        Setter::new(|r: &mut Record, why: String| {
            r.insert(Key::new("error"), Value::Str(why));
        }),
    )
    .unwrap()
}

/// Runs `n` records (`message` = their number) through `exec` with `s`, emitted 100 per
/// turn while the supply is not paused; the drain acknowledges what it gets.
fn run_exec(s: ExecSettings, n: usize, on_err: &str) -> Seen {
    let log = Log::default();
    let acked = Rc::new(RefCell::new(Vec::new()));
    let pauses = Rc::new(Cell::new(0));
    let paused = Rc::new(Cell::new(false));
    let mut next = 0;
    let (a, p1, p2, p3) = (
        acked.clone(),
        pauses.clone(),
        paused.clone(),
        paused.clone(),
    );
    let supply = Probe::new("supply", &log)
        .supply()
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |_, _, out: &mut Out<Record>, cx| {
            if p3.get() {
                return;
            }
            let end = (next + 100).min(n);
            for i in next..end {
                let mut r = Record::new();
                r.id = ID0 + i as EventId;
                r.insert(Key::new("message"), Value::Str(i.to_string()));
                out.push(r);
            }
            next = end;
            if next == n {
                cx.exhausted();
            } else {
                cx.enqueue(0);
            }
        })
        .on_pause(move |_| {
            p1.set(p1.get() + 1);
            p2.set(true);
        })
        .on_resume(move |cx| {
            paused.set(false);
            cx.enqueue(0);
        })
        .on_event_done(move |ids, _| a.borrow_mut().extend_from_slice(ids));
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let drain = Probe::new("drain", &log).on_process(move |r: Record, _, cx| {
        cx.event_done(r.id);
        g.borrow_mut().push(r);
    });
    let exec = Exec::from_settings(&s, record_fields(s.merge), on_error(on_err)).unwrap();
    let stats = exec.stats();
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(supply).cog(exec).cog(drain))
        .unwrap();
    run(&mut esc, &log);
    let mut acked = acked.borrow().clone();
    acked.sort_unstable();
    acked.dedup();
    Seen {
        out: got.borrow().clone(),
        acked,
        pauses: pauses.get(),
        stats: stats.get(),
    }
}

fn message(r: &Record) -> String {
    r.get(Key::new("message"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn settings(command: &[&str]) -> ExecSettings {
    ExecSettings {
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn python() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "pass"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: python3 is not installed");
    }
    ok
}

fn program(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn cat_keeps_order_and_ids_over_100k_records() {
    let s = ExecSettings {
        max_in_flight: 1000,
        ..settings(&["cat"])
    };
    let seen = run_exec(s, 100_000, "keep");
    assert_eq!(seen.out.len(), 100_000);
    for (i, r) in seen.out.iter().enumerate() {
        assert_eq!(r.id, ID0 + i as EventId);
        assert_eq!(message(r), i.to_string());
        assert_eq!(r.fields.len(), 1, "the sequence field is removed: {r:?}");
    }
    assert_eq!(seen.acked.len(), 100_000);
    assert_eq!(seen.stats.restarts, 0);
    assert_eq!(seen.stats.runs, 1);
}

#[test]
fn a_restarted_program_gets_the_unanswered_records_again() {
    if !python() {
        return;
    }
    let dir = TempDir::new("exec-restart");
    let prog = program(
        dir.path(),
        "exits.py",
        "import sys\nn = 0\nfor l in sys.stdin:\n    if n == 500:\n        sys.exit(0)\n    \
         sys.stdout.write(l)\n    sys.stdout.flush()\n    n += 1\n",
    );
    let s = ExecSettings {
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..settings(&["python3", "-u", prog.to_str().unwrap()])
    };
    let seen = run_exec(s, 3000, "keep");
    assert_eq!(seen.out.len(), 3000);
    for (i, r) in seen.out.iter().enumerate() {
        assert_eq!((r.id, message(r)), (ID0 + i as EventId, i.to_string()));
        assert!(r.get(Key::new("error")).is_none(), "{r:?}");
    }
    assert!(seen.stats.restarts >= 5, "{:?}", seen.stats);
    assert!(seen.stats.resent >= seen.stats.restarts, "{:?}", seen.stats);
    assert_eq!(seen.stats.runs, seen.stats.restarts + 1);
}

#[test]
fn a_program_that_reads_nothing_pauses_the_supply_and_times_out() {
    let s = ExecSettings {
        buffer_bytes: 4 << 10,
        max_in_flight: 100,
        timeout: Duration::from_millis(200),
        backoff_initial: Duration::from_millis(5),
        ..settings(&["sleep", "30"])
    };
    let seen = run_exec(s, 600, "drop");
    assert!(seen.out.is_empty());
    assert!(seen.pauses > 0, "a full pipe pauses the supply");
    assert_eq!(seen.stats.timeouts, 600, "{:?}", seen.stats);
    // Dropped records are acknowledged.
    assert_eq!(
        seen.acked,
        (0..600).map(|i| ID0 + i).collect::<Vec<EventId>>()
    );
    assert!(seen.stats.restarts >= 1);
}

#[test]
fn a_skipped_record_goes_to_on_error_and_the_rest_stay_in_step() {
    if !python() {
        return;
    }
    let dir = TempDir::new("exec-skip");
    let prog = program(
        dir.path(),
        "skip.py",
        "import sys, json\nfor l in sys.stdin:\n    d = json.loads(l)\n    \
         if d['message'] == '4':\n        continue\n    d['ok'] = True\n    print(json.dumps(d))\n",
    );
    let s = settings(&["python3", "-u", prog.to_str().unwrap()]);
    let seen = run_exec(s, 10, "keep");
    assert_eq!(seen.out.len(), 10);
    for (i, r) in seen.out.iter().enumerate() {
        assert_eq!(message(r), i.to_string());
        if i == 4 {
            assert_eq!(
                r.get(Key::new("error")).and_then(Value::as_str),
                Some("the program skipped it (no answer)")
            );
        } else {
            assert_eq!(r.get(Key::new("ok")), Some(&Value::Bool(true)), "{r:?}");
        }
    }
    assert_eq!(seen.stats.skipped, 1);
    assert_eq!(seen.stats.restarts, 0);
}

#[test]
fn settings_are_checked() {
    let bad = |s: ExecSettings| {
        Exec::from_settings(&s, record_fields(false), on_error("keep"))
            .unwrap_err()
            .to_string()
    };
    assert!(bad(settings(&[])).contains("must name a program"));
    assert!(bad(settings(&["/nonexistent/x"])).contains("/nonexistent/x"));
    assert!(
        bad(ExecSettings {
            max_in_flight: 0,
            ..settings(&["cat"])
        })
        .contains("max_in_flight")
    );
}
