//! Fence figures on an 8 MiB transcript (docs/design.md §7.5): taking a
//! fence with a warm digest, checking an unchanged file, checking a 1 KiB
//! benign append, seeding a handle's digest (on a file the process-wide
//! digest cache does not know), the first snapshot of a second handle with
//! the cache warm (file unchanged, and after a 1 KiB append), and the check
//! of a change of metadata alone, which hashes the whole file.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::json;
use sessionlock::classify::{AcceptNothing, OpenClawClassifier};
use sessionlock::fence::{Change, DIGEST_SEED_CAP};
use sessionlock::transcript::Transcript;
use sessionlock::FileBackend;

/// Writes complete lines up to 64 KiB below the digest seed cap (so that
/// a handle seeds it even after the appends below).
fn write_transcript(path: &Path) -> u64 {
    let mut content = Vec::new();
    let mut line = Vec::new();
    for i in 0.. {
        line.clear();
        let e = json!({"type": "message", "id": format!("m{i}"),
                       "message": {"role": "user", "content": "x".repeat(200)}});
        serde_json::to_writer(&mut line, &e).expect("serialize");
        line.push(b'\n');
        if (content.len() + line.len()) as u64 > DIGEST_SEED_CAP - 64 * 1024 {
            break;
        }
        content.extend_from_slice(&line);
    }
    fs::write(path, &content).expect("write transcript");
    content.len() as u64
}

/// About 1 KiB of entries OpenClaw treats as benign.
fn benign_kib() -> Vec<u8> {
    let mut buf = Vec::new();
    let mut i = 0;
    while buf.len() < 1024 {
        let e = json!({"type": "custom", "customType": "ext", "id": format!("c{i}"),
                       "parentId": null, "timestamp": "2026-01-01T00:00:00Z",
                       "data": {"note": "y".repeat(100)}});
        serde_json::to_writer(&mut buf, &e).expect("serialize");
        buf.push(b'\n');
        i += 1;
    }
    buf
}

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open")
        .write_all(bytes)
        .expect("append");
}

fn open(path: &Path) -> Transcript {
    FileBackend::default()
        .open_transcript(path)
        .expect("open store")
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let size = write_transcript(&session);
    eprintln!("transcript: {size} bytes");

    let t = open(&session);
    let fence = t.snapshot(1).expect("seed");
    assert!(fence.digest().is_some());
    c.bench_function("fence take, warm digest, unchanged 8 MiB", |b| {
        b.iter(|| t.snapshot(1).expect("snapshot"))
    });
    c.bench_function("fence check, unchanged 8 MiB", |b| {
        b.iter(|| {
            assert_eq!(
                t.check(&fence, &AcceptNothing).expect("check"),
                Change::Unchanged
            )
        })
    });

    // A new inode (and birth time) per iteration: the cache cannot know it.
    let cold = dir.path().join("cold.jsonl");
    let staged = dir.path().join("cold.tmp");
    c.bench_function(
        "fence seed: first snapshot of a handle, 8 MiB, cache cold",
        |b| {
            b.iter_batched(
                || {
                    fs::copy(&session, &staged).expect("copy");
                    fs::rename(&staged, &cold).expect("rename");
                    open(&cold)
                },
                |fresh| {
                    let fence = fresh.snapshot(1).expect("snapshot");
                    assert!(fence.digest().is_some());
                    fence
                },
                BatchSize::PerIteration,
            )
        },
    );

    // The attempt controller's case: a new handle per attempt on a file this
    // process's previous handle snapshotted.
    c.bench_function(
        "first snapshot of a second handle, 8 MiB file, cache warm",
        |b| {
            b.iter_batched(
                || open(&session),
                |fresh| fresh.snapshot(1).expect("snapshot"),
                BatchSize::PerIteration,
            )
        },
    );

    let kib = benign_kib();
    append(&session, &kib);
    c.bench_function("fence check after a 1 KiB benign append, 8 MiB", |b| {
        b.iter(|| {
            assert!(matches!(
                t.check(&fence, &OpenClawClassifier).expect("check"),
                Change::Benign { .. }
            ))
        })
    });

    // A change of metadata alone: the check hashes the whole file.
    let t = open(&session);
    let fence = t.snapshot(1).expect("seed");
    let size = fence.size();
    assert!(fence.digest().is_some());
    let mut mode = 0o640;
    loop {
        fs::set_permissions(&session, fs::Permissions::from_mode(mode)).expect("chmod");
        if t.check(&fence, &AcceptNothing).expect("check") != Change::Unchanged {
            break;
        }
        mode ^= 0o040;
        std::thread::sleep(Duration::from_millis(1));
    }
    c.bench_function("fence check, metadata-only change (chmod), 8 MiB", |b| {
        b.iter(|| {
            assert_eq!(
                t.check(&fence, &AcceptNothing).expect("check"),
                Change::Benign {
                    entries: Vec::new(),
                    range: size..size
                }
            )
        })
    });

    // On a copy: every iteration appends 1 KiB more.
    let copy = dir.path().join("copy.jsonl");
    fs::copy(&session, &copy).expect("copy");
    let t = open(&copy);
    t.snapshot(1).expect("seed");
    c.bench_function("fence take after a 1 KiB append (digest catch-up)", |b| {
        b.iter_batched(
            || append(&copy, &kib),
            |()| t.snapshot(1).expect("snapshot"),
            BatchSize::PerIteration,
        )
    });
    c.bench_function(
        "first snapshot of a second handle after a 1 KiB append, 8 MiB, cache warm",
        |b| {
            b.iter_batched(
                || {
                    append(&copy, &kib);
                    open(&copy)
                },
                |fresh| fresh.snapshot(1).expect("snapshot"),
                BatchSize::PerIteration,
            )
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
