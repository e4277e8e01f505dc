//! `window` on a datum of the test's own, built from its typed settings without TOML:
//! exact tumbling, hopping and session windows, every aggregate, lateness and `on_late`,
//! held acknowledgements, and replay-equals-live (one batch or many small ones).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use deadbeat::Escapement;
use deadbeat::cogs::flow::threshold::{Fire, Threshold, ThresholdSettings};
use deadbeat::cogs::flow::window::{Window, WindowFields};
use deadbeat::kit::window::{Aggregates, WindowKind, WindowSettings};
use deadbeat::prelude::*;
use deadbeat::record::{Path, Value};

use crate::engine::{Log, Probe, opts, run};

/// A datum of named values.
#[derive(Debug, Clone)]
struct Ev {
    id: EventId,
    f: Vec<(String, Value)>,
}

fn get<'a>(e: &'a Ev, p: &Path, _hint: &std::cell::Cell<u32>) -> Option<&'a Value> {
    let name = p.to_string();
    e.f.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
}

fn fields() -> WindowFields<Ev> {
    WindowFields {
        get: Rc::new(get),
        id: Rc::new(Getter::new(|e: &Ev| Some(&e.id))),
        make: Box::new(|id, names, fields| Ev {
            id,
            f: fields
                .drain(..)
                .map(|(i, v)| (names[i].to_string(), v))
                .collect(),
        }),
        set: Rc::new(|e: &mut Ev, p: &Path, v: Value| {
            let name = p.to_string();
            e.f.retain(|(k, _)| *k != name);
            e.f.push((name, v));
        }),
        fill: None,
        recycle: None,
    }
}

/// An input: id (far from the windows' own ids), key `k`, time `t` (epoch seconds), and `n`, `u` when given.
fn ev(id: EventId, k: &str, t: i64, n: Option<Value>, u: Option<&str>) -> Ev {
    let mut f = vec![
        ("k".to_string(), Value::Str(k.into())),
        ("t".to_string(), Value::Int(t)),
    ];
    if let Some(n) = n {
        f.push(("n".into(), n));
    }
    if let Some(u) = u {
        f.push(("u".into(), Value::Str(u.into())));
    }
    Ev {
        id: id + INPUT_IDS,
        f,
    }
}

/// Input ids start here; the windows take theirs from the loop (from 1).
const INPUT_IDS: EventId = 1 << 40;

fn ids_of(v: &[EventId]) -> Vec<EventId> {
    v.iter().map(|i| i + INPUT_IDS).collect()
}

fn settings(kind: WindowKind, aggs: &[(&str, &str)]) -> WindowSettings {
    WindowSettings {
        key: vec!["k".into()],
        time: "t".into(),
        kind,
        size: Duration::from_secs(10),
        aggregate: Aggregates(
            aggs.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

/// One line per datum out: `name=json ...` in field order (times as seconds).
fn render(e: &Ev) -> String {
    e.f.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Time(t) => t.secs.to_string(),
                v => {
                    let mut b = Vec::new();
                    v.write_json(&mut b);
                    String::from_utf8(b).unwrap()
                }
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `input` through `window` with `s`, `batch` data per supply wake; the drain
/// acknowledges what it gets when `ack`. Returns the data out and the ids the supply heard
/// acknowledged, sorted.
fn run_window(
    s: &WindowSettings,
    input: Vec<Ev>,
    batch: usize,
    ack: bool,
) -> (Vec<String>, Vec<EventId>) {
    let w = Window::from_settings(s, fields(), |_| None, None).unwrap();
    run_cog(w, input, batch, ack)
}

/// [`run_window`] with any cog.
fn run_cog(
    cog: impl Cog<Ev>,
    input: Vec<Ev>,
    batch: usize,
    ack: bool,
) -> (Vec<String>, Vec<EventId>) {
    run_acking(cog, input, batch, move |_| ack)
}

/// [`run_cog`] with a drain acknowledging the data `ack` says.
fn run_acking(
    cog: impl Cog<Ev>,
    input: Vec<Ev>,
    batch: usize,
    ack: impl Fn(&Ev) -> bool + 'static,
) -> (Vec<String>, Vec<EventId>) {
    let log = Log::default();
    let acked = Rc::new(RefCell::new(Vec::new()));
    let a = acked.clone();
    // The supply hears every acknowledgement, the windows' own included: keep its ids.
    let inputs: std::collections::HashSet<EventId> = input.iter().map(|e| e.id).collect();
    let mut next = 0;
    let supply = Probe::new("supply", &log)
        .supply()
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |_, _, out, cx| {
            for d in input.iter().skip(next).take(batch) {
                out.push(d.clone());
                next += 1;
            }
            if next >= input.len() {
                cx.exhausted();
            } else {
                cx.enqueue(0);
            }
        })
        .on_event_done(move |ids, _| {
            a.borrow_mut()
                .extend(ids.iter().filter(|i| inputs.contains(i)))
        });
    let l = log.clone();
    let drain = Probe::new("drain", &log).on_process(move |d: Ev, _, cx| {
        l.push(format!("out {}", render(&d)));
        if ack(&d) {
            cx.event_done(d.id);
        }
    });
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(supply).cog(cog).cog(drain))
        .unwrap();
    run(&mut esc, &log);
    let out = log
        .only(&["out "])
        .into_iter()
        .map(|s| s["out ".len()..].to_string())
        .collect();
    let mut ids = acked.borrow().clone();
    ids.sort_unstable();
    (out, ids)
}

fn int(i: i64) -> Option<Value> {
    Some(Value::Int(i))
}

#[test]
fn tumbling_windows_with_every_aggregate() {
    let s = settings(
        WindowKind::Tumbling,
        &[
            ("c", "count"),
            ("big", "count(n >= 3)"),
            ("s", "sum(n)"),
            ("lo", "min(n)"),
            ("hi", "max(n)"),
            ("avg", "mean(n)"),
            ("f", "first(n)"),
            ("l", "last(n)"),
            ("d", "count_distinct(u)"),
            ("v", "values(u)"),
        ],
    );
    let input = vec![
        ev(1, "a", 1, int(5), Some("x")),
        ev(2, "b", 2, int(1), Some("y")),
        ev(3, "a", 3, Some(Value::Null), Some("x")),
        ev(4, "a", 9, int(2), Some("z")),
        ev(5, "b", 12, Some(Value::Float(4.5)), Some("y")),
        ev(6, "a", 15, int(7), None),
    ];
    let (out, _) = run_window(&s, input, 100, true);
    assert_eq!(
        out,
        [
            // Closed when time 12 is seen, in the order they close (a's opened first).
            r#"window_start=0 window_end=10 k="a" c=3 big=1 s=7 lo=2 hi=5 avg=3.5 f=5 l=2 d=2 v=["x","x","z"]"#,
            r#"window_start=0 window_end=10 k="b" c=1 big=0 s=1 lo=1 hi=1 avg=1.0 f=1 l=1 d=1 v=["y"]"#,
            // Open at the end: emitted partial, oldest first.
            r#"window_start=10 window_end=20 k="b" c=1 big=1 s=4.5 lo=4.5 hi=4.5 avg=4.5 f=4.5 l=4.5 d=1 v=["y"] partial=true"#,
            r#"window_start=10 window_end=20 k="a" c=1 big=1 s=7 lo=7 hi=7 avg=7.0 f=7 l=7 d=0 v=[] partial=true"#,
        ]
    );
}

#[test]
fn distinct_counts_turn_to_estimates_and_value_lists_are_cut() {
    let mut s = settings(
        WindowKind::Tumbling,
        &[("d", "count_distinct(u)"), ("v", "values(n)")],
    );
    s.distinct_exact = 100;
    s.max_values = 3;
    let users: Vec<String> = (0..2000).map(|i| format!("user{i}")).collect();
    let input: Vec<Ev> = users
        .iter()
        .enumerate()
        .map(|(i, u)| ev(i as u64 + 1, "a", 1, int(i as i64), Some(u)))
        .collect();
    let (out, _) = run_window(&s, input, 64, true);
    assert_eq!(out.len(), 1);
    let line = &out[0];
    let d: f64 = line
        .split(' ')
        .find_map(|f| f.strip_prefix("d="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((d - 2000.0).abs() < 100.0, "{line}");
    assert!(line.contains("d_estimated=true"), "{line}");
    assert!(line.contains("v=[0,1,2] v_truncated=true"), "{line}");
}

#[test]
fn hopping_windows_count_a_datum_in_each_window_it_falls_in() {
    let mut s = settings(WindowKind::Hopping, &[("c", "count")]);
    s.step = Some(Duration::from_secs(5));
    let input = vec![
        ev(1, "a", 1, None, None),
        ev(2, "a", 6, None, None),
        ev(3, "a", 12, None, None),
    ];
    let (out, ids) = run_window(&s, input, 1, true);
    assert_eq!(
        out,
        [
            r#"window_start=-5 window_end=5 k="a" c=1"#,
            r#"window_start=0 window_end=10 k="a" c=2"#,
            r#"window_start=5 window_end=15 k="a" c=2 partial=true"#,
            r#"window_start=10 window_end=20 k="a" c=1 partial=true"#,
        ]
    );
    // Each input is held by one window and acknowledged once.
    assert_eq!(ids, ids_of(&[1, 2, 3]));
}

#[test]
fn an_input_of_several_hopping_windows_is_acknowledged_with_the_last() {
    let mut s = settings(WindowKind::Hopping, &[("c", "count")]);
    s.step = Some(Duration::from_secs(5));
    // 1 falls in [-5, 5) and [0, 10); 7 closes [-5, 5).
    let input = vec![ev(1, "a", 1, None, None), ev(2, "a", 7, None, None)];
    let w = Window::from_settings(&s, fields(), |_| None, None).unwrap();
    // Only the record of [-5, 5) is written (acknowledged).
    let first = |e: &Ev| {
        e.f.iter()
            .any(|(k, v)| k == "window_start" && matches!(v, Value::Time(t) if t.secs == -5))
    };
    let (out, ids) = run_acking(w, input, 1, first);
    assert_eq!(out[0], r#"window_start=-5 window_end=5 k="a" c=1"#);
    // 1 is still counted in [0, 10), not written: not acknowledged.
    assert!(ids.is_empty(), "{ids:?}");
}

#[test]
fn sessions_end_after_the_gap() {
    let mut s = settings(WindowKind::Session, &[("c", "count")]);
    s.gap = Some(Duration::from_secs(10));
    let input = vec![
        ev(1, "a", 0, None, None),
        ev(2, "a", 5, None, None),
        ev(3, "b", 7, None, None),
        ev(4, "a", 30, None, None),
    ];
    let (out, _) = run_window(&s, input, 100, true);
    assert_eq!(
        out,
        [
            r#"window_start=0 window_end=15 k="a" c=2"#,
            r#"window_start=7 window_end=17 k="b" c=1"#,
            r#"window_start=30 window_end=40 k="a" c=1 partial=true"#,
        ]
    );
    // With lateness, a datum after the gap still ends its key's session at once.
    s.lateness = Duration::from_secs(100);
    let input = vec![ev(1, "a", 0, None, None), ev(2, "a", 50, None, None)];
    let (out, _) = run_window(&s, input, 100, true);
    assert_eq!(
        out,
        [
            r#"window_start=0 window_end=10 k="a" c=1"#,
            r#"window_start=50 window_end=60 k="a" c=1 partial=true"#,
        ]
    );
}

#[test]
fn lateness_keeps_windows_open_and_late_data_go_per_on_late() {
    let mut s = settings(WindowKind::Tumbling, &[("c", "count")]);
    s.lateness = Duration::from_secs(5);
    s.on_late = "emit".into();
    let input = || {
        vec![
            ev(1, "a", 1, None, None),
            ev(2, "a", 12, None, None),
            ev(3, "a", 8, None, None),  // within the lateness: counted
            ev(4, "a", 16, None, None), // closes [0, 10)
            ev(5, "a", 3, None, None),  // late: time went back past the lateness
        ]
    };
    let (out, ids) = run_window(&s, input(), 100, true);
    assert_eq!(
        out,
        [
            r#"window_start=0 window_end=10 k="a" c=2"#,
            r#"k="a" t=3 late=true"#,
            r#"window_start=10 window_end=20 k="a" c=2 partial=true"#,
        ]
    );
    assert_eq!(ids, ids_of(&[1, 2, 3, 4, 5]));
    s.on_late = "drop".into();
    let (out, ids) = run_window(&s, input(), 100, false);
    assert_eq!(out.len(), 2, "{out:?}");
    // Nobody acknowledged the windows: only the dropped late datum is done with.
    assert_eq!(ids, ids_of(&[5]));
}

#[test]
fn consumed_inputs_are_acknowledged_only_with_their_window() {
    let s = settings(WindowKind::Tumbling, &[("c", "count")]);
    let input = vec![
        ev(1, "a", 1, None, None),
        ev(2, "b", 2, None, None),
        ev(3, "a", 11, None, None),
    ];
    let (_, ids) = run_window(&s, input.clone(), 1, false);
    assert!(ids.is_empty(), "{ids:?}");
    let (_, ids) = run_window(&s, input.clone(), 1, true);
    assert_eq!(ids, ids_of(&[1, 2, 3]));
    // pass = true: the inputs go on (and are acknowledged by the drain), the windows too.
    let mut p = s;
    p.pass = true;
    let (out, _) = run_window(&p, input, 1, true);
    assert_eq!(out.len(), 3 + 3, "{out:?}");
    assert_eq!(out[0], r#"k="a" t=1"#);
}

#[test]
fn consumed_inputs_go_back_to_recycle_once_and_passed_ones_do_not() {
    // Three keys over three windows, and a late datum (time back past a closed window).
    let input = || {
        let mut v: Vec<Ev> = (0..30)
            .map(|i| ev(i + 1, ["a", "b", "c"][i as usize % 3], i as i64, None, None))
            .collect();
        v.push(ev(31, "a", 2, None, None));
        v
    };
    let all: Vec<EventId> = input().iter().map(|e| e.id).collect();
    let with_recycle = |s: &WindowSettings| {
        let recycled = Rc::new(RefCell::new(Vec::new()));
        let mut f = fields();
        let r = recycled.clone();
        f.recycle = Some(Box::new(move |e: Ev| r.borrow_mut().push(e.id)));
        (
            Window::from_settings(s, f, |_| None, None).unwrap(),
            recycled,
        )
    };
    let mut s = settings(WindowKind::Tumbling, &[("c", "count")]);
    s.on_late = "drop".into();
    for batch in [1, 4, 100] {
        // Consumed: every input (the late one dropped too) goes back once.
        let (w, recycled) = with_recycle(&s);
        let (out, _) = run_cog(w, input(), batch, true);
        assert_eq!(out.len(), 9, "batch {batch}: {out:?}");
        let mut got = recycled.borrow().clone();
        got.sort_unstable();
        assert_eq!(got, all, "batch {batch}");
    }
    // Passed on (the inputs, and the late one emitted): none goes back.
    let mut p = s;
    p.pass = true;
    p.on_late = "emit".into();
    for batch in [1, 100] {
        let (w, recycled) = with_recycle(&p);
        let (out, _) = run_cog(w, input(), batch, true);
        assert_eq!(out.len(), 31 + 9, "batch {batch}: {out:?}");
        assert!(
            recycled.borrow().is_empty(),
            "batch {batch}: {:?}",
            recycled.borrow()
        );
    }
}

#[test]
fn replay_equals_live_whatever_the_batches() {
    let mut s = settings(
        WindowKind::Tumbling,
        &[("c", "count"), ("s", "sum(n)"), ("d", "count_distinct(u)")],
    );
    s.lateness = Duration::from_secs(3);
    s.on_late = "emit".into();
    // Seven keys by turns, time moving forward with jitter (some of it beyond the
    // lateness, so some data are late).
    let mut input = Vec::new();
    let mut seed: u64 = 7;
    for i in 0..600u64 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let jitter = (seed >> 33) % 9;
        let t = (i / 4) as i64 - jitter as i64;
        let k = ["k0", "k1", "k2", "k3", "k4", "k5", "k6"][(seed >> 40) as usize % 7];
        let u = format!("u{}", (seed >> 20) % 5);
        input.push(ev(i + 1, k, t, int((seed >> 50) as i64 % 100), Some(&u)));
    }
    let (one, _) = run_window(&s, input.clone(), input.len(), true);
    for batch in [1, 7, 64] {
        let (many, _) = run_window(&s, input.clone(), batch, true);
        assert_eq!(one, many, "batch {batch}");
    }
    assert!(one.iter().any(|l| l.contains("late=true")));
    assert!(one.iter().filter(|l| l.starts_with("window_start")).count() > 50);
}

#[test]
fn settings_checks_name_their_key() {
    let bad = |s: WindowSettings, key: &str| {
        let e = Window::from_settings(&s, fields(), |_| None, None).unwrap_err();
        assert_eq!(e.key, key, "{}", e.msg);
    };
    let mut s = settings(WindowKind::Tumbling, &[("c", "count")]);
    s.step = Some(Duration::from_secs(1));
    bad(s, "step");
    bad(settings(WindowKind::Session, &[("c", "count")]), "gap");
    bad(settings(WindowKind::Hopping, &[("c", "count")]), "step");
    bad(
        settings(WindowKind::Tumbling, &[("c", "summ(n)")]),
        "aggregate",
    );
    bad(settings(WindowKind::Tumbling, &[]), "aggregate");
    let mut s = settings(WindowKind::Tumbling, &[("c", "count")]);
    s.on_late = "later".into();
    bad(s, "on_late");
    let mut s = settings(WindowKind::Tumbling, &[("c", "count")]);
    s.size = Duration::from_secs(1000 * 366 * 86_400);
    bad(s, "size");
}

/// The fields `names` of a line out, in that order.
fn pick(line: &str, names: &[&str]) -> String {
    names
        .iter()
        .filter_map(|n| {
            line.split(' ')
                .find(|f| f.split('=').next() == Some(n))
                .map(str::to_string)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn threshold(s: WindowSettings, when: &str, fire: Fire, rearm: bool) -> Threshold<Ev> {
    Threshold::from_settings(
        &ThresholdSettings {
            window: s,
            when: when.into(),
            fire,
            rearm,
            evidence: vec!["u".into()],
        },
        fields(),
        |_| None,
        None,
    )
    .unwrap()
}

#[test]
fn threshold_fires_on_crossing_once_per_key_and_window_with_evidence() {
    let s = settings(WindowKind::Tumbling, &[("c", "count")]);
    let input = vec![
        ev(1, "a", 1, None, Some("root")),
        ev(2, "a", 2, None, Some("admin")),
        ev(3, "b", 2, None, Some("x")),
        ev(4, "a", 3, None, Some("guest")),
        ev(5, "a", 4, None, Some("oracle")),
        ev(6, "a", 12, None, Some("u1")),
        ev(7, "a", 13, None, Some("u2")),
        ev(8, "a", 14, None, Some("u3")),
    ];
    let t = threshold(s, "c >= 3", Fire::Crossing, false);
    let (out, ids) = run_cog(t, input, 3, true);
    let names = [
        "window_start",
        "k",
        "c",
        "first_id",
        "last_id",
        "first_u",
        "last_u",
    ];
    let got: Vec<String> = out.iter().map(|l| pick(l, &names)).collect();
    let id = |i: u64| i + INPUT_IDS;
    assert_eq!(
        got,
        [
            format!(
                r#"window_start=0 k="a" c=3 first_id={} last_id={} first_u="root" last_u="guest""#,
                id(1),
                id(4)
            ),
            format!(
                r#"window_start=10 k="a" c=3 first_id={} last_id={} first_u="u1" last_u="u3""#,
                id(6),
                id(8)
            ),
        ]
    );
    // Every input is acknowledged: with its window's alert, or when its window closed
    // without one.
    assert_eq!(ids, ids_of(&[1, 2, 3, 4, 5, 6, 7, 8]));
}

#[test]
fn threshold_on_close_alerts_with_final_values_and_rearm_quiets_a_key() {
    let mut s = settings(WindowKind::Hopping, &[("c", "count")]);
    s.step = Some(Duration::from_secs(5));
    let mut input = Vec::new();
    for t in 0..10 {
        input.push(ev(t as u64 + 1, "a", t, None, None));
    }
    input.push(ev(20, "a", 30, None, None)); // a quiet spell: `when` false
    for t in 50..55 {
        input.push(ev(t as u64, "a", t, None, None));
    }
    let names = ["window_start", "c", "partial"];
    let t = threshold(s.clone(), "c >= 3", Fire::Close, true);
    let (out, ids) = run_cog(t, input.clone(), 4, true);
    let got: Vec<String> = out.iter().map(|l| pick(l, &names)).collect();
    assert_eq!(
        got,
        ["window_start=-5 c=5", "window_start=45 c=5 partial=true"]
    );
    assert_eq!(ids.len(), input.len());
    // Without rearm: one alert per window where `when` holds.
    let t = threshold(s, "c >= 3", Fire::Close, false);
    let (out, _) = run_cog(t, input, 4, true);
    let got: Vec<String> = out.iter().map(|l| pick(l, &names)).collect();
    assert_eq!(
        got,
        [
            "window_start=-5 c=5",
            "window_start=0 c=10",
            "window_start=5 c=5",
            "window_start=45 c=5 partial=true",
            "window_start=50 c=5 partial=true",
        ]
    );
}

#[test]
fn threshold_settings_name_their_key() {
    let s = ThresholdSettings {
        window: settings(WindowKind::Tumbling, &[("c", "count")]),
        when: "c >=".into(),
        ..Default::default()
    };
    let e = Threshold::from_settings(&s, fields(), |_| None, None).unwrap_err();
    assert_eq!(e.key, "when", "{}", e.msg);
}

#[test]
fn a_yearless_time_format_reads_february_29() {
    let mut s = settings(WindowKind::Tumbling, &[("c", "count")]);
    s.time_format = "%b %e %H:%M:%S".into();
    let mut e = ev(1, "a", 0, None, None);
    e.f[1].1 = Value::Str("Feb 29 10:00:00".into());
    let (out, _) = run_window(&s, vec![e], 1, true);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].contains("c=1 partial=true"), "{out:?}");
    assert!(!out[0].contains("error"), "{out:?}");
}
