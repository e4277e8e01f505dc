//! Pushes small data through a 5-cog pass-through train and prints data/s.
//!
//! `cargo bench --bench train_throughput [-- N]` (N data, default 10 million).

use std::time::Instant;

use deadbeat::prelude::*;
use deadbeat::record::Record;

#[path = "support/mod.rs"]
mod support;

fn main() -> Result<(), BoxError> {
    // `cargo test --all-targets` runs benches without `--bench`: keep that run short.
    let benching = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benching { 10_000_000 } else { 100_000 });
    println!("datum size: {} bytes", std::mem::size_of::<Record>());
    for _ in 0..3 {
        let (mut esc, seen) = support::pass_through(n)?;
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
