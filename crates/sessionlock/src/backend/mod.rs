//! The backend seam
//! ([design §16](crate::design#16-the-backend-seam-and-how-to-add-a-backend)):
//! what the shared machinery (acquire loop, in-process registry, watchdog,
//! guards, attempt controller) needs from a place where session locks and
//! transcripts live.
//!
//! Two traits, one per concern:
//! - [`LockBackend`]: leases with fencing epochs. Keys are opaque session
//!   ids the backend maps ([`LockBackend::key`]); versions for
//!   remove-if-unchanged are backend-defined ([`LockBackend::Version`]);
//!   staleness is judged on the backend's own evidence, gathered when it
//!   inspects a lock ([`Inspection::liveness`], [`Inspection::observed`]);
//!   waits take the inspected holder as their hint.
//! - [`StoreBackend`]: transcripts whose mutations take the lease of *this*
//!   backend (by type, through [`Held`]) and run the epoch check and the
//!   mutation as one unit the backend defines.
//!
//! Operations are `async`. The embedded [`FileBackend`](file::FileBackend)'s
//! futures complete at once, so the blocking API drives them through the
//! same code at no cost; a database backend awaits its client. No type in
//! the seam names a path, an inode, a process id or `std::fs`: those live in
//! the file backend ([`FileBackend`](file::FileBackend)).
//!
//! Every backend passes one conformance suite
//! (`crates/sessionlock/tests/conformance/`), instantiated per backend.

pub mod file;

use std::ffi::{OsStr, OsString};
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
// The seam's vocabulary: reachable here whether or not the modules that
// define them are (the `internals` feature, see lib.rs).
pub use crate::identity::{Liveness, SelfIdentity};
pub use crate::payload::{Malformed, Payload, MAX_FIELD_BYTES, MAX_PAYLOAD_BYTES};
use crate::reclaim::{self, Assessment, Policy};
use crate::store::classify::ChangeClassifier;
use crate::store::{Appended, Change, Durability, RawEntries, Read, TornTail};

/// A canonical session id, as a backend names it: every name of one session
/// (two paths to one file, say) maps to the same key.
pub trait SessionId: Clone + Eq + Hash + Debug + Send + Sync + 'static {
    /// The session's canonical name, for people, logs and this process's
    /// per-session turns (the canonical session file for files).
    fn session(&self) -> &OsStr;

    /// Where the session's lock lives, for people and logs (and the
    /// `lock_path` of a [`Holder`](crate::Holder)): a file path for files, a
    /// backend's own locator otherwise. Unique per session within one
    /// backend: it also keys this process's per-session queue.
    fn locator(&self) -> &OsStr;
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

/// A lock someone holds, as a backend read it, with the backend's evidence
/// about its holder.
#[derive(Debug, Clone)]
pub struct Inspection<V> {
    /// The payload, or why it is unusable.
    pub payload: Result<Payload, Malformed>,
    /// When the lock was last written, on the backend's clock (for the
    /// payload grace, and the latest a lease may count from).
    pub written: SystemTime,
    /// The backend's clock when it read the lock: what ages and lease ends
    /// are measured against (the local clock for files; the server's for a
    /// database).
    pub observed: SystemTime,
    /// Whether the holder is alive, judged on the backend's evidence (files:
    /// pid, start time, boot id; a database: its connection).
    pub liveness: Liveness,
    /// Whether the holder is this process (alive): such a lock that this
    /// process does not hold in memory is an orphan.
    pub ours: bool,
    /// Which version of the lock this was, for remove-if-unchanged.
    pub version: V,
}

/// The outcome of one non-blocking try.
#[derive(Debug)]
pub enum Outcome<L, V> {
    /// We hold the lock.
    Acquired(L),
    /// Someone else does.
    Busy(Box<Inspection<V>>),
    /// The lock changed while we looked (it vanished, or a reclaim found a
    /// different lock than inspected): look again.
    Changed,
    /// Nobody holds the lock, but waiters that queued before us (or, for a
    /// try that has not queued, any waiters) come first: queue
    /// ([`LockBackend::queue`]) and wait. Only backends that keep a line of
    /// waiters return it.
    Queued,
}

/// The data every lease carries, whatever the backend.
#[derive(Debug, Clone)]
pub struct LeaseInfo<K> {
    /// The session.
    pub key: K,
    /// What was published.
    pub payload: Payload,
    /// This acquisition's fencing epoch.
    pub epoch: u64,
}

/// One lock of a backend's listing ([`LockBackend::list`]).
#[derive(Debug)]
pub enum Listed<K, V> {
    /// A lock that could be read.
    Lock {
        /// Its session.
        key: K,
        /// What inspecting it found.
        inspection: Box<Inspection<V>>,
    },
    /// A lock that could not be read (the file backend: a symlink or a
    /// directory where a lock belongs, a file it cannot open).
    Unreadable {
        /// Where it is, as [`SessionId::locator`] names it.
        locator: OsString,
        /// Why it could not be read.
        error: Error,
    },
}

impl<K: SessionId, V> Listed<K, V> {
    /// Where the lock is: what a listing is sorted by.
    pub fn locator(&self) -> &OsStr {
        match self {
            Listed::Lock { key, .. } => key.locator(),
            Listed::Unreadable { locator, .. } => locator,
        }
    }
}

/// A place where session locks live.
///
/// Implementations must provide, per key:
/// - at most one published lease at a time (mutual exclusion across processes);
/// - a fencing epoch that strictly increases with every publish and never
///   goes back, even when the lock itself is deleted;
/// - remove-if-unchanged removal ([`LockBackend::reclaim`],
///   [`LockBackend::remove_if_unchanged`], [`LockBackend::release`]);
/// - [`LockBackend::fenced`] runs its closure only while the lease's epoch is
///   current, atomically with respect to [`LockBackend::reclaim`] and
///   [`LockBackend::revoke`].
///
/// Every operation is short and bounded; waiting happens only in
/// [`LockBackend::wait`] and [`LockBackend::wait_blocking`]. Deadlines bound
/// how long an operation waits for the session's state (a `flock` for files,
/// a row lock for a database).
pub trait LockBackend: Send + Sync + 'static {
    /// What callers name a session by (a path for files, a string for a
    /// database).
    type Name: ?Sized;
    /// The canonical session id.
    type Key: SessionId;
    /// Which version of a lock an inspection saw (files: device, inode,
    /// size and times; a database: a row version).
    type Version: Clone + Eq + Debug + Send + Sync + 'static;
    /// A published lease. Republishing changes it in place (through `&`),
    /// so that the lease can be shared with an operation in flight.
    type Lease: Send + Sync + 'static;
    /// Per-acquire state for waiting on changes (a directory watch; a
    /// LISTEN).
    type Watch: Send + 'static;
    /// Where [`LockBackend::list`] looks (files: a directory; a database: a
    /// key prefix).
    type Scope: ?Sized;

    /// The backend's name in metrics labels and event logs
    /// ([design §20](crate::design#20-observability-metrics-and-the-event-log)):
    /// `file`, `postgres`, or your own backend's.
    const NAME: &'static str = "custom";

    /// Maps a session's name to its key.
    ///
    /// # Errors
    /// `InvalidPath` for unusable names; `Io` when the backend cannot
    /// resolve it (the file backend creates and resolves directories).
    fn key(&self, name: &Self::Name) -> Result<Self::Key>;

    /// Publishes a lease if nobody holds the lock; otherwise inspects it.
    /// Waits for the session's state at most until `deadline` (`None`: as
    /// long as it takes).
    ///
    /// # Errors
    /// `Timeout` naming whoever kept the session's state busy past
    /// `deadline`; `EpochExhausted` when no new epoch can be issued; `Io`;
    /// `InvalidPath` (the file backend: a symlink or non-regular file at the
    /// lock or epoch path).
    fn try_acquire(
        &self,
        key: &Self::Key,
        req: &LeaseRequest,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Outcome<Self::Lease, Self::Version>>> + Send;

    /// Judges an inspected lock
    /// ([design §4](crate::design#4-stale-classification)): how old it is and
    /// when its lease ends on the backend's clock ([`Inspection::observed`]),
    /// whether its holder lives ([`Inspection::liveness`]), and what a
    /// contender may do under `policy`. `held_here` says whether this process
    /// holds the session in memory (only then is a lock of ours not an orphan).
    /// The provided rules ([`reclaim::classify`]) serve a backend whose
    /// inspection gathers its evidence; one with rules of its own overrides
    /// this.
    fn assess(
        &self,
        seen: &Inspection<Self::Version>,
        policy: &Policy,
        held_here: bool,
    ) -> Assessment {
        reclaim::classify(
            seen.payload.as_ref(),
            seen.written,
            seen.observed,
            policy,
            seen.liveness,
            seen.ours,
            held_here,
        )
    }

    /// Reads the current lock, if any, with the backend's evidence about
    /// its holder.
    ///
    /// # Errors
    /// As [`LockBackend::try_acquire`].
    fn inspect(
        &self,
        key: &Self::Key,
    ) -> impl Future<Output = Result<Option<Inspection<Self::Version>>>> + Send;

    /// Removes the lock `seen` if it is still exactly that version, then
    /// publishes ours. Of several concurrent reclaimers of one lock, exactly
    /// one gets `Acquired`.
    ///
    /// # Errors
    /// As [`LockBackend::try_acquire`].
    fn reclaim(
        &self,
        key: &Self::Key,
        seen: &Inspection<Self::Version>,
        req: &LeaseRequest,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Outcome<Self::Lease, Self::Version>>> + Send;

    /// Removes the lock `seen` if it is still exactly that version, without
    /// publishing one (what a doctor does with a stale lock). The session's
    /// epoch is raised to the removed lock's epoch if that was higher, so no
    /// epoch it used can be issued again. Returns whether it removed it.
    ///
    /// # Errors
    /// As [`LockBackend::try_acquire`].
    fn remove_if_unchanged(
        &self,
        key: &Self::Key,
        seen: &Inspection<Self::Version>,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Every lock in `scope`, sorted by locator: each one that can be read
    /// with its key and inspection, each one that cannot with its locator and
    /// why (the listing goes on past it). A lock gone while listed is left
    /// out. What diagnostics (`status`, the doctor) build on.
    ///
    /// # Errors
    /// `Io` when the scope itself cannot be listed.
    fn list(
        &self,
        scope: &Self::Scope,
    ) -> impl Future<Output = Result<Vec<Listed<Self::Key, Self::Version>>>> + Send;

    /// Removes the lease if it is still published; a no-op (returning
    /// `false`) when it was reclaimed, removed or replaced.
    ///
    /// This and the other operations on a held lease wait for the session's
    /// state for a bounded time chosen by the backend (the file backend:
    /// [`file::STATE_LOCK_BOUND`]), and here and in
    /// [`LockBackend::republish`] never past `deadline` either: an
    /// acquisition that releases or republishes a lease (an in-process
    /// hand-off) passes its own budget's end. A backend whose waits are
    /// bounded otherwise (a database's statement timeout) may ignore it.
    ///
    /// # Errors
    /// `Timeout` when the session's state stays busy past that bound; `Io`.
    fn release(
        &self,
        lease: &Self::Lease,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Republishes a held lease with a fresh `createdAt` (and, with
    /// `new_epoch`, a new epoch, token, lane and run id: an in-process
    /// hand-off). [`LockBackend::info`] reflects the change afterwards.
    ///
    /// # Errors
    /// `Fenced` when the lease's epoch is no longer current; `Revoked` when
    /// the lease is no longer published (removed or replaced by someone
    /// else; a replacement is never overwritten); `EpochExhausted`;
    /// `Timeout` as [`LockBackend::release`]; `Io`.
    fn republish(
        &self,
        lease: &Self::Lease,
        req: &LeaseRequest,
        new_epoch: bool,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Fences the lease out (bumps the epoch if it is still current) and
    /// removes it if still published. Returns the session's epoch afterwards.
    /// Runs on the watchdog thread, so its wait for the session's state is
    /// short (the file backend: [`file::REVOKE_BOUND`]).
    ///
    /// # Errors
    /// `Timeout` when the session's state stays busy past that bound;
    /// `EpochExhausted`; `Io`.
    fn revoke(&self, lease: &Self::Lease) -> impl Future<Output = Result<u64>> + Send;

    /// The session's current epoch.
    ///
    /// # Errors
    /// `Io`.
    fn current_epoch(&self, lease: &Self::Lease) -> impl Future<Output = Result<u64>> + Send;

    /// Whether the lease is still the session's: its epoch current and the
    /// lease still the published lock. What [`Guard::check`](crate::Guard::check)
    /// and [`Guard::lost`](crate::Guard::lost) ask.
    ///
    /// # Errors
    /// `Fenced` when a newer epoch exists; `Revoked` when the lease is no
    /// longer published; `Timeout` when the session's state stays busy
    /// past the backend's bound; `Io`.
    fn check(&self, lease: &Self::Lease) -> impl Future<Output = Result<()>> + Send;

    /// Runs `f` only if the lease's epoch is current and the lease is still
    /// the published lock, holding off reclaims and revocations until `f`
    /// returns (files: a shared `flock`; a database: the lease row locked in
    /// a transaction). For mutations of the caller's own; the transcript's
    /// go through [`StoreBackend`].
    ///
    /// # Errors
    /// `Fenced` when a newer epoch exists; `Revoked` when the lease is no
    /// longer published (someone removed or replaced it without going
    /// through the backend); `Io`.
    fn fenced<T>(
        &self,
        lease: &Self::Lease,
        f: impl FnOnce() -> T,
    ) -> impl Future<Output = Result<T>>;

    /// The backend-independent part of a lease, as of now.
    fn info(lease: &Self::Lease) -> LeaseInfo<Self::Key>;

    /// Starts watching for changes to the lock. Called before the check whose
    /// result is waited on, so no change is missed.
    ///
    /// # Errors
    /// `Io` only for unexpected failures; a file system without notifications
    /// yields a polling watch instead.
    fn watch(&self, key: &Self::Key) -> impl Future<Output = Result<Self::Watch>> + Send;

    /// Takes this acquisition's place in the session's line of waiters,
    /// kept by `watch` until it is dropped: later tries of the same
    /// acquisition publish only when no waiter that queued earlier still
    /// waits, and [`LockBackend::wait`] and [`LockBackend::wait_blocking`]
    /// return only once this waiter is first in line (or their timeout
    /// passes). Called once, right after [`LockBackend::watch`], by an
    /// acquisition that has to wait. The default keeps no line: whoever
    /// looks first after a release wins.
    ///
    /// `req` and `deadline` (when the acquisition gives up) say who waits:
    /// a backend that lets others see its waiters (`status`, the doctor's
    /// wait-for chains) records them.
    ///
    /// # Errors
    /// `Io`.
    fn queue(
        &self,
        key: &Self::Key,
        watch: &mut Self::Watch,
        req: &LeaseRequest,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (key, watch, req, deadline);
        async { Ok(()) }
    }

    /// The first waiter in the session's line, if the backend keeps one and
    /// can tell: who a waiter that timed out while queued waited for.
    fn first_waiter(&self, key: &Self::Key) -> Option<crate::error::Holder> {
        let _ = key;
        None
    }

    /// Sleeps until the lock may have changed, the live holder `holder` (as
    /// inspected) ends, or `timeout` passes (`None`: no timeout).
    ///
    /// # Errors
    /// `Io`.
    fn wait_blocking(
        &self,
        watch: &mut Self::Watch,
        holder: Option<&Inspection<Self::Version>>,
        timeout: Option<Duration>,
    ) -> Result<()>;

    /// The async twin of [`LockBackend::wait_blocking`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future leaves the watch usable.
    fn wait(
        &self,
        watch: &mut Self::Watch,
        holder: Option<&Inspection<Self::Version>>,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// A lease handed to a store's mutation by the guard that owns it: only a
/// live guard makes one, so a store never sees a lease its owner has
/// released or lost, and only its own backend's lease type fits.
#[derive(Debug)]
pub struct Held<L> {
    lease: Arc<L>,
    inside_fence: bool,
}

impl<L> Held<L> {
    pub(crate) fn new(lease: Arc<L>, inside_fence: bool) -> Held<L> {
        Held {
            lease,
            inside_fence,
        }
    }

    /// The lease.
    pub fn lease(&self) -> &L {
        &self.lease
    }

    /// Whether this thread already runs under the lease's fence (a store
    /// mutation called from inside [`Guard::with_fence`](crate::Guard::with_fence)):
    /// the store must then not take the fence again, only run the mutation.
    pub fn inside_fence(&self) -> bool {
        self.inside_fence
    }
}

/// A session's transcript as a backend stores it
/// ([design §5](crate::design#5-the-transcript-store)): every mutation takes
/// the lease it is made under and lands only while that lease's epoch is
/// current, whole or not at all; snapshots let an attempt detect what others
/// changed while it had released its lock
/// ([design §7](crate::design#7-fence-snapshots-and-takeover-detection)).
pub trait TranscriptStore<B: LockBackend + ?Sized>: Send + Sized + 'static {
    /// A snapshot of the transcript, cheap to take: O(1) in its size plus
    /// what was appended since the store's previous snapshot.
    type Snapshot: Send + Sync + 'static;

    /// Appends `entries`, one line each, in one fenced unit.
    ///
    /// # Errors
    /// `Revoked`/`Fenced` (nothing written), `Poisoned`, `InvalidPath` (a
    /// lease of another session), `Io`.
    ///
    /// # Cancel safety
    /// The file store's future completes at once. A store that suspends
    /// must leave either the whole batch or nothing when dropped.
    fn append(
        &mut self,
        held: &Held<B::Lease>,
        entries: &RawEntries,
        durability: Durability,
    ) -> impl Future<Output = Result<Appended>> + Send;

    /// Replaces the transcript with `entries`, atomically and durably.
    ///
    /// # Errors
    /// As [`TranscriptStore::append`].
    fn rewrite(
        &mut self,
        held: &Held<B::Lease>,
        entries: &RawEntries,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Keeps the first `keep` entries.
    ///
    /// # Errors
    /// As [`TranscriptStore::append`].
    fn truncate(
        &mut self,
        held: &Held<B::Lease>,
        keep: usize,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Sets a torn final line aside and truncates to the last complete one.
    ///
    /// # Errors
    /// As [`TranscriptStore::append`].
    fn repair(
        &mut self,
        held: &Held<B::Lease>,
    ) -> impl Future<Output = Result<Option<TornTail>>> + Send;

    /// Every complete entry, and the torn tail if there is one. Needs no
    /// lease: readers do not lock.
    ///
    /// # Errors
    /// `InvalidEntry` for a line that is not JSON; `Io`.
    fn read(&self) -> impl Future<Output = Result<Read>> + Send;

    /// Snapshots the transcript as of now, for the session epoch `epoch`.
    ///
    /// # Errors
    /// `Io` when it cannot be examined.
    fn snapshot(&self, epoch: u64) -> impl Future<Output = Result<Self::Snapshot>> + Send;

    /// What changed since `snapshot`, judged by `classifier`; a benign change
    /// returns the accepted entries and their range. Costs O(appended bytes).
    ///
    /// # Errors
    /// `Io` when it cannot be examined.
    fn check(
        &self,
        snapshot: &Self::Snapshot,
        classifier: &dyn ChangeClassifier,
    ) -> impl Future<Output = Result<Change>> + Send;
}

/// A backend that also stores transcripts, so the attempt controller runs on
/// it unchanged.
pub trait StoreBackend: LockBackend {
    /// The transcript handle.
    type Store: TranscriptStore<Self>;

    /// Opens (creating if needed) the transcript of a session.
    ///
    /// # Errors
    /// `Io`, `InvalidPath`.
    fn open_store(&self, key: &Self::Key) -> impl Future<Output = Result<Self::Store>> + Send;
}
