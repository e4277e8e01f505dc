//! The progress bar of batch runs on a terminal: bytes read of the total, lines a second
//! and the time left, redrawn in place on stderr four times a second from a thread of its
//! own (the event loop never waits for the terminal).
//!
//! It reads [`crate::kit::progress::batch`], which `file_in` and `stdin` redirected from a
//! regular file fill. It shows once a batch supply has said how much it will read, and
//! clears itself when everything has been read or the run ends. The daemon's stderr log
//! lines go through [`around_stderr`], which clears the bar first, so a log line never
//! lands in the middle of it; the next tick draws it again below.

use std::io::{self, Write};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::kit::progress::{self, ProgressSnapshot};

/// Time between two redraws.
const TICK: Duration = Duration::from_millis(250);
/// Rates are taken over this much of the recent past: long enough to be steady, short
/// enough to follow a change of pace.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// Whether a bar is on the screen, held while anything is written to stderr by the bar
/// or the log.
static SHOWN: Mutex<bool> = Mutex::new(false);

fn shown() -> MutexGuard<'static, bool> {
    SHOWN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `write` (a write to stderr) with the bar cleared from the screen first, if it is
/// there, so the two do not mix; the bar is drawn again at its next tick.
pub fn around_stderr<R>(write: impl FnOnce() -> R) -> R {
    let mut shown = shown();
    if *shown {
        let _ = io::stderr().write_all(b"\r\x1b[K");
        *shown = false;
    }
    write()
}

/// A progress bar being drawn; [`Bar::finish`] (or dropping it) stops and clears it.
#[derive(Debug)]
pub struct Bar {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Bar {
    /// Starts drawing on stderr, which should be a terminal.
    pub fn start() -> io::Result<Bar> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("deadbeat-progress".into())
            .spawn(move || {
                let mut rates = Rates::default();
                // A stop (or the bar dropped) ends it; a timeout is a tick.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                    let now = progress::batch().snapshot();
                    rates.add(Instant::now(), now);
                    draw(now, &rates);
                }
                clear();
            })?;
        Ok(Bar {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops drawing and clears the bar.
    pub fn finish(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn clear() {
    around_stderr(|| ());
}

/// Draws the bar for `now`, or clears it when there is nothing (left) to show.
fn draw(now: ProgressSnapshot, rates: &Rates) {
    if now.total == 0 || now.read >= now.total {
        clear();
        return;
    }
    let line = render(now, rates.per_second(), terminal_width());
    let mut shown = shown();
    let mut err = io::stderr().lock();
    let drawn = err
        .write_all(b"\r")
        .and_then(|()| err.write_all(line.as_bytes()))
        .and_then(|()| err.write_all(b"\x1b[K"))
        .and_then(|()| err.flush());
    *shown = drawn.is_ok();
}

/// The recent readings, to take rates from.
#[derive(Debug, Default)]
struct Rates {
    samples: std::collections::VecDeque<(Instant, ProgressSnapshot)>,
}

impl Rates {
    fn add(&mut self, at: Instant, s: ProgressSnapshot) {
        self.samples.push_back((at, s));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// `(bytes, lines)` a second over the window; `None` until two readings are apart.
    fn per_second(&self) -> Option<(f64, f64)> {
        let (t0, a) = self.samples.front()?;
        let (t1, b) = self.samples.back()?;
        let secs = t1.duration_since(*t0).as_secs_f64();
        (secs > 0.0).then(|| {
            (
                b.read.saturating_sub(a.read) as f64 / secs,
                b.lines.saturating_sub(a.lines) as f64 / secs,
            )
        })
    }
}

/// The bar's line, at most `width - 1` columns wide:
/// `  12.3 MiB / 45.6 MiB [#######>.........]  27%  81.2k lines/s  ETA 0:07`.
fn render(now: ProgressSnapshot, rates: Option<(f64, f64)>, width: usize) -> String {
    let fraction = (now.read as f64 / now.total as f64).clamp(0.0, 1.0);
    let sizes = format!("{} / {}", bytes(now.read), bytes(now.total));
    let percent = format!("{:3.0}%", fraction * 100.0);
    let (rate, eta) = match rates {
        Some((bps, lps)) => {
            let eta = if bps > 0.0 {
                duration((now.total - now.read) as f64 / bps)
            } else {
                "--:--".into()
            };
            (format!("{} lines/s", count(lps)), eta)
        }
        None => ("- lines/s".into(), "--:--".into()),
    };
    let tail = format!("{percent}  {rate}  ETA {eta}");
    // Room for the bar between the sizes and the rest, two brackets and three spaces.
    let room = width
        .saturating_sub(1)
        .saturating_sub(sizes.len() + tail.len() + 5);
    if room < 10 {
        let short = format!("{percent} {rate} ETA {eta}");
        return short.chars().take(width.saturating_sub(1)).collect();
    }
    let cells = room.min(40);
    let full = (fraction * cells as f64) as usize;
    let mut bar = "#".repeat(full);
    if full < cells {
        bar.push('>');
        bar.push_str(&".".repeat(cells - full - 1));
    }
    format!("{sizes} [{bar}] {tail}")
}

/// Bytes in binary units with three significant digits.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A count a second in k and M.
fn count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Seconds as `M:SS`, or `H:MM:SS` from an hour on.
fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs > 360_000.0 {
        return "--:--".into();
    }
    let s = secs.ceil() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Columns of the terminal on stderr; 80 when it does not say.
fn terminal_width() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points to a live,
    // properly aligned `winsize` for the duration of the call.
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(total: u64, read: u64, lines: u64) -> ProgressSnapshot {
        ProgressSnapshot { total, read, lines }
    }

    #[test]
    fn the_line_says_bytes_rate_and_time_left() {
        let line = render(
            snap(100 << 20, 25 << 20, 1000),
            Some((5.0 * 1048576.0, 81_234.0)),
            100,
        );
        assert!(line.starts_with("25.0 MiB / 100.0 MiB ["), "{line}");
        assert!(line.ends_with("]  25%  81.2k lines/s  ETA 0:15"), "{line}");
        assert!(line.chars().count() <= 99, "{line}");
        assert_eq!(
            line.matches('#').count(),
            10,
            "a quarter of 40 cells: {line}"
        );
        // Narrow terminals get the numbers only; nothing wraps.
        let narrow = render(snap(100, 50, 1), None, 30);
        assert_eq!(narrow, " 50% - lines/s ETA --:--");
        assert!(render(snap(100, 50, 1), None, 10).chars().count() <= 9);
    }

    #[test]
    fn units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1_500_000.0), "1.5M");
        assert_eq!(duration(59.2), "1:00");
        assert_eq!(duration(3725.0), "1:02:05");
        assert_eq!(duration(f64::INFINITY), "--:--");
    }

    #[test]
    fn rates_follow_the_recent_window() {
        let t = Instant::now();
        let mut r = Rates::default();
        r.add(t, snap(100, 0, 0));
        assert_eq!(r.per_second(), None);
        r.add(t + Duration::from_secs(1), snap(100, 10, 5));
        assert_eq!(r.per_second(), Some((10.0, 5.0)));
        r.add(t + Duration::from_secs(2), snap(100, 20, 10));
        // The first reading leaves the window: the rate is that of the last 3 s.
        r.add(t + Duration::from_secs(4), snap(100, 70, 35));
        assert_eq!(r.samples.len(), 3);
        assert_eq!(r.per_second(), Some((20.0, 10.0)));
    }
}
