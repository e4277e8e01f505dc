//! `deadbeat graph CONFIG [--format dot|mermaid]`: the trains of a configuration, their
//! cogs in order, and the edges between trains, as Graphviz DOT or a Mermaid flowchart.
//!
//! An edge is drawn for every setting that names a train: the `train` key (`route`,
//! `tee`) and every value written `"train:NAME"` (`on_error`, `on_late`, `on_excess`, and
//! the same form in cogs of one's own), found at any depth of a cog's table. A feed the
//! builder recorded that no such setting explains (a cog of one's own naming a train some
//! other way) is still drawn, from the train's first cog, labelled `sends`.

use std::fmt::Write as _;

use crate::cogs::Registry;
use crate::daemon::config::{CogConfig, Config};
use crate::kit::CogKind;
use crate::schema::{Node, NodeValue};

/// What a graph is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Graphviz DOT (`dot -Tsvg`).
    Dot,
    /// A Mermaid `flowchart LR`.
    Mermaid,
}

impl Format {
    /// `dot` or `mermaid`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "dot" => Some(Format::Dot),
            "mermaid" => Some(Format::Mermaid),
            _ => None,
        }
    }
}

/// One cog as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphCog {
    /// Its id (`name`, or `TYPE#N`).
    pub id: String,
    /// Its `type`.
    pub ty: String,
    /// Its role; `None` for a type the registry does not know.
    pub kind: Option<CogKind>,
}

/// One train as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphTrain {
    /// Its name.
    pub name: String,
    /// Its cogs, in order.
    pub cogs: Vec<GraphCog>,
}

/// How records travel along an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// `route`: the records themselves.
    Route,
    /// `tee`: copies.
    Tee,
    /// `on_error = "train:NAME"`: records a cog failed on (dead letters).
    Error,
    /// Any other setting naming a train (`on_late`, `on_excess`, ...).
    Other,
}

/// Records sent from a cog of one train to the head of another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The sending train's index.
    pub from: usize,
    /// The sending cog's index in its train.
    pub cog: usize,
    /// The receiving train's index.
    pub to: usize,
    /// What the edge is labelled with: the setting (`route`, `on_error`, `on_late`, ...),
    /// and a `route` or `tee` condition when there is one.
    pub label: String,
    /// How records travel along it.
    pub kind: EdgeKind,
}

/// The trains of a configuration and the edges between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// The trains, in file order.
    pub trains: Vec<GraphTrain>,
    /// The edges, in file order of their senders.
    pub edges: Vec<Edge>,
}

/// Conditions longer than this are cut in edge labels, which would otherwise dwarf the
/// drawing.
const MAX_CONDITION: usize = 40;

impl Graph {
    /// The graph of `config`; `feeds` are the `(from, to)` train pairs its build recorded
    /// (`Built::feeds`), so that a sender no setting explains is drawn too.
    pub fn of(config: &Config, registry: &Registry, feeds: &[(usize, usize)]) -> Graph {
        let trains: Vec<GraphTrain> = config
            .trains
            .iter()
            .map(|t| GraphTrain {
                name: t.name.clone(),
                cogs: t
                    .cogs
                    .iter()
                    .map(|c| GraphCog {
                        id: c.id.clone(),
                        ty: c.ty.clone(),
                        kind: registry.get(&c.ty).map(|d| d.kind),
                    })
                    .collect(),
            })
            .collect();
        let names: Vec<&str> = trains.iter().map(|t| t.name.as_str()).collect();
        let mut edges = Vec::new();
        for (ti, t) in config.trains.iter().enumerate() {
            for (ci, c) in t.cogs.iter().enumerate() {
                for (to, label, kind) in sends(c, &names) {
                    let edge = Edge {
                        from: ti,
                        cog: ci,
                        to,
                        label,
                        kind,
                    };
                    if !edges.contains(&edge) {
                        edges.push(edge);
                    }
                }
            }
        }
        for &(from, to) in feeds {
            if from < trains.len()
                && to < trains.len()
                && !edges.iter().any(|e| e.from == from && e.to == to)
            {
                edges.push(Edge {
                    from,
                    cog: 0,
                    to,
                    label: "sends".into(),
                    kind: EdgeKind::Other,
                });
            }
        }
        Graph { trains, edges }
    }

    /// The graph in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Dot => self.dot(),
            Format::Mermaid => self.mermaid(),
        }
    }

    /// Graphviz DOT: one cluster per train, its cogs left to right, edges between trains
    /// ending at the receiving train's cluster.
    pub fn dot(&self) -> String {
        let mut s = String::new();
        s.push_str("digraph deadbeat {\n");
        s.push_str("  rankdir=LR;\n  compound=true;\n  newrank=true;\n");
        s.push_str("  fontname=\"Helvetica\";\n");
        s.push_str(
            "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", \
             fillcolor=\"#f4f4f4\", color=\"#666666\"];\n",
        );
        s.push_str("  edge [fontname=\"Helvetica\", fontsize=10, color=\"#444444\"];\n");
        for (ti, t) in self.trains.iter().enumerate() {
            let _ = writeln!(s, "  subgraph cluster_{ti} {{");
            let _ = writeln!(s, "    label={};", dot_str(&format!("train {}", t.name)));
            s.push_str("    style=\"rounded\";\n    color=\"#999999\";\n");
            for (ci, c) in t.cogs.iter().enumerate() {
                let fill = match c.kind {
                    Some(CogKind::Supply) => "#d9f2d9",
                    Some(CogKind::Drain) => "#d6e6fa",
                    Some(CogKind::Transform) => "#f4f4f4",
                    None => "#fbe3e3",
                };
                let _ = writeln!(
                    s,
                    "    t{ti}c{ci} [label={}, fillcolor=\"{fill}\"];",
                    dot_str(&cog_label(c))
                );
            }
            for ci in 1..t.cogs.len() {
                let _ = writeln!(s, "    t{ti}c{} -> t{ti}c{ci};", ci - 1);
            }
            s.push_str("  }\n");
        }
        for e in &self.edges {
            // An empty train cannot be drawn to; the configuration refuses one anyway.
            if self.trains[e.to].cogs.is_empty() || self.trains[e.from].cogs.is_empty() {
                continue;
            }
            let style = match e.kind {
                EdgeKind::Route => "color=\"#1f5fa8\"",
                EdgeKind::Tee => "style=dashed, color=\"#1f5fa8\"",
                EdgeKind::Error => "style=dashed, color=\"#c0392b\", fontcolor=\"#c0392b\"",
                EdgeKind::Other => "style=dashed, color=\"#b9770e\", fontcolor=\"#b9770e\"",
            };
            let _ = writeln!(
                s,
                "  t{}c{} -> t{}c0 [label={}, lhead=cluster_{}, {style}];",
                e.from,
                e.cog,
                e.to,
                dot_str(&e.label),
                e.to
            );
        }
        s.push_str("}\n");
        s
    }

    /// A Mermaid `flowchart LR`: one subgraph per train (`tN`), its cogs (`tNcM`) in a
    /// chain; edges between trains end at the receiving subgraph.
    pub fn mermaid(&self) -> String {
        let mut s = String::from("flowchart LR\n");
        for (ti, t) in self.trains.iter().enumerate() {
            let _ = writeln!(
                s,
                "  subgraph t{ti}[{}]",
                mermaid_str(&format!("train {}", t.name))
            );
            s.push_str("    direction LR\n");
            for (ci, c) in t.cogs.iter().enumerate() {
                let label = mermaid_str(&cog_label(c));
                let (open, close, class) = match c.kind {
                    Some(CogKind::Supply) => ("([", "])", "supply"),
                    Some(CogKind::Drain) => ("[(", ")]", "drain"),
                    Some(CogKind::Transform) => ("[", "]", "transform"),
                    None => ("[", "]", "unknown"),
                };
                let _ = writeln!(s, "    t{ti}c{ci}{open}{label}{close}:::{class}");
            }
            for ci in 1..t.cogs.len() {
                let _ = writeln!(s, "    t{ti}c{} --> t{ti}c{ci}", ci - 1);
            }
            s.push_str("  end\n");
        }
        for e in &self.edges {
            if self.trains[e.from].cogs.is_empty() {
                continue;
            }
            let arrow = match e.kind {
                EdgeKind::Route => "-->",
                _ => "-.->",
            };
            let _ = writeln!(
                s,
                "  t{}c{} {arrow}|{}| t{}",
                e.from,
                e.cog,
                mermaid_str(&e.label),
                e.to
            );
        }
        s.push_str("  classDef supply fill:#d9f2d9,stroke:#4d8f4d\n");
        s.push_str("  classDef transform fill:#f4f4f4,stroke:#666666\n");
        s.push_str("  classDef drain fill:#d6e6fa,stroke:#1f5fa8\n");
        s.push_str("  classDef unknown fill:#fbe3e3,stroke:#c0392b\n");
        s
    }
}

/// The trains cog `c` sends records to, with the edge's label and kind: its `train` key
/// (`route`, `tee`) and every `"train:NAME"` value, at any depth.
fn sends(c: &CogConfig, names: &[&str]) -> Vec<(usize, String, EdgeKind)> {
    let mut out = Vec::new();
    let train_of = |name: &str| names.iter().position(|n| *n == name);
    for (k, n) in &c.entries {
        let key = k.get_ref().as_str();
        if key == "train"
            && let NodeValue::Str(v) = &n.value
            && let Some(to) = train_of(v)
        {
            let kind = match c.ty.as_str() {
                "route" => EdgeKind::Route,
                "tee" => EdgeKind::Tee,
                _ => EdgeKind::Other,
            };
            let mut label = c.ty.clone();
            if let Some(NodeValue::Str(when)) = c
                .entries
                .iter()
                .find(|(k, _)| k.get_ref() == "when")
                .map(|(_, n)| &n.value)
            {
                label.push_str(": ");
                label.push_str(&shorten(when));
            }
            out.push((to, label, kind));
            continue;
        }
        walk(n, key, &mut |path, v| {
            if let Some(to) = v.strip_prefix("train:").and_then(train_of) {
                let kind = if path == "on_error" {
                    EdgeKind::Error
                } else {
                    EdgeKind::Other
                };
                out.push((to, path.to_string(), kind));
            }
        });
    }
    out
}

/// Calls `f` with the dotted key path of every string in `n`.
fn walk(n: &Node, path: &str, f: &mut dyn FnMut(&str, &str)) {
    match &n.value {
        NodeValue::Str(s) => f(path, s),
        NodeValue::Array(items) => {
            for i in items {
                walk(i, path, f);
            }
        }
        NodeValue::Table(entries) => {
            for (k, v) in entries {
                walk(v, &format!("{path}.{}", k.get_ref()), f);
            }
        }
        _ => {}
    }
}

/// `s` cut to [`MAX_CONDITION`] characters, with an ellipsis when cut.
fn shorten(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_CONDITION {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(MAX_CONDITION - 1).collect();
    cut.push('…');
    cut
}

/// A cog's label: its id, and its type on a second line when the id is a name of its own.
fn cog_label(c: &GraphCog) -> String {
    let default_id =
        c.id.strip_prefix(c.ty.as_str())
            .is_some_and(|rest| rest.starts_with('#'));
    if default_id {
        c.id.clone()
    } else {
        format!("{}\n{}", c.id, c.ty)
    }
}

/// `s` as a DOT quoted string.
fn dot_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' | '\t' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out.push('"');
    out
}

/// `s` as a Mermaid quoted label: quotes and the characters Mermaid reads as markup are
/// written as entity codes, line breaks as `<br/>`.
fn mermaid_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '|' => out.push_str("#124;"),
            '\n' => out.push_str("<br/>"),
            '\r' | '\t' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(dot_str("a \"b\"\\\nc"), r#""a \"b\"\\\nc""#);
        assert_eq!(
            mermaid_str("x#1 \"y\" <a|b>\nz"),
            "\"x#35;1 #quot;y#quot; #lt;a#124;b#gt;<br/>z\""
        );
        assert_eq!(shorten(&"x".repeat(50)).chars().count(), MAX_CONDITION);
        assert_eq!(shorten(" short "), "short");
    }

    #[test]
    fn labels_name_the_type_of_named_cogs() {
        let c = |id: &str, ty: &str| GraphCog {
            id: id.into(),
            ty: ty.into(),
            kind: None,
        };
        assert_eq!(cog_label(&c("regex#2", "regex")), "regex#2");
        assert_eq!(cog_label(&c("parse", "regex")), "parse\nregex");
        assert_eq!(cog_label(&c("regexp#2", "regex")), "regexp#2\nregex");
    }
}
