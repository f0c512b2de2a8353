//! `status` and the doctor, as a library, name a process stuck inside a
//! protocol step holding a session's state lock (stopped, or holding it
//! longer than a protocol step takes), and who waits in the session's line
//! of waiters; a session nobody is stuck in or waits for shows nothing
//! extra. The processes are real: children of this test binary that hold a
//! `flock` on a state file and stop themselves, or wait for the lock.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    flock_and_hold, park, role_args, say as out, wait_until_in_line, wait_until_stopped, Kid,
};
use serde_json::Value;
use sessionlock::doctor::{self, Kind, Verdict};
use sessionlock::report::{doctor_report, status_report};
use sessionlock::status::{inspect_session, scan_dir};
use sessionlock::{Error, Holds, LockOptions, SessionLock, Settings};

#[test]
fn child_entry() {
    let Some((role, args)) = role_args() else {
        return;
    };
    match role.as_str() {
        // `flock <state file> <shared|exclusive> <stop|hold>`: takes a
        // `flock` on the state file (creating it), says so, and then stops
        // itself (SIGSTOP) or sleeps, holding it until killed.
        "flock" => flock_and_hold(Path::new(&args[0]), args[1] == "shared", args[2] == "stop"),
        // to a minute.
        "wait" => {
            out("WAITING");
            let g = SessionLock::new()
                .acquire_with(
                    &args[0],
                    &LockOptions::default().timeout(Some(Duration::from_secs(60))),
                )
                .expect("acquire");
            out("HELD");
            drop(g);
            park()
        }
        // `try <session> <ms>`: tries for the session's lock for `ms`, and
        // prints the timeout's message and holder (JSON).
        "try" => {
            let ms = args[1].parse().expect("ms");
            let err = SessionLock::new()
                .acquire_with(
                    &args[0],
                    &LockOptions::default().timeout(Some(Duration::from_millis(ms))),
                )
                .expect_err("held");
            let Error::Timeout { holder, .. } = &err else {
                panic!("expected a timeout, got {err}");
            };
            out(&format!("MESSAGE {err}"));
            out(&format!(
                "HOLDER {}",
                serde_json::to_string(holder).expect("json")
            ));
            park()
        }
        other => panic!("unknown role {other}"),
    }
}

/// A child holding a `flock` on `state` (`shared` or `exclusive`), stopped
/// (`stop`) or not (`hold`).
fn flock_kid(state: &Path, how: &str, then: &str) -> Kid {
    let kid = Kid::spawn("flock", &[&state.display().to_string(), how, then]);
    kid.expect("LOCKED", Duration::from_secs(20));
    if then == "stop" {
        wait_until_stopped(kid.pid());
    }
    kid
}

fn state_of(session: &Path) -> std::path::PathBuf {
    let mut s = session.as_os_str().to_owned();
    s.push(".epoch");
    s.into()
}

/// The finding on `session`'s stuck state lock, if the doctor made one.
fn stuck_finding<'a>(report: &'a doctor::Report, session: &Path) -> Option<&'a doctor::Finding> {
    report
        .findings
        .iter()
        .find(|f| f.reasons.contains(&doctor::STATE_LOCK_HELD) && f.session == session)
}

#[test]
fn status_and_the_doctor_name_a_stopped_process_holding_the_state_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let session = root.join("s.jsonl");
    let guard = SessionLock::new().acquire(&session).expect("acquire");
    let kid = flock_kid(&state_of(&session), "shared", "stop");
    let pid = kid.pid();
    let settings = Settings::default();

    let st = inspect_session(&session, &settings)
        .expect("status")
        .expect("the session is held");
    let stuck = st.contention.stuck.as_ref().expect("the stopped process");
    assert_eq!(stuck.pid, Some(pid), "{stuck}");
    assert_eq!(stuck.holds, Some(Holds::StateLock), "{stuck}");
    assert!(stuck.stopped, "{stuck}");
    assert_eq!(stuck.lock_path, state_of(&session), "{stuck}");
    let shown = stuck.to_string();
    assert!(
        shown.contains(&format!("pid={pid}")) && shown.contains("state lock"),
        "{shown}"
    );
    // The lock's own holder is still this process.
    assert_eq!(st.holder.pid, Some(std::process::id()));
    assert_eq!(st.holder.holds, None);

    // The directory's listing says the same.
    let listed = scan_dir(&root, &settings).expect("scan");
    let st = listed[0].as_ref().expect("readable");
    assert_eq!(
        st.contention.stuck.as_ref().and_then(|h| h.pid),
        Some(pid),
        "{:?}",
        st.contention
    );

    // And its JSON.
    let v =
        serde_json::to_value(status_report(std::slice::from_ref(&root), &settings)).expect("json");
    let e = &v["locks"][0];
    assert_eq!(e["stuck"]["pid"], pid, "{e:#}");
    assert_eq!(e["stuck"]["holds"], "state-lock", "{e:#}");
    assert_eq!(e["stuck"]["stopped"], true, "{e:#}");
    assert_eq!(e["pid"], std::process::id(), "{e:#}");

    // The doctor reports it, and can fix nothing about it.
    let report = doctor::examine(&root, &settings).expect("examine");
    let f = stuck_finding(&report, &session).expect("a state-lock-held finding");
    assert_eq!(f.verdict, Verdict::ReportOnly);
    assert_eq!(f.kind(), Kind::State);
    assert_eq!(f.path, state_of(&session));
    assert!(f.detail.contains(&format!("pid {pid}")), "{}", f.detail);
    assert!(f.detail.contains("stopped"), "{}", f.detail);
    assert!(f.detail.contains("kill -CONT"), "{}", f.detail);
    let v = serde_json::to_value(doctor_report(std::slice::from_ref(&root), &settings, None))
        .expect("json");
    let found: Vec<&Value> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["reasons"][0] == "state-lock-held")
        .collect();
    assert_eq!(found.len(), 1, "{v:#}");
    assert_eq!(found[0]["verdict"], "report-only");
    assert_eq!(found[0]["kind"], "state");
    assert_eq!(found[0]["stuck"]["pid"], pid);
    assert_eq!(found[0]["stuck"]["stopped"], true);
    assert_eq!(v["summary"]["exitCode"], 0, "report-only: {v:#}");

    kid.kill_and_reap();
    guard.release().expect("release");
}

#[test]
fn a_session_without_a_lock_file_is_reported_by_the_doctor() {
    // A process stopped inside a publish or a reclaim holds the state lock
    // of a session that has no lock file.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let session = root.join("bare.jsonl");
    let kid = flock_kid(&state_of(&session), "exclusive", "stop");
    let report = doctor::examine(&root, &Settings::default()).expect("examine");
    let f = stuck_finding(&report, &session).expect("a state-lock-held finding");
    match &f.subject {
        doctor::Subject::StuckStateLock(h) => {
            assert_eq!(h.pid, Some(kid.pid()));
            assert!(h.stopped);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(report.locks, 0);
    kid.kill_and_reap();
    // Gone with its process: nothing to report.
    let report = doctor::examine(&root, &Settings::default()).expect("examine");
    assert!(
        stuck_finding(&report, &session).is_none(),
        "{:#?}",
        report.findings
    );
}

#[test]
fn a_process_holding_the_state_lock_across_two_looks_is_named_though_not_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let session = root.join("s.jsonl");
    let guard = SessionLock::new().acquire(&session).expect("acquire");
    let kid = flock_kid(&state_of(&session), "shared", "hold");
    let st = inspect_session(&session, &Settings::default())
        .expect("status")
        .expect("held");
    let stuck = st.contention.stuck.as_ref().expect("the holding process");
    assert_eq!(stuck.pid, Some(kid.pid()));
    assert!(!stuck.stopped, "{stuck}");
    let report = doctor::examine(&root, &Settings::default()).expect("examine");
    let f = stuck_finding(&report, &session)
        .unwrap_or_else(|| panic!("a finding: {:#?}", report.findings));
    assert!(
        f.detail.contains(&format!("pid {}", kid.pid())),
        "{}",
        f.detail
    );
    assert!(!f.detail.contains("stopped"), "{}", f.detail);
    kid.kill_and_reap();
    guard.release().expect("release");
}

#[test]
fn status_counts_the_waiters_in_line_and_names_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let session = root.join("s.jsonl");
    let guard = SessionLock::new().acquire(&session).expect("acquire");
    let kid = Kid::spawn("wait", &[&session.display().to_string()]);
    kid.expect("WAITING", Duration::from_secs(20));
    wait_until_in_line(&session, kid.pid());
    let st = inspect_session(&session, &Settings::default())
        .expect("status")
        .expect("held");
    assert_eq!(st.contention.waiting, [kid.pid()]);
    assert!(st.contention.stuck.is_none(), "{:?}", st.contention);
    let v = serde_json::to_value(status_report(
        std::slice::from_ref(&root),
        &Settings::default(),
    ))
    .expect("json");
    assert_eq!(v["locks"][0]["waiting"], 1, "{v:#}");
    assert_eq!(v["locks"][0]["firstWaiterPid"], kid.pid(), "{v:#}");

    guard.release().expect("release");
    kid.expect("HELD", Duration::from_secs(20));
    kid.kill_and_reap();
}

#[test]
fn a_waiter_stopped_first_in_line_is_named_by_the_timeout_of_those_behind_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let session = root.join("s.jsonl");
    let guard = SessionLock::new().acquire(&session).expect("acquire");
    let first = Kid::spawn("wait", &[&session.display().to_string()]);
    first.expect("WAITING", Duration::from_secs(20));
    wait_until_in_line(&session, first.pid());
    // Stopped while first in line, it keeps its place; the lock goes free.
    first.signal(rustix::process::Signal::STOP);
    wait_until_stopped(first.pid());
    guard.release().expect("release");
    // A waiter of another process gives up behind it (before the line is
    // passed over as stalled) and names it: pid, place, stopped.
    let late = Kid::spawn("try", &[&session.display().to_string(), "200"]);
    let msg = late.expect("MESSAGE ", Duration::from_secs(20));
    let holder: Value = serde_json::from_str(
        late.expect("HOLDER ", Duration::from_secs(20))
            .trim_start_matches("HOLDER "),
    )
    .expect("holder JSON");
    assert_eq!(holder["holds"], "first-in-line", "{msg} {holder}");
    assert_eq!(holder["pid"], first.pid(), "{msg} {holder}");
    assert_eq!(holder["stopped"], true, "{msg} {holder}");
    assert!(msg.contains("line of waiters"), "{msg}");
    assert!(msg.contains(&format!("pid={} ", first.pid())), "{msg}");
    assert!(msg.contains(" stopped "), "{msg}");
    late.kill_and_reap();
    first.kill_and_reap();
}

#[test]
fn a_session_nobody_is_stuck_in_or_waits_for_shows_nothing_extra() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let session = root.join("s.jsonl");
    let guard = SessionLock::new().acquire(&session).expect("acquire");
    let settings = Settings::default();
    let st = inspect_session(&session, &settings)
        .expect("status")
        .expect("held");
    assert!(st.contention.is_empty(), "{:?}", st.contention);
    let v =
        serde_json::to_value(status_report(std::slice::from_ref(&root), &settings)).expect("json");
    let e = v["locks"][0].as_object().expect("an entry");
    for absent in ["waiting", "firstWaiterPid", "stuck"] {
        assert!(!e.contains_key(absent), "{absent}: {e:?}");
    }
    let report = doctor::examine(&root, &settings).expect("examine");
    assert!(
        stuck_finding(&report, &session).is_none(),
        "{:#?}",
        report.findings
    );
    guard.release().expect("release");
}
