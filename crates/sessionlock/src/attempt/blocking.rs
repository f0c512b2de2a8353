//! The blocking twin of the attempt controller, for callers without an
//! async runtime (as [`SessionLock::acquire`] is the twin of
//! [`SessionLock::acquire_async`]).
//!
//! [`Attempt`] has the async controller's methods, without `async`, and the
//! same semantics: it *is* an async [`Attempt`](super::Attempt) (the two
//! convert into each other for free, and clones of either share one
//! attempt), whose calls it drives to completion on the calling thread.
//!
//! # The runtime
//! The controller's waits (for the session, the prompt turn, the lock, an
//! acquisition in flight, an abort) are tokio timers and notifications, so
//! they need a tokio runtime with time and I/O enabled. The blocking twin
//! brings its own: one per process, built the first time a blocking call
//! needs it (one worker thread, named `sessionlock-attempt`, which drives
//! the timers and I/O; the futures themselves run on the calling thread),
//! and kept for the life of the process.
//!
//! # Inside an async runtime
//! A blocking call made where a tokio runtime is current (inside a task,
//! inside `block_on`, on a runtime's blocking pool, or from code the
//! attempt calls back: a write closure, a classifier, the resync hook) is
//! refused at once with [`Error::Misuse`]: blocking a runtime's thread can
//! stall the very tasks the call would wait for (another attempt of this
//! process holding the session, on a current-thread runtime), a deadlock
//! that would otherwise show up only under load. Use the async
//! [`Attempt`](super::Attempt) there; from a blocking-pool thread,
//! `Handle::current().block_on(attempt.to_async().append(..))` works. The
//! methods that never wait ([`Attempt::abort`], [`Attempt::dispose`],
//! [`Attempt::release_for_idle_wait`] and the getters) work anywhere.
//!
//! [`SessionLock::acquire`]: crate::SessionLock::acquire
//! [`SessionLock::acquire_async`]: crate::SessionLock::acquire_async

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use tokio::runtime::Runtime;

use super::{AttemptOptions, CleanupLock, Prompted, Resync, State, VacateOnDrop};
use crate::attempt::runs::{AbortHandle, AbortKind};
use crate::backend::file::FileBackend;
use crate::backend::StoreBackend;
use crate::error::{Error, Result, TakeoverPhase, TakeoverReason};
use crate::lock::acquire::SessionLock;
use crate::lock::guard::Guard;
use crate::store::{Appended, Durability, RawEntries, Read};

/// The name of the blocking runtime's worker thread.
const THREAD_NAME: &str = "sessionlock-attempt";

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The process-wide runtime of blocking attempts, built on first use.
fn runtime() -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(THREAD_NAME)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start runtime thread", THREAD_NAME, e))?;
    // Two first calls may race: one runtime is kept, the other shut down.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Whether a tokio runtime is current on this thread (see the
/// [module documentation](self#inside-an-async-runtime)).
fn in_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// Drives `f`, one of the async controller's calls, to completion on this
/// thread; refuses where a tokio runtime is current.
fn run<T>(what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    if in_runtime() {
        return Err(Error::Misuse {
            what: format!(
                "blocking attempt call {what} inside an async runtime, where it would block the \
                 runtime's thread; use the async attempt (sessionlock::attempt::Attempt)"
            ),
        });
    }
    runtime()?.handle().block_on(f)
}

/// The blocking twin of the attempt controller (see the
/// [module documentation](self)): the async [`Attempt`](super::Attempt)'s
/// methods, blocking, with the same semantics, states and errors.
///
/// Cheap to clone; clones share one attempt, as those of the async
/// controller do ([Clones](super::Attempt#clones)): dropping the last
/// handle, blocking or async, disposes it.
#[derive(Clone)]
#[must_use = "dropping the last handle of an attempt disposes it and releases its lock"]
pub struct Attempt<B: StoreBackend = FileBackend> {
    inner: super::Attempt<B>,
}

impl<B: StoreBackend> std::fmt::Debug for Attempt<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<B: StoreBackend> From<super::Attempt<B>> for Attempt<B> {
    /// The blocking twin of an async attempt: the same attempt.
    fn from(inner: super::Attempt<B>) -> Self {
        Attempt { inner }
    }
}

impl<B: StoreBackend> From<Attempt<B>> for super::Attempt<B> {
    /// The async controller of a blocking attempt: the same attempt.
    fn from(a: Attempt<B>) -> Self {
        a.inner
    }
}

impl Attempt<FileBackend> {
    /// Begins an attempt on `session` with the default file backend, as
    /// [`Attempt::begin_file`](super::Attempt::begin_file), blocking.
    ///
    /// # Errors
    /// As [`Attempt::begin`]; `Misuse` inside an async runtime.
    pub fn begin_file(session: impl AsRef<Path>, opts: AttemptOptions) -> Result<Self> {
        run("begin_file", super::Attempt::begin_file(session, opts)).map(Attempt::from)
    }
}

impl<B: StoreBackend> Attempt<B> {
    /// Begins an attempt, as [`Attempt::begin`](super::Attempt::begin),
    /// blocking: waits for this process's other attempt on the session to
    /// end (unless [`AttemptOptions::overlap`]), acquires the lock and opens
    /// the transcript.
    ///
    /// # Errors
    /// As [`Attempt::begin`](super::Attempt::begin); `Misuse` inside an
    /// async runtime; `Io` when the blocking runtime cannot be started.
    pub fn begin(
        locks: &SessionLock<B>,
        session: impl AsRef<B::Name>,
        opts: AttemptOptions,
    ) -> Result<Self> {
        run("begin", super::Attempt::begin(locks, session, opts)).map(Attempt::from)
    }

    /// The async controller of this attempt: another handle to it.
    pub fn to_async(&self) -> super::Attempt<B> {
        self.inner.clone()
    }

    /// The canonical session file.
    pub fn session(&self) -> &Path {
        self.inner.session()
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.inner.state()
    }

    /// The kind of the first abort, once the attempt was aborted.
    pub fn aborted(&self) -> Option<AbortKind> {
        self.inner.aborted()
    }

    /// Whether a takeover was detected (sticky).
    pub fn is_taken_over(&self) -> bool {
        self.inner.is_taken_over()
    }

    /// The takeover, once one was detected: where, and why.
    pub fn takeover(&self) -> Option<(TakeoverPhase, TakeoverReason)> {
        self.inner.takeover()
    }

    /// A handle the active-run registry can abort this attempt through.
    pub fn abort_handle(&self) -> Arc<dyn AbortHandle> {
        self.inner.abort_handle()
    }

    /// Records progress (model output) for the stuck detector.
    pub fn progress(&self) {
        self.inner.progress();
    }

    /// Releases the lock and takes the prompt turn, as
    /// [`Attempt::release_for_prompt`](super::Attempt::release_for_prompt).
    ///
    /// # Errors
    /// As [`Attempt::release_for_prompt`](super::Attempt::release_for_prompt);
    /// `Misuse` inside an async runtime.
    pub fn release_for_prompt(&self) -> Result<()> {
        run("release_for_prompt", self.inner.release_for_prompt())
    }

    /// Runs `model_call` in a prompt window, as
    /// [`Attempt::around_prompt`](super::Attempt::around_prompt): releases
    /// the lock (and takes the prompt turn) before it, and reacquires and
    /// checks the fence after it, whatever it returned; it runs exactly
    /// once.
    ///
    /// One difference is forced by blocking: a closure cannot be dropped
    /// halfway, so an abort while it runs does not end it. It runs to its
    /// end, and the reacquire after it is then refused: its output comes
    /// back with `reacquired` = `Cancelled`, and the lock is not taken
    /// again. Make the call itself give up on an abort if it can hang.
    ///
    /// # Errors
    /// As [`Attempt::around_prompt`](super::Attempt::around_prompt) (then
    /// `model_call` does not run); `Misuse` inside an async runtime.
    ///
    /// # Panics
    /// A panic in `model_call` propagates; the prompt window ends on the way
    /// (the turn is vacated, the attempt stays released).
    pub fn around_prompt<T>(&self, model_call: impl FnOnce() -> T) -> Result<Prompted<T>> {
        run("around_prompt", self.inner.open_prompt_window())?;
        let mut vacate = VacateOnDrop(Some(&*self.inner.inner));
        let output = model_call();
        vacate.0 = None;
        run("around_prompt", self.inner.close_prompt_window(output))
    }

    /// Releases the lock for an idle wait, as
    /// [`Attempt::release_for_idle_wait`](super::Attempt::release_for_idle_wait).
    /// Never waits; works anywhere.
    ///
    /// # Errors
    /// As [`Attempt::release_for_idle_wait`](super::Attempt::release_for_idle_wait).
    pub fn release_for_idle_wait(&self) -> Result<()> {
        self.inner.release_for_idle_wait()
    }

    /// Reacquires after a prompt window and checks the fence, as
    /// [`Attempt::reacquire_after_prompt`](super::Attempt::reacquire_after_prompt).
    ///
    /// # Errors
    /// As [`Attempt::reacquire_after_prompt`](super::Attempt::reacquire_after_prompt);
    /// `Misuse` inside an async runtime.
    pub fn reacquire_after_prompt(&self) -> Result<Resync> {
        run(
            "reacquire_after_prompt",
            self.inner.reacquire_after_prompt(),
        )
    }

    /// Runs a transcript mutation under the lock, as
    /// [`Attempt::with_write`](super::Attempt::with_write).
    ///
    /// # Errors
    /// As [`Attempt::with_write`](super::Attempt::with_write); `Misuse`
    /// inside an async runtime (and so from inside `f`).
    pub fn with_write<T>(
        &self,
        f: impl FnOnce(&mut B::Store, &Guard<B>) -> Result<T>,
    ) -> Result<T> {
        run("with_write", self.inner.with_write(f))
    }

    /// Appends `entries` as a write of the attempt, as
    /// [`Attempt::append`](super::Attempt::append).
    ///
    /// # Errors
    /// As [`Attempt::append`](super::Attempt::append); `Misuse` inside an
    /// async runtime.
    pub fn append(&self, entries: &[Value], durability: Durability) -> Result<Appended> {
        run("append", self.inner.append(entries, durability))
    }

    /// Appends entries given as JSON text, as
    /// [`Attempt::append_raw`](super::Attempt::append_raw).
    ///
    /// # Errors
    /// As [`Attempt::append`](super::Attempt::append); `Misuse` inside an
    /// async runtime.
    pub fn append_raw(&self, entries: &RawEntries, durability: Durability) -> Result<Appended> {
        run("append_raw", self.inner.append_raw(entries, durability))
    }

    /// Replaces the transcript, as
    /// [`Attempt::rewrite`](super::Attempt::rewrite).
    ///
    /// # Errors
    /// As [`Attempt::append`](super::Attempt::append); `Misuse` inside an
    /// async runtime.
    pub fn rewrite(&self, entries: &[Value]) -> Result<()> {
        run("rewrite", self.inner.rewrite(entries))
    }

    /// Keeps the first `keep` entries, as
    /// [`Attempt::truncate`](super::Attempt::truncate).
    ///
    /// # Errors
    /// As [`Attempt::append`](super::Attempt::append); `Misuse` inside an
    /// async runtime.
    pub fn truncate(&self, keep: usize) -> Result<()> {
        run("truncate", self.inner.truncate(keep))
    }

    /// Reads the transcript as the attempt's fence vouches for it, as
    /// [`Attempt::read`](super::Attempt::read).
    ///
    /// # Errors
    /// As [`Attempt::read`](super::Attempt::read); `Misuse` inside an async
    /// runtime.
    pub fn read(&self) -> Result<Read> {
        run("read", self.inner.read())
    }

    /// Aborts the attempt, as [`Attempt::abort`](super::Attempt::abort).
    /// Never waits; works anywhere.
    pub fn abort(&self, kind: AbortKind) {
        self.inner.abort(kind);
    }

    /// Enters cleanup, as
    /// [`Attempt::acquire_for_cleanup`](super::Attempt::acquire_for_cleanup).
    ///
    /// # Errors
    /// As [`Attempt::acquire_for_cleanup`](super::Attempt::acquire_for_cleanup);
    /// `Misuse` inside an async runtime.
    pub fn acquire_for_cleanup(&self) -> Result<CleanupLock> {
        run("acquire_for_cleanup", self.inner.acquire_for_cleanup())
    }

    /// Ends the attempt for every handle, as
    /// [`Attempt::dispose`](super::Attempt::dispose). Never waits; works
    /// anywhere.
    ///
    /// # Errors
    /// As [`Attempt::dispose`](super::Attempt::dispose).
    pub fn dispose(&self) -> Result<()> {
        self.inner.dispose()
    }
}
