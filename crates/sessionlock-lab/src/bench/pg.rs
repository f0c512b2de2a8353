//! The bench's PostgreSQL figures, measured in the same run as the file
//! figures: the lock figures, fenced append throughput, and the server's own
//! floor (one durable commit, one `SELECT 1` round trip) that the targets of
//! the PostgreSQL backend are stated against.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::process::Signal;
use serde_json::Value;
use sessionlock::{LockOptions, SessionLock, StoreBackend, TranscriptStore};
use sessionlock_postgres::PgBackend;

use super::{
    check_entry, figure, handoff_trials, progress, run_writers, share, Args, Figure, Throughput,
};
use crate::worker::{self, field, ms_between};

/// Target of the SIGKILL → held figure, in milliseconds.
const KILL_TARGET_MS: f64 = 50.0;
/// Slack past the lease of the lease end → held figure, in milliseconds.
const LEASE_SLACK_MS: f64 = 50.0;
/// Target of 8 writers appending turns of 10 entries, entries per second.
const TURNS_TARGET_PER_SEC: f64 = 2500.0;

/// Everything the PostgreSQL part of the bench measured.
pub(super) struct PgFigures {
    /// The server's floor: durable commit, `SELECT 1`.
    pub floor: Vec<Figure>,
    /// Uncontended, hand-off, SIGKILL, lease end.
    pub lock: Vec<Figure>,
    /// Append throughput rows, with their target (if any) and whether met.
    pub throughput: Vec<(Throughput, Option<bool>)>,
}

/// `worker pg --url URL <role> ...`
fn pg_worker(name: &str, url: &str, role: &[String]) -> Result<worker::Worker> {
    let mut args = vec!["pg".to_owned(), "--url".to_owned(), url.to_owned()];
    args.extend_from_slice(role);
    worker::spawn(name, &args)
}

/// The URL as tokio-postgres takes it: without the backend's own
/// parameters (`?schema=`).
fn server_url(url: &str) -> &str {
    url.split_once('?').map_or(url, |(base, _)| base)
}

/// One durable commit (an `INSERT` in its own transaction, with
/// `synchronous_commit` on) and one `SELECT 1` round trip, `n` times each,
/// interleaved; milliseconds.
fn floor(url: &str, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start a tokio runtime")?;
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(server_url(url), tokio_postgres::NoTls)
            .await
            .context("connect to the server for its floor")?;
        let driver = tokio::spawn(conn);
        let table = format!("sessionlock_bench_floor_{}", std::process::id());
        client
            .batch_execute(&format!(
                "SET synchronous_commit = on; \
                 CREATE TABLE IF NOT EXISTS public.{table} (v bigint, t text)"
            ))
            .await
            .context("create the floor's scratch table")?;
        let insert = client
            .prepare(&format!(
                "INSERT INTO public.{table} (v, t) VALUES ($1, $2)"
            ))
            .await?;
        let select = client.prepare("SELECT 1").await?;
        let pad = "x".repeat(200);
        let (mut commit, mut select_ms) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let warmup = 20;
        for i in 0..warmup + n {
            let t = Instant::now();
            client.execute(&insert, &[&(i as i64), &pad]).await?;
            let c = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            client.query_one(&select, &[]).await?;
            let s = t.elapsed().as_secs_f64() * 1e3;
            if i >= warmup {
                commit.push(c);
                select_ms.push(s);
            }
        }
        client
            .batch_execute(&format!("DROP TABLE public.{table}"))
            .await
            .context("drop the floor's scratch table")?;
        drop(client);
        let _ = driver.await;
        Ok((commit, select_ms))
    })
}

fn uncontended(url: &str, key: &str, cycles: usize) -> Result<Vec<f64>> {
    let backend = PgBackend::connect(url)?;
    let locks = SessionLock::with_backend(backend, LockOptions::from_env());
    for _ in 0..20 {
        locks.acquire(key)?.release()?;
    }
    let mut ms = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        let t = Instant::now();
        locks.acquire(key)?.release()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ms)
}

/// As the file hand-off: two worker processes ping-pong one key; each trial
/// times the waiter's acquire returning after the holder's release returned.
fn handoffs(url: &str, key: &str, trials: usize) -> Result<Vec<f64>> {
    let role = ["cycle".to_owned(), "--key".to_owned(), key.to_owned()];
    let a = pg_worker("pg cycler-a", url, &role)?;
    let b = pg_worker("pg cycler-b", url, &role)?;
    handoff_trials(a, b, trials)
}

/// A holder is SIGKILLed while a waiter sleeps on the key: how long until
/// the waiter holds it.
fn kill_mid_hold(url: &str, key: &str) -> Result<f64> {
    let victim = pg_worker(
        "pg victim",
        url,
        &["hold".into(), "--key".into(), key.into()],
    )?;
    victim.expect("HELD", Duration::from_secs(30))?;
    let mut waiter = pg_worker(
        "pg waiter",
        url,
        &["wait".into(), "--key".into(), key.into()],
    )?;
    waiter.expect("WAITING", Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(100));
    let killed = sessionlock::monotonic_ns();
    victim.signal(Signal::KILL)?;
    let got = waiter.expect("ACQUIRED", Duration::from_secs(30))?;
    let delay = ms_between(killed, field(&got, 0)?);
    waiter.say("release")?;
    waiter.finish(Duration::from_secs(10))?;
    Ok(delay)
}

/// A holder with a `lease_ms` lease is SIGSTOPped as soon as it holds (its
/// connections stay up): how long after its lease ended until a waiter holds
/// the key. The lease end is taken as the holder's `HELD` stamp plus the
/// lease (the server's grant came a little earlier, so this errs short by at
/// most the reply's trip).
fn stop_past_lease(url: &str, key: &str, lease_ms: u64) -> Result<f64> {
    let holder = pg_worker(
        "pg stopped holder",
        url,
        &[
            "hold".into(),
            "--key".into(),
            key.into(),
            "--max-hold-ms".into(),
            lease_ms.to_string(),
        ],
    )?;
    let held = holder.expect("HELD", Duration::from_secs(30))?;
    holder.signal(Signal::STOP)?;
    let lease_end = field::<u64>(&held, 1)? + lease_ms * 1_000_000;
    let mut waiter = pg_worker(
        "pg waiter",
        url,
        &["wait".into(), "--key".into(), key.into()],
    )?;
    let got = waiter.expect("ACQUIRED", Duration::from_secs(30))?;
    let delay = ms_between(lease_end, field(&got, 0)?);
    holder.signal(Signal::KILL)?;
    waiter.say("release")?;
    waiter.finish(Duration::from_secs(10))?;
    Ok(delay)
}

/// `writers` processes append `total` entries to one key's transcript, in
/// turns of `batch` entries per acquisition (one `store_append` of the whole
/// batch, or one per entry with `separate`); then the transcript is checked
/// to hold each writer's entries exactly once.
fn append_throughput(
    url: &str,
    key: &str,
    writers: usize,
    total: u32,
    batch: u32,
    separate: bool,
) -> Result<Throughput> {
    let counts: Vec<u32> = (0..writers)
        .map(|i| share(total / batch, writers, i) * batch)
        .collect();
    let mut workers = Vec::with_capacity(writers);
    for (i, &count) in counts.iter().enumerate() {
        let mut role = vec![
            "appendbench".to_owned(),
            "--key".to_owned(),
            key.to_owned(),
            "--turns".to_owned(),
            (count / batch).to_string(),
            "--batch".to_owned(),
            batch.to_string(),
            "--id".to_owned(),
            i.to_string(),
        ];
        if separate {
            role.push("--separate".to_owned());
        }
        workers.push(pg_worker(&format!("pg appender-{i}"), url, &role)?);
    }
    let (entries, seconds) = run_writers(workers)?;
    let how = match (batch, separate) {
        (1, _) => "1 entry per acquisition".to_owned(),
        (b, false) => format!("turns of {b}, one batch"),
        (b, true) => format!("turns of {b}, {b} appends"),
    };
    Ok(Throughput {
        name: format!(
            "pg fenced append, {writers} writer{}, {how}",
            if writers == 1 { "" } else { "s" }
        ),
        writers,
        durability: "commit",
        entries,
        seconds,
        entries_per_sec: entries as f64 / seconds,
        failure: verify(url, key, &counts).err(),
    })
}

/// Checks that `key`'s transcript holds exactly `counts[w]` entries of each
/// writer `w` (sequence numbers `0..counts[w]`, each once) and nothing else.
fn verify(url: &str, key: &str, counts: &[u32]) -> std::result::Result<(), String> {
    let read = (|| -> Result<Vec<Value>> {
        let backend = PgBackend::connect(url)?;
        let k = backend.key_of(key)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let store = rt.block_on(backend.open_store(&k))?;
        Ok(rt.block_on(store.read())?.entries)
    })()
    .map_err(|e| format!("read the transcript: {e:#}"))?;
    let expected: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let mut seen = HashSet::new();
    for entry in &read {
        let (Some(w), Some(seq)) = (entry["w"].as_u64(), entry["seq"].as_u64()) else {
            return Err("foreign entry".to_owned());
        };
        check_entry(counts, &mut seen, w, seq)?;
    }
    if read.len() as u64 != expected {
        return Err(format!("{} entries, expected {expected}", read.len()));
    }
    Ok(())
}

/// Measures the PostgreSQL figures of the selected groups.
pub(super) fn measure(args: &Args, url: &str, lock: bool, transcript: bool) -> Result<PgFigures> {
    let run = format!(
        "bench-{}-{}",
        std::process::id(),
        sessionlock::monotonic_ns()
    );
    progress(&format!(
        "postgres: server floor, durable commit and SELECT 1 × {}",
        args.pg_floor
    ));
    let (commit, select) = floor(url, args.pg_floor).context("the server's floor")?;
    let mut commit = figure("pg floor: durable commit (INSERT)", commit, "", 0.0);
    commit.met = None;
    let mut select = figure("pg floor: SELECT 1 round trip", select, "", 0.0);
    select.met = None;
    let commit_median = commit.median_ms;
    let mut out = PgFigures {
        floor: vec![commit, select],
        lock: Vec::new(),
        throughput: Vec::new(),
    };
    if lock {
        progress(&format!(
            "postgres: uncontended acquire+release × {}",
            args.pg_cycles
        ));
        let un = uncontended(url, &format!("{run}/uncontended"), args.pg_cycles)?;
        progress(&format!(
            "postgres: cross-process hand-off × {}",
            args.pg_handoffs
        ));
        let ho = handoffs(url, &format!("{run}/handoff"), args.pg_handoffs)?;
        progress(&format!(
            "postgres: SIGKILL of the holder × {}",
            args.pg_kills
        ));
        let kills = (0..args.pg_kills)
            .map(|i| kill_mid_hold(url, &format!("{run}/kill-{i}")))
            .collect::<Result<Vec<_>>>()
            .context("postgres kill trials")?;
        progress(&format!(
            "postgres: SIGSTOPped holder past a {} ms lease × {}",
            args.pg_lease_ms, args.pg_stops
        ));
        let stops = (0..args.pg_stops)
            .map(|i| stop_past_lease(url, &format!("{run}/stop-{i}"), args.pg_lease_ms))
            .collect::<Result<Vec<_>>>()
            .context("postgres lease-end trials")?;
        let mut un = figure("pg uncontended acquire+release", un, "", 0.0);
        un.met = None;
        let handoff_target = commit_median + 1.0;
        let mut ho = figure(
            "pg hand-off: release → waiter holds",
            ho,
            format!("median ≤ durable commit + 1 ms = {handoff_target:.2} ms"),
            handoff_target,
        );
        ho.met = Some(ho.median_ms <= handoff_target);
        let mut kills = figure(
            "pg SIGKILL of holder → waiter holds",
            kills,
            format!("median ≤ {KILL_TARGET_MS} ms"),
            KILL_TARGET_MS,
        );
        kills.met = Some(kills.median_ms <= KILL_TARGET_MS);
        let mut stops = figure(
            format!("pg lease end ({} ms) → waiter holds", args.pg_lease_ms),
            stops,
            format!("median ≤ lease + {LEASE_SLACK_MS} ms"),
            LEASE_SLACK_MS,
        );
        stops.met = Some(stops.median_ms <= LEASE_SLACK_MS);
        out.lock = vec![un, ho, kills, stops];
    }
    if transcript {
        let total = args.pg_append_entries;
        for &writers in &[1usize, 8] {
            for (batch, separate) in [(1, false), (10, false), (10, true)] {
                progress(&format!(
                    "postgres: fenced append, {writers} writer process(es), {batch} per acquisition{}: {total} entries",
                    if separate { ", separate appends" } else { "" }
                ));
                let key = format!("{run}/append-{writers}-{batch}-{separate}");
                let t = append_throughput(url, &key, writers, total, batch, separate)?;
                if let Some(why) = &t.failure {
                    eprintln!("bench: FAILED: {}: transcript check: {why}", t.name);
                }
                let met = (writers == 8 && batch == 10)
                    .then_some(t.entries_per_sec >= TURNS_TARGET_PER_SEC);
                out.throughput.push((t, met));
            }
        }
    }
    Ok(out)
}

/// Prints the PostgreSQL figures after the file figures.
pub(super) fn print(target: &str, figs: &PgFigures) {
    println!("PostgreSQL ({target}), measured in the same run:");
    super::print_figures(&figs.floor);
    if !figs.lock.is_empty() {
        println!();
        super::print_figures(&figs.lock);
    }
    if !figs.throughput.is_empty() {
        println!();
        println!("pg fenced append throughput: per acquisition, acquire + store_append of ~200-byte entries + release; one process per writer; each append one server transaction (synchronous_commit as the server's)");
        println!(
            "{:<52} {:>8} {:>9} {:>12}  transcript",
            "configuration", "entries", "seconds", "entries/s"
        );
        for (t, met) in &figs.throughput {
            let check = match &t.failure {
                None => "verified".to_owned(),
                Some(why) => format!("FAILED: {why}"),
            };
            let target = match met {
                Some(true) => format!("  target ≥ {TURNS_TARGET_PER_SEC} entries/s (met)"),
                Some(false) => format!("  target ≥ {TURNS_TARGET_PER_SEC} entries/s (MISSED)"),
                None => String::new(),
            };
            println!(
                "{:<52} {:>8} {:>9.3} {:>12.0}  {check}{target}",
                t.name, t.entries, t.seconds, t.entries_per_sec
            );
        }
    }
}
