//! `rename`: moves fields to new names.

use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Record, Value};
use crate::schema::{CogParams, ConfigError, Param, ParamType};

use super::{Taker, path_pairs, take_at};

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
#[derive(Debug)]
pub struct Rename<D> {
    moves: Vec<(Taker<D>, Setter<D, Value>)>,
}

/// The descriptor of `rename`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "rename",
    kind: CogKind::Transform,
    summary: "moves fields to new names (dotted paths); missing fields are skipped",
    params: &[Param::req(
        "fields",
        ParamType::Table,
        "old dotted path = \"new dotted path\", applied in order",
    )],
    fields: &[],
    build,
};

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let moves = path_pairs(p, "fields")?
        .into_iter()
        .map(|(from, to)| {
            let set = Setter::new(move |r: &mut Record, v: Value| r.set_path(&to, v));
            (take_at(from), set)
        })
        .collect();
    Ok(Box::new(Rename::new(moves)))
}

impl<D> Rename<D> {
    /// Moves each piece taken by a [`Taker`] into its setter, in order.
    pub fn new(moves: Vec<(Taker<D>, Setter<D, Value>)>) -> Self {
        Rename { moves }
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
