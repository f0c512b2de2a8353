//! Hostile and unlucky files (issue 9, item 4): every file sessionlock reads
//! beside a transcript may have been written by someone else, cut short, or
//! be held by another program. Each case ends in a clear error or a safe
//! decision, never in a wedged session. Real files and real processes
//! (`sleep`, `flock(1)`) throughout.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use sessionlock::config::MAX_HOLD_CAP;
use sessionlock::doctor::{self, FixOptions, Outcome, Verdict};
use sessionlock::epoch;
use sessionlock::payload::format_time;
use sessionlock::status;
use sessionlock::transcript::{Durability, Transcript};
use sessionlock::{Error, FileBackend, LockBackend, LockOptions, Reason, SessionLock, Settings};

mod common;

use common::{block_on, dead_pid, starttime_of};

fn lock_path(session: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", session.display()))
}

fn epoch_path(session: &Path) -> PathBuf {
    PathBuf::from(format!("{}.epoch", session.display()))
}

fn opts(timeout: Duration) -> LockOptions {
    LockOptions::default().timeout(Some(timeout))
}

/// A child process in its own process group, killed (the whole group) and
/// reaped on drop.
struct Group(Child);

impl Group {
    fn spawn(cmd: &mut Command) -> Group {
        Group(
            cmd.process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn child"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Our own child's group, by its id.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// `flock <file> sleep 1000`, once the kernel lists it as holding the lock.
fn hold_flock(file: &Path) -> Group {
    let g = Group::spawn(Command::new("flock").arg(file).args(["sleep", "1000"]));
    let ino = {
        use std::os::unix::fs::MetadataExt;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(m) = fs::metadata(file) {
                break m.ino();
            }
            assert!(Instant::now() < deadline, "flock(1) never created {file:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let needle = format!(":{ino} ");
    loop {
        let locks = fs::read_to_string("/proc/locks").expect("/proc/locks");
        if locks
            .lines()
            .any(|l| l.contains("FLOCK") && !l.contains("->") && l.contains(&needle))
        {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "flock(1) never took the lock on {file:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ------------------------------------------------------------ epoch file

// Issue 9 item 4, first defect: `write_epoch` wrote its 21 bytes without
// truncating, so a state file longer than one record stayed invalid after
// every write; each read gave a new wall-clock floor and every holder's
// fenced write failed, forever. Now the write replaces the whole content.
#[test]
fn an_epoch_file_longer_than_its_record_does_not_fence_every_writer() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    fs::write(
        epoch_path(&session),
        b"00000000000000000005\ntrailing garbage from someone else\n",
    )
    .unwrap();
    let locks = SessionLock::new();
    for _ in 0..3 {
        let guard = locks
            .acquire_with(&session, &opts(Duration::from_secs(10)))
            .unwrap();
        guard
            .with_fence(|| ())
            .expect("the new holder's epoch is current");
        let mut t = Transcript::open(&session).unwrap();
        t.append(&guard, &[json!({"n": 1})], Durability::None)
            .expect("a fenced append lands");
        assert_eq!(
            fs::read(epoch_path(&session)).unwrap(),
            epoch::format(guard.epoch()),
            "the state file holds exactly one record"
        );
        guard.release().unwrap();
    }
}

// Issue 9 item 4: a record shorter than the fixed width (hand-written) is
// read, and the next write replaces it whole.
#[test]
fn a_short_hand_written_epoch_record_is_continued_and_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    fs::write(epoch_path(&session), b"7\n").unwrap();
    let guard = SessionLock::new()
        .acquire_with(&session, &opts(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(guard.epoch(), 8);
    assert_eq!(fs::read(epoch_path(&session)).unwrap(), epoch::format(8));
    guard.release().unwrap();
}

// Issue 9 item 4: `doctor` said "nothing to do" about an invalid state
// file. It now reports it, and `--fix` rewrites it under the state lock,
// above every epoch it can have stood for and never below a live holder's.
#[test]
fn doctor_reports_and_rewrites_an_invalid_epoch_file_without_lowering_it() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    fs::write(epoch_path(&session), b"00000000000000000009\nxx").unwrap();

    let before = epoch_floor_now();
    let report = doctor::examine(dir.path(), &Settings::default()).unwrap();
    let [f] = &report.findings[..] else {
        panic!("{:#?}", report.findings)
    };
    assert_eq!(f.verdict, Verdict::Repairable);
    assert_eq!(f.reasons, ["invalid-epoch"]);
    assert_eq!(f.kind().as_str(), "state");
    assert!(f.detail.contains("not one epoch record"), "{}", f.detail);

    let done = doctor::fix(&report, &FixOptions::default());
    let [doctor::Fixed {
        outcome: Outcome::Rewritten(e),
        ..
    }] = &done.fixed[..]
    else {
        panic!("{done:?}")
    };
    assert!(*e >= before, "{e} is below the floor {before}");
    assert_eq!(fs::read(epoch_path(&session)).unwrap(), epoch::format(*e));
    assert!(doctor::examine(dir.path(), &Settings::default())
        .unwrap()
        .findings
        .is_empty());

    // A live holder whose lock carries an epoch above the floor: the rewrite
    // never goes below it.
    let sleeper = Group::spawn(Command::new("sleep").arg("1000"));
    let high = u64::MAX / 2;
    fs::write(
        lock_path(&session),
        serde_json::to_vec(&json!({
            "pid": sleeper.pid(), "starttime": starttime_of(sleeper.pid()),
            "createdAt": format_time(SystemTime::now()), "maxHoldMs": 300_000,
            "epoch": high,
        }))
        .unwrap(),
    )
    .unwrap();
    fs::write(epoch_path(&session), b"garbage").unwrap();
    let report = doctor::examine(dir.path(), &Settings::default()).unwrap();
    let done = doctor::fix(&report, &FixOptions::default());
    assert!(
        done.fixed
            .iter()
            .any(|x| matches!(x.outcome, Outcome::Rewritten(e) if e == high)),
        "{done:?}"
    );
    assert!(lock_path(&session).exists(), "the live holder is untouched");
}

fn epoch_floor_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

// Issue 9 item 4, fifth defect: a state file or lock payload holding
// u64::MAX made the next epoch wrap to 0 (or panic in debug builds). Now the
// acquisition is refused with a typed error; no epoch is reused.
#[test]
fn an_exhausted_epoch_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let locks = SessionLock::new();

    let session = dir.path().join("state.jsonl");
    fs::write(epoch_path(&session), epoch::format(u64::MAX)).unwrap();
    let started = Instant::now();
    match locks.acquire_with(&session, &opts(Duration::from_secs(10))) {
        Err(Error::EpochExhausted { path, epoch }) => {
            assert_eq!(path, epoch_path(&session));
            assert_eq!(epoch, u64::MAX);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once"
    );
    assert!(!lock_path(&session).exists(), "nothing was published");
    assert_eq!(
        fs::read(epoch_path(&session)).unwrap(),
        epoch::format(u64::MAX)
    );

    // A dead holder's lock carrying u64::MAX: reclaiming it must not wrap.
    let session = dir.path().join("payload.jsonl");
    fs::write(epoch_path(&session), epoch::format(3)).unwrap();
    fs::write(
        lock_path(&session),
        serde_json::to_vec(&json!({
            "pid": dead_pid(), "createdAt": format_time(SystemTime::now()),
            "maxHoldMs": 300_000, "epoch": u64::MAX,
        }))
        .unwrap(),
    )
    .unwrap();
    let err = locks
        .acquire_with(&session, &opts(Duration::from_secs(10)))
        .expect_err("no epoch after u64::MAX");
    assert!(
        matches!(
            err,
            Error::EpochExhausted {
                epoch: u64::MAX,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("refusing to reuse an epoch"),
        "{err}"
    );

    // The doctor removing such a lock keeps its epoch: never lower.
    let session = dir.path().join("doctor.jsonl");
    fs::write(
        lock_path(&session),
        serde_json::to_vec(&json!({
            "pid": dead_pid(), "createdAt": format_time(SystemTime::now()),
            "maxHoldMs": 300_000, "epoch": u64::MAX,
        }))
        .unwrap(),
    )
    .unwrap();
    let key = FileBackend::default().key(&session).unwrap();
    let seen = block_on(FileBackend::default().inspect(&key))
        .unwrap()
        .unwrap();
    assert!(block_on(FileBackend::default().remove_if_unchanged(&key, &seen, None)).unwrap());
    assert_eq!(
        fs::read(epoch_path(&session)).unwrap(),
        epoch::format(u64::MAX)
    );
    assert!(matches!(
        locks.acquire_with(&session, &opts(Duration::from_secs(10))),
        Err(Error::EpochExhausted { .. })
    ));
}

// ----------------------------------------------------- createdAt, maxHoldMs

// Issue 9 item 4, second defect: a live holder whose payload claims a
// createdAt in the year 3000 and a maxHoldMs near u64::MAX pinned the
// session for millennia. Readers now count its lease from the file's mtime
// at the latest and for at most MAX_HOLD_CAP; status and doctor flag it.
// The lock file's mtime is set to (cap - 3 s) ago, so the clamped lease ends
// 3 s from now.
#[test]
fn a_far_future_created_at_and_huge_lease_are_clamped_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let lock = lock_path(&session);
    let sleeper = Group::spawn(Command::new("sleep").arg("1000"));
    fs::write(
        &lock,
        serde_json::to_vec(&json!({
            "pid": sleeper.pid(), "starttime": starttime_of(sleeper.pid()),
            "createdAt": "3000-01-01T00:00:00.000Z",
            "maxHoldMs": u64::MAX - 1000,
        }))
        .unwrap(),
    )
    .unwrap();
    let lease_ends_in = Duration::from_secs(3);
    let written = SystemTime::now() - MAX_HOLD_CAP + lease_ends_in;
    let lease_ends_at = written + MAX_HOLD_CAP;
    OpenOptions::new()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(written)
        .unwrap();

    let st = status::inspect_session(&session, &Settings::default())
        .unwrap()
        .expect("a lock");
    assert!(st.holder.alive);
    assert!(
        st.holder.reasons.contains(Reason::FutureCreatedAt),
        "{:?}",
        st.holder.reasons
    );
    assert!(
        st.holder.reasons.contains(Reason::LeaseClamped),
        "{:?}",
        st.holder.reasons
    );
    let left = st.lease_left.expect("a lease");
    assert!(left <= lease_ends_in, "{left:?}");

    let report = doctor::examine(dir.path(), &Settings::default()).unwrap();
    let f = report
        .findings
        .iter()
        .find(|f| f.path.ends_with("s.jsonl.lock"))
        .expect("lock finding");
    assert_eq!(f.verdict, Verdict::ReportOnly, "{}", f.detail);
    // Counted from the mtime, the lock is weeks old: too-old as well.
    assert_eq!(f.reasons, ["too-old", "future-created-at", "lease-clamped"]);
    assert!(f.detail.contains("in the future"), "{}", f.detail);
    assert!(doctor::fix(&report, &FixOptions::default())
        .fixed
        .is_empty());
    assert!(
        lock.exists(),
        "a live holder within its (bounded) lease stays"
    );

    // A contender gets the lock once the clamped lease has passed.
    let started = Instant::now();
    let guard = SessionLock::new()
        .acquire_with(&session, &opts(Duration::from_secs(60)))
        .expect("reclaimed once the clamped lease ended");
    let waited = started.elapsed();
    assert!(
        SystemTime::now() >= lease_ends_at,
        "taken {:?} before the clamped lease ended",
        lease_ends_at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    );
    assert!(waited < Duration::from_secs(50), "{waited:?}");
    assert_ne!(guard.payload().pid, Some(sleeper.pid()));
    guard.release().unwrap();
}

// Sibling of the createdAt defect: anyone who can write a lock file can set
// its mtime (`touch -d 2400-01-01`). The payload grace of a malformed lock
// counted from the mtime, and the createdAt clamp bounds a lease by it: a
// lock touched into the future waited for centuries. The file's ctime, which
// nobody can set, now bounds the mtime.
#[test]
fn a_lock_touched_into_the_future_does_not_put_off_its_grace_or_lease() {
    let dir = tempfile::tempdir().unwrap();
    let centuries = Duration::from_secs(400 * 365 * 86_400);
    let touch_ahead = |lock: &Path| {
        OpenOptions::new()
            .write(true)
            .open(lock)
            .unwrap()
            .set_modified(SystemTime::now() + centuries)
            .unwrap();
    };

    // A payload-less lock: the short grace (5 s for a budget under 30 s).
    let empty = dir.path().join("empty.jsonl");
    fs::write(lock_path(&empty), b"").unwrap();
    touch_ahead(&lock_path(&empty));
    let started = Instant::now();
    let guard = SessionLock::new()
        .acquire_with(&empty, &opts(Duration::from_secs(25)))
        .expect("reclaimed once the grace counted from the ctime ended");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    guard.release().unwrap();

    // A live holder whose createdAt and mtime both lie centuries ahead, with
    // a 2 s lease.
    let live = dir.path().join("live.jsonl");
    let sleeper = Group::spawn(Command::new("sleep").arg("1000"));
    fs::write(
        lock_path(&live),
        serde_json::to_vec(&json!({
            "pid": sleeper.pid(), "starttime": starttime_of(sleeper.pid()),
            "createdAt": format_time(SystemTime::now() + centuries),
            "maxHoldMs": 2000,
        }))
        .unwrap(),
    )
    .unwrap();
    touch_ahead(&lock_path(&live));
    let st = status::inspect_session(&live, &Settings::default())
        .unwrap()
        .expect("a lock");
    assert!(st.holder.reasons.contains(Reason::FutureCreatedAt));
    assert!(st.lease_left.expect("a lease") <= Duration::from_secs(2));
    let started = Instant::now();
    let guard = SessionLock::new()
        .acquire_with(&live, &opts(Duration::from_secs(25)))
        .expect("reclaimed once the 2 s lease counted from the ctime ended");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    guard.release().unwrap();
}

// ------------------------------------------------------------ name length

// Issue 9 item 4, third defect: a session name of 213-249 bytes could be
// locked, but its tombstone name (43 bytes more) exceeded NAME_MAX, so the
// lock could never be released, reclaimed or fixed. Every name is now
// either fully usable or refused up front with the maximum in the error.
#[test]
fn long_session_names_are_fully_usable_or_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let locks = SessionLock::new();
    let max = sessionlock::backend::file::MAX_SESSION_NAME;
    assert_eq!(max, 212);
    for len in 200..=255usize {
        let name = format!("{}.jsonl", "n".repeat(len - ".jsonl".len()));
        let session = dir.path().join(&name);
        let got = locks.acquire_with(&session, &opts(Duration::from_secs(10)));
        if len > max {
            let err = got.expect_err("refused");
            assert!(matches!(err, Error::InvalidPath { .. }), "{len}: {err}");
            assert!(err.to_string().contains("212 bytes"), "{err}");
            assert!(!lock_path(&session).exists());
            continue;
        }
        // Acquire, write through every side file, release.
        let guard = got.unwrap_or_else(|e| panic!("{len}: {e}"));
        let mut t = Transcript::open(&session).unwrap();
        t.append(&guard, &[json!({"n": 1})], Durability::Full)
            .unwrap();
        t.rewrite(&guard, &[json!({"n": 2})]).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&session)
            .unwrap()
            .write_all(b"{\"torn\":")
            .unwrap();
        assert!(t.repair(&guard).unwrap().is_some(), "{len}");
        guard.extend().unwrap();
        guard.release().unwrap_or_else(|e| panic!("{len}: {e}"));
        assert!(!lock_path(&session).exists(), "{len}: released");

        // Reclaim a dead holder's lock.
        fs::write(
            lock_path(&session),
            serde_json::to_vec(&json!({
                "pid": dead_pid(), "createdAt": format_time(SystemTime::now()),
                "maxHoldMs": 300_000,
            }))
            .unwrap(),
        )
        .unwrap();
        let guard = locks
            .acquire_with(&session, &opts(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{len}: {e}"));
        guard.release().unwrap();
    }
    // The doctor removes a dead holder's lock of the longest usable name.
    let name = format!("{}.jsonl", "d".repeat(max - ".jsonl".len()));
    let session = dir.path().join(name);
    fs::write(
        lock_path(&session),
        serde_json::to_vec(&json!({
            "pid": dead_pid(), "createdAt": format_time(SystemTime::now()),
            "maxHoldMs": 300_000,
        }))
        .unwrap(),
    )
    .unwrap();
    let report = doctor::examine(dir.path(), &Settings::default()).unwrap();
    let done = doctor::fix(&report, &FixOptions::default());
    assert!(done.fixed.iter().all(|x| x.outcome.is_done()), "{done:?}");
    assert!(!lock_path(&session).exists());
}

// ------------------------------------------------------- state lock holder

// Issue 9 item 4, fourth defect: another process holding `flock` on the
// state file made every acquisition (and `doctor --fix`) block forever in
// flock(2). The wait is now bounded by the caller's budget and the timeout
// names the process holding it.
#[test]
fn a_foreign_flock_on_the_state_file_times_out_naming_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let blocker = hold_flock(&epoch_path(&session));

    let started = Instant::now();
    let err = SessionLock::new()
        .acquire_with(&session, &opts(Duration::from_secs(2)))
        .expect_err("the state lock is held");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(
        took < Duration::from_secs(8),
        "{took:?}: bounded by the budget"
    );
    let Error::Timeout { timeout_ms, holder } = &err else {
        panic!("{err}")
    };
    assert_eq!(*timeout_ms, 2000);
    assert_eq!(holder.pid, Some(blocker.pid()), "{err}");
    assert_eq!(holder.lock_path, epoch_path(&session));
    assert!(
        err.to_string().contains(&format!("pid={}", blocker.pid())),
        "{err}"
    );

    // try_acquire does not block either.
    assert!(SessionLock::new().try_acquire(&session).is_err());

    // The doctor finishes, reporting the session as held by the blocker.
    fs::write(
        lock_path(&session),
        serde_json::to_vec(&json!({
            "pid": dead_pid(), "createdAt": format_time(SystemTime::now()),
            "maxHoldMs": 300_000,
        }))
        .unwrap(),
    )
    .unwrap();
    fs::write(&session, b"{}\n{\"torn\":").unwrap();
    let report = doctor::examine(dir.path(), &Settings::default()).unwrap();
    let started = Instant::now();
    let done = doctor::fix(
        &report,
        &FixOptions::default().lock_timeout(Duration::from_secs(1)),
    );
    assert!(started.elapsed() < Duration::from_secs(10), "bounded");
    assert_eq!(done.fixed.len(), 2, "{done:?}");
    for x in &done.fixed {
        let Outcome::Held(h) = &x.outcome else {
            panic!("{done:?}")
        };
        assert_eq!(h.pid, Some(blocker.pid()), "{done:?}");
    }
    drop(blocker);
    // Once the blocker is gone, everything proceeds.
    let guard = SessionLock::new()
        .acquire_with(&session, &opts(Duration::from_secs(10)))
        .unwrap();
    guard.release().unwrap();
}

// Sibling of the state-lock defect: in the async API the state-lock wait
// ran inline on the runtime thread, so a foreign flock blocked that thread
// for the whole budget (forever, before the wait was bounded), starving
// every other task on it. The wait now blocks at most a few milliseconds at
// a time and sleeps on the runtime's timer in between.
#[test]
fn a_foreign_flock_does_not_block_the_async_runtime() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let blocker = hold_flock(&epoch_path(&session));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ticks = Arc::new(AtomicU32::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let started = Instant::now();
        let err = SessionLock::new()
            .acquire_async_with(&session, &opts(Duration::from_secs(1)))
            .await
            .expect_err("the state lock is held");
        let took = started.elapsed();
        ticker.abort();
        let Error::Timeout { holder, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(holder.pid, Some(blocker.pid()), "{err}");
        assert!(took < Duration::from_secs(6), "{took:?}");
        // About 1 s of 10 ms ticks on the one runtime thread.
        let n = ticks.load(Ordering::Relaxed);
        assert!(
            n >= 20,
            "the runtime thread was blocked: {n} ticks in {took:?}"
        );
    });
}

/// Runs `op` on the one worker of a multi-thread runtime while a ticker task
/// counts 10 ms ticks; `release` ends whatever `op` waits for once 30 ticks
/// were counted (or after 10 s, when the ticker is stuck). Returns `op`'s
/// output and whether the ticks came while `op` was blocked.
fn ticks_while_blocked<T: Send + 'static>(
    op: impl FnOnce() -> T + Send + 'static,
    release: impl FnOnce() + Send + 'static,
) -> (T, bool) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicU32::new(0));
    let releaser = {
        let ticks = ticks.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let ticked = loop {
                if ticks.load(Ordering::Relaxed) >= 30 {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            release();
            ticked
        })
    };
    let out = rt.block_on(async {
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // On the runtime's one worker, as a gateway's task would run it.
        let out = tokio::spawn(async move { op() }).await.unwrap();
        ticker.abort();
        out
    });
    (out, releaser.join().unwrap())
}

// The async API never blocks a runtime worker on a state lock held by
// another program: a fenced write waits for it through `block_in_place`,
// so the worker's other tasks move to another thread meanwhile.
#[test]
fn a_fenced_write_waiting_for_the_state_lock_leaves_the_runtime_running() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let guard = SessionLock::new().acquire(&session).unwrap();
    let mut t = Transcript::open(&session).unwrap();
    let blocker = hold_flock(&epoch_path(&session));
    let (appended, ticked) = ticks_while_blocked(
        move || t.append(&guard, &[json!({"n": 1})], Durability::None),
        move || drop(blocker),
    );
    appended.expect("the write lands once the state lock is free");
    assert!(
        ticked,
        "the runtime's worker was blocked while the write waited for the state lock"
    );
}

/// A file system whose `fsync`s wait until the test opens the gate: a
/// disk that takes its time.
struct SlowSync {
    gate: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl sessionlock::fs::Fs for SlowSync {
    fn sync_data(&self, file: &fs::File) -> std::io::Result<()> {
        let (open, cv) = &*self.gate;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut g = open.lock().unwrap();
        while !*g && Instant::now() < deadline {
            g = cv.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
        }
        file.sync_data()
    }
}

// An fsync of the async API runs off the runtime's worker threads too.
#[test]
fn a_slow_fsync_of_a_fenced_write_leaves_the_runtime_running() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let gate = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let guard = SessionLock::new().acquire(&session).unwrap();
    let mut t = Transcript::open_with(
        &session,
        std::sync::Arc::new(SlowSync { gate: gate.clone() }),
    )
    .unwrap();
    let (appended, ticked) = ticks_while_blocked(
        move || t.append(&guard, &[json!({"n": 1})], Durability::Data),
        move || {
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
        },
    );
    appended.expect("the write lands once the disk answers");
    assert!(
        ticked,
        "the runtime's worker was blocked while the write waited for its fsync"
    );
}

// Sibling of the state-lock defect: the watchdog thread revokes overdue
// guards of every session of the process under the state lock. A foreign
// flock on one session's state file blocked it in flock(2) forever: that
// guard was never revoked, and no other guard of the process either.
#[test]
fn a_foreign_flock_on_the_state_file_does_not_stall_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("blocked.jsonl");
    let other = dir.path().join("other.jsonl");
    let locks = SessionLock::new();
    let lease = Duration::from_millis(300);
    let g1 = locks
        .acquire_with(&blocked, &opts(Duration::from_secs(10)).max_hold(lease))
        .unwrap();
    let _blocker = hold_flock(&epoch_path(&blocked));
    let g2 = locks
        .acquire_with(&other, &opts(Duration::from_secs(10)).max_hold(lease * 2))
        .unwrap();
    // Both leases end within 0.6 s; a revocation waits at most REVOKE_BOUND
    // (1 s) for the state lock. 8 s is generous slack under load, and less
    // than the bound of other lease operations (STATE_LOCK_BOUND, 10 s).
    let deadline = Instant::now() + Duration::from_secs(8);
    while !(g1.is_revoked() && g2.is_revoked()) {
        assert!(
            Instant::now() < deadline,
            "watchdog stalled: revoked {} / {}",
            g1.is_revoked(),
            g2.is_revoked()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(g1.check(), Err(Error::Revoked { .. })));
    assert!(matches!(g2.check(), Err(Error::Revoked { .. })));
    assert!(
        !lock_path(&other).exists(),
        "the other session was revoked in full"
    );
}

// ------------------------------------------------------------------ tokens

// Issue 9 item 4, smaller defects: tokens were a per-process random prefix
// plus a counter; spec §2.2 says random per acquisition.
#[test]
fn every_acquisition_gets_a_fresh_random_token() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let locks = SessionLock::new();
    let mut tokens = Vec::new();
    for _ in 0..16 {
        let g = locks.acquire(&session).unwrap();
        let t = g.payload().token.expect("a token");
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        tokens.push(t);
        g.release().unwrap();
    }
    // No shared per-process part: the first halves differ too.
    let mut halves: Vec<&str> = tokens.iter().map(|t| &t[..16]).collect();
    halves.sort_unstable();
    halves.dedup();
    assert_eq!(halves.len(), tokens.len(), "{tokens:?}");
}

// Sibling of the epoch-wrap defect (unchecked arithmetic): a budget of
// `Duration::MAX` overflowed `Instant + Duration` and panicked in acquire and
// in the doctor's fix. It now means "no deadline".
#[test]
fn an_unrepresentable_budget_means_forever_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let guard = SessionLock::new()
        .acquire_with(&session, &opts(Duration::MAX))
        .expect("a free lock is taken");
    guard.release().unwrap();

    fs::write(&session, b"{}\n{\"torn\":").unwrap();
    let report = doctor::examine(dir.path(), &Settings::default()).unwrap();
    let done = doctor::fix(&report, &FixOptions::default().lock_timeout(Duration::MAX));
    assert!(
        matches!(
            done.fixed[..],
            [doctor::Fixed {
                outcome: Outcome::Repaired(_),
                ..
            }]
        ),
        "{done:?}"
    );
}

// Sibling of the epoch-file defects: the state file is rewritten in place
// (now also truncated). A hard link planted at its name (possible where
// `fs.protected_hardlinks` is off, or to any file the planter owns) would
// make every writer of the session, root included, overwrite and cut that
// other file. A state file with more than one link is refused, and the
// doctor reports it without touching it.
#[test]
fn a_hard_link_at_the_epoch_path_is_refused_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("s.jsonl");
    let victim = dir.path().join("victim.conf");
    let content = b"precious configuration, much longer than an epoch record\n";
    fs::write(&victim, content).unwrap();
    fs::hard_link(&victim, epoch_path(&session)).unwrap();

    let err = SessionLock::new()
        .acquire_with(&session, &opts(Duration::from_secs(5)))
        .expect_err("refused");
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    assert!(err.to_string().contains("hard links"), "{err}");
    assert_eq!(
        fs::read(&victim).unwrap(),
        content,
        "the other file is intact"
    );
    assert!(!lock_path(&session).exists());

    let report = doctor::examine(dir.path(), &Settings::default()).unwrap();
    let f = report
        .findings
        .iter()
        .find(|f| f.path == epoch_path(&session))
        .expect("the epoch file is reported");
    assert_eq!(f.verdict, Verdict::Invalid);
    assert_eq!(f.reasons, ["hard-linked"]);
    doctor::fix(&report, &FixOptions::default());
    assert_eq!(
        fs::read(&victim).unwrap(),
        content,
        "the doctor never touches it"
    );
}

/// Waits until `g` is revoked, at most `within`; whether it was.
fn revoked_within(g: &sessionlock::Guard, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !g.is_revoked() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

// Issue 9 (review of item 4): a revocation whose epoch cannot be raised
// (the session's epoch is already u64::MAX) computed `epoch + 1` and
// panicked, so the overdue guard was never marked revoked.
#[test]
fn a_guard_at_the_last_epoch_is_still_revoked_at_its_lease_end() {
    let dir = tempfile::tempdir().unwrap();
    let session = dir.path().join("last.jsonl");
    fs::write(epoch_path(&session), epoch::format(u64::MAX - 1)).unwrap();
    let locks = SessionLock::new();
    let g = locks
        .acquire_with(
            &session,
            &opts(Duration::from_secs(10)).max_hold(Duration::from_millis(200)),
        )
        .expect("the last epoch is still usable");
    assert_eq!(g.epoch(), u64::MAX);
    assert!(
        revoked_within(&g, Duration::from_secs(10)),
        "revoked at its lease end although no epoch is left to raise"
    );
    assert!(matches!(g.check(), Err(Error::Revoked { .. })));
}

// Issue 9 (review of item 4): the watchdog revoked inline, so a revocation
// waiting for a guard busy in a long fenced write (a slow sync, a foreign
// `flock` on its state file) held up every other session's revocation.
#[test]
fn a_guard_busy_in_a_fenced_write_does_not_delay_other_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let locks = std::sync::Arc::new(SessionLock::new());
    let slow = locks
        .acquire_with(
            dir.path().join("slow.jsonl"),
            &opts(Duration::from_secs(10)).max_hold(Duration::from_millis(100)),
        )
        .unwrap();
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        // A fenced write that outlives its lease: its guard's mutex stays
        // held until the test lets it finish.
        let r = slow.with_fence(|| {
            entered_tx.send(()).unwrap();
            let _ = done_rx.recv_timeout(Duration::from_secs(30));
        });
        (slow, r)
    });
    entered_rx.recv().unwrap();
    let other = locks
        .acquire_with(
            dir.path().join("other.jsonl"),
            &opts(Duration::from_secs(10)).max_hold(Duration::from_millis(300)),
        )
        .unwrap();
    let started = Instant::now();
    let on_time = revoked_within(&other, Duration::from_secs(3));
    let waited = started.elapsed();
    done_tx.send(()).unwrap();
    let (slow, r) = writer.join().unwrap();
    assert!(r.is_ok(), "the write that started in time ran");
    assert!(
        on_time,
        "the other session's guard was not revoked within 3 s of its 300 ms lease \
         while the first guard was busy"
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert!(
        revoked_within(&slow, Duration::from_secs(10)),
        "the busy guard is revoked once its write ends"
    );
}
