//! A daemon of your own: deadbeat's whole command line (`run`, `check`, `cogs`, `--daemon`,
//! signals, logging, exit codes) with one more cog, `upper`, that configurations can name
//! like any supplied cog. Its settings are checked like theirs (a typo in a key fails
//! `check` with the file, line and key), and `cogs upper` prints its reference.
//!
//! ```text
//! cargo run --example custom_daemon -- run config/custom_daemon.toml
//! cargo run --example custom_daemon -- check config/custom_daemon.toml
//! cargo run --example custom_daemon -- cogs upper
//! ```

use std::process::ExitCode;

use deadbeat::cogs::Registry;
use deadbeat::kit::{BuildCx, CogDescriptor, CogKind};
use deadbeat::prelude::*;
use deadbeat::record::{self, Record, Value};
use deadbeat::schema::{CogParams, ConfigError, Settings};

fn main() -> ExitCode {
    let mut registry = Registry::builtin();
    registry.add(UPPER);
    deadbeat::daemon::main(registry)
}

/// Upper-cases the ASCII letters of one text field, in place; records without the field,
/// or where it holds no text, pass unchanged.
///
/// ```toml
/// [[train.cog]]
/// type = "upper"
/// field = "message"
/// ```
struct Upper {
    field: MutGetter<Record, Value>,
}

deadbeat::settings! {
    /// The settings of `upper`, declared once: validation, `cogs upper`, `cogs --markdown`
    /// and the struct a program fills in all come from here.
    struct UpperSettings {
        /// dotted path of the field to upper-case
        field: String = "message",
    }
}

/// What the registry knows of `upper`.
const UPPER: CogDescriptor = CogDescriptor {
    name: "upper",
    kind: CogKind::Transform,
    summary: "upper-cases the ASCII letters of a text field",
    params: UpperSettings::PARAMS,
    fields: &[],
    build: build_upper,
};

/// Builds `upper` from its settings, already checked against `UpperSettings::PARAMS`.
fn build_upper(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: UpperSettings = p.settings()?;
    let field = record::field_mut(&s.field).map_err(|e| p.error("field", e.to_string()))?;
    Ok(Box::new(Upper { field }))
}

impl Cog<Record> for Upper {
    fn name(&self) -> &str {
        "upper"
    }

    fn process(&mut self, mut r: Record, out: &mut Out<Record>, _cx: &mut Ctx) {
        match self.field.get_mut(&mut r) {
            Some(Value::Str(s)) => s.make_ascii_uppercase(),
            Some(Value::Bytes(b)) => b.make_ascii_uppercase(),
            // Shared text belongs to many records: this one gets its own copy.
            Some(v @ Value::Shared(_)) => {
                if let Some(s) = v.as_str() {
                    *v = Value::Str(s.to_ascii_uppercase());
                }
            }
            _ => {}
        }
        out.push(r);
    }
}
