//! `udp_out`: one UDP datagram per record.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;

use crate::kit::format::{FormatSettings, OutputFormat};
use crate::kit::forward::send_many;
use crate::kit::on_error::{self, OnError, OnErrorSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::Record;
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

const SOCKET: Local = 0;
const RETRY: Local = 1;

/// Wait after `ENOBUFS` (the interface queue is full; no readiness event says when it
/// drains).
const NOBUFS_WAIT: Duration = Duration::from_millis(5);
/// Wait after an error that concerns the path, not the datagram (network unreachable...).
const FAIL_WAIT: Duration = Duration::from_secs(1);
/// How long a shutdown waits for held datagrams to go out before giving up on them.
const FINISH_PATIENCE: Duration = Duration::from_secs(5);

/// Sends each record as one UDP datagram, rendered in `format` without a trailing
/// newline.
///
/// A record whose rendering is longer than `max_message_bytes` is not sent, nor split: it
/// is handled per `on_error` (counted, logged with its event id, and by default passed on
/// with the reason in `error`). A datagram the kernel still refuses as too long for the
/// path (`EMSGSIZE`) is counted as an error, logged and acknowledged: it is not retried.
///
/// Sends never block. When the socket's send buffer is full (`EAGAIN`) the cog waits for
/// writability, after `ENOBUFS` it retries shortly; datagrams wait in a buffer of at most
/// `buffer_bytes`, and while it is over that size the supplies are paused. A failure of the
/// path (network unreachable, say) holds the data, pauses the supplies, logs once and
/// retries every second. An ICMP "port unreachable" answer to an earlier datagram makes
/// the next send fail with "connection refused": that datagram is sent again.
///
/// **Acknowledgement.** A record is acknowledged (`event_done`) once `send(2)` accepted
/// its datagram. UDP gives no delivery guarantee: the datagram may still be lost on the
/// way or at a receiver that is not listening or is overloaded, and nothing tells.
///
/// ```toml
/// [[train.cog]]
/// type = "udp_out"
/// address = "127.0.0.1:5514"     # host names are resolved at start
/// format = "raw"                 # raw | json | template
/// max_message_bytes = "65507"    # longer renderings go to on_error
/// buffer_bytes = "4MiB"          # held datagrams beyond this pause the supplies
/// on_error = "keep"              # drop | keep | train:NAME
/// ```
///
/// From Rust: `UdpOut::from_settings(&UdpOutSettings { address: "127.0.0.1:5514".into(),
/// ..Default::default() }, on_error)`, `on_error` an [`OnError`] over records.
pub struct UdpOut {
    address: String,
    format: OutputFormat,
    max: usize,
    buffer_bytes: usize,
    on_error: OnError<Record>,
    socket: Option<UdpSocket>,
    peer: Option<SocketAddr>,
    /// Rendered datagrams waiting to be sent, back to back from `start`.
    bytes: Vec<u8>,
    start: usize,
    held: VecDeque<(usize, EventId)>,
    scratch: Vec<u8>,
    /// Waiting for writability or a retry timer: sending now would fail again.
    blocked: bool,
    failing: bool,
    paused_supplies: bool,
    finish_deadline: Option<Instant>,
    /// Records that failed after their batch was handed over (counted on the next call).
    late_errors: u64,
}

/// The descriptor of `udp_out`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "udp_out",
    kind: CogKind::Drain,
    summary: "sends each record as one UDP datagram (raw, json or template); acknowledged \
              once sent, with no delivery guarantee",
    params: UdpOutSettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `udp_out`.
    pub struct UdpOutSettings {
        /// HOST:PORT to send to, e.g. "127.0.0.1:5514"; names are resolved at start
        #[setting(required)]
        address: String,
        /// How each record is rendered.
        #[setting(flatten)]
        format: FormatSettings,
        /// longer renderings are not sent but handled per on_error
        #[setting(size)]
        max_message_bytes: usize = "65507",
        /// datagrams held while the socket cannot send; beyond this the supplies pause
        #[setting(size)]
        buffer_bytes: usize = "4MiB",
        /// What becomes of a record that cannot be sent.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: UdpOutSettings = p.settings()?;
    let on_error = on_error::from_settings(&s.on_error, p, cx)?;
    Ok(Box::new(
        UdpOut::from_settings(&s, on_error).map_err(|e| p.setting_error(e))?,
    ))
}

/// What one attempt to send the held datagrams ended with.
enum Sent {
    /// Everything held went out.
    All,
    /// The socket cannot take more now; wait for readiness or the retry timer.
    Blocked,
}

impl UdpOut {
    /// Sends to `s.address` (`HOST:PORT`) as its settings say, without a configuration
    /// file; records that fail go to `on_error` (which `s.on_error` describes when the cog
    /// is built from configuration).
    pub fn from_settings(
        s: &UdpOutSettings,
        on_error: OnError<Record>,
    ) -> Result<Self, SettingError> {
        let address = &s.address;
        let valid = address.parse::<SocketAddr>().is_ok()
            || address
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(SettingError::new(
                "address",
                format!("expected HOST:PORT (e.g. \"127.0.0.1:5514\"), found {address:?}"),
            ));
        }
        let format = OutputFormat::new(&s.format)?;
        if s.max_message_bytes == 0 {
            return Err(SettingError::new("max_message_bytes", "must be above 0"));
        }
        if s.buffer_bytes == 0 {
            return Err(SettingError::new("buffer_bytes", "must be above 0"));
        }
        let out = UdpOut {
            address: address.clone(),
            format,
            max: s.max_message_bytes,
            buffer_bytes: s.buffer_bytes,
            on_error,
            socket: None,
            peer: None,
            bytes: Vec::new(),
            start: 0,
            held: VecDeque::new(),
            scratch: Vec::new(),
            blocked: false,
            failing: false,
            paused_supplies: false,
            finish_deadline: None,
            late_errors: 0,
        };
        Ok(out)
    }

    fn open(&mut self, cx: &mut Ctx) -> io::Result<()> {
        let peer =
            self.address.to_socket_addrs()?.next().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "the name has no address")
            })?;
        let local: SocketAddr = if peer.is_ipv6() {
            "[::]:0".parse()
        } else {
            "0.0.0.0:0".parse()
        }
        .map_err(io::Error::other)?;
        let mut socket = UdpSocket::bind(local)?;
        // Connected: the kernel keeps the route, and ICMP errors come back to us.
        socket.connect(peer)?;
        cx.register(&mut socket, SOCKET, Interest::WRITABLE)?;
        self.socket = Some(socket);
        self.peer = Some(peer);
        Ok(())
    }

    fn held_bytes(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Sends held datagrams in order until none is left or the socket refuses more.
    fn send_held(&mut self, cx: &mut Ctx) -> Sent {
        let Some(socket) = self.socket.as_ref() else {
            return Sent::Blocked;
        };
        let mut refused_retry = false;
        while let Some(&(len, id)) = self.held.front() {
            match send_held_batch(socket, &self.bytes[self.start..], &self.held) {
                Ok(sent) => {
                    refused_retry = false;
                    for (len, id) in self.held.drain(..sent) {
                        self.start += len;
                        cx.event_done(id);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::Blocked,
                // The error belongs to an earlier datagram (ICMP port unreachable) and is
                // now cleared: this one was not sent, try it again once.
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) && !refused_retry => {
                    refused_retry = true;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    let _ = cx.timer_after(NOBUFS_WAIT, RETRY);
                    return Sent::Blocked;
                }
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    // Too long for this path: the datagram itself is at fault, not the socket.
                    self.start += len;
                    self.held.pop_front();
                    let why = format!("datagram of {len} bytes refused by the kernel: {e}");
                    slog::warn!(cx.logger(), "udp_out: datagram too long, dropped";
                        "event" => id, "reason" => why);
                    // Already rendered: the record is gone, so acknowledge and count.
                    cx.event_done(id);
                    self.late_errors += 1;
                }
                Err(e) => {
                    if !self.failing {
                        self.failing = true;
                        slog::error!(cx.logger(), "sending UDP datagrams failed; holding data, retrying";
                            "address" => &self.address, "error" => %e, "held" => self.held.len());
                    }
                    let _ = cx.timer_after(FAIL_WAIT, RETRY);
                    return Sent::Blocked;
                }
            }
        }
        self.bytes.clear();
        self.start = 0;
        if std::mem::take(&mut self.failing) {
            slog::info!(cx.logger(), "sending UDP datagrams works again"; "address" => &self.address);
        }
        Sent::All
    }

    /// Sends what it can, then sets backpressure and the finish state accordingly.
    fn pump(&mut self, cx: &mut Ctx) {
        self.blocked = matches!(self.send_held(cx), Sent::Blocked);
        if self.start > 0 && self.start >= self.bytes.len() / 2 {
            // Keep the buffer from growing while its head is consumed.
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        let over = self.held_bytes() > self.buffer_bytes || self.failing;
        if over && !self.paused_supplies {
            self.paused_supplies = true;
            cx.pause_supplies();
        } else if !over && self.paused_supplies && self.held_bytes() <= self.buffer_bytes / 2 {
            self.paused_supplies = false;
            cx.resume_supplies();
        }
        if let Some(deadline) = self.finish_deadline {
            if self.held.is_empty() {
                self.finish_deadline = None;
                cx.finished();
            } else if cx.now() >= deadline {
                let n = self.held.len();
                slog::error!(cx.logger(), "udp_out: shutting down with datagrams unsent";
                    "address" => &self.address, "unsent" => n);
                self.late_errors += n as u64;
                self.held.clear();
                self.bytes.clear();
                self.start = 0;
                self.finish_deadline = None;
                cx.finished();
            }
        }
    }
}

/// Sends the first datagrams of `held` (their bytes back to back at the start of `bytes`)
/// with one [`send_many`] call; returns how many went out, at least one. An error is the
/// first datagram's: none of them was sent.
fn send_held_batch(
    socket: &UdpSocket,
    bytes: &[u8],
    held: &VecDeque<(usize, EventId)>,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut at = 0;
    let datagrams = held.iter().map_while(|&(len, _)| {
        let dgram = bytes.get(at..at + len)?;
        at += len;
        Some(dgram)
    });
    match send_many(socket.as_raw_fd(), datagrams, 0)? {
        // Cannot happen (every held datagram has its bytes); never loop on it.
        0 => Err(io::Error::other(
            "held datagrams out of step with their bytes",
        )),
        k => Ok(k),
    }
}

impl Cog<Record> for UdpOut {
    fn name(&self) -> &str {
        "udp_out"
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.open(cx)
            .map_err(|e| format!("udp_out {}: {e}", self.address))?;
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Vec<Record>, out: &mut Out<Record>, cx: &mut Ctx) {
        for r in batch.drain(..) {
            self.scratch.clear();
            self.format.write(&r, &mut self.scratch);
            // Every rendering ends with the line's newline; a datagram carries none.
            self.scratch.pop();
            if self.scratch.len() > self.max {
                let why = format!(
                    "rendered record of {} bytes exceeds max_message_bytes ({})",
                    self.scratch.len(),
                    self.max
                );
                self.on_error.fail(r, "udp_out", &why, out, cx);
                continue;
            }
            self.bytes.extend_from_slice(&self.scratch);
            self.held.push_back((self.scratch.len(), r.id));
            crate::record::pool::recycle([r]);
        }
        if !self.blocked {
            self.pump(cx);
        }
        let late = std::mem::take(&mut self.late_errors);
        out.count_errors(late);
    }

    fn wake(&mut self, local: Local, _: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        // Readiness and timers both mean: try again.
        let _ = local;
        if !self.held.is_empty() || self.finish_deadline.is_some() {
            self.pump(cx);
        } else {
            self.blocked = false;
        }
        let late = std::mem::take(&mut self.late_errors);
        out.count_errors(late);
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if !self.held.is_empty() {
            cx.linger();
            self.finish_deadline = Some(cx.now() + FINISH_PATIENCE);
            // The loop might otherwise wait on readiness that never comes.
            let _ = cx.timer_after(FINISH_PATIENCE, RETRY);
            self.pump(cx);
        }
        let late = std::mem::take(&mut self.late_errors);
        out.count_errors(late);
    }

    fn done(&mut self, cx: &mut Ctx) {
        if let Some(mut s) = self.socket.take() {
            let _ = cx.deregister(&mut s);
        }
    }
}
