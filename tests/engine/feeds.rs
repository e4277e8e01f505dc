//! Trains handing data to other trains through a mailbox: what is sent while the sending
//! train finishes still arrives, because the receiving train finishes after it.

use std::rc::Rc;

use deadbeat::cogs::flow::inbox::Inbox;
use deadbeat::engine::mailbox::Mailbox;
use deadbeat::prelude::*;

use super::{Log, opts, run};

struct Numbers {
    left: u32,
}

impl Cog<u32> for Numbers {
    fn name(&self) -> &str {
        "numbers"
    }
    fn is_supply(&self) -> bool {
        true
    }
    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        cx.enqueue(0);
        Ok(())
    }
    fn wake(&mut self, _: Local, _: Wake<'_>, out: &mut Out<u32>, cx: &mut Ctx) {
        for _ in 0..7 {
            if self.left == 0 {
                cx.exhausted();
                return;
            }
            out.push(self.left);
            self.left -= 1;
        }
        cx.enqueue(0);
    }
}

/// Sends everything to another train, and one more datum when it finishes.
struct Sender(Rc<Mailbox<u32>>);

impl Cog<u32> for Sender {
    fn name(&self) -> &str {
        "sender"
    }
    fn process(&mut self, d: u32, _: &mut Out<u32>, cx: &mut Ctx) {
        self.0.send(d, cx);
    }
    fn finish(&mut self, _: &mut Out<u32>, cx: &mut Ctx) {
        self.0.send(1000, cx);
    }
}

struct Collect(Log);

impl Cog<u32> for Collect {
    fn name(&self) -> &str {
        "collect"
    }
    fn process(&mut self, d: u32, _: &mut Out<u32>, _: &mut Ctx) {
        self.0.push(format!("got {d}"));
    }
    fn finish(&mut self, _: &mut Out<u32>, _: &mut Ctx) {
        self.0.push("collect finish");
    }
}

#[test]
fn a_fed_train_finishes_after_its_feeder_and_loses_nothing() {
    let log = Log::default();
    let mailbox = Rc::new(Mailbox::new());
    let mut esc = Escapement::with_options(opts()).unwrap();
    // The receiving train comes first, so without the feed it would finish first.
    let to = esc
        .add_train(
            Train::new("receiver")
                .cog(Inbox::new(mailbox.clone()))
                .cog(Collect(log.clone())),
        )
        .unwrap();
    let from = esc
        .add_train(
            Train::new("sender")
                .cog(Numbers { left: 20 })
                .cog(Sender(mailbox)),
        )
        .unwrap();
    esc.add_feed(from, to).unwrap();
    run(&mut esc, &log);
    let mut want: Vec<String> = (1..=20).rev().map(|i| format!("got {i}")).collect();
    want.push("got 1000".into());
    want.push("collect finish".into());
    assert_eq!(log.only(&["got", "collect"]), want);
}

#[test]
fn feeds_that_form_a_cycle_are_refused() {
    let mut esc = Escapement::with_options(opts()).unwrap();
    let a = esc.add_train(Train::<u32>::new("a")).unwrap();
    let b = esc.add_train(Train::<u32>::new("b")).unwrap();
    let c = esc.add_train(Train::<u32>::new("c")).unwrap();
    esc.add_feed(a, b).unwrap();
    esc.add_feed(b, c).unwrap();
    assert!(esc.add_feed(c, a).is_err());
    assert!(esc.add_feed(b, b).is_err());
    assert!(esc.add_feed(a, 9).is_err());
}
