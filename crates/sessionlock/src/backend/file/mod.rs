//! The embedded file backend: locks as files beside the transcripts.
//!
//! Files per session `s.jsonl` (see `docs/design.md` for the full protocol and
//! its crash analysis):
//! - `s.jsonl.lock`: the lock, a one-line JSON payload, mode 0600 (0644 in
//!   OpenClaw-compatible mode), published
//!   whole: written to an unnamed `O_TMPFILE` file (or, where unsupported, a
//!   named `s.jsonl.lock.tmp-<token>`) and `link()`ed to the lock name, which
//!   fails if a lock exists.
//! - `s.jsonl.epoch`: the session's last epoch as one record of 20 decimal
//!   digits and `\n` (see [`crate::backend::file::epoch`]); empty, corrupt or longer than
//!   its record, it reads as a wall-clock floor above every earlier epoch,
//!   and the next write replaces it whole.
//!   An exclusive `flock` on it is the session's *state lock*: every publish,
//!   reclaim, release and revocation runs under it, and fenced writes run
//!   under its shared form, so a reclaim and a write of the old epoch can
//!   never interleave. It is held for a few system calls, never across user
//!   code other than a fenced write. Waiting for it is bounded (the acquire
//!   budget, or [`STATE_LOCK_BOUND`]): another program holding a `flock` on
//!   the file cannot wedge a session.
//! - `s.jsonl.lock.tomb-<token>`: a lock being removed; renamed away, checked,
//!   then unlinked (or restored if it turned out not to be the expected one).

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::unix::AsyncFd;

pub mod confine;
pub mod epoch;
pub mod fence;
pub mod fs;
pub mod fscheck;
pub mod transcript;

use crate::backend::{
    Inspection, LeaseInfo, LeaseRequest, LockBackend, Outcome, SessionId, StoreBackend,
};
use crate::error::{Error, LossCause, Result};
use crate::identity::{self, Liveness};
use crate::payload::{Malformed, Payload, MAX_PAYLOAD_BYTES, OWNER};
use crate::sync::lock;
use crate::sys::{self, DirWatch, FlockKind};
use fs::{Fs, RealFs};
use transcript::Transcript;

/// A session as the file backend names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// The canonical session file (spec §0): every path to one file gives the
    /// same value.
    pub session: PathBuf,
    /// The lock file, `<session>.lock`.
    pub lock_path: PathBuf,
}

impl SessionId for FileKey {
    fn session(&self) -> &OsStr {
        self.session.as_os_str()
    }

    fn locator(&self) -> &OsStr {
        self.lock_path.as_os_str()
    }
}

/// Which version of a lock file an inspection saw: device, inode, size and
/// times. Remove-if-unchanged removes a lock only if all of them still
/// match (the ctime aside, which the removal's own rename changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileVersion {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status change time in nanoseconds since the epoch.
    pub ctime_ns: i128,
}

impl FileVersion {
    /// The version a file's metadata describes.
    pub fn of(m: &std::fs::Metadata) -> FileVersion {
        FileVersion {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// A lock file as inspected.
pub type FileInspection = Inspection<FileVersion>;

/// Longest sleep of a waiter that has notifications: a safety net against a
/// missed event, not a polling interval.
const SAFETY_NET: Duration = Duration::from_secs(1);
/// Polling interval bounds where notifications are unavailable.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(100);

/// How long operations without a caller's budget (release, extend, fenced
/// writes, revocation) wait for the state lock before failing. sessionlock
/// itself holds it for a few system calls, or for one fenced write; only
/// another program holding a `flock` on the state file keeps it longer.
pub const STATE_LOCK_BOUND: Duration = Duration::from_secs(10);

/// How long a revocation waits for the state lock. The watchdog serves
/// every guard of the process (each revocation runs on a thread of its own,
/// but a revocation is due at its lease end): a foreign `flock` on one
/// session's state file must not hold it up for long. A revocation that gives up still marks its guard revoked;
/// the lock stays published and other processes reclaim it as
/// hold-exceeded, which fences the guard just the same.
pub const REVOKE_BOUND: Duration = Duration::from_secs(1);

/// The longest session file name the file backend accepts: its longest side
/// file name (`<name>.lock.tomb-<32 hex>`, 43 bytes more) must fit the
/// 255-byte `NAME_MAX` of Linux file systems.
pub const MAX_SESSION_NAME: usize = 255 - LONGEST_SIDE_SUFFIX;

/// `.lock.tomb-` and a 32-character token: the longest suffix any side file
/// adds to the session file name. The others: `.lock` (5), `.lock.tmp-<32>`
/// (42), `.epoch` (6), `.rewrite-<epoch>` (at most 29) and
/// `.torn-<epoch>[-<n>]` (at most 29).
const LONGEST_SIDE_SUFFIX: usize = ".lock.tomb-".len() + 32;

/// Polling bounds while another process holds the state lock: `flock` has no
/// notification, so a contender retries without blocking, from a few
/// microseconds (sessionlock holds the lock for that long) doubling up to
/// 2 ms, never past its budget. The cap bounds how late a contender notices
/// a release (a blocking `flock` would wake at once; a hand-off must not pay
/// for the bound); a foreign holder that keeps the lock costs 500 cheap
/// non-blocking retries a second.
const STATE_POLL_MIN: Duration = Duration::from_micros(20);
const STATE_POLL_MAX: Duration = Duration::from_millis(2);

/// How long a contender retries the state lock yielding the CPU instead of
/// sleeping, before the backoff above. sessionlock holds the lock for a few
/// system calls (tens of microseconds); a sleep, however short, costs the
/// kernel's timer slack (50 µs by default) on top, which made every
/// cross-process hand-off (the waiter wakes on the releaser's rename, while
/// the releaser still holds the state lock) pay a quarter of a millisecond.
const STATE_SPIN: Duration = Duration::from_micros(200);

/// How waiters learn that a lock changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Notify {
    /// inotify and pidfd where the file system supports them, else polling.
    #[default]
    Auto,
    /// Always poll (backoff from 5 ms, capped at 100 ms).
    Poll,
}

/// Locks and transcripts as files (the default backend).
#[derive(Clone)]
pub struct FileBackend {
    notify: Notify,
    fs: Arc<dyn Fs>,
    /// The sessions root, canonical: sessions resolving outside it are refused.
    root: Option<PathBuf>,
}

impl std::fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBackend")
            .field("notify", &self.notify)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Default for FileBackend {
    fn default() -> Self {
        FileBackend {
            notify: Notify::Auto,
            fs: Arc::new(RealFs),
            root: None,
        }
    }
}

impl FileBackend {
    /// A file backend with the given notification mode.
    pub fn new(notify: Notify) -> Self {
        FileBackend {
            notify,
            ..FileBackend::default()
        }
    }

    /// The same backend with transcript I/O going through `fs` (the
    /// fault-injection seam).
    pub fn with_fs(mut self, fs: Arc<dyn Fs>) -> Self {
        self.fs = fs;
        self
    }

    /// The same backend confined to the sessions root `root`: a session
    /// path that resolves (through symlinks, spec §0) outside it is refused
    /// with `InvalidPath` before any file or directory is created, so a
    /// symlink planted among the sessions cannot lead a writer to create
    /// lock, epoch or torn-tail files beside another file, or cut its tail.
    ///
    /// # Errors
    /// `Io` when `root` cannot be resolved (it must exist).
    pub fn confined(mut self, root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let canonical =
            std::fs::canonicalize(root).map_err(|e| Error::io("resolve sessions root", root, e))?;
        self.root = Some(canonical);
        Ok(self)
    }

    /// Opens (creating if needed) the transcript of `session`, resolved as
    /// its lock's key is, through this backend's file system: the blocking
    /// twin of [`StoreBackend::open_store`].
    ///
    /// # Errors
    /// As [`LockBackend::key`]; `Io`, `InvalidPath` when the transcript
    /// cannot be opened.
    pub fn open_transcript(&self, session: impl AsRef<Path>) -> Result<Transcript> {
        let key = self.key(session.as_ref())?;
        Transcript::open_canonical(key.session, self.fs.clone())
    }

    /// The sessions root this backend is confined to, if any (canonical).
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The epoch (state) file of a session.
    pub fn epoch_path(key: &FileKey) -> PathBuf {
        with_suffix(&key.session, ".epoch")
    }
}

/// A lease published by the file backend.
#[derive(Debug)]
pub struct FileLease {
    key: FileKey,
    /// What a republish changes. Operations on one lease are serialized by
    /// its guard (the watchdog's revocation aside, which only reads), so
    /// this is taken briefly, never across a wait.
    cur: std::sync::Mutex<Published>,
    /// The session's state file, kept open for fenced writes.
    state: File,
}

#[derive(Debug)]
struct Published {
    payload: Payload,
    epoch: u64,
    /// Our lock file, kept open (never read): while it is open its inode
    /// number cannot be reused, so "the lock path has our inode" proves the
    /// lock is ours.
    #[allow(dead_code)]
    lock: File,
    ino: (u64, u64),
}

impl FileLease {
    /// The session.
    pub fn key(&self) -> &FileKey {
        &self.key
    }

    /// This lease's epoch and lock inode, as of now.
    fn epoch_ino(&self) -> (u64, (u64, u64)) {
        let cur = lock(&self.cur);
        (cur.epoch, cur.ino)
    }

    /// This lease's token, for naming side files.
    fn token(&self) -> Option<String> {
        lock(&self.cur).payload.token.clone()
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn sibling(key: &FileKey, kind: &str, token: &str) -> PathBuf {
    with_suffix(&key.lock_path, &format!(".{kind}-{token}"))
}

/// A token for one acquisition: 128 random bits from the kernel, as 32 hex
/// characters (spec §2.2). Tokens name temporary and tombstone files and
/// tell acquisitions apart. Should the kernel refuse randomness (no
/// `getrandom`), pid, clock and a counter keep tokens unique, which is all
/// their uses need.
fn new_token() -> String {
    let bytes = sys::random_bytes().unwrap_or_else(|e| {
        static WARNED: OnceLock<()> = OnceLock::new();
        WARNED.get_or_init(|| tracing::warn!(error = %e, "no kernel randomness; tokens fall back to pid, clock and a counter"));
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let hi = (u64::from(sys::pid()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
        let lo = sys::monotonic_ns();
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&hi.to_be_bytes());
        b[8..].copy_from_slice(&lo.to_be_bytes());
        b
    });
    let mut out = String::with_capacity(32);
    for b in bytes {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn lstat(path: &Path) -> Result<Option<std::fs::Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

fn not_regular(path: &Path, m: &std::fs::Metadata) -> Error {
    let ft = m.file_type();
    let what = if ft.is_symlink() {
        "is a symbolic link (locks are never followed through links; remove it)"
    } else if ft.is_dir() {
        "is a directory, not a lock file (remove it)"
    } else {
        "is not a regular file (remove it)"
    };
    Error::InvalidPath {
        path: path.to_owned(),
        reason: what.into(),
    }
}

/// Canonical session path (spec §0): the directory resolved through
/// symlinks, and the file itself resolved where it is a symlink. Creates the
/// directory if missing (only inside `root`, when given). A symlink someone
/// untrusted may have planted is not followed (see `confine`).
fn canonical_session(path: &Path, root: Option<&Path>, create: bool) -> Result<Option<PathBuf>> {
    let mut cur = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("resolve current directory for", path, e))?
            .join(path)
    };
    for _ in 0..40 {
        let (Some(parent), Some(name)) = (cur.parent(), cur.file_name()) else {
            return Err(Error::InvalidPath {
                path: path.to_owned(),
                reason: "has no file name".into(),
            });
        };
        let dir = match std::fs::canonicalize(parent) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                if let Some(root) = root {
                    confine::check_creatable(root, parent, path)?;
                }
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io("create directory", parent, e))?;
                std::fs::canonicalize(parent)
                    .map_err(|e| Error::io("resolve directory", parent, e))?
            }
            Err(e) => return Err(Error::io("resolve directory", parent, e)),
        };
        let candidate = dir.join(name);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                confine::may_follow(&dir, &candidate, &m)?;
                let target = std::fs::read_link(&candidate)
                    .map_err(|e| Error::io("read symlink", &candidate, e))?;
                cur = dir.join(target);
            }
            _ => return Ok(Some(candidate)),
        }
    }
    Err(Error::InvalidPath {
        path: path.to_owned(),
        reason: "too many levels of symbolic links".into(),
    })
}

/// The session's state file with a `flock` held; unlocks on drop.
struct StateLock<'a> {
    file: &'a File,
}

impl Drop for StateLock<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would drop the lock too; failing to unlock an
        // open descriptor is not something a caller could act on.
        let _ = sys::funlock(self.file);
    }
}

fn open_state(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(sys::NOFOLLOW_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if sys::is_symlink_error(&e) {
                Error::InvalidPath {
                    path: path.to_owned(),
                    reason: "is a symbolic link (remove it)".into(),
                }
            } else {
                Error::io("open epoch file", path, e)
            }
        })?;
    let m = file
        .metadata()
        .map_err(|e| Error::io("stat epoch file", path, e))?;
    if !m.is_file() {
        return Err(not_regular(path, &m));
    }
    // sessionlock rewrites the state file in place and never links it
    // elsewhere: a second link means the name may denote another file (a
    // hard link planted to make a privileged writer overwrite it).
    if m.nlink() > 1 {
        return Err(Error::InvalidPath {
            path: path.to_owned(),
            reason: format!(
                "has {} hard links; sessionlock rewrites its state file in place and never links it, so this may be another file linked here (remove this name once no process uses the session)",
                m.nlink()
            ),
        });
    }
    Ok(file)
}

/// Creates the session's state file if it does not exist: `None` when it
/// does (then open it with [`open_state`]).
fn create_state(path: &Path) -> Result<Option<File>> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(sys::NOFOLLOW_NONBLOCK)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(Error::io("create epoch file", path, e)),
    }
}

/// Takes the state lock on `file`, which was opened from `path`, waiting
/// at most until `deadline` (`None`: as long as it takes). If the file was
/// deleted meanwhile (its link count is zero), the lock on the old inode
/// means nothing: reopen and retry.
///
/// `flock` gives no notification of its release, so a busy lock is polled
/// without blocking, with a short backoff (see `STATE_POLL_MIN`). On
/// timeout the error names the processes holding the lock, as the kernel
/// lists them.
fn lock_state<'a>(
    path: &Path,
    file: &'a mut File,
    kind: FlockKind,
    deadline: Option<Instant>,
) -> Result<StateLock<'a>> {
    let started = Instant::now();
    // Free, or held for microseconds by another sessionlock process: spin.
    loop {
        if try_lock_state(path, file, kind)? {
            return Ok(StateLock { file });
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(state_busy(path, file, started.elapsed()));
        }
        if started.elapsed() >= STATE_SPIN {
            break;
        }
        std::thread::yield_now();
    }
    // Held longer: wait with backoff, off an async runtime's worker threads.
    crate::blocking::offload(|| wait_state(path, file, kind, deadline, started))?;
    Ok(StateLock { file })
}

/// One try at the state lock: whether we got it (on a state file that is
/// still linked: a file removed meanwhile is reopened and tried again).
fn try_lock_state(path: &Path, file: &mut File, kind: FlockKind) -> Result<bool> {
    loop {
        if !sys::try_flock(file, kind).map_err(|e| Error::io("lock epoch file", path, e))? {
            return Ok(false);
        }
        let held = file
            .metadata()
            .map_err(|e| Error::io("stat epoch file", path, e))?;
        if held.nlink() > 0 {
            return Ok(true);
        }
        let _ = sys::funlock(file);
        *file = open_state(path)?;
    }
}

/// Polls for the state lock with backoff until `deadline`.
fn wait_state(
    path: &Path,
    file: &mut File,
    kind: FlockKind,
    deadline: Option<Instant>,
    started: Instant,
) -> Result<()> {
    let mut backoff = STATE_POLL_MIN;
    loop {
        if try_lock_state(path, file, kind)? {
            return Ok(());
        }
        let now = Instant::now();
        let Some(left) = deadline.map_or(Some(backoff), |d| d.checked_duration_since(now)) else {
            return Err(state_busy(path, file, started.elapsed()));
        };
        if left.is_zero() {
            return Err(state_busy(path, file, started.elapsed()));
        }
        std::thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(STATE_POLL_MAX);
    }
}

/// The deadline for an operation without a caller's budget.
fn bounded() -> Option<Instant> {
    Some(Instant::now() + STATE_LOCK_BOUND)
}

/// The timeout error for a state lock someone else kept: names the first
/// process the kernel lists as holding it (`/proc/locks`), if any.
fn state_busy(path: &Path, file: &File, waited: Duration) -> Error {
    let holders = file
        .metadata()
        .map(|m| sys::flock_holders(m.dev(), m.ino()))
        .unwrap_or_default();
    let me = sys::pid();
    let pid = holders
        .iter()
        .copied()
        .find(|&p| p != me)
        .or(holders.first().copied());
    tracing::debug!(path = %path.display(), holders = ?holders, "session state file locked by another process");
    Error::Timeout {
        timeout_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
        holder: Box::new(crate::error::Holder::state_lock(path, pid)),
    }
}

/// Reads the session's last epoch as recorded: `Err(n)` with the number of
/// bytes read (at most one more than a record) when the state file is empty
/// (new, or deleted and recreated: `n` is 0) or holds anything but one
/// record (corrupt, or longer than its record).
fn read_record(path: &Path, file: &File) -> Result<Result<u64, usize>> {
    // One byte more than a record: a longer file is not a record.
    let mut buf = [0u8; epoch::RECORD_LEN + 1];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read epoch file", path, e)),
        }
    }
    Ok(epoch::parse(&buf[..n]).ok_or(n))
}

/// Reads the session's last epoch.
///
/// An empty file or an invalid one cannot say which epochs were used before;
/// restarting low could hand a fenced-out holder's epoch to a new holder and
/// let its stale write land. Such a file yields a floor above every
/// counter-based epoch ever issued: the wall clock in microseconds. Epochs
/// stay strictly increasing either way, and the next write replaces the
/// invalid content.
fn read_epoch(path: &Path, file: &File) -> Result<u64> {
    Ok(read_record(path, file)?.unwrap_or_else(|n| {
        if n > 0 {
            tracing::warn!(path = %path.display(), "invalid epoch file; continuing above every earlier epoch");
        }
        epoch_floor()
    }))
}

/// Microseconds since 1970: larger than any epoch a counter started at 1
/// could have reached.
fn epoch_floor() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
}

/// The epoch after `current`, or a refusal when there is none.
fn next_epoch(path: &Path, current: u64) -> Result<u64> {
    current.checked_add(1).ok_or_else(|| Error::EpochExhausted {
        path: path.to_owned(),
        epoch: current,
    })
}

/// Replaces the state file's whole content with the record of `epoch`.
///
/// Crash analysis: the record is written first, at offset 0, then the file
/// is cut to the record's length. A crash between the two leaves the new
/// record followed by what was there before, which [`epoch::parse`]
/// rejects: it reads as the wall-clock floor, above every epoch, never as a
/// lower one. (Cutting first would leave a window in which a longer old
/// file's first bytes, a possibly lower record, read as valid.) The record
/// has a fixed width, so it always covers an earlier record completely, and
/// a file no longer than a record needs no cut (an `fstat` tells, for a
/// fraction of an `ftruncate`'s cost, which also touches the file's times).
fn write_epoch(path: &Path, file: &File, epoch: u64) -> Result<()> {
    file.write_all_at(&epoch::format(epoch), 0)
        .map_err(|e| Error::io("write epoch file", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat epoch file", path, e))?
        .len();
    if len > epoch::RECORD_LEN as u64 {
        file.set_len(epoch::RECORD_LEN as u64)
            .map_err(|e| Error::io("truncate epoch file", path, e))?;
    }
    Ok(())
}

fn build_payload(req: &LeaseRequest, epoch: u64, token: String) -> Payload {
    Payload {
        pid: Some(req.me.pid),
        created_at: Some(SystemTime::now()),
        max_hold_ms: Some(
            u64::try_from(req.max_hold.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        ),
        starttime: req.me.starttime,
        owner: Some(OWNER.to_owned()),
        token: Some(token),
        epoch: Some(epoch),
        hostname: Some(req.me.hostname.clone()),
        boot_id: req.me.boot_id.clone(),
        lane: req.lane.clone(),
        run_id: req.run_id.clone(),
    }
}

/// Writes a payload to a new private file and links it to the lock name,
/// which fails with `AlreadyExists` if a lock exists. The file has no name
/// before the link (`O_TMPFILE`) where the file system allows; elsewhere it
/// is a named temporary file, removed after the link.
fn publish_file(
    key: &FileKey,
    req: &LeaseRequest,
    payload: &Payload,
    token: &str,
) -> Result<(File, io::Result<()>)> {
    let dir = key.lock_path.parent().unwrap_or(Path::new("/"));
    if let Ok(mut f) = sys::open_tmpfile(dir) {
        share_with_openclaw(&f, req, dir)?;
        f.write_all(&payload.to_bytes())
            .map_err(|e| Error::io("write lock file in", dir, e))?;
        match sys::link_tmpfile(&f, &key.lock_path) {
            // No /proc: fall through to a named file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            linked => return Ok((f, linked)),
        }
    }
    let (tmp, f) = write_temp(key, req, payload, token)?;
    let linked = std::fs::hard_link(&tmp, &key.lock_path);
    let _ = std::fs::remove_file(&tmp);
    Ok((f, linked))
}

/// In OpenClaw-compatible mode, makes a new lock file readable by everyone
/// (0644, whatever the umask): OpenClaw takes a lock it cannot read for one
/// without a payload, and deletes it after a few seconds.
fn share_with_openclaw(f: &File, req: &LeaseRequest, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !req.openclaw_compat {
        return Ok(());
    }
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("make lock file readable in", path, e))
}

/// Writes a payload to a fresh private file beside the lock (readable by
/// OpenClaw in compatible mode).
fn write_temp(
    key: &FileKey,
    req: &LeaseRequest,
    payload: &Payload,
    token: &str,
) -> Result<(PathBuf, File)> {
    let tmp = sibling(key, "tmp", token);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(sys::NOFOLLOW)
        .open(&tmp)
        .map_err(|e| Error::io("create temporary lock file", &tmp, e))?;
    if let Err(e) = share_with_openclaw(&f, req, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = f.write_all(&payload.to_bytes()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write temporary lock file", &tmp, e));
    }
    Ok((tmp, f))
}

/// Duplicates a descriptor (same open file description, so the same `flock`).
/// All operations on one lease are serialized by its guard, so a lease never
/// takes the state lock twice at once through two duplicates.
fn dup(path: &Path, f: &File) -> Result<File> {
    f.try_clone()
        .map_err(|e| Error::io("duplicate descriptor of", path, e))
}

/// Whether the lock name no longer denotes the lock `ino` we published, and
/// how: removed, or replaced by another file.
fn lost_lock(key: &FileKey, ino: (u64, u64)) -> Result<Option<LossCause>> {
    Ok(match lstat(&key.lock_path)? {
        Some(m) if (m.dev(), m.ino()) == ino => None,
        Some(_) => Some(LossCause::Replaced),
        None => Some(LossCause::Removed),
    })
}

/// Puts the new payload `tmp` in place of our lock `ino` at `lock_path`,
/// never overwriting a lock that is not ours. With `RENAME_EXCHANGE` the two
/// names swap atomically and what comes out must be our old lock; if a
/// foreign writer (which does not take the state lock) replaced it since our
/// check, the swap is undone and `tmp` removed. Returns how the lock was
/// lost, if it was. Where the file system cannot exchange, a plain rename
/// (the window between the caller's check and the rename stays open there).
fn swap_in(lock_path: &Path, tmp: &Path, ino: (u64, u64)) -> Result<Option<LossCause>> {
    let fail = |e: io::Error| {
        let _ = std::fs::remove_file(tmp);
        Error::io("republish lock file", lock_path, e)
    };
    match sys::exchange(tmp, lock_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let _ = std::fs::remove_file(tmp);
            return Ok(Some(LossCause::Removed));
        }
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            return std::fs::rename(tmp, lock_path).map(|()| None).map_err(fail);
        }
        Err(e) => return Err(fail(e)),
    }
    // `tmp` now names what was at the lock path.
    let out = lstat(tmp)?;
    if out.as_ref().is_some_and(|m| (m.dev(), m.ino()) == ino) {
        let _ = std::fs::remove_file(tmp);
        return Ok(None);
    }
    // A foreign lock: give it its name back, then drop our new payload.
    if let Err(e) = sys::exchange(tmp, lock_path) {
        tracing::warn!(
            lock = %lock_path.display(),
            aside = %tmp.display(),
            error = %e,
            "a foreign lock replaced ours during extension and could not be put back; left aside for `sessionlock doctor`"
        );
        return Ok(Some(LossCause::Replaced));
    }
    let _ = std::fs::remove_file(tmp);
    Ok(Some(LossCause::Replaced))
}

/// When a lock file was last written, as far as its times can tell: its
/// mtime, but never later than its ctime. Anyone who can write the file can
/// set its mtime to any value (`touch -d 2400-01-01`), which would put off a
/// payload grace or a lease for centuries; the ctime is set by the kernel
/// to the time of that very change and cannot be chosen.
fn written_at(meta: &std::fs::Metadata) -> SystemTime {
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let ctime = u64::try_from(meta.ctime())
        .ok()
        .and_then(|s| {
            let nanos = u32::try_from(meta.ctime_nsec()).unwrap_or(0);
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(s, nanos))
        })
        .unwrap_or(mtime);
    mtime.min(ctime)
}

fn ino_of(path: &Path, f: &File) -> Result<(u64, u64)> {
    let m = f.metadata().map_err(|e| Error::io("stat", path, e))?;
    Ok((m.dev(), m.ino()))
}

impl FileBackend {
    /// Publishes a lease with epoch `floor + 1`. Must run under the state lock.
    fn publish(
        &self,
        key: &FileKey,
        state: File,
        floor: u64,
        req: &LeaseRequest,
    ) -> Result<Outcome<FileLease, FileVersion>> {
        let epoch_path = Self::epoch_path(key);
        // Every sessionlock publisher holds the state lock, so a lock that is
        // absent now stays absent until our link (only a foreign writer could
        // race us). Checking first matters: bumping the epoch while someone
        // holds the lock would fence that rightful holder.
        if lstat(&key.lock_path)?.is_some() {
            return Ok(self
                .inspect_now(key)?
                .map_or(Outcome::Changed, |i| Outcome::Busy(Box::new(i))));
        }
        let epoch = next_epoch(&epoch_path, floor)?;
        // The epoch is persisted before the lock appears: a crash between the
        // two burns an epoch number but can never reuse one.
        write_epoch(&epoch_path, &state, epoch)?;
        let token = new_token();
        let payload = build_payload(req, epoch, token.clone());
        let (lock, linked) = publish_file(key, req, &payload, &token)?;
        match linked {
            Ok(()) => {
                let ino = ino_of(&key.lock_path, &lock)?;
                Ok(Outcome::Acquired(FileLease {
                    key: key.clone(),
                    cur: std::sync::Mutex::new(Published {
                        payload,
                        epoch,
                        lock,
                        ino,
                    }),
                    state,
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(self
                .inspect_now(key)?
                .map_or(Outcome::Changed, |i| Outcome::Busy(Box::new(i)))),
            Err(e) => Err(Error::io("publish lock file", &key.lock_path, e)),
        }
    }

    /// Moves the lock at `key` away and deletes it, but only if it is the
    /// inode `ino`; restores it (never replacing anything) otherwise. Runs
    /// under the state lock. Returns whether it removed the lock.
    fn remove_if(
        &self,
        key: &FileKey,
        is_expected: impl Fn(&std::fs::Metadata) -> bool,
        token: &str,
    ) -> Result<bool> {
        match lstat(&key.lock_path)? {
            Some(m) if is_expected(&m) => {}
            _ => return Ok(false),
        }
        let tomb = sibling(key, "tomb", token);
        match std::fs::rename(&key.lock_path, &tomb) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("move lock file aside", &key.lock_path, e)),
        }
        let moved = lstat(&tomb)?;
        if moved.as_ref().is_some_and(&is_expected) {
            std::fs::remove_file(&tomb).map_err(|e| Error::io("remove lock file", &tomb, e))?;
            return Ok(true);
        }
        // A foreign writer replaced the lock between our check and our rename:
        // put theirs back, without replacing a lock that appeared since.
        match std::fs::hard_link(&tomb, &key.lock_path) {
            Ok(()) => {
                let _ = std::fs::remove_file(&tomb);
            }
            Err(e) => tracing::warn!(
                tomb = %tomb.display(),
                error = %e,
                "a foreign lock replaced ours during release and could not be restored; left aside for `sessionlock doctor`"
            ),
        }
        Ok(false)
    }

    /// Remove-if-unchanged of an inspected lock, under the state lock.
    /// Returns the epoch floor to continue from (the state file's epoch, or
    /// the floor of an invalid one, or the removed lock's, whichever is
    /// higher) and whether the state file's record already says so, or
    /// `None` if the lock is no longer the inspected one.
    fn remove_seen(
        &self,
        key: &FileKey,
        seen: &FileInspection,
        path: &Path,
        state: &File,
    ) -> Result<Option<(u64, bool)>> {
        if !self.remove_unchanged(key, seen)? {
            return Ok(None);
        }
        // The removed lock may carry an epoch the state file never saw (a
        // crash between the two, or a deleted state file): never go below it.
        let removed_epoch = seen
            .payload
            .as_ref()
            .ok()
            .and_then(|p| p.epoch)
            .unwrap_or(0);
        let recorded = read_record(path, state)?.ok();
        let floor = recorded.unwrap_or_else(epoch_floor).max(removed_epoch);
        Ok(Some((floor, recorded == Some(floor))))
    }

    /// Removes the lock `seen` if it is still exactly that version.
    fn remove_unchanged(&self, key: &FileKey, seen: &FileInspection) -> Result<bool> {
        match lstat(&key.lock_path)? {
            Some(m) if FileVersion::of(&m) == seen.version => {}
            Some(m) if !m.is_file() => return Err(not_regular(&key.lock_path, &m)),
            _ => return Ok(false),
        }
        // After the rename the ctime differs; everything else must not.
        let same_version = |m: &std::fs::Metadata| {
            let st = FileVersion::of(m);
            (st.dev, st.ino, st.size, st.mtime_ns)
                == (
                    seen.version.dev,
                    seen.version.ino,
                    seen.version.size,
                    seen.version.mtime_ns,
                )
        };
        self.remove_if(key, same_version, &new_token())
    }

    /// Rewrites the session's state file if it holds anything but one epoch
    /// record (what `doctor --fix` does with an invalid one), under the
    /// state lock taken by `deadline`. The new record is above every epoch
    /// the file can have stood for (the wall-clock floor an invalid file
    /// reads as) and every epoch the current lock, if any, carries: the epoch
    /// never goes down. Returns the epoch written, or `None` when the file
    /// is empty or valid (nothing to do).
    ///
    /// # Errors
    /// `Timeout` naming the process that kept the state lock past
    /// `deadline`; `InvalidPath` for a symlink or non-regular state file;
    /// `Io`.
    pub(crate) fn rewrite_invalid_state(
        &self,
        key: &FileKey,
        deadline: Option<Instant>,
    ) -> Result<Option<u64>> {
        let path = Self::epoch_path(key);
        // Never create it: a state file that is gone needs no repair.
        if lstat(&path)?.is_none() {
            return Ok(None);
        }
        let mut state = open_state(&path)?;
        let g = lock_state(&path, &mut state, FlockKind::Exclusive, deadline)?;
        let len = g
            .file
            .metadata()
            .map_err(|e| Error::io("stat epoch file", &path, e))?
            .len();
        if len == 0 || read_record(&path, g.file)?.is_ok() {
            return Ok(None);
        }
        let published = match self.inspect_now(key) {
            Ok(Some(seen)) => seen.payload.ok().and_then(|p| p.epoch).unwrap_or(0),
            _ => 0,
        };
        let epoch = epoch_floor().max(published);
        write_epoch(&path, g.file, epoch)?;
        Ok(Some(epoch))
    }

    /// Reads the lock file, with the local evidence about its holder.
    pub(crate) fn inspect_now(&self, key: &FileKey) -> Result<Option<FileInspection>> {
        let path = &key.lock_path;
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(sys::NOFOLLOW_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if sys::is_symlink_error(&e) => {
                return Err(Error::InvalidPath {
                    path: path.clone(),
                    reason:
                        "is a symbolic link (locks are never followed through links; remove it)"
                            .into(),
                })
            }
            Err(e) => return Err(Error::io("open lock file", path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("stat lock file", path, e))?;
        if !meta.is_file() {
            return Err(not_regular(path, &meta));
        }
        let mut bytes = Vec::new();
        (&file)
            .take(MAX_PAYLOAD_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("read lock file", path, e))?;
        let payload = if bytes.len() > MAX_PAYLOAD_BYTES {
            Err(Malformed::TooLarge)
        } else {
            Payload::parse(&bytes)
        };
        let (liveness, ours) = match &payload {
            Ok(p) => identity::judge(p, identity::me()),
            Err(_) => (Liveness::Unknown, false),
        };
        Ok(Some(Inspection {
            payload,
            written: written_at(&meta),
            observed: SystemTime::now(),
            liveness,
            ours,
            version: FileVersion::of(&meta),
        }))
    }

    /// The key of `session`, resolved as [`LockBackend::key`] does; with
    /// `create`, creating its directory, else `None` when that is missing.
    fn key_of(&self, session: &Path, create: bool) -> Result<Option<FileKey>> {
        let given = session;
        let Some(session) = canonical_session(session, self.root.as_deref(), create)? else {
            return Ok(None);
        };
        if let Some(root) = &self.root {
            confine::check_inside(root, &session, given)?;
        }
        let name_len = session.file_name().map_or(0, |n| n.len());
        if name_len > MAX_SESSION_NAME {
            return Err(Error::InvalidPath {
                path: session,
                reason: format!(
                    "file name is {name_len} bytes, longer than the {MAX_SESSION_NAME} bytes sessionlock accepts (its lock's side files add up to {LONGEST_SIDE_SUFFIX} bytes and must fit the 255-byte file name limit)"
                ),
            });
        }
        let lock_path = with_suffix(&session, ".lock");
        Ok(Some(FileKey { session, lock_path }))
    }

    /// The key of `session` as [`LockBackend::key`] resolves it (through
    /// symlinked directories and a symlinked file name), but creating
    /// nothing: `None` when its directory does not exist. What diagnostics
    /// use, so that they inspect the very lock acquirers take.
    ///
    /// # Errors
    /// As [`LockBackend::key`].
    pub fn resolve(&self, session: &Path) -> Result<Option<FileKey>> {
        self.key_of(session, false)
    }

    fn state_for(&self, key: &FileKey) -> Result<(PathBuf, File)> {
        let path = Self::epoch_path(key);
        let file = open_state(&path)?;
        Ok((path, file))
    }
}

impl LockBackend for FileBackend {
    type Name = Path;
    type Key = FileKey;
    type Version = FileVersion;
    type Lease = FileLease;
    type Watch = FileWatch;

    fn key(&self, session: &Path) -> Result<FileKey> {
        match self.key_of(session, true)? {
            Some(key) => Ok(key),
            // Only a lookup that may not create gives none.
            None => Err(Error::InvalidPath {
                path: session.to_owned(),
                reason: "its directory cannot be created".into(),
            }),
        }
    }

    async fn try_acquire(
        &self,
        key: &FileKey,
        req: &LeaseRequest,
        deadline: Option<Instant>,
    ) -> Result<Outcome<FileLease, FileVersion>> {
        if let Some(seen) = self.inspect_now(key)? {
            return Ok(Outcome::Busy(Box::new(seen)));
        }
        let (path, mut state) = self.state_for(key)?;
        let g = lock_state(&path, &mut state, FlockKind::Exclusive, deadline)?;
        let floor = read_epoch(&path, g.file)?;
        self.publish(key, dup(&path, g.file)?, floor, req)
    }

    async fn inspect(&self, key: &FileKey) -> Result<Option<FileInspection>> {
        self.inspect_now(key)
    }

    async fn reclaim(
        &self,
        key: &FileKey,
        seen: &FileInspection,
        req: &LeaseRequest,
        deadline: Option<Instant>,
    ) -> Result<Outcome<FileLease, FileVersion>> {
        let (path, mut state) = self.state_for(key)?;
        let g = lock_state(&path, &mut state, FlockKind::Exclusive, deadline)?;
        let Some((floor, _)) = self.remove_seen(key, seen, &path, g.file)? else {
            return Ok(Outcome::Changed);
        };
        tracing::info!(
            lock = %key.lock_path.display(),
            holder_pid = ?seen.payload.as_ref().ok().and_then(|p| p.pid),
            "reclaimed stale session lock"
        );
        self.publish(key, dup(&path, g.file)?, floor, req)
    }

    async fn remove_if_unchanged(
        &self,
        key: &FileKey,
        seen: &FileInspection,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        // A lock without an epoch (OpenClaw's, or one whose payload cannot be
        // read) has no epoch to record, and without a state file there is no
        // record to raise: a later acquisition reads the missing file as a
        // floor above every earlier epoch. The removal still runs under the
        // state lock (a sessionlock publisher racing us must never see its
        // fresh lock moved aside), but a state file created just for it is
        // unlinked again before the lock is dropped, so directories that
        // never had a sessionlock holder are not littered. A process that
        // opened it meanwhile finds it deleted once it gets the lock and
        // reopens (`lock_state`); it held no epoch, so nothing is lost.
        let epochless = seen.payload.as_ref().ok().and_then(|p| p.epoch).is_none();
        if epochless {
            if let Some(mut created) = create_state(&Self::epoch_path(key))? {
                let path = Self::epoch_path(key);
                let g = lock_state(&path, &mut created, FlockKind::Exclusive, deadline)?;
                let removed = self.remove_unchanged(key, seen);
                let _ = std::fs::remove_file(&path);
                drop(g);
                let removed = removed?;
                if removed {
                    tracing::info!(lock = %key.lock_path.display(), "removed stale session lock");
                }
                return Ok(removed);
            }
        }
        let (path, mut state) = self.state_for(key)?;
        let g = lock_state(&path, &mut state, FlockKind::Exclusive, deadline)?;
        let Some((floor, recorded)) = self.remove_seen(key, seen, &path, g.file)? else {
            return Ok(false);
        };
        if !recorded {
            write_epoch(&path, g.file, floor)?;
        }
        tracing::info!(lock = %key.lock_path.display(), "removed stale session lock");
        Ok(true)
    }

    async fn release(&self, lease: &FileLease) -> Result<bool> {
        let key = &lease.key;
        let path = Self::epoch_path(key);
        let mut state = dup(&path, &lease.state)?;
        let _g = lock_state(&path, &mut state, FlockKind::Exclusive, bounded())?;
        let (_, ino) = lease.epoch_ino();
        let token = lease.token();
        self.remove_if(
            key,
            |m| (m.dev(), m.ino()) == ino,
            token.as_deref().unwrap_or("release"),
        )
    }

    async fn republish(
        &self,
        lease: &FileLease,
        req: &LeaseRequest,
        new_epoch: bool,
    ) -> Result<()> {
        let key = &lease.key;
        let (held_epoch, held_ino) = lease.epoch_ino();
        let path = Self::epoch_path(key);
        let mut state = dup(&path, &lease.state)?;
        let g = lock_state(&path, &mut state, FlockKind::Exclusive, bounded())?;
        let current = read_epoch(&path, g.file)?;
        if current != held_epoch {
            return Err(Error::Fenced {
                path: key.lock_path.clone(),
                epoch: held_epoch,
                current_epoch: current,
            });
        }
        let lost = |cause| Error::Revoked {
            path: key.lock_path.clone(),
            epoch: held_epoch,
            current_epoch: current,
            cause,
        };
        if let Some(cause) = lost_lock(key, held_ino)? {
            return Err(lost(cause));
        }
        let epoch = if new_epoch {
            let next = next_epoch(&path, current)?;
            write_epoch(&path, g.file, next)?;
            next
        } else {
            current
        };
        let token = new_token();
        let payload = build_payload(req, epoch, token.clone());
        let (tmp, file) = write_temp(key, req, &payload, &token)?;
        if let Some(cause) = swap_in(&key.lock_path, &tmp, held_ino)? {
            return Err(lost(cause));
        }
        let ino = ino_of(&key.lock_path, &file)?;
        *lock(&lease.cur) = Published {
            payload,
            epoch,
            lock: file,
            ino,
        };
        Ok(())
    }

    async fn revoke(&self, lease: &FileLease) -> Result<u64> {
        let key = &lease.key;
        let (held_epoch, held_ino) = lease.epoch_ino();
        let path = Self::epoch_path(key);
        let mut state = dup(&path, &lease.state)?;
        let deadline = Some(Instant::now() + REVOKE_BOUND);
        let g = lock_state(&path, &mut state, FlockKind::Exclusive, deadline)?;
        let mut current = read_epoch(&path, g.file)?;
        if current == held_epoch {
            current = next_epoch(&path, current)?;
            write_epoch(&path, g.file, current)?;
        }
        let token = lease.token();
        self.remove_if(
            key,
            |m| (m.dev(), m.ino()) == held_ino,
            token.as_deref().unwrap_or("revoke"),
        )?;
        Ok(current)
    }

    async fn current_epoch(&self, lease: &FileLease) -> Result<u64> {
        let path = Self::epoch_path(&lease.key);
        let mut state = dup(&path, &lease.state)?;
        let g = lock_state(&path, &mut state, FlockKind::Shared, bounded())?;
        read_epoch(&path, g.file)
    }

    async fn fenced<T>(&self, lease: &FileLease, f: impl FnOnce() -> T) -> Result<T> {
        fenced(lease, f)
    }

    fn info(lease: &FileLease) -> LeaseInfo<FileKey> {
        let cur = lock(&lease.cur);
        LeaseInfo {
            key: lease.key.clone(),
            payload: cur.payload.clone(),
            epoch: cur.epoch,
        }
    }

    async fn watch(&self, key: &FileKey) -> Result<FileWatch> {
        let dir = key.lock_path.parent().unwrap_or(Path::new("/"));
        let name = key.lock_path.file_name().unwrap_or(OsStr::new(""));
        let notify = self.notify == Notify::Auto
            && File::open(dir)
                .map(|d| sys::notifications_reliable(&d))
                .unwrap_or(false);
        let kind = if notify {
            match DirWatch::new(dir, name) {
                Ok(w) => WatchKind::Blocking(w),
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "inotify unavailable, polling");
                    WatchKind::Poll
                }
            }
        } else {
            WatchKind::Poll
        };
        Ok(FileWatch {
            kind,
            backoff: POLL_MIN,
            dir: dir.to_owned(),
        })
    }

    fn wait_blocking(
        &self,
        watch: &mut FileWatch,
        holder: Option<&FileInspection>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let pid = holder_pid(holder);
        let started = Instant::now();
        let cap = |t: Option<Duration>, cap: Duration| t.map_or(cap, |t| t.min(cap));
        let WatchKind::Blocking(dw) = &watch.kind else {
            std::thread::sleep(cap(timeout, watch.next_backoff()));
            return Ok(());
        };
        let pidfd = pid.and_then(sys::pidfd_open);
        if pid.is_some_and(|p| pidfd.is_none() && !sys::process_exists(p)) {
            return Ok(()); // the holder is already gone: look again now
        }
        let limit = cap(timeout, SAFETY_NET);
        loop {
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Ok(());
            }
            let mut fds = vec![dw.fd()];
            if let Some(p) = &pidfd {
                fds.push(std::os::fd::AsFd::as_fd(p));
            }
            let ready = sys::poll_readable(&fds, Some(left))
                .map_err(|e| Error::io("wait for lock changes in", &watch.dir, e))?;
            if ready.contains(&1) {
                return Ok(());
            }
            if ready.contains(&0)
                && dw
                    .drain()
                    .map_err(|e| Error::io("read notifications for", &watch.dir, e))?
            {
                return Ok(());
            }
        }
    }

    async fn wait(
        &self,
        watch: &mut FileWatch,
        holder: Option<&FileInspection>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let pid = holder_pid(holder);
        let cap = |t: Option<Duration>, cap: Duration| t.map_or(cap, |t| t.min(cap));
        watch.make_async();
        let WatchKind::Async(afd) = &watch.kind else {
            tokio::time::sleep(cap(timeout, watch.next_backoff())).await;
            return Ok(());
        };
        // Without a pidfd (unsupported, or out of descriptors) the timer and
        // the safety net still bound the wait; only a vanished holder means
        // "look again now".
        let pidfd = match pid {
            Some(p) => match sys::pidfd_open(p).map(register) {
                Some(Ok(fd)) => Some(fd),
                Some(Err(_)) => None,
                None if !sys::process_exists(p) => return Ok(()),
                None => None,
            },
            None => None,
        };
        let dir_changed = async {
            loop {
                let mut guard = afd.readable().await?;
                let relevant = guard.get_inner().drain();
                guard.clear_ready();
                if relevant? {
                    return io::Result::Ok(());
                }
            }
        };
        let holder_exited = async {
            match &pidfd {
                Some(fd) => fd.readable().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = dir_changed => r.map_err(|e| Error::io("wait for lock changes in", &watch.dir, e)),
            r = holder_exited => r.map_err(|e| Error::io("wait for lock holder of", &watch.dir, e)),
            () = tokio::time::sleep(cap(timeout, SAFETY_NET)) => Ok(()),
        }
    }
}

/// The fence of the file backend: runs `f` only while the lease's epoch is
/// current and its lock file still the one it published, under a shared
/// `flock` of the session's state file that reclaim and revocation take
/// exclusively.
pub(crate) fn fenced<T>(lease: &FileLease, f: impl FnOnce() -> T) -> Result<T> {
    let path = FileBackend::epoch_path(&lease.key);
    let mut state = dup(&path, &lease.state)?;
    let g = lock_state(&path, &mut state, FlockKind::Shared, bounded())?;
    let current = read_epoch(&path, g.file)?;
    let (epoch, ino) = lease.epoch_ino();
    if current != epoch {
        return Err(Error::Fenced {
            path: lease.key.lock_path.clone(),
            epoch,
            current_epoch: current,
        });
    }
    // Programs that do not take the state lock (OpenClaw, an operator's
    // `rm`) can remove or replace the lock without bumping the epoch:
    // the lock name must still denote the inode we published. One
    // `statx`; the inode cannot be reused while we keep it open.
    if let Some(cause) = lost_lock(&lease.key, ino)? {
        return Err(Error::Revoked {
            path: lease.key.lock_path.clone(),
            epoch,
            current_epoch: current,
            cause,
        });
    }
    Ok(f())
}

/// The process to watch for exit while waiting: an inspected holder the
/// backend found alive on this machine.
fn holder_pid(holder: Option<&FileInspection>) -> Option<u32> {
    let seen = holder?;
    if seen.liveness != Liveness::Alive {
        return None;
    }
    seen.payload.as_ref().ok()?.pid
}

impl StoreBackend for FileBackend {
    type Store = Transcript;

    async fn open_store(&self, key: &FileKey) -> Result<Transcript> {
        Transcript::open_canonical(key.session.clone(), self.fs.clone())
    }
}

/// A waiter's view of one lock directory.
#[derive(Debug)]
pub struct FileWatch {
    kind: WatchKind,
    backoff: Duration,
    dir: PathBuf,
}

#[derive(Debug)]
enum WatchKind {
    Blocking(DirWatch),
    Async(AsyncFd<DirWatch>),
    Poll,
}

/// Registers an owned descriptor with the current tokio reactor (readable
/// interest only).
///
/// # Panics
/// Without a tokio runtime with I/O enabled, like every tokio I/O type.
fn register<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its descriptor (an `OwnedFd`, or a `DirWatch`
    // holding one) and the `AsyncFd` owns `inner`, so the descriptor stays
    // open and refers to the same file description for the `AsyncFd`'s life.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

impl AsRawFd for DirWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd().as_raw_fd()
    }
}

impl FileWatch {
    fn next_backoff(&mut self) -> Duration {
        let b = self.backoff;
        self.backoff = (b * 2).min(POLL_MAX);
        b
    }

    /// Registers the watch with the tokio reactor on first async use; if
    /// registration fails it falls back to polling. (Like every tokio I/O
    /// type, registration panics outside a runtime with I/O enabled.)
    fn make_async(&mut self) {
        if let WatchKind::Blocking(_) = self.kind {
            let WatchKind::Blocking(dw) = std::mem::replace(&mut self.kind, WatchKind::Poll) else {
                return;
            };
            match register(dw) {
                Ok(afd) => self.kind = WatchKind::Async(afd),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot register notifications with tokio, polling")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 9 item 2 (sibling): `republish` renamed its new payload over the
    // lock path, overwriting a foreign lock that replaced ours between the
    // ownership check and the rename. The swap must hand it back untouched.
    #[test]
    fn swap_in_never_overwrites_a_lock_that_replaced_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = dir.path().join("s.jsonl.lock");
        let tmp = dir.path().join("s.jsonl.lock.tmp-1");
        std::fs::write(&lock, b"ours").expect("our lock");
        let ours = ino_of(&lock, &File::open(&lock).expect("open")).expect("ino");
        let ours_file = File::open(&lock).expect("keep ours open");
        // A foreign writer removes ours and creates its own.
        std::fs::remove_file(&lock).expect("remove");
        std::fs::write(&lock, b"theirs").expect("their lock");
        std::fs::write(&tmp, b"new payload").expect("tmp");

        let lost = swap_in(&lock, &tmp, ours).expect("swap");
        assert_eq!(lost, Some(LossCause::Replaced));
        assert_eq!(std::fs::read(&lock).expect("read"), b"theirs");
        assert!(!tmp.exists(), "our new payload is discarded");
        drop(ours_file);

        // Our own lock is replaced by the new payload, and the old one goes.
        std::fs::write(&tmp, b"new payload").expect("tmp");
        let theirs_now_ours = ino_of(&lock, &File::open(&lock).expect("open")).expect("ino");
        assert_eq!(swap_in(&lock, &tmp, theirs_now_ours).expect("swap"), None);
        assert_eq!(std::fs::read(&lock).expect("read"), b"new payload");
        assert!(!tmp.exists());

        // A removed lock is reported and nothing is created.
        std::fs::remove_file(&lock).expect("remove");
        std::fs::write(&tmp, b"new payload").expect("tmp");
        assert_eq!(
            swap_in(&lock, &tmp, theirs_now_ours).expect("swap"),
            Some(LossCause::Removed)
        );
        assert!(!lock.exists() && !tmp.exists());
    }
}
