#![no_main]
//! Any bytes through `Value::parse_json`; what parses re-renders to JSON that parses to
//! the same value (wrapped JSON strings included).

use deadbeat::record::Value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Value::parse_json(data) {
        let mut out = Vec::new();
        v.write_json(&mut out);
        let again = Value::parse_json(&out).expect("rendered JSON parses");
        let mut out2 = Vec::new();
        again.write_json(&mut out2);
        assert_eq!(out, out2);
    }
    let mut m = deadbeat::record::Map::new();
    let _ = deadbeat::cogs::parse::json_parse::parse(data, &mut m);
});
