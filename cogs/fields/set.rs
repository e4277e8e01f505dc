//! `set`: adds fields, or overwrites them, with constants or templates.

use crate::kit::format::Template;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{self, Map, Path, Record, SharedStr, Value};
use crate::schema::{CogParams, ConfigError, NodeValue, SettingError, Settings};

use super::{FieldTable, flat_table, parse_path};

/// Renders text from a datum (a template's).
pub type RenderFn<D> = dyn Fn(&D, &mut Vec<u8>);

/// What `set` stores in one field.
pub enum SetValue<D> {
    /// The same value in every datum (cloned; text is shared, so cloning it is cheap).
    Const(Value),
    /// Text rendered from the datum itself, e.g. a [`Template`] over a record.
    Render(Box<RenderFn<D>>),
}

impl<D> std::fmt::Debug for SetValue<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetValue::Const(v) => write!(f, "Const({v})"),
            SetValue::Render(_) => f.write_str("Render"),
        }
    }
}

/// Sets fields, in the order written, to constants or to templates over the record.
///
/// Strings are templates: `{host}` or `{a.b}` is replaced by that field's text (nothing
/// when it is missing), `{{` and `}}` are literal braces; a string without placeholders is
/// a constant. Integers, floats, booleans and arrays stay typed; a datetime is stored as
/// its text. Existing fields are overwritten; missing intermediate maps are created.
///
/// Fields are set one after another, so a template sees fields set before it in the same
/// table. Dotted keys, quoted or not, name nested fields: `geo.country = "FR"` sets only
/// `country` inside `geo`. An empty table `{}` stores an empty map.
///
/// ```toml
/// [[train.cog]]
/// type = "set"
/// fields = { env = "prod", seen = "{host}/{app}", "src.port" = 443, sampled = true }
/// ```
///
/// From Rust, over any datum, with a setter for each path and a way to render a
/// [`Template`] from the datum:
/// `Set::from_settings(&SetSettings { fields: [("env", "prod")].into_iter().collect() }, set_at, render)`.
#[derive(Debug)]
pub struct Set<D> {
    fields: Vec<(Setter<D, Value>, SetValue<D>)>,
}

/// The descriptor of `set`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "set",
    kind: CogKind::Transform,
    summary: "sets fields to constants or templates such as \"{host}/{app}\"",
    params: SetSettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `set`.
    pub struct SetSettings {
        /// dotted field path = value; strings are templates with {field} placeholders, other TOML values stay typed
        #[setting(required)]
        fields: FieldTable,
    }
}

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    // Checked on the configuration first: its errors name the entry and its place.
    for (name, node) in flat_table(p, "fields")? {
        parse_path(p, "fields", &name)?;
        if let NodeValue::Str(s) = &node.value
            && s.contains(['{', '}'])
        {
            Template::parse(s).map_err(|m| {
                let mut e = p.error("fields", m);
                e.key = Some(format!("fields.{name}"));
                e
            })?;
        }
    }
    let s: SetSettings = p.settings()?;
    let set = Set::from_settings(
        &s,
        |path| Setter::new(move |r: &mut Record, v: Value| r.set_path(&path, v)),
        |t| Box::new(move |r: &Record, out: &mut Vec<u8>| t.write(r, out)),
    )
    .map_err(|e| p.setting_error(e))?;
    Ok(Box::new(set))
}

/// A TOML value as a record value; strings are shared so each record's copy is cheap.
fn constant(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::Shared(SharedStr::interned(s)),
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(f) => Value::Float(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::Shared(SharedStr::interned(&d.to_string())),
        toml::Value::Array(items) => Value::List(items.iter().map(constant).collect()),
        toml::Value::Table(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (record::Key::new(k), constant(v)))
                .collect::<Map>(),
        ),
    }
}

impl<D> Set<D> {
    /// Sets each field with its setter, in order.
    pub fn new(fields: Vec<(Setter<D, Value>, SetValue<D>)>) -> Self {
        Set { fields }
    }

    /// A `set` made from its settings: `set_at` stores the field at a path, `render`
    /// turns a template (a string with placeholders) into text rendered from the datum.
    pub fn from_settings(
        s: &SetSettings,
        set_at: impl Fn(Path) -> Setter<D, Value>,
        render: impl Fn(Template) -> Box<RenderFn<D>>,
    ) -> Result<Self, SettingError> {
        let mut fields = Vec::new();
        for (path, v) in s.fields.paths()? {
            let value = match v {
                toml::Value::String(t) if t.contains(['{', '}']) => SetValue::Render(render(
                    Template::parse(t).map_err(|m| SettingError::new("fields", m))?,
                )),
                v => SetValue::Const(constant(v)),
            };
            fields.push((set_at(path), value));
        }
        Ok(Set::new(fields))
    }

    /// Applies every field to `d`.
    pub fn apply(&self, d: &mut D) {
        for (setter, value) in &self.fields {
            let v = match value {
                SetValue::Const(v) => v.clone(),
                SetValue::Render(render) => {
                    let mut buf = Vec::new();
                    render(d, &mut buf);
                    // Fields rendered raw may hold invalid UTF-8: keep such text as bytes.
                    match String::from_utf8(buf) {
                        Ok(s) => Value::Str(s),
                        Err(e) => Value::Bytes(e.into_bytes()),
                    }
                }
            };
            setter.set(d, v);
        }
    }
}

impl<D: 'static> Cog<D> for Set<D> {
    fn name(&self) -> &str {
        "set"
    }

    fn process(&mut self, mut d: D, out: &mut Out<D>, _cx: &mut Ctx) {
        self.apply(&mut d);
        out.push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Key, Path};

    fn render(t: &str) -> SetValue<Record> {
        let t = Template::parse(t).unwrap();
        SetValue::Render(Box::new(move |r: &Record, out: &mut Vec<u8>| {
            t.write(r, out)
        }))
    }

    #[test]
    fn constants_and_templates_in_order() {
        let set = Set::new(vec![
            (
                record::field("env").unwrap().set,
                SetValue::Const(Value::from("prod")),
            ),
            (
                record::field("n").unwrap().set,
                SetValue::Const(Value::Int(3)),
            ),
            (record::field("a.b").unwrap().set, render("{host}/{app}")),
            (record::field("c").unwrap().set, render("[{a.b}]{missing}")),
        ]);
        let mut r = Record::new();
        r.insert(Key::new("host"), Value::from("web1"));
        r.insert(Key::new("app"), Value::Bytes(b"api".to_vec()));
        set.apply(&mut r);
        let mut out = Vec::new();
        r.write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"host":"web1","app":"api","env":"prod","n":3,"a":{"b":"web1/api"},"c":"[web1/api]"}"#
        );
        assert_eq!(
            r.get_path(&Path::parse("a.b").unwrap())
                .unwrap()
                .type_name(),
            "string"
        );
    }
}
