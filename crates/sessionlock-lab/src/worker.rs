//! `sessionlock worker`: the child processes of `demo` and `bench`.
//!
//! Each role speaks a line protocol on stdout (`HELD <epoch> <mono_ns>`,
//! `ACQUIRED <mono_ns>`, ...) so the parent can time and verify it, and reads
//! commands (`release`) on stdin where it needs them. Times are
//! `CLOCK_MONOTONIC` nanoseconds, comparable across processes. The parent
//! side (`spawn`, `start`) runs them through the [`harness`].

use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use sessionlock::transcript::{Durability, Transcript};
use sessionlock::{monotonic_ns, Error, LockBackend, LockOptions, SessionLock};

use crate::harness::{self, Child};

/// A running worker, seen from its parent.
pub(crate) type Worker = Child;

/// Starts `sessionlock worker <args>`: this binary re-executed.
pub(crate) fn spawn(name: impl Into<String>, args: &[String]) -> Result<Worker> {
    start(name, command(args)?)
}

/// The command [`spawn`] starts: this binary's `worker` with `args`.
pub(crate) fn command(args: &[String]) -> Result<std::process::Command> {
    let exe = std::env::current_exe().context("locate the sessionlock binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("worker").args(args);
    Ok(cmd)
}

/// Starts `cmd` (which runs a worker somewhere below it, e.g. under
/// `sessionlock exec` or `flock(1)`) with the workers' protocol pipes.
pub(crate) fn start(name: impl Into<String>, mut cmd: std::process::Command) -> Result<Worker> {
    // Workers' own warnings (an expected revocation, say) would interleave
    // with the parent's report; the parent reports them.
    cmd.env(
        "SESSIONLOCK_LOG",
        std::env::var("SESSIONLOCK_LOG").unwrap_or_else(|_| "error".into()),
    );
    Ok(harness::Child::start(name, cmd)?)
}

/// Milliseconds between two `CLOCK_MONOTONIC` nanosecond stamps.
pub(crate) fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}

/// Parses a field of a protocol line.
pub(crate) fn field<T: std::str::FromStr>(fields: &[String], i: usize) -> Result<T> {
    fields
        .get(i)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| anyhow!("malformed worker line: {fields:?}"))
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(clap::Subcommand)]
enum Role {
    /// Append `count` entries, each under the lock and fenced, acknowledging
    /// each in `ack` after it landed.
    Append {
        #[arg(long)]
        sessions: Vec<PathBuf>,
        #[arg(long)]
        ack: PathBuf,
        #[arg(long)]
        id: u32,
        #[arg(long)]
        count: u32,
    },
    /// Acquire, report, then hold until told to `release` (or killed).
    Hold {
        #[arg(long)]
        session: PathBuf,
        #[arg(long, default_value_t = 300_000)]
        max_hold_ms: u64,
    },
    /// Acquire with a short lease, then spin on the CPU well past it (a wedged
    /// lane), then try one fenced write and report whether it landed.
    Wedge {
        #[arg(long)]
        session: PathBuf,
        #[arg(long)]
        max_hold_ms: u64,
        #[arg(long)]
        spin_ms: u64,
    },
    /// Announce `WAITING`, acquire, report `ACQUIRED`, then obey `release`
    /// (or release at once with `--release`).
    Wait {
        #[arg(long)]
        session: PathBuf,
        #[arg(long)]
        release: bool,
    },
    /// Bench: repeatedly acquire on `go`, report, release on `release`.
    Cycle {
        #[arg(long)]
        session: PathBuf,
    },
    /// Bench: fenced append throughput. Opens the transcript once, takes and
    /// releases the lock once to warm up, reports `READY`, waits for `go`, reports `START <mono_ns>`, then `count`
    /// times acquires the lock, appends one entry of about 200 bytes
    /// ([`bench_entry`]) through `Transcript::append` and releases; finally
    /// reports `DONE <count> <end_mono_ns> <elapsed_ns>`.
    Appendbench {
        #[arg(long)]
        session: PathBuf,
        #[arg(long)]
        count: u32,
        #[arg(long, value_enum, default_value_t = DurabilityArg::None)]
        durability: DurabilityArg,
        /// Writer id, recorded in every entry (`"w"`).
        #[arg(long, default_value_t = 0)]
        id: u32,
    },
    /// Bench: one process of the contention figures (see
    /// `bench::contention::worker`): `cycles` times acquire → append one
    /// line with two `write(2)` → release, on file `seq % N` of the
    /// `--session`s.
    Contend {
        #[arg(long = "impl", value_enum)]
        lock: crate::bench::contention::Impl,
        #[arg(long, required = true)]
        session: Vec<PathBuf>,
        #[arg(long)]
        id: u32,
        #[arg(long)]
        cycles: u32,
    },
    /// Demo: one gateway process running its lanes over the run's sessions
    /// until told to `stop` (see `demo::lanes`).
    Gateway(crate::demo::GatewayArgs),
    /// Bench: the command of a lock holder (`exec`, `flock(1)`): report
    /// `READY`, wait for `exit` on stdin, report `EXIT <mono_ns>` and exit.
    Gate,
    /// Bench: the command of a lock waiter: report `START <mono_ns>` and
    /// exit.
    Stamp,
    // --- PostgreSQL bench roles (see `crate::worker_pg`) ---
    /// Bench: a role on a PostgreSQL backend (`pg --url URL <role>`).
    Pg(crate::worker_pg::PgArgs),
}

/// `--durability` of the `appendbench` role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DurabilityArg {
    /// Page cache only.
    None,
    /// `fdatasync` after each append.
    Data,
    /// `fsync` after each append.
    Full,
}

impl DurabilityArg {
    fn durability(self) -> Durability {
        match self {
            DurabilityArg::None => Durability::None,
            DurabilityArg::Data => Durability::Data,
            DurabilityArg::Full => Durability::Full,
        }
    }

    /// The flag value (`none`, `data`, `full`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            DurabilityArg::None => "none",
            DurabilityArg::Data => "data",
            DurabilityArg::Full => "full",
        }
    }
}

/// Length of a [`bench_entry`] line, `\n` included (give or take the digits
/// of `w` and `seq`).
const BENCH_ENTRY_BYTES: usize = 200;

/// One entry of the append bench: a message-like JSON object of about
/// [`BENCH_ENTRY_BYTES`] bytes, naming its writer (`w`) and sequence number
/// (`seq`) so the bench can check that every append landed exactly once.
pub(crate) fn bench_entry(w: u32, seq: u32, pad: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "message",
        "role": "assistant",
        "w": w,
        "seq": seq,
        "text": pad,
    })
}

/// The padding that brings a [`bench_entry`] to [`BENCH_ENTRY_BYTES`].
pub(crate) fn bench_pad() -> String {
    let bare = bench_entry(0, 0, "").to_string().len() + 1;
    "x".repeat(BENCH_ENTRY_BYTES.saturating_sub(bare))
}

/// The `cycle` role on any backend: on each `go`, takes the lock of
/// `session` and holds it until `release`, stamping each step.
pub(crate) fn cycle<B: LockBackend, S: AsRef<B::Name> + ?Sized>(
    locks: &SessionLock<B>,
    session: &S,
    opts: &LockOptions,
) -> Result<()> {
    while wait_for("go")? {
        say(&format!("WAITING {}", monotonic_ns()))?;
        let g = locks.acquire_with(session, opts)?;
        say(&format!("ACQUIRED {}", monotonic_ns()))?;
        if !wait_for("release")? {
            break;
        }
        g.release()?;
        say(&format!("RELEASED {}", monotonic_ns()))?;
    }
    Ok(())
}

pub(crate) fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

pub(crate) fn wait_for(cmd: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(false);
        }
        if line.trim() == cmd {
            return Ok(true);
        }
    }
}

/// One transcript entry of the demo: written with two `write` calls so that a
/// broken lock would interleave and corrupt lines.
pub(crate) fn entry(w: u32, seq: u32) -> (String, String) {
    (
        format!("{{\"w\":{w},\"seq\":{seq},"),
        "\"pad\":\"xxxxxxxxxxxxxxxx\"}\n".to_owned(),
    )
}

pub fn run(args: Args) -> Result<ExitCode> {
    // First, before anything else costs time: this stamp is the command's
    // start in the exec hand-off figure.
    if let Role::Stamp = args.role {
        say(&format!("START {}", monotonic_ns()))?;
        return Ok(ExitCode::SUCCESS);
    }
    // --- PostgreSQL bench roles ---
    let args = match args.role {
        Role::Pg(pg) => return crate::worker_pg::run(pg),
        role => Args { role },
    };
    // --- end of PostgreSQL bench roles ---
    let locks = SessionLock::new();
    let opts = LockOptions::from_env().timeout(Some(Duration::from_secs(60)));
    match args.role {
        Role::Append {
            sessions,
            ack,
            id,
            count,
        } => {
            anyhow::ensure!(!sessions.is_empty(), "no sessions");
            let mut ack_file = OpenOptions::new()
                .append(true)
                .create(true)
                .open(&ack)
                .with_context(|| format!("open {}", ack.display()))?;
            for seq in 0..count {
                let session = &sessions[(seq as usize + id as usize) % sessions.len()];
                let g = locks.acquire_with(session, &opts.clone().lane("append"))?;
                let landed = g.with_fence(|| -> std::io::Result<()> {
                    let mut f = OpenOptions::new().append(true).create(true).open(session)?;
                    let (a, b) = entry(id, seq);
                    f.write_all(a.as_bytes())?;
                    f.write_all(b.as_bytes())?;
                    Ok(())
                });
                match landed {
                    Ok(Ok(())) => writeln!(ack_file, "{} {seq}", session.display())?,
                    Ok(Err(e)) => return Err(e).context("append"),
                    Err(Error::Fenced { .. } | Error::Revoked { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
                g.release()?;
            }
            say("DONE")?;
        }
        Role::Hold {
            session,
            max_hold_ms,
        } => {
            let g = locks.acquire_with(
                &session,
                &opts
                    .max_hold(Duration::from_millis(max_hold_ms))
                    .lane("hold"),
            )?;
            say(&format!("HELD {} {}", g.epoch(), monotonic_ns()))?;
            wait_for("release")?;
            g.release()?;
            say(&format!("RELEASED {}", monotonic_ns()))?;
        }
        Role::Wedge {
            session,
            max_hold_ms,
            spin_ms,
        } => {
            let g = locks.acquire_with(
                &session,
                &opts
                    .max_hold(Duration::from_millis(max_hold_ms))
                    .lane("wedged"),
            )?;
            say(&format!("HELD {} {}", g.epoch(), monotonic_ns()))?;
            let until = Instant::now() + Duration::from_millis(spin_ms);
            let mut x = 0u64;
            while Instant::now() < until {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let late = g.with_fence(|| -> std::io::Result<()> {
                let mut f = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&session)?;
                f.write_all(b"{\"wedged\":\"late write\"}\n")
            });
            match late {
                Ok(r) => {
                    r?;
                    say("LATE-WRITE landed")?;
                }
                Err(e) => say(&format!("LATE-WRITE rejected {e}"))?,
            }
        }
        Role::Wait { session, release } => {
            say(&format!("WAITING {}", monotonic_ns()))?;
            let g = locks.acquire_with(&session, &opts.lane("waiter"))?;
            say(&format!("ACQUIRED {} {}", monotonic_ns(), g.epoch()))?;
            if !release {
                wait_for("release")?;
            }
            g.release()?;
        }
        Role::Cycle { session } => cycle(&locks, &session, &opts)?,
        Role::Appendbench {
            session,
            count,
            durability,
            id,
        } => {
            let mut transcript = Transcript::open(&session)
                .with_context(|| format!("open transcript {}", session.display()))?;
            let opts = opts.lane("appendbench");
            let pad = bench_pad();
            let durability = durability.durability();
            // Warm up (lock files, state file, background threads) outside
            // the measured part; appends nothing.
            locks.acquire_with(&session, &opts)?.release()?;
            say("READY")?;
            if !wait_for("go")? {
                return Ok(ExitCode::SUCCESS);
            }
            let start = monotonic_ns();
            say(&format!("START {start}"))?;
            for seq in 0..count {
                let g = locks.acquire_with(&session, &opts)?;
                transcript
                    .append(&g, &[bench_entry(id, seq, &pad)], durability)
                    .with_context(|| format!("append entry {seq} of writer {id}"))?;
                g.release()?;
            }
            let end = monotonic_ns();
            say(&format!("DONE {count} {end} {}", end.saturating_sub(start)))?;
        }
        Role::Contend {
            lock,
            session,
            id,
            cycles,
        } => crate::bench::contention::worker(lock, &session, id, cycles)?,
        Role::Gateway(a) => return crate::demo::run_gateway(a),
        Role::Gate => {
            say("READY")?;
            wait_for("exit")?;
            say(&format!("EXIT {}", monotonic_ns()))?;
        }
        Role::Stamp | Role::Pg(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}
