//! The lock and the transcript in the tokio contexts callers put them in:
//! a `LocalSet` on a multi-thread runtime (where in-place blocking is not
//! allowed), and an async waiter of an acquisition's operations next to a
//! blocking one in the same task. Each test runs its scenario on a thread
//! of its own and waits for it with a deadline, so that a hang fails the
//! test instead of wedging the binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sessionlock::transcript::Durability;
use sessionlock::{FileBackend, Guard, LockOptions, SessionLock};

fn opts() -> LockOptions {
    LockOptions::default().timeout(Some(Duration::from_secs(10)))
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `f` on a thread of its own: its result, or `None` if it did not
/// finish by the deadline (a hang) or panicked (the panic is printed).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// An `flock(1)` process holding the exclusive `flock` of `path` until its
/// standard input closes, as another program holding a session's state file
/// would. Returns once the lock is held.
fn foreign_flock(path: &Path) -> Child {
    let child = Command::new("flock")
        .arg("-x")
        .arg(path)
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn flock(1)");
    let probe = std::fs::File::open(path).expect("open state file");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rustix::fs::flock(&probe, rustix::fs::FlockOperation::NonBlockingLockShared) {
            Err(_) => break,
            Ok(()) => {
                let _ = rustix::fs::flock(&probe, rustix::fs::FlockOperation::Unlock);
            }
        }
        assert!(Instant::now() < deadline, "flock(1) never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

fn session_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("s.jsonl")
}

#[test]
fn a_transcript_append_in_a_local_set_on_a_multi_thread_runtime_does_not_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = session_in(&dir);
    let done = within(Duration::from_secs(30), move || {
        let rt = multi_thread();
        let local = tokio::task::LocalSet::new();
        let locks = SessionLock::with_backend(FileBackend::default(), opts());
        local.block_on(&rt, async {
            let guard = locks.acquire_async(&session).await.expect("acquire");
            let mut t = FileBackend::default()
                .open_transcript(&session)
                .expect("open transcript");
            // A `!Send` task, as a LocalSet exists for.
            tokio::task::spawn_local(async move {
                t.append(&guard, &[json!({"type": "message"})], Durability::Data)
                    .map(|a| a.len)
            })
            .await
            .expect("the task did not panic")
        })
    });
    let appended = done.expect("the append finished without panicking");
    assert!(appended.expect("append") > 0);
}

#[test]
fn an_async_acquire_in_a_local_set_waits_out_a_foreign_state_lock_without_panicking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = session_in(&dir);
    let backend = FileBackend::default();
    // A first acquisition creates the state file; then another program
    // holds its lock for longer than a sessionlock process ever does.
    let locks = SessionLock::with_backend(backend.clone(), opts());
    locks
        .acquire(&session)
        .expect("first acquire")
        .release()
        .expect("release");
    let key = backend.resolve(&session).expect("resolve").expect("key");
    let mut holder = foreign_flock(&FileBackend::epoch_path(&key));
    let stdin = holder.stdin.take().expect("flock stdin");
    let (tx, rx) = mpsc::channel::<()>();
    // Lets the other program go once the acquirer has had to wait for it.
    std::thread::spawn(move || {
        let _ = rx.recv_timeout(Duration::from_millis(300));
        drop(stdin);
    });
    let done = within(Duration::from_secs(30), move || {
        let rt = multi_thread();
        let local = tokio::task::LocalSet::new();
        let locks = SessionLock::with_backend(FileBackend::default(), opts());
        let out = local.block_on(&rt, async {
            tokio::task::spawn_local(async move {
                locks.acquire_async(&session).await.map(|g| g.epoch())
            })
            .await
            .expect("the task did not panic")
        });
        drop(tx);
        out
    });
    let _ = holder.wait();
    let epoch = done.expect("the acquire finished without panicking");
    assert!(epoch.expect("acquire") >= 2);
}

/// Another thread in a fenced write of `guard`'s acquisition, started and
/// inside the fence when this returns; it leaves once `go` is sent.
fn fenced_writer(
    guard: &Arc<Guard>,
) -> (
    std::thread::JoinHandle<sessionlock::Result<()>>,
    mpsc::Sender<()>,
) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let writer = {
        let guard = guard.clone();
        std::thread::spawn(move || {
            guard.with_fence(|| {
                entered_tx.send(()).expect("signal");
                let _ = go_rx.recv_timeout(Duration::from_secs(10));
            })
        })
    };
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the fenced write started");
    (writer, go_tx)
}

#[test]
fn a_blocking_check_beside_a_queued_lost_in_the_same_task_does_not_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = session_in(&dir);
    let locks = SessionLock::with_backend(FileBackend::default(), opts());
    let guard = Arc::new(locks.acquire(&session).expect("acquire"));
    let done = within(Duration::from_secs(20), move || {
        // Another thread is in a fenced write of this acquisition.
        let (writer, go_tx) = fenced_writer(&guard);
        let rt = current_thread();
        let checked = rt.block_on(async {
            // A supervisor watches the lock while the task's own work makes
            // a fenced call (what `Guard::with_fence` is for).
            let supervise = async {
                tokio::select! {
                    e = guard.lost() => Some(e),
                    () = tokio::time::sleep(Duration::from_millis(200)) => None,
                }
            };
            let work = async {
                // `lost` has now looked once and waits for the writer.
                tokio::task::yield_now().await;
                go_tx.send(()).expect("release the writer");
                guard.check()
            };
            tokio::join!(supervise, work).1
        });
        writer.join().expect("writer").expect("fenced write");
        checked
    });
    let checked = done.expect("the blocking check returned (no hang)");
    checked.expect("the guard still owns its lock");
}

#[test]
fn the_watchdog_revokes_on_time_while_a_queued_lost_waits_in_a_busy_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = session_in(&dir);
    let max_hold = Duration::from_millis(400);
    let locks = SessionLock::with_backend(FileBackend::default(), opts().max_hold(max_hold));
    let guard = Arc::new(locks.acquire(&session).expect("acquire"));
    let acquired = Instant::now();
    let done = within(Duration::from_secs(30), move || {
        let (writer, go_tx) = fenced_writer(&guard);
        let rt = current_thread();
        let revoked_after = rt.block_on(async {
            let supervise = async {
                tokio::select! {
                    e = guard.lost() => Some(e),
                    () = tokio::time::sleep(Duration::from_secs(10)) => None,
                }
            };
            // A task busy with CPU-bound work, which the watchdog exists for:
            // it is a thread of its own so that such a holder still loses
            // its lock on time.
            let busy = async {
                tokio::task::yield_now().await;
                go_tx.send(()).expect("release the writer");
                let deadline = Instant::now() + Duration::from_secs(5);
                while !guard.is_revoked() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                guard.is_revoked().then(|| acquired.elapsed())
            };
            tokio::join!(supervise, busy).1
        });
        let _ = writer.join();
        revoked_after
    });
    let revoked_after = done.expect("the scenario finished");
    let after = revoked_after.expect("the watchdog revoked the guard while the task was busy");
    assert!(
        after < max_hold + Duration::from_secs(2),
        "revoked {after:?} after acquisition, lease {max_hold:?}"
    );
}

/// One fenced append with an `fsync` (what goes through the offload) of a
/// fresh session in `dir`, named `name`.
fn append_once(dir: &Path, name: &str) -> sessionlock::Result<u64> {
    let session = dir.join(format!("{name}.jsonl"));
    let locks = SessionLock::with_backend(FileBackend::default(), opts());
    let guard = locks.acquire(&session)?;
    let mut t = FileBackend::default().open_transcript(&session)?;
    let a = t.append(&guard, &[json!({"type": "message"})], Durability::Data)?;
    guard.release()?;
    Ok(a.len)
}

#[test]
fn a_blocking_append_works_in_every_runtime_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_owned();
    let done = within(Duration::from_secs(60), move || {
        let mut out = Vec::new();
        out.push(("plain thread", append_once(&root, "plain")));
        let multi = multi_thread();
        out.push((
            "multi-thread block_on",
            multi.block_on(async { append_once(&root, "mt-block-on") }),
        ));
        let r = root.clone();
        out.push((
            "multi-thread task",
            multi
                .block_on(multi.spawn(async move { append_once(&r, "mt-task") }))
                .expect("task"),
        ));
        let r = root.clone();
        out.push((
            "multi-thread spawn_blocking",
            multi
                .block_on(multi.spawn_blocking(move || append_once(&r, "mt-blocking")))
                .expect("blocking task"),
        ));
        let current = current_thread();
        out.push((
            "current-thread block_on",
            current.block_on(async { append_once(&root, "ct-block-on") }),
        ));
        let r = root.clone();
        out.push((
            "current-thread spawn_blocking",
            current
                .block_on(current.spawn_blocking(move || append_once(&r, "ct-blocking")))
                .expect("blocking task"),
        ));
        let local = tokio::task::LocalSet::new();
        let r = root.clone();
        out.push((
            "LocalSet on a current-thread runtime",
            local
                .block_on(&current, async move {
                    tokio::task::spawn_local(async move { append_once(&r, "ct-local") }).await
                })
                .expect("local task"),
        ));
        out
    });
    for (context, appended) in done.expect("every context finished without panicking") {
        let n = appended.unwrap_or_else(|e| panic!("{context}: {e}"));
        assert!(n > 0, "{context}");
    }
}
