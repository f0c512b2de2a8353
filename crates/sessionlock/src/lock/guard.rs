//! Lock guards: what an acquisition hands back.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::backend::file::FileBackend;
use crate::backend::{Held, LeaseInfo, LeaseRequest, LockBackend, SessionId};
use crate::blocking::{block_on, without_waiting};
use crate::error::{Error, Holder, LossCause, Result};
use crate::lock::registry::{Parked, Turn};
use crate::lock::watchdog::{self, Revocable};
use crate::observe;
use crate::payload::Payload;
use crate::reclaim::Reasons;
use crate::sync::lock;

/// A held session write lock.
///
/// Dropping the guard releases the lock (best effort; a failure is logged
/// with path and holder). [`Guard::release`] does the same and reports
/// failures. When other tasks or threads of this process wait for the same
/// session, the lock passes straight to the longest-waiting one.
///
/// A guard can lose its lock without being dropped: the watchdog revokes it
/// once it is held past `max_hold`, and another process may reclaim it after
/// that. Transcript mutations must therefore be fenced: the transcript's
/// own methods ([`Transcript`](crate::backend::file::transcript::Transcript)) are, and a
/// mutation of your own goes through [`Guard::with_fence`], which refuses
/// to run it once a newer epoch exists.
///
/// `Guard` is `Send + Sync`.
///
/// # Example
///
/// Work that must not go on without the lock races the guard's
/// [`revoked`](Guard::revoked) (or, to also notice another process taking
/// the lock over, [`lost`](Guard::lost)). Here the lease is short and the
/// work overruns it, so the watchdog revokes the lock and the work is
/// dropped:
///
/// ```
/// use std::time::Duration;
/// use sessionlock::{Error, LockOptions, LossCause, SessionLock};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let dir = tempfile::tempdir().expect("tempdir");
/// let session = dir.path().join("abc.jsonl");
/// let opts = LockOptions::default().max_hold(Duration::from_millis(200));
/// let guard = SessionLock::new().acquire_async_with(&session, &opts).await?;
///
/// let work = tokio::time::sleep(Duration::from_secs(30)); // a model call, say
/// let finished = tokio::select! {
///     () = work => true,
///     () = guard.revoked() => false, // held past `max_hold`: stop
/// };
/// assert!(!finished);
/// assert!(guard.is_revoked());
/// // Every fenced write through the guard is now refused, and so is a
/// // check; the release reports the loss too.
/// assert!(matches!(guard.check(), Err(Error::Revoked { cause: LossCause::Overdue, .. })));
/// assert!(matches!(guard.release(), Err(Error::Revoked { .. })));
/// # Ok(())
/// # }
/// ```
#[must_use = "dropping the guard releases the lock at once"]
pub struct Guard<B: LockBackend = FileBackend> {
    pub(crate) hold: Arc<Hold<B>>,
    /// Whether this guard still counts in `hold.guards`: cleared by the
    /// explicit releases, which count it out themselves.
    counted: bool,
}

impl<B: LockBackend> Guard<B> {
    /// The first guard of a fresh acquisition.
    pub(crate) fn first(hold: Arc<Hold<B>>) -> Guard<B> {
        Guard {
            hold,
            counted: true,
        }
    }

    /// Another guard of a held acquisition (reentrancy); `None` when its
    /// last guard is gone already, and it is being released.
    pub(crate) fn join(hold: Arc<Hold<B>>) -> Option<Guard<B>> {
        hold.guards
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 0).then_some(n + 1)
            })
            .ok()?;
        Some(Guard {
            hold,
            counted: true,
        })
    }

    /// Counts this guard out of its acquisition; true for the last guard,
    /// which must finish it. The acquisition's `Arc` is no measure of that:
    /// the watchdog holds one while it revokes.
    fn leave(&mut self) -> bool {
        std::mem::replace(&mut self.counted, false)
            && self.hold.guards.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

impl<B: LockBackend> Drop for Guard<B> {
    fn drop(&mut self) {
        if self.leave() {
            self.hold.finish_logged();
        }
    }
}

impl<B: LockBackend> std::fmt::Debug for Guard<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("key", &self.hold.info.key)
            .field("epoch", &self.hold.info.epoch)
            .field("revoked", &self.is_revoked())
            .finish()
    }
}

enum Phase {
    Held,
    Released,
    Revoked {
        current_epoch: u64,
        cause: LossCause,
    },
}

struct HoldState<L> {
    phase: Phase,
    lease: Option<Arc<L>>,
    turn: Option<Turn>,
    /// The watchdog's scheduled revocation.
    revocation: Option<watchdog::Ticket>,
}

/// The spans of an acquisition in progress (docs/design.md §19): the
/// caller's, current when the acquisition began, and the acquisition's own.
pub(crate) struct Spans {
    pub(crate) caller: tracing::Span,
    pub(crate) acquire: tracing::Span,
}

/// The shared state of one acquisition (several guards share it under opt-in
/// reentrancy).
pub(crate) struct Hold<B: LockBackend> {
    backend: Arc<B>,
    req: LeaseRequest,
    info: LeaseInfo<B::Key>,
    acquired_at: Instant,
    /// `sessionlock.hold`: the guard's own events (extension, release,
    /// revocation, loss) are logged inside it.
    span: tracing::Span,
    /// Serializes this acquisition's operations on its lease (fenced calls,
    /// store mutations, extension, release, the watchdog's revocation), in
    /// this process; across processes the backend's fence does. Held for a
    /// whole operation, also across its awaits: never lock it from inside
    /// one (see [`FENCED`]).
    ops: tokio::sync::Mutex<()>,
    /// Signalled each time `ops` is unlocked: what async callers wait for
    /// instead of queueing on `ops` (see [`Hold::ops_async`]).
    ops_freed: tokio::sync::Notify,
    /// The phase and the lease; taken briefly, never across an operation.
    state: Mutex<HoldState<B::Lease>>,
    /// The payload published most recently (after an extension, the
    /// extended one). Apart from `state`, so that reading it never waits
    /// for a fenced write, and works inside one.
    published: Mutex<Payload>,
    revoked: AtomicBool,
    notify: tokio::sync::Notify,
    me: Weak<Hold<B>>,
    /// The guards of this acquisition not yet released or dropped; the
    /// last one to go releases the lock.
    guards: std::sync::atomic::AtomicUsize,
}

thread_local! {
    /// The acquisitions (addresses of their [`Hold`]s) whose fenced `f` this
    /// thread is running, innermost last. A fenced call on one of them from
    /// inside its `f` runs at once under the fence the outer call holds:
    /// taking the hold's mutex again would wait for ourselves, and taking
    /// the state lock again on the same open file would release it when the
    /// inner call ends.
    static FENCED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Marks this thread as inside the fence of one acquisition, for as long as
/// it lives (also while unwinding from a panic in `f`).
struct InsideFence(usize);

impl InsideFence {
    fn enter(id: usize) -> InsideFence {
        // Only a thread being torn down has no thread-locals left; nothing
        // of it can call back into a fence then.
        let _ = FENCED.try_with(|v| v.borrow_mut().push(id));
        InsideFence(id)
    }

    /// Whether this thread is inside any acquisition's fence.
    fn any() -> bool {
        FENCED.try_with(|v| !v.borrow().is_empty()).unwrap_or(false)
    }

    fn contains(id: usize) -> bool {
        FENCED
            .try_with(|v| v.borrow().contains(&id))
            .unwrap_or(false)
    }
}

impl Drop for InsideFence {
    fn drop(&mut self) {
        let _ = FENCED.try_with(|v| {
            let mut v = v.borrow_mut();
            if let Some(at) = v.iter().rposition(|&id| id == self.0) {
                v.remove(at);
            }
        });
    }
}

struct ParkedLease<B: LockBackend> {
    backend: Arc<B>,
    lease: B::Lease,
}

impl<B: LockBackend> Parked for ParkedLease<B> {
    fn release(self: Box<Self>) {
        if let Err(e) = block_on(self.backend.release(&self.lease, None)) {
            let info = B::info(&self.lease);
            tracing::warn!(
                target: "sessionlock::hold",
                lock = %Path::new(info.key.locator()).display(),
                epoch = info.epoch,
                error = %e,
                "cannot release session lock; the next waiter will reclaim it"
            );
        }
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        Box::new(self.lease)
    }
}

/// This acquisition's `ops`, held: unlocking it wakes the async callers
/// waiting for it.
struct Ops<'a> {
    held: Option<tokio::sync::MutexGuard<'a, ()>>,
    freed: &'a tokio::sync::Notify,
}

impl Drop for Ops<'_> {
    fn drop(&mut self) {
        drop(self.held.take());
        self.freed.notify_waiters();
    }
}

/// The [`Holder`] a payload describes, as seen by its own process.
pub(crate) fn holder_of(payload: &Payload, lock_path: &Path, age: Duration) -> Holder {
    Holder {
        lock_path: lock_path.to_owned(),
        pid: payload.pid,
        hostname: payload.hostname.clone(),
        alive: true,
        age_ms: Some(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
        max_hold_ms: payload.max_hold_ms,
        epoch: payload.epoch,
        lane: payload.lane.clone(),
        run_id: payload.run_id.clone(),
        owner: payload.owner.clone(),
        reasons: Reasons::default(),
        holds: None,
        stopped: false,
    }
}

/// Whether this thread is running any acquisition's fenced `f` (one
/// thread-local read: what lets an acquire skip the costlier check).
pub(crate) fn inside_any_fence() -> bool {
    InsideFence::any()
}

impl<B: LockBackend> Hold<B> {
    /// What identifies this acquisition in [`FENCED`]: its address, which
    /// stays ours while any guard of it lives.
    fn id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Whether this thread is running a fenced `f` of this acquisition.
    pub(crate) fn fenced_here(&self) -> bool {
        InsideFence::contains(self.id())
    }

    /// The error for a call that cannot run inside this acquisition's own
    /// fence.
    pub(crate) fn inside_fence_error(&self, op: &'static str) -> Error {
        Error::Misuse {
            what: format!(
                "cannot {op} inside its own fence: {}",
                self.lock_path().display()
            ),
        }
    }

    /// Wraps a freshly published lease: records it in the slot and arms the
    /// watchdog. Its span is a child of the caller's span, not of the
    /// acquisition's (which ends now), and follows from the acquisition's.
    pub(crate) fn start(
        backend: Arc<B>,
        req: LeaseRequest,
        lease: B::Lease,
        turn: Turn,
        spans: &Spans,
    ) -> Arc<Self> {
        let info = B::info(&lease);
        let span = tracing::info_span!(
            target: "sessionlock::hold",
            parent: &spans.caller,
            "sessionlock.hold",
            session = %Path::new(info.key.session()).display(),
            lane = req.lane.as_deref(),
            run = req.run_id.as_deref(),
            epoch = info.epoch,
        );
        span.follows_from(&spans.acquire);
        let now = Instant::now();
        let deadline = now + req.max_hold;
        let slot = turn.slot().clone();
        let published = Mutex::new(info.payload.clone());
        let hold = Arc::new_cyclic(|me| Hold {
            backend,
            req,
            info,
            acquired_at: now,
            span,
            published,
            ops: tokio::sync::Mutex::new(()),
            ops_freed: tokio::sync::Notify::new(),
            state: Mutex::new(HoldState {
                phase: Phase::Held,
                lease: Some(Arc::new(lease)),
                turn: Some(turn),
                revocation: None,
            }),
            revoked: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
            me: me.clone(),
            guards: std::sync::atomic::AtomicUsize::new(1),
        });
        let any: Weak<dyn Any + Send + Sync> = Arc::downgrade(&hold) as Weak<dyn Any + Send + Sync>;
        slot.set_holder(
            holder_of(&hold.info.payload, hold.lock_path(), Duration::ZERO),
            any,
        );
        let rev: Weak<dyn Revocable> = Arc::downgrade(&hold) as Weak<dyn Revocable>;
        // Registered under the state lock: a revocation due at once waits
        // for it and then finds its own ticket (with the ticket stored after
        // the lock is released, it would find none and skip). The watchdog
        // takes the schedule's lock without the state's, so the order holds.
        let mut st = lock(&hold.state);
        st.revocation = watchdog::register(deadline, rev);
        drop(st);
        hold
    }

    /// Where the lock lives (a lock file's path), for messages.
    fn lock_path(&self) -> &Path {
        Path::new(self.info.key.locator())
    }

    /// Takes `ops`, blocking the thread until it is free.
    fn ops_blocking(&self) -> Ops<'_> {
        Ops {
            held: Some(block_on(self.ops.lock())),
            freed: &self.ops_freed,
        }
    }

    /// Takes `ops` without blocking the thread. Never queues on the mutex:
    /// a queued waiter is granted the mutex when it is unlocked, and keeps
    /// it until its task is polled again; a blocking caller in the same
    /// task (or on the same current-thread runtime) would then wait for
    /// ever, and the watchdog's revocation for as long as the task is busy.
    /// It tries, and waits for the next unlock if the mutex is taken.
    async fn ops_async(&self) -> Ops<'_> {
        loop {
            // Registered before the try: an unlock in between wakes it.
            let freed = self.ops_freed.notified();
            if let Ok(held) = self.ops.try_lock() {
                return Ops {
                    held: Some(held),
                    freed: &self.ops_freed,
                };
            }
            freed.await;
        }
    }

    /// The lease, while this acquisition holds it.
    fn lease(&self) -> Result<Arc<B::Lease>> {
        let st = lock(&self.state);
        match (&st.phase, &st.lease) {
            (Phase::Held, Some(lease)) => Ok(lease.clone()),
            (phase, _) => Err(self.gone_error(phase)),
        }
    }

    /// [`Hold::finish`] if that needs no wait: no operation of this
    /// acquisition in flight, no in-process waiter to hand the lock to (the
    /// hand-off checks the fence first), and the backend's release refusing
    /// every wait ([`without_waiting`]). `None`, with nothing changed,
    /// where it would wait.
    fn try_finish(&self) -> Option<Result<()>> {
        let held = self.ops.try_lock().ok()?;
        let _ops = Ops {
            held: Some(held),
            freed: &self.ops_freed,
        };
        let lease = {
            let st = lock(&self.state);
            match (&st.phase, &st.lease, &st.turn) {
                (Phase::Released, ..) => return Some(Ok(())),
                (Phase::Held, Some(lease), Some(turn)) if !turn.slot().has_waiters() => {
                    lease.clone()
                }
                // Revoked (`finish` reports it), or waiters to hand off to.
                _ => return None,
            }
        };
        let ended = observe::Stamp::now();
        let (released, refused) = without_waiting(|| block_on(self.backend.release(&lease, None)));
        if refused {
            return None;
        }
        let _in = self.span.enter();
        // Released (or found lost): end the hold as `finish` does. The
        // watchdog's revocation needs `ops`, which we hold.
        let mut st = lock(&self.state);
        st.phase = Phase::Released;
        st.lease = None;
        let turn = st.turn.take();
        if let Some(t) = st.revocation.take() {
            watchdog::cancel(t);
        }
        drop(st);
        if let Some(turn) = turn {
            turn.end(None);
        }
        Some(self.released(released, ended))
    }

    /// Ends the hold after a release that ended at `ended` (the lock may be
    /// someone else's right after): logs it, or the loss it found.
    fn released(&self, released: Result<bool>, ended: observe::Stamp) -> Result<()> {
        match released {
            Ok(true) => {
                self.log_released(false, ended);
                Ok(())
            }
            Ok(false) => Err(self.lost_at_release(ended)),
            Err(e) => {
                observe::release_failed(&self.ctx(), self.info.epoch, self.held(ended), &e, ended);
                Err(e)
            }
        }
    }

    /// How long the lock was held until `ended`.
    fn held(&self, ended: observe::Stamp) -> std::time::Duration {
        ended.at.saturating_duration_since(self.acquired_at)
    }

    /// This acquisition as metrics and the event log report it.
    fn ctx(&self) -> observe::Ctx<'_> {
        observe::Ctx {
            backend: B::NAME,
            session: self.info.key.session(),
            lane: self.info.payload.lane.as_deref(),
            run: self.info.payload.run_id.as_deref(),
        }
    }

    /// Counts a fenced write of this acquisition that `result` says was
    /// refused.
    fn count_refused<T>(&self, result: &Result<T>) {
        let error = match result {
            Err(Error::Revoked { .. }) => "revoked",
            Err(Error::Fenced { .. }) => "fenced",
            _ => return,
        };
        observe::refused(&self.ctx(), self.info.epoch, error);
    }

    fn log_released(&self, handed_off: bool, ended: observe::Stamp) {
        observe::released(
            &self.ctx(),
            self.info.epoch,
            self.held(ended),
            handed_off,
            ended,
        );
        tracing::debug!(
            target: "sessionlock::hold",
            held_ms = u64::try_from(self.acquired_at.elapsed().as_millis()).unwrap_or(u64::MAX),
            handed_off,
            "released session lock"
        );
    }

    /// [`Hold::finish`] where nobody asks for the outcome (a dropped guard):
    /// a failure is logged. A lost lock was logged when it was detected;
    /// there is nothing left to release.
    fn finish_logged(&self) {
        if let Err(e @ (Error::Io { .. } | Error::InvalidPath { .. })) = self.finish() {
            let _in = self.span.enter();
            tracing::warn!(
                target: "sessionlock::hold",
                lock = %self.lock_path().display(),
                epoch = self.info.epoch,
                error = %e,
                "cannot release session lock; the next waiter will reclaim it"
            );
        }
    }

    /// What releasing a guard that is not its acquisition's last reports:
    /// the loss, if the acquisition lost its lock.
    fn still_ours(&self) -> Result<()> {
        match lock(&self.state).phase {
            Phase::Revoked {
                current_epoch,
                cause,
            } => Err(self.revoked_error(current_epoch, cause)),
            Phase::Held | Phase::Released => Ok(()),
        }
    }

    /// Releases, handing the lock to the next in-process waiter if any.
    /// Reports a lock that was no longer ours (revoked, removed or replaced)
    /// as `Revoked`, after releasing whatever is left.
    fn finish(&self) -> Result<()> {
        let _in = self.span.enter();
        let _ops = self.ops_blocking();
        let mut st = lock(&self.state);
        match st.phase {
            Phase::Held => {}
            Phase::Released => return Ok(()),
            Phase::Revoked {
                current_epoch,
                cause,
            } => return Err(self.revoked_error(current_epoch, cause)),
        }
        st.phase = Phase::Released;
        let lease = st.lease.take();
        let turn = st.turn.take();
        if let Some(t) = st.revocation.take() {
            watchdog::cancel(t);
        }
        drop(st);
        let (Some(lease), Some(turn)) = (lease, turn) else {
            return Ok(());
        };
        // Hand the lock to the next in-process waiter only while it is still
        // ours; the check costs what a fenced write does. No operation is in
        // flight (we hold `ops`), so the lease is ours alone.
        let lease = match Arc::try_unwrap(lease) {
            Ok(lease) => {
                if turn.slot().has_waiters() && block_on(self.backend.fenced(&lease, || ())).is_ok()
                {
                    // Logged before the waiter wakes, so that this hold
                    // ends before the next one begins.
                    self.log_released(true, observe::Stamp::now());
                    turn.end(Some(Box::new(ParkedLease {
                        backend: self.backend.clone(),
                        lease,
                    })));
                    return Ok(());
                }
                Arc::new(lease)
            }
            Err(shared) => shared,
        };
        let ended = observe::Stamp::now();
        let released = block_on(self.backend.release(&lease, None));
        turn.end(None);
        self.released(released, ended)
    }

    /// The error for a lease that was no longer published when we released
    /// it: removed, or replaced by someone else's lock.
    fn lost_at_release(&self, ended: observe::Stamp) -> Error {
        let cause = match block_on(self.backend.inspect(&self.info.key)) {
            Ok(Some(_)) => LossCause::Replaced,
            _ => LossCause::Removed,
        };
        observe::revoked(
            &self.ctx(),
            self.info.epoch,
            self.held(ended),
            cause.as_str(),
            ended,
        );
        tracing::warn!(
            target: "sessionlock::fence",
            lock = %self.lock_path().display(),
            epoch = self.info.epoch,
            cause = cause.as_str(),
            "session lock was no longer ours at release"
        );
        self.revoked_error(self.info.epoch, cause)
    }

    /// Revokes the lock; the caller holds `ops` (no operation of this
    /// acquisition is in flight). With `ticket`, only if that is still the
    /// scheduled revocation (not replaced by an extension in the meantime).
    fn revoke(&self, ticket: Option<watchdog::Ticket>, cause: LossCause) {
        let _in = self.span.enter();
        let mut st = lock(&self.state);
        if !matches!(st.phase, Phase::Held) || ticket.is_some_and(|t| st.revocation != Some(t)) {
            return;
        }
        st.revocation = None;
        let lease = st.lease.take();
        let turn = st.turn.take();
        let ended = observe::Stamp::now();
        let current_epoch = match lease.as_ref().map(|l| block_on(self.backend.revoke(l))) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                // The lock stays published; other processes reclaim it as
                // hold-exceeded, which fences us just the same.
                tracing::error!(
                    target: "sessionlock::hold",
                    lock = %self.lock_path().display(),
                    epoch = self.info.epoch,
                    cause = cause.as_str(),
                    error = %e,
                    "cannot revoke session lock; other processes reclaim it once its lease ends"
                );
                self.info.epoch.saturating_add(1)
            }
            None => self.info.epoch,
        };
        st.phase = Phase::Revoked {
            current_epoch,
            cause,
        };
        drop(st);
        self.revoked.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        let held = self.held(ended);
        observe::revoked(&self.ctx(), self.info.epoch, held, cause.as_str(), ended);
        let held_ms = u64::try_from(held.as_millis()).unwrap_or(u64::MAX);
        if cause == LossCause::Overdue {
            tracing::warn!(
                target: "sessionlock::watchdog",
                lock = %self.lock_path().display(),
                pid = self.info.payload.pid,
                lane = self.info.payload.lane.as_deref(),
                run = self.info.payload.run_id.as_deref(),
                epoch = self.info.epoch,
                held_ms,
                max_hold_ms = u64::try_from(self.req.max_hold.as_millis()).unwrap_or(u64::MAX),
                "revoked session lock held past its max hold"
            );
        } else {
            tracing::warn!(
                target: "sessionlock::fence",
                lock = %self.lock_path().display(),
                pid = self.info.payload.pid,
                lane = self.info.payload.lane.as_deref(),
                run = self.info.payload.run_id.as_deref(),
                epoch = self.info.epoch,
                held_ms,
                cause = cause.as_str(),
                "session lock lost to another program; its writes are refused from now on"
            );
        }
        drop(lease);
        if let Some(t) = turn {
            t.end(None);
        }
    }

    fn revoked_error(&self, current_epoch: u64, cause: LossCause) -> Error {
        Error::Revoked {
            path: self.lock_path().to_owned(),
            epoch: self.info.epoch,
            current_epoch,
            cause,
        }
    }

    /// The error for a guard whose lease is gone (revoked or released).
    fn gone_error(&self, phase: &Phase) -> Error {
        match phase {
            Phase::Revoked {
                current_epoch,
                cause,
            } => self.revoked_error(*current_epoch, *cause),
            _ => self.revoked_error(self.info.epoch, LossCause::Removed),
        }
    }
}

impl<B: LockBackend> Revocable for Hold<B> {
    fn revoke_overdue(&self, ticket: watchdog::Ticket) {
        // Waits for an operation in flight (a fenced write) to end, as the
        // revocation must not land in its middle.
        let _ops = self.ops_blocking();
        self.revoke(Some(ticket), LossCause::Overdue);
    }
}

impl<B: LockBackend> Drop for Hold<B> {
    fn drop(&mut self) {
        // Its guards finished it already, unless none was ever made.
        self.finish_logged();
    }
}

impl Guard<FileBackend> {
    /// The canonical session file.
    pub fn session_path(&self) -> &Path {
        &self.hold.info.key.session
    }

    /// [`Guard::release`] if it can be done without waiting for anything:
    /// no other operation of this acquisition in flight, no waiter of this
    /// process to hand the lock to, and the session's state lock free at
    /// once. Otherwise nothing is released yet, and the returned
    /// [`Releasing`] finishes the release (waiting as [`Guard::release`]
    /// does) where waiting is acceptable: what a caller on an event loop
    /// (the Node.js binding) uses to release on its own thread when that
    /// costs a few system calls, and elsewhere when it may cost a wait.
    ///
    /// # Errors
    /// `Ok(Err(_))` as [`Guard::release`]; `Err(Releasing)` when it would
    /// have waited.
    pub fn try_release(mut self) -> std::result::Result<Result<()>, Releasing> {
        if !self.leave() {
            // Other guards share the acquisition: the last one releases.
            return Ok(self.hold.still_ours());
        }
        match self.hold.try_finish() {
            Some(r) => Ok(r),
            None => Err(Releasing {
                hold: self.hold.clone(),
            }),
        }
    }
}

/// A file-backend release [`Guard::try_release`] did not finish without
/// waiting: [`Releasing::finish`] it (or drop it, which releases as a
/// dropped guard does).
#[must_use = "dropping it releases the lock, reporting failure only in the log"]
pub struct Releasing {
    hold: Arc<Hold<FileBackend>>,
}

impl Drop for Releasing {
    fn drop(&mut self) {
        // After `finish`, a no-op.
        self.hold.finish_logged();
    }
}

impl std::fmt::Debug for Releasing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Releasing")
            .field("lock", &self.hold.lock_path())
            .finish_non_exhaustive()
    }
}

impl Releasing {
    /// Finishes the release, waiting as [`Guard::release`] does.
    ///
    /// # Errors
    /// As [`Guard::release`].
    pub fn finish(self) -> Result<()> {
        self.hold.finish()
    }
}

impl<B: LockBackend> Guard<B> {
    /// This acquisition's fencing epoch.
    pub fn epoch(&self) -> u64 {
        self.hold.info.epoch
    }

    /// The session's key.
    pub fn key(&self) -> &B::Key {
        &self.hold.info.key
    }

    /// Where the lock lives: the lock file for files, a backend's locator
    /// otherwise.
    pub fn lock_path(&self) -> &Path {
        self.hold.lock_path()
    }

    /// The payload this guard published most recently (after
    /// [`Guard::extend`], the extended one). Never waits for a fenced write,
    /// and may be called inside one.
    pub fn payload(&self) -> Payload {
        lock(&self.hold.published).clone()
    }

    /// This guard's holder description (our pid, lane, epoch, age).
    pub fn holder(&self) -> Holder {
        holder_of(
            &self.hold.info.payload,
            self.lock_path(),
            self.hold.acquired_at.elapsed(),
        )
    }

    /// Whether this guard lost its lock: the watchdog revoked it, or a
    /// fenced check ([`Guard::check`], [`Guard::with_fence`]) found its lock
    /// file removed or replaced by someone else.
    pub fn is_revoked(&self) -> bool {
        self.hold.revoked.load(Ordering::SeqCst)
    }

    /// Resolves once this guard is revoked (see [`Guard::is_revoked`];
    /// never, if it is released first).
    ///
    /// # Cancel safety
    /// Cancel safe: it only observes.
    pub async fn revoked(&self) {
        loop {
            let notified = self.hold.notify.notified();
            if self.is_revoked() {
                return;
            }
            notified.await;
        }
    }

    /// Checks that this guard still owns the session: not revoked, no newer
    /// epoch exists, and its lock file is still the one it published.
    ///
    /// # Errors
    /// `Revoked` after watchdog revocation or when the lock file was removed
    /// or replaced by someone else (the guard is then revoked); `Fenced` when
    /// another holder reclaimed the lock; `Io` when the epoch cannot be read.
    /// Inside this acquisition's own [`Guard::with_fence`] it passes at
    /// once: the fence is held.
    pub fn check(&self) -> Result<()> {
        // Not a write: a refusal here is not counted as a refused write.
        self.fenced(|| ())
    }

    /// Resolves as soon as this guard no longer owns the session, with the
    /// error a fenced write would now get: revoked by the watchdog, fenced by
    /// a newer epoch, or its lock file removed or replaced by someone else
    /// (the guard is then revoked). Woken by the backend's change
    /// notifications on the lock (inotify for files) and by revocation, with
    /// the backend's safety-net re-check (1 s for files; polling at 5–100 ms
    /// where notifications are unreliable); what a supervisor
    /// (`sessionlock exec`) waits on to stop work that must not go on
    /// without the lock.
    ///
    /// An `Io` error while checking resolves it too: ownership can then not
    /// be proven. A state file that another program keeps locked does not:
    /// the check is retried at the next wake-up. Each check runs inline and
    /// can block the calling thread for as long as the backend's state-lock
    /// bound while that lasts.
    ///
    /// # Cancel safety
    /// Cancel safe: it only observes.
    ///
    /// # Panics
    /// Outside a tokio runtime with I/O enabled, like every tokio I/O type.
    pub async fn lost(&self) -> Error {
        // Watch first, then check: no change between the two is missed. The
        // watch queues events from its creation on, so one serves the loop.
        let mut watch = match self.hold.backend.watch(&self.hold.info.key).await {
            Ok(w) => w,
            Err(e) => return e,
        };
        loop {
            match self.check_watching().await {
                Ok(()) => {}
                // Another program keeps the state file locked: ownership
                // is unknown, not lost. Look again at the next change.
                Err(Error::Timeout { .. }) => {}
                Err(e) => return e,
            }
            tokio::select! {
                () = self.revoked() => {}
                r = self.hold.backend.wait(&mut watch, None, None) => {
                    if let Err(e) = r {
                        return e;
                    }
                }
            }
        }
    }

    /// Runs `f` (a transcript mutation) only while this guard's epoch is the
    /// session's current epoch. Reclaims and revocations wait until `f`
    /// returns, so no write of a stale epoch can land after a newer epoch
    /// exists. `f` should be short: for as long as it runs, it holds up
    /// other threads' fenced calls, extensions and release of this lock, the
    /// watchdog's revocation, and other processes' reclaims.
    ///
    /// The transcript's own mutations ([`Transcript::append`] and the
    /// others) are fenced already: call them directly, not inside
    /// `with_fence`. This is for mutations of your own.
    ///
    /// # Re-entrance
    /// Inside `f`, on the same thread, the acquisition's fenced calls run at
    /// once under the fence `f` already holds (its epoch was checked and the
    /// state lock is held until `f` returns): [`Guard::with_fence`] and
    /// [`Guard::check`] of this guard, or of any guard sharing its
    /// acquisition through reentrancy, so `transcript.append(&guard, ...)`
    /// inside `f` lands once. [`Guard::payload`], [`Guard::holder`],
    /// [`Guard::is_revoked`] and [`Guard::epoch`] never wait for the fence.
    /// What cannot run under a held fence fails at once with
    /// [`Error::Misuse`]: [`Guard::extend`], which must republish under
    /// the exclusive state lock, and acquiring the same session again
    /// without reentrancy (its turn would never come). Other threads wait
    /// for `f` as before.
    ///
    /// A panic in `f` propagates; the fence is dropped on the way (state
    /// lock and mutex released), and the guard stays usable.
    ///
    /// [`Transcript::append`]: crate::backend::file::transcript::Transcript::append
    ///
    /// # Errors
    /// As [`Guard::check`]; `f` does not run on error.
    ///
    /// # Example
    ///
    /// A file of your own beside the transcript, written only while the
    /// guard owns the session; once it does not, `f` is not run:
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessionlock::{Error, LockOptions, SessionLock};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let session = dir.path().join("abc.jsonl");
    /// let summary = dir.path().join("abc.summary");
    /// let opts = LockOptions::default().max_hold(Duration::from_millis(500));
    /// let guard = SessionLock::new().acquire_with(&session, &opts)?;
    ///
    /// // `with_fence` gives `f`'s own result back inside its `Ok`.
    /// guard.with_fence(|| std::fs::write(&summary, "3 turns"))??;
    /// assert_eq!(std::fs::read_to_string(&summary)?, "3 turns");
    ///
    /// // Wait for the lease to run out: the watchdog revokes the lock.
    /// tokio::runtime::Builder::new_current_thread()
    ///     .enable_all()
    ///     .build()?
    ///     .block_on(guard.revoked());
    /// let refused = guard.with_fence(|| std::fs::write(&summary, "4 turns"));
    /// assert!(matches!(refused, Err(Error::Revoked { .. })));
    /// assert_eq!(std::fs::read_to_string(&summary)?, "3 turns");
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_fence<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let result = self.fenced(f);
        self.hold.count_refused(&result);
        result
    }

    /// [`Guard::with_fence`] without counting a refusal (a check is no
    /// write).
    fn fenced<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let id = self.hold.id();
        if InsideFence::contains(id) {
            return Ok(f());
        }
        let _ops = self.hold.ops_blocking();
        let result = self.hold.lease().and_then(|lease| {
            block_on(self.hold.backend.fenced(&lease, || {
                let _inside = InsideFence::enter(id);
                f()
            }))
        });
        if let Err(Error::Revoked { cause, .. }) = &result {
            // Someone else removed or replaced our lock: revoke, so that
            // every later check and write fails the same way.
            self.hold.revoke(None, *cause);
        }
        result
    }

    /// [`Guard::check`] for a watcher ([`Guard::lost`]), which runs beside
    /// the holder's own work, often in the same task (a `select!`). The
    /// backend's check can suspend (a database round trip); holding `ops`
    /// across it, as [`Guard::check_async`] does, would make a fenced call
    /// of that work, which blocks its thread until `ops` is free, wait for
    /// ever, and the watchdog with it. So the check runs on a snapshot of
    /// the lease, without `ops`, and a loss it reports is taken as such only
    /// if, under `ops` again, the lease is still the one checked: not
    /// released meanwhile, nor republished by an extension (which a check
    /// racing it could mistake for a replacement).
    async fn check_watching(&self) -> Result<()> {
        let (lease, published) = {
            let _ops = self.hold.ops_async().await;
            (self.hold.lease()?, lock(&self.hold.published).clone())
        };
        let result = self.hold.backend.check(&lease).await;
        drop(lease);
        if let Err(Error::Revoked { cause, .. }) = &result {
            let _ops = self.hold.ops_async().await;
            self.hold.lease()?;
            if *lock(&self.hold.published) != published {
                // Extended meanwhile: look again at the next change.
                return Ok(());
            }
            self.hold.revoke(None, *cause);
        }
        result
    }

    /// [`Guard::check`] for async callers: waits for this acquisition's
    /// operation in flight without blocking the thread.
    pub(crate) async fn check_async(&self) -> Result<()> {
        let _ops = self.hold.ops_async().await;
        let lease = self.hold.lease()?;
        let result = self.hold.backend.check(&lease).await;
        if let Err(Error::Revoked { cause, .. }) = &result {
            self.hold.revoke(None, *cause);
        }
        result
    }

    /// Counts a fenced append of `entries` entries (`bytes` bytes) that
    /// landed, in metrics and the event log.
    pub(crate) fn note_appended(&self, entries: usize, bytes: u64) {
        observe::appended(
            &self.hold.ctx(),
            self.hold.info.epoch,
            entries as u64,
            bytes,
        );
    }

    /// Runs a store mutation with this guard's lease ([`Held`]): only while
    /// the guard holds it, one operation of this acquisition at a time. The
    /// store runs the epoch check and the mutation as one unit; inside this
    /// acquisition's own [`Guard::with_fence`] it is told the fence is held
    /// already. A mutation refused because the lock was removed or replaced
    /// revokes the guard, as [`Guard::with_fence`] does.
    pub(crate) async fn with_lease<T, F>(&self, op: impl FnOnce(Held<B::Lease>) -> F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        if InsideFence::contains(self.hold.id()) {
            let lease = self.hold.lease()?;
            return op(Held::new(lease, true)).await;
        }
        let _ops = self.hold.ops_async().await;
        let result = match self.hold.lease() {
            Ok(lease) => op(Held::new(lease, false)).await,
            Err(e) => Err(e),
        };
        if let Err(Error::Revoked { cause, .. }) = &result {
            self.hold.revoke(None, *cause);
        }
        self.hold.count_refused(&result);
        result
    }

    /// Extends the lease by `max_hold` from now: republishes the payload with
    /// a new `createdAt` and moves the watchdog deadline. Extension is always
    /// explicit; nothing extends a lease in the background.
    ///
    /// # Errors
    /// `Revoked` or `Fenced` when the lock was lost; `Io`; `Misuse`
    /// when called inside this acquisition's own [`Guard::with_fence`]
    /// (republishing needs the state lock exclusively, which the fence holds
    /// shared; extend before or after the fenced call).
    ///
    /// # Example
    ///
    /// Long work in steps, each shorter than the lease, extending after each:
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessionlock::{LockOptions, SessionLock};
    ///
    /// # fn main() -> Result<(), sessionlock::Error> {
    /// let dir = tempfile::tempdir().expect("tempdir");
    /// let session = dir.path().join("abc.jsonl");
    /// let opts = LockOptions::default().max_hold(Duration::from_secs(1));
    /// let guard = SessionLock::new().acquire_with(&session, &opts)?;
    /// for _step in 0..4 {
    ///     std::thread::sleep(Duration::from_millis(300)); // one step of the work
    ///     guard.extend()?; // 1 s more, from now
    /// }
    /// // 1.2 s of work under a 1 s lease, and still held.
    /// assert!(!guard.is_revoked());
    /// guard.check()?;
    /// guard.release()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn extend(&self) -> Result<()> {
        self.extend_for(self.hold.req.max_hold)
    }

    /// [`Guard::extend`] by `hold` instead of the acquisition's `max_hold`
    /// (capped, as at acquisition, at [`MAX_HOLD_CAP`](crate::config::MAX_HOLD_CAP)):
    /// republishes the payload with `maxHoldMs` = `hold` and a new
    /// `createdAt`, and moves the watchdog deadline to `hold` from now. A
    /// later [`Guard::extend`] goes back to the acquisition's `max_hold`.
    ///
    /// # Errors
    /// As [`Guard::extend`]; `Misuse` for a zero `hold`.
    pub fn extend_for(&self, hold: Duration) -> Result<()> {
        // As at acquisition: no lease past the longest timer (and no
        // deadline past what an `Instant` holds).
        let hold = hold.min(crate::config::MAX_HOLD_CAP);
        if hold.is_zero() {
            return Err(Error::Misuse {
                what: "extend a session lock by zero milliseconds".into(),
            });
        }
        if self.hold.fenced_here() {
            return Err(self.hold.inside_fence_error("extend the session lock"));
        }
        let _ops = self.hold.ops_blocking();
        let lease = self.hold.lease()?;
        let mut req = self.hold.req.clone();
        req.max_hold = hold;
        if let Err(e) = block_on(self.hold.backend.republish(&lease, &req, false, None)) {
            if let Error::Revoked { cause, .. } = &e {
                self.hold.revoke(None, *cause);
            }
            return Err(e);
        }
        *lock(&self.hold.published) = B::info(&lease).payload;
        let mut st = lock(&self.hold.state);
        if !matches!(st.phase, Phase::Held) {
            // Only this acquisition's own operations change the phase, and
            // they wait for `ops`: not reached.
            return Err(self.hold.gone_error(&st.phase));
        }
        if let Some(old) = st.revocation.take() {
            watchdog::cancel(old);
        }
        let rev: Weak<dyn Revocable> = self.hold.me.clone() as Weak<dyn Revocable>;
        st.revocation = watchdog::register(Instant::now() + hold, rev);
        drop(st);
        let _in = self.hold.span.enter();
        tracing::debug!(
            target: "sessionlock::hold",
            max_hold_ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
            "extended session lease"
        );
        Ok(())
    }

    /// Releases the lock now, reporting failure. Under reentrancy only the
    /// last guard of an acquisition releases; an earlier one's release
    /// returns `Revoked` if the acquisition is already known to have lost
    /// its lock, `Ok` otherwise, without looking at the lock itself (call
    /// [`Guard::check`] first for that). Dropping the guard releases too,
    /// but can only log a failure.
    ///
    /// # Errors
    /// `Revoked` when the lock was no longer this guard's: revoked by the
    /// watchdog, or removed or replaced by someone else (whatever was left
    /// of it is released); `Io` when the lock file cannot be removed; the
    /// lock then stays reclaimable (remove-if-unchanged) by the next waiter.
    /// The guard is consumed whatever the outcome; a `Revoked` says that
    /// fenced writes tried after the loss were refused (see
    /// [Handling errors](crate::Error#handling-errors)).
    ///
    /// # Example
    ///
    /// ```
    /// use sessionlock::SessionLock;
    ///
    /// # fn main() -> Result<(), sessionlock::Error> {
    /// let dir = tempfile::tempdir().expect("tempdir");
    /// let session = dir.path().join("abc.jsonl");
    /// let guard = SessionLock::new().acquire(&session)?;
    /// let lock_file = guard.lock_path().to_owned();
    /// assert_eq!(lock_file, dir.path().canonicalize().expect("dir").join("abc.jsonl.lock"));
    /// assert!(lock_file.exists());
    ///
    /// guard.release()?;
    /// assert!(!lock_file.exists());
    /// # Ok(())
    /// # }
    /// ```
    pub fn release(mut self) -> Result<()> {
        if self.leave() {
            self.hold.finish()
        } else {
            self.hold.still_ours()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::acquire::SessionLock;

    // Something else can hold an acquisition's `Arc` for a moment (the
    // watchdog, while it revokes): a release in that moment still releases
    // at once, and still reports a loss, rather than leaving both to the
    // other reference's drop.
    #[test]
    fn release_is_the_last_guards_whoever_else_holds_the_acquisition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("s.jsonl");
        let locks = SessionLock::new();

        let g = locks.acquire(&session).expect("acquire");
        let lock_file = g.lock_path().to_owned();
        let transient = g.hold.clone();
        g.release().expect("release");
        assert!(
            !lock_file.exists(),
            "the release waited for the other reference"
        );
        drop(transient);

        let g = locks.acquire(&session).expect("acquire again");
        let transient = g.hold.clone();
        transient.revoke(None, LossCause::Overdue);
        assert!(matches!(
            g.release(),
            Err(Error::Revoked {
                cause: LossCause::Overdue,
                ..
            })
        ));
        drop(transient);

        let g = locks
            .acquire(&session)
            .expect("acquire after the revocation");
        let transient = g.hold.clone();
        let r = g.try_release().expect("nothing to wait for");
        r.expect("try_release");
        assert!(!lock_file.exists());
        drop(transient);
    }
}
