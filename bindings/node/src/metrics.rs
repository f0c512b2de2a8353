//! `metrics()`: the library's metrics (docs/design.md §20.1, names in
//! `sessionlock::observe::names`) of this process, as a plain object.
//!
//! The library records through the `metrics` facade; at module load this
//! module installs the process's recorder ([`install`]), which keeps, per
//! name and label set, a counter's total, a gauge's value and a
//! histogram's count and sum, each in atomics. [`metrics`] reads them into
//! JSON text that `index.js` parses:
//! `{ counters: {NAME: [{labels, value}]}, gauges: {...}, histograms:
//! {NAME: [{labels, count, sum}]} }`, every library metric's name present
//! (an empty list until it is recorded).
//!
//! A recorder of its own rather than `metrics-util`'s registry: its
//! `registry` feature pulls in the crate's sample storage (crossbeam-epoch,
//! rand, a sketch library), and its atomic histogram storage keeps every
//! sample until someone drains it, which a process nobody asks for
//! figures would grow without bound; a count and a sum are two atomics.
//! The registry here is a map under a read-write lock: a record takes the
//! read lock to find its cell (the write lock only the first time a label
//! set is seen) and updates it with one atomic operation.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use ::metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use napi_derive::napi;
use serde_json::{json, Map, Value};
use sessionlock::observe::names;

/// A histogram as this module keeps it: how many values, and their sum.
#[derive(Default)]
struct Summed {
    count: AtomicU64,
    /// The sum's `f64` bits.
    sum: AtomicU64,
}

impl HistogramFn for Summed {
    fn record(&self, value: f64) {
        // The sum first: a reader that sees the count sees at least the
        // sums of as many values (both relaxed: figures, not a protocol).
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// One kind's cells, by name and labels.
type Cells<T> = RwLock<HashMap<Key, Arc<T>>>;

/// Every cell recorded in this process.
#[derive(Default)]
struct Store {
    counters: Cells<AtomicU64>,
    /// A gauge's `f64` bits (the facade's `GaugeFn` for `AtomicU64`).
    gauges: Cells<AtomicU64>,
    histograms: Cells<Summed>,
}

static STORE: LazyLock<Store> = LazyLock::new(Store::default);

/// The cell of `key`, created the first time.
fn cell<T: Default>(cells: &Cells<T>, key: &Key) -> Arc<T> {
    if let Some(c) = cells
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
    {
        return Arc::clone(c);
    }
    let mut w = cells.write().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(w.entry(key.clone()).or_default())
}

/// The recorder installed at module load.
struct NodeRecorder;

impl Recorder for NodeRecorder {
    // Help texts and units are `names::ALL`'s; nothing to keep.
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(cell(&STORE.counters, key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(cell(&STORE.gauges, key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(cell(&STORE.histograms, key))
    }
}

/// Installs the recorder, once per process (per loaded copy of the
/// module, and `index.js` loads one, `instance.rs`). When the process has
/// another recorder already, that one keeps the figures and
/// [`metrics`] reports none (said once on stderr at `debug`).
pub(crate) fn install() {
    if let Err(e) = ::metrics::set_global_recorder(NodeRecorder) {
        tracing::debug!(error = %e, "metrics: another recorder is installed; metrics() stays empty");
    }
}

/// A cell's labels as a JSON object.
fn labels(key: &Key) -> Map<String, Value> {
    key.labels()
        .map(|l| (l.key().to_owned(), Value::from(l.value())))
        .collect()
}

/// One kind's figures: every name of `known` (possibly with no label set
/// yet), then any other name recorded; label sets sorted.
fn section<T>(
    cells: &Cells<T>,
    known: &[&str],
    figures: impl Fn(&T) -> Map<String, Value>,
) -> Map<String, Value> {
    let mut by_name: BTreeMap<String, Vec<(String, Value)>> = known
        .iter()
        .map(|n| ((*n).to_owned(), Vec::new()))
        .collect();
    for (key, c) in cells.read().unwrap_or_else(PoisonError::into_inner).iter() {
        let mut entry = Map::new();
        let labels = labels(key);
        let sort_key = Value::Object(labels.clone()).to_string();
        entry.insert("labels".to_owned(), Value::Object(labels));
        entry.extend(figures(c));
        by_name
            .entry(key.name().to_owned())
            .or_default()
            .push((sort_key, Value::Object(entry)));
    }
    by_name
        .into_iter()
        .map(|(name, mut entries)| {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            (
                name,
                Value::Array(entries.into_iter().map(|(_, e)| e).collect()),
            )
        })
        .collect()
}

fn known(kind: &str) -> Vec<&'static str> {
    names::ALL
        .iter()
        .filter(|(_, k, _, _)| *k == kind)
        .map(|(n, _, _, _)| *n)
        .collect()
}

/// The figures as JSON text (see the module's doc; `index.d.ts`,
/// `MetricsSnapshot`).
#[napi(js_name = "metrics")]
pub fn metrics_json() -> String {
    let counters = section(&STORE.counters, &known("counter"), |c| {
        let mut m = Map::new();
        m.insert("value".to_owned(), json!(c.load(Ordering::Relaxed)));
        m
    });
    let gauges = section(&STORE.gauges, &known("gauge"), |g| {
        let mut m = Map::new();
        m.insert(
            "value".to_owned(),
            json!(f64::from_bits(g.load(Ordering::Relaxed))),
        );
        m
    });
    let histograms = section(&STORE.histograms, &known("histogram"), |h| {
        let mut m = Map::new();
        m.insert("count".to_owned(), json!(h.count.load(Ordering::Relaxed)));
        m.insert(
            "sum".to_owned(),
            json!(f64::from_bits(h.sum.load(Ordering::Relaxed))),
        );
        m
    });
    json!({ "counters": counters, "gauges": gauges, "histograms": histograms }).to_string()
}
