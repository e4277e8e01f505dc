//! `tail` driven through the daemon: rotation, truncation, restarts, crashes, many files.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;

use super::*;

/// A daemon following files of `dir/logs` into `dir/out.log`, stderr into `dir/err.log`.
struct Tailer {
    dir: PathBuf,
    child: Child,
}

fn config(dir: &Path, inotify: bool, keys: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[state]\ndir = \"st\"\n[engine]\ninotify = {inotify}\n\
             [[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"tail\"\n{keys}\n\
             [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n"
        ),
    )
}

impl Tailer {
    fn start(dir: &Path, cfg: &Path) -> Tailer {
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("err.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["run", cfg.to_str().unwrap()])
            .stderr(err)
            .spawn()
            .unwrap();
        Tailer {
            dir: dir.to_path_buf(),
            child,
        }
    }

    /// Runs a daemon on `cfg` until `n` lines are in out.log, and stops it cleanly.
    fn catch_up(dir: &Path, cfg: &Path, n: usize) {
        let t = Tailer::start(dir, cfg);
        t.wait_lines(n);
        t.stop();
    }

    fn wait_lines(&self, n: usize) {
        let out = self.dir.join("out.log");
        wait_for(&format!("{n} lines in out.log"), || line_count(&out) >= n);
    }

    /// SIGTERM and a clean exit.
    fn stop(mut self) {
        kill(self.child.id(), libc::SIGTERM);
        let st = wait_exit(&mut self.child);
        assert!(st.success(), "{}", self.stderr());
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("err.log")).unwrap_or_default()
    }
}

impl Drop for Tailer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(prefix: &str, from: usize, to: usize) -> String {
    (from..to).map(|i| format!("{prefix} {i:06}\n")).collect()
}

fn append(p: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// How often each line of `out.log` arrived.
fn counts(dir: &Path) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(dir.join("out.log")).unwrap_or_default();
    let mut m = HashMap::new();
    for l in text.lines() {
        *m.entry(l.to_string()).or_insert(0) += 1;
    }
    m
}

/// Every line of `expected` arrived exactly once, and nothing else did.
fn assert_exactly_once(dir: &Path, expected: &[&str]) {
    let got = counts(dir);
    let want: String = expected.concat();
    let mut want_n = 0;
    for l in want.lines() {
        want_n += 1;
        assert_eq!(got.get(l), Some(&1), "line {l:?}");
    }
    assert_eq!(got.len(), want_n, "unexpected extra lines");
}

fn logs(dir: &Path) -> PathBuf {
    let p = dir.join("logs");
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A fresh directory tagged `tag`, its `logs/` and the path of `logs/app.log` (not created).
fn app_log(tag: &str) -> (TempDir, PathBuf, PathBuf) {
    let dir = TempDir::new(tag);
    let logs = logs(dir.path());
    let app = logs.join("app.log");
    (dir, logs, app)
}

/// Cuts `p` to length 0 in place, as copytruncate and `> file` do.
fn truncate(p: &Path) {
    OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(0)
        .unwrap();
}

const FOLLOW: &str = "paths = [\"logs/*.log\"]\nstart_at = \"beginning\"\nrotate_wait = \"2s\"\n";

fn rename_rotation(inotify: bool) {
    let (dir, logs, app) = app_log(if inotify { "rot-ino" } else { "rot-poll" });
    append(&app, &lines("a", 0, 1000));
    let cfg = config(
        dir.path(),
        inotify,
        &format!("{FOLLOW}poll_interval = \"50ms\"\n"),
    );
    let t = Tailer::start(dir.path(), &cfg);
    t.wait_lines(1000);
    append(&app, &lines("a", 1000, 1500));
    // logrotate `create`: rename, new file; the application still writes the old one.
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    append(&logs.join("app.log.1"), &lines("a", 1500, 1700));
    append(&app, &lines("b", 0, 300));
    t.wait_lines(2000);
    // A new file is discovered too.
    append(&logs.join("new.log"), &lines("n", 0, 10));
    t.wait_lines(2010);
    t.stop();
    assert_exactly_once(
        dir.path(),
        &[
            &lines("a", 0, 1700),
            &lines("b", 0, 300),
            &lines("n", 0, 10),
        ],
    );
}

#[test]
fn rename_rotation_reads_the_old_file_to_its_end() {
    rename_rotation(true);
}

#[test]
fn rename_rotation_and_discovery_without_inotify() {
    rename_rotation(false);
}

#[test]
fn copytruncate_and_plain_truncate_restart_from_zero() {
    let (dir, logs, app) = app_log("copytrunc");
    append(&app, &lines("a", 0, 1000));
    let cfg = config(dir.path(), true, FOLLOW);
    let t = Tailer::start(dir.path(), &cfg);
    t.wait_lines(1000);
    // copytruncate: the copy is not followed (its name does not match).
    std::fs::copy(&app, logs.join("app.log.1")).unwrap();
    truncate(&app);
    append(&app, &lines("b", 0, 100));
    t.wait_lines(1100);
    // Plain truncation.
    truncate(&app);
    append(&app, &lines("c", 0, 10));
    t.wait_lines(1110);
    t.stop();
    assert_exactly_once(
        dir.path(),
        &[
            &lines("a", 0, 1000),
            &lines("b", 0, 100),
            &lines("c", 0, 10),
        ],
    );
}

#[test]
fn rotation_while_stopped_loses_and_repeats_nothing() {
    let (dir, logs, app) = app_log("rot-stopped");
    append(&app, &lines("a", 0, 500));
    let cfg = config(dir.path(), true, FOLLOW);
    Tailer::catch_up(dir.path(), &cfg, 500);
    append(&app, &lines("a", 500, 600));
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    append(&app, &lines("b", 0, 50));
    Tailer::catch_up(dir.path(), &cfg, 650);
    assert_exactly_once(dir.path(), &[&lines("a", 0, 600), &lines("b", 0, 50)]);
}

#[test]
fn restart_resumes_at_the_acknowledged_checkpoint() {
    let (dir, _, app) = app_log("restart");
    append(&app, &lines("a", 0, 300));
    // No drain acknowledges: the checkpoint stays where it was, everything is sent again.
    let unacked = write_config(
        dir.path(),
        "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"tail\"\n\
         paths = [\"logs/*.log\"]\nstart_at = \"beginning\"\n[[train.cog]]\ntype = \"unix_out\"\n\
         path = \"nobody-listens.sock\"\ndrain_timeout = \"10ms\"\n",
    );
    let t = Tailer::start(dir.path(), &unacked);
    wait_for("tail to start", || t.stderr().contains("trains started"));
    t.stop();
    // Same `paths`, same train name: the same checkpoint.
    let cfg = config(dir.path(), true, FOLLOW);
    Tailer::catch_up(dir.path(), &cfg, 300);
    append(&app, &lines("a", 300, 400));
    Tailer::catch_up(dir.path(), &cfg, 400);
    assert_exactly_once(dir.path(), &[&lines("a", 0, 400)]);
}

#[test]
fn kill_9_mid_stream_loses_nothing() {
    let (dir, _, app) = app_log("kill9");
    let (chunk, chunks) = (1000, 300);
    let total = chunk * chunks;
    append(&app, &lines("a", 0, chunk));
    let cfg = config(dir.path(), true, FOLLOW);
    let mut t = Tailer::start(dir.path(), &cfg);
    // The application keeps writing through the crash and the restart.
    let writer = {
        let app = app.clone();
        std::thread::spawn(move || {
            for c in 1..chunks {
                append(&app, &lines("a", c * chunk, (c + 1) * chunk));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    t.wait_lines(chunk);
    // Kill once a checkpoint holds progress.
    wait_for("a checkpoint past the start", || {
        checkpoint_offset(dir.path()) > 0
    });
    kill(t.child.id(), libc::SIGKILL);
    let _ = wait_exit(&mut t.child);
    let before = line_count(&dir.path().join("out.log"));
    let t = Tailer::start(dir.path(), &cfg);
    writer.join().unwrap();
    wait_for("every line", || counts(dir.path()).len() >= total);
    t.stop();
    let got = counts(dir.path());
    let dups: usize = got.values().map(|&n| n - 1).sum();
    assert_eq!(got.len(), total, "lines lost or foreign lines");
    assert!(before < total, "the kill came after the end");
    eprintln!("kill -9 after {before} of {total} lines written out: {dups} duplicates");
    // Only what was acknowledged after the last checkpoint (at most a second's worth)
    // or not acknowledged at all is sent again.
    assert!(
        dups < before,
        "{dups} duplicates of {before} lines written before the kill"
    );
}

/// The offset of the first file in the checkpoint, 0 while there is none.
fn checkpoint_offset(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir.join("st")) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".state"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.lines().nth(1)?.split(' ').nth(4)?.parse().ok())
        .next()
        .unwrap_or(0)
}

#[test]
fn thousands_of_files_with_bounded_descriptors() {
    let dir = TempDir::new("many");
    let logs = logs(dir.path());
    let n = 2000;
    for i in 0..n {
        append(
            &logs.join(format!("f{i:04}.log")),
            &lines(&format!("f{i}"), 0, 5),
        );
    }
    let max_open = 64;
    let cfg = config(
        dir.path(),
        true,
        &format!("{FOLLOW}max_open_files = {max_open}\n"),
    );
    let t = Tailer::start(dir.path(), &cfg);
    let fd_dir = PathBuf::from(format!("/proc/{}/fd", t.child.id()));
    let mut most = 0;
    let out = dir.path().join("out.log");
    wait_for("all lines of all files", || {
        most = most.max(std::fs::read_dir(&fd_dir).map_or(0, |d| d.count()));
        line_count(&out) >= n * 5
    });
    // Files are still discovered and followed.
    append(&logs.join("late.log"), "late 1\n");
    append(&logs.join("f0000.log"), "f0 more\n");
    wait_for("late lines", || {
        most = most.max(std::fs::read_dir(&fd_dir).map_or(0, |d| d.count()));
        line_count(&out) >= n * 5 + 2
    });
    t.stop();
    assert!(
        most <= max_open + 16,
        "{most} descriptors open, max_open_files = {max_open}"
    );
    let got = counts(dir.path());
    assert_eq!(got.len(), n * 5 + 2);
    assert!(got.values().all(|&c| c == 1));
}

#[test]
fn long_line_is_cut_at_max_line_bytes() {
    let dir = TempDir::new("longline");
    let logs = logs(dir.path());
    let mut text = b"short\n".to_vec();
    text.extend(std::iter::repeat_n(b'x', 10 << 20));
    text.extend_from_slice(b"\nafter\n");
    std::fs::write(logs.join("big.log"), &text).unwrap();
    let cfg = config(
        dir.path(),
        true,
        "paths = [\"logs/*.log\"]\nfollow = false\nmax_line_bytes = \"1MiB\"\n",
    );
    let res = run_ok(&cfg);
    let err = String::from_utf8_lossy(&res.stderr);
    let got = std::fs::read(dir.path().join("out.log")).unwrap();
    let parts: Vec<&[u8]> = got.split(|&c| c == b'\n').collect();
    assert_eq!(parts.len(), 4, "{err}");
    assert_eq!(parts[0], b"short");
    assert_eq!(parts[1].len(), 1 << 20);
    assert_eq!(parts[2], b"after");
    assert!(
        err.contains("cog=tail#1 in=0 out=3 dropped=0 errors=1"),
        "{err}"
    );
}

#[test]
fn partial_last_line_is_held_then_emitted_once() {
    let (dir, logs, app) = app_log("partial");
    append(&app, "a\nb");
    let cfg = config(dir.path(), true, FOLLOW);
    let t = Tailer::start(dir.path(), &cfg);
    t.wait_lines(1);
    append(&app, "c\n");
    t.wait_lines(2);
    append(&app, "d");
    // Wait for the daemon to have read "d" (a later complete line shows it has).
    append(&logs.join("probe.log"), "probe\n");
    t.wait_lines(3);
    t.stop();
    // Not completed before the stop: not sent, the checkpoint stays at its start, and the
    // next run reads it whole once the writer ends it.
    let t = Tailer::start(dir.path(), &cfg);
    append(&app, "e\n");
    t.wait_lines(4);
    t.stop();
    let got = std::fs::read_to_string(dir.path().join("out.log")).unwrap();
    let mut l: Vec<&str> = got.lines().collect();
    l.sort();
    assert_eq!(l, ["a", "bc", "de", "probe"]);
}

#[test]
fn partial_line_at_the_true_end_is_flagged() {
    let (dir, _, app) = app_log("eol-flag");
    append(&app, "a\nb");
    let cfg = write_config(
        dir.path(),
        "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"tail\"\n\
         paths = [\"logs/*.log\"]\nfollow = false\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.json\"\nformat = \"json\"\n",
    );
    run_ok(&cfg);
    let got = std::fs::read_to_string(dir.path().join("out.json")).unwrap();
    let l: Vec<&str> = got.lines().collect();
    assert_eq!(l.len(), 2, "{got}");
    assert!(!l[0].contains("\"partial\""), "{got}");
    assert!(
        l[1].contains("\"message\":\"b\"") && l[1].contains("\"partial\":true"),
        "{got}"
    );
}

/// SIGTERM twice while `tail` catches up with a backlog, then a run to the end: every
/// line exactly once, none split in two at a stop. `DEADBEAT_BACKLOG_LINES` sets the
/// backlog (default 300,000 lines, about 12 MB).
#[test]
fn stops_while_catching_up_never_split_a_line() {
    let n: usize = std::env::var("DEADBEAT_BACKLOG_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let (dir, _, app) = app_log("stop-catchup");
    // Lines of varied lengths: reads end inside lines.
    let mut text = String::with_capacity(n * 40);
    for i in 0..n {
        text.push_str(&format!("line {i:07} {}\n", "x".repeat(i % 23)));
    }
    append(&app, &text);
    let cfg = config(dir.path(), true, FOLLOW);
    let out = dir.path().join("out.log");
    let mut stops = 0;
    for _ in 0..2 {
        let before = line_count(&out);
        let t = Tailer::start(dir.path(), &cfg);
        wait_for("progress", || line_count(&out) > before);
        t.stop();
        stops += usize::from(line_count(&out) < n);
    }
    Tailer::catch_up(dir.path(), &cfg, n);
    let got = counts(dir.path());
    let split: Vec<&String> = got.keys().filter(|l| !l.starts_with("line ")).collect();
    assert!(
        split.is_empty(),
        "split lines: {:?}",
        &split[..split.len().min(5)]
    );
    let dups: Vec<(&String, &usize)> = got.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        dups.is_empty(),
        "repeated: {:?}",
        &dups[..dups.len().min(5)]
    );
    assert_eq!(got.len(), n, "lines lost or split");
    eprintln!("{stops} of 2 stops came while catching up with {n} lines");
    // Otherwise the test checked nothing about a stop while catching up.
    assert!(stops >= 1, "no stop came while catching up with {n} lines");
}

#[test]
fn start_at_end_skips_what_was_there_and_beginning_reads_it() {
    for (start_at, want) in [("end", 5), ("beginning", 105)] {
        let (dir, logs, app) = app_log(start_at);
        append(&app, &lines("old", 0, 100));
        let cfg = config(
            dir.path(),
            true,
            &format!("paths = [\"logs/*.log\"]\nstart_at = \"{start_at}\"\n"),
        );
        let t = Tailer::start(dir.path(), &cfg);
        // Once started, the directory is watched: a file appearing now is read from its
        // start and its line shows the daemon is running.
        wait_for("start", || t.stderr().contains("trains started"));
        append(&logs.join("probe.log"), "probe\n");
        t.wait_lines(if start_at == "end" { 1 } else { 101 });
        append(&app, &lines("new", 0, 4));
        t.wait_lines(want);
        t.stop();
        let got = counts(dir.path());
        assert_eq!(got.len(), want, "{start_at}");
        assert_eq!(got.contains_key("old 000000"), start_at == "beginning");
    }
}

#[test]
fn exclude_and_follow_false_exhaust() {
    let dir = TempDir::new("exclude");
    let logs = logs(dir.path());
    std::fs::write(logs.join("a.log"), "a1\na2\n").unwrap();
    std::fs::write(logs.join("b.log"), "b1\nb2").unwrap();
    std::fs::write(logs.join("skip.log"), "s1\n").unwrap();
    std::fs::write(logs.join("c.txt"), "c1\n").unwrap();
    let cfg = config(
        dir.path(),
        false,
        "paths = [\"logs/*.log\"]\nexclude = [\"skip*\"]\nfollow = false\n",
    );
    run_ok(&cfg);
    let got = counts(dir.path());
    let mut keys: Vec<&str> = got.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["a1", "a2", "b1", "b2"]);
    // Read to the end already: a second run sends nothing.
    run_ok(&cfg);
    assert_eq!(line_count(&dir.path().join("out.log")), 4);
}

#[test]
fn corrupt_checkpoint_is_logged_and_ignored() {
    let dir = TempDir::new("corrupt");
    let logs = logs(dir.path());
    std::fs::write(logs.join("a.log"), "a1\na2\n").unwrap();
    let cfg = config(
        dir.path(),
        true,
        "paths = [\"logs/*.log\"]\nfollow = false\n",
    );
    let run = || String::from_utf8_lossy(&run_ok(&cfg).stderr).into_owned();
    run();
    let mut corrupted = 0;
    for e in std::fs::read_dir(dir.path().join("st")).unwrap().flatten() {
        // The checkpoint, not its (empty) journal.
        if !e.file_name().to_string_lossy().ends_with(".state") {
            continue;
        }
        std::fs::write(e.path(), "garbage\x00\n").unwrap();
        corrupted += 1;
    }
    assert_eq!(corrupted, 1);
    let err = run();
    assert!(err.contains("checkpoint unreadable"), "{err}");
    // Started afresh: the file is read again from its start.
    assert_eq!(line_count(&dir.path().join("out.log")), 4);
}

#[test]
fn rotated_file_partial_line_is_emitted_after_rotate_wait() {
    let (dir, logs, app) = app_log("rot-partial");
    append(&app, "a1\na2");
    let cfg = config(
        dir.path(),
        true,
        "paths = [\"logs/*.log\"]\nstart_at = \"beginning\"\nrotate_wait = \"200ms\"\n",
    );
    let t = Tailer::start(dir.path(), &cfg);
    t.wait_lines(1);
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    append(&app, "b1\n");
    t.wait_lines(3);
    t.stop();
    assert_exactly_once(dir.path(), &["a1\na2\nb1\n"]);
}

/// A stop inside the rotate window leaves a rotated file's partial line unsent (the
/// writer may still end it): the next run reads the line whole.
#[test]
fn stop_inside_the_rotate_window_keeps_a_partial_line_whole() {
    let (dir, logs, app) = app_log("rot-window-partial");
    append(&app, "a1\nhal");
    let cfg = config(dir.path(), true, FOLLOW);
    let t = Tailer::start(dir.path(), &cfg);
    t.wait_lines(1);
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    append(&app, "b1\n");
    t.wait_lines(2);
    t.stop();
    append(&logs.join("app.log.1"), "f done\n");
    let t = Tailer::start(dir.path(), &cfg);
    wait_for("the end of the line", || {
        std::fs::read_to_string(dir.path().join("out.log")).is_ok_and(|s| s.contains("done\n"))
    });
    t.stop();
    assert_exactly_once(dir.path(), &["a1\nhalf done\nb1\n"]);
}

#[test]
fn stop_inside_the_rotate_window_finds_the_old_file_again() {
    let (dir, logs, app) = app_log("rot-window");
    append(&app, &lines("a", 0, 100));
    let cfg = config(dir.path(), true, FOLLOW);
    let t = Tailer::start(dir.path(), &cfg);
    t.wait_lines(100);
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    append(&app, &lines("b", 0, 10));
    t.wait_lines(110);
    t.stop();
    // The application wrote on into the old file while the daemon was down.
    append(&logs.join("app.log.1"), &lines("a", 100, 120));
    Tailer::catch_up(dir.path(), &cfg, 130);
    assert_exactly_once(dir.path(), &[&lines("a", 0, 120), &lines("b", 0, 10)]);
}

/// Vector's copytruncate case: with `F*` followed, `cp F F0; truncate F` makes `F0` a
/// copy, which continues where `F` was read: `First line` is written once. (Its first
/// lines are longer than 256 bytes: a shorter head does not identify content.)
#[test]
fn a_copy_continues_where_its_original_was() {
    let dir = TempDir::new("copy-fp");
    let logs = logs(dir.path());
    let f = logs.join("F");
    let first = format!("First line {}\n", "x".repeat(260));
    append(&f, &first);
    let cfg = config(
        dir.path(),
        true,
        "paths = [\"logs/F*\"]\nstart_at = \"beginning\"\n",
    );
    let t = Tailer::start(dir.path(), &cfg);
    t.wait_lines(1);
    std::fs::copy(&f, logs.join("F0")).unwrap();
    truncate(&f);
    let second = format!("Second line {}\n", "y".repeat(260));
    append(&f, &second);
    // A line added to the copy shows it was taken in.
    append(&logs.join("F0"), "Copy line\n");
    t.wait_lines(3);
    t.stop();
    assert_exactly_once(dir.path(), &[&first, &second, "Copy line\n"]);
    // The same while stopped: the copy is recognised by its content from the checkpoint.
    append(&f, "Third line\n");
    std::fs::copy(&f, logs.join("F1")).unwrap();
    truncate(&f);
    append(&f, "Fourth line\n");
    Tailer::catch_up(dir.path(), &cfg, 5);
    assert_exactly_once(
        dir.path(),
        &[&first, &second, "Copy line\nThird line\nFourth line\n"],
    );
}

/// Rotation by copy and truncation, with the copies matched by the glob (`app.log*`):
/// each copy continues where `app.log` was, so no line is read twice.
/// `DEADBEAT_COPYTRUNC_LINES` sets the lines written (default 40,000).
#[test]
fn copytruncate_with_a_glob_reads_every_line_once() {
    let n: usize = std::env::var("DEADBEAT_COPYTRUNC_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000);
    let (dir, logs, app) = app_log("copytrunc-glob");
    append(&app, "");
    let cfg = config(
        dir.path(),
        true,
        "paths = [\"logs/app.log*\"]\nstart_at = \"beginning\"\nrotate_wait = \"1s\"\n",
    );
    let t = Tailer::start(dir.path(), &cfg);
    wait_for("tail to start", || t.stderr().contains("trains started"));
    let chunk = 200;
    let mut rotations = 0;
    for (k, from) in (0..n).step_by(chunk).enumerate() {
        append(&app, &lines("a", from, (from + chunk).min(n)));
        if k % 10 == 9 {
            // logrotate's copytruncate, keeping 3 copies.
            for i in (1..3).rev() {
                let older = logs.join(format!("app.log.{i}"));
                if older.exists() {
                    std::fs::rename(&older, logs.join(format!("app.log.{}", i + 1))).unwrap();
                }
            }
            std::fs::copy(&app, logs.join("app.log.1")).unwrap();
            truncate(&app);
            rotations += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    wait_for("every line", || counts(dir.path()).len() >= n);
    t.stop();
    let got = counts(dir.path());
    let dups: usize = got.values().map(|&c| c - 1).sum();
    eprintln!("{n} lines, {rotations} rotations by copy: {dups} duplicates");
    assert_exactly_once(dir.path(), &[&lines("a", 0, n)]);
}

/// `DEADBEAT_FD_FILES` files of 10 lines in `logs/`; returns the number of lines.
fn many_small_files(logs: &Path) -> usize {
    let n: usize = std::env::var("DEADBEAT_FD_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for i in 0..n {
        append(
            &logs.join(format!("f{i:05}.log")),
            &lines(&format!("f{i}"), 0, 10),
        );
    }
    n * 10
}

/// Started under `ulimit -n 64` with the default `max_open_files = 1024`: the budget is
/// lowered at start, with a warning, and every line of many files is read.
#[test]
fn max_open_files_is_lowered_to_the_descriptor_limit() {
    let dir = TempDir::new("fd-limit");
    let logs = logs(dir.path());
    let total = many_small_files(&logs);
    let cfg = config(
        dir.path(),
        true,
        "paths = [\"logs/*.log\"]\nfollow = false\n",
    );
    let res = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n 64 && exec {BIN} run {}", cfg.display()))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{err}");
    assert!(err.contains("descriptor limit"), "{err}");
    assert_eq!(counts(dir.path()).len(), total, "{err}");
}

/// Descriptors run out while running (the limit lowered under the daemon's feet, as by
/// other cogs holding them): EMFILE is transient, the files are opened again later, and
/// every line is read. Once the limit is back, so is the open-file budget.
#[test]
fn running_out_of_descriptors_is_retried() {
    let dir = TempDir::new("fd-emfile");
    let logs = logs(dir.path());
    let cfg = config(
        dir.path(),
        true,
        "paths = [\"logs/*.log\"]\nstart_at = \"beginning\"\n",
    );
    let t = Tailer::start(dir.path(), &cfg);
    wait_for("tail to start", || t.stderr().contains("trains started"));
    let pid = t.child.id() as i32;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let orig;
    // SAFETY: reads, then lowers, the soft limit of the child we started.
    let rc = unsafe {
        let got = libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut lim);
        orig = lim.rlim_cur;
        lim.rlim_cur = 48;
        if got == 0 {
            libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut())
        } else {
            got
        }
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let total = many_small_files(&logs);
    t.wait_lines(total);
    assert!(
        t.stderr().contains("out of file descriptors"),
        "{}",
        t.stderr()
    );
    lim.rlim_cur = orig;
    // SAFETY: gives the child we started its soft limit back.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    wait_for("the open-file budget back", || {
        t.stderr()
            .contains("open-file budget back to max_open_files")
    });
    t.stop();
    assert_eq!(counts(dir.path()).len(), total);
}

/// A copy not judged yet when the daemon stops (empty: `cp` has created it, not written
/// it) is not saved in the checkpoint (nothing of it was sent), so the next run
/// recognises it as a copy and does not read it again from its start.
#[test]
fn a_copy_stopped_before_it_was_judged_is_not_read_again() {
    let (dir, logs, app) = app_log("copy-undecided");
    let text = lines("a", 0, 1000);
    append(&app, &text);
    let cfg = config(
        dir.path(),
        true,
        "paths = [\"logs/app.log*\"]\nstart_at = \"beginning\"\n",
    );
    let t = Tailer::start(dir.path(), &cfg);
    t.wait_lines(1000);
    let copy = logs.join("app.log.1");
    append(&copy, "");
    // Events come in order: once this line is in, the empty copy was taken in.
    append(&app, "b 1\n");
    t.wait_lines(1001);
    t.stop();
    append(&copy, &text);
    append(&app, "b 2\n");
    Tailer::catch_up(dir.path(), &cfg, 1002);
    assert_exactly_once(dir.path(), &[&text, "b 1\nb 2\n"]);
}

/// A head shorter than 256 bytes identifies nothing: a new file that starts with all of
/// a short file already read (`starting`) is its own file, read from its start.
#[test]
fn a_short_head_does_not_make_a_new_file_a_copy() {
    let (dir, logs, app) = app_log("short-head");
    append(&app, "starting\n");
    let cfg = config(dir.path(), true, FOLLOW);
    let t = Tailer::start(dir.path(), &cfg);
    t.wait_lines(1);
    append(&logs.join("other.log"), "starting\nsecond\n");
    t.wait_lines(3);
    t.stop();
    let got = counts(dir.path());
    assert_eq!(got.get("starting"), Some(&2), "{got:?}");
    assert_eq!(got.get("second"), Some(&1), "{got:?}");
}

/// Daily files sharing a 300-byte header: every line of the second day arrives, known
/// apart by what comes after the header (`fingerprint = "content"`, the default), or by
/// device and inode (`fingerprint = "inode"`).
fn shared_long_header(tag: &str, keys: &str) {
    let (dir, logs, _) = app_log(tag);
    let header: String = (0..10)
        .map(|i| format!("# header line {i:02} {}\n", "=".repeat(12)))
        .collect();
    assert!(header.len() >= 300, "{}", header.len());
    append(
        &logs.join("day1.log"),
        &format!("{header}{}", lines("d1", 0, 50)),
    );
    let cfg = config(dir.path(), true, &format!("{FOLLOW}{keys}"));
    let t = Tailer::start(dir.path(), &cfg);
    t.wait_lines(60);
    append(
        &logs.join("day2.log"),
        &format!("{header}{}", lines("d2", 0, 50)),
    );
    t.wait_lines(120);
    t.stop();
    let got = counts(dir.path());
    for l in header.lines() {
        assert_eq!(got.get(l), Some(&2), "{l:?}");
    }
    assert_eq!(got.len(), 10 + 100);
}

#[test]
fn files_with_a_shared_long_header_and_inode_fingerprint_are_all_read() {
    shared_long_header("shared-header-inode", "fingerprint = \"inode\"\n");
}

#[test]
fn files_with_a_shared_long_header_are_told_apart_by_what_follows() {
    shared_long_header("shared-header-content", "");
}

/// The heads of truncated files live in the checkpoint: a copy of a file truncated
/// before a stop, which appears after it (copied under a name not followed, then
/// renamed in), continues where the file's reading was.
#[test]
fn a_copy_appearing_after_a_restart_continues_where_its_truncated_original_was() {
    let (dir, logs, app) = app_log("copy-after-restart");
    let text = lines(&"a".repeat(300), 0, 20);
    append(&app, &text);
    let cfg = config(
        dir.path(),
        true,
        "paths = [\"logs/app.log*\"]\nstart_at = \"beginning\"\n",
    );
    let t = Tailer::start(dir.path(), &cfg);
    t.wait_lines(20);
    std::fs::copy(&app, logs.join("tmp-copy")).unwrap();
    truncate(&app);
    append(&app, "b 1\n");
    t.wait_lines(21);
    t.stop();
    std::fs::rename(logs.join("tmp-copy"), logs.join("app.log.1")).unwrap();
    append(&app, "b 2\n");
    Tailer::catch_up(dir.path(), &cfg, 22);
    assert_exactly_once(dir.path(), &[&text, "b 1\nb 2\n"]);
}
