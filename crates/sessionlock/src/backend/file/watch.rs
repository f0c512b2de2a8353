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

/// At most this many idle watches are kept, the most recently used ones.
const KEEP: usize = 16;

/// What a kept watch watches: a directory (every change of its locks), or a
/// session's line (by its state file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Watched {
    Dir(PathBuf),
    Line(PathBuf),
}

type Idle = Mutex<Vec<(Watched, DirWatch)>>;

fn idle() -> &'static Idle {
    static IDLE: OnceLock<Idle> = OnceLock::new();
    IDLE.get_or_init(Default::default)
}

/// A watch of `dir` whose waits end on events for `names`: a kept one if
/// there is one still usable, else a new one.
pub(super) fn take(dir: &Path, names: &[&OsStr]) -> std::io::Result<DirWatch> {
    if let Some(w) = reuse(&Watched::Dir(dir.to_owned()), names)? {
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

/// A line watch ([`DirWatch::line`]) for the lock `name` in `dir` whose
/// state file is `state`.
pub(super) fn take_line(dir: &Path, name: &OsStr, state: &Path) -> std::io::Result<DirWatch> {
    if let Some(w) = reuse(&Watched::Line(state.to_owned()), &[name])? {
        return Ok(w);
    }
    DirWatch::line(dir, name, state)
}

fn reuse(what: &Watched, names: &[&OsStr]) -> std::io::Result<Option<DirWatch>> {
    loop {
        let kept = {
            let mut idle = lock(idle());
            let at = idle.iter().rposition(|(d, _)| d == what);
            at.map(|i| idle.remove(i).1)
        };
        let Some(mut w) = kept else {
            return Ok(None);
        };
        // Dropping an unusable one closes it (in the background).
        if w.recycle(names).is_ok() {
            return Ok(Some(w));
        }
    }
}

/// Keeps `watch` for the next wait on the same thing, disarmed meanwhile.
pub(super) fn put(what: Watched, mut watch: DirWatch) {
    watch.disarm();
    let evicted = {
        let mut idle = lock(idle());
        idle.push((what, watch));
        (idle.len() > KEEP).then(|| idle.remove(0))
    };
    drop(evicted); // closed outside the mutex
}
