//! `sessionlock doctor --json`: what the doctor found in some directories,
//! what its fix did, and what it adds up to, as one JSON object.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{hex_if_not_utf8, lossy, millis, HolderJson};
use crate::backend::SessionId;
use crate::config::Settings;
use crate::diag::doctor::{
    chain, Checkup, Finding, FixOptions, Kind, LockFinding, Outcome, Subject, Tally, Verdict,
};
use crate::diag::status::Explained;
use crate::diag::waitfor::Cycle;
use crate::error::{Error, Holder};
use crate::payload::format_time;

/// What `sessionlock doctor --json` reports. Field names are a stable
/// interface (camelCase when serialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DoctorReport {
    /// The schema version of the serialized report: [`DoctorReport::VERSION`].
    pub version: u32,
    /// The directories examined, as given (lossy UTF-8); for a backend
    /// without files, the key prefixes.
    pub dirs: Vec<String>,
    /// Everything found, directory by directory, by path within one.
    pub findings: Vec<FindingJson>,
    /// What the fix did, one entry per finding it acted on (empty without
    /// a fix).
    pub fixed: Vec<FixedJson>,
    /// Directories that could not be listed.
    pub errors: Vec<DirErrorJson>,
    /// sessionlock holders that OpenClaw, whose locks share their
    /// directory, would delete
    /// ([design §14.4](crate::design#144-telling-the-locks-apart)); empty when
    /// there are none.
    pub openclaw_exposure: Vec<ExposureJson>,
    /// What it adds up to, with the exit status.
    pub summary: SummaryJson,
}

/// A sessionlock holder OpenClaw would delete. Field names are a stable
/// interface (camelCase when serialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ExposureJson {
    /// The holder's lock file (lossy UTF-8).
    pub lock_path: String,
    /// `unmarked-argv` (no `openclaw` argument) or `unreadable` (a lock
    /// file OpenClaw's user cannot read).
    pub reason: &'static str,
}

/// One thing the doctor found. Field names are a stable interface
/// (camelCase when serialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FindingJson {
    /// `lock`, `transcript`, `leftover` or `state`.
    pub kind: &'static str,
    /// The file, absolute and canonical (lossy UTF-8).
    pub path: String,
    /// The bytes of `path` in hexadecimal, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// The session transcript the file belongs to (lossy UTF-8).
    pub session: String,
    /// The bytes of `session` in hexadecimal, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_hex: Option<String>,
    /// `ok`, `removable`, `repairable`, `wait`, `report-only`, `invalid`,
    /// `error`.
    pub verdict: &'static str,
    /// Why: stale reasons (`dead-pid`, ...) for locks, `torn-tail` or
    /// `invalid-lines` for transcripts, the leftover kind for leftovers.
    pub reasons: Vec<&'static str>,
    /// The lock's holder (locks that could be read; `null` otherwise).
    pub holder: Option<HolderJson>,
    /// What the fix does with it: `none`, `remove`, `remove-with-force`,
    /// `repair`, `keep`.
    pub action: &'static str,
    /// A sentence explaining the verdict, for people.
    pub detail: String,
    /// A leftover's size in bytes (left out for other findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// A leftover's age in milliseconds (left out for other findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
    /// For a `state-lock-held` finding, the process stuck holding the
    /// session's state lock, as a [`Holder`] object (`lockPath` the state
    /// file, `pid`, `alive`, `holds`: `"state-lock"`, `stopped`: `true`
    /// when it is stopped); left out for other findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck: Option<Holder>,
    /// For a `wait-for-cycle` finding, the cycle: its links in order and
    /// when it ends; left out for other findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle: Option<CycleJson>,
}

/// A wait-for cycle ([`Cycle`]). Field names are a stable interface
/// (camelCase when serialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CycleJson {
    /// The links in order: each link's holder is the next link's waiter.
    pub links: Vec<LinkJson>,
    /// When it ends at the latest (ISO-8601 UTC): the first lease in it to
    /// end, or a waiter's deadline if that comes first; `null` if unknown.
    pub ends_at: Option<String>,
}

/// One link of a wait-for cycle ([`Link`](crate::diag::waitfor::Link)). Field names are a stable
/// interface (camelCase when serialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LinkJson {
    /// The waiting process.
    pub waiter_pid: Option<u32>,
    /// Its host.
    pub waiter_hostname: Option<String>,
    /// The lane it waits in.
    pub waiter_lane: Option<String>,
    /// When it gives up (ISO-8601 UTC), if its record says.
    pub waiter_deadline: Option<String>,
    /// The session it waits for (lossy UTF-8).
    pub session: String,
    /// The session's holder.
    pub holder_pid: Option<u32>,
    /// Its host.
    pub holder_hostname: Option<String>,
    /// The lane it holds the session in.
    pub holder_lane: Option<String>,
    /// When the holder's lease ends (ISO-8601 UTC).
    pub lease_end: Option<String>,
}

impl CycleJson {
    /// The JSON of a cycle.
    pub fn of(c: &Cycle) -> CycleJson {
        CycleJson {
            links: c
                .links
                .iter()
                .map(|l| LinkJson {
                    waiter_pid: l.waiter_pid,
                    waiter_hostname: l.waiter_host.clone(),
                    waiter_lane: l.waiter_lane.clone(),
                    waiter_deadline: l.waiter_deadline.map(format_time),
                    session: lossy(l.session.as_os_str()),
                    holder_pid: l.holder_pid,
                    holder_hostname: l.holder_host.clone(),
                    holder_lane: l.holder_lane.clone(),
                    lease_end: l.lease_end.map(format_time),
                })
                .collect(),
            ends_at: c.ends.map(format_time),
        }
    }
}

impl FindingJson {
    /// The finding on a wait-for cycle of any backend: `path` the first
    /// link's lock locator, `session` its session.
    pub fn of_cycle(c: &Cycle, locator: &OsStr, detail: String) -> FindingJson {
        let session = c
            .links
            .first()
            .map(|l| lossy(l.session.as_os_str()))
            .unwrap_or_default();
        FindingJson {
            kind: Kind::Lock.as_str(),
            path: lossy(locator),
            path_hex: hex_if_not_utf8(locator),
            session,
            session_hex: None,
            verdict: Verdict::Invalid.as_str(),
            reasons: vec![crate::diag::doctor::WAIT_FOR_CYCLE],
            holder: None,
            action: crate::diag::doctor::Action::None.as_str(),
            detail,
            bytes: None,
            age_ms: None,
            stuck: None,
            cycle: Some(CycleJson::of(c)),
        }
    }

    fn of(f: &Finding) -> FindingJson {
        let holder = match &f.subject {
            Subject::Lock(st) => Some(HolderJson::of(st)),
            _ => None,
        };
        let (bytes, age_ms) = match &f.subject {
            Subject::Leftover(l) => (Some(l.len), Some(millis(l.age))),
            Subject::WaiterRecord(r) => (r.stamp.map(|s| s.size), Some(millis(r.age))),
            _ => (None, None),
        };
        FindingJson {
            kind: f.kind().as_str(),
            path: lossy(f.path.as_os_str()),
            path_hex: hex_if_not_utf8(f.path.as_os_str()),
            session: lossy(f.session.as_os_str()),
            session_hex: hex_if_not_utf8(f.session.as_os_str()),
            verdict: f.verdict.as_str(),
            reasons: f.reasons.clone(),
            holder,
            action: f.action.as_str(),
            detail: f.detail.clone(),
            bytes,
            age_ms,
            stuck: match &f.subject {
                Subject::StuckStateLock(h) => Some(h.clone()),
                _ => None,
            },
            cycle: match &f.subject {
                Subject::WaitCycle(c) => Some(CycleJson::of(c)),
                _ => None,
            },
        }
    }

    /// A lock finding of any backend ([`crate::diag::doctor::examine_locks`]):
    /// `path` is its locator, `session` its session name.
    fn of_lock<K: SessionId, V>(f: &LockFinding<K, V>) -> FindingJson {
        let locator = f.lock.locator();
        let (session, holder) = match &f.lock {
            Explained::Lock(st) => (st.key.session(), Some(HolderJson::of(st))),
            Explained::Unreadable { locator, .. } => (locator.as_os_str(), None),
        };
        FindingJson {
            kind: Kind::Lock.as_str(),
            path: lossy(locator),
            path_hex: hex_if_not_utf8(locator),
            session: lossy(session),
            session_hex: hex_if_not_utf8(session),
            verdict: f.verdict.as_str(),
            reasons: f.reasons.clone(),
            holder,
            action: f.action.as_str(),
            detail: f.detail.clone(),
            bytes: None,
            age_ms: None,
            stuck: None,
            cycle: None,
        }
    }
}

/// What the fix did with one finding. Field names are a stable interface
/// (camelCase when serialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FixedJson {
    /// Index into `findings`.
    pub finding: usize,
    /// The finding's kind.
    pub kind: &'static str,
    /// The finding's path (lossy UTF-8).
    pub path: String,
    /// `removed`, `repaired`, `rewritten`, `already-gone`, `changed`,
    /// `held`, `needs-force`, `failed`.
    pub outcome: &'static str,
    /// A sentence saying what happened, for people.
    pub detail: String,
    /// Where a repair saved the torn bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_to: Option<String>,
}

impl FixedJson {
    fn new(finding: usize, kind: Kind, path: &OsStr, o: &Outcome) -> FixedJson {
        FixedJson {
            finding,
            kind: kind.as_str(),
            path: lossy(path),
            outcome: o.as_str(),
            detail: o.to_string(),
            saved_to: match o {
                Outcome::Repaired(torn) => torn.saved_to.as_ref().map(|p| lossy(p.as_os_str())),
                _ => None,
            },
        }
    }
}

/// A directory that could not be listed. Field names are a stable
/// interface (camelCase when serialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DirErrorJson {
    /// The directory, as given (lossy UTF-8).
    pub path: String,
    /// The error and its causes, joined with `: `.
    pub error: String,
}

impl DirErrorJson {
    pub(super) fn new(dir: &Path, e: &Error) -> DirErrorJson {
        DirErrorJson {
            path: lossy(dir.as_os_str()),
            error: chain(e),
        }
    }
}

/// What a doctor's run adds up to ([`Tally`]). Field names are a stable
/// interface (camelCase when serialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SummaryJson {
    /// Lock files examined.
    pub locks: usize,
    /// Transcripts examined.
    pub transcripts: usize,
    /// Leftover files examined.
    pub leftovers: usize,
    /// Findings judged `ok`.
    pub ok: usize,
    /// Findings judged `removable`.
    pub removable: usize,
    /// Findings judged `repairable`.
    pub repairable: usize,
    /// Findings judged `wait`.
    pub wait: usize,
    /// Findings judged `report-only`.
    pub report_only: usize,
    /// Findings judged `invalid`.
    pub invalid: usize,
    /// Findings judged `error`.
    pub error: usize,
    /// Locks and leftover files the fix removed.
    pub removed: usize,
    /// Transcripts the fix repaired and state files it rewrote.
    pub repaired: usize,
    /// Findings the fix found already gone.
    pub already_gone: usize,
    /// Findings the fix left alone because they changed since examined.
    pub changed: usize,
    /// Findings the fix skipped because their session is held.
    pub held: usize,
    /// Live holders past their lease left alone for want of `--force`.
    pub needs_force: usize,
    /// Findings the fix failed on.
    pub failed: usize,
    /// Findings someone has to act on: exit status 1 when non-zero (and no
    /// error).
    pub need_attention: usize,
    /// The exit status.
    pub exit_code: u8,
}

impl SummaryJson {
    /// The summary of a tally.
    pub fn of(t: &Tally) -> SummaryJson {
        SummaryJson {
            locks: t.locks,
            transcripts: t.transcripts,
            leftovers: t.leftovers,
            ok: t.verdict(Verdict::Ok),
            removable: t.verdict(Verdict::Removable),
            repairable: t.verdict(Verdict::Repairable),
            wait: t.verdict(Verdict::Wait),
            report_only: t.verdict(Verdict::ReportOnly),
            invalid: t.verdict(Verdict::Invalid),
            error: t.verdict(Verdict::Error),
            removed: t.removed_locks + t.removed_leftovers,
            repaired: t.repaired + t.rewritten_states,
            already_gone: t.already_gone,
            changed: t.changed,
            held: t.held,
            needs_force: t.needs_force,
            failed: t.failed,
            need_attention: t.need_attention(),
            exit_code: t.exit_code(),
        }
    }
}

impl DoctorReport {
    /// The schema version of the report: bumped on an incompatible change
    /// (a field renamed, removed or given another meaning), not when fields
    /// are added.
    pub const VERSION: u32 = 1;

    /// The report of a doctor's run over directories of the file backend.
    pub fn of(c: &Checkup) -> DoctorReport {
        let rows: Vec<(&Finding, Option<&Outcome>)> = c.rows().collect();
        DoctorReport {
            version: DoctorReport::VERSION,
            dirs: c.dirs.iter().map(|d| lossy(d.as_os_str())).collect(),
            findings: rows.iter().map(|(f, _)| FindingJson::of(f)).collect(),
            fixed: rows
                .iter()
                .enumerate()
                .filter_map(|(i, (f, o))| {
                    Some(FixedJson::new(i, f.kind(), f.path.as_os_str(), o.as_ref()?))
                })
                .collect(),
            errors: c
                .errors
                .iter()
                .map(|(d, e)| DirErrorJson::new(d, e))
                .collect(),
            openclaw_exposure: c
                .reports
                .iter()
                .flat_map(|r| &r.openclaw_exposure)
                .map(|(p, why)| ExposureJson {
                    lock_path: lossy(p.as_os_str()),
                    reason: why.as_str(),
                })
                .collect(),
            summary: SummaryJson::of(&c.tally()),
        }
    }

    /// The report of a doctor of locks only, for a backend without files
    /// (PostgreSQL): `scopes` (the key prefixes) as `dirs`, each lock a
    /// `lock` finding ([`LockFinding`], with what the fix did about it)
    /// whose `path` is its locator and `session` its session name; no
    /// transcripts, leftovers, errors or exposures.
    pub fn of_locks<'a, K: SessionId, V: 'a>(
        scopes: &[String],
        rows: impl IntoIterator<Item = (&'a LockFinding<K, V>, Option<&'a Outcome>)>,
        tally: &Tally,
    ) -> DoctorReport {
        let rows: Vec<_> = rows.into_iter().collect();
        DoctorReport {
            version: DoctorReport::VERSION,
            dirs: scopes.to_vec(),
            findings: rows.iter().map(|(f, _)| FindingJson::of_lock(f)).collect(),
            fixed: rows
                .iter()
                .enumerate()
                .filter_map(|(i, (f, o))| {
                    Some(FixedJson::new(i, Kind::Lock, f.lock.locator(), (*o)?))
                })
                .collect(),
            errors: Vec::new(),
            openclaw_exposure: Vec::new(),
            summary: SummaryJson::of(tally),
        }
    }
}

/// Examines every directory of `dirs` (each not searched recursively)
/// with `settings` and, with `fix` options, fixes what is safe to fix,
/// as `sessionlock doctor --json` does: `None` only reads (no `--fix`),
/// `Some(FixOptions::default())` is `--fix`, and
/// `Some(FixOptions::default().force(true))` is `--fix --force`.
/// `settings` are those locks are judged by and the fix acquires with
/// ([`Config::resolve`](crate::Config::resolve) for the environment's, as
/// the command uses).
///
/// The exit status the command gives the run is
/// [`summary.exit_code`](SummaryJson::exit_code). For the text the command
/// prints besides, build the [`Checkup`] and take [`DoctorReport::of`] it.
pub fn doctor_report(
    dirs: &[PathBuf],
    settings: &Settings,
    fix: Option<FixOptions>,
) -> DoctorReport {
    let examined = Checkup::examine(dirs, settings);
    DoctorReport::of(&match fix {
        Some(opts) => examined.fix(opts),
        None => examined,
    })
}
