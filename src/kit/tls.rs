//! TLS for the socket cogs (`tcp_in`, `tcp_out`, `http_out`, `redis_in`, `redis_out`):
//! the `tls` table they share, the rustls configurations it builds (ring provider, no
//! OpenSSL), and [`TlsStream`], a non-blocking TLS stream over a mio socket that reads and
//! writes like the socket itself (`WouldBlock` when it must wait for readiness).
//!
//! ```toml
//! [train.cog.tls]
//! cert = "/etc/deadbeat/tls/server.pem"   # own certificate chain (PEM); a server's is required
//! key = "/etc/deadbeat/tls/server.key"    # its private key (PEM: PKCS#8, PKCS#1 or SEC1)
//! ca = "/etc/deadbeat/tls/ca.pem"         # client: CAs the server must chain to;
//!                                          # server: CAs client certificates must chain to (mutual TLS)
//! verify = true                            # client: check the server's certificate and name
//! server_name = "logs.example"             # client: name expected and sent as SNI (default: the address's host)
//! ```
//!
//! A client with `verify = true` and no `ca` trusts the system store
//! (`/etc/ssl/certs/ca-certificates.crt`). A server given `ca` requires every client to
//! present a certificate that chains to it (mutual TLS); with `verify = false` as well,
//! a client certificate is asked for and checked when given but not required.
//!
//! A cog adopts TLS in a few lines: build a [`TlsServer`] or [`TlsClient`] from its
//! settings when it is built (errors name the key and the file), then wrap each accepted
//! or connected `mio::net::TcpStream` with [`TlsServer::accept`] or
//! [`TlsClient::connect`] (or keep it plain in a [`Stream`]). Reading drives the
//! handshake; failures come out of `read`/`write` as `io::Error`s for which
//! [`is_tls_error`] is true, with rustls' reason in the text.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use mio::event::Source;
use mio::{Interest, Registry, Token};
use serde::de::Deserializer;

use crate::schema::{ParamType, SettingError, SettingValue, Settings};

/// The system's CA bundle (Debian's `ca-certificates`), trusted by a verifying client
/// without `ca`.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Ciphertext queued for the socket beyond which a writer takes no more plaintext: writes
/// go out in batches up to this size.
#[cfg(feature = "tls")]
const OUT_HIGH: usize = 1 << 20;

/// Ciphertext read from the socket per `read` (rustls itself asks for 4 KiB at a time):
/// a busy stream costs a read per 64 KiB, as a plain one costs one per 128 KiB.
#[cfg(feature = "tls")]
const IN_SIZE: usize = 64 << 10;

crate::settings! {
    /// The `tls` table of a socket cog. See [the module](crate::kit::tls).
    pub struct TlsSettings {
        /// certificate chain (PEM file): a server's own (required on a server); on a client, presented for mutual TLS
        cert: Option<PathBuf>,
        /// private key of `cert` (PEM file: PKCS#8, PKCS#1 or SEC1)
        key: Option<PathBuf>,
        /// CA certificates (PEM file). Client: the server must chain to them (default: the system store /etc/ssl/certs/ca-certificates.crt). Server: clients must present a certificate chaining to them (mutual TLS)
        ca: Option<PathBuf>,
        /// client: verify the server's certificate and name (false: accept any, for tests only). Server with `ca`: false makes client certificates optional (checked when given)
        verify: bool = "true",
        /// client: the name the server's certificate must hold, also sent as SNI (default: the host of the address)
        server_name: Option<String>,
    }
}

impl TlsSettings {
    /// Makes relative file names relative to `base`, the configuration file's directory
    /// (as every other file a configuration names).
    pub fn resolve(&mut self, base: &Path) {
        for p in [&mut self.cert, &mut self.key, &mut self.ca]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

impl SettingValue for TlsSettings {
    const TYPE: ParamType = ParamType::Table;

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <TlsSettings as Settings>::from_map(d)
    }

    fn from_default(_: &str) -> Option<Self> {
        None
    }
}

/// The error a TLS failure comes out of `read` or `write` with (see [`is_tls_error`]).
#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS: {}", self.0)
    }
}

impl std::error::Error for TlsError {}

#[cfg(feature = "tls")]
fn tls_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TlsError(msg.into()))
}

/// Whether `e` is a TLS failure (a handshake refused, a certificate not trusted, a
/// plaintext peer), as opposed to a socket error.
pub fn is_tls_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<TlsError>())
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(feature = "tls")]
mod imp {
    use super::*;

    use std::collections::VecDeque;
    use std::path::Path;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

    // ring, not aws-lc-rs (which needs cmake and a C toolchain to build); rustls marks
    // it deprecated for lacking post-quantum key exchange, which syslog peers lack too.
    #[allow(deprecated)]
    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, SettingError> {
        let bad = |e: &dyn std::fmt::Display| {
            SettingError::new(
                key,
                format!("cannot read certificates from {}: {e}", path.display()),
            )
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no PEM certificate in the file"));
        }
        Ok(certs)
    }

    fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, SettingError> {
        PrivateKeyDer::from_pem_file(path).map_err(|e| {
            SettingError::new(
                "tls.key",
                format!("cannot read a private key from {}: {e}", path.display()),
            )
        })
    }

    fn roots(key: &'static str, path: &Path) -> Result<Arc<RootCertStore>, SettingError> {
        let mut store = RootCertStore::empty();
        let (added, _ignored) = store.add_parsable_certificates(certs(key, path)?);
        if added == 0 {
            return Err(SettingError::new(
                key,
                format!("no usable CA certificate in {}", path.display()),
            ));
        }
        Ok(Arc::new(store))
    }

    fn cert_and_key(
        s: &TlsSettings,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, SettingError> {
        match (&s.cert, &s.key) {
            (Some(c), Some(k)) => Ok(Some((certs("tls.cert", c)?, private_key(k)?))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(SettingError::new(
                "tls.key",
                "tls.cert is given without its key",
            )),
            (None, Some(_)) => Err(SettingError::new(
                "tls.cert",
                "tls.key is given without its certificate",
            )),
        }
    }

    fn key_error(s: &TlsSettings, e: rustls::Error) -> SettingError {
        let name = |p: &Option<PathBuf>| {
            p.as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        SettingError::new(
            "tls.key",
            format!(
                "the key {} does not fit the certificate {}: {e}",
                name(&s.key),
                name(&s.cert)
            ),
        )
    }

    /// A server's TLS configuration.
    #[derive(Clone)]
    pub struct TlsServer(Arc<ServerConfig>);

    impl std::fmt::Debug for TlsServer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("TlsServer")
        }
    }

    impl TlsServer {
        /// The configuration `s` describes: `cert` and `key` required, `ca` for mutual TLS.
        pub fn new(s: &TlsSettings) -> Result<Self, SettingError> {
            if s.server_name.is_some() {
                return Err(SettingError::new(
                    "tls.server_name",
                    "applies to clients only (a server presents tls.cert whatever name is asked)",
                ));
            }
            let Some((chain, key)) = cert_and_key(s)? else {
                return Err(SettingError::new(
                    "tls.cert",
                    "a TLS server needs tls.cert and tls.key",
                ));
            };
            let p = provider();
            let builder = ServerConfig::builder_with_provider(p.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| SettingError::new("tls", e.to_string()))?;
            let builder = match &s.ca {
                Some(ca) => {
                    let v = WebPkiClientVerifier::builder_with_provider(roots("tls.ca", ca)?, p);
                    let v = if s.verify {
                        v
                    } else {
                        v.allow_unauthenticated()
                    };
                    let v = v
                        .build()
                        .map_err(|e| SettingError::new("tls.ca", e.to_string()))?;
                    builder.with_client_cert_verifier(v)
                }
                None => builder.with_no_client_auth(),
            };
            let cfg = builder
                .with_single_cert(chain, key)
                .map_err(|e| key_error(s, e))?;
            Ok(TlsServer(Arc::new(cfg)))
        }

        /// A TLS stream over an accepted socket; the handshake runs as it is read.
        pub fn accept<S: Read + Write>(&self, sock: S) -> io::Result<TlsStream<S>> {
            let c = ServerConnection::new(self.0.clone()).map_err(|e| tls_error(e.to_string()))?;
            Ok(TlsStream::new(sock, c.into()))
        }
    }

    /// A client's TLS configuration and the name it expects of the server.
    #[derive(Clone)]
    pub struct TlsClient {
        cfg: Arc<ClientConfig>,
        name: ServerName<'static>,
    }

    impl std::fmt::Debug for TlsClient {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "TlsClient({:?})", self.name)
        }
    }

    impl TlsClient {
        /// The configuration `s` describes for connections to `address` (`host:port`,
        /// whose host is the expected name unless `server_name` is set).
        pub fn new(s: &TlsSettings, address: &str) -> Result<Self, SettingError> {
            let name = s.server_name.as_deref().unwrap_or(host_of(address));
            let name = ServerName::try_from(name.to_string()).map_err(|e| {
                SettingError::new(
                    "tls.server_name",
                    format!("{name:?} is not a host name or IP address: {e}"),
                )
            })?;
            let p = provider();
            let builder = ClientConfig::builder_with_provider(p.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| SettingError::new("tls", e.to_string()))?;
            let builder = if s.verify {
                let store = match &s.ca {
                    Some(ca) => roots("tls.ca", ca)?,
                    None => roots("tls.ca", Path::new(SYSTEM_CA_FILE)).map_err(|e| {
                        SettingError::new(
                            "tls.ca",
                            format!("not given, and the system store cannot serve: {}", e.msg),
                        )
                    })?,
                };
                builder.with_root_certificates(store)
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyServer(
                        p.signature_verification_algorithms,
                    )))
            };
            let cfg = match cert_and_key(s)? {
                Some((chain, key)) => builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| key_error(s, e))?,
                None => builder.with_no_client_auth(),
            };
            Ok(TlsClient {
                cfg: Arc::new(cfg),
                name,
            })
        }

        /// A TLS stream over a socket connected (or connecting) to the server; the
        /// handshake runs as it is read and written.
        pub fn connect<S: Read + Write>(&self, sock: S) -> io::Result<TlsStream<S>> {
            let c = ClientConnection::new(self.cfg.clone(), self.name.clone())
                .map_err(|e| tls_error(e.to_string()))?;
            Ok(TlsStream::new(sock, c.into()))
        }
    }

    /// `verify = false`: any server certificate is taken (signatures of the handshake are
    /// still checked, so the session is encrypted, but not authenticated).
    #[derive(Debug)]
    struct AnyServer(WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.supported_schemes()
        }
    }

    /// A TLS connection (rustls) over a non-blocking socket.
    ///
    /// `read` gives plaintext, as much as is there up to the buffer (reading the socket
    /// until it would block), and `WouldBlock` when there is none yet; it drives the
    /// handshake and sends what the handshake needs. `write` takes plaintext once the
    /// handshake is done (`WouldBlock` before, and while a megabyte of ciphertext waits
    /// for the socket), encrypts it and writes the ciphertext in large writes; the rest
    /// goes out on the next `write`, `read` or [`TlsStream::flush_out`].
    ///
    /// [`TlsStream::plain_acked`] turns the socket's count of unacknowledged bytes
    /// (`SIOCOUTQ`) into plaintext acknowledged by the peer's TCP stack.
    pub struct TlsStream<S> {
        sock: S,
        conn: rustls::Connection,
        /// Ciphertext read from the socket and not yet given to rustls: `inbuf[in_pos..in_end]`
        /// (released while the socket has nothing more).
        inbuf: Vec<u8>,
        in_pos: usize,
        in_end: usize,
        /// Ciphertext waiting for the socket, from `out_pos`.
        out: Vec<u8>,
        out_pos: usize,
        /// Ciphertext bytes produced and written to the socket, since the start.
        made: u64,
        written: u64,
        /// Plaintext bytes taken by `write`, and of those, acknowledged.
        plain: u64,
        plain_acked: u64,
        /// (ciphertext end, plaintext end) after each write: the plaintext is acknowledged
        /// once the ciphertext up to its end is.
        marks: VecDeque<(u64, u64)>,
        eof: bool,
        /// A failure met after plaintext was returned: reported by the next read.
        failed: Option<io::Error>,
        /// Over a blocking socket: a read returns once it has plaintext (it would wait
        /// for more otherwise).
        blocking: bool,
    }

    impl<S> std::fmt::Debug for TlsStream<S> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TlsStream")
                .field("handshaking", &self.conn.is_handshaking())
                .field("plain", &self.plain)
                .finish()
        }
    }

    impl<S> TlsStream<S> {
        /// The socket.
        pub fn get_ref(&self) -> &S {
            &self.sock
        }

        /// The socket, mutably (to register it).
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.sock
        }

        /// Whether the handshake is still under way.
        pub fn is_handshaking(&self) -> bool {
            self.conn.is_handshaking()
        }

        /// Whether ciphertext waits for the socket.
        pub fn has_pending_output(&self) -> bool {
            self.out_pos < self.out.len()
        }

        /// Plaintext bytes `write` has taken since the start.
        pub fn plain_written(&self) -> u64 {
            self.plain
        }

        /// Plaintext bytes (counted from the start) whose ciphertext the peer's TCP stack
        /// acknowledged, given the bytes the socket holds unacknowledged (`SIOCOUTQ`).
        pub fn plain_acked(&mut self, socket_unacked: u64) -> u64 {
            let acked = self.written.saturating_sub(socket_unacked);
            while let Some(&(c, p)) = self.marks.front() {
                if c > acked {
                    break;
                }
                self.plain_acked = p;
                self.marks.pop_front();
            }
            self.plain_acked
        }
    }

    impl<S: Read + Write> TlsStream<S> {
        fn new(sock: S, conn: rustls::Connection) -> Self {
            let mut s = TlsStream {
                sock,
                conn,
                inbuf: Vec::new(),
                in_pos: 0,
                in_end: 0,
                out: Vec::new(),
                out_pos: 0,
                made: 0,
                written: 0,
                plain: 0,
                plain_acked: 0,
                marks: VecDeque::new(),
                eof: false,
                failed: None,
                blocking: false,
            };
            // A client's hello, queued at once (sent on the first flush).
            s.encrypt();
            s
        }

        /// For a blocking socket (with timeouts): completes the handshake now, and makes
        /// each read return as soon as it has plaintext.
        pub fn handshake_blocking(&mut self) -> io::Result<()> {
            self.blocking = true;
            while self.conn.is_handshaking() {
                self.flush_out()?;
                if self.eof {
                    return Err(tls_error(
                        "the peer closed the connection during the handshake",
                    ));
                }
                self.pull()?;
            }
            self.flush_out()?;
            Ok(())
        }

        /// Moves what rustls has to send into the outgoing ciphertext.
        fn encrypt(&mut self) {
            while self.conn.wants_write() {
                match self.conn.write_tls(&mut self.out) {
                    Ok(n) => self.made += n as u64,
                    Err(_) => break,
                }
            }
        }

        /// Writes queued ciphertext to the socket: `Ok(true)` once all of it is out,
        /// `Ok(false)` when the socket would block.
        pub fn flush_out(&mut self) -> io::Result<bool> {
            while self.out_pos < self.out.len() {
                match self.sock.write(&self.out[self.out_pos..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.out_pos += n;
                        self.written += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.out.clear();
            self.out_pos = 0;
            Ok(true)
        }

        /// Gives rustls ciphertext (read from the socket when none is left) and processes
        /// it; `WouldBlock` when the socket has nothing.
        fn pull(&mut self) -> io::Result<()> {
            if self.in_pos == self.in_end && !self.eof {
                if self.inbuf.is_empty() {
                    self.inbuf.resize(IN_SIZE, 0);
                }
                match self.sock.read(&mut self.inbuf) {
                    Ok(0) => {
                        self.eof = true;
                        // rustls learns of the end from a read of nothing.
                        self.conn.read_tls(&mut &[][..])?;
                    }
                    Ok(n) => {
                        self.in_pos = 0;
                        self.in_end = n;
                    }
                    Err(e) => {
                        if e.kind() == io::ErrorKind::WouldBlock {
                            // An idle connection holds no read buffer.
                            self.inbuf = Vec::new();
                        }
                        return Err(e);
                    }
                }
            }
            if self.in_pos < self.in_end {
                let mut rest = &self.inbuf[self.in_pos..self.in_end];
                let n = self.conn.read_tls(&mut rest)?;
                self.in_pos += n;
            }
            if let Err(e) = self.conn.process_new_packets() {
                // The alert that tells the peer why, best effort.
                self.encrypt();
                let _ = self.flush_out();
                return Err(tls_error(e.to_string()));
            }
            self.encrypt();
            self.flush_out()?;
            Ok(())
        }
    }

    impl<S: Read + Write> Read for TlsStream<S> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            let mut n = 0;
            while n < buf.len() {
                match self.conn.reader().read(&mut buf[n..]) {
                    Ok(0) => return Ok(n),
                    Ok(k) => {
                        n += k;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.blocking && n > 0 => {
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        // Closed without close_notify (many syslog senders do): the end,
                        // unless the handshake never completed.
                        if n == 0 && self.conn.is_handshaking() {
                            return Err(tls_error(
                                "the peer closed the connection during the handshake",
                            ));
                        }
                        return Ok(n);
                    }
                    Err(e) => return Err(e),
                }
                if self.eof {
                    // rustls has seen the end and has nothing more: it says which end.
                    if self.conn.is_handshaking() {
                        return Err(tls_error(
                            "the peer closed the connection during the handshake",
                        ));
                    }
                    return Ok(n);
                }
                match self.pull() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if n > 0 => {
                        self.failed = Some(e);
                        return Ok(n);
                    }
                    Err(e) => return Err(e),
                }
            }
            if n > 0 {
                Ok(n)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }

    impl<S: Read + Write> Write for TlsStream<S> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
            let all_out = self.flush_out()?;
            if !all_out && self.out.len() - self.out_pos >= OUT_HIGH {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if self.conn.is_handshaking() {
                // Records wait for the handshake, which reading drives.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut taken = 0;
            'slices: for s in iov {
                let mut s: &[u8] = s;
                while !s.is_empty() {
                    if self.out.len() - self.out_pos >= OUT_HIGH {
                        break 'slices;
                    }
                    let k = self.conn.writer().write(s)?;
                    self.encrypt();
                    if k == 0 {
                        break 'slices;
                    }
                    taken += k;
                    s = &s[k..];
                    // A mark per write of rustls (at most 64 KiB): what a lost connection
                    // sends again beyond what the peer lacked stays that small.
                    self.plain += k as u64;
                    self.marks.push_back((self.made, self.plain));
                }
            }
            if taken == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.flush_out()?;
            Ok(taken)
        }

        fn flush(&mut self) -> io::Result<()> {
            if self.flush_out()? {
                Ok(())
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }
}

#[cfg(not(feature = "tls"))]
mod imp {
    //! Without the `tls` feature: the same names, and configurations that refuse.
    use super::*;

    const ABSENT: &str = "this build has no TLS (the `tls` feature is off)";

    /// A server's TLS configuration (never built without the `tls` feature).
    #[derive(Clone, Debug)]
    pub struct TlsServer(std::convert::Infallible);

    impl TlsServer {
        /// Refuses: no TLS in this build.
        pub fn new(_: &TlsSettings) -> Result<Self, SettingError> {
            Err(SettingError::new("tls", ABSENT))
        }

        /// Never called: no configuration exists.
        pub fn accept<S>(&self, _: S) -> io::Result<TlsStream<S>> {
            match self.0 {}
        }
    }

    /// A client's TLS configuration (never built without the `tls` feature).
    #[derive(Clone, Debug)]
    pub struct TlsClient(std::convert::Infallible);

    impl TlsClient {
        /// Refuses: no TLS in this build.
        pub fn new(_: &TlsSettings, _: &str) -> Result<Self, SettingError> {
            Err(SettingError::new("tls", ABSENT))
        }

        /// Never called: no configuration exists.
        pub fn connect<S>(&self, _: S) -> io::Result<TlsStream<S>> {
            match self.0 {}
        }
    }

    /// A TLS stream (none exists without the `tls` feature).
    #[derive(Debug)]
    pub struct TlsStream<S>(std::convert::Infallible, std::marker::PhantomData<S>);

    impl<S> TlsStream<S> {
        /// The socket.
        pub fn get_ref(&self) -> &S {
            match self.0 {}
        }
        /// The socket, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            match self.0 {}
        }
        /// Whether the handshake is under way.
        pub fn is_handshaking(&self) -> bool {
            match self.0 {}
        }
        /// Whether ciphertext waits for the socket.
        pub fn has_pending_output(&self) -> bool {
            match self.0 {}
        }
        /// Plaintext bytes taken.
        pub fn plain_written(&self) -> u64 {
            match self.0 {}
        }
        /// Plaintext acknowledged.
        pub fn plain_acked(&mut self, _: u64) -> u64 {
            match self.0 {}
        }
        /// Writes queued ciphertext.
        pub fn flush_out(&mut self) -> io::Result<bool> {
            match self.0 {}
        }
    }

    impl<S> Read for TlsStream<S> {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            match self.0 {}
        }
    }

    impl<S> Write for TlsStream<S> {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            match self.0 {}
        }
        fn flush(&mut self) -> io::Result<()> {
            match self.0 {}
        }
    }
}

pub use imp::{TlsClient, TlsServer, TlsStream};

/// A server's TLS configuration from an optional `tls` table.
pub fn server(s: Option<&TlsSettings>) -> Result<Option<TlsServer>, SettingError> {
    s.map(TlsServer::new).transpose()
}

/// A client's TLS configuration from an optional `tls` table, for `address`.
pub fn client(s: Option<&TlsSettings>, address: &str) -> Result<Option<TlsClient>, SettingError> {
    s.map(|s| TlsClient::new(s, address)).transpose()
}

/// A socket, plain or with TLS: what a cog that may use either holds per connection.
#[derive(Debug)]
pub enum Stream<S> {
    /// Plain bytes.
    Plain(S),
    /// TLS.
    Tls(Box<TlsStream<S>>),
}

impl<S: Read + Write> Stream<S> {
    /// `sock` as a server accepted it: with TLS when `tls` is given.
    pub fn accepted(sock: S, tls: Option<&TlsServer>) -> io::Result<Self> {
        match tls {
            Some(t) => Ok(Stream::Tls(Box::new(t.accept(sock)?))),
            None => Ok(Stream::Plain(sock)),
        }
    }

    /// `sock` as a client connected it: with TLS when `tls` is given.
    pub fn connected(sock: S, tls: Option<&TlsClient>) -> io::Result<Self> {
        match tls {
            Some(t) => Ok(Stream::Tls(Box::new(t.connect(sock)?))),
            None => Ok(Stream::Plain(sock)),
        }
    }
}

impl<S> Stream<S> {
    /// The socket.
    pub fn get_ref(&self) -> &S {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.get_ref(),
        }
    }

    /// The socket, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.get_mut(),
        }
    }

    /// Whether a TLS handshake is under way (never for a plain socket).
    pub fn is_handshaking(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.is_handshaking(),
        }
    }
}

impl<S: Read + Write> Read for Stream<S> {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl<S: Read + Write> Write for Stream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn write_vectored(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write_vectored(iov),
            Stream::Tls(t) => t.write_vectored(iov),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

impl<S: Source> Source for Stream<S> {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.get_mut().register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.get_mut().reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.get_mut().deregister(r)
    }
}

impl<S: AsRawFd> AsRawFd for Stream<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.get_ref().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_taken_from_addresses() {
        assert_eq!(host_of("logs.example:6514"), "logs.example");
        assert_eq!(host_of("127.0.0.1:6514"), "127.0.0.1");
        assert_eq!(host_of("[::1]:6514"), "::1");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn missing_files_are_named_with_their_key() {
        let s = TlsSettings {
            cert: Some("/nonexistent/cert.pem".into()),
            key: Some("/nonexistent/key.pem".into()),
            ..Default::default()
        };
        let e = TlsServer::new(&s).expect_err("no such file");
        assert_eq!(e.key, "tls.cert");
        assert!(e.msg.contains("/nonexistent/cert.pem"), "{}", e.msg);
        let e = TlsServer::new(&TlsSettings::default()).expect_err("a server needs a cert");
        assert_eq!(e.key, "tls.cert");
        let only_key = TlsSettings {
            key: Some("/nonexistent/key.pem".into()),
            ..Default::default()
        };
        let e = TlsClient::new(&only_key, "127.0.0.1:1").expect_err("key without cert");
        assert_eq!(e.key, "tls.cert");
    }
}
