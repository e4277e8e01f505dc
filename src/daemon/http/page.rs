//! `GET /`: the live page, its script and style, embedded in the binary; and `GET /graph`,
//! the trains and the edges between them as JSON, which the page draws.
//!
//! The page fetches nothing but `/graph` once and `/status` every second from the same
//! origin; a Content-Security-Policy forbids everything else (no inline script, no other
//! host), and the script writes every value through `textContent`, never as markup.

use std::fmt::Write as _;

use crate::daemon::graph::{EdgeKind, Graph};
use crate::engine::escapement::ServiceCx;
use crate::kit::CogKind;

use super::Server;
use super::conn;
use super::status::json_str;

const INDEX: &str = include_str!("page/index.html");
const APP: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

/// Headers of every page resource: the page may load only its own script, style and
/// data, may not be framed, and its types are not sniffed.
const PAGE_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'\r\n\
     X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n";

impl Server {
    /// Sets the trains and edges `GET /graph` answers with (the daemon passes the graph
    /// of its configuration); without it `/graph` lists the running trains and no edges.
    pub fn set_graph(&mut self, graph: &Graph) {
        self.graph = Some(graph_json(graph));
    }
}

/// Whether `resource` (the first path segment) is one [`answer`] serves.
pub(super) fn serves(resource: &[&str]) -> bool {
    matches!(resource, [""] | ["app.js"] | ["style.css"] | ["graph"])
}

/// Answers a request for one of the resources of [`serves`].
pub(super) fn answer(
    server: &Server,
    resource: &str,
    method: &str,
    close: bool,
    out: &mut Vec<u8>,
    cx: &ServiceCx<'_>,
) {
    if method != "GET" {
        return conn::respond_error_allow(out, "GET", close);
    }
    let (ty, body): (&str, std::borrow::Cow<'_, str>) = match resource {
        "" => ("text/html; charset=utf-8", INDEX.into()),
        "app.js" => ("text/javascript; charset=utf-8", APP.into()),
        "style.css" => ("text/css; charset=utf-8", STYLE.into()),
        _ => (
            "application/json",
            match &server.graph {
                Some(g) => g.as_str().into(),
                None => running_graph(cx).into(),
            },
        ),
    };
    conn::respond(out, 200, ty, body.as_bytes(), close, PAGE_HEADERS);
}

fn kind_str(kind: Option<CogKind>) -> Option<&'static str> {
    kind.map(|k| match k {
        CogKind::Supply => "supply",
        CogKind::Transform => "transform",
        CogKind::Drain => "drain",
    })
}

/// `{"trains":[{"name","cogs":[{"name","type","kind"}]}],"edges":[{"from","cog","to",
/// "label","kind"}]}`: cogs named by id as in `/status`, trains and cogs by index in edges.
fn graph_json(g: &Graph) -> String {
    let mut o = String::from("{\"trains\":[");
    for (ti, t) in g.trains.iter().enumerate() {
        if ti > 0 {
            o.push(',');
        }
        o.push_str("{\"name\":");
        json_str(&mut o, &t.name);
        o.push_str(",\"cogs\":[");
        for (ci, c) in t.cogs.iter().enumerate() {
            if ci > 0 {
                o.push(',');
            }
            o.push_str("{\"name\":");
            json_str(&mut o, &c.id);
            o.push_str(",\"type\":");
            json_str(&mut o, &c.ty);
            o.push_str(",\"kind\":");
            match kind_str(c.kind) {
                Some(k) => json_str(&mut o, k),
                None => o.push_str("null"),
            }
            o.push('}');
        }
        o.push_str("]}");
    }
    o.push_str("],\"edges\":[");
    for (i, e) in g.edges.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let _ = write!(
            o,
            "{{\"from\":{},\"cog\":{},\"to\":{},\"label\":",
            e.from, e.cog, e.to
        );
        json_str(&mut o, &e.label);
        o.push_str(",\"kind\":");
        json_str(
            &mut o,
            match e.kind {
                EdgeKind::Route => "route",
                EdgeKind::Tee => "tee",
                EdgeKind::Error => "error",
                EdgeKind::Other => "other",
            },
        );
        o.push('}');
    }
    o.push_str("]}\n");
    o
}

/// The graph of the running trains, for a server given none: supplies marked, no edges.
fn running_graph(cx: &ServiceCx<'_>) -> String {
    let metrics = cx.metrics();
    let g = Graph {
        trains: metrics
            .iter()
            .enumerate()
            .map(|(t, m)| crate::daemon::graph::GraphTrain {
                name: m.name.clone(),
                cogs: m
                    .cogs
                    .iter()
                    .enumerate()
                    .map(|(c, cog)| crate::daemon::graph::GraphCog {
                        id: cog.id.clone(),
                        ty: cog.name.clone(),
                        kind: cx.is_supply(t, c).then_some(CogKind::Supply),
                    })
                    .collect(),
            })
            .collect(),
        edges: Vec::new(),
    };
    graph_json(&g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::graph::{Edge, GraphCog, GraphTrain};

    #[test]
    fn the_graph_is_json_with_names_escaped() {
        let g = Graph {
            trains: vec![
                GraphTrain {
                    name: "a</script>".into(),
                    cogs: vec![GraphCog {
                        id: "in\"1".into(),
                        ty: "stdin".into(),
                        kind: Some(CogKind::Supply),
                    }],
                },
                GraphTrain {
                    name: "b".into(),
                    cogs: vec![GraphCog {
                        id: "x#1".into(),
                        ty: "mine".into(),
                        kind: None,
                    }],
                },
            ],
            edges: vec![Edge {
                from: 0,
                cog: 0,
                to: 1,
                label: "on_error".into(),
                kind: EdgeKind::Error,
            }],
        };
        assert_eq!(
            graph_json(&g),
            "{\"trains\":[{\"name\":\"a\\u003c/script>\",\"cogs\":[{\"name\":\"in\\\"1\",\
             \"type\":\"stdin\",\"kind\":\"supply\"}]},{\"name\":\"b\",\"cogs\":[{\"name\":\
             \"x#1\",\"type\":\"mine\",\"kind\":null}]}],\"edges\":[{\"from\":0,\"cog\":0,\
             \"to\":1,\"label\":\"on_error\",\"kind\":\"error\"}]}\n"
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for text in [INDEX, APP, STYLE] {
            // The SVG namespace is a name, not an address anything is fetched from.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for bad in [
                "http://",
                "https://",
                "//cdn",
                "innerHTML",
                "outerHTML",
                "eval(",
            ] {
                assert!(!text.contains(bad), "{bad:?} in an embedded page file");
            }
        }
        assert!(
            !INDEX.contains("<script>"),
            "no inline script: the CSP forbids it"
        );
    }
}
