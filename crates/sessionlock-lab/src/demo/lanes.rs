//! The gateway worker of `sessionlock demo` (`sessionlock worker gateway`):
//! one OS process running four lanes (`channel`, `heartbeat`, `cron`,
//! `compaction`) over the run's sessions, each turn driven through the
//! attempt controller, with faults injected when the demo asks for them.
//!
//! Each lane is an OS thread with its own current-thread tokio runtime, like
//! one worker thread of a multi-threaded gateway: a lane wedged on the CPU
//! blocks its own runtime, not the other lanes.
//!
//! Every entry a lane writes is benign for the OpenClaw classifier (`custom`,
//! `session_info`, `label` entries and `gateway-injected` assistant
//! messages), so lanes never take each other over by appending. Only two
//! things are not benign: the user message the foreign-write fault appends,
//! and a compaction rewrite (a new file). Both are logged as mutations with
//! the interval in which they happened, so the verdict can tell a real
//! takeover from a false one.
//!
//! Protocol on stdout: `READY <pid>`, `STAT <turns> <in-flight> <waits>`
//! (every 200 ms), `FAULT <kind>` when a lane takes a fault,
//! `FAULT-DONE <kind>` when it played out, `DONE` at the end. On stdin:
//! `fault <kind>` and `stop` (or end of file).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sessionlock::attempt::AttemptOptions;
use sessionlock::classify::OpenClawClassifier;
use sessionlock::{monotonic_ns, FileBackend, LockOptions};
use sessionlock_postgres::PgBackend;

use super::backends::{pg_session, DemoBackend};
use super::entries::Reply;
use super::events::{self, FaultEvent};
use super::record::{incarnation_name, Ack, Fact, FaultKind, FaultRecord, Layout, Wait, WaitKind};
use super::rng::Rng;
use super::turns::{
    alias_turns, compaction_turn, ms_since, prompt_turn, wedge_turn, FaultNote, Plan, TurnFault,
};

/// How often a worker reports its counters.
const STAT_EVERY: Duration = Duration::from_millis(200);
/// How many turns an in-turn fault may be put in before it counts as not
/// played out.
const FAULT_TRIES: usize = 5;

/// Arguments of `sessionlock worker gateway`.
#[derive(clap::Args)]
pub(crate) struct GatewayArgs {
    /// The run directory (see `record::Layout`).
    #[arg(long)]
    dir: PathBuf,
    /// Process slot.
    #[arg(long)]
    slot: u32,
    /// Incarnation of the slot (one more per restart).
    #[arg(long)]
    incarnation: u32,
    /// Number of sessions.
    #[arg(long)]
    sessions: usize,
    /// Seed of the lanes' random choices.
    #[arg(long)]
    seed: u64,
    /// Lease of a wedged lane, in milliseconds.
    #[arg(long)]
    wedge_lease_ms: u64,
    /// Acquire budget of every lane, in milliseconds.
    #[arg(long)]
    lock_timeout_ms: u64,
    /// On PostgreSQL (`SESSIONLOCK_BACKEND`): the prefix of the run's
    /// session keys.
    #[arg(long, default_value = "")]
    keys: String,
    /// Run no lanes: play out this one fault (`conn-cut` or
    /// `stop-past-lease`) on session `--victim-session`, with the demo's
    /// help (see `victim`).
    #[arg(long, requires = "victim_session")]
    victim: Option<String>,
    /// The session of `--victim`.
    #[arg(long)]
    victim_session: Option<usize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn say(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// What the lanes of one process share.
pub(super) struct Shared {
    pub(super) slot: u32,
    pub(super) inc: u32,
    pub(super) layout: Layout,
    pub(super) sessions: usize,
    pub(super) lock_timeout: Duration,
    pub(super) wedge_lease: Duration,
    pub(super) stop: AtomicBool,
    pub(super) faults: Mutex<VecDeque<FaultKind>>,
    pub(super) turns: AtomicU64,
    pub(super) in_flight: AtomicU64,
    pub(super) waits: AtomicU64,
    pub(super) seq: AtomicU64,
    pub(super) facts: Mutex<File>,
    pub(super) acks: Mutex<File>,
    /// On PostgreSQL: the prefix of the run's session keys.
    pub(super) keys: String,
    /// On PostgreSQL: the server's URL.
    pub(super) pg_url: Option<String>,
    /// The run's event log (`demo --timeline`), if the demo named one.
    pub(super) events: Option<PathBuf>,
}

impl Shared {
    pub(super) fn open(args: &GatewayArgs, pg_url: Option<String>) -> Result<Shared> {
        let layout = Layout::new(&args.dir);
        let open = |path: PathBuf| {
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .with_context(|| format!("open {}", path.display()))
        };
        Ok(Shared {
            slot: args.slot,
            inc: args.incarnation,
            facts: Mutex::new(open(layout.facts(args.slot, args.incarnation))?),
            acks: Mutex::new(open(layout.acks(args.slot, args.incarnation))?),
            layout,
            sessions: args.sessions.max(1),
            lock_timeout: Duration::from_millis(args.lock_timeout_ms),
            wedge_lease: Duration::from_millis(args.wedge_lease_ms),
            stop: AtomicBool::new(false),
            faults: Mutex::new(VecDeque::new()),
            turns: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            keys: args.keys.clone(),
            pg_url,
            events: events::from_env(),
        })
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps `ms`, waking early when the worker is told to stop; returns
    /// whether to go on.
    pub(super) async fn pause(&self, ms: u64) -> bool {
        let until = Instant::now() + Duration::from_millis(ms);
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            tokio::time::sleep(left.min(Duration::from_millis(50))).await;
        }
        false
    }

    pub(super) fn take_fault(&self) -> Option<FaultKind> {
        lock(&self.faults).pop_front()
    }

    pub(super) fn stat_line(&self) -> String {
        format!(
            "STAT {} {} {}",
            self.turns.load(Ordering::SeqCst),
            self.in_flight.load(Ordering::SeqCst),
            self.waits.load(Ordering::SeqCst)
        )
    }

    pub(super) fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    /// A unique entry id: incarnation, lane, session, sequence number.
    pub(super) fn entry_id(&self, lane: &str, session: usize) -> String {
        format!(
            "{}-{lane}-s{session}-{}",
            incarnation_name(self.slot, self.inc),
            self.next()
        )
    }

    pub(super) fn turn_id(&self, lane: &str) -> String {
        format!(
            "{}-{lane}-t{}",
            incarnation_name(self.slot, self.inc),
            self.next()
        )
    }

    pub(super) fn mutation_id(&self) -> String {
        format!("{}-m{}", incarnation_name(self.slot, self.inc), self.next())
    }

    pub(super) fn lock_options(&self, lane: &str, run: &str, lease: Duration) -> LockOptions {
        LockOptions::default()
            .timeout(Some(self.lock_timeout))
            .max_hold(lease)
            .lane(lane)
            .run_id(run)
    }

    pub(super) fn attempt_options(&self, lane: &str, run: &str, lease: Duration) -> AttemptOptions {
        AttemptOptions::default()
            .lock(self.lock_options(lane, run, lease))
            .classifier(Arc::new(OpenClawClassifier))
    }

    /// Session `k` as the library's events name it, and its backend: the
    /// canonical transcript path, or the PostgreSQL key.
    pub(super) fn session_name(&self, k: usize) -> (String, &'static str) {
        if self.pg_url.is_some() {
            return (pg_session(&self.keys, k), "postgres");
        }
        let file = self.layout.session(k, false);
        let dir = std::fs::canonicalize(self.layout.sessions_dir())
            .unwrap_or_else(|_| self.layout.sessions_dir());
        let name = file.file_name().map(|n| dir.join(n)).unwrap_or(file);
        (name.display().to_string(), "file")
    }

    /// Logs an injected fault in the run's event log, if there is one.
    pub(super) fn log_fault(
        &self,
        ts_us: i64,
        fault: FaultKind,
        session: usize,
        lane: &str,
        note: &FaultRecord,
    ) -> Result<()> {
        let Some(log) = &self.events else {
            return Ok(());
        };
        events::log_fault(
            log,
            &FaultEvent {
                ts_us,
                fault,
                target_pid: Some(std::process::id()),
                session: Some(self.session_name(session)),
                lane: Some(lane),
                detail: &note.detail,
                ok: note.ok,
            },
        )
    }

    /// Logs a fact: one `write` of one line, so a SIGKILL loses at most the
    /// line in flight.
    pub(super) fn fact(&self, fact: &Fact) -> Result<()> {
        let mut line = serde_json::to_vec(fact)?;
        line.push(b'\n');
        lock(&self.facts)
            .write_all(&line)
            .context("write the fact log")
    }

    /// Acknowledges an entry whose write returned `Ok`.
    pub(super) fn ack(&self, id: &str, session: usize) -> Result<()> {
        let mut line = serde_json::to_vec(&Ack {
            id: id.to_owned(),
            session,
        })?;
        line.push(b'\n');
        lock(&self.acks)
            .write_all(&line)
            .context("write the acknowledgement log")
    }

    /// Logs a wait that started at `since`; returns its length in ms.
    pub(super) fn wait(
        &self,
        session: usize,
        lane: &str,
        what: WaitKind,
        since: Instant,
    ) -> Result<f64> {
        let ms = ms_since(since);
        self.record_wait(session, lane, what, ms)?;
        Ok(ms)
    }

    /// Logs a wait of `ms`.
    pub(super) fn record_wait(
        &self,
        session: usize,
        lane: &str,
        what: WaitKind,
        ms: f64,
    ) -> Result<()> {
        if what != WaitKind::PromptTurn && ms >= 1.0 {
            self.waits.fetch_add(1, Ordering::SeqCst);
        }
        self.fact(&Fact::Wait(Wait {
            session,
            lane: lane.to_owned(),
            what,
            ms,
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LaneKind {
    Channel,
    Heartbeat,
    Cron,
    Compaction,
}

impl LaneKind {
    const ALL: [LaneKind; 4] = [
        LaneKind::Channel,
        LaneKind::Heartbeat,
        LaneKind::Cron,
        LaneKind::Compaction,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            LaneKind::Channel => "channel",
            LaneKind::Heartbeat => "heartbeat",
            LaneKind::Cron => "cron",
            LaneKind::Compaction => "compaction",
        }
    }

    /// The pause before each turn.
    pub(super) fn idle_ms(self, rng: &mut Rng) -> u64 {
        match self {
            LaneKind::Channel => rng.range(0, 80),
            LaneKind::Heartbeat => rng.range(150, 350),
            LaneKind::Cron => rng.range(250, 700),
            LaneKind::Compaction => rng.range(700, 1500),
        }
    }

    /// A turn of this lane (compaction turns have their own shape).
    pub(super) fn plan(self, session: usize, rng: &mut Rng) -> Plan {
        let (model_ms, tools, reply) = match self {
            LaneKind::Heartbeat => (rng.range(10, 60), 0, Reply::SessionInfo),
            LaneKind::Cron => (rng.range(20, 150), rng.range(0, 1), Reply::Label),
            LaneKind::Channel | LaneKind::Compaction => {
                (rng.range(40, 350), rng.range(0, 2), Reply::Assistant)
            }
        };
        let mut tools: Vec<u64> = (0..tools).map(|_| rng.range(0, model_ms)).collect();
        tools.sort_unstable();
        Plan {
            lane: self.label().to_owned(),
            session,
            alias: false,
            model_ms,
            tools,
            reply,
            fault: None,
        }
    }
}

/// A channel-like turn that plays out `fault` (one of the in-turn faults).
fn fault_plan(lane: LaneKind, fault: FaultKind, session: usize, rng: &mut Rng) -> Plan {
    let mut plan = Plan {
        lane: lane.label().to_owned(),
        ..LaneKind::Channel.plan(session, rng)
    };
    plan.model_ms = plan.model_ms.max(120);
    let at_ms = rng.range(20, plan.model_ms - 20);
    plan.fault = match fault {
        FaultKind::UserAbort => Some(TurnFault::UserAbort { at_ms }),
        FaultKind::ForeignWrite => Some(TurnFault::ForeignWrite { at_ms }),
        _ => Some(TurnFault::FenceError),
    };
    plan
}

/// Plays out one fault taken by a lane.
async fn fault_turn<B: DemoBackend>(
    sh: &Shared,
    be: &B,
    lane: LaneKind,
    fault: FaultKind,
    session: usize,
    rng: &mut Rng,
) -> Result<()> {
    let at_ns = monotonic_ns();
    let at_us = events::wall_us();
    // A lost line only makes the progress view lag.
    let _ = say(&format!("FAULT {fault}"));
    let note = match fault {
        FaultKind::FenceError | FaultKind::UserAbort | FaultKind::ForeignWrite => {
            // A turn taken over (by a compaction) before the fault's moment
            // cannot play it out; the fault then goes into another turn.
            let mut note = None;
            for _ in 0..FAULT_TRIES {
                let plan = fault_plan(lane, fault, session, rng);
                note = prompt_turn(sh, be, plan).await?.note;
                if note.is_some() {
                    break;
                }
            }
            note
        }
        FaultKind::Wedge => Some(wedge_turn(sh, be, session).await?),
        FaultKind::Alias => Some(alias_turns(sh, be, lane, session, rng).await?),
        FaultKind::Sigkill | FaultKind::ConnCut | FaultKind::StopPastLease => Some(FaultNote::new(
            false,
            format!("{fault} is injected by the demo, not by a gateway's lane"),
        )),
    }
    .unwrap_or_else(|| {
        FaultNote::new(
            false,
            format!(
                "every turn it was put in ({FAULT_TRIES}) was taken over before it could play out"
            ),
        )
    });
    let record = FaultRecord {
        kind: fault,
        slot: sh.slot,
        inc: sh.inc,
        at_ns,
        ok: note.ok,
        detail: note.detail,
    };
    sh.log_fault(at_us, fault, session, lane.label(), &record)?;
    sh.fact(&Fact::Fault(record))?;
    let _ = say(&format!("FAULT-DONE {fault}"));
    Ok(())
}

async fn lane_loop<B: DemoBackend>(
    sh: &Shared,
    be: &B,
    kind: LaneKind,
    mut rng: Rng,
) -> Result<()> {
    loop {
        let idle = kind.idle_ms(&mut rng);
        if !sh.pause(idle).await {
            // Stopping: faults already handed to this process still play
            // out, so every fault the demo sent is injected.
            if kind != LaneKind::Compaction {
                while let Some(fault) = sh.take_fault() {
                    let session = rng.index(sh.sessions);
                    fault_turn(sh, be, kind, fault, session, &mut rng).await?;
                }
            }
            return Ok(());
        }
        let session = rng.index(sh.sessions);
        if kind == LaneKind::Compaction {
            compaction_turn(sh, be, session, &mut rng).await?;
            continue;
        }
        match sh.take_fault() {
            Some(fault) => fault_turn(sh, be, kind, fault, session, &mut rng).await?,
            None => {
                prompt_turn(sh, be, kind.plan(session, &mut rng)).await?;
            }
        }
    }
}

/// The backend a gateway runs on.
#[derive(Clone)]
enum On {
    File,
    Pg(PgBackend),
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the lane's runtime")
}

fn run_lane(sh: &Shared, on: &On, kind: LaneKind, rng: Rng) -> Result<()> {
    let rt = runtime()?;
    match on {
        On::File => rt.block_on(lane_loop(sh, &FileBackend::default(), kind, rng)),
        On::Pg(be) => rt.block_on(lane_loop(sh, be, kind, rng)),
    }
}

/// `sessionlock worker gateway`: runs the lanes until told to stop (or,
/// with `--victim`, plays out one fault).
pub(crate) fn run(args: GatewayArgs) -> Result<ExitCode> {
    let (on, pg_url) = match crate::backend_choice::BackendChoice::resolve(None)? {
        crate::backend_choice::BackendChoice::File => (On::File, None),
        crate::backend_choice::BackendChoice::Postgres(url) => {
            let be = PgBackend::connect(&url).context("connect to the server")?;
            (On::Pg(be), Some(url))
        }
    };
    let sh = Arc::new(Shared::open(&args, pg_url)?);
    if let (Some(fault), Some(session)) = (&args.victim, args.victim_session) {
        let On::Pg(be) = &on else {
            anyhow::bail!("--victim runs on PostgreSQL only");
        };
        let fault = FaultKind::parse(fault).with_context(|| format!("unknown fault {fault:?}"))?;
        return super::victim::run(&sh, be, fault, session);
    }
    let mut lanes = Vec::new();
    for (i, kind) in LaneKind::ALL.into_iter().enumerate() {
        let stream = (u64::from(args.slot) << 40) | (u64::from(args.incarnation) << 8) | i as u64;
        let rng = Rng::new(args.seed, stream);
        let lane_sh = sh.clone();
        let lane_on = on.clone();
        let handle = std::thread::Builder::new()
            .name(format!("lane-{}", kind.label()))
            .spawn(move || run_lane(&lane_sh, &lane_on, kind, rng))
            .context("start a lane thread")?;
        lanes.push((kind, handle));
    }

    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("commands".into())
        .spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
        .context("start the command reader")?;
    say(&format!("READY {}", std::process::id()))?;
    let mut last_stat = Instant::now();
    loop {
        match rx.recv_timeout(STAT_EVERY) {
            Ok(line) => {
                let mut words = line.split_whitespace();
                match (words.next(), words.next().and_then(FaultKind::parse)) {
                    (Some("fault"), Some(kind)) => lock(&sh.faults).push_back(kind),
                    (Some("stop"), _) => break,
                    _ => {}
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The demo is gone or done with us.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if last_stat.elapsed() >= STAT_EVERY {
            last_stat = Instant::now();
            if say(&sh.stat_line()).is_err() {
                break;
            }
        }
    }

    sh.stop.store(true, Ordering::SeqCst);
    let mut failed = false;
    for (kind, handle) in lanes {
        let message = match handle.join() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("lane {} failed: {e:#}", kind.label()),
            Err(_) => format!("lane {} panicked", kind.label()),
        };
        failed = true;
        eprintln!("error: {message}");
        // Best effort: the exit status reports the failure anyway.
        let _ = sh.fact(&Fact::Error { message });
    }
    say(&sh.stat_line())?;
    say("DONE")?;
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
