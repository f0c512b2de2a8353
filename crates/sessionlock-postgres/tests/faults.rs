//! Faults against a real server, with real processes: this test binary
//! re-executed in a child role (`child_entry`), killed, stopped and
//! continued; connections terminated by the server; servers restarted.
//! Every child takes the server's URL as its first argument.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use serde_json::Value;
use sessionlock::backend::StoreBackend;
use sessionlock::store::{Durability, RawEntries};
use sessionlock::{Guard, LockBackend, LockOptions, SessionLock};
use sessionlock_lab::pgserver::{fresh_database, psql, shared_url};
use sessionlock_lab::testkit::{block_on, role_args, Kid};
use sessionlock_postgres::{PgBackend, PgStore};

/// How long a child may take to answer.
const ANSWER: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers

fn connect(url: &str) -> PgBackend {
    PgBackend::connect(url).unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

fn locks(url: &str, opts: LockOptions) -> SessionLock<PgBackend> {
    SessionLock::with_backend(connect(url), opts)
}

fn opts() -> LockOptions {
    LockOptions::default().timeout(Some(Duration::from_secs(30)))
}

fn fresh(tag: &str) -> String {
    format!(
        "faults/{tag}/{}/{}",
        std::process::id(),
        sessionlock::monotonic_ns()
    )
}

fn store(b: &PgBackend, key: &str) -> PgStore {
    let key = b.key(key).expect("key");
    block_on(b.open_store(&key)).expect("open store")
}

fn append(g: &Guard<PgBackend>, store: &mut PgStore, v: &Value) -> sessionlock::Result<()> {
    let mut raw = RawEntries::new();
    raw.push(v.to_string().as_bytes()).expect("entry");
    block_on(g.store_append(store, &raw, Durability::None)).map(drop)
}

fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{s}").expect("stdout");
    o.flush().expect("flush");
}

/// Waits until `cond` holds, or panics with `what` after `within`.
fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Server backends of the database at `url` waiting in a death watch.
fn death_watches(url: &str) -> usize {
    psql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND query LIKE 'SELECT pg_advisory_xact_lock_shared%'",
    )
    .trim()
    .parse()
    .expect("a count")
}

// ---------------------------------------------------------------- child roles

/// Runs the child role this process was started for, if any.
#[test]
fn child_entry() {
    let Some((role, args)) = role_args() else {
        return;
    };
    let url = args[0].as_str();
    match role.as_str() {
        // Acquire `args[1]` with a max hold of args[2] ms, report, then obey
        // `append <json>` and `release`.
        "hold" => {
            let max_hold: u64 = args[2].parse().expect("max hold");
            let locks = locks(url, opts().max_hold(Duration::from_millis(max_hold)));
            let g = locks.acquire(args[1].as_str()).expect("child acquire");
            let mut store = store(locks.backend(), &args[1]);
            out(&format!("HELD {}", g.epoch()));
            for line in std::io::stdin().lock().lines() {
                let line = line.expect("stdin");
                if let Some(json) = line.strip_prefix("append ") {
                    let v: Value = serde_json::from_str(json).expect("json");
                    match append(&g, &mut store, &v) {
                        Ok(()) => out("APPEND ok"),
                        Err(e) => out(&format!("APPEND err {} {e}", e.code())),
                    }
                } else if line == "release" {
                    break;
                }
            }
            drop(g);
            out("RELEASED");
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------- resources

/// Regression: every wait on a live holder opened a death-watch connection
/// that outlived the wait (dropping the client left the socket open behind
/// the pending lock wait), so 8 processes contending for one session ran
/// the server out of connections ("sorry, too many clients already") in
/// seconds. A wait that ends must leave no server backend behind.
#[test]
fn ended_waits_leave_no_death_watch_behind() {
    let url = fresh_database(&shared_url());
    let key = fresh("watch");
    let mut holder = Kid::spawn("hold", &[&url, &key, "60000"]);
    holder.expect("HELD", ANSWER);
    let locks = locks(&url, LockOptions::default());
    let short = LockOptions::default().timeout(Some(Duration::from_millis(150)));
    for _ in 0..20 {
        let e = locks
            .acquire_with(key.as_str(), &short)
            .expect_err("the holder is alive");
        assert_eq!(e.code(), "timeout", "{e}");
    }
    // The server notices a closed socket within
    // client_connection_check_interval (1 s).
    wait_until(
        Duration::from_secs(5),
        "the death watches of ended waits are gone",
        || death_watches(&url) == 0,
    );
    holder.say("release");
    holder.expect("RELEASED", ANSWER);
}
