//! `relp_in`: a RELP server (rsyslog `omrelp`, librelp clients, deadbeat `relp_out`) that
//! answers each message only once the train's drains acknowledged it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::relp::{FrameReader, offers_command, write_frame};
use super::server_settings::{self, ConnectionSettings, PerIpSettings};
use super::tcp_in::{EVICT_MIN_IDLE, ip_group, peer_key, received_at_key, unread_bytes};
use crate::kit::ack::AckTracker;
use crate::kit::lines::LineInfo;
use crate::kit::on_error::LogLimiter;
use crate::kit::supply::with_line_emitter;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Record, Timestamp, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

const LISTENER: Local = 0;
const SWEEP: Local = 1;
const FIRST_CONN: Local = 2;
/// Answer bytes the socket has not taken yet beyond which a connection is no longer read:
/// a client that sends but never reads its answers cannot make them pile up.
const MAX_UNWRITTEN: usize = 64 << 10;
/// Reads per connection and turn, so one busy client cannot starve the others.
const READS_PER_TURN: usize = 8;
/// Connections accepted per turn before the listener yields.
const ACCEPTS_PER_TURN: usize = 64;
/// After `accept` fails for lack of resources, try again after this long.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Receives syslog messages over RELP and answers each `syslog` command with `rsp 200 OK`
/// only once the train's drain acknowledged the record (`event_done`; a `tee` copy is
/// best-effort, as it is for `tail` checkpoints), so a client
/// that keeps unanswered messages (as librelp and `relp_out` do) loses nothing when either
/// side crashes: what was not answered is sent again after the reconnection, and at most
/// the messages in flight (the window) arrive twice.
///
/// The session starts with the client's `open` (offers `relp_version`, `commands`), which
/// is answered with this server's offers (`commands=syslog`); `close` is answered once the
/// messages before it are, then the connection is closed; a client's `rsp` is ignored.
/// Answers go out in the order of the commands. A connection stops being read while
/// `window_size` of its messages are unanswered, while 64 KiB of answers wait for the
/// client to read them (a client that never reads cannot pile them up in memory), and
/// while the train is paused. A bad
/// frame (bad number, unknown command, over `max_frame_bytes`, no trailer) closes the
/// connection with a counted, logged error; other clients are served on.
///
/// **Idle clients cannot lock others out**, as with `tcp_in`: when `max_connections` are
/// open, or `max_connections_per_ip` from the new client's address (IPv6: its /64), the
/// longest-idle connection (of that address) is closed for the new one; a connection
/// with messages unanswered, answers unwritten, bytes unread or activity in the last
/// second is never closed for it (the new one is, if no other can go). Both are counted
/// as errors and logged at a bounded rate. `idle_timeout` closes connections that have
/// nothing in flight and were silent that long, and those whose client has not read an
/// answer for that long. The listen backlog is 4096.
///
/// At shutdown the listener closes and the connections are no longer read; answers are
/// sent for whatever the drains acknowledge while they finish, then each client gets
/// `serverclose` and the connection is closed. Fields: `message` (the data of the `syslog`
/// command, one trailing LF removed), `peer` (`"IP:port"`), `received_at`.
///
/// ```toml
/// [[train.cog]]
/// type = "relp_in"
/// listen = "0.0.0.0:2514"
/// window_size = 128         # unanswered messages per connection before reading stops
/// max_frame_bytes = "128KiB"
/// max_connections = 1024
/// max_connections_per_ip = 256  # 0: no limit per address
/// idle_timeout = "5m"       # 0s: never
/// ```
///
/// From Rust: `RelpIn::from_settings(&RelpInSettings { listen: "0.0.0.0:2514".into(),
/// ..Default::default() })`.
#[derive(Debug)]
pub struct RelpIn {
    addr: SocketAddr,
    window: usize,
    max_frame: usize,
    max_connections: usize,
    /// `usize::MAX`: no limit.
    max_connections_per_ip: usize,
    idle_timeout: Option<Duration>,
    listener: Option<mio::net::TcpListener>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    tracker: AckTracker,
    /// Serial number of the next connection, its key in `tracker`.
    serial: u64,
    paused: bool,
    finishing: bool,
    /// Open connections per address group (see `ip_group`).
    per_ip: HashMap<IpAddr, usize>,
    /// Connections refused at a limit, and idle ones closed for new ones.
    refused: u64,
    evicted: u64,
    limits_log: LogLimiter,
}

/// The descriptor of `relp_in`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "relp_in",
    kind: CogKind::Supply,
    summary: "RELP server: syslog messages answered once the drains acknowledged them (rsyslog omrelp, relp_out)",
    params: RelpInSettings::PARAMS,
    fields: &[
        ("message", "the syslog message, as raw bytes"),
        ("peer", "the sending peer (per connection)"),
        ("received_at", "when the bytes were read"),
    ],
    build,
};

crate::settings! {
    /// Settings of `relp_in`.
    pub struct RelpInSettings {
        /// address and port, e.g. "0.0.0.0:2514"
        #[setting(required)]
        listen: String,
        /// unanswered messages per connection before it is no longer read
        window_size: i64 = "128",
        /// largest data of a frame; a larger frame closes the connection (counted as an error)
        #[setting(size)]
        max_frame_bytes: usize = "128KiB",
        /// How many connections, and for how long.
        #[setting(flatten)]
        connections: ConnectionSettings,
        /// The limit per client address.
        #[setting(flatten)]
        per_ip: PerIpSettings,
    }
}

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: RelpInSettings = p.settings()?;
    Ok(Box::new(
        RelpIn::from_settings(&s).map_err(|e| p.setting_error(e))?,
    ))
}

/// An answer owed, in command order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    /// `rsp 200 OK` to a `syslog` command, once its record is acknowledged.
    Syslog(u32),
    /// An empty `rsp` to `close` (as librelp answers it), then the connection closes.
    Close(u32),
}

#[derive(Debug)]
struct Conn {
    sock: mio::net::TcpStream,
    peer: Value,
    ip: IpAddr,
    /// When bytes were last read or answers last written.
    last_active: Instant,
    serial: u64,
    reader: FrameReader,
    opened: bool,
    /// Answers not sent yet, oldest first; the first `acked` syslog ones may go out.
    owed: VecDeque<Owed>,
    /// Syslog messages handed down the train so far (the tracker's "offset").
    handed: u64,
    /// Syslog messages answered so far.
    answered: u64,
    /// Bytes of answers waiting for the socket to take them.
    wbuf: Vec<u8>,
    /// Readiness not acted upon (paused, window full, or the turn's share used up).
    ready: bool,
    /// A `close` was answered: close once the answer is written.
    closing: bool,
}

impl Conn {
    fn unanswered(&self) -> usize {
        (self.handed - self.answered) as usize
    }

    /// Whether reading waits: for answers (the window), for the client to read them, or
    /// for the session's end.
    fn held_back(&self, window: usize) -> bool {
        self.unanswered() >= window || self.wbuf.len() >= MAX_UNWRITTEN || self.closing
    }
}

fn conn_local(i: usize) -> Local {
    FIRST_CONN + i as Local
}

impl RelpIn {
    /// A server made from its settings, without a configuration file.
    pub fn from_settings(s: &RelpInSettings) -> Result<Self, SettingError> {
        let addr = server_settings::listen_addr(&s.listen, "127.0.0.1:2514")?;
        if !(1..=100_000).contains(&s.window_size) {
            return Err(SettingError::new(
                "window_size",
                "must be within 1..=100000",
            ));
        }
        if s.max_frame_bytes == 0 || s.max_frame_bytes > 64 << 20 {
            return Err(SettingError::new(
                "max_frame_bytes",
                "must be within 1 byte..64MiB",
            ));
        }
        let r = RelpIn {
            addr,
            window: s.window_size as usize,
            max_frame: s.max_frame_bytes,
            max_connections: s.connections.max_connections()?,
            max_connections_per_ip: s.per_ip.limit()?,
            idle_timeout: s.connections.idle_timeout(),
            listener: None,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            tracker: AckTracker::new(),
            serial: 0,
            paused: false,
            finishing: false,
            per_ip: HashMap::new(),
            refused: 0,
            evicted: 0,
            limits_log: LogLimiter::default(),
        };
        Ok(r)
    }

    /// The longest-idle connection (from `ip` if given) that can go: nothing in flight
    /// (no message unanswered, no answer unwritten, no byte unread in its kernel), no
    /// readiness pending, quiet for at least [`EVICT_MIN_IDLE`].
    fn longest_idle(&self, ip: Option<IpAddr>, now: Instant) -> Option<usize> {
        let mut candidates: Vec<(Instant, usize)> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                let eligible = !c.ready
                    && c.unanswered() == 0
                    && c.owed.is_empty()
                    && c.wbuf.is_empty()
                    && !c.closing
                    && ip.is_none_or(|ip| c.ip == ip)
                    && now.saturating_duration_since(c.last_active) >= EVICT_MIN_IDLE;
                eligible.then_some((c.last_active, i))
            })
            .collect();
        candidates.sort_unstable();
        candidates.into_iter().map(|(_, i)| i).find(|&i| {
            self.conns
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.reader.pending() == 0 && unread_bytes(&c.sock) == 0)
        })
    }

    /// Makes room for a connection from `ip` by closing the longest-idle one if a limit is
    /// reached; false if none can go.
    fn make_room(
        &mut self,
        ip: IpAddr,
        peer: SocketAddr,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) -> bool {
        let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        let (scope, limit, value) = if from_ip >= self.max_connections_per_ip {
            (
                Some(ip),
                "max_connections_per_ip",
                self.max_connections_per_ip,
            )
        } else if self.live >= self.max_connections {
            (None, "max_connections", self.max_connections)
        } else {
            return true;
        };
        let now = cx.now();
        let Some(victim) = self.longest_idle(scope, now) else {
            self.refused += 1;
            out.count_errors(1);
            if self.limits_log.allow("connection limits", "relp_in", cx) {
                slog::warn!(cx.logger(), "connection limit reached and every connection busy or active within a second; new connection closed";
                    "cog" => "relp_in", "peer" => %peer, "limit" => limit, "value" => value,
                    "refused_so_far" => self.refused);
            }
            return false;
        };
        self.evicted += 1;
        if self.limits_log.allow("connection limits", "relp_in", cx)
            && let Some(Some(c)) = self.conns.get(victim)
        {
            slog::warn!(cx.logger(), "connection limit reached; closed the longest-idle connection for a new one";
                "cog" => "relp_in", "limit" => limit, "value" => value,
                "closed" => c.peer.as_str().unwrap_or(""),
                "idle_ms" => now.saturating_duration_since(c.last_active).as_millis() as u64,
                "new" => %peer, "closed_so_far" => self.evicted);
        }
        self.drop_conn(victim, "", true, out, cx);
        true
    }

    /// Closes connections silent for `idle_timeout` with nothing in flight, and those
    /// whose client has not taken an answer for that long.
    fn sweep(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        let Some(idle) = self.idle_timeout else {
            return;
        };
        let now = cx.now();
        for i in 0..self.conns.len() {
            let Some(Some(c)) = self.conns.get(i) else {
                continue;
            };
            if now.saturating_duration_since(c.last_active) < idle {
                continue;
            }
            if !c.wbuf.is_empty() {
                let e = format!(
                    "the client has read no answer for {idle:?} ({} bytes waiting)",
                    c.wbuf.len()
                );
                self.drop_conn(i, &e, true, out, cx);
            } else if !c.ready && c.unanswered() == 0 && c.owed.is_empty() {
                slog::info!(cx.logger(), "idle connection closed";
                    "cog" => "relp_in", "peer" => c.peer.as_str().unwrap_or(""));
                self.drop_conn(i, "", false, out, cx);
            }
        }
    }

    fn accept_some(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((sock, peer)) => self.admit(sock, peer, out, cx),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    slog::error!(cx.logger(), "accepting a connection failed; retrying soon";
                        "cog" => "relp_in", "error" => %e);
                    out.count_errors(1);
                    let _ = cx.timer_after(ACCEPT_RETRY, LISTENER);
                    return;
                }
            }
        }
        cx.enqueue(LISTENER);
    }

    fn admit(
        &mut self,
        mut sock: mio::net::TcpStream,
        peer: SocketAddr,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) {
        let ip = ip_group(peer.ip());
        if !self.make_room(ip, peer, out, cx) {
            return;
        }
        let i = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = cx.register(
            &mut sock,
            conn_local(i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            slog::error!(cx.logger(), "cannot watch a new connection; closing it";
                "cog" => "relp_in", "error" => %e);
            out.count_errors(1);
            self.free.push(i);
            return;
        }
        // Answers are small writes: without this, Nagle's algorithm holds each one until
        // the client's delayed ACK, a 40 ms stall per window.
        let _ = sock.set_nodelay(true);
        self.serial += 1;
        self.tracker.open(self.serial, 0);
        *self.per_ip.entry(ip).or_insert(0) += 1;
        slog::debug!(cx.logger(), "RELP client connected"; "cog" => "relp_in", "peer" => %peer);
        self.conns[i] = Some(Conn {
            sock,
            peer: Value::Shared(peer.to_string().into()),
            ip,
            last_active: cx.now(),
            serial: self.serial,
            reader: FrameReader::new(self.max_frame),
            opened: false,
            owed: VecDeque::new(),
            handed: 0,
            answered: 0,
            wbuf: Vec::new(),
            ready: true,
            closing: false,
        });
        self.live += 1;
        // Data may have arrived with the connection; readiness for it may not come again.
        cx.enqueue(conn_local(i));
    }

    /// Reads and handles frames of connection `i` while the window and the turn allow.
    fn serve(&mut self, i: usize, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.paused || self.finishing {
            if let Some(Some(c)) = self.conns.get_mut(i) {
                c.ready = true;
            }
            return;
        }
        let window = self.window;
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        // Frames already read but held back by the window come first.
        if let Err(e) = handle_frames(c, window, &mut self.tracker, out, cx) {
            return self.drop_conn(i, &e, true, out, cx);
        }
        for _ in 0..READS_PER_TURN {
            if c.held_back(window) {
                c.ready = true;
                return;
            }
            match c.reader.read_from(&mut c.sock) {
                Ok(0) => {
                    let held = c.reader.pending();
                    let e = if held > 0 {
                        format!("client closed the connection inside a frame ({held} bytes)")
                    } else {
                        String::new()
                    };
                    return self.drop_conn(i, &e, held > 0, out, cx);
                }
                Ok(_) => {
                    c.last_active = cx.now();
                    if let Err(e) = handle_frames(c, window, &mut self.tracker, out, cx) {
                        return self.drop_conn(i, &e, true, out, cx);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.ready = false;
                    c.reader.shrink_if_empty();
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let e = format!("reading failed: {e}");
                    return self.drop_conn(i, &e, true, out, cx);
                }
            }
        }
        c.ready = true;
        cx.enqueue(conn_local(i));
    }

    /// Closes connection `i`; `error` (when not empty) is logged, and counted when `count`.
    fn drop_conn(
        &mut self,
        i: usize,
        error: &str,
        count: bool,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) {
        let Some(Some(mut c)) = self.conns.get_mut(i).map(Option::take) else {
            return;
        };
        let _ = cx.deregister(&mut c.sock);
        cx.dequeue(conn_local(i));
        if !error.is_empty() {
            slog::warn!(cx.logger(), "RELP connection closed";
                "cog" => "relp_in", "peer" => c.peer.as_str().unwrap_or(""), "error" => error,
                "unanswered" => c.unanswered());
        }
        if count {
            out.count_errors(1);
        }
        // Records of this connection already handed down still go out; their client sends
        // them again after reconnecting (the window's duplicates).
        self.tracker.close(c.serial);
        if let Some(n) = self.per_ip.get_mut(&c.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&c.ip);
            }
        }
        self.free.push(i);
        self.live -= 1;
    }

    /// Sends the answers that became due on every connection.
    fn answer_all(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        for i in 0..self.conns.len() {
            self.answer(i, out, cx);
        }
    }

    /// Queues connection `i`'s due answers and writes what the socket takes.
    fn answer(&mut self, i: usize, out: &mut Out<Record>, cx: &mut Ctx) {
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        let acked = self.tracker.committed(c.serial).unwrap_or(0);
        let before = c.held_back(self.window);
        while let Some(&owed) = c.owed.front() {
            match owed {
                Owed::Syslog(txnr) if c.answered < acked => {
                    write_frame(&mut c.wbuf, txnr, "rsp", b"200 OK");
                    c.answered += 1;
                }
                Owed::Close(txnr) => {
                    write_frame(&mut c.wbuf, txnr, "rsp", b"");
                    c.closing = true;
                }
                Owed::Syslog(_) => break,
            }
            c.owed.pop_front();
        }
        let unwritten = c.wbuf.len();
        let written = write_out(c);
        if c.wbuf.len() < unwritten {
            c.last_active = cx.now();
        }
        let reopened = before && !c.held_back(self.window) && c.ready;
        match written {
            Ok(()) if c.closing && c.wbuf.is_empty() => {
                slog::debug!(cx.logger(), "RELP client closed the session";
                    "cog" => "relp_in", "peer" => c.peer.as_str().unwrap_or(""));
                self.drop_conn(i, "", false, out, cx)
            }
            Ok(()) => {
                if reopened {
                    cx.enqueue(conn_local(i));
                }
            }
            Err(e) => {
                let e = format!("writing answers failed: {e}");
                self.drop_conn(i, &e, true, out, cx)
            }
        }
    }
}

/// Writes what the socket takes of `c.wbuf`.
fn write_out(c: &mut Conn) -> io::Result<()> {
    let mut done = 0;
    let r = loop {
        if done == c.wbuf.len() {
            break Ok(());
        }
        match c.sock.write(&c.wbuf[done..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    c.wbuf.drain(..done);
    r
}

/// Handles the complete frames `c` holds, as far as its window allows.
fn handle_frames(
    c: &mut Conn,
    window: usize,
    tracker: &mut AckTracker,
    out: &mut Out<Record>,
    cx: &mut Ctx,
) -> Result<(), String> {
    let ts = Timestamp::now();
    let mut answers = false;
    let r = with_line_emitter(|em| {
        while !c.held_back(window) {
            let f = match c.reader.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("bad frame: {e}")),
            };
            match f.command {
                b"syslog" if c.opened => {
                    let msg = f.data.strip_suffix(b"\n").unwrap_or(f.data);
                    let info = LineInfo {
                        offset: c.handed,
                        truncated: false,
                        unterminated: false,
                    };
                    let rec = em.emit(msg, &info, 2, out, cx);
                    rec.fields.append_slot(peer_key()).set(c.peer.clone());
                    rec.fields
                        .append_slot(received_at_key())
                        .set(Value::Time(ts));
                    c.handed += 1;
                    tracker.sent(c.serial, rec.id, c.handed);
                    c.owed.push_back(Owed::Syslog(f.txnr));
                }
                b"open" if !c.opened => {
                    if !offers_command(f.data, "syslog") {
                        let t = f.txnr;
                        write_frame(
                            &mut c.wbuf,
                            t,
                            "rsp",
                            b"500 the client offers no syslog command",
                        );
                        return Err("the client's open offers no syslog command".into());
                    }
                    c.opened = true;
                    let offers = format!(
                        "200 OK\nrelp_version=0\nrelp_software=deadbeat,{},-\ncommands=syslog",
                        env!("CARGO_PKG_VERSION")
                    );
                    write_frame(&mut c.wbuf, f.txnr, "rsp", offers.as_bytes());
                    answers = true;
                }
                b"close" if c.opened => {
                    c.owed.push_back(Owed::Close(f.txnr));
                    answers = true;
                }
                // A client's answer (to `serverclose`, say) needs nothing from us.
                b"rsp" => {}
                other => {
                    let what = String::from_utf8_lossy(other).into_owned();
                    let e = if c.opened {
                        format!("unexpected command {what:?}")
                    } else {
                        format!("command {what:?} before open")
                    };
                    let t = f.txnr;
                    write_frame(&mut c.wbuf, t, "rsp", format!("500 {e}").as_bytes());
                    return Err(e);
                }
            }
        }
        Ok(())
    });
    if answers && c.owed.front().is_some_and(|o| matches!(o, Owed::Close(_))) {
        // A close with nothing before it is answered at once.
        if let Some(Owed::Close(t)) = c.owed.pop_front() {
            write_frame(&mut c.wbuf, t, "rsp", b"");
            c.closing = true;
        }
    }
    // An error's answer goes out too, before the connection closes.
    let written = write_out(c);
    r?;
    written.map_err(|e| format!("writing answers failed: {e}"))
}

impl Cog<Record> for RelpIn {
    fn name(&self) -> &str {
        "relp_in"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let l = server_settings::listen_tcp("relp_in", self.addr, LISTENER, false, cx)?;
        self.listener = Some(l);
        if let Some(idle) = self.idle_timeout {
            // A quarter of the timeout: a silent connection goes at most 25% late.
            let period = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(60));
            cx.timer_every(period, SWEEP)?;
        }
        Ok(())
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        if local == SWEEP {
            if matches!(why, Wake::Timer(_)) && !self.finishing {
                self.sweep(out, cx);
            }
            return;
        }
        if local == LISTENER {
            if !self.paused && !self.finishing {
                self.accept_some(out, cx);
            }
            return;
        }
        let i = (local - FIRST_CONN) as usize;
        if let Wake::Ready(ev) = why
            && ev.is_writable()
        {
            self.answer(i, out, cx);
        }
        self.serve(i, out, cx);
        if let Some(Some(c)) = self.conns.get(i)
            && c.closing
        {
            self.answer(i, out, cx);
        }
    }

    fn event_done(&mut self, ids: &[EventId], cx: &mut Ctx) {
        if self.tracker.done(ids) {
            let mut out = Out::default();
            self.answer_all(&mut out, cx);
            let (_, errors) = out.counts();
            if errors > 0 {
                slog::debug!(cx.logger(), "connections lost while answering"; "cog" => "relp_in", "count" => errors);
            }
        }
    }

    fn event_rename(&mut self, old: EventId, new: EventId, _: &mut Ctx) {
        self.tracker.rename(old, new);
    }

    fn pause(&mut self, cx: &mut Ctx) {
        self.paused = true;
        for (i, c) in self.conns.iter_mut().enumerate() {
            if let Some(c) = c {
                c.ready = true;
                cx.dequeue(conn_local(i));
            }
        }
    }

    fn resume(&mut self, cx: &mut Ctx) {
        self.paused = false;
        cx.enqueue(LISTENER);
        for (i, c) in self.conns.iter().enumerate() {
            if c.as_ref().is_some_and(|c| c.ready) {
                cx.enqueue(conn_local(i));
            }
        }
    }

    fn finish(&mut self, _: &mut Out<Record>, cx: &mut Ctx) {
        // Nothing more is read; what was handed down is answered as the drains acknowledge
        // it (event_done still arrives after finish), and `done` says goodbye.
        self.finishing = true;
        if let Some(mut l) = self.listener.take() {
            let _ = cx.deregister(&mut l);
        }
        let mut out = Out::default();
        self.answer_all(&mut out, cx);
    }

    fn done(&mut self, cx: &mut Ctx) {
        let mut out = Out::default();
        self.answer_all(&mut out, cx);
        let mut unanswered = 0;
        for i in 0..self.conns.len() {
            let Some(Some(c)) = self.conns.get_mut(i) else {
                continue;
            };
            unanswered += c.unanswered();
            write_frame(&mut c.wbuf, 0, "serverclose", b"");
            let _ = write_out(c);
            self.drop_conn(i, "", false, &mut out, cx);
        }
        if self.refused > 0 || self.evicted > 0 {
            slog::warn!(cx.logger(), "connection limits: new connections refused, idle ones closed for new ones";
                "cog" => "relp_in", "refused" => self.refused, "idle_closed" => self.evicted);
        }
        if unanswered > 0 {
            slog::info!(cx.logger(), "stopped with unanswered messages; their clients send them again";
                "cog" => "relp_in", "unanswered" => unanswered);
        }
    }
}
