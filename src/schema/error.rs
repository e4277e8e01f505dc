//! Configuration errors, located as precisely as the mistake allows.

use std::fmt;
use std::path::PathBuf;

/// A configuration error, located as precisely as the mistake allows. Boxed: it travels
/// through every builder's `Result`, and errors are rare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub(crate) Box<ConfigErrorDetails>);

impl std::ops::Deref for ConfigError {
    type Target = ConfigErrorDetails;
    fn deref(&self) -> &ConfigErrorDetails {
        &self.0
    }
}

impl std::ops::DerefMut for ConfigError {
    fn deref_mut(&mut self) -> &mut ConfigErrorDetails {
        &mut self.0
    }
}

/// Where a [`ConfigError`] is and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrorDetails {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place in the file.
    pub at: Option<(usize, usize)>,
    /// Name of the train concerned.
    pub train: Option<String>,
    /// 1-based index and type of the cog concerned.
    pub cog: Option<(usize, String)>,
    /// The cog's `name`, when the configuration gives one (else its id is `TYPE#N`).
    pub cog_name: Option<String>,
    /// The key concerned.
    pub key: Option<String>,
    /// What is wrong, and what would be right.
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.at {
            write!(f, ":{line}:{col}")?;
        }
        let mut context = Vec::new();
        if let Some(t) = &self.train {
            context.push(format!("train {t:?}"));
        }
        match (&self.cog, &self.cog_name) {
            (Some((i, ty)), Some(name)) => context.push(format!("cog {name:?} ({ty}#{i})")),
            (Some((i, ty)), None) => context.push(format!("cog {ty}#{i}")),
            (None, _) => {}
        }
        if let Some(k) = &self.key {
            context.push(format!("key {k:?}"));
        }
        if !context.is_empty() {
            write!(f, ": {}", context.join(", "))?;
        }
        write!(f, ": {}", self.msg)
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in a configuration, in file order (never empty). It dereferences to
/// the first; displayed, it is one error per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub(crate) Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, in file order.
    pub fn all(&self) -> &[ConfigError] {
        &self.0
    }

    /// Sorted by place in the file (errors without one last), or `None` if there are none.
    pub(crate) fn from_vec(mut v: Vec<ConfigError>) -> Option<ConfigErrors> {
        v.sort_by_key(|e| e.at.map_or((usize::MAX, 0), |a| a));
        v.dedup();
        (!v.is_empty()).then_some(ConfigErrors(v))
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl std::ops::Deref for ConfigErrors {
    type Target = ConfigError;
    fn deref(&self) -> &ConfigError {
        &self.0[0]
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A setting whose value is wrong for a reason its type does not catch (a bound, a
/// combination of keys), found when a cog is made from its typed settings. Built from
/// configuration, it becomes a [`ConfigError`] at the key (`CogParams::setting_error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The key at fault.
    pub key: &'static str,
    /// What is wrong.
    pub msg: String,
}

impl SettingError {
    /// An error about `key`.
    pub fn new(key: &'static str, msg: impl Into<String>) -> Self {
        SettingError {
            key,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.msg)
    }
}

impl std::error::Error for SettingError {}
