//! `multiline` on a datum of the test's own, built from its typed settings without TOML:
//! the presets, sources kept apart, and acknowledgements held for the joined datum.

use std::cell::RefCell;
use std::rc::Rc;

use deadbeat::Escapement;
use deadbeat::cogs::text::multiline::{
    Multiline, MultilineFields, MultilinePreset, MultilineSettings,
};
use deadbeat::prelude::*;

use crate::engine::{Log, Probe, counting_supply, opts, run};

#[derive(Debug, Clone)]
struct Line {
    id: EventId,
    src: &'static str,
    text: Vec<u8>,
    cut: bool,
}

fn fields() -> MultilineFields<Line> {
    MultilineFields {
        message: Getter::new(|l: &Line| Some(l.text.as_slice())),
        set_message: Setter::new(|l: &mut Line, v: Vec<u8>| l.text = v),
        source: Getter::new(|l: &Line| Some(l.src.as_bytes())),
        id: Field::new(
            Getter::new(|l: &Line| Some(&l.id)),
            Setter::new(|l: &mut Line, v: EventId| l.id = v),
        ),
        set_truncated: Setter::new(|l: &mut Line, v: bool| l.cut = v),
    }
}

fn lines(src: &'static str, first_id: EventId, text: &str) -> Vec<Line> {
    text.lines()
        .enumerate()
        .map(|(i, t)| Line {
            id: first_id + i as EventId,
            src,
            text: t.as_bytes().to_vec(),
            cut: false,
        })
        .collect()
}

/// Where the test lines' ids start in `run_lines`.
const LINE_IDS: EventId = 1 << 40;

/// Runs `input` through `multiline` with `s`; the drain acknowledges what it gets when
/// `ack` is set. Returns the events out (`[src] text`, `CUT` when flagged) and the ids the
/// supply heard acknowledged, sorted.
fn run_lines(s: MultilineSettings, input: Vec<Line>, ack: bool) -> (Vec<String>, Vec<EventId>) {
    let log = Log::default();
    let acked = Rc::new(RefCell::new(Vec::new()));
    let a = acked.clone();
    // The lines' ids are moved far above the engine's own, which the joined data get.
    let input: Vec<Line> = input
        .into_iter()
        .map(|l| Line {
            id: l.id + LINE_IDS,
            ..l
        })
        .collect();
    let supply = counting_supply("supply", &log, input)
        .on_event_done(move |ids, _| a.borrow_mut().extend_from_slice(ids));
    let l = log.clone();
    let drain = Probe::new("drain", &log).on_process(move |d: Line, _, cx| {
        let cut = if d.cut { " CUT" } else { "" };
        l.push(format!(
            "out [{}] {}{cut}",
            d.src,
            String::from_utf8_lossy(&d.text)
        ));
        if ack {
            cx.event_done(d.id);
        }
    });
    let ml = Multiline::from_settings(&s, fields()).unwrap();
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(supply).cog(ml).cog(drain))
        .unwrap();
    run(&mut esc, &log);
    let out = log
        .only(&["out "])
        .into_iter()
        .map(|s| s["out ".len()..].to_string())
        .collect();
    // The supply hears the joined data's own (fresh) ids too: only its lines' count.
    let mut ids: Vec<EventId> = acked
        .borrow()
        .iter()
        .filter_map(|id| id.checked_sub(LINE_IDS))
        .collect();
    ids.sort_unstable();
    (out, ids)
}

fn preset(p: MultilinePreset) -> MultilineSettings {
    MultilineSettings {
        preset: Some(p),
        ..Default::default()
    }
}

const PYTHON: &str = "\
2024-01-01 app started
2024-01-01 request failed
Traceback (most recent call last):
  File \"app.py\", line 3, in <module>
    main()
ValueError: bad value

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File \"app.py\", line 5, in <module>
KeyError: 'x'
2024-01-01 next
Traceback (most recent call last):
  File \"b.py\", line 1, in <module>
OSError: gone
2024-01-01 last
";

#[test]
fn python_tracebacks_are_joined() {
    let (out, ids) = run_lines(preset(MultilinePreset::Python), lines("p", 1, PYTHON), true);
    let all: Vec<&str> = PYTHON.lines().collect();
    let want: Vec<String> = [
        &all[0..1],
        &all[1..12],
        // A traceback without a log line after it continues the line before it.
        &all[12..16],
        &all[16..17],
    ]
    .iter()
    .map(|e| format!("[p] {}", e.join("\n")))
    .collect();
    assert_eq!(out, want);
    assert_eq!(ids, (1..=all.len() as EventId).collect::<Vec<_>>());
}

const GO: &str = "\
starting server
panic: runtime error: index out of range [5] with length 3

goroutine 1 [running]:
main.main()
\t/tmp/x.go:8 +0x1d
exit status 2
server restarted
";

#[test]
fn go_panics_are_joined() {
    let (out, _) = run_lines(preset(MultilinePreset::Go), lines("g", 1, GO), true);
    let all: Vec<&str> = GO.lines().collect();
    // The panic starts an event of its own.
    let want: Vec<String> = [&all[0..1], &all[1..7], &all[7..8]]
        .iter()
        .map(|e| format!("[g] {}", e.join("\n")))
        .collect();
    assert_eq!(out, want);
}

/// Lines of two sources arriving interleaved are joined per source.
#[test]
fn sources_are_joined_apart() {
    let a = lines("a", 1, "a1\n  a1.1\n  a1.2\na2\n");
    let b = lines("b", 10, "b1\n  b1.1\nb2\n  b2.1\n");
    let input = vec![
        a[0].clone(),
        b[0].clone(),
        a[1].clone(),
        b[1].clone(),
        b[2].clone(),
        a[2].clone(),
        a[3].clone(),
        b[3].clone(),
    ];
    let s = MultilineSettings {
        indent: true,
        ..Default::default()
    };
    let (out, ids) = run_lines(s, input, true);
    assert_eq!(
        out,
        [
            "[b] b1\n  b1.1",
            "[a] a1\n  a1.1\n  a1.2",
            // Shutdown flushes the open events.
            "[b] b2\n  b2.1",
            "[a] a2",
        ]
    );
    assert_eq!(ids, vec![1, 2, 3, 4, 10, 11, 12, 13]);
}

/// The joined lines are acknowledged only through the joined datum: a drain that
/// acknowledges nothing leaves every line unacknowledged at the supply.
#[test]
fn joined_lines_wait_for_the_joined_datum() {
    let s = MultilineSettings {
        indent: true,
        ..Default::default()
    };
    let (out, ids) = run_lines(s.clone(), lines("a", 1, "a\n  b\n  c\nd\n"), false);
    assert_eq!(out, ["[a] a\n  b\n  c", "[a] d"]);
    assert!(ids.is_empty(), "acknowledged without the drain: {ids:?}");
    let (_, ids) = run_lines(s, lines("a", 1, "a\n  b\n  c\nd\n"), true);
    assert_eq!(ids, [1, 2, 3, 4]);
}

/// A joined datum travels under a fresh id, and the supply hears all of its lines
/// acknowledged in one broadcast (never the first alone, which would let `tail` save a
/// checkpoint inside the event); a one-line event keeps its id.
#[test]
fn joined_datum_gets_a_fresh_id_and_its_lines_are_acknowledged_together() {
    let log = Log::default();
    let batches = Rc::new(RefCell::new(Vec::<Vec<EventId>>::new()));
    let b = batches.clone();
    let supply = counting_supply("supply", &log, lines("a", 10, "a\n  b\n  c\nd\n"))
        .on_event_done(move |ids, _| b.borrow_mut().push(ids.to_vec()));
    let out_ids = Rc::new(RefCell::new(Vec::new()));
    let o = out_ids.clone();
    let drain = Probe::new("drain", &log).on_process(move |d: Line, _, cx| {
        o.borrow_mut().push(d.id);
        cx.event_done(d.id);
    });
    let ml = Multiline::from_settings(
        &MultilineSettings {
            indent: true,
            ..Default::default()
        },
        fields(),
    )
    .unwrap();
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(supply).cog(ml).cog(drain))
        .unwrap();
    run(&mut esc, &log);
    let out_ids = out_ids.borrow().clone();
    assert_eq!(out_ids.len(), 2);
    assert!(
        ![10, 11, 12].contains(&out_ids[0]),
        "the joined datum kept a line's id: {out_ids:?}"
    );
    assert_eq!(out_ids[1], 13, "a one-line event keeps its id");
    let batches = batches.borrow();
    let with_first = batches
        .iter()
        .find(|b| b.contains(&10))
        .expect("line 10 acknowledged");
    for id in [11, 12] {
        assert!(
            with_first.contains(&id),
            "line {id} not acknowledged with line 10: {batches:?}"
        );
    }
}

/// `max_bytes` cuts an event at a line boundary and flags it; the rest goes on.
#[test]
fn max_bytes_cuts_and_flags() {
    let s = MultilineSettings {
        indent: true,
        max_bytes: 11,
        ..Default::default()
    };
    let (out, ids) = run_lines(s, lines("a", 1, "head\n  1234\n  5678\nnext\n"), true);
    assert_eq!(out, ["[a] head\n  1234 CUT", "[a]   5678", "[a] next"]);
    assert_eq!(ids, [1, 2, 3, 4]);
}

/// Rules are checked without TOML: none, two, a bad expression, zero bounds.
#[test]
fn settings_are_checked() {
    let err = |s: MultilineSettings| Multiline::from_settings(&s, fields()).unwrap_err().key;
    assert_eq!(err(MultilineSettings::default()), "start");
    assert_eq!(
        err(MultilineSettings {
            indent: true,
            preset: Some(MultilinePreset::Java),
            ..Default::default()
        }),
        "preset"
    );
    assert_eq!(
        err(MultilineSettings {
            start: Some("(".into()),
            ..Default::default()
        }),
        "start"
    );
    assert_eq!(
        err(MultilineSettings {
            indent: true,
            max_lines: 0,
            ..Default::default()
        }),
        "max_lines"
    );
}

/// With `max_keys = 2`, a third source with an open event first emits the event of the
/// source quiet the longest; every line still comes out, once.
#[test]
fn max_keys_emits_the_quietest_event_early() {
    let s = MultilineSettings {
        indent: true,
        max_keys: 2,
        ..Default::default()
    };
    let a = lines("a", 1, "a1\n  a1.1\n  a1.2\n");
    let b = lines("b", 10, "b1\n  b1.1\n");
    let c = lines("c", 20, "c1\n");
    let input = vec![
        a[0].clone(),
        b[0].clone(),
        a[1].clone(),
        b[1].clone(),
        c[0].clone(),
        a[2].clone(),
    ];
    let (out, ids) = run_lines(s, input, true);
    assert_eq!(
        out,
        [
            // `a` was heard from before `b`'s last line: `a` is the quietest.
            "[a] a1\n  a1.1",
            // Its last line then opens an event of its own, evicting `b`.
            "[b] b1\n  b1.1",
            "[a]   a1.2",
            "[c] c1",
        ]
    );
    assert_eq!(ids, [1, 2, 3, 10, 11, 20]);
}

/// `start` and `continues` give the same events whether the expression has a one-pass
/// form (an anchored sequence) or goes to the regex engine (an alternation), with
/// non-ASCII digits (which `\d` matches) and invalid UTF-8 in the lines; the joined
/// events of two sources interleaved stay apart.
#[test]
fn one_pass_and_regex_engine_expressions_join_alike() {
    let text = "\
2024-01-01 a
\tat x
 at y
٢٠٢٤-01-01 arabic digits start an event too
\tat z
x2024-01-01 continues
2024-01-01 b
";
    let mut input = lines("s", 1, text);
    let mut other = lines("o", 100, "2024-02-02 other\n\tat o1\n");
    // Interleave the other source, and an invalid UTF-8 continuation.
    input.insert(2, other.remove(0));
    input.insert(4, other.remove(0));
    input.push(Line {
        id: 200,
        src: "s",
        text: b"\xff\xfe not UTF-8".to_vec(),
        cut: false,
    });
    let run_with = |start: Option<&str>, continues: Option<&str>| {
        run_lines(
            MultilineSettings {
                start: start.map(String::from),
                continues: continues.map(String::from),
                ..Default::default()
            },
            input.clone(),
            true,
        )
    };
    let want = vec![
        "[o] 2024-02-02 other\n\tat o1".to_string(),
        "[s] 2024-01-01 a\n\tat x\n at y".to_string(),
        "[s] ٢٠٢٤-01-01 arabic digits start an event too\n\tat z\nx2024-01-01 continues"
            .to_string(),
        "[s] 2024-01-01 b\n\u{fffd}\u{fffd} not UTF-8".to_string(),
    ];
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let one_pass = run_with(Some(r"^\d{4}-\d{2}-\d{2} "), None);
    assert_eq!(sorted(one_pass.0.clone()), sorted(want));
    let engine = run_with(Some(r"^(\d{4}-\d{2}-\d{2}|never) "), None);
    assert_eq!(engine, one_pass);
    assert_eq!(one_pass.1.len(), input.len(), "every line acknowledged");
    // `^\s` does not continue `x2024...` nor the invalid line: they start events.
    let cont_one_pass = run_with(None, Some(r"^\s"));
    let cont_engine = run_with(None, Some(r"^(\s|never)"));
    assert_eq!(cont_one_pass.0.len(), 6, "{:?}", cont_one_pass.0);
    assert_eq!(cont_engine, cont_one_pass);
}
