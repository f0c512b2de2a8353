//! The Chrome trace-event format (JSON object form), which Perfetto
//! (ui.perfetto.dev) and chrome://tracing open.
//!
//! Each session is a trace "process" (named by its short name), each
//! holder a "thread" of it, so a session's holds by one process nest
//! cleanly; waits and prompt windows are async slices (they overlap);
//! markers are instant events. Times are microseconds from the log's start
//! (`otherData.start_utc` says when that was).

use serde_json::{json, Value};

use super::html::{short_names, utc};
use super::model::{Hold, Timeline};

fn label(t: &Timeline, i: Option<usize>) -> Value {
    i.and_then(|i| t.names.get(i))
        .map_or(Value::Null, |s| json!(s))
}

/// The trace of `t` as one JSON document.
pub fn trace(t: &Timeline) -> Value {
    let rel = |ts: i64| ts - t.start;
    let names: Vec<String> = t.sessions.iter().map(|s| s.name.clone()).collect();
    let shorts = short_names(&names);
    // Trace pids: 1 + session index; 0 for events without a session.
    let tpid = |s: Option<usize>| s.map_or(0, |s| s + 1);
    // Trace tids: 1 + the holder's process index.
    let tid = |p: usize| p + 1;
    let mut ev: Vec<Value> = Vec::new();
    for (i, (s, short)) in t.sessions.iter().zip(&shorts).enumerate() {
        ev.push(
            json!({"ph": "M", "name": "process_name", "pid": i + 1, "tid": 0,
            "args": {"name": short}}),
        );
        ev.push(
            json!({"ph": "M", "name": "process_labels", "pid": i + 1, "tid": 0,
            "args": {"labels": s.name}}),
        );
        ev.push(
            json!({"ph": "M", "name": "process_sort_index", "pid": i + 1, "tid": 0,
            "args": {"sort_index": i + 1}}),
        );
    }
    if t.markers.iter().any(|m| m.session.is_none()) {
        ev.push(
            json!({"ph": "M", "name": "process_name", "pid": 0, "tid": 0,
            "args": {"name": "events without a session"}}),
        );
    }
    let mut threads = std::collections::BTreeSet::new();
    let hold_name = |h: &Hold| match h.lane.and_then(|l| t.names.get(l)) {
        Some(l) => format!("hold {l}"),
        None => "hold".to_owned(),
    };
    for h in &t.holds {
        threads.insert((h.session, h.proc));
        ev.push(json!({
            "ph": "X", "cat": "hold", "name": hold_name(h),
            "pid": tpid(Some(h.session)), "tid": tid(h.proc),
            "ts": rel(h.start), "dur": h.end - h.start,
            "args": {
                "pid": t.procs[h.proc].pid, "host": t.procs[h.proc].host,
                "lane": label(t, h.lane), "run": label(t, h.run), "epoch": h.epoch,
                "ended": h.how.describe(&t.procs), "waited_us": h.waited_us,
                "entries": h.entries, "bytes": h.bytes, "lost_at_us": h.lost_at.map(rel),
            },
        }));
    }
    for (s, p) in threads {
        let proc = &t.procs[p];
        ev.push(
            json!({"ph": "M", "name": "thread_name", "pid": tpid(Some(s)), "tid": tid(p),
            "args": {"name": format!("pid {} {}", proc.pid, proc.host)}}),
        );
    }
    let mut id = 0u64;
    let mut slice = |ev: &mut Vec<Value>,
                     cat: &str,
                     name: String,
                     pid: usize,
                     start: i64,
                     end: i64,
                     args: Value| {
        id += 1;
        let common = json!({"cat": cat, "name": name, "pid": pid, "tid": 0, "id": id});
        let mut b = common.clone();
        b["ph"] = json!("b");
        b["ts"] = json!(rel(start));
        b["args"] = args;
        let mut e = common;
        e["ph"] = json!("e");
        e["ts"] = json!(rel(end));
        ev.push(b);
        ev.push(e);
    };
    for w in &t.waits {
        let name = if w.gave_up { "wait (gave up)" } else { "wait" };
        let args = json!({"pid": t.procs[w.proc].pid, "lane": label(t, w.lane),
            "run": label(t, w.run), "holder_pid": w.holder_pid});
        slice(
            &mut ev,
            "wait",
            name.to_owned(),
            tpid(Some(w.session)),
            w.start,
            w.end,
            args,
        );
    }
    for p in &t.prompts {
        let args = json!({"pid": t.procs[p.proc].pid, "lane": label(t, p.lane),
            "run": label(t, p.run), "open": p.open});
        slice(
            &mut ev,
            "prompt",
            "prompt window".to_owned(),
            tpid(Some(p.session)),
            p.start,
            p.end,
            args,
        );
    }
    for m in &t.markers {
        ev.push(json!({
            "ph": "i", "s": "p", "cat": "marker", "name": m.kind.name(),
            "pid": tpid(m.session), "tid": tid(m.proc), "ts": rel(m.ts),
            "args": {"pid": t.procs[m.proc].pid, "lane": label(t, m.lane), "run": label(t, m.run),
                "epoch": m.epoch, "detail": m.detail},
        }));
    }
    json!({
        "traceEvents": ev,
        "displayTimeUnit": "ms",
        "otherData": {"start_utc": utc(t.start), "start_us": t.start, "source": "sessionlock timeline"},
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{model, read::Reader};
    use super::*;

    #[test]
    fn holds_are_complete_events_and_slices_pair_up() {
        let log = concat!(
            r#"{"v":1,"ts_us":1000,"pid":5,"host":"h","kind":"acquired","backend":"file","session":"/d/s1.jsonl","lane":"cron","epoch":1,"waited_us":300}"#,
            "\n",
            r#"{"v":1,"ts_us":1500,"pid":5,"host":"h","kind":"released","backend":"file","session":"/d/s1.jsonl","lane":"cron","epoch":1,"held_us":500}"#,
            "\n",
            r#"{"v":1,"ts_us":1600,"pid":6,"host":"h","kind":"fault","fault":"sigkill","target_pid":5}"#,
            "\n",
        );
        let mut r = Reader::new();
        r.read(Path::new("t"), log.as_bytes()).expect("read");
        let doc = trace(&model::build(r));
        let ev = doc["traceEvents"].as_array().expect("events");
        let holds: Vec<&Value> = ev.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(holds.len(), 1);
        assert_eq!(
            (holds[0]["ts"].as_i64(), holds[0]["dur"].as_i64()),
            (Some(300), Some(500))
        );
        assert_eq!(holds[0]["name"], "hold cron");
        let b = ev.iter().filter(|e| e["ph"] == "b").count();
        let e = ev.iter().filter(|e| e["ph"] == "e").count();
        assert_eq!((b, e), (1, 1), "one wait slice");
        let fault = ev.iter().find(|e| e["ph"] == "i").expect("the fault");
        assert_eq!(fault["pid"], 0);
        assert!(ev
            .iter()
            .any(|e| e["ph"] == "M" && e["args"]["name"] == "s1.jsonl"));
    }
}
