//! `SessionLock::with_lock_async` on PostgreSQL, whose lease checks are
//! round trips to the server: the scope's watcher must never hold the
//! acquisition's operations across one, or a fenced call of the work (which
//! blocks its thread until they are free) would wait for ever in the same
//! task, and the watchdog with it.

use std::sync::mpsc;
use std::time::Duration;

use sessionlock::{Error, LockOptions, SessionLock};
use sessionlock_lab::pgserver::shared_url;
use sessionlock_postgres::PgBackend;

mod common;
use common::fresh;

#[test]
fn fenced_calls_and_extensions_inside_the_scope_never_wait_for_its_watcher() {
    let (done, finished) = mpsc::channel();
    // On a thread of its own: a deadlock blocks it for ever, and the test
    // reports it instead of hanging.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let r = rt.block_on(async {
            let backend = PgBackend::connect(&shared_url())?;
            let locks = SessionLock::with_backend(backend, LockOptions::default());
            let session = fresh("scoped/fenced");
            locks
                .with_lock_async(session.as_str(), locks.options(), async |guard| {
                    for _ in 0..200 {
                        // Lets the watcher run until it suspends: in its
                        // set-up, or in a check, a round trip to the server.
                        tokio::task::yield_now().await;
                        guard.with_fence(|| ())?;
                        guard.extend()?;
                    }
                    Ok::<_, Error>(guard.epoch())
                })
                .await
        });
        let _ = done.send(r);
    });
    let epoch = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the scope deadlocked: a fenced call waited for the scope's own watcher")
        .expect("scoped hold");
    assert!(epoch > 0);
}
