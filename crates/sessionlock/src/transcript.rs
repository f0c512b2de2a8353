//! The transcript store ([design §5](crate::design#5-the-transcript-store)), as
//! callers use it: the file backend's [`Transcript`] with its blocking API
//! taking a [`Guard`], and the backend-neutral types of [`crate::store`]. The
//! store itself, whose mutations take a lease
//! ([`crate::backend::TranscriptStore`]), is
//! [`crate::backend::file::transcript`]; this module adds what needs the lock
//! core (a guard), which sits above the backends: the file store's blocking
//! methods, and the mutations of any backend's store under a guard's lease
//! ([`Guard::store_append`] and its siblings), and [`AppendBatch`], which
//! gathers a turn's entries pushed one at a time into one fenced append
//! ([`Transcript::batch`], [`Guard::store_batch`]).

use std::io;
use std::path::Path;

use serde_json::Value;

use crate::backend::file::transcript::serialize;
pub use crate::backend::file::transcript::*;
use crate::backend::file::FileBackend;
use crate::backend::{SessionId, StoreBackend, TranscriptStore};
use crate::blocking::block_on;
use crate::error::{Error, Result};
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
        let appended = block_on(
            guard.with_lease(move |held| async move { this.append_held(&held, &buf, durability) }),
        )?;
        guard.note_appended(entries.len(), appended.len);
        Ok(appended)
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
        let appended = block_on(guard.with_lease(move |held| async move {
            this.append_held(&held, entries.as_bytes(), durability)
        }))?;
        guard.note_appended(entries.len(), appended.len);
        Ok(appended)
    }
    /// Starts a batch of entries to append under `guard` with one fence
    /// check and one write (see [`AppendBatch`]): push entries as a turn
    /// produces them, then [`commit`](AppendBatch::commit). The batch
    /// borrows the handle until it is committed or dropped; dropped, it
    /// writes nothing.
    pub fn batch<'a>(&'a mut self, guard: &'a Guard) -> AppendBatch<'a> {
        AppendBatch::new(guard, self)
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
        let appended = self
            .with_lease(|held| async move { store.append(&held, entries, durability).await })
            .await?;
        self.note_appended(entries.len(), appended.len);
        Ok(appended)
    }

    /// Starts a batch of entries to append to `store` under this guard's
    /// lease with one fence check and one append of the store (see
    /// [`AppendBatch`]), committed with
    /// [`commit_async`](AppendBatch::commit_async). The batch borrows the
    /// store until it is committed or dropped; dropped, it writes nothing.
    ///
    /// # Example
    ///
    /// ```
    /// use serde_json::json;
    /// use sessionlock::{FileBackend, SessionLock, StoreBackend, TranscriptStore};
    /// use sessionlock::store::Durability;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), sessionlock::Error> {
    /// let dir = tempfile::tempdir().expect("tempdir");
    /// let session = dir.path().join("abc.jsonl");
    /// let locks = SessionLock::new();
    /// let guard = locks.acquire_async(&session).await?;
    /// let mut store = FileBackend::default().open_store(guard.key()).await?;
    ///
    /// let mut batch = guard.store_batch(&mut store);
    /// for n in 1..=3 {
    ///     batch.push(&json!({"n": n}))?;
    /// }
    /// let appended = batch.commit_async(Durability::None).await?;
    /// assert_eq!(appended.len, 3 * 8); // three lines of `{"n":N}\n`
    ///
    /// let read = store.read().await?;
    /// assert_eq!(read.entries, [json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]);
    /// guard.release()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn store_batch<'a>(&'a self, store: &'a mut B::Store) -> AppendBatch<'a, B> {
        AppendBatch::new(self, store)
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

/// Entries gathered one at a time while a lock is held, written to the
/// transcript together: one fence check and one append of the store when
/// [committed](AppendBatch::commit) (group commit within a hold,
/// [design §5.3](crate::design#53-append)). The file store makes that one
/// `write(2)` and, as the [`Durability`] asks, at most one `fdatasync` or
/// `fsync`; the PostgreSQL store one transaction.
///
/// A turn that produces its entries one by one (a message, then each tool
/// result as it streams in) pushes them as they come and commits once,
/// instead of paying a fence check, a write and a sync for each.
///
/// Each entry is serialized and checked when it is pushed, so a bad entry
/// fails at [`push`](AppendBatch::push) (the batch is unchanged then), never
/// at the commit. Nothing reaches the store before the commit: readers and
/// other holders see the whole batch or none of it, in push order.
///
/// **Dropping a batch without committing it writes nothing**: its entries
/// are discarded (logged at `debug` with their number, design §19). The
/// batch borrows the store mutably until then, so no other write of this
/// handle can come between its entries.
///
/// Made by [`Transcript::batch`] (the file store, committed with the
/// blocking [`commit`](AppendBatch::commit)) or [`Guard::store_batch`] (any
/// [`StoreBackend`], committed with [`commit_async`](AppendBatch::commit_async)).
///
/// # Example
///
/// ```
/// use serde_json::json;
/// use sessionlock::SessionLock;
/// use sessionlock::transcript::{Durability, Transcript};
///
/// # fn main() -> Result<(), sessionlock::Error> {
/// let dir = tempfile::tempdir().expect("tempdir");
/// let session = dir.path().join("abc.jsonl");
/// let mut transcript = Transcript::open(&session)?;
/// let guard = SessionLock::new().acquire(&session)?;
///
/// let mut batch = transcript.batch(&guard);
/// batch.push(&json!({"role": "user", "text": "list the files"}))?;
/// for name in ["a.txt", "b.txt"] {
///     // Entries produced one at a time, as a turn streams them.
///     batch.push(&json!({"role": "tool", "text": name}))?;
/// }
/// batch.push_raw(br#"{"role": "assistant", "text": "two files"}"#)?;
/// assert_eq!(batch.len(), 4);
/// let bytes = batch.bytes() as u64;
///
/// // One fence check, one write, one fdatasync for the four entries.
/// let appended = batch.commit(Durability::Data)?;
/// assert_eq!((appended.offset, appended.len), (0, bytes));
///
/// let texts: Vec<_> = transcript
///     .reader()?
///     .map(|e| e.map(|e| e.value["text"].clone()))
///     .collect::<Result<_, _>>()?;
/// assert_eq!(texts, ["list the files", "a.txt", "b.txt", "two files"]);
///
/// // A batch dropped without a commit writes nothing.
/// let mut dropped = transcript.batch(&guard);
/// dropped.push(&json!({"text": "never written"}))?;
/// drop(dropped);
/// assert_eq!(transcript.reader()?.count(), 4);
/// guard.release()?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a batch writes nothing until it is committed; dropped, its entries are discarded"]
pub struct AppendBatch<'a, B: StoreBackend = FileBackend> {
    guard: &'a Guard<B>,
    store: &'a mut B::Store,
    entries: RawEntries,
}

impl<B: StoreBackend> std::fmt::Debug for AppendBatch<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendBatch")
            .field("session", &self.session())
            .field("entries", &self.entries.len())
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl<'a, B: StoreBackend> AppendBatch<'a, B> {
    fn new(guard: &'a Guard<B>, store: &'a mut B::Store) -> Self {
        AppendBatch {
            guard,
            store,
            entries: RawEntries::new(),
        }
    }

    /// The session, for errors and logs.
    fn session(&self) -> &Path {
        Path::new(self.guard.key().session())
    }

    fn invalid(&self, e: serde_json::Error) -> Error {
        Error::io("serialize entry for", self.session(), io::Error::other(e))
    }

    /// Adds `entry`, serialized at once (compact, one line) and checked as
    /// [`RawEntries::push`] checks entries, so that every pushed entry is one
    /// a reader accepts.
    ///
    /// # Errors
    /// `Io` ("serialize entry for") when `entry` cannot be serialized, is
    /// nested deeper than a reader accepts, or is longer than
    /// [`MAX_ENTRY_BYTES`]; the batch is unchanged then, and may still be
    /// committed.
    pub fn push(&mut self, entry: &Value) -> Result<()> {
        let json = serde_json::to_vec(entry).map_err(|e| self.invalid(e))?;
        self.push_raw(&json)
    }

    /// Adds one entry given as JSON text, kept byte for byte as
    /// [`RawEntries::push`] keeps it.
    ///
    /// # Errors
    /// `Io` ("serialize entry for", with the parser's message) when `json`
    /// is not exactly one JSON value a reader accepts, or is longer than
    /// [`MAX_ENTRY_BYTES`]; the batch is unchanged then.
    pub fn push_raw(&mut self, json: &[u8]) -> Result<()> {
        self.entries.push(json).map_err(|e| self.invalid(e))
    }

    /// How many entries the batch holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the batch holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many bytes the commit will append: every entry's line with its
    /// `\n` (the `len` of the [`Appended`] it returns).
    pub fn bytes(&self) -> usize {
        self.entries.as_bytes().len()
    }

    /// Writes the batch: one fence check and one append of the store, as
    /// [`Guard::store_append`] with every pushed entry, in push order. An
    /// empty batch writes nothing, but is still checked against the fence
    /// (an `Ok` says the guard owned the session then).
    ///
    /// # Errors
    /// As [`Guard::store_append`]: `Revoked` or `Fenced` when the guard no
    /// longer owns the session (nothing is written), `Poisoned`,
    /// `InvalidPath` (a store of another session), `Io`; the entries are
    /// discarded with the batch either way.
    ///
    /// # Cancel safety
    /// As [`Guard::store_append`]: dropped before the store's append begins,
    /// nothing is written; once begun, the file store's completes at once,
    /// and a store that suspends leaves the whole batch or nothing.
    pub async fn commit_async(mut self, durability: Durability) -> Result<Appended> {
        let entries = std::mem::take(&mut self.entries);
        let guard = self.guard;
        guard.store_append(self.store, &entries, durability).await
    }
}

impl AppendBatch<'_, FileBackend> {
    /// Writes the batch to the transcript, blocking: one fence check, one
    /// `write(2)` of every pushed entry in push order (after the torn-tail
    /// repair, if this is the first fenced write of the epoch, design §5.5),
    /// then the sync `durability` asks for, as [`Transcript::append`] does
    /// for a slice. An empty batch writes nothing, but is still checked
    /// against the fence.
    ///
    /// # Errors
    /// As [`Transcript::append`]: `Revoked`/`Fenced` when `guard` no longer
    /// owns the session (nothing is written); `Poisoned` after an earlier
    /// failure; `InvalidPath` when the guard is for another session; `Io`
    /// when the write or sync fails (the handle is then poisoned). The
    /// entries are discarded with the batch either way.
    pub fn commit(mut self, durability: Durability) -> Result<Appended> {
        let entries = std::mem::take(&mut self.entries);
        let guard = self.guard;
        block_on(guard.store_append(self.store, &entries, durability))
    }
}

impl<B: StoreBackend> Drop for AppendBatch<'_, B> {
    fn drop(&mut self) {
        if !self.entries.is_empty() {
            tracing::debug!(
                target: "sessionlock::transcript",
                session = %self.session().display(),
                entries = self.entries.len(),
                bytes = self.bytes(),
                "uncommitted append batch dropped; nothing written"
            );
        }
    }
}
