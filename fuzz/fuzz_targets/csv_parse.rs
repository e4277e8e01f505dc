#![no_main]
//! Any bytes as a CSV record of 1 to 4 columns with a fuzzer-chosen delimiter.

use deadbeat::cogs::parse::csv_parse::parse;
use deadbeat::record::Map;
use libfuzzer_sys::fuzz_target;

const COLUMNS: [&str; 4] = ["a", "b", "c", "d"];

fuzz_target!(|data: &[u8]| {
    let Some((&b, line)) = data.split_first() else {
        return;
    };
    let n = usize::from(b & 3) + 1;
    let delimiter = [b',', b';', b'\t', b' '][usize::from(b >> 2 & 3)];
    let mut out = Map::new();
    if parse(line, &COLUMNS[..n], delimiter, &mut out).is_ok() {
        assert_eq!(out.len(), n);
    }
});
