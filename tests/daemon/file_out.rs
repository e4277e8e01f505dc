//! `file_out` against the real binary: path templates, open-file limit, fsync, rotation.

use super::*;

fn stdin_config(dir: &Path, engine: &str, cog: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "{engine}[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n[[train.cog]]\ntype = \"file_out\"\n{cog}"
        ),
    )
}

/// A train of `file_in` reading `paths` (a TOML array) into `file_out` with `cog`'s keys.
fn file_in_config(dir: &Path, paths: &str, cog: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"file_in\"\npaths = {paths}\n\
             [[train.cog]]\ntype = \"file_out\"\n{cog}"
        ),
    )
}

/// [`stdin_config`] for a `file_out` that must notice its file moved or removed by one
/// means only: inotify (`reopen_check` off), or with inotify off, a stat every 50 ms.
fn reopening_config(dir: &Path, inotify: bool, cog: &str) -> PathBuf {
    let (engine, reopen) = if inotify {
        ("", "0s")
    } else {
        ("[engine]\ninotify = false\n", "50ms")
    };
    stdin_config(dir, engine, &format!("{cog}reopen_check = \"{reopen}\"\n"))
}

/// `deadbeat check CONFIG`.
fn check(cfg: &Path) -> std::process::Output {
    deadbeat()
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap()
}

fn finish(mut child: Child, stdin: std::process::ChildStdin) -> String {
    drop(stdin);
    let st = wait_exit(&mut child);
    let err = stderr_of(&mut child);
    assert!(st.success(), "exit {st:?}: {err}");
    err
}

#[test]
fn templated_path_follows_each_input_file() {
    let dir = TempDir::new("fo-split");
    let a = numbered(3_000);
    std::fs::write(dir.path().join("a.log"), &a).unwrap();
    std::fs::write(dir.path().join("b.log"), "b1\nb2\n").unwrap();
    let cfg = file_in_config(
        dir.path(),
        "[\"a.log\", \"b.log\"]",
        "path = \"out/{path}.copy\"\n",
    );
    let res = run_ok(&cfg);
    let err = String::from_utf8_lossy(&res.stderr);
    // `path` is absolute: the copies mirror it under out/, never outside.
    let copy = |name: &str| {
        let abs = dir.path().join(name);
        let rel = abs.strip_prefix("/").unwrap();
        dir.path().join("out").join(rel).with_extension("log.copy")
    };
    assert_eq!(std::fs::read_to_string(copy("a.log")).unwrap(), a);
    assert_eq!(std::fs::read_to_string(copy("b.log")).unwrap(), "b1\nb2\n");
    assert!(
        err.contains("cog=file_out#2 in=3002 out=0 dropped=0 errors=0"),
        "{err}"
    );
}

#[test]
fn refused_rendered_paths_go_to_the_fallback_file() {
    let dir = TempDir::new("fo-unsafe");
    std::fs::create_dir(dir.path().join("cfg")).unwrap();
    std::fs::write(
        dir.path().join("cfg/in.log"),
        b"web1\nweb2\n../../escape\n\nsub/dir\nnul\0byte\nweb1\n/abs\n".as_slice(),
    )
    .unwrap();
    let cfg = file_in_config(
        &dir.path().join("cfg"),
        "[\"in.log\"]",
        "path = \"out/{message}\"\n",
    );
    let res = run_ok(&cfg);
    let err = String::from_utf8_lossy(&res.stderr);
    let out = dir.path().join("cfg/out");
    let read = |p: &str| std::fs::read(out.join(p)).unwrap();
    assert_eq!(read("web1"), b"web1\nweb1\n");
    assert_eq!(read("web2"), b"web2\n");
    assert_eq!(read("sub/dir"), b"sub/dir\n");
    // A leading `/` in a value only adds an empty component: still under out/.
    assert_eq!(read("abs"), b"/abs\n");
    assert_eq!(read("_unknown_"), b"../../escape\n\nnul\0byte\n");
    assert!(!dir.path().join("escape").exists());
    assert!(err.contains("refused rendered output path"), "{err}");
    assert!(err.contains("event="), "{err}");
    assert!(
        err.contains("cog=file_out#2 in=8 out=0 dropped=0 errors=3"),
        "{err}"
    );
}

/// Descriptors of `pid` that point into `dir`.
fn fds_under(pid: u32, dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.starts_with(dir))
        .count()
}

#[test]
fn max_open_files_bounds_descriptors_and_loses_nothing() {
    let dir = TempDir::new("fo-lru");
    let cfg = stdin_config(
        dir.path(),
        "",
        "path = \"out/{message}.log\"\nmax_open_files = 2\n",
    );
    let out = dir.path().join("out");
    let (child, mut stdin) = spawn_with_stdin(&cfg);
    let mut input = String::new();
    for i in 0..1_000 {
        input.push_str(&format!("t{}\n", i % 5));
    }
    // Several writes, so the files are reopened across batches too.
    for chunk in input.as_bytes().chunks(999) {
        stdin.write_all(chunk).unwrap();
    }
    let total = || {
        (0..5)
            .map(|k| line_count(&out.join(format!("t{k}.log"))))
            .sum::<usize>()
    };
    wait_for("every line written", || total() == 1_000);
    let open = fds_under(child.id(), &out);
    assert!(open <= 2, "{open} files open under out/");
    finish(child, stdin);
    for k in 0..5 {
        let got = std::fs::read_to_string(out.join(format!("t{k}.log"))).unwrap();
        assert_eq!(got, format!("t{k}\n").repeat(200));
    }
}

#[test]
fn fsync_always_writes_everything() {
    let dir = TempDir::new("fo-fsync-always");
    let lines = numbered(20_000);
    std::fs::write(dir.path().join("in.log"), &lines).unwrap();
    let cfg = file_in_config(
        dir.path(),
        "[\"in.log\"]",
        "path = \"out.log\"\nfsync = \"always\"\n",
    );
    run_ok(&cfg);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.log")).unwrap(),
        lines
    );
}

#[test]
fn fsync_interval_writes_everything_while_running_and_at_exit() {
    let dir = TempDir::new("fo-fsync-interval");
    let cfg = stdin_config(
        dir.path(),
        "",
        "path = \"out/{message}.log\"\nfsync = \"interval:50ms\"\nformat = \"json\"\n",
    );
    let out = dir.path().join("out");
    let (child, mut stdin) = spawn_with_stdin(&cfg);
    stdin.write_all(b"a\nb\na\n").unwrap();
    wait_for("lines written before any sync", || {
        line_count(&out.join("a.log")) == 2 && line_count(&out.join("b.log")) == 1
    });
    stdin.write_all(b"b\n").unwrap();
    finish(child, stdin);
    assert_eq!(
        std::fs::read_to_string(out.join("b.log")).unwrap(),
        "{\"message\":\"b\"}\n{\"message\":\"b\"}\n"
    );
}

fn removed_output_is_recreated(inotify: bool) {
    let dir = TempDir::new("fo-removed");
    let cfg = reopening_config(dir.path(), inotify, "path = \"out.log\"\n");
    let out = dir.path().join("out.log");
    let (child, mut stdin) = spawn_with_stdin(&cfg);
    stdin.write_all(b"before\n").unwrap();
    wait_for("the first line", || line_count(&out) == 1);
    std::fs::remove_file(&out).unwrap();
    wait_for("the output file to be recreated", || out.exists());
    stdin.write_all(b"after 1\nafter 2\n").unwrap();
    wait_for("new lines in the new file", || line_count(&out) == 2);
    let err = finish(child, stdin);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "after 1\nafter 2\n");
    assert!(err.contains("output file was moved or removed"), "{err}");
}

#[test]
fn removed_output_is_recreated_with_inotify() {
    removed_output_is_recreated(true);
}

#[test]
fn removed_output_is_recreated_by_polling() {
    removed_output_is_recreated(false);
}

fn renamed_output_is_replaced(inotify: bool) {
    let dir = TempDir::new("fo-renamed");
    // A templated path, so rotation is covered for per-record files as well.
    let cfg = reopening_config(
        dir.path(),
        inotify,
        "path = \"logs/{message}\"\nformat = \"json\"\n",
    );
    let out = dir.path().join("logs/x");
    let old = dir.path().join("logs/x.1");
    let (child, mut stdin) = spawn_with_stdin(&cfg);
    stdin.write_all(b"x\nx\n").unwrap();
    wait_for("lines before the rename", || line_count(&out) == 2);
    std::fs::rename(&out, &old).unwrap();
    wait_for("a fresh file at the path", || out.exists());
    stdin.write_all(b"x\n").unwrap();
    wait_for("the new line", || line_count(&out) == 1);
    finish(child, stdin);
    assert_eq!(line_count(&old), 2);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "{\"message\":\"x\"}\n"
    );
}

#[test]
fn renamed_output_is_replaced_with_inotify() {
    renamed_output_is_replaced(true);
}

#[test]
fn renamed_output_is_replaced_by_polling() {
    renamed_output_is_replaced(false);
}

#[test]
fn sighup_reopens_templated_files() {
    let dir = TempDir::new("fo-hup");
    let cfg = stdin_config(
        dir.path(),
        "",
        "path = \"out/{message}.log\"\nreopen_check = \"0s\"\n",
    );
    let a = dir.path().join("out/a.log");
    let rotated = dir.path().join("a.log.1");
    let (child, mut stdin) = spawn_with_stdin(&cfg);
    stdin.write_all(b"a\n").unwrap();
    wait_for("the first line", || line_count(&a) == 1);
    // Moved out of the watched tree's name: only SIGHUP (or inotify) can tell.
    std::fs::rename(&a, &rotated).unwrap();
    kill(child.id(), libc::SIGHUP);
    wait_for("the reopened file", || a.exists());
    stdin.write_all(b"a\n").unwrap();
    wait_for("the new line", || line_count(&a) == 1);
    finish(child, stdin);
    assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(&a).unwrap(), "a\n");
}

#[test]
fn bad_settings_are_configuration_errors() {
    let dir = TempDir::new("fo-check");
    for (cog, needle) in [
        ("fsync = \"sometimes\"\n", "fsync"),
        ("max_open_files = 0\n", "max_open_files"),
        ("reopen_check = \"soon\"\n", "reopen_check"),
    ] {
        let cfg = stdin_config(
            dir.path(),
            "",
            &format!("path = \"out/{{message}}\"\n{cog}"),
        );
        let res = check(&cfg);
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{cog}: {err}");
        assert!(err.contains(needle), "{err}");
    }
    let cfg = stdin_config(dir.path(), "", "path = \"out/{a}/../x\"\n");
    assert_eq!(check(&cfg).status.code(), Some(2));
}

/// Runs supply → `file_out` in process: three records in one batch, then reports how many
/// were acknowledged 20 ms later and 400 ms later.
fn acks_over_time(fsync: deadbeat::cogs::fs::file_out::Fsync) -> (usize, usize, String) {
    use std::cell::RefCell;
    use std::rc::Rc;

    use crate::engine::{Log, Probe, opts, run};
    use deadbeat::cogs::fs::file_out::FileOut;
    use deadbeat::kit::format::OutputFormat;
    use deadbeat::prelude::*;
    use deadbeat::record::{Key, Record, Value};

    let dir = TempDir::new("fo-acks");
    let out = dir.path().join("out.log");
    let log = Log::default();
    let acked = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (acked_w, acked_r, seen_w) = (acked.clone(), acked.clone(), seen.clone());
    let supply = Probe::<Record>::new("supply", &log)
        .supply()
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |local, _, out, cx| match local {
            0 => {
                for m in ["one", "two", "three"] {
                    let mut r = Record::new();
                    r.id = cx.new_event_id();
                    r.insert(Key::new("message"), Value::Bytes(m.as_bytes().to_vec()));
                    out.push(r);
                }
                cx.timer_after(Duration::from_millis(20), 1).unwrap();
                cx.timer_after(Duration::from_millis(400), 2).unwrap();
            }
            1 => seen_w.borrow_mut().push(acked_r.borrow().len()),
            _ => {
                seen_w.borrow_mut().push(acked_r.borrow().len());
                cx.exhausted();
            }
        })
        .on_event_done(move |ids, _| acked_w.borrow_mut().extend_from_slice(ids));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(
        Train::new("t")
            .cog(supply)
            .cog(FileOut::new(out.clone(), OutputFormat::Raw).with_fsync(fsync)),
    )
    .unwrap();
    run(&mut esc, &log);
    let seen = seen.borrow();
    (seen[0], seen[1], std::fs::read_to_string(&out).unwrap())
}

#[test]
fn acknowledgements_wait_for_the_sync_that_covers_them() {
    use deadbeat::cogs::fs::file_out::Fsync;
    let all = "one\ntwo\nthree\n".to_string();
    assert_eq!(acks_over_time(Fsync::Never), (3, 3, all.clone()));
    assert_eq!(acks_over_time(Fsync::Always), (3, 3, all.clone()));
    // Written at once, acknowledged only by the sync every 150 ms.
    assert_eq!(
        acks_over_time(Fsync::Interval(Duration::from_millis(150))),
        (0, 3, all)
    );
}

/// Collects a child's stderr in the background, so a test can wait for a log line while
/// the daemon runs.
fn collect_stderr(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(mut err) = child.stderr.take() {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    log
}

/// A symbolic link planted at the output path while running (`ln -sfn ../victim.txt
/// out/o.log`) is refused: the victim stays untouched, the records are held and written
/// once the link is gone.
fn planted_symlink_is_refused(inotify: bool) {
    let dir = TempDir::new("fo-symlink");
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "victim\n").unwrap();
    let cfg = reopening_config(dir.path(), inotify, "path = \"out/o.log\"\n");
    let out = dir.path().join("out/o.log");
    let (mut child, mut stdin) = spawn_with_stdin(&cfg);
    let log = collect_stderr(&mut child);
    stdin.write_all(b"before\n").unwrap();
    wait_for("the first line", || line_count(&out) == 1);
    let tmp = dir.path().join("out/.o.log.tmp");
    std::os::unix::fs::symlink("../victim.txt", &tmp).unwrap();
    std::fs::rename(&tmp, &out).unwrap();
    wait_for("the refused link to be logged", || {
        log.lock().unwrap().contains("is a symbolic link")
    });
    stdin.write_all(b"held 1\nheld 2\n").unwrap();
    wait_for("the held write to be logged", || {
        log.lock().unwrap().contains("writing output file failed")
    });
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");
    std::fs::remove_file(&out).unwrap();
    wait_for("the held lines in a fresh file", || line_count(&out) == 2);
    drop(stdin);
    let st = wait_exit(&mut child);
    let err = log.lock().unwrap().clone();
    assert!(st.success(), "exit {st:?}: {err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim\n");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "held 1\nheld 2\n");
}

#[test]
fn planted_symlink_is_refused_with_inotify() {
    planted_symlink_is_refused(true);
}

#[test]
fn planted_symlink_is_refused_by_polling() {
    planted_symlink_is_refused(false);
}

/// `follow_symlinks = true` writes through a link at the path, and a templated path sends
/// a record whose file is a link to the fallback file instead.
#[test]
fn symlinks_are_followed_only_when_asked() {
    let dir = TempDir::new("fo-symlink-keys");
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let target = dir.path().join("target.txt");
    std::os::unix::fs::symlink("../target.txt", dir.path().join("out/a.log")).unwrap();
    let cfg = stdin_config(
        dir.path(),
        "",
        "path = \"out/a.log\"\nfollow_symlinks = true\n",
    );
    let (st, _, err) = run_with_stdin(&cfg, b"through\n");
    assert!(st.success(), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "through\n");

    let cfg = stdin_config(dir.path(), "", "path = \"out/{message}.log\"\n");
    let (st, _, err) = run_with_stdin(&cfg, b"a\nb\n");
    assert!(st.success(), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "through\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/_unknown_.log")).unwrap(),
        "a\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/b.log")).unwrap(),
        "b\n"
    );
    assert!(err.contains("is a symbolic link"), "{err}");
}

/// The log says where each file is written and what it already held; the default mode
/// appends, `mode = "truncate"` empties each file at its first open in a run.
#[test]
fn first_open_is_logged_and_mode_decides_what_stays() {
    let dir = TempDir::new("fo-mode");
    let out = dir.path().join("out.log");
    let shown = out.display().to_string();
    let append = stdin_config(dir.path(), "", "path = \"out.log\"\n");
    let (st, _, err) = run_with_stdin(&append, b"one\ntwo\n");
    assert!(st.success(), "{err}");
    assert!(
        err.contains("writing to output file, new or empty") && err.contains(&shown),
        "{err}"
    );
    let (st, _, err) = run_with_stdin(&append, b"three\n");
    assert!(st.success(), "{err}");
    assert!(
        err.contains("writing to output file, appending to 8 existing bytes"),
        "{err}"
    );
    assert_eq!(err.matches("writing to output file").count(), 1, "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "one\ntwo\nthree\n");

    let truncate = stdin_config(dir.path(), "", "path = \"out.log\"\nmode = \"truncate\"\n");
    let (st, _, err) = run_with_stdin(&truncate, b"four\n");
    assert!(st.success(), "{err}");
    assert!(
        err.contains("writing to output file, truncated 14 existing bytes"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "four\n");

    let bad = stdin_config(dir.path(), "", "path = \"out.log\"\nmode = \"overwrite\"\n");
    let res = check(&bad);
    assert_eq!(res.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("\"mode\""),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}

/// A templated file closed for `max_open_files` and opened again in the same run is not
/// emptied again by `mode = "truncate"`.
#[test]
fn truncate_empties_a_templated_file_once_per_run() {
    let dir = TempDir::new("fo-mode-tpl");
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/a.log"), "old\n").unwrap();
    let cfg = stdin_config(
        dir.path(),
        "",
        "path = \"out/{message}.log\"\nmode = \"truncate\"\nmax_open_files = 1\n",
    );
    let (st, _, err) = run_with_stdin(&cfg, b"a\nb\na\nb\na\n");
    assert!(st.success(), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/a.log")).unwrap(),
        "a\na\na\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/b.log")).unwrap(),
        "b\nb\n"
    );
}

/// The bundled quick start, run twice: the log names the output file, and the second run
/// leaves the same output instead of appending a second copy.
#[test]
fn quickstart_twice_says_where_and_writes_once() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new("fo-quickstart");
    let out = dir.path().join("out.json");
    let text = std::fs::read_to_string(root.join("config/quickstart.toml"))
        .unwrap()
        .replace("../var/quickstart.json", out.to_str().unwrap())
        .replace("../var/state", dir.path().join("state").to_str().unwrap())
        .replace(
            "data/access.log",
            root.join("config/data/access.log").to_str().unwrap(),
        );
    let cfg = write_config(dir.path(), &text);
    let first = run_ok(&cfg);
    let once = std::fs::read(&out).unwrap();
    let second = run_ok(&cfg);
    assert_eq!(std::fs::read(&out).unwrap(), once);
    let shown = out.display().to_string();
    for res in [first, second] {
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(
            err.lines()
                .any(|l| l.contains("writing to output file") && l.contains(&shown)),
            "{err}"
        );
    }
}

#[test]
fn truncate_is_refused_after_a_checkpointing_supply() {
    // A tail resumes from its checkpoint after a restart: emptying the output at each start
    // would lose everything earlier runs wrote.
    let dir = TempDir::new("fo-truncate-tail");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"tail\"\npaths = [\"logs/*.log\"]\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\nmode = \"truncate\"\n",
    );
    let res = check(&cfg);
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(
        err.contains("key \"mode\"") && err.contains("keeps checkpoints"),
        "{err}"
    );
}
