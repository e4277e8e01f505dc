//! `tcp_out` and `unix_out` count a record delivered only once the peer acknowledged its
//! bytes: what sits in the sender's socket when the collector goes away is sent again.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use super::stream_out::{
    Daemon, FAST_RETRY, PATIENCE, accept, accept_unix, config, file_in, listener, numbered,
};
use crate::engine::TempDir;

/// Bytes of each line of `numbered`.
const LINE: usize = 33;

/// Lines forwarded by the tests below: `DEADBEAT_PEER_ACK_LINES`, default 200,000 (6.6 MB:
/// more than the kernels of both ends hold, so the sender's own socket is full when the
/// collector goes away).
fn lines() -> usize {
    match std::env::var("DEADBEAT_PEER_ACK_LINES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("DEADBEAT_PEER_ACK_LINES={v:?}: not a number")),
        Err(_) => 200_000,
    }
}

fn set_rcvbuf(fd: impl AsFd, bytes: libc::c_int) {
    // SAFETY: the option value is a c_int of the given size, on a descriptor we own.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF: {}", io::Error::last_os_error());
}

/// Bytes received by the kernel on `fd` that the application has not read (`FIONREAD`).
fn unread(fd: impl AsFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", io::Error::last_os_error());
    n as usize
}

/// Waits until nothing more arrives on `fd` (which is not read): the receiver's window is
/// full and the sender's data waits in the sender's socket. Returns the unread bytes.
fn wait_stalled(fd: impl AsFd) -> usize {
    let deadline = Instant::now() + PATIENCE;
    let mut last = unread(&fd);
    let mut stable = 0;
    while stable < 5 {
        assert!(Instant::now() < deadline, "the stream never stalled");
        std::thread::sleep(Duration::from_millis(50));
        let now = unread(&fd);
        stable = if now == last && now > 0 {
            stable + 1
        } else {
            0
        };
        last = now;
    }
    last
}

/// The first line number of `text`, a run of `numbered` lines.
fn first_number(text: &str) -> usize {
    text.get(5..12)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a numbered line: {:?}", text.get(..40)))
}

/// The collector reads part of the stream, stops reading until the sender's socket is
/// full, then closes with unread data (the kernel answers with a reset, which also
/// discards the sender's send queue). The second connection must bring every record the
/// first one's kernel did not acknowledge: the only records allowed to be missing are
/// those that the first collector's kernel held unread when it closed (a crash of the
/// collector; the test makes that window small with a 4 KiB receive buffer), and
/// duplicates are allowed.
#[test]
fn tcp_out_resends_what_the_peer_did_not_acknowledge() {
    const READ_FIRST: usize = 100_000;
    let n = lines();
    let dir = TempDir::new("tcp-out-peer-ack");
    let (l, port) = listener();
    set_rcvbuf(&l, 4096);
    let cfg = config(
        dir.path(),
        &file_in(dir.path(), &numbered(0, n)),
        &format!("type = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\n{FAST_RETRY}"),
    );
    let mut d = Daemon::start(&cfg, false);
    let mut s1 = accept(&l);
    let mut first = vec![0u8; READ_FIRST];
    s1.read_exact(&mut first).unwrap();
    let held = wait_stalled(&s1);
    // Unread data: close() resets the connection.
    drop(s1);
    d.wait_log("connection lost");
    let mut s2 = accept(&l);
    let mut rest = String::new();
    s2.read_to_string(&mut rest).unwrap();
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    let k = first_number(&rest);
    assert!(
        rest == numbered(k, n),
        "the second connection is not the run of lines {k}..{n}"
    );
    let acked_by_collector = READ_FIRST + held;
    let dups = (READ_FIRST / LINE).saturating_sub(k);
    let collector_lost = k.saturating_sub(READ_FIRST / LINE);
    eprintln!(
        "collector read {READ_FIRST} B and held {held} B unread when it reset; resent from \
         line {k}: {dups} duplicates, {collector_lost} lines lost in the collector's kernel"
    );
    assert!(
        k * LINE <= acked_by_collector,
        "lines {}..{k} lost: the collector's kernel acknowledged only up to line {}",
        acked_by_collector / LINE,
        acked_by_collector / LINE
    );
}

/// The same over a Unix stream socket, where the bytes the sender sees outstanding
/// (`SIOCOUTQ`) are those the peer has not read yet: nothing may be lost at all.
#[test]
fn unix_out_resends_what_the_peer_did_not_read() {
    const READ_FIRST: usize = 100_000;
    let n = lines();
    let dir = TempDir::new("unix-out-peer-ack");
    let sock = dir.path().join("collector.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let cfg = config(
        dir.path(),
        &file_in(dir.path(), &numbered(0, n)),
        &format!("type = \"unix_out\"\npath = {sock:?}\n{FAST_RETRY}"),
    );
    let mut d = Daemon::start(&cfg, false);
    let mut s1 = accept_unix(&l);
    let mut first = vec![0u8; READ_FIRST];
    s1.read_exact(&mut first).unwrap();
    let held = wait_stalled(&s1);
    drop(s1);
    d.wait_log("connection lost");
    let mut s2 = accept_unix(&l);
    let mut rest = String::new();
    s2.read_to_string(&mut rest).unwrap();
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    let k = first_number(&rest);
    assert!(
        rest == numbered(k, n),
        "the second connection is not the run of lines {k}..{n}"
    );
    eprintln!(
        "collector read {READ_FIRST} B and closed with {held} B unread; resent from line {k}: \
         {} duplicates",
        (READ_FIRST / LINE).saturating_sub(k)
    );
    assert!(
        k * LINE <= READ_FIRST,
        "lines {}..{k} lost: they were never read by the collector",
        READ_FIRST / LINE
    );
}

/// A graceful stop waits until the peer acknowledged every record, not only until its own
/// kernel took them.
#[test]
fn tcp_out_stop_waits_for_the_peer_to_acknowledge() {
    let dir = TempDir::new("tcp-out-stop-ack");
    let (l, port) = listener();
    set_rcvbuf(&l, 4096);
    let cfg = config(
        dir.path(),
        "type = \"stdin\"",
        &format!("type = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\n{FAST_RETRY}"),
    );
    let mut d = Daemon::start(&cfg, true);
    let mut s = accept(&l);
    // More than the collector's window, much less than the sender's send buffer.
    let input = numbered(0, 1000);
    d.write_stdin(&input);
    wait_stalled(&s);
    d.close_stdin();
    // The supply is exhausted and the drain finishes: it must wait for the collector.
    let until = Instant::now() + Duration::from_millis(1000);
    while Instant::now() < until {
        assert!(
            d.running(),
            "stopped while the collector had not acknowledged everything; log:\n{}",
            d.seen.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    assert!(got == input, "lost, reordered or repeated");
}

/// A stalled collector (it takes a connection and reads nothing) at a stop of tcp_out
/// without a disk buffer: the drain waits drain_timeout, then says at error level how
/// many records the collector did not acknowledge (all but those its kernel took), and
/// the daemon exits 0, as for a disk buffer's records lost at a stop (the bound was the
/// user's: a stop that runs out of stop_timeout exits 1, see below).
#[test]
fn tcp_out_says_what_a_stalled_peer_did_not_acknowledge_at_drain_timeout() {
    let (ok, log, n, held) = stalled_stop("tcp-out-stalled-drain", "drain_timeout = \"500ms\"", "");
    assert!(ok, "exit status not 0:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("drain_timeout expired at shutdown"))
        .unwrap_or_else(|| panic!("no loss reported:\n{log}"));
    assert!(line.contains("ERRO"), "not at error level: {line}");
    assert!(
        line.contains("lost unless their supply reads them again"),
        "{line}"
    );
    assert_unsent(line, n, held);
    assert!(
        !log.contains("stopped before the peer acknowledged"),
        "reported twice:\n{log}"
    );
}

/// The same when `stop_timeout` ends the stop first: the drain still says what it held
/// (at its `done`), and the daemon exits 1.
#[test]
fn tcp_out_says_what_a_stalled_peer_did_not_acknowledge_at_stop_timeout() {
    let (ok, log, n, held) = stalled_stop(
        "tcp-out-stalled-stop",
        "drain_timeout = \"60s\"",
        "[engine]\nstop_timeout = \"500ms\"\n",
    );
    assert!(!ok, "exit status 0 after stop_timeout:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("stopped before the peer acknowledged these records"))
        .unwrap_or_else(|| panic!("no loss reported:\n{log}"));
    assert!(line.contains("ERRO"), "not at error level: {line}");
    assert_unsent(line, n, held);
}

/// tcp_out (memory buffer, `keys` added) forwards a file to a collector that takes the
/// connection and reads nothing, with `engine` before the train; the stop begins at the
/// file's end. Returns the exit status, the log, the lines sent and the bytes the
/// collector's kernel took.
fn stalled_stop(tag: &str, keys: &str, engine: &str) -> (bool, String, usize, usize) {
    let n = 20_000;
    let dir = TempDir::new(tag);
    let (l, port) = listener();
    set_rcvbuf(&l, 4096);
    let cfg = config(
        dir.path(),
        &file_in(dir.path(), &numbered(0, n)),
        &format!("type = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\n{keys}\n{FAST_RETRY}"),
    );
    if !engine.is_empty() {
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, format!("{engine}{text}")).unwrap();
    }
    let d = Daemon::start(&cfg, false);
    let s = accept(&l);
    let held = wait_stalled(&s);
    let (ok, log) = d.wait();
    (ok, log, n, held)
}

/// `line` counts as unsent every line the collector's kernel did not take (`held` bytes).
fn assert_unsent(line: &str, n: usize, held: usize) {
    let unsent: usize = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("unsent_records="))
        .and_then(|v| v.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no count: {line}"));
    let expected = n - held / LINE;
    assert!(
        unsent.abs_diff(expected) <= 1,
        "unsent_records={unsent}, the collector's kernel took {held} B: {expected} expected"
    );
}
