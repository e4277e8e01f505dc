//! The Redis plumbing `redis_out` and `redis_in` share: a non-blocking connection on the
//! escapement that reconnects with backoff, RESP2 commands encoded into byte buffers and
//! replies decoded from them (the `redis-protocol` crate's codec, without its client).
//!
//! Commands are pipelined: a cog appends many to one buffer and writes them with as few
//! system calls as the socket allows; Redis answers each, in order, so a cog pairs replies
//! with what it sent by counting.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use mio::net::TcpStream;
use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, RangeFrame};

use crate::kit::forward::{ForwardOptions, GENERATIONS, Redial, SOCK_BASE, Target, is_refusal};
use crate::kit::tls::{Stream, TlsClient, TlsSettings};
use crate::prelude::*;
use crate::schema::SettingError;

/// Timer of the next connection attempt.
pub(crate) const RETRY: Local = 1;
/// Timer abandoning a connection attempt.
pub(crate) const CONNECT_TIMEOUT: Local = 2;

/// Bytes asked for per read.
const READ_SIZE: usize = 256 << 10;
/// Largest reply accepted: a reply still incomplete past this is a broken stream.
const MAX_REPLY: usize = 512 << 20;

/// Appends one command (an array of bulk strings) to `buf`, encoded by the RESP codec.
/// `frames` is scratch space kept by the caller so that no allocation is made per command.
pub(crate) fn push_command<'a>(
    buf: &mut Vec<u8>,
    frames: &mut FrameScratch,
    args: impl IntoIterator<Item = &'a [u8]>,
) {
    frames.with(|v| {
        v.extend(args.into_iter().map(BorrowedFrame::BulkString));
        let frame = BorrowedFrame::Array(v);
        let n = frame.encode_len(false);
        let at = buf.len();
        buf.resize(at + n, 0);
        if encode_borrowed(&mut buf[at..], &frame, false).is_err() {
            // Cannot happen: the room is the length the codec asked for. Leave nothing
            // half written all the same.
            buf.truncate(at);
        }
    });
}

/// Room for the frames of one command, reused from command to command.
#[derive(Default)]
pub(crate) struct FrameScratch(Vec<BorrowedFrame<'static>>);

impl FrameScratch {
    /// Runs `f` with an empty vector of frames of any lifetime that reuses the stored one's
    /// allocation (a vector collected in place from an empty one of the same layout).
    fn with<'a, R>(&mut self, f: impl FnOnce(&mut Vec<BorrowedFrame<'a>>) -> R) -> R {
        let mut stored = std::mem::take(&mut self.0);
        stored.clear();
        // Both vectors are empty when mapped: the closures never run; only the allocation
        // changes hands (frames borrow the command's arguments, which live shorter).
        let mut v: Vec<BorrowedFrame<'a>> = stored.into_iter().map(|_| unreachable!()).collect();
        let r = f(&mut v);
        v.clear();
        self.0 = v.into_iter().map(|_| unreachable!()).collect();
        r
    }
}

/// Formats a number for a command argument.
pub(crate) fn num(n: u64) -> Vec<u8> {
    n.to_string().into_bytes()
}

/// Replies read from the server and not yet decoded: `buf[start..end]`. The buffer keeps
/// its length (zeroed once, when it grows), so a read does not clear its room first.
#[derive(Debug, Default)]
pub(crate) struct Replies {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Replies {
    /// Forgets everything (a new connection).
    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    #[cfg(test)]
    fn push(&mut self, b: &[u8]) {
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(b);
        self.end = self.buf.len();
    }

    /// Reads what the socket holds, until it would block. `Err` when the server closed the
    /// connection or the read failed.
    pub(crate) fn fill(&mut self, s: &mut impl Read) -> io::Result<()> {
        if self.start == self.end {
            self.clear();
        }
        loop {
            if self.end - self.start > MAX_REPLY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a reply larger than 512 MiB",
                ));
            }
            if self.buf.len() - self.end < READ_SIZE {
                if self.start > 0 {
                    // Move the incomplete reply to the front rather than grow.
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                }
                if self.buf.len() - self.end < READ_SIZE {
                    self.buf.resize(self.end + READ_SIZE, 0);
                }
            }
            let r = s.read(&mut self.buf[self.end..]);
            if let Ok(n) = &r {
                self.end += n;
            }
            match r {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the server closed the connection",
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next whole reply: its frame, with ranges into the bytes returned beside it.
    /// `Ok(None)` until one is complete; `Err` when the bytes are not RESP.
    pub(crate) fn next(&mut self) -> io::Result<Option<(RangeFrame, &[u8])>> {
        let rest = &self.buf[self.start..self.end];
        if rest.is_empty() {
            return Ok(None);
        }
        match decode_range(rest) {
            Ok(Some((frame, n))) => {
                let bytes = &self.buf[self.start..self.start + n];
                self.start += n;
                Ok(Some((frame, bytes)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the server's reply is not RESP: {e}"),
            )),
        }
    }
}

/// The bytes of a bulk or simple string.
pub(crate) fn text<'a>(f: &RangeFrame, b: &'a [u8]) -> Option<&'a [u8]> {
    match f {
        RangeFrame::BulkString((s, e)) | RangeFrame::SimpleString((s, e)) => b.get(*s..*e),
        _ => None,
    }
}

/// The text of an error reply.
pub(crate) fn error<'a>(f: &RangeFrame, b: &'a [u8]) -> Option<&'a str> {
    match f {
        RangeFrame::Error((s, e)) => b.get(*s..*e).and_then(|t| std::str::from_utf8(t).ok()),
        _ => None,
    }
}

/// The elements of an array.
pub(crate) fn array(f: &RangeFrame) -> Option<&[RangeFrame]> {
    match f {
        RangeFrame::Array(v) => Some(v),
        _ => None,
    }
}

/// Whether an error reply says the server cannot serve now (loading its data, a replica
/// without its master, out of memory, a script running, no authentication yet): the
/// command is sent again on a new connection rather than failed for good.
pub(crate) fn is_transient(err: &str) -> bool {
    let code = err.split(' ').next().unwrap_or("");
    matches!(
        code,
        "LOADING"
            | "BUSY"
            | "TRYAGAIN"
            | "CLUSTERDOWN"
            | "MASTERDOWN"
            | "READONLY"
            | "OOM"
            | "NOAUTH"
            | "MISCONF"
    )
}

/// A stream entry id, `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId(pub u64, pub u64);

impl StreamId {
    /// Parses `ms-seq`.
    pub fn parse(b: &[u8]) -> Option<StreamId> {
        let s = std::str::from_utf8(b).ok()?;
        let (ms, seq) = s.split_once('-')?;
        Some(StreamId(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl StreamId {
    /// Appends `ms-seq` (without going through `fmt`, which costs more than the rest of an
    /// entry's bookkeeping).
    pub fn write(&self, out: &mut Vec<u8>) {
        push_u64(out, self.0);
        out.push(b'-');
        push_u64(out, self.1);
    }

    /// `ms-seq` as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        self.write(&mut v);
        v
    }
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A hasher for event and stream ids: they are not chosen by an adversary (the process
/// numbers the one, Redis the other), so a multiply-and-fold is enough, where SipHash cost
/// as much as the rest of an entry's bookkeeping.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let x = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }
}

/// `HashMap`/`HashSet` state for [`IdHasher`].
pub(crate) type IdHash = std::hash::BuildHasherDefault<IdHasher>;

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// `AUTH` and `SELECT`, sent first on every connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hello {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: u32,
}

impl Hello {
    /// Appends the commands to `buf`; returns how many replies they bring.
    pub(crate) fn push(&self, buf: &mut Vec<u8>, frames: &mut FrameScratch) -> usize {
        let mut n = 0;
        if let Some(p) = &self.password {
            match &self.username {
                Some(u) => push_command(buf, frames, [&b"AUTH"[..], u.as_bytes(), p.as_bytes()]),
                None => push_command(buf, frames, [&b"AUTH"[..], p.as_bytes()]),
            }
            n += 1;
        }
        if self.db != 0 {
            push_command(
                buf,
                frames,
                [&b"SELECT"[..], self.db.to_string().as_bytes()],
            );
            n += 1;
        }
        n
    }
}

enum State {
    Idle,
    Resolving,
    Connecting(TcpStream),
    /// Connected (over TLS, possibly still in the handshake).
    Up(Stream<TcpStream>),
}

/// What a readiness event brought.
pub(crate) struct Ready {
    /// The connection has just come up: the cog sends its first commands.
    pub(crate) up: bool,
}

/// A connection to one Redis server, reconnecting with backoff (as `tcp_out` does: a
/// refused connection is tried again every `reconnect_refused`, other failures back off
/// from `reconnect_initial` to `reconnect_max`, with jitter).
pub(crate) struct Link {
    cog: &'static str,
    address: String,
    connect_timeout: Duration,
    state: State,
    generation: u32,
    redial: Redial,
    retry_timer: Option<TimerId>,
    connect_timer: Option<TimerId>,
    writable: bool,
    next_addr: usize,
    tls: Option<TlsClient>,
}

impl Link {
    /// A link of cog `cog` to `address`, not yet dialled.
    pub(crate) fn new(cog: &'static str, address: &str, opts: &ForwardOptions) -> Link {
        Link {
            cog,
            address: address.to_string(),
            connect_timeout: opts.connect_timeout,
            state: State::Idle,
            generation: 0,
            redial: Redial::new(opts),
            retry_timer: None,
            connect_timer: None,
            writable: false,
            next_addr: 0,
            tls: None,
        }
    }

    /// The same link speaking TLS (`rediss://` or a `tls` table).
    pub(crate) fn with_tls(mut self, tls: Option<TlsClient>) -> Link {
        self.tls = tls;
        self
    }

    /// The TLS of the link, if any.
    pub(crate) fn tls(&self) -> Option<&TlsClient> {
        self.tls.as_ref()
    }

    /// The address, for logs.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// The local token of the current socket's readiness.
    pub(crate) fn local(&self) -> Local {
        SOCK_BASE + self.generation
    }

    /// Whether the connection is up (over TLS: the handshake is done).
    pub(crate) fn is_up(&self) -> bool {
        matches!(&self.state, State::Up(s) if !s.is_handshaking())
    }

    /// Whether writes may go on (the socket took everything so far).
    pub(crate) fn writable(&self) -> bool {
        self.writable && self.is_up()
    }

    /// Starts a connection attempt, or a name lookup on a worker thread.
    pub(crate) fn dial(&mut self, cx: &mut Ctx) {
        self.retry_timer = None;
        if !matches!(self.state, State::Idle) {
            return;
        }
        match self.address.parse::<SocketAddr>() {
            Ok(addr) => self.connect(addr, cx),
            Err(_) => {
                let a = self.address.clone();
                match cx.submit(move || a.to_socket_addrs().map(Vec::from_iter)) {
                    Ok(_) => self.state = State::Resolving,
                    Err(e) => self.failed(&e, cx, |_, _| {}),
                }
            }
        }
    }

    fn connect(&mut self, addr: SocketAddr, cx: &mut Ctx) {
        let mut s = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => return self.failed(&e, cx, |_, _| {}),
        };
        self.generation = (self.generation + 1) % GENERATIONS;
        let local = self.local();
        if let Err(e) = cx.register(&mut s, local, Interest::READABLE | Interest::WRITABLE) {
            return self.failed(&e, cx, |_, _| {});
        }
        self.connect_timer = cx.timer_after(self.connect_timeout, CONNECT_TIMEOUT).ok();
        self.state = State::Connecting(s);
    }

    /// A name lookup finished; `true` if it was this link's.
    pub(crate) fn job_done(&mut self, result: JobResult, cx: &mut Ctx) -> bool {
        if !matches!(self.state, State::Resolving) {
            return false;
        }
        self.state = State::Idle;
        match crate::kit::forward::lookup_result(result) {
            Ok(addrs) if !addrs.is_empty() => {
                // Rotating through the addresses lets a reconnection reach another one.
                let addr = addrs[self.next_addr % addrs.len()];
                self.next_addr = self.next_addr.wrapping_add(1);
                self.connect(addr, cx);
            }
            Ok(_) => self.failed(&io::Error::other("the name has no address"), cx, |_, _| {}),
            Err(e) => self.failed(&e, cx, |_, _| {}),
        }
        true
    }

    /// Handles the link's timers; `true` if `local` was one of them.
    pub(crate) fn timer(&mut self, local: Local, t: TimerId, cx: &mut Ctx) -> bool {
        match local {
            RETRY if self.retry_timer == Some(t) => {
                self.dial(cx);
                true
            }
            CONNECT_TIMEOUT if self.connect_timer == Some(t) => {
                self.connect_timer = None;
                let e = match &self.state {
                    State::Connecting(_) => "connect_timeout expired",
                    State::Up(s) if s.is_handshaking() => {
                        "TLS handshake not done within connect_timeout"
                    }
                    _ => return true,
                };
                let e = io::Error::new(io::ErrorKind::TimedOut, e);
                self.failed(&e, cx, |_, _| {});
                true
            }
            _ => false,
        }
    }

    /// Handles a readiness event of the socket: completes a connection, notes that writes
    /// may go on, and reads what came into `replies`. `Err`: the connection is lost (the
    /// caller calls [`Link::failed`]).
    pub(crate) fn ready(
        &mut self,
        ev: &mio::event::Event,
        replies: &mut Replies,
        cx: &mut Ctx,
    ) -> io::Result<Ready> {
        let mut up = false;
        if let State::Connecting(s) = &self.state {
            let peer = s.peer_addr();
            match (s.take_error(), &peer) {
                (Ok(Some(e)), _) | (Err(e), _) => return Err(e),
                (Ok(None), Ok(p)) if s.local_addr().is_ok_and(|l| l == *p) => {
                    // Nothing listens on the local port and the kernel connected the socket
                    // to itself: commands would be "answered" by their own echo.
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "connected to itself (nothing listens on the server's port)",
                    ));
                }
                (Ok(None), Ok(_)) => {}
                (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => {
                    return Ok(Ready { up: false });
                }
                (Ok(None), Err(e)) => return Err(io::Error::new(e.kind(), e.to_string())),
            }
            if let State::Connecting(s) = std::mem::replace(&mut self.state, State::Idle) {
                // Small commands (an XACK, a read) must not wait for a delayed ACK.
                let _ = s.set_nodelay(true);
                let mut s = Stream::connected(s, self.tls.as_ref())?;
                self.writable = true;
                replies.clear();
                if s.is_handshaking() {
                    // The client's hello; the handshake goes on as the server answers.
                    match s.flush() {
                        Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                        _ => {}
                    }
                } else {
                    up = true;
                }
                self.state = State::Up(s);
            }
        }
        if let State::Up(s) = &mut self.state {
            let handshaking = s.is_handshaking();
            if ev.is_writable() {
                self.writable = true;
                // TLS: ciphertext of earlier writes may wait for the socket.
                match s.flush() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                    r => r?,
                }
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                replies.fill(s)?;
            }
            if handshaking && !s.is_handshaking() {
                self.writable = true;
                up = true;
            }
        }
        if up {
            if let Some(t) = self.connect_timer.take() {
                cx.cancel_timer(t);
            }
            slog::info!(cx.logger(), "connected"; "cog" => self.cog, "peer" => &self.address,
                "tls" => self.tls.is_some(), "failed_attempts" => self.redial.failures());
            self.redial.connected();
        }
        Ok(Ready { up })
    }

    /// Writes from `data` what the socket takes; returns how much. Stops at the first
    /// write the socket refuses (the next writable event resumes).
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let State::Up(s) = &mut self.state else {
            return Ok(0);
        };
        let mut done = 0;
        while done < data.len() && self.writable {
            match s.write(&data[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// A connection attempt failed or the connection was lost: closes it and schedules
    /// the next attempt. `lost` logs a lost connection (with the delay before the next).
    pub(crate) fn failed(
        &mut self,
        e: &io::Error,
        cx: &mut Ctx,
        lost: impl FnOnce(&mut Ctx, Duration),
    ) {
        let was_up = self.is_up();
        self.close(cx);
        let refused = is_refusal(e, &Target::Tcp(String::new()));
        let timer =
            self.redial
                .schedule(cx, RETRY, self.cog, &self.address, e, was_up, refused, lost);
        self.retry_timer = timer;
    }

    /// Closes the connection and cancels the timers.
    pub(crate) fn close(&mut self, cx: &mut Ctx) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Connecting(mut s) => {
                let _ = cx.deregister(&mut s);
            }
            State::Up(mut s) => {
                let _ = cx.deregister(&mut s);
            }
            State::Idle | State::Resolving => {}
        }
        self.writable = false;
        for t in [self.retry_timer.take(), self.connect_timer.take()]
            .into_iter()
            .flatten()
        {
            cx.cancel_timer(t);
        }
    }
}

/// Whether `address` asks for TLS (`rediss://`).
pub(crate) fn wants_tls(address: &str) -> bool {
    address.starts_with("rediss://")
}

/// The TLS of a link to `host_port`: with a `rediss://` address or a `tls` table (the
/// defaults when only the scheme asks for it).
pub(crate) fn link_tls(
    address: &str,
    host_port: &str,
    tls: &Option<TlsSettings>,
) -> Result<Option<TlsClient>, SettingError> {
    match (wants_tls(address), tls) {
        (_, Some(t)) => TlsClient::new(t, host_port).map(Some),
        (true, None) => TlsClient::new(&TlsSettings::default(), host_port).map(Some),
        (false, None) => Ok(None),
    }
}

/// The server's `host:port` and the connection's `AUTH`/`SELECT`, from the `address` key
/// (`host:port`, or a URL `redis://[USER[:PASSWORD]@]HOST[:PORT][/DB]`, port 6379 by
/// default) and the `username`, `password` and `db` keys. A URL part and its key may not
/// both be given. `rediss://` is the same URL for Redis over TLS (see [`wants_tls`]).
pub(crate) fn endpoint(
    address: &str,
    username: &Option<String>,
    password: &Option<String>,
    db: i64,
) -> Result<(String, Hello), SettingError> {
    let bad = |m: String| SettingError::new("address", m);
    let mut hello = Hello {
        username: username.clone(),
        password: password.clone(),
        db: u32::try_from(db).map_err(|_| SettingError::new("db", "must be 0 or more"))?,
    };
    let url = address
        .strip_prefix("redis://")
        .or_else(|| address.strip_prefix("rediss://"));
    let host_port = if let Some(rest) = url {
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        if let Some(auth) = auth {
            let (user, pass) = match auth.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (auth, None),
            };
            if !user.is_empty() {
                if username.is_some() {
                    return Err(bad(
                        "gives a user name, and so does `username`: keep one".into()
                    ));
                }
                hello.username = Some(user.to_string());
            }
            if let Some(pass) = pass.filter(|p| !p.is_empty()) {
                if password.is_some() {
                    return Err(bad(
                        "gives a password, and so does `password`: keep one".into()
                    ));
                }
                hello.password = Some(pass.to_string());
            }
        }
        if let Some(path) = path.filter(|p| !p.is_empty()) {
            let n: u32 = path
                .parse()
                .map_err(|_| bad(format!("the database {path:?} is not a number")))?;
            if db != 0 {
                return Err(bad("gives a database, and so does `db`: keep one".into()));
            }
            hello.db = n;
        }
        let has_port = match host.rsplit_once(':') {
            // An IPv6 address in brackets: its colons are not the port's.
            Some((h, _)) => !h.starts_with('[') || h.ends_with(']'),
            None => false,
        };
        if has_port {
            host.to_string()
        } else {
            format!("{host}:6379")
        }
    } else if address.contains("://") {
        return Err(bad(format!(
            "{address:?}: the scheme is not redis:// or rediss:// (or give host:port)"
        )));
    } else {
        address.to_string()
    };
    crate::kit::forward::check_address(&host_port).map_err(bad)?;
    if hello.username.is_some() && hello.password.is_none() {
        return Err(SettingError::new("username", "needs a password"));
    }
    Ok((host_port, hello))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_host_port_or_a_redis_url() {
        let none = None;
        let (a, h) = endpoint("127.0.0.1:7000", &none, &none, 2).unwrap();
        assert_eq!(
            (a.as_str(), h.username, h.password, h.db),
            ("127.0.0.1:7000", None, None, 2)
        );
        let (a, h) = endpoint("redis://app:s3cret@127.0.0.1:7001/3", &none, &none, 0).unwrap();
        assert_eq!(a, "127.0.0.1:7001");
        assert_eq!(h.username.as_deref(), Some("app"));
        assert_eq!(h.password.as_deref(), Some("s3cret"));
        assert_eq!(h.db, 3);
        let (a, h) = endpoint("redis://:pw@localhost", &none, &none, 0).unwrap();
        assert_eq!(
            (a.as_str(), h.username, h.password.as_deref()),
            ("localhost:6379", None, Some("pw"))
        );
        let (a, _) = endpoint("redis://[::1]", &none, &none, 0).unwrap();
        assert_eq!(a, "[::1]:6379");
        let (a, _) = endpoint("redis://[::1]:7002/", &none, &none, 0).unwrap();
        assert_eq!(a, "[::1]:7002");
        let (a, h) = endpoint("rediss://:pw@cache.example:6380/1", &none, &none, 0).unwrap();
        assert_eq!(
            (a.as_str(), h.password.as_deref(), h.db),
            ("cache.example:6380", Some("pw"), 1)
        );
        assert!(wants_tls("rediss://h") && !wants_tls("redis://h") && !wants_tls("h:1"));
        let pw = Some("other".to_string());
        for (addr, pass, db, key, says) in [
            ("http://h:80", &none, 0, "address", "scheme"),
            ("redis://:pw@h", &pw, 0, "address", "password"),
            ("redis://h/1", &none, 2, "address", "database"),
            ("redis://h/x", &none, 0, "address", "not a number"),
            ("redis://u@h", &none, 0, "username", "needs a password"),
            ("h:1", &none, -1, "db", "0 or more"),
        ] {
            let e = endpoint(addr, &none, pass, db).unwrap_err();
            assert_eq!(e.key, key, "{addr}");
            assert!(e.msg.contains(says), "{addr}: {}", e.msg);
        }
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut buf = Vec::new();
        let mut f = FrameScratch::default();
        let xadd: [&[u8]; 5] = [b"XADD", b"s", b"*", b"message", b"a b"];
        push_command(&mut buf, &mut f, xadd);
        push_command(&mut buf, &mut f, [&b"PING"[..]]);
        assert_eq!(
            buf,
            b"*5\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n$7\r\nmessage\r\n$3\r\na b\r\n*1\r\n$4\r\nPING\r\n"
        );
    }

    #[test]
    fn replies_are_decoded_whole_and_in_order() {
        let mut r = Replies::default();
        r.push(b"$3\r\n1-1\r\n-WRONGTYPE Operation\r\n*2\r\n$1\r\na\r\n$-1\r\n*1\r\n$2");
        let (f, b) = r.next().unwrap().unwrap();
        assert_eq!(text(&f, b), Some(&b"1-1"[..]));
        let (f, b) = r.next().unwrap().unwrap();
        assert_eq!(error(&f, b), Some("WRONGTYPE Operation"));
        let (f, b) = r.next().unwrap().unwrap();
        let a = array(&f).unwrap();
        assert_eq!(text(&a[0], b), Some(&b"a"[..]));
        assert!(matches!(a[1], RangeFrame::Null));
        assert!(r.next().unwrap().is_none());
        r.push(b"\r\nxy\r\n");
        let (f, b) = r.next().unwrap().unwrap();
        assert_eq!(text(&array(&f).unwrap()[0], b), Some(&b"xy"[..]));
        r.push(b"?bad\r\n");
        assert!(r.next().is_err());
    }

    #[test]
    fn stream_ids_parse_and_order() {
        let a = StreamId::parse(b"1700000000000-5").unwrap();
        let b = StreamId::parse(b"1700000000001-0").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "1700000000000-5");
        assert_eq!(a.to_bytes(), b"1700000000000-5");
        assert_eq!(StreamId(0, 0).to_bytes(), b"0-0");
        assert!(StreamId::parse(b"x-1").is_none());
        assert!(is_transient(
            "LOADING Redis is loading the dataset in memory"
        ));
        assert!(!is_transient("WRONGTYPE Operation against a key"));
    }
}
