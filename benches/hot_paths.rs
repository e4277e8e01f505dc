//! Micro-benchmarks of the per-line hot paths, with divan; figures are per item (line,
//! record, address or datum).
//!
//! `cargo bench --bench hot_paths` (add a name filter to run some, e.g. `-- parse`).
//! Under `cargo test --all-targets` divan runs each benchmark once, as a smoke test.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use deadbeat::cogs::ip::anonymise::Anonymiser;
use deadbeat::cogs::parse::csv_parse::CsvParser;
use deadbeat::cogs::text::regex::Parser;
use deadbeat::kit::lines::LineSplitter;
use deadbeat::kit::supply::{message_key, offset_key, path_key};
use deadbeat::record::{Map, Record, Value};
use divan::Bencher;
use divan::counter::ItemsCount;

#[path = "support/mod.rs"]
mod support;

fn main() {
    // At least 0.3 s per benchmark steadies the medians; the whole run stays around 3 s.
    // `--min-time`, `--sample-count` etc. on the command line override this.
    divan::Divan::default()
        .min_time(Duration::from_millis(300))
        .config_with_args()
        .main();
}

/// Number of distinct apache lines the benchmarks cycle through.
const LINES: usize = 1_000;

/// A small deterministic generator (SplitMix64), so every run sees the same input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// `LINES` apache combined lines (no LF): IPv4 and IPv6 clients, `-` users, referers and
/// sizes, a realistic mix of methods and statuses.
fn apache_lines() -> Vec<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const USERS: [&str; 6] = ["-", "-", "-", "-", "frank", "alice"];
    const METHODS: [&str; 8] = ["GET", "GET", "GET", "GET", "GET", "POST", "HEAD", "PUT"];
    const PATHS: [&str; 8] = [
        "/",
        "/apache_pb.gif",
        "/index.html",
        "/static/css/site.css",
        "/static/js/app.min.js",
        "/api/v1/items?page=2&sort=desc",
        "/login",
        "/images/logo%20large.png",
    ];
    const PROTOCOLS: [&str; 4] = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0"];
    const STATUSES: [u16; 10] = [200, 200, 200, 200, 200, 304, 301, 404, 403, 500];
    const REFERERS: [&str; 5] = [
        "-",
        "-",
        "http://www.example.com/start.html",
        "https://www.google.com/search?q=deadbeat",
        "https://example.org/blog/2024/11/some-post",
    ];
    const AGENTS: [&str; 5] = [
        "Mozilla/4.08 [en] (Win98; I ;Nav)",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
        "curl/8.4.0",
        "Googlebot/2.1 (+http://www.google.com/bot.html)",
    ];
    const ZONES: [&str; 4] = ["-0700", "+0000", "+0100", "+0530"];

    let mut rng = Rng(0xDEAD_BEEF);
    (0..LINES)
        .map(|_| {
            let client = match rng.below(10) {
                0..=5 => format!(
                    "{}.{}.{}.{}",
                    [10, 172, 192, 203][rng.below(4)],
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                ),
                6..=8 => format!(
                    "2001:db8:{:x}:{:x}::{:x}",
                    rng.below(0x10000),
                    rng.below(0x10000),
                    1 + rng.below(0xfffe)
                ),
                _ => format!("::ffff:192.168.{}.{}", rng.below(256), 1 + rng.below(254)),
            };
            let status = STATUSES[rng.below(STATUSES.len())];
            let size = if status == 304 || rng.below(8) == 0 {
                "-".to_string()
            } else {
                (100 + rng.below(50_000)).to_string()
            };
            format!(
                r#"{client} - {user} [{day:02}/{month}/20{year:02}:{h:02}:{m:02}:{s:02} {zone}] "{method} {path} {proto}" {status} {size} "{referer}" "{agent}""#,
                user = rng.pick(&USERS),
                day = 1 + rng.below(28),
                month = MONTHS[rng.below(12)],
                year = rng.below(26),
                h = rng.below(24),
                m = rng.below(60),
                s = rng.below(60),
                zone = rng.pick(&ZONES),
                method = rng.pick(&METHODS),
                path = rng.pick(&PATHS),
                proto = rng.pick(&PROTOCOLS),
                referer = rng.pick(&REFERERS),
                agent = rng.pick(&AGENTS),
            )
        })
        .collect()
}

/// The apache lines parsed by the `apache_combined` preset into records.
fn parsed_records() -> Vec<Record> {
    let mut parser = Parser::preset("apache_combined").expect("preset");
    apache_lines()
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let mut fields = Map::with_capacity(16);
            parser
                .parse(line.as_bytes(), &mut fields)
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            Record {
                id: i as u64,
                fields,
            }
        })
        .collect()
}

/// 1. `LineSplitter`: push a 1 MiB buffer of whole lines, then hand out every line.
#[divan::bench]
fn split_lines(bencher: Bencher) {
    let lines = apache_lines();
    let mut buf = Vec::with_capacity((1 << 20) + 1024);
    let mut n = 0;
    'fill: loop {
        for l in &lines {
            if buf.len() + l.len() + 1 > 1 << 20 {
                break 'fill;
            }
            buf.extend_from_slice(l.as_bytes());
            buf.push(b'\n');
            n += 1;
        }
    }
    let mut splitter = LineSplitter::new(LineSplitter::DEFAULT_MAX_LINE_BYTES);
    bencher.counter(ItemsCount::new(n)).bench_local(|| {
        splitter.push(black_box(&buf));
        let mut bytes = 0;
        let got = splitter.for_each_line(|line, info| {
            bytes += line.len() + info.offset as usize;
        });
        debug_assert_eq!(got, n);
        black_box((got, bytes))
    });
}

/// 2. A file supply's record: `message` bytes, a shared `path`, an `offset`; built and
///    dropped, as a drain eventually drops it.
#[divan::bench]
fn build_record(bencher: Bencher) {
    let lines = apache_lines();
    let path: Value = Value::Shared(Arc::<str>::from("/var/log/apache2/access.log").into());
    let (message, path_k, offset_k) = (message_key(), path_key(), offset_key());
    bencher.counter(ItemsCount::new(LINES)).bench_local(|| {
        let mut offset = 0i64;
        for line in &lines {
            let mut r = Record::with_capacity(3);
            r.id = offset as u64;
            r.insert(message, Value::Bytes(line.as_bytes().to_vec()));
            r.insert(path_k, path.clone());
            r.insert(offset_k, Value::Int(offset));
            offset += line.len() as i64 + 1;
            black_box(r);
        }
    });
}

/// 3. The `apache_combined` preset parsing one line into the cog's reused map (cleared
///    after each line, as the cog's merge drains it).
#[divan::bench]
fn parse_apache_combined(bencher: Bencher) {
    let lines = apache_lines();
    let mut parser = Parser::preset("apache_combined").expect("preset");
    let mut fields = Map::with_capacity(16);
    bencher.counter(ItemsCount::new(LINES)).bench_local(|| {
        for line in &lines {
            let ok = parser.parse(black_box(line.as_bytes()), &mut fields);
            debug_assert!(ok.is_ok());
            black_box(&fields);
            fields.clear();
        }
    });
}

/// `LINES` CSV lines of 8 columns, as an export of the apache lines: about a third of
/// the request and agent fields quoted (with delimiters and `""` inside).
fn csv_lines() -> Vec<String> {
    let mut rng = Rng(0x00c5_7a11);
    apache_lines()
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (ip, ts, status, size) = (f[0], &f[3][1..], f[8], f[9]);
            let path = f[6];
            let agent = l.rsplit('"').nth(1).unwrap_or("-");
            if rng.below(3) == 0 {
                let agent = agent.replace('"', "\"\"");
                format!("{ip},{ts},GET,\"{path}?a=1,2\",{status},{size},\"{agent}, \"\"x\"\"\",-")
            } else {
                let agent = agent.replace(',', ";");
                format!("{ip},{ts},GET,{path},{status},{size},{agent},-")
            }
        })
        .collect()
}

/// 3b. `csv_parse` splitting an 8-column line into the cog's reused map (cleared after
///     each line).
#[divan::bench]
fn parse_csv(bencher: Bencher) {
    let lines = csv_lines();
    let cols = [
        "ip", "ts", "method", "path", "status", "size", "agent", "extra",
    ];
    let mut parser = CsvParser::new(&cols, b',').expect("columns");
    let mut fields = Map::with_capacity(16);
    for l in &lines {
        deadbeat::cogs::parse::Parser::parse(&mut parser, l.as_bytes(), &mut fields)
            .unwrap_or_else(|e| panic!("{l}: {e}"));
        assert_eq!(fields.len(), cols.len(), "{l}");
        fields.clear();
    }
    bencher.counter(ItemsCount::new(LINES)).bench_local(|| {
        for line in &lines {
            let ok = deadbeat::cogs::parse::Parser::parse(
                &mut parser,
                black_box(line.as_bytes()),
                &mut fields,
            );
            debug_assert!(ok.is_ok());
            black_box(&fields);
            fields.clear();
        }
    });
}

/// 4. JSON rendering of a parsed 11-field record into a reused buffer.
#[divan::bench]
fn write_json(bencher: Bencher) {
    let records = parsed_records();
    assert!(records.iter().all(|r| r.fields.len() == 11));
    let mut out = Vec::with_capacity(1024);
    bencher.counter(ItemsCount::new(LINES)).bench_local(|| {
        for r in &records {
            out.clear();
            black_box(r).write_json(&mut out);
            black_box(&out);
        }
    });
}

/// 5. `anonymise` in truncate mode (the defaults, /24 and /48) on an address held as text,
///    rewritten in place; the input string is rebuilt outside the timing.
#[divan::bench(sample_size = 1000, args = ["192.168.1.77", "2001:db8:85a3:8d3:1319:8a2e:370:7348"])]
fn anonymise_truncate(bencher: Bencher, addr: &str) {
    let mut anon = Anonymiser::truncate(24, 48);
    bencher
        .with_inputs(|| Value::Str(addr.to_string()))
        .bench_local_refs(|v| anon.value(v).expect("an address"));
}

/// 5b. `anonymise` in keyed mode (/24 and /48) on addresses held as text: 1,000 distinct
///     clients (its cache answers) or 262,144 (mostly misses), taken in turn.
#[divan::bench(
    sample_size = 1000,
    args = ["v4, 1000 clients", "v4, 262144 clients", "v6, 1000 clients", "v6, 262144 clients"]
)]
fn anonymise_keyed(bencher: Bencher, case: &str) {
    let count: u32 = if case.contains("262144") {
        1 << 18
    } else {
        1000
    };
    let inputs: Vec<String> = (0..count)
        .map(|i| {
            if case.starts_with("v6") {
                let low = i.wrapping_mul(40_503) & 0xffff;
                format!("2001:db8:{:x}:{:x}::{low:x}", i >> 16, i & 0xffff)
            } else {
                std::net::Ipv4Addr::from(0x0a00_0000 ^ i.wrapping_mul(2_654_435_761)).to_string()
            }
        })
        .collect();
    let mut anon = Anonymiser::keyed(24, 48, b"0123456789abcdef-bench-key").expect("a valid key");
    let mut next = 0;
    bencher
        .with_inputs(|| {
            next = (next + 1) % inputs.len();
            Value::Str(inputs[next].clone())
        })
        .bench_local_refs(|v| anon.value(v).expect("an address"));
}

/// 6. The train's per-datum overhead: a supply, three pass-throughs and a counting drain
///    over empty `Record`s, as `benches/train_throughput.rs` but with a smaller N (the
///    escapement's setup is included and amortised over N).
#[divan::bench]
fn train_5_cog_pass_through(bencher: Bencher) {
    const N: u64 = 200_000;
    bencher.counter(ItemsCount::new(N)).bench_local(|| {
        let (mut esc, seen) = support::pass_through(N).expect("train");
        esc.run().expect("run");
        assert_eq!(seen.get(), N, "every datum must reach the drain");
    });
}
