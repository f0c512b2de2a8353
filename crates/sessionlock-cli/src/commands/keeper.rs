//! The keeper: the process between `sessionlock exec` and its command that
//! makes sure the command, and everything it started, never outlives exec.
//!
//! ```text
//! exec (holds the lock; subreaper)         the lock names this pid
//!  └─ sessionlock keeper (own process group; subreaper; parent-death signal SIGUSR1)
//!      └─ COMMAND (own process group; parent-death signal SIGKILL)
//!          └─ its children, and any orphan of theirs (re-parented to the keeper)
//! ```
//!
//! A parent-death signal (`PR_SET_PDEATHSIG`) reaches only the direct child
//! of the process that died: set on the command, it would kill the command
//! but not what the command started. The keeper closes that gap. It is a
//! subreaper, so every orphan among the command's descendants becomes its
//! child, and when exec dies it kills the command's process group and then
//! every descendant it can still find ([`proctree::kill_descendants`]),
//! including those that left the group with `setsid` or a double fork.
//!
//! exec starts the keeper *before* it waits for the lock, so a hand-off pays
//! for no extra program start; the keeper runs the command only after exec
//! writes the go message (the lock is held), on a pipe whose end of file
//! also tells the keeper that exec died. Its parent-death signal is asked for
//! before anything else, and then it checks that exec is still its parent:
//! if exec died before the request took effect, the keeper exits without
//! running anything. The parent-death signal fires when the *thread* that
//! forked the keeper exits; exec forks it from its main thread, which lives
//! as long as exec does.
//!
//! Protocol, exec → keeper:
//! - control pipe: `EPOCH\0LOCK_PATH\0SESSION_PATH\0` = go (the lock is
//!   held; run the command with these in its environment); end of file =
//!   exec is gone or gave up: kill everything (or, before go, run nothing).
//! - SIGTERM, SIGINT, SIGHUP, SIGQUIT: forwarded to the command's process
//!   group.
//! - SIGUSR1 (also the keeper's parent-death signal): SIGKILL the command's
//!   group and every descendant, then exit.
//!
//! The keeper exits when the command does, after killing what the command
//! left behind (it ran under the lock and must not outlive it), with the
//! command's exit code, or 128+N if signal N ended it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, ExitStatus};

use anyhow::{bail, Context as _};
use rustix::io::{fcntl_getfd, fcntl_setfd, FdFlags};
use rustix::process::{waitid, Pid, Signal, WaitId, WaitIdOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, Signal as UnixSignal, SignalKind};

use crate::exit;
use crate::output::escape_os;
use crate::output::report;
use crate::proctree::{self, exit_code};

/// The termination signals exec forwards, and the keeper forwards on to the
/// command's process group.
const FORWARDED: [Signal; 4] = [Signal::TERM, Signal::INT, Signal::HUP, Signal::QUIT];

/// The keeper's parent-death signal, and exec's "kill everything now".
const KILL_ALL: Signal = Signal::USR1;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The exec process this keeper serves.
    #[arg(long, value_name = "PID")]
    parent: u32,
    /// The read end of exec's control pipe.
    #[arg(long, value_name = "FD")]
    control_fd: i32,
    /// The command and its arguments.
    #[arg(value_name = "CMD", last = true, required = true)]
    command: Vec<OsString>,
}

/// The keeper's side.
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let parent = proctree::pid_of(args.parent).context("--parent is not a pid")?;
    // Before anything else: die with exec. If exec is already gone, the
    // signal will never come; run nothing.
    if !proctree::die_with_parent(KILL_ALL, parent).context("cannot set a parent-death signal")? {
        return Ok(ExitCode::from(exit::ERROR));
    }
    proctree::become_subreaper().context("cannot become a subreaper")?;
    // Our own process group (exec already spawned us in one; this keeps a
    // keeper started otherwise right): a terminal's SIGINT to exec's group
    // must reach the command once (through exec), not once more through us.
    rustix::process::setpgid(None, None).context("cannot create a process group")?;
    let control = control_pipe(args.control_fd)?;
    let Some((program, program_args)) = args.command.split_first() else {
        bail!("no command given");
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("cannot start a tokio runtime")?;
    rt.block_on(async {
        let mut sigs = Signals::new()?;
        let mut kill_all = listen(KILL_ALL)?;
        // SAFETY: the `AsyncFd` owns the `OwnedFd`, so the descriptor stays
        // open and refers to the same pipe for the `AsyncFd`'s whole life.
        let control = unsafe { AsyncFd::register_with_interest(control, Interest::READABLE) }
            .map_err(io::Error::from)
            .context("cannot watch the control pipe")?;
        let go = tokio::select! {
            go = read_go(&control) => go.context("cannot read the control pipe")?,
            sig = sigs.term.next() => return Ok(ExitCode::from(exit::signalled(sig))),
            _ = kill_all.recv() => return Ok(ExitCode::from(exit::signalled(KILL_ALL))),
        };
        // End of file before go: exec did not get the lock.
        let Some(env) = go else {
            return Ok(ExitCode::from(exit::ERROR));
        };
        let child = match spawn(program, program_args, &env) {
            Ok(c) => c,
            Err(e) => {
                let code = if e.kind() == io::ErrorKind::NotFound {
                    exit::NOT_FOUND
                } else {
                    exit::CANNOT_RUN
                };
                let name = escape_os(program);
                report(
                    &anyhow::Error::new(e).context(format!("cannot run {name}")),
                    None,
                );
                return Ok(ExitCode::from(code));
            }
        };
        let cmd = proctree::pid_of(child.id()).context("the command has no pid")?;
        // From here on the command's pid stays ours (unreaped) until
        // `kill_descendants` reaps it, so signalling its group is safe.
        supervise(cmd, &control, &mut sigs, &mut kill_all).await;
        proctree::signal_group(cmd, Signal::KILL);
        let status = proctree::kill_descendants(Some(cmd))
            .context("cannot kill the command's leftover processes")?;
        Ok(ExitCode::from(status.map_or(exit::ERROR, exit_code)))
    })
}

/// Takes the control pipe's read end: keeps it from the command
/// (close-on-exec) and makes it non-blocking for the runtime.
fn control_pipe(fd: i32) -> anyhow::Result<OwnedFd> {
    // SAFETY: exec passes the number of a pipe end it opened for us and
    // that nothing else in this process uses; `fcntl_getfd` below proves it
    // is open before we own it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl_getfd(borrowed).context("--control-fd is not an open file descriptor")?;
    // SAFETY: as above; from here on only this `OwnedFd` uses the number.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl_setfd(&owned, FdFlags::CLOEXEC).context("cannot set close-on-exec")?;
    let flags = rustix::fs::fcntl_getfl(&owned).context("cannot read the pipe's flags")?;
    rustix::fs::fcntl_setfl(&owned, flags | rustix::fs::OFlags::NONBLOCK)
        .context("cannot make the pipe non-blocking")?;
    Ok(owned)
}

/// The command's environment from exec's go message.
struct GoEnv {
    epoch: OsString,
    lock_path: OsString,
    session: OsString,
}

/// Reads the go message; `None` at end of file before it is complete.
async fn read_go(control: &AsyncFd<OwnedFd>) -> io::Result<Option<GoEnv>> {
    let mut buf = Vec::new();
    loop {
        let mut guard = control.readable().await?;
        let mut chunk = [0u8; 4096];
        match guard.try_io(|fd| rustix::io::read(fd, &mut chunk).map_err(io::Error::from)) {
            Ok(Ok(0)) => return Ok(None),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
        let mut fields = buf.split(|&b| b == 0);
        if buf.iter().filter(|&&b| b == 0).count() >= 3 {
            let mut next = || OsString::from_vec(fields.next().unwrap_or_default().to_vec());
            return Ok(Some(GoEnv {
                epoch: next(),
                lock_path: next(),
                session: next(),
            }));
        }
    }
}

/// Starts the command in its own process group, with SIGKILL as its
/// parent-death signal (in case the keeper itself is killed).
fn spawn(program: &OsStr, args: &[OsString], env: &GoEnv) -> io::Result<Child> {
    let keeper = proctree::own_pid();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("SESSIONLOCK_EPOCH", &env.epoch)
        .env("SESSIONLOCK_LOCK_PATH", &env.lock_path)
        .env("SESSIONLOCK_SESSION", &env.session)
        .process_group(0);
    // SAFETY: the closure runs in the forked child before `execve` and makes
    // only two system calls (`prctl`, `getppid`), which are
    // async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(
            move || match proctree::die_with_parent(Signal::KILL, keeper) {
                Ok(true) => Ok(()),
                Ok(false) => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
                Err(e) => Err(e),
            },
        );
    }
    cmd.spawn()
}

/// Waits until the command exits or the keeper must kill it (exec died or
/// asked), forwarding termination signals to its
/// group and reaping orphans that exit meanwhile.
async fn supervise(
    cmd: Pid,
    control: &AsyncFd<OwnedFd>,
    sigs: &mut Signals,
    kill_all: &mut UnixSignal,
) {
    loop {
        // Checked before every wait: a SIGCHLD may have come before we
        // listened for it.
        if exited(cmd) {
            return;
        }
        tokio::select! {
            _ = sigs.child.recv() => proctree::reap_exited(cmd),
            sig = sigs.term.next() => proctree::signal_group(cmd, sig),
            _ = kill_all.recv() => return,
            eof = exec_gone(control) => {
                if eof {
                    return;
                }
            }
        }
    }
}

/// Whether the command has exited, without reaping it.
fn exited(cmd: Pid) -> bool {
    matches!(
        waitid(
            WaitId::Pid(cmd),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        ),
        Ok(Some(_))
    )
}

/// Resolves when the control pipe is readable: `true` at end of file (exec
/// is gone), `false` for anything else (nothing is sent after go; stray
/// bytes are dropped).
async fn exec_gone(control: &AsyncFd<OwnedFd>) -> bool {
    let Ok(mut guard) = control.readable().await else {
        return true;
    };
    let mut chunk = [0u8; 64];
    match guard.try_io(|fd| rustix::io::read(fd, &mut chunk).map_err(io::Error::from)) {
        Ok(Ok(0)) => true,
        Ok(Ok(_)) | Err(_) => false,
        Ok(Err(e)) => e.kind() != io::ErrorKind::Interrupted,
    }
}

/// The termination signals to forward, and SIGCHLD; registered before the
/// process they concern starts, so that none is missed.
pub(crate) struct Signals {
    /// SIGTERM, SIGINT, SIGHUP, SIGQUIT.
    pub(crate) term: Terminations,
    /// SIGCHLD: a child exited (or stopped, or continued).
    pub(crate) child: UnixSignal,
}

/// The termination signals to forward.
pub(crate) struct Terminations([(Signal, UnixSignal); 4]);

impl Signals {
    /// Starts catching the signals.
    ///
    /// # Errors
    /// A handler cannot be installed (or there is no runtime).
    pub(crate) fn new() -> anyhow::Result<Self> {
        let [a, b, c, d] = FORWARDED;
        Ok(Signals {
            term: Terminations([
                (a, listen(a)?),
                (b, listen(b)?),
                (c, listen(c)?),
                (d, listen(d)?),
            ]),
            child: listen(Signal::CHILD)?,
        })
    }
}

impl Terminations {
    /// The next termination signal.
    ///
    /// # Cancel safety
    /// Cancel safe: a signal that arrives meanwhile is kept for the next
    /// call.
    pub(crate) async fn next(&mut self) -> Signal {
        let [a, b, c, d] = &mut self.0;
        tokio::select! {
            _ = a.1.recv() => a.0,
            _ = b.1.recv() => b.0,
            _ = c.1.recv() => c.0,
            _ = d.1.recv() => d.0,
        }
    }
}

/// Starts catching `sig` (its default action no longer applies).
fn listen(sig: Signal) -> anyhow::Result<tokio::signal::unix::Signal> {
    signal(SignalKind::from_raw(sig.as_raw()))
        .with_context(|| format!("cannot handle signal {}", sig.as_raw()))
}

/// exec's handle on its keeper.
pub(crate) struct Keeper {
    child: Child,
    pid: Pid,
    /// The control pipe's write end; dropping it tells the keeper to stop.
    control: Option<OwnedFd>,
}

impl Keeper {
    /// Starts `sessionlock keeper` for `command`, inheriting our standard
    /// streams. It runs nothing until [`Keeper::go`].
    ///
    /// # Errors
    /// The pipe or the process cannot be created.
    pub(crate) fn spawn(command: &[OsString]) -> anyhow::Result<Keeper> {
        // `/proc/self/exe`, not `current_exe()`: the link's target path ends
        // in " (deleted)" once the binary was replaced on disk (an upgrade),
        // while the link itself still opens the running binary.
        let argv0 = std::env::args_os()
            .next()
            .unwrap_or_else(|| OsString::from("sessionlock"));
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .context("cannot create the control pipe")?;
        // The keeper inherits the read end; exec spawns nothing else
        // concurrently, so nothing else can inherit it.
        fcntl_setfd(&read, FdFlags::empty()).context("cannot pass the control pipe")?;
        // Its own process group from the start, not only from its own later
        // `setpgid`: a terminal's SIGINT to exec's group in between would
        // kill it by the default action.
        let spawned = Command::new("/proc/self/exe")
            .arg0(argv0)
            .process_group(0)
            .arg("keeper")
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--control-fd")
            .arg(read.as_raw_fd().to_string())
            .arg("--")
            .args(command)
            .spawn();
        drop(read);
        let child = spawned.context("cannot start the keeper process")?;
        let pid = proctree::pid_of(child.id()).context("the keeper has no pid")?;
        Ok(Keeper {
            child,
            pid,
            control: Some(write),
        })
    }

    /// Tells the keeper to run the command with the lock's environment.
    ///
    /// # Errors
    /// The keeper is gone (`BrokenPipe`) or the pipe failed.
    pub(crate) fn go(&mut self, epoch: u64, lock_path: &OsStr, session: &OsStr) -> io::Result<()> {
        let mut msg = Vec::new();
        for field in [OsStr::new(&epoch.to_string()), lock_path, session] {
            msg.extend_from_slice(field.as_bytes());
            msg.push(0);
        }
        let fd = self
            .control
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
        let mut rest = &msg[..];
        while !rest.is_empty() {
            match rustix::io::write(fd.as_fd(), rest) {
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Sends `sig` to the keeper (which has not been reaped: its pid is
    /// still its own).
    pub(crate) fn signal(&self, sig: Signal) {
        proctree::signal_process(self.pid, sig);
    }

    /// Tells the keeper to SIGKILL the command and everything it started.
    pub(crate) fn kill_all(&self) {
        self.signal(KILL_ALL);
    }

    /// The keeper's exit status if it has exited (reaping it).
    ///
    /// # Errors
    /// `waitpid` failed.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Tells the keeper to run nothing (or to kill everything) and waits for
    /// it.
    ///
    /// # Errors
    /// `waitpid` failed.
    pub(crate) fn stop(mut self) -> io::Result<ExitStatus> {
        drop(self.control.take());
        self.child.wait()
    }
}
