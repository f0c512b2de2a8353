//! End-to-end tests of the `sessionlock` binary: `exec` and `status`.
//!
//! Each test runs the real binary in its own temporary directory, with every
//! `SESSIONLOCK_*` and `OPENCLAW_SESSION_WRITE_LOCK_*` variable removed, so the
//! developer's environment cannot change the outcome.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

mod common;
use common::{dead_pid, hold, listed, lock_path, run, sessionlock, stderr, stdout};

/// Writes an OpenClaw-style lock (create-then-write, pretty JSON, no
/// sessionlock fields) naming a dead holder.
fn write_dead_openclaw_lock(session: &Path) -> u32 {
    let pid = dead_pid();
    let payload = serde_json::json!({
        "pid": pid,
        "createdAt": sessionlock::payload::format_time(SystemTime::now()),
        "maxHoldMs": 300_000,
    });
    let text = serde_json::to_string_pretty(&payload).expect("serialize payload");
    std::fs::write(lock_path(session), text).expect("write lock file");
    pid
}

fn status_json(dir: &Path) -> (Output, Vec<Value>) {
    let out = run(sessionlock().arg("status").arg("--json").arg(dir));
    let v: Value = serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    let items = listed(&v, "locks");
    (out, items)
}

#[test]
fn exec_runs_the_command_while_holding_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let child = sessionlock()
        .arg("exec")
        .arg(&session)
        .args(["--", "sh", "-c"])
        .arg(r#"cat "$SESSIONLOCK_LOCK_PATH"; echo; echo "epoch=$SESSIONLOCK_EPOCH"; echo "session=$SESSIONLOCK_SESSION""#)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exec_pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "stderr: {}", stderr(&out));

    let text = stdout(&out);
    let (payload, rest) = text.split_once("\nepoch=").expect("epoch line");
    let payload: Value = serde_json::from_str(payload.trim()).expect("lock payload is JSON");
    assert_eq!(payload["pid"], exec_pid, "the lock names the exec process");
    assert_eq!(payload["owner"], "sessionlock");
    assert_eq!(payload["lane"], "cli");
    let (epoch, session_line) = rest.split_once('\n').unwrap();
    assert_eq!(payload["epoch"].as_u64(), Some(epoch.parse().unwrap()));
    let canonical = dir.path().canonicalize().unwrap().join("s.jsonl");
    assert_eq!(
        session_line.trim(),
        format!("session={}", canonical.display())
    );

    assert!(
        !lock_path(&session).exists(),
        "the lock is released after the command"
    );
}

#[test]
fn exec_propagates_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let out = run(sessionlock()
        .arg("exec")
        .arg(&session)
        .args(["--", "sh", "-c", "exit 7"]));
    assert_eq!(out.status.code(), Some(7));
    assert!(!lock_path(&session).exists());
}

#[test]
fn exec_reports_death_by_signal_as_128_plus_signal() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(sessionlock()
        .arg("exec")
        .arg(dir.path().join("s.jsonl"))
        .args(["--", "sh", "-c", "kill -TERM $$"]));
    assert_eq!(out.status.code(), Some(128 + 15));
}

#[test]
fn sequential_execs_get_strictly_increasing_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let epochs: Vec<u64> = (0..3)
        .map(|_| {
            let out = run(sessionlock().arg("exec").arg(&session).args([
                "--",
                "sh",
                "-c",
                "echo $SESSIONLOCK_EPOCH",
            ]));
            assert!(out.status.success(), "stderr: {}", stderr(&out));
            stdout(&out).trim().parse().expect("an epoch")
        })
        .collect();
    assert!(epochs[0] >= 1);
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "epochs must increase: {epochs:?}"
    );
}

#[test]
fn exec_times_out_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let marker = dir.path().join("ran");
    let guard = hold(&session);

    let out = run(sessionlock()
        .arg("exec")
        .args(["--timeout-ms", "100"])
        .arg(&session)
        .args(["--", "touch"])
        .arg(&marker));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    let expected = format!(
        "session file locked (timeout 100ms): pid={}",
        std::process::id()
    );
    assert!(err.contains(&expected), "stderr: {err}");
    assert!(
        err.contains("\nhint: run `sessionlock status "),
        "stderr: {err}"
    );
    assert!(
        !marker.exists(),
        "the command must not run without the lock"
    );

    guard.release().unwrap();
}

#[test]
fn exec_of_a_missing_command_exits_127() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let out = run(sessionlock()
        .arg("exec")
        .arg(&session)
        .args(["--", "sessionlock-test-no-such-command"]));
    assert_eq!(out.status.code(), Some(127));
    assert!(stderr(&out).starts_with("error: cannot run sessionlock-test-no-such-command"));
    assert!(!lock_path(&session).exists(), "the lock is released");
}

#[test]
fn exec_of_a_non_executable_file_exits_126() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let out = run(sessionlock()
        .arg("exec")
        .arg(dir.path().join("s.jsonl"))
        .arg("--")
        .arg(&script));
    assert_eq!(out.status.code(), Some(126), "stderr: {}", stderr(&out));
    assert!(stderr(&out).starts_with("error: cannot run "));
}

#[test]
fn exec_rejects_a_malformed_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(sessionlock()
        .arg("exec")
        .args(["--timeout-ms", "1e3"])
        .arg(dir.path().join("s.jsonl"))
        .args(["--", "true"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--timeout-ms"),
        "stderr: {}",
        stderr(&out)
    );
}

/// The command ignores SIGTERM, so the SIGTERM exec sends before the lease
/// ends does not stop it and the revocation must.
#[test]
fn exec_terminates_the_command_when_the_lock_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let started = Instant::now();
    let out = run(sessionlock()
        .arg("exec")
        .args(["--max-hold-ms", "200"])
        .arg(&session)
        .args(["--", "sh", "-c", "trap '' TERM; exec sleep 30"]));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("error: lock revoked after max hold; terminated sh"),
        "stderr: {}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "sleep was not terminated"
    );
    assert!(!lock_path(&session).exists(), "the revoked lock is removed");
}

#[test]
fn status_shows_a_held_lock() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let guard = hold(&session);

    let out = run(sessionlock().arg("status").arg(dir.path()));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(header[..4], ["SESSION", "PID", "HOST", "ALIVE"]);
    let row: Vec<&str> = lines.next().expect("a row").split_whitespace().collect();
    assert_eq!(row[0], "s.jsonl");
    assert_eq!(row[1], std::process::id().to_string());
    assert_eq!(row[3], "yes");
    assert_eq!(row[4], "channel/run-7");
    assert!(row.contains(&"wait"), "row: {row:?}");
    assert_eq!(lines.next(), None);

    guard.release().unwrap();
}

// Issue 11 item 3: `status` lists the lock files of a directory as they
// are. Keyed through their session names, a stale lock beside a session
// name that is a symlink was shown as the target's lock, twice, and never
// as itself.
#[test]
fn status_shows_each_lock_file_once_beside_a_session_name_that_is_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let canonical = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(dir.path().join("real.jsonl"), b"").unwrap();
    let alias = dir.path().join("alias.jsonl");
    std::os::unix::fs::symlink("real.jsonl", &alias).unwrap();
    // Acquired through the symlinked name: the lock is `real.jsonl.lock`.
    let guard = hold(&alias);
    assert_eq!(guard.lock_path(), canonical.join("real.jsonl.lock"));
    // A stale lock file at the symlinked name's own lock path.
    let stale = write_dead_openclaw_lock(&alias);

    let (out, items) = status_json(dir.path());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let shown: Vec<(&str, u64, bool)> = items
        .iter()
        .map(|i| {
            (
                i["lockPath"].as_str().unwrap(),
                i["pid"].as_u64().unwrap(),
                i["alive"].as_bool().unwrap(),
            )
        })
        .collect();
    let alias_lock = canonical.join("alias.jsonl.lock").display().to_string();
    let real_lock = canonical.join("real.jsonl.lock").display().to_string();
    assert_eq!(
        shown,
        [
            (alias_lock.as_str(), u64::from(stale), false),
            (real_lock.as_str(), u64::from(std::process::id()), true),
        ]
    );
    guard.release().unwrap();
}

#[test]
fn status_json_has_stable_field_names() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let guard = hold(&session);

    let (out, items) = status_json(dir.path());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(items.len(), 1);
    let lock = &items[0];
    for field in [
        "session",
        "lockPath",
        "pid",
        "hostname",
        "alive",
        "lane",
        "runId",
        "ageMs",
        "leaseLeftMs",
        "epoch",
        "owner",
        "reasons",
        "action",
    ] {
        assert!(lock.get(field).is_some(), "missing {field} in {lock}");
    }
    assert_eq!(lock["pid"], std::process::id());
    assert_eq!(lock["alive"], true);
    assert_eq!(lock["lane"], "channel");
    assert_eq!(lock["runId"], "run-7");
    assert_eq!(lock["epoch"], guard.epoch());
    assert_eq!(lock["owner"], "sessionlock");
    assert_eq!(lock["reasons"], serde_json::json!([]));
    assert_eq!(lock["action"], "wait");
    assert_eq!(
        Path::new(lock["lockPath"].as_str().unwrap()).file_name(),
        Some("s.jsonl.lock".as_ref())
    );

    guard.release().unwrap();
}

#[test]
fn status_reports_a_dead_openclaw_holder() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let pid = write_dead_openclaw_lock(&session);

    let out = run(sessionlock().arg("status").arg(dir.path()));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let row = text.lines().nth(1).expect("a row");
    assert!(row.contains(&pid.to_string()), "row: {row}");
    assert!(row.contains("dead-pid"), "row: {row}");
    assert!(row.contains("reclaim"), "row: {row}");

    let (_, items) = status_json(dir.path());
    assert_eq!(items[0]["pid"], pid);
    assert_eq!(items[0]["alive"], false);
    assert_eq!(items[0]["reasons"], serde_json::json!(["dead-pid"]));
    assert_eq!(items[0]["action"], "reclaim");
    // A payload without `owner` is OpenClaw's (issue 9 item 3).
    assert_eq!(items[0]["owner"], "openclaw");
    assert_eq!(items[0]["epoch"], Value::Null);
}

#[test]
fn status_reports_a_symlink_at_a_lock_path_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "{}").unwrap();
    let link = lock_path(&dir.path().join("a.jsonl"));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // A readable lock beside it is still shown.
    let pid = write_dead_openclaw_lock(&dir.path().join("b.jsonl"));

    let out = run(sessionlock().arg("status").arg(dir.path()));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert!(err.contains(&link.display().to_string()), "stderr: {err}");
    assert!(
        stdout(&out).contains(&pid.to_string()),
        "stdout: {}",
        stdout(&out)
    );

    let (out, items) = status_json(dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["lockPath"], link.display().to_string());
    assert!(items[0]["error"]
        .as_str()
        .unwrap()
        .contains("symbolic link"));
    assert_eq!(items[1]["pid"], pid);
}

#[test]
fn status_of_a_missing_directory_exits_2_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = run(sessionlock().arg("status").arg(&missing));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert!(
        err.contains(&missing.display().to_string()),
        "stderr: {err}"
    );
    assert!(err.contains("\n\nhint: "), "stderr: {err}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn status_of_an_empty_directory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(sessionlock().arg("status").arg(dir.path()));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains("no session locks in"),
        "stderr: {}",
        stderr(&out)
    );

    let (out, items) = status_json(dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert!(items.is_empty());
}

#[test]
fn status_treats_a_closed_stdout_as_success() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        write_dead_openclaw_lock(&dir.path().join(format!("s{i}.jsonl")));
    }
    let mut child = sessionlock()
        .arg("status")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before status writes (`sessionlock status | head -0`).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn demo_passes_with_real_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_sessionlock"))
        .args([
            "demo",
            "--duration",
            "3",
            "--processes",
            "2",
            "--sessions",
            "3",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verdict: PASS"), "{stdout}");
    let row = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no row {name:?} in\n{stdout}"))
            .to_owned()
    };
    for name in [
        "entries lost",
        "entries duplicated",
        "corrupt lines",
        "false takeovers",
        "locks leaked",
    ] {
        assert_eq!(row(name), "0", "{name} in\n{stdout}");
    }
    assert!(
        row("wedged lanes' late writes").ends_with("refused"),
        "{stdout}"
    );
}

#[test]
fn demo_json_is_machine_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_sessionlock"))
        .args([
            "demo",
            "--json",
            "--duration",
            "2",
            "--processes",
            "2",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run demo");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json verdict");
    assert_eq!(v["version"], 1, "{v}");
    assert_eq!(v["passed"], true, "{v}");
    let checks = v["checks"].as_array().expect("checks");
    assert!(checks
        .iter()
        .all(|c| c["name"].is_string() && c["ok"].is_boolean()));
    assert_eq!(v["figures"]["entries_lost"], 0, "{v}");
    assert_eq!(v["figures"]["locks_leaked"], 0, "{v}");
}

#[test]
fn bench_prints_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_sessionlock"))
        .args([
            "bench",
            "--json",
            "--only",
            "lock",
            "--cycles",
            "50",
            "--handoffs",
            "3",
            "--kills",
            "1",
            "--wedges",
            "1",
            "--lease-ms",
            "100",
        ])
        .output()
        .expect("run bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json figures");
    let figures = listed(&v, "figures");
    assert_eq!(figures.len(), 4);
    for f in &figures {
        assert!(f["samples"].as_u64().is_some_and(|n| n > 0), "{f}");
        assert!(f["median_ms"].as_f64().is_some_and(f64::is_finite), "{f}");
    }
}

/// `bench --only contention`, small (P = 2, K = 20, on 1 and 2 files):
/// sessionlock beside raw flock(2), every row verified (each (w, seq) once,
/// whole lines, no overlapping critical sections), with the figures' shape.
#[test]
fn bench_contention_prints_verified_rows_beside_the_flock_floor() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(sessionlock()
        .args(["bench", "--json", "--only", "contention", "--procs", "2"])
        .args(["--contention-cycles", "20", "--files", "1,2", "--dir"])
        .arg(dir.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json figures");
    let figures = listed(&v, "figures");
    let rows: Vec<(&str, u64)> = figures
        .iter()
        .map(|f| (f["impl"].as_str().unwrap(), f["files"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        rows,
        [
            ("sessionlock", 1),
            ("flock", 1),
            ("sessionlock", 2),
            ("flock", 2)
        ],
        "{v}"
    );
    for f in &figures {
        assert_eq!(f["procs"], 2, "{f}");
        assert_eq!(f["cycles"], 20, "{f}");
        assert_eq!(f["ops"], 40, "{f}");
        assert_eq!(f["verified"], true, "{f}");
        assert!(f["failure"].is_null(), "{f}");
        for k in [
            "seconds",
            "ops_per_sec",
            "wait_p50_ms",
            "wait_p99_ms",
            "wait_max_ms",
        ] {
            assert!(
                f[k].as_f64().is_some_and(|x| x.is_finite() && x >= 0.0),
                "{k}: {f}"
            );
        }
        assert!(
            f["wait_p50_ms"].as_f64() <= f["wait_p99_ms"].as_f64(),
            "{f}"
        );
        assert!(
            f["wait_p99_ms"].as_f64() <= f["wait_max_ms"].as_f64(),
            "{f}"
        );
        let (lo, hi) = (
            f["share_min"].as_u64().unwrap(),
            f["share_max"].as_u64().unwrap(),
        );
        assert!(lo <= hi && hi <= 20, "{f}");
        // share is null when nobody acquired in the middle of the window.
        assert!(
            f["share"].is_null()
                || f["share"]
                    .as_f64()
                    .is_some_and(|s| (0.0..=1.0).contains(&s)),
            "{f}"
        );
        let ratio = &f["floor_ratio"];
        if f["impl"] == "flock" {
            assert!(ratio.is_null(), "{f}");
        } else {
            assert!(ratio.as_f64().is_some_and(|r| r > 0.0), "{f}");
        }
    }
}

/// `bench --backend URL` measures the PostgreSQL figures beside the file
/// ones in the same run: the server's floor and the four lock figures.
#[test]
fn bench_with_a_postgres_backend_prints_the_pg_figures_too() {
    let url = sessionlock_lab::pgserver::fresh_database(&sessionlock_lab::pgserver::shared_url());
    let out = Command::new(env!("CARGO_BIN_EXE_sessionlock"))
        .args(["--backend", &url])
        .args([
            "bench",
            "--json",
            "--only",
            "lock",
            "--cycles",
            "20",
            "--handoffs",
            "2",
            "--kills",
            "1",
            "--wedges",
            "1",
            "--lease-ms",
            "100",
            "--pg-floor",
            "5",
            "--pg-cycles",
            "5",
            "--pg-handoffs",
            "2",
            "--pg-kills",
            "1",
            "--pg-stops",
            "1",
            "--pg-lease-ms",
            "200",
        ])
        .output()
        .expect("run bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json figures");
    let figures = listed(&v, "figures");
    let names: Vec<&str> = figures
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names.len(), 10, "{names:?}");
    for want in [
        "pg floor: durable commit (INSERT)",
        "pg floor: SELECT 1 round trip",
        "pg uncontended acquire+release",
        "pg hand-off: release → waiter holds",
        "pg SIGKILL of holder → waiter holds",
        "pg lease end (200 ms) → waiter holds",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for f in &figures {
        assert!(f["samples"].as_u64().is_some_and(|n| n > 0), "{f}");
        assert!(f["median_ms"].as_f64().is_some_and(f64::is_finite), "{f}");
    }
}

// Issue 11 item 4: a binding serializes the library's `Holder`; it must
// read as the CLI's `status --json` rows do, field for field (the CLI
// builds its rows itself).
#[test]
fn the_librarys_holder_serializes_as_the_status_json_rows() {
    let dir = tempfile::tempdir().unwrap();
    let guard = hold(&dir.path().join("held.jsonl"));
    write_dead_openclaw_lock(&dir.path().join("dead.jsonl"));

    let (out, items) = status_json(dir.path());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let holders: Vec<Value> = sessionlock::status::scan_dir(
        &std::fs::canonicalize(dir.path()).unwrap(),
        &sessionlock::Settings::default(),
    )
    .unwrap()
    .into_iter()
    .map(|st| serde_json::to_value(&st.unwrap().holder).unwrap())
    .collect();
    assert_eq!(holders.len(), 2);
    assert_eq!(items.len(), 2);
    for (holder, row) in holders.iter().zip(&items) {
        let Value::Object(fields) = holder else {
            panic!("a holder serializes as an object: {holder}");
        };
        for (name, value) in fields {
            let shown = row
                .get(name)
                .unwrap_or_else(|| panic!("status --json has no {name}: {row}"));
            if name == "ageMs" {
                assert!(
                    shown.is_u64() && value.is_u64(),
                    "{name}: {shown} vs {value}"
                );
            } else {
                assert_eq!(shown, value, "{name} in {row}");
            }
        }
    }
    guard.release().unwrap();
}
