//! `unix_out`: records forwarded to a Unix socket (stream or datagram).

use std::path::PathBuf;

use super::tcp_out::StreamFraming;
use crate::kit::disk_buffer::{BufferSettings, DiskOptions};
use crate::kit::forward::{Forward, ForwardOptions, ForwardSettings, Framing, Target};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::Record;
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

/// Forwards each record to a Unix socket: `mode = "stream"` writes newline-terminated (or
/// octet-counted) records to a connected stream socket; `mode = "datagram"` sends one
/// record per datagram, without a newline (as `/dev/log` expects).
///
/// Buffering, backpressure, reconnection, the shutdown deadline and the delivery
/// guarantee are those of `tcp_out`. In stream mode a record is acknowledged only once
/// the peer process has read it (the socket's unread bytes, `SIOCOUTQ`, are checked after
/// writes and every 20 ms while some wait); records not read when the connection is lost
/// are sent again on the next one, in order, so a collector that closes without reading
/// loses nothing (duplicates are possible). In datagram mode a record is acknowledged
/// once it is queued at the receiving socket. A full receiver (EAGAIN) waits for writability, ENOBUFS is retried after 10 ms,
/// a refused or absent socket is tried again every `reconnect_refused` (the collector is
/// restarting), other failures with backoff. A record larger than the
/// socket's largest datagram (EMSGSIZE) can never be sent: it is logged with its event id,
/// counted as an error and dropped (acknowledged). Datagrams go out in batches with
/// `sendmmsg`.
///
/// **Disk buffer.** With `buffer = "disk"`, records beyond `buffer_bytes`, and every
/// record while the peer is not connected, go to segment files in `buffer_dir` (default:
/// `buffer-TRAIN-COG` under `[state] dir`) instead of pausing the supplies; what the memory
/// buffer holds joins them there, ahead of them, when the connection is lost, at the first
/// spill and at the stop. They are acknowledged once synced to disk, survive a restart or
/// a kill -9 (a torn last record is cut and logged), and are sent in order, before newer
/// records, once the peer is back. A stop with the peer away does not wait for it
/// (`drain_timeout`): its records stay on disk for the next run; at the end of
/// `drain_timeout` what the peer did not read stays there too (a stream peer may still
/// read what its socket holds then: those records arrive twice). `max_bytes` bounds the
/// files; at that bound
/// `when_full = "block"` pauses the supplies, `"drop_oldest"` deletes the oldest segment
/// (its records counted as dropped and logged). See `kit::disk_buffer` and the guide.
///
/// ```toml
/// [[train.cog]]
/// type = "unix_out"
/// path = "/run/collector.sock"
/// mode = "datagram"              # stream | datagram
/// framing = "newline"            # stream only: newline | octet_counting
/// buffer_bytes = "8MiB"
/// reconnect_refused = "250ms"
/// buffer = "disk"               # memory | disk
/// max_bytes = "1GiB"             # the most the disk buffer holds
/// when_full = "block"            # block | drop_oldest
/// ```
///
/// From Rust: `unix_out::from_settings(&UnixOutSettings { path: "/run/collector.sock".into(), mode:
/// SocketMode::Datagram, ..Default::default() })`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "unix_out",
    kind: CogKind::Drain,
    summary: "forwards records to a Unix stream or datagram socket; buffers, backpressures and reconnects",
    params: UnixOutSettings::PARAMS,
    fields: &[],
    build,
};

crate::choice! {
    /// What kind of Unix socket `unix_out` connects to.
    pub enum SocketMode { Stream = "stream", Datagram = "datagram" }
}

crate::settings! {
    /// Settings of `unix_out`.
    pub struct UnixOutSettings {
        /// the socket to connect to
        #[setting(required)]
        path: PathBuf,
        /// stream: a connected byte stream; datagram: one record per datagram, no newline
        mode: SocketMode = "stream",
        /// stream mode: newline or RFC 6587 octet counting
        framing: StreamFraming = "newline",
        /// Rendering, buffering and reconnection.
        #[setting(flatten)]
        forward: ForwardSettings,
        /// The disk buffer.
        #[setting(flatten)]
        buffer: BufferSettings,
    }
}

const NO_FRAMING: &str = "datagrams carry one record each: no framing";

/// A `unix_out` drain made from its settings, without a configuration file (a relative
/// `path` is taken from the working directory).
pub fn from_settings(s: &UnixOutSettings) -> Result<Forward, SettingError> {
    if s.path.as_os_str().is_empty() {
        return Err(SettingError::new("path", "give the socket's path"));
    }
    let (target, framing) = match s.mode {
        SocketMode::Stream => (Target::UnixStream(s.path.clone()), s.framing.into()),
        SocketMode::Datagram => {
            if s.framing != StreamFraming::Newline {
                return Err(SettingError::new("framing", NO_FRAMING));
            }
            (Target::UnixDatagram(s.path.clone()), Framing::Datagram)
        }
    };
    let opts = ForwardOptions::new(&s.forward, framing)?;
    let disk = DiskOptions::new(&s.buffer)?;
    Ok(Forward::new("unix_out", target, opts).with_disk(disk))
}

fn build(p: &CogParams<'_>, bx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: UnixOutSettings = p.settings()?;
    DiskOptions::resolve(&mut s.buffer, p, bx);
    // Given at all, even as its default, `framing` says the writer expects a stream.
    if s.mode == SocketMode::Datagram && p.node("framing").is_some() {
        return Err(p.error("framing", NO_FRAMING));
    }
    if let Some(path) = s.path.to_str() {
        s.path = p.resolve(path);
    }
    Ok(Box::new(from_settings(&s).map_err(|e| p.setting_error(e))?))
}
