//! The escapement and its trains against the real world: inotify, signals sent to this
//! process, sockets on 127.0.0.1 and real timers.
//!
//! Every test runs its loop to the end and asserts the exact sequence of calls the cogs
//! recorded in a shared [`Log`]. Each escapement gets a watchdog train whose timer stops a
//! stuck test after [`WATCHDOG`], and [`run`] aborts the process if even the shutdown hangs,
//! so no test can wait forever.

use std::cell::{Cell, RefCell};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use deadbeat::prelude::*;

mod broadcast;
mod events;
mod feeds;
mod flow;
mod jobs;
mod service;
mod shutdown;
mod signals;

/// How long a test's loop may run before its watchdog stops it and fails the test.
pub const WATCHDOG: Duration = Duration::from_secs(5);

/// How long [`run`] waits for the loop to return at all before aborting the process.
const BACKSTOP: Duration = Duration::from_secs(30);

/// Signals go to the whole process and `cargo test` runs tests as threads of one process:
/// every test that sends a signal holds this lock, so no other test sees its signals.
pub static SIGNAL_LOCK: Mutex<()> = Mutex::new(());

/// Takes [`SIGNAL_LOCK`], also after another signal test failed while holding it.
pub fn signal_lock() -> MutexGuard<'static, ()> {
    SIGNAL_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends `sig` to this process, directed at the calling thread. Only with
/// [`signal_lock`] held and once an escapement has installed its handler (an uncaught
/// SIGUSR1 would kill the test binary).
///
/// Directed at the caller (the escapement's thread, for calls from cogs) so that the other
/// tests' threads, blocked in reads with timeouts that a signal interrupts with EINTR
/// even under SA_RESTART, are left alone. The handler is process-wide either way.
pub fn raise(sig: i32) {
    // SAFETY: pthread_kill on the calling thread has no memory-safety preconditions.
    let rc = unsafe { libc::pthread_kill(libc::pthread_self(), sig) };
    assert_eq!(rc, 0, "pthread_kill({sig}) failed: {rc}");
}

/// Options for a test escapement: never shut down on SIGTERM/SIGINT, so a test that sends
/// them cannot stop another test's loop; enough workers for every job to run at once.
pub fn opts() -> Options {
    Options {
        shutdown_on_signals: false,
        workers: 4,
        ..Options::default()
    }
}

/// What happened, in order, as the cogs of one test recorded it.
#[derive(Clone, Default)]
pub struct Log(Rc<RefCell<Vec<String>>>);

impl Log {
    pub fn push(&self, s: impl Into<String>) {
        self.0.borrow_mut().push(s.into());
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.borrow().clone()
    }

    /// The entries that start with one of `prefixes`, in order.
    pub fn only(&self, prefixes: &[&str]) -> Vec<String> {
        self.0
            .borrow()
            .iter()
            .filter(|e| prefixes.iter().any(|p| e.starts_with(p)))
            .cloned()
            .collect()
    }

    /// Index of the first entry equal to `s`; panics with the whole log when absent.
    pub fn pos(&self, s: &str) -> usize {
        let log = self.0.borrow();
        match log.iter().position(|e| e == s) {
            Some(i) => i,
            None => panic!("{s:?} not in the log: {log:#?}"),
        }
    }
}

impl Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.borrow().fmt(f)
    }
}

/// Turns a slice of `&str` into owned strings, for comparing with [`Log`] entries.
pub fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Runs `esc` to the end with a watchdog train added, and checks the watchdog stayed quiet
/// and no cog was re-entered.
pub fn run(esc: &mut Escapement, log: &Log) {
    add_watchdog(esc, log);
    run_watched(esc, log);
}

/// [`run`] for the common case: `train` alone on an escapement with [`opts`].
pub fn run_train<D: 'static>(train: Train<D>, log: &Log) {
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(train).unwrap();
    run(&mut esc, log);
}

/// Adds the train whose timer stops the loop after [`WATCHDOG`].
pub fn add_watchdog(esc: &mut Escapement, log: &Log) {
    esc.add_train(Train::new("watchdog").cog(Watchdog { log: log.clone() }))
        .unwrap();
}

/// [`run`] for an escapement that has its watchdog already (say, started before `run`).
pub fn run_watched(esc: &mut Escapement, log: &Log) {
    let (tx, rx) = mpsc::channel::<()>();
    let name = std::thread::current()
        .name()
        .unwrap_or("engine test")
        .to_string();
    // The watchdog works inside the loop; this thread catches a loop that cannot even
    // shut down, where a hang would otherwise stall the whole test run.
    let backstop = std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(BACKSTOP) {
            eprintln!("{name}: the escapement did not return within {BACKSTOP:?}");
            std::process::abort();
        }
    });
    let result = esc.run();
    drop(tx);
    backstop.join().unwrap();
    result.unwrap();
    let entries = log.entries();
    assert!(
        !entries
            .iter()
            .any(|e| e.starts_with("WATCHDOG") || e.contains("REENTERED")),
        "{entries:#?}"
    );
}

/// Stops a test whose loop runs longer than [`WATCHDOG`] and leaves a failure in the log.
struct Watchdog {
    log: Log,
}

impl Cog<()> for Watchdog {
    fn name(&self) -> &str {
        "watchdog"
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        cx.timer_after(WATCHDOG, 0)?;
        Ok(())
    }

    fn wake(&mut self, _: Local, _: Wake<'_>, _: &mut Out<()>, cx: &mut Ctx) {
        self.log.push("WATCHDOG: the test did not end in time");
        cx.shutdown();
    }
}

type StartFn = Box<dyn FnMut(&mut Ctx) -> Result<(), BoxError>>;
type WakeFn<D> = Box<dyn FnMut(Local, Wake<'_>, &mut Out<D>, &mut Ctx)>;
type ProcessFn<D> = Box<dyn FnMut(D, &mut Out<D>, &mut Ctx)>;
type JobFn<D> = Box<dyn FnMut(JobId, JobResult, &mut Out<D>, &mut Ctx)>;
type FinishFn<D> = Box<dyn FnMut(&mut Out<D>, &mut Ctx)>;
type CtxFn = Box<dyn FnMut(&mut Ctx)>;
type DoneFn = Box<dyn FnMut(&[EventId], &mut Ctx)>;

/// A cog assembled from closures; it records its life-cycle calls (`finish`, `done`,
/// `pause`, `resume`, broadcasts) as `"<name>: <call>"` and, when nothing else is given,
/// passes data through.
pub struct Probe<D> {
    name: String,
    log: Log,
    supply: bool,
    /// Set while one of this cog's callbacks runs: a second call meanwhile would be a
    /// re-entrant call, which the engine promises never to make.
    busy: Rc<Cell<bool>>,
    start: Option<StartFn>,
    wake: Option<WakeFn<D>>,
    process: Option<ProcessFn<D>>,
    job: Option<JobFn<D>>,
    finish: Option<FinishFn<D>>,
    done: Option<CtxFn>,
    pause: Option<CtxFn>,
    resume: Option<CtxFn>,
    event_done: Option<DoneFn>,
    reopen: Option<CtxFn>,
}

impl<D: Debug + 'static> Probe<D> {
    pub fn new(name: &str, log: &Log) -> Self {
        Probe {
            name: name.to_string(),
            log: log.clone(),
            supply: false,
            busy: Rc::default(),
            start: None,
            wake: None,
            process: None,
            job: None,
            finish: None,
            done: None,
            pause: None,
            resume: None,
            event_done: None,
            reopen: None,
        }
    }

    /// A drain: records `"<name>: got <datum>"` and emits nothing.
    pub fn drain(name: &str, log: &Log) -> Self {
        let l = log.clone();
        let n = name.to_string();
        Probe::new(name, log).on_process(move |d, _, _| l.push(format!("{n}: got {d:?}")))
    }

    pub fn supply(mut self) -> Self {
        self.supply = true;
        self
    }

    pub fn on_start(mut self, f: impl FnMut(&mut Ctx) -> Result<(), BoxError> + 'static) -> Self {
        self.start = Some(Box::new(f));
        self
    }

    pub fn on_wake(
        mut self,
        f: impl FnMut(Local, Wake<'_>, &mut Out<D>, &mut Ctx) + 'static,
    ) -> Self {
        self.wake = Some(Box::new(f));
        self
    }

    pub fn on_process(mut self, f: impl FnMut(D, &mut Out<D>, &mut Ctx) + 'static) -> Self {
        self.process = Some(Box::new(f));
        self
    }

    pub fn on_job(
        mut self,
        f: impl FnMut(JobId, JobResult, &mut Out<D>, &mut Ctx) + 'static,
    ) -> Self {
        self.job = Some(Box::new(f));
        self
    }

    pub fn on_finish(mut self, f: impl FnMut(&mut Out<D>, &mut Ctx) + 'static) -> Self {
        self.finish = Some(Box::new(f));
        self
    }

    pub fn on_done(mut self, f: impl FnMut(&mut Ctx) + 'static) -> Self {
        self.done = Some(Box::new(f));
        self
    }

    pub fn on_pause(mut self, f: impl FnMut(&mut Ctx) + 'static) -> Self {
        self.pause = Some(Box::new(f));
        self
    }

    pub fn on_resume(mut self, f: impl FnMut(&mut Ctx) + 'static) -> Self {
        self.resume = Some(Box::new(f));
        self
    }

    pub fn on_event_done(mut self, f: impl FnMut(&[EventId], &mut Ctx) + 'static) -> Self {
        self.event_done = Some(Box::new(f));
        self
    }

    pub fn on_reopen(mut self, f: impl FnMut(&mut Ctx) + 'static) -> Self {
        self.reopen = Some(Box::new(f));
        self
    }

    /// Marks the cog busy for the length of one callback.
    fn enter(&self, what: &str) -> Busy {
        if self.busy.replace(true) {
            self.log.push(format!(
                "REENTERED {} during another call by {what}",
                self.name
            ));
        }
        Busy(Rc::clone(&self.busy))
    }

    fn trace(&self, what: impl std::fmt::Display) {
        self.log.push(format!("{}: {what}", self.name));
    }
}

/// Clears a [`Probe`]'s busy flag when its callback returns.
struct Busy(Rc<Cell<bool>>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl<D: Debug + 'static> Cog<D> for Probe<D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_supply(&self) -> bool {
        self.supply
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let _b = self.enter("start");
        match &mut self.start {
            Some(f) => f(cx),
            None => Ok(()),
        }
    }

    fn process(&mut self, d: D, out: &mut Out<D>, cx: &mut Ctx) {
        let _b = self.enter("process");
        match &mut self.process {
            Some(f) => f(d, out, cx),
            None => out.push(d),
        }
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<D>, cx: &mut Ctx) {
        let _b = self.enter("wake");
        match &mut self.wake {
            Some(f) => f(local, why, out, cx),
            None => self.trace(format!("unexpected wake {local} {why:?}")),
        }
    }

    fn job_done(&mut self, job: JobId, result: JobResult, out: &mut Out<D>, cx: &mut Ctx) {
        let _b = self.enter("job_done");
        match &mut self.job {
            Some(f) => f(job, result, out, cx),
            None => self.trace(format!("unexpected job_done {job}")),
        }
    }

    fn event_done(&mut self, ids: &[EventId], cx: &mut Ctx) {
        let _b = self.enter("event_done");
        self.trace(format!("event_done {ids:?}"));
        if let Some(f) = &mut self.event_done {
            f(ids, cx);
        }
    }

    fn event_rename(&mut self, old: EventId, new: EventId, _: &mut Ctx) {
        let _b = self.enter("event_rename");
        self.trace(format!("rename {old}->{new}"));
    }

    fn pause(&mut self, cx: &mut Ctx) {
        let _b = self.enter("pause");
        self.trace("pause");
        if let Some(f) = &mut self.pause {
            f(cx);
        }
    }

    fn resume(&mut self, cx: &mut Ctx) {
        let _b = self.enter("resume");
        self.trace("resume");
        if let Some(f) = &mut self.resume {
            f(cx);
        }
    }

    fn reopen(&mut self, cx: &mut Ctx) {
        let _b = self.enter("reopen");
        self.trace("reopen");
        if let Some(f) = &mut self.reopen {
            f(cx);
        }
    }

    fn finish(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        let _b = self.enter("finish");
        self.trace("finish");
        if let Some(f) = &mut self.finish {
            f(out, cx);
        }
    }

    fn done(&mut self, cx: &mut Ctx) {
        let _b = self.enter("done");
        self.trace("done");
        if let Some(f) = &mut self.done {
            f(cx);
        }
    }
}

/// A supply that emits `data` one per immediate call, then says it is exhausted; it
/// records `"<name>: emit <datum>"`.
pub fn counting_supply<D: Debug + Clone + 'static>(
    name: &str,
    log: &Log,
    data: Vec<D>,
) -> Probe<D> {
    let l = log.clone();
    let n = name.to_string();
    let mut next = 0;
    Probe::new(name, log)
        .supply()
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |_, _, out, cx| {
            if let Some(d) = data.get(next) {
                l.push(format!("{n}: emit {d:?}"));
                out.push(d.clone());
                next += 1;
            }
            if next == data.len() {
                cx.exhausted();
            } else {
                cx.enqueue(0);
            }
        })
}

/// A directory of its own under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("deadbeat-test-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
