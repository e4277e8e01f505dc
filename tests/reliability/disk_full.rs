//! Disk full under `file_out`: hold the data, pause, keep running, resume with room.

use std::io::Write as _;
use std::process::Command;

use super::numbered::{WIDTH, last_id, push_line};
use super::*;

/// A tmpfs mounted for the test, unmounted when dropped (on failure too).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let res = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !res.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&res.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let res = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A temp dir named `tag` with a 1 MiB tmpfs at `mnt` inside it, or `None` (the test
/// skips, saying why) where no tmpfs can be mounted: not root, or `mount` refused.
fn with_tmpfs(tag: &str) -> Option<(TempDir, PathBuf, Tmpfs)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped {tag}: not running as root, cannot mount a tmpfs");
        return None;
    }
    let dir = TempDir::new(tag);
    let mnt = dir.path().join("mnt");
    match Tmpfs::mount(&mnt, "1m") {
        Ok(fs) => Some((dir, mnt, fs)),
        Err(e) => {
            eprintln!("skipped {tag}: {e}");
            None
        }
    }
}

#[test]
fn disk_full_holds_pauses_and_resumes_without_loss() {
    let Some((dir, mnt, fs)) = with_tmpfs("rel-diskfull") else {
        return;
    };
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"mnt/out.log\"\n",
    );
    let out = mnt.join("out.log");
    let n = 100_000;
    let input: String = (0..n)
        .map(|i| format!("line {i:07} the quick brown fox\n"))
        .collect();
    assert!(input.len() > 3 << 20);
    let mut d = Daemon::start(&cfg, Stdio::piped());
    let mut stdin = d.child.stdin.take().unwrap();
    let writer = {
        let input = input.clone();
        // Blocks while the daemon is paused; ends (EOF) once everything was taken.
        std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap())
    };
    wait_for("the write failure to be logged", || {
        d.stderr().contains("writing output file failed")
    });
    assert!(d.running(), "daemon died on disk full:\n{}", d.stderr());
    let held = std::fs::metadata(&out).map_or(0, |m| m.len());
    assert!(held <= 1 << 20, "{held} bytes on a 1 MiB filesystem");
    assert!(line_count(&out) < n);
    fs.resize("64m");
    wait_for("every line after making room", || line_count(&out) >= n);
    writer.join().unwrap();
    let err = d.exit_ok();
    assert!(err.contains("output files writable again"), "{err}");
    let failures = err.matches("writing output file failed").count();
    assert_eq!(failures, 1, "the failure is logged once:\n{err}");
    let got = std::fs::read_to_string(&out).unwrap();
    assert!(got == input, "output differs from the input");
    let [cin, _, dropped, _] = final_counters(&err, "file_out");
    assert_eq!((cin, dropped), (n as u64, 0), "{err}");
    eprintln!("disk full: {held} bytes held at the failure, all {n} lines after the remount");
}

/// An exactly-once output whose disk fills: the drain holds what it could not write, a
/// kill -9 comes while the disk is full (the last write may have gone in part), and after
/// making room the restart cuts the output back to its mark and finishes it: every line
/// once, in order.
#[test]
fn exactly_once_survives_a_full_disk_and_a_kill() {
    let Some((dir, mnt, fs)) = with_tmpfs("rel-diskfull-eo") else {
        return;
    };
    let n = 100_000;
    let mut input = String::with_capacity(n * WIDTH);
    (0..n).for_each(|i| push_line(&mut input, i));
    assert!(input.len() > 3 << 20);
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    std::fs::write(dir.path().join("logs/app.log"), &input).unwrap();
    let cfg = write_config(
        dir.path(),
        "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"tail\"\npaths = [\"logs/*.log\"]\nstart_at = \"beginning\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"mnt/out.log\"\nexactly_once = true\n",
    );
    let out = mnt.join("out.log");
    let mut d = Daemon::start(&cfg, Stdio::null());
    wait_for("the write failure to be logged", || {
        d.stderr().contains("writing output file failed")
    });
    let held = std::fs::metadata(&out).map_or(0, |m| m.len());
    kill(d.id(), libc::SIGKILL);
    assert!(!d.wait_exit().success(), "kill -9 did not kill");
    fs.resize("64m");
    let d = Daemon::start(&cfg, Stdio::null());
    wait_for("the last line", || last_id(&out) == Some(n - 1));
    let log = d.stop();
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == input.as_bytes(),
        "output differs from the input ({} of {} bytes)\n{log}",
        got.len(),
        input.len()
    );
    eprintln!("exactly-once disk full: {held} bytes on disk at the kill, all {n} lines after");
}

/// Fills the filesystem under `dir` to its last page with one file, `dir/filler`.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [64 << 10, 4 << 10, 512, 1] {
        let buf = vec![b'x'; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    path
}

/// What the drain of `d` sends to `listener`: its first connection, read until `len`
/// bytes came (the waits bounded, the daemon's log shown on failure).
fn collect(listener: &std::net::TcpListener, d: &Daemon, len: usize) -> String {
    listener.set_nonblocking(true).unwrap();
    let mut conn = None;
    wait_for("the drain to connect", || {
        conn = listener.accept().ok().map(|(c, _)| c);
        conn.is_some()
    });
    let conn = conn.unwrap();
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = String::new();
    let mut reader = std::io::BufReader::new(conn);
    while got.len() < len {
        let before = got.len();
        std::io::BufRead::read_line(&mut reader, &mut got)
            .unwrap_or_else(|e| panic!("reading the collector's connection: {e}\n{}", d.stderr()));
        assert!(
            got.len() > before,
            "the connection closed early:\n{}",
            d.stderr()
        );
    }
    got
}

/// A disk buffer whose disk is full when it starts its first segment: the supply is
/// held, and once there is room again the next segment is made (the failed one's name is
/// not tried again) and every line reaches the collector, in order.
#[test]
fn a_disk_buffer_on_a_full_disk_resumes_once_there_is_room() {
    let Some((dir, mnt, _fs)) = with_tmpfs("rel-diskbuf-full") else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"tcp_out\"\naddress = \"127.0.0.1:{port}\"\n\
             buffer = \"disk\"\nbuffer_dir = \"mnt/buf\"\nbuffer_bytes = \"64KiB\"\n\
             drain_timeout = \"30s\"\n"
        ),
    );
    let filler = fill(&mnt);
    let n = 5_000;
    let input: String = (0..n)
        .map(|i| format!("line {i:07} the quick brown fox\n"))
        .collect();
    let mut d = Daemon::start(&cfg, Stdio::piped());
    let mut stdin = d.child.stdin.take().unwrap();
    // stdin stays open until every line has arrived: no stop comes in between.
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || {
            stdin.write_all(input.as_bytes()).unwrap();
            stdin
        })
    };
    wait_for("the disk buffer's write failure to be logged", || {
        d.stderr().contains("cannot write to the disk buffer")
    });
    assert!(d.running(), "daemon died on a full disk:\n{}", d.stderr());
    std::fs::remove_file(&filler).unwrap();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let got = collect(&listener, &d, input.len());
    drop(writer.join().unwrap());
    let err = d.exit_ok();
    assert!(
        got == input,
        "the collector's lines differ from the input:\n{err}"
    );
    let [cin, _, dropped, _] = final_counters(&err, "tcp_out");
    assert_eq!((cin, dropped), (n as u64, 0), "{err}");
}

/// Makes room on the full disk of a daemon that is stopping, and checks that the stop
/// then ends soon, with every line of `input` written to the disk buffer under `dir`.
fn room_ends_the_stop(d: &mut Daemon, filler: &Path, dir: &Path, input: &str) -> String {
    let freed = std::time::Instant::now();
    std::fs::remove_file(filler).unwrap();
    let err = d.exit_ok();
    let took = freed.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "the stop took {took:?} after the disk had room again:\n{err}"
    );
    assert!(!err.contains("records not written"), "{err}");
    let n = input.lines().count();
    let buf = dir.join("mnt/buf");
    assert_eq!(lines_in_segments(&buf, input), n, "lines on disk:\n{err}");
    err
}

/// Counts the lines of `input` in the segment files of the disk buffer `buf` (its frames
/// are the lines, between headers).
fn lines_in_segments(buf: &Path, input: &str) -> usize {
    let mut on_disk = Vec::new();
    for e in std::fs::read_dir(buf)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if e.path().extension().is_some_and(|x| x == "seg") {
            on_disk.extend(std::fs::read(e.path()).unwrap());
        }
    }
    let text = String::from_utf8_lossy(&on_disk);
    input.lines().filter(|l| text.contains(l)).count()
}

/// stdin -> `drain` (tcp_out or relp_out) with a disk buffer on a full disk and the peer
/// away; stdin ends (the stop begins) and the whole input is read.
fn stop_on_a_full_disk(
    drain: &str,
    tag: &str,
    drain_timeout: &str,
) -> Option<(TempDir, Tmpfs, PathBuf, Daemon, String, u16)> {
    stop_on_a_full_disk_with(tag, |port| {
        format!(
            "type = \"{drain}\"\naddress = \"127.0.0.1:{port}\"\nbuffer_bytes = \"64KiB\"\n\
             drain_timeout = \"{drain_timeout}\"\n"
        )
    })
}

/// [`stop_on_a_full_disk`] with the drain's keys (its type, address and bounds) made by
/// `keys` from the port of the absent peer.
fn stop_on_a_full_disk_with(
    tag: &str,
    keys: impl Fn(u16) -> String,
) -> Option<(TempDir, Tmpfs, PathBuf, Daemon, String, u16)> {
    let (dir, mnt, fs) = with_tmpfs(tag)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[engine]\nstop_timeout = \"600s\"\n\
             [[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\n{}buffer = \"disk\"\nbuffer_dir = \"mnt/buf\"\n",
            keys(port)
        ),
    );
    let filler = fill(&mnt);
    let n = 5_000;
    let input: String = (0..n)
        .map(|i| format!("line {i:07} the quick brown fox\n"))
        .collect();
    // A regular file under 256 KiB is read whole, to its end, in the first turn: the end
    // of the input begins the stop, with every line read.
    let in_path = dir.path().join("input.txt");
    std::fs::write(&in_path, &input).unwrap();
    let mut d = Daemon::start(&cfg, Stdio::from(std::fs::File::open(&in_path).unwrap()));
    wait_for("the stop with the disk buffer not writable", || {
        d.stderr().contains("the disk buffer not writable")
    });
    assert!(
        d.running(),
        "the daemon did not wait for the disk:\n{}",
        d.stderr()
    );
    Some((dir, fs, filler, d, input, port))
}

/// A stop while the peer is away and the disk buffer's disk is full: the drain goes on
/// trying the write, and once there is room it writes every record, syncs them and exits
/// at once, well before drain_timeout; the next run sends them all, in order.
#[test]
fn a_stop_on_a_full_disk_writes_the_buffer_once_there_is_room() {
    let Some((dir, _fs, filler, mut d, input, port)) =
        stop_on_a_full_disk("tcp_out", "rel-stop-full", "120s")
    else {
        return;
    };
    let err = room_ends_the_stop(&mut d, &filler, dir.path(), &input);
    assert!(err.contains("the disk buffer is writable again"), "{err}");
    assert!(!err.contains("drain_timeout expired"), "{err}");
    let n = input.lines().count();
    let left = err
        .lines()
        .find(|l| l.contains("records left in the disk buffer for the next run"))
        .unwrap_or_else(|| panic!("nothing left on disk:\n{err}"));
    assert!(left.contains(&format!(" records={n} ")), "{left}");

    // The next run, with the collector listening, sends every line, in order.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let cfg = dir.path().join("deadbeat.toml");
    let mut d = Daemon::start(&cfg, Stdio::piped());
    let stdin = d.child.stdin.take().unwrap();
    let got = collect(&listener, &d, input.len());
    drop(stdin);
    let err = d.exit_ok();
    assert!(
        got == input,
        "the collector's lines differ from the input:\n{err}"
    );
}

/// A stop while the peer is away and the disk stays full: at drain_timeout the drain
/// says at error level how many records it could not write (lost: stdin cannot send
/// them again), and does not claim they stay on disk.
#[test]
fn a_stop_on_a_disk_that_stays_full_says_what_it_lost() {
    let Some((dir, _fs, _filler, mut d, input, _)) =
        stop_on_a_full_disk("tcp_out", "rel-stop-stays-full", "2s")
    else {
        return;
    };
    let st = d.wait_exit();
    let err = d.stderr();
    let n = input.lines().count();
    let lost = err
        .lines()
        .find(|l| l.contains("records not written"))
        .unwrap_or_else(|| panic!("no loss reported (exit {st:?}):\n{err}"));
    assert!(lost.contains("ERRO"), "not at error level: {lost}");
    assert!(lost.contains(&format!(" records={n} ")), "{lost}\n{err}");
    // drain_timeout is the user's bound on the stop: the loss is said, the exit is 0 (as
    // for tcp_out's memory buffer at drain_timeout; stop_timeout exits 1).
    assert!(st.success(), "exit {st:?}:\n{err}");
    assert!(
        err.contains("drain_timeout expired at shutdown with the disk buffer still not writable"),
        "{err}"
    );
    assert!(!err.contains("left in the disk buffer"), "{err}");
    assert!(!err.contains("stay in the disk buffer"), "{err}");
    assert_eq!(lines_in_segments(&dir.path().join("mnt/buf"), &input), 0);
}

/// relp_out parks as tcp_out does: a stop with the server away and the disk full goes on
/// trying the write and ends once every record is on disk.
#[test]
fn a_stop_of_relp_out_on_a_full_disk_writes_the_buffer_once_there_is_room() {
    let Some((dir, _fs, filler, mut d, input, _)) =
        stop_on_a_full_disk("relp_out", "rel-stop-full-relp", "120s")
    else {
        return;
    };
    assert!(
        d.stderr().contains("with the server away"),
        "{}",
        d.stderr()
    );
    room_ends_the_stop(&mut d, &filler, dir.path(), &input);
}

/// http_out holds the records in memory batches: with the server away and the disk full
/// from the start, their adoption by the disk fails. The stop goes on trying it, and once
/// there is room every record is on disk and synced, and the drain exits at once; the
/// next run posts them all, in order.
#[test]
fn a_stop_of_http_out_on_a_full_disk_writes_its_memory_batches_once_there_is_room() {
    let Some((dir, _fs, filler, mut d, input, port)) =
        stop_on_a_full_disk_with("rel-stop-full-http", |port| {
            format!(
                "type = \"http_out\"\nurl = \"http://127.0.0.1:{port}/ingest\"\n\
                 backoff_max = \"200ms\"\nshutdown_timeout = \"120s\"\n"
            )
        })
    else {
        return;
    };
    let err = d.stderr();
    assert!(err.contains("with the server away"), "{err}");
    // The key the user sets for http_out is shutdown_timeout.
    let parked = err
        .lines()
        .find(|l| l.contains("the disk buffer not writable"))
        .unwrap_or_default();
    assert!(
        parked.contains("retrying the write until shutdown_timeout"),
        "{parked}"
    );
    assert!(
        err.contains("cannot write the records held in memory to the disk buffer"),
        "the records were not in memory only:\n{err}"
    );
    let err = room_ends_the_stop(&mut d, &filler, dir.path(), &input);
    assert!(!err.contains("shutdown_timeout expired"), "{err}");
    let n = input.lines().count();
    let left = err
        .lines()
        .find(|l| l.contains("records left in the disk buffer for the next run"))
        .unwrap_or_else(|| panic!("nothing left on disk:\n{err}"));
    assert!(left.contains(&format!(" records={n} ")), "{left}");

    // The next run, with the server listening, posts every line, in order.
    let got = super::disk_buffer::http_collector(port);
    let cfg = dir.path().join("deadbeat.toml");
    let mut d = Daemon::start(&cfg, Stdio::piped());
    let stdin = d.child.stdin.take().unwrap();
    got.wait_for(n, PATIENCE);
    drop(stdin);
    let err = d.exit_ok();
    let posted = got.lines();
    assert_eq!(posted.len(), n, "{err}");
    for (p, l) in posted.iter().zip(input.lines()) {
        assert!(p.contains(l), "posted {p:?} where {l:?} was due:\n{err}");
    }
}
