//! A whole TOML train: `file_in → regex(apache_combined) → anonymise → remove → file_out`
//! with a dead-letter train, as in the bundled `config/access_to_json.toml`.

use std::path::Path;
use std::process::Command;

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");

const INPUT: &str = r#"192.168.1.77 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"
2001:db8:85a3::8a2e:370:7334 - - [27/Nov/2026:10:00:01 +0000] "POST /login HTTP/1.1" 302 - "-" "curl/8.5.0"
not an access log line
10.9.8.7 - - [27/Nov/2026:10:00:02 +0100] "-" 408 - "-" "-"
"#;

const EXPECTED: &str = r#"{"path":"/apache_pb.gif","client":"192.168.1.0","ident":"-","user":"frank","time":"2000-10-10T13:55:36-07:00","method":"GET","protocol":"HTTP/1.0","status":200,"bytes":2326,"referer":"http://www.example.com/start.html","agent":"Mozilla/4.08 [en] (Win98; I ;Nav)"}
{"path":"/login","client":"2001:db8:85a3::","ident":"-","user":"-","time":"2026-11-27T10:00:01Z","method":"POST","protocol":"HTTP/1.1","status":302,"bytes":null,"referer":"-","agent":"curl/8.5.0"}
{"path":null,"client":"10.9.8.0","ident":"-","user":"-","time":"2026-11-27T10:00:02+01:00","method":null,"protocol":null,"request":"-","status":408,"bytes":null,"referer":"-","agent":"-"}
"#;

#[test]
fn access_log_to_anonymised_json_with_rejects() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new("pipeline");
    let d = dir.path();
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::create_dir_all(d.join("var")).unwrap();
    std::fs::write(d.join("data/access.log"), INPUT).unwrap();
    // The bundled config, unchanged but for its location: its paths are relative to it.
    let conf = d.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::copy(root.join("config/access_to_json.toml"), conf.join("c.toml")).unwrap();
    std::fs::rename(d.join("data"), conf.join("data")).unwrap();
    let out = Command::new(BIN)
        .args(["run", conf.join("c.toml").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        std::fs::read_to_string(d.join("var/access.json")).unwrap(),
        EXPECTED
    );
    let input_path = conf.join("data/access.log");
    assert_eq!(
        std::fs::read_to_string(d.join("var/rejects.json")).unwrap(),
        format!(
            "{{\"message\":\"not an access log line\",\"path\":\"{}\",\"offset\":269,\"error\":\"no match: expected a [time]\"}}\n",
            input_path.display()
        )
    );
    assert!(
        err.contains("cog=regex#2 in=4 out=3 dropped=0 errors=1"),
        "{err}"
    );
    assert!(err.contains("train=rejects cog=file_out#1 in=1"), "{err}");
}

#[test]
fn bundled_configs_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["quickstart.toml", "access_to_json.toml"] {
        let out = Command::new(BIN)
            .args(["check", root.join("config").join(name).to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    }
}
