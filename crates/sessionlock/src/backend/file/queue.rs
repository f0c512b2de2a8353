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
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::sys::{self, FlockKind};
use std::collections::HashMap;
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

/// A place in line, held from the moment a waiter queues until it publishes
/// (the publish drops it, under the state lock) or gives up (drop).
#[derive(Debug)]
pub(super) struct Place {
    shared: Arc<Shared>,
    lock_path: PathBuf,
    state_path: PathBuf,
    /// The line has stood still with the lock free since this epoch was
    /// seen at that instant (see [`STALL`]).
    still: Option<(Option<u64>, Instant)>,
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
    /// Waited past a stalled line: publish without looking at it.
    jumped: AtomicBool,
}

/// The places this process holds, by lock path (at most one per session:
/// only the in-process turn's owner waits across processes).
fn places() -> &'static Mutex<HashMap<PathBuf, Arc<Shared>>> {
    static PLACES: OnceLock<Mutex<HashMap<PathBuf, Arc<Shared>>>> = OnceLock::new();
    PLACES.get_or_init(Default::default)
}

impl Place {
    /// Queues: locks a byte at the end of the line. Returns the place and
    /// the session's epoch when it queued (`None` if the state lock was
    /// busy for more than a moment, or the record unreadable): every hold
    /// that starts after this has a larger epoch.
    pub(super) fn take(lock_path: &Path, state_path: &Path) -> Result<(Place, Option<u64>)> {
        let mut file = open_state(state_path)?;
        let len = u64::from(sys::pid()) + 1;
        let io = |e| Error::io("queue for the session lock at", state_path, e);
        let line_up = |f: &File| -> Result<u64> {
            let mut pos = sys::monotonic_ns();
            loop {
                if sys::ofd_try_lock(f, BASE + pos, len, true).map_err(io)? {
                    return Ok(pos);
                }
                // A place that queued moments ago still spans this one's
                // start: queue after its end.
                pos = match sys::ofd_conflict(f, BASE + pos, len).map_err(io)? {
                    Some((start, n)) => (start + n).saturating_sub(BASE).max(pos + 1),
                    None => pos + 1,
                };
            }
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
                Some(g) => Some((read_record(state_path, g.file)?.ok(), line_up(g.file)?)),
                None => None,
            }
        };
        let (epoch, pos) = match under_lock {
            Some(got) => got,
            None => (None, line_up(&file)?),
        };
        let shared = Arc::new(Shared {
            file,
            pos,
            len,
            left: AtomicBool::new(false),
            jumped: AtomicBool::new(false),
        });
        lock(places()).insert(lock_path.to_owned(), shared.clone());
        tracing::debug!(
            target: "sessionlock::wait",
            lock = %lock_path.display(),
            epoch,
            "queued for the session lock"
        );
        Ok((
            Place {
                shared,
                lock_path: lock_path.to_owned(),
                state_path: state_path.to_owned(),
                still: None,
            },
            epoch,
        ))
    }

    /// Whether a waiter queued before this one still waits (or this place
    /// has been passed over for a stalled line: then no).
    pub(super) fn behind_others(&self) -> Result<bool> {
        if self.shared.jumped.load(Ordering::Relaxed) || self.shared.left.load(Ordering::Relaxed) {
            return Ok(false);
        }
        sys::ofd_conflict(&self.shared.file, BASE, self.shared.pos)
            .map(|c| c.is_some())
            .map_err(|e| {
                Error::io(
                    "look at the line for the session lock at",
                    &self.state_path,
                    e,
                )
            })
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

    /// Called on each look while behind others: whether the line has stood
    /// still, with the lock free, for [`STALL`]; then this place stops
    /// waiting for those before it (logged).
    pub(super) fn stalled(&mut self) -> bool {
        if !self.lock_is_free() {
            self.still = None;
            return false;
        }
        let epoch = read_record(&self.state_path, &self.shared.file)
            .ok()
            .and_then(Result::ok);
        match self.still {
            Some((seen, since)) if seen == epoch => {
                if since.elapsed() < STALL {
                    return false;
                }
                let stuck = first_in_line(&self.shared.file);
                tracing::warn!(
                    target: "sessionlock::wait",
                    lock = %self.lock_path.display(),
                    stuck_pid = stuck,
                    stalled_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "the line for the session lock stands still with the lock free; not waiting for the waiters before us"
                );
                self.shared.jumped.store(true, Ordering::Relaxed);
                true
            }
            _ => {
                self.still = Some((epoch, Instant::now()));
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
    }
}

/// Whether a publisher must let others go first: with this process's place
/// for `lock_path`, whether a waiter queued before it still waits; without
/// one, whether anybody waits. `state` is the publisher's descriptor of the
/// state file (its own open file description). Runs under the state lock.
pub(super) fn others_first(lock_path: &Path, state: &File) -> std::io::Result<bool> {
    let mine = lock(places()).get(lock_path).cloned();
    match mine {
        Some(p) if p.jumped.load(Ordering::Relaxed) => Ok(false),
        Some(p) => sys::ofd_conflict(&p.file, BASE, p.pos).map(|c| c.is_some()),
        None => sys::ofd_conflict(state, BASE, 0).map(|c| c.is_some()),
    }
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
        .filter_map(|(first, last)| u32::try_from(last - first).ok())
        .collect()
}

/// The process of the first waiter in line for the state file `file`.
pub(super) fn first_in_line(file: &File) -> Option<u32> {
    line_of(file).first().copied()
}
