//! `remove`: deletes fields.

use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Path, Record};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::{Taker, parse_path, setting_path, take_at};

/// Deletes fields; dotted paths reach into nested maps (the map itself stays, even when
/// it becomes empty). A field that is missing is skipped silently.
///
/// ```toml
/// [[train.cog]]
/// type = "remove"
/// fields = ["offset", "http.headers.cookie"]
/// ```
///
/// From Rust, over any datum, with a taker for each path:
/// `Remove::from_settings(&RemoveSettings { fields: vec!["offset".into()] }, take_at)`.
#[derive(Debug)]
pub struct Remove<D> {
    fields: Vec<Taker<D>>,
}

/// The descriptor of `remove`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "remove",
    kind: CogKind::Transform,
    summary: "deletes fields (dotted paths); missing fields are skipped",
    params: RemoveSettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `remove`.
    pub struct RemoveSettings {
        /// dotted paths of the fields to delete
        #[setting(required)]
        fields: Vec<String>,
    }
}

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: RemoveSettings = p.settings()?;
    // A bad path is reported here, where its error can name the entry.
    for n in &s.fields {
        parse_path(p, "fields", n)?;
    }
    let remove = Remove::from_settings(&s, take_at).map_err(|e| p.setting_error(e))?;
    Ok(Box::new(remove))
}

impl<D> Remove<D> {
    /// Removes what each [`Taker`] takes.
    pub fn new(fields: Vec<Taker<D>>) -> Self {
        Remove { fields }
    }

    /// A `remove` made from its settings: `take_at` removes the field at a path.
    pub fn from_settings(
        s: &RemoveSettings,
        take_at: impl Fn(Path) -> Taker<D>,
    ) -> Result<Self, SettingError> {
        if s.fields.is_empty() {
            return Err(SettingError::new("fields", "give at least one field"));
        }
        let fields = s
            .fields
            .iter()
            .map(|n| setting_path(n).map(&take_at))
            .collect::<Result<_, _>>()?;
        Ok(Remove::new(fields))
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
