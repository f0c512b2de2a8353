//! `sessionlock doctor`: every lock, transcript and leftover file in some
//! directories, judged, and with `--fix` fixed (spec §10).
//!
//! The findings table and the summary line (or, with `--json`, one JSON
//! object) go to stdout; the hint and errors go to stderr. Only findings
//! someone has to act on count for the exit code: a live holder (`ok`), a
//! lock or leftover still in its grace (`wait`) and what is kept on purpose
//! (`report-only`) do not.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;
use sessionlock::doctor::{
    self, Action, FixOptions, FixReport, Kind, Outcome, Report, Subject, Verdict,
};
use sessionlock::status::Explained;
use sessionlock::{Config, Error, Settings};
use sessionlock_lab::backend_choice::BackendChoice;
use sessionlock_lab::testkit::block_on;
use sessionlock_postgres::{PgBackend, PgKey, PgVersion};

use super::lock::{pg_backend, pg_prefixes};

use crate::output::report;
use crate::output::{self, hex_if_not_utf8, shell_word};
use crate::output::{millis, HolderJson};

const AFTER_HELP: &str = "\
Without --fix nothing is changed: each finding is shown with what --fix would
do. With --fix the doctor removes stale locks (dead, recycled or orphaned
holders, unusable payloads past their grace; live holders past their lease
only with --force) only if they are still exactly the lock it inspected;
repairs torn transcript tails under the session lock (a session someone
holds is skipped); and removes temporary, tombstone and rewrite files left
by crashes once they are a minute old. It never removes a live holder
within its lease, a too-old lock, a symlink or directory at a lock path, or a
repair's .torn-* side file.

Exit status:
  0  nothing needs attention (everything is healthy, or --fix fixed it)
  1  findings need attention: something --fix would fix (without --fix), or
     something it could not (a symlink lock, lines that are not JSON, a
     session held by someone, a lock that changed since inspection, a live
     holder past its lease without --force)
  2  error (a directory or file could not be read, a fix failed)";

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// Directories holding session transcripts (`*.jsonl`) and their locks
    /// (`*.jsonl.lock`); not searched recursively. With a postgres
    /// `--backend`: key prefixes instead (default: every lease).
    #[arg(value_name = "DIR|PREFIX")]
    dirs: Vec<PathBuf>,
    /// Remove what is safe to remove and repair torn transcript tails.
    #[arg(long)]
    fix: bool,
    /// With --fix, also remove the locks of live holders past their lease.
    /// A sessionlock holder is fenced once its lock is taken again; an
    /// OpenClaw holder cannot be, and may go on writing (unfenced reclaim).
    #[arg(long, requires = "fix")]
    force: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

impl Args {
    /// Whether this run changes anything (and so may take session locks).
    pub(crate) fn fixes(&self) -> bool {
        self.fix
    }
}

/// One finding, with what `--fix` did about it, if anything.
struct Row<'a> {
    finding: &'a doctor::Finding,
    outcome: Option<&'a Outcome>,
}

/// What the run adds up to.
#[derive(Default)]
struct Tally {
    locks: usize,
    transcripts: usize,
    leftovers: usize,
    verdicts: [usize; 7],
    removed_locks: usize,
    removed_leftovers: usize,
    repaired: usize,
    /// Invalid epoch files rewritten (also counted in `repaired`).
    rewritten_states: usize,
    already_gone: usize,
    changed: usize,
    held: usize,
    /// Live holders past their lease left alone without `--force`.
    needs_force: usize,
    failed: usize,
    /// Fixable findings left as they were (no `--fix`).
    would_remove_locks: usize,
    /// Live holders past their lease (no `--fix`): `--fix --force` removes them.
    would_force: usize,
    would_remove_leftovers: usize,
    would_repair: usize,
    would_rewrite_states: usize,
    /// Findings only a person can handle.
    invalid: usize,
    /// Directories and files that could not be read.
    unreadable: usize,
}

const VERDICTS: [Verdict; 7] = [
    Verdict::Ok,
    Verdict::Removable,
    Verdict::Repairable,
    Verdict::Wait,
    Verdict::ReportOnly,
    Verdict::Invalid,
    Verdict::Error,
];

fn verdict_index(v: Verdict) -> usize {
    VERDICTS
        .iter()
        .position(|x| *x == v)
        .unwrap_or(VERDICTS.len() - 1)
}

impl Tally {
    fn new(reports: &[Report], rows: &[Row<'_>], dir_errors: usize) -> Tally {
        let mut t = Tally {
            unreadable: dir_errors,
            ..Tally::default()
        };
        for r in reports {
            t.locks += r.locks;
            t.transcripts += r.transcripts;
            t.leftovers += r.leftovers;
        }
        for row in rows {
            let f = row.finding;
            t.add(f.verdict, f.action, f.kind(), row.outcome);
        }
        t
    }

    /// Counts one finding and what `--fix` did about it.
    fn add(&mut self, verdict: Verdict, action: Action, kind: Kind, outcome: Option<&Outcome>) {
        let t = self;
        t.verdicts[verdict_index(verdict)] += 1;
        match verdict {
            Verdict::Invalid => t.invalid += 1,
            Verdict::Error => t.unreadable += 1,
            _ => {}
        }
        match (outcome, kind) {
            (None, Kind::Lock) if action == Action::RemoveWithForce => t.would_force += 1,
            (None, Kind::Lock) if verdict.is_fixable() => t.would_remove_locks += 1,
            (None, Kind::Leftover) if verdict.is_fixable() => t.would_remove_leftovers += 1,
            (None, Kind::Transcript) if verdict.is_fixable() => t.would_repair += 1,
            (None, Kind::State) if verdict.is_fixable() => t.would_rewrite_states += 1,
            (None, _) => {}
            (Some(Outcome::Removed), Kind::Lock) => t.removed_locks += 1,
            (Some(Outcome::Removed), _) => t.removed_leftovers += 1,
            (Some(Outcome::Repaired(_)), _) => t.repaired += 1,
            (Some(Outcome::Rewritten(_)), _) => t.rewritten_states += 1,
            (Some(Outcome::AlreadyGone), _) => t.already_gone += 1,
            (Some(Outcome::Changed), _) => t.changed += 1,
            (Some(Outcome::Held(_)), _) => t.held += 1,
            (Some(Outcome::NeedsForce), _) => t.needs_force += 1,
            (Some(_), _) => t.failed += 1,
        }
    }

    /// Findings someone has to act on (errors aside).
    fn need_attention(&self) -> usize {
        self.would_remove_locks
            + self.would_force
            + self.would_remove_leftovers
            + self.would_repair
            + self.would_rewrite_states
            + self.invalid
            + self.changed
            + self.held
            + self.needs_force
    }

    fn exit_code(&self) -> u8 {
        if self.unreadable + self.failed > 0 {
            2
        } else if self.need_attention() > 0 {
            1
        } else {
            0
        }
    }
}

pub(crate) fn run(args: Args, backend: &BackendChoice) -> anyhow::Result<ExitCode> {
    let settings = Config::default().resolve();
    if let BackendChoice::Postgres(url) = backend {
        return run_pg(&args, url, backend, &settings);
    }
    if args.dirs.is_empty() {
        super::status::missing_dirs("doctor");
    }
    let mut reports = Vec::new();
    let mut dir_errors = Vec::new();
    for dir in &args.dirs {
        match doctor::examine(dir, &settings) {
            Ok(r) => reports.push(r),
            Err(e) => {
                let err = anyhow::Error::new(e);
                report_dir_error(&err);
                dir_errors.push((dir.clone(), err));
            }
        }
    }
    let fixes: Vec<FixReport> = if args.fix {
        reports
            .iter()
            .map(|r| doctor::fix(r, &FixOptions::default().force(args.force)))
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Row<'_>> = reports
        .iter()
        .enumerate()
        .flat_map(|(ri, report)| {
            let fixed = fixes.get(ri);
            report
                .findings
                .iter()
                .enumerate()
                .map(move |(fi, finding)| Row {
                    finding,
                    outcome: fixed
                        .and_then(|x| x.fixed.iter().find(|f| f.finding == fi).map(|f| &f.outcome)),
                })
        })
        .collect();
    let tally = Tally::new(&reports, &rows, dir_errors.len());

    let mut out = io::stdout().lock();
    let written = if args.json {
        write_json(&mut out, &args, &reports, &rows, &dir_errors, &tally)
    } else {
        write_human(&mut out, &args, &rows, &tally)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        // The reader went away (`sessionlock doctor DIR | head`): not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e).context("cannot write to stdout"),
    }
    drop(out);
    if !args.json {
        for r in &reports {
            let exposed: Vec<_> = r
                .openclaw_exposure
                .iter()
                .filter_map(|(path, why)| {
                    r.findings.iter().find_map(|f| match &f.subject {
                        Subject::Lock(st) if &st.key.lock_path == path => Some((&**st, *why)),
                        _ => None,
                    })
                })
                .collect();
            output::warn_openclaw_exposure(&r.dir, &exposed);
        }
        if let Some(h) = hint(&args, &tally) {
            eprintln!();
            eprintln!("hint: {h}");
        }
    }
    let trouble = tally.unreadable - dir_errors.len() + tally.failed;
    if trouble > 0 {
        eprintln!(
            "error: {} could not be examined or fixed (see the rows marked `error` or `failed`)",
            count(trouble, "file", "files")
        );
    }
    Ok(ExitCode::from(tally.exit_code()))
}

/// Reports a directory that could not be listed, with a hint where one helps.
fn report_dir_error(err: &anyhow::Error) {
    let kind = err.downcast_ref::<Error>().and_then(|e| match e {
        Error::Io { source, .. } => Some(source.kind()),
        _ => None,
    });
    let hint = match kind {
        Some(io::ErrorKind::NotFound) => Some(
            "pass the directory that holds the session transcripts (`*.jsonl`) and their `.lock` files",
        ),
        Some(io::ErrorKind::NotADirectory) => {
            Some("pass a directory, not a file: the doctor examines every session file in it")
        }
        _ => None,
    };
    report(err, hint);
}

/// `1 lock`, `2 locks`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The doctor command line for these directories, for hints.
fn command(args: &Args, fix: bool) -> String {
    let mut s = "sessionlock doctor".to_owned();
    for d in &args.dirs {
        s.push(' ');
        s.push_str(&shell_word(d.as_os_str()));
    }
    if fix {
        s.push_str(" --fix");
    }
    s
}

/// The next step, if there is one.
fn hint(args: &Args, t: &Tally) -> Option<String> {
    let mut steps = Vec::new();
    let mut todo = Vec::new();
    if t.would_remove_locks > 0 {
        todo.push(format!(
            "remove {}",
            count(t.would_remove_locks, "stale lock", "stale locks")
        ));
    }
    if t.would_remove_leftovers > 0 {
        todo.push(format!(
            "remove {}",
            count(t.would_remove_leftovers, "leftover file", "leftover files")
        ));
    }
    if t.would_repair > 0 {
        todo.push(format!(
            "repair {}",
            count(t.would_repair, "transcript", "transcripts")
        ));
    }
    if t.would_rewrite_states > 0 {
        todo.push(format!(
            "rewrite {}",
            count(
                t.would_rewrite_states,
                "invalid epoch file",
                "invalid epoch files"
            )
        ));
    }
    if !todo.is_empty() {
        steps.push(format!(
            "run `{}` to {}",
            command(args, true),
            join_and(&todo)
        ));
    }
    if t.would_force > 0 {
        steps.push(format!(
            "{} alive, only past {}: `{} --force` removes {} too (a sessionlock holder's later \
             writes are fenced; an OpenClaw holder cannot be fenced and may go on writing)",
            count(t.would_force, "holder is", "holders are"),
            if t.would_force == 1 {
                "its lease"
            } else {
                "their leases"
            },
            command(args, true),
            if t.would_force == 1 {
                "its lock"
            } else {
                "their locks"
            },
        ));
    }
    if t.needs_force > 0 {
        steps.push(format!(
            "{} alive, only past {}: run `{} --force` to remove {} (a sessionlock holder's \
             later writes are fenced; an OpenClaw holder cannot be fenced and may go on writing)",
            count(t.needs_force, "holder is", "holders are"),
            if t.needs_force == 1 {
                "its lease"
            } else {
                "their leases"
            },
            command(args, true),
            if t.needs_force == 1 {
                "its lock"
            } else {
                "their locks"
            },
        ));
    }
    if t.held > 0 {
        steps.push(format!(
            "{} held by a live holder: run `{}` again once it is released",
            count(t.held, "session is", "sessions are"),
            command(args, true)
        ));
    }
    if t.changed > 0 {
        steps.push(format!(
            "{} changed while the doctor worked: run `{}` again to look at {}",
            count(t.changed, "file", "files"),
            command(args, false),
            if t.changed == 1 { "it" } else { "them" }
        ));
    }
    if t.invalid > 0 {
        steps.push(format!(
            "{} a person (see the rows marked `needs you`): the doctor never touches {}",
            count(t.invalid, "finding needs", "findings need"),
            if t.invalid == 1 { "it" } else { "them" }
        ));
    }
    (!steps.is_empty()).then(|| steps.join("; "))
}

/// The text of a row's last column: what `--fix` would do, or did.
fn plan(row: &Row<'_>, fixing: bool, force: bool) -> String {
    let f = row.finding;
    plan_text(f.verdict, f.action, &f.detail, row.outcome, fixing, force)
}

/// [`plan`] of a finding's parts.
fn plan_text(
    verdict: Verdict,
    action: Action,
    detail: &str,
    outcome: Option<&Outcome>,
    fixing: bool,
    force: bool,
) -> String {
    if let Some(o) = outcome {
        return match o {
            Outcome::Removed => format!("removed: {detail}"),
            Outcome::Repaired(_) | Outcome::Rewritten(_) => format!("repaired: {o}"),
            Outcome::AlreadyGone => format!("nothing to do: {o}"),
            Outcome::Changed => format!("left alone: {o}"),
            Outcome::Held(_) | Outcome::NeedsForce => format!("skipped: {o}"),
            _ => format!("failed: {o}"),
        };
    }
    let (would, did) = match (verdict, action) {
        (Verdict::Error, _) => ("error", "error"),
        (_, Action::None) => ("needs you", "needs you"),
        (_, Action::Remove) => ("would remove", "not removed"),
        (_, Action::RemoveWithForce) if force => ("would remove", "not removed"),
        (_, Action::RemoveWithForce) => ("would remove with --force", "not removed"),
        (_, Action::Repair) => ("would repair", "not repaired"),
        _ => ("would keep", "kept"),
    };
    format!("{}: {detail}", if fixing { did } else { would })
}

/// The path as shown (escaped): the file name when one directory was given.
fn shown_path(path: &Path, full: bool) -> String {
    if full {
        return output::path(path).into_owned();
    }
    path.file_name().map_or_else(
        || output::path(path).into_owned(),
        |n| output::escape_os(n).into_owned(),
    )
}

fn write_human(out: &mut impl Write, args: &Args, rows: &[Row<'_>], t: &Tally) -> io::Result<()> {
    let full = args.dirs.len() > 1;
    let header = [
        "PATH",
        "VERDICT",
        "REASONS",
        if args.fix { "DONE" } else { "PLAN" },
    ];
    let table: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            let reasons = if r.finding.reasons.is_empty() {
                "-".to_owned()
            } else {
                r.finding.reasons.join(",")
            };
            [
                shown_path(&r.finding.path, full),
                r.finding.verdict.as_str().to_owned(),
                reasons,
                // Details quote payload fields and paths: escaped.
                output::escape(&plan(r, args.fix, args.force)).into_owned(),
            ]
        })
        .collect();
    if !table.is_empty() {
        output::write_rows(out, &header, &table)?;
    }
    writeln!(out, "{}", summary(t, args.fix))
}

/// One line: what was examined and what it adds up to.
fn summary(t: &Tally, fixing: bool) -> String {
    let examined = format!(
        "examined {}, {}, {}",
        count(t.locks, "lock", "locks"),
        count(t.transcripts, "transcript", "transcripts"),
        count(t.leftovers, "leftover file", "leftover files"),
    );
    summary_of(examined, t, fixing)
}

/// The summary line after its `examined ...` part.
fn summary_of(examined: String, t: &Tally, fixing: bool) -> String {
    let verdicts: Vec<String> = VERDICTS
        .iter()
        .zip(t.verdicts)
        .filter(|(_, n)| *n > 0)
        .map(|(v, n)| format!("{n} {v}"))
        .collect();
    let mut s = examined;
    if !verdicts.is_empty() {
        s.push_str(&format!(": {}", verdicts.join(", ")));
    }
    if fixing {
        let mut done = Vec::new();
        if t.removed_locks > 0 {
            done.push(format!(
                "removed {}",
                count(t.removed_locks, "lock", "locks")
            ));
        }
        if t.removed_leftovers > 0 {
            done.push(format!(
                "removed {}",
                count(t.removed_leftovers, "leftover file", "leftover files")
            ));
        }
        if t.repaired > 0 {
            done.push(format!(
                "repaired {}",
                count(t.repaired, "transcript", "transcripts")
            ));
        }
        if t.rewritten_states > 0 {
            done.push(format!(
                "rewrote {}",
                count(t.rewritten_states, "epoch file", "epoch files")
            ));
        }
        if done.is_empty() {
            done.push("fixed nothing".to_owned());
        }
        s.push_str(&format!("; {}", join_and(&done)));
    }
    let attention = t.need_attention();
    if attention == 0 && t.unreadable + t.failed == 0 {
        s.push_str(if fixing {
            "; nothing left to do"
        } else {
            "; nothing to do"
        });
    } else if attention > 0 {
        s.push_str(&format!(
            "; {} attention",
            count(attention, "needs", "need")
        ));
    }
    s
}

/// `--json` output. Field names are a stable interface.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DoctorJson {
    /// The directories examined, as given.
    dirs: Vec<String>,
    findings: Vec<FindingJson>,
    /// What `--fix` did, one entry per finding it acted on (empty without
    /// `--fix`).
    fixed: Vec<FixedJson>,
    /// Directories that could not be listed.
    errors: Vec<DirErrorJson>,
    /// sessionlock holders that OpenClaw, whose locks share their
    /// directory, would delete (spec §15); empty when there are none.
    openclaw_exposure: Vec<ExposureJson>,
    summary: SummaryJson,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExposureJson {
    lock_path: String,
    /// `unmarked-argv` (no `openclaw` argument) or `unreadable` (a lock
    /// file OpenClaw's user cannot read).
    reason: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FindingJson {
    /// `lock`, `transcript` or `leftover`.
    kind: &'static str,
    /// The file, absolute and canonical (lossy UTF-8).
    path: String,
    /// The bytes of `path` in hexadecimal, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    /// The session transcript the file belongs to.
    session: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_hex: Option<String>,
    /// `ok`, `removable`, `repairable`, `wait`, `report-only`, `invalid`,
    /// `error`.
    verdict: &'static str,
    reasons: Vec<&'static str>,
    /// The lock's holder (locks that could be read; `null` otherwise).
    holder: Option<HolderJson>,
    /// What `--fix` does with it: `none`, `remove`, `repair`, `keep`.
    action: &'static str,
    detail: String,
    /// Leftovers and side files: size and age.
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age_ms: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FixedJson {
    /// Index into `findings`.
    finding: usize,
    kind: &'static str,
    path: String,
    /// `removed`, `repaired`, `already-gone`, `changed`, `held`, `failed`.
    outcome: &'static str,
    detail: String,
    /// Where a repair saved the torn bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    saved_to: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DirErrorJson {
    path: String,
    /// The error and its causes, joined with `: `.
    error: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryJson {
    locks: usize,
    transcripts: usize,
    leftovers: usize,
    ok: usize,
    removable: usize,
    repairable: usize,
    wait: usize,
    report_only: usize,
    invalid: usize,
    error: usize,
    removed: usize,
    repaired: usize,
    already_gone: usize,
    changed: usize,
    held: usize,
    /// Live holders past their lease left alone for want of `--force`.
    needs_force: usize,
    failed: usize,
    /// Findings someone has to act on: exit status 1 when non-zero (and no
    /// error).
    need_attention: usize,
    /// The exit status.
    exit_code: u8,
}

fn summary_json(t: &Tally) -> SummaryJson {
    let v = |verdict| t.verdicts[verdict_index(verdict)];
    SummaryJson {
        locks: t.locks,
        transcripts: t.transcripts,
        leftovers: t.leftovers,
        ok: v(Verdict::Ok),
        removable: v(Verdict::Removable),
        repairable: v(Verdict::Repairable),
        wait: v(Verdict::Wait),
        report_only: v(Verdict::ReportOnly),
        invalid: v(Verdict::Invalid),
        error: v(Verdict::Error),
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

fn finding_json(row: &Row<'_>) -> FindingJson {
    let f = row.finding;
    let holder = match &f.subject {
        Subject::Lock(st) => Some(HolderJson::of(st)),
        _ => None,
    };
    let (bytes, age_ms) = match &f.subject {
        Subject::Leftover(l) => (Some(l.len), Some(millis(l.age))),
        _ => (None, None),
    };
    FindingJson {
        kind: f.kind().as_str(),
        path: f.path.to_string_lossy().into_owned(),
        path_hex: hex_if_not_utf8(f.path.as_os_str()),
        session: f.session.to_string_lossy().into_owned(),
        session_hex: hex_if_not_utf8(f.session.as_os_str()),
        verdict: f.verdict.as_str(),
        reasons: f.reasons.clone(),
        holder,
        action: f.action.as_str(),
        detail: f.detail.clone(),
        bytes,
        age_ms,
    }
}

fn write_json(
    out: &mut impl Write,
    args: &Args,
    reports: &[Report],
    rows: &[Row<'_>],
    dir_errors: &[(PathBuf, anyhow::Error)],
    t: &Tally,
) -> io::Result<()> {
    let findings = rows.iter().map(finding_json).collect();
    let fixed = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let o = r.outcome?;
            Some(FixedJson {
                finding: i,
                kind: r.finding.kind().as_str(),
                path: r.finding.path.to_string_lossy().into_owned(),
                outcome: o.as_str(),
                detail: o.to_string(),
                saved_to: match o {
                    Outcome::Repaired(torn) => torn
                        .saved_to
                        .as_ref()
                        .map(|p| p.to_string_lossy().into_owned()),
                    _ => None,
                },
            })
        })
        .collect();
    let doc = DoctorJson {
        dirs: args
            .dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect(),
        findings,
        fixed,
        errors: dir_errors
            .iter()
            .map(|(d, e)| DirErrorJson {
                path: d.to_string_lossy().into_owned(),
                error: format!("{e:#}"),
            })
            .collect(),
        openclaw_exposure: reports
            .iter()
            .flat_map(|r| &r.openclaw_exposure)
            .map(|(p, why)| ExposureJson {
                lock_path: p.to_string_lossy().into_owned(),
                reason: why.as_str(),
            })
            .collect(),
        summary: summary_json(t),
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

// ------------------------------------------------------------ on PostgreSQL

/// One lease's finding on a PostgreSQL server, and what `--fix` did.
struct PgRow {
    finding: doctor::LockFinding<PgKey, PgVersion>,
    outcome: Option<Outcome>,
}

impl PgRow {
    /// The session key and the lease's locator.
    fn names(&self) -> (String, String) {
        let locator = self.finding.lock.locator().to_string_lossy().into_owned();
        match &self.finding.lock {
            Explained::Lock(st) => (st.key.as_str().to_owned(), locator),
            Explained::Unreadable { .. } => (locator.clone(), locator),
        }
    }
}

/// `doctor` on a PostgreSQL server: judges every held lease under the
/// prefixes (all without one) and, with `--fix`, removes the reclaimable
/// ones (dead holders; live holders past their lease only with `--force`)
/// through the backend's compare-and-remove, never a live holder within its
/// lease. Transcripts need no checks there: entries are rows, written whole
/// or not at all, so there are no torn tails or leftover files.
fn run_pg(
    args: &Args,
    url: &str,
    choice: &BackendChoice,
    settings: &Settings,
) -> anyhow::Result<ExitCode> {
    let backend = pg_backend(url)?;
    let prefixes = pg_prefixes(&args.dirs);
    let mut rows = Vec::new();
    for prefix in &prefixes {
        let found = block_on(doctor::examine_locks(&backend, prefix.as_str(), settings))?;
        rows.extend(found.into_iter().map(|finding| PgRow {
            finding,
            outcome: None,
        }));
    }
    if args.fix {
        let opts = FixOptions::default().force(args.force);
        for row in &mut rows {
            if let Some(o) = pg_fix(&backend, &row.finding, &opts) {
                row.outcome = Some(o);
            }
        }
    }
    let mut t = Tally {
        locks: rows.len(),
        ..Tally::default()
    };
    for r in &rows {
        let f = &r.finding;
        t.add(f.verdict, f.action, Kind::Lock, r.outcome.as_ref());
    }
    let examined = format!(
        "examined {} on {}",
        count(t.locks, "lease", "leases"),
        backend.target()
    );

    let mut out = io::stdout().lock();
    let written = if args.json {
        write_pg_json(&mut out, &prefixes, &rows, &t)
    } else {
        write_pg_human(&mut out, args, &rows)
            .and_then(|()| writeln!(out, "{}", summary_of(examined, &t, args.fix)))
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e).context("cannot write to stdout"),
    }
    drop(out);
    if !args.json {
        if let Some(h) = pg_hint(args, choice, &t) {
            eprintln!();
            eprintln!("hint: {h}");
        }
    }
    Ok(ExitCode::from(t.exit_code()))
}

/// What `--fix` does with one lease: `None` when it leaves it alone
/// without trying (nothing to fix).
fn pg_fix(
    backend: &PgBackend,
    f: &doctor::LockFinding<PgKey, PgVersion>,
    opts: &FixOptions,
) -> Option<Outcome> {
    let Explained::Lock(st) = &f.lock else {
        return None;
    };
    if !f.verdict.is_fixable() {
        return None;
    }
    Some(block_on(doctor::remove_lock(backend, st, opts)))
}

/// The doctor command line for these prefixes, for hints.
fn pg_command(args: &Args, choice: &BackendChoice, fix: bool) -> String {
    let mut s = format!(
        "sessionlock --backend {} doctor",
        shell_word(std::ffi::OsStr::new(&choice.to_string()))
    );
    for d in &args.dirs {
        s.push(' ');
        s.push_str(&shell_word(d.as_os_str()));
    }
    if fix {
        s.push_str(" --fix");
    }
    s
}

/// The next step on a PostgreSQL server, if there is one.
fn pg_hint(args: &Args, choice: &BackendChoice, t: &Tally) -> Option<String> {
    let mut steps = Vec::new();
    if t.would_remove_locks > 0 {
        steps.push(format!(
            "run `{}` to remove {}",
            pg_command(args, choice, true),
            count(t.would_remove_locks, "stale lease", "stale leases")
        ));
    }
    if t.would_force + t.needs_force > 0 {
        steps.push(format!(
            "{} alive, only past the lease: `{} --force` removes them too (their later writes \
             are fenced)",
            count(t.would_force + t.needs_force, "holder is", "holders are"),
            pg_command(args, choice, true),
        ));
    }
    if t.held + t.changed > 0 {
        steps.push(format!(
            "{} changed or became held while the doctor worked: run `{}` again",
            count(t.held + t.changed, "lease", "leases"),
            pg_command(args, choice, false)
        ));
    }
    (!steps.is_empty()).then(|| steps.join("; "))
}

fn write_pg_human(out: &mut impl Write, args: &Args, rows: &[PgRow]) -> io::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let header = [
        "SESSION",
        "EPOCH",
        "VERDICT",
        "REASONS",
        if args.fix { "DONE" } else { "PLAN" },
    ];
    let table: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let f = &r.finding;
            let epoch = match &f.lock {
                Explained::Lock(st) => st
                    .holder
                    .epoch
                    .map_or_else(|| "-".to_owned(), |e| e.to_string()),
                Explained::Unreadable { .. } => "-".to_owned(),
            };
            let reasons = if f.reasons.is_empty() {
                "-".to_owned()
            } else {
                f.reasons.join(",")
            };
            [
                output::escape(&r.names().0).into_owned(),
                epoch,
                f.verdict.as_str().to_owned(),
                reasons,
                output::escape(&plan_text(
                    f.verdict,
                    f.action,
                    &f.detail,
                    r.outcome.as_ref(),
                    args.fix,
                    args.force,
                ))
                .into_owned(),
            ]
        })
        .collect();
    output::write_rows(out, &header, &table)
}

/// `--json` on PostgreSQL: the file doctor's object, with key prefixes as
/// `dirs`, each lease a `lock` finding (`path` its locator, `session` its
/// key), and no transcripts or leftovers.
fn write_pg_json(
    out: &mut impl Write,
    prefixes: &[String],
    rows: &[PgRow],
    t: &Tally,
) -> io::Result<()> {
    let findings = rows
        .iter()
        .map(|r| {
            let f = &r.finding;
            let (session, path) = r.names();
            FindingJson {
                kind: Kind::Lock.as_str(),
                path,
                path_hex: None,
                session,
                session_hex: None,
                verdict: f.verdict.as_str(),
                reasons: f.reasons.clone(),
                holder: match &f.lock {
                    Explained::Lock(st) => Some(HolderJson::of(st)),
                    Explained::Unreadable { .. } => None,
                },
                action: f.action.as_str(),
                detail: f.detail.clone(),
                bytes: None,
                age_ms: None,
            }
        })
        .collect();
    let fixed = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let o = r.outcome.as_ref()?;
            Some(FixedJson {
                finding: i,
                kind: Kind::Lock.as_str(),
                path: r.names().1,
                outcome: o.as_str(),
                detail: o.to_string(),
                saved_to: None,
            })
        })
        .collect();
    let doc = DoctorJson {
        dirs: prefixes.to_vec(),
        findings,
        fixed,
        errors: Vec::new(),
        openclaw_exposure: Vec::new(),
        summary: summary_json(t),
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_as_english() {
        let s = |v: &[&str]| join_and(&v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>());
        assert_eq!(s(&["a"]), "a");
        assert_eq!(s(&["a", "b"]), "a and b");
        assert_eq!(s(&["a", "b", "c"]), "a, b and c");
    }
}
