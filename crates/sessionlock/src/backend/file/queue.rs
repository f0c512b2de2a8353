//! The session's line of waiters across processes
//! ([design §3.12](crate::design#312-the-line-of-waiters)).
//!
//! A waiter that found the lock taken takes a **place**: a write lock on a
//! byte range of the state file starting at [`BASE`] plus the
//! `CLOCK_MONOTONIC` nanoseconds at which it queued, one byte longer than
//! the waiter's pid (so that whoever reads the kernel's list of locks can
//! tell who waits where), taken through an open file description of its own
//! (`F_OFD_SETLK`). Places are ordered by where they start, so earlier
//! waiters come first whatever their process. A publisher with a
//! place publishes only while no byte before its own is locked; a publisher
//! without one (a newcomer, or an in-process hand-off) only while no byte
//! at all is locked. A place's lock belongs to its open file description,
//! so the kernel drops it when the waiter's process dies, and a waiter that
//! gives up drops it itself and touches the state file (an `ATTRIB` event,
//! the line's doorbell) so that the next waiter looks at once.
//!
//! These are byte-range locks, far beyond the 21 bytes of the state file's
//! record; on local file systems they are independent of the `flock` that
//! is the state lock. On network file systems, where `flock` is emulated
//! with byte-range locks, the line is not used (waiters poll, unordered).

use super::state::{lock_state, open_state, read_record, StateFile};
use super::waiters::{self, InLine, WaiterRecord};
use super::{FileBackend, FileKey};
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::sys::KernelLocks;
use crate::sys::{self, FlockKind};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The first byte a place can lock: 2^40, far beyond the state record.
pub(super) const BASE: u64 = 1 << 40;
/// How long the line may stand still, with the lock free, before the
/// waiters behind its first place stop waiting for it: a waiter stopped
/// (SIGSTOP, a debugger, a hung page fault) while in line keeps its place,
/// and nobody else would publish. A live first waiter publishes within
/// microseconds of the lock going free.
pub(super) const STALL: Duration = Duration::from_millis(500);
/// How often a waiter behind others looks at the line without an event: the
/// bound on noticing a place dropped by a process that died, and on noticing
/// a stall.
pub(super) const LOOK_EVERY: Duration = Duration::from_millis(250);
/// How long a waiter waits in line before it writes its waiter record
/// (`waiters.rs`), at its next look: most waits under contention last a
/// few milliseconds, and a record for each would cost every contended
/// acquisition a file created and removed (measured: 10-40% of the
/// contention bench's throughput on a loaded 2-vCPU machine), for waits
/// nobody could see anyway.
pub(super) const RECORD_AFTER: Duration = Duration::from_millis(20);

/// A place in line, held from the moment a waiter queues until it publishes
/// (the publish drops it, under the state lock) or gives up (drop).
#[derive(Debug)]
pub(super) struct Place {
    shared: Arc<Shared>,
    lock_path: PathBuf,
    state_path: PathBuf,
    /// A place ahead of this one, by where it starts, has not moved since
    /// that instant (see [`STALL`]).
    still: Option<(u64, Instant)>,
}

#[derive(Debug)]
struct Shared {
    /// The place's own open file description of the state file (opened for
    /// it, never one kept for acquisitions).
    file: StateFile,
    /// The locked bytes are `[BASE + pos, BASE + pos + len)`; `len` is one
    /// more than the waiter's pid.
    pos: u64,
    len: u64,
    /// Dropped: published, or gave up.
    left: AtomicBool,
    /// The place's waiter record (`waiters.rs`): to write once the waiter
    /// has waited [`RECORD_AFTER`], then written (and removed when the
    /// place is dropped).
    record: Mutex<Record>,
    /// When the place was taken.
    taken: Instant,
}

/// A place's waiter record.
#[derive(Debug)]
enum Record {
    /// None to write (not asked for, or it could not be written).
    None,
    /// To write, for the session file.
    Due(Box<WaiterRecord>, PathBuf),
    /// Written.
    Written(waiters::Written),
}

/// The places this process holds, by lock path (at most one per session:
/// only the in-process turn's owner waits across processes).
fn places() -> &'static Mutex<HashMap<PathBuf, Arc<Shared>>> {
    static PLACES: OnceLock<Mutex<HashMap<PathBuf, Arc<Shared>>>> = OnceLock::new();
    PLACES.get_or_init(Default::default)
}

impl Place {
    /// Queues: locks a range at the end of the line, then writes the
    /// waiter record `who` (with its place filled in) for others to see,
    /// if given. Returns the place and the session's epoch when it queued
    /// (`None` if the state lock was busy for more than a moment, or the
    /// state record unreadable): every hold that starts after this has a
    /// larger epoch.
    pub(super) fn take(
        lock_path: &Path,
        state_path: &Path,
        who: Option<WaiterRecord>,
    ) -> Result<Option<(Place, Option<u64>)>> {
        let mut file = open_state(state_path)?;
        let len = u64::from(sys::pid()) + 1;
        let io = |e| Error::io("queue for the session lock at", state_path, e);
        // At the end of the line: after every place there is, so the order
        // is the order of queueing whatever the clocks. `None`: no place can
        // be taken (a lock of some other program covers the rest of the
        // file, or places keep appearing): wait without one.
        let line_up = |f: &File| -> Result<Option<u64>> {
            for _ in 0..MAX_STEPS {
                let Some(end) = line_end(f).map_err(io)? else {
                    return Ok(None);
                };
                if sys::ofd_try_lock(f, BASE + end, len, true).map_err(io)? {
                    return Ok(Some(end));
                }
            }
            Ok(None)
        };
        // Shared: no publish runs while we read the epoch and queue, so no
        // hold can start between the two, and every hold after `epoch`
        // comes after our place. Never waits long: a process stopped inside
        // the state lock must not hold up queueing (then the epoch is not
        // known).
        let under_lock = {
            let g = lock_state(
                state_path,
                &mut file,
                FlockKind::Shared,
                Some(Instant::now() + Duration::from_millis(2)),
            )
            .ok();
            match &g {
                Some(g) => Some((
                    read_record(state_path, g.file).ok().and_then(Result::ok),
                    line_up(g.file)?,
                )),
                None => None,
            }
        };
        let (epoch, pos) = match under_lock {
            Some(got) => got,
            None => (None, line_up(&file)?),
        };
        let Some(pos) = pos else {
            tracing::debug!(
                target: "sessionlock::wait",
                lock = %lock_path.display(),
                "cannot queue for the session lock; waiting without a place"
            );
            return Ok(None);
        };
        // Written later, after the place: a record is shown only while its
        // place is held.
        let record = match who {
            Some(mut rec) => {
                rec.place = pos;
                Record::Due(Box::new(rec), session_of(lock_path))
            }
            None => Record::None,
        };
        let shared = Arc::new(Shared {
            file,
            pos,
            len,
            left: AtomicBool::new(false),
            record: Mutex::new(record),
            taken: Instant::now(),
        });
        lock(places()).insert(lock_path.to_owned(), shared.clone());
        tracing::debug!(
            target: "sessionlock::wait",
            lock = %lock_path.display(),
            epoch,
            "queued for the session lock"
        );
        Ok(Some((
            Place {
                shared,
                lock_path: lock_path.to_owned(),
                state_path: state_path.to_owned(),
                still: None,
            },
            epoch,
        )))
    }

    /// Whether a waiter queued before this one still waits (one found
    /// stopped in line does not count, see [`Place::stalled`]). Called at
    /// the start of every wait and at every look: writes the waiter record
    /// once the waiter has waited [`RECORD_AFTER`].
    pub(super) fn behind_others(&self) -> Result<bool> {
        if self.shared.left.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let behind = ahead_of(&self.shared.file, &self.state_path, self.shared.pos)
            .map(|p| p.is_some())
            .map_err(|e| {
                Error::io(
                    "look at the line for the session lock at",
                    &self.state_path,
                    e,
                )
            })?;
        // Only for a wait that goes on: not for a first waiter about to
        // take a free lock.
        if self.record_due() && (behind || !self.lock_is_free()) {
            self.record_if_due();
        }
        Ok(behind)
    }

    /// Whether the waiter record is due and not written yet.
    fn record_due(&self) -> bool {
        self.shared.taken.elapsed() >= RECORD_AFTER
            && matches!(*lock(&self.shared.record), Record::Due(..))
    }

    /// Writes the waiter record if it is due.
    fn record_if_due(&self) {
        if self.shared.taken.elapsed() < RECORD_AFTER {
            return;
        }
        let mut record = lock(&self.shared.record);
        if !matches!(*record, Record::Due(..)) {
            return;
        }
        if let Record::Due(rec, session) = std::mem::replace(&mut *record, Record::None) {
            match waiters::write(&session, &rec) {
                Ok(w) => *record = Record::Written(w),
                Err(e) => tracing::debug!(
                    target: "sessionlock::wait",
                    lock = %self.lock_path.display(),
                    error = %e,
                    "cannot write the waiter record; waiting without one"
                ),
            }
        }
    }

    /// The state file the place is in.
    pub(super) fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// Whether nobody holds the lock now (nothing at its path).
    pub(super) fn lock_is_free(&self) -> bool {
        matches!(
            std::fs::symlink_metadata(&self.lock_path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound
        )
    }

    /// Called on each look while behind others: whether a waiter ahead of
    /// this one has kept its place for [`STALL`] while its process is
    /// stopped (`SIGSTOP`, a debugger). Such a place is then passed over by
    /// every look of this process at the line (while its process stays
    /// stopped), and this waiter looks again (logged).
    pub(super) fn stalled(&mut self) -> bool {
        let Ok(Some((start, len))) = ahead_of(&self.shared.file, &self.state_path, self.shared.pos)
        else {
            self.still = None;
            return false;
        };
        match self.still {
            Some((seen, since)) if seen == start => {
                let pid = pid_of(len);
                if since.elapsed() < STALL || !sys::process_stopped(pid) {
                    return false;
                }
                tracing::warn!(
                    target: "sessionlock::wait",
                    lock = %self.lock_path.display(),
                    stuck_pid = pid,
                    stalled_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "a waiter ahead in the line for the session lock is stopped; not waiting for it"
                );
                lock(stuck()).insert((self.state_path.clone(), start, len));
                self.still = None;
                true
            }
            _ => {
                self.still = Some((start, Instant::now()));
                false
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        lock(places()).remove(&self.lock_path);
        if !self.shared.left.swap(true, Ordering::Relaxed) {
            // Gave up (timeout, cancelled, an error): leave the line and ring,
            // so that the waiter after us does not wait for its next look.
            let _ = sys::ofd_unlock(&self.shared.file, BASE + self.shared.pos, self.shared.len);
            let _ = sys::touch(&self.shared.file);
        }
        // Out of the line either way (a publish left it under the state
        // lock, where the record's removal would only lengthen the lock's
        // hold): the record goes now.
        if let Record::Written(w) = std::mem::replace(&mut *lock(&self.shared.record), Record::None)
        {
            w.remove();
        }
    }
}

/// The session file of the lock `lock_path` (the path without `.lock`).
fn session_of(lock_path: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let bytes = lock_path.as_os_str().as_bytes();
    PathBuf::from(std::ffi::OsStr::from_bytes(
        bytes.strip_suffix(b".lock").unwrap_or(bytes),
    ))
}

/// Whether a publisher must let others go first: with this process's place
/// for `lock_path`, whether a waiter queued before it still waits; without
/// one, whether anybody waits. `state` is the publisher's descriptor of the
/// state file (its own open file description). Runs under the state lock.
pub(super) fn others_first(
    lock_path: &Path,
    state_path: &Path,
    state: &File,
) -> std::io::Result<bool> {
    let mine = lock(places()).get(lock_path).cloned();
    let ahead = match mine {
        Some(p) => ahead_of(&p.file, state_path, p.pos)?,
        None => ahead_of(state, state_path, i64::MAX as u64 - BASE)?,
    };
    Ok(ahead.is_some())
}

/// Linux pids are below 2^22, so a place is at most this long.
const MAX_PLACE: u64 = (1 << 22) + 1;
/// How many locks one look at the line steps over at most.
const MAX_STEPS: usize = 256;

/// The pid of the waiter whose place is `len` bytes long.
fn pid_of(len: u64) -> u32 {
    u32::try_from(len.saturating_sub(1)).unwrap_or(0)
}

/// Places found stopped in line ([`Place::stalled`]), by state file, start
/// and length: passed over while their process stays stopped.
fn stuck() -> &'static Mutex<HashSet<(PathBuf, u64, u64)>> {
    static STUCK: OnceLock<Mutex<HashSet<(PathBuf, u64, u64)>>> = OnceLock::new();
    STUCK.get_or_init(Default::default)
}

/// A place another description holds before position `pos` (relative to
/// [`BASE`]), as `(start, len)`: a waiter ahead. Locks that are not places
/// (longer than a pid allows, or to the end of the file: some other
/// program's) are stepped over, and so are places found stopped in line
/// whose process is still stopped.
fn ahead_of(file: &File, state_path: &Path, pos: u64) -> std::io::Result<Option<(u64, u64)>> {
    let mut stuck = lock(stuck());
    if !stuck.is_empty() {
        // A stopped waiter that resumed gets its place back.
        stuck.retain(|(path, _, len)| path != state_path || sys::process_stopped(pid_of(*len)));
    }
    let skip = |start: u64, len: u64| stuck.contains(&(state_path.to_owned(), start, len));
    let mut ranges = vec![(BASE, BASE.saturating_add(pos).min(i64::MAX as u64))];
    for _ in 0..MAX_STEPS {
        let Some((lo, hi)) = ranges.pop() else {
            return Ok(None);
        };
        if hi <= lo {
            continue;
        }
        match sys::ofd_conflict(file, lo, hi - lo)? {
            None => {}
            Some((start, len)) if (2..=MAX_PLACE).contains(&len) && !skip(start, len) => {
                return Ok(Some((start, len)));
            }
            Some((start, len)) => {
                // Not a waiter: look on either side of it.
                ranges.push((lo, start));
                if len != 0 {
                    ranges.push((start.saturating_add(len), hi));
                }
            }
        }
    }
    Ok(None)
}

/// Where the line ends (relative to [`BASE`]): after the last place there
/// is, 0 for an empty line. `None` when it cannot be told: a lock of some
/// other program runs to the end of the file, or the line has more locks
/// than one look steps over.
fn line_end(file: &File) -> std::io::Result<Option<u64>> {
    let mut end = BASE;
    let mut ranges = vec![(BASE, None::<u64>)];
    for _ in 0..MAX_STEPS {
        let Some((lo, hi)) = ranges.pop() else {
            return Ok(Some(end - BASE));
        };
        if hi.is_some_and(|h| h <= lo) {
            continue;
        }
        match sys::ofd_conflict(file, lo, hi.map_or(0, |h| h - lo))? {
            None => {}
            Some((_, 0)) => return Ok(None),
            Some((start, len)) => {
                if (2..=MAX_PLACE).contains(&len) {
                    end = end.max(start.saturating_add(len));
                }
                ranges.push((lo, Some(start)));
                ranges.push((start.saturating_add(len), hi));
            }
        }
    }
    Ok(None)
}

/// Right before a publish links the lock: this process's place for
/// `lock_path`, if any, leaves the line (quietly: the new lock's appearance
/// wakes the waiters, and the next one in line must find itself first when
/// it looks then). Under the state lock, so no other publisher can take
/// the place's turn meanwhile.
pub(super) fn leave_to_publish(lock_path: &Path) {
    let mine = lock(places()).get(lock_path).cloned();
    if let Some(p) = mine {
        if !p.left.swap(true, Ordering::Relaxed) {
            let _ = sys::ofd_unlock(&p.file, BASE + p.pos, p.len);
        }
    }
}

/// The processes waiting in line for the state file `file`, first first,
/// from the kernel's list of locks (`/proc/locks`, which shows no pid for
/// open-file-description locks: a place's length tells it).
pub(super) fn line_of(file: &File) -> Vec<u32> {
    let Ok(m) = file.metadata() else {
        return Vec::new();
    };
    let mut places: Vec<(u64, u64)> = sys::ofd_locks(m.dev(), m.ino())
        .into_iter()
        .filter(|&(first, _)| first >= BASE)
        .collect();
    places.sort_unstable();
    places
        .into_iter()
        .filter_map(|(first, last)| u32::try_from(last.checked_sub(first)?).ok())
        .collect()
}

/// The process of the first waiter in line for the state file `file`.
pub(super) fn first_in_line(file: &File) -> Option<u32> {
    line_of(file).first().copied()
}

#[cfg_attr(not(feature = "internals"), allow(dead_code))] // the diagnostics'
impl FileBackend {
    /// The session's line as the kernel listed its places in `locks`,
    /// first first, each with its waiter's record if there is one; empty
    /// when nobody waits or the state file does not exist.
    pub(crate) fn line(&self, key: &FileKey, locks: &KernelLocks) -> Vec<InLine> {
        if locks.no_places(BASE) {
            return Vec::new();
        }
        let Ok(m) = std::fs::symlink_metadata(FileBackend::epoch_path(key)) else {
            return Vec::new();
        };
        if !m.is_file() {
            return Vec::new();
        }
        let mut places: Vec<(u64, u64)> = locks
            .ofd_locks(m.dev(), m.ino())
            .iter()
            .copied()
            .filter(|&(first, _)| first >= BASE)
            .collect();
        places.sort_unstable();
        places
            .into_iter()
            .filter_map(|(first, last)| {
                let pid = u32::try_from(last - first).ok()?;
                let place = first - BASE;
                Some(InLine {
                    pid,
                    place,
                    record: waiters::read(&key.session, pid, place),
                })
            })
            .collect()
    }
}

/// Whether the place `place` of the waiter `pid` is held in the line of
/// the state file with device and inode `dev_ino`, as `locks` lists them.
#[cfg_attr(not(feature = "internals"), allow(dead_code))] // the doctor's
pub(crate) fn place_held(locks: &KernelLocks, dev_ino: (u64, u64), pid: u32, place: u64) -> bool {
    let first = BASE.saturating_add(place);
    let last = first.saturating_add(u64::from(pid));
    locks
        .ofd_locks(dev_ino.0, dev_ino.1)
        .contains(&(first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other_description(state: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(state)
            .expect("open state file")
    }

    #[test]
    fn a_place_queues_after_every_place_there_is_whatever_its_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("s.jsonl.epoch");
        std::fs::write(&state, "").expect("state file");
        // A waiter with a large pid queued first: a long place.
        let big = other_description(&state);
        assert!(sys::ofd_try_lock(&big, BASE + 1000, 4_000_000, true).expect("lock"));
        let (b, _) = Place::take(&dir.path().join("b.lock"), &state, None)
            .expect("take")
            .expect("a place");
        assert!(b.shared.pos >= 1000 + 4_000_000, "{}", b.shared.pos);
        assert!(b.behind_others().expect("look"));
        // It leaves; a later waiter still queues behind b, not in the gap.
        sys::ofd_unlock(&big, BASE + 1000, 4_000_000).expect("unlock");
        assert!(!b.behind_others().expect("look"));
        let (c, _) = Place::take(&dir.path().join("c.lock"), &state, None)
            .expect("take")
            .expect("a place");
        assert!(c.shared.pos > b.shared.pos);
        // (b and c share this process, but not a description.)
        assert!(c.behind_others().expect("look"));
    }

    #[test]
    fn a_foreign_lock_to_the_end_of_the_file_means_no_line_not_a_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("s.jsonl.epoch");
        std::fs::write(&state, "").expect("state file");
        let other = other_description(&state);
        assert!(sys::ofd_try_lock(&other, 0, 0, true).expect("lockf-style lock"));
        let started = Instant::now();
        assert!(Place::take(&dir.path().join("s.jsonl.lock"), &state, None)
            .expect("take")
            .is_none());
        assert!(started.elapsed() < Duration::from_secs(1));
        // Nor does it count as a waiter.
        let mine = other_description(&state);
        assert!(!others_first(&dir.path().join("x.lock"), &state, &mine).expect("look"));
    }
}
