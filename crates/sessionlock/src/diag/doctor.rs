//! The doctor (spec §10): explains every lock, transcript and leftover file
//! in a directory, and fixes what is safe to fix.
//!
//! [`examine`] only reads. It gives one [`Finding`] per lock (`*.jsonl.lock`),
//! one per problem of a transcript (`*.jsonl`: a torn final line, complete
//! lines that are not JSON) and one per file an interrupted operation left
//! behind (`*.jsonl.lock.tmp-*`, `*.jsonl.lock.tomb-*`, `*.jsonl.rewrite-*`,
//! and the `*.jsonl.torn-*` side files of earlier repairs), and one per state
//! file (`*.jsonl.epoch`) that is not one epoch record or not a regular
//! file. Healthy transcripts and state files give no finding.
//!
//! [`fix`] acts on a [`Report`] and never beyond it:
//! - a lock is removed only if `examine` found it [`Verdict::Removable`], and
//!   only through [`LockBackend::remove_if_unchanged`] with the very inspection
//!   `examine` made: a lock replaced in between is left alone;
//! - a torn tail is repaired with [`Transcript::repair`](crate::backend::file::transcript::Transcript::repair) under the session
//!   lock, taken with a short budget; a session someone holds is skipped;
//! - an invalid state file is rewritten under the state lock (taken within
//!   the lock budget) with an epoch above every one it can have stood for;
//! - a leftover temporary or tombstone file is removed only once it is older
//!   than [`LEFTOVER_AGE`] and still the file `examine` saw (same inode, size
//!   and times); a leftover rewrite file likewise, and under the session lock,
//!   since a rewrite of the same epoch reuses its name.
//!
//! A live holder past its lease is removed only with [`FixOptions::force`]:
//! a sessionlock holder is fenced once the lock is taken again, but a
//! foreign (OpenClaw) one cannot be, and such a removal is logged as an
//! unfenced reclaim.
//!
//! Never touched: a live holder within its lease, a `too-old` lock, a
//! hold-exceeded lock under the `report` policy, a symlink, directory or other
//! non-regular file at a lock path, transcript lines that are not JSON, and
//! the `.torn-*` side files (they hold bytes a repair set aside for the
//! operator).

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::backend::file::fs::{Fs, RealFs};
use crate::backend::file::transcript::{self, Reader, TornTail};
use crate::backend::file::{FileBackend, FileKey, FileVersion};
use crate::backend::{LockBackend, StoreBackend};
use crate::blocking::block_on;
use crate::config::Settings;
use crate::diag::status::{self, human_duration, LockStatus};
use crate::error::{Error, Holder, Result};
use crate::identity::{Liveness, SelfIdentity};
use crate::lock::acquire::{LockOptions, SessionLock};
use crate::lock::guard::Guard;
use crate::reclaim::{Action as Contender, Reason};

/// How old a leftover temporary, tombstone or rewrite file must be before
/// [`fix`] removes it: the operations that create them finish within
/// milliseconds, so an older one belongs to a process that died.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(60);

/// The budget [`fix`] gives itself by default to take a session lock.
pub const FIX_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The lane [`fix`] records in the session locks it takes.
pub const LANE: &str = "doctor";

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A lock file (`*.jsonl.lock`).
    Lock,
    /// A transcript (`*.jsonl`).
    Transcript,
    /// A file an interrupted operation left behind, or a repair's side file.
    Leftover,
    /// A session's state file (`*.jsonl.epoch`, its last fencing epoch).
    State,
}

impl Kind {
    /// The name used in messages and JSON (`lock`, `transcript`, `leftover`,
    /// `state`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::Transcript => "transcript",
            Kind::Leftover => "leftover",
            Kind::State => "state",
        }
    }
}

/// The doctor's judgement of one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict {
    /// Healthy: a live holder within its lease, or one this process holds.
    Ok,
    /// Stale or orphaned: [`fix`] removes it.
    Removable,
    /// A torn transcript tail: [`fix`] repairs it.
    Repairable,
    /// Not stale yet: a lock whose payload a writer may still be filling in,
    /// a leftover an operation may still be using. Left alone for now.
    Wait,
    /// Worth knowing, never acted on: a `too-old` lock, a hold-exceeded lock
    /// under the `report` policy, a repair's side file.
    ReportOnly,
    /// Needs a person: something the doctor never touches (a symlink or
    /// directory at a lock path, transcript lines that are not JSON).
    Invalid,
    /// Could not be examined (an I/O error).
    Error,
}

impl Verdict {
    /// The name used in messages and JSON (`ok`, `removable`, `repairable`,
    /// `wait`, `report-only`, `invalid`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Removable => "removable",
            Verdict::Repairable => "repairable",
            Verdict::Wait => "wait",
            Verdict::ReportOnly => "report-only",
            Verdict::Invalid => "invalid",
            Verdict::Error => "error",
        }
    }

    /// Whether [`fix`] acts on findings with this verdict.
    pub fn is_fixable(self) -> bool {
        matches!(self, Verdict::Removable | Verdict::Repairable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`fix`] does with a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Nothing: the doctor never touches it (it needs a person, or could not
    /// be examined).
    None,
    /// Removes the file.
    Remove,
    /// Removes the lock only when forced ([`FixOptions::force`]): its holder
    /// is alive, only past its lease. Without fencing (an OpenClaw holder)
    /// it may go on writing beside the next holder.
    RemoveWithForce,
    /// Repairs the transcript's torn tail.
    Repair,
    /// Keeps it: it is healthy, not stale yet, or kept on purpose.
    Keep,
}

impl Action {
    /// The name used in messages and JSON (`none`, `remove`,
    /// `remove-with-force`, `repair`, `keep`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Remove => "remove",
            Action::RemoveWithForce => "remove-with-force",
            Action::Repair => "repair",
            Action::Keep => "keep",
        }
    }
}

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
    /// Which version of the file was examined: [`fix`] removes only this one.
    pub stamp: FileVersion,
}

/// What a finding found, with the data [`fix`] needs.
#[derive(Debug)]
#[non_exhaustive]
pub enum Subject {
    /// A lock that could be read, explained.
    Lock(Box<LockStatus>),
    /// A lock path holding no readable lock: a symlink, a directory or other
    /// non-regular file (`InvalidPath`), or a file that could not be read.
    UnusableLock(Error),
    /// A transcript whose final line has no `\n`.
    TornTail(TornTail),
    /// A transcript with complete lines that are not JSON values.
    InvalidLines {
        /// How many such lines.
        count: u64,
        /// Offset of the first.
        first_offset: u64,
        /// What is wrong with the first.
        first_reason: String,
    },
    /// A transcript path that is not a regular file, or could not be read.
    UnusableTranscript(Error),
    /// A leftover file.
    Leftover(Leftover),
    /// A state file that holds something other than one epoch record
    /// (written by something else, or cut short of its record).
    InvalidState {
        /// Its size in bytes.
        len: u64,
        /// Its first bytes, for people (lossy, at most 22 bytes, not escaped:
        /// they may hold control characters).
        preview: String,
    },
    /// A state file path holding something other than a regular file (a
    /// symlink, a directory, a FIFO), or a state file that cannot be read.
    UnusableState(Error),
}

/// One thing the doctor found.
#[derive(Debug)]
#[non_exhaustive]
pub struct Finding {
    /// The file, as found under the examined directory.
    pub path: PathBuf,
    /// The session transcript it belongs to.
    pub session: PathBuf,
    /// The judgement.
    pub verdict: Verdict,
    /// Why: stale reasons (`dead-pid`, ...) for locks, `torn-tail` or
    /// `invalid-lines` for transcripts, the leftover kind for leftovers.
    pub reasons: Vec<&'static str>,
    /// What [`fix`] does with it.
    pub action: Action,
    /// A sentence explaining the verdict, for people.
    pub detail: String,
    /// The data behind it.
    pub subject: Subject,
}

impl Finding {
    /// What the finding is about.
    pub fn kind(&self) -> Kind {
        match self.subject {
            Subject::Lock(_) | Subject::UnusableLock(_) => Kind::Lock,
            Subject::TornTail(_)
            | Subject::InvalidLines { .. }
            | Subject::UnusableTranscript(_) => Kind::Transcript,
            Subject::Leftover(_) => Kind::Leftover,
            Subject::InvalidState { .. } | Subject::UnusableState(_) => Kind::State,
        }
    }
}

/// Everything [`examine`] found in one directory.
#[derive(Debug)]
#[non_exhaustive]
pub struct Report {
    /// The directory, as given.
    pub dir: PathBuf,
    /// The directory resolved (absolute, through symlinks): every finding's
    /// path is under it, and [`fix`] takes session locks and repairs
    /// transcripts only for sessions inside it (the sessions root).
    pub root: PathBuf,
    /// The settings locks were judged by (and [`fix`] acquires with).
    pub settings: Settings,
    /// The findings, sorted by path (a lock's after its transcript's).
    pub findings: Vec<Finding>,
    /// How many lock files were examined.
    pub locks: usize,
    /// How many transcripts were examined (healthy ones give no finding).
    pub transcripts: usize,
    /// How many leftover files were examined.
    pub leftovers: usize,
    /// The sessionlock holders here that OpenClaw would delete, because the
    /// directory also holds OpenClaw locks: lock path and why (spec §15).
    pub openclaw_exposure: Vec<(PathBuf, status::Exposure)>,
}

/// Examines every lock, transcript and leftover file directly in `dir` (not
/// recursive). Only reads. A file that cannot be examined gives a finding
/// with [`Verdict::Error`]; the examination goes on.
///
/// A transcript whose name is a symlink is skipped: its target is examined
/// in its own directory, beside the lock acquirers use for it.
///
/// Paths in findings are absolute and canonical (under [`Report::root`]),
/// like `status`'s.
///
/// # Errors
/// `Io` when the directory cannot be resolved or listed.
pub fn examine(dir: &Path, settings: &Settings) -> Result<Report> {
    let root = std::fs::canonicalize(dir).map_err(|e| Error::io("list directory", dir, e))?;
    let entries = std::fs::read_dir(&root).map_err(|e| Error::io("list directory", dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        names.push(entry.file_name());
    }
    names.sort();
    let now = SystemTime::now();
    let me = SelfIdentity::current();
    let mut report = Report {
        dir: dir.to_owned(),
        root: root.clone(),
        settings: *settings,
        findings: Vec::new(),
        locks: 0,
        transcripts: 0,
        leftovers: 0,
        openclaw_exposure: Vec::new(),
    };
    let dir = root.as_path();
    for name in names {
        let path = dir.join(&name);
        let bytes = name.as_bytes();
        if let Some(stem) = bytes.strip_suffix(b".lock") {
            if stem.ends_with(b".jsonl") {
                report.locks += 1;
                let session = dir.join(std::ffi::OsStr::from_bytes(stem));
                report
                    .findings
                    .extend(examine_lock(path, session, settings, &me, now));
                continue;
            }
        }
        if bytes.ends_with(b".jsonl") {
            if let Some(found) = examine_transcript(&path) {
                report.transcripts += 1;
                report.findings.extend(found);
            }
            continue;
        }
        if let Some(stem) = bytes.strip_suffix(b".epoch") {
            if stem.ends_with(b".jsonl") {
                let session = dir.join(std::ffi::OsStr::from_bytes(stem));
                report.findings.extend(examine_state(path, session));
                continue;
            }
        }
        if let Some((kind, stem)) = leftover_kind(bytes) {
            let session = dir.join(std::ffi::OsStr::from_bytes(stem));
            if let Some(f) = examine_leftover(path, session, kind, now) {
                report.leftovers += 1;
                report.findings.push(f);
            }
        }
    }
    let locks: Vec<&LockStatus> = report
        .findings
        .iter()
        .filter_map(|f| match &f.subject {
            Subject::Lock(st) => Some(&**st),
            _ => None,
        })
        .collect();
    report.openclaw_exposure = status::openclaw_exposure(&locks)
        .into_iter()
        .map(|(st, why)| (st.key.lock_path.clone(), why))
        .collect();
    Ok(report)
}

/// The leftover kind of a file name, and the session file name before it.
fn leftover_kind(name: &[u8]) -> Option<(LeftoverKind, &[u8])> {
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

fn examine_lock(
    path: PathBuf,
    session: PathBuf,
    settings: &Settings,
    me: &SelfIdentity,
    now: SystemTime,
) -> Option<Finding> {
    match status::inspect_session(&session, settings) {
        // Gone since the directory was listed: nothing to say.
        Ok(None) => None,
        Ok(Some(st)) => Some(lock_finding(path, session, st, settings, me, now)),
        Err(e @ Error::InvalidPath { .. }) => {
            let what = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => "symlink",
                Ok(m) if m.is_dir() => "directory",
                _ => "not-a-regular-file",
            };
            let detail = format!(
                "{}; the doctor never touches it: once no process uses it, remove it by hand",
                match what {
                    "symlink" => "a symbolic link stands where a lock belongs (locks are never followed through links)",
                    "directory" => "a directory stands where a lock belongs",
                    _ => "something other than a regular file stands where a lock belongs",
                }
            );
            Some(Finding {
                path,
                session,
                verdict: Verdict::Invalid,
                reasons: vec![what],
                action: Action::None,
                detail,
                subject: Subject::UnusableLock(e),
            })
        }
        Err(e) => Some(Finding {
            path,
            session,
            verdict: Verdict::Error,
            reasons: vec!["unreadable"],
            action: Action::None,
            detail: chain(&e),
            subject: Subject::UnusableLock(e),
        }),
    }
}

/// The verdict on a readable lock, and why.
fn lock_finding(
    path: PathBuf,
    session: PathBuf,
    st: LockStatus,
    settings: &Settings,
    me: &SelfIdentity,
    now: SystemTime,
) -> Finding {
    let h = &st.holder;
    let reasons = h.reasons;
    let who = holder_words(h, st.liveness);
    let lease = st.lease_left.map_or_else(
        || "lease unknown".to_owned(),
        |d| format!("{} left", human_duration(d)),
    );
    let unusable = reasons.contains(Reason::Malformed) || reasons.contains(Reason::MissingPid);
    let (verdict, action, detail) = match st.action {
        Contender::Reclaim => {
            let why = if unusable {
                format!(
                    "{}, last written {} ago (past the {} grace for a writer to fill it in)",
                    unusable_words(&st),
                    human_duration(since(st.inspection.written, now)),
                    human_duration(status::policy(settings).payload_grace),
                )
            } else if reasons.contains(Reason::DeadPid) {
                format!("{who} is not running")
            } else if reasons.contains(Reason::RecycledPid) {
                format!(
                    "pid {} now belongs to another process (its start time differs from the lock's)",
                    pid_words(h)
                )
            } else if reasons.contains(Reason::OrphanSelfPid) {
                format!(
                    "names this process (pid {}), which does not hold it: left over from before a restart of its lock state",
                    pid_words(h)
                )
            } else {
                format!(
                    "{who} is {} past its lease ({}){}; a live holder is removed only with --force",
                    human_duration(past_lease(&st, now)),
                    h.max_hold_ms.map_or_else(
                        || "default".to_owned(),
                        |ms| human_duration(Duration::from_millis(ms))
                    ),
                    if h.epoch.is_some() {
                        "; its writes are fenced once the lock is taken again"
                    } else {
                        "; it is not sessionlock's and cannot be fenced: it may go on writing"
                    },
                )
            };
            let clamp = clamp_words(&st);
            let why = if clamp.is_empty() {
                why
            } else {
                format!("{why}; {clamp}")
            };
            let live = reasons.contains(Reason::HoldExceeded) && st.liveness.presumed_alive();
            let action = if live {
                Action::RemoveWithForce
            } else {
                Action::Remove
            };
            (Verdict::Removable, action, why)
        }
        Contender::Report => (
            Verdict::ReportOnly,
            Action::Keep,
            format!(
                "{who} is {} past its lease, but the hold-exceeded policy is `report`: never removed",
                human_duration(past_lease(&st, now)),
            ),
        ),
        Contender::Wait { until, .. } if unusable => (
            Verdict::Wait,
            Action::Keep,
            format!(
                "{}, written {} ago: a writer may still be filling it in; removable {}",
                unusable_words(&st),
                human_duration(since(st.inspection.written, now)),
                until.map_or_else(
                    || "later".to_owned(),
                    |t| format!("in {}", human_duration(t.duration_since(now).unwrap_or_default()))
                ),
            ),
        ),
        Contender::Wait { .. }
            if reasons.contains(Reason::FutureCreatedAt)
                || reasons.contains(Reason::LeaseClamped) =>
        {
            (
                Verdict::ReportOnly,
                Action::Keep,
                format!(
                    "{who} within its lease as bounded ({lease}): {}; removable once that lease ends",
                    clamp_words(&st),
                ),
            )
        }
        Contender::Wait { .. } if reasons.contains(Reason::TooOld) => (
            Verdict::ReportOnly,
            Action::Keep,
            format!(
                "{who} has held it for {}, longer than stale-after, but is within its own lease ({lease}): never removed",
                h.age_ms
                    .map_or_else(|| "long".to_owned(), |ms| human_duration(Duration::from_millis(ms))),
            ),
        ),
        Contender::Wait { .. } => {
            let detail = if h.pid == Some(me.pid) && st.liveness == Liveness::Alive {
                format!("held by this process (pid {}) ({lease})", me.pid)
            } else {
                format!("{who} within its lease ({lease})")
            };
            (Verdict::Ok, Action::Keep, detail)
        }
    };
    Finding {
        path,
        session,
        verdict,
        reasons: reasons.iter().map(Reason::as_str).collect(),
        action,
        detail,
        subject: Subject::Lock(Box::new(st)),
    }
}

/// `live holder pid 42 (lane channel, run r-1)`, `holder pid 42 on host gw-2`.
fn holder_words(h: &Holder, liveness: Liveness) -> String {
    let mut s = match liveness {
        Liveness::Alive => "live holder".to_owned(),
        _ => "holder".to_owned(),
    };
    if let Some(pid) = h.pid {
        s.push_str(&format!(" pid {pid}"));
    }
    if liveness == Liveness::Remote {
        if let Some(host) = &h.hostname {
            s.push_str(&format!(" on host {host}"));
        }
    }
    let labels: Vec<String> = [("lane", &h.lane), ("run", &h.run_id)]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
        .collect();
    if !labels.is_empty() {
        s.push_str(&format!(" ({})", labels.join(", ")));
    }
    s
}

fn pid_words(h: &Holder) -> String {
    h.pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
}

/// Why a lock's payload is unusable.
fn unusable_words(st: &LockStatus) -> String {
    match &st.inspection.payload {
        Err(m) => format!("unusable payload ({m})"),
        Ok(p) if p.pid.is_none() => "no usable pid in the payload".to_owned(),
        Ok(_) => "no valid createdAt in the payload".to_owned(),
    }
}

fn past_lease(st: &LockStatus, now: SystemTime) -> Duration {
    st.lease_end.map_or(Duration::ZERO, |end| since(end, now))
}

/// What a lock's payload claims beyond what sessionlock would write, and how
/// its lease is counted instead; empty when it claims nothing unusual.
fn clamp_words(st: &LockStatus) -> String {
    let reasons = st.holder.reasons;
    let p = st.inspection.payload.as_ref().ok();
    let mut words = Vec::new();
    if reasons.contains(Reason::FutureCreatedAt) {
        words.push(format!(
            "its createdAt ({}) lies in the future, so its lease counts from when the file was last written",
            p.and_then(|p| p.created_at)
                .map_or_else(|| "?".to_owned(), crate::payload::format_time),
        ));
    }
    if reasons.contains(Reason::LeaseClamped) {
        words.push(format!(
            "its maxHoldMs ({}) is longer than any lease sessionlock writes, so it is taken as {}",
            st.holder
                .max_hold_ms
                .map_or_else(|| "?".to_owned(), |ms| ms.to_string()),
            human_duration(crate::config::MAX_HOLD_CAP),
        ));
    }
    words.join("; ")
}

fn since(t: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or_default()
}

/// Examines one transcript: `None` for a symlink (skipped), else its
/// findings (none when it is healthy).
fn examine_transcript(path: &Path) -> Option<Vec<Finding>> {
    let finding = |verdict, reasons, action, detail, subject| Finding {
        path: path.to_owned(),
        session: path.to_owned(),
        verdict,
        reasons,
        action,
        detail,
        subject,
    };
    let unusable = |e: Error| {
        let detail = chain(&e);
        finding(
            Verdict::Error,
            vec!["unreadable"],
            Action::None,
            detail,
            Subject::UnusableTranscript(e),
        )
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => return None,
        Ok(m) if !m.is_file() => {
            let e = Error::InvalidPath {
                path: path.to_owned(),
                reason: "is not a regular file".into(),
            };
            return Some(vec![finding(
                Verdict::Invalid,
                vec!["not-a-regular-file"],
                Action::None,
                "something other than a regular file has a transcript's name; the doctor never touches it".to_owned(),
                Subject::UnusableTranscript(e),
            )]);
        }
        Ok(_) => {}
        // Gone since the directory was listed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(vec![unusable(Error::io("stat transcript", path, e))]),
    }
    let mut found = Vec::new();
    let fs = RealFs;
    let torn = fs
        .open_read(path)
        .map_err(|e| Error::io("open transcript", path, e))
        .and_then(|file| transcript::torn_tail(&fs, &file, path));
    match torn {
        Ok(None) => {}
        Ok(Some(t)) => found.push(finding(
            Verdict::Repairable,
            vec!["torn-tail"],
            Action::Repair,
            format!(
                "the final line has no newline: {} torn bytes at byte {}, left by a crash mid-write; \
                 a repair moves them to `{}.torn-<epoch>` and truncates to the last complete line",
                t.len,
                t.offset,
                file_name(path),
            ),
            Subject::TornTail(t),
        )),
        Err(e) => return Some(vec![unusable(e)]),
    }
    let mut count = 0u64;
    let mut first = None;
    let mut reader = match Reader::open(path) {
        Ok(r) => r,
        Err(e) => return Some(vec![unusable(e)]),
    };
    // Checked, not parsed into values: memory stays at one line.
    while let Some(entry) = reader.next_raw() {
        match entry {
            Ok(_) => {}
            Err(Error::InvalidEntry { offset, reason, .. }) => {
                count += 1;
                first.get_or_insert((offset, reason));
            }
            Err(e) => return Some(vec![unusable(e)]),
        }
    }
    if let Some((first_offset, first_reason)) = first {
        let lines = if count == 1 { "line is" } else { "lines are" };
        found.push(finding(
            Verdict::Invalid,
            vec!["invalid-lines"],
            Action::None,
            format!(
                "{count} complete {lines} not JSON, the first at byte {first_offset} ({first_reason}); \
                 the doctor never edits entries: see it with `tail -c +{} {} | head -n 1`",
                first_offset + 1,
                path.display(),
            ),
            Subject::InvalidLines {
                count,
                first_offset,
                first_reason,
            },
        ));
    }
    Some(found)
}

/// Examines a session's state file: a finding only when it is not a regular
/// file, cannot be read, or holds something other than one epoch record
/// (an empty one is a new session's, and healthy).
fn examine_state(path: PathBuf, session: PathBuf) -> Option<Finding> {
    let finding = |verdict, reasons, action, detail, subject| {
        Some(Finding {
            path: path.clone(),
            session: session.clone(),
            verdict,
            reasons,
            action,
            detail,
            subject,
        })
    };
    let unreadable = |e: Error| {
        finding(
            Verdict::Error,
            vec!["unreadable"],
            Action::None,
            chain(&e),
            Subject::UnusableState(e),
        )
    };
    let invalid = |what: &'static str, reason: &str| {
        let e = Error::InvalidPath {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        finding(
            Verdict::Invalid,
            vec![what],
            Action::None,
            format!("{reason}; the doctor never touches it: until it is a regular file, the session cannot be locked"),
            Subject::UnusableState(e),
        )
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(crate::sys::NOFOLLOW_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) if crate::sys::is_symlink_error(&e) => {
            return invalid(
                "symlink",
                "a symbolic link stands where the session's epoch file belongs",
            )
        }
        Err(e) => {
            let e = Error::io("open epoch file", &path, e);
            return unreadable(e);
        }
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => {
            let e = Error::io("stat epoch file", &path, e);
            return unreadable(e);
        }
    };
    if !meta.is_file() {
        return invalid(
            "not-a-regular-file",
            "something other than a regular file stands where the session's epoch file belongs",
        );
    }
    if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
        return invalid(
            "hard-linked",
            "the session's epoch file has more than one hard link, so it may be another file linked here",
        );
    }
    let mut head = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(
        &mut std::io::Read::take(&file, crate::backend::file::epoch::RECORD_LEN as u64 + 1),
        &mut head,
    ) {
        let e = Error::io("read epoch file", &path, e);
        return unreadable(e);
    }
    if head.is_empty() || crate::backend::file::epoch::parse(&head).is_some() {
        return None;
    }
    // Raw (lossy) text in the subject: those who show it escape it for
    // their medium. The sentence shows printable ASCII only, `.` for the rest
    // (as a hex dump does).
    let preview = String::from_utf8_lossy(&head).into_owned();
    let shown: String = head
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect();
    finding(
        Verdict::Repairable,
        vec!["invalid-epoch"],
        Action::Repair,
        format!(
            "holds {} bytes that are not one epoch record (`{shown}`{}): until it is rewritten, the holder's fenced writes fail; \
             a repair rewrites it, under the state lock, with an epoch above every one issued before",
            meta.len(),
            if meta.len() > head.len() as u64 { "..." } else { "" },
        ),
        Subject::InvalidState {
            len: meta.len(),
            preview,
        },
    )
}

fn examine_leftover(
    path: PathBuf,
    session: PathBuf,
    kind: LeftoverKind,
    now: SystemTime,
) -> Option<Finding> {
    // Only regular files are ours; anything else with such a name is not.
    let m = std::fs::symlink_metadata(&path)
        .ok()
        .filter(|m| m.is_file())?;
    let age = since(m.modified().unwrap_or(SystemTime::UNIX_EPOCH), now);
    let leftover = Leftover {
        kind,
        len: m.len(),
        age,
        stamp: FileVersion::of(&m),
    };
    let what = match kind {
        LeftoverKind::Temp => "a lock payload an interrupted publish or extend never moved into place",
        LeftoverKind::Tombstone => "a lock an interrupted release or reclaim moved aside",
        LeftoverKind::Rewrite => "the new contents of an interrupted rewrite or truncate (the transcript itself is intact)",
        LeftoverKind::TornSide => "",
    };
    let (verdict, action, detail) = if kind == LeftoverKind::TornSide {
        (
            Verdict::ReportOnly,
            Action::Keep,
            format!(
                "{} bytes a repair cut off the end of {}; kept for you: delete it once you have looked at it",
                leftover.len,
                file_name(&session),
            ),
        )
    } else if age >= LEFTOVER_AGE {
        (
            Verdict::Removable,
            Action::Remove,
            format!("{what}, {} old", human_duration(age)),
        )
    } else {
        (
            Verdict::Wait,
            Action::Keep,
            format!(
                "{what}, only {} old: an operation may still be using it; removable once {} old",
                human_duration(age),
                human_duration(LEFTOVER_AGE),
            ),
        )
    };
    Some(Finding {
        path,
        session,
        verdict,
        reasons: vec![kind.as_str()],
        action,
        detail,
        subject: Subject::Leftover(leftover),
    })
}

/// How [`fix`] goes about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FixOptions {
    /// The budget for taking a session lock (to repair a transcript or
    /// remove a rewrite leftover); a session still held after it is skipped.
    pub lock_timeout: Duration,
    /// Whether to remove the locks of live holders past their lease
    /// ([`Action::RemoveWithForce`]); without it they are skipped
    /// ([`Outcome::NeedsForce`]).
    pub force: bool,
}

impl Default for FixOptions {
    fn default() -> Self {
        FixOptions {
            lock_timeout: FIX_LOCK_TIMEOUT,
            force: false,
        }
    }
}

impl FixOptions {
    /// Sets the budget for taking a session lock.
    pub fn lock_timeout(mut self, t: Duration) -> Self {
        self.lock_timeout = t;
        self
    }
    /// Sets whether live holders past their lease are removed.
    pub fn force(mut self, yes: bool) -> Self {
        self.force = yes;
        self
    }
}

/// What [`fix`] did with one finding.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// The file was removed.
    Removed,
    /// The torn tail was set aside and the transcript truncated.
    Repaired(TornTail),
    /// Nothing left to do: the file is gone, or the torn tail was repaired
    /// (or completed) by someone else, since the examination.
    AlreadyGone,
    /// The file is not the one examined any more (a new lock, a new
    /// rewrite): left alone.
    Changed,
    /// Someone holds the session's lock: skipped, try again later.
    Held(Box<Holder>),
    /// A live holder past its lease: skipped without [`FixOptions::force`].
    NeedsForce,
    /// The state file was rewritten with this epoch.
    Rewritten(u64),
    /// It failed.
    Failed(Error),
}

impl Outcome {
    /// The name used in messages and JSON (`removed`, `repaired`,
    /// `already-gone`, `changed`, `held`, `failed`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Removed => "removed",
            Outcome::Repaired(_) => "repaired",
            Outcome::Rewritten(_) => "rewritten",
            Outcome::AlreadyGone => "already-gone",
            Outcome::Changed => "changed",
            Outcome::Held(_) => "held",
            Outcome::NeedsForce => "needs-force",
            Outcome::Failed(_) => "failed",
        }
    }

    /// Whether nothing is left to do about the finding.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Outcome::Removed | Outcome::Repaired(_) | Outcome::Rewritten(_) | Outcome::AlreadyGone
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Removed => f.write_str("removed"),
            Outcome::Repaired(t) => {
                write!(f, "moved {} torn bytes at byte {}", t.len, t.offset)?;
                if let Some(p) = &t.saved_to {
                    write!(f, " to {}", Path::new(p).display())?;
                }
                Ok(())
            }
            Outcome::Rewritten(epoch) => write!(f, "rewrote the epoch record as {epoch}"),
            Outcome::AlreadyGone => f.write_str("nothing left to do: already gone or repaired"),
            Outcome::Changed => f.write_str("changed since inspection, left alone"),
            Outcome::Held(h) => {
                let liveness = if h.alive {
                    Liveness::Alive
                } else {
                    Liveness::Unknown
                };
                write!(
                    f,
                    "the session lock is held by {}; try again later",
                    holder_words(h, liveness)
                )
            }
            Outcome::NeedsForce => {
                f.write_str("its holder is alive, only past its lease: removed only with --force")
            }
            Outcome::Failed(e) => f.write_str(&chain(e)),
        }
    }
}

/// What [`fix`] did with one finding of the report.
#[derive(Debug)]
#[non_exhaustive]
pub struct Fixed {
    /// Index of the finding in [`Report::findings`].
    pub finding: usize,
    /// What happened.
    pub outcome: Outcome,
}

/// What [`fix`] did, one entry per finding it acted on, in the report's order.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct FixReport {
    /// The findings acted on.
    pub fixed: Vec<Fixed>,
}

/// Fixes what `report` found fixable ([`Verdict::Removable`] and
/// [`Verdict::Repairable`] findings) and nothing else. Locks and stale
/// temporary and tombstone files go first, so that a dead holder's lock
/// does not stand in the way of the repairs, which take the session lock.
///
/// Failures are per finding ([`Outcome::Failed`]); the others still run.
pub fn fix(report: &Report, opts: &FixOptions) -> FixReport {
    let needs_lock = |f: &Finding| {
        matches!(f.subject, Subject::TornTail(_))
            || matches!(&f.subject, Subject::Leftover(l) if l.kind == LeftoverKind::Rewrite)
    };
    let fixable = || {
        report
            .findings
            .iter()
            .enumerate()
            .filter(|(_, f)| f.verdict.is_fixable())
    };
    let mut fixed: Vec<Fixed> = fixable()
        .filter(|(_, f)| !needs_lock(f))
        .chain(fixable().filter(|(_, f)| needs_lock(f)))
        .map(|(i, f)| Fixed {
            finding: i,
            outcome: fix_one(report, f, opts),
        })
        .collect();
    fixed.sort_by_key(|f| f.finding);
    FixReport { fixed }
}

fn fix_one(report: &Report, f: &Finding, opts: &FixOptions) -> Outcome {
    if f.action == Action::RemoveWithForce && !opts.force {
        return Outcome::NeedsForce;
    }
    match &f.subject {
        Subject::Lock(st) => {
            let outcome = remove_lock(st, opts);
            let foreign = st
                .inspection
                .payload
                .as_ref()
                .is_ok_and(crate::openclaw::is_foreign);
            if matches!(outcome, Outcome::Removed) && f.action == Action::RemoveWithForce && foreign
            {
                tracing::warn!(
                    lock = %f.path.display(),
                    holder_pid = st.holder.pid.unwrap_or(0),
                    past_lease_ms = u64::try_from(past_lease(st, SystemTime::now()).as_millis()).unwrap_or(u64::MAX),
                    "unfenced reclaim: removed the lock of a live foreign holder past its lease (--force); \
                     it cannot be fenced and may still write"
                );
            }
            outcome
        }
        Subject::TornTail(_) => under_session_lock(report, &f.session, opts, |guard| {
            // Opening creates a missing transcript: never conjure one up.
            if !exists(&f.session)? {
                return Ok(Outcome::AlreadyGone);
            }
            let backend = FileBackend::default().confined(&report.root)?;
            let key = backend.key(&f.session)?;
            let mut t = block_on(backend.open_store(&key))?;
            Ok(t.repair(guard)?
                .map_or(Outcome::AlreadyGone, Outcome::Repaired))
        }),
        // The next rewrite of the same epoch reuses the name: remove it only
        // where no write of an older epoch can land (under a newer epoch).
        Subject::Leftover(l) if l.kind == LeftoverKind::Rewrite => {
            under_session_lock(report, &f.session, opts, |guard| {
                guard.with_fence(|| remove_unchanged(&f.path, l))?
            })
        }
        Subject::InvalidState { .. } => {
            let key = FileKey {
                session: f.session.clone(),
                lock_path: {
                    let mut s = f.session.as_os_str().to_owned();
                    s.push(".lock");
                    PathBuf::from(s)
                },
            };
            let deadline = Instant::now().checked_add(opts.lock_timeout);
            match FileBackend::default().rewrite_invalid_state(&key, deadline) {
                Ok(Some(epoch)) => Outcome::Rewritten(epoch),
                Ok(None) => Outcome::AlreadyGone,
                Err(Error::Timeout { holder, .. }) => Outcome::Held(holder),
                Err(e) => Outcome::Failed(e),
            }
        }
        // Temporary and tombstone names carry a token that is never reused.
        Subject::Leftover(l) => remove_unchanged(&f.path, l).unwrap_or_else(Outcome::Failed),
        _ => Outcome::Failed(Error::InvalidPath {
            path: f.path.clone(),
            reason: "nothing to fix".into(),
        }),
    }
}

/// Removes an examined lock if it is still exactly the examined version,
/// waiting for the session's state at most `opts.lock_timeout`.
fn remove_lock(st: &LockStatus, opts: &FixOptions) -> Outcome {
    let key = &st.key;
    let deadline = Instant::now().checked_add(opts.lock_timeout);
    match block_on(FileBackend::default().remove_if_unchanged(key, &st.inspection, deadline)) {
        Err(Error::Timeout { holder, .. }) => Outcome::Held(holder),
        Ok(true) => Outcome::Removed,
        Ok(false) => match exists(&key.lock_path) {
            Ok(true) => Outcome::Changed,
            Ok(false) => Outcome::AlreadyGone,
            Err(e) => Outcome::Failed(e),
        },
        Err(e) => Outcome::Failed(e),
    }
}

/// Takes the session lock for `f`, unless someone holds it in a way the
/// doctor would not remove (then [`Outcome::Held`] at once, without waiting).
fn under_session_lock(
    report: &Report,
    session: &Path,
    opts: &FixOptions,
    f: impl FnOnce(&Guard) -> Result<Outcome>,
) -> Outcome {
    // The acquire budget below is short, and a short budget shortens the
    // payload grace (spec §5); looking first keeps the doctor from taking
    // over a lock it just reported as one to wait for.
    match status::inspect_session(session, &report.settings) {
        Ok(Some(st)) if st.action != Contender::Reclaim => {
            return Outcome::Held(Box::new(st.holder))
        }
        Ok(_) => {}
        Err(e) => return Outcome::Failed(e),
    }
    let lock_opts = LockOptions::from_settings(&report.settings)
        .timeout(Some(opts.lock_timeout))
        .lane(LANE);
    // Confined to the examined directory: a session name that is a symlink
    // out of it must not lead the doctor to lock or repair another file.
    let backend = match SessionLock::new().backend().clone().confined(&report.root) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(e),
    };
    let locks = SessionLock::with_backend(backend, lock_opts.clone());
    let guard = match locks.acquire_with(session, &lock_opts) {
        Ok(g) => g,
        Err(Error::Timeout { holder, .. } | Error::Stale { holder, .. }) => {
            return Outcome::Held(holder)
        }
        Err(e) => return Outcome::Failed(e),
    };
    let outcome = f(&guard).unwrap_or_else(Outcome::Failed);
    match guard.release() {
        Ok(()) => outcome,
        Err(e) if outcome.is_done() => Outcome::Failed(e),
        Err(e) => {
            tracing::warn!(session = %session.display(), error = %chain(&e), "cannot release the session lock");
            outcome
        }
    }
}

/// Removes a leftover if it is still the version examined.
fn remove_unchanged(path: &Path, seen: &Leftover) -> Result<Outcome> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::AlreadyGone),
        Err(e) => return Err(Error::io("stat leftover", path, e)),
        Ok(m) if FileVersion::of(&m) != seen.stamp => return Ok(Outcome::Changed),
        Ok(_) => {}
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(Outcome::Removed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Outcome::AlreadyGone),
        Err(e) => Err(Error::io("remove leftover", path, e)),
    }
}

fn exists(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// An error and its causes, joined with `: `.
fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::fs::{File, OpenOptions};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::payload::format_time;

    fn lock_of(session: &Path) -> PathBuf {
        let mut s = session.as_os_str().to_owned();
        s.push(".lock");
        PathBuf::from(s)
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("reap true");
        pid
    }

    fn payload(pid: u32, starttime: Option<u64>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "pid": pid,
            "createdAt": format_time(SystemTime::now()),
            "maxHoldMs": 300_000,
        });
        if let Some(s) = starttime {
            v["starttime"] = s.into();
        }
        serde_json::to_vec(&v).expect("serialize payload")
    }

    fn set_age(path: &Path, age: Duration) {
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(SystemTime::now() - age))
            .expect("set mtime");
    }

    fn only(report: &Report) -> &Finding {
        assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
        &report.findings[0]
    }

    #[test]
    fn a_lock_naming_this_process_that_it_does_not_hold_is_an_orphan() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("s.jsonl");
        let me = SelfIdentity::current();
        std::fs::write(lock_of(&session), payload(me.pid, me.starttime)).unwrap();

        let report = examine(dir.path(), &Settings::default()).unwrap();
        let f = only(&report);
        assert_eq!(f.verdict, Verdict::Removable);
        assert_eq!(f.reasons, ["orphan-self-pid"]);
        assert_eq!(f.action, Action::Remove);
        assert!(f.detail.contains("names this process"), "{}", f.detail);

        let done = fix(&report, &FixOptions::default());
        assert!(matches!(
            done.fixed[..],
            [Fixed {
                finding: 0,
                outcome: Outcome::Removed
            }]
        ));
        assert!(!lock_of(&session).exists());
    }

    #[test]
    fn a_lock_this_process_holds_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("s.jsonl");
        let guard = SessionLock::new()
            .acquire_with(&session, &LockOptions::default().lane("channel"))
            .unwrap();
        let report = examine(dir.path(), &Settings::default()).unwrap();
        let f = only(&report);
        assert_eq!(f.verdict, Verdict::Ok);
        assert_eq!(f.action, Action::Keep);
        assert!(f.detail.starts_with("held by this process"), "{}", f.detail);
        assert!(fix(&report, &FixOptions::default()).fixed.is_empty());
        guard.release().unwrap();
    }

    // Spec §10: `--fix` never removes a lock that changed since inspection.
    #[test]
    fn a_lock_replaced_between_examine_and_fix_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("s.jsonl");
        let lock = lock_of(&session);
        std::fs::write(&lock, payload(dead_pid(), None)).unwrap();
        let report = examine(dir.path(), &Settings::default()).unwrap();
        assert_eq!(only(&report).verdict, Verdict::Removable);
        assert_eq!(only(&report).reasons, ["dead-pid"]);

        // A new holder takes over: a new file (new inode) at the lock path.
        let fresh = payload(std::process::id() + 1_000_000, None);
        let tmp = dir.path().join("new-lock");
        std::fs::write(&tmp, &fresh).unwrap();
        std::fs::rename(&tmp, &lock).unwrap();

        let done = fix(&report, &FixOptions::default());
        assert!(
            matches!(
                done.fixed[..],
                [Fixed {
                    outcome: Outcome::Changed,
                    ..
                }]
            ),
            "{done:?}"
        );
        assert_eq!(
            done.fixed[0].outcome.to_string(),
            "changed since inspection, left alone"
        );
        assert_eq!(std::fs::read(&lock).unwrap(), fresh);
    }

    #[test]
    fn a_lock_rewritten_in_place_after_examine_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_of(&dir.path().join("s.jsonl"));
        // OpenClaw creates the file, then writes it: the same inode changes.
        File::create(&lock).unwrap();
        set_age(&lock, Duration::from_secs(600));
        let report = examine(dir.path(), &Settings::default()).unwrap();
        assert_eq!(only(&report).verdict, Verdict::Removable);
        assert_eq!(only(&report).reasons, ["malformed"]);

        let written = payload(std::process::id(), None);
        std::fs::write(&lock, &written).unwrap();
        let done = fix(&report, &FixOptions::default());
        assert!(
            matches!(
                done.fixed[..],
                [Fixed {
                    outcome: Outcome::Changed,
                    ..
                }]
            ),
            "{done:?}"
        );
        assert_eq!(std::fs::read(&lock).unwrap(), written);
    }

    #[test]
    fn a_fresh_empty_lock_waits_and_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_of(&dir.path().join("s.jsonl"));
        File::create(&lock).unwrap();
        let report = examine(dir.path(), &Settings::default()).unwrap();
        let f = only(&report);
        assert_eq!(f.verdict, Verdict::Wait);
        assert_eq!(f.action, Action::Keep);
        assert!(fix(&report, &FixOptions::default()).fixed.is_empty());
        assert!(lock.exists());
    }

    #[test]
    fn a_symlink_at_the_lock_path_is_invalid_and_never_touched() {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_of(&dir.path().join("s.jsonl"));
        std::os::unix::fs::symlink("elsewhere", &lock).unwrap();
        let report = examine(dir.path(), &Settings::default()).unwrap();
        let f = only(&report);
        assert_eq!(f.verdict, Verdict::Invalid);
        assert_eq!(f.reasons, ["symlink"]);
        assert_eq!(f.action, Action::None);
        assert!(fix(&report, &FixOptions::default()).fixed.is_empty());
        assert!(std::fs::symlink_metadata(&lock)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn old_leftovers_are_removed_fresh_and_changed_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old_tomb = d.join("a.jsonl.lock.tomb-00000000000000000000000000000001");
        let old_tmp = d.join("a.jsonl.lock.tmp-00000000000000000000000000000002");
        let old_rewrite = d.join("a.jsonl.rewrite-7");
        let fresh_tomb = d.join("b.jsonl.lock.tomb-00000000000000000000000000000003");
        let changing = d.join("c.jsonl.lock.tmp-00000000000000000000000000000004");
        let side = d.join("a.jsonl.torn-6");
        for p in [
            &old_tomb,
            &old_tmp,
            &old_rewrite,
            &fresh_tomb,
            &changing,
            &side,
        ] {
            std::fs::write(p, b"x").unwrap();
        }
        for p in [&old_tomb, &old_tmp, &old_rewrite, &changing, &side] {
            set_age(p, Duration::from_secs(120));
        }
        let report = examine(d, &Settings::default()).unwrap();
        assert_eq!(report.leftovers, 6);
        let verdict = |p: &Path| {
            report
                .findings
                .iter()
                .find(|f| f.path == p)
                .map(|f| (f.verdict, f.reasons.clone()))
        };
        assert_eq!(
            verdict(&old_tomb),
            Some((Verdict::Removable, vec!["orphaned-tombstone"]))
        );
        assert_eq!(
            verdict(&old_tmp),
            Some((Verdict::Removable, vec!["orphaned-temp"]))
        );
        assert_eq!(
            verdict(&old_rewrite),
            Some((Verdict::Removable, vec!["rewrite-leftover"]))
        );
        assert_eq!(
            verdict(&fresh_tomb),
            Some((Verdict::Wait, vec!["orphaned-tombstone"]))
        );
        assert_eq!(
            verdict(&side),
            Some((Verdict::ReportOnly, vec!["torn-side-file"]))
        );

        // Written again after the examination: not the file examined.
        std::fs::write(&changing, b"xy").unwrap();
        let done = fix(&report, &FixOptions::default());
        let outcomes: Vec<(&Path, &str)> = done
            .fixed
            .iter()
            .map(|x| {
                (
                    report.findings[x.finding].path.as_path(),
                    x.outcome.as_str(),
                )
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                (old_tmp.as_path(), "removed"),
                (old_tomb.as_path(), "removed"),
                (old_rewrite.as_path(), "removed"),
                (changing.as_path(), "changed"),
            ]
        );
        assert!(!old_tomb.exists() && !old_tmp.exists() && !old_rewrite.exists());
        assert!(fresh_tomb.exists() && changing.exists() && side.exists());
    }

    #[test]
    fn a_torn_tail_is_repaired_under_the_lock_and_invalid_lines_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("t.jsonl");
        std::fs::write(&session, b"{\"a\":1}\nnot json\n{\"a\":2}\n{\"a\":").unwrap();
        let report = examine(dir.path(), &Settings::default()).unwrap();
        assert_eq!(report.transcripts, 1);
        let kinds: Vec<(Verdict, Vec<&str>)> = report
            .findings
            .iter()
            .map(|f| (f.verdict, f.reasons.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (Verdict::Repairable, vec!["torn-tail"]),
                (Verdict::Invalid, vec!["invalid-lines"]),
            ]
        );
        assert!(matches!(
            report.findings[1].subject,
            Subject::InvalidLines {
                count: 1,
                first_offset: 8,
                ..
            }
        ));

        let done = fix(&report, &FixOptions::default());
        let [Fixed {
            finding: 0,
            outcome: Outcome::Repaired(torn),
        }] = &done.fixed[..]
        else {
            panic!("{done:?}");
        };
        assert_eq!((torn.offset, torn.len), (25, 5));
        let saved = torn.saved_to.as_ref().expect("the torn bytes were saved");
        assert_eq!(std::fs::read(saved).unwrap(), b"{\"a\":");
        assert_eq!(
            std::fs::read(&session).unwrap(),
            b"{\"a\":1}\nnot json\n{\"a\":2}\n"
        );
        assert!(!lock_of(&session).exists(), "the session lock is released");
    }

    #[test]
    fn a_held_session_is_skipped_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("t.jsonl");
        std::fs::write(&session, b"{}\n{").unwrap();
        let report = examine(dir.path(), &Settings::default()).unwrap();
        let guard = SessionLock::new()
            .acquire_with(&session, &LockOptions::default().lane("channel"))
            .unwrap();
        let done = fix(
            &report,
            &FixOptions::default().lock_timeout(Duration::from_secs(60)),
        );
        let [Fixed {
            outcome: Outcome::Held(h),
            ..
        }] = &done.fixed[..]
        else {
            panic!("{done:?}");
        };
        assert_eq!(h.pid, Some(std::process::id()));
        assert_eq!(std::fs::read(&session).unwrap(), b"{}\n{");
        guard.release().unwrap();
    }

    #[test]
    fn leftover_names_are_recognized() {
        assert_eq!(
            leftover_kind(b"s.jsonl.lock.tmp-abc"),
            Some((LeftoverKind::Temp, &b"s.jsonl"[..]))
        );
        assert_eq!(
            leftover_kind(b"s.jsonl.lock.tomb-abc"),
            Some((LeftoverKind::Tombstone, &b"s.jsonl"[..]))
        );
        assert_eq!(
            leftover_kind(b"a.b.jsonl.rewrite-12"),
            Some((LeftoverKind::Rewrite, &b"a.b.jsonl"[..]))
        );
        assert_eq!(
            leftover_kind(b"s.jsonl.torn-12-3"),
            Some((LeftoverKind::TornSide, &b"s.jsonl"[..]))
        );
        assert_eq!(leftover_kind(b"s.jsonl.torn-"), None);
        assert_eq!(leftover_kind(b".jsonl.torn-1"), None);
        assert_eq!(leftover_kind(b"s.jsonl.epoch"), None);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_millis(999)), "999ms");
        assert_eq!(human_duration(Duration::from_millis(12_345)), "12.3s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(human_duration(Duration::from_secs(7_380)), "2h03m");
    }
}
