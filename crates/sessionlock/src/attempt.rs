//! The attempt controller (spec §8): one agent turn's lock lifecycle.
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
//! model call (`release_for_prompt`), and on every abort, error, panic or
//! cancellation. While it is released, other lanes may write; the fence
//! taken at release tells, at the next acquisition, whether what they wrote
//! is acceptable (benign appends) or a takeover, which is sticky.
//!
//! The state mutex is never held across an await, so [`Attempt::abort`]
//! never waits for an acquisition in flight.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::acquire::{LockOptions, SessionLock};
use crate::backend::file::FileBackend;
use crate::backend::{Store, TranscriptBackend};
use crate::classify::{AcceptNothing, ChangeClassifier};
use crate::error::{Error, Result, TakeoverPhase};
use crate::fence::Change;
use crate::guard::Guard;
use crate::runs::{AbortHandle, AbortKind};
use crate::turns::{PromptTurn, PromptTurns};

/// Where an attempt is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Options of an attempt.
#[derive(Clone)]
pub struct AttemptOptions {
    /// Lock options for every acquisition of the attempt.
    pub lock: LockOptions,
    /// Decides which foreign appends are benign.
    pub classifier: Arc<dyn ChangeClassifier>,
}

impl std::fmt::Debug for AttemptOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptOptions")
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl Default for AttemptOptions {
    fn default() -> Self {
        AttemptOptions {
            lock: LockOptions::default(),
            classifier: Arc::new(AcceptNothing),
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
}

/// What [`Attempt::acquire_for_cleanup`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupLock {
    /// The lock is held; cleanup writes land.
    Held,
    /// After a takeover (or dispose): cleanup runs, writes are skipped.
    NoOp,
}

struct St<B: TranscriptBackend> {
    state: State,
    guard: Option<Guard<B>>,
    transcript: B::Store,
    /// Armed while released: the snapshot, or why taking it failed.
    fence: Option<std::result::Result<<B::Store as Store>::Fence, String>>,
    turn: Option<PromptTurn>,
    takeover: Option<(TakeoverPhase, String)>,
    /// Counts aborts, so an acquisition in flight during one gives up its
    /// lock when it resolves instead of holding it again.
    aborts: u64,
}

struct Inner<B: TranscriptBackend> {
    locks: SessionLock<B>,
    opts: AttemptOptions,
    session: PathBuf,
    turns: &'static PromptTurns,
    st: Mutex<St<B>>,
}

/// One agent turn's lock lifecycle. Dropping it disposes it.
#[must_use = "dropping an attempt disposes it and releases its lock"]
pub struct Attempt<B: TranscriptBackend = FileBackend> {
    inner: Arc<Inner<B>>,
}

impl<B: TranscriptBackend> std::fmt::Debug for Attempt<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("session", &self.inner.session)
            .field("state", &self.state())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Releases a guard, logging (never throwing) a failure: the lock is then
/// reclaimable by the next waiter anyway.
fn release_quietly<B: crate::backend::Backend>(guard: Guard<B>, why: &str) {
    let path = guard.lock_path().to_owned();
    match guard.release() {
        Ok(()) => {}
        // Already reported where the loss was detected.
        Err(e @ Error::Revoked { .. }) => {
            tracing::debug!(lock = %path.display(), error = %e, "session lock was already lost ({why})");
        }
        Err(e) => {
            tracing::warn!(lock = %path.display(), error = %e, "cannot release session lock ({why})");
        }
    }
}

impl<B: TranscriptBackend> Inner<B> {
    fn takeover_error(&self, phase: TakeoverPhase, detail: String) -> Error {
        Error::Takeover {
            session: self.session.clone(),
            phase,
            detail,
        }
    }

    /// Arms the fence and releases the held lock. The lock is released even
    /// if the snapshot fails; the snapshot error is returned afterwards.
    fn release_held(&self, st: &mut St<B>, why: &str) -> Option<Error> {
        let guard = st.guard.take()?;
        let (fence, err) = match st.transcript.snapshot(guard.epoch()) {
            Ok(f) => (Ok(f), None),
            Err(e) => (Err(e.to_string()), Some(e)),
        };
        st.fence = Some(fence);
        release_quietly(guard, why);
        if st.state == State::Held {
            st.state = State::Released;
        }
        err
    }

    /// Checks the armed fence against the transcript now.
    fn verify(&self, st: &mut St<B>) -> std::result::Result<(), String> {
        match st.fence.take() {
            None => Ok(()),
            Some(Err(why)) => Err(format!("fence unavailable ({why})")),
            Some(Ok(fence)) => match st.transcript.check(&fence, self.opts.classifier.as_ref()) {
                Ok(Change::Unchanged) | Ok(Change::Benign { .. }) => Ok(()),
                Ok(Change::Takeover(t)) => Err(t.to_string()),
                Err(e) => Err(format!("cannot check the fence: {e}")),
            },
        }
    }

    fn mark_taken_over(&self, st: &mut St<B>, phase: TakeoverPhase, detail: String) -> Error {
        tracing::warn!(session = %self.session.display(), %phase, %detail, "takeover detected");
        st.state = State::TakenOver;
        st.fence = None;
        st.turn = None;
        if let Some(g) = st.guard.take() {
            release_quietly(g, "takeover");
        }
        st.takeover = Some((phase, detail.clone()));
        self.takeover_error(phase, detail)
    }

    fn abort(&self, kind: AbortKind) {
        let mut st = lock(&self.st);
        st.aborts += 1;
        st.turn = None;
        if st.state == State::Held || st.state == State::Cleanup {
            if let Some(e) = self.release_held(&mut st, "abort") {
                tracing::warn!(session = %self.session.display(), ?kind, error = %e, "fence snapshot failed during abort; lock released");
            }
            if st.state == State::Cleanup {
                st.state = State::Released;
            }
        }
        tracing::debug!(session = %self.session.display(), ?kind, "attempt aborted");
    }

    fn dispose(&self) {
        let mut st = lock(&self.st);
        st.turn = None;
        if let Some(g) = st.guard.take() {
            release_quietly(g, "dispose");
        }
        st.fence = None;
        if st.state != State::TakenOver {
            st.state = State::Disposed;
        }
    }
}

impl<B: TranscriptBackend> Drop for Inner<B> {
    fn drop(&mut self) {
        self.dispose();
    }
}

struct Aborter<B: TranscriptBackend>(Weak<Inner<B>>);

impl<B: TranscriptBackend> AbortHandle for Aborter<B> {
    fn abort(&self, kind: AbortKind) {
        if let Some(inner) = self.0.upgrade() {
            inner.abort(kind);
        }
    }
}

impl Attempt<FileBackend> {
    /// Begins an attempt on `session` with the default file backend.
    ///
    /// # Errors
    /// As [`SessionLock::acquire`]; `Io` when the transcript cannot be opened.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is held until it returns.
    pub async fn begin_file(session: impl AsRef<Path>, opts: AttemptOptions) -> Result<Self> {
        let locks = SessionLock::with_backend(FileBackend::default(), opts.lock.clone());
        Self::begin(&locks, session, opts).await
    }
}

impl<B: TranscriptBackend> Attempt<B> {
    /// Begins an attempt: acquires the lock eagerly (the controller always
    /// starts holding) and opens the transcript.
    ///
    /// # Errors
    /// As [`SessionLock::acquire`]; `Io` when the transcript cannot be opened.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is held until it returns.
    pub async fn begin(
        locks: &SessionLock<B>,
        session: impl AsRef<Path>,
        opts: AttemptOptions,
    ) -> Result<Self> {
        let guard = locks
            .acquire_async_with(session.as_ref(), &opts.lock)
            .await?;
        let transcript = locks.backend().open_store(guard.session_path())?;
        let session = guard.session_path().to_owned();
        Ok(Attempt {
            inner: Arc::new(Inner {
                locks: locks.clone(),
                opts,
                session,
                turns: PromptTurns::global(),
                st: Mutex::new(St {
                    state: State::Held,
                    guard: Some(guard),
                    transcript,
                    fence: None,
                    turn: None,
                    takeover: None,
                    aborts: 0,
                }),
            }),
        })
    }

    /// The canonical session file.
    pub fn session(&self) -> &Path {
        &self.inner.session
    }

    /// The current state.
    pub fn state(&self) -> State {
        lock(&self.inner.st).state
    }

    /// Whether a takeover was detected (sticky).
    pub fn is_taken_over(&self) -> bool {
        self.state() == State::TakenOver
    }

    /// A handle the active-run registry can abort this attempt through.
    pub fn abort_handle(&self) -> Arc<dyn AbortHandle> {
        Arc::new(Aborter(Arc::downgrade(&self.inner)))
    }

    /// Arms the fence and releases the lock, then waits for this session's
    /// prompt turn (one prompt window per session file in this process).
    /// Call it before every model call.
    ///
    /// # Errors
    /// The fence snapshot's error, returned after the lock was released (the
    /// next reacquire then reports a takeover, since nothing can be proven).
    /// A no-op outside `Held`.
    ///
    /// # Cancel safety
    /// Cancel safe: the lock is released before the first await; a turn
    /// being waited for is given up.
    pub async fn release_for_prompt(&self) -> Result<()> {
        let err = {
            let mut st = lock(&self.inner.st);
            if st.state != State::Held {
                return Ok(());
            }
            self.inner.release_held(&mut st, "prompt")
        };
        if let Some(e) = err {
            // Released, but unverifiable: the attempt ends in a takeover, so
            // it takes no prompt turn that others would wait behind.
            return Err(e);
        }
        let turn = self.inner.turns.take(&self.inner.session).await;
        let mut st = lock(&self.inner.st);
        if st.state == State::Released {
            st.turn = Some(turn);
        }
        Ok(())
    }

    /// Releases the lock while waiting for background work (e.g. compaction
    /// after the prompt) without taking a prompt turn.
    ///
    /// # Errors
    /// The fence snapshot's error, after the lock was released.
    pub fn release_for_idle_wait(&self) -> Result<()> {
        let mut st = lock(&self.inner.st);
        if st.state != State::Held {
            return Ok(());
        }
        self.inner
            .release_held(&mut st, "idle wait")
            .map_or(Ok(()), Err)
    }

    /// Vacates the prompt turn, reacquires the lock and checks the fence.
    /// A no-op after cleanup started and after dispose; after a takeover it
    /// reports the (sticky) takeover.
    ///
    /// # Errors
    /// `Takeover { phase: prompt_reacquire }` when the transcript changed in
    /// a way the classifier does not accept, or the acquire timed out or met
    /// a stale report; `Io`.
    ///
    /// # Cancel safety
    /// Cancel safe: if dropped while acquiring, nothing is held; the attempt
    /// stays released.
    pub async fn reacquire_after_prompt(&self) -> Result<()> {
        {
            let mut st = lock(&self.inner.st);
            st.turn = None;
            match st.state {
                State::Released => {}
                State::TakenOver => {
                    let (phase, detail) = st
                        .takeover
                        .clone()
                        .unwrap_or((TakeoverPhase::PromptReacquire, String::new()));
                    return Err(self.inner.takeover_error(phase, detail));
                }
                State::Held | State::Cleanup | State::Disposed => return Ok(()),
            }
        }
        self.reacquire(TakeoverPhase::PromptReacquire).await
    }

    async fn reacquire(&self, phase: TakeoverPhase) -> Result<()> {
        let aborts = lock(&self.inner.st).aborts;
        let acquired = self
            .inner
            .locks
            .acquire_async_with(&self.inner.session, &self.inner.opts.lock)
            .await;
        let mut st = lock(&self.inner.st);
        if st.state != State::Released || st.aborts != aborts {
            // Disposed or aborted while we waited: hold nothing.
            if let Ok(g) = acquired {
                release_quietly(g, "reacquire resolved after dispose");
            }
            return Ok(());
        }
        let guard = match acquired {
            Ok(g) => g,
            Err(e @ (Error::Timeout { .. } | Error::Stale { .. })) => {
                return Err(self.inner.mark_taken_over(&mut st, phase, e.to_string()));
            }
            Err(e) => return Err(e),
        };
        st.guard = Some(guard);
        match self.inner.verify(&mut st) {
            Ok(()) => {
                st.state = State::Held;
                Ok(())
            }
            Err(detail) => Err(self.inner.mark_taken_over(&mut st, phase, detail)),
        }
    }

    /// Runs a transcript mutation under the lock: with the held lock, or a
    /// short one taken for it while released. The fence is checked first,
    /// and the file state after the write is recorded as the attempt's own,
    /// so its own writes are never mistaken for a takeover. Returns `None`
    /// when the write was skipped (disposed, or aborted while the short lock
    /// was being acquired). After a takeover it returns the sticky
    /// `Takeover` error and writes nothing.
    ///
    /// # Errors
    /// `Takeover { phase: write }` when the fence check fails; the error of
    /// `f`; acquisition errors when a short lock cannot be had.
    ///
    /// # Cancel safety
    /// Cancel safe: `f` runs only after the last await.
    pub async fn with_write<T>(
        &self,
        f: impl FnOnce(&mut B::Store, &Guard<B>) -> Result<T>,
    ) -> Result<Option<T>> {
        {
            let mut st = lock(&self.inner.st);
            match st.state {
                State::Held | State::Cleanup => {
                    let St {
                        guard, transcript, ..
                    } = &mut *st;
                    let result = match guard {
                        Some(g) => f(transcript, g).map(Some),
                        None => return Ok(None),
                    };
                    // A fenced write refused: the lock was lost (revoked, or
                    // reclaimed by another holder). That is a takeover.
                    if let Err(e @ (Error::Fenced { .. } | Error::Revoked { .. })) = &result {
                        let detail = e.to_string();
                        return Err(self.inner.mark_taken_over(
                            &mut st,
                            TakeoverPhase::Write,
                            detail,
                        ));
                    }
                    return result;
                }
                State::TakenOver => {
                    let (phase, detail) = st
                        .takeover
                        .clone()
                        .unwrap_or((TakeoverPhase::Write, String::new()));
                    return Err(self.inner.takeover_error(phase, detail));
                }
                State::Disposed => return Ok(None),
                State::Released => {}
            }
        }
        let aborts = lock(&self.inner.st).aborts;
        let acquired = self
            .inner
            .locks
            .acquire_async_with(&self.inner.session, &self.inner.opts.lock)
            .await?;
        let mut st = lock(&self.inner.st);
        if st.state != State::Released || st.aborts != aborts {
            release_quietly(acquired, "write after dispose or abort");
            return Ok(None);
        }
        if let Err(detail) = self.inner.verify(&mut st) {
            release_quietly(acquired, "takeover");
            return Err(self
                .inner
                .mark_taken_over(&mut st, TakeoverPhase::Write, detail));
        }
        let result = f(&mut st.transcript, &acquired);
        // Whatever `f` wrote is ours: the fence now describes the file after it.
        st.fence = Some(
            st.transcript
                .snapshot(acquired.epoch())
                .map_err(|e| e.to_string()),
        );
        release_quietly(acquired, "short write lock");
        result.map(Some)
    }

    /// Aborts the attempt (user stop, timeout, stuck recovery, yield): the
    /// held lock is released at once, with the fence armed, without waiting
    /// for anything. Failures are logged, never returned.
    pub fn abort(&self, kind: AbortKind) {
        self.inner.abort(kind);
    }

    /// Enters cleanup: adopts the held lock, or reacquires it and checks the
    /// fence (`phase: cleanup`). After a takeover, or if the lock cannot be
    /// had, returns a no-op lock: cleanup runs, its writes are skipped.
    ///
    /// # Errors
    /// `Io` only; takeovers are reported through [`CleanupLock::NoOp`] and
    /// [`Attempt::is_taken_over`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn acquire_for_cleanup(&self) -> Result<CleanupLock> {
        {
            let mut st = lock(&self.inner.st);
            st.turn = None;
            match st.state {
                State::Held => {
                    st.state = State::Cleanup;
                    return Ok(CleanupLock::Held);
                }
                State::Cleanup => {
                    return Ok(if st.guard.is_some() {
                        CleanupLock::Held
                    } else {
                        CleanupLock::NoOp
                    });
                }
                State::TakenOver | State::Disposed => return Ok(CleanupLock::NoOp),
                State::Released => {}
            }
        }
        match self.reacquire(TakeoverPhase::Cleanup).await {
            Ok(()) => {
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

    /// Ends the attempt: releases whatever is held and vacates its turn.
    /// Idempotent; a disposed attempt never reacquires, even if a reacquire
    /// was in flight.
    pub fn dispose(&self) {
        self.inner.dispose();
    }
}
