//! The demo's own lines in the run's event log (`demo --timeline`): one
//! `fault` event per injected fault (docs/design.md §20.2: `fault`,
//! `target_pid`, `detail`), beside the lock events the library writes for
//! the gateway processes.
//!
//! The demo names the log to its workers in `SESSIONLOCK_EVENT_LOG`
//! ([`ENV_EVENT_LOG`]) and installs it in its own process; the library's
//! writer appends their lock events to it, and the fault lines go to the
//! same file, opened `O_APPEND` and written as one `write` each, so lines of
//! different processes never mix inside a line. They are written here
//! rather than through [`EventLog::note`](sessionlock::observe::EventLog::note)
//! because a fault's line is written once it played out, with the time it
//! was injected.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

pub(crate) use sessionlock::observe::ENV_EVENT_LOG;

use super::record::FaultKind;

/// The event log named in this process's environment, if any.
pub(crate) fn from_env() -> Option<PathBuf> {
    std::env::var_os(ENV_EVENT_LOG)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The wall clock in microseconds since 1970 (the log's `ts_us`).
pub(crate) fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// One injected fault, as the log says it.
pub(crate) struct FaultEvent<'a> {
    /// When it was injected.
    pub(crate) ts_us: i64,
    /// Which fault.
    pub(crate) fault: FaultKind,
    /// The process it hit.
    pub(crate) target_pid: Option<u32>,
    /// The session it hit (the name the library logs: the canonical
    /// transcript path, or the PostgreSQL key) and its backend.
    pub(crate) session: Option<(String, &'a str)>,
    /// The lane that played it out.
    pub(crate) lane: Option<&'a str>,
    /// What happened.
    pub(crate) detail: &'a str,
    /// Whether it played out as it must.
    pub(crate) ok: bool,
}

/// Appends `ev` to the log at `path` as one line.
pub(crate) fn log_fault(path: &Path, ev: &FaultEvent<'_>) -> Result<()> {
    let mut line = json!({
        "v": 1,
        "ts_us": ev.ts_us,
        "pid": std::process::id(),
        "host": host(),
        "kind": "fault",
        "fault": ev.fault.name(),
        "detail": ev.detail,
        "ok": ev.ok,
    });
    if let Some(pid) = ev.target_pid {
        line["target_pid"] = json!(pid);
    }
    if let Some((session, backend)) = &ev.session {
        line["session"] = json!(session);
        line["backend"] = json!(backend);
    }
    if let Some(lane) = ev.lane {
        line["lane"] = json!(lane);
    }
    let mut bytes = serde_json::to_vec(&line)?;
    bytes.push(b'\n');
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.write_all(&bytes))
        .with_context(|| format!("write a fault event to {}", path.display()))
}
