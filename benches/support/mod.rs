//! The 5-cog pass-through train both benchmarks measure: a supply of empty records in
//! batches of 1024, three `pass` cogs and a counting drain.

use std::cell::Cell;
use std::rc::Rc;

use deadbeat::cogs::flow::pass::Pass;
use deadbeat::prelude::*;
use deadbeat::record::Record;

/// An escapement running the train over `n` records, and the drain's count to check after
/// `run` (the loop's setup is not part of what callers time).
pub fn pass_through(n: u64) -> Result<(Escapement, Rc<Cell<u64>>), BoxError> {
    let seen = Rc::new(Cell::new(0));
    let mut esc = Escapement::with_options(Options {
        shutdown_on_signals: false,
        ..Options::default()
    })?;
    esc.add_train(
        Train::new("bench")
            .cog(Supply {
                left: n,
                batch: 1024,
            })
            .cog(Pass)
            .cog(Pass)
            .cog(Pass)
            .cog(Count(seen.clone())),
    )?;
    Ok((esc, seen))
}

struct Supply {
    left: u64,
    batch: usize,
}

impl Cog<Record> for Supply {
    fn name(&self) -> &str {
        "supply"
    }
    fn is_supply(&self) -> bool {
        true
    }
    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        cx.enqueue(0);
        Ok(())
    }
    fn wake(&mut self, _: Local, _: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        let n = (self.batch as u64).min(self.left);
        for i in 0..n {
            let mut r = Record::new();
            r.id = self.left - i;
            out.push(r);
        }
        self.left -= n;
        if self.left == 0 {
            cx.exhausted();
        } else {
            cx.enqueue(0);
        }
    }
}

struct Count(Rc<Cell<u64>>);

impl Cog<Record> for Count {
    fn name(&self) -> &str {
        "count"
    }
    fn process(&mut self, d: Record, _: &mut Out<Record>, _: &mut Ctx) {
        self.0.set(self.0.get() + 1);
        std::hint::black_box((d.id, d.fields.len()));
    }
}
