//! `dns_reverse` in an escapement built by hand, against a real DNS server (dnsmasq,
//! skipped with a reason when absent) or a responder of the test's own.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use deadbeat::Escapement;
use deadbeat::cogs::enrich::dns_reverse::{
    DnsReverse, DnsReverseSettings, DnsStats, Reply, parse_reply, reverse_name, write_query,
};
use deadbeat::kit::on_error;
use deadbeat::prelude::*;
use deadbeat::record::Value;

use crate::engine::{Log, Probe, TempDir, opts, run};

/// Longest any condition is waited for.
const PATIENCE: Duration = Duration::from_secs(10);

/// The dnsmasq binary, or `None` (the caller skips) with the reason printed.
pub(crate) fn dnsmasq_bin() -> Option<PathBuf> {
    for p in ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"] {
        if Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    eprintln!("skipped: dnsmasq is not installed (apt-get install dnsmasq)");
    None
}

/// A dnsmasq on 127.0.0.1, killed when dropped; its queries are logged to `log`.
pub(crate) struct Dnsmasq {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dnsmasq {
    /// Starts dnsmasq in `dir` with PTR records from `hosts` (`ADDRESS NAME` lines),
    /// `--bogus-priv` (private addresses without a record answer NXDOMAIN) and `extra`
    /// arguments; waits until it answers for `probe` (an address of `hosts`).
    pub(crate) fn start(
        bin: &Path,
        dir: &Path,
        hosts: &str,
        probe: &str,
        extra: &[String],
    ) -> Dnsmasq {
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        let log = dir.join("dnsmasq.log");
        for _ in 0..5 {
            let port = free_udp_port();
            let child = Command::new(bin)
                .args([
                    "--no-daemon".to_string(),
                    format!("--port={port}"),
                    "--listen-address=127.0.0.1".into(),
                    "--bind-interfaces".into(),
                    "--no-resolv".into(),
                    "--no-hosts".into(),
                    "--conf-file=/dev/null".into(),
                    "--bogus-priv".into(),
                    "--log-queries".into(),
                    format!("--log-facility={}", log.display()),
                    format!("--addn-hosts={}", hosts_file.display()),
                ])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut d = Dnsmasq {
                child,
                port,
                log: log.clone(),
            };
            if d.wait_ready(probe) {
                return d;
            }
            // The port was taken meanwhile: try another.
            let _ = d.child.kill();
        }
        panic!("dnsmasq did not start");
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Asks for `probe` until dnsmasq answers with a name (bounded), or it exited.
    fn wait_ready(&mut self, probe: &str) -> bool {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let ip: IpAddr = probe.parse().unwrap();
        let mut qname = Vec::new();
        reverse_name(ip, &mut qname);
        let deadline = Instant::now() + PATIENCE;
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let mut q = Vec::new();
            write_query(4242, &qname, &mut q);
            let _ = sock.send_to(&q, ("127.0.0.1", self.port));
            if let Ok(n) = sock.recv(&mut buf)
                && let Ok(Reply::Name(..)) = parse_reply(&buf[..n], 4242, &qname)
            {
                return true;
            }
        }
        false
    }

    /// How many PTR queries for `ip` dnsmasq logged.
    pub(crate) fn queries_for(&self, ip: &str) -> usize {
        let mut qname = Vec::new();
        reverse_name(ip.parse().unwrap(), &mut qname);
        let text = wire_text(&qname);
        let needle = format!("query[PTR] {text} ");
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// Every PTR query dnsmasq logged.
    pub(crate) fn all_queries(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("query[PTR]"))
            .count()
    }
}

/// A wire-form name as dotted text.
fn wire_text(w: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut at = 0;
    while w[at] != 0 {
        let n = usize::from(w[at]);
        parts.push(String::from_utf8_lossy(&w[at + 1..at + 1 + n]).into_owned());
        at += 1 + n;
    }
    parts.join(".")
}

pub(crate) fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The reverse zone of an IPv4 address's /24, for dnsmasq's `--server=/ZONE/...`.
pub(crate) fn zone24(ip: &str) -> String {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let o = ip.octets();
    format!("{}.{}.{}.in-addr.arpa", o[2], o[1], o[0])
}

/// A datum of the test's own.
#[derive(Debug, Clone)]
struct Hit {
    id: EventId,
    addr: Value,
    host: Option<String>,
    error: Option<String>,
}

fn hit(id: EventId, addr: &str) -> Hit {
    Hit {
        id,
        addr: if addr == "null" {
            Value::Null
        } else {
            Value::from(addr)
        },
        host: None,
        error: None,
    }
}

fn cog(settings: &DnsReverseSettings, state: Option<PathBuf>) -> (DnsReverse<Hit>, Rc<DnsStats>) {
    let on_error = on_error::for_datum(
        &settings.on_error.on_error,
        |_| None,
        Getter::new(|h: &Hit| Some(&h.id)),
        Setter::new(|h: &mut Hit, why: String| h.error = Some(why)),
    )
    .unwrap();
    let c = DnsReverse::from_settings(
        settings,
        Getter::new(|h: &Hit| Some(&h.addr)),
        Setter::new(|h: &mut Hit, v: Value| h.host = v.as_str().map(str::to_string)),
        on_error,
        state,
    )
    .unwrap();
    let stats = c.stats();
    (c, stats)
}

/// A supply that emits `steps` (each a delay from the start and data), `chunk` data per
/// turn, honouring pause; exhausted after the last.
struct Script {
    steps: Vec<(Duration, Vec<Hit>)>,
    at: usize,
    pending: Vec<Hit>,
    chunk: usize,
    paused: bool,
    started: Option<Instant>,
    log: Log,
}

impl Script {
    fn new(steps: Vec<(Duration, Vec<Hit>)>, chunk: usize, log: &Log) -> Self {
        Script {
            steps,
            at: 0,
            pending: Vec::new(),
            chunk,
            paused: false,
            started: None,
            log: log.clone(),
        }
    }

    fn arm(&mut self, cx: &mut Ctx) {
        if let (Some(start), Some((after, _))) = (self.started, self.steps.get(self.at)) {
            cx.timer_at(start + *after, 1).unwrap();
        }
    }
}

impl Cog<Hit> for Script {
    fn name(&self) -> &str {
        "script"
    }
    fn is_supply(&self) -> bool {
        true
    }
    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.started = Some(cx.now());
        self.arm(cx);
        Ok(())
    }
    fn wake(&mut self, local: Local, _: Wake<'_>, out: &mut Out<Hit>, cx: &mut Ctx) {
        if local == 1 {
            let (_, data) = std::mem::take(&mut self.steps[self.at]);
            self.pending.extend(data);
            self.at += 1;
            self.arm(cx);
        }
        if !self.paused {
            let n = self.chunk.min(self.pending.len());
            for h in self.pending.drain(..n) {
                out.push(h);
            }
        }
        if !self.pending.is_empty() && !self.paused {
            cx.enqueue(0);
        }
        if self.pending.is_empty() && self.at == self.steps.len() {
            cx.exhausted();
        }
    }
    fn pause(&mut self, _: &mut Ctx) {
        self.log.push("script: pause");
        self.paused = true;
    }
    fn resume(&mut self, cx: &mut Ctx) {
        self.log.push("script: resume");
        self.paused = false;
        cx.enqueue(0);
    }
}

/// Runs `steps` through `dns` into a drain; returns what the drain got, in order.
fn run_through(
    dns: DnsReverse<Hit>,
    steps: Vec<(Duration, Vec<Hit>)>,
    chunk: usize,
    log: &Log,
) -> Vec<Hit> {
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let drain = Probe::new("drain", log).on_process(move |h: Hit, _, cx| {
        cx.event_done(h.id);
        g.borrow_mut().push(h);
    });
    let train = Train::new("main")
        .cog(Script::new(steps, chunk, log))
        .cog(dns)
        .cog(drain);
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(train).unwrap();
    run(&mut esc, log);
    got.take()
}

fn settings(servers: &[String]) -> DnsReverseSettings {
    DnsReverseSettings {
        servers: servers.to_vec(),
        timeout: Duration::from_millis(200),
        retries: 1,
        ..Default::default()
    }
}

fn host_lines(n: usize) -> String {
    (0..n)
        .map(|i| format!("10.20.{}.{} h{i}.test\n", i / 200, i % 200 + 1))
        .collect()
}

fn host_addr(i: usize) -> String {
    format!("10.20.{}.{}", i / 200, i % 200 + 1)
}

/// Hundreds of addresses, each twice, a silent zone, an NXDOMAIN, a value that is not an
/// address and a null: names right, order kept, each address asked once, the supply paused
/// at `max_in_flight`, the silent address given up after its retry.
#[test]
fn names_in_order_each_address_asked_once_and_failures_pass_unnamed() {
    let Some(bin) = dnsmasq_bin() else { return };
    let dir = TempDir::new("dns-order");
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let dnsmasq = Dnsmasq::start(
        &bin,
        dir.path(),
        &host_lines(300),
        "10.20.0.1",
        &[
            format!("--server=/{}/127.0.0.1#{silent_port}", zone24("10.88.0.3")),
            "--local-ttl=600".into(),
        ],
    );
    let mut input = Vec::new();
    let mut id = 1;
    let mut push = |input: &mut Vec<Hit>, a: &str| {
        input.push(hit(id, a));
        id += 1;
    };
    for i in 0..300 {
        push(&mut input, &host_addr(i));
        if i == 10 {
            push(&mut input, "10.88.0.3"); // never answered: the data behind it wait
            push(&mut input, "10.99.0.1"); // NXDOMAIN
            push(&mut input, "not-an-address");
            push(&mut input, "null");
        }
        if i >= 5 {
            push(&mut input, &host_addr(i - 5)); // in flight or cached
        }
    }
    push(&mut input, "10.99.0.1"); // NXDOMAIN again: cached
    let mut s = settings(&[dnsmasq.addr()]);
    s.max_in_flight = 64;
    let (dns, stats) = cog(&s, None);
    let log = Log::default();
    let got = run_through(dns, vec![(Duration::ZERO, input.clone())], 50, &log);

    let ids: Vec<EventId> = got.iter().map(|h| h.id).collect();
    let want: Vec<EventId> = input.iter().map(|h| h.id).collect();
    assert_eq!(ids, want, "in input order, none lost");
    for h in &got {
        let a = h.addr.as_str().unwrap_or("null").to_string();
        match a.as_str() {
            "10.88.0.3" | "10.99.0.1" | "null" => assert_eq!(h.host, None, "{h:?}"),
            "not-an-address" => {
                assert_eq!(h.host, None);
                assert!(
                    h.error.as_deref().unwrap_or("").contains("not an IP"),
                    "{h:?}"
                );
            }
            _ => {
                let oct: Vec<usize> = a.split('.').map(|x| x.parse().unwrap()).collect();
                let n = oct[2] * 200 + oct[3] - 1;
                assert_eq!(
                    h.host.as_deref(),
                    Some(format!("h{n}.test").as_str()),
                    "{h:?}"
                );
            }
        }
    }
    for i in [1, 7, 150, 299] {
        assert_eq!(dnsmasq.queries_for(&host_addr(i)), 1, "{}", host_addr(i));
    }
    assert_eq!(
        dnsmasq.queries_for(&host_addr(0)),
        2,
        "the probe at start, then once"
    );
    assert_eq!(dnsmasq.queries_for("10.99.0.1"), 1, "NXDOMAIN cached");
    assert_eq!(
        dnsmasq.queries_for("10.88.0.3"),
        2,
        "asked and retried once"
    );
    // 300 names + NXDOMAIN + the silent address twice (the probe of the start is extra).
    assert_eq!(stats.queries.get(), 303);
    assert_eq!(dnsmasq.all_queries(), 303 + 1);
    assert_eq!(stats.names.get(), 300);
    assert_eq!(stats.failures.get(), 2);
    assert_eq!(stats.timeouts.get(), 1);
    assert_eq!(stats.ignored.get(), 0);
    assert!(
        stats.joined.get() + stats.cache_hits.get() >= 296,
        "{stats:?}"
    );
    assert!(
        log.entries().iter().any(|e| e == "script: pause"),
        "the supply paused at max_in_flight"
    );
    drop(silent);
}

/// A name expires with its TTL (dnsmasq's --local-ttl=1) and is asked again; an NXDOMAIN
/// is cached for `negative_ttl` and not asked again meanwhile.
#[test]
fn answers_expire_with_their_ttl_and_failures_are_cached() {
    let Some(bin) = dnsmasq_bin() else { return };
    let dir = TempDir::new("dns-ttl");
    let dnsmasq = Dnsmasq::start(
        &bin,
        dir.path(),
        "10.30.0.1 one.test\n",
        "10.30.0.1",
        &["--local-ttl=1".into()],
    );
    let s = settings(&[dnsmasq.addr()]);
    let (dns, stats) = cog(&s, None);
    let log = Log::default();
    let at = Duration::from_millis;
    let got = run_through(
        dns,
        vec![
            (at(0), vec![hit(1, "10.30.0.1"), hit(2, "10.99.0.9")]),
            (at(300), vec![hit(3, "10.30.0.1"), hit(4, "10.99.0.9")]),
            (at(1400), vec![hit(5, "10.30.0.1"), hit(6, "10.99.0.9")]),
        ],
        10,
        &log,
    );
    let hosts: Vec<Option<&str>> = got.iter().map(|h| h.host.as_deref()).collect();
    let one = Some("one.test");
    assert_eq!(hosts, [one, None, one, None, one, None]);
    // The probe at start, then once per TTL.
    assert_eq!(dnsmasq.queries_for("10.30.0.1"), 1 + 2);
    assert_eq!(dnsmasq.queries_for("10.99.0.9"), 1);
    assert_eq!(stats.cache_hits.get(), 3);
    assert_eq!(stats.failures.get(), 1);
}

/// A responder of the test's own: answers the first query with garbage, a reply under
/// another id and a reply to another question before the true one (TTL 60, name from
/// `name_of`), and counts queries.
fn spoofing_responder(
    sock: UdpSocket,
    name_of: fn(&[u8]) -> Vec<u8>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 512];
        let mut queries = 0;
        let mut idle_since = Instant::now();
        while idle_since.elapsed() < Duration::from_millis(1500) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            idle_since = Instant::now();
            queries += 1;
            let q = &buf[..n];
            let reply = |id: [u8; 2], question: &[u8]| {
                let mut r = Vec::new();
                r.extend_from_slice(&id);
                r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
                r.extend_from_slice(question);
                r.extend_from_slice(&[0xC0, 12, 0, 12, 0, 1, 0, 0, 0, 60]);
                let target = name_of(question);
                r.extend_from_slice(&(target.len() as u16).to_be_bytes());
                r.extend_from_slice(&target);
                r
            };
            let question = &q[12..];
            if queries == 1 {
                sock.send_to(b"\x00garbage", from).unwrap();
                let wrong = [q[0] ^ 0x55, q[1]];
                sock.send_to(&reply(wrong, question), from).unwrap();
                let mut other = question.to_vec();
                other[1] = b'9'; // another address
                sock.send_to(&reply([q[0], q[1]], &other), from).unwrap();
            }
            sock.send_to(&reply([q[0], q[1]], question), from).unwrap();
        }
        queries
    })
}

/// "host-" + the first label of the question, as a wire-form name.
fn host_of(question: &[u8]) -> Vec<u8> {
    let n = usize::from(question[0]);
    let mut t = vec![(n + 5) as u8];
    t.extend_from_slice(b"host-");
    t.extend_from_slice(&question[1..1 + n]);
    t.extend_from_slice(b"\x04test\x00");
    t
}

#[test]
fn spoofed_and_garbage_answers_are_ignored_and_counted() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = sock.local_addr().unwrap();
    let responder = spoofing_responder(sock, host_of);
    let s = settings(&[addr.to_string()]);
    let (dns, stats) = cog(&s, None);
    let log = Log::default();
    let got = run_through(
        dns,
        vec![(
            Duration::ZERO,
            vec![hit(1, "10.0.0.1"), hit(2, "10.0.0.1"), hit(3, "10.0.0.2")],
        )],
        10,
        &log,
    );
    let hosts: Vec<Option<&str>> = got.iter().map(|h| h.host.as_deref()).collect();
    assert_eq!(
        hosts,
        [
            Some("host-1.test"),
            Some("host-1.test"),
            Some("host-2.test")
        ]
    );
    assert_eq!(stats.ignored.get(), 3, "{stats:?}");
    assert_eq!(stats.queries.get(), 2, "10.0.0.1 asked once for two data");
    assert_eq!(responder.join().unwrap(), 2);
}

/// A server that never answers: the shutdown waits `timeout`, not every retry, then
/// passes the data on without a name, counted.
#[test]
fn shutdown_with_queries_in_flight_loses_nothing() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut s = settings(&[silent.local_addr().unwrap().to_string()]);
    s.timeout = Duration::from_millis(300);
    s.retries = 10;
    let (dns, stats) = cog(&s, None);
    let log = Log::default();
    let started = Instant::now();
    let got = run_through(
        dns,
        vec![(
            Duration::ZERO,
            vec![hit(1, "10.0.0.1"), hit(2, "null"), hit(3, "10.0.0.2")],
        )],
        10,
        &log,
    );
    let took = started.elapsed();
    let ids: Vec<EventId> = got.iter().map(|h| h.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(got.iter().all(|h| h.host.is_none()));
    assert_eq!(stats.unanswered_at_shutdown.get(), 2);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let mut buf = [0u8; 512];
    silent.set_nonblocking(true).unwrap();
    assert!(
        silent.recv(&mut buf).is_ok(),
        "the queries reached the server"
    );
}

/// The cache saved at `done` is loaded at `start`: a restart with the server gone still
/// names the addresses.
#[test]
fn persisted_cache_names_addresses_after_a_restart() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    let responder = spoofing_responder(sock, host_of);
    let dir = TempDir::new("dns-persist");
    let state = dir.path().join("st").join("dns.state");
    let s = settings(std::slice::from_ref(&addr));
    let (dns, _) = cog(&s, Some(state.clone()));
    let log = Log::default();
    let got = run_through(
        dns,
        vec![(Duration::ZERO, vec![hit(1, "10.0.0.7")])],
        10,
        &log,
    );
    assert_eq!(got[0].host.as_deref(), Some("host-7.test"));
    assert!(state.exists());
    assert_eq!(responder.join().unwrap(), 1);

    // The responder has gone: only the cache can answer.
    let (dns, stats) = cog(&s, Some(state.clone()));
    let got = run_through(
        dns,
        vec![(Duration::ZERO, vec![hit(2, "10.0.0.7")])],
        10,
        &log,
    );
    assert_eq!(got[0].host.as_deref(), Some("host-7.test"));
    assert_eq!(stats.cache_hits.get(), 1);
    assert_eq!(stats.queries.get(), 0);

    // A damaged file is ignored: the lookup goes out (and, unanswered, fails).
    std::fs::write(&state, "deadbeat-state dns_reverse 1\ngarbage\n").unwrap();
    let (dns, stats) = cog(&s, Some(state));
    let got = run_through(
        dns,
        vec![(Duration::ZERO, vec![hit(3, "10.0.0.7")])],
        10,
        &log,
    );
    assert_eq!(got[0].host, None);
    assert_eq!(stats.cache_hits.get(), 0);
    assert!(stats.queries.get() >= 1);
}

#[test]
fn bad_settings_are_refused_with_their_key() {
    let bad = |s: DnsReverseSettings, key: &str| {
        let on_error = on_error::for_datum(
            "keep",
            |_| None,
            Getter::new(|h: &Hit| Some(&h.id)),
            Setter::new(|h: &mut Hit, why: String| h.error = Some(why)),
        )
        .unwrap();
        let e = DnsReverse::from_settings(
            &s,
            Getter::new(|h: &Hit| Some(&h.addr)),
            Setter::new(|_: &mut Hit, _: Value| {}),
            on_error,
            None,
        )
        .unwrap_err();
        assert_eq!(e.key, key, "{e:?}");
    };
    bad(settings(&["localhost".into()]), "servers");
    bad(settings(&["127.0.0.1:0".into()]), "servers");
    let mut s = settings(&[]);
    s.timeout = Duration::ZERO;
    bad(s, "timeout");
    let mut s = settings(&[]);
    s.max_in_flight = 0;
    bad(s, "max_in_flight");
    let mut s = settings(&[]);
    s.max_in_flight = 1_000_000;
    bad(s, "max_in_flight");
    let mut s = settings(&[]);
    s.max_entries = 0;
    bad(s, "max_entries");
    let mut s = settings(&[]);
    s.max_queries = 0;
    bad(s, "max_queries");
    let mut s = settings(&[]);
    s.max_queries = 5000;
    bad(s, "max_queries");
}

/// What a test responder does with a question (the reverse name's first label, the last
/// octet of an IPv4 address, tells which).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Act {
    /// A PTR record "host-LABEL.test", TTL 60.
    Name,
    /// SERVFAIL.
    ServFail,
    /// Nothing.
    Silent,
}

/// What a test responder saw: queries per first label, and the most queries it held
/// unanswered at once.
#[derive(Debug, Default)]
struct Seen {
    queries: std::collections::HashMap<String, usize>,
    most_outstanding: usize,
}

/// A responder on `sock` that decides per question with `act`; with `hold`, it answers
/// only once no query came for `hold` (so the queries a client keeps on the wire pile up
/// and are counted). Ends after 1.5 s without a query.
fn responder(
    sock: UdpSocket,
    act: fn(&str) -> Act,
    hold: Option<Duration>,
) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let tick = hold.unwrap_or(Duration::from_millis(100));
        sock.set_read_timeout(Some(tick.min(Duration::from_millis(100))))
            .unwrap();
        let mut seen = Seen::default();
        let mut held: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
        let mut buf = [0u8; 512];
        let mut last = Instant::now();
        while last.elapsed() < Duration::from_millis(1500) {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    last = Instant::now();
                    let q = buf[..n].to_vec();
                    let label =
                        String::from_utf8_lossy(&q[13..13 + usize::from(q[12])]).into_owned();
                    *seen.queries.entry(label).or_default() += 1;
                    held.push((q, from));
                    seen.most_outstanding = seen.most_outstanding.max(held.len());
                    if hold.is_some() {
                        continue;
                    }
                }
                Err(_) if hold.is_some_and(|h| last.elapsed() < h) => continue,
                Err(_) => {}
            }
            for (q, from) in held.drain(..) {
                let question = &q[12..];
                let label = String::from_utf8_lossy(&q[13..13 + usize::from(q[12])]);
                let mut r = Vec::new();
                r.extend_from_slice(&q[..2]);
                match act(&label) {
                    Act::Silent => continue,
                    Act::ServFail => {
                        r.extend_from_slice(&[0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 0]);
                        r.extend_from_slice(question);
                    }
                    Act::Name => {
                        r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
                        r.extend_from_slice(question);
                        r.extend_from_slice(&[0xC0, 12, 0, 12, 0, 1, 0, 0, 0, 60]);
                        let target = host_of(question);
                        r.extend_from_slice(&(target.len() as u16).to_be_bytes());
                        r.extend_from_slice(&target);
                    }
                }
                sock.send_to(&r, from).unwrap();
            }
        }
        seen
    })
}

/// SERVFAIL and no answer are failures like NXDOMAIN: cached for `negative_ttl` (not asked
/// again meanwhile), asked again after it.
#[test]
fn servfail_and_timeouts_are_cached_for_negative_ttl() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    let seen = responder(
        sock,
        |label| match label {
            "1" => Act::ServFail,
            "2" => Act::Silent,
            _ => Act::Name,
        },
        None,
    );
    let mut s = settings(&[addr]);
    s.retries = 0;
    s.timeout = Duration::from_millis(150);
    s.negative_ttl = Duration::from_millis(800);
    let (dns, stats) = cog(&s, None);
    let log = Log::default();
    let at = Duration::from_millis;
    let got = run_through(
        dns,
        vec![
            (at(0), vec![hit(1, "10.0.0.1"), hit(2, "10.0.0.2")]),
            // Both failed by now (the timeout after 150 ms): from the cache.
            (
                at(400),
                vec![hit(3, "10.0.0.1"), hit(4, "10.0.0.2"), hit(5, "10.0.0.3")],
            ),
            // negative_ttl has passed: asked again.
            (at(1300), vec![hit(6, "10.0.0.1")]),
        ],
        10,
        &log,
    );
    let hosts: Vec<Option<&str>> = got.iter().map(|h| h.host.as_deref()).collect();
    assert_eq!(hosts, [None, None, None, None, Some("host-3.test"), None]);
    let seen = seen.join().unwrap();
    assert_eq!(seen.queries.get("1"), Some(&2), "{seen:?}");
    assert_eq!(seen.queries.get("2"), Some(&1), "{seen:?}");
    assert_eq!(stats.cache_hits.get(), 2, "{stats:?}");
    assert_eq!(stats.failures.get(), 3, "{stats:?}");
    assert_eq!(stats.timeouts.get(), 1, "{stats:?}");
}

/// A server that answers only when the queries stop coming: it sees at most
/// `max_queries` at once, every address gets its name, none is lost; data asking for an
/// address in flight join its lookup.
#[test]
fn queries_on_the_wire_stay_within_max_queries() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    let seen = responder(sock, |_| Act::Name, Some(Duration::from_millis(30)));
    let mut s = settings(&[addr]);
    s.timeout = Duration::from_secs(5);
    s.max_queries = 8;
    s.max_in_flight = 4096;
    let (dns, stats) = cog(&s, None);
    let mut input = Vec::new();
    for i in 0..100u64 {
        let a = format!("10.1.{}.{}", i / 10, 10 + i % 10);
        input.push(hit(2 * i + 1, &a));
        input.push(hit(2 * i + 2, &a));
    }
    let log = Log::default();
    let got = run_through(dns, vec![(Duration::ZERO, input)], 200, &log);
    assert_eq!(got.len(), 200);
    for h in &got {
        let last = h
            .addr
            .as_str()
            .unwrap()
            .rsplit('.')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(h.host, Some(format!("host-{last}.test")), "{h:?}");
    }
    let seen = seen.join().unwrap();
    assert!(
        seen.most_outstanding <= 8,
        "at most max_queries on the wire: {seen:?}"
    );
    assert!(seen.most_outstanding >= 2, "{seen:?}");
    assert_eq!(stats.queries.get(), 100, "{stats:?}");
    assert_eq!(stats.joined.get(), 100, "{stats:?}");
    assert_eq!(stats.timeouts.get(), 0, "{stats:?}");
}

/// The failure the pacing fixes: thousands of distinct addresses at once against dnsmasq
/// (names synthesised for the whole range). Sent all at once they overflowed dnsmasq's
/// receive buffer and most timed out; paced, every one is named, none times out.
#[test]
fn a_burst_of_distinct_addresses_against_dnsmasq_is_paced_not_lost() {
    let Some(bin) = dnsmasq_bin() else { return };
    let dir = TempDir::new("dns-burst");
    let dnsmasq = Dnsmasq::start(
        &bin,
        dir.path(),
        "10.50.0.1 probe.test\n",
        "10.50.0.1",
        &[
            "--synth-domain=burst.test,10.60.0.0/16,h-".into(),
            "--local-ttl=600".into(),
        ],
    );
    let mut s = settings(&[dnsmasq.addr()]);
    s.timeout = Duration::from_secs(1);
    s.retries = 0;
    s.max_in_flight = 16_384;
    let (dns, stats) = cog(&s, None);
    let input: Vec<Hit> = (0..6000u64)
        .map(|i| hit(i + 1, &format!("10.60.{}.{}", i / 250, 1 + i % 250)))
        .collect();
    let log = Log::default();
    let started = Instant::now();
    let got = run_through(dns, vec![(Duration::ZERO, input)], 6000, &log);
    let took = started.elapsed();
    assert_eq!(got.len(), 6000);
    assert_eq!(got[5999].host.as_deref(), Some("h-10-60-23-250.burst.test"));
    assert!(got.iter().all(|h| h.host.is_some()), "{stats:?}");
    assert_eq!(stats.timeouts.get(), 0, "{stats:?}");
    assert_eq!(stats.queries.get(), 6000, "{stats:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}
