//! `http_out`: records batched as NDJSON and POSTed to an HTTP collector, acknowledged once
//! it answered 2xx.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::net::TcpStream;

use crate::kit::disk_buffer::{BufferSettings, DiskOptions, FrameSink, REPLAYED, Spill};
use crate::kit::format::{Escape, OutputFormat, Template};
use crate::kit::forward::{
    Backoff, ForwardOptions, Framing, GENERATIONS, Redial, SOCK_BASE, Target, Watermark,
    check_address, is_refusal, lookup_result,
};
use crate::kit::on_error::{self, LogLimiter, OnError, OnErrorSettings};
use crate::kit::tls::{self, Stream, TlsClient, TlsSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::Record;
use crate::record::timefmt::TimeFormat;
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

const RETRY: Local = 1;
const CONNECT_TIMEOUT: Local = 2;
const DRAIN_DEADLINE: Local = 3;
const LINGER: Local = 4;
const HOLD: Local = 5;
const RSP_TIMEOUT: Local = 6;
const DISK_RETRY: Local = 7;
/// Largest response head accepted; a longer one is a broken server.
const MAX_HEAD: usize = 64 << 10;
/// Bytes read from the socket per call.
const READ_CHUNK: usize = 16 << 10;
/// Longest `Retry-After` obeyed (unless `backoff_max` is longer): a server asking for
/// more is asked again then.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);
/// Largest response accepted (a `_bulk` answer for a large batch with many failed items
/// stays far below); a longer one is a broken server, and the connection is dropped.
const MAX_RESPONSE: usize = 64 << 20;

/// POSTs records in batches to an HTTP collector (Loki's or Vector's HTTP source, Fluent
/// Bit's `http` input, any endpoint taking newline-delimited JSON), one request in flight
/// on one keep-alive connection, and acknowledges a record to its supply only once the
/// request holding it was answered 2xx: with a checkpointing supply (`tail`), an outage or
/// a crash of either side loses nothing.
///
/// Each record is rendered as one JSON object per line (`format = "ndjson"`, sent with
/// `Content-Type: application/x-ndjson`). A batch is closed when it holds `batch_records`
/// records or `batch_bytes` bytes, or `linger` after its first record, whichever comes
/// first.
///
/// With `format = "es_bulk"` the body is an Elasticsearch/OpenSearch `_bulk` request (point
/// `url` at `.../_bulk`): each record is preceded by the action line
/// `{"index":{"_index":"…"}}`, the index rendered from `index` (a template: `{field}`
/// placeholders take text from the record, escaped as JSON). A 2xx answer is read per
/// item: a written item (2xx) acknowledges its record, a `429` or `5xx` item sends its
/// record again (the failed items together, as the next request, after the backoff), any
/// other item sends its record to `on_error` with the item's error type and reason. An
/// answer with `"errors": false` acknowledges the whole batch.
///
/// URLs are `http://host:port/path` (port 80 by default) or `https://host:port/path`
/// (TLS, port 443 by default); a host name is resolved off the loop at every connection.
/// With `https://` the server's certificate is verified against `tls.ca`, or the system
/// store (`/etc/ssl/certs/ca-certificates.crt`) without a `tls` table or `ca`, and must
/// name the URL's host (or `tls.server_name`, also sent as SNI); `tls.cert` and `tls.key`
/// present a client certificate. A failed handshake is logged with rustls' reason,
/// counted as an error, and retried like a failed connection.
///
/// A connection error, a `429` or a `5xx` answer, or no answer within `response_timeout`
/// sends the same batch again, unchanged and before any newer one (order is kept), after
/// a delay growing from `backoff_initial` to `backoff_max` (with jitter); a refused
/// connection is tried again every `backoff_initial`. A `429` or `5xx` answer with
/// `Retry-After` (seconds or an HTTP date) is obeyed instead (at least
/// `backoff_initial`, at most 5 minutes or `backoff_max` if longer).
///
/// `compression = "gzip"` sends bodies gzip-compressed (`Content-Encoding: gzip`, the
/// fastest level; a batch is compressed once, when first sent). `headers` adds request
/// headers (a `Content-Type` or `User-Agent` given there replaces the drain's; the
/// framing headers, `Host` and `Authorization` cannot be set); `auth` gives credentials:
/// `{ bearer = "TOKEN" }` or `{ user = "U", password = "P" }` (HTTP basic). Any other answer that is not 2xx
/// (`4xx`, `3xx`) is final: the batch's records are counted as errors and handled per
/// `on_error` (`keep` passes them on with the reason in `error`, `train:NAME` sends them
/// to a dead-letter train, `drop` acknowledges and drops them), each rebuilt from the JSON
/// that was sent. The server sees a batch twice only when an answer was lost (the
/// connection broke or timed out after it had the request), and a `5xx`/`429` batch again.
///
/// Batches wait in memory while the server is slow or away; once they hold
/// `max_buffered_bytes` the supplies pause (no record is dropped) until half of it is
/// free. At shutdown the batch being filled is closed and the drain keeps sending, at
/// most `shutdown_timeout`; what is left is logged (records and bytes) and not
/// acknowledged, so a supply with a checkpoint sends it again on the next run.
///
/// **Disk buffer.** With `buffer = "disk"`, records beyond `max_buffered_bytes`, and every
/// record from a failed connection (attempt) until a connection is made again, go to
/// segment files in `buffer_dir` (default: `buffer-TRAIN-COG` under `[state] dir`) instead
/// of pausing the supplies; the records memory holds in batches join them there, ahead of
/// them, when a connection fails, at the first spill and at the stop. They are
/// acknowledged once synced to disk, survive a restart or a kill -9, and are posted in
/// order, before newer records, once the server answers again. A stop with the server
/// away does not wait for it; at the end of `shutdown_timeout` the unanswered records stay
/// on disk for the next run. `max_bytes` and `when_full` as for `tcp_out`.
///
/// ```toml
/// [[train.cog]]
/// type = "http_out"
/// url = "http://collector.example:8080/ingest"
/// format = "ndjson"
/// batch_records = 5000
/// batch_bytes = "1MiB"
/// linger = "50ms"
/// max_buffered_bytes = "16MiB"
/// backoff_initial = "100ms"
/// backoff_max = "10s"
/// connect_timeout = "5s"
/// response_timeout = "30s"
/// shutdown_timeout = "30s"
/// compression = "none"           # "gzip": Content-Encoding: gzip
/// headers = { "X-Scope-OrgID" = "tenant-1" }
/// auth = { bearer = "TOKEN" }    # or { user = "U", password = "P" }
/// on_error = "keep"              # drop | keep | train:NAME (records of a 4xx batch)
/// buffer = "memory"              # memory | disk
/// max_bytes = "1GiB"             # the most the disk buffer holds
/// when_full = "block"            # block | drop_oldest
/// ```
///
/// To Elasticsearch or OpenSearch:
///
/// ```toml
/// [[train.cog]]
/// type = "http_out"
/// url = "http://elastic.example:9200/_bulk"
/// format = "es_bulk"
/// index = "logs-{service}"
/// on_error = "train:dead"        # items refused (mapping errors), whole batches refused
/// # with url = "https://...": tls = { ca = "ca.pem", cert = "client.pem", key = "client.key" }
/// ```
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "http_out",
    kind: CogKind::Drain,
    summary: "POSTs records in NDJSON or Elasticsearch _bulk batches over HTTP; retries 5xx/429 with backoff, acknowledges on 2xx",
    params: HttpOutSettings::PARAMS,
    fields: &[],
    build,
};

crate::choice! {
    /// How `http_out` writes a batch.
    pub enum HttpFormat { Ndjson = "ndjson", EsBulk = "es_bulk" }
}

crate::choice! {
    /// Whether `http_out` compresses its request bodies.
    pub enum HttpCompression { None = "none", Gzip = "gzip" }
}

crate::settings! {
    /// Settings of `http_out`.
    pub struct HttpOutSettings {
        /// "http://host:port/path" the batches are POSTed to (port 80 by default), or "https://..." (TLS, port 443 by default)
        #[setting(required)]
        url: String,
        /// ndjson: one JSON object per record and line; es_bulk: the Elasticsearch/OpenSearch `_bulk` body (an `index` action line, then the record)
        format: HttpFormat = "ndjson",
        /// with format = "es_bulk": the index each record goes to; {field} placeholders take it from the record (e.g. "logs-{service}")
        index: Option<String>,
        /// none, or gzip: bodies are compressed (fastest level) and sent with Content-Encoding: gzip
        compression: HttpCompression = "none",
        /// more request headers, e.g. { "X-Scope-OrgID" = "tenant" }; Content-Type and User-Agent may be replaced, the framing headers not
        headers: toml::Table,
        /// credentials: { bearer = "TOKEN" } (Authorization: Bearer), or { user = "U", password = "P" } (HTTP basic)
        auth: toml::Table,
        /// a batch is sent once it holds this many records
        batch_records: i64 = "5000",
        /// a batch is sent once its body holds this many bytes
        #[setting(size)]
        batch_bytes: usize = "1MiB",
        /// a batch is sent at most this long after its first record
        linger: Duration = "50ms",
        /// batches held while the server is slow or away; when full the supplies pause (resume below half)
        #[setting(size)]
        max_buffered_bytes: usize = "16MiB",
        /// first delay before sending again after a connection error, 429 or 5xx; doubles up to backoff_max, with jitter
        backoff_initial: Duration = "100ms",
        /// longest delay between attempts
        backoff_max: Duration = "10s",
        /// a connection attempt not completed by then is abandoned and retried
        connect_timeout: Duration = "5s",
        /// a request not answered by then is given up with its connection and sent again
        response_timeout: Duration = "30s",
        /// at shutdown, how long held batches may take to be answered; the rest is logged as unsent
        shutdown_timeout: Duration = "30s",
        /// What becomes of the records of a batch the server refused (4xx but 429).
        #[setting(flatten)]
        on_error: OnErrorSettings,
        /// with an https:// url: { ca (default: the system store), verify = true, server_name (default: the url's host), cert and key (client certificate) }
        tls: Option<TlsSettings>,
        /// The disk buffer (beyond max_buffered_bytes).
        #[setting(flatten)]
        buffer: BufferSettings,
    }
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: HttpOutSettings = p.settings()?;
    if let Some(t) = s.tls.as_mut() {
        t.resolve(cx.base_dir);
    }
    DiskOptions::resolve(&mut s.buffer, p, cx);
    let on_error = on_error::from_settings(&s.on_error, p, cx)?;
    Ok(Box::new(
        HttpOut::from_settings(&s, on_error).map_err(|e| p.setting_error(e))?,
    ))
}

/// Where requests go, read from `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port` to connect to.
    pub address: String,
    /// The `Host` header.
    pub host: String,
    /// The request target (`/` when the URL has none).
    pub path: String,
    /// `https://`: TLS.
    pub https: bool,
}

impl HttpUrl {
    /// Reads `http://host[:port][/path]` or `https://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let (rest, https, port) = match url.strip_prefix("https://") {
            Some(rest) => (rest, true, 443),
            None => (
                url.strip_prefix("http://").ok_or_else(|| {
                    format!("expected \"http://host:port/path\" or \"https://...\", found {url:?}")
                })?,
                false,
                80,
            ),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("no host (or user info, unsupported) in {url:?}"));
        }
        let has_port = if authority.starts_with('[') {
            authority.contains("]:")
        } else {
            authority.contains(':')
        };
        let address = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:{port}")
        };
        check_address(&address).map_err(|m| format!("{m} in {url:?}"))?;
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!(
                "the path of {url:?} holds spaces or control characters"
            ));
        }
        Ok(HttpUrl {
            address,
            host: authority.to_string(),
            path: path.to_string(),
            https,
        })
    }
}

/// One request's worth of records: their NDJSON lines and ids, in order.
#[derive(Debug, Default)]
struct Batch {
    body: Vec<u8>,
    ids: Vec<EventId>,
    /// The place in the disk buffer's order ([`Places`]) of each record whose id is
    /// [`REPLAYED`], at the record's index; the entries of the others are unused. Shorter
    /// than `ids` (empty in a batch only memory holds) when the newest records are not on
    /// disk: the memory path never touches it.
    places: Vec<u64>,
    /// With `compression = "gzip"`: the body compressed, made when first sent and kept
    /// for the attempts after.
    gz: Option<Vec<u8>>,
}

/// The confirmations of the records on disk (read back, or adopted from memory), for the
/// disk buffer, which counts them by number from its oldest unconfirmed record, in the
/// order it handed the records back. Each such record gets its place in that order; a
/// `_bulk` item sent again keeps its place while the items after it are confirmed, so
/// only the confirmed places in a row from the oldest are passed on: a kill or a stop
/// then keeps the retried record on disk (and sends what follows it again).
#[derive(Debug, Default)]
struct Places {
    /// The place the next record handed back gets.
    next: u64,
    /// The oldest place not confirmed.
    first: u64,
    /// Places after `first` already confirmed.
    early: std::collections::BTreeSet<u64>,
    /// Places confirmed in a row, not yet passed to the disk buffer.
    ready: u64,
}

impl Places {
    /// The place of the next record the disk buffer hands back.
    fn take(&mut self) -> u64 {
        let p = self.next;
        self.next += 1;
        p
    }

    /// The record at place `p` is done with (the server took it, or `on_error` did).
    fn confirm(&mut self, p: u64) {
        if p != self.first {
            if p > self.first {
                self.early.insert(p);
            }
            return;
        }
        self.first += 1;
        self.ready += 1;
        while !self.early.is_empty() && self.early.remove(&self.first) {
            self.first += 1;
            self.ready += 1;
        }
    }

    /// The confirmations for the disk buffer since the last call.
    fn take_ready(&mut self) -> u64 {
        std::mem::take(&mut self.ready)
    }
}

/// What a response read from the connection's input says.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// Not complete yet.
    Partial,
    /// A complete response of `status` taking the first `consumed` bytes; `close`: the
    /// server closes the connection after it (or its body lasts until the close).
    Done {
        /// The status code.
        status: u16,
        /// Bytes of the head and body.
        consumed: usize,
        /// The connection is not kept alive.
        close: bool,
        /// Bytes of the head (the body follows).
        head: usize,
        /// The body is chunked.
        chunked: bool,
        /// The delay `Retry-After` asks for, if given.
        retry_after: Option<Duration>,
    },
    /// Not HTTP, or beyond the limits.
    Bad(String),
}

/// The delay a `Retry-After` value asks for at `now`: seconds, or an HTTP date
/// (`Fri, 31 Dec 1999 23:59:59 GMT`; one already past asks for none). `None` when it is
/// neither, and the backoff applies.
fn retry_after_delay(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    static HTTP_DATE: OnceLock<Option<TimeFormat>> = OnceLock::new();
    let format = HTTP_DATE
        .get_or_init(|| TimeFormat::new("%a, %d %b %Y %H:%M:%S GMT").ok())
        .as_ref()?;
    let at = format.parse(value.as_bytes()).ok()?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let at = u64::try_from(at.secs).unwrap_or(0);
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Parses one HTTP/1.x response at the start of `buf`.
pub fn parse_response(buf: &[u8]) -> Response {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut rsp = httparse::Response::new(&mut headers);
    let head = match rsp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Response::Bad(format!("response head longer than {MAX_HEAD} bytes"));
        }
        Ok(httparse::Status::Partial) => return Response::Partial,
        Err(e) => return Response::Bad(format!("malformed response: {e}")),
    };
    let status = rsp.code.unwrap_or(0);
    let mut close = rsp.version == Some(0);
    let mut length = None;
    let mut chunked = false;
    let mut retry_after = None;
    for h in rsp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                Some(n) => length = Some(n),
                None => return Response::Bad("malformed Content-Length".into()),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.to_ascii_lowercase().ends_with(b"chunked");
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| retry_after_delay(v.trim(), SystemTime::now()));
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value.to_ascii_lowercase();
            if v.windows(5).any(|w| w == b"close") {
                close = true;
            } else if v.windows(10).any(|w| w == b"keep-alive") {
                close = false;
            }
        }
    }
    // 1xx, 204 and 304 have no body.
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Response::Done {
            status,
            consumed: head,
            close,
            head,
            chunked: false,
            retry_after,
        };
    }
    if chunked {
        return match chunked_len(&buf[head..]) {
            Ok(Some(n)) => Response::Done {
                status,
                consumed: head + n,
                close,
                head,
                chunked: true,
                retry_after,
            },
            Ok(None) => Response::Partial,
            Err(e) => Response::Bad(e),
        };
    }
    match length {
        Some(n) if buf.len() - head >= n => Response::Done {
            status,
            consumed: head + n,
            close,
            head,
            chunked: false,
            retry_after,
        },
        Some(_) => Response::Partial,
        // The body lasts until the close: the status is all that matters.
        None => Response::Done {
            status,
            consumed: buf.len(),
            close: true,
            head,
            chunked: false,
            retry_after,
        },
    }
}

/// The length of a complete chunked body at the start of `buf` (trailers included), or
/// `None` while incomplete.
fn chunked_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut pos = 0;
    loop {
        match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete((n, 0))) => {
                pos += n;
                // Trailer lines, then an empty line.
                loop {
                    let Some(i) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                        return Ok(None);
                    };
                    pos += i + 2;
                    if i == 0 {
                        return Ok(Some(pos));
                    }
                }
            }
            Ok(httparse::Status::Complete((n, size))) => {
                let size = usize::try_from(size).map_err(|_| "chunk too large".to_string())?;
                let end = pos
                    .checked_add(n)
                    .and_then(|p| p.checked_add(size))
                    .and_then(|p| p.checked_add(2))
                    .ok_or("chunk too large")?;
                if buf.len() < end {
                    return Ok(None);
                }
                pos = end;
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("malformed chunk size".into()),
        }
    }
}

/// Each record's bytes in a batch body (`lines` lines per record, each ending in `\n`),
/// as start and end offsets.
fn record_spans(body: &[u8], lines: usize) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let (mut start, mut n) = (0, 0);
    for end in memchr::memchr_iter(b'\n', body) {
        n += 1;
        if n == lines {
            spans.push((start, end + 1));
            start = end + 1;
            n = 0;
        }
    }
    spans
}

/// The last line of a record's span (its document), without the newline.
fn doc_line(span: &[u8]) -> &[u8] {
    let span = span.strip_suffix(b"\n").unwrap_or(span);
    match memchr::memrchr(b'\n', span) {
        Some(i) => &span[i + 1..],
        None => span,
    }
}

/// What a 2xx `_bulk` answer says of its items.
#[derive(Debug, PartialEq, Eq)]
pub enum BulkItems {
    /// `"errors": false`: every item was written.
    AllOk,
    /// Each item's status and, when it failed, its error's type and reason.
    Each(Vec<(u16, String)>),
}

/// Reads a `_bulk` answer; `None` when it is not one.
pub fn bulk_items(body: &[u8]) -> Option<BulkItems> {
    let Ok(crate::record::Value::Map(m)) = crate::record::Value::parse_json(body) else {
        return None;
    };
    let key = crate::record::Key::new;
    if matches!(
        m.get(key("errors")),
        Some(crate::record::Value::Bool(false))
    ) {
        return Some(BulkItems::AllOk);
    }
    let Some(crate::record::Value::List(items)) = m.get(key("items")) else {
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        // Each item is {"index": {...}} (or create, update, delete).
        let crate::record::Value::Map(item) = item else {
            return None;
        };
        let Some((_, crate::record::Value::Map(result))) = item.iter().next() else {
            return None;
        };
        let status = result.get(key("status")).and_then(|v| v.as_i64())?;
        let why = match result.get(key("error")) {
            Some(crate::record::Value::Map(e)) => {
                let text = |k| e.get(key(k)).and_then(|v| v.as_str()).unwrap_or("");
                format!("{}: {}", text("type"), text("reason"))
            }
            Some(other) => {
                let mut b = Vec::new();
                other.write_json(&mut b);
                String::from_utf8_lossy(&b).into_owned()
            }
            None => String::new(),
        };
        out.push((u16::try_from(status).unwrap_or(0), why));
    }
    Some(BulkItems::Each(out))
}

/// The body of a response: `raw` as received, decoded when `chunked`.
fn response_body(raw: &[u8], chunked: bool) -> Vec<u8> {
    if !chunked {
        return raw.to_vec();
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(httparse::Status::Complete((n, size))) = httparse::parse_chunk_size(&raw[pos..]) {
        let Ok(size) = usize::try_from(size) else {
            break;
        };
        let start = pos + n;
        if size == 0 || start + size > raw.len() {
            break;
        }
        out.extend_from_slice(&raw[start..start + size]);
        pos = start + size + 2;
        if pos > raw.len() {
            break;
        }
    }
    out
}

/// A body compressed with gzip, at the fastest level: the body is text that compresses
/// well even so, and the drain's loop is the one thread of every train.
fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a vector cannot fail.
    let _ = e.write_all(body);
    e.finish().unwrap_or_default()
}

/// `data` in base64 (RFC 4648, padded), for HTTP basic credentials.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Headers the drain writes itself: a `headers` entry may not name them.
const OWN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-encoding",
    "authorization",
];

/// Whether `text` may stand in a header line (no CR, LF or other control character).
fn header_text_ok(text: &str) -> bool {
    !text.bytes().any(|b| b.is_ascii_control() && b != b'\t')
}

/// The header lines of every request, from `compression`, `headers` and `auth`.
fn request_headers(s: &HttpOutSettings) -> Result<String, SettingError> {
    let mut lines = String::new();
    let mut own_type = true;
    let mut own_agent = true;
    for (name, value) in &s.headers {
        let toml::Value::String(value) = value else {
            return Err(SettingError::new(
                "headers",
                format!("the value of {name:?} must be a string"),
            ));
        };
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(SettingError::new(
                "headers",
                format!("{name:?} is not a header name"),
            ));
        }
        let lower = name.to_ascii_lowercase();
        if OWN_HEADERS.contains(&lower.as_str()) {
            return Err(SettingError::new(
                "headers",
                format!("{name:?} is set by the drain (credentials go in `auth`)"),
            ));
        }
        if !header_text_ok(value) {
            return Err(SettingError::new(
                "headers",
                format!("the value of {name:?} holds a control character"),
            ));
        }
        own_type &= lower != "content-type";
        own_agent &= lower != "user-agent";
        lines.push_str(&format!("{name}: {value}\r\n"));
    }
    let mut fixed = String::new();
    if own_agent {
        fixed.push_str("User-Agent: deadbeat\r\n");
    }
    if own_type {
        fixed.push_str("Content-Type: application/x-ndjson\r\n");
    }
    if s.compression == HttpCompression::Gzip {
        fixed.push_str("Content-Encoding: gzip\r\n");
    }
    let text = |key: &str| -> Result<Option<String>, SettingError> {
        match s.auth.get(key) {
            None => Ok(None),
            Some(toml::Value::String(v)) if header_text_ok(v) => Ok(Some(v.clone())),
            Some(_) => Err(SettingError::new(
                "auth",
                format!("`{key}` must be a string without control characters"),
            )),
        }
    };
    if let Some(k) = s
        .auth
        .keys()
        .find(|k| !["bearer", "user", "password"].contains(&k.as_str()))
    {
        return Err(SettingError::new(
            "auth",
            format!("unknown key {k:?} (bearer, or user and password)"),
        ));
    }
    match (text("bearer")?, text("user")?, text("password")?) {
        (None, None, None) => {}
        (Some(token), None, None) => fixed.push_str(&format!("Authorization: Bearer {token}\r\n")),
        (None, Some(user), Some(password)) => {
            if user.contains(':') {
                return Err(SettingError::new("auth", "`user` may not hold a colon"));
            }
            let b = base64(format!("{user}:{password}").as_bytes());
            fixed.push_str(&format!("Authorization: Basic {b}\r\n"));
        }
        _ => {
            return Err(SettingError::new(
                "auth",
                "give `bearer`, or `user` and `password`",
            ));
        }
    }
    fixed.push_str(&lines);
    Ok(fixed)
}

enum State {
    /// Waiting for work or for the retry timer.
    Idle,
    /// A name lookup runs on a worker thread.
    Resolving,
    Connecting(TcpStream),
    Connected(Stream<TcpStream>),
}

/// The `http_out` drain; see the descriptor's documentation for the behaviour.
pub struct HttpOut {
    url: HttpUrl,
    target: Target,
    opts: ForwardOptions,
    batch_records: usize,
    batch_bytes: usize,
    linger: Duration,
    response_timeout: Duration,
    /// With `es_bulk`: the index of each record (placeholders escaped as JSON text).
    index: Option<Template>,
    on_error: OnError<Record>,
    /// The batch being filled.
    open: Batch,
    /// Closed batches, oldest first; the first is the one in flight.
    batches: VecDeque<Batch>,
    /// Body bytes held, in `open` and `batches`.
    buffered: usize,
    /// The head of the request in flight.
    head: Vec<u8>,
    /// The header lines every request carries beyond Host and Content-Length (type,
    /// agent, encoding, credentials, `headers`), each ending in CRLF.
    headers: String,
    /// `compression = "gzip"`.
    gzip: bool,
    /// Bytes of the request in flight written (head, then body).
    written: usize,
    in_flight: bool,
    rbuf: Vec<u8>,
    state: State,
    generation: u32,
    writable: bool,
    /// After a 429/5xx: no request before the hold timer.
    holding: bool,
    redial: Redial,
    retry_backoff: Backoff,
    retry_timer: Option<TimerId>,
    connect_timer: Option<TimerId>,
    linger_timer: Option<TimerId>,
    hold_timer: Option<TimerId>,
    rsp_timer: Option<TimerId>,
    watermark: Watermark,
    lingering: bool,
    next_addr: usize,
    limiter: LogLimiter,
    /// With an `https://` URL.
    tls: Option<TlsClient>,
    /// The disk buffer (`buffer = "disk"`), if any.
    disk: Spill,
    /// The places of the records on disk, and those the server took.
    places: Places,
    /// The last connection attempt failed or the connection was lost, and none was made
    /// since: with a disk buffer, records go straight to it.
    down: bool,
    /// Stopping with the server away: every record is on disk, the drain waits only for
    /// their sync.
    parked: bool,
}

impl HttpOut {
    /// A drain made from its settings, without a configuration file; `on_error` takes the
    /// records of refused batches.
    pub fn from_settings(
        s: &HttpOutSettings,
        on_error: OnError<Record>,
    ) -> Result<Self, SettingError> {
        let url = HttpUrl::parse(&s.url).map_err(|m| SettingError::new("url", m))?;
        let tls = match (url.https, &s.tls) {
            (true, t) => Some(TlsClient::new(
                &t.clone().unwrap_or_default(),
                &url.address,
            )?),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(SettingError::new(
                    "tls",
                    "applies to https:// URLs only (the url is http://)",
                ));
            }
        };
        let disk = DiskOptions::new(&s.buffer)?;
        if !(1..=10_000_000).contains(&s.batch_records) {
            return Err(SettingError::new(
                "batch_records",
                "must be within 1..=10000000",
            ));
        }
        let above_zero = |key| Err(SettingError::new(key, "must be above 0"));
        if s.batch_bytes == 0 {
            return above_zero("batch_bytes");
        }
        if s.max_buffered_bytes == 0 {
            return above_zero("max_buffered_bytes");
        }
        if s.response_timeout.is_zero() {
            return above_zero("response_timeout");
        }
        if s.backoff_initial.is_zero() {
            return above_zero("backoff_initial");
        }
        if s.backoff_max < s.backoff_initial {
            return Err(SettingError::new(
                "backoff_max",
                "must be at least backoff_initial",
            ));
        }
        if s.connect_timeout.is_zero() {
            return above_zero("connect_timeout");
        }
        let index = match (s.format, &s.index) {
            (HttpFormat::EsBulk, Some(t)) => {
                // Index names hold no quotes or backslashes; placeholders are escaped.
                if t.bytes()
                    .any(|b| b == b'"' || b == b'\\' || b.is_ascii_control())
                {
                    return Err(SettingError::new(
                        "index",
                        "holds a quote, a backslash or a control character",
                    ));
                }
                let t = Template::parse(t).map_err(|m| SettingError::new("index", m))?;
                Some(t.escaped(Escape::Json))
            }
            (HttpFormat::EsBulk, None) => {
                return Err(SettingError::new(
                    "index",
                    "format = \"es_bulk\" needs an `index`",
                ));
            }
            (HttpFormat::Ndjson, Some(_)) => {
                return Err(SettingError::new(
                    "index",
                    "`index` is used only with format = \"es_bulk\"",
                ));
            }
            (HttpFormat::Ndjson, None) => None,
        };
        let headers = request_headers(s)?;
        let opts = ForwardOptions {
            format: OutputFormat::Json,
            framing: Framing::Newline,
            buffer_bytes: s.max_buffered_bytes,
            reconnect_initial: s.backoff_initial,
            reconnect_max: s.backoff_max,
            reconnect_refused: s.backoff_initial,
            connect_timeout: s.connect_timeout,
            drain_timeout: s.shutdown_timeout,
        };
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"POST ");
        Ok(HttpOut {
            target: Target::Tcp(url.address.clone()),
            url,
            redial: Redial::new(&opts),
            retry_backoff: Backoff::new(s.backoff_initial, s.backoff_max),
            watermark: Watermark::new(disk.as_ref().map_or(s.max_buffered_bytes, |d| {
                usize::try_from(d.max_bytes).unwrap_or(usize::MAX)
            })),
            disk: Spill::new("http_out", disk, DISK_RETRY).with_timeout_key("shutdown_timeout"),
            places: Places::default(),
            down: false,
            parked: false,
            opts,
            batch_records: s.batch_records as usize,
            batch_bytes: s.batch_bytes,
            linger: s.linger,
            response_timeout: s.response_timeout,
            index,
            on_error,
            open: Batch::default(),
            batches: VecDeque::new(),
            buffered: 0,
            head,
            headers,
            gzip: s.compression == HttpCompression::Gzip,
            written: 0,
            in_flight: false,
            rbuf: Vec::new(),
            state: State::Idle,
            generation: 0,
            writable: false,
            holding: false,
            retry_timer: None,
            connect_timer: None,
            linger_timer: None,
            hold_timer: None,
            rsp_timer: None,
            lingering: false,
            next_addr: 0,
            limiter: LogLimiter::default(),
            tls,
        })
    }

    fn sock_local(&self) -> Local {
        SOCK_BASE + self.generation
    }

    fn records_held(&self) -> usize {
        self.open.ids.len() + self.batches.iter().map(|b| b.ids.len()).sum::<usize>()
    }

    /// Closes the batch being filled (if it holds anything).
    fn seal(&mut self, cx: &mut Ctx) {
        if let Some(t) = self.linger_timer.take() {
            cx.cancel_timer(t);
        }
        if !self.open.ids.is_empty() {
            let cap = self
                .open
                .body
                .len()
                .min(self.batch_bytes + (self.batch_bytes >> 3));
            let next = Batch {
                body: Vec::with_capacity(cap),
                ids: Vec::with_capacity(self.open.ids.len()),
                places: Vec::new(),
                gz: None,
            };
            self.batches
                .push_back(std::mem::replace(&mut self.open, next));
        }
    }

    fn dial(&mut self, cx: &mut Ctx) {
        if !matches!(self.state, State::Idle) || self.retry_timer.is_some() {
            return;
        }
        match self.url.address.parse::<SocketAddr>() {
            Ok(addr) => match TcpStream::connect(addr) {
                Ok(c) => self.connecting(c, cx),
                Err(e) => self.failed(&e, cx),
            },
            Err(_) => {
                let a = self.url.address.clone();
                match cx.submit(move || a.to_socket_addrs().map(Vec::from_iter)) {
                    Ok(_) => self.state = State::Resolving,
                    Err(e) => self.failed(&e, cx),
                }
            }
        }
    }

    fn connecting(&mut self, mut conn: TcpStream, cx: &mut Ctx) {
        self.generation = (self.generation + 1) % GENERATIONS;
        let local = self.sock_local();
        if let Err(e) = cx.register(&mut conn, local, Interest::READABLE | Interest::WRITABLE) {
            self.failed(&e, cx);
            return;
        }
        self.connect_timer = cx
            .timer_after(self.opts.connect_timeout, CONNECT_TIMEOUT)
            .ok();
        self.state = State::Connecting(conn);
    }

    /// Drops the connection (if any) and its timers; the request in flight is sent again
    /// on the next one.
    fn drop_conn(&mut self, cx: &mut Ctx) {
        for t in [self.connect_timer.take(), self.rsp_timer.take()]
            .into_iter()
            .flatten()
        {
            cx.cancel_timer(t);
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Connecting(mut c) => {
                let _ = cx.deregister(&mut c);
            }
            State::Connected(mut c) => {
                let _ = cx.deregister(&mut c);
            }
            State::Idle | State::Resolving => {}
        }
        self.in_flight = false;
        self.written = 0;
        self.writable = false;
        self.rbuf.clear();
    }

    /// A connection attempt failed or a connection was lost (or gave no answer in time).
    fn failed(&mut self, e: &io::Error, cx: &mut Ctx) {
        // A TLS handshake that fails is a failed attempt, not a lost connection.
        let was_up = matches!(&self.state, State::Connected(c) if !c.is_handshaking());
        let resending = usize::from(self.in_flight);
        self.drop_conn(cx);
        // The server is away: what memory holds goes to disk, where it survives a stop or
        // a kill meanwhile, and new records follow it there.
        self.down = true;
        self.adopt(cx, true);
        let refused = is_refusal(e, &self.target);
        let (held, target) = (self.records_held(), &self.target);
        let timer = self.redial.schedule(
            cx,
            RETRY,
            "http_out",
            target,
            e,
            was_up,
            refused,
            |cx, delay| {
                slog::warn!(cx.logger(), "connection lost; buffering and reconnecting";
                "cog" => "http_out", "peer" => %target, "error" => %e,
                "resending_batches" => resending, "buffered_records" => held,
                "retry_in_ms" => delay.as_millis() as u64);
            },
        );
        self.retry_timer = timer;
    }

    /// Sends the next batch when the connection is free, connecting first when needed,
    /// then writes what the socket takes; updates backpressure and a lingering finish.
    fn pump(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.lingering && !self.parked && self.down && self.disk.buffer().is_some() {
            self.park(out, cx);
        }
        self.disk_step(out, cx);
        if !self.parked && (!self.batches.is_empty() || self.disk.has_unloaded()) {
            match self.state {
                State::Idle => self.dial(cx),
                State::Connected(_) if !self.in_flight && !self.holding => self.begin(cx),
                _ => {}
            }
        }
        if self.in_flight
            && self.writable
            && let Err(e) = self.write()
        {
            self.failed(&e, cx);
        }
        self.settle(out, cx);
    }

    fn begin(&mut self, cx: &mut Ctx) {
        let Some(b) = self.batches.front_mut() else {
            return;
        };
        if self.gzip && b.gz.is_none() {
            b.gz = Some(gzip(&b.body));
        }
        let len = b.gz.as_ref().map_or(b.body.len(), Vec::len);
        self.head.clear();
        let _ = write!(
            self.head,
            "POST {} HTTP/1.1\r\nHost: {}\r\n{}Content-Length: {len}\r\n\r\n",
            self.url.path, self.url.host, self.headers,
        );
        self.written = 0;
        self.in_flight = true;
        self.rsp_timer = cx.timer_after(self.response_timeout, RSP_TIMEOUT).ok();
    }

    fn write(&mut self) -> io::Result<()> {
        let (State::Connected(conn), Some(b)) = (&mut self.state, self.batches.front()) else {
            return Ok(());
        };
        let body: &[u8] = b.gz.as_deref().unwrap_or(&b.body);
        let total = self.head.len() + body.len();
        while self.written < total {
            let iov: [IoSlice<'_>; 2];
            let slices: &[IoSlice<'_>] = if self.written < self.head.len() {
                iov = [IoSlice::new(&self.head[self.written..]), IoSlice::new(body)];
                &iov
            } else {
                iov = [
                    IoSlice::new(&body[self.written - self.head.len()..]),
                    IoSlice::new(&[]),
                ];
                &iov[..1]
            };
            match conn.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // TLS: the ciphertext of the request's end may still wait for the socket.
        match conn.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
            r => r?,
        }
        Ok(())
    }

    /// Reads what the server sent and handles each complete response.
    fn read(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        let State::Connected(conn) = &mut self.state else {
            return;
        };
        let mut eof = false;
        let mut err = None;
        loop {
            let len = self.rbuf.len();
            self.rbuf.resize(len + READ_CHUNK, 0);
            match conn.read(&mut self.rbuf[len..]) {
                Ok(0) => {
                    self.rbuf.truncate(len);
                    eof = true;
                    break;
                }
                Ok(n) => self.rbuf.truncate(len + n),
                Err(e) => {
                    self.rbuf.truncate(len);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => break,
                        io::ErrorKind::Interrupted => {}
                        _ => {
                            err = Some(e);
                            break;
                        }
                    }
                }
            }
            if self.rbuf.len() > MAX_RESPONSE || (self.rbuf.len() > MAX_HEAD && !self.in_flight) {
                break;
            }
        }
        if self.rbuf.len() > MAX_RESPONSE {
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response longer than {MAX_RESPONSE} bytes"),
            );
            self.failed(&e, cx);
            return;
        }
        while self.in_flight && !self.rbuf.is_empty() {
            let parsed = parse_response(&self.rbuf);
            match parsed {
                Response::Partial => break,
                Response::Bad(m) => {
                    self.failed(&io::Error::new(io::ErrorKind::InvalidData, m), cx);
                    return;
                }
                Response::Done {
                    status,
                    consumed,
                    close,
                    head,
                    chunked,
                    retry_after,
                } => {
                    // Only a `_bulk` answer's body matters (its per-item results).
                    let body = (self.index.is_some() && (200..300).contains(&status))
                        .then(|| response_body(&self.rbuf[head..consumed], chunked));
                    self.rbuf.drain(..consumed);
                    if (100..200).contains(&status) {
                        continue;
                    }
                    self.answered(status, body, retry_after, out, cx);
                    if close {
                        self.drop_conn(cx);
                        return;
                    }
                }
            }
        }
        if let Some(e) = err {
            if tls::is_tls_error(&e) {
                out.count_errors(1);
            }
            self.failed(&e, cx);
        } else if eof {
            if self.in_flight {
                let e = io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the server closed the connection before answering",
                );
                self.failed(&e, cx);
            } else {
                // An idle keep-alive connection the server closed: the next batch opens another.
                self.drop_conn(cx);
            }
        } else if !self.in_flight && !self.rbuf.is_empty() {
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                "the server sent data no request asked for",
            );
            self.failed(&e, cx);
        }
    }

    /// The server took the record `id`: acknowledged, or, on disk (acknowledged when
    /// written there), its place `place` confirmed for the buffer.
    fn ack(&mut self, id: EventId, place: Option<&u64>, cx: &mut Ctx) {
        if id != REPLAYED {
            cx.event_done(id);
        } else if let Some(&p) = place {
            self.places.confirm(p);
        }
    }

    /// The server took every record of `b`.
    fn ack_all(&mut self, b: Batch, cx: &mut Ctx) {
        if b.places.is_empty() {
            // Only memory holds them: no record of it is on disk.
            for id in b.ids {
                cx.event_done(id);
            }
            return;
        }
        for (i, id) in b.ids.into_iter().enumerate() {
            self.ack(id, b.places.get(i), cx);
        }
    }

    /// Before sending: writes and syncs what spilled, and, connected, moves records from
    /// the disk buffer into batches, oldest first, while there is room.
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
        if self.buffered >= high / 2 || !matches!(self.state, State::Connected(_)) {
            return;
        }
        let budget = high - self.buffered;
        let log = cx.logger().clone();
        let (batch_records, batch_bytes) = (self.batch_records, self.batch_bytes);
        let mut loaded = Vec::new();
        if let Some(disk) = self.disk.buffer_mut() {
            let open = &mut self.open;
            let buffered = &mut self.buffered;
            let places = &mut self.places;
            disk.load(budget, "http_out", &log, |frame| {
                open.body.extend_from_slice(frame);
                // The records before it in the batch, if any, are memory's only.
                open.places.resize(open.ids.len(), 0);
                open.places.push(places.take());
                open.ids.push(REPLAYED);
                *buffered += frame.len();
                if open.ids.len() >= batch_records || open.body.len() >= batch_bytes {
                    loaded.push(std::mem::take(open));
                }
            });
        }
        self.batches.extend(loaded);
        // What was read back goes out at once: it waited long enough.
        self.seal(cx);
    }

    /// The request in flight was answered `status`.
    fn answered(
        &mut self,
        status: u16,
        body: Option<Vec<u8>>,
        retry_after: Option<Duration>,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) {
        self.in_flight = false;
        self.written = 0;
        if let Some(t) = self.rsp_timer.take() {
            cx.cancel_timer(t);
        }
        if status == 429 || (500..600).contains(&status) {
            let records = self.batches.front().map_or(0, |b| b.ids.len());
            self.hold(status, records, retry_after, cx);
            return;
        }
        let Some(b) = self.batches.pop_front() else {
            return;
        };
        self.buffered -= b.body.len();
        if (200..300).contains(&status) {
            match body.map(|body| bulk_items(&body)) {
                Some(Some(BulkItems::Each(items))) => self.bulk_result(b, &items, out, cx),
                Some(None) => {
                    slog::warn!(cx.logger(), "unreadable _bulk answer to a 2xx; its records count as written";
                        "cog" => "http_out", "peer" => %self.target, "records" => b.ids.len());
                    self.retry_backoff.reset();
                    self.ack_all(b, cx);
                }
                _ => {
                    self.retry_backoff.reset();
                    self.ack_all(b, cx);
                }
            }
            return;
        }
        let why = format!("the server answered {status} to the batch (not retried)");
        let lines = if self.index.is_some() { 2 } else { 1 };
        for (i, ((start, end), id)) in record_spans(&b.body, lines)
            .into_iter()
            .zip(b.ids)
            .enumerate()
        {
            let place = b.places.get(i);
            self.reject(doc_line(&b.body[start..end]), id, place, &why, out, cx);
        }
    }

    /// The server asks to try again later (`status`): the front batch is held back for the
    /// next backoff delay, or as long as the server's `Retry-After` says (at least
    /// `backoff_initial`, at most [`RETRY_AFTER_MAX`] or `backoff_max` if longer).
    fn hold(&mut self, status: u16, records: usize, retry_after: Option<Duration>, cx: &mut Ctx) {
        let backoff = self.retry_backoff.next();
        let delay = match retry_after {
            Some(d) => d.clamp(
                self.opts.reconnect_initial,
                RETRY_AFTER_MAX.max(self.opts.reconnect_max),
            ),
            None => backoff,
        };
        if self.limiter.allow("retries", "http_out", cx) {
            slog::warn!(cx.logger(), "the server asks to retry; sending the records again";
                "cog" => "http_out", "peer" => %self.target, "status" => status,
                "records" => records, "retry_in_ms" => delay.as_millis() as u64);
        }
        self.holding = true;
        match cx.timer_after(delay, HOLD) {
            Ok(t) => self.hold_timer = Some(t),
            Err(e) => {
                slog::error!(cx.logger(), "cannot set the retry timer"; "cog" => "http_out", "error" => %e);
                self.holding = false;
            }
        }
    }

    /// Hands the record rendered as `doc` (its JSON) to `on_error`.
    fn reject(
        &mut self,
        doc: &[u8],
        id: EventId,
        place: Option<&u64>,
        why: &dyn std::fmt::Display,
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) {
        let mut r = Record::parse_json(doc).unwrap_or_else(|_| Record::new());
        r.id = id;
        // A record on disk is done with here too.
        if id == REPLAYED
            && let Some(&p) = place
        {
            self.places.confirm(p);
        }
        self.on_error.fail(r, "http_out", why, out, cx);
    }

    /// A `_bulk` request was answered 2xx with per-item results: each record is
    /// acknowledged, sent again (429, 5xx, or no result) in a batch of its own ahead of
    /// newer ones, or handed to `on_error`.
    fn bulk_result(
        &mut self,
        b: Batch,
        items: &[(u16, String)],
        out: &mut Out<Record>,
        cx: &mut Ctx,
    ) {
        let mut retry = Batch::default();
        let mut retry_status = 0;
        for (i, ((start, end), id)) in record_spans(&b.body, 2).into_iter().zip(b.ids).enumerate() {
            let (status, why) = items.get(i).map_or((503, ""), |(s, w)| (*s, w.as_str()));
            let place = b.places.get(i);
            if (200..300).contains(&status) {
                self.ack(id, place, cx);
            } else if status == 429 || (500..600).contains(&status) {
                retry.body.extend_from_slice(&b.body[start..end]);
                retry.ids.push(id);
                if !b.places.is_empty() {
                    // A record on disk keeps its place: those after it, confirmed first,
                    // are not counted for the disk buffer before it.
                    retry.places.push(place.copied().unwrap_or(0));
                }
                retry_status = status;
            } else {
                let why = format!("_bulk item status {status}: {why}");
                self.reject(doc_line(&b.body[start..end]), id, place, &why, out, cx);
            }
        }
        if retry.ids.is_empty() {
            self.retry_backoff.reset();
            return;
        }
        let records = retry.ids.len();
        self.buffered += retry.body.len();
        self.batches.push_front(retry);
        self.hold(retry_status, records, None, cx);
    }

    fn settle(&mut self, _out: &mut Out<Record>, cx: &mut Ctx) {
        let held = match self.disk.buffer_mut() {
            None => self.buffered,
            Some(d) => {
                d.confirm(self.places.take_ready(), |id| cx.event_done(id));
                d.pressure()
            }
        };
        let _ = self.watermark.settle(held, cx);
        let parked_done = self.parked && !self.disk.has_pending();
        if self.lingering
            && (parked_done
                || (self.batches.is_empty() && self.open.ids.is_empty() && self.disk.is_drained()))
        {
            self.lingering = false;
            self.close(cx);
            cx.finished();
        }
    }

    fn close(&mut self, cx: &mut Ctx) {
        self.drop_conn(cx);
        for t in [
            self.retry_timer.take(),
            self.linger_timer.take(),
            self.hold_timer.take(),
        ]
        .into_iter()
        .flatten()
        {
            cx.cancel_timer(t);
        }
    }

    /// The connection carries requests now (over TLS: the handshake is done).
    fn established(&mut self, cx: &mut Ctx) {
        slog::info!(cx.logger(), "connected"; "cog" => "http_out", "peer" => %self.target,
            "tls" => self.tls.is_some(),
            "failed_attempts" => self.redial.failures(), "buffered_records" => self.records_held());
        self.redial.connected();
        self.down = false;
    }

    /// Puts the records only memory holds (in the batches) onto the disk, ahead of newer
    /// records (see `Spill::adopt_frames`); `sync`: starts their sync on a worker thread.
    fn adopt(&mut self, cx: &mut Ctx, sync: bool) {
        if self.disk.buffer().is_none() {
            return;
        }
        let lines = if self.index.is_some() { 2 } else { 1 };
        let n = self.memory_only();
        if n == 0 {
            return;
        }
        let frames = self
            .batches
            .iter()
            .chain([&self.open])
            .flat_map(|b| record_frames(b, lines))
            .filter(|&(id, _)| id != REPLAYED);
        if self.disk.adopt_frames(frames, n, cx) {
            // Their places follow those of the records on disk, in the order written.
            for b in self.batches.iter_mut().chain([&mut self.open]) {
                b.places.resize(b.ids.len(), 0);
                for (id, p) in b.ids.iter_mut().zip(b.places.iter_mut()) {
                    if *id != REPLAYED {
                        *id = REPLAYED;
                        *p = self.places.take();
                    }
                }
            }
            if sync {
                self.disk.start_sync(cx);
            }
        }
    }

    /// Records only memory holds (not on disk): their adoption failed, or waits.
    fn memory_only(&self) -> usize {
        self.batches
            .iter()
            .chain([&self.open])
            .map(|b| b.ids.iter().filter(|&&id| id != REPLAYED).count())
            .sum()
    }

    /// At a stop that does not wait for the server: what memory holds goes to disk, synced
    /// on this thread unless a sync runs.
    fn stopping(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        self.disk.confirm(self.places.take_ready(), cx);
        self.adopt(cx, false);
        let dropped = self.disk.finish(cx);
        if dropped > 0 {
            out.count_dropped(dropped);
        }
    }

    /// Stops without the server: its records stay on disk for the next run; the drain
    /// finishes once they are synced. Records the disk could not take (a failed write or
    /// adoption) are tried again every second, until `shutdown_timeout`.
    fn park(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        self.repark(out, cx);
        self.close(cx);
        self.parked = true;
        self.disk.log_parked("server", &self.target, cx);
    }

    /// Parked, and at each retry after it: puts what memory holds onto the disk and notes
    /// what it still holds alone.
    fn repark(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        self.stopping(out, cx);
        let n = self.memory_only() as u64;
        self.disk.held_in_memory(n, cx);
        out.count_dropped(self.disk.give_up(cx));
    }

    fn sock_ready(&mut self, ev: &mio::event::Event, out: &mut Out<Record>, cx: &mut Ctx) {
        match &self.state {
            State::Connecting(c) => {
                let done = match c.take_error() {
                    Ok(Some(e)) | Err(e) => Err(e),
                    Ok(None) => match c.peer_addr() {
                        Ok(p) if c.local_addr().ok() == Some(p) => Err(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            "connected to itself (nothing listens on the server's port)",
                        )),
                        Ok(_) => Ok(true),
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                        Err(e) => Err(e),
                    },
                };
                match done {
                    Ok(false) => {}
                    Ok(true) => {
                        if let Some(t) = self.connect_timer.take() {
                            cx.cancel_timer(t);
                        }
                        if let State::Connecting(c) =
                            std::mem::replace(&mut self.state, State::Idle)
                        {
                            match Stream::connected(c, self.tls.as_ref()) {
                                Ok(c) => {
                                    let handshaking = c.is_handshaking();
                                    self.state = State::Connected(c);
                                    self.writable = true;
                                    if !handshaking {
                                        self.established(cx);
                                    }
                                }
                                Err(e) => {
                                    self.failed(&e, cx);
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        self.failed(&e, cx);
                        return;
                    }
                }
            }
            State::Connected(c) => {
                let handshaking = c.is_handshaking();
                if ev.is_writable() {
                    self.writable = true;
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.read(out, cx);
                }
                if handshaking && matches!(&self.state, State::Connected(c) if !c.is_handshaking())
                {
                    // The request waited for the handshake; the socket is writable.
                    self.writable = true;
                    self.established(cx);
                }
            }
            State::Idle | State::Resolving => {}
        }
        self.pump(out, cx);
    }
}

impl Cog<Record> for HttpOut {
    fn name(&self) -> &str {
        "http_out"
    }

    fn inspect(&self, into: &mut crate::engine::control::Inspection) {
        into.buffer("bytes", self.buffered, Some(self.opts.buffer_bytes));
        self.disk.inspect(into);
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        self.disk.start(cx)?;
        if self.disk.has_unloaded() {
            // Records of an earlier run wait on disk: connect for them.
            self.dial(cx);
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Vec<Record>, out: &mut Out<Record>, cx: &mut Ctx) {
        let high = self.opts.buffer_bytes;
        // Tested once per batch: without a disk buffer the loop is as before.
        let spill = self.disk.buffer().is_some();
        let down = spill && self.down;
        let mut adopted = false;
        for r in batch.iter() {
            // Beyond max_buffered_bytes, while the server is away, and for as long as
            // spilled records wait, records go to the disk: what follows a spilled record
            // never overtakes it.
            if spill && !adopted && (down || self.disk.has_unloaded() || self.buffered >= high) {
                // What memory holds goes first: order holds, and a stop or a kill while
                // the server is away or slow loses nothing.
                self.adopt(cx, true);
                adopted = true;
            }
            if spill
                && let Some(d) = self.disk.buffer_mut()
                && (down || d.has_unloaded() || self.buffered >= high)
            {
                let index = &self.index;
                d.push_with(r.id, |b| render(index, r, b));
                if d.should_write() && !d.is_failing() {
                    let log = cx.logger().clone();
                    if let Ok(dropped) = d.write_pending("http_out", &log)
                        && dropped > 0
                    {
                        out.count_dropped(dropped);
                    }
                }
                continue;
            }
            let before = self.open.body.len();
            render(&self.index, r, &mut self.open.body);
            self.buffered += self.open.body.len() - before;
            self.open.ids.push(r.id);
            if self.open.ids.len() >= self.batch_records || self.open.body.len() >= self.batch_bytes
            {
                self.seal(cx);
            }
        }
        crate::record::pool::recycle(batch.drain(..));
        if !self.open.ids.is_empty() && self.linger_timer.is_none() {
            match cx.timer_after(self.linger, LINGER) {
                Ok(t) => self.linger_timer = Some(t),
                Err(e) => {
                    slog::error!(cx.logger(), "cannot set the linger timer; sending at once"; "cog" => "http_out", "error" => %e);
                    self.seal(cx);
                }
            }
        }
        self.pump(out, cx);
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        match (local, why) {
            (DISK_RETRY, Wake::Timer(t)) if self.disk.is_retry(t) => {}
            (RETRY, Wake::Timer(t)) if self.retry_timer == Some(t) => {
                self.retry_timer = None;
                self.dial(cx);
            }
            (CONNECT_TIMEOUT, Wake::Timer(t)) if self.connect_timer == Some(t) => {
                self.connect_timer = None;
                if matches!(self.state, State::Connecting(_)) {
                    let e = io::Error::new(io::ErrorKind::TimedOut, "connect_timeout expired");
                    self.failed(&e, cx);
                }
            }
            (LINGER, Wake::Timer(t)) if self.linger_timer == Some(t) => {
                self.linger_timer = None;
                self.seal(cx);
            }
            (HOLD, Wake::Timer(t)) if self.hold_timer == Some(t) => {
                self.hold_timer = None;
                self.holding = false;
            }
            (RSP_TIMEOUT, Wake::Timer(t)) if self.rsp_timer == Some(t) => {
                self.rsp_timer = None;
                let e = io::Error::new(io::ErrorKind::TimedOut, "response_timeout expired");
                self.failed(&e, cx);
            }
            (DRAIN_DEADLINE, Wake::Timer(_)) if self.lingering => {
                if self.disk.buffer().is_none() {
                    slog::error!(cx.logger(), "shutdown_timeout expired: records not answered by the server";
                        "cog" => "http_out", "peer" => %self.target,
                        "unsent_records" => self.records_held(), "unsent_bytes" => self.buffered);
                } else if !self.parked {
                    self.stopping(out, cx);
                    out.count_dropped(self.disk.give_up(cx));
                    slog::warn!(cx.logger(), "shutdown_timeout expired: the records the server did not answer stay in the disk buffer for the next run";
                        "cog" => "http_out", "peer" => %self.target,
                        "unanswered_records" => self.records_held(),
                        "disk_buffer_records" => self.disk.records());
                }
                self.lingering = false;
                self.close(cx);
                cx.finished();
                return;
            }
            (l, Wake::Ready(ev)) if l == self.sock_local() => {
                self.sock_ready(ev, out, cx);
                return;
            }
            _ => return,
        }
        self.pump(out, cx);
    }

    fn job_done(&mut self, job: JobId, result: JobResult, out: &mut Out<Record>, cx: &mut Ctx) {
        let Some(result) = self.disk.job_done(job, result, cx) else {
            self.pump(out, cx);
            return;
        };
        if !matches!(self.state, State::Resolving) {
            return;
        }
        self.state = State::Idle;
        match lookup_result(result) {
            Ok(addrs) if !addrs.is_empty() => {
                let addr = addrs[self.next_addr % addrs.len()];
                self.next_addr = self.next_addr.wrapping_add(1);
                match TcpStream::connect(addr) {
                    Ok(c) => self.connecting(c, cx),
                    Err(e) => self.failed(&e, cx),
                }
            }
            Ok(_) => self.failed(&io::Error::other("the name has no address"), cx),
            Err(e) => self.failed(&e, cx),
        }
        self.pump(out, cx);
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        if self.disk.buffer().is_some() && self.down {
            self.park(out, cx);
            if !self.disk.has_pending() {
                return;
            }
        } else {
            // What memory holds goes to disk too: a kill while the server answers, or the
            // end of shutdown_timeout, loses nothing.
            self.stopping(out, cx);
        }
        self.seal(cx);
        if self.batches.is_empty() && self.disk.is_drained() {
            self.close(cx);
            return;
        }
        cx.linger();
        self.lingering = true;
        self.disk.keep_retrying(cx);
        if let Err(e) = cx.timer_after(self.opts.drain_timeout, DRAIN_DEADLINE) {
            slog::error!(cx.logger(), "cannot set the shutdown deadline"; "cog" => "http_out", "error" => %e);
        }
        self.pump(out, cx);
    }

    fn done(&mut self, cx: &mut Ctx) {
        self.disk.confirm(self.places.take_ready(), cx);
        self.close(cx);
        if let Some(t) = self.disk.take_retry() {
            cx.cancel_timer(t);
        }
        // Records only memory holds (their adoption by the disk failed) are lost unless
        // their supply reads them again: the disk buffer's report counts them.
        let lines = if self.index.is_some() { 2 } else { 1 };
        let memory = self
            .batches
            .iter()
            .chain([&self.open])
            .flat_map(|b| record_frames(b, lines))
            .filter(|&(id, _)| id != REPLAYED)
            .fold((0, 0), |(n, bytes), (_, f)| (n + 1, bytes + f.len() as u64));
        self.disk.done_with(memory, cx);
    }
}

/// The ids and frames of the records of `b`, each `lines` lines of its body (its action
/// line with `es_bulk`, then its JSON line: neither holds a raw newline).
fn record_frames(b: &Batch, lines: usize) -> impl Iterator<Item = (EventId, &[u8])> {
    let mut at = 0;
    b.ids.iter().map(move |&id| {
        let start = at;
        for _ in 0..lines {
            at = b.body[at..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.body.len(), |i| at + i + 1);
        }
        (id, &b.body[start..at])
    })
}

/// Renders the body lines of `r`: with an index (`es_bulk`), its action line, then its
/// JSON line.
#[inline(always)]
fn render(index: &Option<Template>, r: &Record, body: &mut Vec<u8>) {
    if let Some(t) = index {
        body.extend_from_slice(b"{\"index\":{\"_index\":\"");
        t.write(r, body);
        body.extend_from_slice(b"\"}}\n");
    }
    r.write_json(body);
    body.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_each_record_frame_for_the_disk() {
        let b = Batch {
            body: b"{\"index\":{}}\n{\"a\":1}\n{\"index\":{}}\n{\"a\":2}\n".to_vec(),
            ids: vec![REPLAYED, 7],
            places: vec![0],
            gz: None,
        };
        let got: Vec<(EventId, &[u8])> = record_frames(&b, 2).collect();
        assert_eq!(
            got,
            vec![
                (REPLAYED, &b"{\"index\":{}}\n{\"a\":1}\n"[..]),
                (7, &b"{\"index\":{}}\n{\"a\":2}\n"[..])
            ]
        );
        let one: Vec<&[u8]> = record_frames(&b, 1).map(|f| f.1).collect();
        assert_eq!(one, vec![&b"{\"index\":{}}\n"[..], &b"{\"a\":1}\n"[..]]);
    }

    #[test]
    fn only_places_confirmed_in_a_row_reach_the_disk_buffer() {
        let mut p = Places::default();
        let at: Vec<u64> = (0..5).map(|_| p.take()).collect();
        // The second is sent again (a 429 item) while the ones after it are taken.
        p.confirm(at[0]);
        p.confirm(at[2]);
        p.confirm(at[3]);
        assert_eq!(p.take_ready(), 1);
        p.confirm(at[1]);
        assert_eq!(p.take_ready(), 3);
        // A place confirmed twice counts once.
        p.confirm(at[2]);
        assert_eq!(p.take_ready(), 0);
        p.confirm(at[4]);
        assert_eq!(p.take_ready(), 1);
        assert!(p.early.is_empty());
        assert_eq!(p.take(), 5);
    }

    #[test]
    fn urls_are_read() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/ingest?x=1").unwrap();
        assert_eq!(u.address, "127.0.0.1:8080");
        assert_eq!(u.host, "127.0.0.1:8080");
        assert_eq!(u.path, "/ingest?x=1");
        let u = HttpUrl::parse("http://logs.example").unwrap();
        assert_eq!(
            (u.address.as_str(), u.path.as_str()),
            ("logs.example:80", "/")
        );
        let u = HttpUrl::parse("http://[::1]/x").unwrap();
        assert_eq!(u.address, "[::1]:80");
        let u = HttpUrl::parse("http://[::1]:9/x").unwrap();
        assert_eq!(u.address, "[::1]:9");
        let u = HttpUrl::parse("https://logs.example/x").unwrap();
        assert_eq!((u.address.as_str(), u.https), ("logs.example:443", true));
        assert!(!HttpUrl::parse("http://logs.example/").unwrap().https);
        assert!(HttpUrl::parse("ftp://logs.example/").is_err());
        assert!(HttpUrl::parse("http:///x").is_err());
        assert!(HttpUrl::parse("http://h:99999/").is_err());
        assert!(HttpUrl::parse("http://h/a b").is_err());
    }

    /// Status, consumed bytes and close of a complete response.
    fn done(buf: &[u8]) -> Option<(u16, usize, bool)> {
        match parse_response(buf) {
            Response::Done {
                status,
                consumed,
                close,
                ..
            } => Some((status, consumed, close)),
            _ => None,
        }
    }

    #[test]
    fn responses_are_framed() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 503";
        assert_eq!(done(ok), Some((200, 40, false)));
        assert_eq!(parse_response(&ok[..39]), Response::Partial);
        let chunked =
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(done(chunked), Some((400, chunked.len(), false)));
        let Response::Done { head, .. } = parse_response(chunked) else {
            panic!("complete");
        };
        assert_eq!(response_body(&chunked[head..], true), b"abcde");
        assert_eq!(
            parse_response(&chunked[..chunked.len() - 1]),
            Response::Partial
        );
        let closing = b"HTTP/1.0 204 No Content\r\n\r\n";
        assert_eq!(done(closing), Some((204, 27, true)));
        assert!(matches!(
            parse_response(b"SSH-2.0-x\r\n\r\n"),
            Response::Bad(_)
        ));
        let open = b"HTTP/1.1 500 x\r\nConnection: close\r\n\r\npartial body";
        assert_eq!(done(open), Some((500, open.len(), true)));
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let r = parse_response(b"HTTP/1.1 503 x\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n");
        let Response::Done { retry_after, .. } = r else {
            panic!("{r:?}");
        };
        assert_eq!(retry_after, Some(Duration::from_secs(7)));
        let r = parse_response(
            b"HTTP/1.1 503 x\r\nRetry-After: Fri, 31 Dec 1999 23:59:59 GMT\r\nContent-Length: 0\r\n\r\n",
        );
        let Response::Done { retry_after, .. } = r else {
            panic!("{r:?}");
        };
        assert_eq!(retry_after, Some(Duration::ZERO), "a date already past");
    }

    #[test]
    fn retry_after_is_read_as_an_http_date() {
        // 2000-01-01T00:00:00Z.
        let now = UNIX_EPOCH + Duration::from_secs(946_684_800);
        let later = "Sat, 01 Jan 2000 00:01:30 GMT";
        assert_eq!(retry_after_delay(later, now), Some(Duration::from_secs(90)));
        assert_eq!(
            retry_after_delay("Fri, 31 Dec 1999 23:59:59 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_delay("soon", now), None);
        assert_eq!(
            retry_after_delay("Sat, 01 Jan 2000 00:01:30 CET", now),
            None
        );
        assert_eq!(retry_after_delay("-5", now), None);
    }

    fn headers_of(toml_text: &str) -> Result<String, SettingError> {
        let mut s = HttpOutSettings {
            url: "http://127.0.0.1:9/".into(),
            ..Default::default()
        };
        let t: toml::Table = toml::from_str(toml_text).unwrap();
        if let Some(toml::Value::Table(h)) = t.get("headers") {
            s.headers = h.clone();
        }
        if let Some(toml::Value::Table(a)) = t.get("auth") {
            s.auth = a.clone();
        }
        if t.get("gzip").is_some() {
            s.compression = HttpCompression::Gzip;
        }
        request_headers(&s)
    }

    #[test]
    fn headers_and_credentials_are_checked() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(
            headers_of("").unwrap(),
            "User-Agent: deadbeat\r\nContent-Type: application/x-ndjson\r\n"
        );
        let h = headers_of(
            "gzip = true\nheaders = { \"Content-Type\" = \"application/json\", X-A = \"1\" }\nauth = { bearer = \"t0k\" }",
        )
        .unwrap();
        assert_eq!(
            h,
            "User-Agent: deadbeat\r\nContent-Encoding: gzip\r\nAuthorization: Bearer t0k\r\n\
             Content-Type: application/json\r\nX-A: 1\r\n"
        );
        assert!(
            headers_of("auth = { user = \"u\", password = \"p\" }")
                .unwrap()
                .contains("Authorization: Basic dTpw\r\n")
        );
        for bad in [
            "headers = { Host = \"x\" }",
            "headers = { \"Bad Name\" = \"x\" }",
            "headers = { X-A = \"a\\r\\nX-B: b\" }",
            "headers = { X-A = 1 }",
            "headers = { Authorization = \"Bearer x\" }",
            "auth = { user = \"u\" }",
            "auth = { bearer = \"t\", user = \"u\", password = \"p\" }",
            "auth = { token = \"t\" }",
            "auth = { user = \"a:b\", password = \"p\" }",
        ] {
            assert!(headers_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gzip_bodies_decode_to_the_batch() {
        use std::io::Read as _;
        let body = b"{\"a\":1}\n".repeat(1000);
        let z = gzip(&body);
        assert!(z.len() < body.len() / 10);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn bulk_answers_are_read_per_item() {
        assert_eq!(
            bulk_items(br#"{"took":3,"errors":false,"items":[]}"#),
            Some(BulkItems::AllOk)
        );
        let mixed = br#"{"took":3,"errors":true,"items":[
            {"index":{"_index":"a","status":201}},
            {"index":{"_index":"a","status":400,"error":{"type":"mapper_parsing_exception","reason":"bad field"}}},
            {"create":{"_index":"a","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}}]}"#;
        assert_eq!(
            bulk_items(mixed),
            Some(BulkItems::Each(vec![
                (201, String::new()),
                (400, "mapper_parsing_exception: bad field".into()),
                (429, "es_rejected_execution_exception: queue full".into()),
            ]))
        );
        assert_eq!(bulk_items(b"<html>"), None);
        assert_eq!(bulk_items(br#"{"errors":true}"#), None);
    }

    #[test]
    fn batch_bodies_split_per_record() {
        let body = b"{\"index\":{}}\n{\"a\":1}\n{\"index\":{}}\n{\"a\":2}\n";
        let spans = record_spans(body, 2);
        assert_eq!(spans, vec![(0, 21), (21, 42)]);
        assert_eq!(doc_line(&body[21..42]), b"{\"a\":2}");
        assert_eq!(record_spans(b"x\ny\n", 1), vec![(0, 2), (2, 4)]);
        assert_eq!(doc_line(b"x\n"), b"x");
    }
}
