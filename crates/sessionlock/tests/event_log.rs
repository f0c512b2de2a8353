//! The event log (design §20.2) as processes really use it: several
//! processes sharing one file through `SESSIONLOCK_EVENT_LOG` write whole
//! lines that tell every hold; a SIGKILLed writer leaves no torn line; a log
//! that cannot be written (a full disk, a missing directory) never stops a
//! lock. The steps of one process (and every backend) are checked by the
//! conformance suite's `metrics_and_events_follow_a_scripted_scenario`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{park, role_args, say, Kid, Signal};
use serde_json::{json, Value};
use sessionlock::observe::{EventLog, ENV_EVENT_LOG};
use sessionlock::transcript::{Durability, Transcript};
use sessionlock::SessionLock;

#[test]
fn child_entry() {
    let Some((role, args)) = role_args() else {
        return;
    };
    match role.as_str() {
        // `cycle <session> <n>`: `n` holds, each with one fenced append,
        // then a normal exit (whose hook flushes the log).
        "cycle" => {
            let locks = SessionLock::new();
            let n: u32 = args[1].parse().expect("n");
            for i in 0..n {
                let g = locks.acquire(&args[0]).expect("acquire");
                let mut t = Transcript::open(&args[0]).expect("open");
                t.append(
                    &g,
                    &[json!({"pid": std::process::id(), "i": i})],
                    Durability::None,
                )
                .expect("append");
                g.release().expect("release");
            }
            say("DONE");
        }
        // `spin <session>`: holds and releases for ever, until killed.
        "spin" => {
            let locks = SessionLock::new();
            say("SPINNING");
            loop {
                locks
                    .acquire(&args[0])
                    .expect("acquire")
                    .release()
                    .expect("release");
            }
        }
        // `unwritable <session> <log>`: logs to `log` (which cannot be
        // written) while taking the lock 200 times.
        "unwritable" => {
            if args[1] != "-" {
                EventLog::install(&args[1]).expect("/dev/full opens for appending");
            }
            let locks = SessionLock::new();
            for _ in 0..200 {
                locks
                    .acquire(&args[0])
                    .expect("acquire")
                    .release()
                    .expect("release");
            }
            EventLog::flush();
            say(&format!(
                "DONE {}",
                EventLog::path().map_or("-".into(), |p| p.display().to_string())
            ));
            park()
        }
        other => panic!("unknown role {other}"),
    }
}

fn kid_logging(role: &str, args: &[&str], log: &Path) -> Kid {
    let mut cmd = Kid::command(role, args);
    cmd.env(ENV_EVENT_LOG, log);
    Kid::start(role, cmd)
}

fn lines(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).expect("read the log");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the log ends in a torn line"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn or bad line {l:?}: {e}")))
        .collect()
}

/// Four processes log 50 holds each into one file: every line is whole
/// JSON, each process's holds are all there (acquired, appended,
/// released, in that order for each epoch), and no two holds share an
/// epoch.
#[test]
fn processes_share_one_log_and_every_hold_is_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let log = dir.path().join("events.jsonl");
    let s = session.to_str().expect("utf8");
    let kids: Vec<Kid> = (0..4)
        .map(|_| kid_logging("cycle", &[s, "50"], &log))
        .collect();
    let pids: BTreeSet<u32> = kids.iter().map(Kid::pid).collect();
    for k in kids {
        k.expect("DONE", Duration::from_secs(60));
        assert!(k.finish().success());
    }
    let events = lines(&log);
    let mut by_pid: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for e in &events {
        by_pid
            .entry(e["pid"].as_u64().expect("pid"))
            .or_default()
            .push(e);
        assert_eq!(e["session"], s, "{e}");
    }
    assert_eq!(
        by_pid.keys().map(|&p| p as u32).collect::<BTreeSet<_>>(),
        pids,
        "every process logged"
    );
    let mut epochs = BTreeSet::new();
    for (pid, mut mine) in by_pid {
        // Waiting in line (`queued`) comes and goes with the contention.
        mine.retain(|e| e["kind"] != "queued");
        let kinds: Vec<&str> = mine
            .iter()
            .map(|e| e["kind"].as_str().expect("kind"))
            .collect();
        assert_eq!(
            kinds,
            ["acquired", "appended", "released"].repeat(50),
            "the lines of {pid}, in order"
        );
        for hold in mine.chunks(3) {
            let epoch = hold[0]["epoch"].as_u64().expect("epoch");
            assert!(hold.iter().all(|e| e["epoch"] == epoch), "{hold:?}");
            assert!(epochs.insert(epoch), "epoch {epoch} held twice");
        }
    }
    assert_eq!(epochs.len(), 200);
}

/// A process SIGKILLed while it logs leaves whole lines only: each write
/// is whole lines, appended.
#[test]
fn a_sigkilled_writer_leaves_no_torn_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let log = dir.path().join("events.jsonl");
    let kid = kid_logging("spin", &[session.to_str().expect("utf8")], &log);
    kid.expect("SPINNING", Duration::from_secs(20));
    // Let the writer thread flush a few times, then kill mid-flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&log).map_or(0, |m| m.len()) < 64 << 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the spinning child logged too little"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    kid.signal(Signal::KILL);
    kid.kill_and_reap();
    let events = lines(&log);
    assert!(events.len() > 100, "{} events", events.len());
}

/// A log that cannot be written (`/dev/full`: every write fails with
/// ENOSPC) or opened (a missing directory) drops events; the locks work as
/// before.
#[test]
fn an_unwritable_log_never_stops_a_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let s = session.to_str().expect("utf8");
    let full = Kid::spawn("unwritable", &[s, "/dev/full"]);
    assert_eq!(
        full.expect("DONE", Duration::from_secs(60)),
        "DONE /dev/full"
    );
    full.kill_and_reap();
    let missing = dir.path().join("no-such-dir").join("events.jsonl");
    let kid = kid_logging("unwritable", &[s, "-"], &missing);
    assert_eq!(
        kid.expect("DONE", Duration::from_secs(60)),
        "DONE -",
        "no log is on"
    );
    kid.kill_and_reap();
    assert!(!missing.exists());
}
