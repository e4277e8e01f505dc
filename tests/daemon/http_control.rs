//! The control server of `[http]` (issue 17) over real sockets: status, metrics, errors,
//! the token, pause and resume, slow clients and the connection bound.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;

use super::*;

/// A running daemon reading stdin into `out.log`, with `[http]` on a port the kernel chose.
struct Daemon {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    dir: TempDir,
    port: u16,
}

impl Daemon {
    /// Starts the daemon with these extra `[http]` lines (after `listen`).
    fn start(tag: &str, http_extra: &str) -> Daemon {
        Self::start_listening(tag, "127.0.0.1:0", http_extra)
    }

    fn start_listening(tag: &str, listen: &str, http_extra: &str) -> Daemon {
        Self::start_with(tag, listen, http_extra, "")
    }

    /// Starts the daemon with `supplies` (TOML of more cogs) between `stdin` and the drain.
    fn start_with(tag: &str, listen: &str, http_extra: &str, supplies: &str) -> Daemon {
        let dir = TempDir::new(tag);
        let cfg = write_config(
            dir.path(),
            &format!(
                "[log]\ntarget = \"file:d.log\"\n[http]\nlisten = \"{listen}\"\n{http_extra}\n\
                 [state]\ndir = \"state\"\n\
                 [[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n{supplies}\n\
                 [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n"
            ),
        );
        let (child, stdin) = spawn_with_stdin(&cfg);
        let port = listening_port(&dir.path().join("d.log"));
        Daemon {
            child,
            stdin: Some(stdin),
            dir,
            port,
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s
    }

    /// One request on a fresh connection: (status, head, body).
    fn get(&self, path: &str) -> (u16, String, String) {
        let mut s = self.connect();
        request(&mut s, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
    }

    fn status(&self) -> serde_json::Value {
        let (code, _, body) = self.get("/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// The `in` counter of the drain, from `/status`.
    fn written(&self) -> u64 {
        let st = self.status();
        let cogs = st["trains"][0]["cogs"].as_array().unwrap();
        let drain = cogs.iter().find(|c| c["type"] == "file_out").unwrap();
        drain["in"].as_u64().unwrap()
    }

    /// Checks that every supply of the train is in `state` (and the drain running).
    fn assert_supplies(&self, state: &str) {
        let st = self.status();
        let cogs = st["trains"][0]["cogs"].as_array().unwrap();
        let mut supplies = 0;
        for c in cogs {
            if c["supply"] == true {
                supplies += 1;
                assert_eq!(c["state"], state, "{st}");
            } else {
                assert_eq!(c["state"], "running", "{st}");
            }
        }
        assert!(supplies > 0, "{st}");
        assert_eq!(st["trains"][0]["state"], state, "{st}");
    }

    fn feed(&mut self, text: &str) {
        self.stdin
            .as_mut()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("d.log")).unwrap_or_default()
    }

    /// Closes stdin and checks the daemon ends well.
    fn stop(mut self) {
        drop(self.stdin.take());
        let st = wait_exit(&mut self.child);
        assert!(st.success(), "exit {st:?}; log:\n{}", self.log());
    }

    /// Stops the daemon with SIGTERM (supplies that follow files never end by themselves)
    /// and checks it ends well.
    fn terminate(mut self) {
        drop(self.stdin.take());
        kill(self.child.id(), libc::SIGTERM);
        let st = wait_exit(&mut self.child);
        assert!(st.success(), "exit {st:?}; log:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for the daemon logging to `log` to say where its control server listens; the port.
pub(super) fn listening_port(log: &Path) -> u16 {
    let mut port = 0;
    wait_for("the control server to listen", || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let Some(line) = text
            .lines()
            .find(|l| l.contains("control server listening"))
        else {
            return false;
        };
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .unwrap_or("");
        port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        true
    });
    port
}

/// Sends `raw` and reads one response: (status, head, body).
pub(super) fn request<S: Read + Write>(s: &mut S, raw: &str) -> (u16, String, String) {
    s.write_all(raw.as_bytes()).unwrap();
    read_response(s)
}

pub(super) fn read_response<S: Read>(s: &mut S) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert_eq!(n, 1, "the connection ended inside a response head: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let code: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (code, head, String::from_utf8(body).unwrap())
}

/// Whether the server closed the connection (end of stream or reset) within PATIENCE.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => closed_by_server(s),
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    }
}

/// Checks a metrics exposition with `promtool check metrics` (skipped, said so, when
/// promtool is not installed).
pub(super) fn promtool_check(body: &str) {
    if !have("promtool") {
        eprintln!(
            "skipping promtool check metrics: promtool is not installed (Debian: prometheus)"
        );
        return;
    }
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn status_and_metrics_show_counters_rising() {
    let mut d = Daemon::start("http-status", "");
    let st = d.status();
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["pid"].as_u64(), Some(d.child.id() as u64));
    assert!(st["config"].as_str().unwrap().ends_with("deadbeat.toml"));
    let cogs = &st["trains"][0]["cogs"];
    assert_eq!(st["trains"][0]["name"], "t");
    assert_eq!(cogs[0]["name"], "stdin#1");
    assert_eq!(cogs[0]["type"], "stdin");
    assert_eq!(cogs[0]["state"], "running");
    assert_eq!(cogs[0]["supply"], true);
    assert_eq!(cogs[1]["type"], "file_out");
    assert_eq!(cogs[1]["in"], 0);

    d.feed(&numbered(1000));
    wait_for("the counters to rise", || d.written() == 1000);
    // Rates are sampled once a second: once a sample holds the lines, the rate is positive.
    wait_for("a rate", || {
        d.status()["trains"][0]["cogs"][1]["rate_in"]
            .as_f64()
            .is_some_and(|r| r > 0.0)
    });

    // Keep-alive: two requests on one connection.
    let mut s = d.connect();
    let (code, head, body) = request(&mut s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 200);
    assert!(head.contains("Connection: keep-alive"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(
        body.contains(
            "deadbeat_cog_in_total{train=\"t\",cog=\"file_out#2\",type=\"file_out\"} 1000\n"
        ),
        "{body}"
    );
    assert!(
        body.contains("# TYPE deadbeat_cog_in_total counter\n"),
        "{body}"
    );
    assert!(body.contains("\nprocess_resident_memory_bytes "), "{body}");
    assert!(body.contains("\nprocess_open_fds "), "{body}");
    let (code, _, status) = request(&mut s, "GET /status?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 200);
    serde_json::from_str::<serde_json::Value>(&status).unwrap();

    promtool_check(&body);
    if have("curl") {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{}/status", d.port)])
            .output()
            .unwrap();
        assert!(out.status.success(), "curl failed: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["trains"][0]["cogs"][1]["in"], 1000);
    } else {
        eprintln!("skipping the curl request: curl is not installed");
    }
    d.stop();
}

#[test]
fn wrong_requests_get_their_status_over_a_socket() {
    let d = Daemon::start("http-errors", "");
    assert_eq!(d.get("/nothing").0, 404);
    assert_eq!(d.get("/trains").0, 404);
    let (code, head, _) = d.get("/trains/t/pause");
    assert_eq!(code, 405);
    assert!(head.contains("Allow: POST"), "{head}");
    let mut s = d.connect();
    let (code, head, _) = request(&mut s, "POST /status HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(code, 405);
    assert!(head.contains("Allow: GET"), "{head}");
    // The connection stays usable after a 405.
    assert_eq!(request(&mut s, "GET /status HTTP/1.1\r\n\r\n").0, 200);

    let mut s = d.connect();
    let (code, _, _) = request(
        &mut s,
        "POST /trains/t/pause HTTP/1.1\r\nContent-Length: 100000\r\n\r\n",
    );
    assert_eq!(code, 413);
    assert!(closed_by_server(&mut s));

    let mut s = d.connect();
    let big = format!(
        "GET /status HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    s.write_all(big.as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).0, 431);

    let mut s = d.connect();
    let (code, _, body) = request(&mut s, "\x16\x03\x01 not http at all\r\n\r\n");
    assert_eq!(code, 400);
    assert!(!body.contains("not http"), "request data echoed: {body}");
    assert!(closed_by_server(&mut s));

    // HTTP/1.0 closes after the response.
    let mut s = d.connect();
    let (code, head, _) = request(&mut s, "GET /status HTTP/1.0\r\n\r\n");
    assert_eq!(code, 200);
    assert!(head.contains("Connection: close"), "{head}");
    assert!(closed_by_server(&mut s));

    // After all that, the daemon still serves.
    assert_eq!(d.get("/status").0, 200);
    d.stop();
}

#[test]
fn pause_and_resume_hold_the_supply() {
    // Two supplies: a train-wide pause holds both, and the status says so at once.
    let dir = TempDir::new("http-pause-in");
    let tailed = dir.path().join("in.log");
    std::fs::write(&tailed, "").unwrap();
    let tail = format!(
        "[[train.cog]]\ntype = \"tail\"\npaths = [\"{}\"]\nstart_at = \"beginning\"\n",
        tailed.display()
    );
    let mut d = Daemon::start_with("http-pause", "127.0.0.1:0", "", &tail);
    d.feed("one\n");
    wait_for("the first line", || d.written() == 1);
    let port = d.port;
    let post = |path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        request(
            &mut s,
            &format!("POST {path} HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        )
    };
    let (code, _, body) = post("/trains/t/pause");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("stdin#1") && body.contains("tail#2"),
        "{body}"
    );
    assert_eq!(d.status()["trains"][0]["cogs"][0]["held"], true);
    d.assert_supplies("paused");
    d.feed("two\nthree\n");
    std::fs::write(&tailed, "four\n").unwrap();
    // Held: nothing moves. A short look is the only way to see that nothing happens.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        assert_eq!(d.written(), 1, "a paused supply read on");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, _, _) = post("/trains/t/resume");
    assert_eq!(code, 200);
    d.assert_supplies("running");
    wait_for("the lines held back", || d.written() == 4);

    // One supply, named by its type (unique in the train) or its id.
    assert_eq!(post("/trains/t/cogs/stdin/pause").0, 200);
    assert_eq!(d.status()["trains"][0]["cogs"][0]["state"], "paused");
    assert_eq!(post("/trains/t/cogs/stdin%231/resume").0, 200);
    assert_eq!(d.status()["trains"][0]["cogs"][0]["state"], "running");
    assert_eq!(post("/trains/t/cogs/file_out/pause").0, 409);
    assert_eq!(post("/trains/t/cogs/nope/pause").0, 404);
    assert_eq!(post("/trains/nope/pause").0, 404);
    d.feed("five\n");
    wait_for("the line after resuming", || d.written() == 5);
    d.terminate();
}

#[test]
fn control_requests_need_the_token_when_one_is_set() {
    let dir = TempDir::new("http-token-file");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let extra = format!("token_file = \"{}\"", token.display());
    let d = Daemon::start("http-token", &extra);
    let post = |auth: &str| {
        let mut s = d.connect();
        request(
            &mut s,
            &format!("POST /trains/t/pause HTTP/1.1\r\n{auth}Content-Length: 0\r\n\r\n"),
        )
    };
    let (code, head, _) = post("");
    assert_eq!(code, 401);
    assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
    assert_eq!(post("Authorization: Bearer wrong\r\n").0, 401);
    assert_eq!(post("Authorization: Bearer s3cre\r\n").0, 401);
    wait_for("the refusals in the log", || {
        d.log().matches("missing or wrong token").count() == 3
    });
    assert!(!d.log().contains("s3cre"), "a token guess was logged");
    // Reading needs no token.
    assert_eq!(d.get("/status").0, 200);
    assert_eq!(post("Authorization: Bearer s3cret\r\n").0, 200);
    assert_eq!(d.status()["trains"][0]["cogs"][0]["held"], true);
    d.assert_supplies("paused");
    let mut s = d.connect();
    let resume = "POST /trains/t/resume HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n";
    assert_eq!(request(&mut s, resume).0, 200);
    d.stop();
}

#[test]
fn a_listen_address_others_reach_needs_a_token_file() {
    let dir = TempDir::new("http-public");
    let cfg = write_config(
        dir.path(),
        "[http]\nlisten = \"0.0.0.0:8686\"\n\
         [[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"stdout\"\n",
    );
    let out = Command::new(BIN)
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("deadbeat.toml:2:"), "{err}");
    assert!(err.contains("key \"listen\""), "{err}");
    assert!(err.contains("token_file"), "{err}");

    // An empty token file is refused too, at its key.
    std::fs::write(dir.path().join("tok"), "\n").unwrap();
    let cfg = write_config(
        dir.path(),
        "[http]\nlisten = \"0.0.0.0:8686\"\ntoken_file = \"tok\"\n\
         [[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"stdout\"\n",
    );
    let out = Command::new(BIN)
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("deadbeat.toml:3:"), "{err}");
    assert!(err.contains("is empty"), "{err}");
}

#[test]
fn a_slow_client_stalls_nothing_and_is_closed_when_idle() {
    let mut d = Daemon::start("http-slow", "idle_timeout = \"1s\"");
    let mut slow = d.connect();
    slow.write_all(b"GET /status HTTP/1.1\r\nHo").unwrap();
    // A client that reads nothing: requests pile up unanswered in its socket.
    let mut deaf = d.connect();
    for _ in 0..200 {
        deaf.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    }
    let lines = numbered(20_000);
    d.feed(&lines);
    wait_for("the data to flow past the slow clients", || {
        line_count(&d.dir.path().join("out.log")) == 20_000
    });
    assert_eq!(d.written(), 20_000);
    let started = Instant::now();
    assert!(
        closed_by_server(&mut slow),
        "the slow client was not closed: {}",
        std::fs::read_to_string(d.dir.path().join("d.log")).unwrap_or_default()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    d.stop();
}

#[test]
fn connections_beyond_the_bound_are_closed() {
    let d = Daemon::start("http-bound", "max_connections = 4");
    let mut held: Vec<TcpStream> = (0..4).map(|_| d.connect()).collect();
    // Each of the four is served, so each is open on the server's side.
    for s in held.iter_mut() {
        assert_eq!(request(s, "GET /status HTTP/1.1\r\n\r\n").0, 200);
    }
    for _ in 0..20 {
        let mut extra = d.connect();
        assert!(
            closed_by_server(&mut extra),
            "a connection beyond the bound stayed open"
        );
    }
    let (code, _, body) = request(&mut held[0], "GET /status HTTP/1.1\r\n\r\n");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["http"]["refused"], 20);
    drop(held);
    // Once they are gone, new connections are served again.
    wait_for("a free connection", || {
        let mut s = d.connect();
        s.write_all(b"GET /status HTTP/1.1\r\n\r\n").is_ok() && {
            let mut b = [0u8; 12];
            s.read_exact(&mut b).is_ok() && &b[9..12] == b"200"
        }
    });
    d.stop();
}

#[test]
fn a_unix_socket_serves_too() {
    let d = Daemon::start_listening("http-unix", "unix:ctl.sock", "");
    let sock = d.dir.path().join("ctl.sock");
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let (code, _, body) = request(&mut s, "GET /status HTTP/1.1\r\n\r\n");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["trains"][0]["name"], "t");
    d.stop();
    assert!(!sock.exists(), "the socket file was left behind");
}
