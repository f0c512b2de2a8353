//! Linux implementation of the platform layer.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::fs::inotify;
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags};

/// Flags for opening files that must never be followed through a symlink nor
/// block on a FIFO.
pub(crate) const NOFOLLOW_NONBLOCK: i32 =
    rustix::fs::OFlags::NOFOLLOW.bits() as i32 | rustix::fs::OFlags::NONBLOCK.bits() as i32;

/// `O_NOFOLLOW` alone.
pub(crate) const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// The errno for "too many levels of symbolic links" (what `O_NOFOLLOW`
/// returns on a symlink).
pub(crate) fn is_symlink_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(Errno::LOOP.raw_os_error())
}

/// Our own process id.
pub(crate) fn pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// What `/proc/<pid>/stat` tells about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3: the state letter (`Z` for zombie, `X` for dead).
    pub state: u8,
    /// Field 22: start time in clock ticks since boot.
    pub starttime: u64,
}

/// Reads `/proc/<pid>/stat`. `None` when the process does not exist or the
/// file cannot be parsed.
pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    let raw = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&raw)
}

/// Parses the contents of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub(crate) fn parse_proc_stat(raw: &[u8]) -> Option<ProcStat> {
    let close = raw.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // Fields after the name start at field 3 (state).
    let state = *fields.next()?.as_bytes().first()?;
    // Field 22 is the 20th field after the name (3 + 19).
    let starttime = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, starttime })
}

/// This process's start time, read once.
pub(crate) fn self_starttime() -> Option<u64> {
    static START: OnceLock<Option<u64>> = OnceLock::new();
    *START.get_or_init(|| proc_stat(pid()).map(|s| s.starttime))
}

/// This machine's boot id, read once.
pub(crate) fn boot_id() -> Option<&'static str> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// This machine's host name, read once.
pub(crate) fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    })
}

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether a process with this pid exists: `kill(pid, 0)` succeeds or fails
/// with `EPERM` (a process of another user). Any error other than `ESRCH` is
/// taken as "exists", because wrongly declaring a live holder dead would break
/// mutual exclusion.
pub(crate) fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    !matches!(rustix::process::test_kill_process(pid), Err(Errno::SRCH))
}

/// Whether the process `pid` is stopped (state `T`, or `t` under a
/// debugger, in `/proc/<pid>/stat`): SIGSTOP, a job-control stop, a
/// breakpoint. `false` when it does not exist or cannot be read.
pub(crate) fn process_stopped(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| matches!(s.state, b'T' | b't'))
}

/// The argument vector of a process as the kernel shows it to others
/// (`/proc/<pid>/cmdline`, NUL-separated), or of this process for `None`.
/// Reads at most 64 KiB; `Err` when the process is gone or unreadable.
pub(crate) fn cmdline(pid: Option<u32>) -> io::Result<Vec<std::ffi::OsString>> {
    use std::io::Read as _;
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/cmdline"),
        None => "/proc/self/cmdline".to_owned(),
    };
    let mut raw = Vec::new();
    File::open(path)?.take(64 * 1024).read_to_end(&mut raw)?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| OsStr::from_bytes(a).to_owned())
        .collect())
}

/// Opens a pidfd for `pid`: it becomes readable when the process exits
/// (including when it becomes a zombie). `None` when the process is already
/// gone or pidfds are not supported.
pub(crate) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw)?;
    rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok()
}

/// Creates an unnamed regular file in `dir` (`O_TMPFILE`, mode 0600), to be
/// given a name with [`link_tmpfile`]. `Err` where the file system does not
/// support it; callers fall back to a named temporary file.
pub(crate) fn open_tmpfile(dir: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(File::from(fd))
}

/// Gives a file from [`open_tmpfile`] the name `to`, atomically; fails with
/// `AlreadyExists` if `to` exists. Uses the `/proc/self/fd` link, which needs
/// no privilege (unlike `AT_EMPTY_PATH`).
pub(crate) fn link_tmpfile(file: &File, to: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let from = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        from.as_str(),
        rustix::fs::CWD,
        to,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

/// Swaps the names `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`);
/// both must exist. `Unsupported` where the file system cannot (NFS, some
/// FUSE file systems), so callers can fall back to a plain rename.
pub(crate) fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "renameat2(RENAME_EXCHANGE) is not supported here",
        )),
        Err(e) => Err(e.into()),
    }
}

/// 16 random bytes from the kernel.
pub(crate) fn random_bytes() -> io::Result<[u8; 16]> {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf)
}

/// `CLOCK_MONOTONIC` in nanoseconds: comparable across processes of one
/// machine (used by benchmarks and the demo to time hand-offs).
pub(crate) fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Kinds of advisory kernel lock taken on the per-session state file.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FlockKind {
    Shared,
    Exclusive,
}

/// Takes a blocking `flock` on `file`, retrying on `EINTR`. Only for files
/// no other process knows of (the probe files of `verify-fs`); the state
/// lock is taken with [`try_flock`] and a bounded wait.
#[cfg(feature = "internals")] // only `verify-fs` (`fscheck`) uses it
pub(crate) fn flock(file: &File, kind: FlockKind) -> io::Result<()> {
    let op = match kind {
        FlockKind::Shared => rustix::fs::FlockOperation::LockShared,
        FlockKind::Exclusive => rustix::fs::FlockOperation::LockExclusive,
    };
    loop {
        match rustix::fs::flock(file, op) {
            Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Tries a `flock` without blocking: `Ok(false)` when another open file
/// description holds a conflicting one.
pub(crate) fn try_flock(file: &File, kind: FlockKind) -> io::Result<bool> {
    let op = match kind {
        FlockKind::Shared => rustix::fs::FlockOperation::NonBlockingLockShared,
        FlockKind::Exclusive => rustix::fs::FlockOperation::NonBlockingLockExclusive,
    };
    loop {
        match rustix::fs::flock(file, op) {
            Ok(()) => return Ok(true),
            Err(Errno::WOULDBLOCK) => return Ok(false),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The processes the kernel lists in `/proc/locks` as holding a `flock` on
/// the file with device `dev` and inode `ino` (waiters excluded), in the
/// kernel's order. Empty when `/proc` is unavailable or nobody is listed;
/// pids of processes in other pid namespaces may be absent or 0 (dropped).
/// Diagnostics only: the list may be stale as soon as it is read.
pub(crate) fn flock_holders(dev: u64, ino: u64) -> Vec<u32> {
    locks_of(dev, ino, parse_locks_line)
}

/// What `parse` makes of each `/proc/locks` line about the file with device
/// `dev` and inode `ino` (as the kernel prints it, `maj:min:ino`); empty
/// when `/proc` is unavailable.
fn locks_of<T>(dev: u64, ino: u64, parse: impl Fn(&[u8], &str) -> Option<T>) -> Vec<T> {
    use std::io::{BufRead, Read};
    let Ok(f) = File::open("/proc/locks") else {
        return Vec::new();
    };
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    );
    // One line per lock; a hostile file system cannot make it unbounded,
    // but cap what is read all the same.
    io::BufReader::new(f.take(1 << 20))
        .split(b'\n')
        .map_while(Result::ok)
        .filter_map(|line| parse(&line, &want))
        .collect()
}

/// The holder pid of one `/proc/locks` line if it is a `FLOCK` held (not
/// waited for: `->`) on the file `dev_ino` (`maj:min:ino`, as the kernel
/// prints it).
pub(crate) fn parse_locks_line(line: &[u8], dev_ino: &str) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split_ascii_whitespace();
    let _id = fields.next()?;
    let kind = fields.next()?;
    if kind != "FLOCK" {
        return None; // a POSIX lock, or "->" for a blocked waiter
    }
    let _mode = fields.next()?;
    let _access = fields.next()?;
    let pid: u32 = fields.next()?.parse().ok()?;
    (fields.next()? == dev_ino && pid != 0).then_some(pid)
}

/// An open-file-description lock on bytes `[start, start + len)` of
/// `file` (`F_OFD_SETLK`): a write lock when `write`, else a read lock. Such
/// a lock belongs to the open file description, not the process: another
/// description of the same file conflicts with it even in this process, and
/// the kernel drops it when the description's last descriptor closes (the
/// process dies). Returns whether it was granted; never waits.
pub(crate) fn ofd_try_lock(file: &File, start: u64, len: u64, write: bool) -> io::Result<bool> {
    let kind = if write { libc::F_WRLCK } else { libc::F_RDLCK };
    match ofd_fcntl(file, libc::F_OFD_SETLK, kind, start, len) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Drops this description's locks on `[start, start + len)`.
pub(crate) fn ofd_unlock(file: &File, start: u64, len: u64) -> io::Result<()> {
    ofd_fcntl(file, libc::F_OFD_SETLK, libc::F_UNLCK, start, len).map(drop)
}

/// The first lock another open file description holds on a byte of
/// `[start, start + len)` (`len` 0: to the end of every possible file), as
/// `(start, len)` (`F_OFD_GETLK`); `None` when there is none.
pub(crate) fn ofd_conflict(file: &File, start: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let fl = ofd_fcntl(file, libc::F_OFD_GETLK, libc::F_WRLCK, start, len)?;
    if fl.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(None);
    }
    let num = |v: libc::off_t| u64::try_from(v).unwrap_or(0);
    Ok(Some((num(fl.l_start), num(fl.l_len))))
}

fn ofd_fcntl(
    file: &File,
    cmd: libc::c_int,
    kind: libc::c_int,
    start: u64,
    len: u64,
) -> io::Result<libc::flock> {
    let too_far = || io::Error::from(io::ErrorKind::InvalidInput);
    // SAFETY: `flock` is plain old data; all-zero is a valid value of it
    // (and `l_pid` must be 0 for the OFD commands).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::try_from(start).map_err(|_| too_far())?;
    fl.l_len = libc::off_t::try_from(len).map_err(|_| too_far())?;
    loop {
        // SAFETY: the descriptor is open for the call's duration (borrowed
        // from `file`) and `fl` is a valid, exclusively borrowed `flock`,
        // which is what these commands read and (GETLK) write.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
        if r != -1 {
            return Ok(fl);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The byte ranges `(first, last)` of the open-file-description locks the
/// kernel lists (`/proc/locks`) on the file `(dev, ino)`. (The kernel shows
/// no pid for these.)
pub(crate) fn ofd_locks(dev: u64, ino: u64) -> Vec<(u64, u64)> {
    locks_of(dev, ino, parse_ofd_line)
}

/// The byte range `(first, last)` of one `/proc/locks` line if it is an
/// `OFDLCK` held (not waited for) on the file `dev_ino`, e.g.
/// `3: OFDLCK ADVISORY WRITE -1 08:01:1234 5 9`. A range to the end of the
/// file (`EOF`) is left out.
pub(crate) fn parse_ofd_line(line: &[u8], dev_ino: &str) -> Option<(u64, u64)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split_ascii_whitespace();
    let _id = fields.next()?;
    if fields.next()? != "OFDLCK" {
        return None;
    }
    let _mode = fields.next()?;
    let _access = fields.next()?;
    let _pid = fields.next()?;
    if fields.next()? != dev_ino {
        return None;
    }
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// Sets `file`'s access and modification times to now: an `ATTRIB` event
/// for whoever watches its directory.
pub(crate) fn touch(file: &File) -> io::Result<()> {
    let now = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
    };
    rustix::fs::futimens(file, &now).map_err(io::Error::from)
}

/// The file system's magic number (`statfs` `f_type`).
pub(crate) fn fs_magic(dir: &File) -> io::Result<u32> {
    let st = rustix::fs::fstatfs(dir)?;
    // Magic numbers are 32-bit; `f_type`'s width and sign differ between targets.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u32;
    Ok(magic)
}

/// Drops a `flock` taken by [`flock`].
pub(crate) fn funlock(file: &File) -> io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::Unlock).map_err(io::Error::from)
}

/// Whether the file system holding `dir` delivers inotify events for changes
/// made by other machines' clients. Network and FUSE file systems do not, so
/// waiters there poll.
pub(crate) fn notifications_reliable(dir: &File) -> bool {
    const NETWORK_FS: &[i64] = &[
        0x6969,      // NFS
        0x517b,      // SMB
        0xff53_4d42, // CIFS
        0xfe53_4d42, // SMB2
        0x0102_1997, // 9P
        0x00c3_6400, // Ceph
        0x5346_414f, // AFS
        0x6573_5546, // FUSE
    ];
    fs_magic(dir).is_ok_and(|magic| !NETWORK_FS.contains(&i64::from(magic)))
}

/// An inotify watch on one directory that reports changes to one name in it.
#[derive(Debug)]
pub(crate) struct DirWatch {
    /// Always `Some` until dropped.
    fd: Option<OwnedFd>,
    /// The names whose events end a wait.
    names: Vec<Box<[u8]>>,
    /// What is watched, with which events, and the watch descriptor while
    /// armed.
    targets: Vec<(std::path::PathBuf, inotify::WatchFlags, Option<i32>)>,
    /// While narrowed ([`DirWatch::narrow`]): the state file watched for
    /// the line's doorbell, and its watch descriptor.
    state: Option<(std::path::PathBuf, i32)>,
}

/// What a lock's waiter watches in the lock's directory.
const LOCK_EVENTS: inotify::WatchFlags = inotify::WatchFlags::CREATE
    .union(inotify::WatchFlags::DELETE)
    .union(inotify::WatchFlags::MOVED_FROM)
    .union(inotify::WatchFlags::MOVED_TO)
    .union(inotify::WatchFlags::ATTRIB)
    .union(inotify::WatchFlags::DELETE_SELF)
    .union(inotify::WatchFlags::MOVE_SELF)
    .union(inotify::WatchFlags::ONLYDIR);
/// What a waiter behind others in a session's line watches there: a lock
/// appearing (the waiter before it published, leaving the line just
/// before), and the directory going.
const LINE_EVENTS: inotify::WatchFlags = inotify::WatchFlags::CREATE
    .union(inotify::WatchFlags::DELETE_SELF)
    .union(inotify::WatchFlags::MOVE_SELF)
    .union(inotify::WatchFlags::ONLYDIR);

/// Closing an inotify instance waits for the kernel to destroy its fsnotify
/// group (an SRCU grace period: 5-20 ms measured on a 2-vCPU VM). A waiter
/// that just got its lock must not pay that, so instances are closed on a
/// background thread.
fn close_in_background(fd: OwnedFd) {
    static CLOSER: OnceLock<Option<std::sync::Mutex<std::sync::mpsc::Sender<OwnedFd>>>> =
        OnceLock::new();
    let closer = CLOSER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<OwnedFd>();
        std::thread::Builder::new()
            .name("sessionlock-closer".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| std::sync::Mutex::new(tx))
    });
    match closer {
        Some(tx) => {
            let tx = crate::sync::lock(tx);
            // If the thread is gone the descriptor comes back and closes here.
            if let Err(std::sync::mpsc::SendError(fd)) = tx.send(fd) {
                drop(fd);
            }
        }
        None => drop(fd),
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            close_in_background(fd);
        }
    }
}

impl DirWatch {
    /// Watches `dir` for anything that can change whether `name` is a lock
    /// someone holds, and for as little else as inotify allows (it filters
    /// by event, not by name, in a directory watch):
    /// - `CREATE`, `MOVED_TO`: a lock appears (link of a published lock,
    ///   rename of a republished one, a foreign writer's create);
    /// - `DELETE`, `MOVED_FROM`: it goes (unlink, rename to a tombstone);
    /// - `ATTRIB`: its times were changed (the payload grace counts from
    ///   the mtime);
    /// - `DELETE_SELF`, `MOVE_SELF`: the directory itself goes.
    ///
    /// Not `MODIFY` nor `CLOSE_WRITE`: every append to any transcript in the
    /// directory raises the first, and every append by a process that opens
    /// and closes the transcript each time (a `sessionlock append`,
    /// OpenClaw's `appendFile`) the second. What they would tell a waiter,
    /// that a foreign writer (OpenClaw creates its lock, then writes it)
    /// filled in a payload, its next look finds anyway: at most the 1 s
    /// safety net later, and the lock's removal still wakes it at once.
    pub(crate) fn new(dir: &Path, name: &OsStr) -> io::Result<Self> {
        Self::watching(vec![(dir.to_owned(), LOCK_EVENTS, None)], name)
    }

    fn watching(
        targets: Vec<(std::path::PathBuf, inotify::WatchFlags, Option<i32>)>,
        name: &OsStr,
    ) -> io::Result<Self> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        let mut w = Self {
            fd: Some(fd),
            names: vec![name.as_bytes().into()],
            targets,
            state: None,
        };
        // On failure, dropping `w` closes the instance (in the background).
        w.arm()?;
        Ok(w)
    }

    /// Adds the watches (if they are not in place): events count from now.
    pub(crate) fn arm(&mut self) -> io::Result<()> {
        let Some(fd) = &self.fd else {
            return Ok(());
        };
        for (path, mask, wd) in &mut self.targets {
            if wd.is_none() {
                *wd = Some(inotify::add_watch(fd, path.as_path(), *mask)?);
            }
        }
        Ok(())
    }

    /// Removes the watches, so that the instance collects no events while
    /// nobody waits on it (every event of the directory is otherwise copied
    /// to every instance watching it, by the process that caused it); then
    /// discards what it had collected. [`DirWatch::arm`] puts them back.
    pub(crate) fn disarm(&mut self) {
        let Some(fd) = &self.fd else {
            return;
        };
        for (_, _, wd) in &mut self.targets {
            if let Some(w) = wd.take() {
                // Fails only for a watch the kernel dropped already (its
                // directory or file went away): nothing left to remove.
                let _ = inotify::remove_watch(fd, w);
            }
        }
        if let Some((_, w)) = self.state.take() {
            let _ = inotify::remove_watch(fd, w);
        }
        self.discard();
    }

    /// For a waiter behind others in a session's line (design §3.12), which
    /// only needs to learn that the line may have moved: in the directory,
    /// only a lock appearing (the waiter before it published, leaving the
    /// line just before); and an `ATTRIB` on the session's state file
    /// `state`, the line's doorbell (a waiter that gave up). Everything else
    /// a lock's life raises (its rename to a tombstone, the tombstone's
    /// removal) is not watched, so that a release does not wake the whole
    /// line. [`DirWatch::widen`] undoes it.
    pub(crate) fn narrow(&mut self, state: &Path) -> io::Result<()> {
        let Some(fd) = &self.fd else {
            return Ok(());
        };
        for (path, _, wd) in &mut self.targets {
            // On a watched inode, this replaces the watch's events.
            *wd = Some(inotify::add_watch(fd, path.as_path(), LINE_EVENTS)?);
        }
        if self.state.is_none() {
            let w = inotify::add_watch(
                fd,
                state,
                inotify::WatchFlags::ATTRIB
                    | inotify::WatchFlags::DELETE_SELF
                    | inotify::WatchFlags::DONT_FOLLOW,
            )?;
            self.state = Some((state.to_owned(), w));
        }
        Ok(())
    }

    /// Watches every change of the lock again (after [`DirWatch::narrow`]).
    /// Events count from before the call returns.
    pub(crate) fn widen(&mut self) -> io::Result<()> {
        let Some(fd) = &self.fd else {
            return Ok(());
        };
        for (path, mask, wd) in &mut self.targets {
            *wd = Some(inotify::add_watch(fd, path.as_path(), *mask)?);
        }
        if let Some((_, w)) = self.state.take() {
            let _ = inotify::remove_watch(fd, w);
        }
        Ok(())
    }

    /// Reads and drops every pending event.
    fn discard(&self) {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(self.fd(), &mut buf);
        loop {
            match reader.next() {
                Ok(_) | Err(Errno::INTR) => {}
                Err(_) => return,
            }
        }
    }

    /// Makes a kept watch (disarmed) serve a wait for `names`: arms it
    /// again, so that events count from now. Fails when what it watched is
    /// gone (then make a new one, which fails the same way if need be).
    pub(crate) fn recycle(&mut self, names: &[&OsStr]) -> io::Result<()> {
        self.names = names.iter().map(|n| n.as_bytes().into()).collect();
        self.discard();
        self.arm()
    }

    /// Events for `name` end a wait too (the session's state file, whose
    /// `ATTRIB` is the waiters' queue's doorbell).
    pub(crate) fn also(mut self, name: &OsStr) -> Self {
        self.names.push(name.as_bytes().into());
        self
    }

    /// The pollable descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match &self.fd {
            Some(fd) => fd.as_fd(),
            // Only `drop` empties it.
            None => unreachable!("DirWatch used after drop"),
        }
    }

    /// Reads every pending event without blocking. Returns whether any of them
    /// concerns the watched name (or may have: queue overflow, directory gone).
    pub(crate) fn drain(&self) -> io::Result<bool> {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(self.fd(), &mut buf);
        let mut relevant = false;
        loop {
            match reader.next() {
                Ok(ev) => {
                    let flags = ev.events();
                    if flags.intersects(
                        inotify::ReadFlags::QUEUE_OVERFLOW
                            | inotify::ReadFlags::IGNORED
                            | inotify::ReadFlags::DELETE_SELF
                            | inotify::ReadFlags::MOVE_SELF,
                    ) {
                        relevant = true;
                    } else if let Some(n) = ev.file_name() {
                        relevant |= self.names.iter().any(|w| n.to_bytes() == &**w);
                    } else {
                        // A watched file's own event (the line's doorbell).
                        relevant = true;
                    }
                }
                Err(Errno::AGAIN) => return Ok(relevant),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Blocks until one of `fds` is readable or `timeout` passes (`None`: no
/// timeout). Returns the indices that are readable.
pub(crate) fn poll_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
        .collect();
    let ts = timeout.map(|t| rustix::time::Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    loop {
        match rustix::event::poll(&mut pfds, ts.as_ref()) {
            Ok(_) => break,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pfds
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.revents().is_empty())
        .map(|(i, _)| i)
        .collect())
}

/// The kernel's list of locks (`/proc/locks`), read once: what the
/// diagnostics look up for many files without reading the list per file.
/// Empty when `/proc` is unavailable. Diagnostics only: stale as soon as
/// it is read.
#[cfg_attr(not(feature = "internals"), allow(dead_code))] // the diagnostics' (`diag`)
#[derive(Debug, Default)]
pub(crate) struct KernelLocks {
    /// `maj:min:ino` → the pids holding a `FLOCK` on it, in the kernel's
    /// order (waiters excluded).
    flocks: std::collections::HashMap<String, Vec<u32>>,
    /// `maj:min:ino` → the byte ranges `(first, last)` of the
    /// open-file-description locks held on it (to `EOF` left out).
    ofd: std::collections::HashMap<String, Vec<(u64, u64)>>,
}

#[cfg_attr(not(feature = "internals"), allow(dead_code))] // the diagnostics' (`diag`)
impl KernelLocks {
    /// Reads `/proc/locks` (at most 1 MiB of it), in as few reads as it
    /// takes: the first read of the list waits for the kernel (about 10 ms
    /// here: it synchronizes with RCU), the next are quick.
    pub(crate) fn read() -> KernelLocks {
        use std::io::Read;
        let mut raw = Vec::with_capacity(64 * 1024);
        if let Ok(f) = File::open("/proc/locks") {
            let _ = f.take(1 << 20).read_to_end(&mut raw);
        }
        KernelLocks::parse(&raw)
    }

    /// Parses the contents of `/proc/locks`.
    pub(crate) fn parse(raw: &[u8]) -> KernelLocks {
        let mut out = KernelLocks::default();
        for line in raw.split(|&b| b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let mut f = line.split_ascii_whitespace();
            let (Some(_id), Some(kind), Some(_mode), Some(_access), Some(pid), Some(dev_ino)) =
                (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            match kind {
                "FLOCK" => {
                    if let Some(pid) = pid.parse::<u32>().ok().filter(|&p| p != 0) {
                        out.flocks.entry(dev_ino.to_owned()).or_default().push(pid);
                    }
                }
                "OFDLCK" => {
                    if let (Some(Ok(first)), Some(Ok(last))) =
                        (f.next().map(str::parse), f.next().map(str::parse))
                    {
                        out.ofd
                            .entry(dev_ino.to_owned())
                            .or_default()
                            .push((first, last));
                    }
                }
                _ => {} // a POSIX lock, or "->" for a blocked waiter
            }
        }
        out
    }

    /// As [`flock_holders`], from this list.
    pub(crate) fn flock_holders(&self, dev: u64, ino: u64) -> &[u32] {
        self.flocks
            .get(&dev_ino(dev, ino))
            .map_or(&[], Vec::as_slice)
    }

    /// As [`ofd_locks`], from this list.
    pub(crate) fn ofd_locks(&self, dev: u64, ino: u64) -> &[(u64, u64)] {
        self.ofd.get(&dev_ino(dev, ino)).map_or(&[], Vec::as_slice)
    }

    /// Whether no `FLOCK` at all is listed.
    pub(crate) fn no_flocks(&self) -> bool {
        self.flocks.is_empty()
    }

    /// Whether no open-file-description lock beyond `from` (the line's
    /// first byte) is listed on any file.
    pub(crate) fn no_places(&self, from: u64) -> bool {
        !self.ofd.values().flatten().any(|&(first, _)| first >= from)
    }
}

/// A file as `/proc/locks` names it: `maj:min:ino`.
#[cfg_attr(not(feature = "internals"), allow(dead_code))] // the diagnostics' (`diag`)
fn dev_ino(dev: u64, ino: u64) -> String {
    format!(
        "{:02x}:{:02x}:{ino}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_locks_are_parsed_per_file() {
        let raw = b"1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF\n\
            1: -> FLOCK  ADVISORY  WRITE 77 08:01:1234 0 EOF\n\
            2: OFDLCK ADVISORY  WRITE -1 08:01:1234 1099511627776 1099511631018\n\
            3: POSIX  ADVISORY  WRITE 99 08:01:1234 0 EOF\n\
            4: FLOCK  ADVISORY  READ 5 fd:00:7 0 EOF\n\
            garbage\n";
        let k = KernelLocks::parse(raw);
        let dev = rustix::fs::makedev(8, 1);
        assert_eq!(k.flock_holders(dev, 1234), &[4242]);
        assert_eq!(
            k.ofd_locks(dev, 1234),
            &[(1_099_511_627_776, 1_099_511_631_018)]
        );
        assert_eq!(k.flock_holders(rustix::fs::makedev(0xfd, 0), 7), &[5]);
        assert!(k.flock_holders(dev, 1235).is_empty());
        assert!(!k.no_flocks());
        assert!(KernelLocks::parse(b"").no_flocks());
    }

    #[test]
    fn a_stopped_process_is_seen_stopped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        assert!(!process_stopped(pid));
        // SAFETY: signalling our own child has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !process_stopped(pid) {
            assert!(std::time::Instant::now() < until, "never seen stopped");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn proc_stat_handles_names_with_spaces_and_parens() {
        let raw = b"42 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        let s = parse_proc_stat(raw).expect("parses");
        assert_eq!(s.state, b'S');
        assert_eq!(s.starttime, 987654);
    }

    #[test]
    fn proc_stat_rejects_garbage() {
        assert_eq!(parse_proc_stat(b"no parens here"), None);
        assert_eq!(parse_proc_stat(b"1 (x) Z 1 2"), None);
        assert_eq!(parse_proc_stat(&[0xff, 0xfe, b')', 0xff]), None);
    }

    /// Whether the watch has an event queued, without consuming it.
    fn pending(w: &DirWatch) -> bool {
        !poll_readable(&[w.fd()], Some(Duration::ZERO))
            .expect("poll")
            .is_empty()
    }

    // Issue 9 item 4, smaller defects: waiters watched `MODIFY` on the whole
    // directory, so every append to any transcript in it woke them. Appends
    // (and writes to other open files) must not even queue an event; the
    // events a waiter needs still arrive and concern its name.
    #[test]
    fn appends_to_other_transcripts_do_not_wake_a_waiter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = dir.path().join("other.jsonl");
        let mut t = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&other)
            .expect("open other transcript");
        let w = DirWatch::new(dir.path(), OsStr::new("s.jsonl.lock")).expect("watch");
        for _ in 0..100 {
            std::io::Write::write_all(&mut t, b"{\"n\":1}\n").expect("append");
        }
        t.sync_data().expect("sync");
        // A writer that opens, appends and closes each time.
        for _ in 0..10 {
            let mut once = std::fs::OpenOptions::new()
                .append(true)
                .open(&other)
                .expect("reopen other transcript");
            std::io::Write::write_all(&mut once, b"{\"n\":2}\n").expect("append");
        }
        assert!(
            !pending(&w),
            "appends to another transcript woke the waiter"
        );
        assert!(!w.drain().expect("drain"));

        // The lock's own events: created, written and closed, removed.
        let lock = dir.path().join("s.jsonl.lock");
        std::fs::write(&lock, b"{}").expect("create lock");
        assert!(pending(&w));
        assert!(w.drain().expect("drain"), "creating the lock is relevant");
        std::fs::remove_file(&lock).expect("remove lock");
        assert!(w.drain().expect("drain"), "removing the lock is relevant");
        // Renaming a lock into place (a republish) is relevant too.
        let tmp = dir.path().join("s.jsonl.lock.tmp-1");
        std::fs::write(&tmp, b"{}").expect("tmp");
        assert!(!w.drain().expect("drain"), "another name");
        std::fs::rename(&tmp, &lock).expect("rename");
        assert!(w.drain().expect("drain"), "a lock renamed into place");
    }

    #[test]
    fn locks_lines_name_flock_holders_not_waiters() {
        let dev_ino = "fe:00:10010951";
        let held = b"1: FLOCK  ADVISORY  WRITE 28148 fe:00:10010951 0 EOF";
        let waiter = b"1: -> FLOCK  ADVISORY  WRITE 777 fe:00:10010951 0 EOF";
        let posix = b"2: POSIX  ADVISORY  WRITE 99 fe:00:10010951 0 EOF";
        let other = b"3: FLOCK  ADVISORY  READ 5 fe:00:1001095 0 EOF";
        assert_eq!(parse_locks_line(held, dev_ino), Some(28148));
        assert_eq!(parse_locks_line(waiter, dev_ino), None);
        assert_eq!(parse_locks_line(posix, dev_ino), None);
        assert_eq!(parse_locks_line(other, dev_ino), None);
        assert_eq!(parse_locks_line(b"\xff garbage", dev_ino), None);
    }

    #[test]
    fn own_process_is_visible() {
        let me = proc_stat(pid()).expect("own stat");
        assert_eq!(Some(me.starttime), self_starttime());
        assert!(process_exists(pid()));
        assert!(!process_exists(0));
    }
}
