//! The cog kit: what supplied cogs share and what a cog written in another crate uses to
//! match them — line splitting and framing, supply and drain helpers, output formats,
//! `on_error` routing, acknowledgements and checkpoints, globs, the forwarding buffer,
//! HTTP request framing, and the descriptors and build context through which cogs are
//! built from configuration.

pub mod ack;
mod build;
pub mod checkpoint;
pub mod disk_buffer;
pub mod drain;
pub mod event_time;
pub mod format;
pub mod forward;
pub mod framing;
pub mod glob;
pub mod held;
pub mod http;
pub mod keyed;
pub mod lines;
pub mod on_error;
pub mod progress;
pub mod rewind;
pub mod seen_keys;
pub mod supply;
pub mod tls;
pub mod window;

pub use build::{BuildCx, BuildFn, Built, CogDescriptor, CogKind};

/// Asks the CPU to start reading the cache line at `p` (a hint: nothing where there is no
/// such instruction). For tables probed in batches: each batch's slots are asked for first.
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes nothing the program sees, whatever the
    // address; SSE, its instruction set, is part of every x86_64 CPU.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
