//! Shell-style file name patterns: `*`, `?`, `[abc]`, `[a-z]`, `[!x]` and `\` escapes.
//!
//! Patterns match one path component at a time (`*` never crosses a `/`), which is what
//! directory watches need: [`split_path`] separates the literal directory of a pattern,
//! the one to watch, from the name pattern its entries are matched against.

use std::path::{Path, PathBuf};

/// A glob on file names: `*` (any run), `?` (one byte), `[...]` (a set of bytes, with
/// ranges `a-z` and negation by a leading `!` or `^`); `\` escapes the next byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(Vec<Tok>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Byte(u8),
    Any,
    Star,
    Set { neg: bool, ranges: Vec<(u8, u8)> },
}

impl Glob {
    /// Whether the pattern has no wildcard (it names exactly one entry).
    pub fn is_literal(&self) -> bool {
        self.0.iter().all(|t| matches!(t, Tok::Byte(_)))
    }

    /// Compiles a pattern; malformed ones (unclosed `[`, backwards range, trailing `\\`)
    /// are errors saying what is wrong.
    pub fn new(p: &str) -> Result<Glob, String> {
        let b = p.as_bytes();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'*' => {
                    if !matches!(toks.last(), Some(Tok::Star)) {
                        toks.push(Tok::Star);
                    }
                }
                b'?' => toks.push(Tok::Any),
                b'\\' => {
                    i += 1;
                    let Some(&c) = b.get(i) else {
                        return Err("the pattern ends with a lone '\\'".into());
                    };
                    toks.push(Tok::Byte(c));
                }
                b'[' => {
                    let mut j = i + 1;
                    let neg = matches!(b.get(j), Some(b'!' | b'^'));
                    if neg {
                        j += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let Some(&c) = b.get(j) else {
                            return Err(format!("unclosed '[' at byte {i} of the pattern"));
                        };
                        // A ']' first in the set is a member, as in fnmatch.
                        if c == b']' && !first {
                            break;
                        }
                        first = false;
                        if b.get(j + 1) == Some(&b'-') && b.get(j + 2).is_some_and(|&e| e != b']') {
                            let e = b[j + 2];
                            if e < c {
                                return Err(format!(
                                    "range '{}-{}' goes backwards in the pattern",
                                    c as char, e as char
                                ));
                            }
                            ranges.push((c, e));
                            j += 3;
                        } else {
                            ranges.push((c, c));
                            j += 1;
                        }
                    }
                    toks.push(Tok::Set { neg, ranges });
                    i = j;
                }
                c => toks.push(Tok::Byte(c)),
            }
            i += 1;
        }
        Ok(Glob(toks))
    }

    /// Whether `s` matches the whole pattern.
    pub fn matches(&self, s: &[u8]) -> bool {
        let t = &self.0;
        let (mut ti, mut si) = (0, 0);
        // Where to resume after the last `*`: (token after it, next byte it may swallow).
        let mut back: Option<(usize, usize)> = None;
        while si < s.len() {
            let ok = match t.get(ti) {
                Some(Tok::Star) => {
                    back = Some((ti + 1, si));
                    ti += 1;
                    continue;
                }
                Some(Tok::Byte(c)) => *c == s[si],
                Some(Tok::Any) => true,
                Some(Tok::Set { neg, ranges }) => {
                    ranges.iter().any(|&(a, z)| (a..=z).contains(&s[si])) != *neg
                }
                None => false,
            };
            if ok {
                ti += 1;
                si += 1;
            } else if let Some((bt, bs)) = back {
                ti = bt;
                si = bs + 1;
                back = Some((bt, bs + 1));
            } else {
                return false;
            }
        }
        t[ti..].iter().all(|x| matches!(x, Tok::Star))
    }
}

/// Whether `s` holds a wildcard character.
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
        assert!(Glob::new("[abc").is_err());
        assert!(Glob::new("x\\").is_err());
        assert!(Glob::new("[z-a]").is_err());
    }
}
