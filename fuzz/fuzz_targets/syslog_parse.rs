#![no_main]
//! Any bytes: the syslog parser returns fields or an error, never panics, and every
//! timestamp it returns renders.

use deadbeat::cogs::parse::syslog_parse::{Now, parse};
use deadbeat::record::Map;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks "now", so the year rollover paths are reached too.
    let (now, line) = match data.split_first() {
        Some((&b, rest)) => (
            Now {
                year: 1970 + i64::from(b >> 4) * 7,
                month: u32::from(b % 12) + 1,
            },
            rest,
        ),
        None => (
            Now {
                year: 2025,
                month: 6,
            },
            data,
        ),
    };
    let mut out = Map::new();
    if parse(line, now, &mut out).is_ok() {
        let mut json = Vec::new();
        out.write_json(&mut json);
        assert!(std::str::from_utf8(&json).is_ok());
    }
});
