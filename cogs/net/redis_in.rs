//! `redis_in`: entries of a Redis stream read through a consumer group, each acknowledged
//! (`XACK`) only once every drain has written its record.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::types::RangeFrame;

use super::redis::{self, FrameScratch, Hello, IdHash, Link, Replies, StreamId};
use crate::kit::forward::{ForwardOptions, ForwardSettings, Framing};
use crate::kit::on_error::{self, LogLimiter, OnError, OnErrorSettings};
use crate::kit::tls::{self, Stream, TlsSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Key, Record, SharedStr, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

const CLAIM: Local = 10;
const RETRY_GROUP: Local = 11;
/// Stream ids per `XACK`.
const ACKS_PER_COMMAND: usize = 1000;
/// Entries asked for per `XPENDING` (the delivery counts of `max_deliveries`).
const PENDING_PER_CYCLE: usize = 1000;
/// How long the final `XACK`s at a stop may take, connection included.
const FINAL_ACK_TIME: Duration = Duration::from_secs(2);

/// Reads a Redis stream through a consumer group (`XREADGROUP`), one record per entry,
/// and acknowledges an entry (`XACK`) only once its record was acknowledged by every drain
/// (or dropped for good): a worker that dies leaves its unwritten entries pending in the
/// group, where another worker claims them.
///
/// At every connection the group is created if missing (`XGROUP CREATE ... MKSTREAM` at
/// `start_id`: `"0"` the whole stream, `"$"` only new entries; an existing group is kept),
/// then the consumer first reads its own pending entries (those delivered to it before and
/// never acknowledged: a restart with the same `consumer` name picks up where it stopped),
/// then new ones (`>`), `count` at a time, waiting on the server up to `block` for more
/// (the wait never blocks the loop: the socket is on the escapement). At most
/// `max_pending` records are out unacknowledged; beyond, and while a drain holds the
/// supplies paused, no more is read.
///
/// **Claims.** Every `claim_interval`, entries pending for longer than `claim_idle` in any
/// consumer of the group (a worker killed or gone) are claimed (`XAUTOCLAIM`) and emitted
/// here; claims are counted and logged. With `max_deliveries`, the entries to claim are
/// listed with their delivery counts (`XPENDING`) and claimed by id (`XCLAIM`): one
/// already delivered that many times is sent per `on_error` with the reason (a
/// dead-letter train, which may end in a `redis_out` to a dead-letter stream), and
/// acknowledged once that is written: a poison entry cannot loop for ever.
///
/// Records carry the entry's fields (`field`, by default `message`, as raw bytes like a
/// line of a file; the others as text) and its stream id in `id_field`. An entry without
/// `field`, or with a field name or another value that is not UTF-8 (kept as bytes), is
/// counted and sent per `on_error`. A key that is not a stream (`WRONGTYPE`) is logged
/// and counted, and tried again every `reconnect_max`. Errors that say the server cannot
/// serve now (`LOADING` after a restart, ...) and lost connections reconnect with backoff
/// as `tcp_out` does.
///
/// **Guarantee.** At least once. Duplicates come only from entries that were delivered
/// and not acknowledged: those of a worker killed before its drains wrote them (claimed
/// by another), and those read by a read still in flight when the daemon stops (pending
/// for this consumer: read again at its next start, or claimed). At a stop, the
/// acknowledgements due are sent on a short-lived connection (at most 2 s).
///
/// ```toml
/// [[train.cog]]
/// type = "redis_in"
/// address = "127.0.0.1:6379"
/// stream = "logs"
/// group = "deadbeat"
/// consumer = ""                  # default: HOSTNAME-PID
/// start_id = "0"                 # where a new group starts: "0" everything, "$" new entries
/// count = 1000                   # entries per read
/// block = "1s"                   # a read waits this long on the server for new entries
/// max_pending = 20000            # records emitted and not yet acknowledged, at most
/// claim_idle = "60s"             # claim entries pending this long elsewhere; "0s": never
/// claim_interval = "5s"
/// max_deliveries = 0             # entries delivered this often go to on_error; 0: no limit
/// field = "message"              # the field every entry must have (raw bytes); "": none
/// id_field = "_redis_id"
/// on_error = "keep"              # drop | keep | train:NAME
/// # tls = { ca = "ca.pem" }      # TLS (or address = "rediss://..."); cert and key: a client certificate
/// ```
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "redis_in",
    kind: CogKind::Supply,
    summary: "reads a Redis stream through a consumer group; XACKs an entry once its record is written, claims what dead workers left",
    params: RedisInSettings::PARAMS,
    fields: &[
        (
            "message",
            "the entry's `field` (raw bytes); the other fields of the entry as text",
        ),
        ("_redis_id", "the entry's stream id (`id_field`)"),
    ],
    build,
};

crate::settings! {
    /// Settings of `redis_in`.
    pub struct RedisInSettings {
        /// "host:port" of the Redis server, or a URL "redis://USER:PASSWORD@HOST:PORT/DB" (all but HOST optional; "rediss://": TLS); a host name is resolved (off the loop) at every connection
        #[setting(required)]
        address: String,
        /// the stream's key
        #[setting(required)]
        stream: String,
        /// the consumer group (created if missing)
        #[setting(required)]
        group: String,
        /// this consumer's name in the group; empty: HOSTNAME-PID
        consumer: String = "",
        /// where a group created here starts: "0" the whole stream, "$" new entries only, or an id
        start_id: String = "0",
        /// entries asked for per read
        count: i64 = "1000",
        /// how long a read waits on the server for new entries
        block: Duration = "1s",
        /// records emitted and not yet acknowledged, at most (then reading waits)
        max_pending: i64 = "20000",
        /// entries pending this long in any consumer are claimed; 0s: never
        claim_idle: Duration = "60s",
        /// how often entries to claim are looked for
        claim_interval: Duration = "5s",
        /// an entry delivered this many times is sent per on_error instead of claimed again; 0: no limit
        max_deliveries: i64 = "0",
        /// the field every entry must have, emitted as raw bytes; "": none required
        field: String = "message",
        /// the field that receives the entry's stream id; "": none
        id_field: String = "_redis_id",
        /// user name for AUTH (Redis 6 ACL); needs password
        username: Option<String>,
        /// password for AUTH
        password: Option<String>,
        /// database number (SELECT)
        db: i64 = "0",
        /// first reconnection delay; doubles per failure up to reconnect_max, with jitter
        reconnect_initial: Duration = "100ms",
        /// longest reconnection delay (and the wait before a refused group or read is tried again)
        reconnect_max: Duration = "2s",
        /// delay before trying again when a connection is refused (Redis restarting)
        reconnect_refused: Duration = "250ms",
        /// a connection attempt not completed by then is abandoned and retried
        connect_timeout: Duration = "5s",
        /// Where bad entries and entries delivered too often go.
        #[setting(flatten)]
        on_error: OnErrorSettings,
        /// TLS (also implied by a rediss:// address): { ca (default: the system store), verify = true, server_name (default: the address's host), cert and key (client certificate) }
        tls: Option<TlsSettings>,
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: RedisInSettings = p.settings()?;
    if let Some(t) = s.tls.as_mut() {
        t.resolve(cx.base_dir);
    }
    let on_error = on_error::from_settings(&s.on_error, p, cx)?;
    Ok(Box::new(
        RedisIn::from_settings(&s, on_error).map_err(|e| p.setting_error(e))?,
    ))
}

/// A command sent, whose answer is due.
enum Cmd {
    Hello,
    Create,
    Read { history: bool },
    Ack(Vec<StreamId>),
    Pending,
    ClaimDead(HashMap<StreamId, u64>),
    Claim,
    AutoClaim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not connected, or the group is being created.
    Opening,
    /// Creating the group or reading failed; waiting for the retry timer.
    Waiting,
    /// Reading this consumer's own pending entries, after this id.
    History(StreamId),
    /// Reading new entries.
    Live,
}

/// What became of one entry.
enum Made {
    Good(Record),
    Bad(Record, String),
    /// A pending entry that was deleted from the stream: nothing to emit.
    Deleted(StreamId),
    /// Already out under this consumer: not emitted twice.
    Known,
}

/// The `redis_in` supply; see the descriptor's documentation.
pub struct RedisIn {
    link: Link,
    hello: Hello,
    stream: Vec<u8>,
    group: Vec<u8>,
    consumer: Vec<u8>,
    start_id: Vec<u8>,
    count: usize,
    block_ms: Vec<u8>,
    max_pending: usize,
    claim_idle: Option<Duration>,
    claim_interval: Duration,
    max_deliveries: u64,
    field: Option<(Key, Vec<u8>)>,
    id_key: Option<Key>,
    retry_wait: Duration,
    on_error: OnError<Record>,
    phase: Phase,
    wbuf: Vec<u8>,
    wsent: usize,
    due: VecDeque<Cmd>,
    replies: Replies,
    frames: FrameScratch,
    /// Reads sent and not yet answered.
    reads: usize,
    /// The last read of new entries brought some: a second read goes out before the first
    /// is answered, so the server fills one while this side handles the other.
    flowing: bool,
    claiming: bool,
    /// `XCLAIM`s of a claim cycle still unanswered.
    claims_due: usize,
    /// The last claim cycle found entries: the next starts when it ends.
    claim_more: bool,
    paused: bool,
    finishing: bool,
    /// Records out and not yet acknowledged: their stream ids.
    out_ids: HashMap<EventId, StreamId, IdHash>,
    out_entries: HashSet<StreamId, IdHash>,
    to_ack: Vec<StreamId>,
    claim_timer: Option<TimerId>,
    group_timer: Option<TimerId>,
    limiter: LogLimiter,
    emitted: u64,
    acked: u64,
    claimed: u64,
    reread: u64,
    dead: u64,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "deadbeat".into())
}

impl RedisIn {
    /// A supply made from its settings, without a configuration file; bad entries and
    /// entries delivered too often go to `on_error`.
    pub fn from_settings(
        s: &RedisInSettings,
        on_error: OnError<Record>,
    ) -> Result<Self, SettingError> {
        let (address, hello) = redis::endpoint(&s.address, &s.username, &s.password, s.db)?;
        let tls = redis::link_tls(&s.address, &address, &s.tls)?;
        for (key, v) in [
            ("stream", &s.stream),
            ("group", &s.group),
            ("start_id", &s.start_id),
        ] {
            if v.is_empty() {
                return Err(SettingError::new(key, "must not be empty"));
            }
        }
        if !(1..=100_000).contains(&s.count) {
            return Err(SettingError::new("count", "must be within 1..=100000"));
        }
        if !(1..=10_000_000).contains(&s.max_pending) {
            return Err(SettingError::new(
                "max_pending",
                "must be within 1..=10000000",
            ));
        }
        if s.max_deliveries < 0 {
            return Err(SettingError::new("max_deliveries", "must be 0 or more"));
        }
        if s.claim_interval.is_zero() {
            return Err(SettingError::new("claim_interval", "must be above 0"));
        }
        // The reconnection schedule is the forwarding drains' one.
        let fwd = ForwardSettings {
            reconnect_initial: s.reconnect_initial,
            reconnect_max: s.reconnect_max,
            reconnect_refused: s.reconnect_refused,
            connect_timeout: s.connect_timeout,
            ..Default::default()
        };
        let opts = ForwardOptions::new(&fwd, Framing::Newline)?;
        let consumer = if s.consumer.is_empty() {
            format!("{}-{}", hostname(), std::process::id())
        } else {
            s.consumer.clone()
        };
        let field =
            (!s.field.is_empty()).then(|| (Key::new(&s.field), s.field.as_bytes().to_vec()));
        Ok(RedisIn {
            link: Link::new("redis_in", &address, &opts).with_tls(tls),
            hello,
            stream: s.stream.as_bytes().to_vec(),
            group: s.group.as_bytes().to_vec(),
            consumer: consumer.into_bytes(),
            start_id: s.start_id.as_bytes().to_vec(),
            count: s.count as usize,
            block_ms: redis::num(s.block.as_millis() as u64),
            max_pending: s.max_pending as usize,
            claim_idle: (!s.claim_idle.is_zero()).then_some(s.claim_idle),
            claim_interval: s.claim_interval,
            max_deliveries: s.max_deliveries as u64,
            field,
            id_key: (!s.id_field.is_empty()).then(|| Key::new(&s.id_field)),
            retry_wait: s.reconnect_max,
            on_error,
            phase: Phase::Opening,
            wbuf: Vec::new(),
            wsent: 0,
            due: VecDeque::new(),
            replies: Replies::default(),
            frames: FrameScratch::default(),
            reads: 0,
            flowing: false,
            claiming: false,
            claims_due: 0,
            claim_more: false,
            paused: false,
            finishing: false,
            out_ids: HashMap::default(),
            out_entries: HashSet::default(),
            to_ack: Vec::new(),
            claim_timer: None,
            group_timer: None,
            limiter: LogLimiter::default(),
            emitted: 0,
            acked: 0,
            claimed: 0,
            reread: 0,
            dead: 0,
        })
    }

    fn send<'a>(&mut self, cmd: Cmd, args: impl IntoIterator<Item = &'a [u8]>) {
        redis::push_command(&mut self.wbuf, &mut self.frames, args);
        self.due.push_back(cmd);
    }

    /// The connection is up: authenticate, create the group, read the own pending entries.
    fn up(&mut self) {
        self.wbuf.clear();
        self.wsent = 0;
        self.due.clear();
        for _ in 0..self.hello.push(&mut self.wbuf, &mut self.frames) {
            self.due.push_back(Cmd::Hello);
        }
        // Acknowledgements lost with the last connection go before the read of the own
        // pending entries, which would hand them out again.
        self.send_acks();
        self.open_group();
    }

    fn open_group(&mut self) {
        let (stream, group, start) = (
            self.stream.clone(),
            self.group.clone(),
            self.start_id.clone(),
        );
        self.send(
            Cmd::Create,
            [
                &b"XGROUP"[..],
                b"CREATE",
                &stream,
                &group,
                &start,
                b"MKSTREAM",
            ],
        );
        self.phase = Phase::History(StreamId(0, 0));
        self.flowing = false;
        self.maybe_read();
    }

    /// Sends the next read when nothing holds it back.
    fn maybe_read(&mut self) {
        let (history, from) = match self.phase {
            Phase::History(id) => (true, id.to_bytes()),
            Phase::Live => (false, b">".to_vec()),
            Phase::Opening | Phase::Waiting => return,
        };
        // The own pending entries are read one batch after the other (each read starts
        // after the last id of the one before).
        let limit = if !history && self.flowing { 2 } else { 1 };
        let room = self
            .max_pending
            .saturating_sub(self.out_ids.len() + self.reads * self.count);
        if !self.link.is_up() || self.reads >= limit || self.paused || self.finishing || room == 0 {
            return;
        }
        let count = redis::num(self.count.min(room) as u64);
        let (group, consumer, stream, block) = (
            self.group.clone(),
            self.consumer.clone(),
            self.stream.clone(),
            self.block_ms.clone(),
        );
        let head: [&[u8]; 6] = [b"XREADGROUP", b"GROUP", &group, &consumer, b"COUNT", &count];
        let wait: [&[u8]; 2] = [b"BLOCK", &block];
        let wait = if history { &wait[..0] } else { &wait[..] };
        let tail: [&[u8]; 3] = [b"STREAMS", &stream, &from];
        self.send(
            Cmd::Read { history },
            head.into_iter().chain(wait.iter().copied()).chain(tail),
        );
        self.reads += 1;
    }

    /// Sends the acknowledgements due, in batches.
    fn send_acks(&mut self) {
        if !self.link.is_up() || self.to_ack.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.to_ack);
        let (stream, group) = (self.stream.clone(), self.group.clone());
        for chunk in ids.chunks(ACKS_PER_COMMAND) {
            let text: Vec<Vec<u8>> = chunk.iter().map(StreamId::to_bytes).collect();
            let head: [&[u8]; 3] = [b"XACK", &stream, &group];
            redis::push_command(
                &mut self.wbuf,
                &mut self.frames,
                head.into_iter().chain(text.iter().map(Vec::as_slice)),
            );
            self.due.push_back(Cmd::Ack(chunk.to_vec()));
        }
    }

    /// Looks for entries to claim (and, with `max_deliveries`, for entries delivered too often).
    fn claim(&mut self) {
        let Some(idle) = self.claim_idle else { return };
        if !self.link.is_up()
            || self.claiming
            || self.finishing
            || !matches!(self.phase, Phase::Live | Phase::History(_))
        {
            return;
        }
        self.claiming = true;
        if self.max_deliveries > 0 {
            // The delivery counts first: entries delivered too often are claimed for
            // on_error before XAUTOCLAIM could hand them out once more.
            let idle = redis::num(idle.as_millis() as u64);
            let n = redis::num(PENDING_PER_CYCLE as u64);
            let (stream, group) = (self.stream.clone(), self.group.clone());
            self.send(
                Cmd::Pending,
                [
                    &b"XPENDING"[..],
                    &stream,
                    &group,
                    b"IDLE",
                    &idle,
                    b"-",
                    b"+",
                    &n,
                ],
            );
        } else {
            self.autoclaim();
        }
    }

    fn autoclaim(&mut self) {
        let Some(idle) = self.claim_idle else { return };
        let idle = redis::num(idle.as_millis() as u64);
        let (stream, group, consumer) = (
            self.stream.clone(),
            self.group.clone(),
            self.consumer.clone(),
        );
        let room = self.max_pending.saturating_sub(self.out_ids.len()).max(1);
        let count = redis::num(self.count.min(room) as u64);
        self.send(
            Cmd::AutoClaim,
            [
                &b"XAUTOCLAIM"[..],
                &stream,
                &group,
                &consumer,
                &idle,
                b"0-0",
                b"COUNT",
                &count,
            ],
        );
    }

    fn flush(&mut self, cx: &mut Ctx) {
        self.send_acks();
        if self.wsent < self.wbuf.len() && self.link.writable() {
            match self.link.write(&self.wbuf[self.wsent..]) {
                Ok(n) => self.wsent += n,
                Err(e) => return self.lost(&e, cx),
            }
        }
        if self.wsent == self.wbuf.len() {
            self.wbuf.clear();
            self.wsent = 0;
        }
    }

    /// The connection was lost: acknowledgements in flight are sent again on the next.
    fn lost(&mut self, e: &io::Error, cx: &mut Ctx) {
        for c in self.due.drain(..) {
            if let Cmd::Ack(ids) = c {
                self.to_ack.extend(ids);
            }
        }
        self.wbuf.clear();
        self.wsent = 0;
        self.replies.clear();
        self.reads = 0;
        self.flowing = false;
        self.claims_due = 0;
        self.claiming = false;
        self.phase = Phase::Opening;
        let (address, out) = (self.link.address().to_string(), self.out_ids.len());
        self.link.failed(e, cx, |cx, delay| {
            slog::warn!(cx.logger(), "connection lost; reconnecting";
                "cog" => "redis_in", "peer" => address, "error" => %e,
                "records_out" => out, "retry_in_ms" => delay.as_millis() as u64);
        });
    }

    /// A command failed in a way a new connection would not mend (a key of another type,
    /// say): logged, counted, and tried again after `reconnect_max`.
    fn refused(&mut self, what: &str, err: &str, out: &mut Out<Record>, cx: &mut Ctx) {
        out.count_errors(1);
        if self.limiter.allow("refusals", "redis_in", cx) {
            slog::error!(cx.logger(), "Redis refused a command; trying again later";
                "cog" => "redis_in", "command" => what, "stream" => %String::from_utf8_lossy(&self.stream),
                "error" => err, "retry_in_ms" => self.retry_wait.as_millis() as u64);
        }
        self.phase = Phase::Waiting;
        if self.group_timer.is_none() {
            self.group_timer = cx.timer_after(self.retry_wait, RETRY_GROUP).ok();
        }
    }

    fn answers(&mut self, out: &mut Out<Record>, cx: &mut Ctx) -> io::Result<()> {
        let mut replies = std::mem::take(&mut self.replies);
        let r = self.answer_all(&mut replies, out, cx);
        self.replies = replies;
        if self.claim_more && !self.claiming {
            self.claim_more = false;
            self.claim();
        }
        r
    }

    fn answer_all(
        &mut self,
        replies: &mut Replies,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) -> io::Result<()> {
        while let Some((frame, bytes)) = replies.next()? {
            let Some(cmd) = self.due.pop_front() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an answer to no command",
                ));
            };
            let err = redis::error(&frame, bytes);
            if let Some(e) = err
                && redis::is_transient(e)
            {
                return Err(io::Error::other(format!(
                    "the server cannot serve now: {e}"
                )));
            }
            match cmd {
                Cmd::Hello => {
                    if let Some(e) = err {
                        return Err(io::Error::other(format!(
                            "the server refused AUTH or SELECT: {e}"
                        )));
                    }
                }
                Cmd::Create => match err {
                    Some(e) if !e.starts_with("BUSYGROUP") => {
                        self.refused("XGROUP CREATE", e, out, cx)
                    }
                    _ => {}
                },
                Cmd::Read { history } => {
                    self.reads = self.reads.saturating_sub(1);
                    match err {
                        Some(_) if self.phase == Phase::Waiting => {}
                        Some(e) if e.starts_with("NOGROUP") => {
                            // The group went away (a server restarted without its data):
                            // create it again.
                            slog::warn!(cx.logger(), "the consumer group is gone; creating it again";
                                "cog" => "redis_in", "error" => e);
                            self.open_group();
                        }
                        Some(e) => self.refused("XREADGROUP", e, out, cx),
                        None => self.read_reply(&frame, bytes, history, out, cx),
                    }
                }
                Cmd::Ack(ids) => match err {
                    None => self.acked += ids.len() as u64,
                    Some(e) => {
                        out.count_errors(1);
                        if self.limiter.allow("refusals", "redis_in", cx) {
                            slog::error!(cx.logger(), "XACK refused"; "cog" => "redis_in",
                                "entries" => ids.len(), "error" => e);
                        }
                    }
                },
                Cmd::Pending => {
                    if err.is_none() {
                        self.pending_reply(&frame, bytes);
                    }
                    self.claiming = self.claims_due > 0;
                }
                Cmd::ClaimDead(counts) => {
                    if err.is_none() {
                        self.dead_reply(&frame, bytes, &counts, out, cx);
                    }
                    self.claim_answered();
                }
                Cmd::Claim => {
                    if err.is_none() {
                        let entries = redis::array(&frame).unwrap_or_default();
                        self.claimed_entries(entries, bytes, out, cx);
                    }
                    self.claim_answered();
                }
                Cmd::AutoClaim => {
                    self.claiming = false;
                    match err {
                        None => self.autoclaim_reply(&frame, bytes, out, cx),
                        Some(e) => {
                            out.count_errors(1);
                            if self.limiter.allow("refusals", "redis_in", cx) {
                                slog::error!(cx.logger(), "XAUTOCLAIM refused"; "cog" => "redis_in", "error" => e);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// `[[stream, [[id, [k, v, ...]], ...]]]`, or nil when a blocking read found nothing.
    fn read_reply(
        &mut self,
        frame: &RangeFrame,
        b: &[u8],
        history: bool,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) {
        let entries = redis::array(frame)
            .and_then(|s| s.first())
            .and_then(redis::array)
            .and_then(|s| s.get(1))
            .and_then(redis::array)
            .unwrap_or_default();
        if !history {
            self.flowing = !entries.is_empty();
        }
        if history {
            match entries.last().and_then(|e| entry_id(e, b)) {
                Some(last) => self.phase = Phase::History(last),
                None => {
                    if self.reread > 0 {
                        slog::info!(cx.logger(), "own pending entries read again";
                            "cog" => "redis_in", "entries" => self.reread);
                    }
                    self.phase = Phase::Live;
                }
            }
        }
        for e in entries {
            if history {
                self.reread += 1;
            }
            self.emit(e, b, out, cx);
        }
        self.maybe_read();
    }

    fn emit(&mut self, e: &RangeFrame, b: &[u8], out: &mut Out<Record>, cx: &mut Ctx) {
        match self.make(e, b, cx) {
            Made::Good(r) => {
                self.emitted += 1;
                out.push(r);
            }
            Made::Bad(r, why) => {
                self.emitted += 1;
                self.on_error.fail(r, "redis_in", &why, out, cx);
            }
            Made::Deleted(id) => self.to_ack.push(id),
            Made::Known => {}
        }
    }

    /// The record of one entry `[id, [k, v, ...]]`, registered as out.
    fn make(&mut self, e: &RangeFrame, b: &[u8], cx: &mut Ctx) -> Made {
        let Some(sid) = entry_id(e, b) else {
            return Made::Known;
        };
        if self.out_entries.contains(&sid) {
            return Made::Known;
        }
        let Some(fields) = redis::array(e)
            .and_then(|a| a.get(1))
            .and_then(redis::array)
        else {
            return Made::Deleted(sid);
        };
        let mut r = Record::with_capacity(fields.len() / 2 + 1);
        r.id = cx.new_event_id();
        let mut problem = None;
        let mut has_field = false;
        for pair in fields.chunks(2) {
            let [k, v] = pair else { break };
            let (Some(k), Some(v)) = (redis::text(k, b), redis::text(v, b)) else {
                continue;
            };
            if let Some((key, name)) = &self.field
                && k == name.as_slice()
            {
                has_field = true;
                r.insert(*key, Value::Bytes(crate::record::pool::bytes(v)));
                continue;
            }
            let Some(key) = std::str::from_utf8(k).ok().and_then(Key::from_input) else {
                problem.get_or_insert_with(|| {
                    format!(
                        "field name {:?} is not UTF-8 or one too many",
                        String::from_utf8_lossy(k)
                    )
                });
                continue;
            };
            match std::str::from_utf8(v) {
                Ok(t) => r.insert(key, Value::Str(t.to_string())),
                Err(_) => {
                    problem.get_or_insert_with(|| format!("field {:?} is not UTF-8", key.as_str()));
                    r.insert(key, Value::Bytes(v.to_vec()))
                }
            };
        }
        if let Some(k) = self.id_key {
            // The id as Redis wrote it; up to 22 bytes it is held inline, unallocated.
            let text = redis::array(e)
                .and_then(|a| a.first())
                .and_then(|f| redis::text(f, b))
                .and_then(|t| std::str::from_utf8(t).ok())
                .unwrap_or_default();
            r.insert(k, Value::Shared(SharedStr::short(text)));
        }
        self.out_ids.insert(r.id, sid);
        self.out_entries.insert(sid);
        if let (Some((_, name)), false) = (&self.field, has_field) {
            problem.get_or_insert_with(|| {
                format!("the entry has no field {:?}", String::from_utf8_lossy(name))
            });
        }
        match problem {
            Some(why) => Made::Bad(r, format!("entry {sid}: {why}")),
            None => Made::Good(r),
        }
    }

    fn claim_answered(&mut self) {
        self.claims_due = self.claims_due.saturating_sub(1);
        self.claiming = self.claims_due > 0;
    }

    /// `XPENDING` with IDLE: `[[id, consumer, idle, deliveries], ...]`. With
    /// `max_deliveries` the entries to claim are claimed by id (`XCLAIM`, with the same
    /// idle time), not by `XAUTOCLAIM`: an entry crossing the idle time between the two
    /// commands would be claimed without its delivery count being looked at. Those
    /// delivered too often are sent to `on_error`, the others emitted.
    fn pending_reply(&mut self, frame: &RangeFrame, b: &[u8]) {
        let mut dead = HashMap::new();
        let mut live = Vec::new();
        for p in redis::array(frame).unwrap_or_default() {
            let Some(p) = redis::array(p) else { continue };
            let id = p
                .first()
                .and_then(|f| redis::text(f, b))
                .and_then(StreamId::parse);
            let n = match p.get(3) {
                Some(RangeFrame::Integer(n)) => *n as u64,
                _ => 0,
            };
            match id {
                Some(id) if self.out_entries.contains(&id) => {}
                Some(id) if n >= self.max_deliveries => {
                    dead.insert(id, n);
                }
                Some(id) => live.push(id),
                None => {}
            }
        }
        let room = self.max_pending.saturating_sub(self.out_ids.len());
        live.truncate(room.max(1));
        if !dead.is_empty() {
            let ids: Vec<StreamId> = dead.keys().copied().collect();
            self.xclaim(&ids, Cmd::ClaimDead(dead));
        }
        if !live.is_empty() {
            self.xclaim(&live, Cmd::Claim);
        }
    }

    fn xclaim(&mut self, ids: &[StreamId], cmd: Cmd) {
        let Some(idle) = self.claim_idle else { return };
        let idle = redis::num(idle.as_millis() as u64);
        let ids: Vec<Vec<u8>> = ids.iter().map(StreamId::to_bytes).collect();
        let (stream, group, consumer) = (
            self.stream.clone(),
            self.group.clone(),
            self.consumer.clone(),
        );
        let head: [&[u8]; 5] = [b"XCLAIM", &stream, &group, &consumer, &idle];
        redis::push_command(
            &mut self.wbuf,
            &mut self.frames,
            head.into_iter().chain(ids.iter().map(Vec::as_slice)),
        );
        self.due.push_back(cmd);
        self.claims_due += 1;
    }

    fn dead_reply(
        &mut self,
        frame: &RangeFrame,
        b: &[u8],
        counts: &HashMap<StreamId, u64>,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) {
        for e in redis::array(frame).unwrap_or_default() {
            let n = entry_id(e, b)
                .and_then(|i| counts.get(&i))
                .copied()
                .unwrap_or(0);
            match self.make(e, b, cx) {
                Made::Good(r) | Made::Bad(r, _) => {
                    self.dead += 1;
                    let why = format!(
                        "delivered {n} times (max_deliveries = {})",
                        self.max_deliveries
                    );
                    self.on_error.fail(r, "redis_in", &why, out, cx);
                }
                Made::Deleted(id) => self.to_ack.push(id),
                Made::Known => {}
            }
        }
    }

    /// `[next-cursor, [[id, fields], ...], [deleted ids]]`.
    fn autoclaim_reply(
        &mut self,
        frame: &RangeFrame,
        b: &[u8],
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) {
        let parts = redis::array(frame).unwrap_or_default();
        let entries = parts.get(1).and_then(redis::array).unwrap_or_default();
        self.claimed_entries(entries, b, out, cx);
    }

    /// Emits claimed entries; when there were some, looks for more at once.
    fn claimed_entries(
        &mut self,
        entries: &[RangeFrame],
        b: &[u8],
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) {
        let before = self.emitted;
        for e in entries {
            self.emit(e, b, out, cx);
        }
        let n = self.emitted - before;
        if n > 0 {
            self.claimed += n;
            slog::warn!(cx.logger(), "claimed entries left pending by another consumer";
                "cog" => "redis_in", "entries" => n, "claimed_total" => self.claimed);
            // More may wait: look again at once rather than after claim_interval (once
            // this cycle's answers are all in).
            self.claim_more = true;
        }
    }

    /// The acknowledgements still due at a stop, sent on a short-lived blocking connection
    /// (the loop's connection may hold a blocking read).
    fn final_acks(&mut self, cx: &mut Ctx) {
        for c in self.due.drain(..) {
            if let Cmd::Ack(ids) = c {
                self.to_ack.extend(ids);
            }
        }
        if self.to_ack.is_empty() {
            return;
        }
        let n = self.to_ack.len();
        match self.ack_blocking() {
            Ok(()) => {
                self.acked += n as u64;
                self.to_ack.clear();
            }
            Err(e) => {
                slog::warn!(cx.logger(), "could not acknowledge the last entries; they stay pending and are read again or claimed";
                    "cog" => "redis_in", "entries" => n, "error" => %e);
            }
        }
    }

    fn ack_blocking(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + FINAL_ACK_TIME;
        let addr = self
            .link
            .address()
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("the name has no address"))?;
        let s = std::net::TcpStream::connect_timeout(&addr, FINAL_ACK_TIME)?;
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        s.set_write_timeout(Some(left()))?;
        s.set_read_timeout(Some(left()))?;
        let mut s = Stream::connected(s, self.link.tls())?;
        if let Stream::Tls(t) = &mut s {
            t.handshake_blocking()?;
        }
        let mut buf = Vec::new();
        let mut due = self.hello.push(&mut buf, &mut self.frames);
        let ids = std::mem::take(&mut self.to_ack);
        for chunk in ids.chunks(ACKS_PER_COMMAND) {
            let text: Vec<Vec<u8>> = chunk.iter().map(StreamId::to_bytes).collect();
            let head: [&[u8]; 3] = [b"XACK", &self.stream, &self.group];
            redis::push_command(
                &mut buf,
                &mut self.frames,
                head.into_iter().chain(text.iter().map(Vec::as_slice)),
            );
            due += 1;
        }
        self.to_ack = ids;
        s.write_all(&buf)?;
        let mut got = Vec::new();
        let mut chunk = vec![0; 64 << 10];
        let mut at = 0;
        while due > 0 {
            if Instant::now() >= deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
            s.get_ref().set_read_timeout(Some(left()))?;
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got.extend_from_slice(&chunk[..n]);
            while let Some((f, used)) = decode_range(&got[at..]).map_err(io::Error::other)? {
                if let Some(e) = redis::error(&f, &got[at..at + used]) {
                    return Err(io::Error::other(e.to_string()));
                }
                at += used;
                due -= 1;
                if due == 0 {
                    break;
                }
            }
        }
        Ok(())
    }
}

fn entry_id(e: &RangeFrame, b: &[u8]) -> Option<StreamId> {
    redis::array(e)
        .and_then(|a| a.first())
        .and_then(|f| redis::text(f, b))
        .and_then(StreamId::parse)
}

/// The interned key of the default `id_field`, for tests and programs.
pub fn redis_id_key() -> Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    *KEY.get_or_init(|| Key::new("_redis_id"))
}

impl Cog<Record> for RedisIn {
    fn name(&self) -> &str {
        "redis_in"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        slog::info!(cx.logger(), "reading a stream through a consumer group";
            "cog" => "redis_in", "stream" => %String::from_utf8_lossy(&self.stream),
            "group" => %String::from_utf8_lossy(&self.group),
            "consumer" => %String::from_utf8_lossy(&self.consumer));
        self.link.dial(cx);
        if self.claim_idle.is_some() {
            self.claim_timer = cx.timer_every(self.claim_interval, CLAIM).ok();
        }
        Ok(())
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        match why {
            Wake::Timer(t) if local == CLAIM && self.claim_timer == Some(t) => self.claim(),
            Wake::Timer(t) if local == RETRY_GROUP && self.group_timer == Some(t) => {
                self.group_timer = None;
                if self.link.is_up() && self.phase == Phase::Waiting {
                    self.open_group();
                }
            }
            Wake::Timer(t) => {
                self.link.timer(local, t, cx);
            }
            Wake::Ready(ev) if local == self.link.local() => {
                let mut replies = std::mem::take(&mut self.replies);
                let r = self.link.ready(ev, &mut replies, cx);
                self.replies = replies;
                let r = r.and_then(|ready| {
                    if ready.up {
                        self.up();
                    }
                    self.answers(out, cx)
                });
                if let Err(e) = r {
                    if tls::is_tls_error(&e) {
                        out.count_errors(1);
                    }
                    self.lost(&e, cx);
                }
            }
            _ => {}
        }
        self.flush(cx);
    }

    fn job_done(&mut self, _: JobId, result: JobResult, _: &mut Out<Record>, cx: &mut Ctx) {
        self.link.job_done(result, cx);
    }

    fn event_done(&mut self, ids: &[EventId], cx: &mut Ctx) {
        let before = self.to_ack.len();
        for id in ids {
            if let Some(sid) = self.out_ids.remove(id) {
                self.out_entries.remove(&sid);
                self.to_ack.push(sid);
            }
        }
        if self.to_ack.len() > before && !self.finishing {
            self.maybe_read();
            self.flush(cx);
        }
    }

    fn pause(&mut self, _: &mut Ctx) {
        self.paused = true;
    }

    fn resume(&mut self, cx: &mut Ctx) {
        self.paused = false;
        self.maybe_read();
        self.flush(cx);
    }

    fn finish(&mut self, _: &mut Out<Record>, cx: &mut Ctx) {
        // No more reads; the acknowledgements keep coming until `done`.
        self.finishing = true;
        if let Some(t) = self.claim_timer.take() {
            cx.cancel_timer(t);
        }
    }

    fn done(&mut self, cx: &mut Ctx) {
        self.final_acks(cx);
        self.link.close(cx);
        slog::info!(cx.logger(), "consumer group counters";
            "cog" => "redis_in", "emitted" => self.emitted, "acknowledged" => self.acked,
            "reread_own_pending" => self.reread, "claimed" => self.claimed,
            "dead_lettered" => self.dead, "unacknowledged" => self.out_ids.len() + self.to_ack.len());
    }
}
