//! End-to-end tests of what `sessionlock status` and `sessionlock doctor`
//! say about a process stuck inside a protocol step holding a session's
//! state lock, and about the session's line of waiters. The stuck process is
//! real: a child of this test binary that takes a `flock` on the session's
//! state file and stops itself (SIGSTOP).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sessionlock::{LockOptions, SessionLock};
use sessionlock_lab::testkit::{
    flock_and_hold, park, role_args, say as out, wait_until_stopped, Kid,
};

mod common;
use common::{hold, listed, run, sessionlock, stdout};

#[test]
fn child_entry() {
    let Some((role, args)) = role_args() else {
        return;
    };
    match role.as_str() {
        // `flock-stop <state file>`: takes a shared `flock` on the state
        // file (as a fenced write does), says so and stops itself.
        "flock-stop" => flock_and_hold(Path::new(&args[0]), true, true),
        // `wait <session>`: waits in line for the session's lock.
        "wait" => {
            out("WAITING");
            let _g = SessionLock::new().acquire_with(
                &args[0],
                &LockOptions::default().timeout(Some(Duration::from_secs(60))),
            );
            park()
        }
        other => panic!("unknown role {other}"),
    }
}

fn state_of(session: &Path) -> PathBuf {
    let mut s = session.as_os_str().to_owned();
    s.push(".epoch");
    s.into()
}

/// A child that holds `session`'s state lock, stopped.
fn stopped_in_state_lock(session: &Path) -> Kid {
    let kid = Kid::spawn("flock-stop", &[&state_of(session).display().to_string()]);
    kid.expect("LOCKED", Duration::from_secs(20));
    wait_until_stopped(kid.pid());
    kid
}

fn json(args: &[&str], dir: &Path) -> Value {
    let o = run(sessionlock().args(args).arg("--json").arg(dir));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("JSON ({e}): {}", stdout(&o)))
}

#[test]
fn status_and_doctor_name_a_process_stopped_holding_the_state_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let session = root.join("s.jsonl");
    let guard = hold(&session);
    let kid = stopped_in_state_lock(&session);
    let pid = kid.pid();

    let o = run(sessionlock().arg("status").arg(&root));
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    let line = text
        .lines()
        .find(|l| l.starts_with("s.jsonl: pid "))
        .unwrap_or_else(|| panic!("no line about the stuck process:\n{text}"));
    assert!(line.contains(&format!("pid {pid} is stopped")), "{line}");
    assert!(line.contains("state lock"), "{line}");
    assert!(line.contains(&format!("kill -CONT {pid}")), "{line}");

    let v = json(&["status"], &root);
    let locks = listed(&v, "locks");
    assert_eq!(locks.len(), 1, "{v:#}");
    assert_eq!(
        locks[0]["pid"],
        std::process::id(),
        "the lock's holder: {v:#}"
    );
    let stuck = &locks[0]["stuck"];
    assert_eq!(stuck["pid"], pid, "{v:#}");
    assert_eq!(stuck["holds"], "state-lock", "{v:#}");
    assert_eq!(stuck["stopped"], true, "{v:#}");
    assert_eq!(
        stuck["lockPath"],
        state_of(&session).display().to_string(),
        "{v:#}"
    );

    let o = run(sessionlock().arg("doctor").arg(&root));
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "report-only: {text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("s.jsonl.epoch "))
        .unwrap_or_else(|| panic!("no row for the state file:\n{text}"));
    assert!(row.contains("report-only"), "{row}");
    assert!(row.contains("state-lock-held"), "{row}");
    assert!(row.contains(&format!("pid {pid} is stopped")), "{row}");

    let v = json(&["doctor"], &root);
    let findings = listed(&v, "findings");
    let f = findings
        .iter()
        .find(|f| f["reasons"] == serde_json::json!(["state-lock-held"]))
        .unwrap_or_else(|| panic!("no state-lock-held finding: {v:#}"));
    assert_eq!(f["kind"], "state");
    assert_eq!(f["verdict"], "report-only");
    assert_eq!(f["stuck"]["pid"], pid);
    assert_eq!(f["stuck"]["stopped"], true);
    assert_eq!(f["stuck"]["holds"], "state-lock");

    kid.kill_and_reap();
    guard.release().expect("release");
}

#[test]
fn status_shows_the_line_of_waiters_and_nothing_for_a_quiet_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let session = root.join("s.jsonl");
    let guard = hold(&session);

    // Held, nobody waiting and nobody stuck: nothing but the table.
    let o = run(sessionlock().arg("status").arg(&root));
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 2, "header and one row:\n{text}");
    let v = json(&["status"], &root);
    let entry = listed(&v, "locks")[0].clone();
    for absent in ["waiting", "firstWaiterPid", "stuck"] {
        assert!(entry.get(absent).is_none(), "{absent}: {entry:#}");
    }
    let v = json(&["doctor"], &root);
    assert!(
        listed(&v, "findings")
            .iter()
            .all(|f| f["reasons"] != serde_json::json!(["state-lock-held"])),
        "{v:#}"
    );

    let kid = Kid::spawn("wait", &[&session.display().to_string()]);
    kid.expect("WAITING", Duration::from_secs(20));
    let until = Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let v = json(&["status"], &root);
        let entry = listed(&v, "locks")[0].clone();
        if entry.get("waiting").is_some() {
            break entry;
        }
        assert!(Instant::now() < until, "never seen waiting: {v:#}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(entry["waiting"], 1, "{entry:#}");
    assert_eq!(entry["firstWaiterPid"], kid.pid(), "{entry:#}");
    assert!(entry.get("stuck").is_none(), "{entry:#}");
    let text = stdout(&run(sessionlock().arg("status").arg(&root)));
    assert!(
        text.contains(&format!(
            "s.jsonl: 1 process waits in line for the lock; first: pid {}",
            kid.pid()
        )),
        "{text}"
    );
    kid.kill_and_reap();
    guard.release().expect("release");
}
