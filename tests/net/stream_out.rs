//! Network tests: stream_out (`tcp_out`, `unix_out`) against collectors in this process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");
/// Longest any condition is waited for; a healthy run takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(15);

fn numbered(from: usize, to: usize) -> String {
    let mut s = String::new();
    for i in from..to {
        s.push_str(&format!("line {i:07} the quick brown fox\n"));
    }
    s
}

fn config(dir: &Path, supply: &str, drain: &str) -> PathBuf {
    let p = dir.join("deadbeat.toml");
    let text =
        format!("[[train]]\nname = \"fwd\"\n[[train.cog]]\n{supply}\n[[train.cog]]\n{drain}\n");
    std::fs::write(&p, text).unwrap();
    p
}

fn file_in(dir: &Path, text: &str) -> String {
    let p = dir.join("in.log");
    std::fs::write(&p, text).unwrap();
    format!("type = \"file_in\"\npaths = [{:?}]", p.to_str().unwrap())
}

/// The daemon with its stderr lines forwarded to a channel, so tests wait on log events.
struct Daemon {
    child: Child,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn start(config: &Path, stdin: bool) -> Daemon {
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
    fn wait_log(&mut self, what: &str) {
        if self.seen.iter().any(|l| l.contains(what)) {
            return;
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(what);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("no log line with {what:?}; got:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn write_stdin(&mut self, text: &str) {
        let mut w = self.child.stdin.take().unwrap();
        w.write_all(text.as_bytes()).unwrap();
        self.child.stdin = Some(w);
    }

    fn close_stdin(&mut self) {
        self.child.stdin = None;
    }

    /// Waits for the exit; returns success and every log line.
    fn wait(mut self) -> (bool, String) {
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

    fn rss_kib(&self) -> u64 {
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

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn accept(l: &TcpListener) -> TcpStream {
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Reads complete lines until `n` have arrived (no read past the last one is requested,
/// so closing afterwards loses nothing the daemon sent).
fn read_lines(r: &mut BufReader<TcpStream>, n: usize) -> Vec<String> {
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

const FAST_RETRY: &str = "reconnect_initial = \"20ms\"\nreconnect_max = \"200ms\"";

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

/// The collector goes away mid-stream and comes back on the same port: every record
/// arrives once, in order. The collector closes only after reading all that was sent, so
/// nothing is in flight at the loss: the allowed duplicates (one truncated fragment per
/// loss, never a whole record) are then zero, which is asserted.
#[test]
fn tcp_out_survives_a_collector_restart() {
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
    let mut got = read_lines(&mut first, 1000);
    drop(first);
    drop(l);
    d.wait_log("connection lost");
    // Records arriving while the collector is down wait in the buffer.
    d.write_stdin(&numbered(1000, 3000));
    d.wait_log("cannot connect");
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    d.close_stdin();
    let mut rest = String::new();
    accept(&l).read_to_string(&mut rest).unwrap();
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    assert!(rest.ends_with('\n'), "truncated record at the end");
    got.extend(rest.lines().map(|l| format!("{l}\n")));
    assert_eq!(
        got.concat(),
        numbered(0, 3000),
        "lost, reordered or repeated"
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
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut r = BufReader::new(s);
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
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
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
