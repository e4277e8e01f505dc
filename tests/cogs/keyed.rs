//! Cogs with memory (issue 16) built from their typed settings in Rust, on a datum of the
//! test's own, and run in an escapement built by hand.

use std::rc::Rc;
use std::time::Duration;

use deadbeat::Escapement;
use deadbeat::prelude::*;

use crate::engine::{Log, Probe, counting_supply, opts, run};

#[derive(Debug, Clone)]
struct Login {
    id: EventId,
    user: u32,
}

/// The key of a login: its user.
fn user_key() -> deadbeat::cogs::flow::dedup::KeyFn<Login> {
    Box::new(|l, out| {
        out.extend_from_slice(&l.user.to_le_bytes());
        true
    })
}

/// Runs logins of `users` (ids from 100) through `cog` into a drain that logs
/// `kept ID USER` and acknowledges; the log, the ids acknowledged to the supply (sorted)
/// and the escapement.
fn run_keyed(users: &[u32], cog: impl Cog<Login>) -> (Log, Vec<EventId>, Escapement) {
    let logins: Vec<Login> = users
        .iter()
        .enumerate()
        .map(|(i, &user)| Login {
            id: 100 + i as EventId,
            user,
        })
        .collect();
    let log = Log::default();
    let acked = Rc::new(std::cell::RefCell::new(Vec::<EventId>::new()));
    let a = acked.clone();
    let supply = counting_supply("supply", &log, logins)
        .on_event_done(move |ids, _| a.borrow_mut().extend(ids));
    let l = log.clone();
    let train = Train::new("t")
        .cog(supply)
        .cog(cog)
        .cog(
            Probe::new("drain", &log).on_process(move |d: Login, _, cx| {
                l.push(format!("kept {} {}", d.id, d.user));
                cx.event_done(d.id);
            }),
        );
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(train).unwrap();
    run(&mut esc, &log);
    let mut all = acked.borrow().clone();
    all.sort();
    (log, all, esc)
}

/// dedup keyed on one field of a struct, with room for two keys: a repeat within `within`
/// is dropped and acknowledged, and a key evicted to make room passes again.
#[test]
fn dedup_from_typed_settings_on_own_struct() {
    use deadbeat::cogs::flow::dedup::{Dedup, DedupSettings};

    let dedup = Dedup::from_settings(
        &DedupSettings {
            within: Duration::from_secs(600),
            max_keys: 2,
            ..Default::default()
        },
        user_key(),
        Getter::new(|l: &Login| Some(&l.id)),
        None,
    )
    .unwrap();
    let (log, acked, esc) = run_keyed(&[1, 2, 1, 3, 1, 2, 2], dedup);

    // 1 and 2 pass, 1 is a repeat, 3 evicts 1 (the oldest), so 1 passes and evicts 2,
    // then 2 passes (evicting 3) and its repeat is dropped.
    assert_eq!(
        log.only(&["kept "]),
        [
            "kept 100 1",
            "kept 101 2",
            "kept 103 3",
            "kept 104 1",
            "kept 105 2"
        ]
    );
    assert_eq!(
        acked,
        (100..107).collect::<Vec<_>>(),
        "each login acknowledged"
    );
    let m = esc.metrics();
    assert_eq!(m[0].cogs[1].dropped, 2, "{m:?}");
}

/// The checks a type cannot make come back from the constructor as errors at a key.
#[test]
fn dedup_settings_checked_without_toml() {
    use deadbeat::cogs::flow::dedup::{Dedup, DedupSettings, KeyFn};

    let key = || -> KeyFn<Login> { Box::new(|_, _| true) };
    let id = || Getter::new(|l: &Login| Some(&l.id));
    let zero = DedupSettings {
        within: Duration::ZERO,
        ..Default::default()
    };
    let err = Dedup::from_settings(&zero, key(), id(), None).unwrap_err();
    assert_eq!(err.key, "within");
    let none = DedupSettings {
        max_keys: 0,
        ..Default::default()
    };
    let err = Dedup::from_settings(&none, key(), id(), None).unwrap_err();
    assert_eq!(err.key, "max_keys");
}

/// throttle keyed on one field of a struct: each key passes its burst, the excess is
/// dropped and acknowledged.
#[test]
fn throttle_from_typed_settings_on_own_struct() {
    use deadbeat::cogs::flow::throttle::{Throttle, ThrottleSettings};

    let throttle = Throttle::from_settings(
        &ThrottleSettings {
            rate: 0.001,
            burst: Some(2),
            ..Default::default()
        },
        user_key(),
        Getter::new(|l: &Login| Some(&l.id)),
        None,
    )
    .unwrap();
    let (log, acked, esc) = run_keyed(&[1, 1, 2, 1, 1, 2, 2], throttle);

    assert_eq!(
        log.only(&["kept "]),
        ["kept 100 1", "kept 101 1", "kept 102 2", "kept 105 2"]
    );
    assert_eq!(
        acked,
        (100..107).collect::<Vec<_>>(),
        "each login acknowledged"
    );
    let m = esc.metrics();
    assert_eq!(m[0].cogs[1].dropped, 3, "{m:?}");
}
