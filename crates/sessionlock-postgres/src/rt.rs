//! The backend's own runtime: every statement runs on it, so the futures the
//! seam hands out only wait on a channel and work under any executor (the
//! blocking API's `block_on`, a current-thread tokio runtime, the
//! watchdog's thread) without stalling the caller's runtime.

use std::future::Future;
use std::sync::OnceLock;

use sessionlock::Error;
use tokio::runtime::{Builder, Runtime};
use tokio::sync::oneshot;

/// The process's PostgreSQL runtime: two worker threads, started on first
/// use and kept for the life of the process.
pub(crate) fn runtime() -> Result<&'static Runtime, Error> {
    static RT: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sessionlock-pg")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Backend {
        op: "start the runtime for",
        target: "postgres".to_owned(),
        source: e.clone().into(),
    })
}

/// Runs `fut` on the backend's runtime and waits for its result.
///
/// Dropping the returned future does not stop `fut`: it runs to its end,
/// and its result is dropped (use [`run_undo`] when that result holds
/// something to give back).
pub(crate) fn run<T: Send + 'static>(
    fut: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> impl Future<Output = Result<T, Error>> + Send {
    run_undo(fut, |_| async {})
}

/// As [`run`]; when the caller has gone by the time `fut` finishes, `undo`
/// gets the result (to release a lease nobody will hold).
pub(crate) fn run_undo<T, U, F>(
    fut: impl Future<Output = Result<T, Error>> + Send + 'static,
    undo: F,
) -> impl Future<Output = Result<T, Error>> + Send
where
    T: Send + 'static,
    U: Future<Output = ()> + Send + 'static,
    F: FnOnce(T) -> U + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let started = runtime().map(|rt| {
        rt.spawn(async move {
            let out = fut.await;
            if let Err(Ok(v)) = tx.send(out) {
                undo(v).await;
            }
        })
    });
    async move {
        started?;
        rx.await.map_err(|_| Error::Backend {
            op: "finish an operation on",
            target: "postgres".to_owned(),
            source: "the backend's task ended without an answer (a panic; see the log)".into(),
        })?
    }
}

/// Runs `fut` on the backend's runtime and blocks this thread until it
/// ends (for the blocking API: a thread of any kind, inside a runtime or
/// not, since the work runs elsewhere).
///
/// # Errors
/// `Backend` when the runtime cannot start or the task panicked.
pub(crate) fn block<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    runtime()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| Error::Backend {
        op: "finish an operation on",
        target: "postgres".to_owned(),
        source: "the backend's task ended without an answer (a panic; see the log)".into(),
    })
}
