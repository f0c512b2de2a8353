//! What the PostgreSQL backend's test binaries share: fresh keys, and the
//! foreign hands they use (a writer that sits on a session's lease row, a
//! live holder planted by SQL), each waited for by a condition, not a sleep.

#![allow(dead_code)] // each test binary uses its own part

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sessionlock::store::RawEntries;
use sessionlock_lab::pgserver::psql;

/// A key nobody used before, tagged for the test.
pub fn fresh(tag: &str) -> String {
    format!(
        "{tag}/{}/{}",
        std::process::id(),
        sessionlock::monotonic_ns()
    )
}

/// One entry.
pub fn one(json: &str) -> RawEntries {
    let mut b = RawEntries::new();
    b.push(json.as_bytes()).expect("an entry");
    b
}

/// `sql` in a psql process of its own, running in the background.
pub fn psql_bg(url: &str, sql: &str) -> Child {
    Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .stdout(Stdio::null())
        .spawn()
        .expect("psql")
}

/// Waits (at most 10 s) until `sql` answers `want`.
pub fn until_count(url: &str, sql: &str, want: &str, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while psql(url, sql).trim() != want {
        assert!(Instant::now() < until, "{what} never happened");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A writer that ignores sessionlock: it locks `key`'s lease row in `mode`
/// (`FOR SHARE`, `FOR UPDATE`) and sits on it for `secs` seconds. Returns
/// once the row is held.
pub fn hold_row(url: &str, key: &str, mode: &str, secs: f64) -> Child {
    let child = psql_bg(
        url,
        &format!(
            "BEGIN; SELECT 1 FROM sessionlock.leases WHERE key = '{key}' {mode}; \
             SELECT pg_sleep({secs}); COMMIT;"
        ),
    );
    until_count(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND query LIKE 'BEGIN; SELECT 1 FROM sessionlock.leases%' AND wait_event = 'PgSleep'",
        "1",
        "the row holder's lock",
    );
    child
}

/// A live holder of `key` in another process: a psql session holding the
/// liveness lock `live_lock`, and a lease row (expiring in 60 s) naming it.
/// Kill the child to make the holder die.
pub fn plant_live_holder(url: &str, key: &str, live_lock: i64) -> Child {
    let child = psql_bg(
        url,
        &format!("SELECT pg_advisory_lock({live_lock}); SELECT pg_sleep(60)"),
    );
    until_count(
        url,
        &format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = {}",
            live_lock & 0xffff_ffff
        ),
        "1",
        "the holder's liveness lock",
    );
    psql(
        url,
        &format!(
            "INSERT INTO sessionlock.leases (key, epoch, held, version, token, pid, hostname, client_id, \
                 live_lock, granted_at, written_at, expires_at, max_hold_ms) \
             VALUES ('{key}', 1, true, 1, 'feedface', 1, 'elsewhere', 'other', {live_lock}, \
                 clock_timestamp(), clock_timestamp(), clock_timestamp() + interval '60 s', 60000)"
        ),
    );
    child
}
