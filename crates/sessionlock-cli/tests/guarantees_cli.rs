//! Guarantees of `status` and `doctor` that hold by construction and are
//! tested so that breaking them fails: they judge locks by the resolved
//! settings (environment over configuration over defaults, spec §11), and a
//! holder of another user counts as alive (spec §3).
//!
//! Each test runs the real binary with every `SESSIONLOCK_*` and
//! `OPENCLAW_SESSION_WRITE_LOCK_*` variable removed, then sets the ones it
//! tests. Live holders are real `sleep` processes, or this test process.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use sessionlock::payload::format_time;
use sessionlock::{LockOptions, SessionLock};

mod common;
use common::{listed, lock_path, run, sessionlock, stderr, stdout, Sleeper};
use sessionlock_lab::testkit::as_nobody;

/// A sessionlock lock of a live `sleep`, taken `age` ago with lease `lease`.
fn live_lock(session: &Path, sleeper: &Sleeper, age: Duration, lease: Duration) {
    let payload = json!({
        "pid": sleeper.pid(), "createdAt": format_time(SystemTime::now() - age),
        "maxHoldMs": lease.as_millis() as u64, "starttime": sleeper.starttime(),
        "owner": "sessionlock", "token": "0123456789abcdef0123456789abcdef", "epoch": 3,
        "lane": "heartbeat",
    });
    std::fs::write(
        lock_path(session),
        serde_json::to_vec(&payload).expect("serialize"),
    )
    .expect("write lock");
}

/// `doctor --json DIR` with `env` set: `[verdict, reasons, action]` of the
/// only finding, and its detail.
fn doctor_verdict(dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> (Output, Value, String) {
    let out = run(sessionlock()
        .envs(env.iter().copied())
        .args(["doctor", "--json"])
        .arg(dir)
        .args(extra));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json prints JSON ({e}): {}", stdout(&out)));
    let findings = v["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{v}");
    let f = &findings[0];
    let detail = f["detail"].as_str().unwrap_or_default().to_owned();
    (
        out,
        json!([f["verdict"], f["reasons"], f["action"]]),
        detail,
    )
}

/// `status --json DIR` with `env` set: the only row.
fn status_row(dir: &Path, env: &[(&str, &str)]) -> Value {
    let out = run(sessionlock()
        .envs(env.iter().copied())
        .args(["status", "--json"])
        .arg(dir));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("status --json");
    let rows = listed(&doc, "locks");
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].clone()
}

// Spec §11: the doctor judges a live holder past its lease by the resolved
// hold-exceeded policy. Under `report` it is never removed, not even with
// `--fix --force`; by default it is removable (with --force).
#[test]
fn doctor_follows_the_hold_exceeded_policy_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("over.jsonl");
    let sleeper = Sleeper::spawn();
    live_lock(
        &session,
        &sleeper,
        Duration::from_secs(600),
        Duration::from_secs(1),
    );

    let (_, by_default, _) = doctor_verdict(dir.path(), &[], &[]);
    assert_eq!(
        by_default,
        json!(["removable", ["hold-exceeded"], "remove-with-force"]),
        "{by_default}"
    );

    let report = [("SESSIONLOCK_HOLD_EXCEEDED", "report")];
    let (_, reported, detail) = doctor_verdict(dir.path(), &report, &[]);
    assert_eq!(
        reported,
        json!(["report-only", ["hold-exceeded"], "keep"]),
        "{reported}"
    );
    assert!(
        detail.contains("the hold-exceeded policy is `report`"),
        "{detail}"
    );
    let (out, _, _) = doctor_verdict(dir.path(), &report, &["--fix", "--force"]);
    assert!(
        lock_path(&session).exists(),
        "a report-policy lock was removed: {}",
        stdout(&out)
    );

    // `status` says the same: a contender would report, not reclaim.
    assert_eq!(status_row(dir.path(), &[])["action"], "reclaim");
    assert_eq!(status_row(dir.path(), &report)["action"], "report");
}

// Spec §11: `too-old` is judged by the resolved stale-after, from
// sessionlock's variable or OpenClaw's fallback name.
#[test]
fn doctor_and_status_follow_stale_after_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("long.jsonl");
    let sleeper = Sleeper::spawn();
    live_lock(
        &session,
        &sleeper,
        Duration::from_secs(300),
        Duration::from_secs(3 * 3600),
    );

    let (out, by_default, _) = doctor_verdict(dir.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        by_default,
        json!(["ok", [], "keep"]),
        "five minutes is not too old by the 30 min default: {by_default}"
    );
    assert_eq!(status_row(dir.path(), &[])["reasons"], json!([]));

    for var in [
        "SESSIONLOCK_STALE_MS",
        "OPENCLAW_SESSION_WRITE_LOCK_STALE_MS",
    ] {
        let env = [(var, "60000")];
        let (out, judged, _) = doctor_verdict(dir.path(), &env, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            judged,
            json!(["report-only", ["too-old"], "keep"]),
            "{var}=60000: {judged}"
        );
        assert_eq!(
            status_row(dir.path(), &env)["reasons"],
            json!(["too-old"]),
            "{var}"
        );
    }
    assert!(lock_path(&session).exists());
}

// Spec §3: EPERM from `kill(pid, 0)` means alive. A lock held by this (root)
// process, in OpenClaw-compatible mode so that others can read it, must look
// alive to `status` run by `nobody`.
#[test]
fn status_run_by_another_user_sees_a_root_holder_alive() {
    let bin_dir = tempfile::tempdir().expect("tempdir");
    let bin = bin_dir.path().join("sessionlock");
    let Some(mut cmd) = as_nobody(&bin) else {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v != "true"),
            "CI needs setpriv or runuser (util-linux) for this test"
        );
        eprintln!("skipped: neither setpriv nor runuser is installed");
        return;
    };
    let chmod = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    // The build may sit under a home that `nobody` cannot enter.
    std::fs::copy(env!("CARGO_BIN_EXE_sessionlock"), &bin).expect("copy binary");
    chmod(bin_dir.path(), 0o755);
    chmod(&bin, 0o755);
    let dir = tempfile::tempdir().expect("tempdir");
    chmod(dir.path(), 0o755);
    let session = dir.path().join("root.jsonl");
    let guard = SessionLock::new()
        .acquire_with(
            &session,
            &LockOptions::default()
                .timeout(Some(Duration::from_secs(10)))
                .openclaw_compat(true)
                .lane("channel"),
        )
        .expect("hold the lock in the test process");

    // The binary cannot say who ran it or what `kill(pid, 0)` answered, so
    // the same wrapper first runs a shell that does: if the wrapper left it
    // root (or with CAP_KILL), the test below would pass without the EPERM
    // path ever being taken.
    let who = run(as_nobody(Path::new("sh"))
        .expect("the wrapper found above")
        .args(["-c", "id -u && kill -0 \"$1\"", "sh"])
        .arg(std::process::id().to_string())
        .env("LC_ALL", "C")
        .stdin(Stdio::null()));
    let uid = stdout(&who).trim().parse::<u32>();
    assert!(
        uid.as_ref().is_ok_and(|u| *u != 0),
        "status must run unprivileged: id -u said {uid:?}"
    );
    assert!(
        !who.status.success() && stderr(&who).contains("Operation not permitted"),
        "kill -0 on this process must fail with EPERM as that user: {:?} {}",
        who.status,
        stderr(&who)
    );

    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("SESSIONLOCK_") || k.starts_with("OPENCLAW_SESSION_WRITE_LOCK_") {
            cmd.env_remove(&key);
        }
    }
    let out = run(cmd
        .args(["status", "--json"])
        .arg(dir.path())
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json ({e}): {}", stdout(&out)));
    let rows = listed(&doc, "locks");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["pid"], std::process::id(), "{row}");
    assert_eq!(
        row["alive"], true,
        "a process of another user is alive: {row}"
    );
    assert_eq!(row["reasons"], json!([]), "{row}");
    assert_eq!(row["action"], "wait", "{row}");
    guard.release().expect("release");
}
