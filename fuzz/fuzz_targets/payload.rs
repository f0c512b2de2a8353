//! Lock payloads: whatever bytes a lock file holds (OpenClaw's pretty JSON,
//! ours, partial writes, hostile writers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionlock::payload::{format_time, Payload, MAX_FIELD_BYTES, MAX_PAYLOAD_BYTES};

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
    // What we write is one line that fits the reader's limit...
    let bytes = p.to_bytes();
    assert_eq!(bytes.last(), Some(&b'\n'));
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
    assert!(bytes.len() <= MAX_PAYLOAD_BYTES);
    // ...and reads back as the same payload, except that times are written
    // to whole milliseconds and long diagnostic strings are cut; after that
    // first write it is a fixed point.
    let q = Payload::parse(&bytes).expect("a payload we wrote parses");
    let cut = |a: &Option<String>, b: &Option<String>| match (a, b) {
        (Some(a), Some(b)) if a.len() > MAX_FIELD_BYTES => {
            assert!(a.starts_with(b.as_str()) && b.len() <= MAX_FIELD_BYTES);
            true
        }
        _ => a == b,
    };
    assert!(cut(&p.owner, &q.owner));
    assert!(cut(&p.hostname, &q.hostname));
    assert!(cut(&p.boot_id, &q.boot_id));
    assert!(cut(&p.lane, &q.lane));
    assert!(cut(&p.run_id, &q.run_id));
    assert_eq!(
        (p.pid, p.max_hold_ms, p.starttime, &p.token, p.epoch),
        (q.pid, q.max_hold_ms, q.starttime, &q.token, q.epoch)
    );
    assert_eq!(p.created_at.is_some(), q.created_at.is_some());
    assert_eq!(Payload::parse(&q.to_bytes()).as_ref(), Ok(&q));
});
