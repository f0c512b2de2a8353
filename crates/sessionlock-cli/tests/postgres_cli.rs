//! The command-line tool on PostgreSQL (issue 12, item 7): the real
//! `sessionlock` binary with `--backend URL` against a real server
//! (`SESSIONLOCK_TEST_PG_URL`, else a throwaway one started by the test
//! kit), each test in a database of its own.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;
use sessionlock_lab::pgserver::{fresh_database, shared_url};

mod common;
use common::{listed, sessionlock, stderr, stdout};

/// Long enough for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// A database of this test's own on the shared server.
fn database() -> String {
    fresh_database(&shared_url())
}

/// `sessionlock --backend URL ARGS...`.
fn pg(url: &str, args: &[&str]) -> Command {
    let mut cmd = sessionlock();
    cmd.arg("--backend").arg(url).args(args);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run sessionlock")
}

/// A `sessionlock exec KEY -- sleep 60` holding `key`, killed on drop.
struct Holder(Child);

impl Holder {
    fn spawn(url: &str, key: &str, lane: &str) -> Holder {
        let child = pg(
            url,
            &[
                "exec", key, "--lane", lane, "--run-id", "run-9", "--", "sleep", "60",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sessionlock exec");
        let holder = Holder(child);
        // Held once status lists it.
        let start = Instant::now();
        while !leases(url).iter().any(|l| l["session"] == key) {
            assert!(start.elapsed() < DEADLINE, "exec never took {key}");
            std::thread::sleep(Duration::from_millis(50));
        }
        holder
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) {
        let pid = Pid::from_raw(self.0.id() as i32).expect("a pid");
        let _ = kill_process(pid, Signal::KILL);
        let _ = self.0.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `status --json` on `url`: the leases held.
fn leases(url: &str) -> Vec<Value> {
    let o = run(&mut pg(url, &["status", "--json"]));
    assert_eq!(o.status.code(), Some(0), "status: {}", stderr(&o));
    match serde_json::from_str(&stdout(&o)) {
        Ok(doc) => listed(&doc, "locks"),
        Err(e) => panic!("status --json gave {e}: {}", stdout(&o)),
    }
}

#[test]
fn append_then_read_round_trips_entries() {
    let url = database();
    let o = run(&mut pg(
        &url,
        &[
            "append",
            "agent:main:42",
            "--entry",
            r#"{"type":"message","text":"hi"}"#,
            "--entry",
            "[1,2]",
        ],
    ));
    assert_eq!(o.status.code(), Some(0), "append: {}", stderr(&o));
    let line = stdout(&o);
    assert!(
        line.starts_with("appended 2 entries") && line.contains("epoch "),
        "{line}"
    );
    let o = run(&mut pg(
        &url,
        &["append", "agent:main:42", "--json", "--entry", "3"],
    ));
    assert_eq!(o.status.code(), Some(0), "append: {}", stderr(&o));
    let summary: Value = serde_json::from_str(&stdout(&o)).expect("append --json");
    assert_eq!(summary["entries"], 1);
    // After the two entries' lines (31 + 6 bytes with their newlines).
    assert_eq!(summary["offset"], 37, "the third entry: {summary}");
    assert!(
        summary["epoch"].as_u64().is_some_and(|e| e > 0),
        "{summary}"
    );

    let o = run(&mut pg(&url, &["read", "agent:main:42"]));
    assert_eq!(o.status.code(), Some(0), "read: {}", stderr(&o));
    let read: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON value per line"))
        .collect();
    assert_eq!(
        read,
        vec![
            serde_json::json!({"type": "message", "text": "hi"}),
            serde_json::json!([1, 2]),
            serde_json::json!(3),
        ]
    );
    let o = run(&mut pg(&url, &["read", "agent:main:42", "--from", "2"]));
    assert_eq!(stdout(&o), "3\n");
    let o = run(&mut pg(&url, &["repair", "agent:main:42"]));
    assert_eq!(o.status.code(), Some(0), "repair: {}", stderr(&o));
    assert!(
        stdout(&o).starts_with("nothing to repair"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn exec_holds_the_lock_while_its_command_runs() {
    let url = database();
    let holder = Holder::spawn(&url, "agent:exec:1", "holder-lane");
    let started = Instant::now();
    let o = run(&mut pg(
        &url,
        &["exec", "agent:exec:1", "--timeout-ms", "300", "--", "true"],
    ));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        err.contains(&format!("pid={}", holder.pid())) && err.contains("lane=holder-lane"),
        "the message names the holder: {err}"
    );
    assert!(err.contains("status agent:exec:1"), "{err}");
    // append waits for the same lock.
    let o = run(&mut pg(
        &url,
        &[
            "append",
            "agent:exec:1",
            "--timeout-ms",
            "200",
            "--entry",
            "1",
        ],
    ));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // Once the command has ended the lock is free.
    drop(holder);
    let o = run(&mut pg(
        &url,
        &[
            "exec",
            "agent:exec:1",
            "--timeout-ms",
            "10000",
            "--",
            "sh",
            "-c",
            "echo $SESSIONLOCK_SESSION $SESSIONLOCK_EPOCH",
        ],
    ));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("agent:exec:1 "), "{out}");
}

#[test]
fn exec_passes_on_the_commands_exit_status() {
    let url = database();
    let o = run(&mut pg(&url, &["exec", "k", "--", "sh", "-c", "exit 7"]));
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
}

#[test]
fn status_lists_a_held_lease_with_its_epoch() {
    let url = database();
    let o = run(&mut pg(
        &url,
        &["append", "agent:st:1", "--json", "--entry", "1"],
    ));
    let epoch = serde_json::from_str::<Value>(&stdout(&o)).expect("append --json")["epoch"]
        .as_u64()
        .expect("an epoch");
    let holder = Holder::spawn(&url, "agent:st:1", "status-lane");
    let _other = Holder::spawn(&url, "other:1", "x");

    let all = leases(&url);
    assert_eq!(all.len(), 2, "{all:?}");
    let o = run(&mut pg(&url, &["status", "--json", "agent:"]));
    let doc: Value = serde_json::from_str(&stdout(&o)).expect("status --json");
    let found = listed(&doc, "locks");
    assert_eq!(found.len(), 1, "the prefix selects: {found:?}");
    let l = &found[0];
    assert_eq!(l["session"], "agent:st:1");
    assert_eq!(l["pid"], holder.pid());
    assert_eq!(l["lane"], "status-lane");
    assert_eq!(l["runId"], "run-9");
    assert_eq!(l["alive"], true);
    assert_eq!(l["action"], "wait");
    let held_epoch = l["epoch"].as_u64().expect("an epoch");
    assert!(
        held_epoch > epoch,
        "epochs increase: {held_epoch} > {epoch}"
    );
    assert!(l["leaseLeftMs"].as_u64().is_some_and(|ms| ms > 0), "{l}");
    assert!(l["expiresAt"].is_string(), "{l}");
    // Server and client share a clock here: the lag is small.
    assert!(
        l["clockLagMs"].as_i64().is_some_and(|ms| ms.abs() < 5_000),
        "{l}"
    );
    assert!(
        l["lockPath"]
            .as_str()
            .is_some_and(|p| p.starts_with("postgres://") && p.ends_with("/agent:st:1")),
        "{l}"
    );

    let o = run(&mut pg(&url, &["status"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = stdout(&o);
    let row = table
        .lines()
        .find(|r| r.starts_with("agent:st:1 "))
        .unwrap_or_else(|| panic!("no row: {table}"));
    assert!(row.contains(&held_epoch.to_string()), "{row}");
    assert!(row.contains(&holder.pid().to_string()), "{row}");
    assert!(row.contains("status-lane/run-9"), "{row}");
}

#[test]
fn doctor_fix_removes_a_dead_holders_lease_but_not_a_live_one() {
    let url = database();
    let _live = Holder::spawn(&url, "live", "alive-lane");
    let mut dead = Holder::spawn(&url, "dead", "dead-lane");
    dead.kill();

    // The dead holder's connection is gone: judged removable (the server
    // may take a moment to notice the closed connection).
    let start = Instant::now();
    let findings = loop {
        let o = run(&mut pg(&url, &["doctor", "--json"]));
        let doc: Value = serde_json::from_str(&stdout(&o)).expect("doctor --json");
        let findings = doc["findings"].as_array().cloned().expect("findings");
        let verdict = |k: &str| {
            findings
                .iter()
                .find(|f| f["session"] == k)
                .map(|f| f["verdict"].clone())
        };
        if verdict("dead") == Some("removable".into()) {
            assert_eq!(o.status.code(), Some(1), "a finding to act on");
            assert_eq!(verdict("live"), Some("ok".into()), "{findings:?}");
            break findings;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never judged dead: {findings:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(findings.len(), 2);

    let o = run(&mut pg(&url, &["doctor", "--fix"]));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("removed 1 lock"), "{out}");
    let held: Vec<Value> = leases(&url);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["session"], "live");
    assert_eq!(held[0]["alive"], true);

    // Even forced, a live holder within its lease stays.
    let o = run(&mut pg(&url, &["doctor", "--fix", "--force"]));
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(leases(&url).len(), 1);
}

#[test]
fn a_server_that_is_down_is_an_error_naming_host_and_port_not_the_password() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("its address").port()
    };
    let url = format!("postgres://someone:s3cr3tpw@127.0.0.1:{port}/postgres");
    for args in [
        &["append", "k", "--entry", "1"][..],
        &["read", "k"],
        &["status"],
        &["doctor"],
        &["exec", "k", "--", "true"],
    ] {
        let o = run(&mut pg(&url, args));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!(
                "error: cannot connect to postgres 127.0.0.1:{port}/postgres"
            )),
            "{args:?}: {err}"
        );
        assert!(err.contains("caused by:"), "{err}");
        assert!(!err.contains("s3cr3tpw"), "the password leaked: {err}");
    }
    // Through the variable too.
    let o = run(sessionlock()
        .env("SESSIONLOCK_BACKEND", &url)
        .args(["status"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains("s3cr3tpw"), "{}", stderr(&o));
}

#[test]
fn verify_fs_refuses_a_postgres_backend() {
    let o = run(&mut pg(
        "postgres://u:pw@127.0.0.1:1/db",
        &["verify-fs", "/tmp"],
    ));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("file backend only"), "{err}");
    assert!(!err.contains(":pw@"), "{err}");
}

/// The pid a command wrote to `path`, once it is there.
fn pid_in(path: &std::path::Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(start.elapsed() < DEADLINE, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` is gone (or a zombie).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_lease_lost_while_the_command_runs_kills_the_command() {
    let url = database();
    let dir = tempfile::tempdir().expect("a temp dir");

    // Past its lease: SIGTERM ahead of the end, then the lease ends.
    let pidfile = dir.path().join("a.pid");
    let script = format!(
        "echo $$ > {}; trap '' TERM; sleep 30 & wait; sleep 30",
        pidfile.display()
    );
    let started = Instant::now();
    let o = run(&mut pg(
        &url,
        &[
            "exec",
            "k:hold",
            "--max-hold-ms",
            "1500",
            "--",
            "sh",
            "-c",
            &script,
        ],
    ));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "{err}");
    assert!(err.contains("revoked after max hold"), "{err}");
    assert!(gone(pid_in(&pidfile)), "the command outlived its lease");

    // The connection holding the lease cut by the server: the command is
    // killed at once, and the lease can be taken again.
    let pidfile = dir.path().join("b.pid");
    let script = format!("echo $$ > {}; exec sleep 30", pidfile.display());
    let mut exec = pg(&url, &["exec", "k:cut", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn exec");
    let command = pid_in(&pidfile);
    sessionlock_lab::pgserver::psql(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'sessionlock' AND query LIKE '%pg_advisory_lock%' \
         AND datname = current_database()",
    );
    let started = Instant::now();
    let status = exec.wait().expect("wait for exec");
    let mut err = String::new();
    if let Some(mut e) = exec.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    assert!(err.contains("lost the session lock"), "{err}");
    assert!(gone(command), "the command outlived the lease");
    let o = run(&mut pg(
        &url,
        &["append", "k:cut", "--timeout-ms", "5000", "--entry", "1"],
    ));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
