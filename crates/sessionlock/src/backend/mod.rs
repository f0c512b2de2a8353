//! The backend trait (spec §14): what the acquire loop, the watchdog and
//! guards need from a place where locks live.
//!
//! The embedded [`FileBackend`](file::FileBackend) keeps locks as files beside
//! the transcripts. A distributed backend (PostgreSQL: lease rows with fencing
//! epochs, wake-ups by LISTEN/NOTIFY) implements the same trait; the
//! in-process registry, the acquire loop, stale classification and the
//! watchdog are shared.
//!
//! Every method is a short, bounded operation; waiting happens only in
//! [`Backend::wait_blocking`] and [`Backend::wait_async`].

pub mod file;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::classify::ChangeClassifier;
use crate::error::Result;
use crate::fence::Change;
use crate::guard::Guard;
use crate::identity::SelfIdentity;
use crate::payload::{Malformed, Payload};
use crate::transcript::{Appended, Durability, RawEntries, TornTail};

/// A session, as a backend names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The canonical session file (spec §0): every path to one file gives the
    /// same value.
    pub session: PathBuf,
    /// Where the lock lives (`<session>.lock` for files).
    pub lock_path: PathBuf,
}

/// What a new lease should say about its holder.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// The lease written into the payload.
    pub max_hold: Duration,
    /// Diagnostic lane.
    pub lane: Option<String>,
    /// Diagnostic run id.
    pub run_id: Option<String>,
    /// Who we are.
    pub me: SelfIdentity,
    /// OpenClaw-compatible mode: the lock must be readable by OpenClaw
    /// processes of other users (file mode 0644 instead of 0600).
    pub openclaw_compat: bool,
}

/// Identity of one version of a lock, to make removal conditional on it being
/// unchanged. For files: device, inode, size and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// Device (or backend namespace).
    pub dev: u64,
    /// Inode (or row id).
    pub ino: u64,
    /// Size in bytes (or row version).
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status change time in nanoseconds since the epoch.
    pub ctime_ns: i128,
}

impl Stamp {
    /// The stamp of a file's metadata.
    pub fn of(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// A lock someone holds, as read.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Where the lock lives.
    pub lock_path: PathBuf,
    /// The payload, or why it is unusable.
    pub payload: Result<Payload, Malformed>,
    /// When the lock was last written (for the payload grace, and the
    /// latest a lease may count from): for files the mtime, never later than
    /// the ctime (which, unlike the mtime, nobody can set).
    pub mtime: SystemTime,
    /// Which version of the lock this was.
    pub stamp: Stamp,
}

/// The outcome of one non-blocking try.
#[derive(Debug)]
pub enum Attempt<L> {
    /// We hold the lock.
    Acquired(L),
    /// Someone else does.
    Busy(Box<Inspection>),
    /// The lock changed while we looked (it vanished, or a reclaim found a
    /// different lock than inspected): look again.
    Changed,
}

/// The data every lease carries, whatever the backend.
#[derive(Debug, Clone)]
pub struct LeaseInfo {
    /// The session.
    pub key: SessionKey,
    /// What was published.
    pub payload: Payload,
    /// This acquisition's fencing epoch.
    pub epoch: u64,
}

/// A place where session locks live.
///
/// Implementations must provide, per [`SessionKey`]:
/// - at most one published lease at a time (mutual exclusion across processes);
/// - a fencing epoch that strictly increases with every publish and never
///   goes back, even when the lock itself is deleted;
/// - remove-if-unchanged removal ([`Backend::reclaim`], [`Backend::release`]);
/// - [`Backend::fenced`] runs its closure only while the lease's epoch is
///   current, atomically with respect to [`Backend::reclaim`] and
///   [`Backend::revoke`].
pub trait Backend: Send + Sync + 'static {
    /// A published lease.
    type Lease: Send + Sync + 'static;
    /// Per-acquire state for waiting on changes (a directory watch).
    type Watch: Send + 'static;

    /// Names a session: canonicalizes the path, creating its directory.
    ///
    /// # Errors
    /// `InvalidPath` for unusable paths, `Io` when the directory cannot be
    /// created or resolved.
    fn key(&self, session: &Path) -> Result<SessionKey>;

    /// Publishes a lease if nobody holds the lock. Waits for the session's
    /// state (the file backend's state lock) at most until `deadline`
    /// (`None`: as long as it takes).
    ///
    /// # Errors
    /// `Timeout` naming the process that kept the session's state busy past
    /// `deadline`; `EpochExhausted` when no new epoch can be issued; `Io`,
    /// `InvalidPath` (a symlink or non-regular file at the lock or epoch
    /// path).
    fn try_acquire(
        &self,
        key: &SessionKey,
        req: &LeaseRequest,
        deadline: Option<Instant>,
    ) -> Result<Attempt<Self::Lease>>;

    /// Reads the current lock, if any.
    ///
    /// # Errors
    /// As [`Backend::try_acquire`].
    fn inspect(&self, key: &SessionKey) -> Result<Option<Inspection>>;

    /// Removes the lock `seen` if it is still exactly that lock, then
    /// publishes ours. Of several concurrent reclaimers of one lock, exactly
    /// one gets `Acquired`. Waits for the session's state at most until
    /// `deadline`.
    ///
    /// # Errors
    /// As [`Backend::try_acquire`].
    fn reclaim(
        &self,
        key: &SessionKey,
        seen: &Inspection,
        req: &LeaseRequest,
        deadline: Option<Instant>,
    ) -> Result<Attempt<Self::Lease>>;

    /// Removes the lock `seen` if it is still exactly that lock, without
    /// publishing one (what a doctor does with a stale lock). The session's
    /// epoch is raised to the removed lock's epoch if that was higher, so no
    /// epoch it used can be issued again. Returns whether it removed it.
    /// Waits for the session's state at most until `deadline`.
    ///
    /// # Errors
    /// As [`Backend::try_acquire`].
    fn remove_stale(
        &self,
        key: &SessionKey,
        seen: &Inspection,
        deadline: Option<Instant>,
    ) -> Result<bool>;

    /// Removes the lease if it is still published; a no-op (returning
    /// `false`) when it was reclaimed, removed or replaced.
    ///
    /// This and the other operations on a held lease wait for the session's
    /// state for a bounded time chosen by the backend (the file backend:
    /// [`file::STATE_LOCK_BOUND`]).
    ///
    /// # Errors
    /// `Timeout` when the session's state stays busy past that bound; `Io`.
    fn release(&self, lease: &Self::Lease) -> Result<bool>;

    /// Republishes a held lease with a fresh `createdAt` (and, with
    /// `new_epoch`, a new epoch, token, lane and run id: an in-process
    /// hand-off).
    ///
    /// # Errors
    /// `Fenced` when the lease's epoch is no longer current; `Revoked` when
    /// the lease is no longer published (removed or replaced by someone
    /// else; a replacement is never overwritten); `EpochExhausted`;
    /// `Timeout` as [`Backend::release`]; `Io`.
    fn republish(&self, lease: &mut Self::Lease, req: &LeaseRequest, new_epoch: bool)
        -> Result<()>;

    /// Fences the lease out (bumps the epoch if it is still current) and
    /// removes it if still published. Returns the session's epoch afterwards.
    /// Runs on the watchdog thread, so its wait for the session's state is
    /// short (the file backend: [`file::REVOKE_BOUND`]).
    ///
    /// # Errors
    /// `Timeout` when the session's state stays busy past that bound;
    /// `EpochExhausted`; `Io`.
    fn revoke(&self, lease: &Self::Lease) -> Result<u64>;

    /// The session's current epoch.
    ///
    /// # Errors
    /// `Io`.
    fn current_epoch(&self, lease: &Self::Lease) -> Result<u64>;

    /// Runs `f` only if the lease's epoch is current and the lease is still
    /// the published lock, holding off reclaims and revocations until `f`
    /// returns.
    ///
    /// # Errors
    /// `Fenced` when a newer epoch exists; `Revoked` when the lease is no
    /// longer published (someone removed or replaced it without going
    /// through the backend); `Io`.
    fn fenced<T>(&self, lease: &Self::Lease, f: impl FnOnce() -> T) -> Result<T>;

    /// The backend-independent part of a lease.
    fn info(lease: &Self::Lease) -> &LeaseInfo;

    /// Starts watching for changes to the lock. Called before the check whose
    /// result is waited on, so no change is missed.
    ///
    /// # Errors
    /// `Io` only for unexpected failures; a file system without notifications
    /// yields a polling watch instead.
    fn watch(&self, key: &SessionKey) -> Result<Self::Watch>;

    /// Sleeps until the lock may have changed, `pid` (a live local holder)
    /// exits, or `timeout` passes (`None`: no timeout).
    ///
    /// # Errors
    /// `Io`.
    fn wait_blocking(
        &self,
        watch: &mut Self::Watch,
        pid: Option<u32>,
        timeout: Option<Duration>,
    ) -> Result<()>;

    /// The async twin of [`Backend::wait_blocking`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves the watch usable.
    fn wait_async(
        &self,
        watch: &mut Self::Watch,
        pid: Option<u32>,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// A session's transcript as a backend stores it (spec §7): every mutation
/// is fenced by the guard it is made under, and snapshots let an attempt
/// detect what others changed while it had released its lock (§8.3).
pub trait Store: Send + 'static {
    /// A snapshot of the transcript, cheap to take: O(1) in its size plus
    /// what was appended since the store's previous snapshot (the file
    /// store's first snapshot also seeds a content digest, see
    /// [`fence`](crate::fence)).
    type Fence: Send + 'static;

    /// Appends `entries`, one line each, in one fenced write.
    ///
    /// # Errors
    /// `Revoked`/`Fenced` (nothing written), `Poisoned`, `Io`.
    fn append<B: Backend>(
        &mut self,
        guard: &Guard<B>,
        entries: &[Value],
        durability: Durability,
    ) -> Result<Appended>;

    /// Appends entries given as JSON text, byte for byte, in one fenced
    /// write, exactly like [`Store::append`].
    ///
    /// # Errors
    /// As [`Store::append`].
    fn append_raw<B: Backend>(
        &mut self,
        guard: &Guard<B>,
        entries: &RawEntries,
        durability: Durability,
    ) -> Result<Appended>;

    /// Replaces the transcript with `entries`, atomically and durably.
    ///
    /// # Errors
    /// As [`Store::append`].
    fn rewrite<B: Backend>(&mut self, guard: &Guard<B>, entries: &[Value]) -> Result<()>;

    /// Keeps the first `keep` entries.
    ///
    /// # Errors
    /// As [`Store::append`].
    fn truncate<B: Backend>(&mut self, guard: &Guard<B>, keep: usize) -> Result<()>;

    /// Sets a torn final line aside and truncates to the last complete one.
    ///
    /// # Errors
    /// As [`Store::append`].
    fn repair<B: Backend>(&mut self, guard: &Guard<B>) -> Result<Option<TornTail>>;

    /// Snapshots the transcript as of now, for the session epoch `epoch`.
    /// The file store reads the whole transcript (up to
    /// [`DIGEST_SEED_CAP`](crate::fence::DIGEST_SEED_CAP)) at its first
    /// snapshot, to seed the running digest that proves a later change of
    /// metadata alone harmless; afterwards only what was appended since.
    ///
    /// # Errors
    /// `Io` when it cannot be examined.
    fn snapshot(&self, epoch: u64) -> Result<Self::Fence>;

    /// What changed since `fence`, judged by `classifier`; a benign change
    /// returns the accepted entries and their byte range. Costs O(appended
    /// bytes), except when only metadata changed (same file and size, other
    /// times): the file store then hashes the whole file to compare it with
    /// the fence's digest.
    ///
    /// # Errors
    /// `Io` when it cannot be examined.
    fn check(&self, fence: &Self::Fence, classifier: &dyn ChangeClassifier) -> Result<Change>;
}

/// A backend that also stores transcripts, so the attempt controller runs on
/// it unchanged.
pub trait TranscriptBackend: Backend {
    /// The transcript handle.
    type Store: Store;

    /// Opens (creating if needed) the transcript of a canonical session.
    ///
    /// # Errors
    /// `Io`, `InvalidPath`.
    fn open_store(&self, session: &Path) -> Result<Self::Store>;
}
