//! Server-side bounds: a statement that waits for a row lock past
//! `lock_timeout` (a wedged writer holding the session's row) ends with a
//! typed error naming the session instead of waiting without bound.

use std::time::{Duration, Instant};

use sessionlock::{LockOptions, SessionLock};
use sessionlock_lab::pgserver::{fresh_database, shared_url};
use sessionlock_postgres::{PgBackend, PgConfig};

mod common;

#[test]
fn a_row_locked_by_a_wedged_writer_ends_the_wait_at_lock_timeout_with_a_typed_error() {
    let url = fresh_database(&shared_url());
    let cfg = PgConfig::from_url(&url)
        .unwrap()
        .lock_timeout(Duration::from_millis(300));
    let b = PgBackend::connect_with(&url, cfg).expect("connect");
    let locks = SessionLock::with_backend(b, LockOptions::default());
    let s = "timeouts/wedged-row";
    // The session exists, free.
    locks
        .acquire(s)
        .expect("acquire")
        .release()
        .expect("release");
    // A writer that ignores sessionlock locks the row and sits there.
    let mut wedged = common::hold_row(&url, s, "FOR UPDATE", 5.0);
    let started = Instant::now();
    let e = locks.acquire(s).map(drop).unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code(), "timeout", "{e}");
    assert!(e.to_string().contains(s), "names the session: {e}");
    assert!(
        took < Duration::from_secs(3),
        "bounded by lock_timeout: took {took:?}"
    );
    let _ = wedged.kill();
    let _ = wedged.wait();
}
