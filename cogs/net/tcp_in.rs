//! `tcp_in`: a TCP listener for syslog and plain lines, RFC 6587 framed; and the
//! connection machinery it shares with `unix_in` in stream mode.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mio::event::Source;

use crate::kit::framing::{Deframer, Framing};
use crate::kit::lines::LineSplitter;
use crate::kit::on_error::LogLimiter;
use crate::kit::supply::with_line_emitter;
use crate::kit::tls::{self, Stream, TlsServer, TlsSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Key, Record, Timestamp, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::server_settings::{self, PerIpSettings, StreamServerSettings};

/// Reads per connection and turn; then the connection waits for the next turn so that one
/// busy sender cannot starve the others.
const READS_PER_TURN: usize = 8;
/// Bytes asked for per read.
const READ_SIZE: usize = 128 << 10;
/// Connections accepted per turn before the listener yields.
const ACCEPTS_PER_TURN: usize = 64;
/// After `accept` fails for lack of resources (EMFILE...), try again after this long:
/// edge-triggered readiness would not say so again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// While draining at a stop: a connection that brought nothing for this long has given
/// what its kernel held (on a LAN, the sender's queue follows within a few round trips).
const DRAIN_QUIET: Duration = Duration::from_millis(200);
/// How often the drain looks for quiet connections and its deadline.
const DRAIN_TICK: Duration = Duration::from_millis(25);
/// A connection silent this long gives back the read space of its buffer.
const SHRINK_AFTER: Duration = Duration::from_secs(1);
/// Buffer bytes given back since the last trim that make it worth asking the allocator
/// to return free memory to the system.
const TRIM_AFTER_BYTES: usize = 1 << 20;

/// Asks the allocator to give free memory back to the system: glibc keeps freed buffers
/// (and the holes between live ones) resident otherwise.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A connection active more recently than this is never closed to make room: a client
/// that just connected (or just sent) is about to send, and one address reconnecting in a
/// loop cannot churn through the others' connections faster than this.
pub(crate) const EVICT_MIN_IDLE: Duration = Duration::from_secs(1);

/// Listen backlog (the kernel caps it at `net.core.somaxconn`): a burst of clients
/// reconnecting after a restart waits in it instead of having its SYNs dropped and
/// retried a second later (the standard library's 128 filled in a few milliseconds).
pub(crate) const LISTEN_BACKLOG: libc::c_int = 4096;

/// Sets the listen backlog of a listening socket (`listen` again only updates it).
pub(crate) fn set_backlog(l: &impl AsRawFd) {
    // SAFETY: listen on a socket we own that is already listening; failure keeps 128.
    unsafe { libc::listen(l.as_raw_fd(), LISTEN_BACKLOG) };
}

/// Connections taken from the backlog at a stop (their bytes are in our kernel already).
const BACKLOG_AT_STOP: usize = 4096;

const LISTENER: Local = 0;
const SWEEP: Local = 1;
const DRAIN: Local = 2;
const FIRST_CONN: Local = 3;

/// The interned key `peer`.
pub(crate) fn peer_key() -> Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    *KEY.get_or_init(|| Key::new("peer"))
}

/// The interned key `received_at`.
pub(crate) fn received_at_key() -> Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    *KEY.get_or_init(|| Key::new("received_at"))
}

/// Lines from TCP clients, framed by newlines or by octet counting (RFC 6587), decided per
/// listener or detected per connection.
///
/// Every connection has its own bounded buffer (`max_line_bytes` plus one 128 KiB read)
/// and gets a bounded share of each loop turn, so a fast sender does not starve the others
/// and a slow or silent one blocks nobody.
///
/// **Idle clients cannot lock others out.** When `max_connections` are open, or
/// `max_connections_per_ip` from the new client's address (IPv6: its /64, which one host
/// usually holds whole), the longest-idle connection (of that address) is closed to make
/// room, so a new client is served; a connection that has data waiting (read or not yet)
/// or was active in the last second is never closed for it, and if every one is like
/// that, the new one is closed instead. Both are counted as errors and logged at a bounded rate. `idle_timeout` (5 minutes by default) closes connections silent that long (one
/// sweep timer, not one per connection; `"0s"` never).
///
/// `framing = "auto"` takes a connection as octet-counted only when it starts with
/// `LEN SP <PRI>` and `LEN` bytes (a syslog message, as `logger --octet-count` or rsyslog
/// send it); anything else is lines, so an application log line starting with a date is
/// never mistaken for a frame.
///
/// Errors are handled per connection: a line (or frame) over `max_line_bytes` is cut,
/// flagged `truncated = true` and counted; a bad octet count (anything but
/// `NONZERO-DIGIT *DIGIT SP`) loses the stream's framing: with `framing = "octet_counting"`
/// the connection is closed, with `"auto"` the rest of it is read as lines; either way
/// it is logged and counted, and everybody else is served on. When a client disconnects mid-line,
/// the partial line is emitted as it is (like the last line of a file without a final
/// newline); a partial octet-counted frame is emitted too, and counted as an error since
/// the sender promised more.
///
/// Backpressure stops reading (and accepting), so TCP senders feel it through their window.
///
/// **Memory is bounded.** Connections hold at most `max_buffered_bytes` of buffers
/// together (partial lines waiting for their end, and read space). Under pressure (half
/// of it) a connection gives back its read space after every turn, and a connection
/// silent for a second always does; past the limit, the connections holding the largest
/// partial messages are closed (their partial message emitted flagged `partial = true`),
/// logged at a bounded rate and counted. Buffers of closed connections go back to the
/// system.
///
/// **Stopping loses nothing the kernel holds.** At a graceful stop (SIGTERM) the
/// connections waiting in the backlog are accepted, the listener closes, every connection
/// is told the stop with a half-close (FIN: a sender that watches its socket stops and
/// closes) and is read on until the sender closes, or until it has been quiet for 200 ms,
/// or until `drain_timeout` has passed; only then is it closed. (Closing a socket with
/// unread bytes sends a reset, which also destroys what the sender's kernel still queued.)
/// What arrives meanwhile goes down the train as usual, backpressure notwithstanding. A
/// message the stop cuts short (a line without its newline, a frame without its end) is
/// emitted flagged `partial = true` and counted as an error, never as if complete; so is
/// one held when the connection is closed for an error or for being idle. Bytes still
/// unread at the deadline are logged and counted. A message held when the *sender*
/// closes is emitted as it is, like the last line of a file without a final newline.
///
/// **TLS** (syslog over TLS, RFC 5425, on port 6514 by convention): with a `tls` table
/// every connection is TLS (rustls); `tls.cert` and `tls.key` are required, and `tls.ca`
/// requires each client to present a certificate chaining to it (mutual TLS; with
/// `tls.verify = false` too, a client certificate is checked when given but not
/// required). The handshake runs on the loop like the reads. A handshake that fails (a
/// plaintext client, an expired or unknown client certificate) is logged once with the
/// peer and rustls' reason, counted as an error, and the connection closed.
///
/// Fields: `message` (raw bytes), `peer` (`"IP:port"`), `received_at` (when the bytes were
/// read, per read), `partial` (only when true).
///
/// ```toml
/// [[train.cog]]
/// type = "tcp_in"
/// listen = "127.0.0.1:5140"
/// reuse_port = false        # true: share the port with other processes (one per core)
/// framing = "auto"          # "newline" | "octet_counting" | "auto" (per connection)
/// max_connections = 1024
/// max_connections_per_ip = 256  # 0: no limit per address
/// max_line_bytes = "64KiB"
/// max_buffered_bytes = "64MiB"  # all connections' buffers together
/// idle_timeout = "5m"
/// drain_timeout = "2s"      # at a stop, read what connections hold for at most this long
/// # tls = { cert = "server.pem", key = "server.key", ca = "clients-ca.pem" }  # TLS; ca: mutual TLS
/// ```
///
/// From Rust: `TcpIn::from_settings(&TcpInSettings { listen: "127.0.0.1:5140".into(),
/// ..Default::default() })`.
#[derive(Debug)]
pub struct TcpIn {
    addr: SocketAddr,
    reuse_port: bool,
    server: StreamServer<TcpAcceptor>,
    tls: Option<TlsServer>,
}

/// The descriptor of `tcp_in`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "tcp_in",
    kind: CogKind::Supply,
    summary: "TCP listener: newline or octet-counted (RFC 6587) syslog and lines",
    params: TcpInSettings::PARAMS,
    fields: STREAM_FIELDS,
    build,
};

crate::settings! {
    /// Settings of `tcp_in`.
    pub struct TcpInSettings {
        /// address and port, e.g. "0.0.0.0:514"
        #[setting(required)]
        listen: String,
        /// SO_REUSEPORT: several processes listen on the same port, the kernel spreads the connections over them (one process per core)
        reuse_port: bool = "false",
        /// Framing, buffers, the stop and connection limits.
        #[setting(flatten)]
        server: StreamServerSettings,
        /// The limit per client address.
        #[setting(flatten)]
        per_ip: PerIpSettings,
        /// TLS on every connection: { cert, key, ca (clients must present a certificate signed by it: mutual TLS), verify }
        tls: Option<TlsSettings>,
    }
}

pub(crate) const STREAM_FIELDS: &[(&str, &str)] = &[
    ("message", "the message, without framing, as raw bytes"),
    ("peer", "the sending peer (per connection)"),
    ("received_at", "when the bytes were read"),
    (
        "partial",
        "true on a message cut short by the stop, an error or the idle timeout (absent otherwise)",
    ),
];

/// Settings shared by stream listeners.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamSettings {
    pub(crate) framing: Framing,
    pub(crate) max_connections: usize,
    /// `usize::MAX`: no limit.
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_line_bytes: usize,
    pub(crate) max_buffered_bytes: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) drain_timeout: Duration,
}

impl StreamSettings {
    /// The settings `s` and `per_ip` describe, checked.
    pub(crate) fn new(
        s: &StreamServerSettings,
        per_ip: &PerIpSettings,
    ) -> Result<Self, SettingError> {
        let max_connections = s.connections.max_connections()?;
        let max_line_bytes = s.max_line_bytes;
        if max_line_bytes == 0 || max_line_bytes > LineSplitter::MAX_READ_SIZE {
            return Err(SettingError::new(
                "max_line_bytes",
                "must be within 1 byte..64MiB",
            ));
        }
        let one_conn = max_line_bytes + 1 + READ_SIZE;
        if s.max_buffered_bytes < 2 * one_conn {
            return Err(SettingError::new(
                "max_buffered_bytes",
                format!(
                    "must be at least {} bytes: twice what one connection may hold (max_line_bytes + 128KiB)",
                    2 * one_conn
                ),
            ));
        }
        Ok(StreamSettings {
            framing: s.framing.into(),
            max_connections,
            max_connections_per_ip: per_ip.limit()?,
            max_line_bytes,
            max_buffered_bytes: s.max_buffered_bytes,
            idle_timeout: s.connections.idle_timeout(),
            drain_timeout: s.drain_timeout,
        })
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: TcpInSettings = p.settings()?;
    if let Some(t) = s.tls.as_mut() {
        t.resolve(cx.base_dir);
    }
    Ok(Box::new(
        TcpIn::from_settings(&s).map_err(|e| p.setting_error(e))?,
    ))
}

impl TcpIn {
    /// A listener made from its settings, without a configuration file.
    pub fn from_settings(s: &TcpInSettings) -> Result<Self, SettingError> {
        let addr = server_settings::listen_addr(&s.listen, "127.0.0.1:5140")?;
        let settings = StreamSettings::new(&s.server, &s.per_ip)?;
        Ok(TcpIn {
            addr,
            reuse_port: s.reuse_port,
            server: StreamServer::new("tcp_in", settings),
            tls: tls::server(s.tls.as_ref())?,
        })
    }
}

impl Cog<Record> for TcpIn {
    fn name(&self) -> &str {
        "tcp_in"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let l = if self.reuse_port {
            server_settings::bind_reuse_port(self.addr, true)
                .map(|fd| mio::net::TcpListener::from_std(std::net::TcpListener::from(fd)))
        } else {
            mio::net::TcpListener::bind(self.addr)
        }
        .map_err(|e| format!("tcp_in: cannot listen on {}: {e}", self.addr))?;
        set_backlog(&l);
        if let Ok(a) = l.local_addr() {
            slog::info!(cx.logger(), "tcp_in listening"; "address" => %a, "tls" => self.tls.is_some());
        }
        let l = TcpAcceptor {
            l,
            tls: self.tls.clone(),
        };
        self.server.start(l, cx)?;
        Ok(())
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        self.server.wake(local, &why, out, cx);
    }

    fn pause(&mut self, cx: &mut Ctx) {
        self.server.pause(cx);
    }

    fn resume(&mut self, cx: &mut Ctx) {
        self.server.resume(cx);
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        self.server.finish(out, cx);
    }
}

/// A listening socket whose connections the [`StreamServer`] reads.
pub(crate) trait Acceptor: Source {
    type Conn: io::Read + Source + AsRawFd;
    /// Accepts one connection and names its peer, with the address it counts against
    /// `max_connections_per_ip` (none for local sockets).
    fn accept_one(&self) -> io::Result<(Self::Conn, Value, Option<IpAddr>)>;
}

/// The TCP listener of `tcp_in`, and the TLS its connections speak, if any.
pub(crate) struct TcpAcceptor {
    l: mio::net::TcpListener,
    tls: Option<TlsServer>,
}

impl Source for TcpAcceptor {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.l.register(r, t, i)
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        self.l.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        self.l.deregister(r)
    }
}

impl Acceptor for TcpAcceptor {
    type Conn = Stream<mio::net::TcpStream>;
    fn accept_one(&self) -> io::Result<(Self::Conn, Value, Option<IpAddr>)> {
        let (s, a) = self.l.accept()?;
        Ok((
            Stream::accepted(s, self.tls.as_ref())?,
            Value::Shared(a.to_string().into()),
            Some(ip_group(a.ip())),
        ))
    }
}

/// The address a connection counts against: IPv4 as it is, IPv6 by its /64 (a host
/// usually holds a whole /64, so counting single addresses would limit nothing).
pub(crate) fn ip_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & !0u128 << 64)),
        },
    }
}

struct Conn<S> {
    sock: S,
    peer: Value,
    ip: Option<IpAddr>,
    deframer: Deframer,
    last_active: Instant,
    /// Readiness not yet acted upon (paused, or the turn's share used up).
    ready: bool,
    /// Buffer bytes counted in `StreamServer::buffered` for this connection.
    held: usize,
}

/// Why a connection is closed: the sender closed it, or we do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// End of stream: a held unterminated line is the sender's last word.
    Eof,
    /// The stop, an error or the idle timeout: a held message is cut short.
    Ours,
}

/// Bytes received by the kernel and not read yet.
pub(crate) fn unread_bytes(fd: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer given.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &raw mut n) };
    if rc == 0 { n.max(0) as usize } else { 0 }
}

/// Tells the peer we send nothing more (FIN), keeping the reading side open.
fn shutdown_write(fd: &impl AsRawFd) {
    // SAFETY: shutdown on a descriptor we own; failure (already shut, reset) is harmless.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
}

/// Accepts connections and reads them into records; see [`TcpIn`] for the behaviour.
pub(crate) struct StreamServer<L: Acceptor> {
    name: &'static str,
    settings: StreamSettings,
    listener: Option<L>,
    listener_ready: bool,
    conns: Vec<Option<Conn<L::Conn>>>,
    free: Vec<usize>,
    live: usize,
    paused: bool,
    refused: u64,
    /// Warnings about refused and evicted connections, at a bounded rate.
    limits_log: LogLimiter,
    /// Open connections per address group (see `ip_group`).
    per_ip: HashMap<IpAddr, usize>,
    /// Buffer bytes of all connections, as last counted.
    buffered: usize,
    /// Buffer bytes given back since the last `trim_heap`.
    released: usize,
    over_limit: u64,
    /// Warnings about connections closed at `max_buffered_bytes`, at a bounded rate.
    over_limit_log: LogLimiter,
    evicted: u64,
    /// Set while draining at a stop: the deadline.
    draining: Option<Instant>,
    /// Messages cut short by our side, and bytes left unread at a stop's deadline.
    cut_short: u64,
    left_unread: u64,
}

impl<L: Acceptor> std::fmt::Debug for StreamServer<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamServer")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("live", &self.live)
            .field("paused", &self.paused)
            .finish()
    }
}

fn conn_local(i: usize) -> Local {
    FIRST_CONN + i as Local
}

/// Adds `peer` and `received_at` to a line record just emitted, where it lies.
#[inline]
fn add_peer_fields(r: &mut Record, peer: &Value, ts: Timestamp) {
    r.fields.append_slot(peer_key()).set(peer.clone());
    r.fields.append_slot(received_at_key()).set(Value::Time(ts));
}

impl<L: Acceptor> StreamServer<L> {
    pub(crate) fn new(name: &'static str, settings: StreamSettings) -> Self {
        StreamServer {
            name,
            settings,
            listener: None,
            listener_ready: false,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            paused: false,
            refused: 0,
            limits_log: LogLimiter::default(),
            per_ip: HashMap::new(),
            buffered: 0,
            released: 0,
            over_limit: 0,
            over_limit_log: LogLimiter::default(),
            evicted: 0,
            draining: None,
            cut_short: 0,
            left_unread: 0,
        }
    }

    pub(crate) fn start(&mut self, mut listener: L, cx: &mut Ctx) -> io::Result<()> {
        cx.register(&mut listener, LISTENER, Interest::READABLE)?;
        self.listener = Some(listener);
        // A quarter of the idle timeout (a silent connection goes at most 25% late), and at
        // least every second for buffers to give back.
        let period = match self.settings.idle_timeout {
            Some(idle) => (idle / 4).clamp(Duration::from_millis(10), SHRINK_AFTER),
            None => SHRINK_AFTER,
        };
        cx.timer_every(period, SWEEP)?;
        Ok(())
    }

    pub(crate) fn wake(
        &mut self,
        local: Local,
        why: &Wake<'_>,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) {
        if local == SWEEP {
            if matches!(why, Wake::Timer(_)) {
                self.sweep(out, cx);
            }
            return;
        }
        if local == DRAIN {
            self.drain_tick(out, cx);
            return;
        }
        if local == LISTENER {
            if self.paused {
                self.listener_ready = true;
            } else {
                self.accept_some(out, cx);
            }
            return;
        }
        let i = (local - FIRST_CONN) as usize;
        if self.paused {
            if let Some(Some(c)) = self.conns.get_mut(i) {
                c.ready = true;
            }
            return;
        }
        self.read_conn(i, out, cx);
    }

    fn accept_some(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept_one() {
                Ok((sock, peer, ip)) => self.admit(sock, peer, ip, out, cx),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of descriptors or memory: the pending connections stay in the
                    // backlog; look again a little later.
                    slog::error!(cx.logger(), "accepting a connection failed; retrying soon";
                        "cog" => self.name, "error" => %e);
                    out.count_errors(1);
                    let _ = cx.timer_after(ACCEPT_RETRY, LISTENER);
                    return;
                }
            }
        }
        self.listener_ready = true;
        cx.enqueue(LISTENER);
    }

    /// The longest-idle connection (from `ip` if given) that can go: quiet for at least
    /// [`EVICT_MIN_IDLE`], no readiness pending and nothing unread in its kernel (its
    /// readable event may come after the listener's in the same poll batch; closing it
    /// would reset it and lose those bytes and what its sender still queues). Only called
    /// when a limit is reached, so the `FIONREAD`s cost nothing in normal operation.
    fn longest_idle(&self, ip: Option<IpAddr>, now: Instant) -> Option<usize> {
        let mut candidates: Vec<(Instant, usize)> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                let eligible = !c.ready
                    && (ip.is_none() || c.ip == ip)
                    && now.saturating_duration_since(c.last_active) >= EVICT_MIN_IDLE;
                eligible.then_some((c.last_active, i))
            })
            .collect();
        candidates.sort_unstable();
        candidates.into_iter().map(|(_, i)| i).find(|&i| {
            self.conns
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|c| unread_bytes(&c.sock) == 0)
        })
    }

    /// Makes room for a connection from `ip` by closing the longest-idle one, if a limit
    /// is reached; false if none can go (every one is busy or was active just now).
    fn make_room(
        &mut self,
        ip: Option<IpAddr>,
        peer: &Value,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) -> bool {
        let from_ip = ip.and_then(|ip| self.per_ip.get(&ip).copied()).unwrap_or(0);
        let scope = if from_ip >= self.settings.max_connections_per_ip {
            ip
        } else if self.live >= self.settings.max_connections {
            None
        } else {
            return true;
        };
        let now = cx.now();
        let Some(victim) = self.longest_idle(scope, now) else {
            return false;
        };
        self.evicted += 1;
        out.count_errors(1);
        // At a bounded rate: a client hammering the port must not flood the log.
        if self.limits_log.allow("connection limits", self.name, cx) {
            let (limit, value) = match scope {
                Some(_) => (
                    "max_connections_per_ip",
                    self.settings.max_connections_per_ip,
                ),
                None => ("max_connections", self.settings.max_connections),
            };
            if let Some(Some(c)) = self.conns.get(victim) {
                slog::warn!(cx.logger(), "connection limit reached; closed the longest-idle connection for a new one";
                    "cog" => self.name, "limit" => limit, "value" => value,
                    "closed" => c.peer.as_str().unwrap_or(""),
                    "idle_ms" => now.saturating_duration_since(c.last_active).as_millis() as u64,
                    "new" => peer.as_str().unwrap_or(""), "closed_so_far" => self.evicted);
            }
        }
        self.close(victim, Closing::Ours, out, cx);
        true
    }

    fn admit(
        &mut self,
        mut sock: L::Conn,
        peer: Value,
        ip: Option<IpAddr>,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) {
        if !self.make_room(ip, &peer, out, cx) {
            drop(sock);
            self.refused += 1;
            out.count_errors(1);
            // At a bounded rate: a client hammering the port must not flood the log.
            if self.limits_log.allow("connection limits", self.name, cx) {
                slog::warn!(cx.logger(), "connection limit reached and every connection busy or active within a second; new connection closed";
                    "cog" => self.name, "peer" => peer.as_str().unwrap_or(""),
                    "max_connections" => self.settings.max_connections,
                    "refused_so_far" => self.refused);
            }
            return;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = cx.register(&mut sock, conn_local(i), Interest::READABLE) {
            slog::error!(cx.logger(), "cannot watch a new connection; closing it";
                "cog" => self.name, "error" => %e);
            out.count_errors(1);
            self.free.push(i);
            return;
        }
        let s = &self.settings;
        if let Some(ip) = ip {
            *self.per_ip.entry(ip).or_insert(0) += 1;
        }
        self.conns[i] = Some(Conn {
            sock,
            peer,
            ip,
            deframer: Deframer::new(s.framing, s.max_line_bytes, READ_SIZE),
            last_active: cx.now(),
            ready: false,
            held: 0,
        });
        self.live += 1;
    }

    /// A turn of reading, then the buffer accounting: under pressure the connection gives
    /// back its read space, past the limit the largest holders are closed.
    fn read_conn(&mut self, i: usize, out: &mut Out<Record>, cx: &mut Ctx) {
        if !self.read_turn(i, out, cx) {
            return;
        }
        let limit = self.settings.max_buffered_bytes;
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        let mut now_held = c.deframer.buffer_bytes();
        let others = self.buffered - c.held;
        if others + now_held > limit / 2 {
            c.deframer.shrink();
            let shrunk = c.deframer.buffer_bytes();
            self.released += now_held.saturating_sub(shrunk);
            now_held = shrunk;
        }
        c.held = now_held;
        self.buffered = others + now_held;
        if self.buffered > limit {
            self.enforce_limit(out, cx);
        }
    }

    /// Past `max_buffered_bytes`: every connection gives back its read space, then the
    /// connections holding the largest partial messages are closed until under it.
    #[cold]
    fn enforce_limit(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        for c in self.conns.iter_mut().flatten() {
            if c.held <= c.deframer.pending_len() {
                // Holds no read space (shrunk before, unchanged since).
                continue;
            }
            c.deframer.shrink();
            let now_held = c.deframer.buffer_bytes();
            self.released += c.held.saturating_sub(now_held);
            self.buffered = self.buffered - c.held + now_held;
            c.held = now_held;
        }
        let limit = self.settings.max_buffered_bytes;
        while self.buffered > limit {
            let Some((i, held)) = self
                .conns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().map(|c| (i, c.deframer.pending_len())))
                .max_by_key(|&(_, n)| n)
            else {
                break;
            };
            self.over_limit += 1;
            if self
                .over_limit_log
                .allow("connections closed at max_buffered_bytes", self.name, cx)
                && let Some(Some(c)) = self.conns.get(i)
            {
                slog::warn!(cx.logger(), "max_buffered_bytes reached; closed the connection holding the largest partial message";
                    "cog" => self.name, "peer" => c.peer.as_str().unwrap_or(""),
                    "held_bytes" => held, "buffered_bytes" => self.buffered,
                    "max_buffered_bytes" => limit, "closed_so_far" => self.over_limit);
            }
            // Counted as an error through the partial message it held.
            self.close(i, Closing::Ours, out, cx);
        }
    }

    /// Reads a turn's share of connection `i`; false if it was closed.
    fn read_turn(&mut self, i: usize, out: &mut Out<Record>, cx: &mut Ctx) -> bool {
        let name = self.name;
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return false;
        };
        for _ in 0..READS_PER_TURN {
            match c.deframer.read_from(&mut c.sock) {
                Ok(0) => {
                    self.close(i, Closing::Eof, out, cx);
                    return false;
                }
                Ok(_) => {
                    c.last_active = cx.now();
                    let ts = Timestamp::now();
                    let peer = &c.peer;
                    let res = with_line_emitter(|em| {
                        c.deframer.for_each_message(|bytes, info| {
                            let r = em.emit(bytes, &info, 2, out, cx);
                            add_peer_fields(r, peer, ts);
                        })
                    });
                    if let Err(e) = res {
                        out.count_errors(1);
                        if e.recovered {
                            slog::warn!(cx.logger(), "bad framing; reading the rest of the connection as lines";
                                "cog" => name, "peer" => peer.as_str().unwrap_or(""), "error" => %e);
                            continue;
                        }
                        slog::warn!(cx.logger(), "bad framing; closing the connection";
                            "cog" => name, "peer" => peer.as_str().unwrap_or(""), "error" => %e);
                        self.close(i, Closing::Ours, out, cx);
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.ready = false;
                    return true;
                }
                Err(e) if tls::is_tls_error(&e) => {
                    slog::warn!(cx.logger(), "TLS failed; closing the connection";
                        "cog" => name, "peer" => c.peer.as_str().unwrap_or(""), "error" => %e);
                    out.count_errors(1);
                    self.close(i, Closing::Ours, out, cx);
                    return false;
                }
                Err(e) => {
                    slog::warn!(cx.logger(), "reading a connection failed; closing it";
                        "cog" => name, "peer" => c.peer.as_str().unwrap_or(""), "error" => %e);
                    out.count_errors(1);
                    self.close(i, Closing::Ours, out, cx);
                    return false;
                }
            }
        }
        // More may be waiting and edge-triggered readiness will not say so again.
        c.ready = true;
        cx.enqueue(conn_local(i));
        true
    }

    /// Emits what the connection holds and closes it. A message cut short is flagged
    /// `partial` (always when we close, at end of stream inside an octet-counted frame).
    fn close(&mut self, i: usize, why: Closing, out: &mut Out<Record>, cx: &mut Ctx) {
        let Some(Some(mut c)) = self.conns.get_mut(i).map(Option::take) else {
            return;
        };
        let _ = cx.deregister(&mut c.sock);
        cx.dequeue(conn_local(i));
        let unread = if why == Closing::Ours {
            unread_bytes(&c.sock)
        } else {
            0
        };
        let ts = Timestamp::now();
        let peer = &c.peer;
        let mut partial = 0;
        let flag = why == Closing::Ours || c.deframer.framing() == Framing::OctetCounting;
        let (_, cut) = with_line_emitter(|em| {
            c.deframer.finish(|bytes, info| {
                let r = em.emit(bytes, &info, 3, out, cx);
                add_peer_fields(r, peer, ts);
                if info.unterminated && flag {
                    r.fields
                        .append_slot(crate::kit::supply::partial_key())
                        .set(Value::Bool(true));
                    partial += 1;
                }
            })
        });
        if cut {
            out.count_errors(1);
            slog::warn!(cx.logger(), "connection closed inside an octet-counted frame; kept what arrived, flagged partial";
                "cog" => self.name, "peer" => peer.as_str().unwrap_or(""));
        } else if partial > 0 {
            out.count_errors(partial);
            self.cut_short += partial;
        }
        if unread > 0 {
            // Closing with unread bytes resets the connection: they are lost, and so is
            // what the sender's kernel still queued.
            out.count_errors(1);
            self.left_unread += unread as u64;
            slog::warn!(cx.logger(), "connection closed with bytes its kernel received unread";
                "cog" => self.name, "peer" => peer.as_str().unwrap_or(""), "bytes" => unread);
        }
        self.buffered -= c.held;
        self.released += c.deframer.buffer_bytes();
        drop(c.deframer);
        if let Some(ip) = c.ip
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        self.free.push(i);
        self.live -= 1;
    }

    /// Closes idle connections, takes back the read space of silent ones, and returns
    /// memory given back to the system.
    fn sweep(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        let now = cx.now();
        let idle = self.settings.idle_timeout;
        for i in 0..self.conns.len() {
            let Some(Some(c)) = self.conns.get_mut(i) else {
                continue;
            };
            let quiet_for = now.saturating_duration_since(c.last_active);
            if quiet_for >= SHRINK_AFTER && !c.ready && c.held > c.deframer.pending_len() {
                c.deframer.shrink();
                let now_held = c.deframer.buffer_bytes();
                self.released += c.held.saturating_sub(now_held);
                self.buffered = self.buffered - c.held + now_held;
                c.held = now_held;
            }
            let silent = idle.is_some_and(|idle| quiet_for >= idle && !c.ready);
            if silent {
                if let Some(Some(c)) = self.conns.get(i) {
                    slog::info!(cx.logger(), "idle connection closed";
                        "cog" => self.name, "peer" => c.peer.as_str().unwrap_or(""));
                }
                self.close(i, Closing::Ours, out, cx);
            }
        }
        if self.released >= TRIM_AFTER_BYTES {
            self.released = 0;
            trim_heap();
        }
    }

    pub(crate) fn pause(&mut self, cx: &mut Ctx) {
        self.paused = true;
        cx.dequeue(LISTENER);
        for (i, c) in self.conns.iter_mut().enumerate() {
            if let Some(c) = c {
                // A queued turn of this connection is now owed to it after the pause.
                c.ready = true;
                cx.dequeue(conn_local(i));
            }
        }
    }

    pub(crate) fn resume(&mut self, cx: &mut Ctx) {
        self.paused = false;
        // Readiness that arrived while paused was not acted on: look again.
        if self.listener_ready {
            cx.enqueue(LISTENER);
        }
        for (i, c) in self.conns.iter_mut().enumerate() {
            if let Some(c) = c
                && c.ready
            {
                c.last_active = cx.now();
                cx.enqueue(conn_local(i));
            }
        }
    }

    /// Stops accepting and drains the connections (see [`TcpIn`]): lingers until each has
    /// been read to its end, quiet or the deadline, then closes them.
    pub(crate) fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        let drain = self.settings.drain_timeout;
        if !drain.is_zero() {
            // Lingering first: accepting and reading on need bindings.
            cx.linger();
            // Connections in the backlog were acknowledged by our kernel, and so may be
            // bytes sent on them: take them in before the listener closes.
            for _ in 0..BACKLOG_AT_STOP {
                let Some(l) = self.listener.as_ref() else {
                    break;
                };
                match l.accept_one() {
                    Ok((sock, peer, ip)) => self.admit(sock, peer, ip, out, cx),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        if let Some(mut l) = self.listener.take() {
            let _ = cx.deregister(&mut l);
        }
        let now = cx.now();
        if drain.is_zero() || self.live == 0 || cx.timer_every(DRAIN_TICK, DRAIN).is_err() {
            for i in 0..self.conns.len() {
                self.close(i, Closing::Ours, out, cx);
            }
            return self.finished(cx);
        }
        self.draining = Some(now + drain);
        // Backpressure no longer applies: what the kernel holds is read now or lost.
        self.paused = false;
        self.listener_ready = false;
        for (i, c) in self.conns.iter_mut().enumerate() {
            if let Some(c) = c {
                shutdown_write(&c.sock);
                c.last_active = now;
                c.ready = true;
                cx.enqueue(conn_local(i));
            }
        }
        slog::info!(cx.logger(), "stopping: reading what connections hold";
            "cog" => self.name, "connections" => self.live,
            "drain_timeout" => ?drain);
    }

    /// While draining: closes the connections that went quiet; at the deadline, reads each
    /// one last time and closes them all.
    fn drain_tick(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        let Some(deadline) = self.draining else {
            return;
        };
        let now = cx.now();
        let over = now >= deadline;
        let quiet = |c: &Option<Conn<L::Conn>>| match c {
            Some(c) => {
                over || (!c.ready && now.saturating_duration_since(c.last_active) >= DRAIN_QUIET)
            }
            None => false,
        };
        for i in 0..self.conns.len() {
            if quiet(&self.conns[i]) {
                // Whatever came since the last turn, then the end (unless it brought more).
                self.read_conn(i, out, cx);
                if quiet(&self.conns[i]) {
                    self.close(i, Closing::Ours, out, cx);
                }
            }
        }
        if self.live == 0 {
            self.finished(cx);
        }
    }

    /// The end of a stop: what was lost is logged, the finish completed.
    fn finished(&mut self, cx: &mut Ctx) {
        self.draining = None;
        if self.refused > 0 || self.evicted > 0 {
            slog::warn!(cx.logger(), "connection limits: new connections refused, idle ones closed for new ones";
                "cog" => self.name, "refused" => self.refused, "idle_closed" => self.evicted);
        }
        if self.cut_short > 0 || self.left_unread > 0 {
            slog::warn!(cx.logger(), "stopped: messages cut short (flagged partial), bytes left unread";
                "cog" => self.name, "partial" => self.cut_short, "unread_bytes" => self.left_unread);
        }
        cx.finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_grouped_ipv6_by_64() {
        let g = |s: &str| ip_group(s.parse().unwrap()).to_string();
        assert_eq!(g("192.0.2.7"), "192.0.2.7");
        assert_eq!(g("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(g("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(g("2001:db8:1:2::1"), g("2001:db8:1:2:ffff::9"));
        assert_ne!(g("2001:db8:1:2::1"), g("2001:db8:1:3::1"));
    }
}
