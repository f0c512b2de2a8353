//! The attempt controller
//! ([design §8](crate::design#8-the-attempt-controller)): one agent turn's lock
//! lifecycle.
//!
//! ```text
//! begin ─► Held ─release_for_prompt─► Released ─reacquire_after_prompt─► Held ─► ...
//!            │                          │
//!            └──────acquire_for_cleanup─┴─► Cleanup ─dispose─► Disposed
//! any failed fence check, or a reacquire that times out or meets a stale
//! report ─► TakenOver (absorbing; cleanup then gets a no-op lock)
//! ```
//!
//! The lock is held only while the attempt must: it is released for every
//! model call ([`Attempt::release_for_prompt`], or [`Attempt::around_prompt`]
//! which does the release and the reacquire around a future), and on every
//! abort, error, panic or cancellation. While it is released, other lanes may
//! write; the fence taken at release tells, at the next acquisition, whether
//! what they wrote is acceptable (benign appends, handed back as a
//! [`Resync`]) or a takeover, which is sticky. While it is held, the file is
//! checked again before every write and at cleanup and dispose, so a program
//! that ignores the lock cannot change it unnoticed either.
//!
//! **One attempt per session at a time in this process.** By default an
//! attempt owns its session from [`Attempt::begin`] to
//! [`Attempt::dispose`] (or an abort): a second attempt of this process on
//! the same session file waits in a FIFO queue, within its acquire budget,
//! abortable, and visible in the run registry as queued. It then starts
//! from a transcript that holds the first attempt's replies, so two lanes of
//! one gateway never lose a reply to each other. Across processes the fence
//! decides. [`AttemptOptions::overlap`] opts out: attempts then overlap,
//! only their prompt windows are serialized, and whatever one writes is a
//! foreign change to the other.
//!
//! Every wait has a budget: the owner queue its own
//! ([`AttemptOptions::owner_timeout`]: it waits for another attempt's whole
//! turn), the prompt turn, the lock and an acquisition another call of the
//! same attempt has in flight the lock options' acquire timeout. A wait for
//! another attempt of this process that runs out fails with
//! [`Error::Busy`] naming it. No method holds the state mutex while it
//! awaits, while a write closure runs or while the store checks or
//! snapshots the transcript, so [`Attempt::abort`] waits for none of them,
//! and calls made from inside a write closure or a classifier either work
//! or fail at once with [`Error::Misuse`]. An abort is sticky: after it,
//! only the attempt's cleanup and dispose go on.
//!
//! # Store calls
//!
//! The async methods await every call of the backend's
//! store ([`TranscriptStore::check`], [`TranscriptStore::snapshot`] and the
//! mutations) on the transcript lent out of the attempt's state: never with
//! the state mutex held, never by parking the thread. So a store whose
//! futures suspend (a database client, whose connection task runs on the
//! same runtime) works on any tokio runtime, a current-thread one included.
//! The methods that must not wait, [`Attempt::abort`], [`Attempt::dispose`]
//! (and dropping the last handle) and [`Attempt::release_for_idle_wait`],
//! and the releases an abort or dispose leaves to the call in flight, poll
//! the store's future once instead. The file store's futures are ready at
//! the first poll, so for it they do what the async methods do. For a store
//! that suspends they take a fallback that adopts nothing unproven: a
//! release arms the held view unchecked (the next acquisition checks
//! everything since it, and reports a change made under the held lock as
//! `Changed` rather than `ChangedWhileHeld`); a release with no view (after
//! a write that panicked or was dropped) arms an unusable fence, so the next
//! acquisition reports a takeover; dispose skips its last check. They
//! cannot deadlock: they never park the thread nor wait for a task.

pub mod blocking;
pub mod runs;
pub mod turns;

use std::cell::Cell;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Notify;

use crate::attempt::runs::{AbortHandle, AbortKind, RunHandle, RunInfo, RunRegistry};
use crate::attempt::turns::{PromptTurn, PromptTurns, TurnHolder};
use crate::backend::file::FileBackend;
use crate::backend::{LockBackend, SessionId, StoreBackend, TranscriptStore};
use crate::error::{Error, Holder, Result, TakeoverPhase, TakeoverReason};
use crate::lock::acquire::{LockOptions, SessionLock};
use crate::lock::guard::Guard;
use crate::observe;
use crate::store::classify::{AcceptNothing, ChangeClassifier};
use crate::store::{Appended, Change, Durability, RawEntries, Read};
use crate::sync::lock;

/// Where an attempt is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Holding the session lock.
    Held,
    /// Released (prompt window, idle wait, or after an abort); fence armed.
    Released,
    /// In cleanup, holding the lock (or a no-op lock after a takeover).
    Cleanup,
    /// Someone else changed the transcript: the attempt writes nothing more.
    TakenOver,
    /// Done; holds nothing and never reacquires.
    Disposed,
}

/// Foreign entries an attempt accepted: appended by someone else while it
/// had released its lock (or, rarely, while it held it), and judged benign
/// by its classifier. A gateway merges them into its in-memory session, as
/// it would have read them had it loaded the transcript now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resync {
    /// The accepted entries, in file order.
    pub entries: Vec<Value>,
    /// The bytes of the transcript they occupy.
    pub range: Range<u64>,
}

impl Resync {
    /// Whether nothing was accepted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Called with every non-empty [`Resync`] an attempt accepts, whichever
/// method found it. It runs outside the attempt's state lock, so it may call
/// the attempt's non-blocking methods (a dispose or abort from it stops the
/// write whose check found the entries); it should be quick.
pub type ResyncHook = Arc<dyn Fn(&Resync) + Send + Sync>;

/// Registers an attempt in a [`RunRegistry`]
/// ([design §9.2](crate::design#92-active-run-registry-and-stuck-recovery)): as
/// queued while it waits for its turn to own the session, then as running until
/// it is disposed. Stuck recovery can abort it in either phase.
#[derive(Clone, Debug)]
pub struct RunRegistration {
    /// The registry.
    pub registry: RunRegistry,
    /// The gateway's session key.
    pub session_key: String,
    /// The run id (also written into the lock payload, unless the lock
    /// options name one).
    pub run_id: String,
}

/// Options of an attempt.
#[derive(Clone)]
#[non_exhaustive]
pub struct AttemptOptions {
    /// Lock options for every acquisition of the attempt; their acquire
    /// timeout is the budget of every wait of the attempt.
    pub lock: LockOptions,
    /// Decides which foreign appends are benign.
    pub classifier: Arc<dyn ChangeClassifier>,
    /// `false` (the default): this attempt owns its session in this process
    /// from begin to dispose; other attempts of this process on the session
    /// wait their turn. `true`: attempts of this process may overlap; only
    /// their prompt windows are serialized, and each one's writes are a
    /// foreign change to the others (usually a takeover).
    pub overlap: bool,
    /// The budget of `begin`'s wait for the session while another attempt
    /// of this process owns it (`None`: forever). That is a wait for the
    /// other attempt's whole turn, model calls included, so it has a budget
    /// of its own; the default is the lock's default lease (5 min).
    pub owner_timeout: Option<Duration>,
    /// Told about every accepted foreign change.
    pub on_resync: Option<ResyncHook>,
    /// Where the attempt registers itself, if anywhere.
    pub run: Option<RunRegistration>,
}

impl std::fmt::Debug for AttemptOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptOptions")
            .field("lock", &self.lock)
            .field("overlap", &self.overlap)
            .field("owner_timeout", &self.owner_timeout)
            .field("on_resync", &self.on_resync.is_some())
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

impl Default for AttemptOptions {
    fn default() -> Self {
        AttemptOptions {
            lock: LockOptions::default(),
            classifier: Arc::new(AcceptNothing),
            overlap: false,
            owner_timeout: Some(LockOptions::default().max_hold),
            on_resync: None,
            run: None,
        }
    }
}

impl AttemptOptions {
    /// Sets the lock options.
    pub fn lock(mut self, lock: LockOptions) -> Self {
        self.lock = lock;
        self
    }
    /// Sets the classifier.
    pub fn classifier(mut self, c: Arc<dyn ChangeClassifier>) -> Self {
        self.classifier = c;
        self
    }
    /// Lets attempts of this process overlap on one session (see
    /// [`AttemptOptions::overlap`]).
    pub fn overlap(mut self, yes: bool) -> Self {
        self.overlap = yes;
        self
    }
    /// Sets the budget of the wait for the session (see
    /// [`AttemptOptions::owner_timeout`]).
    pub fn owner_timeout(mut self, t: Option<Duration>) -> Self {
        self.owner_timeout = t;
        self
    }
    /// Sets the hook told about accepted foreign changes.
    pub fn on_resync(mut self, hook: impl Fn(&Resync) + Send + Sync + 'static) -> Self {
        self.on_resync = Some(Arc::new(hook));
        self
    }
    /// Registers the attempt in `registry` under `session_key` and `run_id`.
    pub fn register(
        mut self,
        registry: &RunRegistry,
        session_key: impl Into<String>,
        run_id: impl Into<String>,
    ) -> Self {
        self.run = Some(RunRegistration {
            registry: registry.clone(),
            session_key: session_key.into(),
            run_id: run_id.into(),
        });
        self
    }
}

/// What [`Attempt::acquire_for_cleanup`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupLock {
    /// The lock is held; cleanup writes land.
    Held,
    /// After a takeover (or dispose): cleanup runs, writes are skipped.
    NoOp,
}

/// What [`Attempt::around_prompt`] hands back.
#[derive(Debug)]
#[must_use = "the reacquire may have found a takeover"]
#[non_exhaustive]
pub struct Prompted<T> {
    /// The wrapped future's output, whatever happened to the lock.
    pub output: T,
    /// The reacquire after it: the accepted foreign entries, or the
    /// takeover (or other error) that ends the attempt's writes.
    pub reacquired: Result<Resync>,
}

/// What to do when a write closure that has the guard lent returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterWrite {
    /// Keep holding.
    Keep,
    /// Aborted meanwhile: arm the fence and release.
    Release,
    /// Disposed meanwhile: release.
    Dispose,
}

type Fence<B> = <<B as StoreBackend>::Store as TranscriptStore<B>>::Snapshot;

/// The attempt's view of the transcript, or why it has none it can trust
/// (the takeover a check against it reports).
type View<B> = std::result::Result<Fence<B>, TakeoverReason>;

struct St<B: StoreBackend> {
    state: State,
    guard: Option<Guard<B>>,
    /// `None` only while lent to a write closure.
    transcript: Option<B::Store>,
    /// The transcript as this attempt last saw it (its own writes included):
    /// armed at every release, and refreshed after every check and write
    /// while the lock is held. `Err` says why it could not be taken.
    fence: Option<View<B>>,
    /// The prompt turn (§9.1), while in a prompt window.
    turn: Option<PromptTurn>,
    /// The attempt-owner turn, from begin to dispose or abort.
    owner: Option<PromptTurn>,
    takeover: Option<(TakeoverPhase, TakeoverReason)>,
    /// Counts aborts, so that waits in flight during one give up.
    aborts: u64,
    /// The first abort's kind: from then on only cleanup and dispose work.
    aborted: Option<AbortKind>,
    /// Acquisitions in flight (reacquire, cleanup, a write's short lock).
    acquiring: usize,
    /// A write or check in flight, which has the transcript (and, for a
    /// write, the guard) lent.
    writer: Option<Writer>,
    after_write: AfterWrite,
    run: Option<RunHandle>,
    /// When the current prompt window opened (the lock released for a
    /// model call), for the event log.
    prompt_since: Option<Instant>,
}

struct Inner<B: StoreBackend> {
    locks: SessionLock<B>,
    opts: AttemptOptions,
    key: B::Key,
    /// The key's session name, for turns and messages.
    session: PathBuf,
    turns: &'static PromptTurns,
    st: Mutex<St<B>>,
    /// Notified on every abort, dispose, settled acquisition and finished
    /// write: what waits inside the attempt wake up on.
    events: Notify,
}

/// One agent turn's lock lifecycle.
///
/// `Attempt` is `Send + Sync`; its methods may be called from several tasks.
///
/// # Clones
/// `Attempt` is a cheap handle (an [`Arc`] inside): every clone is the same
/// attempt, with one state, one lock and one fence, as a language binding's
/// object needs. What one clone does, all see: [`Attempt::dispose`] (or an
/// abort, a release, a takeover) on any clone applies to the attempt, and
/// the other clones' later calls find it disposed (or aborted, released,
/// taken over). Dropping a clone drops only that handle; dropping the last
/// one disposes the attempt, as dropping the only one always did (its
/// outcome is then logged, never lost silently: call
/// [`Attempt::dispose`] to see a takeover found at dispose).
///
/// A [blocking twin](blocking::Attempt) shares the same attempt too
/// ([`blocking::Attempt::from`], [`blocking::Attempt::to_async`]).
///
/// # Example
///
/// One agent turn, as a gateway lane runs it: write the user's message,
/// release the session for the model call (another lane appends meanwhile,
/// which the classifier accepts), write the reply, clean up. The runnable
/// `examples/turn.rs` does the same against a path you give it.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use serde_json::json;
/// use sessionlock::attempt::{Attempt, AttemptOptions, CleanupLock};
/// use sessionlock::classify::OpenClawClassifier;
/// use sessionlock::transcript::{Durability, Reader, Transcript};
/// use sessionlock::{Error, LockOptions, SessionLock};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let dir = tempfile::tempdir().expect("tempdir");
/// let session = dir.path().join("abc.jsonl");
/// let opts = AttemptOptions::default()
///     .lock(LockOptions::default().timeout(Some(Duration::from_secs(10))).lane("channel"))
///     // Which entries others may append while the lock is released.
///     .classifier(Arc::new(OpenClawClassifier));
///
/// // Begin: the attempt holds the session lock.
/// let attempt = Attempt::begin_file(&session, opts).await?;
/// attempt.append(&[json!({"type": "message", "message": {"role": "user", "content": "hi"}})], Durability::Data).await?;
///
/// // The model call runs with the lock released, so other lanes can write.
/// let bookkeeping = json!({"type": "custom", "customType": "delivery", "id": "e7",
///                          "parentId": null, "timestamp": "2026-05-02T09:14:03.120Z"});
/// let model_call = async {
///     // Another lane appends under its own lock (benign bookkeeping).
///     let guard = SessionLock::new().acquire_async(&session).await?;
///     Transcript::open(&session)?.append(&guard, &[bookkeeping.clone()], Durability::Data)?;
///     guard.release()?;
///     Ok::<_, Error>("hello!")
/// };
/// // Reacquires after the call and checks what changed meanwhile.
/// let prompted = attempt.around_prompt(model_call).await?;
/// let reply = prompted.output?;
/// match prompted.reacquired {
///     Ok(resync) => {
///         // Accepted foreign entries: merge them into the in-memory session.
///         assert_eq!(resync.entries, [bookkeeping]);
///         attempt.append(&[json!({"type": "message", "message": {"role": "assistant", "content": reply}})], Durability::Data).await?;
///     }
///     // A change the classifier rejects: the attempt writes nothing more.
///     Err(e @ Error::Takeover { .. }) => eprintln!("not writing the reply: {e}"),
///     Err(e) => return Err(e),
/// }
///
/// // Cleanup always runs; after a takeover its lock is a no-op.
/// assert_eq!(attempt.acquire_for_cleanup().await?, CleanupLock::Held);
/// attempt.dispose()?;
///
/// // user, bookkeeping, assistant
/// assert_eq!(Reader::open(&session)?.count(), 3);
/// # Ok(())
/// # }
/// ```
#[must_use = "dropping the last handle of an attempt disposes it and releases its lock"]
pub struct Attempt<B: StoreBackend = FileBackend> {
    inner: Arc<Inner<B>>,
}

impl<B: StoreBackend> Clone for Attempt<B> {
    /// Another handle to the same attempt (see [Clones](Attempt#clones)).
    fn clone(&self) -> Self {
        Attempt {
            inner: self.inner.clone(),
        }
    }
}

impl<B: StoreBackend> std::fmt::Debug for Attempt<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("session", &self.inner.session)
            .field("state", &self.state())
            .finish()
    }
}

/// An abort's kind, as logged.
fn abort_name(kind: AbortKind) -> &'static str {
    match kind {
        AbortKind::User => "user",
        AbortKind::Timeout => "timeout",
        AbortKind::Stuck => "stuck",
        AbortKind::Yield => "yield",
    }
}

/// Releases a guard, logging (never throwing) a failure: the lock is then
/// reclaimable by the next waiter anyway.
fn release_quietly<B: LockBackend>(guard: Guard<B>, why: &str) {
    let path = guard.lock_path().to_owned();
    match guard.release() {
        Ok(()) => {}
        // Already reported where the loss was detected.
        Err(e @ Error::Revoked { .. }) => {
            tracing::debug!(
                target: "sessionlock::attempt",
                lock = %path.display(),
                why,
                error = %e,
                "session lock was already lost"
            );
        }
        Err(e) => {
            tracing::warn!(
                target: "sessionlock::attempt",
                lock = %path.display(),
                why,
                error = %e,
                "cannot release session lock"
            );
        }
    }
}

/// The reason a view could not be taken or kept.
fn unavailable(e: &Error) -> TakeoverReason {
    TakeoverReason::FenceUnavailable { why: e.to_string() }
}

/// The verdict of a check that found the transcript lent out.
fn lent_elsewhere() -> TakeoverReason {
    TakeoverReason::Unverifiable {
        why: "the transcript is lent to another call".to_owned(),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The end of a budget that starts now.
fn deadline_of(budget: Option<Duration>) -> Option<Instant> {
    budget.and_then(|b| Instant::now().checked_add(b))
}

/// Sleeps until `deadline` (forever without one).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The attempt that has a turn of `session`, as a [`Holder`].
fn turn_holder(session: &Path, turn: Option<TurnHolder>) -> Holder {
    match turn {
        Some(t) => Holder::in_process(session, t.lane, t.run_id, Some(ms(t.since.elapsed()))),
        None => Holder::in_process(session, None, None, None),
    }
}

/// Decrements the in-flight count when an acquisition ends, however it
/// ends (a dropped future included), and wakes those waiting for it.
struct InFlight<'a, B: StoreBackend>(&'a Inner<B>);

impl<B: StoreBackend> Drop for InFlight<'_, B> {
    fn drop(&mut self) {
        lock(&self.0.st).acquiring -= 1;
        self.0.events.notify_waiters();
    }
}

/// The guard and transcript lent to a write (with the fence its check
/// judges the file against). Dropped before it is given back (a panic in
/// the check or the write, or the write's future dropped while the store
/// is suspended), it gives the transcript back and sorts the guard out.
struct Lent<'a, B: StoreBackend> {
    inner: &'a Inner<B>,
    guard: Option<Guard<B>>,
    transcript: Option<B::Store>,
    /// The fence (or held view) the check judges against, until it passed.
    fence: Option<View<B>>,
    /// Whether the check passed: before that, a panic comes from the check,
    /// and nothing in the file may become the attempt's own; after it, the
    /// file (and whatever the closure writes) is the attempt's.
    checked: bool,
    /// Whether the check panicked (see [`watched`]).
    panicked: AtomicBool,
}

impl<B: StoreBackend> Drop for Lent<'_, B> {
    fn drop(&mut self) {
        let (Some(guard), Some(transcript)) = (self.guard.take(), self.transcript.take()) else {
            return;
        };
        let mut st = lock(&self.inner.st);
        st.writer = None;
        st.transcript = Some(transcript);
        let held = st.state == State::Held || st.state == State::Cleanup;
        if !self.checked && !self.panicked.load(Ordering::Relaxed) {
            // Dropped during the check (the store suspended there): nothing
            // was written, so everything goes back as it was, and an abort
            // or dispose that came meanwhile happens now.
            let fence = self.fence.take();
            if st.state != State::Disposed {
                st.fence = fence;
            }
            if held {
                st.guard = Some(guard);
                self.inner.after_lending(&mut st);
            } else {
                // A short lock taken for this write.
                st.after_write = AfterWrite::Keep;
                drop(st);
                release_quietly(guard, "write dropped during its check");
                self.inner.events.notify_waiters();
            }
            return;
        }
        // Unwinding from a panic in the closure or in the check before it,
        // or the write's future dropped while the store ran it: the lock
        // goes (no leaked lock: docs/design.md §10, invariant 2), the fence is
        // armed, and the attempt is released. What the closure wrote is ours;
        // after a panic in the check, nothing can be proven about the file.
        st.after_write = AfterWrite::Keep;
        if !self.checked {
            st.fence = Some(Err(TakeoverReason::CheckPanicked));
        }
        if held {
            if self.checked {
                st.fence = None;
            }
            st.guard = Some(guard);
            let _ = self.inner.release_held(&mut st, "write closure panicked");
            st.state = State::Released;
        } else {
            if self.checked {
                self.inner.rearm_now(&mut st, guard.epoch());
            }
            release_quietly(guard, "write closure panicked");
        }
        drop(st);
        self.inner.events.notify_waiters();
    }
}

/// A write in progress, between [`Attempt::start_write`] and
/// [`Attempt::finish_write`]: the transcript was checked, and it and the
/// guard are lent to the write.
struct Writing<'a, B: StoreBackend> {
    lent: Lent<'a, B>,
    /// Whether the lock is a short one taken for this write while released:
    /// it goes when the write ends.
    short: bool,
}

impl<B: StoreBackend> Writing<'_, B> {
    /// The lent transcript and guard (both there until the write ends).
    fn parts(&mut self) -> Option<(&mut B::Store, &Guard<B>)> {
        match (&mut self.lent.transcript, &self.lent.guard) {
            (Some(t), Some(g)) => Some((t, g)),
            _ => None,
        }
    }
}

/// The transcript lent to a check before an acquisition is adopted (and to
/// the snapshot after it), with the fence it judges against. Dropped before
/// it is given back, it gives them back: after a panicking classifier the
/// fence is marked unusable; after the call's future was dropped while the
/// store was suspended, the fence stays as it was.
struct Checking<'a, B: StoreBackend> {
    inner: &'a Inner<B>,
    transcript: Option<B::Store>,
    fence: Option<View<B>>,
    /// Whether the check (or the snapshot) panicked (see [`watched`]).
    panicked: AtomicBool,
}

impl<B: StoreBackend> Drop for Checking<'_, B> {
    fn drop(&mut self) {
        if let Some(t) = self.transcript.take() {
            // A panic: nothing can be proven about the file. A cancel: the
            // check judged nothing, the fence is still good. Either way an
            // abort or dispose that came meanwhile still happens.
            let mut st = lock(&self.inner.st);
            st.writer = None;
            st.transcript = Some(t);
            st.fence = if self.panicked.load(Ordering::Relaxed) {
                Some(Err(TakeoverReason::CheckPanicked))
            } else {
                self.fence.take()
            };
            self.inner.after_lending(&mut st);
        }
    }
}

/// The held guard, view and transcript of a release in progress, while it
/// checks the view (or takes a snapshot) outside the state lock. Dropped
/// before it ends (its future dropped while the store was suspended), the
/// release goes on without waiting: the view becomes the fence unchecked,
/// as at an abort (the next acquisition judges everything since it).
struct Releasing<'a, B: StoreBackend> {
    inner: &'a Inner<B>,
    guard: Option<Guard<B>>,
    transcript: Option<B::Store>,
    /// The held view; `None` when there was none (a snapshot is taken).
    view: Option<Fence<B>>,
    why: &'static str,
}

impl<B: StoreBackend> Drop for Releasing<'_, B> {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let fence = match self.view.take() {
            Some(view) => Ok(view),
            None => Err(TakeoverReason::FenceUnavailable {
                why: "the release was cancelled before its snapshot was taken".to_owned(),
            }),
        };
        self.inner
            .end_release(guard, self.transcript.take(), (fence, None), self.why);
    }
}

/// Accepts every complete entry: the check a release makes of the held
/// view, which must not run the user's classifier (under the state lock it
/// could call back into the attempt, or panic with the state half changed).
struct AnyEntry;

impl ChangeClassifier for AnyEntry {
    fn is_benign(&self, _: &Value) -> bool {
        true
    }
}

/// What has the transcript lent (see [`St::writer`]). Calls from inside
/// the user code that runs meanwhile are told by [`USER_CODE`], not by
/// this: a lent transcript's call may suspend, and other tasks then run on
/// the same thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// A check (with the snapshot after it) or a release's check.
    Check,
    /// A write: its check, the closure or store operation, the snapshot
    /// after it.
    Write,
}

thread_local! {
    /// The attempt (its [`Inner`]'s address) whose user code (a write
    /// closure, a classifier) runs on this thread right now: a call of that
    /// attempt made from this thread meanwhile comes from inside that code.
    static USER_CODE: Cell<usize> = const { Cell::new(0) };
}

/// Marks this thread as running the user code of an attempt, until dropped.
struct InUserCode(usize);

impl InUserCode {
    fn enter(attempt: usize) -> InUserCode {
        InUserCode(USER_CODE.replace(attempt))
    }
}

impl Drop for InUserCode {
    fn drop(&mut self) {
        USER_CODE.set(self.0);
    }
}

/// The attempt's classifier, as a check runs it: marked as the attempt's
/// user code while it runs (see [`USER_CODE`]), on whatever thread the
/// store polls the check.
struct Judge {
    classifier: Arc<dyn ChangeClassifier>,
    attempt: usize,
}

impl ChangeClassifier for Judge {
    fn is_benign(&self, entry: &Value) -> bool {
        let _user = InUserCode::enter(self.attempt);
        self.classifier.is_benign(entry)
    }
}

/// Marks `panicked` when the poll it guards unwinds (and was not already
/// unwinding when it began).
struct PanicMark<'a>(&'a AtomicBool, bool);

impl Drop for PanicMark<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.1 {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// Awaits `f`, marking `panicked` if one of its polls panics: a loan
/// dropped while unwinding tells by it a panic of its own check (a
/// classifier's) from a cancel during an unrelated unwind (a caller's
/// panic dropping the call), which `thread::panicking` cannot tell apart.
async fn watched<F: Future>(f: F, panicked: &AtomicBool) -> F::Output {
    let mut f = pin!(f);
    std::future::poll_fn(|cx| {
        let _mark = PanicMark(panicked, std::thread::panicking());
        f.as_mut().poll(cx)
    })
    .await
}

/// Polls a store future once, for the paths that must never wait: `abort`,
/// `dispose`, `release_for_idle_wait`, the releases an abort or dispose
/// defers to the end of a call, and drops. The file store's futures are
/// ready at the first poll, so for it this is the call itself; a store
/// whose future suspends (a database client's, which needs the runtime to
/// run its connection) yields `None`, and the caller takes a fallback that
/// proves nothing it cannot (see [`Inner::release_held`]). Parking the
/// thread instead would stall a runtime worker, and deadlock a
/// current-thread runtime.
fn at_once<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Why a view could not be taken without waiting.
fn not_at_once() -> TakeoverReason {
    TakeoverReason::FenceUnavailable {
        why: "the snapshot could not be taken without waiting".to_owned(),
    }
}

/// The fence a release arms after checking the held view, and the error it
/// returns.
fn checked_at_release<B: StoreBackend>(
    view: Fence<B>,
    change: Result<Change>,
) -> (View<B>, Option<Error>) {
    match change {
        // Unchanged, or appended entries the next check judges.
        Ok(Change::Unchanged | Change::Benign { .. }) => (Ok(view), None),
        Ok(Change::Takeover(change)) => (Err(TakeoverReason::ChangedWhileHeld { change }), None),
        Err(e) => (Err(unavailable(&e)), Some(e)),
    }
}

/// The fence a release arms from a snapshot, and the error it returns.
fn snapped_at_release<B: StoreBackend>(snapshot: Result<Fence<B>>) -> (View<B>, Option<Error>) {
    match snapshot {
        Ok(f) => (Ok(f), None),
        Err(e) => (Err(unavailable(&e)), Some(e)),
    }
}

/// The verdict of a store's check.
fn verdict_of(change: Result<Change>) -> std::result::Result<Resync, TakeoverReason> {
    match change {
        Ok(Change::Unchanged) => Ok(Resync::default()),
        Ok(Change::Benign { entries, range }) => Ok(Resync { entries, range }),
        Ok(Change::Takeover(change)) => Err(TakeoverReason::Changed { change }),
        Err(e) => Err(TakeoverReason::CheckFailed {
            error: e.to_string(),
            code: e.code().to_owned(),
        }),
    }
}

/// The snapshot a check judges the file against, or the verdict without a
/// check.
fn to_check<B: StoreBackend>(
    fence: Option<&View<B>>,
) -> std::result::Result<&Fence<B>, TakeoverReason> {
    match fence {
        // Every state that checks keeps a view; a path that lost it must
        // not turn checking off.
        None => Err(TakeoverReason::Unverifiable {
            why: "no view of the transcript to check against".to_owned(),
        }),
        Some(Err(why)) => Err(why.clone()),
        Some(Ok(fence)) => Ok(fence),
    }
}

/// A snapshot of the lent transcript (`None`: lent elsewhere), as the
/// attempt's view.
async fn snapshot_of<B: StoreBackend>(
    transcript: Option<&mut B::Store>,
    epoch: u64,
) -> Option<View<B>> {
    Some(
        transcript?
            .snapshot(epoch)
            .await
            .map_err(|e| unavailable(&e)),
    )
}

/// Takes the prompt turn off the attempt if the future wrapping the model
/// call is dropped before it ends: the prompt window is over.
struct VacateOnDrop<'a, B: StoreBackend>(Option<&'a Inner<B>>);

impl<B: StoreBackend> Drop for VacateOnDrop<'_, B> {
    fn drop(&mut self) {
        if let Some(inner) = self.0 {
            let mut st = lock(&inner.st);
            let turn = st.turn.take();
            inner.end_prompt(&mut st);
            drop(st);
            drop(turn);
        }
    }
}

impl<B: StoreBackend> Inner<B> {
    /// Logs the end of the prompt window, if one is open (the model call
    /// ended, was dropped, or the attempt was aborted, disposed or taken
    /// over).
    fn end_prompt(&self, st: &mut St<B>) {
        if let Some(since) = st.prompt_since.take() {
            observe::prompt_end(&self.ctx(), since);
        }
    }

    fn takeover_error(&self, phase: TakeoverPhase, reason: TakeoverReason) -> Error {
        Error::Takeover {
            session: self.session.clone(),
            phase,
            reason,
        }
    }

    fn sticky(&self, st: &St<B>, phase: TakeoverPhase) -> Error {
        let (phase, reason) = st.takeover.clone().unwrap_or((
            phase,
            TakeoverReason::Unverifiable {
                why: "the takeover was not recorded".to_owned(),
            },
        ));
        self.takeover_error(phase, reason)
    }

    fn misuse(&self, what: &str) -> Error {
        Error::Misuse {
            what: format!("{what} ({})", self.session.display()),
        }
    }

    fn disposed(&self, what: &str) -> Error {
        Error::Cancelled {
            what: format!(
                "{what}: the attempt was disposed ({})",
                self.session.display()
            ),
        }
    }

    fn cancelled(&self, what: &str) -> Error {
        Error::Cancelled {
            what: format!(
                "{what}: the attempt was aborted ({})",
                self.session.display()
            ),
        }
    }

    /// This attempt's mark in [`USER_CODE`]: its address, stable while it
    /// lives (it lives in an [`Arc`]).
    fn id(&self) -> usize {
        std::ptr::from_ref(self).addr()
    }

    /// Whether user code of this attempt (a write closure, a classifier)
    /// runs on this very thread: a call made from inside it, which must not
    /// wait for it.
    fn reentrant(&self) -> bool {
        USER_CODE.get() == self.id()
    }

    /// The attempt's classifier, as its checks run it.
    fn judge_classifier(&self) -> Judge {
        Judge {
            classifier: self.opts.classifier.clone(),
            attempt: self.id(),
        }
    }

    /// Snapshots the transcript as it is now, as the attempt's own state,
    /// without waiting (see [`at_once`]): after a write that ended in a
    /// panic, or whose future was dropped. A snapshot that cannot be taken
    /// at once leaves the fence unusable: nothing unproven is adopted.
    fn rearm_now(&self, st: &mut St<B>, epoch: u64) {
        st.fence = st
            .transcript
            .as_ref()
            .map(|t| match at_once(t.snapshot(epoch)) {
                Some(snapshot) => snapshot.map_err(|e| unavailable(&e)),
                None => Err(not_at_once()),
            });
    }

    /// Arms the fence and releases the held lock, without waiting (see
    /// [`at_once`]): the release of `abort`, `release_for_idle_wait`, of an
    /// abort that came during a call (carried out when the call ends), and
    /// of a write that ended in a panic. The lock is released even if the
    /// snapshot fails; the snapshot error is returned afterwards.
    ///
    /// The held view becomes the fence: a change made under the held lock
    /// by a program that ignores it is judged at the next acquisition, like
    /// one made while released, never adopted as the attempt's own.
    /// Checking it is one `stat` when nothing changed; the read is what can
    /// fail (incident 1), and then the lock is released all the same. A
    /// store whose check suspends (a database's) is not waited for: the
    /// held view becomes the fence unchecked, so the next acquisition's
    /// check judges every change since it (one made under the held lock is
    /// then reported as `Changed`, not `ChangedWhileHeld`), and nothing is
    /// adopted either way. With no view (after a write that panicked or was
    /// dropped), a snapshot that cannot be taken at once arms an unusable
    /// fence: the next acquisition reports a takeover.
    fn release_held(&self, st: &mut St<B>, why: &'static str) -> Option<Error> {
        let guard = st.guard.take()?;
        let (fence, err) = match (st.fence.take(), st.transcript.as_ref()) {
            (_, None) => (None, None),
            // No user code under the state lock: every complete entry passes
            // here, and the next acquisition classifies them for real.
            (Some(Ok(view)), Some(t)) => {
                let change = at_once(t.check(&view, &AnyEntry));
                let (fence, err) = match change {
                    Some(change) => checked_at_release::<B>(view, change),
                    None => (Ok(view), None),
                };
                (Some(fence), err)
            }
            // A view that could not be taken stays unusable: a fresh snapshot
            // now would adopt whatever changed since, unproven (§8.5).
            (Some(Err(why)), Some(_)) => (Some(Err(why)), None),
            (None, Some(t)) => {
                let (fence, err) = match at_once(t.snapshot(guard.epoch())) {
                    Some(snapshot) => snapped_at_release::<B>(snapshot),
                    None => (Err(not_at_once()), None),
                };
                (Some(fence), err)
            }
        };
        st.fence = fence;
        release_quietly(guard, why);
        if st.state == State::Held {
            st.state = State::Released;
        }
        err
    }

    /// Starts a release that awaits the store (`release_for_prompt`'s):
    /// lends the guard, the held view and the transcript out of the state
    /// (see [`Releasing`]), so that the check of the view (or the snapshot)
    /// runs outside the state lock; other calls of the attempt wait for it,
    /// `abort`, `dispose` and the getters do not. `None` when there is no
    /// store call to make: [`Inner::release_held`] then does it all at once.
    fn lend_release<'a>(&'a self, st: &mut St<B>, why: &'static str) -> Option<Releasing<'a, B>> {
        if st.guard.is_none() || st.transcript.is_none() || matches!(st.fence, Some(Err(_))) {
            return None;
        }
        let view = match st.fence.take() {
            Some(Ok(view)) => Some(view),
            _ => None,
        };
        st.writer = Some(Writer::Check);
        Some(Releasing {
            inner: self,
            guard: st.guard.take(),
            transcript: st.transcript.take(),
            view,
            why,
        })
    }

    /// Ends a release started by [`Inner::lend_release`]: checks the held
    /// view as [`Inner::release_held`] does (or snapshots the transcript,
    /// when there was no view), awaiting the store, then arms the fence and
    /// releases. Returns the snapshot's error, after the release.
    async fn release_lent(&self, mut r: Releasing<'_, B>) -> Option<Error> {
        let epoch = r.guard.as_ref().map_or(0, Guard::epoch);
        // The view stays in the loan while it is checked: dropped meanwhile,
        // the release arms it unchecked.
        let change = match (r.transcript.as_mut(), r.view.as_ref()) {
            (Some(t), Some(view)) => Some(t.check(view, &AnyEntry).await),
            _ => None,
        };
        let done = match (change, r.view.take()) {
            (Some(change), Some(view)) => checked_at_release::<B>(view, change),
            (None, Some(view)) => (Ok(view), None),
            (_, None) => match r.transcript.as_mut() {
                Some(t) => snapped_at_release::<B>(t.snapshot(epoch).await),
                None => (Err(not_at_once()), None),
            },
        };
        let guard = r.guard.take()?;
        self.end_release(guard, r.transcript.take(), done, r.why)
    }

    /// The end of a lent release, awaited or cut short: the transcript goes
    /// back, the fence is armed (unless the attempt was disposed meanwhile)
    /// and the lock released; an abort or dispose that came meanwhile has
    /// nothing left to do.
    fn end_release(
        &self,
        guard: Guard<B>,
        transcript: Option<B::Store>,
        (fence, err): (View<B>, Option<Error>),
        why: &'static str,
    ) -> Option<Error> {
        let mut st = lock(&self.st);
        st.writer = None;
        if transcript.is_some() {
            st.transcript = transcript;
        }
        if st.state != State::Disposed {
            st.fence = Some(fence);
        }
        st.after_write = AfterWrite::Keep;
        release_quietly(guard, why);
        if st.state == State::Held || st.state == State::Cleanup {
            st.state = State::Released;
        }
        drop(st);
        self.events.notify_waiters();
        err
    }

    /// Checks the transcript against the fence without waiting (see
    /// [`at_once`]): dispose's check. The transcript and the fence are lent
    /// out of the state (see [`Checking`]) while the classifier runs, so a
    /// classifier calling into the attempt never meets the state lock held
    /// by its own thread. Returns the lock again, with what was accepted or
    /// why it is a takeover. A store whose check suspends is not waited
    /// for: dispose then reports nothing (it never acquires again, and the
    /// lock goes all the same).
    fn verify_now<'a>(
        &'a self,
        mut st: MutexGuard<'a, St<B>>,
    ) -> (
        MutexGuard<'a, St<B>>,
        std::result::Result<Resync, TakeoverReason>,
    ) {
        let mut check = self.lend_check(&mut st);
        drop(st);
        let verdict = match (
            check.transcript.as_ref(),
            to_check::<B>(check.fence.as_ref()),
        ) {
            (None, _) => Err(lent_elsewhere()),
            (_, Err(why)) => Err(why),
            (Some(transcript), Ok(fence)) => {
                let judge = self.judge_classifier();
                match at_once(watched(transcript.check(fence, &judge), &check.panicked)) {
                    Some(change) => verdict_of(change),
                    None => {
                        tracing::debug!(
                            target: "sessionlock::attempt",
                            session = %self.session.display(),
                            "the store's check does not complete without waiting; dispose does not wait for it"
                        );
                        Ok(Resync::default())
                    }
                }
            }
        };
        let mut st = lock(&self.st);
        Inner::give_back_check(&mut st, &mut check);
        drop(check);
        (st, verdict)
    }

    /// Lends the transcript and the fence to a check outside the state lock
    /// (see [`Checking`]): other calls of the attempt wait for it; `abort`,
    /// `dispose` and the getters do not (an abort takes effect when it
    /// ends); a classifier calling into the attempt gets `Misuse`.
    fn lend_check<'a>(&'a self, st: &mut St<B>) -> Checking<'a, B> {
        let transcript = st.transcript.take();
        if transcript.is_some() {
            st.writer = Some(Writer::Check);
        }
        Checking {
            inner: self,
            transcript,
            fence: st.fence.take(),
            panicked: AtomicBool::new(false),
        }
    }

    /// Runs a [`Checking`] loan's check and, when it passes and `epoch` is
    /// given, the snapshot that becomes the new held view: the verdict, and
    /// that view. The fence stays in the loan, to go back as it was.
    async fn check_lent(
        &self,
        c: &mut Checking<'_, B>,
        epoch: Option<u64>,
    ) -> (std::result::Result<Resync, TakeoverReason>, Option<View<B>>) {
        let verdict = watched(
            self.judge(c.transcript.as_mut(), c.fence.as_ref()),
            &c.panicked,
        )
        .await;
        let fresh = match (&verdict, epoch) {
            (Ok(_), Some(epoch)) => {
                watched(snapshot_of::<B>(c.transcript.as_mut(), epoch), &c.panicked).await
            }
            _ => None,
        };
        (verdict, fresh)
    }

    /// Takes a [`Checking`] loan back: the transcript and the fence return
    /// to the state (a success then replaces the fence, a takeover drops it).
    fn give_back_check(st: &mut St<B>, c: &mut Checking<'_, B>) {
        if let Some(t) = c.transcript.take() {
            st.writer = None;
            st.transcript = Some(t);
        }
        st.fence = c.fence.take();
    }

    /// Lends the transcript and the fence, with `guard`, to the calling
    /// write: its check and its closure run outside the state lock (other
    /// calls of the attempt wait; a call from inside is `Misuse`).
    fn lend<'a>(&'a self, st: &mut St<B>, guard: Option<Guard<B>>) -> Lent<'a, B> {
        st.writer = Some(Writer::Write);
        st.after_write = AfterWrite::Keep;
        Lent {
            inner: self,
            guard,
            transcript: st.transcript.take(),
            fence: st.fence.take(),
            checked: false,
            panicked: AtomicBool::new(false),
        }
    }

    /// Takes a loan back before its closure ran: the transcript and the
    /// fence return to the state; the guard is handed to the caller.
    fn give_back(&self, st: &mut St<B>, lent: &mut Lent<'_, B>) -> Option<Guard<B>> {
        st.writer = None;
        st.transcript = lent.transcript.take();
        st.fence = lent.fence.take();
        lent.guard.take()
    }

    /// After a call had the transcript lent (a check, a write) with the
    /// held guard in the state: carries out an abort or dispose that came
    /// meanwhile (without waiting, as the abort or dispose itself would
    /// have), and wakes the calls that waited.
    fn after_lending(&self, st: &mut St<B>) {
        match std::mem::replace(&mut st.after_write, AfterWrite::Keep) {
            AfterWrite::Keep => {}
            AfterWrite::Release => {
                if st.state == State::Held || st.state == State::Cleanup {
                    let _ = self.release_held(st, "abort during a check");
                    st.state = State::Released;
                }
            }
            AfterWrite::Dispose => {
                if let Some(g) = st.guard.take() {
                    release_quietly(g, "dispose during a check");
                }
            }
        }
        self.events.notify_waiters();
    }

    /// The verdict of `fence` on the lent transcript (`None`: it is lent
    /// elsewhere), awaiting the store's check.
    async fn judge(
        &self,
        transcript: Option<&mut B::Store>,
        fence: Option<&View<B>>,
    ) -> std::result::Result<Resync, TakeoverReason> {
        let Some(transcript) = transcript else {
            return Err(lent_elsewhere());
        };
        let fence = to_check::<B>(fence)?;
        verdict_of(transcript.check(fence, &self.judge_classifier()).await)
    }

    /// This attempt as metrics and the event log report it.
    fn ctx(&self) -> observe::Ctx<'_> {
        observe::Ctx {
            backend: B::NAME,
            session: self.key.session(),
            lane: self.opts.lock.lane.as_deref(),
            run: self.opts.lock.run_id.as_deref(),
        }
    }

    fn mark_taken_over(
        &self,
        st: &mut St<B>,
        phase: TakeoverPhase,
        reason: TakeoverReason,
    ) -> Error {
        observe::takeover(&self.ctx(), phase.as_str(), reason.as_str(), &reason);
        tracing::warn!(
            target: "sessionlock::attempt",
            session = %self.session.display(),
            %phase,
            detail = %reason,
            "takeover detected"
        );
        st.state = State::TakenOver;
        st.fence = None;
        st.turn = None;
        self.end_prompt(st);
        if let Some(g) = st.guard.take() {
            release_quietly(g, "takeover");
        }
        st.takeover = Some((phase, reason.clone()));
        self.events.notify_waiters();
        self.takeover_error(phase, reason)
    }

    /// `entries` as one batch of JSON lines.
    fn raw_entries(&self, entries: &[Value]) -> Result<RawEntries> {
        let invalid = |e: serde_json::Error| {
            Error::io(
                "serialize entry for",
                &self.session,
                std::io::Error::other(e),
            )
        };
        let mut raw = RawEntries::new();
        for e in entries {
            raw.push(&serde_json::to_vec(e).map_err(invalid)?)
                .map_err(invalid)?;
        }
        Ok(raw)
    }

    /// Tells the hook (outside the state lock) and the run registry.
    fn accepted(&self, resync: &Resync) {
        if resync.is_empty() {
            return;
        }
        tracing::debug!(
            target: "sessionlock::attempt",
            session = %self.session.display(),
            entries = resync.entries.len(),
            "accepted foreign entries"
        );
        if let Some(hook) = &self.opts.on_resync {
            hook(resync);
        }
    }

    fn progress(&self) {
        if let Some(run) = &lock(&self.st).run {
            run.progress();
        }
    }

    fn abort(&self, kind: AbortKind) {
        let mut st = lock(&self.st);
        st.aborts += 1;
        st.aborted.get_or_insert(kind);
        st.turn = None;
        self.end_prompt(&mut st);
        if st.writer.is_some() {
            // The guard is lent to a write in progress: it is released the
            // moment the write returns.
            if st.after_write == AfterWrite::Keep {
                st.after_write = AfterWrite::Release;
            }
        } else if st.state == State::Held || st.state == State::Cleanup {
            if let Some(e) = self.release_held(&mut st, "abort") {
                tracing::warn!(
                    target: "sessionlock::attempt",
                    session = %self.session.display(),
                    kind = abort_name(kind),
                    error = %e,
                    "fence snapshot failed during abort; lock released"
                );
            }
            if st.state == State::Cleanup {
                st.state = State::Released;
            }
        }
        // The session is free for the next attempt of this process; this one
        // may still run its cleanup, checked by its fence.
        let owner = st.owner.take();
        drop(st);
        drop(owner);
        self.events.notify_waiters();
        tracing::debug!(
            target: "sessionlock::attempt",
            session = %self.session.display(),
            kind = abort_name(kind),
            "attempt aborted"
        );
    }

    fn dispose(&self) -> Result<()> {
        let mut st = lock(&self.st);
        let turn = st.turn.take();
        self.end_prompt(&mut st);
        let mut result = Ok(());
        if st.writer.is_some() {
            st.after_write = AfterWrite::Dispose;
        } else if st.guard.is_some() {
            // Foreign changes made while we held the lock, after our last
            // write (the held view of docs/design.md §8.5).
            let (relocked, verdict) = self.verify_now(st);
            st = relocked;
            // An abort or dispose during the check: this dispose goes on.
            st.after_write = AfterWrite::Keep;
            if let Err(reason) = verdict {
                result = Err(self.mark_taken_over(&mut st, TakeoverPhase::Dispose, reason));
            }
            if let Some(g) = st.guard.take() {
                release_quietly(g, "dispose");
            }
        }
        st.fence = None;
        if st.state != State::TakenOver {
            st.state = State::Disposed;
        }
        // The lock first, then the session's owner turn: the next attempt
        // finds the lock free.
        let owner = st.owner.take();
        let run = st.run.take();
        drop(st);
        drop(turn);
        drop(owner);
        drop(run);
        self.events.notify_waiters();
        result
    }

    /// Waits until `ready` holds for the state, waking on the attempt's
    /// events, at most until `deadline`; gives up on an abort after
    /// `aborts`. Returns with the state lock held.
    async fn wait_for<'a>(
        &'a self,
        deadline: Option<Instant>,
        aborts: u64,
        what: &str,
        mut ready: impl FnMut(&St<B>) -> bool,
    ) -> Result<MutexGuard<'a, St<B>>> {
        loop {
            let mut notified = pin!(self.events.notified());
            notified.as_mut().enable();
            {
                let st = lock(&self.st);
                if st.aborts != aborts {
                    return Err(self.cancelled(what));
                }
                if ready(&st) {
                    return Ok(st);
                }
            }
            tokio::select! {
                () = notified => {}
                () = sleep_until(deadline) => {
                    return Err(self.busy_timeout(what));
                }
            }
        }
    }

    /// The first step of a method that may wait: refuses a call from inside
    /// a write closure (it would wait for itself), runs `first` on the
    /// state, and returns the abort count the call's waits go by.
    fn enter(&self, what: &str, first: impl FnOnce(&mut St<B>)) -> Result<u64> {
        let mut st = lock(&self.st);
        if self.reentrant() {
            return Err(self.misuse(&format!("{what} inside a write closure")));
        }
        first(&mut st);
        Ok(st.aborts)
    }

    /// After an abort, only cleanup and dispose go on: the attempt's prompt
    /// windows, reacquires and (outside cleanup) writes are refused.
    fn refuse_after_abort(&self, st: &St<B>, what: &str) -> Result<()> {
        match st.aborted {
            Some(kind) if st.state != State::Cleanup => Err(Error::Cancelled {
                what: format!(
                    "{what}: the attempt was aborted ({kind:?}); only its cleanup and dispose go on ({})",
                    self.session.display()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Waits until no write closure and no acquisition of this attempt is in
    /// flight (see [`Inner::wait_for`]).
    async fn settled(
        &self,
        deadline: Option<Instant>,
        aborts: u64,
        what: &str,
    ) -> Result<MutexGuard<'_, St<B>>> {
        self.wait_for(deadline, aborts, what, |st| {
            st.acquiring == 0 && st.writer.is_none()
        })
        .await
    }

    /// Resolves with `Cancelled` once the attempt is aborted after `aborts`,
    /// or disposed.
    async fn aborted(&self, aborts: u64, what: &str) -> Error {
        match self
            .wait_for(None, aborts, what, |st| st.state == State::Disposed)
            .await
        {
            Err(e) => e,
            Ok(_) => self.disposed(what),
        }
    }

    /// The timeout of a wait for another call of this attempt.
    fn busy_timeout(&self, what: &str) -> Error {
        tracing::debug!(
            target: "sessionlock::attempt",
            session = %self.session.display(),
            what,
            "timed out waiting for another call of the attempt"
        );
        Error::Busy {
            waiting_for: "another call of this attempt",
            timeout_ms: self.opts.lock.timeout.map_or(u64::MAX, ms),
            holder: Box::new(Holder::in_process(
                &self.session,
                self.opts.lock.lane.clone(),
                self.opts.lock.run_id.clone(),
                None,
            )),
        }
    }

    /// Before the cleanup of an attempt that gave its session up to the next
    /// attempt of this process (an abort vacates the owner turn): queues for
    /// the owner turn again, behind the attempts that took the session
    /// meanwhile, so that its cleanup never writes under a later attempt's
    /// open context. The wait has the owner budget and ends on a further
    /// abort; running out of it is a takeover (the session never came back).
    async fn regain_ownership(&self, phase: TakeoverPhase, aborts: u64) -> Result<()> {
        {
            let st = lock(&self.st);
            if self.opts.overlap || st.owner.is_some() || st.state != State::Released {
                return Ok(());
            }
        }
        let deadline = deadline_of(self.opts.owner_timeout);
        let owners = PromptTurns::owners();
        let take = owners.take_as(
            &self.session,
            self.opts.lock.lane.clone(),
            self.opts.lock.run_id.clone(),
        );
        let aborted = self.aborted(aborts, "waiting for the session");
        let owner = tokio::select! {
            t = take => t,
            e = aborted => {
                // Disposed meanwhile: the cleanup goes on as a no-op.
                return if lock(&self.st).state == State::Disposed { Ok(()) } else { Err(e) };
            }
            () = sleep_until(deadline) => {
                let busy = Error::Busy {
                    waiting_for: "the session, owned by a later attempt",
                    timeout_ms: self.opts.owner_timeout.map_or(u64::MAX, ms),
                    holder: Box::new(turn_holder(&self.session, owners.holder(&self.session))),
                };
                let mut st = lock(&self.st);
                if st.state == State::Released {
                    let reason = TakeoverReason::SessionNotReturned {
                        error: busy.to_string(),
                        code: busy.code().to_owned(),
                    };
                    return Err(self.mark_taken_over(&mut st, phase, reason));
                }
                return Err(busy);
            }
        };
        let mut st = lock(&self.st);
        if st.state == State::Released && st.owner.is_none() {
            st.owner = Some(owner);
        }
        Ok(())
    }

    /// Acquires the lock with what is left of a budget that ends at
    /// `deadline`; a timeout reports the whole budget.
    async fn acquire_until(&self, deadline: Option<Instant>) -> Result<Guard<B>> {
        let opts = self
            .opts
            .lock
            .clone()
            .timeout(deadline.map(|d| d.saturating_duration_since(Instant::now())));
        self.locks
            .acquire_key_async(&self.key, &opts)
            .await
            .map_err(|e| match e {
                Error::Timeout { holder, .. } => Error::Timeout {
                    timeout_ms: self.opts.lock.timeout.map_or(u64::MAX, ms),
                    holder,
                },
                e => e,
            })
    }

    /// Waits for this session's prompt turn, within the budget, giving up on
    /// an abort.
    async fn take_turn(&self, aborts: u64, deadline: Option<Instant>) -> Result<PromptTurn> {
        let take = self.turns.take_as(
            &self.session,
            self.opts.lock.lane.clone(),
            self.opts.lock.run_id.clone(),
        );
        let aborted = self.aborted(aborts, "waiting for the prompt turn");
        tokio::select! {
            turn = take => Ok(turn),
            e = aborted => Err(e),
            () = sleep_until(deadline) => Err(Error::Busy {
                waiting_for: "the prompt turn",
                timeout_ms: self.opts.lock.timeout.map_or(u64::MAX, ms),
                holder: Box::new(turn_holder(&self.session, self.turns.holder(&self.session))),
            }),
        }
    }
}

impl<B: StoreBackend> Drop for Inner<B> {
    fn drop(&mut self) {
        if let Err(e) = self.dispose() {
            tracing::warn!(
                target: "sessionlock::attempt",
                session = %self.session.display(),
                error = %e,
                "attempt dropped after a takeover"
            );
        }
    }
}

/// The abort handle of an attempt, from the moment it registers (while it
/// still waits for its turn) to its end.
struct Gate<B: StoreBackend> {
    state: Mutex<GateState<B>>,
    notify: Notify,
}

struct GateState<B: StoreBackend> {
    /// Aborted before the attempt existed.
    cancelled: Option<AbortKind>,
    inner: Option<Weak<Inner<B>>>,
}

impl<B: StoreBackend> Gate<B> {
    fn new() -> Arc<Self> {
        Arc::new(Gate {
            state: Mutex::new(GateState {
                cancelled: None,
                inner: None,
            }),
            notify: Notify::new(),
        })
    }

    /// Resolves once the attempt is aborted before it began.
    async fn cancelled(&self) -> AbortKind {
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            if let Some(kind) = lock(&self.state).cancelled {
                return kind;
            }
            notified.await;
        }
    }
}

impl<B: StoreBackend> AbortHandle for Gate<B> {
    fn abort(&self, kind: AbortKind) {
        let inner = {
            let mut g = lock(&self.state);
            match &g.inner {
                Some(w) => w.upgrade(),
                None => {
                    g.cancelled.get_or_insert(kind);
                    None
                }
            }
        };
        match inner {
            Some(inner) => inner.abort(kind),
            None => self.notify.notify_waiters(),
        }
    }
}

impl Attempt<FileBackend> {
    /// Begins an attempt on `session` with the default file backend.
    ///
    /// # Errors
    /// As [`Attempt::begin`].
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is held or queued once it is dropped.
    pub async fn begin_file(session: impl AsRef<Path>, opts: AttemptOptions) -> Result<Self> {
        let locks = SessionLock::with_backend(FileBackend::default(), opts.lock.clone());
        Self::begin(&locks, session, opts).await
    }
}

impl<B: StoreBackend> Attempt<B> {
    /// Begins an attempt: waits for this process's other attempt on the
    /// session to end (unless [`AttemptOptions::overlap`]), acquires the lock
    /// eagerly (the controller always starts holding) and opens the
    /// transcript. Build the model's context after this returns: it then
    /// includes every reply written before.
    ///
    /// The wait for the session has [`AttemptOptions::owner_timeout`] (it
    /// waits for another attempt's whole turn); the acquisition has the lock
    /// options' acquire timeout.
    ///
    /// # Errors
    /// `Busy` naming this process's attempt that owns the session (pid,
    /// lane, run id, age) when `owner_timeout` runs out; `Timeout` naming
    /// the lock's holder; `Cancelled` when the attempt was aborted through
    /// its registration while it waited; as [`SessionLock::acquire`]; `Io`
    /// when the transcript cannot be opened.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is held or queued once it is dropped.
    pub async fn begin(
        locks: &SessionLock<B>,
        session: impl AsRef<B::Name>,
        mut opts: AttemptOptions,
    ) -> Result<Self> {
        let key = locks.backend().key(session.as_ref())?;
        let session = PathBuf::from(key.session());
        if let (Some(run), None) = (&opts.run, &opts.lock.run_id) {
            opts.lock.run_id = Some(run.run_id.clone());
        }
        let gate = Gate::<B>::new();
        let run = opts.run.as_ref().map(|r| {
            let info = RunInfo {
                session_file: session.clone(),
                session_key: r.session_key.clone(),
                run_id: r.run_id.clone(),
                lane: opts.lock.lane.clone(),
            };
            let abort: Arc<dyn AbortHandle> = gate.clone();
            if opts.overlap {
                r.registry.register(info, abort)
            } else {
                r.registry.register_queued(info, abort)
            }
        });
        let owner_deadline = deadline_of(opts.owner_timeout);
        let shown = session.clone();
        let cancelled = |kind: AbortKind| Error::Cancelled {
            what: format!(
                "attempt aborted ({kind:?}) before it began ({})",
                shown.display()
            ),
        };
        let owner = if opts.overlap {
            None
        } else {
            let owners = PromptTurns::owners();
            let take = owners.take_as(&session, opts.lock.lane.clone(), opts.lock.run_id.clone());
            tokio::select! {
                t = take => Some(t),
                kind = gate.cancelled() => return Err(cancelled(kind)),
                () = sleep_until(owner_deadline) => {
                    return Err(Error::Busy {
                        waiting_for: "the session, owned by another attempt",
                        timeout_ms: opts.owner_timeout.map_or(u64::MAX, ms),
                        holder: Box::new(turn_holder(&session, owners.holder(&session))),
                    });
                }
            }
        };
        let guard = tokio::select! {
            g = locks.acquire_key_async(&key, &opts.lock) => g?,
            kind = gate.cancelled() => return Err(cancelled(kind)),
        };
        let transcript = locks.backend().open_store(&key).await?;
        let fence = Some(
            transcript
                .snapshot(guard.epoch())
                .await
                .map_err(|e| unavailable(&e)),
        );
        let inner = Arc::new(Inner {
            locks: locks.clone(),
            opts,
            key,
            session,
            turns: PromptTurns::global(),
            st: Mutex::new(St {
                state: State::Held,
                guard: Some(guard),
                transcript: Some(transcript),
                fence,
                turn: None,
                owner,
                takeover: None,
                aborts: 0,
                aborted: None,
                acquiring: 0,
                writer: None,
                after_write: AfterWrite::Keep,
                run: None,
                prompt_since: None,
            }),
            events: Notify::new(),
        });
        {
            let mut g = lock(&gate.state);
            if let Some(kind) = g.cancelled {
                // Aborted in the last instant: `inner` drops, which releases.
                return Err(cancelled(kind));
            }
            g.inner = Some(Arc::downgrade(&inner));
        }
        if let Some(run) = &run {
            run.running();
        }
        lock(&inner.st).run = run;
        Ok(Attempt { inner })
    }

    /// The canonical session file.
    pub fn session(&self) -> &Path {
        &self.inner.session
    }

    /// The current state.
    pub fn state(&self) -> State {
        lock(&self.inner.st).state
    }

    /// The kind of the first abort, once the attempt was aborted: from then
    /// on only its cleanup and dispose go on.
    pub fn aborted(&self) -> Option<AbortKind> {
        lock(&self.inner.st).aborted
    }

    /// Whether a takeover was detected (sticky).
    pub fn is_taken_over(&self) -> bool {
        self.state() == State::TakenOver
    }

    /// The takeover, once one was detected (sticky): where, and why. The
    /// same phase and reason every later call's [`Error::Takeover`] names.
    pub fn takeover(&self) -> Option<(TakeoverPhase, TakeoverReason)> {
        lock(&self.inner.st).takeover.clone()
    }

    /// A handle the active-run registry can abort this attempt through.
    pub fn abort_handle(&self) -> Arc<dyn AbortHandle> {
        let gate = Gate::<B>::new();
        lock(&gate.state).inner = Some(Arc::downgrade(&self.inner));
        gate
    }

    /// Records progress (model output) for the stuck detector, when the
    /// attempt is registered. Writes and reacquires record it themselves.
    pub fn progress(&self) {
        self.inner.progress();
    }

    /// Arms the fence and releases the lock, then waits for this session's
    /// prompt turn (one prompt window per session file in this process).
    /// Call it before every model call, or use [`Attempt::around_prompt`].
    /// Already released without a turn (after an idle wait, or a reacquire
    /// that failed), it only waits for the turn; in a prompt window, in
    /// cleanup, after a takeover or after dispose it does nothing.
    ///
    /// # Errors
    /// The fence snapshot's error, returned after the lock was released (the
    /// next reacquire then reports a takeover, since nothing can be proven);
    /// `Busy` naming the attempt in its prompt window when the turn does
    /// not come within the budget (the attempt stays released, without a
    /// turn); `Cancelled` when aborted (before or while waiting); `Misuse`
    /// from inside a write closure.
    ///
    /// # Cancel safety
    /// Cancel safe: it first waits (without releasing anything) for a write
    /// or acquisition of this attempt in flight, then checks the held view
    /// (awaiting the store) and releases the lock, and only then waits for
    /// the turn; a turn being waited for is given up. Dropped during the
    /// first wait, it leaves the lock held; dropped during the check, it
    /// releases the lock all the same, with the held view as the fence
    /// unchecked (the next acquisition judges everything since it).
    pub async fn release_for_prompt(&self) -> Result<()> {
        let deadline = deadline_of(self.inner.opts.lock.timeout);
        let aborts = self.inner.enter("release_for_prompt", |_| {})?;
        let (aborts, releasing, err) = {
            let mut st = self
                .inner
                .settled(deadline, aborts, "release for prompt")
                .await?;
            self.inner.refuse_after_abort(&st, "release_for_prompt")?;
            match st.state {
                // The held view is checked outside the state lock, awaiting
                // the store; the lock goes right after.
                State::Held => match self.inner.lend_release(&mut st, "prompt") {
                    Some(releasing) => (st.aborts, Some(releasing), None),
                    None => (st.aborts, None, self.inner.release_held(&mut st, "prompt")),
                },
                // Released without a turn (an idle wait, a failed reacquire):
                // nothing to release, but the prompt window needs its turn.
                State::Released if st.turn.is_none() => (st.aborts, None, None),
                _ => return Ok(()),
            }
        };
        let err = match releasing {
            Some(releasing) => self.inner.release_lent(releasing).await,
            None => err,
        };
        if let Some(e) = err {
            // Released, but unverifiable: the attempt ends in a takeover, so
            // it takes no prompt turn that others would wait behind.
            return Err(e);
        }
        // One budget for the wait above and the turn.
        let turn = self.inner.take_turn(aborts, deadline).await?;
        let mut st = lock(&self.inner.st);
        if st.aborts != aborts {
            drop(st);
            drop(turn);
            return Err(self.inner.cancelled("waiting for the prompt turn"));
        }
        if st.state == State::Released {
            st.turn = Some(turn);
            st.prompt_since = Some(Instant::now());
            observe::prompt_start(&self.inner.ctx());
        }
        Ok(())
    }

    /// Runs `model_call` in a prompt window: releases the lock (and takes the
    /// prompt turn) before it, and reacquires and checks the fence after it,
    /// whatever it returned. The future runs exactly once: the wrapper never
    /// retries it (`max_retries: 0`); a caller that retries calls this again,
    /// which never releases twice (after a failed reacquire the lock is
    /// already released; the turn is taken again).
    ///
    /// # Errors
    /// The release's errors, as [`Attempt::release_for_prompt`]: the future
    /// is then not run; the sticky `Takeover` when the attempt was already
    /// taken over; `Misuse` in cleanup or after dispose, where a prompt
    /// window has no meaning; `Cancelled` when the attempt is aborted while
    /// the future runs: the future is dropped at once (so stuck recovery
    /// ends a model call hung forever), the turn vacated, the lock not
    /// reacquired. The reacquire's outcome, a takeover included, is in
    /// [`Prompted::reacquired`], beside the output.
    ///
    /// # Cancel safety
    /// Dropping it while the future runs ends the prompt window: the turn is
    /// vacated and the attempt stays released (the next reacquire, cleanup
    /// or dispose deals with that).
    pub async fn around_prompt<F: Future>(&self, model_call: F) -> Result<Prompted<F::Output>> {
        let aborts = self.open_prompt_window().await?;
        let mut vacate = VacateOnDrop(Some(&*self.inner));
        // An abort (a user stop, stuck recovery) ends the call: the future is
        // dropped, so a model call hung forever cannot keep the run alive.
        let aborted = self.inner.aborted(aborts, "model call");
        let output = tokio::select! {
            out = model_call => out,
            e = aborted => return Err(e),
        };
        vacate.0 = None;
        self.close_prompt_window(output).await
    }

    /// The start of [`Attempt::around_prompt`] (and of its blocking twin's):
    /// refuses a prompt window after a takeover, in cleanup and after
    /// dispose, then releases (or, on a retry after a failed reacquire,
    /// takes the turn only). Returns the abort count the model call goes by.
    async fn open_prompt_window(&self) -> Result<u64> {
        let aborts = {
            let st = lock(&self.inner.st);
            match st.state {
                State::TakenOver => {
                    return Err(self.inner.sticky(&st, TakeoverPhase::PromptReacquire))
                }
                State::Cleanup | State::Disposed => {
                    return Err(self
                        .inner
                        .misuse("around_prompt after cleanup began or after dispose"))
                }
                State::Held | State::Released => st.aborts,
            }
        };
        self.release_for_prompt().await?;
        Ok(aborts)
    }

    /// The end of [`Attempt::around_prompt`], once the model call returned:
    /// records progress and reacquires.
    async fn close_prompt_window<T>(&self, output: T) -> Result<Prompted<T>> {
        self.inner.progress();
        let reacquired = self.reacquire_after_prompt().await;
        Ok(Prompted { output, reacquired })
    }

    /// Releases the lock while waiting for background work (e.g. compaction
    /// after the prompt) without taking a prompt turn, so it never blocks
    /// prompt-turn waiters. It never waits for the store (see
    /// [store calls](crate::attempt#store-calls)): for a store whose check suspends,
    /// the held view becomes the fence unchecked.
    ///
    /// # Errors
    /// The fence snapshot's error, after the lock was released; `Misuse`
    /// from inside a write closure.
    pub fn release_for_idle_wait(&self) -> Result<()> {
        let mut st = lock(&self.inner.st);
        if self.inner.reentrant() {
            return Err(self
                .inner
                .misuse("release_for_idle_wait inside a write closure"));
        }
        if st.writer.is_some() {
            // Another task's write has the guard: release when it returns.
            if st.state == State::Held && st.after_write == AfterWrite::Keep {
                st.after_write = AfterWrite::Release;
            }
            return Ok(());
        }
        if st.state != State::Held {
            return Ok(());
        }
        self.inner
            .release_held(&mut st, "idle wait")
            .map_or(Ok(()), Err)
    }

    /// Vacates the prompt turn, reacquires the lock and checks the fence.
    /// Returns the foreign entries the classifier accepted meanwhile (also
    /// passed to [`AttemptOptions::on_resync`]): merge them into the
    /// in-memory session. A no-op (an empty [`Resync`]) after cleanup started
    /// and after dispose; after a takeover it reports the (sticky) takeover.
    /// If another call of this attempt is acquiring, it waits for that one
    /// and goes by its outcome.
    ///
    /// # Errors
    /// `Takeover { phase: prompt_reacquire }` when the transcript changed in
    /// a way the classifier does not accept, or the acquire timed out or met
    /// a stale report; `Cancelled` when the attempt was aborted while it
    /// acquired (nothing is then held); `Misuse` from inside a write
    /// closure; `Io`.
    ///
    /// # Cancel safety
    /// Cancel safe: if dropped while acquiring, nothing is held; the attempt
    /// stays released with its fence armed.
    pub async fn reacquire_after_prompt(&self) -> Result<Resync> {
        let deadline = deadline_of(self.inner.opts.lock.timeout);
        self.reacquire(TakeoverPhase::PromptReacquire, deadline)
            .await
    }

    /// Reacquires from `Released` (shared by reacquire and cleanup), within
    /// the budget that ends at `deadline`.
    async fn reacquire(&self, phase: TakeoverPhase, deadline: Option<Instant>) -> Result<Resync> {
        let aborts = self.inner.enter("reacquiring", |st| {
            if phase == TakeoverPhase::PromptReacquire {
                st.turn = None;
            }
            self.inner.end_prompt(st);
        })?;
        if phase == TakeoverPhase::Cleanup {
            // An aborted attempt's cleanup queues for the session again.
            self.inner.regain_ownership(phase, aborts).await?;
        }
        let aborts = {
            let mut st = self.inner.settled(deadline, aborts, "reacquire").await?;
            match st.state {
                State::Released if phase == TakeoverPhase::PromptReacquire => {
                    self.inner
                        .refuse_after_abort(&st, "reacquire_after_prompt")?;
                }
                State::Released => {}
                State::TakenOver => return Err(self.inner.sticky(&st, phase)),
                State::Held | State::Cleanup | State::Disposed => return Ok(Resync::default()),
            }
            st.acquiring += 1;
            st.aborts
        };
        let in_flight = InFlight(&self.inner);
        // One budget for the wait above and the acquisition.
        let acquire = self.inner.acquire_until(deadline);
        let aborted = self.inner.aborted(aborts, "reacquire");
        let acquired = tokio::select! {
            r = acquire => r,
            e = aborted => Err(e),
        };
        // The state lock's guard must not live across the await below.
        let (guard, mut check) = {
            let mut st = lock(&self.inner.st);
            if st.aborts != aborts {
                drop(st);
                drop(in_flight);
                if let Ok(g) = acquired {
                    release_quietly(g, "reacquire resolved after an abort");
                }
                return Err(self.inner.cancelled("reacquire"));
            }
            if st.state != State::Released {
                // Disposed (or taken over) while we waited: hold nothing.
                let sticky = (st.state == State::TakenOver).then(|| self.inner.sticky(&st, phase));
                drop(st);
                drop(in_flight);
                if let Ok(g) = acquired {
                    release_quietly(g, "reacquire resolved after dispose");
                }
                return sticky.map_or(Ok(Resync::default()), Err);
            }
            let guard = match acquired {
                Ok(g) => g,
                Err(e @ (Error::Timeout { .. } | Error::Stale { .. })) => {
                    let reason = TakeoverReason::LockUnavailable {
                        error: e.to_string(),
                        code: e.code().to_owned(),
                    };
                    let e = self.inner.mark_taken_over(&mut st, phase, reason);
                    drop(st);
                    drop(in_flight);
                    return Err(e);
                }
                Err(e) => {
                    drop(st);
                    drop(in_flight);
                    return Err(e);
                }
            };
            // The check, and the snapshot that becomes the held view, run on the
            // lent transcript outside the state lock, awaiting the store.
            let check = self.inner.lend_check(&mut st);
            (guard, check)
        };
        let epoch = guard.epoch();
        let (verdict, fresh) = self.inner.check_lent(&mut check, Some(epoch)).await;
        let mut st = lock(&self.inner.st);
        Inner::give_back_check(&mut st, &mut check);
        drop(check);
        // The guard is ours alone: an abort or dispose during the check is
        // seen below, not through `after_write`.
        st.after_write = AfterWrite::Keep;
        self.inner.events.notify_waiters();
        if st.aborts != aborts || st.state != State::Released {
            let e = if st.aborts != aborts {
                Err(self.inner.cancelled("reacquire"))
            } else if st.state == State::TakenOver {
                Err(self.inner.sticky(&st, phase))
            } else {
                Ok(Resync::default())
            };
            drop(st);
            drop(in_flight);
            release_quietly(guard, "reacquire checked after an abort or dispose");
            return e;
        }
        st.guard = Some(guard);
        let result = match verdict {
            Ok(resync) => {
                st.state = State::Held;
                st.fence = fresh;
                Ok(resync)
            }
            Err(reason) => Err(self.inner.mark_taken_over(&mut st, phase, reason)),
        };
        drop(st);
        drop(in_flight);
        if let Ok(resync) = &result {
            self.inner.progress();
            self.inner.accepted(resync);
        }
        result
    }

    /// Runs a transcript mutation under the lock: with the held lock, or a
    /// short one taken for it while released. The transcript is checked
    /// first (against the fence while released; against the attempt's own
    /// last view while held, so a change by a program that ignores the lock
    /// is caught before the write), and its state after `f` is recorded as
    /// the attempt's own, even when `f` fails, so its own writes are never
    /// mistaken for a takeover. After a takeover it returns the sticky
    /// `Takeover` error and writes nothing; after an abort it writes only in
    /// cleanup (after [`Attempt::acquire_for_cleanup`]); after dispose,
    /// never. A write that does not happen is always an error, never a
    /// silent skip.
    ///
    /// `f` runs without the attempt's state lock held: it may call
    /// [`Attempt::abort`] (the lock is then released when `f` returns) and
    /// the attempt's getters; calls that would need the lent guard
    /// (`with_write`, the release and reacquire methods) fail at once with
    /// `Misuse`. Writes of other tasks wait for it.
    ///
    /// # Errors
    /// `Takeover { phase: write }` when the check fails or `f`'s write is
    /// refused by the fence (the lock was lost); the error of `f`;
    /// acquisition errors when a short lock cannot be had; `Cancelled` after
    /// dispose, after an abort outside cleanup, or when aborted while
    /// acquiring the short lock; `Misuse` when called from inside `f`.
    ///
    /// The future is `Send` when `T` is: `f`'s result waits for the
    /// snapshot after it.
    ///
    /// # Cancel safety
    /// Cancel safe: `f` runs only after its check. Dropped during the
    /// snapshot after `f` (a store that suspends there), the write ends as
    /// one whose closure panicked: the lock is released with the fence
    /// armed.
    pub async fn with_write<T>(
        &self,
        f: impl FnOnce(&mut B::Store, &Guard<B>) -> Result<T>,
    ) -> Result<T> {
        let mut w = self.start_write("with_write").await?;
        let result = match w.parts() {
            Some((t, g)) => {
                let _user = InUserCode::enter(self.inner.id());
                f(t, g)
            }
            None => Err(self.inner.disposed("with_write")),
        };
        self.finish_write(w, result, "with_write").await
    }

    /// Appends `entries`, one line each, as one write of the attempt: the
    /// store's fenced append, run exactly as [`Attempt::with_write`] runs a
    /// closure. The transcript is checked first (a change the attempt
    /// cannot accept is a takeover, and nothing is written), with the held
    /// lock or a short one taken while released; the file after the append
    /// is recorded as the attempt's own; after a takeover, an abort (outside
    /// cleanup) or dispose nothing is written and an error says why. Unlike
    /// a closure's writes it runs against the backend seam
    /// ([`TranscriptStore::append`]), so it works for every
    /// [`StoreBackend`].
    ///
    /// # Errors
    /// As [`Attempt::with_write`], with the store's errors in place of the
    /// closure's: `Takeover { phase: write }` when the check fails or the
    /// append is refused by the fence (the lock was lost); `Poisoned`, `Io`
    /// from the store (also when an entry cannot be serialized); acquisition
    /// errors of a short lock; `Cancelled` after dispose, after an abort
    /// outside cleanup, or when aborted while acquiring the short lock;
    /// `Misuse` from inside a write closure or a classifier.
    ///
    /// # Cancel safety
    /// Dropped before the store's operation begins (while it waits for the
    /// attempt's other calls, or for a short lock), nothing is written or
    /// held. Dropped while the operation is in flight (the file store's
    /// never suspends, but it may wait for another operation on the same
    /// lease; a database's awaits its server), the write ends as a write
    /// closure that panics does: the lock is released with the fence armed,
    /// and whatever landed (the whole batch or nothing) is the attempt's own.
    pub async fn append(&self, entries: &[Value], durability: Durability) -> Result<Appended> {
        let raw = self.inner.raw_entries(entries)?;
        self.append_raw(&raw, durability).await
    }

    /// Appends entries given as JSON text ([`RawEntries`]), byte for byte,
    /// exactly as [`Attempt::append`] does.
    ///
    /// # Errors
    /// As [`Attempt::append`].
    ///
    /// # Cancel safety
    /// As [`Attempt::append`].
    pub async fn append_raw(
        &self,
        entries: &RawEntries,
        durability: Durability,
    ) -> Result<Appended> {
        let mut w = self.start_write("append").await?;
        let result = match w.parts() {
            Some((t, g)) => {
                let appended = g
                    .with_lease(|held| async move { t.append(&held, entries, durability).await })
                    .await;
                if let Ok(a) = &appended {
                    g.note_appended(entries.len(), a.len);
                }
                appended
            }
            None => Err(self.inner.disposed("append")),
        };
        self.finish_write(w, result, "append").await
    }

    /// Replaces the transcript with `entries`, atomically and durably, as a
    /// write of the attempt (see [`Attempt::append`]): the rewritten file
    /// is the attempt's own.
    ///
    /// # Errors
    /// As [`Attempt::append`].
    ///
    /// # Cancel safety
    /// As [`Attempt::append`].
    pub async fn rewrite(&self, entries: &[Value]) -> Result<()> {
        let raw = self.inner.raw_entries(entries)?;
        let mut w = self.start_write("rewrite").await?;
        let result = match w.parts() {
            Some((t, g)) => {
                let raw = &raw;
                g.with_lease(|held| async move { t.rewrite(&held, raw).await })
                    .await
            }
            None => Err(self.inner.disposed("rewrite")),
        };
        self.finish_write(w, result, "rewrite").await
    }

    /// Keeps the first `keep` entries of the transcript, as a write of the
    /// attempt (see [`Attempt::append`]).
    ///
    /// # Errors
    /// As [`Attempt::append`].
    ///
    /// # Cancel safety
    /// As [`Attempt::append`].
    pub async fn truncate(&self, keep: usize) -> Result<()> {
        let mut w = self.start_write("truncate").await?;
        let result = match w.parts() {
            Some((t, g)) => {
                g.with_lease(|held| async move { t.truncate(&held, keep).await })
                    .await
            }
            None => Err(self.inner.disposed("truncate")),
        };
        self.finish_write(w, result, "truncate").await
    }

    /// Reads the whole transcript (every complete entry, and a torn tail if
    /// there is one) through the same path as a write (see
    /// [`Attempt::append`]): checked first, under the held lock or a short
    /// one taken while released. What it returns is what the attempt's
    /// fence vouches for: its own writes and the foreign entries it
    /// accepted (handed to [`AttemptOptions::on_resync`] first), never an
    /// unaccepted change. After a takeover, an abort (outside cleanup) or
    /// dispose it reads nothing and returns the error a write would.
    ///
    /// # Errors
    /// As [`Attempt::append`]; `InvalidEntry` for a line that is not JSON.
    ///
    /// # Cancel safety
    /// Cancel safe: it changes nothing. Dropped while the read is in flight
    /// (never, for the file store), the lock is released as after a write
    /// (see [`Attempt::append`]).
    pub async fn read(&self) -> Result<Read> {
        // Reading needs no lease; it runs under the lock all the same, so
        // that what it returns is what the fence vouches for.
        let mut w = self.start_write("read").await?;
        let result = match w.parts() {
            Some((t, _)) => t.read().await,
            None => Err(self.inner.disposed("read")),
        };
        self.finish_write(w, result, "read").await
    }

    /// The first half of every write (`what` names it in errors): waits
    /// for the attempt's other writes and acquisitions, refuses a write
    /// after a takeover, dispose or an abort outside cleanup, takes a short
    /// lock when released, checks the transcript and lends it and the guard
    /// to the write. Hands the accepted foreign entries to the hook.
    async fn start_write(&self, what: &'static str) -> Result<Writing<'_, B>> {
        let deadline = deadline_of(self.inner.opts.lock.timeout);
        let aborts = self.inner.enter(what, |_| {})?;
        // Wait for other writes and acquisitions of this attempt, then go by
        // the state they leave.
        let held = {
            let mut st = self.inner.settled(deadline, aborts, "write").await?;
            if st.state != State::TakenOver {
                self.inner.refuse_after_abort(&st, what)?;
            }
            match st.state {
                State::TakenOver => return Err(self.inner.sticky(&st, TakeoverPhase::Write)),
                State::Disposed => return Err(self.inner.disposed(what)),
                State::Held | State::Cleanup if st.guard.is_none() => {
                    return Err(self.inner.disposed(what))
                }
                State::Held | State::Cleanup => {
                    let guard = st.guard.take();
                    Some(self.inner.lend(&mut st, guard))
                }
                State::Released => {
                    st.acquiring += 1;
                    None
                }
            }
        };
        let (mut lent, resync, short) = match held {
            Some(mut lent) => {
                // The check runs outside the state lock, on the lent
                // transcript, awaiting the store; the snapshot after `f`
                // becomes the held view.
                let verdict = watched(
                    self.inner
                        .judge(lent.transcript.as_mut(), lent.fence.as_ref()),
                    &lent.panicked,
                )
                .await;
                let (lent, resync) = self.held_checked(lent, verdict, aborts, what)?;
                (lent, resync, false)
            }
            None => {
                let (lent, resync) = self.short_lock(aborts, deadline, what).await?;
                (lent, resync, true)
            }
        };
        lent.checked = true;
        self.inner.accepted(&resync);
        if !resync.is_empty() {
            // The hook may have disposed or aborted the attempt: then the
            // write does not happen, and the loan goes back as after a
            // cancelled check (the accepted entries stay to be judged).
            let st = lock(&self.inner.st);
            let ended = if st.state == State::Disposed {
                Some(self.inner.disposed(what))
            } else {
                (st.aborts != aborts).then(|| self.inner.cancelled(what))
            };
            if let Some(e) = ended {
                drop(st);
                lent.checked = false;
                return Err(e);
            }
        }
        Ok(Writing { lent, short })
    }

    /// After the check of a write under the held lock: looks again before
    /// `f`. A takeover, or an abort or dispose during the check, ends the
    /// write here (the loan goes back, the error says why); otherwise the
    /// write goes on with the loan and the accepted entries.
    fn held_checked<'a>(
        &'a self,
        mut lent: Lent<'a, B>,
        verdict: std::result::Result<Resync, TakeoverReason>,
        aborts: u64,
        what: &'static str,
    ) -> Result<(Lent<'a, B>, Resync)> {
        let mut st = lock(&self.inner.st);
        // (A pending release that is not an abort, an idle wait from
        // another task, happens after the write.)
        if verdict.is_ok() && st.aborts == aborts && st.state != State::Disposed {
            drop(st);
            return Ok((lent, verdict.unwrap_or_default()));
        }
        st.guard = self.inner.give_back(&mut st, &mut lent);
        let e = match verdict {
            Err(reason) if st.state != State::Disposed => {
                st.after_write = AfterWrite::Keep;
                self.inner
                    .mark_taken_over(&mut st, TakeoverPhase::Write, reason)
            }
            _ => {
                let e = if st.state == State::Disposed {
                    self.inner.disposed(what)
                } else {
                    self.inner.cancelled(what)
                };
                self.inner.after_lending(&mut st);
                e
            }
        };
        drop(st);
        drop(lent);
        self.inner.events.notify_waiters();
        Err(e)
    }

    /// The second half of every write, with its result: gives the
    /// transcript back, records the file after the write as the attempt's
    /// own (whether the write succeeded or not), turns a write the fence
    /// refused into a takeover, and releases the short lock, or the held
    /// one when an abort or dispose came meanwhile.
    async fn finish_write<T>(
        &self,
        w: Writing<'_, B>,
        result: Result<T>,
        what: &'static str,
    ) -> Result<T> {
        let Writing { mut lent, short } = w;
        // Whatever `f` wrote is ours: the fence now describes the file after
        // it, whether `f` succeeded or not. The snapshot runs on the lent
        // transcript, outside the state lock (dropped meanwhile, the write
        // ends as one whose closure panicked).
        let fresh = match lent.guard.as_ref().map(Guard::epoch) {
            Some(epoch) => snapshot_of::<B>(lent.transcript.as_mut(), epoch).await,
            None => None,
        };
        let (Some(guard), Some(transcript)) = (lent.guard.take(), lent.transcript.take()) else {
            return Err(self.inner.disposed(what));
        };
        drop(lent);
        let mut st = lock(&self.inner.st);
        st.writer = None;
        st.transcript = Some(transcript);
        let after = std::mem::replace(&mut st.after_write, AfterWrite::Keep);
        st.fence = fresh;
        let refused = matches!(&result, Err(Error::Fenced { .. } | Error::Revoked { .. }));
        let out = if refused && st.state != State::Disposed {
            // A fenced write refused: the lock was lost (revoked, or
            // reclaimed by another holder). That is a takeover.
            st.guard = Some(guard);
            let (error, code) = result
                .err()
                .map(|e| (e.to_string(), e.code().to_owned()))
                .unwrap_or_default();
            let reason = TakeoverReason::LockLost { error, code };
            Err(self
                .inner
                .mark_taken_over(&mut st, TakeoverPhase::Write, reason))
        } else {
            match (short, after, st.state) {
                // The short lock goes; the fence stays armed.
                (true, _, _) => release_quietly(guard, "short write lock"),
                (false, AfterWrite::Dispose, _) => release_quietly(guard, "dispose"),
                (false, AfterWrite::Release, State::Held | State::Cleanup) => {
                    st.guard = Some(guard);
                    let _ = self.inner.release_held(&mut st, "abort during a write");
                    st.state = State::Released;
                }
                (false, _, State::Held | State::Cleanup) => st.guard = Some(guard),
                (false, _, _) => release_quietly(guard, "write after the attempt ended"),
            }
            result
        };
        drop(st);
        self.inner.events.notify_waiters();
        if out.is_ok() {
            self.inner.progress();
        }
        out
    }

    /// Takes a short lock for a write while released (the in-flight count
    /// was raised by the caller): checks the fence and lends the guard and
    /// transcript; `Cancelled` when the attempt was disposed or aborted
    /// meanwhile.
    async fn short_lock(
        &self,
        aborts: u64,
        deadline: Option<Instant>,
        what: &'static str,
    ) -> Result<(Lent<'_, B>, Resync)> {
        let in_flight = InFlight(&self.inner);
        let acquire = self.inner.acquire_until(deadline);
        let aborted = self.inner.aborted(aborts, "write");
        let acquired = tokio::select! {
            r = acquire => r,
            e = aborted => Err(e),
        };
        // The state lock's guard must not live across the await below.
        let mut lent = {
            let mut st = lock(&self.inner.st);
            if st.aborts != aborts {
                drop(st);
                drop(in_flight);
                if let Ok(g) = acquired {
                    release_quietly(g, "write after an abort");
                }
                return Err(self.inner.cancelled("write"));
            }
            let acquired = acquired?;
            match st.state {
                State::Released => {}
                State::TakenOver => {
                    let e = self.inner.sticky(&st, TakeoverPhase::Write);
                    drop(st);
                    drop(in_flight);
                    release_quietly(acquired, "write after a takeover");
                    return Err(e);
                }
                _ => {
                    drop(st);
                    drop(in_flight);
                    release_quietly(acquired, "write after dispose");
                    return Err(self.inner.disposed(what));
                }
            }
            // Lend the transcript first: the check runs outside the state lock.
            let lent = self.inner.lend(&mut st, Some(acquired));
            drop(st);
            drop(in_flight);
            lent
        };
        let verdict = watched(
            self.inner
                .judge(lent.transcript.as_mut(), lent.fence.as_ref()),
            &lent.panicked,
        )
        .await;
        // Look again before `f`: a takeover, or an abort or dispose during
        // the check, ends the write here, and the short lock goes.
        let mut st = lock(&self.inner.st);
        if verdict.is_ok() && st.aborts == aborts && st.state == State::Released {
            drop(st);
            return Ok((lent, verdict.unwrap_or_default()));
        }
        st.after_write = AfterWrite::Keep;
        let guard = self.inner.give_back(&mut st, &mut lent);
        let e = match verdict {
            _ if st.state == State::Disposed => self.inner.disposed(what),
            _ if st.aborts != aborts => self.inner.cancelled(what),
            Err(reason) => self
                .inner
                .mark_taken_over(&mut st, TakeoverPhase::Write, reason),
            Ok(_) => self.inner.sticky(&st, TakeoverPhase::Write),
        };
        drop(st);
        drop(lent);
        self.inner.events.notify_waiters();
        if let Some(g) = guard {
            release_quietly(g, "write ended before it began");
        }
        Err(e)
    }

    /// Aborts the attempt (user stop, timeout, stuck recovery, yield): the
    /// held lock is released at once, with the fence armed, without waiting
    /// for anything (from inside a write closure, or while another task's
    /// write runs, it is released when that write returns); waits of the
    /// attempt in flight give up with `Cancelled`; the session is handed to
    /// the next attempt of this process waiting for it. Cleanup may still
    /// run after it, checked by the fence, once the attempts of this process
    /// that took the session meanwhile are done (it queues for the session
    /// again, within [`AttemptOptions::owner_timeout`]). Failures are
    /// logged, never returned. The release never waits for the store (see
    /// [store calls](crate::attempt#store-calls)): for a store whose check suspends,
    /// the held view becomes the fence unchecked.
    pub fn abort(&self, kind: AbortKind) {
        self.inner.abort(kind);
    }

    /// Enters cleanup: adopts the held lock (after checking that nobody
    /// changed the transcript while it was held, `phase: cleanup`), or
    /// reacquires it and checks the fence. If another call of this attempt
    /// is acquiring, waits for that one and adopts its outcome. After a
    /// takeover, or if the lock cannot be had, returns a no-op lock: cleanup
    /// runs, its writes are skipped.
    ///
    /// # Errors
    /// `Io`; `Cancelled` when aborted while acquiring; `Misuse` from inside
    /// a write closure. Takeovers are reported through
    /// [`CleanupLock::NoOp`] and [`Attempt::is_taken_over`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn acquire_for_cleanup(&self) -> Result<CleanupLock> {
        let deadline = deadline_of(self.inner.opts.lock.timeout);
        let aborts = self.inner.enter("acquire_for_cleanup", |st| {
            st.turn = None;
            self.inner.end_prompt(st);
        })?;
        let held = {
            let mut st = self.inner.settled(deadline, aborts, "cleanup").await?;
            match st.state {
                State::Held => {
                    // The check, and the snapshot that becomes the held view,
                    // run on the lent transcript outside the state lock.
                    let epoch = st.guard.as_ref().map(Guard::epoch);
                    Some((self.inner.lend_check(&mut st), epoch))
                }
                State::Cleanup => {
                    return Ok(if st.guard.is_some() {
                        CleanupLock::Held
                    } else {
                        CleanupLock::NoOp
                    });
                }
                State::TakenOver | State::Disposed => return Ok(CleanupLock::NoOp),
                State::Released => None,
            }
        };
        if let Some((mut check, epoch)) = held {
            let (verdict, fresh) = self.inner.check_lent(&mut check, epoch).await;
            return self.adopt_for_cleanup(check, verdict, fresh, aborts);
        }
        match self.reacquire(TakeoverPhase::Cleanup, deadline).await {
            Ok(_) => {
                let mut st = lock(&self.inner.st);
                if st.state == State::Held {
                    st.state = State::Cleanup;
                    Ok(CleanupLock::Held)
                } else {
                    Ok(CleanupLock::NoOp)
                }
            }
            Err(Error::Takeover { .. }) => Ok(CleanupLock::NoOp),
            Err(e) => Err(e),
        }
    }

    /// After the check of the held lock at cleanup: the loan goes back, an
    /// abort or dispose that came meanwhile happens, and the lock is
    /// adopted for cleanup (with the fresh view) or the takeover recorded.
    fn adopt_for_cleanup(
        &self,
        mut check: Checking<'_, B>,
        verdict: std::result::Result<Resync, TakeoverReason>,
        fresh: Option<View<B>>,
        aborts: u64,
    ) -> Result<CleanupLock> {
        let mut st = lock(&self.inner.st);
        Inner::give_back_check(&mut st, &mut check);
        drop(check);
        self.inner.after_lending(&mut st);
        if st.aborts != aborts {
            return Err(self.inner.cancelled("cleanup"));
        }
        if st.state != State::Held {
            return Ok(CleanupLock::NoOp);
        }
        match verdict {
            Ok(resync) => {
                if fresh.is_some() {
                    st.fence = fresh;
                }
                st.state = State::Cleanup;
                drop(st);
                self.inner.accepted(&resync);
                Ok(CleanupLock::Held)
            }
            Err(reason) => {
                let _ = self
                    .inner
                    .mark_taken_over(&mut st, TakeoverPhase::Cleanup, reason);
                Ok(CleanupLock::NoOp)
            }
        }
    }

    /// Ends the attempt: checks once more that nobody changed the transcript
    /// while the attempt held it, releases whatever is held, vacates its
    /// turns (the next attempt of this process on the session may begin)
    /// and unregisters it. Idempotent; a disposed attempt never reacquires,
    /// even if a reacquire was in flight. It ends the attempt for every
    /// handle: the other clones' later calls find it disposed. Dropping the
    /// last handle disposes it too (see [Clones](Attempt#clones)).
    ///
    /// The check never waits for the store (see
    /// [store calls](crate::attempt#store-calls)): a store whose check suspends is not
    /// checked at dispose (the lock goes all the same).
    ///
    /// # Errors
    /// `Takeover { phase: dispose }` when the transcript was changed under
    /// the held lock after the attempt's last write (the lock is released
    /// all the same).
    pub fn dispose(&self) -> Result<()> {
        self.inner.dispose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Attempt>();
        check::<AttemptOptions>();
        check::<Resync>();
    }

    #[test]
    fn futures_are_send() {
        fn check_send<T: Send>(_: &T) {}
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("s.jsonl");
        rt.block_on(async {
            let a = Attempt::begin_file(&session, AttemptOptions::default())
                .await
                .expect("begin");
            check_send(&a.release_for_prompt());
            check_send(&a.reacquire_after_prompt());
            check_send(&a.acquire_for_cleanup());
            check_send(&a.with_write(|_, _| Ok(())));
            check_send(&a.around_prompt(async {}));
            check_send(&Attempt::begin_file(&session, AttemptOptions::default()));
            a.dispose().expect("dispose");
        });
    }
}
