//! What metrics and the event log cost on the hot path (`--only observe`,
//! design §20): the contention cycle (acquire → append one line with two
//! `write(2)` → release, real processes) with one process (the uncontended
//! cycle) and with P processes on one file (the anchors' S2), each run
//! plain, with a Prometheus recorder installed, and with the recorder and
//! the event log on. The variants alternate within every round, in a
//! rotating order, so that drift of the machine hits them alike; each
//! figure is the median of the rounds.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::contention::{self, Impl};
use super::progress;

const VARIANTS: [Impl; 3] = [
    Impl::Sessionlock,
    Impl::SessionlockMetrics,
    Impl::SessionlockObserved,
];

/// One variant's figures at one process count.
#[derive(Debug, Serialize)]
pub(super) struct Cost {
    pub(super) name: String,
    /// `sessionlock`, `sessionlock-metrics` or `sessionlock-observed`.
    pub(super) variant: &'static str,
    pub(super) procs: usize,
    pub(super) cycles: u32,
    /// Operations per second of each round.
    pub(super) rounds: Vec<f64>,
    /// Their median.
    pub(super) ops_per_sec: f64,
    /// The median of the rounds' p99 waits.
    pub(super) wait_p99_ms: f64,
    /// `1 - ops_per_sec / plain ops_per_sec`: how much slower than plain
    /// (negative: faster, which is noise).
    pub(super) slowdown: f64,
    /// Event-log lines per operation (observed only).
    pub(super) lines_per_op: Option<f64>,
    /// Whether every round verified (transcripts whole, no overlap).
    pub(super) verified: bool,
}

/// Measures every variant at every process count in `procs`, `rounds`
/// rounds of `count` cycles per process.
pub(super) fn measure(dir: &Path, procs: &[usize], count: u32, rounds: usize) -> Result<Vec<Cost>> {
    let mut out = Vec::new();
    for &p in procs {
        let mut runs: Vec<Vec<contention::Contention>> =
            VARIANTS.iter().map(|_| Vec::new()).collect();
        let mut lines = 0u64;
        for r in 0..rounds {
            progress(&format!(
                "observe: {p} process(es) × {count} cycles, round {}/{rounds}: plain, metrics, metrics + event log",
                r + 1
            ));
            for k in 0..VARIANTS.len() {
                let v = (k + r) % VARIANTS.len();
                let sub = dir.join(format!("observe-p{p}-r{r}-{}", VARIANTS[v].name()));
                std::fs::create_dir_all(&sub)?;
                let c = contention::measure(&sub, VARIANTS[v], p, 1, count)?;
                if VARIANTS[v] == Impl::SessionlockObserved {
                    lines += count_lines(&sub)?;
                }
                std::fs::remove_dir_all(&sub)?;
                runs[v].push(c);
            }
        }
        let median = |xs: &mut Vec<f64>| {
            xs.sort_by(f64::total_cmp);
            xs[xs.len() / 2]
        };
        let plain = median(&mut runs[0].iter().map(|c| c.ops_per_sec).collect());
        for (v, rs) in runs.iter().enumerate() {
            let ops = median(&mut rs.iter().map(|c| c.ops_per_sec).collect());
            let total_ops: u64 = rs.iter().map(|c| c.ops).sum();
            out.push(Cost {
                name: format!("observe cost, {} p{p}", VARIANTS[v].name()),
                variant: VARIANTS[v].name(),
                procs: p,
                cycles: count,
                rounds: rs.iter().map(|c| c.ops_per_sec).collect(),
                ops_per_sec: ops,
                wait_p99_ms: median(&mut rs.iter().map(|c| c.wait_p99_ms).collect()),
                slowdown: 1.0 - ops / plain,
                lines_per_op: (VARIANTS[v] == Impl::SessionlockObserved)
                    .then(|| lines as f64 / total_ops as f64),
                verified: rs.iter().all(|c| c.failure.is_none()),
            });
        }
    }
    Ok(out)
}

/// Lines of the event logs in `dir`.
fn count_lines(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.to_string_lossy().ends_with(".events.jsonl") {
            n += std::fs::read(&path)?
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
        }
    }
    Ok(n)
}

/// The text table, its verdicts and legend.
pub(super) fn print(rows: &[Cost]) {
    println!(
        "observe: the cost of metrics and the event log on the hot path (target: ≤ 5% slower)"
    );
    println!(
        "{:<21} {:>5} {:>7} {:>9} {:>8} {:>9}  {:<26} check",
        "variant", "procs", "cycles", "ops/s", "slower", "wait p99", "rounds (ops/s)"
    );
    for c in rows {
        let rounds: Vec<String> = c.rounds.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "{:<21} {:>5} {:>7} {:>9.0} {:>7.1}% {:>9}  {:<26} {}",
            c.variant,
            c.procs,
            c.cycles,
            c.ops_per_sec,
            c.slowdown * 100.0,
            super::fmt_ms(c.wait_p99_ms),
            rounds.join(" "),
            if c.verified { "verified" } else { "FAILED" }
        );
    }
    for c in rows.iter().filter(|c| c.variant != "sessionlock") {
        let lines = c.lines_per_op.map_or_else(String::new, |l| {
            format!(", {l:.2} event-log lines per operation")
        });
        println!(
            "{} at {} process(es): {:.1}% slower than plain{lines}; target ≤ 5%: {}",
            c.variant,
            c.procs,
            c.slowdown * 100.0,
            if c.slowdown <= 0.05 { "met" } else { "MISSED" }
        );
    }
    for l in [
        "cycle: acquire → append one line with two write(2) → release on one file, as `--only contention`;",
        "  1 process is the uncontended cycle, 8 the anchors' S2.",
        "variant: sessionlock = plain; -metrics = a Prometheus recorder installed (metrics-exporter-prometheus);",
        "  -observed = that recorder and the event log on (SESSIONLOCK_EVENT_LOG), every process writing one file.",
        "ops/s: the median of the rounds; the variants alternate within each round in a rotating order.",
        "slower: 1 − ops/s ÷ plain's ops/s (negative: faster, i.e. noise).",
    ] {
        println!("{l}");
    }
}
