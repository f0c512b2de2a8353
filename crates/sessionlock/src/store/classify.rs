//! Change classification for takeover detection
//! ([design §7.3](crate::design#73-classifiers)): which entries someone else
//! may append to a transcript while an attempt has released its lock, without
//! invalidating the context the attempt is working from.
//!
//! An attempt releases its session lock around every model call and arms a
//! fence (§8.3). When it takes the lock back, it compares the transcript with
//! the fence: an unchanged file, the attempt's own fenced writes and a
//! byte-identical rewrite are fine; anything other than a pure append is a
//! takeover. For a pure append, the attempt asks a [`ChangeClassifier`] about
//! every appended entry. If it accepts all of them the change is benign and the
//! attempt carries on; a single rejected entry makes the change a takeover, and
//! the attempt stops writing. A line that does not parse as JSON is not an
//! entry any classifier can accept, so it makes the change a takeover too.
//!
//! The classifier is the only policy in that decision. [`AcceptNothing`], the
//! default, treats every foreign entry as a takeover. [`OpenClawClassifier`]
//! accepts the bookkeeping entries OpenClaw appends beside a prompt in flight.

use serde_json::{Map, Value};

/// Decides whether one transcript entry, appended by someone else while an
/// attempt had released its lock, is benign: whether it leaves the attempt's
/// context valid.
///
/// The attempt consults the classifier once per appended entry; any entry it
/// does not accept makes the whole change a takeover. A classifier sees one
/// entry at a time and must be a pure function of it, so it cannot accept an
/// entry because of its neighbours. When in doubt, return `false`: a takeover
/// reported in error fails one attempt, a missed one lets two writers
/// interleave a transcript.
pub trait ChangeClassifier: Send + Sync + 'static {
    /// Whether `entry`, one parsed JSONL line appended by someone else, is
    /// benign.
    fn is_benign(&self, entry: &Value) -> bool;
}

/// The default classifier: every entry someone else appends is a takeover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptNothing;

impl ChangeClassifier for AcceptNothing {
    fn is_benign(&self, _entry: &Value) -> bool {
        false
    }
}

/// Accepts exactly the entries OpenClaw treats as benign when they appear in a
/// session transcript (pi session format, one JSON object per line) while a
/// prompt is in flight.
///
/// It follows OpenClaw's own check for unowned changes made while an embedded
/// attempt's prompt lock was released (`classifyPromptReleasedSessionLines` in
/// `src/agents/pi-embedded-runner/run/attempt.session-lock.entries.ts`, with
/// the assistant test from `src/shared/transcript-only-openclaw-assistant.ts`).
/// Every entry it accepts is an object whose `id` and `timestamp` are
/// non-blank strings. "Blank" means empty after the white space that
/// JavaScript's `String.prototype.trim` strips, as in OpenClaw. The accepted
/// entries are:
///
/// - **Transcript-only assistant messages**: `type: "message"` whose `message`
///   object has `role: "assistant"`, `provider: "openclaw"` and `model` exactly
///   `"delivery-mirror"` (written when OpenClaw mirrors a reply delivered to a
///   channel) or `"gateway-injected"` (written when the gateway injects an
///   assistant message into the transcript). `provider` and `model` sit inside
///   `message`, not on the entry. `parentId` may be absent, `null` or a
///   string. `appendMode` may be absent or `"side"`.
///   ```json
///   {"type":"message","id":"3f9c2a1b","parentId":"8d41e0c7","timestamp":"2026-05-02T09:14:03.120Z",
///    "message":{"role":"assistant","content":[{"type":"text","text":"Sent."}],"api":"openai-responses",
///               "provider":"openclaw","model":"delivery-mirror","stopReason":"stop","timestamp":1777713243120}}
///   ```
/// - **`custom` entries** with a non-blank string `customType`. These hold
///   extension state and never reach the model's context. `data` may be
///   anything.
/// - **`label` entries** with a non-blank string `targetId`. These are
///   bookmarks on another entry. `label` may be absent (this clears the
///   bookmark) or a string.
/// - **`session_info` entries**, which hold session metadata such as the
///   display name. `name` may be absent or a string.
/// - **Side-branch `leaf` controls**: see below.
///
/// For `custom`, `label`, `session_info` and `leaf` entries, `parentId` must be
/// present and be `null` or a string.
///
/// # Side-branch leaf controls
///
/// A pi session is a tree: every entry names its `parentId`, and a `leaf` entry
/// moves the pointer that says which branch is active to its `targetId` (`null`
/// means "before the first entry"). OpenClaw adds two fields. `appendParentId`
/// says where the next appended entry attaches. `appendMode: "side"` marks a
/// control that only steers appends onto a side branch, for example delivery
/// mirrors kept off the conversation. When OpenClaw merges such a control into
/// an attempt, it keeps the attempt's active leaf. So a side-branch leaf
/// control is an entry with `type: "leaf"`, `appendMode: "side"`, a `targetId`
/// that is present and is `null` or a string, and an `appendParentId` that is
/// absent, `null` or a string:
/// ```json
/// {"type":"leaf","id":"c07e5d12","parentId":"3f9c2a1b","timestamp":"2026-05-02T09:14:03.200Z",
///  "targetId":"8d41e0c7","appendParentId":"3f9c2a1b","appendMode":"side"}
/// ```
/// A `leaf` entry without `appendMode: "side"` switches the active branch under
/// the attempt, so it is a takeover.
///
/// Everything else is a takeover. That includes messages from a real provider
/// and user or tool messages, even ones carrying the markers above. It also
/// includes `custom_message` entries (they reach the model's context),
/// compactions, branch summaries, model and thinking-level changes, and unknown
/// types.
///
/// # Examples
/// ```
/// use serde_json::json;
/// use sessionlock::classify::{ChangeClassifier, OpenClawClassifier};
///
/// let rename = json!({
///     "type": "session_info", "id": "5b2d9e40", "parentId": "3f9c2a1b",
///     "timestamp": "2026-05-02T09:15:00.000Z", "name": "release checklist",
/// });
/// let user_turn = json!({
///     "type": "message", "id": "77aa01fe", "parentId": "3f9c2a1b",
///     "timestamp": "2026-05-02T09:15:01.000Z",
///     "message": {"role": "user", "content": "and the changelog?", "timestamp": 1777713301000u64},
/// });
/// assert!(OpenClawClassifier.is_benign(&rename));
/// assert!(!OpenClawClassifier.is_benign(&user_turn));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenClawClassifier;

/// The only provider OpenClaw uses for transcript-only assistant messages.
const OPENCLAW_PROVIDER: &str = "openclaw";

/// Models that mark an OpenClaw assistant message as transcript-only, not model
/// output.
const TRANSCRIPT_ONLY_MODELS: [&str; 2] = ["delivery-mirror", "gateway-injected"];

impl ChangeClassifier for OpenClawClassifier {
    fn is_benign(&self, entry: &Value) -> bool {
        let Some(entry) = entry.as_object() else {
            return false;
        };
        match entry.get("type").and_then(Value::as_str) {
            Some("message") => is_transcript_only_assistant_entry(entry),
            Some("custom") => has_entry_base(entry) && is_non_blank(entry.get("customType")),
            Some("label") => {
                has_entry_base(entry)
                    && is_non_blank(entry.get("targetId"))
                    && is_absent_or_string(entry.get("label"))
            }
            Some("session_info") => has_entry_base(entry) && is_absent_or_string(entry.get("name")),
            Some("leaf") => is_side_leaf_control(entry),
            _ => false,
        }
    }
}

fn is_transcript_only_assistant_entry(entry: &Map<String, Value>) -> bool {
    let Some(message) = entry.get("message").and_then(Value::as_object) else {
        return false;
    };
    let field = |name: &str| message.get(name).and_then(Value::as_str);
    is_non_blank(entry.get("id"))
        && is_non_blank(entry.get("timestamp"))
        && is_absent_null_or_string(entry.get("parentId"))
        && entry
            .get("appendMode")
            .is_none_or(|mode| mode.as_str() == Some("side"))
        && field("role") == Some("assistant")
        && field("provider") == Some(OPENCLAW_PROVIDER)
        && field("model").is_some_and(|model| TRANSCRIPT_ONLY_MODELS.contains(&model))
}

fn is_side_leaf_control(entry: &Map<String, Value>) -> bool {
    has_entry_base(entry)
        && entry.get("appendMode").and_then(Value::as_str) == Some("side")
        && entry
            .get("targetId")
            .is_some_and(|target| target.is_null() || target.is_string())
        && is_absent_null_or_string(entry.get("appendParentId"))
}

/// The fields every non-message entry OpenClaw accepts must carry: a non-blank
/// `id` and `timestamp`, and a `parentId` that is `null` or a string.
fn has_entry_base(entry: &Map<String, Value>) -> bool {
    is_non_blank(entry.get("id"))
        && is_non_blank(entry.get("timestamp"))
        && entry
            .get("parentId")
            .is_some_and(|parent| parent.is_null() || parent.is_string())
}

fn is_non_blank(value: Option<&Value>) -> bool {
    value.and_then(Value::as_str).is_some_and(|s| !is_blank(s))
}

fn is_absent_or_string(value: Option<&Value>) -> bool {
    value.is_none_or(Value::is_string)
}

fn is_absent_null_or_string(value: Option<&Value>) -> bool {
    value.is_none_or(|value| value.is_null() || value.is_string())
}

/// Whether `s` is empty once the white space JavaScript's
/// `String.prototype.trim` strips is removed, OpenClaw's test for "blank".
/// That set is Unicode `White_Space` without U+0085 (NEL), plus U+FEFF (BOM).
fn is_blank(s: &str) -> bool {
    s.chars()
        .all(|c| (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    const PARENT: &str = "8d41e0c7";
    const TIMESTAMP: &str = "2026-05-02T09:14:03.120Z";

    /// An assistant entry shaped like the ones OpenClaw's gateway and delivery
    /// mirror append (`SessionManager.appendMessage` of an assistant body).
    fn assistant_entry(provider: &str, model: &str) -> Value {
        json!({
            "type": "message",
            "id": "3f9c2a1b",
            "parentId": PARENT,
            "timestamp": TIMESTAMP,
            "message": {
                "role": "assistant",
                "content": [{"type": "text", "text": "Sent to the channel."}],
                "timestamp": 1_777_713_243_120u64,
                "stopReason": "stop",
                "usage": {
                    "input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0, "totalTokens": 0,
                    "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0, "total": 0},
                },
                "api": "openai-responses",
                "provider": provider,
                "model": model,
            },
        })
    }

    fn custom_entry(custom_type: Value) -> Value {
        json!({
            "type": "custom", "id": "a70b33c9", "parentId": PARENT, "timestamp": TIMESTAMP,
            "customType": custom_type, "data": {"runs": 3},
        })
    }

    fn label_entry(target_id: Value) -> Value {
        json!({
            "type": "label", "id": "e1d2c3b4", "parentId": PARENT, "timestamp": TIMESTAMP,
            "targetId": target_id, "label": "before the refactor",
        })
    }

    fn side_leaf(target_id: Value) -> Value {
        json!({
            "type": "leaf", "id": "c07e5d12", "parentId": "3f9c2a1b", "timestamp": TIMESTAMP,
            "targetId": target_id, "appendParentId": "3f9c2a1b", "appendMode": "side",
        })
    }

    /// Returns `entry` with `key` set to `value`, or removed when `value` is
    /// `None`.
    fn with(mut entry: Value, key: &str, value: Option<Value>) -> Value {
        let object = entry.as_object_mut().expect("entry is an object");
        match value {
            Some(value) => object.insert(key.to_owned(), value),
            None => object.remove(key),
        };
        entry
    }

    fn with_message_field(mut entry: Value, key: &str, value: Option<Value>) -> Value {
        let message = entry["message"].take();
        entry["message"] = with(message, key, value);
        entry
    }

    /// One sample of every kind of entry [`OpenClawClassifier`] accepts.
    fn benign_samples() -> Vec<Value> {
        vec![
            assistant_entry("openclaw", "delivery-mirror"),
            assistant_entry("openclaw", "gateway-injected"),
            custom_entry(json!("openclaw.turn-state")),
            label_entry(json!(PARENT)),
            json!({"type": "session_info", "id": "5b2d9e40", "parentId": PARENT,
                   "timestamp": TIMESTAMP, "name": "release checklist"}),
            side_leaf(json!(PARENT)),
        ]
    }

    fn assert_accepted(entry: &Value) {
        assert!(OpenClawClassifier.is_benign(entry), "should accept {entry}");
    }

    fn assert_rejected(entry: &Value) {
        assert!(
            !OpenClawClassifier.is_benign(entry),
            "should reject {entry}"
        );
    }

    #[test]
    fn accepts_delivery_mirror_assistant_message() {
        assert_accepted(&assistant_entry("openclaw", "delivery-mirror"));
    }

    #[test]
    fn accepts_gateway_injected_assistant_message() {
        assert_accepted(&assistant_entry("openclaw", "gateway-injected"));
    }

    #[test]
    fn accepts_transcript_only_message_variants_openclaw_writes() {
        let base = assistant_entry("openclaw", "delivery-mirror");
        assert_accepted(&with(base.clone(), "parentId", None));
        assert_accepted(&with(base.clone(), "parentId", Some(Value::Null)));
        assert_accepted(&with(base, "appendMode", Some(json!("side"))));
    }

    #[test]
    fn accepts_custom_entry_with_custom_type() {
        let entry = custom_entry(json!("openclaw.turn-state"));
        assert_accepted(&entry);
        assert_accepted(&with(entry, "data", None));
    }

    #[test]
    fn accepts_label_entry_with_target() {
        let entry = label_entry(json!(PARENT));
        assert_accepted(&entry);
        assert_accepted(&with(entry, "label", None));
    }

    #[test]
    fn accepts_session_info_entry() {
        let entry = json!({"type": "session_info", "id": "5b2d9e40", "parentId": Value::Null,
                           "timestamp": TIMESTAMP, "name": "release checklist"});
        assert_accepted(&entry);
        assert_accepted(&with(entry, "name", None));
    }

    #[test]
    fn accepts_side_branch_leaf_control() {
        assert_accepted(&side_leaf(json!(PARENT)));
        assert_accepted(&side_leaf(Value::Null));
        assert_accepted(&with(side_leaf(json!(PARENT)), "appendParentId", None));
        assert_accepted(&with(
            side_leaf(json!(PARENT)),
            "appendParentId",
            Some(Value::Null),
        ));
    }

    #[test]
    fn rejects_assistant_message_from_another_provider() {
        assert_rejected(&assistant_entry("anthropic", "claude-opus-4-6"));
        assert_rejected(&assistant_entry("openai", "delivery-mirror"));
        assert_rejected(&assistant_entry("OpenClaw", "delivery-mirror"));
        assert_rejected(&with_message_field(
            assistant_entry("openclaw", "delivery-mirror"),
            "provider",
            None,
        ));
    }

    #[test]
    fn rejects_openclaw_assistant_message_with_another_model() {
        for model in [
            "best-effort-summary",
            "Delivery-Mirror",
            " gateway-injected",
            "",
        ] {
            assert_rejected(&assistant_entry("openclaw", model));
        }
        assert_rejected(&with_message_field(
            assistant_entry("openclaw", "delivery-mirror"),
            "model",
            Some(json!(["delivery-mirror"])),
        ));
    }

    #[test]
    fn rejects_user_and_tool_messages_even_with_openclaw_markers() {
        let mirror = assistant_entry("openclaw", "delivery-mirror");
        for role in ["user", "toolResult", "custom"] {
            assert_rejected(&with_message_field(
                mirror.clone(),
                "role",
                Some(json!(role)),
            ));
        }
        assert_rejected(&with_message_field(mirror, "role", None));
    }

    #[test]
    fn rejects_provider_and_model_outside_the_message() {
        let entry = json!({
            "type": "message", "id": "3f9c2a1b", "parentId": PARENT, "timestamp": TIMESTAMP,
            "provider": "openclaw", "model": "delivery-mirror",
            "message": {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
        });
        assert_rejected(&entry);
        assert_rejected(&with(entry, "message", Some(json!("delivery-mirror"))));
    }

    #[test]
    fn rejects_mirror_message_with_malformed_entry_fields() {
        let mirror = assistant_entry("openclaw", "delivery-mirror");
        assert_rejected(&with(mirror.clone(), "appendMode", Some(json!("main"))));
        assert_rejected(&with(mirror.clone(), "appendMode", Some(Value::Null)));
        assert_rejected(&with(mirror.clone(), "parentId", Some(json!(7))));
        assert_rejected(&with(mirror.clone(), "id", Some(json!("  "))));
        assert_rejected(&with(mirror.clone(), "timestamp", None));
        assert_rejected(&with(
            mirror,
            "timestamp",
            Some(json!(1_777_713_243_120u64)),
        ));
    }

    #[test]
    fn rejects_custom_entry_without_custom_type() {
        assert_rejected(&custom_entry(json!("")));
        assert_rejected(&custom_entry(json!(" \t\n")));
        assert_rejected(&custom_entry(json!(42)));
        assert_rejected(&custom_entry(Value::Null));
        assert_rejected(&with(
            custom_entry(json!("openclaw.turn-state")),
            "customType",
            None,
        ));
    }

    #[test]
    fn rejects_label_entry_without_target() {
        assert_rejected(&label_entry(json!("")));
        assert_rejected(&label_entry(json!("\u{a0}")));
        assert_rejected(&label_entry(Value::Null));
        assert_rejected(&label_entry(json!(["8d41e0c7"])));
        assert_rejected(&with(label_entry(json!(PARENT)), "targetId", None));
    }

    #[test]
    fn rejects_label_entry_with_non_string_label() {
        assert_rejected(&with(
            label_entry(json!(PARENT)),
            "label",
            Some(Value::Null),
        ));
        assert_rejected(&with(label_entry(json!(PARENT)), "label", Some(json!(1))));
    }

    #[test]
    fn rejects_session_info_entry_with_non_string_name() {
        let entry = json!({"type": "session_info", "id": "5b2d9e40", "parentId": PARENT,
                           "timestamp": TIMESTAMP, "name": {"text": "x"}});
        assert_rejected(&entry);
        assert_rejected(&with(entry, "name", Some(Value::Null)));
    }

    #[test]
    fn rejects_leaf_that_is_not_a_side_branch_control() {
        let leaf = side_leaf(json!(PARENT));
        assert_rejected(&with(leaf.clone(), "appendMode", None));
        assert_rejected(&with(leaf.clone(), "appendMode", Some(json!("main"))));
        assert_rejected(&with(leaf.clone(), "targetId", None));
        assert_rejected(&with(leaf.clone(), "targetId", Some(json!(3))));
        assert_rejected(&with(leaf, "appendParentId", Some(json!(false))));
    }

    #[test]
    fn rejects_metadata_entries_without_entry_fields() {
        for entry in [
            custom_entry(json!("openclaw.turn-state")),
            label_entry(json!(PARENT)),
            side_leaf(json!(PARENT)),
        ] {
            assert_rejected(&with(entry.clone(), "id", None));
            assert_rejected(&with(entry.clone(), "id", Some(json!(""))));
            assert_rejected(&with(entry.clone(), "parentId", None));
            assert_rejected(&with(entry.clone(), "parentId", Some(json!(1))));
            assert_rejected(&with(entry.clone(), "timestamp", None));
            assert_rejected(&with(entry, "timestamp", Some(json!(1_777_713_243_120u64))));
        }
    }

    #[test]
    fn rejects_non_object_values() {
        let benign = assistant_entry("openclaw", "delivery-mirror");
        for value in [
            Value::Null,
            json!(true),
            json!(12),
            json!("{\"type\":\"session_info\"}"),
            json!([]),
            json!([benign]),
        ] {
            assert_rejected(&value);
        }
    }

    #[test]
    fn rejects_other_and_garbage_entry_types() {
        for kind in [
            json!("custom_message"),
            json!("compaction"),
            json!("branch_summary"),
            json!("model_change"),
            json!("thinking_level_change"),
            json!("session"),
            json!("Custom"),
            json!("session-info"),
            json!(""),
            json!(42),
            Value::Null,
        ] {
            let entry = json!({"type": kind, "id": "a70b33c9", "parentId": PARENT,
                               "timestamp": TIMESTAMP, "customType": "x", "targetId": PARENT});
            assert_rejected(&entry);
        }
        assert_rejected(&json!({"id": "a70b33c9", "parentId": PARENT, "timestamp": TIMESTAMP}));
        assert_rejected(&json!({}));
    }

    #[test]
    fn blank_means_what_javascript_trim_strips() {
        assert!(is_blank(""));
        assert!(is_blank(" \t\r\n\u{b}\u{c}"));
        assert!(is_blank("\u{a0}\u{feff}\u{2028}\u{3000}"));
        assert!(!is_blank("\u{85}"));
        assert!(!is_blank(" x "));
    }

    #[test]
    fn accept_nothing_rejects_every_entry() {
        let mut entries = benign_samples();
        entries.extend([
            Value::Null,
            json!("delivery-mirror"),
            json!({}),
            assistant_entry("anthropic", "claude-opus-4-6"),
        ]);
        for entry in &entries {
            assert!(!AcceptNothing.is_benign(entry), "should reject {entry}");
        }
    }

    #[test]
    fn benign_samples_are_all_accepted() {
        for entry in &benign_samples() {
            assert_accepted(entry);
        }
    }

    #[test]
    fn classifiers_are_shareable_trait_objects() {
        let classifiers: Vec<Arc<dyn ChangeClassifier>> =
            vec![Arc::new(AcceptNothing), Arc::new(OpenClawClassifier)];
        let verdicts = std::thread::spawn(move || {
            classifiers
                .iter()
                .map(|classifier| classifier.is_benign(&side_leaf(Value::Null)))
                .collect::<Vec<_>>()
        })
        .join()
        .expect("classifier thread");
        assert_eq!(verdicts, [false, true]);
    }
}
