//! The lock file payload ([design §2.1](crate::design#21-the-lock-file)):
//! OpenClaw's fields plus sessionlock's.
//!
//! Parsing is lenient per field (a field of the wrong type counts as absent),
//! strict about size, and never panics on any bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

/// The largest lock file sessionlock reads; anything bigger is malformed.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The longest diagnostic string (`owner`, `hostname`, `bootId`, `lane`,
/// `runId`) that [`Payload::to_bytes`] writes; longer ones are cut at a
/// character boundary. Even fully escaped (6 bytes per byte) they keep every
/// payload sessionlock writes far below [`MAX_PAYLOAD_BYTES`], so its own
/// locks always parse.
pub const MAX_FIELD_BYTES: usize = 1024;

/// The `owner` value sessionlock writes.
pub const OWNER: &str = "sessionlock";

/// A lock payload. Every field is optional because foreign writers (OpenClaw)
/// omit sessionlock's fields and may write partial payloads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Payload {
    /// Holder process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the holder took or last extended the lock.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_time")]
    pub created_at: Option<SystemTime>,
    /// The holder's lease in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_hold_ms: Option<u64>,
    /// Holder process start time (`/proc/<pid>/stat` field 22).
    #[serde(skip_serializing_if = "Option::is_none", rename = "starttime")]
    pub starttime: Option<u64>,
    /// Writer implementation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Random per acquisition (32 hex characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Fencing epoch of this acquisition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Holder host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Holder's boot id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Diagnostic lane.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// Diagnostic run id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

fn ser_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_time(*t)),
        None => s.serialize_none(),
    }
}

/// Formats a time as ISO-8601 UTC with milliseconds (`2026-11-21T04:11:25.410Z`),
/// the shape JavaScript's `toISOString()` writes.
pub fn format_time(t: SystemTime) -> String {
    // Truncate to whole milliseconds so that the text round-trips exactly.
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an ISO-8601 UTC time as OpenClaw writes it (also accepted: no
/// fraction, other fraction lengths).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// Why a lock file's bytes are not a usable payload at all.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// Zero bytes (a foreign writer created the file and has not written yet).
    Empty,
    /// More than [`MAX_PAYLOAD_BYTES`].
    TooLarge,
    /// Not JSON, or JSON that is not an object.
    NotAnObject(String),
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Empty => f.write_str("empty lock file"),
            Malformed::TooLarge => write!(f, "lock file larger than {MAX_PAYLOAD_BYTES} bytes"),
            Malformed::NotAnObject(why) => write!(f, "payload is not a JSON object: {why}"),
        }
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && (0.0..=9_007_199_254_740_991.0).contains(&f)).then_some(f as u64)
        }),
        _ => None,
    }
}

fn truncate_at_char_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(end);
    }
}

fn as_string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

impl Payload {
    /// Parses lock file bytes. `Err` only when nothing usable can be read; a
    /// payload with missing or ill-typed fields parses with those fields absent.
    pub fn parse(bytes: &[u8]) -> Result<Payload, Malformed> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(Malformed::TooLarge);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Malformed::Empty);
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| Malformed::NotAnObject(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(Malformed::NotAnObject("not an object".into()));
        };
        Ok(Payload::from_map(&map))
    }

    fn from_map(map: &Map<String, Value>) -> Payload {
        let get = |k: &str| map.get(k);
        Payload {
            pid: get("pid")
                .and_then(as_u64)
                .filter(|&p| p > 0)
                .and_then(|p| u32::try_from(p).ok()),
            created_at: get("createdAt")
                .and_then(Value::as_str)
                .and_then(parse_time),
            max_hold_ms: get("maxHoldMs").and_then(as_u64).filter(|&m| m > 0),
            starttime: get("starttime").and_then(as_u64),
            owner: get("owner").and_then(as_string),
            token: get("token")
                .and_then(Value::as_str)
                .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_owned),
            epoch: get("epoch").and_then(as_u64).filter(|&e| e >= 1),
            hostname: get("hostname").and_then(as_string),
            boot_id: get("bootId").and_then(as_string),
            lane: get("lane").and_then(as_string),
            run_id: get("runId").and_then(as_string),
        }
    }

    /// Serializes to one line of compact JSON ending in `\n`, at most
    /// [`MAX_PAYLOAD_BYTES`] long: diagnostic strings longer than
    /// [`MAX_FIELD_BYTES`] are cut.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut p = self.clone();
        for field in [
            &mut p.owner,
            &mut p.hostname,
            &mut p.boot_id,
            &mut p.lane,
            &mut p.run_id,
        ]
        .into_iter()
        .flatten()
        {
            truncate_at_char_boundary(field, MAX_FIELD_BYTES);
        }
        // Serializing a struct of plain fields into a Vec cannot fail.
        let mut out = serde_json::to_vec(&p).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// When the holder's lease ends (`createdAt + maxHoldMs`) as the payload
    /// claims it, if both are known and the sum is representable. Readers
    /// that act on a lock bound these claims (see [`crate::reclaim::classify`]).
    pub fn lease_end(&self) -> Option<SystemTime> {
        self.created_at?
            .checked_add(Duration::from_millis(self.max_hold_ms?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_openclaw_pretty_payload() {
        let raw = b"{\n  \"pid\": 23825,\n  \"createdAt\": \"2026-11-21T04:11:25.410Z\",\n  \"maxHoldMs\": 300000,\n  \"starttime\": 422495\n}\n";
        let p = Payload::parse(raw).expect("parses");
        assert_eq!(p.pid, Some(23825));
        assert_eq!(p.max_hold_ms, Some(300_000));
        assert_eq!(p.starttime, Some(422_495));
        assert_eq!(
            format_time(p.created_at.expect("time")),
            "2026-11-21T04:11:25.410Z"
        );
        assert_eq!(p.owner, None);
        assert_eq!(p.epoch, None);
    }

    #[test]
    fn round_trips_own_payload() {
        let p = Payload {
            pid: Some(7),
            created_at: parse_time("2026-01-02T03:04:05.678Z"),
            max_hold_ms: Some(1000),
            starttime: Some(0),
            owner: Some(OWNER.into()),
            token: Some("0123456789abcdef0123456789abcdef".into()),
            epoch: Some(9),
            hostname: Some("h".into()),
            boot_id: Some("b".into()),
            lane: Some("cron".into()),
            run_id: Some("r1".into()),
        };
        let bytes = p.to_bytes();
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(Payload::parse(&bytes), Ok(p));
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.starts_with("{\"pid\":7,\"createdAt\":\"2026-01-02T03:04:05.678Z\",\"maxHoldMs\":1000,\"starttime\":0,"));
    }

    #[test]
    fn wrong_types_are_absent() {
        let p = Payload::parse(
            br#"{"pid":"12","createdAt":17,"maxHoldMs":-1,"starttime":"x","epoch":0,"token":"short","lane":5}"#,
        )
        .expect("object parses");
        assert_eq!(p, Payload::default());
        let p = Payload::parse(br#"{"pid":0}"#).expect("object");
        assert_eq!(p.pid, None);
        let p = Payload::parse(br#"{"pid":4294967296}"#).expect("object");
        assert_eq!(p.pid, None);
        let p = Payload::parse(br#"{"pid":12.0,"maxHoldMs":5e3}"#).expect("object");
        assert_eq!(p.pid, Some(12));
        assert_eq!(p.max_hold_ms, Some(5000));
    }

    #[test]
    fn unusable_bytes_are_malformed() {
        assert_eq!(Payload::parse(b""), Err(Malformed::Empty));
        assert_eq!(Payload::parse(b" \n"), Err(Malformed::Empty));
        assert!(matches!(
            Payload::parse(b"[1,2]"),
            Err(Malformed::NotAnObject(_))
        ));
        assert!(matches!(
            Payload::parse(b"{\"pid\": 1"),
            Err(Malformed::NotAnObject(_))
        ));
        assert_eq!(
            Payload::parse(&vec![b' '; MAX_PAYLOAD_BYTES + 1]),
            Err(Malformed::TooLarge)
        );
    }

    // Found writing the payload fuzz target's round-trip property (issue 9
    // §5): a lane, run id or other diagnostic string of ~64 KiB made
    // sessionlock write a lock payload larger than
    // MAX_PAYLOAD_BYTES, which every reader (itself included) then classified
    // as malformed and reclaimed after the payload grace while its holder was
    // alive and within its lease.
    #[test]
    fn own_payload_with_oversized_fields_stays_readable() {
        let huge = "\u{1}é".repeat(40 * 1024);
        let p = Payload {
            pid: Some(7),
            created_at: parse_time("2026-01-02T03:04:05.678Z"),
            max_hold_ms: Some(1000),
            owner: Some(huge.clone()),
            hostname: Some(huge.clone()),
            boot_id: Some(huge.clone()),
            lane: Some(huge.clone()),
            run_id: Some(huge),
            ..Payload::default()
        };
        let bytes = p.to_bytes();
        assert!(bytes.len() <= MAX_PAYLOAD_BYTES, "{} bytes", bytes.len());
        let q = Payload::parse(&bytes).expect("our own payload parses");
        assert_eq!(q.pid, Some(7));
        assert_eq!(q.max_hold_ms, Some(1000));
        let lane = q.lane.expect("lane kept");
        assert!(lane.len() <= MAX_FIELD_BYTES && lane.len() > MAX_FIELD_BYTES - 4);
        assert!(p.lane.expect("lane").starts_with(&lane));
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Payload::parse(&bytes);
        }

        #[test]
        fn never_panics_on_json_like_text(s in r#"\{("[a-zA-Z]{1,9}":(-?[0-9]{1,22}(\.[0-9]+)?|"[^"]{0,30}"|null|true|\[\]|\{\}),?){0,6}\}"#) {
            let _ = Payload::parse(s.as_bytes());
        }
    }
}
