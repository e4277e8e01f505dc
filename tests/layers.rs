//! The crate's layers import one way: engine → record → schema → kit → cogs → daemon.
//! A module may use the layers before its own and never one after it, so each layer can be
//! read, tested and reused without the ones above it.

use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first, with the folder that holds each.
const LAYERS: &[(&str, &str)] = &[
    ("engine", "src/engine"),
    ("record", "src/record"),
    ("schema", "src/schema"),
    ("kit", "src/kit"),
    ("cogs", "cogs"),
    ("daemon", "src/daemon"),
];

/// Names the crate root re-exports from the engine (`crate::Escapement`...).
const ROOT_ENGINE: &[&str] = &[
    "prelude",
    "BoxError",
    "Cog",
    "EventId",
    "InotifyEvent",
    "JobId",
    "JobOutput",
    "JobPanic",
    "JobResult",
    "Local",
    "Out",
    "Wake",
    "CogRef",
    "Ctx",
    "Escapement",
    "Options",
    "ShutdownHandle",
    "TimerId",
    "CogMetrics",
    "Train",
    "TrainMetrics",
    "inotify",
    "mio",
    "slog",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without the contents of string and char
/// literals, so paths named in docs or messages do not count as imports.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if (b.get(i + 1) == Some(&b'#') || b.get(i + 1) == Some(&b'"'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // A raw string: r#"..."# with any number of hashes.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                while j < b.len() && !b[j..].starts_with(&close) {
                    j += 1;
                }
                i = j + close.len();
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                // A char literal ('x' or '\n'); lifetimes ('a) are left alone.
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            c => {
                // Copy one whole UTF-8 character.
                let len = match c {
                    0x00..=0x7f => 1,
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    _ => 4,
                };
                out.push_str(text.get(i..i + len).unwrap_or(""));
                i += len.max(1);
            }
        }
    }
    out
}

/// The first segment of every path below `crate::`, with grouped imports
/// (`use crate::{a::x, b}`) unfolded.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::` or a longer identifier
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        out.push(first_segment(&group[start..i]));
                        start = i + 1;
                        if c == '}' {
                            break;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
        } else {
            out.push(first_segment(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn first_segment(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn layer_of_file(rel: &Path) -> Option<usize> {
    LAYERS.iter().position(|(_, dir)| rel.starts_with(dir))
}

/// Macros exported at the crate root, with the layer they belong to.
const ROOT_MACROS: &[(&str, &str)] = &[("settings", "schema"), ("choice", "schema")];

fn layer_of_path(segment: &str) -> Option<usize> {
    if ROOT_ENGINE.contains(&segment) {
        return Some(0);
    }
    if let Some((_, layer)) = ROOT_MACROS.iter().find(|(m, _)| *m == segment) {
        return LAYERS.iter().position(|(name, _)| name == layer);
    }
    LAYERS.iter().position(|(name, _)| *name == segment)
}

#[test]
fn imports_run_one_way_through_the_layers() {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("cogs"), &mut files);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f);
        let Some(own) = layer_of_file(rel) else {
            continue; // lib.rs and main.rs sit above every layer
        };
        let text = fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        checked += 1;
        for seg in crate_paths(&code_only(&text)) {
            match layer_of_path(&seg) {
                Some(l) if l > own => wrong.push(format!(
                    "{} ({}) uses crate::{seg} ({}), a layer above it",
                    rel.display(),
                    LAYERS[own].0,
                    LAYERS[l].0
                )),
                Some(_) => {}
                None => wrong.push(format!(
                    "{} uses crate::{seg}, which is in no layer: add it to a layer folder \
                     or to the engine names the crate root re-exports",
                    rel.display()
                )),
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} files found under src/ and cogs/"
    );
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_imports_and_ignores_comments_and_strings() {
    let code = code_only(
        "use crate::{engine::cog, kit::{a, b}};\n// crate::daemon\nlet s = \"crate::cogs\";\n\
         let r = r#\"crate::cogs\"#; let c = '\"'; fn f<'a>(x: &'a crate::schema::Node) {}\n\
         $crate::daemon::x(); /* crate::daemon */ crate::record::Value",
    );
    assert_eq!(
        crate_paths(&code),
        ["engine", "kit", "schema", "record"],
        "code seen: {code}"
    );
}
