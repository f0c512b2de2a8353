//! Lock payloads: whatever bytes a lock file holds (OpenClaw's pretty JSON,
//! ours, partial writes, hostile writers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionlock::payload::{format_time, Payload, MAX_PAYLOAD_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Payload::parse(data) else {
        return;
    };
    let _ = p.lease_end();
    if let Some(t) = p.created_at {
        let _ = format_time(t);
    }
    // Field validation holds for every accepted payload.
    assert_ne!(p.pid, Some(0));
    assert_ne!(p.max_hold_ms, Some(0));
    assert_ne!(p.epoch, Some(0));
    if let Some(t) = &p.token {
        assert!(t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    // What we write is one line...
    let bytes = p.to_bytes();
    assert_eq!(bytes.last(), Some(&b'\n'));
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return;
    }
    // ...that reads back as the same payload, except that times are written
    // to whole milliseconds; after that first rounding it is a fixed point.
    let q = Payload::parse(&bytes).expect("a payload we wrote parses");
    let mut p_ms = p.clone();
    p_ms.created_at = q.created_at;
    assert_eq!(p_ms, q);
    assert_eq!(p.created_at.is_some(), q.created_at.is_some());
    assert_eq!(Payload::parse(&q.to_bytes()).as_ref(), Ok(&q));
});
