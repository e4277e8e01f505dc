//! JSON whose string fields hold JSON: parsed once, re-encoded as the same object.

use std::io::{Read as _, Write as _};

use super::*;

/// Runs `input` through `stdin → json_parse → remove message → file_out json`.
fn round(dir: &Path, input: &str) -> (String, String) {
    let cfg = write_config(
        dir,
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"json_parse\"\non_error = \"keep\"\n\
         [[train.cog]]\ntype = \"remove\"\nfields = [\"message\"]\n\
         [[train.cog]]\ntype = \"file_out\"\npath = \"out.json\"\nformat = \"json\"\n",
    );
    let out = dir.join("out.json");
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(dir.join("err.log"));
    let mut d = Daemon::start(&cfg, Stdio::piped());
    let mut stdin = d.child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let err = d.exit_ok();
    let mut got = String::new();
    std::fs::File::open(&out)
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    (got, err)
}

#[test]
fn wrapped_json_is_reencoded_as_the_same_object() {
    let dir = TempDir::new("rel-wrapped");
    let input = concat!(
        r#"{"outer":"{\"inner\":1}"}"#,
        "\n",
        r#"{"outer":"{\"inner\":\"{\\\"deep\\\":[1,2]}\"}","n":2}"#,
        "\n",
        r#"{"s":"back\\slash \"quoted\" {\"x\":null}","list":["{\"a\":1}",3],"m":{"k":"[1]"}}"#,
        "\n",
    );
    let (first, err) = round(dir.path(), input);
    assert_eq!(first, input, "{err}");
    let [cin, cout, dropped, errors] = final_counters(&err, "json_parse");
    assert_eq!([cin, cout, dropped, errors], [3, 3, 0, 0], "{err}");
    // Parsed again, the output gives the same value, encoded the same way.
    let (second, err) = round(dir.path(), &first);
    assert_eq!(second, first, "{err}");
}
