//! Fenced appends on a held lock (docs/design.md §5.3): ten entries of a
//! turn appended one by one (ten fence checks, ten writes, and with `Data`
//! ten `fdatasync`s) against the same ten pushed into one `AppendBatch`
//! (one of each), for each durability mode the comparison is about.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use sessionlock::transcript::{Durability, Transcript};
use sessionlock::{FileBackend, LockOptions, SessionLock};

const ENTRIES: usize = 10;

/// About 200 bytes, a short message of a turn.
fn entry(i: usize) -> Value {
    json!({"type": "message", "id": format!("m{i}"),
           "message": {"role": "tool", "content": "x".repeat(150)}})
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("bench.jsonl");
    let locks = SessionLock::with_backend(
        FileBackend::default(),
        LockOptions::default().timeout(Some(Duration::from_secs(10))),
    );
    let guard = locks.acquire(&session).expect("acquire");
    let mut t = Transcript::open(&session).expect("open");
    let entries: Vec<Value> = (0..ENTRIES).map(entry).collect();

    for (mode, durability) in [("none", Durability::None), ("data", Durability::Data)] {
        let mut group = c.benchmark_group(format!("10 entries, durability {mode}"));
        group.bench_function("10 appends", |b| {
            b.iter(|| {
                for e in &entries {
                    t.append(&guard, std::slice::from_ref(e), durability)
                        .expect("append");
                }
            })
        });
        group.bench_function("one batch", |b| {
            b.iter(|| {
                let mut batch = t.batch(&guard);
                for e in &entries {
                    batch.push(e).expect("push");
                }
                batch.commit(durability).expect("commit")
            })
        });
        group.finish();
    }
    guard.release().expect("release");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
