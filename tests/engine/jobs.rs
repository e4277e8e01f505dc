//! Worker jobs: results come back to the submitting cog in submission order, panics
//! included, while the loop stays free.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadbeat::prelude::*;

use super::{Log, Probe, opts, run, run_train, strs};

/// How long a job waits for its successor before giving up, so no job can hang a test.
const JOB_WAIT: Duration = Duration::from_secs(5);

fn outcome(job: JobId, r: JobResult) -> String {
    match r {
        Ok(v) => match v.downcast::<u64>() {
            Ok(v) => format!("job {job} ok {v}"),
            Err(_) => format!("job {job} ok of another type"),
        },
        Err(JobPanic(msg)) => format!("job {job} panicked: {msg}"),
    }
}

#[test]
fn job_results_come_back_in_submission_order() {
    const N: u64 = 4;
    let log = Log::default();
    let completed: Arc<Mutex<Vec<u64>>> = Arc::default();
    let c = Arc::clone(&completed);
    let l = log.clone();
    let cog = Probe::<u64>::new("j", &log)
        .supply()
        .on_start(move |cx| {
            // Job i waits on channel i, which job i + 1 closes when it ends (or dies): the
            // jobs complete in reverse order whatever the scheduler does, as if earlier
            // ones had more work. Job 1 panics.
            let (txs, rxs): (Vec<_>, Vec<_>) = (0..N).map(|_| mpsc::channel::<()>()).unzip();
            let mut txs: Vec<Option<mpsc::Sender<()>>> = txs.into_iter().map(Some).collect();
            let mut rxs: Vec<Option<mpsc::Receiver<()>>> = rxs.into_iter().map(Some).collect();
            let mut ids = Vec::new();
            for i in 0..N as usize {
                let wait = if i + 1 < N as usize {
                    rxs[i].take()
                } else {
                    None
                };
                let tell = if i > 0 { txs[i - 1].take() } else { None };
                let i = i as u64;
                let done = Arc::clone(&c);
                let id = cx.submit(move || {
                    if let Some(rx) = wait {
                        let _ = rx.recv_timeout(JOB_WAIT);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    done.lock().unwrap().push(i);
                    // Dropping `tell` (also when unwinding) lets the previous job go.
                    let _tell = tell;
                    if i == 1 {
                        panic!("job {i} fails");
                    }
                    i * 100
                })?;
                ids.push(id);
            }
            assert_eq!(ids, (0..N).collect::<Vec<_>>());
            assert_eq!(cx.jobs_in_flight(), N);
            Ok(())
        })
        .on_job(move |job, r, out, cx| {
            l.push(outcome(job, r));
            out.push(job);
            if cx.jobs_in_flight() == 0 {
                cx.exhausted();
            }
        });
    run_train(Train::new("t").cog(cog).cog(Probe::drain("d", &log)), &log);
    assert_eq!(*completed.lock().unwrap(), vec![3, 2, 1, 0]);
    assert_eq!(
        log.entries(),
        strs(&[
            "job 0 ok 0",
            "d: got 0",
            "job 1 panicked: job 1 fails",
            "d: got 1",
            "job 2 ok 200",
            "d: got 2",
            "job 3 ok 300",
            "d: got 3",
            "j: finish",
            "d: finish",
            "j: done",
            "d: done",
        ])
    );
}

#[test]
fn jobs_are_counted_per_cog_and_do_not_block_the_loop() {
    let log = Log::default();
    let gate: Arc<(Mutex<bool>, std::sync::Condvar)> = Arc::default();
    let g = Arc::clone(&gate);
    let l = log.clone();
    let mut ticks = 0;
    // Cog a's job waits until cog b has seen three timer ticks: the loop keeps turning
    // while a job runs.
    let a = Probe::<u64>::new("a", &log)
        .supply()
        .on_start(move |cx| {
            let g = Arc::clone(&g);
            let id = cx.submit(move || {
                let (m, cv) = &*g;
                let open = cv
                    .wait_timeout_while(m.lock().unwrap(), JOB_WAIT, |open| !*open)
                    .unwrap();
                u64::from(*open.0)
            })?;
            assert_eq!(id, 0);
            Ok(())
        })
        .on_job(move |job, r, _, cx| {
            l.push(format!("a: {}", outcome(job, r)));
            cx.exhausted();
        });
    let l = log.clone();
    let b = Probe::<u64>::new("b", &log)
        .on_start(|cx| {
            cx.timer_every(Duration::from_millis(5), 1)?;
            // Job ids count per cog: b's first job is 0 too.
            assert_eq!(cx.submit(|| 7u64)?, 0);
            Ok(())
        })
        .on_job({
            let l = log.clone();
            move |job, r, _, _| l.push(format!("b: {}", outcome(job, r)))
        })
        .on_wake(move |_, _, _, _| {
            ticks += 1;
            if ticks == 3 {
                l.push("b: third tick");
                let (m, cv) = &*gate;
                *m.lock().unwrap() = true;
                cv.notify_all();
            }
        });
    run_train(Train::new("t").cog(a).cog(b), &log);
    // a's job could only end after b's third tick, on the loop a job never blocks.
    assert_eq!(
        log.only(&["a: job", "b: third"]),
        strs(&["b: third tick", "a: job 0 ok 1"])
    );
    assert_eq!(log.only(&["b: job"]), strs(&["b: job 0 ok 7"]));
}

#[test]
fn many_jobs_of_two_cogs_keep_each_cogs_order() {
    const N: u64 = 300;
    let log = Log::default();
    let mk = |name: &'static str, log: &Log| {
        let got: std::rc::Rc<std::cell::RefCell<Vec<(JobId, u64)>>> = Default::default();
        let g = std::rc::Rc::clone(&got);
        let l = log.clone();
        let cog = Probe::<u64>::new(name, log)
            .supply()
            .on_start(move |cx| {
                for i in 0..N {
                    cx.submit(move || {
                        // Uneven work, so results land out of order.
                        if i % 7 == 0 {
                            std::thread::sleep(Duration::from_micros(300));
                        }
                        i
                    })?;
                }
                Ok(())
            })
            .on_job(move |job, r, _, cx| {
                g.borrow_mut()
                    .push((job, *r.unwrap().downcast::<u64>().unwrap()));
                if cx.jobs_in_flight() == 0 {
                    l.push(format!("{name}: all back"));
                    cx.exhausted();
                }
            });
        (cog, got)
    };
    let (a, got_a) = mk("a", &log);
    let (b, got_b) = mk("b", &log);
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("t").cog(a)).unwrap();
    esc.add_train(Train::new("u").cog(b)).unwrap();
    run(&mut esc, &log);
    let want: Vec<(JobId, u64)> = (0..N).map(|i| (i, i)).collect();
    assert_eq!(*got_a.borrow(), want);
    assert_eq!(*got_b.borrow(), want);
}
