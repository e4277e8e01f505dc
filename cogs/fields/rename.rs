//! `rename`: moves fields to new names.

use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Path, Record, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::{FieldTable, Taker, path_pairs, take_at};

/// Moves fields to new names, in the order written: `old = "new"`. The new field is
/// overwritten if it exists; missing intermediate maps are created. A field that is
/// missing is skipped silently (renaming optional fields is not an error). Dotted paths
/// work on both sides, so a field can move into or out of a nested map.
///
/// ```toml
/// [[train.cog]]
/// type = "rename"
/// fields = { host = "source.host", "http.status" = "status" }
/// ```
///
/// From Rust, over any datum, with a taker and a setter for each path:
/// `Rename::from_settings(&RenameSettings { fields: [("host", "source.host")].into_iter().collect() }, take_at, set_at)`.
#[derive(Debug)]
pub struct Rename<D> {
    moves: Vec<(Taker<D>, Setter<D, Value>)>,
}

/// The descriptor of `rename`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "rename",
    kind: CogKind::Transform,
    summary: "moves fields to new names (dotted paths); missing fields are skipped",
    params: RenameSettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `rename`.
    pub struct RenameSettings {
        /// old dotted path = "new dotted path", applied in order
        #[setting(required)]
        fields: FieldTable,
    }
}

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    // Checked on the configuration first: its errors name the entry and its place.
    path_pairs(p, "fields")?;
    let s: RenameSettings = p.settings()?;
    let rename = Rename::from_settings(&s, take_at, |to| {
        Setter::new(move |r: &mut Record, v: Value| r.set_path(&to, v))
    })
    .map_err(|e| p.setting_error(e))?;
    Ok(Box::new(rename))
}

impl<D> Rename<D> {
    /// Moves each piece taken by a [`Taker`] into its setter, in order.
    pub fn new(moves: Vec<(Taker<D>, Setter<D, Value>)>) -> Self {
        Rename { moves }
    }

    /// A `rename` made from its settings: `take_at` removes the field at a path,
    /// `set_at` stores one.
    pub fn from_settings(
        s: &RenameSettings,
        take_at: impl Fn(Path) -> Taker<D>,
        set_at: impl Fn(Path) -> Setter<D, Value>,
    ) -> Result<Self, SettingError> {
        let moves = s
            .fields
            .path_pairs()?
            .into_iter()
            .map(|(from, to)| (take_at(from), set_at(to)))
            .collect();
        Ok(Rename::new(moves))
    }

    /// Applies every move to `d`.
    pub fn apply(&self, d: &mut D) {
        for (take, set) in &self.moves {
            if let Some(v) = take.take(d) {
                set.set(d, v);
            }
        }
    }
}

impl<D: 'static> Cog<D> for Rename<D> {
    fn name(&self) -> &str {
        "rename"
    }

    fn process(&mut self, mut d: D, out: &mut Out<D>, _cx: &mut Ctx) {
        self.apply(&mut d);
        out.push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cogs::fields::take_at;
    use crate::record::{Key, Path};

    fn mv(from: &str, to: &str) -> (Taker<Record>, Setter<Record, Value>) {
        let to = Path::parse(to).unwrap();
        (
            take_at(Path::parse(from).unwrap()),
            Setter::new(move |r: &mut Record, v: Value| r.set_path(&to, v)),
        )
    }

    #[test]
    fn moves_nested_and_skips_missing() {
        let ren = Rename::new(vec![
            mv("a.b", "c"),
            mv("host", "src.host"),
            mv("nope", "x"),
            mv("c", "c"),
        ]);
        let mut r = Record::new();
        r.set_path(&Path::parse("a.b").unwrap(), Value::Int(1));
        r.insert(Key::new("host"), Value::from("web1"));
        ren.apply(&mut r);
        let mut out = Vec::new();
        r.write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":{},"src":{"host":"web1"},"c":1}"#
        );
    }
}
