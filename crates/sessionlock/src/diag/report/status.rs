//! `sessionlock status --json`: every lock of some directories, one JSON
//! object each.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use super::{hex_if_not_utf8, lossy, DirErrorJson, HolderJson};
use crate::config::Settings;
use crate::diag::doctor::chain;
use crate::diag::status::{openclaw_exposure, scan_dirs, DirLocks, Exposure, LockStatus, Waiter};
use crate::error::{Error, Holder};
use crate::payload::format_time;

/// One lock, explained. Field names are a stable interface (camelCase
/// when serialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LockJson {
    /// The session file, absolute and canonical (lossy UTF-8).
    pub session: String,
    /// The bytes of `session` in hexadecimal, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_hex: Option<String>,
    /// The lock file (lossy UTF-8).
    pub lock_path: String,
    /// The bytes of `lockPath` in hexadecimal, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_path_hex: Option<String>,
    /// The holder; its fields are the entry's own when serialized.
    #[serde(flatten)]
    pub holder: HolderJson,
    /// The stale reasons (`dead-pid`, `hold-exceeded`, ...).
    pub reasons: Vec<&'static str>,
    /// What a contender would do now: `wait`, `reclaim` or `report`.
    pub action: &'static str,
    /// Why OpenClaw, whose locks share this directory, would delete this
    /// sessionlock holder's lock (`unmarked-argv`, `unreadable`), or `null`.
    pub openclaw_exposure: Option<&'static str>,
    /// How many processes wait in the session's line of waiters; left out
    /// when none do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<usize>,
    /// The pid of the first of them (the next to take the lock); left out
    /// when none wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_waiter_pid: Option<u32>,
    /// The session's queue in arrival order, first first (the next to
    /// take the lock): who waits, as each waiter recorded itself; empty
    /// when nobody waits.
    pub queue: Vec<WaiterJson>,
    /// A process stuck inside a protocol step holding the session's state
    /// lock ([`Contention::stuck`](crate::diag::status::Contention::stuck)), as a [`Holder`] object (`lockPath` the
    /// state file, `pid`, `holds`: `"state-lock"`, `stopped`: `true` when it
    /// is stopped); left out when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck: Option<Holder>,
}

impl LockJson {
    fn new(s: &LockStatus, exposure: Option<Exposure>) -> LockJson {
        let h = &s.holder;
        LockJson {
            session: lossy(s.session.as_os_str()),
            session_hex: hex_if_not_utf8(s.session.as_os_str()),
            lock_path: lossy(h.lock_path.as_os_str()),
            lock_path_hex: hex_if_not_utf8(h.lock_path.as_os_str()),
            holder: HolderJson::of(s),
            reasons: h.reasons.iter().map(|r| r.as_str()).collect(),
            action: s.action.as_str(),
            openclaw_exposure: exposure.map(Exposure::as_str),
            waiting: (!s.contention.waiting.is_empty()).then_some(s.contention.waiting.len()),
            first_waiter_pid: s.contention.waiting.first().copied(),
            queue: s.contention.queue.iter().map(WaiterJson::of).collect(),
            stuck: s.contention.stuck.clone(),
        }
    }
}

/// One waiter of a session's queue
/// ([`Contention::queue`](crate::diag::status::Contention::queue)). Field
/// names are a stable interface (camelCase when serialized); a field the
/// waiter did not record is `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct WaiterJson {
    /// Its process id.
    pub pid: Option<u32>,
    /// Its host name.
    pub hostname: Option<String>,
    /// The acquisition's lane.
    pub lane: Option<String>,
    /// The acquisition's run id.
    pub run_id: Option<String>,
    /// When it started waiting (ISO-8601 UTC, the waiter's clock).
    pub since: Option<String>,
    /// How long it has waited, in milliseconds (from `since` to now on
    /// this machine's clock).
    pub waited_ms: Option<u64>,
    /// When its acquisition gives up (ISO-8601 UTC), if it has a budget.
    pub deadline: Option<String>,
    /// Whether its process is stopped (it holds up the line behind it).
    pub stopped: bool,
    /// The database client it waits through; left out on files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl WaiterJson {
    /// A waiter of a queue, of any backend.
    pub fn of(w: &Waiter) -> WaiterJson {
        Self::at(w, SystemTime::now())
    }

    /// [`WaiterJson::of`], its wait measured up to `now` (a database's
    /// clock, where the waiters' times are the server's).
    pub fn at(w: &Waiter, now: SystemTime) -> WaiterJson {
        WaiterJson {
            pid: w.pid,
            hostname: w.hostname.clone(),
            lane: w.lane.clone(),
            run_id: w.run_id.clone(),
            since: w.since.map(format_time),
            waited_ms: w.since.map(|t| {
                let d = now.duration_since(t).unwrap_or_default();
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            }),
            deadline: w.deadline.map(format_time),
            stopped: w.stopped,
            client_id: w.client_id.clone(),
        }
    }
}

/// A lock that could not be read. Field names are a stable interface
/// (camelCase when serialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LockErrorJson {
    /// The lock file (lossy UTF-8), when the error names it.
    pub lock_path: Option<String>,
    /// The bytes of `lockPath` in hexadecimal, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_path_hex: Option<String>,
    /// The error and its causes, joined with `: `.
    pub error: String,
}

impl LockErrorJson {
    fn new(e: &Error) -> LockErrorJson {
        let path = error_path(e);
        LockErrorJson {
            lock_path: path.map(|p| lossy(p.as_os_str())),
            lock_path_hex: path.and_then(|p| hex_if_not_utf8(p.as_os_str())),
            error: chain(e),
        }
    }
}

/// One entry of [`StatusReport`]: a lock, or one that could not be read.
/// Serialized as the object it holds (no tag: an error entry is the one
/// with an `error` field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum StatusEntry {
    /// A lock, explained.
    Lock(Box<LockJson>),
    /// A lock that could not be read.
    Error(LockErrorJson),
}

/// What `sessionlock status --json` reports: every lock of some
/// directories of the file backend, directory by directory and by path
/// within one.
///
/// Serialized, it is the JSON object the command prints:
/// `{"version": 1, "locks": [...], "errors": [...]}`, `locks` holding
/// [`entries`] and `errors` the directories that could not be listed
/// (which the command also reports on stderr, and exits with 2 for).
/// Field names are a stable interface (camelCase when serialized).
///
/// [`entries`]: StatusReport::entries
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct StatusReport {
    /// The schema version of the serialized report: [`StatusReport::VERSION`].
    pub version: u32,
    /// The locks, and the locks that could not be read (`locks` when
    /// serialized).
    #[serde(rename = "locks")]
    pub entries: Vec<StatusEntry>,
    /// The directories that could not be listed.
    pub errors: Vec<DirErrorJson>,
}

impl StatusReport {
    /// The schema version of the report: bumped on an incompatible change
    /// (a field renamed, removed or given another meaning), not when fields
    /// are added.
    pub const VERSION: u32 = 1;

    /// The report of a scan ([`scan_dirs`]).
    pub fn of(scan: &[DirLocks]) -> StatusReport {
        let locks: Vec<&LockStatus> = scan
            .iter()
            .filter_map(|d| d.locks.as_ref().ok())
            .flatten()
            .filter_map(|l| l.as_ref().ok())
            .collect();
        let exposed = exposures(&locks);
        let mut report = StatusReport {
            version: StatusReport::VERSION,
            entries: Vec::new(),
            errors: Vec::new(),
        };
        for d in scan {
            match &d.locks {
                Ok(locks) => report.entries.extend(locks.iter().map(|l| match l {
                    Ok(s) => StatusEntry::Lock(Box::new(LockJson::new(
                        s,
                        exposed.get(&s.key.lock_path).copied(),
                    ))),
                    Err(e) => StatusEntry::Error(LockErrorJson::new(e)),
                })),
                Err(e) => report.errors.push(DirErrorJson::new(&d.dir, e)),
            }
        }
        report
    }

    /// The exit status `sessionlock status` gives it: 2 when a directory or
    /// a lock could not be read, else 0 (held and stale locks are not
    /// findings).
    pub fn exit_code(&self) -> u8 {
        let unreadable = self
            .entries
            .iter()
            .any(|e| matches!(e, StatusEntry::Error(_)));
        if unreadable || !self.errors.is_empty() {
            2
        } else {
            0
        }
    }
}

/// Explains every lock in `dirs` (each directory not searched
/// recursively) with `settings`, as `sessionlock status --json` reports
/// them. Only reads. `settings` are those locks are judged by
/// ([`Config::resolve`](crate::Config::resolve) for the environment's, as
/// the command uses).
pub fn status_report(dirs: &[PathBuf], settings: &Settings) -> StatusReport {
    StatusReport::of(&scan_dirs(dirs, settings))
}

/// The exposure of every exposed sessionlock lock, by lock path, judged
/// per directory.
fn exposures(locks: &[&LockStatus]) -> HashMap<PathBuf, Exposure> {
    let mut by_dir: BTreeMap<Option<&Path>, Vec<&LockStatus>> = BTreeMap::new();
    for l in locks {
        by_dir.entry(l.key.lock_path.parent()).or_default().push(l);
    }
    by_dir
        .values()
        .flat_map(|locks| openclaw_exposure(locks))
        .map(|(l, why)| (l.key.lock_path.clone(), why))
        .collect()
}

/// The path a per-lock error names, if any.
fn error_path(e: &Error) -> Option<&Path> {
    match e {
        Error::InvalidPath { path, .. } | Error::Io { path, .. } | Error::Poisoned { path } => {
            Some(path)
        }
        _ => None,
    }
}
