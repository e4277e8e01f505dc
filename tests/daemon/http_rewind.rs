//! `POST /trains/T/cogs/C/rewind` (issue 17) over real sockets: `tail`, `file_in` and
//! `spool` read again from an offset or a line, checkpoints and acknowledgements follow,
//! and wrong requests get their status; plus the status fields of sources and keys.

use std::net::TcpStream;
use std::os::unix::net::UnixListener;

use super::http_control::{listening_port, promtool_check, request};
use super::*;

/// A running daemon with `[http]` on a port the kernel chose, logging to `d.log` in `dir`.
struct Daemon {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    port: u16,
    dir: PathBuf,
}

impl Daemon {
    /// Starts `deadbeat run` on `trains` (TOML) in `dir`, with `http_extra` lines in `[http]`.
    fn start(dir: &Path, http_extra: &str, trains: &str) -> Daemon {
        let _ = std::fs::remove_file(dir.join("d.log"));
        let cfg = write_config(
            dir,
            &format!(
                "[log]\ntarget = \"file:d.log\"\n[state]\ndir = \"state\"\n\
                 [http]\nlisten = \"127.0.0.1:0\"\n{http_extra}\n{trains}"
            ),
        );
        let (child, stdin) = spawn_with_stdin(&cfg);
        let port = listening_port(&dir.join("d.log"));
        Daemon {
            child,
            stdin: Some(stdin),
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn send(&self, raw: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        request(&mut s, raw)
    }

    fn post(&self, path: &str, body: &str) -> (u16, String) {
        let (code, _, text) = self.send(&format!(
            "POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        (code, text)
    }

    fn rewind(&self, cog: &str, body: &str) -> (u16, String) {
        self.post(&format!("/trains/t/cogs/{cog}/rewind"), body)
    }

    fn status(&self) -> serde_json::Value {
        let (code, _, body) = self.send("GET /status HTTP/1.1\r\n\r\n");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// The status object of the cog with this type in train `t`.
    fn cog(&self, ty: &str) -> serde_json::Value {
        let st = self.status();
        let trains = st["trains"].as_array().unwrap();
        let t = trains.iter().find(|t| t["name"] == "t").unwrap();
        let cogs = t["cogs"].as_array().unwrap();
        cogs.iter().find(|c| c["type"] == ty).unwrap().clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("d.log")).unwrap_or_default()
    }

    /// SIGTERM, and a clean exit.
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

fn lines_of(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn numbered_lines(from: usize, to: usize) -> Vec<String> {
    (from..=to).map(|i| format!("line {i}")).collect()
}

fn json_path(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap()
}

/// `tail` → `multiline` (holding each event until the next or a timeout, so data are in
/// flight across the rewinds) → `file_out`.
fn tail_train(input: &Path) -> String {
    format!(
        "[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"tail\"\npaths = [\"{}\"]\nstart_at = \"beginning\"\n\
         [[train.cog]]\ntype = \"multiline\"\nstart = '^line'\nsource = \"path\"\ntimeout = \"100ms\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"raw\"\n",
        input.display()
    )
}

#[test]
fn tail_reads_again_from_an_offset_or_a_line_and_its_checkpoint_follows() {
    let dir = TempDir::new("http-rewind-tail");
    let input = dir.path().join("in.log");
    let out = dir.path().join("out.log");
    let text: String = numbered_lines(1, 10)
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&input, &text).unwrap();
    let size = text.len() as u64;
    let d = Daemon::start(dir.path(), "", &tail_train(&input));
    wait_for("the ten lines", || lines_of(&out).len() == 10);
    let src = json_path(&input);

    // The status shows the file with its offsets, and the multiline cog's keys.
    wait_for("everything acknowledged", || {
        let tail = d.cog("tail");
        tail["sources"][0]["acknowledged"] == size
    });
    let tail = d.cog("tail");
    assert_eq!(
        tail["sources"][0]["path"],
        input.display().to_string(),
        "{tail}"
    );
    assert_eq!(tail["sources"][0]["read"], size, "{tail}");
    assert_eq!(tail["buffers"][0]["name"], "unacknowledged", "{tail}");
    assert_eq!(tail["buffers"][0]["limit"], 100_000, "{tail}");
    let ml = d.cog("multiline");
    assert!(ml["keys"].is_u64() && ml["max_keys"] == 10_000, "{ml}");
    let (code, _, metrics) = d.send("GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(code, 200);
    let labels = format!(
        "{{train=\"t\",cog=\"tail#1\",type=\"tail\",source=\"{}\"}}",
        input.display()
    );
    for want in [
        format!("deadbeat_source_read_offset_bytes{labels} {size}\n"),
        format!("deadbeat_source_acknowledged_offset_bytes{labels} {size}\n"),
        "deadbeat_cog_max_keys{train=\"t\",cog=\"multiline#2\",type=\"multiline\"} 10000\n".into(),
        "deadbeat_cog_buffer_limit{train=\"t\",cog=\"tail#1\",type=\"tail\",buffer=\"unacknowledged\"} 100000\n".into(),
    ] {
        assert!(metrics.contains(&want), "{want} in:\n{metrics}");
    }
    promtool_check(&metrics);

    // Back to the start: the ten lines again.
    let (code, body) = d.rewind("tail", &format!("{{\"source\": {src}, \"offset\": 0}}"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"offset\":0"), "{body}");
    wait_for("the lines again", || lines_of(&out).len() == 20);
    assert_eq!(lines_of(&out)[10..], numbered_lines(1, 10)[..]);

    // To line 4, naming the cog by its id.
    let (code, body) = d.rewind("tail%231", &format!("{{\"source\": {src}, \"line\": 4}}"));
    assert_eq!(code, 200, "{body}");
    let line4 = text.find("line 4\n").unwrap();
    assert!(body.contains(&format!("\"offset\":{line4}")), "{body}");
    wait_for("lines 4 to 10 again", || lines_of(&out).len() == 27);
    assert_eq!(lines_of(&out)[20..], numbered_lines(4, 10)[..]);
    // Every line read again is acknowledged, those in flight at the rewinds too.
    wait_for("the rewound lines acknowledged", || {
        let tail = d.cog("tail");
        tail["sources"][0]["acknowledged"] == size && tail["buffers"][0]["fill"] == 0
    });

    // Paused, then rewound: the train stays paused and the checkpoint says where the next
    // run starts, before anything is read again.
    let (code, body) = d.post("/trains/t/pause", "");
    assert_eq!(code, 200, "{body}");
    let (code, body) = d.rewind("tail", &format!("{{\"source\": {src}, \"line\": 9}}"));
    assert_eq!(code, 200, "{body}");
    let tail = d.cog("tail");
    assert_eq!(tail["state"], "paused", "{tail}");
    let line9 = text.find("line 9\n").unwrap() as u64;
    assert_eq!(tail["sources"][0]["acknowledged"], line9, "{tail}");
    d.terminate();
    assert_eq!(lines_of(&out).len(), 27, "read on while paused");

    let d = Daemon::start(dir.path(), "", &tail_train(&input));
    wait_for("lines 9 and 10 in the next run", || {
        lines_of(&out).len() == 29
    });
    assert_eq!(lines_of(&out)[27..], numbered_lines(9, 10)[..]);
    d.terminate();
}

#[test]
fn wrong_rewinds_get_their_status_and_never_echo_the_body() {
    let dir = TempDir::new("http-rewind-errors");
    let input = dir.path().join("in.log");
    std::fs::write(&input, "one\ntwo\n").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let trains = format!(
        "[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"tail\"\npaths = [\"{}\"]\nstart_at = \"beginning\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"raw\"\n",
        input.display()
    );
    let d = Daemon::start(
        dir.path(),
        &format!("token_file = \"{}\"", token.display()),
        &trains,
    );
    let out = dir.path().join("out.log");
    wait_for("the file", || lines_of(&out).len() == 2);
    let src = json_path(&input);
    let auth = "Authorization: Bearer s3cret\r\n";
    let rewind = |cog: &str, auth: &str, body: &str| {
        let (code, _, text) = d.send(&format!(
            "POST /trains/t/cogs/{cog}/rewind HTTP/1.1\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        (code, text)
    };
    let good = format!("{{\"source\": {src}, \"offset\": 0}}");
    assert_eq!(rewind("tail", "", &good).0, 401);
    assert_eq!(
        rewind("tail", "Authorization: Bearer s3cre\r\n", &good).0,
        401
    );
    let (code, body) = rewind("stdin", auth, "{\"source\": \"-\", \"offset\": 0}");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("stdin cannot read its input again"), "{body}");
    assert_eq!(rewind("file_out", auth, &good).0, 409);
    assert_eq!(rewind("nope", auth, &good).0, 404);
    let (code, _, _) = d.send(&format!(
        "POST /trains/nope/cogs/tail/rewind HTTP/1.1\r\n{auth}Content-Length: {}\r\n\r\n{good}",
        good.len()
    ));
    assert_eq!(code, 404);
    let (code, body) = rewind(
        "tail",
        auth,
        "{\"source\": \"/no/such/file\", \"offset\": 0}",
    );
    assert_eq!(code, 404, "{body}");
    assert!(!body.contains("/no/such"), "{body}");
    for bad in [
        "{\"source\": \"<script>alert(1)</script>\", \"offset\": -1}",
        "<script>alert(1)</script>",
        "{\"source\": \"x\", \"<script>\": 1}",
        "{\"source\": \"x\"}",
        "",
    ] {
        let (code, body) = rewind("tail", auth, bad);
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(!body.contains("script"), "{body}");
    }
    let (code, body) = rewind(
        "tail",
        auth,
        &format!("{{\"source\": {src}, \"offset\": 2}}"),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not at the start of a line"), "{body}");
    let (code, body) = rewind("tail", auth, &format!("{{\"source\": {src}, \"line\": 9}}"));
    assert_eq!(code, 400, "{body}");
    let time = format!("{{\"source\": {src}, \"time\": \"2026-12-05T07:00:00Z\"}}");
    let (code, body) = rewind("tail", auth, &time);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("cannot seek by time"), "{body}");
    let (code, _, _) = d.send("GET /trains/t/cogs/tail/rewind HTTP/1.1\r\n\r\n");
    assert_eq!(code, 405);
    // The refusals did not disturb the reading.
    assert_eq!(rewind("tail", auth, &good).0, 200);
    wait_for("the file twice", || lines_of(&out).len() == 4);
    assert!(d.log().contains("missing or wrong token"));
    d.terminate();
}

#[test]
fn file_in_reads_a_file_again_after_it_was_done() {
    let dir = TempDir::new("http-rewind-file-in");
    let input = dir.path().join("in.log");
    std::fs::write(&input, "a\nb\nc\nd\n").unwrap();
    // Train `t` reads the file once and is exhausted; the stdin train keeps the run going.
    let trains = format!(
        "[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"file_in\"\npaths = [\"{}\"]\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"raw\"\n\
         [[train]]\nname = \"other\"\n\
         [[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"other.log\"\nformat = \"raw\"\n",
        input.display()
    );
    let mut d = Daemon::start(dir.path(), "", &trains);
    let out = dir.path().join("out.log");
    wait_for("the file", || lines_of(&out).len() == 4);
    let src = json_path(&input);
    let (code, body) = d.rewind("file_in", &format!("{{\"source\": {src}, \"line\": 3}}"));
    assert_eq!(code, 200, "{body}");
    wait_for("lines c and d again", || lines_of(&out).len() == 6);
    assert_eq!(lines_of(&out), ["a", "b", "c", "d", "c", "d"]);
    // A file it does not read.
    let (code, _) = d.rewind("file_in", "{\"source\": \"/etc/hostname\", \"offset\": 0}");
    assert_eq!(code, 404);
    // Both supplies end: the run ends well.
    drop(d.stdin.take());
    let st = wait_exit(&mut d.child);
    assert!(st.success(), "exit {st:?}; log:\n{}", d.log());
}

#[test]
fn spool_reads_a_file_in_flight_again_and_keeps_it_until_all_is_acknowledged() {
    let dir = TempDir::new("http-rewind-spool");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let file = spool.join("a.log");
    std::fs::write(&file, "one\ntwo\nthree\n").unwrap();
    // Nothing listens at the socket yet: the drain holds every line unacknowledged.
    let sock = dir.path().join("peer.sock");
    let trains = format!(
        "[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"spool\"\ndir = \"spool\"\ndone = \"delete\"\n\
         [[train.cog]]\ntype = \"unix_out\"\npath = \"{}\"\nmode = \"stream\"\nformat = \"raw\"\n\
         reconnect_refused = \"50ms\"\n",
        sock.display()
    );
    let d = Daemon::start(dir.path(), "", &trains);
    wait_for("the file read and held", || {
        let c = d.cog("spool");
        c["sources"][0]["read"] == 14
    });
    let spooled = d.cog("spool");
    assert_eq!(spooled["sources"][0]["acknowledged"], 0, "{spooled}");
    let src = json_path(&file);
    let (code, body) = d.rewind("spool", &format!("{{\"source\": {src}, \"line\": 2}}"));
    assert_eq!(code, 200, "{body}");
    wait_for("the lines read again held in the drain", || {
        let c = d.cog("unix_out");
        c["buffers"][0]["fill"] == 14 + 10
    });
    // The peer comes: it gets the file, then lines 2 and 3 again; then the file goes.
    let listener = UnixListener::bind(&sock).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"two\nthree\n") || got.len() < 24 {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the drain closed: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        "one\ntwo\nthree\ntwo\nthree\n"
    );
    wait_for("the file deleted once all is acknowledged", || {
        !file.exists()
    });
    // Gone: nothing to rewind.
    let (code, _) = d.rewind("spool", &format!("{{\"source\": {src}, \"offset\": 0}}"));
    assert_eq!(code, 404);
    d.terminate();
}

#[test]
fn a_fed_train_has_no_supply_to_pause_and_shows_its_inbox() {
    let dir = TempDir::new("http-fed-train");
    let trains = "[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"tee\"\ntrain = \"copy\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"raw\"\n\
         [[train]]\nname = \"copy\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"copy.log\"\nformat = \"raw\"\n";
    let mut d = Daemon::start(dir.path(), "", trains);
    let (code, body) = d.post("/trains/copy/pause", "");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("no supply of its own"), "{body}");
    let st = d.status();
    let copy = st["trains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "copy")
        .unwrap();
    assert_eq!(copy["state"], "running", "{st}");
    let inbox = copy["cogs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "inbox")
        .unwrap();
    assert_eq!(inbox["buffers"][0]["name"], "queued", "{st}");
    assert_eq!(inbox["buffers"][0]["fill"], 0, "{st}");
    assert!(inbox["buffers"][0]["limit"].is_null(), "{st}");
    let (code, _) = d.post(
        "/trains/copy/cogs/inbox/rewind",
        "{\"source\": \"x\", \"offset\": 0}",
    );
    assert_eq!(code, 409);
    d.stdin.as_mut().unwrap().write_all(b"one\n").unwrap();
    drop(d.stdin.take());
    let st = wait_exit(&mut d.child);
    assert!(st.success(), "exit {st:?}; log:\n{}", d.log());
    assert_eq!(lines_of(&dir.path().join("copy.log")), ["one"]);
}

#[test]
fn stateful_cogs_show_the_keys_they_hold() {
    let dir = TempDir::new("http-keys");
    let trains = "[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"dedup\"\nfields = [\"message\"]\nmax_keys = 1000\n\
         [[train.cog]]\ntype = \"throttle\"\nfields = [\"message\"]\nrate = 1000.0\nburst = 10\n\
         [[train.cog]]\ntype = \"merge\"\nkey = [\"message\"]\nidle = \"1h\"\nmax_keys = 50\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"raw\"\n";
    let mut d = Daemon::start(dir.path(), "", trains);
    d.stdin
        .as_mut()
        .unwrap()
        .write_all(b"a\nb\nc\na\n")
        .unwrap();
    wait_for("the lines counted", || d.cog("merge")["in"] == 3);
    for (ty, keys, max) in [
        ("dedup", 3, 1000),
        ("throttle", 3, 100_000),
        ("merge", 3, 50),
    ] {
        let c = d.cog(ty);
        assert_eq!(
            (&c["keys"], &c["max_keys"]),
            (&keys.into(), &max.into()),
            "{c}"
        );
    }
    let (_, _, metrics) = d.send("GET /metrics HTTP/1.1\r\n\r\n");
    assert!(
        metrics.contains("deadbeat_cog_keys{train=\"t\",cog=\"merge#4\",type=\"merge\"} 3\n"),
        "{metrics}"
    );
    // Merge emits its groups at the end; the run ends well.
    drop(d.stdin.take());
    let st = wait_exit(&mut d.child);
    assert!(st.success(), "exit {st:?}; log:\n{}", d.log());
}

/// Whether process `pid` holds `path` open.
fn holds_open(pid: u32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == path))
}

#[test]
fn tail_rewinds_a_file_it_closed_while_idle() {
    let dir = TempDir::new("http-rewind-idle");
    let input = dir.path().join("in.log");
    std::fs::write(&input, "a\nb\nc\n").unwrap();
    let trains = format!(
        "[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"tail\"\npaths = [\"{}\"]\nstart_at = \"beginning\"\n\
         poll_interval = \"50ms\"\nidle_close = \"50ms\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nformat = \"raw\"\n",
        input.display()
    );
    let d = Daemon::start(dir.path(), "", &trains);
    let out = dir.path().join("out.log");
    wait_for("the file", || lines_of(&out).len() == 3);
    let pid = d.child.id();
    let input = std::fs::canonicalize(&input).unwrap();
    wait_for("the idle file closed", || !holds_open(pid, &input));
    let (code, body) = d.rewind(
        "tail",
        &format!("{{\"source\": {}, \"line\": 2}}", json_path(&input)),
    );
    assert_eq!(code, 200, "{body}");
    wait_for("b and c again", || lines_of(&out).len() == 5);
    assert_eq!(lines_of(&out), ["a", "b", "c", "b", "c"]);
    d.terminate();
}
