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

#[test]
fn disk_full_holds_pauses_and_resumes_without_loss() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped disk_full: not running as root, cannot mount a tmpfs");
        return;
    }
    let dir = TempDir::new("rel-diskfull");
    let mnt = dir.path().join("mnt");
    let fs = match Tmpfs::mount(&mnt, "1m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("skipped disk_full: {e}");
            return;
        }
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
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped exactly_once disk full: not running as root, cannot mount a tmpfs");
        return;
    }
    let dir = TempDir::new("rel-diskfull-eo");
    let mnt = dir.path().join("mnt");
    let fs = match Tmpfs::mount(&mnt, "1m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("skipped exactly_once disk full: {e}");
            return;
        }
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
