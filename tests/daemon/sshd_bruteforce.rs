//! The flagship, config/sshd_bruteforce.toml, run as shipped (paths moved into a temp dir)
//! on a generated sshd log, its alerts compared with an independent reference
//! (bench/reference/w6.py, Python); its blocklist holding each address once; and
//! config/bench/w6.toml's output against the same reference.
//!
//! The corpus comes from ../shared/bench/gen_corpus.py --kind sshd when the shared folder
//! is there, else from the small generator below (bursts from a few addresses that come
//! back in later windows), so the flagship's test runs on any clone.
//! DEADBEAT_SSHD_LINES sets the corpus size (default 20000 lines);
//! DEADBEAT_SSHD_SYNTHETIC=1 takes the test's own generator even when the shared one is there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{PATIENCE, deadbeat, kill, line_count, stderr_of, wait_exit};
use crate::engine::TempDir;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn lines() -> usize {
    std::env::var("DEADBEAT_SSHD_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn gen_corpus() -> Option<PathBuf> {
    if std::env::var_os("DEADBEAT_SSHD_SYNTHETIC").is_some_and(|v| v == "1") {
        return None;
    }
    let p = Path::new(ROOT).join("../shared/bench/gen_corpus.py");
    p.is_file().then_some(p)
}

/// An sshd auth log of `n` lines: noise (logins, scattered failures, other programs) and
/// brute-force bursts of 15 to 150 attempts from a pool of 12 addresses, so that addresses
/// alert in several windows. Deterministic (a fixed LCG), times from 3 Mar 10:00:00.
fn synthetic_sshd(n: usize) -> String {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move |m: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % m
    };
    let users = ["root", "admin", "test", "oracle", "git", "pi", "ubnt"];
    let mut out = String::with_capacity(n * 100);
    let mut secs: u64 = 10 * 3600;
    let mut attacks: Vec<(String, u64)> = Vec::new();
    for _ in 0..n {
        secs += rnd(3);
        let (day, t) = (3 + secs / 86_400, secs % 86_400);
        let stamp = format!(
            "Mar {day:2} {:02}:{:02}:{:02}",
            t / 3600,
            t / 60 % 60,
            t % 60
        );
        if rnd(1000) < 6 {
            attacks.push((format!("203.0.113.{}", 1 + rnd(12)), 15 + rnd(135)));
        }
        let (u, port) = (users[rnd(users.len() as u64) as usize], 1024 + rnd(60_000));
        let msg = if !attacks.is_empty() && rnd(10) < 6 {
            let i = rnd(attacks.len() as u64) as usize;
            let ip = attacks[i].0.clone();
            attacks[i].1 -= 1;
            if attacks[i].1 == 0 {
                attacks.remove(i);
            }
            match rnd(5) {
                0 => format!("Failed password for invalid user {u} from {ip} port {port} ssh2"),
                1 => format!("Failed password for root from {ip} port {port} ssh2"),
                2 => format!("Invalid user {u} from {ip} port {port}"),
                3 => format!(
                    "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 \
                     tty=ssh ruser= rhost={ip}  user={u}"
                ),
                _ => format!("Received disconnect from {ip} port {port}:11: Bye Bye [preauth]"),
            }
        } else {
            let ip = match rnd(4) {
                0 => format!("2001:db8::{:x}", rnd(65_536)),
                _ => format!("198.51.100.{}", rnd(256)),
            };
            match rnd(6) {
                0 => format!("Accepted password for {u} from {ip} port {port} ssh2"),
                1 => format!("Failed password for {u} from {ip} port {port} ssh2"),
                2 => format!("pam_unix(sshd:session): session opened for user {u} by (uid=0)"),
                3 => {
                    out.push_str(&format!("{stamp} gw1 CRON[{port}]: ({u}) CMD (true)\n"));
                    continue;
                }
                _ => format!("Connection closed by {ip} port {port} [preauth]"),
            }
        };
        out.push_str(&format!("{stamp} gw1 sshd[{port}]: {msg}\n"));
    }
    out
}

/// Writes the corpus into `dir`: gen_corpus.py's when the shared folder is there, else the
/// synthetic one.
fn corpus(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("auth.log");
    if let Some(script) = gen_corpus() {
        let out = Command::new("python3")
            .arg(&script)
            .args(["--kind", "sshd", "--lines", &n.to_string(), "--seed", "7"])
            .output()
            .expect("python3 runs gen_corpus.py");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&path, out.stdout).unwrap();
    } else {
        eprintln!("../shared/bench/gen_corpus.py absent: using the test's own sshd generator");
        std::fs::write(&path, synthetic_sshd(n)).unwrap();
    }
    path
}

/// `python3 bench/reference/w6.py ARGS CORPUS` into `out`; returns its lines.
fn reference(args: &[&str], corpus: &Path, out: &Path) -> Vec<String> {
    let res = Command::new("python3")
        .arg(Path::new(ROOT).join("bench/reference/w6.py"))
        .args(args)
        .arg(corpus)
        .output()
        .expect("python3 runs bench/reference/w6.py");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    std::fs::write(out, &res.stdout).unwrap();
    String::from_utf8_lossy(&res.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// bench/reference/compare.py EXPECTED GOT: panics with its report when they differ.
fn compare(expected: &Path, got: &Path, deadbeat_err: &str) {
    let res = Command::new("python3")
        .arg(Path::new(ROOT).join("bench/reference/compare.py"))
        .arg(expected)
        .arg(got)
        .output()
        .expect("python3 runs bench/reference/compare.py");
    assert!(
        res.status.success(),
        "{} differs from the reference {}:\n{}\ndeadbeat's stderr:\n{deadbeat_err}",
        got.display(),
        expected.display(),
        String::from_utf8_lossy(&res.stderr)
    );
}

/// config/sshd_bruteforce.toml with its input, state and outputs moved into `dir`; each
/// replaced text must be there, so a change of the shipped config fails here, loudly.
fn flagship_config(dir: &Path, input: &Path) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(ROOT).join("config/sshd_bruteforce.toml"))
        .expect("config/sshd_bruteforce.toml");
    let d = dir.display();
    let mut text = text;
    for (from, to) in [
        (
            "paths = [\"data/auth.log\"]".to_string(),
            format!("paths = [\"{}\"]", input.display()),
        ),
        (
            "dir = \"../var/state\"".to_string(),
            format!("dir = \"{d}/state\""),
        ),
        (
            "\"../var/sshd_alerts.json\"".to_string(),
            format!("\"{d}/alerts.json\""),
        ),
        (
            "\"../var/sshd_blocklist.txt\"".to_string(),
            format!("\"{d}/blocklist.txt\""),
        ),
    ] {
        assert!(
            text.contains(&from),
            "config/sshd_bruteforce.toml no longer holds {from}"
        );
        text = text.replace(&from, &to);
    }
    let p = dir.join("sshd_bruteforce.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The addresses of alert lines (`"src_ip":"..."`), in order.
fn addresses(alerts: &[String]) -> Vec<String> {
    alerts
        .iter()
        .filter_map(|l| {
            let at = l.find("\"src_ip\":\"")? + 10;
            Some(l[at..at + l[at..].find('"')?].to_string())
        })
        .collect()
}

/// Runs the flagship on `input` until it has written `alerts` alerts and `listed`
/// addresses (it follows the file: it does not stop by itself), then stops it with
/// SIGTERM. Returns its stderr.
fn run_flagship(dir: &Path, input: &Path, alerts: usize, listed: usize) -> String {
    let cfg = flagship_config(dir, input);
    let mut child = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (a, b) = (dir.join("alerts.json"), dir.join("blocklist.txt"));
    let deadline = std::time::Instant::now() + PATIENCE;
    while (line_count(&a) < alerts || line_count(&b) < listed)
        && std::time::Instant::now() < deadline
        && child.try_wait().ok().flatten().is_none()
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if child.try_wait().ok().flatten().is_none() {
        kill(child.id(), libc::SIGTERM);
    }
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "deadbeat failed: {st}\n{err}");
    err
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn flagship_alerts_match_the_reference_and_list_each_address_once() {
    let dir = TempDir::new("sshd-flagship");
    let input = corpus(dir.path(), lines());
    let expected = reference(&["--crossing"], &input, &dir.path().join("expected.json"));
    assert!(
        expected.len() >= 3,
        "the corpus makes too few alerts to test anything: {expected:?}"
    );
    let mut want_listed = addresses(&expected);
    want_listed.sort();
    want_listed.dedup();
    let err = run_flagship(dir.path(), &input, expected.len(), want_listed.len());

    compare(
        &dir.path().join("expected.json"),
        &dir.path().join("alerts.json"),
        &err,
    );
    let got_alerts = read_lines(&dir.path().join("alerts.json"));
    assert!(
        got_alerts
            .iter()
            .all(|l| l.contains("\"first_id\":") && l.contains("\"last_id\":")),
        "alerts without first_id/last_id: {:?}",
        got_alerts.first()
    );
    let mut listed = read_lines(&dir.path().join("blocklist.txt"));
    listed.sort();
    assert_eq!(listed, want_listed, "the blocklist\n{err}");
}

/// The failure the blocklist's dedup is there for: an address alerting in two windows is
/// listed once, not twice; and one alert per address and window, however many failures.
#[test]
fn an_address_alerting_in_two_windows_is_listed_once() {
    let dir = TempDir::new("sshd-twice");
    let mut log = String::new();
    let mut line = |t: &str, msg: &str| {
        log.push_str(&format!("Mar  3 {t} gw1 sshd[4242]: {msg}\n"));
    };
    for i in 0..25 {
        // 203.0.113.9: 25 failures in 10:00-10:10, 12 in 10:10-10:20 (two alerts).
        line(
            &format!("10:0{}:{:02}", i / 10, i % 60),
            &format!("Failed password for invalid user u{i} from 203.0.113.9 port {i} ssh2"),
        );
    }
    line("10:05:00", "Invalid user x from 198.51.100.7 port 1"); // one failure: no alert
    for i in 0..12 {
        line(
            &format!("10:12:{:02}", i),
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh \
             ruser= rhost=203.0.113.9  user=root",
        );
    }
    for i in 0..10 {
        // 2001:db8::5: exactly 10 in 10:10-10:20 (one alert).
        line(
            &format!("10:15:{:02}", i),
            "Invalid user admin from 2001:db8::5 port 22",
        );
    }
    let input = dir.path().join("auth.log");
    std::fs::write(&input, log).unwrap();

    let expected = reference(&["--crossing"], &input, &dir.path().join("expected.json"));
    assert_eq!(expected.len(), 3, "{expected:?}");
    let err = run_flagship(dir.path(), &input, 3, 2);
    compare(
        &dir.path().join("expected.json"),
        &dir.path().join("alerts.json"),
        &err,
    );
    let got = read_lines(&dir.path().join("alerts.json"));
    assert_eq!(
        addresses(&got),
        ["203.0.113.9", "203.0.113.9", "2001:db8::5"],
        "{err}"
    );
    assert_eq!(
        read_lines(&dir.path().join("blocklist.txt")),
        ["203.0.113.9", "2001:db8::5"],
        "{err}"
    );
}

/// config/bench/w6.toml on a small gen_corpus.py corpus equals bench/reference/w6.py's.
#[test]
fn bench_w6_config_matches_the_reference() {
    let Some(script) = gen_corpus() else {
        eprintln!("skipped: ../shared/bench/gen_corpus.py is absent (W6 runs on its corpus)");
        return;
    };
    let dir = TempDir::new("sshd-w6");
    let input = dir.path().join("sshd.log");
    let out = Command::new("python3")
        .arg(&script)
        .args([
            "--kind",
            "sshd",
            "--lines",
            &lines().to_string(),
            "--seed",
            "1",
        ])
        .output()
        .expect("python3 runs gen_corpus.py");
    assert!(out.status.success());
    std::fs::write(&input, out.stdout).unwrap();
    let expected = reference(&[], &input, &dir.path().join("expected.json"));
    assert!(!expected.is_empty());

    let text = std::fs::read_to_string(Path::new(ROOT).join("config/bench/w6.toml")).unwrap();
    let d = dir.path().display();
    let text = text
        .replace(
            "../../target/bench-data/sshd-1000000.log",
            &input.display().to_string(),
        )
        .replace(
            "../../target/bench-data/out/w6.json",
            &format!("{d}/w6.json"),
        )
        .replace("../../target/bench-data/state", &format!("{d}/state"));
    let cfg = dir.path().join("w6.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut child = deadbeat()
        .args(["run", cfg.to_str().unwrap()])
        .spawn()
        .unwrap();
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "{err}");
    compare(
        &dir.path().join("expected.json"),
        &dir.path().join("w6.json"),
        &err,
    );
    // Exactly the reference's fields, in the README's order.
    let first = read_lines(&dir.path().join("w6.json"))
        .into_iter()
        .next()
        .unwrap_or_default();
    assert!(
        first.starts_with("{\"window_start\":\"") && first.contains(",\"src_ip\":\""),
        "{first}"
    );
    assert_eq!(first.matches("\":").count(), 3, "{first}");
}

/// The flagship on the loghub sample as it is (../shared/data/OpenSSH_2k.log: a real sshd
/// log, CRLF line ends, no newline after its last line): its alerts are the reference's
/// and its blocklist holds each alerting address once. The bundled config/data/auth.log
/// is the first 939 lines of this file.
#[test]
fn flagship_on_the_loghub_sample_matches_the_reference() {
    let input = Path::new(ROOT).join("../shared/data/OpenSSH_2k.log");
    if !input.is_file() {
        eprintln!("skipped: {} is absent", input.display());
        return;
    }
    let dir = TempDir::new("sshd-loghub");
    let expected = reference(&["--crossing"], &input, &dir.path().join("expected.json"));
    assert!(
        expected.len() >= 3,
        "the sample makes too few alerts to test anything: {expected:?}"
    );
    let mut want_listed = addresses(&expected);
    want_listed.sort();
    want_listed.dedup();
    assert!(
        want_listed.len() < expected.len(),
        "no address alerts twice"
    );
    let err = run_flagship(dir.path(), &input, expected.len(), want_listed.len());
    compare(
        &dir.path().join("expected.json"),
        &dir.path().join("alerts.json"),
        &err,
    );
    let mut listed = read_lines(&dir.path().join("blocklist.txt"));
    listed.sort();
    assert_eq!(listed, want_listed, "the blocklist\n{err}");
}
