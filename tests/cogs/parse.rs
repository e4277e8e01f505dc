//! `parse` cogs, through the real binary: stdin or file_in → parser → stdout as JSON.

use std::process::Command;

use deadbeat::record::{Key, Record, Value};

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");

/// Runs a train `stdin → cogs → stdout (json)` over `input`; returns stdout's lines.
fn run(cogs: &str, input: &[u8]) -> Vec<String> {
    let dir = TempDir::new("parse");
    let config = dir.path().join("deadbeat.toml");
    let text = format!(
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n{cogs}\n\
         [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n"
    );
    std::fs::write(&config, text).unwrap();
    run_config(&config, input)
}

fn run_config(config: &std::path::Path, input: &[u8]) -> Vec<String> {
    let (st, out, err) = crate::daemon::run_with_stdin(config, input);
    assert!(st.success(), "deadbeat failed: {st}\n{err}");
    String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect()
}

fn check_fails(cogs: &str, what: &str) {
    let dir = TempDir::new("parse-check");
    let config = dir.path().join("deadbeat.toml");
    let text = format!(
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n{cogs}\n\
         [[train.cog]]\ntype = \"stdout\"\n"
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(what), "expected {what:?} in:\n{err}");
}

/// A record without the field to parse fails with the parsers' own reason (`regex` names
/// the field instead), and goes on with the reason under `keep`.
#[test]
fn missing_input_field_is_a_failure_of_every_parser() {
    for cog in ["json_parse", "kv_parse", "syslog_parse"] {
        assert_eq!(
            run(
                &format!("[[train.cog]]\ntype = \"{cog}\"\nfield = \"nope\"\n"),
                b"x\n"
            ),
            [r#"{"message":"x","error":"at byte 0: input field missing or not text"}"#],
            "{cog}"
        );
    }
}

#[test]
fn json_parse_top_level_and_target() {
    let input = b"{\"level\":\"info\",\"n\":3,\"wrapped\":\"{\\\"a\\\":1}\"}\nnot json\n[1]\n";
    assert_eq!(
        run("[[train.cog]]\ntype = \"json_parse\"\n", input),
        [
            r#"{"message":"{\"level\":\"info\",\"n\":3,\"wrapped\":\"{\\\"a\\\":1}\"}","level":"info","n":3,"wrapped":"{\"a\":1}"}"#,
            r#"{"message":"not json","error":"at byte 0: invalid literal"}"#,
            r#"{"message":"[1]","error":"at byte 0: expected a JSON object, found an array"}"#,
        ]
    );
    assert_eq!(
        run(
            "[[train.cog]]\ntype = \"json_parse\"\ntarget = \"j.x\"\non_error = \"drop\"\n",
            b"{\"a\":1}\n{\"a\":\n"
        ),
        [r#"{"message":"{\"a\":1}","j":{"x":{"a":1}}}"#]
    );
}

#[test]
fn syslog_parse_rfc5424_and_errors() {
    let input = b"<165>1 2003-10-11T22:14:15.003Z host.example evntslog 42 ID47 [ex@32473 iut=\"3\" m=\"a\\]b\"] \xEF\xBB\xBFhello\n<999>1 - - - - - -\n<34>Oct 11 22:14\n";
    assert_eq!(
        run("[[train.cog]]\ntype = \"syslog_parse\"\n", input),
        [
            r#"{"message":"hello","facility":"local4","severity":"notice","timestamp":"2003-10-11T22:14:15.003Z","host":"host.example","app":"evntslog","pid":42,"msgid":"ID47","sd":{"ex@32473":{"iut":"3","m":"a]b"}}}"#,
            r#"{"message":"<999>1 - - - - - -","error":"at byte 1: bad PRI: 999 is above 191"}"#,
            r#"{"message":"<34>Oct 11 22:14","error":"at byte 4: expected a syslog timestamp"}"#,
        ]
    );
    assert_eq!(
        run(
            "[[train.cog]]\ntype = \"syslog_parse\"\non_error = \"drop\"\n",
            b"garbage\n<13>1 - h a - - - m\n"
        ),
        [r#"{"message":"m","facility":"user","severity":"notice","host":"h","app":"a"}"#]
    );
}

#[test]
fn syslog_parse_openssh_file() {
    let data =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/OpenSSH_2k.log");
    if !data.exists() {
        eprintln!("skipped: {} is absent", data.display());
        return;
    }
    let dir = TempDir::new("parse-ssh");
    let config = dir.path().join("deadbeat.toml");
    std::fs::write(
        &config,
        format!(
            "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"file_in\"\npaths = [{:?}]\n\
             [[train.cog]]\ntype = \"syslog_parse\"\n\
             [[train.cog]]\ntype = \"stdout\"\nformat = \"json\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let lines = run_config(&config, b"");
    assert_eq!(lines.len(), 2000);
    let r = Record::parse_json(lines[1].as_bytes()).unwrap();
    let get = |k: &str| r.get(Key::new(k)).cloned().unwrap_or_default();
    assert_eq!(get("host"), Value::Str("LabSZ".into()));
    assert_eq!(get("app"), Value::Str("sshd".into()));
    assert_eq!(get("pid"), Value::Int(24200));
    assert_eq!(
        get("message"),
        Value::Str("Invalid user webmaster from 173.234.31.186".into())
    );
    assert!(
        get("timestamp")
            .as_str()
            .unwrap()
            .contains("-12-10T06:55:46Z")
    );
    assert!(lines.iter().all(|l| !l.contains("\"error\"")));
}

#[test]
fn csv_parse_columns_and_errors() {
    let cogs = "[[train.cog]]\ntype = \"csv_parse\"\ncolumns = [\"ip\", \"req\", \"status\"]\n";
    assert_eq!(
        run(
            cogs,
            b"10.0.0.1,\"GET /a,b \"\"x\"\"\",200\n1,2\n1,2,3,4\n,,\n1,\"open,3\n"
        ),
        [
            r#"{"message":"10.0.0.1,\"GET /a,b \"\"x\"\"\",200","ip":"10.0.0.1","req":"GET /a,b \"x\"","status":"200"}"#,
            r#"{"message":"1,2","error":"at byte 3: too few fields: expected 3 columns, found 2"}"#,
            r#"{"message":"1,2,3,4","error":"at byte 6: too many fields: expected 3 columns"}"#,
            r#"{"message":",,","ip":"","req":"","status":""}"#,
            r#"{"message":"1,\"open,3","error":"at byte 2: unterminated quote"}"#,
        ]
    );
    assert_eq!(
        run(
            "[[train.cog]]\ntype = \"csv_parse\"\ncolumns = [\"a\", \"b\"]\ndelimiter = \"\\t\"\ntarget = \"c\"\non_error = \"drop\"\n",
            b"x\ty\nx,y\n"
        ),
        [r#"{"message":"x\ty","c":{"a":"x","b":"y"}}"#]
    );
    check_fails("[[train.cog]]\ntype = \"csv_parse\"\n", "columns");
    check_fails(
        "[[train.cog]]\ntype = \"csv_parse\"\ncolumns = [\"a\"]\ndelimiter = \";;\"\n",
        "one ASCII character",
    );
}

#[test]
fn kv_parse_lenient_and_strict() {
    let input = b"user=bob msg=\"logged in\" junk a=1 a=2\nx=\"open\n";
    assert_eq!(
        run("[[train.cog]]\ntype = \"kv_parse\"\n", input),
        [
            r#"{"message":"user=bob msg=\"logged in\" junk a=1 a=2","user":"bob","msg":"logged in","a":"2"}"#,
            r#"{"message":"x=\"open"}"#,
        ]
    );
    assert_eq!(
        run(
            "[[train.cog]]\ntype = \"kv_parse\"\nstrict = true\nseparator = \", \"\npair = \":\"\n",
            b"a:1, b:\"x, y\"\na:1, junk\n"
        ),
        [
            r#"{"message":"a:1, b:\"x, y\"","a":"1","b":"x, y"}"#,
            r#"{"message":"a:1, junk","error":"at byte 5: no key/value delimiter"}"#,
        ]
    );
    check_fails(
        "[[train.cog]]\ntype = \"kv_parse\"\nseparator = \"\"\n",
        "non-empty",
    );
}

#[test]
fn parsers_chain_and_invalid_utf8() {
    // syslog first, then key=value pairs out of the syslog message.
    let out = run(
        "[[train.cog]]\ntype = \"syslog_parse\"\n[[train.cog]]\ntype = \"kv_parse\"\ntarget = \"kv\"\n",
        b"<14>1 2024-01-02T03:04:05Z h app - - - src=10.0.0.1 act=\xffdeny\n",
    );
    assert_eq!(
        out,
        [
            "{\"message\":\"src=10.0.0.1 act=\u{fffd}deny\",\"facility\":\"user\",\"severity\":\"info\",\"timestamp\":\"2024-01-02T03:04:05Z\",\"host\":\"h\",\"app\":\"app\",\"kv\":{\"src\":\"10.0.0.1\",\"act\":\"\u{fffd}deny\"}}"
        ]
    );
}

#[test]
fn json_parse_keeps_big_integers_exact() {
    // Beyond i64 a float would round 18446744073709551615 to 18446744073709552000.0.
    let line = r#"{"u":18446744073709551615,"i":-9223372036854775809,"h":123456789012345678901234567890,"max":9223372036854775807}"#;
    let out = run(
        "[[train.cog]]\ntype = \"json_parse\"\n\n[[train.cog]]\ntype = \"remove\"\nfields = [\"message\"]\n",
        format!("{line}\n").as_bytes(),
    );
    assert_eq!(out, [line]);
    // A template renders the digits bare too.
    let dir = TempDir::new("parse-big");
    let config = dir.path().join("deadbeat.toml");
    std::fs::write(
        &config,
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"json_parse\"\n\
         [[train.cog]]\ntype = \"stdout\"\nformat = \"template\"\ntemplate = \"{u} {h|json}\"\n",
    )
    .unwrap();
    assert_eq!(
        run_config(&config, format!("{line}\n").as_bytes()),
        ["18446744073709551615 123456789012345678901234567890"]
    );
}
