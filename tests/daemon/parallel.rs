//! `parallel` through the daemon: the same bytes as the train without it over 200k lines
//! (with drops and failures inside the sub-train), `tail` stopped mid-stream and restarted
//! (nothing lost, nothing repeated: the checkpoint hears of what the workers dropped), and
//! `check` naming file, line and key of a bad sub-cog; with `render = "json"`, the same
//! bytes through a raw drain.

use std::fs::OpenOptions;

use super::*;

/// `n` apache combined lines: IPv4 and IPv6 clients, every 13th a 404, every 101st a
/// client that is no address.
fn access_lines(n: usize) -> String {
    let mut s = String::with_capacity(n * 160);
    for i in 0..n {
        let client = if i % 101 == 7 {
            "no-address".to_string()
        } else if i % 6 == 0 {
            format!("2001:db8:{:x}:{:x}::{:x}", i % 7, i % 251, i % 65_536)
        } else {
            format!("10.{}.{}.{}", i % 13, i % 241, i % 256)
        };
        let status = if i % 13 == 4 { 404 } else { 200 };
        s.push_str(&format!(
            "{client} - - [05/Dec/2026:07:{:02}:{:02} +0000] \"GET /page/{i} HTTP/1.1\" {status} {} \
             \"-\" \"agent/{}\"\n",
            (i / 60) % 60,
            i % 60,
            i % 5000,
            i % 17
        ));
    }
    s
}

/// The sub-train, as cogs of a train (`[[train.cog]]`) or of `parallel`
/// (`[[train.cog.cog]]`).
fn transforms(table: &str) -> String {
    format!(
        "[[{table}]]\ntype = \"regex\"\npreset = \"apache_combined\"\n\
         [[{table}]]\ntype = \"filter\"\ndrop = 'status == 404'\n\
         [[{table}]]\ntype = \"anonymise\"\nfield = \"client\"\nmode = \"keyed\"\n\
         key = \"parallel-test-key-0123456789\"\n\
         [[{table}]]\ntype = \"remove\"\nfields = [\"message\", \"offset\"]\n"
    )
}

/// A train from `supply` through the transforms (inside `parallel` when `workers` is
/// given) into `out`.
fn config(dir: &Path, name: &str, supply: &str, workers: Option<usize>, out: &str) -> PathBuf {
    let middle = match workers {
        None => transforms("train.cog"),
        Some(w) => format!(
            "[[train.cog]]\ntype = \"parallel\"\nworkers = {w}\nbatch = 256\nmax_in_flight = 4\n{}",
            transforms("train.cog.cog")
        ),
    };
    let text = format!(
        "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n{supply}{middle}\
         [[train.cog]]\ntype = \"file_out\"\npath = \"{out}\"\nformat = \"json\"\n"
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const FILE_IN: &str = "[[train.cog]]\ntype = \"file_in\"\npaths = [\"in.log\"]\n";

/// Lines the transforms keep of `access_lines(n)`.
fn kept(n: usize) -> usize {
    (0..n).filter(|i| i % 13 != 4 && i % 101 != 7).count()
}

#[test]
fn output_is_byte_identical_to_the_train_without_parallel() {
    let n = 200_000;
    let dir = TempDir::new("parallel-same");
    std::fs::write(dir.path().join("in.log"), access_lines(n)).unwrap();
    let plain = config(dir.path(), "plain.toml", FILE_IN, None, "plain.json");
    let par = config(dir.path(), "par.toml", FILE_IN, Some(3), "par.json");
    run_ok(&plain);
    run_ok(&par);
    let a = std::fs::read(dir.path().join("plain.json")).unwrap();
    let b = std::fs::read(dir.path().join("par.json")).unwrap();
    assert_eq!(line_count(&dir.path().join("plain.json")), kept(n));
    if a != b {
        let at = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        let line = a[..at].iter().filter(|&&c| c == b'\n').count() + 1;
        panic!(
            "outputs differ from line {line} ({} and {} bytes)",
            a.len(),
            b.len()
        );
    }
    // Keyed anonymisation ran: no client of the input is left in clear.
    let text = String::from_utf8_lossy(&b);
    assert!(!text.contains("\"client\":\"10.1.1.1\""));
    assert!(text.lines().all(|l| l.contains("\"client\":\"")));
}

/// `render = "json"`: the workers render each record, the drain after `parallel` writes
/// `message` as it is (`format = "raw"`), and the bytes are those of the train without
/// `parallel` writing JSON itself. A value `render` does not know is refused by `check`.
#[test]
fn rendered_on_the_workers_the_output_is_the_same_bytes() {
    let n = 50_000;
    let dir = TempDir::new("parallel-render");
    std::fs::write(dir.path().join("in.log"), access_lines(n)).unwrap();
    let plain = config(dir.path(), "plain.toml", FILE_IN, None, "plain.json");
    run_ok(&plain);
    let par = config(dir.path(), "par.toml", FILE_IN, Some(2), "par.json");
    let text = std::fs::read_to_string(&par).unwrap();
    let rendered = text
        .replace(
            "max_in_flight = 4\n",
            "max_in_flight = 4\nrender = \"json\"\n",
        )
        .replace("format = \"json\"", "format = \"raw\"");
    assert!(rendered.contains("render = \"json\"") && rendered.contains("format = \"raw\""));
    std::fs::write(&par, &rendered).unwrap();
    run_ok(&par);
    let a = std::fs::read(dir.path().join("plain.json")).unwrap();
    let b = std::fs::read(dir.path().join("par.json")).unwrap();
    assert_eq!(line_count(&dir.path().join("par.json")), kept(n));
    assert!(a == b, "outputs differ ({} and {} bytes)", a.len(), b.len());

    std::fs::write(
        &par,
        rendered.replace("render = \"json\"", "render = \"yaml\""),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", par.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("render"), "{err}");
}

/// A daemon running a config, killed if the test fails before stopping it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon running `cfg` with stderr appended to `dir/err.log`.
fn spawn(dir: &Path, cfg: &Path) -> Daemon {
    let err = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("err.log"))
        .unwrap();
    Daemon(
        Command::new(BIN)
            .args(["run", cfg.to_str().unwrap()])
            .stderr(err)
            .spawn()
            .unwrap(),
    )
}

/// SIGTERM and a clean exit.
fn stop(dir: &Path, mut d: Daemon) {
    kill(d.0.id(), libc::SIGTERM);
    let st = wait_exit(&mut d.0);
    let err = std::fs::read_to_string(dir.join("err.log")).unwrap_or_default();
    assert!(st.success(), "{err}");
}

/// `tail` into `parallel`, stopped twice while catching up with a backlog, then run to its
/// end: the output is what the train without `parallel` writes from the whole file, line
/// for line. A record the workers dropped and nobody acknowledged would hold the
/// checkpoint back, and the restart would write what follows it twice.
#[test]
fn tail_stopped_mid_stream_loses_and_repeats_nothing() {
    let n = 200_000;
    let dir = TempDir::new("parallel-tail");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let input = access_lines(n);
    std::fs::write(dir.path().join("in.log"), &input).unwrap();
    std::fs::write(logs.join("app.log"), &input).unwrap();
    let plain = config(dir.path(), "plain.toml", FILE_IN, None, "plain.json");
    run_ok(&plain);
    let tail = "[[train.cog]]\ntype = \"tail\"\npaths = [\"logs/*.log\"]\n\
                start_at = \"beginning\"\n";
    let par = config(dir.path(), "par.toml", tail, Some(2), "par.json");
    let out = dir.path().join("par.json");
    let want = kept(n);
    let mut stops_mid_stream = 0;
    for _ in 0..2 {
        let before = line_count(&out);
        let child = spawn(dir.path(), &par);
        wait_for("progress", || line_count(&out) > before);
        stop(dir.path(), child);
        stops_mid_stream += usize::from(line_count(&out) < want);
    }
    let child = spawn(dir.path(), &par);
    wait_for(&format!("{want} lines"), || line_count(&out) >= want);
    stop(dir.path(), child);
    assert!(stops_mid_stream >= 1, "no stop came mid-stream");
    let a = std::fs::read_to_string(dir.path().join("plain.json")).unwrap();
    let b = std::fs::read_to_string(&out).unwrap();
    assert_eq!(b.lines().count(), want, "lines lost or repeated");
    assert!(
        a == b,
        "the output differs from the train's without parallel"
    );
}

fn check(dir: &Path, text: &str) -> (i32, String) {
    let cfg = write_config(dir, text);
    let out = Command::new(BIN)
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A train of stdin, a `parallel` with `sub` (text of its `[[train.cog.cog]]` tables, from
/// line 8 of the file) and stdout.
fn with_sub(sub: &str) -> String {
    format!(
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"parallel\"\nworkers = 2\n{sub}\
         [[train.cog]]\ntype = \"stdout\"\n"
    )
}

#[test]
fn check_names_file_line_and_key_of_a_bad_sub_cog() {
    let dir = TempDir::new("parallel-check");
    let cases = [
        (
            "[[train.cog.cog]]\ntype = \"regex\"\npreset = \"apache_combined\"\n\
             [[train.cog.cog]]\ntype = \"anonymise\"\nmode = \"bogus\"\n",
            ":13:8: train \"t\", cog parallel#2, key \"mode\": in its cog anonymise#2: expected one of",
        ),
        (
            "[[train.cog.cog]]\ntype = \"remove\"\nfields = [\"a\"]\ncolour = 1\n",
            ":11:1: train \"t\", cog parallel#2, key \"colour\": in its cog remove#1: unknown key",
        ),
        (
            "[[train.cog.cog]]\ntype = \"dedup\"\n",
            ":9:8: train \"t\", cog parallel#2, key \"type\": in its cog dedup#1: dedup keeps state",
        ),
        (
            "[[train.cog.cog]]\ntype = \"stdout\"\n",
            "key \"type\": in its cog stdout#1: stdout is a drain",
        ),
        (
            "[[train.cog.cog]]\ntype = \"anonymise\"\non_error = \"train:t\"\n",
            ":10:12: train \"t\", cog parallel#2, key \"on_error\": in its cog anonymise#1: \
             a worker thread cannot hand records to another train",
        ),
        (
            "[[train.cog.cog]]\nname = \"p\"\ntype = \"regex\"\npattern = '(?P<a>'\n",
            "key \"pattern\": in its cog p:",
        ),
        (
            "[[train.cog.cog]]\ntype = \"nonesuch\"\n",
            "key \"type\": in its cog nonesuch#1: unknown cog type \"nonesuch\"",
        ),
        ("", "cog parallel#2: missing required key \"cog\""),
        (
            "batch = 0\n[[train.cog.cog]]\ntype = \"pass\"\n",
            ":8:9: train \"t\", cog parallel#2, key \"batch\": expected at least 1",
        ),
    ];
    for (sub, want) in cases {
        let (code, err) = check(dir.path(), &with_sub(sub));
        assert_eq!(code, 2, "{sub}\n{err}");
        assert!(
            err.contains("deadbeat.toml:") && err.contains(want),
            "wanted {want:?} for\n{sub}\ngot:\n{err}"
        );
    }
    let (code, err) = check(
        dir.path(),
        &with_sub("[[train.cog.cog]]\ntype = \"regex\"\npreset = \"apache_combined\"\n"),
    );
    assert_eq!(code, 0, "{err}");
}

/// Records read from stdin through `parallel`, with the worker count left to the machine.
#[test]
fn stdin_through_parallel_keeps_every_line_in_order() {
    let dir = TempDir::new("parallel-stdin");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"parallel\"\nbatch = 7\n\
         [[train.cog.cog]]\ntype = \"kv_parse\"\n\
         [[train.cog.cog]]\ntype = \"filter\"\ndrop = 'k == \"x\"'\n\
         [[train.cog]]\ntype = \"stdout\"\nformat = \"template\"\ntemplate = \"{n}\"\n",
    );
    let input: String = (0..5000)
        .map(|i| format!("n={i} k={}\n", if i % 10 == 3 { "x" } else { "y" }))
        .collect();
    let (st, out, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    let want: String = (0..5000)
        .filter(|i| i % 10 != 3)
        .map(|i| format!("{i}\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&out), want);
}

/// The benchmark configs of issue 18 (`config/bench/w3k.toml` and every
/// `config/bench/w3k_parallel*.toml`) as they are in the repository, their paths pointed
/// into a temp dir, on a corpus of IPv4 and IPv6 clients (and the shared corpus generator's
/// lines when `../shared/bench/gen_corpus.py` is beside the repository): every parallel
/// variant writes the bytes W3k writes.
#[test]
fn the_w3k_benchmark_configs_write_identical_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bench = root.join("config/bench");
    let dir = TempDir::new("parallel-w3k");
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let n = 30_000;
    let mut corpus = access_lines(n);
    let mut lines = n;
    let generator = root.join("../shared/bench/gen_corpus.py");
    if generator.is_file() {
        let gen_out = Command::new("python3")
            .arg(&generator)
            .args(["--kind", "apache", "--lines", "20000", "--seed", "1"])
            .output();
        if let Ok(o) = gen_out
            && o.status.success()
        {
            corpus.push_str(&String::from_utf8_lossy(&o.stdout));
            lines += 20_000;
        }
    }
    std::fs::write(dir.path().join("corpus.log"), &corpus).unwrap();

    let mut parallel: Vec<String> = std::fs::read_dir(&bench)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.starts_with("w3k_parallel") && f.ends_with(".toml"))
        .collect();
    parallel.sort();
    assert!(
        parallel.iter().any(|f| f == "w3k_parallel.toml") && parallel.len() >= 2,
        "config/bench holds {parallel:?}"
    );
    // Each run gets its own state dir (a checkpoint of one must not skip the corpus for
    // the next) and its own output file, named in the config.
    let adjusted = |name: &str| -> (PathBuf, PathBuf) {
        let text = std::fs::read_to_string(bench.join(name)).unwrap();
        let stem = name.trim_end_matches(".toml");
        let data = format!("{}/", dir.path().display());
        let text = text
            .replace(
                "../../target/bench-data/state",
                &format!("{data}state-{stem}"),
            )
            .replace("../../target/bench-data/", &data)
            .replace("apache-1000000.log", "corpus.log");
        assert!(!text.contains("../../"), "{name}: a path left unadjusted");
        let out = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("path = \"")?.strip_suffix('"'))
            .map(PathBuf::from)
            .unwrap();
        let cfg = dir.path().join(name);
        std::fs::write(&cfg, text).unwrap();
        (cfg, out)
    };

    let (cfg, out) = adjusted("w3k.toml");
    run_ok(&cfg);
    let want = std::fs::read(&out).unwrap();
    let written = want.iter().filter(|&&c| c == b'\n').count();
    assert!(
        written >= lines - n / 101 - 1 && written <= lines,
        "w3k wrote {written} lines of {lines}"
    );
    // Keyed anonymisation ran: IPv4 clients keep their /24 only, IPv6 ones their /48.
    let text = String::from_utf8_lossy(&want);
    assert!(text.contains("\"client\":\"2001:db8:"), "no IPv6 client");
    assert!(!text.contains("\"client\":\"10.1.1.1\""));
    assert!(!text.contains("\"client\":\"2001:db8:1:1::1\""));

    for name in &parallel {
        let (cfg, out) = adjusted(name);
        run_ok(&cfg);
        let got = std::fs::read(&out).unwrap();
        if got != want {
            let at = want
                .iter()
                .zip(&got)
                .position(|(x, y)| x != y)
                .unwrap_or(want.len().min(got.len()));
            let line = want[..at].iter().filter(|&&c| c == b'\n').count() + 1;
            panic!(
                "{name}: output differs from w3k's from line {line} ({} and {} bytes)",
                got.len(),
                want.len()
            );
        }
    }
}
