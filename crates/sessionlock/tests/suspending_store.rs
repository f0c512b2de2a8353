//! The attempt controller on a store whose futures suspend, as a database
//! client's do (issue 11, ahead of the PostgreSQL backend of issue 12).
//!
//! [`Suspending`] is the file backend seen through the seam only, whose
//! transcript store sends every call to a "connection" task on the runtime
//! and awaits its answer before it delegates, as a `tokio-postgres` client
//! awaits the task that owns its connection. Driven by a current-thread
//! runtime, a controller that parked the runtime's only thread on a store
//! future (rather than awaiting it) would never let that task run: every
//! test here has a deadline, so such a deadlock fails instead of hanging.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde_json::Value;
use sessionlock::attempt::{Attempt, AttemptOptions, CleanupLock, State};
use sessionlock::backend::file::{FileInspection, FileKey, FileVersion};
use sessionlock::backend::{
    Held, LeaseInfo, LeaseRequest, Listed, LockBackend, Outcome, StoreBackend,
};
use sessionlock::classify::ChangeClassifier;
use sessionlock::runs::AbortKind;
use sessionlock::store::{Appended, Change, Durability, RawEntries, Read, Takeover, TornTail};
use sessionlock::transcript::Transcript;
use sessionlock::{
    Error, FileBackend, SessionLock, TakeoverPhase, TakeoverReason, TranscriptStore,
};
use tokio::sync::{mpsc, oneshot};

mod common;

use common::sessions::{
    append, append_ignoring_the_lock, custom, entries, is_free, lane_opts, opts, reply,
};
use common::waits::poll_now;

/// How long a whole scenario may take before it counts as a deadlock.
const DEADLINE: Duration = Duration::from_secs(20);

/// The file backend, whose store's futures suspend (see the module docs).
/// Lock operations are the file backend's own.
struct Suspending {
    file: FileBackend,
    /// Store futures that suspended at least once.
    suspended: Arc<AtomicUsize>,
}

/// The file transcript behind a "connection" task.
struct SuspendingStore {
    file: Transcript,
    conn: mpsc::UnboundedSender<oneshot::Sender<()>>,
    suspended: Arc<AtomicUsize>,
}

impl SuspendingStore {
    /// One round trip through the connection task: never ready on the
    /// first poll, ready only once that task has run.
    async fn round_trip(&self) -> sessionlock::Result<()> {
        let (tx, rx) = oneshot::channel();
        let gone = || Error::Misuse {
            what: "the connection task is gone".to_owned(),
        };
        self.conn.send(tx).map_err(|_| gone())?;
        let mut rx = std::pin::pin!(rx);
        if poll_now(rx.as_mut()).is_pending() {
            self.suspended.fetch_add(1, Ordering::SeqCst);
        }
        rx.await.map_err(|_| gone())
    }
}

impl LockBackend for Suspending {
    type Name = Path;
    type Key = FileKey;
    type Version = FileVersion;
    type Lease = <FileBackend as LockBackend>::Lease;
    type Watch = <FileBackend as LockBackend>::Watch;
    type Scope = Path;
    fn key(&self, session: &Path) -> sessionlock::Result<FileKey> {
        self.file.key(session)
    }
    async fn try_acquire(
        &self,
        key: &FileKey,
        req: &LeaseRequest,
        deadline: Option<std::time::Instant>,
    ) -> sessionlock::Result<Outcome<Self::Lease, FileVersion>> {
        self.file.try_acquire(key, req, deadline).await
    }
    async fn inspect(&self, key: &FileKey) -> sessionlock::Result<Option<FileInspection>> {
        self.file.inspect(key).await
    }
    async fn reclaim(
        &self,
        key: &FileKey,
        seen: &FileInspection,
        req: &LeaseRequest,
        deadline: Option<std::time::Instant>,
    ) -> sessionlock::Result<Outcome<Self::Lease, FileVersion>> {
        self.file.reclaim(key, seen, req, deadline).await
    }
    async fn remove_if_unchanged(
        &self,
        key: &FileKey,
        seen: &FileInspection,
        deadline: Option<std::time::Instant>,
    ) -> sessionlock::Result<bool> {
        self.file.remove_if_unchanged(key, seen, deadline).await
    }
    async fn list(&self, scope: &Path) -> sessionlock::Result<Vec<Listed<FileKey, FileVersion>>> {
        self.file.list(scope).await
    }
    async fn check(&self, lease: &Self::Lease) -> sessionlock::Result<()> {
        self.file.check(lease).await
    }
    async fn release(
        &self,
        lease: &Self::Lease,
        deadline: Option<std::time::Instant>,
    ) -> sessionlock::Result<bool> {
        self.file.release(lease, deadline).await
    }
    async fn republish(
        &self,
        lease: &Self::Lease,
        req: &LeaseRequest,
        new_epoch: bool,
        deadline: Option<std::time::Instant>,
    ) -> sessionlock::Result<()> {
        self.file.republish(lease, req, new_epoch, deadline).await
    }
    async fn revoke(&self, lease: &Self::Lease) -> sessionlock::Result<u64> {
        self.file.revoke(lease).await
    }
    async fn current_epoch(&self, lease: &Self::Lease) -> sessionlock::Result<u64> {
        self.file.current_epoch(lease).await
    }
    async fn fenced<T>(
        &self,
        lease: &Self::Lease,
        f: impl FnOnce() -> T,
    ) -> sessionlock::Result<T> {
        self.file.fenced(lease, f).await
    }
    fn info(lease: &Self::Lease) -> LeaseInfo<FileKey> {
        FileBackend::info(lease)
    }
    async fn watch(&self, key: &FileKey) -> sessionlock::Result<Self::Watch> {
        self.file.watch(key).await
    }
    fn wait_blocking(
        &self,
        w: &mut Self::Watch,
        holder: Option<&FileInspection>,
        t: Option<Duration>,
    ) -> sessionlock::Result<()> {
        self.file.wait_blocking(w, holder, t)
    }
    async fn wait(
        &self,
        w: &mut Self::Watch,
        holder: Option<&FileInspection>,
        t: Option<Duration>,
    ) -> sessionlock::Result<()> {
        self.file.wait(w, holder, t).await
    }
}

type Snapshot = <Transcript as TranscriptStore<FileBackend>>::Snapshot;

impl TranscriptStore<Suspending> for SuspendingStore {
    type Snapshot = Snapshot;

    async fn append(
        &mut self,
        held: &Held<<Suspending as LockBackend>::Lease>,
        entries: &RawEntries,
        durability: Durability,
    ) -> sessionlock::Result<Appended> {
        self.round_trip().await?;
        TranscriptStore::<FileBackend>::append(&mut self.file, held, entries, durability).await
    }
    async fn rewrite(
        &mut self,
        held: &Held<<Suspending as LockBackend>::Lease>,
        entries: &RawEntries,
    ) -> sessionlock::Result<()> {
        self.round_trip().await?;
        TranscriptStore::<FileBackend>::rewrite(&mut self.file, held, entries).await
    }
    async fn truncate(
        &mut self,
        held: &Held<<Suspending as LockBackend>::Lease>,
        keep: usize,
    ) -> sessionlock::Result<()> {
        self.round_trip().await?;
        TranscriptStore::<FileBackend>::truncate(&mut self.file, held, keep).await
    }
    async fn repair(
        &mut self,
        held: &Held<<Suspending as LockBackend>::Lease>,
    ) -> sessionlock::Result<Option<TornTail>> {
        self.round_trip().await?;
        TranscriptStore::<FileBackend>::repair(&mut self.file, held).await
    }
    async fn read(&self) -> sessionlock::Result<Read> {
        self.round_trip().await?;
        TranscriptStore::<FileBackend>::read(&self.file).await
    }
    async fn snapshot(&self, epoch: u64) -> sessionlock::Result<Snapshot> {
        self.round_trip().await?;
        TranscriptStore::<FileBackend>::snapshot(&self.file, epoch).await
    }
    async fn check(
        &self,
        snapshot: &Snapshot,
        classifier: &dyn ChangeClassifier,
    ) -> sessionlock::Result<Change> {
        self.round_trip().await?;
        TranscriptStore::<FileBackend>::check(&self.file, snapshot, classifier).await
    }
}

impl StoreBackend for Suspending {
    type Store = SuspendingStore;

    async fn open_store(&self, key: &FileKey) -> sessionlock::Result<SuspendingStore> {
        let file = self.file.open_store(key).await?;
        let (conn, mut requests) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
        // The connection task: it runs only when the runtime runs it.
        tokio::spawn(async move {
            while let Some(reply) = requests.recv().await {
                tokio::task::yield_now().await;
                let _ = reply.send(());
            }
        });
        Ok(SuspendingStore {
            file,
            conn,
            suspended: self.suspended.clone(),
        })
    }
}

/// A lock manager on the suspending backend, and its count of store futures
/// that suspended.
fn suspending() -> (SessionLock<Suspending>, Arc<AtomicUsize>) {
    let suspended = Arc::new(AtomicUsize::new(0));
    let backend = Suspending {
        file: FileBackend::default(),
        suspended: suspended.clone(),
    };
    (SessionLock::with_backend(backend, opts(5_000)), suspended)
}

/// Runs `scenario` on a current-thread runtime of a thread of its own,
/// failing (not hanging) when it does not end within [`DEADLINE`].
fn on_current_thread_runtime<F>(what: &'static str, scenario: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(scenario());
        let _ = tx.send(());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(()) => h.join().expect("scenario thread"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no progress within {DEADLINE:?}: the runtime's only thread is parked (deadlock)")
        }
    }
}

async fn begin(locks: &SessionLock<Suspending>, session: &Path) -> Attempt<Suspending> {
    Attempt::begin(locks, session, lane_opts())
        .await
        .expect("begin")
}

#[test]
fn a_whole_attempt_on_a_suspending_store_runs_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("suspending.jsonl");
    on_current_thread_runtime("attempt lifecycle", move || async move {
        let (locks, suspended) = suspending();
        let a = begin(&locks, &session).await;
        assert_eq!(a.state(), State::Held);

        // A write under the held lock: check, append, snapshot.
        a.append(&[reply("a", 0)], Durability::None)
            .await
            .expect("held write");
        // The prompt window: released (the held view checked), a foreign
        // benign append through the lock, reacquired and checked.
        a.release_for_prompt().await.expect("release");
        assert_eq!(a.state(), State::Released);
        assert!(is_free(&session), "released for the prompt");
        append(&session, custom("cron", 0));
        let resync = a.reacquire_after_prompt().await.expect("benign");
        assert_eq!(resync.entries, vec![custom("cron", 0)]);
        assert_eq!(a.state(), State::Held);

        // A closure under the lock (the file store's guard-taking API is
        // the file backend's; this one only looks), a store write, a prompt
        // window, a store write with a short lock while released, a read.
        let path = a
            .with_write(|t, _guard| Ok(t.file.path().to_owned()))
            .await
            .expect("closure");
        assert_eq!(path, session);
        a.append(&[reply("a", 1)], Durability::None)
            .await
            .expect("held write");
        let prompted = a
            .around_prompt(async {
                tokio::task::yield_now().await;
                7
            })
            .await
            .expect("prompt window");
        assert_eq!(prompted.output, 7);
        assert!(prompted.reacquired.expect("reacquired").is_empty());
        a.release_for_idle_wait().expect("idle release");
        assert!(is_free(&session));
        a.append(&[reply("a", 2)], Durability::None)
            .await
            .expect("short-lock write");
        assert!(is_free(&session), "the short lock went with the write");
        let read = a.read().await.expect("read");
        assert_eq!(read.entries.len(), 4);
        a.reacquire_after_prompt().await.expect("own writes only");

        // The abort path: released at once, without waiting on the store.
        a.abort(AbortKind::User);
        assert_eq!(a.state(), State::Released);
        assert!(is_free(&session), "the abort freed the lock");
        assert_eq!(
            a.acquire_for_cleanup().await.expect("cleanup"),
            CleanupLock::Held
        );
        a.append(&[reply("a", 3)], Durability::None)
            .await
            .expect("cleanup write");
        a.dispose().expect("dispose");
        assert_eq!(a.state(), State::Disposed);
        assert!(is_free(&session), "disposed");
        assert_eq!(
            entries(&session),
            vec![
                reply("a", 0),
                custom("cron", 0),
                reply("a", 1),
                reply("a", 2),
                reply("a", 3)
            ]
        );
        assert!(
            suspended.load(Ordering::SeqCst) > 10,
            "the store's futures suspended"
        );
    });
}

#[test]
fn takeovers_are_found_on_a_suspending_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("suspending-takeover.jsonl");
    on_current_thread_runtime("takeovers", move || async move {
        let (locks, _) = suspending();
        // A foreign reply in the prompt window.
        let a = begin(&locks, &session).await;
        a.release_for_prompt().await.expect("release");
        append(&session, reply("rogue", 0));
        let err = a
            .reacquire_after_prompt()
            .await
            .expect_err("a foreign reply");
        assert!(
            matches!(
                err,
                Error::Takeover {
                    phase: TakeoverPhase::PromptReacquire,
                    ..
                }
            ),
            "{err}"
        );
        assert!(is_free(&session), "a takeover frees the lock at once");
        assert_eq!(
            a.acquire_for_cleanup().await.expect("cleanup"),
            CleanupLock::NoOp
        );
        let _ = a.dispose();

        // A foreign reply under the held lock: caught before the next write.
        let a = begin(&locks, &session).await;
        append_ignoring_the_lock(&session, &reply("rogue", 1));
        let err = a
            .append(&[reply("a", 0)], Durability::None)
            .await
            .expect_err("changed under the held lock");
        assert!(
            matches!(
                err,
                Error::Takeover {
                    phase: TakeoverPhase::Write,
                    ..
                }
            ),
            "{err}"
        );
        assert!(is_free(&session));
        let _ = a.dispose();

        // Edited under the held lock, then released by a method that never
        // waits: the held view becomes the fence unchecked, and the next
        // acquisition (which awaits its check) finds the edit.
        let session = session.with_file_name("suspending-held-edit.jsonl");
        let a = begin(&locks, &session).await;
        a.append(&[reply("a", 0)], Durability::None)
            .await
            .expect("own write");
        let edited = std::fs::read_to_string(&session)
            .expect("read")
            .replace("\"a-reply-0\"", "\"x-reply-0\"");
        std::fs::write(&session, edited).expect("edit in place");
        a.release_for_idle_wait().expect("released without waiting");
        assert!(is_free(&session));
        let err = a
            .reacquire_after_prompt()
            .await
            .expect_err("edited under the held lock");
        match &err {
            Error::Takeover {
                phase: TakeoverPhase::PromptReacquire,
                reason: TakeoverReason::Changed { change },
                ..
            } => assert_eq!(*change, Takeover::Edited),
            _ => panic!("{err}"),
        }
        let _ = a.dispose();
    });
}

/// Polls `f` once and drops it: a call cancelled while its store future is
/// suspended.
fn cancel_in_flight<F: std::future::Future>(what: &str, f: F) {
    assert!(
        matches!(poll_now(f), Poll::Pending),
        "{what} did not suspend"
    );
}

#[test]
fn calls_cancelled_while_the_store_is_suspended_leave_the_attempt_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("suspending-cancel.jsonl");
    on_current_thread_runtime("cancellation", move || async move {
        let (locks, _) = suspending();
        let a = begin(&locks, &session).await;

        // A write dropped during its check: nothing written, still held,
        // and the held view still trusted.
        cancel_in_flight("append", a.append(&[reply("a", 0)], Durability::None));
        assert_eq!(a.state(), State::Held);
        assert!(!is_free(&session), "still held");
        a.append(&[reply("a", 1)], Durability::None)
            .await
            .expect("the next write");

        // A release dropped during its check: released all the same, with
        // the held view as the fence.
        cancel_in_flight("release", a.release_for_prompt());
        assert_eq!(a.state(), State::Released);
        assert!(is_free(&session), "the release went on");
        append(&session, custom("cron", 0));

        // A reacquire dropped during its check: nothing held, the fence
        // still armed, so the next reacquire accepts the benign entry.
        cancel_in_flight("reacquire", a.reacquire_after_prompt());
        assert_eq!(a.state(), State::Released);
        assert!(is_free(&session), "nothing held");
        let resync = a.reacquire_after_prompt().await.expect("benign");
        assert_eq!(resync.entries, vec![custom("cron", 0)]);
        a.dispose().expect("dispose");
        assert_eq!(entries(&session), vec![reply("a", 1), custom("cron", 0)]);
    });
}

/// A classifier that calls into its own attempt: the call is re-entrant and
/// must fail at once, though the check it runs in was suspended and resumed.
struct CallsBack(
    Arc<std::sync::OnceLock<Attempt<Suspending>>>,
    Arc<AtomicUsize>,
);

impl ChangeClassifier for CallsBack {
    fn is_benign(&self, _: &Value) -> bool {
        if let Some(a) = self.0.get() {
            if matches!(a.release_for_idle_wait(), Err(Error::Misuse { .. })) {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
        }
        true
    }
}

#[test]
fn a_classifier_calling_into_its_attempt_on_a_suspending_store_gets_misuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("suspending-reentry.jsonl");
    on_current_thread_runtime("re-entry", move || async move {
        let (locks, _) = suspending();
        let cell = Arc::new(std::sync::OnceLock::new());
        let misuse = Arc::new(AtomicUsize::new(0));
        let opts = AttemptOptions::default()
            .lock(opts(5_000))
            .classifier(Arc::new(CallsBack(cell.clone(), misuse.clone())));
        let a = Attempt::begin(&locks, &session, opts).await.expect("begin");
        let _ = cell.set(a.clone());
        a.release_for_prompt().await.expect("release");
        append(&session, custom("cron", 0));
        a.reacquire_after_prompt().await.expect("benign");
        assert_eq!(misuse.load(Ordering::SeqCst), 1, "the call was refused");
        assert_eq!(a.state(), State::Held, "and changed nothing");
        a.dispose().expect("dispose");
    });
}

/// The controller's futures stay `Send` on a backend whose store futures
/// really suspend (compiled, never run).
#[allow(dead_code)]
fn futures_on_a_suspending_store_are_send(a: Attempt<Suspending>) {
    fn send<T: Send>(_: &T) {}
    send(&a.release_for_prompt());
    send(&a.reacquire_after_prompt());
    send(&a.around_prompt(std::future::ready(())));
    send(&a.with_write(|_, _| Ok(())));
    send(&a.append(&[], Durability::None));
    send(&a.read());
    send(&a.acquire_for_cleanup());
}

#[test]
fn a_write_cancelled_during_an_unrelated_panic_is_no_panic_of_its_check() {
    // A task with a write suspended in its check panics for a reason of its
    // own: unwinding drops the write, which is a cancel of the check (the
    // classifier never panicked), so nothing may become unusable.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("suspending-unrelated-panic.jsonl");
    on_current_thread_runtime("unrelated panic", move || async move {
        let (locks, _) = suspending();
        let a = begin(&locks, &session).await;
        let task = tokio::spawn({
            let a = a.clone();
            async move {
                let entry = [reply("a", 0)];
                let mut write = std::pin::pin!(a.append(&entry, Durability::None));
                assert!(
                    poll_now(write.as_mut()).is_pending(),
                    "suspended in its check"
                );
                panic!("a bug of the caller, not of the classifier");
            }
        });
        assert!(task.await.is_err(), "the task panicked");
        assert_eq!(a.state(), State::Held, "a cancelled check keeps the lock");
        assert!(!is_free(&session), "still held");
        a.append(&[reply("a", 1)], Durability::None)
            .await
            .expect("the held view is still trusted: no takeover");
        a.dispose().expect("dispose");
        assert_eq!(entries(&session), vec![reply("a", 1)]);
    });
}
