//! The doctor's judgement of locks
//! ([design §9.4](crate::design#94-the-doctor-and-verify-fs)), for any backend:
//! one verdict per lock a backend lists ([`LockBackend::list`]), and the
//! removal of the reclaimable ones through
//! [`LockBackend::remove_if_unchanged`].
//!
//! [`examine_locks`] only reads. [`remove_lock`] removes only a lock a
//! contender would reclaim, only with the very inspection it was judged on
//! (a lock that changed since is left alone), and a live holder past its
//! lease only when forced ([`FixOptions::force`]): never a live holder
//! within its lease.
//!
//! The doctor of a directory of the file backend ([`examine`](super::examine),
//! [`fix`](super::fix)) adds what only files have, from
//! [`backend::file::diag`](crate::backend::file::diag).

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::backend::file::{FileKey, FileVersion};
use crate::backend::{LockBackend, SessionId};
use crate::config::Settings;
use crate::diag::status::{self, human_duration, Explained, LockStatus};
use crate::error::{Error, Holder, Result};
use crate::identity::Liveness;
use crate::reclaim::{Action as Contender, Reason};
use crate::store::TornTail;

/// The budget [`fix`](super::fix) gives itself by default to take a
/// session lock.
pub const FIX_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The lane [`fix`](super::fix) records in the session locks it takes.
pub const LANE: &str = "doctor";

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A lock file (`*.jsonl.lock`).
    Lock,
    /// A transcript (`*.jsonl`).
    Transcript,
    /// A file an interrupted operation left behind, or a repair's side file.
    Leftover,
    /// A session's state file (`*.jsonl.epoch`, its last fencing epoch).
    State,
}

impl Kind {
    /// The name used in messages and JSON (`lock`, `transcript`, `leftover`,
    /// `state`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::Transcript => "transcript",
            Kind::Leftover => "leftover",
            Kind::State => "state",
        }
    }
}

/// The doctor's judgement of one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict {
    /// Healthy: a live holder within its lease, or one this process holds.
    Ok,
    /// Stale or orphaned: [`fix`](super::fix) removes it.
    Removable,
    /// A torn transcript tail: [`fix`](super::fix) repairs it.
    Repairable,
    /// Not stale yet: a lock whose payload a writer may still be filling in,
    /// a leftover an operation may still be using. Left alone for now.
    Wait,
    /// Worth knowing, never acted on: a `too-old` lock, a hold-exceeded lock
    /// under the `report` policy, a repair's side file.
    ReportOnly,
    /// Needs a person: something the doctor never touches (a symlink or
    /// directory at a lock path, transcript lines that are not JSON).
    Invalid,
    /// Could not be examined (an I/O error).
    Error,
}

impl Verdict {
    /// The name used in messages and JSON (`ok`, `removable`, `repairable`,
    /// `wait`, `report-only`, `invalid`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Removable => "removable",
            Verdict::Repairable => "repairable",
            Verdict::Wait => "wait",
            Verdict::ReportOnly => "report-only",
            Verdict::Invalid => "invalid",
            Verdict::Error => "error",
        }
    }

    /// Whether [`fix`](super::fix) acts on findings with this verdict.
    pub fn is_fixable(self) -> bool {
        matches!(self, Verdict::Removable | Verdict::Repairable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`fix`](super::fix) does with a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Nothing: the doctor never touches it (it needs a person, or could not
    /// be examined).
    None,
    /// Removes the file.
    Remove,
    /// Removes the lock only when forced ([`FixOptions::force`]): its holder
    /// is alive, only past its lease. Without fencing (an OpenClaw holder)
    /// it may go on writing beside the next holder.
    RemoveWithForce,
    /// Repairs the transcript's torn tail.
    Repair,
    /// Keeps it: it is healthy, not stale yet, or kept on purpose.
    Keep,
}

impl Action {
    /// The name used in messages and JSON (`none`, `remove`,
    /// `remove-with-force`, `repair`, `keep`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Remove => "remove",
            Action::RemoveWithForce => "remove-with-force",
            Action::Repair => "repair",
            Action::Keep => "keep",
        }
    }
}

/// Which kind of leftover file.
/// The doctor's finding on one lock of a backend's listing.
#[derive(Debug)]
#[non_exhaustive]
pub struct LockFinding<K = FileKey, V = FileVersion> {
    /// The lock, explained, or why it could not be read.
    pub lock: Explained<K, V>,
    /// The judgement.
    pub verdict: Verdict,
    /// Why: the stale reasons (`dead-pid`, ...), or `unreadable`.
    pub reasons: Vec<&'static str>,
    /// What a fix does with it.
    pub action: Action,
    /// A sentence explaining the verdict, for people.
    pub detail: String,
}

impl<K: SessionId, V> LockFinding<K, V> {
    /// Judges one lock as of `now`, by the rules of `settings` (with the
    /// long payload grace of [`status::policy`]).
    pub fn judge(lock: Explained<K, V>, settings: &Settings, now: SystemTime) -> LockFinding<K, V> {
        let (verdict, reasons, action, detail) = match &lock {
            Explained::Lock(st) => {
                let (verdict, action, detail) = judge_status(st, settings, now);
                let reasons = st.holder.reasons.iter().map(Reason::as_str).collect();
                (verdict, reasons, action, detail)
            }
            Explained::Unreadable { error, .. } => (
                Verdict::Error,
                vec!["unreadable"],
                Action::None,
                chain(error),
            ),
        };
        LockFinding {
            lock,
            verdict,
            reasons,
            action,
            detail,
        }
    }
}

/// Lists every lock `backend` has in `scope` and judges each, in the
/// listing's order (by locator). Only reads.
///
/// # Errors
/// As [`LockBackend::list`].
///
/// # Cancel safety
/// Read-only: dropping the future changes nothing.
pub async fn examine_locks<B: LockBackend>(
    backend: &B,
    scope: &B::Scope,
    settings: &Settings,
) -> Result<Vec<LockFinding<B::Key, B::Version>>> {
    let now = SystemTime::now();
    Ok(status::list(backend, scope, settings)
        .await?
        .into_iter()
        .map(|lock| LockFinding::judge(lock, settings, now))
        .collect())
}

/// The verdict on a readable lock, what a fix does with it, and why.
fn judge_status<K, V>(
    st: &LockStatus<K, V>,
    settings: &Settings,
    now: SystemTime,
) -> (Verdict, Action, String) {
    let h = &st.holder;
    let reasons = h.reasons;
    let who = holder_words(h, st.liveness);
    let lease = st.lease_left.map_or_else(
        || "lease unknown".to_owned(),
        |d| format!("{} left", human_duration(d)),
    );
    let unusable = reasons.contains(Reason::Malformed) || reasons.contains(Reason::MissingPid);
    match st.action {
        Contender::Reclaim => {
            let why = if unusable {
                format!(
                    "{}, last written {} ago (past the {} grace for a writer to fill it in)",
                    unusable_words(st),
                    human_duration(since(st.inspection.written, now)),
                    human_duration(status::policy(settings).payload_grace),
                )
            } else if reasons.contains(Reason::DeadPid) {
                format!("{who} is not running")
            } else if reasons.contains(Reason::RecycledPid) {
                format!(
                    "pid {} now belongs to another process (its start time differs from the lock's)",
                    pid_words(h)
                )
            } else if reasons.contains(Reason::OrphanSelfPid) {
                format!(
                    "names this process (pid {}), which does not hold it: left over from before a restart of its lock state",
                    pid_words(h)
                )
            } else {
                format!(
                    "{who} is {} past its lease ({}){}; a live holder is removed only with --force",
                    human_duration(past_lease(st, now)),
                    h.max_hold_ms.map_or_else(
                        || "default".to_owned(),
                        |ms| human_duration(Duration::from_millis(ms))
                    ),
                    if h.epoch.is_some() {
                        "; its writes are fenced once the lock is taken again"
                    } else {
                        "; it is not sessionlock's and cannot be fenced: it may go on writing"
                    },
                )
            };
            let clamp = clamp_words(st);
            let why = if clamp.is_empty() {
                why
            } else {
                format!("{why}; {clamp}")
            };
            let action = if needs_force(st) {
                Action::RemoveWithForce
            } else {
                Action::Remove
            };
            (Verdict::Removable, action, why)
        }
        Contender::Report => (
            Verdict::ReportOnly,
            Action::Keep,
            format!(
                "{who} is {} past its lease, but the hold-exceeded policy is `report`: never removed",
                human_duration(past_lease(st, now)),
            ),
        ),
        Contender::Wait { until, .. } if unusable => (
            Verdict::Wait,
            Action::Keep,
            format!(
                "{}, written {} ago: a writer may still be filling it in; removable {}",
                unusable_words(st),
                human_duration(since(st.inspection.written, now)),
                until.map_or_else(
                    || "later".to_owned(),
                    |t| format!("in {}", human_duration(t.duration_since(now).unwrap_or_default()))
                ),
            ),
        ),
        Contender::Wait { .. }
            if reasons.contains(Reason::FutureCreatedAt)
                || reasons.contains(Reason::LeaseClamped) =>
        {
            (
                Verdict::ReportOnly,
                Action::Keep,
                format!(
                    "{who} within its lease as bounded ({lease}): {}; removable once that lease ends",
                    clamp_words(st),
                ),
            )
        }
        Contender::Wait { .. } if reasons.contains(Reason::TooOld) => (
            Verdict::ReportOnly,
            Action::Keep,
            format!(
                "{who} has held it for {}, longer than stale-after, but is within its own lease ({lease}): never removed",
                h.age_ms
                    .map_or_else(|| "long".to_owned(), |ms| human_duration(Duration::from_millis(ms))),
            ),
        ),
        Contender::Wait { .. } => {
            let detail = if st.inspection.ours {
                format!(
                    "held by this process (pid {}) ({lease})",
                    crate::identity::me().pid
                )
            } else {
                format!("{who} within its lease ({lease})")
            };
            (Verdict::Ok, Action::Keep, detail)
        }
    }
}

/// Whether a stale lock's holder is alive, only past its lease: removed only
/// when forced.
fn needs_force<K, V>(st: &LockStatus<K, V>) -> bool {
    st.holder.reasons.contains(Reason::HoldExceeded) && st.liveness.presumed_alive()
}

/// `live holder pid 42 (lane channel, run r-1)`, `holder pid 42 on host gw-2`.
pub(crate) fn holder_words(h: &Holder, liveness: Liveness) -> String {
    let mut s = match liveness {
        Liveness::Alive => "live holder".to_owned(),
        _ => "holder".to_owned(),
    };
    if let Some(pid) = h.pid {
        s.push_str(&format!(" pid {pid}"));
    }
    if liveness == Liveness::Remote {
        if let Some(host) = &h.hostname {
            s.push_str(&format!(" on host {host}"));
        }
    }
    let labels: Vec<String> = [("lane", &h.lane), ("run", &h.run_id)]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
        .collect();
    if !labels.is_empty() {
        s.push_str(&format!(" ({})", labels.join(", ")));
    }
    s
}

fn pid_words(h: &Holder) -> String {
    h.pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
}

/// Why a lock's payload is unusable.
fn unusable_words<K, V>(st: &LockStatus<K, V>) -> String {
    match &st.inspection.payload {
        Err(m) => format!("unusable payload ({m})"),
        Ok(p) if p.pid.is_none() => "no usable pid in the payload".to_owned(),
        Ok(_) => "no valid createdAt in the payload".to_owned(),
    }
}

fn past_lease<K, V>(st: &LockStatus<K, V>, now: SystemTime) -> Duration {
    st.lease_end.map_or(Duration::ZERO, |end| since(end, now))
}

/// What a lock's payload claims beyond what sessionlock would write, and how
/// its lease is counted instead; empty when it claims nothing unusual.
fn clamp_words<K, V>(st: &LockStatus<K, V>) -> String {
    let reasons = st.holder.reasons;
    let p = st.inspection.payload.as_ref().ok();
    let mut words = Vec::new();
    if reasons.contains(Reason::FutureCreatedAt) {
        words.push(format!(
            "its createdAt ({}) lies in the future, so its lease counts from when the file was last written",
            p.and_then(|p| p.created_at)
                .map_or_else(|| "?".to_owned(), crate::payload::format_time),
        ));
    }
    if reasons.contains(Reason::LeaseClamped) {
        words.push(format!(
            "its maxHoldMs ({}) is longer than any lease sessionlock writes, so it is taken as {}",
            st.holder
                .max_hold_ms
                .map_or_else(|| "?".to_owned(), |ms| ms.to_string()),
            human_duration(crate::config::MAX_HOLD_CAP),
        ));
    }
    words.join("; ")
}

pub(crate) fn since(t: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or_default()
}

/// How [`fix`](super::fix) goes about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FixOptions {
    /// The budget for taking a session lock (to repair a transcript or
    /// remove a rewrite leftover); a session still held after it is skipped.
    pub lock_timeout: Duration,
    /// Whether to remove the locks of live holders past their lease
    /// ([`Action::RemoveWithForce`]); without it they are skipped
    /// ([`Outcome::NeedsForce`]).
    pub force: bool,
}

impl Default for FixOptions {
    fn default() -> Self {
        FixOptions {
            lock_timeout: FIX_LOCK_TIMEOUT,
            force: false,
        }
    }
}

impl FixOptions {
    /// Sets the budget for taking a session lock.
    pub fn lock_timeout(mut self, t: Duration) -> Self {
        self.lock_timeout = t;
        self
    }
    /// Sets whether live holders past their lease are removed.
    pub fn force(mut self, yes: bool) -> Self {
        self.force = yes;
        self
    }
}

/// What [`fix`](super::fix) did with one finding.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// The file was removed.
    Removed,
    /// The torn tail was set aside and the transcript truncated.
    Repaired(TornTail),
    /// Nothing left to do: the file is gone, or the torn tail was repaired
    /// (or completed) by someone else, since the examination.
    AlreadyGone,
    /// The file is not the one examined any more (a new lock, a new
    /// rewrite): left alone.
    Changed,
    /// Someone holds the session's lock: skipped, try again later.
    Held(Box<Holder>),
    /// A live holder past its lease: skipped without [`FixOptions::force`].
    NeedsForce,
    /// The state file was rewritten with this epoch.
    Rewritten(u64),
    /// It failed.
    Failed(Error),
}

impl Outcome {
    /// The name used in messages and JSON (`removed`, `repaired`,
    /// `already-gone`, `changed`, `held`, `failed`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Removed => "removed",
            Outcome::Repaired(_) => "repaired",
            Outcome::Rewritten(_) => "rewritten",
            Outcome::AlreadyGone => "already-gone",
            Outcome::Changed => "changed",
            Outcome::Held(_) => "held",
            Outcome::NeedsForce => "needs-force",
            Outcome::Failed(_) => "failed",
        }
    }

    /// Whether nothing is left to do about the finding.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Outcome::Removed | Outcome::Repaired(_) | Outcome::Rewritten(_) | Outcome::AlreadyGone
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Removed => f.write_str("removed"),
            Outcome::Repaired(t) => {
                write!(f, "moved {} torn bytes at byte {}", t.len, t.offset)?;
                if let Some(p) = &t.saved_to {
                    write!(f, " to {}", Path::new(p).display())?;
                }
                Ok(())
            }
            Outcome::Rewritten(epoch) => write!(f, "rewrote the epoch record as {epoch}"),
            Outcome::AlreadyGone => f.write_str("nothing left to do: already gone or repaired"),
            Outcome::Changed => f.write_str("changed since inspection, left alone"),
            Outcome::Held(h) => {
                let liveness = if h.alive {
                    Liveness::Alive
                } else {
                    Liveness::Unknown
                };
                write!(
                    f,
                    "the session lock is held by {}; try again later",
                    holder_words(h, liveness)
                )
            }
            Outcome::NeedsForce => {
                f.write_str("its holder is alive, only past its lease: removed only with --force")
            }
            Outcome::Failed(e) => f.write_str(&chain(e)),
        }
    }
}

/// What [`fix`](super::fix) did with one finding of the report.
#[derive(Debug)]
#[non_exhaustive]
pub struct Fixed {
    /// Index of the finding in [`Report::findings`](super::Report::findings).
    pub finding: usize,
    /// What happened.
    pub outcome: Outcome,
}

/// What [`fix`](super::fix) did, one entry per finding it acted on, in the report's order.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct FixReport {
    /// The findings acted on.
    pub fixed: Vec<Fixed>,
}

/// Removes a stale lock if it is still exactly the version inspected,
/// waiting for the session's state at most `opts.lock_timeout`.
///
/// Only a lock a contender would reclaim ([`Contender::Reclaim`]) is
/// removed: never a live holder within its lease, nor a lock still in its
/// payload grace ([`Outcome::Held`]). A live holder past its lease is
/// removed only with [`FixOptions::force`] ([`Outcome::NeedsForce`]), and
/// the removal of a live foreign holder's lock is logged as an unfenced
/// reclaim.
///
/// # Cancel safety
/// Not cancel safe for a backend whose removal suspends: dropped mid-way,
/// the lock may or may not have been removed. The file backend's future
/// completes at once.
pub async fn remove_lock<B: LockBackend>(
    backend: &B,
    st: &LockStatus<B::Key, B::Version>,
    opts: &FixOptions,
) -> Outcome {
    if !matches!(st.action, Contender::Reclaim) {
        return Outcome::Held(Box::new(st.holder.clone()));
    }
    let forced = needs_force(st);
    if forced && !opts.force {
        return Outcome::NeedsForce;
    }
    let deadline = Instant::now().checked_add(opts.lock_timeout);
    let outcome = match backend
        .remove_if_unchanged(&st.key, &st.inspection, deadline)
        .await
    {
        Ok(true) => Outcome::Removed,
        // Not the lock inspected: another one, or none at all.
        Ok(false) => match backend.inspect(&st.key).await {
            Ok(None) => Outcome::AlreadyGone,
            Ok(Some(_)) | Err(Error::InvalidPath { .. }) => Outcome::Changed,
            Err(e) => Outcome::Failed(e),
        },
        Err(Error::Timeout { holder, .. }) => Outcome::Held(holder),
        Err(e) => Outcome::Failed(e),
    };
    let foreign = st
        .inspection
        .payload
        .as_ref()
        .is_ok_and(crate::openclaw::is_foreign);
    if matches!(outcome, Outcome::Removed) && forced && foreign {
        tracing::warn!(
            target: "sessionlock::reclaim",
            lock = %Path::new(st.key.locator()).display(),
            holder_pid = st.holder.pid,
            past_lease_ms = u64::try_from(past_lease(st, SystemTime::now()).as_millis()).unwrap_or(u64::MAX),
            "unfenced reclaim: removed the lock of a live foreign holder past its lease (forced); \
             it cannot be fenced and may still write"
        );
    }
    outcome
}

/// An error and its causes, joined with `: `.
pub(crate) fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::{Child, Command};

    use super::*;
    use crate::backend::file::FileBackend;
    use crate::blocking::block_on;
    use crate::lock::acquire::{LockOptions, SessionLock};
    use crate::payload::format_time;

    fn write_lock(dir: &Path, pid: u32, created: SystemTime) -> PathBuf {
        let lock = dir.join("s.jsonl.lock");
        let payload = serde_json::json!({
            "pid": pid,
            "createdAt": format_time(created),
            "maxHoldMs": 1_000,
        });
        std::fs::write(&lock, serde_json::to_vec(&payload).unwrap()).unwrap();
        lock
    }

    /// The one lock in `dir`, judged now.
    fn judged(dir: &Path) -> LockFinding {
        let mut found = block_on(examine_locks(
            &FileBackend::default(),
            dir,
            &Settings::default(),
        ))
        .unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        found.remove(0)
    }

    fn status(f: &LockFinding) -> &LockStatus {
        match &f.lock {
            Explained::Lock(st) => st,
            Explained::Unreadable { error, .. } => panic!("{error}"),
        }
    }

    struct Kill(Child);

    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    // docs/design.md §9.4: never a live holder within its lease, whatever the
    // caller asks.
    #[test]
    fn a_live_holder_within_its_lease_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let guard = SessionLock::new()
            .acquire_with(dir.path().join("s.jsonl"), &LockOptions::default())
            .unwrap();
        let f = judged(dir.path());
        assert_eq!((f.verdict, f.action), (Verdict::Ok, Action::Keep));
        let opts = FixOptions::default().force(true);
        let out = block_on(remove_lock(&FileBackend::default(), status(&f), &opts));
        assert!(matches!(out, Outcome::Held(_)), "{out:?}");
        assert!(guard.lock_path().exists());
        guard.release().unwrap();
    }

    #[test]
    fn a_live_holder_past_its_lease_is_removed_only_when_forced() {
        let dir = tempfile::tempdir().unwrap();
        let sleeper = Kill(Command::new("sleep").arg("60").spawn().unwrap());
        let lock = write_lock(
            dir.path(),
            sleeper.0.id(),
            SystemTime::now() - Duration::from_secs(60),
        );
        let f = judged(dir.path());
        assert_eq!(
            (f.verdict, f.action, f.reasons.clone()),
            (
                Verdict::Removable,
                Action::RemoveWithForce,
                vec!["hold-exceeded"]
            )
        );
        let backend = FileBackend::default();
        let out = block_on(remove_lock(&backend, status(&f), &FixOptions::default()));
        assert!(matches!(out, Outcome::NeedsForce), "{out:?}");
        assert!(lock.exists());
        let forced = FixOptions::default().force(true);
        let out = block_on(remove_lock(&backend, status(&f), &forced));
        assert!(matches!(out, Outcome::Removed), "{out:?}");
        assert!(!lock.exists());
        let out = block_on(remove_lock(&backend, status(&f), &forced));
        assert!(matches!(out, Outcome::AlreadyGone), "{out:?}");
    }

    // docs/design.md §9.4: never a lock that changed since inspection.
    #[test]
    fn a_lock_replaced_since_it_was_judged_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let lock = write_lock(dir.path(), dead, SystemTime::now());
        let f = judged(dir.path());
        assert_eq!((f.verdict, f.action), (Verdict::Removable, Action::Remove));
        // A new holder takes over: a new file at the lock path.
        let fresh = dir.path().join("fresh");
        std::fs::copy(&lock, &fresh).unwrap();
        std::fs::rename(&fresh, &lock).unwrap();
        let out = block_on(remove_lock(
            &FileBackend::default(),
            status(&f),
            &FixOptions::default(),
        ));
        assert!(matches!(out, Outcome::Changed), "{out:?}");
        assert!(lock.exists());
    }
}
