//! Typed settings: each cog declares its keys once, as a struct written with [`settings!`](crate::settings!)
//! (a default and one line of help beside each field), and everything else comes from
//! that declaration: the [`Param`] table behind validation, `deadbeat cogs` and
//! `docs/cogs.md`; the serde deserialisation a configuration goes through; and the
//! struct a program fills in to build the same cog without TOML
//! (`TailSettings { paths: vec![..], ..Default::default() }`).
//!
//! ```
//! use std::time::Duration;
//! use deadbeat::{choice, settings};
//!
//! choice! {
//!     /// What to do with an empty line.
//!     pub enum Empty { Keep = "keep", Skip = "skip" }
//! }
//!
//! settings! {
//!     /// Settings of a cog that reads lines.
//!     pub struct LineSettings {
//!         /// Dotted path of the text to read.
//!         field: String = "message",
//!         /// Longest wait for more.
//!         wait: Duration = "1s",
//!         /// Largest line.
//!         #[setting(size)] max_line: usize = "64KiB",
//!         /// What to do with an empty line.
//!         empty: Empty = "keep",
//!         /// A label to add.
//!         label: Option<String>,
//!     }
//! }
//!
//! let s = LineSettings::default();
//! assert_eq!((s.field.as_str(), s.wait, s.max_line), ("message", Duration::from_secs(1), 65536));
//! assert_eq!(s.empty, Empty::Keep);
//! use deadbeat::schema::Settings;
//! let keys: Vec<&str> = LineSettings::PARAMS.iter().map(|p| p.name).collect();
//! assert_eq!(keys, ["field", "wait", "max_line", "empty", "label"]);
//! ```
//!
//! Shared groups of keys (output format, forwarding, `on_error`) are settings structs of
//! their own, flattened into a cog's with `#[setting(flatten)] group: GroupSettings`: their keys sit
//! at the cog's top level in TOML, and in the group field in Rust.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

pub use serde::de;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::param::{Param, ParamType};
use super::params::{parse_duration, parse_size};

/// A struct of typed settings, declared with [`settings!`](crate::settings!).
pub trait Settings: Default {
    /// Every key, the flattened groups' included, in declaration order.
    const PARAMS: &'static [Param];

    /// Reads the value of `key` from `map` into its field, when the key is one of ours
    /// (a flattened group's included); `false` leaves the value unread.
    fn set_field<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error>;

    /// Deserialises settings from a map of keys; keys not declared are errors.
    fn from_map<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<S>(PhantomData<S>);
        impl<'de, S: Settings> Visitor<'de> for V<S> {
            type Value = S;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<S, A::Error> {
                let mut s = S::default();
                while let Some(key) = map.next_key::<String>()? {
                    if !s.set_field(&key, &mut map)? {
                        let known: Vec<&str> = S::PARAMS.iter().map(|p| p.name).collect();
                        // Read through the value so the error is placed at it, under its key.
                        let refused = map.next_value_seed(Refuse(format!(
                            "unknown key {key:?} (known keys: {})",
                            known.join(", ")
                        )));
                        return match refused {
                            Err(e) => Err(e),
                            Ok(never) => match never {},
                        };
                    }
                }
                Ok(s)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// A value that is an error whatever it holds (the value of an unknown key).
struct Refuse(String);

impl<'de> DeserializeSeed<'de> for Refuse {
    type Value = std::convert::Infallible;
    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<Self::Value, D::Error> {
        Err(de::Error::custom(self.0))
    }
}

/// A type a setting can hold: how it reads from configuration, what the reference calls it,
/// and how its default, written as in TOML, becomes a value.
pub trait SettingValue: Sized {
    /// What the reference and type errors call it.
    const TYPE: ParamType;

    /// Reads a value.
    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;

    /// The value of a default written as in TOML (`"1s"`, `"true"`, `"64"`).
    fn from_default(text: &str) -> Option<Self>;
}

/// Reads a value of type `T` with its [`SettingValue`] rules.
pub struct Seed<T>(PhantomData<T>);

impl<T> Default for Seed<T> {
    fn default() -> Self {
        Seed(PhantomData)
    }
}

impl<'de, T: SettingValue> DeserializeSeed<'de> for Seed<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(d)
    }
}

/// A byte count read as `"64KiB"`, `"1MiB"` or an integer of bytes (fields marked
/// `#[setting(size)]`).
pub trait SizeValue: Sized {
    /// Wraps a byte count.
    fn from_bytes(n: usize) -> Self;

    /// The value of a default written as in TOML (`"64KiB"`).
    fn from_size(text: &str) -> Option<Self> {
        parse_size(text).map(Self::from_bytes)
    }
}

impl SizeValue for usize {
    fn from_bytes(n: usize) -> usize {
        n
    }
}

impl SizeValue for Option<usize> {
    fn from_bytes(n: usize) -> Option<usize> {
        Some(n)
    }
}

/// Reads a [`SizeValue`].
pub struct SizeSeed<T>(PhantomData<T>);

impl<T> Default for SizeSeed<T> {
    fn default() -> Self {
        SizeSeed(PhantomData)
    }
}

impl<'de, T: SizeValue> DeserializeSeed<'de> for SizeSeed<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"1MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
                usize::try_from(v)
                    .map_err(|_| E::custom(format!("expected a size such as \"1MiB\", found {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
                usize::try_from(v).map_err(|_| E::custom(format!("size {v} is too large")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<usize, E> {
                parse_size(s).ok_or_else(|| {
                    E::custom(format!(
                        "expected a size such as \"64KiB\", \"1MiB\", found {s:?}"
                    ))
                })
            }
        }
        d.deserialize_any(V).map(T::from_bytes)
    }
}

fn plain<'de, T: serde::Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    T::deserialize(d)
}

impl SettingValue for String {
    const TYPE: ParamType = ParamType::Str;
    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        plain(d)
    }
    fn from_default(text: &str) -> Option<Self> {
        Some(text.to_string())
    }
}

impl SettingValue for PathBuf {
    const TYPE: ParamType = ParamType::Path;
    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(d).map(PathBuf::from)
    }
    fn from_default(text: &str) -> Option<Self> {
        Some(PathBuf::from(text))
    }
}

impl SettingValue for bool {
    const TYPE: ParamType = ParamType::Bool;
    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        plain(d)
    }
    fn from_default(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl SettingValue for f64 {
    const TYPE: ParamType = ParamType::Float;
    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        plain(d)
    }
    fn from_default(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

macro_rules! int_setting {
    ($($t:ty),*) => {$(
        impl SettingValue for $t {
            const TYPE: ParamType = ParamType::Int;
            fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                plain(d)
            }
            fn from_default(text: &str) -> Option<Self> {
                text.parse().ok()
            }
        }
    )*};
}
int_setting!(i64, u64, u32, u16, u8, usize);

impl SettingValue for Duration {
    const TYPE: ParamType = ParamType::Duration;
    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"1s\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v).map(Duration::from_secs).map_err(|_| {
                    E::custom(format!("expected a duration such as \"1s\", found {v}"))
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
                parse_duration(s).ok_or_else(|| {
                    E::custom(format!(
                        "expected a duration such as \"500ms\", \"1s\", \"5m\", \"1h\", found {s:?}"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
    fn from_default(text: &str) -> Option<Self> {
        parse_duration(text)
    }
}

/// One string or a list of them.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<String>, E> {
            Ok(vec![s.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut v = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                v.push(s);
            }
            Ok(v)
        }
    }
    d.deserialize_any(V)
}

impl SettingValue for Vec<String> {
    const TYPE: ParamType = ParamType::StrList;
    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_list(d)
    }
    fn from_default(text: &str) -> Option<Self> {
        Some(vec![text.to_string()])
    }
}

impl SettingValue for Vec<PathBuf> {
    const TYPE: ParamType = ParamType::PathList;
    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_list(d).map(|v| v.into_iter().map(PathBuf::from).collect())
    }
    fn from_default(text: &str) -> Option<Self> {
        Some(vec![PathBuf::from(text)])
    }
}

impl SettingValue for toml::Table {
    const TYPE: ParamType = ParamType::Table;
    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        plain(d)
    }
    fn from_default(_: &str) -> Option<Self> {
        None
    }
}

impl<T: SettingValue> SettingValue for Option<T> {
    const TYPE: ParamType = T::TYPE;
    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Some)
    }
    fn from_default(text: &str) -> Option<Self> {
        T::from_default(text).map(Some)
    }
}

/// Joins parameter tables at compile time (a cog's own keys and its flattened groups').
pub const fn concat_params<const N: usize>(parts: &[&[Param]]) -> [Param; N] {
    let mut out = [Param::unset("", ParamType::Str, ""); N];
    let mut n = 0;
    let mut i = 0;
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[n] = parts[i][j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(n == N, "parameter count mismatch");
    out
}

/// The number of parameters in several tables.
pub const fn count_params(parts: &[&[Param]]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < parts.len() {
        n += parts[i].len();
        i += 1;
    }
    n
}

/// Declares a settings struct: each field with its doc line, type and default (written as
/// in TOML). Markers before a field: `#[setting(required)]` (the key must be given),
/// `#[setting(size)]` (a `usize` or `Option<usize>` read as a byte size, `"64KiB"`),
/// `#[setting(flatten)]` (a group of settings whose keys sit at this level). A field without `= default` starts as its type's
/// `Default` (`None`, empty) and is "unset by default". See [the module](crate::schema::settings).
#[macro_export]
macro_rules! settings {
    (
        $(#[$sattr:meta])*
        $svis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $(#[setting($mark:ident)])*
                $f:ident : $ty:ty $(= $def:literal)?
            ),* $(,)?
        }
    ) => {
        $(#[$sattr])*
        #[derive(Debug, Clone, PartialEq)]
        $svis struct $name {
            $(
                $(#[doc = $doc])*
                pub $f: $ty,
            )*
        }

        impl ::core::default::Default for $name {
            fn default() -> Self {
                $name {
                    $( $f: $crate::settings!(@default [$($mark)*] $f $ty $(= $def)?), )*
                }
            }
        }

        impl $name {
            const __PARTS: &'static [&'static [$crate::schema::Param]] = &[
                $( $crate::settings!(@params [$($mark)*] $f $ty [$($doc)*] $(= $def)?), )*
            ];
            const __COUNT: usize = $crate::schema::settings::count_params($name::__PARTS);
            const __ALL: [$crate::schema::Param; $name::__COUNT] =
                $crate::schema::settings::concat_params($name::__PARTS);
        }

        impl $crate::schema::Settings for $name {
            const PARAMS: &'static [$crate::schema::Param] = &$name::__ALL;

            fn set_field<'de, A: $crate::schema::settings::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> ::core::result::Result<bool, A::Error> {
                // Read by the field arms; a struct without fields reads neither.
                let _ = (key, &map);
                $( $crate::settings!(@set self key map [$($mark)*] $f $ty); )*
                Ok(false)
            }
        }

        impl<'de> $crate::schema::settings::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::schema::settings::serde::Deserializer<'de>>(
                d: D,
            ) -> ::core::result::Result<Self, D::Error> {
                <$name as $crate::schema::Settings>::from_map(d)
            }
        }
    };

    (@default [flatten] $f:ident $ty:ty) => { ::core::default::Default::default() };
    (@default [$($m:ident)*] $f:ident $ty:ty) => { ::core::default::Default::default() };
    (@default [size] $f:ident $ty:ty = $def:literal) => {
        match <$ty as $crate::schema::settings::SizeValue>::from_size($def) {
            Some(v) => v,
            None => panic!(concat!("the default of `", stringify!($f), "` is not a size: ", $def)),
        }
    };
    (@default [$($m:ident)*] $f:ident $ty:ty = $def:literal) => {
        match <$ty as $crate::schema::SettingValue>::from_default($def) {
            Some(v) => v,
            None => panic!(concat!("the default of `", stringify!($f), "` does not parse: ", $def)),
        }
    };

    (@params [flatten] $f:ident $ty:ty [$($doc:literal)*]) => {
        <$ty as $crate::schema::Settings>::PARAMS
    };
    (@params [$($m:ident)*] $f:ident $ty:ty [$($doc:literal)*] $(= $def:literal)?) => {
        &[$crate::schema::Param {
            name: stringify!($f),
            ty: $crate::settings!(@type [$($m)*] $ty),
            default: $crate::settings!(@opt $($def)?),
            required: $crate::settings!(@required [$($m)*]),
            help: concat!($($doc, "\n"),*),
        }]
    };

    (@type [size] $ty:ty) => { $crate::schema::ParamType::Size };
    (@type [required size] $ty:ty) => { $crate::schema::ParamType::Size };
    (@type [$($m:ident)*] $ty:ty) => { <$ty as $crate::schema::SettingValue>::TYPE };
    (@opt $def:literal) => { Some($def) };
    (@opt) => { None };
    (@required [required $($m:ident)*]) => { true };
    (@required [$($m:ident)*]) => { false };

    (@set $s:ident $k:ident $map:ident [flatten] $f:ident $ty:ty) => {
        if $crate::schema::Settings::set_field(&mut $s.$f, $k, $map)? {
            return Ok(true);
        }
    };
    (@set $s:ident $k:ident $map:ident [size] $f:ident $ty:ty) => {
        if $k == stringify!($f) {
            $s.$f = $map.next_value_seed($crate::schema::settings::SizeSeed::<$ty>::default())?;
            return Ok(true);
        }
    };
    (@set $s:ident $k:ident $map:ident [$($m:ident)*] $f:ident $ty:ty) => {
        if $k == stringify!($f) {
            $s.$f = $map.next_value_seed($crate::schema::settings::Seed::<$ty>::default())?;
            return Ok(true);
        }
    };
}

/// Declares an enum of named choices for a setting (`missing = "error" | "warn" | "ignore"`):
/// the enum, its names, `Display`, and reading it from configuration. The first variant is
/// the `Default`.
#[macro_export]
macro_rules! choice {
    (
        $(#[$attr:meta])*
        $vis:vis enum $name:ident {
            $first_doc_dummy:ident = $first:literal $(, $var:ident = $text:literal)* $(,)?
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        $vis enum $name {
            #[default]
            #[doc = concat!("`", $first, "`")]
            $first_doc_dummy,
            $(
                #[doc = concat!("`", $text, "`")]
                $var,
            )*
        }

        impl $name {
            /// Every name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$first $(, $text)*];

            /// The name as written in configuration.
            pub fn as_str(self) -> &'static str {
                match self {
                    $name::$first_doc_dummy => $first,
                    $( $name::$var => $text, )*
                }
            }

            /// The choice named `s`.
            pub fn from_name(s: &str) -> Option<Self> {
                match s {
                    $first => Some($name::$first_doc_dummy),
                    $( $text => Some($name::$var), )*
                    _ => None,
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::schema::SettingValue for $name {
            const TYPE: $crate::schema::ParamType = $crate::schema::ParamType::Choice($name::NAMES);
            fn deserialize<'de, D: $crate::schema::settings::serde::Deserializer<'de>>(
                d: D,
            ) -> ::core::result::Result<Self, D::Error> {
                let s = <::std::string::String as $crate::schema::settings::serde::Deserialize>::deserialize(d)?;
                $name::from_name(&s).ok_or_else(|| {
                    let quoted: ::std::vec::Vec<::std::string::String> =
                        $name::NAMES.iter().map(|n| format!("{n:?}")).collect();
                    <D::Error as $crate::schema::settings::de::Error>::custom(format!(
                        "expected one of {}, found {s:?}",
                        quoted.join(", ")
                    ))
                })
            }
            fn from_default(text: &str) -> Option<Self> {
                $name::from_name(text)
            }
        }
    };
}

/// Re-exported for the macros.
pub use serde;

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use toml::de::DeTable;

    use super::Settings;
    use crate::schema::de::{DeError, TableDe};
    use crate::schema::node::{Source, convert_table};

    crate::choice! {
        /// A choice for the tests.
        enum Mode { Fast = "fast", Safe = "safe" }
    }

    crate::settings! {
        /// A group flattened into [`Outer`].
        struct Inner {
            /// how long
            wait: Duration = "2s",
            /// how much
            #[setting(size)]
            room: usize = "1KiB",
        }
    }

    crate::settings! {
        /// Settings with one of everything.
        struct Outer {
            /// a required name
            #[setting(required)]
            name_key: String,
            /// a mode
            mode: Mode = "safe",
            /// the group
            #[setting(flatten)]
            inner: Inner,
            /// a list
            tags: Vec<String>,
            /// a number, unset
            limit: Option<u64>,
        }
    }

    crate::settings! {
        /// A cog without keys.
        struct Nothing {}
    }

    #[test]
    fn a_struct_without_fields_takes_no_keys() {
        assert!(Nothing::PARAMS.is_empty());
        assert_eq!(read::<Nothing>("").0, Ok(Nothing {}));
        let e = read::<Nothing>("x = 1\n").0.expect_err("no keys");
        assert_eq!(e.key.as_deref(), Some("x"));
    }

    fn read<T: Settings>(text: &str) -> (Result<T, DeError>, Source) {
        let src = Source::new(Path::new("t.toml"), text.to_string());
        let entries = match DeTable::parse(text) {
            Ok(t) => convert_table(t.get_ref(), &src).unwrap_or_default(),
            Err(e) => panic!("bad test TOML: {e}"),
        };
        let r = T::from_map(TableDe {
            entries: &entries,
            skip: &[],
            only: None,
        });
        (r, src)
    }

    #[test]
    fn defaults_come_from_the_declaration() {
        let o = Outer::default();
        assert_eq!(o.mode, Mode::Safe);
        assert_eq!(o.inner.wait, Duration::from_secs(2));
        assert_eq!(o.inner.room, 1024);
        assert!(o.tags.is_empty() && o.limit.is_none() && o.name_key.is_empty());
    }

    #[test]
    fn params_list_every_key_with_groups_in_place() {
        let names: Vec<&str> = Outer::PARAMS.iter().map(|p| p.name).collect();
        assert_eq!(names, ["name_key", "mode", "wait", "room", "tags", "limit"]);
        let by = |n: &str| Outer::PARAMS.iter().find(|p| p.name == n).copied();
        let name = by("name_key").map(|p| (p.required, p.default));
        assert_eq!(name, Some((true, None)));
        assert_eq!(
            by("room").map(|p| p.ty.to_string()).as_deref(),
            Some("size")
        );
        assert_eq!(
            by("mode").map(|p| p.ty.to_string()).as_deref(),
            Some("\"fast\" | \"safe\"")
        );
        assert_eq!(
            by("wait").map(|p| p.help_line()).as_deref(),
            Some("how long")
        );
    }

    #[test]
    fn values_reach_their_fields_and_groups() {
        let (r, _) = read::<Outer>(
            "name_key = \"x\"\nmode = \"fast\"\nwait = \"250ms\"\nroom = \"2MiB\"\n\
             tags = \"one\"\nlimit = 7\n",
        );
        let o = r.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.name_key, "x");
        assert_eq!(o.mode, Mode::Fast);
        assert_eq!(o.inner.wait, Duration::from_millis(250));
        assert_eq!(o.inner.room, 2 << 20);
        assert_eq!(o.tags, ["one"]);
        assert_eq!(o.limit, Some(7));
    }

    #[test]
    fn errors_name_the_key_and_point_at_the_value() {
        for (text, key, line, msg) in [
            (
                "name_key = \"x\"\nwait = \"soon\"\n",
                "wait",
                2,
                "expected a duration",
            ),
            (
                "name_key = \"x\"\n\nroom = -1\n",
                "room",
                3,
                "expected a size",
            ),
            (
                "mode = \"slow\"\n",
                "mode",
                1,
                "expected one of \"fast\", \"safe\"",
            ),
            ("tags = [\"a\", 3]\n", "tags", 1, "invalid type"),
            ("limit = \"many\"\n", "limit", 1, "invalid type"),
            ("nope = 1\n", "nope", 1, "unknown key \"nope\""),
        ] {
            let (r, src) = read::<Outer>(text);
            let e = r.expect_err(text);
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e:?}");
            let at = e.span.as_ref().map(|s| src.line_col(s.start).0);
            assert_eq!(at, Some(line), "{text}: {e:?}");
            assert!(e.msg.contains(msg), "{text}: {}", e.msg);
        }
    }

    #[test]
    fn an_element_of_a_list_is_pointed_at() {
        let (r, src) = read::<Outer>("tags = [\n  \"a\",\n  3,\n]\n");
        let e = r.expect_err("a number in a list of strings");
        let at = e.span.as_ref().map(|s| src.line_col(s.start));
        assert_eq!(at, Some((3, 3)), "{e:?}");
        assert_eq!(e.key.as_deref(), Some("tags"));
    }
}
