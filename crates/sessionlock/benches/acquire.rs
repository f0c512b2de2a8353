//! In-process figures: the cost of an uncontended acquire + release cycle
//! (blocking, async, and scoped with `with_lock_async`, which also watches
//! for the lock's loss), of a fenced no-op, and of a failed try.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sessionlock::{FileBackend, LockOptions, SessionLock};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("bench.jsonl");
    let locks = SessionLock::with_backend(
        FileBackend::default(),
        LockOptions::default().timeout(Some(Duration::from_secs(10))),
    );

    c.bench_function("uncontended acquire+release", |b| {
        b.iter(|| {
            locks
                .acquire(&session)
                .expect("acquire")
                .release()
                .expect("release")
        })
    });

    let guard = locks.acquire(&session).expect("acquire");
    c.bench_function("fenced no-op (with_fence)", |b| {
        b.iter(|| guard.with_fence(|| ()).expect("fence"))
    });

    let other = dir.path().join("held.jsonl");
    let _held = locks.acquire(&other).expect("acquire");
    c.bench_function("try_acquire of a held lock (in-process)", |b| {
        b.iter(|| locks.try_acquire(&other).expect_err("held"))
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let opts = locks.options().clone();
    // `session` is held by `guard` above.
    let session = dir.path().join("async.jsonl");
    c.bench_function("uncontended acquire_async+release", |b| {
        b.iter(|| {
            rt.block_on(async {
                let g = locks.acquire_async(&session).await.expect("acquire");
                g.release().expect("release");
            })
        })
    });
    c.bench_function("uncontended with_lock_async (no-op work)", |b| {
        b.iter(|| {
            rt.block_on(locks.with_lock_async(&session, &opts, async |_guard| {
                Ok::<_, sessionlock::Error>(())
            }))
            .expect("scoped hold")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
