//! RELP end to end on 127.0.0.1: deadbeat `relp_out` → deadbeat `relp_in` with kills and
//! stops of either side, and both directions against rsyslog (`omrelp`, `imrelp`).
//!
//! Sizes: `DEADBEAT_RELP_LINES` (deadbeat to deadbeat) and `DEADBEAT_RELP_RSYSLOG_LINES`
//! (against rsyslog), 100,000 each unless set.

use crate::support::{free_port, line_count, wait_until};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");
/// Longest any condition is waited for; 100,000 lines take a second or two.
const PATIENCE: Duration = Duration::from_secs(90);
/// The window both sides use in these tests: duplicates per interruption stay below it.
const WINDOW: usize = 128;
/// rsyslog's `omrelp` window here: with its default (128) librelp waits about 200 ms per
/// two windows, 1,200 messages a second.
const RSYSLOG_WINDOW: usize = 1024;
const TAIL: &str = " the quick brown fox";

fn size(var: &str) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn line(buf: &mut String, i: usize) {
    let _ = writeln!(buf, "line {i:07}{TAIL}");
}

fn numbered(n: usize) -> String {
    let mut s = String::with_capacity(n * 30);
    for i in 0..n {
        line(&mut s, i);
    }
    s
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_until(what, PATIENCE, cond);
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to a child this test started.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

/// Waits for `child` to exit (killing it and failing after PATIENCE).
fn reap(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A deadbeat process whose log goes to a file (read when a check fails).
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, name: &str, config: &str) -> Daemon {
        let conf = dir.join(format!("{name}.toml"));
        std::fs::write(&conf, config).unwrap();
        let log = dir.join(format!("{name}.err"));
        let err = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(BIN)
            .args(["run", conf.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit.
    fn stop(mut self) -> String {
        signal(&self.child, libc::SIGTERM);
        let st = reap(&mut self.child, "deadbeat");
        let log = self.log();
        assert!(st.success(), "deadbeat failed to stop: {st}\n{log}");
        log
    }

    fn kill9(mut self) {
        signal(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sender_config(dir: &Path, port: u16) -> String {
    format!(
        "[state]\ndir = {state:?}\n\
         [[train]]\nname = \"tx\"\n\
         [[train.cog]]\ntype = \"tail\"\npaths = [{input:?}]\nstart_at = \"beginning\"\n\
         [[train.cog]]\ntype = \"relp_out\"\naddress = \"127.0.0.1:{port}\"\n\
         window_size = {WINDOW}\nreconnect_initial = \"50ms\"\nreconnect_max = \"500ms\"\n",
        state = dir.join("state-tx").to_str().unwrap(),
        input = dir.join("in.log").to_str().unwrap(),
    )
}

/// `file_in` of the first `lines` numbered lines → `relp_out` to `port` with `keys`.
fn file_sender(dir: &Path, lines: usize, port: u16, keys: &str) -> Daemon {
    let input = dir.join("in.log");
    std::fs::write(&input, numbered(lines)).unwrap();
    Daemon::start(
        dir,
        "tx",
        &format!(
            "[[train]]\nname = \"tx\"\n\
             [[train.cog]]\ntype = \"file_in\"\npaths = [{input:?}]\n\
             [[train.cog]]\ntype = \"relp_out\"\naddress = \"127.0.0.1:{port}\"\n{keys}\n"
        ),
    )
}

fn receiver_config(dir: &Path, port: u16) -> String {
    format!(
        "[[train]]\nname = \"rx\"\n\
         [[train.cog]]\ntype = \"relp_in\"\nlisten = \"127.0.0.1:{port}\"\nwindow_size = {WINDOW}\n\
         [[train.cog]]\ntype = \"file_out\"\npath = {out:?}\n",
        out = dir.join("out.log").to_str().unwrap(),
    )
}

/// What arrived of lines `0..n`.
#[derive(Debug)]
struct Arrival {
    duplicates: usize,
    /// First arrivals out of order.
    reordered: usize,
}

/// Checks that every line `0..n` is in `out` (and nothing else); counts duplicates and
/// first arrivals out of order.
fn arrival(out: &Path, n: usize) -> Arrival {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut seen = vec![false; n];
    let (mut duplicates, mut reordered, mut next) = (0, 0, 0);
    for l in text.lines() {
        let id = l
            .strip_prefix("line ")
            .and_then(|r| r.strip_suffix(TAIL))
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|&i| i < n)
            .unwrap_or_else(|| panic!("unexpected line {l:?} in {}", out.display()));
        if seen[id] {
            duplicates += 1;
            continue;
        }
        seen[id] = true;
        if id != next {
            reordered += 1;
        }
        next = id + 1;
    }
    let missing: Vec<usize> = (0..n).filter(|&i| !seen[i]).collect();
    assert!(
        missing.is_empty(),
        "{} lines lost, the first ones: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    Arrival {
        duplicates,
        reordered,
    }
}

/// Counts distinct lines of `out` (cheaply enough to poll).
fn distinct(out: &Path, n: usize) -> usize {
    let text = std::fs::read(out).unwrap_or_default();
    let mut seen = vec![false; n];
    let mut count = 0;
    for l in text.split(|&c| c == b'\n') {
        let Some(d) = l.get(5..12) else { continue };
        let Some(i) = std::str::from_utf8(d)
            .ok()
            .and_then(|d| d.parse::<usize>().ok())
        else {
            continue;
        };
        if i < n && !std::mem::replace(&mut seen[i], true) {
            count += 1;
        }
    }
    count
}

/// How a run is interrupted once a third of the lines arrived.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    KillReceiver,
    StopReceiver,
    StopSender,
    KillSender,
}

/// `tail` → `relp_out` → `relp_in` → `file_out` over `n` lines, with `fault` at a third.
fn deadbeat_to_deadbeat(fault: Fault) -> Arrival {
    let n = size("DEADBEAT_RELP_LINES");
    let dir = TempDir::new(&format!("relp-{fault:?}"));
    std::fs::write(dir.path().join("in.log"), numbered(n)).unwrap();
    let out = dir.path().join("out.log");
    let port = free_port();
    let rx_conf = receiver_config(dir.path(), port);
    let tx_conf = sender_config(dir.path(), port);
    let mut rx = Daemon::start(dir.path(), "rx", &rx_conf);
    let mut tx = Daemon::start(dir.path(), "tx", &tx_conf);
    if !matches!(fault, Fault::None) {
        wait_for("a third of the lines", || line_count(&out) >= n / 3);
        match fault {
            Fault::KillReceiver => {
                rx.kill9();
                rx = Daemon::start(dir.path(), "rx", &rx_conf);
            }
            Fault::StopReceiver => {
                rx.stop();
                rx = Daemon::start(dir.path(), "rx", &rx_conf);
            }
            Fault::StopSender => {
                tx.stop();
                tx = Daemon::start(dir.path(), "tx", &tx_conf);
            }
            Fault::KillSender => {
                tx.kill9();
                tx = Daemon::start(dir.path(), "tx", &tx_conf);
            }
            Fault::None => {}
        }
    }
    let deadline = Instant::now() + PATIENCE;
    while distinct(&out, n) < n {
        if Instant::now() > deadline {
            panic!(
                "{} of {n} lines arrived\nsender:\n{}\nreceiver:\n{}",
                distinct(&out, n),
                tx.log(),
                rx.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let tx_log = tx.stop();
    let rx_log = rx.stop();
    let a = arrival(&out, n);
    eprintln!("relp {fault:?}: {n} lines, {a:?}");
    assert!(!tx_log.contains("ERROR"), "{tx_log}");
    if matches!(fault, Fault::None) {
        let counters = format!("cog=relp_in#1 in=0 out={n} dropped=0 errors=0");
        assert!(rx_log.contains(&counters), "{rx_log}");
    }
    assert_eq!(a.reordered, 0, "lines arrived out of order");
    a
}

#[test]
fn relp_deadbeat_to_deadbeat_all_in_order() {
    let a = deadbeat_to_deadbeat(Fault::None);
    assert_eq!(a.duplicates, 0);
}

#[test]
fn relp_receiver_killed_loses_nothing() {
    let a = deadbeat_to_deadbeat(Fault::KillReceiver);
    assert!(a.duplicates <= WINDOW, "{a:?}: more than the window");
}

#[test]
fn relp_receiver_stopped_loses_nothing() {
    // A stopping relp_in answers what its drains wrote before `serverclose`, and relp_out
    // takes those answers before it sees the goodbye: nothing arrives twice.
    let a = deadbeat_to_deadbeat(Fault::StopReceiver);
    assert_eq!(a.duplicates, 0, "{a:?}");
}

#[test]
fn relp_sender_stopped_loses_nothing() {
    // The stopping relp_out lingers until everything sent is answered, and the tail's
    // checkpoint then covers it all: nothing arrives twice.
    let a = deadbeat_to_deadbeat(Fault::StopSender);
    assert_eq!(a.duplicates, 0, "{a:?}");
}

/// A crashed sender resends from its supply's checkpoint (saved about every second), so
/// its duplicates are bounded by that, not by the window.
#[test]
fn relp_sender_killed_loses_nothing() {
    deadbeat_to_deadbeat(Fault::KillSender);
}

/// Bad frames close the connection with a counted error; the server serves on.
#[test]
fn relp_in_closes_on_bad_frames_and_serves_on() {
    let dir = TempDir::new("relp-bad");
    let port = free_port();
    let out = dir.path().join("out.log");
    let rx = Daemon::start(dir.path(), "rx", &receiver_config(dir.path(), port));
    let connect = || relp_connect(port);
    let open = "1 open 30 relp_version=0\ncommands=syslog\n";
    for bad in [
        "x syslog 3 abc\n",
        "2 syslog 999999999 ",
        "2 syslog 3 abcd\n",
        "2 sys!og 3 abc\n",
        "2 bogus 0\n",
    ] {
        let mut s = connect();
        s.write_all(format!("{open}{bad}").as_bytes()).unwrap();
        let mut got = Vec::new();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        // The server answers the open, then closes: read to the end.
        let _ = std::io::Read::read_to_end(&mut s, &mut got);
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("1 rsp "), "{bad:?}: {got:?}");
    }
    // A well-behaved client is still served, answered only once its line is written.
    let mut s = connect();
    s.write_all(format!("{open}2 syslog 5 hello\n3 close 0\n").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = std::io::Read::read_to_end(&mut s, &mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("2 rsp 6 200 OK\n3 rsp 0\n"), "{got:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello\n");
    let log = rx.stop();
    assert!(log.contains("errors=5"), "{log}");
}

// ---- rsyslog ----

/// Starts rsyslogd in the foreground on `conf`, in `work`; `None` (test skipped) when
/// rsyslogd or a module the config loads is missing.
fn rsyslogd(work: &Path, conf: &str) -> Option<Child> {
    std::fs::create_dir_all(work).unwrap();
    let path = work.join("rsyslog.conf");
    std::fs::write(&path, format!("global(workDirectory={work:?})\n{conf}")).unwrap();
    let check = Command::new("rsyslogd")
        .args(["-N1", "-f", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match check {
        Ok(st) if st.success() => {}
        Ok(_) => {
            eprintln!("skipped: rsyslogd refuses the config (rsyslog-relp not installed?)");
            return None;
        }
        Err(_) => {
            eprintln!("skipped: rsyslogd is not installed");
            return None;
        }
    }
    let err = File::options()
        .create(true)
        .append(true)
        .open(work.join("rsyslogd.err"))
        .unwrap();
    Some(
        Command::new("rsyslogd")
            .args(["-n", "-f", path.to_str().unwrap(), "-i"])
            .arg(work.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap(),
    )
}

/// Kills (and reaps) a child on drop.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `out` holds all `n` lines; a failure shows the logs of the rsyslogd working
/// in `work` and of `deadbeat`.
fn wait_all_arrived(out: &Path, n: usize, work: &Path, deadbeat: &Daemon) {
    let deadline = Instant::now() + PATIENCE;
    while distinct(out, n) < n {
        let rs_err = std::fs::read_to_string(work.join("rsyslogd.err")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "{} of {n} arrived\nrsyslogd:\n{rs_err}\ndeadbeat:\n{}",
            distinct(out, n),
            deadbeat.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop_rsyslogd(r: &mut Reaper) {
    signal(&r.0, libc::SIGTERM);
    reap(&mut r.0, "rsyslogd");
}

/// rsyslog `omrelp` → deadbeat `relp_in` → `file_out`; deadbeat is killed and restarted
/// after a third. rsyslog keeps unanswered messages and sends them again (it retries its
/// whole batch: the duplicates seen are 0 or 128).
#[test]
fn relp_rsyslog_omrelp_into_relp_in() {
    let n = size("DEADBEAT_RELP_RSYSLOG_LINES");
    let dir = TempDir::new("relp-omrelp");
    let tcp = free_port();
    let relp = free_port();
    let conf = format!(
        "main_queue(queue.workerThreads=\"1\")\n\
         module(load=\"imtcp\")\nmodule(load=\"omrelp\")\n\
         input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp}\")\n\
         template(name=\"raw\" type=\"string\" string=\"%rawmsg%\")\n\
         action(type=\"omrelp\" target=\"127.0.0.1\" port=\"{relp}\" template=\"raw\" \
         windowSize=\"{RSYSLOG_WINDOW}\" action.resumeRetryCount=\"-1\" action.resumeInterval=\"1\")\n"
    );
    let rx_conf = receiver_config(dir.path(), relp);
    let out = dir.path().join("out.log");
    let rx = Daemon::start(dir.path(), "rx", &rx_conf);
    let Some(rs) = rsyslogd(&dir.path().join("rs"), &conf) else {
        return;
    };
    let _rs = Reaper(rs);
    let deadline = Instant::now() + PATIENCE;
    let mut client = loop {
        match TcpStream::connect(("127.0.0.1", tcp)) {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "rsyslog never listened: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = numbered(n);
    let feeder = std::thread::spawn(move || {
        client.write_all(text.as_bytes()).unwrap();
        // rsyslog's imtcp may drop what it has not read when the client closes at once.
        std::thread::sleep(PATIENCE);
    });
    wait_for("a third of the messages", || line_count(&out) >= n / 3);
    rx.kill9();
    let rx = Daemon::start(dir.path(), "rx", &rx_conf);
    wait_all_arrived(&out, n, &dir.path().join("rs"), &rx);
    let log = rx.stop();
    let a = arrival(&out, n);
    eprintln!("rsyslog omrelp -> relp_in, deadbeat killed once: {n} messages, {a:?}");
    assert!(a.duplicates <= RSYSLOG_WINDOW, "{a:?}");
    // One main-queue worker keeps rsyslog's own order (two, its default, interleave
    // batches); relp_in keeps the order it receives.
    assert_eq!(a.reordered, 0, "{a:?}");
    assert!(log.contains("errors=0"), "{log}");
    drop(feeder);
}

/// deadbeat `relp_out` → rsyslog `imrelp` → `omfile`; rsyslog is stopped and started again
/// after a third. deadbeat resends what rsyslog had not answered.
#[test]
fn relp_relp_out_into_rsyslog_imrelp() {
    let n = size("DEADBEAT_RELP_RSYSLOG_LINES");
    let dir = TempDir::new("relp-imrelp");
    let port = free_port();
    let out = dir.path().join("out.log");
    let conf = format!(
        "module(load=\"imrelp\")\n\
         input(type=\"imrelp\" address=\"127.0.0.1\" port=\"{port}\")\n\
         template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
         action(type=\"omfile\" file={out:?} template=\"raw\")\n"
    );
    let work = dir.path().join("rs");
    let Some(rs) = rsyslogd(&work, &conf) else {
        return;
    };
    let mut rs = Reaper(rs);
    std::fs::write(dir.path().join("in.log"), numbered(n)).unwrap();
    let tx = Daemon::start(dir.path(), "tx", &sender_config(dir.path(), port));
    wait_for("a third of the messages", || line_count(&out) >= n / 3);
    stop_rsyslogd(&mut rs);
    let Some(again) = rsyslogd(&work, &conf) else {
        panic!("rsyslogd does not start again");
    };
    let _rs = Reaper(again);
    wait_all_arrived(&out, n, &work, &tx);
    let log = tx.stop();
    let a = arrival(&out, n);
    eprintln!("relp_out -> rsyslog imrelp, rsyslog restarted once: {n} messages, {a:?}");
    assert!(a.duplicates <= WINDOW, "{a:?}");
    assert_eq!(a.reordered, 0, "{a:?}");
    assert!(!log.contains("ERROR"), "{log}");
}

// ---- protocol details against a hand-driven peer ----

/// Accepts one connection, failing after PATIENCE rather than blocking for ever.
fn accept(l: &TcpListener) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection came");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A blocking RELP peer over one connection, for tests.
struct Peer {
    sock: TcpStream,
    reader: deadbeat::cogs::net::relp::FrameReader,
}

impl Peer {
    fn new(sock: TcpStream) -> Peer {
        Peer {
            sock,
            reader: deadbeat::cogs::net::relp::FrameReader::new(1 << 20),
        }
    }

    /// The next frame as (txnr, command, data); `None` if none came within `wait` (or the
    /// connection ended).
    fn frame(&mut self, wait: Duration) -> Option<(u32, String, String)> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(f) = self.reader.next_frame().expect("a valid frame") {
                return Some((
                    f.txnr,
                    String::from_utf8_lossy(f.command).into_owned(),
                    String::from_utf8_lossy(f.data).into_owned(),
                ));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.reader.read_from(&mut self.sock) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading the peer: {e}"),
            }
        }
    }

    fn expect(&mut self, command: &str) -> (u32, String) {
        match self.frame(PATIENCE) {
            Some((t, c, d)) if c == command => (t, d),
            other => panic!("expected {command}, got {other:?}"),
        }
    }

    fn send(&mut self, txnr: u32, command: &str, data: &str) {
        let mut b = Vec::new();
        deadbeat::cogs::net::relp::write_frame(&mut b, txnr, command, data.as_bytes());
        self.sock.write_all(&b).unwrap();
    }
}

/// relp_out keeps `window_size` commands unanswered, acknowledges on answers, and after a
/// lost connection opens a new session and sends the unanswered records again, in order,
/// with new transaction numbers; at the end it closes the session politely.
#[test]
fn relp_out_keeps_its_window_and_resends_after_a_reconnection() {
    let dir = TempDir::new("relp-out-window");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tx = file_sender(
        dir.path(),
        30,
        port,
        "window_size = 10\nreconnect_initial = \"50ms\"\nreconnect_max = \"200ms\"",
    );
    let name = |i: usize| format!("line {i:07}{TAIL}");
    let open_ok = "200 OK\nrelp_version=0\ncommands=syslog";

    let mut p = Peer::new(accept(&listener));
    let (t, offers) = p.expect("open");
    assert_eq!(t, 1);
    assert!(offers.contains("commands=syslog"), "{offers}");
    p.send(1, "rsp", open_ok);
    let mut sent = Vec::new();
    for i in 0..10 {
        let (t, data) = p.expect("syslog");
        assert_eq!((t, data), (2 + i as u32, name(i)));
        sent.push(t);
    }
    assert_eq!(
        p.frame(Duration::from_millis(300)),
        None,
        "more than the window was sent"
    );
    for t in &sent[..5] {
        p.send(*t, "rsp", "200 OK");
    }
    for i in 10..15 {
        let (t, data) = p.expect("syslog");
        assert_eq!((t, data), (2 + i as u32, name(i)));
    }
    // Lines 5..15 are unanswered when the connection goes.
    drop(p);

    let mut p = Peer::new(accept(&listener));
    assert_eq!(p.expect("open").0, 1);
    p.send(1, "rsp", open_ok);
    for i in 5..30 {
        let (t, data) = p.expect("syslog");
        assert_eq!((t, data), (2 + (i - 5) as u32, name(i)), "resent in order");
        p.send(t, "rsp", "200 OK");
    }
    let (t, _) = p.expect("close");
    p.send(t, "rsp", "");
    let mut tx = tx;
    let st = reap(&mut tx.child, "the sender");
    let log = tx.log();
    assert!(st.success(), "{log}");
    assert!(log.contains("resent=10"), "{log}");
}

/// relp_in answers a message only once the train's drain acknowledged it: here a tcp_out
/// whose collector is down at first.
#[test]
fn relp_in_answers_only_once_the_drain_acknowledged() {
    let dir = TempDir::new("relp-in-ack");
    let port = free_port();
    let collector = free_port();
    let rx = Daemon::start(
        dir.path(),
        "rx",
        &format!(
            "[[train]]\nname = \"rx\"\n\
             [[train.cog]]\ntype = \"relp_in\"\nlisten = \"127.0.0.1:{port}\"\n\
             [[train.cog]]\ntype = \"tcp_out\"\naddress = \"127.0.0.1:{collector}\"\n\
             reconnect_initial = \"50ms\"\nreconnect_max = \"100ms\"\n"
        ),
    );
    let mut p = Peer::new(relp_connect(port));
    p.send(1, "open", "relp_version=0\ncommands=syslog");
    let (t, offers) = p.expect("rsp");
    assert_eq!(t, 1);
    assert!(offers.starts_with("200 OK\n"), "{offers}");
    assert!(offers.contains("commands=syslog"), "{offers}");
    p.send(2, "syslog", "hello");
    assert_eq!(
        p.frame(Duration::from_millis(300)),
        None,
        "answered before the drain acknowledged"
    );
    let l = TcpListener::bind(("127.0.0.1", collector)).unwrap();
    let mut c = accept(&l);
    let mut got = [0u8; 6];
    std::io::Read::read_exact(&mut c, &mut got).unwrap();
    assert_eq!(&got, b"hello\n");
    assert_eq!(p.expect("rsp"), (2, "200 OK".to_string()));
    p.send(3, "close", "");
    assert_eq!(p.expect("rsp"), (3, String::new()));
    assert_eq!(p.frame(Duration::from_secs(5)), None, "closed after close");
    rx.stop();
}

/// The relp_in counters line of the latest SIGUSR1 report in `log`, if any.
fn last_relp_in_counters(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|l| l.contains(" counters ") && l.contains("cog=relp_in#1"))
        .map(str::to_string)
}

/// relp_in hands down at most `window_size` unanswered messages per connection: the rest
/// wait in the socket until answers go out, and then all are answered in order.
#[test]
fn relp_in_keeps_a_connection_within_its_window() {
    let dir = TempDir::new("relp-in-window");
    let port = free_port();
    let collector = free_port();
    let rx = Daemon::start(
        dir.path(),
        "rx",
        &format!(
            "[[train]]\nname = \"rx\"\n\
             [[train.cog]]\ntype = \"relp_in\"\nlisten = \"127.0.0.1:{port}\"\nwindow_size = 3\n\
             [[train.cog]]\ntype = \"tcp_out\"\naddress = \"127.0.0.1:{collector}\"\n\
             reconnect_initial = \"50ms\"\nreconnect_max = \"100ms\"\n"
        ),
    );
    let mut p = Peer::new(relp_connect(port));
    p.send(1, "open", "relp_version=0\ncommands=syslog");
    assert_eq!(p.expect("rsp").0, 1);
    for i in 0..10 {
        p.send(2 + i, "syslog", &format!("m{i}"));
    }
    // The collector is down, so nothing is acknowledged: three messages went down the
    // train, and no more after a while.
    wait_for("three messages handed down", || {
        signal(&rx.child, libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(20));
        last_relp_in_counters(&rx.log()).is_some_and(|l| l.contains(" out=3 "))
    });
    std::thread::sleep(Duration::from_millis(200));
    let reports = rx.log().matches("cog=relp_in#1").count();
    signal(&rx.child, libc::SIGUSR1);
    wait_for("a fresh counters line", || {
        rx.log().matches("cog=relp_in#1").count() > reports
    });
    let l = last_relp_in_counters(&rx.log()).unwrap();
    assert!(l.contains(" out=3 "), "{l}");
    let listener = TcpListener::bind(("127.0.0.1", collector)).unwrap();
    let mut c = accept(&listener);
    let mut got = Vec::new();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    while got.iter().filter(|&&b| b == b'\n').count() < 10 {
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut c, &mut buf).unwrap();
        assert!(n > 0, "the collector's connection ended");
        got.extend_from_slice(&buf[..n]);
    }
    let want: String = (0..10).map(|i| format!("m{i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&got), want);
    for i in 0..10 {
        assert_eq!(p.expect("rsp"), (2 + i, "200 OK".to_string()));
    }
    // A stopping server says goodbye to the clients it still has.
    rx.stop();
    assert_eq!(p.expect("serverclose"), (0, String::new()));
    assert_eq!(
        p.frame(Duration::from_secs(5)),
        None,
        "closed after serverclose"
    );
}

/// A peer that accepts but never answers `open` (not a RELP server) is given up after
/// connect_timeout, and the next connection carries the records.
#[test]
fn relp_out_gives_up_a_session_never_opened() {
    let dir = TempDir::new("relp-out-open");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut tx = file_sender(
        dir.path(),
        3,
        port,
        "connect_timeout = \"200ms\"\nreconnect_initial = \"50ms\"",
    );
    let mut silent = Peer::new(accept(&listener));
    silent.expect("open");
    let mut p = Peer::new(accept(&listener));
    p.expect("open");
    p.send(1, "rsp", "200 OK\nrelp_version=0\ncommands=syslog");
    for i in 0..3 {
        let (t, data) = p.expect("syslog");
        assert_eq!(data, format!("line {i:07}{TAIL}"));
        p.send(t, "rsp", "200 OK");
    }
    let (t, _) = p.expect("close");
    p.send(t, "rsp", "");
    assert!(reap(&mut tx.child, "the sender").success(), "{}", tx.log());
    assert!(
        tx.log()
            .contains("no answer to open within connect_timeout"),
        "{}",
        tx.log()
    );
}

/// A server that answers `open` and then nothing is given up after rsp_timeout, and the
/// unanswered record goes out again on the next session.
#[test]
fn relp_out_gives_up_a_silent_server_after_rsp_timeout() {
    let dir = TempDir::new("relp-out-rsp");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut tx = file_sender(
        dir.path(),
        1,
        port,
        "rsp_timeout = \"300ms\"\nreconnect_initial = \"50ms\"",
    );
    let open_ok = "200 OK\nrelp_version=0\ncommands=syslog";
    let mut silent = Peer::new(accept(&listener));
    silent.expect("open");
    silent.send(1, "rsp", open_ok);
    let (_, first) = silent.expect("syslog");
    let mut p = Peer::new(accept(&listener));
    p.expect("open");
    p.send(1, "rsp", open_ok);
    let (t, again) = p.expect("syslog");
    assert_eq!((t, &again), (2, &first));
    p.send(t, "rsp", "200 OK");
    let (t, _) = p.expect("close");
    p.send(t, "rsp", "");
    assert!(reap(&mut tx.child, "the sender").success(), "{}", tx.log());
    assert!(
        tx.log().contains("no answer within rsp_timeout"),
        "{}",
        tx.log()
    );
}

/// Connections over max_connections are closed at once and counted; the others go on.
#[test]
fn relp_in_refuses_connections_over_max_connections() {
    let dir = TempDir::new("relp-in-max");
    let port = free_port();
    let rx = Daemon::start(
        dir.path(),
        "rx",
        &format!(
            "[[train]]\nname = \"rx\"\n\
             [[train.cog]]\ntype = \"relp_in\"\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 1\n\
             [[train.cog]]\ntype = \"file_out\"\npath = {:?}\n",
            dir.path().join("out.log").to_str().unwrap()
        ),
    );
    let connect = || relp_connect(port);
    let mut first = Peer::new(connect());
    first.send(1, "open", "relp_version=0\ncommands=syslog");
    assert_eq!(first.expect("rsp").0, 1);
    let mut second = Peer::new(connect());
    assert_eq!(
        second.frame(PATIENCE),
        None,
        "the second connection is closed"
    );
    first.send(2, "syslog", "still served");
    assert_eq!(first.expect("rsp"), (2, "200 OK".to_string()));
    let log = rx.stop();
    assert!(log.contains("connection limit reached"), "{log}");
    assert!(
        log.contains("cog=relp_in#1 in=0 out=1 dropped=0 errors=1"),
        "{log}"
    );
}

/// Several relp_out clients into one relp_in: every line arrives once, each client's in
/// its order (answers follow each connection's own acknowledgements).
#[test]
fn relp_in_serves_several_clients_each_in_order() {
    const CLIENTS: usize = 4;
    let n = size("DEADBEAT_RELP_LINES") / CLIENTS * CLIENTS;
    let per = n / CLIENTS;
    let dir = TempDir::new("relp-clients");
    let port = free_port();
    let out = dir.path().join("out.log");
    let rx = Daemon::start(dir.path(), "rx", &receiver_config(dir.path(), port));
    let mut senders = Vec::new();
    for k in 0..CLIENTS {
        let input = dir.path().join(format!("in{k}.log"));
        let mut text = String::new();
        for i in k * per..(k + 1) * per {
            line(&mut text, i);
        }
        std::fs::write(&input, text).unwrap();
        senders.push(Daemon::start(
            dir.path(),
            &format!("tx{k}"),
            &format!(
                "[[train]]\nname = \"tx\"\n\
                 [[train.cog]]\ntype = \"file_in\"\npaths = [{input:?}]\n\
                 [[train.cog]]\ntype = \"relp_out\"\naddress = \"127.0.0.1:{port}\"\n\
                 reconnect_initial = \"50ms\"\n"
            ),
        ));
    }
    for mut tx in senders {
        let st = reap(&mut tx.child, "a sender");
        assert!(st.success(), "{}", tx.log());
    }
    rx.stop();
    let text = std::fs::read_to_string(&out).unwrap();
    let mut next = [0; CLIENTS];
    let mut count = 0;
    for l in text.lines() {
        let i: usize = l[5..12].parse().unwrap();
        let k = i / per;
        assert_eq!(i, k * per + next[k], "client {k} out of order or repeated");
        next[k] += 1;
        count += 1;
    }
    assert_eq!(count, n);
}

/// Connects to relp_in on `port`, waiting for it to listen.
fn relp_connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) => assert!(Instant::now() < deadline, "relp_in never listened: {e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Review of issue 14 #2: relp_in refused every new client once `max_connections` idle
/// connections were open. Now the longest-idle one (quiet for over a second, nothing in
/// flight) is closed for a real client, which is served.
#[test]
fn relp_idle_connections_cannot_lock_out_a_client() {
    let dir = TempDir::new("relp-idle");
    let port = free_port();
    let config = receiver_config(dir.path(), port).replace(
        "window_size = ",
        "max_connections = 5\nidle_timeout = \"1h\"\nwindow_size = ",
    );
    let rx = Daemon::start(dir.path(), "rx", &config);
    let idle: Vec<TcpStream> = (0..10).map(|_| relp_connect(port)).collect();
    // Connections active within the last second are never closed for a new one.
    std::thread::sleep(Duration::from_millis(1_200));
    let mut p = Peer::new(relp_connect(port));
    p.send(1, "open", "relp_version=0\ncommands=syslog");
    assert_eq!(p.expect("rsp").0, 1);
    p.send(2, "syslog", "from the client");
    assert_eq!(p.expect("rsp"), (2, "200 OK".to_string()));
    p.send(3, "close", "");
    assert_eq!(p.expect("rsp"), (3, String::new()));
    let log = rx.stop();
    assert!(
        log.contains("closed the longest-idle connection for a new one"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.log")).unwrap(),
        "from the client\n"
    );
    drop(idle);
}

/// Review of issue 14 #2: answers counted as given once queued, so a client that sends
/// but never reads its answers had relp_in read on and queue answers without bound. Now
/// relp_in stops reading it once 64 KiB of answers wait: the client's writes stall and
/// only part of `DEADBEAT_RELP_NOREAD` (default 1,000,000) messages is taken in (the
/// kernels buffer some MiB of answers and messages: the default is well above).
#[test]
fn relp_client_that_never_reads_answers_is_not_read_on() {
    let n: usize = std::env::var("DEADBEAT_RELP_NOREAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = TempDir::new("relp-noread");
    let port = free_port();
    let rx = Daemon::start(dir.path(), "rx", &receiver_config(dir.path(), port));
    let mut s = relp_connect(port);
    // A small receive buffer (set after connect, it disables autotuning): the answers
    // back up in relp_in instead of in this kernel.
    let small: libc::c_int = 4096;
    // SAFETY: setsockopt on our own socket with an int option.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const small).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut b = Vec::new();
    deadbeat::cogs::net::relp::write_frame(&mut b, 1, "open", b"relp_version=0\ncommands=syslog");
    s.write_all(&b).unwrap();
    let mut sent = 0;
    let mut stalled = false;
    while sent < n && !stalled {
        b.clear();
        for i in sent..(sent + 1_000).min(n) {
            let msg = format!("<13>no reader message {i}");
            deadbeat::cogs::net::relp::write_frame(&mut b, i as u32 + 2, "syslog", msg.as_bytes());
        }
        match s.write_all(&b) {
            Ok(()) => sent = (sent + 1_000).min(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                stalled = true
            }
            Err(e) => panic!("writing to relp_in: {e}\n{}", rx.log()),
        }
    }
    // What relp_in took in: the count once it stops growing.
    let out = dir.path().join("out.log");
    let mut taken = line_count(&out);
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(50));
        let now = line_count(&out);
        if now != taken {
            (taken, since) = (now, Instant::now());
        }
    }
    eprintln!("{taken} of {n} messages taken in, writes stalled: {stalled}");
    // The answers of what was taken in fill 64 KiB in relp_in and the kernels' buffers
    // between (a few MiB at most): far fewer than half of the messages.
    assert!(
        stalled && taken < n / 2,
        "relp_in took in {taken} of {n} messages of a client that reads no answer"
    );
    drop(s);
    rx.stop();
}

/// Review of issue 14 #2: relp_in had no idle timeout. A connection silent for
/// `idle_timeout` with nothing in flight is closed, and new clients are served on.
#[test]
fn relp_in_closes_idle_connections() {
    let dir = TempDir::new("relp-idle-timeout");
    let port = free_port();
    let config = receiver_config(dir.path(), port)
        .replace("window_size = ", "idle_timeout = \"300ms\"\nwindow_size = ");
    let rx = Daemon::start(dir.path(), "rx", &config);
    let mut silent = relp_connect(port);
    silent.set_read_timeout(Some(PATIENCE)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert!(
        matches!(std::io::Read::read(&mut silent, &mut buf), Ok(0) | Err(_)),
        "the silent connection was answered"
    );
    assert!(
        started.elapsed() < PATIENCE,
        "the silent connection stayed open"
    );
    let mut p = Peer::new(relp_connect(port));
    p.send(1, "open", "relp_version=0\ncommands=syslog");
    assert_eq!(p.expect("rsp").0, 1);
    p.send(2, "syslog", "still served");
    assert_eq!(p.expect("rsp"), (2, "200 OK".to_string()));
    let log = rx.stop();
    assert!(log.contains("idle connection closed"), "{log}");
}
