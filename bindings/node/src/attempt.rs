//! The attempt controller: `Attempt` in JavaScript.
//!
//! A thin shell over [`sessionlock::attempt::Attempt`] (cloneable, async):
//! each method clones the attempt into its future. Entries cross as JSON
//! text, as for the transcript. The classifier of foreign appends is chosen
//! by name: `accept-nothing` (the default: every foreign entry is a
//! takeover) or `openclaw` (OpenClaw's transcript-only messages are
//! benign).

use std::mem::ManuallyDrop;
use std::sync::Arc;

use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;
use serde_json::{json, Value};
use sessionlock::attempt::runs::AbortKind;
use sessionlock::attempt::{Attempt, AttemptOptions, CleanupLock, State};
use sessionlock::classify::{AcceptNothing, ChangeClassifier, OpenClawClassifier};
use sessionlock::{Error, FileBackend};
use sessionlock_postgres::PgBackend;

use crate::backend::{blocking, millis, Backend, Kind, LockOpts};
use crate::errors::misuse;
use crate::transcript::{durability, entries, torn_json};
use crate::{promise, sync};

/// Options of an attempt as JavaScript passes them.
#[napi(object)]
#[derive(Default, Clone)]
pub struct AttemptOpts {
    /// The lock options of every acquisition of the attempt.
    pub lock: Option<LockOpts>,
    /// `accept-nothing` or `openclaw`.
    pub classifier: Option<String>,
    /// Let attempts of this process overlap on the session.
    pub overlap: Option<bool>,
    /// Budget of the wait for this process's other attempt, in ms
    /// (`Infinity`: forever).
    pub owner_timeout_ms: Option<f64>,
}

/// The classifier called `name`.
fn classifier(name: Option<&str>) -> Result<Arc<dyn ChangeClassifier>, Error> {
    Ok(match name {
        None | Some("accept-nothing") => Arc::new(AcceptNothing),
        Some("openclaw") => Arc::new(OpenClawClassifier),
        Some(other) => {
            return Err(misuse(format!(
                "classifier must be \"accept-nothing\" or \"openclaw\", not {other:?}"
            )))
        }
    })
}

impl AttemptOpts {
    fn resolve(&self) -> Result<AttemptOptions, Error> {
        let lock = self.lock.clone().unwrap_or_default();
        let mut o = AttemptOptions::default()
            .lock(lock.resolve()?)
            .classifier(classifier(self.classifier.as_deref())?)
            .overlap(self.overlap.unwrap_or(false));
        if let Some(t) = self.owner_timeout_ms {
            o = o.owner_timeout(millis("ownerTimeoutMs", t, true)?);
        }
        Ok(o)
    }
}

enum AnyAttempt {
    File(Attempt<FileBackend>),
    Pg(Attempt<PgBackend>),
}

macro_rules! on_attempt {
    ($any:expr, $a:ident => $body:expr) => {
        match $any {
            AnyAttempt::File($a) => $body,
            AnyAttempt::Pg($a) => $body,
        }
    };
}

/// Begins an attempt on `session` (see `Attempt.begin`).
#[napi(ts_return_type = "Promise<NativeAttempt>")]
pub fn begin_attempt<'env>(
    env: &'env Env,
    session: String,
    opts: Option<AttemptOpts>,
) -> napi::Result<PromiseRaw<'env, NativeAttempt>> {
    let opts = opts.unwrap_or_default();
    promise(env, async move {
        let o = opts.resolve()?;
        let backend = opts.lock.as_ref().and_then(|l| l.backend.clone());
        let inner = match Backend::open(backend.as_deref()).await? {
            Backend::File(locks) => {
                let locks =
                    sessionlock::SessionLock::with_backend(locks.backend().clone(), o.lock.clone());
                AnyAttempt::File(Attempt::begin(&locks, std::path::Path::new(&session), o).await?)
            }
            Backend::Pg(locks) => {
                let locks =
                    sessionlock::SessionLock::with_backend(locks.backend().clone(), o.lock.clone());
                AnyAttempt::Pg(Attempt::begin(&locks, session.as_str(), o).await?)
            }
        };
        Ok(NativeAttempt {
            inner: ManuallyDrop::new(inner),
        })
    })
}

fn values(lines: &[String]) -> Result<Vec<Value>, Error> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| misuse(format!("entry {i} is not one JSON value: {e}")))
        })
        .collect()
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Held => "held",
        State::Released => "released",
        State::Cleanup => "cleanup",
        State::TakenOver => "taken-over",
        State::Disposed => "disposed",
        // The enum is non-exhaustive: a state a later library adds reads
        // as "unknown" until this binding names it.
        _ => "unknown",
    }
}

fn abort_kind(s: &str) -> Result<AbortKind, Error> {
    Ok(match s {
        "user" => AbortKind::User,
        "timeout" => AbortKind::Timeout,
        "stuck" => AbortKind::Stuck,
        "yield" => AbortKind::Yield,
        other => {
            return Err(misuse(format!(
                "abort kind must be \"user\", \"timeout\", \"stuck\" or \"yield\", not {other:?}"
            )))
        }
    })
}

fn abort_name(k: AbortKind) -> &'static str {
    match k {
        AbortKind::User => "user",
        AbortKind::Timeout => "timeout",
        AbortKind::Stuck => "stuck",
        AbortKind::Yield => "yield",
        // Non-exhaustive, as above.
        _ => "unknown",
    }
}

async fn dispose<B: Kind>(a: Attempt<B>) -> Result<(), Error> {
    blocking(move || a.dispose()).await
}

/// An attempt, as JavaScript sees it.
#[napi]
pub struct NativeAttempt {
    /// Taken only by `Drop`.
    inner: ManuallyDrop<AnyAttempt>,
}

impl Drop for NativeAttempt {
    /// Garbage collection of an attempt JavaScript forgot: dropping the last
    /// handle disposes it, which may wait (for the session's state lock, or
    /// the server), so that drop happens on a thread of its own rather than
    /// the JavaScript one.
    fn drop(&mut self) {
        // SAFETY: `inner` is not used again: this is the object's drop.
        let inner = unsafe { ManuallyDrop::take(&mut self.inner) };
        let _ = std::thread::Builder::new()
            .name("sessionlock-drop".into())
            .spawn(move || drop(inner));
    }
}

#[napi]
impl NativeAttempt {
    /// The canonical session file (the key on PostgreSQL).
    #[napi(getter)]
    pub fn session(&self) -> String {
        on_attempt!(&*self.inner, a => a.session().to_string_lossy().into_owned())
    }

    /// `held`, `released`, `cleanup`, `taken-over` or `disposed`.
    #[napi(getter)]
    pub fn state(&self) -> &'static str {
        on_attempt!(&*self.inner, a => state_name(a.state()))
    }

    /// The kind of the first abort, or `null`.
    #[napi(getter)]
    pub fn aborted(&self) -> Option<&'static str> {
        on_attempt!(&*self.inner, a => a.aborted().map(abort_name))
    }

    /// The takeover as JSON `{"phase", "reason"}`, or `null`.
    #[napi]
    pub fn takeover_json(&self) -> Option<String> {
        on_attempt!(&*self.inner, a => a.takeover().map(|(p, r)| {
            json!({"phase": p.as_str(), "reason": r.as_str()}).to_string()
        }))
    }

    /// Records model output for the stuck detector.
    #[napi]
    pub fn progress(&self) {
        on_attempt!(&*self.inner, a => a.progress())
    }

    /// Releases the lock for the model call.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn release_for_prompt<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        on_attempt!(&*self.inner, a => {
            let a = a.clone();
            promise(env, async move { a.release_for_prompt().await })
        })
    }

    /// Reacquires after the model call: the accepted foreign entries as JSON
    /// `{"entries", "range": [start, end]}`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn reacquire_after_prompt<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        on_attempt!(&*self.inner, a => {
            let a = a.clone();
            promise(env, async move {
                let r = a.reacquire_after_prompt().await?;
                Ok(json!({"entries": r.entries, "range": [r.range.start, r.range.end]}).to_string())
            })
        })
    }

    /// Appends entries (JSON texts): `{"offset", "len"}` JSON.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn append<'env>(
        &self,
        env: &'env Env,
        lines: Vec<String>,
        durability: Option<String>,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        on_attempt!(&*self.inner, a => {
            let a = a.clone();
            promise(env, async move {
                let e = entries(&lines)?;
                let d = self::durability(durability.as_deref())?;
                let w = a.append_raw(&e, d).await?;
                Ok(json!({"offset": w.offset, "len": w.len}).to_string())
            })
        })
    }

    /// Replaces the transcript with entries (JSON texts).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn rewrite<'env>(
        &self,
        env: &'env Env,
        lines: Vec<String>,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        on_attempt!(&*self.inner, a => {
            let a = a.clone();
            promise(env, async move { a.rewrite(&values(&lines)?).await })
        })
    }

    /// Keeps the first `keep` entries.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn truncate<'env>(&self, env: &'env Env, keep: u32) -> napi::Result<PromiseRaw<'env, ()>> {
        on_attempt!(&*self.inner, a => {
            let a = a.clone();
            promise(env, async move { a.truncate(keep as usize).await })
        })
    }

    /// The transcript: `{"entries", "torn"}` JSON.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn read<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, String>> {
        on_attempt!(&*self.inner, a => {
            let a = a.clone();
            promise(env, async move {
                let r = a.read().await?;
                Ok(json!({"entries": r.entries, "torn": r.torn.as_ref().map(torn_json)}).to_string())
            })
        })
    }

    /// Aborts the attempt (`user`, `timeout`, `stuck` or `yield`); resolves
    /// once it has stopped and released its lock (which may wait, so it
    /// runs on a blocking thread).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn abort<'env>(&self, env: &'env Env, kind: String) -> napi::Result<PromiseRaw<'env, ()>> {
        let k = sync(|| abort_kind(&kind))?;
        on_attempt!(&*self.inner, a => {
            let a = a.clone();
            promise(env, blocking(move || {
                a.abort(k);
                Ok(())
            }))
        })
    }

    /// Takes the lock for cleanup: `held`, or `noop` after a takeover.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn acquire_for_cleanup<'env>(
        &self,
        env: &'env Env,
    ) -> napi::Result<PromiseRaw<'env, &'static str>> {
        on_attempt!(&*self.inner, a => {
            let a = a.clone();
            promise(env, async move {
                Ok(match a.acquire_for_cleanup().await? {
                    CleanupLock::Held => "held",
                    CleanupLock::NoOp => "noop",
                })
            })
        })
    }

    /// Disposes the attempt: releases whatever it holds.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        on_attempt!(&*self.inner, a => promise(env, dispose(a.clone())))
    }

    /// Disposes now, on this thread (for process exit).
    #[napi]
    pub fn dispose_sync(&self) -> napi::Result<()> {
        on_attempt!(&*self.inner, a => sync(|| a.dispose()))
    }
}
