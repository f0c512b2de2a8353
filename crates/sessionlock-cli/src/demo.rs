//! `sessionlock demo`: real processes contend for a few session files, one
//! holder is SIGKILLed mid-hold, another wedges on the CPU past its lease;
//! then every transcript is verified and a verdict printed.
//!
//! The run is a list of steps feeding one [`Verdict`], so later scenarios
//! (lanes, attempts, more faults) add steps and checks without reshaping it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::process::Signal;
use serde::Serialize;
use serde_json::Value;

use crate::child::{field, ms_between, Worker};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Number of session files.
    #[arg(long, default_value_t = 3)]
    sessions: usize,
    /// Number of appending writer processes.
    #[arg(long, default_value_t = 4)]
    writers: u32,
    /// Entries each writer appends.
    #[arg(long, default_value_t = 150)]
    entries: u32,
    /// Lease of the wedged holder, in milliseconds.
    #[arg(long, default_value_t = 400)]
    lease_ms: u64,
    /// Work in this directory instead of a fresh temporary one (kept).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the verdict as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// One verified property of the run.
#[derive(Debug, Serialize)]
pub(crate) struct Check {
    name: String,
    value: String,
    ok: bool,
}

/// The outcome of a run: checks, and PASS only if all hold.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Verdict {
    checks: Vec<Check>,
}

impl Verdict {
    fn check(&mut self, name: &str, value: impl ToString, ok: bool) {
        self.checks.push(Check {
            name: name.to_owned(),
            value: value.to_string(),
            ok,
        });
    }

    fn info(&mut self, name: &str, value: impl ToString) {
        self.check(name, value, true);
    }

    fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    fn print(&self) {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &self.checks {
            let mark = if c.ok { "  " } else { "✗ " };
            println!("{mark}{:<width$}  {}", c.name, c.value);
        }
        println!("verdict: {}", if self.passed() { "PASS" } else { "FAIL" });
    }
}

fn progress(msg: &str) {
    eprintln!("demo: {msg}");
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// What the transcripts hold, entry by entry.
#[derive(Default)]
struct Contents {
    /// (session, writer, seq) → occurrences.
    entries: HashMap<(PathBuf, u32, u32), usize>,
    corrupt: usize,
    late_writes: usize,
}

fn read_transcripts(sessions: &[PathBuf]) -> Result<Contents> {
    let mut c = Contents::default();
    for s in sessions {
        let text = match std::fs::read_to_string(s) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", s.display())),
        };
        for line in text.lines() {
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v.get("wedged").is_some() => c.late_writes += 1,
                Ok(v) => match (v["w"].as_u64(), v["seq"].as_u64()) {
                    (Some(w), Some(seq)) => {
                        *c.entries
                            .entry((s.clone(), w as u32, seq as u32))
                            .or_default() += 1;
                    }
                    _ => c.corrupt += 1,
                },
                Err(_) => c.corrupt += 1,
            }
        }
    }
    Ok(c)
}

/// Acknowledged entries: (session, writer, seq).
fn read_acks(dir: &Path, writers: u32) -> Result<Vec<(PathBuf, u32, u32)>> {
    let mut acked = Vec::new();
    for w in 0..writers {
        let path = dir.join(format!("ack-{w}"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        for line in text.lines() {
            let Some((session, seq)) = line.rsplit_once(' ') else {
                continue;
            };
            if let Ok(seq) = seq.parse() {
                acked.push((PathBuf::from(session), w, seq));
            }
        }
    }
    Ok(acked)
}

/// A holder is SIGKILLed while a waiter sleeps on the lock: how long until
/// the waiter holds it.
pub(crate) fn kill_mid_hold(session: &Path) -> Result<f64> {
    let s = session.display().to_string();
    let victim = Worker::spawn("victim", &["hold".into(), "--session".into(), s.clone()])?;
    victim.expect("HELD", Duration::from_secs(60))?;
    let mut waiter = Worker::spawn("waiter", &["wait".into(), "--session".into(), s])?;
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
pub(crate) fn wedge_past_lease(session: &Path, lease_ms: u64) -> Result<(f64, String)> {
    let s = session.display().to_string();
    let wedged = Worker::spawn(
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
    let mut waiter = Worker::spawn("waiter", &["wait".into(), "--session".into(), s])?;
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

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    anyhow::ensure!(args.sessions >= 2, "--sessions must be at least 2");
    anyhow::ensure!(args.writers >= 1, "--writers must be at least 1");
    let started = Instant::now();
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("sessionlock-demo-")
                .tempdir()?;
            tmp.path().to_owned()
        }
    };
    let sessions: Vec<PathBuf> = (0..args.sessions)
        .map(|i| dir.join(format!("s{i}.jsonl")))
        .collect();
    let doomed = args.writers; // one extra writer, SIGKILLed mid-run
    progress(&format!(
        "{} writer processes × {} entries over {} sessions in {}",
        args.writers + 1,
        args.entries,
        args.sessions,
        dir.display()
    ));

    let mut writers = Vec::new();
    for w in 0..=args.writers {
        let mut a = vec!["append".to_owned()];
        for s in &sessions {
            a.extend(["--sessions".to_owned(), s.display().to_string()]);
        }
        a.extend([
            "--ack".into(),
            dir.join(format!("ack-{w}")).display().to_string(),
            "--id".into(),
            w.to_string(),
            "--count".into(),
            args.entries.to_string(),
        ]);
        writers.push(Worker::spawn(format!("writer-{w}"), &a)?);
    }

    let mut verdict = Verdict::default();
    progress("SIGKILL a holder mid-hold while a waiter sleeps on its lock");
    let kill_delay = kill_mid_hold(&sessions[0])?;
    progress("wedge a holder on the CPU past its lease");
    let (lease_delay, late) = wedge_past_lease(&sessions[1], args.lease_ms)?;

    progress("SIGKILL a writer mid-run");
    let doomed_ack = dir.join(format!("ack-{doomed}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_lines(&doomed_ack) < (args.entries as usize / 4).max(1) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let doomed_worker = writers.pop().context("doomed writer")?;
    doomed_worker.signal(Signal::KILL)?;
    drop(doomed_worker);

    progress("waiting for the writers");
    for w in writers {
        w.expect("DONE", Duration::from_secs(120))?;
        w.finish(Duration::from_secs(10))?;
    }

    let acked = read_acks(&dir, args.writers + 1)?;
    let contents = read_transcripts(&sessions)?;
    let lost = acked
        .iter()
        .filter(|(s, w, q)| !contents.entries.contains_key(&(s.clone(), *w, *q)))
        .count();
    let duplicated: usize = contents
        .entries
        .values()
        .filter(|&&n| n > 1)
        .map(|n| n - 1)
        .sum();
    let present: usize = contents.entries.values().sum();
    let expected = args.writers as usize * args.entries as usize;
    let doomed_acked = acked.iter().filter(|(_, w, _)| *w == doomed).count();

    let settings = sessionlock::Config::default().resolve();
    let mut live_locks = BTreeMap::new();
    for s in &sessions {
        if let Some(st) = sessionlock::status::inspect_session(s, &settings)? {
            if st.liveness.presumed_alive() {
                live_locks.insert(s.display().to_string(), st.holder.to_string());
            }
        }
    }

    verdict.info(
        "entries acknowledged",
        format!(
            "{} ({expected} by surviving writers, {doomed_acked} by the killed one)",
            acked.len()
        ),
    );
    verdict.check(
        "entries present",
        format!(
            "{present} ({} written but unacknowledged at SIGKILL)",
            present.saturating_sub(acked.len())
        ),
        present >= acked.len(),
    );
    verdict.check("entries lost", lost, lost == 0);
    verdict.check("entries duplicated", duplicated, duplicated == 0);
    verdict.check("corrupt lines", contents.corrupt, contents.corrupt == 0);
    verdict.check(
        "surviving writers complete",
        format!("{}/{expected}", acked.len() - doomed_acked),
        acked.len() - doomed_acked == expected,
    );
    verdict.info("SIGKILL → waiter holds", format!("{kill_delay:.2} ms"));
    verdict.info(
        "lease end → waiter holds",
        format!(
            "{lease_delay:.2} ms (wedged holder, lease {} ms)",
            args.lease_ms
        ),
    );
    verdict.check(
        "wedged holder's late write",
        &late,
        late.starts_with("rejected") && contents.late_writes == 0,
    );
    verdict.check("live locks left", live_locks.len(), live_locks.is_empty());
    verdict.info(
        "elapsed",
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    );

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "passed": verdict.passed(),
                "checks": verdict.checks,
            }))?
        );
    } else {
        verdict.print();
    }
    Ok(if verdict.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
