//! Signals sent to this process reach the cogs that bound them, and only while bound.
//!
//! Every test here holds [`signal_lock`] and raises its signals from inside the loop, once
//! the escapement has installed its handlers.

use deadbeat::prelude::*;
use libc::{SIGHUP, SIGUSR1, SIGUSR2};

use super::{Log, Probe, opts, raise, run, run_train, signal_lock, strs};

#[test]
fn signals_reach_every_cog_that_bound_them() {
    let _g = signal_lock();
    let log = Log::default();
    // Both cogs bind from a wake, not in start: the first binding sets up the signal
    // source on the running loop, the later ones add to it.
    let l = log.clone();
    let a = Probe::<u64>::new("a", &log)
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |local, why, _, cx| match why {
            Wake::Immediate => {
                cx.signal(SIGUSR1, 1).unwrap();
                raise(SIGUSR1);
            }
            Wake::Signal(sig) => {
                l.push(format!("a: signal {sig} local {local}"));
                raise(SIGUSR2);
            }
            other => l.push(format!("a: unexpected {other:?}")),
        });
    let l = log.clone();
    let b = Probe::<u64>::new("b", &log)
        .supply()
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |local, why, _, cx| match why {
            // Same turn as a's: the SIGUSR1 a raised is read only in the next turn, so b
            // gets it too.
            Wake::Immediate => {
                cx.signal(SIGUSR2, 2).unwrap();
                cx.signal(SIGUSR1, 3).unwrap();
            }
            Wake::Signal(sig) => {
                l.push(format!("b: signal {sig} local {local}"));
                if sig == SIGUSR2 {
                    cx.exhausted();
                }
            }
            other => l.push(format!("b: unexpected {other:?}")),
        });
    run_train(Train::new("t").cog(a).cog(b), &log);
    assert_eq!(
        log.entries(),
        strs(&[
            &format!("a: signal {SIGUSR1} local 1"),
            &format!("b: signal {SIGUSR1} local 3"),
            &format!("b: signal {SIGUSR2} local 2"),
            "a: finish",
            "b: finish",
            "a: done",
            "b: done",
        ])
    );
}

#[test]
fn unsignal_stops_delivery_to_that_cog_only() {
    let _g = signal_lock();
    let log = Log::default();
    let l = log.clone();
    let a = Probe::<u64>::new("a", &log)
        .on_start(|cx| {
            cx.signal(SIGUSR1, 1)?;
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |local, why, _, cx| match why {
            Wake::Immediate => raise(SIGUSR1),
            Wake::Signal(sig) => {
                l.push(format!("a: signal {sig} local {local}"));
                cx.unsignal(SIGUSR1);
                raise(SIGUSR1);
            }
            other => l.push(format!("a: unexpected {other:?}")),
        });
    // Bound to the same signal throughout: its second delivery shows the signal raised
    // after a's unsignal did arrive (every signal raised here is waited for, so none is
    // left over for the next test).
    let l = log.clone();
    let mut seen = 0;
    let b = Probe::<u64>::new("b", &log)
        .supply()
        .on_start(|cx| {
            cx.signal(SIGUSR1, 7)?;
            Ok(())
        })
        .on_wake(move |local, why, _, cx| match why {
            Wake::Signal(sig) => {
                l.push(format!("b: signal {sig} local {local}"));
                seen += 1;
                if seen == 2 {
                    cx.exhausted();
                }
            }
            other => l.push(format!("b: unexpected {other:?}")),
        });
    run_train(Train::new("t").cog(a).cog(b), &log);
    assert_eq!(
        log.entries(),
        strs(&[
            &format!("a: signal {SIGUSR1} local 1"),
            &format!("b: signal {SIGUSR1} local 7"),
            &format!("b: signal {SIGUSR1} local 7"),
            "a: finish",
            "b: finish",
            "a: done",
            "b: done",
        ])
    );
}

#[test]
fn sighup_broadcasts_reopen_with_control_signals() {
    let _g = signal_lock();
    let log = Log::default();
    let a = Probe::<u64>::new("a", &log)
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        // The escapement installed its SIGHUP handler before any cog started.
        .on_wake(|_, _, _, _| raise(SIGHUP));
    let b = Probe::<u64>::new("b", &log);
    let l = log.clone();
    let c = Probe::<u64>::new("c", &log).supply().on_reopen(move |cx| {
        l.push("c: exhausted after reopen");
        cx.exhausted();
    });
    let mut esc = Escapement::with_options(Options {
        control_signals: true,
        ..opts()
    })
    .unwrap();
    esc.add_train(Train::new("t").cog(a).cog(b)).unwrap();
    esc.add_train(Train::new("u").cog(c)).unwrap();
    run(&mut esc, &log);
    assert_eq!(
        log.only(&["a: reopen", "b: reopen", "c: "]),
        strs(&[
            "a: reopen",
            "b: reopen",
            "c: reopen",
            "c: exhausted after reopen",
            "c: finish",
            "c: done"
        ])
    );
}

/// Keeps what the escapement logs, as `"msg key=value ..."` lines.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

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

#[test]
fn sigusr1_logs_every_cogs_counters_with_control_signals() {
    let _g = signal_lock();
    let log = Log::default();
    let capture = Capture::default();
    let supply = super::counting_supply("s", &log, vec![1u64, 2]);
    // Waits for the data, asks for the counters, and ends once they are logged.
    let mut seen = 0;
    let logged = capture.clone();
    let drain = Probe::<u64>::new("d", &log)
        .supply()
        .on_process(move |_, _, cx| {
            seen += 1;
            if seen == 2 {
                raise(SIGUSR1);
                cx.timer_every(std::time::Duration::from_millis(2), 1)
                    .unwrap();
            }
        })
        .on_wake(move |_, _, _, cx| {
            if logged
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with("counters"))
            {
                cx.exhausted();
            }
        });
    let mut esc = Escapement::with_options(Options {
        control_signals: true,
        logger: Some(deadbeat::slog::Logger::root(
            capture.clone(),
            deadbeat::slog::o!(),
        )),
        ..opts()
    })
    .unwrap();
    esc.add_train(Train::new("t").cog(supply).cog(drain))
        .unwrap();
    run(&mut esc, &log);
    let lines = capture.0.lock().unwrap().clone();
    let counters: Vec<&String> = lines.iter().filter(|l| l.starts_with("counters")).collect();
    assert!(
        counters
            .iter()
            .any(|l| l.contains("train=t") && l.contains("cog=s#1") && l.contains("out=2")),
        "{lines:#?}"
    );
    assert!(
        counters
            .iter()
            .any(|l| l.contains("train=t") && l.contains("cog=d#2") && l.contains("in=2")),
        "{lines:#?}"
    );
}
