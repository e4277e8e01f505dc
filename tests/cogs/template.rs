//! Drain templates through the real binary: values that hold JSON's special characters
//! still make valid JSON with `escape = "json"` or the `|json` filter.

use std::process::Command;

use deadbeat::record::{Key, Value};

use crate::engine::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");

/// A quote, a backslash, a newline, a control character, a tab and non-ASCII text, as
/// `json_parse` reads them from the input line.
const NASTY: &str = "say \"hi\" C:\\dir\nnext\u{1}\tcafé";
const INPUT: &[u8] =
    br#"{"m":"say \"hi\" C:\\dir\nnext\u0001\tcaf\u00e9","n":7,"ok":true,"l":["a\"b"]}
"#;

/// Runs `stdin → json_parse → stdout` with the given stdout keys; returns stdout's lines.
fn run(stdout_keys: &str) -> Vec<String> {
    let dir = TempDir::new("template");
    let config = dir.path().join("deadbeat.toml");
    let text = format!(
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"json_parse\"\n\
         [[train.cog]]\ntype = \"stdout\"\nformat = \"template\"\n{stdout_keys}\n"
    );
    std::fs::write(&config, text).unwrap();
    let (st, out, err) = crate::daemon::run_with_stdin(&config, INPUT);
    assert!(st.success(), "deadbeat failed: {st}\n{err}");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    let Value::Map(m) = v else {
        panic!("not an object: {v}")
    };
    m.get(Key::new(name))
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

#[test]
fn escape_json_makes_valid_json() {
    let out = run(r#"escape = "json"
template = '{{"msg":"{m}","n":{n},"ok":"{ok}","l":"{l}","missing":"{nope}"}}'"#);
    assert_eq!(out.len(), 1, "{out:?}");
    let v = Value::parse_json(out[0].as_bytes())
        .unwrap_or_else(|e| panic!("invalid JSON {:?}: {e}", out[0]));
    assert_eq!(field(&v, "msg"), &Value::from(NASTY));
    assert_eq!(field(&v, "n"), &Value::Int(7));
    assert_eq!(field(&v, "ok"), &Value::from("true"));
    assert_eq!(field(&v, "l"), &Value::from(r#"["a\"b"]"#));
    assert_eq!(field(&v, "missing"), &Value::from(""));
}

#[test]
fn json_filter_makes_valid_json() {
    let out = run(
        r#"template = '{{"msg":{m|json},"n":{n|json},"ok":{ok | json},"l":{l|json},"missing":{nope|json}}}'"#,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let v = Value::parse_json(out[0].as_bytes())
        .unwrap_or_else(|e| panic!("invalid JSON {:?}: {e}", out[0]));
    assert_eq!(field(&v, "msg"), &Value::from(NASTY));
    assert_eq!(field(&v, "n"), &Value::Int(7));
    assert_eq!(field(&v, "ok"), &Value::Bool(true));
    assert_eq!(field(&v, "l"), &Value::List(vec![Value::from("a\"b")]));
    assert_eq!(field(&v, "missing"), &Value::Null);
}

#[test]
fn json_filter_wins_over_escape() {
    let out = run(r#"escape = "json"
template = '{{"msg":{m|json},"raw":"{m}"}}'"#);
    let v = Value::parse_json(out[0].as_bytes())
        .unwrap_or_else(|e| panic!("invalid JSON {:?}: {e}", out[0]));
    assert_eq!(field(&v, "msg"), &Value::from(NASTY));
    assert_eq!(field(&v, "raw"), &Value::from(NASTY));
}

#[test]
fn escape_none_stays_the_default() {
    // Unescaped text, as before: the newline in the value splits the output line.
    let out = run(r#"template = 'msg={m}'"#);
    assert_eq!(out.join("\n"), format!("msg={NASTY}"));
}

fn check_fails(stdout_keys: &str, what: &str) {
    let dir = TempDir::new("template-check");
    let config = dir.path().join("deadbeat.toml");
    let text = format!(
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"stdout\"\n{stdout_keys}\n"
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(what), "expected {what:?} in:\n{err}");
}

#[test]
fn escape_and_filter_errors() {
    check_fails(
        "format = \"template\"\ntemplate = \"{m|yaml}\"",
        r#"unknown filter "yaml""#,
    );
    check_fails(
        "format = \"template\"\ntemplate = \"{m}\"\nescape = \"xml\"",
        r#"key "escape""#,
    );
    check_fails(
        "format = \"json\"\nescape = \"json\"",
        "`escape` is used only with format = \"template\"",
    );
}
