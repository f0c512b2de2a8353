//! `sessionlock bench`: the figures behind sessionlock's speed goals, on
//! this machine, with real processes.
//!
//! - uncontended acquire + release, per cycle (in process);
//! - cross-process hand-off: holder's `release()` returns → waiter holds;
//! - SIGKILL of the holder → waiter holds;
//! - lease end of a holder wedged on the CPU → waiter holds.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::child::{field, ms_between, Worker};
use crate::demo::{kill_mid_hold, wedge_past_lease};

#[derive(clap::Args)]
pub(crate) struct Args {
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
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Summary of one measured quantity, in milliseconds.
#[derive(Debug, Serialize)]
struct Figure {
    name: &'static str,
    samples: usize,
    median_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    target: &'static str,
    target_median_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn figure(
    name: &'static str,
    mut ms: Vec<f64>,
    target: &'static str,
    target_median_ms: f64,
) -> Figure {
    ms.sort_by(f64::total_cmp);
    Figure {
        name,
        samples: ms.len(),
        median_ms: percentile(&ms, 0.5),
        p90_ms: percentile(&ms, 0.9),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
        target,
        target_median_ms,
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
    let mut a = Worker::spawn("cycler-a", &args)?;
    let mut b = Worker::spawn("cycler-b", &args)?;
    let mut ms = Vec::with_capacity(trials);
    for i in 0..trials {
        let (holder, waiter) = if i % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        holder.say("go")?;
        holder.expect("ACQUIRED", Duration::from_secs(10))?;
        waiter.say("go")?;
        waiter.expect("WAITING", Duration::from_secs(10))?;
        // Let the waiter fall asleep on the lock; vary the phase.
        std::thread::sleep(Duration::from_millis(20 + (i as u64 * 7) % 30));
        holder.say("release")?;
        let released = holder.expect("RELEASED", Duration::from_secs(10))?;
        let acquired = waiter.expect("ACQUIRED", Duration::from_secs(10))?;
        ms.push(ms_between(field(&released, 0)?, field(&acquired, 0)?));
        waiter.say("release")?;
        waiter.expect("RELEASED", Duration::from_secs(10))?;
    }
    a.finish(Duration::from_secs(10))?;
    b.finish(Duration::from_secs(10))?;
    Ok(ms)
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let tmp = tempfile::Builder::new()
        .prefix("sessionlock-bench-")
        .tempdir()?;
    let dir = tmp.path();
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

    let figures = [
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
    ];
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36} {:>7} {:>10} {:>10} {:>10} {:>10}  target",
        "figure", "samples", "median", "p90", "p99", "max"
    );
    for f in &figures {
        let fmt = |ms: f64| {
            if ms < 1.0 {
                format!("{:.1} µs", ms * 1e3)
            } else {
                format!("{ms:.2} ms")
            }
        };
        let met = if f.median_ms < f.target_median_ms {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "{:<36} {:>7} {:>10} {:>10} {:>10} {:>10}  {} ({met})",
            f.name,
            f.samples,
            fmt(f.median_ms),
            fmt(f.p90_ms),
            fmt(f.p99_ms),
            fmt(f.max_ms),
            f.target
        );
    }
    Ok(ExitCode::SUCCESS)
}
