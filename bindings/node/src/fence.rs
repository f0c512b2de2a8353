//! A fence held across an asynchronous JavaScript callback (`withFence`).
//!
//! The library's [`Guard::with_fence`](sessionlock::Guard::with_fence)
//! runs a synchronous closure under the fence. For an `async` callback the
//! closure runs on a blocking thread and waits there until JavaScript says
//! the callback settled: for that whole time the epoch is known current and
//! reclaims and revocations of the lock wait, exactly as for a Rust
//! closure. Dropping the fence (even unexited, by garbage collection) ends
//! the closure, so a fence is never held by an object nobody has.

use std::sync::{mpsc, Mutex, PoisonError};

use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;
use sessionlock::Error;
use tokio::sync::oneshot;

use crate::errors::misuse;
use crate::promise;

/// The closure a fence runs under the library's fence.
pub(crate) type Inside = Box<dyn FnOnce() + Send>;

/// A held fence.
#[napi]
pub struct NativeFence {
    exit: Mutex<Option<mpsc::Sender<()>>>,
    done: Mutex<Option<oneshot::Receiver<Result<(), Error>>>>,
}

impl NativeFence {
    /// Runs `run` (which calls the library's `with_fence` with the closure
    /// it is given) on a blocking thread, and returns once the closure runs:
    /// the fence is then held. `with_fence`'s error (the lock was lost) if
    /// it refused to run the closure.
    pub(crate) async fn enter(
        run: impl FnOnce(Inside) -> Result<(), Error> + Send + 'static,
    ) -> Result<NativeFence, Error> {
        let (entered_tx, entered_rx) = oneshot::channel::<()>();
        let (exit_tx, exit_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let inside: Inside = Box::new(move || {
                let _ = entered_tx.send(());
                // Until `exit` sends, or the fence is dropped.
                let _ = exit_rx.recv();
            });
            let _ = done_tx.send(run(inside));
        });
        if entered_rx.await.is_ok() {
            return Ok(NativeFence {
                exit: Mutex::new(Some(exit_tx)),
                done: Mutex::new(Some(done_rx)),
            });
        }
        match done_rx.await {
            Ok(Err(e)) => Err(e),
            _ => Err(misuse("withFence: the fence ended before it was entered")),
        }
    }
}

#[napi]
impl NativeFence {
    /// Ends the fence; resolves once it is released.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn exit<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        drop(
            self.exit
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let done = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        promise(env, async move {
            match done {
                Some(rx) => rx.await.unwrap_or(Ok(())),
                None => Ok(()),
            }
        })
    }
}
