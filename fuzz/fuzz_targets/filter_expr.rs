#![no_main]
//! Any text through the filter expression parser.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = deadbeat::record::expr::Expr::parse(text);
    }
});
