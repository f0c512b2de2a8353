//! Acquisition ([design §3.1](crate::design#31-acquire)): one budget,
//! in-process first, then across processes with event-driven waits and
//! stale-lock reclaim.
//!
//! The loop is written once, as an async state machine. The blocking API runs
//! it with blocking waits, so it never actually suspends, and drives it with a
//! trivial executor: the two APIs cannot drift apart.

use std::any::TypeId;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::Instrument as _;

use crate::backend::file::FileBackend;
use crate::backend::{Inspection, LeaseRequest, LockBackend, Outcome, SessionId};
use crate::blocking::block_on;
use crate::config::{Config, HoldExceededPolicy, Settings};
use crate::error::{Error, Holder, Result, TryAcquireError};
use crate::identity::me;
use crate::lock::guard::{Guard, Hold, Spans};
use crate::lock::registry::{self, Entry, Turn};
use crate::observe;
use crate::reclaim::{self, Action, Assessment, Policy};

/// Options of one acquisition: the wait's budget, the lease, what to do
/// with a holder past its lease, and the labels other processes see.
///
/// Start from [`LockOptions::default`] (the built-in defaults: a 60 s
/// budget, a 5 min lease, reclaim of holders past their lease) or
/// [`LockOptions::from_env`] (the same, overridden by `SESSIONLOCK_*`
/// environment variables), then change what you need with the builder
/// methods; a [`SessionLock`] has default options of its own for
/// [`SessionLock::acquire`], and the `_with` methods take these per call.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use sessionlock::{HoldExceededPolicy, LockOptions, SessionLock};
///
/// # fn main() -> Result<(), sessionlock::Error> {
/// let opts = LockOptions::default()
///     // Wait at most 10 s for another holder.
///     .timeout(Some(Duration::from_secs(10)))
///     // The lease: held longer than 2 min without `Guard::extend`, the
///     // lock is revoked, and other processes may take it over.
///     .max_hold(Duration::from_secs(120))
///     // A live holder past its lease is reported, not taken over.
///     .hold_exceeded(HoldExceededPolicy::Report)
///     // Labels for `sessionlock status` and for timeout messages.
///     .lane("cron")
///     .run_id("run-42");
/// assert_eq!(opts.timeout, Some(Duration::from_secs(10)));
///
/// let dir = tempfile::tempdir().expect("tempdir");
/// let session = dir.path().join("abc.jsonl");
/// let guard = SessionLock::new().acquire_with(&session, &opts)?;
/// // What other processes read from the lock file:
/// let me = guard.holder();
/// assert_eq!(me.max_hold_ms, Some(120_000));
/// assert_eq!(me.lane.as_deref(), Some("cron"));
/// assert_eq!(me.run_id.as_deref(), Some("run-42"));
/// guard.release()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockOptions {
    /// The budget for the whole call, across every retry; `None` waits
    /// forever.
    pub timeout: Option<Duration>,
    /// The lease: the watchdog revokes the lock this long after it was taken
    /// (or last extended), and other processes may reclaim it after that.
    pub max_hold: Duration,
    /// Age after which a lock is reported `too-old` (never acted on).
    pub stale_after: Duration,
    /// What to do when a live sessionlock holder is past its lease.
    pub hold_exceeded: HoldExceededPolicy,
    /// What to do when a live foreign (OpenClaw) holder is past its lease;
    /// `None` follows `hold_exceeded`. It cannot be fenced: reclaiming it is
    /// logged as an unfenced reclaim.
    pub foreign_hold_exceeded: Option<HoldExceededPolicy>,
    /// OpenClaw-compatible mode: lock files are written readable by
    /// OpenClaw (mode 0644), and a warning is logged once if this process's
    /// arguments lack the marker OpenClaw needs to honour its locks (see
    /// [`crate::openclaw`]).
    pub openclaw_compat: bool,
    /// Diagnostic lane label (`channel`, `heartbeat`, `cron`, ...).
    pub lane: Option<String>,
    /// Diagnostic run id.
    pub run_id: Option<String>,
    /// Whether acquiring a session this process already holds succeeds at
    /// once, sharing the existing acquisition (off by default: then it waits
    /// like any other contender).
    pub reentrant: bool,
}

impl LockOptions {
    /// Options from resolved settings, with no labels and no reentrancy.
    pub fn from_settings(s: &Settings) -> Self {
        LockOptions {
            timeout: s.acquire_timeout,
            max_hold: s.max_hold,
            stale_after: s.stale_after,
            hold_exceeded: s.hold_exceeded,
            foreign_hold_exceeded: s.foreign_hold_exceeded,
            openclaw_compat: s.openclaw_compat,
            lane: None,
            run_id: None,
            reentrant: false,
        }
    }

    /// Options from the defaults and the environment (see [`crate::config`]
    /// for the variables and what wins).
    pub fn from_env() -> Self {
        Self::from_settings(&Config::default().resolve())
    }

    /// Sets the acquire budget (`None`: forever).
    pub fn timeout(mut self, t: Option<Duration>) -> Self {
        self.timeout = t;
        self
    }
    /// Sets the lease.
    pub fn max_hold(mut self, d: Duration) -> Self {
        self.max_hold = d;
        self
    }
    /// Sets the too-old report threshold.
    pub fn stale_after(mut self, d: Duration) -> Self {
        self.stale_after = d;
        self
    }
    /// Sets the hold-exceeded policy.
    pub fn hold_exceeded(mut self, p: HoldExceededPolicy) -> Self {
        self.hold_exceeded = p;
        self
    }
    /// Sets the hold-exceeded policy for foreign (OpenClaw) holders.
    pub fn foreign_hold_exceeded(mut self, p: HoldExceededPolicy) -> Self {
        self.foreign_hold_exceeded = Some(p);
        self
    }
    /// Turns OpenClaw-compatible mode on or off.
    pub fn openclaw_compat(mut self, yes: bool) -> Self {
        self.openclaw_compat = yes;
        self
    }
    /// Sets the lane label.
    pub fn lane(mut self, lane: impl Into<String>) -> Self {
        self.lane = Some(lane.into());
        self
    }
    /// Sets the run id.
    pub fn run_id(mut self, run: impl Into<String>) -> Self {
        self.run_id = Some(run.into());
        self
    }
    /// Allows reentrant acquisition.
    pub fn reentrant(mut self, yes: bool) -> Self {
        self.reentrant = yes;
        self
    }
}

impl Default for LockOptions {
    /// The defaults of [`crate::config`], without reading the environment.
    fn default() -> Self {
        Self::from_settings(&Settings::default())
    }
}

/// Acquires session write locks.
///
/// Cheap to clone; all clones (and all `SessionLock`s of one process) share
/// the process-global registry, so every holder and waiter of one session in
/// this process queues in one FIFO line.
///
/// Every acquisition comes in three forms: blocking ([`SessionLock::acquire`],
/// [`SessionLock::acquire_with`]), async ([`SessionLock::acquire_async`],
/// [`SessionLock::acquire_async_with`]: they wait without blocking the
/// runtime's threads, and need a tokio runtime with I/O and time enabled,
/// as `#[tokio::main]` or `Builder::enable_all` gives), and one try that
/// never waits for a holder ([`SessionLock::try_acquire`]).
/// [`SessionLock::with_lock_async`] acquires, runs async work raced against
/// the lock's loss, and releases.
///
/// # Example
///
/// An async acquisition, then a try from the same process while it is held:
///
/// ```
/// use std::time::Duration;
/// use sessionlock::{LockOptions, SessionLock, TryAcquireError};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let session = dir.path().join("abc.jsonl");
/// let locks = SessionLock::new();
/// let opts = LockOptions::default()
///     .timeout(Some(Duration::from_secs(10)))
///     .lane("channel");
///
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// let guard = rt.block_on(locks.acquire_async_with(&session, &opts))?;
///
/// // Held: a try does not wait, and names the holder (here, this process).
/// match locks.try_acquire(&session) {
///     Err(TryAcquireError::WouldBlock(holder)) => {
///         assert_eq!(holder.pid, Some(std::process::id()));
///         assert_eq!(holder.lane.as_deref(), Some("channel"));
///     }
///     other => panic!("expected WouldBlock, got {other:?}"),
/// }
///
/// let epoch = guard.epoch();
/// guard.release()?;
/// // Free: the try takes it, with a newer fencing epoch.
/// let again = locks.try_acquire(&session)?;
/// assert!(again.epoch() > epoch);
/// again.release()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SessionLock<B: LockBackend = FileBackend> {
    backend: Arc<B>,
    options: LockOptions,
}

impl<B: LockBackend> Clone for SessionLock<B> {
    fn clone(&self) -> Self {
        SessionLock {
            backend: self.backend.clone(),
            options: self.options.clone(),
        }
    }
}

impl SessionLock<FileBackend> {
    /// The file backend with options from the defaults and the environment
    /// (including `SESSIONLOCK_NOTIFY=poll`, which makes waiters poll instead
    /// of using inotify; see `sessionlock verify-fs`).
    pub fn new() -> Self {
        let notify = match std::env::var(crate::config::ENV_NOTIFY).ok().as_deref() {
            None | Some("auto") => crate::backend::file::Notify::Auto,
            Some("poll") => crate::backend::file::Notify::Poll,
            Some(other) => {
                tracing::warn!(
                    target: "sessionlock::config",
                    var = crate::config::ENV_NOTIFY,
                    value = other,
                    reason = "expected auto or poll",
                    "ignoring an invalid environment variable"
                );
                crate::backend::file::Notify::Auto
            }
        };
        Self::with_backend(FileBackend::new(notify), LockOptions::from_env())
    }
}

impl Default for SessionLock<FileBackend> {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Blocking,
    Async,
}

/// Pause between looks at a lock that keeps changing under us.
const CHURN_PAUSE: Duration = Duration::from_millis(2);

/// Even an acquisition whose budget is spent (a `try_acquire`) waits this
/// long for the session's state (the file backend's state lock):
/// sessionlock's own processes hold it for microseconds, and reporting one
/// of them as a blocker would be a spurious failure.
const STATE_MIN_WAIT: Duration = Duration::from_millis(50);

/// In the async API, the longest one backend call may block a runtime
/// thread waiting for the session's state; between such slices the task
/// sleeps on the runtime's timer ([`STATE_PAUSE`]), so another program
/// holding the state lock cannot starve the runtime.
const ASYNC_STATE_SLICE: Duration = Duration::from_millis(2);
/// The async sleep between two slices.
const STATE_PAUSE: Duration = Duration::from_millis(5);

/// Converts a wall-clock instant into a monotonic one (for timers); `None`
/// for one too far ahead to represent (no timer needed: the budget or the
/// safety net ends the wait first).
/// The local instant at which the backend's clock, which read `observed`
/// just now, will read `t` (a database's clock may differ from ours).
fn instant_at(t: SystemTime, observed: SystemTime) -> Option<Instant> {
    match t.duration_since(observed) {
        Ok(ahead) => Instant::now().checked_add(ahead),
        Err(_) => Some(Instant::now()),
    }
}

/// The process-wide queue of a session.
pub(crate) fn slot_of<K: SessionId>(key: &K) -> Arc<registry::Slot> {
    registry::slot(TypeId::of::<K>(), key.locator())
}

/// Whether this process holds (or is handing over) the lock of `key`.
#[cfg(feature = "internals")] // only the diagnostics (`diag`) use it
pub(crate) fn held_here<K: SessionId>(key: &K) -> bool {
    registry::is_held(TypeId::of::<K>(), key.locator())
}

/// Describes the holder of an inspected lock, found at `locator`.
pub(crate) fn holder_from<V>(locator: &OsStr, insp: &Inspection<V>, a: &Assessment) -> Holder {
    let p = insp.payload.as_ref().ok();
    Holder {
        lock_path: PathBuf::from(locator),
        pid: p.and_then(|p| p.pid),
        hostname: p.and_then(|p| p.hostname.clone()),
        alive: a.liveness.presumed_alive(),
        age_ms: Some(u64::try_from(a.age.as_millis()).unwrap_or(u64::MAX)),
        max_hold_ms: p.and_then(|p| p.max_hold_ms),
        epoch: p.and_then(|p| p.epoch),
        lane: p.and_then(|p| p.lane.clone()),
        run_id: p.and_then(|p| p.run_id.clone()),
        owner: p.map(|p| crate::openclaw::owner_of(p).to_owned()),
        reasons: a.reasons,
        holds: None,
        stopped: false,
    }
}

impl LockOptions {
    /// The rules a contender with these options applies to a lock it finds.
    fn policy(&self) -> Policy {
        Policy {
            stale_after: self.stale_after,
            hold_exceeded: self.hold_exceeded,
            foreign_hold_exceeded: self.foreign_hold_exceeded.unwrap_or(self.hold_exceeded),
            payload_grace: Policy::grace_for_budget(self.timeout, self.stale_after),
        }
    }
}

/// Logs a reclaim, whichever the backend; and, as a warning, one of a live
/// foreign holder past its lease: it cannot be fenced, so it may go on
/// writing beside the new holder
/// ([design §14.3](crate::design#143-foreign-holders-past-their-lease); seed
/// incident #89673 requires the reclaim anyway under policy `reclaim`).
fn log_reclaim<V>(locator: &OsStr, seen: &Inspection<V>, a: &Assessment) {
    let payload = seen.payload.as_ref().ok();
    tracing::info!(
        target: "sessionlock::reclaim",
        lock = %Path::new(locator).display(),
        reasons = %a.reasons,
        holder_pid = payload.and_then(|p| p.pid),
        holder_owner = payload.map(crate::openclaw::owner_of),
        holder_epoch = payload.and_then(|p| p.epoch),
        age_ms = u64::try_from(a.age.as_millis()).unwrap_or(u64::MAX),
        "reclaimed stale session lock"
    );
    let Some(p) = payload else {
        return;
    };
    if !a.reasons.contains(reclaim::Reason::HoldExceeded)
        || !a.liveness.presumed_alive()
        || !crate::openclaw::is_foreign(p)
    {
        return;
    }
    let past_ms = a
        .lease_end
        .and_then(|end| SystemTime::now().duration_since(end).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    tracing::warn!(
        target: "sessionlock::reclaim",
        lock = %Path::new(locator).display(),
        holder_pid = p.pid,
        holder_owner = crate::openclaw::owner_of(p),
        past_lease_ms = past_ms,
        hint = "set SESSIONLOCK_FOREIGN_HOLD_EXCEEDED=report to refuse such reclaims",
        "unfenced reclaim: took over the lock of a live foreign holder past its lease; \
         it cannot be fenced and may still write"
    );
}

/// A backend's `Timeout` (its state stayed busy) reports the caller's budget,
/// like every other timeout of the acquisition.
fn with_budget(e: Error, opts: &LockOptions) -> Error {
    match e {
        Error::Timeout { holder, .. } => Error::Timeout {
            timeout_ms: timeout_ms(opts),
            holder,
        },
        e => e,
    }
}

fn timeout_ms(opts: &LockOptions) -> u64 {
    opts.timeout.map_or(u64::MAX, |t| {
        u64::try_from(t.as_millis()).unwrap_or(u64::MAX)
    })
}

impl<B: LockBackend> SessionLock<B> {
    /// A lock manager over any backend, with default options for
    /// [`SessionLock::acquire`].
    pub fn with_backend(backend: B, options: LockOptions) -> Self {
        SessionLock {
            backend: Arc::new(backend),
            options,
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The default options.
    pub fn options(&self) -> &LockOptions {
        &self.options
    }

    /// Acquires the lock of `session` with the default options, blocking the
    /// thread.
    ///
    /// # Errors
    /// `Timeout` naming the holder when the budget runs out; `Stale` when a
    /// live holder is past its lease under policy `report`; `InvalidPath`
    /// when a symlink or non-regular file stands at the lock path; `Io`;
    /// `Misuse` when called, without reentrancy, inside a
    /// [`Guard::with_fence`] of this session on the same thread.
    pub fn acquire(&self, session: impl AsRef<B::Name>) -> Result<Guard<B>> {
        self.acquire_with(session, &self.options)
    }

    /// [`SessionLock::acquire`] with explicit options.
    ///
    /// # Errors
    /// As [`SessionLock::acquire`].
    pub fn acquire_with(
        &self,
        session: impl AsRef<B::Name>,
        opts: &LockOptions,
    ) -> Result<Guard<B>> {
        block_on(self.acquire_core(session.as_ref(), opts, Mode::Blocking))
    }

    /// Acquires the lock of `session` without blocking the runtime's threads
    /// while waiting. Requires a tokio runtime with I/O and time enabled.
    ///
    /// # Errors
    /// As [`SessionLock::acquire`].
    ///
    /// # Cancel safety
    /// Cancel safe at every await point: dropping the future leaves nothing
    /// queued or held. A lock handed to it by an in-process hand-off is passed
    /// on to the next waiter, or released.
    ///
    /// # Example
    ///
    /// Two tasks take turns; the second waits (without blocking the
    /// runtime's thread) until the first releases:
    ///
    /// ```
    /// use sessionlock::SessionLock;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), sessionlock::Error> {
    /// let dir = tempfile::tempdir().expect("tempdir");
    /// let session = dir.path().join("abc.jsonl");
    /// let locks = SessionLock::new();
    ///
    /// let first = locks.acquire_async(&session).await?;
    /// let second = tokio::spawn({
    ///     let (locks, session) = (locks.clone(), session.clone());
    ///     async move { locks.acquire_async(&session).await }
    /// });
    /// let epoch = first.epoch();
    /// first.release()?;
    ///
    /// let second = second.await.expect("task")?;
    /// assert!(second.epoch() > epoch, "every acquisition gets a newer epoch");
    /// second.release()?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn acquire_async(&self, session: impl AsRef<B::Name>) -> Result<Guard<B>> {
        self.acquire_core(session.as_ref(), &self.options, Mode::Async)
            .await
    }

    /// [`SessionLock::acquire_async`] with explicit options.
    ///
    /// # Errors
    /// As [`SessionLock::acquire`].
    ///
    /// # Cancel safety
    /// As [`SessionLock::acquire_async`].
    pub async fn acquire_async_with(
        &self,
        session: impl AsRef<B::Name>,
        opts: &LockOptions,
    ) -> Result<Guard<B>> {
        self.acquire_core(session.as_ref(), opts, Mode::Async).await
    }

    /// Tries once, without waiting: a lock that is free, or stale and
    /// reclaimable now, is taken; a live holder gives `WouldBlock`.
    ///
    /// # Errors
    /// `WouldBlock` naming the holder; `Failed` as [`SessionLock::acquire`].
    ///
    /// # Example
    ///
    /// A cron job that skips its run while someone else writes the session:
    ///
    /// ```
    /// use sessionlock::{SessionLock, TryAcquireError};
    ///
    /// /// Runs the job if the session is free; `Ok(false)` if it is busy.
    /// fn run_if_free(locks: &SessionLock, session: &std::path::Path) -> Result<bool, TryAcquireError> {
    ///     let guard = match locks.try_acquire(session) {
    ///         Ok(guard) => guard,
    ///         Err(TryAcquireError::WouldBlock(holder)) => {
    ///             eprintln!("skipped: session held by {holder}");
    ///             return Ok(false);
    ///         }
    ///         Err(failed) => return Err(failed),
    ///     };
    ///     // ... the job's writes, under `guard` ...
    ///     guard.release()?;
    ///     Ok(true)
    /// }
    ///
    /// # fn main() -> Result<(), TryAcquireError> {
    /// let dir = tempfile::tempdir().expect("tempdir");
    /// let session = dir.path().join("abc.jsonl");
    /// let locks = SessionLock::new();
    /// assert!(run_if_free(&locks, &session)?);
    ///
    /// let held = locks.acquire(&session)?;
    /// assert!(!run_if_free(&locks, &session)?);
    /// held.release()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_acquire(&self, session: impl AsRef<B::Name>) -> Result<Guard<B>, TryAcquireError> {
        self.try_acquire_with(session, &self.options)
    }

    /// [`SessionLock::try_acquire`] with explicit options: lease, labels
    /// and policies from `opts`; its budget is not used (a try has none).
    ///
    /// It can block the calling thread briefly: the session's state lock is
    /// waited for up to 50 ms while another process is inside it (a few
    /// system calls, normally), through `block_in_place` on a worker of a
    /// multi-thread runtime. A caller that must never wait uses
    /// [`SessionLock::try_acquire_now`].
    ///
    /// # Errors
    /// As [`SessionLock::try_acquire`].
    ///
    /// # Example
    /// ```
    /// use sessionlock::{LockOptions, SessionLock, TryAcquireError};
    ///
    /// # fn main() -> Result<(), TryAcquireError> {
    /// # let dir = tempfile::tempdir().expect("tempdir");
    /// # let session = dir.path().join("abc.jsonl");
    /// let locks = SessionLock::new();
    /// let cron = LockOptions::from_env().lane("cron");
    /// let guard = locks.try_acquire_with(&session, &cron)?;
    /// assert_eq!(guard.holder().lane.as_deref(), Some("cron"));
    /// assert!(matches!(
    ///     locks.try_acquire_with(&session, &cron),
    ///     Err(TryAcquireError::WouldBlock(_))
    /// ));
    /// guard.release()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_acquire_with(
        &self,
        session: impl AsRef<B::Name>,
        opts: &LockOptions,
    ) -> Result<Guard<B>, TryAcquireError> {
        let opts = opts.clone().timeout(Some(Duration::ZERO));
        match self.acquire_with(session, &opts) {
            Ok(g) => Ok(g),
            Err(Error::Timeout { holder, .. }) => Err(TryAcquireError::WouldBlock(holder)),
            Err(e) => Err(TryAcquireError::Failed(e)),
        }
    }

    /// Takes the lock at once if that needs no wait at all, for a caller
    /// that must not block (an event loop): a free lock is taken, a stale
    /// one reclaimed, as a zero-budget [`SessionLock::try_acquire`] does,
    /// except that the session's state lock is tried once instead of waited
    /// for (up to 50 ms) when another process holds it. Lease and labels
    /// come from `opts`; its budget is not used.
    ///
    /// # Errors
    /// `WouldBlock` naming the holder (the session's state lock, when that
    /// was busy); `Failed` as [`SessionLock::acquire`].
    pub fn try_acquire_now(
        &self,
        session: impl AsRef<B::Name>,
        opts: &LockOptions,
    ) -> Result<Guard<B>, TryAcquireError> {
        let opts = opts.clone().timeout(Some(Duration::ZERO));
        let (got, _) = crate::blocking::without_waiting(|| self.acquire_with(session, &opts));
        match got {
            Ok(g) => Ok(g),
            Err(Error::Timeout { holder, .. }) => Err(TryAcquireError::WouldBlock(holder)),
            Err(e) => Err(TryAcquireError::Failed(e)),
        }
    }

    /// How many tasks and threads of this process wait for `session`'s lock
    /// right now (diagnostics; the value may change at once): those queued
    /// behind this process's turn, and the one whose turn it is while it
    /// waits for (or is taking) the lock across processes.
    ///
    /// # Errors
    /// As [`LockBackend::key`].
    pub fn queued(&self, session: impl AsRef<B::Name>) -> Result<usize> {
        let key = self.backend.key(session.as_ref())?;
        Ok(slot_of(&key).waiting())
    }

    /// Who blocks an in-process waiter: this process's holder, or, while this
    /// process is itself still waiting across processes, the lock's holder.
    async fn current_holder(
        &self,
        key: &B::Key,
        slot: &registry::Slot,
        opts: &LockOptions,
    ) -> Holder {
        if let Some(h) = slot.holder() {
            return h;
        }
        match self.backend.inspect(key).await {
            Ok(Some(seen)) => {
                let a = self.assess(&seen, &opts.policy());
                holder_from(key.locator(), &seen, &a)
            }
            _ => Holder {
                lock_path: PathBuf::from(key.locator()),
                pid: Some(me().pid),
                hostname: Some(me().hostname.clone()),
                alive: true,
                age_ms: None,
                max_hold_ms: None,
                epoch: None,
                lane: None,
                run_id: None,
                owner: None,
                reasons: Default::default(),
                holds: None,
                stopped: false,
            },
        }
    }

    /// Judges an inspected lock as a contender: from this process, which
    /// holds the turn, so nothing of this process holds the key and a lock
    /// of ours is an orphan.
    fn assess(&self, seen: &Inspection<B::Version>, policy: &Policy) -> Assessment {
        self.backend.assess(seen, policy, false)
    }

    fn request(&self, opts: &LockOptions) -> LeaseRequest {
        LeaseRequest {
            max_hold: opts.max_hold.min(crate::config::MAX_HOLD_CAP),
            lane: opts.lane.clone(),
            run_id: opts.run_id.clone(),
            me: me().clone(),
            openclaw_compat: opts.openclaw_compat,
        }
    }

    fn guard(&self, req: LeaseRequest, lease: B::Lease, turn: Turn, spans: &Spans) -> Guard<B> {
        Guard::first(Hold::start(self.backend.clone(), req, lease, turn, spans))
    }

    /// Acquires the lock of a session already resolved to its key, without
    /// blocking the runtime's threads (what the attempt controller, which
    /// resolves its session once, uses).
    pub(crate) async fn acquire_key_async(
        &self,
        key: &B::Key,
        opts: &LockOptions,
    ) -> Result<Guard<B>> {
        self.acquire_at(key.clone(), opts, Mode::Async).await
    }

    async fn acquire_core(
        &self,
        session: &B::Name,
        opts: &LockOptions,
        mode: Mode,
    ) -> Result<Guard<B>> {
        let key = self.backend.key(session)?;
        self.acquire_at(key, opts, mode).await
    }

    /// Acquires inside a `sessionlock.acquire` span, and logs the outcome
    /// (docs/design.md §19).
    async fn acquire_at(&self, key: B::Key, opts: &LockOptions, mode: Mode) -> Result<Guard<B>> {
        let started = Instant::now();
        // Field values are formatted only if a subscriber wants the span.
        let acquire = tracing::info_span!(
            target: "sessionlock::acquire",
            "sessionlock.acquire",
            session = %Path::new(key.session()).display(),
            lane = opts.lane.as_deref(),
            run = opts.run_id.as_deref(),
            epoch = tracing::field::Empty,
        );
        let spans = Spans {
            caller: tracing::Span::current(),
            acquire,
        };
        let session = key.session().to_owned();
        let ctx = observe::Ctx {
            backend: B::NAME,
            session: &session,
            lane: opts.lane.as_deref(),
            run: opts.run_id.as_deref(),
        };
        // Counted while it waits; logged as cancelled if dropped before
        // its outcome (an async acquisition's future).
        let waiting = observe::Waiting::start(&ctx, started);
        let mut joined = false;
        let got = self
            .acquire_in(key, opts, mode, started, &spans, &mut joined)
            .instrument(spans.acquire.clone())
            .await;
        waiting.finish();
        let waited = started.elapsed();
        match &got {
            // A join shares a hold that began (and was logged) before.
            Ok(_) if joined => {}
            Ok(g) => observe::acquired(&ctx, g.epoch(), waited),
            Err(Error::Timeout { holder, .. }) => observe::gave_up(&ctx, waited, holder.pid),
            Err(e) => observe::failed(&ctx, waited, e),
        }
        let waited_ms = || u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
        spans.acquire.in_scope(|| match &got {
            Ok(g) => {
                spans.acquire.record("epoch", g.epoch());
                tracing::debug!(
                    target: "sessionlock::acquire",
                    epoch = g.epoch(),
                    waited_ms = waited_ms(),
                    "acquired session lock"
                );
            }
            Err(Error::Timeout { holder, .. }) => tracing::debug!(
                target: "sessionlock::acquire",
                waited_ms = waited_ms(),
                holder_pid = holder.pid,
                holder = %holder,
                "gave up waiting for the session lock"
            ),
            Err(e) => tracing::debug!(
                target: "sessionlock::acquire",
                error = %e,
                "acquisition failed"
            ),
        });
        got
    }

    /// Starts watching the lock and takes this acquisition's place in the
    /// session's line, if the backend keeps one.
    async fn arm(
        &self,
        key: &B::Key,
        opts: &LockOptions,
        deadline: Option<Instant>,
    ) -> Result<B::Watch> {
        let mut watch = self.backend.watch(key).await?;
        self.backend
            .queue(key, &mut watch, &self.request(opts), deadline)
            .await?;
        Ok(watch)
    }

    /// The lock is free but waiters queued before us come first: queue (the
    /// first time), then wait until this waiter is first in line, something
    /// changed, or the budget ends (then `Timeout`, naming the first
    /// waiter).
    async fn wait_in_line(
        &self,
        key: &B::Key,
        watch: &mut Option<B::Watch>,
        deadline: Option<Instant>,
        mode: Mode,
        turn: &Turn,
        opts: &LockOptions,
    ) -> Result<()> {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            let holder = match self.backend.first_waiter(key) {
                Some(h) => h,
                None => self.current_holder(key, turn.slot(), opts).await,
            };
            return Err(Error::Timeout {
                timeout_ms: timeout_ms(opts),
                holder: Box::new(holder),
            });
        }
        let Some(w) = watch.as_mut() else {
            *watch = Some(self.arm(key, opts, deadline).await?);
            return Ok(());
        };
        let timeout = deadline.map(|d| d.saturating_duration_since(now));
        match mode {
            Mode::Blocking => self.backend.wait_blocking(w, None, timeout),
            Mode::Async => self.backend.wait(w, None, timeout).await,
        }
    }

    async fn acquire_in(
        &self,
        key: B::Key,
        opts: &LockOptions,
        mode: Mode,
        started: Instant,
        spans: &Spans,
        joined: &mut bool,
    ) -> Result<Guard<B>> {
        // A budget too large for a deadline (`Duration::MAX`) is forever.
        let deadline = opts.timeout.and_then(|t| started.checked_add(t));
        let state_deadline = deadline.map(|d| d.max(started + STATE_MIN_WAIT));
        if opts.openclaw_compat {
            crate::openclaw::warn_if_self_unmarked();
        }
        let slot = slot_of(&key);

        if opts.reentrant {
            // Joined while any guard of it lives; else it is being
            // released, and the turn comes after that, as anyone's.
            if let Some(guard) = slot.current_hold::<Hold<B>>().and_then(Guard::join) {
                *joined = true;
                return Ok(guard);
            }
        } else if crate::lock::guard::inside_any_fence() {
            // Called from inside this session's own fence, the turn would
            // never come (its holder is this thread, waiting): say so now.
            if let Some(hold) = slot.current_hold::<Hold<B>>() {
                if hold.fenced_here() {
                    return Err(hold.inside_fence_error("acquire the session lock again"));
                }
            }
        }

        // In-process first: one FIFO line per key.
        let turn = match slot.enter() {
            Entry::Turn(t) => t,
            Entry::Queued(q) => {
                let turn = match mode {
                    Mode::Blocking => q.wait_blocking(deadline),
                    Mode::Async => q.wait_async(deadline).await,
                };
                match turn {
                    Some(t) => t,
                    None => {
                        return Err(Error::Timeout {
                            timeout_ms: timeout_ms(opts),
                            holder: Box::new(self.current_holder(&key, &slot, opts).await),
                        });
                    }
                }
            }
        };
        let req = self.request(opts);

        // A hand-off: the previous in-process holder left the lock published.
        if let Some(parked) = turn.slot().take_parked() {
            if let Ok(lease) = parked.downcast::<B::Lease>() {
                match self
                    .backend
                    .republish(&lease, &req, true, state_deadline)
                    .await
                {
                    Ok(()) => return Ok(self.guard(req, *lease, turn, spans)),
                    Err(e) => {
                        tracing::debug!(
                            target: "sessionlock::acquire",
                            error = %e,
                            "handed-off lock was lost; acquiring anew"
                        );
                        let _ = self.backend.release(&lease, state_deadline).await;
                    }
                }
            }
        }

        // Across processes.
        let policy = opts.policy();
        let mut watch: Option<B::Watch> = None;
        // Consecutive looks that found the lock changing under us (a lost
        // reclaim race, a foreign writer churning the file): retried at once
        // a few times, then with a short pause, and never past the budget.
        let mut churn = 0u32;
        loop {
            if churn > 3 {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Error::Timeout {
                        timeout_ms: timeout_ms(opts),
                        holder: Box::new(self.current_holder(&key, turn.slot(), opts).await),
                    });
                }
                match mode {
                    Mode::Blocking => std::thread::sleep(CHURN_PAUSE),
                    Mode::Async => tokio::time::sleep(CHURN_PAUSE).await,
                }
            }
            // The backend waits for the session's state within the budget; in
            // the async API in short slices, sleeping asynchronously between.
            let slice = match mode {
                Mode::Blocking => state_deadline,
                Mode::Async => {
                    let end = Instant::now() + ASYNC_STATE_SLICE;
                    Some(state_deadline.map_or(end, |d| d.min(end)))
                }
            };
            let state_busy = |r: &Result<_>| {
                matches!(mode, Mode::Async)
                    && matches!(r, Err(Error::Timeout { .. }))
                    && state_deadline.is_none_or(|d| Instant::now() < d)
            };
            let tried = self.backend.try_acquire(&key, &req, slice).await;
            if state_busy(&tried) {
                tokio::time::sleep(STATE_PAUSE).await;
                continue;
            }
            let seen = match tried.map_err(|e| with_budget(e, opts))? {
                Outcome::Acquired(lease) => return Ok(self.guard(req, lease, turn, spans)),
                Outcome::Changed => {
                    churn += 1;
                    continue;
                }
                Outcome::Queued => {
                    churn = 0;
                    self.wait_in_line(&key, &mut watch, deadline, mode, &turn, opts)
                        .await?;
                    continue;
                }
                Outcome::Busy(seen) => seen,
            };
            let a = self.assess(&seen, &policy);
            match a.action {
                Action::Reclaim => {
                    let reclaimed = self.backend.reclaim(&key, &seen, &req, slice).await;
                    if state_busy(&reclaimed) {
                        tokio::time::sleep(STATE_PAUSE).await;
                        continue;
                    }
                    match reclaimed.map_err(|e| with_budget(e, opts))? {
                        Outcome::Acquired(lease) => {
                            log_reclaim(key.locator(), &seen, &a);
                            let payload = seen.payload.as_ref().ok();
                            let reasons: Vec<&'static str> =
                                a.reasons.iter().map(reclaim::Reason::as_str).collect();
                            observe::reclaimed(
                                &observe::Ctx {
                                    backend: B::NAME,
                                    session: key.session(),
                                    lane: opts.lane.as_deref(),
                                    run: opts.run_id.as_deref(),
                                },
                                &reasons,
                                payload.and_then(|p| p.pid),
                                payload.and_then(|p| p.epoch),
                            );
                            return Ok(self.guard(req, lease, turn, spans));
                        }
                        Outcome::Busy(_) | Outcome::Changed => churn += 1,
                        Outcome::Queued => {
                            churn = 0;
                            self.wait_in_line(&key, &mut watch, deadline, mode, &turn, opts)
                                .await?;
                        }
                    }
                }
                Action::Report => {
                    return Err(Error::Stale {
                        reasons: a.reasons,
                        holder: Box::new(holder_from(key.locator(), &seen, &a)),
                    })
                }
                Action::Wait {
                    until,
                    watch_holder,
                } => {
                    churn = 0;
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        return Err(Error::Timeout {
                            timeout_ms: timeout_ms(opts),
                            holder: Box::new(holder_from(key.locator(), &seen, &a)),
                        });
                    }
                    let Some(w) = watch.as_mut() else {
                        // Arm the watch, then look again: a change between
                        // our look and the arming would otherwise be missed.
                        watch = Some(self.arm(&key, opts, deadline).await?);
                        continue;
                    };
                    let wake = [deadline, until.and_then(|u| instant_at(u, seen.observed))]
                        .into_iter()
                        .flatten()
                        .min();
                    let timeout = wake.map(|w| w.saturating_duration_since(now));
                    let holder = watch_holder.then_some(&*seen);
                    match mode {
                        Mode::Blocking => self.backend.wait_blocking(w, holder, timeout)?,
                        Mode::Async => self.backend.wait(w, holder, timeout).await?,
                    }
                }
            }
        }
    }
}
