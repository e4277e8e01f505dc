//! `kill -9` at seeded points of a `tail` → `file_out` run, restarting on the same state.

use super::numbered::{WIDTH, last_id, line_id, lines_from_env, live_app_log};
use super::*;

const KILLS: usize = 5;
/// Lines of the run unless `DEADBEAT_RELIABILITY_LINES` says otherwise.
const DEFAULT_LINES: usize = 1_000_000;

/// The offset of the first file in the checkpoint, 0 while there is none: the last whole
/// record of the journal (`.NAME.live`, records `@ LEN HASH` + text) if it has one, else
/// the synced checkpoint file.
fn checkpoint_offset(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir.join("st")) else {
        return 0;
    };
    let offset = |t: &str| -> Option<u64> { t.lines().nth(1)?.split(' ').nth(4)?.parse().ok() };
    let (mut journal, mut synced) = (None, None);
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        if name.ends_with(".live") {
            journal = last_record(&bytes).and_then(offset);
        } else if name.ends_with(".state") {
            synced = offset(&String::from_utf8_lossy(&bytes));
        }
    }
    journal.or(synced).unwrap_or(0)
}

/// The text of the last whole record of a checkpoint journal.
fn last_record(j: &[u8]) -> Option<&str> {
    let mut last = None;
    let mut pos = 0;
    while let Some(nl) = j[pos..].iter().position(|&c| c == b'\n') {
        let head = std::str::from_utf8(&j[pos..pos + nl]).ok()?;
        let mut f = head.strip_prefix("@ ")?.split(' ');
        let len: usize = f.next()?.parse().ok()?;
        let hash: u64 = f.next()?.parse().ok()?;
        let text = j.get(pos + nl + 1..pos + nl + 1 + len)?;
        // FNV-1a, as the checkpoint computes it.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in text {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        if h != hash {
            break;
        }
        last = std::str::from_utf8(text).ok();
        pos += nl + 1 + len;
    }
    last
}

/// Lines in one batch: what one turn of `tail` reads from a file, a 256 KiB read, or a
/// short read and the read that confirms the end (so less than 512 KiB).
const BATCH_LINES: usize = (512 << 10) / WIDTH + 1;

/// `kill -9` at 5 seeded points of a 1M-line `tail` → `file_out` run, restarting on the
/// same state each time: no line is lost, and the duplicates (reported) are at most the
/// lines that were out but not yet acknowledged in the checkpoint at each kill, and at
/// most one batch per kill (the checkpoint is saved after every acknowledged batch).
///
/// `DEADBEAT_RELIABILITY_LINES` sets the number of lines (default 1,000,000: about 8 s on
/// 2 cores, against the debug binary; at least 10).
#[test]
fn kill_9_at_seeded_points_loses_nothing() {
    let started = Instant::now();
    let n = lines_from_env("DEADBEAT_RELIABILITY_LINES", DEFAULT_LINES);
    let patience = PATIENCE + Duration::from_millis(n as u64 / 10);
    let dir = TempDir::new("rel-kill9");
    // The application writes on through the crashes.
    let writer = live_app_log(dir.path(), n);
    let cfg = write_config(
        dir.path(),
        "[state]\ndir = \"st\"\n[engine]\ninotify = true\n[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"tail\"\npaths = [\"logs/*.log\"]\nstart_at = \"beginning\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n",
    );
    let out = dir.path().join("out.log");
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());

    let mut rng = Rng::new(0xdead_beef_5eed);
    let mut points: Vec<usize> = (0..KILLS)
        .map(|_| 1 + rng.below(n as u64 - 1) as usize)
        .collect();
    points.sort_unstable();

    let mut unacked_total = 0;
    // Per kill: the output's size after it, and the lines out by then.
    let mut at_kill: Vec<(usize, usize)> = Vec::new();
    for (k, &p) in points.iter().enumerate() {
        let before = size(&out);
        let mut d = Daemon::start(&cfg, Stdio::null());
        // Progress of this run: the file grew, and its last line is at or past the point.
        wait_within(&format!("kill point {k}: line {p}"), patience, || {
            size(&out) > before && last_id(&out).is_some_and(|i| i >= p)
        });
        kill(d.id(), libc::SIGKILL);
        let st = d.wait_exit();
        assert!(!st.success(), "kill -9 did not kill: {st:?}");
        // Output is in input order: everything up to the last line is out once at least.
        let written = last_id(&out).map_or(0, |i| i + 1);
        let off = checkpoint_offset(dir.path()) as usize;
        assert_eq!(off % WIDTH, 0, "checkpoint {off} inside a line");
        let acked = off / WIDTH;
        assert!(
            acked <= written,
            "checkpoint {acked} past the output {written}"
        );
        unacked_total += written - acked;
        at_kill.push((size(&out) as usize, written));
        eprintln!(
            "kill {k}: at line {p}, {written} lines out, {acked} acknowledged in the checkpoint, \
             {} to send again",
            written - acked
        );
    }
    let before = size(&out);
    let d = Daemon::start(&cfg, Stdio::null());
    writer.join().unwrap();
    wait_within("the last line", patience, || {
        size(&out) > before && last_id(&out) == Some(n - 1)
    });
    d.stop();

    // One pass over the output, a line's width at a time (no per-byte scan, no allocation
    // per line: the test binary is not optimised and the output has millions of lines).
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.last(), Some(&b'\n'), "the output ends inside a line");
    let mut seen = vec![0u32; n];
    let (mut exact, mut torn) = (0, Vec::new());
    let mut pos = 0;
    while pos < got.len() {
        let whole = got.get(pos..pos + WIDTH).filter(|l| l[WIDTH - 1] == b'\n');
        if let Some(i) = whole.and_then(|l| line_id(&l[..WIDTH - 1], n)) {
            seen[i] += 1;
            exact += 1;
            pos += WIDTH;
            continue;
        }
        let end = pos + got[pos..].iter().position(|&c| c == b'\n').unwrap();
        torn.push(String::from_utf8_lossy(&got[pos..end]).into_owned());
        pos = end + 1;
    }
    // A kill -9 inside a large write(2) leaves the batch cut mid-line (the kernel stops
    // copying on a fatal signal); the restart appends after the fragment. Such lines are
    // reported; they may only appear at a kill, and lines only there count as lost.
    if !torn.is_empty() {
        eprintln!("{} torn lines at the kills: {torn:?}", torn.len());
    }
    assert!(
        torn.len() <= KILLS,
        "{} foreign lines: {torn:?}",
        torn.len()
    );
    let lost: Vec<usize> = (0..n).filter(|&i| seen[i] == 0).collect();
    assert!(
        lost.is_empty(),
        "{} lines lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let dups = exact - n;
    // Per kill: the restart's first whole line says how far back it went.
    for (k, &(at, written)) in at_kill.iter().enumerate() {
        // A torn last line is ended by a newline before the restart appends.
        let from = if at == 0 || got[at - 1] == b'\n' {
            at
        } else {
            at + got[at..].iter().position(|&c| c == b'\n').unwrap() + 1
        };
        let first = got
            .get(from..from + WIDTH - 1)
            .and_then(|l| line_id(l, n))
            .unwrap_or_else(|| panic!("kill {k}: no whole line at {from}"));
        let again = written.saturating_sub(first);
        eprintln!("kill {k}: the restart sent again from line {first}: {again} duplicates");
        assert!(
            again <= BATCH_LINES,
            "kill {k}: {again} lines sent again, more than one batch ({BATCH_LINES})"
        );
    }
    eprintln!(
        "kill -9 x{KILLS} over {n} lines (points {points:?}): {dups} duplicates, \
         {unacked_total} unacknowledged at the kills, {} torn lines; {:.1} s",
        torn.len(),
        started.elapsed().as_secs_f64()
    );
    // Only lines out but not acknowledged in the checkpoint at a kill are sent again.
    assert!(
        dups <= unacked_total,
        "{dups} duplicates, {unacked_total} unacknowledged"
    );
    assert!(dups <= KILLS * n.max(100_000), "{dups} duplicates");
}
