//! Each kind of event reaches the cog that bound it, with that cog's local token; and
//! unbinding stops it.

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use deadbeat::inotify::{EventMask, WatchDescriptor, WatchMask};
use deadbeat::mio::net::{TcpListener, TcpStream};
use deadbeat::prelude::*;

use super::{Log, Probe, TempDir, opts, run, run_train, strs};

/// Reads what `s` has until it would block; `None` once the peer has closed.
fn read_available(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 256];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Some(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

#[test]
fn immediate_calls_reach_their_cog_and_local_once() {
    let log = Log::default();
    let (la, lb) = (log.clone(), log.clone());
    let mut seen = 0;
    let a = Probe::<u64>::new("a", &log)
        .supply()
        .on_start(|cx| {
            cx.enqueue(1);
            cx.enqueue(2);
            // Asked twice before the call: still one call.
            cx.enqueue(2);
            cx.enqueue(9);
            cx.dequeue(9);
            Ok(())
        })
        .on_wake(move |local, why, _, cx| {
            la.push(format!("a: {why:?} {local}"));
            seen += 1;
            if seen == 2 {
                cx.exhausted();
            }
        });
    let b = Probe::<u64>::new("b", &log)
        .on_start(|cx| {
            cx.enqueue(1);
            Ok(())
        })
        .on_wake(move |local, why, _, _| lb.push(format!("b: {why:?} {local}")));
    run_train(Train::new("t").cog(a).cog(b), &log);
    assert_eq!(
        log.entries(),
        strs(&[
            "a: Immediate 1",
            "a: Immediate 2",
            "b: Immediate 1",
            "a: finish",
            "b: finish",
            "a: done",
            "b: done",
        ])
    );
}

/// Cog 0 of the readiness test: accepts on local 11, reads a line on local 12, answers
/// it and emits it downstream.
struct Server {
    log: Log,
    addr: Rc<Cell<Option<SocketAddr>>>,
    listener: Option<TcpListener>,
    conn: Option<TcpStream>,
    inbox: Vec<u8>,
}

impl Cog<String> for Server {
    fn name(&self) -> &str {
        "server"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let mut lis = TcpListener::bind("127.0.0.1:0".parse()?)?;
        self.addr.set(Some(lis.local_addr()?));
        cx.register(&mut lis, 11, Interest::READABLE)?;
        self.listener = Some(lis);
        Ok(())
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<String>, cx: &mut Ctx) {
        let Wake::Ready(ev) = why else {
            self.log.push(format!("server: unexpected {why:?}"));
            return;
        };
        self.log.push(format!("server: ready {local}"));
        match local {
            11 => loop {
                match self.listener.as_ref().unwrap().accept() {
                    Ok((mut s, _)) => {
                        cx.register(&mut s, 12, Interest::READABLE).unwrap();
                        self.conn = Some(s);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("accept: {e}"),
                }
            },
            12 if ev.is_readable() => {
                let s = self.conn.as_mut().unwrap();
                read_available(s, &mut self.inbox);
                if self.inbox.ends_with(b"\n") {
                    let line = String::from_utf8(std::mem::take(&mut self.inbox)).unwrap();
                    s.write_all(b"pong\n").unwrap();
                    out.push(line.trim_end().to_string());
                    cx.exhausted();
                }
            }
            _ => {}
        }
    }
}

/// Cog 1 of the readiness test: connects on local 21, sends a line, waits for the answer;
/// passes the server's data on.
struct Client {
    log: Log,
    addr: Rc<Cell<Option<SocketAddr>>>,
    stream: Option<TcpStream>,
    sent: bool,
    inbox: Vec<u8>,
}

impl Cog<String> for Client {
    fn name(&self) -> &str {
        "client"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let mut s = TcpStream::connect(self.addr.get().ok_or("no server address")?)?;
        cx.register(&mut s, 21, Interest::READABLE | Interest::WRITABLE)?;
        self.stream = Some(s);
        Ok(())
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, _: &mut Out<String>, cx: &mut Ctx) {
        let Wake::Ready(ev) = why else {
            self.log.push(format!("client: unexpected {why:?}"));
            return;
        };
        self.log.push(format!("client: ready {local}"));
        let s = self.stream.as_mut().unwrap();
        if ev.is_writable() && !self.sent {
            // Spurious or early writability is possible: only a write that went through
            // counts.
            match s.write(b"ping\n") {
                Ok(5) => self.sent = true,
                Ok(n) => panic!("short write of {n} bytes"),
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::NotConnected => {
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        if ev.is_readable() {
            read_available(s, &mut self.inbox);
            if self.inbox == b"pong\n" {
                self.log.push("client: read pong");
                cx.exhausted();
            }
        }
    }
}

#[test]
fn fd_readiness_reaches_each_cog_with_its_local() {
    let log = Log::default();
    let addr: Rc<Cell<Option<SocketAddr>>> = Rc::default();
    let server = Server {
        log: log.clone(),
        addr: Rc::clone(&addr),
        listener: None,
        conn: None,
        inbox: Vec::new(),
    };
    let client = Client {
        log: log.clone(),
        addr,
        stream: None,
        sent: false,
        inbox: Vec::new(),
    };
    let drain = Probe::drain("drain", &log);

    run_train(Train::new("t").cog(server).cog(client).cog(drain), &log);

    // Which readiness events come in one poll, and in what order, is up to the kernel:
    // check what each cog saw rather than one interleaving.
    let server_locals = log.only(&["server: ready"]);
    assert!(
        server_locals.contains(&"server: ready 11".to_string()),
        "{log:?}"
    );
    assert!(
        server_locals.contains(&"server: ready 12".to_string()),
        "{log:?}"
    );
    assert!(
        server_locals
            .iter()
            .all(|e| e == "server: ready 11" || e == "server: ready 12"),
        "{log:?}"
    );
    let client_locals = log.only(&["client: ready"]);
    assert!(!client_locals.is_empty(), "{log:?}");
    assert!(
        client_locals.iter().all(|e| e == "client: ready 21"),
        "{log:?}"
    );
    assert!(log.pos("drain: got \"ping\"") < log.pos("client: read pong"));
    assert_eq!(
        log.only(&["drain: "]),
        strs(&["drain: got \"ping\"", "drain: finish", "drain: done"])
    );
    assert!(
        !log.entries().iter().any(|e| e.contains("unexpected")),
        "{log:?}"
    );
}

/// Accepts connections (connection n gets local n + 2), reads the first, deregisters it,
/// and checks no event comes for it afterwards though data does.
struct Deaf {
    log: Log,
    listener: Option<TcpListener>,
    addr: Option<SocketAddr>,
    conns: Vec<TcpStream>,
    clients: Vec<std::net::TcpStream>,
}

impl Deaf {
    fn read(&mut self, i: usize) -> String {
        let mut buf = Vec::new();
        read_available(&mut self.conns[i], &mut buf);
        String::from_utf8(buf).unwrap()
    }
}

impl Cog<u64> for Deaf {
    fn name(&self) -> &str {
        "c"
    }

    fn is_supply(&self) -> bool {
        true
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let mut lis = TcpListener::bind("127.0.0.1:0".parse()?)?;
        cx.register(&mut lis, 1, Interest::READABLE)?;
        let addr = lis.local_addr()?;
        self.addr = Some(addr);
        self.listener = Some(lis);
        // Loopback connects complete at once, so a blocking client is fine here.
        let mut c = std::net::TcpStream::connect(addr)?;
        c.write_all(b"one\n")?;
        self.clients.push(c);
        Ok(())
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, _: &mut Out<u64>, cx: &mut Ctx) {
        match (local, why) {
            (1, Wake::Ready(_)) => loop {
                match self.listener.as_ref().unwrap().accept() {
                    Ok((mut s, _)) => {
                        let local = self.conns.len() as Local + 2;
                        cx.register(&mut s, local, Interest::READABLE).unwrap();
                        self.conns.push(s);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("accept: {e}"),
                }
            },
            (2, Wake::Ready(_)) => {
                let got = self.read(0);
                self.log.push(format!("c: conn 2 read {got:?}"));
                cx.deregister(&mut self.conns[0]).unwrap();
                self.clients[0].write_all(b"two\n").unwrap();
                // A second connection whose data is sent after "two": once its event is
                // in, an event for "two" would have been too.
                let mut c = std::net::TcpStream::connect(self.addr.unwrap()).unwrap();
                c.write_all(b"three\n").unwrap();
                self.clients.push(c);
            }
            (3, Wake::Ready(_)) => {
                let got = self.read(1);
                self.log.push(format!("c: conn 3 read {got:?}"));
                // A little grace for a stray event on the deregistered socket.
                cx.timer_after(Duration::from_millis(30), 9).unwrap();
            }
            (9, Wake::Timer(_)) => {
                // The data reached the socket all the same; only the events stopped.
                let got = self.read(0);
                if got.is_empty() {
                    cx.timer_after(Duration::from_millis(10), 9).unwrap();
                } else {
                    self.log.push(format!("c: conn 2 still holds {got:?}"));
                    cx.exhausted();
                }
            }
            (local, why) => self.log.push(format!("c: unexpected {local} {why:?}")),
        }
    }

    fn finish(&mut self, _: &mut Out<u64>, _: &mut Ctx) {
        self.log.push("c: finish");
    }
}

#[test]
fn deregistered_fd_gets_no_more_events() {
    let log = Log::default();
    let cog = Deaf {
        log: log.clone(),
        listener: None,
        addr: None,
        conns: Vec::new(),
        clients: Vec::new(),
    };
    run_train(Train::new("t").cog(cog), &log);
    assert_eq!(
        log.entries(),
        strs(&[
            "c: conn 2 read \"one\\n\"",
            "c: conn 3 read \"three\\n\"",
            "c: conn 2 still holds \"two\\n\"",
            "c: finish",
        ])
    );
}

#[test]
fn one_shot_timers_fire_once_at_their_deadline() {
    let log = Log::default();
    let l = log.clone();
    let deadlines: Rc<RefCell<Vec<(TimerId, Instant)>>> = Rc::default();
    let d = Rc::clone(&deadlines);
    let mut fired = 0;
    let cog = Probe::<u64>::new("t", &log)
        .supply()
        .on_start(move |cx| {
            let now = Instant::now();
            let mut d = d.borrow_mut();
            let after = Duration::from_millis(30);
            d.push((cx.timer_after(after, 1)?, now + after));
            let at = now + Duration::from_millis(10);
            d.push((cx.timer_at(at, 2)?, at));
            // A deadline already passed fires at once.
            let past = now.checked_sub(Duration::from_millis(5)).unwrap_or(now);
            d.push((cx.timer_at(past, 3)?, past));
            Ok(())
        })
        .on_wake(move |local, why, _, cx| {
            let Wake::Timer(id) = why else {
                l.push(format!("t: unexpected {why:?}"));
                return;
            };
            let (want_id, at) = deadlines.borrow()[local as usize - 1];
            l.push(format!(
                "t: timer {local} id_ok={} on_time={}",
                id == want_id,
                Instant::now() >= at
            ));
            // Fired one-shots are gone.
            assert!(!cx.cancel_timer(id));
            fired += 1;
            if fired == 3 {
                cx.exhausted();
            }
        });
    run_train(Train::new("t").cog(cog), &log);
    assert_eq!(
        log.entries(),
        strs(&[
            "t: timer 3 id_ok=true on_time=true",
            "t: timer 2 id_ok=true on_time=true",
            "t: timer 1 id_ok=true on_time=true",
            "t: finish",
            "t: done",
        ])
    );
}

/// A supply `t` that sets its timers in `set` and records `"t: <local>"` for each one that
/// fires, exhausted after the `n`th.
fn timer_recorder(
    log: &Log,
    n: usize,
    set: impl FnMut(&mut Ctx) -> Result<(), BoxError> + 'static,
) -> Probe<u64> {
    let l = log.clone();
    let mut fired = 0;
    Probe::new("t", log)
        .supply()
        .on_start(set)
        .on_wake(move |local, _, _, cx| {
            l.push(format!("t: {local}"));
            fired += 1;
            if fired == n {
                cx.exhausted();
            }
        })
}

#[test]
fn timers_fire_earliest_deadline_first() {
    let log = Log::default();
    let cog = timer_recorder(&log, 7, |cx| {
        let base = Instant::now();
        // Set out of order; local = deadline in ms.
        for ms in [50u32, 10, 40, 20, 30] {
            cx.timer_at(base + Duration::from_millis(ms.into()), ms)?;
        }
        // Equal deadlines keep the order they were set in.
        let tie = base + Duration::from_millis(25);
        cx.timer_at(tie, 26)?;
        cx.timer_at(tie, 25)?;
        Ok(())
    });
    run_train(Train::new("t").cog(cog), &log);
    assert_eq!(
        log.only(&["t: "]),
        strs(&[
            "t: 10",
            "t: 20",
            "t: 26",
            "t: 25",
            "t: 30",
            "t: 40",
            "t: 50",
            "t: finish",
            "t: done",
        ])
    );
}

#[test]
fn periodic_timer_ticks_until_cancelled() {
    let log = Log::default();
    let l = log.clone();
    let tick: Rc<Cell<Option<TimerId>>> = Rc::default();
    let t = Rc::clone(&tick);
    let mut ticks = 0;
    let cog = Probe::<u64>::new("t", &log)
        .supply()
        .on_start(move |cx| {
            assert!(cx.timer_every(Duration::ZERO, 9).is_err());
            t.set(Some(cx.timer_every(Duration::from_millis(10), 1)?));
            Ok(())
        })
        .on_wake(move |local, why, _, cx| match (local, why) {
            (1, Wake::Timer(id)) => {
                assert_eq!(Some(id), tick.get());
                ticks += 1;
                l.push(format!("t: tick {ticks}"));
                if ticks == 5 {
                    l.push(format!("t: cancel {}", cx.cancel_timer(id)));
                    l.push(format!("t: cancel again {}", cx.cancel_timer(id)));
                    // Long enough for several more periods: none may come.
                    cx.timer_after(Duration::from_millis(60), 2).unwrap();
                }
            }
            (2, Wake::Timer(_)) => {
                l.push("t: quiet");
                cx.exhausted();
            }
            (local, why) => l.push(format!("t: unexpected {local} {why:?}")),
        });
    run_train(Train::new("t").cog(cog), &log);
    assert_eq!(
        log.entries(),
        strs(&[
            "t: tick 1",
            "t: tick 2",
            "t: tick 3",
            "t: tick 4",
            "t: tick 5",
            "t: cancel true",
            "t: cancel again false",
            "t: quiet",
            "t: finish",
            "t: done",
        ])
    );
}

/// Records `"<name>: <local> <name of the entry>"` for every inotify event it gets.
fn inotify_line(name: &str, local: Local, why: &Wake<'_>) -> String {
    match why {
        Wake::Inotify(ev) => {
            let kind = if ev.mask.contains(EventMask::CREATE) {
                "create"
            } else if ev.mask.contains(EventMask::CLOSE_WRITE) {
                "close_write"
            } else {
                "other"
            };
            let entry = ev.name.map(|n| n.to_string_lossy().into_owned());
            format!("{name}: {local} {kind} {}", entry.unwrap_or_default())
        }
        other => format!("{name}: unexpected {local} {other:?}"),
    }
}

#[test]
fn inotify_events_reach_each_watcher_with_its_local() {
    let dir = TempDir::new("inotify");
    let log = Log::default();
    let wds: Rc<RefCell<Vec<WatchDescriptor>>> = Rc::default();

    let (l, w, p) = (log.clone(), Rc::clone(&wds), dir.path().to_owned());
    let creator = Probe::<u64>::new("a", &log)
        .supply()
        .on_start(move |cx| {
            assert!(cx.has_inotify());
            w.borrow_mut().push(cx.watch(&p, WatchMask::CREATE, 5)?);
            cx.enqueue(0);
            Ok(())
        })
        .on_wake({
            let p = dir.path().to_owned();
            move |local, why, _, cx| {
                if let Wake::Immediate = why {
                    std::fs::write(p.join("hello.txt"), b"hi").unwrap();
                    return;
                }
                l.push(inotify_line("a", local, &why));
                cx.exhausted();
            }
        });
    let (l, w, p) = (log.clone(), Rc::clone(&wds), dir.path().to_owned());
    let closer = Probe::<u64>::new("b", &log)
        .supply()
        .on_start(move |cx| {
            w.borrow_mut()
                .push(cx.watch(&p, WatchMask::CLOSE_WRITE, 6)?);
            Ok(())
        })
        .on_wake(move |local, why, _, cx| {
            l.push(inotify_line("b", local, &why));
            cx.exhausted();
        });

    let mut esc = Escapement::with_options(opts()).unwrap();
    assert!(esc.has_inotify());
    esc.add_train(Train::new("t").cog(creator).cog(closer))
        .unwrap();
    run(&mut esc, &log);
    assert_eq!(
        log.entries(),
        strs(&[
            "a: 5 create hello.txt",
            "b: 6 close_write hello.txt",
            "a: finish",
            "b: finish",
            "a: done",
            "b: done",
        ])
    );
    // One inode, one kernel watch shared by both cogs.
    let wds = wds.borrow();
    assert_eq!(wds[0], wds[1]);
}

#[test]
fn unwatch_stops_inotify_events_for_that_cog_only() {
    let dir = TempDir::new("unwatch");
    let log = Log::default();

    // Cog a watches, sees "a", unwatches and creates "b"; cog b shares the watch and must
    // still see "b", which a must not.
    let (l, p) = (log.clone(), dir.path().to_owned());
    let wd: Rc<RefCell<Option<WatchDescriptor>>> = Rc::default();
    let a = Probe::<u64>::new("a", &log)
        .supply()
        .on_start({
            let (p, wd) = (p.clone(), Rc::clone(&wd));
            move |cx| {
                *wd.borrow_mut() = Some(cx.watch(&p, WatchMask::CREATE, 1)?);
                cx.enqueue(0);
                Ok(())
            }
        })
        .on_wake(move |local, why, _, cx| match why {
            Wake::Immediate => std::fs::write(p.join("a"), b"").unwrap(),
            why => {
                l.push(inotify_line("a", local, &why));
                cx.unwatch(wd.borrow().as_ref().unwrap()).unwrap();
                std::fs::write(p.join("b"), b"").unwrap();
                cx.exhausted();
            }
        });
    let (l, p) = (log.clone(), dir.path().to_owned());
    let b = Probe::<u64>::new("b", &log)
        .supply()
        .on_start(move |cx| {
            cx.watch(&p, WatchMask::CREATE, 2)?;
            Ok(())
        })
        .on_wake(move |local, why, _, cx| {
            let line = inotify_line("b", local, &why);
            if line.ends_with(" b") {
                cx.exhausted();
            }
            l.push(line);
        });

    run_train(Train::new("t").cog(a).cog(b), &log);
    assert_eq!(
        log.entries(),
        strs(&[
            "a: 1 create a",
            "b: 2 create a",
            "b: 2 create b",
            "a: finish",
            "b: finish",
            "a: done",
            "b: done",
        ])
    );
}

#[test]
fn without_inotify_watch_fails_and_a_cog_can_poll_instead() {
    let dir = TempDir::new("noinotify");
    let log = Log::default();
    let (l, p) = (log.clone(), dir.path().to_owned());
    let target = dir.path().join("appeared");
    let cog = Probe::<u64>::new("poller", &log)
        .supply()
        .on_start(move |cx| {
            l.push(format!("poller: has_inotify {}", cx.has_inotify()));
            let err = cx.watch(&p, WatchMask::CREATE, 1).unwrap_err();
            l.push(format!("poller: watch {:?}", err.kind()));
            cx.timer_every(Duration::from_millis(5), 2)?;
            cx.enqueue(3);
            Ok(())
        })
        .on_wake({
            let l = log.clone();
            move |local, _, _, cx| match local {
                3 => std::fs::write(&target, b"").unwrap(),
                2 if target.exists() => {
                    l.push("poller: found by polling");
                    cx.exhausted();
                }
                _ => {}
            }
        });
    let mut esc = Escapement::with_options(Options {
        inotify: false,
        ..opts()
    })
    .unwrap();
    assert!(!esc.has_inotify());
    esc.add_train(Train::new("t").cog(cog)).unwrap();
    run(&mut esc, &log);
    assert_eq!(
        log.entries(),
        strs(&[
            "poller: has_inotify false",
            "poller: watch Unsupported",
            "poller: found by polling",
            "poller: finish",
            "poller: done",
        ])
    );
}

#[test]
fn a_timer_rearmed_for_now_waits_for_the_next_turn() {
    let log = Log::default();
    let other_ran: Rc<Cell<bool>> = Rc::default();
    let o = Rc::clone(&other_ran);
    let l = log.clone();
    let mut rounds = 0;
    // Re-arms itself "at once" from its own timer until the other cog got its turn: were
    // such timers fired in the same turn, the loop would spin here for ever.
    let eager = Probe::<u64>::new("eager", &log)
        .supply()
        .on_start(|cx| {
            cx.timer_at(cx.now(), 1)?;
            Ok(())
        })
        .on_wake(move |_, _, _, cx| {
            rounds += 1;
            if o.get() {
                l.push(format!("eager: other ran after {rounds} rounds"));
                cx.exhausted();
            } else {
                cx.timer_at(cx.now(), 1).unwrap();
            }
        });
    let o = Rc::clone(&other_ran);
    let other = Probe::<u64>::new("other", &log)
        .on_start(|cx| {
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |_, _, _, _| o.set(true));
    run_train(Train::new("t").cog(eager).cog(other), &log);
    assert_eq!(
        log.only(&["eager: other"]),
        strs(&["eager: other ran after 2 rounds"])
    );
}

#[test]
fn many_cancelled_timers_leave_the_live_ones_alone() {
    let log = Log::default();
    let cog = timer_recorder(&log, 4, |cx| {
        let base = Instant::now() + Duration::from_millis(5);
        // Far more cancelled than live timers, set in falling order.
        for i in (0..400u32).rev() {
            let id = cx.timer_at(base + Duration::from_micros(u64::from(i) * 10), i)?;
            if i % 100 != 0 {
                assert!(cx.cancel_timer(id));
            }
        }
        Ok(())
    });
    run_train(Train::new("t").cog(cog), &log);
    assert_eq!(
        log.only(&["t: "]),
        strs(&["t: 0", "t: 100", "t: 200", "t: 300", "t: finish", "t: done"])
    );
}

#[test]
fn a_watch_the_kernel_drops_ends_with_ignored() {
    let dir = TempDir::new("ignored");
    let file = dir.path().join("doomed");
    std::fs::write(&file, b"").unwrap();
    let log = Log::default();
    let l = log.clone();
    let wd: Rc<RefCell<Option<WatchDescriptor>>> = Rc::default();
    let w = Rc::clone(&wd);
    let f = file.clone();
    let cog = Probe::<u64>::new("w", &log)
        .supply()
        .on_start(move |cx| {
            *w.borrow_mut() = Some(cx.watch(&f, WatchMask::DELETE_SELF, 4)?);
            cx.enqueue(0);
            Ok(())
        })
        .on_wake(move |local, why, _, cx| match why {
            Wake::Immediate => std::fs::remove_file(&file).unwrap(),
            Wake::Inotify(ev) => {
                let kind = if ev.mask.contains(EventMask::DELETE_SELF) {
                    "delete_self"
                } else if ev.mask.contains(EventMask::IGNORED) {
                    "ignored"
                } else {
                    "other"
                };
                l.push(format!("w: {local} {kind}"));
                if kind == "ignored" {
                    // Already gone in the kernel: unwatching is harmless.
                    assert!(cx.unwatch(wd.borrow().as_ref().unwrap()).is_ok());
                    cx.exhausted();
                }
            }
            other => l.push(format!("w: unexpected {other:?}")),
        });
    run_train(Train::new("t").cog(cog), &log);
    assert_eq!(
        log.entries(),
        strs(&["w: 4 delete_self", "w: 4 ignored", "w: finish", "w: done"])
    );
}
