#![no_main]
//! Any bytes as key=value pairs, lenient and strict, with default and multi-byte
//! delimiters.

use deadbeat::cogs::parse::kv_parse::KvParser;
use deadbeat::record::Map;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&b, line)) = data.split_first() else {
        return;
    };
    let (sep, pair) = [(" ", "="), (", ", ":"), ("&", "="), ("||", "=>")][usize::from(b & 3)];
    let strict = b & 4 != 0;
    let Some(parser) = KvParser::new(sep, pair, strict) else {
        return;
    };
    let mut out = Map::new();
    let _ = parser.parse(line, &mut out);
});
