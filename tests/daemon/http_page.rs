//! The live page of `[http]` (issue 17) in a real browser: headless Chromium loads `GET /`
//! from a daemon with data flowing, and the rendered DOM must hold every cog with a
//! non-zero rate, the edges between trains, errors highlighted and names escaped. A
//! screenshot is kept in `target/artifacts/live-page.png`.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::*;

/// A cog name holding markup: the page must show it as text.
const MARKUP_NAME: &str = "<b>in</b>&amp;";

/// A daemon with `[http]` on a port the kernel chose and three trains: `main` (stdin, a
/// JSON parser sending failures to `rejects`, a tee copying to `copies`, a file), fed a
/// few lines every 20 ms (one in ten not JSON) until stopped.
pub(super) struct LiveDaemon {
    child: Child,
    dir: TempDir,
    pub(super) port: u16,
    stop: Arc<AtomicBool>,
    feeder: Option<JoinHandle<std::process::ChildStdin>>,
}

impl LiveDaemon {
    pub(super) fn start(tag: &str) -> LiveDaemon {
        Self::start_listening(tag, "127.0.0.1:0")
    }

    /// The same daemon with `[http] listen = LISTEN`; `unix:ctl.sock` is a socket in its
    /// directory.
    pub(super) fn start_listening(tag: &str, listen: &str) -> LiveDaemon {
        let dir = TempDir::new(tag);
        let cfg = write_config(
            dir.path(),
            &format!(
                "[log]\ntarget = \"file:d.log\"\n[http]\nlisten = \"{listen}\"\n\
                 [[train]]\nname = \"main\"\n\
                 [[train.cog]]\ntype = \"stdin\"\nname = \"{}\"\n\
                 [[train.cog]]\ntype = \"json_parse\"\non_error = \"train:rejects\"\n\
                 [[train.cog]]\ntype = \"tee\"\ntrain = \"copies\"\n\
                 [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n\
                 [[train]]\nname = \"rejects\"\n\
                 [[train.cog]]\ntype = \"file_out\"\npath = \"rejects.log\"\n\
                 [[train]]\nname = \"copies\"\n\
                 [[train.cog]]\ntype = \"file_out\"\npath = \"copies.log\"\n",
                MARKUP_NAME.replace('\\', "\\\\").replace('"', "\\\"")
            ),
        );
        let (child, mut stdin) = spawn_with_stdin(&cfg);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let feeder = std::thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let mut chunk = String::new();
                for _ in 0..5 {
                    if n % 10 == 9 {
                        chunk.push_str(&format!("not json {n}\n"));
                    } else {
                        chunk.push_str(&format!("{{\"n\":{n},\"msg\":\"hello\"}}\n"));
                    }
                    n += 1;
                }
                if stdin.write_all(chunk.as_bytes()).is_err() {
                    break; // the daemon is gone: the test's checks say why
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stdin
        });
        let log = dir.path().join("d.log");
        let mut port = 0;
        wait_for("the control server to listen", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let Some(line) = text
                .lines()
                .find(|l| l.contains("control server listening"))
            else {
                return false;
            };
            port = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("listen="))
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            true
        });
        LiveDaemon {
            child,
            dir,
            port,
            stop,
            feeder: Some(feeder),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// `GET path` on a fresh connection: (status, body).
    pub(super) fn get(&self, path: &str) -> (u16, String) {
        http(self.port, "GET", path)
    }

    pub(super) fn post(&self, path: &str) -> (u16, String) {
        http(self.port, "POST", path)
    }

    pub(super) fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// `(train, cog, headline rate)` of every cog: what a supply or an inbox emits, what
    /// any other cog takes in (as the page and `top` show it).
    pub(super) fn rates(&self) -> Vec<(String, String, f64)> {
        let st = self.status();
        let mut out = Vec::new();
        for t in st["trains"].as_array().unwrap() {
            for c in t["cogs"].as_array().unwrap() {
                let emits = c["supply"].as_bool() == Some(true) || c["type"] == "inbox";
                let rate = if emits { &c["rate_out"] } else { &c["rate_in"] };
                out.push((
                    t["name"].as_str().unwrap().to_string(),
                    c["name"].as_str().unwrap().to_string(),
                    rate.as_f64().unwrap(),
                ));
            }
        }
        out
    }

    /// Waits until every cog has a rate above zero.
    pub(super) fn wait_flowing(&self) {
        wait_for("every cog to have a rate", || {
            self.rates().iter().all(|(_, _, r)| *r > 0.0)
        });
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("d.log")).unwrap_or_default()
    }

    /// Stops feeding, closes stdin and checks the daemon ends well.
    pub(super) fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(f) = self.feeder.take() {
            drop(f.join().unwrap());
        }
        let st = wait_exit(&mut self.child);
        assert!(st.success(), "exit {st:?}; log:\n{}", self.log());
    }
}

impl Drop for LiveDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
    }
}

/// One request with `Connection: close`, read to the end: (status, body).
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head[9..12].parse().unwrap(), body.to_string())
}

/// Chromium's path, or `None` (with the reason printed) when it is not installed.
fn chromium() -> Option<&'static str> {
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(name);
        }
    }
    eprintln!("skipped: chromium is not installed (Debian package `chromium`)");
    None
}

/// Runs headless Chromium with `args` on `url`, giving the page `budget_ms` of virtual
/// time (timers run fast, fetches wait for the daemon); returns its stdout. Killed and
/// failed after PATIENCE.
fn browse(browser: &str, profile: &Path, args: &[&str], budget_ms: u32, url: &str) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--virtual-time-budget={budget_ms}"),
        ])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "chromium failed: {st:?}\n{err}");
    reader.join().unwrap()
}

/// The value of attribute `name` in an element's opening tag `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[at..].split('"').next()
}

/// The opening tags of the cog boxes in `dom`.
fn cog_tags(dom: &str) -> Vec<&str> {
    dom.match_indices("<div class=\"cog ")
        .map(|(i, _)| &dom[i..i + dom[i..].find('>').unwrap_or(0)])
        .collect()
}

/// Undoes the escapes a serialised attribute value holds.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[test]
fn the_live_page_draws_every_cog_with_its_rate() {
    let Some(browser) = chromium() else {
        return;
    };
    let d = LiveDaemon::start("http-page");
    // The page is served with a policy that allows nothing from elsewhere.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut head = String::new();
    s.read_to_string(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(head.contains("Content-Security-Policy: default-src 'none'; script-src 'self'"));
    for path in ["/app.js", "/style.css", "/graph"] {
        assert_eq!(d.get(path).0, 200, "{path}");
    }
    assert_eq!(d.post("/").0, 405);
    let graph: serde_json::Value = serde_json::from_str(&d.get("/graph").1).unwrap();
    let kinds: Vec<&str> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["error", "tee"]);

    d.wait_flowing();
    let expected = d.rates();
    assert_eq!(expected.len(), 8, "{expected:?}"); // 4 cogs, 2 trains of inbox and file
    let profile = TempDir::new("http-page-chromium");
    let dom = browse(browser, profile.path(), &["--dump-dom"], 4000, &d.url());

    let tags = cog_tags(&dom);
    let mut seen = Vec::new();
    for tag in &tags {
        let train = unescape(attr(tag, "data-train").unwrap_or(""));
        let cog = unescape(attr(tag, "data-cog").unwrap_or(""));
        let rate: f64 = attr(tag, "data-rate")
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("a cog box without its rate: {tag}"));
        assert!(rate > 0.0, "{train}/{cog} drawn with rate {rate}");
        seen.push((train, cog));
    }
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(t, c, _)| (t.clone(), c.clone()))
        .collect();
    assert_eq!(seen, want, "the cogs drawn, in train order\n{dom}");

    // Edges between trains, drawn by kind.
    assert!(dom.contains("<path class=\"error\""), "no dead-letter edge");
    assert!(dom.contains("<path class=\"tee\""), "no tee edge");
    // The parser's failures are highlighted, and counted in the bar.
    let parser = tags
        .iter()
        .find(|t| attr(t, "data-cog") == Some("json_parse#2"))
        .unwrap();
    assert!(parser.contains("has-errors"), "{parser}");
    let clean = tags
        .iter()
        .find(|t| attr(t, "data-cog") == Some("tee#3"))
        .unwrap();
    assert!(!clean.contains("has-errors"), "{clean}");
    assert!(
        dom.contains("data-state=\"live\""),
        "the page says it is not live"
    );
    // The name with markup is text: escaped in the DOM, never an element.
    assert!(dom.contains("&lt;b&gt;in&lt;/b&gt;&amp;amp;"), "{dom}");
    assert!(!dom.contains("<b>in</b>"), "a name became markup");

    // A paused supply shows as held.
    let (code, body) = d.post("/trains/main/pause");
    assert_eq!(code, 200, "{body}");
    let dom = browse(browser, profile.path(), &["--dump-dom"], 2000, &d.url());
    let supply = cog_tags(&dom)
        .into_iter()
        .find(|t| attr(t, "data-kind") == Some("supply"))
        .map(str::to_string)
        .unwrap();
    assert!(supply.contains(" held"), "{supply}");
    assert!(
        dom.contains("<span class=\"pill held\">held</span>"),
        "{dom}"
    );
    assert_eq!(d.post("/trains/main/resume").0, 200);

    // The screenshot, kept for a person to look at.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("live-page.png");
    let _ = std::fs::remove_file(&png);
    d.wait_flowing();
    browse(
        browser,
        profile.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,800",
        ],
        8000,
        &d.url(),
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{png:?}"
    );
    eprintln!("screenshot: {}", png.display());
    d.stop();
}
