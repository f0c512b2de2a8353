//! `SessionLock::with_lock_async`: the scoped async hold. Its work runs
//! while the lock is owned, is cancelled when the lock is lost, and the lock
//! is released at the end on every path.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sessionlock::transcript::{Durability, Transcript};
use sessionlock::{Error, LockOptions, LossCause, SessionLock, TryAcquireError};

fn lock_path(session: &Path) -> PathBuf {
    let mut p = session.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

fn opts() -> LockOptions {
    LockOptions::default()
        .timeout(Some(Duration::from_secs(10)))
        .lane("scoped")
}

/// The lock is free: another instance takes it at once.
fn assert_free(session: &Path) {
    let g = SessionLock::new()
        .try_acquire(session)
        .expect("the scope released the lock");
    g.release().expect("release");
}

/// Sets its flag when dropped: whether the work future was dropped.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn returns_the_works_value_and_releases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let locks = SessionLock::new();
    let n = locks
        .with_lock_async(&session, &opts(), async |guard| {
            // Owned while the work runs: nobody else gets it.
            assert!(matches!(
                SessionLock::new().try_acquire(&session),
                Err(TryAcquireError::WouldBlock { .. })
            ));
            let mut t = Transcript::open(&session)?;
            t.append(guard, &[json!({"n": 1}), json!({"n": 2})], Durability::Data)?;
            Ok::<_, Error>(t.reader()?.count())
        })
        .await
        .expect("scoped hold");
    assert_eq!(n, 2);
    assert!(!lock_path(&session).exists());
    assert_free(&session);
}

#[tokio::test(flavor = "current_thread")]
async fn the_works_own_error_is_returned_and_the_lock_released() {
    #[derive(Debug, PartialEq)]
    enum AppError {
        Mine(&'static str),
        Lock(String),
    }
    impl From<Error> for AppError {
        fn from(e: Error) -> Self {
            AppError::Lock(e.to_string())
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let r: Result<(), AppError> = SessionLock::new()
        .with_lock_async(&session, &opts(), async |_guard| Err(AppError::Mine("no")))
        .await;
    assert_eq!(r, Err(AppError::Mine("no")));
    assert_free(&session);
}

#[tokio::test(flavor = "current_thread")]
async fn a_busy_lock_fails_the_acquisition_and_runs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let holder = SessionLock::new().acquire(&session).expect("holder");
    let ran = AtomicBool::new(false);
    let r = SessionLock::new()
        .with_lock_async(
            &session,
            &opts().timeout(Some(Duration::from_millis(100))),
            async |_guard| {
                ran.store(true, Ordering::SeqCst);
                Ok::<_, Error>(())
            },
        )
        .await;
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(!ran.load(Ordering::SeqCst));
    holder.release().expect("release");
}

// The watchdog revokes a hold past `max_hold`: the work, stuck on an await,
// is dropped there and the loss returned, at once rather than when the work
// would have ended.
#[tokio::test(flavor = "current_thread")]
async fn revocation_cancels_the_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let started = std::time::Instant::now();
    let r = SessionLock::new()
        .with_lock_async(
            &session,
            &opts().max_hold(Duration::from_millis(200)),
            async |_guard| {
                let _flag = flag;
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, Error>(())
            },
        )
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Revoked {
                cause: LossCause::Overdue,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(dropped.load(Ordering::SeqCst), "the work was not dropped");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_free(&session);
}

// Another program removes the lock file while the work waits: the scope
// learns it from the lock directory's notifications and stops the work.
#[tokio::test(flavor = "current_thread")]
async fn removal_by_another_program_cancels_the_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let lock = lock_path(&session);
    let r = SessionLock::new()
        .with_lock_async(&session, &opts(), async |_guard| {
            let status = std::process::Command::new("rm")
                .arg(&lock)
                .status()
                .expect("rm");
            assert!(status.success());
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        })
        .await;
    assert!(
        matches!(
            r,
            Err(Error::Revoked {
                cause: LossCause::Removed,
                ..
            })
        ),
        "{r:?}"
    );
    assert_free(&session);
}

// The work finished, but the lock was not the scope's to the end: the
// release reports it instead of the work's value.
#[tokio::test(flavor = "current_thread")]
async fn a_loss_the_work_did_not_notice_is_reported_by_the_release() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let lock = lock_path(&session);
    let r = SessionLock::new()
        .with_lock_async(&session, &opts(), async |_guard| {
            fs::remove_file(&lock).expect("remove the lock");
            Ok::<_, Error>(7)
        })
        .await;
    assert!(matches!(r, Err(Error::Revoked { .. })), "{r:?}");
    assert_free(&session);
}

// Dropping the scope's future while the work runs releases the lock.
#[tokio::test(flavor = "current_thread")]
async fn dropping_the_scope_releases_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let locks = SessionLock::new();
    let opts = opts();
    let scope = locks.with_lock_async(&session, &opts, async |_guard| {
        std::future::pending::<()>().await;
        Ok::<_, Error>(())
    });
    let r = tokio::time::timeout(Duration::from_millis(200), scope).await;
    assert!(r.is_err(), "the work never ends");
    assert_free(&session);
}

// The scope's future can be spawned on a multi-thread runtime (it is
// `Send`), and waiters queue behind it as behind any hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_scopes_take_turns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            SessionLock::new()
                .with_lock_async(&session, &opts(), async |guard| {
                    let mut t = Transcript::open(&session)?;
                    let before = t.reader()?.count();
                    tokio::task::yield_now().await;
                    t.append(guard, &[json!({"i": i})], Durability::Data)?;
                    Ok::<_, Error>(before)
                })
                .await
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.expect("task").expect("scoped hold"));
    }
    seen.sort_unstable();
    // Each saw every earlier append and nobody else's in its hold.
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    assert_free(&session);
}
