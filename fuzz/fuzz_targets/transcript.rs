//! Transcripts: line framing, entry parsing and torn-tail detection over any
//! file content (crash leftovers, CRLF, foreign writers, garbage).
//!
//! The public readers run over a real file: the streaming [`Reader`] (as an
//! iterator of values and through `next_raw`) and [`transcript::torn_tail`],
//! which reads backwards in chunks. They must agree
//! with each other and with the plain definition: entries are the complete
//! `\n`-terminated lines, the torn tail is whatever follows the last `\n`, and
//! the entries and the torn tail together reassemble the file byte for byte.
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;

use libfuzzer_sys::fuzz_target;
use sessionlock::fs::RealFs;
use sessionlock::transcript::{self, Reader};
use sessionlock::Error;
use sessionlock_fuzz::scratch;

fuzz_target!(|data: &[u8]| {
    let (path, file) = scratch("transcript");
    file.set_len(0).expect("truncate scratch");
    file.write_all_at(data, 0).expect("write scratch");

    let expected_torn = match data.iter().rposition(|&b| b == b'\n') {
        _ if data.is_empty() => None,
        Some(i) if i + 1 == data.len() => None,
        Some(i) => Some((i as u64 + 1, (data.len() - i - 1) as u64)),
        None => Some((0, data.len() as u64)),
    };

    // Streaming: every complete line, in order, without gaps.
    let mut reader = Reader::open(path).expect("open reader");
    let mut at = 0u64;
    for item in reader.by_ref() {
        let (offset, len) = match item {
            Ok(entry) => {
                let line = &data[entry.offset as usize..(entry.offset + entry.len) as usize];
                let value: serde_json::Value =
                    serde_json::from_slice(&line[..line.len() - 1]).expect("entry is json");
                assert_eq!(value, entry.value);
                (entry.offset, entry.len)
            }
            Err(Error::InvalidEntry { offset, .. }) => {
                let end = data[offset as usize..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .expect("an invalid entry is a complete line")
                    + offset as usize
                    + 1;
                let line = &data[offset as usize..end - 1];
                assert!(serde_json::from_slice::<serde_json::Value>(line).is_err());
                (offset, (end - offset as usize) as u64)
            }
            Err(e) => panic!("unexpected error: {e}"),
        };
        assert_eq!(offset, at, "entries are contiguous");
        let line = &data[offset as usize..(offset + len) as usize];
        assert_eq!(line.last(), Some(&b'\n'));
        assert!(!line[..line.len() - 1].contains(&b'\n'));
        at += len;
    }
    let torn = reader.torn_tail().map(|t| (t.offset, t.len));
    assert_eq!(torn, expected_torn, "reader's torn tail");
    // Complete lines and the torn tail reassemble the file.
    assert_eq!(at + torn.map_or(0, |t| t.1), data.len() as u64);

    // The raw stream (no values built) frames the same lines, accepts
    // exactly the lines the value reader accepts, and yields their bytes.
    let mut raw = Reader::open(path).expect("open raw reader");
    let mut raw_at = 0u64;
    while let Some(item) = raw.next_raw() {
        let (offset, len, ok) = match item {
            Ok(entry) => {
                let line = &data[entry.offset as usize..(entry.offset + entry.len) as usize];
                assert_eq!(entry.json, &line[..line.len() - 1]);
                (entry.offset, entry.len, true)
            }
            Err(Error::InvalidEntry { offset, .. }) => {
                let end = data[offset as usize..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .expect("an invalid entry is a complete line")
                    + offset as usize
                    + 1;
                (offset, (end - offset as usize) as u64, false)
            }
            Err(e) => panic!("unexpected error: {e}"),
        };
        assert_eq!(offset, raw_at, "raw entries are contiguous");
        let line = &data[offset as usize..(offset + len) as usize - 1];
        assert_eq!(
            ok,
            serde_json::from_slice::<serde_json::Value>(line).is_ok(),
            "the raw and value readers accept the same lines"
        );
        raw_at += len;
    }
    assert_eq!(raw_at, at);
    assert_eq!(raw.torn_tail().map(|t| (t.offset, t.len)), expected_torn);

    // Backwards detection agrees.
    let file = File::open(path).expect("reopen scratch");
    let backwards = transcript::torn_tail(&RealFs, &file, path)
        .expect("torn_tail")
        .map(|t| (t.offset, t.len));
    assert_eq!(backwards, expected_torn, "torn_tail");
});
