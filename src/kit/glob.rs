//! Shell-style file name patterns: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`, `{a,b}` and `\`
//! escapes, matched by the `globset` crate.
//!
//! Patterns match one path component at a time, which is what directory watches need:
//! [`split_path`] separates the literal directory of a pattern, the one to watch, from the
//! name pattern its entries are matched against.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use globset::{Candidate, ErrorKind, GlobBuilder, GlobMatcher};

/// A glob on file names: `*` (any run), `?` (one byte), `[...]` (a set, with ranges `a-z`,
/// negation by a leading `!` or `^`, and a `]` first in the set as a member), `{a,b}`
/// (either alternative); `\` escapes the next character.
///
/// Matching is on bytes, so names that are not UTF-8 match too. `*` and `?` also match a
/// `/`, so a pattern holding a `/` matches a whole path.
#[derive(Debug, Clone)]
pub struct Glob {
    matcher: GlobMatcher,
    literal: bool,
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.matcher.glob() == other.matcher.glob()
    }
}

impl Eq for Glob {}

impl Glob {
    /// Whether the pattern has no wildcard (it names exactly one entry). An escaped
    /// wildcard counts as one: the answer errs towards "not literal".
    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// Compiles a pattern; malformed ones (unclosed `[` or `{`, backwards range, trailing
    /// `\\`) are errors saying what is wrong.
    pub fn new(p: &str) -> Result<Glob, String> {
        let glob = GlobBuilder::new(p)
            // `*` and `?` match any byte: excludes holding a `/` match whole paths.
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| describe(e.kind()))?;
        Ok(Glob {
            matcher: glob.compile_matcher(),
            literal: !has_wildcards(p) && !p.contains('{'),
        })
    }

    /// Whether `s` matches the whole pattern.
    pub fn matches(&self, s: &[u8]) -> bool {
        self.matcher
            .is_match_candidate(&Candidate::new(Path::new(OsStr::from_bytes(s))))
    }
}

/// Our wording of a pattern error (the crate's names its own internals).
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::UnclosedClass => "unclosed '[' in the pattern".into(),
        ErrorKind::InvalidRange(a, z) => format!("range '{a}-{z}' goes backwards in the pattern"),
        ErrorKind::DanglingEscape => "the pattern ends with a lone '\\'".into(),
        ErrorKind::UnclosedAlternates => "unclosed '{' in the pattern".into(),
        ErrorKind::UnopenedAlternates => "'}' without an opening '{' in the pattern".into(),
        ErrorKind::NestedAlternates | ErrorKind::TooManyNestedAlternates => {
            "'{' inside '{...}' in the pattern".into()
        }
        other => format!("bad pattern: {other}"),
    }
}

/// Whether `s` holds a wildcard character (braces aside: a directory named with them
/// stays usable, as it always was).
pub fn has_wildcards(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
}

/// Splits a path pattern into its literal directory and the pattern of its last
/// component. Wildcards in a directory component are refused (the directory must be
/// watchable as one path), as are a missing file name and a malformed pattern.
pub fn split_path(pattern: &Path) -> Result<(PathBuf, Glob), String> {
    let (Some(name), Some(dir)) = (
        pattern.file_name().and_then(|n| n.to_str()),
        pattern.parent(),
    ) else {
        return Err("no file name (or not UTF-8)".into());
    };
    if dir.to_str().is_none_or(has_wildcards) {
        return Err("wildcards are allowed in the file name only".into());
    }
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_path_buf()
    };
    Ok((dir, Glob::new(name)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let m = |p: &str, s: &str| Glob::new(p).is_ok_and(|g| g.matches(s.as_bytes()));
        assert!(m("*.log", "app.log"));
        assert!(m("*.log", ".log"));
        assert!(!m("*.log", "app.log.1"));
        assert!(m("app.log*", "app.log.1"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("[ab]x", "bx"));
        assert!(!m("[!ab]x", "bx"));
        assert!(m("[a-c]*[0-9]", "b-x-7"));
        assert!(m("*a*b*c", "xxaxxbxxc"));
        assert!(!m("*a*b*c", "xxaxxbxx"));
        assert!(m("x\\*", "x*"));
        assert!(!m("x\\*", "xy"));
        assert!(Glob::new("[x").is_err());
        assert!(m("plain", "plain"));
    }

    #[test]
    fn splits_directory_from_name() {
        let (d, g) = split_path(Path::new("/var/log/*.log")).unwrap();
        assert_eq!(d, PathBuf::from("/var/log"));
        assert!(g.matches(b"syslog.log"));
        assert!(split_path(Path::new("/var/*/x.log")).is_err());
        assert!(Glob::new("app.log").is_ok_and(|g| g.is_literal()));
        assert!(!Glob::new("app.*").is_ok_and(|g| g.is_literal()));
    }

    #[test]
    fn compiled_patterns() {
        let m = |p: &str, s: &str| Glob::new(p).is_ok_and(|g| g.matches(s.as_bytes()));
        assert!(m("*", "a.log"));
        assert!(m("*", ""));
        assert!(m("[^ab]*", "c1"));
        assert!(m("x[0-9][0-9]", "x42"));
        assert!(!m("x[0-9]", "xa"));
        assert!(m("[]]", "]"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("*a*a*a", "aaaa"));
        assert!(m("[a-]", "-"));
    }

    #[test]
    fn malformed_patterns_are_errors() {
        let err = |p: &str| Glob::new(p).unwrap_err();
        assert_eq!(err("[abc"), "unclosed '[' in the pattern");
        assert_eq!(err("x\\"), "the pattern ends with a lone '\\'");
        assert_eq!(err("[z-a]"), "range 'z-a' goes backwards in the pattern");
        assert_eq!(err("app.{log"), "unclosed '{' in the pattern");
        assert_eq!(err("app.log}"), "'}' without an opening '{' in the pattern");
    }

    #[test]
    fn alternatives_bytes_and_whole_paths() {
        let m = |p: &str, s: &[u8]| Glob::new(p).is_ok_and(|g| g.matches(s));
        assert!(m("app.{log,txt}", b"app.txt"));
        assert!(!m("app.{log,txt}", b"app.gz"));
        assert!(m("app\\{1\\}", b"app{1}"));
        // Names that are not UTF-8 match byte by byte.
        assert!(m("?.log", b"\xff.log"));
        assert!(m("*.log", b"\xfe\xff.log"));
        // A pattern holding a '/' (tail's exclude) matches a whole path, `*` across '/'.
        assert!(m("/var/log/*.gz", b"/var/log/a/b.gz"));
        assert!(m("[!a]", b"/"));
        assert!(m("é?.log", "éa.log".as_bytes()));
        assert!(!Glob::new("a{b,c}").is_ok_and(|g| g.is_literal()));
    }
}
