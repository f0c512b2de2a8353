//! `acquire` and the `Lock` a JavaScript caller holds.
//!
//! A JavaScript `Lock` owns one [`Guard`]. Its asynchronous operations
//! borrow the guard for as long as they run; `release` first stops new
//! operations, ends the waits that only observe (`lost`), waits for the
//! others to finish, and then releases the guard with the library's
//! fallible `release`. A `Lock` that JavaScript forgets releases its guard
//! when it is garbage-collected (the guard's `Drop`), and `index.js`
//! releases every live `Lock` of its thread when the thread or process
//! exits normally.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use napi::bindgen_prelude::{Function, PromiseRaw};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::Env;
use napi_derive::napi;
use sessionlock::{Error, FileBackend, Guard, LockBackend, LockOptions, SessionId};
use sessionlock_postgres::PgBackend;

use crate::backend::{blocking, Backend, Finish, Kind, LockOpts};
use crate::errors::misuse;
use crate::fence::NativeFence;
use crate::{promise, sync};

/// One pending `acquire`: `run()` waits for the lock, `cancel()` (from an
/// `AbortSignal`) ends the wait, leaving nothing queued.
#[napi]
pub struct AcquireRequest {
    session: String,
    /// `None` for the file backend (or `SESSIONLOCK_BACKEND`'s choice).
    backend: Option<String>,
    /// The options, resolved against the environment once, at the call.
    opts: Result<LockOptions, Error>,
    cancel: Arc<Cancel>,
}

/// A cancellation flag that wakes whoever waits on it.
#[derive(Default)]
pub(crate) struct Cancel {
    pub(crate) fired: AtomicBool,
    pub(crate) notify: tokio::sync::Notify,
}

impl Cancel {
    pub(crate) fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Awaits `fut` unless this fires first; then `Cancelled` (`what` was
    /// cancelled), and `fut` is dropped: the library's futures leave
    /// nothing queued or held when dropped.
    async fn race<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, Error>>,
        what: &str,
    ) -> Result<T, Error> {
        let fired = self.notify.notified();
        tokio::pin!(fired);
        fired.as_mut().enable();
        if self.fired.load(Ordering::SeqCst) {
            return Err(Error::Cancelled {
                what: what.to_owned(),
            });
        }
        tokio::select! {
            r = fut => r,
            () = fired => Err(Error::Cancelled { what: what.to_owned() }),
        }
    }
}

#[napi]
impl AcquireRequest {
    /// A request for `session` with `opts`.
    #[napi(constructor)]
    pub fn new(session: String, opts: Option<LockOpts>) -> Self {
        let opts = opts.unwrap_or_default();
        AcquireRequest {
            session,
            opts: opts.resolve(),
            backend: opts.backend,
            cancel: Arc::default(),
        }
    }

    /// Takes the lock now if that needs no wait (file backend): when no
    /// lock file exists, the library's no-wait try
    /// ([`SessionLock::try_acquire_now`]), a few system calls that never
    /// wait for the lock, its holder or the session's state lock. A lock
    /// file that exists (held, or stale) is left to `run()`, whose reclaim
    /// rules depend on the caller's budget. `null` otherwise (held, on
    /// another backend, or any error): `run()` then waits, and reports
    /// errors.
    ///
    /// [`SessionLock::try_acquire_now`]: sessionlock::SessionLock::try_acquire_now
    #[napi]
    pub fn try_now(&self) -> Option<NativeLock> {
        if self.cancel.fired.load(Ordering::SeqCst) {
            return None;
        }
        let locks = crate::backend::file_if_chosen(self.backend.as_deref())?;
        let opts = self.opts.as_ref().ok()?;
        let g = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let key = locks
                .backend()
                .key(std::path::Path::new(&self.session))
                .ok()?;
            match std::fs::symlink_metadata(&key.lock_path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                _ => return None,
            }
            locks
                .try_acquire_now(std::path::Path::new(&self.session), opts)
                .ok()
        }))
        .ok()??;
        Some(NativeLock {
            cell: AnyCell::File(Cell::new(g)),
        })
    }

    /// Acquires the lock.
    #[napi(ts_return_type = "Promise<NativeLock>")]
    pub fn run<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, NativeLock>> {
        let session = self.session.clone();
        let opts = self.opts.as_ref().map(Clone::clone).map_err(clone_error);
        let backend = self.backend.clone();
        let cancel = self.cancel.clone();
        promise(env, async move {
            let lock_opts = opts?;
            let backend = Backend::open(backend.as_deref()).await?;
            let what = format!("acquire of {session}");
            let cell = match backend {
                Backend::File(locks) => {
                    let fut = locks.acquire_async_with(std::path::Path::new(&session), &lock_opts);
                    let g = cancel.race(fut, &what).await?;
                    AnyCell::File(Cell::new(g))
                }
                Backend::Pg(locks) => {
                    let fut = locks.acquire_async_with(session.as_str(), &lock_opts);
                    let g = cancel.race(fut, &what).await?;
                    AnyCell::Pg(Cell::new(g))
                }
            };
            Ok(NativeLock { cell })
        })
    }

    /// Ends the wait: `run()` rejects with `SESSIONLOCK_CANCELLED`.
    #[napi]
    pub fn cancel(&self) {
        self.cancel.fire();
    }
}

/// The option errors `resolve` gives are all `Misuse`: a copy for each use.
fn clone_error(e: &Error) -> Error {
    misuse(match e {
        Error::Misuse { what } => what.clone(),
        other => other.to_string(),
    })
}

/// How many of this process's acquisitions wait for `session` (on
/// `backend`): what shows that an aborted acquire left nothing queued.
#[napi(ts_return_type = "Promise<number>")]
pub fn queued<'env>(
    env: &'env Env,
    session: String,
    backend: Option<String>,
) -> napi::Result<PromiseRaw<'env, u32>> {
    promise(env, async move {
        let n = match Backend::open(backend.as_deref()).await? {
            Backend::File(locks) => locks.queued(std::path::Path::new(&session))?,
            Backend::Pg(locks) => locks.queued(session.as_str())?,
        };
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    })
}

/// How long an exit waits for the operations of a lock still in flight.
const EXIT_GRACE: Duration = Duration::from_millis(200);

/// The guard of one acquisition, shared by the operations in flight.
pub(crate) struct Cell<B: Kind> {
    /// `None` once released.
    guard: Mutex<Option<Arc<Guard<B>>>>,
    /// Signalled when an operation ends (it dropped its share).
    ended: tokio::sync::Notify,
    /// Set when `release` starts: the observing waits give up.
    closing: Cancel,
    /// A release `release_now` began that has to wait: `release` finishes it.
    finishing: Mutex<Option<Finish>>,
    epoch: u64,
    session: String,
    lock_path: String,
}

impl<B: Kind> Drop for Cell<B> {
    /// The last share of a lock nobody released (garbage collection, often
    /// on the JavaScript thread): released here if that needs no wait,
    /// otherwise on a thread of its own (a release may wait for the
    /// session's state lock, or for the server).
    fn drop(&mut self) {
        let finish = match self.slot().take().map(Arc::try_unwrap) {
            Some(Ok(g)) => match B::try_release(g) {
                Ok(released) => {
                    if let Err(e) = released {
                        tracing::warn!(target: "sessionlock::hold", error = %e, "cannot release a session lock nobody released");
                    }
                    return;
                }
                Err(finish) => finish,
            },
            // Never reached (a cell's last share holds the last guard).
            _ => return,
        };
        let _ = std::thread::Builder::new()
            .name("sessionlock-drop".into())
            .spawn(move || {
                if let Err(e) = finish() {
                    tracing::warn!(target: "sessionlock::hold", error = %e, "cannot release a session lock nobody released");
                }
            });
    }
}

/// An operation's share of the guard, taken on the JavaScript thread when
/// the operation is called (so that a `release()` called after it waits for
/// it), given back when it ends.
pub(crate) struct Op<B: Kind> {
    guard: ManuallyDrop<Arc<Guard<B>>>,
    cell: Arc<Cell<B>>,
}

impl<B: Kind> Drop for Op<B> {
    fn drop(&mut self) {
        // The share goes first, then the wake-up: `release` looks for the
        // last share when woken, and must find it.
        // SAFETY: `guard` is not used after this.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        self.cell.ended.notify_waiters();
    }
}

impl<B: Kind> Op<B> {
    pub(crate) fn guard(&self) -> &Guard<B> {
        &self.guard
    }
}

impl<B: Kind> Cell<B> {
    fn new(g: Guard<B>) -> Arc<Cell<B>> {
        Arc::new(Cell {
            epoch: g.epoch(),
            session: g.key().session().to_string_lossy().into_owned(),
            lock_path: g.lock_path().to_string_lossy().into_owned(),
            guard: Mutex::new(Some(Arc::new(g))),
            ended: tokio::sync::Notify::new(),
            closing: Cancel::default(),
            finishing: Mutex::new(None),
        })
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Guard<B>>>> {
        self.guard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A share of the guard for one operation, or `Misuse` once released.
    pub(crate) fn op(self: &Arc<Self>, what: &str) -> Result<Op<B>, Error> {
        match &*self.slot() {
            Some(g) => Ok(Op {
                guard: ManuallyDrop::new(g.clone()),
                cell: self.clone(),
            }),
            None => Err(misuse(format!("{what}: the lock was released"))),
        }
    }

    /// The session: canonical path, or key on PostgreSQL.
    pub(crate) fn session(&self) -> &str {
        &self.session
    }

    fn is_revoked(&self) -> bool {
        self.slot().as_ref().is_some_and(|g| g.is_revoked())
    }

    fn holder(&self) -> Option<String> {
        let g = self.slot().as_ref()?.clone();
        serde_json::to_string(&g.holder()).ok()
    }

    async fn check(op: Result<Op<B>, Error>) -> Result<(), Error> {
        let op = op?;
        blocking(move || op.guard().check()).await
    }

    async fn extend(op: Result<Op<B>, Error>, by: Option<Duration>) -> Result<(), Error> {
        let op = op?;
        blocking(move || match by {
            Some(d) => op.guard().extend_for(d),
            None => op.guard().extend(),
        })
        .await
    }

    /// Resolves with the error a write would now get once the lock is lost,
    /// or `None` when it is released first.
    async fn lost(self: Arc<Self>) -> Option<Error> {
        let op = self.op("lost").ok()?;
        let closing = self.closing.notify.notified();
        tokio::pin!(closing);
        closing.as_mut().enable();
        if self.closing.fired.load(Ordering::SeqCst) {
            return None;
        }
        tokio::select! {
            e = op.guard().lost() => Some(e),
            () = closing => None,
        }
    }

    /// Releases now, on the calling (JavaScript) thread, if that needs no
    /// wait: no operation of this lock in flight, and the library's
    /// no-wait release ([`Kind::try_release`]). `false` when it could not,
    /// and `release` must finish the job.
    fn release_now(&self) -> Result<bool, Error> {
        let guard = {
            let mut slot = self.slot();
            match slot.as_ref() {
                None => return Ok(self.finishing_slot().is_none()),
                // Operations take their share under this lock: none can
                // start between the count and the take.
                Some(g) if Arc::strong_count(g) == 1 => slot.take(),
                Some(_) => return Ok(false),
            }
        };
        let g = match guard.map(Arc::try_unwrap) {
            Some(Ok(g)) => g,
            Some(Err(shared)) => {
                *self.slot() = Some(shared);
                return Ok(false);
            }
            None => return Ok(false),
        };
        self.closing.fire();
        match B::try_release(g) {
            Ok(r) => r.map(|()| true),
            Err(finish) => {
                *self.finishing_slot() = Some(finish);
                Ok(false)
            }
        }
    }

    fn finishing_slot(&self) -> std::sync::MutexGuard<'_, Option<Finish>> {
        self.finishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the guard out, waits for the operations in flight, releases
    /// (or finishes a release `release_now` began).
    async fn release(self: Arc<Self>) -> Result<(), Error> {
        let Some(mut guard) = self.slot().take() else {
            let finish = self.finishing_slot().take();
            return match finish {
                Some(f) => blocking(f).await,
                None => Ok(()),
            };
        };
        self.closing.fire();
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            match Arc::try_unwrap(guard) {
                Ok(g) => return blocking(move || g.release()).await,
                Err(shared) => guard = shared,
            }
            ended.await;
        }
    }

    /// Releases now, from the JavaScript thread (process or thread exit).
    /// The waits that only observe (`revoked`) give their share back within
    /// microseconds of `closing`; an operation still in flight after
    /// [`EXIT_GRACE`] keeps its share, and the guard is released when the
    /// last share drops (or, if the process ends first, it is left to the
    /// next acquirer, who reclaims the lock of a dead process at once).
    fn release_at_exit(&self) -> Result<(), Error> {
        if let Some(finish) = self.finishing_slot().take() {
            return finish();
        }
        let Some(mut guard) = self.slot().take() else {
            return Ok(());
        };
        self.closing.fire();
        let until = std::time::Instant::now() + EXIT_GRACE;
        loop {
            match Arc::try_unwrap(guard) {
                Ok(g) => return g.release(),
                Err(shared) if std::time::Instant::now() < until => guard = shared,
                Err(_) => return Ok(()),
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    async fn enter_fence(op: Result<Op<B>, Error>) -> Result<NativeFence, Error> {
        let op = op?;
        NativeFence::enter(move |f| {
            let r = op.guard().with_fence(f);
            drop(op);
            r
        })
        .await
    }
}

/// The guard of either backend.
pub(crate) enum AnyCell {
    File(Arc<Cell<FileBackend>>),
    Pg(Arc<Cell<PgBackend>>),
}

/// Runs `$body` with `$c` bound to the cell, whichever backend it is on.
macro_rules! on_cell {
    ($any:expr, $c:ident => $body:expr) => {
        match $any {
            AnyCell::File($c) => $body,
            AnyCell::Pg($c) => $body,
        }
    };
}

/// A held session lock, as JavaScript sees it.
#[napi]
pub struct NativeLock {
    cell: AnyCell,
}

#[napi]
impl NativeLock {
    /// This acquisition's fencing epoch.
    #[napi(getter)]
    pub fn epoch(&self) -> f64 {
        on_cell!(&self.cell, c => c.epoch as f64)
    }

    /// The epoch as a decimal string (exact beyond 2^53).
    #[napi(getter)]
    pub fn epoch_string(&self) -> String {
        on_cell!(&self.cell, c => c.epoch.to_string())
    }

    /// The session: the canonical transcript path, or the key on PostgreSQL.
    #[napi(getter)]
    pub fn session(&self) -> String {
        on_cell!(&self.cell, c => c.session.clone())
    }

    /// Where the lock lives: the lock file, or the key's locator.
    #[napi(getter)]
    pub fn lock_path(&self) -> String {
        on_cell!(&self.cell, c => c.lock_path.clone())
    }

    /// Whether the lock was revoked (watchdog, or removed or replaced).
    #[napi(getter)]
    pub fn is_revoked(&self) -> bool {
        on_cell!(&self.cell, c => c.is_revoked())
    }

    /// Whether `release` was called.
    #[napi(getter)]
    pub fn is_released(&self) -> bool {
        on_cell!(&self.cell, c => c.slot().is_none())
    }

    /// The holder (this process) as JSON, `null` once released.
    #[napi]
    pub fn holder_json(&self) -> Option<String> {
        on_cell!(&self.cell, c => c.holder())
    }

    /// Checks that the lock still owns the session.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn check<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        on_cell!(&self.cell, c => promise(env, Cell::check(c.op("check"))))
    }

    /// Extends the lease by `ms` (or the acquisition's `maxHoldMs`) from now.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn extend<'env>(
        &self,
        env: &'env Env,
        ms: Option<f64>,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let by = match ms {
            None => None,
            Some(v) => {
                let d = sync(|| crate::backend::millis("ms", v, false))?.unwrap_or_default();
                if d.is_zero() {
                    return Err(crate::errors::to_js(&misuse(
                        "extend(ms): ms must be greater than zero",
                    )));
                }
                Some(d)
            }
        };
        on_cell!(&self.cell, c => promise(env, Cell::extend(c.op("extend"), by)))
    }

    /// Calls `callback` once the lock is lost, with the tagged error a write
    /// would now get, or with `""` when it is released first. The callback
    /// does not keep the process alive (a weak threadsafe function): a
    /// program that only watches a lock still exits when its work is done.
    #[napi]
    pub fn on_lost(&self, callback: Function<'_, String, ()>) -> napi::Result<()> {
        let tsfn = callback
            .build_threadsafe_function::<String>()
            .weak::<true>()
            .callee_handled::<false>()
            .build()?;
        on_cell!(&self.cell, c => {
            let c = c.clone();
            napi::bindgen_prelude::spawn(async move {
                let message = match c.lost().await {
                    Some(e) => crate::errors::to_js(&e).reason,
                    None => String::new(),
                };
                tsfn.call(message, ThreadsafeFunctionCallMode::NonBlocking);
            });
        });
        Ok(())
    }

    /// Holds the fence (epoch checked, reclaim and revocation held off)
    /// until the returned fence is exited.
    #[napi(ts_return_type = "Promise<NativeFence>")]
    pub fn enter_fence<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, NativeFence>> {
        on_cell!(&self.cell, c => promise(env, Cell::enter_fence(c.op("withFence"))))
    }

    /// Releases the lock (once the operations in flight end).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn release<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        on_cell!(&self.cell, c => promise(env, c.clone().release()))
    }

    /// Releases the lock now, on this thread, waiting if it must (for
    /// process exit).
    #[napi]
    pub fn release_sync(&self) -> napi::Result<()> {
        on_cell!(&self.cell, c => sync(|| c.release_at_exit()))
    }

    /// Releases the lock now if that needs no wait (see `Cell::release_now`):
    /// `true` when released, `false` when `release()` must finish it.
    #[napi]
    pub fn release_now(&self) -> napi::Result<bool> {
        on_cell!(&self.cell, c => sync(|| c.release_now()))
    }
}

impl Drop for NativeLock {
    /// Garbage collection of a lock JavaScript forgot: the observing waits
    /// end, and the last share of the guard to drop releases it.
    fn drop(&mut self) {
        on_cell!(&self.cell, c => c.closing.fire());
    }
}

impl NativeLock {
    /// The guard of a file-backend lock, for the transcript store.
    pub(crate) fn file(&self) -> Option<Arc<Cell<FileBackend>>> {
        match &self.cell {
            AnyCell::File(c) => Some(c.clone()),
            AnyCell::Pg(_) => None,
        }
    }

    /// The guard of a PostgreSQL lock, for the transcript store.
    pub(crate) fn pg(&self) -> Option<Arc<Cell<PgBackend>>> {
        match &self.cell {
            AnyCell::Pg(c) => Some(c.clone()),
            AnyCell::File(_) => None,
        }
    }
}
