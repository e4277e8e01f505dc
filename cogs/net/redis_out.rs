//! `redis_out`: records appended to Redis streams with `XADD`, pipelined, each acknowledged
//! once Redis answered it.

use std::collections::VecDeque;
use std::io;

use super::redis::{self, FrameScratch, Hello, Link, Replies};
use crate::kit::disk_buffer::{BufferSettings, DiskOptions, FrameSink, REPLAYED, Spill};
use crate::kit::format::Template;
use crate::kit::forward::{ForwardOptions, ForwardSettings, Framing, Watermark};
use crate::kit::on_error::{self, OnError, OnErrorSettings};
use crate::kit::tls::{self, TlsSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Key, Record, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

const DRAIN_DEADLINE: Local = 10;
const DISK_RETRY: Local = 11;

/// Appends each record to a Redis stream (`XADD`), either as one field (`entry = "field"`:
/// the record rendered by `format` into the field `field`; with the default raw format a
/// line's `message` arrives as `message`, which `redis_in` gives back as `message`) or as
/// fields (`entry = "fields"`: every top-level field of the record, values as text, nested
/// ones as JSON). `stream` may be a template (`"logs:{host}"`); `maxlen` trims the stream
/// approximately (`MAXLEN ~ N`) as entries are added.
///
/// Commands are pipelined: each batch of records is encoded into one buffer and written
/// with as few system calls as the socket allows, and Redis answers them in order. A record
/// is acknowledged (`event_done`, which moves the checkpoint of a `tail` or `spool` before
/// it) only once Redis answered its `XADD` with the new entry's id. An error answer for one
/// record (`WRONGTYPE`: the key is not a stream; an argument Redis refuses) sends that
/// record per `on_error`, rebuilt from the command (its fields, with `stream` and the
/// reason in `error`); errors that say the server cannot serve now (`LOADING` after a
/// restart, `READONLY`, `OOM`, `NOAUTH`, `BUSY`, ...) drop the connection and send
/// everything unanswered again after reconnecting.
///
/// When Redis is down or slow, records wait in `buffer_bytes` (encoded commands); a full
/// buffer pauses the supplies until it is back below half. Reconnection is as `tcp_out`'s:
/// a refused connection (Redis restarting) is tried every `reconnect_refused`, other
/// failures back off from `reconnect_initial` to `reconnect_max`, with jitter; `AUTH`
/// (with `username` when set) and `SELECT db` open every connection. With
/// `buffer = "disk"`, encoded commands beyond `buffer_bytes`, and every one while the
/// connection is down, go to segment files in `buffer_dir` (default: `buffer-TRAIN-COG`
/// under `[state] dir`) instead of pausing the supplies; the unanswered commands memory
/// holds join them there, ahead of them, when the connection is lost, at the first spill
/// and at the stop. They are acknowledged once synced to disk, survive a restart or a
/// kill -9, and are sent in order, before newer records, once Redis is back. A stop with
/// Redis away does not wait for it; at the end of `drain_timeout` the unanswered commands
/// stay on disk for the next run. `max_bytes` and `when_full` as for `tcp_out`.
///
/// **Guarantee.** At least once: when a connection is lost, the commands Redis had not
/// answered are sent again on the next one, so an entry Redis added just before the loss
/// is added twice (with a new id). At shutdown the drain waits until every record is
/// answered, at most `drain_timeout`; what is left is logged and not acknowledged.
///
/// ```toml
/// [[train.cog]]
/// type = "redis_out"
/// address = "127.0.0.1:6379"
/// stream = "logs:{host}"         # a template, or a plain key
/// entry = "field"                # field: one field rendered by `format` | fields: every field
/// field = "message"
/// format = "raw"                 # raw | json | template
/// maxlen = 1000000               # MAXLEN ~ N; 0: no trimming
/// # username = "deadbeat"        # with password: AUTH username password
/// # password = "secret"
/// db = 0
/// on_error = "keep"              # drop | keep | train:NAME (a record Redis refused)
/// buffer_bytes = "8MiB"
/// reconnect_initial = "100ms"
/// reconnect_max = "2s"
/// reconnect_refused = "250ms"
/// connect_timeout = "5s"
/// drain_timeout = "30s"
/// # tls = { ca = "ca.pem" }      # TLS (or address = "rediss://..."); cert and key: a client certificate
/// buffer = "memory"              # memory | disk
/// max_bytes = "1GiB"             # the most the disk buffer holds
/// when_full = "block"            # block | drop_oldest
/// ```
///
/// From Rust: `RedisOut::from_settings(&RedisOutSettings { address: "127.0.0.1:6379".into(),
/// stream: "logs".into(), ..Default::default() }, on_error)`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "redis_out",
    kind: CogKind::Drain,
    summary: "appends records to Redis streams (XADD, pipelined); acknowledges each once Redis answered, resends after a reconnection",
    params: RedisOutSettings::PARAMS,
    fields: &[],
    build,
};

crate::choice! {
    /// How a record becomes a stream entry.
    pub enum Entry { Field = "field", Fields = "fields" }
}

crate::settings! {
    /// Settings of `redis_out`.
    pub struct RedisOutSettings {
        /// "host:port" of the Redis server, or a URL "redis://USER:PASSWORD@HOST:PORT/DB" (all but HOST optional; "rediss://": TLS); a host name is resolved (off the loop) at every connection
        #[setting(required)]
        address: String,
        /// the stream's key; may be a template with {field} placeholders ("logs:{host}")
        #[setting(required)]
        stream: String,
        /// field: the record rendered by `format` into the one field `field`; fields: every top-level field of the record
        entry: Entry = "field",
        /// the entry's field with entry = "field"
        field: String = "message",
        /// trim the stream to about this many entries (XADD MAXLEN ~ N); 0: no trimming
        maxlen: i64 = "0",
        /// user name for AUTH (Redis 6 ACL); needs password
        username: Option<String>,
        /// password for AUTH
        password: Option<String>,
        /// database number (SELECT)
        db: i64 = "0",
        /// Where a record Redis refused goes.
        #[setting(flatten)]
        on_error: OnErrorSettings,
        /// Rendering, buffering and reconnection.
        #[setting(flatten)]
        forward: ForwardSettings,
        /// TLS (also implied by a rediss:// address): { ca (default: the system store), verify = true, server_name (default: the address's host), cert and key (client certificate) }
        tls: Option<TlsSettings>,
        /// The disk buffer.
        #[setting(flatten)]
        buffer: BufferSettings,
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: RedisOutSettings = p.settings()?;
    if let Some(t) = s.tls.as_mut() {
        t.resolve(cx.base_dir);
    }
    DiskOptions::resolve(&mut s.buffer, p, cx);
    let on_error = on_error::from_settings(&s.on_error, p, cx)?;
    Ok(Box::new(
        RedisOut::from_settings(&s, on_error).map_err(|e| p.setting_error(e))?,
    ))
}

/// The key of a stream: fixed, or rendered per record.
enum StreamKey {
    Fixed(Vec<u8>),
    Template(Template),
}

/// Encoded commands, oldest first: those before `head` are answered and gone, those up to
/// `sent` are written and await their answer, the rest wait to be written. Offsets are
/// global (since the start), so that compacting the buffer moves nothing else.
#[derive(Default)]
struct Pipeline {
    buf: Vec<u8>,
    /// Global offset of `buf[0]`.
    base: u64,
    head: u64,
    sent: u64,
    /// Each command's record id and the global offset just past it.
    cmds: VecDeque<(EventId, u64)>,
}

/// A fully answered buffer prefix this large is moved out of the way.
const COMPACT_AT: u64 = 4 << 20;

impl Pipeline {
    fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    fn push(&mut self, id: EventId) {
        let end = self.end();
        self.cmds.push_back((id, end));
    }

    fn unsent(&self) -> &[u8] {
        &self.buf[(self.sent - self.base) as usize..]
    }

    fn buffered(&self) -> usize {
        (self.end() - self.head) as usize
    }

    fn unanswered_sent(&self) -> bool {
        self.sent > self.head
    }

    /// The oldest command (answered now): its record id and bytes.
    fn pop(&mut self) -> Option<(EventId, &[u8])> {
        let (id, end) = self.cmds.pop_front()?;
        let from = (self.head - self.base) as usize;
        self.head = end;
        Some((id, &self.buf[from..(end - self.base) as usize]))
    }

    fn compact(&mut self) {
        if self.head == self.end() {
            self.base = self.head;
            self.buf.clear();
        } else if self.head - self.base >= COMPACT_AT {
            let n = (self.head - self.base) as usize;
            if n * 2 >= self.buf.len() {
                self.buf.drain(..n);
                self.base = self.head;
            }
        }
    }

    /// The index of the first command not read back from the disk buffer: from there on,
    /// the commands only memory holds (always the newest).
    fn first_fresh(&self) -> usize {
        let replayed = self.cmds.iter().rev().position(|c| c.0 == REPLAYED);
        self.cmds.len() - replayed.unwrap_or(self.cmds.len())
    }

    /// The record ids and bytes of the commands from the `first`-th on, oldest first.
    fn frames_from(&self, first: usize) -> impl Iterator<Item = (EventId, &[u8])> {
        let mut start = match first {
            0 => self.head,
            _ => self.cmds.get(first - 1).map_or(self.head, |c| c.1),
        };
        self.cmds.iter().skip(first).map(move |&(id, end)| {
            let (a, b) = ((start - self.base) as usize, (end - self.base) as usize);
            start = end;
            (id, self.buf.get(a..b).unwrap_or_default())
        })
    }

    /// The commands from the `first`-th on are on disk now: their answers are counted for
    /// the disk buffer.
    fn mark_replayed(&mut self, first: usize) {
        for c in self.cmds.iter_mut().skip(first) {
            c.0 = REPLAYED;
        }
    }

    /// The connection is gone: what was written and not answered goes out again. Returns
    /// how many commands that is.
    fn rewind(&mut self) -> usize {
        let sent = self.sent;
        self.sent = self.head;
        self.cmds.partition_point(|c| c.1 <= sent)
    }
}

/// The `redis_out` drain; see the descriptor's documentation.
pub struct RedisOut {
    link: Link,
    opts: ForwardOptions,
    stream: StreamKey,
    entry: Entry,
    field: Vec<u8>,
    maxlen: Option<Vec<u8>>,
    hello: Hello,
    on_error: OnError<Record>,
    pipe: Pipeline,
    /// The opening commands of the current connection, and how much of them is written.
    hello_buf: Vec<u8>,
    hello_sent: usize,
    /// Answers to the opening commands still due.
    hello_due: usize,
    replies: Replies,
    frames: FrameScratch,
    key_buf: Vec<u8>,
    values: Vec<u8>,
    spans: Vec<(Key, usize, usize)>,
    watermark: Watermark,
    lingering: bool,
    /// Stopping with the server away: every record is on disk, the drain waits only for
    /// their sync.
    parked: bool,
    deadline: Option<TimerId>,
    /// Records sent again after reconnections, over the run.
    resent: u64,
    /// The disk buffer (`buffer = "disk"`), if any.
    disk: Spill,
    /// Commands read back from the disk buffer answered since the last settle.
    replayed: u64,
}

impl RedisOut {
    /// A drain made from its settings, without a configuration file; records Redis refuses
    /// go to `on_error`.
    pub fn from_settings(
        s: &RedisOutSettings,
        on_error: OnError<Record>,
    ) -> Result<Self, SettingError> {
        let (address, hello) = redis::endpoint(&s.address, &s.username, &s.password, s.db)?;
        let tls = redis::link_tls(&s.address, &address, &s.tls)?;
        let opts = ForwardOptions::new(&s.forward, Framing::Newline)?;
        let stream = if s.stream.contains('{') {
            StreamKey::Template(
                Template::parse(&s.stream).map_err(|m| SettingError::new("stream", m))?,
            )
        } else if s.stream.is_empty() {
            return Err(SettingError::new("stream", "must not be empty"));
        } else {
            StreamKey::Fixed(s.stream.as_bytes().to_vec())
        };
        if s.field.is_empty() {
            return Err(SettingError::new("field", "must not be empty"));
        }
        if s.maxlen < 0 {
            return Err(SettingError::new("maxlen", "must be 0 or more"));
        }
        let disk = DiskOptions::new(&s.buffer)?;
        let high = disk.as_ref().map_or(opts.buffer_bytes, |d| {
            usize::try_from(d.max_bytes).unwrap_or(usize::MAX)
        });
        Ok(RedisOut {
            link: Link::new("redis_out", &address, &opts).with_tls(tls),
            watermark: Watermark::new(high),
            opts,
            stream,
            entry: s.entry,
            field: s.field.as_bytes().to_vec(),
            maxlen: (s.maxlen > 0).then(|| redis::num(s.maxlen as u64)),
            hello,
            on_error,
            pipe: Pipeline::default(),
            hello_buf: Vec::new(),
            hello_sent: 0,
            hello_due: 0,
            replies: Replies::default(),
            frames: FrameScratch::default(),
            key_buf: Vec::new(),
            values: Vec::new(),
            spans: Vec::new(),
            lingering: false,
            parked: false,
            deadline: None,
            resent: 0,
            disk: Spill::new("redis_out", disk, DISK_RETRY),
            replayed: 0,
        })
    }

    /// Encodes the record's `XADD` into the pipeline, or (`to_disk`) into the disk buffer;
    /// `Err` with the reason when it cannot be made.
    fn render(&mut self, r: &Record, to_disk: bool) -> Result<(), &'static str> {
        self.key_buf.clear();
        match &self.stream {
            StreamKey::Fixed(k) => self.key_buf.extend_from_slice(k),
            StreamKey::Template(t) => t.write(r, &mut self.key_buf),
        }
        if self.key_buf.is_empty() {
            return Err("the stream template rendered an empty key");
        }
        self.values.clear();
        self.spans.clear();
        match self.entry {
            Entry::Field => {
                self.opts.format.write(r, &mut self.values);
                self.values.pop();
            }
            Entry::Fields => {
                for (k, v) in r.fields.iter() {
                    let from = self.values.len();
                    write_text(v, &mut self.values);
                    self.spans.push((k, from, self.values.len()));
                }
                if self.spans.is_empty() {
                    return Err("the record has no field to write");
                }
            }
        }
        let head: [&[u8]; 2] = [b"XADD", &self.key_buf];
        let trim: [&[u8]; 3] = [b"MAXLEN", b"~", self.maxlen.as_deref().unwrap_or_default()];
        let trim = if self.maxlen.is_some() {
            &trim[..]
        } else {
            &trim[..0]
        };
        let values = &self.values;
        let pairs: Vec<[&[u8]; 2]>;
        let fields: &[[&[u8]; 2]] = match self.entry {
            Entry::Field => &[[&self.field, values]],
            Entry::Fields => {
                pairs = self
                    .spans
                    .iter()
                    .map(|&(k, a, b)| [k.as_str().as_bytes(), &values[a..b]])
                    .collect();
                &pairs
            }
        };
        let args = head
            .into_iter()
            .chain(trim.iter().copied())
            .chain([&b"*"[..]])
            .chain(fields.iter().flatten().copied());
        let frames = &mut self.frames;
        match self.disk.buffer_mut() {
            Some(disk) if to_disk => {
                disk.push_with(r.id, |b| redis::push_command(b, frames, args));
            }
            _ => {
                redis::push_command(&mut self.pipe.buf, frames, args);
                self.pipe.push(r.id);
            }
        }
        Ok(())
    }

    /// The connection is up: the opening commands go first, then everything unanswered.
    fn up(&mut self) {
        self.hello_buf.clear();
        self.hello_sent = 0;
        self.hello_due = self.hello.push(&mut self.hello_buf, &mut self.frames);
        // Records wait for the answer to a PING: a server still loading its data answers
        // LOADING to it, and to the records after it, until some point in the pipeline;
        // those it took after that point would be added ahead of the ones it refused.
        redis::push_command(&mut self.hello_buf, &mut self.frames, [&b"PING"[..]]);
        self.hello_due += 1;
    }

    /// Writes what the socket takes: the opening commands, then the records' commands.
    fn flush(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.lingering && !self.parked && self.away() && self.disk.buffer().is_some() {
            self.park(out, cx);
        }
        self.disk_step(out, cx);
        if self.link.writable() {
            let r = (|| {
                if self.hello_sent < self.hello_buf.len() {
                    self.hello_sent += self.link.write(&self.hello_buf[self.hello_sent..])?;
                    if self.hello_sent < self.hello_buf.len() {
                        return Ok(());
                    }
                }
                if self.hello_due > 0 {
                    return Ok(());
                }
                let n = self.link.write(self.pipe.unsent())?;
                self.pipe.sent += n as u64;
                Ok(())
            })();
            if let Err(e) = r {
                self.lost(&e, cx);
            }
        }
        self.settle(out, cx);
    }

    /// Handles the answers read so far.
    fn answers(&mut self, out: &mut Out<Record>, cx: &mut Ctx) -> io::Result<()> {
        let mut replies = std::mem::take(&mut self.replies);
        let r = self.answer_all(&mut replies, out, cx);
        self.replies = replies;
        self.pipe.compact();
        r
    }

    fn answer_all(
        &mut self,
        replies: &mut Replies,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) -> io::Result<()> {
        while let Some((frame, bytes)) = replies.next()? {
            let err = redis::error(&frame, bytes);
            if self.hello_due > 0 {
                self.hello_due -= 1;
                if let Some(e) = err {
                    return Err(io::Error::other(format!(
                        "the server refused the opening commands (AUTH, SELECT, PING): {e}"
                    )));
                }
                continue;
            }
            if !self.pipe.unanswered_sent() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an answer to no command",
                ));
            }
            match err {
                None => {
                    if let Some((id, _)) = self.pipe.pop() {
                        // A command read back from the disk buffer was acknowledged when
                        // it was written there.
                        if id == REPLAYED {
                            self.replayed += 1;
                        } else {
                            cx.event_done(id);
                        }
                    }
                }
                Some(e) if redis::is_transient(e) => {
                    return Err(io::Error::other(format!(
                        "the server cannot serve now: {e}"
                    )));
                }
                Some(e) => {
                    let why = format!("Redis refused the entry: {e}");
                    if let Some((id, cmd)) = self.pipe.pop() {
                        self.replayed += u64::from(id == REPLAYED);
                        let r = record_of_command(id, cmd);
                        self.on_error.fail(r, "redis_out", &why, out, cx);
                    }
                }
            }
        }
        Ok(())
    }

    /// The connection was lost (or refused a command for now): what is unanswered goes out
    /// again after reconnecting.
    fn lost(&mut self, e: &io::Error, cx: &mut Ctx) {
        let again = self.pipe.rewind();
        self.resent += again as u64;
        self.replies.clear();
        // The server is away: what memory holds goes to disk, where it survives a stop or
        // a kill meanwhile, and new records follow it there.
        self.adopt(cx, true);
        let (address, buffered) = (self.link.address().to_string(), self.pipe.cmds.len());
        self.link.failed(e, cx, |cx, delay| {
            slog::warn!(cx.logger(), "connection lost; resending the unanswered records after reconnecting";
                "cog" => "redis_out", "peer" => address, "error" => %e,
                "unanswered" => again, "buffered_records" => buffered,
                "retry_in_ms" => delay.as_millis() as u64);
        });
    }

    fn settle(&mut self, _out: &mut Out<Record>, cx: &mut Ctx) {
        let held = match self.disk.buffer_mut() {
            None => self.pipe.buffered(),
            Some(d) => {
                d.confirm(std::mem::take(&mut self.replayed), |id| cx.event_done(id));
                d.pressure()
            }
        };
        self.watermark.settle(held, cx);
        let parked_done = self.parked && !self.disk.has_pending();
        if self.lingering && (parked_done || (self.pipe.cmds.is_empty() && self.disk.is_drained()))
        {
            self.end_linger(cx);
        }
    }

    /// Whether the connection is not up.
    fn away(&self) -> bool {
        !self.link.is_up()
    }

    /// Puts the commands only memory holds onto the disk, ahead of newer records (see
    /// `Spill::adopt_frames`); `sync`: starts their sync on a worker thread.
    fn adopt(&mut self, cx: &mut Ctx, sync: bool) {
        if self.disk.buffer().is_none() {
            return;
        }
        let first = self.pipe.first_fresh();
        let n = self.pipe.cmds.len() - first;
        if n > 0 && self.disk.adopt_frames(self.pipe.frames_from(first), n, cx) {
            self.pipe.mark_replayed(first);
            if sync {
                self.disk.start_sync(cx);
            }
        }
    }

    /// At a stop that does not wait for the server: what memory holds goes to disk, synced
    /// on this thread unless a sync runs; returns whether nothing waits for a sync.
    fn stopping(&mut self, out: &mut Out<Record>, cx: &mut Ctx) -> bool {
        self.disk.confirm(std::mem::take(&mut self.replayed), cx);
        self.adopt(cx, false);
        let dropped = self.disk.finish(cx);
        if dropped > 0 {
            out.count_dropped(dropped);
        }
        !self.disk.has_pending()
    }

    /// Stops without the server: its records stay on disk for the next run; the drain
    /// finishes once they are synced.
    /// Records the disk could not take (a failed write or adoption) are tried again every
    /// second, until `drain_timeout`.
    fn park(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        self.repark(out, cx);
        self.link.close(cx);
        self.parked = true;
        self.disk.log_parked("server", &self.link.address(), cx);
    }

    /// Parked, and at each retry after it: puts what memory holds onto the disk and notes
    /// what it still holds alone.
    fn repark(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        self.stopping(out, cx);
        let n = (self.pipe.cmds.len() - self.pipe.first_fresh()) as u64;
        self.disk.held_in_memory(n, cx);
        out.count_dropped(self.disk.give_up(cx));
    }

    /// Writes and syncs what spilled, and refills the pipeline from the disk buffer,
    /// oldest first, while connected.
    fn disk_step(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.disk.buffer().is_none() {
            return;
        }
        if self.parked && self.disk.unwritten() > 0 {
            // The retry of a failed adoption: before the gathered frames are written,
            // which are newer and go after the adopted ones.
            self.repark(out, cx);
        }
        let dropped = self.disk.step(cx);
        if dropped > 0 {
            out.count_dropped(dropped);
        }
        let high = self.opts.buffer_bytes;
        let b = self.pipe.buffered();
        let up = self.link.is_up();
        if let Some(disk) = self.disk.buffer_mut()
            && up
            && b < high / 2
        {
            let pipe = &mut self.pipe;
            let log = cx.logger().clone();
            disk.load(high - b, "redis_out", &log, |frame| {
                pipe.buf.extend_from_slice(frame);
                pipe.push(REPLAYED);
            });
        }
    }

    fn end_linger(&mut self, cx: &mut Ctx) {
        self.lingering = false;
        if let Some(t) = self.deadline.take() {
            cx.cancel_timer(t);
        }
        self.link.close(cx);
        cx.finished();
    }
}

/// Writes a value as the text of a stream field: text and bytes as they are, others as
/// JSON renders them (timestamps and addresses without their quotes), null as nothing.
fn write_text(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Bytes(b) => out.extend_from_slice(b),
        Value::Str(_) | Value::Shared(_) => out.extend_from_slice(v.as_bytes().unwrap_or_default()),
        Value::Null => {}
        Value::Time(_) | Value::Ip(_) | Value::Net(_) => {
            let from = out.len();
            v.write_json(out);
            if out.len() >= from + 2 && out[from] == b'"' && out.last() == Some(&b'"') {
                out.pop();
                out.remove(from);
            }
        }
        other => other.write_json(out),
    }
}

fn stream_key() -> Key {
    static KEY: std::sync::OnceLock<Key> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| Key::new("stream"))
}

/// The record an `XADD` was made of, rebuilt from the command for `on_error`: its fields
/// (the values as bytes) and `stream`.
fn record_of_command(id: EventId, cmd: &[u8]) -> Record {
    let mut r = Record::new();
    r.id = id;
    let Ok(Some((frame, _))) = redis_protocol::resp2::decode::decode_range(cmd) else {
        return r;
    };
    let args: Vec<&[u8]> = redis::array(&frame)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| redis::text(f, cmd))
        .collect();
    if let Some(k) = args.get(1) {
        r.insert(
            stream_key(),
            Value::Str(String::from_utf8_lossy(k).into_owned()),
        );
    }
    let star = args.iter().position(|a| *a == b"*").unwrap_or(args.len());
    for pair in args.get(star + 1..).unwrap_or_default().chunks(2) {
        if let [k, v] = pair
            && let Some(key) = std::str::from_utf8(k).ok().and_then(Key::from_input)
        {
            r.insert(key, Value::Bytes(v.to_vec()));
        }
    }
    r
}

impl Cog<Record> for RedisOut {
    fn name(&self) -> &str {
        "redis_out"
    }

    fn inspect(&self, into: &mut crate::engine::control::Inspection) {
        into.buffer("bytes", self.pipe.buffered(), Some(self.opts.buffer_bytes));
        self.disk.inspect(into);
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.disk.start(cx)?;
        // A server down at start is not an error: records wait and the drain retries.
        self.link.dial(cx);
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Vec<Record>, out: &mut Out<Record>, cx: &mut Ctx) {
        let mut failed = Vec::new();
        let high = self.opts.buffer_bytes;
        // Tested once per batch: without a disk buffer the loop is as before.
        let spill = self.disk.buffer().is_some();
        let away = spill && self.away();
        let mut adopted = false;
        for (i, r) in batch.iter().enumerate() {
            // Beyond buffer_bytes, while the server is away, and for as long as spilled
            // records wait, records go to the disk: what follows a spilled record never
            // overtakes it.
            let to_disk = spill
                && (away
                    || self
                        .disk
                        .buffer()
                        .is_some_and(|d| d.has_unloaded() || self.pipe.buffered() >= high));
            if to_disk && !adopted {
                // What memory holds goes first: order holds, and a stop or a kill while
                // the server is away or slow loses nothing.
                self.adopt(cx, true);
                adopted = true;
            }
            if let Err(why) = self.render(r, to_disk) {
                failed.push((i, why));
            }
            if to_disk
                && let Some(d) = self.disk.buffer_mut()
                && d.should_write()
                && !d.is_failing()
            {
                let log = cx.logger().clone();
                if let Ok(dropped) = d.write_pending("redis_out", &log)
                    && dropped > 0
                {
                    out.count_dropped(dropped);
                }
            }
        }
        if !failed.is_empty() {
            // Taken out back to front, so that earlier indices stay valid.
            for &(i, why) in failed.iter().rev() {
                let r = batch.swap_remove(i);
                self.on_error.fail(r, "redis_out", &why, out, cx);
            }
        }
        crate::record::pool::recycle(batch.drain(..));
        self.flush(out, cx);
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        match why {
            Wake::Timer(t) if local == DRAIN_DEADLINE && self.deadline == Some(t) => {
                self.deadline = None;
                if self.disk.buffer().is_none() {
                    slog::error!(cx.logger(), "drain_timeout expired at shutdown: records not answered by Redis";
                        "cog" => "redis_out", "peer" => self.link.address(),
                        "unanswered_records" => self.pipe.cmds.len(),
                        "unanswered_bytes" => self.pipe.buffered());
                } else {
                    self.stopping(out, cx);
                    out.count_dropped(self.disk.give_up(cx));
                    slog::warn!(cx.logger(), "drain_timeout expired at shutdown: the records Redis did not answer stay in the disk buffer for the next run";
                        "cog" => "redis_out", "peer" => self.link.address(),
                        "unanswered_records" => self.pipe.cmds.len(),
                        "disk_buffer_records" => self.disk.records());
                }
                self.end_linger(cx);
            }
            Wake::Timer(t) if local == DISK_RETRY && self.disk.is_retry(t) => self.flush(out, cx),
            Wake::Timer(t) => {
                self.link.timer(local, t, cx);
                self.flush(out, cx);
            }
            Wake::Ready(ev) if local == self.link.local() => {
                let mut replies = std::mem::take(&mut self.replies);
                let r = self.link.ready(ev, &mut replies, cx);
                self.replies = replies;
                let r = r.and_then(|ready| {
                    if ready.up {
                        self.up();
                        slog::debug!(cx.logger(), "sending the buffered records";
                            "cog" => "redis_out", "records" => self.pipe.cmds.len());
                    }
                    self.answers(out, cx)
                });
                if let Err(e) = r {
                    if tls::is_tls_error(&e) {
                        out.count_errors(1);
                    }
                    self.lost(&e, cx);
                }
                self.flush(out, cx);
            }
            _ => {}
        }
    }

    fn job_done(&mut self, job: JobId, result: JobResult, out: &mut Out<Record>, cx: &mut Ctx) {
        let Some(result) = self.disk.job_done(job, result, cx) else {
            self.flush(out, cx);
            return;
        };
        if self.link.job_done(result, cx) {
            self.flush(out, cx);
        }
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.disk.buffer().is_some() && self.away() {
            self.park(out, cx);
            if !self.disk.has_pending() {
                return;
            }
        } else {
            // What memory holds goes to disk too: a kill while Redis answers, or the end
            // of drain_timeout, loses nothing.
            self.stopping(out, cx);
        }
        if self.pipe.cmds.is_empty() && self.disk.is_drained() {
            self.link.close(cx);
            return;
        }
        cx.linger();
        self.lingering = true;
        self.disk.keep_retrying(cx);
        match cx.timer_after(self.opts.drain_timeout, DRAIN_DEADLINE) {
            Ok(t) => self.deadline = Some(t),
            Err(e) => {
                slog::error!(cx.logger(), "cannot set the drain deadline"; "cog" => "redis_out", "error" => %e)
            }
        }
        self.flush(out, cx);
    }

    fn done(&mut self, cx: &mut Ctx) {
        self.disk.confirm(std::mem::take(&mut self.replayed), cx);
        if !self.pipe.cmds.is_empty() && self.disk.buffer().is_none() {
            slog::warn!(cx.logger(), "stopped with records Redis did not answer; not acknowledged";
                "cog" => "redis_out", "records" => self.pipe.cmds.len(),
                "bytes" => self.pipe.buffered());
        }
        if self.resent > 0 {
            slog::info!(cx.logger(), "records sent again after reconnections";
                "cog" => "redis_out", "resent" => self.resent);
        }
        self.link.close(cx);
        if let Some(t) = self.disk.take_retry() {
            cx.cancel_timer(t);
        }
        // Commands only memory holds (their adoption by the disk failed) are lost unless
        // their supply reads them again: the disk buffer's report counts them.
        let first = self.pipe.first_fresh();
        let memory = self
            .pipe
            .frames_from(first)
            .fold((0, 0), |(n, bytes), (_, f)| (n + 1, bytes + f.len() as u64));
        self.disk.done_with(memory, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_command_gives_its_record_back() {
        let mut buf = Vec::new();
        let args: [&[u8]; 9] = [
            b"XADD", b"logs:a", b"MAXLEN", b"~", b"10", b"*", b"message", b"hi", b"host",
        ];
        let mut f = FrameScratch::default();
        redis::push_command(&mut buf, &mut f, args.into_iter().chain([&b"a"[..]]));
        let r = record_of_command(7, &buf);
        assert_eq!(r.id, 7);
        assert_eq!(
            r.get(Key::new("message")),
            Some(&Value::Bytes(b"hi".to_vec()))
        );
        assert_eq!(r.get(Key::new("host")), Some(&Value::Bytes(b"a".to_vec())));
        assert_eq!(r.get(stream_key()), Some(&Value::Str("logs:a".into())));
    }

    #[test]
    fn the_pipeline_resends_what_was_not_answered() {
        let mut p = Pipeline::default();
        for id in 1..=3 {
            p.buf.extend_from_slice(b"abcd");
            p.push(id);
        }
        p.sent = 10;
        assert_eq!(p.pop().map(|(id, b)| (id, b.len())), Some((1, 4)));
        assert_eq!(p.rewind(), 1);
        assert_eq!(p.unsent(), b"abcdabcd");
        assert_eq!(p.buffered(), 8);
    }
}
