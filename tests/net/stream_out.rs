//! Network tests: stream_out (`tcp_out`, `unix_out`) against collectors in this process.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::engine::TempDir;

pub(super) const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");
/// Longest any condition is waited for; a healthy run takes milliseconds.
pub(super) const PATIENCE: Duration = Duration::from_secs(15);

pub(super) fn numbered(from: usize, to: usize) -> String {
    let mut s = String::new();
    for i in from..to {
        s.push_str(&format!("line {i:07} the quick brown fox\n"));
    }
    s
}

pub(super) fn config(dir: &Path, supply: &str, drain: &str) -> PathBuf {
    let p = dir.join("deadbeat.toml");
    let text =
        format!("[[train]]\nname = \"fwd\"\n[[train.cog]]\n{supply}\n[[train.cog]]\n{drain}\n");
    std::fs::write(&p, text).unwrap();
    p
}

pub(super) fn file_in(dir: &Path, text: &str) -> String {
    let p = dir.join("in.log");
    std::fs::write(&p, text).unwrap();
    format!("type = \"file_in\"\npaths = [{:?}]", p.to_str().unwrap())
}

/// The daemon with its stderr lines forwarded to a channel, so tests wait on log events.
pub(super) struct Daemon {
    pub(super) child: Child,
    log: mpsc::Receiver<String>,
    pub(super) seen: Vec<String>,
}

impl Daemon {
    pub(super) fn start(config: &Path, stdin: bool) -> Daemon {
        let mut child = Command::new(BIN)
            .args(["run", config.to_str().unwrap()])
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Daemon {
            child,
            log,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `what`.
    pub(super) fn wait_log(&mut self, what: &str) {
        self.wait_log_from(0, what);
    }

    /// Waits for a log line containing `what`, from the `from`-th line of the log on;
    /// returns its index in `seen`.
    pub(super) fn wait_log_from(&mut self, from: usize, what: &str) -> usize {
        if let Some(i) = self.seen.iter().skip(from).position(|l| l.contains(what)) {
            return from + i;
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(what);
                    self.seen.push(l);
                    if hit && self.seen.len() > from {
                        return self.seen.len() - 1;
                    }
                }
                Err(_) => panic!("no log line with {what:?}; got:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Whether the daemon is still running.
    pub(super) fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub(super) fn write_stdin(&mut self, text: &str) {
        let mut w = self.child.stdin.take().unwrap();
        w.write_all(text.as_bytes()).unwrap();
        self.child.stdin = Some(w);
    }

    pub(super) fn close_stdin(&mut self) {
        self.child.stdin = None;
    }

    /// Waits for the exit; returns success and every log line.
    pub(super) fn wait(mut self) -> (bool, String) {
        let deadline = Instant::now() + PATIENCE;
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("deadbeat did not exit; log:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        while let Ok(l) = self.log.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        (st.success(), self.seen.join("\n"))
    }

    pub(super) fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Waits until `fd` is readable (a listener: a connection is pending), failing after
/// PATIENCE.
pub(super) fn wait_readable(fd: impl AsFd, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {what} within {PATIENCE:?}");
        let mut p = libc::pollfd {
            fd: fd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, 60_000) as libc::c_int;
        // SAFETY: one pollfd, alive for the call.
        match unsafe { libc::poll(&mut p, 1, ms) } {
            1.. => return,
            0 => {}
            _ => {
                let e = io::Error::last_os_error();
                assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
            }
        }
    }
}

/// The next connection to `l`, within PATIENCE.
pub(super) fn accept(l: &TcpListener) -> TcpStream {
    wait_readable(l, "connection");
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// The next connection to `l`, within PATIENCE.
pub(super) fn accept_unix(l: &UnixListener) -> std::os::unix::net::UnixStream {
    wait_readable(l, "connection");
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// A collector that is down: a TCP socket bound to 127.0.0.1:`port` without listening, so
/// connections to the port are refused (RST) while no other socket can take the port
/// meanwhile (another test's listener, or the daemon's own connecting socket choosing it as
/// its source port: a TCP self-connection). [`DownPort::listen`] brings the collector back
/// on the same port.
pub(super) struct DownPort(OwnedFd);

impl DownPort {
    pub(super) fn bind(port: u16) -> DownPort {
        let err = |what: &str| panic!("{what} 127.0.0.1:{port}: {}", io::Error::last_os_error());
        // SAFETY: socket(2) returns a new descriptor (or -1), owned here from now on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            err("socket for");
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // The old connection on this port is in TIME_WAIT: bind like a restarted server.
        let one: libc::c_int = 1;
        // SAFETY: the option value is a c_int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            err("SO_REUSEADDR for");
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `sa` is a sockaddr_in of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            err("bind");
        }
        DownPort(fd)
    }

    /// The collector is back: listening on the same port.
    pub(super) fn listen(self) -> TcpListener {
        // SAFETY: listen(2) on a bound socket this value owns.
        if unsafe { libc::listen(self.0.as_raw_fd(), 128) } != 0 {
            panic!("listen: {}", io::Error::last_os_error());
        }
        TcpListener::from(self.0)
    }
}

/// How long the collector stays down in `tcp_out_survives_a_collector_restart`: 10 s, or
/// `DEADBEAT_COLLECTOR_DOWN_SECS` (seconds, fractions allowed).
fn collector_down() -> Duration {
    match std::env::var("DEADBEAT_COLLECTOR_DOWN_SECS") {
        Ok(v) => v
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .unwrap_or_else(|| {
                panic!("DEADBEAT_COLLECTOR_DOWN_SECS={v:?}: not a number of seconds")
            }),
        Err(_) => Duration::from_secs(10),
    }
}

/// The value of `key=` in a log line.
pub(super) fn log_value(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// Asserts that `got` holds the lines of `numbered(0, n)`, each once and in order; on a
/// mismatch names the first line that differs instead of printing both texts.
pub(super) fn assert_numbered(got: &str, n: usize) {
    let want = numbered(0, n);
    if got == want {
        return;
    }
    let (g, w): (Vec<&str>, Vec<&str>) = (
        got.split_inclusive('\n').collect(),
        want.split_inclusive('\n').collect(),
    );
    let at = g
        .iter()
        .zip(&w)
        .position(|(a, b)| a != b)
        .unwrap_or(g.len().min(w.len()));
    panic!(
        "lost, reordered or repeated: {} lines, {} expected; first difference at line {at}: \
         got {:?}, expected {:?}",
        g.len(),
        w.len(),
        g.get(at),
        w.get(at)
    );
}

/// Reads complete lines until `n` have arrived (no read past the last one is requested,
/// so closing afterwards loses nothing the daemon sent).
pub(super) fn read_lines(r: &mut BufReader<TcpStream>, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    let mut line = String::new();
    while out.len() < n {
        line.clear();
        let got = r.read_line(&mut line).unwrap();
        assert!(got > 0 && line.ends_with('\n'), "stream ended early");
        out.push(line.clone());
    }
    out
}

/// Parses RFC 6587 octet-counted frames; panics on anything malformed.
fn parse_octet_counted(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let sp = b.iter().position(|&c| c == b' ').expect("frame length");
        let len: usize = std::str::from_utf8(&b[..sp]).unwrap().parse().unwrap();
        let msg = &b[sp + 1..sp + 1 + len];
        out.push(msg.to_vec());
        b = &b[sp + 1 + len..];
    }
    out
}

pub(super) const FAST_RETRY: &str = "reconnect_initial = \"20ms\"\nreconnect_max = \"200ms\"";

#[test]
fn tcp_out_sends_everything_in_order_once() {
    let dir = TempDir::new("tcp-out-once");
    let input = numbered(0, 20_000);
    let (l, port) = listener();
    let cfg = config(
        dir.path(),
        &file_in(dir.path(), &input),
        &format!("type = \"tcp_out\"\naddress = \"127.0.0.1:{port}\""),
    );
    let d = Daemon::start(&cfg, false);
    let mut s = accept(&l);
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    assert_eq!(got.len(), input.len());
    assert!(got == input, "records lost, reordered or repeated");
}

#[test]
/// Also resolves a host name (on a worker), trying its addresses in turn.
fn tcp_out_octet_counting_frames_parse_back() {
    let dir = TempDir::new("tcp-out-octet");
    let mut input = numbered(0, 5_000);
    input.push_str("<13>1 2024-01-01T00:00:00Z host app - - - caf\u{e9} with spaces  \n");
    let (l, port) = listener();
    let cfg = config(
        dir.path(),
        &file_in(dir.path(), &input),
        &format!(
            "type = \"tcp_out\"\naddress = \"localhost:{port}\"\nframing = \"octet_counting\"\n{FAST_RETRY}"
        ),
    );
    let d = Daemon::start(&cfg, false);
    let mut s = accept(&l);
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    let frames = parse_octet_counted(&got);
    let want: Vec<&[u8]> = input.lines().map(str::as_bytes).collect();
    assert_eq!(frames.len(), want.len());
    for (f, w) in frames.iter().zip(&want) {
        assert_eq!(f.as_slice(), *w);
    }
}

/// The downstream collector goes away mid-stream for 10 s and comes back on the same port:
/// every record arrives once, in order. The input keeps flowing during the outage, so
/// records queue in the drain's buffer while it retries (refused) connections, at most
/// every `reconnect_refused` = 250 ms, which also bounds how long the reconnection takes
/// once the collector is back. The collector closes only after reading all that was sent,
/// and the drain sees that it was read: nothing is sent twice, which is asserted.
///
/// `DEADBEAT_COLLECTOR_DOWN_SECS` sets the outage (seconds, default 10; the test takes
/// about that long plus half a second).
#[test]
fn tcp_out_survives_a_collector_restart() {
    // Records written per step while the collector is down, and the step's length: about
    // 20k records (660 KB) in 10 s, well below the drain's 8 MiB buffer, so the supply
    // is never paused and the writes to its stdin never block.
    const BATCH: usize = 100;
    const STEP: Duration = Duration::from_millis(50);
    let down_for = collector_down();
    let dir = TempDir::new("tcp-out-restart");
    let (l, port) = listener();
    let cfg = config(
        dir.path(),
        "type = \"stdin\"",
        &format!("type = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\n{FAST_RETRY}"),
    );
    let mut d = Daemon::start(&cfg, true);
    let mut first = BufReader::new(accept(&l));
    d.write_stdin(&numbered(0, 1000));
    let mut got = read_lines(&mut first, 1000).concat();
    // Down: the port refuses connections from now on, then the connection is closed.
    drop(l);
    let down = DownPort::bind(port);
    drop(first);
    let lost = d.wait_log_from(0, "connection lost");
    // The outage: the input goes on, batch after batch, and the daemon must stay up.
    let outage = Instant::now();
    let mut fed = 1000;
    loop {
        assert!(
            d.running(),
            "deadbeat exited during the outage; log:\n{}",
            d.seen.join("\n")
        );
        d.write_stdin(&numbered(fed, fed + BATCH));
        fed += BATCH;
        let left = down_for.saturating_sub(outage.elapsed());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(STEP.min(left));
    }
    d.wait_log_from(lost, "cannot connect");
    // Back on the same port: the next attempt (within reconnect_refused) connects.
    let l = down.listen();
    let back = Instant::now();
    let s = accept(&l);
    let reconnect = back.elapsed();
    let line = d.wait_log_from(lost, "INFO connected ");
    let attempts = log_value(&d.seen[line], "failed_attempts");
    let buffered = log_value(&d.seen[line], "buffered_records");
    // And the stream goes on live after the reconnection.
    d.write_stdin(&numbered(fed, fed + 1000));
    fed += 1000;
    d.close_stdin();
    let mut rest = String::new();
    BufReader::new(s).read_to_string(&mut rest).unwrap();
    let (ok, log) = d.wait();
    eprintln!(
        "collector down {:.1} s: {} records fed meanwhile, {buffered} buffered at the \
         reconnection, {attempts} refused attempts; reconnected {} ms after it was back",
        down_for.as_secs_f64(),
        fed - 2000,
        reconnect.as_millis()
    );
    assert!(ok, "{log}");
    assert!(rest.ends_with('\n'), "truncated record at the end");
    got.push_str(&rest);
    assert_numbered(&got, fed);
    assert!(
        buffered >= 1 && buffered as usize <= fed - 2000,
        "{buffered} records buffered, {} fed during the outage",
        fed - 2000
    );
    // At least one attempt per second down (200 ms apart at most is 5 per second).
    let min_attempts = down_for.as_secs().max(1);
    assert!(
        attempts >= min_attempts,
        "{attempts} reconnection attempts in {down_for:?}"
    );
    assert!(
        reconnect < Duration::from_secs(5),
        "reconnected {reconnect:?} after the collector was back (reconnect_refused is 250 ms)"
    );
}

/// How long the collector stays down in `tcp_out_reconnects_quickly_after_an_outage`: 5 s,
/// or `DEADBEAT_OUTAGE_SECS` (seconds, fractions allowed; 30 is the outage).
fn outage() -> Duration {
    match std::env::var("DEADBEAT_OUTAGE_SECS") {
        Ok(v) => v
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .unwrap_or_else(|| panic!("DEADBEAT_OUTAGE_SECS={v:?}: not a number of seconds")),
        Err(_) => Duration::from_secs(5),
    }
}

/// With the default reconnection settings, a collector that was down (its port refusing
/// connections) and comes back gets the first buffered line within 2 s: refused attempts
/// are retried at a short fixed interval instead of backing off.
#[test]
fn tcp_out_reconnects_quickly_after_an_outage() {
    let down_for = outage();
    let dir = TempDir::new("tcp-out-outage");
    let (l, port) = listener();
    let cfg = config(
        dir.path(),
        "type = \"stdin\"",
        &format!("type = \"tcp_out\"\naddress = \"127.0.0.1:{port}\""),
    );
    let mut d = Daemon::start(&cfg, true);
    let mut first = BufReader::new(accept(&l));
    d.write_stdin(&numbered(0, 10));
    let mut got = read_lines(&mut first, 10).concat();
    drop(l);
    let down = DownPort::bind(port);
    drop(first);
    let lost = d.wait_log_from(0, "connection lost");
    let went_down = Instant::now();
    d.write_stdin(&numbered(10, 20));
    std::thread::sleep(down_for.saturating_sub(went_down.elapsed()));
    let l = down.listen();
    let back = Instant::now();
    let mut s = BufReader::new(accept(&l));
    let mut line = String::new();
    s.read_line(&mut line).unwrap();
    let first_line = back.elapsed();
    got.push_str(&line);
    let at = d.wait_log_from(lost, "INFO connected ");
    let attempts = log_value(&d.seen[at], "failed_attempts");
    d.close_stdin();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    got.push_str(&rest);
    let (ok, log) = d.wait();
    eprintln!(
        "collector down {:.1} s: {attempts} refused attempts; first line {} ms after it was back",
        down_for.as_secs_f64(),
        first_line.as_millis()
    );
    assert!(ok, "{log}");
    assert_numbered(&got, 20);
    assert!(
        first_line < Duration::from_secs(2),
        "first line {first_line:?} after the collector was back"
    );
    // Refusals are retried at least every 500 ms.
    let min_attempts = (down_for.as_secs_f64() * 2.0) as u64;
    assert!(
        attempts >= min_attempts,
        "{attempts} attempts in {down_for:?}, expected at least {min_attempts}"
    );
}

/// A collector that stops reading: the buffer fills, the supply pauses (memory stays
/// bounded while the input is much larger), and nothing is lost once it reads again.
#[test]
fn tcp_out_backpressure_bounds_memory_and_loses_nothing() {
    let dir = TempDir::new("tcp-out-stall");
    let pad = "x".repeat(200);
    let input: String = (0..400_000).map(|i| format!("{i:07} {pad}\n")).collect();
    let (l, port) = listener();
    let cfg = config(
        dir.path(),
        &file_in(dir.path(), &input),
        &format!("type = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\nbuffer_bytes = \"1MiB\""),
    );
    let mut d = Daemon::start(&cfg, false);
    let s = accept(&l);
    // Stalled: the socket buffers and the drain's buffer fill, then the supply pauses.
    let mut max_rss = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        max_rss = max_rss.max(d.rss_kib());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "exited while stalled"
    );
    let input_kib = input.len() as u64 / 1024;
    eprintln!("stalled collector: max RSS {max_rss} KiB, input {input_kib} KiB");
    // 1 MiB buffer + a fixed overhead: one 1 MiB read of the supply as records, the
    // allocator's slack and the (debug) binary's own footprint.
    let bound = 1024 + 32 * 1024;
    assert!(
        max_rss < bound && input_kib > 2 * bound,
        "RSS {max_rss} KiB, bound {bound} KiB, input {input_kib} KiB"
    );
    let mut got = String::new();
    BufReader::new(s).read_to_string(&mut got).unwrap();
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    assert!(
        got == input,
        "lost, reordered or repeated under backpressure"
    );
}

#[test]
fn tcp_out_unsent_records_are_counted_at_drain_timeout() {
    let dir = TempDir::new("tcp-out-timeout");
    // A port with nobody listening.
    let (l, port) = listener();
    drop(l);
    let cfg = config(
        dir.path(),
        "type = \"stdin\"",
        &format!(
            "type = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\ndrain_timeout = \"300ms\"\n{FAST_RETRY}"
        ),
    );
    let mut d = Daemon::start(&cfg, true);
    d.write_stdin(&numbered(0, 3));
    d.close_stdin();
    let (_, log) = d.wait();
    assert!(log.contains("unsent_records=3"), "{log}");
}

#[test]
fn unix_out_stream_reconnects_and_delivers_in_order() {
    let dir = TempDir::new("unix-out-stream");
    let sock = dir.path().join("collector.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let cfg = config(
        dir.path(),
        "type = \"stdin\"",
        &format!("type = \"unix_out\"\npath = {sock:?}\n{FAST_RETRY}"),
    );
    let mut d = Daemon::start(&cfg, true);
    let mut r = BufReader::new(accept_unix(&l));
    d.write_stdin(&numbered(0, 500));
    let mut got = Vec::new();
    let mut line = String::new();
    while got.len() < 500 {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0);
        got.push(line.clone());
    }
    drop(r);
    drop(l);
    std::fs::remove_file(&sock).unwrap();
    d.wait_log("connection lost");
    d.write_stdin(&numbered(500, 1500));
    d.wait_log("cannot connect");
    let l = UnixListener::bind(&sock).unwrap();
    d.close_stdin();
    let mut s = accept_unix(&l);
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    assert_eq!(got.concat() + &rest, numbered(0, 1500));
}

#[test]
fn unix_out_datagram_sends_one_record_per_datagram() {
    let dir = TempDir::new("unix-out-dgram");
    let sock = dir.path().join("dev-log");
    let rx = UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(PATIENCE)).unwrap();
    let n = 5_000;
    let input = numbered(0, n);
    let cfg = config(
        dir.path(),
        &file_in(dir.path(), &input),
        &format!("type = \"unix_out\"\npath = {sock:?}\nmode = \"datagram\""),
    );
    let d = Daemon::start(&cfg, false);
    let mut buf = vec![0u8; 65536];
    for want in input.lines() {
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..k],
            want.as_bytes(),
            "datagram out of order or altered"
        );
    }
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
}

#[test]
fn unix_out_datagram_too_large_is_counted_and_dropped() {
    let dir = TempDir::new("unix-out-big");
    let sock = dir.path().join("dev-log");
    let rx = UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(PATIENCE)).unwrap();
    let big = "x".repeat(600_000);
    let input = format!("small 1\n{big}\nsmall 2\n");
    let cfg = config(
        dir.path(),
        &format!("{}\nmax_line_bytes = \"1MiB\"", file_in(dir.path(), &input)),
        &format!("type = \"unix_out\"\npath = {sock:?}\nmode = \"datagram\""),
    );
    let d = Daemon::start(&cfg, false);
    let mut buf = vec![0u8; 1 << 20];
    let k = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..k], b"small 1");
    let k = rx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..k], b"small 2");
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    assert!(
        log.contains("larger than the socket's largest datagram"),
        "{log}"
    );
    assert!(log.contains("errors=1"), "{log}");
}
