//! `http_in`: an HTTP/1.1 server taking records POSTed as NDJSON, a JSON array or plain
//! lines, answered once they are handed on or, with `ack = "written"`, once the drains
//! acknowledged every one.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::kit::ack::AckTracker;
use crate::kit::http::{self, BodyLength, ChunkedDecoder, Head, RequestHead};
use crate::kit::lines::LineInfo;
use crate::kit::on_error::{self, LogLimiter, OnError, OnErrorSettings};
use crate::kit::supply::{message_key, with_line_emitter};
use crate::kit::tls::{self, Stream, TlsServer, TlsSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Key, Record, Timestamp, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::server_settings::{self, ConnectionSettings};
use super::tcp_in::{EVICT_MIN_IDLE, peer_key, received_at_key};

const LISTENER: Local = 0;
const SWEEP: Local = 1;
const FIRST_CONN: Local = 2;
/// Longest request head (request line and headers); longer is answered 431.
const MAX_HEAD: usize = 16 << 10;
/// Bytes asked for per read.
const READ_SIZE: usize = 64 << 10;
/// Reads per connection and turn, so that one busy client cannot starve the others.
const READS_PER_TURN: usize = 16;
/// Records emitted per connection and turn: a batch whose records are still in the L2
/// cache when the next cog walks them, and a turn for the other connections between two.
const EMIT_PER_TURN: usize = 2048;
/// Connections accepted per turn before the listener yields.
const ACCEPTS_PER_TURN: usize = 64;
/// After `accept` fails for lack of resources, try again after this long.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// After an answer that closes the connection, what the client still sends is read and
/// thrown away for at most this long: closing a socket with unread bytes resets it, and
/// the reset can destroy the answer before the client reads it.
const LINGER_CLOSE: Duration = Duration::from_secs(2);
/// How often timeouts are looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

crate::choice! {
    /// When `http_in` answers a request.
    pub enum AckMode { Received = "received", Written = "written" }
}

/// Receives records over HTTP: each `POST` carries NDJSON, a JSON array or plain lines,
/// and is answered with how many records were accepted and refused, as JSON
/// (`{"accepted":N,"refused":M}`).
///
/// **Bodies.** `Content-Type` decides how a body is read (parameters such as `charset`
/// are ignored): `application/x-ndjson` (also `application/jsonlines`,
/// `application/x-jsonlines`): one JSON object per line, empty lines skipped;
/// `application/json`: an array of objects (or one object); `text/plain`: one record per
/// line, its bytes in `message` (a final line without newline counts too, a CR before
/// the newline is removed). Any other type, or none, is answered
/// `415 Unsupported Media Type` (curl sends `application/x-www-form-urlencoded` unless
/// told: pass `-H 'Content-Type: application/x-ndjson'`). `Content-Encoding: gzip` is
/// decoded (other encodings: 415); the body may come with a `Content-Length` or chunked.
/// A JSON record carries the object's fields as they are; a plain line carries `message`
/// (raw bytes), `peer` (`"IP:port"`) and `received_at`. With `path_field`, every record
/// also gets the request's path (without the query) in that field.
///
/// **Limits.** A body larger than `max_body_bytes`, before or after decompression (a
/// gzip bomb), is answered `413`; so is a chunked body once it grows past it. Heads are
/// at most 16 KiB (431 beyond). Bodies being received or emitted hold at most
/// `max_buffered_bytes` together: a request arriving beyond it is answered `503` with
/// `Retry-After`. Connections are bounded (`max_connections`: beyond, the longest-idle
/// connection between requests, quiet for a second, is closed for the new one, else the
/// new one is; counted and logged), and closed once idle for `idle_timeout` (also mid-request:
/// counted as an error). Requests on a connection are served one after the other
/// (keep-alive and pipelining work; HTTP/1.0 and `Connection: close` close after the
/// answer).
///
/// **Routing and access.** `paths`, when given, lists the paths accepted (others: 404);
/// only `POST` is served (others: 405). With `token` or `token_file` (the file's first
/// line), a request must carry `Authorization: Bearer TOKEN` (else: 401).
///
/// **Backpressure.** When the train pauses the supply, a request whose head arrives is
/// answered `503 Service Unavailable` with `Retry-After` (`retry_after`, whole seconds)
/// at once, and its connection closed; a body being received waits (TCP slows its sender
/// down), and a request being emitted goes on after the pause.
///
/// **Acknowledgement.** With `ack = "received"` (the default), a request is answered 200
/// once all its records are handed down the train. With `ack = "written"`, it is answered
/// 200 only once every one of its records was acknowledged by the drains (written out, or
/// dropped for good by a cog's `on_error = "drop"`, as a `tail` checkpoint would count
/// it): a client that sends again whatever was not answered 200 gets at-least-once
/// delivery end to end. A request whose records are not all acknowledged within
/// `ack_timeout` (a drain's peer is down, say) is answered `503` with `Retry-After` and
/// `"acknowledged": K` in the body; its records stay in the train and are still written
/// when the drain can, so a client that sends the request again may have them twice,
/// never none. At a stop (SIGTERM), requests still waiting for acknowledgements when the
/// drains have finished are answered 503 (their records were not all written); a request
/// whose body was still arriving is answered 503 at once and nothing of it is handed on;
/// a body already received is handed on whole first. A client that sees its connection
/// close without an answer cannot know: it must send again.
///
/// **TLS** (HTTPS): with a `tls` table (`cert`, `key`; `ca` requires client
/// certificates, as on `tcp_in`) every connection is TLS (rustls) on the loop; a failed
/// handshake is logged with the peer and the reason, counted, and the connection closed.
///
/// **Bad input.** A line that is not a JSON object (invalid JSON, not UTF-8, an array
/// element that is not an object) is counted as an error, logged with its event id and
/// the peer (at a bounded rate), and goes per `on_error` as a record holding the line in
/// `message` (`keep`: on down the train with the reason in `error`, `drop`, or
/// `train:NAME`); it counts as refused in the answer. A request whose records are all
/// refused is answered 400, one with any accepted 200. A body that cannot be read at
/// all (bad gzip, bad chunk framing, a JSON body that does not parse) is answered 400
/// and counted; nothing of it is handed on.
///
/// ```toml
/// [[train.cog]]
/// type = "http_in"
/// listen = "0.0.0.0:8080"
/// paths = ["/ingest"]          # accepted paths; empty: any
/// path_field = "path"          # the request path into this field; unset: none
/// max_body_bytes = "10MiB"     # also after gzip decompression; 413 beyond
/// max_buffered_bytes = "64MiB" # bodies held together; 503 beyond
/// token_file = "/etc/deadbeat/ingest.token"  # or token = "..."; 401 without it
/// ack = "received"             # "written": answer once the drains acknowledged
/// ack_timeout = "30s"          # with ack = "written": 503 after this long
/// retry_after = "1s"           # Retry-After of a 503
/// max_connections = 1024
/// idle_timeout = "5m"
/// # tls = { cert = "server.pem", key = "server.key" }  # HTTPS; with ca = "...": mutual TLS
/// on_error = "keep"            # drop | keep | train:NAME (lines that are not JSON objects)
/// ```
///
/// From Rust: `HttpIn::from_settings(&HttpInSettings { listen: "127.0.0.1:8080".into(),
/// ..Default::default() }, token, on_error)`.
pub struct HttpIn {
    addr: SocketAddr,
    paths: Vec<String>,
    path_field: Option<Key>,
    max_body: usize,
    max_buffered: usize,
    token: Option<String>,
    ack: AckMode,
    ack_timeout: Duration,
    retry_after: u64,
    max_connections: usize,
    idle_timeout: Option<Duration>,
    on_error: OnError<Record>,
    tls: Option<TlsServer>,
    listener: Option<mio::net::TcpListener>,
    listener_ready: bool,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    paused: bool,
    finishing: bool,
    tracker: AckTracker,
    /// Serial of the last request, its key in `tracker`.
    serial: u64,
    /// Body bytes held by all connections.
    buffered: usize,
    bad_log: LogLimiter,
    limits_log: LogLimiter,
    refused_conns: u64,
}

impl std::fmt::Debug for HttpIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpIn")
            .field("addr", &self.addr)
            .field("live", &self.live)
            .field("paused", &self.paused)
            .finish()
    }
}

/// The descriptor of `http_in`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "http_in",
    kind: CogKind::Supply,
    summary: "HTTP server: records POSTed as NDJSON, JSON arrays or lines (gzip, chunked); answered on receipt or once written",
    params: HttpInSettings::PARAMS,
    fields: &[
        (
            "(the object's fields)",
            "a JSON record: the fields of the object posted",
        ),
        ("message", "a plain line, as raw bytes"),
        ("peer", "a plain line: the sending peer"),
        ("received_at", "a plain line: when its request was received"),
    ],
    build,
};

crate::settings! {
    /// Settings of `http_in`.
    pub struct HttpInSettings {
        /// address and port, e.g. "0.0.0.0:8080"
        #[setting(required)]
        listen: String,
        /// paths accepted, e.g. ["/ingest"]; others are answered 404; empty: any
        paths: Vec<String>,
        /// field receiving the request's path (without the query); unset: none
        path_field: Option<String>,
        /// largest body, before and after gzip decompression; larger is answered 413
        #[setting(size)]
        max_body_bytes: usize = "10MiB",
        /// bodies being received or emitted, all connections together; a request beyond is answered 503
        #[setting(size)]
        max_buffered_bytes: usize = "64MiB",
        /// bearer token requests must carry (Authorization: Bearer TOKEN); else 401
        token: Option<String>,
        /// file whose first line is the token (instead of token; relative to the configuration file)
        token_file: Option<String>,
        /// received: answer once the records are handed on; written: once the drains acknowledged every one
        ack: AckMode = "received",
        /// with ack = "written": a request not acknowledged by then is answered 503 (its records stay in the train)
        ack_timeout: Duration = "30s",
        /// the Retry-After of a 503 (whole seconds, at least 1)
        retry_after: Duration = "1s",
        /// TLS (HTTPS): cert and key required; ca: clients must present a certificate chaining to it (mutual TLS)
        tls: Option<TlsSettings>,
        /// How many connections, and for how long.
        #[setting(flatten)]
        connections: ConnectionSettings,
        /// What becomes of lines that are not JSON objects.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: HttpInSettings = p.settings()?;
    if let Some(t) = s.tls.as_mut() {
        t.resolve(cx.base_dir);
    }
    let on_error = on_error::from_settings(&s.on_error, p, cx)?;
    let token = match (&s.token, &s.token_file) {
        (Some(_), Some(_)) => {
            return Err(p.error("token_file", "give `token` or `token_file`, not both"));
        }
        (Some(t), None) => Some(t.clone()),
        (None, Some(f)) => {
            Some(read_token(&cx.base_dir.join(f)).map_err(|e| p.error("token_file", e))?)
        }
        (None, None) => None,
    };
    Ok(Box::new(
        HttpIn::from_settings(&s, token, on_error).map_err(|e| p.setting_error(e))?,
    ))
}

/// A token file's first line, trimmed; an error when it is empty or unreadable.
fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(token)
}

/// How a body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Ndjson,
    Json,
    Lines,
}

impl BodyKind {
    /// The kind a `Content-Type` names, `None` when it names none we read.
    fn of(content_type: Option<&str>) -> Option<BodyKind> {
        let t = content_type?.split(';').next()?.trim().to_ascii_lowercase();
        match t.as_str() {
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonlines"
            | "application/x-jsonlines"
            | "application/jsonl" => Some(BodyKind::Ndjson),
            "application/json" => Some(BodyKind::Json),
            "text/plain" => Some(BodyKind::Lines),
            _ => None,
        }
    }
}

/// The byte stream of one connection. Reading and writing go through here only, so that
/// a TLS session can wrap the socket in this one place.
struct Io {
    sock: Stream<mio::net::TcpStream>,
}

impl Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read(buf)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }

    /// Sends what a TLS session still holds; `Ok(false)` while the socket takes no more.
    fn flush(&mut self) -> io::Result<bool> {
        match self.sock.flush() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Tells the client nothing more comes (FIN), keeping the reading side open.
    fn shutdown_write(&self) {
        let _ = self.sock.get_ref().shutdown(std::net::Shutdown::Write);
    }

    fn source(&mut self) -> &mut mio::net::TcpStream {
        self.sock.get_mut()
    }
}

/// What a request asks for, kept while its body is read and its records emitted.
struct Request {
    kind: BodyKind,
    gzip: bool,
    /// The path, for `path_field`.
    path: Value,
    /// Close after the answer.
    close: bool,
}

/// A body being read.
enum Framing {
    /// `Content-Length: total`, of which `filled` bytes came. The body's buffer is made
    /// `total` bytes long (zeroed) once, when the body starts, and filled in place: a
    /// buffer grown per read would be zeroed again for every read, most of which bring
    /// far less than they ask for.
    Length {
        total: usize,
        filled: usize,
    },
    Chunked(ChunkedDecoder),
}

/// What is left to emit of a request.
enum Data {
    /// NDJSON or plain lines, from `pos` on.
    Lines { body: Vec<u8>, pos: usize },
    /// The objects of a JSON body.
    Items(std::vec::IntoIter<Value>),
}

struct Emitting {
    req: Request,
    data: Data,
    /// Bytes counted in `HttpIn::buffered` for it.
    held: usize,
    serial: u64,
    accepted: u64,
    refused: u64,
}

enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Reading a body into `body`.
    Body {
        req: Request,
        framing: Framing,
        body: Vec<u8>,
    },
    /// Handing records down the train.
    Emitting(Box<Emitting>),
    /// `ack = "written"`: every record handed on; waiting for acknowledgements.
    Waiting {
        serial: u64,
        accepted: u64,
        refused: u64,
        since: Instant,
        close: bool,
    },
    /// The answer is being written; then the next request (or the close).
    Answering,
    /// Answered with `Connection: close`: reading and discarding until the client closes.
    Lingering(Instant),
}

struct Conn {
    io: Io,
    peer: Value,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    phase: Phase,
    last_active: Instant,
    /// Readiness to read not acted upon (paused, busy, or the turn's share used up).
    ready: bool,
    /// Close once the answer is written.
    close_after: bool,
}

impl Conn {
    fn peer(&self) -> &str {
        self.peer.as_str().unwrap_or("")
    }

    /// Writes what is pending; `Ok(true)` once all is written.
    fn flush(&mut self) -> io::Result<bool> {
        while self.wpos < self.wbuf.len() {
            match self.io.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !self.io.flush()? {
            return Ok(false);
        }
        self.wbuf.clear();
        self.wpos = 0;
        Ok(true)
    }

    /// Reads a `Content-Length` body straight into its buffer once the read buffer is
    /// empty, saving a copy of every body byte; `None` when the connection is not there
    /// (then [`read_some`](Conn::read_some) reads). Answers as `read_some` does.
    fn read_some_into_body(&mut self) -> Option<io::Result<Option<usize>>> {
        let Phase::Body {
            framing: Framing::Length { total, filled },
            body,
            ..
        } = &mut self.phase
        else {
            return None;
        };
        // The buffer is whole (made so by `take_body` before any read).
        if *filled == *total || !self.rbuf.is_empty() || body.len() != *total {
            return None;
        }
        let end = (*filled + READ_SIZE).min(*total);
        loop {
            match self.io.read(&mut body[*filled..end]) {
                Ok(n) => {
                    *filled += n;
                    return Some(Ok(Some(n)));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Some(if e.kind() == io::ErrorKind::WouldBlock {
                        Ok(None)
                    } else {
                        Err(e)
                    });
                }
            }
        }
    }

    /// Reads once into `rbuf` (at most `limit` bytes held); `Ok(None)` when nothing is
    /// waiting, `Ok(Some(0))` at the end of the stream.
    fn read_some(&mut self, limit: usize) -> io::Result<Option<usize>> {
        let len = self.rbuf.len();
        let want = READ_SIZE.min(limit.saturating_sub(len)).max(1);
        self.rbuf.resize(len + want, 0);
        loop {
            match self.io.read(&mut self.rbuf[len..]) {
                Ok(n) => {
                    self.rbuf.truncate(len + n);
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.rbuf.truncate(len);
                    return if e.kind() == io::ErrorKind::WouldBlock {
                        Ok(None)
                    } else {
                        Err(e)
                    };
                }
            }
        }
    }
}

fn conn_local(i: usize) -> Local {
    FIRST_CONN + i as Local
}

/// The answer's JSON body.
fn answer_body(accepted: u64, refused: u64, extra: &str) -> String {
    format!("{{\"accepted\":{accepted},\"refused\":{refused}{extra}}}\n")
}

/// `"error": why` as a JSON member to append.
fn error_member(why: &str) -> String {
    let mut b = Vec::new();
    Value::Str(why.to_string()).write_json(&mut b);
    format!(",\"error\":{}", String::from_utf8_lossy(&b))
}

/// Compares two tokens in time independent of where they differ.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What becomes of a request once its head is read.
enum Verdict {
    /// Read its body.
    Accept(Request, Framing),
    /// Answer at once and close: status, reason, extra header lines.
    Refuse(u16, String, String),
}

impl HttpIn {
    /// A server made from its settings, without a configuration file; `token` is the
    /// bearer token requests need (from `token` or `token_file`), `on_error` takes lines
    /// that are not JSON objects.
    pub fn from_settings(
        s: &HttpInSettings,
        token: Option<String>,
        on_error: OnError<Record>,
    ) -> Result<Self, SettingError> {
        let addr = server_settings::listen_addr(&s.listen, "127.0.0.1:8080")?;
        if s.max_body_bytes == 0 || s.max_body_bytes > 1 << 30 {
            return Err(SettingError::new(
                "max_body_bytes",
                "must be within 1 byte..1GiB",
            ));
        }
        if s.max_buffered_bytes < s.max_body_bytes {
            return Err(SettingError::new(
                "max_buffered_bytes",
                "must be at least max_body_bytes",
            ));
        }
        if s.ack_timeout.is_zero() {
            return Err(SettingError::new("ack_timeout", "must be above 0"));
        }
        if let Some(p) = s.paths.iter().find(|p| !p.starts_with('/')) {
            return Err(SettingError::new(
                "paths",
                format!("{p:?} does not start with \"/\""),
            ));
        }
        let path_field = match &s.path_field {
            Some(f) if f.is_empty() => {
                return Err(SettingError::new("path_field", "must not be empty"));
            }
            Some(f) => Some(Key::new(f)),
            None => None,
        };
        if token.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(SettingError::new("token", "must not be empty"));
        }
        Ok(HttpIn {
            addr,
            paths: s.paths.clone(),
            path_field,
            max_body: s.max_body_bytes,
            max_buffered: s.max_buffered_bytes,
            token,
            ack: s.ack,
            ack_timeout: s.ack_timeout,
            retry_after: s.retry_after.as_secs_f64().ceil().max(1.0) as u64,
            max_connections: s.connections.max_connections()?,
            idle_timeout: s.connections.idle_timeout(),
            on_error,
            tls: tls::server(s.tls.as_ref())?,
            listener: None,
            listener_ready: false,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            paused: false,
            finishing: false,
            tracker: AckTracker::new(),
            serial: 0,
            buffered: 0,
            bad_log: LogLimiter::default(),
            limits_log: LogLimiter::default(),
            refused_conns: 0,
        })
    }

    fn accept_some(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(l) = self.listener.as_ref() else {
                return;
            };
            match l.accept() {
                Ok((sock, peer)) => self.admit(sock, peer, out, cx),
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
                    slog::error!(cx.logger(), "accepting a connection failed; retrying soon";
                        "cog" => "http_in", "error" => %e);
                    out.count_errors(1);
                    let _ = cx.timer_after(ACCEPT_RETRY, LISTENER);
                    return;
                }
            }
        }
        self.listener_ready = true;
        cx.enqueue(LISTENER);
    }

    fn admit(
        &mut self,
        sock: mio::net::TcpStream,
        peer: SocketAddr,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) {
        if self.live >= self.max_connections && !self.evict_idle(peer, out, cx) {
            self.refused_conns += 1;
            out.count_errors(1);
            if self.limits_log.allow("connection limits", "http_in", cx) {
                slog::warn!(cx.logger(), "max_connections reached; new connection closed";
                    "cog" => "http_in", "peer" => %peer, "max_connections" => self.max_connections,
                    "refused_so_far" => self.refused_conns);
            }
            return;
        }
        let i = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        // Answers are small writes after a read: without this, Nagle's algorithm holds
        // them until the client's delayed ACK.
        let _ = sock.set_nodelay(true);
        let mut io = match Stream::accepted(sock, self.tls.as_ref()) {
            Ok(sock) => Io { sock },
            Err(e) => {
                slog::warn!(cx.logger(), "cannot start TLS on a new connection; closing it";
                    "cog" => "http_in", "peer" => %peer, "error" => %e);
                out.count_errors(1);
                self.free.push(i);
                return;
            }
        };
        if let Err(e) = cx.register(
            io.source(),
            conn_local(i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            slog::error!(cx.logger(), "cannot watch a new connection; closing it";
                "cog" => "http_in", "error" => %e);
            out.count_errors(1);
            self.free.push(i);
            return;
        }
        self.conns[i] = Some(Conn {
            io,
            peer: Value::Shared(peer.to_string().into()),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            phase: Phase::Head,
            last_active: cx.now(),
            ready: true,
            close_after: false,
        });
        self.live += 1;
        // Data may have come with the connection; readiness for it may not come again.
        cx.enqueue(conn_local(i));
    }

    /// At `max_connections`: closes the longest-idle connection between requests (nothing
    /// read of a next one, quiet for at least a second) for `peer`; false if none can go.
    fn evict_idle(&mut self, peer: SocketAddr, out: &mut Out<Record>, cx: &mut Ctx) -> bool {
        let now = cx.now();
        let victim = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                let idle = matches!(c.phase, Phase::Head)
                    && c.rbuf.is_empty()
                    && !c.ready
                    && now.saturating_duration_since(c.last_active) >= EVICT_MIN_IDLE;
                idle.then_some((c.last_active, i))
            })
            .min();
        let Some((_, i)) = victim else {
            return false;
        };
        out.count_errors(1);
        if self.limits_log.allow("connection limits", "http_in", cx)
            && let Some(Some(c)) = self.conns.get(i)
        {
            slog::warn!(cx.logger(), "max_connections reached; closed the longest-idle connection for a new one";
                "cog" => "http_in", "closed" => c.peer(), "new" => %peer,
                "max_connections" => self.max_connections);
        }
        self.close(i, cx);
        true
    }

    /// Closes connection `i`, giving back what it held.
    fn close(&mut self, i: usize, cx: &mut Ctx) {
        let Some(Some(mut c)) = self.conns.get_mut(i).map(Option::take) else {
            return;
        };
        let _ = cx.deregister(c.io.source());
        cx.dequeue(conn_local(i));
        match &c.phase {
            Phase::Body { body, .. } => self.buffered -= body.capacity().min(self.buffered),
            Phase::Emitting(e) => self.buffered -= e.held.min(self.buffered),
            Phase::Waiting { serial, .. } => self.tracker.close(*serial),
            _ => {}
        }
        if let Phase::Emitting(e) = &c.phase {
            self.tracker.close(e.serial);
        }
        self.free.push(i);
        self.live -= 1;
    }

    /// Logs a bad request at a bounded rate.
    fn log_bad(&mut self, peer: &str, status: u16, why: &str, cx: &mut Ctx) {
        if self.bad_log.allow("bad requests", "http_in", cx) {
            slog::warn!(cx.logger(), "request refused";
                "cog" => "http_in", "peer" => peer, "status" => status, "reason" => why);
        }
    }

    /// Answers connection `i` and writes what the socket takes; `close` closes after.
    fn answer(
        &mut self,
        i: usize,
        status: u16,
        body: &str,
        close: bool,
        extra: &str,
        cx: &mut Ctx,
    ) {
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        http::respond(
            &mut c.wbuf,
            status,
            "application/json",
            body.as_bytes(),
            close,
            extra,
        );
        c.close_after |= close;
        c.phase = Phase::Answering;
        self.write_conn(i, cx);
    }

    /// Writes connection `i`'s pending answer; once written, the connection goes on with
    /// its next request, or lingers to close.
    fn write_conn(&mut self, i: usize, cx: &mut Ctx) {
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        match c.flush() {
            Ok(true) => {
                c.last_active = cx.now();
                if !matches!(c.phase, Phase::Answering) {
                    return;
                }
                if c.close_after || self.finishing {
                    c.io.shutdown_write();
                    c.phase = Phase::Lingering(cx.now() + LINGER_CLOSE);
                    c.rbuf = Vec::new();
                } else {
                    c.phase = Phase::Head;
                }
                // What the client sent meanwhile (a pipelined request, the rest of a
                // body) is read now; at a stop the connection stays open until `done`,
                // so that the client can read the answer before the close.
                c.ready = true;
                if !self.finishing {
                    cx.enqueue(conn_local(i));
                }
            }
            Ok(false) => {}
            Err(e) => {
                slog::debug!(cx.logger(), "writing an answer failed; connection closed";
                    "cog" => "http_in", "peer" => c.peer(), "error" => %e);
                self.close(i, cx);
            }
        }
    }

    /// Decides on a request from its head.
    fn judge(&self, h: &RequestHead) -> Verdict {
        let refuse = |status, why: &str| Verdict::Refuse(status, why.to_string(), String::new());
        if h.method != "POST" {
            return Verdict::Refuse(405, "only POST is served".into(), "Allow: POST\r\n".into());
        }
        let path = h.path();
        if !self.paths.is_empty() && !self.paths.iter().any(|p| p == path) {
            return refuse(404, "no such path");
        }
        if let Some(t) = &self.token {
            let given = h.header("authorization").and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
            if !given.is_some_and(|g| same_token(g.as_bytes(), t.as_bytes())) {
                return Verdict::Refuse(
                    401,
                    "missing or wrong bearer token".into(),
                    "WWW-Authenticate: Bearer\r\n".into(),
                );
            }
        }
        let Some(kind) = BodyKind::of(h.header("content-type")) else {
            return refuse(
                415,
                "Content-Type must be application/x-ndjson, application/json or text/plain",
            );
        };
        let gzip = match h
            .header("content-encoding")
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => false,
            Some(v) if v == "identity" || v.is_empty() => false,
            Some(v) if v == "gzip" || v == "x-gzip" => true,
            Some(_) => return refuse(415, "Content-Encoding must be gzip or identity"),
        };
        let framing = match h.body {
            BodyLength::Length(n) if n > self.max_body => {
                return refuse(413, "the body is larger than max_body_bytes");
            }
            BodyLength::Length(n) => Framing::Length {
                total: n,
                filled: 0,
            },
            BodyLength::Chunked => Framing::Chunked(ChunkedDecoder::new()),
        };
        let retry = format!("Retry-After: {}\r\n", self.retry_after);
        if self.paused {
            return Verdict::Refuse(503, "backpressure: try again later".into(), retry);
        }
        let announced = match framing {
            Framing::Length { total, .. } => total,
            Framing::Chunked(_) => 0,
        };
        if self.buffered + announced > self.max_buffered {
            return Verdict::Refuse(
                503,
                "max_buffered_bytes reached: try again later".into(),
                retry,
            );
        }
        let req = Request {
            kind,
            gzip,
            path: Value::Shared(path.to_string().into()),
            close: h.close,
        };
        Verdict::Accept(req, framing)
    }

    /// Serves connection `i`: reads, parses, emits and answers as far as it can this turn.
    fn serve(&mut self, i: usize, out: &mut Out<Record>, cx: &mut Ctx) {
        let mut reads = 0;
        loop {
            let Some(Some(c)) = self.conns.get_mut(i) else {
                return;
            };
            match &c.phase {
                Phase::Head => {
                    if self.finishing {
                        return;
                    }
                    match http::parse_head(&c.rbuf, MAX_HEAD) {
                        Head::Complete(h) => {
                            self.begin(i, h, out, cx);
                            continue;
                        }
                        Head::Bad(status, why) => {
                            let peer = c.peer().to_string();
                            out.count_errors(1);
                            self.log_bad(&peer, status, why, cx);
                            let body = answer_body(0, 0, &error_member(why));
                            self.answer(i, status, &body, true, "", cx);
                            return;
                        }
                        Head::Partial => {}
                    }
                }
                Phase::Body { .. } => {
                    if self.paused {
                        c.ready = true;
                        return;
                    }
                    if self.take_body(i, out, cx) {
                        continue;
                    }
                    let Some(Some(c)) = self.conns.get(i) else {
                        return;
                    };
                    if !matches!(c.phase, Phase::Body { .. }) {
                        // Answered (refused) meanwhile.
                        return;
                    }
                }
                Phase::Emitting(_) => {
                    if self.paused {
                        return;
                    }
                    if !self.emit_some(i, EMIT_PER_TURN, out, cx) {
                        // More next turn, after the other connections.
                        cx.enqueue(conn_local(i));
                    }
                    return;
                }
                Phase::Waiting { .. } | Phase::Answering => return,
                Phase::Lingering(_) => {
                    // Read and thrown away below.
                    c.rbuf.clear();
                }
            }
            // More bytes are needed.
            let Some(Some(c)) = self.conns.get_mut(i) else {
                return;
            };
            if reads == READS_PER_TURN {
                c.ready = true;
                cx.enqueue(conn_local(i));
                return;
            }
            reads += 1;
            let limit = match &c.phase {
                Phase::Head => MAX_HEAD + READ_SIZE,
                _ => usize::MAX,
            };
            match c
                .read_some_into_body()
                .unwrap_or_else(|| c.read_some(limit))
            {
                Ok(None) => {
                    c.ready = false;
                    if c.rbuf.is_empty() {
                        // Between requests a connection holds no read space: a thousand
                        // idle keep-alive clients must not pin 64 KiB each.
                        c.rbuf = Vec::new();
                    }
                    return;
                }
                Ok(Some(0)) => {
                    let mid_request = match &c.phase {
                        Phase::Head => !c.rbuf.is_empty(),
                        Phase::Body { .. } => true,
                        _ => false,
                    };
                    if mid_request {
                        out.count_errors(1);
                        let peer = c.peer().to_string();
                        self.log_bad(&peer, 0, "the client closed the connection mid-request", cx);
                    }
                    self.close(i, cx);
                    return;
                }
                Ok(Some(_)) => c.last_active = cx.now(),
                Err(e) if tls::is_tls_error(&e) => {
                    slog::warn!(cx.logger(), "TLS failed; closing the connection";
                        "cog" => "http_in", "peer" => c.peer(), "error" => %e);
                    out.count_errors(1);
                    self.close(i, cx);
                    return;
                }
                Err(e) => {
                    slog::debug!(cx.logger(), "reading a connection failed; closing it";
                        "cog" => "http_in", "peer" => c.peer(), "error" => %e);
                    if !matches!(c.phase, Phase::Head | Phase::Lingering(_)) {
                        out.count_errors(1);
                    }
                    self.close(i, cx);
                    return;
                }
            }
        }
    }

    /// A request head was read: refuse the request, or start reading its body.
    fn begin(&mut self, i: usize, h: RequestHead, out: &mut Out<Record>, cx: &mut Ctx) {
        let verdict = self.judge(&h);
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        c.rbuf.drain(..h.len);
        match verdict {
            Verdict::Refuse(status, why, extra) => {
                let peer = c.peer().to_string();
                if status != 503 {
                    out.count_errors(1);
                    self.log_bad(&peer, status, &why, cx);
                }
                let body = answer_body(0, 0, &error_member(&why));
                self.answer(i, status, &body, true, &extra, cx);
            }
            Verdict::Accept(req, framing) => {
                if h.expect_continue {
                    c.wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    if let Err(e) = c.flush() {
                        slog::debug!(cx.logger(), "writing 100 Continue failed; connection closed";
                            "cog" => "http_in", "peer" => c.peer(), "error" => %e);
                        self.close(i, cx);
                        return;
                    }
                }
                c.phase = Phase::Body {
                    req,
                    framing,
                    body: Vec::new(),
                };
            }
        }
    }

    /// Moves body bytes from the read buffer into the body; true when the body is
    /// complete and went on to be emitted (or was answered).
    fn take_body(&mut self, i: usize, out: &mut Out<Record>, cx: &mut Ctx) -> bool {
        let max_body = self.max_body;
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return false;
        };
        let Phase::Body { framing, body, .. } = &mut c.phase else {
            return false;
        };
        let before = body.capacity();
        let result: Result<bool, (u16, &'static str)> = match framing {
            Framing::Length { total, filled } => {
                let take = (*total - *filled).min(c.rbuf.len());
                if *filled == 0 && take == *total {
                    // The whole body is in the buffer: take it without a copy.
                    let rest = c.rbuf.split_off(take);
                    *body = std::mem::replace(&mut c.rbuf, rest);
                } else {
                    if body.len() != *total {
                        body.resize(*total, 0);
                    }
                    body[*filled..*filled + take].copy_from_slice(&c.rbuf[..take]);
                    c.rbuf.drain(..take);
                }
                *filled += take;
                Ok(*filled == *total)
            }
            Framing::Chunked(d) => match d.decode(&c.rbuf, body) {
                Ok(n) => {
                    c.rbuf.drain(..n);
                    if body.len() > max_body {
                        Err((413, "the chunked body grew larger than max_body_bytes"))
                    } else {
                        Ok(d.is_done())
                    }
                }
                Err(e) => Err((400, e)),
            },
        };
        let after = body.capacity();
        self.buffered = self.buffered + after - before.min(after);
        match result {
            Ok(false) => false,
            Ok(true) => {
                self.body_done(i, out, cx);
                true
            }
            Err((status, why)) => {
                let peer = c.peer().to_string();
                self.drop_body(i);
                out.count_errors(1);
                self.log_bad(&peer, status, why, cx);
                let body = answer_body(0, 0, &error_member(why));
                self.answer(i, status, &body, true, "", cx);
                false
            }
        }
    }

    /// Gives back the body connection `i` holds (its phase becomes `Head`).
    fn drop_body(&mut self, i: usize) {
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        match std::mem::replace(&mut c.phase, Phase::Head) {
            Phase::Body { body, .. } => self.buffered -= body.capacity().min(self.buffered),
            Phase::Emitting(e) => self.buffered -= e.held.min(self.buffered),
            other => c.phase = other,
        }
    }

    /// A body was read whole: decode it and start emitting its records.
    fn body_done(&mut self, i: usize, out: &mut Out<Record>, cx: &mut Ctx) {
        let max_body = self.max_body;
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        let Phase::Body { req, body, .. } = std::mem::replace(&mut c.phase, Phase::Head) else {
            return;
        };
        let mut held = body.capacity();
        let decoded = if req.gzip {
            let mut plain = Vec::with_capacity(body.len().saturating_mul(4).min(max_body));
            let r = flate2::read::MultiGzDecoder::new(&body[..])
                .take(max_body as u64 + 1)
                .read_to_end(&mut plain);
            match r {
                Ok(_) if plain.len() > max_body => Err((
                    413,
                    "the body is larger than max_body_bytes once decompressed".to_string(),
                )),
                Ok(_) => Ok(plain),
                Err(e) => Err((400, format!("bad gzip: {e}"))),
            }
        } else {
            Ok(body)
        };
        let data = decoded.and_then(|plain| match req.kind {
            BodyKind::Ndjson | BodyKind::Lines => Ok(Data::Lines {
                body: plain,
                pos: 0,
            }),
            BodyKind::Json => match Value::parse_json(&plain) {
                Ok(Value::List(items)) => Ok(Data::Items(items.into_iter())),
                Ok(v @ Value::Map(_)) => Ok(Data::Items(vec![v].into_iter())),
                Ok(_) => Err((
                    400,
                    "the JSON body is neither an array nor an object".into(),
                )),
                Err(e) => Err((400, format!("the JSON body does not parse: {e}"))),
            },
        });
        let data = match data {
            Ok(d) => d,
            Err((status, why)) => {
                self.buffered -= held.min(self.buffered);
                let peer = c.peer().to_string();
                out.count_errors(1);
                self.log_bad(&peer, status, &why, cx);
                let body = answer_body(0, 0, &error_member(&why));
                let close = req.close;
                self.answer(i, status, &body, close, "", cx);
                return;
            }
        };
        // What the decoded body holds now replaces what the raw one held.
        let now_held = match &data {
            Data::Lines { body, .. } => body.capacity(),
            Data::Items(items) => items.len() * std::mem::size_of::<Value>(),
        };
        self.buffered = self.buffered - held.min(self.buffered) + now_held;
        held = now_held;
        self.serial += 1;
        self.tracker.open(self.serial, 0);
        c.phase = Phase::Emitting(Box::new(Emitting {
            req,
            data,
            held,
            serial: self.serial,
            accepted: 0,
            refused: 0,
        }));
        if !self.paused && !self.emit_some(i, EMIT_PER_TURN, out, cx) {
            cx.enqueue(conn_local(i));
        }
    }

    /// Emits up to `limit` records of connection `i`'s request; true when all are out
    /// (and the request answered or waiting for acknowledgements).
    fn emit_some(&mut self, i: usize, limit: usize, out: &mut Out<Record>, cx: &mut Ctx) -> bool {
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return true;
        };
        let Phase::Emitting(e) = &mut c.phase else {
            return true;
        };
        let peer = &c.peer;
        let tracker = &mut self.tracker;
        let on_error = &mut self.on_error;
        let path_field = self.path_field;
        let ts = Timestamp::now();
        let mut n = 0;
        let finished = match &mut e.data {
            Data::Lines { body, pos } => {
                let ndjson = e.req.kind == BodyKind::Ndjson;
                with_line_emitter(|em| {
                    while n < limit && *pos < body.len() {
                        let rest = &body[*pos..];
                        let (line, next) = match memchr::memchr(b'\n', rest) {
                            Some(j) => (&rest[..j], *pos + j + 1),
                            None => (rest, body.len()),
                        };
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        let offset = *pos as u64;
                        *pos = next;
                        if ndjson {
                            if line.iter().all(u8::is_ascii_whitespace) {
                                continue;
                            }
                            n += 1;
                            match Record::parse_json(line) {
                                Ok(mut r) => {
                                    r.id = cx.new_event_id();
                                    if let Some(k) = path_field {
                                        r.insert(k, e.req.path.clone());
                                    }
                                    e.accepted += 1;
                                    tracker.sent(e.serial, r.id, e.accepted + e.refused);
                                    out.push(r);
                                }
                                Err(err) => {
                                    let mut r = bad_record(line, peer, cx);
                                    if let Some(k) = path_field {
                                        r.insert(k, e.req.path.clone());
                                    }
                                    e.refused += 1;
                                    tracker.sent(e.serial, r.id, e.accepted + e.refused);
                                    let why = format!(
                                        "not a JSON object (from {}, line at byte {offset}): {err}",
                                        peer.as_str().unwrap_or("")
                                    );
                                    on_error.fail(r, "http_in", &why, out, cx);
                                }
                            }
                        } else {
                            n += 1;
                            let info = LineInfo {
                                offset,
                                truncated: false,
                                unterminated: false,
                            };
                            let r = em.emit(line, &info, 3, out, cx);
                            r.fields.append_slot(peer_key()).set(peer.clone());
                            r.fields.append_slot(received_at_key()).set(Value::Time(ts));
                            if let Some(k) = path_field {
                                r.insert(k, e.req.path.clone());
                            }
                            e.accepted += 1;
                            tracker.sent(e.serial, r.id, e.accepted + e.refused);
                        }
                    }
                });
                *pos >= body.len()
            }
            Data::Items(items) => {
                for v in items.by_ref() {
                    n += 1;
                    match v {
                        Value::Map(fields) => {
                            let mut r = Record {
                                id: cx.new_event_id(),
                                fields,
                            };
                            if let Some(k) = path_field {
                                r.insert(k, e.req.path.clone());
                            }
                            e.accepted += 1;
                            tracker.sent(e.serial, r.id, e.accepted + e.refused);
                            out.push(r);
                        }
                        other => {
                            let mut text = Vec::new();
                            other.write_json(&mut text);
                            let mut r = bad_record(&text, peer, cx);
                            if let Some(k) = path_field {
                                r.insert(k, e.req.path.clone());
                            }
                            e.refused += 1;
                            tracker.sent(e.serial, r.id, e.accepted + e.refused);
                            let why = format!(
                                "array element {} is not a JSON object (from {})",
                                e.accepted + e.refused - 1,
                                peer.as_str().unwrap_or("")
                            );
                            on_error.fail(r, "http_in", &why, out, cx);
                        }
                    }
                    if n >= limit {
                        break;
                    }
                }
                items.len() == 0
            }
        };
        if !finished {
            return false;
        }
        let Phase::Emitting(e) = std::mem::replace(&mut c.phase, Phase::Head) else {
            return true;
        };
        self.buffered -= e.held.min(self.buffered);
        match self.ack {
            AckMode::Received => {
                self.tracker.close(e.serial);
                let status = if e.accepted == 0 && e.refused > 0 {
                    400
                } else {
                    200
                };
                let body = answer_body(e.accepted, e.refused, "");
                self.answer(i, status, &body, e.req.close, "", cx);
            }
            AckMode::Written => {
                c.phase = Phase::Waiting {
                    serial: e.serial,
                    accepted: e.accepted,
                    refused: e.refused,
                    since: cx.now(),
                    close: e.req.close,
                };
                // Drains may have acknowledged some already; all, only once broadcast.
                self.answer_acked(i, cx);
            }
        }
        true
    }

    /// Answers connection `i` if it waits for acknowledgements and has them all.
    fn answer_acked(&mut self, i: usize, cx: &mut Ctx) {
        let Some(Some(c)) = self.conns.get(i) else {
            return;
        };
        let Phase::Waiting {
            serial,
            accepted,
            refused,
            close,
            ..
        } = c.phase
        else {
            return;
        };
        let total = accepted + refused;
        if self.tracker.committed(serial).unwrap_or(0) < total {
            return;
        }
        self.tracker.close(serial);
        let status = if accepted == 0 && refused > 0 {
            400
        } else {
            200
        };
        let body = answer_body(accepted, refused, "");
        self.answer(i, status, &body, close, "", cx);
    }

    /// Answers 503 to a request waiting for acknowledgements: `why`, with how many came.
    fn answer_unacked(&mut self, i: usize, why: &str, cx: &mut Ctx) {
        let Some(Some(c)) = self.conns.get(i) else {
            return;
        };
        let Phase::Waiting {
            serial,
            accepted,
            refused,
            close,
            ..
        } = c.phase
        else {
            return;
        };
        let acked = self.tracker.committed(serial).unwrap_or(0);
        self.tracker.close(serial);
        slog::warn!(cx.logger(), "request answered 503: its records were not all acknowledged";
            "cog" => "http_in", "peer" => c.peer(), "records" => accepted + refused,
            "acknowledged" => acked, "reason" => why);
        let extra = format!(",\"acknowledged\":{acked}{}", error_member(why));
        let body = answer_body(accepted, refused, &extra);
        let retry = format!("Retry-After: {}\r\n", self.retry_after);
        self.answer(i, 503, &body, close, &retry, cx);
    }

    /// Timeouts: idle connections, unanswered acknowledgements, lingering closes.
    fn sweep(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        let now = cx.now();
        for i in 0..self.conns.len() {
            let Some(Some(c)) = self.conns.get(i) else {
                continue;
            };
            let quiet = now.saturating_duration_since(c.last_active);
            let idle = self.idle_timeout.is_some_and(|t| quiet >= t);
            match &c.phase {
                Phase::Waiting { since, .. }
                    if now.saturating_duration_since(*since) >= self.ack_timeout =>
                {
                    self.answer_unacked(i, "ack_timeout passed", cx);
                }
                Phase::Lingering(until) if now >= *until => self.close(i, cx),
                Phase::Head if idle && !c.ready => {
                    if !c.rbuf.is_empty() {
                        out.count_errors(1);
                        let peer = c.peer().to_string();
                        self.log_bad(&peer, 408, "idle_timeout passed inside a request head", cx);
                    }
                    self.close(i, cx);
                }
                Phase::Body { .. } if idle && !c.ready && !self.paused => {
                    out.count_errors(1);
                    let peer = c.peer().to_string();
                    self.log_bad(&peer, 408, "idle_timeout passed inside a request body", cx);
                    self.close(i, cx);
                }
                Phase::Answering if idle => {
                    // The client reads no answer.
                    self.close(i, cx);
                }
                _ => {}
            }
        }
    }
}

/// A record for a line that is not a JSON object: the line in `message`, and `peer`.
fn bad_record(line: &[u8], peer: &Value, cx: &mut Ctx) -> Record {
    let mut r = Record::with_capacity(4);
    r.id = cx.new_event_id();
    r.insert(message_key(), Value::Bytes(line.to_vec()));
    r.insert(peer_key(), peer.clone());
    r
}

impl Cog<Record> for HttpIn {
    fn name(&self) -> &str {
        "http_in"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let l =
            server_settings::listen_tcp("http_in", self.addr, LISTENER, self.tls.is_some(), cx)?;
        self.listener = Some(l);
        cx.timer_every(SWEEP_EVERY, SWEEP)?;
        Ok(())
    }

    fn inspect(&self, into: &mut crate::engine::control::Inspection) {
        into.buffer("bytes", self.buffered, Some(self.max_buffered));
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        match local {
            SWEEP => {
                if matches!(why, Wake::Timer(_)) {
                    self.sweep(out, cx);
                }
            }
            LISTENER => {
                self.listener_ready = true;
                if !self.finishing {
                    self.accept_some(out, cx);
                }
            }
            _ => {
                let i = (local - FIRST_CONN) as usize;
                if let Wake::Ready(ev) = why
                    && ev.is_writable()
                {
                    self.write_conn(i, cx);
                }
                if let Some(Some(c)) = self.conns.get_mut(i) {
                    c.ready = true;
                }
                self.serve(i, out, cx);
            }
        }
    }

    fn event_done(&mut self, ids: &[EventId], cx: &mut Ctx) {
        if self.ack == AckMode::Written && self.tracker.done(ids) {
            for i in 0..self.conns.len() {
                self.answer_acked(i, cx);
            }
        }
    }

    fn event_rename(&mut self, old: EventId, new: EventId, _: &mut Ctx) {
        self.tracker.rename(old, new);
    }

    fn pause(&mut self, _: &mut Ctx) {
        self.paused = true;
    }

    fn resume(&mut self, cx: &mut Ctx) {
        self.paused = false;
        if self.listener_ready {
            cx.enqueue(LISTENER);
        }
        for (i, c) in self.conns.iter().enumerate() {
            if let Some(c) = c
                && (c.ready || matches!(c.phase, Phase::Emitting(_)))
            {
                cx.enqueue(conn_local(i));
            }
        }
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        self.finishing = true;
        if let Some(mut l) = self.listener.take() {
            let _ = cx.deregister(&mut l);
        }
        let retry = format!("Retry-After: {}\r\n", self.retry_after);
        let mut cut = 0;
        for i in 0..self.conns.len() {
            let Some(Some(c)) = self.conns.get(i) else {
                continue;
            };
            match &c.phase {
                Phase::Head if c.rbuf.is_empty() => self.close(i, cx),
                Phase::Head | Phase::Body { .. } => {
                    // Nothing of it was handed on: the client sends it again elsewhere.
                    cut += 1;
                    self.drop_body(i);
                    let body = answer_body(0, 0, &error_member("the server is stopping"));
                    self.answer(i, 503, &body, true, &retry, cx);
                }
                Phase::Emitting(_) => {
                    // Received whole: handed on whole, backpressure notwithstanding.
                    self.emit_some(i, usize::MAX, out, cx);
                }
                Phase::Waiting { .. } => {}
                Phase::Answering => self.write_conn(i, cx),
                Phase::Lingering(_) => self.close(i, cx),
            }
        }
        if cut > 0 {
            slog::info!(cx.logger(), "stopping: requests being received answered 503";
                "cog" => "http_in", "requests" => cut);
        }
    }

    fn done(&mut self, cx: &mut Ctx) {
        let mut unanswered = 0;
        for i in 0..self.conns.len() {
            if let Some(Some(Conn {
                phase: Phase::Waiting { .. },
                ..
            })) = self.conns.get(i)
            {
                unanswered += 1;
                self.answer_unacked(i, "the server stopped before every record was written", cx);
            }
            self.close(i, cx);
        }
        if unanswered > 0 {
            slog::warn!(cx.logger(), "stopped with requests whose records were not all written; answered 503";
                "cog" => "http_in", "requests" => unanswered);
        }
        if self.refused_conns > 0 {
            slog::warn!(cx.logger(), "connections refused at max_connections";
                "cog" => "http_in", "refused" => self.refused_conns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_pick_the_reading() {
        assert_eq!(
            BodyKind::of(Some("application/x-ndjson")),
            Some(BodyKind::Ndjson)
        );
        assert_eq!(
            BodyKind::of(Some("Application/JSON; charset=utf-8")),
            Some(BodyKind::Json)
        );
        assert_eq!(
            BodyKind::of(Some("text/plain;charset=UTF-8")),
            Some(BodyKind::Lines)
        );
        assert_eq!(
            BodyKind::of(Some("application/x-www-form-urlencoded")),
            None
        );
        assert_eq!(BodyKind::of(None), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abc", b"abd"));
        assert!(!same_token(b"abc", b"abcd"));
        assert!(!same_token(b"", b"a"));
    }

    #[test]
    fn answers_are_json() {
        assert_eq!(answer_body(3, 1, ""), "{\"accepted\":3,\"refused\":1}\n");
        assert_eq!(
            answer_body(0, 0, &error_member("a \"b\"")),
            "{\"accepted\":0,\"refused\":0,\"error\":\"a \\\"b\\\"\"}\n"
        );
    }
}
