//! Who waits for whom on PostgreSQL (issue 16, part 2): `status --json`
//! with a postgres `--backend` shows each lease's queue in arrival order
//! from the server's waiters table, and loses a waiter when it gives up or
//! its process dies (its connection ends). The holder and the waiters are
//! real `sessionlock exec` processes against a real server
//! (`SESSIONLOCK_TEST_PG_URL`, else a throwaway one started by the test
//! kit).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::io::BufRead;

use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;
use sessionlock::{LockOptions, SessionLock};
use sessionlock_lab::pgserver::{fresh_database, shared_url};
use sessionlock_lab::testkit::{park, role_args, say as out, Kid};
use sessionlock_postgres::PgBackend;

mod common;
use common::{listed, sessionlock, stderr, stdout};

#[test]
fn child_entry() {
    let Some((role, args)) = role_args() else {
        return;
    };
    match role.as_str() {
        // `hold-then-wait <url> <first> <second> <lane>`: holds `first`,
        // says `HOLDING`, and on a line from stdin waits for `second`.
        "hold-then-wait" => {
            let backend = PgBackend::connect(&args[0]).expect("connect");
            let opts = LockOptions::default()
                .timeout(Some(Duration::from_secs(60)))
                .lane(args[3].as_str());
            let locks = SessionLock::with_backend(backend, opts.clone());
            let _first = locks
                .acquire_with(args[1].as_str(), &opts)
                .expect("hold first");
            out("HOLDING");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).expect("stdin");
            let _second = locks.acquire_with(args[2].as_str(), &opts);
            out("DONE");
            park()
        }
        other => panic!("unknown role {other}"),
    }
}

/// Long enough for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn pg(url: &str, args: &[&str]) -> Command {
    let mut cmd = sessionlock();
    cmd.arg("--backend").arg(url).args(args);
    cmd
}

/// A `sessionlock exec KEY --lane LANE --timeout-ms MS -- sleep 60`,
/// killed on drop.
struct Exec(Child);

impl Exec {
    fn spawn(url: &str, key: &str, lane: &str, timeout_ms: u64) -> Exec {
        let child = pg(
            url,
            &[
                "exec",
                key,
                "--lane",
                lane,
                "--run-id",
                &format!("run-{lane}"),
                "--timeout-ms",
                &timeout_ms.to_string(),
                "--",
                "sleep",
                "60",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sessionlock exec");
        Exec(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) {
        let pid = Pid::from_raw(self.0.id() as i32).expect("a pid");
        let _ = kill_process(pid, Signal::KILL);
        let _ = self.0.wait();
    }

    /// Waits for it to exit on its own.
    fn exits(&mut self) {
        let start = Instant::now();
        while self.0.try_wait().expect("try_wait").is_none() {
            assert!(start.elapsed() < DEADLINE, "exec never gave up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        self.kill();
    }
}

fn status(url: &str) -> Vec<Value> {
    let o = pg(url, &["status", "--json"]).output().expect("run status");
    assert_eq!(o.status.code(), Some(0), "status: {}", stderr(&o));
    let doc: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("status --json gave {e}: {}", stdout(&o)));
    listed(&doc, "locks")
}

/// Waits until the lease of `key` shows the queue `want` (pids).
fn until_queue_is(url: &str, key: &str, want: &[u32]) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let locks = status(url);
        let q: Vec<Value> = locks
            .iter()
            .find(|l| l["session"] == key)
            .and_then(|l| l["queue"].as_array().cloned())
            .unwrap_or_default();
        let pids: Vec<u64> = q.iter().map(|w| w["pid"].as_u64().unwrap_or(0)).collect();
        if pids == want.iter().map(|&p| u64::from(p)).collect::<Vec<_>>() {
            return q;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "queue of {key}: {pids:?}, want {want:?}: {locks:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_shows_the_queue_of_a_lease_and_loses_who_gives_up_or_dies() {
    let url = fresh_database(&shared_url());
    let key = "agent:main:7";
    let _holder = Exec::spawn(&url, key, "holder", 10_000);
    let start = Instant::now();
    while !status(&url).iter().any(|l| l["session"] == key) {
        assert!(start.elapsed() < DEADLINE, "exec never took {key}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Three waiters, one after the other; the second gives up after 8 s.
    let mut first = Exec::spawn(&url, key, "alpha", 60_000);
    until_queue_is(&url, key, &[first.pid()]);
    let mut second = Exec::spawn(&url, key, "beta", 8_000);
    until_queue_is(&url, key, &[first.pid(), second.pid()]);
    let mut third = Exec::spawn(&url, key, "gamma", 60_000);
    let q = until_queue_is(&url, key, &[first.pid(), second.pid(), third.pid()]);
    for (w, lane) in q.iter().zip(["alpha", "beta", "gamma"]) {
        assert_eq!(w["lane"], lane, "{w:#}");
        assert_eq!(w["runId"], format!("run-{lane}"), "{w:#}");
        assert!(w["since"].as_str().is_some(), "{w:#}");
        assert!(w["deadline"].as_str().is_some(), "{w:#}");
        assert!(w["clientId"].as_str().is_some(), "{w:#}");
        assert!(w["hostname"].as_str().is_some(), "{w:#}");
    }
    let lease = status(&url)
        .into_iter()
        .find(|l| l["session"] == key)
        .expect("the lease");
    assert_eq!(lease["waiting"], 3, "{lease:#}");
    assert_eq!(lease["firstWaiterPid"], first.pid(), "{lease:#}");
    // The table shows the queue under the lease.
    let o = pg(&url, &["status"]).output().expect("run status");
    let text = stdout(&o);
    assert!(
        text.contains(&format!("{key}: 3 clients wait for the lease")),
        "{text}"
    );
    assert!(
        text.contains(&format!("  2. pid {}", second.pid())) && text.contains("lane beta"),
        "{text}"
    );

    // `--watch` shows it live, here too.
    let o = pg(
        &url,
        &[
            "status",
            "--watch",
            "--json",
            "--interval-ms",
            "50",
            "--count",
            "2",
        ],
    )
    .output()
    .expect("run status --watch");
    let docs: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    assert_eq!(docs.len(), 2, "{}: {}", stdout(&o), stderr(&o));
    for doc in &docs {
        let lease = listed(doc, "locks")
            .into_iter()
            .find(|l| l["session"] == key)
            .expect("the lease");
        assert_eq!(lease["waiting"], 3, "{doc:#}");
    }

    // The second gives up.
    second.exits();
    until_queue_is(&url, key, &[first.pid(), third.pid()]);
    // The first dies: its connection ends, and with it its row's view.
    first.kill();
    until_queue_is(&url, key, &[third.pid()]);
    third.kill();
    until_queue_is(&url, key, &[]);
}

#[test]
fn doctor_names_a_two_client_deadlock() {
    let url = fresh_database(&shared_url());
    let mut a = Kid::spawn("hold-then-wait", &[&url, "k1", "k2", "lane-a"]);
    a.expect("HOLDING", DEADLINE);
    let mut b = Kid::spawn("hold-then-wait", &[&url, "k2", "k1", "lane-b"]);
    b.expect("HOLDING", DEADLINE);
    a.say("go");
    b.say("go");
    until_queue_is(&url, "k1", &[b.pid()]);
    until_queue_is(&url, "k2", &[a.pid()]);

    let o = pg(&url, &["doctor", "--json"])
        .output()
        .expect("run doctor");
    let doc: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("doctor --json gave {e}: {}", stdout(&o)));
    assert_eq!(o.status.code(), Some(1), "a cycle needs a person: {doc:#}");
    let cycles: Vec<Value> = listed(&doc, "findings")
        .into_iter()
        .filter(|f| f["reasons"] == serde_json::json!(["wait-for-cycle"]))
        .collect();
    assert_eq!(cycles.len(), 1, "{doc:#}");
    let links = cycles[0]["cycle"]["links"]
        .as_array()
        .expect("links")
        .clone();
    assert_eq!(links.len(), 2, "{doc:#}");
    for (waiter, holder, key, lane) in [(&a, &b, "k2", "lane-a"), (&b, &a, "k1", "lane-b")] {
        assert!(
            links.iter().any(|l| l["waiterPid"] == waiter.pid()
                && l["holderPid"] == holder.pid()
                && l["session"] == key
                && l["waiterLane"] == lane),
            "{doc:#}"
        );
    }
    assert!(cycles[0]["cycle"]["endsAt"].as_str().is_some(), "{doc:#}");
    let text = stdout(&pg(&url, &["doctor"]).output().expect("run doctor"));
    assert!(text.contains("wait-for-cycle"), "{text}");
    a.kill_and_reap();
    b.kill_and_reap();
}
