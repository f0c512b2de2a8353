//! OpenClaw's locks beside sessionlock's, seen from the command line (issue
//! 9 item 3, spec §15): labels and warnings in `status` and `doctor`, the
//! policy for a live foreign holder past its lease, and `doctor --fix
//! --force`. Locks are planted in OpenClaw's format (pretty JSON, four
//! fields, no `owner`) and name real processes; the tests against the real
//! OpenClaw package are in `openclaw_interop.rs`.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use common::{lock_path, run, sessionlock, stderr, stdout, Sleeper};
use serde_json::{json, Value};
use sessionlock::payload::format_time;

/// Plants an OpenClaw lock naming `holder`, taken `age` ago with a lease of
/// `max_hold_ms`.
fn plant_openclaw_lock(session: &Path, holder: &Sleeper, age: Duration, max_hold_ms: u64) {
    let payload = json!({
        "pid": holder.pid(),
        "createdAt": format_time(SystemTime::now() - age),
        "maxHoldMs": max_hold_ms,
        "starttime": holder.starttime(),
    });
    let text = serde_json::to_string_pretty(&payload).expect("serialize") + "\n";
    std::fs::write(lock_path(session), text).expect("plant lock");
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON on stdout ({e}): {}", stdout(out)))
}

// Issue 9 item 3: `status` and `doctor` must label OpenClaw's locks as
// OpenClaw's and warn when a sessionlock holder sharing their directory is
// exposed to deletion by OpenClaw (its argv has no `openclaw` marker).
#[test]
fn status_and_doctor_label_openclaw_locks_and_warn_about_exposed_holders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let oc_holder = Sleeper::spawn();
    plant_openclaw_lock(&d.join("oc.jsonl"), &oc_holder, Duration::ZERO, 300_000);
    // `held(args)` runs `sessionlock ARGS` under an `exec` (without
    // compatible mode) that holds sl.jsonl's lock: a holder whose argv
    // carries no `openclaw` token. Its output is the inner command's.
    let sl = d.join("sl.jsonl");
    let held = |args: &[&str]| {
        run(sessionlock()
            .arg("exec")
            .arg(&sl)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_sessionlock"))
            .args(args)
            .arg(d))
    };

    let out = held(&["status"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    // Columns are aligned: the OWNER cell starts where its header does.
    let at = text
        .lines()
        .next()
        .unwrap()
        .find("OWNER")
        .expect("OWNER column");
    let owner = |name: &str| {
        let row = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("row {name}: {text}"));
        row[at..].split_whitespace().next().unwrap_or("").to_owned()
    };
    assert_eq!(owner("oc.jsonl"), "openclaw");
    assert_eq!(owner("sl.jsonl"), "sessionlock");
    let err = stderr(&out);
    assert!(
        err.contains("warning:")
            && err.contains("holds OpenClaw locks")
            && err.contains("sl.jsonl (pid ")
            && err.contains(": no `openclaw` argument)"),
        "stderr: {err}"
    );
    assert!(
        err.contains("SESSIONLOCK_OPENCLAW_COMPAT=1"),
        "stderr: {err}"
    );

    let out = held(&["status", "--json"]);
    let items = common::listed(&json_of(&out), "locks");
    let by_session = |name: &str| {
        items
            .iter()
            .find(|i| i["session"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} in {items:?}"))
            .clone()
    };
    assert_eq!(by_session("oc.jsonl")["owner"], "openclaw");
    assert_eq!(by_session("oc.jsonl")["openclawExposure"], Value::Null);
    assert_eq!(by_session("sl.jsonl")["owner"], "sessionlock");
    assert_eq!(by_session("sl.jsonl")["openclawExposure"], "unmarked-argv");

    let out = held(&["doctor"]);
    assert!(
        stderr(&out).contains("holds OpenClaw locks"),
        "stderr: {}",
        stderr(&out)
    );
    let out = held(&["doctor", "--json"]);
    let v = json_of(&out);
    let exposed = v["openclawExposure"].as_array().expect("openclawExposure");
    assert_eq!(exposed.len(), 1, "{v}");
    assert!(exposed[0]["lockPath"]
        .as_str()
        .unwrap()
        .ends_with("sl.jsonl.lock"));
    assert_eq!(exposed[0]["reason"], "unmarked-argv");

    // A compat-mode holder carries the marker: no warning while it holds.
    let out = run(sessionlock()
        .arg("--openclaw-compat")
        .arg("exec")
        .arg(d.join("sl.jsonl"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_sessionlock"))
        .arg("status")
        .arg("--json")
        .arg(d));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let items = common::listed(&json_of(&out), "locks");
    let sl = items
        .iter()
        .find(|i| i["session"].as_str().unwrap().ends_with("sl.jsonl"))
        .expect("the exec holder's lock");
    assert_eq!(sl["alive"], true);
    assert_eq!(sl["openclawExposure"], Value::Null, "{sl}");
}

// Issue 9 item 3: a live OpenClaw holder past its lease cannot be fenced.
// Reclaiming it stays the default (seed incident #89673) but is its own
// policy, and every such reclaim is logged as an unfenced reclaim.
#[test]
fn foreign_hold_exceeded_policy_report_refuses_and_reclaim_logs_an_unfenced_reclaim() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let oc_holder = Sleeper::spawn();

    plant_openclaw_lock(&session, &oc_holder, Duration::from_secs(600), 1000);
    let out = run(sessionlock()
        .env("SESSIONLOCK_FOREIGN_HOLD_EXCEEDED", "report")
        .args(["exec", "--timeout-ms", "5000"])
        .arg(&session)
        .args(["--", "true"]));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("session file lock stale (hold-exceeded)")
            && stderr(&out).contains("the foreign holders' policy `report`"),
        "stderr: {}",
        stderr(&out)
    );
    assert!(lock_path(&session).exists(), "the OpenClaw lock is kept");

    // Unset, the foreign policy follows SESSIONLOCK_HOLD_EXCEEDED.
    let out = run(sessionlock()
        .env("SESSIONLOCK_HOLD_EXCEEDED", "report")
        .args(["exec", "--timeout-ms", "5000"])
        .arg(&session)
        .args(["--", "true"]));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(lock_path(&session).exists(), "the OpenClaw lock is kept");

    // Set, it is the foreign holders' alone: `report` for sessionlock's own
    // holders does not spare a foreign one.
    let out = run(sessionlock()
        .env("SESSIONLOCK_HOLD_EXCEEDED", "report")
        .env("SESSIONLOCK_FOREIGN_HOLD_EXCEEDED", "reclaim")
        .args(["exec", "--timeout-ms", "5000"])
        .arg(&session)
        .args(["--", "true"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("unfenced reclaim")
            && err.contains(&oc_holder.pid().to_string())
            && err.contains("past_lease_ms=")
            && err.contains(&lock_path(&session).display().to_string()),
        "stderr: {err}"
    );

    // sessionlock's own holder past its lease is fenced: no unfenced log.
    let payload = json!({
        "pid": oc_holder.pid(), "starttime": oc_holder.starttime(),
        "createdAt": format_time(SystemTime::now() - Duration::from_secs(600)),
        "maxHoldMs": 1000, "owner": "sessionlock", "epoch": 1,
        "token": "0123456789abcdef0123456789abcdef",
    });
    std::fs::write(lock_path(&session), payload.to_string()).unwrap();
    let out = run(sessionlock()
        .env("SESSIONLOCK_FOREIGN_HOLD_EXCEEDED", "report")
        .args(["exec", "--timeout-ms", "5000"])
        .arg(&session)
        .args(["--", "true"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(
        !stderr(&out).contains("unfenced"),
        "stderr: {}",
        stderr(&out)
    );
}

// Issue 9 item 3: `doctor --fix` removed a live holder past its lease like a
// dead one. It now needs `--force` (and explains why in its plan and hint).
#[test]
fn doctor_fix_removes_a_live_hold_exceeded_holder_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let session = d.join("s.jsonl");
    let oc_holder = Sleeper::spawn();
    plant_openclaw_lock(&session, &oc_holder, Duration::from_secs(600), 1000);
    let before = std::fs::read(lock_path(&session)).unwrap();

    let out = run(sessionlock().arg("doctor").arg(d));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(
        stdout(&out).contains("would remove with --force"),
        "stdout: {}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("cannot be fenced"),
        "stdout: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(&format!(
            "`sessionlock doctor {} --fix --force` removes its lock too",
            d.display()
        )) && !stderr(&out).contains("to remove 1 stale lock"),
        "the hint asks for --force: {}",
        stderr(&out)
    );

    let out = run(sessionlock().args(["doctor", "--fix"]).arg(d));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert_eq!(
        std::fs::read(lock_path(&session)).unwrap(),
        before,
        "the live holder's lock is untouched without --force"
    );
    assert!(
        stdout(&out).contains("skipped: its holder is alive, only past its lease"),
        "stdout: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(&format!(
            "run `sessionlock doctor {} --fix --force`",
            d.display()
        )),
        "stderr: {}",
        stderr(&out)
    );
    let out = run(sessionlock().args(["doctor", "--json", "--fix"]).arg(d));
    let v = json_of(&out);
    assert_eq!(v["fixed"][0]["outcome"], "needs-force", "{v}");
    assert_eq!(v["findings"][0]["action"], "remove-with-force", "{v}");
    assert_eq!(v["summary"]["needsForce"], 1, "{v}");

    let out = run(sessionlock().args(["doctor", "--fix", "--force"]).arg(d));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(!lock_path(&session).exists(), "removed with --force");
    assert!(
        stderr(&out).contains("unfenced reclaim"),
        "stderr: {}",
        stderr(&out)
    );
}

// Issue 9 item 3: compatible mode re-executes the command with the
// `openclaw` marker. The re-execution must be invisible to the caller (same
// pid, stdin, stdout, environment and exit status) and happen once.
#[test]
fn compat_mode_reexecutes_once_keeping_pid_streams_and_exit_status() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let mut child = sessionlock()
        .arg("--openclaw-compat")
        .arg("exec")
        .arg(&session)
        .args([
            "--",
            "sh",
            "-c",
            // The command's parent is exec's keeper; the keeper's parent
            // (field 4 of its stat) is exec, the lock holder.
            "cat; holder=$(cut -d' ' -f4 /proc/$PPID/stat); \
             echo \"compat=$SESSIONLOCK_OPENCLAW_COMPAT holder=$holder\"; \
             tr '\\0' ' ' < /proc/$holder/cmdline >&2; exit 7",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\n")
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("hello\ncompat=1 holder={pid}\n"),
        "same pid, stdin and stdout; the mode reaches the command"
    );
    let err = stderr(&out);
    assert_eq!(
        err.matches("--openclaw-marker openclaw").count(),
        1,
        "marked exactly once: {err}"
    );
    assert!(
        err.contains("--openclaw-marker openclaw --openclaw-compat exec"),
        "{err}"
    );
}
