//! `sessionlock worker pg --url URL <role>`: the bench's worker roles on a
//! PostgreSQL backend, speaking the same line protocol as the file roles of
//! [`crate::worker`] (`HELD <epoch> <mono_ns>`, `ACQUIRED <mono_ns>`, ...).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use sessionlock::backend::StoreBackend;
use sessionlock::store::{Durability, RawEntries};
use sessionlock::{monotonic_ns, LockOptions, SessionLock};
use sessionlock_postgres::PgBackend;

use crate::worker::{bench_entry, bench_pad, cycle, say, wait_for};

#[derive(clap::Args)]
pub struct PgArgs {
    /// The server (`postgres://...`).
    #[arg(long)]
    url: String,
    #[command(subcommand)]
    role: PgRole,
}

#[derive(clap::Subcommand)]
enum PgRole {
    /// Acquire, report `HELD <epoch> <mono_ns>`, hold until told to
    /// `release` (or killed, or stopped).
    Hold {
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 300_000)]
        max_hold_ms: u64,
    },
    /// Announce `WAITING`, acquire, report `ACQUIRED <mono_ns> <epoch>`, then
    /// obey `release`.
    Wait {
        #[arg(long)]
        key: String,
    },
    /// Repeatedly acquire on `go`, report, release on `release`.
    Cycle {
        #[arg(long)]
        key: String,
    },
    /// Fenced append throughput: `turns` times acquire, append `batch`
    /// entries (one `store_append` of the whole batch, or with `--separate`
    /// one `store_append` per entry), release. Protocol as the file
    /// `appendbench` role: `READY`, `go`, `START <mono_ns>`,
    /// `DONE <entries> <end_mono_ns> <elapsed_ns>`.
    Appendbench {
        #[arg(long)]
        key: String,
        #[arg(long)]
        turns: u32,
        #[arg(long, default_value_t = 1)]
        batch: u32,
        #[arg(long)]
        separate: bool,
        #[arg(long, default_value_t = 0)]
        id: u32,
    },
}

/// Runs one PostgreSQL worker role.
pub fn run(args: PgArgs) -> Result<ExitCode> {
    let backend = PgBackend::connect(&args.url)?;
    let opts = LockOptions::from_env().timeout(Some(Duration::from_secs(60)));
    let locks = SessionLock::with_backend(backend, opts.clone());
    match args.role {
        PgRole::Hold { key, max_hold_ms } => {
            let g = locks.acquire_with(
                key.as_str(),
                &opts
                    .max_hold(Duration::from_millis(max_hold_ms))
                    .lane("hold"),
            )?;
            say(&format!("HELD {} {}", g.epoch(), monotonic_ns()))?;
            wait_for("release")?;
            g.release()?;
            say(&format!("RELEASED {}", monotonic_ns()))?;
        }
        PgRole::Wait { key } => {
            // Warm up the server connections outside the measured part.
            locks.backend().key_of(&key)?;
            say(&format!("WAITING {}", monotonic_ns()))?;
            let g = locks.acquire_with(key.as_str(), &opts.lane("waiter"))?;
            say(&format!("ACQUIRED {} {}", monotonic_ns(), g.epoch()))?;
            wait_for("release")?;
            g.release()?;
        }
        PgRole::Cycle { key } => cycle(&locks, key.as_str(), &opts)?,
        PgRole::Appendbench {
            key,
            turns,
            batch,
            separate,
            id,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("start a tokio runtime")?;
            let pg_key = locks.backend().key_of(&key)?;
            let mut store = rt.block_on(locks.backend().open_store(&pg_key))?;
            let opts = opts.lane("appendbench");
            let pad = bench_pad();
            locks.acquire_with(key.as_str(), &opts)?.release()?;
            say("READY")?;
            if !wait_for("go")? {
                return Ok(ExitCode::SUCCESS);
            }
            let start = monotonic_ns();
            say(&format!("START {start}"))?;
            let mut seq = 0u32;
            for _ in 0..turns {
                let mut entries: Vec<RawEntries> = Vec::new();
                let mut one = RawEntries::new();
                for _ in 0..batch {
                    let json = bench_entry(id, seq, &pad).to_string();
                    seq += 1;
                    if separate {
                        let mut e = RawEntries::new();
                        e.push(json.as_bytes())?;
                        entries.push(e);
                    } else {
                        one.push(json.as_bytes())?;
                    }
                }
                if !separate {
                    entries.push(one);
                }
                let g = locks.acquire_with(key.as_str(), &opts)?;
                for e in &entries {
                    rt.block_on(g.store_append(&mut store, e, Durability::Data))
                        .with_context(|| format!("append under writer {id}'s turn"))?;
                }
                g.release()?;
            }
            let end = monotonic_ns();
            say(&format!("DONE {seq} {end} {}", end.saturating_sub(start)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
