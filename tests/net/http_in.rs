//! `http_in` against real clients on 127.0.0.1: curl posting NDJSON, gzip, chunked, JSON
//! arrays and lines; a Python client that retries with `ack = "written"` while the drain's
//! collector is away; limits (413, a gzip bomb), the token (401), backpressure (503 with
//! Retry-After), bad JSON routed per `on_error`, and a stop in the middle of a request.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");
/// Longest any condition is waited for.
const PATIENCE: Duration = Duration::from_secs(60);

struct Daemon {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Daemon {
    /// Starts `deadbeat run` on `config` and waits until `http_in` listens (on the port the
    /// kernel chose for `127.0.0.1:0`, read from the log).
    fn start(dir: &Path, name: &str, config: &str) -> Daemon {
        let conf = dir.join(format!("{name}.toml"));
        std::fs::write(&conf, config).unwrap();
        let log = dir.join(format!("{name}.err"));
        let err = File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["run", conf.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            log,
            port: 0,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = d.log();
            if let Some(i) = log.find("http_in listening address=127.0.0.1:") {
                let rest = &log[i + "http_in listening address=127.0.0.1:".len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                d.port = digits.parse().unwrap();
                return d;
            }
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("deadbeat exited: {st}\n{log}");
            }
            assert!(Instant::now() < deadline, "http_in did not listen\n{log}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn sigterm(&self) {
        // SAFETY: sending a signal to a child this test started.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
    }

    /// Waits (bounded) for the exit; returns whether it was clean, and the log.
    fn wait_exit(&mut self) -> (bool, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.success(), self.log());
            }
            assert!(
                Instant::now() < deadline,
                "deadbeat did not stop\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then a clean exit; returns the log.
    fn stop(mut self) -> String {
        self.sigterm();
        let (ok, log) = self.wait_exit();
        assert!(ok, "deadbeat failed to stop cleanly\n{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, log: impl Fn() -> String, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A program's presence, or the reason a test skips.
fn have(program: &str) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: {program} is not installed");
    }
    ok
}

/// One answer: status, head, body.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response from `s` (with a `Content-Length`); `None` when the connection
/// closed before a whole one.
fn read_reply(s: &mut TcpStream) -> Option<Reply> {
    read_reply_after(s, &mut Vec::new())
}

/// [`read_reply`] when `buf` holds bytes read before; what follows the response (the next
/// one, pipelined) is left in `buf`.
fn read_reply_after(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Reply> {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..h]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= h + 4 + len {
                let status = head.get(9..12)?.parse().ok()?;
                let body = String::from_utf8_lossy(&buf[h + 4..h + 4 + len]).into_owned();
                buf.drain(..h + 4 + len);
                return Some(Reply { status, head, body });
            }
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// POSTs `body` on a new connection with the extra header lines `headers`.
fn post(port: u16, path: &str, headers: &str, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before taking the whole body.
    let _ = s.write_all(body);
    read_reply(&mut s).expect("an answer")
}

const NDJSON: &str = "Content-Type: application/x-ndjson\r\n";

/// NDJSON of records `{"n": from..to, "tag": tag}`.
fn ndjson(from: usize, to: usize, tag: &str) -> String {
    (from..to)
        .map(|n| format!("{{\"n\":{n},\"tag\":\"{tag}\"}}\n"))
        .collect()
}

/// `curl` POSTing `file` with extra arguments; the status and the body it printed.
fn curl(url: &str, file: &Path, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "60", "-w", "\n%{http_code}"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (
        code.trim().parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `http_in` into a JSON file (`out.json`), bad lines to the dead-letter train's file
/// (`dead.json`).
fn file_config(dir: &Path, extra: &str) -> String {
    format!(
        "[[train]]\nname = \"in\"\n\
         [[train.cog]]\ntype = \"http_in\"\nlisten = \"127.0.0.1:0\"\npath_field = \"path\"\n\
         on_error = \"train:dead\"\n{extra}\n\
         [[train.cog]]\ntype = \"file_out\"\npath = {out:?}\nformat = \"json\"\n\
         [[train]]\nname = \"dead\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = {dead:?}\nformat = \"json\"\n",
        out = dir.join("out.json").to_str().unwrap(),
        dead = dir.join("dead.json").to_str().unwrap(),
    )
}

#[test]
fn curl_posts_ndjson_gzip_chunked_arrays_and_lines() {
    if !have("curl") {
        return;
    }
    let dir = TempDir::new("http-in-curl");
    let d = Daemon::start(dir.path(), "in", &file_config(dir.path(), ""));
    let f = |name: &str, data: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let ndj = ["-H", "Content-Type: application/x-ndjson"];
    let plain = f("plain.ndjson", ndjson(0, 1000, "plain").as_bytes());
    assert_eq!(
        curl(&d.url("/plain"), &plain, &ndj),
        (200, "{\"accepted\":1000,\"refused\":0}\n".into())
    );
    let gz = f("gz.ndjson.gz", &gzip(ndjson(0, 5000, "gz").as_bytes()));
    let gz_args = [ndj[0], ndj[1], "-H", "Content-Encoding: gzip"];
    assert_eq!(
        curl(&d.url("/gz"), &gz, &gz_args),
        (200, "{\"accepted\":5000,\"refused\":0}\n".into())
    );
    // Chunked (curl streams the file in chunks), gzip on top.
    let chunked_args = [
        ndj[0],
        ndj[1],
        "-H",
        "Content-Encoding: gzip",
        "-H",
        "Transfer-Encoding: chunked",
    ];
    let big = f(
        "chunked.ndjson.gz",
        &gzip(ndjson(0, 20_000, "chunked").as_bytes()),
    );
    assert_eq!(
        curl(&d.url("/chunked"), &big, &chunked_args),
        (200, "{\"accepted\":20000,\"refused\":0}\n".into())
    );
    let array: Vec<String> = (0..300)
        .map(|n| format!("{{\"n\":{n},\"tag\":\"array\"}}"))
        .collect();
    let arr = f("array.json", format!("[{}]", array.join(",")).as_bytes());
    assert_eq!(
        curl(
            &d.url("/array"),
            &arr,
            &["-H", "Content-Type: application/json"]
        ),
        (200, "{\"accepted\":300,\"refused\":0}\n".into())
    );
    let text = f("lines.txt", b"first line\r\nsecond line\nlast, no newline");
    assert_eq!(
        curl(
            &d.url("/lines"),
            &text,
            &["-H", "Content-Type: text/plain; charset=utf-8"]
        ),
        (200, "{\"accepted\":3,\"refused\":0}\n".into())
    );
    // Without a type curl says form data: refused, nothing handed on.
    let (code, body) = curl(&d.url("/form"), &plain, &[]);
    assert_eq!(code, 415, "{body}");
    let out = dir.path().join("out.json");
    let want = 1000 + 5000 + 20_000 + 300 + 3;
    wait_for(
        "every record written",
        || d.log(),
        || lines_of(&out).len() >= want,
    );
    let log = d.stop();
    let lines = lines_of(&out);
    assert_eq!(lines.len(), want, "{log}");
    for (tag, n) in [
        ("plain", 1000),
        ("gz", 5000),
        ("chunked", 20_000),
        ("array", 300),
    ] {
        let mut seen: Vec<usize> = lines
            .iter()
            .filter(|l| l.contains(&format!("\"tag\":\"{tag}\"")))
            .map(|l| {
                assert!(l.contains(&format!("\"path\":\"/{tag}\"")), "{l}");
                let i = l.find("\"n\":").unwrap() + 4;
                l[i..].split(',').next().unwrap().parse().unwrap()
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>(), "{tag}");
    }
    for m in ["first line", "second line", "last, no newline"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("\"message\":\"{m}\""))
                    && l.contains("\"peer\":\"127.0.0.1:")),
            "{m} missing: {lines:?}"
        );
    }
    assert!(log.contains("status=415"), "{log}");
}

#[test]
fn limits_token_paths_and_bad_json() {
    let dir = TempDir::new("http-in-limits");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let extra = format!(
        "max_body_bytes = \"64KiB\"\npaths = [\"/in\"]\ntoken_file = {:?}\n",
        token.to_str().unwrap()
    );
    let d = Daemon::start(dir.path(), "in", &file_config(dir.path(), &extra));
    let auth = format!("{NDJSON}Authorization: Bearer s3cret\r\n");
    let ok = post(d.port, "/in", &auth, ndjson(0, 10, "ok").as_bytes());
    assert_eq!(
        (ok.status, ok.body.as_str()),
        (200, "{\"accepted\":10,\"refused\":0}\n")
    );
    // Expect: 100-continue is answered before the body is sent.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let body = ndjson(0, 3, "continue");
    let head = format!(
        "POST /in HTTP/1.1\r\nHost: x\r\n{auth}Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let r = read_reply(&mut s).expect("an answer");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "{\"accepted\":3,\"refused\":0}\n")
    );
    // The token: missing, wrong.
    let r = post(d.port, "/in", NDJSON, b"{}\n");
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.head.contains("WWW-Authenticate: Bearer"), "{r:?}");
    let wrong = format!("{NDJSON}Authorization: Bearer s3creT\r\n");
    assert_eq!(post(d.port, "/in", &wrong, b"{}\n").status, 401);
    // A path not listed.
    assert_eq!(post(d.port, "/other", &auth, b"{}\n").status, 404);
    // Over max_body_bytes, as announced.
    let big = ndjson(0, 5000, "big");
    assert!(big.len() > 64 << 10);
    let r = post(d.port, "/in", &auth, big.as_bytes());
    assert_eq!(r.status, 413, "{r:?}");
    // A gzip bomb: about 32 KiB of compressed zeros inflating to 32 MiB.
    let bomb = gzip(&vec![b'0'; 32 << 20]);
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let gz = format!("{auth}Content-Encoding: gzip\r\n");
    let r = post(d.port, "/in", &gz, &bomb);
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.body.contains("decompressed"), "{r:?}");
    // Not gzip at all.
    let r = post(d.port, "/in", &gz, b"{\"a\":1}\n");
    assert_eq!(r.status, 400, "{r:?}");
    // Bad lines: counted, logged with the peer, routed to the dead-letter train; the
    // good ones written.
    let mixed =
        b"{\"n\":1,\"tag\":\"mixed\"}\nnot json\n[1,2]\n{\"n\":2,\"tag\":\"mixed\"}\n\xff\xfe\n";
    let r = post(d.port, "/in", &auth, mixed);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "{\"accepted\":2,\"refused\":3}\n")
    );
    let r = post(d.port, "/in", &auth, b"nope\n");
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "{\"accepted\":0,\"refused\":1}\n")
    );
    let dead = dir.path().join("dead.json");
    wait_for(
        "bad lines in the dead-letter train",
        || d.log(),
        || lines_of(&dead).len() >= 4,
    );
    let out = dir.path().join("out.json");
    wait_for(
        "good lines written",
        || d.log(),
        || lines_of(&out).len() >= 15,
    );
    let log = d.stop();
    let dead = lines_of(&dead);
    assert_eq!(dead.len(), 4, "{dead:?}");
    assert!(
        dead[0].contains("\"message\":\"not json\"")
            && dead[0].contains("\"error\":\"not a JSON object (from 127.0.0.1:"),
        "{dead:?}"
    );
    assert!(dead[1].contains("\"message\":\"[1,2]\""), "{dead:?}");
    assert!(
        dead.iter().all(|l| l.contains("\"path\":\"/in\"")),
        "{dead:?}"
    );
    assert_eq!(
        lines_of(&out).len(),
        15,
        "nothing of a refused request is written"
    );
    assert!(
        log.contains("failed on a record") && log.contains("event="),
        "{log}"
    );
    // Errors counted: 4 bad lines, 2 x 401, 404, 413 x 2, 400 (bad gzip).
    let errors: u64 = log
        .lines()
        .filter(|l| l.contains("final counters") && l.contains("cog=http_in"))
        .find_map(|l| l.split("errors=").nth(1)?.split(' ').next()?.parse().ok())
        .expect("http_in's counters");
    assert_eq!(errors, 4 + 2 + 1 + 2 + 1, "{log}");
}

/// A collector on 127.0.0.1 that keeps the lines it reads; started when asked.
struct Collector {
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Collector {
    /// A free port for it, not listened on yet.
    fn reserve() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn start(port: u16) -> Collector {
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (lines2, stop2) = (lines.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let (lines3, stop3) = (lines2.clone(), stop2.clone());
                std::thread::spawn(move || {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let mut r = BufReader::new(c);
                    let mut line = String::new();
                    while !stop3.load(Ordering::Relaxed) {
                        match r.read_line(&mut line) {
                            Ok(0) => return,
                            Ok(_) if line.ends_with('\n') => {
                                lines3.lock().unwrap().push(std::mem::take(&mut line));
                            }
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        });
        Collector { lines, stop }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The Python client: posts `batches` NDJSON bodies of `per` records each; a body not
/// answered 200 (503, an error, a broken connection) is sent again after a short pause.
/// Prints `retries=N` and `done` at the end.
const CLIENT: &str = r#"
import http.client, json, sys, time
port, batches, per = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
deadline = time.time() + 50
retries = 0
statuses = set()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
for b in range(batches):
    body = "".join(json.dumps({"n": b * per + i}) + "\n" for i in range(per)).encode()
    while True:
        if time.time() > deadline:
            print("gave up at batch", b, "retries", retries, flush=True)
            sys.exit(1)
        try:
            conn.request("POST", "/in", body, {"Content-Type": "application/x-ndjson"})
            r = conn.getresponse()
            data = r.read()
            if r.status == 200:
                answer = json.loads(data)
                assert answer == {"accepted": per, "refused": 0}, answer
                break
            statuses.add(r.status)
            assert r.status == 503 and r.getheader("Retry-After"), (r.status, r.getheaders())
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
        except (OSError, http.client.HTTPException):
            conn.close()
            statuses.add("error")
        retries += 1
        print("retry", b, flush=True)
        time.sleep(0.1)
print("retries=%d statuses=%s" % (retries, sorted(map(str, statuses))), flush=True)
print("done", flush=True)
"#;

/// Waits (bounded) for the `CLIENT` script to end well; returns what it printed.
fn client_finished(client: &mut Child, said: &Path, d: &Daemon) -> String {
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(st) = client.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the client did not finish\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let said = std::fs::read_to_string(said).unwrap_or_default();
    assert!(
        status.success() && said.contains("done"),
        "{said}\n{}",
        d.log()
    );
    said
}

fn python() -> Option<&'static str> {
    have("python3").then_some("python3")
}

#[test]
fn a_retrying_client_with_ack_written_loses_nothing_while_the_collector_is_away() {
    let Some(py) = python() else {
        return;
    };
    let dir = TempDir::new("http-in-ack");
    let port = Collector::reserve();
    let config = format!(
        "[[train]]\nname = \"in\"\n\
         [[train.cog]]\ntype = \"http_in\"\nlisten = \"127.0.0.1:0\"\nack = \"written\"\nack_timeout = \"300ms\"\n\
         [[train.cog]]\ntype = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\nformat = \"json\"\n\
         reconnect_refused = \"20ms\"\ndrain_timeout = \"5s\"\n"
    );
    let d = Daemon::start(dir.path(), "in", &config);
    let script = dir.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let (batches, per) = (40, 500);
    let client_out = dir.path().join("client.out");
    let mut client = Command::new(py)
        .arg(&script)
        .args([d.port.to_string(), batches.to_string(), per.to_string()])
        .stdout(File::create(&client_out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The collector is away until the client has had a few requests refused.
    wait_for(
        "a request refused while the collector is away",
        || {
            format!(
                "{}\n{}",
                std::fs::read_to_string(&client_out).unwrap_or_default(),
                d.log()
            )
        },
        || {
            std::fs::read_to_string(&client_out)
                .unwrap_or_default()
                .matches("retry")
                .count()
                >= 3
        },
    );
    let collector = Collector::start(port);
    let said = client_finished(&mut client, &client_out, &d);
    assert!(said.contains("503"), "no 503 seen: {said}");
    // Every record answered 200 is with the collector already; the others of the
    // refused attempts arrive too, possibly twice.
    let log = d.stop();
    let mut seen: Vec<usize> = collector
        .lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| {
            let i = l.find("\"n\":").expect("a record") + 4;
            l[i..].trim_end().trim_end_matches('}').parse().unwrap()
        })
        .collect();
    let received = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..batches * per).collect::<Vec<_>>(), "{log}");
    assert!(received >= batches * per, "{received}");
    assert!(log.contains("answered 503"), "{log}");
    drop(collector);
}

/// `ack = "written"` across a kill -9: the requests in flight get no answer (the
/// connection breaks), the client sends them again once the daemon is back on the same
/// port, and the output holds every record, some twice (written, not yet answered),
/// none missing and none torn.
#[test]
fn a_kill_9_with_requests_waiting_for_their_ack_loses_nothing_a_retrying_client_sent() {
    let Some(py) = python() else {
        return;
    };
    let dir = TempDir::new("http-in-kill9");
    let port = Collector::reserve();
    let out = dir.path().join("out.json");
    let config = format!(
        "[[train]]\nname = \"in\"\n\
         [[train.cog]]\ntype = \"http_in\"\nlisten = \"127.0.0.1:{port}\"\nack = \"written\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = {out:?}\nformat = \"json\"\n",
        out = out.to_str().unwrap()
    );
    let mut d = Daemon::start(dir.path(), "first", &config);
    let script = dir.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let (batches, per) = (60, 500);
    let client_out = dir.path().join("client.out");
    let mut client = Command::new(py)
        .arg(&script)
        .args([port.to_string(), batches.to_string(), per.to_string()])
        .stdout(File::create(&client_out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for(
        "a third of the records written",
        || d.log(),
        || lines_of(&out).len() >= batches * per / 3,
    );
    d.child.kill().unwrap();
    let _ = d.child.wait();
    let at_kill = lines_of(&out).len();
    let d = Daemon::start(dir.path(), "second", &config);
    let said = client_finished(&mut client, &client_out, &d);
    assert!(said.contains("retry"), "the kill broke no request: {said}");
    let log = d.stop();
    let lines = lines_of(&out);
    let mut seen: Vec<usize> = Vec::with_capacity(lines.len());
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("a torn or bad line {l:?}: {e}\n{log}"));
        seen.push(v["n"].as_u64().expect("n") as usize);
    }
    let written = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..batches * per).collect::<Vec<_>>(), "{log}");
    println!(
        "kill -9 after {at_kill} lines: {written} lines for {} records ({} again)",
        batches * per,
        written - batches * per
    );
}

#[test]
fn backpressure_is_answered_503_with_retry_after() {
    let dir = TempDir::new("http-in-pressure");
    let port = Collector::reserve();
    // Nobody listens: tcp_out fills its small buffer and pauses the supply.
    let config = format!(
        "[[train]]\nname = \"in\"\n\
         [[train.cog]]\ntype = \"http_in\"\nlisten = \"127.0.0.1:0\"\nretry_after = \"3s\"\n\
         [[train.cog]]\ntype = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\nformat = \"json\"\n\
         buffer_bytes = \"64KiB\"\ndrain_timeout = \"100ms\"\n"
    );
    let mut d = Daemon::start(dir.path(), "in", &config);
    let body = ndjson(0, 2000, "pressure");
    let mut answers = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let refused = loop {
        let r = post(d.port, "/x", NDJSON, body.as_bytes());
        if r.status == 503 {
            break r;
        }
        assert_eq!(r.status, 200, "{r:?}");
        answers.push(r);
        assert!(Instant::now() < deadline, "never refused\n{}", d.log());
    };
    assert!(!answers.is_empty(), "the first request is taken");
    assert!(refused.head.contains("Retry-After: 3"), "{refused:?}");
    assert!(refused.head.contains("Connection: close"), "{refused:?}");
    assert!(refused.body.contains("try again later"), "{refused:?}");
    d.sigterm();
    let (_, log) = d.wait_exit();
    assert!(
        log.contains("unsent") || log.contains("drain_timeout"),
        "{log}"
    );
}

#[test]
fn a_stop_mid_request_answers_503_and_hands_nothing_of_it_on() {
    let dir = TempDir::new("http-in-stop");
    let d = Daemon::start(dir.path(), "in", &file_config(dir.path(), ""));
    // A body announced at 10,000 bytes, of which the first record only arrives.
    let mut cut = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let first = "{\"n\":0,\"tag\":\"cut\"}\n";
    let head =
        format!("POST /in HTTP/1.1\r\nHost: x\r\n{NDJSON}Content-Length: 10000\r\n\r\n{first}");
    cut.write_all(head.as_bytes()).unwrap();
    // A whole request on another connection, answered: the loop has read the first one's
    // bytes by then (both were readable before this one was answered).
    let ok = post(d.port, "/in", NDJSON, ndjson(0, 5, "whole").as_bytes());
    assert_eq!(ok.status, 200);
    let out = dir.path().join("out.json");
    wait_for(
        "the whole request written",
        || d.log(),
        || lines_of(&out).len() >= 5,
    );
    let log = d.stop();
    let r = read_reply(&mut cut).expect("an answer to the cut request");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.head.contains("Retry-After: 1"), "{r:?}");
    assert!(r.body.contains("stopping"), "{r:?}");
    let lines = lines_of(&out);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("cut")), "{lines:?}");
    assert!(log.contains("answered 503"), "{log}");
}

#[test]
fn a_stop_answers_503_to_requests_whose_records_were_not_written() {
    let dir = TempDir::new("http-in-stop-ack");
    let port = Collector::reserve();
    let config = format!(
        "[[train]]\nname = \"in\"\n\
         [[train.cog]]\ntype = \"http_in\"\nlisten = \"127.0.0.1:0\"\nack = \"written\"\n\
         [[train.cog]]\ntype = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\nformat = \"json\"\n\
         drain_timeout = \"200ms\"\n"
    );
    let mut d = Daemon::start(dir.path(), "in", &config);
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let body = ndjson(0, 10, "waiting");
    let req = format!(
        "POST /in HTTP/1.1\r\nHost: x\r\n{NDJSON}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    // The answer waits for a collector that is not there (ack_timeout is 30 s).
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut one = [0u8; 1];
    assert!(
        s.read(&mut one).is_err(),
        "answered before the records were written"
    );
    d.sigterm();
    let r = read_reply(&mut s).expect("an answer at the stop");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("\"acknowledged\":0"), "{r:?}");
    assert!(
        r.body.contains("stopped before every record was written"),
        "{r:?}"
    );
    let (_, log) = d.wait_exit();
    assert!(log.contains("answered 503"), "{log}");
}

#[test]
fn the_example_config_runs_as_shipped() {
    let dir = TempDir::new("http-in-example");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/http_in.toml")).unwrap();
    assert!(text.contains("\"127.0.0.1:8080\"") && text.contains("\"../var/"));
    let var = format!("\"{}/", dir.path().join("var").to_str().unwrap());
    let text = text
        .replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"")
        .replace("\"../var/", &var);
    let d = Daemon::start(dir.path(), "example", &text);
    let body = format!("{}not json\n", ndjson(0, 100, "example"));
    let r = post(d.port, "/ingest", NDJSON, body.as_bytes());
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "{\"accepted\":100,\"refused\":1}\n")
    );
    // Answered once written (ack = "written"): the files hold everything already.
    let out = lines_of(&dir.path().join("var/http_in.json"));
    assert_eq!(out.len(), 100);
    assert!(out.iter().all(|l| l.contains("\"path\":\"/ingest\"")));
    let rejected = lines_of(&dir.path().join("var/http_in.rejected.json"));
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(post(d.port, "/other", NDJSON, b"{}\n").status, 404);
    d.stop();
}

#[test]
fn keep_alive_pipelining_limits_and_idle_connections() {
    let dir = TempDir::new("http-in-conns");
    let extra = "idle_timeout = \"300ms\"\nmax_connections = 2\n";
    let d = Daemon::start(dir.path(), "in", &file_config(dir.path(), extra));
    // Two requests in one write, answered in order on the kept-alive connection; then an
    // HTTP/1.0 one, answered and closed.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let req = |tag: &str, n: usize, version: &str| {
        let body = ndjson(0, n, tag);
        format!(
            "POST /p HTTP/{version}\r\nHost: x\r\n{NDJSON}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let two = format!("{}{}", req("one", 2, "1.1"), req("two", 3, "1.1"));
    s.write_all(two.as_bytes()).unwrap();
    // Both answers may come in one read.
    let mut buf = Vec::new();
    let a = read_reply_after(&mut s, &mut buf).expect("first answer");
    let b = read_reply_after(&mut s, &mut buf).expect("second answer");
    assert!(buf.is_empty());
    assert_eq!(a.body, "{\"accepted\":2,\"refused\":0}\n");
    assert_eq!(b.body, "{\"accepted\":3,\"refused\":0}\n");
    assert!(a.head.contains("Connection: keep-alive"), "{a:?}");
    s.write_all(req("three", 1, "1.0").as_bytes()).unwrap();
    let c = read_reply(&mut s).expect("third answer");
    assert!(c.head.contains("Connection: close"), "{c:?}");
    let mut rest = Vec::new();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "closed after HTTP/1.0"
    );
    // A body that stops coming: the connection is closed after idle_timeout, counted.
    let mut stalled = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let head = format!("POST /p HTTP/1.1\r\nHost: x\r\n{NDJSON}Content-Length: 100\r\n\r\n{{\"a\"");
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.set_read_timeout(Some(PATIENCE)).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(started.elapsed() >= Duration::from_millis(250));
    // At max_connections (2), a third connection is closed at once.
    let _a = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let _b = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let mut third = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    third.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    let closed = matches!(third.read_to_end(&mut rest), Ok(0) | Err(_));
    assert!(closed && rest.is_empty());
    let log = d.stop();
    assert!(
        log.contains("idle_timeout passed inside a request body"),
        "{log}"
    );
    assert!(log.contains("max_connections reached"), "{log}");
}

#[test]
fn at_max_connections_an_idle_keep_alive_connection_makes_room() {
    let dir = TempDir::new("http-in-evict");
    let extra = "idle_timeout = \"0s\"\nmax_connections = 1\n";
    let d = Daemon::start(dir.path(), "in", &file_config(dir.path(), extra));
    let body = ndjson(0, 1, "evict");
    let req = format!(
        "POST /p HTTP/1.1\r\nHost: x\r\n{NDJSON}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut a = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    a.write_all(req.as_bytes()).unwrap();
    assert_eq!(read_reply(&mut a).expect("an answer").status, 200);
    let answered = Instant::now();
    // A connection quiet for less than a second is never closed for a new one: the new
    // one is.
    let mut early = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    early.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    assert!(matches!(early.read_to_end(&mut rest), Ok(0) | Err(_)));
    // Once `a` has been quiet for a second, a new client takes its place.
    let idle = Duration::from_millis(1100);
    std::thread::sleep(idle.saturating_sub(answered.elapsed()));
    let mut b = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    b.write_all(req.as_bytes()).unwrap();
    assert_eq!(read_reply(&mut b).expect("an answer").status, 200);
    a.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    assert_eq!(a.read_to_end(&mut rest).unwrap_or(0), 0, "a was closed");
    let log = d.stop();
    assert!(log.contains("closed the longest-idle connection"), "{log}");
    assert!(
        log.contains("max_connections reached; new connection closed"),
        "{log}"
    );
}
