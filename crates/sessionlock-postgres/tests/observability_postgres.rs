//! An acquisition through the PostgreSQL backend runs in the same spans as
//! one of files (docs/design.md §19): `sessionlock.acquire` with the key as
//! `session`, its lane, run and epoch; the guard's events in its
//! `sessionlock.hold` span; no value rendered as `Some(..)`. Its own binary:
//! the recorder is the process's global subscriber (the backend's work runs
//! on threads of its own runtime).

use sessionlock::{LockOptions, SessionLock, TryAcquireError};
use sessionlock_lab::pgserver::shared_url;
use sessionlock_lab::trace_recorder::{recorder, Recorded, SpanSeen};
use sessionlock_postgres::PgBackend;

mod common;
use common::fresh;

#[test]
fn a_postgres_acquisition_runs_in_the_acquire_and_hold_spans() {
    let rec = recorder();
    let backend = PgBackend::connect(&shared_url()).expect("connect");
    let locks = SessionLock::with_backend(backend, LockOptions::default());
    let key = fresh("observability/spans");
    let opts = LockOptions::default().lane("cron").run_id("run-7");
    let g = locks.acquire_with(key.as_str(), &opts).expect("acquire");
    let epoch = g.epoch().to_string();
    match locks.try_acquire(key.as_str()) {
        Err(TryAcquireError::WouldBlock(_)) => {}
        other => panic!("expected WouldBlock, got {other:?}"),
    }
    g.extend().expect("extend");
    g.release().expect("release");

    let Recorded { events, closed } = rec.take();
    let ours: Vec<&SpanSeen> = closed
        .iter()
        .filter(|s| s.name == "sessionlock.acquire" && s.fields["session"] == key)
        .collect();
    assert_eq!(ours.len(), 2, "the acquisition and the try: {closed:#?}");
    let taken = ours
        .iter()
        .find(|s| s.fields.get("epoch") == Some(&epoch))
        .unwrap_or_else(|| panic!("no acquire span with epoch {epoch}: {ours:#?}"));
    assert_eq!(taken.fields["lane"], "cron");
    assert_eq!(taken.fields["run"], "run-7");
    assert!(
        ours.iter().any(|s| !s.fields.contains_key("epoch")),
        "the try that gave up has no epoch: {ours:#?}"
    );

    for message in ["extended session lease", "released session lock"] {
        let e = events
            .iter()
            .find(|e| e.message == message)
            .unwrap_or_else(|| panic!("no {message:?} among {events:#?}"));
        let hold = e.scope.last().expect("inside a span");
        assert_eq!(hold.name, "sessionlock.hold", "{e:#?}");
        assert_eq!(hold.fields["session"], key);
        assert_eq!(hold.fields["epoch"], epoch);
        assert_eq!(hold.fields["lane"], "cron");
    }
    for s in &closed {
        for v in s.fields.values() {
            assert!(!v.contains("Some("), "a value rendered with Debug: {s:#?}");
        }
    }
    for e in &events {
        for v in e.fields.values() {
            assert!(!v.contains("Some("), "a value rendered with Debug: {e:#?}");
        }
    }
}
