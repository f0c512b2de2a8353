//! # sessionlock
//!
//! Lets several programs, threads or machines take turns writing the same
//! file (an AI agent's JSONL transcript, say) without losing or mixing up
//! each other's writes, even when one of them crashes, hangs or is killed
//! while it holds its turn.
//!
//! ## Start here
//! - [`SessionLock`]: acquires a session's lock, blocking
//!   ([`acquire`](SessionLock::acquire)), async
//!   ([`acquire_async`](SessionLock::acquire_async)), scoped
//!   ([`with_lock_async`](SessionLock::with_lock_async)) or without waiting
//!   ([`try_acquire`](SessionLock::try_acquire)).
//! - [`LockOptions`]: timeout, lease (`max_hold`), lane and run labels.
//! - [`Guard`]: the held lock; [`release`](Guard::release) it (or drop it),
//!   [`extend`](Guard::extend) its lease, learn of its loss
//!   ([`revoked`](Guard::revoked), [`lost`](Guard::lost)), fence your own
//!   writes ([`with_fence`](Guard::with_fence)).
//! - [`Transcript`](transcript::Transcript): the JSONL transcript, appended
//!   and rewritten only under a guard.
//! - [`Attempt`](attempt::Attempt): one agent turn that releases the lock
//!   during the model call and detects takeovers.
//! - [`Error`]: what went wrong and what to do about it
//!   ([`Error::is_retryable`]).
//! - [`config`]: settings, their defaults and environment variables.
//! - [`observe`]: metrics (through the `metrics` facade) and the event log
//!   of what the locks did.
//! - [`design`]: how it works, and its known limits.
//!
//! The cargo feature `internals` makes public what sessionlock's own crates
//! (the command line, the PostgreSQL backend, the Node.js binding, the test
//! lab) share: the payload, holder identity, the file-system seam, the
//! diagnostics behind `sessionlock status` and `doctor`. It is not part of
//! the documented API and carries no semver promise.
//!
//! ## Guarantees
//! 1. **Mutual exclusion**: at most one unrevoked holder per session across
//!    threads, tasks and processes.
//! 2. **No leaked lock**: every way out of a holder (return, error, panic,
//!    cancellation, process exit, SIGKILL) leaves the lock released or
//!    reclaimable by the next waiter without operator action.
//! 3. **No wedge longer than the lease**: a dedicated watchdog thread revokes
//!    a lock held past `max_hold`, even when the holder's async runtime is
//!    blocked; other processes reclaim it once the lease has passed.
//! 4. **Fenced writes**: every acquisition gets a strictly increasing epoch;
//!    [`Guard::with_fence`] runs a mutation only while that epoch is current,
//!    atomically with respect to reclaim and revocation.
//! 5. **Remove-if-unchanged**: nobody deletes a lock other than the exact one
//!    they inspected.
//! 6. **Never rob the living**: a live holder within its lease is never
//!    removed.
//! 7. **Takeover is never silent**: an attempt that released its lock for a
//!    model call detects, before its next write, any change to the transcript
//!    it cannot accept; the detection is sticky ([`attempt`]).
//! 8. **No lost or torn entries**: an append lands whole or not at all; a
//!    torn final line left by a crash is set aside and repaired by the next
//!    fenced write ([`transcript`]).
//! 9. **Bounded, explained waits**: one budget per acquisition; a timeout names
//!    the holder.
//!
//! ## Example
//! ```
//! use std::time::Duration;
//! use serde_json::json;
//! use sessionlock::transcript::{Durability, Transcript};
//! use sessionlock::{LockOptions, SessionLock};
//!
//! # fn main() -> Result<(), sessionlock::Error> {
//! let dir = tempfile::tempdir().expect("tempdir");
//! let session = dir.path().join("abc.jsonl");
//! let locks = SessionLock::new();
//! let opts = LockOptions::default()
//!     .timeout(Some(Duration::from_secs(10)))
//!     .lane("channel");
//! let guard = locks.acquire_with(&session, &opts)?;
//! // The transcript's mutations are fenced: each lands only while `guard`
//! // owns the session, whole or not at all.
//! let mut transcript = Transcript::open(&session)?;
//! transcript.append(&guard, &[json!({"role": "user", "text": "hi"})], Durability::Data)?;
//! guard.release()?;
//! # Ok(())
//! # }
//! ```
//!
//! A mutation of your own (a file beside the transcript, say) goes inside
//! [`Guard::with_fence`], which runs it only while the guard's epoch is
//! current; the transcript's methods need no such wrapping (inside it, they
//! run at once under the same fence).
//!
//! ## Async runtimes
//! The async API ([`SessionLock::acquire_async`],
//! [`SessionLock::with_lock_async`], [`Guard::revoked`], [`Guard::lost`],
//! [`attempt`]) runs on tokio: a runtime with I/O and time enabled
//! (`#[tokio::main]`, or `Builder::enable_all()`), of either flavour. Your
//! own crate needs tokio's `rt-multi-thread` (or `rt`) and `macros`
//! features for `#[tokio::main]`; sessionlock enables what it uses itself.
//!
//! Waiting never blocks a runtime thread: waiters sleep on inotify, a pidfd
//! of the holder and a timer. What does block is short: an acquisition's or
//! a release's few system calls (and `flock` waits of a few system calls
//! more while another process is inside the session's state lock), and a
//! transcript write with its sync (`fdatasync` under
//! [`Durability::Data`](transcript::Durability), `fsync` for rewrites and
//! repairs: from tens of microseconds to milliseconds on a loaded disk). On
//! a worker of a multi-thread runtime those move off the worker with
//! `block_in_place`; on a current-thread runtime they run inline, and the
//! runtime waits for them. Where that matters, call the transcript from
//! `spawn_blocking`.
//!
//! Race long work against the loss of the lock with `tokio::select!`, or
//! let [`SessionLock::with_lock_async`] do it for you:
//! ```
//! use std::time::Duration;
//! use sessionlock::{LockOptions, SessionLock};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), sessionlock::Error> {
//! # let dir = tempfile::tempdir().expect("tempdir");
//! # let session = dir.path().join("abc.jsonl");
//! let locks = SessionLock::new();
//! // A lease of 100 ms, for the example: the watchdog revokes the lock then.
//! let opts = LockOptions::default().max_hold(Duration::from_millis(100));
//! let guard = locks.acquire_async_with(&session, &opts).await?;
//! let long_work = tokio::time::sleep(Duration::from_secs(60));
//! tokio::select! {
//!     () = long_work => unreachable!("the lease ends first"),
//!     () = guard.revoked() => {} // stop: writes under this guard now fail
//! }
//! assert!(guard.is_revoked());
//! assert!(guard.release().is_err()); // release() reports the loss
//! # Ok(())
//! # }
//! ```
//!
//! ## Design
//! Locks are files beside the transcripts, compatible with OpenClaw's
//! (`s.jsonl.lock`, JSON `{pid, createdAt, maxHoldMs, starttime, ...}`),
//! published whole with `link()`. A per-session state file
//! (`s.jsonl.epoch`) persists the fencing epoch; a `flock` on it, held for a
//! few system calls at a time, makes publish, reclaim, release, revocation
//! and fenced writes atomic with respect to each other. Waiters in one
//! process queue FIFO and receive the lock directly from the releaser; waiters
//! in other processes sleep on inotify, a pidfd of the holder and a timer at
//! its lease end, never on a blind poll. Reclaiming a live holder past its
//! lease is safe because of fencing: its later writes fail.
//! The [`design`] document has the formats, the protocols and their crash
//! analysis, and the known limits.
#![deny(missing_docs)]

// The layers, lowest first: each module imports only modules above it in
// this list (checked by `tests/layering.rs`; the comments keep rustfmt from
// sorting them).
//
// A module declared twice is an internal one: public with the `internals`
// feature (for sessionlock's own crates, no semver promise, see Cargo.toml),
// private to the crate without it. The public API is the rest, and the
// re-exports below.
//
// -- plumbing: mutexes (loom-switchable), platform calls, blocking drivers
mod sync;
// -- platform
mod sys;
// -- driving backend futures from blocking code
mod blocking;
// -- shared by every backend: settings,
pub mod config;
// -- the lock payload,
#[cfg(feature = "internals")]
pub mod payload;
#[cfg(not(feature = "internals"))]
mod payload;
// -- holder identity and liveness,
#[cfg(feature = "internals")]
pub mod identity;
#[cfg(not(feature = "internals"))]
mod identity;
// -- OpenClaw compatibility,
pub mod openclaw;
// -- stale reasons,
#[cfg(feature = "internals")]
pub mod reason;
#[cfg(not(feature = "internals"))]
mod reason;
// -- stale classification,
pub mod reclaim;
// -- backend-neutral store types (a takeover's kind is part of errors)
pub mod store;
// -- the error type
mod error;
// -- what the locks did: metrics and the event log
pub mod observe;
// -- the backend seam and the file backend
pub mod backend;
// -- the lock core: acquire loop, guards, registry, watchdog
mod lock;
// -- the transcript API taking a guard
pub mod transcript;
// -- the attempt controller
pub mod attempt;
// -- diagnostics (the CLI's `status` and `doctor`; nothing else uses them)
#[cfg(feature = "internals")]
pub mod diag;
// -- the design document, rendered (documentation only: imports nothing)
pub mod design {
    #![doc = include_str!("../docs/design.md")]
}

pub use attempt::{runs, turns};
pub use backend::file::fence;
pub use store::classify;
#[cfg(feature = "internals")]
pub use {
    backend::file::{epoch, fs, fscheck},
    diag::{doctor, report, status},
};

pub use backend::file::{FileBackend, FileKey, Notify};
pub use backend::{LockBackend, SessionId, StoreBackend, TranscriptStore};
pub use config::{Config, HoldExceededPolicy, Settings};
pub use error::{
    Error, Holder, Holds, LossCause, Result, TakeoverPhase, TakeoverReason, TryAcquireError,
};
pub use lock::acquire::{LockOptions, SessionLock};
pub use lock::guard::{Guard, Releasing};
pub use reason::{Reason, Reasons};

// The README's Rust examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// `CLOCK_MONOTONIC` in nanoseconds, comparable across the processes of one
/// machine: for timing hand-offs between processes (benchmarks, the demo).
#[cfg(feature = "internals")]
pub fn monotonic_ns() -> u64 {
    sys::monotonic_ns()
}
