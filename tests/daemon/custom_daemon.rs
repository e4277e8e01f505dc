//! `examples/custom_daemon.rs`: deadbeat's command line run by another program with a cog
//! of its own (`upper`), on `config/custom_daemon.toml`.
//!
//! The example is built here with the cargo that builds the tests (a no-op when it is
//! fresh), so the test checks the example's current source even under
//! `cargo test --test main`, which does not build examples.

use std::fs::File;
use std::sync::OnceLock;

use super::*;

/// Longest the example's build may take: it compiles one small file against the library
/// the tests already built, but the machine may be busy.
const BUILD_PATIENCE: Duration = Duration::from_secs(300);

/// The example's binary, built once for all the tests of this module; `Err` holds why
/// it could not be built.
fn example() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build_example) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Builds `examples/custom_daemon.rs` with the profile the tests run with, next to the
/// `deadbeat` binary under test.
fn build_example() -> Result<PathBuf, String> {
    let profile_dir = Path::new(BIN)
        .parent()
        .ok_or_else(|| format!("{BIN} has no parent directory"))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => return Err(format!("no profile directory in {BIN}")),
    };
    let log_dir = TempDir::new("custom-daemon-build");
    let log_path = log_dir.path().join("cargo.log");
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cargo = Command::new(env!("CARGO"))
        .args(["build", "--example", "custom_daemon", "--profile", profile])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", env!("CARGO")))?;
    let deadline = Instant::now() + BUILD_PATIENCE;
    let status = loop {
        if let Some(st) = cargo.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = cargo.kill();
            let _ = cargo.wait();
            return Err(format!(
                "building the custom_daemon example took over {BUILD_PATIENCE:?}; cargo said:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        return Err(format!(
            "building the custom_daemon example failed ({status}):\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        ));
    }
    let bin = profile_dir.join("examples").join("custom_daemon");
    if !bin.is_file() {
        return Err(format!(
            "cargo built the custom_daemon example, but not at {}",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Runs the example with `args` to its end: (exit code, stdout, stderr).
fn custom_daemon(args: &[&str]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(example())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr on the side, so that neither pipe can fill while the other is read.
    let mut err_pipe = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let st = wait_exit(&mut child);
    (st.code().unwrap_or(-1), out, err.join().unwrap())
}

/// The bundled configuration that uses the custom cog.
fn bundled_config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/custom_daemon.toml")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn custom_daemon_checks_its_config_with_the_custom_cog() {
    let cfg = bundled_config();
    let (code, out, err) = custom_daemon(&["check", &cfg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, b"ok\n");
    // The stock binary does not know the cog: the registry is what differs.
    let stock = Command::new(BIN).args(["check", &cfg]).output().unwrap();
    let stock_err = String::from_utf8_lossy(&stock.stderr);
    assert_eq!(stock.status.code(), Some(2), "{stock_err}");
    assert!(
        stock_err.contains("unknown cog type \"upper\""),
        "{stock_err}"
    );
}

#[test]
fn custom_daemon_documents_its_cog() {
    let (code, out, err) = custom_daemon(&["cogs", "upper"]);
    assert_eq!(code, 0, "{err}");
    let doc = String::from_utf8_lossy(&out);
    assert!(
        doc.starts_with("upper (transform): upper-cases the ASCII letters of a text field\n"),
        "{doc}"
    );
    assert!(
        doc.contains("  field (string, default message): dotted path of the field"),
        "{doc}"
    );
    // Listed among the supplied cogs, which are all still there.
    let (code, out, err) = custom_daemon(&["cogs"]);
    assert_eq!(code, 0, "{err}");
    let list = String::from_utf8_lossy(&out);
    let stock = Command::new(BIN).arg("cogs").output().unwrap();
    for line in String::from_utf8_lossy(&stock.stdout).lines() {
        assert!(list.contains(line), "{line:?} missing from\n{list}");
    }
    assert!(
        list.lines()
            .any(|l| l.contains("upper") && l.contains("upper-cases")),
        "{list}"
    );
}

#[test]
fn custom_daemon_runs_the_bundled_data_through_its_cog() {
    let (code, out, err) = custom_daemon(&["run", &bundled_config()]);
    assert_eq!(code, 0, "{err}");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/data/access.log");
    let mut want = std::fs::read(&data).unwrap();
    want.make_ascii_uppercase();
    assert_eq!(line_count_of(&want), 200);
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&want)
    );
    assert!(
        err.contains("cog=upper#2 in=200 out=200 dropped=0 errors=0"),
        "{err}"
    );
}

#[test]
fn custom_daemon_names_file_line_and_key_of_a_typo_in_its_cog() {
    let dir = TempDir::new("custom-daemon-typo");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n\
         [[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"upper\"\nfeild = \"message\"\n\
         [[train.cog]]\ntype = \"stdout\"\n",
    );
    let cfg = cfg.to_str().unwrap();
    let want = format!(
        "{cfg}:7:1: train \"t\", cog upper#2, key \"feild\": unknown key for cog \"upper\" \
         (known keys: field)\n"
    );
    for cmd in ["check", "run"] {
        let (code, out, err) = custom_daemon(&[cmd, cfg]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(out.is_empty(), "{cmd}: {}", String::from_utf8_lossy(&out));
        assert_eq!(err, want, "{cmd}");
    }
}

fn line_count_of(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}
