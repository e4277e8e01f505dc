//! `text` cogs through the real binary: file_in → regex → file_out (json).

use std::path::Path;
use std::process::Command;

use deadbeat::record::{Key, Record, Value};

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");

/// Writes `input` and a config whose first train is `file_in(in.log) → {cogs} →
/// file_out(out.json, json)`, followed by `{more}`; runs it to the end and returns the
/// directory with the outputs.
fn run(tag: &str, input: &str, cogs: &str, more: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::write(dir.path().join("in.log"), input).unwrap();
    let config = dir.path().join("deadbeat.toml");
    std::fs::write(
        &config,
        format!(
            "[[train]]\nname = \"main\"\n[[train.cog]]\ntype = \"file_in\"\npaths = [\"in.log\"]\n\
             {cogs}\n[[train.cog]]\ntype = \"file_out\"\npath = \"out.json\"\nformat = \"json\"\n{more}"
        ),
    )
    .unwrap();
    let res = Command::new(BIN)
        .args(["run", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "deadbeat failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    dir
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `s` as a JSON string body (the fixtures only need quotes and backslashes escaped).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

const APACHE: [&str; 3] = [
    r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#,
    r#"2001:db8::7 - - [22/Nov/2024:10:00:00 +0000] "HEAD /feed HTTP/2.0" 304 - "-" "curl/8.4.0""#,
    r#"10.0.0.1 - - [22/Nov/2024:10:00:01 +0100] "-" 408 - "-" "Say \"hi\"""#,
];

#[test]
fn apache_combined_preset_to_json() {
    let input = APACHE.join("\n") + "\n";
    let dir = run(
        "regex-apache",
        &input,
        "[[train.cog]]\ntype = \"regex\"\npreset = \"apache_combined\"\n",
        "",
    );
    let mut offsets = vec![0];
    for l in &APACHE[..2] {
        offsets.push(offsets.last().unwrap() + l.len() + 1);
    }
    // The request path replaces file_in's `path` (the file): W2's field names win at the
    // top level; `target` keeps them apart.
    let expected = [
        format!(
            r#"{{"message":"{}","path":"/apache_pb.gif","offset":{},"client":"127.0.0.1","ident":"-","user":"frank","time":"2000-10-10T13:55:36-07:00","method":"GET","protocol":"HTTP/1.0","status":200,"bytes":2326,"referer":"http://www.example.com/start.html","agent":"Mozilla/4.08 [en] (Win98; I ;Nav)"}}"#,
            esc(APACHE[0]),
            offsets[0]
        ),
        format!(
            r#"{{"message":"{}","path":"/feed","offset":{},"client":"2001:db8::7","ident":"-","user":"-","time":"2024-11-22T10:00:00Z","method":"HEAD","protocol":"HTTP/2.0","status":304,"bytes":null,"referer":"-","agent":"curl/8.4.0"}}"#,
            esc(APACHE[1]),
            offsets[1]
        ),
        format!(
            r#"{{"message":"{}","path":null,"offset":{},"client":"10.0.0.1","ident":"-","user":"-","time":"2024-11-22T10:00:01+01:00","method":null,"protocol":null,"request":"-","status":408,"bytes":null,"referer":"-","agent":"Say \"hi\""}}"#,
            esc(APACHE[2]),
            offsets[2]
        ),
    ];
    assert_eq!(lines(&dir.path().join("out.json")), expected);
}

// Patterns need the `regex` feature; presets do not.
#[cfg(feature = "regex")]
#[test]
fn pattern_with_types_and_target() {
    let input = "2024-03-01T10:00:00Z 10.1.2.3 took=0.25 ok=yes n=12\n\
                 2024-03-01T10:00:01+02:00 ::1 took=1 ok=0 n=-3\n";
    let dir = run(
        "regex-pattern",
        input,
        r#"[[train.cog]]
type = "regex"
pattern = '^(?P<at>\S+) (?P<ip>\S+) took=(?P<took>\S+) ok=(?P<ok>\S+) n=(?P<n>\S+)(?: (?P<rest>.*))?$'
types = { at = "timestamp:%FT%T%z", ip = "ip", took = "float", ok = "bool", n = "int" }
target = "p"
"#,
        "",
    );
    let got: Vec<Record> = lines(&dir.path().join("out.json"))
        .iter()
        .map(|l| Record::parse_json(l.as_bytes()).unwrap())
        .collect();
    let mut out = Vec::new();
    for r in &got {
        assert!(r.get(Key::new("error")).is_none(), "{r:?}");
        let Some(Value::Map(p)) = r.get(Key::new("p")) else {
            panic!("no map at p: {r:?}");
        };
        let mut line = Vec::new();
        p.write_json(&mut line);
        out.push(String::from_utf8(line).unwrap());
    }
    // `rest` did not take part: not set. The IP renders as text.
    assert_eq!(
        out,
        [
            r#"{"at":"2024-03-01T10:00:00Z","ip":"10.1.2.3","took":0.25,"ok":true,"n":12}"#,
            r#"{"at":"2024-03-01T10:00:01+02:00","ip":"::1","took":1.0,"ok":false,"n":-3}"#,
        ]
    );
}

/// `%a`: a ctime-style time (`Mon Jan  1 00:00:00 2024`) parses, checked against the date.
#[cfg(feature = "regex")]
#[test]
fn timestamp_with_weekday() {
    let input = "Mon Jan  1 00:00:00 2024 started\nTuesday Jan  1 00:00:00 2024 wrong day\n";
    let dir = run(
        "regex-weekday",
        input,
        r#"[[train.cog]]
type = "regex"
pattern = '^(?P<at>\S+ \S+ +\S+ \S+ \d+) (?P<what>.*)$'
types = { at = "timestamp:%a %b %e %T %Y" }
target = "p"
"#,
        "",
    );
    let got: Vec<Record> = lines(&dir.path().join("out.json"))
        .iter()
        .map(|l| Record::parse_json(l.as_bytes()).unwrap())
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].get(Key::new("p")).map(|p| p.to_string()).as_deref(),
        Some(r#"{"at":"2024-01-01T00:00:00Z","what":"started"}"#)
    );
    let err = got[1].get(Key::new("error")).map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("not a timestamp")),
        "{err:?}"
    );
}

const MIXED: &str = "1.2.3.4 - - [22/Nov/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"-\"\n\
                     not an access log line\n\
                     1.2.3.4 - - [22/Nov/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 x \"-\" \"-\"\n\
                     1.2.3.4 - - [22/Nov/2024:10:00:00 +0000] \"GET /b HTTP/1.1\" 404 7 \"-\" \"-\"\n";

fn errors(out: &[String]) -> Vec<Option<String>> {
    out.iter()
        .map(|l| {
            let r = Record::parse_json(l.as_bytes()).unwrap();
            r.get(Key::new("error"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn on_error_keep_drop_and_dead_letter_train() {
    let preset = |on_error: &str| {
        format!(
            "[[train.cog]]\ntype = \"regex\"\npreset = \"apache_combined\"\non_error = \"{on_error}\"\n"
        )
    };
    let no_match = "no match: expected a [time]".to_string();
    let not_int = r#"field bytes: not an int: "x""#.to_string();

    let dir = run("regex-keep", MIXED, &preset("keep"), "");
    let out = lines(&dir.path().join("out.json"));
    assert_eq!(
        errors(&out),
        [None, Some(no_match.clone()), Some(not_int.clone()), None]
    );
    // A kept failure is the record as it came, plus the reason.
    assert!(out[1].starts_with(r#"{"message":"not an access log line","path":"#));

    let dir = run("regex-drop", MIXED, &preset("drop"), "");
    assert_eq!(errors(&lines(&dir.path().join("out.json"))), [None, None]);

    let dead = "[[train]]\nname = \"dead\"\n[[train.cog]]\ntype = \"file_out\"\npath = \"dead.json\"\nformat = \"json\"\n";
    let dir = run("regex-dead", MIXED, &preset("train:dead"), dead);
    let main = lines(&dir.path().join("out.json"));
    assert_eq!(errors(&main), [None, None]);
    assert!(main[1].contains(r#""path":"/b""#));
    let dead = lines(&dir.path().join("dead.json"));
    assert_eq!(errors(&dead), [Some(no_match), Some(not_int)]);
}

// Patterns need the `regex` feature; presets do not.
#[cfg(feature = "regex")]
#[test]
fn missing_input_field_is_a_failure() {
    let dir = run(
        "regex-missing",
        "x\n",
        "[[train.cog]]\ntype = \"regex\"\nfield = \"nope\"\npattern = '(?P<all>.*)'\n",
        "",
    );
    assert_eq!(
        errors(&lines(&dir.path().join("out.json"))),
        [Some("field nope: missing or not text".into())]
    );
}

// Patterns need the `regex` feature; presets do not.
#[cfg(feature = "regex")]
#[test]
fn config_errors_name_the_key() {
    let check = |cog: &str, want: &str| {
        let dir = TempDir::new("regex-config");
        let config = dir.path().join("deadbeat.toml");
        std::fs::write(
            &config,
            format!(
                "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n[[train.cog]]\ntype = \"regex\"\n{cog}\n\
                 [[train.cog]]\ntype = \"stdout\"\n"
            ),
        )
        .unwrap();
        let res = Command::new(BIN)
            .args(["check", config.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{cog}: accepted");
        assert!(err.contains(want), "{cog}: {err}");
    };
    check(
        "pattern = '(?P<a>x)'\npreset = \"sshd\"",
        "give either `pattern` or `preset`",
    );
    check("", "give a `pattern` with named groups or a `preset`");
    check("preset = \"iis\"", "key \"preset\"");
    check("pattern = '(x'", "key \"pattern\"");
    check("pattern = 'x'", "no named group");
    check(
        "pattern = '(?P<a>x)'\ntypes = { b = \"int\" }",
        "no group named \"b\" in the pattern (groups: a)",
    );
    check(
        "pattern = '(?P<a>x)'\ntypes = { a = \"integer\" }",
        "unknown type \"integer\"",
    );
    check(
        "pattern = '(?P<a>x)'\ntypes = { a = \"timestamp:%Q\" }",
        "unsupported conversion %Q",
    );
    check(
        "preset = \"sshd\"\ntypes = { a = \"int\" }",
        "`types` applies to `pattern`",
    );
    check("preset = \"sshd\"\ntarget = \"a..b\"", "key \"target\"");
}

#[test]
fn sshd_preset_on_real_lines() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/OpenSSH_2k.log");
    let Ok(text) = std::fs::read_to_string(&sample) else {
        eprintln!(
            "skipping sshd_preset_on_real_lines: {} is absent",
            sample.display()
        );
        return;
    };
    let input: String = text.lines().take(200).map(|l| format!("{l}\n")).collect();
    let dir = run(
        "regex-sshd",
        &input,
        "[[train.cog]]\ntype = \"regex\"\npreset = \"sshd\"\ntarget = \"sshd\"\n",
        "",
    );
    let out = lines(&dir.path().join("out.json"));
    assert_eq!(out.len(), 200);
    assert_eq!(errors(&out), vec![None; 200]);
    let with = |key: &str| {
        out.iter()
            .filter(|l| {
                let r = Record::parse_json(l.as_bytes()).unwrap();
                matches!(r.get(Key::new("sshd")), Some(Value::Map(m)) if m.get(Key::new(key)).is_some())
            })
            .count()
    };
    // Nearly every sshd line names the peer; the failed logins name the user and port.
    assert!(with("client") > 150, "{}", with("client"));
    assert!(with("user") > 50, "{}", with("user"));
    assert!(with("port") > 20, "{}", with("port"));
    assert_eq!(with("pid"), 200);
}

/// Auth logs as many hosts write them: a priority in front (`<38>`), and the PAM module in
/// the tag (`sshd(pam_unix)[pid]`); both parse, beside the plain shape.
#[test]
fn sshd_preset_priority_and_module() {
    let input = "<38>Jan  1 00:00:00 host sshd[1]: Failed password for root from 10.0.0.9 port 4242 ssh2\n\
                 Jan  1 00:00:01 host sshd(pam_unix)[1234]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4  user=root\n\
                 Jan  1 00:00:02 host sshd[7]: Connection closed by 10.0.0.9 port 4242 [preauth]\n";
    let dir = run(
        "regex-sshd-pri",
        input,
        "[[train.cog]]\ntype = \"regex\"\npreset = \"sshd\"\ntarget = \"sshd\"\n",
        "",
    );
    let out: Vec<String> = lines(&dir.path().join("out.json"))
        .iter()
        .map(|l| {
            let r = Record::parse_json(l.as_bytes()).unwrap();
            assert!(r.get(Key::new("error")).is_none(), "{l}");
            r.get(Key::new("sshd")).unwrap().to_string()
        })
        .collect();
    assert_eq!(
        out,
        [
            r#"{"facility":"auth","severity":"info","time":"Jan  1 00:00:00","host":"host","pid":1,"message":"Failed password for root from 10.0.0.9 port 4242 ssh2","user":"root","client":"10.0.0.9","port":4242}"#,
            r#"{"time":"Jan  1 00:00:01","host":"host","module":"pam_unix","pid":1234,"message":"authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4  user=root","user":"root","client":"218.188.2.4"}"#,
            r#"{"time":"Jan  1 00:00:02","host":"host","pid":7,"message":"Connection closed by 10.0.0.9 port 4242 [preauth]","client":"10.0.0.9","port":4242}"#,
        ]
    );
}
