//! Sockets: syslog and line listeners over TCP, UDP and Unix sockets; forwarding drains.

use crate::config::CogDescriptor;

pub mod relp;
pub mod relp_in;
pub mod relp_out;
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
    ]
}
