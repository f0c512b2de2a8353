//! The verdict of a demo run: a pure function of its [`Recording`], so a
//! recorded run can be checked again, and a doctored one must fail.
//!
//! The invariants (each a row of the table; PASS only if all hold):
//! - no turn failed;
//! - every acknowledged entry is in its transcript exactly once (lost = 0,
//!   duplicated = 0), no line is corrupt, and an entry present without an
//!   acknowledgement comes from a process that was SIGKILLed (it was in
//!   flight);
//! - no wedged lane's late write landed;
//! - no lock wait exceeded the bound ([`super::record::RunConfig::bound_ms`]);
//! - every takeover is explained (false takeovers = 0): by a non-benign
//!   change of the same session (a foreign write or another lane's
//!   compaction) inside one of the turn's released intervals, or by a fault
//!   that makes it expected (a fence that could not be taken, a lock revoked
//!   from a wedged lane); and no such change went unnoticed (missed = 0);
//! - the prompt windows of one process on one session never overlap;
//! - no lock is left that names a live process;
//! - every enabled fault was injected and played out as its incident's fix
//!   requires; no worker reported an error.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::record::{
    incarnation_of, FaultKind, MutationKind, Outcome, Recording, TurnRecord, WaitKind,
};

/// One row of the verdict.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) ok: bool,
}

/// The figures behind the rows, for machines (`--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Figures {
    pub(crate) turns_finished: usize,
    pub(crate) turns_completed: usize,
    pub(crate) turns_taken_over: usize,
    pub(crate) turns_aborted: usize,
    pub(crate) turns_failed: usize,
    pub(crate) entries_acknowledged: usize,
    pub(crate) entries_present: usize,
    pub(crate) entries_unacknowledged: usize,
    pub(crate) entries_lost: usize,
    pub(crate) entries_duplicated: usize,
    pub(crate) corrupt_lines: usize,
    pub(crate) late_writes_landed: usize,
    pub(crate) longest_unavailable_ms: f64,
    pub(crate) unavailable_bound_ms: u64,
    pub(crate) takeovers_real: usize,
    pub(crate) takeovers_by_cause: BTreeMap<String, usize>,
    pub(crate) takeovers_false: usize,
    pub(crate) takeovers_missed: usize,
    pub(crate) prompt_window_overlaps: usize,
    pub(crate) locks_leaked: usize,
    pub(crate) lock_files_left: usize,
    pub(crate) lock_waits: usize,
    pub(crate) lock_wait_p50_ms: f64,
    pub(crate) lock_wait_p99_ms: f64,
    pub(crate) faults_injected: BTreeMap<String, usize>,
    pub(crate) errors: usize,
}

/// The outcome of a run: rows, figures, and PASS only if every row holds.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Verdict {
    pub(crate) checks: Vec<Check>,
    pub(crate) figures: Figures,
}

impl Verdict {
    fn row(&mut self, name: &str, value: impl Into<String>, ok: bool) {
        self.checks.push(Check {
            name: name.to_owned(),
            value: value.into(),
            ok,
        });
    }

    fn info(&mut self, name: &str, value: impl Into<String>) {
        self.row(name, value, true);
    }

    /// Whether every invariant held.
    pub(crate) fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The rows that failed.
    pub(crate) fn violations(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }

    /// The table, for people: `✗` marks a violated invariant.
    pub(crate) fn table(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let mark = if c.ok { "  " } else { "✗ " };
            out.push_str(&format!("{mark}{:<width$}  {}\n", c.name, c.value));
        }
        out.push_str(&format!(
            "verdict: {}\n",
            if self.passed() { "PASS" } else { "FAIL" }
        ));
        out
    }
}

/// At most `max` items, then how many more.
fn named(items: &[String], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(&format!(" and {} more", items.len() - max));
    }
    s
}

/// `n`, then the first few names in parentheses when there are any.
fn count_naming(items: &[String]) -> String {
    if items.is_empty() {
        "0".to_owned()
    } else {
        format!("{} ({})", items.len(), named(items, 5))
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn overlaps(a: [u64; 2], b: [u64; 2]) -> bool {
    a[0] < b[1] && b[0] < a[1]
}

/// The non-benign changes by others to a turn's session inside one of its
/// released intervals; with `landed_only`, only those known to have landed.
fn changes_seen_by<'r>(
    rec: &'r Recording,
    turn: &'r TurnRecord,
    landed_only: bool,
) -> impl Iterator<Item = MutationKind> + 'r {
    rec.mutations
        .iter()
        .filter(move |m| {
            m.session == turn.session
                && m.owner_turn.as_deref() != Some(turn.id.as_str())
                && if landed_only {
                    m.landed == Some(true)
                } else {
                    m.landed != Some(false)
                }
                && turn
                    .released
                    .iter()
                    .any(|r| overlaps(*r, [m.start_ns, m.end_ns]))
        })
        .map(|m| m.kind)
}

/// What explains a turn's takeover, if anything does.
fn cause(rec: &Recording, turn: &TurnRecord) -> Option<&'static str> {
    if let Some(k) = turn.expect_takeover {
        return Some(k.name());
    }
    let kinds: HashSet<MutationKind> = changes_seen_by(rec, turn, false).collect();
    if turn.targeted || kinds.contains(&MutationKind::ForeignWrite) {
        Some(FaultKind::ForeignWrite.name())
    } else if kinds.contains(&MutationKind::Compaction) {
        Some("compaction")
    } else {
        None
    }
}

/// A prompt window and the turn it belongs to.
type Window<'r> = ([u64; 2], &'r str);

/// Pairs of prompt windows of one process incarnation on one session that
/// overlap.
fn overlapping_windows(turns: &[TurnRecord]) -> Vec<String> {
    let mut windows: BTreeMap<(u32, u32, usize), Vec<Window<'_>>> = BTreeMap::new();
    for t in turns {
        for w in &t.windows {
            windows
                .entry((t.slot, t.inc, t.session))
                .or_default()
                .push((*w, &t.id));
        }
    }
    let mut overlapping = Vec::new();
    for ws in windows.values_mut() {
        ws.sort_by_key(|(w, _)| w[0]);
        // The window that reaches furthest so far.
        let mut open: Option<Window<'_>> = None;
        for &(w, id) in ws.iter() {
            match open {
                Some((o, oid)) => {
                    if w[0] < o[1] {
                        overlapping.push(format!("{oid} and {id}"));
                    }
                    if w[1] > o[1] {
                        open = Some((w, id));
                    }
                }
                None => open = Some((w, id)),
            }
        }
    }
    overlapping
}

/// Checks a recorded run.
pub(crate) fn check(rec: &Recording) -> Verdict {
    let cfg = &rec.config;
    let mut v = Verdict::default();
    let f = &mut v.figures;
    v.checks.push(Check {
        name: "run".to_owned(),
        value: format!(
            "{} process{} × 4 lanes, {} sessions, {} s, faults {}, seed {}",
            cfg.processes,
            if cfg.processes == 1 { "" } else { "es" },
            cfg.sessions,
            cfg.duration_s,
            cfg.faults_label(),
            cfg.seed
        ),
        ok: true,
    });

    // Turns.
    let count = |o: Outcome| rec.turns.iter().filter(|t| t.outcome == o).count();
    f.turns_finished = rec.turns.len();
    f.turns_completed = count(Outcome::Completed);
    f.turns_taken_over = count(Outcome::TakenOver);
    f.turns_aborted = count(Outcome::Aborted);
    f.turns_failed = count(Outcome::Failed);
    let failed: Vec<String> = rec
        .turns
        .iter()
        .filter(|t| t.outcome == Outcome::Failed)
        .map(|t| format!("{}: {}", t.id, t.error.as_deref().unwrap_or("?")))
        .collect();
    let turns_value = format!(
        "{} of {} finished ({} taken over, {} aborted by the user, {} failed{})",
        f.turns_completed,
        f.turns_finished,
        f.turns_taken_over,
        f.turns_aborted,
        f.turns_failed,
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {}", named(&failed, 3))
        }
    );
    let turns_ok = failed.is_empty() && f.turns_completed > 0;

    // Entries.
    let killed: HashSet<(u32, u32)> = rec
        .incarnations
        .iter()
        .filter(|i| i.killed_at_ns.is_some())
        .map(|i| (i.slot, i.inc))
        .collect();
    let mut present: HashMap<&str, (usize, usize)> = HashMap::new();
    for t in &rec.transcripts {
        for id in &t.ids {
            present.entry(id).or_insert((0, t.session)).0 += 1;
        }
    }
    let mut acked: HashMap<&str, usize> = HashMap::new();
    for a in &rec.acks {
        acked.entry(&a.id).or_insert(a.session);
    }
    let late: HashSet<&str> = rec.late_writes.iter().map(|l| l.id.as_str()).collect();
    let mut lost: Vec<String> = acked
        .iter()
        .filter(|(id, _)| !present.contains_key(*id))
        .map(|(id, s)| format!("{id} in s{s}"))
        .collect();
    lost.sort();
    let mut duplicated: Vec<String> = present
        .iter()
        .filter(|(_, (n, _))| *n > 1)
        .map(|(id, (n, s))| format!("{id} ×{n} in s{s}"))
        .collect();
    duplicated.sort();
    let unacked: Vec<&str> = present
        .keys()
        .copied()
        .filter(|id| !acked.contains_key(id) && !late.contains(id))
        .collect();
    let mut unexplained: Vec<String> = unacked
        .iter()
        .filter(|id| !incarnation_of(id).is_some_and(|i| killed.contains(&i)))
        .map(|id| (*id).to_owned())
        .collect();
    unexplained.sort();
    let corrupt: Vec<String> = rec
        .transcripts
        .iter()
        .flat_map(|t| t.corrupt.iter().cloned())
        .collect();
    f.entries_acknowledged = acked.len();
    f.entries_present = present.values().map(|(n, _)| n).sum();
    f.entries_unacknowledged = unacked.len();
    f.entries_lost = lost.len();
    f.entries_duplicated = duplicated.len();
    f.corrupt_lines = corrupt.len();
    let mut landed_late: Vec<String> = rec
        .late_writes
        .iter()
        .filter(|l| !l.rejected || present.contains_key(l.id.as_str()))
        .map(|l| format!("{} in s{}", l.id, l.session))
        .collect();
    landed_late.sort();
    f.late_writes_landed = landed_late.len();

    // Waits.
    let mut lock_waits: Vec<_> = rec
        .waits
        .iter()
        .filter(|w| w.what != WaitKind::PromptTurn)
        .collect();
    lock_waits.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    let sorted: Vec<f64> = lock_waits.iter().map(|w| w.ms).collect();
    let mut turn_waits: Vec<f64> = rec
        .waits
        .iter()
        .filter(|w| w.what == WaitKind::PromptTurn)
        .map(|w| w.ms)
        .collect();
    turn_waits.sort_by(f64::total_cmp);
    let bound = cfg.bound_ms();
    f.unavailable_bound_ms = bound;
    f.lock_waits = sorted.len();
    f.lock_wait_p50_ms = percentile(&sorted, 0.50);
    f.lock_wait_p99_ms = percentile(&sorted, 0.99);
    let longest = lock_waits.last();
    f.longest_unavailable_ms = longest.map_or(0.0, |w| w.ms);
    let longest_value = match longest {
        Some(w) => format!(
            "{:.1} ms ({} waiting on s{} for {:?}); bound {}",
            w.ms,
            w.lane,
            w.session,
            w.what,
            cfg.bound_text()
        ),
        None => format!("no lock waits; bound {}", cfg.bound_text()),
    };

    // Takeovers.
    let mut by_cause: BTreeMap<String, usize> = BTreeMap::new();
    let mut false_takeovers = Vec::new();
    for t in rec.turns.iter().filter(|t| t.takeover.is_some()) {
        match cause(rec, t) {
            Some(c) => *by_cause.entry(c.to_owned()).or_default() += 1,
            None => false_takeovers.push(format!(
                "{} on s{}: {}",
                t.id,
                t.session,
                t.takeover
                    .as_ref()
                    .map(|k| format!("{}: {}", k.phase, k.detail))
                    .unwrap_or_default()
            )),
        }
    }
    let missed: Vec<String> = rec
        .turns
        .iter()
        .filter(|t| {
            t.outcome != Outcome::Failed
                && t.takeover.is_none()
                && (t.targeted
                    || t.expect_takeover.is_some()
                    || changes_seen_by(rec, t, true).next().is_some())
        })
        .map(|t| format!("{} on s{}", t.id, t.session))
        .collect();
    f.takeovers_real = by_cause.values().sum();
    f.takeovers_by_cause = by_cause.clone();
    f.takeovers_false = false_takeovers.len();
    f.takeovers_missed = missed.len();

    // Prompt windows of one process on one session.
    let overlapping = overlapping_windows(&rec.turns);
    f.prompt_window_overlaps = overlapping.len();
    let window_count: usize = rec.turns.iter().map(|t| t.windows.len()).sum();
    let alias_windows: usize = rec
        .turns
        .iter()
        .filter(|t| t.alias)
        .map(|t| t.windows.len())
        .sum();

    // Locks.
    let leaked: Vec<String> = rec
        .locks
        .iter()
        .filter(|l| l.alive)
        .map(|l| {
            format!(
                "{} names live pid {}{}",
                l.lock,
                l.pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                l.lane
                    .as_deref()
                    .map(|lane| format!(" (lane {lane})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let left: Vec<String> = rec
        .locks
        .iter()
        .filter(|l| !l.alive)
        .map(|l| format!("{} ({})", l.lock, l.reasons))
        .collect();
    f.locks_leaked = leaked.len();
    f.lock_files_left = left.len();

    // Faults.
    let mut injected: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for r in &rec.faults {
        *injected.entry(r.kind).or_default() += 1;
    }
    let missing: Vec<&str> = cfg
        .faults
        .iter()
        .filter(|k| !injected.contains_key(k))
        .map(|k| k.name())
        .collect();
    let mishandled: Vec<String> = rec
        .faults
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: {}", r.kind, r.detail))
        .collect();
    f.faults_injected = injected
        .iter()
        .map(|(k, n)| (k.name().to_owned(), *n))
        .collect();
    f.errors = rec.errors.len();
    let figures = v.figures.clone();
    let f = &figures;

    v.row("turns completed", turns_value, turns_ok);
    v.info("entries acknowledged", f.entries_acknowledged.to_string());
    v.row(
        "entries present",
        format!(
            "{} ({} written but never acknowledged: in flight at a SIGKILL{})",
            f.entries_present,
            unacked.len() - unexplained.len(),
            if unexplained.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} unacknowledged by processes never killed: {}",
                    unexplained.len(),
                    named(&unexplained, 5)
                )
            }
        ),
        unexplained.is_empty(),
    );
    v.row("entries lost", count_naming(&lost), lost.is_empty());
    v.row(
        "entries duplicated",
        count_naming(&duplicated),
        duplicated.is_empty(),
    );
    v.row("corrupt lines", count_naming(&corrupt), corrupt.is_empty());
    v.row(
        "wedged lanes' late writes",
        if rec.late_writes.is_empty() {
            "none attempted".to_owned()
        } else if landed_late.is_empty() {
            format!("all {} refused", rec.late_writes.len())
        } else {
            format!("{} LANDED ({})", landed_late.len(), named(&landed_late, 5))
        },
        landed_late.is_empty(),
    );
    v.row(
        "longest unavailable",
        longest_value,
        f.longest_unavailable_ms <= bound as f64,
    );
    v.info(
        "takeovers detected",
        format!(
            "{} real ({})",
            f.takeovers_real,
            if by_cause.is_empty() {
                "none".to_owned()
            } else {
                by_cause
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    );
    v.row(
        "false takeovers",
        count_naming(&false_takeovers),
        false_takeovers.is_empty(),
    );
    v.row("missed takeovers", count_naming(&missed), missed.is_empty());
    v.row(
        "overlapping prompt windows",
        format!(
            "{} (of {window_count}, {alias_windows} through the alias){}",
            overlapping.len(),
            if overlapping.is_empty() {
                String::new()
            } else {
                format!(": {}", named(&overlapping, 5))
            }
        ),
        overlapping.is_empty(),
    );
    v.row("locks leaked", count_naming(&leaked), leaked.is_empty());
    v.info(
        "stale lock files left",
        format!(
            "{} (holders dead: reclaimable by the next acquirer)",
            left.len()
        ),
    );
    v.info(
        "lock wait p50 / p99",
        format!(
            "{:.2} ms / {:.1} ms over {} waits (prompt turn p99 {:.1} ms)",
            f.lock_wait_p50_ms,
            f.lock_wait_p99_ms,
            f.lock_waits,
            percentile(&turn_waits, 0.99)
        ),
    );
    v.row(
        "faults injected",
        format!(
            "{}{}",
            if injected.is_empty() {
                "none".to_owned()
            } else {
                injected
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            if missing.is_empty() {
                String::new()
            } else {
                format!("; never injected: {}", missing.join(", "))
            }
        ),
        missing.is_empty(),
    );
    v.row(
        "faults handled",
        if mishandled.is_empty() {
            format!("all {} as required", rec.faults.len())
        } else {
            count_naming(&mishandled)
        },
        mishandled.is_empty(),
    );
    v.row(
        "worker errors",
        count_naming(&rec.errors),
        rec.errors.is_empty(),
    );
    v.info("elapsed", format!("{:.1} s", rec.elapsed_s));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::record::{
        Ack, FaultRecord, Incarnation, LockLeft, Mutation, RunConfig, SessionContents, Takeover,
        Wait,
    };

    fn turn(id: &str, session: usize) -> TurnRecord {
        TurnRecord {
            id: id.to_owned(),
            slot: 0,
            inc: 0,
            lane: "channel".to_owned(),
            session,
            alias: false,
            start_ns: 100,
            end_ns: 900,
            released: vec![[200, 600]],
            windows: vec![[250, 550]],
            outcome: Outcome::Completed,
            takeover: None,
            expect_takeover: None,
            targeted: false,
            error: None,
        }
    }

    /// A small clean run: two sessions, one SIGKILL, one compaction that
    /// took another turn over.
    fn clean() -> Recording {
        let ack = |id: &str, session| Ack {
            id: id.to_owned(),
            session,
        };
        let mut taken = turn("p0i0-channel-t1", 0);
        taken.outcome = Outcome::TakenOver;
        taken.takeover = Some(Takeover {
            phase: "prompt_reacquire".into(),
            detail: "replaced".into(),
        });
        // The compaction released for its summary, then rewrote at 300..400.
        let mut compaction = turn("p0i0-compaction-t2", 0);
        compaction.released = vec![[100, 150]];
        compaction.windows = vec![[110, 140]];
        let mut later = turn("p0i0-channel-t5", 0);
        later.released = vec![[700, 800]];
        later.windows = vec![[710, 790]];
        Recording {
            config: RunConfig {
                sessions: 2,
                processes: 1,
                duration_s: 1,
                faults: vec![FaultKind::Sigkill],
                seed: 1,
                wedge_lease_ms: 500,
                lock_timeout_ms: 10_000,
                slack_ms: 1500,
            },
            elapsed_s: 1.5,
            incarnations: vec![
                Incarnation {
                    slot: 0,
                    inc: 0,
                    pid: 10,
                    killed_at_ns: Some(1000),
                },
                Incarnation {
                    slot: 0,
                    inc: 1,
                    pid: 11,
                    killed_at_ns: None,
                },
            ],
            acks: vec![
                ack("p0i0-channel-s0-1", 0),
                ack("p0i0-compaction-s0-2", 0),
                ack("p0i1-cron-s1-3", 1),
            ],
            transcripts: vec![
                SessionContents {
                    session: 0,
                    ids: vec!["p0i0-channel-s0-1".into(), "p0i0-compaction-s0-2".into()],
                    corrupt: Vec::new(),
                },
                SessionContents {
                    session: 1,
                    // The last one was in flight when p0i0 was killed.
                    ids: vec!["p0i1-cron-s1-3".into(), "p0i0-cron-s1-4".into()],
                    corrupt: Vec::new(),
                },
            ],
            locks: vec![LockLeft {
                lock: "/run/sessions/s1.jsonl.lock".into(),
                pid: Some(10),
                alive: false,
                lane: Some("cron".into()),
                reasons: "dead-pid".into(),
            }],
            turns: vec![taken, compaction, later],
            mutations: vec![Mutation {
                id: "p0i0-m3".into(),
                session: 0,
                kind: MutationKind::Compaction,
                owner_turn: Some("p0i0-compaction-t2".into()),
                start_ns: 300,
                end_ns: 400,
                landed: Some(true),
            }],
            waits: vec![Wait {
                session: 0,
                lane: "channel".into(),
                what: WaitKind::Begin,
                ms: 3.0,
            }],
            faults: vec![FaultRecord {
                kind: FaultKind::Sigkill,
                slot: 0,
                inc: 0,
                at_ns: 950,
                ok: true,
                detail: "killed".into(),
            }],
            late_writes: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn row<'v>(v: &'v Verdict, name: &str) -> &'v Check {
        v.checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no row {name}"))
    }

    #[test]
    fn a_clean_run_passes() {
        let v = check(&clean());
        assert!(v.passed(), "{}", v.table());
        assert_eq!(v.figures.takeovers_real, 1);
        assert_eq!(v.figures.takeovers_by_cause.get("compaction"), Some(&1));
        assert_eq!(v.figures.entries_unacknowledged, 1);
        assert_eq!(v.figures.lock_files_left, 1);
        assert!(v.table().ends_with("verdict: PASS\n"));
    }

    #[test]
    fn lost_duplicated_and_leaked_each_fail_by_name() {
        let mut rec = clean();
        // Lost: acknowledged, absent.
        rec.acks.push(Ack {
            id: "p0i1-channel-s1-9".into(),
            session: 1,
        });
        // Duplicated: present twice.
        rec.transcripts[0].ids.push("p0i0-channel-s0-1".into());
        // Leaked: a lock naming a live process.
        rec.locks.push(LockLeft {
            lock: "/run/sessions/s0.jsonl.lock".into(),
            pid: Some(4242),
            alive: true,
            lane: Some("channel".into()),
            reasons: String::new(),
        });
        let v = check(&rec);
        assert!(!v.passed());
        let failed: Vec<&str> = v.violations().map(|c| c.name.as_str()).collect();
        assert_eq!(
            failed,
            ["entries lost", "entries duplicated", "locks leaked"],
            "{}",
            v.table()
        );
        assert!(row(&v, "entries lost").value.contains("p0i1-channel-s1-9"));
        assert!(row(&v, "entries duplicated")
            .value
            .contains("p0i0-channel-s0-1 ×2"));
        assert!(row(&v, "locks leaked")
            .value
            .contains("s0.jsonl.lock names live pid 4242"));
        assert!(v.table().contains("✗ entries lost"));
        assert!(v.table().ends_with("verdict: FAIL\n"));
    }

    #[test]
    fn an_unexplained_takeover_is_false_and_an_unnoticed_change_is_missed() {
        let mut rec = clean();
        // No mutation explains this takeover.
        let mut t = turn("p0i1-heartbeat-t7", 1);
        t.outcome = Outcome::TakenOver;
        t.takeover = Some(Takeover {
            phase: "prompt_reacquire".into(),
            detail: "foreign entry".into(),
        });
        t.windows = vec![[250, 300]];
        rec.turns.push(t);
        // A foreign write landed in this turn's released interval, unnoticed.
        let mut unnoticed = turn("p0i1-cron-t8", 1);
        unnoticed.windows = vec![[310, 440]];
        rec.turns.push(unnoticed);
        rec.mutations.push(Mutation {
            id: "p0i1-m9".into(),
            session: 1,
            kind: MutationKind::ForeignWrite,
            owner_turn: None,
            start_ns: 450,
            end_ns: 460,
            landed: Some(true),
        });
        let v = check(&rec);
        // The foreign write also explains the heartbeat turn's takeover.
        assert!(row(&v, "false takeovers").ok, "{}", v.table());
        assert!(!row(&v, "missed takeovers").ok);
        assert!(row(&v, "missed takeovers").value.contains("p0i1-cron-t8"));

        rec.mutations.pop();
        let v = check(&rec);
        assert!(row(&v, "false takeovers")
            .value
            .contains("p0i1-heartbeat-t7 on s1"));
        assert!(!row(&v, "false takeovers").ok);
        assert!(row(&v, "missed takeovers").ok);
    }

    #[test]
    fn expected_takeovers_overlaps_waits_and_faults_are_checked() {
        let mut rec = clean();
        let mut wedged = turn("p0i1-wedged-t9", 1);
        wedged.released.clear();
        wedged.windows.clear();
        wedged.outcome = Outcome::TakenOver;
        wedged.expect_takeover = Some(FaultKind::Wedge);
        wedged.takeover = Some(Takeover {
            phase: "write".into(),
            detail: "revoked".into(),
        });
        rec.turns.push(wedged);
        assert!(check(&rec).passed());

        // Two windows of one process on one session overlap.
        let mut alias = turn("p0i0-channel-alias-t10", 0);
        alias.alias = true;
        alias.released = vec![[490, 570]];
        alias.windows = vec![[500, 560]];
        rec.turns.push(alias);
        // A wait past the bound.
        rec.waits.push(Wait {
            session: 1,
            lane: "cron".into(),
            what: WaitKind::Reacquire,
            ms: 1600.0,
        });
        // An enabled fault that never happened, and one that misbehaved.
        rec.config.faults.push(FaultKind::Alias);
        rec.faults.push(FaultRecord {
            kind: FaultKind::UserAbort,
            slot: 0,
            inc: 1,
            at_ns: 10,
            ok: false,
            detail: "stuck".into(),
        });
        let v = check(&rec);
        let failed: Vec<&str> = v.violations().map(|c| c.name.as_str()).collect();
        assert_eq!(
            failed,
            [
                "longest unavailable",
                "overlapping prompt windows",
                "faults injected",
                "faults handled"
            ],
            "{}",
            v.table()
        );
        assert!(row(&v, "overlapping prompt windows")
            .value
            .contains("p0i0-channel-alias-t10"));
        assert!(row(&v, "faults injected")
            .value
            .contains("never injected: alias"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 0.5), 50.0);
        assert_eq!(percentile(&xs, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }
}
