//! The doctor over several directories, as `sessionlock doctor` runs it:
//! each directory examined, fixed when asked, and the whole added up
//! ([`Tally`]) into the counts and the exit status every report of it
//! (the table's summary line, `--json`'s `summary`) shows.

use std::path::PathBuf;

use super::{examine, fix, Action, Finding, FixOptions, FixReport, Kind, Outcome, Report, Verdict};
use crate::config::Settings;
use crate::error::Error;

/// The verdicts in the order reports count them.
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

/// What a doctor's run adds up to: the counts its reports show, and its
/// exit status ([`Tally::exit_code`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tally {
    /// Lock files examined.
    pub locks: usize,
    /// Transcripts examined.
    pub transcripts: usize,
    /// Leftover files examined.
    pub leftovers: usize,
    verdicts: [usize; VERDICTS.len()],
    /// Locks [`fix`] removed.
    pub removed_locks: usize,
    /// Leftover files [`fix`] removed.
    pub removed_leftovers: usize,
    /// Transcripts [`fix`] repaired.
    pub repaired: usize,
    /// Invalid state files [`fix`] rewrote.
    pub rewritten_states: usize,
    /// Findings [`fix`] found already gone (or repaired by someone else).
    pub already_gone: usize,
    /// Findings [`fix`] left alone because they changed since examined.
    pub changed: usize,
    /// Findings [`fix`] skipped because their session is held.
    pub held: usize,
    /// Live holders past their lease [`fix`] left alone without
    /// [`FixOptions::force`].
    pub needs_force: usize,
    /// Findings [`fix`] failed on.
    pub failed: usize,
    /// Removable locks left as they were (no fix).
    pub would_remove_locks: usize,
    /// Live holders past their lease (no fix): a forced fix removes them.
    pub would_force: usize,
    /// Removable leftover files left as they were (no fix).
    pub would_remove_leftovers: usize,
    /// Repairable transcripts left as they were (no fix).
    pub would_repair: usize,
    /// Invalid state files left as they were (no fix).
    pub would_rewrite_states: usize,
    /// Findings only a person can handle ([`Verdict::Invalid`]).
    pub invalid: usize,
    /// Directories and files that could not be read.
    pub unreadable: usize,
}

impl Tally {
    /// Counts one finding with this verdict, action and kind, and what
    /// [`fix`] did about it (`None`: nothing, or no fix).
    pub fn add(&mut self, verdict: Verdict, action: Action, kind: Kind, outcome: Option<&Outcome>) {
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

    /// How many findings got `verdict`.
    pub fn verdict(&self, verdict: Verdict) -> usize {
        self.verdicts[verdict_index(verdict)]
    }

    /// Every verdict with how many findings got it, healthiest first (`ok`,
    /// `removable`, `repairable`, `wait`, `report-only`, `invalid`,
    /// `error`).
    pub fn verdicts(&self) -> impl Iterator<Item = (Verdict, usize)> + '_ {
        VERDICTS.iter().copied().zip(self.verdicts)
    }

    /// Findings someone has to act on (errors aside): what a fix would do,
    /// what only a person can, and what a fix could not do yet.
    pub fn need_attention(&self) -> usize {
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

    /// The exit status: 2 when something could not be read or fixed, else
    /// 1 when findings need attention, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.unreadable + self.failed > 0 {
            2
        } else if self.need_attention() > 0 {
            1
        } else {
            0
        }
    }
}

/// The doctor over some directories of the file backend: each examined
/// ([`examine`]) and, when asked, fixed ([`fix`]). What `sessionlock
/// doctor` reports.
#[derive(Debug)]
#[non_exhaustive]
pub struct Checkup {
    /// The directories, as given.
    pub dirs: Vec<PathBuf>,
    /// The reports of the directories that could be examined, in the order
    /// given.
    pub reports: Vec<Report>,
    /// How the findings were fixed; `None` when they were only examined.
    pub fixed_with: Option<FixOptions>,
    /// What [`fix`] did, one per report; empty when not fixing.
    pub fixes: Vec<FixReport>,
    /// The directories that could not be examined, with why.
    pub errors: Vec<(PathBuf, Error)>,
}

impl Checkup {
    /// Examines every directory of `dirs` with `settings` ([`examine`]).
    /// Only reads. A directory that cannot be examined is kept in
    /// [`Checkup::errors`]; the others still run.
    pub fn examine(dirs: &[PathBuf], settings: &Settings) -> Checkup {
        let mut reports = Vec::new();
        let mut errors = Vec::new();
        for dir in dirs {
            match examine(dir, settings) {
                Ok(r) => reports.push(r),
                Err(e) => errors.push((dir.clone(), e)),
            }
        }
        Checkup {
            dirs: dirs.to_vec(),
            reports,
            fixed_with: None,
            fixes: Vec::new(),
            errors,
        }
    }

    /// Fixes what every report found fixable ([`fix`], as `doctor --fix`;
    /// [`FixOptions::force`] for `--force`), and nothing else. Fixing
    /// again acts on the same examination: what the first fix removed is
    /// then [`Outcome::AlreadyGone`].
    pub fn fix(mut self, opts: FixOptions) -> Checkup {
        self.fixes = self.reports.iter().map(|r| fix(r, &opts)).collect();
        self.fixed_with = Some(opts);
        self
    }

    /// Every finding, directory by directory (the order of `--json`'s
    /// `findings`), with what [`fix`] did about it, if anything.
    pub fn rows(&self) -> impl Iterator<Item = (&Finding, Option<&Outcome>)> + '_ {
        self.reports
            .iter()
            .enumerate()
            .flat_map(move |(ri, report)| {
                let fixed = self.fixes.get(ri);
                report
                    .findings
                    .iter()
                    .enumerate()
                    .map(move |(fi, finding)| {
                        let outcome = fixed
                            .and_then(|x| x.fixed.iter().find(|f| f.finding == fi))
                            .map(|f| &f.outcome);
                        (finding, outcome)
                    })
            })
    }

    /// What it all adds up to.
    pub fn tally(&self) -> Tally {
        let mut t = Tally {
            unreadable: self.errors.len(),
            ..Tally::default()
        };
        for r in &self.reports {
            t.locks += r.locks;
            t.transcripts += r.transcripts;
            t.leftovers += r.leftovers;
        }
        for (f, outcome) in self.rows() {
            t.add(f.verdict, f.action, f.kind(), outcome);
        }
        t
    }
}
