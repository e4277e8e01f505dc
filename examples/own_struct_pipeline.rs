//! Supplied cogs over a program's own struct, configured with their typed settings and no
//! TOML: the `apache_combined` preset of `regex` takes each access-log line apart,
//! `anonymise` truncates the client address, `filter` keeps the errors.
//!
//! A supply of its own replays the first lines of the bundled `config/data/access.log`
//! (and one line that is no access-log line, which `regex` drops); a drain of its own
//! collects what is left and acknowledges it. The run ends when the supply is exhausted.
//!
//! `cargo run --example own_struct_pipeline`

use std::cell::RefCell;
use std::rc::Rc;

use deadbeat::cogs::flow::filter::{Filter, FilterSettings};
use deadbeat::cogs::ip::anonymise::{Anonymise, AnonymiseSettings};
use deadbeat::cogs::text::presets::PresetName;
use deadbeat::cogs::text::regex::{Regex, RegexSettings};
use deadbeat::kit::on_error;
use deadbeat::kit::on_error::{ErrorAction, OnError};
use deadbeat::prelude::*;
use deadbeat::record::{Map, Merge, Path, Value};

/// The bundled log, of which the first [`LINES`] lines are replayed.
const LOG: &str = include_str!("../config/data/access.log");
const LINES: usize = 12;

/// The program's own datum. The address and the status are [`Value`]s because the cogs
/// reach them as such: `anonymise` rewrites a value in place (text stays text, an IP
/// stays an IP), `filter` compares values.
#[derive(Debug)]
struct Hit {
    id: EventId,
    line: String,
    client: Value,
    status: Value,
    path: String,
    /// Why a cog failed on it, when its `on_error` keeps it.
    error: Option<String>,
}

/// Replays lines, a few per turn of the loop.
struct Replay {
    left: std::vec::IntoIter<String>,
    acked: Rc<RefCell<Vec<EventId>>>,
}

impl Cog<Hit> for Replay {
    fn name(&self) -> &str {
        "replay"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        cx.enqueue(0);
        Ok(())
    }

    fn wake(&mut self, _: Local, _: Wake<'_>, out: &mut Out<Hit>, cx: &mut Ctx) {
        for line in self.left.by_ref().take(4) {
            out.push(Hit {
                id: cx.new_event_id(),
                line,
                client: Value::Null,
                status: Value::Null,
                path: String::new(),
                error: None,
            });
        }
        if self.left.len() == 0 {
            cx.exhausted();
        } else {
            cx.enqueue(0);
        }
    }

    fn event_done(&mut self, ids: &[EventId], _cx: &mut Ctx) {
        self.acked.borrow_mut().extend_from_slice(ids);
    }
}

/// Keeps every hit and acknowledges it at once.
struct Collect(Rc<RefCell<Vec<Hit>>>);

impl Cog<Hit> for Collect {
    fn name(&self) -> &str {
        "collect"
    }

    fn process(&mut self, h: Hit, _out: &mut Out<Hit>, cx: &mut Ctx) {
        cx.event_done(h.id);
        self.0.borrow_mut().push(h);
    }
}

/// The field a condition names, for `filter`.
fn lookup<'a>(h: &'a Hit, p: &Path) -> Option<&'a Value> {
    match p.to_string().as_str() {
        "status" => Some(&h.status),
        "client" => Some(&h.client),
        _ => None,
    }
}

/// Moves the fields the preset found into the hit; the others are not kept.
fn store(h: &mut Hit, fields: &mut Map) {
    for (k, v) in fields.drain() {
        match k.as_str() {
            "client" => h.client = v,
            "status" => h.status = v,
            "path" => h.path = v.as_str().unwrap_or_default().to_string(),
            _ => {}
        }
    }
}

fn main() -> Result<(), BoxError> {
    let mut lines: Vec<String> = LOG.lines().take(LINES).map(str::to_string).collect();
    lines.insert(3, "not an access log line".to_string());
    let supplied = lines.len();
    let id = || Getter::new(|h: &Hit| Some(&h.id));
    let reason = || Setter::new(|h: &mut Hit, why: String| h.error = Some(why));

    let regex = Regex::from_settings(
        &RegexSettings {
            field: "line".into(),
            preset: Some(PresetName::ApacheCombined),
            ..Default::default()
        },
        Getter::new(|h: &Hit| Some(h.line.as_bytes())),
        Merge::new(store),
        OnError::new(ErrorAction::Drop, id(), reason()),
    )?;

    let anon_settings = AnonymiseSettings {
        ipv4_prefix: 16,
        ..Default::default()
    };
    let anonymise = Anonymise::from_settings(
        &anon_settings,
        MutGetter::new(|h: &mut Hit| Some(&mut h.client)),
        on_error::for_datum(&anon_settings.on_error, |_| None, id(), reason())?,
    )?;

    let filter = Filter::from_settings(
        &FilterSettings {
            keep: Some("status >= 400".into()),
            ..Default::default()
        },
        lookup,
        id(),
    )?;

    let collected = Rc::new(RefCell::new(Vec::new()));
    let acked = Rc::new(RefCell::new(Vec::new()));
    let train = Train::new("hits")
        .cog(Replay {
            left: lines.into_iter(),
            acked: Rc::clone(&acked),
        })
        .cog(regex)
        .cog(anonymise)
        .cog(filter)
        .cog(Collect(Rc::clone(&collected)));

    let mut esc = Escapement::new()?;
    esc.add_train(train)?;
    esc.run()?;

    let kept = collected.borrow();
    for h in kept.iter() {
        let client = h.client.as_str().unwrap_or("?");
        println!("#{:<3} {client:<15} {} {}", h.id, h.status, h.path);
    }
    for t in esc.metrics() {
        for c in &t.cogs {
            println!(
                "{}/{}: in {} out {} dropped {} errors {}",
                t.name, c.name, c.data_in, c.data_out, c.dropped, c.errors
            );
        }
    }
    let truncated = kept
        .iter()
        .filter(|h| h.client.as_str().is_some_and(|c| c.ends_with(".0.0")))
        .count();
    println!(
        "kept {} of {supplied} hits, {truncated} with the client truncated to /16, {} acknowledged",
        kept.len(),
        acked.borrow().len()
    );
    Ok(())
}
