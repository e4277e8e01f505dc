//! `copy`: duplicates fields under new names.

use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Record, Value};
use crate::schema::{CogParams, ConfigError, Param, ParamType};

use super::path_pairs;

/// Copies fields, in the order written: `from = "to"`. The destination is overwritten if
/// it exists; missing intermediate maps are created. A source that is missing is skipped
/// silently. Copies are deep (a copied map is independent of the original), but shared
/// text is only reference-counted.
///
/// ```toml
/// [[train.cog]]
/// type = "copy"
/// fields = { client = "client_raw", "src.ip" = "geo.ip" }
/// ```
#[derive(Debug)]
pub struct CopyField<D> {
    copies: Vec<(Getter<D, Value>, Setter<D, Value>)>,
}

/// The descriptor of `copy`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "copy",
    kind: CogKind::Transform,
    summary: "copies fields to new names (dotted paths); missing fields are skipped",
    params: &[Param::req(
        "fields",
        ParamType::Table,
        "source dotted path = \"destination dotted path\", applied in order",
    )],
    fields: &[],
    build,
};

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let copies = path_pairs(p, "fields")?
        .into_iter()
        .map(|(from, to)| {
            (
                Getter::new(move |r: &Record| r.get_path(&from)),
                Setter::new(move |r: &mut Record, v: Value| r.set_path(&to, v)),
            )
        })
        .collect();
    Ok(Box::new(CopyField::new(copies)))
}

impl<D> CopyField<D> {
    /// Copies what each getter reads into its setter, in order.
    pub fn new(copies: Vec<(Getter<D, Value>, Setter<D, Value>)>) -> Self {
        CopyField { copies }
    }

    /// Applies every copy to `d`.
    pub fn apply(&self, d: &mut D) {
        for (get, set) in &self.copies {
            if let Some(v) = get.get(d).cloned() {
                set.set(d, v);
            }
        }
    }
}

impl<D: 'static> Cog<D> for CopyField<D> {
    fn name(&self) -> &str {
        "copy"
    }

    fn process(&mut self, mut d: D, out: &mut Out<D>, _cx: &mut Ctx) {
        self.apply(&mut d);
        out.push(d);
    }
}
