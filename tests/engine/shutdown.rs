//! Shutdown: what starts it, the order of `finish` down each train, the upstream idle
//! rule, lingering, and `done` last.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use deadbeat::inotify::WatchMask;
use deadbeat::mio::net::TcpListener;
use deadbeat::prelude::*;
use libc::{SIGINT, SIGTERM, SIGUSR2};

use super::{
    Log, Probe, TempDir, add_watchdog, counting_supply, opts, raise, run, run_train, run_watched,
    signal_lock, strs,
};

#[test]
fn finish_goes_down_the_train_and_what_it_emits_reaches_the_drain() {
    let log = Log::default();
    let held: Rc<std::cell::RefCell<Vec<u64>>> = Rc::default();
    let h = Rc::clone(&held);
    // Holds every datum until finish, then emits them all.
    let batcher = Probe::<u64>::new("batch", &log)
        .on_process(move |d, _, _| h.borrow_mut().push(d))
        .on_finish(move |out, _| out.extend(held.borrow_mut().drain(..)));
    run_train(
        Train::new("t")
            .cog(counting_supply("s", &log, vec![1u64, 2, 3]))
            .cog(batcher)
            .cog(Probe::drain("d", &log)),
        &log,
    );
    assert_eq!(
        log.entries(),
        strs(&[
            "s: emit 1",
            "s: emit 2",
            "s: emit 3",
            "s: finish",
            "batch: finish",
            "d: got 1",
            "d: got 2",
            "d: got 3",
            "d: finish",
            "s: done",
            "batch: done",
            "d: done",
        ])
    );
}

/// Opens once; jobs wait on it so they are surely in flight when `finish` comes.
#[derive(Default)]
struct Gate(Mutex<bool>, Condvar);

impl Gate {
    fn open(&self) {
        *self.0.lock().unwrap() = true;
        self.1.notify_all();
    }

    fn wait(&self) {
        let g = self.0.lock().unwrap();
        let _ = self
            .1
            .wait_timeout_while(g, Duration::from_secs(5), |open| !*open)
            .unwrap();
    }
}

#[test]
fn finish_waits_until_upstream_jobs_are_back_and_their_data_went_down() {
    let log = Log::default();
    let gate: Arc<Gate> = Arc::default();
    let (l, g) = (log.clone(), Arc::clone(&gate));
    // Resolves every datum on a worker; the workers only run once it is told to finish.
    let resolver = Probe::<u64>::new("r", &log)
        .on_process(move |d, _, cx| {
            let g = Arc::clone(&g);
            cx.submit(move || {
                g.wait();
                d * 10
            })
            .unwrap();
        })
        .on_job(|_, r, out, _| out.push(*r.unwrap().downcast::<u64>().unwrap()))
        .on_finish(move |_, cx| {
            l.push(format!("r: in flight {}", cx.jobs_in_flight()));
            gate.open();
        });
    run_train(
        Train::new("t")
            .cog(counting_supply("s", &log, vec![1u64, 2, 3]))
            .cog(resolver)
            .cog(Probe::new("p", &log))
            .cog(Probe::drain("d", &log)),
        &log,
    );
    assert_eq!(
        log.entries(),
        strs(&[
            "s: emit 1",
            "s: emit 2",
            "s: emit 3",
            "s: finish",
            "r: finish",
            "r: in flight 3",
            "d: got 10",
            "d: got 20",
            "d: got 30",
            "p: finish",
            "d: finish",
            "s: done",
            "r: done",
            "p: done",
            "d: done",
        ])
    );
}

#[test]
fn linger_holds_the_cogs_downstream_and_done_waits_for_every_train() {
    let log = Log::default();
    let l = log.clone();
    // Finishes asynchronously: keeps its bindings, flushes on a timer, then says finished.
    let lingerer = Probe::<u64>::new("slow", &log)
        .on_finish(|_, cx| {
            cx.linger();
            cx.timer_after(Duration::from_millis(20), 1).unwrap();
        })
        .on_wake(move |_, _, out, cx| {
            l.push("slow: flushed");
            out.push(99);
            cx.finished();
            // Bindings are gone with the finish.
            let refused = cx.timer_after(Duration::from_millis(1), 2).is_err();
            l.push(format!("slow: timer after finished refused {refused}"));
        });
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(
        Train::new("t")
            .cog(counting_supply("s", &log, vec![1u64]))
            .cog(lingerer)
            .cog(Probe::drain("d", &log)),
    )
    .unwrap();
    esc.add_train(
        Train::new("u")
            .cog(counting_supply("s2", &log, vec![2u64]))
            .cog(Probe::drain("d2", &log)),
    )
    .unwrap();
    run(&mut esc, &log);
    let train_t = log.only(&["s:", "slow:", "d:"]);
    assert_eq!(
        train_t,
        strs(&[
            "s: emit 1",
            "d: got 1",
            "s: finish",
            "slow: finish",
            "slow: flushed",
            "slow: timer after finished refused true",
            // What a callback emits flows on once it has returned.
            "d: got 99",
            "d: finish",
            "s: done",
            "slow: done",
            "d: done",
        ])
    );
    assert_eq!(
        log.only(&["s2:", "d2:"]),
        strs(&[
            "s2: emit 2",
            "d2: got 2",
            "s2: finish",
            "d2: finish",
            "s2: done",
            "d2: done",
        ])
    );
    // No cog of either train is done before the last finish of both.
    let entries = log.entries();
    let last_finish = entries
        .iter()
        .rposition(|e| e.ends_with(": finish"))
        .unwrap();
    let first_done = entries.iter().position(|e| e.ends_with(": done")).unwrap();
    assert!(last_finish < first_done, "{entries:#?}");
}

#[test]
fn binding_after_finish_is_refused_without_panic() {
    let log = Log::default();
    let dir = TempDir::new("finished");
    let (l, p) = (log.clone(), dir.path().to_owned());
    let l2 = log.clone();
    let cog = Probe::<u64>::new("f", &log)
        .supply()
        .on_start(|cx| {
            cx.exhausted();
            Ok(())
        })
        .on_wake({
            let l = log.clone();
            move |local, why, _, _| l.push(format!("f: unexpected {local} {why:?}"))
        })
        .on_finish(move |_, cx| {
            let d = Duration::from_millis(1);
            let mut lis = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let refused = [
                ("timer_after", cx.timer_after(d, 1).is_err()),
                ("timer_at", cx.timer_at(cx.now(), 2).is_err()),
                ("timer_every", cx.timer_every(d, 3).is_err()),
                (
                    "register",
                    cx.register(&mut lis, 4, Interest::READABLE).is_err(),
                ),
                ("watch", cx.watch(&p, WatchMask::CREATE, 5).is_err()),
                ("signal", cx.signal(SIGUSR2, 6).is_err()),
            ];
            for (what, r) in refused {
                l.push(format!("f: {what} refused {r}"));
            }
            // Ignored rather than refused: nothing comes of it.
            cx.enqueue(7);
        })
        .on_done(move |cx| {
            let r = cx.submit(|| 1u64).is_err();
            l2.push(format!("f: submit after done refused {r}"));
            cx.enqueue(8);
        });
    run_train(Train::new("t").cog(cog), &log);
    assert_eq!(
        log.entries(),
        strs(&[
            "f: finish",
            "f: timer_after refused true",
            "f: timer_at refused true",
            "f: timer_every refused true",
            "f: register refused true",
            "f: watch refused true",
            "f: signal refused true",
            "f: done",
            "f: submit after done refused true",
        ])
    );
}

#[test]
fn exhaustion_waits_for_every_supply() {
    let log = Log::default();
    let l = log.clone();
    let mut ticks = 0;
    let ticker = Probe::<u64>::new("b", &log)
        .supply()
        .on_start(|cx| {
            cx.timer_every(Duration::from_millis(5), 1)?;
            Ok(())
        })
        .on_wake(move |_, _, _, cx| {
            ticks += 1;
            l.push(format!("b: tick {ticks}"));
            if ticks == 3 {
                cx.exhausted();
            }
        });
    let quick = Probe::<u64>::new("a", &log).supply().on_start(|cx| {
        cx.exhausted();
        Ok(())
    });
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(quick)).unwrap();
    esc.add_train(Train::new("u").cog(ticker)).unwrap();
    run(&mut esc, &log);
    assert_eq!(
        log.entries(),
        strs(&[
            "b: tick 1",
            "b: tick 2",
            "b: tick 3",
            "a: finish",
            "b: finish",
            "a: done",
            "b: done",
        ])
    );
}

/// A supply that never runs dry: it ticks until something else stops the loop.
fn endless(name: &str, log: &Log) -> Probe<u64> {
    Probe::<u64>::new(name, log)
        .supply()
        .on_start(|cx| {
            cx.timer_every(Duration::from_millis(2), 1)?;
            Ok(())
        })
        .on_wake(|_, _, out, _| out.push(0))
}

#[test]
fn sigterm_and_sigint_start_a_graceful_shutdown() {
    let _g = signal_lock();
    for (sig, name) in [(SIGTERM, "TERM"), (SIGINT, "INT")] {
        let log = Log::default();
        let raiser = Probe::<u64>::new("r", &log)
            .on_start(|cx| {
                cx.enqueue(0);
                Ok(())
            })
            // The escapement installed its handlers before starting any cog.
            .on_wake(move |_, _, _, _| raise(sig));
        let mut esc = Escapement::with_options(Options {
            shutdown_on_signals: true,
            ..opts()
        })
        .unwrap();
        esc.add_train(Train::new("t").cog(endless("s", &log)).cog(raiser))
            .unwrap();
        run(&mut esc, &log);
        assert_eq!(
            log.entries(),
            strs(&["s: finish", "r: finish", "s: done", "r: done"]),
            "SIG{name}"
        );
    }
}

#[test]
fn a_cog_that_binds_sigterm_gets_it_instead_of_the_shutdown() {
    let _g = signal_lock();
    let log = Log::default();
    let l = log.clone();
    let cog = Probe::<u64>::new("t", &log)
        .supply()
        .on_start(|cx| {
            cx.signal(SIGTERM, 15)?;
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |local, why, _, cx| match why {
            Wake::Immediate => raise(SIGTERM),
            Wake::Signal(sig) => {
                l.push(format!(
                    "t: signal {sig} local {local} shutting down {}",
                    cx.is_shutting_down()
                ));
                cx.exhausted();
            }
            other => l.push(format!("t: unexpected {other:?}")),
        });
    let mut esc = Escapement::with_options(Options {
        shutdown_on_signals: true,
        ..opts()
    })
    .unwrap();
    esc.add_train(Train::new("t").cog(cog)).unwrap();
    run(&mut esc, &log);
    assert_eq!(
        log.entries(),
        strs(&[
            &format!("t: signal {SIGTERM} local 15 shutting down false"),
            "t: finish",
            "t: done",
        ])
    );
}

#[test]
fn shutdown_handle_stops_the_loop_from_another_thread() {
    let log = Log::default();
    let (tx, rx) = mpsc::channel::<()>();
    let l = log.clone();
    let mut ticks = 0;
    let mut tx = Some(tx);
    let cog = Probe::<u64>::new("s", &log)
        .supply()
        .on_start(|cx| {
            cx.timer_every(Duration::from_millis(2), 1)?;
            Ok(())
        })
        .on_wake(move |_, _, _, cx| {
            ticks += 1;
            if ticks == 3 {
                l.push(format!("s: ready, shutting down {}", cx.is_shutting_down()));
                tx.take().unwrap().send(()).unwrap();
            }
        });
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(cog)).unwrap();
    let handle = esc.shutdown_handle();
    let stopper = std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(5)).is_ok() {
            handle.shutdown();
        }
    });
    run(&mut esc, &log);
    stopper.join().unwrap();
    assert_eq!(
        log.entries(),
        strs(&["s: ready, shutting down false", "s: finish", "s: done"])
    );
}

#[test]
fn shutdown_handle_used_before_run_stops_at_once() {
    let log = Log::default();
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(endless("s", &log)))
        .unwrap();
    esc.shutdown_handle().shutdown();
    run(&mut esc, &log);
    assert_eq!(log.entries(), strs(&["s: finish", "s: done"]));
}

#[test]
fn a_cog_can_shut_the_escapement_down() {
    let log = Log::default();
    let l = log.clone();
    let stopper = Probe::<u64>::new("x", &log)
        .on_start(|cx| {
            cx.timer_after(Duration::from_millis(5), 1)?;
            Ok(())
        })
        .on_wake(move |_, _, _, cx| {
            cx.shutdown();
            l.push(format!("x: shutting down {}", cx.is_shutting_down()));
        });
    let seen = Rc::new(Cell::new(0u64));
    let s = Rc::clone(&seen);
    let counter = Probe::<u64>::new("c", &log).on_process(move |_, _, _| s.set(s.get() + 1));
    run_train(
        Train::new("t")
            .cog(endless("s", &log))
            .cog(stopper)
            .cog(counter),
        &log,
    );
    assert_eq!(
        log.entries(),
        strs(&[
            "x: shutting down true",
            "s: finish",
            "x: finish",
            "c: finish",
            "s: done",
            "x: done",
            "c: done",
        ])
    );
    assert!(seen.get() >= 1, "the supply ticked before the stop");
}

#[test]
fn a_cog_failing_to_start_stops_the_run_and_every_cog_gets_done() {
    let log = Log::default();
    let bad = Probe::<u64>::new("bad", &log).on_start(|_| Err("no such port".into()));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(Probe::new("a", &log)).cog(bad))
        .unwrap();
    let err = esc.run().unwrap_err().to_string();
    assert!(err.contains("no such port"), "{err}");
    assert!(err.contains("bad"), "{err}");
    assert_eq!(log.entries(), strs(&["a: done", "bad: done"]));
    // Its cogs are done: running it again is refused rather than waiting forever.
    assert!(esc.run().is_err());

    // The same through an explicit start.
    let log = Log::default();
    let bad = Probe::<u64>::new("bad", &log).on_start(|_| Err("no such port".into()));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(bad)).unwrap();
    assert!(esc.start().is_err());
    assert!(esc.run().is_err());
    assert_eq!(log.entries(), strs(&["bad: done"]));
}

#[test]
fn start_binds_before_run_and_each_happens_once() {
    let log = Log::default();
    let l = log.clone();
    let cog = Probe::<u64>::new("s", &log)
        .supply()
        .on_start(move |cx| {
            l.push("s: start");
            cx.enqueue(0);
            Ok(())
        })
        .on_wake({
            let l = log.clone();
            move |_, _, _, cx| {
                l.push("s: wake");
                cx.exhausted();
            }
        });
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(cog)).unwrap();
    add_watchdog(&mut esc, &log);
    esc.start().unwrap();
    assert_eq!(log.entries(), strs(&["s: start"]));
    assert!(esc.start().is_err());
    // Cogs are started already: a train added now would never start.
    assert!(
        esc.add_train(Train::new("late").cog(Probe::<u64>::new("late", &log)))
            .is_err()
    );
    run_watched(&mut esc, &log);
    assert!(esc.run().is_err());
    assert_eq!(
        log.entries(),
        strs(&["s: start", "s: wake", "s: finish", "s: done"])
    );
}

#[test]
fn a_job_submitted_in_finish_is_waited_for_and_its_data_flow_down() {
    let log = Log::default();
    // Flushes what it holds through a worker when told to finish.
    let flusher = Probe::<u64>::new("f", &log)
        .on_process(|_, _, _| {})
        .on_finish(|_, cx| {
            cx.submit(|| 7u64).unwrap();
        })
        .on_job(|_, r, out, _| out.push(*r.unwrap().downcast::<u64>().unwrap()));
    run_train(
        Train::new("t")
            .cog(counting_supply("s", &log, vec![1u64]))
            .cog(flusher)
            .cog(Probe::drain("d", &log)),
        &log,
    );
    assert_eq!(
        log.only(&["f: ", "d: "]),
        strs(&["f: finish", "d: got 7", "d: finish", "f: done", "d: done"])
    );
}

#[test]
fn a_finished_cog_cannot_start_new_jobs() {
    let log = Log::default();
    let l = log.clone();
    // Finished early; an acknowledgement reaches it after its drain finished too. A job
    // started now would emit into a finished drain.
    let s = Probe::<u64>::new("s", &log)
        .supply()
        .on_start(|cx| {
            cx.exhausted();
            Ok(())
        })
        .on_event_done(move |_, cx| {
            let refused = cx.submit(|| 5u64).is_err();
            l.push(format!("s: submit after finish refused {refused}"));
            // Lingering is for the finish call only: nothing comes back to life.
            cx.linger();
            let refused = cx.timer_after(Duration::from_millis(1), 1).is_err();
            l.push(format!("s: timer after a late linger refused {refused}"));
        })
        .on_job(|_, r, out, _| out.push(*r.unwrap().downcast::<u64>().unwrap()));
    // Another train acknowledges in its finish, after the first train finished.
    let acker = Probe::<u64>::new("a", &log)
        .supply()
        .on_start(|cx| {
            cx.exhausted();
            Ok(())
        })
        .on_finish(|_, cx| cx.event_done(1));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(s).cog(Probe::drain("d", &log)))
        .unwrap();
    esc.add_train(Train::new("u").cog(acker)).unwrap();
    run(&mut esc, &log);
    assert_eq!(
        log.only(&["s: ", "d: "]),
        strs(&[
            "s: finish",
            "d: finish",
            "s: event_done [1]",
            "s: submit after finish refused true",
            "s: timer after a late linger refused true",
            "d: event_done [1]",
            "s: done",
            "d: done",
        ])
    );
}

/// Runs a train whose drain never finishes (its peer never comes back: it lingers in
/// `finish`, `stuck_finish` says how) after one SIGTERM, which the drain raises from its
/// first wake (and again from every wake if `raise_again`). The run must end with an error
/// by `options`' own means (a backstop aborts after 30 s instead of hanging CI); returns the
/// error and how long the run took, after checking every cog was finished then done.
fn run_stuck_shutdown(
    options: Options,
    raise_again: bool,
    stuck_finish: impl Fn(&mut Ctx) + 'static,
) -> (String, Duration) {
    let _g = signal_lock();
    let log = Log::default();
    let stuck = Probe::<u64>::new("stuck", &log)
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |_, _, _, cx| {
            if raise_again || !cx.is_shutting_down() {
                raise(SIGTERM);
            }
        })
        .on_finish(move |_, cx| stuck_finish(cx));
    let mut esc = Escapement::with_options(options).unwrap();
    esc.add_train(Train::new("t").cog(endless("s", &log)).cog(stuck))
        .unwrap();
    add_watchdog(&mut esc, &log);
    let (tx, rx) = mpsc::channel::<()>();
    let backstop = std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            eprintln!("the stuck shutdown was never ended");
            std::process::abort();
        }
    });
    let started = Instant::now();
    let result = esc.run();
    let took = started.elapsed();
    tx.send(()).unwrap();
    backstop.join().unwrap();
    let err = result.expect_err("a forced stop is not a clean one");
    let entries = log.only(&["s:", "stuck:", "WATCHDOG"]);
    assert_eq!(
        entries,
        strs(&["s: finish", "stuck: finish", "s: done", "stuck: done"]),
        "{:#?}",
        log.entries()
    );
    (err.to_string(), took)
}

#[test]
fn a_second_sigterm_stops_a_shutdown_that_cannot_finish() {
    // The stuck drain wakes on a timer in `finish` and raises the second signal.
    let options = Options {
        shutdown_on_signals: true,
        ..opts()
    };
    let (err, _) = run_stuck_shutdown(options, true, |cx| {
        cx.linger();
        let _ = cx.timer_after(Duration::from_millis(20), 1);
    });
    assert!(err.contains("second signal"), "{err}");
}

#[test]
fn stop_timeout_ends_a_shutdown_that_cannot_finish() {
    // One SIGTERM only: the escapement stops by itself once `stop_timeout` has passed.
    let options = Options {
        shutdown_on_signals: true,
        stop_timeout: Some(Duration::from_millis(300)),
        ..opts()
    };
    let (err, took) = run_stuck_shutdown(options, false, |cx| cx.linger());
    assert!(err.contains("stop_timeout"), "{err}");
    assert!(took >= Duration::from_millis(300), "stopped after {took:?}");
}
