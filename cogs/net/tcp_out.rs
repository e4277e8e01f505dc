//! `tcp_out`: records forwarded over TCP, reconnecting and buffering while the peer is away.

use crate::kit::disk_buffer::{BufferSettings, DiskOptions};
use crate::kit::forward::{
    Forward, ForwardOptions, ForwardSettings, Framing, Target, check_address,
};
use crate::kit::tls::{self, TlsSettings};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::Record;
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

/// Forwards each record to a TCP peer (a syslog or line collector), newline-terminated or
/// octet-counted (RFC 6587 `LEN SP MSG`).
///
/// The connection is made without blocking the loop (non-blocking connect, abandoned after
/// `connect_timeout`); a host name is resolved on a worker thread at every (re)connection,
/// so a changed DNS record is picked up, and the addresses are tried in turn. When the
/// peer is down or slow, records wait in a buffer of `buffer_bytes`; a full buffer pauses
/// the supplies (no record is dropped) until it is back below half. A refused connection
/// (the collector's host answers but nothing listens yet: it is restarting) is tried again
/// every `reconnect_refused`, without backing off, so the stream resumes within that
/// delay of the collector listening again; other failures (timeouts, unreachable hosts,
/// failed lookups) back off exponentially from `reconnect_initial` to `reconnect_max`
/// (2 s by default: a collector back from any outage is reached within about 2 s plus a
/// connection attempt, at the cost of one attempt per 2 s while it is away), with
/// jitter. Batches are written with one `writev` per readiness.
///
/// **Guarantee.** A record counts as delivered (it is acknowledged, and the checkpoint of
/// a `tail` or `spool` before it moves past it) only once the peer's TCP stack has
/// acknowledged every byte of it: the drain reads what its socket still holds
/// unacknowledged (`SIOCOUTQ`) after each round of writes and every 20 ms while some
/// bytes wait. When the connection is lost (the collector stops, resets or dies), every
/// record not acknowledged is sent again on the next connection, whole, in order, before
/// newer ones: the megabytes a socket's send queue holds are not lost. Duplicates are
/// possible (what the peer had received but not yet acknowledged when the connection
/// broke; a record cut by the loss arrives as a truncated fragment, then whole). What
/// the collector's kernel acknowledged but its process never read (a crash, or a close
/// without reading) is lost: syslog over TCP has no application acknowledgement, so only
/// a collector that reads what it holds before closing (deadbeat's `tcp_in` on a
/// graceful stop) closes that gap. The bytes awaiting acknowledgement count in
/// `buffer_bytes`.
///
/// **TLS** (syslog over TLS, RFC 5425): with a `tls` table the connection is TLS
/// (rustls). The server's certificate is verified against `tls.ca` (or the system store,
/// `/etc/ssl/certs/ca-certificates.crt`, when no `ca` is given) and must name the host of
/// `address`, or `tls.server_name` when set (also sent as SNI); `tls.verify = false`
/// takes any certificate (tests only). `tls.cert` and `tls.key` present a client
/// certificate (mutual TLS). Records wait for the handshake, which `connect_timeout`
/// bounds too; a failed handshake (unknown CA, expired certificate, wrong name) is logged
/// with rustls' reason, counted as an error, and retried with the backoff of a failed
/// connection. Acknowledgement stays at the TCP level: a record is acknowledged once the
/// peer's TCP stack acknowledged the whole TLS record carrying its end.
///
/// At shutdown the drain keeps sending (and reconnecting) until the peer acknowledged
/// everything, for up to `drain_timeout`; what is left then is logged as unsent (count
/// and bytes) and not acknowledged, so a supply with a checkpoint reads it again on the
/// next run.
///
/// **Disk buffer.** With `buffer = "disk"`, records beyond `buffer_bytes`, and every
/// record while the peer is not connected, go to segment files in `buffer_dir` (default:
/// `buffer-TRAIN-COG` under `[state] dir`) instead of pausing the supplies; what the memory
/// buffer holds joins them there, ahead of them, when the connection is lost, at the first
/// spill and at the stop. They are acknowledged once synced to disk, survive a restart or
/// a kill -9 (a torn last record is cut and logged), and are sent in order, before newer
/// records, once the peer is back. A stop with the peer away does not wait for it
/// (`drain_timeout`): its records stay on disk for the next run; at the end of
/// `drain_timeout` what the peer did not acknowledge stays there too (the connection is
/// reset, so that the peer does not also get it). `max_bytes` bounds the files; at that bound
/// `when_full = "block"` pauses the supplies, `"drop_oldest"` deletes the oldest segment
/// (its records counted as dropped and logged). See `kit::disk_buffer` and the guide.
///
/// ```toml
/// [[train.cog]]
/// type = "tcp_out"
/// address = "collector.example:514"
/// framing = "octet_counting"     # newline | octet_counting
/// format = "raw"                 # raw | json | template
/// buffer_bytes = "8MiB"
/// reconnect_initial = "100ms"
/// reconnect_max = "2s"
/// reconnect_refused = "250ms"
/// connect_timeout = "5s"
/// drain_timeout = "30s"
/// # tls = { ca = "ca.pem", cert = "client.pem", key = "client.key", server_name = "collector.example" }
/// buffer = "memory"             # memory | disk
/// buffer_dir = "/var/spool/deadbeat/fwd"  # buffer = "disk": default under [state] dir
/// max_bytes = "1GiB"             # the most the disk buffer holds
/// when_full = "block"            # block | drop_oldest
/// ```
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "tcp_out",
    kind: CogKind::Drain,
    summary: "forwards records over TCP (newline or octet counting); buffers, backpressures and reconnects",
    params: TcpOutSettings::PARAMS,
    fields: &[],
    build,
};

crate::choice! {
    /// How records are delimited on a stream.
    pub enum StreamFraming { Newline = "newline", OctetCounting = "octet_counting" }
}

impl From<StreamFraming> for Framing {
    fn from(f: StreamFraming) -> Framing {
        match f {
            StreamFraming::Newline => Framing::Newline,
            StreamFraming::OctetCounting => Framing::OctetCounting,
        }
    }
}

crate::settings! {
    /// Settings of `tcp_out`.
    pub struct TcpOutSettings {
        /// "host:port"; a host name is resolved (off the loop) at every connection
        #[setting(required)]
        address: String,
        /// newline: each record ends with \n; octet_counting: RFC 6587 `LEN SP MSG`
        framing: StreamFraming = "newline",
        /// Rendering, buffering and reconnection.
        #[setting(flatten)]
        forward: ForwardSettings,
        /// TLS: { ca (default: the system store), verify = true, server_name (default: the host of address), cert and key (client certificate, mutual TLS) }
        tls: Option<TlsSettings>,
        /// The disk buffer.
        #[setting(flatten)]
        buffer: BufferSettings,
    }
}

/// A `tcp_out` drain made from its settings, without a configuration file.
pub fn from_settings(s: &TcpOutSettings) -> Result<Forward, SettingError> {
    check_address(&s.address).map_err(|m| SettingError::new("address", m))?;
    let opts = ForwardOptions::new(&s.forward, s.framing.into())?;
    let tls = tls::client(s.tls.as_ref(), &s.address)?;
    let disk = DiskOptions::new(&s.buffer)?;
    Ok(
        Forward::new("tcp_out", Target::Tcp(s.address.clone()), opts)
            .with_tls(tls)
            .with_disk(disk),
    )
}

fn build(p: &CogParams<'_>, cx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let mut s: TcpOutSettings = p.settings()?;
    if let Some(t) = s.tls.as_mut() {
        t.resolve(cx.base_dir);
    }
    DiskOptions::resolve(&mut s.buffer, p, cx);
    Ok(Box::new(from_settings(&s).map_err(|e| p.setting_error(e))?))
}
