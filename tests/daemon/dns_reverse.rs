//! `dns_reverse` in the daemon against dnsmasq: names in order, counters, the cache kept
//! across a restart under `[state]`, bad settings refused by `check`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BIN, run_with_stdin, write_config};
use crate::cogs::dns_reverse::{Dnsmasq, dnsmasq_bin};
use crate::engine::TempDir;

/// stdin → set client → dns_reverse (with `keys`) → stdout as JSON, state in `st/`.
fn config(dir: &Path, keys: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[state]\ndir = \"st\"\n[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
             [[train.cog]]\ntype = \"set\"\nfields = {{ client = \"{{message}}\" }}\n\
             [[train.cog]]\ntype = \"remove\"\nfields = [\"message\"]\n\
             [[train.cog]]\ntype = \"dns_reverse\"\n{keys}\n\
             [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n"
        ),
    )
}

#[test]
fn names_in_order_and_counted() {
    let Some(bin) = dnsmasq_bin() else { return };
    let dir = TempDir::new("dns-daemon");
    let dnsmasq = Dnsmasq::start(
        &bin,
        dir.path(),
        "10.40.0.1 a.test\n10.40.0.2 b.test\n2001:db8::9 six.test\n",
        "10.40.0.1",
        &["--local-ttl=600".into()],
    );
    let cfg = config(
        dir.path(),
        &format!(
            "servers = [\"{}\"]\ntimeout = \"300ms\"\nretries = 1",
            dnsmasq.addr()
        ),
    );
    let input = "10.40.0.2\n10.40.0.1\n10.99.1.1\nnot-an-ip\n2001:db8::9\n10.40.0.2\n";
    let (st, out, err) = run_with_stdin(&cfg, input.as_bytes());
    assert!(st.success(), "{err}");
    let out = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"client":"10.40.0.2","hostname":"b.test"}"#,
            r#"{"client":"10.40.0.1","hostname":"a.test"}"#,
            r#"{"client":"10.99.1.1"}"#,
            r#"{"client":"not-an-ip","error":"field \"client\": not an IP address (a string value)"}"#,
            r#"{"client":"2001:db8::9","hostname":"six.test"}"#,
            r#"{"client":"10.40.0.2","hostname":"b.test"}"#,
        ],
        "{err}"
    );
    assert!(
        err.contains("cog=dns_reverse#4 in=6 out=6 dropped=0 errors=1"),
        "{err}"
    );
    assert!(
        err.contains("dns_reverse counts queries=4 names=3 failures=1"),
        "{err}"
    );
    assert_eq!(
        dnsmasq.queries_for("10.40.0.2"),
        1,
        "answered from the cache"
    );
}

#[test]
fn the_cache_is_kept_across_a_restart() {
    let Some(bin) = dnsmasq_bin() else { return };
    let dir = TempDir::new("dns-daemon-persist");
    let dnsmasq = Dnsmasq::start(
        &bin,
        dir.path(),
        "10.41.0.1 kept.test\n",
        "10.41.0.1",
        &["--local-ttl=600".into()],
    );
    let keys = |addr: &str| {
        format!(
            "servers = [\"{addr}\"]\ntimeout = \"200ms\"\nretries = 0\npersist = true\nname = \"rdns\""
        )
    };
    let cfg = config(dir.path(), &keys(&dnsmasq.addr()));
    let (st, out, err) = run_with_stdin(&cfg, b"10.41.0.1\n10.99.2.2\n");
    assert!(st.success(), "{err}");
    assert!(String::from_utf8_lossy(&out).contains("kept.test"), "{err}");
    assert!(err.contains("dns_reverse cache saved"), "{err}");
    let port = dnsmasq.port;
    drop(dnsmasq);

    // The server is gone: names and failures come from the saved cache, nothing is asked.
    let cfg = config(dir.path(), &keys(&format!("127.0.0.1:{port}")));
    let (st, out, err) = run_with_stdin(&cfg, b"10.41.0.1\n10.99.2.2\n");
    assert!(st.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "{\"client\":\"10.41.0.1\",\"hostname\":\"kept.test\"}\n{\"client\":\"10.99.2.2\"}\n",
        "{err}"
    );
    assert!(err.contains("dns_reverse cache loaded"), "{err}");
    assert!(err.contains("queries=0"), "{err}");
    assert!(err.contains("cache_hits=2"), "{err}");
}

#[test]
fn check_refuses_bad_servers_and_bounds() {
    let dir = TempDir::new("dns-daemon-check");
    for (keys, want) in [
        ("servers = [\"dns.example\"]", "key \"servers\""),
        ("max_in_flight = 0", "key \"max_in_flight\""),
        ("max_queries = 5000", "key \"max_queries\""),
        ("timeout = \"0s\"", "key \"timeout\""),
        ("field = \"a..b\"", "key \"field\""),
    ] {
        let cfg = config(dir.path(), keys);
        let res = Command::new(BIN)
            .args(["check", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{keys}: {err}");
        assert!(err.contains(want), "{keys}: {err}");
    }
}
