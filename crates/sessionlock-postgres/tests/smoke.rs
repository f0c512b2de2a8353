//! The basics against a real server: acquire, append, read, release,
//! contention and refusal of a fenced write.

use std::time::Duration;

use sessionlock::{LockOptions, SessionLock};
use sessionlock_lab::pgserver::shared_url;
use sessionlock_postgres::PgBackend;

mod common;
use common::fresh;

fn backend() -> PgBackend {
    PgBackend::connect(&shared_url()).expect("connect")
}

#[test]
fn acquire_append_read_release() {
    let locks = SessionLock::with_backend(backend(), LockOptions::default());
    let s = fresh("smoke/basic");
    let g = locks.acquire(s.as_str()).expect("acquire");
    let e1 = g.epoch();
    g.release().expect("release");
    let g = locks.acquire(s.as_str()).expect("acquire again");
    assert!(g.epoch() > e1, "{} > {e1}", g.epoch());
    g.release().expect("release");
}

#[test]
fn store_appends_reads_and_refuses_a_fenced_write() {
    use sessionlock::backend::{StoreBackend, TranscriptStore};
    use sessionlock::store::RawEntries;
    use sessionlock_lab::testkit::block_on;
    let b = backend();
    let locks = SessionLock::with_backend(
        b.clone(),
        LockOptions::default().max_hold(Duration::from_millis(300)),
    );
    let s = fresh("smoke/store");
    let key = sessionlock::LockBackend::key(&b, s.as_str()).unwrap();
    let mut store = block_on(b.open_store(&key)).unwrap();
    let g = locks.acquire(s.as_str()).expect("acquire");
    let mut batch = RawEntries::new();
    batch.push(br#"{"n":1}"#).unwrap();
    batch.push(br#"{"n":2}"#).unwrap();
    let a = block_on(g.store_append(&mut store, &batch, Default::default())).expect("append");
    // In bytes, as for every store: two lines and their newlines.
    assert_eq!((a.offset, a.len), (0, batch.as_bytes().len() as u64));
    let read = block_on(store.read()).unwrap();
    assert_eq!(read.entries.len(), 2);
    // Past its lease a contender reclaims; the old guard's write is refused.
    let other = SessionLock::with_backend(b.clone(), LockOptions::default());
    std::thread::sleep(Duration::from_millis(400));
    let t = std::thread::spawn(move || {
        let g2 = other.acquire(s.as_str()).expect("reclaim");
        g2.epoch()
    });
    let e2 = t.join().unwrap();
    assert!(e2 > g.epoch());
    let e = block_on(g.store_append(&mut store, &batch, Default::default())).unwrap_err();
    assert!(matches!(e.code(), "fenced" | "revoked"), "{e}");
    assert_eq!(block_on(store.read()).unwrap().entries.len(), 2);
}

/// A waiter's death watch (a connection waiting for the holder's liveness
/// lock) ends with the wait: timed-out acquires against a live holder do
/// not leave connections behind.
#[test]
fn death_watches_end_with_their_waits() {
    use sessionlock_lab::pgserver::{fresh_database, psql};
    let url = fresh_database(&shared_url());
    let waiter = PgBackend::connect(&url).expect("connect");
    let s = fresh("smoke/deathwatch");
    // A live holder in another process: a psql session holding the
    // liveness lock its lease row names.
    let live_lock: i64 = 7_000_000_000 + i64::from(std::process::id());
    let mut holder = common::plant_live_holder(&url, &s, live_lock);
    let waits = SessionLock::with_backend(
        waiter,
        LockOptions::default().timeout(Some(Duration::from_millis(400))),
    );
    let watching = || {
        psql(
            &url,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_advisory_xact_lock_shared($1)%' \
             AND pid <> pg_backend_pid()",
        )
        .trim()
        .parse::<u32>()
        .expect("a count")
    };
    let mut seen_watching = 0;
    for _ in 0..5 {
        let waits = waits.clone();
        let s = s.clone();
        let t = std::thread::spawn(move || waits.acquire(s.as_str()).map(drop));
        std::thread::sleep(Duration::from_millis(250));
        seen_watching = seen_watching.max(watching());
        let e = t.join().unwrap().unwrap_err();
        assert_eq!(e.code(), "timeout", "{e}");
    }
    // The waits did watch the holder (else this test shows nothing).
    assert!(
        seen_watching > 0,
        "no death watch was seen during the waits"
    );
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while watching() > 0 {
        assert!(
            std::time::Instant::now() < until,
            "{} death-watch connections outlived their waits",
            watching()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = holder.kill();
    let _ = holder.wait();
}

/// An append whose connection is cut while its statement runs (so it
/// cannot know whether it committed) asks the server by its batch id and
/// finishes: the entry lands exactly once.
#[test]
fn an_append_cut_off_mid_statement_lands_exactly_once() {
    use sessionlock::backend::{StoreBackend, TranscriptStore};
    use sessionlock::store::RawEntries;
    use sessionlock_lab::pgserver::{fresh_database, psql};
    use sessionlock_lab::testkit::block_on;
    let url = fresh_database(&shared_url());
    let b = PgBackend::connect(&url).expect("connect");
    let locks = SessionLock::with_backend(b.clone(), LockOptions::default());
    let s = fresh("smoke/cut");
    let key = sessionlock::LockBackend::key(&b, s.as_str()).unwrap();
    let mut store = block_on(b.open_store(&key)).unwrap();
    let g = locks.acquire(s.as_str()).expect("acquire");
    // Someone holds the lease row for a while, so the append waits inside
    // its statement...
    let mut blocker = common::hold_row(&url, &s, "FOR SHARE", 1.5);
    let cutter = {
        let url = url.clone();
        std::thread::spawn(move || {
            // ... and its connection is cut there.
            let until = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let cut = psql(
                    &url,
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE query LIKE 'WITH l AS (SELECT id, next_seq%' AND pid <> pg_backend_pid()",
                );
                if cut.trim() == "1" {
                    return;
                }
                assert!(
                    std::time::Instant::now() < until,
                    "the append never showed up"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut batch = RawEntries::new();
    batch.push(br#"{"n":"once"}"#).unwrap();
    let a = block_on(g.store_append(&mut store, &batch, Default::default()))
        .expect("the append finishes after its connection was cut");
    cutter.join().unwrap();
    let _ = blocker.wait();
    assert_eq!((a.offset, a.len), (0, 13));
    let read = block_on(store.read()).unwrap();
    assert_eq!(read.entries, vec![serde_json::json!({"n": "once"})]);
    g.release().expect("release");
}
