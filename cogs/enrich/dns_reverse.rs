//! `dns_reverse`: the host name of an address, from PTR lookups that never block the loop.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;

use crate::kit::keyed::{FastMap, FastState, Keyed, StateCodec};
use crate::kit::on_error::{self, LogLimiter, OnError, OnErrorSettings};
use crate::kit::prefetch_line;
use crate::kit::{BuildCx, CogDescriptor, CogKind};
use crate::prelude::*;
use crate::record::{self, Record, SharedStr, Value, parse_ip, write_ip};
use crate::schema::{CogParams, ConfigError, SettingError, Settings};

/// The format name and version of the cache's state file.
const FORMAT: &str = "dns_reverse";
const VERSION: u32 = 1;

/// Locals: the sockets are 0..n (the server's index); these are above any.
const TIMEOUTS: Local = 0xFFFF_0000;
const FINISH: Local = 0xFFFF_0001;

/// The most servers taken from `/etc/resolv.conf` (as the C library does).
const MAX_RESOLV_SERVERS: usize = 3;
/// The bound on `max_in_flight`.
const MAX_IN_FLIGHT: usize = 16_384;
/// The bound on `max_queries`: query ids are 16 bits and each query on the wire holds one.
const MAX_QUERIES: usize = 4096;
/// The window a server starts with, and the least it shrinks to.
const FIRST_WINDOW: usize = 16;
const MIN_WINDOW: usize = 2;
/// The receive buffer asked for each socket (the kernel caps it at `net.core.rmem_max`):
/// room for late answers besides the window's.
const RECV_BUFFER: i32 = 1 << 20;
/// The largest answer read: a PTR answer over UDP without EDNS is at most 512 bytes, but
/// servers that add records may send more; longer datagrams are cut and then fail to parse.
const MAX_ANSWER: usize = 4096;
/// Datagrams sent or read in one system call (`sendmmsg`, `recvmmsg`).
const BATCH: usize = 32;

/// Writes into `target` the host name of the address in `field`, from a reverse (PTR)
/// lookup: `10.1.2.3` is asked as `3.2.1.10.in-addr.arpa`, an IPv6 address as its 32
/// nibbles under `ip6.arpa`. An address without a name (NXDOMAIN, no PTR record), or whose
/// lookup failed (SERVFAIL, no answer after `retries`), is passed on with `target`
/// untouched; so is a datum whose `field` is absent or null. A `field` holding anything
/// else than an address follows `on_error` (counted as an error).
///
/// **Non-blocking, in order.** Queries go out on UDP sockets registered with the event
/// loop (one per server, connected, on a port the kernel picks at random); answers are
/// read as they come, and the loop goes on meanwhile. Data leave in the order they came:
/// a datum waits only for the answers of the data ahead of it in this cog. The cog holds
/// at most `max_in_flight` data waiting; when full it pauses the train's supplies (data
/// already on their way are still taken) and resumes them once half are out. An address
/// whose lookup is in flight is not asked again: the data wanting it wait for the one
/// answer.
///
/// **Paced.** At most a window of queries is on the wire to a server at once; the others
/// wait their turn (in order, retries first). The window starts at 16 (at most
/// `max_queries`), grows by one per answer up to `max_queries`, and halves (at least 2)
/// when a query times out, at most once per `timeout`: a burst larger than the server
/// reads at once would overflow its receive buffer and be lost, each loss costing a
/// `timeout`. Queries of one length go out together as one segmented send
/// (`UDP_SEGMENT`, one datagram a query; else 32 a `sendmmsg`), answers are read 32 a
/// system call (`recvmmsg`); each socket asks for a receive buffer of 1 MiB (capped by
/// `net.core.rmem_max`).
///
/// **Cache.** Answers are kept for their TTL, at most `cache_max_ttl`; failures (NXDOMAIN,
/// no PTR, SERVFAIL, refused, no answer) for `negative_ttl`. The cache is keyed by the
/// address itself (its text is read straight into the 4 or 16 octets), so two spellings
/// of one address (`::1`, `0::1`) share an entry. At most `max_entries`
/// addresses are kept; when full, the one cached longest ago is forgotten. With
/// `persist = true` the cache is saved under `` `[state]` `` `dir` at shutdown (file
/// `dns_reverse-TRAIN-COG-HASH.state`) and loaded at start, so a restart does not ask
/// again for what is still fresh; a file that cannot be read is logged and ignored.
///
/// **Answers** are taken only from the server asked, with the query's id (random per
/// query) and its question; anything else (a spoofed or late answer, garbage) is ignored
/// and counted. A CNAME chain (classless delegation, RFC 2317) is followed inside the
/// answer; the first PTR record gives the name, written without its final dot. Each query
/// waits `timeout`, then is sent again, to the next server, up to `retries` times.
///
/// **Shutdown.** Data still waiting for answers are held up to `timeout`, then passed on
/// without a host name (counted): nothing is lost.
///
/// Servers are `servers` (`"IP"` or `"IP:PORT"`, port 53 by default), else the
/// `nameserver` lines of `/etc/resolv.conf` (at most 3), else `127.0.0.1:53`. The counts
/// (answers, cache hits, failures, ignored answers...) are logged at shutdown.
///
/// ```toml
/// [[train.cog]]
/// type = "dns_reverse"
/// field = "client"
/// target = "hostname"
/// servers = ["127.0.0.1:5353"]   # default: /etc/resolv.conf
/// timeout = "2s"
/// retries = 2
/// max_in_flight = 1000
/// max_queries = 128               # on the wire to one server at once
/// max_entries = 100000
/// cache_max_ttl = "1h"
/// negative_ttl = "5m"
/// persist = false
/// on_error = "keep"               # for a field that is not an address
/// ```
///
/// From Rust, over any datum, with a getter of the address, a setter of the name, an
/// [`OnError`] and the state file (or `None`):
/// `DnsReverse::from_settings(&DnsReverseSettings { servers: vec!["127.0.0.1:5353".into()], ..Default::default() }, get, set, on_error, None)`.
pub struct DnsReverse<D> {
    get: Getter<D, Value>,
    set: Setter<D, Value>,
    on_error: OnError<D>,
    field_name: String,
    /// Servers as configured; empty: from `/etc/resolv.conf` at start.
    configured: Vec<SocketAddr>,
    servers: Vec<Server>,
    timeout: Duration,
    retries: u32,
    max_in_flight: usize,
    max_queries: usize,
    cache_max_ttl_ms: u64,
    negative_ttl_ms: u64,
    cache: Cache,
    /// Lookups in flight or answered while data still wait for them.
    lookups: FastMap<IpAddr, Lookup>,
    /// Query id → the address asked, for queries on the wire.
    by_id: FastMap<u16, IpAddr>,
    /// Data in input order, each with the address whose answer it waits for.
    held: VecDeque<(D, Option<IpAddr>)>,
    /// When each query sent gives up, in sending order (`timeout` is the same for all).
    deadlines: VecDeque<(Instant, IpAddr, u16)>,
    timer: Option<TimerId>,
    paused: bool,
    finish_deadline: Option<Instant>,
    state_file: Option<PathBuf>,
    /// The loop's clock and the wall clock at one moment: expiry times are Unix
    /// milliseconds (so they survive a restart) computed from the loop's clock.
    anchor: Option<(Instant, u64)>,
    ids: IdSource,
    recv_buf: Vec<u8>,
    /// What the cache said of each datum of the batch at hand, with the hash of its
    /// address (kept for its allocation).
    probes: Vec<(Probe, u64)>,
    stats: Rc<DnsStats>,
    ignored_log: LogLimiter,
    evictions_reported: u64,
}

/// One server, the socket connected to it and its window of queries on the wire.
struct Server {
    addr: SocketAddr,
    socket: Option<UdpSocket>,
    /// Queries sent and neither answered nor timed out.
    on_wire: usize,
    /// How many queries may be on the wire at once: one more per answer, up to
    /// `max_queries`; halved by a timeout (at most once per `timeout`). A burst larger than
    /// the server reads at once would overflow its receive buffer and be lost.
    window: usize,
    /// When the window was last halved.
    last_cut: Option<Instant>,
    /// Lookups waiting for room in the window, in order (retries first).
    pending: VecDeque<IpAddr>,
    /// Queries written but not yet sent, back to back, and where each starts and ends:
    /// they go out together once the datum or event at hand is handled.
    out: Vec<u8>,
    spans: Vec<(usize, usize)>,
    /// Whether queries of one length go out as one segmented send (`UDP_SEGMENT`); false
    /// once the kernel refuses it, then `BATCH` a `sendmmsg`.
    gso: bool,
}

impl Server {
    fn new(addr: SocketAddr, socket: Option<UdpSocket>, max_queries: usize) -> Self {
        Server {
            addr,
            socket,
            on_wire: 0,
            window: FIRST_WINDOW.min(max_queries),
            last_cut: None,
            pending: VecDeque::new(),
            out: Vec::new(),
            spans: Vec::new(),
            gso: true,
        }
    }
}

/// What the cache said about a datum.
#[derive(Clone, Copy)]
enum Probe {
    /// No address (the field is absent or null): passed on as it is.
    Pass,
    /// A fresh answer is cached for the address.
    Hit(IpAddr),
    /// Not cached, or expired: the address.
    Miss(IpAddr),
    /// Not an address: a value of this type.
    NotAddress(&'static str),
}

/// A lookup: in flight (`answer` is `None`) or answered while data still wait for it.
struct Lookup {
    answer: Option<Option<SharedStr>>,
    /// Held data waiting for this answer.
    waiting: usize,
    id: u16,
    /// Whether the query is on the wire (sent under `id`), else waiting in its server's
    /// `pending` (or answered).
    on_wire: bool,
    server: usize,
    tries: u32,
    /// The question, in wire form.
    qname: Vec<u8>,
}

/// A cached answer: the name (`None`: none, a failure) and when it expires (Unix ms).
#[derive(Debug, Clone)]
struct Cached {
    name: Option<SharedStr>,
    expires: u64,
}

/// A key of the state file: an address, written as its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AddrKey(IpAddr);

impl StateCodec for AddrKey {
    fn encode(&self, out: &mut Vec<u8>) {
        write_ip(out, &self.0);
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        parse_ip(bytes).map(AddrKey)
    }
}

impl StateCodec for Cached {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.expires.to_string().as_bytes());
        match &self.name {
            Some(n) => {
                out.push(b'+');
                out.extend_from_slice(n.as_str().as_bytes());
            }
            None => out.push(b'-'),
        }
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        let at = bytes.iter().position(|b| !b.is_ascii_digit())?;
        let expires = std::str::from_utf8(&bytes[..at]).ok()?.parse().ok()?;
        let name = match (bytes[at], &bytes[at + 1..]) {
            (b'-', []) => None,
            (b'+', n) if !n.is_empty() => Some(SharedStr::short(std::str::from_utf8(n).ok()?)),
            _ => return None,
        };
        Some(Cached { name, expires })
    }
}

/// The cache: answers keyed by the address. A hit is one hash of the 4 or 16 octets, one
/// probe and one compare, reading a single bucket that holds the key and the answer side
/// by side (no pointer to follow to a key held elsewhere: with tens of thousands of
/// addresses cached, each such pointer is a cache miss). The hash is seeded at random, so
/// that the addresses an attacker picks do not collide by design. When `max_entries` are
/// held, a new address forgets the one cached longest ago.
struct Cache {
    map: Table,
    /// Addresses oldest first, with the sequence of their entry; places whose sequence no
    /// longer matches were cached again since and are stale.
    order: VecDeque<(u64, IpAddr)>,
    next_seq: u64,
    max: usize,
    evictions: u64,
}

/// A cached answer and its place in the order.
struct Entry {
    answer: Cached,
    seq: u64,
}

/// Asks the CPU to start reading the memory of a counted name's `Arc` (its counts lie
/// just before the text at `p`).
#[inline]
fn prefetch(p: *const u8) {
    prefetch_line(p.wrapping_sub(16));
}

/// The address a value holds: an `ip` value, or text (a string, or bytes) read as one.
#[inline]
fn address_of(v: &Value) -> Option<IpAddr> {
    match v {
        Value::Ip(ip) => Some(*ip),
        Value::Shared(s) => address_text(s.as_bytes()),
        Value::Str(s) => address_text(s.as_bytes()),
        Value::Bytes(b) => address_text(b),
        _ => None,
    }
}

/// An address's text read as [`parse_ip`] reads it: a dotted quad by [`dotted_quad`],
/// anything else by `parse_ip`.
#[inline]
fn address_text(text: &[u8]) -> Option<IpAddr> {
    dotted_quad(text).or_else(|| parse_ip(text))
}

/// A dotted quad as [`parse_ip`] accepts it (1 to 3 digits an octet, no leading zero, at
/// most 255), read an octet at a time rather than a byte at a time with the state of the
/// octet checked at each (every datum's address is read, a hit's too); `None` for
/// anything else, left to `parse_ip`, which then gives the same answer or none.
#[inline]
fn dotted_quad(text: &[u8]) -> Option<IpAddr> {
    let digit = |at: usize| {
        text.get(at)
            .map(|b| b.wrapping_sub(b'0'))
            .filter(|d| *d < 10)
    };
    let mut octets = [0u8; 4];
    let mut at = 0;
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if text.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let first = digit(at)?;
        let mut v = u32::from(first);
        at += 1;
        // A leading zero is an octet by itself: a digit after it is not a dot.
        if first != 0
            && let Some(second) = digit(at)
        {
            v = v * 10 + u32::from(second);
            at += 1;
            if let Some(third) = digit(at) {
                v = v * 10 + u32::from(third);
                at += 1;
            }
        }
        *octet = u8::try_from(v).ok()?;
    }
    (at == text.len()).then(|| IpAddr::from(octets))
}

/// The cache's hash table: open addressing with linear probing, each bucket holding the
/// address and its entry (64 bytes, a cache line), at most three quarters full. Written
/// here rather than taken from `std` for one thing `std` does not offer: the bucket of a
/// hash is known before the lookup, so a batch prefetches all of its buckets first
/// ([`Table::prefetch`]) and the CPU fetches them together.
#[derive(Default)]
struct Table {
    slots: Vec<Option<(IpAddr, Entry)>>,
    len: usize,
    hasher: FastState,
}

impl Table {
    #[inline]
    fn hash(&self, ip: &IpAddr) -> u64 {
        self.hasher.hash_one(ip)
    }

    /// The bucket a hash starts its probe at (the table has at least one).
    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash as usize) & (self.slots.len() - 1)
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Starts reading the bucket where the lookup of `hash` begins.
    #[inline]
    fn prefetch(&self, hash: u64) {
        if !self.slots.is_empty() {
            prefetch_line(std::ptr::from_ref(&self.slots[self.home(hash)]).cast());
        }
    }

    /// The bucket holding `ip`, if any.
    #[inline]
    fn find(&self, ip: &IpAddr, hash: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(hash);
        // Never full (at most three quarters), so an empty bucket ends every probe.
        loop {
            match &self.slots[i] {
                None => return None,
                Some((k, _)) if k == ip => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    #[inline]
    fn get(&self, ip: &IpAddr) -> Option<&Entry> {
        self.get_hashed(ip, self.hash(ip))
    }

    #[inline]
    fn get_hashed(&self, ip: &IpAddr, hash: u64) -> Option<&Entry> {
        let i = self.find(ip, hash)?;
        self.slots[i].as_ref().map(|(_, e)| e)
    }

    fn get_mut(&mut self, ip: &IpAddr) -> Option<&mut Entry> {
        let i = self.find(ip, self.hash(ip))?;
        self.slots[i].as_mut().map(|(_, e)| e)
    }

    /// Inserts or replaces the entry of `ip`.
    fn insert(&mut self, ip: IpAddr, e: Entry) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(self.hash(&ip));
        loop {
            match &mut self.slots[i] {
                Some((k, old)) if *k == ip => {
                    *old = e;
                    return;
                }
                Some(_) => i = (i + 1) & mask,
                empty @ None => {
                    *empty = Some((ip, e));
                    self.len += 1;
                    return;
                }
            }
        }
    }

    /// Removes the entry of `ip`, moving back the entries after it that probed past it.
    fn remove(&mut self, ip: &IpAddr) {
        let Some(mut hole) = self.find(ip, self.hash(ip)) else {
            return;
        };
        let mask = self.slots.len() - 1;
        self.slots[hole] = None;
        self.len -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some((k, _)) = &self.slots[j] else {
                return;
            };
            let home = self.home(self.hash(k));
            // The entry at `j` may fill the hole if its probe passed through it.
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
        }
    }

    /// Doubles the buckets (16 at first) and places every entry again.
    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, (0..n).map(|_| None).collect());
        self.len = 0;
        for (ip, e) in old.into_iter().flatten() {
            self.insert(ip, e);
        }
    }
}

impl Cache {
    fn new(max: usize) -> Self {
        Cache {
            map: Table::default(),
            order: VecDeque::new(),
            next_seq: 0,
            max: max.max(1),
            evictions: 0,
        }
    }

    #[cfg(test)]
    fn get(&self, ip: &IpAddr) -> Option<&Cached> {
        self.map.get(ip).map(|e| &e.answer)
    }

    /// [`get`](Self::get) with the address's hash ([`Table::hash`]) computed already.
    #[inline]
    fn get_hashed(&self, ip: &IpAddr, hash: u64) -> Option<&Cached> {
        self.map.get_hashed(ip, hash).map(|e| &e.answer)
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    /// Caches `answer` for `ip`, now the newest; a new address in a full cache first
    /// forgets the oldest.
    fn insert(&mut self, ip: IpAddr, answer: Cached) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(e) = self.map.get_mut(&ip) {
            *e = Entry { answer, seq };
            self.order.push_back((seq, ip));
            self.compact();
            return;
        }
        while self.map.len() >= self.max {
            let Some((old_seq, old)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.seq == old_seq) {
                self.map.remove(&old);
                self.evictions += 1;
            }
        }
        self.order.push_back((seq, ip));
        self.map.insert(ip, Entry { answer, seq });
    }

    /// Drops stale places once they outnumber the live ones (O(1) amortised a write).
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(seq, k)| map.get(k).is_some_and(|e| e.seq == *seq));
        }
    }

    /// The entries, oldest first.
    fn iter(&self) -> impl Iterator<Item = (IpAddr, &Cached)> {
        self.order.iter().filter_map(|(seq, ip)| {
            let e = self.map.get(ip)?;
            (e.seq == *seq).then_some((*ip, &e.answer))
        })
    }
}

/// What `dns_reverse` counted; read with [`DnsReverse::stats`], logged at shutdown.
#[derive(Debug, Default)]
pub struct DnsStats {
    /// Queries sent (retries included).
    pub queries: Cell<u64>,
    /// Answers giving a name.
    pub names: Cell<u64>,
    /// Lookups that failed: NXDOMAIN, no PTR record, SERVFAIL, refused, no answer.
    pub failures: Cell<u64>,
    /// Of those, lookups that got no answer after `retries`.
    pub timeouts: Cell<u64>,
    /// Data answered from the cache (names and failures).
    pub cache_hits: Cell<u64>,
    /// Data that joined a lookup already in flight.
    pub joined: Cell<u64>,
    /// Datagrams ignored: wrong id, wrong question, late, malformed.
    pub ignored: Cell<u64>,
    /// Queries the socket refused to send (retried after `timeout`).
    pub send_errors: Cell<u64>,
    /// Data passed on without a name because the shutdown did not wait longer.
    pub unanswered_at_shutdown: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

impl<D> fmt::Debug for DnsReverse<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsReverse")
            .field("field", &self.field_name)
            .field("servers", &self.configured)
            .field("held", &self.held.len())
            .field("lookups", &self.lookups.len())
            .field("cached", &self.cache.len())
            .finish()
    }
}

/// The descriptor of `dns_reverse`.
pub const DESCRIPTOR: CogDescriptor = CogDescriptor {
    name: "dns_reverse",
    kind: CogKind::Transform,
    summary: "writes the host name of an address from a reverse DNS (PTR) lookup; \
              non-blocking, in order, cached",
    params: DnsReverseSettings::PARAMS,
    fields: &[(
        "hostname",
        "(`target`) the address's name; untouched when it has none",
    )],
    build,
};

crate::settings! {
    /// Settings of `dns_reverse`.
    pub struct DnsReverseSettings {
        /// dotted path of the address (text or ip)
        field: String = "client",
        /// dotted path receiving the host name
        target: String = "hostname",
        /// DNS servers, "IP" or "IP:PORT" (port 53 by default); empty: the nameservers of /etc/resolv.conf
        servers: Vec<String>,
        /// how long a query waits for its answer before it is sent again (or given up)
        timeout: Duration = "2s",
        /// how many times a query without an answer is sent again (to the next server)
        retries: u32 = "2",
        /// most data held waiting for answers; when reached the supplies pause
        max_in_flight: usize = "1000",
        /// most queries on the wire to one server at once; the window adapts below it
        max_queries: usize = "128",
        /// most addresses cached; beyond it the one cached longest ago is forgotten
        max_entries: usize = "100000",
        /// longest an answer is cached, whatever its TTL
        cache_max_ttl: Duration = "1h",
        /// how long a failure (NXDOMAIN, no PTR, SERVFAIL, no answer) is cached
        negative_ttl: Duration = "5m",
        /// save the cache under `[state] dir` at shutdown and load it at start
        persist: bool = "false",
        /// What to do with a value that is not an address.
        #[setting(flatten)]
        on_error: OnErrorSettings,
    }
}

fn build(p: &CogParams<'_>, bx: &BuildCx<'_>) -> Result<Box<dyn Cog<Record>>, ConfigError> {
    let s: DnsReverseSettings = p.settings()?;
    let field = record::field(&s.field).map_err(|e| p.error("field", e.to_string()))?;
    let target = record::field(&s.target).map_err(|e| p.error("target", e.to_string()))?;
    let on_error = on_error::from_settings(&s.on_error, p, bx)?;
    let state = s.persist.then(|| {
        // The configuration check then makes sure the state directory can be written.
        bx.state_used.set(true);
        crate::kit::keyed::state_file("dns_reverse", p, bx.state_dir)
    });
    let cog = DnsReverse::from_settings(&s, field.get, target.set, on_error, state)
        .map_err(|e| p.setting_error(e))?;
    Ok(Box::new(cog))
}

/// Parses a server: `IP:PORT`, `[IPv6]:PORT` or a bare address (port 53).
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

/// The `nameserver` addresses of a resolv.conf text, port 53, at most 3 (as the C library
/// takes). Addresses with a zone (`fe80::1%eth0`) are skipped: a socket address without
/// the interface would not reach them.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            words.next()?.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .take(MAX_RESOLV_SERVERS)
        .collect()
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<D: 'static> DnsReverse<D> {
    /// A `dns_reverse` made from its settings: `get` reads the address, `set` stores the
    /// name, a value that is not an address goes to `on_error`, the cache is saved to and
    /// loaded from `state_file` (`None`: not kept across runs, whatever `s.persist` says).
    pub fn from_settings(
        s: &DnsReverseSettings,
        get: Getter<D, Value>,
        set: Setter<D, Value>,
        on_error: OnError<D>,
        state_file: Option<PathBuf>,
    ) -> Result<Self, SettingError> {
        let mut configured = Vec::with_capacity(s.servers.len());
        for t in &s.servers {
            let a = parse_server(t).ok_or_else(|| {
                SettingError::new(
                    "servers",
                    format!("{t:?} is not an address such as \"127.0.0.1\" or \"[::1]:5353\""),
                )
            })?;
            if a.port() == 0 {
                return Err(SettingError::new("servers", format!("{t:?}: port 0")));
            }
            configured.push(a);
        }
        if s.timeout.is_zero() {
            return Err(SettingError::new("timeout", "must be longer than 0s"));
        }
        if s.max_in_flight == 0 || s.max_in_flight > MAX_IN_FLIGHT {
            return Err(SettingError::new(
                "max_in_flight",
                format!("must be between 1 and {MAX_IN_FLIGHT}"),
            ));
        }
        if s.max_queries == 0 || s.max_queries > MAX_QUERIES {
            return Err(SettingError::new(
                "max_queries",
                format!("must be between 1 and {MAX_QUERIES}"),
            ));
        }
        if s.max_entries == 0 {
            return Err(SettingError::new("max_entries", "must be at least 1"));
        }
        Ok(DnsReverse {
            get,
            set,
            on_error,
            field_name: s.field.clone(),
            configured,
            servers: Vec::new(),
            timeout: s.timeout,
            retries: s.retries,
            max_in_flight: s.max_in_flight,
            max_queries: s.max_queries,
            cache_max_ttl_ms: millis(s.cache_max_ttl),
            negative_ttl_ms: millis(s.negative_ttl),
            cache: Cache::new(s.max_entries),
            lookups: FastMap::default(),
            by_id: FastMap::default(),
            held: VecDeque::new(),
            deadlines: VecDeque::new(),
            timer: None,
            paused: false,
            finish_deadline: None,
            state_file,
            anchor: None,
            ids: IdSource::default(),
            recv_buf: vec![0; MAX_ANSWER * BATCH],
            probes: Vec::new(),
            stats: Rc::new(DnsStats::default()),
            ignored_log: LogLimiter::default(),
            evictions_reported: 0,
        })
    }

    /// The counts of this cog, shared: keep the handle to read them while it runs.
    pub fn stats(&self) -> Rc<DnsStats> {
        Rc::clone(&self.stats)
    }

    /// `now` of the loop as Unix milliseconds.
    fn unix_ms(&mut self, now: Instant) -> u64 {
        let (at, ms) = *self.anchor.get_or_insert_with(|| (now, wall_ms()));
        ms.saturating_add(millis(now.saturating_duration_since(at)))
    }

    fn open(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let addrs = if self.configured.is_empty() {
            let from_file = std::fs::read_to_string("/etc/resolv.conf")
                .map(|t| resolv_conf_servers(&t))
                .unwrap_or_default();
            if from_file.is_empty() {
                slog::warn!(
                    cx.logger(),
                    "dns_reverse: no nameserver in /etc/resolv.conf, asking 127.0.0.1:53"
                );
                vec![SocketAddr::from(([127, 0, 0, 1], 53))]
            } else {
                from_file
            }
        } else {
            self.configured.clone()
        };
        let mut opened = 0;
        for (i, addr) in addrs.iter().enumerate() {
            let socket = match open_socket(*addr, i, cx) {
                Ok(s) => {
                    opened += 1;
                    Some(s)
                }
                Err(e) => {
                    slog::error!(cx.logger(), "dns_reverse: cannot open a socket to the server";
                        "server" => %addr, "error" => %e);
                    None
                }
            };
            self.servers
                .push(Server::new(*addr, socket, self.max_queries));
        }
        if opened == 0 {
            return Err(format!("dns_reverse: no server reachable among {addrs:?}").into());
        }
        Ok(())
    }

    /// The address of one datum (as a miss, until [`look`](Self::look)) and its hash;
    /// starts reading the cache bucket it falls in.
    ///
    /// The address is read from the field's bytes into its octets (no text kept, no
    /// allocation).
    #[inline]
    fn address(&self, d: &D) -> (Probe, u64) {
        match self.get.get(d) {
            None | Some(Value::Null) => (Probe::Pass, 0),
            Some(v) => match address_of(v) {
                Some(ip) => {
                    let hash = self.cache.map.hash(&ip);
                    self.cache.map.prefetch(hash);
                    (Probe::Miss(ip), hash)
                }
                None => (Probe::NotAddress(v.type_name()), 0),
            },
        }
    }

    /// What the cache says of an address found by [`address`](Self::address); for a hit
    /// whose name is counted, starts reading the name's memory.
    #[inline]
    fn look(&self, probe: Probe, hash: u64, now_ms: u64) -> Probe {
        let Probe::Miss(ip) = probe else {
            return probe;
        };
        match self.cache.get_hashed(&ip, hash) {
            Some(c) if c.expires > now_ms => {
                if let Some(SharedStr::Counted(name)) = &c.name {
                    prefetch(name.as_ptr());
                }
                Probe::Hit(ip)
            }
            _ => probe,
        }
    }

    /// Takes one datum, with what [`look`](Self::look) said of it (`hash` is its
    /// address's): passes it on at once when nothing is held and its answer is known,
    /// else holds it behind the others.
    fn take(&mut self, mut d: D, probe: Probe, hash: u64, out: &mut Out<D>, cx: &mut Ctx) {
        match probe {
            Probe::Pass => self.pass(d, None, out),
            Probe::Hit(ip) => {
                bump(&self.stats.cache_hits);
                // Nothing changes the cache between the passes: the entry is there.
                if let Some(name) = self
                    .cache
                    .get_hashed(&ip, hash)
                    .and_then(|c| c.name.clone())
                {
                    self.set.set(&mut d, Value::Shared(name));
                }
                self.pass(d, None, out);
            }
            Probe::NotAddress(type_name) => {
                let why = format!(
                    "field {:?}: not an IP address (a {type_name} value)",
                    self.field_name
                );
                self.fail(d, &why, out, cx);
            }
            Probe::Miss(ip) => self.ask(d, ip, cx),
        }
    }

    /// Holds `d` for the answer about `ip`: joins the lookup in flight, or starts one.
    fn ask(&mut self, d: D, ip: IpAddr, cx: &mut Ctx) {
        if let Some(l) = self.lookups.get_mut(&ip) {
            l.waiting += 1;
            bump(&self.stats.joined);
            self.held.push_back((d, Some(ip)));
            return;
        }
        let mut qname = Vec::with_capacity(80);
        reverse_name(ip, &mut qname);
        let server = self.first_server();
        let l = Lookup {
            answer: None,
            waiting: 1,
            id: 0,
            on_wire: false,
            server,
            tries: 0,
            qname,
        };
        self.lookups.insert(ip, l);
        self.held.push_back((d, Some(ip)));
        if let Some(s) = self.servers.get_mut(server) {
            s.pending.push_back(ip);
        }
        self.pump(server, cx);
    }

    /// Passes on a datum that waits for nothing: at once if nothing is held before it.
    fn pass(&mut self, d: D, wait: Option<IpAddr>, out: &mut Out<D>) {
        if self.held.is_empty() && wait.is_none() {
            out.push(d);
        } else {
            self.held.push_back((d, wait));
        }
    }

    /// Sends a value that is not an address to `on_error`, keeping its place in the order.
    fn fail(&mut self, d: D, why: &str, out: &mut Out<D>, cx: &mut Ctx) {
        if self.held.is_empty() {
            self.on_error.fail(d, "dns_reverse", &why, out, cx);
            return;
        }
        let mut aside = Out::default();
        self.on_error.fail(d, "dns_reverse", &why, &mut aside, cx);
        let (dropped, errors) = aside.counts();
        out.count_dropped(dropped);
        out.count_errors(errors);
        for d in aside.take() {
            self.held.push_back((d, None));
        }
    }

    /// The first server with a socket.
    fn first_server(&self) -> usize {
        self.servers
            .iter()
            .position(|s| s.socket.is_some())
            .unwrap_or(0)
    }

    /// The next server with a socket after `i`, round the list.
    fn next_server(&self, i: usize) -> usize {
        let n = self.servers.len().max(1);
        (1..=n)
            .map(|k| (i + k) % n)
            .find(|&j| self.servers.get(j).is_some_and(|s| s.socket.is_some()))
            .unwrap_or(i)
    }

    /// Sends queries waiting for server `server` while its window has room.
    fn pump(&mut self, server: usize, cx: &mut Ctx) {
        loop {
            let Some(s) = self.servers.get_mut(server) else {
                return;
            };
            if s.on_wire >= s.window {
                return;
            }
            let Some(ip) = s.pending.pop_front() else {
                return;
            };
            let Some(mut l) = self.lookups.remove(&ip) else {
                continue;
            };
            let sent = l.answer.is_some() || l.on_wire || l.server != server || {
                self.send(ip, &mut l, cx)
            };
            self.lookups.insert(ip, l);
            if !sent {
                // No id free: it waits for an answer or a timeout to free one.
                if let Some(s) = self.servers.get_mut(server) {
                    s.pending.push_front(ip);
                }
                return;
            }
        }
    }

    /// Sends waiting queries to every server whose window has room.
    fn pump_all(&mut self, cx: &mut Ctx) {
        for i in 0..self.servers.len() {
            self.pump(i, cx);
        }
    }

    /// Queues the lookup of `ip` again, first in line, for its next server: a retry.
    fn requeue(&mut self, ip: IpAddr, l: &mut Lookup) {
        l.tries += 1;
        l.server = self.next_server(l.server);
        if let Some(s) = self.servers.get_mut(l.server) {
            s.pending.push_front(ip);
        }
    }

    /// Takes the query of `l` off the wire of its server (answered or timed out).
    fn off_wire(&mut self, l: &mut Lookup) {
        if !l.on_wire {
            return;
        }
        l.on_wire = false;
        // The id is this query's while it is on the wire.
        self.by_id.remove(&l.id);
        if let Some(s) = self.servers.get_mut(l.server) {
            s.on_wire = s.on_wire.saturating_sub(1);
        }
    }

    /// Writes the query of `l` (for `ip`) under a fresh id for its server (sent by
    /// [`transmit`](Self::transmit)) and schedules its deadline; false if no id is free (64
    /// random draws were all in use).
    fn send(&mut self, ip: IpAddr, l: &mut Lookup, cx: &mut Ctx) -> bool {
        let Some(id) = self.ids.fresh(&self.by_id) else {
            return false;
        };
        l.id = id;
        l.on_wire = true;
        self.by_id.insert(id, ip);
        if let Some(s) = self.servers.get_mut(l.server) {
            s.on_wire += 1;
            let start = s.out.len();
            write_query(id, &l.qname, &mut s.out);
            s.spans.push((start, s.out.len()));
        }
        let at = cx.now() + self.timeout;
        self.deadlines.push_back((at, ip, id));
        if self.timer.is_none() {
            self.timer = cx.timer_at(at, TIMEOUTS).ok();
        }
        true
    }

    /// Handles the queries whose time is up: sends them again or gives them up.
    fn expire(&mut self, cx: &mut Ctx) {
        self.timer = None;
        let now = cx.now();
        let now_ms = self.unix_ms(now);
        while let Some(&(at, ip, id)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(mut l) = self.lookups.remove(&ip) else {
                continue;
            };
            if !l.on_wire || l.id != id {
                // Answered, or sent again since: this deadline is stale.
                self.lookups.insert(ip, l);
                continue;
            }
            self.off_wire(&mut l);
            if let Some(s) = self.servers.get_mut(l.server)
                && s.last_cut.is_none_or(|t| now >= t + self.timeout)
            {
                // The server lost a query, or is slow to answer: fewer at once. Once per
                // `timeout`, as the queries lost in one burst time out together.
                s.window = (s.window / 2).max(MIN_WINDOW).min(self.max_queries);
                s.last_cut = Some(now);
            }
            if l.tries < self.retries {
                self.requeue(ip, &mut l);
                self.lookups.insert(ip, l);
            } else {
                bump(&self.stats.timeouts);
                self.lookups.insert(ip, l);
                self.resolve(ip, None, 0, now_ms);
            }
        }
        self.pump_all(cx);
        self.arm_timeouts(cx);
    }

    /// Sends the queries written for every server. A query the socket refuses is left to
    /// time out and be sent again (counted).
    ///
    /// Queries of one length go out in one `sendmsg` with `UDP_SEGMENT`, which the kernel
    /// cuts into one datagram each: the server's socket gets them all at once, so a
    /// server that sleeps between queries (a local dnsmasq) is woken once for the lot,
    /// not once for each (`sendmmsg` offers the CPU to the woken reader between
    /// datagrams: on a machine with few cores, a switch to the server and back for every
    /// query). PTR questions come in few lengths (one for all IPv6 addresses, nine for
    /// IPv4), so a turn's queries take a few calls. Where the kernel refuses it,
    /// `sendmmsg`, `BATCH` queries a call.
    fn transmit(&mut self, cx: &mut Ctx) {
        for i in 0..self.servers.len() {
            let s = &mut self.servers[i];
            if s.spans.is_empty() {
                continue;
            }
            let (mut sent, mut refused, mut error) = (0u64, 0u64, None);
            if s.gso {
                // Stable: queries of one length keep their order.
                s.spans.sort_by_key(|&(a, b)| b - a);
            }
            let mut next = 0;
            while next < s.spans.len() {
                let rest = &s.spans[next..];
                let got = match &s.socket {
                    None => Err(io::Error::other("no socket")),
                    Some(sock) if s.gso => {
                        let seg = rest[0].1 - rest[0].0;
                        let mut n = 0;
                        while n < rest.len().min(GSO_SEGMENTS)
                            && rest[n].1 - rest[n].0 == seg
                            && (n + 1) * seg <= GSO_BYTES
                        {
                            n += 1;
                        }
                        match send_segmented(sock, &s.out, &rest[..n], seg) {
                            Err(e) if gso_refused(&e) => {
                                // Not offered by this kernel: one query a datagram from now on.
                                s.gso = false;
                                continue;
                            }
                            got => got.map(|()| n),
                        }
                    }
                    Some(sock) => send_batch(sock, &s.out, rest),
                };
                match got {
                    Ok(0) => {
                        // Nothing went and nothing failed: counted as refused, so the loop
                        // always moves on.
                        refused += 1;
                        next += 1;
                        error = Some(io::Error::other("sendmmsg sent nothing"));
                    }
                    Ok(n) => {
                        sent += n as u64;
                        next += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // This query is lost (it times out); the next ones are tried.
                        refused += 1;
                        next += 1;
                        error = Some(e);
                    }
                }
            }
            s.out.clear();
            s.spans.clear();
            self.stats.queries.set(self.stats.queries.get() + sent);
            if let Some(e) = error {
                self.stats
                    .send_errors
                    .set(self.stats.send_errors.get() + refused);
                if self.ignored_log.allow("send errors", "dns_reverse", cx) {
                    slog::warn!(cx.logger(), "dns_reverse: queries not sent; they are sent again after timeout";
                        "server" => %self.servers[i].addr, "queries" => refused, "error" => %e);
                }
            }
        }
    }

    /// Arms the timer for the first deadline of a query still on the wire; the deadlines
    /// of queries answered since are dropped (they would only wake the loop).
    fn arm_timeouts(&mut self, cx: &mut Ctx) {
        while let Some(&(at, ip, id)) = self.deadlines.front() {
            let live = self
                .lookups
                .get(&ip)
                .is_some_and(|l| l.on_wire && l.id == id);
            if live {
                if self.timer.is_none() {
                    self.timer = cx.timer_at(at, TIMEOUTS).ok();
                }
                return;
            }
            self.deadlines.pop_front();
        }
    }

    /// Records the answer for `ip` (`None`: a failure) with its TTL in seconds, and caches
    /// it under the keys of its lookup.
    fn resolve(&mut self, ip: IpAddr, name: Option<SharedStr>, ttl: u32, now_ms: u64) {
        let keep_ms = match name {
            Some(_) => {
                bump(&self.stats.names);
                (u64::from(ttl) * 1000).min(self.cache_max_ttl_ms)
            }
            None => {
                bump(&self.stats.failures);
                self.negative_ttl_ms
            }
        };
        let Some(mut l) = self.lookups.remove(&ip) else {
            return;
        };
        self.off_wire(&mut l);
        if keep_ms > 0 {
            let expires = now_ms.saturating_add(keep_ms);
            self.cache.insert(
                ip,
                Cached {
                    name: name.clone(),
                    expires,
                },
            );
        }
        l.answer = Some(name);
        self.lookups.insert(ip, l);
    }

    /// Reads every datagram waiting on the socket of server `server`, `BATCH` a system
    /// call.
    fn receive(&mut self, server: usize, cx: &mut Ctx) {
        let now_ms = self.unix_ms(cx.now());
        let mut buf = std::mem::take(&mut self.recv_buf);
        let mut lens = [0usize; BATCH];
        while let Some(sock) = self.servers.get(server).and_then(|s| s.socket.as_ref()) {
            let n = match recv_batch(sock, &mut buf, &mut lens) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error for an earlier query (port unreachable): its retry covers it.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    slog::warn!(cx.logger(), "dns_reverse: reading answers failed";
                        "server" => %self.servers[server].addr, "error" => %e);
                    break;
                }
            };
            for (i, &len) in lens.iter().enumerate().take(n) {
                let at = i * MAX_ANSWER;
                self.answer(server, &buf[at..at + len], now_ms, cx);
            }
        }
        self.recv_buf = buf;
        self.pump_all(cx);
    }

    /// Handles one datagram from server `server`.
    fn answer(&mut self, server: usize, msg: &[u8], now_ms: u64, cx: &mut Ctx) {
        let Some(id) = msg.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            self.ignore("shorter than a header", cx);
            return;
        };
        let Some(&ip) = self.by_id.get(&id) else {
            self.ignore("an id not in flight (late or spoofed)", cx);
            return;
        };
        let Some(l) = self.lookups.get(&ip) else {
            self.ignore("an id not in flight (late or spoofed)", cx);
            return;
        };
        if l.server != server || !l.on_wire {
            self.ignore("an id not asked of this server", cx);
            return;
        }
        let reply = parse_reply(msg, id, &l.qname);
        if reply.is_ok()
            && let Some(s) = self.servers.get_mut(server)
            && s.window < self.max_queries
        {
            s.window += 1;
        }
        match reply {
            Ok(Reply::Name(name, ttl)) => {
                let name = SharedStr::short(&name);
                self.resolve(ip, Some(name), ttl, now_ms);
            }
            Ok(Reply::NoName) => self.resolve(ip, None, 0, now_ms),
            Ok(Reply::Fail(_)) => {
                let next = self.next_server(server);
                match self.lookups.remove(&ip) {
                    Some(mut l) if l.tries < self.retries && next != server => {
                        self.off_wire(&mut l);
                        self.requeue(ip, &mut l);
                        self.lookups.insert(ip, l);
                    }
                    Some(l) => {
                        self.lookups.insert(ip, l);
                        self.resolve(ip, None, 0, now_ms);
                    }
                    None => {}
                }
            }
            Err(why) => self.ignore(why, cx),
        }
    }

    fn ignore(&mut self, why: &str, cx: &mut Ctx) {
        bump(&self.stats.ignored);
        if self.ignored_log.allow("ignored answers", "dns_reverse", cx) {
            slog::warn!(cx.logger(), "dns_reverse: answer ignored"; "reason" => why);
        }
    }

    /// Emits the held data whose answers are known, in order, and sets the backpressure.
    fn flush(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        while let Some((_, wait)) = self.held.front() {
            if let Some(ip) = *wait {
                let Some(l) = self.lookups.get_mut(&ip) else {
                    // Cannot happen: a waiting datum keeps its lookup. Pass it on as it is.
                    if let Some((d, _)) = self.held.pop_front() {
                        out.push(d);
                    }
                    continue;
                };
                let Some(answer) = &l.answer else {
                    break;
                };
                let name = answer.clone();
                l.waiting -= 1;
                if l.waiting == 0 {
                    self.lookups.remove(&ip);
                }
                if let Some((mut d, _)) = self.held.pop_front() {
                    if let Some(name) = name {
                        self.set.set(&mut d, Value::Shared(name));
                    }
                    out.push(d);
                }
            } else if let Some((d, _)) = self.held.pop_front() {
                out.push(d);
            }
        }
        if self.held.len() >= self.max_in_flight && !self.paused {
            self.paused = true;
            cx.pause_supplies();
        } else if self.paused && self.held.len() <= self.max_in_flight / 2 {
            self.paused = false;
            cx.resume_supplies();
        }
        if self.finish_deadline.is_some() {
            if self.held.is_empty() {
                self.finish_deadline = None;
                cx.finished();
            } else if self.finish_deadline.is_some_and(|at| cx.now() >= at) {
                self.give_up(out, cx);
            }
        }
    }

    /// The shutdown waited `timeout`: passes on every held datum, those still waiting
    /// without a name (counted), and completes the finish.
    fn give_up(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        let mut unanswered = 0;
        while let Some((mut d, wait)) = self.held.pop_front() {
            if let Some(ip) = wait
                && let Some(l) = self.lookups.get(&ip)
            {
                match &l.answer {
                    Some(Some(name)) => self.set.set(&mut d, Value::Shared(name.clone())),
                    Some(None) => {}
                    None => unanswered += 1,
                }
            }
            out.push(d);
        }
        self.lookups.clear();
        self.by_id.clear();
        self.deadlines.clear();
        for s in &mut self.servers {
            s.pending.clear();
            s.on_wire = 0;
            s.out.clear();
            s.spans.clear();
        }
        self.stats
            .unanswered_at_shutdown
            .set(self.stats.unanswered_at_shutdown.get() + unanswered);
        slog::warn!(cx.logger(), "dns_reverse: shut down with lookups unanswered; data passed on without a name";
            "data" => unanswered);
        self.finish_deadline = None;
        cx.finished();
    }

    /// Logs the cache's evictions since the last report, if any (rate-limited).
    fn report_evictions(&mut self, cx: &mut Ctx) {
        let n = self.cache.evictions - self.evictions_reported;
        if n == 0 || !self.ignored_log.allow("evictions", "dns_reverse", cx) {
            return;
        }
        slog::warn!(cx.logger(), "dns_reverse: cache full, oldest answers forgotten";
            "evicted" => n, "total" => self.cache.evictions, "max_entries" => self.cache.max);
        self.evictions_reported = self.cache.evictions;
    }

    fn close(&mut self, cx: &mut Ctx) {
        for s in &mut self.servers {
            if let Some(mut sock) = s.socket.take() {
                let _ = cx.deregister(&mut sock);
            }
        }
    }
}

fn open_socket(addr: SocketAddr, local: usize, cx: &mut Ctx) -> io::Result<UdpSocket> {
    let any: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    // Port 0: the kernel picks a random free port.
    let mut socket = UdpSocket::bind(any)?;
    // Connected: the kernel drops datagrams from any other address and port.
    socket.connect(addr)?;
    // Best effort: the default buffer still holds a full window of answers.
    let _ = set_recv_buffer(&socket, RECV_BUFFER);
    let local = Local::try_from(local).map_err(io::Error::other)?;
    cx.register(&mut socket, local, Interest::READABLE)?;
    Ok(socket)
}

/// Sends the datagrams of `buf` at `spans`, at most `BATCH`, with one `sendmmsg`: how many
/// went, or the error of the first.
fn send_batch(sock: &UdpSocket, buf: &[u8], spans: &[(usize, usize)]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let n = spans.len().min(BATCH);
    // SAFETY: all-zero iovec and mmsghdr are valid values (null pointers, zero lengths).
    let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        let Some(d) = buf.get(spans[i].0..spans[i].1) else {
            return Err(io::Error::other("query buffer out of order"));
        };
        iov[i] = libc::iovec {
            iov_base: d.as_ptr().cast_mut().cast(),
            iov_len: d.len(),
        };
        hdrs[i].msg_hdr.msg_iov = &raw mut iov[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `hdrs[..n]` point at `iov[..n]`, which point into `buf`: all live for the
    // call; the socket is connected, so no address is given; the kernel only reads them.
    let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// `UDP_SEGMENT` (Linux 4.18): the size the kernel cuts a send into datagrams of.
const UDP_SEGMENT: libc::c_int = 103;
/// The most datagrams of one segmented send (the kernel's bound, `UDP_MAX_SEGMENTS`, is 64
/// on older kernels), and the most bytes (one IP datagram's payload, with room).
const GSO_SEGMENTS: usize = 64;
const GSO_BYTES: usize = 60_000;

/// Whether a segmented send failed because the kernel or the route does not offer it
/// (then plain datagrams are sent instead).
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// Sends the datagrams of `buf` at `spans`, each `seg` bytes long, as one `sendmsg` that
/// the kernel cuts into `seg`-byte datagrams (`UDP_SEGMENT`): all go, or none.
fn send_segmented(
    sock: &UdpSocket,
    buf: &[u8],
    spans: &[(usize, usize)],
    seg: usize,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let n = spans.len().min(GSO_SEGMENTS);
    let seg = u16::try_from(seg).map_err(io::Error::other)?;
    // SAFETY: an all-zero iovec is a valid value (a null pointer, zero length).
    let mut iov: [libc::iovec; GSO_SEGMENTS] = unsafe { std::mem::zeroed() };
    for (v, &(a, b)) in iov.iter_mut().zip(&spans[..n]) {
        let Some(d) = buf.get(a..b) else {
            return Err(io::Error::other("query buffer out of order"));
        };
        *v = libc::iovec {
            iov_base: d.as_ptr().cast_mut().cast(),
            iov_len: d.len(),
        };
    }
    // Room for one control message holding a u16, aligned as a cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    if space > std::mem::size_of_val(&control) {
        return Err(io::Error::other("control buffer too small"));
    }
    // SAFETY: an all-zero msghdr is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n as _;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `control`, `space` bytes long and aligned for a cmsghdr, so
    // CMSG_FIRSTHDR is that buffer and CMSG_DATA has room for the u16 written.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&raw const msg);
        if c.is_null() {
            return Err(io::Error::other("no room for the control message"));
        }
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
    }
    // SAFETY: `msg` points at `iov[..n]` (into `buf`) and `control`, all live for the call;
    // the socket is connected, so no address is given; the kernel only reads them.
    let rc = unsafe { libc::sendmsg(sock.as_raw_fd(), &raw const msg, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads up to `BATCH` datagrams with one `recvmmsg`, the i-th into
/// `buf[i * MAX_ANSWER..]` (cut at `MAX_ANSWER`) with its length in `lens[i]`: how many.
fn recv_batch(sock: &UdpSocket, buf: &mut [u8], lens: &mut [usize; BATCH]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    if buf.len() < BATCH * MAX_ANSWER {
        return Err(io::Error::other("receive buffer too small"));
    }
    // SAFETY: all-zero iovec and mmsghdr are valid values (null pointers, zero lengths).
    let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, chunk) in buf.chunks_exact_mut(MAX_ANSWER).take(BATCH).enumerate() {
        iov[i] = libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: MAX_ANSWER,
        };
        hdrs[i].msg_hdr.msg_iov = &raw mut iov[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `hdrs` point at `iov`, which point at disjoint MAX_ANSWER-byte chunks of
    // `buf`, all live and writable for the call; no timeout.
    let rc = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = rc as usize;
    for (len, h) in lens.iter_mut().zip(&hdrs).take(n) {
        *len = (h.msg_len as usize).min(MAX_ANSWER);
    }
    Ok(n)
}

/// Asks for a receive buffer of `bytes` (the kernel caps it at `net.core.rmem_max`).
fn set_recv_buffer(socket: &UdpSocket, bytes: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on an open socket with a pointer to a live int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const bytes).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl<D: 'static> Cog<D> for DnsReverse<D> {
    fn name(&self) -> &str {
        "dns_reverse"
    }

    fn start(&mut self, cx: &mut Ctx) -> Result<(), BoxError> {
        let now = cx.now();
        self.anchor = Some((now, wall_ms()));
        self.open(cx)?;
        self.cache = Cache::new(self.cache.max);
        if let Some(path) = &self.state_file {
            let mut saved = Keyed::<AddrKey, Cached>::new(self.cache.max);
            match saved.load(path, FORMAT, VERSION) {
                Ok(n) => {
                    for (k, v) in saved.iter() {
                        self.cache.insert(k.0, v.clone());
                    }
                    if n > 0 {
                        slog::info!(cx.logger(), "dns_reverse cache loaded";
                            "file" => %path.display(), "entries" => n);
                    }
                }
                Err(e) => {
                    slog::warn!(cx.logger(), "dns_reverse cache ignored, starting empty";
                        "reason" => %e);
                }
            }
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: &mut Vec<D>, out: &mut Out<D>, cx: &mut Ctx) {
        let now_ms = self.unix_ms(cx.now());
        // Three passes: every datum's address, its bucket prefetched; then every lookup,
        // the names of hits prefetched; then the data in order, their buckets and names
        // at hand. With tens of thousands of addresses cached, each bucket and each name
        // is a cache miss; one after the other they cost more than all the rest, fetched
        // together little. No counted name is cloned before the last pass: the atomic
        // count would make the reads after it wait.
        let mut probes = std::mem::take(&mut self.probes);
        probes.clear();
        probes.extend(batch.iter().map(|d| self.address(d)));
        for (p, hash) in &mut probes {
            *p = self.look(*p, *hash, now_ms);
        }
        for (d, (p, hash)) in batch.drain(..).zip(probes.iter()) {
            self.take(d, *p, *hash, out, cx);
        }
        self.probes = probes;
        self.transmit(cx);
        if !self.held.is_empty() {
            // A server on this machine often answers before the send returns (it runs as
            // soon as it is woken): the data held for it then leave in this turn, while
            // they are still in the CPU's caches, instead of in a later one, by when the
            // batches read since have pushed them out (rendering them then costs more
            // than the lookups). One read that finds nothing otherwise.
            for i in 0..self.servers.len() {
                self.receive(i, cx);
            }
            self.transmit(cx);
        }
        self.flush(out, cx);
        self.report_evictions(cx);
    }

    fn wake(&mut self, local: Local, why: Wake<'_>, out: &mut Out<D>, cx: &mut Ctx) {
        match (local, why) {
            (TIMEOUTS, Wake::Timer(_)) => self.expire(cx),
            (FINISH, Wake::Timer(_)) => {}
            (i, Wake::Ready(_)) => self.receive(i as usize, cx),
            _ => {}
        }
        self.transmit(cx);
        self.flush(out, cx);
    }

    fn finish(&mut self, out: &mut Out<D>, cx: &mut Ctx) {
        self.flush(out, cx);
        if self.held.is_empty() {
            return;
        }
        cx.linger();
        let at = cx.now() + self.timeout;
        self.finish_deadline = Some(at);
        if cx.timer_at(at, FINISH).is_err() {
            self.give_up(out, cx);
        }
    }

    fn done(&mut self, cx: &mut Ctx) {
        self.close(cx);
        let s = &self.stats;
        slog::info!(cx.logger(), "dns_reverse counts";
            "queries" => s.queries.get(), "names" => s.names.get(),
            "failures" => s.failures.get(), "timeouts" => s.timeouts.get(),
            "cache_hits" => s.cache_hits.get(), "joined" => s.joined.get(),
            "ignored" => s.ignored.get(), "send_errors" => s.send_errors.get(),
            "unanswered_at_shutdown" => s.unanswered_at_shutdown.get(),
            "cached" => self.cache.len(), "evicted" => self.cache.evictions);
        let now_ms = self.unix_ms(cx.now());
        let Some(path) = &self.state_file else {
            return;
        };
        // What has expired is not worth a line of the file; the rest keeps its order.
        let mut fresh = Keyed::new(self.cache.max);
        for (ip, v) in self.cache.iter() {
            if v.expires > now_ms {
                fresh.insert(AddrKey(ip), v.clone());
            }
        }
        match fresh.save(path, FORMAT, VERSION) {
            Ok(()) => slog::info!(cx.logger(), "dns_reverse cache saved";
                "file" => %path.display(), "entries" => fresh.len()),
            Err(e) => slog::error!(cx.logger(), "dns_reverse cache not saved"; "reason" => %e),
        }
    }
}

/// Random query ids, from the kernel's random source in blocks.
#[derive(Default)]
struct IdSource {
    buf: Vec<u8>,
    fallback: u64,
}

impl IdSource {
    fn next(&mut self) -> u16 {
        if self.buf.len() < 2 {
            let mut block = [0u8; 256];
            // SAFETY: the pointer and length describe `block`, which the call writes into.
            let n = unsafe { libc::getrandom(block.as_mut_ptr().cast(), block.len(), 0) };
            if n >= 2 {
                self.buf.extend_from_slice(&block[..n as usize]);
            } else {
                // No getrandom (old kernel): a xorshift seeded from the clock is still
                // better than counting, though not unpredictable.
                if self.fallback == 0 {
                    self.fallback = wall_ms() | 1;
                }
                let mut x = self.fallback;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.fallback = x;
                return x as u16;
            }
        }
        let b = [self.buf[self.buf.len() - 2], self.buf[self.buf.len() - 1]];
        self.buf.truncate(self.buf.len() - 2);
        u16::from_be_bytes(b)
    }

    /// An id not in `taken`, or `None` if 64 draws all were.
    fn fresh<V, S: BuildHasher>(&mut self, taken: &HashMap<u16, V, S>) -> Option<u16> {
        (0..64)
            .map(|_| self.next())
            .find(|id| !taken.contains_key(id))
    }
}

// --- The wire format: a PTR question, and the parts of an answer it needs.

const TYPE_CNAME: u16 = 5;
const TYPE_PTR: u16 = 12;
const CLASS_IN: u16 = 1;
/// The longest name in wire form (RFC 1035).
const MAX_NAME: usize = 255;

/// Appends the reverse name of `ip` in wire form, lower case: `3.2.1.10.in-addr.arpa.`
/// for 10.1.2.3, the 32 nibbles under `ip6.arpa.` for IPv6.
pub fn reverse_name(ip: IpAddr, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match ip {
        IpAddr::V4(a) => {
            for o in a.octets().iter().rev() {
                let mut digits = [0u8; 3];
                let mut n = 0;
                let mut v = *o;
                loop {
                    digits[n] = b'0' + v % 10;
                    n += 1;
                    v /= 10;
                    if v == 0 {
                        break;
                    }
                }
                out.push(n as u8);
                out.extend(digits[..n].iter().rev());
            }
            out.extend_from_slice(b"\x07in-addr\x04arpa\x00");
        }
        IpAddr::V6(a) => {
            for o in a.octets().iter().rev() {
                out.extend_from_slice(&[1, HEX[usize::from(o & 15)], 1, HEX[usize::from(o >> 4)]]);
            }
            out.extend_from_slice(b"\x03ip6\x04arpa\x00");
        }
    }
}

/// Appends a recursive PTR query for `qname` (wire form) under `id`.
pub fn write_query(id: u16, qname: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&id.to_be_bytes());
    // Flags: a standard query, recursion desired; one question.
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(qname);
    out.extend_from_slice(&TYPE_PTR.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
}

/// What an answer to a PTR question says.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// The name (without its final dot) and its TTL in seconds (the least along a CNAME
    /// chain).
    Name(String, u32),
    /// No name: NXDOMAIN, or no PTR record.
    NoName,
    /// The server failed (SERVFAIL, REFUSED, another code, or a truncated answer): the code.
    Fail(u8),
}

fn be16(msg: &[u8], at: usize) -> Result<u16, &'static str> {
    msg.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or("cut short")
}

fn be32(msg: &[u8], at: usize) -> Result<u32, &'static str> {
    msg.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or("cut short")
}

/// Reads the name at `at` into `out` in wire form (ASCII lower case when `lower`),
/// following compression pointers, which must point backwards (so reading ends);
/// returns where the name ends in place.
fn read_name(
    msg: &[u8],
    mut at: usize,
    lower: bool,
    out: &mut Vec<u8>,
) -> Result<usize, &'static str> {
    out.clear();
    let mut end = None;
    // A pointer must go before the start of the labels that led to it.
    let mut limit = at;
    loop {
        let len = *msg.get(at).ok_or("cut short in a name")?;
        match len & 0xC0 {
            0x00 => {
                let len = usize::from(len);
                if len == 0 {
                    out.push(0);
                    if out.len() > MAX_NAME {
                        return Err("name too long");
                    }
                    return Ok(end.unwrap_or(at + 1));
                }
                let label = msg
                    .get(at + 1..at + 1 + len)
                    .ok_or("cut short in a label")?;
                out.push(len as u8);
                if lower {
                    out.extend(label.iter().map(u8::to_ascii_lowercase));
                } else {
                    out.extend_from_slice(label);
                }
                if out.len() > MAX_NAME {
                    return Err("name too long");
                }
                at += 1 + len;
            }
            0xC0 => {
                let target = usize::from(be16(msg, at)? & 0x3FFF);
                if target >= limit {
                    return Err("compression pointer not backwards");
                }
                end.get_or_insert(at + 2);
                at = target;
                limit = target;
            }
            _ => return Err("unknown label type"),
        }
    }
}

/// A name in wire form as text, without the final dot; bytes other than letters,
/// digits, `-` and `_` are written `\DDD` (as in zone files).
fn name_text(wire: &[u8]) -> String {
    let mut s = String::with_capacity(wire.len());
    let mut at = 0;
    while let Some(&len) = wire.get(at) {
        if len == 0 {
            break;
        }
        if at > 0 {
            s.push('.');
        }
        for &b in wire.get(at + 1..at + 1 + usize::from(len)).unwrap_or(&[]) {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                s.push(char::from(b));
            } else {
                s.push_str(&format!("\\{b:03}"));
            }
        }
        at += 1 + usize::from(len);
    }
    s
}

/// Parses an answer to the PTR question `qname` (wire form, lower case) asked under `id`.
/// An error is a datagram that is not that answer (wrong id or question, malformed): it
/// is to be ignored.
pub fn parse_reply(msg: &[u8], id: u16, qname: &[u8]) -> Result<Reply, &'static str> {
    if msg.len() < 12 {
        return Err("shorter than a header");
    }
    if be16(msg, 0)? != id {
        return Err("another id");
    }
    let flags = be16(msg, 2)?;
    if flags & 0x8000 == 0 {
        return Err("not a response");
    }
    if (flags >> 11) & 0xF != 0 {
        return Err("not a standard query's response");
    }
    if be16(msg, 4)? != 1 {
        return Err("not one question");
    }
    let ancount = be16(msg, 6)?;
    let mut name = Vec::with_capacity(64);
    let mut at = read_name(msg, 12, true, &mut name)?;
    if name != qname {
        return Err("another question");
    }
    if be16(msg, at)? != TYPE_PTR || be16(msg, at + 2)? != CLASS_IN {
        return Err("another question type or class");
    }
    at += 4;
    let rcode = (flags & 0xF) as u8;
    if flags & 0x0200 != 0 {
        // Truncated: the answer is not whole.
        return Ok(Reply::Fail(rcode));
    }
    match rcode {
        0 => {}
        3 => return Ok(Reply::NoName),
        code => return Ok(Reply::Fail(code)),
    }
    let mut current = qname.to_vec();
    let mut ttl = u32::MAX;
    let mut target = Vec::with_capacity(64);
    for _ in 0..ancount {
        at = read_name(msg, at, true, &mut name)?;
        let rtype = be16(msg, at)?;
        let class = be16(msg, at + 2)?;
        let rttl = be32(msg, at + 4)?;
        let rdlen = usize::from(be16(msg, at + 8)?);
        let rdata = at + 10;
        if msg.len() < rdata + rdlen {
            return Err("record cut short");
        }
        at = rdata + rdlen;
        if class != CLASS_IN || name != current {
            continue;
        }
        // A TTL with its top bit set counts as 0 (RFC 2181).
        let rttl = if rttl > i32::MAX as u32 { 0 } else { rttl };
        match rtype {
            TYPE_CNAME => {
                let end = read_name(msg, rdata, true, &mut target)?;
                if end != at {
                    return Err("CNAME data of a wrong length");
                }
                ttl = ttl.min(rttl);
                std::mem::swap(&mut current, &mut target);
            }
            TYPE_PTR => {
                let end = read_name(msg, rdata, false, &mut target)?;
                if end != at {
                    return Err("PTR data of a wrong length");
                }
                let text = name_text(&target);
                if text.is_empty() {
                    return Ok(Reply::NoName);
                }
                return Ok(Reply::Name(text, ttl.min(rttl)));
            }
            _ => {}
        }
    }
    Ok(Reply::NoName)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket on 127.0.0.1 receiving with a deadline, and a mio socket connected to it.
    fn socket_pair() -> (std::net::UdpSocket, UdpSocket) {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        (rx, tx)
    }

    fn received(rx: &std::net::UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 512];
        (0..n)
            .map(|_| {
                let len = rx.recv(&mut buf).unwrap();
                buf[..len].to_vec()
            })
            .collect()
    }

    #[test]
    fn segmented_and_batched_sends_deliver_one_datagram_a_query() {
        let (rx, tx) = socket_pair();
        let mut out = Vec::new();
        let mut spans = Vec::new();
        for (id, ip) in [(1, "10.0.0.1"), (2, "10.0.0.2"), (3, "10.0.0.3")] {
            let mut q = Vec::new();
            reverse_name(ip.parse().unwrap(), &mut q);
            let start = out.len();
            write_query(id, &q, &mut out);
            spans.push((start, out.len()));
        }
        let seg = spans[0].1 - spans[0].0;
        let want: Vec<Vec<u8>> = spans.iter().map(|&(a, b)| out[a..b].to_vec()).collect();
        match send_segmented(&tx, &out, &spans, seg) {
            Ok(()) => assert_eq!(received(&rx, 3), want),
            // A kernel without UDP_SEGMENT: transmit falls back to sendmmsg.
            Err(e) => assert!(gso_refused(&e), "{e}"),
        }
        assert_eq!(send_batch(&tx, &out, &spans).unwrap(), 3);
        assert_eq!(received(&rx, 3), want);
        // A span outside the buffer is refused, never read.
        assert!(send_batch(&tx, &out, &[(0, out.len() + 1)]).is_err());
        assert!(send_segmented(&tx, &out, &[(0, out.len() + 1)], seg).is_err());
    }

    fn answer(id: u16, qname: &[u8], rcode: u16, records: &[(u16, u32, Vec<u8>)]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&(0x8180u16 | rcode).to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&(records.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(qname);
        m.extend_from_slice(&[0, 12, 0, 1]);
        for (ty, ttl, rdata) in records {
            m.extend_from_slice(&[0xC0, 12]);
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&[0, 1]);
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(rdata);
        }
        m
    }

    fn qname(ip: &str) -> Vec<u8> {
        let mut q = Vec::new();
        reverse_name(ip.parse().unwrap(), &mut q);
        q
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            qname("10.1.2.3"),
            b"\x013\x012\x011\x0210\x07in-addr\x04arpa\x00"
        );
        assert_eq!(name_text(&qname("192.0.2.255")), "255.2.0.192.in-addr.arpa");
        let v6 = name_text(&qname("2001:db8::1"));
        assert!(v6.starts_with("1.0.0.0.0.0.0.0"), "{v6}");
        assert!(v6.ends_with("8.b.d.0.1.0.0.2.ip6.arpa"), "{v6}");
        assert_eq!(v6.len(), 32 * 2 + "ip6.arpa".len());
    }

    #[test]
    fn answers_are_checked_against_id_and_question() {
        let q = qname("10.1.2.3");
        let ptr = b"\x04host\x07example\x00".to_vec();
        let a = answer(7, &q, 0, &[(TYPE_PTR, 60, ptr.clone())]);
        assert_eq!(
            parse_reply(&a, 7, &q),
            Ok(Reply::Name("host.example".into(), 60))
        );
        assert_eq!(parse_reply(&a, 8, &q), Err("another id"));
        assert_eq!(
            parse_reply(&a, 7, &qname("10.1.2.4")),
            Err("another question")
        );
        assert_eq!(
            parse_reply(&answer(7, &q, 3, &[]), 7, &q),
            Ok(Reply::NoName)
        );
        assert_eq!(
            parse_reply(&answer(7, &q, 2, &[]), 7, &q),
            Ok(Reply::Fail(2))
        );
        assert_eq!(
            parse_reply(&answer(7, &q, 0, &[]), 7, &q),
            Ok(Reply::NoName)
        );
        // Every cut of the answer is refused or read, never a panic.
        for n in 0..a.len() {
            let _ = parse_reply(&a[..n], 7, &q);
            assert!(parse_reply(&a[..n], 7, &q).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn cname_chains_and_pointer_loops() {
        let q = qname("10.1.2.3");
        // 3.2.1.10... CNAME 3.0-25.2.1.10... (spelled out), then its PTR.
        let mut alias = b"\x013\x040-25".to_vec();
        alias.extend_from_slice(&q[2..]);
        let mut a = answer(1, &q, 0, &[(TYPE_CNAME, 30, alias.clone())]);
        // The PTR of the alias: "h" and a pointer to the question's name.
        a.extend_from_slice(&alias);
        a.extend_from_slice(&TYPE_PTR.to_be_bytes());
        a.extend_from_slice(&[0, 1, 0, 0, 0, 90, 0, 4, 1, b'h', 0xC0, 12]);
        a[7] = 2;
        let got = parse_reply(&a, 1, &q);
        assert_eq!(
            got,
            Ok(Reply::Name("h.3.2.1.10.in-addr.arpa".into(), 30)),
            "{a:?}"
        );
        // A pointer to itself is refused.
        let mut l = answer(1, &q, 0, &[(TYPE_PTR, 5, vec![0xC0, 0])]);
        let at = l.len() - 2;
        l[at + 1] = at as u8;
        assert!(parse_reply(&l, 1, &q).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let q = qname("10.1.2.3");
        let mut x: u32 = 12345;
        for len in 0..300 {
            let mut m = answer(9, &q, 0, &[]);
            m.truncate(12 + q.len() + 4);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                m.push(x as u8);
            }
            m[7] = (x >> 8) as u8;
            let _ = parse_reply(&m, 9, &q);
        }
    }

    fn cached(n: u64) -> Cached {
        Cached {
            name: None,
            expires: n,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_cache_forgets_the_entry_cached_longest_ago() {
        let mut c = Cache::new(3);
        for k in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            c.insert(ip(k), cached(1));
        }
        // Cached again: now the newest, so 10.0.0.2 goes first.
        c.insert(ip("10.0.0.1"), cached(2));
        c.insert(ip("10.0.0.4"), cached(3));
        assert!(c.get(&ip("10.0.0.2")).is_none());
        assert_eq!(c.get(&ip("10.0.0.1")).map(|e| e.expires), Some(2));
        assert_eq!(c.len(), 3);
        assert_eq!(c.evictions, 1);
        let order: Vec<IpAddr> = c.iter().map(|(k, _)| k).collect();
        assert_eq!(order, [ip("10.0.0.3"), ip("10.0.0.1"), ip("10.0.0.4")]);
        // Many re-insertions of one key keep the order queue bounded.
        for i in 0..10_000 {
            c.insert(ip("10.0.0.4"), cached(i));
        }
        assert!(c.order.len() <= 2 * c.len() + 64, "{}", c.order.len());
    }

    #[test]
    fn the_table_agrees_with_a_hash_map_through_inserts_removals_and_growth() {
        // Few distinct keys, many operations: probes wrap, collide and shift back.
        let mut t = Table::default();
        let mut m = HashMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for n in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = (x >> 8) % 300;
            let ip = if k.is_multiple_of(3) {
                IpAddr::from(u128::from(k).to_be_bytes())
            } else {
                IpAddr::from([10, 0, (k >> 8) as u8, k as u8])
            };
            if x.is_multiple_of(3) {
                t.remove(&ip);
                m.remove(&ip);
            } else {
                t.insert(
                    ip,
                    Entry {
                        answer: cached(n),
                        seq: n,
                    },
                );
                m.insert(ip, n);
            }
            assert_eq!(t.len(), m.len());
        }
        for k in 0..300u64 {
            let ip = IpAddr::from([10, 0, (k >> 8) as u8, k as u8]);
            assert_eq!(t.get(&ip).map(|e| e.seq), m.get(&ip).copied(), "{ip}");
        }
        for (ip, n) in &m {
            assert_eq!(t.get(ip).map(|e| e.answer.expires), Some(*n), "{ip}");
        }
        // At most three quarters full: an empty bucket ends every probe.
        assert!(t.len() * 4 <= t.slots.len() * 3);
    }

    #[test]
    fn dotted_quads_are_read_as_parse_ip_reads_them() {
        let parts = [
            "", "0", "1", "9", "10", "25", "99", "100", "199", "249", "250", "255", "256", "300",
            "999", "00", "01", "010", "0255", "1000", "a", "1a", "-1", "+1", " 1",
        ];
        let mut fast = 0;
        for a in parts {
            for b in parts {
                for c in ["0", "255", "01", "256", "x"] {
                    for d in parts {
                        let text = format!("{a}.{b}.{c}.{d}");
                        let want = parse_ip(text.as_bytes());
                        let got = dotted_quad(text.as_bytes());
                        assert!(
                            got.is_none() || got == want,
                            "{text:?}: {got:?} against {want:?}"
                        );
                        assert_eq!(address_text(text.as_bytes()), want, "{text:?}");
                        // Every canonical quad takes the fast path.
                        if want.is_some_and(|ip| ip.to_string() == text) {
                            assert_eq!(got, want, "{text:?} not read by dotted_quad");
                            fast += 1;
                        }
                    }
                }
            }
        }
        assert!(fast > 1000, "only {fast} quads read");
        for text in [
            "1.2.3",
            "1.2.3.4.",
            ".1.2.3.4",
            "1..2.3.4",
            "1.2.3.4 ",
            "1.2.3.4.5",
            "::1",
            "::ffff:1.2.3.4",
            "2001:db8::1",
            "1.2.3.4:80",
            "",
            "1",
            "1.2.3.-4",
            "١.2.3.4",
        ] {
            let want = parse_ip(text.as_bytes());
            let got = dotted_quad(text.as_bytes());
            assert!(
                got.is_none() || got == want,
                "{text:?}: {got:?} against {want:?}"
            );
            assert_eq!(address_text(text.as_bytes()), want, "{text:?}");
        }
        assert_eq!(dotted_quad(b"151.241.194.202"), Some(ip("151.241.194.202")));
        assert_eq!(dotted_quad(b"0.0.0.0"), Some(ip("0.0.0.0")));
    }

    #[test]
    fn addresses_are_read_from_any_text_form_and_saved_as_text() {
        let v4 = ip("10.1.2.3");
        assert_eq!(address_of(&Value::Ip(v4)), Some(v4));
        assert_eq!(address_of(&Value::Str("10.1.2.3".into())), Some(v4));
        assert_eq!(
            address_of(&Value::Shared(SharedStr::short("10.1.2.3"))),
            Some(v4)
        );
        assert_eq!(address_of(&Value::Bytes(b"10.1.2.3".to_vec())), Some(v4));
        // Two spellings of one address are one key.
        assert_eq!(
            address_of(&Value::Str("0::1".into())),
            address_of(&Value::Str("::1".into()))
        );
        for bad in ["10.1.2", "10.1.2.256", "010.1.2.3", "host", "", "::1::2"] {
            assert_eq!(address_of(&Value::Str(bad.into())), None, "{bad:?}");
        }
        assert_eq!(address_of(&Value::Int(1)), None);
        let mut out = Vec::new();
        AddrKey(ip("2001:db8::1")).encode(&mut out);
        assert_eq!(out, b"2001:db8::1");
        assert_eq!(
            AddrKey::decode(b"2001:db8::1"),
            Some(AddrKey(ip("2001:db8::1")))
        );
        assert!(AddrKey::decode(b"not-an-ip").is_none());
        assert!(AddrKey::decode(b"10.0.0.1").is_some());
    }

    #[test]
    fn cache_entries_round_trip() {
        let c = Cached {
            name: Some(SharedStr::short("a.b")),
            expires: 42,
        };
        let mut b = Vec::new();
        c.encode(&mut b);
        let d = Cached::decode(&b).unwrap();
        assert_eq!((d.name.unwrap().as_str(), d.expires), ("a.b", 42));
        let mut b = Vec::new();
        Cached {
            name: None,
            expires: 7,
        }
        .encode(&mut b);
        assert!(Cached::decode(&b).unwrap().name.is_none());
        assert!(Cached::decode(b"x").is_none());
        assert!(Cached::decode(b"12").is_none());
        assert!(Cached::decode(b"12+").is_none());
    }

    #[test]
    fn resolv_conf() {
        let t = "# c\nsearch x\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\n\
                 nameserver ::1\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n";
        let s = resolv_conf_servers(t);
        assert_eq!(
            s,
            [
                "10.0.0.1:53".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
                "1.1.1.1:53".parse().unwrap()
            ]
        );
        assert_eq!(parse_server("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(
            parse_server("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(parse_server("localhost"), None);
    }
}
