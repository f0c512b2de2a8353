//! The transcript store and the attempt controller: one regression test per
//! incident of spec §13, then the controller's behaviour.
//!
//! Child processes are this test binary re-executed in child mode (see
//! `child_entry`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sessionlock::attempt::{Attempt, AttemptOptions, CleanupLock, State};
use sessionlock::classify::OpenClawClassifier;
use sessionlock::fs::{Fs, RealFs};
use sessionlock::runs::AbortKind;
use sessionlock::transcript::{Durability, Reader, Transcript};
use sessionlock::{monotonic_ns, Error, FileBackend, SessionLock, TakeoverPhase};

mod common;

use common::sessions::{append, attempt_opts, custom, entries, is_free, lane_opts, locks, opts};
use common::{role_args, Kid};

/// A file system whose stat and pread fail with a chosen errno while armed.
struct FailingFs {
    armed: AtomicBool,
    errno: i32,
}

impl FailingFs {
    fn new(errno: i32) -> Arc<FailingFs> {
        Arc::new(FailingFs {
            armed: AtomicBool::new(false),
            errno,
        })
    }
    fn fail(&self) -> io::Result<()> {
        if self.armed.load(Ordering::SeqCst) {
            Err(io::Error::from_raw_os_error(self.errno))
        } else {
            Ok(())
        }
    }
}

impl Fs for FailingFs {
    fn stat(&self, path: &Path) -> io::Result<fs::Metadata> {
        self.fail()?;
        RealFs.stat(path)
    }
    fn metadata(&self, file: &fs::File) -> io::Result<fs::Metadata> {
        self.fail()?;
        RealFs.metadata(file)
    }
    fn read_at(&self, file: &fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.fail()?;
        RealFs.read_at(file, buf, offset)
    }
}

/// A file system whose writes and syncs fail with ENOSPC while armed.
struct FullDisk {
    armed: AtomicBool,
}

impl Fs for FullDisk {
    fn write(&self, file: &fs::File, buf: &[u8]) -> io::Result<usize> {
        if self.armed.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28));
        }
        RealFs.write(file, buf)
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------- children

/// Entry point of child processes (a no-op in a normal test run).
#[test]
fn child_entry() {
    let Some((role, args)) = role_args() else {
        return;
    };
    let say = |s: String| {
        let mut o = io::stdout().lock();
        writeln!(o, "{s}").expect("stdout");
        o.flush().expect("flush");
    };
    match role.as_str() {
        // Hold with a short lease, spin on the CPU past it, then append.
        "wedge-append" => {
            let session = PathBuf::from(&args[0]);
            let lease: u64 = args[1].parse().expect("lease");
            let g = locks()
                .acquire_with(&session, &opts(5000).max_hold(Duration::from_millis(lease)))
                .expect("acquire");
            let mut t = Transcript::open(&session).expect("open");
            say(format!("HELD {}", monotonic_ns()));
            let until = Instant::now() + Duration::from_millis(lease * 4);
            let mut x = 0u64;
            while Instant::now() < until {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            match t.append(&g, &[json!({"late": true})], Durability::None) {
                Ok(_) => say("LATE landed".into()),
                Err(e) => say(format!("LATE rejected {e}")),
            }
        }
        // Write half a line, report, then wait to be SIGKILLed.
        "half-line" => {
            let session = PathBuf::from(&args[0]);
            let g = locks().acquire(&session).expect("acquire");
            let mut t = Transcript::open(&session).expect("open");
            t.append(&g, &[json!({"whole": 1})], Durability::None)
                .expect("append");
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(&session)
                .expect("open raw");
            f.write_all(br#"{"half": "this line never ends"#)
                .expect("write half");
            say("HALF".into());
            std::thread::sleep(Duration::from_secs(60));
        }
        // Appender: acquire, fenced append of one entry, acknowledge.
        // Appender: resumes after its last entry in the transcript (so a
        // restart after SIGKILL never writes an entry twice), then appends
        // one fenced entry per acquisition and acknowledges it.
        "appender" => {
            let (session, w, n) = (
                PathBuf::from(&args[0]),
                &args[1],
                args[2].parse::<u32>().expect("n"),
            );
            let mut t = Transcript::open(&session).expect("open");
            let start = Reader::open(&session)
                .expect("reader")
                .filter_map(Result::ok)
                .filter(|e| e.value["w"].as_str() == Some(w.as_str()))
                .filter_map(|e| e.value["seq"].as_u64())
                .max()
                .map_or(0, |m| m as u32 + 1);
            for seq in start..n {
                let g = locks().acquire(&session).expect("acquire");
                let entry = json!({"w": w, "seq": seq, "pad": "x".repeat(40)});
                t.append(&g, &[entry], Durability::None).expect("append");
                say(format!("ACK {seq}"));
                drop(g);
            }
            say("DONE".into());
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------- §13 incidents

#[test]
fn incident_1_fence_read_error_during_prompt_release_still_releases_the_lock() {
    // Incident: taking the fence snapshot during the prompt release threw
    // (EIO/EMFILE on stat/read), the error skipped the release, and the
    // session stayed locked until its lease ran out.
    for errno in [5 /* EIO */, 24 /* EMFILE */] {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("s.jsonl");
        let fs = FailingFs::new(errno);
        rt().block_on(async {
            let faulty =
                SessionLock::with_backend(FileBackend::default().with_fs(fs.clone()), opts(5000));
            let a = Attempt::begin(&faulty, &session, attempt_opts())
                .await
                .expect("begin");
            fs.armed.store(true, Ordering::SeqCst);
            let err = a
                .release_for_prompt()
                .await
                .expect_err("the snapshot fails");
            assert!(
                !sessionlock::turns::PromptTurns::global().is_held(a.session()),
                "an unverifiable release takes no prompt turn"
            );
            assert!(
                matches!(&err, Error::Io { source, .. } if source.raw_os_error() == Some(errno)),
                "{err}"
            );
            // The next turn acquires at once.
            let g = locks()
                .acquire_with(&session, &opts(0))
                .unwrap_or_else(|e| panic!("errno {errno}: lock still held: {e}"));
            drop(g);
            fs.armed.store(false, Ordering::SeqCst);
            // Nothing can be proven about the prompt window: takeover.
            let err = a
                .reacquire_after_prompt()
                .await
                .expect_err("unverifiable fence");
            assert!(
                matches!(
                    err,
                    Error::Takeover {
                        phase: TakeoverPhase::PromptReacquire,
                        ..
                    }
                ),
                "{err}"
            );
            assert_eq!(a.state(), State::TakenOver);
        });
    }
}

#[test]
fn incident_2_wedged_holder_is_reclaimed_within_its_lease_and_its_late_append_rejected() {
    // Incident: a live holder wedged in a CPU loop pinned the session for its
    // whole 17-minute lease; contenders could not take it, and had they
    // taken it, the wedged holder's later write would have raced theirs.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("wedged.jsonl");
    let lease_ms = 300;
    let kid = Kid::spawn(
        "wedge-append",
        &[session.to_str().expect("utf8"), &lease_ms.to_string()],
    );
    let held_at: u64 = kid.expect("HELD", Duration::from_secs(20))[5..]
        .parse()
        .expect("mono");
    let g = locks()
        .acquire(&session)
        .expect("contender takes the wedged session");
    let acquired_at = monotonic_ns();
    let bound = held_at + (lease_ms + 50) * 1_000_000;
    assert!(
        acquired_at <= bound,
        "held {:.1} ms after the wedged holder took the lock (lease {lease_ms} ms + 50 ms)",
        (acquired_at - held_at) as f64 / 1e6
    );
    let mut t = Transcript::open(&session).expect("open");
    t.append(&g, &[json!({"by": "contender"})], Durability::None)
        .expect("append");
    let late = kid.expect("LATE", Duration::from_secs(20));
    assert!(late.starts_with("LATE rejected"), "{late}");
    drop(g);
    let all = entries(&session);
    assert_eq!(
        all,
        vec![json!({"by": "contender"})],
        "the late write must be absent"
    );
}

#[test]
fn incident_3_user_abort_frees_the_lock_before_cleanup_runs() {
    // Incident: a user stop did not release the session lock; the attempt's
    // cleanup ran with it held and the next turn waited for the lease.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("abort.jsonl");
    rt().block_on(async {
        let a = Attempt::begin_file(&session, attempt_opts())
            .await
            .expect("begin");
        a.abort(AbortKind::User);
        // Before any cleanup: the next turn does not wait.
        let next = locks()
            .acquire_with(&session, &opts(0))
            .expect("free at once after abort");
        drop(next);
        assert_eq!(
            a.acquire_for_cleanup().await.expect("cleanup"),
            CleanupLock::Held
        );
        a.dispose().expect("dispose");
        assert!(!PathBuf::from(format!("{}.lock", session.display())).exists());
    });
}

#[test]
fn incident_4_another_lanes_write_does_not_wait_for_the_model_call() {
    // Incident: the session lock was held across model I/O, so a write from
    // another lane (a delivery mirror, a cron lane) waited for the whole
    // model call.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("model.jsonl");
    rt().block_on(async {
        let opts_ = attempt_opts().classifier(Arc::new(OpenClawClassifier));
        let a = Attempt::begin_file(&session, opts_).await.expect("begin");
        a.release_for_prompt().await.expect("release for prompt");
        // The model call is in flight (never finishes here); another lane
        // writes a delivery mirror without waiting.
        let g = locks().acquire_with(&session, &opts(0)).expect("not held during the prompt");
        let mut t = Transcript::open(&session).expect("open");
        let mirror = json!({
            "type": "message", "id": "m1", "parentId": null, "timestamp": "2026-11-21T04:00:00.000Z",
            "message": {"role": "assistant", "provider": "openclaw", "model": "delivery-mirror", "content": []}
        });
        t.append(&g, &[mirror], Durability::None).expect("append");
        drop(g);
        a.reacquire_after_prompt().await.expect("a benign append is no takeover");
        assert_eq!(a.state(), State::Held);
    });
}

#[test]
fn incident_5_two_lanes_one_file_never_overlap_prompt_windows() {
    // Incident: a heartbeat lane and a channel lane (one through a symlinked
    // path) raced their prompt windows on one transcript; one silently lost
    // writes, and a failure in one left the other waiting on a stale turn.
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real");
    fs::create_dir(&real).expect("mkdir");
    std::os::unix::fs::symlink(&real, dir.path().join("alias")).expect("symlink");
    let heartbeat_path = real.join("s.jsonl");
    let channel_path = dir.path().join("alias/s.jsonl");
    let in_prompt = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    // Both ways a gateway can run two lanes: whole attempts queued (the
    // default), or overlapping attempts whose prompt windows alone queue.
    for overlap in [false, true] {
        rt.block_on(async {
            let lane = |path: PathBuf, name: &'static str, turns: u32| {
                let (in_prompt, overlaps) = (in_prompt.clone(), overlaps.clone());
                tokio::spawn(async move {
                    for i in 0..turns {
                        let a = Attempt::begin_file(&path, lane_opts().overlap(overlap))
                            .await
                            .expect("begin");
                        a.release_for_prompt().await.expect("release");
                        if in_prompt.fetch_add(1, Ordering::SeqCst) != 0 {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await; // the model call
                        in_prompt.fetch_sub(1, Ordering::SeqCst);
                        a.reacquire_after_prompt()
                            .await
                            .expect("the other lane's entries are benign custom entries");
                        a.with_write(|t, g| t.append(g, &[custom(name, i)], Durability::None))
                            .await
                            .expect("write");
                        a.dispose().expect("dispose");
                    }
                })
            };
            let h = lane(heartbeat_path.clone(), "heartbeat", 20);
            let c = lane(channel_path.clone(), "channel", 20);
            h.await.expect("heartbeat lane");
            c.await.expect("channel lane");
        });
    }
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "prompt windows overlapped"
    );
    assert_eq!(entries(&heartbeat_path).len(), 80, "no write lost");

    // A failure in one lane never strands the other: with whole attempts
    // queued, the other lane begins as soon as the failed attempt is gone.
    rt.block_on(async {
        let a = Attempt::begin_file(&heartbeat_path, lane_opts())
            .await
            .expect("begin");
        a.release_for_prompt().await.expect("release");
        let waiting = tokio::spawn({
            let channel_path = channel_path.clone();
            async move {
                Attempt::begin_file(&channel_path, lane_opts())
                    .await
                    .expect("begin")
            }
        });
        let key = a.session().to_owned();
        let owners = sessionlock::turns::PromptTurns::owners();
        let deadline = Instant::now() + Duration::from_secs(5);
        while owners.waiting(&key) == 0 {
            assert!(Instant::now() < deadline, "the channel lane never queued");
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "one attempt per session at a time");
        drop(a); // the heartbeat attempt fails (dropped) inside its prompt window
        let b = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the channel lane began")
            .expect("join");
        b.dispose().expect("dispose");
    });

    // With overlapping attempts, a failure in one lane never strands the
    // other on a stale prompt turn.
    rt.block_on(async {
        let a = Attempt::begin_file(&heartbeat_path, lane_opts().overlap(true))
            .await
            .expect("begin");
        a.release_for_prompt().await.expect("release");
        let b = Attempt::begin_file(&channel_path, lane_opts().overlap(true))
            .await
            .expect("begin");
        let waiting = tokio::spawn(async move {
            b.release_for_prompt().await.expect("release");
            b
        });
        drop(a); // the heartbeat attempt fails (dropped) inside its prompt window
        let b = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the channel lane got its turn")
            .expect("join");

        // A real conflict surfaces as a takeover, never silently.
        append(
            &heartbeat_path,
            json!({"role": "user", "type": "message", "message": {"role": "user"}}),
        );
        let err = b
            .reacquire_after_prompt()
            .await
            .expect_err("foreign user message");
        assert!(
            matches!(
                err,
                Error::Takeover {
                    phase: TakeoverPhase::PromptReacquire,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("session file changed while prompt lock was released: "),
            "{err}"
        );
        assert!(b.is_taken_over());
        assert_eq!(
            b.acquire_for_cleanup().await.expect("cleanup"),
            CleanupLock::NoOp
        );
        let skipped = b
            .with_write(|t, g| t.append(g, &[json!({"cleanup": true})], Durability::None))
            .await;
        assert!(skipped.is_err(), "a taken-over attempt writes nothing");
    });
    assert!(!entries(&heartbeat_path)
        .iter()
        .any(|e| e.get("cleanup").is_some()));
}

// ---------------------------------------------------------------- transcript store

#[test]
fn torn_tail_after_sigkill_mid_append_is_repaired_without_losing_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("torn.jsonl");
    let kid = Kid::spawn("half-line", &[session.to_str().expect("utf8")]);
    kid.expect("HALF", Duration::from_secs(20));
    kid.kill_and_reap();
    let mut r = Reader::open(&session).expect("reader");
    let read: Vec<Value> = r.by_ref().map(|e| e.expect("entry").value).collect();
    assert_eq!(read, vec![json!({"whole": 1})]);
    let torn = r.torn_tail().expect("torn tail reported").clone();
    // The next fenced write repairs it first.
    let g = locks().acquire(&session).expect("reclaims the dead holder");
    let mut t = Transcript::open(&session).expect("open");
    t.append(&g, &[json!({"after": 2})], Durability::Data)
        .expect("append");
    assert_eq!(
        entries(&session),
        vec![json!({"whole": 1}), json!({"after": 2})]
    );
    let side = dir.path().join(format!("torn.jsonl.torn-{}", g.epoch()));
    assert_eq!(
        fs::read(&side).expect("torn bytes kept").len() as u64,
        torn.len
    );
}

#[test]
fn fenced_append_of_a_reclaimed_holder_is_rejected_and_absent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("fenced.jsonl");
    let backend = FileBackend::default();
    let old = locks().acquire(&session).expect("acquire");
    let mut t = Transcript::open(&session).expect("open");
    t.append(&old, &[json!({"n": 1})], Durability::None)
        .expect("append");
    // Another process reclaims it (through the backend, as a reclaimer would).
    use sessionlock::backend::{LeaseRequest, LockBackend, Outcome};
    let key = backend.key(&session).expect("key");
    let seen = common::block_on(backend.inspect(&key))
        .expect("inspect")
        .expect("present");
    let req = LeaseRequest {
        max_hold: Duration::from_secs(60),
        lane: None,
        run_id: None,
        me: sessionlock::identity::SelfIdentity::current(),
        openclaw_compat: false,
    };
    let Outcome::Acquired(_new) =
        common::block_on(backend.reclaim(&key, &seen, &req, None)).expect("reclaim")
    else {
        panic!("reclaim")
    };
    let err = t
        .append(&old, &[json!({"n": 2})], Durability::None)
        .expect_err("fenced");
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert_eq!(entries(&session), vec![json!({"n": 1})]);
}

#[test]
fn write_error_poisons_the_handle_until_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("poison.jsonl");
    let disk = Arc::new(FullDisk {
        armed: AtomicBool::new(false),
    });
    let g = locks().acquire(&session).expect("acquire");
    let mut t = Transcript::open_with(&session, disk.clone()).expect("open");
    t.append(&g, &[json!({"n": 1})], Durability::None)
        .expect("append");
    disk.armed.store(true, Ordering::SeqCst);
    let err = t
        .append(&g, &[json!({"n": 2})], Durability::None)
        .expect_err("ENOSPC");
    assert!(
        matches!(&err, Error::Io { source, .. } if source.raw_os_error() == Some(28)),
        "{err}"
    );
    disk.armed.store(false, Ordering::SeqCst);
    let err = t
        .append(&g, &[json!({"n": 3})], Durability::None)
        .expect_err("poisoned");
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    let mut t = Transcript::open(&session).expect("reopen");
    t.append(&g, &[json!({"n": 4})], Durability::Full)
        .expect("append after reopen");
    assert_eq!(entries(&session), vec![json!({"n": 1}), json!({"n": 4})]);
}

#[test]
fn rewrite_and_truncate_replace_the_file_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("rw.jsonl");
    let g = locks().acquire(&session).expect("acquire");
    let mut t = Transcript::open(&session).expect("open");
    t.append(&g, &[json!(1), json!(2), json!(3)], Durability::None)
        .expect("append");
    t.truncate(&g, 2).expect("truncate");
    assert_eq!(entries(&session), vec![json!(1), json!(2)]);
    t.rewrite(&g, &[json!({"summary": true})]).expect("rewrite");
    t.append(&g, &[json!(4)], Durability::None)
        .expect("append after rewrite");
    assert_eq!(entries(&session), vec![json!({"summary": true}), json!(4)]);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".rewrite-"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn eight_processes_with_random_sigkills_lose_no_acknowledged_entry_and_duplicate_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("crash.jsonl");
    let s = session.to_str().expect("utf8").to_owned();
    let per = 500u32;
    let mut acked: Vec<Vec<u32>> = vec![Vec::new(); 8];
    let mut done = [false; 8];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut kills = 0;
    while done.iter().any(|d| !d) {
        let kids: Vec<(usize, Kid)> = (0..8)
            .filter(|&w| !done[w])
            .map(|w| {
                (
                    w,
                    Kid::spawn("appender", &[&s, &w.to_string(), &per.to_string()]),
                )
            })
            .collect();
        // SIGKILL one of them at a random moment while all of them append.
        if kills < 6 {
            let victim = (rand() % kids.len() as u64) as usize;
            std::thread::sleep(Duration::from_millis(20 + rand() % 80));
            let _ = Command::new("kill")
                .args(["-KILL", &kids[victim].1.pid().to_string()])
                .status();
            kills += 1;
        }
        for (w, kid) in kids {
            // Every line the child printed before it exited or was killed.
            while let Ok(line) = kid.next_line(Duration::from_secs(120)) {
                if line == "DONE" {
                    done[w] = true;
                } else if let Some(seq) = line.strip_prefix("ACK ") {
                    acked[w].push(seq.parse().expect("seq"));
                }
            }
        }
    }
    assert!(kills > 0);
    let mut seen = std::collections::HashMap::<(String, u64), usize>::new();
    for e in entries(&session) {
        let key = (
            e["w"].as_str().expect("w").to_owned(),
            e["seq"].as_u64().expect("seq"),
        );
        *seen.entry(key).or_default() += 1;
    }
    for (w, seqs) in acked.iter().enumerate() {
        for &seq in seqs {
            let n = seen
                .get(&(w.to_string(), u64::from(seq)))
                .copied()
                .unwrap_or(0);
            assert!(n >= 1, "acknowledged entry w={w} seq={seq} lost");
        }
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dupes.is_empty(), "duplicated: {dupes:?}");
}

// ---------------------------------------------------------------- controller

fn lock_file(session: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", session.display()))
}

/// Polls a future once; true if it is still pending.
async fn poll_once<F: std::future::Future + ?Sized>(f: std::pin::Pin<&mut F>) -> bool {
    let mut f = f;
    std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx).is_pending())).await
}

#[test]
fn state_transitions_and_abort_from_every_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("states.jsonl");
    rt().block_on(async {
        let a = Attempt::begin_file(&session, attempt_opts())
            .await
            .expect("begin");
        assert_eq!(a.state(), State::Held);
        assert!(!is_free(&session));
        a.release_for_prompt().await.expect("release");
        assert_eq!(a.state(), State::Released);
        assert!(is_free(&session), "the prompt window never holds the lock");
        a.reacquire_after_prompt().await.expect("reacquire");
        assert_eq!(a.state(), State::Held);
        a.release_for_idle_wait().expect("idle");
        assert_eq!(a.state(), State::Released);
        assert!(is_free(&session));
        a.reacquire_after_prompt()
            .await
            .expect("reacquire after idle wait");
        assert_eq!(
            a.acquire_for_cleanup().await.expect("cleanup"),
            CleanupLock::Held
        );
        assert_eq!(a.state(), State::Cleanup);
        a.reacquire_after_prompt()
            .await
            .expect("a no-op once cleanup started");
        assert_eq!(a.state(), State::Cleanup);
        a.dispose().expect("dispose");
        assert_eq!(a.state(), State::Disposed);
        assert!(is_free(&session));
        a.dispose().expect("dispose"); // idempotent
        a.reacquire_after_prompt()
            .await
            .expect("a no-op after dispose");
        assert_eq!(a.state(), State::Disposed);
        assert!(is_free(&session), "a disposed attempt never reacquires");

        // Abort from each state frees the lock at once.
        for kind in [
            AbortKind::User,
            AbortKind::Timeout,
            AbortKind::Stuck,
            AbortKind::Yield,
        ] {
            let held = Attempt::begin_file(&session, attempt_opts())
                .await
                .expect("begin");
            held.abort(kind);
            assert!(is_free(&session), "{kind:?} from Held");
            drop(held);

            let released = Attempt::begin_file(&session, attempt_opts())
                .await
                .expect("begin");
            released.release_for_prompt().await.expect("release");
            released.abort(kind);
            assert_eq!(released.state(), State::Released);
            assert!(
                !sessionlock::turns::PromptTurns::global().is_held(released.session()),
                "{kind:?} vacates the turn"
            );
            drop(released);

            let cleanup = Attempt::begin_file(&session, attempt_opts())
                .await
                .expect("begin");
            cleanup.acquire_for_cleanup().await.expect("cleanup");
            cleanup.abort(kind);
            assert!(is_free(&session), "{kind:?} from Cleanup");
            drop(cleanup);
        }
        assert!(!lock_file(&session).exists());
    });
}

#[test]
fn reacquire_that_times_out_is_a_takeover_and_cleanup_gets_a_noop_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("timeout.jsonl");
    rt().block_on(async {
        let a = Attempt::begin_file(&session, AttemptOptions::default().lock(opts(100)))
            .await
            .expect("begin");
        a.release_for_prompt().await.expect("release");
        let squatter = locks().acquire(&session).expect("another lane holds it");
        let err = a.reacquire_after_prompt().await.expect_err("times out");
        assert!(
            matches!(
                err,
                Error::Takeover {
                    phase: TakeoverPhase::PromptReacquire,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(a.state(), State::TakenOver);
        drop(squatter);
        assert_eq!(
            a.acquire_for_cleanup().await.expect("cleanup"),
            CleanupLock::NoOp
        );
        assert!(is_free(&session), "a no-op cleanup lock holds nothing");
        let again = a.reacquire_after_prompt().await.expect_err("sticky");
        assert!(matches!(again, Error::Takeover { .. }));
    });
}

#[test]
fn reacquire_resolving_after_dispose_releases_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("late.jsonl");
    rt().block_on(async {
        let a = Attempt::begin_file(&session, attempt_opts())
            .await
            .expect("begin");
        a.release_for_prompt().await.expect("release");
        let other = locks().acquire(&session).expect("another lane");
        let mut reacquire = Box::pin(a.reacquire_after_prompt());
        assert!(
            poll_once(reacquire.as_mut()).await,
            "waits for the other lane"
        );
        a.dispose().expect("dispose");
        drop(other);
        reacquire.await.expect("resolves as a no-op");
        assert_eq!(a.state(), State::Disposed);
        assert!(
            is_free(&session),
            "the late acquisition was released at once"
        );
    });
}

#[test]
fn own_writes_through_with_write_never_trip_the_fence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("own.jsonl");
    rt().block_on(async {
        let a = Attempt::begin_file(&session, attempt_opts())
            .await
            .expect("begin");
        a.with_write(|t, g| t.append(g, &[json!({"n": 0})], Durability::None))
            .await
            .expect("held write");
        a.release_for_prompt().await.expect("release");
        for n in 1..4 {
            // Tool results streamed during the prompt window, each under a short lock.
            a.with_write(|t, g| t.append(g, &[json!({"n": n})], Durability::None))
                .await
                .expect("short-lock write");
            assert!(
                is_free(&session),
                "the short lock is released after the write"
            );
        }
        a.with_write(|t, g| t.rewrite(g, &[json!({"compacted": true})]))
            .await
            .expect("own rewrite");
        a.reacquire_after_prompt()
            .await
            .expect("own writes are no takeover");
        assert_eq!(a.state(), State::Held);
        assert_eq!(entries(&session), vec![json!({"compacted": true})]);
    });
}

/// Changes another lane can make while an attempt is in its prompt window.
fn change(session: &Path, how: &str) {
    let g = locks().acquire(session).expect("acquire");
    let mut t = Transcript::open(session).expect("open");
    match how {
        "benign" => {
            t.append(&g, &[custom("cron", 1)], Durability::None)
                .expect("append");
        }
        "identical rewrite" => {
            let all = entries(session);
            t.rewrite(&g, &all).expect("rewrite");
        }
        "user message" => {
            t.append(&g, &[json!({"type": "message", "id": "u", "parentId": null, "timestamp": "2026-11-21T04:00:00.000Z", "message": {"role": "user", "content": "hi"}})], Durability::None)
                .expect("append");
        }
        "truncation" => t.truncate(&g, 1).expect("truncate"),
        "same-size edit" => {
            let bytes = fs::read(session).expect("read");
            let edited = String::from_utf8(bytes)
                .expect("utf8")
                .replacen("\"i\":0", "\"i\":9", 1);
            g.with_fence(|| fs::write(session, edited))
                .expect("fence")
                .expect("write");
        }
        "new inode" => t
            .rewrite(&g, &[json!({"different": true})])
            .expect("rewrite"),
        other => panic!("unknown change {other}"),
    }
}

#[test]
fn benign_appends_are_accepted_and_each_non_benign_change_is_a_takeover() {
    for (how, takeover) in [
        ("benign", false),
        ("identical rewrite", false),
        ("user message", true),
        ("truncation", true),
        ("same-size edit", true),
        ("new inode", true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("kinds.jsonl");
        rt().block_on(async {
            let a = Attempt::begin_file(&session, lane_opts())
                .await
                .expect("begin");
            a.with_write(|t, g| {
                t.append(
                    g,
                    &[custom("channel", 0), custom("channel", 1)],
                    Durability::None,
                )
            })
            .await
            .expect("write");
            a.release_for_prompt().await.expect("release");
            change(&session, how);
            let r = a.reacquire_after_prompt().await;
            assert_eq!(r.is_err(), takeover, "{how}: {r:?}");
            assert_eq!(a.is_taken_over(), takeover, "{how}");
        });
    }
}

#[test]
fn dropping_futures_at_every_await_leaves_no_lock_and_no_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("drop.jsonl");
    let turns = sessionlock::turns::PromptTurns::global();
    rt().block_on(async {
        // release_for_prompt dropped while waiting for another attempt's turn
        // (overlapping attempts: only their prompt windows are serialized).
        let first = Attempt::begin_file(&session, attempt_opts().overlap(true))
            .await
            .expect("begin");
        first
            .release_for_prompt()
            .await
            .expect("first takes the turn");
        let second = Attempt::begin_file(&session, attempt_opts().overlap(true))
            .await
            .expect("begin");
        {
            let mut waiting = Box::pin(second.release_for_prompt());
            assert!(
                poll_once(waiting.as_mut()).await,
                "waits for the first attempt's turn"
            );
            assert_eq!(turns.waiting(second.session()), 1);
        }
        assert_eq!(
            turns.waiting(second.session()),
            0,
            "the dropped wait left the queue"
        );
        assert!(is_free(&session), "the lock was released before the wait");
        first.dispose().expect("dispose");
        assert!(!turns.is_held(second.session()), "no stale turn");

        // reacquire_after_prompt and with_write dropped while waiting for the lock.
        let other = locks().acquire(&session).expect("another lane");
        {
            let mut reacquire = Box::pin(second.reacquire_after_prompt());
            assert!(poll_once(reacquire.as_mut()).await);
        }
        {
            let mut write =
                Box::pin(second.with_write(|t, g| t.append(g, &[json!(1)], Durability::None)));
            assert!(poll_once(write.as_mut()).await);
        }
        drop(other);
        assert!(is_free(&session), "nothing held after the drops");
        assert_eq!(second.state(), State::Released);
        second.reacquire_after_prompt().await.expect("still usable");
        drop(second);
        assert!(is_free(&session));
        assert!(!turns.is_held(&session.canonicalize().unwrap_or(session.clone())));
    });
}

#[test]
fn stuck_recovery_aborts_the_attempt_and_frees_its_lock() {
    use sessionlock::runs::{AbortHandle, RunInfo, RunRegistry};
    struct AbortThenFinish {
        attempt: Arc<dyn AbortHandle>,
        handle: std::sync::Mutex<Option<sessionlock::runs::RunHandle>>,
    }
    impl AbortHandle for AbortThenFinish {
        fn abort(&self, kind: AbortKind) {
            self.attempt.abort(kind);
            // The run loop notices the abort and finishes the run.
            drop(self.handle.lock().unwrap_or_else(|p| p.into_inner()).take());
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("stuck.jsonl");
    rt().block_on(async {
        let a = Attempt::begin_file(&session, attempt_opts())
            .await
            .expect("begin");
        let registry = RunRegistry::new();
        let aborter = Arc::new(AbortThenFinish {
            attempt: a.abort_handle(),
            handle: std::sync::Mutex::new(None),
        });
        let handle = registry.register(
            RunInfo {
                session_file: a.session().to_owned(),
                session_key: "agent:main".into(),
                run_id: "run-1".into(),
                lane: Some("channel".into()),
            },
            aborter.clone(),
        );
        *aborter.handle.lock().expect("lock") = Some(handle);
        let later = Instant::now() + Duration::from_secs(3600);
        let report = registry
            .recover(later, Duration::from_secs(60), Duration::from_secs(5))
            .await;
        assert_eq!(report.aborted.len(), 1);
        assert_eq!(report.settled, vec!["run-1".to_owned()]);
        assert!(report.unsettled.is_empty());
        assert!(is_free(&session), "the stuck attempt's lock was released");
    });
}

#[test]
fn a_write_refused_by_the_fence_is_a_sticky_takeover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("revoked.jsonl");
    rt().block_on(async {
        let o = AttemptOptions::default().lock(opts(1000).max_hold(Duration::from_millis(100)));
        let a = Attempt::begin_file(&session, o).await.expect("begin");
        // Held past its lease: another lane takes the session over.
        let other = locks()
            .acquire(&session)
            .expect("reclaimed after the lease");
        let err = a
            .with_write(|t, g| t.append(g, &[json!({"late": true})], Durability::None))
            .await
            .expect_err("the lock is gone");
        assert!(
            matches!(
                err,
                Error::Takeover {
                    phase: TakeoverPhase::Write,
                    ..
                }
            ),
            "{err}"
        );
        assert!(a.is_taken_over());
        drop(other);
        assert!(entries(&session).is_empty(), "the refused write is absent");
    });
}

#[test]
fn appended_entries_keep_their_key_order() {
    // A transcript is a record: what a lane appended is what is stored.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("order.jsonl");
    let entry: Value =
        serde_json::from_str(r#"{"type":"message","b":1,"a":{"z":0,"y":1}}"#).expect("json");
    append(&session, entry);
    assert_eq!(
        fs::read_to_string(&session).expect("read"),
        "{\"type\":\"message\",\"b\":1,\"a\":{\"z\":0,\"y\":1}}\n"
    );
}

#[test]
fn appends_follow_the_file_after_another_handles_rewrite() {
    // A rewrite renames a new file over the transcript; a handle opened
    // before it must not append to the orphaned old inode.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("follow.jsonl");
    let mut early = Transcript::open(&session).expect("open");
    {
        let g = locks().acquire(&session).expect("acquire");
        early
            .append(&g, &[json!(1)], Durability::None)
            .expect("append");
        let mut other = Transcript::open(&session).expect("open");
        other
            .rewrite(&g, &[json!({"compacted": true})])
            .expect("rewrite");
    }
    let g = locks().acquire(&session).expect("acquire");
    early
        .append(&g, &[json!(2)], Durability::None)
        .expect("append after rewrite");
    assert_eq!(
        entries(&session),
        vec![json!({"compacted": true}), json!(2)]
    );

    // The same through an attempt whose fence accepted an identical rewrite.
    drop(g);
    rt().block_on(async {
        let a = Attempt::begin_file(&session, attempt_opts())
            .await
            .expect("begin");
        a.release_for_prompt().await.expect("release");
        change(&session, "identical rewrite");
        a.reacquire_after_prompt()
            .await
            .expect("identical rewrite is benign");
        a.with_write(|t, g| t.append(g, &[json!(3)], Durability::None))
            .await
            .expect("write");
    });
    assert_eq!(
        entries(&session).last(),
        Some(&json!(3)),
        "the attempt's write landed"
    );
}

#[test]
fn a_torn_tail_left_later_is_repaired_at_the_next_epochs_first_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("later.jsonl");
    let mut t = Transcript::open(&session).expect("open");
    let g = locks().acquire(&session).expect("acquire");
    t.append(&g, &[json!(1)], Durability::None).expect("append");
    drop(g);
    // Another writer crashes mid-line after this handle checked the tail.
    let mut raw = fs::OpenOptions::new()
        .append(true)
        .open(&session)
        .expect("open raw");
    io::Write::write_all(&mut raw, b"{\"torn\": tr").expect("half line");
    let g = locks().acquire(&session).expect("acquire");
    t.append(&g, &[json!(2)], Durability::None).expect("append");
    let mut r = Reader::open(&session).expect("reader");
    let all: Vec<Value> = r
        .by_ref()
        .map(|e| e.expect("every line is a whole entry").value)
        .collect();
    assert_eq!(all, vec![json!(1), json!(2)]);
    assert!(r.torn_tail().is_none());
}

#[test]
fn abort_during_an_inflight_reacquire_leaves_the_lock_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("abort-inflight.jsonl");
    rt().block_on(async {
        let a = Attempt::begin_file(&session, attempt_opts())
            .await
            .expect("begin");
        a.release_for_prompt().await.expect("release");
        let other = locks().acquire(&session).expect("another lane");
        let mut reacquire = Box::pin(a.reacquire_after_prompt());
        assert!(poll_once(reacquire.as_mut()).await);
        a.abort(AbortKind::User);
        // The abort cancels the acquisition in flight: it resolves at once,
        // while the other lane still holds the lock.
        let err = tokio::time::timeout(Duration::from_secs(5), reacquire)
            .await
            .expect("the abort ends the wait")
            .expect_err("cancelled");
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        drop(other);
        assert_eq!(a.state(), State::Released);
        assert!(
            is_free(&session),
            "the aborted attempt does not hold the lock again"
        );
    });
}

// ------------------------------------------------------- hostile files

#[test]
fn a_repair_that_fails_on_enospc_leaves_no_side_file_per_retry() {
    // Issue 9 item 4: a repair that failed on ENOSPC left an empty
    // `.torn-*` file behind, one more per retry. A failed repair removes
    // what it created; the torn bytes are still in the transcript.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let torn = b"{\"a\":1}\n{\"b\":";
    fs::write(&session, torn).expect("write transcript");
    let disk = Arc::new(FullDisk {
        armed: AtomicBool::new(true),
    });
    let g = locks().acquire(&session).expect("acquire");
    let side_files = || {
        fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("s.jsonl.torn-"))
            .collect::<Vec<_>>()
    };
    for _ in 0..5 {
        let mut t = Transcript::open_with(&session, disk.clone()).expect("open");
        let err = t.repair(&g).expect_err("the disk is full");
        assert!(
            matches!(&err, Error::Io { source, .. } if source.raw_os_error() == Some(28)),
            "{err:?}"
        );
        assert_eq!(side_files(), Vec::<String>::new(), "after {err}");
    }
    assert_eq!(fs::read(&session).expect("read"), torn, "nothing was cut");

    disk.armed.store(false, Ordering::SeqCst);
    let mut t = Transcript::open_with(&session, disk.clone()).expect("open");
    let saved = t.repair(&g).expect("repair").expect("a torn tail");
    assert_eq!(side_files().len(), 1);
    assert_eq!(
        fs::read(saved.saved_to.expect("saved")).expect("read side file"),
        b"{\"b\":"
    );
    assert_eq!(fs::read(&session).expect("read"), b"{\"a\":1}\n");
    g.release().expect("release");
}

#[test]
fn append_raw_writes_the_entries_bytes_with_one_fenced_write() {
    // Issue 9 item 4: entries given as JSON text are validated without
    // building values and land byte for byte (numbers keep their spelling).
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let mut batch = sessionlock::transcript::RawEntries::new();
    batch.push(b" {\"price\":1.50,\"n\":1E+2} ").expect("valid");
    batch.push(b"{\n \"pretty\": [0.10]\n}").expect("valid");
    assert!(batch.push(b"{\"a\":1} 2").is_err(), "two values");
    assert!(batch.push(b"{\"a\":").is_err(), "half a value");
    assert_eq!(batch.len(), 2);
    let g = locks().acquire(&session).expect("acquire");
    let mut t = Transcript::open(&session).expect("open");
    let a = t.append_raw(&g, &batch, Durability::None).expect("append");
    assert_eq!((a.offset, a.len), (0, batch.as_bytes().len() as u64));
    assert_eq!(
        fs::read(&session).expect("read"),
        b"{\"price\":1.50,\"n\":1E+2}\n{  \"pretty\": [0.10] }\n"
    );
    g.release().expect("release");
    assert_eq!(entries(&session).len(), 2);
}

// ------------------------------------------------------- lanes of one gateway

/// One lane's turns on a shared session, the way a gateway runs them: begin,
/// build the context from the transcript, call the model with the lock
/// released, then write the user message and the model's real reply (an
/// assistant message from a real provider: never benign to the OpenClaw
/// classifier). Returns (replies written, replies refused by a takeover).
async fn gateway_lane(
    session: PathBuf,
    lane: &'static str,
    turns: u32,
    overlap: bool,
) -> (u32, u32) {
    let (mut written, mut refused) = (0, 0);
    for i in 0..turns {
        let opts = lane_opts()
            .overlap(overlap)
            .lock(opts(20_000).lane(lane).run_id(format!("{lane}-{i}")));
        let a = Attempt::begin_file(&session, opts).await.expect("begin");
        // The context: what the transcript holds now.
        let context = entries(&session);
        let parent = context
            .last()
            .and_then(|e| e.get("id"))
            .cloned()
            .unwrap_or(Value::Null);
        let prompted = a
            .around_prompt(async {
                // The model call: a few hundred microseconds to a few ms.
                tokio::time::sleep(Duration::from_micros(200 + u64::from(i % 7) * 400)).await;
                format!("{lane} reply {i} to {} entries", context.len())
            })
            .await
            .expect("release for the prompt");
        let user_id = format!("{lane}-u{i}");
        let reply = prompted.output;
        let wrote = match prompted.reacquired {
            Ok(_) => a
                .with_write(|t, g| {
                    t.append(
                        g,
                        &[
                            json!({"type": "message", "id": user_id, "parentId": parent,
                                   "message": {"role": "user", "content": format!("{lane} {i}")}}),
                            json!({"type": "message", "id": format!("{lane}-a{i}"), "parentId": user_id,
                                   "message": {"role": "assistant", "provider": "anthropic",
                                               "model": "claude", "content": reply}}),
                        ],
                        Durability::None,
                    )
                })
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match wrote {
            Ok(()) => written += 1,
            Err(Error::Takeover { .. }) => refused += 1,
            other => panic!("{lane} turn {i}: {other:?}"),
        }
        let _ = a.acquire_for_cleanup().await.expect("cleanup");
        let _ = a.dispose();
    }
    (written, refused)
}

/// A heartbeat and a channel lane of one process, `turns` turns each, at
/// once on one session: each lane's (replies written, replies refused).
fn two_gateway_lanes(session: &Path, turns: u32, overlap: bool) -> ((u32, u32), (u32, u32)) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let h = tokio::spawn(gateway_lane(
            session.to_owned(),
            "heartbeat",
            turns,
            overlap,
        ));
        let c = tokio::spawn(gateway_lane(session.to_owned(), "channel", turns, overlap));
        (h.await.expect("heartbeat"), c.await.expect("channel"))
    })
}

#[test]
fn two_lanes_of_one_gateway_writing_real_replies_lose_none() {
    // Issue 10 item 1: a heartbeat lane and a channel lane of one process on
    // one session, each writing real assistant replies. Before, only prompt
    // windows were serialized: one lane's reply landed while the other's
    // attempt was open, and the other was taken over and its reply refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("lanes.jsonl");
    let ((hw, hr), (cw, cr)) = two_gateway_lanes(&session, 50, false);
    assert_eq!((hr, cr), (0, 0), "replies refused by takeovers");
    assert_eq!((hw, cw), (50, 50), "replies written");
    let all = entries(&session);
    assert_eq!(all.len(), 200, "every user message and reply landed");
    // Every turn built its context from the transcript as it was: its user
    // message answers the entry just before it, so no turn replied to a
    // conversation that had moved on under it.
    for (i, pair) in all.chunks(2).enumerate() {
        let expected = if i == 0 {
            Value::Null
        } else {
            all[2 * i - 1]["id"].clone()
        };
        assert_eq!(
            pair[0]["parentId"], expected,
            "turn {i} wrote on a stale context"
        );
        assert_eq!(pair[1]["parentId"], pair[0]["id"]);
    }
}

#[test]
fn overlapping_lanes_chosen_by_the_gateway_surface_every_conflict() {
    // The gateway may choose overlapping attempts; then a real conflict is a
    // takeover, never a silent loss: every reply is either in the file or
    // reported refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("overlap.jsonl");
    let ((hw, hr), (cw, cr)) = two_gateway_lanes(&session, 20, true);
    assert_eq!(hw + hr, 20);
    assert_eq!(cw + cr, 20);
    let replies = entries(&session)
        .iter()
        .filter(|e| e["message"]["role"] == "assistant")
        .count();
    assert_eq!(
        replies as u32,
        hw + cw,
        "written replies are exactly the acknowledged ones"
    );
}
