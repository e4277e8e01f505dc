//! The configuration schema: values with their place in the file, cog parameters and their
//! types, and errors that name file, line, column, train, cog and key.

pub(crate) mod de;
mod error;
mod node;
mod param;
mod params;
pub mod settings;

pub use error::{ConfigError, ConfigErrorDetails, ConfigErrors, SettingError};
pub use node::{Node, NodeValue};
pub(crate) use node::{Source, convert_table};
pub use param::{Param, ParamType};
pub use params::{CogParams, OwnedParams, parse_duration, parse_size};
pub use settings::{SettingValue, Settings};
