//! A cog written the way another crate would write one: only `deadbeat::prelude`, over the
//! program's own datum type, reaching its fields through getters and setters.
//!
//! A supply replays a few web hits, the custom `Classify` cog labels each by status code
//! (dropping one client's hits and counting server errors), and a drain collects them and
//! acknowledges each, which the supply hears about. The run ends when the supply is
//! exhausted.
//!
//! `cargo run --example custom_cog`

use std::cell::RefCell;
use std::rc::Rc;

use deadbeat::prelude::*;

/// The program's own datum.
#[derive(Debug)]
struct Hit {
    id: EventId,
    client: String,
    path: String,
    status: u16,
    class: &'static str,
}

/// Labels hits by status code. It knows nothing of `Hit`: whoever builds the train hands
/// it the closures that reach the pieces it works on.
struct Classify<D> {
    id: Getter<D, EventId>,
    status: Getter<D, u16>,
    client: Getter<D, str>,
    class: Setter<D, &'static str>,
    /// Hits from this client are dropped (a health checker, say).
    ignore: String,
}

impl<D: 'static> Cog<D> for Classify<D> {
    fn name(&self) -> &str {
        "classify"
    }

    fn process(&mut self, mut d: D, out: &mut Out<D>, cx: &mut Ctx) {
        if self.client.get(&d) == Some(self.ignore.as_str()) {
            // Dropped for good: acknowledge it, so the supply does not wait for it.
            if let Some(&id) = self.id.get(&d) {
                cx.event_done(id);
            }
            out.count_dropped(1);
            return;
        }
        let class = match self.status.get(&d).copied() {
            Some(200..=299) => "ok",
            Some(300..=399) => "redirect",
            Some(400..=499) => "client error",
            Some(500..=599) => {
                // Still emitted, but the counters show how many went wrong upstream.
                out.count_errors(1);
                "server error"
            }
            _ => "unknown",
        };
        self.class.set(&mut d, class);
        out.push(d);
    }
}

/// Replays hits, a few per turn of the loop, and counts the acknowledgements.
struct Replay {
    left: std::vec::IntoIter<(&'static str, &'static str, u16)>,
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
        for (client, path, status) in self.left.by_ref().take(2) {
            out.push(Hit {
                id: cx.new_event_id(),
                client: client.to_string(),
                path: path.to_string(),
                status,
                class: "",
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

    fn process(&mut self, d: Hit, _out: &mut Out<Hit>, cx: &mut Ctx) {
        cx.event_done(d.id);
        self.0.borrow_mut().push(d);
    }
}

fn main() -> Result<(), BoxError> {
    let hits = vec![
        ("10.0.0.1", "/", 200),
        ("10.0.0.2", "/old", 301),
        ("10.0.0.9", "/health", 200),
        ("10.0.0.1", "/missing", 404),
        ("10.0.0.3", "/api", 503),
        ("10.0.0.9", "/health", 200),
        ("10.0.0.2", "/api", 201),
    ];
    let collected = Rc::new(RefCell::new(Vec::new()));
    let acked = Rc::new(RefCell::new(Vec::new()));

    let classify = Classify {
        id: Getter::new(|h: &Hit| Some(&h.id)),
        status: Getter::new(|h: &Hit| Some(&h.status)),
        client: Getter::new(|h: &Hit| Some(h.client.as_str())),
        class: Setter::new(|h: &mut Hit, c| h.class = c),
        ignore: "10.0.0.9".to_string(),
    };
    let train = Train::new("hits")
        .cog(Replay {
            left: hits.into_iter(),
            acked: Rc::clone(&acked),
        })
        .cog(classify)
        .cog(Collect(Rc::clone(&collected)));

    let mut esc = Escapement::new()?;
    esc.add_train(train)?;
    esc.run()?;

    for h in collected.borrow().iter() {
        println!(
            "#{} {:<9} {:<9} {} {}",
            h.id, h.client, h.path, h.status, h.class
        );
    }
    println!("acknowledged: {:?}", acked.borrow());
    for t in esc.metrics() {
        for c in &t.cogs {
            println!(
                "{}/{}: in {} out {} dropped {} errors {}",
                t.name, c.name, c.data_in, c.data_out, c.dropped, c.errors
            );
        }
    }
    Ok(())
}
