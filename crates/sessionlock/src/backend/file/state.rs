//! The session's state file: its `flock` (what makes publish, reclaim,
//! release, revocation and fenced writes atomic with respect to each other)
//! and the epoch record it holds.

use super::epoch;
use super::key::*;
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::sys::{self, FlockKind};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
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
/// An open state file, and the device and inode it had when it was opened:
/// the state lock is taken on this descriptor, and it counts only while
/// the path still names that inode (see [`try_lock_state`]).
#[derive(Debug)]
pub(super) struct StateFd {
    file: File,
    id: (u64, u64),
}
impl std::ops::Deref for StateFd {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}
/// A handle on an open state file. Clones share one open file description,
/// so one `flock`: they are handed only to one acquisition at a time (its
/// lease and the operations on it, which its guard and the registry
/// serialize, as they did the duplicated descriptor that came before).
pub(super) type StateFile = Arc<StateFd>;
/// How many state files a process keeps open between acquisitions.
const STATE_CACHE_MAX: usize = 64;
/// State files kept open between acquisitions, by path: an acquisition of a
/// session this process acquired before reuses the descriptor (no `open`,
/// no `close`). An entry is handed out only while nobody else holds it (its
/// last lease is gone), so no two acquisitions ever share an open file
/// description: their `flock`s exclude each other as separately opened
/// descriptors do. A state file deleted or replaced since is noticed after
/// the `flock` ([`try_lock_state`]) and reopened.
fn state_cache() -> &'static Mutex<HashMap<PathBuf, StateFile>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, StateFile>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}
/// The state file at `path` for a new acquisition: the cached descriptor if
/// no one holds it, else a newly opened one (cached when there is room).
pub(super) fn take_state(path: &Path) -> Result<StateFile> {
    if let Some(cached) = lock(state_cache()).get(path) {
        // Clones are made only here, under the cache's mutex, or from a
        // handle already given out: a count of 1 means no one else has it.
        if Arc::strong_count(cached) == 1 {
            return Ok(Arc::clone(cached));
        }
    }
    let opened = open_state(path)?;
    remember(path, &opened);
    Ok(opened)
}
/// The kept descriptor of the state file at `path`, if there is one that
/// nobody holds: never opens (or creates) the file.
pub(super) fn kept_state(path: &Path) -> Option<StateFile> {
    let cache = lock(state_cache());
    let cached = cache.get(path)?;
    (Arc::strong_count(cached) == 1).then(|| Arc::clone(cached))
}
/// Caches `file` as the state file at `path`, in place of an older entry.
/// When the cache is full, an entry no one holds makes room; if every entry
/// is held, `file` is not cached.
fn remember(path: &Path, file: &StateFile) {
    let mut cache = lock(state_cache());
    if cache.len() >= STATE_CACHE_MAX && !cache.contains_key(path) {
        let idle = cache
            .iter()
            .find(|(_, f)| Arc::strong_count(f) == 1)
            .map(|(p, _)| p.clone());
        match idle {
            Some(p) => {
                cache.remove(&p);
            }
            None => return,
        }
    }
    cache.insert(path.to_owned(), Arc::clone(file));
}
/// The session's state file with a `flock` held; unlocks on drop.
pub(super) struct StateLock<'a> {
    pub(super) file: &'a StateFile,
}
impl Drop for StateLock<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would drop the lock too; failing to unlock an
        // open descriptor is not something a caller could act on.
        let _ = sys::funlock(self.file);
    }
}
/// Opens (creating if needed) the state file at `path`: a regular file with
/// one link, never through a symlink.
pub(super) fn open_state(path: &Path) -> Result<StateFile> {
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
        return Err(hard_linked(path, m.nlink()));
    }
    Ok(Arc::new(StateFd {
        id: (m.dev(), m.ino()),
        file,
    }))
}
fn hard_linked(path: &Path, nlink: u64) -> Error {
    Error::InvalidPath {
        path: path.to_owned(),
        reason: format!(
            "has {nlink} hard links; sessionlock rewrites its state file in place and never links it, so this may be another file linked here (remove this name once no process uses the session)"
        ),
    }
}
/// Creates the session's state file if it does not exist: `None` when it
/// does (then open it with [`open_state`]).
pub(super) fn create_state(path: &Path) -> Result<Option<StateFile>> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(sys::NOFOLLOW_NONBLOCK)
        .open(path)
    {
        Ok(file) => {
            let m = file
                .metadata()
                .map_err(|e| Error::io("stat epoch file", path, e))?;
            Ok(Some(Arc::new(StateFd {
                id: (m.dev(), m.ino()),
                file,
            })))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(Error::io("create epoch file", path, e)),
    }
}
/// Takes the state lock on `file`, which was opened from `path`, waiting
/// at most until `deadline` (`None`: as long as it takes). If the path no
/// longer names the file (deleted, or replaced), the lock on the old inode
/// means nothing: reopen and retry.
///
/// `flock` gives no notification of its release, so a busy lock is polled
/// without blocking, with a short backoff (see `STATE_POLL_MIN`). On
/// timeout the error names the processes holding the lock, as the kernel
/// lists them.
pub(super) fn lock_state<'a>(
    path: &Path,
    file: &'a mut StateFile,
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
/// One try at the state lock: whether we got it (on the file the path
/// still names: a file deleted or replaced meanwhile is reopened and tried
/// again).
///
/// One `lstat` of the path after the `flock` checks everything a lock on a
/// kept descriptor needs: the path is still this inode (so it was neither
/// deleted nor renamed away nor replaced: a lock on an inode others no
/// longer open would exclude no one), not a symlink (a different inode),
/// and it has one link (a second may be another file linked here; the
/// file was regular when opened, and an inode's type never changes).
pub(super) fn try_lock_state(path: &Path, file: &mut StateFile, kind: FlockKind) -> Result<bool> {
    loop {
        if !sys::try_flock(file, kind).map_err(|e| Error::io("lock epoch file", path, e))? {
            return Ok(false);
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if (m.dev(), m.ino()) == file.id => {
                if m.nlink() > 1 {
                    let _ = sys::funlock(file);
                    return Err(hard_linked(path, m.nlink()));
                }
                return Ok(true);
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                let _ = sys::funlock(file);
                return Err(Error::io("stat epoch file", path, e));
            }
        }
        let _ = sys::funlock(file);
        *file = open_state(path)?;
        remember(path, file);
    }
}
/// Polls for the state lock with backoff until `deadline`.
pub(super) fn wait_state(
    path: &Path,
    file: &mut StateFile,
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
/// process the kernel lists as holding it (`/proc/locks`), if any, as
/// holding the session's state lock, and whether it is stopped.
pub(super) fn state_busy(path: &Path, file: &StateFile, waited: Duration) -> Error {
    let holders = sys::flock_holders(file.id.0, file.id.1);
    let me = sys::pid();
    let pid = holders
        .iter()
        .copied()
        .find(|&p| p != me)
        .or(holders.first().copied());
    let stopped = pid.is_some_and(sys::process_stopped);
    tracing::debug!(
        target: "sessionlock::fence",
        path = %path.display(),
        holder_pid = pid,
        stopped,
        "session state file locked by another process"
    );
    Error::Timeout {
        timeout_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
        holder: Box::new(crate::error::Holder::holding(
            path,
            pid,
            crate::error::Holds::StateLock,
            stopped,
        )),
    }
}
/// Reads the session's last epoch as recorded: `Err(n)` with the number of
/// bytes read (at most one more than a record) when the state file is empty
/// (new, or deleted and recreated: `n` is 0) or holds anything but one
/// record (corrupt, or longer than its record).
pub(super) fn read_record(path: &Path, file: &File) -> Result<Result<u64, usize>> {
    let (bytes, n) = read_head(path, file)?;
    Ok(epoch::parse(&bytes[..n]).ok_or(n))
}
/// The state file's first bytes, at most one more than a record (a longer
/// file is not a record), and how many there are.
///
/// One `pread` asks for them all. A regular file gives fewer bytes than
/// asked only at its end, so a read of exactly a record's length (what
/// every write leaves) is the whole file and needs no second `pread` to see
/// the end. Any other short read is confirmed by reading on until the end
/// (a hand-written short record, an empty or corrupt file: not the hot
/// path), so no file system's short read can turn the prefix of a record
/// into a lower epoch.
fn read_head(path: &Path, file: &File) -> Result<([u8; epoch::RECORD_LEN + 1], usize)> {
    let mut buf = [0u8; epoch::RECORD_LEN + 1];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if n == epoch::RECORD_LEN {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read epoch file", path, e)),
        }
    }
    Ok((buf, n))
}
/// The epoch as [`read_epoch`] gives it, and the file's length when the
/// read saw all of it (at most a record's length): what
/// [`write_epoch_after`] needs to skip its `fstat` under the same lock.
pub(super) fn read_epoch_len(path: &Path, file: &File) -> Result<(u64, Option<u64>)> {
    let (bytes, n) = read_head(path, file)?;
    let len = (n <= epoch::RECORD_LEN).then_some(n as u64);
    Ok((floor_unless_record(path, &bytes[..n]), len))
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
    let (bytes, n) = read_head(path, file)?;
    Ok(floor_unless_record(path, &bytes[..n]))
}
/// The epoch a state file's content stands for: its record, else the clock
/// floor (with a warning unless the file is empty).
fn floor_unless_record(path: &Path, bytes: &[u8]) -> u64 {
    epoch::parse(bytes).unwrap_or_else(|| {
        if !bytes.is_empty() {
            tracing::warn!(
                target: "sessionlock::fence",
                path = %path.display(),
                "invalid epoch file; continuing above every earlier epoch"
            );
        }
        epoch_floor()
    })
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
    write_epoch_after(path, file, epoch, None)
}
/// [`write_epoch`] for a caller that read the file under the same state
/// lock and saw all of it: `len` is its length then (from
/// [`read_epoch_len`]). Nothing that takes the state lock can have changed
/// it since, so a file no longer than a record needs neither the `fstat`
/// nor a cut. `None`: look.
pub(super) fn write_epoch_after(
    path: &Path,
    file: &File,
    epoch: u64,
    len: Option<u64>,
) -> Result<()> {
    file.write_all_at(&epoch::format(epoch), 0)
        .map_err(|e| Error::io("write epoch file", path, e))?;
    let len = match len {
        Some(len) => len,
        None => file
            .metadata()
            .map_err(|e| Error::io("stat epoch file", path, e))?
            .len(),
    };
    if len > epoch::RECORD_LEN as u64 {
        file.set_len(epoch::RECORD_LEN as u64)
            .map_err(|e| Error::io("truncate epoch file", path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{Error, SessionLock};
    use std::fs;
    use std::path::Path;

    fn epoch_of(path: &Path) -> u64 {
        super::epoch::parse(&fs::read(path).expect("read epoch file")).expect("one record")
    }

    // Issue 15 item 3: the state file's descriptor is kept between
    // acquisitions. The path, not the kept descriptor, is the state file:
    // one renamed away (it keeps its link, so no link count shows it), deleted
    // or replaced since is left alone, and the next acquisition locks and
    // writes the file at the path.
    #[test]
    fn a_kept_state_file_is_dropped_once_the_path_names_another_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("s.jsonl");
        let state = dir.path().join("s.jsonl.epoch");
        let aside = dir.path().join("aside");
        let locks = SessionLock::new();
        let first = locks.acquire(&session).expect("acquire");
        let e1 = first.epoch();
        first.release().expect("release");

        fs::rename(&state, &aside).expect("rename away");
        let second = locks.acquire(&session).expect("acquire after rename");
        assert!(second.epoch() > e1, "the new file reads as the clock floor");
        assert_eq!(epoch_of(&state), second.epoch(), "written at the path");
        assert_eq!(epoch_of(&aside), e1, "the renamed file is left alone");
        let e2 = second.epoch();
        second.release().expect("release");

        fs::remove_file(&state).expect("delete");
        fs::write(&state, b"").expect("recreate empty");
        let third = locks.acquire(&session).expect("acquire after replace");
        assert!(third.epoch() > e2);
        assert_eq!(epoch_of(&state), third.epoch());
        third.release().expect("release");

        fs::remove_file(&state).expect("delete");
        let fourth = locks.acquire(&session).expect("acquire after delete");
        assert_eq!(epoch_of(&state), fourth.epoch());
        fourth.release().expect("release");
    }

    // A hard link planted at a kept state file is refused as it is at open.
    #[test]
    fn a_hard_link_to_a_kept_state_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("s.jsonl");
        let locks = SessionLock::new();
        locks
            .acquire(&session)
            .expect("acquire")
            .release()
            .expect("release");
        fs::hard_link(
            dir.path().join("s.jsonl.epoch"),
            dir.path().join("second-name"),
        )
        .expect("link");
        let err = locks.acquire(&session).expect_err("refused");
        assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
        assert!(err.to_string().contains("hard links"), "{err}");
    }

    // One `pread` serves a record; other lengths are read to their end.
    #[test]
    fn reads_every_length_to_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e");
        let cases: [(&[u8], Option<u64>, Option<u64>); 5] = [
            (b"", None, Some(0)),
            (b"7\n", Some(7), Some(2)),
            (b"00000000000000000042\n", Some(42), Some(21)),
            (b"00000000000000000042\n1", None, None),
            (b"00000000000000000042\n00000000000000000041\n", None, None),
        ];
        for (content, record, len) in cases {
            fs::write(&path, content).expect("write");
            let f = fs::File::open(&path).expect("open");
            assert_eq!(
                super::read_record(&path, &f).expect("read").ok(),
                record,
                "{content:?}"
            );
            let (epoch, seen) = super::read_epoch_len(&path, &f).expect("read");
            assert_eq!(seen, len, "{content:?}");
            if let Some(r) = record {
                assert_eq!(epoch, r);
            } else {
                assert!(epoch > 1_700_000_000_000_000, "the clock floor");
            }
        }
    }
}
