//! Forwarding drains over connected sockets (`tcp_out`, `unix_out`): a bounded outbox of
//! rendered records, non-blocking (re)connection with backoff, vectored writes, and
//! acknowledgement once the peer has a record's bytes.
//!
//! **Delivery guarantee.** Over a stream socket a record is acknowledged (`event_done`,
//! which moves the checkpoints of the supplies) only once the peer acknowledged every
//! byte of its frame: the bytes the socket still holds unacknowledged are read with the
//! `SIOCOUTQ` ioctl after each round of writes, and every 20 ms while some wait (no event
//! announces an acknowledgement). For TCP that is the peer's TCP stack; for a Unix stream
//! socket, the peer process having read them. Until then the record's bytes stay in the
//! outbox, which `buffer_bytes` bounds (written and unwritten alike). When a connection is
//! lost, every record not acknowledged is sent again on the next one, whole, in order and
//! before newer records; so a collector that stops or resets loses nothing that sat in
//! this side's socket. What a TCP peer's kernel acknowledged but its process never read
//! (the peer crashed, or closed without reading) is lost: plain syslog over TCP has no
//! application acknowledgement.
//!
//! Records the peer had received but that were not yet seen acknowledged when the
//! connection broke are sent again: duplicates are possible, at most what was outstanding
//! (a record only partly received is sent again whole, after its truncated fragment).
//! Datagrams are acknowledged once sent (the receiving socket holds them whole); there is
//! nothing to resend in that mode.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use mio::event::Source;
use mio::net::{TcpStream, UnixDatagram, UnixStream};

use crate::kit::disk_buffer::{DiskOptions, FrameSink, REPLAYED, Spill};
use crate::kit::format::{FormatSettings, OutputFormat};
use crate::kit::tls::{self, TlsClient, TlsStream};
use crate::prelude::*;
use crate::record::Record;
use crate::schema::{CogParams, ConfigError, SettingError};

const RETRY: Local = 1;
const CONNECT_TIMEOUT: Local = 2;
const DRAIN_DEADLINE: Local = 3;
const NOBUFS: Local = 4;
const ACK_POLL: Local = 5;
const DISK_RETRY: Local = 6;
const REFILL: Local = 7;
/// Socket readiness arrives with `SOCK_BASE + generation`, so that events still queued for
/// a connection that was just dropped are told apart from the new one's.
pub const SOCK_BASE: Local = 1 << 16;
/// Connection generations before the numbering wraps.
pub const GENERATIONS: u32 = 1 << 16;

/// Records are appended to chunks of about this size; a writev covers many of them.
const CHUNK: usize = 256 << 10;
/// Released chunks kept for reuse: as many as a full default TCP send buffer (4 MiB)
/// holds, the bytes a fast stream keeps waiting for acknowledgement.
const SPARE_CHUNKS: usize = 16;
/// Slices per `writev` and messages per `sendmmsg`.
const MAX_IOV: usize = 64;
/// How long to wait before trying again after ENOBUFS, which brings no readiness event.
const NOBUFS_WAIT: Duration = Duration::from_millis(10);
/// How often the peer's acknowledgements are read while written bytes wait for them (no
/// event announces them). It bounds how late a record is acknowledged once the peer has it.
const ACK_POLL_EVERY: Duration = Duration::from_millis(20);
/// The first poll interval while the supplies are paused or the drain finishes: then only
/// acknowledgements can free the buffer and restart the flow (or end the shutdown), and a
/// socket drains its send queue in a few milliseconds, so waiting 20 ms would idle the
/// stream. The interval doubles up to `ACK_POLL_EVERY` while a poll finds no progress (a
/// stalled peer costs little).
const ACK_POLL_PAUSED: Duration = Duration::from_millis(1);

crate::settings! {
    /// The keys shared by every forwarding drain (besides its address key and framing).
    pub struct ForwardSettings {
        /// How each record is rendered.
        #[setting(flatten)]
        format: FormatSettings,
        /// records held while the peer is slow or down; when full the supplies pause (resume below half)
        #[setting(size)]
        buffer_bytes: usize = "8MiB",
        /// first reconnection delay; doubles per failure up to reconnect_max, with jitter
        reconnect_initial: Duration = "100ms",
        /// longest reconnection delay (after a timeout or a lookup failure)
        reconnect_max: Duration = "2s",
        /// a connection attempt not completed by then is abandoned and retried
        connect_timeout: Duration = "5s",
        /// at shutdown, how long buffered records may take to go out and be acknowledged by
        /// the peer; the rest is logged as unsent
        drain_timeout: Duration = "30s",
        /// delay before trying again when a connection is refused (nothing listens: the
        /// collector restarts), without backing off; with jitter
        reconnect_refused: Duration = "250ms",
    }
}

/// How records are delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Each record followed by `\n`.
    Newline,
    /// RFC 6587 octet counting: `LEN SP MSG`, no trailer.
    OctetCounting,
    /// One record per datagram, no delimiter.
    Datagram,
}

/// Where a forwarding drain connects.
#[derive(Debug, Clone)]
pub enum Target {
    /// `host:port`; a host name is resolved on a worker thread at every (re)connection.
    Tcp(String),
    /// A Unix stream socket.
    UnixStream(PathBuf),
    /// A Unix datagram socket.
    UnixDatagram(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "tcp:{a}"),
            Target::UnixStream(p) => write!(f, "unix:{}", p.display()),
            Target::UnixDatagram(p) => write!(f, "unixgram:{}", p.display()),
        }
    }
}

/// Settings common to the forwarding drains.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Rendering of each record.
    pub format: OutputFormat,
    /// Delimiting of records.
    pub framing: Framing,
    /// High-water mark of buffered bytes.
    pub buffer_bytes: usize,
    /// First reconnection delay.
    pub reconnect_initial: Duration,
    /// Longest reconnection delay.
    pub reconnect_max: Duration,
    /// Delay after a refused connection (no backoff).
    pub reconnect_refused: Duration,
    /// Limit of one connection attempt.
    pub connect_timeout: Duration,
    /// Limit of the final flush at shutdown.
    pub drain_timeout: Duration,
}

impl ForwardOptions {
    /// Reads [`ForwardSettings`]; `framing` is decided by the caller.
    pub fn from_params(p: &CogParams<'_>, framing: Framing) -> Result<Self, ConfigError> {
        let s: ForwardSettings = p.group()?;
        ForwardOptions::new(&s, framing).map_err(|e| p.setting_error(e))
    }

    /// The options `s` describes, checked.
    pub fn new(s: &ForwardSettings, framing: Framing) -> Result<Self, SettingError> {
        let o = ForwardOptions {
            format: OutputFormat::new(&s.format)?,
            framing,
            buffer_bytes: s.buffer_bytes,
            reconnect_initial: s.reconnect_initial,
            reconnect_max: s.reconnect_max,
            reconnect_refused: s.reconnect_refused,
            connect_timeout: s.connect_timeout,
            drain_timeout: s.drain_timeout,
        };
        let above_zero = |key| Err(SettingError::new(key, "must be above 0"));
        if o.buffer_bytes == 0 {
            return above_zero("buffer_bytes");
        }
        if o.reconnect_initial.is_zero() {
            return above_zero("reconnect_initial");
        }
        if o.reconnect_max < o.reconnect_initial {
            return Err(SettingError::new(
                "reconnect_max",
                "must be at least reconnect_initial",
            ));
        }
        if o.reconnect_refused.is_zero() {
            return above_zero("reconnect_refused");
        }
        if o.connect_timeout.is_zero() {
            return above_zero("connect_timeout");
        }
        Ok(o)
    }
}

/// Checks a `host:port` address without resolving it.
pub fn check_address(a: &str) -> Result<(), String> {
    if a.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = a.rsplit_once(':') else {
        return Err(format!("expected \"host:port\", found {a:?}"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("expected \"host:port\", found {a:?}"));
    }
    Ok(())
}

/// Rendered frames waiting to be written or acknowledged, in order, with the ids of their
/// records.
///
/// Offsets are global byte counts since the start: `acked ≤ sent ≤ pushed`. `sent` is what
/// the socket took; `acked` is the end of the last record that the peer acknowledged
/// ([`Outbox::confirm`]). Bytes before `acked` are released; `sent` goes back to `acked`
/// when a connection is lost, so every record the peer did not acknowledge is sent again,
/// whole and in order.
#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Vec<u8>>,
    /// Global offset of the first byte of `chunks[0]`.
    base: u64,
    /// Each record's id and the global offset just past its frame.
    recs: VecDeque<(EventId, u64)>,
    pushed: u64,
    sent: u64,
    acked: u64,
    /// Released chunks kept for reuse, at most [`SPARE_CHUNKS`].
    spare: Vec<Vec<u8>>,
    /// Records read back from a disk buffer ([`REPLAYED`]) confirmed since the last
    /// [`take_replayed`](Outbox::take_replayed).
    replayed: u64,
}

impl FrameSink for Outbox {
    // The memory path renders through this: inlined, it costs what a direct call does.
    #[inline(always)]
    fn push_with(&mut self, id: EventId, render: impl FnOnce(&mut Vec<u8>)) {
        Outbox::push_with(self, id, render);
    }
}

impl Outbox {
    /// Appends one record's frame, written by `render` at the end of the buffer it gets.
    // Inlined into each caller (the render loops), as the single call site it was before
    // the disk buffer added more: out of line it costs a call per record.
    #[inline(always)]
    pub fn push_with(&mut self, id: EventId, render: impl FnOnce(&mut Vec<u8>)) {
        let full = self.chunks.back().is_none_or(|c| c.len() >= CHUNK);
        if full {
            let c = self
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(CHUNK));
            self.chunks.push_back(c);
        }
        if let Some(c) = self.chunks.back_mut() {
            let before = c.len();
            render(c);
            self.pushed += (c.len() - before) as u64;
        }
        self.recs.push_back((id, self.pushed));
    }

    /// Bytes of records not yet acknowledged (written or not).
    pub fn buffered(&self) -> usize {
        (self.pushed - self.acked) as usize
    }

    /// Records not yet acknowledged.
    pub fn records(&self) -> usize {
        self.recs.len()
    }

    /// Whether bytes are waiting to be written.
    pub fn has_unsent(&self) -> bool {
        self.sent < self.pushed
    }

    /// Whether written bytes wait for the peer's acknowledgement.
    pub fn has_unconfirmed(&self) -> bool {
        self.sent > self.acked
    }

    /// Global offset just past the last byte written.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Fills `iov` with the unsent bytes, oldest first, at most `MAX_IOV` (64) slices.
    pub fn unsent<'a>(&'a self, iov: &mut Vec<IoSlice<'a>>) {
        iov.clear();
        let mut g = self.base;
        for c in &self.chunks {
            let end = g + c.len() as u64;
            if end > self.sent {
                let from = self.sent.saturating_sub(g) as usize;
                iov.push(IoSlice::new(&c[from..]));
                if iov.len() == MAX_IOV {
                    break;
                }
            }
            g = end;
        }
    }

    /// The frame of the `i`-th unacknowledged record.
    pub fn record(&self, i: usize) -> Option<&[u8]> {
        let end = self.recs.get(i)?.1;
        let start = match i {
            0 => self.acked,
            _ => self.recs.get(i - 1)?.1,
        };
        let mut g = self.base;
        for c in &self.chunks {
            let cend = g + c.len() as u64;
            if start >= g && end <= cend {
                return c.get((start - g) as usize..(end - g) as usize);
            }
            g = cend;
        }
        None
    }

    /// `n` more bytes were written and, at once, acknowledged (a datagram, or records a
    /// protocol answered): acknowledges the records they complete.
    pub fn advance_acknowledged(&mut self, n: usize, cx: &mut Ctx) {
        self.advance(n);
        self.confirm(self.sent, cx);
    }

    /// `n` more bytes were written.
    pub fn advance(&mut self, n: usize) {
        self.sent = (self.sent + n as u64).min(self.pushed);
    }

    /// The peer acknowledged every byte before global offset `upto`: acknowledges the
    /// records that end there or earlier and releases their bytes. Offsets at or below
    /// what is already acknowledged change nothing.
    pub fn confirm(&mut self, upto: u64, cx: &mut Ctx) {
        let upto = upto.min(self.sent);
        while let Some(&(id, end)) = self.recs.front() {
            if end > upto {
                break;
            }
            self.recs.pop_front();
            self.acked = end;
            // A record read back from the disk buffer was acknowledged when it was written.
            if id == REPLAYED {
                self.replayed += 1;
            } else {
                cx.event_done(id);
            }
        }
        while let Some(c) = self.chunks.front() {
            let end = self.base + c.len() as u64;
            if end > self.acked {
                break;
            }
            self.base = end;
            if let Some(mut c) = self.chunks.pop_front() {
                // Chunks are released in runs, as acknowledgements come: reusing them spares
                // an allocation and fresh pages per chunk in a steady stream. An oversized
                // one (a huge record) is not worth keeping.
                if self.spare.len() < SPARE_CHUNKS && c.capacity() <= 2 * CHUNK {
                    c.clear();
                    self.spare.push(c);
                }
            }
        }
    }

    /// The index of the first record not read back from a disk buffer: the records from
    /// there on are the ones only memory holds. They are always the newest (records go
    /// to memory only while nothing waits on disk), so the search goes from the end.
    pub fn first_fresh(&self) -> usize {
        let replayed = self.recs.iter().rev().position(|r| r.0 == REPLAYED);
        self.recs.len() - replayed.unwrap_or(self.recs.len())
    }

    /// The ids and frames of the unacknowledged records from the `first`-th on, oldest
    /// first.
    pub fn frames_from(&self, first: usize) -> impl Iterator<Item = (EventId, &[u8])> {
        let mut chunks = self.chunks.iter();
        let mut chunk: &[u8] = &[];
        let mut base = self.base;
        let mut start = match first {
            0 => self.acked,
            _ => self.recs.get(first - 1).map_or(self.acked, |r| r.1),
        };
        self.recs.iter().skip(first).map(move |&(id, end)| {
            // A record lies in one chunk (it is rendered into the last one).
            while end > base + chunk.len() as u64 {
                let Some(c) = chunks.next() else { break };
                base += chunk.len() as u64;
                chunk = c;
            }
            let frame = chunk
                .get(start.saturating_sub(base) as usize..end.saturating_sub(base) as usize)
                .unwrap_or_default();
            start = end;
            (id, frame)
        })
    }

    /// The records from the `first`-th on are on disk now: their confirmations are
    /// counted for the disk buffer ([`take_replayed`](Outbox::take_replayed)).
    pub fn mark_replayed(&mut self, first: usize) {
        for r in self.recs.iter_mut().skip(first) {
            r.0 = REPLAYED;
        }
    }

    /// Records read back from a disk buffer that the peer confirmed since the last call.
    pub fn take_replayed(&mut self) -> u64 {
        std::mem::take(&mut self.replayed)
    }

    /// The connection is gone: every record written but not acknowledged goes out again,
    /// whole. Returns how many records and bytes that is.
    pub fn rewind(&mut self) -> (usize, u64) {
        let sent = self.sent;
        let whole = self.recs.partition_point(|r| r.1 <= sent);
        let start = whole
            .checked_sub(1)
            .and_then(|i| self.recs.get(i))
            .map_or(self.acked, |r| r.1);
        let partial = usize::from(whole < self.recs.len() && sent > start);
        let bytes = sent - self.acked;
        self.sent = self.acked;
        (whole + partial, bytes)
    }
}

/// Exponential backoff with jitter: each delay is drawn from [d/2, d], d doubling from
/// `initial` to `max`, so many senders that lost one peer do not reconnect in lockstep.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
}

impl Backoff {
    /// Delays from `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        Backoff {
            initial,
            max,
            current: initial,
            rng: seed | 1,
        }
    }

    /// The next delay, jittered; the one after it is twice as long, up to `max`.
    #[allow(
        clippy::should_implement_trait,
        reason = "never ends: not an iterator to chain"
    )]
    pub fn next(&mut self) -> Duration {
        let d = self.current;
        self.current = (d * 2).min(self.max);
        self.jitter(d)
    }

    /// A delay drawn from [d/2, d].
    pub fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64: jitter needs no cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = d / 2;
        let extra = half.as_nanos() as u64;
        let r = if extra == 0 {
            0
        } else {
            self.rng % (extra + 1)
        };
        half + Duration::from_nanos(r)
    }

    /// Starts again from `initial` (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// When a forwarding drain connects again, and what it says about it: a refused attempt
/// is tried again at a short fixed interval, other failures and lost connections after a
/// backoff; the first failed attempt of an outage is a warning, later ones are debug.
#[derive(Debug)]
pub(crate) struct Redial {
    backoff: Backoff,
    refused_wait: Duration,
    /// Failed attempts since the last connection.
    failures: u64,
}

impl Redial {
    /// The schedule `opts` sets (`reconnect_initial`, `reconnect_max`, `reconnect_refused`).
    pub(crate) fn new(opts: &ForwardOptions) -> Self {
        Redial {
            backoff: Backoff::new(opts.reconnect_initial, opts.reconnect_max),
            refused_wait: opts.reconnect_refused,
            failures: 0,
        }
    }

    /// Failed attempts since the last connection.
    pub(crate) fn failures(&self) -> u64 {
        self.failures
    }

    /// A connection is up: the next outage starts afresh.
    pub(crate) fn connected(&mut self) {
        self.failures = 0;
        self.backoff.reset();
    }

    /// A connection attempt failed with `e` (or, `was_up`, a connection was lost: `lost`
    /// logs that with the wait): logs it and sets the timer `local` of the next attempt,
    /// returned unless it cannot be set (logged). `refused`: the attempt was refused.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn schedule(
        &mut self,
        cx: &mut Ctx<'_>,
        local: Local,
        cog: &str,
        peer: &dyn std::fmt::Display,
        e: &io::Error,
        was_up: bool,
        refused: bool,
        lost: impl FnOnce(&mut Ctx<'_>, Duration),
    ) -> Option<TimerId> {
        // A refusal comes back at once and costs the peer nothing: it is what a collector
        // that restarts answers until it listens again, so it is tried again at a short
        // fixed interval and the backoff (meant for timeouts) does not grow.
        let delay = if !was_up && refused {
            self.backoff.jitter(self.refused_wait)
        } else {
            self.backoff.next()
        };
        if was_up {
            lost(cx, delay);
        } else if self.failures == 0 {
            slog::warn!(cx.logger(), "cannot connect; buffering and retrying";
                "cog" => cog, "peer" => %peer, "error" => %e,
                "retry_in_ms" => delay.as_millis() as u64);
        } else {
            slog::debug!(cx.logger(), "connection attempt failed";
                "cog" => cog, "peer" => %peer, "error" => %e,
                "attempt" => self.failures + 1, "retry_in_ms" => delay.as_millis() as u64);
        }
        if !was_up {
            self.failures += 1;
        }
        match cx.timer_after(delay, local) {
            Ok(t) => Some(t),
            Err(e) => {
                slog::error!(cx.logger(), "cannot set the reconnection timer"; "cog" => cog, "error" => %e);
                None
            }
        }
    }
}

/// Backpressure over a drain's buffer: the supplies are paused once it holds `high` bytes
/// and resumed once it is down to half of that, so that they do not flap around one size.
#[derive(Debug)]
pub struct Watermark {
    high: usize,
    paused: bool,
}

/// A change [`Watermark::settle`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// The buffer reached the high mark: the supplies were asked to pause.
    Paused,
    /// The buffer went down to half the high mark: the supplies may resume.
    Resumed,
}

impl Watermark {
    /// Marks for a buffer of at most `high` bytes.
    pub fn new(high: usize) -> Self {
        Watermark {
            high,
            paused: false,
        }
    }

    /// Whether this drain holds the supplies paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Pauses or resumes the supplies for a buffer now holding `held` bytes; returns the
    /// change made, if any.
    pub fn settle(&mut self, held: usize, cx: &mut Ctx<'_>) -> Option<Backpressure> {
        if !self.paused && held >= self.high {
            self.paused = true;
            cx.pause_supplies();
            Some(Backpressure::Paused)
        } else if self.paused && held <= self.high / 2 {
            self.paused = false;
            cx.resume_supplies();
            Some(Backpressure::Resumed)
        } else {
            None
        }
    }
}

/// Whether a connection attempt failed because nothing listens at the address (the port
/// refuses, or the Unix socket is absent or refuses), rather than timed out or could not
/// be routed.
pub fn is_refusal(e: &io::Error, target: &Target) -> bool {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => true,
        io::ErrorKind::NotFound => {
            matches!(target, Target::UnixStream(_) | Target::UnixDatagram(_))
        }
        _ => false,
    }
}

enum Conn {
    Tcp(TcpStream),
    /// TLS over TCP, with the outbox offset its plaintext count starts at.
    Tls(Box<TlsStream<TcpStream>>, u64),
    Unix(UnixStream),
    Dgram(UnixDatagram),
}

impl Conn {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Conn::Tcp(s) => s,
            Conn::Tls(s, _) => s.get_mut(),
            Conn::Unix(s) => s,
            Conn::Dgram(s) => s,
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Tls(s, _) => s.get_ref().as_raw_fd(),
            Conn::Unix(s) => s.as_raw_fd(),
            Conn::Dgram(s) => s.as_raw_fd(),
        }
    }

    /// Whether a non-blocking connect has completed: `Ok(false)` while in progress.
    fn connected(&self) -> io::Result<bool> {
        let tcp = match self {
            Conn::Tcp(s) => Some(s),
            Conn::Tls(s, _) => Some(s.get_ref()),
            _ => None,
        };
        let (err, peer) = match (self, tcp) {
            (_, Some(s)) => {
                let peer = s.peer_addr();
                // With nothing listening on a local port, the kernel may pick that very
                // port as the source and connect the socket to itself (a TCP simultaneous
                // open): records "sent" there would be acknowledged and lost.
                if let (Ok(p), Ok(l)) = (&peer, s.local_addr())
                    && *p == l
                {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "connected to itself (nothing listens on the collector's port)",
                    ));
                }
                (s.take_error(), peer.map(drop))
            }
            (Conn::Unix(s), _) => (s.take_error(), s.peer_addr().map(drop)),
            _ => return Ok(true),
        };
        if let Some(e) = err? {
            return Err(e);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn write_vectored(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write_vectored(iov),
            Conn::Tls(s, _) => s.write_vectored(iov),
            Conn::Unix(s) => s.write_vectored(iov),
            Conn::Dgram(_) => Err(io::Error::from(io::ErrorKind::Unsupported)),
        }
    }

    /// Bytes written to a stream socket that the peer has not acknowledged yet (`SIOCOUTQ`):
    /// for TCP, those its stack has not acknowledged; for a Unix stream socket, the
    /// kernel memory of the messages the peer has not read, which counts at least their
    /// bytes, so the estimate errs on the side of sending again.
    fn unacked(&self) -> io::Result<u64> {
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ, same value) writes one c_int to the pointer.
        let rc = unsafe { libc::ioctl(self.fd(), libc::TIOCOUTQ, &mut n) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The outbox offset the peer acknowledged, given `sent` (the outbox offset written):
    /// over TLS, the end of the plaintext whose ciphertext the peer's TCP stack
    /// acknowledged.
    fn acked(&mut self, sent: u64) -> io::Result<u64> {
        let q = self.unacked()?;
        Ok(match self {
            Conn::Tls(s, base) => *base + s.plain_acked(q),
            _ => sent.saturating_sub(q),
        })
    }

    /// Makes the close of a TCP connection a reset (`SO_LINGER` 0): the bytes its send
    /// queue holds are discarded instead of delivered after the close. For a drain that
    /// keeps the records the peer did not acknowledge for its next run. (What a Unix
    /// socket sent is in the peer's queue already: nothing to discard.)
    fn abort_on_close(&self) {
        if !matches!(self, Conn::Tcp(_) | Conn::Tls(..)) {
            return;
        }
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: SO_LINGER reads one `linger` struct from the pointer, alive for the call.
        unsafe {
            libc::setsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const l).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }

    /// Whether written bytes wait in this process (TLS ciphertext not yet on the socket).
    fn has_pending_output(&self) -> bool {
        matches!(self, Conn::Tls(s, _) if s.has_pending_output())
    }

    /// Whether a TLS handshake is under way.
    fn is_handshaking(&self) -> bool {
        matches!(self, Conn::Tls(s, _) if s.is_handshaking())
    }

    /// For a Unix stream socket, fails once the peer has closed. A peer that closes
    /// discards the messages it did not read, which frees their memory on this side: a
    /// `SIOCOUTQ` read around that moment would count them as read. The peer marks this
    /// socket shut down before it discards them, so a reading followed by this check
    /// without an error was taken while the connection stood.
    fn check_peer(&self) -> io::Result<()> {
        let Conn::Unix(_) = self else {
            return Ok(());
        };
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one pollfd, alive for the call; a zero timeout does not block.
        let rc = unsafe { libc::poll(&mut p, 1, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the peer closed the connection",
            ));
        }
        Ok(())
    }

    /// For a Unix stream socket, whether the peer has closed after reading everything: a
    /// peer that closes with messages unread sets `ECONNRESET` on this socket before it
    /// marks it shut down, so a full shutdown without that error means nothing was left.
    /// The caller knows that no earlier read or `SO_ERROR` took that error (it would have
    /// been the reason of the failure).
    fn peer_read_all(&self) -> bool {
        let Conn::Unix(s) = self else {
            return false;
        };
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, alive for the call; a zero timeout does not block.
        let rc = unsafe { libc::poll(&mut p, 1, 0) };
        rc == 1 && p.revents & libc::POLLHUP != 0 && matches!(s.take_error(), Ok(None))
    }

    /// Reads and discards what the peer sent; `Ok(true)` once it has closed.
    fn drain_input(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        loop {
            let r = match self {
                Conn::Tcp(s) => s.read(buf),
                Conn::Tls(s, _) => s.read(buf),
                Conn::Unix(s) => s.read(buf),
                Conn::Dgram(_) => return Ok(false),
            };
            match r {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Sends the first datagrams of `datagrams`, up to 64, on the connected socket `fd` with
/// one `sendmmsg(2)` call (`flags` as for `send(2)`), repeated if interrupted. Returns how
/// many went out: at least one, or 0 when `datagrams` is empty. An error is the first
/// datagram's: none of them was sent.
pub fn send_many<'a>(
    fd: RawFd,
    datagrams: impl IntoIterator<Item = &'a [u8]>,
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is valid (null
    // pointers, zero lengths).
    let mut iovs: [libc::iovec; MAX_IOV] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MAX_IOV] = unsafe { std::mem::zeroed() };
    let mut n = 0;
    for (dgram, (iov, msg)) in datagrams
        .into_iter()
        .zip(iovs.iter_mut().zip(msgs.iter_mut()))
    {
        // The kernel only reads through `iov_base` (sendmmsg sends, it does not write).
        iov.iov_base = dgram.as_ptr().cast_mut().cast();
        iov.iov_len = dgram.len();
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    loop {
        // SAFETY: `msgs[..n]` point at `iovs[..n]`, which point into the datagrams; all
        // outlive the call. The socket is connected, so no addresses are needed.
        let sent = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, flags) };
        match usize::try_from(sent) {
            Ok(k) if (1..=n).contains(&k) => return Ok(k),
            Ok(_) => return Err(io::Error::other("sendmmsg sent no datagram")),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

enum State {
    /// Waiting for the retry timer.
    Idle,
    /// A name lookup runs on a worker thread.
    Resolving,
    Connecting(Conn),
    Connected(Conn),
}

/// The forwarding drain behind `tcp_out` and `unix_out`.
pub struct Forward {
    name: &'static str,
    target: Target,
    opts: ForwardOptions,
    outbox: Outbox,
    scratch: Vec<u8>,
    state: State,
    generation: u32,
    writable: bool,
    redial: Redial,
    retry_timer: Option<TimerId>,
    connect_timer: Option<TimerId>,
    nobufs_timer: Option<TimerId>,
    ack_timer: Option<TimerId>,
    /// The next [`ACK_POLL`] interval while the supplies are paused or the drain finishes.
    ack_poll: Duration,
    watermark: Watermark,
    lingering: bool,
    /// Stopping with the peer away: every record is on disk, the drain waits only for
    /// their sync.
    parked: bool,
    /// Without a disk buffer: the records memory held at the end of `drain_timeout` were
    /// reported as lost.
    unsent_reported: bool,
    next_addr: usize,
    /// TLS on TCP connections, if configured.
    tls: Option<TlsClient>,
    /// The disk buffer (`buffer = "disk"`), if any.
    disk: Spill,
}

/// Renders `r` as one frame into `sink` (the memory outbox or the disk buffer).
#[inline(always)]
fn render_to<S: FrameSink>(opts: &ForwardOptions, scratch: &mut Vec<u8>, sink: &mut S, r: &Record) {
    let format = &opts.format;
    match opts.framing {
        Framing::Newline => sink.push_with(r.id, |b| format.write(r, b)),
        Framing::Datagram => sink.push_with(r.id, |b| {
            format.write(r, b);
            b.pop();
        }),
        Framing::OctetCounting => {
            let s = scratch;
            s.clear();
            format.write(r, s);
            s.pop();
            sink.push_with(r.id, |b| {
                let _ = write!(b, "{} ", s.len());
                b.extend_from_slice(s);
            });
        }
    }
}

impl Forward {
    /// A drain named `name` (for logs) forwarding to `target`.
    pub fn new(name: &'static str, target: Target, opts: ForwardOptions) -> Self {
        let redial = Redial::new(&opts);
        let watermark = Watermark::new(opts.buffer_bytes);
        Forward {
            name,
            target,
            opts,
            outbox: Outbox::default(),
            scratch: Vec::new(),
            state: State::Idle,
            generation: 0,
            writable: false,
            redial,
            retry_timer: None,
            connect_timer: None,
            nobufs_timer: None,
            ack_timer: None,
            ack_poll: ACK_POLL_PAUSED,
            watermark,
            lingering: false,
            parked: false,
            unsent_reported: false,
            next_addr: 0,
            tls: None,
            disk: Spill::new(name, None, DISK_RETRY),
        }
    }

    /// The same drain speaking TLS over its TCP connections (`tcp_out`'s `tls` table).
    pub fn with_tls(mut self, tls: Option<TlsClient>) -> Self {
        self.tls = tls;
        self
    }

    /// A connection over `s`, with TLS when configured.
    fn tcp_conn(&self, s: TcpStream) -> io::Result<Conn> {
        match &self.tls {
            Some(t) => Ok(Conn::Tls(Box::new(t.connect(s)?), self.outbox.sent())),
            None => Ok(Conn::Tcp(s)),
        }
    }

    /// With a disk buffer (`Some`): records beyond `buffer_bytes`, and all of them while
    /// the peer is not connected, go to it, and the supplies pause only when it is full
    /// (`when_full = "block"`). It is opened by `start`.
    pub fn with_disk(mut self, disk: Option<DiskOptions>) -> Self {
        if let Some(d) = &disk {
            self.watermark = Watermark::new(usize::try_from(d.max_bytes).unwrap_or(usize::MAX));
        }
        self.disk = Spill::new(self.name, disk, DISK_RETRY);
        self
    }

    /// Before writing to the socket: writes and syncs what spilled, and refills the
    /// outbox from the disk buffer, oldest first, while the peer is connected.
    fn disk_step(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.disk.buffer().is_none() {
            return;
        }
        let connected = matches!(self.state, State::Connected(_));
        let dropped = self
            .disk
            .refill(&mut self.outbox, self.opts.buffer_bytes, connected, cx);
        if dropped > 0 {
            out.count_dropped(dropped);
        }
    }

    /// Whether nothing is left to send: the outbox is empty and so is the disk buffer
    /// (what is written there but not yet synced included).
    fn drained(&self) -> bool {
        self.outbox.records() == 0 && self.disk.is_drained()
    }

    fn sock_local(&self) -> Local {
        SOCK_BASE + self.generation
    }

    fn render(&mut self, r: &Record) {
        render_to(&self.opts, &mut self.scratch, &mut self.outbox, r);
    }

    /// Starts a connection attempt (or a name lookup).
    fn dial(&mut self, cx: &mut Ctx) {
        self.retry_timer = None;
        if !matches!(self.state, State::Idle) {
            return;
        }
        let attempt = match &self.target {
            Target::Tcp(a) => match a.parse::<SocketAddr>() {
                Ok(addr) => TcpStream::connect(addr).and_then(|s| self.tcp_conn(s)),
                Err(_) => {
                    let a = a.clone();
                    match cx.submit(move || a.to_socket_addrs().map(Vec::from_iter)) {
                        Ok(_) => self.state = State::Resolving,
                        Err(e) => self.failed(&e, cx),
                    }
                    return;
                }
            },
            Target::UnixStream(p) => UnixStream::connect(p).map(Conn::Unix),
            Target::UnixDatagram(p) => {
                UnixDatagram::unbound().and_then(|s| s.connect(p).map(|()| Conn::Dgram(s)))
            }
        };
        match attempt {
            Ok(c) => self.connecting(c, cx),
            Err(e) => self.failed(&e, cx),
        }
    }

    fn connecting(&mut self, mut conn: Conn, cx: &mut Ctx) {
        self.generation = (self.generation + 1) % GENERATIONS;
        let local = self.sock_local();
        let interest = match conn {
            Conn::Dgram(_) => Interest::WRITABLE,
            _ => Interest::READABLE | Interest::WRITABLE,
        };
        if let Err(e) = cx.register(conn.source(), local, interest) {
            self.failed(&e, cx);
            return;
        }
        if matches!(conn, Conn::Dgram(_)) {
            self.up(conn, cx);
            return;
        }
        self.connect_timer = cx
            .timer_after(self.opts.connect_timeout, CONNECT_TIMEOUT)
            .ok();
        self.state = State::Connecting(conn);
    }

    fn up(&mut self, conn: Conn, cx: &mut Ctx) {
        let handshaking = conn.is_handshaking();
        self.state = State::Connected(conn);
        self.writable = true;
        if !handshaking {
            self.established(cx);
        }
    }

    /// The connection carries records now (over TLS: the handshake is done).
    fn established(&mut self, cx: &mut Ctx) {
        if let Some(t) = self.connect_timer.take() {
            cx.cancel_timer(t);
        }
        slog::info!(cx.logger(), "connected"; "cog" => self.name, "peer" => %self.target,
            "tls" => self.tls.is_some(),
            "failed_attempts" => self.redial.failures(), "buffered_records" => self.outbox.records());
        self.redial.connected();
    }

    /// A connection attempt failed or an established connection was lost.
    fn failed(&mut self, e: &io::Error, cx: &mut Ctx) {
        if let Some(t) = self.connect_timer.take() {
            cx.cancel_timer(t);
        }
        if let Some(t) = self.nobufs_timer.take() {
            cx.cancel_timer(t);
        }
        if let Some(t) = self.ack_timer.take() {
            cx.cancel_timer(t);
        }
        // A TLS handshake that fails is a failed attempt, not a lost connection.
        let was_up = matches!(&self.state, State::Connected(c) if !c.is_handshaking());
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Connected(mut c) => {
                // What the peer acknowledged since the last check is not sent again.
                match c {
                    // TCP keeps the acknowledged sequence after a reset.
                    Conn::Tcp(_) | Conn::Tls(..) => {
                        if let Ok(upto) = c.acked(self.outbox.sent()) {
                            self.outbox.confirm(upto, cx);
                        }
                    }
                    Conn::Unix(_) => {
                        if e.raw_os_error() != Some(libc::ECONNRESET) && c.peer_read_all() {
                            self.outbox.confirm(self.outbox.sent(), cx);
                        }
                    }
                    Conn::Dgram(_) => {}
                }
                let _ = cx.deregister(c.source());
            }
            State::Connecting(mut c) => {
                let _ = cx.deregister(c.source());
            }
            State::Idle | State::Resolving => {}
        }
        self.writable = false;
        let (resend_records, resend_bytes) = self.outbox.rewind();
        // The peer is away: what memory holds goes to disk, where it survives a stop or a
        // kill meanwhile, and new records follow it there.
        self.disk.adopt(&mut self.outbox, cx);
        let refused = is_refusal(e, &self.target);
        let (name, target, outbox) = (self.name, &self.target, &self.outbox);
        let timer = self.redial.schedule(
            cx,
            RETRY,
            name,
            target,
            e,
            was_up,
            refused,
            |cx, delay| {
                slog::warn!(cx.logger(), "connection lost; buffering and reconnecting";
                    "cog" => name, "peer" => %target, "error" => %e,
                    "resending_records" => resend_records, "resending_bytes" => resend_bytes,
                    "buffered_records" => outbox.records(), "retry_in_ms" => delay.as_millis() as u64);
            },
        );
        if timer.is_some() {
            self.retry_timer = timer;
        }
    }

    /// Writes as much as the socket takes, then updates backpressure and the finish.
    fn flush(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.lingering && !self.parked && self.away() && self.disk.buffer().is_some() {
            self.park(out, cx);
        }
        self.disk_step(out, cx);
        let pending = matches!(&self.state, State::Connected(c) if c.has_pending_output());
        if self.writable && (self.outbox.has_unsent() || pending) {
            let r = match self.opts.framing {
                Framing::Datagram => self.send_datagrams(out, cx),
                _ => self.write_stream().and_then(|()| self.check_acks(cx)),
            };
            if let Err(e) = r {
                if tls::is_tls_error(&e) {
                    out.count_errors(1);
                }
                self.failed(&e, cx);
            }
        }
        self.settle(cx);
        self.watch_acks(cx);
        // Records wait on disk and the outbox has room: go on in the next turn (other
        // events are served in between), as no readiness or timer would come.
        if self.replaying() && self.writable && self.outbox.buffered() < self.opts.buffer_bytes / 2
        {
            cx.enqueue(REFILL);
        }
    }

    /// Whether the peer is not connected (nor handshaking).
    fn away(&self) -> bool {
        !matches!(self.state, State::Connected(_))
    }

    /// Whether the disk buffer holds records to hand back and the peer is connected.
    fn replaying(&self) -> bool {
        matches!(self.state, State::Connected(_)) && self.disk.has_unloaded()
    }

    /// Acknowledges the records whose bytes the peer has acknowledged: one `ioctl` per
    /// call, made after each round of writes and by the [`ACK_POLL`] timer.
    fn check_acks(&mut self, cx: &mut Ctx) -> io::Result<()> {
        let State::Connected(conn) = &mut self.state else {
            return Ok(());
        };
        if !self.outbox.has_unconfirmed() {
            return Ok(());
        }
        let upto = conn.acked(self.outbox.sent())?;
        conn.check_peer()?;
        self.outbox.confirm(upto, cx);
        Ok(())
    }

    /// The flow now waits on acknowledgements only: polls them at the paused pace.
    fn hurry_acks(&mut self, cx: &mut Ctx) {
        self.ack_poll = ACK_POLL_PAUSED;
        if let Some(t) = self.ack_timer.take() {
            cx.cancel_timer(t);
        }
        self.watch_acks(cx);
    }

    /// Keeps the [`ACK_POLL`] timer set while written bytes wait for the peer's
    /// acknowledgement, and only then.
    fn watch_acks(&mut self, cx: &mut Ctx) {
        let waiting = matches!(self.state, State::Connected(_)) && self.outbox.has_unconfirmed();
        if waiting && self.ack_timer.is_none() {
            let every = if self.watermark.is_paused() || self.lingering || self.replaying() {
                self.ack_poll
            } else {
                ACK_POLL_EVERY
            };
            match cx.timer_after(every, ACK_POLL) {
                Ok(t) => self.ack_timer = Some(t),
                Err(e) => {
                    slog::error!(cx.logger(), "cannot set the acknowledgement timer"; "cog" => self.name, "error" => %e)
                }
            }
        }
    }

    fn write_stream(&mut self) -> io::Result<()> {
        let State::Connected(conn) = &mut self.state else {
            return Ok(());
        };
        // A peer that closed (FIN) still accepts writes, then resets: what is written
        // after its close would be acknowledged and lost. Look for the close first.
        self.scratch.resize(4096, 0);
        if conn.drain_input(&mut self.scratch)? {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the peer closed the connection",
            ));
        }
        loop {
            let mut iov = Vec::with_capacity(MAX_IOV);
            self.outbox.unsent(&mut iov);
            if iov.is_empty() {
                // TLS: the ciphertext of what was taken may still wait for the socket.
                if let Conn::Tls(s, _) = conn
                    && !s.flush_out()?
                {
                    self.writable = false;
                }
                return Ok(());
            }
            let r = conn.write_vectored(&iov);
            drop(iov);
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.outbox.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn send_datagrams(&mut self, out: &mut Out<Record>, cx: &mut Ctx) -> io::Result<()> {
        let State::Connected(conn) = &self.state else {
            return Ok(());
        };
        let fd = conn.fd();
        loop {
            let n = self.outbox.records().min(MAX_IOV);
            if n == 0 {
                return Ok(());
            }
            let mut lens = [0usize; MAX_IOV];
            let outbox = &self.outbox;
            let records = (0..n).map(|i| {
                let rec = outbox.record(i).unwrap_or_default();
                lens[i] = rec.len();
                rec
            });
            let e = match send_many(fd, records, libc::MSG_DONTWAIT) {
                Ok(k) => {
                    // A datagram is whole at the receiving socket once sent: nothing follows.
                    let sent: usize = lens[..k].iter().sum();
                    self.outbox.advance_acknowledged(sent, cx);
                    continue;
                }
                Err(e) => e,
            };
            match e.raw_os_error() {
                Some(libc::EAGAIN) => {
                    self.writable = false;
                    return Ok(());
                }
                Some(libc::ENOBUFS) => {
                    // No readiness event follows ENOBUFS: poll with a short timer.
                    self.writable = false;
                    if self.nobufs_timer.is_none() {
                        self.nobufs_timer = cx.timer_after(NOBUFS_WAIT, NOBUFS).ok();
                    }
                    return Ok(());
                }
                Some(libc::EMSGSIZE) => {
                    // The first message is too large for the socket: it can never go out.
                    let id = self.outbox.recs.front().map_or(0, |r| r.0);
                    slog::error!(cx.logger(), "record larger than the socket's largest datagram; dropped";
                        "cog" => self.name, "event" => id, "bytes" => lens[0]);
                    out.count_errors(1);
                    out.count_dropped(1);
                    self.outbox.advance_acknowledged(lens[0], cx);
                }
                _ => return Err(e),
            }
        }
    }

    /// Pauses the supplies above the high-water mark, resumes them below half of it, and
    /// completes a lingering finish once everything is out.
    fn settle(&mut self, cx: &mut Ctx) {
        let b = match self.disk.buffer_mut() {
            None => self.outbox.buffered(),
            Some(d) => {
                d.confirm(self.outbox.take_replayed(), |id| cx.event_done(id));
                d.pressure()
            }
        };
        match self.watermark.settle(b, cx) {
            Some(Backpressure::Paused) => {
                self.hurry_acks(cx);
                slog::debug!(cx.logger(), "buffer full: pausing supplies"; "cog" => self.name, "bytes" => b);
            }
            Some(Backpressure::Resumed) => {
                slog::debug!(cx.logger(), "buffer below low water: resuming supplies"; "cog" => self.name);
            }
            None => {}
        }
        if self.lingering && (self.drained() || (self.parked && !self.disk.has_pending())) {
            self.lingering = false;
            self.close(cx);
            cx.finished();
        }
    }

    /// Stops without the peer: what memory holds goes to disk, and the drain finishes once
    /// it is synced (at once when no sync runs), without waiting for the peer.
    /// Records the disk could not take (a failed write) are tried again every second
    /// (the retry timer is set after `close`, or by `finish` once it lingers), and the
    /// drain finishes once they are written and synced, or at `drain_timeout`.
    fn park(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        self.close(cx);
        let dropped = self.disk.park(&mut self.outbox, "peer", &self.target, cx);
        if dropped > 0 {
            out.count_dropped(dropped);
        }
        self.parked = true;
    }

    fn close(&mut self, cx: &mut Ctx) {
        if let State::Connecting(mut c) | State::Connected(mut c) =
            std::mem::replace(&mut self.state, State::Idle)
        {
            let _ = cx.deregister(c.source());
        }
        for t in [
            self.retry_timer.take(),
            self.connect_timer.take(),
            self.nobufs_timer.take(),
            self.ack_timer.take(),
            self.disk.take_retry(),
        ]
        .into_iter()
        .flatten()
        {
            cx.cancel_timer(t);
        }
    }

    fn sock_ready(&mut self, ev: &mio::event::Event, out: &mut Out<Record>, cx: &mut Ctx) {
        match &mut self.state {
            State::Connecting(c) => match c.connected() {
                Ok(false) => {}
                Ok(true) => {
                    if let State::Connecting(c) = std::mem::replace(&mut self.state, State::Idle) {
                        self.up(c, cx);
                    }
                }
                Err(e) => self.failed(&e, cx),
            },
            State::Connected(c) => {
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    let handshaking = c.is_handshaking();
                    self.scratch.resize(4096, 0);
                    let closed = match c.drain_input(&mut self.scratch) {
                        Ok(true) => Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the peer closed the connection",
                        )),
                        Ok(false) => match c.connected() {
                            Err(e) => Err(e),
                            Ok(_) => Ok(()),
                        },
                        Err(e) => Err(e),
                    };
                    if let Err(e) = closed {
                        if tls::is_tls_error(&e) {
                            out.count_errors(1);
                        }
                        self.failed(&e, cx);
                        return;
                    }
                    if handshaking && !c.is_handshaking() {
                        // Records waited for the handshake; the socket is writable.
                        self.writable = true;
                        self.established(cx);
                    }
                }
                if ev.is_writable() {
                    self.writable = true;
                }
            }
            State::Idle | State::Resolving => {}
        }
        self.flush(out, cx);
    }
}

impl Cog<Record> for Forward {
    fn name(&self) -> &str {
        self.name
    }

    fn inspect(&self, into: &mut crate::engine::control::Inspection) {
        into.buffer(
            "bytes",
            self.outbox.buffered(),
            Some(self.opts.buffer_bytes),
        );
        self.disk.inspect(into);
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.disk.start(cx)?;
        // An unreachable peer at start is not an error: records wait and the drain retries.
        self.dial(cx);
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Vec<Record>, out: &mut Out<Record>, cx: &mut Ctx) {
        match self.disk.buffer_mut() {
            None => {
                for r in batch.iter() {
                    self.render(r);
                }
            }
            Some(_) => {
                // Records go to memory while the peer is connected, nothing waits on disk
                // and buffer_bytes is not reached; the others go to disk, where what
                // follows a spilled record never overtakes it.
                let mut kept = 0;
                if !self.disk.has_unloaded() && !self.away() {
                    let high = self.opts.buffer_bytes;
                    while let Some(r) = batch.get(kept)
                        && self.outbox.buffered() < high
                    {
                        render_to(&self.opts, &mut self.scratch, &mut self.outbox, r);
                        kept += 1;
                    }
                }
                if kept < batch.len() {
                    // What memory holds goes to disk first: order holds, and a stop or a
                    // kill while the peer is away or slow loses nothing.
                    self.disk.adopt(&mut self.outbox, cx);
                    if let Some(disk) = self.disk.buffer_mut() {
                        for r in &batch[kept..] {
                            render_to(&self.opts, &mut self.scratch, disk, r);
                            // Large batches are written a MiB at a time (and segments
                            // closed on time); a failure is reported by the flush below.
                            if disk.should_write() && !disk.is_failing() {
                                let log = cx.logger().clone();
                                if let Ok(dropped) = disk.write_pending(self.name, &log)
                                    && dropped > 0
                                {
                                    out.count_dropped(dropped);
                                }
                            }
                        }
                    }
                }
            }
        }
        crate::record::pool::recycle(batch.drain(..));
        self.flush(out, cx);
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        match (local, why) {
            (REFILL, Wake::Immediate) => self.flush(out, cx),
            (DISK_RETRY, Wake::Timer(t)) if self.disk.is_retry(t) => self.flush(out, cx),
            (RETRY, Wake::Timer(t)) if self.retry_timer == Some(t) => self.dial(cx),
            (CONNECT_TIMEOUT, Wake::Timer(t)) if self.connect_timer == Some(t) => {
                self.connect_timer = None;
                match &self.state {
                    State::Connecting(_) => {
                        let e = io::Error::new(io::ErrorKind::TimedOut, "connect_timeout expired");
                        self.failed(&e, cx);
                    }
                    State::Connected(c) if c.is_handshaking() => {
                        let e = io::Error::new(
                            io::ErrorKind::TimedOut,
                            "TLS handshake not done within connect_timeout",
                        );
                        out.count_errors(1);
                        self.failed(&e, cx);
                    }
                    _ => {}
                }
            }
            (ACK_POLL, Wake::Timer(t)) if self.ack_timer == Some(t) => {
                self.ack_timer = None;
                let before = self.outbox.buffered();
                if let Err(e) = self.check_acks(cx) {
                    self.failed(&e, cx);
                }
                self.ack_poll = if self.outbox.buffered() < before {
                    ACK_POLL_PAUSED
                } else {
                    (self.ack_poll * 2).min(ACK_POLL_EVERY)
                };
                self.flush(out, cx);
            }
            (NOBUFS, Wake::Timer(t)) if self.nobufs_timer == Some(t) => {
                self.nobufs_timer = None;
                self.writable = matches!(self.state, State::Connected(_));
                self.flush(out, cx);
            }
            (DRAIN_DEADLINE, Wake::Timer(_)) if self.lingering => {
                if self.disk.buffer().is_none() {
                    self.unsent_reported = true;
                    slog::error!(cx.logger(), "drain_timeout expired at shutdown: records not sent or not acknowledged by the peer, lost unless their supply reads them again";
                        "cog" => self.name, "peer" => %self.target,
                        "unsent_records" => self.outbox.records(),
                        "unsent_bytes" => self.outbox.buffered());
                } else if !self.parked {
                    // What the peer acknowledged is not kept; the rest goes to disk, and
                    // the connection is reset, so that the peer does not get it now too.
                    let _ = self.check_acks(cx);
                    if let State::Connected(c) = &self.state {
                        c.abort_on_close();
                    }
                    let (dropped, _) = self.disk.stopping(&mut self.outbox, cx);
                    let dropped = dropped + self.disk.give_up(cx);
                    if dropped > 0 {
                        out.count_dropped(dropped);
                    }
                    slog::warn!(cx.logger(), "drain_timeout expired at shutdown: the records the peer did not acknowledge stay in the disk buffer for the next run";
                        "cog" => self.name, "peer" => %self.target,
                        "unacknowledged_records" => self.outbox.records(),
                        "disk_buffer_records" => self.disk.records());
                } else if self.disk.unwritten() > 0 {
                    slog::error!(cx.logger(), "drain_timeout expired at shutdown with the disk buffer still not writable";
                        "cog" => self.name, "unwritten_records" => self.disk.unwritten());
                } else {
                    slog::error!(cx.logger(), "drain_timeout expired at shutdown before the disk buffer's sync returned: the stop waits for it a few seconds more";
                        "cog" => self.name, "disk_buffer_records" => self.disk.records());
                }
                self.lingering = false;
                self.close(cx);
                cx.finished();
            }
            (l, Wake::Ready(ev)) if l == self.sock_local() => self.sock_ready(ev, out, cx),
            _ => {}
        }
    }

    fn job_done(&mut self, job: JobId, result: JobResult, out: &mut Out<Record>, cx: &mut Ctx) {
        let Some(result) = self.disk.job_done(job, result, cx) else {
            self.flush(out, cx);
            return;
        };
        if !matches!(self.state, State::Resolving) {
            return;
        }
        self.state = State::Idle;
        match lookup_result(result) {
            Ok(addrs) if !addrs.is_empty() => {
                // Rotating through the addresses lets a reconnect reach another one.
                let addr = addrs[self.next_addr % addrs.len()];
                self.next_addr = self.next_addr.wrapping_add(1);
                match TcpStream::connect(addr).and_then(|s| self.tcp_conn(s)) {
                    Ok(c) => self.connecting(c, cx),
                    Err(e) => self.failed(&e, cx),
                }
            }
            Ok(_) => self.failed(&io::Error::other("the name has no address"), cx),
            Err(e) => self.failed(&e, cx),
        }
        self.flush(out, cx);
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.disk.buffer().is_some() && self.away() {
            self.park(out, cx);
            if !self.disk.has_pending() {
                return;
            }
        } else {
            // What memory holds goes to disk too: a kill while the peer takes it, or the
            // end of drain_timeout, loses nothing.
            let (dropped, _) = self.disk.stopping(&mut self.outbox, cx);
            if dropped > 0 {
                out.count_dropped(dropped);
            }
        }
        if self.drained() {
            self.close(cx);
            return;
        }
        cx.linger();
        self.lingering = true;
        self.disk.keep_retrying(cx);
        self.hurry_acks(cx);
        if let Err(e) = cx.timer_after(self.opts.drain_timeout, DRAIN_DEADLINE) {
            slog::error!(cx.logger(), "cannot set the drain deadline"; "cog" => self.name, "error" => %e);
        }
    }

    fn done(&mut self, cx: &mut Ctx) {
        self.disk.confirm(self.outbox.take_replayed(), cx);
        self.close(cx);
        if self.disk.buffer().is_none() {
            // A stop that ended before drain_timeout (stop_timeout, a second signal) still
            // says what memory held.
            if !self.unsent_reported && self.outbox.records() > 0 {
                slog::error!(cx.logger(), "stopped before the peer acknowledged these records: records not sent, lost unless their supply reads them again";
                    "cog" => self.name, "peer" => %self.target,
                    "unsent_records" => self.outbox.records(),
                    "unsent_bytes" => self.outbox.buffered());
            }
            return;
        }
        self.disk.done_outbox(&self.outbox, cx);
    }
}

/// The addresses a name lookup job (run on a worker thread) found, or why it failed.
pub fn lookup_result(result: JobResult) -> io::Result<Vec<SocketAddr>> {
    match result {
        Ok(v) => match v.downcast::<io::Result<Vec<SocketAddr>>>() {
            Ok(r) => *r,
            Err(_) => Err(io::Error::other("unexpected lookup result")),
        },
        Err(p) => Err(io::Error::other(p.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket bound to a port and connected to that same port: what a connect to a local
    /// port nobody listens on can turn into when the kernel picks it as the source.
    #[test]
    fn a_socket_connected_to_itself_is_refused() {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a descriptor owned here, handed to the stream
        // (which closes it) once connected.
        let stream = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let p = &raw const addr as *const libc::sockaddr;
            assert_eq!(libc::bind(fd, p, len), 0, "{}", io::Error::last_os_error());
            let mut bound: libc::sockaddr_in = std::mem::zeroed();
            let mut blen = len;
            libc::getsockname(fd, &raw mut bound as *mut libc::sockaddr, &mut blen);
            let rc = libc::connect(fd, &raw const bound as *const libc::sockaddr, len);
            assert_eq!(rc, 0, "self-connect: {}", io::Error::last_os_error());
            TcpStream::from_raw_fd(fd)
        };
        assert_eq!(stream.peer_addr().ok(), stream.local_addr().ok());
        let err = Conn::Tcp(stream)
            .connected()
            .expect_err("a self-connection is refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn rewind_resends_every_record_written_since_the_last_acknowledgement() {
        let mut o = Outbox::default();
        for id in 1..=4 {
            o.push_with(id, |b| b.extend_from_slice(b"abcd\n"));
        }
        // Two whole records and part of a third written, none acknowledged.
        o.advance(12);
        assert!(o.has_unconfirmed());
        assert_eq!(o.rewind(), (3, 12));
        assert_eq!(o.sent(), 0);
        assert!(!o.has_unconfirmed());
        assert_eq!(o.buffered(), 20);
        // Exactly at a record's end: no partial one.
        o.advance(10);
        assert_eq!(o.rewind(), (2, 10));
        o.advance(20);
        assert_eq!(o.rewind(), (4, 20));
        assert_eq!(o.rewind(), (0, 0));
    }

    #[test]
    fn the_records_only_memory_holds_are_found_with_their_frames_across_chunks() {
        let mut o = Outbox::default();
        let frame = |i: u64| format!("{i:05}{}\n", "x".repeat(900 + (i % 7) as usize * 100));
        // Two read back from the disk, then enough fresh ones to fill several chunks.
        for i in 0..2 {
            o.push_with(REPLAYED, |b| b.extend_from_slice(frame(i).as_bytes()));
        }
        for i in 2..1000 {
            o.push_with(i, |b| b.extend_from_slice(frame(i).as_bytes()));
        }
        assert!(o.chunks.len() > 2, "{} chunks", o.chunks.len());
        assert_eq!(o.first_fresh(), 2);
        let got: Vec<(EventId, String)> = o
            .frames_from(o.first_fresh())
            .map(|(id, f)| (id, String::from_utf8_lossy(f).into_owned()))
            .collect();
        let want: Vec<(EventId, String)> = (2..1000).map(|i| (i, frame(i))).collect();
        assert_eq!(got, want);
        // Once on disk, they count as read back; newer records are fresh again.
        o.mark_replayed(2);
        assert_eq!(o.first_fresh(), o.records());
        o.push_with(1000, |b| b.extend_from_slice(frame(1000).as_bytes()));
        assert_eq!(o.first_fresh(), 1000);
        // After some are acknowledged, the frames start at the first one left.
        o.advance(frame(0).len() + frame(1).len() + frame(2).len());
        o.replayed = 0;
        let start = o.sent();
        o.recs.drain(..3);
        o.acked = start;
        let first: Vec<_> = o.frames_from(0).take(2).map(|(_, f)| f.to_vec()).collect();
        assert_eq!(first, vec![frame(3).into_bytes(), frame(4).into_bytes()]);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let mut top = Duration::from_millis(100);
        for _ in 0..10 {
            let d = b.next();
            assert!(
                d >= top / 2 && d <= top,
                "{d:?} outside [{:?}, {top:?}]",
                top / 2
            );
            top = (top * 2).min(Duration::from_millis(700));
        }
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
    }

    #[test]
    fn refusals_are_told_from_other_failures() {
        let tcp = Target::Tcp("127.0.0.1:1".into());
        let unix = Target::UnixStream("/nonexistent".into());
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let absent = io::Error::from_raw_os_error(libc::ENOENT);
        let timeout = io::Error::from_raw_os_error(libc::ETIMEDOUT);
        let unreachable = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert!(is_refusal(&refused, &tcp) && is_refusal(&refused, &unix));
        assert!(is_refusal(&absent, &unix) && !is_refusal(&absent, &tcp));
        assert!(!is_refusal(&timeout, &tcp) && !is_refusal(&unreachable, &tcp));
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..20 {
            let d = b.jitter(Duration::from_millis(250));
            assert!(d >= Duration::from_millis(125) && d <= Duration::from_millis(250));
        }
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_address("127.0.0.1:514").is_ok());
        assert!(check_address("[::1]:514").is_ok());
        assert!(check_address("logs.example:6514").is_ok());
        assert!(check_address("logs.example").is_err());
        assert!(check_address(":514").is_err());
        assert!(check_address("h:99999").is_err());
    }
}
