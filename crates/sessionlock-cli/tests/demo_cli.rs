//! End-to-end tests of `sessionlock demo`: the gateway simulation with
//! every fault of spec §13 (fence read errors at prompt release, user
//! aborts, SIGKILLed processes, a lane wedged past its lease, two lanes of
//! one session through a symlinked directory, foreign writes in prompt
//! windows), and its verdict checker fed doctored recordings.
//!
//! Each test runs the real binary in its own temporary directory, with every
//! `SESSIONLOCK_*` and `OPENCLAW_SESSION_WRITE_LOCK_*` variable removed.
//!
//! Timing: `faults_all_passes_five_seeds_in_a_row` runs five seeds of
//! `--duration 6` (about 35 s). With `SESSIONLOCK_LONG_DEMO=1` it runs the
//! full `--duration 30` for each seed (about 2.5 min):
//!
//! ```text
//! SESSIONLOCK_LONG_DEMO=1 cargo test -p sessionlock-cli --test demo_cli -- faults_all
//! ```

use std::path::Path;
use std::process::Output;
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Value};

mod common;
use common::{sessionlock, stderr, stdout};

/// One demo at a time: each runs a dozen lanes in several processes, and
/// two at once on a small machine would measure the machine, not the locks.
fn one_demo_at_a_time() -> MutexGuard<'static, ()> {
    static DEMO: Mutex<()> = Mutex::new(());
    DEMO.lock().unwrap_or_else(|p| p.into_inner())
}

fn demo(args: &[&str], dir: &Path) -> Output {
    let _one = one_demo_at_a_time();
    sessionlock()
        .arg("demo")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run sessionlock demo")
}

/// The value of a row of the verdict table (`✗` marks stripped).
fn row<'t>(table: &'t str, name: &str) -> &'t str {
    table
        .lines()
        .find_map(|l| {
            l.trim_start_matches([' ', '✗'])
                .strip_prefix(name)
                .filter(|rest| rest.starts_with("  "))
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("no row {name:?} in\n{table}"))
}

/// Asserts a passing run and its key rows.
fn assert_passed(out: &Output, what: &str) {
    let table = stdout(out);
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{table}\n{}",
        out.status.code(),
        stderr(out)
    );
    assert!(table.ends_with("verdict: PASS\n"), "{what}:\n{table}");
    for name in [
        "entries lost",
        "entries duplicated",
        "corrupt lines",
        "false takeovers",
        "missed takeovers",
        "locks leaked",
    ] {
        assert_eq!(row(&table, name), "0", "{what}: {name}\n{table}");
    }
    assert!(
        row(&table, "overlapping prompt windows").starts_with("0 "),
        "{what}:\n{table}"
    );
}

// Spec §13, every incident at once: the fence read error at prompt release,
// the user abort, the SIGKILLed process, the lane wedged past its lease, two
// lanes of one session through different paths, a foreign write in a
// prompt window; five different fault schedules in a row.
#[test]
fn faults_all_passes_five_seeds_in_a_row() {
    let long = std::env::var("SESSIONLOCK_LONG_DEMO").is_ok_and(|v| v == "1");
    let duration = if long { "30" } else { "6" };
    for seed in ["101", "202", "303", "404", "505"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = demo(
            &["--faults", "all", "--duration", duration, "--seed", seed],
            dir.path(),
        );
        let what = format!("demo --faults all --duration {duration} --seed {seed}");
        assert_passed(&out, &what);
        let table = stdout(&out);
        let faults = row(&table, "faults injected");
        for kind in [
            "fence-error",
            "user-abort",
            "sigkill",
            "wedge",
            "alias",
            "foreign-write",
        ] {
            assert!(faults.contains(kind), "{what}: {kind} missing\n{table}");
        }
        assert!(
            row(&table, "wedged lanes' late writes").ends_with("refused"),
            "{what}:\n{table}"
        );
        assert!(
            row(&table, "takeovers detected").contains("foreign-write"),
            "{what}:\n{table}"
        );
    }
}

#[test]
fn a_short_default_run_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = demo(
        &["--duration", "5", "--processes", "2", "--sessions", "4"],
        dir.path(),
    );
    assert_passed(&out, "demo --duration 5 --processes 2 --sessions 4");
    let table = stdout(&out);
    assert!(row(&table, "run")
        .starts_with("2 processes × 4 lanes, 4 sessions, 5 s, faults fence-error,"));
    assert!(dir.path().join("sessions/s3.jsonl").exists());
}

/// A recorded run with a lost entry, a duplicated entry and a leaked lock
/// added; `demo --check` must fail naming each.
#[test]
fn check_names_each_violation_of_a_doctored_recording() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recording = dir.path().join("run.json");
    let out = demo(
        &[
            "--duration",
            "2",
            "--processes",
            "1",
            "--sessions",
            "2",
            "--faults",
            "none",
            "--record",
            recording.to_str().expect("utf-8 path"),
        ],
        &dir.path().join("run"),
    );
    assert_passed(&out, "the recorded run");

    // Judging the recording again gives the same verdict, running nothing.
    let again = sessionlock()
        .args(["demo", "--check"])
        .arg(&recording)
        .output()
        .expect("run demo --check");
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), stdout(&out));

    let mut rec: Value =
        serde_json::from_slice(&std::fs::read(&recording).expect("read")).expect("json");
    let session = rec["transcripts"]
        .as_array()
        .expect("transcripts")
        .iter()
        .position(|t| t["ids"].as_array().is_some_and(|ids| !ids.is_empty()))
        .expect("a transcript with entries");
    let duplicated = rec["transcripts"][session]["ids"][0]
        .as_str()
        .expect("id")
        .to_owned();
    rec["transcripts"][session]["ids"]
        .as_array_mut()
        .expect("ids")
        .push(json!(duplicated));
    rec["acks"]
        .as_array_mut()
        .expect("acks")
        .push(json!({"id": "p0i0-channel-s1-999999", "session": 1}));
    rec["locks"].as_array_mut().expect("locks").push(json!({
        "lock": "/srv/sessions/s1.jsonl.lock", "pid": 4242, "alive": true,
        "lane": "channel", "reasons": "",
    }));
    let doctored = dir.path().join("doctored.json");
    std::fs::write(&doctored, serde_json::to_vec(&rec).expect("json")).expect("write");

    let out = sessionlock()
        .args(["demo", "--check"])
        .arg(&doctored)
        .output()
        .expect("run demo --check");
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{table}\n{}", stderr(&out));
    assert!(table.ends_with("verdict: FAIL\n"), "{table}");
    assert!(table.contains("✗ entries lost"), "{table}");
    assert!(
        row(&table, "entries lost").contains("p0i0-channel-s1-999999 in s1"),
        "{table}"
    );
    assert!(table.contains("✗ entries duplicated"), "{table}");
    assert!(
        row(&table, "entries duplicated").contains(&format!("{duplicated} ×2")),
        "{table}"
    );
    assert!(table.contains("✗ locks leaked"), "{table}");
    assert!(
        row(&table, "locks leaked").contains("/srv/sessions/s1.jsonl.lock names live pid 4242"),
        "{table}"
    );
    let violated = table.lines().filter(|l| l.starts_with('✗')).count();
    assert_eq!(violated, 3, "{table}");

    let out = sessionlock()
        .args(["demo", "--json", "--check"])
        .arg(&doctored)
        .output()
        .expect("run demo --json --check");
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json verdict");
    assert_eq!(v["version"], 1);
    assert_eq!(v["passed"], false);
    assert_eq!(v["figures"]["entries_lost"], 1);
    assert_eq!(v["figures"]["entries_duplicated"], 1);
    assert_eq!(v["figures"]["locks_leaked"], 1);
}

#[test]
fn bad_options_are_errors_not_verdicts() {
    let out = sessionlock()
        .args(["demo", "--faults", "wedge,meteor"])
        .output()
        .expect("run demo");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown fault \"meteor\""),
        "{}",
        stderr(&out)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("x"), "").expect("write");
    let out = sessionlock()
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run demo");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));

    let out = sessionlock()
        .args(["demo", "--check"])
        .arg(dir.path().join("x"))
        .output()
        .expect("run demo --check");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not a demo recording"),
        "{}",
        stderr(&out)
    );
}

// Issue 12: the whole simulation on PostgreSQL, with every fault that means
// something there (SIGKILL, wedge, user abort, foreign SQL insert, a
// liveness connection cut by the server, a holder stopped past its lease),
// and the same verdict; fence-error and alias are skipped with a note.
#[test]
fn a_short_postgres_run_passes_with_its_faults() {
    let url = sessionlock_lab::pgserver::fresh_database(&sessionlock_lab::pgserver::shared_url());
    let dir = tempfile::tempdir().expect("tempdir");
    let out = demo(&["--backend", &url, "--duration", "4"], dir.path());
    assert_passed(&out, "demo --backend URL --duration 4");
    let table = stdout(&out);
    assert!(
        row(&table, "run")
            .contains("faults user-abort,sigkill,wedge,foreign-write,conn-cut,stop-past-lease,"),
        "{table}"
    );
    assert_eq!(
        row(&table, "faults handled"),
        "all 6 as required",
        "{table}"
    );
    let takeovers = row(&table, "takeovers detected");
    for cause in ["conn-cut", "stop-past-lease", "wedge", "foreign-write"] {
        assert!(takeovers.contains(cause), "no {cause} takeover: {table}");
    }
    let err = stderr(&out);
    assert!(
        err.contains("fence-error") && err.contains("alias") && err.contains("skipped"),
        "{err}"
    );
    assert!(!dir.path().join("sessions/s0.jsonl").exists());
}
