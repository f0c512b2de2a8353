//! `sessionlock status`: every session lock in some directories, explained
//! (docs/design.md §4, "Status").
//!
//! Status is informational: held and stale locks are not findings, so the exit
//! code is 0 whenever everything could be read, and 2 when a directory or a
//! lock could not be. The table (or, with `--json`, a JSON object) goes to
//! stdout; errors and the "no session locks" note go to stderr.
//!
//! With `--watch` the directories are scanned again every `--interval-ms`
//! until Ctrl-C (or `--count` refreshes). On a terminal the screen is cleared
//! and the table redrawn; otherwise each refresh prints a timestamp and the
//! table, separated by a blank line; with `--json`, one JSON object per line
//! (NDJSON). The terminal's modes are never changed, so SIGINT's default
//! action (ending the process) leaves it as it was. A reader that goes away
//! ends the watch without an error. The exit code is that of the last
//! refresh.
//!
//! Every lock is listed, whatever bytes its name holds. The table shows
//! names and payload fields escaped ([`crate::output`]), so a hostile lane or
//! file name cannot move the cursor or fake a row; JSON output is exact,
//! with a `…Hex` field holding the raw bytes of a path that is not UTF-8.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use serde::Serialize;
use sessionlock::identity::Liveness;
use sessionlock::report::{DirErrorJson, HolderJson, StatusReport, WaiterJson};
use sessionlock::status::{
    human_duration, openclaw_exposure, DirLocks, Explained, LockStatus, Waiter,
};
use sessionlock::{Config, Error, SessionId as _, Settings};
use sessionlock_lab::backend_choice::BackendChoice;
use sessionlock_lab::testkit::block_on;
use sessionlock_postgres::{PgBackend, PgKey, PgVersion};

use super::lock::{pg_backend, pg_prefixes};

use crate::output::{self, report, report_error, warn_openclaw_exposure};

/// Moves the cursor home and clears the screen (ANSI; no colors).
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Directories holding session transcripts (`*.jsonl`) and their locks
    /// (`*.jsonl.lock`); not searched recursively. With a postgres
    /// `--backend`: key prefixes instead (default: every lease).
    #[arg(value_name = "DIR|PREFIX")]
    dirs: Vec<PathBuf>,
    /// Print a JSON object (`version`, `locks`, `errors`; see docs/cli.md)
    /// instead of a table (with --watch, one object per line per refresh).
    #[arg(long)]
    json: bool,
    /// Refresh until interrupted (Ctrl-C): redraw on a terminal, else print
    /// a timestamped table per refresh.
    #[arg(long)]
    watch: bool,
    /// Milliseconds between refreshes with --watch.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        requires = "watch",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    interval_ms: u64,
    /// Stop after N refreshes with --watch.
    #[arg(
        long,
        value_name = "N",
        requires = "watch",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    count: Option<u64>,
}

pub(crate) fn run(args: Args, backend: &BackendChoice) -> anyhow::Result<ExitCode> {
    let settings = Config::default().resolve();
    if let BackendChoice::Postgres(url) = backend {
        return run_pg(&args, url, &settings);
    }
    if args.dirs.is_empty() {
        missing_dirs("status");
    }
    if args.watch {
        return watch(&args, &settings);
    }
    let (found, failed) = scan(&args.dirs, &settings, !args.json);
    let mut out = io::stdout().lock();
    let written = if args.json {
        write_json(&mut out, &found, true)
    } else {
        write_table(&mut out, &found, args.dirs.len() > 1, false)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        // The reader went away (`sessionlock status DIR | head`): not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e).context("cannot write to stdout"),
    }
    Ok(crate::exit::error_if(failed))
}

/// Scans every directory, reporting what cannot be read on stderr (and,
/// with `note_empty`, directories without locks and sessionlock holders
/// OpenClaw would delete). Returns what was found and whether anything
/// could not be read.
fn scan(dirs: &[PathBuf], settings: &Settings, note_empty: bool) -> (Vec<DirLocks>, bool) {
    let found = sessionlock::status::scan_dirs(dirs, settings);
    let mut failed = false;
    for DirLocks { dir, locks, .. } in &found {
        let entries = match locks {
            Ok(entries) => entries,
            Err(e) => {
                failed = true;
                report_dir_error(e);
                continue;
            }
        };
        if entries.is_empty() && note_empty {
            eprintln!("no session locks in {}", output::path(dir));
        }
        if note_empty {
            let locks: Vec<&LockStatus> = entries.iter().filter_map(|e| e.as_ref().ok()).collect();
            warn_openclaw_exposure(dir, &openclaw_exposure(&locks));
        }
        for e in entries.iter().filter_map(|e| e.as_ref().err()) {
            failed = true;
            report_error(e, None);
        }
    }
    (found, failed)
}

/// The readable locks found, in order.
fn locks(found: &[DirLocks]) -> impl Iterator<Item = &LockStatus> {
    found
        .iter()
        .filter_map(|d| d.locks.as_ref().ok())
        .flatten()
        .filter_map(|l| l.as_ref().ok())
}

/// How a watch shows each refresh.
#[derive(Clone, Copy, PartialEq, Eq)]
enum View {
    /// Clear the screen and redraw.
    Redraw,
    /// A timestamp and the table, refreshes separated by a blank line.
    Log,
    /// One compact JSON object per line.
    Ndjson,
}

/// `--watch`: refreshes until interrupted, `--count` is reached or the
/// reader goes away.
fn watch(args: &Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let full_paths = args.dirs.len() > 1;
    watch_loop(args, |out, view, at, later| {
        let (found, failed) = scan(&args.dirs, settings, false);
        let written = match view {
            View::Ndjson => write_json(out, &found, false),
            View::Redraw => write_table(out, &found, full_paths, true),
            View::Log => {
                let separator = if later { "\n" } else { "" };
                writeln!(out, "{separator}{at}")
                    .and_then(|()| write_table(out, &found, full_paths, true))
            }
        };
        Ok((written, failed))
    })
}

/// The `--watch` loop of both backends: every `--interval-ms`, `refresh`
/// scans and writes one view (`later`: not the first), until interrupted,
/// `--count` is reached, the reader goes away or `refresh` fails; its
/// `bool` is whether the scan found something unreadable.
fn watch_loop(
    args: &Args,
    mut refresh: impl FnMut(
        &mut io::StdoutLock<'static>,
        View,
        &str,
        bool,
    ) -> anyhow::Result<(io::Result<()>, bool)>,
) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let view = if args.json {
        View::Ndjson
    } else if stdout.is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb") {
        View::Redraw
    } else {
        View::Log
    };
    let interval = Duration::from_millis(args.interval_ms);
    let mut next = Instant::now();
    let mut refreshes = 0u64;
    loop {
        let at = sessionlock::payload::format_time(SystemTime::now());
        let mut out = stdout.lock();
        if view == View::Redraw {
            // Cleared and titled before scanning, so that errors the scan
            // reports on stderr stay on screen, between title and table.
            let cleared = writeln!(
                out,
                "{CLEAR_SCREEN}{at}  every {}ms, Ctrl-C to stop\n",
                args.interval_ms
            )
            .and_then(|()| out.flush());
            if let Some(result) = stop_on_write_error(cleared) {
                return result;
            }
        }
        let (written, failed) = refresh(&mut out, view, &at, refreshes > 0)?;
        if let Some(result) = stop_on_write_error(written.and_then(|()| out.flush())) {
            return result;
        }
        drop(out);
        refreshes += 1;
        if args.count.is_some_and(|n| refreshes >= n) {
            return Ok(crate::exit::error_if(failed));
        }
        // Keep a steady cadence; after a slow scan, start the next one now.
        next += interval;
        let now = Instant::now();
        match next.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            None => next = now,
        }
    }
}

/// What ends a watch when writing fails: a reader that went away ends it
/// quietly, anything else is an error.
fn stop_on_write_error(written: io::Result<()>) -> Option<anyhow::Result<ExitCode>> {
    match written {
        Ok(()) => None,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Some(Ok(ExitCode::SUCCESS)),
        Err(e) => Some(Err(e).context("cannot write to stdout")),
    }
}

/// Reports a directory that could not be listed, with a hint where one helps.
fn report_dir_error(e: &Error) {
    let missing = matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound);
    let not_a_dir =
        matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotADirectory);
    // The library's message already names the directory.
    let hint = if missing {
        Some("pass the directory that holds the session transcripts (`*.jsonl`) and their `.lock` files")
    } else if not_a_dir {
        Some("pass a directory, not a file: status lists every `*.lock` in it")
    } else {
        None
    };
    report_error(e, hint);
}

/// Writes the JSON object (the library's report of the scan): pretty, or
/// compact on one line.
fn write_json(out: &mut impl Write, found: &[DirLocks], pretty: bool) -> io::Result<()> {
    let report = StatusReport::of(found);
    if pretty {
        serde_json::to_writer_pretty(&mut *out, &report)?;
    } else {
        serde_json::to_writer(&mut *out, &report)?;
    }
    writeln!(out)
}

const HEADER: [&str; 11] = [
    "SESSION",
    "PID",
    "HOST",
    "ALIVE",
    "LANE/RUN",
    "AGE",
    "LEASE LEFT",
    "EPOCH",
    "OWNER",
    "ACTION",
    "REASONS",
];

/// Writes the human table: a header, then one aligned row per readable lock
/// (unreadable ones were reported on stderr). `-` stands for unknown. Cells
/// are escaped: one lock is one line, whatever its payload says.
/// Without locks it writes nothing, or only the header with `header_always`.
fn write_table(
    out: &mut impl Write,
    found: &[DirLocks],
    full_paths: bool,
    header_always: bool,
) -> io::Result<()> {
    let rows: Vec<[String; 11]> = locks(found).map(|s| row(s, full_paths)).collect();
    if rows.is_empty() && !header_always {
        return Ok(());
    }
    output::write_rows(out, &HEADER, &rows)?;
    let notes: Vec<String> = locks(found)
        .flat_map(|s| contention_notes(s, full_paths))
        .collect();
    if !notes.is_empty() {
        writeln!(out)?;
        for n in notes {
            writeln!(out, "{n}")?;
        }
    }
    Ok(())
}

/// The lines under the table about a session's contention: who waits in
/// its line, and a process stuck holding its state lock. None for a
/// session nobody waits for.
fn contention_notes(s: &LockStatus, full_paths: bool) -> Vec<String> {
    let c = &s.contention;
    let mut notes = Vec::new();
    if c.is_empty() {
        return notes;
    }
    let session = session_cell(&s.session, full_paths);
    if let Some(first) = c.waiting.first() {
        let n = c.waiting.len();
        notes.push(format!(
            "{session}: {n} {} in line for the lock; first: pid {first}",
            if n == 1 {
                "process waits"
            } else {
                "processes wait"
            },
        ));
        notes.extend(queue_lines(&c.queue, SystemTime::now()));
    }
    if let Some(h) = &c.stuck {
        let pid = h.pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
        notes.push(if h.stopped {
            format!(
                "{session}: pid {pid} is stopped inside a protocol step, holding the session's state \
                 lock: the session's other processes time out until it goes on; resume it \
                 (kill -CONT {pid}) or kill it"
            )
        } else {
            format!(
                "{session}: pid {pid} is stuck inside a protocol step, holding the session's state \
                 lock (held for over {}): the session's other processes time out until it lets go; \
                 find what it waits for, or kill it",
                human_duration(sessionlock::status::STUCK_AFTER),
            )
        });
    }
    notes
}

/// The queue under its session's note, one line per waiter in arrival
/// order: `  1. pid 4242 on vm, lane cron, run r-7, waiting 2.1s, gives up in
/// 7.9s`. Escaped: a waiter's lane cannot fake a line.
pub(crate) fn queue_lines(queue: &[Waiter], now: SystemTime) -> Vec<String> {
    queue
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut line = format!(
                "  {}. pid {}",
                i + 1,
                w.pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
            );
            if let Some(h) = &w.hostname {
                line.push_str(&format!(" on {}", output::escape(h)));
            }
            if let Some(c) = &w.client_id {
                line.push_str(&format!(" (client {})", output::escape(c)));
            }
            if let Some(l) = &w.lane {
                line.push_str(&format!(", lane {}", output::escape(l)));
            }
            if let Some(r) = &w.run_id {
                line.push_str(&format!(", run {}", output::escape(r)));
            }
            if let Some(since) = w.since {
                let waited = now.duration_since(since).unwrap_or_default();
                line.push_str(&format!(", waiting {}", human_duration(waited)));
            }
            if let Some(d) = w.deadline {
                match d.duration_since(now) {
                    Ok(left) => {
                        line.push_str(&format!(", gives up in {}", human_duration(left)));
                    }
                    Err(_) => line.push_str(", past its deadline"),
                }
            }
            if w.stopped {
                line.push_str(" (stopped: the line behind it waits)");
            }
            line
        })
        .collect()
}

/// The session as the table shows it: its file name, or the full path
/// when several directories are listed (escaped).
fn session_cell(session: &std::path::Path, full_paths: bool) -> String {
    if full_paths {
        output::path(session).into_owned()
    } else {
        session.file_name().map_or_else(
            || output::path(session).into_owned(),
            |n| output::escape_os(n).into_owned(),
        )
    }
}

fn row<K, V>(s: &LockStatus<K, V>, full_paths: bool) -> [String; 11] {
    let h = &s.holder;
    let dash = || "-".to_owned();
    let session = session_cell(&s.session, full_paths);
    let alive = match s.liveness {
        Liveness::Alive => "yes",
        Liveness::Remote => "remote",
        Liveness::Dead | Liveness::Recycled => "no",
        Liveness::Unknown => "-",
    };
    let lane_run = match (&h.lane, &h.run_id) {
        (None, None) => dash(),
        (lane, run) => format!(
            "{}/{}",
            output::escape(lane.as_deref().unwrap_or("-")),
            output::escape(run.as_deref().unwrap_or("-"))
        ),
    };
    let lease_left = match s.live_lease_left() {
        Some(d) if d.is_zero() => "expired".to_owned(),
        Some(d) => human_duration(d),
        None => dash(),
    };
    let reasons = if h.reasons.is_empty() {
        dash()
    } else {
        h.reasons.to_string()
    };
    [
        session,
        h.pid.map_or_else(dash, |p| p.to_string()),
        h.hostname
            .as_deref()
            .map_or_else(dash, |host| output::escape(host).into_owned()),
        alive.to_owned(),
        lane_run,
        h.age_ms
            .map_or_else(dash, |ms| human_duration(Duration::from_millis(ms))),
        lease_left,
        h.epoch.map_or_else(dash, |e| e.to_string()),
        h.owner.clone().unwrap_or_else(dash),
        s.action.as_str().to_owned(),
        reasons,
    ]
}

/// Exits as clap does when a required argument is missing: the file
/// backend's `status` and `doctor` need directories.
pub(crate) fn missing_dirs(command: &str) -> ! {
    let mut cli = crate::help::command();
    cli.build();
    let mut cmd = cli
        .find_subcommand_mut(command)
        .map_or_else(crate::help::command, |c| c.clone());
    cmd.error(
        clap::error::ErrorKind::MissingRequiredArgument,
        "the following required arguments were not provided:\n  <DIR|PREFIX>...\n\n\
             (directories of session transcripts; with a postgres --backend, key prefixes, \
             optional)",
    )
    .exit()
}

// ------------------------------------------------------------ on PostgreSQL

/// A PostgreSQL lease, explained.
type PgStatus = LockStatus<PgKey, PgVersion>;

const PG_HEADER: [&str; 11] = [
    "SESSION",
    "PID",
    "HOST",
    "ALIVE",
    "LANE/RUN",
    "AGE",
    "LEASE LEFT",
    "EPOCH",
    "EXPIRES (SERVER)",
    "ACTION",
    "REASONS",
];

/// One PostgreSQL lease in `--json` output. Field names are a stable
/// interface (those of the file backend's rows where they mean the same).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PgLockJson {
    /// The session key.
    session: String,
    /// `postgres://HOST:PORT/DATABASE/SCHEMA/KEY`.
    lock_path: String,
    #[serde(flatten)]
    holder: HolderJson,
    /// When the lease ends, on the server's clock.
    expires_at: Option<String>,
    /// The server's clock when the lease was read.
    observed_at: String,
    /// How far the server's clock was ahead of this machine's when the
    /// lease was read, in milliseconds (negative: behind). Leases are
    /// measured on the server's clock; a large lag explains ages and lease
    /// ends that look off from here.
    clock_lag_ms: i64,
    reasons: Vec<&'static str>,
    action: &'static str,
    /// How many clients wait for the lease; left out when none do.
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting: Option<usize>,
    /// The pid of the first of them; left out when none wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_waiter_pid: Option<u32>,
    /// The waiters in arrival order (the file backend's shape, with each
    /// waiter's `clientId`; `waitedMs` on the server's clock).
    queue: Vec<WaiterJson>,
}

impl PgLockJson {
    fn new(s: &PgStatus) -> Self {
        PgLockJson {
            session: s.key.as_str().to_owned(),
            lock_path: s.key.locator().to_string_lossy().into_owned(),
            holder: HolderJson::of(s),
            expires_at: s.lease_end.map(sessionlock::payload::format_time),
            observed_at: sessionlock::payload::format_time(s.inspection.observed),
            clock_lag_ms: clock_lag_ms(s),
            reasons: s.holder.reasons.iter().map(|r| r.as_str()).collect(),
            action: s.action.as_str(),
            waiting: (!s.contention.queue.is_empty()).then_some(s.contention.queue.len()),
            first_waiter_pid: s.contention.queue.first().and_then(|w| w.pid),
            queue: s
                .contention
                .queue
                .iter()
                .map(|w| WaiterJson::at(w, s.inspection.observed))
                .collect(),
        }
    }
}

/// `status --json` on PostgreSQL: the file backend's document, with the
/// leases as `locks` (unreadable ones are reported on stderr) and no
/// directories to fail on.
#[derive(Serialize)]
struct PgStatusJson {
    /// [`StatusReport::VERSION`]: one schema for both backends.
    version: u32,
    locks: Vec<PgLockJson>,
    errors: Vec<DirErrorJson>,
}

/// The server's clock minus ours when `s` was read, in milliseconds
/// (measured just after the listing, so it errs by the listing's time).
pub(crate) fn clock_lag_ms(s: &PgStatus) -> i64 {
    let now = std::time::SystemTime::now();
    match s.inspection.observed.duration_since(now) {
        Ok(ahead) => i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
        Err(behind) => -i64::try_from(behind.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Every lease whose key starts with one of the prefixes, explained, each
/// with its queue (the server's waiters table); unreadable leases are
/// reported on stderr. Also whether any was unreadable.
fn pg_scan(
    backend: &PgBackend,
    prefixes: &[String],
    settings: &Settings,
) -> anyhow::Result<(Vec<PgStatus>, bool)> {
    let mut found: Vec<PgStatus> = Vec::new();
    let mut failed = false;
    for prefix in prefixes {
        let listed = block_on(sessionlock::status::list(
            backend,
            prefix.as_str(),
            settings,
        ))?;
        // Who waits is extra: without it (no grant on the waiters table,
        // say) the locks are still shown.
        let mut queues = match block_on(backend.waiters(prefix)) {
            Ok((queues, _)) => queues,
            Err(e) => {
                eprintln!("warning: cannot read who waits, queues left out: {e}");
                Default::default()
            }
        };
        for entry in listed {
            match entry {
                Explained::Lock(mut st) => {
                    if let Some(q) = queues.remove(st.key.as_str()) {
                        st.contention.waiting = q.iter().filter_map(|w| w.pid).collect();
                        st.contention.queue = q;
                    }
                    found.push(*st);
                }
                Explained::Unreadable { error, .. } => {
                    failed = true;
                    report(&anyhow::Error::new(error), None);
                }
            }
        }
    }
    Ok((found, failed))
}

/// `status` on a PostgreSQL server: every lease whose key starts with one
/// of the prefixes (all of them without one).
fn run_pg(args: &Args, url: &str, settings: &Settings) -> anyhow::Result<ExitCode> {
    let backend = pg_backend(url)?;
    let prefixes = pg_prefixes(&args.dirs);
    if args.watch {
        return watch_pg(args, &backend, &prefixes, settings);
    }
    let (found, failed) = pg_scan(&backend, &prefixes, settings)?;
    if found.is_empty() && !args.json {
        eprintln!(
            "no session leases held on {}{}",
            backend.target(),
            if prefixes.iter().any(|p| !p.is_empty()) {
                " under the given prefixes"
            } else {
                ""
            }
        );
    }
    let mut out = io::stdout().lock();
    let written = if args.json {
        write_pg_json(&mut out, &found, true)
    } else if found.is_empty() {
        Ok(())
    } else {
        write_pg_table(&mut out, &found)
    };
    if let (Some(first), false) = (found.first(), args.json) {
        eprintln!(
            "clock lag: the server's clock is {} ms {} this machine's (ages and lease ends are the server's)",
            clock_lag_ms(first).abs(),
            if clock_lag_ms(first) >= 0 { "ahead of" } else { "behind" }
        );
    }
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e).context("cannot write to stdout"),
    }
    Ok(crate::exit::error_if(failed))
}

/// `status --json` on PostgreSQL: pretty, or compact on one line.
fn write_pg_json(out: &mut impl Write, found: &[PgStatus], pretty: bool) -> io::Result<()> {
    let doc = PgStatusJson {
        version: StatusReport::VERSION,
        locks: found.iter().map(PgLockJson::new).collect(),
        errors: Vec::new(),
    };
    if pretty {
        serde_json::to_writer_pretty(&mut *out, &doc)?;
    } else {
        serde_json::to_writer(&mut *out, &doc)?;
    }
    writeln!(out)
}

/// The table of leases, and each queue under it.
fn write_pg_table(out: &mut impl Write, found: &[PgStatus]) -> io::Result<()> {
    let rows: Vec<[String; 11]> = found.iter().map(pg_row).collect();
    output::write_rows(out, &PG_HEADER, &rows)?;
    let mut notes = Vec::new();
    for s in found.iter().filter(|s| !s.contention.queue.is_empty()) {
        let n = s.contention.queue.len();
        notes.push(format!(
            "{}: {n} {} for the lease",
            output::escape(s.key.as_str()),
            if n == 1 {
                "client waits"
            } else {
                "clients wait"
            }
        ));
        notes.extend(queue_lines(&s.contention.queue, s.inspection.observed));
    }
    if !notes.is_empty() {
        writeln!(out)?;
        for n in notes {
            writeln!(out, "{n}")?;
        }
    }
    Ok(())
}

/// `--watch` on PostgreSQL: as on files, every `--interval-ms`.
fn watch_pg(
    args: &Args,
    backend: &PgBackend,
    prefixes: &[String],
    settings: &Settings,
) -> anyhow::Result<ExitCode> {
    watch_loop(args, |out, view, at, later| {
        let (found, failed) = pg_scan(backend, prefixes, settings)?;
        let written = match view {
            View::Ndjson => write_pg_json(out, &found, false),
            View::Redraw => write_pg_table(out, &found),
            View::Log => {
                let separator = if later { "\n" } else { "" };
                writeln!(out, "{separator}{at}").and_then(|()| write_pg_table(out, &found))
            }
        };
        Ok((written, failed))
    })
}

/// A lease's table row: the file table's, with the key as the session and
/// the lease's end on the server's clock instead of the owner.
pub(crate) fn pg_row(s: &PgStatus) -> [String; 11] {
    let mut r = row(s, true);
    r[0] = output::escape(s.key.as_str()).into_owned();
    r[8] = s
        .lease_end
        .map_or_else(|| "-".to_owned(), sessionlock::payload::format_time);
    r
}
