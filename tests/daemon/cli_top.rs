//! `deadbeat top` (issue 17) in a real terminal: tmux runs it against a daemon with data
//! flowing; the screen must show every cog with its rate, errors and held supplies, keep
//! going when the daemon goes away, and give the terminal back on `q` and on SIGTERM.

use super::http_page::LiveDaemon;
use super::*;

/// A tmux server of the test's own (its socket in a temporary directory), with one
/// session running a shell command.
struct Tmux {
    dir: TempDir,
}

impl Tmux {
    /// `None`, with the reason printed, when tmux is not installed.
    fn start(tag: &str, command: &str) -> Option<Tmux> {
        if Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            eprintln!("skipped: tmux is not installed");
            return None;
        }
        let t = Tmux {
            dir: TempDir::new(tag),
        };
        let out = t
            .cmd(&["new-session", "-d", "-s", "top", "-x", "132", "-y", "40"])
            .arg(command)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(t)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S")
            .arg(self.dir.path().join("sock"))
            .args(args)
            .env_remove("TMUX")
            .env("TERM", "xterm-256color")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen, as text.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// The value of a pane format such as `#{alternate_on}`.
    fn pane(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", "top", format])
            .trim()
            .to_string()
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "top", keys]);
    }

    /// Waits until the screen satisfies `cond`; fails with the last screen.
    fn wait_screen(&self, what: &str, mut cond: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pid of the program the pane's shell runs.
    fn child_pid(&self) -> u32 {
        let shell = self.pane("#{pane_pid}");
        let children =
            std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
        children.split_whitespace().next().unwrap().parse().unwrap()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).output();
    }
}

/// The pane's command: `top` on `url`, then its exit code and the terminal's modes, then
/// `END`.
fn top_then_stty(url: &str) -> String {
    format!("'{BIN}' top --url '{url}'; echo EXIT=$?; stty -a; echo END; exec sleep 600")
}

/// The rows of `screen` that show a cog: `(name, rate, errors, state)`.
fn cog_rows(screen: &str) -> Vec<(String, String, String, String)> {
    screen
        .lines()
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 8).then(|| {
                (
                    w[0].to_string(),
                    w[3].to_string(),
                    w[4].to_string(),
                    w[2].to_string(),
                )
            })
        })
        .collect()
}

/// Whether `stty -a` output shows the terminal's usual modes: canonical input and echo.
fn terminal_restored(screen: &str) -> bool {
    let words: Vec<&str> = screen.split_whitespace().collect();
    ["icanon", "echo", "isig", "ixon", "icrnl"]
        .iter()
        .all(|m| words.contains(m))
}

#[test]
fn top_shows_the_live_status_and_quits_on_q() {
    let d = LiveDaemon::start("cli-top");
    let Some(tmux) = Tmux::start("cli-top-tmux", &top_then_stty(&d.url())) else {
        return;
    };
    d.wait_flowing();
    let names: Vec<String> = d.rates().into_iter().map(|(_, c, _)| c).collect();
    // Frames may be captured half drawn: one whole condition is waited for.
    let screen = tmux.wait_screen("every cog with a rate, the parser's errors", |s| {
        let rows = cog_rows(s);
        names.iter().all(|n| {
            rows.iter()
                .any(|(name, rate, _, _)| name == n && rate != "0")
        }) && rows
            .iter()
            .any(|(name, _, errors, _)| name == "json_parse#2" && errors != "0")
    });
    assert_eq!(tmux.pane("#{alternate_on}"), "1", "{screen}");
    for train in ["main", "rejects", "copies"] {
        assert!(
            screen.lines().any(|l| l.starts_with(train)),
            "{train}:\n{screen}"
        );
    }
    // The parser's failures are counted on its row (waited for), the others have none.
    let rows = cog_rows(&screen);
    let errors = |name: &str| {
        rows.iter()
            .find(|r| r.0 == name)
            .map(|r| r.2.clone())
            .unwrap()
    };
    assert_eq!(errors("tee#3"), "0", "{screen}");
    assert!(screen.contains("q  quit"), "{screen}");

    // A held supply shows as held.
    assert_eq!(d.post("/trains/main/pause").0, 200);
    tmux.wait_screen("the supply held", |s| {
        cog_rows(s)
            .iter()
            .any(|r| r.0.contains("in</b>") && r.3 == "held")
    });

    // The daemon goes away: top says so and goes on.
    drop(d);
    tmux.wait_screen("the lost daemon", |s| s.contains("no answer since"));
    tmux.keys("q");
    let screen = tmux.wait_screen("top to exit", |s| s.lines().any(|l| l == "END"));
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(terminal_restored(&screen), "{screen}");
    assert_eq!(tmux.pane("#{alternate_on}"), "0");
    assert_eq!(
        tmux.pane("#{cursor_flag}"),
        "1",
        "the cursor is still hidden"
    );
}

#[test]
fn top_scrolls_and_gives_the_terminal_back_on_sigterm() {
    let d = LiveDaemon::start("cli-top-term");
    let Some(tmux) = Tmux::start("cli-top-term-tmux", &top_then_stty(&d.url())) else {
        return;
    };
    tmux.wait_screen("the view", |s| s.contains("json_parse#2"));
    // A terminal too small for the table scrolls it: 11 rows (3 trains, 8 cogs), 5 shown.
    tmux.run(&["resize-window", "-t", "top", "-x", "100", "-y", "10"]);
    tmux.wait_screen("the table cut", |s| s.contains("rows 1-5 of 11"));
    tmux.keys("End");
    let screen = tmux.wait_screen("the end of the table", |s| s.contains("rows 7-11 of 11"));
    assert!(screen.lines().any(|l| l.starts_with("copies")), "{screen}");
    assert!(!screen.contains("json_parse#2"), "{screen}");
    tmux.keys("k");
    tmux.wait_screen("a row up", |s| s.contains("rows 6-10 of 11"));
    tmux.keys("Home");
    tmux.wait_screen("the top of the table", |s| {
        s.contains("rows 1-5 of 11") && s.contains("json_parse#2")
    });
    // Room again for what the shell prints after `top`.
    tmux.run(&["resize-window", "-t", "top", "-x", "132", "-y", "40"]);
    tmux.wait_screen("the whole table", |s| !s.contains("of 11"));
    kill(tmux.child_pid(), libc::SIGTERM);
    let screen = tmux.wait_screen("top to exit", |s| s.lines().any(|l| l == "END"));
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(terminal_restored(&screen), "{screen}");
    assert_eq!(tmux.pane("#{alternate_on}"), "0");
    d.stop();
}

#[test]
fn top_without_a_terminal_prints_one_view() {
    let d = LiveDaemon::start("cli-top-once");
    d.wait_flowing();
    let out = deadbeat()
        .args(["top", "--url", &d.url()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "colours without a terminal: {text:?}"
    );
    for (_, cog, _) in d.rates() {
        assert!(cog_rows(&text).iter().any(|r| r.0 == cog), "{cog}:\n{text}");
    }
    d.stop();
}

#[test]
fn top_reads_a_unix_socket() {
    let d = LiveDaemon::start_listening("cli-top-unix", "unix:ctl.sock");
    let url = format!("unix:{}", d.dir().join("ctl.sock").display());
    let out = deadbeat()
        .args(["top", "--url", &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let rows = cog_rows(&text);
    for cog in ["json_parse#2", "tee#3", "inbox"] {
        assert!(rows.iter().any(|r| r.0 == cog), "{cog}:\n{text}");
    }
    d.stop();
}

#[test]
fn top_on_an_unreachable_url_fails_clearly() {
    // A port nobody listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = deadbeat()
        .args(["top", "--url", &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot read the status of {url}"))
            && err.contains("Connection refused"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // Not a daemon's control server: a clear error too.
    let dir = TempDir::new("cli-top-bad");
    let sock = dir.path().join("none.sock");
    let out = deadbeat()
        .args(["top", "--url", &format!("unix:{}", sock.display())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("none.sock"));

    // A URL that is no URL is a usage error.
    for bad in [
        &["top", "--url", "127.0.0.1:8686"][..],
        &["top", "--url"],
        &["top", "x"],
    ] {
        let out = deadbeat().args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
}
