//! `remove`: deletes fields.

use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::Record;
use crate::schema::{CogParams, ConfigError, Param, ParamType};

use super::{Taker, parse_path, take_at};

/// Deletes fields; dotted paths reach into nested maps (the map itself stays, even when
/// it becomes empty). A field that is missing is skipped silently.
///
/// ```toml
/// [[train.cog]]
/// type = "remove"
/// fields = ["offset", "http.headers.cookie"]
/// ```
#[derive(Debug)]
pub struct Remove<D> {
    fields: Vec<Taker<D>>,
}

/// The descriptor of `remove`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "remove",
    kind: CogKind::Transform,
    summary: "deletes fields (dotted paths); missing fields are skipped",
    params: &[Param::req(
        "fields",
        ParamType::StrList,
        "dotted paths of the fields to delete",
    )],
    fields: &[],
    build,
};

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let names = p.str_list("fields")?.unwrap_or_default();
    if names.is_empty() {
        return Err(p.error("fields", "give at least one field"));
    }
    let fields = names
        .into_iter()
        .map(|n| parse_path(p, "fields", n).map(take_at))
        .collect::<Result<_, _>>()?;
    Ok(Box::new(Remove::new(fields)))
}

impl<D> Remove<D> {
    /// Removes what each [`Taker`] takes.
    pub fn new(fields: Vec<Taker<D>>) -> Self {
        Remove { fields }
    }

    #[inline]
    fn strip(&self, d: &mut D) {
        for f in &self.fields {
            if let Some(v) = f.take(d) {
                crate::record::pool::recycle_value(v);
            }
        }
    }
}

impl<D: 'static> Cog<D> for Remove<D> {
    fn name(&self) -> &str {
        "remove"
    }

    fn process(&mut self, mut d: D, out: &mut Out<D>, _cx: &mut Ctx) {
        self.strip(&mut d);
        out.push(d);
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, _cx: &mut Ctx) {
        batch.iter_mut().for_each(|d| self.strip(d));
        out.push_all(batch);
    }
}
