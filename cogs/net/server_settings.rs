//! Settings shared by the socket listeners, declared once and flattened into each cog's:
//! the stream keys of `tcp_in` and `unix_in` (stream mode), and the connection limits
//! those and `relp_in` apply alike.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, sockopt,
};

use crate::kit::framing::Framing;
use crate::schema::SettingError;

/// Connections a limit may allow at most (`max_connections`, `max_connections_per_ip`).
/// The counts are `i64`, TOML's integers, so that a negative one is told the range too.
const MAX_LIMIT: i64 = 1_000_000;

crate::choice! {
    /// How a listener cuts its streams into messages (`framing`). The setting defaults to
    /// `auto`; the names keep the order errors and the reference list them in, so the
    /// enum's own `Default` (its first variant) is `newline`.
    pub enum ListenFraming { Newline = "newline", OctetCounting = "octet_counting", Auto = "auto" }
}

impl From<ListenFraming> for Framing {
    fn from(f: ListenFraming) -> Framing {
        match f {
            ListenFraming::Newline => Framing::Newline,
            ListenFraming::OctetCounting => Framing::OctetCounting,
            ListenFraming::Auto => Framing::Auto,
        }
    }
}

crate::settings! {
    /// How many connections a listener keeps open, and how long a silent one stays
    /// (`tcp_in`, `unix_in` in stream mode, `relp_in`).
    pub struct ConnectionSettings {
        /// when full, the longest-idle connection is closed for a new one (counted as errors)
        max_connections: i64 = "1024",
        // Five minutes: a syslog client that has said nothing that long reconnects
        // cheaply when it has something again, and its slot serves someone else meanwhile.
        /// close connections silent this long; 0s: never
        idle_timeout: Duration = "5m",
    }
}

impl ConnectionSettings {
    /// `max_connections`, checked.
    pub fn max_connections(&self) -> Result<usize, SettingError> {
        if (1..=MAX_LIMIT).contains(&self.max_connections) {
            Ok(self.max_connections as usize)
        } else {
            Err(SettingError::new(
                "max_connections",
                "must be within 1..=1000000",
            ))
        }
    }

    /// `idle_timeout`, `None` for never.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (!self.idle_timeout.is_zero()).then_some(self.idle_timeout)
    }
}

crate::settings! {
    /// How many connections one client address may hold (`tcp_in`, `relp_in`).
    pub struct PerIpSettings {
        // A quarter of the default max_connections: no single address (a scanner, a
        // client leaking connections) can take more than that, while a NAT gateway or a
        // relay in front of a few hundred hosts still fits.
        /// connections from one address (IPv6: one /64) beyond it close that address's longest-idle one; 0: no limit
        max_connections_per_ip: i64 = "256",
    }
}

impl PerIpSettings {
    /// `max_connections_per_ip`, checked; `usize::MAX` for no limit.
    pub fn limit(&self) -> Result<usize, SettingError> {
        match self.max_connections_per_ip {
            0 => Ok(usize::MAX),
            n if (1..=MAX_LIMIT).contains(&n) => Ok(n as usize),
            _ => Err(SettingError::new(
                "max_connections_per_ip",
                "must be within 0..=1000000",
            )),
        }
    }
}

crate::settings! {
    /// The keys of a listener that reads streams of messages (`tcp_in`, `unix_in` in
    /// stream mode).
    pub struct StreamServerSettings {
        /// newline, octet_counting (`LEN SP MSG`), or auto: per connection, octet counting if it starts `LEN SP <PRI>`, lines otherwise
        framing: ListenFraming = "auto",
        /// longer lines and frames are cut, flagged `truncated` and counted
        #[setting(size)]
        max_line_bytes: usize = "64KiB",
        // 64 MiB: a thousand connections each holding a partial line of 64 KiB.
        /// all connections' buffers together; past it the connections holding the largest partial messages are closed
        #[setting(size)]
        max_buffered_bytes: usize = "64MiB",
        /// at a stop, read what connections hold until the senders close or go quiet, at most this long; 0s: close at once
        drain_timeout: Duration = "2s",
        /// How many connections, and for how long.
        #[setting(flatten)]
        connections: ConnectionSettings,
    }
}

/// The socket address of a `listen` key; `example` shows a right one in the error.
pub fn listen_addr(text: &str, example: &str) -> Result<SocketAddr, SettingError> {
    text.parse().map_err(|e| {
        SettingError::new(
            "listen",
            format!("expected IP:port, e.g. \"{example}\": {e}"),
        )
    })
}

/// A non-blocking socket bound to `addr` with `SO_REUSEPORT` (`reuse_port = true`): several
/// processes may bind the same address and port, and the kernel spreads connections (or
/// datagrams, by source) over them, which gives a listener one process per core. A
/// stream socket is also listening.
pub(crate) fn bind_reuse_port(addr: SocketAddr, stream: bool) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let ty = if stream {
        SockType::Stream
    } else {
        SockType::Datagram
    };
    let fd = socket_with(family, ty)?;
    if stream {
        // As the standard library's listener does: a restarted daemon rebinds at once.
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    if stream {
        listen(&fd, Backlog::MAXCONN)?;
    }
    Ok(fd)
}

fn socket_with(family: AddressFamily, ty: SockType) -> io::Result<OwnedFd> {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    Ok(nix::sys::socket::socket(family, ty, flags, None)?)
}

/// Binds a TCP listener on `addr` for the cog `name`, with the long backlog, logs where it
/// listens and registers it for reading as `local`: how a TCP server cog starts.
pub(crate) fn listen_tcp(
    name: &str,
    addr: SocketAddr,
    local: crate::engine::cog::Local,
    tls: bool,
    cx: &mut crate::prelude::Ctx,
) -> Result<mio::net::TcpListener, crate::engine::cog::BoxError> {
    let mut l = mio::net::TcpListener::bind(addr)
        .map_err(|e| format!("{name}: cannot listen on {addr}: {e}"))?;
    super::tcp_in::set_backlog(&l);
    if let Ok(a) = l.local_addr() {
        slog::info!(cx.logger(), "{} listening", name; "address" => %a, "tls" => tls);
    }
    cx.register(&mut l, local, mio::Interest::READABLE)?;
    Ok(l)
}
