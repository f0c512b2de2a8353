//! Explaining locks ([design §4](crate::design#4-stale-classification),
//! "Status"): what `sessionlock status` shows and the doctor builds on, for any
//! backend, from its inspections and its listing ([`LockBackend::inspect`],
//! [`LockBackend::list`]). Read-only.
//!
//! The file backend's entry points are [`inspect_session`] (a session
//! file) and [`scan_dir`] (a directory); [`openclaw_exposure`] applies the
//! file backend's check of which holders OpenClaw would delete.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::backend::file::diag as file;
pub use crate::backend::file::diag::Exposure;
use crate::backend::file::waiters::InLine;
use crate::backend::file::{FileBackend, FileKey, FileVersion};
use crate::backend::{Inspection, Listed, LockBackend, SessionId};
use crate::blocking::block_on;
use crate::config::Settings;
use crate::error::{Error, Holder, Holds, Result};
use crate::identity::Liveness;
use crate::lock::acquire::{held_here, holder_from};
use crate::reclaim::{Action, Policy};
use crate::sys::{self, KernelLocks};

/// One lock, explained.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LockStatus<K = FileKey, V = FileVersion> {
    /// The session the lock guards, by its canonical name
    /// ([`SessionId::session`]: the session file, for files).
    pub session: PathBuf,
    /// The session's key (for files, with its lock path).
    pub key: K,
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
    pub inspection: Inspection<V>,
    /// Who waits in the session's line, and a process stuck holding its
    /// state lock (the file backend's; empty for other backends).
    pub contention: Contention,
}

/// How a session is contended beyond its lock's holder: who waits in the
/// session's line of waiters
/// ([design §3.12](crate::design#312-the-line-of-waiters)), and a process
/// stuck inside a protocol step holding the session's state lock
/// ([design §3](crate::design#3-protocols), "Take the state lock"). The
/// file backend's; empty elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Contention {
    /// The processes waiting in the session's line, first first.
    pub waiting: Vec<u32>,
    /// The session's queue in arrival order, first first: who waits, with
    /// what each waiter recorded about itself (the file backend's waiter
    /// records, a database's waiters table). On files, one per process in
    /// [`Contention::waiting`].
    pub queue: Vec<Waiter>,
    /// A process holding the session's state lock that was seen stopped,
    /// or holding it on two looks [`STUCK_AFTER`] apart (sessionlock holds
    /// it for microseconds): stuck inside a protocol step, it makes every
    /// other process's acquire, release and fenced write of the session
    /// time out until it is resumed or killed. Its [`Holder::holds`] is
    /// [`Holds::StateLock`], its lock path the state file.
    pub stuck: Option<Holder>,
}

impl Contention {
    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.queue.is_empty() && self.stuck.is_none()
    }
}

/// One waiter in a session's queue
/// ([design §3.12](crate::design#312-the-line-of-waiters)): what it
/// recorded about itself, each field `None` where it recorded nothing (a
/// waiter of a version without records, or one that could not write its
/// record, shows only its pid).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Waiter {
    /// Its process.
    pub pid: Option<u32>,
    /// Its host.
    pub hostname: Option<String>,
    /// The acquisition's lane.
    pub lane: Option<String>,
    /// The acquisition's run id.
    pub run_id: Option<String>,
    /// When it started waiting in line (its wall clock).
    pub since: Option<SystemTime>,
    /// When its acquisition gives up, if it has a budget.
    pub deadline: Option<SystemTime>,
    /// Whether its process is stopped (`SIGSTOP`, a debugger): it holds up
    /// the line behind it (files).
    pub stopped: bool,
    /// The database client it waits through (`None` on files).
    pub client_id: Option<String>,
}

impl Waiter {
    /// A waiter known only by its pid.
    pub fn new(pid: Option<u32>) -> Waiter {
        Waiter {
            pid,
            ..Waiter::default()
        }
    }

    /// The waiter of a place in a file backend's line.
    fn of_place(p: InLine) -> Waiter {
        let stopped = sys::process_stopped(p.pid);
        match p.record {
            Some(r) => Waiter {
                pid: Some(p.pid),
                hostname: r.hostname,
                lane: r.lane,
                run_id: r.run_id,
                since: r.since,
                deadline: r.deadline,
                stopped,
                client_id: None,
            },
            None => Waiter {
                pid: Some(p.pid),
                // A place is a lock of this machine's kernel.
                hostname: Some(sys::hostname().to_owned()),
                stopped,
                ..Waiter::default()
            },
        }
    }
}

/// How long apart the two looks at a state lock's holders are: a process
/// holding it on both (and not this one) is stuck inside a protocol step.
/// Only taken when a state lock is held at the first look.
pub const STUCK_AFTER: Duration = Duration::from_millis(20);

/// The contention of each session of `keys` (the file backend's), in the
/// same order: one read of the kernel's list of locks for all of them,
/// and a second [`STUCK_AFTER`] after it only when some state lock is held
/// by a process that is not stopped.
pub(crate) fn contention_of(backend: &FileBackend, keys: &[&FileKey]) -> Vec<Contention> {
    if keys.is_empty() {
        return Vec::new();
    }
    let me = sys::pid();
    let first = KernelLocks::read();
    let looked = Instant::now();
    let mut found: Vec<Contention> = Vec::with_capacity(keys.len());
    // (index, pid) of state-lock holders that are not stopped.
    let mut again: Vec<(usize, u32)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let queue: Vec<Waiter> = backend
            .line(key, &first)
            .into_iter()
            .map(Waiter::of_place)
            .collect();
        let mut c = Contention {
            waiting: queue.iter().filter_map(|w| w.pid).collect(),
            queue,
            stuck: None,
        };
        for pid in backend.state_lock_holders(key, &first) {
            if pid == me {
                continue;
            }
            if sys::process_stopped(pid) {
                c.stuck = Some(stuck(key, pid, true));
                break;
            }
            again.push((i, pid));
        }
        found.push(c);
    }
    again.retain(|&(i, _)| found[i].stuck.is_none());
    if again.is_empty() {
        return found;
    }
    std::thread::sleep(STUCK_AFTER.saturating_sub(looked.elapsed()));
    // The kernel hands its list out a page at a time, and a line can slip
    // between two pages when other locks come and go meanwhile: a holder
    // missing from the second look is looked for twice more.
    for _ in 0..3 {
        let second = KernelLocks::read();
        again.retain(|&(i, pid)| {
            if found[i].stuck.is_some() {
                return false;
            }
            if !backend.state_lock_holders(keys[i], &second).contains(&pid) {
                return true;
            }
            found[i].stuck = Some(stuck(keys[i], pid, sys::process_stopped(pid)));
            false
        });
        if again.is_empty() {
            break;
        }
    }
    found
}

/// The holder of `key`'s state lock, stuck.
fn stuck(key: &FileKey, pid: u32, stopped: bool) -> Holder {
    Holder::holding(
        &FileBackend::epoch_path(key),
        Some(pid),
        Holds::StateLock,
        stopped,
    )
}

impl<K: SessionId, V> LockStatus<K, V> {
    /// Explains the lock of `key` as `backend` inspected it, judged by
    /// [`LockBackend::assess`] with [`policy`]`(settings)`, on the backend's
    /// clock. A lock naming this process is an orphan only if this process
    /// does not hold it.
    pub fn explain<B>(
        backend: &B,
        key: K,
        inspection: Inspection<V>,
        settings: &Settings,
    ) -> LockStatus<K, V>
    where
        B: LockBackend<Key = K, Version = V>,
    {
        let now = inspection.observed;
        let a = backend.assess(&inspection, &policy(settings), held_here(&key));
        LockStatus {
            session: PathBuf::from(key.session()),
            holder: holder_from(key.locator(), &inspection, &a),
            liveness: a.liveness,
            lease_left: a
                .lease_end
                .map(|end| end.duration_since(now).unwrap_or(Duration::ZERO)),
            lease_end: a.lease_end,
            action: a.action,
            inspection,
            key,
            contention: Contention::default(),
        }
    }
}

#[cfg(test)]
impl LockStatus<(), ()> {
    /// A status of no backend, for the tests of what is built on statuses.
    pub(crate) fn for_tests(
        session: PathBuf,
        holder: Holder,
        liveness: Liveness,
        lease_end: SystemTime,
        contention: Contention,
    ) -> LockStatus<(), ()> {
        LockStatus {
            session,
            key: (),
            holder,
            liveness,
            lease_left: None,
            lease_end: Some(lease_end),
            action: Action::Report,
            inspection: Inspection {
                payload: Ok(crate::payload::Payload::default()),
                written: SystemTime::UNIX_EPOCH,
                observed: SystemTime::UNIX_EPOCH,
                liveness,
                ours: false,
                version: (),
            },
            contention,
        }
    }
}

impl<K, V> LockStatus<K, V> {
    /// Time left on the lease of a holder that may still be there:
    /// [`lease_left`](LockStatus::lease_left), but `None` for a holder that
    /// is gone (dead, or its pid recycled), whose lease means nothing. What
    /// `sessionlock status` shows.
    pub fn live_lease_left(&self) -> Option<Duration> {
        match self.liveness {
            Liveness::Dead | Liveness::Recycled => None,
            _ => self.lease_left,
        }
    }
}

/// One entry of an explained listing: a lock, or one that could not be read.
#[derive(Debug)]
pub enum Explained<K = FileKey, V = FileVersion> {
    /// A lock, explained.
    Lock(Box<LockStatus<K, V>>),
    /// A lock that could not be read.
    Unreadable {
        /// Where it is ([`SessionId::locator`]).
        locator: OsString,
        /// Why it could not be read.
        error: Error,
    },
}

impl<K: SessionId, V> Explained<K, V> {
    /// Where the lock is.
    pub fn locator(&self) -> &OsStr {
        match self {
            Explained::Lock(st) => st.key.locator(),
            Explained::Unreadable { locator, .. } => locator,
        }
    }

    /// Explains one entry of `backend`'s listing.
    pub fn of<B>(backend: &B, listed: Listed<K, V>, settings: &Settings) -> Explained<K, V>
    where
        B: LockBackend<Key = K, Version = V>,
    {
        match listed {
            Listed::Lock { key, inspection } => Explained::Lock(Box::new(LockStatus::explain(
                backend,
                key,
                *inspection,
                settings,
            ))),
            Listed::Unreadable { locator, error } => Explained::Unreadable { locator, error },
        }
    }
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

/// Explains the lock of the session `key`, if it has one.
///
/// # Errors
/// As [`LockBackend::inspect`].
///
/// # Cancel safety
/// Read-only: dropping the future changes nothing.
pub async fn inspect<B: LockBackend>(
    backend: &B,
    key: &B::Key,
    settings: &Settings,
) -> Result<Option<LockStatus<B::Key, B::Version>>> {
    let Some(inspection) = backend.inspect(key).await? else {
        return Ok(None);
    };
    Ok(Some(LockStatus::explain(
        backend,
        key.clone(),
        inspection,
        settings,
    )))
}

/// Explains every lock `backend` lists in `scope`, in the listing's order
/// (by locator). A lock that cannot be read stays in the list as
/// [`Explained::Unreadable`].
///
/// # Errors
/// As [`LockBackend::list`].
///
/// # Cancel safety
/// Read-only: dropping the future changes nothing.
pub async fn list<B: LockBackend>(
    backend: &B,
    scope: &B::Scope,
    settings: &Settings,
) -> Result<Vec<Explained<B::Key, B::Version>>> {
    Ok(backend
        .list(scope)
        .await?
        .into_iter()
        .map(|listed| Explained::of(backend, listed, settings))
        .collect())
}

/// Explains the lock acquirers take for the session file `session`, if it
/// has one: the session is resolved as [`LockBackend::key`] resolves it
/// (through a symlinked directory or file name), without creating anything.
///
/// Its [`LockStatus::contention`] is filled in ([`Contention`]: one read of
/// `/proc/locks`, and a second look [`STUCK_AFTER`] later only when a
/// process other than this one holds the session's state lock).
///
/// # Errors
/// As [`FileBackend::resolve`]; `InvalidPath` for a symlink or non-regular
/// lock; `Io`.
pub fn inspect_session(session: &Path, settings: &Settings) -> Result<Option<LockStatus>> {
    let backend = FileBackend::default();
    // A session whose directory is gone has no lock.
    let Some(key) = backend.resolve(session)? else {
        return Ok(None);
    };
    let Some(mut st) = block_on(inspect(&backend, &key, settings))? else {
        return Ok(None);
    };
    if let Some(c) = contention_of(&backend, &[&st.key]).pop() {
        st.contention = c;
    }
    Ok(Some(st))
}

/// Explains every `*.jsonl.lock` in `dir` (not recursive), sorted by path,
/// whatever bytes its name holds: the file backend's listing, explained. A
/// lock that cannot be read yields an error entry naming it; the scan goes
/// on.
///
/// Each lock's [`LockStatus::contention`] is filled in, for all of them
/// from one read of `/proc/locks` (and a second look [`STUCK_AFTER`] later
/// only when some state lock is held by a process that is not stopped).
///
/// # Errors
/// `Io` when the directory cannot be listed.
pub fn scan_dir(dir: &Path, settings: &Settings) -> Result<Vec<Result<LockStatus>>> {
    let backend = FileBackend::default();
    let listed = block_on(list(&backend, dir, settings))?;
    let mut locks: Vec<Result<LockStatus>> = listed
        .into_iter()
        .map(|entry| match entry {
            Explained::Lock(st) => Ok(*st),
            // The file backend's errors name the lock's path.
            Explained::Unreadable { error, .. } => Err(error),
        })
        .collect();
    let keys: Vec<&FileKey> = locks
        .iter()
        .filter_map(|l| l.as_ref().ok().map(|st| &st.key))
        .collect();
    let found = contention_of(&backend, &keys);
    for (st, c) in locks.iter_mut().filter_map(|l| l.as_mut().ok()).zip(found) {
        st.contention = c;
    }
    Ok(locks)
}

/// The locks of one directory, as [`scan_dirs`] found them.
#[derive(Debug)]
#[non_exhaustive]
pub struct DirLocks {
    /// The directory, as given.
    pub dir: PathBuf,
    /// Its locks as [`scan_dir`] explains them, or why it could not be
    /// listed.
    pub locks: Result<Vec<Result<LockStatus>>>,
}

/// [`scan_dir`] of each directory, in the order given: what
/// `sessionlock status` lists. A directory that cannot be listed stays in
/// the list with its error; the scan goes on.
pub fn scan_dirs(dirs: &[PathBuf], settings: &Settings) -> Vec<DirLocks> {
    dirs.iter()
        .map(|dir| DirLocks {
            dir: dir.clone(),
            locks: scan_dir(dir, settings),
        })
        .collect()
}

/// Whether a lock is OpenClaw's (its payload names no `owner`).
pub fn is_openclaw(st: &LockStatus) -> bool {
    file::is_openclaw_holder(&st.holder)
}

/// The sessionlock holders among `locks` (the locks of one directory) that
/// OpenClaw would delete, each with why; empty unless the directory also
/// holds an OpenClaw lock. Only live local holders are judged: a dead one
/// is reclaimable anyway, and a remote one cannot be inspected.
pub fn openclaw_exposure<'a>(locks: &[&'a LockStatus]) -> Vec<(&'a LockStatus, Exposure)> {
    let holders: Vec<(&Holder, Liveness)> =
        locks.iter().map(|st| (&st.holder, st.liveness)).collect();
    file::openclaw_exposure(&holders)
        .into_iter()
        .map(|(i, why)| (locks[i], why))
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
    use std::time::Duration;

    use super::*;
    use crate::lock::acquire::{LockOptions, SessionLock};

    // docs/design.md §12 recorded it: `inspect_session` resolved the
    // session's directory but not a session file name that is itself a
    // symlink, which acquirers follow; given such a name it inspected
    // `<link>.lock` and reported no lock while the session was held.
    #[test]
    fn a_session_name_that_is_a_symlink_shows_the_lock_acquirers_take() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.jsonl");
        std::fs::write(&real, b"").unwrap();
        let alias = dir.path().join("alias.jsonl");
        std::os::unix::fs::symlink("real.jsonl", &alias).unwrap();
        let guard = SessionLock::new()
            .acquire_with(&alias, &LockOptions::default().lane("channel"))
            .unwrap();
        assert_eq!(
            guard.lock_path(),
            std::fs::canonicalize(dir.path())
                .unwrap()
                .join("real.jsonl.lock")
        );

        for name in [&alias, &real] {
            let st = inspect_session(name, &Settings::default())
                .unwrap()
                .expect("the session is held");
            assert_eq!(&st.key, guard.key());
            assert_eq!(st.holder.pid, Some(std::process::id()));
            assert_eq!(st.holder.lane.as_deref(), Some("channel"));
            assert_eq!(st.liveness, Liveness::Alive);
            // Held here, so not an orphan of this process.
            assert!(st.holder.reasons.is_empty(), "{:?}", st.holder.reasons);
            assert!(matches!(st.action, Action::Wait { .. }));
        }
        guard.release().unwrap();
        assert!(inspect_session(&alias, &Settings::default())
            .unwrap()
            .is_none());
    }

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
