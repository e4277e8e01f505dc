//! `deadbeat graph`: every train, cog and edge between trains, as DOT that graphviz renders
//! and as a Mermaid flowchart; a bad configuration gets the errors of `check`.

use super::*;

/// Five trains reached from `main` through every kind of setting that names a train:
/// `on_error`, `route` (with a condition), `on_excess`, `tee`, and `on_late` from a
/// train that is itself reached.
const MULTI: &str = r#"
[[train]]
name = "main"
  [[train.cog]]
  type = "stdin"
  [[train.cog]]
  type = "regex"
  preset = "apache_combined"
  on_error = "train:dead"
  [[train.cog]]
  type = "route"
  train = "errors"
  when = 'status >= 500'
  [[train.cog]]
  type = "throttle"
  fields = ["client"]
  rate = 5.0
  on_excess = "train:excess"
  [[train.cog]]
  type = "tee"
  name = "copy \"audit\""
  train = "audit"
  [[train.cog]]
  type = "stdout"
  format = "json"
[[train]]
name = "errors"
  [[train.cog]]
  type = "stdout"
[[train]]
name = "dead"
  [[train.cog]]
  type = "stdout"
[[train]]
name = "excess"
  [[train.cog]]
  type = "drop"
[[train]]
name = "audit"
  [[train.cog]]
  type = "window"
  name = "per-minute"
  key = ["client"]
  time = "arrival"
  size = "60s"
  aggregate = { requests = "count" }
  on_late = "train:dead"
  [[train.cog]]
  type = "stdout"
"#;

/// `(from node, to train index, label)` of every edge between trains in MULTI.
const MULTI_EDGES: &[(&str, usize, &str)] = &[
    ("t0c1", 2, "on_error"),
    ("t0c2", 1, "route: status >= 500"),
    ("t0c3", 3, "on_excess"),
    ("t0c4", 4, "tee"),
    ("t4c0", 2, "on_late"),
];

/// Train names and their cogs' labels in MULTI.
const MULTI_TRAINS: &[(&str, &[&str])] = &[
    (
        "main",
        &[
            "stdin#1",
            "regex#2",
            "route#3",
            "throttle#4",
            "copy \"audit\"",
            "stdout#6",
        ],
    ),
    ("errors", &["stdout#1"]),
    ("dead", &["stdout#1"]),
    ("excess", &["drop#1"]),
    ("audit", &["per-minute", "stdout#2"]),
];

fn graph(config: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["graph", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    Command::new(BIN).args(&args).output().unwrap()
}

fn graph_ok(config: &Path, extra: &[&str]) -> String {
    let out = graph(config, extra);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Text as graphviz writes it in SVG.
fn svg_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('-', "&#45;")
}

fn dot_available() -> bool {
    Command::new("dot")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Renders DOT text with `dot -Tsvg`, failing on any error graphviz reports.
fn render_svg(dot: &str) -> String {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dot failed: {err}\n{dot}");
    // Warnings (an lhead that is no cluster, a bad attribute) mean a drawing that lies.
    assert!(err.trim().is_empty(), "dot warned: {err}\n{dot}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn dot_renders_with_graphviz_holding_every_train_cog_and_edge() {
    if !dot_available() {
        eprintln!("skipped: graphviz `dot` is not installed (Debian package graphviz)");
        return;
    }
    let dir = TempDir::new("graph-dot");
    let cfg = write_config(dir.path(), MULTI);
    let dot = graph_ok(&cfg, &[]);
    assert_eq!(
        dot,
        graph_ok(&cfg, &["--format", "dot"]),
        "dot is the default"
    );
    let svg = render_svg(&dot);
    for (ti, (name, cogs)) in MULTI_TRAINS.iter().enumerate() {
        assert!(
            svg.contains(&format!("<title>cluster_{ti}</title>")),
            "cluster of {name}"
        );
        assert!(
            svg.contains(&format!(">train {}</text>", svg_escape(name))),
            "label of train {name}:\n{svg}"
        );
        for (ci, cog) in cogs.iter().enumerate() {
            assert!(
                svg.contains(&format!("<title>t{ti}c{ci}</title>")),
                "node of {cog}"
            );
            // A named cog's label has its type on a second line.
            let first = cog.lines().next().unwrap();
            assert!(
                svg.contains(&format!(">{}</text>", svg_escape(first))),
                "label of {cog}:\n{svg}"
            );
            if ci > 0 {
                let title = format!("<title>t{ti}c{}&#45;&gt;t{ti}c{ci}</title>", ci - 1);
                assert!(svg.contains(&title), "{title}");
            }
        }
    }
    for (from, to, label) in MULTI_EDGES {
        let title = format!("<title>{from}&#45;&gt;t{to}c0</title>");
        assert!(svg.contains(&title), "edge {title}:\n{svg}");
        assert!(
            svg.contains(&format!(">{}</text>", svg_escape(label))),
            "edge label {label}:\n{svg}"
        );
    }
    // Edges between trains are exactly these: no more.
    let between = dot.lines().filter(|l| l.contains("lhead=")).count();
    assert_eq!(between, MULTI_EDGES.len(), "{dot}");
    // The named tee's quotes survive as text, not as DOT syntax.
    assert!(svg.contains("copy &quot;audit&quot;"), "{svg}");
}

#[test]
fn bundled_configs_render() {
    if !dot_available() {
        eprintln!("skipped: graphviz `dot` is not installed (Debian package graphviz)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for (file, edges) in [
        ("quickstart.toml", 0),
        ("access_to_json.toml", 1),
        ("sshd_bruteforce.toml", 1),
    ] {
        let dot = graph_ok(&root.join(file), &[]);
        let between = dot.lines().filter(|l| l.contains("lhead=")).count();
        assert_eq!(between, edges, "{file}:\n{dot}");
        render_svg(&dot);
    }
    let dot = graph_ok(&root.join("access_to_json.toml"), &[]);
    assert!(
        dot.contains("t0c1 -> t1c0 [label=\"on_error\", lhead=cluster_1"),
        "{dot}"
    );
}

/// The Mermaid text, read back: node declarations, edges inside trains and edges
/// between them.
#[derive(Debug, Default)]
struct Mermaid {
    /// `(train id, label)` of each subgraph, in order.
    subgraphs: Vec<(String, String)>,
    /// `(node id, label, subgraph index)`.
    nodes: Vec<(String, String, usize)>,
    chain: Vec<(String, String)>,
    between: Vec<(String, String, String)>,
}

fn unquote_mermaid(s: &str) -> String {
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap();
    assert!(!s.contains('"'), "a raw quote inside a label: {s}");
    s.replace("<br/>", "\n")
        .replace("#quot;", "\"")
        .replace("#35;", "#")
        .replace("#lt;", "<")
        .replace("#gt;", ">")
        .replace("#124;", "|")
}

fn parse_mermaid(text: &str) -> Mermaid {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("flowchart LR"));
    let mut m = Mermaid::default();
    let mut open: Option<usize> = None;
    for line in lines {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("subgraph ") {
            assert!(open.is_none(), "nested subgraph: {l}");
            let (id, label) = rest.split_once('[').unwrap();
            let label = label.strip_suffix(']').unwrap();
            m.subgraphs.push((id.to_string(), unquote_mermaid(label)));
            open = Some(m.subgraphs.len() - 1);
        } else if l == "end" {
            assert!(open.take().is_some(), "`end` without subgraph");
        } else if l == "direction LR" || l.starts_with("classDef ") {
        } else if let Some((from, rest)) = l.split_once(" -.->|").or_else(|| l.split_once(" -->|"))
        {
            assert!(open.is_none(), "edge between trains inside a subgraph: {l}");
            let (label, to) = rest.rsplit_once("| ").unwrap();
            m.between
                .push((from.to_string(), to.to_string(), unquote_mermaid(label)));
        } else if let Some((from, to)) = l.split_once(" --> ") {
            assert!(open.is_some(), "chain outside a subgraph: {l}");
            m.chain.push((from.to_string(), to.to_string()));
        } else {
            let sub = open.expect("node outside a subgraph");
            let (decl, class) = l.rsplit_once(":::").unwrap();
            assert!(
                ["supply", "transform", "drain", "unknown"].contains(&class),
                "{l}"
            );
            let start = decl.find(['[', '(']).unwrap();
            let id = &decl[..start];
            let shape = &decl[start..];
            let label = shape
                .trim_start_matches(['[', '('])
                .trim_end_matches([']', ')']);
            m.nodes.push((id.to_string(), unquote_mermaid(label), sub));
        }
    }
    assert!(open.is_none(), "unclosed subgraph");
    m
}

#[test]
fn mermaid_is_a_flowchart_of_every_train_cog_and_edge() {
    let dir = TempDir::new("graph-mermaid");
    let cfg = write_config(dir.path(), MULTI);
    let text = graph_ok(&cfg, &["--format", "mermaid"]);
    let m = parse_mermaid(&text);
    let names: Vec<String> = MULTI_TRAINS
        .iter()
        .map(|(n, _)| format!("train {n}"))
        .collect();
    let got: Vec<String> = m.subgraphs.iter().map(|(_, l)| l.clone()).collect();
    assert_eq!(got, names);
    for (ti, (_, cogs)) in MULTI_TRAINS.iter().enumerate() {
        assert_eq!(m.subgraphs[ti].0, format!("t{ti}"));
        let nodes: Vec<(String, String)> = m
            .nodes
            .iter()
            .filter(|(_, _, s)| *s == ti)
            .map(|(id, label, _)| (id.clone(), label.lines().next().unwrap().to_string()))
            .collect();
        let want: Vec<(String, String)> = cogs
            .iter()
            .enumerate()
            .map(|(ci, c)| (format!("t{ti}c{ci}"), c.to_string()))
            .collect();
        assert_eq!(nodes, want, "{text}");
        for ci in 1..cogs.len() {
            let link = (format!("t{ti}c{}", ci - 1), format!("t{ti}c{ci}"));
            assert!(m.chain.contains(&link), "{link:?}\n{text}");
        }
    }
    assert_eq!(
        m.chain.len(),
        MULTI_TRAINS.iter().map(|(_, c)| c.len() - 1).sum::<usize>()
    );
    let want: Vec<(String, String, String)> = MULTI_EDGES
        .iter()
        .map(|(from, to, label)| (from.to_string(), format!("t{to}"), label.to_string()))
        .collect();
    assert_eq!(m.between, want, "{text}");
    // Shapes say the role: a supply is a stadium, a drain a cylinder.
    assert!(
        text.contains("    t0c0([\"stdin#35;1\"]):::supply\n"),
        "{text}"
    );
    assert!(
        text.contains("    t0c5[(\"stdout#35;6\")]:::drain\n"),
        "{text}"
    );
    assert!(
        text.contains("    t4c0[\"per-minute<br/>window\"]:::transform\n"),
        "{text}"
    );
}

#[test]
fn a_bad_config_gets_the_errors_of_check() {
    let dir = TempDir::new("graph-bad");
    for text in [
        // A key no cog takes, and a train that receives from a train that does not exist.
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\ncolour = 1\n\
         [[train.cog]]\ntype = \"route\"\ntrain = \"nowhere\"\n",
        // Records that reach no drain.
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"stdin\"\n",
        // Not TOML.
        "[[train]\n",
    ] {
        let cfg = write_config(dir.path(), text);
        let check = Command::new(BIN)
            .args(["check", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(check.status.code(), Some(2));
        for format in ["dot", "mermaid"] {
            let out = graph(&cfg, &["--format", format]);
            assert_eq!(out.status.code(), Some(2), "{text}");
            assert!(out.stdout.is_empty(), "nothing drawn for a bad config");
            assert_eq!(
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
    let missing = dir.path().join("missing.toml");
    let out = graph(&missing, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read the configuration"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn graph_usage_errors_exit_2() {
    let dir = TempDir::new("graph-usage");
    let cfg = write_config(dir.path(), MULTI);
    for extra in [
        &["--format", "svg"][..],
        &["--format"],
        &["--fromat", "dot"],
        &["--format", "dot", "--format", "mermaid"],
        &["other.toml"],
    ] {
        let out = graph(&cfg, extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(out.stdout.is_empty(), "{extra:?}");
    }
    let out = Command::new(BIN).args(["graph"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
