//! Sockets, connections and HTTP/1.1 framing of the control server: requests parsed with
//! `httparse`, responses written from a per-connection buffer.

use std::io::{self, ErrorKind, Read, Write};
use std::time::Instant;

use mio::Interest;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::engine::cog::Local;
use crate::engine::escapement::ServiceCx;
use crate::kit::http::{self, BodyLength, Head};

use super::Listen;

/// The listening socket.
pub(super) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    pub(super) fn bind(listen: &Listen) -> io::Result<Listener> {
        match listen {
            Listen::Tcp(a) => TcpListener::bind(*a).map(Listener::Tcp),
            Listen::Unix(p) => {
                use std::os::unix::fs::FileTypeExt;
                // A socket left by a daemon that died: nobody answers on it, so it goes.
                if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
                    && std::os::unix::net::UnixStream::connect(p).is_err()
                {
                    std::fs::remove_file(p)?;
                }
                UnixListener::bind(p).map(Listener::Unix)
            }
        }
    }

    pub(super) fn register(&mut self, cx: &mut ServiceCx<'_>, local: Local) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => cx.register(l, local, Interest::READABLE),
            Listener::Unix(l) => cx.register(l, local, Interest::READABLE),
        }
    }

    /// The bound address of a TCP listener (with the port the kernel chose for port 0).
    pub(super) fn local_addr(&self) -> Option<String> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| a.to_string()),
            Listener::Unix(_) => None,
        }
    }

    pub(super) fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| (Stream::Tcp(s), a.to_string())),
            Listener::Unix(l) => l
                .accept()
                .map(|(s, _)| (Stream::Unix(s), "unix".to_string())),
        }
    }
}

/// A connected socket of either kind.
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(super) fn register(
        &mut self,
        cx: &mut ServiceCx<'_>,
        local: Local,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => cx.register(s, local, interest),
            Stream::Unix(s) => cx.register(s, local, interest),
        }
    }

    pub(super) fn deregister(&mut self, cx: &mut ServiceCx<'_>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => cx.deregister(s),
            Stream::Unix(s) => cx.deregister(s),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

/// One client connection.
pub(super) struct Conn {
    pub(super) stream: Stream,
    pub(super) peer: String,
    /// Received and not yet answered.
    pub(super) inbuf: Vec<u8>,
    /// The response being written, from `out_pos` on.
    pub(super) outbuf: Vec<u8>,
    out_pos: usize,
    /// Last time bytes moved either way.
    pub(super) last_active: Instant,
    /// When the first byte of the request still incomplete arrived.
    pub(super) request_since: Option<Instant>,
    /// Close once the response is written (`Connection: close`, HTTP/1.0, an error).
    pub(super) close_after: bool,
}

impl Conn {
    pub(super) fn new(stream: Stream, peer: String, now: Instant) -> Self {
        Conn {
            stream,
            peer,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            out_pos: 0,
            last_active: now,
            request_since: None,
            close_after: false,
        }
    }

    /// Writes what is pending; `Ok(true)` once all of it is written, `Ok(false)` when the
    /// socket is full, an error when the connection is gone.
    pub(super) fn flush(&mut self, now: Instant) -> io::Result<bool> {
        while self.out_pos < self.outbuf.len() {
            match self.stream.write(&self.outbuf[self.out_pos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    self.last_active = now;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.outbuf.clear();
        self.out_pos = 0;
        Ok(true)
    }

    /// Reads once; `Ok(true)` when bytes came, `Ok(false)` when none are waiting, an
    /// error at the end of the stream or when the peer failed.
    pub(super) fn read_some(&mut self, now: Instant) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    if self.inbuf.is_empty() {
                        self.request_since = Some(now);
                    }
                    self.inbuf.extend_from_slice(&buf[..n]);
                    self.last_active = now;
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// A complete request.
#[derive(Debug)]
pub(super) struct Request {
    /// Bytes it took in the input, head and body.
    pub(super) len: usize,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) authorization: Option<String>,
    /// The body (at most the body bound).
    pub(super) body: Vec<u8>,
    /// The client asked to close after the response (or speaks HTTP/1.0 without
    /// keep-alive).
    pub(super) close: bool,
}

/// What the input holds.
#[derive(Debug)]
pub(super) enum Parsed {
    Request(Request),
    /// Not yet a whole request.
    Partial,
    /// A request that cannot be served: status and reason (the connection then closes).
    Bad(u16, &'static str),
}

/// Parses the request at the start of `buf` (the head through the shared
/// [`crate::kit::http::parse_head`]); control requests carry a `Content-Length` body.
pub(super) fn parse(buf: &[u8], max_head: usize, max_body: usize) -> Parsed {
    let head = match http::parse_head(buf, max_head) {
        Head::Complete(h) => h,
        Head::Partial => return Parsed::Partial,
        Head::Bad(status, why) => return Parsed::Bad(status, why),
    };
    let body = match head.body {
        BodyLength::Length(n) => n,
        BodyLength::Chunked => {
            return Parsed::Bad(
                400,
                "Transfer-Encoding is not accepted: send Content-Length",
            );
        }
    };
    if body > max_body {
        return Parsed::Bad(413, "the request body is too large");
    }
    if buf.len() < head.len + body {
        return Parsed::Partial;
    }
    Parsed::Request(Request {
        len: head.len + body,
        authorization: head.header("authorization").map(str::to_string),
        body: buf[head.len..head.len + body].to_vec(),
        close: head.close,
        method: head.method,
        path: head.target,
    })
}

/// Appends a whole response; `extra` holds further header lines, each ending in CRLF.
pub(super) fn respond(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    close: bool,
    extra: &str,
) {
    http::respond(out, status, content_type, body, close, extra);
}

/// An error response with a fixed text (never what the request said).
pub(super) fn respond_error(out: &mut Vec<u8>, status: u16, why: &str, close: bool) {
    let body = format!("{status} {}: {why}\n", http::reason(status));
    respond(
        out,
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        close,
        "",
    );
}

/// 405, with the method the resource takes.
pub(super) fn respond_error_allow(out: &mut Vec<u8>, allow: &str, close: bool) {
    let body = format!("405 Method Not Allowed: use {allow}\n");
    respond(
        out,
        405,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        close,
        &format!("Allow: {allow}\r\n"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_framed_and_bounded() {
        let r = parse(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\nGET", 1024, 16);
        let Parsed::Request(r) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.close),
            ("GET", "/status", false)
        );
        assert_eq!(r.len, 33);
        assert!(matches!(
            parse(b"GET /status HTTP/1.1\r\n", 1024, 16),
            Parsed::Partial
        ));
        assert!(matches!(
            parse(b"GET /status HTTP/1.0\r\n\r\n", 1024, 16),
            Parsed::Request(Request { close: true, .. })
        ));
        assert!(matches!(
            parse(b"\x01\x02 garbage\r\n\r\n", 1024, 16),
            Parsed::Bad(400, _)
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(2000));
        assert!(matches!(
            parse(big.as_bytes(), 1024, 16),
            Parsed::Bad(431, _)
        ));
        let body = b"POST /x HTTP/1.1\r\nContent-Length: 17\r\n\r\n";
        assert!(matches!(parse(body, 1024, 16), Parsed::Bad(413, _)));
        let body = b"POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nab";
        assert!(matches!(parse(body, 1024, 16), Parsed::Partial));
        let body = b"POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdGET";
        let Parsed::Request(r) = parse(body, 1024, 16) else {
            panic!("a whole request")
        };
        assert_eq!((r.body.as_slice(), r.len), (&b"abcd"[..], 43));
        let bad = b"POST /x HTTP/1.1\r\nContent-Length: x\r\n\r\n";
        assert!(matches!(parse(bad, 1024, 16), Parsed::Bad(400, _)));
    }
}
