//! Library errors and panics, as JavaScript errors `index.js` can turn into
//! `SessionLockError` subclasses.
//!
//! A tagged error's message is `\u{1}` followed by one JSON object:
//! `{code, kind, message, holder?, ...fields}`. `code` is
//! `SESSIONLOCK_` + the upper-cased [`sessionlock::Error::code`]
//! (`SESSIONLOCK_TIMEOUT`, ...), or `SESSIONLOCK_PANIC` for a Rust panic;
//! `message` is the library's message with its causes joined by `: `, as
//! the command-line tool prints it.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde_json::{json, Map, Value};
use sessionlock::Error;

/// What starts the message of a tagged error.
const TAG: char = '\u{1}';

/// `err` as a tagged JavaScript error.
pub(crate) fn to_js(err: &Error) -> napi::Error {
    tagged(describe(err))
}

/// A Rust panic as a tagged `SESSIONLOCK_PANIC` error.
pub(crate) fn panicked(payload: &(dyn Any + Send)) -> napi::Error {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".to_owned());
    tagged(json!({
        "code": "SESSIONLOCK_PANIC",
        "kind": "panic",
        "message": format!("sessionlock panicked: {what} (a bug: please report it)"),
    }))
}

fn tagged(info: Value) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, format!("{TAG}{info}"))
}

/// The JSON object describing `err`.
fn describe(err: &Error) -> Value {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    let mut o = Map::new();
    o.insert(
        "code".into(),
        format!("SESSIONLOCK_{}", err.code().to_ascii_uppercase()).into(),
    );
    o.insert("kind".into(), err.code().into());
    o.insert("message".into(), message.into());
    if let Some(h) = err.holder() {
        if let Ok(v) = serde_json::to_value(h) {
            o.insert("holder".into(), v);
        }
    }
    let path = |p: &std::path::Path| Value::from(p.to_string_lossy().into_owned());
    match err {
        Error::Timeout { timeout_ms, .. } => {
            o.insert("timeoutMs".into(), (*timeout_ms).into());
        }
        Error::Busy {
            waiting_for,
            timeout_ms,
            ..
        } => {
            o.insert("waitingFor".into(), (*waiting_for).into());
            o.insert("timeoutMs".into(), (*timeout_ms).into());
        }
        Error::Stale { reasons, .. } => {
            let r: Vec<Value> = reasons.iter().map(|r| r.as_str().into()).collect();
            o.insert("staleReasons".into(), r.into());
        }
        Error::Revoked {
            path: p,
            epoch,
            current_epoch,
            cause,
        } => {
            o.insert("path".into(), path(p));
            o.insert("epoch".into(), (*epoch).into());
            o.insert("currentEpoch".into(), (*current_epoch).into());
            o.insert("cause".into(), cause.as_str().into());
        }
        Error::Fenced {
            path: p,
            epoch,
            current_epoch,
        } => {
            o.insert("path".into(), path(p));
            o.insert("epoch".into(), (*epoch).into());
            o.insert("currentEpoch".into(), (*current_epoch).into());
        }
        Error::Takeover {
            session,
            phase,
            reason,
        } => {
            o.insert("path".into(), path(session));
            o.insert("phase".into(), phase.as_str().into());
            o.insert("reason".into(), reason.as_str().into());
        }
        Error::InvalidEntry {
            path: p, offset, ..
        } => {
            o.insert("path".into(), path(p));
            o.insert("offset".into(), (*offset).into());
        }
        Error::Io {
            op,
            path: p,
            source,
            ..
        } => {
            o.insert("path".into(), path(p));
            o.insert("op".into(), (*op).into());
            if let Some(errno) = source.raw_os_error() {
                o.insert("errno".into(), errno.into());
            }
        }
        Error::Poisoned { path: p }
        | Error::EpochExhausted { path: p, .. }
        | Error::InvalidPath { path: p, .. } => {
            o.insert("path".into(), path(p));
        }
        _ => {}
    }
    Value::Object(o)
}

/// A future whose panics come out as `Err` (what `promise` needs so that a
/// panic rejects the promise instead of unwinding through the runtime).
pub(crate) struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> Self {
        CatchUnwind {
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// A `Misuse` error: what JavaScript asked for cannot work.
pub(crate) fn misuse(what: impl Into<String>) -> Error {
    Error::Misuse { what: what.into() }
}
