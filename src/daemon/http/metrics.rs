//! `GET /metrics`: the cogs' counters and the process's resources in the Prometheus text
//! exposition format (version 0.0.4).

use std::fmt::Write;

use crate::engine::control::Inspection;
use crate::engine::escapement::{CogState, ServiceCx};
use crate::engine::train::TrainMetrics;

use super::Server;

/// Appends `s` as a label value: backslash, double quote and line feed escaped.
fn label(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// What `/proc/self` tells of the process: CPU seconds, resident and virtual bytes, start
/// time (seconds since the epoch), open descriptors.
#[derive(Debug, Default)]
struct ProcessStats {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    start_time: Option<f64>,
    open_fds: Option<u64>,
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf reads a system setting; it takes no pointers and has no
    // preconditions.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|v| *v > 0)
}

fn process_stats() -> ProcessStats {
    let mut st = ProcessStats::default();
    let ticks = sysconf(libc::_SC_CLK_TCK);
    let page = sysconf(libc::_SC_PAGESIZE);
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        // The command name may hold spaces and parentheses: fields follow the last ')'.
        && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
    {
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] is field 3 (state): utime is field 14, stime 15, starttime 22, vsize 23,
        // rss 24.
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        if let (Some(u), Some(s), Some(t)) = (field(14), field(15), ticks) {
            st.cpu_seconds = Some((u + s) as f64 / t as f64);
        }
        st.virtual_bytes = field(23);
        if let (Some(r), Some(p)) = (field(24), page) {
            st.resident_bytes = Some(r * p);
        }
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        if let (Some(start), Some(t), Some(boot)) = (field(22), ticks, boot) {
            st.start_time = Some(boot as f64 + start as f64 / t as f64);
        }
    }
    st.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    st
}

/// Reads one counter of a cog.
type Get = fn(&crate::engine::train::CogMetrics) -> f64;

/// The exposition.
pub(super) fn render(server: &Server, cx: &ServiceCx<'_>) -> String {
    let metrics = cx.metrics();
    let cogs: usize = metrics.iter().map(|t| t.cogs.len()).sum();
    let mut o = String::with_capacity(2048 + 6 * 100 * cogs);
    header(
        &mut o,
        "deadbeat_info",
        "gauge",
        "The running deadbeat's version.",
    );
    o.push_str("deadbeat_info{version=");
    label(&mut o, env!("CARGO_PKG_VERSION"));
    o.push_str("} 1\n");
    header(
        &mut o,
        "deadbeat_uptime_seconds",
        "gauge",
        "Seconds since the control server started.",
    );
    let _ = writeln!(
        o,
        "deadbeat_uptime_seconds {:.3}",
        cx.now().duration_since(server.started).as_secs_f64()
    );
    let counters: [(&str, &str, Get); 5] = [
        (
            "deadbeat_cog_in_total",
            "Data handed to the cog by the cog before it.",
            |c| c.data_in as f64,
        ),
        ("deadbeat_cog_out_total", "Data the cog emitted.", |c| {
            c.data_out as f64
        }),
        (
            "deadbeat_cog_dropped_total",
            "Data the cog dropped on purpose.",
            |c| c.dropped as f64,
        ),
        (
            "deadbeat_cog_errors_total",
            "Data the cog failed on.",
            |c| c.errors as f64,
        ),
        (
            "deadbeat_cog_busy_seconds_total",
            "Seconds spent in the cog's callbacks that carry data.",
            |c| c.busy.as_secs_f64(),
        ),
    ];
    let mut labels = Vec::with_capacity(cogs);
    for t in &metrics {
        for c in &t.cogs {
            let mut l = String::from("{train=");
            label(&mut l, &t.name);
            l.push_str(",cog=");
            label(&mut l, &c.id);
            l.push_str(",type=");
            label(&mut l, &c.name);
            l.push('}');
            labels.push(l);
        }
    }
    for (name, help, get) in counters {
        header(&mut o, name, "counter", help);
        let mut i = 0;
        for t in &metrics {
            for c in &t.cogs {
                let v = get(c);
                if name.ends_with("_seconds_total") {
                    let _ = writeln!(o, "{name}{} {v:.6}", labels[i]);
                } else {
                    let _ = writeln!(o, "{name}{} {v}", labels[i]);
                }
                i += 1;
            }
        }
    }
    header(
        &mut o,
        "deadbeat_cog_paused",
        "gauge",
        "1 while the cog (a supply) is paused, by backpressure or by request.",
    );
    let mut i = 0;
    for (t, train) in metrics.iter().enumerate() {
        for c in 0..train.cogs.len() {
            let paused = cx.cog_state(t, c) == Some(CogState::Paused);
            let _ = writeln!(o, "deadbeat_cog_paused{} {}", labels[i], u8::from(paused));
            i += 1;
        }
    }
    inspections(&mut o, cx, &metrics, &labels);
    header(
        &mut o,
        "deadbeat_http_connections",
        "gauge",
        "Open connections to the control server.",
    );
    let _ = writeln!(o, "deadbeat_http_connections {}", server.open);
    header(
        &mut o,
        "deadbeat_http_requests_total",
        "counter",
        "Requests the control server answered.",
    );
    let _ = writeln!(o, "deadbeat_http_requests_total {}", server.requests);
    header(
        &mut o,
        "deadbeat_http_refused_total",
        "counter",
        "Connections closed at once because max_connections were open.",
    );
    let _ = writeln!(o, "deadbeat_http_refused_total {}", server.refused);

    let p = process_stats();
    if let Some(v) = p.cpu_seconds {
        header(
            &mut o,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent in seconds.",
        );
        let _ = writeln!(o, "process_cpu_seconds_total {v:.2}");
    }
    if let Some(v) = p.resident_bytes {
        header(
            &mut o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(o, "process_resident_memory_bytes {v}");
    }
    if let Some(v) = p.virtual_bytes {
        header(
            &mut o,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
        );
        let _ = writeln!(o, "process_virtual_memory_bytes {v}");
    }
    if let Some(v) = p.start_time {
        header(
            &mut o,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        );
        let _ = writeln!(o, "process_start_time_seconds {v:.2}");
    }
    if let Some(v) = p.open_fds {
        header(
            &mut o,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        let _ = writeln!(o, "process_open_fds {v}");
    }
    o
}

/// What cogs report of themselves ([`Inspection`]): sources' offsets, keys held, buffers;
/// a family is written only when some cog reports it. `labels` are the cogs' label sets,
/// in order.
fn inspections(o: &mut String, cx: &ServiceCx<'_>, metrics: &[TrainMetrics], labels: &[String]) {
    let mut all: Vec<(usize, Inspection)> = Vec::new();
    let mut i = 0;
    for (t, train) in metrics.iter().enumerate() {
        for c in 0..train.cogs.len() {
            let ins = cx.inspect(t, c);
            if !ins.is_empty() {
                all.push((i, ins));
            }
            i += 1;
        }
    }
    // `{train=..,cog=..,type=..}` with one more label.
    let with = |l: &str, name: &str, value: &str| {
        let mut s = l[..l.len() - 1].to_string();
        s.push(',');
        s.push_str(name);
        s.push('=');
        label(&mut s, value);
        s.push('}');
        s
    };
    let sources = || {
        all.iter()
            .flat_map(|(i, ins)| ins.sources.iter().map(move |s| (*i, s)))
    };
    if sources().next().is_some() {
        header(
            o,
            "deadbeat_source_read_offset_bytes",
            "gauge",
            "Byte offset reading has reached in a source of a supply.",
        );
        for (i, s) in sources() {
            let l = with(&labels[i], "source", &s.path);
            let _ = writeln!(o, "deadbeat_source_read_offset_bytes{l} {}", s.read);
        }
    }
    if sources().any(|(_, s)| s.acknowledged.is_some()) {
        header(
            o,
            "deadbeat_source_acknowledged_offset_bytes",
            "gauge",
            "Byte offset up to which everything read from a source was acknowledged.",
        );
        for (i, s) in sources() {
            if let Some(a) = s.acknowledged {
                let l = with(&labels[i], "source", &s.path);
                let _ = writeln!(o, "deadbeat_source_acknowledged_offset_bytes{l} {a}");
            }
        }
    }
    let keyed = || all.iter().filter_map(|(i, ins)| ins.keys.map(|k| (*i, k)));
    if keyed().next().is_some() {
        header(
            o,
            "deadbeat_cog_keys",
            "gauge",
            "Keys a stateful cog holds.",
        );
        for (i, (held, _)) in keyed() {
            let _ = writeln!(o, "deadbeat_cog_keys{} {held}", labels[i]);
        }
    }
    if keyed().any(|(_, (_, l))| l.is_some()) {
        header(
            o,
            "deadbeat_cog_max_keys",
            "gauge",
            "The bound on the keys a stateful cog holds.",
        );
        for (i, (_, limit)) in keyed() {
            if let Some(limit) = limit {
                let _ = writeln!(o, "deadbeat_cog_max_keys{} {limit}", labels[i]);
            }
        }
    }
    let buffers = || {
        all.iter()
            .flat_map(|(i, ins)| ins.buffers.iter().map(move |b| (*i, b)))
    };
    if buffers().next().is_some() {
        header(
            o,
            "deadbeat_cog_buffer_fill",
            "gauge",
            "What a buffer of a cog holds (records, lines, files or bytes, by buffer).",
        );
        for (i, b) in buffers() {
            let l = with(&labels[i], "buffer", b.name);
            let _ = writeln!(o, "deadbeat_cog_buffer_fill{l} {}", b.fill);
        }
    }
    if buffers().any(|(_, b)| b.limit.is_some()) {
        header(
            o,
            "deadbeat_cog_buffer_limit",
            "gauge",
            "The bound on a buffer of a cog.",
        );
        for (i, b) in buffers() {
            if let Some(limit) = b.limit {
                let l = with(&labels[i], "buffer", b.name);
                let _ = writeln!(o, "deadbeat_cog_buffer_limit{l} {limit}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        label(&mut s, "a\"b\\c\nd");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\"");
    }

    #[test]
    fn the_process_is_seen() {
        let p = process_stats();
        assert!(p.resident_bytes.is_some_and(|r| r > 0), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(p.cpu_seconds.is_some(), "{p:?}");
    }
}
