//! Driving the backend's futures from blocking code, and keeping blocking
//! work off an async runtime's worker threads.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

thread_local! {
    /// Whether this thread refuses waits ([`without_waiting`]), and whether
    /// one was refused.
    static NO_WAIT: std::cell::Cell<NoWait> = const { std::cell::Cell::new(NoWait::Off) };
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NoWait {
    Off,
    On,
    Refused,
}

/// Runs `f` refusing waits on this thread: where the backend would wait
/// for another process (the session's state lock, held by someone else),
/// it fails at once instead ([`refuse_wait`]), before it changes anything.
/// Returns `f`'s result and whether a wait was refused.
pub(crate) fn without_waiting<T>(f: impl FnOnce() -> T) -> (T, bool) {
    struct Reset(NoWait);
    impl Drop for Reset {
        fn drop(&mut self) {
            // An enclosing scope keeps a refusal made inside this one.
            let _ = NO_WAIT.try_with(|c| {
                let inner = c.get();
                c.set(match self.0 {
                    NoWait::Off => NoWait::Off,
                    _ if inner == NoWait::Refused => NoWait::Refused,
                    outer => outer,
                });
            });
        }
    }
    let outer = NO_WAIT.with(|c| c.replace(NoWait::On));
    let reset = Reset(outer);
    let out = f();
    let refused = NO_WAIT.with(|c| c.get()) == NoWait::Refused;
    drop(reset);
    (out, refused)
}

/// Whether a wait must be refused here (inside [`without_waiting`]); if
/// so, it is recorded as refused, and the caller fails at once.
pub(crate) fn refuse_wait() -> bool {
    NO_WAIT
        .try_with(|c| {
            if c.get() == NoWait::Off {
                return false;
            }
            c.set(NoWait::Refused);
            true
        })
        .unwrap_or(false)
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives a future on the current thread. Used by the blocking API, whose
/// file-backend futures never suspend; a future that does (a database
/// client's) parks the thread until woken.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Runs `f`, which may block (an `fsync`, a wait for a `flock`), without
/// stalling an async runtime: on a worker thread of tokio's multi-thread
/// runtime, through `block_in_place`, which hands the worker's other tasks
/// to another thread first; elsewhere (a plain thread, the blocking pool, a
/// current-thread runtime, which has no other worker to hand them to, the
/// thread in a runtime's `block_on`) inline.
///
/// `block_in_place` panics off a worker where the thread is in a runtime
/// that forbids it: a `LocalSet` driven by a multi-thread runtime's
/// `block_on` (the flavor is `MultiThread` there too), or a multi-thread
/// handle entered inside a current-thread runtime. tokio offers no way to
/// ask whether a thread is one of its workers, so a worker is recognised by
/// the name tokio gives it; a runtime whose threads are named otherwise
/// runs `f` inline, as every thread did before the async API offloaded.
pub(crate) fn offload<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h)
            if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                && on_tokio_worker() =>
        {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Whether this thread bears a name tokio gives the threads of a runtime
/// by default: `tokio-rt-worker` (the tokio this crate builds with),
/// `tokio-runtime-worker` (earlier releases). Its workers, and its blocking
/// pool's threads, where `block_in_place` runs `f` inline.
fn on_tokio_worker() -> bool {
    matches!(
        std::thread::current().name(),
        Some("tokio-rt-worker" | "tokio-runtime-worker")
    )
}
