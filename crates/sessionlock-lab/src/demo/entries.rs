//! The transcript entries the demo's lanes write, in the pi session format
//! OpenClaw uses (one JSON object per line). Every entry carries a unique
//! `id` (incarnation, lane, session, sequence number), which is how the
//! verdict finds each acknowledged entry in the transcripts.
//!
//! All but one are benign for [`OpenClawClassifier`]: a lane appending them
//! while another attempt is in its prompt window never takes that attempt
//! over. The exception is [`foreign_message`], a user message, which the
//! foreign-write fault appends on purpose.
//!
//! [`OpenClawClassifier`]: sessionlock::classify::OpenClawClassifier

use std::time::SystemTime;

use serde_json::{json, Value};

pub(super) fn now_iso() -> String {
    sessionlock::payload::format_time(SystemTime::now())
}

/// A tool result: a `custom` entry (benign).
pub(super) fn tool_result(id: &str, turn: &str) -> Value {
    json!({
        "type": "custom", "customType": "demo.tool-result", "id": id, "parentId": null,
        "timestamp": now_iso(), "data": {"turn": turn, "tool": "search", "result": "3 hits"},
    })
}

/// What a lane writes at the end of its turn.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reply {
    /// A `gateway-injected` assistant message (benign).
    Assistant,
    /// A `session_info` entry (benign).
    SessionInfo,
    /// A `label` entry (benign).
    Label,
}

pub(super) fn reply(kind: Reply, id: &str, turn: &str) -> Value {
    let ts = now_iso();
    match kind {
        Reply::Assistant => json!({
            "type": "message", "id": id, "parentId": null, "timestamp": ts,
            "message": {
                "role": "assistant", "content": [{"type": "text", "text": format!("reply of {turn}")}],
                "provider": "openclaw", "model": "gateway-injected",
            },
        }),
        Reply::SessionInfo => json!({
            "type": "session_info", "id": id, "parentId": null, "timestamp": ts,
            "name": format!("heartbeat {turn}"),
        }),
        Reply::Label => json!({
            "type": "label", "id": id, "parentId": null, "timestamp": ts,
            "targetId": "cron", "label": format!("cron run {turn}"),
        }),
    }
}

/// The note an aborted turn's cleanup writes (benign).
pub(super) fn aborted_note(id: &str, turn: &str) -> Value {
    json!({
        "type": "custom", "customType": "demo.aborted", "id": id, "parentId": null,
        "timestamp": now_iso(), "data": {"turn": turn},
    })
}

/// The entry a compaction adds to the entries it keeps (benign, but a
/// rewrite is never a benign change for others).
pub(super) fn compaction_marker(id: &str, turn: &str) -> Value {
    json!({
        "type": "custom", "customType": "demo.compaction", "id": id, "parentId": null,
        "timestamp": now_iso(), "data": {"turn": turn},
    })
}

/// A user message from another lane: not benign.
pub(super) fn foreign_message(id: &str, target: &str) -> Value {
    json!({
        "type": "message", "id": id, "parentId": null, "timestamp": now_iso(),
        "message": {"role": "user", "content": format!("(foreign write during {target})")},
    })
}

/// What a wedged lane tries to write after its lease ended.
pub(super) fn late_entry(id: &str) -> Value {
    json!({
        "type": "custom", "customType": "demo.late-write", "id": id, "parentId": null,
        "timestamp": now_iso(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionlock::classify::{ChangeClassifier, OpenClawClassifier};

    #[test]
    fn lanes_write_only_benign_entries_and_the_foreign_write_is_not() {
        let c = OpenClawClassifier;
        let benign = [
            tool_result("p0i0-channel-s1-1", "t"),
            reply(Reply::Assistant, "p0i0-channel-s1-2", "t"),
            reply(Reply::SessionInfo, "p0i0-heartbeat-s1-3", "t"),
            reply(Reply::Label, "p0i0-cron-s1-4", "t"),
            aborted_note("p0i0-channel-s1-5", "t"),
            compaction_marker("p0i0-compaction-s1-6", "t"),
            late_entry("p0i0-wedged-s1-7"),
        ];
        for e in &benign {
            assert!(c.is_benign(e), "not benign: {e}");
            assert!(e["id"].is_string());
        }
        assert!(!c.is_benign(&foreign_message("p0i0-intruder-s1-8", "t")));
    }
}
