//! A [`Service`] holding and rewinding supplies: holds reach the supplies within the
//! service's callback, a rewind pauses and resumes the train around the supply's
//! `rewind` and keeps earlier holds, and a supply that was exhausted reads again.

use deadbeat::engine::control::{Inspection, Position, Rewind, RewindError};
use deadbeat::engine::escapement::{CogState, Service, ServiceCx};

use super::*;

/// A supply that says it is exhausted at start; rewound, it emits one datum a little
/// later, then says so again.
struct Rewound {
    log: Log,
}

const AGAIN: Local = 1;

impl Cog<u64> for Rewound {
    fn name(&self) -> &str {
        "rewound"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        cx.exhausted();
        Ok(())
    }

    fn wake(&mut self, local: Local, _: Wake<'_>, out: &mut Out<u64>, cx: &mut Ctx) {
        if local == AGAIN {
            self.log.push("rewound: emit");
            out.push(7);
            cx.exhausted();
        }
    }

    fn pause(&mut self, _: &mut Ctx) {
        self.log.push("rewound: pause");
    }

    fn resume(&mut self, _: &mut Ctx) {
        self.log.push("rewound: resume");
    }

    fn inspect(&self, into: &mut Inspection) {
        into.source("s", 3, Some(1));
    }

    fn rewind(&mut self, to: &Rewind, cx: &mut Ctx) -> Result<u64, RewindError> {
        let Position::Offset(n) = to.to else {
            return Err(RewindError::Invalid("offsets only".into()));
        };
        if to.source != "s" {
            return Err(RewindError::NoSource("no such source".into()));
        }
        self.log.push(format!("rewound: rewind {n}"));
        // Read "again" once the run would have ended, had the flag stayed.
        cx.timer_after(Duration::from_millis(50), AGAIN)
            .map_err(|e| RewindError::Unsupported(e.to_string()))?;
        Ok(n)
    }
}

/// Runs its checks in its first tick, then leaves the run to end by itself.
struct Checker {
    log: Log,
    done: bool,
}

impl Service for Checker {
    fn start(&mut self, cx: &mut ServiceCx<'_>) -> Result<(), BoxError> {
        cx.wake_at(cx.now());
        Ok(())
    }

    fn ready(&mut self, _: Local, _: &mio::event::Event, _: &mut ServiceCx<'_>) {}

    fn tick(&mut self, cx: &mut ServiceCx<'_>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let at = |n| Rewind {
            source: "s".into(),
            to: Position::Offset(n),
        };
        // A hold is seen at once, in the same callback.
        cx.hold(0, 0, true).unwrap();
        assert_eq!(cx.cog_state(0, 0), Some(CogState::Paused));
        self.log.push("checker: held");
        // Rewound while held: no resume, still held after.
        assert_eq!(cx.rewind(0, 0, &at(5)), Ok(5));
        assert_eq!(cx.cog_state(0, 0), Some(CogState::Paused));
        assert!(cx.is_held(0, 0));
        cx.hold(0, 0, false).unwrap();
        assert_eq!(cx.cog_state(0, 0), Some(CogState::Running));
        self.log.push("checker: released");
        // Not held: paused, rewound, resumed.
        assert_eq!(cx.rewind(0, 0, &at(2)), Ok(2));
        assert_eq!(cx.cog_state(0, 0), Some(CogState::Running));
        // Refusals: the supply's own, one without a rewind, a cog that is no supply.
        let wrong = Rewind {
            source: "t".into(),
            to: Position::Offset(0),
        };
        assert!(matches!(
            cx.rewind(0, 0, &wrong),
            Err(RewindError::NoSource(_))
        ));
        let e = cx.rewind(0, 1, &at(0)).unwrap_err();
        assert!(
            matches!(&e, RewindError::Unsupported(m) if m.contains("plain cannot read")),
            "{e:?}"
        );
        assert!(matches!(
            cx.rewind(0, 2, &at(0)),
            Err(RewindError::Unsupported(_))
        ));
        let ins = cx.inspect(0, 0);
        assert_eq!(
            (ins.sources[0].read, ins.sources[0].acknowledged),
            (3, Some(1))
        );
        assert!(cx.inspect(0, 2).is_empty());
        self.log.push("checker: checked");
    }
}

#[test]
fn holds_apply_at_once_and_rewinds_keep_them() {
    let log = Log::default();
    let l = log.clone();
    let mut esc = Escapement::with_options(opts()).unwrap();
    // `plain` says it is exhausted once `rewound` was rewound: had `rewound` stayed
    // exhausted, the run would end there, before `rewound` reads again.
    let plain = Probe::new("plain", &log).supply().on_resume(move |cx| {
        if l.entries().iter().any(|e| e == "rewound: rewind 2") {
            cx.exhausted();
        }
    });
    let train = Train::new("t")
        .cog(Rewound { log: log.clone() })
        .cog(plain)
        .cog(Probe::drain("drain", &log));
    esc.add_train(train).unwrap();
    esc.set_service(Box::new(Checker {
        log: log.clone(),
        done: false,
    }))
    .unwrap();
    run(&mut esc, &log);
    let seen = log.only(&["rewound:", "checker:", "drain: got"]);
    assert_eq!(
        seen,
        strs(&[
            "rewound: pause",
            "checker: held",
            "rewound: rewind 5",
            // Held before the rewind: resumed only when released.
            "rewound: resume",
            "checker: released",
            "rewound: pause",
            "rewound: rewind 2",
            "rewound: resume",
            // The refused rewinds pause and resume the train too.
            "rewound: pause",
            "rewound: resume",
            "rewound: pause",
            "rewound: resume",
            "checker: checked",
            // One read again per rewind that succeeded.
            "rewound: emit",
            "drain: got 7",
            "rewound: emit",
            "drain: got 7",
        ]),
        "{log:?}"
    );
}
