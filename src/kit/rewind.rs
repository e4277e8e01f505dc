//! Where a rollback ([`Rewind`](crate::engine::control::Rewind)) puts a file supply: the
//! byte offset of a [`Position`] in a file, checked against the file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::engine::control::{Position, RewindError};

/// Bytes read at a time when counting lines.
const CHUNK: usize = 64 * 1024;

/// Whether `source`, as a rewind names it, is the file `path`: the same path (compared by
/// components, so `a//b` and `a/b` are one), or both lead to the same file once `..`,
/// `.` and symbolic links are resolved (`/etc/../var/log/a.log` for `/var/log/a.log`).
pub fn names(path: &Path, source: &str) -> bool {
    let source = Path::new(source);
    path == source
        || std::fs::canonicalize(source)
            .is_ok_and(|s| std::fs::canonicalize(path).is_ok_and(|p| p == s))
}

/// The byte offset of `to` in `file` (`shown`: its path, for messages; `supply`: the
/// cog's type). An offset must lie within the file and start a line (0, or just past a
/// newline); lines count from 1, and a last line without a newline counts. Counting lines
/// reads the file from its start (positional reads: the file's own position is kept).
/// Files that are not regular (pipes) cannot be read again, and no file supply seeks by
/// time: both are [`RewindError::Unsupported`].
pub fn offset_in(
    file: &File,
    shown: &str,
    to: &Position,
    supply: &str,
) -> Result<u64, RewindError> {
    let meta = file
        .metadata()
        .map_err(|e| RewindError::Unsupported(format!("{shown}: {e}")))?;
    if !meta.is_file() {
        return Err(RewindError::Unsupported(format!(
            "{shown} is not a regular file: {supply} cannot read it again"
        )));
    }
    let size = meta.len();
    match to {
        Position::Time(_) => Err(RewindError::Unsupported(format!(
            "{supply} cannot seek by time: give \"offset\" or \"line\""
        ))),
        Position::Offset(n) => {
            let n = *n;
            if n > size {
                return Err(RewindError::Invalid(format!(
                    "offset {n} is past the end of {shown} ({size} bytes)"
                )));
            }
            if n > 0 {
                let mut b = [0u8; 1];
                let got = file
                    .read_at(&mut b, n - 1)
                    .map_err(|e| RewindError::Unsupported(format!("{shown}: {e}")))?;
                if got != 1 || b[0] != b'\n' {
                    return Err(RewindError::Invalid(format!(
                        "offset {n} is not at the start of a line of {shown}"
                    )));
                }
            }
            Ok(n)
        }
        Position::Line(0) => Err(RewindError::Invalid("lines count from 1".into())),
        Position::Line(1) => Ok(0),
        Position::Line(k) => {
            // The line starts just past newline number k - 1.
            let want = k - 1;
            let mut seen = 0u64;
            let mut at = 0u64;
            let mut buf = vec![0u8; CHUNK];
            while at < size {
                let n = file
                    .read_at(&mut buf, at)
                    .map_err(|e| RewindError::Unsupported(format!("{shown}: {e}")))?;
                if n == 0 {
                    break;
                }
                for i in memchr::memchr_iter(b'\n', &buf[..n]) {
                    seen += 1;
                    if seen == want {
                        let start = at + i as u64 + 1;
                        if start < size {
                            return Ok(start);
                        }
                        break;
                    }
                }
                at += n as u64;
            }
            Err(RewindError::Invalid(format!(
                "{shown} has fewer than {k} lines"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &[u8]) -> (tempfile_path::Dir, File) {
        let d = tempfile_path::Dir::new();
        let p = d.0.join("f");
        std::fs::write(&p, text).unwrap();
        let f = File::open(&p).unwrap();
        (d, f)
    }

    /// A directory removed when dropped (the crate has no temp-dir dependency).
    mod tempfile_path {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "deadbeat-rewind-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn lines_and_offsets_are_found_and_checked() {
        let (_d, f) = file(b"one\ntwo\nthree\nlast");
        let at = |p: Position| offset_in(&f, "f", &p, "tail");
        assert_eq!(at(Position::Line(1)), Ok(0));
        assert_eq!(at(Position::Line(2)), Ok(4));
        assert_eq!(at(Position::Line(3)), Ok(8));
        assert_eq!(
            at(Position::Line(4)),
            Ok(14),
            "a last line without newline counts"
        );
        assert!(matches!(
            at(Position::Line(5)),
            Err(RewindError::Invalid(_))
        ));
        assert!(matches!(
            at(Position::Line(0)),
            Err(RewindError::Invalid(_))
        ));
        assert_eq!(at(Position::Offset(0)), Ok(0));
        assert_eq!(at(Position::Offset(8)), Ok(8));
        assert!(
            matches!(at(Position::Offset(18)), Err(RewindError::Invalid(_))),
            "inside the unfinished last line"
        );
        assert!(matches!(
            at(Position::Offset(5)),
            Err(RewindError::Invalid(_))
        ));
        assert!(matches!(
            at(Position::Offset(19)),
            Err(RewindError::Invalid(_))
        ));
        assert!(matches!(
            at(Position::Time("2026-01-01T00:00:00Z".into())),
            Err(RewindError::Unsupported(_))
        ));
    }

    #[test]
    fn a_file_ending_in_a_newline_has_no_line_after_it() {
        let (_d, f) = file(b"a\nb\n");
        let at = |k| offset_in(&f, "f", &Position::Line(k), "tail");
        assert_eq!(at(2), Ok(2));
        assert!(matches!(at(3), Err(RewindError::Invalid(_))));
        let end = offset_in(&f, "f", &Position::Offset(4), "tail");
        assert_eq!(end, Ok(4), "the end is a place to read on from");
    }

    #[test]
    fn lines_past_a_read_chunk_are_found() {
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let (_d, f) = file(text.as_bytes());
        let want = text.find("line 15000\n").unwrap() as u64;
        assert_eq!(
            offset_in(&f, "f", &Position::Line(15_001), "tail"),
            Ok(want)
        );
    }

    #[test]
    fn sources_are_named_by_path() {
        assert!(names(Path::new("/var/log/a.log"), "/var/log//a.log"));
        assert!(!names(Path::new("/var/log/a.log"), "/var/log/b.log"));
        let d = tempfile_path::Dir::new();
        std::fs::create_dir(d.0.join("sub")).unwrap();
        std::fs::write(d.0.join("a.log"), "x\n").unwrap();
        std::fs::write(d.0.join("b.log"), "x\n").unwrap();
        let dotted = d.0.join("sub/../a.log");
        assert!(names(&dotted, &d.0.join("a.log").display().to_string()));
        assert!(!names(&dotted, &d.0.join("b.log").display().to_string()));
    }
}
