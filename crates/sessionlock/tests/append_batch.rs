//! Batched fenced appends (issue 15 item 4, docs/design.md §5.3): entries
//! pushed one at a time into an `AppendBatch` reach the transcript with one
//! fence check, one `write(2)` and at most one sync, counted through the
//! file-system seam; a batch whose guard lost the session, and a batch
//! dropped without a commit, write nothing; the torn-tail repair still runs
//! before the first write of a handle.
//!
//! The fence check itself (the state lock and the epoch read) is not on the
//! seam; what counts it here is the one `stat` of the transcript's path that
//! every fenced append makes (following the path, §5.3 step 3) and no other
//! step of an append does.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sessionlock::fs::{Fs, RealFs};
use sessionlock::transcript::{Durability, Reader, Transcript};
use sessionlock::{Error, FileBackend, LockOptions, LossCause, SessionLock, StoreBackend};
use sessionlock_lab::trace_recorder::recorder;

/// Counts the seam's calls an append makes.
#[derive(Default)]
struct CountingFs {
    writes: AtomicUsize,
    written: AtomicUsize,
    sync_data: AtomicUsize,
    sync_all: AtomicUsize,
    stats: AtomicUsize,
}

/// What the seam saw since the last [`CountingFs::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Calls {
    writes: usize,
    written: usize,
    sync_data: usize,
    sync_all: usize,
    /// `stat` of the transcript path: one per fenced append.
    stats: usize,
}

impl CountingFs {
    fn take(&self) -> Calls {
        Calls {
            writes: self.writes.swap(0, Ordering::SeqCst),
            written: self.written.swap(0, Ordering::SeqCst),
            sync_data: self.sync_data.swap(0, Ordering::SeqCst),
            sync_all: self.sync_all.swap(0, Ordering::SeqCst),
            stats: self.stats.swap(0, Ordering::SeqCst),
        }
    }
}

impl Fs for CountingFs {
    fn write(&self, file: &File, buf: &[u8]) -> io::Result<usize> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let n = RealFs.write(file, buf)?;
        self.written.fetch_add(n, Ordering::SeqCst);
        Ok(n)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.sync_data.fetch_add(1, Ordering::SeqCst);
        RealFs.sync_data(file)
    }
    fn sync_all(&self, file: &File) -> io::Result<()> {
        self.sync_all.fetch_add(1, Ordering::SeqCst);
        RealFs.sync_all(file)
    }
    fn stat(&self, path: &Path) -> io::Result<std::fs::Metadata> {
        self.stats.fetch_add(1, Ordering::SeqCst);
        RealFs.stat(path)
    }
}

fn locks() -> SessionLock {
    SessionLock::with_backend(
        FileBackend::default(),
        LockOptions::default().timeout(Some(Duration::from_secs(5))),
    )
}

/// A transcript at `session` opened through a [`CountingFs`].
fn counted(session: &Path) -> (Transcript, Arc<CountingFs>) {
    let fs = Arc::new(CountingFs::default());
    let t = FileBackend::default()
        .with_fs(fs.clone())
        .open_transcript(session)
        .expect("open transcript");
    (t, fs)
}

fn entry(i: usize) -> Value {
    json!({"type": "message", "id": format!("m{i}"), "text": "x".repeat(40)})
}

fn values(session: &Path) -> Vec<Value> {
    Reader::open(session)
        .expect("open reader")
        .map(|e| e.expect("entry").value)
        .collect()
}

#[test]
fn a_batch_of_n_pushes_is_one_fence_check_one_write_and_one_sync() {
    const N: usize = 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let (mut t, fs) = counted(&session);
    let guard = locks().acquire(&session).expect("acquire");
    // The epoch's first fenced write also checks the tail: out of the way.
    t.append(&guard, &[], Durability::None).expect("first");
    fs.take();

    // The baseline the batch replaces: one append per entry.
    for i in 0..N {
        t.append(&guard, &[entry(i)], Durability::Data)
            .expect("append");
    }
    let separate = fs.take();
    assert_eq!(
        (separate.writes, separate.sync_data, separate.stats),
        (N, N, N),
        "{separate:?}"
    );

    let mut batch = t.batch(&guard);
    for i in N..2 * N {
        batch.push(&entry(i)).expect("push");
    }
    assert_eq!(batch.len(), N);
    assert!(!batch.is_empty());
    let bytes = batch.bytes();
    assert_eq!(fs.take(), Calls::default(), "pushes touch nothing");
    let appended = batch.commit(Durability::Data).expect("commit");
    let calls = fs.take();
    assert_eq!(
        calls,
        Calls {
            writes: 1,
            written: bytes,
            sync_data: 1,
            sync_all: 0,
            stats: 1,
        }
    );
    assert_eq!(appended.len, bytes as u64);
    assert_eq!(
        appended.offset + appended.len,
        std::fs::metadata(&session).expect("stat").len()
    );
    let all = values(&session);
    assert_eq!(all, (0..2 * N).map(entry).collect::<Vec<_>>(), "push order");

    // The other modes: no sync at all, and one fsync.
    for (durability, sync_data, sync_all) in [(Durability::None, 0, 0), (Durability::Full, 0, 1)] {
        let mut batch = t.batch(&guard);
        for i in 0..N {
            batch.push(&entry(i)).expect("push");
        }
        batch.commit(durability).expect("commit");
        let calls = fs.take();
        assert_eq!(
            (calls.writes, calls.sync_data, calls.sync_all, calls.stats),
            (1, sync_data, sync_all, 1),
            "{durability:?}: {calls:?}"
        );
    }
    guard.release().expect("release");
}

#[test]
fn pushes_keep_raw_bytes_and_refuse_bad_entries_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let (mut t, fs) = counted(&session);
    let guard = locks().acquire(&session).expect("acquire");
    let mut batch = t.batch(&guard);
    batch.push_raw(b" {\"n\": 1.50}\n").expect("raw");
    // Neither one value nor a value a reader accepts: refused at the push,
    // and the batch is unchanged.
    for bad in [&b"{\"n\": 1} {\"m\": 2}"[..], b"{\"n\": 1e400}", b"{\"n\""] {
        let err = batch.push_raw(bad).expect_err("refused");
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
    let mut deep = json!(0);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let err = batch.push(&deep).expect_err("deeper than a reader accepts");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!((batch.len(), batch.bytes()), (1, b"{\"n\": 1.50}\n".len()));
    batch.push(&json!({"m": 2})).expect("push");
    batch.commit(Durability::None).expect("commit");
    assert_eq!(fs.take().writes, 1);
    assert_eq!(
        std::fs::read(&session).expect("read"),
        b"{\"n\": 1.50}\n{\"m\":2}\n"
    );
    guard.release().expect("release");
}

#[test]
fn a_batch_committed_after_the_guard_lost_the_session_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let locks = locks();

    // Revoked: the lock file removed under its holder.
    let session = dir.path().join("revoked.jsonl");
    let (mut t, fs) = counted(&session);
    let guard = locks.acquire(&session).expect("acquire");
    t.append(&guard, &[entry(0)], Durability::None)
        .expect("append");
    let mut batch = t.batch(&guard);
    batch.push(&entry(1)).expect("push");
    batch.push(&entry(2)).expect("push");
    std::fs::remove_file(guard.lock_path()).expect("remove the lock");
    fs.take();
    let err = batch.commit(Durability::Data).expect_err("revoked");
    assert!(
        matches!(
            err,
            Error::Revoked {
                cause: LossCause::Removed,
                ..
            }
        ),
        "{err}"
    );
    let calls = fs.take();
    assert_eq!((calls.writes, calls.sync_data), (0, 0), "{calls:?}");
    assert_eq!(values(&session), [entry(0)]);
    assert!(guard.is_revoked());
    drop(guard);

    // Fenced: the session's epoch is no longer the guard's (its state file
    // deleted under it: fail closed).
    let session = dir.path().join("fenced.jsonl");
    let (mut t, fs) = counted(&session);
    let guard = locks.acquire(&session).expect("acquire");
    t.append(&guard, &[entry(0)], Durability::None)
        .expect("append");
    let mut batch = t.batch(&guard);
    batch.push(&entry(1)).expect("push");
    std::fs::remove_file(dir.path().join("fenced.jsonl.epoch")).expect("remove the state file");
    fs.take();
    let err = batch.commit(Durability::Data).expect_err("fenced");
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    let calls = fs.take();
    assert_eq!((calls.writes, calls.sync_data), (0, 0), "{calls:?}");
    assert_eq!(values(&session), [entry(0)]);
    // Refused, not poisoned: a new guard's batch lands.
    drop(guard);
    let guard = locks.acquire(&session).expect("acquire again");
    let mut batch = t.batch(&guard);
    batch.push(&entry(3)).expect("push");
    batch.commit(Durability::None).expect("commit");
    assert_eq!(values(&session), [entry(0), entry(3)]);
    guard.release().expect("release");
}

#[test]
fn a_dropped_batch_writes_nothing_and_says_so_at_debug() {
    let rec = recorder();
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("dropped.jsonl");
    let (mut t, fs) = counted(&session);
    let guard = locks().acquire(&session).expect("acquire");
    t.append(&guard, &[entry(0)], Durability::None)
        .expect("append");
    fs.take();

    let mut batch = t.batch(&guard);
    for i in 1..=3 {
        batch.push(&entry(i)).expect("push");
    }
    let bytes = batch.bytes();
    drop(batch);
    assert_eq!(fs.take(), Calls::default(), "nothing written or synced");
    assert_eq!(values(&session), [entry(0)]);

    let canonical = t.path().display().to_string();
    let dropped = |e: &sessionlock_lab::trace_recorder::EventSeen| {
        e.target == "sessionlock::transcript"
            && e.message == "uncommitted append batch dropped; nothing written"
            && e.fields.get("session") == Some(&canonical)
    };
    assert!(rec.any_event(|e| dropped(e)
        && e.level == tracing::Level::DEBUG
        && e.fields.get("entries").map(String::as_str) == Some("3")
        && e.fields.get("bytes") == Some(&bytes.to_string())));

    // An empty batch discards nothing: no event. Committed: no event.
    let seen = |rec: &sessionlock_lab::trace_recorder::Recorder| {
        let mut n = 0;
        rec.any_event(|e| {
            n += usize::from(dropped(e));
            false
        });
        n
    };
    let before = seen(rec);
    drop(t.batch(&guard));
    let mut batch = t.batch(&guard);
    batch.push(&entry(4)).expect("push");
    batch.commit(Durability::None).expect("commit");
    assert_eq!(seen(rec), before);
    assert_eq!(values(&session), [entry(0), entry(4)]);
    guard.release().expect("release");
}

#[test]
fn the_first_batch_of_a_handle_repairs_a_torn_tail_before_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("torn.jsonl");
    let mut content = Vec::new();
    serde_json::to_writer(&mut content, &entry(0)).expect("serialize");
    content.push(b'\n');
    content.extend_from_slice(b"{\"torn\": tr");
    std::fs::write(&session, &content).expect("write");

    let (mut t, fs) = counted(&session);
    let guard = locks().acquire(&session).expect("acquire");
    let mut batch = t.batch(&guard);
    batch.push(&entry(1)).expect("push");
    batch.push(&entry(2)).expect("push");
    let bytes = batch.bytes();
    batch.commit(Durability::None).expect("commit");

    let side = dir
        .path()
        .join(format!("torn.jsonl.torn-{}", guard.epoch()));
    assert_eq!(
        std::fs::read(&side).expect("torn bytes kept"),
        b"{\"torn\": tr"
    );
    assert_eq!(values(&session), [entry(0), entry(1), entry(2)]);
    // The repair's copy into the side file, then the batch's one write.
    let calls = fs.take();
    assert_eq!(calls.writes, 2, "{calls:?}");
    assert_eq!(calls.written, 11 + bytes, "{calls:?}");
    guard.release().expect("release");
}

#[test]
fn a_batch_through_the_backend_seam_is_one_store_append() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("seam.jsonl");
        let fs = Arc::new(CountingFs::default());
        let backend = FileBackend::default().with_fs(fs.clone());
        let locks = SessionLock::with_backend(backend.clone(), LockOptions::default());
        let guard = locks.acquire_async(&session).await.expect("acquire");
        let mut store = backend.open_store(guard.key()).await.expect("store");
        fs.take();
        let mut batch = guard.store_batch(&mut store);
        for i in 0..5 {
            batch.push(&entry(i)).expect("push");
        }
        let bytes = batch.bytes() as u64;
        let appended = batch.commit_async(Durability::Data).await.expect("commit");
        assert_eq!((appended.offset, appended.len), (0, bytes));
        let calls = fs.take();
        assert_eq!(
            (calls.writes, calls.sync_data, calls.stats),
            (1, 1, 1),
            "{calls:?}"
        );
        assert_eq!(values(&session), (0..5).map(entry).collect::<Vec<_>>());

        // Revoked through the seam too: nothing written.
        let mut batch = guard.store_batch(&mut store);
        batch.push(&entry(9)).expect("push");
        std::fs::remove_file(guard.lock_path()).expect("remove the lock");
        let err = batch
            .commit_async(Durability::Data)
            .await
            .expect_err("revoked");
        assert!(matches!(err, Error::Revoked { .. }), "{err}");
        assert_eq!(fs.take().writes, 0);
        assert_eq!(values(&session).len(), 5);
    });
}
