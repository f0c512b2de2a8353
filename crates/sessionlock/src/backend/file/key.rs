//! Naming sessions: canonical session paths, lock paths and versions of a
//! lock file.

use super::confine;
use crate::backend::{Inspection, SessionId};
use crate::error::{Error, Result};
use crate::sync::lock;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

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
/// The canonical session path, and whether the path's file name was a
/// symlink that was followed.
type Resolved = Option<(PathBuf, bool)>;
/// Canonical session path ([design §2](crate::design#2-on-disk-formats)): the
/// directory resolved through symlinks, and the file itself resolved where it
/// is a symlink. Creates the directory if missing (only inside `root`, when
/// given). A symlink someone untrusted may have planted is not followed (see
/// `confine`).
pub(super) fn canonical_session(
    path: &Path,
    root: Option<&Path>,
    create: bool,
) -> Result<Resolved> {
    let mut cur = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("resolve current directory for", path, e))?
            .join(path)
    };
    for hop in 0..40 {
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
            _ => return Ok(Some((candidate, hop > 0))),
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
///
/// Keys of absolute paths are cached ([`KeyCache`]): a repeated key costs
/// two system calls (three for a path through a symlinked directory) that
/// check the cached one still holds, not the resolution's one per path
/// component.
pub(super) fn key_of(session: &Path, root: Option<&Path>, create: bool) -> Result<Option<FileKey>> {
    let cacheable = session.is_absolute();
    if cacheable {
        if let Some(key) = KeyCache::get(session, root) {
            return Ok(Some(key));
        }
    }
    let given = session;
    let Some((session, followed)) = canonical_session(session, root, create)? else {
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
    let key = FileKey { session, lock_path };
    // A followed file name is resolved afresh every time: its target, and
    // whether it may be followed at all, can change.
    if cacheable && !followed {
        KeyCache::put(given, root, &key);
    }
    Ok(Some(key))
}

/// How many keys a process keeps.
const KEY_CACHE_MAX: usize = 256;

/// Keys already resolved, by the path the caller gave (absolute) and the
/// sessions root. Resolving again walks every component of the path
/// (`canonicalize`: a `readlink` each) and looks at the file name; a cached
/// key is instead checked, at every use, to be what resolving would give
/// now:
///
/// 1. the kernel's name for the cached directory, read from an open
///    descriptor of it (`/proc/self/fd/N`), is still the canonical directory
///    of the key: the directory was neither moved nor removed, and no
///    component of its path became a symlink (a name the kernel gives is
///    made of directories only);
/// 2. if the caller's directory path differs from the canonical one (it went
///    through a symlink), it still leads to that directory (`stat`, device
///    and inode): a symlink on the way swapped to point elsewhere is noticed;
/// 3. the file name is still not a symlink (`lstat`): one planted since is
///    followed only through the resolution's checks (`confine::may_follow`).
///
/// Anything else (or any error) resolves afresh, which repeats every check
/// of issue 10 (untrusted symlinks, the sessions root). Keys whose file name
/// was a symlink are not cached. A directory descriptor is shared by the
/// keys of one directory.
struct KeyCache {
    keys: HashMap<(PathBuf, Option<PathBuf>), Cached>,
    dirs: HashMap<PathBuf, Arc<CachedDir>>,
}
struct Cached {
    key: FileKey,
    dir: Arc<CachedDir>,
    /// Whether the caller's directory path is not the canonical one.
    indirect: bool,
}
struct CachedDir {
    file: File,
    id: (u64, u64),
}
impl KeyCache {
    fn shared() -> &'static Mutex<KeyCache> {
        static CACHE: OnceLock<Mutex<KeyCache>> = OnceLock::new();
        CACHE.get_or_init(|| {
            Mutex::new(KeyCache {
                keys: HashMap::new(),
                dirs: HashMap::new(),
            })
        })
    }

    /// The cached key of `given` (absolute) under `root`, if there is one
    /// and it still holds.
    fn get(given: &Path, root: Option<&Path>) -> Option<FileKey> {
        let (key, dir, indirect) = {
            let cache = lock(Self::shared());
            let c = cache
                .keys
                .get(&(given.to_owned(), root.map(Path::to_owned)))?;
            (c.key.clone(), Arc::clone(&c.dir), c.indirect)
        };
        let canonical_dir = key.session.parent()?;
        if !names(&dir.file, canonical_dir) {
            return None;
        }
        if indirect {
            let m = std::fs::metadata(given.parent()?).ok()?;
            if (m.dev(), m.ino()) != dir.id {
                return None;
            }
        }
        match std::fs::symlink_metadata(&key.session) {
            Ok(m) if m.file_type().is_symlink() => None,
            _ => Some(key),
        }
    }

    /// Caches `key`, just resolved from `given` under `root`, if its
    /// directory can be opened and the kernel names it as resolved.
    fn put(given: &Path, root: Option<&Path>, key: &FileKey) {
        let (Some(canonical_dir), Some(given_dir)) = (key.session.parent(), given.parent()) else {
            return;
        };
        let mut cache = lock(Self::shared());
        if cache.keys.len() >= KEY_CACHE_MAX || cache.dirs.len() >= KEY_CACHE_MAX {
            // Rarely full (a process's sessions, by the paths it names them
            // by): start over rather than track use.
            cache.keys.clear();
            cache.dirs.clear();
        }
        // A kept descriptor of a directory removed (or moved) since, and
        // recreated at the same path, is not the directory just resolved.
        let kept = cache
            .dirs
            .get(canonical_dir)
            .filter(|dir| names(&dir.file, canonical_dir))
            .map(Arc::clone);
        let dir = match kept {
            Some(dir) => dir,
            None => {
                let Ok(file) = File::open(canonical_dir) else {
                    return;
                };
                let Ok(m) = file.metadata() else {
                    return;
                };
                if !m.is_dir() || !names(&file, canonical_dir) {
                    return;
                }
                let dir = Arc::new(CachedDir {
                    file,
                    id: (m.dev(), m.ino()),
                });
                cache
                    .dirs
                    .insert(canonical_dir.to_owned(), Arc::clone(&dir));
                dir
            }
        };
        cache.keys.insert(
            (given.to_owned(), root.map(Path::to_owned)),
            Cached {
                key: key.clone(),
                dir,
                indirect: given_dir != canonical_dir,
            },
        );
    }
}

/// Whether the kernel's name for the open directory `dir` is `path`.
fn names(dir: &File, path: &Path) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).is_ok_and(|p| p == path)
}

#[cfg(test)]
mod tests {
    use crate::{Error, FileBackend, LockBackend};
    use std::fs;
    use std::os::unix::fs::symlink;

    // Issue 15 item 3: keys are cached, and a cached key is used only while
    // resolving again would give it. A sessions directory moved out of the
    // root and replaced by a symlink to where it went: the path still leads
    // to the same directory, but it is outside the root now and refused.
    #[test]
    fn a_cached_key_is_not_used_once_its_directory_moved_out_of_the_root() {
        let base = tempfile::tempdir().expect("tempdir");
        let root = base.path().join("root");
        fs::create_dir_all(root.join("d")).expect("mkdir");
        fs::create_dir(base.path().join("out")).expect("mkdir");
        let b = FileBackend::default().confined(&root).expect("confined");
        let session = root.join("d/s.jsonl");
        let first = b.key(&session).expect("inside");
        assert_eq!(b.key(&session).expect("again"), first, "the cached key");

        fs::rename(root.join("d"), base.path().join("out/d")).expect("move out");
        symlink(base.path().join("out/d"), root.join("d")).expect("symlink");
        let err = b.key(&session).expect_err("outside the root now");
        assert!(
            matches!(&err, Error::InvalidPath { reason, .. } if reason.contains("outside the sessions root")),
            "{err}"
        );
    }

    // An ancestor renamed and replaced by a symlink: the directory is the
    // same inode, but its canonical path is not the cached one.
    #[test]
    fn a_cached_key_follows_an_ancestor_that_became_a_symlink() {
        let base = tempfile::tempdir().expect("tempdir");
        let base = base.path().canonicalize().expect("canonical");
        fs::create_dir_all(base.join("a/d")).expect("mkdir");
        let b = FileBackend::default();
        let session = base.join("a/d/s.jsonl");
        assert_eq!(b.key(&session).expect("key").session, session);
        fs::rename(base.join("a"), base.join("b")).expect("rename");
        symlink(base.join("b"), base.join("a")).expect("symlink");
        assert_eq!(
            b.key(&session).expect("key").session,
            base.join("b/d/s.jsonl"),
            "resolved again"
        );
    }

    // A directory removed and made again: the kept descriptor of the old
    // one is not used, and the key is cached with the new one.
    #[test]
    fn a_cached_key_of_a_recreated_directory_is_resolved_and_kept_again() {
        let base = tempfile::tempdir().expect("tempdir");
        let base = base.path().canonicalize().expect("canonical");
        let session = base.join("d/s.jsonl");
        fs::create_dir(base.join("d")).expect("mkdir");
        let b = FileBackend::default();
        assert_eq!(b.key(&session).expect("key").session, session);
        for _ in 0..2 {
            fs::remove_dir(base.join("d")).expect("rmdir");
            fs::create_dir(base.join("d")).expect("mkdir");
            assert_eq!(b.key(&session).expect("key").session, session);
            assert!(
                super::KeyCache::get(&session, None).is_some(),
                "kept with the new directory"
            );
        }
    }

    // A file name that became a symlink since is followed (and checked) as
    // a fresh resolution would; a caller's symlinked directory repointed
    // elsewhere leads there.
    #[test]
    fn a_cached_key_notices_a_new_symlink_at_the_name_or_a_repointed_directory() {
        let base = tempfile::tempdir().expect("tempdir");
        let base = base.path().canonicalize().expect("canonical");
        fs::create_dir(base.join("d1")).expect("mkdir");
        fs::create_dir(base.join("d2")).expect("mkdir");
        let b = FileBackend::default();

        let session = base.join("d1/s.jsonl");
        assert_eq!(b.key(&session).expect("key").session, session);
        symlink("t.jsonl", &session).expect("symlink at the name");
        assert_eq!(
            b.key(&session).expect("key").session,
            base.join("d1/t.jsonl")
        );

        symlink(base.join("d1"), base.join("link")).expect("dir symlink");
        let via = base.join("link/u.jsonl");
        assert_eq!(b.key(&via).expect("key").session, base.join("d1/u.jsonl"));
        fs::remove_file(base.join("link")).expect("unlink");
        symlink(base.join("d2"), base.join("link")).expect("repoint");
        assert_eq!(b.key(&via).expect("key").session, base.join("d2/u.jsonl"));
    }
}
