//! [`Path`], a pre-parsed dotted field path.

use super::key::Key;
use std::fmt;

/// A pre-parsed dotted field path such as `src.ip`: a key into the record, then a key into
/// each nested map. Names containing `.` cannot be addressed this way.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    // Never empty.
    pub(super) keys: Vec<Key>,
}

/// A field path that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathError {
    /// The path as written.
    pub path: String,
    /// 1-based character column of the empty segment.
    pub column: usize,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field path {:?}: empty name at column {}",
            self.path, self.column
        )
    }
}

impl std::error::Error for PathError {}

impl Path {
    /// Parses and interns a dotted path; every dot-separated name must be non-empty.
    pub fn parse(path: &str) -> Result<Path, PathError> {
        let mut keys = Vec::new();
        let mut column = 1;
        for name in path.split('.') {
            if name.is_empty() {
                return Err(PathError {
                    path: path.to_owned(),
                    column,
                });
            }
            keys.push(Key::new(name));
            column += name.chars().count() + 1;
        }
        Ok(Path { keys })
    }

    /// The keys, outermost first; never empty.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

/// A path of one top-level field.
impl From<Key> for Path {
    fn from(key: Key) -> Path {
        Path { keys: vec![key] }
    }
}

impl std::str::FromStr for Path {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Path, PathError> {
        Path::parse(s)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(k.as_str())?;
        }
        Ok(())
    }
}
