//! An acquisition through the PostgreSQL backend runs in the same spans as
//! one of files (docs/design.md §19): `sessionlock.acquire` with the key as
//! `session`, its lane, run and epoch; the guard's events in its
//! `sessionlock.hold` span; no value rendered as `Some(..)`. Its own binary:
//! the recorder is the process's global subscriber (the backend's work runs
//! on threads of its own runtime).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use sessionlock::{LockOptions, SessionLock, TryAcquireError};
use sessionlock_lab::pgserver::shared_url;
use sessionlock_postgres::PgBackend;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

mod common;
use common::fresh;

type Fields = BTreeMap<String, String>;

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// A span as it was when it closed, or an event with its spans.
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    fields: Fields,
    scope: Vec<(String, Fields)>,
}

#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<Seen>>>,
    closed: Arc<Mutex<Vec<Seen>>>,
}

fn push(to: &Mutex<Vec<Seen>>, s: Seen) {
    to.lock().unwrap_or_else(|p| p.into_inner()).push(s);
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(&mut Visitor(fields));
            }
        }
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        let name = fields.remove("message").unwrap_or_default();
        let scope = ctx
            .event_scope(event)
            .map(|s| {
                s.from_root()
                    .map(|span| {
                        let f = span.extensions().get::<Fields>().cloned();
                        (span.name().to_owned(), f.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        push(
            &self.events,
            Seen {
                name,
                fields,
                scope,
            },
        );
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            let fields = span.extensions().get::<Fields>().cloned();
            let seen = Seen {
                name: span.name().to_owned(),
                fields: fields.unwrap_or_default(),
                scope: Vec::new(),
            };
            push(&self.closed, seen);
        }
    }
}

fn recorder() -> &'static Recorder {
    static REC: OnceLock<Recorder> = OnceLock::new();
    REC.get_or_init(|| {
        let rec = Recorder::default();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(rec.clone()))
            .expect("no other global subscriber in this test binary");
        rec
    })
}

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

    let closed = rec.closed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let events = rec.events.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let ours: Vec<&Seen> = closed
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
            .find(|e| e.name == message)
            .unwrap_or_else(|| panic!("no {message:?} among {events:#?}"));
        let (name, hold) = e.scope.last().expect("inside a span");
        assert_eq!(name, "sessionlock.hold", "{e:#?}");
        assert_eq!(hold["session"], key);
        assert_eq!(hold["epoch"], epoch);
        assert_eq!(hold["lane"], "cron");
    }
    for s in closed.iter().chain(events.iter()) {
        for v in s.fields.values() {
            assert!(!v.contains("Some("), "a value rendered with Debug: {s:#?}");
        }
    }
}
