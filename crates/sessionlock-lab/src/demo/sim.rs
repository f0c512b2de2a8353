//! The demo's orchestration: start the gateway processes, inject faults on
//! a schedule (SIGKILL and restart processes itself, ask workers for the
//! others), show progress, stop everything, then read back what happened
//! into a [`Recording`].

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::process::Signal;
use serde_json::Value;
use sessionlock::backend::Listed;
use sessionlock::monotonic_ns;
use sessionlock::transcript::Reader;
use sessionlock::{LockBackend, LockOptions, SessionLock, StoreBackend, TranscriptStore};
use sessionlock_postgres::PgBackend;

use super::backends::{pg_session, quote_ident, sql_client};
use super::events::{self, FaultEvent};
use super::record::{
    incarnation_name, Ack, Fact, FaultKind, FaultRecord, Incarnation, Layout, LockLeft, Mutation,
    Recording, RunConfig, SessionContents, Wait, WaitKind,
};
use super::rng::Rng;
use crate::backend_choice::{BackendChoice, ENV_BACKEND};
use crate::worker::{self, Worker};

/// How long a starting worker may take to report `READY`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the workers may take to finish their turns once told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the loop looks at the workers and the schedule.
const TICK: Duration = Duration::from_millis(20);

/// What the demo runs on.
pub(crate) enum Backend {
    File,
    Pg {
        be: PgBackend,
        url: String,
        /// The prefix of the run's session keys.
        keys: String,
        rt: tokio::runtime::Runtime,
    },
}

impl Backend {
    /// Connects to the server of `choice`, if any; the run's keys carry
    /// `seed` and this process's id, so no two runs share a session.
    pub(crate) fn open(choice: &BackendChoice, seed: u64) -> Result<Backend> {
        Ok(match choice {
            BackendChoice::File => Backend::File,
            BackendChoice::Postgres(url) => Backend::Pg {
                be: PgBackend::connect(url).with_context(|| format!("connect to {choice}"))?,
                url: url.clone(),
                keys: format!("demo-{seed}-{}", std::process::id()),
                rt: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("start a runtime")?,
            },
        })
    }

    /// Where the sessions are, for the banner.
    pub(crate) fn describe(&self) -> String {
        match self {
            Backend::File => String::new(),
            Backend::Pg { be, keys, .. } => {
                format!(
                    ", sessions {keys}/s* on {} (schema {})",
                    be.target(),
                    be.schema()
                )
            }
        }
    }

    /// How the workers learn it: `SESSIONLOCK_BACKEND`, and the keys.
    fn configure(&self, cmd: &mut std::process::Command) {
        match self {
            Backend::File => {
                cmd.env(ENV_BACKEND, "file");
            }
            Backend::Pg { url, keys, .. } => {
                cmd.env(ENV_BACKEND, url).args(["--keys", keys]);
            }
        }
    }
}

/// One fault, due `at` after the start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scheduled {
    pub(crate) at: Duration,
    pub(crate) kind: FaultKind,
    pub(crate) slot: u32,
}

/// The fault schedule: about one fault a second, each enabled kind at least
/// once, in shuffled rounds, evenly spread over the run without its first
/// and last second (so the run warms up and settles), at random processes.
pub(crate) fn schedule(cfg: &RunConfig, rng: &mut Rng) -> Vec<Scheduled> {
    if cfg.faults.is_empty() {
        return Vec::new();
    }
    let d = cfg.duration_s as f64;
    let start = (0.15 * d).min(1.0);
    let end = d - (0.2 * d).min(1.0);
    let n = cfg.faults.len().max((end - start).round() as usize);
    let mut kinds = Vec::with_capacity(n);
    while kinds.len() < n {
        let mut round = cfg.faults.clone();
        rng.shuffle(&mut round);
        kinds.extend(round);
    }
    kinds.truncate(n);
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Scheduled {
            at: Duration::from_secs_f64(start + (end - start) * (i as f64 + 0.5) / n as f64),
            kind,
            slot: u32::try_from(rng.below(u64::from(cfg.processes))).unwrap_or(0),
        })
        .collect()
}

/// Counters a worker reports.
#[derive(Debug, Clone, Copy, Default)]
struct Stat {
    turns: u64,
    in_flight: u64,
    waits: u64,
}

/// One process slot.
struct Proc {
    slot: u32,
    inc: u32,
    worker: Option<Worker>,
    stat: Stat,
    /// Faults sent to the worker that have not played out yet.
    pending: Vec<FaultKind>,
    done: bool,
}

/// What the progress view shows.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    turns: u64,
    in_flight: u64,
    waits: u64,
    faults: u64,
}

struct Sim<'a> {
    cfg: &'a RunConfig,
    on: &'a Backend,
    /// Victim processes started so far (see `victim`).
    victims: u32,
    rng: Rng,
    layout: Layout,
    procs: Vec<Proc>,
    incarnations: Vec<Incarnation>,
    /// Counters of killed incarnations.
    retired: Stat,
    injected: u64,
    kills: Vec<FaultRecord>,
    /// The waits of the demo's own contenders.
    waits: Vec<Wait>,
    errors: Vec<String>,
    /// The run's event log (`--timeline`), named to every worker.
    events: Option<&'a Path>,
}

impl<'a> Sim<'a> {
    fn start(
        cfg: &'a RunConfig,
        layout: Layout,
        on: &'a Backend,
        events: Option<&'a Path>,
    ) -> Result<Sim<'a>> {
        let mut sim = Sim {
            cfg,
            on,
            victims: 0,
            rng: Rng::new(cfg.seed, u64::MAX - 1),
            layout,
            procs: Vec::new(),
            incarnations: Vec::new(),
            retired: Stat::default(),
            injected: 0,
            kills: Vec::new(),
            waits: Vec::new(),
            errors: Vec::new(),
            events,
        };
        for slot in 0..cfg.processes {
            let worker = sim.spawn(slot, 0)?;
            sim.procs.push(Proc {
                slot,
                inc: 0,
                worker: Some(worker),
                stat: Stat::default(),
                pending: Vec::new(),
                done: false,
            });
        }
        Ok(sim)
    }

    fn spawn(&mut self, slot: u32, inc: u32) -> Result<Worker> {
        let worker = self.start_worker(slot, inc, &[])?;
        worker.expect("READY", START_TIMEOUT)?;
        Ok(worker)
    }

    /// Starts `sessionlock worker gateway` for incarnation `inc` of `slot`,
    /// with `extra` arguments.
    fn start_worker(&mut self, slot: u32, inc: u32, extra: &[String]) -> Result<Worker> {
        let args: Vec<String> = vec![
            "gateway".into(),
            "--dir".into(),
            self.layout.root().display().to_string(),
            "--slot".into(),
            slot.to_string(),
            "--incarnation".into(),
            inc.to_string(),
            "--sessions".into(),
            self.cfg.sessions.to_string(),
            "--seed".into(),
            self.cfg.seed.to_string(),
            "--wedge-lease-ms".into(),
            self.cfg.wedge_lease_ms.to_string(),
            "--lock-timeout-ms".into(),
            self.cfg.lock_timeout_ms.to_string(),
        ];
        let exe = std::env::current_exe().context("locate the sessionlock binary")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("worker").args(&args).args(extra);
        self.on.configure(&mut cmd);
        if let Some(log) = self.events {
            cmd.env(events::ENV_EVENT_LOG, log);
        }
        let worker = worker::start(format!("gateway {}", incarnation_name(slot, inc)), cmd)?;
        self.incarnations.push(Incarnation {
            slot,
            inc,
            pid: worker.pid(),
            killed_at_ns: None,
        });
        Ok(worker)
    }

    fn handle(&mut self, i: usize, fields: &[String]) {
        let p = &mut self.procs[i];
        let num = |k: usize| fields.get(k).and_then(|f| f.parse().ok()).unwrap_or(0);
        match fields.first().map(String::as_str) {
            Some("STAT") => {
                p.stat = Stat {
                    turns: num(1),
                    in_flight: num(2),
                    waits: num(3),
                }
            }
            Some("FAULT") => self.injected += 1,
            Some("FAULT-DONE") => {
                let kind = fields.get(1).and_then(|n| FaultKind::parse(n));
                if let Some(at) = p.pending.iter().position(|k| Some(*k) == kind) {
                    p.pending.remove(at);
                }
            }
            Some("DONE") => p.done = true,
            _ => {}
        }
    }

    /// Handles every line a worker has written so far.
    fn drain(&mut self, i: usize) {
        loop {
            let line = match &self.procs[i].worker {
                Some(w) => w.expect("", Duration::ZERO),
                None => return,
            };
            match line {
                Ok(fields) => self.handle(i, &fields),
                Err(_) => return,
            }
        }
    }

    fn totals(&self) -> Totals {
        let mut t = Totals {
            turns: self.retired.turns,
            waits: self.retired.waits,
            faults: self.injected,
            ..Totals::default()
        };
        for p in &self.procs {
            t.turns += p.stat.turns;
            t.in_flight += p.stat.in_flight;
            t.waits += p.stat.waits;
        }
        t
    }

    fn inject(&mut self, f: Scheduled) -> Result<()> {
        let i = f.slot as usize;
        if i >= self.procs.len() {
            return Ok(());
        }
        match f.kind {
            FaultKind::Sigkill => return self.kill_and_restart(i),
            FaultKind::ConnCut | FaultKind::StopPastLease => {
                if let Err(e) = self.victim(f.kind) {
                    self.errors.push(format!("{}: {e:#}", f.kind));
                }
                return Ok(());
            }
            _ => {}
        }
        let p = &mut self.procs[i];
        if let Some(w) = p.worker.as_mut() {
            match w.say(&format!("fault {}", f.kind)) {
                Ok(()) => p.pending.push(f.kind),
                Err(e) => self.errors.push(format!("{}: {e:#}", w.name())),
            }
        }
        Ok(())
    }

    /// Plays out a fault on a holder of its own (PostgreSQL): starts a
    /// victim process on a random session, and once it holds, cuts its
    /// liveness connection or stops it past its lease, then lets it go on.
    fn victim(&mut self, kind: FaultKind) -> Result<()> {
        let slot = self.cfg.processes + self.victims;
        self.victims += 1;
        self.injected += 1;
        let session = self.rng.index(self.cfg.sessions);
        let extra = [
            "--victim".to_owned(),
            kind.name().to_owned(),
            "--victim-session".to_owned(),
            session.to_string(),
        ];
        let mut w = self.start_worker(slot, 0, &extra)?;
        let wait = START_TIMEOUT + Duration::from_millis(self.cfg.lock_timeout_ms);
        let outcome = (|| -> Result<()> {
            w.expect("HELD", wait)?;
            let key = pg_key(self.on, session);
            let found = match kind {
                FaultKind::ConnCut => {
                    let n = self.cut(&key)?;
                    anyhow::ensure!(n == 1, "pg_terminate_backend ended {n} connections, not 1");
                    self.contend(session, &key)
                }
                _ => {
                    let until = Instant::now() + Duration::from_millis(self.cfg.wedge_lease_ms * 3);
                    w.signal(Signal::STOP)?;
                    let found = self.contend(session, &key);
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    w.signal(Signal::CONT)?;
                    found
                }
            };
            w.say(&format!("go {found}"))?;
            w.expect("DONE", wait)?;
            Ok(())
        })();
        let name = w.name().to_owned();
        match w.finish(Duration::from_secs(10)) {
            Ok(st) if st.success() => {}
            Ok(st) => self.errors.push(format!("{name} exited with {st}")),
            Err(e) => self.errors.push(format!("{e:#}")),
        }
        outcome
    }

    /// Takes and releases the lock of session `k` (`key`) from this
    /// process, as the next holder after a victim; says how it went.
    fn contend(&mut self, k: usize, key: &str) -> String {
        let Backend::Pg { be, .. } = self.on else {
            return "no contender on files".to_owned();
        };
        let locks = SessionLock::with_backend(be.clone(), LockOptions::default());
        let opts = LockOptions::default()
            .timeout(Some(Duration::from_millis(self.cfg.lock_timeout_ms)))
            .max_hold(Duration::from_secs(60))
            .lane("contender");
        let since = Instant::now();
        match locks.acquire_with(key, &opts) {
            Ok(g) => {
                let ms = since.elapsed().as_secs_f64() * 1e3;
                let released = g.release();
                self.waits.push(Wait {
                    session: k,
                    lane: "contender".to_owned(),
                    what: WaitKind::Contender,
                    ms,
                });
                match released {
                    Ok(()) => {
                        format!("a contender in another process held the lock after {ms:.1} ms")
                    }
                    Err(e) => format!("the contender could not release: {e}"),
                }
            }
            Err(e) => format!("the contender failed: {e}"),
        }
    }

    /// Ends the liveness connection of the holder of `key` with
    /// `pg_terminate_backend`: the backend that holds the advisory lock
    /// the lease names. Returns how many connections it ended.
    fn cut(&self, key: &str) -> Result<u64> {
        let Backend::Pg { be, url, rt, .. } = self.on else {
            anyhow::bail!("conn-cut needs PostgreSQL");
        };
        let sql = format!(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN {}.leases s ON s.key = $1 \
             WHERE s.held AND l.locktype = 'advisory' AND l.mode = 'ExclusiveLock' AND l.granted \
             AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = s.live_lock",
            quote_ident(be.schema())
        );
        rt.block_on(async {
            let client = sql_client(url).await?;
            let rows = client
                .query(&sql, &[&key])
                .await
                .context("pg_terminate_backend")?;
            Ok(rows.len() as u64)
        })
    }

    /// SIGKILLs a gateway process and starts its next incarnation, which
    /// gets the faults the dead one had not played out.
    fn kill_and_restart(&mut self, i: usize) -> Result<()> {
        self.drain(i);
        let (slot, inc) = (self.procs[i].slot, self.procs[i].inc);
        let Some(old) = self.procs[i].worker.take() else {
            return Ok(());
        };
        let pid = old.pid();
        let at_ns = monotonic_ns();
        let at_us = events::wall_us();
        let started = Instant::now();
        let killed = old.signal(Signal::KILL);
        if let Err(e) = old.finish(Duration::from_secs(10)) {
            self.errors
                .push(format!("reap {}: {e:#}", incarnation_name(slot, inc)));
        }
        let dead_ns = monotonic_ns();
        if let Some(rec) = self
            .incarnations
            .iter_mut()
            .find(|r| r.slot == slot && r.inc == inc)
        {
            rec.killed_at_ns = Some(dead_ns);
        }
        let p = &mut self.procs[i];
        self.retired.turns += p.stat.turns;
        self.retired.waits += p.stat.waits;
        p.stat = Stat::default();
        let pending = std::mem::take(&mut p.pending);
        let mut worker = self.spawn(slot, inc + 1)?;
        for kind in &pending {
            if let Err(e) = worker.say(&format!("fault {kind}")) {
                self.errors.push(format!("{}: {e:#}", worker.name()));
            }
        }
        let p = &mut self.procs[i];
        p.inc = inc + 1;
        p.pending = pending;
        p.worker = Some(worker);
        self.injected += 1;
        let record = FaultRecord {
            kind: FaultKind::Sigkill,
            slot,
            inc,
            at_ns,
            ok: killed.is_ok(),
            detail: match killed {
                Ok(()) => format!(
                    "{} (pid {pid}) SIGKILLed; {} ready after {:.0} ms",
                    incarnation_name(slot, inc),
                    incarnation_name(slot, inc + 1),
                    started.elapsed().as_secs_f64() * 1e3
                ),
                Err(e) => format!("could not SIGKILL pid {pid}: {e:#}"),
            },
        };
        if let Some(log) = self.events {
            events::log_fault(
                log,
                &FaultEvent {
                    ts_us: at_us,
                    fault: FaultKind::Sigkill,
                    target_pid: Some(pid),
                    session: None,
                    lane: None,
                    detail: &record.detail,
                    ok: record.ok,
                },
            )?;
        }
        self.kills.push(record);
        Ok(())
    }

    /// Tells every worker to stop and waits until each has finished its
    /// turns and exited.
    fn stop(&mut self) {
        for p in &mut self.procs {
            if let Some(w) = p.worker.as_mut() {
                if let Err(e) = w.say("stop") {
                    self.errors.push(format!("{}: {e:#}", w.name()));
                }
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for i in 0..self.procs.len() {
            while !self.procs[i].done {
                let left = deadline.saturating_duration_since(Instant::now());
                let line = match &self.procs[i].worker {
                    Some(w) => w.expect("", left.max(Duration::from_millis(1))),
                    None => break,
                };
                match line {
                    Ok(fields) => self.handle(i, &fields),
                    Err(e) => {
                        self.errors.push(format!("{e:#}"));
                        break;
                    }
                }
            }
            if let Some(w) = self.procs[i].worker.take() {
                let name = w.name().to_owned();
                match w.finish(Duration::from_secs(10)) {
                    Ok(st) if st.success() => {}
                    Ok(st) => self.errors.push(format!("{name} exited with {st}")),
                    Err(e) => self.errors.push(format!("{e:#}")),
                }
            }
        }
    }
}

/// The live progress view (stderr): redrawn in place on a terminal, a plain
/// line every two seconds otherwise.
struct Progress {
    live: bool,
    last: Option<Instant>,
    width: usize,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            live: std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
            last: None,
            width: 0,
        }
    }

    fn update(&mut self, elapsed: Duration, total: Duration, t: Totals) {
        let every = if self.live {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(2)
        };
        if self.last.is_some_and(|l| l.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let line = format!(
            "demo: {:>5.1}/{} s  turns done {}  in flight {}  waits {}  faults injected {}",
            elapsed.as_secs_f64(),
            total.as_secs(),
            t.turns,
            t.in_flight,
            t.waits,
            t.faults
        );
        if self.live {
            self.width = self.width.max(line.len());
            eprint!("\r{line:<w$}", w = self.width);
        } else {
            eprintln!("{line}");
        }
    }

    fn clear(&mut self) {
        if self.live && self.width > 0 {
            eprint!("\r{:w$}\r", "", w = self.width);
        }
    }
}

/// Creates the run's directories, the session directory's alias included.
fn prepare(layout: &Layout) -> Result<()> {
    for d in [layout.sessions_dir(), layout.facts_dir(), layout.acks_dir()] {
        std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
    }
    std::os::unix::fs::symlink("sessions", layout.alias_dir())
        .with_context(|| format!("create the symlink {}", layout.alias_dir().display()))
}

/// Session `k`'s key on PostgreSQL (empty on files).
fn pg_key(on: &Backend, k: usize) -> String {
    match on {
        Backend::File => String::new(),
        Backend::Pg { keys, .. } => pg_session(keys, k),
    }
}

/// Runs the simulation in `root` (an empty directory) and records it; with
/// `events`, the workers (and the demo's fault injection) write to that
/// event log.
pub(crate) fn simulate(
    cfg: &RunConfig,
    root: &Path,
    on: &Backend,
    events: Option<&Path>,
) -> Result<Recording> {
    let started = Instant::now();
    let layout = Layout::new(root);
    prepare(&layout)?;
    let faults = schedule(cfg, &mut Rng::new(cfg.seed, u64::MAX));
    if let Some(log) = events {
        // The demo's own acquisitions (PostgreSQL's contenders) too.
        sessionlock::observe::EventLog::install(log)?;
    }
    let mut sim = Sim::start(cfg, layout.clone(), on, events)?;
    let mut view = Progress::new();
    let total = Duration::from_secs(cfg.duration_s);
    let t0 = Instant::now();
    let mut next = 0;
    loop {
        for i in 0..sim.procs.len() {
            sim.drain(i);
        }
        let elapsed = t0.elapsed();
        if elapsed >= total {
            // A victim's episode can hold the loop up: faults due before
            // the end still go out.
            for f in faults.get(next..).unwrap_or_default() {
                sim.inject(*f)?;
            }
            break;
        }
        while let Some(f) = faults.get(next).filter(|f| f.at <= elapsed) {
            sim.inject(*f)?;
            next += 1;
        }
        view.update(elapsed, total, sim.totals());
        std::thread::sleep(TICK);
    }
    view.clear();
    eprintln!("demo: stopping the gateways");
    sim.stop();
    if events.is_some() {
        sessionlock::observe::EventLog::flush();
    }
    let mut rec = collect(cfg, &layout, &sim)?;
    if let Backend::Pg { .. } = on {
        collect_pg(cfg, on, &mut rec)?;
    }
    rec.elapsed_s = started.elapsed().as_secs_f64();
    Ok(rec)
}

/// The lines of a log; a missing file has none.
fn lines_of(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Reads the workers' logs, the transcripts and the locks left behind.
fn collect(cfg: &RunConfig, layout: &Layout, sim: &Sim<'_>) -> Result<Recording> {
    let mut rec = Recording {
        config: cfg.clone(),
        elapsed_s: 0.0,
        incarnations: sim.incarnations.clone(),
        acks: Vec::new(),
        transcripts: Vec::new(),
        locks: Vec::new(),
        turns: Vec::new(),
        mutations: Vec::new(),
        waits: sim.waits.clone(),
        faults: sim.kills.clone(),
        late_writes: Vec::new(),
        errors: sim.errors.clone(),
    };
    let mut ends: HashMap<String, (u64, bool)> = HashMap::new();
    let mut begins = Vec::new();
    for inc in &sim.incarnations {
        let name = incarnation_name(inc.slot, inc.inc);
        // One line per `write`: only a SIGKILLed worker can leave a partial
        // last line, and that line was never acknowledged.
        let partial_ok = inc.killed_at_ns.is_some();
        for line in lines_of(&layout.acks(inc.slot, inc.inc))?.lines() {
            match serde_json::from_str::<Ack>(line) {
                Ok(a) => rec.acks.push(a),
                Err(e) if !partial_ok => rec.errors.push(format!("{name}: bad ack line: {e}")),
                Err(_) => {}
            }
        }
        for line in lines_of(&layout.facts(inc.slot, inc.inc))?.lines() {
            let fact = match serde_json::from_str::<Fact>(line) {
                Ok(f) => f,
                Err(e) if !partial_ok => {
                    rec.errors.push(format!("{name}: bad fact line: {e}"));
                    continue;
                }
                Err(_) => continue,
            };
            match fact {
                Fact::Turn(t) => rec.turns.push(t),
                Fact::Wait(w) => rec.waits.push(w),
                Fact::MutationBegin {
                    id,
                    session,
                    kind,
                    owner_turn,
                    at_ns,
                } => begins.push((inc.killed_at_ns, id, session, kind, owner_turn, at_ns)),
                Fact::MutationEnd { id, at_ns, landed } => {
                    ends.insert(id, (at_ns, landed));
                }
                Fact::Fault(f) => rec.faults.push(f),
                Fact::LateWrite(l) => rec.late_writes.push(l),
                Fact::Error { message } => rec.errors.push(format!("{name}: {message}")),
            }
        }
    }
    for (killed_at, id, session, kind, owner_turn, start_ns) in begins {
        let (end_ns, landed) = match (ends.get(&id), killed_at) {
            (Some(&(end, landed)), _) => (end, Some(landed)),
            // Its writer died holding the lock: the change may have landed
            // at any time before.
            (None, Some(dead)) => (dead, None),
            (None, None) => {
                rec.errors.push(format!(
                    "mutation {id} has no end, yet its process was not killed"
                ));
                (u64::MAX, None)
            }
        };
        rec.mutations.push(Mutation {
            id,
            session,
            kind,
            owner_turn,
            start_ns,
            end_ns,
            landed,
        });
    }
    rec.faults.sort_by_key(|f| f.at_ns);
    rec.turns.sort_by_key(|t| t.start_ns);

    if let Backend::Pg { .. } = sim.on {
        return Ok(rec);
    }
    for k in 0..cfg.sessions {
        let path = layout.session(k, false);
        let mut reader = Reader::open(&path)?;
        let mut contents = SessionContents {
            session: k,
            ids: Vec::new(),
            corrupt: Vec::new(),
        };
        for item in reader.by_ref() {
            match item {
                Ok(e) => match e.value.get("id").and_then(Value::as_str) {
                    Some(id) => contents.ids.push(id.to_owned()),
                    None => contents
                        .corrupt
                        .push(format!("s{k}: the entry at byte {} has no id", e.offset)),
                },
                Err(e @ sessionlock::Error::InvalidEntry { .. }) => {
                    contents.corrupt.push(format!("s{k}: {e}"))
                }
                Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
            }
        }
        if let Some(t) = reader.torn_tail() {
            contents.corrupt.push(format!(
                "s{k}: torn final line of {} bytes at byte {}",
                t.len, t.offset
            ));
        }
        rec.transcripts.push(contents);
    }

    let settings = sessionlock::Config::default().resolve();
    for st in sessionlock::status::scan_dir(&layout.sessions_dir(), &settings)? {
        match st {
            Ok(s) => rec.locks.push(LockLeft {
                lock: s.key.lock_path.display().to_string(),
                pid: s.holder.pid,
                alive: s.liveness.presumed_alive(),
                lane: s.holder.lane.clone(),
                reasons: s.holder.reasons.to_string(),
            }),
            Err(e) => rec.errors.push(format!("status: {e}")),
        }
    }
    Ok(rec)
}

/// Reads the transcripts and the leases left behind on PostgreSQL, through
/// the store and the backend's listing.
fn collect_pg(cfg: &RunConfig, on: &Backend, rec: &mut Recording) -> Result<()> {
    let Backend::Pg { be, keys, rt, .. } = on else {
        return Ok(());
    };
    for k in 0..cfg.sessions {
        let name = pg_session(keys, k);
        let key = be.key_of(&name)?;
        let read = rt
            .block_on(async { be.open_store(&key).await?.read().await })
            .with_context(|| format!("read the transcript {name}"))?;
        let mut contents = SessionContents {
            session: k,
            ids: Vec::new(),
            corrupt: Vec::new(),
        };
        for (i, e) in read.entries.iter().enumerate() {
            match e.get("id").and_then(Value::as_str) {
                Some(id) => contents.ids.push(id.to_owned()),
                None => contents.corrupt.push(format!("s{k}: entry {i} has no id")),
            }
        }
        if let Some(t) = read.torn {
            contents
                .corrupt
                .push(format!("s{k}: torn final entry of {} bytes", t.len));
        }
        rec.transcripts.push(contents);
    }
    let prefix = format!("{keys}/");
    for l in rt.block_on(be.list(&prefix))? {
        match l {
            Listed::Lock { key, inspection } => {
                let payload = inspection.payload.as_ref().ok();
                rec.locks.push(LockLeft {
                    lock: key.as_str().to_owned(),
                    pid: payload.and_then(|p| p.pid),
                    alive: inspection.liveness.presumed_alive(),
                    lane: payload.and_then(|p| p.lane.clone()),
                    reasons: format!("holder {:?}", inspection.liveness),
                })
            }
            Listed::Unreadable { locator, error } => rec
                .errors
                .push(format!("status: {}: {error}", locator.to_string_lossy())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(duration_s: u64, faults: Vec<FaultKind>) -> RunConfig {
        RunConfig {
            sessions: 8,
            processes: 3,
            duration_s,
            faults,
            seed: 42,
            wedge_lease_ms: 500,
            lock_timeout_ms: 10_000,
            slack_ms: 1500,
        }
    }

    #[test]
    fn the_schedule_has_every_fault_inside_the_run() {
        for d in [1, 5, 6, 20, 30] {
            let c = cfg(d, FaultKind::ALL.to_vec());
            let s = schedule(&c, &mut Rng::new(c.seed, 0));
            for k in FaultKind::ALL {
                assert!(s.iter().any(|f| f.kind == k), "{k} missing for {d} s");
            }
            assert!(s.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(s
                .iter()
                .all(|f| f.at < Duration::from_secs(d) && f.slot < 3));
        }
        assert!(schedule(&cfg(20, Vec::new()), &mut Rng::new(1, 0)).is_empty());
        let long = schedule(&cfg(20, FaultKind::ALL.to_vec()), &mut Rng::new(1, 0));
        assert_eq!(long.len(), 18);
    }
}
