//! A `tracing` layer that records every span and event with its fields,
//! as text: what the observability tests (`docs/design.md` §19) check the
//! library's spans and events against, on every backend.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// A span's or an event's fields as text, the way a subscriber would print them.
pub type Fields = BTreeMap<String, String>;

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

#[derive(Debug, Clone)]
pub struct SpanSeen {
    /// The span's name.
    pub name: String,
    /// Its target.
    pub target: String,
    /// Its level.
    pub level: Level,
    /// Its fields, as recorded by the time it closed.
    pub fields: Fields,
}

#[derive(Debug, Clone)]
pub struct EventSeen {
    /// The event's target.
    pub target: String,
    /// Its level.
    pub level: Level,
    /// Its message.
    pub message: String,
    /// Its other fields.
    pub fields: Fields,
    /// The spans it happened in, outermost first.
    pub scope: Vec<SpanSeen>,
}

/// What a [`Recorder`] saw.
#[derive(Default)]
pub struct Recorded {
    /// Every event, in order.
    pub events: Vec<EventSeen>,
    /// Spans as they were when they closed.
    pub closed: Vec<SpanSeen>,
}

/// Records every event with its spans, and every span when it closes.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Recorded>>);

impl Recorder {
    /// Whether an event recorded since the last `take` satisfies `pred`.
    pub fn any_event(&self, pred: impl FnMut(&EventSeen) -> bool) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .iter()
            .any(pred)
    }

    /// What was recorded since the last `take`.
    pub fn take(&self) -> Recorded {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        let meta = attrs.metadata();
        let seen = SpanSeen {
            name: meta.name().to_owned(),
            target: meta.target().to_owned(),
            level: *meta.level(),
            fields,
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(seen);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(seen) = span.extensions_mut().get_mut::<SpanSeen>() {
                values.record(&mut Visitor(&mut seen.fields));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        let scope = ctx
            .event_scope(event)
            .map(|s| {
                s.from_root()
                    .filter_map(|span| span.extensions().get::<SpanSeen>().cloned())
                    .collect()
            })
            .unwrap_or_default();
        let meta = event.metadata();
        let seen = EventSeen {
            target: meta.target().to_owned(),
            level: *meta.level(),
            message,
            fields,
            scope,
        };
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .push(seen);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            if let Some(seen) = span.extensions().get::<SpanSeen>().cloned() {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .closed
                    .push(seen);
            }
        }
    }
}

/// The process-wide recorder, installed as the global subscriber on first
/// use (a test binary of its own: the library's work runs on threads of its
/// own, the watchdog's and a backend runtime's, which only a global
/// subscriber sees).
///
/// # Panics
/// When another global subscriber was installed first.
pub fn recorder() -> &'static Recorder {
    static REC: OnceLock<Recorder> = OnceLock::new();
    REC.get_or_init(|| {
        let rec = Recorder::default();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(rec.clone()))
            .expect("no other global subscriber in this test binary");
        rec
    })
}
