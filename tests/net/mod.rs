//! Network cogs against real clients and servers on 127.0.0.1 and Unix sockets.

mod collector_restart;
mod http_in;
mod http_out;
mod peer_ack;
#[cfg(feature = "redis")]
mod redis;
mod relp;
mod reuse_port;
mod stream_in;
mod stream_out;
pub(crate) mod tls;
mod typed_settings;
mod udp;
