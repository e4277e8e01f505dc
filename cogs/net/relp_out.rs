//! `relp_out`: records forwarded over RELP, acknowledged only once the server answered.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::relp::{FrameReader, next_txnr, offers_command, rsp_code, txnr_distance, write_frame};
use crate::kit::disk_buffer::{BufferSettings, DiskOptions, FrameSink, Spill};
use crate::kit::forward::{
    ForwardOptions, ForwardSettings, Framing, GENERATIONS, Outbox, Redial, SOCK_BASE, Target,
    Watermark, check_address, is_refusal,
};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::Record;
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

const RETRY: Local = 1;
const CONNECT_TIMEOUT: Local = 2;
const DRAIN_DEADLINE: Local = 3;
const RSP_TIMEOUT: Local = 4;
const DISK_RETRY: Local = 5;
/// Largest answer accepted from the server (an `open` answer lists its offers).
const MAX_RSP: usize = 64 << 10;

/// Forwards each record as a RELP `syslog` command (to rsyslog `imrelp`, deadbeat
/// `relp_in`, any librelp server) and acknowledges it to its supply only when the server
/// answered `rsp 200`: with a checkpointing supply (`tail`), a crash of this daemon or of
/// the server loses nothing.
///
/// Up to `window_size` commands are in flight unanswered. When the connection is lost (or
/// the server sends `serverclose`, or answers anything but 200), every unanswered record is
/// sent again, in order and with new transaction numbers, once the session is open again;
/// the server may so see the window's records twice, never fewer. Reconnection backs off
/// exponentially from `reconnect_initial` to `reconnect_max`, with jitter (a refused
/// connection is tried again every `reconnect_refused`), as `tcp_out` does, and while the server is away records wait in `buffer_bytes` (a full buffer pauses
/// the supplies). Each record is rendered by `format` (raw: the `message` field).
///
/// A server that stays connected but answers nothing for `rsp_timeout` while commands
/// wait (its host vanished, its process hangs) counts as a lost session too. A deadbeat
/// `relp_in` answers only once its drains wrote, so keep `rsp_timeout` above the longest
/// stall its outputs may have (each timeout resends the window), or `"0s"` to wait for ever.
///
/// At shutdown the drain waits (lingers) until every record is answered, at most
/// `drain_timeout` (and the engine's `stop_timeout`); what is left is logged and not
/// acknowledged, so a supply with a checkpoint sends it again on the next run.
///
/// **Disk buffer.** With `buffer = "disk"`, records beyond `buffer_bytes`, and every
/// record while no session is open, go to segment files in `buffer_dir` (default:
/// `buffer-TRAIN-COG` under `[state] dir`) instead of pausing the supplies; the unanswered
/// records memory holds join them there, ahead of them, when a session is lost, at the
/// first spill and at the stop. They are acknowledged once synced to disk, survive a
/// restart or a kill -9, and are sent in order, before newer records, once a session is
/// open again. A stop with the server away does not wait for it; at the end of
/// `drain_timeout` the unanswered records stay on disk for the next run. `max_bytes` and
/// `when_full` as for `tcp_out`.
///
/// ```toml
/// [[train.cog]]
/// type = "relp_out"
/// address = "collector.example:2514"
/// window_size = 128
/// rsp_timeout = "90s"            # a server silent this long while answers are due: reconnect
/// format = "raw"                 # raw | json | template
/// buffer_bytes = "8MiB"
/// reconnect_initial = "100ms"
/// reconnect_max = "2s"
/// reconnect_refused = "250ms"
/// connect_timeout = "5s"
/// drain_timeout = "30s"
/// buffer = "memory"              # memory | disk
/// max_bytes = "1GiB"             # the most the disk buffer holds
/// when_full = "block"            # block | drop_oldest
/// ```
///
/// From Rust: `RelpOut::from_settings(&RelpOutSettings { address: "collector.example:2514".into(),
/// ..Default::default() })`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "relp_out",
    kind: CogKind::Drain,
    summary: "forwards records over RELP; acknowledges each once the server answered, resends the unanswered after a reconnection",
    params: RelpOutSettings::PARAMS,
    fields: &[],
    build,
};

crate::settings! {
    /// Settings of `relp_out`.
    pub struct RelpOutSettings {
        /// "host:port" of the RELP server; a host name is resolved (off the loop) at every connection
        #[setting(required)]
        address: String,
        /// commands sent and not yet answered, at most
        window_size: i64 = "128",
        /// a session whose server answers nothing for this long while commands wait is dropped and opened again (its unanswered records resent); 0s: wait for ever
        rsp_timeout: Duration = "90s",
        /// Rendering, buffering and reconnection.
        #[setting(flatten)]
        forward: ForwardSettings,
        /// The disk buffer.
        #[setting(flatten)]
        buffer: BufferSettings,
    }
}

fn build(p: &CogParams<'_>, bx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: RelpOutSettings = p.settings()?;
    DiskOptions::resolve(&mut s.buffer, p, bx);
    Ok(Box::new(
        RelpOut::from_settings(&s).map_err(|e| p.setting_error(e))?,
    ))
}

enum State {
    /// Waiting for the retry timer.
    Idle,
    /// A name lookup runs on a worker thread.
    Resolving,
    Connecting(TcpStream),
    /// `open` sent, its answer awaited.
    Opening(TcpStream),
    Open(TcpStream),
}

/// The RELP client drain; see the descriptor's documentation for the behaviour.
pub struct RelpOut {
    address: String,
    window: usize,
    opts: ForwardOptions,
    /// Unanswered records, oldest first, each rendered with its trailing LF (so none is
    /// empty; the LF is not sent).
    outbox: Outbox,
    /// Transaction numbers of the records sent on this connection (the first
    /// `inflight.len()` of the outbox) and whether each was answered.
    inflight: VecDeque<(u32, bool)>,
    next_txnr: u32,
    reader: FrameReader,
    wbuf: Vec<u8>,
    writable: bool,
    state: State,
    generation: u32,
    redial: Redial,
    retry_timer: Option<TimerId>,
    connect_timer: Option<TimerId>,
    /// Longest silence of the server while commands wait for answers.
    rsp_timeout: Option<Duration>,
    rsp_timer: Option<TimerId>,
    /// When the server last answered (or the first command of a wait was sent).
    progress_at: Instant,
    watermark: Watermark,
    lingering: bool,
    /// Stopping with the server away: every record is on disk, the drain waits only for
    /// their sync.
    parked: bool,
    next_addr: usize,
    /// Records sent again after a reconnection, over the run.
    resent: u64,
    /// Records a lost session had sent unanswered, which the next one sends again.
    lost_inflight: u64,
    /// The transaction number of the `close` sent at shutdown once all was answered.
    close_txnr: Option<u32>,
    /// The server answered that `close`.
    close_answered: bool,
    /// The disk buffer (`buffer = "disk"`), if any.
    disk: Spill,
}

impl RelpOut {
    /// A drain made from its settings, without a configuration file.
    pub fn from_settings(s: &RelpOutSettings) -> Result<Self, SettingError> {
        check_address(&s.address).map_err(|m| SettingError::new("address", m))?;
        if !(1..=100_000).contains(&s.window_size) {
            return Err(SettingError::new(
                "window_size",
                "must be within 1..=100000",
            ));
        }
        let opts = ForwardOptions::new(&s.forward, Framing::Newline)?;
        let redial = Redial::new(&opts);
        let disk = DiskOptions::new(&s.buffer)?;
        let high = disk.as_ref().map_or(opts.buffer_bytes, |d| {
            usize::try_from(d.max_bytes).unwrap_or(usize::MAX)
        });
        let watermark = Watermark::new(high);
        let out = RelpOut {
            address: s.address.clone(),
            window: s.window_size as usize,
            opts,
            outbox: Outbox::default(),
            inflight: VecDeque::new(),
            next_txnr: 1,
            reader: FrameReader::new(MAX_RSP),
            wbuf: Vec::new(),
            writable: false,
            state: State::Idle,
            generation: 0,
            redial,
            retry_timer: None,
            connect_timer: None,
            rsp_timeout: (!s.rsp_timeout.is_zero()).then_some(s.rsp_timeout),
            rsp_timer: None,
            progress_at: Instant::now(),
            watermark,
            lingering: false,
            parked: false,
            next_addr: 0,
            resent: 0,
            lost_inflight: 0,
            close_txnr: None,
            close_answered: false,
            disk: Spill::new("relp_out", disk, DISK_RETRY),
        };
        Ok(out)
    }

    fn sock_local(&self) -> Local {
        SOCK_BASE + self.generation
    }

    fn dial(&mut self, cx: &mut Ctx) {
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
                    Err(e) => self.failed(&e, cx),
                }
            }
        }
    }

    fn connect(&mut self, addr: SocketAddr, cx: &mut Ctx) {
        let mut s = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => return self.failed(&e, cx),
        };
        self.generation = (self.generation + 1) % GENERATIONS;
        let local = self.sock_local();
        if let Err(e) = cx.register(&mut s, local, Interest::READABLE | Interest::WRITABLE) {
            return self.failed(&e, cx);
        }
        self.connect_timer = cx
            .timer_after(self.opts.connect_timeout, CONNECT_TIMEOUT)
            .ok();
        self.state = State::Connecting(s);
    }

    /// The TCP connection is up: open the RELP session.
    fn opening(&mut self, s: TcpStream) {
        // The connect timer runs on: a peer that accepts but never answers `open` (not a
        // RELP server) is given up after connect_timeout too.
        self.reader = FrameReader::new(MAX_RSP);
        self.wbuf.clear();
        self.inflight.clear();
        self.next_txnr = 1;
        let offers = format!(
            "relp_version=0\nrelp_software=deadbeat,{},-\ncommands=syslog",
            env!("CARGO_PKG_VERSION")
        );
        write_frame(&mut self.wbuf, self.next_txnr, "open", offers.as_bytes());
        self.next_txnr = next_txnr(self.next_txnr);
        self.state = State::Opening(s);
        self.writable = true;
    }

    /// A connection attempt failed or a session was lost: everything unanswered is sent
    /// again on the next session.
    fn failed(&mut self, e: &io::Error, cx: &mut Ctx) {
        if self.lingering && self.outbox.records() == 0 && self.disk.is_drained() {
            // Stopping with everything answered: the lost session is not missed.
            return self.end_linger(cx);
        }
        for t in [self.connect_timer.take(), self.rsp_timer.take()]
            .into_iter()
            .flatten()
        {
            cx.cancel_timer(t);
        }
        let was_up = matches!(self.state, State::Open(_) | State::Opening(_));
        if let State::Connecting(mut s) | State::Opening(mut s) | State::Open(mut s) =
            std::mem::replace(&mut self.state, State::Idle)
        {
            let _ = cx.deregister(&mut s);
        }
        self.writable = false;
        self.wbuf.clear();
        let unanswered = self.inflight.len();
        self.lost_inflight = self.lost_inflight.max(unanswered as u64);
        self.inflight.clear();
        // The server is away: what memory holds goes to disk, where it survives a stop or
        // a kill meanwhile, and new records follow it there.
        self.disk.adopt(&mut self.outbox, cx);
        // A refusal (the server restarting) is retried at a fixed short interval, as tcp_out does.
        let refused = is_refusal(e, &Target::Tcp(String::new()));
        let (address, outbox) = (&self.address, &self.outbox);
        let timer = self.redial.schedule(
            cx,
            RETRY,
            "relp_out",
            address,
            e,
            was_up,
            refused,
            |cx, delay| {
                slog::warn!(cx.logger(), "RELP session lost; resending the unanswered records after reconnecting";
                    "cog" => "relp_out", "peer" => address, "error" => %e,
                    "unanswered" => unanswered, "buffered_records" => outbox.records(),
                    "retry_in_ms" => delay.as_millis() as u64);
            },
        );
        if timer.is_some() {
            self.retry_timer = timer;
        }
    }

    /// Frames the records the window allows and writes what the socket takes.
    fn pump(&mut self, cx: &mut Ctx) {
        if let State::Open(_) = self.state {
            while self.inflight.len() < self.window && self.inflight.len() < self.outbox.records() {
                let Some(rec) = self.outbox.record(self.inflight.len()) else {
                    break;
                };
                let data = rec.strip_suffix(b"\n").unwrap_or(rec);
                if self.inflight.is_empty() {
                    self.progress_at = cx.now();
                }
                write_frame(&mut self.wbuf, self.next_txnr, "syslog", data);
                self.inflight.push_back((self.next_txnr, false));
                self.next_txnr = next_txnr(self.next_txnr);
            }
            if let Some(after) = self.rsp_timeout
                && self.rsp_timer.is_none()
                && !self.inflight.is_empty()
            {
                self.rsp_timer = cx.timer_after(after, RSP_TIMEOUT).ok();
            }
        }
        if !self.writable || self.wbuf.is_empty() {
            return;
        }
        let s = match &mut self.state {
            State::Opening(s) | State::Open(s) => s,
            _ => return,
        };
        let mut done = 0;
        let r = loop {
            if done == self.wbuf.len() {
                break Ok(());
            }
            match s.write(&self.wbuf[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    break Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.wbuf.drain(..done);
        if let Err(e) = r {
            self.failed(&e, cx);
        }
    }

    /// Reads the server's answers; returns an error when the session must end.
    fn read_answers(&mut self, cx: &mut Ctx) -> io::Result<()> {
        loop {
            let s = match &mut self.state {
                State::Opening(s) | State::Open(s) => s,
                _ => return Ok(()),
            };
            match self.reader.read_from(s) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the server closed the connection",
                    ));
                }
                Ok(_) => self.handle_frames(cx)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Handles the frames read; the records answered are acknowledged even when a later
    /// frame ends the session (answers followed by `serverclose` are the usual goodbye).
    fn handle_frames(&mut self, cx: &mut Ctx) -> io::Result<()> {
        let r = self.read_frames(cx);
        let mut bytes = 0;
        let mut n = 0;
        while let Some(&(_, true)) = self.inflight.front() {
            bytes += self.outbox.record(n).map_or(0, <[u8]>::len);
            n += 1;
            self.inflight.pop_front();
        }
        if n > 0 {
            self.progress_at = cx.now();
            self.outbox.advance_acknowledged(bytes, cx);
        }
        r
    }

    fn read_frames(&mut self, cx: &mut Ctx) -> io::Result<()> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        loop {
            let f = match self.reader.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(bad(format!("bad frame from the server: {e}"))),
            };
            match f.command {
                b"rsp" => {
                    let code = rsp_code(f.data);
                    if let State::Opening(_) = self.state {
                        if f.txnr != 1 || code != Some(200) {
                            return Err(bad(format!(
                                "the server refused the session: {}",
                                String::from_utf8_lossy(f.data)
                            )));
                        }
                        if !offers_command(f.data, "syslog") {
                            return Err(bad("the server does not offer the syslog command".into()));
                        }
                        if let State::Opening(s) = std::mem::replace(&mut self.state, State::Idle) {
                            self.state = State::Open(s);
                        }
                        if let Some(t) = self.connect_timer.take() {
                            cx.cancel_timer(t);
                        }
                        self.redial.connected();
                        slog::info!(cx.logger(), "RELP session open"; "cog" => "relp_out",
                            "peer" => &self.address, "buffered_records" => self.outbox.records(),
                            "resending" => self.lost_inflight);
                        self.resent += std::mem::take(&mut self.lost_inflight);
                        continue;
                    }
                    if self.close_txnr == Some(f.txnr) {
                        self.close_answered = true;
                        continue;
                    }
                    // Commands go out with consecutive numbers: the answer's slot is at
                    // its distance from the oldest (searching a window of 100,000 for
                    // each answer would be quadratic).
                    let at = self
                        .inflight
                        .front()
                        .map_or(0, |&(t, _)| txnr_distance(t, f.txnr) as usize);
                    let slot = match self.inflight.get(at) {
                        Some(&(t, _)) if t == f.txnr => self.inflight.get_mut(at),
                        _ => self.inflight.iter_mut().find(|(t, _)| *t == f.txnr),
                    };
                    let Some(slot) = slot else {
                        return Err(bad(format!("answer to unknown transaction {}", f.txnr)));
                    };
                    if code != Some(200) {
                        let text = String::from_utf8_lossy(f.data).into_owned();
                        return Err(bad(format!("the server answered {text:?}")));
                    }
                    slot.1 = true;
                }
                b"serverclose" => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the server closed the session (serverclose)",
                    ));
                }
                other => {
                    let other = String::from_utf8_lossy(other).into_owned();
                    return Err(bad(format!("unexpected command {other:?} from the server")));
                }
            }
        }
        Ok(())
    }

    fn sock_ready(&mut self, ev: &mio::event::Event, cx: &mut Ctx) {
        match &mut self.state {
            State::Connecting(s) => {
                let peer = s.peer_addr();
                let err = match (s.take_error(), &peer) {
                    (Ok(Some(e)), _) | (Err(e), _) => Some(e),
                    (Ok(None), Ok(p)) if s.local_addr().is_ok_and(|l| l == *p) => {
                        Some(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            "connected to itself (nothing listens on the server's port)",
                        ))
                    }
                    (Ok(None), Ok(_)) => None,
                    (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
                    (Ok(None), Err(e)) => Some(io::Error::new(e.kind(), e.to_string())),
                };
                if let Some(e) = err {
                    return self.failed(&e, cx);
                }
                if let State::Connecting(s) = std::mem::replace(&mut self.state, State::Idle) {
                    // Commands trickle out as the window opens: Nagle's algorithm would hold
                    // each small write until the server's delayed ACK.
                    let _ = s.set_nodelay(true);
                    self.opening(s);
                }
            }
            State::Opening(_) | State::Open(_) => {
                if ev.is_writable() {
                    self.writable = true;
                }
                if (ev.is_readable() || ev.is_read_closed() || ev.is_error())
                    && let Err(e) = self.read_answers(cx)
                {
                    return self.failed(&e, cx);
                }
            }
            State::Idle | State::Resolving => {}
        }
        self.pump(cx);
        self.settle(cx);
    }

    /// Pauses the supplies above the high-water mark, resumes them below half of it, and
    /// completes a lingering finish once everything is answered.
    fn settle(&mut self, cx: &mut Ctx) {
        let held = match self.disk.buffer_mut() {
            None => self.outbox.buffered(),
            Some(d) => {
                d.confirm(self.outbox.take_replayed(), |id| cx.event_done(id));
                d.pressure()
            }
        };
        self.watermark.settle(held, cx);
        if self.lingering && self.parked {
            if !self.disk.has_pending() {
                self.end_linger(cx);
            }
            return;
        }
        if !self.lingering || self.outbox.records() > 0 || !self.disk.is_drained() {
            return;
        }
        // Everything is answered: end the session politely (`close`, answered by the
        // server) before stopping; without a session there is nothing to wait for.
        match (&self.state, self.close_txnr) {
            (State::Open(_), None) => {
                let t = self.next_txnr;
                self.next_txnr = next_txnr(t);
                write_frame(&mut self.wbuf, t, "close", b"");
                self.close_txnr = Some(t);
                self.pump(cx);
            }
            (State::Open(_), Some(_)) if !self.close_answered => {}
            _ => self.end_linger(cx),
        }
    }

    /// Writes and syncs what spilled, and refills the outbox from the disk buffer,
    /// oldest first, while a session is open; then sends what the window allows.
    fn disk_step(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.disk.buffer().is_none() {
            return;
        }
        if self.lingering && !self.parked && self.away() {
            self.park(out, cx);
        }
        let connected = !self.away();
        let dropped = self
            .disk
            .refill(&mut self.outbox, self.opts.buffer_bytes, connected, cx);
        if dropped > 0 {
            out.count_dropped(dropped);
        }
        self.pump(cx);
        self.settle(cx);
    }

    /// Whether no session is open.
    fn away(&self) -> bool {
        !matches!(self.state, State::Open(_))
    }

    /// Stops without the server: what memory holds goes to disk, and the drain finishes
    /// once it is synced (at once when no sync runs), without waiting for the server.
    /// Records the disk could not take (a failed write) are tried again every second
    /// (the retry timer is set after `close`, or by `finish` once it lingers), and the
    /// drain finishes once they are written and synced, or at `drain_timeout`.
    fn park(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        self.close(cx);
        let dropped = self
            .disk
            .park(&mut self.outbox, "server", &self.address, cx);
        if dropped > 0 {
            out.count_dropped(dropped);
        }
        self.parked = true;
    }

    fn end_linger(&mut self, cx: &mut Ctx) {
        self.lingering = false;
        self.close(cx);
        cx.finished();
    }

    fn close(&mut self, cx: &mut Ctx) {
        if let State::Connecting(mut s) | State::Opening(mut s) | State::Open(mut s) =
            std::mem::replace(&mut self.state, State::Idle)
        {
            let _ = cx.deregister(&mut s);
        }
        for t in [
            self.retry_timer.take(),
            self.connect_timer.take(),
            self.rsp_timer.take(),
            self.disk.take_retry(),
        ]
        .into_iter()
        .flatten()
        {
            cx.cancel_timer(t);
        }
    }
}

impl Cog<Record> for RelpOut {
    fn name(&self) -> &str {
        "relp_out"
    }

    fn inspect(&self, into: &mut crate::engine::control::Inspection) {
        into.buffer(
            "bytes",
            self.outbox.buffered(),
            Some(self.opts.buffer_bytes),
        );
        into.buffer("in_flight", self.inflight.len(), Some(self.window));
        self.disk.inspect(into);
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.disk.start(cx)?;
        // An unreachable server at start is not an error: records wait and the drain retries.
        self.dial(cx);
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Vec<Record>, out: &mut Out<Record>, cx: &mut Ctx) {
        let format = &self.opts.format;
        match self.disk.buffer_mut() {
            None => {
                for r in batch.iter() {
                    render(&mut self.outbox, format, r);
                }
            }
            Some(_) => {
                // Records go to memory while a session is open, nothing waits on disk and
                // buffer_bytes is not reached; the others go to disk, where what follows a
                // spilled record never overtakes it.
                let mut kept = 0;
                if !self.disk.has_unloaded() && !self.away() {
                    let high = self.opts.buffer_bytes;
                    while let Some(r) = batch.get(kept)
                        && self.outbox.buffered() < high
                    {
                        render(&mut self.outbox, format, r);
                        kept += 1;
                    }
                }
                if kept < batch.len() {
                    // What memory holds goes to disk first: order holds, and a stop or a
                    // kill while the server is away or slow loses nothing.
                    self.disk.adopt(&mut self.outbox, cx);
                    if let Some(disk) = self.disk.buffer_mut() {
                        for r in &batch[kept..] {
                            render(disk, format, r);
                            if disk.should_write() && !disk.is_failing() {
                                let log = cx.logger().clone();
                                if let Ok(dropped) = disk.write_pending("relp_out", &log)
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
        self.disk_step(out, cx);
        self.pump(cx);
        self.settle(cx);
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        self.wake_inner(local, why, out, cx);
        // Answers free room in the outbox: spilled records follow.
        self.disk_step(out, cx);
    }

    fn job_done(&mut self, job: JobId, result: JobResult, out: &mut Out<Record>, cx: &mut Ctx) {
        let Some(result) = self.disk.job_done(job, result, cx) else {
            self.disk_step(out, cx);
            return;
        };
        self.lookup_done(result, cx);
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.disk.buffer().is_some() && self.away() {
            self.park(out, cx);
            if !self.disk.has_pending() {
                return;
            }
        } else {
            // What memory holds goes to disk too: a kill while the server answers, or the
            // end of drain_timeout, loses nothing.
            let (dropped, _) = self.disk.stopping(&mut self.outbox, cx);
            if dropped > 0 {
                out.count_dropped(dropped);
            }
        }
        cx.linger();
        self.lingering = true;
        self.disk.keep_retrying(cx);
        if let Err(e) = cx.timer_after(self.opts.drain_timeout, DRAIN_DEADLINE) {
            slog::error!(cx.logger(), "cannot set the drain deadline"; "cog" => "relp_out", "error" => %e);
        }
        self.settle(cx);
    }

    fn done(&mut self, cx: &mut Ctx) {
        if self.outbox.records() > 0 && self.disk.buffer().is_none() {
            slog::warn!(cx.logger(), "stopped with unanswered records; not acknowledged";
                "cog" => "relp_out", "records" => self.outbox.records(),
                "bytes" => self.outbox.buffered());
        }
        if self.resent > 0 {
            slog::info!(cx.logger(), "records sent again after reconnections";
                "cog" => "relp_out", "resent" => self.resent);
        }
        self.disk.confirm(self.outbox.take_replayed(), cx);
        self.close(cx);
        self.disk.done_outbox(&self.outbox, cx);
    }
}

/// Renders `r` as one frame, with its trailing LF (not sent), into the outbox or the
/// disk buffer.
#[inline(always)]
fn render<S: FrameSink>(sink: &mut S, format: &crate::kit::format::OutputFormat, r: &Record) {
    sink.push_with(r.id, |b| {
        format.write(r, b);
        if b.last() != Some(&b'\n') {
            b.push(b'\n');
        }
    });
}

impl RelpOut {
    fn wake_inner(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        match (local, why) {
            (DISK_RETRY, Wake::Timer(t)) if self.disk.is_retry(t) => {}
            (RETRY, Wake::Timer(t)) if self.retry_timer == Some(t) => self.dial(cx),
            (CONNECT_TIMEOUT, Wake::Timer(t)) if self.connect_timer == Some(t) => {
                self.connect_timer = None;
                let what = match self.state {
                    State::Connecting(_) => "connect_timeout expired",
                    State::Opening(_) => "no answer to open within connect_timeout",
                    _ => return,
                };
                self.failed(&io::Error::new(io::ErrorKind::TimedOut, what), cx);
            }
            (RSP_TIMEOUT, Wake::Timer(t)) if self.rsp_timer == Some(t) => {
                self.rsp_timer = None;
                let (Some(limit), State::Open(_)) = (self.rsp_timeout, &self.state) else {
                    return;
                };
                if self.inflight.is_empty() {
                    return;
                }
                let silent = cx.now().saturating_duration_since(self.progress_at);
                if silent >= limit {
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer within rsp_timeout ({} ms)", limit.as_millis()),
                    );
                    self.failed(&e, cx);
                } else {
                    self.rsp_timer = cx.timer_after(limit - silent, RSP_TIMEOUT).ok();
                }
            }
            (DRAIN_DEADLINE, Wake::Timer(_)) if self.lingering => {
                if self.disk.buffer().is_none() {
                    slog::error!(cx.logger(), "drain_timeout expired at shutdown: records not answered";
                        "cog" => "relp_out", "peer" => &self.address,
                        "unanswered_records" => self.outbox.records(),
                        "unanswered_bytes" => self.outbox.buffered());
                } else if !self.parked {
                    let (dropped, _) = self.disk.stopping(&mut self.outbox, cx);
                    let dropped = dropped + self.disk.give_up(cx);
                    if dropped > 0 {
                        out.count_dropped(dropped);
                    }
                    slog::warn!(cx.logger(), "drain_timeout expired at shutdown: the records the server did not answer stay in the disk buffer for the next run";
                        "cog" => "relp_out", "peer" => &self.address,
                        "unanswered_records" => self.outbox.records(),
                        "disk_buffer_records" => self.disk.records());
                } else if self.disk.unwritten() > 0 {
                    slog::error!(cx.logger(), "drain_timeout expired at shutdown with the disk buffer still not writable";
                        "cog" => "relp_out", "unwritten_records" => self.disk.unwritten());
                } else {
                    slog::error!(cx.logger(), "drain_timeout expired at shutdown before the disk buffer's sync returned: the stop waits for it a few seconds more";
                        "cog" => "relp_out", "disk_buffer_records" => self.disk.records());
                }
                self.end_linger(cx);
            }
            (l, Wake::Ready(ev)) if l == self.sock_local() => self.sock_ready(ev, cx),
            _ => {}
        }
    }

    fn lookup_done(&mut self, result: JobResult, cx: &mut Ctx) {
        if !matches!(self.state, State::Resolving) {
            return;
        }
        self.state = State::Idle;
        match crate::kit::forward::lookup_result(result) {
            Ok(addrs) if !addrs.is_empty() => {
                let addr = addrs[self.next_addr % addrs.len()];
                self.next_addr = self.next_addr.wrapping_add(1);
                self.connect(addr, cx);
            }
            Ok(_) => self.failed(&io::Error::other("the name has no address"), cx),
            Err(e) => self.failed(&e, cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_like_tcp_out() {
        assert!(check_address("127.0.0.1:2514").is_ok());
        assert!(check_address("relp").is_err());
    }

    #[test]
    fn its_buffers_are_inspected_with_their_bounds() {
        let r = RelpOut::from_settings(&RelpOutSettings {
            address: "127.0.0.1:2514".into(),
            window_size: 64,
            ..Default::default()
        })
        .expect("valid settings");
        let mut ins = crate::engine::control::Inspection::default();
        r.inspect(&mut ins);
        let got: Vec<_> = ins
            .buffers
            .iter()
            .map(|b| (b.name, b.fill, b.limit))
            .collect();
        assert_eq!(
            got,
            [("bytes", 0, Some(8 << 20)), ("in_flight", 0, Some(64))]
        );
    }
}
