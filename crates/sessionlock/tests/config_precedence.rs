//! Which source of a setting wins (the `config` module's table): a value
//! set on `LockOptions` in code over the environment, the environment over
//! a `Config`, a `Config` over the default; `LockOptions::default()` reads
//! no environment. Judged by what acquisitions do: the budget a timeout
//! reports, the lease written into the lock file.
//!
//! Issue 14: the README said the environment wins, while builder methods
//! and CLI flags win over it.
//!
//! One test in a binary of its own: it sets the process's environment.

use std::path::Path;
use std::time::Duration;

use sessionlock::config::{Config, DEFAULT_ACQUIRE_TIMEOUT};
use sessionlock::{Error, Guard, LockOptions, SessionLock};

/// The budget of an acquisition that had to wait for `_held`'s lock.
fn budget_used(locks: &SessionLock, session: &Path, opts: &LockOptions, _held: &Guard) -> u64 {
    match locks.acquire_with(session, opts) {
        Err(Error::Timeout { timeout_ms, .. }) => timeout_ms,
        other => panic!("expected a timeout behind the held lock, got {other:?}"),
    }
}

/// The lease (`maxHoldMs`) written into `guard`'s lock file.
fn lease_written(guard: &Guard) -> u64 {
    let bytes = std::fs::read(guard.lock_path()).expect("read the lock file");
    let payload: serde_json::Value = serde_json::from_slice(&bytes).expect("the lock is JSON");
    payload["maxHoldMs"].as_u64().expect("maxHoldMs")
}

#[test]
fn explicit_options_win_over_the_environment_which_wins_over_a_config() {
    for (var, _) in std::env::vars() {
        if var.starts_with("SESSIONLOCK_") || var.starts_with("OPENCLAW_SESSION_WRITE_LOCK_") {
            std::env::remove_var(var);
        }
    }
    std::env::set_var("SESSIONLOCK_ACQUIRE_TIMEOUT_MS", "300");
    std::env::set_var("SESSIONLOCK_MAX_HOLD_MS", "120000");
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let ms = Duration::from_millis;

    // The environment over the defaults: `SessionLock::new` reads it, and
    // `acquire` uses its options.
    let locks = SessionLock::new();
    let held = locks.acquire(&session).expect("acquire");
    assert_eq!(lease_written(&held), 120_000, "the environment's lease");
    assert_eq!(
        budget_used(&locks, &session, locks.options(), &held),
        300,
        "the environment's budget"
    );

    // A builder method over the environment.
    let explicit = LockOptions::from_env().timeout(Some(ms(100)));
    assert_eq!(budget_used(&locks, &session, &explicit, &held), 100);

    // The environment over a `Config`...
    let mut app = Config::default();
    app.acquire_timeout = Some(Some(ms(150)));
    let from_config = LockOptions::from_settings(&app.resolve());
    assert_eq!(budget_used(&locks, &session, &from_config, &held), 300);
    // ...which wins over the default once the environment says nothing.
    std::env::remove_var("SESSIONLOCK_ACQUIRE_TIMEOUT_MS");
    let from_config = LockOptions::from_settings(&app.resolve());
    assert_eq!(budget_used(&locks, &session, &from_config, &held), 150);
    std::env::set_var("SESSIONLOCK_ACQUIRE_TIMEOUT_MS", "300");

    // `LockOptions::default()` reads no environment.
    assert_eq!(
        LockOptions::default().timeout,
        Some(DEFAULT_ACQUIRE_TIMEOUT)
    );
    assert_eq!(LockOptions::from_env().timeout, Some(ms(300)));
    held.release().expect("release");

    // A builder lease over the environment's, as written into the lock.
    let guard = locks
        .acquire_with(&session, &LockOptions::from_env().max_hold(ms(90_000)))
        .expect("acquire");
    assert_eq!(lease_written(&guard), 90_000);
    guard.release().expect("release");
}
