//! `pass`: hands every datum on unchanged.

use crate::prelude::*;

/// Hands every datum on unchanged: a placeholder stage, and the yardstick of the train's
/// own per-datum cost in benchmarks.
///
/// ```toml
/// [[train.cog]]
/// type = "pass"
/// ```
///
/// From Rust: `Pass`, or `Pass::from_settings(&PassSettings::default())` (it has no keys).
#[derive(Debug, Default, Clone, Copy)]
pub struct Pass;

crate::settings! {
    /// Settings of `pass`: it has no keys.
    pub struct PassSettings {}
}

impl Pass {
    /// A `pass` made from its settings (it has none beyond `name`).
    pub fn from_settings(_: &PassSettings) -> Self {
        Pass
    }
}

impl<D: 'static> Cog<D> for Pass {
    fn name(&self) -> &str {
        "pass"
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, _cx: &mut Ctx) {
        out.extend(batch.drain(..));
    }
}

/// The descriptor of `pass`.
pub const DESCRIPTOR: crate::kit::CogDescriptor = crate::kit::CogDescriptor {
    name: "pass",
    kind: crate::kit::CogKind::Transform,
    summary: "hands every record on unchanged",
    params: <PassSettings as crate::schema::Settings>::PARAMS,
    fields: &[],
    build: |p, _| {
        let s: PassSettings = p.settings()?;
        Ok(Box::new(Pass::from_settings(&s)))
    },
};
