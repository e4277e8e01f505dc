//! Pushes small data through a 5-cog pass-through train and prints data/s.
//!
//! `cargo bench --bench train_throughput [-- N]` (N data, default 10 million).

use std::time::Instant;

use deadbeat::cogs::flow::pass::Pass;
use deadbeat::prelude::*;
use deadbeat::record::Record;

/// The daemon's own datum; empty, so the figure is the train's cost, not the allocator's.
type Datum = Record;

struct Supply {
    left: u64,
    batch: usize,
}

impl Cog<Datum> for Supply {
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
    fn wake(&mut self, _: Local, _: Wake<'_>, out: &mut Out<Datum>, cx: &mut Ctx) {
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

struct Count(std::rc::Rc<std::cell::Cell<u64>>);

impl Cog<Datum> for Count {
    fn name(&self) -> &str {
        "count"
    }
    fn process(&mut self, d: Datum, _: &mut Out<Datum>, _: &mut Ctx) {
        self.0.set(self.0.get() + 1);
        std::hint::black_box((d.id, d.fields.len()));
    }
}

fn main() -> Result<(), BoxError> {
    // `cargo test --all-targets` runs benches without `--bench`: keep that run short.
    let benching = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benching { 10_000_000 } else { 100_000 });
    println!("datum size: {} bytes", std::mem::size_of::<Datum>());
    for _ in 0..3 {
        let seen = std::rc::Rc::new(std::cell::Cell::new(0));
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
        let t0 = Instant::now();
        esc.run()?;
        let dt = t0.elapsed();
        assert_eq!(seen.get(), n, "every datum must reach the drain");
        println!(
            "5-cog pass-through: {} data in {:.3} s = {:.1} M data/s",
            n,
            dt.as_secs_f64(),
            n as f64 / dt.as_secs_f64() / 1e6
        );
    }
    Ok(())
}
