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

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::unix::AsyncFd;

// Declared twice: public with the `internals` feature (see lib.rs).
#[cfg(feature = "internals")]
pub mod confine;
#[cfg(not(feature = "internals"))]
mod confine;
// The CLI's diagnostics (`status`, `doctor`, `verify-fs`): only they use these.
#[cfg(feature = "internals")]
pub mod diag;
pub mod epoch;
pub mod fence;
pub mod fs;
#[cfg(feature = "internals")]
pub mod fscheck;
pub mod transcript;

mod key;
mod lease;
mod queue;
mod state;
// Public with `internals`: the diagnostics read the records.
#[cfg(feature = "internals")]
pub mod waiters;
#[cfg(not(feature = "internals"))]
mod waiters;
mod watch;

use key::*;
pub use key::{FileInspection, FileKey, FileVersion, MAX_SESSION_NAME};
pub use lease::FileLease;
use lease::*;
use state::*;
pub use state::{REVOKE_BOUND, STATE_LOCK_BOUND};

use crate::backend::{
    Held, Inspection, LeaseInfo, LeaseRequest, Listed, LockBackend, Outcome, StoreBackend,
    TranscriptStore,
};
use crate::error::{Error, LossCause, Result};
use crate::identity::{self, Liveness};
use crate::payload::{Malformed, Payload, MAX_PAYLOAD_BYTES, OWNER};
use crate::store::classify::ChangeClassifier;
use crate::store::{Appended, Change, Durability, RawEntries, TornTail};
use crate::sync::lock;
use crate::sys::{self, DirWatch, FlockKind};
use fence::Fence;
use fs::{Fs, RealFs};
use transcript::Transcript;

/// Longest sleep of a waiter that has notifications: a safety net against a
/// missed event, not a polling interval.
const SAFETY_NET: Duration = Duration::from_secs(1);
/// Polling interval bounds where notifications are unavailable.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(100);

/// How waiters learn that a lock changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
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
    /// path that resolves (through symlinks,
    /// [design §2](crate::design#2-on-disk-formats)) outside it is refused with
    /// `InvalidPath` before any file or directory is created, so a symlink
    /// planted among the sessions cannot lead a writer to create lock, epoch or
    /// torn-tail files beside another file, or cut its tail.
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
        epoch_path(key)
    }
}

fn sibling(key: &FileKey, kind: &str, token: &str) -> PathBuf {
    with_suffix(&key.lock_path, &format!(".{kind}-{token}"))
}

/// A token for one acquisition: 128 bits that look random, as 32 hex
/// characters ([design §2.1](crate::design#21-the-lock-file)). Tokens name
/// temporary and tombstone files and tell acquisitions apart; they need to
/// be unique and, so that no one can plant a file at a name we are about to
/// use, unpredictable, not secret (a lock file shows its own).
///
/// The kernel's randomness is drawn once per process (a 256-bit seed); each
/// token is the first half of SHA-256 over the seed and a per-process
/// counter. Without the seed the next token cannot be told from earlier
/// ones, and two tokens collide only as two random 128-bit values would:
/// one `getrandom` per process instead of one per publish.
fn new_token() -> String {
    use sha2::{Digest, Sha256};
    static SEED: OnceLock<[u8; 32]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = SEED.get_or_init(token_seed);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = Sha256::new();
    h.update(seed);
    h.update(n.to_le_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The per-process seed of [`new_token`]: 256 bits from the kernel. Should
/// the kernel refuse randomness (no `getrandom`), pid and clocks keep
/// tokens unique, which is all their uses strictly need.
fn token_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    match (sys::random_bytes(), sys::random_bytes()) {
        (Ok(a), Ok(b)) => {
            seed[..16].copy_from_slice(&a);
            seed[16..].copy_from_slice(&b);
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(
                target: "sessionlock::acquire",
                error = %e,
                "no kernel randomness; tokens fall back to pid, clock and a counter"
            );
            let wall = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            seed[..8].copy_from_slice(&u64::from(sys::pid()).to_le_bytes());
            seed[8..16].copy_from_slice(&sys::monotonic_ns().to_le_bytes());
            seed[16..24].copy_from_slice(&wall.to_le_bytes());
        }
    }
    seed
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
            target: "sessionlock::fence",
            lock = %lock_path.display(),
            aside = %tmp.display(),
            error = %e,
            "a foreign lock replaced ours during extension and could not be put back; left aside for sessionlock doctor"
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

impl FileBackend {
    /// Publishes a lease with epoch `floor + 1`. Must run under the state lock.
    /// `len` is the state file's length if the caller read all of it under
    /// the same state lock (see `write_epoch_after`).
    fn publish(
        &self,
        key: &FileKey,
        state: StateFile,
        (floor, len): (u64, Option<u64>),
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
        // Waiters of other processes that queued before us go first
        // (design §3.12): nothing is written, the caller waits in line.
        if queue::others_first(&key.lock_path, &epoch_path, &state)
            .map_err(|e| Error::io("look at the line for the session lock at", &epoch_path, e))?
        {
            return Ok(Outcome::Queued);
        }
        let epoch = next_epoch(&epoch_path, floor)?;
        // The epoch is persisted before the lock appears: a crash between the
        // two burns an epoch number but can never reuse one.
        write_epoch_after(&epoch_path, &state, epoch, len)?;
        let token = new_token();
        let payload = build_payload(req, epoch, token.clone());
        queue::leave_to_publish(&key.lock_path);
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
                target: "sessionlock::fence",
                lock = %key.lock_path.display(),
                aside = %tomb.display(),
                error = %e,
                "a foreign lock replaced ours during release and could not be restored; left aside for sessionlock doctor"
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
    #[cfg(feature = "internals")] // only the diagnostics (`diag`) use it
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
        key_of(session, self.root.as_deref(), create)
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

    /// Every `*.jsonl.lock` directly in `dir` (not recursive), whatever bytes
    /// its name holds, sorted by name. Each is keyed as the lock it is (the
    /// directory canonical, the name as found, the session its name without
    /// `.lock`), not through a session name that is a symlink: the listing
    /// shows the lock files that are there, each once. Read-only, so not
    /// confined to the sessions root.
    fn list_dir(&self, dir: &Path) -> Result<Vec<Listed<FileKey, FileVersion>>> {
        let canonical =
            std::fs::canonicalize(dir).map_err(|e| Error::io("list directory", dir, e))?;
        let entries =
            std::fs::read_dir(&canonical).map_err(|e| Error::io("list directory", dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let name = entry
                .map_err(|e| Error::io("list directory", dir, e))?
                .file_name();
            if name.as_bytes().ends_with(b".jsonl.lock") {
                names.push(name);
            }
        }
        names.sort();
        let mut listed = Vec::with_capacity(names.len());
        for name in names {
            let bytes = name.as_bytes();
            let stem = OsStr::from_bytes(&bytes[..bytes.len() - ".lock".len()]);
            let key = FileKey {
                session: canonical.join(stem),
                lock_path: canonical.join(&name),
            };
            match self.inspect_now(&key) {
                Ok(Some(inspection)) => listed.push(Listed::Lock {
                    key,
                    inspection: Box::new(inspection),
                }),
                // Gone since the directory was read.
                Ok(None) => {}
                Err(error) => listed.push(Listed::Unreadable {
                    locator: key.lock_path.into_os_string(),
                    error,
                }),
            }
        }
        Ok(listed)
    }

    /// The processes that hold the session's state lock (`flock` on its
    /// state file) as the kernel listed them in `locks`; empty when nobody
    /// does, or the state file does not exist. sessionlock holds it for a
    /// few system calls at a time, so a holder seen twice a moment apart,
    /// or a stopped one, is stuck inside a protocol step.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // status and the doctor's
    pub(crate) fn state_lock_holders(&self, key: &FileKey, locks: &sys::KernelLocks) -> Vec<u32> {
        if locks.no_flocks() {
            return Vec::new();
        }
        let Ok(m) = std::fs::symlink_metadata(Self::epoch_path(key)) else {
            return Vec::new();
        };
        if !m.is_file() {
            return Vec::new();
        }
        locks.flock_holders(m.dev(), m.ino()).to_vec()
    }

    fn state_for(&self, key: &FileKey) -> Result<(PathBuf, StateFile)> {
        let path = Self::epoch_path(key);
        let file = take_state(&path)?;
        Ok((path, file))
    }
}

impl LockBackend for FileBackend {
    type Name = Path;
    type Key = FileKey;
    type Version = FileVersion;
    type Lease = FileLease;
    type Watch = FileWatch;
    type Scope = Path;
    const NAME: &'static str = "file";

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
        // Waiters that queued before us come first (design §3.12): then the
        // lock itself need not be looked at. A look without the state lock,
        // with the descriptor this process keeps open if it has one (a
        // process that just released: the busy case); publishing looks
        // again under the lock.
        let path = Self::epoch_path(key);
        let kept = kept_state(&path);
        if let Some(state) = &kept {
            if queue::others_first(&key.lock_path, &path, state)
                .map_err(|e| Error::io("look at the line for the session lock at", &path, e))?
            {
                return Ok(Outcome::Queued);
            }
        }
        if let Some(seen) = self.inspect_now(key)? {
            return Ok(Outcome::Busy(Box::new(seen)));
        }
        let mut state = match kept {
            Some(state) => state,
            None => self.state_for(key)?.1,
        };
        let g = lock_state(&path, &mut state, FlockKind::Exclusive, deadline)?;
        let read = read_epoch_len(&path, g.file)?;
        self.publish(key, share(g.file), read, req)
    }

    async fn inspect(&self, key: &FileKey) -> Result<Option<FileInspection>> {
        self.inspect_now(key)
    }

    async fn list(&self, dir: &Path) -> Result<Vec<Listed<FileKey, FileVersion>>> {
        self.list_dir(dir)
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
        // The first waiter in line reclaims; the others wait for it.
        if queue::others_first(&key.lock_path, &path, g.file)
            .map_err(|e| Error::io("look at the line for the session lock at", &path, e))?
        {
            return Ok(Outcome::Queued);
        }
        let Some((floor, _)) = self.remove_seen(key, seen, &path, g.file)? else {
            return Ok(Outcome::Changed);
        };
        self.publish(key, share(g.file), (floor, None), req)
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
                    tracing::info!(
                        target: "sessionlock::reclaim",
                        lock = %key.lock_path.display(),
                        "removed stale session lock"
                    );
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
        tracing::info!(
            target: "sessionlock::reclaim",
            lock = %key.lock_path.display(),
            "removed stale session lock"
        );
        Ok(true)
    }

    async fn release(&self, lease: &FileLease, deadline: Option<Instant>) -> Result<bool> {
        let key = &lease.key;
        let path = Self::epoch_path(key);
        let mut state = share(&lease.state);
        let _g = lock_state(
            &path,
            &mut state,
            FlockKind::Exclusive,
            bounded_by(deadline),
        )?;
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
        deadline: Option<Instant>,
    ) -> Result<()> {
        let key = &lease.key;
        let (held_epoch, held_ino) = lease.epoch_ino();
        let path = Self::epoch_path(key);
        let mut state = share(&lease.state);
        let g = lock_state(
            &path,
            &mut state,
            FlockKind::Exclusive,
            bounded_by(deadline),
        )?;
        let (current, len) = read_epoch_len(&path, g.file)?;
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
        // An in-process hand-off yields to waiters of other processes: the
        // lock goes back to disk and this process queues behind them, so
        // that no process keeps the lock by handing it among its own
        // (design §3.12).
        if new_epoch
            && queue::others_first(&key.lock_path, &path, g.file)
                .map_err(|e| Error::io("look at the line for the session lock at", &path, e))?
        {
            return Err(Error::Busy {
                waiting_for: "waiters of other processes, who come first",
                timeout_ms: 0,
                holder: Box::new(crate::error::Holder::holding(
                    &path,
                    queue::first_in_line(g.file),
                    crate::error::Holds::FirstInLine,
                    false,
                )),
            });
        }
        let epoch = if new_epoch {
            let next = next_epoch(&path, current)?;
            write_epoch_after(&path, g.file, next, len)?;
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
        let mut state = share(&lease.state);
        let deadline = Some(Instant::now() + REVOKE_BOUND);
        let g = lock_state(&path, &mut state, FlockKind::Exclusive, deadline)?;
        let (mut current, len) = read_epoch_len(&path, g.file)?;
        if current == held_epoch {
            current = next_epoch(&path, current)?;
            write_epoch_after(&path, g.file, current, len)?;
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
        let mut state = share(&lease.state);
        let g = lock_state(&path, &mut state, FlockKind::Shared, bounded())?;
        read_epoch(&path, g.file)
    }

    async fn check(&self, lease: &FileLease) -> Result<()> {
        fenced(lease, || ())
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
        // A local file system: notifications are reliable there, and the
        // line of waiters can be kept (design §3.12).
        let local = File::open(dir)
            .map(|d| sys::notifications_reliable(&d))
            .unwrap_or(false);
        let kind = if local && self.notify == Notify::Auto {
            let state_path = epoch_path(key);
            let state_name = state_path.file_name().unwrap_or(OsStr::new(""));
            match watch::take(dir, &[name, state_name]) {
                Ok(w) => WatchKind::Blocking(w),
                Err(e) => {
                    tracing::debug!(
                        target: "sessionlock::wait",
                        dir = %dir.display(),
                        error = %e,
                        "inotify unavailable, polling"
                    );
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
            place: None,
            local,
        })
    }

    async fn queue(
        &self,
        key: &FileKey,
        watch: &mut FileWatch,
        req: &LeaseRequest,
        deadline: Option<Instant>,
    ) -> Result<()> {
        // Only on a local file system: on a network one `flock` is emulated
        // with byte-range locks, which places would conflict with. (A
        // polling waiter on a local one queues like any other.)
        if watch.place.is_none() && watch.local {
            let state_path = Self::epoch_path(key);
            let who = waiters::record_of(req, deadline);
            let ctx = crate::observe::Ctx {
                backend: Self::NAME,
                session: crate::backend::SessionId::session(key),
                lane: req.lane.as_deref(),
                run: req.run_id.as_deref(),
            };
            watch.place = queue::Place::take(&key.lock_path, &state_path, Some(who))?.map(
                |(place, epoch)| {
                    crate::observe::queued(&ctx, epoch);
                    place
                },
            );
        }
        Ok(())
    }

    fn first_waiter(&self, key: &FileKey) -> Option<crate::error::Holder> {
        let path = Self::epoch_path(key);
        let file = open_read_nofollow(&path).ok()?;
        let pid = queue::first_in_line(&file)?;
        Some(crate::error::Holder::holding(
            &path,
            Some(pid),
            crate::error::Holds::FirstInLine,
            sys::process_stopped(pid),
        ))
    }

    fn wait_blocking(
        &self,
        watch: &mut FileWatch,
        holder: Option<&FileInspection>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        if wait_in_line_blocking(watch, timeout)? {
            return Ok(());
        }
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
        watch.make_async();
        if wait_in_line(watch, timeout).await? {
            return Ok(());
        }
        let pid = holder_pid(holder);
        let cap = |t: Option<Duration>, cap: Duration| t.map_or(cap, |t| t.min(cap));
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

/// The part of a wait spent behind other waiters in the session's line
/// (design §3.12): until this waiter is first, the lock's events, its
/// holder and its lease are the first waiter's business. Wakes on the
/// directory's events (a lock published or removed, the doorbell of a
/// waiter that gave up) and every [`queue::LOOK_EVERY`] (a waiter that
/// died leaves no event), and looks at the line each time. Returns whether
/// the wait is over: this waiter became first (or passed over a stalled
/// line), the lock is free for a first waiter, or `timeout` passed. `false`:
/// first in line with the lock taken, so wait for it as usual.
fn wait_in_line_blocking(watch: &mut FileWatch, timeout: Option<Duration>) -> Result<bool> {
    if let Some(over) = enter_line(watch)? {
        return Ok(over);
    }
    let FileWatch {
        kind, place, dir, ..
    } = watch;
    let Some(place) = place.as_mut() else {
        return Ok(false);
    };
    let started = Instant::now();
    loop {
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        if left.is_some_and(|l| l.is_zero()) {
            return Ok(leave_line(kind, dir));
        }
        let slice = left.map_or(queue::LOOK_EVERY, |l| l.min(queue::LOOK_EVERY));
        match kind {
            WatchKind::Blocking(dw) => {
                let ready = sys::poll_readable(&[dw.fd()], Some(slice))
                    .map_err(|e| Error::io("wait for lock changes in", &*dir, e))?;
                if !ready.is_empty() {
                    dw.drain()
                        .map_err(|e| Error::io("read notifications for", &*dir, e))?;
                }
            }
            _ => std::thread::sleep(slice.min(POLL_MIN)),
        }
        if !place.behind_others()? || place.stalled() {
            return Ok(leave_line(kind, dir));
        }
    }
}

/// Starts the part of a wait spent in line: `Some(over)` when there is
/// none (no place: `false`; first in line: whether the lock is free, for a
/// look at once); `None` behind others, with the watch narrowed to what
/// moves the line.
fn enter_line(watch: &mut FileWatch) -> Result<Option<bool>> {
    let FileWatch {
        kind, place, dir, ..
    } = watch;
    let Some(place) = place.as_mut() else {
        return Ok(Some(false));
    };
    if !place.behind_others()? {
        return Ok(Some(place.lock_is_free()));
    }
    if let Some(dw) = kind.watch_mut() {
        if let Err(e) = dw.narrow(place.state_path()) {
            tracing::debug!(
                target: "sessionlock::wait",
                dir = %dir.display(),
                error = %e,
                "cannot watch the line alone; waiting on every change of the lock"
            );
        }
    }
    Ok(None)
}

/// Ends the part of a wait spent behind others: widens the watch again,
/// before this waiter looks at the lock. The wait is over (`true`).
fn leave_line(kind: &mut WatchKind, dir: &Path) -> bool {
    if let Some(dw) = kind.watch_mut() {
        if let Err(e) = dw.widen() {
            // The safety net still ends its waits.
            tracing::debug!(
                target: "sessionlock::wait",
                dir = %dir.display(),
                error = %e,
                "cannot watch the lock's directory again; relying on the safety net"
            );
        }
    }
    true
}

/// The async twin of [`wait_in_line_blocking`].
async fn wait_in_line(watch: &mut FileWatch, timeout: Option<Duration>) -> Result<bool> {
    if let Some(over) = enter_line(watch)? {
        return Ok(over);
    }
    let FileWatch {
        kind, place, dir, ..
    } = watch;
    let Some(place) = place.as_mut() else {
        return Ok(false);
    };
    let started = Instant::now();
    loop {
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        if left.is_some_and(|l| l.is_zero()) {
            return Ok(leave_line(kind, dir));
        }
        let slice = left.map_or(queue::LOOK_EVERY, |l| l.min(queue::LOOK_EVERY));
        match kind {
            WatchKind::Async(afd) => {
                tokio::select! {
                    r = afd.readable() => {
                        let mut guard = r.map_err(|e| Error::io("wait for lock changes in", &*dir, e))?;
                        let drained = guard.get_inner().drain();
                        guard.clear_ready();
                        drained.map_err(|e| Error::io("read notifications for", &*dir, e))?;
                    }
                    () = tokio::time::sleep(slice) => {}
                }
            }
            _ => tokio::time::sleep(slice.min(POLL_MIN)).await,
        }
        if !place.behind_others()? || place.stalled() {
            return Ok(leave_line(kind, dir));
        }
    }
}

/// Opens `path` for reading, never through a symlink, never blocking.
fn open_read_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(sys::NOFOLLOW_NONBLOCK)
        .open(path)
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
    /// This waiter's place in the session's line, once it queued.
    place: Option<queue::Place>,
    /// Whether the directory is on a local file system (where the line is
    /// kept).
    local: bool,
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

impl Drop for FileWatch {
    fn drop(&mut self) {
        // Leave the line first: the watch is not what holds the place.
        self.place = None;
        let kind = std::mem::replace(&mut self.kind, WatchKind::Poll);
        if let Some(dw) = kind.into_watch() {
            watch::put(std::mem::take(&mut self.dir), dw);
        }
    }
}

impl FileWatch {
    fn next_backoff(&mut self) -> Duration {
        let b = self.backoff;
        self.backoff = (b * 2).min(POLL_MAX);
        b
    }

    /// Registers the watches with the tokio reactor on first async use.
    fn make_async(&mut self) {
        self.kind.make_async();
    }
}

impl WatchKind {
    /// The inotify watch, if there is one.
    fn watch_mut(&mut self) -> Option<&mut DirWatch> {
        match self {
            WatchKind::Blocking(dw) => Some(dw),
            WatchKind::Async(afd) => Some(afd.get_mut()),
            WatchKind::Poll => None,
        }
    }

    /// The inotify watch, unregistered from any reactor.
    fn into_watch(self) -> Option<DirWatch> {
        match self {
            WatchKind::Blocking(dw) => Some(dw),
            WatchKind::Async(afd) => Some(afd.into_inner()),
            WatchKind::Poll => None,
        }
    }

    /// Registers the watch with the tokio reactor on first async use; if
    /// registration fails it falls back to polling. (Like every tokio I/O
    /// type, registration panics outside a runtime with I/O enabled.)
    fn make_async(&mut self) {
        if let WatchKind::Blocking(_) = self {
            let WatchKind::Blocking(dw) = std::mem::replace(self, WatchKind::Poll) else {
                return;
            };
            match register(dw) {
                Ok(afd) => *self = WatchKind::Async(afd),
                Err(e) => {
                    tracing::debug!(
                        target: "sessionlock::wait",
                        error = %e,
                        "cannot register notifications with tokio, polling"
                    )
                }
            }
        }
    }
}

impl TranscriptStore<FileBackend> for Transcript {
    type Snapshot = Fence;

    async fn append(
        &mut self,
        held: &Held<FileLease>,
        entries: &RawEntries,
        durability: Durability,
    ) -> Result<Appended> {
        self.append_held(held, entries.as_bytes(), durability)
    }

    async fn rewrite(&mut self, held: &Held<FileLease>, entries: &RawEntries) -> Result<()> {
        self.rewrite_held(held, entries.as_bytes())
    }

    async fn truncate(&mut self, held: &Held<FileLease>, keep: usize) -> Result<()> {
        self.truncate_held(held, keep)
    }

    async fn repair(&mut self, held: &Held<FileLease>) -> Result<Option<TornTail>> {
        self.repair_held(held)
    }

    async fn read(&self) -> Result<crate::store::Read> {
        let mut reader = self.reader()?;
        let mut entries = Vec::new();
        for entry in reader.by_ref() {
            entries.push(entry?.value);
        }
        Ok(crate::store::Read {
            entries,
            torn: reader.torn_tail().cloned(),
        })
    }

    async fn snapshot(&self, epoch: u64) -> Result<Fence> {
        Transcript::snapshot(self, epoch)
    }

    async fn check(&self, fence: &Fence, classifier: &dyn ChangeClassifier) -> Result<Change> {
        Transcript::check(self, fence, classifier)
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

    fn lock_payload(pid: u32) -> String {
        format!(r#"{{"pid":{pid},"createdAt":"2026-01-01T00:00:00.000Z","maxHoldMs":1000}}"#)
    }

    // The listing that status and the doctor build on (issue 11 item 3).
    #[test]
    fn list_gives_every_lock_file_of_the_directory_once_sorted_and_goes_on_past_an_unreadable_one()
    {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = std::fs::canonicalize(tmp.path()).expect("canonical dir");
        std::fs::write(dir.join("b.jsonl.lock"), lock_payload(7)).expect("b");
        // A name that is not UTF-8 is still a lock.
        let odd = dir.join(OsString::from_vec(b"\xff.jsonl.lock".to_vec()));
        std::fs::write(&odd, lock_payload(8)).expect("odd");
        // Not a lock: a symlink where one belongs.
        std::os::unix::fs::symlink("elsewhere", dir.join("a.jsonl.lock")).expect("symlink");
        // A session name that is a symlink to `b.jsonl`, with a lock file of
        // its own: listed as the file it is, not as `b.jsonl.lock` again.
        std::os::unix::fs::symlink("b.jsonl", dir.join("alias.jsonl")).expect("alias");
        std::fs::write(dir.join("alias.jsonl.lock"), lock_payload(9)).expect("alias lock");
        // Not locks.
        std::fs::write(dir.join("b.jsonl"), b"{}\n").expect("transcript");
        std::fs::write(dir.join("b.jsonl.lock.tmp-1"), lock_payload(10)).expect("temp");
        std::fs::write(dir.join("b.jsonl.epoch"), b"").expect("epoch");

        let listed = crate::blocking::block_on(FileBackend::default().list(tmp.path()))
            .expect("list the directory");
        let locators: Vec<&OsStr> = listed.iter().map(Listed::locator).collect();
        let odd_name = odd.as_os_str();
        let expect = [
            dir.join("a.jsonl.lock"),
            dir.join("alias.jsonl.lock"),
            dir.join("b.jsonl.lock"),
        ];
        let mut expected: Vec<&OsStr> = expect.iter().map(|p| p.as_os_str()).collect();
        expected.push(odd_name);
        assert_eq!(locators, expected);
        let Listed::Unreadable { error, .. } = &listed[0] else {
            panic!("a symlink is no lock: {:?}", listed[0]);
        };
        assert!(matches!(error, Error::InvalidPath { .. }), "{error}");
        let pids: Vec<(PathBuf, Option<u32>)> = listed[1..]
            .iter()
            .map(|l| match l {
                Listed::Lock { key, inspection } => (
                    key.session.clone(),
                    inspection.payload.as_ref().ok().and_then(|p| p.pid),
                ),
                Listed::Unreadable { error, .. } => panic!("{error}"),
            })
            .collect();
        let odd_session = dir.join(OsString::from_vec(b"\xff.jsonl".to_vec()));
        assert_eq!(
            pids,
            [
                (dir.join("alias.jsonl"), Some(9)),
                (dir.join("b.jsonl"), Some(7)),
                (odd_session, Some(8)),
            ]
        );
    }

    #[test]
    fn list_of_a_missing_directory_is_an_io_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = crate::blocking::block_on(FileBackend::default().list(&tmp.path().join("gone")))
            .expect_err("no such directory");
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err}"
        );
    }
}
