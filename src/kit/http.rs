//! HTTP/1.1 on the server side, shared by `http_in` and the daemon's control server:
//! request heads parsed with `httparse` and bounded, chunked bodies decoded as they
//! arrive, and responses written.

/// How long a request's body is, as its head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// `Content-Length: n` (0 when the head gives neither).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes the head took in the input (the body follows).
    pub len: usize,
    /// The method, e.g. `POST`.
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// The body's length or framing.
    pub body: BodyLength,
    /// The client asked to close after the response (or speaks HTTP/1.0 without
    /// keep-alive).
    pub close: bool,
    /// `Expect: 100-continue`: the client waits for an interim answer before the body.
    pub expect_continue: bool,
    /// The other headers, names in lower case, values as sent (lossily UTF-8).
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The value of header `name` (lower case), if the request has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path of the target, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// What the start of the input holds.
#[derive(Debug)]
pub enum Head {
    /// A whole head.
    Complete(RequestHead),
    /// Not yet a whole head.
    Partial,
    /// A request that cannot be served: status and reason (the connection then closes).
    Bad(u16, &'static str),
}

/// Headers of a request at most; more is answered 431.
pub const MAX_HEADERS: usize = 64;

/// Parses the request head at the start of `buf`, at most `max_head` bytes long. Framing
/// headers are checked: a `Content-Length` that is not a number or given twice with
/// different values, a `Transfer-Encoding` other than `chunked`, or both framings at once
/// (the ambiguity request smuggling lives on) are a 400.
pub fn parse_head(buf: &[u8], max_head: usize) -> Head {
    if buf.is_empty() {
        return Head::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Complete(_)) => {
            return Head::Bad(431, "the request head is too large");
        }
        Ok(httparse::Status::Partial) if buf.len() >= max_head => {
            return Head::Bad(431, "the request head is too large");
        }
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Head::Bad(431, "too many request headers");
        }
        Err(_) => return Head::Bad(400, "malformed request"),
    };
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = req.version == Some(0);
    let mut expect_continue = false;
    let mut others = Vec::new();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                Some(n) => n,
                None => return Head::Bad(400, "invalid Content-Length"),
            };
            if length.is_some_and(|l| l != n) {
                return Head::Bad(400, "conflicting Content-Length headers");
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = String::from_utf8_lossy(h.value);
            if !v.trim().eq_ignore_ascii_case("chunked") || chunked {
                return Head::Bad(400, "only Transfer-Encoding: chunked is accepted");
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        } else {
            others.push((
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            ));
        }
    }
    let body = match (length, chunked) {
        (Some(_), true) => {
            return Head::Bad(400, "both Content-Length and Transfer-Encoding");
        }
        (_, true) => BodyLength::Chunked,
        (n, false) => BodyLength::Length(n.unwrap_or(0)),
    };
    Head::Complete(RequestHead {
        len,
        method: req.method.unwrap_or("").to_string(),
        target: req.path.unwrap_or("").to_string(),
        body,
        close,
        expect_continue,
        headers: others,
    })
}

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
    Done,
}

/// Decodes a chunked body as its bytes arrive.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
        }
    }

    /// Whether the last chunk and the trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes what `input` holds, appending data to `out`; returns the bytes of `input`
    /// consumed (the rest, an incomplete line, waits for more), or what is wrong. Stops
    /// at the end of the body: what follows belongs to the next request.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, &'static str> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, 0))) => {
                        pos += n;
                        self.state = ChunkState::Trailers;
                    }
                    Ok(httparse::Status::Complete((n, size))) => {
                        pos += n;
                        self.state = ChunkState::Data(size);
                    }
                    Ok(httparse::Status::Partial) => {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err("chunk-size line too long");
                        }
                        return Ok(pos);
                    }
                    Err(_) => return Err("malformed chunk size"),
                },
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&rest[..take]);
                    pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF");
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(i) = memchr::memchr(b'\n', rest) else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err("trailer line too long");
                        }
                        return Ok(pos);
                    };
                    if i > MAX_CHUNK_LINE {
                        return Err("trailer line too long");
                    }
                    pos += i + 1;
                    if rest[..i]
                        .strip_suffix(b"\r")
                        .unwrap_or(&rest[..i])
                        .is_empty()
                    {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

/// The reason phrase of `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Appends a whole response; `extra` holds further header lines, each ending in CRLF.
pub fn respond(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    close: bool,
    extra: &str,
) {
    use std::io::Write as _;
    let conn = if close { "close" } else { "keep-alive" };
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: {conn}\r\n{extra}\r\n",
        reason(status),
        body.len()
    );
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(buf: &[u8]) -> RequestHead {
        match parse_head(buf, 1024) {
            Head::Complete(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heads_are_parsed_and_bounded() {
        let h = head(b"POST /in?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Type: text/plain\r\n\r\nabcd");
        assert_eq!(h.method, "POST");
        assert_eq!(h.path(), "/in");
        assert_eq!(h.body, BodyLength::Length(4));
        assert_eq!(h.header("content-type"), Some("text/plain"));
        assert_eq!(h.len, 79);
        assert!(!h.close);
        let h =
            head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(h.body, BodyLength::Chunked);
        assert!(h.expect_continue);
        assert!(head(b"GET / HTTP/1.0\r\n\r\n").close);
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\n", 1024),
            Head::Partial
        ));
        let bad = |b: &[u8]| match parse_head(b, 1024) {
            Head::Bad(s, _) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(bad(b"\x01 x\r\n\r\n"), 400);
        assert_eq!(bad(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            bad(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            bad(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            400
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(2000));
        assert_eq!(bad(big.as_bytes()), 431);
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let body = b"3\r\nabc\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for cut in 1..body.len() {
            let mut d = ChunkedDecoder::new();
            let mut out = Vec::new();
            let mut input = body[..cut].to_vec();
            let used = d.decode(&input, &mut out).unwrap();
            input.drain(..used);
            input.extend_from_slice(&body[cut..]);
            let used = d.decode(&input, &mut out).unwrap();
            assert!(d.is_done(), "cut at {cut}");
            assert_eq!(out, b"abc0123456789abcdef");
            assert_eq!(&input[used..], b"NEXT");
        }
        let mut d = ChunkedDecoder::new();
        assert!(d.decode(b"zz\r\n", &mut Vec::new()).is_err());
        let mut d = ChunkedDecoder::new();
        assert!(d.decode(b"1\r\nab\r\n", &mut Vec::new()).is_err());
        let mut d = ChunkedDecoder::new();
        assert!(d.decode(&[b'1'; 5000], &mut Vec::new()).is_err());
    }
}
