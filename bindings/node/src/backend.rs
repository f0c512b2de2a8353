//! Which backend a call runs on, and the options of an acquisition.
//!
//! `backend` is `"file"` (lock files beside the transcripts, the default)
//! or a `postgres://` / `postgresql://` URL; unset, `SESSIONLOCK_BACKEND`
//! decides, as for the command-line tool. On PostgreSQL the session name is
//! the key, as given. One [`PgBackend`] is kept per URL for the life of the
//! process, so its connections are shared by every call that names it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use napi_derive::napi;
use sessionlock::{
    Error, FileBackend, Guard, HoldExceededPolicy, LockOptions, SessionLock, StoreBackend,
};
use sessionlock_postgres::PgBackend;

use crate::errors::misuse;

/// The variable that picks the backend when an option does not.
const ENV_BACKEND: &str = "SESSIONLOCK_BACKEND";

/// Lock options as JavaScript passes them (`index.js` has checked their
/// types; the numbers' ranges are checked here).
#[napi(object)]
#[derive(Default, Clone)]
pub struct LockOpts {
    /// Acquire budget in ms; `Infinity` waits forever.
    pub timeout_ms: Option<f64>,
    /// The lease in ms.
    pub max_hold_ms: Option<f64>,
    /// Age in ms after which a live lock is reported `too-old`.
    pub stale_ms: Option<f64>,
    /// Diagnostic lane.
    pub lane: Option<String>,
    /// Diagnostic run id.
    pub run_id: Option<String>,
    /// Share an acquisition this process holds.
    pub reentrant: Option<bool>,
    /// `reclaim` or `report`.
    pub hold_exceeded: Option<String>,
    /// OpenClaw-compatible lock files.
    pub openclaw_compat: Option<bool>,
    /// `file` or a PostgreSQL URL.
    pub backend: Option<String>,
}

/// Milliseconds from JavaScript: a non-negative safe integer, or `Infinity`
/// where `infinite` allows it (`None` then).
pub(crate) fn millis(name: &str, v: f64, infinite: bool) -> Result<Option<Duration>, Error> {
    if v == f64::INFINITY && infinite {
        return Ok(None);
    }
    if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0) {
        return Err(misuse(format!(
            "{name} must be a non-negative integer number of milliseconds{}, not {v}",
            if infinite { " or Infinity" } else { "" }
        )));
    }
    Ok(Some(Duration::from_millis(v as u64)))
}

impl LockOpts {
    /// The library's options: the values given here, else the
    /// environment's, else the defaults: a call's own options win, as a
    /// `LockOptions` builder value does in Rust and a flag on the command
    /// line (see `sessionlock::config`).
    pub(crate) fn resolve(&self) -> Result<LockOptions, Error> {
        let mut o = LockOptions::from_env();
        if let Some(t) = self.timeout_ms {
            o = o.timeout(millis("timeoutMs", t, true)?);
        }
        if let Some(m) = self.max_hold_ms {
            let d = millis("maxHoldMs", m, false)?.unwrap_or_default();
            if d.is_zero() {
                return Err(misuse("maxHoldMs must be greater than zero"));
            }
            o = o.max_hold(d);
        }
        if let Some(s) = self.stale_ms {
            o = o.stale_after(millis("staleMs", s, false)?.unwrap_or_default());
        }
        if let Some(p) = &self.hold_exceeded {
            o = o.hold_exceeded(match p.as_str() {
                "reclaim" => HoldExceededPolicy::Reclaim,
                "report" => HoldExceededPolicy::Report,
                other => {
                    return Err(misuse(format!(
                        "holdExceeded must be \"reclaim\" or \"report\", not {other:?}"
                    )))
                }
            });
        }
        if let Some(yes) = self.openclaw_compat {
            o = o.openclaw_compat(yes);
        }
        o.lane = self.lane.clone();
        o.run_id = self.run_id.clone();
        o.reentrant = self.reentrant.unwrap_or(false);
        Ok(o)
    }
}

/// A backend a call runs on.
#[derive(Clone)]
pub(crate) enum Backend {
    File(SessionLock<FileBackend>),
    Pg(SessionLock<PgBackend>),
}

impl Backend {
    /// The backend `spec` names, else `SESSIONLOCK_BACKEND`'s, else files;
    /// a PostgreSQL backend is connected (once per URL).
    pub(crate) async fn open(spec: Option<&str>) -> Result<Backend, Error> {
        let chosen = match spec {
            Some(s) => s.trim().to_owned(),
            None => std::env::var(ENV_BACKEND).unwrap_or_default(),
        };
        let chosen = chosen.trim();
        if chosen.is_empty() || chosen == "file" {
            return Ok(Backend::File(file()));
        }
        if chosen.starts_with("postgres://") || chosen.starts_with("postgresql://") {
            return Ok(Backend::Pg(pg(chosen).await?));
        }
        let from = if spec.is_some() {
            "backend"
        } else {
            ENV_BACKEND
        };
        Err(misuse(format!(
            "{from}: unknown backend {:?}: use \"file\" or a postgres:// URL",
            chosen.split("://").next().unwrap_or(chosen)
        )))
    }
}

/// The file backend (one for the process: the options come with each call).
fn file() -> SessionLock<FileBackend> {
    static FILE: OnceLock<SessionLock<FileBackend>> = OnceLock::new();
    FILE.get_or_init(SessionLock::new).clone()
}

/// The file backend, if `spec` (or, unset, `SESSIONLOCK_BACKEND`) names it.
pub(crate) fn file_if_chosen(spec: Option<&str>) -> Option<SessionLock<FileBackend>> {
    let chosen = match spec {
        Some(s) => s.trim().to_owned(),
        None => std::env::var(ENV_BACKEND).unwrap_or_default(),
    };
    matches!(chosen.trim(), "" | "file").then(file)
}

/// The PostgreSQL backend of `url`, connected on first use.
async fn pg(url: &str) -> Result<SessionLock<PgBackend>, Error> {
    static CONNECTED: OnceLock<Mutex<HashMap<String, PgBackend>>> = OnceLock::new();
    let map = CONNECTED.get_or_init(Default::default);
    let known = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(url)
        .cloned();
    let backend = match known {
        Some(b) => b,
        None => {
            let b = PgBackend::connect_async(url).await?;
            map.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(url.to_owned())
                .or_insert(b)
                .clone()
        }
    };
    Ok(SessionLock::with_backend(backend, LockOptions::default()))
}

/// What differs between the backends in how the binding drives them.
pub(crate) trait Kind: StoreBackend + Sized {
    /// Whether the library's synchronous calls (release, check, extend)
    /// wait on the network, and so must run on a blocking thread rather
    /// than inline on the runtime (the file backend's are a few system
    /// calls, which the async API runs inline too).
    const NETWORK: bool;

    /// Releases `g` now if that needs no wait; otherwise what finishes the
    /// release where waiting is acceptable.
    fn try_release(g: Guard<Self>) -> Result<Result<(), Error>, Finish>;
}

/// The rest of a release that would have waited.
pub(crate) type Finish = Box<dyn FnOnce() -> Result<(), Error> + Send>;

impl Kind for FileBackend {
    const NETWORK: bool = false;

    fn try_release(g: Guard<Self>) -> Result<Result<(), Error>, Finish> {
        g.try_release()
            .map_err(|pending| Box::new(move || pending.finish()) as Finish)
    }
}

impl Kind for PgBackend {
    const NETWORK: bool = true;

    fn try_release(g: Guard<Self>) -> Result<Result<(), Error>, Finish> {
        Err(Box::new(move || g.release()))
    }
}

/// Runs `f`, one of the library's synchronous calls (check, extend,
/// release, dispose), on a blocking thread: each may wait, for another
/// operation of its lock (a fence held across a JavaScript callback), the
/// session's state lock or the server, and the runtime's one worker must
/// not.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        // Handed on to `promise`, which reports it.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs a store operation of backend `B`: the file store's futures do their
/// file I/O (an `fdatasync`, say) when polled, so they run on a blocking
/// thread; PostgreSQL's only wait for the server.
pub(crate) async fn store_op<B: Kind, T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> T {
    if B::NETWORK {
        return fut.await;
    }
    let handle = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || handle.block_on(fut)).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
