//! `GET /status`: the daemon, its trains and cogs, counters and rates, as JSON.

use std::fmt::Write;

use crate::engine::control::Inspection;
use crate::engine::escapement::{CogState, ServiceCx};

use super::Server;

/// Appends `s` as a JSON string: quotes, backslashes and control characters escaped.
pub(super) fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // `<` escaped too, so the text can never close a script element it lands in.
            c if (c as u32) < 0x20 || c == '<' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A rate or duration as a JSON number, with three decimals.
fn num(out: &mut String, x: f64) {
    if x.is_finite() {
        let _ = write!(out, "{x:.3}");
    } else {
        out.push('0');
    }
}

/// The status document.
pub(super) fn render(server: &Server, cx: &ServiceCx<'_>) -> String {
    let now = cx.now();
    let metrics = cx.metrics();
    let mut o = String::with_capacity(1024 + 256 * metrics.len());
    o.push_str("{\"version\":");
    json_str(&mut o, env!("CARGO_PKG_VERSION"));
    let _ = write!(o, ",\"pid\":{}", std::process::id());
    o.push_str(",\"uptime_s\":");
    num(&mut o, now.duration_since(server.started).as_secs_f64());
    o.push_str(",\"started_unix\":");
    let started = server
        .started_wall
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    num(&mut o, started);
    o.push_str(",\"config\":");
    json_str(&mut o, &server.config_path);
    let base = server.rate_base();
    let span = base.map_or(0.0, |b| now.duration_since(b.at).as_secs_f64());
    o.push_str(",\"rate_window_s\":");
    num(&mut o, span);
    let _ = write!(
        o,
        ",\"http\":{{\"connections\":{},\"requests\":{},\"refused\":{}}}",
        server.open, server.requests, server.refused
    );
    o.push_str(",\"trains\":[");
    let mut flat = 0usize;
    for (t, train) in metrics.iter().enumerate() {
        if t > 0 {
            o.push(',');
        }
        let states: Vec<CogState> = (0..train.cogs.len())
            .map(|c| cx.cog_state(t, c).unwrap_or(CogState::Finished))
            .collect();
        let train_state = if states.iter().all(|s| *s == CogState::Finished) {
            CogState::Finished
        } else if states
            .iter()
            .any(|s| matches!(s, CogState::Finishing | CogState::Finished))
        {
            CogState::Finishing
        } else if states.contains(&CogState::Paused) {
            CogState::Paused
        } else {
            CogState::Running
        };
        o.push_str("{\"name\":");
        json_str(&mut o, &train.name);
        o.push_str(",\"state\":");
        json_str(&mut o, train_state.as_str());
        o.push_str(",\"cogs\":[");
        for (c, cog) in train.cogs.iter().enumerate() {
            if c > 0 {
                o.push(',');
            }
            o.push_str("{\"name\":");
            json_str(&mut o, &cog.id);
            o.push_str(",\"type\":");
            json_str(&mut o, &cog.name);
            o.push_str(",\"state\":");
            json_str(&mut o, states[c].as_str());
            let _ = write!(
                o,
                ",\"supply\":{},\"held\":{},\"in\":{},\"out\":{},\"dropped\":{},\"errors\":{},\"busy_s\":",
                cx.is_supply(t, c),
                cx.is_held(t, c),
                cog.data_in,
                cog.data_out,
                cog.dropped,
                cog.errors
            );
            num(&mut o, cog.busy.as_secs_f64());
            let (b_in, b_out) = base
                .and_then(|b| b.counts.get(flat).copied())
                .unwrap_or((cog.data_in, cog.data_out));
            let rate = |now: u64, then: u64| {
                if span > 0.0 {
                    now.saturating_sub(then) as f64 / span
                } else {
                    0.0
                }
            };
            o.push_str(",\"rate_in\":");
            num(&mut o, rate(cog.data_in, b_in));
            o.push_str(",\"rate_out\":");
            num(&mut o, rate(cog.data_out, b_out));
            inspection(&mut o, &cx.inspect(t, c));
            o.push('}');
            flat += 1;
        }
        o.push_str("]}");
    }
    o.push_str("]}\n");
    o
}

/// What a cog reports of itself ([`Inspection`]), as fields of its object: `sources`
/// (with `sources_omitted` when some were left out), `keys` and `max_keys`, `buffers`.
/// Nothing when it reports nothing.
fn inspection(o: &mut String, ins: &Inspection) {
    let opt = |o: &mut String, v: Option<u64>| match v {
        Some(v) => {
            let _ = write!(o, "{v}");
        }
        None => o.push_str("null"),
    };
    if !ins.sources.is_empty() || ins.sources_omitted > 0 {
        o.push_str(",\"sources\":[");
        for (i, s) in ins.sources.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push_str("{\"path\":");
            json_str(o, &s.path);
            let _ = write!(o, ",\"read\":{},\"acknowledged\":", s.read);
            opt(o, s.acknowledged);
            o.push('}');
        }
        o.push(']');
        if ins.sources_omitted > 0 {
            let _ = write!(o, ",\"sources_omitted\":{}", ins.sources_omitted);
        }
    }
    if let Some((held, limit)) = ins.keys {
        let _ = write!(o, ",\"keys\":{held},\"max_keys\":");
        opt(o, limit);
    }
    if !ins.buffers.is_empty() {
        o.push_str(",\"buffers\":[");
        for (i, b) in ins.buffers.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push_str("{\"name\":");
            json_str(o, b.name);
            let _ = write!(o, ",\"fill\":{},\"limit\":", b.fill);
            opt(o, b.limit);
            o.push('}');
        }
        o.push(']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}</script>é");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001\\u003c/script>é\"");
    }

    #[test]
    fn inspections_render_as_fields() {
        let mut o = String::new();
        inspection(&mut o, &Inspection::default());
        assert_eq!(o, "");
        let mut ins = Inspection::default();
        ins.source("/a\"b", 10, Some(4));
        ins.source("/c", 3, None);
        ins.keys(7, None);
        ins.buffer("unacknowledged", 6, Some(100));
        inspection(&mut o, &ins);
        assert_eq!(
            o,
            ",\"sources\":[{\"path\":\"/a\\\"b\",\"read\":10,\"acknowledged\":4},\
             {\"path\":\"/c\",\"read\":3,\"acknowledged\":null}],\"keys\":7,\"max_keys\":null,\
             \"buffers\":[{\"name\":\"unacknowledged\",\"fill\":6,\"limit\":100}]"
        );
    }
}
