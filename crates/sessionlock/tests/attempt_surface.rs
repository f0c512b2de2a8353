//! The attempt controller's binding-ready surface (issue 11, item 4): clones
//! that share one attempt, the store methods besides the closure form, the
//! blocking twin, and typed takeover reasons, end to end with real files.
//!
//! Every wait is bounded, so a regression fails instead of hanging.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sessionlock::attempt::{blocking, Attempt, CleanupLock, Resync, State};
use sessionlock::runs::AbortKind;
use sessionlock::store::{RawEntries, Takeover};
use sessionlock::transcript::Durability;
use sessionlock::{Error, TakeoverPhase, TakeoverReason};

mod common;

use common::sessions::{
    self, append, append_ignoring_the_lock, attempt_opts, custom, entries, is_free, lane_opts,
    locks, opts, user_message,
};
use common::waits::{bounded, on_thread, poll_now, rt};

/// A real assistant reply: benign to no classifier.
fn reply(i: u32) -> Value {
    sessions::reply("a", i)
}

/// Begins an attempt with a 5 s budget, accepting no foreign entry.
async fn begun(session: &Path) -> Attempt {
    bounded("begin", Attempt::begin_file(session, attempt_opts()))
        .await
        .expect("begin")
}

/// The takeover of `e`, if it is one.
fn takeover(e: &Error) -> Option<(TakeoverPhase, &TakeoverReason)> {
    match e {
        Error::Takeover { phase, reason, .. } => Some((*phase, reason)),
        _ => None,
    }
}

/// The message of spec §12, unchanged by the typed reason.
fn spec_message(session: &Path, phase: &str) -> String {
    let canonical = fs::canonicalize(session).expect("canonical session");
    format!(
        "session file changed while prompt lock was released: {} (phase: {phase})",
        canonical.display()
    )
}

// ------------------------------------------------------------------ clones

#[test]
fn clones_share_one_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("clones.jsonl");
    rt().block_on(async {
        let a = begun(&session).await;
        let b = a.clone();
        bounded("release", a.release_for_prompt())
            .await
            .expect("release");
        assert_eq!(b.state(), State::Released, "the clone sees the release");
        assert!(is_free(&session));
        bounded("reacquire", b.reacquire_after_prompt())
            .await
            .expect("reacquire through the clone");
        assert_eq!(a.state(), State::Held);
        // A write through one clone is the other's own: no takeover.
        bounded("append", b.append(&[reply(0)], Durability::None))
            .await
            .expect("append through the clone");
        bounded("append", a.append(&[reply(1)], Durability::None))
            .await
            .expect("append through the first handle");
        a.dispose().expect("no takeover at dispose");
        assert_eq!(entries(&session), vec![reply(0), reply(1)]);
    });
}

#[test]
fn dropping_a_clone_keeps_the_attempt_and_dropping_the_last_disposes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("drop-clone.jsonl");
    rt().block_on(async {
        let a = begun(&session).await;
        let b = a.clone();
        drop(a);
        assert_eq!(b.state(), State::Held, "one clone dropped: still held");
        assert!(!is_free(&session), "the lock stays with the attempt");
        bounded("append", b.append(&[reply(0)], Durability::None))
            .await
            .expect("the remaining clone writes");
        let c = b.clone();
        drop(b);
        assert!(!is_free(&session));
        drop(c);
        assert!(is_free(&session), "the last drop disposed the attempt");
        assert_eq!(entries(&session), vec![reply(0)]);
    });
}

#[test]
fn dispose_on_any_clone_disposes_the_attempt_for_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("dispose-clone.jsonl");
    rt().block_on(async {
        let a = begun(&session).await;
        let b = a.clone();
        b.dispose().expect("dispose through the clone");
        assert_eq!(a.state(), State::Disposed);
        assert!(is_free(&session));
        let err = bounded("append", a.append(&[reply(0)], Durability::None))
            .await
            .expect_err("disposed");
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        assert!(entries(&session).is_empty());
        a.dispose().expect("idempotent on every clone");
    });
}

// ---------------------------------------------------------- store methods

#[test]
fn store_methods_write_under_the_held_lock_as_the_attempts_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("store-held.jsonl");
    rt().block_on(async {
        let a = begun(&session).await;
        let at = bounded("append", a.append(&[reply(0), reply(1)], Durability::Data))
            .await
            .expect("append");
        assert_eq!(at.offset, 0);
        let mut raw = RawEntries::new();
        raw.push(br#"{"n": 1.50}"#).expect("json");
        let at2 = bounded("append_raw", a.append_raw(&raw, Durability::None))
            .await
            .expect("append_raw");
        assert_eq!(at2.offset, at.len);
        assert!(
            fs::read_to_string(&session)
                .expect("read")
                .ends_with("{\"n\": 1.50}\n"),
            "raw bytes kept"
        );
        let read = bounded("read", a.read()).await.expect("read");
        assert_eq!(read.entries, vec![reply(0), reply(1), json!({"n": 1.50})]);
        assert!(read.torn.is_none());
        bounded("truncate", a.truncate(1)).await.expect("truncate");
        assert_eq!(entries(&session), vec![reply(0)]);
        bounded("rewrite", a.rewrite(&[reply(7), reply(8)]))
            .await
            .expect("rewrite");
        assert_eq!(
            bounded("read", a.read()).await.expect("read").entries,
            vec![reply(7), reply(8)]
        );
        assert_eq!(a.state(), State::Held, "the held lock stays held");
        assert!(!is_free(&session));
        // Its own truncation and rewrite never look foreign.
        assert_eq!(
            bounded("cleanup", a.acquire_for_cleanup())
                .await
                .expect("cleanup"),
            CleanupLock::Held
        );
        bounded("cleanup append", a.append(&[reply(9)], Durability::None))
            .await
            .expect("cleanup write");
        a.dispose().expect("no takeover at dispose");
        assert_eq!(entries(&session), vec![reply(7), reply(8), reply(9)]);
        assert!(is_free(&session));
    });
}

#[test]
fn store_methods_while_released_take_a_short_lock_and_give_it_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("store-short.jsonl");
    rt().block_on(async {
        let a = begun(&session).await;
        a.release_for_idle_wait().expect("release");
        assert!(is_free(&session));
        bounded("append", a.append(&[reply(0)], Durability::None))
            .await
            .expect("append with a short lock");
        assert_eq!(a.state(), State::Released, "still released");
        assert!(is_free(&session), "the short lock went");
        bounded("truncate", a.truncate(0))
            .await
            .expect("truncate with a short lock");
        bounded("rewrite", a.rewrite(&[reply(1)]))
            .await
            .expect("rewrite with a short lock");
        assert_eq!(
            bounded("read", a.read()).await.expect("read").entries,
            vec![reply(1)]
        );
        assert!(is_free(&session));
        // What it wrote while released is its own: no takeover, nothing
        // handed back.
        let resync = bounded("reacquire", a.reacquire_after_prompt())
            .await
            .expect("own writes are no takeover");
        assert!(resync.is_empty());
        a.dispose().expect("dispose");
    });
}

#[test]
fn store_methods_check_the_transcript_first_and_write_nothing_after_a_takeover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("store-check.jsonl");
    rt().block_on(async {
        let a = begun(&session).await;
        bounded("append", a.append(&[reply(0)], Durability::None))
            .await
            .expect("own write");
        append_ignoring_the_lock(&session, &user_message("rogue"));
        let err = bounded("append", a.append(&[reply(1)], Durability::None))
            .await
            .expect_err("the file changed under the held lock");
        let offset = fs::metadata(&session).expect("stat").len()
            - u64::try_from(user_message("rogue").to_string().len() + 1).expect("len");
        assert_eq!(
            takeover(&err),
            Some((
                TakeoverPhase::Write,
                &TakeoverReason::Changed {
                    change: Takeover::ForeignEntry { offset }
                }
            )),
            "{err}"
        );
        assert_eq!(err.to_string(), spec_message(&session, "write"));
        assert_eq!(
            a.takeover(),
            Some((
                TakeoverPhase::Write,
                TakeoverReason::Changed {
                    change: Takeover::ForeignEntry { offset }
                }
            ))
        );
        assert!(is_free(&session), "the takeover released the lock");
        // Sticky: every store method returns the same takeover and does
        // nothing.
        for err in [
            bounded("append", a.append(&[reply(2)], Durability::None))
                .await
                .expect_err("sticky"),
            bounded("rewrite", a.rewrite(&[]))
                .await
                .expect_err("sticky"),
            bounded("truncate", a.truncate(0))
                .await
                .expect_err("sticky"),
            bounded("read", a.read()).await.expect_err("sticky"),
        ] {
            assert_eq!(
                takeover(&err).map(|(p, r)| (p, r.clone())),
                a.takeover(),
                "{err}"
            );
        }
        assert_eq!(entries(&session), vec![reply(0), user_message("rogue")]);
        a.dispose().expect("dispose");
    });
}

#[test]
fn read_hands_back_accepted_foreign_entries_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("store-read.jsonl");
    let seen: Arc<Mutex<Vec<Resync>>> = Arc::default();
    rt().block_on(async {
        let o = lane_opts().on_resync({
            let seen = seen.clone();
            move |r: &Resync| seen.lock().expect("mutex").push(r.clone())
        });
        let a = bounded("begin", Attempt::begin_file(&session, o))
            .await
            .expect("begin");
        bounded("append", a.append(&[reply(0)], Durability::None))
            .await
            .expect("own write");
        bounded("release", a.release_for_prompt())
            .await
            .expect("release");
        append(&session, custom("cron", 1));
        let read = bounded("read", a.read()).await.expect("benign");
        assert_eq!(read.entries, vec![reply(0), custom("cron", 1)]);
        assert_eq!(seen.lock().expect("mutex").len(), 1, "the hook saw it");
        // The read accepted it: the reacquire does not hand it back again.
        let resync = bounded("reacquire", a.reacquire_after_prompt())
            .await
            .expect("reacquire");
        assert!(resync.is_empty(), "{resync:?}");
        assert_eq!(seen.lock().expect("mutex").len(), 1);
        a.dispose().expect("dispose");
    });
}

#[test]
fn after_an_abort_store_methods_work_only_in_cleanup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("store-abort.jsonl");
    rt().block_on(async {
        let a = begun(&session).await;
        a.abort(AbortKind::User);
        assert!(is_free(&session));
        let err = bounded("append", a.append(&[reply(0)], Durability::None))
            .await
            .expect_err("aborted");
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        let err = bounded("read", a.read()).await.expect_err("aborted");
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        assert!(is_free(&session), "the refused calls took no lock");
        assert_eq!(
            bounded("cleanup", a.acquire_for_cleanup())
                .await
                .expect("cleanup"),
            CleanupLock::Held
        );
        bounded("append", a.append(&[reply(1)], Durability::None))
            .await
            .expect("cleanup writes");
        a.dispose().expect("dispose");
        assert_eq!(entries(&session), vec![reply(1)]);
    });
}

#[test]
fn a_store_method_refused_by_the_fence_is_a_lock_lost_takeover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("store-lost.jsonl");
    rt().block_on(async {
        let o = attempt_opts().lock(opts(1000).max_hold(Duration::from_millis(100)));
        let a = bounded("begin", Attempt::begin_file(&session, o))
            .await
            .expect("begin");
        // Held past its lease: another lane takes the session over.
        let other = locks()
            .acquire(&session)
            .expect("reclaimed after the lease");
        let err = bounded("append", a.append(&[reply(0)], Durability::None))
            .await
            .expect_err("the lock is gone");
        match takeover(&err) {
            Some((TakeoverPhase::Write, TakeoverReason::LockLost { error, code })) => {
                assert!(error.starts_with("session file lock revoked"), "{error}");
                assert_eq!(code, "revoked", "the refusal's code, for bindings");
            }
            _ => panic!("not a lock-lost takeover: {err:?}"),
        }
        assert!(a.is_taken_over());
        drop(other);
        assert!(entries(&session).is_empty(), "the refused write is absent");
    });
}

#[test]
fn store_methods_from_inside_a_write_closure_fail_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("store-reentrant.jsonl");
    rt().block_on(async {
        let a = begun(&session).await;
        let inner = bounded(
            "with_write",
            a.with_write(|_, _| {
                let batch = [reply(0)];
                Ok(poll_now(a.append(&batch, Durability::None)))
            }),
        )
        .await
        .expect("with_write");
        assert!(
            matches!(inner, std::task::Poll::Ready(Err(Error::Misuse { .. }))),
            "{inner:?}"
        );
        a.dispose().expect("dispose");
        assert!(entries(&session).is_empty());
    });
}

// ------------------------------------------------------- typed reasons

#[test]
fn takeover_reasons_are_typed_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        // Changed while released: the store's kind, at the reacquire.
        let session = dir.path().join("reason-foreign.jsonl");
        let a = begun(&session).await;
        bounded("release", a.release_for_prompt())
            .await
            .expect("release");
        append(&session, user_message("other lane"));
        let err = bounded("reacquire", a.reacquire_after_prompt())
            .await
            .expect_err("a foreign entry");
        assert_eq!(
            takeover(&err),
            Some((
                TakeoverPhase::PromptReacquire,
                &TakeoverReason::Changed {
                    change: Takeover::ForeignEntry { offset: 0 }
                }
            ))
        );
        assert_eq!(err.to_string(), spec_message(&session, "prompt_reacquire"));
        assert_eq!(
            takeover(&err).map(|(_, r)| r.to_string()).as_deref(),
            Some("foreign entry appended at byte 0"),
            "the reason's text is the one messages had"
        );
        drop(a);

        // Edited under the held lock, found at the release, reported at the
        // reacquire.
        let session = dir.path().join("reason-held.jsonl");
        let a = begun(&session).await;
        bounded("append", a.append(&[reply(0)], Durability::None))
            .await
            .expect("own write");
        let edited = fs::read_to_string(&session)
            .expect("read")
            .replace("\"a-reply-0\"", "\"x-reply-0\"");
        fs::write(&session, edited).expect("edit in place");
        a.release_for_idle_wait().expect("release");
        let err = bounded("reacquire", a.reacquire_after_prompt())
            .await
            .expect_err("edited under the held lock");
        let (phase, reason) = takeover(&err).expect("a takeover");
        assert_eq!(phase, TakeoverPhase::PromptReacquire);
        assert_eq!(
            *reason,
            TakeoverReason::ChangedWhileHeld {
                change: Takeover::Edited
            }
        );
        assert_eq!(reason.as_str(), "changed_while_held");
        assert_eq!(reason.change(), Some(&Takeover::Edited));
        assert_eq!(
            reason.to_string(),
            "fence unavailable (changed while the lock was held: edited)"
        );
        drop(a);

        // The lock cannot be had again: the reacquire's timeout.
        let session = dir.path().join("reason-timeout.jsonl");
        let a = bounded(
            "begin",
            Attempt::begin_file(&session, attempt_opts().lock(opts(200))),
        )
        .await
        .expect("begin");
        a.release_for_idle_wait().expect("release");
        let other = locks().acquire(&session).expect("another lane");
        let err = bounded("reacquire", a.reacquire_after_prompt())
            .await
            .expect_err("timed out");
        match takeover(&err) {
            Some((
                TakeoverPhase::PromptReacquire,
                TakeoverReason::LockUnavailable { error, code },
            )) => {
                assert!(
                    error.starts_with("session file locked (timeout 200ms)"),
                    "{error}"
                );
                assert_eq!(code, "timeout", "the acquisition's code, for bindings");
            }
            _ => panic!("not a lock-unavailable takeover: {err:?}"),
        }
        drop(other);
        drop(a);
    });
}

// ---------------------------------------------------------- blocking twin

#[test]
fn the_blocking_twin_runs_a_whole_attempt_without_a_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("blocking.jsonl");
    on_thread("blocking attempt", move || {
        let a = blocking::Attempt::begin_file(&session, attempt_opts()).expect("begin");
        assert_eq!(a.state(), State::Held);
        assert!(!is_free(&session));
        a.append(&[reply(0)], Durability::None).expect("append");
        let calls = AtomicUsize::new(0);
        let p = a
            .around_prompt(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                assert!(is_free(&session), "released during the model call");
                42
            })
            .expect("around_prompt");
        assert_eq!(p.output, 42);
        assert!(p.reacquired.expect("reacquired").is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "runs once");
        assert_eq!(a.state(), State::Held);
        a.release_for_prompt().expect("release");
        append(&session, user_message("other lane"));
        let err = a.reacquire_after_prompt().expect_err("takeover");
        assert!(
            matches!(
                takeover(&err),
                Some((
                    TakeoverPhase::PromptReacquire,
                    TakeoverReason::Changed { .. }
                ))
            ),
            "{err}"
        );
        assert_eq!(a.acquire_for_cleanup().expect("cleanup"), CleanupLock::NoOp);
        assert!(a.append(&[reply(1)], Durability::None).is_err());
        a.dispose().expect("dispose");
        assert!(is_free(&session));
        assert_eq!(
            entries(&session),
            vec![reply(0), user_message("other lane")]
        );
    });
}

#[test]
fn the_blocking_twin_has_every_store_method() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("blocking-store.jsonl");
    on_thread("blocking store methods", move || {
        let a = blocking::Attempt::begin_file(&session, attempt_opts()).expect("begin");
        a.append(&[reply(0), reply(1)], Durability::None)
            .expect("append");
        let mut raw = RawEntries::new();
        raw.push(b"{\"raw\":true}").expect("json");
        a.append_raw(&raw, Durability::None).expect("append_raw");
        a.truncate(2).expect("truncate");
        assert_eq!(a.read().expect("read").entries, vec![reply(0), reply(1)]);
        a.rewrite(&[reply(5)]).expect("rewrite");
        a.with_write(|t, g| t.append(g, &[reply(6)], Durability::None))
            .expect("with_write");
        assert_eq!(a.read().expect("read").entries, vec![reply(5), reply(6)]);
        a.release_for_idle_wait().expect("release");
        a.append(&[reply(7)], Durability::None).expect("short lock");
        assert!(is_free(&session));
        a.dispose().expect("own writes: no takeover");
        assert_eq!(entries(&session), vec![reply(5), reply(6), reply(7)]);
    });
}

#[test]
fn the_blocking_twins_waits_have_their_budgets() {
    // The runtime's timers drive the waits: a second attempt of this process
    // on the session waits for the first, within its owner budget.
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("blocking-busy.jsonl");
    on_thread("blocking waits", move || {
        let a = blocking::Attempt::begin_file(&session, attempt_opts()).expect("begin");
        let o = attempt_opts().owner_timeout(Some(Duration::from_millis(100)));
        let err = blocking::Attempt::begin_file(&session, o.clone()).expect_err("busy");
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        // On another thread, the second begin waits until the first ends.
        let waiter = {
            let session = session.clone();
            std::thread::spawn(move || {
                blocking::Attempt::begin_file(&session, attempt_opts()).map(|b| b.dispose())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        a.dispose().expect("dispose");
        waiter
            .join()
            .expect("waiter")
            .expect("begun after the first")
            .expect("dispose");
    });
}

#[test]
fn the_blocking_twin_refuses_to_block_inside_a_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("blocking-in-runtime.jsonl");
    let rt = rt();
    // Begun outside, used inside.
    let a = on_thread("begin", {
        let session = session.clone();
        move || blocking::Attempt::begin_file(&session, attempt_opts()).expect("begin")
    });
    rt.block_on(async {
        let err = blocking::Attempt::begin_file(&session, attempt_opts()).expect_err("refused");
        assert!(matches!(err, Error::Misuse { .. }), "{err}");
        let err = a
            .append(&[reply(0)], Durability::None)
            .expect_err("refused");
        assert!(matches!(err, Error::Misuse { .. }), "{err}");
        assert!(err.to_string().contains("inside an async runtime"), "{err}");
        // Inside a task too.
        let b = a.clone();
        let err = tokio::spawn(async move { b.read() })
            .await
            .expect("task")
            .expect_err("refused");
        assert!(matches!(err, Error::Misuse { .. }), "{err}");
        // What never waits works anywhere; the async handle works here.
        assert_eq!(a.state(), State::Held);
        bounded(
            "async append",
            a.to_async().append(&[reply(1)], Durability::None),
        )
        .await
        .expect("the async handle of the same attempt");
    });
    // And from code the attempt calls back: a write closure.
    let b = a.clone();
    let inner = on_thread("write closure", move || {
        b.with_write(|_, _| Ok(b.read().map(|_| ())))
            .expect("with_write")
    });
    assert!(matches!(inner, Err(Error::Misuse { .. })), "{inner:?}");
    a.dispose().expect("dispose");
    assert!(is_free(&session));
    assert_eq!(entries(&session), vec![reply(1)]);
}

#[test]
fn blocking_and_async_handles_share_one_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("blocking-shared.jsonl");
    let rt = rt();
    let a = rt
        .block_on(Attempt::begin_file(&session, attempt_opts()))
        .expect("begin");
    let b = blocking::Attempt::from(a.clone());
    let b = on_thread("blocking append", move || {
        b.append(&[reply(0)], Durability::None).expect("append");
        b
    });
    drop(a);
    assert_eq!(b.state(), State::Held, "a handle remains: not disposed");
    let c: Attempt = b.clone().into();
    drop(b);
    assert!(!is_free(&session));
    c.dispose().expect("own write: no takeover");
    assert!(is_free(&session));
    assert_eq!(entries(&session), vec![reply(0)]);
}

#[test]
fn blocking_around_prompt_reports_an_abort_during_the_call_beside_the_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("blocking-abort.jsonl");
    on_thread("blocking abort", move || {
        let a = blocking::Attempt::begin_file(&session, attempt_opts()).expect("begin");
        let p = a
            .around_prompt(|| {
                a.abort(AbortKind::User);
                7
            })
            .expect("around_prompt");
        assert_eq!(p.output, 7);
        let err = p.reacquired.expect_err("aborted");
        assert!(matches!(err, Error::Cancelled { .. }), "{err}");
        assert_eq!(a.state(), State::Released);
        assert!(is_free(&session), "the lock was not taken again");
        a.dispose().expect("dispose");
    });
}
