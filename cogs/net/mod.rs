//! Sockets: syslog and line listeners over TCP, UDP and Unix sockets, an HTTP server for
//! posted records; forwarding drains.

use std::time::{Duration, Instant};

use crate::kit::CogDescriptor;

pub mod http_in;
pub mod http_out;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub mod redis_in;
#[cfg(feature = "redis")]
pub mod redis_out;
pub mod relp;
pub mod relp_in;
pub mod relp_out;
pub mod server_settings;
pub mod tcp_in;
pub mod tcp_out;
pub mod udp_in;
pub mod udp_out;
pub mod unix_in;
pub mod unix_out;

/// Descriptors of the network cogs.
pub fn descriptors() -> Vec<CogDescriptor> {
    vec![
        tcp_in::DESCRIPTOR,
        udp_in::DESCRIPTOR,
        unix_in::DESCRIPTOR,
        tcp_out::DESCRIPTOR,
        udp_out::DESCRIPTOR,
        unix_out::DESCRIPTOR,
        relp_in::DESCRIPTOR,
        relp_out::DESCRIPTOR,
        http_in::DESCRIPTOR,
        http_out::DESCRIPTOR,
        #[cfg(feature = "redis")]
        redis_in::DESCRIPTOR,
        #[cfg(feature = "redis")]
        redis_out::DESCRIPTOR,
    ]
}

/// At a stop, datagrams read at most to empty a socket: more than a 32 MiB receive buffer
/// holds (each datagram costs the kernel at least 512 bytes).
const DATAGRAMS_AT_STOP: usize = 65_536;
/// At a stop, time spent at most emptying a datagram socket.
const DATAGRAMS_AT_STOP_TIME: Duration = Duration::from_secs(1);

/// At a stop, reads what a datagram socket holds (it arrived already: closing the socket
/// would drop it), backpressure notwithstanding, within bounds so that a flood cannot hold
/// the shutdown back. `turn` reads up to `per_turn` datagrams and says whether more may
/// be waiting.
pub(crate) fn read_datagrams_at_stop(per_turn: usize, mut turn: impl FnMut() -> bool) {
    let deadline = Instant::now() + DATAGRAMS_AT_STOP_TIME;
    for _ in 0..DATAGRAMS_AT_STOP.div_ceil(per_turn.max(1)) {
        if Instant::now() >= deadline || !turn() {
            break;
        }
    }
}
