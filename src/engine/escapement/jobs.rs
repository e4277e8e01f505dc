//! Worker jobs: a pool of threads, started on first use, whose results come back through
//! the loop's waker and are handed to the submitting cog in submission order.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use mio::Waker;

use crate::engine::cog::{JobId, JobOutput, JobPanic, JobResult};

use super::core::{DETACHED_REFUSES, Phase};
use super::ctx::Ctx;
use super::{Escapement, Handle};

pub(super) type Job = Box<dyn FnOnce() -> JobOutput + Send>;

pub(super) struct JobMsg {
    pub(super) h: Handle,
    pub(super) seq: JobId,
    pub(super) job: Job,
}

/// State shared with worker threads and [`ShutdownHandle`]s.
pub(super) struct Shared {
    pub(super) finished_jobs: Mutex<Vec<(Handle, JobId, JobResult)>>,
    pub(super) stop: AtomicBool,
}

pub(super) struct Pool {
    pub(super) tx: Option<mpsc::Sender<JobMsg>>,
    pub(super) threads: Vec<JoinHandle<()>>,
}

impl Pool {
    pub(super) fn start(n: usize, shared: &Arc<Shared>, waker: &Arc<Waker>) -> io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<JobMsg>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rx = Arc::clone(&rx);
            let shared = Arc::clone(shared);
            let waker = Arc::clone(waker);
            let t = std::thread::Builder::new()
                .name(format!("deadbeat-worker-{i}"))
                .spawn(move || worker(&rx, &shared, &waker))?;
            threads.push(t);
        }
        Ok(Pool {
            tx: Some(tx),
            threads,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the channel ends every worker once the queue is empty.
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub(super) fn worker(rx: &Mutex<mpsc::Receiver<JobMsg>>, shared: &Shared, waker: &Waker) {
    loop {
        let msg = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(msg) = msg else { return };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(msg.job))
            .map_err(|p| JobPanic(panic_message(p.as_ref())));
        shared
            .finished_jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((msg.h, msg.seq, result));
        // A failed wake only delays delivery until the loop's next wakeup; nothing to do.
        let _ = waker.wake();
    }
}

pub(super) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

impl Ctx<'_> {
    /// Runs `job` on a worker thread; its result comes back through
    /// [`Cog::job_done`](crate::engine::cog::Cog::job_done) with the returned id, in submission order among this cog's jobs.
    /// Refused once the cog has finished (unless it lingers).
    pub fn submit<F, T>(&mut self, job: F) -> io::Result<JobId>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // A job started later than its cog's finish could emit into cogs that have
        // finished behind it; a cog that needs one lingers.
        if matches!(self.core.slot(self.h).phase, Phase::Finished | Phase::Done) {
            return Err(io::Error::other("the cog has finished: no new jobs"));
        }
        if self.core.detached {
            return Err(io::Error::other(DETACHED_REFUSES));
        }
        if self.core.pool.is_none() {
            let n = match self.core.workers {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            };
            self.core.pool = Some(Pool::start(n, &self.core.shared, &self.core.waker)?);
        }
        let h = self.h;
        let slot = self.core.slot_mut(h);
        let seq = slot.next_job;
        let msg = JobMsg {
            h,
            seq,
            job: Box::new(move || Box::new(job()) as JobOutput),
        };
        let sent = match self.core.pool.as_ref().and_then(|p| p.tx.as_ref()) {
            Some(tx) => tx.send(msg).is_ok(),
            None => false,
        };
        if !sent {
            return Err(io::Error::other("the worker pool has stopped"));
        }
        self.core.slot_mut(h).next_job += 1;
        Ok(seq)
    }

    /// Reserves the next job id for work the cog runs elsewhere than the pool (on threads
    /// of its own): the returned [`Completion`] hands the result back through the same
    /// path as [`submit`](Ctx::submit)'s jobs, so it reaches
    /// [`Cog::job_done`](crate::engine::cog::Cog::job_done) in order among this cog's jobs
    /// and counts as in flight until then (cogs downstream finish after it). A completion
    /// dropped without a result comes back as a [`JobPanic`], so the order never stalls.
    /// Refused once the cog has finished (unless it lingers).
    pub fn reserve_job(&mut self) -> io::Result<Completion> {
        if matches!(self.core.slot(self.h).phase, Phase::Finished | Phase::Done) {
            return Err(io::Error::other("the cog has finished: no new jobs"));
        }
        if self.core.detached {
            return Err(io::Error::other(DETACHED_REFUSES));
        }
        let h = self.h;
        let slot = self.core.slot_mut(h);
        let seq = slot.next_job;
        slot.next_job += 1;
        Ok(Completion {
            shared: Arc::clone(&self.core.shared),
            waker: Arc::clone(&self.core.waker),
            h,
            seq,
            sent: false,
        })
    }

    /// Jobs of this cog submitted and not yet handed back.
    pub fn jobs_in_flight(&self) -> u64 {
        self.core.slot(self.h).jobs_in_flight()
    }
}

/// A job reserved with [`Ctx::reserve_job`]: `Send`, so the thread that does the work hands
/// the result back with [`complete`](Completion::complete); the escapement delivers it to
/// the cog's [`job_done`](crate::engine::cog::Cog::job_done) in submission order.
pub struct Completion {
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    h: Handle,
    seq: JobId,
    sent: bool,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("job", &self.seq)
            .finish()
    }
}

impl Completion {
    /// The job's id, as `job_done` will name it.
    pub fn id(&self) -> JobId {
        self.seq
    }

    /// Hands the job's result back to the loop.
    pub fn complete<T: Send + 'static>(mut self, output: T) {
        self.send(Ok(Box::new(output)));
    }

    fn send(&mut self, result: JobResult) {
        self.sent = true;
        self.shared
            .finished_jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((self.h, self.seq, result));
        // A failed wake only delays delivery until the loop's next wakeup.
        let _ = self.waker.wake();
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.sent {
            self.send(Err(JobPanic(
                "the job was dropped without a result".to_string(),
            )));
        }
    }
}

impl Escapement {
    pub(super) fn deliver_jobs(&mut self) {
        {
            let mut done = self
                .core
                .shared
                .finished_jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *done, &mut self.job_buf);
        }
        if self.core.shared.stop.load(Ordering::SeqCst) {
            self.core.shutdown = true;
        }
        let mut finished = std::mem::take(&mut self.job_buf);
        let mut touched: Vec<Handle> = Vec::new();
        for (h, seq, result) in finished.drain(..) {
            self.core.slot_mut(h).held.insert(seq, result);
            if !touched.contains(&h) {
                touched.push(h);
            }
        }
        self.job_buf = finished;
        for h in touched {
            loop {
                let slot = self.core.slot_mut(h);
                let seq = slot.next_delivery;
                let Some(result) = slot.held.remove(&seq) else {
                    break;
                };
                slot.next_delivery += 1;
                if slot.phase != Phase::Done {
                    self.trains[h.train as usize].job_done(h.cog, seq, result, &mut self.core);
                    self.settle();
                }
            }
        }
    }
}
