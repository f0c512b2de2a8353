//! The `sessionlock` command: status, doctor, verify-fs, exec, append, read,
//! repair, demo, timeline, bench, and its own completions and man pages.
//!
//! Data goes to stdout, diagnostics to stderr. Exit codes ([`exit`]): 0 ok,
//! 1 a finding the user can act on (lock held, demo verdict FAIL), 2 error.
//! Every `--help` ends with the environment and the exit statuses
//! ([`help`]); `docs/cli.md` documents the commands and their JSON.

mod commands;
mod exit;
mod help;
mod output;
mod proctree;

use std::process::ExitCode;

use clap::{FromArgMatches as _, Parser, Subcommand};
use commands::{
    doctor, exec, generate, keeper, openclaw, serve_metrics, status, timeline, transcript,
    verify_fs,
};
use sessionlock_lab::backend_choice::BackendChoice;
use sessionlock_lab::{bench, demo, worker};

#[derive(Parser)]
#[command(
    name = "sessionlock",
    version,
    about = "Crash-safe, fenced session write locks for agent transcripts"
)]
pub(crate) struct Cli {
    /// OpenClaw-compatible mode (same as SESSIONLOCK_OPENCLAW_COMPAT=1): lock
    /// files readable by OpenClaw, and commands that hold a lock re-execute
    /// themselves with an `openclaw` argument so that OpenClaw honours their
    /// locks instead of deleting them.
    #[arg(long, global = true)]
    openclaw_compat: bool,
    /// Internal: the argument OpenClaw recognises, added by the re-execution
    /// of OpenClaw-compatible mode.
    #[arg(long, global = true, hide = true, value_name = "MARKER", value_parser = openclaw::parse_marker)]
    openclaw_marker: Option<String>,
    /// Where locks and transcripts live: `file` (the default: lock files
    /// beside the transcripts) or a `postgres://` URL (a PostgreSQL server,
    /// for gateways on several machines). Default: SESSIONLOCK_BACKEND, else
    /// `file`.
    #[arg(long, global = true, value_name = "BACKEND")]
    backend: Option<String>,
    /// Append what the locks do (acquisitions, releases, reclaims, ...) to
    /// FILE as JSON Lines, for `sessionlock timeline` (same as
    /// SESSIONLOCK_EVENT_LOG=FILE; the command's children log there too).
    #[arg(long, global = true, value_name = "FILE")]
    event_log: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

impl Command {
    /// Whether the command may hold a session lock (and so must carry the
    /// OpenClaw marker in OpenClaw-compatible mode).
    fn holds_locks(&self) -> bool {
        match self {
            Command::Exec(_) | Command::Append(_) | Command::Repair(_) => true,
            Command::Doctor(a) => a.fixes(),
            _ => false,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Show every session lock in the given directories (with a postgres
    /// --backend: every lease, or those whose key starts with PREFIX).
    Status(status::Args),
    /// Explain every lock and transcript in the given directories, and with
    /// --fix remove what is safe to remove and repair torn tails (with a
    /// postgres --backend: the leases, --fix removing only reclaimable ones).
    Doctor(doctor::Args),
    /// Serve the locks of directories (or a PostgreSQL schema) and the
    /// library's metrics from event logs over HTTP, in the Prometheus text
    /// format.
    ServeMetrics(serve_metrics::Args),
    /// Check that a directory's file system gives what sessionlock relies on
    /// (file backend only).
    VerifyFs(verify_fs::Args),
    /// Run a command while holding a session's lock (like flock(1)).
    Exec(exec::Args),
    /// Append entries to a session transcript under its lock, fenced.
    Append(transcript::AppendArgs),
    /// Print a transcript's entries as JSONL (a torn tail is reported on stderr).
    Read(transcript::ReadArgs),
    /// Repair a transcript's torn tail under its lock.
    Repair(transcript::RepairArgs),
    /// Show sessionlock surviving what breaks other locks: real processes,
    /// SIGKILLed and wedged holders, verified transcripts.
    Demo(demo::Args),
    /// Draw event logs (SESSIONLOCK_EVENT_LOG) as one self-contained HTML
    /// page: holds, waits, prompt windows, reclaims and faults per session.
    Timeline(timeline::Args),
    /// Measure acquire cost, cross-process hand-off and reclaim latency.
    Bench(bench::Args),
    /// Print a shell completion script (e.g. `sessionlock completions bash
    /// > /etc/bash_completion.d/sessionlock`).
    Completions(generate::CompletionsArgs),
    /// Print the manual page, or write every page into a directory.
    Man(generate::ManArgs),
    /// Internal: a child process of demo and bench.
    #[command(hide = true)]
    Worker(worker::Args),
    /// Internal: the process between exec and its command.
    #[command(hide = true)]
    Keeper(keeper::Args),
}

fn main() -> ExitCode {
    output::init_logging();
    let cli = match Cli::from_arg_matches(&help::command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Some(log) = &cli.event_log {
        // Before any thread starts, as for compatible mode: the library
        // reads it at its first event, and children inherit it.
        // Absolute: a child working elsewhere logs to the same file.
        let log = std::path::absolute(log).unwrap_or_else(|_| log.clone());
        std::env::set_var(sessionlock::observe::ENV_EVENT_LOG, log);
    }
    if openclaw::compat_on(cli.openclaw_compat) {
        // Before any thread starts: the library and the command's children
        // read the mode from the environment.
        std::env::set_var(sessionlock::config::ENV_OPENCLAW_COMPAT, "1");
        if cli.command.holds_locks() && cli.openclaw_marker.is_none() {
            output::report(&openclaw::reexec_marked(), None);
            return ExitCode::from(exit::ERROR);
        }
    }
    let backend = match BackendChoice::resolve(cli.backend.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            output::report(&e, None);
            return ExitCode::from(exit::ERROR);
        }
    };
    let result = match cli.command {
        Command::Status(a) => status::run(a, &backend),
        Command::Exec(a) => exec::run(a, &backend),
        Command::Doctor(a) => doctor::run(a, &backend),
        Command::ServeMetrics(a) => serve_metrics::run(a, &backend),
        Command::VerifyFs(a) => verify_fs::run(a, &backend),
        Command::Append(a) => transcript::append(a, &backend),
        Command::Read(a) => transcript::read(a, &backend),
        Command::Repair(a) => transcript::repair(a, &backend),
        Command::Demo(a) => demo::run(a, &backend),
        Command::Timeline(a) => timeline::run(a),
        Command::Bench(a) => bench::run(a, &backend),
        Command::Completions(a) => generate::completions(a),
        Command::Man(a) => generate::man(a),
        Command::Worker(a) => worker::run(a),
        Command::Keeper(a) => keeper::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            output::report(&e, None);
            ExitCode::from(exit::ERROR)
        }
    }
}
