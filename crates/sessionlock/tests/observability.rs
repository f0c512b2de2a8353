//! The library's spans and events, pinned to their documentation
//! (docs/design.md §19) so that neither can drift from the other.
//!
//! Two checks:
//! - From the source: every `tracing` event and span in the library and the
//!   PostgreSQL backend names an explicit target, a fixed message, no field
//!   rendered with `Debug`, and appears in the design's tables with the same
//!   level and fields; every row of the tables is still in the source.
//! - At run time: a scripted scenario (acquire and release, extension,
//!   contention and a hand-off, a reclaim of a dead holder's lock, a
//!   watchdog revocation, a lock removed under its holder, an invalid
//!   setting) under a recording subscriber: every acquisition runs inside a
//!   `sessionlock.acquire` span carrying `session`, `lane`, `run` and
//!   `epoch`, the guard's own events inside its `sessionlock.hold` span, and
//!   every event seen is one the design lists, none with a value rendered as
//!   `Some(..)`.
//!
//! The watchdog revokes on threads of its own, which a thread-local default
//! subscriber does not see: this binary installs a global one, and is a
//! binary of its own because a process has only one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sessionlock::{Config, Error, LockOptions, SessionLock, TryAcquireError};
use sessionlock_lab::trace_recorder::{recorder, EventSeen, Fields, Recorded, SpanSeen};
use tracing::Level;

// ------------------------------------------------------------ the documented

/// The design document, wherever this checkout keeps it (beside the crate,
/// or at the workspace's `docs/`).
fn design_doc() -> String {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for p in [
        crate_dir.join("docs/design.md"),
        crate_dir.join("../../docs/design.md"),
    ] {
        if let Ok(text) = std::fs::read_to_string(&p) {
            return text;
        }
    }
    panic!("no docs/design.md beside {}", crate_dir.display());
}

/// One documented span or event: its level, and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Documented {
    level: Level,
    fields: BTreeSet<String>,
}

/// Spans (by name) and events (by target and message), as §19 lists them.
#[derive(Debug, Default)]
struct Doc {
    targets: BTreeSet<String>,
    spans: BTreeMap<String, (String, Documented)>,
    events: BTreeMap<(String, String), Documented>,
}

/// The text of a markdown code span (`` `x` ``), if the cell is exactly one.
fn code(cell: &str) -> Option<&str> {
    let c = cell.trim();
    c.strip_prefix('`')?
        .strip_suffix('`')
        .filter(|s| !s.contains('`'))
}

/// The code spans of a cell (`` `a`, `b` ``), in order.
fn codes(cell: &str) -> BTreeSet<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn level(s: &str) -> Option<Level> {
    s.trim().parse().ok()
}

/// Parses §19's tables: a row whose cells are (span, target, level, fields,
/// ...) is a span; one whose cells are (target, level, message, fields, ...)
/// an event; one of the targets table starts with a target and has no level.
fn documented() -> Doc {
    let text = design_doc();
    let start = text
        .find("\n## 19. Observability: spans and events")
        .expect("docs/design.md has a §19, \"Observability: spans and events\"");
    let section = &text[start + 1..];
    let section = section[3..]
        .find("\n## ")
        .map_or(section, |end| &section[..end + 3]);
    let mut doc = Doc::default();
    for line in section.lines() {
        let line = line.trim();
        if !line.starts_with('|') || line.starts_with("|-") || line.starts_with("| -") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        if cells.len() < 2 {
            continue;
        }
        match (code(cells[0]), cells.get(1).and_then(|c| level(c))) {
            // An event: target, level, message, fields.
            (Some(target), Some(lvl)) if target.starts_with("sessionlock::") => {
                let message = code(cells[2])
                    .unwrap_or_else(|| panic!("an event's message in one code span: {line}"));
                let prev = doc.events.insert(
                    (target.to_owned(), message.to_owned()),
                    Documented {
                        level: lvl,
                        fields: codes(cells[3]),
                    },
                );
                assert!(prev.is_none(), "listed twice: {line}");
            }
            // A span: name, target, level, fields.
            (Some(name), None) if name.starts_with("sessionlock.") => {
                let target = code(cells[1]).expect("a span's target").to_owned();
                let lvl = level(cells[2]).expect("a span's level");
                doc.spans.insert(
                    name.to_owned(),
                    (
                        target,
                        Documented {
                            level: lvl,
                            fields: codes(cells[3]),
                        },
                    ),
                );
            }
            // A target.
            (Some(target), None) if target.starts_with("sessionlock::") => {
                doc.targets.insert(target.to_owned());
            }
            _ => {}
        }
    }
    assert!(
        !doc.events.is_empty() && !doc.spans.is_empty() && !doc.targets.is_empty(),
        "§19 lists targets, spans and events: {doc:?}"
    );
    doc
}

// ------------------------------------------------------------ the source

/// A `tracing` event or span call in the source.
#[derive(Debug)]
struct Call {
    at: String,
    level: Level,
    span: bool,
    target: Option<String>,
    /// The span's name, or the event's message.
    text: Option<String>,
    fields: BTreeSet<String>,
    /// Fields given with `?` (recorded with `Debug`).
    debug_fields: Vec<String>,
    /// Whether the text has `format!` arguments.
    formatted: bool,
}

/// Splits macro arguments at top-level commas, keeping string literals
/// (with their escapes) whole.
fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                cur.push(c);
                while let Some(d) = chars.next() {
                    cur.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            cur.push(e);
                        }
                    } else if d == '"' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                cur.push(c);
            }
            ')' | ']' | '}' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out.into_iter().map(|a| a.trim().to_owned()).collect()
}

/// The value of a string literal: escapes resolved, line continuations
/// (`\` and a newline) joined.
fn unquote(lit: &str) -> String {
    let inner = &lit[1..lit.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\n') => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            Some('n') => out.push('\n'),
            Some(o) => out.push(o),
            None => {}
        }
    }
    out
}

/// The argument list of a macro call starting at `open` (a `(`), and the
/// index past its `)`.
fn macro_args(src: &str, open: usize) -> (&str, usize) {
    let bytes = src.as_bytes();
    let mut depth = 0;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return (&src[open + 1..i], i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced macro call at byte {open}");
}

/// Every `tracing::<level>!` and `tracing::<level>_span!` call of a file
/// (comment lines skipped).
fn calls_in(file: &Path) -> Vec<Call> {
    let raw = std::fs::read_to_string(file).expect("read source");
    // Comment lines may quote a call; blank them, keeping offsets.
    let src: String = raw
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                " ".repeat(l.len())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = src[from..].find("tracing::") {
        let at = from + found;
        from = at + "tracing::".len();
        let rest = &src[from..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        let after = rest[name_len..].trim_start();
        if !after.starts_with('!') {
            continue;
        }
        let (lvl, span) = match name.strip_suffix("_span") {
            Some(l) => (l, true),
            None => (name, false),
        };
        let Some(level) = level(lvl) else {
            panic!(
                "{}: tracing::{name}! -- use the level macros",
                file.display()
            );
        };
        let open = from + name_len + rest[name_len..].find('(').expect("macro call");
        let (args, end) = macro_args(&src, open);
        let line = src[..at].lines().count() + 1;
        let mut call = Call {
            at: format!("{}:{line}", file.display()),
            level,
            span,
            target: None,
            text: None,
            fields: BTreeSet::new(),
            debug_fields: Vec::new(),
            formatted: false,
        };
        for arg in split_args(args) {
            if let Some(t) = arg.strip_prefix("target:") {
                call.target = Some(unquote(t.trim()));
            } else if arg.starts_with("parent:") {
            } else if arg.starts_with('"') && !(call.span && call.text.is_some()) {
                if call.text.is_none() {
                    call.text = Some(unquote(&arg));
                } else {
                    call.formatted = true;
                }
            } else if call.text.is_some() && !call.span {
                call.formatted = true;
            } else {
                let (name, value) = match arg.split_once('=') {
                    Some((n, v)) => (n.trim(), v.trim()),
                    None => (arg.trim_start_matches(['%', '?']), arg.as_str()),
                };
                if value.starts_with('?') {
                    call.debug_fields.push(name.to_owned());
                }
                call.fields.insert(name.to_owned());
            }
        }
        out.push(call);
        from = end;
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The calls of the library and of the PostgreSQL backend.
fn source_calls() -> Vec<Call> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&crate_dir.join("src"), &mut files);
    rust_files(&crate_dir.join("../sessionlock-postgres/src"), &mut files);
    files.sort();
    files.iter().flat_map(|f| calls_in(f)).collect()
}

#[test]
fn every_span_and_event_in_the_source_is_documented_and_every_documented_one_exists() {
    let doc = documented();
    let calls = source_calls();
    assert!(calls.len() > 20, "the scan found the calls: {calls:#?}");
    let mut problems = Vec::new();
    let mut seen_events = BTreeMap::<(String, String), (Level, BTreeSet<String>)>::new();
    let mut seen_spans = BTreeSet::new();
    for c in &calls {
        let (Some(target), Some(text)) = (&c.target, &c.text) else {
            problems.push(format!("{}: needs an explicit target and a message", c.at));
            continue;
        };
        if !doc.targets.contains(target) {
            problems.push(format!("{}: target {target} is not in §19's list", c.at));
        }
        if c.formatted || text.contains('{') {
            problems.push(format!(
                "{}: the message is fixed text; variable parts go in fields",
                c.at
            ));
        }
        if !c.debug_fields.is_empty() {
            problems.push(format!(
                "{}: fields {:?} are recorded with Debug; log values with Display",
                c.at, c.debug_fields
            ));
        }
        if c.span {
            seen_spans.insert(text.clone());
            match doc.spans.get(text) {
                None => problems.push(format!("{}: span {text} is not in §19", c.at)),
                Some((t, d)) => {
                    if t != target || d.level != c.level || d.fields != c.fields {
                        problems.push(format!(
                            "{}: span {text} is {target} {} {:?} in the source, {t} {} {:?} in §19",
                            c.at, c.level, c.fields, d.level, d.fields
                        ));
                    }
                }
            }
            continue;
        }
        let key = (target.clone(), text.clone());
        let entry = seen_events
            .entry(key.clone())
            .or_insert_with(|| (c.level, BTreeSet::new()));
        if entry.0 != c.level {
            problems.push(format!("{}: {key:?} is logged at two levels", c.at));
        }
        entry.1.extend(c.fields.iter().cloned());
        match doc.events.get(&key) {
            None => problems.push(format!("{}: event {target} \"{text}\" is not in §19", c.at)),
            Some(d) if d.level != c.level => problems.push(format!(
                "{}: \"{text}\" is {} in the source, {} in §19",
                c.at, c.level, d.level
            )),
            Some(_) => {}
        }
    }
    for (key, (_, fields)) in &seen_events {
        if let Some(d) = doc.events.get(key) {
            if &d.fields != fields {
                problems.push(format!(
                    "{key:?} has fields {fields:?} in the source, {:?} in §19",
                    d.fields
                ));
            }
        }
    }
    for key in doc.events.keys() {
        if !seen_events.contains_key(key) {
            problems.push(format!(
                "§19 lists {key:?}, which the source no longer logs"
            ));
        }
    }
    for name in doc.spans.keys() {
        if !seen_spans.contains(name) {
            problems.push(format!(
                "§19 lists span {name}, which the source no longer opens"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------ the scenario

fn opts() -> LockOptions {
    LockOptions::default().timeout(Some(Duration::from_secs(10)))
}

fn lock_path(session: &Path) -> PathBuf {
    let mut p = session.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Waits for `cond`, for at most 10 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A lock of sessionlock's own whose holder has exited.
fn plant_dead_holder(session: &Path) -> u32 {
    let pid = sessionlock_lab::testkit::dead_pid();
    let created = humantime::format_rfc3339_millis(SystemTime::now());
    let text = format!(
        "{{\"pid\":{pid},\"createdAt\":\"{created}\",\"maxHoldMs\":300000,\
         \"owner\":\"sessionlock\",\"epoch\":7}}\n"
    );
    std::fs::write(lock_path(session), text).expect("plant a lock");
    pid
}

/// Runs every scripted step, returning what to expect of the recording:
/// the sessions and their epochs.
struct Script {
    dir: tempfile::TempDir,
}

impl Script {
    fn session(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn the<'a>(events: &'a [EventSeen], target: &str, message: &str) -> Vec<&'a EventSeen> {
    events
        .iter()
        .filter(|e| e.target == target && e.message == message)
        .collect()
}

/// The innermost span of `name` an event happened in.
fn in_span<'a>(e: &'a EventSeen, name: &str) -> Option<&'a SpanSeen> {
    e.scope.iter().rev().find(|s| s.name == name)
}

fn field<'a>(fields: &'a Fields, name: &str) -> &'a str {
    fields
        .get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no field {name} in {fields:?}"))
}

#[test]
fn an_acquisition_lifecycle_logs_the_documented_events_in_its_spans() {
    let rec = recorder();
    let doc = documented();
    let script = Script {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let locks = SessionLock::new();
    let labelled = opts().lane("channel").run_id("run-1");

    // Acquire, extend, release.
    let plain = script.session("plain.jsonl");
    let g = locks.acquire_with(&plain, &labelled).expect("acquire");
    let plain_epoch = g.epoch();
    let plain_session = g.session_path().display().to_string();
    g.extend().expect("extend");
    g.release().expect("release");

    // The async twin.
    let asynchronous = script.session("async.jsonl");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let async_epoch = rt.block_on(async {
        let g = locks
            .acquire_async_with(&asynchronous, &labelled)
            .await
            .expect("acquire_async");
        let epoch = g.epoch();
        g.release().expect("release");
        epoch
    });

    // Contention: a try gives up at once; a queued thread gets the lock
    // handed over.
    let busy = script.session("busy.jsonl");
    let held = locks.acquire_with(&busy, &labelled).expect("acquire");
    match locks.try_acquire(&busy) {
        Err(TryAcquireError::WouldBlock(_)) => {}
        other => panic!("expected WouldBlock, got {other:?}"),
    }
    let waiter = {
        let (locks, busy) = (locks.clone(), busy.clone());
        std::thread::spawn(move || {
            let g = locks
                .acquire_with(&busy, &opts().lane("cron"))
                .expect("handed over");
            let epoch = g.epoch();
            g.release().expect("release");
            epoch
        })
    };
    wait_for("the waiter to queue", || {
        locks.queued(&busy).unwrap_or(0) > 0
    });
    held.release().expect("release to the waiter");
    let handed_epoch = waiter.join().expect("waiter");

    // A reclaim of a dead holder's lock.
    let stale = script.session("stale.jsonl");
    let dead = plant_dead_holder(&stale);
    let g = locks.acquire_with(&stale, &opts()).expect("reclaim");
    let reclaimed_epoch = g.epoch();
    g.release().expect("release");

    // The watchdog revokes a lock held past its lease.
    let overdue = script.session("overdue.jsonl");
    let g = locks
        .acquire_with(
            &overdue,
            &labelled.clone().max_hold(Duration::from_millis(50)),
        )
        .expect("acquire");
    let overdue_epoch = g.epoch();
    wait_for("the watchdog's revocation", || g.is_revoked());
    assert!(matches!(g.release(), Err(Error::Revoked { .. })));

    // A lock removed under its holder: the next fenced check finds it.
    let removed = script.session("removed.jsonl");
    let g = locks.acquire_with(&removed, &labelled).expect("acquire");
    std::fs::remove_file(lock_path(&removed)).expect("remove the lock");
    assert!(matches!(g.check(), Err(Error::Revoked { .. })));
    drop(g);

    // An invalid setting is ignored with a warning.
    std::env::set_var("SESSIONLOCK_MAX_HOLD_MS", "soon");
    let _ = Config::default().resolve();
    std::env::remove_var("SESSIONLOCK_MAX_HOLD_MS");

    // The revocation's warning comes from a thread of the watchdog's; the
    // hand-off's from the waiter, which has been joined.
    wait_for("the revocation's warning", || {
        rec.any_event(|e| e.target == "sessionlock::watchdog")
    });
    let Recorded { events, closed } = rec.take();
    let ours: Vec<EventSeen> = events
        .into_iter()
        .filter(|e| e.target.starts_with("sessionlock"))
        .collect();

    // Every event is documented, with its level, and no more fields.
    for e in &ours {
        let d = doc
            .events
            .get(&(e.target.clone(), e.message.clone()))
            .unwrap_or_else(|| panic!("undocumented event {e:#?}"));
        assert_eq!(d.level, e.level, "{e:#?}");
        let names: BTreeSet<String> = e.fields.keys().cloned().collect();
        assert!(names.is_subset(&d.fields), "undocumented fields in {e:#?}");
    }
    // No value is an `Option`'s `Debug`, in events or spans.
    for (what, fields) in ours
        .iter()
        .flat_map(|e| {
            std::iter::once((format!("{e:?}"), &e.fields))
                .chain(e.scope.iter().map(|s| (format!("{s:?}"), &s.fields)))
        })
        .chain(closed.iter().map(|s| (format!("{s:?}"), &s.fields)))
    {
        for v in fields.values() {
            assert!(!v.contains("Some("), "a value rendered with Debug: {what}");
        }
    }

    // Every acquisition ran in a span carrying session, lane, run, epoch.
    let acquisitions: Vec<&SpanSeen> = closed
        .iter()
        .filter(|s| s.name == "sessionlock.acquire")
        .collect();
    let documented_span = &doc.spans["sessionlock.acquire"];
    for s in &acquisitions {
        assert_eq!(s.target, documented_span.0, "{s:?}");
        assert_eq!(s.level, documented_span.1.level, "{s:?}");
    }
    let acquisition = |session: &str, epoch: u64| {
        acquisitions
            .iter()
            .find(|s| {
                s.fields.get("session").map(String::as_str) == Some(session)
                    && s.fields.get("epoch") == Some(&epoch.to_string())
            })
            .unwrap_or_else(|| panic!("no acquire span of {session} at {epoch}: {acquisitions:#?}"))
    };
    let span = acquisition(&plain_session, plain_epoch);
    assert_eq!(field(&span.fields, "lane"), "channel");
    assert_eq!(field(&span.fields, "run"), "run-1");
    let canonical = |p: &Path| {
        std::fs::canonicalize(p.parent().expect("dir"))
            .expect("canonical dir")
            .join(p.file_name().expect("name"))
            .display()
            .to_string()
    };
    let span = acquisition(&canonical(&asynchronous), async_epoch);
    assert_eq!(field(&span.fields, "lane"), "channel");
    let span = acquisition(&canonical(&busy), handed_epoch);
    assert_eq!(field(&span.fields, "lane"), "cron");
    assert!(
        !span.fields.contains_key("run"),
        "no run id, no field: {span:?}"
    );
    acquisition(&canonical(&stale), reclaimed_epoch);
    // The try that gave up: a span without an epoch.
    assert!(
        acquisitions.iter().any(|s| {
            s.fields.get("session") == Some(&canonical(&busy)) && !s.fields.contains_key("epoch")
        }),
        "{acquisitions:#?}"
    );
    let gave_up = the(
        &ours,
        "sessionlock::acquire",
        "gave up waiting for the session lock",
    );
    assert_eq!(gave_up.len(), 1, "{ours:#?}");
    assert_eq!(
        field(&gave_up[0].fields, "holder_pid"),
        std::process::id().to_string()
    );
    assert!(in_span(gave_up[0], "sessionlock.acquire").is_some());

    // Acquired, extended and released, each in its own span.
    let acquired = the(&ours, "sessionlock::acquire", "acquired session lock");
    let first = acquired
        .iter()
        .find(|e| e.fields.get("epoch") == Some(&plain_epoch.to_string()))
        .expect("the first acquisition's event");
    let s = in_span(first, "sessionlock.acquire").expect("inside the acquire span");
    assert_eq!(field(&s.fields, "session"), plain_session);
    let hold_of = |e: &EventSeen| {
        let s = in_span(e, "sessionlock.hold")
            .unwrap_or_else(|| panic!("not inside a hold span: {e:#?}"))
            .clone();
        assert!(
            in_span(e, "sessionlock.acquire").is_none(),
            "the hold is not inside the acquisition: {e:#?}"
        );
        s
    };
    let extended = the(&ours, "sessionlock::hold", "extended session lease");
    assert_eq!(extended.len(), 1, "{ours:#?}");
    let h = hold_of(extended[0]);
    assert_eq!(field(&h.fields, "session"), plain_session);
    assert_eq!(field(&h.fields, "epoch"), plain_epoch.to_string());
    assert_eq!(field(&h.fields, "lane"), "channel");
    assert_eq!(field(&h.fields, "run"), "run-1");
    let released = the(&ours, "sessionlock::hold", "released session lock");
    let handed: Vec<_> = released
        .iter()
        .filter(|e| field(&e.fields, "handed_off") == "true")
        .collect();
    assert_eq!(handed.len(), 1, "one hand-off: {released:#?}");
    assert_eq!(
        field(&hold_of(handed[0]).fields, "session"),
        canonical(&busy)
    );
    assert!(released.iter().any(|e| {
        field(&hold_of(e).fields, "epoch") == plain_epoch.to_string()
            && field(&e.fields, "handed_off") == "false"
    }));

    // The reclaim names the dead holder and why it was stale.
    let reclaims = the(
        &ours,
        "sessionlock::reclaim",
        "reclaimed stale session lock",
    );
    assert_eq!(reclaims.len(), 1, "{ours:#?}");
    let r = reclaims[0];
    assert_eq!(r.level, Level::INFO);
    assert_eq!(field(&r.fields, "holder_pid"), dead.to_string());
    assert_eq!(field(&r.fields, "holder_epoch"), "7");
    assert!(field(&r.fields, "reasons").contains("dead"), "{r:#?}");
    assert_eq!(
        Path::new(field(&r.fields, "lock")),
        lock_path(Path::new(&canonical(&stale)))
    );
    assert!(in_span(r, "sessionlock.acquire").is_some(), "{r:#?}");

    // The revocation, inside the hold it ends.
    let revoked = the(
        &ours,
        "sessionlock::watchdog",
        "revoked session lock held past its max hold",
    );
    assert_eq!(revoked.len(), 1, "{ours:#?}");
    let w = revoked[0];
    assert_eq!(w.level, Level::WARN);
    assert_eq!(field(&w.fields, "pid"), std::process::id().to_string());
    assert_eq!(field(&w.fields, "lane"), "channel");
    assert_eq!(field(&w.fields, "max_hold_ms"), "50");
    let h = hold_of(w);
    assert_eq!(field(&h.fields, "session"), canonical(&overdue));
    assert_eq!(field(&h.fields, "epoch"), overdue_epoch.to_string());

    // The loss to another program, inside its hold.
    let lost = the(
        &ours,
        "sessionlock::fence",
        "session lock lost to another program; its writes are refused from now on",
    );
    assert_eq!(lost.len(), 1, "{ours:#?}");
    assert_eq!(field(&lost[0].fields, "cause"), "removed");
    assert_eq!(
        field(&hold_of(lost[0]).fields, "session"),
        canonical(&removed)
    );

    // The ignored setting names the variable and its value.
    let ignored = the(
        &ours,
        "sessionlock::config",
        "ignoring an invalid environment variable",
    );
    assert_eq!(ignored.len(), 1, "{ours:#?}");
    assert_eq!(field(&ignored[0].fields, "var"), "SESSIONLOCK_MAX_HOLD_MS");
    assert_eq!(field(&ignored[0].fields, "value"), "soon");
}
