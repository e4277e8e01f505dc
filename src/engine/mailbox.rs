//! Handing data from one train to another (`route`, `tee`, `on_error = "train:NAME"`).

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::engine::escapement::{CogRef, Ctx};

/// A queue into the head of another train on the same escapement.
///
/// Senders push data and wake the receiving [`Inbox`](crate::cogs::flow::inbox::Inbox)
/// cog, which emits them into its train on its next turn. The escapement finishes a train
/// only after every train feeding it (see [`Escapement::add_feed`](crate::Escapement::add_feed)),
/// so nothing sent during shutdown is lost.
#[derive(Debug)]
pub struct Mailbox<D> {
    inner: RefCell<Inner<D>>,
}

#[derive(Debug)]
struct Inner<D> {
    queue: VecDeque<D>,
    owner: Option<CogRef>,
}

impl<D> Default for Mailbox<D> {
    fn default() -> Self {
        Mailbox {
            inner: RefCell::new(Inner {
                queue: VecDeque::new(),
                owner: None,
            }),
        }
    }
}

impl<D> Mailbox<D> {
    /// An empty mailbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands a datum to the receiving train.
    pub fn send(&self, d: D, cx: &mut Ctx<'_>) {
        let mut inner = self.inner.borrow_mut();
        inner.queue.push_back(d);
        if let Some(owner) = inner.owner {
            cx.enqueue_cog(owner, 0);
        }
    }

    /// Called by the receiving cog at start: who to wake.
    pub fn set_owner(&self, owner: CogRef) {
        self.inner.borrow_mut().owner = Some(owner);
    }

    /// Moves everything waiting into `out`.
    pub fn drain_into(&self, out: &mut crate::engine::cog::Out<D>) -> usize {
        let mut inner = self.inner.borrow_mut();
        let n = inner.queue.len();
        out.extend(inner.queue.drain(..));
        n
    }

    /// Data waiting.
    pub fn len(&self) -> usize {
        self.inner.borrow().queue.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
