//! End-to-end tests of the `sessionlock` binary: `verify-fs` and
//! `status --watch`.
//!
//! Each test runs the real binary in its own temporary directory, with every
//! `SESSIONLOCK_*` and `OPENCLAW_SESSION_WRITE_LOCK_*` variable removed, so the
//! developer's environment cannot change the outcome.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{hold, listed, run, sessionlock, stderr, stdout};

/// Every check `verify-fs` runs, in order: a stable interface.
const CHECKS: [&str; 10] = [
    "fs-type",
    "exclusive-create",
    "exclusive-link",
    "tmpfile-link",
    "rename-atomic",
    "flock",
    "notifications",
    "notifications-reliable",
    "pidfd",
    "fsync",
];

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits for `child` to exit, killing it after `deadline`.
fn wait_with_deadline(child: &mut Child, deadline: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sessionlock did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn verify_fs_on_a_tempdir_exits_0_lists_every_check_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(sessionlock().arg("verify-fs").arg(dir.path()));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), CHECKS.len() + 2, "{out}");
    for (line, name) in lines.iter().zip(CHECKS) {
        let mut words = line.split_whitespace();
        let status = words.next().expect("status");
        assert!(matches!(status, "ok" | "fallback"), "{line}");
        assert_eq!(words.next(), Some(name), "{line}");
        assert!(words.next().is_some(), "no detail: {line}");
    }
    assert_eq!(lines[CHECKS.len()], "");
    let summary = lines[CHECKS.len() + 1];
    assert!(
        summary.starts_with(&format!("{}: ", dir.path().display())),
        "{summary}"
    );
    assert!(!out.contains("FAIL"), "{out}");
    assert!(entries(dir.path()).is_empty(), "scratch left behind");
}

#[test]
fn verify_fs_json_lists_name_status_and_detail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(sessionlock().arg("verify-fs").arg("--json").arg(dir.path()));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).expect("a JSON object");
    let checks = listed(&doc, "checks");
    assert_eq!(doc["dir"], dir.path().to_str().unwrap());
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, CHECKS);
    for c in &checks {
        let status = c["status"].as_str().expect("status");
        assert!(matches!(status, "ok" | "fallback"), "{c}");
        assert!(!c["detail"].as_str().expect("detail").is_empty(), "{c}");
        assert_eq!(c.as_object().expect("object").len(), 3, "{c}");
    }
    assert!(entries(dir.path()).is_empty(), "scratch left behind");
}

#[test]
fn verify_fs_of_a_missing_directory_exits_2_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let o = run(sessionlock().arg("verify-fs").arg(&missing));
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty(), "stdout: {}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "error: cannot open directory {}",
            missing.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("\n\nhint: pass an existing directory"),
        "{err}"
    );
}

#[test]
fn verify_fs_of_a_file_exits_2_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("s.jsonl");
    std::fs::write(&file, b"").expect("write");
    let o = run(sessionlock().arg("verify-fs").arg(&file));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("is not a directory"), "{err}");
    assert!(err.contains("hint: "), "{err}");
}

#[test]
fn status_watch_prints_a_timestamped_table_per_refresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _guard = hold(&dir.path().join("s.jsonl"));
    let started = Instant::now();
    let o = run(sessionlock()
        .args(["status", "--watch", "--count", "2", "--interval-ms", "50"])
        .arg(dir.path()));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(started.elapsed() >= Duration::from_millis(50));
    let out = stdout(&o);
    let tables: Vec<&str> = out.split("\n\n").collect();
    assert_eq!(tables.len(), 2, "{out}");
    for table in tables {
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        // An RFC 3339 time, then the header and the lock's row.
        assert!(
            lines[0].starts_with("20") && lines[0].ends_with('Z'),
            "{table}"
        );
        assert!(lines[1].starts_with("SESSION"), "{table}");
        assert!(lines[2].starts_with("s.jsonl"), "{table}");
        assert!(lines[2].contains("channel/run-7"), "{table}");
    }
    assert!(
        !out.contains('\x1b'),
        "escape codes when not a terminal: {out:?}"
    );
}

#[test]
fn status_watch_without_locks_prints_the_header_each_refresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(sessionlock()
        .args(["status", "--watch", "--count", "2", "--interval-ms", "10"])
        .arg(dir.path()));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o).matches("SESSION").count(), 2, "{}", stdout(&o));
}

#[test]
fn status_watch_json_prints_one_document_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _guard = hold(&dir.path().join("s.jsonl"));
    let o = run(sessionlock()
        .args([
            "status",
            "--watch",
            "--json",
            "--count",
            "2",
            "--interval-ms",
            "20",
        ])
        .arg(dir.path()));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for line in lines {
        let doc: Value = serde_json::from_str(line).expect("a JSON document per line");
        let locks = listed(&doc, "locks");
        assert_eq!(locks.len(), 1, "{line}");
        assert_eq!(locks[0]["lane"], "channel");
        assert_eq!(locks[0]["pid"], std::process::id());
    }
}

#[test]
fn status_watch_of_a_missing_directory_keeps_going_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(sessionlock()
        .args(["status", "--watch", "--count", "2", "--interval-ms", "10"])
        .arg(dir.path().join("missing")));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).matches("error: cannot list directory").count(),
        2,
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o).matches("SESSION").count(), 2, "{}", stdout(&o));
}

#[test]
fn status_count_and_interval_need_watch() {
    let dir = tempfile::tempdir().expect("tempdir");
    for flag in [["--count", "2"], ["--interval-ms", "50"]] {
        let o = run(sessionlock().arg("status").args(flag).arg(dir.path()));
        assert_eq!(o.status.code(), Some(2), "{flag:?}");
        assert!(stderr(&o).contains("--watch"), "{}", stderr(&o));
    }
}

#[test]
fn status_watch_into_a_closed_pipe_exits_0_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = sessionlock()
        .args(["status", "--watch", "--interval-ms", "10"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("read the first line");
    assert!(first.ends_with('\n'), "{first:?}");
    drop(out);
    let status = wait_with_deadline(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn status_watch_stops_on_sigint() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = sessionlock()
        .args(["status", "--watch", "--interval-ms", "10"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("read the first line");
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid"))
        .expect("nonzero pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("send SIGINT");
    let status = wait_with_deadline(&mut child, Duration::from_secs(10));
    assert_eq!(status.signal(), Some(2), "{status:?}");
}
