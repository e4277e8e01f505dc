//! `udp_in`: one record per UDP datagram (syslog over UDP, and any datagram protocol).

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mio::net::UdpSocket;

use crate::kit::supply::{PauseGate, message_key, truncated_key};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Key, Record, Timestamp, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

const SOCKET: Local = 0;
const DROP_CHECK: Local = 1;

/// Datagrams asked for per `recvmmsg` call.
const BATCH: usize = 32;
/// `recvmmsg` calls per wake before other events get a turn (fairness); more is read in
/// the next turn.
const CALLS_PER_TURN: usize = 16;
/// Peers whose rendered address is kept, so a busy sender costs no formatting.
const PEER_CACHE: usize = 8;
/// How often the kernel's drop counter is read from `/proc` when no datagram brought it.
const DROP_CHECK_PERIOD: Duration = Duration::from_secs(2);
/// Truncated datagrams logged per drop-check period; the rest are only counted.
const TRUNCATED_LOGS: u32 = 10;
/// Room for one `SO_RXQ_OVFL` control message (a `u32`) per datagram, 8-byte aligned.
const CMSG_SPACE: usize = 32;

fn peer_key() -> Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    *KEY.get_or_init(|| Key::new("peer"))
}

fn received_at_key() -> Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    *KEY.get_or_init(|| Key::new("received_at"))
}

/// Receives UDP datagrams; each becomes one record.
///
/// One datagram is one message: a single trailing newline (`\n` or `\r\n`) is removed,
/// nothing else is split or joined. Datagrams longer than `max_message_bytes` are cut,
/// flagged `truncated = true`, counted as errors of the cog and logged (the first few per
/// period). Fields: `message` (raw bytes), `peer` (`"ip:port"` of the sender),
/// `received_at` (when the batch holding it was read).
///
/// Datagrams are read in batches with `recvmmsg(2)` until the socket is empty, at most a
/// bounded number of batches per turn so that other sources get their turn. At a stop,
/// what the socket holds is read before it closes (backpressure notwithstanding; at most
/// 65,536 datagrams or one second, so a flood cannot hold the stop back).
///
/// **Losses.** UDP has no flow control: when the socket's receive buffer is full the
/// kernel drops datagrams. Those drops are counted: the socket has `SO_RXQ_OVFL` set, so
/// every datagram carries the kernel's drop counter for the socket, and the `drops` column
/// of `/proc/net/udp` (or `udp6`) for the socket's inode is read every two seconds and at
/// shutdown to catch drops after the last datagram. New drops show at once as `dropped` in
/// this cog's counters (`SIGUSR1` and the final counters show them) and are logged as one
/// warning per two seconds at most. Under backpressure (a drain pauses the
/// supplies) nothing is read, so the receive buffer fills and the kernel drops: those
/// losses are counted the same way. Raise `recv_buffer` to ride out bursts; the kernel caps
/// it at `net.core.rmem_max` unless the daemon may use `SO_RCVBUFFORCE` (root,
/// `CAP_NET_ADMIN`). The size granted is logged at start, as the kernel reports it: twice
/// the request, the kernel counting its bookkeeping.
///
/// ```toml
/// [[train.cog]]
/// type = "udp_in"
/// listen = "127.0.0.1:5514"     # or "[::]:514"
/// reuse_port = false            # true: share the port with other processes (one per core)
/// recv_buffer = "4MiB"          # SO_RCVBUF; default: the system's
/// max_message_bytes = "64KiB"   # longer datagrams are cut, flagged and counted
/// ```
///
/// From Rust: `UdpIn::from_settings(&UdpInSettings { listen: "127.0.0.1:5514".into(),
/// ..Default::default() })`.
pub struct UdpIn {
    listen: SocketAddr,
    reuse_port: bool,
    recv_buffer: Option<usize>,
    max: usize,
    socket: Option<UdpSocket>,
    gate: PauseGate,
    bufs: RecvBuffers,
    peers: PeerCache,
    /// Highest value of the kernel's drop counter seen, and how much of it is counted.
    kernel_drops: u32,
    counted_drops: u32,
    unlogged_drops: u64,
    /// A datagram arrived since the last drop check (so `SO_RXQ_OVFL` was current).
    fresh: bool,
    inode: Option<u64>,
    truncated_logged: u32,
}

/// The descriptor of `udp_in`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "udp_in",
    kind: CogKind::Supply,
    summary: "one record per UDP datagram; kernel drops are counted",
    params: UdpInSettings::PARAMS,
    fields: &[
        (
            "message",
            "the datagram, without one trailing newline, as raw bytes",
        ),
        ("peer", "the sender as \"ip:port\""),
        ("received_at", "when the datagram was read"),
        (
            "truncated",
            "true when the datagram was cut at max_message_bytes",
        ),
    ],
    build,
};

crate::settings! {
    /// Settings of `udp_in`.
    pub struct UdpInSettings {
        /// address and port to bind, e.g. `"127.0.0.1:5514"` or `"[::]:514"`
        #[setting(required)]
        listen: String,
        /// SO_REUSEPORT: several processes bind the same port, the kernel spreads the datagrams over them by sender (one process per core)
        reuse_port: bool = "false",
        /// SO_RCVBUF size, e.g. "4MiB"; capped by net.core.rmem_max, the granted size is logged
        #[setting(size)]
        recv_buffer: Option<usize>,
        /// longer datagrams are cut, flagged `truncated` and counted
        #[setting(size)]
        max_message_bytes: usize = "64KiB",
    }
}

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: UdpInSettings = p.settings()?;
    Ok(Box::new(
        UdpIn::from_settings(&s).map_err(|e| p.setting_error(e))?,
    ))
}

/// The `recvmmsg` buffers: one slot of `max + 1` bytes per datagram (the extra byte tells a
/// datagram of exactly `max` bytes from a longer one without relying on `MSG_TRUNC`), with
/// its address and control buffer.
struct RecvBuffers {
    slot: usize,
    data: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; CMSG_SPACE / 8]>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl RecvBuffers {
    fn new(max: usize) -> Self {
        let slot = max + 1;
        // SAFETY: sockaddr_storage and mmsghdr are plain C structs for which all-zero
        // bytes are a valid value.
        let zero_name = unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() };
        // SAFETY: as above, all-zero bytes are a valid mmsghdr.
        let zero_hdr = unsafe { MaybeUninit::<libc::mmsghdr>::zeroed().assume_init() };
        RecvBuffers {
            slot,
            // Zeroed large allocations come from fresh pages: untouched slots cost no memory.
            data: vec![0; slot * BATCH],
            names: vec![zero_name; BATCH],
            controls: vec![[0; CMSG_SPACE / 8]; BATCH],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            headers: vec![zero_hdr; BATCH],
        }
    }

    /// Receives up to [`BATCH`] datagrams without blocking; the count, or `WouldBlock`.
    fn recv(&mut self, fd: i32) -> io::Result<usize> {
        // The pointers are rebuilt on every call: the vectors never move between the
        // setup and the system call, and stale lengths from the last call are reset.
        let base = self.data.as_mut_ptr();
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                // SAFETY: slot i lies inside `data`, which holds BATCH slots.
                iov_base: unsafe { base.add(i * self.slot) }.cast(),
                iov_len: self.slot,
            };
            let h = &mut self.headers[i];
            h.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = &raw mut self.iovecs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CMSG_SPACE as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        loop {
            // SAFETY: every header points into buffers owned by self that outlive the call.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.headers.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Datagram `i` of the last batch: its bytes (at most `slot`), whether it was cut,
    /// its sender and the kernel's drop counter it carried.
    fn datagram(&self, i: usize) -> (&[u8], bool, Option<SocketAddr>, Option<u32>) {
        let h = &self.headers[i];
        let len = (h.msg_len as usize).min(self.slot);
        let start = i * self.slot;
        let cut = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len >= self.slot;
        let bytes = &self.data[start..start + len];
        let peer = sockaddr_to_std(&self.names[i], h.msg_hdr.msg_namelen);
        let drops = rxq_ovfl(&h.msg_hdr);
        (bytes, cut, peer, drops)
    }
}

/// The `SO_RXQ_OVFL` counter in a received message's control data, if present.
fn rxq_ovfl(m: &libc::msghdr) -> Option<u32> {
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // msg_controllen; the value is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                return Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>()));
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
    None
}

fn sockaddr_to_std(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match s.ss_family as i32 {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// The last few senders with their rendered addresses.
struct PeerCache {
    entries: Vec<(SocketAddr, Arc<str>)>,
    next: usize,
    unknown: Arc<str>,
}

impl PeerCache {
    fn new() -> Self {
        PeerCache {
            entries: Vec::with_capacity(PEER_CACHE),
            next: 0,
            unknown: Arc::from(""),
        }
    }

    fn get(&mut self, peer: Option<SocketAddr>) -> Arc<str> {
        let Some(peer) = peer else {
            return Arc::clone(&self.unknown);
        };
        if let Some((_, s)) = self.entries.iter().find(|(a, _)| *a == peer) {
            return Arc::clone(s);
        }
        // Mapped IPv4 senders on a dual-stack socket read better in their IPv4 form.
        let shown = match peer {
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
                None => peer,
            },
            v4 => v4,
        };
        let s: Arc<str> = Arc::from(shown.to_string());
        if self.entries.len() < PEER_CACHE {
            self.entries.push((peer, Arc::clone(&s)));
        } else {
            self.entries[self.next] = (peer, Arc::clone(&s));
            self.next = (self.next + 1) % PEER_CACHE;
        }
        s
    }
}

fn set_int_opt(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_int_opt(fd: i32, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: getsockopt into a live int with its size.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The inode of a socket descriptor, to find it in `/proc/net/udp`.
fn socket_inode(fd: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|m| m.ino())
}

/// The `drops` column of the socket with `inode` in `/proc/net/udp` or `udp6`.
///
/// Lines read `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops`.
fn proc_drops(inode: u64, v6: bool) -> Option<u32> {
    let path = if v6 {
        "/proc/net/udp6"
    } else {
        "/proc/net/udp"
    };
    let text = std::fs::read_to_string(path).ok()?;
    let want = inode.to_string();
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.get(9) == Some(&want.as_str()) {
            cols.get(12)?.parse().ok()
        } else {
            None
        }
    })
}

fn strip_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

impl UdpIn {
    /// A listener made from its settings, without a configuration file.
    pub fn from_settings(s: &UdpInSettings) -> Result<Self, SettingError> {
        let listen: SocketAddr = s.listen.parse().map_err(|_| {
            SettingError::new(
                "listen",
                format!(
                    "expected IP:PORT (e.g. \"127.0.0.1:5514\" or \"[::]:514\"), found {:?}",
                    s.listen
                ),
            )
        })?;
        if s.recv_buffer
            .is_some_and(|n| n == 0 || n > i32::MAX as usize)
        {
            return Err(SettingError::new(
                "recv_buffer",
                "must be between 1 byte and 2GiB",
            ));
        }
        let max = s.max_message_bytes;
        if max == 0 || max > 1 << 24 {
            return Err(SettingError::new(
                "max_message_bytes",
                "must be between 1 byte and 16MiB",
            ));
        }
        let mut cog = UdpIn::listening(listen, max);
        cog.recv_buffer = s.recv_buffer;
        cog.reuse_port = s.reuse_port;
        Ok(cog)
    }

    /// Listens on `listen`, cutting datagrams at `max_message_bytes`.
    fn listening(listen: SocketAddr, max_message_bytes: usize) -> Self {
        UdpIn {
            listen,
            reuse_port: false,
            recv_buffer: None,
            max: max_message_bytes,
            socket: None,
            gate: PauseGate::new(SOCKET),
            bufs: RecvBuffers::new(max_message_bytes),
            peers: PeerCache::new(),
            kernel_drops: 0,
            counted_drops: 0,
            unlogged_drops: 0,
            fresh: false,
            inode: None,
            truncated_logged: 0,
        }
    }

    /// The address actually bound (the port the kernel chose for port 0), once started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Reads up to `calls` batches; true when the socket may hold more.
    fn read(&mut self, calls: usize, out: &mut Out<Record>, cx: &mut Ctx) -> bool {
        let Some(fd) = self.socket.as_ref().map(|s| s.as_raw_fd()) else {
            return false;
        };
        for _ in 0..calls {
            let n = match self.bufs.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    // ICMP errors and the like concern one earlier exchange, not the socket:
                    // count, log and keep listening.
                    out.count_errors(1);
                    slog::warn!(cx.logger(), "receiving UDP datagrams failed"; "error" => %e);
                    return false;
                }
            };
            if n == 0 {
                return false;
            }
            self.emit(n, out, cx);
            if n < BATCH {
                return false;
            }
        }
        true
    }

    fn emit(&mut self, n: usize, out: &mut Out<Record>, cx: &mut Ctx) {
        let now = Value::Time(Timestamp::now());
        for i in 0..n {
            let (bytes, cut, peer, drops) = self.bufs.datagram(i);
            if let Some(d) = drops {
                self.kernel_drops = self.kernel_drops.max(d);
            }
            let bytes = if cut {
                &bytes[..bytes.len().min(self.max)]
            } else {
                strip_newline(bytes)
            };
            let mut r = Record::with_capacity(3 + cut as usize);
            r.id = cx.new_event_id();
            r.insert(message_key(), Value::Bytes(bytes.to_vec()));
            let peer_text = self.peers.get(peer);
            r.insert(peer_key(), Value::Shared(Arc::clone(&peer_text).into()));
            r.insert(received_at_key(), now.clone());
            if cut {
                r.insert(truncated_key(), Value::Bool(true));
                out.count_errors(1);
                if self.truncated_logged < TRUNCATED_LOGS {
                    self.truncated_logged += 1;
                    slog::warn!(cx.logger(), "datagram longer than max_message_bytes cut";
                        "event" => r.id, "peer" => &*peer_text, "kept_bytes" => self.max);
                }
            }
            out.push(r);
        }
        self.fresh = true;
        self.count_drops(out);
    }

    /// Counts kernel drops not counted yet.
    fn count_drops(&mut self, out: &mut Out<Record>) {
        // The counter is a wrapping u32 in the kernel.
        let new = self.kernel_drops.wrapping_sub(self.counted_drops);
        if new > 0 && new < u32::MAX / 2 {
            out.count_dropped(u64::from(new));
            self.unlogged_drops += u64::from(new);
            self.counted_drops = self.kernel_drops;
        }
    }

    /// Logs drops counted since the last report: once per period, not per batch, so an
    /// overloaded listener does not also flood the log.
    fn log_drops(&mut self, cx: &mut Ctx) {
        let n = std::mem::take(&mut self.unlogged_drops);
        if n > 0 {
            slog::warn!(cx.logger(), "the kernel dropped UDP datagrams (receive buffer full)";
                "listen" => %self.listen, "dropped" => n, "total" => self.kernel_drops);
        }
    }

    /// Reads the drop counter from `/proc` (drops after the last datagram carry no
    /// `SO_RXQ_OVFL` yet).
    fn check_proc_drops(&mut self, out: &mut Out<Record>) {
        if let Some(inode) = self.inode
            && let Some(d) = proc_drops(inode, self.listen.is_ipv6())
            && d.wrapping_sub(self.kernel_drops) < u32::MAX / 2
        {
            self.kernel_drops = d;
        }
        self.count_drops(out);
    }

    fn open(&mut self, cx: &mut Ctx) -> io::Result<()> {
        let socket = if self.reuse_port {
            let fd = super::server_settings::bind_reuse_port(self.listen, false)?;
            UdpSocket::from_std(std::net::UdpSocket::from(fd))
        } else {
            UdpSocket::bind(self.listen)?
        };
        let fd = socket.as_raw_fd();
        if let Some(want) = self.recv_buffer {
            let want_i = i32::try_from(want).unwrap_or(i32::MAX);
            set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, want_i)?;
            // The kernel doubles the request for its bookkeeping and caps it at rmem_max.
            let granted = get_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
            if (granted as usize) < want {
                // Privileged processes may exceed rmem_max; others keep what they got.
                if set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want_i).is_ok() {
                    let forced = get_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
                    slog::info!(cx.logger(), "udp_in receive buffer"; "listen" => %self.listen,
                        "requested" => want, "granted" => forced);
                } else {
                    slog::warn!(cx.logger(), "udp_in receive buffer capped by net.core.rmem_max";
                        "listen" => %self.listen, "requested" => want, "granted" => granted);
                }
            } else {
                slog::info!(cx.logger(), "udp_in receive buffer"; "listen" => %self.listen,
                    "requested" => want, "granted" => granted);
            }
        }
        if let Err(e) = set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1) {
            slog::warn!(cx.logger(), "SO_RXQ_OVFL refused; drops are read from /proc only"; "error" => %e);
        }
        self.inode = socket_inode(fd);
        let mut socket = socket;
        cx.register(&mut socket, SOCKET, Interest::READABLE)?;
        slog::info!(cx.logger(), "udp_in listening"; "listen" => %socket.local_addr()?);
        self.socket = Some(socket);
        Ok(())
    }

    fn close(&mut self, cx: &mut Ctx) {
        if let Some(mut s) = self.socket.take() {
            let _ = cx.deregister(&mut s);
        }
    }
}

impl Cog<Record> for UdpIn {
    fn name(&self) -> &str {
        "udp_in"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.open(cx)
            .map_err(|e| format!("udp_in {}: {e}", self.listen))?;
        cx.timer_every(DROP_CHECK_PERIOD, DROP_CHECK)?;
        // Datagrams may have queued between bind and registration.
        cx.enqueue(SOCKET);
        Ok(())
    }

    fn wake(&mut self, local: Local, _: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        match local {
            DROP_CHECK => {
                self.truncated_logged = 0;
                if !std::mem::take(&mut self.fresh) {
                    self.check_proc_drops(out);
                }
                self.log_drops(cx);
            }
            _ if !self.gate.is_open() => {}
            _ => {
                if self.read(CALLS_PER_TURN, out, cx) {
                    // Edge-triggered readiness will not fire again for what is queued.
                    cx.enqueue(SOCKET);
                }
            }
        }
    }

    fn pause(&mut self, cx: &mut Ctx) {
        self.gate.pause(cx);
    }

    fn resume(&mut self, cx: &mut Ctx) {
        self.gate.resume(cx);
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        super::read_datagrams_at_stop(CALLS_PER_TURN * BATCH, || {
            self.read(CALLS_PER_TURN, out, cx)
        });
        self.check_proc_drops(out);
        self.log_drops(cx);
        self.close(cx);
    }

    fn done(&mut self, cx: &mut Ctx) {
        self.close(cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_stripped() {
        assert_eq!(strip_newline(b"a\n"), b"a");
        assert_eq!(strip_newline(b"a\r\n"), b"a");
        assert_eq!(strip_newline(b"a\n\n"), b"a\n");
        assert_eq!(strip_newline(b"a\r"), b"a");
        assert_eq!(strip_newline(b""), b"");
    }

    #[test]
    fn peers_are_cached_and_mapped_v4_shown_plain() {
        let mut c = PeerCache::new();
        let a: SocketAddr = "10.0.0.1:514".parse().unwrap();
        let s1 = c.get(Some(a));
        let s2 = c.get(Some(a));
        assert!(Arc::ptr_eq(&s1, &s2));
        assert_eq!(&*s1, "10.0.0.1:514");
        let m: SocketAddr = "[::ffff:10.0.0.2]:9".parse().unwrap();
        assert_eq!(&*c.get(Some(m)), "10.0.0.2:9");
        for p in 0..20u16 {
            c.get(Some(SocketAddr::new(a.ip(), p)));
        }
        assert_eq!(c.entries.len(), PEER_CACHE);
    }
}
