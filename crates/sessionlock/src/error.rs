//! The crate's error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::reclaim::Reasons;

/// Result alias for sessionlock operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who holds (or held) a lock, as far as its payload and liveness checks tell.
///
/// Every wait that fails names its holder with this (spec §1.9).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// The lock file (or, for other backends, the lock's name).
    pub lock_path: PathBuf,
    /// Holder process id, when the payload has a usable one.
    pub pid: Option<u32>,
    /// Holder host, when recorded (OpenClaw does not record it).
    pub hostname: Option<String>,
    /// Whether the holder is alive as far as this machine can tell (a holder
    /// on another host counts as alive until its lease ends).
    pub alive: bool,
    /// Milliseconds since the holder took or last extended the lock.
    pub age_ms: Option<u64>,
    /// The holder's lease in milliseconds.
    pub max_hold_ms: Option<u64>,
    /// Fencing epoch of the holder's acquisition.
    pub epoch: Option<u64>,
    /// Diagnostic labels.
    pub lane: Option<String>,
    /// Diagnostic run id.
    pub run_id: Option<String>,
    /// Writer implementation (`sessionlock`; absent for OpenClaw locks).
    pub owner: Option<String>,
    /// Why the lock looks stale, if it does.
    pub reasons: Reasons,
}

impl fmt::Display for Holder {
    /// `pid=4242 alive=true ageMs=72859 <path>`: the same shape as OpenClaw's
    /// messages so that logs read the same, then what else is known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid={pid} alive={}", self.alive)?,
            None => write!(f, "owner=unknown")?,
        }
        if let Some(age) = self.age_ms {
            write!(f, " ageMs={age}")?;
        }
        write!(f, " {}", self.lock_path.display())?;
        let mut extra = Vec::new();
        if let Some(h) = &self.hostname {
            extra.push(format!("host={h}"));
        }
        if let Some(l) = &self.lane {
            extra.push(format!("lane={l}"));
        }
        if let Some(r) = &self.run_id {
            extra.push(format!("run={r}"));
        }
        if let Some(e) = self.epoch {
            extra.push(format!("epoch={e}"));
        }
        if !self.reasons.is_empty() {
            extra.push(format!("reasons={}", self.reasons));
        }
        if !extra.is_empty() {
            write!(f, " ({})", extra.join(" "))?;
        }
        Ok(())
    }
}

impl Holder {
    /// An attempt of this process, as the holder of an in-process turn of
    /// `session`: this pid, the turn's lane and run id, how long it has had
    /// it.
    pub(crate) fn in_process(
        session: &std::path::Path,
        lane: Option<String>,
        run_id: Option<String>,
        age_ms: Option<u64>,
    ) -> Holder {
        let me = crate::acquire::me();
        Holder {
            lock_path: session.to_owned(),
            pid: Some(me.pid),
            hostname: Some(me.hostname.clone()),
            alive: true,
            age_ms,
            max_hold_ms: None,
            epoch: None,
            lane,
            run_id,
            owner: Some("sessionlock".to_owned()),
            reasons: Reasons::default(),
        }
    }

    /// The holder of a session's state lock (the file backend's `flock` on
    /// `<session>.epoch`), as far as the kernel tells: `pid` when it lists
    /// one.
    pub(crate) fn state_lock(state_path: &std::path::Path, pid: Option<u32>) -> Holder {
        Holder {
            lock_path: state_path.to_owned(),
            pid,
            hostname: None,
            alive: pid.is_some(),
            age_ms: None,
            max_hold_ms: None,
            epoch: None,
            lane: None,
            run_id: None,
            owner: None,
            reasons: Reasons::default(),
        }
    }
}

/// Everything that can go wrong in sessionlock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The acquire budget ran out while someone else held the lock.
    #[error("session file locked (timeout {timeout_ms}ms): {holder}")]
    Timeout {
        /// The budget that ran out.
        timeout_ms: u64,
        /// Who held the lock when it did.
        holder: Box<Holder>,
    },
    /// A wait for another attempt of this process ran out of its budget: for
    /// the session (another attempt owns it, in its model call or its
    /// writes), for the prompt turn, or for another call of the same
    /// attempt. The lock itself may be free; `holder` names the attempt
    /// waited for (this pid, its lane, run id and how long it has had the
    /// session) and its `lock_path` is the session file.
    #[error("session busy in this process ({waiting_for}, timeout {timeout_ms}ms): {holder}")]
    Busy {
        /// What was waited for (`the session`, `the prompt turn`, ...).
        waiting_for: &'static str,
        /// The budget that ran out.
        timeout_ms: u64,
        /// The attempt waited for.
        holder: Box<Holder>,
    },
    /// The holder is past its lease and the hold-exceeded policy is `report`.
    #[error("session file lock stale ({reasons}): {holder}")]
    Stale {
        /// Why the lock is stale.
        reasons: Reasons,
        /// The stale holder.
        holder: Box<Holder>,
    },
    /// This guard lost its lock: the watchdog revoked it (held past
    /// `max_hold`), or someone else removed or replaced its lock file.
    #[error("session file lock revoked ({cause}): {path} (epoch {epoch}, current epoch {current_epoch})")]
    Revoked {
        /// The lock path.
        path: PathBuf,
        /// The revoked guard's epoch.
        epoch: u64,
        /// The session's epoch now.
        current_epoch: u64,
        /// How the lock was lost.
        cause: LossCause,
    },
    /// A newer acquisition exists: this guard may no longer write.
    #[error("session file lock fenced: {path} (epoch {epoch}, current epoch {current_epoch})")]
    Fenced {
        /// The lock path.
        path: PathBuf,
        /// The fenced guard's epoch.
        epoch: u64,
        /// The session's epoch now.
        current_epoch: u64,
    },
    /// A handle is unusable after an earlier write or sync error.
    #[error("handle poisoned by an earlier write error: {path}")]
    Poisoned {
        /// The file the failed write went to.
        path: PathBuf,
    },
    /// The transcript changed while the attempt had released its lock, in a
    /// way the attempt cannot accept (spec §8.4).
    #[error("session file changed while prompt lock was released: {} (phase: {phase})", session.display())]
    Takeover {
        /// The session file.
        session: PathBuf,
        /// Where the takeover was detected.
        phase: TakeoverPhase,
        /// What changed.
        detail: String,
    },
    /// The operation was cancelled before it finished: the attempt it
    /// served was aborted or disposed while it waited (for its turn, the
    /// lock, or an acquisition in flight). Nothing is held on its behalf.
    #[error("cancelled: {what}")]
    Cancelled {
        /// What was cancelled, and why.
        what: String,
    },
    /// A call that cannot work where it was made, reported at once instead
    /// of waiting for itself: re-entrant use from inside the same lock's
    /// [`Guard::with_fence`] ([`Guard::extend`], or acquiring the session
    /// again without reentrancy) or from inside an attempt's write closure
    /// (calls that need the lent guard), or a method called in a state that
    /// has no meaning for it.
    ///
    /// [`Guard::with_fence`]: crate::Guard::with_fence
    /// [`Guard::extend`]: crate::Guard::extend
    #[error("misuse: {what}")]
    Misuse {
        /// What was called, and why it cannot work there.
        what: String,
    },
    /// A complete transcript line that is not a JSON value.
    #[error("invalid transcript entry at byte {offset} of {path}: {reason}")]
    InvalidEntry {
        /// The transcript.
        path: PathBuf,
        /// Offset of the line.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error, with what was being done and to which path.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done (`read lock file`, `create directory`, ...).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The session's epoch cannot grow any more: its state file or a lock
    /// payload holds the largest epoch (`u64::MAX`, written by no counter
    /// that starts at 1). Taking the lock would have to reuse an epoch, which
    /// would let a fenced-out holder's writes land; it is refused instead.
    #[error("session epoch exhausted: {path} holds epoch {epoch}, the largest there is; refusing to reuse an epoch (once no process uses the session, remove the state file and any lock)")]
    EpochExhausted {
        /// The session's state file.
        path: PathBuf,
        /// The epoch found.
        epoch: u64,
    },
    /// Something other than a regular file stands where a lock or state file
    /// belongs (a symlink, a directory, a FIFO), or the session path is unusable.
    #[error("invalid path {path}: {reason}")]
    InvalidPath {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The holder this error names, for `Timeout`, `Stale` and `Busy`.
    pub fn holder(&self) -> Option<&Holder> {
        match self {
            Error::Timeout { holder, .. }
            | Error::Stale { holder, .. }
            | Error::Busy { holder, .. } => Some(holder),
            _ => None,
        }
    }
}

/// How a guard lost its lock ([`Error::Revoked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossCause {
    /// The watchdog revoked it: it was held past `max_hold`.
    Overdue,
    /// Its lock file was removed by someone else (another program such as
    /// OpenClaw, or an operator) without going through sessionlock.
    Removed,
    /// Its lock file was replaced by a lock that is not this guard's.
    Replaced,
}

impl fmt::Display for LossCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossCause::Overdue => "held past its max hold",
            LossCause::Removed => "lock file removed by someone else",
            LossCause::Replaced => "lock file replaced by another lock",
        })
    }
}

/// Where an attempt detected a takeover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TakeoverPhase {
    /// Reacquiring after the prompt window.
    PromptReacquire,
    /// Acquiring for cleanup.
    Cleanup,
    /// Before a write: through the held lock (someone changed the file
    /// while the attempt held it) or a short lock taken while released.
    Write,
    /// At dispose: someone changed the file while the attempt held it, after
    /// its last write.
    Dispose,
}

impl fmt::Display for TakeoverPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TakeoverPhase::PromptReacquire => "prompt_reacquire",
            TakeoverPhase::Cleanup => "cleanup",
            TakeoverPhase::Write => "write",
            TakeoverPhase::Dispose => "dispose",
        })
    }
}

/// The error of [`SessionLock::try_acquire`](crate::SessionLock::try_acquire):
/// "held by someone else" is an answer, not a failure.
#[derive(Debug, thiserror::Error)]
pub enum TryAcquireError {
    /// Someone holds the lock now.
    #[error("session file locked: {0}")]
    WouldBlock(Box<Holder>),
    /// The attempt failed.
    #[error(transparent)]
    Failed(#[from] Error),
}
