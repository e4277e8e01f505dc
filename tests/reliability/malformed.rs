//! Malformed input storms at full speed into parsers: every bad record is counted, kept
//! (`on_error = "keep"`) and written; the daemon runs on and exits 0.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};

use super::*;

const GOOD: usize = 2_000;
const GARBAGE: usize = 300;
const BAD_UTF8: usize = 100;

/// `GOOD` good lines (by `good`) mixed with binary garbage, invalid UTF-8 and one 10 MB
/// line; returns the input, the number of records and of bad ones.
fn storm(good: impl Fn(usize) -> Vec<u8>) -> (Vec<u8>, usize, usize) {
    let mut rng = Rng::new(0x5eed_0fba_d1d5);
    let mut input = Vec::new();
    let mut bad = 0;
    for i in 0..GOOD {
        input.extend(good(i));
        input.push(b'\n');
        if i % (GOOD / GARBAGE) == 0 && bad < GARBAGE {
            // Binary garbage: anything but a newline, never starting like a record.
            let len = 1 + rng.below(300) as usize;
            input.push(0);
            input.extend((0..len).map(|_| match rng.below(256) as u8 {
                b'\n' => 0xff,
                c => c,
            }));
            input.push(b'\n');
            bad += 1;
        }
        if i % (GOOD / BAD_UTF8) == 1 {
            input.extend_from_slice(b"\xff\xfe\xc3( \xe2\x82 \xf0\x28\x8c\xbc invalid utf-8\n");
            bad += 1;
        }
        if i == GOOD / 2 {
            input.extend(std::iter::repeat_n(b'x', 10 << 20));
            input.push(b'\n');
            bad += 1;
        }
    }
    (input, GOOD + bad, bad)
}

/// `stdin → PARSER (on_error keep) → file_out` on a storm; checks every counter.
fn storm_into(tag: &str, parser: &str, cog: &str, good: impl Fn(usize) -> Vec<u8>) {
    let dir = TempDir::new(tag);
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\nmax_line_bytes = \"1MiB\"\n\
             [[train.cog]]\n{parser}\non_error = \"keep\"\n\
             [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n"
        ),
    );
    let (input, records, bad) = storm(good);
    let mut d = Daemon::start(&cfg, Stdio::piped());
    let mut stdin = d.child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    writer.join().unwrap();
    let err = d.exit_ok();
    let out = dir.path().join("out.log");
    assert_eq!(line_count(&out), records, "{err}");
    let r = records as u64;
    // The supply counts the one line cut at max_line_bytes.
    assert_eq!(final_counters(&err, "stdin"), [0, r, 0, 1], "{err}");
    assert_eq!(
        final_counters(&err, cog),
        [r, r, 0, bad as u64],
        "{parser}: {bad} bad of {records}"
    );
    assert_eq!(final_counters(&err, "file_out"), [r, 0, 0, 0], "{err}");
    eprintln!("{cog} storm: {records} records, {bad} errors counted");
}

fn syslog_line(i: usize) -> Vec<u8> {
    format!("<34>Oct 11 22:14:15 host su[{i}]: storm message {i}").into_bytes()
}

#[test]
fn syslog_parse_storm_counts_every_bad_record() {
    storm_into(
        "rel-storm-syslog",
        "type = \"syslog_parse\"\ntarget = \"sl\"",
        "syslog_parse",
        |i| {
            let mut l = syslog_line(i);
            if i % 7 == 0 {
                // Invalid UTF-8 in the MSG part is kept as bytes: not an error.
                l.extend_from_slice(b" \xff\xfe");
            }
            l
        },
    );
}

#[test]
fn json_parse_storm_counts_every_bad_record() {
    storm_into(
        "rel-storm-json",
        "type = \"json_parse\"\ntarget = \"j\"",
        "json_parse",
        |i| format!(r#"{{"n":{i},"s":"storm {{\"wrapped\":{i}}}"}}"#).into_bytes(),
    );
}

#[test]
fn apache_combined_storm_counts_every_bad_record() {
    storm_into(
        "rel-storm-apache",
        "type = \"regex\"\npreset = \"apache_combined\"\ntarget = \"a\"",
        "regex",
        |i| {
            format!(
                "10.0.{}.{} - frank [10/Oct/2000:13:55:36 -0700] \"GET /p/{i} HTTP/1.0\" 200 {i} \
                 \"http://example.com/\" \"Mozilla/4.08\"",
                i / 250,
                i % 250
            )
            .into_bytes()
        },
    );
}

/// Sends `bytes`, closes the sending side and reads until the daemon closes the connection,
/// so everything sent has been handled when this returns.
fn send_all(port: u16, bytes: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
}

fn frame(msg: &[u8]) -> Vec<u8> {
    let mut f = format!("{} ", msg.len()).into_bytes();
    f.extend_from_slice(msg);
    f
}

#[test]
fn truncated_and_lying_octet_counted_frames_are_counted() {
    let dir = TempDir::new("rel-storm-octet");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"tcp_in\"\n\
             listen = \"127.0.0.1:{port}\"\nframing = \"octet_counting\"\n\
             [[train.cog]]\ntype = \"syslog_parse\"\ntarget = \"sl\"\non_error = \"keep\"\n\
             [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n"
        ),
    );
    let d = Daemon::start(&cfg, Stdio::null());
    wait_for("start", || d.stderr().contains("trains started"));
    let good = |from: usize| -> Vec<u8> {
        (from..from + 500)
            .flat_map(|i| frame(&syslog_line(i)))
            .collect()
    };
    // A: a frame longer than what is sent, then the end: emitted partial, a tcp_in error,
    // and a syslog_parse error (the timestamp is cut).
    let mut a = good(0);
    a.extend_from_slice(b"200 <34>Oct 11 22:1");
    send_all(port, &a);
    // B: a bad octet count after good frames: the connection is closed, a tcp_in error.
    let mut b = good(1000);
    b.extend_from_slice(b"abc \x00\xff garbage");
    send_all(port, &b);
    // C: a length shorter than the frame: "<34>Oct 11" (a syslog_parse error), then the
    // rest of the frame is a bad octet count (a tcp_in error).
    let mut c = good(2000);
    c.extend_from_slice(b"10 <34>Oct 11 22:14:15 host su: the rest");
    send_all(port, &c);
    // D: binary garbage and invalid UTF-8 inside well-formed frames: syslog_parse errors.
    let mut e = Vec::new();
    for i in 0..50u8 {
        e.extend(frame(&[0, 0xff, i | 0x80, 0xfe, b'<', 0xc3]));
    }
    send_all(port, &e);
    let (records, tcp_errors, parse_errors) = (1500 + 1 + 1 + 50, 3, 1 + 1 + 50);
    let out = dir.path().join("out.log");
    wait_for("every frame", || line_count(&out) >= records);
    let err = d.stop();
    let r = records as u64;
    assert_eq!(line_count(&out), records, "{err}");
    assert_eq!(
        final_counters(&err, "tcp_in"),
        [0, r, 0, tcp_errors],
        "{err}"
    );
    assert_eq!(
        final_counters(&err, "syslog_parse"),
        [r, r, 0, parse_errors],
        "{err}"
    );
    assert_eq!(final_counters(&err, "file_out"), [r, 0, 0, 0], "{err}");
}

/// A storm of over-long lines: every one is cut, kept with `truncated = true` and counted,
/// but the log holds a bounded number of warnings plus a count of those held back, so a
/// storm cannot flood the log.
#[test]
fn long_line_storm_is_counted_but_logged_at_a_bounded_rate() {
    const LINES: usize = 2_000;
    let dir = TempDir::new("rel-long-storm");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\nmax_line_bytes = 64\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n",
    );
    let line = format!("{}\n", "y".repeat(200));
    let input = line.repeat(LINES).into_bytes();
    let mut d = Daemon::start(&cfg, Stdio::piped());
    let mut stdin = d.child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    writer.join().unwrap();
    let err = d.exit_ok();
    assert_eq!(line_count(&dir.path().join("out.log")), LINES, "{err}");
    let n = LINES as u64;
    assert_eq!(final_counters(&err, "stdin"), [0, n, 0, n], "{err}");
    let warnings = err.matches("line longer than max_line_bytes cut").count();
    // At most a burst a second; the run takes well under a few seconds.
    assert!((1..=50).contains(&warnings), "{warnings} warnings:\n{err}");
    if warnings < LINES {
        assert!(err.contains("more warnings held back"), "{err}");
    }
}
