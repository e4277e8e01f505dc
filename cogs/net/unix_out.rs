//! `unix_out`: records forwarded to a Unix socket (stream or datagram).

use crate::kit::forward::{FORWARD_PARAMS, Forward, ForwardOptions, Framing, Target};
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::Record;
use crate::schema::{CogParams, ConfigError, Param, ParamType};

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
/// ```toml
/// [[train.cog]]
/// type = "unix_out"
/// path = "/run/collector.sock"
/// mode = "datagram"              # stream | datagram
/// framing = "newline"            # stream only: newline | octet_counting
/// buffer_bytes = "8MiB"
/// reconnect_refused = "250ms"
/// ```
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "unix_out",
    kind: CogKind::Drain,
    summary: "forwards records to a Unix stream or datagram socket; buffers, backpressures and reconnects",
    params: &PARAMS,
    fields: &[],
    build,
};

const PARAMS: [Param; 12] = [
    Param::req("path", ParamType::Path, "the socket to connect to"),
    Param::opt(
        "mode",
        ParamType::Choice(&["stream", "datagram"]),
        "stream",
        "stream: a connected byte stream; datagram: one record per datagram, no newline",
    ),
    Param::opt(
        "framing",
        ParamType::Choice(&["newline", "octet_counting"]),
        "newline",
        "stream mode: newline or RFC 6587 octet counting",
    ),
    FORWARD_PARAMS[0],
    FORWARD_PARAMS[1],
    FORWARD_PARAMS[2],
    FORWARD_PARAMS[3],
    FORWARD_PARAMS[4],
    FORWARD_PARAMS[5],
    FORWARD_PARAMS[6],
    FORWARD_PARAMS[7],
    FORWARD_PARAMS[8],
];

fn build(p: &CogParams<'_>, _: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let Some(path) = p.path("path")? else {
        return Err(p.error("path", "give the socket's path"));
    };
    let datagram = p.choice_or("mode", &["stream", "datagram"], "stream")? == "datagram";
    let framing = match p.choice_or("framing", &["newline", "octet_counting"], "newline")? {
        _ if datagram => {
            if p.node("framing").is_some() {
                return Err(p.error("framing", "datagrams carry one record each: no framing"));
            }
            Framing::Datagram
        }
        "octet_counting" => Framing::OctetCounting,
        _ => Framing::Newline,
    };
    let opts = ForwardOptions::from_params(p, framing)?;
    let target = if datagram {
        Target::UnixDatagram(path)
    } else {
        Target::UnixStream(path)
    };
    Ok(Box::new(Forward::new("unix_out", target, opts)))
}
