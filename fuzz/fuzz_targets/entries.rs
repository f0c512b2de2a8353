//! Entries given to `append` as JSON text (the CLI's standard input, a
//! library caller's bytes): [`RawEntries::push`] validates and normalizes
//! them without building values. It accepts exactly what a reader can hold
//! as a value, and what it accepts comes back from a reader as exactly those
//! entries, one line each, with the same values.
#![no_main]

use std::os::unix::fs::FileExt;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sessionlock::transcript::{RawEntries, Reader};
use sessionlock_fuzz::scratch;

fuzz_target!(|data: &[u8]| {
    // NUL separates candidate entries (JSON text never contains a raw NUL).
    let mut batch = RawEntries::new();
    let mut accepted = Vec::new();
    for json in data.split(|&b| b == 0) {
        let before = batch.clone();
        match batch.push(json) {
            Ok(()) => {
                assert!(serde_json::from_slice::<Value>(json).is_ok());
                accepted.push(json);
            }
            Err(_) => {
                assert_eq!(batch, before, "a refused entry leaves the batch unchanged");
                assert!(serde_json::from_slice::<Value>(json).is_err());
            }
        }
    }
    assert_eq!(batch.len(), accepted.len());
    let bytes = batch.as_bytes();
    assert_eq!(
        bytes.iter().filter(|&&b| b == b'\n').count(),
        accepted.len(),
        "one line per entry"
    );

    let (path, file) = scratch("entries");
    file.set_len(0).expect("truncate scratch");
    file.write_all_at(bytes, 0).expect("write scratch");
    let mut reader = Reader::open(path).expect("open reader");
    let mut n = 0;
    while let Some(entry) = reader.next_raw() {
        let entry = entry.expect("every accepted entry reads back as an entry");
        let original = accepted[n];
        let v: Value = serde_json::from_slice(original).expect("accepted");
        let back: Value = serde_json::from_slice(entry.json).expect("reads back");
        assert_eq!(back, v, "same value");
        n += 1;
    }
    assert_eq!(n, accepted.len());
    assert!(reader.torn_tail().is_none());
});
