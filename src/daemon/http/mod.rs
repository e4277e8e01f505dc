//! The control server of `[http]`: `GET /status` (JSON), `GET /metrics` (Prometheus text),
//! `POST` pause/resume of trains and supplies and rewind of supplies, served from the
//! escapement's own loop as its [`Service`], over non-blocking sockets.
//!
//! ```toml
//! [http]
//! listen = "127.0.0.1:8686"     # or "unix:PATH"; off unless configured
//! token_file = "var/http.token" # required for a listen address that is not loopback
//! max_connections = 64          # connections beyond are closed at once
//! idle_timeout = "10s"          # a connection idle, or a request unfinished, this long is closed
//! ```
//!
//! A slow or stalled client cannot stall the loop: sockets never block, a response is
//! written from the connection's own buffer as the socket takes it, a connection reads no
//! further request while its response is unwritten, requests are bounded (16 KiB of
//! head, 4 KiB of body), connections are bounded, and the tick once a second closes those
//! idle or unfinished for `idle_timeout`.

mod conn;
mod metrics;
mod page;
mod rewind;
mod status;

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use mio::Interest;
use mio::event::Event;

use crate::engine::cog::{BoxError, Local};
use crate::engine::control::RewindError;
use crate::engine::escapement::{CogState, Service, ServiceCx};

use self::conn::{Conn, Listener, Parsed};

/// Where the control server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address (`"127.0.0.1:8686"`, `"[::1]:8686"`).
    Tcp(SocketAddr),
    /// A Unix stream socket (`"unix:PATH"`).
    Unix(PathBuf),
}

impl Listen {
    /// Whether only this machine can reach it: a loopback address or a Unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            Listen::Tcp(a) => a.ip().is_loopback(),
            Listen::Unix(_) => true,
        }
    }
}

/// `[http]`: the control server's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// `listen`.
    pub listen: Listen,
    /// `token_file`, resolved: where the bearer token that `POST` requests need is kept.
    pub token_file: Option<PathBuf>,
    /// `max_connections` (64 unless configured).
    pub max_connections: usize,
    /// `idle_timeout` (10 s unless configured).
    pub idle_timeout: Duration,
}

impl HttpSettings {
    /// Settings with the defaults for `listen`.
    pub fn new(listen: Listen) -> Self {
        HttpSettings {
            listen,
            token_file: None,
            max_connections: 64,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// Reads a token file: its first line, trimmed; an error when it is empty or unreadable.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(token)
}

/// The longest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// The longest request body: control requests carry little.
const MAX_BODY: usize = 4 * 1024;
/// How often counters are sampled for rates, and idle connections closed.
const TICK: Duration = Duration::from_secs(1);
/// Rates are taken over this span of samples.
const RATE_SPAN: Duration = Duration::from_secs(10);

const LISTENER: Local = 0;

/// One sample of every cog's counters (trains in order, cogs in order): `(in, out)`.
struct Sample {
    at: Instant,
    counts: Vec<(u64, u64)>,
}

/// The control server: the escapement's [`Service`] in the daemon.
pub struct Server {
    settings: HttpSettings,
    token: Option<String>,
    config_path: String,
    started: Instant,
    started_wall: SystemTime,
    listener: Option<Listener>,
    conns: Vec<Option<Conn>>,
    open: usize,
    samples: VecDeque<Sample>,
    /// Counters of the server itself: requests answered, connections refused for the bound.
    requests: u64,
    refused: u64,
    /// The JSON of `GET /graph`, when the daemon gave its graph.
    graph: Option<String>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.settings.listen)
            .field("open", &self.open)
            .finish()
    }
}

impl Server {
    /// A server for `settings`, naming `config_path` in its status; reads the token file.
    pub fn new(settings: HttpSettings, config_path: String) -> Result<Self, String> {
        let token = match &settings.token_file {
            Some(p) => Some(read_token(p)?),
            None => None,
        };
        Ok(Server {
            settings,
            token,
            config_path,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            listener: None,
            conns: Vec::new(),
            open: 0,
            samples: VecDeque::new(),
            requests: 0,
            refused: 0,
            graph: None,
        })
    }

    fn accept_all(&mut self, cx: &mut ServiceCx<'_>) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            let (stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: the tick tries again.
                    slog::warn!(cx.logger(), "http: accepting a connection failed"; "error" => %e);
                    return;
                }
            };
            if self.open >= self.settings.max_connections {
                // Closed at once (dropped): the bound holds and the client sees an end.
                self.refused += 1;
                slog::debug!(cx.logger(), "http: connection refused, too many open";
                    "peer" => &peer, "max_connections" => self.settings.max_connections);
                continue;
            }
            let idx = match self.conns.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            let mut conn = Conn::new(stream, peer, cx.now());
            let local = idx as Local + 1;
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = conn.stream.register(cx, local, interest) {
                slog::warn!(cx.logger(), "http: cannot register a connection"; "error" => %e);
                continue;
            }
            self.conns[idx] = Some(conn);
            self.open += 1;
            self.pump(idx, cx);
        }
    }

    fn close(&mut self, idx: usize, cx: &mut ServiceCx<'_>) {
        if let Some(mut c) = self.conns.get_mut(idx).and_then(Option::take) {
            let _ = c.stream.deregister(cx);
            self.open -= 1;
        }
    }

    /// Moves a connection on as far as it goes without blocking: writes what is pending,
    /// answers complete requests, reads more.
    fn pump(&mut self, idx: usize, cx: &mut ServiceCx<'_>) {
        loop {
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            match conn.flush(cx.now()) {
                Ok(true) => {}
                Ok(false) => return, // the socket is full: wait for it to drain
                Err(_) => return self.close(idx, cx),
            }
            if conn.close_after {
                return self.close(idx, cx);
            }
            match conn::parse(&conn.inbuf, MAX_HEAD, MAX_BODY) {
                Parsed::Request(req) => {
                    let consumed = req.len;
                    conn.close_after = req.close;
                    let peer = conn.peer.clone();
                    let mut out = std::mem::take(&mut conn.outbuf);
                    self.answer(&req, &peer, &mut out, cx);
                    self.requests += 1;
                    let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                        return;
                    };
                    conn.outbuf = out;
                    conn.inbuf.drain(..consumed);
                    conn.request_since = (!conn.inbuf.is_empty()).then_some(cx.now());
                    continue;
                }
                Parsed::Bad(status, why) => {
                    conn.close_after = true;
                    conn.inbuf.clear();
                    conn::respond_error(&mut conn.outbuf, status, why, true);
                    self.requests += 1;
                    continue;
                }
                Parsed::Partial => {}
            }
            match conn.read_some(cx.now()) {
                Ok(true) => continue,
                Ok(false) => return, // nothing more to read now
                Err(_) => return self.close(idx, cx),
            }
        }
    }

    /// Routes one request and writes the response into `out`.
    fn answer(
        &mut self,
        req: &conn::Request,
        peer: &str,
        out: &mut Vec<u8>,
        cx: &mut ServiceCx<'_>,
    ) {
        let path = req.path.split('?').next().unwrap_or("");
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        let close = req.close;
        match parts.as_slice() {
            ["status"] | ["metrics"] if req.method != "GET" => {
                conn::respond_error_allow(out, "GET", close)
            }
            ["status"] => {
                let body = status::render(self, cx);
                conn::respond(out, 200, "application/json", body.as_bytes(), close, "")
            }
            ["metrics"] => {
                let body = metrics::render(self, cx);
                conn::respond(
                    out,
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    body.as_bytes(),
                    close,
                    "",
                )
            }
            ["trains", _, "pause" | "resume"]
            | ["trains", _, "cogs", _, "pause" | "resume" | "rewind"]
                if req.method != "POST" =>
            {
                conn::respond_error_allow(out, "POST", close)
            }
            ["trains", train, action @ ("pause" | "resume")] => {
                if self.authorized(req, peer, out, cx) {
                    let (status, body) = self.hold(cx, train, None, *action == "pause");
                    conn::respond(out, status, "application/json", body.as_bytes(), close, "");
                }
            }
            ["trains", train, "cogs", cog, action @ ("pause" | "resume")] => {
                if self.authorized(req, peer, out, cx) {
                    let (status, body) = self.hold(cx, train, Some(cog), *action == "pause");
                    conn::respond(out, status, "application/json", body.as_bytes(), close, "");
                }
            }
            ["trains", train, "cogs", cog, "rewind"] => {
                if self.authorized(req, peer, out, cx) {
                    let (status, body) = self.rewind(cx, train, cog, &req.body, peer);
                    conn::respond(out, status, "application/json", body.as_bytes(), close, "");
                }
            }
            p if page::serves(p) => page::answer(self, p[0], &req.method, close, out, cx),
            _ => conn::respond_error(out, 404, "no such resource", close),
        }
    }

    /// Whether a control request carries the token (always, without a token file);
    /// otherwise answers 401 and logs the refusal.
    fn authorized(
        &self,
        req: &conn::Request,
        peer: &str,
        out: &mut Vec<u8>,
        cx: &ServiceCx<'_>,
    ) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = req
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return true;
        }
        slog::warn!(cx.logger(), "http: control request refused: missing or wrong token";
            "peer" => peer, "method" => &req.method,
            "path" => req.path.chars().take(200).collect::<String>());
        conn::respond(
            out,
            401,
            "text/plain; charset=utf-8",
            b"a control request needs Authorization: Bearer TOKEN\n",
            req.close,
            "WWW-Authenticate: Bearer\r\n",
        );
        false
    }

    /// Holds or releases the supplies of a train, or one supply (by name, or by type when
    /// that is unique in the train). Returns the status and a JSON body.
    fn hold(
        &self,
        cx: &mut ServiceCx<'_>,
        train: &str,
        cog: Option<&str>,
        pause: bool,
    ) -> (u16, String) {
        let metrics = cx.metrics();
        let train = percent_decode(train);
        let Some(t) = metrics.iter().position(|m| m.name == train) else {
            return (404, error_json("no such train"));
        };
        let cogs: Vec<usize> = match cog.map(percent_decode) {
            None => {
                let all: Vec<usize> = (0..metrics[t].cogs.len())
                    .filter(|&c| cx.is_supply(t, c))
                    .collect();
                if all.is_empty() {
                    return (
                        409,
                        error_json(
                            "the train has no supply of its own: pause the trains that feed it",
                        ),
                    );
                }
                all
            }
            Some(name) => match find_cog(&metrics[t], &name) {
                Err(e) => return e,
                Ok(c) if !cx.is_supply(t, c) => {
                    return (409, error_json("only a supply can be paused"));
                }
                Ok(c) => vec![c],
            },
        };
        if cogs
            .iter()
            .any(|&c| cx.cog_state(t, c) == Some(CogState::Finished))
            || cx.is_shutting_down()
        {
            return (409, error_json("the train is stopping"));
        }
        for &c in &cogs {
            if let Err(e) = cx.hold(t, c, pause) {
                return (409, error_json(&e));
            }
        }
        let verb = if pause { "paused" } else { "resumed" };
        slog::info!(cx.logger(), "http: supplies held"; "train" => &metrics[t].name,
            "cogs" => cogs.iter().map(|&c| metrics[t].cogs[c].id.as_str()).collect::<Vec<_>>().join(","),
            "action" => verb);
        let mut body = String::from("{\"train\":");
        status::json_str(&mut body, &metrics[t].name);
        body.push_str(",\"");
        body.push_str(verb);
        body.push_str("\":[");
        for (i, &c) in cogs.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            status::json_str(&mut body, &metrics[t].cogs[c].id);
        }
        body.push_str("]}\n");
        (200, body)
    }

    /// Rolls a supply back to where the body says, pausing and resuming its train.
    /// Returns the status and a JSON body.
    fn rewind(
        &self,
        cx: &mut ServiceCx<'_>,
        train: &str,
        cog: &str,
        body: &[u8],
        peer: &str,
    ) -> (u16, String) {
        let metrics = cx.metrics();
        let train = percent_decode(train);
        let Some(t) = metrics.iter().position(|m| m.name == train) else {
            return (404, error_json("no such train"));
        };
        let c = match find_cog(&metrics[t], &percent_decode(cog)) {
            Ok(c) => c,
            Err(e) => return e,
        };
        if !cx.is_supply(t, c) {
            return (409, error_json("only a supply can be rewound"));
        }
        let to = match rewind::parse(body) {
            Ok(r) => r,
            Err(why) => return (400, error_json(why)),
        };
        if cx.is_shutting_down() {
            return (409, error_json("the train is stopping"));
        }
        let id = &metrics[t].cogs[c].id;
        match cx.rewind(t, c, &to) {
            Ok(offset) => {
                slog::info!(cx.logger(), "http: supply rewound"; "train" => &metrics[t].name,
                    "cog" => id, "source" => &to.source, "offset" => offset, "peer" => peer);
                let mut body = String::from("{\"train\":");
                status::json_str(&mut body, &metrics[t].name);
                body.push_str(",\"cog\":");
                status::json_str(&mut body, id);
                body.push_str(",\"source\":");
                status::json_str(&mut body, &to.source);
                body.push_str(&format!(",\"offset\":{offset}}}\n"));
                (200, body)
            }
            Err(e) => {
                let status = match e {
                    RewindError::NoSource(_) => 404,
                    RewindError::Invalid(_) => 400,
                    RewindError::Unsupported(_) => 409,
                };
                slog::info!(cx.logger(), "http: rewind refused"; "train" => &metrics[t].name,
                    "cog" => id, "status" => status, "reason" => %e, "peer" => peer);
                (status, error_json(&e.to_string()))
            }
        }
    }

    /// Samples the counters for rates; keeps the samples of the last [`RATE_SPAN`].
    fn sample(&mut self, cx: &ServiceCx<'_>) {
        let now = cx.now();
        let counts = cx
            .metrics()
            .iter()
            .flat_map(|t| t.cogs.iter().map(|c| (c.data_in, c.data_out)))
            .collect();
        self.samples.push_back(Sample { at: now, counts });
        while self
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > RATE_SPAN)
        {
            self.samples.pop_front();
        }
    }

    /// The oldest sample within the rate span, to take rates against.
    fn rate_base(&self) -> Option<&Sample> {
        self.samples.front()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Listen::Unix(p) = &self.settings.listen
            && self.listener.is_some()
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Service for Server {
    fn start(&mut self, cx: &mut ServiceCx<'_>) -> Result<(), BoxError> {
        let mut listener = Listener::bind(&self.settings.listen)
            .map_err(|e| format!("[http] cannot listen on {:?}: {e}", self.settings.listen))?;
        listener
            .register(cx, LISTENER)
            .map_err(|e| format!("[http] cannot register the listener: {e}"))?;
        let shown = match (&self.settings.listen, listener.local_addr()) {
            (_, Some(a)) => a,
            (Listen::Unix(p), None) => format!("unix:{}", p.display()),
            (Listen::Tcp(a), None) => a.to_string(),
        };
        slog::info!(cx.logger(), "http: control server listening"; "listen" => shown,
            "token" => self.token.is_some());
        self.listener = Some(listener);
        self.started = cx.now();
        self.sample(cx);
        cx.wake_at(cx.now() + TICK);
        Ok(())
    }

    fn ready(&mut self, local: Local, _event: &Event, cx: &mut ServiceCx<'_>) {
        if local == LISTENER {
            self.accept_all(cx);
        } else {
            self.pump(local as usize - 1, cx);
        }
    }

    fn tick(&mut self, cx: &mut ServiceCx<'_>) {
        let now = cx.now();
        self.sample(cx);
        let idle = self.settings.idle_timeout;
        for idx in 0..self.conns.len() {
            let stale = self.conns[idx].as_ref().is_some_and(|c| {
                now.duration_since(c.last_active) >= idle
                    || c.request_since
                        .is_some_and(|t| now.duration_since(t) >= idle)
            });
            if stale {
                self.close(idx, cx);
            }
        }
        // A listener that hit a descriptor limit is edge-triggered: try it again.
        self.accept_all(cx);
        cx.wake_at(now + TICK);
    }
}

/// Compares without stopping at the first difference, so timing does not tell how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes `%XX` escapes of a path segment (train and cog names may hold any character);
/// invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cog of `train` named `name`: its id, or its type when that is unique in the train;
/// a 404 or 409 answer otherwise.
fn find_cog(
    train: &crate::engine::train::TrainMetrics,
    name: &str,
) -> Result<usize, (u16, String)> {
    let cogs = &train.cogs;
    let by_id: Vec<usize> = (0..cogs.len()).filter(|&c| cogs[c].id == name).collect();
    let found = if by_id.is_empty() {
        (0..cogs.len()).filter(|&c| cogs[c].name == name).collect()
    } else {
        by_id
    };
    match found.as_slice() {
        [] => Err((404, error_json("no such cog in the train"))),
        [c] => Ok(*c),
        _ => Err((
            409,
            error_json("more than one cog of that type: name the cog by its id"),
        )),
    }
}

fn error_json(msg: &str) -> String {
    let mut s = String::from("{\"error\":");
    status::json_str(&mut s, msg);
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("x%23y"), "x#y");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
