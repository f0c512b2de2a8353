//! The attempt controller, unchanged, on PostgreSQL: its own writes are
//! never a takeover, a foreign entry written while its lock was released
//! is (spec §8.4), a benign one is accepted, and a takeover is sticky.

use serde_json::json;
use sessionlock::attempt::{Attempt, AttemptOptions};
use sessionlock::classify::ChangeClassifier;
use sessionlock::{LockOptions, SessionLock};
use sessionlock_lab::pgserver::{psql, shared_url};
use sessionlock_lab::testkit::block_on;
use sessionlock_postgres::PgBackend;

mod common;
use common::fresh;
use std::sync::Arc;

/// A foreign hand: one entry row written by SQL, not through sessionlock.
fn foreign_append(key: &str, line: &str) {
    psql(
        &shared_url(),
        &format!(
            "INSERT INTO sessionlock.entries (session, seq, line) \
             SELECT id, next_seq, '{line}' FROM sessionlock.leases WHERE key = '{key}'"
        ),
    );
}

struct AcceptLabels;
impl ChangeClassifier for AcceptLabels {
    fn is_benign(&self, v: &serde_json::Value) -> bool {
        v["type"] == "label"
    }
}

fn locks() -> SessionLock<PgBackend> {
    let b = PgBackend::connect(&shared_url()).expect("connect");
    SessionLock::with_backend(b, LockOptions::default())
}

#[test]
fn own_writes_are_never_a_takeover_and_a_foreign_entry_is() {
    let locks = locks();
    let s = fresh("attempt/foreign");
    block_on(async {
        let a = Attempt::begin(&locks, s.as_str(), AttemptOptions::default())
            .await
            .expect("begin");
        a.append(&[json!({"type": "message", "n": 1})], Default::default())
            .await
            .expect("own append");
        a.release_for_prompt().await.expect("release for prompt");
        a.reacquire_after_prompt().await.expect("nothing changed");
        a.append(&[json!({"type": "message", "n": 2})], Default::default())
            .await
            .expect("own append after the prompt");
        a.release_for_prompt().await.expect("release for prompt");
        foreign_append(&s, r#"{"type":"message","n":"foreign"}"#);
        let e = a.reacquire_after_prompt().await.unwrap_err();
        assert_eq!(e.code(), "takeover", "{e}");
        assert!(a.is_taken_over());
        // Sticky: the next write is refused too, and lands nothing.
        let e = a
            .append(&[json!({"type": "message", "n": 3})], Default::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "takeover", "{e}");
        a.dispose().expect("dispose");
        let rows = psql(
            &shared_url(),
            &format!(
                "SELECT string_agg(e.line, '|' ORDER BY e.seq) FROM sessionlock.entries e \
                 JOIN sessionlock.leases l ON l.id = e.session WHERE l.key = '{s}'"
            ),
        );
        assert_eq!(
            rows.trim(),
            r#"{"type":"message","n":1}|{"type":"message","n":2}|{"type":"message","n":"foreign"}"#
        );
    });
}

#[test]
fn a_benign_foreign_entry_is_accepted_and_returned() {
    let locks = locks();
    let s = fresh("attempt/benign");
    block_on(async {
        let opts = AttemptOptions::default().classifier(Arc::new(AcceptLabels));
        let a = Attempt::begin(&locks, s.as_str(), opts)
            .await
            .expect("begin");
        a.append(&[json!({"type": "message"})], Default::default())
            .await
            .expect("own append");
        a.release_for_prompt().await.expect("release for prompt");
        foreign_append(&s, r#"{"type":"label","targetId":"x"}"#);
        let resync = a.reacquire_after_prompt().await.expect("benign");
        assert_eq!(
            resync.entries,
            vec![json!({"type": "label", "targetId": "x"})]
        );
        assert!(!a.is_taken_over());
        a.append(&[json!({"type": "message"})], Default::default())
            .await
            .expect("append after a benign change");
        a.dispose().expect("dispose");
    });
}

/// A foreign row slipped in below the transcript's end (here at a
/// negative sequence number) moves neither the next sequence nor the edit
/// count, only the size and digest: still a takeover, never "nothing new".
#[test]
fn a_row_slipped_in_below_the_end_is_a_takeover() {
    let locks = locks();
    let s = fresh("attempt/slipped");
    block_on(async {
        let a = Attempt::begin(&locks, s.as_str(), AttemptOptions::default())
            .await
            .expect("begin");
        a.append(&[json!({"type": "message"})], Default::default())
            .await
            .expect("own append");
        a.release_for_prompt().await.expect("release for prompt");
        psql(
            &shared_url(),
            &format!(
                "INSERT INTO sessionlock.entries (session, seq, line) \
                 SELECT id, -1, '{{\"type\":\"message\",\"n\":\"slipped\"}}' FROM sessionlock.leases WHERE key = '{s}'"
            ),
        );
        let e = a.reacquire_after_prompt().await.unwrap_err();
        assert_eq!(e.code(), "takeover", "{e}");
        a.dispose().expect("dispose");
    });
}
