//! Under contention (design §3.12, §12): real processes hammering one
//! session get the lock in the order they queued, within a stated bound; a
//! process stopped inside the state lock's window delays nobody past their
//! budget, and is named; one session's stuck state lock does not hold up
//! the watchdog's revocation of another.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    flock_and_hold, park, role_args, say as out, stop_myself, wait_until_in_line,
    wait_until_stopped, Kid,
};
use rustix::process::Signal;
use sessionlock::backend::file::fs::{Fs, RealFs};
use sessionlock::transcript::Durability;
use sessionlock::{monotonic_ns, Error, FileBackend, Holds, LockOptions, SessionLock};
use sessionlock_lab::trace_recorder::{recorder, EventSeen};

/// The processes of the fairness test, and the lanes of its busiest one.
const PROCS: usize = 8;
const LANES: usize = 4;
const CYCLES: usize = 60;

/// The message of the event a waiter logs when it takes its place in line,
/// with the session's epoch at that moment.
const QUEUED: &str = "queued for the session lock";

#[test]
fn child_entry() {
    let Some((role, args)) = role_args() else {
        return;
    };
    match role.as_str() {
        "hammer" => hammer(&args),
        "stop-in-fence" => stop_in_fence(&args),
        // `hold <session>`: takes the lock and keeps it until killed.
        "hold" => {
            let g = SessionLock::new().acquire(&args[0]).expect("acquire");
            out(&format!("HELD {}", g.epoch()));
            park()
        }
        // `wait-for <session> <budget ms>`: one acquisition; says when it
        // got the lock (CLOCK_MONOTONIC) or why not, then releases.
        "wait-for" => {
            let budget = Duration::from_millis(args[1].parse().expect("budget"));
            out("STARTED");
            match SessionLock::new()
                .acquire_with(&args[0], &LockOptions::default().timeout(Some(budget)))
            {
                Ok(g) => {
                    out(&format!("ACQUIRED {}", monotonic_ns()));
                    g.release().expect("release");
                }
                Err(e) => out(&format!("FAILED {e}")),
            }
        }
        // Holds a `flock` on a session's state file until killed.
        "flock-state" => flock_and_hold(Path::new(&args[0]), false, false),
        other => panic!("unknown role {other}"),
    }
}

/// `hammer <session> <lines file> <id> <lanes> <cycles>`: `lanes` threads,
/// each taking the lock `cycles` times as soon as it can. Under the lock,
/// each appends one line to the lines file in two `write(2)` calls (a
/// broken lock would interleave them). Reports every hold: `OP <id> <lane>
/// <seq> <epoch when it queued, or -> <epoch> <acquired ns> <release ns>`.
fn hammer(args: &[String]) {
    let session = PathBuf::from(&args[0]);
    let lines = PathBuf::from(&args[1]);
    let id: usize = args[2].parse().expect("id");
    let lanes: usize = args[3].parse().expect("lanes");
    let cycles: usize = args[4].parse().expect("cycles");
    recorder();
    let pending: Arc<Mutex<Vec<EventSeen>>> = Arc::default();
    let locks = SessionLock::new();
    locks
        .acquire(&session)
        .expect("warm up")
        .release()
        .expect("release");
    out("READY");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("go");
    let threads: Vec<_> = (0..lanes)
        .map(|lane| {
            let (locks, session, lines, pending) = (
                locks.clone(),
                session.clone(),
                lines.clone(),
                pending.clone(),
            );
            std::thread::spawn(move || {
                let name = format!("p{id}-l{lane}");
                let opts = LockOptions::default()
                    .timeout(Some(Duration::from_secs(60)))
                    .lane(name.clone());
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
                    .open(&lines)
                    .expect("open lines");
                let mut ops = Vec::new();
                for seq in 0..cycles {
                    let g = locks.acquire_with(&session, &opts).expect("acquire");
                    let acquired = monotonic_ns();
                    let queued_at = queued_epoch(&pending, &name);
                    file.write_all(format!("{{\"p\":{id},\"l\":{lane},").as_bytes())
                        .expect("write");
                    file.write_all(format!("\"seq\":{seq}}}\n").as_bytes())
                        .expect("write");
                    let epoch = g.epoch();
                    let release = monotonic_ns();
                    g.release().expect("release");
                    let q = queued_at.map_or("-".to_owned(), |e| e.to_string());
                    ops.push(format!(
                        "OP {id} {lane} {seq} {q} {epoch} {acquired} {release}"
                    ));
                }
                ops
            })
        })
        .collect();
    for t in threads {
        for op in t.join().expect("lane") {
            out(&op);
        }
    }
    out("DONE");
}

/// The epoch at which `lane`'s latest acquisition queued across processes,
/// if it did (an in-process hand-off does not).
fn queued_epoch(pending: &Mutex<Vec<EventSeen>>, lane: &str) -> Option<u64> {
    let mut p = pending.lock().expect("pending");
    p.extend(recorder().take().events);
    let mine = |e: &EventSeen| {
        e.message == QUEUED
            && e.scope.iter().any(|s| {
                s.fields
                    .get("lane")
                    .is_some_and(|l| l.trim_matches('"') == lane)
            })
    };
    // The epoch is left out when the state lock was busy for more than a
    // moment as the waiter queued: such a wait is not counted.
    let found = p
        .iter()
        .rev()
        .find(|e| mine(e))
        .and_then(|e| e.fields.get("epoch").and_then(|v| v.parse().ok()));
    p.retain(|e| !mine(e));
    found
}

#[test]
fn every_waiter_acquires_within_one_hold_per_process_after_it_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let lines = dir.path().join("lines");
    std::fs::write(&lines, "").expect("lines file");
    let arg = |p: &Path| p.display().to_string();
    let mut kids: Vec<Kid> = (0..PROCS)
        .map(|id| {
            let lanes = if id == 0 { LANES } else { 1 };
            Kid::spawn(
                "hammer",
                &[
                    &arg(&session),
                    &arg(&lines),
                    &id.to_string(),
                    &lanes.to_string(),
                    &CYCLES.to_string(),
                ],
            )
        })
        .collect();
    for k in &kids {
        k.expect("READY", Duration::from_secs(30));
    }
    for k in &mut kids {
        k.say("go");
    }
    // (process, lane, seq, queued at, epoch, acquired, release called)
    let mut ops = Vec::new();
    for k in &kids {
        loop {
            let l = k.expect_any(&["OP ", "DONE"]);
            if l == "DONE" {
                break;
            }
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f[i].parse::<u64>().expect("number");
            ops.push((n(1), n(2), n(3), f[4].parse::<u64>().ok(), n(5), n(6), n(7)));
        }
    }
    for k in kids {
        assert!(k.finish().success());
    }
    let total = (PROCS - 1 + LANES) * CYCLES;
    assert_eq!(ops.len(), total);

    // 0 lost, 0 duplicated, 0 torn: every line once, whole.
    let text = std::fs::read_to_string(&lines).expect("lines");
    let mut seen = HashSet::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("torn or interleaved line {l:?}: {e}"));
        assert!(
            seen.insert((v["p"].as_u64(), v["l"].as_u64(), v["seq"].as_u64())),
            "duplicate {l}"
        );
    }
    assert_eq!(seen.len(), total, "lost lines");

    // 0 overlapping critical sections, and one epoch per hold.
    let mut by_time = ops.clone();
    by_time.sort_by_key(|o| o.5);
    for w in by_time.windows(2) {
        assert!(
            w[0].6 <= w[1].5,
            "critical sections overlap: {:?} and {:?}",
            w[0],
            w[1]
        );
        assert!(
            w[0].4 < w[1].4,
            "epochs must grow with every hold: {:?} {:?}",
            w[0],
            w[1]
        );
    }

    // The bound (design §3.12): a waiter that queued at epoch E holds the
    // lock at an epoch of at most E + P: at most one hold per other process
    // comes between, and then its own. Every epoch is one hold here (no
    // revocation, no foreign writer), so the epoch counts holds.
    let queued: Vec<_> = ops.iter().filter(|o| o.3.is_some()).collect();
    assert!(
        queued.len() > total / 4,
        "most holds should come after a wait in line: {} of {total}",
        queued.len()
    );
    let mut worst = 0;
    for o in &queued {
        let after = o.4 - o.3.expect("queued");
        worst = worst.max(after);
        assert!(
            after <= PROCS as u64,
            "process {} lane {} queued at epoch {} and held at {}: {after} holds later, more than one per process ({PROCS})",
            o.0,
            o.1,
            o.3.expect("queued"),
            o.4
        );
    }
    eprintln!("worst wait in line: {worst} holds (bound {PROCS})");

    // Every process got turns while all of them competed: in the middle of
    // the run, the busiest process (4 lanes) does not crowd out the others.
    let first = by_time.first().expect("ops").5;
    let last = by_time.last().expect("ops").5;
    let (lo, hi) = (first + (last - first) / 5, last - (last - first) / 5);
    let mut per: HashMap<u64, usize> = HashMap::new();
    for o in by_time.iter().filter(|o| (lo..=hi).contains(&o.5)) {
        *per.entry(o.0).or_default() += 1;
    }
    assert_eq!(
        per.len(),
        PROCS,
        "every process held the lock mid-run: {per:?}"
    );
}

/// A file system whose writes stop this process (SIGSTOP) once, before
/// writing: inside the transcript's fenced write, that is while holding the
/// session's state lock (shared).
struct StopBeforeWrite(std::sync::atomic::AtomicBool);

impl Fs for StopBeforeWrite {
    fn write(&self, file: &std::fs::File, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.swap(false, std::sync::atomic::Ordering::SeqCst) {
            out("STOPPING");
            stop_myself();
        }
        RealFs.write(file, buf)
    }
}

/// `stop-in-fence <session>`: takes the lock with a 300 ms lease, then
/// appends, and stops itself inside the append's fence.
fn stop_in_fence(args: &[String]) {
    let backend = FileBackend::default().with_fs(Arc::new(StopBeforeWrite(true.into())));
    let locks = SessionLock::with_backend(
        backend.clone(),
        LockOptions::default().max_hold(Duration::from_millis(300)),
    );
    let g = locks.acquire(&args[0]).expect("acquire");
    let mut t = backend.open_transcript(&args[0]).expect("open transcript");
    out(&format!("HELD {}", g.epoch()));
    t.append(&g, &[serde_json::json!({"n": 1})], Durability::None)
        .expect("append");
    out("RESUMED");
}

#[test]
fn a_process_stopped_inside_the_state_lock_delays_nobody_past_their_budget_and_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let kid = Kid::spawn("stop-in-fence", &[&session.display().to_string()]);
    kid.expect("HELD", Duration::from_secs(20));
    kid.expect("STOPPING", Duration::from_secs(20));
    wait_until_stopped(kid.pid());
    let budget = Duration::from_millis(1200);
    for (what, opts) in [
        ("blocking", LockOptions::default().timeout(Some(budget))),
        ("try", LockOptions::default().timeout(Some(Duration::ZERO))),
    ] {
        let started = Instant::now();
        let err = SessionLock::new()
            .acquire_with(&session, &opts)
            .expect_err("the stopped process keeps the state lock");
        let took = started.elapsed();
        let Error::Timeout { holder, .. } = &err else {
            panic!("{what}: expected a timeout, got {err}");
        };
        assert!(
            took <= opts
                .timeout
                .unwrap_or_default()
                .max(Duration::from_millis(50))
                + Duration::from_millis(700),
            "{what}: waited {took:?} past its budget"
        );
        assert_eq!(holder.pid, Some(kid.pid()), "{what}: {err}");
        // What it holds, and that it is stopped.
        assert_eq!(holder.holds, Some(Holds::StateLock), "{what}: {err}");
        assert!(holder.stopped, "{what}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(&kid.pid().to_string()), "{what}: {msg}");
        assert!(msg.contains("state lock"), "{what}: {msg}");
        assert!(msg.contains(" stopped "), "{what}: {msg}");
        let json = serde_json::to_value(&**holder).expect("serialize");
        assert_eq!(json["holds"], "state-lock", "{what}: {json}");
        assert_eq!(json["stopped"], true, "{what}: {json}");
    }
    // The doctor names it too, with what it holds.
    let report = sessionlock::status::inspect_session(&session, &Default::default())
        .expect("status")
        .expect("a lock");
    let text = format!("{report:?}");
    assert!(text.contains(&kid.pid().to_string()), "{text}");
    let stuck = report
        .contention
        .stuck
        .as_ref()
        .expect("status names the process stuck in the state lock");
    assert_eq!(stuck.pid, Some(kid.pid()), "{stuck}");
    assert_eq!(stuck.holds, Some(Holds::StateLock), "{stuck}");
    assert!(stuck.stopped, "{stuck}");
    kid.signal(Signal::CONT);
    // Resumed, it learns that it lost the lock: its write was fenced.
    kid.kill_and_reap();
}

#[test]
fn a_stuck_state_lock_does_not_hold_up_the_revocation_of_another_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stuck = dir.path().join("stuck.jsonl");
    let other = dir.path().join("other.jsonl");
    let locks = SessionLock::new();
    let a = locks
        .acquire_with(
            &stuck,
            &LockOptions::default().max_hold(Duration::from_millis(100)),
        )
        .expect("acquire stuck");
    let mut kid = Kid::spawn(
        "flock-state",
        &[&dir.path().join("stuck.jsonl.epoch").display().to_string()],
    );
    kid.expect("LOCKED", Duration::from_secs(20));
    let lease = Duration::from_millis(300);
    let started = Instant::now();
    let b = locks
        .acquire_with(&other, &LockOptions::default().max_hold(lease))
        .expect("acquire other");
    // `stuck`'s revocation (due at 100 ms) waits for its state lock up to
    // its bound (1 s); `other`'s (due at 300 ms) must not wait for it.
    while !b.is_revoked() {
        assert!(
            started.elapsed() < lease + Duration::from_millis(500),
            "the other session's lock was not revoked on time"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(started.elapsed() >= lease);
    drop(b);
    kid.say("");
    kid.kill_and_reap();
    // `stuck` was revoked too, once its bound passed: fenced from then on.
    let until = Instant::now() + Duration::from_secs(5);
    while !a.is_revoked() {
        assert!(Instant::now() < until, "stuck session never revoked");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(a);
}

/// Two waiters in line behind this process: the first leaves the line in
/// some way (`leave`), then this process releases. Returns how long after
/// the release the second one held the lock.
fn second_waiter_after(leave: impl FnOnce(&mut Kid)) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let arg = session.display().to_string();
    let held = SessionLock::new().acquire(&session).expect("hold");
    let mut first = Kid::spawn("wait-for", &[&arg, "1000"]);
    first.expect("STARTED", Duration::from_secs(20));
    wait_until_in_line(&session, first.pid());
    let second = Kid::spawn("wait-for", &[&arg, "10000"]);
    second.expect("STARTED", Duration::from_secs(20));
    wait_until_in_line(&session, second.pid());
    leave(&mut first);
    let released = monotonic_ns();
    held.release().expect("release");
    let line = second.expect("ACQUIRED", Duration::from_secs(15));
    let at: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .expect("stamp");
    first.kill_and_reap();
    assert!(second.finish().success());
    Duration::from_nanos(at.saturating_sub(released))
}

#[test]
fn a_waiter_that_gives_up_leaves_no_hole_in_the_line() {
    // The first waiter's budget (1 s) ends while it is first in line;
    // it rings the line's doorbell as it leaves, so the second is first at
    // once and takes the lock as soon as it is released.
    let took = second_waiter_after(|first| {
        let l = first.expect_any(&["FAILED", "ACQUIRED"]);
        assert!(l.starts_with("FAILED"), "the first waiter timed out: {l}");
    });
    assert!(
        took < Duration::from_millis(150),
        "second waiter held {took:?} after the release"
    );
}

#[test]
fn a_waiter_that_dies_leaves_no_hole_beyond_one_look() {
    // SIGKILLed in line: the kernel drops its place; the second waiter
    // finds itself first at its next look (every 250 ms) at the latest.
    let took = second_waiter_after(|first| first.signal(Signal::KILL));
    assert!(
        took < Duration::from_millis(400),
        "second waiter held {took:?} after the release"
    );
}

/// Stops `kid` while it waits in line, but not inside one of its looks at
/// the line, which hold the session's state lock for a few system calls:
/// stopped there, it would be a process stuck holding the state lock,
/// which nobody can pass over (the hazard `status` names), not a stopped
/// waiter.
fn stop_between_looks(kid: &mut Kid) {
    let pid = kid.pid();
    let holds_a_flock = || {
        std::fs::read_to_string("/proc/locks")
            .expect("/proc/locks")
            .lines()
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(1) == Some(&"FLOCK") && f.get(4) == Some(&pid.to_string().as_str())
            })
    };
    for _ in 0..100 {
        kid.signal(Signal::STOP);
        wait_until_stopped(pid);
        if !holds_a_flock() {
            return;
        }
        kid.signal(Signal::CONT);
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("{pid} held the state lock at each of 100 stops");
}

#[test]
fn a_waiter_stopped_first_in_line_is_passed_over() {
    // SIGSTOPped while first in line, it keeps its place: the line stands
    // still with the lock free, and after 500 ms the next waiter stops
    // waiting for it.
    let took = second_waiter_after(stop_between_looks);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(2000),
        "second waiter held {took:?} after the release"
    );
}

#[test]
fn a_stopped_waiter_costs_a_process_one_stall_not_one_per_acquisition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let arg = session.display().to_string();
    let locks = SessionLock::new();
    let held = locks.acquire(&session).expect("hold");
    let waiter = Kid::spawn("wait-for", &[&arg, "60000"]);
    waiter.expect("STARTED", Duration::from_secs(20));
    wait_until_in_line(&session, waiter.pid());
    waiter.signal(Signal::STOP);
    wait_until_stopped(waiter.pid());
    held.release().expect("release");
    // The first acquisition finds the stopped waiter first in line and
    // passes it over after the stall bound; later ones do not wait again.
    let opts = LockOptions::default().timeout(Some(Duration::from_secs(5)));
    let mut took = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        locks
            .acquire_with(&session, &opts)
            .expect("acquire")
            .release()
            .expect("release");
        took.push(started.elapsed());
    }
    assert!(took[0] < Duration::from_secs(2), "{took:?}");
    assert!(
        took[1] < Duration::from_millis(100) && took[2] < Duration::from_millis(100),
        "{took:?}"
    );
    waiter.kill_and_reap();
}

#[test]
fn a_stopped_first_waiter_does_not_keep_a_dead_holders_lock_from_being_reclaimed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let arg = session.display().to_string();
    let holder = Kid::spawn("hold", &[&arg]);
    holder.expect("HELD", Duration::from_secs(20));
    let waiter = Kid::spawn("wait-for", &[&arg, "60000"]);
    waiter.expect("STARTED", Duration::from_secs(20));
    wait_until_in_line(&session, waiter.pid());
    waiter.signal(Signal::STOP);
    wait_until_stopped(waiter.pid());
    holder.kill_and_reap();
    let started = Instant::now();
    SessionLock::new()
        .acquire_with(
            &session,
            &LockOptions::default().timeout(Some(Duration::from_secs(5))),
        )
        .expect("the dead holder's lock is reclaimed past the stopped waiter")
        .release()
        .expect("release");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    waiter.kill_and_reap();
}

#[test]
fn a_polling_waiter_gets_its_turn_in_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let lines = dir.path().join("lines");
    std::fs::write(&lines, "").expect("lines file");
    let arg = |p: &Path| p.display().to_string();
    let mut kids: Vec<Kid> = (0..3)
        .map(|id| {
            Kid::spawn(
                "hammer",
                &[&arg(&session), &arg(&lines), &id.to_string(), "1", "3000"],
            )
        })
        .collect();
    for k in &kids {
        k.expect("READY", Duration::from_secs(30));
    }
    for k in &mut kids {
        k.say("go");
    }
    // Waiters that poll (no inotify) queue like the others.
    let polling = SessionLock::with_backend(
        FileBackend::new(sessionlock::Notify::Poll),
        LockOptions::default().timeout(Some(Duration::from_secs(5))),
    );
    for _ in 0..3 {
        polling
            .acquire(&session)
            .expect("a polling waiter's turn")
            .release()
            .expect("release");
    }
    for k in kids {
        k.kill_and_reap();
    }
}
