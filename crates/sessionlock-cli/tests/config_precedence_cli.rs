//! Which source of a setting wins for the command (the README's
//! configuration table): a flag over the environment, the environment over
//! the default, sessionlock's variable over OpenClaw's. The real binary,
//! judged by what it does: the budget its timeout reports, the lease and
//! the mode of the lock file its command sees.
//!
//! Issue 14: the README said the environment wins, while the flags win.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{hold, run, sessionlock, stderr, stdout};

/// `sessionlock append SESSION --entry {} ARGS` with `env`, while the test
/// process holds the lock: exit 1, and the budget the timeout names.
fn append_timeout(session: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let started = Instant::now();
    let out = run(sessionlock()
        .envs(env.iter().copied())
        .arg("append")
        .arg(session)
        .args(["--entry", "{}"])
        .args(args));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited {:?}",
        started.elapsed()
    );
    let err = stderr(&out);
    let budget = err
        .split("(timeout ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no timeout in: {err}"));
    budget.to_owned()
}

#[test]
fn the_timeout_flag_wins_over_the_environment_which_wins_over_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let held = hold(&session);
    assert_eq!(
        append_timeout(
            &session,
            &[("SESSIONLOCK_ACQUIRE_TIMEOUT_MS", "60000")],
            &["--timeout-ms", "200"]
        ),
        "200ms"
    );
    assert_eq!(
        append_timeout(&session, &[("SESSIONLOCK_ACQUIRE_TIMEOUT_MS", "300")], &[]),
        "300ms"
    );
    assert_eq!(
        append_timeout(
            &session,
            &[
                ("SESSIONLOCK_ACQUIRE_TIMEOUT_MS", "300"),
                ("OPENCLAW_SESSION_WRITE_LOCK_ACQUIRE_TIMEOUT_MS", "60000")
            ],
            &[]
        ),
        "300ms",
        "sessionlock's variable before OpenClaw's"
    );
    assert_eq!(
        append_timeout(
            &session,
            &[("OPENCLAW_SESSION_WRITE_LOCK_ACQUIRE_TIMEOUT_MS", "250")],
            &[]
        ),
        "250ms",
        "OpenClaw's variable over the default"
    );
    held.release().expect("release");
}

/// What `sh -c SCRIPT` prints when `sessionlock [GLOBAL] exec [ARGS]
/// SESSION` runs it with `env`.
fn exec_prints(
    session: &Path,
    env: &[(&str, &str)],
    global: &[&str],
    args: &[&str],
    script: &str,
) -> String {
    let out = run(sessionlock()
        .envs(env.iter().copied())
        .args(global)
        .arg("exec")
        .args(args)
        .arg(session)
        .args(["--", "sh", "-c", script]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// The lease in the lock file the command runs under.
fn exec_lease(session: &Path, env: &[(&str, &str)], args: &[&str]) -> u64 {
    let lock = exec_prints(session, env, &[], args, r#"cat "$SESSIONLOCK_LOCK_PATH""#);
    let payload: Value = serde_json::from_str(&lock).expect("the lock is JSON");
    payload["maxHoldMs"].as_u64().expect("maxHoldMs")
}

#[test]
fn the_max_hold_flag_wins_over_the_environment_which_wins_over_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let env = [("SESSIONLOCK_MAX_HOLD_MS", "120000")];
    assert_eq!(
        exec_lease(&session, &env, &["--max-hold-ms", "90000"]),
        90_000
    );
    assert_eq!(exec_lease(&session, &env, &[]), 120_000);
    assert_eq!(exec_lease(&session, &[], &[]), 300_000);
}

#[test]
fn the_openclaw_compat_flag_turns_the_mode_on_whatever_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let mode = |env: &[(&str, &str)], global: &[&str]| {
        exec_prints(
            &session,
            env,
            global,
            &[],
            r#"stat -c %a "$SESSIONLOCK_LOCK_PATH""#,
        )
    };
    let off = [("SESSIONLOCK_OPENCLAW_COMPAT", "0")];
    // Compatible mode writes the lock readable by OpenClaw (0644).
    assert_eq!(mode(&off, &["--openclaw-compat"]), "644");
    assert_ne!(mode(&off, &[]), "644");
    assert_eq!(mode(&[("SESSIONLOCK_OPENCLAW_COMPAT", "1")], &[]), "644");
}
