//! The contention figures (`--only contention`): P processes × K cycles of
//! acquire → append one line with two `write(2)` → release on one session
//! file (or `--files N`: cycle `seq` of every process uses file
//! `seq % N`), with sessionlock's file backend and, in the same run, with
//! raw blocking `flock(2)` on `T.lock` as the floor. The shape of the
//! anchors' S2 scenario (`/work/shared/anchors-bench`).
//!
//! Each process is a `worker contend` role: this binary re-executed. It
//! stamps `CLOCK_MONOTONIC` at wait start, acquired and release-called for
//! every cycle, and reports the stamps after its last cycle, so that
//! printing costs nothing inside the measured part.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustix::fs::{flock, FlockOperation};
use serde::Serialize;
use sessionlock::{monotonic_ns, LockOptions, SessionLock};

use super::{percentile, progress};
use crate::worker::{self, field, say};

/// What a contention worker locks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Impl {
    /// sessionlock's file backend, blocking `acquire_with` (timeout 60 s).
    Sessionlock,
    /// Raw blocking `flock(2)` `LOCK_EX` on `T.lock` (the floor).
    Flock,
    /// `sessionlock` with a Prometheus recorder installed (`--only
    /// observe`): what metrics cost.
    SessionlockMetrics,
    /// `sessionlock` with a Prometheus recorder and the event log on, every
    /// process of the run writing to one log (`--only observe`).
    SessionlockObserved,
}

impl Impl {
    /// The flag value and the figure's `impl`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Impl::Sessionlock => "sessionlock",
            Impl::Flock => "flock",
            Impl::SessionlockMetrics => "sessionlock-metrics",
            Impl::SessionlockObserved => "sessionlock-observed",
        }
    }
}

/// Padding of a transcript line, as in the anchors' S2 (96 bytes).
const PAD: usize = 96;

/// The transcript line of cycle `seq` of worker `w`, acquired at `t` ns,
/// split in two halves that are written with one `write(2)` each.
fn line(w: u32, seq: u32, t: u64, pad: &str) -> (String, String) {
    let line = format!("{{\"w\":{w},\"seq\":{seq},\"t\":{t},\"pad\":\"{pad}\"}}\n");
    let mid = line.len() / 2;
    (line[..mid].to_owned(), line[mid..].to_owned())
}

/// The raw `flock(2)` lock file of transcript `session`: `T.lock`.
fn flock_path(session: &Path) -> PathBuf {
    let mut p = session.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// The measured loop, whatever the lock: `cycles` times wait-start stamp,
/// `acquire(file)`, acquired stamp, two writes, release-called stamp,
/// `release`. Returns the stamps `[wait_start, acquired, release_called]`
/// per cycle.
fn cycles<G>(
    id: u32,
    count: u32,
    outs: &mut [File],
    mut acquire: impl FnMut(usize) -> Result<G>,
    mut release: impl FnMut(G) -> Result<()>,
) -> Result<Vec<[u64; 3]>> {
    let pad = "x".repeat(PAD);
    let mut stamps = Vec::with_capacity(count as usize);
    for seq in 0..count {
        let f = seq as usize % outs.len();
        let t0 = monotonic_ns();
        let g = acquire(f).with_context(|| format!("acquire, cycle {seq}"))?;
        let t1 = monotonic_ns();
        let (a, b) = line(id, seq, t1, &pad);
        // Plain write(2) calls, no fence: only the lock keeps them together.
        outs[f].write_all(a.as_bytes())?;
        outs[f].write_all(b.as_bytes())?;
        let t2 = monotonic_ns();
        release(g).with_context(|| format!("release, cycle {seq}"))?;
        stamps.push([t0, t1, t2]);
    }
    Ok(stamps)
}

/// Reads stdin up to a `go <mono_ns>` line: the instant to start at.
/// `None` at end of input.
fn wait_for_go() -> Result<Option<u64>> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Some(at) = line.trim().strip_prefix("go ") {
            return Ok(Some(at.parse().context("go <mono_ns>")?));
        }
    }
}

/// `sessionlock worker contend`: warms up (one acquire + release of every
/// file), reports `READY`, waits for `go <mono_ns>` and sleeps until that
/// instant (all processes start together), reports `START <ns>`, runs the
/// cycles, reports `DONE <count> <start_ns> <end_ns>`, then one
/// `OP <seq> <wait_start> <acquired> <release_called>` per cycle and `END`.
pub(crate) fn worker(imp: Impl, sessions: &[PathBuf], id: u32, count: u32) -> Result<()> {
    anyhow::ensure!(!sessions.is_empty(), "no sessions");
    let mut outs = sessions
        .iter()
        .map(|s| {
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(s)
                .with_context(|| format!("open {}", s.display()))
        })
        .collect::<Result<Vec<File>>>()?;
    let go = || -> Result<Option<u64>> {
        say("READY")?;
        let Some(at) = wait_for_go()? else {
            return Ok(None);
        };
        // Start together: every process sleeps until the same instant.
        std::thread::sleep(Duration::from_nanos(at.saturating_sub(monotonic_ns())));
        let start = monotonic_ns();
        say(&format!("START {start}"))?;
        Ok(Some(start))
    };
    let (start, stamps) = match imp {
        Impl::Sessionlock | Impl::SessionlockMetrics | Impl::SessionlockObserved => {
            if imp != Impl::Sessionlock {
                let recorder =
                    metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
                metrics::set_global_recorder(recorder)
                    .map_err(|e| anyhow::anyhow!("install the metrics recorder: {e}"))?;
            }
            if imp == Impl::SessionlockObserved {
                sessionlock::observe::EventLog::install(event_log(&sessions[0]))?;
            }
            let locks = SessionLock::new();
            let opts = LockOptions::from_env()
                .timeout(Some(Duration::from_secs(60)))
                .lane("contention");
            for s in sessions {
                locks.acquire_with(s, &opts)?.release()?;
            }
            let Some(start) = go()? else { return Ok(()) };
            let stamps = cycles(
                id,
                count,
                &mut outs,
                |f| Ok(locks.acquire_with(&sessions[f], &opts)?),
                |g| Ok(g.release()?),
            )?;
            (start, stamps)
        }
        Impl::Flock => {
            let fds = sessions
                .iter()
                .map(|s| {
                    let p = flock_path(s);
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&p)
                        .with_context(|| format!("open {}", p.display()))
                })
                .collect::<Result<Vec<File>>>()?;
            for fd in &fds {
                flock(fd, FlockOperation::LockExclusive)?;
                flock(fd, FlockOperation::Unlock)?;
            }
            let Some(start) = go()? else { return Ok(()) };
            let stamps = cycles(
                id,
                count,
                &mut outs,
                |f| {
                    flock(&fds[f], FlockOperation::LockExclusive)?;
                    Ok(f)
                },
                |f| Ok(flock(&fds[f], FlockOperation::Unlock)?),
            )?;
            (start, stamps)
        }
    };
    let end = monotonic_ns();
    let mut report = format!("DONE {count} {start} {end}\n");
    for (seq, [t0, t1, t2]) in stamps.iter().enumerate() {
        report.push_str(&format!("OP {seq} {t0} {t1} {t2}\n"));
    }
    report.push_str("END");
    say(&report)
}

/// One critical section, as its worker stamped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Op {
    w: usize,
    seq: u32,
    wait_start: u64,
    acquired: u64,
    release_called: u64,
}

/// What one worker reported.
#[derive(Debug)]
struct Run {
    start: u64,
    end: u64,
    ops: Vec<Op>,
}

/// The figures of one (impl, P, files) configuration.
#[derive(Debug, Serialize)]
pub(super) struct Contention {
    pub(super) name: String,
    #[serde(rename = "impl")]
    pub(super) imp: &'static str,
    pub(super) procs: usize,
    pub(super) files: usize,
    pub(super) cycles: u32,
    pub(super) ops: u64,
    pub(super) seconds: f64,
    pub(super) ops_per_sec: f64,
    /// sessionlock's `ops_per_sec` ÷ raw `flock(2)`'s in the same
    /// configuration of the same run; `None` for the floor itself.
    pub(super) floor_ratio: Option<f64>,
    pub(super) wait_p50_ms: f64,
    pub(super) wait_p99_ms: f64,
    pub(super) wait_max_ms: f64,
    /// Fewest acquisitions of one process in the middle 80% of the run.
    pub(super) share_min: u64,
    /// Most acquisitions of one process in the middle 80% of the run.
    pub(super) share_max: u64,
    /// `share_min / share_max` (null if nobody acquired in the window).
    pub(super) share: f64,
    pub(super) verified: bool,
    /// Why verification failed, if it did.
    pub(super) failure: Option<String>,
}

/// The event log an observed configuration's processes share: beside its
/// first session.
pub(super) fn event_log(session: &Path) -> PathBuf {
    session.with_extension("events.jsonl")
}

/// The session files of one configuration.
fn sessions(dir: &Path, imp: Impl, procs: usize, files: usize) -> Vec<PathBuf> {
    (0..files)
        .map(|i| {
            dir.join(format!(
                "contention-{}-p{procs}-f{files}-{i}.jsonl",
                imp.name()
            ))
        })
        .collect()
}

/// Runs one configuration with real processes and returns its figures.
pub(super) fn measure(
    dir: &Path,
    imp: Impl,
    procs: usize,
    files: usize,
    count: u32,
) -> Result<Contention> {
    let sessions = sessions(dir, imp, procs, files);
    let mut workers = Vec::with_capacity(procs);
    for i in 0..procs {
        let mut args = vec![
            "contend".to_owned(),
            "--impl".to_owned(),
            imp.name().to_owned(),
            "--id".to_owned(),
            i.to_string(),
            "--cycles".to_owned(),
            count.to_string(),
        ];
        for s in &sessions {
            args.push("--session".to_owned());
            args.push(s.display().to_string());
        }
        let mut cmd = worker::command(&args)?;
        // Only the observed configurations log events, to their own file.
        cmd.env_remove(sessionlock::observe::ENV_EVENT_LOG);
        workers.push(worker::start(format!("{}-{i}", imp.name()), cmd)?);
    }
    for w in &workers {
        w.expect("READY", Duration::from_secs(60))?;
    }
    // All start at one instant, far enough ahead for every `go` to arrive.
    let at = monotonic_ns() + (20 + procs as u64) * 1_000_000;
    for w in &mut workers {
        w.say(&format!("go {at}"))?;
    }
    let mut runs = Vec::with_capacity(procs);
    for (i, w) in workers.iter().enumerate() {
        let done = w.expect("DONE", Duration::from_secs(600))?;
        let n: u32 = field(&done, 0)?;
        if n != count {
            bail!("{} did {n} cycles, not {count}", w.name());
        }
        let mut ops = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let op = w.expect("OP", Duration::from_secs(30))?;
            ops.push(Op {
                w: i,
                seq: field(&op, 0)?,
                wait_start: field(&op, 1)?,
                acquired: field(&op, 2)?,
                release_called: field(&op, 3)?,
            });
        }
        w.expect("END", Duration::from_secs(30))?;
        runs.push(Run {
            start: field(&done, 1)?,
            end: field(&done, 2)?,
            ops,
        });
    }
    for w in workers {
        let name = w.name().to_owned();
        let st = w.finish(Duration::from_secs(30))?;
        if !st.success() {
            bail!("{name} exited with {st}");
        }
    }
    let failure = verify_transcripts(&sessions, procs, count)
        .and_then(|()| verify_ops(&runs, files, count))
        .err();
    Ok(figures(imp, files, count, &runs, failure))
}

/// The figures of a configuration's `runs` (one per process).
fn figures(
    imp: Impl,
    files: usize,
    count: u32,
    runs: &[Run],
    failure: Option<String>,
) -> Contention {
    let procs = runs.len();
    let first = runs.iter().map(|r| r.start).min().unwrap_or(0);
    let last = runs.iter().map(|r| r.end).max().unwrap_or(0);
    let ops: u64 = runs.iter().map(|r| r.ops.len() as u64).sum();
    let seconds = last.saturating_sub(first) as f64 / 1e9;
    let mut waits: Vec<f64> = runs
        .iter()
        .flat_map(|r| &r.ops)
        .map(|o| o.acquired.saturating_sub(o.wait_start) as f64 / 1e6)
        .collect();
    waits.sort_by(f64::total_cmp);
    let (share_min, share_max) = shares(runs, first, last);
    Contention {
        name: format!(
            "contention: {}, {procs} processes, {files} file{}",
            imp.name(),
            if files == 1 { "" } else { "s" }
        ),
        imp: imp.name(),
        procs,
        files,
        cycles: count,
        ops,
        seconds,
        ops_per_sec: ops as f64 / seconds,
        floor_ratio: None,
        wait_p50_ms: percentile(&waits, 0.5),
        wait_p99_ms: percentile(&waits, 0.99),
        wait_max_ms: waits.last().copied().unwrap_or(f64::NAN),
        share_min,
        share_max,
        share: if share_max == 0 {
            f64::NAN
        } else {
            share_min as f64 / share_max as f64
        },
        verified: failure.is_none(),
        failure,
    }
}

/// Per-process acquisitions (acquired stamps) in the middle 80% of the
/// window `[first, last]`: (fewest, most) over the processes.
fn shares(runs: &[Run], first: u64, last: u64) -> (u64, u64) {
    let span = last.saturating_sub(first);
    let lo = first + span / 10;
    let hi = last - span / 10;
    let counts = runs.iter().map(|r| {
        r.ops
            .iter()
            .filter(|o| (lo..hi).contains(&o.acquired))
            .count() as u64
    });
    counts.fold((u64::MAX, 0), |(mn, mx), c| (mn.min(c), mx.max(c)))
}

/// Checks that the transcripts hold exactly `procs × count` lines, each
/// parseable JSON naming a known (w, seq) once, in the file `seq % files`.
fn verify_transcripts(
    sessions: &[PathBuf],
    procs: usize,
    count: u32,
) -> std::result::Result<(), String> {
    let mut seen = HashSet::new();
    for (i, s) in sessions.iter().enumerate() {
        let text = std::fs::read_to_string(s).map_err(|e| format!("read {}: {e}", s.display()))?;
        verify_lines(&text, i, sessions.len(), procs, count, &mut seen)?;
    }
    let expected = procs as u64 * u64::from(count);
    if seen.len() as u64 != expected {
        return Err(format!("{} lines, expected {expected}", seen.len()));
    }
    Ok(())
}

/// Checks the lines of file `file` of `files` (see [`verify_transcripts`]),
/// adding each (w, seq) to `seen`.
fn verify_lines(
    text: &str,
    file: usize,
    files: usize,
    procs: usize,
    count: u32,
    seen: &mut HashSet<(u64, u64)>,
) -> std::result::Result<(), String> {
    let Some(body) = text.strip_suffix('\n').or(text.is_empty().then_some("")) else {
        return Err(format!("file {file}: torn last line"));
    };
    for (n, l) in body.split('\n').enumerate().filter(|_| !body.is_empty()) {
        let bad = |why: &str| {
            let shown: String = l.chars().take(60).collect();
            format!("file {file} line {}: {why}: {shown:?}…", n + 1)
        };
        let v: serde_json::Value =
            serde_json::from_str(l).map_err(|_| bad("not one JSON object (interleaved?)"))?;
        let (Some(w), Some(seq)) = (v["w"].as_u64(), v["seq"].as_u64()) else {
            return Err(bad("no w or seq"));
        };
        if w >= procs as u64 || seq >= u64::from(count) || seq % files as u64 != file as u64 {
            return Err(bad("unexpected (w, seq)"));
        }
        if !seen.insert((w, seq)) {
            return Err(bad("duplicate (w, seq)"));
        }
    }
    Ok(())
}

/// Checks that every process reported cycles `0..count` in order and that
/// no two critical sections `[acquired, release_called]` of one file
/// overlap (each file has its own lock; with one file, that is across all
/// processes).
fn verify_ops(runs: &[Run], files: usize, count: u32) -> std::result::Result<(), String> {
    let mut by_file: Vec<Vec<Op>> = vec![Vec::new(); files];
    for (w, r) in runs.iter().enumerate() {
        if r.ops.len() != count as usize || r.ops.iter().zip(0..).any(|(o, s)| o.seq != s) {
            return Err(format!("process {w} did not report cycles 0..{count}"));
        }
        for o in &r.ops {
            if !(o.wait_start <= o.acquired && o.acquired <= o.release_called) {
                return Err(format!("process {w} cycle {}: stamps out of order", o.seq));
            }
            by_file[o.seq as usize % files].push(*o);
        }
    }
    for (f, ops) in by_file.iter_mut().enumerate() {
        ops.sort_by_key(|o| o.acquired);
        let mut prev: Option<&Op> = None;
        for o in ops.iter() {
            if let Some(p) = prev {
                if o.acquired < p.release_called {
                    return Err(format!(
                        "file {f}: overlapping critical sections: process {} cycle {} acquired {:.3} ms before process {} cycle {} called release",
                        o.w,
                        o.seq,
                        (p.release_called - o.acquired) as f64 / 1e6,
                        p.w,
                        p.seq
                    ));
                }
            }
            if prev.is_none_or(|p| o.release_called > p.release_called) {
                prev = Some(o);
            }
        }
    }
    Ok(())
}

/// All configurations: for each file count and process count, sessionlock
/// and then raw `flock(2)`, with each sessionlock row's ratio to the floor.
pub(super) fn measure_all(
    dir: &Path,
    procs: &[usize],
    files: &[usize],
    count: u32,
) -> Result<Vec<Contention>> {
    let mut out = Vec::new();
    for &f in files {
        for &p in procs {
            progress(&format!(
                "contention: {p} processes × {count} cycles on {f} file(s), sessionlock and raw flock(2)"
            ));
            let mut s = measure(dir, Impl::Sessionlock, p, f, count)?;
            let floor = measure(dir, Impl::Flock, p, f, count)?;
            s.floor_ratio = Some(s.ops_per_sec / floor.ops_per_sec);
            for c in [&s, &floor] {
                if let Some(why) = &c.failure {
                    eprintln!("bench: FAILED: {}: {why}", c.name);
                }
            }
            out.push(s);
            out.push(floor);
        }
    }
    Ok(out)
}

/// The text table and its legend.
pub(super) fn print(rows: &[Contention]) {
    println!("contention: P processes × K cycles of acquire → append one line with two write(2) → release");
    println!(
        "{:<11} {:>5} {:>5} {:>6} {:>8} {:>9} {:>6} {:>9} {:>9} {:>9} {:>14}  check",
        "impl",
        "procs",
        "files",
        "ops",
        "seconds",
        "ops/s",
        "×floor",
        "wait p50",
        "p99",
        "max",
        "share min/max"
    );
    for c in rows {
        let ratio = c
            .floor_ratio
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        let share = format!("{:.2} ({}/{})", c.share, c.share_min, c.share_max);
        let check = match &c.failure {
            None => "verified".to_owned(),
            Some(why) => format!("FAILED: {why}"),
        };
        println!(
            "{:<11} {:>5} {:>5} {:>6} {:>8.3} {:>9.0} {:>6} {:>9} {:>9} {:>9} {:>14}  {check}",
            c.imp,
            c.procs,
            c.files,
            c.ops,
            c.seconds,
            c.ops_per_sec,
            ratio,
            super::fmt_ms(c.wait_p50_ms),
            super::fmt_ms(c.wait_p99_ms),
            super::fmt_ms(c.wait_max_ms),
            share,
        );
    }
    for l in [
        "impl: sessionlock = file backend, blocking acquire_with (timeout 60 s), one lane per process;",
        "  flock = raw blocking flock(2) LOCK_EX on T.lock (fd opened once per process), the floor, same run.",
        "files: with N files, cycle seq of every process uses file seq % N (each file has its own lock).",
        "ops/s: P·K ÷ (last process's end − first process's start), CLOCK_MONOTONIC stamped by the processes;",
        "  ×floor = sessionlock's ops/s ÷ flock's in the same row pair.",
        "wait: acquire called → acquire returned, over all P·K cycles (p50, p99, max).",
        "share: the run's window is [first start, last end]; each process's acquisitions whose 'acquired'",
        "  stamp falls in the middle 80% of it are counted; share = fewest ÷ most over the P processes",
        "  (1.00 = equal turns while all compete; a starved process pulls it toward 0). The ramp-up and the",
        "  tail (where finished processes no longer compete) are left out. Caveat: a flock run lasts a few",
        "  ms, about one scheduler time slice, so with more processes than CPUs its share mostly shows which",
        "  processes were on a CPU (a running process re-takes a free flock at once), not the lock's order.",
        "check: every file holds exactly its lines, each one JSON object (a broken lock would interleave the",
        "  two write(2) halves), each (w, seq) once in file seq % N, P·K in all; and no two critical sections",
        "  [acquired, release called] of one file overlap. A failed check makes the bench exit 1.",
    ] {
        println!("{l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(w: usize, seq: u32, acquired: u64, release_called: u64) -> Op {
        Op {
            w,
            seq,
            wait_start: acquired.saturating_sub(5),
            acquired,
            release_called,
        }
    }

    fn run(ops: Vec<Op>) -> Run {
        Run {
            start: ops.first().map_or(0, |o| o.wait_start),
            end: ops.last().map_or(0, |o| o.release_called),
            ops,
        }
    }

    #[test]
    fn the_two_halves_make_one_json_line() {
        let (a, b) = line(3, 7, 42, "xx");
        let whole = format!("{a}{b}");
        assert!(whole.ends_with('\n') && !a.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(whole.trim_end()).unwrap();
        assert_eq!((v["w"].as_u64(), v["seq"].as_u64()), (Some(3), Some(7)));
    }

    #[test]
    fn disjoint_sections_pass_and_overlapping_ones_fail() {
        let ok = [
            run(vec![op(0, 0, 10, 20), op(0, 1, 40, 50)]),
            run(vec![op(1, 0, 20, 30), op(1, 1, 30, 35)]),
        ];
        assert_eq!(verify_ops(&ok, 1, 2), Ok(()));
        let overlap = [
            run(vec![op(0, 0, 10, 20), op(0, 1, 40, 50)]),
            run(vec![op(1, 0, 19, 30), op(1, 1, 60, 70)]),
        ];
        let err = verify_ops(&overlap, 1, 2).unwrap_err();
        assert!(err.contains("overlapping"), "{err}");
        // A long section overlapping a later one, not just its neighbour.
        let nested = [
            run(vec![op(0, 0, 10, 100), op(0, 1, 200, 210)]),
            run(vec![op(1, 0, 20, 30), op(1, 1, 40, 50)]),
        ];
        assert!(verify_ops(&nested, 1, 2).is_err());
        // With two files, sections of different files may overlap.
        let two_files = [
            run(vec![op(0, 0, 10, 20), op(0, 1, 40, 50)]),
            run(vec![op(1, 0, 1, 5), op(1, 1, 15, 19)]),
        ];
        assert_eq!(verify_ops(&two_files, 2, 2), Ok(()));
        assert!(verify_ops(&two_files, 1, 2).is_err());
        // A missing cycle.
        assert!(verify_ops(&[run(vec![op(0, 0, 10, 20)])], 1, 2).is_err());
    }

    #[test]
    fn interleaved_duplicate_misplaced_and_torn_lines_fail() {
        let pad = "x";
        let whole = |w, seq| {
            let (a, b) = line(w, seq, 1, pad);
            a + &b
        };
        let check = |text: &str, files| {
            let mut seen = HashSet::new();
            verify_lines(text, 0, files, 2, 2, &mut seen).map(|()| seen.len())
        };
        let good = whole(0, 0) + &whole(1, 0) + &whole(1, 1);
        assert_eq!(check(&good, 1), Ok(3));
        assert_eq!(check("", 1), Ok(0));
        let (a0, b0) = line(0, 1, 1, pad);
        let (a1, b1) = line(1, 1, 1, pad);
        let interleaved = format!("{a0}{a1}{b0}{b1}");
        assert!(check(&interleaved, 1).unwrap_err().contains("interleaved"));
        assert!(check(&(whole(0, 0) + &whole(0, 0)), 1)
            .unwrap_err()
            .contains("duplicate"));
        // seq 1 belongs in file 1 of 2, not file 0.
        assert!(check(&whole(0, 1), 2).is_err());
        assert!(check(&whole(5, 0), 1).is_err());
        assert!(check(&whole(0, 0)[..10], 1).unwrap_err().contains("torn"));
    }

    #[test]
    fn share_counts_the_middle_eighty_percent() {
        // Window 0..1000, middle 100..900: process 0 acquires 4 times there,
        // process 1 twice (its other acquisitions are at the edges).
        let p0 = run(vec![
            op(0, 0, 200, 201),
            op(0, 1, 300, 301),
            op(0, 2, 400, 401),
            op(0, 3, 500, 501),
        ]);
        let p1 = run(vec![
            op(1, 0, 50, 51),
            op(1, 1, 600, 601),
            op(1, 2, 700, 701),
            op(1, 3, 950, 951),
        ]);
        assert_eq!(shares(&[p0, p1], 0, 1000), (2, 4));
    }
}
