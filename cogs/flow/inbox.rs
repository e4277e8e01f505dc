//! `inbox`: the head of a train fed by other trains.

use std::rc::Rc;

use crate::engine::mailbox::Mailbox;
use crate::prelude::*;

/// Emits what other trains sent to this train through its [`Mailbox`]. The config builder
/// puts one at the head of every train that a `route`, `tee` or `on_error = "train:NAME"`
/// names; a program embedding deadbeat does the same by hand.
#[derive(Debug)]
pub struct Inbox<D> {
    mailbox: Rc<Mailbox<D>>,
}

impl<D> Inbox<D> {
    /// Receives from `mailbox`.
    pub fn new(mailbox: Rc<Mailbox<D>>) -> Self {
        Inbox { mailbox }
    }
}

impl<D: 'static> Cog<D> for Inbox<D> {
    fn name(&self) -> &str {
        "inbox"
    }

    fn inspect(&self, into: &mut crate::engine::control::Inspection) {
        into.buffer("queued", self.mailbox.len(), None);
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.mailbox.set_owner(cx.me());
        Ok(())
    }

    fn wake(&mut self, _: Local, _: Wake<'_>, out: &mut Out<D>, _: &mut Ctx) {
        self.mailbox.drain_into(out);
    }

    fn finish(&mut self, out: &mut Out<D>, _: &mut Ctx) {
        // Every feeding train has finished before this one starts to: this is the last.
        self.mailbox.drain_into(out);
    }
}
