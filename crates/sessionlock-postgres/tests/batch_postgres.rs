//! Batched appends on PostgreSQL (issue 15 item 4, docs/design.md §5.3):
//! entries pushed one at a time into an `AppendBatch` land as one append of
//! the store (one transaction, all rows carrying one batch id), in push
//! order; a batch whose guard lost the session writes nothing; a dropped
//! batch writes nothing.

use std::time::Duration;

use serde_json::{json, Value};
use sessionlock::backend::{StoreBackend, TranscriptStore};
use sessionlock::store::Durability;
use sessionlock::{Error, LockBackend, LockOptions, SessionLock};
use sessionlock_lab::pgserver::{psql, shared_url};
use sessionlock_lab::testkit::block_on;
use sessionlock_postgres::{PgBackend, PgStore, DEFAULT_SCHEMA};

mod common;
use common::fresh;

fn store(b: &PgBackend, key: &str) -> PgStore {
    block_on(b.open_store(&b.key(key).expect("key"))).expect("open store")
}

fn read(store: &PgStore) -> Vec<Value> {
    block_on(store.read()).expect("read").entries
}

/// How many appends of the store wrote the session's rows, and how many rows.
fn batches_and_rows(url: &str, key: &str) -> String {
    psql(
        url,
        &format!(
            "SELECT count(DISTINCT e.batch) || '/' || count(*) FROM {DEFAULT_SCHEMA}.entries e \
             JOIN {DEFAULT_SCHEMA}.leases l ON l.id = e.session WHERE l.key = '{key}'"
        ),
    )
    .trim()
    .to_owned()
}

#[test]
fn a_batch_of_pushes_is_one_store_append() {
    let url = shared_url();
    let b = PgBackend::connect(&url).expect("connect");
    let locks = SessionLock::with_backend(b.clone(), LockOptions::default());
    let key = fresh("batch/one");
    let mut st = store(&b, &key);
    let g = locks.acquire(key.as_str()).expect("acquire");

    // The baseline: three appends of one entry are three batches.
    for n in 0..3 {
        let mut batch = g.store_batch(&mut st);
        batch.push(&json!({"n": n})).expect("push");
        block_on(batch.commit_async(Durability::Data)).expect("commit");
    }
    assert_eq!(batches_and_rows(&url, &key), "3/3");

    let mut batch = g.store_batch(&mut st);
    for n in 3..13 {
        batch.push(&json!({"n": n})).expect("push");
    }
    let bytes = batch.bytes() as u64;
    let a = block_on(batch.commit_async(Durability::Data)).expect("commit");
    assert_eq!(a.len, bytes);
    assert_eq!(
        batches_and_rows(&url, &key),
        "4/13",
        "ten pushes, one append"
    );
    assert_eq!(
        read(&st),
        (0..13).map(|n| json!({"n": n})).collect::<Vec<_>>(),
        "push order"
    );

    // Dropped: nothing written.
    let mut batch = g.store_batch(&mut st);
    batch.push(&json!({"n": "dropped"})).expect("push");
    drop(batch);
    assert_eq!(batches_and_rows(&url, &key), "4/13");
    g.release().expect("release");
}

#[test]
fn a_batch_committed_after_a_reclaim_writes_nothing() {
    let url = shared_url();
    let b = PgBackend::connect(&url).expect("connect");
    let locks = SessionLock::with_backend(
        b.clone(),
        LockOptions::default().max_hold(Duration::from_millis(300)),
    );
    let key = fresh("batch/fenced");
    let mut st = store(&b, &key);
    let g = locks.acquire(key.as_str()).expect("acquire");
    let mut batch = g.store_batch(&mut st);
    batch.push(&json!({"n": 1})).expect("push");
    batch.push(&json!({"n": 2})).expect("push");

    // Past its lease a contender of another client reclaims.
    std::thread::sleep(Duration::from_millis(400));
    let other = SessionLock::with_backend(
        PgBackend::connect(&url).expect("connect"),
        LockOptions::default(),
    );
    let g2 = other.acquire(key.as_str()).expect("reclaim");
    assert!(g2.epoch() > g.epoch());

    let err = block_on(batch.commit_async(Durability::Data)).expect_err("refused");
    assert!(
        matches!(err, Error::Fenced { .. } | Error::Revoked { .. }),
        "{err}"
    );
    assert_eq!(batches_and_rows(&url, &key), "0/0");
    g2.release().expect("release");
}
