//! What a demo run records, and where.
//!
//! The gateway workers log raw facts (one JSON line per fact, one `write`
//! each, so a SIGKILL loses at most the line in flight) and acknowledged
//! entries; after the run the demo reads them back, together with the
//! transcripts and the locks left behind, into one [`Recording`]. The verdict
//! ([`super::verdict::check`]) is a pure function of a `Recording`, so a run
//! can be recorded (`demo --record FILE`) and checked again later, or a
//! doctored recording fed to the checker (`demo --check FILE`).
//!
//! Times are `CLOCK_MONOTONIC` nanoseconds ([`sessionlock::monotonic_ns`]),
//! comparable across the processes of one machine.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A fault the demo can inject: each is one of the incidents of
/// docs/design.md §10.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FaultKind {
    /// Incident 1: stat/read fail with EIO while an attempt snapshots its
    /// fence at prompt release.
    FenceError,
    /// Incident 3: the user aborts an attempt in the middle of its prompt.
    UserAbort,
    /// A gateway process is SIGKILLed (and restarted by the demo).
    Sigkill,
    /// Incident 2: a lane spins on the CPU past its lease while holding.
    Wedge,
    /// Incident 5: two lanes of one session, one through a symlinked
    /// directory.
    Alias,
    /// A non-benign entry is appended by another lane while an attempt is in
    /// its prompt window: the attempt must report a takeover.
    ForeignWrite,
    /// PostgreSQL only: the server ends a holder's liveness connection
    /// (`pg_terminate_backend`): its guard is revoked, its write refused,
    /// the next holder takes over at once.
    ConnCut,
    /// PostgreSQL only: a holder is SIGSTOPped past its lease, then
    /// continued: its late write is refused and absent.
    StopPastLease,
}

impl FaultKind {
    /// Every fault of the file backend (`--faults all`), in the order
    /// they are listed.
    pub(crate) const ALL: [FaultKind; 6] = [
        FaultKind::FenceError,
        FaultKind::UserAbort,
        FaultKind::Sigkill,
        FaultKind::Wedge,
        FaultKind::Alias,
        FaultKind::ForeignWrite,
    ];

    /// Every fault of PostgreSQL (`--faults all` there): fence-error (an
    /// EIO from the file system at the fence snapshot) and alias (two paths
    /// of one file) have no meaning for a server's string keys.
    pub(crate) const PG: [FaultKind; 6] = [
        FaultKind::UserAbort,
        FaultKind::Sigkill,
        FaultKind::Wedge,
        FaultKind::ForeignWrite,
        FaultKind::ConnCut,
        FaultKind::StopPastLease,
    ];

    /// Whether the fault means anything on PostgreSQL.
    pub(crate) fn on_pg(self) -> bool {
        FaultKind::PG.contains(&self)
    }

    /// Whether the fault means anything on files.
    pub(crate) fn on_files(self) -> bool {
        FaultKind::ALL.contains(&self)
    }

    /// The name used by `--faults` and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultKind::FenceError => "fence-error",
            FaultKind::UserAbort => "user-abort",
            FaultKind::Sigkill => "sigkill",
            FaultKind::Wedge => "wedge",
            FaultKind::Alias => "alias",
            FaultKind::ForeignWrite => "foreign-write",
            FaultKind::ConnCut => "conn-cut",
            FaultKind::StopPastLease => "stop-past-lease",
        }
    }

    /// The fault named `name`.
    pub(crate) fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .chain(FaultKind::PG)
            .find(|k| k.name() == name)
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a run was configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunConfig {
    /// Session transcripts.
    pub(crate) sessions: usize,
    /// Gateway processes running at any time.
    pub(crate) processes: u32,
    /// Seconds of load.
    pub(crate) duration_s: u64,
    /// The faults injected.
    pub(crate) faults: Vec<FaultKind>,
    /// Seed of the schedule and of every random choice.
    pub(crate) seed: u64,
    /// Lease of a wedged lane.
    pub(crate) wedge_lease_ms: u64,
    /// Acquire budget of every lane.
    pub(crate) lock_timeout_ms: u64,
    /// What a lock wait may take beyond a wedged lane's lease: queueing behind
    /// other lanes' short holds, compaction fsyncs, scheduling.
    pub(crate) slack_ms: u64,
}

impl RunConfig {
    /// The injected faults as `a,b,c`, or `none`.
    pub(crate) fn faults_label(&self) -> String {
        if self.faults.is_empty() {
            return "none".to_owned();
        }
        self.faults
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl RunConfig {
    /// The longest a session may be unavailable to a lane that wants it: the
    /// lease of a wedged lane (when that fault is on) plus the slack.
    /// Whether a holder outlives its lease (wedged, or stopped): waits
    /// then include that lease.
    fn leased_fault(&self) -> bool {
        self.faults.contains(&FaultKind::Wedge) || self.faults.contains(&FaultKind::StopPastLease)
    }

    pub(crate) fn bound_ms(&self) -> u64 {
        let lease = if self.leased_fault() {
            self.wedge_lease_ms
        } else {
            0
        };
        lease + self.slack_ms
    }

    /// How the bound is made up, for the report.
    pub(crate) fn bound_text(&self) -> String {
        if self.leased_fault() {
            format!(
                "{} ms = {} lease {} ms + {} ms slack",
                self.bound_ms(),
                if self.faults.contains(&FaultKind::Wedge) {
                    "wedged lane's"
                } else {
                    "stopped holder's"
                },
                self.wedge_lease_ms,
                self.slack_ms
            )
        } else {
            format!("{} ms = slack (no wedged lane)", self.slack_ms)
        }
    }
}

/// One gateway process incarnation (a restart after SIGKILL is a new one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Incarnation {
    /// Which of the `processes` slots it ran in.
    pub(crate) slot: u32,
    /// 0 for the first process of a slot, then one more per restart.
    pub(crate) inc: u32,
    /// Its process id.
    pub(crate) pid: u32,
    /// When it was reaped after a SIGKILL; `None` if it exited by itself.
    pub(crate) killed_at_ns: Option<u64>,
}

/// An entry whose fenced append (or compaction rewrite) returned `Ok`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ack {
    /// The entry's unique id.
    pub(crate) id: String,
    /// The session it went to.
    pub(crate) session: usize,
}

/// The entries of one transcript after the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionContents {
    /// The session.
    pub(crate) session: usize,
    /// The ids of its entries, in file order.
    pub(crate) ids: Vec<String>,
    /// Lines that are not an entry with an id (invalid JSON, a torn tail).
    pub(crate) corrupt: Vec<String>,
}

/// A lock file found after every process exited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LockLeft {
    /// The lock file.
    pub(crate) lock: String,
    /// The holder it names.
    pub(crate) pid: Option<u32>,
    /// Whether `sessionlock::status` finds that holder alive.
    pub(crate) alive: bool,
    /// The holder's lane.
    pub(crate) lane: Option<String>,
    /// Why it is stale, as `status` explains it.
    pub(crate) reasons: String,
}

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Outcome {
    /// Reply written, cleanup held the lock.
    Completed,
    /// A takeover stopped the turn.
    TakenOver,
    /// The user aborted it.
    Aborted,
    /// An error other than a takeover.
    Failed,
}

/// A takeover an attempt reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Takeover {
    /// `prompt_reacquire`, `write` or `cleanup`.
    pub(crate) phase: String,
    /// What changed, as the attempt explained it.
    pub(crate) detail: String,
}

/// One attempt (an agent turn) as the lane that ran it saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TurnRecord {
    /// Unique turn id (`p<slot>i<inc>-<lane>-t<n>`).
    pub(crate) id: String,
    /// Process slot.
    pub(crate) slot: u32,
    /// Process incarnation.
    pub(crate) inc: u32,
    /// Lane label.
    pub(crate) lane: String,
    /// The session.
    pub(crate) session: usize,
    /// Whether the session was reached through the symlinked directory.
    pub(crate) alias: bool,
    /// When the turn started and ended.
    pub(crate) start_ns: u64,
    /// See `start_ns`.
    pub(crate) end_ns: u64,
    /// Every interval in which the attempt had released its lock with the
    /// fence armed: from before the release to after the next acquisition
    /// (and its fence check) returned.
    pub(crate) released: Vec<[u64; 2]>,
    /// Its prompt windows: from when it held the prompt turn to when it
    /// gave it up (inner bounds of the real windows).
    pub(crate) windows: Vec<[u64; 2]>,
    /// How it ended.
    pub(crate) outcome: Outcome,
    /// The takeover it reported, if any.
    pub(crate) takeover: Option<Takeover>,
    /// A fault that makes a takeover expected: `fence-error` (the fence
    /// could not be taken) or `wedge` (the lock was revoked).
    pub(crate) expect_takeover: Option<FaultKind>,
    /// Whether a foreign-write fault aimed at its prompt window.
    pub(crate) targeted: bool,
    /// The error of a failed turn.
    pub(crate) error: Option<String>,
}

/// A transcript change that is not benign for other attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum MutationKind {
    /// A user message appended by the foreign-write fault.
    ForeignWrite,
    /// A compaction rewrite (new inode, a marker entry added).
    Compaction,
}

/// A non-benign change of a transcript, with the interval in which it
/// happened (inside its writer's lock hold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Mutation {
    /// Unique id.
    pub(crate) id: String,
    /// The session changed.
    pub(crate) session: usize,
    /// What it was.
    pub(crate) kind: MutationKind,
    /// The turn that made it (its own change is never a takeover for it).
    pub(crate) owner_turn: Option<String>,
    /// Taken while holding the lock, before the change.
    pub(crate) start_ns: u64,
    /// Taken while holding the lock, after the change (or the writer's
    /// death, if it was SIGKILLed in between).
    pub(crate) end_ns: u64,
    /// Whether the change was made: `None` when its writer died first.
    pub(crate) landed: Option<bool>,
}

/// What a lane waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum WaitKind {
    /// `Attempt::begin`.
    Begin,
    /// `reacquire_after_prompt`.
    Reacquire,
    /// A short write lock taken by `with_write` while released.
    Write,
    /// `acquire_for_cleanup` while released.
    Cleanup,
    /// The foreign writer's lock.
    Intruder,
    /// The lock taken right after a fence error, to show it was released.
    Probe,
    /// A lane that wants the session of a wedged lane while it spins.
    Contender,
    /// `release_for_prompt`: waiting for this process's prompt turn of the
    /// session (not a lock wait: the lock is free meanwhile).
    PromptTurn,
}

/// One wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Wait {
    /// The session.
    pub(crate) session: usize,
    /// The lane.
    pub(crate) lane: String,
    /// What for.
    pub(crate) what: WaitKind,
    /// How long.
    pub(crate) ms: f64,
}

/// One injected fault and whether it had the effect it should.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FaultRecord {
    /// Which fault.
    pub(crate) kind: FaultKind,
    /// The process slot it hit.
    pub(crate) slot: u32,
    /// The incarnation it hit.
    pub(crate) inc: u32,
    /// When it was injected.
    pub(crate) at_ns: u64,
    /// Whether it played out as the incident's fix says it must.
    pub(crate) ok: bool,
    /// What happened.
    pub(crate) detail: String,
}

/// The write a wedged lane tries after its lease ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LateWrite {
    /// The entry's id (must not be in the transcript).
    pub(crate) id: String,
    /// The session.
    pub(crate) session: usize,
    /// Whether the append was refused.
    pub(crate) rejected: bool,
}

/// The raw facts of one run: everything the verdict is computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Recording {
    /// The configuration.
    pub(crate) config: RunConfig,
    /// Wall time of the whole run.
    pub(crate) elapsed_s: f64,
    /// Every gateway process that ran.
    pub(crate) incarnations: Vec<Incarnation>,
    /// Every acknowledged entry.
    pub(crate) acks: Vec<Ack>,
    /// The transcripts after the run.
    pub(crate) transcripts: Vec<SessionContents>,
    /// Lock files left after every process exited.
    pub(crate) locks: Vec<LockLeft>,
    /// Every finished turn.
    pub(crate) turns: Vec<TurnRecord>,
    /// Every non-benign change.
    pub(crate) mutations: Vec<Mutation>,
    /// Every wait.
    pub(crate) waits: Vec<Wait>,
    /// Every injected fault.
    pub(crate) faults: Vec<FaultRecord>,
    /// Every wedged lane's late write.
    pub(crate) late_writes: Vec<LateWrite>,
    /// Anything that went wrong outside the turns (a worker that failed,
    /// a fact that could not be written).
    pub(crate) errors: Vec<String>,
}

/// A fact as a gateway worker logs it (one JSON line each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "kebab-case")]
pub(crate) enum Fact {
    /// A finished turn.
    Turn(TurnRecord),
    /// A wait.
    Wait(Wait),
    /// A non-benign change is about to be made (the lock is held).
    MutationBegin {
        /// Mutation id.
        id: String,
        /// The session.
        session: usize,
        /// What it is.
        kind: MutationKind,
        /// The turn making it.
        owner_turn: Option<String>,
        /// When.
        at_ns: u64,
    },
    /// The change was made, or failed (the lock is still held).
    MutationEnd {
        /// Mutation id.
        id: String,
        /// When.
        at_ns: u64,
        /// Whether it was made.
        landed: bool,
    },
    /// An injected fault, after it played out.
    Fault(FaultRecord),
    /// A wedged lane's late write.
    LateWrite(LateWrite),
    /// Something went wrong outside a turn.
    Error {
        /// What.
        message: String,
    },
}

/// Where a run keeps its files.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub(crate) fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The run directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Where the transcripts and their locks live.
    pub(crate) fn sessions_dir(&self) -> PathBuf {
        self.root.join("sessions")
    }

    /// A symlink to [`Layout::sessions_dir`]: a second path to every session.
    pub(crate) fn alias_dir(&self) -> PathBuf {
        self.root.join("alias")
    }

    /// Session `k`'s transcript, through the real or the aliased directory.
    pub(crate) fn session(&self, k: usize, alias: bool) -> PathBuf {
        let dir = if alias {
            self.alias_dir()
        } else {
            self.sessions_dir()
        };
        dir.join(format!("s{k}.jsonl"))
    }

    /// Where the facts of each incarnation go.
    pub(crate) fn facts_dir(&self) -> PathBuf {
        self.root.join("facts")
    }

    /// Where the acknowledgements of each incarnation go.
    pub(crate) fn acks_dir(&self) -> PathBuf {
        self.root.join("acks")
    }

    /// The fact log of an incarnation.
    pub(crate) fn facts(&self, slot: u32, inc: u32) -> PathBuf {
        self.facts_dir()
            .join(format!("{}.jsonl", incarnation_name(slot, inc)))
    }

    /// The acknowledgement log of an incarnation.
    pub(crate) fn acks(&self, slot: u32, inc: u32) -> PathBuf {
        self.acks_dir()
            .join(format!("{}.jsonl", incarnation_name(slot, inc)))
    }
}

/// `p<slot>i<inc>`: the prefix of every id an incarnation makes.
pub(crate) fn incarnation_name(slot: u32, inc: u32) -> String {
    format!("p{slot}i{inc}")
}

/// The incarnation that made an entry, turn or mutation id.
pub(crate) fn incarnation_of(id: &str) -> Option<(u32, u32)> {
    let head = id.split('-').next()?.strip_prefix('p')?;
    let (slot, inc) = head.split_once('i')?;
    Some((slot.parse().ok()?, inc.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_incarnation() {
        let id = format!("{}-channel-s3-17", incarnation_name(2, 5));
        assert_eq!(incarnation_of(&id), Some((2, 5)));
        assert_eq!(incarnation_of("x-channel"), None);
        assert_eq!(incarnation_of("pxi1-channel"), None);
    }

    #[test]
    fn fault_names_round_trip() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::parse(k.name()), Some(k));
            let json = serde_json::to_string(&k).expect("serialize");
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
    }

    #[test]
    fn facts_are_one_tagged_json_object() {
        let f = Fact::LateWrite(LateWrite {
            id: "p0i0-wedged-s1-3".into(),
            session: 1,
            rejected: true,
        });
        let line = serde_json::to_string(&f).expect("serialize");
        assert!(line.starts_with("{\"fact\":\"late-write\""), "{line}");
        assert_eq!(serde_json::from_str::<Fact>(&line).expect("parse"), f);
    }
}
