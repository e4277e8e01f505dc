//! TLS on `tcp_in` and `tcp_out` against real peers (`openssl s_client`/`s_server`,
//! rsyslog's gtls driver, deadbeat itself), with a CA and certificates the test makes with
//! the `openssl` CLI: good, expired, from an unknown CA, for clients.

use crate::support::{free_port, have, wait_until};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::stream_out::{Daemon, PATIENCE, config, file_in, numbered};
use crate::engine::TempDir;

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_until(what, PATIENCE, cond);
}

/// A CA and the certificates the tests use, made with the `openssl` CLI in `dir`.
pub(crate) struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// `None` (and a printed reason) when `openssl` is absent.
    pub(crate) fn new(dir: &Path) -> Option<Pki> {
        if !have("openssl") {
            eprintln!("skipped: openssl is not installed");
            return None;
        }
        let p = Pki {
            dir: dir.join("pki"),
        };
        std::fs::create_dir_all(&p.dir).unwrap();
        std::fs::write(
            p.dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(
            p.dir.join("client.ext"),
            "subjectAltName=DNS:client.test\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        p.ca("ca");
        p.ca("other-ca");
        p.key("server");
        p.key("client");
        p.sign("server", "ca", "server", "localhost", "server.ext", "3650");
        p.sign(
            "client",
            "ca",
            "client",
            "client.test",
            "client.ext",
            "3650",
        );
        // notAfter a day before notBefore: expired however the clock stands.
        p.sign("expired", "ca", "server", "localhost", "server.ext", "-1");
        p.sign(
            "rogue",
            "other-ca",
            "server",
            "localhost",
            "server.ext",
            "3650",
        );
        p.sign(
            "rogue-client",
            "other-ca",
            "client",
            "client.test",
            "client.ext",
            "3650",
        );
        p.sign(
            "expired-client",
            "ca",
            "client",
            "client.test",
            "client.ext",
            "-1",
        );
        Some(p)
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str) {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        let subj = format!("/CN=deadbeat test {name}");
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-subj",
            &subj,
            "-days",
            "3650",
        ]);
    }

    fn key(&self, name: &str) {
        let key = format!("{name}.key");
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ]);
    }

    /// Certificate `name`.pem for key `key`.key, signed by `ca`.
    fn sign(&self, name: &str, ca: &str, key: &str, cn: &str, ext: &str, days: &str) {
        let csr = format!("{name}.csr");
        let (k, subj) = (format!("{key}.key"), format!("/CN={cn}"));
        self.openssl(&["req", "-new", "-key", &k, "-out", &csr, "-subj", &subj]);
        let (cap, cak, pem) = (
            format!("{ca}.pem"),
            format!("{ca}.key"),
            format!("{name}.pem"),
        );
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &cap,
            "-CAkey",
            &cak,
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            ext,
            "-out",
            &pem,
        ]);
    }
}

/// A deadbeat with `tcp_in` (TLS keys `tls`) on a free port → `file_out` json.
fn tcp_in(dir: &Path, tls: &str) -> (Daemon, u16, PathBuf) {
    let port = free_port();
    let out = dir.join("out.json");
    let supply = format!("type = \"tcp_in\"\nlisten = \"127.0.0.1:{port}\"\ntls = {{ {tls} }}");
    let drain = format!("type = \"file_out\"\npath = {:?}\nformat = \"json\"", out);
    let mut d = Daemon::start(&config(dir, &supply, &drain), false);
    d.wait_log("tcp_in listening");
    (d, port, out)
}

/// The errors of the final counters of the cog `cog` (e.g. `tcp_in`) in `log`.
fn errors_of(log: &str, cog: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("final counters") && l.contains(&format!("cog={cog}#")))
        .unwrap_or_else(|| panic!("no final counters of {cog}: {log}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("errors="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no error count: {line}"))
}

fn sigterm(d: &Daemon) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
}

/// `openssl s_client` sending `text` to `port` with extra arguments; whether it succeeded.
fn s_client(port: u16, args: &[String], text: &str) -> bool {
    let mut c = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-quiet",
            "-no_ign_eof",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = c.stdin.take().unwrap().write_all(text.as_bytes());
    wait_child(&mut c).success()
}

fn wait_child(c: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("child did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn s_client_sends_into_tcp_in_and_a_plaintext_client_is_refused() {
    let dir = TempDir::new("tls-in");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let tls = format!(
        "cert = {:?}, key = {:?}",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let (mut d, port, out) = tcp_in(dir.path(), &tls);
    let ca = [
        "-CAfile".to_string(),
        pki.path("ca.pem"),
        "-verify_return_error".into(),
    ];
    assert!(s_client(port, &ca, "first over tls\nsecond over tls\n"));
    wait_for("two lines", || lines(&out).len() >= 2);
    // A plaintext client on the TLS port: refused with a reason, nothing emitted.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let local = plain.local_addr().unwrap().to_string();
    plain.write_all(b"<13>plaintext on a tls port\n").unwrap();
    let i = d.wait_log_from(0, "TLS failed; closing the connection");
    assert!(d.seen[i].contains(&local), "{}", d.seen[i]);
    drop(plain);
    sigterm(&d);
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    let got = lines(&out).join("\n");
    assert!(
        got.contains("first over tls") && got.contains("second over tls"),
        "{got}"
    );
    assert!(!got.contains("plaintext"), "{got}");
    assert_eq!(lines(&out).len(), 2, "{got}");
    assert_eq!(errors_of(&log, "tcp_in"), 1, "{log}");
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let dir = TempDir::new("tls-mutual");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let tls = format!(
        "cert = {:?}, key = {:?}, ca = {:?}",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem")
    );
    let (mut d, port, out) = tcp_in(dir.path(), &tls);
    let with = |cert: &str| {
        vec![
            "-CAfile".to_string(),
            pki.path("ca.pem"),
            "-cert".into(),
            pki.path(&format!("{cert}.pem")),
            "-key".into(),
            pki.path("client.key"),
        ]
    };
    s_client(port, &with("client"), "from a known client\n");
    wait_for("the known client's line", || !lines(&out).is_empty());
    // No certificate at all.
    s_client(port, &["-CAfile".into(), pki.path("ca.pem")], "anonymous\n");
    let i = d.wait_log_from(0, "TLS failed; closing the connection");
    assert!(
        d.seen[i].to_lowercase().contains("certificate"),
        "{}",
        d.seen[i]
    );
    // A certificate from a CA the server does not know.
    s_client(port, &with("rogue-client"), "from a rogue client\n");
    let j = d.wait_log_from(i + 1, "TLS failed; closing the connection");
    assert!(d.seen[j].contains("UnknownIssuer"), "{}", d.seen[j]);
    // An expired certificate from the right CA.
    s_client(port, &with("expired-client"), "from an expired client\n");
    let k = d.wait_log_from(j + 1, "TLS failed; closing the connection");
    assert!(d.seen[k].contains("Expired"), "{}", d.seen[k]);
    sigterm(&d);
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    let got = lines(&out).join("\n");
    assert!(got.contains("from a known client"), "{got}");
    assert!(
        !got.contains("anonymous") && !got.contains("rogue"),
        "{got}"
    );
    assert!(!got.contains("expired"), "{got}");
    assert_eq!(errors_of(&log, "tcp_in"), 3, "{log}");
}

/// `openssl s_server` on a free port with `cert` (key server.key) and extra arguments;
/// what it receives goes to `out`.
fn s_server(pki: &Pki, cert: &str, extra: &[String], out: &Path) -> (Child, u16) {
    let port = free_port();
    let c = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-quiet",
        ])
        .args([
            "-cert",
            &pki.path(&format!("{cert}.pem")),
            "-key",
            &pki.path("server.key"),
        ])
        .args(extra)
        // Kept open: s_server reads its stdin to send to the client.
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Listening once a connection is accepted (s_server takes and drops a plain one).
    wait_for("s_server listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (c, port)
}

#[test]
fn tcp_out_sends_to_s_server_with_a_client_certificate() {
    let dir = TempDir::new("tls-out");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let got = dir.path().join("received.txt");
    let verify = [
        "-Verify".to_string(),
        "1".into(),
        "-CAfile".into(),
        pki.path("ca.pem"),
    ];
    let (mut server, port) = s_server(&pki, "server", &verify, &got);
    let n = 20_000;
    let drain = format!(
        "type = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\n\
         tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let cfg = config(dir.path(), &file_in(dir.path(), &numbered(0, n)), &drain);
    let d = Daemon::start(&cfg, false);
    wait_for("every line at s_server", || lines(&got).len() >= n);
    let (ok, log) = d.wait();
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "{log}");
    assert_eq!(errors_of(&log, "tcp_out"), 0, "{log}");
    let want: Vec<String> = numbered(0, n).lines().map(str::to_string).collect();
    assert_eq!(lines(&got), want);
}

/// tcp_out towards a server presenting `cert`, with `tls` keys: the log line of the
/// refused handshake, and the daemon's final log.
fn refused(pki: &Pki, dir: &Path, cert: &str, tls: &str) -> (String, String) {
    let got = dir.join(format!("received-{cert}.txt"));
    let (mut server, port) = s_server(pki, cert, &[], &got);
    let drain = format!(
        "type = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\ndrain_timeout = \"1s\"\n\
         tls = {{ ca = {:?}{tls} }}",
        pki.path("ca.pem")
    );
    let cfg = config(dir, &file_in(dir, "never sent\n"), &drain);
    let mut d = Daemon::start(&cfg, false);
    let i = d.wait_log_from(0, "cannot connect");
    let line = d.seen[i].clone();
    // The input ends at once: the drain gives up after its drain_timeout.
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        !std::fs::read_to_string(&got)
            .unwrap_or_default()
            .contains("never sent")
    );
    (line, log)
}

#[test]
fn tcp_out_refuses_expired_unknown_and_misnamed_servers() {
    let dir = TempDir::new("tls-refused");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let (line, log) = refused(&pki, dir.path(), "expired", "");
    assert!(line.to_lowercase().contains("expired"), "{line}");
    assert!(line.contains("peer=tcp:127.0.0.1:"), "{line}");
    assert!(errors_of(&log, "tcp_out") >= 1, "{log}");
    assert!(log.contains("unsent_records=1"), "{log}");
    let (line, _) = refused(&pki, dir.path(), "rogue", "");
    assert!(line.contains("UnknownIssuer"), "{line}");
    let (line, _) = refused(
        &pki,
        dir.path(),
        "server",
        ", server_name = \"wrong.example\"",
    );
    assert!(line.contains("not valid for name"), "{line}");
}

#[test]
fn deadbeat_to_deadbeat_over_mutual_tls_loses_nothing() {
    let dir = TempDir::new("tls-both");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let recv_dir = dir.path().join("recv");
    std::fs::create_dir_all(&recv_dir).unwrap();
    let tls = format!(
        "cert = {:?}, key = {:?}, ca = {:?}",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem")
    );
    let (recv, port, out) = tcp_in(&recv_dir, &tls);
    let n = 200_000;
    let drain = format!(
        "type = \"tcp_out\"\naddress = \"localhost:{port}\"\n\
         tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let send_dir = dir.path().join("send");
    std::fs::create_dir_all(&send_dir).unwrap();
    let cfg = config(&send_dir, &file_in(&send_dir, &numbered(0, n)), &drain);
    let (ok, log) = Daemon::start(&cfg, false).wait();
    assert!(ok, "{log}");
    assert_eq!(errors_of(&log, "tcp_out"), 0, "{log}");
    wait_for("every line", || lines(&out).len() >= n);
    sigterm(&recv);
    let (ok, log) = recv.wait();
    assert!(ok, "{log}");
    assert_eq!(errors_of(&log, "tcp_in"), 0, "{log}");
    let got = lines(&out);
    assert_eq!(got.len(), n);
    for (i, l) in got.iter().enumerate() {
        assert!(
            l.contains(&format!("line {i:07} the quick")),
            "line {i}: {l}"
        );
    }
}

#[test]
fn bad_tls_settings_name_the_key_and_the_file() {
    let dir = TempDir::new("tls-config");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let check = |tls: String| {
        let supply = format!("type = \"tcp_in\"\nlisten = \"127.0.0.1:0\"\ntls = {{ {tls} }}");
        let cfg = config(dir.path(), &supply, "type = \"stdout\"");
        let out = Command::new(super::stream_out::BIN)
            .args(["check", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let missing = dir.path().join("absent.pem");
    let e = check(format!(
        "cert = {missing:?}, key = {:?}",
        pki.path("server.key")
    ));
    assert!(e.contains("tls.cert") && e.contains("absent.pem"), "{e}");
    let e = check(format!(
        "cert = {:?}, key = {:?}",
        pki.path("server.pem"),
        pki.path("client.key")
    ));
    assert!(e.contains("tls.key") && e.contains("does not fit"), "{e}");
    let e = check(format!("key = {:?}", pki.path("server.key")));
    assert!(e.contains("tls.cert"), "{e}");
    let e = check("sert = \"x\"".into());
    assert!(e.contains("sert"), "{e}");
}

/// rsyslog with the gtls driver and `conf` (its work directory and the driver's files
/// set in the global section), or `None` and a printed reason when absent.
fn rsyslog(dir: &Path, pki: &Pki, cert: &str, conf: &str) -> Option<Child> {
    let gtls = Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so");
    if !have("rsyslogd") || !gtls.exists() {
        eprintln!("skipped: rsyslogd or its gtls driver (rsyslog-gnutls) is not installed");
        return None;
    }
    let work = dir.join("rs");
    std::fs::create_dir_all(&work).unwrap();
    let file = dir.join("rsyslog.conf");
    std::fs::write(
        &file,
        format!(
            "global(workDirectory=\"{w}\" DefaultNetstreamDriver=\"gtls\" \
             DefaultNetstreamDriverCAFile=\"{ca}\" DefaultNetstreamDriverCertFile=\"{c}\" \
             DefaultNetstreamDriverKeyFile=\"{k}\")\n{conf}",
            w = work.display(),
            ca = pki.path("ca.pem"),
            c = pki.path(&format!("{cert}.pem")),
            k = pki.path(&format!("{cert}.key")),
        ),
    )
    .unwrap();
    Some(
        Command::new("rsyslogd")
            .args(["-n", "-f", file.to_str().unwrap(), "-i"])
            .arg(work.join("pid"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn rsyslog_gtls_sends_into_tcp_in_with_a_client_certificate() {
    let dir = TempDir::new("tls-rsyslog-in");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    if !have("logger") {
        eprintln!("skipped: logger is not installed");
        return;
    }
    let tls = format!(
        "cert = {:?}, key = {:?}, ca = {:?}",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem")
    );
    let (d, port, out) = tcp_in(dir.path(), &tls);
    let udp = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let conf = format!(
        "module(load=\"imudp\")\n\
         input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp}\")\n\
         action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{port}\" protocol=\"tcp\" \
         StreamDriver=\"gtls\" StreamDriverMode=\"1\" StreamDriverAuthMode=\"x509/name\" \
         StreamDriverPermittedPeers=\"localhost\" TCP_Framing=\"octet-counted\" \
         template=\"RSYSLOG_SyslogProtocol23Format\")\n"
    );
    let Some(mut rs) = rsyslog(dir.path(), &pki, "client", &conf) else {
        return;
    };
    // rsyslog may not be up yet: send until something arrives.
    let deadline = Instant::now() + PATIENCE;
    let mut i = 0;
    while lines(&out).is_empty() {
        assert!(Instant::now() < deadline, "nothing came through rsyslog");
        let st = Command::new("logger")
            .args(["-d", "-n", "127.0.0.1", "-P", &udp.to_string()])
            .arg(format!("through rsyslog over tls {i}"))
            .status()
            .unwrap();
        assert!(st.success());
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = rs.kill();
    let _ = rs.wait();
    sigterm(&d);
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    let got = lines(&out).join("\n");
    assert!(got.contains("through rsyslog over tls"), "{got}");
    // Octet-counted syslog, the framing detected: the message starts with its PRI.
    assert!(got.contains("\"message\":\"<"), "{got}");
}

#[test]
fn tcp_out_sends_to_rsyslog_gtls_with_a_client_certificate() {
    let dir = TempDir::new("tls-rsyslog-out");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let port = free_port();
    let got = dir.path().join("rsyslog-out.log");
    let conf = format!(
        "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" \
         StreamDriver.AuthMode=\"x509/certvalid\")\n\
         input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
         template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
         action(type=\"omfile\" file=\"{f}\" template=\"raw\")\n",
        f = got.display()
    );
    let Some(mut rs) = rsyslog(dir.path(), &pki, "server", &conf) else {
        return;
    };
    let n = 5_000;
    // Until rsyslog listens, the drain retries every 250 ms (a refused connection).
    let drain = format!(
        "type = \"tcp_out\"\naddress = \"localhost:{port}\"\n\
         tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let cfg = config(dir.path(), &file_in(dir.path(), &numbered(0, n)), &drain);
    let (ok, log) = Daemon::start(&cfg, false).wait();
    assert!(ok, "{log}");
    assert_eq!(errors_of(&log, "tcp_out"), 0, "{log}");
    wait_for("every line in rsyslog's file", || lines(&got).len() >= n);
    let _ = rs.kill();
    let _ = rs.wait();
    let want: Vec<String> = numbered(0, n).lines().map(str::to_string).collect();
    assert_eq!(lines(&got), want);
}

/// An HTTPS server in Python (`ssl` and `http.server`) on `port` presenting `cert`:
/// answers 200 to every POST and appends its body to `bodies`. It writes `ready` once
/// listening.
const HTTPS_SERVER: &str = r#"
import http.server, ssl, sys
port, cert, key, bodies, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with open(bodies, "ab") as f:
            f.write(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = http.server.HTTPServer(("127.0.0.1", port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
open(ready, "w").close()
srv.serve_forever()
"#;

fn https_server(dir: &Path, pki: &Pki, cert: &str) -> Option<(Child, u16, PathBuf)> {
    if !have("python3") {
        eprintln!("skipped: python3 is not installed");
        return None;
    }
    let port = free_port();
    let bodies = dir.join(format!("bodies-{cert}.ndjson"));
    let ready = dir.join(format!("ready-{cert}"));
    let c = Command::new("python3")
        .args(["-c", HTTPS_SERVER, &port.to_string()])
        .args([pki.path(&format!("{cert}.pem")), pki.path("server.key")])
        .args([bodies.to_str().unwrap(), ready.to_str().unwrap()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the https server", || ready.exists());
    Some((c, port, bodies))
}

#[test]
fn http_out_posts_over_https_and_refuses_an_unknown_ca() {
    let dir = TempDir::new("tls-https");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let Some((mut server, port, bodies)) = https_server(dir.path(), &pki, "server") else {
        return;
    };
    let n = 3_000;
    let drain = |port: u16| {
        format!(
            "type = \"http_out\"\nurl = \"https://localhost:{port}/ingest\"\n\
             batch_records = 500\nshutdown_timeout = \"1s\"\ntls = {{ ca = {:?} }}",
            pki.path("ca.pem")
        )
    };
    let cfg = config(
        dir.path(),
        &file_in(dir.path(), &numbered(0, n)),
        &drain(port),
    );
    let (ok, log) = Daemon::start(&cfg, false).wait();
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "{log}");
    assert_eq!(errors_of(&log, "http_out"), 0, "{log}");
    let got = lines(&bodies);
    assert_eq!(got.len(), n);
    for (i, l) in got.iter().enumerate() {
        assert!(
            l.contains(&format!("line {i:07} the quick")),
            "line {i}: {l}"
        );
    }
    // A server whose certificate comes from another CA: refused, nothing posted.
    let Some((mut server, port, bodies)) = https_server(dir.path(), &pki, "rogue") else {
        return;
    };
    let cfg = config(
        dir.path(),
        &file_in(dir.path(), "never posted\n"),
        &drain(port),
    );
    let mut d = Daemon::start(&cfg, false);
    let i = d.wait_log_from(0, "cannot connect");
    assert!(d.seen[i].contains("UnknownIssuer"), "{}", d.seen[i]);
    let (_, log) = d.wait();
    let _ = server.kill();
    let _ = server.wait();
    assert!(errors_of(&log, "http_out") >= 1, "{log}");
    assert!(lines(&bodies).is_empty());
}

/// A redis-server with TLS only (`tls-port`), requiring client certificates from the CA.
fn redis_tls(dir: &Path, pki: &Pki) -> Option<(Child, u16)> {
    if !have("redis-server") {
        eprintln!("skipped: redis-server is not installed");
        return None;
    }
    let port = free_port();
    let data = dir.join("redis");
    std::fs::create_dir_all(&data).unwrap();
    let c = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--tls-cert-file", &pki.path("server.pem")])
        .args(["--tls-key-file", &pki.path("server.key")])
        .args([
            "--tls-ca-cert-file",
            &pki.path("ca.pem"),
            "--tls-auth-clients",
            "yes",
        ])
        .args([
            "--dir",
            data.to_str().unwrap(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("redis-server listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some((c, port))
}

/// `redis-cli` over TLS with the client certificate.
fn redis_cli(pki: &Pki, port: u16, args: &[&str]) -> Option<String> {
    if !have("redis-cli") {
        return None;
    }
    let out = Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            &pki.path("ca.pem"),
            "--cert",
            &pki.path("client.pem"),
        ])
        .args(["--key", &pki.path("client.key"), "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn redis_out_and_redis_in_over_rediss_with_a_client_certificate() {
    let dir = TempDir::new("tls-redis");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let Some((mut redis, port)) = redis_tls(dir.path(), &pki) else {
        return;
    };
    let tls = format!(
        "tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let n = 5_000;
    let drain = format!(
        "type = \"redis_out\"\naddress = \"rediss://localhost:{port}\"\nstream = \"logs\"\n{tls}"
    );
    let send = dir.path().join("send");
    std::fs::create_dir_all(&send).unwrap();
    let (ok, log) = Daemon::start(
        &config(&send, &file_in(&send, &numbered(0, n)), &drain),
        false,
    )
    .wait();
    assert!(ok, "{log}");
    assert_eq!(errors_of(&log, "redis_out"), 0, "{log}");
    if let Some(len) = redis_cli(&pki, port, &["XLEN", "logs"]) {
        assert_eq!(len, n.to_string());
    }
    let recv = dir.path().join("recv");
    std::fs::create_dir_all(&recv).unwrap();
    let out = recv.join("out.txt");
    let supply = format!(
        "type = \"redis_in\"\naddress = \"rediss://localhost:{port}\"\nstream = \"logs\"\n\
         group = \"g\"\nblock = \"100ms\"\n{tls}"
    );
    let drain = format!("type = \"file_out\"\npath = {out:?}");
    let d = Daemon::start(&config(&recv, &supply, &drain), false);
    wait_for("every entry read back", || lines(&out).len() >= n);
    sigterm(&d);
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    assert_eq!(errors_of(&log, "redis_in"), 0, "{log}");
    let want: Vec<String> = numbered(0, n).lines().map(str::to_string).collect();
    assert_eq!(lines(&out), want);
    // Every entry acknowledged, the last ones on the stop's own TLS connection.
    if let Some(p) = redis_cli(&pki, port, &["XPENDING", "logs", "g"]) {
        assert!(p.starts_with('0'), "pending: {p}");
    }
    // A server from a CA not trusted: refused with the reason.
    let drain = format!(
        "type = \"redis_out\"\naddress = \"rediss://localhost:{port}\"\nstream = \"other\"\n\
         drain_timeout = \"1s\"\ntls = {{ ca = {:?} }}",
        pki.path("other-ca.pem")
    );
    let mut d = Daemon::start(&config(&send, &file_in(&send, "refused\n"), &drain), false);
    let i = d.wait_log_from(0, "cannot connect");
    assert!(d.seen[i].contains("UnknownIssuer"), "{}", d.seen[i]);
    let (_, log) = d.wait();
    assert!(errors_of(&log, "redis_out") >= 1, "{log}");
    let _ = redis.kill();
    let _ = redis.wait();
}

/// The collector of the restart test: TLS `tcp_in` → `file_out` appending to `out`, slowed
/// by an fsync per batch so that a backlog waits in the sender's socket when it stops.
fn tls_collector(dir: &Path, pki: &Pki, port: u16, out: &Path) -> Daemon {
    let supply = format!(
        "type = \"tcp_in\"\nlisten = \"127.0.0.1:{port}\"\nframing = \"newline\"\n\
         tls = {{ cert = {:?}, key = {:?} }}",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let drain = format!("type = \"file_out\"\npath = {out:?}\nfsync = \"always\"");
    let mut d = Daemon::start(&config(dir, &supply, &drain), false);
    d.wait_log("tcp_in listening");
    d
}

#[test]
fn tcp_out_over_tls_resends_what_a_restarted_collector_missed() {
    let dir = TempDir::new("tls-restart");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    let port = free_port();
    let out = dir.path().join("collected.log");
    let coll = dir.path().join("collector");
    std::fs::create_dir_all(&coll).unwrap();
    let first = tls_collector(&coll, &pki, port, &out);
    // More than the sockets between them hold, so the stop comes mid-stream.
    let n = 400_000;
    let drain = format!(
        "type = \"tcp_out\"\naddress = \"localhost:{port}\"\ntls = {{ ca = {:?} }}",
        pki.path("ca.pem")
    );
    let send = dir.path().join("send");
    std::fs::create_dir_all(&send).unwrap();
    let mut sender = Daemon::start(
        &config(&send, &file_in(&send, &numbered(0, n)), &drain),
        false,
    );
    wait_for("a tenth at the collector", || lines(&out).len() >= n / 10);
    sigterm(&first);
    let (ok, log) = first.wait();
    assert!(ok, "{log}");
    let i = sender.wait_log_from(0, "connection lost");
    let second = tls_collector(&coll, &pki, port, &out);
    sender.wait_log_from(i, "connected");
    let (ok, log) = sender.wait();
    assert!(ok, "{log}");
    assert_eq!(errors_of(&log, "tcp_out"), 0, "{log}");
    sigterm(&second);
    let (ok, log) = second.wait();
    assert!(ok, "{log}");
    // Every line at least once; duplicates (and a line cut by the loss) are allowed.
    let mut seen = vec![0u32; n];
    for l in lines(&out) {
        if let Some(i) = l
            .strip_prefix("line ")
            .and_then(|r| r.get(..7)?.parse::<usize>().ok())
            .filter(|&i| i < n && l == numbered(i, i + 1).trim_end())
        {
            seen[i] += 1;
        }
    }
    let lost: Vec<usize> = (0..n).filter(|&i| seen[i] == 0).collect();
    assert!(
        lost.is_empty(),
        "{} lines lost, first {:?}",
        lost.len(),
        lost.first()
    );
    let dups = seen.iter().filter(|&&c| c > 1).count();
    eprintln!("restart over TLS: {n} lines, none lost, {dups} sent twice");
}

#[test]
fn verify_false_takes_any_certificate_and_no_ca_means_the_system_store() {
    let dir = TempDir::new("tls-verify");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    // verify = false: a certificate from an unknown CA is taken (tests only).
    let got = dir.path().join("received-any.txt");
    let (mut server, port) = s_server(&pki, "rogue", &[], &got);
    let drain =
        format!("type = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\ntls = {{ verify = false }}");
    let cfg = config(dir.path(), &file_in(dir.path(), "taken anyway\n"), &drain);
    let (ok, log) = Daemon::start(&cfg, false).wait();
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "{log}");
    assert_eq!(lines(&got), ["taken anyway"]);
    // No `ca`: the system store, which does not know the test's CA.
    if !Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        eprintln!("skipped the system store half: /etc/ssl/certs/ca-certificates.crt is absent");
        return;
    }
    let got = dir.path().join("received-system.txt");
    let (mut server, port) = s_server(&pki, "server", &[], &got);
    let drain = format!(
        "type = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\ndrain_timeout = \"1s\"\ntls = {{ }}"
    );
    let cfg = config(dir.path(), &file_in(dir.path(), "not trusted\n"), &drain);
    let mut d = Daemon::start(&cfg, false);
    let i = d.wait_log_from(0, "cannot connect");
    assert!(d.seen[i].contains("UnknownIssuer"), "{}", d.seen[i]);
    let _ = d.wait();
    let _ = server.kill();
    let _ = server.wait();
    assert!(lines(&got).is_empty());
}

#[test]
fn http_in_serves_https_to_curl_and_refuses_plaintext() {
    let dir = TempDir::new("tls-http-in");
    let Some(pki) = Pki::new(dir.path()) else {
        return;
    };
    if !have("curl") {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let port = free_port();
    let out = dir.path().join("out.json");
    // The files named relative to the configuration file's directory.
    let supply = format!(
        "type = \"http_in\"\nlisten = \"127.0.0.1:{port}\"\n\
         tls = {{ cert = \"pki/server.pem\", key = \"pki/server.key\" }}"
    );
    let drain = format!("type = \"file_out\"\npath = {out:?}\nformat = \"json\"");
    let mut d = Daemon::start(&config(dir.path(), &supply, &drain), false);
    d.wait_log("http_in listening");
    let body: String = (0..500).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let url = format!("https://localhost:{port}/ingest");
    let curl = |ca: &str| {
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "--cacert",
                ca,
                "-o",
                "-",
                "-w",
                " %{http_code}",
            ])
            .args([
                "-H",
                "Content-Type: application/x-ndjson",
                "--data-binary",
                "@-",
            ])
            .arg(&url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                let _ = c.stdin.take().unwrap().write_all(body.as_bytes());
                c.wait_with_output()
            })
            .unwrap()
    };
    let ok = curl(&pki.path("ca.pem"));
    let said = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(
        said.ends_with(" 200"),
        "{said} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(said.contains("\"accepted\":500"), "{said}");
    wait_for("500 records", || lines(&out).len() >= 500);
    // A client that does not trust the server's CA refuses it; the server logs why.
    let from = d.seen.len();
    let bad = curl(&pki.path("other-ca.pem"));
    assert!(!bad.status.success(), "curl trusted an unknown CA");
    d.wait_log_from(from, "TLS failed; closing the connection");
    // Plain HTTP on the HTTPS port: refused, nothing emitted.
    let from = d.seen.len();
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .write_all(b"POST /ingest HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nplain\n")
        .unwrap();
    d.wait_log_from(from, "TLS failed; closing the connection");
    drop(plain);
    sigterm(&d);
    let (ok, log) = d.wait();
    assert!(ok, "{log}");
    assert_eq!(lines(&out).len(), 500);
    assert!(!std::fs::read_to_string(&out).unwrap().contains("plain"));
    assert_eq!(errors_of(&log, "http_in"), 2, "{log}");
}
