//! `pass`: hands every datum on unchanged.

use crate::prelude::*;

/// Hands every datum on unchanged: a placeholder stage, and the yardstick of the train's
/// own per-datum cost in benchmarks.
///
/// ```toml
/// [[train.cog]]
/// type = "pass"
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Pass;

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
    params: &[],
    fields: &[],
    build: |_, _| Ok(Box::new(Pass)),
};
