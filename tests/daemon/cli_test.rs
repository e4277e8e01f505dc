//! `deadbeat test`: a train run on the lines of a file, its drains printed to stdout, as
//! `run` would write them, with neither outputs nor state touched.

use super::*;

/// The bundled configurations.
fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// Runs `deadbeat test CONFIG ARGS...`: (exit code, stdout, stderr).
fn test_cmd(config: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["test", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = Command::new(BIN).args(&all).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn test_ok(config: &Path, args: &[&str]) -> String {
    let (code, out, err) = test_cmd(config, args);
    assert_eq!(code, 0, "stderr:\n{err}");
    out
}

/// The first `n` lines of the bundled access log, the last without its newline, and a
/// line no access-log parser takes.
fn sample_lines(n: usize) -> String {
    let log = std::fs::read_to_string(config_dir().join("data/access.log")).unwrap();
    let mut s: String = log.lines().take(n).map(|l| format!("{l}\n")).collect();
    s.push_str("this is not an access log line\n");
    s.push_str(log.lines().nth(n).unwrap());
    s
}

/// Every file under `dir`, with its contents, sorted by path.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn quickstart_prints_what_run_writes_and_writes_nothing() {
    let dir = TempDir::new("test-quickstart");
    // The bundled config as it is, beside a copy of its data, so that its relative
    // outputs (../var/quickstart.json, ../var/state) land in this temporary directory.
    let conf = dir.path().join("config");
    std::fs::create_dir_all(conf.join("data")).unwrap();
    let text = std::fs::read_to_string(config_dir().join("quickstart.toml")).unwrap();
    std::fs::write(conf.join("quickstart.toml"), &text).unwrap();
    std::fs::copy(
        config_dir().join("data/access.log"),
        conf.join("data/access.log"),
    )
    .unwrap();
    let input = dir.path().join("sample.log");
    std::fs::write(&input, sample_lines(4)).unwrap();

    let printed = test_ok(
        &conf.join("quickstart.toml"),
        &["--input", input.to_str().unwrap()],
    );
    assert_eq!(printed.lines().count(), 6, "{printed}");
    let var = dir.path().join("var");
    assert!(
        !var.exists(),
        "test wrote {:?}",
        snapshot(&var).iter().map(|(p, _)| p).collect::<Vec<_>>()
    );

    // What `run` writes for the same lines: the same config reading the sample file.
    let abs = input.to_str().unwrap();
    assert!(text.contains("paths = [\"data/access.log\"]"));
    let run_conf = conf.join("run.toml");
    std::fs::write(
        &run_conf,
        text.replace(
            "paths = [\"data/access.log\"]",
            &format!("paths = [{abs:?}]"),
        ),
    )
    .unwrap();
    run_ok(&run_conf);
    let written = std::fs::read_to_string(var.join("quickstart.json")).unwrap();
    assert_eq!(printed, written);
    assert!(written.contains(&format!("\"path\":{abs:?}")), "{written}");
}

/// A stdin train with a parser whose failures go per `on_error`, and a train for dead
/// letters when they go to one.
fn parser_config(on_error: &str) -> String {
    let mut text = format!(
        r#"
[[train]]
name = "main"
  [[train.cog]]
  type = "stdin"
  [[train.cog]]
  type = "regex"
  preset = "apache_combined"
  on_error = "{on_error}"
  [[train.cog]]
  type = "remove"
  fields = ["message"]
  [[train.cog]]
  type = "stdout"
  format = "json"
"#
    );
    if on_error.starts_with("train:") {
        text.push_str(REJECTS);
    }
    text
}

const REJECTS: &str = r#"
[[train]]
name = "rejects"
  [[train.cog]]
  type = "stdout"
  format = "template"
  template = "rejected: {message} ({error})"
"#;

#[test]
fn a_parse_error_goes_per_on_error_as_in_run() {
    let dir = TempDir::new("test-on-error");
    let sample = sample_lines(3);
    let input = dir.path().join("sample.log");
    std::fs::write(&input, &sample).unwrap();
    for on_error in ["keep", "drop", "train:rejects"] {
        let cfg = write_config(dir.path(), &parser_config(on_error));
        let printed = test_ok(&cfg, &["--input", input.to_str().unwrap()]);
        let (st, ran, err) = run_with_stdin(&cfg, sample.as_bytes());
        assert!(st.success(), "{err}");
        let ran = String::from_utf8(ran).unwrap();
        let rejected: Vec<&str> = printed
            .lines()
            .filter(|l| l.contains("\"error\"") || l.contains("rejected"))
            .collect();
        match on_error {
            "keep" => {
                // In the main train's output, with the reason; stdin gives no `path`.
                assert_eq!(printed, ran);
                assert_eq!(rejected.len(), 1, "{printed}");
                assert_eq!(rejected[0], "{\"error\":\"no match: expected a [time]\"}");
                assert!(!printed.contains("\"offset\""), "{printed}");
                assert_eq!(printed.lines().count(), 5);
            }
            "drop" => {
                assert_eq!(printed, ran);
                assert!(rejected.is_empty(), "{printed}");
                assert_eq!(printed.lines().count(), 4);
            }
            _ => {
                // In the dead-letter train, whose lines say so; the main train's lines in
                // order, as run writes them.
                assert_eq!(
                    rejected,
                    [
                        "[rejects] rejected: this is not an access log line (no match: expected a [time])"
                    ],
                    "{printed}"
                );
                let main: Vec<&str> = printed.lines().filter(|l| !l.starts_with('[')).collect();
                let ran_main: Vec<&str> =
                    ran.lines().filter(|l| !l.starts_with("rejected")).collect();
                assert_eq!(main, ran_main);
                let mut unprefixed: Vec<&str> = printed
                    .lines()
                    .map(|l| l.strip_prefix("[rejects] ").unwrap_or(l))
                    .collect();
                let mut ran_all: Vec<&str> = ran.lines().collect();
                unprefixed.sort();
                ran_all.sort();
                assert_eq!(unprefixed, ran_all);
            }
        }
    }
}

#[test]
fn state_and_outputs_are_neither_read_nor_written() {
    let dir = TempDir::new("test-state");
    let data = dir.path().join("app.log");
    let lines = "a\nb\na\nc\nb\n";
    std::fs::write(&data, lines).unwrap();
    let text = format!(
        r#"
[state]
dir = "state"
[[train]]
name = "main"
  [[train.cog]]
  type = "tail"
  paths = [{data:?}]
  follow = false
  [[train.cog]]
  type = "dedup"
  fields = ["message"]
  within = "1h"
  persist = true
  [[train.cog]]
  type = "file_out"
  path = "out/kept.log"
  create_dirs = true
"#,
        data = data.to_str().unwrap()
    );
    let cfg = write_config(dir.path(), &text);
    // A real run: the checkpoint, the remembered keys and the output.
    run_ok(&cfg);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/kept.log")).unwrap(),
        "a\nb\nc\n"
    );
    let state = snapshot(&dir.path().join("state"));
    assert!(
        state
            .iter()
            .any(|(p, _)| p.to_string_lossy().contains("dedup")),
        "{state:?}"
    );
    let output = snapshot(&dir.path().join("out"));

    // `test` starts from empty state: every key is new again, the checkpoint is not
    // read (a real second run would read nothing new), and nothing is saved.
    let input = dir.path().join("sample.log");
    std::fs::write(&input, "a\nb\na\nd\n").unwrap();
    let printed = test_ok(&cfg, &["--input", input.to_str().unwrap()]);
    assert_eq!(printed, "a\nb\nd\n");
    assert_eq!(snapshot(&dir.path().join("state")), state);
    assert_eq!(snapshot(&dir.path().join("out")), output);
}

#[test]
fn a_train_fed_by_others_takes_the_input_at_its_head() {
    let dir = TempDir::new("test-fed");
    let input = dir.path().join("sample.log");
    std::fs::write(&input, "one\ntwo\n").unwrap();
    let cfg = config_dir().join("access_to_json.toml");
    let printed = test_ok(
        &cfg,
        &["--input", input.to_str().unwrap(), "--train", "rejects"],
    );
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2, "{printed}");
    assert!(
        lines[0].starts_with("{\"message\":\"one\",\"path\":"),
        "{printed}"
    );
    // The default train sends its dead letters there, prefixed.
    let printed = test_ok(&cfg, &["--input", input.to_str().unwrap()]);
    assert_eq!(printed.lines().count(), 2);
    assert!(
        printed
            .lines()
            .all(|l| l.starts_with("[rejects] {\"message\":")),
        "{printed}"
    );
}

#[test]
fn usage_and_config_errors_exit_2() {
    let dir = TempDir::new("test-errors");
    let input = dir.path().join("sample.log");
    std::fs::write(&input, "x\n").unwrap();
    let inp = input.to_str().unwrap();
    let cfg = config_dir().join("access_to_json.toml");

    let (code, out, err) = test_cmd(&cfg, &["--input", inp, "--train", "nope"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("no train named \"nope\""), "{err}");
    assert!(err.contains("(trains: access, rejects)"), "{err}");

    let missing = dir.path().join("missing.log");
    let (code, _, err) = test_cmd(&cfg, &["--input", missing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read") && err.contains("missing.log"),
        "{err}"
    );
    let (code, _, err) = test_cmd(&cfg, &["--input", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("is a directory"), "{err}");

    let (code, _, err) = test_cmd(&cfg, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("needs --input FILE"), "{err}");
    let (code, _, err) = test_cmd(&cfg, &["--inptu", inp]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean \"--input\"?"), "{err}");

    // A configuration error, as check reports it.
    let bad = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"stdout\"\nformt = \"json\"\n",
    );
    let (code, out, err) = test_cmd(&bad, &["--input", inp]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    let check = Command::new(BIN)
        .args(["check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(err, String::from_utf8_lossy(&check.stderr));
    assert!(
        err.contains(":7:1: train \"t\", cog stdout#2, key \"formt\""),
        "{err}"
    );

    // An error in a train the tested one does not reach is still one: a train nothing
    // sends to and without a supply.
    let bad = write_config(dir.path(), &format!("{}{REJECTS}", parser_config("keep")));
    let (code, out, err) = test_cmd(&bad, &["--input", inp]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    let check = Command::new(BIN)
        .args(["check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(err, String::from_utf8_lossy(&check.stderr));
    assert!(
        err.contains("train \"rejects\": this train has no supply"),
        "{err}"
    );
}

// The progress bar of batch runs (`run` on a terminal).

/// A tmux server of its own (`tmux -L`), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(tag: &str, command: &str) -> Option<Tmux> {
        let ok = Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: tmux is not installed (Debian package tmux)");
            return None;
        }
        // A server of its own each time: one just killed may still hold its socket.
        static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Tmux {
            socket: format!("deadbeat-{tag}-{}-{serial}", std::process::id()),
        };
        let st = t
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "main",
                "-x",
                "150",
                "-y",
                "40",
                command,
            ])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        Some(t)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).env_remove("TMUX");
        c
    }

    /// The visible text of the pane.
    fn pane(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "main"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the pane until `cond` holds on it; the pane then.
    fn wait(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            last = self.pane();
            if cond(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}; pane:\n{last}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

/// A 12 MB input, far more than a pipe and a read hold, so that a run writing to a pipe
/// nobody reads stops early with most of it unread.
fn big_input(dir: &Path) -> (PathBuf, u64) {
    let p = dir.join("big.log");
    let mut s = String::with_capacity(12 << 20);
    let mut i = 0u64;
    while s.len() < 12 << 20 {
        s.push_str(&format!(
            "line {i:09} the quick brown fox jumps over the lazy dog\n"
        ));
        i += 1;
    }
    std::fs::write(&p, &s).unwrap();
    (p, s.len() as u64)
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path that lives through the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", p.display());
}

/// Opens the FIFO `p` for reading in a thread (which lets the writer's open go through),
/// holds it unread until told, then reads it to its end: the byte count.
fn hold_fifo(p: &Path) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<u64>) {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let p = p.to_path_buf();
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(&p).unwrap();
        let _ = wait.recv();
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match f.read(&mut buf).unwrap() {
                0 => return n,
                k => n += k as u64,
            }
        }
    });
    (go, reader)
}

const BAR_CONFIG: &str = "[[train]]\nname = \"m\"\n[[train.cog]]\ntype = \"file_in\"\n\
                          paths = [\"big.log\"]\n[[train.cog]]\ntype = \"stdout\"\n";

const STDIN_CONFIG: &str =
    "[[train]]\nname = \"m\"\n[[train.cog]]\ntype = \"stdin\"\n[[train.cog]]\ntype = \"stdout\"\n";

/// The bar's line on the pane, if one is there.
fn bar_line(pane: &str) -> Option<&str> {
    pane.lines().find(|l| l.contains("lines/s"))
}

#[test]
fn a_batch_run_on_a_terminal_shows_progress_then_clears_it() {
    let dir = TempDir::new("progress-tty");
    let (_, size) = big_input(dir.path());
    let fifo = dir.path().join("out.fifo");
    mkfifo(&fifo);
    for (config, redirect) in [(BAR_CONFIG, ""), (STDIN_CONFIG, " < big.log")] {
        let cfg = write_config(dir.path(), config);
        let (go, reader) = hold_fifo(&fifo);
        let command = format!(
            "cd {:?} && {BIN:?} run {:?}{redirect} > {:?}; echo EXIT=$?; sleep 60",
            dir.path(),
            cfg,
            fifo
        );
        let Some(tmux) = Tmux::start("progress", &command) else {
            return;
        };
        // The run blocks on the full pipe: the bar stays on, with bytes of the total.
        let pane = tmux.wait("the progress bar", |p| bar_line(p).is_some());
        let line = bar_line(&pane).unwrap();
        assert!(line.contains(" / 11.") || line.contains(" / 12."), "{line}");
        assert!(line.contains("MiB ["), "{line}");
        assert!(line.contains("%") && line.contains("ETA"), "{line}");
        go.send(()).unwrap();
        let pane = tmux.wait("the end of the run", |p| p.contains("EXIT="));
        assert_eq!(reader.join().unwrap(), size);
        assert!(pane.contains("EXIT=0"), "{pane}");
        assert!(
            bar_line(&pane).is_none(),
            "the bar is cleared at the end:\n{pane}"
        );
        // Log lines start at the left margin, never after a bar's remains.
        for l in pane.lines().filter(|l| l.contains(" INFO ")) {
            assert!(l.starts_with("20"), "{l:?} in:\n{pane}");
        }
    }
}

#[test]
fn quiet_hides_the_bar_on_a_terminal() {
    let dir = TempDir::new("progress-quiet");
    let (_, size) = big_input(dir.path());
    let fifo = dir.path().join("out.fifo");
    mkfifo(&fifo);
    let cfg = write_config(dir.path(), BAR_CONFIG);
    let (go, reader) = hold_fifo(&fifo);
    let command = format!(
        "cd {:?} && {BIN:?} run --quiet {:?} > {:?}; echo EXIT=$?; sleep 60",
        dir.path(),
        cfg,
        fifo
    );
    let Some(tmux) = Tmux::start("quiet", &command) else {
        return;
    };
    tmux.wait("the run to start", |p| p.contains("trains started"));
    // The run is blocked on the full pipe; a bar would be drawn four times a second.
    std::thread::sleep(Duration::from_millis(1200));
    let pane = tmux.pane();
    assert!(bar_line(&pane).is_none(), "{pane}");
    go.send(()).unwrap();
    let pane = tmux.wait("the end of the run", |p| p.contains("EXIT="));
    assert!(pane.contains("EXIT=0"), "{pane}");
    assert_eq!(reader.join().unwrap(), size);
}

#[test]
fn no_bar_when_stderr_is_no_terminal() {
    let dir = TempDir::new("progress-pipe");
    let (input, size) = big_input(dir.path());
    let cfg = write_config(dir.path(), BAR_CONFIG);
    let mut child = Command::new(BIN)
        .args(["run", cfg.to_str().unwrap()])
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Blocked on its full stdout for a while: a bar would have been drawn meanwhile.
    std::thread::sleep(Duration::from_millis(1200));
    let mut out = child.stdout.take().unwrap();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match out.read(&mut buf).unwrap() {
            0 => break,
            k => n += k as u64,
        }
    }
    let err = stderr_of(&mut child);
    assert!(wait_exit(&mut child).success(), "{err}");
    assert_eq!(n, size);
    assert!(!err.contains('\r') && !err.contains("lines/s"), "{err}");
    assert!(err.contains("trains started"), "{err}");
}
