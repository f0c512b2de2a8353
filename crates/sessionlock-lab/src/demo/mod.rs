//! `sessionlock demo`: a gateway simulation on the embedded file backend,
//! or on PostgreSQL (`--backend URL`).
//!
//! Several OS processes (`sessionlock worker gateway`, see `lanes`) each
//! run four lanes (channel, heartbeat, cron, compaction) over a set of
//! session transcripts; every turn goes through the attempt controller: a
//! simulated model call of random length with the lock released, tool
//! results and a reply appended, compaction rewrites. Faults from
//! docs/design.md §10.1 are injected on a schedule (`sim`): fence read errors
//! at prompt release, user aborts mid-prompt, SIGKILLed processes (restarted),
//! a lane wedged on the CPU past its lease, two lanes of one session through a
//! symlinked directory, foreign writes inside prompt windows.
//!
//! On PostgreSQL the sessions are keys of the run (`backends`), the
//! transcripts are read back through the store, and the faults are those
//! that mean something there: fence-error and alias (a file system's EIO,
//! two paths of one file) are left out with a note; `conn-cut` and
//! `stop-past-lease` (`victim`) are added.
//!
//! With `--timeline FILE`, the workers write the library's event log
//! (`events`: `SESSIONLOCK_EVENT_LOG`, in the run directory) and the demo
//! adds a `fault` event for every fault it injects; after the run the log
//! is drawn as one HTML page ([`crate::timeline`]).
//!
//! Everything the run did is read back into a `record::Recording` and
//! judged by `verdict::check`, a pure function, so `--record FILE` saves a
//! run and `--check FILE` judges a saved (or doctored) one without running
//! anything. Exit status: 0 PASS, 1 FAIL (an invariant was violated), 2 an
//! error.

mod backends;
mod entries;
mod events;
mod lanes;
mod record;
mod rng;
mod sim;
mod turns;
mod verdict;
mod victim;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

pub(crate) use lanes::{run as run_gateway, GatewayArgs};
use record::{FaultKind, Recording, RunConfig};
use verdict::Verdict;

/// Acquire budget of every lane.
const LOCK_TIMEOUT_MS: u64 = 10_000;
/// What a lock wait may take beyond a wedged lane's lease (see
/// [`RunConfig::slack_ms`]).
const SLACK_MS: u64 = 1500;

/// The faults to inject (`--faults`); `None`: all of the backend's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Faults(Option<Vec<FaultKind>>);

impl Faults {
    /// The faults to inject on the backend (`pg`: PostgreSQL), and a note
    /// for each asked for that means nothing there.
    fn on(&self, pg: bool) -> (Vec<FaultKind>, Vec<String>) {
        let Some(asked) = &self.0 else {
            let kinds = if pg { FaultKind::PG } else { FaultKind::ALL };
            let notes = if pg {
                vec!["fence-error (an EIO from the file system at the fence snapshot) and alias (two paths of one file) have no meaning for PostgreSQL's string keys: skipped".to_owned()]
            } else {
                Vec::new()
            };
            return (kinds.to_vec(), notes);
        };
        let mut notes = Vec::new();
        let kinds = asked
            .iter()
            .copied()
            .filter(|k| {
                let fits = if pg { k.on_pg() } else { k.on_files() };
                if !fits {
                    notes.push(format!(
                        "{k} has no meaning on {}: skipped",
                        if pg { "PostgreSQL" } else { "files" }
                    ));
                }
                fits
            })
            .collect();
        (kinds, notes)
    }
}

fn parse_faults(s: &str) -> Result<Faults, String> {
    match s.trim() {
        "all" => return Ok(Faults(None)),
        "none" | "" => return Ok(Faults(Some(Vec::new()))),
        _ => {}
    }
    let mut kinds = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = FaultKind::parse(name).ok_or_else(|| {
            format!(
                "unknown fault {name:?} (expected all, none, or a comma list of {})",
                FaultKind::ALL
                    .into_iter()
                    .chain([FaultKind::ConnCut, FaultKind::StopPastLease])
                    .map(FaultKind::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds.sort();
    Ok(Faults(Some(kinds)))
}

#[derive(clap::Args)]
pub struct Args {
    /// Number of session transcripts.
    #[arg(long, default_value_t = 8)]
    sessions: usize,
    /// Number of gateway processes (each runs four lanes).
    #[arg(long, default_value_t = 3)]
    processes: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Faults to inject: all, none, or a comma list of fence-error,
    /// user-abort, sigkill, wedge, alias, foreign-write (files), and
    /// conn-cut, stop-past-lease (PostgreSQL only; fence-error and alias
    /// mean nothing there).
    #[arg(long, default_value = "all", value_parser = parse_faults, value_name = "LIST")]
    faults: Faults,
    /// Seed of the fault schedule and of every random choice (default: from
    /// the clock; printed, so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Lease of a wedged lane, in milliseconds.
    #[arg(long, default_value_t = 500)]
    lease_ms: u64,
    /// Work in this directory (new or empty; kept) instead of a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the run's raw facts to FILE (JSON), for --check.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Judge a run recorded with --record, without running anything.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["record", "dir"])]
    check: Option<PathBuf>,
    /// Print the verdict as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Log the run's lock events (events.jsonl in the run directory, kept
    /// with --dir) and draw them as a timeline page in FILE: every hold,
    /// wait, prompt window and injected fault, per session.
    #[arg(long, value_name = "FILE.html", conflicts_with = "check")]
    timeline: Option<PathBuf>,
}

fn default_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000
}

/// A directory the run may fill: new, or empty.
fn claim_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut entries = std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))?;
    if entries.next().is_some() {
        bail!("--dir {} is not empty", dir.display());
    }
    Ok(())
}

/// The schema version of the `--json` verdict: bumped on an incompatible
/// change, not when fields are added.
pub const JSON_VERSION: u32 = 1;

fn print(v: &Verdict, json: bool) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "version": JSON_VERSION,
                "passed": v.passed(),
                "checks": v.checks,
                "figures": v.figures,
            }))?
        );
    } else {
        print!("{}", v.table());
    }
    Ok(())
}

fn exit_code(v: &Verdict) -> ExitCode {
    if v.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The event log's name in the run directory.
const EVENT_LOG: &str = "events.jsonl";

/// Draws the run's event log `log` as a timeline page at `page`.
fn draw(cfg: &RunConfig, log: &Path, page: &Path) -> Result<()> {
    // No line at all: a library without the event log; still a page.
    if !log.exists() {
        std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    }
    let loaded = crate::timeline::load(&[log])?;
    for p in loaded.problems.iter().take(10) {
        eprintln!("demo: timeline: skipped {p}");
    }
    let caption = format!(
        "sessionlock demo: {} gateway processes × 4 lanes over {} sessions for {} s; faults: {}; seed {}",
        cfg.processes,
        cfg.sessions,
        cfg.duration_s,
        cfg.faults_label(),
        cfg.seed
    );
    crate::timeline::write(&loaded, &caption, Some(page), None)?;
    eprintln!(
        "demo: timeline of {} in {}",
        crate::timeline::summary(&loaded),
        page.display()
    );
    Ok(())
}

fn load(path: &Path) -> Result<Recording> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a demo recording", path.display()))
}

pub fn run(args: Args, backend: &crate::backend_choice::BackendChoice) -> Result<ExitCode> {
    if let Some(path) = &args.check {
        let v = verdict::check(&load(path)?);
        print(&v, args.json)?;
        return Ok(exit_code(&v));
    }
    anyhow::ensure!(args.sessions >= 1, "--sessions must be at least 1");
    anyhow::ensure!(args.processes >= 1, "--processes must be at least 1");
    anyhow::ensure!(args.duration >= 1, "--duration must be at least 1 second");
    anyhow::ensure!(args.lease_ms >= 50, "--lease-ms must be at least 50");
    let (faults, notes) = args.faults.on(!backend.is_file());
    for note in notes {
        eprintln!("demo: {note}");
    }
    let cfg = RunConfig {
        sessions: args.sessions,
        processes: args.processes,
        duration_s: args.duration,
        faults,
        seed: args.seed.unwrap_or_else(default_seed),
        wedge_lease_ms: args.lease_ms,
        lock_timeout_ms: LOCK_TIMEOUT_MS,
        slack_ms: SLACK_MS,
    };
    let tmp;
    let root = match &args.dir {
        Some(d) => {
            claim_dir(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("sessionlock-demo-")
                .tempdir()
                .context("create a temporary directory")?;
            tmp.path().to_owned()
        }
    };
    let on = sim::Backend::open(backend, cfg.seed)?;
    eprintln!(
        "demo: {} gateway processes × 4 lanes over {} sessions for {} s in {}{}; faults: {}; seed {}",
        cfg.processes,
        cfg.sessions,
        cfg.duration_s,
        root.display(),
        on.describe(),
        cfg.faults_label(),
        cfg.seed
    );
    let events = args.timeline.as_ref().map(|_| root.join(EVENT_LOG));
    let rec = sim::simulate(&cfg, &root, &on, events.as_deref())?;
    if let Some(path) = &args.record {
        let json = serde_json::to_vec(&rec)?;
        std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
    }
    let v = verdict::check(&rec);
    print(&v, args.json)?;
    if let (Some(page), Some(log)) = (&args.timeline, &events) {
        draw(&cfg, log, page)?;
    }
    if !v.passed() {
        for c in v.violations() {
            eprintln!("demo: violated: {}: {}", c.name, c.value);
        }
        eprintln!(
            "\nhint: repeat this run with --seed {}{}",
            cfg.seed,
            if args.dir.is_some() {
                format!("; its files are in {}", root.display())
            } else {
                " --dir DIR to keep its files".to_owned()
            }
        );
    }
    Ok(exit_code(&v))
}
