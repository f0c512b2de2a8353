//! The event log (design §20.2) as processes really use it: several
//! processes sharing one file through `SESSIONLOCK_EVENT_LOG` write whole
//! lines that tell every hold; a SIGKILLed writer tears at most its last
//! line; a log that cannot be written (a full disk, a missing directory, a
//! FIFO nobody reads) never stops a lock, and says how many events it lost;
//! an attempt logs its appends and prompt window. The steps of one process (and every backend) are checked by the
//! conformance suite's `metrics_and_events_follow_a_scripted_scenario`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{block_on, park, role_args, say, Kid, Signal};
use serde_json::{json, Value};
use sessionlock::attempt::{Attempt, AttemptOptions};
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
        // `fifo <session> <fifo>`: the log cannot be a FIFO nobody reads
        // (`REFUSED`); at `go`, with a reader that does not read, 1000
        // holds (`DONE`); at `more`, one more hold (`DONE`).
        "fifo" => {
            let refused = EventLog::install(&args[1]);
            assert!(refused.is_err(), "a FIFO without a reader: {refused:?}");
            say("REFUSED");
            wait_for("go");
            EventLog::install(&args[1]).expect("a FIFO with a reader");
            let locks = SessionLock::new();
            for _ in 0..1000 {
                locks
                    .acquire(&args[0])
                    .expect("acquire")
                    .release()
                    .expect("release");
            }
            EventLog::flush();
            say("DONE");
            wait_for("more");
            locks
                .acquire(&args[0])
                .expect("acquire")
                .release()
                .expect("release");
            EventLog::flush();
            say("DONE");
            park()
        }
        // `attempt <session>`: one agent turn: an append, a prompt window,
        // an append, dispose.
        "attempt" => {
            block_on(async {
                let a = Attempt::begin_file(&args[0], AttemptOptions::default())
                    .await
                    .expect("begin");
                a.append(&[json!({"role": "user"})], Durability::None)
                    .await
                    .expect("append");
                let prompted = a.around_prompt(async {}).await.expect("prompt");
                prompted.reacquired.expect("reacquired");
                a.append(
                    &[json!({"role": "assistant"}), json!({"role": "tool"})],
                    Durability::None,
                )
                .await
                .expect("append");
                a.dispose().expect("dispose");
            });
            say("DONE");
        }
        other => panic!("unknown role {other}"),
    }
}

fn kid_logging(role: &str, args: &[&str], log: &Path) -> Kid {
    let mut cmd = Kid::command(role, args);
    cmd.env(ENV_EVENT_LOG, log);
    Kid::start(role, cmd)
}

/// Waits for the line `what` on stdin.
fn wait_for(what: &str) {
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).expect("stdin") > 0 {
        if line.trim() == what {
            return;
        }
        line.clear();
    }
    panic!("stdin closed before {what}");
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

/// A process SIGKILLed while it logs leaves whole lines, but for at most
/// its very last one (a kill can cut a write of more than a page short).
#[test]
fn a_sigkilled_writer_tears_at_most_its_last_line() {
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
    // A write longer than a page can be cut short by the kill: then only
    // its last line is torn, at the end of the file.
    let mut text = std::fs::read_to_string(&log).expect("read the log");
    if !text.ends_with('\n') {
        let cut = text.rfind('\n').map_or(0, |i| i + 1);
        text.truncate(cut);
    }
    let events = text
        .lines()
        .inspect(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
        })
        .count();
    assert!(events > 100, "{events} events");
}

/// The log as a reader of a FIFO sees it: a FIFO nobody reads is refused
/// (opening it would block); one whose reader stalls drops lines instead of
/// stalling the locks, and once it reads again a `dropped` line counts
/// exactly the lost events.
#[test]
fn a_stalled_fifo_drops_events_and_says_how_many() {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let fifo = dir.path().join("events.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let mut kid = Kid::spawn(
        "fifo",
        &[
            session.to_str().expect("utf8"),
            fifo.to_str().expect("utf8"),
        ],
    );
    kid.expect("REFUSED", Duration::from_secs(20));
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open the FIFO for reading");
    kid.say("go");
    kid.expect("DONE", Duration::from_secs(60));
    let mut got = Vec::new();
    let mut drain = |got: &mut Vec<u8>| loop {
        let mut buf = [0u8; 1 << 16];
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("read the FIFO: {e}"),
        }
    };
    drain(&mut got);
    kid.say("more");
    kid.expect("DONE", Duration::from_secs(60));
    drain(&mut got);
    kid.kill_and_reap();
    let text = String::from_utf8_lossy(&got);
    let mut events = 0u64;
    let mut dropped = 0u64;
    for line in text.lines() {
        // A write the full pipe cut short leaves one torn line, ended by
        // the next write: skipped, and counted among the dropped.
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["kind"] == "dropped" {
            dropped += v["events"].as_u64().expect("events");
        } else {
            events += 1;
        }
    }
    assert!(dropped > 0, "a 64 KiB pipe cannot hold 1000 holds' lines");
    assert_eq!(
        events + dropped,
        2 * 1001,
        "every event arrived or was counted as dropped"
    );
}

/// An attempt logs its appends and its prompt window: the lock released
/// for the model call, and taken again after it.
#[test]
fn an_attempt_logs_its_appends_and_its_prompt_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let log = dir.path().join("events.jsonl");
    let kid = kid_logging("attempt", &[session.to_str().expect("utf8")], &log);
    kid.expect("DONE", Duration::from_secs(60));
    assert!(kid.finish().success());
    let events = lines(&log);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .filter(|k| *k != "queued")
        .collect();
    assert_eq!(
        kinds,
        [
            "acquired",
            "appended",
            "released",
            "prompt-start",
            "prompt-end",
            "acquired",
            "appended",
            "released"
        ]
    );
    let appended: Vec<u64> = events
        .iter()
        .filter(|e| e["kind"] == "appended")
        .map(|e| e["entries"].as_u64().expect("entries"))
        .collect();
    assert_eq!(appended, [1, 2]);
    let end = events
        .iter()
        .find(|e| e["kind"] == "prompt-end")
        .expect("prompt-end");
    assert!(end["window_us"].is_u64(), "{end}");
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
