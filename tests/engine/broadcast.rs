//! Broadcasts: acknowledgements and renames reach every cog of every train, in the order
//! they were made, once the callback that made them has returned.

use deadbeat::prelude::*;

use super::{Log, Probe, opts, run, strs};

/// A supply that gives each of `n` data a fresh event id and emits it.
fn id_supply(log: &Log, n: u64) -> Probe<EventId> {
    let l = log.clone();
    let mut left = n;
    Probe::<EventId>::new("s", log)
        .supply()
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |_, _, out, cx| {
            let id = cx.new_event_id();
            l.push(format!("s: emit {id}"));
            out.push(id);
            left -= 1;
            if left == 0 {
                cx.exhausted();
            } else {
                cx.enqueue(0);
            }
        })
}

/// Every cog's share of one broadcast, in train order.
fn to_all(what: &str) -> Vec<String> {
    ["s", "m", "d", "x"]
        .iter()
        .map(|c| format!("{c}: {what}"))
        .collect()
}

fn escapement(log: &Log, supply: Probe<EventId>, drain: Probe<EventId>) -> Escapement {
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(
        Train::new("t")
            .cog(supply)
            .cog(Probe::new("m", log))
            .cog(drain),
    )
    .unwrap();
    // Another train, over another datum type: broadcasts reach it too.
    esc.add_train(Train::new("u").cog(Probe::<String>::new("x", log)))
        .unwrap();
    esc
}

#[test]
fn event_done_reaches_every_cog_once_the_callback_returned() {
    let log = Log::default();
    let l = log.clone();
    // The Probe flags any call into a cog while one of its callbacks runs: the drain is
    // inside `process` when it acknowledges.
    let drain = Probe::<EventId>::new("d", &log).on_process(move |id, _, cx| {
        cx.event_done(id);
        l.push(format!("d: acked {id}"));
    });
    let mut esc = escapement(&log, id_supply(&log, 2), drain);
    run(&mut esc, &log);
    let mut want = strs(&["s: emit 1", "d: acked 1"]);
    want.extend(to_all("event_done [1]"));
    want.extend(strs(&["s: emit 2", "d: acked 2"]));
    want.extend(to_all("event_done [2]"));
    assert_eq!(
        log.only(&[
            "s: emit", "d: acked", "s: event", "m: event", "d: event", "x: event"
        ]),
        want
    );
}

#[test]
fn renames_keep_their_place_among_done_notices() {
    let log = Log::default();
    let drain = Probe::<EventId>::new("d", &log).on_process(|id, _, cx| {
        if id == 3 {
            cx.event_done(1);
            cx.event_rename(1, 10);
            cx.event_done(2);
            cx.event_done(3);
            cx.event_rename(3, 30);
        }
    });
    let mut esc = escapement(&log, id_supply(&log, 3), drain);
    run(&mut esc, &log);
    let mut want = Vec::new();
    want.extend(to_all("event_done [1]"));
    want.extend(to_all("rename 1->10"));
    // Acknowledgements in a row come as one run.
    want.extend(to_all("event_done [2, 3]"));
    want.extend(to_all("rename 3->30"));
    assert_eq!(
        log.only(&[
            "s: event",
            "m: event",
            "d: event",
            "x: event",
            "s: rename",
            "m: rename",
            "d: rename",
            "x: rename"
        ]),
        want
    );
}

#[test]
fn a_broadcast_made_during_a_broadcast_comes_after_it() {
    let log = Log::default();
    // The middle cog acknowledges a follower of every datum acknowledged.
    let m = Probe::<EventId>::new("m", &log).on_event_done(|ids, cx| {
        if ids == [1] {
            cx.event_done(100);
        }
    });
    let drain = Probe::<EventId>::new("d", &log).on_process(|id, _, cx| cx.event_done(id));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(id_supply(&log, 1)).cog(m).cog(drain))
        .unwrap();
    esc.add_train(Train::new("u").cog(Probe::<String>::new("x", &log)))
        .unwrap();
    run(&mut esc, &log);
    let mut want = to_all("event_done [1]");
    want.extend(to_all("event_done [100]"));
    assert_eq!(
        log.only(&["s: event", "m: event", "d: event", "x: event"]),
        want
    );
}

#[test]
fn no_broadcast_reaches_a_cog_after_its_done() {
    let log = Log::default();
    // Acknowledges what it still held when told it is done: too late for everyone.
    let drain = Probe::<EventId>::new("d", &log)
        .on_process(|_, _, _| {})
        .on_done(|cx| {
            cx.event_done(42);
            cx.event_rename(42, 43);
        });
    let mut esc = escapement(&log, id_supply(&log, 1), drain);
    run(&mut esc, &log);
    let entries = log.entries();
    let first_done = entries.iter().position(|e| e.ends_with(": done")).unwrap();
    assert!(
        entries[first_done..].iter().all(|e| e.ends_with(": done")),
        "{entries:#?}"
    );
}
