//! `sessionlock serve-metrics`: a directory's (or a PostgreSQL schema's)
//! locks, and the library's metrics of every process writing an event log,
//! served over HTTP in the Prometheus text format (docs/cli.md, design
//! §20.1).
//!
//! Every `--interval` the command refreshes two sets of figures:
//!
//! - **From the outside**: the status snapshot of each directory or schema
//!   (the scan `sessionlock status` makes), as gauges labelled `backend`
//!   and `scope` (the directory, or the schema and key prefix; never a
//!   session): locks held, stale locks, processes waiting in line, stuck
//!   processes, the oldest hold's age ([`SCOPE`]).
//! - **From the event logs** (`--events FILE`, design §20.2): the library's
//!   own metrics (design §20.1, `sessionlock::observe::names`), under the
//!   same names and labels, computed from the lines of every process
//!   writing the file. A dashboard built on a program's in-process exporter
//!   works on this command's output too. Each file is tailed: new complete
//!   lines since the last read; a truncated file is read again from its
//!   start, a file replaced by another (rotated) is read to its end and the
//!   new one from its start; a line that is not an event is skipped and
//!   counted ([`BAD_LINES_TOTAL`]).
//!
//! Rendering is `metrics-exporter-prometheus`'s (histograms with the
//! buckets [`BUCKETS`]); the HTTP side is a small blocking server on a
//! standard listener: `GET /metrics` and nothing else, one request per
//! connection, so that the command binds (and reports) the address itself,
//! port 0 included.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use metrics::{Key, KeyName, Label, Metadata, Recorder as _, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde_json::{Map, Value};
use sessionlock::observe::names;
use sessionlock::reclaim::Action;
use sessionlock::status::LockStatus;
use sessionlock::{Config, Settings};
use sessionlock_lab::backend_choice::BackendChoice;
use sessionlock_lab::testkit::block_on;
use sessionlock_postgres::PgBackend;

use super::lock::{pg_backend, pg_prefixes};
use crate::exit;
use crate::help::{ExitRow, Status};
use crate::output::{self, report};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The address to serve on, `HOST:PORT` (port 0: any free port; the
    /// address is printed).
    #[arg(long, value_name = "HOST:PORT")]
    listen: SocketAddr,
    /// An event log to tail (the file SESSIONLOCK_EVENT_LOG names in the
    /// processes that take the locks): the library's own metrics are
    /// computed from its lines. Repeat for several files.
    #[arg(long = "events", value_name = "FILE")]
    events: Vec<PathBuf>,
    /// How often the figures are refreshed (`500ms`, `1s`, `1m`).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// Directories of session transcripts and their locks, as `status`
    /// takes them; or one postgres:// URL (a whole schema). With a postgres
    /// `--backend`: key prefixes instead (default: every lease).
    #[arg(value_name = "DIR|URL")]
    targets: Vec<PathBuf>,
}

/// What `--help` adds after the options.
pub(crate) const NOTES: &str = "\
Metrics served (Prometheus text format, GET /metrics):
  sessionlock_scope_*       each directory or schema as a whole, from a
                            status scan every --interval: locks held and
                            stale, processes waiting in line and stuck, the
                            oldest hold's age (labels backend, scope)
  sessionlock_* of the      the library's own metrics (docs/design.md §20.1),
  library                   computed from the --events files' lines, under
                            the names and labels an in-process exporter uses
  sessionlock_event_log_*   lines that were not events, events the writers
                            dropped

Examples:
  sessionlock serve-metrics --listen 127.0.0.1:9185 /srv/sessions
  SESSIONLOCK_EVENT_LOG=/var/log/sessionlock.jsonl gateway &
  sessionlock serve-metrics --listen 127.0.0.1:9185 \\
      --events /var/log/sessionlock.jsonl /srv/sessions
  sessionlock serve-metrics --listen 127.0.0.1:9185 postgres://gw@db/app";

/// `serve-metrics`' exit statuses: it serves until killed.
pub(crate) const EXIT_STATUS: &[ExitRow] = &[
    (
        Status::Is(exit::OK),
        "stopped by SIGINT (Ctrl-C) or SIGTERM after serving; a scope or event log that \
         could not be read meanwhile was reported on stderr and in sessionlock_scope_up",
    ),
    (
        Status::Is(exit::ERROR),
        "it could not start: the address cannot be listened on (taken, not this machine's), \
         a directory or an event log cannot be read, the server cannot be reached",
    ),
];

/// The buckets of both histograms (`sessionlock_acquire_wait_seconds`,
/// `sessionlock_hold_seconds`), in seconds: from half a millisecond (an
/// uncontended acquire) to half an hour (a long turn). Give an in-process
/// exporter the same ones (`set_buckets_for_metric`) to merge the two.
pub(crate) const BUCKETS: [f64; 20] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// The gauges of a scope (a directory or a schema) as a whole: name, help.
pub(crate) const SCOPE: [(&str, &str); 7] = [
    (
        SCOPE_LOCKS_HELD,
        "Session locks held by a holder that may be alive and within its lease (a contender waits).",
    ),
    (
        SCOPE_LOCKS_STALE,
        "Session locks a contender would take over or report: dead holder, lease exceeded, malformed.",
    ),
    (
        SCOPE_LOCKS_UNREADABLE,
        "Session locks that could not be read.",
    ),
    (
        SCOPE_WAITING,
        "Processes waiting in the sessions' lines for their locks.",
    ),
    (
        SCOPE_STUCK,
        "Processes stuck inside a protocol step holding a session's state lock.",
    ),
    (
        SCOPE_OLDEST_HOLD_SECONDS,
        "Age of the oldest lock held (0 when none is).",
    ),
    (
        SCOPE_UP,
        "1 when the last scan read the scope, 0 when it could not.",
    ),
];
const SCOPE_LOCKS_HELD: &str = "sessionlock_scope_locks_held";
const SCOPE_LOCKS_STALE: &str = "sessionlock_scope_locks_stale";
const SCOPE_LOCKS_UNREADABLE: &str = "sessionlock_scope_locks_unreadable";
const SCOPE_WAITING: &str = "sessionlock_scope_waiting";
const SCOPE_STUCK: &str = "sessionlock_scope_stuck";
const SCOPE_OLDEST_HOLD_SECONDS: &str = "sessionlock_scope_oldest_hold_seconds";
const SCOPE_UP: &str = "sessionlock_scope_up";

/// Lines of the event logs that were not events (counter; label `reason`:
/// `json` not a JSON object, `version` another schema version, `fields` a
/// known kind without its fields, `too_long` a line over [`MAX_LINE`]).
pub(crate) const BAD_LINES_TOTAL: &str = "sessionlock_event_log_bad_lines_total";
/// Events the writing processes said they dropped (`dropped` lines).
pub(crate) const DROPPED_EVENTS_TOTAL: &str = "sessionlock_event_log_dropped_events_total";

/// The longest line kept while waiting for its end: past it, the line is
/// skipped as bad (no event is that long).
const MAX_LINE: usize = 1 << 20;

/// How long a rotated-away event log is still read after it last grew: its
/// writers keep their file open until they restart.
const RETIRE_AFTER: Duration = Duration::from_secs(300);

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try `500ms`, `1s`, `1m`)"))?;
    if d < Duration::from_millis(10) {
        return Err("at least 10ms".to_owned());
    }
    Ok(d)
}

pub(crate) fn run(args: Args, backend: &BackendChoice) -> anyhow::Result<ExitCode> {
    let settings = Config::default().resolve();
    let source = Source::of(&args.targets, backend)?;
    let mut tails = Vec::with_capacity(args.events.len());
    for path in &args.events {
        tails.push(Tail::open(path)?);
    }
    let listener = TcpListener::bind(args.listen).map_err(|e| listen_error(e, args.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;

    let exporter = Exporter::new()?;
    let handle = exporter.handle();
    let mut refresher = Refresher {
        source,
        settings,
        tails,
        exporter,
        waiters: Waiters::default(),
        unreadable: BTreeSet::new(),
    };
    stop_on_signals()?;
    // The first scrape finds figures.
    refresher.refresh();
    println!("serving metrics at http://{addr}/metrics");
    let _ = io::stdout().flush();

    let interval = args.interval;
    std::thread::Builder::new()
        .name("refresh".into())
        .spawn(move || {
            let mut next = Instant::now();
            loop {
                next += interval;
                let now = Instant::now();
                match next.checked_duration_since(now) {
                    Some(wait) => std::thread::sleep(wait),
                    None => next = now,
                }
                refresher.refresh();
            }
        })
        .context("cannot start the refreshing thread")?;
    serve(&listener, &handle);
    Ok(ExitCode::SUCCESS)
}

/// Ends the process with status 0 on SIGINT or SIGTERM: stopping the
/// server is its normal end.
fn stop_on_signals() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("cannot start the signal watcher")?;
    // Registered here, before the address is printed: a signal sent once
    // it is ends the server as described.
    let (mut int, mut term) = rt
        .block_on(async {
            Ok::<_, io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .context("cannot watch SIGINT and SIGTERM")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
            let _ = io::stdout().flush();
            std::process::exit(0);
        })
        .context("cannot start the signal watcher")?;
    Ok(())
}

/// The error for an address that cannot be listened on, with a hint.
fn listen_error(e: io::Error, addr: SocketAddr) -> anyhow::Error {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => {
            " (another program listens there: pick another port, or port 0 for any free one)"
        }
        io::ErrorKind::AddrNotAvailable => " (no interface of this machine has that address)",
        io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
        _ => "",
    };
    anyhow::Error::new(e).context(format!("cannot listen on {addr}{hint}"))
}

// ------------------------------------------------------------------ sources

/// What the status gauges scan.
enum Source {
    /// Directories of the file backend.
    Files(Vec<PathBuf>),
    /// A PostgreSQL schema, under key prefixes (the empty one: every key).
    Pg {
        backend: PgBackend,
        prefixes: Vec<String>,
    },
}

impl Source {
    /// The source the arguments name: a postgres:// URL among the targets
    /// or as `--backend`, else directories, which must exist.
    fn of(targets: &[PathBuf], backend: &BackendChoice) -> anyhow::Result<Source> {
        let is_url = |p: &PathBuf| {
            p.to_str()
                .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
        };
        let urls: Vec<&PathBuf> = targets.iter().filter(|p| is_url(p)).collect();
        let (url, prefixes) = match (backend, urls.as_slice()) {
            (BackendChoice::Postgres(_), [_, ..]) => {
                anyhow::bail!("give the postgres:// URL once: as --backend, or as the argument")
            }
            (BackendChoice::Postgres(url), []) => (url.clone(), pg_prefixes(targets)),
            (_, [url]) if targets.len() == 1 => (
                url.to_str().unwrap_or_default().to_owned(),
                vec![String::new()],
            ),
            (_, [_, ..]) => anyhow::bail!(
                "give either directories or one postgres:// URL (for key prefixes, pass the URL \
                 as --backend and the prefixes as arguments)"
            ),
            _ => return Source::dirs(targets),
        };
        let backend = pg_backend(&url)?;
        Ok(Source::Pg { backend, prefixes })
    }

    fn dirs(targets: &[PathBuf]) -> anyhow::Result<Source> {
        if targets.is_empty() {
            super::status::missing_dirs("serve-metrics");
        }
        for dir in targets {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => anyhow::bail!(
                    "{} is not a directory: pass the directory that holds the session \
                     transcripts (`*.jsonl`) and their `.lock` files",
                    output::path(dir)
                ),
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot read the directory {}", output::path(dir))))
                }
            }
        }
        Ok(Source::Files(targets.to_vec()))
    }
}

/// The status figures of one scope.
#[derive(Default, Debug, PartialEq)]
struct ScopeFigures {
    held: u64,
    stale: u64,
    unreadable: u64,
    waiting: u64,
    stuck: u64,
    oldest_hold: Duration,
}

impl ScopeFigures {
    fn add<K, V>(&mut self, st: &LockStatus<K, V>) {
        if matches!(st.action, Action::Wait { .. }) {
            self.held += 1;
            let age = Duration::from_millis(st.holder.age_ms.unwrap_or(0));
            self.oldest_hold = self.oldest_hold.max(age);
        } else {
            self.stale += 1;
        }
        self.waiting += st.contention.waiting.len() as u64;
        self.stuck += u64::from(st.contention.stuck.is_some());
    }
}

// ---------------------------------------------------------------- refreshing

/// Everything a refresh updates; owned by the refreshing thread.
struct Refresher {
    source: Source,
    settings: Settings,
    tails: Vec<Tail>,
    exporter: Exporter,
    waiters: Waiters,
    /// The scopes whose last scan failed (reported once, until they work).
    unreadable: BTreeSet<String>,
}

impl Refresher {
    fn refresh(&mut self) {
        self.scan();
        for tail in &mut self.tails {
            let (exporter, waiters) = (&self.exporter, &mut self.waiters);
            tail.poll(|line| feed(exporter, waiters, line));
        }
        self.waiters.forget_dead();
        for (backend, n) in self.waiters.by_backend() {
            self.exporter
                .gauge(names::WAITERS, &[("backend", backend)])
                .set(n as f64);
        }
    }

    /// Scans every scope, setting its gauges.
    fn scan(&mut self) {
        let scanned: Vec<(&'static str, String, Result<ScopeFigures, String>)> = match &self.source
        {
            Source::Files(dirs) => dirs
                .iter()
                .map(|dir| {
                    let scope = dir.to_string_lossy().into_owned();
                    let figures = sessionlock::status::scan_dir(dir, &self.settings)
                        .map(|locks| {
                            let mut f = ScopeFigures::default();
                            for l in &locks {
                                match l {
                                    Ok(st) => f.add(st),
                                    Err(_) => f.unreadable += 1,
                                }
                            }
                            f
                        })
                        .map_err(|e| e.to_string());
                    ("file", scope, figures)
                })
                .collect(),
            Source::Pg { backend, prefixes } => prefixes
                .iter()
                .map(|prefix| {
                    let scope = if prefix.is_empty() {
                        backend.schema().to_owned()
                    } else {
                        format!("{}/{prefix}", backend.schema())
                    };
                    let figures = block_on(sessionlock::status::list(
                        backend,
                        prefix.as_str(),
                        &self.settings,
                    ))
                    .map(|listed| {
                        let mut f = ScopeFigures::default();
                        for e in &listed {
                            match e {
                                sessionlock::status::Explained::Lock(st) => f.add(st),
                                sessionlock::status::Explained::Unreadable { .. } => {
                                    f.unreadable += 1;
                                }
                            }
                        }
                        // The listing has no queues on PostgreSQL: who
                        // waits is in the waiters table (left at 0 when
                        // it cannot be read).
                        if let Ok((queues, _)) = block_on(backend.waiters(prefix.as_str())) {
                            f.waiting = queues.values().map(|q| q.len() as u64).sum();
                        }
                        f
                    })
                    .map_err(|e| e.to_string());
                    ("postgres", scope, figures)
                })
                .collect(),
        };
        for (backend, scope, figures) in scanned {
            let labels = [("backend", backend.to_owned()), ("scope", scope.clone())];
            let set = |name: &'static str, v: f64| self.exporter.gauge(name, &labels).set(v);
            match figures {
                Ok(f) => {
                    if self.unreadable.remove(&scope) {
                        eprintln!("{}: readable again", output::escape(&scope));
                    }
                    set(SCOPE_UP, 1.0);
                    set(SCOPE_LOCKS_HELD, f.held as f64);
                    set(SCOPE_LOCKS_STALE, f.stale as f64);
                    set(SCOPE_LOCKS_UNREADABLE, f.unreadable as f64);
                    set(SCOPE_WAITING, f.waiting as f64);
                    set(SCOPE_STUCK, f.stuck as f64);
                    set(SCOPE_OLDEST_HOLD_SECONDS, f.oldest_hold.as_secs_f64());
                }
                Err(e) => {
                    // The other gauges keep their last values; `up` says
                    // they are old.
                    set(SCOPE_UP, 0.0);
                    if self.unreadable.insert(scope) {
                        report(&anyhow::anyhow!(e).context("cannot scan"), None);
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------ exporter

/// The Prometheus recorder the figures are recorded into (not installed
/// globally: this command records only what it computes).
struct Exporter {
    recorder: PrometheusRecorder,
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Exporter {
    fn new() -> anyhow::Result<Exporter> {
        let builder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .context("cannot set the histogram buckets")?;
        let recorder = builder.build_recorder();
        for (name, kind, unit, help) in names::ALL {
            let unit = match unit {
                "seconds" => Some(Unit::Seconds),
                "bytes" => Some(Unit::Bytes),
                _ => None,
            };
            let (name, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
            match kind {
                "counter" => recorder.describe_counter(name, unit, help),
                "gauge" => recorder.describe_gauge(name, unit, help),
                _ => recorder.describe_histogram(name, unit, help),
            }
        }
        for (name, help) in SCOPE {
            let unit = name.ends_with("_seconds").then_some(Unit::Seconds);
            recorder.describe_gauge(
                KeyName::from_const_str(name),
                unit,
                SharedString::const_str(help),
            );
        }
        recorder.describe_counter(
            KeyName::from_const_str(BAD_LINES_TOTAL),
            None,
            SharedString::const_str("Event log lines skipped because they were not events."),
        );
        recorder.describe_counter(
            KeyName::from_const_str(DROPPED_EVENTS_TOTAL),
            None,
            SharedString::const_str("Events the writing processes dropped, as their logs say."),
        );
        Ok(Exporter { recorder })
    }

    fn handle(&self) -> PrometheusHandle {
        self.recorder.handle()
    }

    fn key(name: &'static str, labels: &[(&'static str, String)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.clone()))
            .collect();
        Key::from_parts(name, labels)
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, String)]) -> metrics::Counter {
        self.recorder
            .register_counter(&Exporter::key(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, String)]) -> metrics::Gauge {
        self.recorder
            .register_gauge(&Exporter::key(name, labels), &METADATA)
    }

    fn histogram(
        &self,
        name: &'static str,
        labels: &[(&'static str, String)],
    ) -> metrics::Histogram {
        self.recorder
            .register_histogram(&Exporter::key(name, labels), &METADATA)
    }
}

// -------------------------------------------------------------- event lines

/// Why a line is not an event ([`BAD_LINES_TOTAL`]'s `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    Json,
    Version,
    Fields,
    TooLong,
}

impl Bad {
    fn as_str(self) -> &'static str {
        match self {
            Bad::Json => "json",
            Bad::Version => "version",
            Bad::Fields => "fields",
            Bad::TooLong => "too_long",
        }
    }
}

/// Records one line of an event log (a complete line, without its `\n`).
fn feed(exporter: &Exporter, waiters: &mut Waiters, line: Result<&[u8], Bad>) {
    if let Err(bad) = line.and_then(|l| record(exporter, waiters, l)) {
        exporter
            .counter(BAD_LINES_TOTAL, &[("reason", bad.as_str().to_owned())])
            .increment(1);
    }
}

/// One event's fields, read leniently: a reader ignores fields it does not
/// know, and a field it needs but cannot read makes the line bad.
struct Event(Map<String, Value>);

impl Event {
    fn str(&self, k: &str) -> Result<String, Bad> {
        self.0
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(Bad::Fields)
    }

    /// A label that may be absent (the lane: empty when unset, as the
    /// library labels it).
    fn label(&self, k: &str) -> Result<String, Bad> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Bad::Fields),
        }
    }

    fn u64(&self, k: &str) -> Result<u64, Bad> {
        self.0.get(k).and_then(Value::as_u64).ok_or(Bad::Fields)
    }

    fn secs(&self, k: &str) -> Result<f64, Bad> {
        self.u64(k).map(|us| us as f64 / 1e6)
    }
}

/// Records an event: the metrics the library recorded when it happened
/// (sessionlock's `observe` module, one arm per kind). Kinds this version
/// does not know are ignored, as the schema asks.
fn record(exporter: &Exporter, waiters: &mut Waiters, line: &[u8]) -> Result<(), Bad> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(line) else {
        return Err(Bad::Json);
    };
    let e = Event(map);
    if e.0.get("v").and_then(Value::as_u64) != Some(u64::from(sessionlock::observe::SCHEMA_VERSION))
    {
        return Err(Bad::Version);
    }
    let kind = e.str("kind")?;
    let pid = u32::try_from(e.u64("pid")?).map_err(|_| Bad::Fields)?;
    let host = e.label("host")?;
    if kind == "dropped" {
        exporter
            .counter(DROPPED_EVENTS_TOTAL, &[])
            .increment(e.u64("events")?);
        return Ok(());
    }
    if !KNOWN.contains(&kind.as_str()) {
        return Ok(());
    }
    let backend = ("backend", e.str("backend")?);
    let lane = || e.label("lane").map(|l| ("lane", l));
    let wait = |outcome: &str| -> Result<(), Bad> {
        exporter
            .histogram(
                names::ACQUIRE_WAIT_SECONDS,
                &[backend.clone(), lane()?, ("outcome", outcome.to_owned())],
            )
            .record(e.secs("waited_us")?);
        Ok(())
    };
    let hold = |end: &str| -> Result<(), Bad> {
        exporter
            .histogram(
                names::HOLD_SECONDS,
                &[backend.clone(), lane()?, ("end", end.to_owned())],
            )
            .record(e.secs("held_us")?);
        Ok(())
    };
    match kind.as_str() {
        "acquired" | "gave-up" | "failed" => {
            wait(match kind.as_str() {
                "acquired" => "acquired",
                "gave-up" => "timeout",
                _ => "error",
            })?;
            waiters.done(&host, pid, &backend.1, &e.label("session")?);
        }
        "cancelled" => waiters.done(&host, pid, &backend.1, &e.label("session")?),
        "released" => {
            let handed_off = e.0.get("handed_off").and_then(Value::as_bool);
            let Some(handed_off) = handed_off else {
                return Err(Bad::Fields);
            };
            hold(if e.0.contains_key("error") {
                "release_failed"
            } else if handed_off {
                "handed_off"
            } else {
                "released"
            })?;
            if handed_off {
                exporter
                    .counter(names::HANDOFFS_TOTAL, &[backend.clone(), lane()?])
                    .increment(1);
            }
        }
        "revoked" => {
            let cause = e.str("cause")?;
            hold("revoked")?;
            exporter
                .counter(
                    names::REVOCATIONS_TOTAL,
                    &[backend.clone(), lane()?, ("cause", cause)],
                )
                .increment(1);
        }
        "reclaimed" => {
            let reasons = e.0.get("reasons").and_then(Value::as_array);
            let Some(reasons) = reasons else {
                return Err(Bad::Fields);
            };
            let reason = reasons
                .first()
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned();
            exporter
                .counter(
                    names::RECLAIMS_TOTAL,
                    &[backend.clone(), ("reason", reason)],
                )
                .increment(1);
        }
        "refused" => {
            let error = e.str("error")?;
            exporter
                .counter(
                    names::FENCED_WRITES_REFUSED_TOTAL,
                    &[backend.clone(), lane()?, ("error", error)],
                )
                .increment(1);
        }
        "appended" => {
            let (entries, bytes) = (e.u64("entries")?, e.u64("bytes")?);
            let labels = [backend.clone()];
            exporter
                .counter(names::TRANSCRIPT_APPENDS_TOTAL, &labels)
                .increment(1);
            exporter
                .counter(names::TRANSCRIPT_ENTRIES_TOTAL, &labels)
                .increment(entries);
            exporter
                .counter(names::TRANSCRIPT_BYTES_TOTAL, &labels)
                .increment(bytes);
        }
        "repaired" => {
            exporter
                .counter(
                    names::TORN_TAILS_REPAIRED_TOTAL,
                    std::slice::from_ref(&backend),
                )
                .increment(1);
        }
        "takeover" => {
            let kind = e.str("cause")?;
            exporter
                .counter(names::TAKEOVERS_TOTAL, &[backend.clone(), ("kind", kind)])
                .increment(1);
        }
        "queued" => waiters.queued(&host, pid, &backend.1, &e.str("session")?),
        _ => {}
    }
    Ok(())
}

/// The kinds that carry a `backend` (the lock events).
const KNOWN: [&str; 12] = [
    "acquired",
    "gave-up",
    "failed",
    "cancelled",
    "released",
    "revoked",
    "reclaimed",
    "refused",
    "appended",
    "repaired",
    "takeover",
    "queued",
];

/// The `sessionlock_waiters` gauge from the logs: acquisitions that took
/// a place in a session's line (`queued`) and have not ended yet
/// (`acquired`, `gave-up`, `failed` of the same process and session). A
/// process of this machine that is gone no longer waits.
#[derive(Default)]
struct Waiters {
    /// (host, pid, backend, session) -> acquisitions in line.
    waiting: HashMap<(String, u32, String, String), u64>,
    /// Every backend seen, so that its gauge goes back to 0.
    backends: BTreeSet<String>,
}

impl Waiters {
    fn queued(&mut self, host: &str, pid: u32, backend: &str, session: &str) {
        self.backends.insert(backend.to_owned());
        *self
            .waiting
            .entry((host.to_owned(), pid, backend.to_owned(), session.to_owned()))
            .or_default() += 1;
    }

    fn done(&mut self, host: &str, pid: u32, backend: &str, session: &str) {
        let key = (host.to_owned(), pid, backend.to_owned(), session.to_owned());
        if let Some(n) = self.waiting.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.waiting.remove(&key);
            }
        }
    }

    fn forget_dead(&mut self) {
        let here = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        self.waiting.retain(|(host, pid, _, _), _| {
            *host != here || Path::new(&format!("/proc/{pid}")).exists()
        });
    }

    fn by_backend(&self) -> Vec<(String, u64)> {
        self.backends
            .iter()
            .map(|b| {
                let n = self
                    .waiting
                    .iter()
                    .filter(|((_, _, backend, _), _)| backend == b)
                    .map(|(_, n)| n)
                    .sum();
                (b.clone(), n)
            })
            .collect()
    }
}

// ------------------------------------------------------------------ tailing

/// An event log read as it grows.
struct Tail {
    path: PathBuf,
    /// The file the path names now, once it exists.
    current: Option<Reading>,
    /// Files rotated away, read until they stop growing.
    retired: Vec<Reading>,
    /// Whether the last poll failed (reported once, until it works).
    failing: bool,
}

/// One file being read.
struct Reading {
    file: File,
    /// (device, inode): a path naming another file was rotated.
    id: (u64, u64),
    /// Where the next read starts.
    offset: u64,
    /// The start of a line whose end has not been written yet.
    partial: Vec<u8>,
    /// Whether the line being read is too long, and skipped to its end.
    skipping: bool,
    /// When the file last grew.
    grew: Instant,
}

impl Reading {
    fn open(path: &Path) -> io::Result<Reading> {
        // Non-blocking, so that a FIFO at the path cannot hang the
        // command; only a regular file is an event log to tail.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(path)?;
        let m = file.metadata()?;
        if !m.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(Reading {
            file,
            id: (m.dev(), m.ino()),
            offset: 0,
            partial: Vec::new(),
            skipping: false,
            grew: Instant::now(),
        })
    }

    /// Reads what was added since the last read, handing each complete line
    /// to `f`; the start of an unfinished one is kept for next time.
    fn read_new(&mut self, f: &mut impl FnMut(Result<&[u8], Bad>)) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        if len < self.offset {
            // Truncated (copytruncate): start again from its start.
            self.offset = 0;
            self.partial.clear();
            self.skipping = false;
        }
        if len == self.offset {
            return Ok(());
        }
        self.grew = Instant::now();
        self.file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::new((&self.file).take(len - self.offset));
        loop {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let end = buf.iter().position(|&b| b == b'\n');
            let used = end.map_or(buf.len(), |i| i + 1);
            if !self.skipping {
                self.partial.extend_from_slice(&buf[..end.unwrap_or(used)]);
            }
            reader.consume(used);
            self.offset += used as u64;
            if end.is_some() {
                if !self.skipping && !self.partial.iter().all(u8::is_ascii_whitespace) {
                    f(Ok(&self.partial));
                }
                self.partial.clear();
                self.skipping = false;
            } else if self.partial.len() > MAX_LINE {
                // A line this long is no event: skip it, up to its end.
                f(Err(Bad::TooLong));
                self.partial.clear();
                self.skipping = true;
            }
        }
        Ok(())
    }
}

impl Tail {
    /// Starts tailing `path` from its start. A missing file is waited for
    /// (its writers create it); one that exists but cannot be read is an
    /// error.
    fn open(path: &Path) -> anyhow::Result<Tail> {
        let current = match Reading::open(path) {
            Ok(r) => Some(r),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                if !parent.is_dir() {
                    anyhow::bail!(
                        "cannot read the event log {}: its directory {} does not exist",
                        output::path(path),
                        output::path(parent)
                    );
                }
                eprintln!(
                    "note: the event log {} does not exist yet; it is read once a process \
                     writes it",
                    output::path(path)
                );
                None
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot read the event log {}", output::path(path))))
            }
        };
        if let Some(r) = &current {
            if r.file.metadata().is_ok_and(|m| m.is_dir()) {
                anyhow::bail!(
                    "cannot read the event log {}: it is a directory",
                    output::path(path)
                );
            }
        }
        Ok(Tail {
            path: path.to_owned(),
            current,
            retired: Vec::new(),
            failing: false,
        })
    }

    /// Reads the new lines of every file of this log.
    fn poll(&mut self, mut f: impl FnMut(Result<&[u8], Bad>)) {
        let result = self.poll_inner(&mut f);
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                eprintln!("{}: readable again", output::path(&self.path));
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                report(
                    &anyhow::Error::new(e).context(format!(
                        "cannot read the event log {}",
                        output::path(&self.path)
                    )),
                    None,
                );
            }
            Err(_) => {}
        }
    }

    fn poll_inner(&mut self, f: &mut impl FnMut(Result<&[u8], Bad>)) -> io::Result<()> {
        // Rotated: the path names another file now.
        let now = match std::fs::metadata(&self.path) {
            Ok(m) => Some((m.dev(), m.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let (Some(id), Some(cur)) = (now, &self.current) {
            if cur.id != id {
                if let Some(old) = self.current.take() {
                    self.retired.push(old);
                }
            }
        }
        for r in &mut self.retired {
            r.read_new(f)?;
        }
        self.retired.retain(|r| r.grew.elapsed() < RETIRE_AFTER);
        if self.current.is_none() && now.is_some() {
            self.current = Some(Reading::open(&self.path)?);
        }
        if let Some(cur) = &mut self.current {
            cur.read_new(f)?;
        }
        Ok(())
    }
}

// --------------------------------------------------------------------- HTTP

/// Answers requests until the process ends: `GET /metrics` (also `HEAD`)
/// renders the figures; anything else gets 404 or 405. One request per
/// connection, each on a thread of its own with one deadline for the whole
/// request, at most [`MAX_CLIENTS`] at a time: a slow or silent client
/// never holds up a scrape.
fn serve(listener: &TcpListener, handle: &PrometheusHandle) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            continue;
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (handle, done) = (handle.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("serve-metrics-client".into())
            .spawn(move || {
                // A client that goes away or stalls only ends its own request.
                let _ = answer(stream, &handle);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// How long a client may take to send its whole request and read the
/// answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);

/// Requests answered at once; more connections are closed unanswered.
const MAX_CLIENTS: usize = 16;

fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> io::Result<()> {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    stream.set_write_timeout(Some(CLIENT_DEADLINE))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        // One deadline for the whole request, not one per read.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 16 << 10 {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                b"",
                true,
            );
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let body_too = method != "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let text = handle.render();
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                text.as_bytes(),
                body_too,
            )
        }
        ("GET" | "HEAD", "/") => respond(
            &mut stream,
            "200 OK",
            "text/plain; charset=utf-8",
            b"sessionlock serve-metrics: the metrics are at /metrics\n",
            body_too,
        ),
        ("GET" | "HEAD", _) => respond(
            &mut stream,
            "404 Not Found",
            "text/plain; charset=utf-8",
            b"not found: the metrics are at /metrics\n",
            body_too,
        ),
        _ => respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            b"only GET\n",
            true,
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    with_body: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        out.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes())?;
    if with_body {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(tail: &mut Tail) -> Vec<Result<String, Bad>> {
        let mut out = Vec::new();
        tail.poll(|l| out.push(l.map(|b| String::from_utf8_lossy(b).into_owned())));
        out
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_tail_reads_complete_lines_once_and_survives_truncation_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut tail = Tail::open(&path).unwrap();
        assert!(lines_of(&mut tail).is_empty(), "no file yet");

        append(&path, "a\nb\npart");
        assert_eq!(lines_of(&mut tail), [Ok("a".into()), Ok("b".into())]);
        assert!(lines_of(&mut tail).is_empty(), "nothing new");
        append(&path, "ial\n\n");
        assert_eq!(lines_of(&mut tail), [Ok("partial".into())]);

        // Truncated, then written again (shorter than before).
        std::fs::File::create(&path).unwrap();
        append(&path, "c\n");
        assert_eq!(lines_of(&mut tail), [Ok("c".into())]);

        // Rotated: renamed away while a writer still has it open, and a new
        // file created. Both are read.
        let old = dir.path().join("events.jsonl.1");
        std::fs::rename(&path, &old).unwrap();
        append(&old, "d\n");
        append(&path, "e\n");
        assert_eq!(lines_of(&mut tail), [Ok("d".into()), Ok("e".into())]);
        append(&old, "f\n");
        assert_eq!(lines_of(&mut tail), [Ok("f".into())]);
    }

    #[test]
    fn a_line_too_long_to_be_an_event_is_skipped_up_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append(&path, &"x".repeat(MAX_LINE + 10));
        let mut tail = Tail::open(&path).unwrap();
        assert_eq!(lines_of(&mut tail), [Err(Bad::TooLong)]);
        append(&path, &format!("{}\nok\n", "y".repeat(MAX_LINE)));
        assert_eq!(lines_of(&mut tail), [Ok("ok".into())]);
    }

    #[test]
    fn an_event_log_in_a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Tail::open(&dir.path().join("nope/events.jsonl"))
            .err()
            .expect("an error");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    fn render(lines: &[&str]) -> String {
        let exporter = Exporter::new().unwrap();
        let mut waiters = Waiters::default();
        for l in lines {
            feed(&exporter, &mut waiters, Ok(l.as_bytes()));
        }
        exporter.handle().render()
    }

    #[test]
    fn events_become_the_librarys_metrics_and_bad_lines_are_counted() {
        let text = render(&[
            r#"{"v":1,"ts_us":1,"pid":7,"host":"h","kind":"acquired","backend":"file","session":"/s","lane":"chat","epoch":1,"waited_us":1500}"#,
            r#"{"v":1,"ts_us":2,"pid":7,"host":"h","kind":"released","backend":"file","session":"/s","lane":"chat","epoch":1,"held_us":2000000,"handed_off":true}"#,
            r#"{"v":1,"ts_us":3,"pid":7,"host":"h","kind":"reclaimed","backend":"file","session":"/s","reasons":["dead-pid","too-old"]}"#,
            r#"{"v":1,"ts_us":4,"pid":7,"host":"h","kind":"appended","backend":"file","session":"/s","entries":3,"bytes":120}"#,
            r#"{"v":1,"ts_us":5,"pid":7,"host":"h","kind":"fault","fault":"sigkill","bytes":"x"}"#,
            r#"{"v":1,"ts_us":6,"pid":7,"host":"h","kind":"some-later-kind"}"#,
            r#"{"v":2,"ts_us":6,"pid":7,"host":"h","kind":"acquired"}"#,
            r#"{"v":1,"ts_us":6,"pid":7,"host":"h","kind":"acquired","backend":"file"}"#,
            "not json",
        ]);
        for want in [
            r#"sessionlock_acquire_wait_seconds_count{backend="file",lane="chat",outcome="acquired"} 1"#,
            r#"sessionlock_hold_seconds_sum{backend="file",lane="chat",end="handed_off"} 2"#,
            r#"sessionlock_handoffs_total{backend="file",lane="chat"} 1"#,
            r#"sessionlock_reclaims_total{backend="file",reason="dead-pid"} 1"#,
            r#"sessionlock_transcript_entries_total{backend="file"} 3"#,
            r#"sessionlock_transcript_bytes_total{backend="file"} 120"#,
            r#"sessionlock_event_log_bad_lines_total{reason="version"} 1"#,
            r#"sessionlock_event_log_bad_lines_total{reason="fields"} 1"#,
            r#"sessionlock_event_log_bad_lines_total{reason="json"} 1"#,
        ] {
            assert!(text.contains(want), "no {want} in\n{text}");
        }
    }

    #[test]
    fn waiters_count_queued_acquisitions_until_they_end() {
        let mut w = Waiters::default();
        let me = std::process::id();
        let here = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        w.queued(&here, me, "file", "/a");
        w.queued(&here, me, "file", "/b");
        w.queued("elsewhere", 1, "file", "/a");
        w.queued(&here, sessionlock_lab::testkit::dead_pid(), "file", "/a");
        w.forget_dead();
        assert_eq!(w.by_backend(), [("file".to_owned(), 3)]);
        w.done(&here, me, "file", "/a");
        w.done(&here, me, "file", "/a");
        assert_eq!(w.by_backend(), [("file".to_owned(), 2)]);
    }
}
