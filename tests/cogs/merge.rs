//! `merge` on a datum of the test's own, built from its typed settings without TOML: each
//! strategy, the end condition, `max_events`, `max_bytes`, the idle timer, interleaved
//! keys, `max_keys`, and acknowledgements held for the merged datum (and moved by a
//! rename).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use deadbeat::Escapement;
use deadbeat::cogs::flow::merge::{Merge, MergeFields, MergeSettings, MergeStrategy};
use deadbeat::kit::held::Held;
use deadbeat::prelude::*;
use deadbeat::record::{Path, Value};

use crate::engine::{Log, Probe, counting_supply, opts, run};

/// A datum of the test's own: an id and named values.
#[derive(Debug, Clone)]
struct Ev {
    id: EventId,
    fields: Vec<(String, Value)>,
}

/// Datum `n`, with the id `100 + n`: ids below 100 are those `merge` gives merged data.
fn ev(n: EventId, fields: &[(&str, Value)]) -> Ev {
    Ev {
        id: 100 + n,
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

fn s(t: &str) -> Value {
    Value::Str(t.into())
}

fn fields() -> MergeFields<Ev> {
    MergeFields::new(
        |e: &Ev, p: &Path| {
            let name = p.to_string();
            e.fields.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
        },
        |e: &mut Ev, p: &Path, v: Value| {
            let name = p.to_string();
            match e.fields.iter_mut().find(|(k, _)| *k == name) {
                Some(slot) => slot.1 = v,
                None => e.fields.push((name, v)),
            }
        },
        Field::new(
            Getter::new(|e: &Ev| Some(&e.id)),
            Setter::new(|e: &mut Ev, id| e.id = id),
        ),
    )
}

/// `#N k=JSON k=JSON...`, `N` the datum's number (`#M` for a merged datum's new id).
fn render(e: &Ev) -> String {
    let mut o = if e.id >= 100 {
        format!("#{}", e.id - 100)
    } else {
        "#M".to_string()
    };
    for (k, v) in &e.fields {
        let mut j = Vec::new();
        v.write_json(&mut j);
        o.push_str(&format!(" {k}={}", String::from_utf8_lossy(&j)));
    }
    o
}

/// Runs `input` through `merge` with `s`; the drain acknowledges what it gets when `ack`.
/// Returns the data out (rendered) and the numbers of the data the supply heard
/// acknowledged, sorted.
fn run_merge(s: MergeSettings, input: Vec<Ev>, ack: bool) -> (Vec<String>, Vec<EventId>) {
    let log = Log::default();
    let acked = Rc::new(RefCell::new(Vec::new()));
    let a = acked.clone();
    let supply = counting_supply("supply", &log, input)
        .on_event_done(move |ids, _| a.borrow_mut().extend_from_slice(ids));
    let l = log.clone();
    let drain = Probe::new("drain", &log).on_process(move |d: Ev, _, cx| {
        l.push(format!("out {}", render(&d)));
        if ack {
            cx.event_done(d.id);
        }
    });
    let m = Merge::from_settings(&s, fields()).unwrap();
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(supply).cog(m).cog(drain))
        .unwrap();
    run(&mut esc, &log);
    let out = log
        .only(&["out "])
        .into_iter()
        .map(|s| s["out ".len()..].to_string())
        .collect();
    let mut ids: Vec<EventId> = acked
        .borrow()
        .iter()
        .filter(|&&i| i >= 100)
        .map(|i| i - 100)
        .collect();
    ids.sort_unstable();
    (out, ids)
}

fn strategies(list: &[(&str, MergeStrategy)]) -> deadbeat::cogs::flow::merge::Strategies {
    list.iter().map(|(f, s)| (*f, *s)).collect()
}

/// Every strategy over one group ended by `end`; fields not named keep the first datum's
/// value; `count_field` counts the data merged.
#[test]
fn each_strategy_merges_its_field() {
    use MergeStrategy::*;
    let st = MergeSettings {
        strategies: strategies(&[
            ("message", Concat),
            ("bytes", Sum),
            ("status", Max),
            ("low", Min),
            ("user", First),
            ("seen", Last),
            ("tags", Array),
        ]),
        end: Some("message contains \"done\"".into()),
        count_field: Some("n".into()),
        separator: "|".into(),
        ..Default::default()
    };
    let row = |id, msg: &str, bytes: Value, status: i64, user: Option<&str>, seen: &str| {
        let mut f = vec![
            ("message", s(msg)),
            ("bytes", bytes),
            ("status", Value::Int(status)),
            ("low", Value::Int(status)),
            ("seen", s(seen)),
            ("tags", s(msg)),
            ("other", s(&format!("o{id}"))),
        ];
        if let Some(u) = user {
            f.push(("user", s(u)));
        }
        ev(id, &f)
    };
    let input = vec![
        // The first has no user: `first` takes the first value present.
        row(1, "start", Value::Int(10), 200, None, "t1"),
        row(2, "middle", Value::Float(0.5), 503, Some("ann"), "t2"),
        row(3, "more", s("7"), 404, Some("bob"), "t3"),
        row(4, "done", Value::Int(1), 301, Some("cy"), "t4"),
        row(5, "next", Value::Int(2), 200, Some("dan"), "t5"),
    ];
    let (out, ids) = run_merge(st, input, true);
    assert_eq!(
        out,
        [
            "#M message=\"start|middle|more|done\" bytes=18.5 status=503 low=200 seen=\"t4\" \
             tags=[\"start\",\"middle\",\"more\",\"done\"] other=\"o1\" user=\"ann\" n=4",
            // Shutdown emits the open group.
            "#5 message=\"next\" bytes=2 status=200 low=200 seen=\"t5\" tags=[\"next\"] \
             other=\"o5\" user=\"dan\" n=1",
        ]
    );
    assert_eq!(ids, [1, 2, 3, 4, 5]);
}

/// Integers sum exactly and overflow to a float; text that is no number is left out of a
/// sum (counted as an error); `max` of text compares byte-wise, of mixed kinds keeps the
/// first kind.
#[test]
fn sums_and_comparisons_take_what_they_can() {
    use MergeStrategy::*;
    let st = MergeSettings {
        strategies: strategies(&[("a", Sum), ("b", Sum), ("c", Max), ("d", Min)]),
        max_events: 3,
        ..Default::default()
    };
    let input = vec![
        ev(
            1,
            &[
                ("a", Value::Int(i64::MAX)),
                ("b", Value::Int(1)),
                ("c", s("apple")),
                ("d", Value::Int(5)),
            ],
        ),
        ev(
            2,
            &[
                ("a", Value::Int(1)),
                ("b", s("lots")),
                ("c", s("pear")),
                ("d", s("x")),
            ],
        ),
        ev(
            3,
            &[
                ("a", Value::Int(0)),
                ("b", Value::Int(2)),
                ("c", s("banana")),
                ("d", s("3")),
            ],
        ),
    ];
    let (out, _) = run_merge(st, input, true);
    assert_eq!(out, ["#M a=9.223372036854776e18 b=3 c=\"pear\" d=\"3\""]);
}

/// `max_events` closes a group when it holds that many; the rest go on in the next.
#[test]
fn max_events_closes_groups() {
    let st = MergeSettings {
        strategies: strategies(&[("m", MergeStrategy::Concat)]),
        max_events: 3,
        ..Default::default()
    };
    let input = (1..=7)
        .map(|i| ev(i, &[("m", s(&i.to_string()))]))
        .collect();
    let (out, ids) = run_merge(st, input, true);
    assert_eq!(out, ["#M m=\"1 2 3\"", "#M m=\"4 5 6\"", "#7 m=\"7\""]);
    assert_eq!(ids, (1..=7).collect::<Vec<_>>());
}

/// Interleaved keys fold apart; a group ends with the datum that satisfies `end`.
#[test]
fn interleaved_keys_fold_separately() {
    let st = MergeSettings {
        key: vec!["k".into()],
        strategies: strategies(&[("m", MergeStrategy::Concat)]),
        end: Some("m == \"end\"".into()),
        ..Default::default()
    };
    let d = |id, k: &str, m: &str| ev(id, &[("k", s(k)), ("m", s(m))]);
    let input = vec![
        d(1, "a", "a1"),
        d(2, "b", "b1"),
        d(3, "a", "a2"),
        d(4, "b", "end"),
        d(5, "a", "end"),
        d(6, "b", "b3"),
        // No key: a group of its own (the missing field is a null key).
        ev(7, &[("m", s("x"))]),
        ev(8, &[("m", s("end"))]),
    ];
    let (out, ids) = run_merge(st, input, true);
    assert_eq!(
        out,
        [
            "#M k=\"b\" m=\"b1 end\"",
            "#M k=\"a\" m=\"a1 a2 end\"",
            "#M m=\"x end\"",
            "#6 k=\"b\" m=\"b3\"",
        ]
    );
    assert_eq!(ids, (1..=8).collect::<Vec<_>>());
}

/// `max_bytes` cuts a group before the datum that would pass it, flagged; that datum
/// starts the next group.
#[test]
fn max_bytes_cuts_and_flags() {
    let st = MergeSettings {
        strategies: strategies(&[("m", MergeStrategy::Concat)]),
        max_bytes: 10,
        ..Default::default()
    };
    let input = vec![
        ev(1, &[("m", s("abcd"))]),
        ev(2, &[("m", s("efg"))]),
        ev(3, &[("m", s("hij"))]),
    ];
    let (out, ids) = run_merge(st, input, true);
    assert_eq!(out, ["#M m=\"abcd efg\" truncated=true", "#3 m=\"hij\""]);
    assert_eq!(ids, [1, 2, 3]);
}

/// With `max_keys = 2`, a third key first emits the group quiet the longest.
#[test]
fn max_keys_emits_the_quietest_group_early() {
    let st = MergeSettings {
        key: vec!["k".into()],
        strategies: strategies(&[("m", MergeStrategy::Concat)]),
        max_keys: 2,
        ..Default::default()
    };
    let d = |id, k: &str| ev(id, &[("k", s(k)), ("m", s(&id.to_string()))]);
    let input = vec![
        d(1, "a"),
        d(2, "b"),
        d(3, "a"),
        d(4, "c"),
        d(5, "a"),
        d(6, "b"),
    ];
    let (out, ids) = run_merge(st, input, true);
    assert_eq!(
        out,
        [
            // `b` was heard from before `a`'s second datum: `b` is the quietest.
            "#2 k=\"b\" m=\"2\"",
            // `b` again: `c` is now the quietest.
            "#4 k=\"c\" m=\"4\"",
            // Shutdown: the rest, quietest first.
            "#M k=\"a\" m=\"1 3 5\"",
            "#6 k=\"b\" m=\"6\"",
        ]
    );
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
}

/// The data merged into a group are acknowledged only through the merged datum: a drain
/// that acknowledges nothing leaves every one unacknowledged at the supply; one that
/// acknowledges the merged datum releases them all.
#[test]
fn acknowledgements_wait_for_the_merged_datum() {
    let st = MergeSettings {
        strategies: strategies(&[("m", MergeStrategy::Concat)]),
        max_events: 3,
        ..Default::default()
    };
    let input: Vec<Ev> = (1..=5).map(|i| ev(i, &[("m", s("x"))])).collect();
    let (out, ids) = run_merge(st.clone(), input.clone(), false);
    assert_eq!(out.len(), 2);
    assert!(ids.is_empty(), "acknowledged without the drain: {ids:?}");
    let (_, ids) = run_merge(st, input, true);
    assert_eq!(ids, [1, 2, 3, 4, 5]);
}

/// A cog after `merge` that renames every datum (`id + 1000`), as a cog that re-emits
/// data under new ids does.
struct Renamer;

impl Cog<Ev> for Renamer {
    fn name(&self) -> &str {
        "renamer"
    }
    fn process(&mut self, mut d: Ev, out: &mut Out<Ev>, cx: &mut Ctx) {
        let new = d.id + 1000;
        cx.event_rename(d.id, new);
        d.id = new;
        out.push(d);
    }
}

/// A rename of the merged datum downstream moves what `merge` holds: acknowledging the new
/// id releases the data merged into it.
#[test]
fn a_rename_moves_the_held_acknowledgements() {
    let log = Log::default();
    let acked = Rc::new(RefCell::new(Vec::new()));
    let a = acked.clone();
    let input: Vec<Ev> = (1..=4).map(|i| ev(i, &[("m", s("x"))])).collect();
    let supply = counting_supply("supply", &log, input)
        .on_event_done(move |ids, _| a.borrow_mut().extend_from_slice(ids));
    let drain = Probe::new("drain", &log).on_process(move |d: Ev, _, cx| cx.event_done(d.id));
    let st = MergeSettings {
        strategies: strategies(&[("m", MergeStrategy::Concat)]),
        max_events: 2,
        ..Default::default()
    };
    let m = Merge::from_settings(&st, fields()).unwrap();
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(supply).cog(m).cog(Renamer).cog(drain))
        .unwrap();
    run(&mut esc, &log);
    let mut ids = acked.borrow().clone();
    ids.sort_unstable();
    // The merged data (new ids 1 and 2) travel on as 1001 and 1002, whose
    // acknowledgements release every datum of their groups.
    assert_eq!(ids, [101, 102, 103, 104, 1001, 1002]);
}

/// A group whose key is quiet for `idle` is emitted by the timer, before shutdown.
#[test]
fn idle_flushes_a_quiet_group() {
    let log = Log::default();
    let seen = Rc::new(Cell::new(false));
    let seen2 = seen.clone();
    let l = log.clone();
    let mut sent = false;
    let supply = Probe::new("supply", &log)
        .supply()
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |_, _, out: &mut Out<Ev>, cx| {
            if !sent {
                sent = true;
                out.push(ev(1, &[("m", s("a"))]));
                out.push(ev(2, &[("m", s("b"))]));
            }
            // Exhausted only once the drain has the group: only the timer can send it.
            if seen2.get() {
                l.push("supply exhausted");
                cx.exhausted();
            } else {
                cx.timer_after(Duration::from_millis(5), 0).unwrap();
            }
        });
    let l = log.clone();
    let drain = Probe::new("drain", &log).on_process(move |d: Ev, _, _| {
        l.push(format!("out {}", render(&d)));
        seen.set(true);
    });
    let st = MergeSettings {
        strategies: strategies(&[("m", MergeStrategy::Concat)]),
        idle: Duration::from_millis(50),
        ..Default::default()
    };
    let m = Merge::from_settings(&st, fields()).unwrap();
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(supply).cog(m).cog(drain))
        .unwrap();
    run(&mut esc, &log);
    assert_eq!(
        log.only(&["out ", "supply exhausted"]),
        ["out #M m=\"a b\"", "supply exhausted"]
    );
}

/// Settings a type cannot check are checked without TOML.
#[test]
fn settings_are_checked() {
    let err = |s: MergeSettings| Merge::from_settings(&s, fields()).unwrap_err().key;
    assert_eq!(
        err(MergeSettings {
            max_events: 0,
            ..Default::default()
        }),
        "max_events"
    );
    assert_eq!(
        err(MergeSettings {
            end: Some("message ==".into()),
            ..Default::default()
        }),
        "end"
    );
    assert_eq!(
        err(MergeSettings {
            key: vec!["a..b".into()],
            ..Default::default()
        }),
        "key"
    );
    assert_eq!(
        err(MergeSettings {
            max_keys: 0,
            ..Default::default()
        }),
        "max_keys"
    );
}

/// A cog holding acknowledgements with [`Held`] bounded to 3 ids: beyond, the oldest
/// carrier's ids are acknowledged early.
struct Holder(Held);

impl Cog<Ev> for Holder {
    fn name(&self) -> &str {
        "holder"
    }
    fn process(&mut self, d: Ev, _: &mut Out<Ev>, cx: &mut Ctx) {
        // Datum N stands for N * 10 and N * 10 + 1; nothing goes on, so nothing is
        // acknowledged but what the bound releases.
        let n = d.id - 100;
        self.0
            .hold(Some(d.id), vec![n * 10, n * 10 + 1], "holder", cx);
    }
    fn event_done(&mut self, ids: &[EventId], cx: &mut Ctx) {
        self.0.done(ids, cx);
    }
}

#[test]
fn held_acknowledgements_stay_within_their_bound() {
    let log = Log::default();
    let acked = Rc::new(RefCell::new(Vec::new()));
    let a = acked.clone();
    let input: Vec<Ev> = (1..=4).map(|i| ev(i, &[])).collect();
    let supply = counting_supply("supply", &log, input)
        .on_event_done(move |ids, _| a.borrow_mut().extend_from_slice(ids));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(supply).cog(Holder(Held::new(3))))
        .unwrap();
    run(&mut esc, &log);
    let mut ids = acked.borrow().clone();
    ids.sort_unstable();
    // Two ids held at most after each hold: 1's, 2's and 3's released in turn.
    assert_eq!(ids, [10, 11, 20, 21, 30, 31]);
}

/// Every datum of a group reaches the supply in one acknowledgement, never the first
/// before the others: a supply saving its checkpoint after each acknowledgement could
/// otherwise save one inside the group, and a crash then split the group across the
/// restart.
#[test]
fn a_group_is_acknowledged_in_one_piece() {
    let log = Log::default();
    let slices = Rc::new(RefCell::new(Vec::new()));
    let sl = slices.clone();
    let input: Vec<Ev> = (1..=7).map(|i| ev(i, &[("m", s("x"))])).collect();
    let supply = counting_supply("supply", &log, input).on_event_done(move |ids, _| {
        // The merged data's own ids (below 100) are not the supply's.
        let mine: Vec<EventId> = ids.iter().filter(|&&i| i >= 100).map(|i| i - 100).collect();
        if !mine.is_empty() {
            sl.borrow_mut().push(mine);
        }
    });
    let drain = Probe::new("drain", &log).on_process(move |d: Ev, _, cx| cx.event_done(d.id));
    let st = MergeSettings {
        strategies: strategies(&[("m", MergeStrategy::Concat)]),
        max_events: 3,
        ..Default::default()
    };
    let m = Merge::from_settings(&st, fields()).unwrap();
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(supply).cog(m).cog(drain))
        .unwrap();
    run(&mut esc, &log);
    assert_eq!(*slices.borrow(), [vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
}
