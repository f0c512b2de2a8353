//! The machine-readable reports of the diagnostics: what
//! `sessionlock status --json` ([`status_report`]) and
//! `sessionlock doctor --json` ([`doctor_report`]) print, as values any
//! program can build and serialize (serde) without the command.
//!
//! # Stability
//! The serialized field names, their nesting and the strings that stand
//! for enumerations (`"dead"`, `"removable"`, `"dead-pid"`, ...) are a
//! stable interface, shared by the command's `--json` output and the
//! language bindings: fields may be added, never renamed or removed. The
//! Rust types are `#[non_exhaustive]` for the same reason.
//!
//! Each report is a JSON object whose first field, `version`, is its
//! schema version ([`StatusReport::VERSION`], [`DoctorReport::VERSION`]):
//! it is bumped on an incompatible change (a field renamed, removed or
//! given another meaning), not when fields are added, so a reader checks
//! it and ignores fields it does not know.
//!
//! # Paths
//! Paths are strings (lossy UTF-8). A path whose bytes are not UTF-8 also
//! gets a `…Hex` field with its exact bytes in hexadecimal; the field is
//! left out otherwise.

mod doctor;
mod status;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use serde::Serialize;

pub use self::doctor::{
    doctor_report, CycleJson, DirErrorJson, DoctorReport, ExposureJson, FindingJson, FixedJson,
    LinkJson, SummaryJson,
};
pub use self::status::{
    status_report, LockErrorJson, LockJson, StatusEntry, StatusReport, WaiterJson,
};
use crate::diag::status::LockStatus;
use crate::identity::Liveness;

/// A lock's holder: status entries embed its fields, doctor findings nest
/// it. Field names are a stable interface (camelCase when serialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct HolderJson {
    /// The holder's process id.
    pub pid: Option<u32>,
    /// The holder's host name.
    pub hostname: Option<String>,
    /// Whether the holder must be presumed alive (a holder on another host
    /// counts as alive until its lease ends).
    pub alive: bool,
    /// `alive`, `remote`, `dead`, `recycled` or `unknown`.
    pub liveness: &'static str,
    /// The holder's diagnostic lane.
    pub lane: Option<String>,
    /// The holder's diagnostic run id.
    pub run_id: Option<String>,
    /// How long the lock has been held, in milliseconds.
    pub age_ms: Option<u64>,
    /// The holder's lease, in milliseconds.
    pub max_hold_ms: Option<u64>,
    /// Time left on the lease, in milliseconds: zero when past it, `null`
    /// when unknown or when the holder is gone
    /// ([`LockStatus::live_lease_left`]).
    pub lease_left_ms: Option<u64>,
    /// The lock's fencing epoch.
    pub epoch: Option<u64>,
    /// Who wrote the lock (`sessionlock`, `openclaw`, ...).
    pub owner: Option<String>,
}

impl HolderJson {
    /// The holder of an explained lock, of any backend.
    pub fn of<K, V>(s: &LockStatus<K, V>) -> HolderJson {
        let h = &s.holder;
        HolderJson {
            pid: h.pid,
            hostname: h.hostname.clone(),
            alive: h.alive,
            liveness: liveness_name(s.liveness),
            lane: h.lane.clone(),
            run_id: h.run_id.clone(),
            age_ms: h.age_ms,
            max_hold_ms: h.max_hold_ms,
            lease_left_ms: s.live_lease_left().map(millis),
            epoch: h.epoch,
            owner: h.owner.clone(),
        }
    }
}

fn liveness_name(l: Liveness) -> &'static str {
    match l {
        Liveness::Alive => "alive",
        Liveness::Remote => "remote",
        Liveness::Dead => "dead",
        Liveness::Recycled => "recycled",
        Liveness::Unknown => "unknown",
    }
}

/// Whole milliseconds of `d`, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A path as reports show it: lossy UTF-8.
fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

/// The hexadecimal bytes of a name that is not UTF-8 (`None` when it is):
/// what reports add so that such a name survives exactly.
fn hex_if_not_utf8(s: &OsStr) -> Option<String> {
    if s.to_str().is_some() {
        return None;
    }
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.as_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::SystemTime;

    use serde_json::{json, Value};

    use super::*;
    use crate::config::Settings;
    use crate::diag::doctor::FixOptions;
    use crate::payload::format_time;

    #[test]
    fn names_that_are_not_utf8_get_their_bytes_in_hex() {
        let name = OsStr::from_bytes(b"s\xff\xfe.jsonl");
        assert_eq!(hex_if_not_utf8(name).as_deref(), Some("73fffe2e6a736f6e6c"));
        assert_eq!(hex_if_not_utf8(OsStr::new("s.jsonl")), None);
    }

    use crate::diag::dead_pid;

    /// A sessions directory with one session whose lock names a dead
    /// process; returns the canonical lock path.
    fn dead_holder(dir: &Path) -> PathBuf {
        let root = std::fs::canonicalize(dir).unwrap();
        std::fs::write(root.join("s.jsonl"), b"{\"n\":1}\n").unwrap();
        let lock = root.join("s.jsonl.lock");
        let payload = json!({
            "pid": dead_pid(),
            "createdAt": format_time(SystemTime::now()),
            "maxHoldMs": 300_000,
            "lane": "channel",
        });
        std::fs::write(&lock, serde_json::to_vec(&payload).unwrap()).unwrap();
        lock
    }

    #[test]
    fn the_status_report_explains_a_dead_holder_with_the_stable_field_names() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dead_holder(dir.path());
        let missing = dir.path().join("missing");
        let report = status_report(
            &[dir.path().to_owned(), missing.clone()],
            &Settings::default(),
        );

        let value = serde_json::to_value(&report).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .expect("an object, as `status --json`")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["version", "locks", "errors"]);
        assert_eq!(value["version"], json!(1));
        let entries = value["locks"].as_array().expect("an array of locks");
        assert_eq!(entries.len(), 1, "{value:#}");
        let e = &entries[0];
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "session",
                "lockPath",
                "pid",
                "hostname",
                "alive",
                "liveness",
                "lane",
                "runId",
                "ageMs",
                "maxHoldMs",
                "leaseLeftMs",
                "epoch",
                "owner",
                "reasons",
                "action",
                "openclawExposure",
                "queue",
            ]
        );
        assert_eq!(e["queue"], json!([]), "nobody waits");
        assert_eq!(e["lockPath"], json!(lock.to_str().unwrap()));
        assert_eq!(
            e["session"],
            json!(lock.with_extension("").to_str().unwrap())
        );
        assert_eq!(e["alive"], json!(false));
        assert_eq!(e["liveness"], json!("dead"));
        assert_eq!(e["lane"], json!("channel"));
        assert_eq!(e["maxHoldMs"], json!(300_000));
        assert_eq!(
            e["leaseLeftMs"],
            Value::Null,
            "a dead holder's lease means nothing"
        );
        assert_eq!(e["reasons"], json!(["dead-pid"]));
        assert_eq!(e["action"], json!("reclaim"));
        assert_eq!(e["openclawExposure"], Value::Null);

        // The directory that could not be listed is beside the locks, not among them.
        assert_eq!(
            value["errors"],
            json!([{"path": missing.to_str().unwrap(), "error": report.errors[0].error}])
        );
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert_eq!(report.errors[0].path, missing.to_string_lossy());
        assert!(
            report.errors[0].error.contains("No such file or directory"),
            "{}",
            report.errors[0].error
        );
        assert_eq!(report.exit_code(), 2);
    }

    #[test]
    fn the_doctor_report_finds_a_dead_holder_and_its_fix_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dead_holder(dir.path());
        let dirs = [dir.path().to_owned()];

        let examined = doctor_report(&dirs, &Settings::default(), None);
        assert!(lock.exists(), "examining only reads");
        let v = serde_json::to_value(&examined).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "version",
                "dirs",
                "findings",
                "fixed",
                "errors",
                "openclawExposure",
                "summary"
            ]
        );
        assert_eq!(v["version"], json!(1));
        assert_eq!(v["dirs"], json!([dir.path().to_str().unwrap()]));
        assert_eq!(v["findings"].as_array().unwrap().len(), 1, "{v:#}");
        let f = &v["findings"][0];
        assert_eq!(f["kind"], json!("lock"));
        assert_eq!(f["path"], json!(lock.to_str().unwrap()));
        assert_eq!(f["verdict"], json!("removable"));
        assert_eq!(f["reasons"], json!(["dead-pid"]));
        assert_eq!(f["action"], json!("remove"));
        assert_eq!(f["holder"]["liveness"], json!("dead"));
        assert_eq!(f["holder"]["lane"], json!("channel"));
        assert_eq!(v["fixed"], json!([]));
        assert_eq!(v["summary"]["locks"], json!(1));
        assert_eq!(v["summary"]["transcripts"], json!(1));
        assert_eq!(v["summary"]["removable"], json!(1));
        assert_eq!(v["summary"]["needAttention"], json!(1));
        assert_eq!(v["summary"]["exitCode"], json!(1));

        let fixed = doctor_report(&dirs, &Settings::default(), Some(FixOptions::default()));
        assert!(!lock.exists(), "the fix removes a dead holder's lock");
        let v = serde_json::to_value(&fixed).unwrap();
        assert_eq!(
            v["fixed"],
            json!([{
                "finding": 0,
                "kind": "lock",
                "path": lock.to_str().unwrap(),
                "outcome": "removed",
                "detail": "removed",
            }])
        );
        assert_eq!(v["summary"]["removed"], json!(1));
        assert_eq!(v["summary"]["needAttention"], json!(0));
        assert_eq!(v["summary"]["exitCode"], json!(0));
        assert_eq!(fixed.summary.exit_code, 0);
    }
}
