//! Bounded waits for the attempt tests: a runtime, a future or a thread
//! that must end within [`BOUND`], so a regression fails instead of
//! hanging the run.

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The bound on every wait of these tests that is expected to end soon.
pub const BOUND: Duration = Duration::from_secs(10);

/// A multi-thread runtime with two workers, timers and I/O.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Awaits `f`, failing the test if it takes longer than [`BOUND`].
pub async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(BOUND, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {BOUND:?}"),
    }
}

/// Polls `f` once, with a waker that does nothing: what a call that must
/// not wait returns.
pub fn poll_now<F: Future>(f: F) -> Poll<F::Output> {
    let mut f = std::pin::pin!(f);
    f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

/// Runs `f` on a thread of its own and fails the test if it does not end
/// within [`BOUND`] (a deadlock fails instead of hanging the run); a panic
/// in `f` is the test's panic.
pub fn on_thread<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(BOUND) {
        Ok(v) => {
            let _ = h.join();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: hung for {BOUND:?} (deadlock?)")
        }
    }
}
