//! `sessionlock exec`: run a command while holding a session's lock, like
//! `flock(1)`.
//!
//! The lock names this process (not the command) as its holder, so the lock
//! is released when the command exits, and is reclaimable at once if this
//! process dies. If the watchdog revokes the lock because it was held past
//! its lease, the command is terminated: it must not go on writing the
//! transcript without the lock.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustix::process::{kill_process, Pid, Signal};
use sessionlock::config::parse_ms;
use sessionlock::{Error, Guard};

use crate::lockcli::{busy_hint, parse_timeout, release, Budget, RootArg};
use crate::report;

const AFTER_HELP: &str = "\
The command runs with these variables set:
  SESSIONLOCK_EPOCH      the fencing epoch of this acquisition
  SESSIONLOCK_LOCK_PATH  the lock file
  SESSIONLOCK_SESSION    the canonical session file

If the lock is held past --max-hold-ms, it is revoked and the command is sent
SIGTERM (SIGKILL 5 s later if it is still running).

Exit status:
  the command's own exit status, or 128+N if signal N ended it
  1    the lock was held by someone else until the timeout ran out, or was
       revoked after --max-hold-ms and the command was terminated
  2    sessionlock itself failed (bad arguments, lock file I/O)
  126  the command could not be started
  127  the command was not found";

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// The session transcript (e.g. `sessions/abc.jsonl`); its lock is
    /// `<file>.lock`. Neither needs to exist.
    #[arg(value_name = "SESSION_FILE")]
    session: PathBuf,
    /// How long to wait for the lock, in milliseconds, or `Infinity`
    /// [default: SESSIONLOCK_ACQUIRE_TIMEOUT_MS, else 60000].
    #[arg(long, value_name = "MS", value_parser = parse_timeout)]
    timeout_ms: Option<Budget>,
    /// The lease, in milliseconds: the lock is revoked (and the command
    /// terminated) this long after it was taken [default:
    /// SESSIONLOCK_MAX_HOLD_MS, else 300000].
    #[arg(long, value_name = "MS", value_parser = parse_max_hold)]
    max_hold_ms: Option<Duration>,
    /// Lane label recorded in the lock, for `sessionlock status`.
    #[arg(long, value_name = "LANE", default_value = "cli")]
    lane: String,
    /// Run id recorded in the lock, for `sessionlock status`.
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    #[command(flatten)]
    root: RootArg,
    /// The command to run, and its arguments (after `--`).
    #[arg(value_name = "CMD", last = true, required = true)]
    command: Vec<OsString>,
}

fn parse_max_hold(s: &str) -> Result<Duration, String> {
    match parse_ms(s, false) {
        Ok(Some(d)) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be greater than zero".to_owned()),
        Err(e) => Err(e.to_owned()),
    }
}

/// Longest pause between two checks of the command and of the lock.
const POLL_MAX: Duration = Duration::from_millis(20);
/// How long a command has to exit after SIGTERM before it gets SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let locks = args
        .root
        .session_lock()
        .with_context(|| format!("cannot lock session {}", args.session.display()))?;
    let mut opts = locks.options().clone().lane(args.lane);
    if let Some(Budget(t)) = args.timeout_ms {
        opts = opts.timeout(t);
    }
    if let Some(d) = args.max_hold_ms {
        opts = opts.max_hold(d);
    }
    if let Some(r) = args.run_id {
        opts = opts.run_id(r);
    }

    let guard = match locks.acquire_with(&args.session, &opts) {
        Ok(g) => g,
        Err(e @ (Error::Timeout { .. } | Error::Stale { .. })) => {
            let hint = busy_hint(&e);
            report(&anyhow::Error::new(e), Some(&hint));
            return Ok(ExitCode::from(1));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot lock session {}", args.session.display())))
        }
    };

    // `last = true, required = true` guarantees at least one element.
    let Some((program, program_args)) = args.command.split_first() else {
        anyhow::bail!("no command given");
    };
    let name = program.to_string_lossy().into_owned();
    let spawned = Command::new(program)
        .args(program_args)
        .env("SESSIONLOCK_EPOCH", guard.epoch().to_string())
        .env("SESSIONLOCK_LOCK_PATH", guard.lock_path())
        .env("SESSIONLOCK_SESSION", guard.session_path())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            release(guard);
            report(
                &anyhow::Error::new(e).context(format!("cannot run {name}")),
                None,
            );
            return Ok(ExitCode::from(code));
        }
    };

    let supervised = supervise(&mut child, &guard, &name);
    let max_hold_ms = opts.max_hold.as_millis();
    let released = release(guard);
    let mut code = match supervised? {
        Outcome::Exited(status) => exit_code(status),
        Outcome::Revoked => {
            report(
                &anyhow::anyhow!("lock revoked after max hold; terminated {name}"),
                Some(&format!(
                    "{name} held the lock longer than its {max_hold_ms} ms lease; \
                     raise --max-hold-ms (or SESSIONLOCK_MAX_HOLD_MS) if it needs longer"
                )),
            );
            1
        }
    };
    if !released && code == 0 {
        code = 2;
    }
    Ok(ExitCode::from(code))
}

/// How the command ended.
enum Outcome {
    /// It exited by itself.
    Exited(ExitStatus),
    /// The lock was revoked while it ran, and it was terminated.
    Revoked,
}

/// Waits for the command, terminating it if the lock is revoked meanwhile.
///
/// Polls with `try_wait` (1 ms, doubling up to [`POLL_MAX`]): a short command
/// returns quickly, a revocation is noticed within `POLL_MAX`, and since the
/// child is reaped only here, its pid cannot be reused by another process
/// while we may still signal it.
fn supervise(child: &mut Child, guard: &Guard, name: &str) -> anyhow::Result<Outcome> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("cannot wait for {name}"))?
        {
            return Ok(Outcome::Exited(status));
        }
        if guard.is_revoked() {
            terminate(child).with_context(|| format!("cannot wait for {name}"))?;
            return Ok(Outcome::Revoked);
        }
        sleep(pause);
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Sends SIGTERM, then SIGKILL if the command is still running after
/// [`KILL_GRACE`], and reaps it.
fn terminate(child: &mut Child) -> io::Result<ExitStatus> {
    let pid = Pid::from_child(child);
    signal(pid, Signal::TERM);
    let deadline = Instant::now() + KILL_GRACE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        sleep(POLL_MAX);
    }
    signal(pid, Signal::KILL);
    child.wait()
}

/// Signals our unreaped child. It cannot fail short of a kernel oddity;
/// then waiting for the child is all that is left to do.
fn signal(pid: Pid, sig: Signal) {
    if let Err(e) = kill_process(pid, sig) {
        tracing::warn!(pid = pid.as_raw_nonzero().get(), signal = ?sig, error = %e, "cannot signal the command");
    }
}

/// The exit code that mirrors how the command ended: its own code, or 128+N
/// for signal N (what shells report).
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(u8::MAX),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(u8::MAX),
        (None, None) => u8::MAX,
    }
}
