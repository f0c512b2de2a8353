//! `sessionlock bench`: the figures behind sessionlock's speed goals, on
//! this machine, with real processes.
//!
//! - uncontended acquire + release, per cycle (in process);
//! - cross-process hand-off: holder's `release()` returns → waiter holds;
//! - SIGKILL of the holder → waiter holds;
//! - lease end of a holder wedged on the CPU → waiter holds;
//! - fenced append throughput with 1, 2 and 8 writer processes, each entry
//!   appended under its own acquisition, durability `none` and `data`;
//! - the attempt controller's `release_for_prompt` + `reacquire_after_prompt`
//!   round trip on a small and a large transcript.
//!
//! - `sessionlock exec` → `sessionlock exec` hand-off: the holder's command
//!   exits → the waiter's command starts, beside `flock(1)` → `flock(1)` on
//!   a lock file in the same run, trials interleaved.
//!
//! - contention: P processes × K cycles of acquire → append one line with
//!   two `write(2)` → release on one session file (or N), beside raw
//!   `flock(2)` in the same run (`bench/contention.rs`).
//!
//! The first four form the `lock` group, the next two the `transcript`
//! group, then the `exec` group and the `contention` group
//! (`--only lock|transcript|exec|contention|all`).
//!
//! # JSON output (`--json`)
//!
//! One object, `{"version": 1, "figures": [...]}`: `version` is the
//! schema version ([`JSON_VERSION`], bumped on an incompatible change, not
//! when fields are added), `figures` the figures in the order of the text
//! output. Latency figures (the lock group, and the two round trips) have
//! the shape
//!
//! ```text
//! {"name": str, "samples": int, "median_ms": f64, "p90_ms": f64,
//!  "p99_ms": f64, "max_ms": f64, "target": str, "target_median_ms": f64}
//! ```
//!
//! For the round trips, both objects carry the pair's bound:
//! `target_median_ms` is twice the small transcript's median, which only the
//! large transcript's median is held to. Throughput figures (recognized by
//! `entries_per_sec`) have the shape
//!
//! ```text
//! {"name": str, "writers": int, "durability": "none" | "data",
//!  "entries": int, "seconds": f64, "entries_per_sec": f64}
//! ```
//!
//! where `seconds` runs from the first writer's start to the last writer's
//! end (`CLOCK_MONOTONIC`, stamped by the writers). Contention figures
//! (recognized by `ops_per_sec`) have the shape
//!
//! ```text
//! {"name": str, "impl": "sessionlock" | "flock", "procs": int,
//!  "files": int, "cycles": int, "ops": int, "seconds": f64,
//!  "ops_per_sec": f64, "floor_ratio": f64 | null, "wait_p50_ms": f64,
//!  "wait_p99_ms": f64, "wait_max_ms": f64, "share_min": int,
//!  "share_max": int, "share": f64 | null, "verified": bool,
//!  "failure": str | null}
//! ```
//!
//! (the text output's legend defines each field).
//!
//! Exit status: 0, or 1 when a transcript did not hold exactly the expected
//! entries after a throughput configuration, or a contention configuration
//! failed its check (the table is still printed), or 2 on an error.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::process::Signal;
use serde::Serialize;
use sessionlock::attempt::{Attempt, AttemptOptions};
use sessionlock::transcript::Reader;
use sessionlock::LockOptions;

use crate::worker::{self, field, ms_between, DurabilityArg};

pub(crate) mod contention;
mod observe;
mod pg;

/// Which figures to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    /// Every figure.
    All,
    /// The lock figures: uncontended, hand-off, SIGKILL, lease end.
    Lock,
    /// The transcript figures: append throughput, prompt round trips.
    Transcript,
    /// exec → exec hand-off beside flock(1) → flock(1).
    Exec,
    /// P processes contending for one lock, beside raw flock(2).
    Contention,
    /// What metrics and the event log cost: the uncontended and the
    /// contended cycle, plain and observed, in the same run.
    Observe,
}

#[derive(clap::Args)]
pub struct Args {
    /// Uncontended acquire+release cycles.
    #[arg(long, default_value_t = 5000)]
    cycles: usize,
    /// Cross-process hand-off trials.
    #[arg(long, default_value_t = 50)]
    handoffs: usize,
    /// SIGKILL trials.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Wedged-holder trials.
    #[arg(long, default_value_t = 5)]
    wedges: usize,
    /// Lease of the wedged holder, in milliseconds.
    #[arg(long, default_value_t = 200)]
    lease_ms: u64,
    /// Which group of figures to measure.
    #[arg(long, value_enum, default_value_t = Only::All)]
    only: Only,
    /// Writer process counts of the append-throughput figures.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 8])]
    writers: Vec<usize>,
    /// Entries appended per throughput configuration with durability `none`
    /// (split across the writers).
    #[arg(long, default_value_t = 5000)]
    append_entries: u32,
    /// Entries appended per throughput configuration with durability `data`
    /// (one `fdatasync` each; split across the writers).
    #[arg(long, default_value_t = 1000)]
    append_entries_data: u32,
    /// `release_for_prompt` + `reacquire_after_prompt` round trips per
    /// transcript size.
    #[arg(long, default_value_t = 200)]
    round_trips: usize,
    /// Size of the small round-trip transcript, in MiB.
    #[arg(long, default_value_t = 1)]
    small_mib: u64,
    /// Size of the large round-trip transcript, in MiB.
    #[arg(long, default_value_t = 64)]
    large_mib: u64,
    /// exec → exec (and flock(1) → flock(1)) hand-off trials.
    #[arg(long, default_value_t = 50)]
    exec_handoffs: usize,
    /// The `sessionlock` binary whose `exec` is measured (default: this
    /// one), to compare versions.
    #[arg(long, value_name = "PATH")]
    exec_binary: Option<PathBuf>,
    /// The `flock(1)` program the exec hand-off is compared with.
    #[arg(long, default_value = "flock")]
    flock: PathBuf,
    /// Process counts of the contention figures.
    #[arg(long, value_delimiter = ',', default_values_t = [2usize, 8])]
    procs: Vec<usize>,
    /// Acquire → append → release cycles per process in the contention
    /// figures (`--cycles` is the lock group's uncontended cycles).
    #[arg(long, default_value_t = 200)]
    contention_cycles: u32,
    /// Session file counts of the contention figures: with N files, cycle
    /// `seq` of every process uses file `seq % N`.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize])]
    files: Vec<usize>,
    /// Process counts of the observability-cost figures (1: the
    /// uncontended cycle).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8])]
    observe_procs: Vec<usize>,
    /// Cycles per process in the observability-cost figures.
    #[arg(long, default_value_t = 1000)]
    observe_cycles: u32,
    /// Rounds of the observability-cost figures (each runs every variant;
    /// the figure is the median).
    #[arg(long, default_value_t = 3)]
    observe_rounds: usize,
    /// Directory for the bench's scratch files (its file system decides what
    /// `fdatasync` costs); default: the system temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the figures as one JSON object (see docs/cli.md for the shape).
    #[arg(long)]
    json: bool,
    /// PostgreSQL (`--backend URL`): durable commits and `SELECT 1` round
    /// trips measured for the server's floor.
    #[arg(long, default_value_t = 200)]
    pg_floor: usize,
    /// PostgreSQL: uncontended acquire+release cycles.
    #[arg(long, default_value_t = 300)]
    pg_cycles: usize,
    /// PostgreSQL: cross-process hand-off trials.
    #[arg(long, default_value_t = 30)]
    pg_handoffs: usize,
    /// PostgreSQL: SIGKILL trials.
    #[arg(long, default_value_t = 5)]
    pg_kills: usize,
    /// PostgreSQL: trials of a holder SIGSTOPped past its lease.
    #[arg(long, default_value_t = 3)]
    pg_stops: usize,
    /// PostgreSQL: lease of the stopped holder, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pg_lease_ms: u64,
    /// PostgreSQL: entries appended per throughput configuration (split
    /// across the writers, in whole turns).
    #[arg(long, default_value_t = 2000)]
    pg_append_entries: u32,
}

/// Summary of one measured quantity, in milliseconds.
#[derive(Debug, Serialize)]
struct Figure {
    name: String,
    samples: usize,
    median_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    target: String,
    target_median_ms: f64,
    /// Whether the target was met; `None` for a baseline without one.
    #[serde(skip)]
    met: Option<bool>,
}

/// Fenced append throughput of one configuration.
#[derive(Debug, Serialize)]
struct Throughput {
    name: String,
    writers: usize,
    durability: &'static str,
    entries: u64,
    seconds: f64,
    entries_per_sec: f64,
    /// Why the transcript failed verification, if it did.
    #[serde(skip)]
    failure: Option<String>,
}

/// The schema version of the `--json` document.
pub const JSON_VERSION: u32 = 1;

/// One element of the `--json` document's `figures`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Latency(&'a Figure),
    Throughput(&'a Throughput),
    Contention(&'a contention::Contention),
    Observe(&'a observe::Cost),
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A latency figure whose target is `median < target_median_ms`.
fn figure(
    name: impl Into<String>,
    mut ms: Vec<f64>,
    target: impl Into<String>,
    target_median_ms: f64,
) -> Figure {
    ms.sort_by(f64::total_cmp);
    let median_ms = percentile(&ms, 0.5);
    Figure {
        name: name.into(),
        samples: ms.len(),
        median_ms,
        p90_ms: percentile(&ms, 0.9),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
        target: target.into(),
        target_median_ms,
        met: Some(median_ms < target_median_ms),
    }
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

fn uncontended(dir: &Path, cycles: usize) -> Result<Vec<f64>> {
    let locks = sessionlock::SessionLock::new();
    let session = dir.join("uncontended.jsonl");
    for _ in 0..200 {
        locks.acquire(&session)?.release()?;
    }
    let mut ms = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        let t = Instant::now();
        let g = locks.acquire(&session)?;
        g.release()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ms)
}

/// Two processes pass the lock back and forth; each trial times the waiter's
/// acquire returning after the holder's release returned.
fn handoffs(dir: &Path, trials: usize) -> Result<Vec<f64>> {
    let session = dir.join("handoff.jsonl").display().to_string();
    let args = ["cycle".to_owned(), "--session".to_owned(), session];
    let a = worker::spawn("cycler-a", &args)?;
    let b = worker::spawn("cycler-b", &args)?;
    handoff_trials(a, b, trials)
}

/// `trials` hand-offs between two `cycle` workers of one session, taking
/// turns as the holder. Returns milliseconds from the holder's release
/// returning to the waiter's acquire returning.
fn handoff_trials(mut a: worker::Worker, mut b: worker::Worker, trials: usize) -> Result<Vec<f64>> {
    let within = Duration::from_secs(10);
    let mut ms = Vec::with_capacity(trials);
    for i in 0..trials {
        let (holder, waiter) = if i % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        holder.say("go")?;
        holder.expect("ACQUIRED", within)?;
        waiter.say("go")?;
        waiter.expect("WAITING", within)?;
        // Let the waiter fall asleep on the lock; vary the phase.
        std::thread::sleep(Duration::from_millis(20 + (i as u64 * 7) % 30));
        holder.say("release")?;
        let released = holder.expect("RELEASED", within)?;
        let acquired = waiter.expect("ACQUIRED", within)?;
        ms.push(ms_between(field(&released, 0)?, field(&acquired, 0)?));
        waiter.say("release")?;
        waiter.expect("RELEASED", within)?;
    }
    a.finish(within)?;
    b.finish(within)?;
    Ok(ms)
}

/// How many of `total` entries writer `i` of `writers` appends.
fn share(total: u32, writers: usize, i: usize) -> u32 {
    let n = writers as u32;
    total / n + u32::from((i as u32) < total % n)
}

/// `writers` processes append `total` entries to one transcript, each entry
/// under its own acquisition; then the transcript is checked to hold each
/// writer's entries exactly once, complete.
fn append_throughput(
    dir: &Path,
    writers: usize,
    total: u32,
    durability: DurabilityArg,
) -> Result<Throughput> {
    let session = dir.join(format!("append-{}-{writers}.jsonl", durability.name()));
    let counts: Vec<u32> = (0..writers).map(|i| share(total, writers, i)).collect();
    let mut workers = Vec::with_capacity(writers);
    for (i, &count) in counts.iter().enumerate() {
        let args = [
            "appendbench".to_owned(),
            "--session".to_owned(),
            session.display().to_string(),
            "--count".to_owned(),
            count.to_string(),
            "--durability".to_owned(),
            durability.name().to_owned(),
            "--id".to_owned(),
            i.to_string(),
        ];
        workers.push(worker::spawn(format!("appender-{i}"), &args)?);
    }
    let (entries, seconds) = run_writers(workers)?;
    Ok(Throughput {
        name: format!(
            "fenced append, {writers} writer{}, durability {}",
            if writers == 1 { "" } else { "s" },
            durability.name()
        ),
        writers,
        durability: durability.name(),
        entries,
        seconds,
        entries_per_sec: entries as f64 / seconds,
        failure: verify_appends(&session, &counts).err(),
    })
}

/// Starts the append-bench `workers` together once each is `READY`, and
/// waits for them to end. Returns how many entries they appended and the
/// seconds from the first one's start to the last one's end (as they
/// stamped them).
fn run_writers(mut workers: Vec<worker::Worker>) -> Result<(u64, f64)> {
    for w in &workers {
        w.expect("READY", Duration::from_secs(30))?;
    }
    for w in &mut workers {
        w.say("go")?;
    }
    let mut first_start = u64::MAX;
    let mut last_end = 0u64;
    let mut entries = 0u64;
    for w in &workers {
        let start: u64 = field(&w.expect("START", Duration::from_secs(30))?, 0)?;
        first_start = first_start.min(start);
    }
    for w in &workers {
        let done = w.expect("DONE", Duration::from_secs(600))?;
        entries += field::<u64>(&done, 0)?;
        last_end = last_end.max(field(&done, 1)?);
    }
    for w in workers {
        let name = w.name().to_owned();
        let st = w.finish(Duration::from_secs(30))?;
        if !st.success() {
            bail!("{name} exited with {st}");
        }
    }
    Ok((entries, last_end.saturating_sub(first_start) as f64 / 1e9))
}

/// Checks that an append-bench entry of writer `w` with sequence number
/// `seq` is one `counts` expects and was not `seen` before.
fn check_entry(
    counts: &[u32],
    seen: &mut HashSet<(u64, u64)>,
    w: u64,
    seq: u64,
) -> std::result::Result<(), String> {
    let known = usize::try_from(w)
        .ok()
        .and_then(|w| counts.get(w))
        .is_some_and(|&c| seq < u64::from(c));
    if !known {
        return Err(format!("unexpected entry w={w} seq={seq}"));
    }
    if !seen.insert((w, seq)) {
        return Err(format!("duplicate entry w={w} seq={seq}"));
    }
    Ok(())
}

/// Checks that `session` holds exactly `counts[w]` entries of each writer
/// `w` (sequence numbers `0..counts[w]`, each once), all complete, and
/// nothing else.
fn verify_appends(session: &Path, counts: &[u32]) -> std::result::Result<(), String> {
    let expected: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let mut reader = Reader::open(session).map_err(|e| e.to_string())?;
    let mut seen = HashSet::new();
    let mut n = 0u64;
    for entry in reader.by_ref() {
        let entry = entry.map_err(|e| format!("bad entry: {e}"))?;
        n += 1;
        let w = entry.value["w"].as_u64();
        let seq = entry.value["seq"].as_u64();
        let (Some(w), Some(seq)) = (w, seq) else {
            return Err(format!("foreign entry at byte {}", entry.offset));
        };
        check_entry(counts, &mut seen, w, seq)?;
    }
    if let Some(t) = reader.torn_tail() {
        return Err(format!("torn tail of {} bytes at byte {}", t.len, t.offset));
    }
    if n != expected {
        return Err(format!("{n} entries, expected {expected}"));
    }
    Ok(())
}

/// Writes a transcript of about `bytes` bytes of JSONL entries (~1 KiB each).
fn write_transcript(path: &Path, bytes: u64) -> Result<()> {
    let f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, f);
    let text = "lorem ipsum dolor sit amet ".repeat(36);
    let mut written = 0u64;
    let mut seq = 0u64;
    while written < bytes {
        let line = format!(
            "{{\"type\":\"message\",\"role\":\"{}\",\"seq\":{seq},\"text\":\"{text}\"}}\n",
            if seq % 2 == 0 { "user" } else { "assistant" }
        );
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        seq += 1;
    }
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("sync {}", path.display()))?;
    Ok(())
}

/// Times `release_for_prompt` + `reacquire_after_prompt` round trips of one
/// attempt per transcript, alternating between them so drift in the
/// machine's speed hits both alike. Returns milliseconds per transcript.
fn round_trips(paths: &[PathBuf], n: usize) -> Result<Vec<Vec<f64>>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start a tokio runtime")?;
    rt.block_on(async {
        let lock = LockOptions::from_env()
            .timeout(Some(Duration::from_secs(60)))
            .lane("bench");
        let mut attempts = Vec::with_capacity(paths.len());
        for p in paths {
            let opts = AttemptOptions::default().lock(lock.clone());
            attempts.push(Attempt::begin_file(p, opts).await?);
        }
        let mut ms = vec![Vec::with_capacity(n); paths.len()];
        let warmup = (n / 10).clamp(1, 20);
        for i in 0..warmup + n {
            for (a, out) in attempts.iter().zip(ms.iter_mut()) {
                let t = Instant::now();
                a.release_for_prompt().await?;
                a.reacquire_after_prompt().await?;
                let d = t.elapsed().as_secs_f64() * 1e3;
                if i >= warmup {
                    out.push(d);
                }
            }
        }
        for a in attempts {
            a.dispose()?;
        }
        Ok(ms)
    })
}

fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.1} µs", ms * 1e3)
    } else {
        format!("{ms:.2} ms")
    }
}

fn lock_figures(args: &Args, dir: &Path) -> Result<Vec<Figure>> {
    progress(&format!("uncontended acquire+release × {}", args.cycles));
    let un = uncontended(dir, args.cycles)?;
    progress(&format!("cross-process hand-off × {}", args.handoffs));
    let ho = handoffs(dir, args.handoffs)?;
    progress(&format!("SIGKILL of the holder × {}", args.kills));
    let kills = (0..args.kills)
        .map(|i| kill_mid_hold(&dir.join(format!("kill-{i}.jsonl"))))
        .collect::<Result<Vec<_>>>()
        .context("kill trials")?;
    progress(&format!(
        "wedged holder past a {} ms lease × {}",
        args.lease_ms, args.wedges
    ));
    let wedges = (0..args.wedges)
        .map(|i| {
            wedge_past_lease(&dir.join(format!("wedge-{i}.jsonl")), args.lease_ms).map(|(d, _)| d)
        })
        .collect::<Result<Vec<_>>>()
        .context("wedge trials")?;
    Ok(vec![
        figure("uncontended acquire+release", un, "median < 0.05 ms", 0.05),
        figure("hand-off: release → waiter holds", ho, "median < 1 ms", 1.0),
        figure(
            "SIGKILL of holder → waiter holds",
            kills,
            "median < 20 ms",
            20.0,
        ),
        figure(
            "lease end (wedged) → waiter holds",
            wedges,
            "median < 20 ms",
            20.0,
        ),
    ])
}

fn throughput_figures(args: &Args, dir: &Path) -> Result<Vec<Throughput>> {
    let mut out = Vec::new();
    for (durability, total) in [
        (DurabilityArg::None, args.append_entries),
        (DurabilityArg::Data, args.append_entries_data),
    ] {
        for &writers in &args.writers {
            progress(&format!(
                "fenced append, {writers} writer process(es), durability {}: {total} entries",
                durability.name()
            ));
            let t = append_throughput(dir, writers, total, durability)?;
            if let Some(why) = &t.failure {
                eprintln!("bench: FAILED: {}: transcript check: {why}", t.name);
            }
            out.push(t);
        }
    }
    Ok(out)
}

fn round_trip_figures(args: &Args, dir: &Path) -> Result<Vec<Figure>> {
    let sizes = [args.small_mib, args.large_mib];
    let mut paths = Vec::new();
    for mib in sizes {
        progress(&format!("writing a {mib} MiB transcript"));
        let p = dir.join(format!("prompt-{mib}mib.jsonl"));
        write_transcript(&p, mib << 20)?;
        paths.push(p);
    }
    progress(&format!(
        "release_for_prompt + reacquire_after_prompt × {} on {} MiB and {} MiB",
        args.round_trips, args.small_mib, args.large_mib
    ));
    let mut ms = round_trips(&paths, args.round_trips)?.into_iter();
    let (small, large) = (ms.next().unwrap_or_default(), ms.next().unwrap_or_default());
    let target = format!(
        "{} MiB within 2× of {} MiB (the fence never reads the transcript)",
        args.large_mib, args.small_mib
    );
    let mut small = figure(
        format!("prompt round trip, {} MiB transcript", args.small_mib),
        small,
        format!("baseline for {} MiB", args.large_mib),
        0.0,
    );
    small.target_median_ms = 2.0 * small.median_ms;
    small.met = None;
    let mut large = figure(
        format!("prompt round trip, {} MiB transcript", args.large_mib),
        large,
        target,
        small.target_median_ms,
    );
    large.met = Some(large.median_ms <= large.target_median_ms);
    Ok(vec![small, large])
}

/// A lock-holding wrapper (`sessionlock exec`, `flock(1)`) around a worker
/// role: the command line for that role.
type Wrap<'a> = &'a dyn Fn(&str) -> std::process::Command;

/// One hand-off between two wrapped commands: the holder's command (`gate`)
/// exits while the waiter's wrapper waits for the lock; how long from the
/// holder's command's last stamp until the waiter's command's first.
fn wrapped_handoff(name: &str, wrap: Wrap<'_>, phase: Duration) -> Result<f64> {
    let within = Duration::from_secs(30);
    let mut holder = worker::start(format!("{name} holder"), wrap("gate"))?;
    holder.expect("READY", within)?;
    let waiter = worker::start(format!("{name} waiter"), wrap("stamp"))?;
    // Let the waiter start and fall asleep on the lock.
    std::thread::sleep(phase);
    holder.say("exit")?;
    let exited = holder.expect("EXIT", within)?;
    let started = waiter.expect("START", within)?;
    for w in [holder, waiter] {
        let who = w.name().to_owned();
        let st = w.finish(within)?;
        if !st.success() {
            bail!("{who} exited with {st}");
        }
    }
    Ok(ms_between(field(&exited, 0)?, field(&started, 0)?))
}

/// exec → exec and flock(1) → flock(1) hand-offs, alternating trial by
/// trial so that drift in the machine's speed hits both alike. Returns
/// (exec, flock) milliseconds.
fn exec_handoffs(args: &Args, dir: &Path) -> Result<(Vec<f64>, Vec<f64>)> {
    let exe = std::env::current_exe().context("locate the sessionlock binary")?;
    let wrapper = args.exec_binary.clone().unwrap_or_else(|| exe.clone());
    let session = dir.join("exec-handoff.jsonl");
    let flock_file = dir.join("flock-handoff.lock");
    let exec = |role: &str| {
        let mut c = std::process::Command::new(&wrapper);
        c.arg("exec")
            .args(["--timeout-ms", "60000"])
            .arg(&session)
            .arg("--")
            .arg(&exe)
            .args(["worker", role]);
        c
    };
    let flock = |role: &str| {
        let mut c = std::process::Command::new(&args.flock);
        c.arg(&flock_file).arg(&exe).args(["worker", role]);
        c
    };
    let mut ms = (Vec::new(), Vec::new());
    for i in 0..args.exec_handoffs {
        let phase = Duration::from_millis(40 + (i as u64 * 7) % 30);
        ms.0.push(wrapped_handoff("exec", &exec, phase).context("exec hand-off")?);
        ms.1.push(
            wrapped_handoff("flock", &flock, phase).with_context(|| {
                format!("flock hand-off (is {} installed?)", args.flock.display())
            })?,
        );
    }
    Ok(ms)
}

fn exec_figures(args: &Args, dir: &Path) -> Result<Vec<Figure>> {
    progress(&format!(
        "exec → exec and flock(1) → flock(1) hand-off × {}",
        args.exec_handoffs
    ));
    let (exec, flock) = exec_handoffs(args, dir)?;
    let mut flock = figure(
        "flock(1) hand-off: exits → next starts",
        flock,
        "baseline for exec",
        0.0,
    );
    flock.target_median_ms = 2.0 * flock.median_ms;
    flock.met = None;
    let mut exec = figure(
        "exec hand-off: exits → next starts",
        exec,
        "median ≤ 2× flock(1)'s",
        flock.target_median_ms,
    );
    exec.met = Some(exec.median_ms <= exec.target_median_ms);
    Ok(vec![exec, flock])
}

fn print_figures(figures: &[Figure]) {
    println!(
        "{:<40} {:>7} {:>10} {:>10} {:>10} {:>10}  target",
        "figure", "samples", "median", "p90", "p99", "max"
    );
    for f in figures {
        let met = match f.met {
            Some(true) => " (met)",
            Some(false) => " (MISSED)",
            None => "",
        };
        println!(
            "{:<40} {:>7} {:>10} {:>10} {:>10} {:>10}  {}{met}",
            f.name,
            f.samples,
            fmt_ms(f.median_ms),
            fmt_ms(f.p90_ms),
            fmt_ms(f.p99_ms),
            fmt_ms(f.max_ms),
            f.target
        );
    }
}

fn print_throughput(rows: &[Throughput]) {
    println!("fenced append throughput: per entry, acquire + Transcript::append (one ~200-byte entry) + release; one process per writer");
    println!(
        "{:>7} {:>10} {:>8} {:>9} {:>12}  transcript",
        "writers", "durability", "entries", "seconds", "entries/s"
    );
    for t in rows {
        let check = match &t.failure {
            None => "verified".to_owned(),
            Some(why) => format!("FAILED: {why}"),
        };
        println!(
            "{:>7} {:>10} {:>8} {:>9.3} {:>12.0}  {check}",
            t.writers, t.durability, t.entries, t.seconds, t.entries_per_sec
        );
    }
}

pub fn run(args: Args, backend: &crate::backend_choice::BackendChoice) -> Result<ExitCode> {
    let pg_url = match backend {
        crate::backend_choice::BackendChoice::File => None,
        crate::backend_choice::BackendChoice::Postgres(url) => Some(url.as_str()),
    };
    if pg_url.is_some() {
        anyhow::ensure!(
            args.pg_floor > 0
                && args.pg_cycles > 0
                && args.pg_handoffs > 0
                && args.pg_kills > 0
                && args.pg_stops > 0
                && args.pg_append_entries >= 80,
            "--pg-floor, --pg-cycles, --pg-handoffs, --pg-kills and --pg-stops must be at least 1, --pg-append-entries at least 80"
        );
    }
    anyhow::ensure!(
        !args.writers.is_empty() && args.writers.iter().all(|&w| (1..=64).contains(&w)),
        "--writers: each count must be 1..=64"
    );
    anyhow::ensure!(args.round_trips > 0, "--round-trips must be at least 1");
    anyhow::ensure!(
        args.small_mib > 0 && args.large_mib > 0,
        "--small-mib and --large-mib must be at least 1"
    );
    let mut builder = tempfile::Builder::new();
    builder.prefix("sessionlock-bench-");
    let tmp = match &args.dir {
        Some(d) => builder.tempdir_in(d),
        None => builder.tempdir(),
    }
    .context("create the bench's scratch directory")?;
    let dir = tmp.path();
    let lock = matches!(args.only, Only::All | Only::Lock);
    let transcript = matches!(args.only, Only::All | Only::Transcript);
    let exec = matches!(args.only, Only::All | Only::Exec);
    anyhow::ensure!(
        !exec || args.exec_handoffs > 0,
        "--exec-handoffs must be at least 1"
    );
    let contend = matches!(args.only, Only::All | Only::Contention);
    let observing = matches!(args.only, Only::All | Only::Observe);
    anyhow::ensure!(
        !args.observe_procs.is_empty()
            && args.observe_procs.iter().all(|&p| (1..=128).contains(&p))
            && args.observe_cycles > 0
            && args.observe_rounds > 0,
        "--observe-procs: each count must be 1..=128; --observe-cycles and --observe-rounds at least 1"
    );
    anyhow::ensure!(
        !args.procs.is_empty() && args.procs.iter().all(|&p| (1..=128).contains(&p)),
        "--procs: each count must be 1..=128"
    );
    anyhow::ensure!(
        !args.files.is_empty() && args.files.iter().all(|&f| (1..=64).contains(&f)),
        "--files: each count must be 1..=64"
    );
    anyhow::ensure!(
        args.contention_cycles > 0,
        "--contention-cycles must be at least 1"
    );

    let mut figures = Vec::new();
    if lock {
        figures.extend(lock_figures(&args, dir)?);
    }
    let mut throughput = Vec::new();
    if transcript {
        throughput = throughput_figures(&args, dir)?;
        figures.extend(round_trip_figures(&args, dir)?);
    }
    let exec_figs = if exec {
        exec_figures(&args, dir)?
    } else {
        Vec::new()
    };
    let contention = if contend {
        contention::measure_all(dir, &args.procs, &args.files, args.contention_cycles)?
    } else {
        Vec::new()
    };
    let costs = if observing {
        observe::measure(
            dir,
            &args.observe_procs,
            args.observe_cycles,
            args.observe_rounds,
        )?
    } else {
        Vec::new()
    };
    let pg_figs = match pg_url {
        Some(url) if lock || transcript => Some(pg::measure(&args, url, lock, transcript)?),
        _ => None,
    };
    let contention_failed =
        contention.iter().any(|c| c.failure.is_some()) || costs.iter().any(|c| !c.verified);
    let transcript_failed = throughput.iter().any(|t| t.failure.is_some())
        || pg_figs
            .iter()
            .flat_map(|p| &p.throughput)
            .any(|(t, _)| t.failure.is_some());
    let failed = contention_failed || transcript_failed;
    let code = if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    };

    if args.json {
        // Lock figures, then throughput, then round trips, then exec: the
        // text order.
        let n_lock = if lock { 4 } else { 0 };
        let items: Vec<Item> = figures[..n_lock]
            .iter()
            .map(Item::Latency)
            .chain(throughput.iter().map(Item::Throughput))
            .chain(figures[n_lock..].iter().map(Item::Latency))
            .chain(exec_figs.iter().map(Item::Latency))
            .chain(contention.iter().map(Item::Contention))
            .chain(costs.iter().map(Item::Observe))
            .chain(pg_figs.iter().flat_map(|p| {
                p.floor
                    .iter()
                    .chain(&p.lock)
                    .map(Item::Latency)
                    .chain(p.throughput.iter().map(|(t, _)| Item::Throughput(t)))
            }))
            .collect();
        let doc = serde_json::json!({ "version": JSON_VERSION, "figures": items });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(code);
    }
    if lock {
        print_figures(&figures[..4]);
    }
    if transcript {
        if lock {
            println!();
        }
        print_throughput(&throughput);
        println!();
        let rt = &figures[figures.len() - 2..];
        print_figures(rt);
        println!(
            "round trip {} MiB / {} MiB: median ×{:.2}, p90 ×{:.2}; target ≤ ×2: {}",
            args.large_mib,
            args.small_mib,
            rt[1].median_ms / rt[0].median_ms,
            rt[1].p90_ms / rt[0].p90_ms,
            if rt[1].met == Some(true) {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    if let [e, f] = &exec_figs[..] {
        if lock || transcript {
            println!();
        }
        print_figures(&exec_figs);
        println!(
            "exec / flock(1) hand-off: median ×{:.2}, p90 ×{:.2}, max ×{:.2}; target median ≤ ×2: {}",
            e.median_ms / f.median_ms,
            e.p90_ms / f.p90_ms,
            e.max_ms / f.max_ms,
            if e.met == Some(true) { "met" } else { "MISSED" }
        );
    }
    if contend {
        if lock || transcript || exec {
            println!();
        }
        contention::print(&contention);
    }
    if observing {
        if lock || transcript || exec || contend {
            println!();
        }
        observe::print(&costs);
    }
    if let Some(p) = &pg_figs {
        println!();
        pg::print(&backend.to_string(), p);
    }
    if contention_failed {
        eprintln!("bench: FAILED: a contention run lost, duplicated or interleaved a line, or overlapped critical sections");
    }
    if transcript_failed {
        eprintln!("bench: FAILED: a transcript did not hold exactly the expected entries");
    }
    Ok(code)
}

/// A holder is SIGKILLed while a waiter sleeps on the lock: how long until
/// the waiter holds it.
fn kill_mid_hold(session: &Path) -> Result<f64> {
    let s = session.display().to_string();
    let victim = worker::spawn("victim", &["hold".into(), "--session".into(), s.clone()])?;
    victim.expect("HELD", Duration::from_secs(60))?;
    let mut waiter = worker::spawn("waiter", &["wait".into(), "--session".into(), s])?;
    waiter.expect("WAITING", Duration::from_secs(10))?;
    // Give the waiter time to go to sleep on the lock.
    std::thread::sleep(Duration::from_millis(100));
    let killed = sessionlock::monotonic_ns();
    victim.signal(Signal::KILL)?;
    let got = waiter.expect("ACQUIRED", Duration::from_secs(30))?;
    let delay = ms_between(killed, field(&got, 0)?);
    waiter.say("release")?;
    waiter.finish(Duration::from_secs(10))?;
    Ok(delay)
}

/// A holder spins on the CPU past its lease: how long after the lease ended
/// until a waiter holds the lock, and whether its late write was rejected.
fn wedge_past_lease(session: &Path, lease_ms: u64) -> Result<(f64, String)> {
    let s = session.display().to_string();
    let wedged = worker::spawn(
        "wedged",
        &[
            "wedge".into(),
            "--session".into(),
            s.clone(),
            "--max-hold-ms".into(),
            lease_ms.to_string(),
            "--spin-ms".into(),
            (lease_ms * 3).to_string(),
        ],
    )?;
    let held = wedged.expect("HELD", Duration::from_secs(60))?;
    let lease_end = field::<u64>(&held, 1)? + lease_ms * 1_000_000;
    let mut waiter = worker::spawn("waiter", &["wait".into(), "--session".into(), s])?;
    let got = waiter.expect("ACQUIRED", Duration::from_secs(30))?;
    let delay = ms_between(lease_end, field(&got, 0)?);
    // Hold until the wedged lane wakes up and tries its late write.
    let late = wedged
        .expect("LATE-WRITE", Duration::from_secs(30))?
        .join(" ");
    waiter.say("release")?;
    waiter.finish(Duration::from_secs(10))?;
    wedged.finish(Duration::from_secs(10))?;
    Ok((delay, late))
}
