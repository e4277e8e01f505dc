//! The socket cogs built from their typed settings in Rust, without TOML, and run in an
//! escapement of this process.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::TcpListener;
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

use deadbeat::cogs::net::server_settings::{
    ConnectionSettings, ListenFraming, StreamServerSettings,
};
use deadbeat::cogs::net::tcp_in::{TcpIn, TcpInSettings};
use deadbeat::cogs::net::tcp_out::{self, StreamFraming, TcpOutSettings};
use deadbeat::cogs::net::unix_in::{UnixIn, UnixInMode, UnixInSettings};
use deadbeat::kit::forward::ForwardSettings;
use deadbeat::kit::supply::message_key;
use deadbeat::prelude::*;
use deadbeat::record::{Record, Value};

use crate::engine::{Log, Probe, TempDir, opts, run};

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");

/// Lines sent through the pair.
const LINES: usize = 500;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A supply of `LINES` records, which counts the acknowledgements of its own records
/// (every cog hears of every acknowledgement, the collector's of `tcp_in`'s records too).
fn lines(log: &Log, acked: &Rc<RefCell<usize>>) -> Probe<Record> {
    let acked = Rc::clone(acked);
    let ours = Rc::new(RefCell::new(HashSet::new()));
    let ours_w = Rc::clone(&ours);
    Probe::new("lines", log)
        .supply()
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |_, _, out, cx| {
            for i in 0..LINES {
                let mut r = Record::new();
                r.id = cx.new_event_id();
                ours_w.borrow_mut().insert(r.id);
                r.insert(
                    message_key(),
                    Value::Str(format!("<13>line {i} of typed settings")),
                );
                out.push(r);
            }
            cx.exhausted();
        })
        .on_event_done(move |ids, _| {
            let ours = ours.borrow();
            *acked.borrow_mut() += ids.iter().filter(|id| ours.contains(id)).count();
        })
}

/// A drain keeping each record's `message`; it stops the loop once all have come.
fn collector(log: &Log, got: &Rc<RefCell<Vec<String>>>) -> Probe<Record> {
    let got = Rc::clone(got);
    Probe::new("collect", log).on_process(move |r: Record, _, cx| {
        let m = r
            .get(message_key())
            .and_then(Value::as_bytes)
            .unwrap_or_default();
        got.borrow_mut()
            .push(String::from_utf8_lossy(m).into_owned());
        cx.event_done(r.id);
        if got.borrow().len() == LINES {
            cx.shutdown();
        }
    })
}

/// `tcp_out` → `tcp_in` on 127.0.0.1, both octet-counted, both made from settings structs:
/// every line arrives once, in order, and `tcp_out` acknowledges each.
#[test]
fn tcp_out_to_tcp_in_built_from_typed_settings() {
    let port = free_port();
    let log = Log::default();
    let got = Rc::new(RefCell::new(Vec::new()));
    let acked = Rc::new(RefCell::new(0));

    let tcp_in = TcpIn::new(&TcpInSettings {
        listen: format!("127.0.0.1:{port}"),
        server: StreamServerSettings {
            framing: ListenFraming::OctetCounting,
            max_line_bytes: 1024,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let tcp_out = tcp_out::new(&TcpOutSettings {
        address: format!("127.0.0.1:{port}"),
        framing: StreamFraming::OctetCounting,
        forward: ForwardSettings {
            reconnect_refused: Duration::from_millis(20),
            ..Default::default()
        },
    })
    .unwrap();

    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("in").cog(tcp_in).cog(collector(&log, &got)))
        .unwrap();
    esc.add_train(Train::new("out").cog(lines(&log, &acked)).cog(tcp_out))
        .unwrap();
    run(&mut esc, &log);

    let want: Vec<String> = (0..LINES)
        .map(|i| format!("<13>line {i} of typed settings"))
        .collect();
    assert_eq!(*got.borrow(), want);
    assert_eq!(*acked.borrow(), LINES, "{log:?}");
}

/// What a type cannot say is checked by the constructors, at the key, with the messages a
/// configuration gets.
#[test]
fn typed_settings_are_checked_at_construction() {
    let bad_listen = TcpIn::new(&TcpInSettings {
        listen: "localhost".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(bad_listen.key, "listen");
    assert!(
        bad_listen
            .msg
            .starts_with("expected IP:port, e.g. \"127.0.0.1:5140\""),
        "{bad_listen}"
    );

    let no_line = TcpIn::new(&TcpInSettings {
        listen: "127.0.0.1:5140".into(),
        server: StreamServerSettings {
            max_line_bytes: 0,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        (no_line.key, no_line.msg.as_str()),
        ("max_line_bytes", "must be within 1 byte..64MiB")
    );

    let no_conn = TcpIn::new(&TcpInSettings {
        listen: "127.0.0.1:5140".into(),
        server: StreamServerSettings {
            connections: ConnectionSettings {
                max_connections: 0,
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(no_conn.key, "max_connections");

    let Err(bad_address) = tcp_out::new(&TcpOutSettings {
        address: "no port".into(),
        ..Default::default()
    }) else {
        panic!("tcp_out took an address without a port");
    };
    assert_eq!(bad_address.key, "address");
}

/// `unix_in` in datagram mode refuses the keys of stream mode: from Rust when a value
/// differs from its default, from a configuration when the key is given at all.
#[test]
fn unix_in_datagram_mode_refuses_stream_keys() {
    let Err(e) = UnixIn::new(&UnixInSettings {
        path: "/tmp/unused.sock".into(),
        server: StreamServerSettings {
            drain_timeout: Duration::ZERO,
            ..Default::default()
        },
        ..Default::default()
    }) else {
        panic!("unix_in took drain_timeout in datagram mode");
    };
    assert_eq!(
        (e.key, e.msg.as_str()),
        ("drain_timeout", "applies to mode = \"stream\" only")
    );
    let Err(e) = UnixIn::new(&UnixInSettings {
        path: "/tmp/unused.sock".into(),
        permissions: "0999".into(),
        ..Default::default()
    }) else {
        panic!("unix_in took permissions 0999");
    };
    assert_eq!(e.key, "permissions");
    assert!(
        UnixIn::new(&UnixInSettings {
            path: "/tmp/unused.sock".into(),
            mode: UnixInMode::Stream,
            server: StreamServerSettings {
                drain_timeout: Duration::ZERO,
                ..Default::default()
            },
            ..Default::default()
        })
        .is_ok()
    );

    let dir = TempDir::new("typed-unix-in");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[[train]]\nname = \"t\"\n[[train.cog]]\ntype = \"unix_in\"\npath = \"s.sock\"\n\
         framing = \"auto\"\n[[train.cog]]\ntype = \"stdout\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            ":6:11: train \"t\", cog unix_in#1, key \"framing\": applies to mode = \"stream\" only"
        ),
        "{err}"
    );
}
