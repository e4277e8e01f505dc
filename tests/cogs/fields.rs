//! `fields` cogs: `set`, `rename`, `remove`, `copy` through the real binary.

use super::ip::{check, run_train};

#[test]
fn set_constants_templates_and_types() {
    let (ok, lines, err) = run_train(
        "set",
        "[[train.cog]]\ntype = \"set\"\n\
         fields = { host = \"web1\", app = \"api\", seen = \"{host}/{app}\", n = 3, on = true, \
         x = 1.5, l = [1, \"a\"], geo.country = \"FR\", \"geo.city\" = \"Paris\", raw = \"{{literal}}\" }\n\
         [[train.cog]]\ntype = \"remove\"\nfields = [\"message\"]\n",
        "line\n",
    );
    assert!(ok, "{err}");
    assert_eq!(
        lines,
        [concat!(
            r#"{"host":"web1","app":"api","seen":"web1/api","n":3,"on":true,"x":1.5,"l":[1,"a"],"#,
            r#""geo":{"country":"FR","city":"Paris"},"raw":"{literal}"}"#
        )]
    );
}

#[test]
fn rename_copy_remove_with_dotted_paths() {
    let (ok, lines, err) = run_train(
        "fields",
        "[[train.cog]]\ntype = \"set\"\nfields = { \"a.b\" = 1, \"a.c\" = 2, host = \"h\" }\n\
         [[train.cog]]\ntype = \"copy\"\nfields = { host = \"src.host\", missing = \"never\" }\n\
         [[train.cog]]\ntype = \"rename\"\nfields = { \"a.b\" = \"b\", host = \"hostname\", nope = \"x\" }\n\
         [[train.cog]]\ntype = \"remove\"\nfields = [\"message\", \"a.c\", \"absent.field\"]\n",
        "line\n",
    );
    assert!(ok, "{err}");
    assert_eq!(
        lines,
        [r#"{"a":{},"src":{"host":"h"},"b":1,"hostname":"h"}"#]
    );
    // Missing sources are not errors.
    assert!(
        err.contains("cog=rename#4 in=1 out=1 dropped=0 errors=0"),
        "{err}"
    );
}

#[test]
fn field_cog_config_errors() {
    let (ok, err) = check(
        "set-bad",
        "[[train.cog]]\ntype = \"set\"\nfields = { x = \"{open\" }\n",
    );
    assert!(
        !ok && err.contains("key \"fields.x\"") && err.contains("never closed"),
        "{err}"
    );
    let (ok, err) = check(
        "ren-bad",
        "[[train.cog]]\ntype = \"rename\"\nfields = { a = 1 }\n",
    );
    assert!(!ok && err.contains("key \"fields.a\""), "{err}");
    let (ok, err) = check(
        "rm-bad",
        "[[train.cog]]\ntype = \"remove\"\nfields = [\"a..b\"]\n",
    );
    assert!(!ok && err.contains("bad field path"), "{err}");
    let (ok, err) = check("cp-empty", "[[train.cog]]\ntype = \"copy\"\nfields = {}\n");
    assert!(!ok && err.contains("at least one"), "{err}");
}
