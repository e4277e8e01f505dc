//! A cog driven by a periodic timer, a signal and worker jobs, ending by itself.
//!
//! `Pulse` ticks every 40 ms; on its third tick it sends itself SIGUSR2. On the signal it
//! hands three jobs to the worker pool, the earlier ones slower, so they finish in reverse
//! order; the escapement still hands the results back in submission order. With the last
//! result in, the supply is exhausted and the loop shuts down (in about 200 ms).
//!
//! `cargo run --example timer_signal_job`

use std::time::{Duration, Instant};

use deadbeat::prelude::*;

const TICK: Local = 1;
const SIG: Local = 2;

struct Pulse {
    started: Instant,
    ticks: u32,
    timer: Option<TimerId>,
}

impl Pulse {
    fn say(&self, what: std::fmt::Arguments<'_>) {
        println!("{:>4} ms  {what}", self.started.elapsed().as_millis());
    }
}

impl Cog<String> for Pulse {
    fn name(&self) -> &str {
        "pulse"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.timer = Some(cx.timer_every(Duration::from_millis(40), TICK)?);
        cx.signal(libc::SIGUSR2, SIG)?;
        Ok(())
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, _out: &mut Out<String>, cx: &mut Ctx) {
        match (local, why) {
            (TICK, Wake::Timer(_)) => {
                self.ticks += 1;
                self.say(format_args!("tick {}", self.ticks));
                if self.ticks == 3 {
                    if let Some(t) = self.timer.take() {
                        cx.cancel_timer(t);
                    }
                    self.say(format_args!("raising SIGUSR2"));
                    // SAFETY: kill(2) on our own pid; the escapement's handler is installed.
                    unsafe {
                        libc::kill(libc::getpid(), libc::SIGUSR2);
                    }
                }
            }
            (SIG, Wake::Signal(sig)) => {
                self.say(format_args!("signal {sig}: submitting 3 jobs"));
                for i in 0..3u64 {
                    let work = Duration::from_millis(30 - 10 * i);
                    let started = self.started;
                    let submitted = cx.submit(move || {
                        std::thread::sleep(work);
                        let ms = started.elapsed().as_millis();
                        println!("{ms:>4} ms  worker: job {i} finished");
                        (i + 1) * 111
                    });
                    if let Err(e) = submitted {
                        self.say(format_args!("job {i} not submitted: {e}"));
                        cx.exhausted();
                    }
                }
            }
            (local, why) => self.say(format_args!("unexpected wake {local}: {why:?}")),
        }
    }

    fn job_done(&mut self, job: JobId, result: JobResult, out: &mut Out<String>, cx: &mut Ctx) {
        match result {
            Ok(v) => match v.downcast::<u64>() {
                Ok(v) => out.push(format!("job {job} -> {v}")),
                Err(_) => out.push(format!("job {job} -> unexpected type")),
            },
            Err(p) => out.push(format!("job {job} failed: {p}")),
        }
        if cx.jobs_in_flight() == 0 {
            cx.exhausted();
        }
    }

    fn finish(&mut self, _out: &mut Out<String>, _cx: &mut Ctx) {
        self.say(format_args!("finish: every job is back"));
    }
}

struct Print(Instant);

impl Cog<String> for Print {
    fn name(&self) -> &str {
        "print"
    }

    fn process(&mut self, d: String, _out: &mut Out<String>, _cx: &mut Ctx) {
        println!("{:>4} ms  drain: {d}", self.0.elapsed().as_millis());
    }
}

fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let mut esc = Escapement::with_options(Options {
        workers: 3,
        ..Options::default()
    })?;
    esc.add_train(
        Train::new("pulse")
            .cog(Pulse {
                started,
                ticks: 0,
                timer: None,
            })
            .cog(Print(started)),
    )?;
    esc.run()?;
    println!("{:>4} ms  done", started.elapsed().as_millis());
    Ok(())
}
