//! `tee`: sends a copy of the data that satisfy a condition to another train.

use std::rc::Rc;

use crate::engine::mailbox::Mailbox;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::expr::Condition;
use crate::record::{Record, id_field};
use crate::schema::{CogParams, ConfigError, Param, ParamType};

use super::filter::expr_param;
use super::route::target;

/// Sends a copy of each datum that satisfies `when` (every datum, without it) to the head
/// of another train; the original continues down this one.
///
/// The copy travels under a fresh event id, and the supply's checkpoint follows the
/// original only: **a copy is best-effort with respect to acknowledgements**. Once the
/// original is written, a crash may lose a copy still on its way. (Sharing the id would
/// be worse: the first of the two acknowledgements would advance the checkpoint past a
/// datum whose other half was not yet written.)
///
/// ```toml
/// [[train.cog]]
/// type = "tee"
/// train = "audit"
/// when = 'path contains "auth"'
/// ```
#[derive(Debug)]
pub struct Tee<D> {
    to: Rc<Mailbox<D>>,
    when: Option<Condition<D>>,
    set_id: Setter<D, EventId>,
}

impl<D> Tee<D> {
    /// Sends copies of the data that satisfy `when` (all, if `None`) to `to`; `set_id`
    /// gives each copy its fresh id.
    pub fn new(to: Rc<Mailbox<D>>, when: Option<Condition<D>>, set_id: Setter<D, EventId>) -> Self {
        Tee { to, when, set_id }
    }
}

impl<D: Clone + 'static> Cog<D> for Tee<D> {
    fn name(&self) -> &str {
        "tee"
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        for d in batch.drain(..) {
            if self.when.as_ref().is_none_or(|c| c.test(&d)) {
                let mut copy = d.clone();
                self.set_id.set(&mut copy, cx.new_event_id());
                self.to.send(copy, cx);
            }
            out.push(d);
        }
    }
}

/// The descriptor of `tee`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "tee",
    kind: CogKind::Transform,
    summary: "sends a copy of records that satisfy a condition to another train (best-effort \
              with respect to checkpoints); the originals continue",
    params: &[
        Param::req("train", ParamType::Str, "the train to send copies to"),
        Param::unset(
            "when",
            ParamType::Str,
            "condition: copy only the records that satisfy it (default: every record)",
        ),
    ],
    fields: &[],
    build,
};

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let when = expr_param(p, "when")?.map(Condition::records);
    let to = target(p, cx)?;
    Ok(Box::new(Tee::new(to, when, id_field().set)))
}
