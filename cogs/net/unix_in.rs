//! `unix_in`: a Unix socket listener (a `/dev/log` replacement), datagram or stream.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::kit::lines::LineInfo;
use crate::kit::supply::{PauseGate, with_line_emitter};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{Record, SharedStr, Timestamp, Value};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

use super::server_settings::{PerIpSettings, StreamServerSettings};
use super::tcp_in::{Acceptor, STREAM_FIELDS, StreamServer, StreamSettings, received_at_key};

/// Datagrams received per turn before other events get their go.
const DATAGRAMS_PER_TURN: usize = 256;

/// Messages from a Unix socket: a `/dev/log` replacement.
///
/// `mode = "datagram"` (what `syslog(3)` and `logger -u` use) takes one message per
/// datagram; a trailing LF or NUL is removed and datagrams over `max_line_bytes` are cut,
/// flagged `truncated` and counted. `mode = "stream"` accepts connections and reads them
/// exactly as `tcp_in` does (framing, `max_connections` with the longest-idle connection
/// closed for a new one when full, `max_buffered_bytes`, `idle_timeout`, partial lines at
/// disconnect, backpressure, reading what connections hold at a stop for up to
/// `drain_timeout`); `peer` is then the client's credentials, `"pid=… uid=… gid=…"`.
/// In datagram mode, what the socket holds at a stop is read before it closes.
///
/// The socket file gets `permissions` (octal) and is removed at exit. A socket file left
/// at `path` by a process that is gone is replaced; a live one (something accepts on it)
/// or anything that is not a socket is an error at start: nothing else is ever deleted.
///
/// ```toml
/// [[train.cog]]
/// type = "unix_in"
/// path = "/run/deadbeat/log"
/// mode = "datagram"         # or "stream"
/// permissions = "0666"
/// max_buffered_bytes = "64MiB"  # stream mode: all connections' buffers together
/// drain_timeout = "2s"      # stream mode: at a stop, read connections for at most this long
/// ```
///
/// From Rust: `UnixIn::from_settings(&UnixInSettings { path: "/run/deadbeat/log".into(),
/// ..Default::default() })`.
#[derive(Debug)]
pub struct UnixIn {
    path: PathBuf,
    permissions: u32,
    inner: Inner,
    /// Device and inode of the socket file we created, so we remove only that one.
    created: Option<(u64, u64)>,
}

#[derive(Debug)]
enum Inner {
    Stream(Box<StreamServer<mio::net::UnixListener>>),
    Datagram(Datagrams),
}

/// The descriptor of `unix_in`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "unix_in",
    kind: CogKind::Supply,
    summary: "Unix socket listener (datagram or stream): a /dev/log replacement",
    params: UnixInSettings::PARAMS,
    fields: STREAM_FIELDS,
    build,
};

crate::choice! {
    /// What kind of socket `unix_in` listens on.
    pub enum UnixInMode { Datagram = "datagram", Stream = "stream" }
}

crate::settings! {
    /// Settings of `unix_in`.
    pub struct UnixInSettings {
        /// the socket file to create
        #[setting(required)]
        path: PathBuf,
        /// datagram: one message per datagram; stream: connections, framed as in tcp_in
        mode: UnixInMode = "datagram",
        /// octal mode of the socket file
        permissions: String = "0666",
        /// Stream mode: framing, buffers, the stop and connection limits (`max_line_bytes`
        /// applies to datagrams too).
        #[setting(flatten)]
        server: StreamServerSettings,
    }
}

/// The keys that mean something only in stream mode.
const STREAM_ONLY: [&str; 4] = [
    "framing",
    "max_connections",
    "max_buffered_bytes",
    "drain_timeout",
];

const STREAM_ONLY_MSG: &str = "applies to mode = \"stream\" only";

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: UnixInSettings = p.settings()?;
    if let Some(path) = s.path.to_str() {
        s.path = p.resolve(path);
    }
    let cog = UnixIn::from_settings(&s).map_err(|e| p.setting_error(e))?;
    // Given at all, even with its default value, a stream key says stream mode was meant.
    if s.mode == UnixInMode::Datagram
        && let Some(k) = STREAM_ONLY.iter().find(|k| p.node(k).is_some())
    {
        return Err(p.error(k, STREAM_ONLY_MSG));
    }
    Ok(Box::new(cog))
}

impl UnixIn {
    /// A listener made from its settings, without a configuration file (a relative `path`
    /// is taken from the working directory).
    pub fn from_settings(s: &UnixInSettings) -> Result<Self, SettingError> {
        if s.path.as_os_str().is_empty() {
            return Err(SettingError::new("path", "give the socket file's path"));
        }
        let permissions = u32::from_str_radix(s.permissions.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                SettingError::new("permissions", "expected an octal mode such as \"0666\"")
            })?;
        let none = PerIpSettings {
            max_connections_per_ip: 0,
        };
        let settings = StreamSettings::new(&s.server, &none)?;
        if s.mode == UnixInMode::Datagram {
            let d = StreamServerSettings::default();
            let changed = [
                s.server.framing != d.framing,
                s.server.connections.max_connections != d.connections.max_connections,
                s.server.max_buffered_bytes != d.max_buffered_bytes,
                s.server.drain_timeout != d.drain_timeout,
            ];
            if let Some(i) = changed.iter().position(|c| *c) {
                return Err(SettingError::new(STREAM_ONLY[i], STREAM_ONLY_MSG));
            }
        }
        let inner = match s.mode {
            UnixInMode::Stream => Inner::Stream(Box::new(StreamServer::new("unix_in", settings))),
            UnixInMode::Datagram => Inner::Datagram(Datagrams {
                sock: None,
                buf: vec![0; settings.max_line_bytes + 1],
                max: settings.max_line_bytes,
                gate: PauseGate::new(0),
            }),
        };
        Ok(UnixIn {
            path: s.path.clone(),
            permissions,
            inner,
            created: None,
        })
    }
}

/// Makes room for our socket at `path`: nothing there, or a stale socket (removed).
fn clear_path(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket; not replacing it",
            path.display()
        ));
    }
    if socket_in_use(path) {
        return Err(format!(
            "{} is a socket another process is listening on",
            path.display()
        ));
    }
    std::fs::remove_file(path).map_err(|e| format!("removing stale socket {}: {e}", path.display()))
}

fn socket_in_use(path: &Path) -> bool {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => true,
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            std::os::unix::net::UnixDatagram::unbound().is_ok_and(|d| d.connect(path).is_ok())
        }
        Err(_) => false,
    }
}

fn dev_ino(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Acceptor for mio::net::UnixListener {
    type Conn = mio::net::UnixStream;
    fn accept_one(&self) -> io::Result<(Self::Conn, Value, Option<std::net::IpAddr>)> {
        let (s, _) = self.accept()?;
        let peer = peer_cred(&s).unwrap_or_else(|| "unknown".to_string());
        Ok((s, Value::Shared(SharedStr::from(peer)), None))
    }
}

fn peer_cred(s: &impl AsRawFd) -> Option<String> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| format!("pid={} uid={} gid={}", cred.pid, cred.uid, cred.gid))
}

/// The datagram side: one message per datagram.
#[derive(Debug)]
struct Datagrams {
    sock: Option<mio::net::UnixDatagram>,
    /// One byte over the limit, so that a datagram that does not fit is known to be cut.
    buf: Vec<u8>,
    max: usize,
    gate: PauseGate,
}

impl Datagrams {
    /// Reads a turn's share of datagrams, and has the next turn queued if more may wait.
    fn receive(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        // After an error too: the next turn tries again.
        if self.receive_some(out, cx) != Ok(false) {
            cx.enqueue(0);
        }
    }

    /// Reads up to [`DATAGRAMS_PER_TURN`] datagrams: whether more may wait; `Err` after a
    /// failure (logged and counted).
    fn receive_some(&mut self, out: &mut Out<Record>, cx: &mut Ctx) -> Result<bool, ()> {
        let Some(sock) = self.sock.as_ref() else {
            return Ok(false);
        };
        let mut ts = None;
        for _ in 0..DATAGRAMS_PER_TURN {
            match sock.recv(&mut self.buf) {
                Ok(n) => {
                    let ts = *ts.get_or_insert_with(Timestamp::now);
                    let truncated = n > self.max;
                    let mut m = &self.buf[..n.min(self.max)];
                    if !truncated {
                        while let [rest @ .., b'\n' | b'\0' | b'\r'] = m {
                            m = rest;
                        }
                    }
                    let info = LineInfo {
                        offset: 0,
                        truncated,
                        unterminated: false,
                    };
                    with_line_emitter(|em| {
                        let r = em.emit(m, &info, 1, out, cx);
                        r.insert(received_at_key(), Value::Time(ts));
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    slog::warn!(cx.logger(), "receiving a datagram failed"; "cog" => "unix_in", "error" => %e);
                    out.count_errors(1);
                    return Err(());
                }
            }
        }
        Ok(true)
    }
}

impl Cog<Record> for UnixIn {
    fn name(&self) -> &str {
        "unix_in"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        clear_path(&self.path).map_err(|e| format!("unix_in: {e}"))?;
        let shown = self.path.display().to_string();
        // Bound under a temporary name and renamed into place once listening with its
        // permissions set: a client never finds a socket it cannot use yet.
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        match &mut self.inner {
            Inner::Stream(server) => {
                let l = mio::net::UnixListener::bind(&tmp)
                    .map_err(|e| format!("unix_in: cannot listen on {shown}: {e}"))?;
                super::tcp_in::set_backlog(&l);
                server.start(l, cx)?;
            }
            Inner::Datagram(d) => {
                let mut s = mio::net::UnixDatagram::bind(&tmp)
                    .map_err(|e| format!("unix_in: cannot bind {shown}: {e}"))?;
                cx.register(&mut s, 0, Interest::READABLE)?;
                d.sock = Some(s);
            }
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(self.permissions))
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("unix_in: setting up {shown}: {e}")
            })?;
        self.created = dev_ino(&self.path);
        slog::info!(cx.logger(), "unix_in listening"; "path" => shown);
        Ok(())
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<Record>, cx: &mut Ctx) {
        match &mut self.inner {
            Inner::Stream(server) => server.wake(local, &why, out, cx),
            Inner::Datagram(d) => {
                if d.gate.is_open() {
                    d.receive(out, cx);
                }
            }
        }
    }

    fn pause(&mut self, cx: &mut Ctx) {
        match &mut self.inner {
            Inner::Stream(server) => server.pause(cx),
            // Datagrams that arrive meanwhile wait in the socket buffer (then the kernel
            // drops or blocks senders, as with any syslog daemon).
            Inner::Datagram(d) => d.gate.pause(cx),
        }
    }

    fn resume(&mut self, cx: &mut Ctx) {
        match &mut self.inner {
            Inner::Stream(server) => server.resume(cx),
            Inner::Datagram(d) => d.gate.resume(cx),
        }
    }

    fn finish(&mut self, out: &mut Out<Record>, cx: &mut Ctx) {
        match &mut self.inner {
            Inner::Stream(server) => server.finish(out, cx),
            Inner::Datagram(d) => {
                super::read_datagrams_at_stop(DATAGRAMS_PER_TURN, || {
                    d.receive_some(out, cx) == Ok(true)
                });
                if let Some(mut s) = d.sock.take() {
                    let _ = cx.deregister(&mut s);
                }
            }
        }
        self.remove_socket_file(cx);
    }

    fn done(&mut self, cx: &mut Ctx) {
        self.remove_socket_file(cx);
    }
}

impl UnixIn {
    /// Removes the socket file if it is still the one we created (an operator or a second
    /// instance may have put another there since).
    fn remove_socket_file(&mut self, cx: &mut Ctx) {
        let Some(ours) = self.created.take() else {
            return;
        };
        if dev_ino(&self.path) == Some(ours)
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            slog::warn!(cx.logger(), "cannot remove the socket file";
                "path" => %self.path.display(), "error" => %e);
        }
    }
}
