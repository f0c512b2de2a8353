//! Explaining locks (spec §10): what `sessionlock status` shows and the
//! doctor builds on. Read-only.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::backend::file::{FileBackend, FileInspection, FileKey};
use crate::backend::{LockBackend, SessionId};
use crate::config::Settings;
use crate::error::{Error, Holder, Result};
use crate::identity::Liveness;
use crate::lock::acquire::{held_here, holder_from};
use crate::reclaim::{Action, Policy};

/// One lock, explained.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LockStatus {
    /// The session file the lock guards.
    pub session: PathBuf,
    /// The session's key (with its lock path).
    pub key: FileKey,
    /// The holder, its liveness and the stale reasons.
    pub holder: Holder,
    /// The liveness verdict.
    pub liveness: Liveness,
    /// Time left on the holder's lease (zero when past it), if known.
    pub lease_left: Option<Duration>,
    /// When the holder's lease ends, as a contender counts it (with
    /// `createdAt` and `maxHoldMs` bounded, see [`crate::reclaim::classify`]).
    pub lease_end: Option<SystemTime>,
    /// What a contender would do now.
    pub action: Action,
    /// The raw inspection.
    pub inspection: FileInspection,
}

/// The policy used to explain locks: the given settings, with the long (30 s)
/// payload grace.
pub fn policy(settings: &Settings) -> Policy {
    Policy {
        stale_after: settings.stale_after,
        hold_exceeded: settings.hold_exceeded,
        foreign_hold_exceeded: settings
            .foreign_hold_exceeded
            .unwrap_or(settings.hold_exceeded),
        payload_grace: Policy::grace_for_budget(None, settings.stale_after),
    }
}

/// Explains the lock of one session file, if it has one.
///
/// # Errors
/// `InvalidPath` for a symlink or non-regular lock; `Io`.
pub fn inspect_session(session: &Path, settings: &Settings) -> Result<Option<LockStatus>> {
    let backend = FileBackend::default();
    // Resolved as acquirers resolve it (through a symlinked directory or
    // file name), without creating anything: a session whose directory is
    // gone has no lock.
    let Some(key) = backend.resolve(session)? else {
        return Ok(None);
    };
    let Some(insp) = backend.inspect_now(&key)? else {
        return Ok(None);
    };
    let now = insp.observed;
    // A lock of ours is an orphan only if this process does not hold it.
    let a = backend.assess(&insp, &policy(settings), held_here(&key));
    Ok(Some(LockStatus {
        session: key.session.clone(),
        holder: holder_from(key.locator(), &insp, &a),
        liveness: a.liveness,
        lease_left: a
            .lease_end
            .map(|end| end.duration_since(now).unwrap_or(Duration::ZERO)),
        lease_end: a.lease_end,
        action: a.action,
        inspection: insp,
        key,
    }))
}

/// Explains every `*.jsonl.lock` in `dir` (not recursive), sorted by path,
/// whatever bytes its name holds. A lock that cannot be read yields an error
/// entry naming it; the scan goes on.
///
/// # Errors
/// `Io` when the directory cannot be listed.
pub fn scan_dir(dir: &Path, settings: &Settings) -> Result<Vec<Result<LockStatus>>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))?;
    let mut locks: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().ends_with(b".jsonl.lock") {
            locks.push(entry.path());
        }
    }
    locks.sort();
    Ok(locks
        .into_iter()
        .filter_map(|lock| {
            // Bytes, not text: a name that is not UTF-8 is still a lock.
            let bytes = lock.as_os_str().as_bytes();
            let stem = bytes.strip_suffix(b".lock").unwrap_or(bytes);
            let session = PathBuf::from(OsStr::from_bytes(stem));
            inspect_session(&session, settings).transpose()
        })
        .collect())
}

/// Why OpenClaw would delete a sessionlock holder's lock (spec §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exposure {
    /// The holder's arguments carry no `openclaw` marker: OpenClaw takes it
    /// for a `non-openclaw-owner` and deletes its lock (the holder runs
    /// without OpenClaw-compatible mode, or is a library in another program).
    UnmarkedArgv,
    /// The lock file is not readable by the users that own the OpenClaw
    /// locks beside it: OpenClaw takes it for a lock without a payload and
    /// deletes it after its grace.
    Unreadable,
}

impl Exposure {
    /// The name used in JSON (`unmarked-argv`, `unreadable`).
    pub fn as_str(self) -> &'static str {
        match self {
            Exposure::UnmarkedArgv => "unmarked-argv",
            Exposure::Unreadable => "unreadable",
        }
    }
}

/// Whether a lock is OpenClaw's (its payload names no `owner`).
pub fn is_openclaw(st: &LockStatus) -> bool {
    st.holder.owner.as_deref() == Some(crate::openclaw::OWNER)
}

/// The sessionlock holders among `locks` (the locks of one directory) that
/// OpenClaw would delete, each with why; empty unless the directory also
/// holds an OpenClaw lock. Only live local holders are judged: a dead one
/// is reclaimable anyway, and a remote one cannot be inspected.
pub fn openclaw_exposure<'a>(locks: &[&'a LockStatus]) -> Vec<(&'a LockStatus, Exposure)> {
    use std::os::unix::fs::MetadataExt;
    let oc_uids: Vec<u32> = locks
        .iter()
        .filter(|st| is_openclaw(st))
        .filter_map(|st| std::fs::symlink_metadata(&st.key.lock_path).ok())
        .map(|m| m.uid())
        .collect();
    if !locks.iter().any(|st| is_openclaw(st)) {
        return Vec::new();
    }
    locks
        .iter()
        .copied()
        .filter(|st| {
            st.holder.owner.as_deref() == Some(crate::payload::OWNER)
                && st.liveness == Liveness::Alive
        })
        .filter_map(|st| {
            let pid = st.holder.pid?;
            if crate::openclaw::process_is_marked(pid) == Some(false) {
                return Some((st, Exposure::UnmarkedArgv));
            }
            let m = std::fs::symlink_metadata(&st.key.lock_path).ok()?;
            let world_readable = m.mode() & 0o004 != 0;
            let other_uid = oc_uids.iter().any(|&u| u != m.uid() && u != 0);
            (other_uid && !world_readable).then_some((st, Exposure::Unreadable))
        })
        .collect()
}

/// A short human duration: `850ms`, `12.3s`, `4m05s`, `2h03m`, `3d04h`.
pub fn human_duration(d: Duration) -> String {
    const S: u128 = 1000;
    const M: u128 = 60 * S;
    const H: u128 = 60 * M;
    const D: u128 = 24 * H;
    match d.as_millis() {
        ms if ms < S => format!("{ms}ms"),
        ms if ms < M => format!("{}.{}s", ms / S, ms % S / 100),
        ms if ms < H => format!("{}m{:02}s", ms / M, ms % M / S),
        ms if ms < D => format!("{}h{:02}m", ms / H, ms % H / M),
        ms => format!("{}d{:02}h", ms / D, ms % D / H),
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;
    use std::time::Duration;

    #[test]
    fn human_durations() {
        let h = |ms| human_duration(Duration::from_millis(ms));
        assert_eq!(h(0), "0ms");
        assert_eq!(h(999), "999ms");
        assert_eq!(h(1_000), "1.0s");
        assert_eq!(h(12_345), "12.3s");
        assert_eq!(h(245_000), "4m05s");
        assert_eq!(h(7_380_000), "2h03m");
        assert_eq!(h(273_600_000), "3d04h");
    }
}
