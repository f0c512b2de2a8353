//! Waiter records: who waits in a session's line, for other processes to
//! see ([design §3.12](crate::design#312-the-line-of-waiters),
//! [§2](crate::design#2-on-disk-formats)).
//!
//! A place in line (`queue.rs`) tells only its waiter's pid. So a waiter
//! that takes a place also writes a small JSON record, named after its
//! session, pid and place, into the directory [`DIR_NAME`] beside the
//! session, and removes it when it leaves the line. The record is kept out
//! of the session's directory itself: waiters watch that directory (inotify
//! is not recursive), so records wake nobody and cost the directory's
//! watchers nothing.
//!
//! A record says nothing on its own: readers show one only while its place
//! is locked (the kernel drops a dead waiter's place), and only if it names
//! the place's process (pid and start time). Every read is bounded
//! ([`MAX_RECORD_BYTES`]) and never follows a symlink, neither at the
//! directory nor at the record; what is not a record is skipped here and
//! reported by the doctor.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Instant, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use serde::{Deserialize, Serialize};

use crate::backend::LeaseRequest;
use crate::payload::{format_time, parse_time, MAX_FIELD_BYTES};
use crate::sys;

/// The directory, beside the session files, that holds the records.
pub const DIR_NAME: &str = ".sessionlock-waiters";
/// A record larger than this is not one (a record holds at most four
/// strings of [`MAX_FIELD_BYTES`] and a few numbers).
pub const MAX_RECORD_BYTES: u64 = 8 * 1024;
/// What follows the session file's name in a record's name:
/// `<session>.waiter-<pid>-<place>`.
pub const MARK: &str = ".waiter-";

/// What a waiter in line says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaiterRecord {
    /// The waiter's process.
    pub pid: u32,
    /// Its start time (`/proc/<pid>/stat` field 22), as the lock payload has
    /// it.
    pub starttime: Option<u64>,
    /// Its host (`uname` node name).
    pub hostname: Option<String>,
    /// Its boot id.
    pub boot_id: Option<String>,
    /// The acquisition's diagnostic lane.
    pub lane: Option<String>,
    /// The acquisition's diagnostic run id.
    pub run_id: Option<String>,
    /// When it took its place (wall clock).
    pub since: Option<SystemTime>,
    /// When the acquisition gives up, if it has a budget.
    pub deadline: Option<SystemTime>,
    /// Its place: the place's offset in the line (relative to the line's
    /// first byte), which orders the line.
    pub place: u64,
}

/// The record's JSON: one line, fields in this order.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Json {
    pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    starttime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lane: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
    place: u64,
}

fn cut(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|s| {
        let mut end = s.len().min(MAX_FIELD_BYTES);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    })
}

impl WaiterRecord {
    /// The record's bytes: compact JSON on one line, `\n`-terminated, its
    /// strings cut to [`MAX_FIELD_BYTES`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let j = Json {
            pid: self.pid,
            starttime: self.starttime,
            hostname: cut(&self.hostname),
            boot_id: cut(&self.boot_id),
            lane: cut(&self.lane),
            run_id: cut(&self.run_id),
            since: self.since.map(format_time),
            deadline: self.deadline.map(format_time),
            place: self.place,
        };
        let mut out = serde_json::to_vec(&j).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses a record's bytes; `None` for anything that is not one.
    /// Never panics.
    pub fn parse(raw: &[u8]) -> Option<WaiterRecord> {
        if raw.len() as u64 > MAX_RECORD_BYTES {
            return None;
        }
        let j: Json = serde_json::from_slice(raw).ok()?;
        if j.pid == 0 {
            return None;
        }
        Some(WaiterRecord {
            pid: j.pid,
            starttime: j.starttime,
            hostname: j.hostname,
            boot_id: j.boot_id,
            lane: j.lane,
            run_id: j.run_id,
            since: j.since.as_deref().and_then(parse_time),
            deadline: j.deadline.as_deref().and_then(parse_time),
            place: j.place,
        })
    }
}

/// The record of an acquisition that queues now (its place is filled in
/// when it has one).
pub(crate) fn record_of(req: &LeaseRequest, deadline: Option<Instant>) -> WaiterRecord {
    let now = SystemTime::now();
    WaiterRecord {
        pid: req.me.pid,
        starttime: req.me.starttime,
        hostname: Some(req.me.hostname.clone()),
        boot_id: req.me.boot_id.clone(),
        lane: req.lane.clone(),
        run_id: req.run_id.clone(),
        since: Some(now),
        deadline: deadline
            .and_then(|d| now.checked_add(d.saturating_duration_since(Instant::now()))),
        place: 0,
    }
}

/// The name of the record of the waiter `pid` at `place` in the line of
/// the session file named `session`.
pub fn record_name(session: &OsStr, pid: u32, place: u64) -> OsString {
    let mut n = session.to_owned();
    n.push(format!("{MARK}{pid}-{place}"));
    n
}

/// A record's name taken apart: the session file's name, the pid and the
/// place; `None` for any other name.
pub fn parse_name(name: &[u8]) -> Option<(&[u8], u32, u64)> {
    let mark = MARK.as_bytes();
    let at = name.windows(mark.len()).rposition(|w| w == mark)?;
    let (session, rest) = (&name[..at], &name[at + mark.len()..]);
    let rest = std::str::from_utf8(rest).ok()?;
    let (pid, place) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if session.is_empty() || !digits(pid) || !digits(place) {
        return None;
    }
    Some((session, pid.parse().ok()?, place.parse().ok()?))
}

/// Opens the records' directory beside the sessions of `dir`, never
/// through a symlink; with `create`, creates it if it is missing.
pub(crate) fn open_dir(dir: &Path, create: bool) -> io::Result<OwnedFd> {
    let path = dir.join(DIR_NAME);
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(CWD, &path, flags, Mode::empty()) {
        Err(rustix::io::Errno::NOENT) if create => {
            match rustix::fs::mkdirat(CWD, &path, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(rustix::fs::openat(CWD, &path, flags, Mode::empty())?)
        }
        r => Ok(r?),
    }
}

/// A record written by this process: removed by [`Written::remove`].
#[derive(Debug)]
pub(crate) struct Written {
    dir: OwnedFd,
    name: OsString,
}

impl Written {
    /// Removes the record (from the directory it was written in, whatever
    /// happened to that directory's name since).
    pub(crate) fn remove(self) {
        let _ = rustix::fs::unlinkat(&self.dir, &*self.name, AtFlags::empty());
    }
}

/// Writes the record `rec` of the session file `session` (a canonical
/// path). Only into a records' directory owned by this user or by the
/// owner of the sessions' directory: others' could hand us files to
/// overwrite. A file already at the record's name is a dead waiter's
/// (this process holds that place now): it is replaced, never written
/// through.
pub(crate) fn write(session: &Path, rec: &WaiterRecord) -> io::Result<Written> {
    let (Some(dir), Some(name)) = (session.parent(), session.file_name()) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let d = open_dir(dir, true)?;
    let owner = rustix::fs::fstat(&d)?.st_uid;
    if owner != sys::euid() && owner != std::fs::metadata(dir)?.uid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the waiters' directory belongs to someone else",
        ));
    }
    let name = record_name(name, rec.pid, rec.place);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(0o644);
    let fd = match rustix::fs::openat(&d, &*name, flags, mode) {
        Err(rustix::io::Errno::EXIST) => {
            let _ = rustix::fs::unlinkat(&d, &*name, AtFlags::empty());
            rustix::fs::openat(&d, &*name, flags, mode)?
        }
        r => r?,
    };
    let written = Written { dir: d, name };
    match File::from(fd).write_all(&rec.to_bytes()) {
        Ok(()) => Ok(written),
        Err(e) => {
            written.remove();
            Err(e)
        }
    }
}

/// What stands at a record's name, as read.
#[derive(Debug)]
#[cfg_attr(not(feature = "internals"), allow(dead_code))] // the doctor reads it all
pub enum Found {
    /// A record.
    Record(WaiterRecord),
    /// A symlink (never followed).
    Symlink,
    /// Something other than a regular file (a directory, a FIFO).
    NotRegular,
    /// A regular file larger than [`MAX_RECORD_BYTES`] (not read).
    TooLarge(u64),
    /// A regular file that is not a record (not JSON, or not one naming
    /// the name's pid and place).
    Garbage,
    /// It could not be read.
    Unreadable(io::Error),
}

/// Reads what stands at `name` in the records' directory `dir`: at most
/// [`MAX_RECORD_BYTES`] + 1 bytes, never through a symlink, never blocking
/// (a FIFO).
pub(crate) fn read_at(dir: impl AsFd, name: &OsStr) -> Found {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => return Found::Symlink,
        Err(e) => return Found::Unreadable(e.into()),
    };
    let f = File::from(fd);
    let m = match f.metadata() {
        Ok(m) => m,
        Err(e) => return Found::Unreadable(e),
    };
    if !m.is_file() {
        return Found::NotRegular;
    }
    if m.len() > MAX_RECORD_BYTES {
        return Found::TooLarge(m.len());
    }
    let mut raw = Vec::new();
    if let Err(e) = f.take(MAX_RECORD_BYTES + 1).read_to_end(&mut raw) {
        return Found::Unreadable(e);
    }
    let named = parse_name(name.as_bytes());
    match WaiterRecord::parse(&raw) {
        Some(r) if named.is_some_and(|(_, pid, place)| pid == r.pid && place == r.place) => {
            Found::Record(r)
        }
        _ if raw.len() as u64 > MAX_RECORD_BYTES => Found::TooLarge(raw.len() as u64),
        _ => Found::Garbage,
    }
}

/// The record of the waiter `pid` at `place` in the line of the session
/// file `session`, if it wrote one that still names it: its start time, if
/// recorded, must be the running process's (a record left by a dead
/// waiter whose pid and place were taken again is not shown).
pub(crate) fn read(session: &Path, pid: u32, place: u64) -> Option<WaiterRecord> {
    let (dir, name) = (session.parent()?, session.file_name()?);
    let d = open_dir(dir, false).ok()?;
    match read_at(&d, &record_name(name, pid, place)) {
        Found::Record(r) => {
            let running = sys::proc_stat(pid).map(|s| s.starttime);
            match (r.starttime, running) {
                (Some(a), Some(b)) if a != b => None,
                _ => Some(r),
            }
        }
        _ => None,
    }
}

/// One place in a session's line, as the diagnostics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InLine {
    /// The waiter's process (the place's length less one).
    pub pid: u32,
    /// The place (relative to the line's first byte): the line's order.
    pub place: u64,
    /// What its waiter recorded, if it wrote a record that still names it.
    pub record: Option<WaiterRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_record_round_trips_and_its_name_comes_apart() {
        let rec = WaiterRecord {
            pid: 4242,
            starttime: Some(77),
            hostname: Some("vm".into()),
            boot_id: None,
            lane: Some("cron".into()),
            run_id: Some("r-1".into()),
            since: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123)),
            deadline: None,
            place: 17,
        };
        let bytes = rec.to_bytes();
        assert!(bytes.ends_with(b"}\n"));
        assert_eq!(WaiterRecord::parse(&bytes), Some(rec));
        let name = record_name(OsStr::new("a.waiter-1-2.jsonl"), 4242, 17);
        assert_eq!(
            parse_name(name.as_bytes()),
            Some((&b"a.waiter-1-2.jsonl"[..], 4242, 17))
        );
        for bad in [
            &b"s.jsonl.waiter-"[..],
            b"s.jsonl.waiter-1",
            b".waiter-1-2",
            b"s.jsonl.waiter-x-2",
        ] {
            assert_eq!(parse_name(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"pid\":0,\"place\":1}",
            b"{\"place\":1}",
        ] {
            assert_eq!(WaiterRecord::parse(bad), None);
        }
    }

    #[test]
    fn reads_never_follow_a_symlink_nor_read_a_huge_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = open_dir(dir.path(), true).expect("records' directory");
        let at = dir.path().join(DIR_NAME);
        std::fs::write(dir.path().join("secret"), b"{\"pid\":1,\"place\":0}").expect("write");
        std::os::unix::fs::symlink("../secret", at.join("s.jsonl.waiter-1-0")).expect("symlink");
        assert!(matches!(
            read_at(&d, OsStr::new("s.jsonl.waiter-1-0")),
            Found::Symlink
        ));
        std::fs::write(at.join("s.jsonl.waiter-2-0"), vec![b' '; 1 << 20]).expect("write");
        assert!(matches!(
            read_at(&d, OsStr::new("s.jsonl.waiter-2-0")),
            Found::TooLarge(_)
        ));
        std::fs::write(at.join("s.jsonl.waiter-3-0"), b"not json").expect("write");
        assert!(matches!(
            read_at(&d, OsStr::new("s.jsonl.waiter-3-0")),
            Found::Garbage
        ));
        // A record naming another place than its name does is not one.
        std::fs::write(at.join("s.jsonl.waiter-4-0"), b"{\"pid\":4,\"place\":9}").expect("write");
        assert!(matches!(
            read_at(&d, OsStr::new("s.jsonl.waiter-4-0")),
            Found::Garbage
        ));
        // A symlink in place of the directory is not followed either.
        let other = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(&at, other.path().join(DIR_NAME)).expect("symlink");
        assert!(open_dir(other.path(), true).is_err());
        assert!(read(&other.path().join("s.jsonl"), 4, 0).is_none());
    }
}
