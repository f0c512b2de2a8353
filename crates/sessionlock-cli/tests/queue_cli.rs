//! End-to-end tests of who waits for whom (issue 16, part 2) on the file
//! backend: `status` shows each session's queue in arrival order from the
//! waiters' records, loses a waiter when it gives up or dies, and the
//! doctor names a wait-for cycle and reports (and removes) leftover and
//! hostile waiter records. Every waiter is a real process: a child of this
//! test binary.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sessionlock::{LockOptions, SessionLock};
use sessionlock_lab::testkit::{park, role_args, say as out, wait_until_in_line, Kid, Signal};

mod common;
use common::{dead_pid, hold, listed, run, sessionlock, stdout};

const RECORDS: &str = ".sessionlock-waiters";

#[test]
fn child_entry() {
    let Some((role, args)) = role_args() else {
        return;
    };
    match role.as_str() {
        // `wait <session> <lane> <timeout ms>`: waits in line for the
        // session's lock in lane `lane`, run `run-<lane>`; says `GAVE UP`
        // when its budget runs out, `HOLDING` if it gets the lock.
        "wait" => {
            let budget = Duration::from_millis(args[2].parse().expect("timeout ms"));
            out("WAITING");
            let got = SessionLock::new().acquire_with(
                &args[0],
                &LockOptions::default()
                    .timeout(Some(budget))
                    .lane(args[1].as_str())
                    .run_id(format!("run-{}", args[1])),
            );
            match got {
                Ok(g) => {
                    out("HOLDING");
                    let _g = g;
                    park()
                }
                Err(_) => out("GAVE UP"),
            }
            park()
        }
        // `hold-then-wait <first> <second> <lane>`: holds `first`, says
        // `HOLDING`, and on a line from stdin waits for `second` (60 s).
        "hold-then-wait" => {
            let opts = LockOptions::default()
                .timeout(Some(Duration::from_secs(60)))
                .lane(args[2].as_str());
            let locks = SessionLock::new();
            let _first = locks.acquire_with(&args[0], &opts).expect("hold first");
            out("HOLDING");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).expect("stdin");
            let _second = locks.acquire_with(&args[1], &opts);
            out("DONE");
            park()
        }
        other => panic!("unknown role {other}"),
    }
}

fn json(args: &[&str], dir: &Path) -> Value {
    let o = run(sessionlock().args(args).arg("--json").arg(dir));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("JSON ({e}): {}", stdout(&o)))
}

/// The queue `status --json` shows for the only lock of `dir`.
fn queue(dir: &Path) -> Vec<Value> {
    let v = json(&["status"], dir);
    let locks = listed(&v, "locks");
    assert_eq!(locks.len(), 1, "{v:#}");
    locks[0]["queue"]
        .as_array()
        .unwrap_or_else(|| panic!("no queue array: {v:#}"))
        .clone()
}

fn pids(queue: &[Value]) -> Vec<u64> {
    queue
        .iter()
        .map(|w| w["pid"].as_u64().unwrap_or(0))
        .collect()
}

/// Waits (at most 10 s) until `status --json` shows the queue `want`.
fn until_queue_is(dir: &Path, want: &[u32]) -> Vec<Value> {
    let want: Vec<u64> = want.iter().map(|&p| u64::from(p)).collect();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let q = queue(dir);
        if pids(&q) == want {
            return q;
        }
        assert!(
            Instant::now() < until,
            "queue {:?}, want {want:?}",
            pids(&q)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most 10 s) until every waiter in the queue `status --json`
/// shows has written its record (a waiter writes it once it has waited
/// 20 ms, at its next look: within about a second).
fn until_recorded(dir: &Path) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let q = queue(dir);
        if q.iter().all(|w| w["lane"].is_string()) {
            return q;
        }
        assert!(Instant::now() < until, "never recorded: {q:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn records(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(RECORDS))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn spawn_waiter(session: &Path, lane: &str, timeout_ms: u64) -> Kid {
    let kid = Kid::spawn(
        "wait",
        &[
            &session.display().to_string(),
            lane,
            &timeout_ms.to_string(),
        ],
    );
    kid.expect("WAITING", Duration::from_secs(20));
    wait_until_in_line(session, kid.pid());
    kid
}

#[test]
fn status_shows_the_queue_in_arrival_order_and_loses_who_gives_up_or_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let session = root.join("s.jsonl");
    let guard = hold(&session);

    // Three processes queue one after the other; the second gives up after
    // 6 s (long enough for the first look below on a slow machine).
    let first = spawn_waiter(&session, "alpha", 60_000);
    let second = spawn_waiter(&session, "beta", 6_000);
    let third = spawn_waiter(&session, "gamma", 60_000);
    until_queue_is(&root, &[first.pid(), second.pid(), third.pid()]);
    let q = until_recorded(&root);
    assert_eq!(
        pids(&q),
        [first.pid(), second.pid(), third.pid()].map(u64::from)
    );
    let host = q[0]["hostname"].as_str().expect("hostname").to_owned();
    assert!(!host.is_empty());
    let mut since = Vec::new();
    for (w, lane) in q.iter().zip(["alpha", "beta", "gamma"]) {
        assert_eq!(w["lane"], lane, "{w:#}");
        assert_eq!(w["runId"], format!("run-{lane}"), "{w:#}");
        assert_eq!(w["hostname"], host.as_str(), "{w:#}");
        assert_eq!(w["stopped"], false, "{w:#}");
        let t = sessionlock::payload::parse_time(w["since"].as_str().expect("since"))
            .expect("since is a time");
        since.push(t);
        assert!(w["waitedMs"].as_u64().is_some(), "{w:#}");
        assert!(
            w["deadline"].as_str().is_some(),
            "every waiter has a budget: {w:#}"
        );
    }
    assert!(since.windows(2).all(|p| p[0] <= p[1]), "{since:?}");
    // The old fields still say the same.
    let v = json(&["status"], &root);
    let entry = &listed(&v, "locks")[0];
    assert_eq!(entry["waiting"], 3, "{entry:#}");
    assert_eq!(entry["firstWaiterPid"], first.pid(), "{entry:#}");
    // The table lists the queue under the session.
    let text = stdout(&run(sessionlock().arg("status").arg(&root)));
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
    };
    let lines = [
        at("s.jsonl: 3 processes wait in line for the lock"),
        at(&format!(
            "  1. pid {} on {host}, lane alpha, run run-alpha, waiting ",
            first.pid()
        )),
        at(&format!(
            "  2. pid {} on {host}, lane beta, run run-beta, waiting ",
            second.pid()
        )),
        at(&format!(
            "  3. pid {} on {host}, lane gamma, run run-gamma, waiting ",
            third.pid()
        )),
    ];
    assert!(lines.windows(2).all(|p| p[0] < p[1]), "{text}");
    assert_eq!(records(&root).len(), 3, "{:?}", records(&root));
    // `--watch` shows it live: one document per refresh.
    let o = run(sessionlock()
        .args([
            "status",
            "--watch",
            "--json",
            "--interval-ms",
            "50",
            "--count",
            "2",
        ])
        .arg(&root));
    let docs: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    assert_eq!(docs.len(), 2, "{}", stdout(&o));
    for doc in &docs {
        let lanes: Vec<Value> = listed(doc, "locks")[0]["queue"]
            .as_array()
            .expect("queue")
            .iter()
            .map(|w| w["lane"].clone())
            .collect();
        assert_eq!(lanes, ["alpha", "beta", "gamma"], "{doc:#}");
    }

    // The second gives up: gone from the queue, and its record removed.
    second.expect("GAVE UP", Duration::from_secs(20));
    until_queue_is(&root, &[first.pid(), third.pid()]);
    let second_pid = second.pid();
    assert!(
        !records(&root)
            .iter()
            .any(|r| r.contains(&format!(".waiter-{second_pid}-"))),
        "{:?}",
        records(&root)
    );
    second.kill_and_reap();

    // The first dies: gone from the queue at once (the kernel dropped its
    // place), though its record is still there for the doctor.
    let first_pid = first.pid();
    first.signal(Signal::KILL);
    first.kill_and_reap();
    let q = until_queue_is(&root, &[third.pid()]);
    assert_eq!(q[0]["lane"], "gamma");
    assert!(records(&root)
        .iter()
        .any(|r| r.contains(&format!(".waiter-{first_pid}-"))));
    let v = json(&["doctor"], &root);
    let f = listed(&v, "findings")
        .into_iter()
        .find(|f| f["reasons"] == serde_json::json!(["waiter-record"]))
        .unwrap_or_else(|| panic!("no waiter-record finding: {v:#}"));
    assert_eq!(f["kind"], "leftover", "{f:#}");
    assert_eq!(f["verdict"], "removable", "{f:#}");
    let fixed = json(&["doctor", "--fix"], &root);
    assert!(
        listed(&fixed, "fixed")
            .iter()
            .any(|x| x["outcome"] == "removed" && x["path"] == f["path"]),
        "{fixed:#}"
    );
    assert!(!records(&root)
        .iter()
        .any(|r| r.contains(&format!(".waiter-{first_pid}-"))));
    // The live waiter's record was not touched.
    assert_eq!(records(&root).len(), 1, "{:?}", records(&root));

    third.kill_and_reap();
    until_queue_is(&root, &[]);
    guard.release().expect("release");
}

#[test]
fn doctor_names_a_two_process_deadlock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let (s1, s2) = (root.join("s1.jsonl"), root.join("s2.jsonl"));
    let (p1, p2) = (s1.display().to_string(), s2.display().to_string());
    let mut a = Kid::spawn("hold-then-wait", &[&p1, &p2, "lane-a"]);
    a.expect("HOLDING", Duration::from_secs(20));
    let mut b = Kid::spawn("hold-then-wait", &[&p2, &p1, "lane-b"]);
    b.expect("HOLDING", Duration::from_secs(20));
    a.say("go");
    b.say("go");
    wait_until_in_line(&s2, a.pid());
    wait_until_in_line(&s1, b.pid());
    // And each has written its record (lane, deadline).
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let v = json(&["status"], &root);
        let recorded = listed(&v, "locks").iter().all(|l| {
            l["queue"]
                .as_array()
                .is_some_and(|q| !q.is_empty() && q.iter().all(|w| w["lane"].is_string()))
        });
        if recorded {
            break;
        }
        assert!(Instant::now() < until, "never recorded: {v:#}");
        std::thread::sleep(Duration::from_millis(20));
    }

    let v = json(&["doctor"], &root);
    let cycles: Vec<Value> = listed(&v, "findings")
        .into_iter()
        .filter(|f| f["reasons"] == serde_json::json!(["wait-for-cycle"]))
        .collect();
    assert_eq!(cycles.len(), 1, "one cycle, once: {v:#}");
    let f = &cycles[0];
    assert_eq!(f["verdict"], "invalid", "{f:#}");
    let links = f["cycle"]["links"].as_array().expect("links").clone();
    assert_eq!(links.len(), 2, "{f:#}");
    let link_of = |pid: u32| {
        links
            .iter()
            .find(|l| l["waiterPid"] == pid)
            .unwrap_or_else(|| panic!("no link from {pid}: {f:#}"))
            .clone()
    };
    let (la, lb) = (link_of(a.pid()), link_of(b.pid()));
    assert_eq!(la["session"], p2.as_str());
    assert_eq!(la["holderPid"], b.pid());
    assert_eq!(la["waiterLane"], "lane-a");
    assert_eq!(la["holderLane"], "lane-b");
    assert_eq!(lb["session"], p1.as_str());
    assert_eq!(lb["holderPid"], a.pid());
    // It ends with the first lease or budget to end, and says when.
    let ends = f["cycle"]["endsAt"].as_str().expect("endsAt");
    assert!(sessionlock::payload::parse_time(ends).is_some(), "{ends}");
    let detail = f["detail"].as_str().expect("detail");
    for needle in [
        format!(
            "pid {} (lane lane-a) waits for s2.jsonl, held by pid {} (lane lane-b)",
            a.pid(),
            b.pid()
        ),
        format!(
            "pid {} (lane lane-b) waits for s1.jsonl, held by pid {} (lane lane-a)",
            b.pid(),
            a.pid()
        ),
        format!("cannot resolve before {ends}"),
    ] {
        assert!(detail.contains(&needle), "{needle:?} in {detail}");
    }
    // Needs a person: the exit status says so, and the table shows it.
    let o = run(sessionlock().arg("doctor").arg(&root));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("wait-for-cycle"), "{}", stdout(&o));
    a.kill_and_reap();
    b.kill_and_reap();
}

fn record_path(root: &Path, session: &str, pid: u32, place: u64) -> PathBuf {
    root.join(RECORDS)
        .join(format!("{session}.waiter-{pid}-{place}"))
}

#[test]
fn hostile_records_are_not_followed_and_do_not_break_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let session = root.join("s.jsonl");
    let guard = hold(&session);
    let waiter = spawn_waiter(&session, "live", 60_000);
    until_recorded(&root);
    let dead = dead_pid();

    // Beside the live waiter's record: a symlink to a file we own, a
    // garbage file, a huge file, and a dead waiter's record.
    let secret = root.join("secret.txt");
    std::fs::write(&secret, b"do not touch").expect("write");
    std::os::unix::fs::symlink(&secret, record_path(&root, "s.jsonl", dead, 1)).expect("symlink");
    std::fs::write(record_path(&root, "s.jsonl", dead, 2), b"{{{{ not json").expect("garbage");
    std::fs::write(record_path(&root, "s.jsonl", dead, 3), vec![b'{'; 4 << 20]).expect("huge");
    std::fs::write(
        record_path(&root, "s.jsonl", dead, 4),
        format!("{{\"pid\":{dead},\"lane\":\"ghost\",\"place\":4}}\n"),
    )
    .expect("leftover");

    until_queue_is(&root, &[waiter.pid()]);
    let q = until_recorded(&root);
    assert_eq!(q[0]["lane"], "live", "{q:#?}");
    let text = stdout(&run(sessionlock().arg("status").arg(&root)));
    assert!(!text.contains("ghost"), "{text}");

    let v = json(&["doctor"], &root);
    let findings = listed(&v, "findings");
    let by_reason = |reason: &str| {
        findings
            .iter()
            .find(|f| f["reasons"] == serde_json::json!([reason]))
            .unwrap_or_else(|| panic!("no {reason} finding: {v:#}"))
            .clone()
    };
    assert_eq!(by_reason("waiter-record-symlink")["verdict"], "invalid");
    assert_eq!(by_reason("waiter-record-garbage")["verdict"], "removable");
    assert_eq!(by_reason("waiter-record-too-large")["verdict"], "removable");
    assert_eq!(by_reason("waiter-record")["verdict"], "removable");
    // Nothing about the live waiter's record.
    let live = format!(".waiter-{}-", waiter.pid());
    assert!(
        findings
            .iter()
            .all(|f| !f["path"].as_str().unwrap_or("").contains(&live)),
        "{v:#}"
    );

    run(sessionlock().args(["doctor", "--fix"]).arg(&root));
    let left = records(&root);
    assert_eq!(left.len(), 2, "the live record and the symlink: {left:?}");
    assert!(left.iter().any(|r| r.contains(&live)), "{left:?}");
    assert!(
        std::fs::symlink_metadata(record_path(&root, "s.jsonl", dead, 1))
            .expect("symlink kept")
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&secret).expect("read"), b"do not touch");
    waiter.kill_and_reap();
    guard.release().expect("release");
}

#[test]
fn a_symlink_at_the_records_directory_is_never_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(elsewhere.path(), root.join(RECORDS)).expect("symlink");
    let session = root.join("s.jsonl");
    let guard = hold(&session);
    let waiter = spawn_waiter(&session, "live", 60_000);
    // Still in line, shown by pid (no record could be written, though it
    // was due after 20 ms and a look within a second).
    until_queue_is(&root, &[waiter.pid()]);
    std::thread::sleep(Duration::from_millis(2500));
    let q = until_queue_is(&root, &[waiter.pid()]);
    assert_eq!(q[0]["lane"], Value::Null, "{q:#?}");
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).expect("list").count(),
        0,
        "nothing written through the symlink"
    );
    let v = json(&["doctor"], &root);
    assert!(
        listed(&v, "findings").iter().any(|f| f["reasons"]
            == serde_json::json!(["waiters-dir-symlink"])
            && f["verdict"] == "invalid"),
        "{v:#}"
    );
    waiter.kill_and_reap();
    guard.release().expect("release");
}
