//! The epoch record (`s.jsonl.epoch`): any bytes another process left there.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionlock::epoch;

fuzz_target!(|data: &[u8]| {
    let parsed = epoch::parse(data);
    if let Some(e) = parsed {
        // Accepted only as whitespace around plain digits...
        let text = std::str::from_utf8(data).expect("accepted input is utf-8");
        let digits = text.trim();
        assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
        // ...whose value it is.
        assert_eq!(
            digits.trim_start_matches('0').parse::<u64>().unwrap_or(0),
            e
        );
        // The record the file backend writes reads back as the same epoch.
        assert_eq!(epoch::parse(format!("{e:020}\n").as_bytes()), Some(e));
    }
    // Every u64 the writer could write reads back whole.
    if data.len() >= 8 {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&data[..8]);
        let e = u64::from_le_bytes(raw);
        assert_eq!(epoch::parse(format!("{e:020}\n").as_bytes()), Some(e));
    }
});
