//! Text generated from cog descriptors: `deadbeat cogs` and `docs/cogs.md`.

use std::fmt::Write;

use crate::cogs::Registry;
use crate::kit::CogDescriptor;

/// One line per cog: name, role and summary.
pub fn cog_list(r: &Registry) -> String {
    let cogs = r.all();
    let width = cogs.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut s = String::new();
    for c in cogs {
        let _ = writeln!(
            s,
            "{:width$}  {:9}  {}",
            c.name,
            c.kind.to_string(),
            c.summary
        );
    }
    s
}

/// One cog's parameters and fields, for `deadbeat cogs NAME`.
pub fn cog_help(r: &Registry, name: &str) -> Option<String> {
    let c = r.get(name)?;
    let mut s = String::new();
    let _ = writeln!(s, "{} ({}): {}", c.name, c.kind, c.summary);
    let _ = writeln!(
        s,
        "\nevery cog also takes `name`: its id in logs, counters and errors \
         (default {}#N, N its 1-based place in the train)",
        c.name
    );
    if c.params.is_empty() {
        let _ = writeln!(s, "\nparameters: none");
    } else {
        let _ = writeln!(s, "\nparameters:");
        for p in c.params {
            let default = match (p.required, p.default) {
                (true, _) => "required".to_string(),
                (false, Some(d)) => format!("default {d}"),
                (false, None) => "unset by default".to_string(),
            };
            let _ = writeln!(s, "  {} ({}, {}): {}", p.name, p.ty, default, p.help_line());
        }
    }
    if !c.fields.is_empty() {
        let _ = writeln!(s, "\nfields:");
        for (f, help) in c.fields {
            let _ = writeln!(s, "  {f}: {help}");
        }
    }
    Some(s)
}

fn markdown_cog(s: &mut String, c: &CogDescriptor) {
    let _ = writeln!(
        s,
        "## `{}`\n\n{} ({}).\n",
        c.name,
        capitalise(c.summary),
        c.kind
    );
    if c.params.is_empty() {
        let _ = writeln!(s, "No parameters.\n");
    } else {
        let _ = writeln!(
            s,
            "| key | type | default | what it does |\n|---|---|---|---|"
        );
        for p in c.params {
            let default = match (p.required, p.default) {
                (true, _) => "required".to_string(),
                (false, Some(d)) => format!("`{d}`"),
                (false, None) => "unset".to_string(),
            };
            let ty = p.ty.to_string().replace('|', "\\|");
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} |",
                p.name,
                ty,
                default,
                p.help_line().replace('|', "\\|")
            );
        }
        s.push('\n');
    }
    if !c.fields.is_empty() {
        let _ = writeln!(s, "Fields:\n");
        for (f, help) in c.fields {
            let _ = writeln!(s, "- `{f}`: {help}");
        }
        s.push('\n');
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

/// The cog reference, `docs/cogs.md`.
pub fn markdown(r: &Registry) -> String {
    let mut s = String::from(
        "# Cog reference\n\n\
         Generated from the cogs' descriptors by `deadbeat cogs --markdown`; a test fails when\n\
         this file is stale. Every cog takes `type` plus the keys below; unknown keys are errors.\n\
         Every cog also takes `name`, its id in logs, counters and errors (default `TYPE#N`, N\n\
         its 1-based place in the train; unique within a train).\n\
         Durations are written `\"500ms\"`, `\"1s\"`, `\"5m\"`; sizes `\"64KiB\"`, `\"1MiB\"`.\n\n",
    );
    for c in r.all() {
        markdown_cog(&mut s, c);
    }
    s
}
