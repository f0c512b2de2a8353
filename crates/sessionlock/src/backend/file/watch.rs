//! Directory watches kept for reuse.
//!
//! An acquisition that waits needs an inotify instance on the lock's
//! directory, and creating one per wait does not scale: closing an instance
//! waits for the kernel to destroy it (an SRCU grace period, 5–20 ms), so
//! under contention, with a wait every few hundred microseconds, closed
//! instances pile up until the per-user limit (`max_user_instances`, 128 by
//! default) refuses new ones and waiters fall back to polling. So a watch
//! whose wait is over is kept, per directory, and the next wait in that
//! directory takes it back. A kept watch is disarmed (its inotify watches
//! removed): otherwise every event of the directory would be copied to it,
//! by the process causing it, while nobody reads them.

use crate::sync::lock;
use crate::sys::DirWatch;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// At most this many idle watches are kept, the most recently used ones:
/// inotify instances count against a per-user limit (128 by default)
/// shared by every process of the user.
const KEEP: usize = 4;

type Idle = Mutex<Vec<(PathBuf, DirWatch)>>;

fn idle() -> &'static Idle {
    static IDLE: OnceLock<Idle> = OnceLock::new();
    IDLE.get_or_init(Default::default)
}

/// A watch of `dir` whose waits end on events for `names`: a kept one if
/// there is one still usable, else a new one.
pub(super) fn take(dir: &Path, names: &[&OsStr]) -> std::io::Result<DirWatch> {
    if let Some(w) = reuse(dir, names) {
        return Ok(w);
    }
    let none: &OsStr = OsStr::new("");
    let (first, rest) = names.split_first().unwrap_or((&none, &[]));
    let mut w = DirWatch::new(dir, first)?;
    for n in rest {
        w = w.also(n);
    }
    Ok(w)
}

fn reuse(dir: &Path, names: &[&OsStr]) -> Option<DirWatch> {
    loop {
        let kept = {
            let mut idle = lock(idle());
            let at = idle.iter().rposition(|(d, _)| d == dir);
            at.map(|i| idle.remove(i).1)
        };
        let mut w = kept?;
        // Dropping an unusable one closes it (in the background).
        if w.recycle(names).is_ok() {
            return Some(w);
        }
    }
}

/// Keeps `watch` of `dir` for the next wait there, disarmed meanwhile.
pub(super) fn put(dir: PathBuf, mut watch: DirWatch) {
    watch.disarm();
    let evicted = {
        let mut idle = lock(idle());
        idle.push((dir, watch));
        (idle.len() > KEEP).then(|| idle.remove(0))
    };
    drop(evicted); // closed outside the mutex
}
