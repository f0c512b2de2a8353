//! The process-tree system calls behind `exec` and its keeper: parent-death
//! signals, child subreaping, process groups, and killing every descendant
//! of this process.
//!
//! These serve the CLI's supervision of a command only; the library's own
//! platform layer (`sessionlock::sys`) has no use for them, so they live here
//! rather than widening the library's surface.

use std::io;

use rustix::io::Errno;
use rustix::process::{
    getppid, kill_process, kill_process_group, set_child_subreaper,
    set_parent_process_death_signal, wait, waitpid, Pid, Signal, WaitOptions, WaitStatus,
};

/// Our own pid as a [`Pid`].
pub(crate) fn own_pid() -> Pid {
    rustix::process::getpid()
}

/// A pid from a `u32` (a `std::process::Child` id); `None` for 0 or
/// out-of-range values.
pub(crate) fn pid_of(raw: u32) -> Option<Pid> {
    i32::try_from(raw).ok().and_then(Pid::from_raw)
}

/// Asks the kernel to send `sig` to this process when its parent dies, then
/// checks that the parent is still `parent`: if it died before the request
/// took effect, no signal will ever come, and `Ok(false)` says so.
///
/// The signal fires when the *thread* that forked this process exits, not the
/// whole parent process: the parent must fork from a thread that lives as
/// long as it does (its main thread).
///
/// # Errors
/// The `prctl` failed.
pub(crate) fn die_with_parent(sig: Signal, parent: Pid) -> io::Result<bool> {
    set_parent_process_death_signal(Some(sig))?;
    Ok(getppid() == Some(parent))
}

/// Makes this process the reaper of its orphaned descendants: a descendant
/// whose parent dies is re-parented to us instead of to init, so we can still
/// find and kill it ([`kill_descendants`]).
///
/// # Errors
/// The `prctl` failed.
pub(crate) fn become_subreaper() -> io::Result<()> {
    set_child_subreaper(Some(own_pid())).map_err(io::Error::from)
}

/// Sends `sig` to process group `pgid`. A group that no longer exists is not
/// an error.
pub(crate) fn signal_group(pgid: Pid, sig: Signal) {
    match kill_process_group(pgid, sig) {
        Ok(()) | Err(Errno::SRCH) => {}
        Err(e) => {
            tracing::warn!(pgid = pgid.as_raw_nonzero().get(), signal = ?sig, error = %e, "cannot signal the command's process group");
        }
    }
}

/// Sends `sig` to process `pid`. A process that no longer exists is not an
/// error.
pub(crate) fn signal_process(pid: Pid, sig: Signal) {
    match kill_process(pid, sig) {
        Ok(()) | Err(Errno::SRCH) => {}
        Err(e) => {
            tracing::warn!(pid = pid.as_raw_nonzero().get(), signal = ?sig, error = %e, "cannot signal a process");
        }
    }
}

/// This process's children (running or zombie), from
/// `/proc/self/task/*/children`, or, where the kernel lacks that file, from
/// the parent field of every `/proc/<pid>/stat`.
///
/// # Errors
/// `/proc` cannot be read.
pub(crate) fn children() -> io::Result<Vec<Pid>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        match std::fs::read_to_string(task?.path().join("children")) {
            Ok(text) => out.extend(
                text.split_ascii_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .filter_map(Pid::from_raw),
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return children_by_scan(),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// [`children`] the slow way: every process whose parent is us.
fn children_by_scan() -> io::Result<Vec<Pid>> {
    let me = own_pid().as_raw_nonzero().get();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A process may exit while we scan: skip what we cannot read.
        let Ok(stat) = std::fs::read(entry.path().join("stat")) else {
            continue;
        };
        if parent_in_stat(&stat) == Some(me) {
            out.extend(Pid::from_raw(pid));
        }
    }
    Ok(out)
}

/// Field 4 (the parent pid) of a `/proc/<pid>/stat`, counted after the
/// command name's closing parenthesis (the name may contain spaces and
/// parentheses).
fn parent_in_stat(raw: &[u8]) -> Option<i32> {
    let close = raw.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Kills every descendant of this process with SIGKILL and reaps them all;
/// returns the wait status of `watched` if it was among them.
///
/// Needs this process to be a subreaper ([`become_subreaper`]): killing a
/// child re-parents its children to us, and the loop kills those in turn, so
/// it reaches descendants that left the command's process group or session
/// (`setsid`, double forks) too. It ends when we have no child left. Every
/// process it signals is our unreaped child, so no pid it uses can have been
/// reused by an unrelated process.
///
/// # Errors
/// `/proc` cannot be read, or `waitpid` fails other than with `ECHILD`.
pub(crate) fn kill_descendants(watched: Option<Pid>) -> io::Result<Option<WaitStatus>> {
    let mut status = None;
    loop {
        let kids = children()?;
        for &kid in &kids {
            signal_process(kid, Signal::KILL);
        }
        // With no child visible, only ask: a child re-parented to us after
        // the scan shows up at the next one.
        let opts = if kids.is_empty() {
            WaitOptions::NOHANG
        } else {
            WaitOptions::empty()
        };
        // `wait`, not `waitpid(None, ..)`: that would mean only children in
        // our own process group.
        match wait(opts) {
            Ok(Some((pid, st))) => {
                if Some(pid) == watched {
                    status = Some(st);
                }
            }
            Ok(None) | Err(Errno::INTR) => {}
            Err(Errno::CHILD) => return Ok(status),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reaps the children that have exited, other than `except` (whose status
/// its owner collects).
pub(crate) fn reap_exited(except: Pid) {
    let Ok(kids) = children() else { return };
    for kid in kids.into_iter().filter(|&k| k != except) {
        // Not our child any more, or still running: nothing to do.
        let _ = waitpid(Some(kid), WaitOptions::NOHANG);
    }
}

/// The exit code that mirrors how a process ended: its own code, or 128+N
/// for signal N (what shells report).
pub(crate) fn exit_code(status: WaitStatus) -> u8 {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(u8::MAX),
        (None, Some(sig)) => {
            u8::try_from(i32::from(crate::exit::SIGNAL_BASE) + sig).unwrap_or(u8::MAX)
        }
        (None, None) => u8::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_is_read_after_the_last_parenthesis() {
        assert_eq!(parent_in_stat(b"42 (a) b) c) S 17 42 42 0"), Some(17));
        assert_eq!(parent_in_stat(b"42 (sleep) R 1 42"), Some(1));
        assert_eq!(parent_in_stat(b"garbage"), None);
    }
}
