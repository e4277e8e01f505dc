//! `parallel`: runs a chain of transforms on worker threads, batch by batch, in order.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::escapement::{Completion, Detached, Effects, Notice};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::pool::{self, Spares};
use crate::record::{Record, Value};
use crate::schema::{
    CogParams, ConfigError, OwnedParams, Param, ParamType, SettingError, Settings,
};

use super::setting_error;

/// Runs a chain of transforms (its sub-train, declared inside it) on worker threads, batch
/// by batch, and hands the results on in their original order: a CPU-heavy stage (keyed
/// anonymisation, a heavy regex) uses the other cores while the escapement stays
/// single-threaded. What the train sees is what it would see with the sub-train's cogs in
/// its place: the same records in the same order, the same acknowledgements.
///
/// ```toml
/// [[train.cog]]
/// type = "parallel"
/// workers = 2                # default: one per core
/// batch = 1024               # most records per batch handed to a worker
/// render = "none"            # "json": the workers also render each record (see below)
///
///   [[train.cog.cog]]        # the sub-train, in order, written as a train's cogs
///   type = "regex"
///   preset = "apache_combined"
///
///   [[train.cog.cog]]
///   type = "anonymise"
///   field = "client"
///   mode = "keyed"
///   key_file = "/etc/deadbeat/anon.key"
/// ```
///
/// Each worker builds its own instance of the sub-train, on its own thread, from the same
/// configuration. An incoming batch is cut into batches of at most `batch` records, which
/// go out at once (nothing waits to fill a batch); whichever worker is free takes the next
/// one. Results come back through the escapement's job completions and are emitted in the
/// order the batches went out. At most `max_in_flight` batches are out at a time: beyond,
/// the train's supplies are paused until half of them are back.
///
/// With `render = "json"`, the workers also render each record as one JSON object (the
/// bytes a drain's `format = "json"` writes) into its `message` field, which becomes its
/// only field: a drain with `format = "raw"` after `parallel` then writes the same lines,
/// and the loop's thread only copies bytes instead of rendering fields made on another
/// core (see [`RenderJson`]).
///
/// Acknowledgements and renames the sub-train's cogs make on a worker (a `filter` dropping
/// a record, an `anonymise` dropping an address it cannot read) are replayed on the loop's
/// thread when their batch comes back, so supplies and checkpoints hear of them as usual;
/// what the sub-cogs drop or fail on counts as this cog's dropped and errors. A worker that
/// panics on a batch loses it: its records are counted as errors, logged and not
/// acknowledged (a checkpointing supply sends them again after a restart). At shutdown the
/// batches out are waited for, then every worker finishes its sub-train.
///
/// Only pure transforms run on workers: cogs that need nothing but their records (`pass`,
/// `filter`, `set`, `copy`, `rename`, `remove`, `regex`, `simple_pattern`, the `*_parse`
/// cogs, `anonymise`, `cidr_tag`). Supplies and drains, cogs that keep state across
/// records (each worker would keep its own: `dedup`, `throttle`, `merge`, `multiline`,
/// `window`, `threshold`), that reach other trains (`route`, `tee`, `on_error =
/// "train:NAME"`) or that bind events (`dns_reverse`, `exec`, `geoip`, `lookup`) are refused
/// when the configuration loads, naming the key.
///
/// Records cross threads both ways, and so would their storage: the loop's thread recycles
/// the text the workers parsed, a worker the lines the loop's thread read. Each batch
/// therefore carries the spare buffers of the thread that sends it to the thread that
/// takes that kind (`record::pool::take_spares`), and the allocator sees few buffers
/// freed on another thread than the one that allocated them; for those, glibc is kept to
/// one malloc arena once a `parallel` starts (see `one_arena`). At debug level, `done`
/// logs the CPU time of the workers and of the loop's thread: which of the two bounds the
/// rate.
///
/// From Rust, with a function that builds the sub-train (called on each worker thread):
/// `Parallel::from_settings(&ParallelSettings { workers: 2, ..Default::default() }, || Ok(Train::new("sub").cog(MyCog)))`.
pub struct Parallel<D: Send + 'static> {
    workers: usize,
    batch: usize,
    max_in_flight: u64,
    factory: SubTrainFactory<D>,
    queue: Arc<Queue<Msg<D>>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    paused: bool,
    /// Batches handed to the workers.
    batches_sent: u64,
    /// The sub-train's counters, summed over the workers that finished.
    totals: Option<TrainMetrics>,
    /// CPU time of the workers that finished.
    worker_cpu: Duration,
    /// Spares this thread recycled, taken before each result goes on (so that results
    /// coming back together do not overflow the stash), for the next batch out.
    spares: Spares,
}

/// Builds one instance of a `parallel` sub-train; called once on each worker thread.
pub type SubTrainFactory<D> = Arc<dyn Fn() -> Result<Train<D>, BoxError> + Send + Sync>;

impl<D: Send + 'static> std::fmt::Debug for Parallel<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parallel")
            .field("workers", &self.workers)
            .field("batch", &self.batch)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

crate::choice! {
    /// What the workers hand back (`render`).
    pub enum Render { Records = "none", Json = "json" }
}

crate::settings! {
    /// Settings of `parallel`, beside its sub-train (`cog`).
    pub struct ParallelSettings {
        /// worker threads, each running its own instance of the sub-train; 0: one per core
        workers: usize = "0",
        /// most records per batch handed to a worker (a smaller batch goes out at once)
        batch: usize = "1024",
        /// most batches out on the workers before the train's supplies are paused; 0: four per worker
        max_in_flight: usize = "0",
        /// none: the records as the sub-train leaves them; json: the workers also render each
        /// record as one JSON object (as a drain's format = "json" writes it) into its
        /// `message` field, its only field, for a drain with format = "raw" after parallel
        render: Render = "none",
    }
}

/// Most workers a `parallel` takes.
pub const MAX_WORKERS: usize = 1024;

/// How long `start` waits for the workers to build their sub-trains.
const BUILD_TIMEOUT: Duration = Duration::from_secs(60);

const PARAMS_LEN: usize = ParallelSettings::PARAMS.len() + 1;
static PARAMS: [Param; PARAMS_LEN] = crate::schema::settings::concat_params(&[
    ParallelSettings::PARAMS,
    &[Param::req(
        "cog",
        ParamType::Cogs,
        "the sub-train run on the workers: [[train.cog.cog]] tables, in order, each with its \
         type and keys as in a train (pure transforms only)",
    )],
]);

/// The descriptor of `parallel`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "parallel",
    kind: CogKind::Transform,
    summary: "runs a sub-train of transforms ([[train.cog.cog]]) on worker threads, batch by \
              batch; order and acknowledgements kept",
    params: &PARAMS,
    fields: &[],
    build,
};

/// To a worker: a batch to run through the sub-train (with spare buffers from the loop's
/// thread), or the end.
enum Msg<D> {
    Batch(Vec<D>, Completion, Box<Spares>),
    Finish(Completion),
}

/// The batches waiting for a worker. A mutex and a condition variable: a worker waiting
/// for work sleeps at once, where a channel spins a while first, and with the loop's
/// thread and the workers sharing the cores a spinning worker takes time from the others.
///
/// A push wakes a worker only when one sleeps and no wake-up is already on its way to it:
/// a worker that is running takes the next message before it sleeps, so while the
/// workers are busy the loop's thread makes no system call per batch, and a burst of
/// batches wakes each sleeper once. The counts are kept under the lock a sleeper counted
/// itself under, and its wait releases that lock, so no push is missed.
struct Queue<T> {
    state: Mutex<QueueState<T>>,
    ready: Condvar,
}

struct QueueState<T> {
    msgs: VecDeque<T>,
    closed: bool,
    /// Workers waiting on `ready` that no push has woken yet.
    sleeping: usize,
    /// Wake-ups sent that no worker has woken from yet. A worker that wakes takes one of
    /// these, or, if there is none (a spurious wake-up), leaves `sleeping`: either way the
    /// two count the workers still inside `wait`.
    signalled: usize,
    /// Wake-ups pushes sent, for the debug line in `done`.
    wakes: u64,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            state: Mutex::new(QueueState {
                msgs: VecDeque::new(),
                closed: false,
                sleeping: 0,
                signalled: 0,
                wakes: 0,
            }),
            ready: Condvar::new(),
        }
    }
}

impl<T> Queue<T> {
    /// Queues `m` for a worker; `false` (and `m` dropped) once closed.
    fn push(&self, m: T) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.closed {
            return false;
        }
        s.msgs.push_back(m);
        let wake = s.sleeping > 0;
        if wake {
            s.sleeping -= 1;
            s.signalled += 1;
            s.wakes += 1;
        }
        drop(s);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// The next message, waiting for one; `None` once closed and empty.
    fn pop(&self) -> Option<T> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(m) = s.msgs.pop_front() {
                return Some(m);
            }
            if s.closed {
                return None;
            }
            s.sleeping += 1;
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
            if s.signalled > 0 {
                s.signalled -= 1;
            } else {
                s.sleeping -= 1;
            }
        }
    }

    /// No more messages: workers end once the queue is empty.
    fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.ready.notify_all();
    }

    /// Wake-ups sent so far.
    fn wakes(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).wakes
    }
}

/// From a worker: a batch through the sub-train (or what `finish` emitted).
struct Ran<D> {
    data: Vec<D>,
    dropped: u64,
    errors: u64,
    effects: Effects,
    /// The panic that lost the batch.
    panic: Option<String>,
    /// The worker's sub-train counters and CPU time, with its last result.
    metrics: Option<(TrainMetrics, Duration)>,
    /// Spare buffers from the worker's stash, for the loop's thread.
    spares: Spares,
}

impl<D: Send + 'static> Parallel<D> {
    /// A `parallel` made from its settings: `factory` builds the sub-train, once on each
    /// worker thread (so its cogs need not be `Send`); the workers start with the cog.
    pub fn from_settings<F>(s: &ParallelSettings, factory: F) -> Result<Self, SettingError>
    where
        F: Fn() -> Result<Train<D>, BoxError> + Send + Sync + 'static,
    {
        if s.workers > MAX_WORKERS {
            return Err(SettingError::new(
                "workers",
                format!("expected at most {MAX_WORKERS} workers (0: one per core)"),
            ));
        }
        if s.batch == 0 {
            return Err(SettingError::new("batch", "expected at least 1 record"));
        }
        let workers = match s.workers {
            0 => std::thread::available_parallelism().map_or(2, NonZeroUsize::get),
            n => n,
        };
        let max_in_flight = match s.max_in_flight {
            0 => 4 * workers,
            n => n,
        };
        Ok(Parallel {
            workers,
            batch: s.batch,
            max_in_flight: max_in_flight as u64,
            factory: Arc::new(factory),
            queue: Arc::new(Queue::default()),
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            paused: false,
            batches_sent: 0,
            totals: None,
            worker_cpu: Duration::ZERO,
            spares: Spares::default(),
        })
    }

    /// Hands `chunk` to the workers.
    fn send(&mut self, chunk: Vec<D>, spares: Spares, out: &mut Out<D>, cx: &mut Ctx) {
        let n = chunk.len() as u64;
        let sent = match cx.reserve_job() {
            Ok(completion) => self
                .queue
                .push(Msg::Batch(chunk, completion, Box::new(spares))),
            Err(_) => false,
        };
        if !sent {
            // Not acknowledged: a checkpointing supply sends them again after a restart.
            out.count_errors(n);
            slog::error!(cx.logger(), "the workers are gone: records lost"; "records" => n);
            return;
        }
        self.batches_sent += 1;
        if !self.paused && cx.jobs_in_flight() >= self.max_in_flight {
            self.paused = true;
            cx.pause_supplies();
        }
    }

    /// Stops the workers (what they have not started is dropped) and waits for them.
    fn stop_workers(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.queue.close();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    fn add_metrics(&mut self, m: TrainMetrics, cpu: Duration) {
        self.worker_cpu += cpu;
        match &mut self.totals {
            None => self.totals = Some(m),
            Some(t) => {
                for (sum, c) in t.cogs.iter_mut().zip(m.cogs) {
                    sum.data_in += c.data_in;
                    sum.data_out += c.data_out;
                    sum.dropped += c.dropped;
                    sum.errors += c.errors;
                    sum.busy += c.busy;
                }
            }
        }
    }
}

impl<D: Send + 'static> Drop for Parallel<D> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

impl<D: Send + 'static> Cog<D> for Parallel<D> {
    fn name(&self) -> &str {
        "parallel"
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        one_arena();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        for i in 0..self.workers {
            let (queue, ready) = (Arc::clone(&self.queue), ready_tx.clone());
            let stop = Arc::clone(&self.stop);
            let factory = Arc::clone(&self.factory);
            let logger = cx.logger().new(slog::o!("worker" => i));
            let spawned = std::thread::Builder::new()
                .name(format!("deadbeat-par-{i}"))
                .spawn(move || worker(&*factory, &logger, &queue, &ready, &stop));
            match spawned {
                Ok(t) => self.threads.push(t),
                Err(e) => {
                    self.stop_workers();
                    return Err(format!("cannot start worker thread {i}: {e}").into());
                }
            }
        }
        drop(ready_tx);
        let deadline = Instant::now() + BUILD_TIMEOUT;
        for _ in 0..self.workers {
            let left = deadline.saturating_duration_since(Instant::now());
            let why = match ready_rx.recv_timeout(left) {
                Ok(Ok(())) => continue,
                Ok(Err(why)) => why,
                Err(mpsc::RecvTimeoutError::Timeout) => format!(
                    "the workers did not build their sub-train within {}s",
                    BUILD_TIMEOUT.as_secs()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    "a worker ended before building its sub-train".to_string()
                }
            };
            self.stop_workers();
            return Err(why.into());
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        if batch.is_empty() {
            return;
        }
        // What this thread recycled since (the text the workers parsed out, say) goes to
        // the workers, which take buffers of that kind; each part of the batch carries its
        // share.
        let mut spares = std::mem::take(&mut self.spares);
        spares.append(pool::take_spares());
        if batch.len() <= self.batch {
            // The train keeps its buffer's room; the batch travels as it is.
            let chunk = std::mem::replace(batch, Vec::with_capacity(batch.capacity()));
            self.send(chunk, spares, out, cx);
            return;
        }
        let mut left = batch.len();
        let mut rest = std::mem::take(batch).into_iter();
        while left > 0 {
            let chunk: Vec<D> = rest.by_ref().take(self.batch).collect();
            let share = spares.split(chunk.len(), left);
            left -= chunk.len();
            self.send(chunk, share, out, cx);
        }
    }

    fn job_done(&mut self, _job: JobId, result: JobResult, out: &mut Out<D>, cx: &mut Ctx) {
        let ran = match result.map(|r| r.downcast::<Ran<D>>()) {
            Ok(Ok(ran)) => *ran,
            Ok(Err(_)) => {
                slog::error!(
                    cx.logger(),
                    "a worker answered with something else than a batch"
                );
                return;
            }
            Err(e) => {
                slog::error!(cx.logger(), "a batch was lost on its way back"; "error" => %e);
                return;
            }
        };
        let Ran {
            mut data,
            dropped,
            errors,
            effects,
            panic,
            metrics,
            spares,
        } = ran;
        pool::give_spares(spares);
        // What the drain recycled of the result before this one.
        self.spares.append(pool::take_spares());
        out.push_all(&mut data);
        out.count_dropped(dropped);
        out.count_errors(errors);
        if let Some(why) = panic {
            slog::error!(cx.logger(),
                "a worker panicked on a batch: its records are lost (counted as errors, not \
                 acknowledged)";
                "records" => errors, "panic" => why);
        }
        for n in effects.notices {
            match n {
                Notice::Done(id) => cx.event_done(id),
                Notice::Rename(old, new) => cx.event_rename(old, new),
                Notice::Reopen => cx.reopen_all(),
            }
        }
        for f in effects.failures {
            cx.fail(f);
        }
        if effects.shutdown {
            cx.shutdown();
        }
        if let Some((m, cpu)) = metrics {
            self.add_metrics(m, cpu);
        }
        if self.paused && cx.jobs_in_flight() <= self.max_in_flight / 2 {
            self.paused = false;
            cx.resume_supplies();
        }
    }

    fn finish(&mut self, _out: &mut Out<D>, cx: &mut Ctx) {
        if self.paused {
            self.paused = false;
            cx.resume_supplies();
        }
        // Behind every batch already out: each worker takes one and stops, so each
        // finishes its own sub-train once the batches before are taken.
        for _ in 0..self.threads.len() {
            match cx.reserve_job() {
                Ok(c) => {
                    self.queue.push(Msg::Finish(c));
                }
                Err(e) => slog::error!(cx.logger(), "cannot finish a worker"; "error" => %e),
            }
        }
        // What is queued is still taken; a worker finding the queue empty and closed ends.
        self.queue.close();
    }

    fn done(&mut self, cx: &mut Ctx) {
        self.stop_workers();
        // What the workers and the loop's thread cost, to see which one bounds the rate,
        // and how often a batch found every worker asleep.
        slog::debug!(cx.logger(), "parallel: CPU time";
            "workers_ms" => self.worker_cpu.as_millis() as u64,
            "loop_thread_ms" => thread_cpu().as_millis() as u64,
            "batches" => self.batches_sent,
            "worker_wakeups" => self.queue.wakes());
        if let Some(t) = &self.totals {
            for c in &t.cogs {
                slog::debug!(cx.logger(), "sub-train counters, all workers";
                    "sub_cog" => &c.id, "in" => c.data_in, "out" => c.data_out,
                    "dropped" => c.dropped, "errors" => c.errors,
                    "busy_ms" => c.busy.as_millis() as u64);
            }
        }
    }
}

/// One worker thread: builds its sub-train, says so on `ready`, then runs what comes on
/// `queue` until its `Finish`, the queue's end or `stop`.
fn worker<D: Send + 'static>(
    factory: &(dyn Fn() -> Result<Train<D>, BoxError> + Send + Sync),
    logger: &slog::Logger,
    queue: &Queue<Msg<D>>,
    ready: &mpsc::Sender<Result<(), String>>,
    stop: &AtomicBool,
) {
    let built = factory().and_then(|train| {
        let mut t = Detached::new(train, logger)?;
        t.start()?;
        Ok(t)
    });
    let mut sub = match built {
        Ok(t) => t,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    loop {
        // A stop drops what is left: the cog is done and hears no more results.
        let Some(msg) = queue.pop() else { break };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match msg {
            Msg::Batch(mut data, completion, given) => {
                let n = data.len();
                pool::give_spares(*given);
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    sub.process(&mut data)
                }));
                let mut effects = Effects::default();
                sub.take_effects(&mut effects);
                // What the sub-train recycled (the lines it parsed, say) goes to the loop's
                // thread, which takes buffers of that kind for the next lines it reads.
                let spares = pool::take_spares();
                completion.complete(match ran {
                    Ok((dropped, errors)) => Ran {
                        data,
                        dropped,
                        errors,
                        effects,
                        panic: None,
                        metrics: None,
                        spares,
                    },
                    Err(p) => Ran {
                        data: Vec::new(),
                        dropped: 0,
                        errors: n as u64,
                        effects,
                        panic: Some(panic_text(p.as_ref())),
                        metrics: None,
                        spares,
                    },
                });
            }
            Msg::Finish(completion) => {
                let mut data = Vec::new();
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    sub.finish(&mut data);
                    sub.done();
                }));
                let mut effects = Effects::default();
                sub.take_effects(&mut effects);
                completion.complete(Ran {
                    data,
                    dropped: 0,
                    errors: 0,
                    effects,
                    panic: ran.err().map(|p| panic_text(p.as_ref())),
                    metrics: Some((sub.metrics(), thread_cpu())),
                    spares: Spares::default(),
                });
                return;
            }
        }
    }
    sub.done();
}

/// Keeps glibc to one malloc arena for the threads started from now on. With an arena per
/// thread, what a worker allocates (the text it parses out) is freed on the loop's thread
/// and what the loop allocates (the lines read) on a worker: each such free goes back to
/// the other thread's arena, under its lock, and in batches of thousands, which cost W3k
/// (`bench/run.sh`) a third more CPU time than with one arena, where every thread's own
/// cache takes them (see "Issue 18: parallel" in `docs/performance.md`).
fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only sets a parameter of the allocator, under its own lock;
            // threads already running keep the arena they have.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
        });
    }
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// The last cog of a sub-train with `render = "json"`: replaces each record's fields with
/// one, `message`, holding the record rendered as a JSON object (the bytes a drain's
/// `format = "json"` writes, without the newline). The rendering then happens on the
/// worker, where the fields were just made, and the storage of the fields stays on the
/// worker's thread for its next records; the loop's thread only copies bytes out.
///
/// From Rust, the last cog of the factory's sub-train:
/// `Train::new("sub").cog(MyParser).cog(RenderJson::default())`.
#[derive(Debug, Default)]
pub struct RenderJson {
    /// Where each record is rendered before it is copied into a buffer of its size: a
    /// buffer of the size class of the line (rather than of the longest line) goes back to
    /// the class lines of its size are taken from, and more of them are kept.
    scratch: Vec<u8>,
}

impl Cog<Record> for RenderJson {
    fn name(&self) -> &str {
        "render"
    }

    fn process_batch(&mut self, batch: &mut Vec<Record>, out: &mut Out<Record>, _: &mut Ctx) {
        let message = crate::kit::supply::message_key();
        for r in batch.iter_mut() {
            self.scratch.clear();
            r.write_json(&mut self.scratch);
            pool::clear_fields(&mut r.fields);
            r.fields
                .append_new(message, Value::Bytes(pool::bytes(&self.scratch)));
        }
        out.extend(batch.drain(..));
    }
}

/// Why cog type `d` cannot run on a worker, if it cannot.
fn refused(d: &CogDescriptor) -> Option<String> {
    let name = d.name;
    let why = match name {
        "pass" | "filter" | "set" | "copy" | "rename" | "remove" | "regex" | "simple_pattern"
        | "csv_parse" | "json_parse" | "kv_parse" | "syslog_parse" | "anonymise" | "cidr_tag" => {
            return None;
        }
        "parallel" => "parallel cannot be nested".to_string(),
        _ if d.kind != CogKind::Transform => format!(
            "{name} is a {}: only transforms run inside parallel (put it before or after)",
            d.kind
        ),
        "dedup" | "throttle" | "merge" | "multiline" | "window" | "threshold" => format!(
            "{name} keeps state across records, and each worker would keep its own: put it \
             before or after parallel"
        ),
        "route" | "tee" => format!(
            "{name} hands records to another train, which a worker thread cannot reach: put \
             it before or after parallel"
        ),
        _ => format!(
            "{name} binds events or runs jobs on the loop (sockets, watches, programs), which a \
             worker thread cannot: put it before or after parallel"
        ),
    };
    Some(why)
}

/// The cog types that run inside `parallel`, for messages.
const ALLOWED: &str = "pass, filter, set, copy, rename, remove, regex, simple_pattern, \
                       csv_parse, json_parse, kv_parse, syslog_parse, anonymise, cidr_tag";

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: ParallelSettings = p.group()?;
    let subs = p.nested_cogs("cog")?;
    if subs.is_empty() {
        return Err(p.error(
            "cog",
            "parallel runs the cogs declared in it: give at least one [[train.cog.cog]]",
        ));
    }
    let supplied = crate::cogs::descriptors();
    let mut specs: Vec<(CogDescriptor, OwnedParams)> = Vec::with_capacity(subs.len());
    for sub in &subs {
        let ty = sub.cog_type();
        let Some(desc) = supplied.iter().find(|d| d.name == ty) else {
            return Err(sub.error(
                "type",
                format!("unknown cog type {ty:?} (inside parallel: {ALLOWED})"),
            ));
        };
        if let Some(why) = refused(desc) {
            return Err(sub.error("type", why));
        }
        if let Some(e) = sub.validate(desc.name, desc.params).into_iter().next() {
            return Err(e);
        }
        if let Ok(Some(to)) = sub.str("on_error")
            && to.starts_with("train:")
        {
            return Err(sub.error(
                "on_error",
                "a worker thread cannot hand records to another train: use \"drop\" or \
                 \"keep\" inside parallel (or put the cog after it)",
            ));
        }
        // Built once here, and dropped: every mistake shows when the configuration loads,
        // not when a worker starts.
        let here = BuildCx::detached(cx.base_dir, cx.state_dir, cx.logger);
        (desc.build)(sub, &here)?;
        specs.push((*desc, sub.to_owned_params()));
    }
    let (base_dir, state_dir): (PathBuf, PathBuf) =
        (cx.base_dir.to_path_buf(), cx.state_dir.to_path_buf());
    let logger = cx.logger.clone();
    let name = p.id().to_string();
    let render = s.render;
    let factory = move || -> Result<Train<Record>, BoxError> {
        let bcx = BuildCx::detached(&base_dir, &state_dir, &logger);
        let mut train = Train::new(name.clone());
        for (desc, owned) in &specs {
            let params = owned.params();
            let cog = (desc.build)(&params, &bcx).map_err(|e| e.to_string())?;
            train.push_with_id(cog, params.id().to_string());
        }
        if render == Render::Json {
            train.push_with_id(Box::new(RenderJson::default()), format!("{name}.render"));
        }
        Ok(train)
    };
    let cog = Parallel::from_settings(&s, factory).map_err(|e| setting_error(p, e))?;
    Ok(Box::new(cog))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, Sender};

    use super::*;

    /// Longest any condition is waited for; each takes microseconds when all is well.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// What a test worker is told: hold until the gate opens, or run job `n`.
    enum Job {
        Hold,
        Run(u64),
    }

    struct Pool {
        queue: Arc<Queue<Job>>,
        gate: Arc<Mutex<()>>,
        held: Receiver<()>,
        ran: Receiver<u64>,
        ended: Receiver<()>,
        workers: usize,
    }

    /// `workers` threads taking jobs from one queue until it closes.
    fn pool(workers: usize) -> Pool {
        let queue = Arc::new(Queue::<Job>::default());
        let gate = Arc::new(Mutex::new(()));
        let (held_tx, held) = mpsc::channel();
        let (ran_tx, ran) = mpsc::channel();
        let (ended_tx, ended) = mpsc::channel();
        for _ in 0..workers {
            let (queue, gate) = (Arc::clone(&queue), Arc::clone(&gate));
            let (held_tx, ran_tx, ended_tx): (Sender<()>, Sender<u64>, Sender<()>) =
                (held_tx.clone(), ran_tx.clone(), ended_tx.clone());
            std::thread::spawn(move || {
                while let Some(job) = queue.pop() {
                    match job {
                        Job::Hold => {
                            let _ = held_tx.send(());
                            drop(gate.lock().unwrap_or_else(|p| p.into_inner()));
                        }
                        Job::Run(n) => {
                            let _ = ran_tx.send(n);
                        }
                    }
                }
                let _ = ended_tx.send(());
            });
        }
        Pool {
            queue,
            gate,
            held,
            ran,
            ended,
            workers,
        }
    }

    impl Pool {
        /// Waits for `n` jobs to have run; their numbers, in the order they ran.
        fn collect(&self, n: usize) -> Vec<u64> {
            let deadline = Instant::now() + PATIENCE;
            let mut got = Vec::with_capacity(n);
            while got.len() < n {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.ran.recv_timeout(left) {
                    Ok(j) => got.push(j),
                    Err(_) => panic!("{} of {n} jobs ran within {PATIENCE:?}", got.len()),
                }
            }
            got
        }

        /// Waits until every worker sleeps on the queue.
        fn wait_all_asleep(&self) {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let sleeping = self.queue.state.lock().map(|s| s.sleeping).unwrap_or(0);
                if sleeping == self.workers {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{sleeping} of {} workers asleep",
                    self.workers
                );
                std::thread::yield_now();
            }
        }

        /// Closes the queue and waits for every worker to end.
        fn close(self) {
            self.queue.close();
            for i in 0..self.workers {
                assert!(
                    self.ended.recv_timeout(PATIENCE).is_ok(),
                    "worker {i} did not end after the queue closed"
                );
            }
        }
    }

    fn sorted(mut v: Vec<u64>) -> Vec<u64> {
        v.sort_unstable();
        v
    }

    /// Jobs queued while every worker is busy wake none (that is the point of the rule),
    /// and are all run once the workers are free again: the running workers take them
    /// before they sleep.
    #[test]
    fn jobs_queued_while_the_workers_are_busy_wake_none_and_all_run() {
        let p = pool(2);
        let closed_gate = p.gate.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..p.workers {
            assert!(p.queue.push(Job::Hold));
        }
        for i in 0..p.workers {
            assert!(
                p.held.recv_timeout(PATIENCE).is_ok(),
                "worker {i} did not take its job"
            );
        }
        let wakes = p.queue.wakes();
        let n = 10_000;
        for j in 0..n {
            assert!(p.queue.push(Job::Run(j)));
        }
        assert_eq!(
            p.queue.wakes(),
            wakes,
            "a push woke a worker although none slept"
        );
        drop(closed_gate);
        assert_eq!(sorted(p.collect(n as usize)), (0..n).collect::<Vec<_>>());
        p.close();
    }

    /// A job queued while every worker sleeps wakes one, round after round: no push is
    /// lost between a worker finding the queue empty and its going to sleep.
    #[test]
    fn a_job_queued_while_the_workers_sleep_wakes_one() {
        let p = pool(3);
        for round in 0..200u64 {
            p.wait_all_asleep();
            let wakes = p.queue.wakes();
            let k = 1 + round % 3;
            for j in 0..k {
                assert!(p.queue.push(Job::Run(round * 10 + j)));
            }
            assert!(p.queue.wakes() > wakes, "round {round}: no worker woken");
            assert_eq!(
                sorted(p.collect(k as usize)),
                (0..k).map(|j| round * 10 + j).collect::<Vec<_>>()
            );
        }
        p.close();
    }

    /// Many jobs in bursts of every size, pushed while workers run, finish and fall asleep
    /// at any moment: every job runs once.
    #[test]
    fn many_jobs_in_bursts_all_run_once() {
        let p = pool(4);
        let mut next = 0u64;
        for burst in 0..2_000u64 {
            let k = (burst * 7919) % 37;
            for _ in 0..k {
                assert!(p.queue.push(Job::Run(next)));
                next += 1;
            }
            if burst % 5 == 0 {
                std::thread::yield_now();
            }
        }
        assert_eq!(
            sorted(p.collect(next as usize)),
            (0..next).collect::<Vec<_>>()
        );
        assert!(
            p.queue.wakes() < next,
            "{} wake-ups for {next} jobs",
            p.queue.wakes()
        );
        p.close();
    }

    /// Once closed, the queue refuses new jobs and sleeping workers end.
    #[test]
    fn a_closed_queue_refuses_jobs_and_ends_sleeping_workers() {
        let p = pool(2);
        p.wait_all_asleep();
        p.queue.close();
        assert!(!p.queue.push(Job::Run(1)));
        for i in 0..p.workers {
            assert!(
                p.ended.recv_timeout(PATIENCE).is_ok(),
                "worker {i} did not end"
            );
        }
    }
}
