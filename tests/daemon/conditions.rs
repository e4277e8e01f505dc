//! A condition comparing a number with a string: a configuration error when the field is
//! known to hold numbers, else false, counted as an error of the cog and logged per record.

use super::*;

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

const REGEX_STATUS: &str = "[[train.cog]]\ntype = \"regex\"\npattern = '^(?P<status>\\d+)'\n\
                            types = { status = \"int\" }\n";

#[test]
fn a_known_number_compared_with_a_string_is_a_config_error() {
    let dir = TempDir::new("cond-known");
    let text = format!(
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n{REGEX_STATUS}\
         [[train.cog]]\ntype = \"filter\"\nkeep = 'status >= \"400\"'\n\
         [[train.cog]]\ntype = \"stdout\"\n"
    );
    let (code, err) = check(dir.path(), &text);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            ":11:19: train \"t\", cog filter#3, key \"keep\": in the condition at column 11: \
             `status` holds numbers here, compared with the string \"400\": write the number 400"
        ),
        "{err}"
    );
    // The same in a route's `when`; and with the number, or a field of unknown kind, fine.
    let routed = format!(
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n{REGEX_STATUS}\
         [[train.cog]]\ntype = \"route\"\ntrain = \"u\"\nwhen = 'status == \"404\"'\n\
         [[train.cog]]\ntype = \"stdout\"\n\
         [[train]]\nname = \"u\"\n[[train.cog]]\ntype = \"stdout\"\n"
    );
    let (code, err) = check(dir.path(), &routed);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cog route#3, key \"when\""), "{err}");
    let fine = text.replace("'status >= \"400\"'", "'status >= 400'");
    assert_eq!(check(dir.path(), &fine), (0, String::new()));
    let unknown = text.replace(REGEX_STATUS, "[[train.cog]]\ntype = \"json_parse\"\n");
    assert_eq!(check(dir.path(), &unknown), (0, String::new()));
}

#[test]
fn a_number_compared_with_a_string_at_run_time_is_counted_and_logged() {
    let dir = TempDir::new("cond-run");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"json_parse\"\n\
         [[train.cog]]\ntype = \"filter\"\nkeep = 'status >= \"400\"'\n\
         [[train.cog]]\ntype = \"stdout\"\n",
    );
    let (st, out, err) = run_with_stdin(
        &cfg,
        b"{\"status\":500}\n{\"status\":200}\n{\"status\":\"404\"}\n{\"other\":1}\n",
    );
    assert!(st.success(), "{err}");
    // Text compares with the string; the two numbers cannot, and say so.
    assert_eq!(String::from_utf8_lossy(&out), "{\"status\":\"404\"}\n");
    assert!(
        err.contains("final counters train=t cog=filter#3 in=4 out=1 dropped=3 errors=2"),
        "{err}"
    );
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("condition compares values of different kinds"))
        .collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings[0].contains("event=1 why=\"`status` held a number, compared with a string")
            && warnings[0].ends_with("train=t cog=filter#3"),
        "{}",
        warnings[0]
    );
}

#[test]
fn a_route_counts_its_mismatches_too() {
    let dir = TempDir::new("cond-route");
    let cfg = write_config(
        dir.path(),
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n\
         [[train.cog]]\ntype = \"json_parse\"\n\
         [[train.cog]]\ntype = \"route\"\ntrain = \"u\"\nwhen = 'status > \"300\"'\n\
         [[train.cog]]\ntype = \"stdout\"\n\
         [[train]]\nname = \"u\"\n[[train.cog]]\ntype = \"drop\"\n",
    );
    let (st, out, err) = run_with_stdin(&cfg, b"{\"status\":500}\n{\"status\":\"500\"}\n");
    assert!(st.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "{\"status\":500}\n");
    assert!(
        err.contains("final counters train=t cog=route#3 in=2 out=1 dropped=0 errors=1"),
        "{err}"
    );
}
