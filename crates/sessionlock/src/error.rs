//! The crate's error type.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::reason::Reasons;
use crate::store::Takeover;

/// Result alias for sessionlock operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who holds (or held) a lock, as far as its payload and liveness checks tell.
///
/// Every wait that fails names its holder with this (invariant 9 of
/// [design §10](crate::design#10-invariants)).
///
/// Serialized (serde) as a JSON object with the field names of the CLI's
/// `status --json` and `doctor --json`, a stable interface: `lockPath` (the
/// path as UTF-8, invalid bytes replaced), `lockPathHex` (the path's bytes
/// in hexadecimal, present only when they are not UTF-8), `pid`,
/// `hostname`, `alive`, `lane`, `runId`, `ageMs`, `maxHoldMs`, `epoch`,
/// `owner` (`null` when unknown) and `reasons` (an array of
/// [`Reason`](crate::Reason) names such as `"dead-pid"`), then, only when
/// they say something, `holds` (what the named process holds when it is
/// not the lock's holder: [`Holds::as_str`], `"state-lock"` or
/// `"first-in-line"`) and `stopped` (`true`). Deserializing reads the same
/// shape back (a missing `holds` is `None`, a missing `stopped` `false`).
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
    /// What the named process holds, when it is not the lock's holder but
    /// a process in the way of its acquisition: a timeout on the session's
    /// state lock names the process holding that, a queued waiter's
    /// timeout the first waiter in line. `None` for the lock's holder.
    pub holds: Option<Holds>,
    /// Whether the named process was seen stopped (state `T` or `t` in
    /// `/proc/<pid>/stat`: SIGSTOP, a debugger) when the error was made: it
    /// keeps what it holds until it is resumed or killed.
    pub stopped: bool,
}

/// What a process named by a [`Holder`] holds when it is not the lock's
/// holder ([`Holder::holds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Holds {
    /// The session's state lock (the file backend's `flock` on
    /// `<session>.epoch`), which sessionlock holds only for the few system
    /// calls of a protocol step: held longer, its holder is stuck inside
    /// one (stopped, or hung on the disk).
    StateLock,
    /// The first place in the session's line of waiters: the waiter that
    /// goes next, which others wait for.
    FirstInLine,
}

impl Holds {
    /// The name used in JSON: `state-lock`, `first-in-line`.
    pub fn as_str(self) -> &'static str {
        match self {
            Holds::StateLock => "state-lock",
            Holds::FirstInLine => "first-in-line",
        }
    }

    /// What it is, for people: `the session's state lock`, `the first
    /// place in the session's line of waiters`.
    pub fn describe(self) -> &'static str {
        match self {
            Holds::StateLock => "the session's state lock",
            Holds::FirstInLine => "the first place in the session's line of waiters",
        }
    }
}

impl fmt::Display for Holds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl fmt::Display for Holder {
    /// `pid=4242 alive=true ageMs=72859 <path>`: the same shape as OpenClaw's
    /// messages so that logs read the same, then what else is known. A
    /// stopped process is marked `stopped` before the path, and what a
    /// process that is not the lock's holder holds comes first in the
    /// parentheses: `pid=4242 alive=true stopped /s/a.jsonl.epoch (holds
    /// the session's state lock)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid={pid} alive={}", self.alive)?,
            None => write!(f, "owner=unknown")?,
        }
        if let Some(age) = self.age_ms {
            write!(f, " ageMs={age}")?;
        }
        if self.stopped {
            write!(f, " stopped")?;
        }
        write!(f, " {}", self.lock_path.display())?;
        let mut extra = Vec::new();
        if let Some(holds) = self.holds {
            extra.push(format!("holds {holds}"));
        }
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

/// [`Holder`] as JSON, borrowed for serializing. Field names and order
/// are those of the CLI's `--json` output.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HolderOut<'a> {
    lock_path: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_path_hex: Option<String>,
    pid: Option<u32>,
    hostname: Option<&'a str>,
    alive: bool,
    lane: Option<&'a str>,
    run_id: Option<&'a str>,
    age_ms: Option<u64>,
    max_hold_ms: Option<u64>,
    epoch: Option<u64>,
    owner: Option<&'a str>,
    reasons: Reasons,
    #[serde(skip_serializing_if = "Option::is_none")]
    holds: Option<Holds>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stopped: bool,
}

/// [`Holder`] as JSON, owned for deserializing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HolderIn {
    lock_path: PathBuf,
    lock_path_hex: Option<String>,
    pid: Option<u32>,
    hostname: Option<String>,
    alive: bool,
    lane: Option<String>,
    run_id: Option<String>,
    age_ms: Option<u64>,
    max_hold_ms: Option<u64>,
    epoch: Option<u64>,
    owner: Option<String>,
    #[serde(default)]
    reasons: Reasons,
    #[serde(default)]
    holds: Option<Holds>,
    #[serde(default)]
    stopped: bool,
}

impl Serialize for Holder {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let path = self.lock_path.as_os_str();
        HolderOut {
            lock_path: path.to_string_lossy(),
            lock_path_hex: path.to_str().is_none().then(|| hex(path.as_bytes())),
            pid: self.pid,
            hostname: self.hostname.as_deref(),
            alive: self.alive,
            lane: self.lane.as_deref(),
            run_id: self.run_id.as_deref(),
            age_ms: self.age_ms,
            max_hold_ms: self.max_hold_ms,
            epoch: self.epoch,
            owner: self.owner.as_deref(),
            reasons: self.reasons,
            holds: self.holds,
            stopped: self.stopped,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Holder {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let h = HolderIn::deserialize(deserializer)?;
        let lock_path = match h.lock_path_hex {
            Some(hex) => PathBuf::from(OsString::from_vec(
                unhex(&hex).ok_or_else(|| D::Error::custom("lockPathHex is not hexadecimal"))?,
            )),
            None => h.lock_path,
        };
        Ok(Holder {
            lock_path,
            pid: h.pid,
            hostname: h.hostname,
            alive: h.alive,
            age_ms: h.age_ms,
            max_hold_ms: h.max_hold_ms,
            epoch: h.epoch,
            lane: h.lane,
            run_id: h.run_id,
            owner: h.owner,
            reasons: h.reasons,
            holds: h.holds,
            stopped: h.stopped,
        })
    }
}

/// `bytes` in lowercase hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The bytes of a hexadecimal string, if it is one.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl Holder {
    /// A holder known only by where its lock is: what a backend reports
    /// when the session's state stayed busy and it could not tell who kept
    /// it (a database's row lock, say).
    pub fn unknown(lock_path: impl Into<PathBuf>) -> Holder {
        Holder {
            lock_path: lock_path.into(),
            pid: None,
            hostname: None,
            alive: true,
            age_ms: None,
            max_hold_ms: None,
            epoch: None,
            lane: None,
            run_id: None,
            owner: None,
            reasons: Reasons::default(),
            holds: None,
            stopped: false,
        }
    }

    /// An attempt of this process, as the holder of an in-process turn of
    /// `session`: this pid, the turn's lane and run id, how long it has had
    /// it.
    pub(crate) fn in_process(
        session: &std::path::Path,
        lane: Option<String>,
        run_id: Option<String>,
        age_ms: Option<u64>,
    ) -> Holder {
        let me = crate::identity::me();
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
            holds: None,
            stopped: false,
        }
    }

    /// A process named by its place at a session's state file
    /// (`<session>.epoch`), as far as the kernel tells: `pid` when it lists
    /// one. What it holds there ([`Holder::holds`]) is for the caller to
    /// say.
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
            holds: None,
            stopped: false,
        }
    }

    /// The process `pid` at the state file `state_path`, holding `holds`;
    /// `stopped` when it was seen stopped.
    pub(crate) fn holding(
        state_path: &std::path::Path,
        pid: Option<u32>,
        holds: Holds,
        stopped: bool,
    ) -> Holder {
        Holder {
            holds: Some(holds),
            stopped,
            ..Holder::state_lock(state_path, pid)
        }
    }
}

/// Everything that can go wrong in sessionlock.
///
/// Each error names what it concerns (a path, a holder, an epoch) in its
/// message. For programs, [`Error::code`] is a stable name of the kind,
/// [`Error::is_retryable`] says whether trying again later is the whole fix,
/// and [`Error::holder`] names who holds the lock when that is what went
/// wrong. [`TryAcquireError`] wraps this type for
/// [`SessionLock::try_acquire`](crate::SessionLock::try_acquire), whose
/// "held by someone else" answer is not an error of this type.
///
/// # Handling errors
///
/// | what to do | variants ([`code`](Error::code)) | [`is_retryable`](Error::is_retryable) |
/// |---|---|---|
/// | **retry later**: someone else holds the session; nothing was written | [`Timeout`](Error::Timeout) (`timeout`), [`Busy`](Error::Busy) (`busy`), [`TryAcquireError::WouldBlock`] (`would_block`) | `true` |
/// | **stop writing**: the work done under this guard or attempt must not go on | [`Revoked`](Error::Revoked) (`revoked`), [`Fenced`](Error::Fenced) (`fenced`), [`Takeover`](Error::Takeover) (`takeover`) | `false` |
/// | **reopen** the transcript handle | [`Poisoned`](Error::Poisoned) (`poisoned`) | `false` |
/// | **fix the calling code**, or accept the caller's own abort | [`Misuse`](Error::Misuse) (`misuse`), [`Cancelled`](Error::Cancelled) (`cancelled`) | `false` |
/// | **operator action**: report it; retrying at once will not help | [`Stale`](Error::Stale) (`stale`), [`InvalidPath`](Error::InvalidPath) (`invalid_path`), [`InvalidEntry`](Error::InvalidEntry) (`invalid_entry`), [`EpochExhausted`](Error::EpochExhausted) (`epoch_exhausted`), [`Io`](Error::Io) (`io`), [`Backend`](Error::Backend) (`backend`) | `false` |
///
/// In detail:
///
/// - **Retry later.** Try again after a pause, or with a larger budget.
///   A `Timeout` ([`Error::holder`]) or a `WouldBlock` (its field) names the
///   holder: under the default hold-exceeded policy `reclaim`, a live one
///   keeps the lock at most until its lease ends (`max_hold_ms` after its
///   last extension, which was `age_ms` ago). `Busy` names another attempt
///   of this process (its lane and run id) that owns the session or the
///   prompt turn.
/// - **Stop writing.** The lock was lost (held past `max_hold`, reclaimed
///   by a newer holder, its lock file removed or replaced by someone else),
///   or an attempt found the transcript changed by someone else, or could
///   not prove it unchanged ([`TakeoverReason`]). A refused write did not
///   land; earlier writes did. Do not retry the write: drop the guard, or
///   run the attempt's cleanup and dispose; then acquire again (or begin a
///   new attempt) and re-read the transcript before deciding what to
///   write. A `Revoked` with [`LossCause::Overdue`] means the work needs a
///   longer `max_hold` or regular [`Guard::extend`](crate::Guard::extend)
///   calls.
/// - **Reopen.** An earlier write or sync through this transcript handle
///   failed (that call returned the `Io` error), and whether its bytes
///   reached the disk is unknown. Drop the handle, open a new one, and
///   re-read the transcript to see what landed; the new handle's first
///   fenced write sets a torn last line aside.
/// - **Fix the calling code.** `Misuse` is a bug: a re-entrant call inside
///   a fence or a write closure, or a call in a state where it has no
///   meaning; the message says which. `Cancelled` follows the caller's own
///   abort (a user stop, stuck recovery): nothing is held for it.
/// - **Operator action.** `Stale`: a live holder is past its lease under
///   the hold-exceeded policy `report`; look at it (`sessionlock status`,
///   `sessionlock doctor`) and end it, or choose the policy `reclaim`.
///   `InvalidPath`: a symbolic link, directory or FIFO stands where a lock,
///   state or transcript file belongs, or the session path is unusable (a
///   session name from a client's input: reject the input). `InvalidEntry`:
///   a transcript line that is not JSON (readers go on after it).
///   `EpochExhausted`: as its message says. `Io`: permissions, a full disk,
///   too many open files, or a file system without a feature the lock needs
///   (`io::ErrorKind::Unsupported`: run `sessionlock verify-fs` on the
///   directory); its `op` and `path` say where. `Backend`: a database
///   backend's server is down or unreachable, refused the credentials, or
///   holds a schema of another version.
///
/// `Io` and `Backend` can be transient (a disk freed, a database restarted),
/// but they also report faults that no wait cures, and the variant cannot
/// tell them apart: `is_retryable` is `false` for them, and a caller that
/// retries them anyway should do so with a bounded budget and an alert.
///
/// # Example
///
/// A second acquisition of a held session runs out of its budget; the error
/// names the holder and says to come back later:
///
/// ```
/// use std::time::Duration;
/// use sessionlock::{Error, LockOptions, SessionLock};
///
/// # fn main() -> Result<(), Error> {
/// let dir = tempfile::tempdir().expect("tempdir");
/// let session = dir.path().join("abc.jsonl");
/// let locks = SessionLock::new();
/// let guard = locks.acquire_with(&session, &LockOptions::default().lane("channel"))?;
///
/// let quick = LockOptions::default().timeout(Some(Duration::from_millis(20)));
/// let err = locks.acquire_with(&session, &quick).unwrap_err();
/// assert!(matches!(err, Error::Timeout { timeout_ms: 20, .. }));
/// assert_eq!(err.code(), "timeout");
/// assert!(err.is_retryable());
/// let holder = err.holder().expect("a timeout names the holder");
/// assert_eq!(holder.pid, Some(std::process::id()));
/// assert_eq!(holder.lane.as_deref(), Some("channel"));
///
/// guard.release()?;
/// // Once the holder is done, the same call succeeds.
/// let again = locks.acquire_with(&session, &quick)?;
/// again.release()?;
/// # Ok(())
/// # }
/// ```
///
/// # HTTP
///
/// A suggested mapping for a gateway that serves sessions over HTTP:
///
/// | codes | status | `Retry-After` |
/// |---|---|---|
/// | `timeout`, `busy`, `would_block` | `409 Conflict` (or `423 Locked` where clients know it) | yes: the holder's remaining lease, capped, or a short back-off |
/// | `revoked`, `fenced`, `takeover` | `409 Conflict` | no: the client's view of the session is out of date; it reloads it |
/// | `invalid_path` | `400 Bad Request` when the session name came from the request, else `500` | no |
/// | `stale`, `backend` | `503 Service Unavailable` | no (`stale` waits for an operator); for `backend`, a short one if the server is known to be restarting |
/// | `poisoned`, `io`, `invalid_entry`, `epoch_exhausted`, `misuse` | `500 Internal Server Error` | no |
/// | `cancelled` | the status of the abort that caused it (a client that went away gets none) | no |
///
/// The crate has no `http_status` method: the right status depends on the
/// gateway (409 or 423, whether the path came from the client, its retry
/// policy). A mapping is a few lines:
///
/// ```
/// use std::time::Duration;
/// use sessionlock::{Error, LockOptions, SessionLock};
///
/// /// The status and `Retry-After` (seconds) for a failed session operation.
/// fn http_status(e: &Error) -> (u16, Option<u64>) {
///     match e {
///         Error::Timeout { .. } | Error::Busy { .. } => {
///             // A live holder keeps the lock until its lease ends at most.
///             let left_ms = e
///                 .holder()
///                 .and_then(|h| Some(h.max_hold_ms?.saturating_sub(h.age_ms?)))
///                 .unwrap_or(1_000);
///             (409, Some(left_ms.div_ceil(1_000).clamp(1, 60)))
///         }
///         Error::Revoked { .. } | Error::Fenced { .. } | Error::Takeover { .. } => (409, None),
///         Error::InvalidPath { .. } => (400, None),
///         Error::Stale { .. } | Error::Backend { .. } => (503, None),
///         _ => (500, None),
///     }
/// }
///
/// # fn main() -> Result<(), Error> {
/// let dir = tempfile::tempdir().expect("tempdir");
/// let session = dir.path().join("abc.jsonl");
/// let locks = SessionLock::new();
/// let lease = LockOptions::default().max_hold(Duration::from_secs(30));
/// let _held = locks.acquire_with(&session, &lease)?;
///
/// let quick = LockOptions::default().timeout(Some(Duration::from_millis(10)));
/// let busy = locks.acquire_with(&session, &quick).unwrap_err();
/// let (status, retry_after) = http_status(&busy);
/// assert_eq!(status, 409);
/// assert!(matches!(retry_after, Some(1..=30)));
///
/// // A directory where the session's lock file belongs: the path is unusable.
/// let odd = dir.path().join("odd.jsonl");
/// std::fs::create_dir(dir.path().join("odd.jsonl.lock")).expect("mkdir");
/// let bad = locks.acquire_with(&odd, &quick).unwrap_err();
/// assert_eq!(http_status(&bad), (400, None));
/// # Ok(())
/// # }
/// ```
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
    /// way the attempt cannot accept
    /// ([design §7.2](crate::design#72-the-check)), or the attempt can no
    /// longer prove that it did not. The message keeps its shape
    /// ([design §8.6](crate::design#86-takeover-and-resync)); the typed
    /// [`reason`](TakeoverReason) says what was found.
    #[error("session file changed while prompt lock was released: {} (phase: {phase})", session.display())]
    Takeover {
        /// The session file.
        session: PathBuf,
        /// Where the takeover was detected.
        phase: TakeoverPhase,
        /// What was found.
        reason: TakeoverReason,
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
    /// A backend's server could not do what was asked (a database backend:
    /// the server is down or unreachable, refused the credentials, timed out
    /// a statement, holds a schema of a newer version, sits behind a proxy
    /// that drops session state). `target` names the server (host, port,
    /// database; never a password); the cause is the source.
    #[error("cannot {op} {target}")]
    Backend {
        /// What was being done (`connect to`, `acquire a lease on`, ...).
        op: &'static str,
        /// The server and what on it (`postgres 127.0.0.1:5432/app`, ...).
        target: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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

    /// A stable, machine-readable name of this error's kind, for programs
    /// and language bindings that branch on the kind without parsing the
    /// message: the variant's name in snake_case.
    ///
    /// | kind | code |
    /// |---|---|
    /// | [`Timeout`](Error::Timeout) | `timeout` |
    /// | [`Busy`](Error::Busy) | `busy` |
    /// | [`Stale`](Error::Stale) | `stale` |
    /// | [`Revoked`](Error::Revoked) | `revoked` |
    /// | [`Fenced`](Error::Fenced) | `fenced` |
    /// | [`Poisoned`](Error::Poisoned) | `poisoned` |
    /// | [`Takeover`](Error::Takeover) | `takeover` |
    /// | [`Cancelled`](Error::Cancelled) | `cancelled` |
    /// | [`Misuse`](Error::Misuse) | `misuse` |
    /// | [`InvalidEntry`](Error::InvalidEntry) | `invalid_entry` |
    /// | [`Io`](Error::Io) | `io` |
    /// | [`EpochExhausted`](Error::EpochExhausted) | `epoch_exhausted` |
    /// | [`InvalidPath`](Error::InvalidPath) | `invalid_path` |
    /// | [`Backend`](Error::Backend) | `backend` |
    ///
    /// A code never changes once released: a new kind of error gets a new
    /// code, and a kind that goes away takes its code with it, never handing
    /// it to another kind. Messages, by contrast, may be reworded.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Timeout { .. } => "timeout",
            Error::Busy { .. } => "busy",
            Error::Stale { .. } => "stale",
            Error::Revoked { .. } => "revoked",
            Error::Fenced { .. } => "fenced",
            Error::Poisoned { .. } => "poisoned",
            Error::Takeover { .. } => "takeover",
            Error::Cancelled { .. } => "cancelled",
            Error::Misuse { .. } => "misuse",
            Error::InvalidEntry { .. } => "invalid_entry",
            Error::Io { .. } => "io",
            Error::EpochExhausted { .. } => "epoch_exhausted",
            Error::InvalidPath { .. } => "invalid_path",
            Error::Backend { .. } => "backend",
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

    /// Whether trying the same call again later, unchanged, is the whole
    /// fix: someone else holds what it waited for (`Timeout`, `Busy`), and
    /// nothing was written or lost. `false` for every other kind, `Io` and
    /// `Backend` included: they can be transient, but they also report
    /// faults no wait cures. See [Handling errors](Error#handling-errors)
    /// for what to do instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sessionlock::{LockOptions, SessionLock};
    ///
    /// # fn main() -> Result<(), sessionlock::Error> {
    /// let dir = tempfile::tempdir().expect("tempdir");
    /// let session = dir.path().join("abc.jsonl");
    /// let locks = SessionLock::new();
    /// let opts = LockOptions::default().timeout(Some(Duration::from_millis(10)));
    /// let guard = locks.acquire_with(&session, &opts)?;
    ///
    /// let mut tries = 0;
    /// let err = loop {
    ///     tries += 1;
    ///     match locks.acquire_with(&session, &opts) {
    ///         Err(e) if e.is_retryable() && tries < 3 => continue, // back off here
    ///         other => break other.unwrap_err(),
    ///     }
    /// };
    /// assert_eq!((tries, err.code()), (3, "timeout"));
    /// guard.release()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_retryable(&self) -> bool {
        // No wildcard arm: a new kind does not compile until it is placed.
        match self {
            Error::Timeout { .. } | Error::Busy { .. } => true,
            Error::Stale { .. }
            | Error::Revoked { .. }
            | Error::Fenced { .. }
            | Error::Poisoned { .. }
            | Error::Takeover { .. }
            | Error::Cancelled { .. }
            | Error::Misuse { .. }
            | Error::InvalidEntry { .. }
            | Error::Io { .. }
            | Error::EpochExhausted { .. }
            | Error::InvalidPath { .. }
            | Error::Backend { .. } => false,
        }
    }
}

/// How a guard lost its lock ([`Error::Revoked`]).
///
/// Serialized as its [name](LossCause::as_str) (`overdue`, `removed`,
/// `replaced`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LossCause {
    /// The watchdog revoked it: it was held past `max_hold`.
    Overdue,
    /// Its lock file was removed by someone else (another program such as
    /// OpenClaw, or an operator) without going through sessionlock.
    Removed,
    /// Its lock file was replaced by a lock that is not this guard's.
    Replaced,
    /// A database backend lost the connection that proved this holder
    /// alive: others may take the lock over at once, so the guard stops
    /// writing.
    ConnectionLost,
}

impl LossCause {
    /// The stable name used in JSON (`overdue`, `removed`, `replaced`); the
    /// [`Display`](fmt::Display) form is the prose of messages.
    pub fn as_str(self) -> &'static str {
        match self {
            LossCause::Overdue => "overdue",
            LossCause::Removed => "removed",
            LossCause::Replaced => "replaced",
            LossCause::ConnectionLost => "connection_lost",
        }
    }
}

impl fmt::Display for LossCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossCause::Overdue => "held past its max hold",
            LossCause::Removed => "lock file removed by someone else",
            LossCause::Replaced => "lock file replaced by another lock",
            LossCause::ConnectionLost => "the holder's connection to the server was lost",
        })
    }
}

/// Where an attempt detected a takeover.
///
/// Displayed and serialized as its [name](TakeoverPhase::as_str)
/// (`prompt_reacquire`, `cleanup`, `write`, `dispose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

impl TakeoverPhase {
    /// The stable name used in messages and JSON (`prompt_reacquire`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TakeoverPhase::PromptReacquire => "prompt_reacquire",
            TakeoverPhase::Cleanup => "cleanup",
            TakeoverPhase::Write => "write",
            TakeoverPhase::Dispose => "dispose",
        }
    }
}

impl fmt::Display for TakeoverPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt was taken over ([`Error::Takeover`],
/// [`Attempt::takeover`](crate::attempt::Attempt::takeover)): what its check
/// of the transcript found, or why the check could not vouch for it.
///
/// [`Display`](fmt::Display) gives the prose of log lines and the CLI.
/// Serialized (serde) as an object whose `kind` is the reason's
/// [name](TakeoverReason::as_str) in snake_case, beside the variant's
/// fields: `{"kind": "changed", "change": {"kind": "foreign_entry",
/// "offset": 120}}`, `{"kind": "lock_lost", "error": "..."}`. Names never
/// change once released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TakeoverReason {
    /// The check against the fence found a change the attempt cannot
    /// accept: the store's [`Takeover`] kind.
    Changed {
        /// What changed.
        change: Takeover,
    },
    /// The transcript was changed under the attempt's held lock by a
    /// program that ignores the lock, found when the attempt released it.
    ChangedWhileHeld {
        /// What changed.
        change: Takeover,
    },
    /// No usable fence: it could not be taken or kept (the store's error),
    /// so nothing can be proven about the transcript.
    FenceUnavailable {
        /// The store's error.
        why: String,
    },
    /// The user's classifier panicked while judging the transcript: nothing
    /// can be proven about it.
    CheckPanicked,
    /// The transcript could not be checked against the fence.
    CheckFailed {
        /// The store's error.
        error: String,
        /// That error's [`Error::code`], for callers that branch on it.
        code: String,
    },
    /// A write was refused by the fence: the lock was lost while the
    /// attempt held it (revoked, removed, or reclaimed by another holder).
    LockLost {
        /// The refusal ([`Error::Fenced`] or [`Error::Revoked`]).
        error: String,
        /// That error's [`Error::code`], for callers that branch on it.
        code: String,
    },
    /// The lock could not be reacquired: the acquisition timed out or met a
    /// stale report ([design §8.2](crate::design#82-transitions)).
    LockUnavailable {
        /// The acquisition's error ([`Error::Timeout`] or [`Error::Stale`]).
        error: String,
        /// That error's [`Error::code`], for callers that branch on it.
        code: String,
    },
    /// An aborted attempt's cleanup did not get its session back from the
    /// attempts of this process that took it meanwhile, within its owner
    /// budget.
    SessionNotReturned {
        /// The wait's error ([`Error::Busy`]).
        error: String,
        /// That error's [`Error::code`], for callers that branch on it.
        code: String,
    },
    /// The attempt had no view of the transcript to check against (a broken
    /// invariant of the controller, never expected).
    Unverifiable {
        /// What was missing.
        why: String,
    },
}

impl TakeoverReason {
    /// The stable name of the reason's kind, as serialized (`changed`,
    /// `changed_while_held`, `fence_unavailable`, `check_panicked`,
    /// `check_failed`, `lock_lost`, `lock_unavailable`,
    /// `session_not_returned`, `unverifiable`).
    pub fn as_str(&self) -> &'static str {
        match self {
            TakeoverReason::Changed { .. } => "changed",
            TakeoverReason::ChangedWhileHeld { .. } => "changed_while_held",
            TakeoverReason::FenceUnavailable { .. } => "fence_unavailable",
            TakeoverReason::CheckPanicked => "check_panicked",
            TakeoverReason::CheckFailed { .. } => "check_failed",
            TakeoverReason::LockLost { .. } => "lock_lost",
            TakeoverReason::LockUnavailable { .. } => "lock_unavailable",
            TakeoverReason::SessionNotReturned { .. } => "session_not_returned",
            TakeoverReason::Unverifiable { .. } => "unverifiable",
        }
    }

    /// The store's kind of change, when the transcript was found changed.
    pub fn change(&self) -> Option<&Takeover> {
        match self {
            TakeoverReason::Changed { change } | TakeoverReason::ChangedWhileHeld { change } => {
                Some(change)
            }
            _ => None,
        }
    }
}

impl fmt::Display for TakeoverReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TakeoverReason::Changed { change } => write!(f, "{change}"),
            TakeoverReason::ChangedWhileHeld { change } => {
                write!(
                    f,
                    "fence unavailable (changed while the lock was held: {change})"
                )
            }
            TakeoverReason::FenceUnavailable { why } => write!(f, "fence unavailable ({why})"),
            TakeoverReason::CheckPanicked => {
                f.write_str("fence unavailable (the check of the transcript panicked)")
            }
            TakeoverReason::CheckFailed { error, .. } => {
                write!(f, "cannot check the fence: {error}")
            }
            TakeoverReason::LockLost { error, .. }
            | TakeoverReason::LockUnavailable { error, .. }
            | TakeoverReason::SessionNotReturned { error, .. } => f.write_str(error),
            TakeoverReason::Unverifiable { why } => f.write_str(why),
        }
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

impl TryAcquireError {
    /// A stable, machine-readable name of this outcome: `would_block` when
    /// someone holds the lock, else the failure's [`Error::code`]. Like
    /// those, it never changes once released.
    pub fn code(&self) -> &'static str {
        match self {
            TryAcquireError::WouldBlock(_) => "would_block",
            TryAcquireError::Failed(e) => e.code(),
        }
    }

    /// Whether trying again later is the whole fix: `true` for
    /// `WouldBlock`, else the failure's [`Error::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        match self {
            TryAcquireError::WouldBlock(_) => true,
            TryAcquireError::Failed(e) => e.is_retryable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use serde_json::json;

    use super::*;
    use crate::reason::Reason;

    fn holder() -> Box<Holder> {
        Box::new(Holder::state_lock(
            std::path::Path::new("/s/a.jsonl.epoch"),
            Some(7),
        ))
    }

    /// Every error kind once, with the code it must keep. Renaming a code,
    /// or adding a kind without one, fails here.
    fn code_table() -> Vec<(Error, &'static str)> {
        let path = || PathBuf::from("/s/a.jsonl");
        vec![
            (
                Error::Timeout {
                    timeout_ms: 1,
                    holder: holder(),
                },
                "timeout",
            ),
            (
                Error::Busy {
                    waiting_for: "the session",
                    timeout_ms: 1,
                    holder: holder(),
                },
                "busy",
            ),
            (
                Error::Stale {
                    reasons: Reasons::default(),
                    holder: holder(),
                },
                "stale",
            ),
            (
                Error::Revoked {
                    path: path(),
                    epoch: 1,
                    current_epoch: 2,
                    cause: LossCause::Overdue,
                },
                "revoked",
            ),
            (
                Error::Fenced {
                    path: path(),
                    epoch: 1,
                    current_epoch: 2,
                },
                "fenced",
            ),
            (Error::Poisoned { path: path() }, "poisoned"),
            (
                Error::Takeover {
                    session: path(),
                    phase: TakeoverPhase::Write,
                    reason: TakeoverReason::CheckPanicked,
                },
                "takeover",
            ),
            (
                Error::Cancelled {
                    what: String::new(),
                },
                "cancelled",
            ),
            (
                Error::Misuse {
                    what: String::new(),
                },
                "misuse",
            ),
            (
                Error::InvalidEntry {
                    path: path(),
                    offset: 0,
                    reason: String::new(),
                },
                "invalid_entry",
            ),
            (
                Error::io("read", path(), io::Error::from(io::ErrorKind::NotFound)),
                "io",
            ),
            (
                Error::EpochExhausted {
                    path: path(),
                    epoch: u64::MAX,
                },
                "epoch_exhausted",
            ),
            (
                Error::InvalidPath {
                    path: path(),
                    reason: String::new(),
                },
                "invalid_path",
            ),
            (
                Error::Backend {
                    op: "connect to",
                    target: "postgres 127.0.0.1:5432/app".to_owned(),
                    source: "refused".into(),
                },
                "backend",
            ),
        ]
    }

    /// The variant's position in [`code_table`]. No wildcard arm: a new
    /// variant does not compile until it is given a row there.
    fn row(e: &Error) -> usize {
        match e {
            Error::Timeout { .. } => 0,
            Error::Busy { .. } => 1,
            Error::Stale { .. } => 2,
            Error::Revoked { .. } => 3,
            Error::Fenced { .. } => 4,
            Error::Poisoned { .. } => 5,
            Error::Takeover { .. } => 6,
            Error::Cancelled { .. } => 7,
            Error::Misuse { .. } => 8,
            Error::InvalidEntry { .. } => 9,
            Error::Io { .. } => 10,
            Error::EpochExhausted { .. } => 11,
            Error::InvalidPath { .. } => 12,
            Error::Backend { .. } => 13,
        }
    }

    #[test]
    fn every_error_kind_has_its_pinned_code() {
        let table = code_table();
        for (i, (e, code)) in table.iter().enumerate() {
            assert_eq!(row(e), i, "{e:?} is out of place in the table");
            assert_eq!(e.code(), *code, "{e:?}");
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code} is not snake_case"
            );
        }
        // One row per arm of `row`.
        assert_eq!(table.len(), 14);
        let codes: std::collections::HashSet<_> = table.iter().map(|(_, c)| c).collect();
        assert_eq!(codes.len(), table.len(), "two kinds share a code");
    }

    /// Every error kind's answer to `is_retryable`, by code: only a wait
    /// for someone else's hold is retried as is. The table has a row per
    /// kind of [`code_table`], so a new kind fails here until it is placed.
    #[test]
    fn only_waits_for_a_holder_are_retryable() {
        let expected = [
            ("timeout", true),
            ("busy", true),
            ("stale", false),
            ("revoked", false),
            ("fenced", false),
            ("poisoned", false),
            ("takeover", false),
            ("cancelled", false),
            ("misuse", false),
            ("invalid_entry", false),
            ("io", false),
            ("epoch_exhausted", false),
            ("invalid_path", false),
            ("backend", false),
        ];
        let table = code_table();
        assert_eq!(table.len(), expected.len());
        for ((e, code), (want_code, retryable)) in table.into_iter().zip(expected) {
            assert_eq!(code, want_code);
            assert_eq!(e.is_retryable(), retryable, "{e:?}");
            assert_eq!(
                TryAcquireError::Failed(e).is_retryable(),
                retryable,
                "{code} wrapped by try_acquire"
            );
        }
        assert!(TryAcquireError::WouldBlock(holder()).is_retryable());
    }

    #[test]
    fn try_acquire_codes() {
        assert_eq!(TryAcquireError::WouldBlock(holder()).code(), "would_block");
        let failed = TryAcquireError::from(Error::Cancelled {
            what: String::new(),
        });
        assert_eq!(failed.code(), "cancelled");
    }

    fn full_holder() -> Holder {
        Holder {
            lock_path: PathBuf::from("/srv/s/abc.jsonl.lock"),
            pid: Some(4242),
            hostname: Some("box".to_owned()),
            alive: true,
            age_ms: Some(72_859),
            max_hold_ms: Some(300_000),
            epoch: Some(17),
            lane: Some("channel".to_owned()),
            run_id: Some("run-1".to_owned()),
            owner: Some("sessionlock".to_owned()),
            reasons: [Reason::HoldExceeded, Reason::DeadPid]
                .into_iter()
                .collect(),
            holds: None,
            stopped: false,
        }
    }

    #[test]
    fn holder_serializes_with_the_cli_json_field_names() {
        let v = serde_json::to_value(full_holder()).expect("serialize");
        assert_eq!(
            v,
            json!({
                "lockPath": "/srv/s/abc.jsonl.lock",
                "pid": 4242,
                "hostname": "box",
                "alive": true,
                "lane": "channel",
                "runId": "run-1",
                "ageMs": 72_859,
                "maxHoldMs": 300_000,
                "epoch": 17,
                "owner": "sessionlock",
                "reasons": ["dead-pid", "hold-exceeded"],
            })
        );
        // The CLI's order, so that its output can switch without a diff.
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "lockPath",
                "pid",
                "hostname",
                "alive",
                "lane",
                "runId",
                "ageMs",
                "maxHoldMs",
                "epoch",
                "owner",
                "reasons"
            ]
        );
        let back: Holder = serde_json::from_value(v).expect("deserialize");
        assert_eq!(back, full_holder());
    }

    #[test]
    fn holder_unknowns_serialize_as_null() {
        let h = Holder::state_lock(std::path::Path::new("/s/a.jsonl.epoch"), None);
        let v = serde_json::to_value(&h).expect("serialize");
        assert_eq!(
            v,
            json!({
                "lockPath": "/s/a.jsonl.epoch",
                "pid": null,
                "hostname": null,
                "alive": false,
                "lane": null,
                "runId": null,
                "ageMs": null,
                "maxHoldMs": null,
                "epoch": null,
                "owner": null,
                "reasons": [],
            })
        );
        assert_eq!(serde_json::from_value::<Holder>(v).expect("deserialize"), h);
    }

    #[test]
    fn a_process_in_the_way_says_what_it_holds_and_whether_it_is_stopped() {
        let path = std::path::Path::new("/x/s.jsonl.epoch");
        let h = Holder::holding(path, Some(4242), Holds::StateLock, true);
        assert_eq!(
            h.to_string(),
            "pid=4242 alive=true stopped /x/s.jsonl.epoch (holds the session's state lock)"
        );
        let e = Error::Timeout {
            timeout_ms: 1200,
            holder: Box::new(h.clone()),
        };
        assert_eq!(
            e.to_string(),
            "session file locked (timeout 1200ms): pid=4242 alive=true stopped /x/s.jsonl.epoch (holds the session's state lock)"
        );
        let v = serde_json::to_value(&h).expect("serialize");
        assert_eq!(v["holds"], "state-lock");
        assert_eq!(v["stopped"], true);
        assert_eq!(serde_json::from_value::<Holder>(v).expect("deserialize"), h);

        let w = Holder::holding(path, Some(7), Holds::FirstInLine, false);
        assert_eq!(
            w.to_string(),
            "pid=7 alive=true /x/s.jsonl.epoch (holds the first place in the session's line of waiters)"
        );
        let v = serde_json::to_value(&w).expect("serialize");
        assert_eq!(v["holds"], "first-in-line");
        assert!(v.get("stopped").is_none(), "{v}");
        assert_eq!(serde_json::from_value::<Holder>(v).expect("deserialize"), w);

        // The lock's own holder: the OpenClaw-like shape, nothing added.
        assert_eq!(
            Holder::state_lock(path, Some(4242)).to_string(),
            "pid=4242 alive=true /x/s.jsonl.epoch"
        );
        assert!(full_holder()
            .to_string()
            .starts_with("pid=4242 alive=true ageMs=72859 /srv/s/abc.jsonl.lock ("));
    }

    #[test]
    fn holder_path_that_is_not_utf8_keeps_its_bytes() {
        let mut h = full_holder();
        h.lock_path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/s/\xffx.jsonl.lock"));
        let v = serde_json::to_value(&h).expect("serialize");
        assert_eq!(v["lockPath"], "/s/\u{fffd}x.jsonl.lock");
        assert_eq!(v["lockPathHex"], "2f732fff782e6a736f6e6c2e6c6f636b");
        assert_eq!(
            serde_json::from_value::<Holder>(v.clone()).expect("deserialize"),
            h
        );
        let mut bad = v;
        bad["lockPathHex"] = json!("+f");
        assert!(serde_json::from_value::<Holder>(bad).is_err());
    }

    #[test]
    fn reasons_serialize_as_their_names() {
        for r in crate::reason::ALL_REASONS {
            assert_eq!(serde_json::to_value(r).expect("serialize"), r.as_str());
            let back: Reason = serde_json::from_value(json!(r.as_str())).expect("deserialize");
            assert_eq!(back, r);
        }
    }

    /// Every reason once: its name, its JSON and its text. The texts are
    /// those the attempt wrote into the flattened detail string before the
    /// reason was typed; the names never change once released.
    #[test]
    fn takeover_reasons_serialize_by_name_and_keep_their_text() {
        let s = |x: &str| x.to_owned();
        let table = [
            (
                TakeoverReason::Changed {
                    change: Takeover::ForeignEntry { offset: 120 },
                },
                json!({"kind": "changed", "change": {"kind": "foreign_entry", "offset": 120}}),
                "foreign entry appended at byte 120",
            ),
            (
                TakeoverReason::ChangedWhileHeld {
                    change: Takeover::Truncated,
                },
                json!({"kind": "changed_while_held", "change": {"kind": "truncated"}}),
                "fence unavailable (changed while the lock was held: truncated)",
            ),
            (
                TakeoverReason::FenceUnavailable {
                    why: s("disk gone"),
                },
                json!({"kind": "fence_unavailable", "why": "disk gone"}),
                "fence unavailable (disk gone)",
            ),
            (
                TakeoverReason::CheckPanicked,
                json!({"kind": "check_panicked"}),
                "fence unavailable (the check of the transcript panicked)",
            ),
            (
                TakeoverReason::CheckFailed {
                    error: s("eio"),
                    code: s("io"),
                },
                json!({"kind": "check_failed", "error": "eio", "code": "io"}),
                "cannot check the fence: eio",
            ),
            (
                TakeoverReason::LockLost {
                    error: s("revoked"),
                    code: s("revoked"),
                },
                json!({"kind": "lock_lost", "error": "revoked", "code": "revoked"}),
                "revoked",
            ),
            (
                TakeoverReason::LockUnavailable {
                    error: s("timeout"),
                    code: s("timeout"),
                },
                json!({"kind": "lock_unavailable", "error": "timeout", "code": "timeout"}),
                "timeout",
            ),
            (
                TakeoverReason::SessionNotReturned {
                    error: s("busy"),
                    code: s("busy"),
                },
                json!({"kind": "session_not_returned", "error": "busy", "code": "busy"}),
                "busy",
            ),
            (
                TakeoverReason::Unverifiable { why: s("no view") },
                json!({"kind": "unverifiable", "why": "no view"}),
                "no view",
            ),
        ];
        for (reason, value, text) in table {
            assert_eq!(serde_json::to_value(&reason).expect("serialize"), value);
            assert_eq!(value["kind"], reason.as_str());
            assert_eq!(
                serde_json::from_value::<TakeoverReason>(value).expect("deserialize"),
                reason
            );
            assert_eq!(reason.to_string(), text);
        }
        // The store's kinds by their names too.
        for (change, name) in [
            (Takeover::Truncated, "truncated"),
            (Takeover::Edited, "edited"),
            (Takeover::Replaced, "replaced"),
            (Takeover::Deleted, "deleted"),
            (Takeover::ForeignEntry { offset: 1 }, "foreign_entry"),
            (
                Takeover::IncompleteAppend { offset: 1 },
                "incomplete_append",
            ),
        ] {
            let v = serde_json::to_value(&change).expect("serialize");
            assert_eq!(v["kind"], name);
            assert_eq!(
                serde_json::from_value::<Takeover>(v).expect("deserialize"),
                change
            );
        }
        // The message (docs/design.md §8.6) does not change with the reason.
        let e = Error::Takeover {
            session: PathBuf::from("/s/a.jsonl"),
            phase: TakeoverPhase::Write,
            reason: TakeoverReason::CheckPanicked,
        };
        assert_eq!(
            e.to_string(),
            "session file changed while prompt lock was released: /s/a.jsonl (phase: write)"
        );
    }

    #[test]
    fn loss_causes_and_takeover_phases_serialize_as_their_names() {
        let causes = [
            (LossCause::Overdue, "overdue"),
            (LossCause::Removed, "removed"),
            (LossCause::Replaced, "replaced"),
        ];
        for (c, name) in causes {
            assert_eq!(c.as_str(), name);
            assert_eq!(serde_json::to_value(c).expect("serialize"), name);
            assert_eq!(
                serde_json::from_value::<LossCause>(json!(name)).expect("deserialize"),
                c
            );
        }
        let phases = [
            (TakeoverPhase::PromptReacquire, "prompt_reacquire"),
            (TakeoverPhase::Cleanup, "cleanup"),
            (TakeoverPhase::Write, "write"),
            (TakeoverPhase::Dispose, "dispose"),
        ];
        for (p, name) in phases {
            assert_eq!(p.as_str(), name);
            assert_eq!(p.to_string(), name);
            assert_eq!(serde_json::to_value(p).expect("serialize"), name);
            assert_eq!(
                serde_json::from_value::<TakeoverPhase>(json!(name)).expect("deserialize"),
                p
            );
        }
    }
}
