//! End-to-end tests of `sessionlock doctor`.
//!
//! Each test runs the real binary in its own temporary directory, with every
//! `SESSIONLOCK_*` and `OPENCLAW_SESSION_WRITE_LOCK_*` variable removed, so the
//! developer's environment cannot change the outcome. Live holders are real
//! `sleep` processes, named in the locks by pid and `/proc` start time.
//!
//! Exit status rule under test: only findings someone has to act on count
//! (removable, repairable, invalid, and after `--fix` what it could not do);
//! a live holder (`ok`), a lock or leftover in its grace (`wait`) and a
//! `too-old` lock (`report-only`) do not.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use sessionlock::payload::format_time;
use sessionlock::{LockOptions, SessionLock};

mod common;
use common::{dead_pid, listed, run, sessionlock, stderr, stdout, Sleeper};

fn doctor(dir: &Path, extra: &[&str]) -> Output {
    run(sessionlock().arg("doctor").arg(dir).args(extra))
}

fn doctor_json(dir: &Path, extra: &[&str]) -> (Output, Value) {
    let out = run(sessionlock()
        .arg("doctor")
        .arg("--json")
        .arg(dir)
        .args(extra));
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json prints JSON ({e}): {}", stdout(&out)));
    (out, v)
}

fn ago(d: Duration) -> String {
    format_time(SystemTime::now() - d)
}

fn set_age(path: &Path, age: Duration) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now() - age))
        .expect("set mtime");
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec(v).expect("serialize")).expect("write lock");
}

const OLD_TOMB: &str = "gone.jsonl.lock.tomb-0000000000000001000000000000000a";
const FRESH_TMP: &str = "busy.jsonl.lock.tmp-0000000000000001000000000000000b";
const TORN: &[u8] =
    b"{\"role\":\"user\",\"text\":\"hi\"}\n{\"role\":\"assistant\"}\n{\"role\":\"ass";

/// A directory with one lock of every kind, a torn and a clean transcript,
/// and two leftovers. Returns the live process the locks name.
fn fixture(dir: &Path) -> Sleeper {
    let sleeper = Sleeper::spawn();
    let (pid, start) = (sleeper.pid(), sleeper.starttime());
    let lock = |name: &str| dir.join(format!("{name}.jsonl.lock"));

    // A sessionlock holder: one compact line with the extra fields.
    write_json(
        &lock("live"),
        &json!({
            "pid": pid, "createdAt": ago(Duration::ZERO), "maxHoldMs": 300_000,
            "starttime": start, "owner": "sessionlock",
            "token": "0123456789abcdef0000000000000007", "epoch": 7,
            "lane": "channel", "runId": "run-7",
        }),
    );
    // OpenClaw writes four fields, pretty-printed.
    let openclaw = json!({
        "pid": pid, "createdAt": ago(Duration::ZERO), "maxHoldMs": 300_000, "starttime": start,
    });
    std::fs::write(
        lock("openclaw"),
        serde_json::to_string_pretty(&openclaw).expect("serialize"),
    )
    .expect("write lock");
    write_json(
        &lock("dead"),
        &json!({"pid": dead_pid(), "createdAt": ago(Duration::ZERO), "maxHoldMs": 300_000}),
    );
    write_json(
        &lock("recycled"),
        &json!({"pid": pid, "createdAt": ago(Duration::ZERO), "maxHoldMs": 300_000, "starttime": start + 1}),
    );
    std::fs::write(lock("malformed-fresh"), b"").expect("write lock");
    std::fs::write(lock("malformed-old"), b"garbage{").expect("write lock");
    set_age(&lock("malformed-old"), Duration::from_secs(600));
    write_json(
        &lock("hold-exceeded"),
        &json!({"pid": pid, "createdAt": ago(Duration::from_secs(600)), "maxHoldMs": 1000, "starttime": start}),
    );
    write_json(
        &lock("too-old"),
        &json!({"pid": pid, "createdAt": ago(Duration::from_secs(2 * 3600)), "maxHoldMs": 3 * 3600 * 1000, "starttime": start}),
    );

    std::fs::write(dir.join("torn.jsonl"), TORN).expect("write transcript");
    std::fs::write(dir.join("clean.jsonl"), b"{\"a\":1}\n{\"a\":2}\n").expect("write transcript");

    std::fs::write(dir.join(OLD_TOMB), b"{}").expect("write tombstone");
    set_age(&dir.join(OLD_TOMB), Duration::from_secs(600));
    std::fs::write(dir.join(FRESH_TMP), b"{}").expect("write temp");
    sleeper
}

/// Every file in `dir`, by name, with its contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| {
            let e = e.expect("dir entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (name, bytes)
        })
        .collect()
}

/// `file name -> (verdict, reasons, action)` from `--json` output.
fn verdicts(v: &Value) -> BTreeMap<String, (String, Vec<String>, String)> {
    v["findings"]
        .as_array()
        .expect("findings is an array")
        .iter()
        .map(|f| {
            let path = PathBuf::from(f["path"].as_str().expect("path"));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let reasons = f["reasons"]
                .as_array()
                .expect("reasons")
                .iter()
                .map(|r| r.as_str().expect("reason").to_owned())
                .collect();
            let verdict = f["verdict"].as_str().expect("verdict").to_owned();
            let action = f["action"].as_str().expect("action").to_owned();
            (name, (verdict, reasons, action))
        })
        .collect()
}

fn row<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{text}"))
}

fn entry(verdict: &str, reasons: &[&str], action: &str) -> (String, Vec<String>, String) {
    (
        verdict.to_owned(),
        reasons.iter().map(|r| (*r).to_owned()).collect(),
        action.to_owned(),
    )
}

#[test]
fn every_kind_of_lock_gets_its_verdict_and_fix_removes_exactly_the_stale_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _sleeper = fixture(d);

    // Without --fix: findings to act on, nothing changed.
    let before = snapshot(d);
    let out = doctor(d, &[]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert_eq!(snapshot(d), before, "doctor without --fix changes nothing");
    let text = stdout(&out);
    let expect_rows = [
        ("dead.jsonl.lock", "removable", "dead-pid", "would remove:"),
        (
            "recycled.jsonl.lock",
            "removable",
            "recycled-pid",
            "would remove:",
        ),
        (
            "malformed-old.jsonl.lock",
            "removable",
            "malformed",
            "would remove:",
        ),
        (
            "hold-exceeded.jsonl.lock",
            "removable",
            "hold-exceeded",
            // A live holder: removed only with --force (issue 9 item 3).
            "would remove with --force:",
        ),
        ("live.jsonl.lock", "ok", "-", "would keep: live holder pid"),
        (
            "openclaw.jsonl.lock",
            "ok",
            "-",
            "would keep: live holder pid",
        ),
        (
            "too-old.jsonl.lock",
            "report-only",
            "too-old",
            "would keep:",
        ),
        (
            "malformed-fresh.jsonl.lock",
            "wait",
            "malformed",
            "would keep:",
        ),
        ("torn.jsonl", "repairable", "torn-tail", "would repair:"),
        (OLD_TOMB, "removable", "orphaned-tombstone", "would remove:"),
        (FRESH_TMP, "wait", "orphaned-temp", "would keep:"),
    ];
    for (name, verdict, reasons, plan) in expect_rows {
        let r = row(&text, name);
        let cols: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(cols[1], verdict, "row: {r}");
        assert_eq!(cols[2], reasons, "row: {r}");
        assert!(r.contains(plan), "row: {r}");
    }
    assert!(
        row(&text, "live.jsonl.lock").contains("within its lease (4m"),
        "{text}"
    );
    assert!(
        !text.contains("clean.jsonl"),
        "a healthy transcript is no finding: {text}"
    );
    assert!(
        text.lines().last().unwrap().starts_with(
            "examined 8 locks, 2 transcripts, 2 leftover files: 2 ok, 5 removable, 1 repairable"
        ),
        "{text}"
    );
    let err = stderr(&out);
    let hint = format!(
        "hint: run `sessionlock doctor {} --fix` to remove 3 stale locks, remove 1 leftover file and repair 1 transcript",
        d.display()
    );
    assert!(err.contains(&hint), "stderr: {err}");
    // The live holder past its lease needs --force (issue 9 item 3).
    let force = format!(
        "1 holder is alive, only past its lease: `sessionlock doctor {} --fix --force` removes its lock too",
        d.display()
    );
    assert!(err.contains(&force), "stderr: {err}");

    // --fix --force: exactly the removable ones go (the live holder past its
    // lease needs --force, see openclaw_cli.rs), everything else stays as it
    // was.
    let out = doctor(d, &["--fix", "--force"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    let after = snapshot(d);
    for gone in [
        "dead.jsonl.lock",
        "recycled.jsonl.lock",
        "malformed-old.jsonl.lock",
        "hold-exceeded.jsonl.lock",
        OLD_TOMB,
    ] {
        assert!(!after.contains_key(gone), "{gone} was removed");
    }
    for kept in [
        "live.jsonl.lock",
        "openclaw.jsonl.lock",
        "too-old.jsonl.lock",
        "malformed-fresh.jsonl.lock",
        "clean.jsonl",
        FRESH_TMP,
    ] {
        assert_eq!(
            after.get(kept),
            before.get(kept),
            "{kept} is byte-identical"
        );
    }
    let complete = &TORN[..=TORN.iter().rposition(|&b| b == b'\n').unwrap()];
    assert_eq!(
        after["torn.jsonl"], complete,
        "truncated to the last complete line"
    );
    let sides: Vec<_> = after
        .iter()
        .filter(|(n, _)| n.starts_with("torn.jsonl.torn-"))
        .collect();
    assert_eq!(sides.len(), 1, "{:?}", after.keys());
    assert_eq!(
        sides[0].1,
        &TORN[complete.len()..],
        "the torn bytes are kept aside"
    );
    let text = stdout(&out);
    assert!(
        row(&text, "dead.jsonl.lock").contains("removed: holder pid"),
        "{text}"
    );
    assert!(
        row(&text, "torn.jsonl").contains("repaired: moved 12 torn bytes at byte 49 to "),
        "{text}"
    );
    assert!(
        row(&text, "live.jsonl.lock").contains("kept: live holder pid"),
        "{text}"
    );
    assert!(
        text.contains("removed 4 locks, removed 1 leftover file and repaired 1 transcript; nothing left to do"),
        "{text}"
    );

    // A second run finds only what is healthy, waiting, or kept on purpose.
    let (out, v) = doctor_json(d, &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let got = verdicts(&v);
    let side = sides[0].0.clone();
    let want: BTreeMap<String, _> = [
        ("live.jsonl.lock".to_owned(), entry("ok", &[], "keep")),
        ("openclaw.jsonl.lock".to_owned(), entry("ok", &[], "keep")),
        (
            "too-old.jsonl.lock".to_owned(),
            entry("report-only", &["too-old"], "keep"),
        ),
        (
            "malformed-fresh.jsonl.lock".to_owned(),
            entry("wait", &["malformed"], "keep"),
        ),
        (
            FRESH_TMP.to_owned(),
            entry("wait", &["orphaned-temp"], "keep"),
        ),
        (side, entry("report-only", &["torn-side-file"], "keep")),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    assert_eq!(v["summary"]["needAttention"], 0);
}

#[test]
fn json_has_the_stable_field_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sleeper = fixture(d);

    let (out, v) = doctor_json(d, &[]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(
        out.stderr.is_empty(),
        "--json writes no hint: {}",
        stderr(&out)
    );
    let top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        top,
        [
            "version",
            "dirs",
            "findings",
            "fixed",
            "errors",
            "openclawExposure",
            "summary"
        ]
    );
    assert_eq!(v["fixed"], json!([]));

    let findings = v["findings"].as_array().unwrap();
    for f in findings {
        for key in [
            "kind", "path", "verdict", "reasons", "holder", "action", "detail",
        ] {
            assert!(f.get(key).is_some(), "finding without {key}: {f}");
        }
    }
    let by_name = |name: &str| {
        findings
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("no finding for {name}"))
    };
    let live = by_name("live.jsonl.lock");
    assert_eq!(live["kind"], "lock");
    assert_eq!(live["verdict"], "ok");
    assert_eq!(live["action"], "keep");
    let h = &live["holder"];
    for key in [
        "pid", "hostname", "alive", "lane", "runId", "ageMs", "epoch",
    ] {
        assert!(h.get(key).is_some(), "holder without {key}: {h}");
    }
    assert_eq!(h["pid"], sleeper.pid());
    assert_eq!(h["alive"], true);
    assert_eq!(h["lane"], "channel");
    assert_eq!(h["runId"], "run-7");
    assert_eq!(h["epoch"], 7);
    assert_eq!(by_name("dead.jsonl.lock")["holder"]["alive"], false);
    let torn = by_name("torn.jsonl");
    assert_eq!(torn["kind"], "transcript");
    assert_eq!(torn["holder"], Value::Null);
    assert_eq!(torn["action"], "repair");
    assert_eq!(by_name(OLD_TOMB)["kind"], "leftover");

    let s = &v["summary"];
    assert_eq!(
        (
            s["locks"].as_u64(),
            s["transcripts"].as_u64(),
            s["leftovers"].as_u64()
        ),
        (Some(8), Some(2), Some(2))
    );
    assert_eq!(s["removable"], 5);
    assert_eq!(s["reportOnly"], 1);
    assert_eq!(s["needAttention"], 6);
    assert_eq!(s["exitCode"], 1);

    let (out, v) = doctor_json(d, &["--fix", "--force"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let fixed = v["fixed"].as_array().unwrap();
    let outcomes: BTreeMap<String, String> = fixed
        .iter()
        .map(|f| {
            let p = PathBuf::from(f["path"].as_str().unwrap());
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            for key in ["finding", "kind", "path", "outcome", "detail"] {
                assert!(f.get(key).is_some(), "fixed entry without {key}: {f}");
            }
            (name, f["outcome"].as_str().unwrap().to_owned())
        })
        .collect();
    let want: BTreeMap<String, String> = [
        ("dead.jsonl.lock", "removed"),
        ("recycled.jsonl.lock", "removed"),
        ("malformed-old.jsonl.lock", "removed"),
        ("hold-exceeded.jsonl.lock", "removed"),
        ("torn.jsonl", "repaired"),
        (OLD_TOMB, "removed"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(outcomes, want);
    let repaired = fixed.iter().find(|f| f["outcome"] == "repaired").unwrap();
    assert!(repaired["savedTo"]
        .as_str()
        .unwrap()
        .contains("torn.jsonl.torn-"));
}

#[test]
fn a_clean_directory_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.jsonl"), b"{\"a\":1}\n").unwrap();
    let out = doctor(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "examined 0 locks, 1 transcript, 0 leftover files; nothing to do\n"
    );
    assert!(out.stderr.is_empty(), "stderr: {}", stderr(&out));
}

#[test]
fn what_fix_cannot_handle_keeps_the_exit_status_at_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lock = d.join("s.jsonl.lock");
    std::os::unix::fs::symlink("/nonexistent/target", &lock).unwrap();
    std::fs::write(d.join("bad.jsonl"), b"{\"a\":1}\nnot json\n{\"a\":2}\n").unwrap();

    for extra in [&[][..], &["--fix"][..]] {
        let out = doctor(d, extra);
        assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
        let text = stdout(&out);
        let r = row(&text, "s.jsonl.lock");
        assert!(
            r.contains("invalid") && r.contains("symlink") && r.contains("needs you: "),
            "{r}"
        );
        assert!(r.contains("remove it by hand"), "{r}");
        let r = row(&text, "bad.jsonl");
        assert!(
            r.contains("invalid-lines")
                && r.contains("1 complete line is not JSON, the first at byte 8"),
            "{r}"
        );
        assert!(
            stderr(&out).contains("2 findings need a person"),
            "{}",
            stderr(&out)
        );
    }
    assert!(
        std::fs::symlink_metadata(&lock)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink is never touched"
    );
}

#[test]
fn a_held_transcript_is_skipped_and_left_for_later() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("t.jsonl");
    std::fs::write(&session, b"{}\n{\"half").unwrap();
    // The test process is the live holder; the doctor runs in another one.
    let guard = SessionLock::new()
        .acquire_with(&session, &LockOptions::default().lane("channel"))
        .unwrap();

    let (out, v) = doctor_json(dir.path(), &["--fix"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let fixed = v["fixed"].as_array().unwrap();
    assert_eq!(fixed.len(), 1, "{v}");
    assert_eq!(fixed[0]["outcome"], "held");
    let detail = fixed[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "held by live holder pid {} (lane channel)",
            std::process::id()
        )),
        "{detail}"
    );
    assert_eq!(std::fs::read(&session).unwrap(), b"{}\n{\"half");
    assert_eq!(v["summary"]["held"], 1);

    let out = doctor(dir.path(), &["--fix"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(row(&stdout(&out), "t.jsonl").contains("skipped: the session lock is held by"));
    assert!(
        stderr(&out).contains("1 session is held by a live holder"),
        "{}",
        stderr(&out)
    );

    guard.release().unwrap();
    let out = doctor(dir.path(), &["--fix"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(std::fs::read(&session).unwrap(), b"{}\n");
}

#[test]
fn an_unreadable_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = doctor(&missing, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: cannot list directory "),
        "stderr: {err}"
    );
    assert!(err.contains("\ncaused by: "), "stderr: {err}");
    assert!(
        err.contains("\n\nhint: pass the directory"),
        "stderr: {err}"
    );
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let _sleeper = fixture(dir.path());
    let mut child = sessionlock()
        .arg("doctor")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(!stderr(&out).contains("error:"), "stderr: {}", stderr(&out));
}

/// `status` over the same fixture: one row per lock with the holder, its
/// liveness, the stale reasons and what a contender would do; read-only.
#[test]
fn status_explains_every_kind_of_lock_in_the_fixture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sleeper = fixture(dir.path());
    let before = snapshot(dir.path());
    let out = run(sessionlock().arg("status").arg("--json").arg(dir.path()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = listed(&doc, "locks");
    let by_name: BTreeMap<String, &Value> = rows
        .iter()
        .map(|r| {
            let session = r["session"].as_str().expect("session");
            let name = Path::new(session)
                .file_name()
                .expect("name")
                .to_string_lossy();
            (name.trim_end_matches(".jsonl").to_owned(), r)
        })
        .collect();
    let expect = [
        // name, alive, reasons, action
        ("live", Some(true), vec![], "wait"),
        ("openclaw", Some(true), vec![], "wait"),
        ("dead", Some(false), vec!["dead-pid"], "reclaim"),
        ("recycled", Some(false), vec!["recycled-pid"], "reclaim"),
        ("malformed-fresh", None, vec!["malformed"], "wait"),
        ("malformed-old", None, vec!["malformed"], "reclaim"),
        (
            "hold-exceeded",
            Some(true),
            vec!["hold-exceeded"],
            "reclaim",
        ),
        ("too-old", Some(true), vec!["too-old"], "wait"),
    ];
    assert_eq!(by_name.len(), expect.len(), "one row per lock: {rows:?}");
    for (name, alive, reasons, action) in expect {
        let r = by_name
            .get(name)
            .unwrap_or_else(|| panic!("no row for {name}"));
        let got: Vec<&str> = r["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(got, reasons, "{name}: {r}");
        assert_eq!(r["action"], action, "{name}: {r}");
        if let Some(alive) = alive {
            assert_eq!(r["alive"], alive, "{name}: {r}");
        }
    }
    assert_eq!(by_name["live"]["pid"], sleeper.pid(), "the holder is named");
    assert_eq!(by_name["live"]["lane"], "channel");
    assert_eq!(by_name["live"]["epoch"], 7);
    assert_eq!(
        by_name["openclaw"]["owner"], "openclaw",
        "a lock without an owner field is OpenClaw's"
    );
    // The table names every lock too, and status never changes anything.
    let out = run(sessionlock().arg("status").arg(dir.path()));
    let text = stdout(&out);
    for name in ["dead", "too-old", "openclaw"] {
        assert!(
            text.contains(&format!("{name}.jsonl")),
            "{name} missing from\n{text}"
        );
    }
    assert_eq!(snapshot(dir.path()), before, "status is read-only");
}
