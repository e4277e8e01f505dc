//! `tcp_in` and `unix_in` against real clients: util-linux `logger`, rsyslog, plain sockets.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");
const PATIENCE: Duration = Duration::from_secs(20);

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn out_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A running deadbeat with one listener → `file_out` json.
struct Daemon {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Daemon {
    /// `tcp_in` on a free loopback port with `extra` keys; retries when the port is taken
    /// between choosing and binding it.
    fn tcp(dir: &TempDir, extra: &str) -> Daemon {
        for _ in 0..10 {
            let port = {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let cog = format!("type = \"tcp_in\"\nlisten = \"127.0.0.1:{port}\"\n{extra}");
            let mut d = Daemon::spawn(dir, &cog, port);
            let ready = loop {
                if let Some(_st) = d.child.try_wait().unwrap() {
                    break false;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break true;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            if ready {
                return d;
            }
            let err = d.stop_err();
            assert!(err.contains("Address already in use"), "{err}");
        }
        panic!("no free port found");
    }

    fn unix(dir: &TempDir, sock: &Path, extra: &str) -> Daemon {
        let cog = format!("type = \"unix_in\"\npath = \"{}\"\n{extra}", sock.display());
        let mut d = Daemon::spawn(dir, &cog, 0);
        wait_for("the unix socket", || {
            assert!(d.child.try_wait().unwrap().is_none(), "deadbeat exited");
            sock.exists()
        });
        d
    }

    fn spawn(dir: &TempDir, cog: &str, port: u16) -> Daemon {
        let out = dir.path().join("out.json");
        let _ = std::fs::remove_file(&out);
        let cfg = dir.path().join("deadbeat.toml");
        std::fs::write(
            &cfg,
            format!(
                "[[train]]\nname = \"t\"\n[[train.cog]]\n{cog}\n\
                 [[train.cog]]\ntype = \"file_out\"\npath = \"out.json\"\nformat = \"json\"\n"
            ),
        )
        .unwrap();
        let child = Command::new(BIN)
            .args(["run", cfg.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Daemon { child, out, port }
    }

    fn wait_lines(&self, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        wait_for(&format!("{n} output lines"), || {
            got = out_lines(&self.out);
            got.len() >= n
        });
        got
    }

    /// SIGTERM, wait, and the stderr (final counters).
    fn stop_err(&mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("deadbeat did not exit");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut err = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn logger(args: &[&str]) {
    let st = Command::new("logger").args(args).status().unwrap();
    assert!(st.success(), "logger {args:?} failed");
}

#[test]
fn logger_octet_counted_and_newline_clients_on_auto_framing() {
    if !have("logger") {
        eprintln!("skipped: logger (util-linux) is not installed");
        return;
    }
    let dir = TempDir::new("tcp-logger");
    let mut d = Daemon::tcp(&dir, "framing = \"auto\"\n");
    let port = d.port.to_string();
    let base = ["--tcp", "--octet-count", "-n", "127.0.0.1", "-P", &port];
    logger(&[&base[..], &["--rfc5424", "hello 5424"]].concat());
    logger(&[&base[..], &["--rfc3164", "hello 3164"]].concat());
    // A newline-framed client on the same listener.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(b"<13>plain one\n<13>plain two\n").unwrap();
    drop(s);
    let got = d.wait_lines(4).join("\n");
    assert!(
        got.contains("] hello 5424\"") || got.contains(" - hello 5424\""),
        "{got}"
    );
    assert!(got.contains("hello 3164\""), "{got}");
    assert!(got.contains("\"message\":\"<13>plain one\""), "{got}");
    assert!(got.contains("\"message\":\"<13>plain two\""), "{got}");
    assert!(got.contains("\"peer\":\"127.0.0.1:"), "{got}");
    assert!(got.contains("\"received_at\":\""), "{got}");
    let err = d.stop_err();
    assert!(
        err.contains("cog=tcp_in#1 in=0 out=4 dropped=0 errors=0"),
        "{err}"
    );
}

#[test]
fn unix_datagram_and_stream_with_logger() {
    if !have("logger") {
        eprintln!("skipped: logger (util-linux) is not installed");
        return;
    }
    let dir = TempDir::new("unix-logger");
    let sock = dir.path().join("log.sock");
    // A stale socket file from a dead process is replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let mut d = Daemon::unix(&dir, &sock, "permissions = \"0620\"\n");
    use std::os::unix::fs::PermissionsExt;
    // The stale file exists already: wait until the daemon's socket replaced it (it
    // appears only once listening, with its permissions set).
    wait_for("the daemon's socket", || {
        std::fs::metadata(&sock).is_ok_and(|m| m.permissions().mode() & 0o7777 == 0o620)
    });
    let p = sock.to_str().unwrap();
    logger(&["-u", p, "--rfc3164", "via datagram"]);
    logger(&["-u", p, "--rfc5424", "via datagram 5424"]);
    let got = d.wait_lines(2).join("\n");
    assert!(got.contains("via datagram\""), "{got}");
    assert!(got.contains("via datagram 5424\""), "{got}");
    let err = d.stop_err();
    assert!(!sock.exists(), "socket file left behind");
    assert!(
        err.contains("cog=unix_in#1 in=0 out=2 dropped=0 errors=0"),
        "{err}"
    );

    let mut d = Daemon::unix(&dir, &sock, "mode = \"stream\"\n");
    logger(&["-T", "-u", p, "--rfc3164", "via stream"]);
    let got = d.wait_lines(1).join("\n");
    assert!(got.contains("via stream"), "{got}");
    assert!(got.contains("\"peer\":\"pid="), "{got}");
    d.stop_err();
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn unix_in_never_deletes_a_regular_file() {
    let dir = TempDir::new("unix-file");
    let sock = dir.path().join("not-a-socket");
    std::fs::write(&sock, "precious").unwrap();
    let mut d = Daemon::spawn(
        &dir,
        &format!("type = \"unix_in\"\npath = \"{}\"\n", sock.display()),
        0,
    );
    wait_for("deadbeat to refuse", || {
        d.child.try_wait().unwrap().is_some()
    });
    let err = d.stop_err();
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "precious");
}

#[test]
fn rsyslog_forwards_octet_counted() {
    if !have("rsyslogd") || !have("logger") {
        eprintln!("skipped: rsyslogd or logger is not installed");
        return;
    }
    let dir = TempDir::new("rsyslog");
    let mut d = Daemon::tcp(&dir, "framing = \"octet_counting\"\n");
    let udp_port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let work = dir.path().join("rs");
    std::fs::create_dir_all(&work).unwrap();
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{w}\")\n\
             module(load=\"imudp\")\n\
             input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp_port}\")\n\
             action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{tcp}\" protocol=\"tcp\" \
             TCP_Framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\")\n",
            w = work.display(),
            tcp = d.port
        ),
    )
    .unwrap();
    let mut rs = Command::new("rsyslogd")
        .args(["-n", "-f", conf.to_str().unwrap(), "-i"])
        .arg(work.join("pid"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let port = udp_port.to_string();
    // rsyslog may not listen yet: send until something arrives.
    let deadline = Instant::now() + PATIENCE;
    let mut i = 0;
    while out_lines(&d.out).is_empty() {
        assert!(Instant::now() < deadline, "nothing came through rsyslog");
        logger(&[
            "-d",
            "-n",
            "127.0.0.1",
            "-P",
            &port,
            &format!("through rsyslog {i}"),
        ]);
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = out_lines(&d.out).join("\n");
    let _ = rs.kill();
    let _ = rs.wait();
    assert!(got.contains("through rsyslog"), "{got}");
    assert!(got.contains("\"message\":\"<"), "{got}");
    let err = d.stop_err();
    assert!(err.contains("errors=0"), "{err}");
}

#[test]
fn two_hundred_concurrent_connections() {
    let dir = TempDir::new("tcp-200");
    let d = Daemon::tcp(&dir, "framing = \"newline\"\n");
    let port = d.port;
    let threads: Vec<_> = (0..200)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                for l in 0..50 {
                    s.write_all(format!("conn {c:03} line {l:02}\n").as_bytes())
                        .unwrap();
                }
            })
        })
        .collect();
    // Every client stays connected until all are, so 200 are open at once.
    for t in threads {
        t.join().unwrap();
    }
    let got = d.wait_lines(10_000);
    assert_eq!(got.len(), 10_000);
    let mut msgs: Vec<&str> = got.iter().map(|l| &l[12..30]).collect();
    msgs.sort_unstable();
    msgs.dedup();
    assert_eq!(msgs.len(), 10_000, "{:?}", &msgs[..3]);
}

#[test]
fn bad_clients_are_counted_and_others_served() {
    let dir = TempDir::new("tcp-bad");
    let mut d = Daemon::tcp(
        &dir,
        "framing = \"auto\"\nmax_line_bytes = 100\nidle_timeout = \"300ms\"\n",
    );
    let port = d.port;
    let good = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        for i in 0..200 {
            s.write_all(format!("good {i}\n").as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    // Garbage after a valid frame: the frame is kept, the connection closed.
    let mut g = TcpStream::connect(("127.0.0.1", port)).unwrap();
    g.write_all(b"4 okay12x4 junk").unwrap();
    let mut rest = Vec::new();
    let _ = g.read_to_end(&mut rest);
    // An over-long line is cut; the client goes on.
    let mut long = TcpStream::connect(("127.0.0.1", port)).unwrap();
    long.write_all(format!("{}\nafter long\n", "x".repeat(500)).as_bytes())
        .unwrap();
    // Disconnect mid-line: the partial line is emitted.
    let mut part = TcpStream::connect(("127.0.0.1", port)).unwrap();
    part.write_all(b"complete\npartial li").unwrap();
    drop(part);
    // A silent client is closed by the idle sweep.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1];
    // Other tests in this process raise signals; a read with a timeout is not restarted.
    let n = loop {
        match silent.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.unwrap(),
        }
    };
    assert_eq!(n, 0, "idle connection not closed");
    good.join().unwrap();
    drop(long);
    let got = d.wait_lines(205).join("\n");
    for want in [
        "\"okay\"",
        "\"after long\"",
        "\"complete\"",
        "\"partial li\"",
        "\"good 199\"",
    ] {
        assert!(
            got.contains(&format!("\"message\":{want}")),
            "{want} in {got}"
        );
    }
    assert!(got.contains(&format!("\"message\":\"{}\",", "x".repeat(100))));
    assert!(got.contains("\"truncated\":true"), "{got}");
    let err = d.stop_err();
    assert!(err.contains("bad framing"), "{err}");
    assert!(
        err.contains("cog=tcp_in#1 in=0 out=205 dropped=0 errors=2"),
        "{err}"
    );
}

#[test]
fn max_connections_closes_the_surplus() {
    let dir = TempDir::new("tcp-max");
    let mut d = Daemon::tcp(&dir, "max_connections = 2\n");
    // One at a time, so that the readiness probe of Daemon::tcp is surely gone.
    let mut a = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    a.write_all(b"from a\n").unwrap();
    d.wait_lines(1);
    let mut b = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    b.write_all(b"from b\n").unwrap();
    d.wait_lines(2);
    let mut c = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 1];
    assert!(
        matches!(c.read(&mut buf), Ok(0) | Err(_)),
        "surplus connection kept"
    );
    a.write_all(b"a again\n").unwrap();
    d.wait_lines(3);
    drop((a, b));
    let err = d.stop_err();
    assert!(err.contains("max_connections reached"), "{err}");
    // The readiness probe of Daemon::tcp may count as a refusal too, if it raced.
    assert!(
        err.contains("cog=tcp_in#1 in=0 out=3 dropped=0 errors="),
        "{err}"
    );
}
