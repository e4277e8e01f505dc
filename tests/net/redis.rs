//! Redis Streams end to end against a real `redis-server` started by each test on a free
//! loopback port in a temp dir: `redis_out` → Redis → `redis_in`, a worker killed with
//! SIGKILL and its entries claimed by another, bad entries, and Redis restarted mid-stream.
//! Each test skips, saying why, when `redis-server` is not installed.

use crate::support::{free_port, line_count, wait_until};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");
/// Longest any condition is waited for; 200,000 entries take a few seconds in a debug build.
const PATIENCE: Duration = Duration::from_secs(120);
const TAIL: &str = " the quick brown fox";

fn line(buf: &mut String, i: usize) {
    let _ = writeln!(buf, "line {i:07}{TAIL}");
}

fn numbered(range: std::ops::Range<usize>) -> String {
    let mut s = String::with_capacity(range.len() * 30);
    for i in range {
        line(&mut s, i);
    }
    s
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_until(what, PATIENCE, cond);
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a child this test started.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

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

/// The `redis-server` binary, or why the test skips.
fn redis_server() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
    }
    found
}

/// A redis-server of the test's own, stopped when dropped.
struct Redis {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    aof: bool,
    /// `requirepass`: the test's client authenticates first.
    password: Option<String>,
    child: Option<Child>,
}

impl Redis {
    fn start(bin: PathBuf, dir: &Path, aof: bool) -> Redis {
        Redis::start_with(bin, dir, aof, None)
    }

    fn start_with(bin: PathBuf, dir: &Path, aof: bool, password: Option<&str>) -> Redis {
        let mut r = Redis {
            bin,
            dir: dir.join("redis"),
            port: free_port(),
            aof,
            password: password.map(str::to_string),
            child: None,
        };
        std::fs::create_dir_all(&r.dir).unwrap();
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", self.dir.to_str().unwrap(), "--save", ""])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .args(
                self.password
                    .iter()
                    .flat_map(|p| ["--requirepass".to_string(), p.clone()]),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for("redis-server to answer", || {
            matches!(self.try_cmd(&["PING"]), Ok(OwnedFrame::SimpleString(_)))
        });
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server gracefully (SIGTERM: with AOF on, it writes everything first).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            reap(&mut c, "redis-server");
        }
    }

    fn try_cmd(&self, args: &[&str]) -> std::io::Result<OwnedFrame> {
        let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.try_cmd_raw(&raw)
    }

    fn try_cmd_raw(&self, args: &[&[u8]]) -> std::io::Result<OwnedFrame> {
        let mut s = TcpStream::connect(self.address())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = Vec::new();
        let mut skip = 0;
        let encode = |buf: &mut Vec<u8>, args: &[&[u8]]| {
            buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                buf.extend_from_slice(a);
                buf.extend_from_slice(b"\r\n");
            }
        };
        if let Some(p) = &self.password {
            encode(&mut buf, &[b"AUTH", p.as_bytes()]);
            skip = 1;
        }
        encode(&mut buf, args);
        s.write_all(&buf)?;
        let mut got = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            if let Some((f, n)) = decode(&got).map_err(std::io::Error::other)? {
                if skip > 0 {
                    skip -= 1;
                    got.drain(..n);
                    continue;
                }
                return Ok(f);
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            got.extend_from_slice(&chunk[..n]);
        }
    }

    fn cmd(&self, args: &[&str]) -> OwnedFrame {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    fn int(&self, args: &[&str]) -> i64 {
        match self.cmd(args) {
            OwnedFrame::Integer(n) => n,
            other => panic!("redis {args:?}: {other:?}"),
        }
    }

    /// Entries pending in `group` of `stream`, per consumer.
    fn pending(&self, stream: &str, group: &str) -> Vec<(String, i64)> {
        let OwnedFrame::Array(summary) = self.cmd(&["XPENDING", stream, group]) else {
            panic!("XPENDING");
        };
        let Some(OwnedFrame::Array(per)) = summary.get(3) else {
            return Vec::new();
        };
        per.iter()
            .filter_map(|c| match c {
                OwnedFrame::Array(p) => match (&p[0], &p[1]) {
                    (OwnedFrame::BulkString(n), OwnedFrame::BulkString(k)) => Some((
                        String::from_utf8_lossy(n).into_owned(),
                        String::from_utf8_lossy(k).parse().unwrap_or(0),
                    )),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A deadbeat process whose log goes to a file.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, name: &str, config: &str, stdin: Stdio) -> Daemon {
        let conf = dir.join(format!("{name}.toml"));
        std::fs::write(&conf, config).unwrap();
        let log = dir.join(format!("{name}.err"));
        let err = File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["run", conf.to_str().unwrap()])
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(self) -> String {
        signal(self.child.id(), libc::SIGTERM);
        self.wait()
    }

    fn wait(mut self) -> String {
        let st = reap(&mut self.child, "deadbeat");
        let log = self.log();
        assert!(st.success(), "deadbeat failed: {st}\n{log}");
        log
    }

    fn kill9(mut self) {
        signal(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn writer_config(input: &str, address: &str, stream: &str) -> String {
    format!(
        "[[train]]\nname = \"tx\"\n\
         {input}\
         [[train.cog]]\ntype = \"redis_out\"\naddress = \"{address}\"\nstream = \"{stream}\"\n\
         reconnect_initial = \"50ms\"\nreconnect_max = \"500ms\"\nreconnect_refused = \"50ms\"\n"
    )
}

/// Writes lines `0..n` to `in.log` in `dir` and a writer adds them to the stream `logs`;
/// the input's path and the writer's log, once it has exited.
fn write_numbered(dir: &Path, redis: &Redis, n: usize) -> (PathBuf, String) {
    let input = dir.join("in.log");
    std::fs::write(&input, numbered(0..n)).unwrap();
    let w = Daemon::start(
        dir,
        "writer",
        &writer_config(&file_in(&input), &redis.address(), "logs"),
        Stdio::null(),
    );
    (input, w.wait())
}

fn file_in(p: &Path) -> String {
    format!(
        "[[train.cog]]\ntype = \"file_in\"\npaths = [{:?}]\n",
        p.to_str().unwrap()
    )
}

fn reader_config(address: &str, stream: &str, consumer: &str, extra: &str, out: &Path) -> String {
    format!(
        "[[train]]\nname = \"rx\"\n\
         [[train.cog]]\ntype = \"redis_in\"\naddress = \"{address}\"\nstream = \"{stream}\"\n\
         group = \"workers\"\nconsumer = \"{consumer}\"\nblock = \"200ms\"\n\
         reconnect_initial = \"50ms\"\nreconnect_max = \"500ms\"\nreconnect_refused = \"50ms\"\n{extra}\
         [[train.cog]]\ntype = \"file_out\"\npath = {out:?}\n",
        out = out.to_str().unwrap()
    )
}

/// Every line `0..n` of the outputs: (duplicates, lines out of order in the first output).
fn arrival(outs: &[&Path], n: usize) -> (usize, usize) {
    let mut seen = vec![false; n];
    let (mut duplicates, mut reordered) = (0, 0);
    for (k, out) in outs.iter().enumerate() {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        let mut next = 0;
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
            if k == 0 && id != next {
                reordered += 1;
            }
            next = id + 1;
        }
    }
    let missing: Vec<usize> = (0..n).filter(|&i| !seen[i]).collect();
    assert!(
        missing.is_empty(),
        "{} lines lost, the first ones: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    (duplicates, reordered)
}

#[test]
fn redis_round_trip_keeps_every_line_once_in_order() {
    let Some(bin) = redis_server() else { return };
    let dir = TempDir::new("redis-rt");
    let redis = Redis::start(bin, dir.path(), false);
    let n = 200_000;
    let (input, wlog) = write_numbered(dir.path(), &redis, n);
    assert!(
        wlog.contains("in=200000 out=0 dropped=0 errors=0"),
        "{wlog}"
    );
    assert_eq!(redis.int(&["XLEN", "logs"]), n as i64);

    let out = dir.path().join("out.log");
    let r = Daemon::start(
        dir.path(),
        "reader",
        &reader_config(&redis.address(), "logs", "r1", "", &out),
        Stdio::null(),
    );
    wait_for("every entry written", || line_count(&out) >= n);
    // Acknowledgements follow the writes: nothing stays pending.
    wait_for("every entry acknowledged", || {
        redis.pending("logs", "workers").is_empty()
    });
    let rlog = r.stop();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
    assert!(
        rlog.contains("emitted=200000 acknowledged=200000"),
        "{rlog}"
    );
}

#[test]
fn redis_worker_killed_mid_stream_has_its_entries_claimed() {
    let Some(bin) = redis_server() else { return };
    let dir = TempDir::new("redis-kill");
    let redis = Redis::start(bin, dir.path(), false);
    let n = 50_000;
    write_numbered(dir.path(), &redis, n);

    // Worker a acknowledges only after a sync every 30 s: it reads up to max_pending
    // entries, writes them, and holds them unacknowledged when it is killed.
    let out_a = dir.path().join("a.log");
    let a_extra = "max_pending = 3000\ncount = 500\nclaim_idle = \"0s\"\n";
    let a_conf = reader_config(&redis.address(), "logs", "a", a_extra, &out_a)
        + "fsync = \"interval:30s\"\n";
    let a = Daemon::start(dir.path(), "a", &a_conf, Stdio::null());
    wait_for("worker a to write its entries", || {
        line_count(&out_a) >= 3000
    });
    a.kill9();
    let held = redis
        .pending("logs", "workers")
        .into_iter()
        .find(|(c, _)| c == "a")
        .map_or(0, |(_, k)| k);
    assert_eq!(held, 3000, "worker a holds max_pending entries");

    let out_b = dir.path().join("b.log");
    let b_extra = "claim_idle = \"1s\"\nclaim_interval = \"200ms\"\n";
    let b = Daemon::start(
        dir.path(),
        "b",
        &reader_config(&redis.address(), "logs", "b", b_extra, &out_b),
        Stdio::null(),
    );
    wait_for("worker b to claim and write the rest", || {
        line_count(&out_a) + line_count(&out_b) >= n + held as usize
    });
    wait_for("nothing pending", || {
        redis.pending("logs", "workers").is_empty()
    });
    let blog = b.stop();
    let (duplicates, _) = arrival(&[&out_a, &out_b], n);
    assert_eq!(
        duplicates, held as usize,
        "duplicates are exactly what the dead worker wrote and never acknowledged"
    );
    assert!(blog.contains("claimed entries left pending"), "{blog}");
    assert!(blog.contains(&format!("claimed={held}")), "{blog}");
}

#[test]
fn redis_bad_entries_are_counted_and_routed() {
    let Some(bin) = redis_server() else { return };
    let dir = TempDir::new("redis-bad");
    let redis = Redis::start(bin, dir.path(), false);
    let big = "x".repeat(4 << 20);
    redis.cmd(&["XADD", "in", "*", "message", "good 1"]);
    redis.cmd(&["XADD", "in", "*", "other", "no message field"]);
    redis
        .try_cmd_raw(&[
            b"XADD",
            b"in",
            b"*",
            b"message",
            b"good 2",
            b"host",
            b"\xff\xfe",
        ])
        .unwrap();
    redis
        .try_cmd_raw(&[b"XADD", b"in", b"*", b"message", b"raw \xff bytes"])
        .unwrap();
    redis.cmd(&["XADD", "in", "*", "message", &big]);
    redis.cmd(&["SET", "notastream", "a string"]);

    let good = dir.path().join("good.log");
    let rejects = dir.path().join("rejects.json");
    let dead = dir.path().join("dead.json");
    let input = dir.path().join("lines.log");
    std::fs::write(&input, "one\ntwo\n").unwrap();
    let conf = format!(
        "[[train]]\nname = \"rx\"\n\
         [[train.cog]]\ntype = \"redis_in\"\naddress = \"{a}\"\nstream = \"in\"\ngroup = \"g\"\n\
         block = \"100ms\"\non_error = \"train:rejects\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = {good:?}\n\
         [[train]]\nname = \"wrongtype\"\n\
         [[train.cog]]\ntype = \"redis_in\"\naddress = \"{a}\"\nstream = \"notastream\"\ngroup = \"g\"\n\
         reconnect_max = \"200ms\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = {good2:?}\n\
         [[train]]\nname = \"tx\"\n\
         [[train.cog]]\ntype = \"file_in\"\npaths = [{input:?}]\n\
         [[train.cog]]\ntype = \"redis_out\"\naddress = \"{a}\"\nstream = \"notastream\"\n\
         on_error = \"train:dead\"\n\
         [[train]]\nname = \"rejects\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = {rejects:?}\nformat = \"json\"\n\
         [[train]]\nname = \"dead\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = {dead:?}\nformat = \"json\"\n",
        a = redis.address(),
        good = good.to_str().unwrap(),
        good2 = dir.path().join("good2.log").to_str().unwrap(),
        input = input.to_str().unwrap(),
        rejects = rejects.to_str().unwrap(),
        dead = dead.to_str().unwrap(),
    );
    let d = Daemon::start(dir.path(), "bad", &conf, Stdio::null());
    wait_for("the good entries", || line_count(&good) >= 3);
    wait_for("the rejected entries", || line_count(&rejects) >= 2);
    wait_for("the refused records", || line_count(&dead) >= 2);
    wait_for("the stream acknowledged", || {
        redis.pending("in", "g").is_empty()
    });
    wait_for("WRONGTYPE tried again", || {
        d.log().matches("WRONGTYPE").count() >= 2
    });
    let log = d.stop();
    let mut expected = b"good 1\nraw \xff bytes\n".to_vec();
    expected.extend_from_slice(big.as_bytes());
    expected.push(b'\n');
    assert!(std::fs::read(&good).unwrap() == expected, "{log}");
    let rej = std::fs::read_to_string(&rejects).unwrap();
    assert!(
        rej.contains(r#"the entry has no field \"message\""#),
        "{rej}"
    );
    assert!(rej.contains(r#"field \"host\" is not UTF-8"#), "{rej}");
    let dead_text = std::fs::read_to_string(&dead).unwrap();
    assert!(dead_text.contains("WRONGTYPE"), "{dead_text}");
    assert!(
        dead_text.contains("\"stream\":\"notastream\""),
        "{dead_text}"
    );
    assert!(dead_text.contains("\"message\":\"one\""), "{dead_text}");
    assert!(
        log.contains("train=rx cog=redis_in#1 in=0 out=3 dropped=0 errors=2"),
        "{log}"
    );
    assert!(
        log.contains("train=tx cog=redis_out#2 in=2 out=0 dropped=0 errors=2"),
        "{log}"
    );
}

#[test]
fn redis_restarted_mid_stream_loses_nothing() {
    let Some(bin) = redis_server() else { return };
    let dir = TempDir::new("redis-restart");
    let mut redis = Redis::start(bin, dir.path(), true);
    let n = 40_000;
    let stdin_in = "[[train.cog]]\ntype = \"stdin\"\n";
    let mut w = Daemon::start(
        dir.path(),
        "writer",
        &writer_config(stdin_in, &redis.address(), "logs"),
        Stdio::piped(),
    );
    let out = dir.path().join("out.log");
    let r = Daemon::start(
        dir.path(),
        "reader",
        &reader_config(&redis.address(), "logs", "r1", "", &out),
        Stdio::null(),
    );
    let mut stdin = w.child.stdin.take().unwrap();
    stdin.write_all(numbered(0..n / 2).as_bytes()).unwrap();
    wait_for("the first half through", || line_count(&out) >= n / 2);
    redis.stop();
    // Written while Redis is down: the writer holds it.
    stdin.write_all(numbered(n / 2..n).as_bytes()).unwrap();
    drop(stdin);
    redis.spawn();
    let wlog = w.wait();
    wait_for("the second half through", || line_count(&out) >= n);
    wait_for("nothing pending", || {
        redis.pending("logs", "workers").is_empty()
    });
    let rlog = r.stop();
    let (duplicates, reordered) = arrival(&[&out], n);
    assert_eq!(reordered, 0, "{rlog}");
    assert!(duplicates <= n / 2, "{duplicates} duplicates");
    assert!(wlog.contains("connected"), "{wlog}");
    assert!(rlog.contains("connection lost"), "{rlog}");
}

#[test]
fn redis_three_workers_share_a_stream_exactly_once() {
    let Some(bin) = redis_server() else { return };
    let dir = TempDir::new("redis-scale");
    let redis = Redis::start(bin, dir.path(), false);
    let n = 300_000;
    write_numbered(dir.path(), &redis, n);
    let outs: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("w{i}.log")))
        .collect();
    let workers: Vec<Daemon> = outs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            let conf = reader_config(&redis.address(), "logs", &format!("w{i}"), "", out);
            Daemon::start(dir.path(), &format!("w{i}"), &conf, Stdio::null())
        })
        .collect();
    wait_for("every entry written", || {
        outs.iter().map(|o| line_count(o)).sum::<usize>() >= n
    });
    wait_for("nothing pending", || {
        redis.pending("logs", "workers").is_empty()
    });
    for w in workers {
        w.stop();
    }
    let paths: Vec<&Path> = outs.iter().map(PathBuf::as_path).collect();
    let (duplicates, _) = arrival(&paths, n);
    assert_eq!(duplicates, 0);
    let shares: Vec<usize> = outs.iter().map(|o| line_count(o)).collect();
    assert_eq!(shares.iter().sum::<usize>(), n, "{shares:?}");
    assert!(
        shares.iter().all(|&s| s > 0),
        "every worker took a share: {shares:?}"
    );
}

#[test]
fn redis_entries_delivered_too_often_go_to_the_dead_letter_train() {
    let Some(bin) = redis_server() else { return };
    let dir = TempDir::new("redis-dead");
    let redis = Redis::start(bin, dir.path(), false);
    for i in 0..10 {
        redis.cmd(&["XADD", "logs", "*", "message", &format!("poison {i}")]);
    }
    // Worker a takes the ten entries and dies before acknowledging them.
    let out_a = dir.path().join("a.log");
    let a_conf = reader_config(
        &redis.address(),
        "logs",
        "a",
        "claim_idle = \"0s\"\n",
        &out_a,
    ) + "fsync = \"interval:30s\"\n";
    let a = Daemon::start(dir.path(), "a", &a_conf, Stdio::null());
    wait_for("worker a to write", || line_count(&out_a) >= 10);
    a.kill9();

    let out_b = dir.path().join("b.log");
    let dead = dir.path().join("dead.json");
    let b_extra = "claim_idle = \"300ms\"\nclaim_interval = \"100ms\"\nmax_deliveries = 1\n\
                   on_error = \"train:dead\"\n";
    let b_conf = reader_config(&redis.address(), "logs", "b", b_extra, &out_b)
        + &format!(
            "[[train]]\nname = \"dead\"\n[[train.cog]]\ntype = \"file_out\"\npath = {:?}\nformat = \"json\"\n",
            dead.to_str().unwrap()
        );
    let b = Daemon::start(dir.path(), "b", &b_conf, Stdio::null());
    wait_for("the dead letters", || line_count(&dead) >= 10);
    wait_for("nothing pending", || {
        redis.pending("logs", "workers").is_empty()
    });
    let log = b.stop();
    assert_eq!(
        line_count(&out_b),
        0,
        "not claimed as ordinary entries: {log}"
    );
    let text = std::fs::read_to_string(&dead).unwrap();
    assert_eq!(
        text.matches("delivered 1 times (max_deliveries = 1)")
            .count(),
        10,
        "{text}"
    );
    assert!(log.contains("dead_lettered=10"), "{log}");
}

#[test]
fn redis_fields_templates_trimming_auth_and_databases() {
    let Some(bin) = redis_server() else { return };
    let dir = TempDir::new("redis-fields");
    let redis = Redis::start_with(bin, dir.path(), false, Some("s3cret"));
    let input = dir.path().join("in.json");
    let mut text = String::new();
    for i in 0..1000 {
        let _ = writeln!(text, r#"{{"host":"a","n":{i},"msg":"x {i}"}}"#);
    }
    text.push_str(r#"{"host":"b","n":7,"msg":"only b"}"#);
    text.push('\n');
    std::fs::write(&input, text).unwrap();
    let conf = format!(
        "[[train]]\nname = \"tx\"\n{input}\
         [[train.cog]]\ntype = \"json_parse\"\n\
         [[train.cog]]\ntype = \"remove\"\nfields = [\"message\", \"path\", \"offset\"]\n\
         [[train.cog]]\ntype = \"redis_out\"\naddress = \"redis://:s3cret@{a}/2\"\n\
         stream = \"logs:{{host}}\"\nentry = \"fields\"\nmaxlen = 100\n",
        input = file_in(&input),
        a = redis.address(),
    );
    let log = Daemon::start(dir.path(), "writer", &conf, Stdio::null()).wait();
    assert!(log.contains("in=1001 out=0 dropped=0 errors=0"), "{log}");
    // Nothing in database 0; trimmed (approximately) in database 2.
    assert_eq!(redis.int(&["EXISTS", "logs:a"]), 0);
    let OwnedFrame::Array(r) = redis.cmd(&["EVAL", "redis.call('SELECT', 2); return {redis.call('XLEN', 'logs:a'), redis.call('XLEN', 'logs:b')}", "0"]) else {
        panic!("EVAL");
    };
    let (OwnedFrame::Integer(a), OwnedFrame::Integer(b)) = (&r[0], &r[1]) else {
        panic!("{r:?}");
    };
    assert!(
        (100..1000).contains(a),
        "logs:a holds {a} entries, trimmed to about 100"
    );
    assert_eq!(*b, 1);

    // Written with the password and the database in a redis:// URL; read back with them
    // as keys, no field required.
    let out = dir.path().join("b.json");
    let extra = "password = \"s3cret\"\ndb = 2\nfield = \"\"\n";
    let rconf = reader_config(&redis.address(), "logs:b", "r", extra, &out) + "format = \"json\"\n";
    let r = Daemon::start(dir.path(), "reader", &rconf, Stdio::null());
    wait_for("the entry of b", || line_count(&out) == 1);
    r.stop();
    let got = std::fs::read_to_string(&out).unwrap();
    assert!(
        got.starts_with(r#"{"host":"b","n":"7","msg":"only b","_redis_id":""#),
        "{got}"
    );
}
