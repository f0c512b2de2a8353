//! The epoch record (`s.jsonl.epoch`): any bytes another process left there.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionlock::epoch::{self, RECORD_LEN};

/// The record, read independently of `epoch::parse`: 1 to 20 ASCII digits,
/// optionally one final `\n`, nothing else, a value that fits a `u64`.
fn oracle(data: &[u8]) -> Option<u64> {
    let digits = data.strip_suffix(b"\n").unwrap_or(data);
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value: u128 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    u64::try_from(value).ok()
}

fuzz_target!(|data: &[u8]| {
    let parsed = epoch::parse(data);
    assert_eq!(parsed, oracle(data));
    if let Some(e) = parsed {
        assert_eq!(epoch::parse(&epoch::format(e)), Some(e));
    }
    // Every record the writer can write is RECORD_LEN bytes and reads back.
    if data.len() >= 8 {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&data[..8]);
        let e = u64::from_le_bytes(raw);
        let record = epoch::format(e);
        assert_eq!(record.len(), RECORD_LEN);
        assert_eq!(epoch::parse(&record), Some(e));
    }
});
