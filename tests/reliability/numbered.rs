//! The numbered lines of the `kill -9` runs (kill9, exactly_once): every line has one
//! width, so offsets convert to line numbers, and an application that appends them while
//! the daemon is killed and restarted.

use std::fmt::Write as _;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::time::Duration;

use super::append;

/// Every line is `r NNNNNNN` and this tail.
pub(crate) const TAIL: &str = " the quick brown fox jumps";
/// Every line has this many bytes, newline included, so offsets convert to line numbers.
pub(crate) const WIDTH: usize = 2 + 7 + TAIL.len() + 1;

/// Appends line `i` to `buf`.
pub(crate) fn push_line(buf: &mut String, i: usize) {
    let _ = writeln!(buf, "r {i:07}{TAIL}");
}

/// The number of `l` (a line without its newline) if it is exactly line `i < n`.
pub(crate) fn line_id(l: &[u8], n: usize) -> Option<usize> {
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
pub(crate) fn last_id(out: &Path) -> Option<usize> {
    let mut f = std::fs::File::open(out).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(2 * WIDTH as u64)))
        .ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let end = tail.iter().rposition(|&c| c == b'\n')?;
    let start = tail[..end]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |p| p + 1);
    line_id(&tail[start..end], usize::MAX)
}

/// The number of lines a run takes from `var`, `default` when unset: at least 10 (the
/// kills need room), at most 10,000,000 (line numbers have 7 digits).
pub(crate) fn lines_from_env(var: &str, default: usize) -> usize {
    let n = std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    assert!(n >= 10, "{var} must be at least 10");
    assert!(n <= 10_000_000, "{var}: line numbers have 7 digits");
    n
}

/// `logs/app.log` in `dir` holding line 0, and a thread that appends lines 1 to `n - 1`
/// in 200 chunks over about 4 s, so checkpoints advance between the kills.
pub(crate) fn live_app_log(dir: &Path, n: usize) -> std::thread::JoinHandle<()> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    let mut first = String::new();
    push_line(&mut first, 0);
    std::fs::write(&app, first).unwrap();
    let chunk = n.div_ceil(200);
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
}
