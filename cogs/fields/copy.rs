//! `copy`: duplicates fields under new names.

use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Path, Record, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::{FieldTable, path_pairs};

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
///
/// From Rust, over any datum, with a getter and a setter for each path:
/// `CopyField::from_settings(&CopySettings { fields: [("client", "client_raw")].into_iter().collect() }, get_at, set_at)`.
#[derive(Debug)]
pub struct CopyField<D> {
    copies: Vec<(Getter<D, Value>, Setter<D, Value>)>,
}

/// The descriptor of `copy`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "copy",
    kind: CogKind::Transform,
    summary: "copies fields to new names (dotted paths); missing fields are skipped",
    params: CopySettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `copy`.
    pub struct CopySettings {
        /// source dotted path = "destination dotted path", applied in order
        #[setting(required)]
        fields: FieldTable,
    }
}

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    // Checked on the configuration first: its errors name the entry and its place.
    path_pairs(p, "fields")?;
    let s: CopySettings = p.settings()?;
    let copy = CopyField::from_settings(
        &s,
        |from| Getter::new(move |r: &Record| r.get_path(&from)),
        |to| Setter::new(move |r: &mut Record, v: Value| r.set_path(&to, v)),
    )
    .map_err(|e| p.setting_error(e))?;
    Ok(Box::new(copy))
}

impl<D> CopyField<D> {
    /// Copies what each getter reads into its setter, in order.
    pub fn new(copies: Vec<(Getter<D, Value>, Setter<D, Value>)>) -> Self {
        CopyField { copies }
    }

    /// A `copy` made from its settings: `get_at` and `set_at` reach the field at a path.
    pub fn from_settings(
        s: &CopySettings,
        get_at: impl Fn(Path) -> Getter<D, Value>,
        set_at: impl Fn(Path) -> Setter<D, Value>,
    ) -> Result<Self, SettingError> {
        let copies = s
            .fields
            .path_pairs()?
            .into_iter()
            .map(|(from, to)| (get_at(from), set_at(to)))
            .collect();
        Ok(CopyField::new(copies))
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
