//! `udp_in` and `udp_out` against the real binary, `logger` and std sockets on 127.0.0.1.

use crate::support::{free_udp_port as free_port, line_count, wait_until};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deadbeat::record::{Key, Record, Value};

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");

/// Longest any condition is waited for; a healthy run takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_until(what, PATIENCE, cond);
}

/// The daemon running `cogs` (TOML of one train's cogs), stderr in `dir/err.log`.
struct Daemon {
    child: Child,
    err: PathBuf,
}

impl Daemon {
    /// Starts the daemon and waits until every `udp_in` of it listens.
    fn start(dir: &Path, cogs: &str, stdin: bool) -> Daemon {
        let cfg = dir.join("deadbeat.toml");
        std::fs::write(&cfg, format!("[[train]]\nname = \"t\"\n{cogs}")).unwrap();
        let err = dir.join("err.log");
        let child = Command::new(BIN)
            .args(["run", cfg.to_str().unwrap()])
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon { child, err };
        let listeners = cogs.matches("\"udp_in\"").count();
        wait_for("the daemon to start", || {
            let log = d.log();
            assert!(!log.contains("ERRO"), "{log}");
            log.matches("udp_in listening").count() == listeners && log.contains("trains started")
        });
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// SIGTERM, then the log once it exited successfully.
    fn stop(mut self) -> String {
        // SAFETY: signalling a child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait()
    }

    fn wait(&mut self) -> String {
        let deadline = Instant::now() + PATIENCE;
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("deadbeat did not exit in time:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let log = self.log();
        assert!(st.success(), "exit {st:?}:\n{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn udp_in(port: u16, extra: &str) -> String {
    format!("[[train.cog]]\ntype = \"udp_in\"\nlisten = \"127.0.0.1:{port}\"\n{extra}")
}

fn file_out(path: &Path) -> String {
    format!(
        "[[train.cog]]\ntype = \"file_out\"\npath = {:?}\nformat = \"json\"\n",
        path.to_str().unwrap()
    )
}

fn records(p: &Path) -> Vec<Record> {
    std::fs::read(p)
        .unwrap_or_default()
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Record::parse_json(l).unwrap())
        .collect()
}

fn text<'r>(r: &'r Record, key: &str) -> &'r str {
    r.get(Key::new(key))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no text field {key} in {r:?}"))
}

fn has_logger() -> bool {
    Command::new("logger")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn logger_messages_arrive_with_peer_and_time() {
    if !has_logger() {
        eprintln!("skipped: logger(1) not installed");
        return;
    }
    let dir = TempDir::new("udp-logger");
    let out = dir.path().join("out.json");
    let port = free_port();
    let d = Daemon::start(dir.path(), &(udp_in(port, "") + &file_out(&out)), false);
    for (flag, msg) in [
        ("--rfc3164", "hello classic"),
        ("--rfc5424", "hello five424"),
    ] {
        let st = Command::new("logger")
            .args([
                flag,
                "-d",
                "-n",
                "127.0.0.1",
                "-P",
                &port.to_string(),
                "-t",
                "dbt",
                msg,
            ])
            .status()
            .unwrap();
        assert!(st.success());
    }
    wait_for("two records", || line_count(&out) == 2);
    let log = d.stop();
    let recs = records(&out);
    assert_eq!(recs.len(), 2, "{log}");
    let (classic, modern) = (text(&recs[0], "message"), text(&recs[1], "message"));
    assert!(
        classic.starts_with("<13>") && classic.ends_with("dbt: hello classic"),
        "{classic}"
    );
    assert!(
        modern.starts_with("<13>1 ") && modern.ends_with("hello five424"),
        "{modern}"
    );
    for r in &recs {
        assert!(text(r, "peer").starts_with("127.0.0.1:"), "{r:?}");
        // Rendered as RFC 3339 in JSON: a date this century.
        assert!(text(r, "received_at").starts_with("20"), "{r:?}");
        assert!(!text(r, "message").ends_with('\n'));
    }
    assert!(
        log.contains("cog=udp_in#1 in=0 out=2 dropped=0 errors=0"),
        "{log}"
    );
}

#[test]
fn a_thousand_paced_datagrams_all_arrive_and_oversized_ones_are_cut() {
    let dir = TempDir::new("udp-1000");
    let out = dir.path().join("out.json");
    let port = free_port();
    let d = Daemon::start(
        dir.path(),
        &(udp_in(port, "max_message_bytes = 200\nrecv_buffer = \"1MiB\"\n") + &file_out(&out)),
        false,
    );
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", port);
    for i in 0..1000 {
        tx.send_to(format!("datagram {i:04}\n").as_bytes(), to)
            .unwrap();
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    tx.send_to(&[b'x'; 500], to).unwrap();
    tx.send_to(&[b'y'; 200], to).unwrap();
    tx.send_to(b"crlf\r\n", to).unwrap();
    wait_for("1003 records", || line_count(&out) == 1003);
    let log = d.stop();
    let recs = records(&out);
    let mut seen: Vec<&str> = recs[..1000].iter().map(|r| text(r, "message")).collect();
    seen.sort_unstable();
    let want: Vec<String> = (0..1000).map(|i| format!("datagram {i:04}")).collect();
    assert_eq!(seen, want);
    let me = format!("127.0.0.1:{}", tx.local_addr().unwrap().port());
    assert!(recs.iter().all(|r| text(r, "peer") == me));
    let cut = &recs[1000];
    assert_eq!(text(cut, "message"), "x".repeat(200));
    assert_eq!(cut.get(Key::new("truncated")), Some(&Value::Bool(true)));
    // Exactly max_message_bytes is not cut.
    assert_eq!(text(&recs[1001], "message"), "y".repeat(200));
    assert_eq!(recs[1001].get(Key::new("truncated")), None);
    assert_eq!(text(&recs[1002], "message"), "crlf");
    assert!(
        log.contains("cog=udp_in#1 in=0 out=1003 dropped=0 errors=1"),
        "{log}"
    );
    assert!(
        log.contains("datagram longer than max_message_bytes cut"),
        "{log}"
    );
    assert!(log.contains("udp_in receive buffer"), "{log}");
}

/// A receiver on 127.0.0.1 with a large receive buffer (the daemon sends unpaced, and a
/// test thread reads slower than it sends), reading in its own thread until `n`
/// datagrams arrived or nothing came for a while.
fn receiver(n: usize) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    use std::os::fd::AsRawFd;
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let size: i32 = 8 << 20;
    // SAFETY: setsockopt with a live int; failure only leaves the default size.
    unsafe {
        libc::setsockopt(
            rx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = rx.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0; 70_000];
        while got.len() < n {
            match rx.recv(&mut buf) {
                Ok(len) => got.push(String::from_utf8_lossy(&buf[..len]).into_owned()),
                Err(_) => break,
            }
        }
        got
    });
    (port, t)
}

/// Compares received datagrams with the expected ones, reporting only the difference.
fn assert_datagrams(got: &[String], want: &[String], log: &str) {
    let first_diff = got.iter().zip(want).position(|(g, w)| g != w);
    assert!(
        got.len() == want.len() && first_diff.is_none(),
        "received {} datagrams, expected {}; first difference at {first_diff:?}:\n{log}",
        got.len(),
        want.len()
    );
}

#[test]
fn udp_out_sends_one_datagram_per_record() {
    let dir = TempDir::new("udp-out");
    let (port, rx) = receiver(301);
    let cogs = format!(
        "[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"udp_out\"\naddress = \"127.0.0.1:{port}\"\nmax_message_bytes = 100\non_error = \"drop\"\n"
    );
    let mut d = Daemon::start(dir.path(), &cogs, true);
    let mut want: Vec<String> = (0..300).map(|i| format!("record {i}")).collect();
    let mut input = want.join("\n");
    input.push('\n');
    input.push_str(&"z".repeat(101));
    input.push_str("\nlast\n");
    want.push("last".to_string());
    let mut stdin = d.child.stdin.take().unwrap();
    {
        use std::io::Write;
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let log = d.wait();
    let got = rx.join().unwrap();
    assert_datagrams(&got, &want, &log);
    assert!(
        log.contains("cog=udp_out#2 in=302 out=0 dropped=1 errors=1"),
        "{log}"
    );
}

#[test]
fn udp_in_to_udp_out_chain() {
    let dir = TempDir::new("udp-chain");
    let (out_port, rx) = receiver(200);
    let in_port = free_port();
    let cogs = format!(
        "{}[[train.cog]]\ntype = \"udp_out\"\naddress = \"127.0.0.1:{out_port}\"\nformat = \"template\"\ntemplate = \"{{peer}} {{message}}\"\n",
        udp_in(in_port, "")
    );
    let d = Daemon::start(dir.path(), &cogs, false);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = tx.local_addr().unwrap();
    for i in 0..200 {
        tx.send_to(format!("m{i}\n").as_bytes(), ("127.0.0.1", in_port))
            .unwrap();
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let got = rx.join().unwrap();
    let log = d.stop();
    let want: Vec<String> = (0..200).map(|i| format!("{me} m{i}")).collect();
    assert_datagrams(&got, &want, &log);
    assert!(
        log.contains("cog=udp_out#2 in=200 out=0 dropped=0 errors=0"),
        "{log}"
    );
}

#[test]
fn bad_addresses_are_config_errors() {
    let dir = TempDir::new("udp-bad");
    for (cog, key) in [
        ("type = \"udp_in\"\nlisten = \"localhost\"", "listen"),
        ("type = \"udp_out\"\naddress = \"nowhere\"", "address"),
    ] {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(
            &cfg,
            format!(
                "[[train]]\nname = \"t\"\n[[train.cog]]\n{cog}\n[[train.cog]]\ntype = \"stdout\"\n"
            ),
        )
        .unwrap();
        let res = Command::new(BIN)
            .args(["check", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success());
        assert!(err.contains(&format!("key \"{key}\"")), "{err}");
    }
}

/// `(out, dropped)` of `cog` in the final counters.
fn final_counts(log: &str, cog: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("final counters") && l.contains(&format!("cog={cog}#")))
        .unwrap_or_else(|| panic!("no final counters of {cog}:\n{log}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    (field("out="), field("dropped="))
}

#[test]
fn kernel_drops_are_counted() {
    let dir = TempDir::new("udp-drops");
    let out = dir.path().join("out.json");
    let port = free_port();
    // The smallest buffer the kernel allows holds a handful of datagrams: an unpaced
    // burst overflows it.
    let d = Daemon::start(
        dir.path(),
        &(udp_in(port, "recv_buffer = 1\n") + &file_out(&out)),
        false,
    );
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = 20_000;
    for i in 0..sent {
        tx.send_to(format!("burst {i}").as_bytes(), ("127.0.0.1", port))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let log = d.stop();
    let (received, dropped) = final_counts(&log, "udp_in");
    assert_eq!(received as usize, line_count(&out), "{log}");
    assert_eq!(received + dropped, sent, "{log}");
    assert!(dropped > 0, "{log}");
    assert!(log.contains("the kernel dropped UDP datagrams"), "{log}");
}

/// Issue 14 #1 (udp): at a stop, `udp_in` read at most 2,048 datagrams, and nothing if a
/// drain had paused it, before closing its socket: the rest, received already, was lost.
#[test]
fn sigterm_reads_what_the_socket_holds() {
    let count: usize = std::env::var("DEADBEAT_UDP_STOP_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000);
    let dir = crate::engine::TempDir::new("udp-stop");
    let out = dir.path().join("out.json");
    let port = free_port();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            "{}{}",
            udp_in(port, "recv_buffer = \"16MiB\"\n"),
            file_out(&out)
        ),
        false,
    );
    // SAFETY: signalling a child we started.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGSTOP) };
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..count {
        s.send_to(format!("datagram {i}").as_bytes(), ("127.0.0.1", port))
            .unwrap();
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(d.child.id() as i32, libc::SIGTERM);
        libc::kill(d.child.id() as i32, libc::SIGCONT);
    }
    let log = d.wait();
    let dropped: usize = log
        .lines()
        .find(|l| l.contains("final counters") && l.contains("cog=udp_in"))
        .and_then(|l| l.split("dropped=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no udp_in counters in:\n{log}"));
    // What the kernel dropped (a receive buffer smaller than asked for) is counted; all
    // the rest was queued at the stop and must be written.
    let written = line_count(&out);
    assert_eq!(written + dropped, count, "{log}");
    // The old code read 2,048 datagrams at a stop: the test tells it apart only when the
    // socket held more. Without root the buffer is capped at net.core.rmem_max, which may
    // hold fewer; as root (CI) SO_RCVBUFFORCE grants the 16 MiB asked for.
    if written <= 2_048 {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            !root,
            "as root the socket held only {written} datagrams (2,048 or fewer):\n{log}"
        );
        eprintln!(
            "sigterm_reads_what_the_socket_holds: SKIPPED, the receive buffer held only \
             {written} datagrams (not root: capped at net.core.rmem_max), no more than the \
             2,048 the old code read at a stop"
        );
    }
}
