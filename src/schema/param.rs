//! The parameters a cog declares: key, type, default and one line of help.

use std::fmt;

/// What kind of value a cog parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// A string.
    Str,
    /// An integer.
    Int,
    /// A number.
    Float,
    /// `true` or `false`.
    Bool,
    /// `"500ms"`, `"1s"`, `"5m"`, `"1h"`, `"1d"`, or an integer of seconds.
    Duration,
    /// `"64KiB"`, `"1MiB"`, `"1GiB"`, `"10kB"`, or an integer of bytes.
    Size,
    /// A path; relative ones are taken from the configuration file's directory.
    Path,
    /// A list of strings.
    StrList,
    /// A list of paths (globs where the cog says so).
    PathList,
    /// A table whose keys the cog defines.
    Table,
    /// Cogs declared inside this one, each a table with its `type` (written
    /// `[[train.cog.KEY]]`, in order): the sub-train of `parallel`.
    Cogs,
    /// One of the listed strings.
    Choice(&'static [&'static str]),
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Str => f.write_str("string"),
            ParamType::Int => f.write_str("integer"),
            ParamType::Float => f.write_str("number"),
            ParamType::Bool => f.write_str("boolean"),
            ParamType::Duration => f.write_str("duration"),
            ParamType::Size => f.write_str("size"),
            ParamType::Path => f.write_str("path"),
            ParamType::StrList => f.write_str("list of strings"),
            ParamType::PathList => f.write_str("list of paths"),
            ParamType::Table => f.write_str("table"),
            ParamType::Cogs => f.write_str("cog tables"),
            ParamType::Choice(c) => {
                let quoted: Vec<String> = c.iter().map(|s| format!("{s:?}")).collect();
                write!(f, "{}", quoted.join(" | "))
            }
        }
    }
}

/// One parameter of a cog, as its descriptor declares it.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// The TOML key.
    pub name: &'static str,
    /// What values it takes.
    pub ty: ParamType,
    /// The default, as a user would write it; `None` for required or unset-by-default keys.
    pub default: Option<&'static str>,
    /// Whether the key must be given.
    pub required: bool,
    /// One line of help.
    pub help: &'static str,
}

impl Param {
    /// The help as one line: typed settings keep each doc line of a field apart.
    pub fn help_line(&self) -> std::borrow::Cow<'static, str> {
        if !self.help.contains('\n') && !self.help.starts_with(' ') {
            return self.help.into();
        }
        let words: Vec<&str> = self
            .help
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        words.join(" ").into()
    }

    /// An optional parameter with a default.
    pub const fn opt(
        name: &'static str,
        ty: ParamType,
        default: &'static str,
        help: &'static str,
    ) -> Param {
        Param {
            name,
            ty,
            default: Some(default),
            required: false,
            help,
        }
    }

    /// An optional parameter that is unset by default.
    pub const fn unset(name: &'static str, ty: ParamType, help: &'static str) -> Param {
        Param {
            name,
            ty,
            default: None,
            required: false,
            help,
        }
    }

    /// A required parameter.
    pub const fn req(name: &'static str, ty: ParamType, help: &'static str) -> Param {
        Param {
            name,
            ty,
            default: None,
            required: true,
            help,
        }
    }
}
