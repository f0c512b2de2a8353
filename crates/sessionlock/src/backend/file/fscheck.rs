//! File-system checks: does a directory give what sessionlock relies on
//! (`docs/design.md` §11), and which fallbacks will be used there?
//!
//! [`verify`] exercises the operations the lock protocol and the transcript
//! store use (exclusive creation and linking, `O_TMPFILE`, `rename`, `flock`,
//! inotify, pidfds, `fsync`) for real, in a private scratch directory that it
//! creates inside the directory under test and removes afterwards, whatever
//! the outcome. Each check reports [`Status::Ok`], [`Status::Fallback`]
//! (unavailable, and sessionlock uses a documented fallback: the detail says
//! which) or [`Status::Fail`] (something sessionlock relies on does not work:
//! its guarantees do not hold in that directory).
//!
//! The checks show that the operations behave as required once, on this
//! machine; they cannot prove atomicity under every interleaving, nor that
//! locks work between machines sharing a network file system.
//!
//! ```
//! use sessionlock::fscheck::{self, Status};
//!
//! # fn main() -> Result<(), sessionlock::Error> {
//! let dir = tempfile::tempdir().expect("tempdir");
//! let checks = fscheck::verify(dir.path())?;
//! assert_eq!(checks.len(), fscheck::CHECKS.len());
//! for check in &checks {
//!     if check.status == Status::Fail {
//!         eprintln!("{}: {}", check.name, check.detail);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backend::file::fs::{Fs, RealFs};
use crate::error::{Error, Result};
use crate::sys::{self, DirWatch, FlockKind};

/// How long the notification check waits for inotify to report a create.
const NOTIFY_WAIT: Duration = Duration::from_secs(1);

/// The names of the checks [`verify`] runs, in the order it reports them.
/// They are stable: scripts may match on them.
pub const CHECKS: [&str; 10] = [
    "fs-type",
    "exclusive-create",
    "exclusive-link",
    "tmpfile-link",
    "rename-atomic",
    "flock",
    "notifications",
    "notifications-reliable",
    "pidfd",
    "fsync",
];

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// What sessionlock relies on works here.
    Ok,
    /// Unavailable here; sessionlock uses its fallback (named in the detail).
    Fallback,
    /// Something sessionlock relies on does not work here.
    Fail,
}

impl Status {
    /// `ok`, `fallback` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fallback => "fallback",
            Status::Fail => "fail",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Check {
    /// One of [`CHECKS`].
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found and, for a fallback or a failure, what it means for
    /// sessionlock.
    pub detail: String,
}

/// Runs every check of [`CHECKS`] in `dir`.
///
/// The checks run in a fresh scratch directory
/// `dir/.sessionlock-verify-fs-<pid>-<n>` (mode 0700), which is removed
/// afterwards, also when a check fails or panics.
///
/// # Errors
/// `Io` when `dir` cannot be opened, the scratch directory cannot be created
/// in it (missing, unwritable, read-only) or cannot be removed afterwards;
/// `InvalidPath` when `dir` is not a directory. A check that fails is not an
/// error: it is reported with [`Status::Fail`].
pub fn verify(dir: &Path) -> Result<Vec<Check>> {
    let meta = fs::metadata(dir).map_err(|e| Error::io("open directory", dir, e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidPath {
            path: dir.to_owned(),
            reason: "is not a directory".into(),
        });
    }
    let handle = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    let scratch = Scratch::create(dir)?;
    let reliable = sys::notifications_reliable(&handle);
    let checks = vec![
        fs_type(&handle),
        scratch.run("exclusive-create", exclusive_create),
        scratch.run("exclusive-link", exclusive_link),
        scratch.run("tmpfile-link", tmpfile_link),
        scratch.run("rename-atomic", rename_atomic),
        scratch.run("flock", flock),
        scratch.run("notifications", |d| notifications(d, reliable)),
        notifications_reliable(reliable),
        pidfd(),
        scratch.run("fsync", durability),
    ];
    scratch.remove()?;
    Ok(checks)
}

/// What a check found (`Ok`/`Fallback` and a detail), or why it failed.
type Outcome = std::result::Result<(Status, String), String>;

/// Turns an I/O error into a failure detail naming the step.
trait Step<T> {
    fn step(self, what: &str) -> std::result::Result<T, String>;
}

impl<T> Step<T> for io::Result<T> {
    fn step(self, what: &str) -> std::result::Result<T, String> {
        self.map_err(|e| format!("cannot {what}: {e}"))
    }
}

/// The private directory the checks run in; removed on drop if
/// [`Scratch::remove`] did not run (an early return or a panic).
struct Scratch {
    path: PathBuf,
    removed: bool,
}

impl Scratch {
    fn create(dir: &Path) -> Result<Self> {
        let path = dir.join(format!(
            ".sessionlock-verify-fs-{}-{}",
            sys::pid(),
            sys::monotonic_ns()
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io("create scratch directory in", dir, e))?;
        Ok(Scratch {
            path,
            removed: false,
        })
    }

    /// Runs one check in its own subdirectory, so that no check sees
    /// another's files (or their notifications).
    fn run(&self, name: &'static str, check: impl FnOnce(&Path) -> Outcome) -> Check {
        let dir = self.path.join(name);
        let outcome = fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .step("create a scratch subdirectory")
            .and_then(|()| check(&dir));
        match outcome {
            Ok((status, detail)) => Check {
                name,
                status,
                detail,
            },
            Err(detail) => Check {
                name,
                status: Status::Fail,
                detail,
            },
        }
    }

    fn remove(mut self) -> Result<()> {
        self.removed = true;
        fs::remove_dir_all(&self.path)
            .map_err(|e| Error::io("remove scratch directory", &self.path, e))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.removed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Creates a file that must not exist yet (mode 0600), exactly as the
/// transcript store does.
fn create_new(path: &Path) -> io::Result<File> {
    RealFs.create_new(path)
}

fn write_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    create_new(path)?.write_all(contents)
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// The file system's type, from `fstatfs`.
fn fs_type(dir: &File) -> Check {
    let (status, detail) = match sys::fs_magic(dir) {
        Ok(magic) => {
            let detail = match fs_name(magic) {
                Some((name, true)) => format!("{name} (0x{magic:x}), a network file system"),
                Some((name, false)) => format!("{name} (0x{magic:x})"),
                None => format!("unknown (0x{magic:x})"),
            };
            (Status::Ok, detail)
        }
        Err(e) => (
            Status::Fallback,
            format!(
                "cannot fstatfs the directory ({e}): taken for a network file system, waiters will poll every 5–100 ms"
            ),
        ),
    };
    Check {
        name: "fs-type",
        status,
        detail,
    }
}

/// The name of a `statfs` magic number, and whether it is a network (or
/// FUSE) file system.
fn fs_name(magic: u32) -> Option<(&'static str, bool)> {
    Some(match magic {
        0xef53 => ("ext2/ext3/ext4", false),
        0x5846_5342 => ("xfs", false),
        0x9123_683e => ("btrfs", false),
        0x0102_1994 => ("tmpfs", false),
        0x8584_58f6 => ("ramfs", false),
        0x794c_7630 => ("overlayfs", false),
        0x2fc1_2fc1 => ("zfs", false),
        0xf2f5_2010 => ("f2fs", false),
        0xca45_1a4e => ("bcachefs", false),
        0x3153_464a => ("jfs", false),
        0x5265_4973 => ("reiserfs", false),
        0x4d44 => ("vfat", false),
        0x2011_bab0 => ("exfat", false),
        0x5346_544e | 0x7366_746e => ("ntfs", false),
        0x7371_7368 => ("squashfs", false),
        0x9660 => ("iso9660", false),
        0x6969 => ("nfs", true),
        0x517b => ("smb", true),
        0xff53_4d42 => ("cifs", true),
        0xfe53_4d42 => ("smb2", true),
        0x0102_1997 => ("9p", true),
        0x00c3_6400 => ("ceph", true),
        0x5346_414f => ("afs", true),
        0x6573_5546 => ("fuse", true),
        0x4750_4653 => ("gpfs", true),
        0x0bd0_0bd0 => ("lustre", true),
        _ => return None,
    })
}

/// `O_CREAT|O_EXCL` of an existing name fails with `EEXIST` (named
/// temporary lock files, new transcripts).
fn exclusive_create(dir: &Path) -> Outcome {
    let path = dir.join("probe");
    create_new(&path).step("create a new file")?;
    match create_new(&path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((
            Status::Ok,
            "O_CREAT|O_EXCL of an existing name fails with EEXIST".into(),
        )),
        Err(e) => Err(format!(
            "O_CREAT|O_EXCL of an existing name failed with \"{e}\" instead of EEXIST"
        )),
        Ok(_) => Err(
            "O_CREAT|O_EXCL opened an existing file: temporary files and new transcripts could be shared by two writers"
                .into(),
        ),
    }
}

/// `link()` succeeds onto a free name and fails with `EEXIST` onto a taken
/// one, also a dangling symbolic link: this is the lock's mutual exclusion.
fn exclusive_link(dir: &Path) -> Outcome {
    let ours = dir.join("ours");
    write_new(&ours, b"ours").step("create a file")?;
    let theirs = dir.join("theirs");
    write_new(&theirs, b"theirs").step("create a second file")?;
    fs::hard_link(&ours, dir.join("free"))
        .map_err(|e| format!("link() onto a free name failed ({e}): locks cannot be published"))?;
    expect_eexist(fs::hard_link(&ours, &theirs), "an existing name")?;
    if fs::read(&theirs).step("read the existing file")? != b"theirs" {
        return Err("a failed link() changed the existing file's contents".into());
    }
    let dangling = dir.join("dangling");
    let also = match std::os::unix::fs::symlink("missing", &dangling) {
        Ok(()) => {
            expect_eexist(fs::hard_link(&ours, &dangling), "a dangling symbolic link")?;
            ", also onto a dangling symbolic link"
        }
        // Not what locks rely on; say it was not tried.
        Err(_) => " (symbolic links unsupported: not tried onto a dangling one)",
    };
    Ok((
        Status::Ok,
        format!(
            "link() onto a free name succeeds; onto an existing name it fails with EEXIST{also}"
        ),
    ))
}

fn expect_eexist(linked: io::Result<()>, onto: &str) -> std::result::Result<(), String> {
    match linked {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!(
            "link() onto {onto} failed with \"{e}\" instead of EEXIST"
        )),
        Ok(()) => Err(format!(
            "link() onto {onto} succeeded: two processes could both hold a lock"
        )),
    }
}

/// `O_TMPFILE` plus `linkat` through `/proc/self/fd`, the way locks are
/// published where possible (`docs/design.md` §3.4).
fn tmpfile_link(dir: &Path) -> Outcome {
    const FALLBACK: &str = "named temporary files will be used (a crash while publishing can leave one behind for the doctor)";
    let mut unnamed = match sys::open_tmpfile(dir) {
        Ok(f) => f,
        Err(e) => {
            return Ok((
                Status::Fallback,
                format!("O_TMPFILE unsupported ({e}): {FALLBACK}"),
            ))
        }
    };
    unnamed
        .write_all(b"unnamed")
        .step("write to an O_TMPFILE file")?;
    let named = dir.join("named");
    match sys::link_tmpfile(&unnamed, &named) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((
                Status::Fallback,
                format!("linkat via /proc/self/fd failed with \"{e}\" (is /proc mounted?): {FALLBACK}"),
            ))
        }
        // Publishing falls back only for the two cases above; any other
        // linkat error fails the publish.
        Err(e) => {
            return Err(format!(
                "linkat of an O_TMPFILE file via /proc/self/fd failed ({e}): publishing locks will fail"
            ))
        }
    }
    if fs::read(&named).step("read the linked file")? != b"unnamed" {
        return Err("the file linked from O_TMPFILE does not hold what was written".into());
    }
    let second = sys::open_tmpfile(dir).step("open a second O_TMPFILE file")?;
    match sys::link_tmpfile(&second, &named) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((
            Status::Ok,
            "O_TMPFILE and linkat via /proc/self/fd work; linkat onto an existing name fails with EEXIST"
                .into(),
        )),
        Err(e) => Err(format!(
            "linkat of an O_TMPFILE file onto an existing name failed with \"{e}\" instead of EEXIST"
        )),
        Ok(()) => Err(
            "linkat of an O_TMPFILE file replaced an existing name: two processes could both hold a lock"
                .into(),
        ),
    }
}

/// `rename()` replaces an existing name with the new file, a reader of the
/// old file keeps its contents, and a renamed-away name is gone at once
/// (republish, rewrite, release).
fn rename_atomic(dir: &Path) -> Outcome {
    let target = dir.join("target");
    write_new(&target, b"old\n").step("create a file")?;
    let mut reader = File::open(&target).step("open the file for reading")?;
    let tmp = dir.join("target.tmp");
    write_new(&tmp, b"new\n").step("create its replacement")?;
    let new_ino = fs::metadata(&tmp).step("stat the replacement")?.ino();
    fs::rename(&tmp, &target).step("rename a file over an existing one")?;
    let now = fs::metadata(&target).step("stat the renamed file")?;
    if now.ino() != new_ino || fs::read(&target).step("read the renamed file")? != b"new\n" {
        return Err("after rename() the name does not refer to the new file".into());
    }
    if exists(&tmp) {
        return Err("rename() left the source name in place".into());
    }
    let mut old = Vec::new();
    reader
        .read_to_end(&mut old)
        .step("read the replaced file through a descriptor opened before the rename")?;
    if old != b"old\n" {
        return Err(format!(
            "a reader holding the replaced file read {:?} instead of its old contents",
            String::from_utf8_lossy(&old)
        ));
    }
    let tomb = dir.join("target.tomb");
    fs::rename(&target, &tomb).step("rename a file away")?;
    if exists(&target) {
        return Err("after rename() away the old name still exists".into());
    }
    Ok((
        Status::Ok,
        "rename() replaces an existing file, a reader of the old file keeps reading its old contents, and a name renamed away is gone at once"
            .into(),
    ))
}

/// `flock` excludes between two open file descriptions of one file, shares
/// shared locks, and is dropped by unlock and by close (the state lock).
fn flock(dir: &Path) -> Outcome {
    const BROKEN: &str =
        "the state lock would not serialize publish, reclaim, revocation and fenced writes";
    let path = dir.join("state");
    write_new(&path, b"").step("create a file")?;
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .step("open the file")
    };
    let first = open()?;
    let second = open()?;
    let try_second = |kind| sys::try_flock(&second, kind).step("try a non-blocking flock");

    sys::flock(&first, FlockKind::Exclusive).step("take an exclusive flock")?;
    if try_second(FlockKind::Exclusive)? {
        return Err(format!(
            "a second open file description took an exclusive flock while the first held one: {BROKEN}"
        ));
    }
    sys::funlock(&first).step("unlock a flock")?;
    if !try_second(FlockKind::Exclusive)? {
        return Err(format!(
            "after the first open file description unlocked, the second still could not take the flock (EWOULDBLOCK): {BROKEN}"
        ));
    }
    sys::funlock(&second).step("unlock a flock")?;

    sys::flock(&first, FlockKind::Shared).step("take a shared flock")?;
    if !try_second(FlockKind::Shared)? {
        return Err("a shared flock excluded another shared one: fenced writes would serialize needlessly and could deadlock".into());
    }
    sys::funlock(&second).step("unlock a flock")?;
    if try_second(FlockKind::Exclusive)? {
        return Err(format!(
            "an exclusive flock was granted while a shared one was held: {BROKEN}"
        ));
    }
    drop(first);
    // A process another thread of ours forks in this instant holds a copy
    // of the descriptor until it execs (it is close-on-exec): the lock may
    // outlive the close by that long, never longer.
    let settled = Instant::now() + Duration::from_millis(200);
    let mut freed = try_second(FlockKind::Exclusive)?;
    while !freed && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(1));
        freed = try_second(FlockKind::Exclusive)?;
    }
    if !freed {
        return Err(
            "a flock outlived the close of its only descriptor: a crashed holder would block everyone"
                .into(),
        );
    }
    Ok((
        Status::Ok,
        "a second open file description cannot take an exclusive flock while another is held (EWOULDBLOCK), shares a shared one, and gets it after unlock or close"
            .into(),
    ))
}

/// An inotify watch on the directory sees a file created in it.
fn notifications(dir: &Path, reliable: bool) -> Outcome {
    const POLL: &str = "waiters will poll every 5–100 ms";
    let name = "probe";
    let watch = match DirWatch::new(dir, OsStr::new(name)) {
        Ok(w) => w,
        Err(e) => {
            return Ok((
                Status::Fallback,
                format!("inotify unavailable ({e}): {POLL}"),
            ))
        }
    };
    let started = Instant::now();
    create_new(&dir.join(name)).step("create a file")?;
    let deadline = started + NOTIFY_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ready = sys::poll_readable(&[watch.fd()], Some(left)).step("wait for notifications")?;
        if !ready.is_empty() && watch.drain().step("read notifications")? {
            let after = match started.elapsed() {
                d if d < Duration::from_millis(1) => format!("{} µs", d.as_micros()),
                d => format!("{:.1} ms", d.as_secs_f64() * 1000.0),
            };
            return Ok((
                Status::Ok,
                format!("inotify reported a file created in the directory after {after}"),
            ));
        }
    }
    let missed = format!(
        "inotify reported no event within {} s of a file created in the directory",
        NOTIFY_WAIT.as_secs()
    );
    if reliable {
        Err(format!(
            "{missed}: waiters here would notice a released lock only through the 1 s safety net; use Notify::Poll ({POLL})"
        ))
    } else {
        Ok((
            Status::Fallback,
            format!("{missed}; this is a network or FUSE file system, so {POLL}"),
        ))
    }
}

/// Whether waiters trust inotify here (local file system) or poll.
fn notifications_reliable(reliable: bool) -> Check {
    let (status, detail) = if reliable {
        (
            Status::Ok,
            "local file system: waiters sleep until inotify reports a change".to_owned(),
        )
    } else {
        (
            Status::Fallback,
            "network or FUSE file system (or fstatfs failed): inotify misses other machines' changes, so waiters will poll every 5–100 ms"
                .to_owned(),
        )
    };
    Check {
        name: "notifications-reliable",
        status,
        detail,
    }
}

/// `pidfd_open` of our own pid, with which waiters notice a holder's exit.
fn pidfd() -> Check {
    let (status, detail) = match sys::pidfd_open(sys::pid()) {
        Some(_) => (
            Status::Ok,
            "pidfd_open works: waiters wake as soon as a holder exits".to_owned(),
        ),
        None => (
            Status::Fallback,
            "pidfd_open of our own pid failed (kernel before 5.3, or forbidden): waiters use the lease timer and a 1 s safety net to notice a dead holder"
                .to_owned(),
        ),
    };
    Check {
        name: "pidfd",
        status,
        detail,
    }
}

/// `fsync` and `fdatasync` of a file and `fsync` of its directory, which the
/// transcript store uses for durable appends, rewrites and repairs.
fn durability(dir: &Path) -> Outcome {
    let synced = || -> std::result::Result<(), String> {
        let mut file = create_new(&dir.join("data")).step("create a file")?;
        file.write_all(b"entry\n").step("write a file")?;
        file.sync_all().step("fsync a file")?;
        file.sync_data().step("fdatasync a file")?;
        File::open(dir)
            .step("open the directory")?
            .sync_all()
            .step("fsync the directory")
    };
    synced().map_err(|e| {
        format!("{e}: durable transcript appends, rewrites, truncations and repairs will fail")
    })?;
    Ok((
        Status::Ok,
        "fsync and fdatasync of a file and fsync of its directory succeed".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    fn names(checks: &[Check]) -> Vec<&'static str> {
        checks.iter().map(|c| c.name).collect()
    }

    #[test]
    fn verify_runs_every_check_in_order_and_leaves_nothing_behind() {
        let dir = tempdir();
        let checks = verify(dir.path()).expect("verify");
        assert_eq!(names(&checks), CHECKS);
        for c in &checks {
            assert_ne!(c.status, Status::Fail, "{}: {}", c.name, c.detail);
            assert!(!c.detail.is_empty(), "{} has no detail", c.name);
        }
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "scratch files left: {left:?}");
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let dir = tempdir();
        let missing = dir.path().join("missing");
        match verify(&missing) {
            Err(Error::Io { path, source, .. }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }

    #[test]
    fn a_file_is_not_a_directory() {
        let dir = tempdir();
        let file = dir.path().join("file");
        fs::write(&file, b"").expect("write");
        assert!(matches!(verify(&file), Err(Error::InvalidPath { .. })));
    }

    #[test]
    fn the_scratch_directory_is_removed_when_dropped_early() {
        let dir = tempdir();
        let scratch = Scratch::create(dir.path()).expect("scratch");
        let path = scratch.path.clone();
        let check = scratch.run("fails", |d| {
            fs::write(d.join("left"), b"x").step("write")?;
            Err("failed on purpose".into())
        });
        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.detail, "failed on purpose");
        assert!(path.join("fails").join("left").exists());
        drop(scratch);
        assert!(!path.exists());
    }

    #[test]
    fn a_check_whose_subdirectory_exists_fails_with_the_step() {
        let dir = tempdir();
        let scratch = Scratch::create(dir.path()).expect("scratch");
        fs::create_dir(scratch.path.join("flock")).expect("mkdir");
        let check = scratch.run("flock", flock);
        assert_eq!(check.status, Status::Fail);
        assert!(
            check
                .detail
                .starts_with("cannot create a scratch subdirectory:"),
            "{}",
            check.detail
        );
        scratch.remove().expect("remove");
    }

    /// Runs one check in a fresh directory and insists it passed.
    fn passes(check: impl FnOnce(&Path) -> Outcome) -> String {
        let dir = tempdir();
        match check(dir.path()) {
            Ok((Status::Ok, detail)) => detail,
            other => panic!("expected ok, got {other:?}"),
        }
    }

    #[test]
    fn exclusive_create_passes_on_a_local_file_system() {
        assert!(passes(exclusive_create).contains("EEXIST"));
    }

    #[test]
    fn exclusive_link_passes_on_a_local_file_system() {
        assert!(passes(exclusive_link).contains("dangling symbolic link"));
    }

    #[test]
    fn tmpfile_link_passes_or_names_its_fallback() {
        let dir = tempdir();
        match tmpfile_link(dir.path()) {
            Ok((Status::Ok, _)) => {}
            Ok((Status::Fallback, detail)) => {
                assert!(detail.contains("named temporary files"), "{detail}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rename_passes_on_a_local_file_system() {
        passes(rename_atomic);
    }

    #[test]
    fn flock_passes_on_a_local_file_system() {
        assert!(passes(flock).contains("EWOULDBLOCK"));
    }

    #[test]
    fn try_flock_reports_contention_as_false() {
        let dir = tempdir();
        let path = dir.path().join("f");
        fs::write(&path, b"").expect("write");
        let a = File::open(&path).expect("open");
        let b = File::open(&path).expect("open");
        assert!(sys::try_flock(&a, FlockKind::Exclusive).expect("lock"));
        assert!(!sys::try_flock(&b, FlockKind::Shared).expect("try"));
    }

    #[test]
    fn notifications_see_a_create_on_a_local_file_system() {
        assert!(passes(|d| notifications(d, true)).contains("inotify reported"));
    }

    #[test]
    fn fsync_passes_on_a_local_file_system() {
        passes(durability);
    }

    #[test]
    fn pidfd_and_reliability_report_their_fallbacks() {
        assert_ne!(pidfd().status, Status::Fail);
        assert_eq!(notifications_reliable(true).status, Status::Ok);
        let poll = notifications_reliable(false);
        assert_eq!(poll.status, Status::Fallback);
        assert!(poll.detail.contains("poll every 5–100 ms"));
    }

    #[test]
    fn file_system_names() {
        assert_eq!(fs_name(0xef53), Some(("ext2/ext3/ext4", false)));
        assert_eq!(fs_name(0x0102_1994), Some(("tmpfs", false)));
        assert_eq!(fs_name(0x6969), Some(("nfs", true)));
        assert_eq!(fs_name(0xff53_4d42), Some(("cifs", true)));
        assert_eq!(fs_name(0x1234_5678), None);
        let dir = tempdir();
        let check = fs_type(&File::open(dir.path()).expect("open"));
        assert_eq!(check.status, Status::Ok);
        assert!(check.detail.contains("(0x"), "{}", check.detail);
    }

    #[test]
    fn status_names() {
        assert_eq!(Status::Ok.as_str(), "ok");
        assert_eq!(Status::Fallback.as_str(), "fallback");
        assert_eq!(Status::Fail.as_str(), "fail");
    }
}
