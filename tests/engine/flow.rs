//! Data flow: backpressure between drains and supplies, per-cog counters, and several
//! trains over different data on one loop.

use std::time::Duration;

use deadbeat::prelude::*;

use super::{Log, Probe, counting_supply, opts, run, run_train, strs};

/// A supply that honours pause: it emits one datum per immediate call and stops asking
/// for the next call while paused.
fn pausable_supply(log: &Log, last: u64) -> Probe<u64> {
    let l = log.clone();
    let mut next = 1;
    Probe::<u64>::new("s", log)
        .supply()
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |_, _, out, cx| {
            l.push(format!("s: emit {next}"));
            out.push(next);
            next += 1;
            if next > last {
                cx.exhausted();
            } else {
                cx.enqueue(0);
            }
        })
        .on_pause(|cx| cx.dequeue(0))
        .on_resume(|cx| cx.enqueue(0))
}

/// A drain that pauses the supplies on datum 3 and resumes them `after` later; it passes
/// data on when `pass` is set.
fn pausing_drain(name: &str, log: &Log, after: Duration, pass: bool) -> Probe<u64> {
    let (l, n) = (log.clone(), name.to_string());
    let l2 = log.clone();
    let n2 = name.to_string();
    Probe::<u64>::new(name, log)
        .on_process(move |d, out, cx| {
            if d == 3 {
                l.push(format!("{n}: got {d}, pausing"));
                cx.pause_supplies();
                cx.timer_after(after, 1).unwrap();
            } else {
                l.push(format!("{n}: got {d}"));
            }
            if pass {
                out.push(d);
            }
        })
        .on_wake(move |_, _, _, cx| {
            l2.push(format!("{n2}: resuming"));
            cx.resume_supplies();
        })
}

#[test]
fn drains_pause_and_resume_supplies_once_for_all() {
    let log = Log::default();
    run_train(
        Train::new("t")
            .cog(pausable_supply(&log, 5))
            .cog(pausing_drain("a", &log, Duration::from_millis(10), true))
            .cog(pausing_drain("b", &log, Duration::from_millis(30), false)),
        &log,
    );
    assert_eq!(
        log.entries(),
        strs(&[
            "s: emit 1",
            "a: got 1",
            "b: got 1",
            "s: emit 2",
            "a: got 2",
            "b: got 2",
            "s: emit 3",
            "a: got 3, pausing",
            "b: got 3, pausing",
            // Both drains paused: one pause.
            "s: pause",
            // b still wants the pause, so a's resume changes nothing...
            "a: resuming",
            // ...and the supply, honouring the pause, emitted nothing meanwhile.
            "b: resuming",
            "s: resume",
            "s: emit 4",
            "a: got 4",
            "b: got 4",
            "s: emit 5",
            "a: got 5",
            "b: got 5",
            "s: finish",
            "a: finish",
            "b: finish",
            "s: done",
            "a: done",
            "b: done",
        ])
    );
}

#[test]
fn pause_stays_within_its_train() {
    let log = Log::default();
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(
        Train::new("t")
            .cog(pausable_supply(&log, 5))
            .cog(pausing_drain("a", &log, Duration::from_millis(5), false)),
    )
    .unwrap();
    esc.add_train(Train::new("u").cog(counting_supply("other", &log, vec![1u64])))
        .unwrap();
    run(&mut esc, &log);
    assert_eq!(
        log.only(&["s: pause", "s: resume", "other: pause", "other: resume"]),
        strs(&["s: pause", "s: resume"])
    );
}

#[test]
fn metrics_count_data_in_out_dropped_and_errors_per_cog() {
    let log = Log::default();
    // Drops even numbers.
    let filter = Probe::<u64>::new("odd", &log).on_process(|d, out, _| {
        if d % 2 == 0 {
            out.count_dropped(1);
        } else {
            out.push(d);
        }
    });
    // Fails on multiples of 3 but passes them on anyway.
    let check = Probe::<u64>::new("check", &log).on_process(|d, out, _| {
        if d % 3 == 0 {
            out.count_errors(1);
        }
        out.push(d);
    });
    // Splits every datum in two.
    let split = Probe::<u64>::new("split", &log).on_process(|d, out, _| {
        out.push(d);
        out.push(d + 100);
    });
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(
        Train::new("numbers")
            .cog(counting_supply("s", &log, (1..=10).collect()))
            .cog(filter)
            .cog(check)
            .cog(split)
            .cog(Probe::drain("d", &log)),
    )
    .unwrap();
    esc.add_train(Train::new("idle").cog(Probe::<u64>::new("i", &log)))
        .unwrap();
    run(&mut esc, &log);

    let m = esc.metrics();
    assert_eq!(m[0].name, "numbers");
    let rows: Vec<(&str, u64, u64, u64, u64)> = m[0]
        .cogs
        .iter()
        .map(|c| (c.name.as_str(), c.data_in, c.data_out, c.dropped, c.errors))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("s", 0, 10, 0, 0),
            ("odd", 10, 5, 5, 0),
            ("check", 5, 5, 0, 2),
            ("split", 5, 10, 0, 0),
            ("d", 10, 0, 0, 0),
        ]
    );
    assert_eq!(m[1].name, "idle");
    assert_eq!(m[1].cogs.len(), 1);
    assert_eq!(
        (m[1].cogs[0].data_in, m[1].cogs[0].data_out),
        (0, 0),
        "{:?}",
        m[1]
    );
    assert_eq!(log.only(&["d: got"]).len(), 10);
}

/// A datum of the program's own making, for the third train.
#[derive(Clone, Debug, PartialEq)]
struct Reading {
    sensor: &'static str,
    value: f64,
}

#[test]
fn trains_over_different_data_run_side_by_side() {
    let log = Log::default();
    let readings = vec![
        Reading {
            sensor: "t1",
            value: 20.5,
        },
        Reading {
            sensor: "t2",
            value: -3.0,
        },
    ];
    let mut esc = Escapement::with_options(opts()).unwrap();
    // Each supply emits one datum per immediate call: one turn of the loop serves every
    // train once, in the order they were added.
    esc.add_train(
        Train::new("numbers")
            .cog(counting_supply("n", &log, vec![1u64, 2, 3]))
            .cog(Probe::drain("dn", &log)),
    )
    .unwrap();
    esc.add_train(
        Train::new("words")
            .cog(counting_supply(
                "w",
                &log,
                vec!["x".to_string(), "y".to_string()],
            ))
            .cog(
                Probe::<String>::new("upper", &log)
                    .on_process(|d, out, _| out.push(d.to_uppercase())),
            )
            .cog(Probe::drain("dw", &log)),
    )
    .unwrap();
    esc.add_train(
        Train::new("readings")
            .cog(counting_supply("r", &log, readings))
            .cog(Probe::drain("dr", &log)),
    )
    .unwrap();
    run(&mut esc, &log);
    assert_eq!(
        log.only(&[
            "n: emit", "dn: got", "w: emit", "dw: got", "r: emit", "dr: got"
        ]),
        strs(&[
            "n: emit 1",
            "dn: got 1",
            "w: emit \"x\"",
            "dw: got \"X\"",
            "r: emit Reading { sensor: \"t1\", value: 20.5 }",
            "dr: got Reading { sensor: \"t1\", value: 20.5 }",
            "n: emit 2",
            "dn: got 2",
            "w: emit \"y\"",
            "dw: got \"Y\"",
            "r: emit Reading { sensor: \"t2\", value: -3.0 }",
            "dr: got Reading { sensor: \"t2\", value: -3.0 }",
            "n: emit 3",
            "dn: got 3",
        ])
    );
    // Finish goes train by train; no cog is done before the last finish.
    assert_eq!(
        log.only(&[
            "n: f", "dn: f", "w: f", "upper: f", "dw: f", "r: f", "dr: f"
        ]),
        strs(&[
            "n: finish",
            "dn: finish",
            "w: finish",
            "upper: finish",
            "dw: finish",
            "r: finish",
            "dr: finish",
        ])
    );
    let entries = log.entries();
    let last_finish = entries
        .iter()
        .rposition(|e| e.ends_with(": finish"))
        .unwrap();
    let first_done = entries.iter().position(|e| e.ends_with(": done")).unwrap();
    assert!(last_finish < first_done, "{entries:#?}");
}
