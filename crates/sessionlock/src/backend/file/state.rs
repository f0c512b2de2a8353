//! The session's state file: its `flock` (what makes publish, reclaim,
//! release, revocation and fenced writes atomic with respect to each other)
//! and the epoch record it holds.

use super::epoch;
use super::key::*;
use crate::error::{Error, Result};
use crate::sys::{self, FlockKind};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

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
/// Polling bounds while another process holds the state lock: `flock` has no
/// notification, so a contender retries without blocking, from a few
/// microseconds (sessionlock holds the lock for that long) doubling up to
/// 2 ms, never past its budget. The cap bounds how late a contender notices
/// a release (a blocking `flock` would wake at once; a hand-off must not pay
/// for the bound); a foreign holder that keeps the lock costs 500 cheap
/// non-blocking retries a second.
pub(super) const STATE_POLL_MIN: Duration = Duration::from_micros(20);
pub(super) const STATE_POLL_MAX: Duration = Duration::from_millis(2);
/// How long a contender retries the state lock yielding the CPU instead of
/// sleeping, before the backoff above. sessionlock holds the lock for a few
/// system calls (tens of microseconds); a sleep, however short, costs the
/// kernel's timer slack (50 µs by default) on top, which made every
/// cross-process hand-off (the waiter wakes on the releaser's rename, while
/// the releaser still holds the state lock) pay a quarter of a millisecond.
pub(super) const STATE_SPIN: Duration = Duration::from_micros(200);
/// The session's state file with a `flock` held; unlocks on drop.
pub(super) struct StateLock<'a> {
    pub(super) file: &'a File,
}
impl Drop for StateLock<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would drop the lock too; failing to unlock an
        // open descriptor is not something a caller could act on.
        let _ = sys::funlock(self.file);
    }
}
pub(super) fn open_state(path: &Path) -> Result<File> {
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
pub(super) fn create_state(path: &Path) -> Result<Option<File>> {
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
pub(super) fn lock_state<'a>(
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
        // A caller that must not wait at all (`Guard::try_release`,
        // `SessionLock::try_acquire_now`): busy, without naming the holder
        // (`/proc/locks` can take milliseconds to read).
        if crate::blocking::refuse_wait() {
            return Err(Error::Timeout {
                timeout_ms: 0,
                holder: Box::new(crate::error::Holder::state_lock(path, None)),
            });
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
pub(super) fn try_lock_state(path: &Path, file: &mut File, kind: FlockKind) -> Result<bool> {
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
pub(super) fn wait_state(
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
pub(super) fn bounded() -> Option<Instant> {
    Some(Instant::now() + STATE_LOCK_BOUND)
}

/// The deadline for an operation on a held lease whose caller may have a
/// budget of its own: the earlier of the two.
pub(super) fn bounded_by(deadline: Option<Instant>) -> Option<Instant> {
    let bound = Instant::now() + STATE_LOCK_BOUND;
    Some(deadline.map_or(bound, |d| d.min(bound)))
}
/// The timeout error for a state lock someone else kept: names the first
/// process the kernel lists as holding it (`/proc/locks`), if any.
pub(super) fn state_busy(path: &Path, file: &File, waited: Duration) -> Error {
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
    tracing::debug!(
        target: "sessionlock::fence",
        path = %path.display(),
        holder_pid = pid,
        "session state file locked by another process"
    );
    Error::Timeout {
        timeout_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
        holder: Box::new(crate::error::Holder::state_lock(path, pid)),
    }
}
/// Reads the session's last epoch as recorded: `Err(n)` with the number of
/// bytes read (at most one more than a record) when the state file is empty
/// (new, or deleted and recreated: `n` is 0) or holds anything but one
/// record (corrupt, or longer than its record).
pub(super) fn read_record(path: &Path, file: &File) -> Result<Result<u64, usize>> {
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
pub(super) fn read_epoch(path: &Path, file: &File) -> Result<u64> {
    Ok(read_record(path, file)?.unwrap_or_else(|n| {
        if n > 0 {
            tracing::warn!(
                target: "sessionlock::fence",
                path = %path.display(),
                "invalid epoch file; continuing above every earlier epoch"
            );
        }
        epoch_floor()
    }))
}
/// Microseconds since 1970: larger than any epoch a counter started at 1
/// could have reached.
pub(super) fn epoch_floor() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
}
/// The epoch after `current`, or a refusal when there is none.
pub(super) fn next_epoch(path: &Path, current: u64) -> Result<u64> {
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
pub(super) fn write_epoch(path: &Path, file: &File, epoch: u64) -> Result<()> {
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
