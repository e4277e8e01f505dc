//! SIGHUP after the output file was moved away, with `tail` fed by a continuous writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

#[test]
fn sighup_reopen_under_a_continuous_writer_loses_nothing() {
    let dir = TempDir::new("rel-hup");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    std::fs::write(&app, "").unwrap();
    let cfg = write_config(
        dir.path(),
        "[state]\ndir = \"st\"\n[engine]\ninotify = true\n[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"tail\"\npaths = [\"logs/*.log\"]\nstart_at = \"beginning\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n",
    );
    let out = dir.path().join("out.log");
    let moved = dir.path().join("out.log.1");
    let d = Daemon::start(&cfg, Stdio::null());
    wait_for("start", || d.stderr().contains("trains started"));

    let (chunk, chunks, hold_at) = (100, 200, 150);
    let total = chunk * chunks;
    let hupped = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (app, hupped, written) = (app.clone(), hupped.clone(), written.clone());
        std::thread::spawn(move || {
            for c in 0..chunks {
                if c == hold_at {
                    // The last quarter is written only once the reopen was asked for.
                    wait_for("the SIGHUP", || hupped.load(Ordering::SeqCst));
                }
                let text: String = (c * chunk..(c + 1) * chunk)
                    .map(|i| format!("h {i:06}\n"))
                    .collect();
                append(&app, text.as_bytes());
                written.store((c + 1) * chunk, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    wait_for("lines before the move", || line_count(&out) >= 2_000);
    std::fs::rename(&out, &moved).unwrap();
    let at_hup = written.load(Ordering::SeqCst);
    kill(d.id(), libc::SIGHUP);
    hupped.store(true, Ordering::SeqCst);
    wait_for("the reopened file", || line_count(&out) >= 1);
    writer.join().unwrap();
    wait_for("every line", || {
        line_count(&out) + line_count(&moved) >= total
    });
    let err = d.stop();
    assert!(at_hup < total, "the writer had finished before the SIGHUP");

    let mut got: HashMap<String, usize> = HashMap::new();
    for p in [&moved, &out] {
        for l in std::fs::read_to_string(p).unwrap().lines() {
            *got.entry(l.to_string()).or_insert(0) += 1;
        }
    }
    for i in 0..total {
        assert_eq!(got.get(&format!("h {i:06}")), Some(&1), "line {i}: {err}");
    }
    assert_eq!(got.len(), total, "foreign lines");
    let (before, after) = (line_count(&moved), line_count(&out));
    eprintln!("SIGHUP reopen: {before} lines in the moved file, {after} in the new one");
    assert!(before >= 2_000 && after >= 1);
}
