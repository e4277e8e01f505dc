//! `ip` cogs: `anonymise` and `cidr_tag` through the real binary.

use std::path::PathBuf;
use std::process::Command;

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");

/// Writes `dir/deadbeat.toml`: one train of `stdin`, `cogs`, then `stdout` with `stdout`'s
/// keys.
fn write_train(dir: &TempDir, cogs: &str, stdout: &str) -> PathBuf {
    let cfg = dir.path().join("deadbeat.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n{cogs}\n\
             [[train.cog]]\ntype = \"stdout\"\n{stdout}"
        ),
    )
    .unwrap();
    cfg
}

/// Runs `cogs` between `stdin` and a JSON `stdout`; returns (success, stdout lines, stderr).
pub(crate) fn run_train(tag: &str, cogs: &str, input: &str) -> (bool, Vec<String>, String) {
    let dir = TempDir::new(tag);
    let cfg = write_train(&dir, cogs, "format = \"json\"\n");
    let (st, out, err) = crate::daemon::run_with_stdin(&cfg, input.as_bytes());
    let out = String::from_utf8_lossy(&out);
    (st.success(), out.lines().map(str::to_string).collect(), err)
}

/// Runs `deadbeat check` on a train of `cogs`; returns (success, stderr).
pub(crate) fn check(tag: &str, cogs: &str) -> (bool, String) {
    let dir = TempDir::new(tag);
    let cfg = write_train(&dir, cogs, "");
    let res = Command::new(BIN)
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    (
        res.status.success(),
        String::from_utf8_lossy(&res.stderr).into_owned(),
    )
}

#[test]
fn anonymise_truncates_text_addresses() {
    let (ok, lines, err) = run_train(
        "anon-trunc",
        "[[train.cog]]\ntype = \"set\"\nfields = { client = \"{message}\" }\n\
         [[train.cog]]\ntype = \"remove\"\nfields = [\"message\"]\n\
         [[train.cog]]\ntype = \"anonymise\"\n",
        "10.1.2.3\n2001:db8:abcd:12::1\n::ffff:192.0.2.200\n",
    );
    assert!(ok, "{err}");
    assert_eq!(
        lines,
        [
            r#"{"client":"10.1.2.0"}"#,
            r#"{"client":"2001:db8:abcd::"}"#,
            r#"{"client":"::ffff:192.0.2.0"}"#,
        ]
    );
}

#[test]
fn anonymise_keyed_preserves_subnets_and_drops_non_addresses() {
    let (ok, lines, err) = run_train(
        "anon-keyed",
        "[[train.cog]]\ntype = \"set\"\nfields = { \"src.ip\" = \"{message}\" }\n\
         [[train.cog]]\ntype = \"remove\"\nfields = [\"message\"]\n\
         [[train.cog]]\ntype = \"anonymise\"\nfield = \"src.ip\"\nmode = \"keyed\"\n\
         key = \"0123456789abcdef0123\"\nipv4_prefix = 0\n",
        "10.1.2.3\n10.1.2.3\n10.1.2.77\nnot-an-ip\n",
    );
    assert!(ok, "{err}");
    // The bad record is dropped (the default here) and counted, its value not logged.
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        err.contains("cog=anonymise#4 in=4 out=3 dropped=1 errors=1"),
        "{err}"
    );
    assert!(!err.contains("not-an-ip"), "{err}");
    let ip = |l: &str| -> std::net::Ipv4Addr {
        let v = l.split('"').nth(5).unwrap();
        v.parse().unwrap()
    };
    let (a, b, c) = (ip(&lines[0]), ip(&lines[1]), ip(&lines[2]));
    assert_eq!(a, b);
    assert_ne!(a, "10.1.2.3".parse::<std::net::Ipv4Addr>().unwrap());
    // 10.1.2.3 and 10.1.2.77 share exactly 25 bits; so do their pseudonyms.
    assert_eq!((u32::from(a) ^ u32::from(c)).leading_zeros(), 25);
}

#[test]
fn anonymise_keep_passes_non_addresses_with_a_reason() {
    let (ok, lines, err) = run_train(
        "anon-keep",
        "[[train.cog]]\ntype = \"set\"\nfields = { client = 7 }\n\
         [[train.cog]]\ntype = \"anonymise\"\non_error = \"keep\"\n\
         [[train.cog]]\ntype = \"remove\"\nfields = [\"message\"]\n",
        "x\n",
    );
    assert!(ok, "{err}");
    assert_eq!(
        lines,
        [r#"{"client":7,"error":"field \"client\": not an IP address (a int value)"}"#]
    );
}

/// `deadbeat check` refuses a train of `cogs`, naming every one of `needles`.
#[track_caller]
fn assert_refused(tag: &str, cogs: &str, needles: &[&str]) {
    let (ok, err) = check(tag, cogs);
    assert!(!ok && needles.iter().all(|n| err.contains(n)), "{err}");
}

#[test]
fn anonymise_config_errors() {
    assert_refused(
        "anon-nokey",
        "[[train.cog]]\ntype = \"anonymise\"\nmode = \"keyed\"\n",
        &["needs one of `key`"],
    );
    assert_refused(
        "anon-short",
        "[[train.cog]]\ntype = \"anonymise\"\nmode = \"keyed\"\nkey = \"short\"\n",
        &["key \"key\"", "at least 16"],
    );
    assert_refused(
        "anon-trunc-key",
        "[[train.cog]]\ntype = \"anonymise\"\nkey = \"0123456789abcdef\"\n",
        &["only with mode"],
    );
    assert_refused(
        "anon-prefix",
        "[[train.cog]]\ntype = \"anonymise\"\nipv4_prefix = 33\n",
        &["ipv4_prefix", "0 to 32"],
    );
    assert_refused(
        "anon-file",
        "[[train.cog]]\ntype = \"anonymise\"\nmode = \"keyed\"\nkey_file = \"nope.key\"\n",
        &["cannot read"],
    );
}

#[test]
fn anonymise_reads_the_key_from_a_file() {
    let dir = TempDir::new("anon-keyfile");
    let key = dir.path().join("anon.key");
    std::fs::write(&key, "0123456789abcdef0123\n").unwrap();
    let run = |k: &str| {
        run_train(
            "anon-keyfile-run",
            &format!(
                "[[train.cog]]\ntype = \"set\"\nfields = {{ client = \"198.51.100.9\" }}\n\
                 [[train.cog]]\ntype = \"remove\"\nfields = [\"message\"]\n\
                 [[train.cog]]\ntype = \"anonymise\"\nmode = \"keyed\"\n{k}\n"
            ),
            "x\n",
        )
    };
    let (ok, from_file, err) = run(&format!("key_file = {:?}", key.to_str().unwrap()));
    assert!(ok, "{err}");
    let (ok, inline, err) = run("key = \"0123456789abcdef0123\"");
    assert!(ok, "{err}");
    assert_eq!(from_file, inline);
    assert!(
        from_file[0].starts_with(r#"{"client":"198.51.100."#),
        "{from_file:?}"
    );
}

#[test]
fn cidr_tag_names_matching_networks() {
    let (ok, lines, err) = run_train(
        "cidr",
        "[[train.cog]]\ntype = \"set\"\nfields = { client = \"{message}\" }\n\
         [[train.cog]]\ntype = \"remove\"\nfields = [\"message\"]\n\
         [[train.cog]]\ntype = \"cidr_tag\"\n\
         networks = { internal = [\"10.0.0.0/8\", \"fd00::/8\"], lab = \"10.9.0.0/16\", dmz = \"192.0.2.0/24\" }\n",
        "10.9.1.1\nfd12::1\n::ffff:192.0.2.5\n8.8.8.8\nbogus\n",
    );
    assert!(ok, "{err}");
    assert_eq!(
        lines,
        [
            r#"{"client":"10.9.1.1","tags":["internal","lab"]}"#,
            r#"{"client":"fd12::1","tags":["internal"]}"#,
            r#"{"client":"::ffff:192.0.2.5","tags":["dmz"]}"#,
            r#"{"client":"8.8.8.8"}"#,
            r#"{"client":"bogus","error":"field \"client\": not an IP address (a string value)"}"#,
        ]
    );
}

#[test]
fn cidr_tag_bad_network_is_a_config_error_at_its_key() {
    assert_refused(
        "cidr-bad",
        "[[train.cog]]\ntype = \"cidr_tag\"\nnetworks = { ok = \"10.0.0.0/8\", bad = [\"10.1.0.0/8\"] }\n",
        &["key \"networks.bad\"", "did you mean \"10.0.0.0/8\""],
    );
    assert_refused(
        "cidr-bad2",
        "[[train.cog]]\ntype = \"cidr_tag\"\nnetworks = { x = \"10.0.0.0/33\" }\n",
        &["is not a network"],
    );
}
