//! End-to-end tests of the `sessionlock` binary: `append`, `read` and
//! `repair`.
//!
//! Each test runs the real binary in its own temporary directory, with every
//! `SESSIONLOCK_*` and `OPENCLAW_SESSION_WRITE_LOCK_*` variable removed, so the
//! developer's environment cannot change the outcome.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use sessionlock::{LockOptions, SessionLock};

mod common;
use common::{lock_path, run, sessionlock, stderr, stdout};

/// Runs `cmd` with `input` on stdin.
fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sessionlock");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("wait for sessionlock")
}

/// The entries `read` prints, parsed.
fn read_entries(session: &Path) -> (Output, Vec<Value>) {
    let out = run(sessionlock().arg("read").arg(session));
    let entries = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("read prints one JSON value per line"))
        .collect();
    (out, entries)
}

#[test]
fn append_from_entries_and_stdin_then_read_returns_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");

    let out = run(sessionlock()
        .arg("append")
        .arg(&session)
        .args(["--entry", r#"{"role":"user","text":"hi"}"#])
        .args(["--entry", "[1, 2, 3]"])
        .args(["--entry", "-7"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let summary = stdout(&out);
    assert!(
        summary.starts_with("appended 3 entries (")
            && summary.contains(" bytes) at offset 0, epoch "),
        "stdout: {summary}"
    );
    assert!(!lock_path(&session).exists(), "the lock is released");

    // Blank lines are skipped; CRLF line ends are accepted.
    let input = b"{\"role\":\"assistant\",\"text\":\"hello\"}\n\n   \r\n\"done\"\r\nnull\n";
    let out = run_with_stdin(sessionlock().arg("append").arg(&session), input);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(
        stdout(&out).starts_with("appended 3 entries ("),
        "stdout: {}",
        stdout(&out)
    );

    let (out, entries) = read_entries(&session);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        entries,
        [
            json!({"role": "user", "text": "hi"}),
            json!([1, 2, 3]),
            json!(-7),
            json!({"role": "assistant", "text": "hello"}),
            json!("done"),
            Value::Null,
        ]
    );
    assert!(stderr(&out).is_empty(), "stderr: {}", stderr(&out));

    let out = run(sessionlock()
        .arg("read")
        .arg(&session)
        .args(["--from", "4"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "\"done\"\nnull\n");
}

#[test]
fn append_json_summary_matches_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    std::fs::write(&session, "{\"first\":true}\n").unwrap();

    let out = run(sessionlock()
        .arg("append")
        .arg(&session)
        .arg("--json")
        .args(["--entry", r#"{"a": 1}"#, "--entry", "2"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(summary["entries"], 2);
    assert_eq!(summary["offset"], 15, "after the existing line");
    // Entries land as given (issue 9 item 4), not re-serialized.
    assert_eq!(summary["bytes"], "{\"a\": 1}\n2\n".len());
    assert!(
        summary["epoch"].as_u64().unwrap() >= 1,
        "summary: {summary}"
    );
    assert_eq!(
        std::fs::read_to_string(&session).unwrap(),
        "{\"first\":true}\n{\"a\": 1}\n2\n"
    );
}

#[test]
fn append_with_full_durability_creates_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    for i in 0..2 {
        let out = run_with_stdin(
            sessionlock()
                .arg("append")
                .arg(&session)
                .args(["--durability", "full"]),
            format!("{{\"n\":{i}}}\n").as_bytes(),
        );
        assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    }
    let (out, entries) = read_entries(&session);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(entries, [json!({"n": 0}), json!({"n": 1})]);
}

#[test]
fn append_rejects_an_unknown_durability() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let out = run(sessionlock().arg("append").arg(&session).args([
        "--durability",
        "always",
        "--entry",
        "1",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(!session.exists());
}

#[test]
fn an_invalid_entry_writes_nothing_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    std::fs::write(&session, "{\"kept\":1}\n").unwrap();

    let out = run(sessionlock().arg("append").arg(&session).args([
        "--entry",
        r#"{"ok":1}"#,
        "--entry",
        "{oops",
    ]));
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: invalid JSON in --entry 2 of 2\ncaused by: "),
        "stderr: {err}"
    );
    assert!(err.contains("\n\nhint: "), "stderr: {err}");
    assert!(stdout(&out).is_empty());

    let out = run_with_stdin(
        sessionlock().arg("append").arg(&session),
        b"{\"ok\":1}\n\n{\"half\":\n{\"ok\":2}\n",
    );
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: invalid JSON on line 3 of stdin\n"),
        "stderr: {err}"
    );
    assert!(err.contains("at column 8"), "stderr: {err}");

    assert_eq!(
        std::fs::read_to_string(&session).unwrap(),
        "{\"kept\":1}\n",
        "nothing was written"
    );
    assert!(!lock_path(&session).exists(), "the lock was never taken");
}

#[test]
fn append_with_no_entries_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let out = run_with_stdin(sessionlock().arg("append").arg(&session), b"\n  \n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: no entries to append\n"),
        "stderr: {}",
        stderr(&out)
    );
    assert!(!session.exists());
}

#[test]
fn read_of_a_torn_tail_prints_the_complete_entries_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    std::fs::write(&session, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();

    let (out, entries) = read_entries(&session);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert_eq!(entries, [json!({"a": 1}), json!({"b": 2})]);
    let err = stderr(&out);
    let expected = format!(
        "warning: torn final line at byte 16 (5 bytes) — run `sessionlock repair {}`",
        session.display()
    );
    assert!(err.starts_with(&expected), "stderr: {err}");
}

#[test]
fn repair_moves_the_torn_tail_aside_and_read_is_clean_again() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    std::fs::write(&session, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();

    let out = run(sessionlock().arg("repair").arg(&session));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let saved = text
        .trim_end()
        .strip_prefix("repaired: moved 5 torn bytes at offset 16 to ")
        .unwrap_or_else(|| panic!("stdout: {text}"));
    let canonical = dir.path().canonicalize().unwrap().join("s.jsonl");
    let epoch = saved
        .strip_prefix(&format!("{}.torn-", canonical.display()))
        .unwrap_or_else(|| panic!("saved to {saved}"));
    assert!(epoch.parse::<u64>().is_ok(), "saved to {saved}");
    assert_eq!(std::fs::read_to_string(saved).unwrap(), "{\"c\":");
    assert!(!lock_path(&session).exists(), "the lock is released");

    let (out, entries) = read_entries(&session);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(entries, [json!({"a": 1}), json!({"b": 2})]);
    assert!(stderr(&out).is_empty(), "stderr: {}", stderr(&out));

    let out = run(sessionlock().arg("repair").arg(&session));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "nothing to repair: the transcript ends with a complete line\n"
    );
}

#[test]
fn append_after_a_crash_moves_the_torn_tail_aside_first() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    std::fs::write(&session, "{\"a\":1}\n{\"b\":").unwrap();

    let out = run(sessionlock()
        .arg("append")
        .arg(&session)
        .args(["--entry", r#"{"c":3}"#]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(
        stdout(&out).starts_with("appended 1 entry (8 bytes) at offset 8, epoch "),
        "stdout: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(
            "warning: the transcript ended with a torn line; moved 5 torn bytes at offset 8 to "
        ),
        "stderr: {}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&session).unwrap(),
        "{\"a\":1}\n{\"c\":3}\n"
    );
}

#[test]
fn read_of_an_invalid_line_prints_the_entries_before_it_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    std::fs::write(&session, "{\"a\":1}\nnot json\n{\"b\":2}\n").unwrap();

    let (out, entries) = read_entries(&session);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(entries, [json!({"a": 1})]);
    let err = stderr(&out);
    assert!(
        err.starts_with("error: invalid transcript entry at byte 8 of "),
        "stderr: {err}"
    );
}

#[test]
fn read_and_repair_of_a_missing_transcript_exit_2_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("missing.jsonl");
    for cmd in ["read", "repair"] {
        let out = run(sessionlock().arg(cmd).arg(&session));
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!(
                "error: cannot {cmd} transcript {}\n",
                session.display()
            )),
            "stderr: {err}"
        );
        assert!(err.contains("\n\nhint: "), "stderr: {err}");
    }
    assert!(!session.exists(), "nothing creates it");
    assert!(!lock_path(&session).exists());
}

#[test]
fn append_and_repair_time_out_naming_the_holder_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    std::fs::write(&session, "{\"a\":1}\n{\"b\":").unwrap();
    let guard = SessionLock::new()
        .acquire_with(
            &session,
            &LockOptions::default().timeout(Some(Duration::from_secs(10))),
        )
        .expect("hold the lock in the test process");

    let expected = format!(
        "session file locked (timeout 100ms): pid={}",
        std::process::id()
    );
    let out = run(sessionlock()
        .arg("append")
        .args(["--timeout-ms", "100", "--entry", "1"])
        .arg(&session));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: {expected}")),
        "stderr: {err}"
    );
    assert!(
        err.contains("\n\nhint: run `sessionlock status "),
        "stderr: {err}"
    );
    assert!(stdout(&out).is_empty());

    let out = run(sessionlock()
        .arg("repair")
        .args(["--timeout-ms", "100"])
        .arg(&session));
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains(&expected), "stderr: {}", stderr(&out));

    // Readers take no lock.
    let (out, entries) = read_entries(&session);
    assert_eq!(out.status.code(), Some(1), "the torn tail is still there");
    assert_eq!(entries, [json!({"a": 1})]);

    guard.release().unwrap();
    assert_eq!(
        std::fs::read_to_string(&session).unwrap(),
        "{\"a\":1}\n{\"b\":",
        "nothing was written without the lock"
    );
}

#[test]
fn read_into_a_closed_pipe_exits_0_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    // Far more than a pipe buffer holds, so `read` is still writing when the
    // reader goes away.
    let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(1000));
    std::fs::write(&session, line.repeat(8 * 1024)).unwrap();

    let mut child = sessionlock()
        .arg("read")
        .arg(&session)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sessionlock read");
    let mut first = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout is piped"));
    out.read_line(&mut first).unwrap();
    assert_eq!(first, line);
    drop(out);

    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(output.stderr.is_empty(), "stderr: {}", stderr(&output));
}

/// Issue 14 item 7: `repair` and `doctor --fix` logged the repair they
/// were asked for as a WARN, as if something had gone wrong. A requested
/// repair is logged at info; a torn tail that `append` meets unasked is
/// still a warning (the command's own).
#[test]
fn a_repair_the_user_asked_for_is_logged_at_info_not_as_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let tear = || std::fs::write(&session, "{\"a\":1}\n{\"b\":").unwrap();
    let logged = |cmd: &mut Command| {
        let out = run(cmd.env("SESSIONLOCK_LOG", "info"));
        assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
        stderr(&out)
    };

    tear();
    let repair = logged(sessionlock().arg("repair").arg(&session));
    tear();
    let doctor = logged(sessionlock().args(["doctor", "--fix"]).arg(dir.path()));
    for (what, err) in [("repair", repair), ("doctor --fix", doctor)] {
        assert!(
            err.lines()
                .any(|l| l.contains("INFO") && l.contains("repaired torn transcript tail")),
            "{what} logs its repair at info: {err}"
        );
        assert!(!err.contains("WARN"), "{what} warns: {err}");
    }

    tear();
    let out = run(sessionlock()
        .arg("append")
        .arg(&session)
        .args(["--entry", "1"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: the transcript ended with a torn line; moved 5 torn bytes"),
        "{err}"
    );
    assert!(!err.contains("WARN"), "one warning, not two: {err}");
}
