//! `drop`: the drain that says records end here on purpose.

use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Record, id_field};
use crate::schema::{CogParams, ConfigError, Settings};

/// Ends every datum that reaches it: acknowledges it (so the supply's checkpoint moves on)
/// and counts it as dropped. A train must bring every datum to a drain; where records may
/// legitimately end (the rest of a `route` with a `when`, records kept only for a `tee`),
/// `drop` says so, instead of records vanishing at the end of the train unseen.
///
/// ```toml
/// [[train.cog]]
/// type = "route"
/// train = "errors"
/// when = 'level == "error"'
/// [[train.cog]]
/// type = "drop"
/// ```
///
/// From Rust: `Discard::from_settings(&DropSettings::default(), id)` (it has no keys).
#[derive(Debug)]
pub struct Discard<D> {
    id: Getter<D, EventId>,
}

impl<D> Discard<D> {
    /// Drops every datum, acknowledging the id `id` reads.
    pub fn new(id: Getter<D, EventId>) -> Self {
        Discard { id }
    }

    /// A `drop` made from its settings (it has none beyond `name`).
    pub fn from_settings(_: &DropSettings, id: Getter<D, EventId>) -> Self {
        Discard::new(id)
    }
}

crate::settings! {
    /// Settings of `drop`: it has no keys.
    pub struct DropSettings {}
}

impl<D: 'static> Cog<D> for Discard<D> {
    fn name(&self) -> &str {
        "drop"
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        out.count_dropped(batch.len() as u64);
        for d in batch.drain(..) {
            if let Some(id) = self.id.get(&d) {
                cx.event_done(*id);
            }
        }
    }
}

/// The descriptor of `drop`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "drop",
    kind: CogKind::Drain,
    summary: "ends every record that reaches it on purpose: acknowledged and counted as \
              dropped",
    params: DropSettings::PARAMS,
    fields: &[],
    build,
};

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: DropSettings = p.settings()?;
    Ok(Box::new(Discard::from_settings(&s, id_field().get)))
}
