//! What only the file backend has to diagnose
//! ([design §9.4](crate::design#94-the-doctor-and-verify-fs)), as facts for the
//! doctor ([`crate::diag::doctor`]) to judge: the leftovers of interrupted
//! operations and their removal if unchanged, a transcript's torn tail and
//! lines that are not JSON, a state file that is not one epoch record, what
//! stands at a lock path that is no lock, and which sessionlock holders
//! OpenClaw would delete. The `verify-fs` checks are in
//! [`fscheck`](crate::backend::file::fscheck); the locks themselves come from
//! the backend's listing ([`LockBackend::list`](crate::LockBackend::list)).
//!
//! Everything here only reads, except [`remove_leftover`].

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::backend::file::epoch;
use crate::backend::file::fs::{Fs, RealFs};
use crate::backend::file::transcript::{self, Reader};
use crate::backend::file::waiters;
pub use crate::backend::file::waiters::Found;
use crate::backend::file::FileVersion;
use crate::error::{Error, Holder, Result};
use crate::identity::Liveness;
use crate::store::TornTail;
use crate::sys::KernelLocks;

/// How old a leftover temporary, tombstone or rewrite file must be before
/// the doctor removes it: the operations that create them finish within
/// milliseconds, so an older one belongs to a process that died.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(60);

/// Which kind of leftover file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeftoverKind {
    /// `s.jsonl.lock.tmp-<token>`: a payload an interrupted publish or
    /// extend never moved into place.
    Temp,
    /// `s.jsonl.lock.tomb-<token>`: a lock an interrupted release or reclaim
    /// moved aside.
    Tombstone,
    /// `s.jsonl.rewrite-<epoch>`: the new contents of an interrupted rewrite
    /// or truncate.
    Rewrite,
    /// `s.jsonl.torn-<epoch>[-<n>]`: bytes a repair cut off the transcript's
    /// end, kept for the operator.
    TornSide,
}

impl LeftoverKind {
    /// The reason name used in messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            LeftoverKind::Temp => "orphaned-temp",
            LeftoverKind::Tombstone => "orphaned-tombstone",
            LeftoverKind::Rewrite => "rewrite-leftover",
            LeftoverKind::TornSide => "torn-side-file",
        }
    }

    /// The name infix that marks this kind, after the session file's name.
    fn marker(self) -> &'static [u8] {
        match self {
            LeftoverKind::Temp => b".jsonl.lock.tmp-",
            LeftoverKind::Tombstone => b".jsonl.lock.tomb-",
            LeftoverKind::Rewrite => b".jsonl.rewrite-",
            LeftoverKind::TornSide => b".jsonl.torn-",
        }
    }

    /// The leftover kind of a file name, and the session file name before
    /// it; `None` for any other name.
    pub fn of_name(name: &[u8]) -> Option<(LeftoverKind, &[u8])> {
        [
            LeftoverKind::Temp,
            LeftoverKind::Tombstone,
            LeftoverKind::Rewrite,
            LeftoverKind::TornSide,
        ]
        .into_iter()
        .find_map(|kind| {
            let marker = kind.marker();
            let at = name.windows(marker.len()).position(|w| w == marker)?;
            // `marker` starts with `.jsonl`: keep it in the session name.
            let stem = &name[..at + b".jsonl".len()];
            (at > 0 && at + marker.len() < name.len()).then_some((kind, stem))
        })
    }
}

/// A leftover file, as examined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Which kind.
    pub kind: LeftoverKind,
    /// Its size in bytes.
    pub len: u64,
    /// Time since it was last modified.
    pub age: Duration,
    /// Which version of the file was examined: only this one is removed.
    pub stamp: FileVersion,
}

/// Examines a leftover file of kind `kind` as of `now`: `None` unless it is
/// a regular file (anything else with such a name is not sessionlock's).
pub fn examine_leftover(path: &Path, kind: LeftoverKind, now: SystemTime) -> Option<Leftover> {
    let m = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())?;
    let modified = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    Some(Leftover {
        kind,
        len: m.len(),
        age: now.duration_since(modified).unwrap_or_default(),
        stamp: FileVersion::of(&m),
    })
}

/// What [`remove_leftover`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Removed.
    Removed,
    /// Gone already.
    AlreadyGone,
    /// Not the file examined any more: left alone.
    Changed,
}

/// Removes a leftover if it is still the version examined.
///
/// # Errors
/// `Io` when it cannot be examined or removed.
pub fn remove_leftover(path: &Path, seen: &Leftover) -> Result<Removal> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Removal::AlreadyGone),
        Err(e) => return Err(Error::io("stat leftover", path, e)),
        Ok(m) if FileVersion::of(&m) != seen.stamp => return Ok(Removal::Changed),
        Ok(_) => {}
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(Removal::Removed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Removal::AlreadyGone),
        Err(e) => Err(Error::io("remove leftover", path, e)),
    }
}

/// Complete transcript lines that are not JSON values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLines {
    /// How many such lines.
    pub count: u64,
    /// Offset of the first.
    pub first_offset: u64,
    /// What is wrong with the first.
    pub first_reason: String,
}

/// A transcript, as examined.
#[derive(Debug)]
pub enum TranscriptCheck {
    /// Something other than a regular file has a transcript's name
    /// (`InvalidPath`).
    NotRegular(Error),
    /// It could not be read.
    Unreadable(Error),
    /// It was read: its problems, none when it is healthy.
    Read {
        /// A final line without `\n`.
        torn: Option<TornTail>,
        /// Complete lines that are not JSON.
        invalid: Option<InvalidLines>,
    },
}

/// Examines a transcript: `None` when it is a symlink (its target is
/// examined in its own directory, beside the lock acquirers use for it) or
/// gone since the directory was listed. Lines are checked, not parsed into
/// values: memory stays at one line.
pub fn check_transcript(path: &Path) -> Option<TranscriptCheck> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => return None,
        Ok(m) if !m.is_file() => {
            return Some(TranscriptCheck::NotRegular(Error::InvalidPath {
                path: path.to_owned(),
                reason: "is not a regular file".into(),
            }))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(TranscriptCheck::Unreadable(Error::io(
                "stat transcript",
                path,
                e,
            )))
        }
    }
    Some(read_transcript(path).unwrap_or_else(TranscriptCheck::Unreadable))
}

fn read_transcript(path: &Path) -> Result<TranscriptCheck> {
    let fs = RealFs;
    let file = fs
        .open_read(path)
        .map_err(|e| Error::io("open transcript", path, e))?;
    let torn = transcript::torn_tail(&fs, &file, path)?;
    let mut reader = Reader::open(path)?;
    let mut invalid: Option<InvalidLines> = None;
    while let Some(entry) = reader.next_raw() {
        match entry {
            Ok(_) => {}
            Err(Error::InvalidEntry { offset, reason, .. }) => match &mut invalid {
                Some(lines) => lines.count += 1,
                None => {
                    invalid = Some(InvalidLines {
                        count: 1,
                        first_offset: offset,
                        first_reason: reason,
                    })
                }
            },
            Err(e) => return Err(e),
        }
    }
    Ok(TranscriptCheck::Read { torn, invalid })
}

/// A session's state file (`*.jsonl.epoch`) that is not healthy.
#[derive(Debug)]
pub enum StateCheck {
    /// Something other than a regular file with one link stands there: a
    /// symlink (`what` is `symlink`), a directory or FIFO
    /// (`not-a-regular-file`), or a file with other hard links
    /// (`hard-linked`). The error's reason says which, for people.
    Unusable {
        /// Which (the finding's reason).
        what: &'static str,
        /// `InvalidPath`, naming the file.
        error: Error,
    },
    /// It could not be opened or read.
    Unreadable(Error),
    /// A regular file holding something other than one epoch record.
    InvalidRecord {
        /// Its size in bytes.
        len: u64,
        /// Its first bytes (at most one record and one byte).
        head: Vec<u8>,
    },
}

/// Examines a session's state file: `None` when it is healthy (an empty one
/// is a new session's) or gone.
pub fn check_state(path: &Path) -> Option<StateCheck> {
    let unusable = |what, reason: &str| {
        Some(StateCheck::Unusable {
            what,
            error: Error::InvalidPath {
                path: path.to_owned(),
                reason: reason.to_owned(),
            },
        })
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(crate::sys::NOFOLLOW_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) if crate::sys::is_symlink_error(&e) => {
            return unusable(
                "symlink",
                "a symbolic link stands where the session's epoch file belongs",
            )
        }
        Err(e) => {
            return Some(StateCheck::Unreadable(Error::io(
                "open epoch file",
                path,
                e,
            )))
        }
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => {
            return Some(StateCheck::Unreadable(Error::io(
                "stat epoch file",
                path,
                e,
            )))
        }
    };
    if !meta.is_file() {
        return unusable(
            "not-a-regular-file",
            "something other than a regular file stands where the session's epoch file belongs",
        );
    }
    if meta.nlink() > 1 {
        return unusable(
            "hard-linked",
            "the session's epoch file has more than one hard link, so it may be another file linked here",
        );
    }
    let mut head = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(
        &mut std::io::Read::take(&file, epoch::RECORD_LEN as u64 + 1),
        &mut head,
    ) {
        return Some(StateCheck::Unreadable(Error::io(
            "read epoch file",
            path,
            e,
        )));
    }
    if head.is_empty() || epoch::parse(&head).is_some() {
        return None;
    }
    Some(StateCheck::InvalidRecord {
        len: meta.len(),
        head,
    })
}

/// What stands at a lock path that holds no lock: `symlink`, `directory` or
/// `not-a-regular-file`.
pub fn not_a_lock(path: &Path) -> &'static str {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => "symlink",
        Ok(m) if m.is_dir() => "directory",
        _ => "not-a-regular-file",
    }
}

/// Why OpenClaw would delete a sessionlock holder's lock
/// ([design §14.1](crate::design#141-what-holds-in-each-direction)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exposure {
    /// The holder's arguments carry no `openclaw` marker: OpenClaw takes it
    /// for a `non-openclaw-owner` and deletes its lock (the holder runs
    /// without OpenClaw-compatible mode, or is a library in another program).
    UnmarkedArgv,
    /// The lock file is not readable by the users that own the OpenClaw
    /// locks beside it: OpenClaw takes it for a lock without a payload and
    /// deletes it after its grace.
    Unreadable,
}

impl Exposure {
    /// The name used in JSON (`unmarked-argv`, `unreadable`).
    pub fn as_str(self) -> &'static str {
        match self {
            Exposure::UnmarkedArgv => "unmarked-argv",
            Exposure::Unreadable => "unreadable",
        }
    }
}

/// Whether a holder is OpenClaw's (its payload names no `owner`).
pub fn is_openclaw_holder(h: &Holder) -> bool {
    h.owner.as_deref() == Some(crate::openclaw::OWNER)
}

/// The sessionlock holders among `locks` (the holders of one directory's
/// locks, with their liveness) that OpenClaw would delete, each by its index
/// in `locks` with why; empty unless the directory also holds an OpenClaw
/// lock. Only live local holders are judged: a dead one is reclaimable
/// anyway, and a remote one cannot be inspected.
pub fn openclaw_exposure(locks: &[(&Holder, Liveness)]) -> Vec<(usize, Exposure)> {
    if !locks.iter().any(|(h, _)| is_openclaw_holder(h)) {
        return Vec::new();
    }
    let oc_uids: Vec<u32> = locks
        .iter()
        .filter(|(h, _)| is_openclaw_holder(h))
        .filter_map(|(h, _)| std::fs::symlink_metadata(&h.lock_path).ok())
        .map(|m| m.uid())
        .collect();
    locks
        .iter()
        .enumerate()
        .filter(|(_, (h, liveness))| {
            h.owner.as_deref() == Some(crate::payload::OWNER) && *liveness == Liveness::Alive
        })
        .filter_map(|(i, (h, _))| {
            let pid = h.pid?;
            if crate::openclaw::process_is_marked(pid) == Some(false) {
                return Some((i, Exposure::UnmarkedArgv));
            }
            let m = std::fs::symlink_metadata(&h.lock_path).ok()?;
            let world_readable = m.mode() & 0o004 != 0;
            let other_uid = oc_uids.iter().any(|&u| u != m.uid() && u != 0);
            (other_uid && !world_readable).then_some((i, Exposure::Unreadable))
        })
        .collect()
}

/// A waiter record ([design §3.12](crate::design#312-the-line-of-waiters))
/// that no waiter in line stands behind, or that is not a record at all,
/// as examined.
#[derive(Debug)]
pub struct RecordCheck {
    /// Its name in the records' directory
    /// ([`DIR_NAME`](crate::backend::file::waiters::DIR_NAME)).
    pub name: OsString,
    /// The session file (in the examined directory) its name names.
    pub session: PathBuf,
    /// The pid its name names.
    pub pid: u32,
    /// What stands there.
    pub found: Found,
    /// Whether the place its name names is held in the session's line:
    /// then it is a live waiter's, and only shown here when it is not a
    /// usable record.
    pub in_line: bool,
    /// Whether its pid is a running process (with the record's start time,
    /// when it has one).
    pub alive: bool,
    /// Time since it was last modified.
    pub age: Duration,
    /// Which version was examined: only this one is removed.
    pub stamp: Option<FileVersion>,
}

/// The records' directory beside the sessions of a directory, as examined.
#[derive(Debug)]
pub enum RecordsCheck {
    /// There is none (no waiter has queued here yet).
    Missing,
    /// Something other than a directory stands at its name (`symlink`, or
    /// `not-a-directory`): never followed; waiters write no records.
    NotADirectory(&'static str),
    /// It could not be read.
    Unreadable(Error),
    /// Its records that need a look (a live waiter's usable record needs
    /// none).
    Listed(Vec<RecordCheck>),
}

/// Examines the waiter records beside the sessions of `dir`, judging
/// places by the kernel's list of locks `locks`. Only reads; names that are
/// not records' are ignored.
pub(crate) fn check_waiter_records(
    dir: &Path,
    locks: &KernelLocks,
    now: SystemTime,
) -> RecordsCheck {
    let at = dir.join(waiters::DIR_NAME);
    let d = match waiters::open_dir(dir, false) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return RecordsCheck::Missing,
        Err(e) => {
            return match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => RecordsCheck::NotADirectory("symlink"),
                Ok(m) if !m.is_dir() => RecordsCheck::NotADirectory("not-a-directory"),
                _ => RecordsCheck::Unreadable(Error::io("open directory", &at, e)),
            }
        }
    };
    let names = match rustix::fs::Dir::read_from(&d) {
        Ok(list) => list
            .filter_map(|e| e.ok())
            .map(|e| OsString::from(OsStr::from_bytes(e.file_name().to_bytes())))
            .collect::<Vec<_>>(),
        Err(e) => return RecordsCheck::Unreadable(Error::io("list directory", &at, e.into())),
    };
    let mut out = Vec::new();
    for name in names {
        let Some((session, pid, place)) = waiters::parse_name(name.as_bytes()) else {
            continue;
        };
        let session = dir.join(OsStr::from_bytes(session));
        let found = waiters::read_at(&d, &name);
        let in_line = std::fs::symlink_metadata(state_path(&session))
            .ok()
            .filter(std::fs::Metadata::is_file)
            .is_some_and(|m| super::queue::place_held(locks, (m.dev(), m.ino()), pid, place));
        let running = crate::sys::proc_stat(pid)
            .filter(|s| s.state != b'Z' && s.state != b'X')
            .map(|s| s.starttime);
        let alive = match (&found, running) {
            (_, None) => false,
            (Found::Record(r), Some(start)) => r.starttime.is_none_or(|s| s == start),
            (_, Some(_)) => true,
        };
        if in_line && alive && matches!(found, Found::Record(_)) {
            continue;
        }
        let meta = stat_at(&d, &name);
        let age = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default();
        out.push(RecordCheck {
            name,
            session,
            pid,
            found,
            in_line,
            alive,
            age,
            stamp: meta.as_ref().map(FileVersion::of),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    RecordsCheck::Listed(out)
}

/// The state file of a session file.
fn state_path(session: &Path) -> PathBuf {
    let mut s = session.as_os_str().to_owned();
    s.push(".epoch");
    PathBuf::from(s)
}

/// `lstat` of `name` in the directory `d`, never following it.
fn stat_at(d: &OwnedFd, name: &OsStr) -> Option<std::fs::Metadata> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(d, name, flags, Mode::empty()).ok()?;
    std::fs::File::from(fd).metadata().ok()
}

/// Removes the waiter record `name` beside the sessions of `dir` if it is
/// still the version examined (`stamp`), never following a symlink.
///
/// # Errors
/// `Io` when it cannot be examined or removed.
pub fn remove_waiter_record(dir: &Path, name: &OsStr, stamp: FileVersion) -> Result<Removal> {
    let at = dir.join(waiters::DIR_NAME).join(name);
    let d = match waiters::open_dir(dir, false) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Removal::AlreadyGone),
        Err(e) => return Err(Error::io("open the directory of", &at, e)),
    };
    match stat_at(&d, name) {
        None => return Ok(Removal::AlreadyGone),
        Some(m) if FileVersion::of(&m) != stamp => return Ok(Removal::Changed),
        Some(_) => {}
    }
    match rustix::fs::unlinkat(&d, name, AtFlags::empty()) {
        Ok(()) => Ok(Removal::Removed),
        Err(rustix::io::Errno::NOENT) => Ok(Removal::AlreadyGone),
        Err(e) => Err(Error::io("remove waiter record", &at, e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::LeftoverKind;

    #[test]
    fn leftover_names_are_recognized() {
        let kind = LeftoverKind::of_name;
        assert_eq!(
            kind(b"s.jsonl.lock.tmp-abc"),
            Some((LeftoverKind::Temp, &b"s.jsonl"[..]))
        );
        assert_eq!(
            kind(b"s.jsonl.lock.tomb-abc"),
            Some((LeftoverKind::Tombstone, &b"s.jsonl"[..]))
        );
        assert_eq!(
            kind(b"a.b.jsonl.rewrite-12"),
            Some((LeftoverKind::Rewrite, &b"a.b.jsonl"[..]))
        );
        assert_eq!(
            kind(b"s.jsonl.torn-12-3"),
            Some((LeftoverKind::TornSide, &b"s.jsonl"[..]))
        );
        assert_eq!(kind(b"s.jsonl.torn-"), None);
        assert_eq!(kind(b".jsonl.torn-1"), None);
        assert_eq!(kind(b"s.jsonl.epoch"), None);
    }
}
