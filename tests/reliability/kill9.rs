//! `kill -9` at seeded points of a `tail` → `file_out` run, restarting on the same state.

use std::fmt::Write as _;
use std::io::{Read as _, Seek as _, SeekFrom};

use super::*;

/// Every line is `r NNNNNNN` and this tail.
const TAIL: &str = " the quick brown fox jumps";
/// Every line has this many bytes, newline included, so offsets convert to line numbers.
const WIDTH: usize = 2 + 7 + TAIL.len() + 1;
const KILLS: usize = 5;
/// Lines of the run unless `DEADBEAT_RELIABILITY_LINES` says otherwise.
const DEFAULT_LINES: usize = 1_000_000;

/// Appends line `i` to `buf`.
fn push_line(buf: &mut String, i: usize) {
    let _ = writeln!(buf, "r {i:07}{TAIL}");
}

/// The number of `l` (a line without its newline) if it is exactly line `i < n`.
fn line_id(l: &[u8], n: usize) -> Option<usize> {
    if l.len() != WIDTH - 1 || !l.starts_with(b"r ") || !l.ends_with(TAIL.as_bytes()) {
        return None;
    }
    // A plain loop: the test binary is not optimised, and this runs for every line.
    let mut i = 0;
    for &d in &l[2..9] {
        if !d.is_ascii_digit() {
            return None;
        }
        i = i * 10 + usize::from(d - b'0');
    }
    (i < n).then_some(i)
}

/// The number of the last complete line of `out`, if any.
fn last_id(out: &Path) -> Option<usize> {
    let mut f = std::fs::File::open(out).ok()?;
    let len = f.metadata().ok()?.len();
    let from = len.saturating_sub(2 * WIDTH as u64);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let end = tail.iter().rposition(|&c| c == b'\n')?;
    let start = tail[..end]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |p| p + 1);
    line_id(&tail[start..end], usize::MAX)
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

/// `kill -9` at 5 seeded points of a 1M-line `tail` → `file_out` run, restarting on the
/// same state each time: no line is lost, and the duplicates (reported) are at most the
/// lines that were out but not yet acknowledged in the checkpoint at each kill.
///
/// `DEADBEAT_RELIABILITY_LINES` sets the number of lines (default 1,000,000: about 8 s on
/// 2 cores, against the debug binary; at least 10).
#[test]
fn kill_9_at_seeded_points_loses_nothing() {
    let started = Instant::now();
    let n: usize = std::env::var("DEADBEAT_RELIABILITY_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LINES);
    assert!(n >= 10, "DEADBEAT_RELIABILITY_LINES must be at least 10");
    assert!(n <= 10_000_000, "line numbers have 7 digits");
    let patience = PATIENCE + Duration::from_millis(n as u64 / 10);
    let dir = TempDir::new("rel-kill9");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    let mut first = String::new();
    push_line(&mut first, 0);
    std::fs::write(&app, first).unwrap();
    // The application writes on through the crashes, in 200 chunks over about 4 s, so
    // checkpoints (written every second) advance between the kills.
    let chunk = n.div_ceil(200);
    let writer = {
        let app = app.clone();
        std::thread::spawn(move || {
            let mut text = String::with_capacity(chunk * WIDTH);
            let mut i = 1;
            while i < n {
                let end = (i + chunk).min(n);
                text.clear();
                (i..end).for_each(|j| push_line(&mut text, j));
                append(&app, text.as_bytes());
                i = end;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
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
