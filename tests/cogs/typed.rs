//! Supplied cogs built from their typed settings in Rust, without TOML, and run in an
//! escapement built by hand.

use std::rc::Rc;

use deadbeat::Escapement;
use deadbeat::engine::mailbox::Mailbox;
use deadbeat::prelude::*;
use deadbeat::record::{Path as FieldPath, Value};

use crate::engine::{Log, Probe, counting_supply, opts, run};

/// A datum of the test's own.
#[derive(Debug, Clone)]
struct Hit {
    id: EventId,
    status: Value,
}

fn status<'a>(h: &'a Hit, p: &FieldPath) -> Option<&'a Value> {
    (p.to_string() == "status").then_some(&h.status)
}

fn hits(statuses: &[i64]) -> Vec<Hit> {
    statuses
        .iter()
        .enumerate()
        .map(|(i, s)| Hit {
            id: 100 + i as EventId,
            status: Value::Int(*s),
        })
        .collect()
}

/// filter → route → drain, with `drop` at the end of the routed train: what `filter`
/// drops and what `drop` ends are acknowledged, as are the hits the drain writes.
#[test]
fn flow_cogs_from_typed_settings() {
    use deadbeat::cogs::flow::drop::{Discard, DropSettings};
    use deadbeat::cogs::flow::filter::{Filter, FilterSettings};
    use deadbeat::cogs::flow::inbox::Inbox;
    use deadbeat::cogs::flow::route::{Route, RouteSettings};

    let id = || Getter::new(|h: &Hit| Some(&h.id));
    let filter = Filter::from_settings(
        &FilterSettings {
            keep: Some("status >= 400".into()),
            ..Default::default()
        },
        status,
        id(),
    )
    .unwrap();
    let mailbox = Rc::new(Mailbox::new());
    let route = Route::from_settings(
        &RouteSettings {
            train: "five".into(),
            when: Some("status >= 500".into()),
        },
        mailbox.clone(),
        status,
        id(),
    )
    .unwrap();

    let log = Log::default();
    let acked = Rc::new(std::cell::RefCell::new(Vec::<EventId>::new()));
    let a = acked.clone();
    let supply = counting_supply("supply", &log, hits(&[200, 404, 503, 301, 500, 410]))
        .on_event_done(move |ids, _| a.borrow_mut().extend(ids));
    let l = log.clone();
    let main = Train::new("main").cog(supply).cog(filter).cog(route).cog(
        Probe::new("drain", &log).on_process(move |h: Hit, _, cx| {
            l.push(format!("kept {}", h.id));
            cx.event_done(h.id);
        }),
    );
    let five = Train::new("five")
        .cog(Inbox::new(mailbox))
        .cog(Discard::from_settings(&DropSettings::default(), id()));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(main).unwrap();
    esc.add_train(five).unwrap();
    esc.add_feed(0, 1).unwrap();
    run(&mut esc, &log);

    assert_eq!(log.only(&["kept "]), ["kept 101", "kept 105"]);
    let mut all = acked.borrow().clone();
    all.sort();
    assert_eq!(all, (100..106).collect::<Vec<_>>(), "each hit acknowledged");
    let m = esc.metrics();
    let five = m.iter().find(|t| t.name == "five").unwrap();
    assert_eq!(five.cogs.last().unwrap().dropped, 2, "{m:?}");
}

/// The checks a type cannot make come back from the constructors as errors at a key.
#[test]
fn flow_settings_checked_without_toml() {
    use deadbeat::cogs::flow::filter::{Filter, FilterSettings};

    let id = || Getter::new(|h: &Hit| Some(&h.id));
    let err = Filter::from_settings(&FilterSettings::default(), status, id()).unwrap_err();
    assert_eq!(err.key, "keep");
    assert!(err.msg.starts_with("give a condition in `keep`"), "{err}");
    let both = FilterSettings {
        keep: Some("status > 1".into()),
        drop: Some("status > 2".into()),
    };
    let err = Filter::from_settings(&both, status, id()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "drop: give either `keep` or `drop`, not both"
    );
    let bad = FilterSettings {
        keep: Some("status >> 1".into()),
        ..Default::default()
    };
    let err = Filter::from_settings(&bad, status, id()).unwrap_err();
    assert!(err.msg.starts_with("in the condition at column"), "{err}");
}
