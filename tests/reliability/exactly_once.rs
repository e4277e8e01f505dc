//! Exactly-once from file to file: `tail` → `file_out` with `exactly_once = true` keeps the
//! output's size in the tail's checkpoint and cuts the output back to it at start, so a
//! `kill -9` anywhere neither loses nor repeats a line.

use super::numbered::{WIDTH, last_id, line_id, lines_from_env, live_app_log, push_line};
use super::*;

const KILLS: usize = 5;
/// Lines of the run unless `DEADBEAT_EXACTLY_ONCE_LINES` says otherwise.
const DEFAULT_LINES: usize = 1_000_000;

fn config(dir: &Path, extra: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n\
             [[train.cog]]\ntype = \"tail\"\npaths = [\"logs/*.log\"]\nstart_at = \"beginning\"\n\
             [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nexactly_once = true\n{extra}"
        ),
    )
}

/// `kill -9` at 5 seeded points of a live `tail` → `file_out` run with `exactly_once`
/// (an application appends lines throughout), restarting on the same state each time,
/// then a run to the end: the output is every line once, in order.
///
/// `DEADBEAT_EXACTLY_ONCE_LINES` sets the number of lines (default 1,000,000; at least
/// 10), `DEADBEAT_EXACTLY_ONCE_FSYNC` the drain's `fsync` (default `never`),
/// `DEADBEAT_EXACTLY_ONCE_SEED` the seed of the kill points.
#[test]
fn kill_9_at_seeded_points_neither_loses_nor_repeats() {
    let started = Instant::now();
    let n = lines_from_env("DEADBEAT_EXACTLY_ONCE_LINES", DEFAULT_LINES);
    let fsync = std::env::var("DEADBEAT_EXACTLY_ONCE_FSYNC").unwrap_or_else(|_| "never".into());
    let patience = PATIENCE + Duration::from_millis(n as u64 / 10);
    let dir = TempDir::new("rel-exactly-once");
    // The application writes on through the crashes.
    let writer = live_app_log(dir.path(), n);
    let cfg = config(dir.path(), &format!("fsync = \"{fsync}\"\n"));
    let out = dir.path().join("out.log");
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());

    let seed = std::env::var("DEADBEAT_EXACTLY_ONCE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0e0c_e5ee_d000_0001);
    let mut rng = Rng::new(seed);
    let mut points: Vec<usize> = (0..KILLS)
        .map(|_| 1 + rng.below(n as u64 - 1) as usize)
        .collect();
    points.sort_unstable();

    for (k, &p) in points.iter().enumerate() {
        let before = size(&out);
        let mut d = Daemon::start(&cfg, Stdio::null());
        wait_within(&format!("kill point {k}: line {p}"), patience, || {
            size(&out) > before && last_id(&out).is_some_and(|i| i >= p)
        });
        kill(d.id(), libc::SIGKILL);
        let st = d.wait_exit();
        assert!(!st.success(), "kill -9 did not kill: {st:?}");
        eprintln!("kill {k}: at line {p}, {} bytes out", size(&out));
    }
    let d = Daemon::start(&cfg, Stdio::null());
    writer.join().unwrap();
    wait_within("the last line", patience, || last_id(&out) == Some(n - 1));
    let log = d.stop();
    let mut cut_total = 0;
    for l in log.lines().filter(|l| l.contains("exactly-once: cut")) {
        if let Some(b) = l
            .split("cut ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
        {
            cut_total += b;
        }
    }

    let got = std::fs::read(&out).unwrap();
    let mut expected = String::with_capacity(n * WIDTH);
    (0..n).for_each(|i| push_line(&mut expected, i));
    if got != expected.as_bytes() {
        // Say how it differs: lost, repeated, out of order or foreign lines.
        let mut seen = vec![0u32; n];
        let (mut foreign, mut disorder, mut prev) = (0, 0, None);
        for l in got.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            match line_id(l, n) {
                Some(i) => {
                    seen[i] += 1;
                    if prev.is_some_and(|p| i <= p) {
                        disorder += 1;
                    }
                    prev = Some(i);
                }
                None => foreign += 1,
            }
        }
        let lost = seen.iter().filter(|&&c| c == 0).count();
        let dups: u32 = seen.iter().map(|&c| c.saturating_sub(1)).sum();
        panic!(
            "output differs: {lost} lost, {dups} duplicated, {disorder} out of order, \
             {foreign} foreign lines (first lost: {:?})\n{log}",
            seen.iter().position(|&c| c == 0)
        );
    }
    eprintln!(
        "exactly-once, kill -9 x{KILLS} over {n} lines (seed {seed}, points {points:?}, fsync {fsync}): \
         0 lost, 0 duplicated; {cut_total} bytes cut over the restarts; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A restart cuts what was written after the checkpoint's mark (here, bytes appended to
/// the output by hand after a clean stop), says so, and appends the new lines after it.
#[test]
fn the_saved_mark_is_honoured() {
    let dir = TempDir::new("rel-eo-mark");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let app = dir.path().join("logs/app.log");
    std::fs::write(&app, "one\ntwo\n").unwrap();
    let cfg = config(dir.path(), "");
    let out = dir.path().join("out.log");
    let d = Daemon::start(&cfg, Stdio::null());
    wait_for("two lines out", || line_count(&out) == 2);
    d.stop();
    append(&out, b"not in the checkpoint\n");
    append(&app, b"three\n");
    let d = Daemon::start(&cfg, Stdio::null());
    wait_for("the third line", || {
        std::fs::read(&out).is_ok_and(|b| b.ends_with(b"three\n"))
    });
    let log = d.stop();
    assert!(
        log.contains("exactly-once: cut 22 bytes written after the last checkpoint"),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "one\ntwo\nthree\n");

    // A file shorter than its mark was cut by someone else: warned, appended to.
    std::fs::write(&out, "one\n").unwrap();
    let d = Daemon::start(&cfg, Stdio::null());
    wait_for("the warning", || {
        std::fs::read_to_string(dir.path().join("err.log"))
            .is_ok_and(|l| l.contains("shorter than the checkpoint marked"))
    });
    d.stop();
}

/// Where exactly-once cannot hold, `exactly_once = true` is a configuration error (exit 2)
/// naming the key or the train.
#[test]
fn exactly_once_is_refused_where_it_cannot_hold() {
    let dir = TempDir::new("rel-eo-refused");
    let check = |text: &str, want: &str| {
        let cfg = write_config(dir.path(), text);
        let res = Command::new(BIN)
            .args(["check", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{text}\n{err}");
        assert!(err.contains(want), "{text}\n{err}");
    };
    let eo = "[[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nexactly_once = true\n";
    let tail = "[[train.cog]]\ntype = \"tail\"\npaths = [\"logs/*.log\"]\n";
    // No tail before it.
    check(
        &format!("[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n{eo}"),
        "exactly-once output needs a supply that keeps checkpoints",
    );
    // A template.
    check(
        &format!(
            "[[train]]\nname = \"t\"\n{tail}[[train.cog]]\ntype = \"file_out\"\n\
             path = \"out/{{host}}.log\"\nexactly_once = true\n"
        ),
        "plain path",
    );
    // Truncating what the checkpoint counts.
    check(
        &format!("[[train]]\nname = \"t\"\n{tail}{eo}mode = \"truncate\"\n"),
        "truncate",
    );
    // Another supply in the same train.
    check(
        &format!("[[train]]\nname = \"t\"\n{tail}[[train.cog]]\ntype = \"stdin\"\n{eo}"),
        "other supplies",
    );
    // Fed by another train too.
    check(
        &format!(
            "[[train]]\nname = \"t\"\n{tail}{eo}\
             [[train]]\nname = \"u\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"tee\"\ntrain = \"t\"\n\
             [[train.cog]]\ntype = \"stdout\"\n"
        ),
        "other trains send records to this one",
    );
    // Records routed to another train keep their ids: the checkpoint waits for them.
    check(
        &format!(
            "[[train]]\nname = \"t\"\n{tail}[[train.cog]]\ntype = \"route\"\n\
             when = 'message == \"x\"'\ntrain = \"u\"\n{eo}\
             [[train]]\nname = \"u\"\n[[train.cog]]\ntype = \"stdout\"\n"
        ),
        "route hands records to another train",
    );
    // Dead letters to another train likewise.
    check(
        &format!(
            "[[train]]\nname = \"t\"\n{tail}[[train.cog]]\ntype = \"json_parse\"\n\
             on_error = \"train:u\"\n{eo}\
             [[train]]\nname = \"u\"\n[[train.cog]]\ntype = \"stdout\"\n"
        ),
        "records cannot be handed to another train",
    );
    // The plain case passes.
    let cfg = write_config(dir.path(), &format!("[[train]]\nname = \"t\"\n{tail}{eo}"));
    let res = Command::new(BIN)
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}
