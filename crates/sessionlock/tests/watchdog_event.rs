//! The watchdog's revocation warns (spec §6): an event naming the lock path,
//! the holder, its lane and how long it held the lock.
//!
//! The revocation runs on the watchdog's threads, which a thread-local
//! default subscriber does not see, so this test binary installs a global
//! one that records every event with its fields. It is its own binary
//! because a process has only one global subscriber.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sessionlock::{Error, LockOptions, LossCause, SessionLock};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One event as recorded: its level, the thread it was emitted on, and its
/// fields as text (`message` included).
#[derive(Debug, Clone)]
struct Recorded {
    level: Level,
    thread: Option<String>,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Recorded>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let recorded = Recorded {
            level: *event.metadata().level(),
            thread: std::thread::current().name().map(str::to_owned),
            fields,
        };
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(recorded);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// The process-wide recorder, installed as the global subscriber on first use.
fn recorder() -> &'static Arc<Recorder> {
    static REC: OnceLock<Arc<Recorder>> = OnceLock::new();
    REC.get_or_init(|| {
        let rec = Arc::new(Recorder::default());
        tracing::subscriber::set_global_default(SharedRecorder(rec.clone()))
            .expect("no other global subscriber in this test binary");
        rec
    })
}

/// The recorder behind an `Arc`, so that the test can read what it records.
struct SharedRecorder(Arc<Recorder>);

impl Subscriber for SharedRecorder {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.0.enabled(m)
    }
    fn new_span(&self, a: &Attributes<'_>) -> Id {
        self.0.new_span(a)
    }
    fn record(&self, s: &Id, r: &Record<'_>) {
        self.0.record(s, r)
    }
    fn record_follows_from(&self, s: &Id, f: &Id) {
        self.0.record_follows_from(s, f)
    }
    fn event(&self, e: &Event<'_>) {
        self.0.event(e)
    }
    fn enter(&self, s: &Id) {
        self.0.enter(s)
    }
    fn exit(&self, s: &Id) {
        self.0.exit(s)
    }
}

/// Waits for a recorded event with this message, for at most `limit`.
fn event_with_message(rec: &Recorder, message: &str, limit: Duration) -> Option<Recorded> {
    let deadline = Instant::now() + limit;
    loop {
        let found = rec
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|e| e.fields.get("message").map(String::as_str) == Some(message))
            .cloned();
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn watchdog_revocation_warns_naming_path_holder_lane_and_hold_time() {
    let rec = recorder();
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let max_hold = Duration::from_millis(200);
    let guard = SessionLock::new()
        .acquire_with(
            &session,
            &LockOptions::default()
                .timeout(Some(Duration::from_secs(10)))
                .max_hold(max_hold)
                .lane("cron"),
        )
        .expect("acquire");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !guard.is_revoked() {
        assert!(Instant::now() < deadline, "the watchdog never revoked");
        std::thread::sleep(Duration::from_millis(5));
    }
    let ev = event_with_message(
        rec,
        "revoked session lock held past its max hold",
        Duration::from_secs(5),
    )
    .unwrap_or_else(|| {
        panic!(
            "no revocation warning among {:#?}",
            rec.events.lock().unwrap_or_else(|p| p.into_inner())
        )
    });
    assert_eq!(ev.level, Level::WARN, "{ev:?}");
    let field = |name: &str| {
        ev.fields
            .get(name)
            .unwrap_or_else(|| panic!("no field {name} in {ev:?}"))
            .clone()
    };
    assert_eq!(Path::new(&field("lock")), guard.lock_path(), "{ev:?}");
    // Logged as plain values (docs/design.md §19), not as `Some(..)`.
    assert_eq!(field("pid"), std::process::id().to_string(), "the holder");
    assert_eq!(field("lane"), "cron");
    assert_eq!(field("epoch"), guard.epoch().to_string());
    let held: u64 = field("held_ms").parse().expect("held_ms is a number");
    assert!(
        held >= max_hold.as_millis() as u64,
        "held {held} ms, max hold {max_hold:?}"
    );
    assert_eq!(field("max_hold_ms"), max_hold.as_millis().to_string());
    assert_ne!(
        ev.thread,
        std::thread::current().name().map(str::to_owned),
        "emitted by the watchdog, not the holder's thread"
    );
    let err = guard.check().expect_err("revoked");
    assert!(
        matches!(
            err,
            Error::Revoked {
                cause: LossCause::Overdue,
                ..
            }
        ),
        "{err}"
    );
}
