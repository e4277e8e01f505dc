//! Shell-style file name patterns: `*`, `?`, `[abc]`, `[a-z]`, `[!x]` and `\` escapes.
//!
//! Patterns match one path component at a time (`*` never crosses a `/`), which is what
//! directory watches need: [`split_path`] separates the literal directory of a pattern,
//! the one to watch, from the name pattern its entries are matched against.

use std::path::{Path, PathBuf};

/// A compiled name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pat: Vec<u8>,
    literal: bool,
}

impl Glob {
    /// Compiles `pat`; malformed brackets are taken literally, as shells do.
    pub fn new(pat: &str) -> Self {
        Glob {
            pat: pat.as_bytes().to_vec(),
            literal: !has_wildcards(pat),
        }
    }

    /// Whether the pattern has no wildcard (it names exactly one entry).
    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &[u8]) -> bool {
        if self.literal {
            return unescape(&self.pat) == name;
        }
        match_bytes(&self.pat, name)
    }
}

/// Whether `s` holds a wildcard character.
pub fn has_wildcards(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
}

fn unescape(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'\\' && i + 1 < p.len() {
            i += 1;
        }
        out.push(p[i]);
        i += 1;
    }
    out
}

/// Splits a path pattern into its literal directory and the pattern of its last
/// component; `None` if a directory component holds a wildcard (not supported: the
/// directory must be watchable as one path) or there is no file name part.
pub fn split_path(pattern: &Path) -> Option<(PathBuf, Glob)> {
    let name = pattern.file_name()?.to_str()?;
    let dir = pattern.parent()?;
    if dir.to_str().is_none_or(has_wildcards) {
        return None;
    }
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_path_buf()
    };
    Some((dir, Glob::new(name)))
}

/// Matches with backtracking on the last `*` only: linear for the usual patterns.
fn match_bytes(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(&p[pi..], s[si]) {
                        if ok {
                            pi += next;
                            si += 1;
                            continue;
                        }
                    } else if s[si] == b'[' {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
                b'\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == s[si] {
                        pi += 2;
                        si += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[si] {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the bracket expression at the start of `p`; returns whether it
/// matched and the expression's length, or `None` if the bracket is not closed.
fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == b']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        let lo = p[i];
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            if lo <= c && c <= p[i + 2] {
                hit = true;
            }
            i += 3;
        } else {
            if lo == c {
                hit = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let m = |p: &str, s: &str| Glob::new(p).matches(s.as_bytes());
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
        assert!(m("[x", "[x"));
        assert!(m("plain", "plain"));
    }

    #[test]
    fn splits_directory_from_name() {
        let (d, g) = split_path(Path::new("/var/log/*.log")).unwrap();
        assert_eq!(d, PathBuf::from("/var/log"));
        assert!(g.matches(b"syslog.log"));
        assert!(split_path(Path::new("/var/*/x.log")).is_none());
    }
}
