//! The socket cogs built from their typed settings in Rust, without TOML, and run in an
//! escapement of this process.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::TcpListener;
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

use deadbeat::cogs::net::relp_in::{RelpIn, RelpInSettings};
use deadbeat::cogs::net::relp_out::{RelpOut, RelpOutSettings};
use deadbeat::cogs::net::server_settings::{
    ConnectionSettings, ListenFraming, PerIpSettings, StreamServerSettings,
};
use deadbeat::cogs::net::tcp_in::{TcpIn, TcpInSettings};
use deadbeat::cogs::net::tcp_out::{self, StreamFraming, TcpOutSettings};
use deadbeat::cogs::net::udp_in::{UdpIn, UdpInSettings};
use deadbeat::cogs::net::udp_out::{UdpOut, UdpOutSettings};
use deadbeat::cogs::net::unix_in::{UnixIn, UnixInMode, UnixInSettings};
use deadbeat::cogs::net::unix_out::{self, SocketMode, UnixOutSettings};
use deadbeat::kit::forward::ForwardSettings;
use deadbeat::kit::on_error::{ErrorAction, OnError};
use deadbeat::kit::supply::message_key;
use deadbeat::prelude::*;
use deadbeat::record::{Record, Value};

use crate::engine::{Log, Probe, TempDir, opts, run};

const BIN: &str = env!("CARGO_BIN_EXE_deadbeat");

/// Lines sent through a stream pair (datagrams: fewer, so that the receive buffer's
/// default size holds them all whatever the scheduling).
const LINES: usize = 500;
const DATAGRAMS: usize = 50;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A supply of `LINES` records, which counts the acknowledgements of its own records
/// (every cog hears of every acknowledgement, the collector's of `tcp_in`'s records too).
fn lines(log: &Log, n: usize, acked: &Rc<RefCell<usize>>) -> Probe<Record> {
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
            for i in 0..n {
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
fn collector(log: &Log, n: usize, got: &Rc<RefCell<Vec<String>>>) -> Probe<Record> {
    let got = Rc::clone(got);
    Probe::new("collect", log).on_process(move |r: Record, _, cx| {
        let m = r
            .get(message_key())
            .and_then(Value::as_bytes)
            .unwrap_or_default();
        got.borrow_mut()
            .push(String::from_utf8_lossy(m).into_owned());
        cx.event_done(r.id);
        if got.borrow().len() == n {
            cx.shutdown();
        }
    })
}

/// Runs `n` lines from a supply through `drain`, over the network, into `supply` and a
/// collector, all on one escapement; the messages received, and how many of the lines
/// `drain` acknowledged.
fn send_through(
    n: usize,
    supply: impl Cog<Record>,
    drain: impl Cog<Record>,
) -> (Vec<String>, usize) {
    let log = Log::default();
    let got = Rc::new(RefCell::new(Vec::new()));
    let acked = Rc::new(RefCell::new(0));
    let mut esc = Escapement::with_options(opts()).unwrap();
    esc.add_train(Train::new("in").cog(supply).cog(collector(&log, n, &got)))
        .unwrap();
    esc.add_train(Train::new("out").cog(lines(&log, n, &acked)).cog(drain))
        .unwrap();
    run(&mut esc, &log);
    let got = got.borrow().clone();
    let acked = *acked.borrow();
    (got, acked)
}

fn numbered(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("<13>line {i} of typed settings"))
        .collect()
}

/// `tcp_out` → `tcp_in` on 127.0.0.1, both octet-counted, both made from settings structs:
/// every line arrives once, in order, and `tcp_out` acknowledges each.
#[test]
fn tcp_out_to_tcp_in_built_from_typed_settings() {
    let port = free_port();
    let tcp_in = TcpIn::from_settings(&TcpInSettings {
        listen: format!("127.0.0.1:{port}"),
        server: StreamServerSettings {
            framing: ListenFraming::OctetCounting,
            max_line_bytes: 1024,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let tcp_out = tcp_out::from_settings(&TcpOutSettings {
        address: format!("127.0.0.1:{port}"),
        framing: StreamFraming::OctetCounting,
        forward: ForwardSettings {
            reconnect_refused: Duration::from_millis(20),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let (got, acked) = send_through(LINES, tcp_in, tcp_out);
    assert_eq!(got, numbered(LINES));
    assert_eq!(acked, LINES);
}

/// `relp_out` → `relp_in` made from settings structs: every line arrives once, in order,
/// and is acknowledged once the server answered.
#[test]
fn relp_out_to_relp_in_built_from_typed_settings() {
    let port = free_port();
    let relp_in = RelpIn::from_settings(&RelpInSettings {
        listen: format!("127.0.0.1:{port}"),
        window_size: 16,
        ..Default::default()
    })
    .unwrap();
    let relp_out = RelpOut::from_settings(&RelpOutSettings {
        address: format!("127.0.0.1:{port}"),
        window_size: 16,
        forward: ForwardSettings {
            reconnect_refused: Duration::from_millis(20),
            // On one loop `relp_in` reads no more at the stop and says goodbye only once
            // every cog is done, so the `close` `relp_out` sends with everything answered
            // waits for an answer until this deadline.
            drain_timeout: Duration::from_millis(200),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let (got, acked) = send_through(LINES, relp_in, relp_out);
    assert_eq!(got, numbered(LINES));
    assert_eq!(acked, LINES);
}

/// `udp_out` → `udp_in` made from settings structs, `udp_out`'s `on_error` given as an
/// [`OnError`] over records.
#[test]
fn udp_out_to_udp_in_built_from_typed_settings() {
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let udp_in = UdpIn::from_settings(&UdpInSettings {
        listen: format!("127.0.0.1:{port}"),
        ..Default::default()
    })
    .unwrap();
    let on_error = OnError::new(
        ErrorAction::Drop,
        Getter::new(|r: &Record| Some(&r.id)),
        Setter::new(|_: &mut Record, _: String| {}),
    );
    let udp_out = UdpOut::from_settings(
        &UdpOutSettings {
            address: format!("127.0.0.1:{port}"),
            ..Default::default()
        },
        on_error,
    )
    .unwrap();
    let (got, acked) = send_through(DATAGRAMS, udp_in, udp_out);
    assert_eq!(got, numbered(DATAGRAMS));
    assert_eq!(acked, DATAGRAMS);
}

/// What a type cannot say is checked by the constructors, at the key, with the messages a
/// configuration gets.
#[test]
fn typed_settings_are_checked_at_construction() {
    let bad_listen = TcpIn::from_settings(&TcpInSettings {
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

    let no_line = TcpIn::from_settings(&TcpInSettings {
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

    let no_conn = TcpIn::from_settings(&TcpInSettings {
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

    let Err(bad_address) = tcp_out::from_settings(&TcpOutSettings {
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
    let Err(e) = UnixIn::from_settings(&UnixInSettings {
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
    let Err(e) = UnixIn::from_settings(&UnixInSettings {
        path: "/tmp/unused.sock".into(),
        permissions: "0999".into(),
        ..Default::default()
    }) else {
        panic!("unix_in took permissions 0999");
    };
    assert_eq!(e.key, "permissions");
    assert!(
        UnixIn::from_settings(&UnixInSettings {
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

/// Each constructor checks what its settings' types cannot, at the key.
#[test]
fn socket_cog_constructors_refuse_bad_settings() {
    let key = |r: Result<(), deadbeat::schema::SettingError>| r.unwrap_err().key;
    assert_eq!(
        key(RelpIn::from_settings(&RelpInSettings {
            listen: "127.0.0.1:2514".into(),
            window_size: 0,
            ..Default::default()
        })
        .map(drop)),
        "window_size"
    );
    assert_eq!(
        key(RelpIn::from_settings(&RelpInSettings {
            listen: "127.0.0.1:2514".into(),
            per_ip: PerIpSettings {
                max_connections_per_ip: 2_000_000,
            },
            ..Default::default()
        })
        .map(drop)),
        "max_connections_per_ip"
    );
    assert_eq!(
        key(RelpOut::from_settings(&RelpOutSettings {
            address: "relp".into(),
            ..Default::default()
        })
        .map(drop)),
        "address"
    );
    assert_eq!(
        key(UdpIn::from_settings(&UdpInSettings {
            listen: "127.0.0.1:5514".into(),
            recv_buffer: Some(0),
            ..Default::default()
        })
        .map(drop)),
        "recv_buffer"
    );
    let on_error = OnError::new(
        ErrorAction::Drop,
        Getter::new(|r: &Record| Some(&r.id)),
        Setter::new(|_: &mut Record, _: String| {}),
    );
    assert_eq!(
        key(UdpOut::from_settings(
            &UdpOutSettings {
                address: "127.0.0.1:5514".into(),
                max_message_bytes: 0,
                ..Default::default()
            },
            on_error
        )
        .map(drop)),
        "max_message_bytes"
    );
    let e = unix_out::from_settings(&UnixOutSettings {
        path: "/tmp/unused.sock".into(),
        mode: SocketMode::Datagram,
        framing: StreamFraming::OctetCounting,
        ..Default::default()
    })
    .map(drop)
    .unwrap_err();
    assert_eq!(
        (e.key, e.msg.as_str()),
        ("framing", "datagrams carry one record each: no framing")
    );
    assert!(
        unix_out::from_settings(&UnixOutSettings {
            path: "/tmp/unused.sock".into(),
            mode: SocketMode::Datagram,
            ..Default::default()
        })
        .is_ok()
    );
}
