//! The native half of the `sessionlock` Node.js package (`bindings/node`).
//!
//! JavaScript never calls this module directly: `index.js` wraps it, turns
//! its tagged errors into `SessionLockError` subclasses, and adds what is
//! JavaScript's business (`AbortSignal`, `AsyncLocalStorage` for fences,
//! `Symbol.asyncDispose`, the OpenClaw drop-in). Every operation that can
//! wait or touch the disk or network returns a promise and runs on a tokio
//! runtime, off the JavaScript thread; the only synchronous calls are
//! getters, `abort`, and the release of everything at process exit.
//!
//! Modules, one concept each:
//! - `backend`: which backend a call runs on, and the lock options;
//! - `errors`: library errors and panics as tagged JavaScript errors;
//! - `lock`: `acquire` and the `Lock` a JavaScript caller holds;
//! - `fence`: a fence held across an async JavaScript callback;
//! - `attempt`: the attempt controller;
//! - `transcript`: the fenced transcript store;
//! - `diag`: `status` and `doctor`;
//! - `metrics`: the library's metrics of this process (`metrics()`), and
//!   the recorder that keeps them;
//! - `instance`: one native instance per process, whatever copies of the
//!   package are loaded.

// napi-derive registers the exports only outside `cfg(test)`; in a test
// build (clippy --all-targets) they would all look unused.
#![cfg_attr(test, allow(dead_code))]

mod attempt;
mod backend;
mod diag;
mod errors;
mod fence;
mod instance;
mod lock;
mod metrics;
mod transcript;

use std::future::Future;

use napi::bindgen_prelude::{PromiseRaw, ToNapiValue};
use napi::Env;

/// The runtime every call runs on: one worker thread. Calls are polled in
/// the order JavaScript made them, so acquisitions of one session from one
/// thread join this process's FIFO queue in call order; and each call wakes
/// one thread, not whichever of several is idle. The backends' waits are
/// event-driven and their work is short (the file store's writes and the
/// directory scans run on blocking threads; PostgreSQL has its own
/// runtime), so one worker is not a bottleneck.
///
/// The library's warnings (a lock that cannot be released, an ignored
/// environment value) go to stderr at the level of `SESSIONLOCK_LOG`
/// (default `warn`), as the command line's do, unless the process already
/// has a `tracing` subscriber. Its metrics are kept for `metrics()`
/// (`metrics.rs`).
#[napi_derive::module_init]
fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("SESSIONLOCK_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        use std::io::IsTerminal;
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal())
            .with_target(false)
            .try_init();
        metrics::install();
        if let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            // Keeps tokio's thread name: the library recognises its
            // workers by it, to wait in `block_in_place` rather than stall
            // the worker (`sessionlock::blocking::offload`).
            .enable_all()
            .build()
        {
            napi::bindgen_prelude::create_custom_tokio_runtime(rt);
        }
    });
}

/// Runs `fut` on the runtime and hands its outcome to a promise: a library
/// error rejects it as a tagged error, a panic as a `SESSIONLOCK_PANIC`
/// one; nothing unwinds into JavaScript.
pub(crate) fn promise<'env, T, F>(env: &'env Env, fut: F) -> napi::Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Result<T, sessionlock::Error>> + Send + 'static,
{
    env.spawn_future(async move {
        match errors::CatchUnwind::new(fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(errors::to_js(&e)),
            Err(panic) => Err(errors::panicked(&*panic)),
        }
    })
}

/// Runs a synchronous call, turning a library error or a panic into a
/// tagged JavaScript error.
pub(crate) fn sync<T>(f: impl FnOnce() -> Result<T, sessionlock::Error>) -> napi::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(errors::to_js(&e)),
        Err(panic) => Err(errors::panicked(&*panic)),
    }
}
