//! Sessions as the attempt and controller tests use them: lock options with
//! a budget, another lane's fenced append, the transcript's entries, and the
//! entry kinds the OpenClaw classifier accepts or refuses.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sessionlock::attempt::AttemptOptions;
use sessionlock::classify::OpenClawClassifier;
use sessionlock::transcript::{Durability, Reader, Transcript};
use sessionlock::{FileBackend, LockOptions, SessionLock};

/// Lock options with an acquire budget of `timeout_ms`.
pub fn opts(timeout_ms: u64) -> LockOptions {
    LockOptions::default().timeout(Some(Duration::from_millis(timeout_ms)))
}

/// A lock manager with a 10 s budget.
pub fn locks() -> SessionLock {
    SessionLock::with_backend(FileBackend::default(), opts(10_000))
}

/// Attempt options with a 5 s budget, accepting no foreign entry.
pub fn attempt_opts() -> AttemptOptions {
    AttemptOptions::default().lock(opts(5_000))
}

/// Attempt options with a 5 s budget and the OpenClaw classifier.
pub fn lane_opts() -> AttemptOptions {
    attempt_opts().classifier(Arc::new(OpenClawClassifier))
}

/// The transcript's entries.
pub fn entries(path: &Path) -> Vec<Value> {
    Reader::open(path)
        .expect("reader")
        .map(|e| e.expect("entry").value)
        .collect()
}

/// Another lane's fenced append, through the lock.
pub fn append(session: &Path, entry: Value) {
    let g = locks().acquire(session).expect("acquire");
    let mut t = Transcript::open(session).expect("open");
    t.append(&g, &[entry], Durability::None).expect("append");
}

/// Whether the session's lock can be had at once.
pub fn is_free(session: &Path) -> bool {
    match locks().acquire_with(session, &opts(0)) {
        Ok(g) => {
            drop(g);
            true
        }
        Err(_) => false,
    }
}

/// An OpenClaw `custom` entry: benign to the OpenClaw classifier.
pub fn custom(lane: &str, i: u32) -> Value {
    json!({
        "type": "custom", "id": format!("{lane}-{i}"), "parentId": null,
        "timestamp": "2026-11-21T04:00:00.000Z", "customType": lane, "data": {"i": i}
    })
}

/// A program that ignores the lock appends a line with plain file I/O.
pub fn append_ignoring_the_lock(session: &Path, entry: &Value) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(session)
        .expect("open raw");
    writeln!(f, "{entry}").expect("raw append");
}

/// A user message: benign to no classifier.
pub fn user_message(id: &str) -> Value {
    json!({
        "type": "message", "id": id, "parentId": null, "timestamp": "2026-11-21T04:00:00.000Z",
        "message": {"role": "user", "content": "hi"}
    })
}

/// A real assistant reply of `lane`: benign to no classifier.
pub fn reply(lane: &str, i: u32) -> Value {
    json!({
        "type": "message", "id": format!("{lane}-reply-{i}"), "parentId": null,
        "timestamp": "2026-11-21T04:00:00.000Z",
        "message": {"role": "assistant", "provider": "anthropic", "model": "claude", "content": [{"type": "text", "text": lane}]}
    })
}
