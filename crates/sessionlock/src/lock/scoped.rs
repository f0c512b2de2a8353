//! Scoped holds: acquire, run the caller's work while the lock is owned,
//! release at the end, whatever happens in between.

use crate::backend::LockBackend;
use crate::blocking::offload;
use crate::error::Error;
use crate::lock::acquire::{LockOptions, SessionLock};
use crate::lock::guard::Guard;

impl<B: LockBackend> SessionLock<B> {
    /// Acquires the lock of `session`, runs `work` with the guard, and
    /// releases the lock at the end: the async scoped form of
    /// [`SessionLock::acquire_async_with`] + [`Guard::release`], for work
    /// that must not go on once the lock is lost.
    ///
    /// `work` runs raced against [`Guard::lost`]: if the lock is lost while
    /// it runs (the watchdog revoked it past `max_hold`, another holder
    /// reclaimed it, or another program removed or replaced its lock file),
    /// `work` is dropped at its next `.await` and the loss is returned. Its
    /// fenced writes ([`crate::transcript::Transcript`]'s mutations,
    /// [`Guard::with_fence`]) that completed before the loss did land; none
    /// lands after it.
    ///
    /// Returns `work`'s value when `work` succeeded and the lock was still
    /// this scope's when it was released. `work`'s error type only needs
    /// `From<sessionlock::Error>` (`sessionlock::Error` itself,
    /// `anyhow::Error`, `Box<dyn Error>`, or your own).
    ///
    /// The release runs on the calling task: a few system calls on the file
    /// backend, moved off the worker with `block_in_place` on a multi-thread
    /// runtime, as the transcript's writes are (see the crate docs,
    /// "Async runtimes").
    ///
    /// # Errors
    /// - the acquisition's error ([`SessionLock::acquire`]): nothing ran;
    /// - the loss ([`Guard::lost`]: `Revoked` or `Fenced`) when the lock was
    ///   lost while `work` ran: `work` was cancelled. Should watching the
    ///   lock fail (an `Io` error, a database connection lost), that is
    ///   logged and `work` goes on; its loss is then learned from
    ///   revocation (the watchdog's at the end of the lease, or a fenced
    ///   call's);
    /// - `work`'s own error, returned as is (the lock is released; a failure
    ///   to release is then only logged);
    /// - the release's error ([`Guard::release`]) when `work` succeeded but
    ///   the lock was no longer this scope's at the end, or could not be
    ///   removed: what `work` did under the fence stands, but it did not
    ///   have the session to itself all along.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future before the lock is acquired leaves
    /// nothing queued or held, as [`SessionLock::acquire_async`]; dropping it
    /// while `work` runs drops `work` and releases the lock (as a dropped
    /// [`Guard`] does). A panic in `work` propagates after the lock is
    /// released the same way.
    ///
    /// # Panics
    /// Outside a tokio runtime with I/O and time enabled.
    ///
    /// # Example
    /// ```
    /// use serde_json::json;
    /// use sessionlock::transcript::{Durability, Transcript};
    /// use sessionlock::{LockOptions, SessionLock};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), sessionlock::Error> {
    /// # let dir = tempfile::tempdir().expect("tempdir");
    /// # let session = dir.path().join("abc.jsonl");
    /// let locks = SessionLock::new();
    /// let opts = LockOptions::default().lane("channel");
    /// let lines = locks
    ///     .with_lock_async(&session, &opts, async |guard| {
    ///         let mut t = Transcript::open(&session)?;
    ///         t.append(guard, &[json!({"role": "user", "text": "hi"})], Durability::Data)?;
    ///         Ok::<_, sessionlock::Error>(t.reader()?.count())
    ///     })
    ///     .await?;
    /// assert_eq!(lines, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn with_lock_async<T, E>(
        &self,
        session: impl AsRef<B::Name>,
        options: &LockOptions,
        work: impl AsyncFnOnce(&Guard<B>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        let guard = self.acquire_async_with(session, options).await?;
        let outcome = {
            let work = work(&guard);
            tokio::select! {
                // The work first: a result it reached wins over a loss
                // noticed in the same poll; the release reports that loss.
                biased;
                r = work => Ok(r),
                lost = lost_for_sure(&guard) => Err(lost),
            }
        };
        let released = offload(move || guard.release());
        match (outcome, released) {
            (Ok(Ok(value)), Ok(())) => Ok(value),
            (Ok(Ok(_)), Err(e)) => Err(e.into()),
            (Ok(Err(work_error)), released) => {
                log_release_failure(released);
                Err(work_error)
            }
            (Err(lost), released) => {
                // A lost lock's release reports the loss again: no news.
                if !matches!(released, Err(Error::Revoked { .. } | Error::Fenced { .. })) {
                    log_release_failure(released);
                }
                Err(lost.into())
            }
        }
    }
}

/// The loss of `guard`'s lock ([`Guard::lost`]); an error that only means
/// its watch failed (an `Io` error, a database connection's) does not end
/// the work: it is logged, and the loss is then learned from revocation
/// (the watchdog's, or a fenced call's).
async fn lost_for_sure<B: LockBackend>(guard: &Guard<B>) -> Error {
    match guard.lost().await {
        lost @ (Error::Revoked { .. } | Error::Fenced { .. }) => lost,
        other => {
            tracing::warn!(
                target: "sessionlock::hold",
                error = %other,
                "cannot watch a scoped hold; its loss is learned from revocation"
            );
            loop {
                guard.revoked().await;
                // Revoked is sticky: this check fails at once.
                if let Err(lost) = guard.check_async().await {
                    return lost;
                }
            }
        }
    }
}

fn log_release_failure(released: crate::error::Result<()>) {
    if let Err(e) = released {
        tracing::warn!(
            target: "sessionlock::hold",
            error = %e,
            "releasing after a failed scoped hold"
        );
    }
}
