//! Naming sessions: canonical session paths, lock paths and versions of a
//! lock file.

use super::confine;
use crate::backend::{Inspection, SessionId};
use crate::error::{Error, Result};
use std::ffi::{OsStr, OsString};
use std::io::{self};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A session as the file backend names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// The canonical session file
    /// ([design §2](crate::design#2-on-disk-formats)): every path to one file
    /// gives the same value.
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
/// The longest session file name the file backend accepts: its longest side
/// file name (`<name>.lock.tomb-<32 hex>`, 43 bytes more) must fit the
/// 255-byte `NAME_MAX` of Linux file systems.
pub const MAX_SESSION_NAME: usize = 255 - LONGEST_SIDE_SUFFIX;
/// `.lock.tomb-` and a 32-character token: the longest suffix any side file
/// adds to the session file name. The others: `.lock` (5), `.lock.tmp-<32>`
/// (42), `.epoch` (6), `.rewrite-<epoch>` (at most 29) and
/// `.torn-<epoch>[-<n>]` (at most 29).
pub(super) const LONGEST_SIDE_SUFFIX: usize = ".lock.tomb-".len() + 32;
pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
/// Canonical session path ([design §2](crate::design#2-on-disk-formats)): the
/// directory resolved through symlinks, and the file itself resolved where it
/// is a symlink. Creates the directory if missing (only inside `root`, when
/// given). A symlink someone untrusted may have planted is not followed (see
/// `confine`).
pub(super) fn canonical_session(
    path: &Path,
    root: Option<&Path>,
    create: bool,
) -> Result<Option<PathBuf>> {
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

pub(super) fn lstat(path: &Path) -> Result<Option<std::fs::Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

pub(super) fn not_regular(path: &Path, m: &std::fs::Metadata) -> Error {
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

/// The epoch (state) file of a session.
pub(super) fn epoch_path(key: &FileKey) -> PathBuf {
    with_suffix(&key.session, ".epoch")
}

/// The key of `session`: its canonical path (through symlinked directories
/// and a symlinked file name, refusing one outside `root`) and its lock
/// path. With `create`, creates a missing directory; else gives `None`.
pub(super) fn key_of(session: &Path, root: Option<&Path>, create: bool) -> Result<Option<FileKey>> {
    let given = session;
    let Some(session) = canonical_session(session, root, create)? else {
        return Ok(None);
    };
    if let Some(root) = root {
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
