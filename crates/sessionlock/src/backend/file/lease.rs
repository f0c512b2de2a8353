//! A published lease and the fence of its writes.

use super::key::*;
use super::state::*;
use crate::error::{Error, LossCause, Result};
use crate::payload::Payload;
use crate::sync::lock;
use crate::sys::FlockKind;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A lease published by the file backend.
#[derive(Debug)]
pub struct FileLease {
    pub(super) key: FileKey,
    /// What a republish changes. Operations on one lease are serialized by
    /// its guard (the watchdog's revocation aside, which only reads), so
    /// this is taken briefly, never across a wait.
    pub(super) cur: std::sync::Mutex<Published>,
    /// The session's state file, kept open for fenced writes (and, once the
    /// lease is gone, by the process for its next acquisition).
    pub(super) state: StateFile,
}
#[derive(Debug)]
pub(super) struct Published {
    pub(super) payload: Payload,
    pub(super) epoch: u64,
    /// Our lock file, kept open (never read): while it is open its inode
    /// number cannot be reused, so "the lock path has our inode" proves the
    /// lock is ours.
    #[allow(dead_code)]
    pub(super) lock: File,
    pub(super) ino: (u64, u64),
}
impl FileLease {
    /// The session.
    pub fn key(&self) -> &FileKey {
        &self.key
    }

    /// This lease's epoch and lock inode, as of now.
    pub(super) fn epoch_ino(&self) -> (u64, (u64, u64)) {
        let cur = lock(&self.cur);
        (cur.epoch, cur.ino)
    }

    /// This lease's token, for naming side files.
    pub(super) fn token(&self) -> Option<String> {
        lock(&self.cur).payload.token.clone()
    }
}
/// Another handle on the state file `f` (the same open file description,
/// so the same `flock`, as a `dup(2)` gave before issue 15, without the
/// system call), which [`lock_state`] may replace if the file was deleted.
/// All operations on one lease are serialized by its guard (fenced writes
/// and revocation by its mutex), so a lease never takes the state lock
/// twice at once through two handles.
pub(super) fn share(f: &StateFile) -> StateFile {
    std::sync::Arc::clone(f)
}
/// Whether the lock name no longer denotes the lock `ino` we published, and
/// how: removed, or replaced by another file.
pub(super) fn lost_lock(key: &FileKey, ino: (u64, u64)) -> Result<Option<LossCause>> {
    Ok(match lstat(&key.lock_path)? {
        Some(m) if (m.dev(), m.ino()) == ino => None,
        Some(_) => Some(LossCause::Replaced),
        None => Some(LossCause::Removed),
    })
}
pub(super) fn ino_of(path: &Path, f: &File) -> Result<(u64, u64)> {
    let m = f.metadata().map_err(|e| Error::io("stat", path, e))?;
    Ok((m.dev(), m.ino()))
}
/// The fence of the file backend: runs `f` only while the lease's epoch is
/// current and its lock file still the one it published, under a shared
/// `flock` of the session's state file that reclaim and revocation take
/// exclusively.
pub(crate) fn fenced<T>(lease: &FileLease, f: impl FnOnce() -> T) -> Result<T> {
    let path = epoch_path(&lease.key);
    let mut state = share(&lease.state);
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
