#![no_main]
//! Any bytes as a RELP stream, fed in two pieces: the reader never panics, gives the same
//! frames whatever the split, and every frame it gives writes back to the bytes it read.

use deadbeat::cogs::net::relp::{FrameReader, write_frame};
use libfuzzer_sys::fuzz_target;

fn frames(parts: &[&[u8]], max: usize) -> (Vec<(u32, Vec<u8>, Vec<u8>)>, bool) {
    let mut r = FrameReader::new(max);
    let mut got = Vec::new();
    for part in parts {
        r.feed(part);
        loop {
            match r.next_frame() {
                Ok(Some(f)) => got.push((f.txnr, f.command.to_vec(), f.data.to_vec())),
                Ok(None) => break,
                Err(_) => return (got, true),
            }
        }
    }
    (got, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&b, stream)) = data.split_first() else {
        return;
    };
    let max = 1 + usize::from(b) * 4;
    let cut = usize::from(b) % (stream.len() + 1);
    let (whole, whole_err) = frames(&[stream], max);
    let (split, split_err) = frames(&[&stream[..cut], &stream[cut..]], max);
    assert_eq!(whole, split);
    assert_eq!(whole_err, split_err);
    for (txnr, cmd, data) in whole {
        let mut b = Vec::new();
        write_frame(&mut b, txnr, std::str::from_utf8(&cmd).unwrap_or("x"), &data);
        let (again, err) = frames(&[&b], max);
        assert!(!err);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].2, data);
    }
});
