//! `merge` driven through the daemon: a run from stdin, configuration errors naming the
//! key, and `kill -9` of a `tail` → `merge` → `file_out` run.

use std::fs::OpenOptions;

use super::*;
use crate::reliability::numbered::{line_id, lines_from_env, live_app_log};

/// `stdin` → `merge` with `keys` → `stdout`.
fn stdin_config(dir: &Path, keys: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"json_parse\"\n\
             [[train.cog]]\ntype = \"remove\"\nfields = [\"message\"]\n\
             [[train.cog]]\ntype = \"merge\"\n{keys}\n\
             [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n"
        ),
    )
}

/// JSON records of two interleaved requests folded per request until their `done` line;
/// the counters add up (merged-away records counted as dropped).
#[test]
fn requests_fold_per_key_until_their_end() {
    let dir = TempDir::new("merge-stdin");
    let cfg = stdin_config(
        dir.path(),
        "key = [\"req\"]\nend = 'msg == \"done\"'\ncount_field = \"n\"\n\
         strategies = { msg = \"concat\", bytes = \"sum\", status = \"max\", tags = \"array\" }",
    );
    let input = "\
{\"req\":1,\"msg\":\"GET /a\",\"bytes\":10,\"status\":200,\"tags\":\"x\"}
{\"req\":2,\"msg\":\"GET /b\",\"bytes\":1,\"status\":200}
{\"req\":1,\"msg\":\"retry\",\"bytes\":5,\"status\":503,\"tags\":\"y\"}
{\"req\":1,\"msg\":\"done\",\"bytes\":1,\"status\":200}
{\"req\":2,\"msg\":\"done\",\"bytes\":2,\"status\":404}
{\"req\":3,\"msg\":\"open\",\"bytes\":7,\"status\":200}
";
    let (st, out, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "\
{\"req\":1,\"msg\":\"GET /a retry done\",\"bytes\":16,\"status\":503,\"tags\":[\"x\",\"y\"],\"n\":3}
{\"req\":2,\"msg\":\"GET /b done\",\"bytes\":3,\"status\":404,\"n\":2}
{\"req\":3,\"msg\":\"open\",\"bytes\":7,\"status\":200,\"n\":1}
",
        "{err}"
    );
    assert!(err.contains("cog=merge#4 in=6 out=3 dropped=3"), "{err}");
}

#[test]
fn bad_settings_are_configuration_errors_naming_the_key() {
    let dir = TempDir::new("merge-check");
    for (keys, want) in [
        (
            "strategies = { message = \"concatenate\" }",
            "key \"strategies.message\": unknown strategy \"concatenate\"",
        ),
        (
            "strategies = { message = 3 }",
            "key \"strategies.message\": expected a strategy name",
        ),
        (
            "end = 'message contains'",
            "key \"end\": in the condition at column",
        ),
        ("max_events = 0", "key \"max_events\": must be at least 1"),
        ("key = [\"a..b\"]", "key \"key\": \"a..b\""),
        ("idle = \"soon\"", "key \"idle\""),
    ] {
        let cfg = stdin_config(dir.path(), keys);
        let res = deadbeat()
            .args(["check", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{keys}");
        assert!(err.contains(want), "{keys}: {err}");
    }
}

/// Lines in the kill test unless `DEADBEAT_MERGE_LINES` says otherwise.
const DEFAULT_LINES: usize = 100_000;

/// The groups `merge` makes of lines `0..n` with `max_events = 7` and an end at every
/// line whose number ends in 9: `(first, last)` per group.
fn groups(n: usize) -> Vec<(usize, usize)> {
    let mut g = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = start;
        while end + 1 < n && end - start + 1 < 7 && end % 10 != 9 {
            end += 1;
        }
        g.push((start, end));
        start = end + 1;
    }
    g
}

/// `tail` → `merge` → `file_out`, killed with `kill -9` twice while the application
/// writes on, then restarted: every line is out, each output line is one whole group
/// (so a restart re-reads from the first line of a group whose merged datum was not yet
/// acknowledged: the checkpoint never passed a line held in an open group), and the
/// duplicates (reported) are whole groups sent again.
///
/// `DEADBEAT_MERGE_LINES` sets the number of lines (default 100,000).
#[test]
fn kill_9_mid_stream_loses_nothing() {
    // The last line ends a group, so every group is out without a shutdown.
    let n = lines_from_env("DEADBEAT_MERGE_LINES", DEFAULT_LINES).div_ceil(10) * 10;
    let dir = TempDir::new("merge-kill9");
    let writer = live_app_log(dir.path(), n);
    let cfg = write_config(
        dir.path(),
        "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"tail\"\npaths = [\"logs/*.log\"]\nstart_at = \"beginning\"\n\
         [[train.cog]]\ntype = \"merge\"\nstrategies = { message = \"concat\" }\n\
         separator = \"|\"\nmax_events = 7\nend = 'message contains \"9 the\"'\nidle = \"0s\"\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.log\"\n",
    );
    let out = dir.path().join("out.log");
    let start = || {
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("err.log"))
            .unwrap();
        deadbeat()
            .args(["run", cfg.to_str().unwrap()])
            .stderr(err)
            .spawn()
            .unwrap()
    };
    let want = groups(n);
    let mut at_kill = Vec::new();
    for k in 1..=2 {
        let before = line_count(&out);
        let mut child = start();
        let target = before + want.len() / 4;
        wait_for(&format!("kill {k}: {target} groups out"), || {
            line_count(&out) >= target
        });
        kill(child.id(), libc::SIGKILL);
        let st = wait_exit(&mut child);
        assert!(!st.success(), "kill -9 did not kill: {st:?}");
        at_kill.push(std::fs::metadata(&out).map_or(0, |m| m.len() as usize));
    }
    writer.join().unwrap();
    let mut child = start();
    let last = format!("r {:07}", n - 1);
    wait_for("the last group", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains(&last))
    });
    kill(child.id(), libc::SIGTERM);
    let st = wait_exit(&mut child);
    let err = std::fs::read_to_string(dir.path().join("err.log")).unwrap_or_default();
    assert!(st.success(), "{err}");

    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.last(), Some(&b'\n'), "the output ends inside a line");
    let mut seen = vec![0u32; n];
    let (mut dups, mut torn) = (0, Vec::new());
    let mut pos = 0;
    while pos < got.len() {
        let mut end = pos + got[pos..].iter().position(|&c| c == b'\n').unwrap();
        // A kill -9 inside a large write(2) leaves the batch cut mid-line (the kernel stops
        // copying on a fatal signal) and the restart appends after the fragment: the
        // fragment's group was not acknowledged, so it is sent again whole after it.
        if let Some(&k) = at_kill.iter().find(|&&k| pos < k && k < end + 1) {
            torn.push(String::from_utf8_lossy(&got[pos..k]).into_owned());
            pos = k;
            end = pos + got[pos..].iter().position(|&c| c == b'\n').unwrap();
        }
        let l = std::str::from_utf8(&got[pos..end]).unwrap();
        pos = end + 1;
        let ids: Vec<usize> = l
            .split('|')
            .map(|part| {
                line_id(part.as_bytes(), n).unwrap_or_else(|| panic!("not a line: {part:?}"))
            })
            .collect();
        let (first, last) = (ids[0], ids[ids.len() - 1]);
        assert!(
            want.binary_search(&(first, last)).is_ok() && ids.iter().copied().eq(first..=last),
            "not one whole group: {l}"
        );
        if seen[first] > 0 {
            dups += 1;
        }
        for i in ids {
            seen[i] += 1;
        }
    }
    if !torn.is_empty() {
        eprintln!("{} groups torn at the kills: {torn:?}", torn.len());
    }
    let missing: Vec<usize> = (0..n).filter(|&i| seen[i] == 0).collect();
    assert!(
        missing.is_empty(),
        "{} lines lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    eprintln!(
        "merge kill -9 x2 over {n} lines ({} groups): out at kills {at_kill:?} bytes, \
         {dups} groups sent again",
        want.len()
    );
    // Groups sent again were out but not yet acknowledged at a kill: a few batches.
    assert!(dups <= want.len() / 2, "{dups} duplicate groups");
}

/// `max_keys` holds over many distinct keys: every record comes out once (the groups
/// emitted early are whole), and eviction lines stay few whatever the input.
#[test]
fn max_keys_bounds_open_groups_and_logs_evictions_at_a_bounded_rate() {
    let dir = TempDir::new("merge-keys");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"merge\"\nkey = [\"message\"]\nmax_keys = 10\n\
         count_field = \"n\"\n\
         [[train.cog]]\ntype = \"stdout\"\nformat = \"template\"\ntemplate = \"{message} {n}\"\n",
    );
    let n: usize = std::env::var("DEADBEAT_MERGE_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mut input = String::new();
    for i in 0..n {
        // Each key twice in a row, then never again.
        input.push_str(&format!("k{i}\nk{i}\n"));
    }
    let (st, stdout, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    let out = String::from_utf8_lossy(&stdout);
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> = (0..n).map(|i| format!("k{i} 2")).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    assert!(
        err.contains(&format!("cog=merge#2 in={} out={n} dropped={n}", 2 * n)),
        "{err}"
    );
    let logged = err.matches("too many open groups").count();
    assert!(logged >= 1, "{err}");
    assert!(logged <= 100, "{logged} eviction lines");
    assert!(
        err.contains(&format!("evictions={}", n - 10)),
        "{}",
        err.lines().rev().take(8).collect::<Vec<_>>().join("\n")
    );
}
