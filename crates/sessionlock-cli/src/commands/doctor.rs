//! `sessionlock doctor`: every lock, transcript and leftover file in some
//! directories, judged, and with `--fix` fixed (docs/design.md §9.4).
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
use sessionlock::diag::waitfor::{self, Cycle};
use sessionlock::doctor::{
    self, Action, Checkup, FixOptions, Kind, Outcome, Subject, Tally, Verdict,
};
use sessionlock::report::{DoctorReport, FindingJson};
use sessionlock::status::Explained;
use sessionlock::SessionId as _;
use sessionlock::{Config, Error, Settings};
use sessionlock_lab::backend_choice::BackendChoice;
use sessionlock_lab::testkit::block_on;
use sessionlock_postgres::{PgBackend, PgKey, PgVersion};

use super::lock::{pg_backend, pg_prefixes};

use crate::exit;
use crate::help::{ExitRow, Status};
use crate::output::{self, report_error, shell_word};

/// `doctor --help`'s notes.
pub(crate) const NOTES: &str = "\
Without --fix nothing is changed: each finding is shown with what --fix would
do. With --fix the doctor removes stale locks (dead, recycled or orphaned
holders, unusable payloads past their grace; live holders past their lease
only with --force) only if they are still exactly the lock it inspected;
repairs torn transcript tails under the session lock (a session someone
holds is skipped); and removes temporary, tombstone and rewrite files left
by crashes once they are a minute old. It never removes a live holder
within its lease, a too-old lock, a symlink or directory at a lock path, or a
repair's .torn-* side file.";

/// `doctor`'s exit statuses (the library's [`Tally::exit_code`]).
pub(crate) const EXIT_STATUS: &[ExitRow] = &[
    (
        Status::Is(exit::OK),
        "nothing needs attention (everything is healthy, or --fix fixed it)",
    ),
    (
        Status::Is(exit::FINDING),
        "findings need attention: something --fix would fix (without --fix), or \
         something it could not (a symlink lock, lines that are not JSON, a session held \
         by someone, a lock that changed since inspection, a live holder past its lease \
         without --force)",
    ),
    (
        Status::Is(exit::ERROR),
        "error (a directory or file could not be read, a fix failed)",
    ),
];

#[derive(clap::Args)]
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

pub(crate) fn run(args: Args, backend: &BackendChoice) -> anyhow::Result<ExitCode> {
    let settings = Config::default().resolve();
    if let BackendChoice::Postgres(url) = backend {
        return run_pg(&args, url, backend, &settings);
    }
    if args.dirs.is_empty() {
        super::status::missing_dirs("doctor");
    }
    let mut checkup = Checkup::examine(&args.dirs, &settings);
    for (_, e) in &checkup.errors {
        report_dir_error(e);
    }
    if args.fix {
        checkup = checkup.fix(FixOptions::default().force(args.force));
    }
    let rows: Vec<Row<'_>> = checkup
        .rows()
        .map(|(finding, outcome)| Row { finding, outcome })
        .collect();
    let tally = checkup.tally();

    let mut out = io::stdout().lock();
    let written = if args.json {
        write_json(&mut out, &checkup)
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
        for r in &checkup.reports {
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
    let trouble = tally.unreadable - checkup.errors.len() + tally.failed;
    if trouble > 0 {
        eprintln!(
            "error: {} could not be examined or fixed (see the rows marked `error` or `failed`)",
            count(trouble, "file", "files")
        );
    }
    Ok(ExitCode::from(tally.exit_code()))
}

/// Reports a directory that could not be listed, with a hint where one helps.
fn report_dir_error(err: &Error) {
    let kind = match err {
        Error::Io { source, .. } => Some(source.kind()),
        _ => None,
    };
    let hint = match kind {
        Some(io::ErrorKind::NotFound) => Some(
            "pass the directory that holds the session transcripts (`*.jsonl`) and their `.lock` files",
        ),
        Some(io::ErrorKind::NotADirectory) => {
            Some("pass a directory, not a file: the doctor examines every session file in it")
        }
        _ => None,
    };
    report_error(err, hint);
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
    let verdicts: Vec<String> = t
        .verdicts()
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

/// `--json` output: the library's report of the run.
fn write_json(out: &mut impl Write, checkup: &Checkup) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &DoctorReport::of(checkup))?;
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
        let mut found = block_on(doctor::examine_locks(&backend, prefix.as_str(), settings))?;
        // Each lease's queue, for the wait-for cycles among the clients.
        // Who waits is extra: without it (no grant on the waiters table,
        // say) the locks are still shown.
        let mut queues = match block_on(backend.waiters(prefix)) {
            Ok((queues, _)) => queues,
            Err(e) => {
                eprintln!("warning: cannot read who waits, queues left out: {e}");
                Default::default()
            }
        };
        for f in &mut found {
            if let Explained::Lock(st) = &mut f.lock {
                if let Some(q) = queues.remove(st.key.as_str()) {
                    st.contention.waiting = q.iter().filter_map(|w| w.pid).collect();
                    st.contention.queue = q;
                }
            }
        }
        rows.extend(found.into_iter().map(|finding| PgRow {
            finding,
            outcome: None,
        }));
    }
    let cycles = {
        let held: Vec<&sessionlock::status::LockStatus<PgKey, PgVersion>> = rows
            .iter()
            .filter_map(|r| match &r.finding.lock {
                Explained::Lock(st) => Some(&**st),
                Explained::Unreadable { .. } => None,
            })
            .collect();
        waitfor::cycles(&held)
    };
    if args.fix {
        let opts = FixOptions::default().force(args.force);
        for row in &mut rows {
            if let Some(o) = pg_fix(&backend, &row.finding, &opts) {
                row.outcome = Some(o);
            }
        }
    }
    let mut t = Tally::default();
    t.locks = rows.len();
    for r in &rows {
        let f = &r.finding;
        t.add(f.verdict, f.action, Kind::Lock, r.outcome.as_ref());
    }
    for _ in &cycles {
        t.add(Verdict::Invalid, Action::None, Kind::Lock, None);
    }
    let examined = format!(
        "examined {} on {}",
        count(t.locks, "lease", "leases"),
        backend.target()
    );

    let mut out = io::stdout().lock();
    let written = if args.json {
        write_pg_json(&mut out, &prefixes, &rows, &cycles, &t)
    } else {
        write_pg_human(&mut out, args, &rows, &cycles)
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

fn write_pg_human(
    out: &mut impl Write,
    args: &Args,
    rows: &[PgRow],
    cycles: &[Cycle],
) -> io::Result<()> {
    if rows.is_empty() && cycles.is_empty() {
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
        .chain(cycles.iter().map(|c| {
            let key = c
                .links
                .first()
                .map(|l| l.session.to_string_lossy().into_owned())
                .unwrap_or_default();
            [
                output::escape(&key).into_owned(),
                "-".to_owned(),
                Verdict::Invalid.as_str().to_owned(),
                doctor::WAIT_FOR_CYCLE.to_owned(),
                output::escape(&plan_text(
                    Verdict::Invalid,
                    Action::None,
                    &c.describe(),
                    None,
                    args.fix,
                    args.force,
                ))
                .into_owned(),
            ]
        }))
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
    cycles: &[Cycle],
    t: &Tally,
) -> io::Result<()> {
    let mut doc = DoctorReport::of_locks(
        prefixes,
        rows.iter().map(|r| (&r.finding, r.outcome.as_ref())),
        t,
    );
    for c in cycles {
        // The first link's lease, by its locator.
        let locator = c
            .links
            .first()
            .and_then(|l| {
                rows.iter().find_map(|r| match &r.finding.lock {
                    Explained::Lock(st) if st.session == l.session => {
                        Some(st.key.locator().to_owned())
                    }
                    _ => None,
                })
            })
            .unwrap_or_default();
        doc.findings
            .push(FindingJson::of_cycle(c, &locator, c.describe()));
    }
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
