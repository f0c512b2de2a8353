//! The basics against a real server: acquire, append, read, release,
//! contention and refusal of a fenced write.

use std::time::Duration;

use sessionlock::{LockOptions, SessionLock};
use sessionlock_lab::pgserver::shared_url;
use sessionlock_postgres::PgBackend;

fn backend() -> PgBackend {
    PgBackend::connect(&shared_url()).expect("connect")
}

fn fresh(tag: &str) -> String {
    format!(
        "smoke/{tag}/{}/{}",
        std::process::id(),
        sessionlock::monotonic_ns()
    )
}

#[test]
fn acquire_append_read_release() {
    let locks = SessionLock::with_backend(backend(), LockOptions::default());
    let s = fresh("basic");
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
    let s = fresh("store");
    let key = sessionlock::LockBackend::key(&b, s.as_str()).unwrap();
    let mut store = block_on(b.open_store(&key)).unwrap();
    let g = locks.acquire(s.as_str()).expect("acquire");
    let mut batch = RawEntries::new();
    batch.push(br#"{"n":1}"#).unwrap();
    batch.push(br#"{"n":2}"#).unwrap();
    let a = block_on(g.store_append(&mut store, &batch, Default::default())).expect("append");
    assert_eq!((a.offset, a.len), (0, 2));
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
