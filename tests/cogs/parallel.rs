//! `parallel` in-process, on a datum of the test's own and sub-trains built in Rust: order
//! over 200k data, acknowledgements of what the sub-train drops, data that yield many,
//! backpressure, shutdown with batches out, a worker that panics, cogs that cannot run on
//! a worker, and the sub-train built on each worker's own thread.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadbeat::Escapement;
use deadbeat::cogs::flow::parallel::{Parallel, ParallelSettings};
use deadbeat::prelude::*;

use crate::engine::{Log, opts, run};

/// A datum: its id and a number.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    id: EventId,
    n: u64,
}

/// What the supply saw and what the drain got, shared with the test.
#[derive(Clone, Default)]
struct Seen {
    emitted: Rc<Cell<u64>>,
    acked: Rc<RefCell<Vec<EventId>>>,
    pauses: Rc<Cell<u32>>,
    resumes: Rc<Cell<u32>>,
    got: Rc<RefCell<Vec<Item>>>,
    /// What the drain had when the supply was told to finish.
    got_at_finish: Rc<Cell<Option<usize>>>,
}

/// Emits `Item { n: 0.. }` (ids from the escapement), `per_wake` a turn, until `total`;
/// stops injecting while paused. With `stop`, it starts the shutdown once it has emitted
/// that many instead of being exhausted.
struct Source {
    total: u64,
    per_wake: u64,
    stop: bool,
    paused: bool,
    seen: Seen,
}

impl Cog<Item> for Source {
    fn name(&self) -> &str {
        "source"
    }
    fn is_supply(&self) -> bool {
        true
    }
    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        cx.enqueue(0);
        Ok(())
    }
    fn wake(&mut self, _: Local, _: Wake<'_>, out: &mut Out<Item>, cx: &mut Ctx) {
        if self.paused || cx.is_shutting_down() {
            return;
        }
        let from = self.seen.emitted.get();
        let to = (from + self.per_wake).min(self.total);
        for n in from..to {
            out.push(Item {
                id: cx.new_event_id(),
                n,
            });
        }
        self.seen.emitted.set(to);
        if to < self.total {
            cx.enqueue(0);
        } else if self.stop {
            cx.shutdown();
        } else {
            cx.exhausted();
        }
    }
    fn pause(&mut self, _: &mut Ctx) {
        self.paused = true;
        self.seen.pauses.set(self.seen.pauses.get() + 1);
    }
    fn resume(&mut self, cx: &mut Ctx) {
        self.paused = false;
        self.seen.resumes.set(self.seen.resumes.get() + 1);
        cx.enqueue(0);
    }
    fn event_done(&mut self, ids: &[EventId], _: &mut Ctx) {
        self.seen.acked.borrow_mut().extend_from_slice(ids);
    }
    fn finish(&mut self, _: &mut Out<Item>, _: &mut Ctx) {
        self.seen
            .got_at_finish
            .set(Some(self.seen.got.borrow().len()));
    }
}

/// Keeps what reaches it and acknowledges it.
struct Sink(Seen);

impl Cog<Item> for Sink {
    fn name(&self) -> &str {
        "sink"
    }
    fn process_batch(&mut self, batch: &mut Vec<Item>, _: &mut Out<Item>, cx: &mut Ctx) {
        for d in batch.iter() {
            cx.event_done(d.id);
        }
        self.0.got.borrow_mut().append(batch);
    }
}

/// The worker's transform: `n` becomes `2n + 1`; `n % 7 == 3` is dropped (acknowledged),
/// `n % 11 == 5` counted as an error (and kept, unless dropped). Batches take uneven time,
/// so workers overtake each other.
struct Work {
    /// Holds an `Rc`: the sub-train is built on the worker and never crosses threads.
    _local: Rc<()>,
}

impl Cog<Item> for Work {
    fn name(&self) -> &str {
        "work"
    }
    fn process_batch(&mut self, batch: &mut Vec<Item>, out: &mut Out<Item>, cx: &mut Ctx) {
        if let Some(first) = batch.first()
            && first.n % 3 == 0
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        for mut d in batch.drain(..) {
            if d.n % 11 == 5 {
                out.count_errors(1);
            }
            if d.n % 7 == 3 {
                cx.event_done(d.id);
                out.count_dropped(1);
                continue;
            }
            d.n = 2 * d.n + 1;
            out.push(d);
        }
    }
}

fn work() -> Work {
    Work {
        _local: Rc::new(()),
    }
}

/// What `Work` makes of `0..total`.
fn expected(total: u64) -> Vec<u64> {
    (0..total)
        .filter(|n| n % 7 != 3)
        .map(|n| 2 * n + 1)
        .collect()
}

fn settings(workers: usize, batch: usize, max_in_flight: usize) -> ParallelSettings {
    ParallelSettings {
        workers,
        batch,
        max_in_flight,
        ..Default::default()
    }
}

/// Runs `source → parallel(sub) → sink` to the end; returns the escapement for its
/// metrics.
fn run_parallel<F>(source: Source, s: ParallelSettings, sub: F) -> Escapement
where
    F: Fn() -> Result<Train<Item>, BoxError> + Send + Sync + 'static,
{
    let seen = source.seen.clone();
    let par = Parallel::from_settings(&s, sub).unwrap();
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("main").cog(source).cog(par).cog(Sink(seen)))
        .unwrap();
    run(&mut esc, &Log::default());
    esc
}

fn source(total: u64, per_wake: u64, seen: &Seen) -> Source {
    Source {
        total,
        per_wake,
        stop: false,
        paused: false,
        seen: seen.clone(),
    }
}

#[test]
fn order_drops_errors_and_acknowledgements_over_200k() {
    let total = 200_000;
    let seen = Seen::default();
    let esc = run_parallel(source(total, 1000, &seen), settings(3, 64, 6), || {
        Ok(Train::new("sub").cog(work()))
    });
    let got: Vec<u64> = seen.got.borrow().iter().map(|d| d.n).collect();
    let want = expected(total);
    assert_eq!(got.len(), want.len(), "data lost or added");
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!(
            "out of order at {i}: {:?} for {:?}",
            &got[i..i + 5],
            &want[i..i + 5]
        );
    }
    // Every datum acknowledged exactly once: the drops on the workers, the rest by the sink.
    let acked = seen.acked.borrow();
    assert_eq!(acked.len() as u64, total);
    assert_eq!(acked.iter().collect::<HashSet<_>>().len() as u64, total);
    let m = &esc.metrics()[0].cogs[1];
    assert_eq!(m.id, "parallel#2");
    assert_eq!(m.data_in, total);
    assert_eq!(m.data_out, want.len() as u64);
    assert_eq!(m.dropped, (0..total).filter(|n| n % 7 == 3).count() as u64);
    assert_eq!(m.errors, (0..total).filter(|n| n % 11 == 5).count() as u64);
    // At most six batches of 64 out at a time, with 1000 arriving a turn: it paused.
    // Resumed each time (but maybe the last, once the supply had finished).
    assert!(seen.pauses.get() >= 1, "never paused");
    assert!(seen.resumes.get() + 1 >= seen.pauses.get());
    assert!(seen.resumes.get() >= 1, "never resumed");
}

/// Gives every datum with `n % 5 == 0` a twin under a fresh id, taken on the worker.
struct Twin;

impl Cog<Item> for Twin {
    fn name(&self) -> &str {
        "twin"
    }
    fn process(&mut self, d: Item, out: &mut Out<Item>, cx: &mut Ctx) {
        if d.n.is_multiple_of(5) {
            let twin = Item {
                id: cx.new_event_id(),
                n: d.n,
            };
            out.push(d);
            out.push(twin);
        } else {
            out.push(d);
        }
    }
}

#[test]
fn a_datum_that_yields_many_keeps_order_and_distinct_ids() {
    let total = 20_000;
    let seen = Seen::default();
    run_parallel(source(total, 500, &seen), settings(2, 50, 0), || {
        Ok(Train::new("sub").cog(Twin))
    });
    let got = seen.got.borrow();
    let mut want = Vec::new();
    for n in 0..total {
        want.push(n);
        if n % 5 == 0 {
            want.push(n);
        }
    }
    assert_eq!(got.iter().map(|d| d.n).collect::<Vec<_>>(), want);
    let ids: HashSet<EventId> = got.iter().map(|d| d.id).collect();
    assert_eq!(ids.len(), got.len(), "two data share an id");
    // Ids taken on the workers come from blocks far above the escapement's.
    let fresh = got.iter().filter(|d| d.id > total).count();
    assert_eq!(fresh as u64, total / 5);
    assert!(got.iter().filter(|d| d.id > total).all(|d| d.id >= 1 << 63));
    // The supply's own data were all acknowledged; the twins' acks went to nobody's tracker.
    let acked: HashSet<EventId> = seen.acked.borrow().iter().copied().collect();
    assert!((1..=total).all(|id| acked.contains(&id)));
}

/// Sleeps on each batch, so batches are still out when the shutdown comes.
struct Slow;

impl Cog<Item> for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    fn process_batch(&mut self, batch: &mut Vec<Item>, out: &mut Out<Item>, _: &mut Ctx) {
        std::thread::sleep(Duration::from_millis(3));
        out.push_all(batch);
    }
}

#[test]
fn shutdown_with_batches_in_flight_loses_nothing() {
    let seen = Seen::default();
    let src = Source {
        stop: true,
        ..source(20_000, 1000, &seen)
    };
    run_parallel(src, settings(2, 100, 0), || Ok(Train::new("sub").cog(Slow)));
    let at_finish = seen.got_at_finish.get().expect("the supply finished");
    let emitted = seen.emitted.get();
    assert_eq!(emitted, 20_000);
    assert!(
        (at_finish as u64) < emitted,
        "nothing was in flight at the shutdown ({at_finish} of {emitted} through)"
    );
    let got: Vec<u64> = seen.got.borrow().iter().map(|d| d.n).collect();
    assert_eq!(got, (0..emitted).collect::<Vec<_>>());
    assert_eq!(seen.acked.borrow().len() as u64, emitted);
}

/// Panics on the datum `n == 5000`.
struct Fragile;

impl Cog<Item> for Fragile {
    fn name(&self) -> &str {
        "fragile"
    }
    fn process(&mut self, d: Item, out: &mut Out<Item>, _: &mut Ctx) {
        assert!(d.n != 5000, "fragile cog meets 5000");
        out.push(d);
    }
}

#[test]
fn a_worker_panic_loses_its_batch_only_counted_and_unacknowledged() {
    let total = 10_000;
    let seen = Seen::default();
    let esc = run_parallel(source(total, 1000, &seen), settings(2, 100, 0), || {
        Ok(Train::new("sub").cog(Fragile))
    });
    // Batches of 100 cut from turns of 1000: 5000 is in the batch 5000..5100.
    let lost = 5000..5100;
    let got: Vec<u64> = seen.got.borrow().iter().map(|d| d.n).collect();
    let want: Vec<u64> = (0..total).filter(|n| !lost.contains(n)).collect();
    assert_eq!(got, want);
    let m = &esc.metrics()[0].cogs[1];
    assert_eq!(m.errors, 100);
    let acked: HashSet<EventId> = seen.acked.borrow().iter().copied().collect();
    assert_eq!(acked.len() as u64, total - 100);
    assert!(
        !acked.contains(&5001),
        "the lost datum n = 5000 (id 5001) was acknowledged"
    );
}

/// Sets a timer in `start`, which a worker never delivers.
struct Ticks;

impl Cog<Item> for Ticks {
    fn name(&self) -> &str {
        "ticks"
    }
    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        cx.timer_every(Duration::from_secs(1), 0)?;
        Ok(())
    }
}

/// Asks for an immediate call in `start`.
struct Eager;

impl Cog<Item> for Eager {
    fn name(&self) -> &str {
        "eager"
    }
    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        cx.enqueue(0);
        Ok(())
    }
}

/// Runs a train whose `parallel` cannot start; returns the error.
fn start_error<F>(sub: F) -> String
where
    F: Fn() -> Result<Train<Item>, BoxError> + Send + Sync + 'static,
{
    let seen = Seen::default();
    let par = Parallel::from_settings(&settings(2, 10, 0), sub).unwrap();
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(
        Train::new("main")
            .cog(source(10, 10, &seen))
            .cog(par)
            .cog(Sink(seen.clone())),
    )
    .unwrap();
    let e = esc.run().expect_err("the run should not start");
    assert!(seen.got.borrow().is_empty());
    e.to_string()
}

#[test]
fn cogs_that_need_the_loop_cannot_start_on_a_worker() {
    let e = start_error(|| Ok(Train::new("sub").cog(Ticks)));
    assert!(
        e.contains("parallel#2") && e.contains("cannot bind events"),
        "{e}"
    );
    let e = start_error(|| Ok(Train::new("sub").cog(Eager)));
    assert!(e.contains("eager#1") && e.contains("woken"), "{e}");
    let e = start_error(|| Err("no sub-train today".into()));
    assert!(e.contains("no sub-train today"), "{e}");
}

#[test]
fn each_worker_builds_its_own_sub_train_on_its_thread() {
    let threads = Arc::new(Mutex::new(Vec::new()));
    let t = Arc::clone(&threads);
    let seen = Seen::default();
    run_parallel(source(1000, 100, &seen), settings(3, 10, 0), move || {
        let name = std::thread::current().name().unwrap_or("").to_string();
        t.lock().unwrap().push(name);
        Ok(Train::new("sub").cog(work()))
    });
    let mut names = threads.lock().unwrap().clone();
    names.sort();
    assert_eq!(
        names,
        ["deadbeat-par-0", "deadbeat-par-1", "deadbeat-par-2"]
    );
    assert_eq!(
        seen.got.borrow().iter().map(|d| d.n).collect::<Vec<_>>(),
        expected(1000)
    );
}

#[test]
fn settings_out_of_bounds_name_their_key() {
    let sub = || Ok(Train::<Item>::new("sub"));
    let e = Parallel::from_settings(&settings(2, 0, 0), sub).unwrap_err();
    assert_eq!(e.key, "batch");
    let e = Parallel::from_settings(&settings(5000, 10, 0), sub).unwrap_err();
    assert_eq!(e.key, "workers");
}
