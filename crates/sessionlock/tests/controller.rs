//! The attempt controller as a gateway drives it (issue 10): hung model
//! calls, cleanup racing a reacquire, re-entrant calls, the prompt wrapper,
//! foreign edits under the held lock, resync, the owner queue, and the
//! guarantees that were implemented but unguarded.
//!
//! Every wait is bounded, so a regression fails instead of hanging. Child
//! processes are this test binary re-executed in child mode (see
//! `child_entry`).

use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sessionlock::attempt::{Attempt, AttemptOptions, CleanupLock, State};
use sessionlock::runs::{AbortKind, RunPhase, RunRegistry};
use sessionlock::transcript::{Durability, Transcript};
use sessionlock::turns::PromptTurns;
use sessionlock::{Error, TakeoverPhase};

mod common;

use common::sessions::{
    append, append_ignoring_the_lock, attempt_opts, custom, entries, is_free, lane_opts, locks,
    opts, reply, user_message,
};
use common::waits::{bounded, on_thread, poll_now, rt, BOUND};
use common::{role_args, Kid};

/// Begins an attempt (OpenClaw classifier) that writes its first reply.
async fn begun_with_a_reply(session: &Path) -> Attempt {
    let a = bounded("begin", Attempt::begin_file(session, lane_opts()))
        .await
        .expect("begin");
    bounded(
        "own write",
        a.with_write(|t, g| t.append(g, &[reply("a", 0)], Durability::None)),
    )
    .await
    .expect("own write");
    a
}

/// Begins an attempt whose foreign entries `classifier` judges.
async fn begun_judged_by(
    session: &Path,
    classifier: impl sessionlock::classify::ChangeClassifier,
) -> Arc<Attempt> {
    Arc::new(
        bounded(
            "begin",
            Attempt::begin_file(session, attempt_opts().classifier(Arc::new(classifier))),
        )
        .await
        .expect("begin"),
    )
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn is_takeover(e: &Error, want: TakeoverPhase) -> bool {
    matches!(e, Error::Takeover { phase, .. } if *phase == want)
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
        // Hold the session's lock until told to release it.
        "hold" => {
            let session = PathBuf::from(&args[0]);
            let g = locks()
                .acquire_with(&session, &opts(20_000))
                .expect("acquire");
            say("HELD".into());
            let mut line = String::new();
            let _ = io::stdin().lock().read_line(&mut line);
            g.release().expect("release");
            say("RELEASED".into());
        }
        // Try the lock once without waiting.
        "try-now" => {
            let session = PathBuf::from(&args[0]);
            match locks().acquire_with(&session, &opts(0)) {
                Ok(g) => {
                    g.release().expect("release");
                    say("FREE".into());
                }
                Err(e) => say(format!("BUSY {e}")),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Whether another process can take the lock right now.
fn free_for_another_process(session: &Path) -> bool {
    let kid = Kid::spawn("try-now", &[session.to_str().expect("utf8")]);
    let line = kid.expect_any(&["FREE", "BUSY"]);
    line == "FREE"
}

// ---------------------------------------------------- 1. hung model call

#[test]
fn a_hung_model_call_blocks_no_other_lane_beyond_its_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("hung.jsonl");
    let registry = RunRegistry::new();
    let budget = Duration::from_millis(300);
    let slack = Duration::from_secs(2);
    rt().block_on(async {
        let a = bounded(
            "begin a",
            Attempt::begin_file(
                &session,
                AttemptOptions::default()
                    .lock(opts(5_000).lane("lane-a"))
                    .register(&registry, "agent:main", "run-a"),
            ),
        )
        .await
        .expect("begin a");
        let key = a.session().to_owned();
        // Lane A's model call never returns.
        let hung = tokio::spawn(async move {
            let _ = a.around_prompt(std::future::pending::<()>()).await;
        });
        until("a enters its prompt window", || {
            PromptTurns::global().is_held(&key)
        })
        .await;

        // Lane B's attempt on the same session waits its budget, no more,
        // and the error names who it waited for.
        let b_opts = || {
            AttemptOptions::default()
                .lock(opts(5_000).lane("lane-b"))
                .owner_timeout(Some(budget))
        };
        let t0 = Instant::now();
        let err = bounded("begin b", Attempt::begin_file(&session, b_opts()))
            .await
            .expect_err("a owns the session");
        let waited = t0.elapsed();
        assert!(
            waited >= budget - Duration::from_millis(10) && waited < budget + slack,
            "waited {waited:?} for a {budget:?} budget"
        );
        assert!(
            matches!(
                err,
                Error::Busy {
                    timeout_ms: 300,
                    ..
                }
            ),
            "{err}"
        );
        let holder = err.holder().expect("a timeout names its holder");
        assert_eq!(holder.pid, Some(std::process::id()), "{err}");
        assert_eq!(holder.lane.as_deref(), Some("lane-a"), "{err}");
        assert_eq!(holder.run_id.as_deref(), Some("run-a"), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid={}", std::process::id()))
                && msg.contains("lane=lane-a")
                && msg.contains("run=run-a"),
            "{msg}"
        );

        // A plain write of another lane lands at once: the lock is free
        // during the model call.
        let g = locks()
            .acquire_with(&session, &opts(0))
            .expect("the lock is free while a's model call hangs");
        let mut t = Transcript::open(&session).expect("open");
        t.append(&g, &[custom("cron", 1)], Durability::None)
            .expect("append");
        drop(g);
        assert_eq!(entries(&session), vec![custom("cron", 1)]);

        // Stuck recovery aborts a: around_prompt drops the hung model call
        // and returns, so a's task ends and the recovery settles; b begins
        // at once.
        let report = bounded(
            "recover",
            registry.recover(
                Instant::now() + Duration::from_secs(3600),
                Duration::from_secs(60),
                Duration::from_millis(100),
            ),
        )
        .await;
        let aborted: Vec<_> = report
            .aborted
            .iter()
            .map(|r| r.info.run_id.clone())
            .collect();
        assert_eq!(aborted, vec!["run-a".to_owned()]);
        assert_eq!(
            report.settled,
            vec!["run-a".to_owned()],
            "the aborted model call ended: {report:?}"
        );
        assert!(
            !PromptTurns::global().is_held(&key),
            "the abort ends a's prompt window"
        );
        let t0 = Instant::now();
        let b = bounded(
            "begin b after recovery",
            Attempt::begin_file(&session, b_opts()),
        )
        .await
        .expect("b begins once a is aborted");
        assert!(t0.elapsed() < budget, "b waited {:?}", t0.elapsed());
        bounded(
            "b writes",
            b.with_write(|t, g| t.append(g, &[reply("lane-b", 0)], Durability::None)),
        )
        .await
        .expect("b's write");
        b.dispose().expect("dispose b");

        hung.abort();
        let _ = bounded("a's task ends", hung).await;
        assert!(registry.all().is_empty(), "a unregistered when dropped");
        assert!(is_free(&session));
    });
}

#[test]
fn a_hung_model_call_blocks_no_overlapping_prompt_beyond_its_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("hung-overlap.jsonl");
    let budget = Duration::from_millis(300);
    rt().block_on(async {
        let a = bounded(
            "begin a",
            Attempt::begin_file(
                &session,
                AttemptOptions::default()
                    .lock(opts(5_000).lane("lane-a").run_id("run-a"))
                    .overlap(true),
            ),
        )
        .await
        .expect("begin a");
        let key = a.session().to_owned();
        let hung = tokio::spawn(async move {
            let _ = a.around_prompt(std::future::pending::<()>()).await;
        });
        until("a enters its prompt window", || {
            PromptTurns::global().is_held(&key)
        })
        .await;
        let b = bounded(
            "begin b",
            Attempt::begin_file(
                &session,
                AttemptOptions::default()
                    .lock(opts(300).lane("lane-b"))
                    .overlap(true),
            ),
        )
        .await
        .expect("overlapping attempts begin while a's lock is released");
        let t0 = Instant::now();
        let err = bounded("b's release for prompt", b.release_for_prompt())
            .await
            .expect_err("a has the prompt turn");
        let waited = t0.elapsed();
        assert!(
            waited >= budget - Duration::from_millis(10)
                && waited < budget + Duration::from_secs(2),
            "waited {waited:?} for a {budget:?} budget"
        );
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        let holder = err.holder().expect("holder");
        assert_eq!(holder.pid, Some(std::process::id()), "{err}");
        assert_eq!(holder.lane.as_deref(), Some("lane-a"), "{err}");
        assert_eq!(holder.run_id.as_deref(), Some("run-a"), "{err}");
        assert_eq!(
            b.state(),
            State::Released,
            "b stays released, without a turn"
        );
        assert_eq!(PromptTurns::global().waiting(&key), 0, "b left the queue");
        b.dispose().expect("dispose b");
        hung.abort();
        let _ = bounded("a's task ends", hung).await;
        assert!(!PromptTurns::global().is_held(&key));
        assert!(is_free(&session));
    });
}

// ------------------------------------ 2. cleanup during a reacquire in flight

#[test]
fn cleanup_during_an_inflight_reacquire_adopts_its_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("cleanup-race.jsonl");
    rt().block_on(async {
        let a = Arc::new(
            bounded(
                "begin",
                Attempt::begin_file(&session, AttemptOptions::default().lock(opts(20_000))),
            )
            .await
            .expect("begin"),
        );
        bounded("release", a.release_for_prompt())
            .await
            .expect("release");
        // Another process takes the lock during the prompt window.
        let mut kid = Kid::spawn("hold", &[session.to_str().expect("utf8")]);
        kid.expect("HELD", BOUND);
        let reacquire = tokio::spawn({
            let a = a.clone();
            async move { a.reacquire_after_prompt().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let cleanup = tokio::spawn({
            let a = a.clone();
            async move { a.acquire_for_cleanup().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!reacquire.is_finished() && !cleanup.is_finished());
        kid.say("release");
        kid.expect("RELEASED", BOUND);
        let t0 = Instant::now();
        let lock = tokio::time::timeout(Duration::from_secs(5), cleanup)
            .await
            .expect("cleanup adopts the reacquire instead of waiting its own 20 s budget")
            .expect("join")
            .expect("cleanup");
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(lock, CleanupLock::Held);
        let resync = bounded("reacquire", reacquire)
            .await
            .expect("join")
            .expect("the reacquire succeeded");
        assert!(resync.is_empty());
        assert_eq!(a.state(), State::Cleanup);
        bounded(
            "cleanup write",
            a.with_write(|t, g| t.append(g, &[json!({"cleanup": true})], Durability::None)),
        )
        .await
        .expect("cleanup write");
        a.dispose().expect("dispose");
        assert!(is_free(&session), "nothing is left locked after dispose");
        assert!(kid.finish().success());
        assert_eq!(entries(&session), vec![json!({"cleanup": true})]);
    });
}

// ------------------------------------------------------ 3. re-entrancy

#[test]
fn abort_inside_a_write_closure_returns_at_once_and_frees_the_lock_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("reentrant-abort.jsonl");
    on_thread("abort inside with_write", move || {
        rt().block_on(async {
            let a = bounded("begin", Attempt::begin_file(&session, attempt_opts()))
                .await
                .expect("begin");
            let mut abort_took = Duration::MAX;
            let wrote = bounded(
                "with_write",
                a.with_write(|t, g| {
                    let r = t.append(g, &[json!({"n": 1})], Durability::None);
                    let t0 = Instant::now();
                    a.abort(AbortKind::User);
                    abort_took = t0.elapsed();
                    r
                }),
            )
            .await
            .expect("the write returns normally");
            assert!(wrote.len > 0, "the write ran");
            assert!(
                abort_took < Duration::from_secs(1),
                "abort took {abort_took:?}"
            );
            assert_eq!(entries(&session), vec![json!({"n": 1})], "the write landed");
            assert_eq!(a.state(), State::Released);
            assert!(is_free(&session), "released when the write returned");
            a.dispose().expect("dispose");
        });
    });
}

#[test]
fn calls_that_need_the_lent_guard_fail_at_once_inside_a_write_closure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("reentrant-misuse.jsonl");
    on_thread("re-entrant calls", move || {
        rt().block_on(async {
            let a = bounded("begin", Attempt::begin_file(&session, attempt_opts()))
                .await
                .expect("begin");
            let inner = bounded(
                "with_write",
                a.with_write(|_, _| {
                    let nested = poll_now(
                        a.with_write(|t, g| t.append(g, &[json!("nested")], Durability::None)),
                    );
                    let release = poll_now(a.release_for_prompt());
                    let reacquire = poll_now(a.reacquire_after_prompt());
                    let cleanup = poll_now(a.acquire_for_cleanup());
                    let idle = a.release_for_idle_wait();
                    let misuse = |what: &str, r: Poll<sessionlock::Result<()>>| match r {
                        Poll::Ready(Err(Error::Misuse { .. })) => {}
                        Poll::Ready(other) => panic!("{what}: {other:?}, not Misuse"),
                        Poll::Pending => panic!("{what} waits instead of failing at once"),
                    };
                    misuse("with_write", nested.map(|r| r.map(|_| ())));
                    misuse("release_for_prompt", release);
                    misuse("reacquire_after_prompt", reacquire.map(|r| r.map(|_| ())));
                    misuse("acquire_for_cleanup", cleanup.map(|r| r.map(|_| ())));
                    misuse("release_for_idle_wait", Poll::Ready(idle));
                    Ok(a.state())
                }),
            )
            .await
            .expect("the outer write ran");
            assert_eq!(inner, State::Held);
            assert!(entries(&session).is_empty(), "the nested write did not run");
            assert_eq!(a.state(), State::Held, "still holding after the misuse");
            bounded(
                "a later write",
                a.with_write(|t, g| t.append(g, &[json!(2)], Durability::None)),
            )
            .await
            .expect("usable afterwards");
            a.dispose().expect("dispose");
            assert!(is_free(&session));
        });
    });
}

#[test]
fn a_panic_inside_a_write_closure_releases_the_lock() {
    // Spec §1.2: every path out of a holder, a panic included, leaves the
    // lock released; the attempt stays usable for its cleanup and dispose.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("panic.jsonl");
    on_thread("panic inside with_write", move || {
        rt().block_on(async {
            let a = Arc::new(
                bounded("begin", Attempt::begin_file(&session, attempt_opts()))
                    .await
                    .expect("begin"),
            );
            // Under the held lock, and under a short lock while released.
            for released in [false, true] {
                if released {
                    bounded("release", a.release_for_prompt())
                        .await
                        .expect("release");
                    bounded("reacquire", a.reacquire_after_prompt())
                        .await
                        .expect("reacquire");
                    a.release_for_idle_wait().expect("idle");
                }
                let join = bounded(
                    "panicking write",
                    tokio::spawn({
                        let a = a.clone();
                        async move {
                            a.with_write(|t, g| -> sessionlock::Result<()> {
                                t.append(g, &[json!({"before": "panic"})], Durability::None)?;
                                panic!("the write closure panics");
                            })
                            .await
                        }
                    }),
                )
                .await;
                assert!(join.expect_err("panicked").is_panic());
                assert!(
                    is_free(&session),
                    "released={released}: the panic freed the lock"
                );
                assert_eq!(a.state(), State::Released, "released={released}");
            }
            // What the closure appended before it panicked is the attempt's.
            assert_eq!(
                bounded("cleanup", a.acquire_for_cleanup())
                    .await
                    .expect("cleanup"),
                CleanupLock::Held
            );
            a.dispose().expect("dispose");
            assert!(is_free(&session));
        });
    });
}

// ---------------------------------------------------------- 4. around_prompt

#[test]
fn around_prompt_frees_the_lock_during_the_call_and_holds_it_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("around.jsonl");
    rt().block_on(async {
        let a = bounded("begin", Attempt::begin_file(&session, attempt_opts()))
            .await
            .expect("begin");
        let completions = AtomicUsize::new(0);
        let p = bounded(
            "around_prompt",
            a.around_prompt(async {
                let free = is_free(&session);
                let turn = PromptTurns::global().is_held(a.session());
                tokio::task::yield_now().await;
                completions.fetch_add(1, Ordering::SeqCst);
                (free, turn)
            }),
        )
        .await
        .expect("around_prompt");
        assert_eq!(
            p.output,
            (true, true),
            "(lock free, prompt turn held) during the call"
        );
        assert!(p.reacquired.expect("reacquired").is_empty());
        assert_eq!(completions.load(Ordering::SeqCst), 1);
        assert_eq!(a.state(), State::Held);
        assert!(!is_free(&session), "held after the call");
        assert!(!PromptTurns::global().is_held(a.session()), "turn vacated");
        a.dispose().expect("dispose");
    });
}

#[test]
fn around_prompt_reports_a_takeover_beside_the_output_and_runs_the_call_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("around-takeover.jsonl");
    rt().block_on(async {
        let a = bounded("begin", Attempt::begin_file(&session, lane_opts()))
            .await
            .expect("begin");
        let completions = AtomicUsize::new(0);
        let p = bounded(
            "around_prompt",
            a.around_prompt(async {
                append(&session, user_message("foreign"));
                completions.fetch_add(1, Ordering::SeqCst);
                "the model's answer"
            }),
        )
        .await
        .expect("around_prompt");
        assert_eq!(
            p.output, "the model's answer",
            "the output survives the takeover"
        );
        let err = p.reacquired.expect_err("a foreign user message");
        assert!(is_takeover(&err, TakeoverPhase::PromptReacquire), "{err}");
        assert_eq!(
            completions.load(Ordering::SeqCst),
            1,
            "max_retries 0: run once"
        );
        assert!(a.is_taken_over());
        // A later call fails with the sticky takeover and does not run.
        let again = bounded(
            "around_prompt after a takeover",
            a.around_prompt(async {
                completions.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .await
        .expect_err("sticky");
        assert!(
            is_takeover(&again, TakeoverPhase::PromptReacquire),
            "{again}"
        );
        assert_eq!(completions.load(Ordering::SeqCst), 1);
        assert!(is_free(&session));
        assert!(a.dispose().is_ok());
    });
}

#[test]
fn around_prompt_retry_after_a_failed_reacquire_does_not_release_twice_and_takes_the_turn() {
    // A reacquire that fails without a takeover: during the model call a
    // directory appears where the lock file goes (`InvalidPath`, nothing is
    // acquired). The gateway clears it and retries the prompt.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("around-retry.jsonl");
    let lock_path = dir.path().join("around-retry.jsonl.lock");
    rt().block_on(async {
        let a = bounded(
            "begin",
            Attempt::begin_file(
                &session,
                AttemptOptions::default().lock(opts(5_000).lane("lane-a")),
            ),
        )
        .await
        .expect("begin");
        let key = a.session().to_owned();
        let completions = AtomicUsize::new(0);
        let p = bounded(
            "first around_prompt",
            a.around_prompt(async {
                fs::create_dir(&lock_path).expect("a directory at the lock path");
                completions.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .await
        .expect("around_prompt");
        let err = p.reacquired.expect_err("no lock can be taken");
        assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
        assert_eq!(a.state(), State::Released, "no takeover: nothing changed");
        assert!(!PromptTurns::global().is_held(&key));
        fs::remove_dir(&lock_path).expect("cleared");

        // The retry: the lock is already released, so nothing is released
        // again (another lane's lock taken during the call stays intact),
        // and the turn is taken again.
        let p = bounded(
            "retried around_prompt",
            a.around_prompt(async {
                let g = locks()
                    .acquire_with(&session, &opts(0))
                    .expect("the lock is free during the retry");
                g.check()
                    .expect("the other lane's lock is intact during the retry");
                let turn = PromptTurns::global().holder(&key);
                g.release().expect("the other lane releases its own lock");
                completions.fetch_add(1, Ordering::SeqCst);
                turn
            }),
        )
        .await
        .expect("retry");
        let turn = p.output.expect("the retry takes the prompt turn");
        assert_eq!(turn.lane.as_deref(), Some("lane-a"));
        p.reacquired.expect("the retry's reacquire");
        assert_eq!(completions.load(Ordering::SeqCst), 2, "each call ran once");
        assert_eq!(a.state(), State::Held);
        assert!(!PromptTurns::global().is_held(&key));
        a.dispose().expect("dispose");
        assert!(is_free(&session));
    });
}

#[test]
fn after_an_abort_only_cleanup_and_dispose_go_on() {
    // A user stop outside any wait: the attempt does not carry on with its
    // prompt windows or writes; its cleanup still runs and may write.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("abort-sticky.jsonl");
    rt().block_on(async {
        let a = begun_with_a_reply(&session).await;
        a.abort(AbortKind::User);
        assert_eq!(a.aborted(), Some(AbortKind::User));
        let ran = AtomicUsize::new(0);
        let err = bounded(
            "around_prompt after abort",
            a.around_prompt(async { ran.fetch_add(1, Ordering::SeqCst) }),
        )
        .await
        .expect_err("aborted");
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the model call did not run");
        for r in [
            bounded("release", a.release_for_prompt()).await.err(),
            bounded("reacquire", a.reacquire_after_prompt()).await.err(),
            bounded(
                "write",
                a.with_write(|t, g| t.append(g, &[reply("a", 1)], Durability::None)),
            )
            .await
            .err(),
        ] {
            assert!(matches!(r, Some(Error::Cancelled { .. })), "{r:?}");
        }
        assert_eq!(a.state(), State::Released);
        assert!(is_free(&session), "nothing reacquired after the abort");
        assert_eq!(
            bounded("cleanup", a.acquire_for_cleanup())
                .await
                .expect("cleanup"),
            CleanupLock::Held
        );
        bounded(
            "cleanup write",
            a.with_write(|t, g| t.append(g, &[custom("aborted", 0)], Durability::None)),
        )
        .await
        .expect("cleanup writes");
        a.dispose().expect("dispose");
        assert_eq!(entries(&session), vec![reply("a", 0), custom("aborted", 0)]);
        // After dispose, a write is an error, never a silent skip.
        let err = bounded(
            "write after dispose",
            a.with_write(|t, g| t.append(g, &[reply("a", 2)], Durability::None)),
        )
        .await
        .expect_err("disposed");
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    });
}

#[test]
fn dropping_around_prompt_mid_call_vacates_the_prompt_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("around-drop.jsonl");
    rt().block_on(async {
        let o = || attempt_opts().overlap(true);
        let a = bounded("begin a", Attempt::begin_file(&session, o()))
            .await
            .expect("begin a");
        let key = a.session().to_owned();
        let dropped = tokio::time::timeout(
            Duration::from_millis(100),
            a.around_prompt(std::future::pending::<()>()),
        )
        .await;
        assert!(
            dropped.is_err(),
            "the call never returns; the wrapper is dropped"
        );
        assert!(
            !PromptTurns::global().is_held(&key),
            "the drop vacated the turn"
        );
        assert_eq!(a.state(), State::Released);
        // Another overlapping attempt gets the turn at once.
        let b = bounded(
            "begin b",
            Attempt::begin_file(
                &session,
                AttemptOptions::default().lock(opts(300)).overlap(true),
            ),
        )
        .await
        .expect("begin b");
        bounded("b's release", b.release_for_prompt())
            .await
            .expect("b takes the turn at once");
        bounded("b's reacquire", b.reacquire_after_prompt())
            .await
            .expect("b reacquires");
        b.dispose().expect("dispose b");
        bounded("a's reacquire", a.reacquire_after_prompt())
            .await
            .expect("a is still usable");
        a.dispose().expect("dispose a");
        assert!(is_free(&session));
    });
}

// ------------------------------------------ 5. foreign edits under the lock

#[test]
fn a_foreign_edit_under_the_held_lock_is_caught_before_the_next_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("held-write.jsonl");
    rt().block_on(async {
        let a = begun_with_a_reply(&session).await;
        append_ignoring_the_lock(&session, &user_message("rogue"));
        let ran = AtomicUsize::new(0);
        let err = bounded(
            "write after the edit",
            a.with_write(|t, g| {
                ran.fetch_add(1, Ordering::SeqCst);
                t.append(g, &[reply("a", 1)], Durability::None)
            }),
        )
        .await
        .expect_err("the file changed under the held lock");
        assert!(is_takeover(&err, TakeoverPhase::Write), "{err}");
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the closure did not run");
        assert_eq!(
            entries(&session),
            vec![reply("a", 0), user_message("rogue")]
        );
        assert!(a.is_taken_over());
        assert!(is_free(&session), "the takeover released the lock");
        assert!(a.dispose().is_ok());
    });
}

#[test]
fn a_foreign_edit_under_the_held_lock_is_caught_at_cleanup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("held-cleanup.jsonl");
    rt().block_on(async {
        let a = begun_with_a_reply(&session).await;
        append_ignoring_the_lock(&session, &user_message("rogue"));
        assert_eq!(
            bounded("cleanup", a.acquire_for_cleanup())
                .await
                .expect("cleanup"),
            CleanupLock::NoOp
        );
        assert!(a.is_taken_over());
        let skipped = bounded(
            "cleanup write",
            a.with_write(|t, g| t.append(g, &[json!({"cleanup": true})], Durability::None)),
        )
        .await;
        assert!(skipped.is_err(), "nothing is written after the takeover");
        assert_eq!(
            entries(&session),
            vec![reply("a", 0), user_message("rogue")]
        );
        assert!(is_free(&session));
        assert!(a.dispose().is_ok());
    });
}

#[test]
fn a_foreign_edit_under_the_held_lock_is_caught_at_dispose() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("held-dispose.jsonl");
    rt().block_on(async {
        let a = bounded("begin", Attempt::begin_file(&session, lane_opts()))
            .await
            .expect("begin");
        assert_eq!(
            bounded("cleanup", a.acquire_for_cleanup())
                .await
                .expect("cleanup"),
            CleanupLock::Held
        );
        bounded(
            "cleanup write",
            a.with_write(|t, g| t.append(g, &[reply("a", 0)], Durability::None)),
        )
        .await
        .expect("own write");
        // Same size, new bytes: an in-place edit after the last write.
        let edited = fs::read_to_string(&session)
            .expect("read")
            .replace("\"a-reply-0\"", "\"x-reply-0\"");
        fs::write(&session, edited).expect("edit in place");
        let err = a
            .dispose()
            .expect_err("the file changed after the last write");
        assert!(is_takeover(&err, TakeoverPhase::Dispose), "{err}");
        assert_eq!(a.state(), State::TakenOver);
        assert!(is_free(&session), "released all the same");
        assert!(a.dispose().is_ok(), "idempotent");
    });
}

#[test]
fn the_attempts_own_writes_under_the_held_lock_never_look_foreign() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("held-own.jsonl");
    rt().block_on(async {
        let a = bounded("begin", Attempt::begin_file(&session, lane_opts()))
            .await
            .expect("begin");
        for i in 0..50 {
            bounded(
                "write",
                a.with_write(|t, g| t.append(g, &[reply("a", i)], Durability::None)),
            )
            .await
            .expect("own write");
        }
        bounded("rewrite", a.with_write(|t, g| t.truncate(g, 40)))
            .await
            .expect("own truncation");
        assert_eq!(
            bounded("cleanup", a.acquire_for_cleanup())
                .await
                .expect("cleanup"),
            CleanupLock::Held
        );
        bounded(
            "cleanup write",
            a.with_write(|t, g| t.append(g, &[reply("a", 99)], Durability::None)),
        )
        .await
        .expect("cleanup write");
        a.dispose().expect("no takeover at dispose");
        assert_eq!(entries(&session).len(), 41);
        assert!(is_free(&session));
    });
}

// ------------------------------------------------------------- 6. resync

#[test]
fn benign_foreign_entries_of_the_prompt_window_are_handed_back_once() {
    // Fails until `fence::Change::Benign` carries the accepted entries
    // (the controller hands back an empty `Resync` until then).
    use sessionlock::attempt::Resync;
    let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("resync.jsonl");
    let seen: Arc<Mutex<Vec<Resync>>> = Arc::default();
    rt().block_on(async {
        let o = lane_opts().on_resync({
            let seen = seen.clone();
            move |r: &Resync| seen.lock().expect("mutex").push(r.clone())
        });
        let a = bounded("begin", Attempt::begin_file(&session, o))
            .await
            .expect("begin");
        bounded(
            "own write",
            a.with_write(|t, g| t.append(g, &[reply("a", 0)], Durability::None)),
        )
        .await
        .expect("own write");

        // Through reacquire_after_prompt.
        bounded("release", a.release_for_prompt())
            .await
            .expect("release");
        let before = size(&session);
        append(&session, custom("cron", 1));
        append(&session, custom("cron", 2));
        let after = size(&session);
        let resync = bounded("reacquire", a.reacquire_after_prompt())
            .await
            .expect("benign entries are no takeover");
        let want = Resync {
            entries: vec![custom("cron", 1), custom("cron", 2)],
            range: before..after,
        };
        assert_eq!(resync, want);
        assert_eq!(
            *seen.lock().expect("mutex"),
            vec![want.clone()],
            "the hook saw it once"
        );

        // Through around_prompt.
        let before = size(&session);
        let p = bounded(
            "around_prompt",
            a.around_prompt(async { append(&session, custom("mirror", 3)) }),
        )
        .await
        .expect("around_prompt");
        let want2 = Resync {
            entries: vec![custom("mirror", 3)],
            range: before..size(&session),
        };
        assert_eq!(p.reacquired.expect("reacquired"), want2);

        // Nothing foreign: an empty resync, and the hook is not called.
        bounded("release", a.release_for_prompt())
            .await
            .expect("release");
        let nothing = bounded("reacquire", a.reacquire_after_prompt())
            .await
            .expect("reacquire");
        assert!(nothing.is_empty());
        assert_eq!(*seen.lock().expect("mutex"), vec![want, want2]);
        a.dispose().expect("dispose");
    });
}

// ------------------------------------------- 7. implemented but unguarded

#[test]
fn a_takeover_frees_the_lock_at_once_before_dispose() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("takeover-frees.jsonl");
    rt().block_on(async {
        let a = bounded("begin", Attempt::begin_file(&session, lane_opts()))
            .await
            .expect("begin");
        bounded("release", a.release_for_prompt())
            .await
            .expect("release");
        append(&session, user_message("foreign"));
        let err = bounded("reacquire", a.reacquire_after_prompt())
            .await
            .expect_err("takeover");
        assert!(is_takeover(&err, TakeoverPhase::PromptReacquire), "{err}");
        // Not yet disposed: another process takes the lock without waiting.
        assert!(
            free_for_another_process(&session),
            "the takeover kept the lock"
        );
        assert_eq!(a.state(), State::TakenOver);
        assert!(a.dispose().is_ok());
    });
}

#[test]
fn the_fence_stays_armed_after_an_abort_and_through_cleanup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("abort-fence.jsonl");
    rt().block_on(async {
        let a = begun_with_a_reply(&session).await;
        a.abort(AbortKind::User);
        assert_eq!(a.state(), State::Released);
        append(&session, user_message("next turn"));
        assert_eq!(
            bounded("cleanup", a.acquire_for_cleanup())
                .await
                .expect("cleanup"),
            CleanupLock::NoOp,
            "the foreign entry appended after the abort is caught"
        );
        assert!(a.is_taken_over());
        let skipped = bounded(
            "cleanup write",
            a.with_write(|t, g| t.append(g, &[json!({"cleanup": true})], Durability::None)),
        )
        .await;
        assert!(skipped.is_err());
        assert_eq!(
            entries(&session),
            vec![reply("a", 0), user_message("next turn")]
        );
        assert!(a.dispose().is_ok());
        assert!(is_free(&session));
    });
}

#[test]
fn a_write_that_fails_after_appending_still_refreshes_the_fence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("write-fails.jsonl");
    let other = dir.path().join("write-fails-held.jsonl");
    let failing = |t: &mut Transcript, g: &sessionlock::Guard, i: u32| {
        t.append(g, &[reply("a", i)], Durability::None)?;
        Err::<(), _>(Error::Io {
            op: "finish the write",
            path: PathBuf::from("after-append"),
            source: io::Error::other("the closure fails after appending"),
        })
    };
    rt().block_on(async {
        let a = bounded("begin", Attempt::begin_file(&session, attempt_opts()))
            .await
            .expect("begin");
        // Under the held lock: the next check under it (before the next
        // write) takes the failed write's entry for the attempt's own.
        let err = bounded("failing write", a.with_write(|t, g| failing(t, g, 0)))
            .await
            .expect_err("the closure's error");
        assert!(matches!(err, Error::Io { .. }), "{err}");
        bounded(
            "next write",
            a.with_write(|t, g| t.append(g, &[reply("a", 1)], Durability::None)),
        )
        .await
        .expect("the failed write's entry is the attempt's own");
        // ...and the view it leaves still catches what a program that
        // ignores the lock writes after it.
        let held = bounded("begin", Attempt::begin_file(&other, attempt_opts()))
            .await
            .expect("begin");
        let err = bounded("failing write", held.with_write(|t, g| failing(t, g, 0)))
            .await
            .expect_err("the closure's error");
        assert!(matches!(err, Error::Io { .. }), "{err}");
        append_ignoring_the_lock(&other, &user_message("rogue"));
        let err = bounded(
            "write after the edit",
            held.with_write(|t, g| t.append(g, &[reply("a", 1)], Durability::None)),
        )
        .await
        .expect_err("the edit after the failed write");
        assert!(is_takeover(&err, TakeoverPhase::Write), "{err}");
        assert_eq!(entries(&other), vec![reply("a", 0), user_message("rogue")]);
        assert!(held.dispose().is_ok());
        // Under a short lock while released: the reacquire takes it for the
        // attempt's own...
        a.release_for_idle_wait().expect("idle");
        let err = bounded("failing short write", a.with_write(|t, g| failing(t, g, 2)))
            .await
            .expect_err("the closure's error");
        assert!(matches!(err, Error::Io { .. }), "{err}");
        bounded("reacquire", a.reacquire_after_prompt())
            .await
            .expect("the failed short write's entry is the attempt's own");
        // ...and the fence it leaves still catches what others write after it.
        a.release_for_idle_wait().expect("idle");
        let err = bounded("failing short write", a.with_write(|t, g| failing(t, g, 3)))
            .await
            .expect_err("the closure's error");
        assert!(matches!(err, Error::Io { .. }), "{err}");
        append(&session, user_message("after the failed write"));
        let err = bounded("reacquire", a.reacquire_after_prompt())
            .await
            .expect_err("the foreign entry after the failed write");
        assert!(is_takeover(&err, TakeoverPhase::PromptReacquire), "{err}");
        assert_eq!(
            entries(&session),
            vec![
                reply("a", 0),
                reply("a", 1),
                reply("a", 2),
                reply("a", 3),
                user_message("after the failed write")
            ]
        );
        assert!(a.dispose().is_ok());
        assert!(is_free(&session));
    });
}

#[test]
fn an_idle_waiter_never_blocks_prompt_turn_waiters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("idle.jsonl");
    rt().block_on(async {
        let a = bounded(
            "begin a",
            Attempt::begin_file(&session, attempt_opts().overlap(true)),
        )
        .await
        .expect("begin a");
        let key = a.session().to_owned();
        a.release_for_idle_wait().expect("idle wait");
        assert!(
            !PromptTurns::global().is_held(&key),
            "an idle wait takes no turn"
        );
        let b = bounded(
            "begin b",
            Attempt::begin_file(
                &session,
                AttemptOptions::default().lock(opts(300)).overlap(true),
            ),
        )
        .await
        .expect("begin b");
        let t0 = Instant::now();
        bounded("b's release for prompt", b.release_for_prompt())
            .await
            .expect("b takes the turn while a waits idle");
        assert!(t0.elapsed() < Duration::from_millis(300));
        bounded("b's reacquire", b.reacquire_after_prompt())
            .await
            .expect("reacquire");
        b.dispose().expect("dispose b");
        a.dispose().expect("dispose a");
    });
}

// ---------------------------------------------------------- 8. owner queue

#[test]
fn attempts_on_one_session_begin_in_fifo_order_and_queued_runs_are_never_stuck() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("owners.jsonl");
    let registry = RunRegistry::new();
    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    rt().block_on(async {
        let o = |run: &str| {
            AttemptOptions::default()
                .lock(opts(10_000).lane(run))
                .register(&registry, "agent:main", run)
        };
        let phase = |run: &str| registry.by_run_id(run).map(|r| r.phase);
        let a = bounded("begin a", Attempt::begin_file(&session, o("run-a")))
            .await
            .expect("begin a");
        let key = a.session().to_owned();
        assert_eq!(phase("run-a"), Some(RunPhase::Running));
        let queued = |name: &'static str, run: &'static str| {
            let (session, order, o) = (session.clone(), order.clone(), o(run));
            tokio::spawn(async move {
                let x = Attempt::begin_file(&session, o).await.expect("begin");
                order.lock().expect("mutex").push(name);
                // Each writes a real reply, as a lane would.
                x.with_write(|t, g| t.append(g, &[reply(name, 0)], Durability::None))
                    .await
                    .expect("write");
                x
            })
        };
        let b = queued("b", "run-b");
        until("b is queued", || phase("run-b") == Some(RunPhase::Queued)).await;
        let c = queued("c", "run-c");
        until("c is queued", || phase("run-c") == Some(RunPhase::Queued)).await;

        // Queued runs make no progress by design: never stuck.
        let later = Instant::now() + Duration::from_secs(3600);
        let stuck: Vec<_> = registry
            .stuck(later, Duration::ZERO)
            .into_iter()
            .map(|r| r.info.run_id)
            .collect();
        assert_eq!(stuck, vec!["run-a".to_owned()]);
        assert_eq!(PromptTurns::owners().waiting(&key), 2, "a owns the session");
        assert!(!b.is_finished() && !c.is_finished(), "a owns the session");

        a.dispose().expect("dispose a");
        let b = bounded("b begins", b).await.expect("join");
        assert_eq!(phase("run-b"), Some(RunPhase::Running));
        assert_eq!(
            PromptTurns::owners().waiting(&key),
            1,
            "b owns the session now"
        );
        assert!(!c.is_finished(), "b owns the session now");
        assert_eq!(phase("run-c"), Some(RunPhase::Queued));
        b.dispose().expect("dispose b");
        let c = bounded("c begins", c).await.expect("join");
        c.dispose().expect("dispose c");
        assert_eq!(*order.lock().expect("mutex"), vec!["b", "c"]);
        assert_eq!(entries(&session), vec![reply("b", 0), reply("c", 0)]);
        assert!(registry.all().is_empty());
    });
}

#[test]
fn a_queued_begin_that_gives_up_leaves_the_queue_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("owners-drop.jsonl");
    let registry = RunRegistry::new();
    rt().block_on(async {
        let o = |run: &str| {
            AttemptOptions::default()
                .lock(opts(10_000).lane(run))
                .register(&registry, "agent:main", run)
        };
        let phase = |run: &str| registry.by_run_id(run).map(|r| r.phase);
        let a = bounded("begin a", Attempt::begin_file(&session, o("run-a")))
            .await
            .expect("begin a");
        let b = tokio::spawn({
            let (session, o) = (session.clone(), o("run-b"));
            async move { Attempt::begin_file(&session, o).await }
        });
        until("b is queued", || phase("run-b") == Some(RunPhase::Queued)).await;
        let c = tokio::spawn({
            let (session, o) = (session.clone(), o("run-c"));
            async move { Attempt::begin_file(&session, o).await }
        });
        until("c is queued", || phase("run-c") == Some(RunPhase::Queued)).await;
        // The gateway gives up on b while it waits.
        b.abort();
        assert!(bounded("b ends", b)
            .await
            .expect_err("aborted")
            .is_cancelled());
        assert_eq!(phase("run-b"), None, "b unregistered");
        a.dispose().expect("dispose a");
        let c = bounded("c begins when a is gone", c)
            .await
            .expect("join")
            .expect("begin c");
        c.dispose().expect("dispose c");
        assert!(registry.all().is_empty());
        assert!(!PromptTurns::owners().is_held(&session.canonicalize().expect("canonical")));
    });
}

#[test]
fn aborting_the_owner_hands_the_session_to_the_next_attempt_before_its_cleanup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("owners-abort.jsonl");
    rt().block_on(async {
        let a = bounded("begin a", Attempt::begin_file(&session, lane_opts()))
            .await
            .expect("begin a");
        bounded(
            "a's reply",
            a.with_write(|t, g| t.append(g, &[reply("a", 0)], Durability::None)),
        )
        .await
        .expect("write");
        let key = a.session().to_owned();
        let b = tokio::spawn({
            let session = session.clone();
            async move { Attempt::begin_file(&session, lane_opts()).await }
        });
        until("b waits for the session", || {
            PromptTurns::owners().waiting(&key) == 1
        })
        .await;
        a.abort(AbortKind::User);
        let t0 = Instant::now();
        let b = bounded("b begins after the abort", b)
            .await
            .expect("join")
            .expect("begin b");
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t0.elapsed()
        );
        assert_eq!(a.state(), State::Released, "a has not cleaned up yet");
        // b starts from a transcript that holds a's reply, and writes its own.
        assert_eq!(entries(&session), vec![reply("a", 0)]);
        bounded(
            "b's reply",
            b.with_write(|t, g| t.append(g, &[reply("b", 0)], Durability::None)),
        )
        .await
        .expect("write");
        b.dispose().expect("dispose b");
        // a's cleanup, checked by its fence, never clobbers b's reply.
        assert_eq!(
            bounded("a's cleanup", a.acquire_for_cleanup())
                .await
                .expect("cleanup"),
            CleanupLock::NoOp
        );
        assert!(a.dispose().is_ok());
        assert_eq!(entries(&session), vec![reply("a", 0), reply("b", 0)]);
        assert!(is_free(&session));
    });
}

#[test]
fn a_prompt_after_an_idle_wait_still_takes_the_prompt_turn() {
    // Spec §9.1: only one attempt of a process is inside a prompt window of
    // one file at a time. An attempt that released for an idle wait (no
    // turn) and then calls the model must queue for the turn like any other.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("idle-then-prompt.jsonl");
    rt().block_on(async {
        let o = || AttemptOptions::default().lock(opts(300)).overlap(true);
        let a = bounded("begin a", Attempt::begin_file(&session, o()))
            .await
            .expect("begin a");
        let key = a.session().to_owned();
        a.release_for_idle_wait().expect("idle wait");
        let b = bounded("begin b", Attempt::begin_file(&session, o()))
            .await
            .expect("begin b");
        bounded("b's release", b.release_for_prompt())
            .await
            .expect("b takes the turn");
        // b is in its model call; a now calls the model too.
        let r = bounded("a's release for prompt", a.release_for_prompt()).await;
        assert!(
            matches!(r, Err(Error::Busy { .. })),
            "a entered a prompt window while b was in one: {r:?}"
        );
        bounded("b's reacquire", b.reacquire_after_prompt())
            .await
            .expect("b reacquires");
        b.dispose().expect("dispose b");
        bounded("a's release for prompt", a.release_for_prompt())
            .await
            .expect("a takes the turn once b is done");
        assert!(
            PromptTurns::global().is_held(&key),
            "a is in its prompt window"
        );
        bounded("a's reacquire", a.reacquire_after_prompt())
            .await
            .expect("a reacquires");
        a.dispose().expect("dispose a");
    });
}

#[test]
fn an_aborted_owners_cleanup_never_costs_the_next_attempt_its_reply() {
    // Issue 10 item 1: two lanes never lose a reply without the gateway
    // choosing so. The gateway aborts lane a (a user stop) and lane b's
    // attempt takes the session; a's cleanup then persists what a had (a
    // partial reply). Whatever the design (b waits for a's cleanup, or a's
    // cleanup writes nothing once b owns the session), b's reply must land.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("owners-abort-cleanup.jsonl");
    rt().block_on(async {
        let a = Arc::new(
            bounded("begin a", Attempt::begin_file(&session, lane_opts()))
                .await
                .expect("begin a"),
        );
        let key = a.session().to_owned();
        let lane_b = tokio::spawn({
            let session = session.clone();
            async move {
                let b = Attempt::begin_file(&session, lane_opts())
                    .await
                    .expect("begin b");
                let p = b
                    .around_prompt(tokio::time::sleep(Duration::from_millis(200)))
                    .await
                    .expect("b's prompt");
                let reacquired = p.reacquired.map(|_| ());
                let wrote = b
                    .with_write(|t, g| t.append(g, &[reply("b", 0)], Durability::None))
                    .await
                    .map(|_| ());
                let _ = b.dispose();
                (reacquired, wrote)
            }
        });
        until("b waits for the session", || {
            PromptTurns::owners().waiting(&key) == 1
        })
        .await;
        bounded("a's release", a.release_for_prompt())
            .await
            .expect("release");
        a.abort(AbortKind::User);
        // a's cleanup, once b (which took the session at the abort) is in
        // its model call.
        until("b is in its model call", || {
            PromptTurns::global().is_held(&key)
        })
        .await;
        if bounded("a's cleanup", a.acquire_for_cleanup())
            .await
            .expect("cleanup")
            == CleanupLock::Held
        {
            bounded(
                "a's partial reply",
                a.with_write(|t, g| t.append(g, &[reply("a", 0)], Durability::None)),
            )
            .await
            .expect("a's cleanup write");
        }
        let _ = a.dispose();
        let (reacquired, wrote) = bounded("lane b", lane_b).await.expect("join");
        reacquired.expect("b's reacquire after its model call");
        wrote.expect("b's reply");
        assert!(
            entries(&session).contains(&reply("b", 0)),
            "b's reply landed"
        );
        assert!(is_free(&session));
    });
}

#[test]
fn a_queued_begin_aborted_through_the_registry_is_cancelled_at_once() {
    // A gateway stops a run that is still waiting for its session (the
    // user gave up): its begin ends at once with Cancelled, it leaves the
    // registry and the queue, and the attempt behind it is not held up.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("queued-abort.jsonl");
    let registry = RunRegistry::new();
    rt().block_on(async {
        let reg = |run: &str| attempt_opts().register(&registry, "agent:main", run);
        let a = bounded("begin a", Attempt::begin_file(&session, reg("run-a")))
            .await
            .expect("begin a");
        let key = a.session().to_owned();
        let b = tokio::spawn({
            let (session, opts) = (session.clone(), reg("run-b"));
            async move { Attempt::begin_file(&session, opts).await }
        });
        until("b queues", || PromptTurns::owners().waiting(&key) == 1).await;
        let c = tokio::spawn({
            let (session, opts) = (session.clone(), reg("run-c"));
            async move { Attempt::begin_file(&session, opts).await }
        });
        until("c queues", || PromptTurns::owners().waiting(&key) == 2).await;
        let queued = registry.by_run_id("run-b").expect("b registered");
        assert_eq!(queued.phase, RunPhase::Queued);

        let t0 = Instant::now();
        assert_eq!(registry.abort("run-b", AbortKind::User), 1);
        let err = bounded("b's begin", b)
            .await
            .expect("join")
            .expect_err("aborted while queued");
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(registry.by_run_id("run-b").is_none(), "b unregistered");
        assert_eq!(PromptTurns::owners().waiting(&key), 1, "b left the queue");

        // c begins as soon as a is done.
        a.dispose().expect("dispose a");
        let c = bounded("c's begin", c)
            .await
            .expect("join")
            .expect("c begins after a");
        assert_eq!(
            registry.by_run_id("run-c").map(|r| r.phase),
            Some(RunPhase::Running)
        );
        c.dispose().expect("dispose c");
        assert!(registry.all().is_empty());
        assert!(is_free(&session));
    });
}

#[test]
fn abort_and_the_getters_do_not_wait_for_a_check_of_the_transcript() {
    // A check of what other lanes appended (the classifier over every new
    // entry; the whole file after a change of metadata alone) can take a
    // while. It runs outside the attempt's state lock, so a user stop from
    // another thread takes effect without waiting for it.
    struct Slow(Arc<std::sync::atomic::AtomicBool>);
    impl sessionlock::classify::ChangeClassifier for Slow {
        fn is_benign(&self, _: &Value) -> bool {
            self.0.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1000));
            true
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("slow-check.jsonl");
    let checking = Arc::new(std::sync::atomic::AtomicBool::new(false));
    rt().block_on(async {
        let a = Arc::new(
            bounded(
                "begin",
                Attempt::begin_file(
                    &session,
                    attempt_opts().classifier(Arc::new(Slow(checking.clone()))),
                ),
            )
            .await
            .expect("begin"),
        );
        bounded("release", a.release_for_prompt())
            .await
            .expect("release");
        append(&session, custom("cron", 0));
        let reacquire = tokio::spawn({
            let a = a.clone();
            async move { a.reacquire_after_prompt().await }
        });
        until("the check runs", || checking.load(Ordering::SeqCst)).await;
        let t0 = Instant::now();
        a.abort(AbortKind::User);
        assert_eq!(a.aborted(), Some(AbortKind::User));
        let _ = a.state();
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(300),
            "abort and state() waited {took:?} for the check"
        );
        let err = bounded("reacquire", reacquire)
            .await
            .expect("join")
            .expect_err("aborted during its check");
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        assert!(is_free(&session), "the checked lock was given back");
        assert_eq!(a.state(), State::Released);
    });
}

/// A real assistant reply written by a program that ignores the lock.
fn rogue_reply() -> Value {
    reply("rogue", 0)
}

#[test]
fn a_foreign_edit_under_the_held_lock_survives_no_release_or_abort() {
    // The held view must not become the fence as if the edit were the
    // attempt's own: a release for the prompt, or an abort before cleanup,
    // hands the edit to the next check, which reports it.
    for abort in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("held-then-release.jsonl");
        rt().block_on(async {
            let a = begun_with_a_reply(&session).await;
            append_ignoring_the_lock(&session, &rogue_reply());
            if abort {
                a.abort(AbortKind::User);
                assert_eq!(
                    bounded("cleanup", a.acquire_for_cleanup())
                        .await
                        .expect("cleanup"),
                    CleanupLock::NoOp,
                    "the abort adopted the edit made under the held lock"
                );
            } else {
                bounded("release", a.release_for_prompt())
                    .await
                    .expect("release");
                let err = bounded("reacquire", a.reacquire_after_prompt())
                    .await
                    .expect_err("the edit made under the held lock");
                assert!(is_takeover(&err, TakeoverPhase::PromptReacquire), "{err}");
            }
            assert!(a.is_taken_over());
            let _ = a.dispose();
        });
    }
}

/// Sleeps in its check, flagging that it started; accepts everything.
struct SlowCheck(Arc<std::sync::atomic::AtomicBool>, Duration, bool);

impl sessionlock::classify::ChangeClassifier for SlowCheck {
    fn is_benign(&self, _: &Value) -> bool {
        self.0.store(true, Ordering::SeqCst);
        std::thread::sleep(self.1);
        assert!(!self.2, "a classifier bug");
        true
    }
}

#[test]
fn an_abort_or_dispose_during_a_writes_check_stops_the_write() {
    // The check before a write runs outside the state lock; an abort or a
    // dispose that comes meanwhile must still keep the write from running.
    for dispose in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("stop-during-check.jsonl");
        let checking = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let slow = SlowCheck(checking.clone(), Duration::from_millis(400), false);
        rt().block_on(async {
            let a = begun_judged_by(&session, slow).await;
            // A benign entry under the held lock: the check classifies it.
            append_ignoring_the_lock(&session, &custom("bg", 1));
            let stopper = tokio::spawn({
                let (a, checking) = (a.clone(), checking.clone());
                async move {
                    until("the check runs", || checking.load(Ordering::SeqCst)).await;
                    if dispose {
                        let _ = a.dispose();
                    } else {
                        a.abort(AbortKind::User);
                    }
                }
            });
            let ran = AtomicUsize::new(0);
            let err = bounded(
                "write",
                a.with_write(|t, g| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    t.append(g, &[reply("a", 1)], Durability::None)
                }),
            )
            .await
            .expect_err("stopped before it ran");
            bounded("stopper", stopper).await.expect("join");
            assert!(matches!(err, Error::Cancelled { .. }), "{err}");
            assert_eq!(ran.load(Ordering::SeqCst), 0, "the closure ran");
            assert_eq!(entries(&session), vec![custom("bg", 1)]);
            assert!(is_free(&session), "the lock was given back");
        });
    }
}

#[test]
fn a_panicking_classifier_adopts_nothing_and_loses_no_abort() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("panicking-check.jsonl");
    let checking = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let panicky = SlowCheck(checking.clone(), Duration::from_millis(300), true);
    rt().block_on(async {
        let a = begun_judged_by(&session, panicky).await;
        append_ignoring_the_lock(&session, &rogue_reply());
        // An abort during cleanup's check, whose classifier then panics.
        let stopper = tokio::spawn({
            let (a, checking) = (a.clone(), checking.clone());
            async move {
                until("the check runs", || checking.load(Ordering::SeqCst)).await;
                a.abort(AbortKind::Stuck);
            }
        });
        let cleanup = tokio::spawn({
            let a = a.clone();
            async move { a.acquire_for_cleanup().await }
        });
        assert!(
            bounded("cleanup", cleanup).await.is_err(),
            "the classifier panicked"
        );
        bounded("stopper", stopper).await.expect("join");
        assert!(
            is_free(&session),
            "the abort was lost: the lock is still held"
        );
        assert_eq!(a.state(), State::Released);
        // Nothing was adopted: the next check cannot trust the file.
        assert_eq!(
            bounded("cleanup again", a.acquire_for_cleanup())
                .await
                .expect("cleanup"),
            CleanupLock::NoOp
        );
        assert!(a.is_taken_over());
        let _ = a.dispose();
    });
}

#[test]
fn dispose_ends_an_aborted_cleanups_wait_for_the_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("dispose-regain.jsonl");
    rt().block_on(async {
        let a = Arc::new(
            bounded("begin a", Attempt::begin_file(&session, attempt_opts()))
                .await
                .expect("begin a"),
        );
        a.abort(AbortKind::User);
        let b = bounded("begin b", Attempt::begin_file(&session, attempt_opts()))
            .await
            .expect("b takes the session");
        let cleanup = tokio::spawn({
            let a = a.clone();
            async move { a.acquire_for_cleanup().await }
        });
        until("a's cleanup queues", || {
            PromptTurns::owners().waiting(a.session()) == 1
        })
        .await;
        let _ = a.dispose();
        let r = bounded("a's cleanup after dispose", cleanup)
            .await
            .expect("join");
        assert_eq!(r.expect("no error"), CleanupLock::NoOp);
        assert_eq!(PromptTurns::owners().waiting(b.session()), 0);
        b.dispose().expect("dispose b");
    });
}

/// Calls back into the attempt it judges for (once the attempt exists), and
/// panics on entries holding `"boom"`.
struct Meddling(Arc<std::sync::OnceLock<Arc<Attempt>>>);

impl sessionlock::classify::ChangeClassifier for Meddling {
    fn is_benign(&self, entry: &Value) -> bool {
        if let Some(a) = self.0.get() {
            let _ = a.state();
        }
        assert!(entry.get("boom").is_none(), "a classifier bug");
        true
    }
}

/// An attempt on `session` judged by a [`Meddling`] classifier that calls
/// back into this very attempt.
async fn begun_meddling(session: &Path) -> Arc<Attempt> {
    let cell: Arc<std::sync::OnceLock<Arc<Attempt>>> = Arc::default();
    let opts = attempt_opts().classifier(Arc::new(Meddling(cell.clone())));
    let a = Arc::new(
        bounded("begin", Attempt::begin_file(session, opts))
            .await
            .expect("begin"),
    );
    let _ = cell.set(a.clone());
    a
}

#[test]
fn a_release_runs_no_classifier_under_the_attempts_lock() {
    // A release checks the held view under the attempt's state lock; the
    // user's classifier must not run there: one that calls a getter would
    // deadlock, one that panics would leave the state half changed.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("release-no-classifier.jsonl");
    rt().block_on(async {
        let a = begun_meddling(&session).await;
        // Entries a program that ignores the lock appends under it.
        append_ignoring_the_lock(&session, &custom("bg", 0));
        let idle = on_thread("release for an idle wait", {
            let a = a.clone();
            move || a.release_for_idle_wait()
        });
        idle.expect("the release does not wait for itself");
        assert_eq!(a.state(), State::Released);
        assert!(is_free(&session));
        // The next acquisition classifies them for real (the getter works).
        let resync = bounded("reacquire", a.reacquire_after_prompt())
            .await
            .expect("benign");
        assert_eq!(resync.entries, vec![custom("bg", 0)]);

        // A classifier that panics is not run by a release either: the
        // abort frees the lock and the session, and its state says so.
        append_ignoring_the_lock(&session, &json!({"boom": 1}));
        a.abort(AbortKind::Stuck);
        assert_eq!(a.state(), State::Released);
        assert!(is_free(&session));
        let next = bounded(
            "the next attempt",
            Attempt::begin_file(&session, attempt_opts().owner_timeout(Some(BOUND))),
        )
        .await
        .expect("the aborted attempt gave the session up");
        next.dispose().expect("dispose");
        let _ = a.dispose();
    });
}

#[test]
fn an_idle_release_during_a_writes_check_lets_the_write_run_first() {
    // release_for_idle_wait from another task while a write is being
    // checked: the write runs, then the lock goes (it is no abort).
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("idle-during-check.jsonl");
    let checking = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow = SlowCheck(checking.clone(), Duration::from_millis(300), false);
    rt().block_on(async {
        let a = begun_judged_by(&session, slow).await;
        append_ignoring_the_lock(&session, &custom("bg", 1));
        let idler = tokio::spawn({
            let (a, checking) = (a.clone(), checking.clone());
            async move {
                until("the check runs", || checking.load(Ordering::SeqCst)).await;
                a.release_for_idle_wait()
            }
        });
        bounded(
            "write",
            a.with_write(|t, g| t.append(g, &[reply("a", 1)], Durability::None)),
        )
        .await
        .expect("the write runs");
        bounded("idler", idler)
            .await
            .expect("join")
            .expect("idle release");
        assert_eq!(a.aborted(), None);
        assert_eq!(a.state(), State::Released);
        assert!(is_free(&session), "released after the write");
        assert_eq!(entries(&session), vec![custom("bg", 1), reply("a", 1)]);
        bounded("reacquire", a.reacquire_after_prompt())
            .await
            .expect("its own write is no takeover");
        a.dispose().expect("dispose");
    });
}

#[test]
fn dispose_runs_no_classifier_under_the_attempts_lock() {
    // Dispose's last check classifies what a program that ignores the lock
    // appended under it. A classifier that calls a getter of its attempt
    // (allowed from a classifier) must not deadlock on the state lock.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("dispose-classifier.jsonl");
    rt().block_on(async {
        let a = begun_meddling(&session).await;
        append_ignoring_the_lock(&session, &custom("bg", 0));
        let disposed = on_thread("dispose", {
            let a = a.clone();
            move || a.dispose()
        });
        disposed.expect("a benign entry is no takeover");
        assert_eq!(a.state(), State::Disposed);
        assert!(is_free(&session), "disposed");

        // A foreign reply under the held lock is still caught at dispose.
        let b = bounded("begin b", Attempt::begin_file(&session, lane_opts()))
            .await
            .expect("begin b");
        append_ignoring_the_lock(&session, &rogue_reply());
        let err = b.dispose().expect_err("a foreign reply");
        assert!(is_takeover(&err, TakeoverPhase::Dispose), "{err}");
        assert!(is_free(&session));
    });
}

#[test]
fn a_write_whose_resync_hook_ends_the_attempt_writes_nothing() {
    // The hook told about the entries a write's check accepted may call the
    // attempt's non-blocking methods. If it disposes or aborts the attempt,
    // the write must not land after that call returned.
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        for (name, dispose, held) in [
            ("hook-dispose-short.jsonl", true, false),
            ("hook-dispose-held.jsonl", true, true),
            ("hook-abort-short.jsonl", false, false),
            ("hook-abort-held.jsonl", false, true),
        ] {
            let session = dir.path().join(name);
            let cell: Arc<std::sync::OnceLock<Attempt>> = Arc::default();
            let hook = {
                let cell = cell.clone();
                move |_: &sessionlock::attempt::Resync| {
                    if let Some(a) = cell.get() {
                        if dispose {
                            let _ = a.dispose();
                        } else {
                            a.abort(AbortKind::User);
                        }
                    }
                }
            };
            let a = bounded(
                "begin",
                Attempt::begin_file(&session, lane_opts().on_resync(hook)),
            )
            .await
            .expect("begin");
            let _ = cell.set(a.clone());
            if held {
                append_ignoring_the_lock(&session, &custom("bg", 0));
            } else {
                bounded("release", a.release_for_prompt())
                    .await
                    .expect("release");
                append(&session, custom("bg", 0));
            }
            let err = bounded(
                "write",
                a.with_write(|t, g| t.append(g, &[reply("a", 0)], Durability::None)),
            )
            .await
            .expect_err("the hook ended the attempt before the write");
            assert!(matches!(err, Error::Cancelled { .. }), "{name}: {err}");
            assert_eq!(entries(&session), vec![custom("bg", 0)], "{name}");
            assert!(is_free(&session), "{name}: the lock went");
            let want = if dispose {
                State::Disposed
            } else {
                State::Released
            };
            assert_eq!(a.state(), want, "{name}");
            let _ = a.dispose();
        }
    });
}
