//! `sessionlock serve-metrics` end to end (issue 16, part 1): the real
//! command on a free port, against a directory where real processes (roles
//! of this test binary, with `SESSIONLOCK_EVENT_LOG` set) hold, wait for,
//! hand off, lose and reclaim locks; its `/metrics` scraped over HTTP and
//! read with a real Prometheus text-format parser (`prometheus-parse`).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};
use sessionlock::observe::{EventLog, ENV_EVENT_LOG};
use sessionlock::transcript::Durability;
use sessionlock::{FileBackend, LockOptions, SessionLock};
use sessionlock_lab::pgserver::{fresh_database, shared_url};
use sessionlock_lab::testkit::{park, role_args, say, wait_until_in_line, Kid, Signal, ROLE_VAR};
use sessionlock_postgres::PgBackend;

mod common;
use common::{lock_path, run, sessionlock, stderr};

/// Long enough for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn opts(lane: &str) -> LockOptions {
    LockOptions::default()
        .timeout(Some(Duration::from_secs(60)))
        .lane(lane)
}

fn next_stdin_line() -> String {
    let mut s = String::new();
    std::io::stdin().read_line(&mut s).expect("read stdin");
    s
}

#[test]
fn child_entry() {
    let Some((role, args)) = role_args() else {
        return;
    };
    if let Some(url) = role.strip_prefix("pg-") {
        return pg_role(url, &args);
    }
    let session = PathBuf::from(&args[0]);
    let locks = SessionLock::new();
    match role.as_str() {
        // Holds the lock (lane `chat`) until told to release it.
        "hold" => {
            let g = locks.acquire_with(&session, &opts("chat")).expect("hold");
            say("HELD");
            next_stdin_line();
            g.release().expect("release");
            say("RELEASED");
        }
        // Holds the lock until killed; its events are written first.
        "hold-park" => {
            let _g = locks.acquire_with(&session, &opts("chat")).expect("hold");
            EventLog::flush();
            say("HELD");
            park()
        }
        // Waits in line (lane `cron`), then releases at once.
        "wait" => {
            say("WAITING");
            let g = locks.acquire_with(&session, &opts("cron")).expect("wait");
            g.release().expect("release");
            say("DONE");
        }
        // Two lanes of one process: `chat` releases while `cron` waits for
        // it, which hands the lock over.
        "handoff" => {
            let g = locks.acquire_with(&session, &opts("chat")).expect("chat");
            std::thread::scope(|s| {
                let cron = s.spawn(|| {
                    let g = locks.acquire_with(&session, &opts("cron")).expect("cron");
                    g.release().expect("release cron");
                });
                let start = Instant::now();
                while locks.queued(&session).expect("queued") == 0 {
                    assert!(start.elapsed() < DEADLINE, "cron never queued");
                    std::thread::sleep(Duration::from_millis(1));
                }
                g.release().expect("release chat");
                cron.join().expect("cron");
            });
            say("DONE");
        }
        // Takes over a dead holder's lock, appends two entries, then loses
        // the lock (its file removed) and has an append refused.
        "reclaim" => {
            let g = locks
                .acquire_with(&session, &opts("chat"))
                .expect("reclaim");
            let mut transcript = FileBackend::default()
                .open_transcript(&session)
                .expect("open");
            let two = [serde_json::json!({"n": 1}), serde_json::json!({"n": 2})];
            transcript
                .append(&g, &two, Durability::Data)
                .expect("append");
            std::fs::remove_file(lock_path(&session)).expect("remove the lock");
            let refused = transcript.append(&g, &[serde_json::json!({"n": 3})], Durability::Data);
            assert!(refused.is_err(), "an append without the lock");
            assert!(g.release().is_err(), "the release reports the loss");
            say("DONE");
        }
        other => panic!("unknown role {other}"),
    }
}

/// The PostgreSQL roles: `pg-hold URL KEY` holds KEY (lane `chat`) until
/// killed; `pg-take URL KEY` takes KEY (lane `chat`) and releases it.
fn pg_role(role: &str, args: &[String]) {
    let (url, key) = (&args[0], args[1].as_str());
    let backend = PgBackend::connect(url).expect("connect");
    let locks = SessionLock::with_backend(backend, LockOptions::default());
    match role {
        "hold" => {
            let _g = locks.acquire_with(key, &opts("chat")).expect("hold");
            EventLog::flush();
            say("HELD");
            park()
        }
        "take" => {
            let g = locks.acquire_with(key, &opts("chat")).expect("take");
            g.release().expect("release");
            say("DONE");
        }
        other => panic!("unknown role pg-{other}"),
    }
}

/// A role of this binary on `session`, writing its events to `events`.
fn kid(role: &str, session: &Path, events: &Path) -> Kid {
    kid_with(role, &[session.to_str().expect("UTF-8 path")], events)
}

/// A role of this binary with `args`, writing its events to `events`.
fn kid_with(role: &str, args: &[&str], events: &Path) -> Kid {
    let mut cmd = Kid::command(role, args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SESSIONLOCK_") && key != ROLE_VAR {
            cmd.env_remove(&key);
        }
    }
    cmd.env(ENV_EVENT_LOG, events);
    Kid::start(role, cmd)
}

/// `sessionlock serve-metrics` on a free port; killed on drop.
struct Server {
    kid: Kid,
    addr: String,
}

impl Server {
    fn start(args: &[&std::ffi::OsStr]) -> Server {
        let mut cmd = sessionlock();
        cmd.args([
            "serve-metrics",
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "100ms",
        ])
        .args(args);
        let kid = Kid::start("serve-metrics", cmd);
        let line = kid.expect("serving metrics at ", DEADLINE);
        let addr = line
            .strip_prefix("serving metrics at http://")
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server { kid, addr }
    }

    /// Stops it with `sig`: its exit status.
    fn stop(self, sig: Signal) -> std::process::ExitStatus {
        self.kid.signal(sig);
        self.kid.finish()
    }

    /// `GET path`: the status line and the body.
    fn get(&self, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr).expect("send");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read the answer");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
        (
            head.lines().next().unwrap_or("").to_owned(),
            body.to_owned(),
        )
    }

    fn scrape(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
            .unwrap_or_else(|e| panic!("not the Prometheus text format ({e}):\n{body}"));
        Metrics { scrape, body }
    }

    /// Scrapes until `ok` holds of the figures.
    fn scrape_until(&self, what: &str, ok: impl Fn(&Metrics) -> bool) -> Metrics {
        let start = Instant::now();
        loop {
            let m = self.scrape();
            if ok(&m) {
                return m;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "never: {what}; last scrape:\n{}",
                m.body
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One scrape, parsed.
struct Metrics {
    scrape: Scrape,
    body: String,
}

impl Metrics {
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Sample> {
        self.scrape.samples.iter().find(|s| {
            s.metric == name
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                && s.labels.len() == labels.len()
        })
    }

    /// The value of a counter, gauge or untyped sample (a histogram's
    /// `_count` and `_sum`); 0 when absent (not counted yet).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(name, labels).map(|s| &s.value) {
            None => 0.0,
            Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
            Some(other) => panic!("{name} is {other:?}"),
        }
    }

    /// A histogram's count in its `+Inf` bucket (which must equal its
    /// `_count`).
    fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let Some(Value::Histogram(buckets)) = self.find(name, labels).map(|s| &s.value) else {
            return 0.0;
        };
        let inf = buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map_or(0.0, |b| b.count);
        assert_eq!(
            inf,
            self.value(&format!("{name}_count"), labels),
            "{name}{labels:?}: the +Inf bucket and _count differ:\n{}",
            self.body
        );
        inf
    }

    fn scope(&self, name: &str, dir: &str) -> f64 {
        self.value(name, &[("backend", "file"), ("scope", dir)])
    }
}

const WAIT: &str = "sessionlock_acquire_wait_seconds";
const HOLD: &str = "sessionlock_hold_seconds";

#[test]
fn the_metrics_follow_holds_waits_handoffs_a_sigkill_and_a_reclaim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let logs = tempfile::tempdir().expect("tempdir");
    let events = logs.path().join("events.jsonl");
    let scope = root.to_str().expect("UTF-8 temp dir").to_owned();
    let server = Server::start(&["--events".as_ref(), events.as_os_str(), root.as_os_str()]);

    let m = server.scrape();
    assert_eq!(m.scope("sessionlock_scope_up", &scope), 1.0, "{}", m.body);
    assert_eq!(m.scope("sessionlock_scope_locks_held", &scope), 0.0);
    assert!(
        m.scrape.docs.contains_key("sessionlock_scope_locks_held"),
        "every metric has its help text:\n{}",
        m.body
    );

    // A holds s1 (lane chat); B waits for it in line (lane cron).
    let s1 = root.join("s1.jsonl");
    let mut a = kid("hold", &s1, &events);
    a.expect("HELD", DEADLINE);
    let b = kid("wait", &s1, &events);
    b.expect("WAITING", DEADLINE);
    wait_until_in_line(&s1, b.pid());
    let chat_acquired = [
        ("backend", "file"),
        ("lane", "chat"),
        ("outcome", "acquired"),
    ];
    let cron_acquired = [
        ("backend", "file"),
        ("lane", "cron"),
        ("outcome", "acquired"),
    ];
    let chat_released = [("backend", "file"), ("lane", "chat"), ("end", "released")];
    let cron_released = [("backend", "file"), ("lane", "cron"), ("end", "released")];
    let handoffs = [("backend", "file"), ("lane", "chat")];
    // Each process writes its lines on its own schedule, and a refresh
    // may fall between two of them: every figure a step changes is waited
    // for, then what must not have changed is checked.
    let m = server.scrape_until("s1 held, B in line", |m| {
        m.scope("sessionlock_scope_locks_held", &scope) == 1.0
            && m.scope("sessionlock_scope_waiting", &scope) == 1.0
            && m.value("sessionlock_waiters", &[("backend", "file")]) == 1.0
            && m.histogram_count(WAIT, &chat_acquired) == 1.0
    });
    // A has held s1 since before B started.
    assert!(m.scope("sessionlock_scope_oldest_hold_seconds", &scope) > 0.0);
    assert_eq!(m.histogram_count(WAIT, &cron_acquired), 0.0);
    assert_eq!(m.histogram_count(HOLD, &chat_released), 0.0);

    // A releases: B takes the lock and releases it.
    a.say("release");
    a.expect("RELEASED", DEADLINE);
    b.expect("DONE", DEADLINE);
    assert!(a.finish().success());
    assert!(b.finish().success());
    let m = server.scrape_until("s1 free, A's hold and B's wait counted", |m| {
        m.scope("sessionlock_scope_locks_held", &scope) == 0.0
            && m.scope("sessionlock_scope_waiting", &scope) == 0.0
            && m.value("sessionlock_waiters", &[("backend", "file")]) == 0.0
            && m.histogram_count(WAIT, &cron_acquired) == 1.0
            && m.histogram_count(HOLD, &cron_released) == 1.0
            && m.histogram_count(HOLD, &chat_released) == 1.0
    });
    assert_eq!(m.histogram_count(WAIT, &chat_acquired), 1.0);
    // B waited for A's release, which came after B was seen in line.
    assert!(m.value(&format!("{WAIT}_sum"), &cron_acquired) > 0.0);
    assert_eq!(
        m.value("sessionlock_handoffs_total", &handoffs),
        0.0,
        "a release to another process is no hand-off"
    );

    // One process, two lanes: chat hands the lock to cron.
    let c = kid("handoff", &root.join("s2.jsonl"), &events);
    c.expect("DONE", DEADLINE);
    assert!(c.finish().success());
    let m = server.scrape_until("the hand-off", |m| {
        m.value("sessionlock_handoffs_total", &handoffs) == 1.0
            && m.histogram_count(WAIT, &chat_acquired) == 2.0
            && m.histogram_count(WAIT, &cron_acquired) == 2.0
            && m.histogram_count(HOLD, &cron_released) == 2.0
    });
    assert_eq!(
        m.histogram_count(
            HOLD,
            &[("backend", "file"), ("lane", "chat"), ("end", "handed_off")]
        ),
        1.0
    );
    assert_eq!(m.histogram_count(HOLD, &chat_released), 1.0);

    // D holds s3 and is SIGKILLed: its lock is stale until E reclaims it.
    let s3 = root.join("s3.jsonl");
    let d = kid("hold-park", &s3, &events);
    d.expect("HELD", DEADLINE);
    // SIGKILL (std's `Child::kill`), and reaped.
    d.kill_and_reap();
    server.scrape_until("the dead holder's lock is stale", |m| {
        m.scope("sessionlock_scope_locks_stale", &scope) == 1.0
            && m.scope("sessionlock_scope_locks_held", &scope) == 0.0
    });
    let e = kid("reclaim", &s3, &events);
    e.expect("DONE", DEADLINE);
    assert!(e.finish().success());
    let reclaims = [("backend", "file"), ("reason", "dead-pid")];
    // The scan and the log are read one after the other: wait for both.
    let m = server.scrape_until("the reclaim", |m| {
        m.scope("sessionlock_scope_locks_stale", &scope) == 0.0
            && m.scope("sessionlock_scope_locks_held", &scope) == 0.0
            && m.value("sessionlock_reclaims_total", &reclaims) == 1.0
            && m.value(
                "sessionlock_fenced_writes_refused_total",
                &[("backend", "file"), ("lane", "chat"), ("error", "revoked")],
            ) == 1.0
    });
    let file = [("backend", "file")];
    assert_eq!(m.value("sessionlock_transcript_appends_total", &file), 1.0);
    assert_eq!(m.value("sessionlock_transcript_entries_total", &file), 2.0);
    assert!(m.value("sessionlock_transcript_bytes_total", &file) >= 2.0 * 8.0);
    assert_eq!(
        m.value(
            "sessionlock_revocations_total",
            &[("backend", "file"), ("lane", "chat"), ("cause", "removed")]
        ),
        1.0,
        "{}",
        m.body
    );
    // Every acquisition of the scenario: A, C's chat, D, E; B, C's cron.
    assert_eq!(m.histogram_count(WAIT, &chat_acquired), 4.0);
    assert_eq!(m.histogram_count(WAIT, &cron_acquired), 2.0);
    assert_eq!(
        m.value(
            "sessionlock_event_log_bad_lines_total",
            &[("reason", "json")]
        ),
        0.0
    );

    // A line that is not an event is skipped and counted; the figures
    // stay (counters and histograms are cumulative across scrapes).
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&events)
        .expect("open the event log");
    f.write_all(b"this is not an event\n").expect("append");
    let m = server.scrape_until("the bad line counted", |m| {
        m.value(
            "sessionlock_event_log_bad_lines_total",
            &[("reason", "json")],
        ) == 1.0
    });
    assert_eq!(m.value("sessionlock_reclaims_total", &reclaims), 1.0);
    assert_eq!(m.histogram_count(WAIT, &chat_acquired), 4.0);
    let session_label = m.scrape.samples.iter().find(|s| {
        s.labels.get("session").is_some() || s.labels.iter().any(|(_, v)| v.ends_with(".jsonl"))
    });
    assert!(
        session_label.is_none(),
        "no label names a session: {session_label:?}"
    );

    let (status, _) = server.get("/elsewhere");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    drop(server);
}

#[test]
fn a_taken_port_a_missing_directory_and_an_unreadable_event_log_are_clear_errors_and_a_signal_stops_it(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&[dir.path().as_os_str()]);

    let o = run(sessionlock()
        .args(["serve-metrics", "--listen", &server.addr])
        .arg(dir.path()));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = stderr(&o);
    assert!(
        err.contains(&format!("cannot listen on {}", server.addr)),
        "{err}"
    );
    assert!(err.contains("another program listens there"), "{err}");

    let o = run(sessionlock()
        .args(["serve-metrics", "--listen", "127.0.0.1:0"])
        .arg(dir.path().join("missing")));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = stderr(&o);
    assert!(err.contains("cannot read the directory"), "{err}");
    assert!(err.contains("missing"), "{err}");

    // A directory given as the event log cannot be read as one.
    let o = run(sessionlock()
        .args(["serve-metrics", "--listen", "127.0.0.1:0", "--events"])
        .arg(dir.path())
        .arg(dir.path()));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = stderr(&o);
    assert!(err.contains("cannot read the event log"), "{err}");

    // Stopping it is its normal end.
    assert_eq!(server.stop(Signal::TERM).code(), Some(0));
    let again = Server::start(&[dir.path().as_os_str()]);
    assert_eq!(again.stop(Signal::INT).code(), Some(0));
}

/// The same on PostgreSQL, the URL given as the argument: a holder
/// SIGKILLed, its lease stale once the server sees its connection closed,
/// then taken over; the library's figures come from the event log as on
/// files, labelled `backend="postgres"`.
#[test]
fn on_postgresql_the_scope_is_the_schema_and_a_reclaim_is_counted() {
    let url = fresh_database(&shared_url());
    let logs = tempfile::tempdir().expect("tempdir");
    let events = logs.path().join("events.jsonl");
    let server = Server::start(&["--events".as_ref(), events.as_os_str(), url.as_ref()]);
    let held = |m: &Metrics| {
        m.value(
            "sessionlock_scope_locks_held",
            &[("backend", "postgres"), ("scope", "sessionlock")],
        )
    };
    let stale = |m: &Metrics| {
        m.value(
            "sessionlock_scope_locks_stale",
            &[("backend", "postgres"), ("scope", "sessionlock")],
        )
    };
    let m = server.scrape();
    assert_eq!(
        m.value(
            "sessionlock_scope_up",
            &[("backend", "postgres"), ("scope", "sessionlock")]
        ),
        1.0,
        "{}",
        m.body
    );
    assert_eq!(held(&m), 0.0);

    let holder = kid_with("pg-hold", &[&url, "k1"], &events);
    holder.expect("HELD", DEADLINE);
    let acquired = [
        ("backend", "postgres"),
        ("lane", "chat"),
        ("outcome", "acquired"),
    ];
    server.scrape_until("k1 held", |m| {
        held(m) == 1.0 && m.histogram_count(WAIT, &acquired) == 1.0
    });
    holder.kill_and_reap();
    server.scrape_until("the dead holder's lease is stale", |m| {
        held(m) == 0.0 && stale(m) == 1.0
    });

    let taker = kid_with("pg-take", &[&url, "k1"], &events);
    taker.expect("DONE", DEADLINE);
    assert!(taker.finish().success());
    let m = server.scrape_until("the reclaim", |m| {
        held(m) == 0.0
            && stale(m) == 0.0
            && m.histogram_count(WAIT, &acquired) == 2.0
            && m.histogram_count(
                HOLD,
                &[
                    ("backend", "postgres"),
                    ("lane", "chat"),
                    ("end", "released"),
                ],
            ) == 1.0
    });
    let reclaims: f64 = m
        .scrape
        .samples
        .iter()
        .filter(|s| s.metric == "sessionlock_reclaims_total")
        .filter(|s| s.labels.get("backend") == Some("postgres"))
        .map(|s| match s.value {
            Value::Counter(v) => v,
            ref other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(reclaims, 1.0, "{}", m.body);

    // A client waiting for k2 is counted from the waiters table.
    let waiting = |m: &Metrics| {
        m.value(
            "sessionlock_scope_waiting",
            &[("backend", "postgres"), ("scope", "sessionlock")],
        )
    };
    let holder = kid_with("pg-hold", &[&url, "k2"], &events);
    holder.expect("HELD", DEADLINE);
    let waiter = kid_with("pg-take", &[&url, "k2"], &events);
    server.scrape_until("k2's waiter", |m| waiting(m) == 1.0);
    holder.kill_and_reap();
    waiter.expect("DONE", DEADLINE);
    assert!(waiter.finish().success());
    server.scrape_until("nobody waits", |m| waiting(m) == 0.0);
}
