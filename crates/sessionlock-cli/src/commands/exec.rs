//! `sessionlock exec`: run a command while holding a session's lock, like
//! `flock(1)`, and never let it run without the lock.
//!
//! The lock names this process (not the command) as its holder, so the lock
//! is released when the command exits, and is reclaimable at once if this
//! process dies. The command runs under a keeper process ([`super::keeper`])
//! that kills it and everything it started when this process dies, however
//! it dies. Termination signals sent to this process are forwarded to the
//! command's process group. If the lock is lost while the command runs
//! (revoked after its lease, reclaimed, or its file deleted or replaced by
//! another program), the command and everything it started are killed at
//! once (SIGKILL, no grace: someone else may hold the lock already) and exec
//! fails. A graceful stop is offered ahead of the lease's end instead: the
//! command's group gets SIGTERM [`grace`] before the lease runs out.
//!
//! Everything is event-driven on one thread: the keeper's exit (SIGCHLD),
//! the loss of the lock ([`Guard::lost`], woken by inotify), the signals, and
//! the lease's SIGTERM timer.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustix::process::Signal;
use sessionlock::config::parse_ms;
use sessionlock::{Error, Guard, LockBackend, LockOptions, SessionId, SessionLock};
use sessionlock_lab::backend_choice::BackendChoice;

use super::keeper::{Keeper, Signals};
use super::lock::{
    busy_hint, parse_timeout, pg_key, pg_locks, pg_status_command, release, Budget, RootArg,
};
use crate::exit;
use crate::help::{ExitRow, Status};
use crate::output::report;
use crate::output::{escape_os, shell_word};
use crate::proctree;

/// `exec --help`'s notes.
pub(crate) const NOTES: &str = "\
The command runs with these variables set:
  SESSIONLOCK_EPOCH      the fencing epoch of this acquisition
  SESSIONLOCK_LOCK_PATH  the lock file (postgres: the lease's locator,
                         postgres://HOST:PORT/DB/SCHEMA/KEY)
  SESSIONLOCK_SESSION    the canonical session file (postgres: the key)

With a postgres --backend, exec itself holds the lease on the server
(through its liveness connection) and everything below holds the same way:
if exec dies or loses its connection, the lease is reclaimable at once and
the keeper kills the command; a lease revoked (max hold, connection lost,
removed by `doctor --fix`) kills the command at once.

The command does not run on without the lock:
  - It runs in its own process group, under a keeper process. If exec dies
    (even by SIGKILL), the command's group and every process it started,
    including those that left the group, are killed with SIGKILL (within
    the keeper's wake-up, while the lock naming exec is already
    reclaimable).
  - Before the lease ends, the command's group is sent SIGTERM, at
    --max-hold-ms minus a grace of min(5 s, half of --max-hold-ms), so a
    command that handles it can stop cleanly while it still holds the lock;
    exec then exits 1 (the command's work was cut short).
  - If the lock is lost while the command runs (revoked at the end of
    --max-hold-ms, taken over by another holder, or its file deleted or
    replaced by another program), the command and every process it started
    are killed at once with SIGKILL, without grace (someone else may hold
    the lock already), and exec exits 1.
  - When the command exits, processes it left running are killed: they ran
    under the lock, which is released now.

SIGTERM, SIGINT, SIGHUP and SIGQUIT sent to exec are forwarded to the
command's process group; exec waits for the command, releases the lock and
exits 128+N. Because the command has its own process group, it is not in
the terminal's foreground: a command that reads the terminal is stopped.";

/// `exec`'s exit statuses.
pub(crate) const EXIT_STATUS: &[ExitRow] = &[
    (
        Status::Command,
        "the command's own exit status, or 128+N if signal N ended it",
    ),
    (
        Status::Signal,
        "signal N was sent to exec (and forwarded to the command)",
    ),
    (
        Status::Conflict,
        "(--conflict-exit-code) the lock could not be had: held by someone else until \
         the timeout ran out, or past its lease while SESSIONLOCK_HOLD_EXCEEDED=report; \
         the command did not run",
    ),
    (
        Status::Is(exit::FINDING),
        "the lock was lost while the command ran (the command was killed, or had already \
         exited), or the command got SIGTERM because its lease was about to end",
    ),
    (
        Status::Is(exit::ERROR),
        "sessionlock itself failed (bad arguments, lock file I/O)",
    ),
    (
        Status::Is(exit::CANNOT_RUN),
        "the command could not be started",
    ),
    (Status::Is(exit::NOT_FOUND), "the command was not found"),
];

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The session transcript (e.g. `sessions/abc.jsonl`); its lock is
    /// `<file>.lock`. Neither needs to exist. With a postgres --backend:
    /// the session key (e.g. `agent:main:42`).
    #[arg(value_name = "SESSION_FILE")]
    session: PathBuf,
    /// How long to wait for the lock, in milliseconds, or `Infinity`
    /// [default: SESSIONLOCK_ACQUIRE_TIMEOUT_MS, else 60000].
    #[arg(long, value_name = "MS", value_parser = parse_timeout)]
    timeout_ms: Option<Budget>,
    /// The lease, in milliseconds: the command gets SIGTERM min(5 s, half
    /// the lease) before it ends, and the lock is revoked (and the command
    /// killed) when it ends [default: SESSIONLOCK_MAX_HOLD_MS, else 300000].
    #[arg(long, value_name = "MS", value_parser = parse_max_hold)]
    max_hold_ms: Option<Duration>,
    /// Lane label recorded in the lock, for `sessionlock status`.
    #[arg(long, value_name = "LANE", default_value = "cli")]
    lane: String,
    /// Run id recorded in the lock, for `sessionlock status`.
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// The exit status when the lock cannot be had: held by someone else
    /// until --timeout-ms ran out (`--timeout-ms 0`: at once), or held past
    /// its lease while SESSIONLOCK_HOLD_EXCEEDED=report; so that a busy
    /// lock is not taken for the command's own exit status (like
    /// `flock -E`).
    #[arg(long, value_name = "N", default_value_t = exit::DEFAULT_CONFLICT)]
    conflict_exit_code: u8,
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

/// The longest a command has between the SIGTERM that announces the end of
/// its lease and the SIGKILL at the lease's end.
const MAX_GRACE: Duration = Duration::from_secs(5);

/// How long before the lease's end the command gets SIGTERM:
/// min([`MAX_GRACE`], half the lease).
fn grace(max_hold: Duration) -> Duration {
    MAX_GRACE.min(max_hold / 2)
}

pub(crate) fn run(args: Args, backend: &BackendChoice) -> anyhow::Result<ExitCode> {
    match backend {
        BackendChoice::File => {
            let locks = args
                .root
                .session_lock()
                .with_context(|| format!("cannot lock session {}", args.session.display()))?;
            let session = args.session.clone();
            let dir = session
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_owned();
            let shown = Shown {
                session: session.display().to_string(),
                conflict: args.conflict_exit_code,
                busy_hint: Box::new(busy_hint),
                lost_hint: format!(
                    "another process took the lock over, or deleted or replaced its file \
                     (OpenClaw, `doctor --fix`, rm); what {{name}} wrote after that was not \
                     protected by the lock; run `sessionlock status {}` to see the holder",
                    shell_word(dir.as_os_str())
                ),
            };
            run_on(locks, session.as_path(), args, shown)
        }
        BackendChoice::Postgres(url) => {
            let key = pg_key(&args.session, &args.root)?;
            let locks = pg_locks(url)?;
            let status = pg_status_command(backend, &key);
            let busy = status.clone();
            let shown = Shown {
                session: key.clone(),
                conflict: args.conflict_exit_code,
                busy_hint: Box::new(move |_| format!("run `{busy}` to see the holder")),
                lost_hint: format!(
                    "its lease ended, this process lost its connection to the server, or \
                     `doctor --fix` removed it, and another client may hold it now; what {{name}} \
                     wrote after that was not protected by the lock; run `{status}` to see the holder"
                ),
            };
            run_on(locks, key.as_str(), args, shown)
        }
    }
}

/// How a session and its lock's troubles are shown, per backend.
struct Shown {
    /// The session as the user named it.
    session: String,
    /// The exit status for a lock that cannot be had
    /// (`--conflict-exit-code`).
    conflict: u8,
    /// The hint for a lock someone else holds.
    busy_hint: Box<dyn Fn(&Error) -> String>,
    /// The hint for a lock lost while the command ran (`{name}` stands for
    /// the command).
    lost_hint: String,
}

/// Takes the lock of `session` from `locks` and runs the command under it.
fn run_on<B: LockBackend>(
    locks: SessionLock<B>,
    session: &B::Name,
    args: Args,
    shown: Shown,
) -> anyhow::Result<ExitCode>
where
    B::Name: AsRef<B::Name>,
{
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
    // Orphans of the keeper's tree come to us if the keeper itself dies.
    proctree::become_subreaper().context("cannot become a subreaper")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    // From here on the termination signals are ours to handle: they must not
    // kill exec between taking the lock and the command's end.
    let mut sigs = rt.block_on(async { Signals::new() })?;
    // The keeper starts before we wait, so a hand-off does not wait for it.
    let keeper = Keeper::spawn(&args.command)?;
    let code = rt.block_on(hold_and_run(
        locks,
        session,
        &shown,
        opts,
        keeper,
        &mut sigs,
        &args.command,
    ))?;
    Ok(ExitCode::from(code))
}

/// Takes the lock, runs the command under it and releases it; returns the
/// exit code.
async fn hold_and_run<B: LockBackend>(
    locks: SessionLock<B>,
    session: &B::Name,
    shown: &Shown,
    opts: LockOptions,
    mut keeper: Keeper,
    sigs: &mut Signals,
    command: &[OsString],
) -> anyhow::Result<u8>
where
    B::Name: AsRef<B::Name>,
{
    let acquired = tokio::select! {
        r = locks.acquire_async_with(session, &opts) => r,
        sig = sigs.term.next() => {
            keeper.stop().context("cannot wait for the keeper process")?;
            return Ok(exit::signalled(sig));
        }
    };
    let guard = match acquired {
        Ok(g) => g,
        Err(e) => {
            keeper
                .stop()
                .context("cannot wait for the keeper process")?;
            if let e @ (Error::Timeout { .. } | Error::Stale { .. }) = e {
                let hint = (shown.busy_hint)(&e);
                report(&anyhow::Error::new(e), Some(&hint));
                return Ok(shown.conflict);
            }
            return Err(
                anyhow::Error::new(e).context(format!("cannot lock session {}", shown.session))
            );
        }
    };
    let name = command
        .first()
        .map_or_else(String::new, |p| escape_os(p).into_owned());

    if let Err(e) = keeper.go(
        guard.epoch(),
        guard.lock_path().as_os_str(),
        guard.key().session(),
    ) {
        // The keeper died before it could run anything.
        let status = keeper
            .stop()
            .context("cannot wait for the keeper process")?;
        release(guard);
        return Err(anyhow::Error::new(e).context(format!(
            "the keeper process died before running {name} ({status})"
        )));
    }
    let mut ended = match supervise(&mut keeper, &guard, opts.max_hold, sigs).await {
        Ok(ended) => ended,
        Err(e) => {
            // We cannot learn when the command ends: it must be dead before
            // the lock is released.
            let killed = kill_tree(&keeper);
            return Err(keep_lock(guard, killed, e));
        }
    };
    // The keeper is reaped: anything left is an orphan of a keeper that was
    // killed. Nothing the command started may outlive the lock.
    if let Err(kill) = proctree::kill_descendants(None) {
        let e = anyhow::anyhow!("cannot kill the command's leftover processes");
        return Err(keep_lock(guard, Err(kill), e));
    }
    let max_hold_ms = opts.max_hold.as_millis();
    let held = guard.holder().age_ms.unwrap_or(0);
    let lock_path = guard.lock_path().to_owned();
    let released = guard.release();

    let lost = match (ended.lost.take(), released) {
        (Some(e), _) => Some((e, true)),
        (None, Err(e @ (Error::Revoked { .. } | Error::Fenced { .. }))) => Some((e, false)),
        (None, Err(e)) => {
            report(
                &anyhow::Error::new(e).context(format!(
                    "cannot release the session lock {}",
                    lock_path.display()
                )),
                Some("the lock names this process, which is exiting: the next waiter reclaims it"),
            );
            return Ok(match ended.code() {
                exit::OK => exit::ERROR,
                c => c,
            });
        }
        (None, Ok(())) => None,
    };
    if let Some((e, terminated)) = lost {
        let hint = shown.lost_hint.replace("{name}", &name);
        report_lost(e, terminated, &name, held, max_hold_ms, &hint);
        return Ok(exit::FINDING);
    }
    if let Some(sig) = ended.forwarded {
        return Ok(exit::signalled(sig));
    }
    if ended.lease_ending {
        // The command stopped (or was stopped) because its lease was about
        // to end: its work was cut short, which the user must learn.
        report(
            &anyhow::anyhow!(
                "max hold about to end; sent SIGTERM to {name}, which exited ({})",
                ended.status
            ),
            Some(&format!(
                "{name} held the lock close to its {max_hold_ms} ms lease; \
                 raise --max-hold-ms (or SESSIONLOCK_MAX_HOLD_MS) if it needs longer"
            )),
        );
        return Ok(exit::FINDING);
    }
    if let Some(sig) = ended.status.signal() {
        // The keeper never dies of a signal by itself: someone killed it.
        report(
            &anyhow::anyhow!("the keeper process of {name} was killed by signal {sig}"),
            Some("exec killed the command's processes; the keeper must not be signalled directly"),
        );
        return Ok(exit::ERROR);
    }
    Ok(ended.code())
}

/// How the command's run ended.
struct Ended {
    /// The keeper's exit status: the command's, mirrored.
    status: ExitStatus,
    /// The first termination signal forwarded to the command.
    forwarded: Option<Signal>,
    /// The command was sent SIGTERM because its lease was about to end.
    lease_ending: bool,
    /// The loss of the lock, if it was lost while the command ran.
    lost: Option<Error>,
}

impl Ended {
    /// The command's exit code, as the keeper mirrored it.
    fn code(&self) -> u8 {
        match self.status.code() {
            Some(c) => u8::try_from(c).unwrap_or(u8::MAX),
            None => u8::MAX,
        }
    }
}

/// Waits for the keeper (the command) to exit, forwarding termination
/// signals, sending SIGTERM [`grace`] before the lease ends, and killing
/// the command's whole tree at once if the lock is lost meanwhile.
async fn supervise<B: LockBackend>(
    keeper: &mut Keeper,
    guard: &Guard<B>,
    max_hold: Duration,
    sigs: &mut Signals,
) -> anyhow::Result<Ended> {
    let lost_fut = guard.lost();
    tokio::pin!(lost_fut);
    let mut ended = Ended {
        status: ExitStatus::from_raw(0),
        forwarded: None,
        lease_ending: false,
        lost: None,
    };
    // The lease runs from the acquisition (the watchdog's clock); the
    // SIGTERM comes `grace` before its end, so that the SIGKILL of the
    // revocation lands at the end.
    let age = Duration::from_millis(guard.holder().age_ms.unwrap_or(0));
    let acquired = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
    let mut term_at = acquired.checked_add(max_hold - grace(max_hold));
    loop {
        // Checked before every wait: a SIGCHLD may have come before we
        // listened for it.
        match keeper.try_wait() {
            Ok(Some(status)) => {
                ended.status = status;
                return Ok(ended);
            }
            Ok(None) => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context("cannot wait for the keeper process"));
            }
        }
        let lease_term = async {
            match term_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sigs.child.recv() => {}
            e = &mut lost_fut, if ended.lost.is_none() => {
                // Someone else may hold the lock from now on: no grace.
                ended.lost = Some(e);
                keeper.kill_all();
                term_at = None;
            }
            sig = sigs.term.next() => {
                ended.forwarded.get_or_insert(sig);
                keeper.signal(sig);
            }
            () = lease_term => {
                ended.lease_ending = true;
                keeper.signal(Signal::TERM);
                term_at = None;
            }
        }
    }
}

/// Kills the command's whole tree without the keeper's help, after exec
/// lost track of it (an error from `waitpid`), and reaps it: SIGKILL to the
/// keeper, whose death SIGKILLs the command (its parent-death signal) and
/// hands the command's children, and in turn theirs, to exec (a
/// subreaper), which kills and reaps them all. Every member of the
/// command's process group is among them.
///
/// # Errors
/// The tree could not be confirmed dead (`/proc` or `wait` failed): the
/// lock must then not be released (see [`keep_lock`]).
fn kill_tree(keeper: &Keeper) -> std::io::Result<()> {
    keeper.signal(Signal::KILL);
    proctree::kill_descendants(None).map(drop)
}

/// What to do with the lock when exec lost track of its command: release it
/// only if the command's tree was confirmed dead; otherwise keep it (exec
/// then exits holding it, so the lock names exec's dead pid and is
/// reclaimable only once exec is gone, which is also when the keeper's
/// parent-death signal makes it kill the tree). Releasing it instead would
/// let the next holder in while processes that ran under it may still run,
/// for as long as they like.
fn keep_lock<B: LockBackend>(
    guard: Guard<B>,
    killed: std::io::Result<()>,
    e: anyhow::Error,
) -> anyhow::Error {
    match killed {
        Ok(()) => {
            release(guard);
            e
        }
        Err(kill) => {
            // Not released: exec exits with the lock, which names its pid.
            std::mem::forget(guard);
            e.context(format!(
                "cannot confirm that the command's processes are dead ({kill}); \
                 the lock is left to be reclaimed when exec has exited"
            ))
        }
    }
}

/// Reports the loss of the lock while the command ran.
fn report_lost(
    e: Error,
    terminated: bool,
    name: &str,
    held_ms: u64,
    max_hold_ms: u128,
    lost_hint: &str,
) {
    let overdue = u128::from(held_ms) >= max_hold_ms;
    let (what, hint) = if overdue && matches!(e, Error::Revoked { .. }) {
        (
            if terminated {
                format!("lock revoked after max hold; terminated {name}")
            } else {
                format!("lock revoked after max hold before {name} exited")
            },
            format!(
                "{name} held the lock longer than its {max_hold_ms} ms lease; \
                 raise --max-hold-ms (or SESSIONLOCK_MAX_HOLD_MS) if it needs longer"
            ),
        )
    } else {
        (
            if terminated {
                format!("lost the session lock while {name} ran; terminated {name}")
            } else {
                format!("lost the session lock before {name} exited")
            },
            lost_hint.to_owned(),
        )
    };
    report(&anyhow::Error::new(e).context(what), Some(&hint));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 9.1, review item 2): when exec lost track of its
    /// command (`waitpid` or `/proc` failed), it released the lock while the
    /// kill was still in flight. Now the lock is released only once the
    /// tree is confirmed dead; otherwise it stays published, naming this
    /// process. (The failures themselves cannot be injected into a real
    /// exec; this checks the decision on a real lock file.)
    #[test]
    fn the_lock_is_released_only_once_the_tree_is_confirmed_dead() {
        let dir = tempfile::tempdir().unwrap();
        let locks = SessionLock::new();

        let guard = locks.acquire(dir.path().join("s.jsonl")).unwrap();
        let lock = guard.lock_path().to_owned();
        let e = keep_lock(
            guard,
            Err(std::io::Error::other("injected")),
            anyhow::anyhow!("lost track"),
        );
        assert!(format!("{e:#}").contains("cannot confirm"), "{e:#}");
        let text = std::fs::read_to_string(&lock).expect("the lock was kept");
        assert!(
            text.contains(&format!("\"pid\":{}", std::process::id())),
            "{text}"
        );
        // The forgotten guard still holds its session in this process: the
        // other case takes another session.
        let guard = locks.acquire(dir.path().join("t.jsonl")).unwrap();
        let lock = guard.lock_path().to_owned();
        let _ = keep_lock(guard, Ok(()), anyhow::anyhow!("lost track"));
        assert!(!lock.exists(), "released once the tree is dead");
    }
}
