//! The transcript store ([design §5](crate::design#5-the-transcript-store)), as
//! callers use it: the file backend's [`Transcript`] with its blocking API
//! taking a [`Guard`], and the backend-neutral types of [`crate::store`]. The
//! store itself, whose mutations take a lease
//! ([`crate::backend::TranscriptStore`]), is
//! [`crate::backend::file::transcript`]; this module adds what needs the lock
//! core (a guard), which sits above the backends: the file store's blocking
//! methods, and the mutations of any backend's store under a guard's lease
//! ([`Guard::store_append`] and its siblings).

use serde_json::Value;

use crate::backend::file::transcript::serialize;
pub use crate::backend::file::transcript::*;
use crate::backend::{StoreBackend, TranscriptStore};
use crate::blocking::block_on;
use crate::error::Result;
use crate::lock::guard::Guard;

impl Transcript {
    /// Appends `entries`, one line each, with one write, under the fence.
    ///
    /// # Errors
    /// `Revoked`/`Fenced` when `guard` no longer owns the session (nothing is
    /// written); `Poisoned` after an earlier failure; `Io` when the write or
    /// sync fails (the handle is then poisoned).
    ///
    /// # Example
    ///
    /// ```
    /// use serde_json::json;
    /// use sessionlock::{Error, LossCause, SessionLock};
    /// use sessionlock::transcript::{Durability, Transcript};
    ///
    /// # fn main() -> Result<(), Error> {
    /// let dir = tempfile::tempdir().expect("tempdir");
    /// let session = dir.path().join("abc.jsonl");
    /// let locks = SessionLock::new();
    /// let mut transcript = Transcript::open(&session)?;
    ///
    /// let guard = locks.acquire(&session)?;
    /// let first = transcript.append(&guard, &[json!({"role": "user", "text": "hi"})], Durability::Data)?;
    /// let second = transcript.append(&guard, &[json!({"role": "assistant", "text": "hello"})], Durability::Data)?;
    /// assert_eq!((first.offset, second.offset), (0, first.len));
    ///
    /// // Someone deletes the lock file: the guard no longer owns the
    /// // session, and its append is refused with nothing written.
    /// std::fs::remove_file(guard.lock_path()).expect("remove");
    /// let refused = transcript.append(&guard, &[json!({"text": "lost"})], Durability::Data);
    /// assert!(matches!(refused, Err(Error::Revoked { cause: LossCause::Removed, .. })));
    /// assert_eq!(transcript.reader()?.count(), 2);
    /// assert!(guard.release().is_err(), "the release reports the loss too");
    /// # Ok(())
    /// # }
    /// ```
    pub fn append(
        &mut self,
        guard: &Guard,
        entries: &[Value],
        durability: Durability,
    ) -> Result<Appended> {
        let buf = serialize(entries, self.path())?;
        let this = &mut *self;
        block_on(
            guard.with_lease(move |held| async move { this.append_held(&held, &buf, durability) }),
        )
    }
    /// Appends entries given as JSON text, byte for byte, with one write,
    /// under the fence, exactly like [`Transcript::append`].
    ///
    /// # Errors
    /// As [`Transcript::append`].
    pub fn append_raw(
        &mut self,
        guard: &Guard,
        entries: &RawEntries,
        durability: Durability,
    ) -> Result<Appended> {
        let this = &mut *self;
        block_on(guard.with_lease(move |held| async move {
            this.append_held(&held, entries.as_bytes(), durability)
        }))
    }
    /// Detects a torn final line and, if there is one, moves it to
    /// `<session>.torn-<epoch>` and truncates the transcript to its last
    /// complete line. Runs automatically before the first fenced write of a
    /// handle.
    ///
    /// # Errors
    /// `Revoked`/`Fenced`; `Io` (the handle is then poisoned).
    pub fn repair(&mut self, guard: &Guard) -> Result<Option<TornTail>> {
        let this = &mut *self;
        block_on(guard.with_lease(move |held| async move { this.repair_held(&held) }))
    }
    /// Replaces the transcript with `entries` (compaction): a new file is
    /// written beside it, fsynced, renamed over it, and the directory fsynced.
    ///
    /// # Errors
    /// `Revoked`/`Fenced`; `Poisoned`; `Io` (the handle is then poisoned; the
    /// old transcript is left in place unless the failure came after the
    /// rename, in the directory sync or the reopen).
    pub fn rewrite(&mut self, guard: &Guard, entries: &[Value]) -> Result<()> {
        let buf = serialize(entries, self.path())?;
        let this = &mut *self;
        block_on(guard.with_lease(move |held| async move { this.rewrite_held(&held, &buf) }))
    }
    /// Keeps the first `keep` complete entries (byte for byte) and drops the
    /// rest, like [`Transcript::rewrite`].
    ///
    /// # Errors
    /// As [`Transcript::rewrite`].
    pub fn truncate(&mut self, guard: &Guard, keep: usize) -> Result<()> {
        let this = &mut *self;
        block_on(guard.with_lease(move |held| async move { this.truncate_held(&held, keep) }))
    }
}

/// The transcript mutations of any [`StoreBackend`], made under this
/// guard's lease: what the file backend's
/// [`Transcript`] offers as
/// blocking methods, for a store known only by its backend (generic code,
/// bindings, the backend conformance suite). Each runs only while the guard
/// holds its lease, one operation of this acquisition at a time, and the
/// store runs the epoch check and the mutation as one unit. A mutation
/// refused because the lock was removed or replaced revokes the guard, as
/// [`Guard::with_fence`] does.
impl<B: StoreBackend> Guard<B> {
    /// Appends `entries` to `store` under this guard's lease
    /// ([`TranscriptStore::append`]).
    ///
    /// # Errors
    /// `Revoked` when the guard lost its lock (released, revoked, or the
    /// lock removed or replaced by someone else) and `Fenced` when a newer
    /// epoch exists: nothing is written; otherwise as
    /// [`TranscriptStore::append`].
    ///
    /// # Cancel safety
    /// As [`TranscriptStore::append`]: the file store's future completes at
    /// once.
    pub async fn store_append(
        &self,
        store: &mut B::Store,
        entries: &RawEntries,
        durability: Durability,
    ) -> Result<Appended> {
        self.with_lease(|held| async move { store.append(&held, entries, durability).await })
            .await
    }

    /// Replaces the transcript in `store` with `entries` under this guard's
    /// lease ([`TranscriptStore::rewrite`]).
    ///
    /// # Errors
    /// As [`Guard::store_append`].
    ///
    /// # Cancel safety
    /// As [`Guard::store_append`].
    pub async fn store_rewrite(&self, store: &mut B::Store, entries: &RawEntries) -> Result<()> {
        self.with_lease(|held| async move { store.rewrite(&held, entries).await })
            .await
    }

    /// Keeps the first `keep` entries of the transcript in `store`, under
    /// this guard's lease ([`TranscriptStore::truncate`]).
    ///
    /// # Errors
    /// As [`Guard::store_append`].
    ///
    /// # Cancel safety
    /// As [`Guard::store_append`].
    pub async fn store_truncate(&self, store: &mut B::Store, keep: usize) -> Result<()> {
        self.with_lease(|held| async move { store.truncate(&held, keep).await })
            .await
    }

    /// Sets a torn final line of the transcript in `store` aside, under this
    /// guard's lease ([`TranscriptStore::repair`]).
    ///
    /// # Errors
    /// As [`Guard::store_append`].
    ///
    /// # Cancel safety
    /// As [`Guard::store_append`].
    pub async fn store_repair(&self, store: &mut B::Store) -> Result<Option<TornTail>> {
        self.with_lease(|held| async move { store.repair(&held).await })
            .await
    }
}
