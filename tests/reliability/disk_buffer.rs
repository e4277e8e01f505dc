//! The disk buffer of `tcp_out` (issue 20): `udp_in` → `tcp_out` with `buffer = "disk"`
//! while the collector (a test listener) is down. Every datagram `udp_in` received is
//! delivered, in order, once the collector listens; across a kill -9 what was on disk is
//! delivered first after the restart (a torn last record cut, a foreign file skipped);
//! `drop_oldest` drops and counts; `block` pauses the supplies.
//!
//! Sizes: `DEADBEAT_DISK_DATAGRAMS` datagrams (default 200,000) over
//! `DEADBEAT_DISK_OUTAGE_S` seconds (default 4); `DEADBEAT_HEAVY=1` makes them the issue's
//! 1,000,000 over 60 s. The peak RSS is printed (`--nocapture`).

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

/// Bytes of each datagram: `seq NNNNNNNNN ` and padding.
const DATAGRAM: usize = 100;

fn heavy() -> bool {
    std::env::var("DEADBEAT_HEAVY").is_ok_and(|v| v == "1")
}

/// The datagrams of an outage and its seconds (see the module's sizes).
fn outage_size() -> (u64, u64) {
    if heavy() {
        (1_000_000, 60)
    } else {
        (
            env_num("DEADBEAT_DISK_DATAGRAMS", 200_000),
            env_num("DEADBEAT_DISK_OUTAGE_S", 4),
        )
    }
}

fn env_num(key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?}: not a number")),
        Err(_) => default,
    }
}

fn datagram(i: u64) -> Vec<u8> {
    let mut d = format!("seq {i:09} ").into_bytes();
    d.resize(DATAGRAM, b'x');
    d
}

fn seq_of(line: &str) -> Option<u64> {
    line.strip_prefix("seq ")?.get(..9)?.parse().ok()
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// A daemon `udp_in` (or another supply) → a forwarding drain (`tcp_out` unless said),
/// with `[http]` status.
struct Sender {
    d: Daemon,
    dir: PathBuf,
    udp: u16,
    http: u16,
    drain: &'static str,
}

fn config(dir: &Path, udp: u16, collector: u16, tcp_extra: &str) -> PathBuf {
    let drain = format!("type = \"tcp_out\"\naddress = \"127.0.0.1:{collector}\"\n{tcp_extra}");
    udp_config(dir, udp, &drain)
}

/// `udp_in` on port `udp` → `drain` (its keys) with `buffer = "disk"` and, unless the
/// keys set it, `drain_timeout = "5s"`.
fn udp_config(dir: &Path, udp: u16, drain: &str) -> PathBuf {
    let timeout = if drain.contains("drain_timeout") || drain.contains("shutdown_timeout") {
        ""
    } else {
        "drain_timeout = \"5s\"\n"
    };
    write_config(
        dir,
        &format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = \"state\"\n\
             [[train]]\nname = \"fwd\"\n[[train.cog]]\ntype = \"udp_in\"\n\
             listen = \"127.0.0.1:{udp}\"\nrecv_buffer = \"16MiB\"\n\
             [[train.cog]]\n{drain}\nbuffer = \"disk\"\n{timeout}"
        ),
    )
}

/// Writes `lines` datagrams, one a line, to `in.log` in `dir`; its path.
fn input_file(dir: &Path, lines: u64) -> PathBuf {
    let input = dir.join("in.log");
    let text: Vec<u8> = (0..lines)
        .flat_map(|i| {
            let mut d = datagram(i);
            d.push(b'\n');
            d
        })
        .collect();
    std::fs::write(&input, text).unwrap();
    input
}

impl Sender {
    fn start(dir: &Path, cfg: &Path, udp: u16) -> Sender {
        Sender::start_as(dir, cfg, udp, "tcp_out")
    }

    /// A sender whose `tail` reads `lines` datagrams from the beginning of a file into a
    /// drain of type `drain` with `keys` and `buffer = "disk"`.
    fn tail(dir: &Path, lines: u64, drain: &'static str, keys: &str) -> Sender {
        let input = input_file(dir, lines);
        let cfg = write_config(
            dir,
            &format!(
                "[http]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = \"state\"\n\
                 [[train]]\nname = \"fwd\"\n[[train.cog]]\ntype = \"tail\"\npaths = [{input:?}]\n\
                 start_at = \"beginning\"\n[[train.cog]]\ntype = \"{drain}\"\n{keys}\n\
                 buffer = \"disk\"\n"
            ),
        );
        Sender::start_as(dir, &cfg, 0, drain)
    }

    /// A sender whose drain is of type `drain`.
    fn start_as(dir: &Path, cfg: &Path, udp: u16, drain: &'static str) -> Sender {
        let from = std::fs::read_to_string(dir.join("err.log"))
            .unwrap_or_default()
            .len();
        let d = Daemon::start(cfg, Stdio::null());
        let mut http = 0;
        wait_for("the daemon to start", || {
            let log = d.stderr();
            let log = &log[from.min(log.len())..];
            if let Some(l) = log.lines().find(|l| l.contains("control server listening")) {
                http = l
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("listen="))
                    .and_then(|a| a.rsplit(':').next()?.parse().ok())
                    .unwrap_or(0);
            }
            http != 0 && log.contains("trains started")
        });
        Sender {
            d,
            dir: dir.to_path_buf(),
            udp,
            http,
            drain,
        }
    }

    fn status(&self) -> serde_json::Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.http)).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split_once("\r\n\r\n").map_or("", |b| b.1);
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// The status entry of the cog of type `ty`.
    fn cog(&self, ty: &str) -> serde_json::Value {
        let st = self.status();
        st["trains"][0]["cogs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == ty)
            .cloned()
            .unwrap_or_else(|| panic!("no {ty} in {st}"))
    }

    fn buffer(cog: &serde_json::Value, name: &str) -> u64 {
        cog["buffers"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == name))
            .and_then(|b| b["fill"].as_u64())
            .unwrap_or_else(|| panic!("no buffer {name} in {cog}"))
    }

    /// The records the drain's disk buffer holds.
    fn disk_records(&self) -> u64 {
        Sender::buffer(&self.cog(self.drain), "disk_records")
    }

    /// Waits until the drain has taken all `lines` with its peer away; asserts that most
    /// of them went to disk.
    fn takes_every_line_onto_disk(&self, lines: u64) {
        wait_for(&format!("{} to take every line", self.drain), || {
            self.cog(self.drain)["in"].as_u64() == Some(lines)
        });
        let cog = self.cog(self.drain);
        assert!(Sender::buffer(&cog, "disk_records") > lines / 2, "{cog}");
    }

    /// Stops a sender whose peer is away: it does not wait out `drain_timeout`, and its
    /// log says `said`. The stderr.
    fn stop_away(self, said: &str) -> String {
        let t = Instant::now();
        let err = self.d.stop();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "took {:?}",
            t.elapsed()
        );
        assert!(err.contains(said), "{err}");
        err
    }

    /// Waits until the disk buffer in `bdir` has sent its every segment, then stops.
    fn stop_once_sent(self, bdir: &Path) -> String {
        wait_for("the disk buffer to empty", || segments(bdir).is_empty());
        self.d.stop()
    }

    fn kill_9(mut self) {
        kill(self.d.id(), libc::SIGKILL);
        self.d.wait_exit();
    }

    /// Sends datagrams `from..to` paced over `over`.
    fn send(&self, from: u64, to: u64, over: Duration) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(("127.0.0.1", self.udp)).unwrap();
        let start = Instant::now();
        let n = (to - from).max(1);
        for i in from..to {
            s.send(&datagram(i)).unwrap();
            if i % 500 == 0 {
                // Paced: datagram i goes out at its share of `over`.
                let due = over.mul_f64((i - from) as f64 / n as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// Waits until the drain has every record `udp_in` received (stable for 300 ms); that
    /// count.
    fn settled(&self) -> u64 {
        let mut last = (u64::MAX, Instant::now());
        let mut received = 0;
        wait_within(
            &format!("{} to take every received datagram", self.drain),
            PATIENCE * 4,
            || {
                let st = self.status();
                let cogs = st["trains"][0]["cogs"].as_array().unwrap().clone();
                let get = |ty: &str, k: &str| {
                    cogs.iter()
                        .find(|c| c["type"] == ty)
                        .and_then(|c| c[k].as_u64())
                        .unwrap_or(0)
                };
                received = get("udp_in", "out");
                if received != get(self.drain, "in") {
                    return false;
                }
                if received != last.0 {
                    last = (received, Instant::now());
                }
                last.1.elapsed() > Duration::from_millis(300)
            },
        );
        received
    }

    fn peak_rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.d.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    fn buffer_dir(&self) -> PathBuf {
        let state = self.dir.join("state");
        std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("buffer-fwd-"))
            })
            .unwrap_or_else(|| panic!("no disk buffer directory under {}", state.display()))
    }
}

/// The seqs on disk in `bdir`, asserted to be `received` (`what` says which) and in order.
fn in_order_on_disk(bdir: &Path, received: u64, what: &str) -> Vec<u64> {
    let kept = on_disk(bdir);
    assert_eq!(kept.len() as u64, received, "{what}");
    assert_increasing(&kept);
    kept
}

/// Waits until the file `out` has `n` lines.
fn wait_lines(out: &Path, n: usize, patience: Duration) {
    wait_within("the collector to write every line", patience, || {
        line_count(out) >= n
    });
}

/// The seqs of the lines of the file `out`.
fn file_seqs(out: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(out).unwrap();
    text.lines().filter_map(seq_of).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// The sequence numbers of the records in the segment files, read as the format says
/// (magic, then length, CRC, frame per record), up to a record cut short.
fn on_disk(dir: &Path) -> Vec<u64> {
    let mut seqs = Vec::new();
    for p in segments(dir) {
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[..8], b"DBTBUF1\n", "{}", p.display());
        let mut at = 8;
        while at + 8 <= b.len() {
            let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            if at + 8 + len > b.len() {
                break;
            }
            // A line, a JSON line (http_out) or an XADD command (redis_out) holding it.
            let frame = String::from_utf8_lossy(&b[at + 8..at + 8 + len]);
            let seq = frame.find("seq ").and_then(|i| seq_of(&frame[i..]));
            seqs.push(seq.unwrap_or_else(|| panic!("frame {frame:?}")));
            at += 8 + len;
        }
    }
    seqs
}

/// A collector: every line it reads, in order.
#[derive(Clone)]
pub(super) struct Collector {
    lines: Arc<Mutex<Vec<String>>>,
    count: Arc<AtomicUsize>,
}

impl Collector {
    fn start(port: u16) -> Collector {
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        Collector::reading(move || l.accept().ok().map(|c| c.0))
    }

    /// A collector on the stream socket `path`.
    fn start_unix(path: &Path) -> Collector {
        let l = std::os::unix::net::UnixListener::bind(path).unwrap();
        Collector::reading(move || l.accept().ok().map(|c| c.0))
    }

    /// Reads every connection `accept` gives, until it gives none.
    fn reading<C: Read>(mut accept: impl FnMut() -> Option<C> + Send + 'static) -> Collector {
        let c = Collector::empty();
        let (lines, count) = (c.lines.clone(), c.count.clone());
        std::thread::spawn(move || {
            // Each connection is read to its end before the next is taken: a drain
            // reconnecting resends on a new one.
            while let Some(c) = accept() {
                for line in BufReader::with_capacity(1 << 20, c).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        c
    }

    fn empty() -> Collector {
        Collector {
            lines: Arc::new(Mutex::new(Vec::new())),
            count: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Takes lines read elsewhere.
    fn push(&self, lines: impl IntoIterator<Item = String>) {
        let mut all = self.lines.lock().unwrap();
        let before = all.len();
        all.extend(lines);
        self.count.fetch_add(all.len() - before, Ordering::Relaxed);
    }

    /// Every line read so far.
    pub(super) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub(super) fn wait_for(&self, n: usize, patience: Duration) {
        wait_within(
            &format!("the collector to have {n} lines"),
            patience,
            || self.count.load(Ordering::Relaxed) >= n,
        );
    }

    fn seqs(&self) -> Vec<u64> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|l| seq_of(l).unwrap_or_else(|| panic!("line {l:?}")))
            .collect()
    }

    /// The seqs of lines that hold one after other text (a JSON line).
    fn seqs_within(&self) -> Vec<u64> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|l| {
                l.find("seq ")
                    .and_then(|i| seq_of(&l[i..]))
                    .unwrap_or_else(|| panic!("line {l:?}"))
            })
            .collect()
    }
}

fn assert_increasing(seqs: &[u64]) {
    if let Some(w) = seqs.windows(2).find(|w| w[1] <= w[0]) {
        panic!("out of order or repeated: {} then {}", w[0], w[1]);
    }
}

#[test]
fn an_outage_spills_to_disk_and_every_received_datagram_arrives_in_order() {
    let (n, outage) = outage_size();
    let dir = TempDir::new("disk-buffer-outage");
    let (udp, collector) = (udp_port(), free_port());
    let cfg = config(dir.path(), udp, collector, "buffer_bytes = \"1MiB\"\n");
    let s = Sender::start(dir.path(), &cfg, udp);
    let started = Instant::now();
    s.send(0, n, Duration::from_secs(outage));
    let received = s.settled();
    let tcp = s.cog("tcp_out");
    let (disk_records, disk_bytes) = (
        Sender::buffer(&tcp, "disk_records"),
        Sender::buffer(&tcp, "disk_bytes"),
    );
    let bdir = s.buffer_dir();
    // With the collector away, nothing waits in memory only.
    assert_eq!(disk_records, received, "every received record on disk");
    assert!(!segments(&bdir).is_empty());
    let rss_outage = s.peak_rss_kib();
    let c = Collector::start(collector);
    c.wait_for(received as usize, PATIENCE * 4);
    wait_for("the disk buffer to empty", || {
        s.disk_records() == 0 && segments(&bdir).is_empty()
    });
    let rss = s.peak_rss_kib();
    let err = s.d.stop();
    let [_, got, _, _] = final_counters(&err, "udp_in");
    assert_eq!(got, received, "{err}");
    let seqs = c.seqs();
    assert_eq!(seqs.len() as u64, received, "delivered once each");
    assert_increasing(&seqs);
    println!(
        "disk buffer: {n} datagrams sent over {outage} s, {received} received, \
         {disk_records} records ({disk_bytes} bytes) on disk at the end of the outage, all \
         delivered in order {:.1} s after the start; peak RSS {rss_outage} KiB during the \
         outage, {rss} KiB after the replay",
        started.elapsed().as_secs_f64()
    );
    // Bounded: the records held in memory are `buffer_bytes`, not the outage.
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB");
}

#[test]
fn after_a_kill_9_what_was_on_disk_goes_first_and_a_torn_record_is_cut() {
    let n = env_num("DEADBEAT_DISK_KILL_DATAGRAMS", 50_000);
    let dir = TempDir::new("disk-buffer-kill9");
    let (udp, collector) = (udp_port(), free_port());
    let cfg = config(dir.path(), udp, collector, "buffer_bytes = \"64KiB\"\n");
    let s = Sender::start(dir.path(), &cfg, udp);
    s.send(0, n, Duration::from_secs(1));
    s.settled();
    let bdir = s.buffer_dir();
    s.kill_9();
    let kept = on_disk(&bdir);
    assert!(kept.len() > 1000, "{} records on disk", kept.len());
    assert_increasing(&kept);
    // A write cut by the kill: a header announcing 200 bytes and only 20 of them.
    let last = segments(&bdir).pop().unwrap();
    let mut f = OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all(&200u32.to_le_bytes()).unwrap();
    f.write_all(&[0x55; 24]).unwrap();
    drop(f);
    std::fs::write(bdir.join("README"), "a foreign file").unwrap();
    let c = Collector::start(collector);
    let s = Sender::start(dir.path(), &cfg, udp);
    let err = s.d.stderr();
    assert!(err.contains("torn or corrupt record"), "{err}");
    assert!(err.contains("not a segment"), "{err}");
    // Newer datagrams follow what the disk held.
    s.send(n, n + 1000, Duration::from_millis(100));
    let received = s.settled();
    c.wait_for(kept.len() + received as usize, PATIENCE);
    let err = s.d.stop();
    let seqs = c.seqs();
    assert_eq!(
        &seqs[..kept.len()],
        &kept[..],
        "the disk's records first, in order"
    );
    assert_eq!(seqs.len(), kept.len() + received as usize, "{err}");
    assert_increasing(&seqs);
    assert!(seqs[kept.len()..].iter().all(|&q| q >= n));
    println!(
        "kill -9: {} records on disk delivered after the restart, then {received} new",
        kept.len()
    );
}

#[test]
fn drop_oldest_drops_whole_segments_and_counts_them() {
    let dir = TempDir::new("disk-buffer-drop");
    let (udp, collector) = (udp_port(), free_port());
    let cfg = config(
        dir.path(),
        udp,
        collector,
        "buffer_bytes = \"64KiB\"\nmax_bytes = \"1MiB\"\nwhen_full = \"drop_oldest\"\n",
    );
    let s = Sender::start(dir.path(), &cfg, udp);
    s.send(0, 40_000, Duration::from_secs(1));
    let received = s.settled();
    let tcp = s.cog("tcp_out");
    let dropped = tcp["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "{tcp}");
    assert!(Sender::buffer(&tcp, "disk_bytes") <= 1 << 20, "{tcp}");
    let c = Collector::start(collector);
    c.wait_for((received - dropped) as usize, PATIENCE);
    let err = s.d.stop();
    assert!(err.contains("oldest segment dropped"), "{err}");
    let [_, _, d, _] = final_counters(&err, "tcp_out");
    assert_eq!(d, dropped);
    let seqs = c.seqs();
    assert_eq!(seqs.len() as u64, received - dropped);
    assert_increasing(&seqs);
}

/// drop_oldest after an adoption: the collector takes the connection and reads nothing,
/// so memory holds every record (3 MB, under buffer_bytes), then it resets; the drain
/// adopts them to disk, where they are more than max_bytes, and drop_oldest deletes
/// their segment. They are in memory only then: not reported as on disk; the stop (the
/// collector away) drops them, counted once and said at error level.
#[test]
fn drop_oldest_after_an_adoption_counts_what_memory_alone_held_at_the_stop() {
    use std::os::fd::AsRawFd;
    let dir = TempDir::new("disk-buffer-drop-adopted");
    let (udp, collector) = (udp_port(), free_port());
    let l = TcpListener::bind(("127.0.0.1", collector)).unwrap();
    let small: libc::c_int = 4096;
    // SAFETY: the option value is a c_int of the given size, on a descriptor we own.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let cfg = config(
        dir.path(),
        udp,
        collector,
        "buffer_bytes = \"4MiB\"\nmax_bytes = \"1MiB\"\nwhen_full = \"drop_oldest\"\n\
         reconnect_initial = \"20ms\"\nreconnect_max = \"200ms\"\n",
    );
    let s = Sender::start(dir.path(), &cfg, udp);
    let (c, _) = l.accept().unwrap();
    s.send(0, 30_000, Duration::from_secs(1));
    let received = s.settled();
    // What the collector's kernel took (acknowledged, then discarded by the reset).
    let mut taken = 0;
    wait_for("the collector's window to fill", || {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int.
        unsafe { libc::ioctl(c.as_raw_fd(), libc::FIONREAD, &mut n) };
        let stable = n as usize == taken && taken > 0;
        taken = n as usize;
        std::thread::sleep(Duration::from_millis(50));
        stable
    });
    // Unread data: the close resets the connection.
    drop(c);
    drop(l);
    wait_for("the adopted segment to be dropped", || {
        s.d.stderr().contains("oldest segment dropped")
    });
    let tcp = s.cog("tcp_out");
    let said = Sender::buffer(&tcp, "disk_records");
    assert!(
        Sender::buffer(&tcp, "disk_bytes") <= 1 << 20,
        "over max_bytes: {tcp}"
    );
    let bdir = s.buffer_dir();
    let err = s.stop_away("stopping with the peer away");
    let left = on_disk(&bdir).len() as u64;
    assert!(said <= left, "{said} records said on disk, {left} there");
    let [_, _, dropped, _] = final_counters(&err, "tcp_out");
    eprintln!(
        "received {received}, said on disk {said}, left {left}, dropped {dropped}, taken {taken} B"
    );
    let lost = err
        .lines()
        .find(|l| l.contains("stopping before the peer confirmed the records held in memory"))
        .unwrap_or_else(|| panic!("no loss of memory's records reported:\n{err}"));
    assert!(lost.contains("ERRO"), "{lost}");
    // Every record received is dropped once, left on disk, or was taken by the collector's
    // kernel (a record of which it took part is sent again).
    let acked = (taken / DATAGRAM) as u64 + 1;
    assert!(
        dropped + left <= received && dropped + left + acked >= received,
        "received {received}: {dropped} dropped, {left} on disk, at most {acked} taken:\n{err}"
    );
}

#[test]
fn block_pauses_the_supply_when_the_disk_buffer_is_full() {
    let dir = TempDir::new("disk-buffer-block");
    let collector = free_port();
    let lines = 40_000u64;
    let s = Sender::tail(
        dir.path(),
        lines,
        "tcp_out",
        &format!(
            "address = \"127.0.0.1:{collector}\"\nbuffer_bytes = \"64KiB\"\nmax_bytes = \"1MiB\""
        ),
    );
    // The drain stops taking records once the disk holds max_bytes: the supply is held.
    let mut last = (0, Instant::now());
    wait_for("the drain to stop taking records", || {
        let n = s.cog("tcp_out")["in"].as_u64().unwrap();
        if n != last.0 {
            last = (n, Instant::now());
        }
        n > 0 && last.1.elapsed() > Duration::from_millis(500)
    });
    let tcp = s.cog("tcp_out");
    assert!(last.0 < lines, "paused at {} of {lines}", last.0);
    assert!(Sender::buffer(&tcp, "disk_bytes") >= 1 << 20, "{tcp}");
    assert_eq!(tcp["dropped"], 0, "{tcp}");
    let c = Collector::start(collector);
    c.wait_for(lines as usize, PATIENCE);
    let err = s.d.stop();
    let seqs = c.seqs();
    assert_eq!(seqs.len() as u64, lines, "{err}");
    assert_increasing(&seqs);
}

#[test]
fn a_bad_disk_buffer_setting_names_its_key() {
    let dir = TempDir::new("disk-buffer-config");
    let cfg = config(
        dir.path(),
        udp_port(),
        free_port(),
        "max_bytes = \"10KiB\"\n",
    );
    let out = Command::new(BIN)
        .args(["check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("key \"max_bytes\""), "{err}");
    // Without a directory (no configuration file, so no `[state] dir`), the key to give
    // is named.
    let e = deadbeat::cogs::net::tcp_out::from_settings(
        &deadbeat::cogs::net::tcp_out::TcpOutSettings {
            address: "127.0.0.1:514".into(),
            buffer: deadbeat::kit::disk_buffer::BufferSettings {
                buffer: deadbeat::kit::disk_buffer::BufferKind::Disk,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .err()
    .expect("refused");
    assert_eq!(e.key, "buffer_dir");
}

#[test]
fn relp_out_spills_to_disk_and_sends_it_all_in_order_once_the_server_listens() {
    let dir = TempDir::new("disk-buffer-relp");
    let relp = free_port();
    let lines = 30_000u64;
    let s = Sender::tail(
        dir.path(),
        lines,
        "relp_out",
        &format!("address = \"127.0.0.1:{relp}\"\nbuffer_bytes = \"64KiB\""),
    );
    // Every line reaches the drain although the server is away: the disk takes them.
    s.takes_every_line_onto_disk(lines);
    // The collector: relp_in → file_out.
    let cdir = dir.path().join("collector");
    let out = cdir.join("out.log");
    let c = relp_collector(&cdir, relp, &out);
    wait_lines(&out, lines as usize, PATIENCE * 2);
    wait_for("the disk buffer to empty", || s.disk_records() == 0);
    s.d.stop();
    c.stop();
    assert_eq!(file_seqs(&out), (0..lines).collect::<Vec<_>>());
}

/// `redis-server` and `redis-cli` on the PATH, or why the test skips.
fn redis_bins() -> Option<(PathBuf, PathBuf)> {
    let path = std::env::var_os("PATH")?;
    let find = |name: &str| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    match (find("redis-server"), find("redis-cli")) {
        (Some(s), Some(c)) => Some((s, c)),
        _ => {
            eprintln!(
                "skipped: redis-server or redis-cli is not installed (apt-get install redis-server)"
            );
            None
        }
    }
}

/// A `redis-server` on `port`, killed when dropped, and its `redis-cli`.
struct Redis {
    server: Child,
    cli: PathBuf,
    port: u16,
}

impl Redis {
    fn start(server: &Path, cli: PathBuf, port: u16, dir: &Path) -> Redis {
        let server = Command::new(server)
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Redis { server, cli, port }
    }

    /// What `redis-cli` prints for `args`.
    fn cli(&self, args: &[&str]) -> String {
        let o = Command::new(&self.cli)
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Waits until the stream `s` holds `n` entries.
    fn wait_len(&self, n: usize, patience: Duration) {
        wait_within("redis to hold every line", patience, || {
            self.cli(&["XLEN", "s"]).trim().parse::<usize>().ok() == Some(n)
        });
    }

    /// The seqs of the stream `s`, in order.
    fn seqs(&self) -> Vec<u64> {
        self.cli(&["XRANGE", "s", "-", "+"])
            .lines()
            .filter_map(seq_of)
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn redis_out_spills_to_disk_and_adds_it_all_in_order_once_redis_is_up() {
    let Some((server, cli)) = redis_bins() else {
        return;
    };
    let dir = TempDir::new("disk-buffer-redis");
    let port = free_port();
    let lines = 20_000u64;
    let s = Sender::tail(
        dir.path(),
        lines,
        "redis_out",
        &format!("address = \"127.0.0.1:{port}\"\nstream = \"s\"\nbuffer_bytes = \"64KiB\""),
    );
    s.takes_every_line_onto_disk(lines);
    let redis = Redis::start(&server, cli, port, dir.path());
    redis.wait_len(lines as usize, PATIENCE * 2);
    wait_for("the disk buffer to empty", || s.disk_records() == 0);
    s.d.stop();
    assert_eq!(redis.seqs(), (0..lines).collect::<Vec<_>>());
}

/// A minimal HTTP/1.1 server on `port`: every body line it was POSTed, in order; answers
/// `200` to each request.
pub(super) fn http_collector(port: u16) -> Collector {
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let lines = Collector::empty();
    let got = lines.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut r = BufReader::new(c.try_clone().unwrap());
            loop {
                let mut len = None;
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse::<usize>().ok();
                    }
                }
                let Some(len) = len else { break };
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_err() {
                    break;
                }
                let text = String::from_utf8_lossy(&body).into_owned();
                got.push(text.lines().map(str::to_string));
                if c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    lines
}

#[test]
fn http_out_spills_to_disk_and_posts_it_all_in_order_once_the_server_listens() {
    let dir = TempDir::new("disk-buffer-http");
    let port = free_port();
    let lines = 30_000u64;
    let s = Sender::tail(
        dir.path(),
        lines,
        "http_out",
        &format!(
            "url = \"http://127.0.0.1:{port}/ingest\"\nmax_buffered_bytes = \"256KiB\"\n\
             batch_bytes = \"64KiB\"\nbackoff_max = \"200ms\""
        ),
    );
    s.takes_every_line_onto_disk(lines);
    let got = http_collector(port);
    got.wait_for(lines as usize, PATIENCE * 2);
    wait_for("the disk buffer to empty", || s.disk_records() == 0);
    s.d.stop();
    assert_eq!(got.seqs_within(), (0..lines).collect::<Vec<_>>());
}

/// The seqs of `bytes` read by a collector, whole lines only (a line cut by a closed
/// connection is left out: it is sent again whole).
fn whole_lines(bytes: &[u8]) -> Vec<u64> {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&bytes[..end])
        .lines()
        .map(|l| seq_of(l).unwrap_or_else(|| panic!("line {l:?}")))
        .collect()
}

#[test]
fn after_a_kill_9_mid_outage_every_received_datagram_arrives_once_in_order() {
    let (n, outage) = outage_size();
    let half = Duration::from_secs(outage) / 2;
    let dir = TempDir::new("disk-buffer-outage-kill9");
    let (udp, collector) = (udp_port(), free_port());
    let cfg = config(dir.path(), udp, collector, "buffer_bytes = \"1MiB\"\n");
    let s = Sender::start(dir.path(), &cfg, udp);
    let started = Instant::now();
    s.send(0, n / 2, half);
    let before = s.settled();
    assert_eq!(s.disk_records(), before, "every received record on disk");
    let rss_first = s.peak_rss_kib();
    let bdir = s.buffer_dir();
    s.kill_9();
    let kept = in_order_on_disk(&bdir, before, "what the killed sender had received");
    // The outage goes on across the restart.
    let s = Sender::start(dir.path(), &cfg, udp);
    s.send(n / 2, n, half);
    let after = s.settled();
    let rss_second = s.peak_rss_kib();
    let c = Collector::start(collector);
    c.wait_for((before + after) as usize, PATIENCE * 4);
    wait_for("the disk buffer to empty", || {
        s.disk_records() == 0 && segments(&bdir).is_empty()
    });
    let err = s.d.stop();
    let seqs = c.seqs();
    assert_eq!(
        &seqs[..kept.len()],
        &kept[..],
        "the killed run's records first"
    );
    assert_eq!(seqs.len() as u64, before + after, "each once: {err}");
    assert_increasing(&seqs);
    assert!(seqs[kept.len()..].iter().all(|&q| q >= n / 2));
    println!(
        "kill -9 mid-outage: {n} datagrams over {outage} s, {before} received before the \
         kill (all on disk), {after} after the restart, all delivered once in order {:.1} s \
         after the start; peak RSS {rss_first} KiB before the kill, {rss_second} KiB after",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_graceful_stop_mid_outage_keeps_every_received_datagram_on_disk() {
    let dir = TempDir::new("disk-buffer-stop");
    let (udp, collector) = (udp_port(), free_port());
    // A long drain_timeout: the stop must not wait for a peer that is away.
    let cfg = config(
        dir.path(),
        udp,
        collector,
        "buffer_bytes = \"1MiB\"\ndrain_timeout = \"60s\"\n",
    );
    let s = Sender::start(dir.path(), &cfg, udp);
    s.send(0, 50_000, Duration::from_secs(1));
    let received = s.settled();
    let bdir = s.buffer_dir();
    let err = s.stop_away("stopping with the peer away");
    let [_, got, _, _] = final_counters(&err, "udp_in");
    assert_eq!(got, received, "{err}");
    let kept = in_order_on_disk(&bdir, received, "every received record on disk");
    // The next run delivers them, once each, in order.
    let c = Collector::start(collector);
    let s = Sender::start(dir.path(), &cfg, udp);
    c.wait_for(kept.len(), PATIENCE);
    s.stop_once_sent(&bdir);
    assert_eq!(c.seqs(), kept);
}

/// The collector of the RELP tests: `relp_in` on `port` → `file_out` to `out`.
fn relp_collector(dir: &Path, port: u16, out: &Path) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = write_config(
        dir,
        &format!(
            "[[train]]\nname = \"c\"\n[[train.cog]]\ntype = \"relp_in\"\n\
             listen = \"127.0.0.1:{port}\"\n[[train.cog]]\ntype = \"file_out\"\npath = {out:?}\n"
        ),
    );
    Daemon::start(&cfg, Stdio::null())
}

#[test]
fn a_graceful_stop_of_relp_out_mid_outage_keeps_every_received_datagram() {
    let dir = TempDir::new("disk-buffer-relp-stop");
    let (udp, relp) = (udp_port(), free_port());
    let cfg = udp_config(
        dir.path(),
        udp,
        &format!(
            "type = \"relp_out\"\naddress = \"127.0.0.1:{relp}\"\nbuffer_bytes = \"1MiB\"\n\
             drain_timeout = \"60s\""
        ),
    );
    let s = Sender::start_as(dir.path(), &cfg, udp, "relp_out");
    s.send(0, 50_000, Duration::from_secs(1));
    let received = s.settled();
    let bdir = s.buffer_dir();
    s.stop_away("stopping with the server away");
    let kept = in_order_on_disk(&bdir, received, "every received record on disk");
    let out = dir.path().join("collected.log");
    let c = relp_collector(&dir.path().join("collector"), relp, &out);
    let s = Sender::start_as(dir.path(), &cfg, udp, "relp_out");
    wait_lines(&out, kept.len(), PATIENCE);
    s.stop_once_sent(&bdir);
    c.stop();
    assert_eq!(file_seqs(&out), kept);
}

#[test]
fn a_stop_with_a_stalled_collector_puts_what_it_did_not_confirm_on_disk() {
    let dir = TempDir::new("disk-buffer-stalled");
    let (udp, port) = (udp_port(), free_port());
    // A collector that accepts and never reads: its kernel acknowledges what its receive
    // buffer takes, then the window closes.
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (gone, wait_gone) = std::sync::mpsc::channel::<()>();
    let stalled = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        drop(l);
        // Read only once the sender has stopped (it closed the connection).
        let _ = wait_gone.recv();
        // The sender resets the connection: what the kernel took is read, then the reset.
        let mut b = Vec::new();
        let mut chunk = vec![0; 1 << 16];
        while let Ok(n @ 1..) = c.read(&mut chunk) {
            b.extend_from_slice(&chunk[..n]);
        }
        b
    });
    let cfg = config(
        dir.path(),
        udp,
        port,
        "buffer_bytes = \"1MiB\"\ndrain_timeout = \"1s\"\n",
    );
    let s = Sender::start(dir.path(), &cfg, udp);
    // More than the sockets between them hold (20 MB of datagrams).
    s.send(0, 200_000, Duration::from_secs(2));
    let received = s.settled();
    let bdir = s.buffer_dir();
    let err = s.d.stop();
    assert!(
        err.contains("the records the peer did not acknowledge stay in the disk buffer"),
        "{err}"
    );
    gone.send(()).unwrap();
    // What the collector's kernel acknowledged, read now that the sender has gone.
    let first = whole_lines(&stalled.join().unwrap());
    assert!(!first.is_empty() && (first.len() as u64) < received);
    assert_eq!(first, (0..first.len() as u64).collect::<Vec<_>>());
    // The rest was on disk: the next run sends it, and nothing twice.
    let c = Collector::start(port);
    let s = Sender::start(dir.path(), &cfg, udp);
    c.wait_for((received as usize) - first.len(), PATIENCE);
    s.stop_once_sent(&bdir);
    let mut all = first.clone();
    all.extend(c.seqs());
    assert_eq!(all.len() as u64, received, "each once");
    assert_increasing(&all);
    println!(
        "stalled collector: {received} received, {} acknowledged by the collector's kernel, \
         the other {} kept on disk and sent by the next run",
        first.len(),
        received as usize - first.len()
    );
}

#[test]
fn tcp_out_over_tls_sends_its_disk_buffer_in_order_once_the_server_listens() {
    let dir = TempDir::new("disk-buffer-tls");
    let Some(pki) = crate::net::tls::Pki::new(dir.path()) else {
        return;
    };
    let (udp, port) = (udp_port(), free_port());
    let cfg = udp_config(
        dir.path(),
        udp,
        &format!(
            "type = \"tcp_out\"\naddress = \"localhost:{port}\"\nbuffer_bytes = \"64KiB\"\n\
             tls = {{ ca = {:?} }}",
            pki.path("ca.pem")
        ),
    );
    let s = Sender::start(dir.path(), &cfg, udp);
    s.send(0, 50_000, Duration::from_secs(1));
    let received = s.settled();
    assert_eq!(s.disk_records(), received, "every received record on disk");
    let out = dir.path().join("collected.log");
    let cdir = dir.path().join("collector");
    std::fs::create_dir_all(&cdir).unwrap();
    let ccfg = write_config(
        &cdir,
        &format!(
            "[[train]]\nname = \"c\"\n[[train.cog]]\ntype = \"tcp_in\"\n\
             listen = \"127.0.0.1:{port}\"\nframing = \"newline\"\n\
             tls = {{ cert = {:?}, key = {:?} }}\n[[train.cog]]\ntype = \"file_out\"\n\
             path = {out:?}\n",
            pki.path("server.pem"),
            pki.path("server.key")
        ),
    );
    let c = Daemon::start(&ccfg, Stdio::null());
    wait_lines(&out, received as usize, PATIENCE);
    wait_for("the disk buffer to empty", || s.disk_records() == 0);
    let err = s.d.stop();
    assert!(err.contains("tls=true"), "{err}");
    c.stop();
    let seqs = file_seqs(&out);
    assert_eq!(seqs.len() as u64, received);
    assert_increasing(&seqs);
}

/// A kill -9 and then a graceful stop of a sender whose server is away: after each, every
/// datagram it received is on disk, in order; the stop does not wait for the server. Returns
/// those seqs.
fn kill_then_stop_while_away(dir: &Path, cfg: &Path, udp: u16, drain: &'static str) -> Vec<u64> {
    let s = Sender::start_as(dir, cfg, udp, drain);
    s.send(0, 20_000, Duration::from_millis(500));
    let before = s.settled();
    assert_eq!(s.disk_records(), before, "every received record on disk");
    let bdir = s.buffer_dir();
    s.kill_9();
    let kept = in_order_on_disk(&bdir, before, "what the killed sender had received");
    let s = Sender::start_as(dir, cfg, udp, drain);
    s.send(20_000, 40_000, Duration::from_millis(500));
    let after = s.settled();
    let err = s.stop_away("stopping with the server away");
    let kept2 = on_disk(&bdir);
    assert_eq!(&kept2[..kept.len()], &kept[..]);
    assert_eq!(kept2.len() as u64, before + after, "{err}");
    assert_increasing(&kept2);
    kept2
}

#[test]
fn http_out_keeps_every_received_datagram_across_a_kill_9_and_a_stop_while_the_server_is_away() {
    let dir = TempDir::new("disk-buffer-http-kill9");
    let (udp, port) = (udp_port(), free_port());
    let cfg = udp_config(
        dir.path(),
        udp,
        &format!(
            "type = \"http_out\"\nurl = \"http://127.0.0.1:{port}/ingest\"\n\
             max_buffered_bytes = \"1MiB\"\nbatch_bytes = \"64KiB\"\nbackoff_max = \"200ms\"\n\
             shutdown_timeout = \"60s\""
        ),
    );
    let kept = kill_then_stop_while_away(dir.path(), &cfg, udp, "http_out");
    let got = http_collector(port);
    let s = Sender::start_as(dir.path(), &cfg, udp, "http_out");
    got.wait_for(kept.len(), PATIENCE);
    let bdir = s.buffer_dir();
    s.stop_once_sent(&bdir);
    assert_eq!(got.seqs_within(), kept, "each once, in order");
}

#[test]
fn redis_out_keeps_every_received_datagram_across_a_kill_9_and_a_stop_while_redis_is_away() {
    let Some((server, cli)) = redis_bins() else {
        return;
    };
    let dir = TempDir::new("disk-buffer-redis-kill9");
    let (udp, port) = (udp_port(), free_port());
    let cfg = udp_config(
        dir.path(),
        udp,
        &format!(
            "type = \"redis_out\"\naddress = \"127.0.0.1:{port}\"\nstream = \"s\"\n\
             buffer_bytes = \"1MiB\"\ndrain_timeout = \"60s\""
        ),
    );
    let kept = kill_then_stop_while_away(dir.path(), &cfg, udp, "redis_out");
    let redis = Redis::start(&server, cli, port, dir.path());
    let s = Sender::start_as(dir.path(), &cfg, udp, "redis_out");
    redis.wait_len(kept.len(), PATIENCE);
    let bdir = s.buffer_dir();
    s.stop_once_sent(&bdir);
    assert_eq!(redis.seqs(), kept, "each once, in order");
}

#[test]
fn unix_out_stopped_with_its_socket_absent_keeps_every_received_datagram_and_sends_it_later() {
    let dir = TempDir::new("disk-buffer-unix-stop");
    let udp = udp_port();
    let sock = dir.path().join("collector.sock");
    let cfg = udp_config(
        dir.path(),
        udp,
        &format!(
            "type = \"unix_out\"\npath = {sock:?}\nmode = \"stream\"\nbuffer_bytes = \"1MiB\"\n\
             drain_timeout = \"60s\""
        ),
    );
    let s = Sender::start_as(dir.path(), &cfg, udp, "unix_out");
    s.send(0, 20_000, Duration::from_millis(500));
    let received = s.settled();
    let bdir = s.buffer_dir();
    s.stop_away("stopping with the peer away");
    let kept = in_order_on_disk(&bdir, received, "every received record on disk");
    // The collector's socket appears: the next run sends what the disk held.
    let c = Collector::start_unix(&sock);
    let s = Sender::start_as(dir.path(), &cfg, udp, "unix_out");
    c.wait_for(kept.len(), PATIENCE);
    s.stop_once_sent(&bdir);
    assert_eq!(c.seqs(), kept, "each once, in order");
}
