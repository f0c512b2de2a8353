//! The turns the demo's lanes run, each through the attempt controller:
//! prompt turns (with the in-turn faults: fence error, user abort, foreign
//! write), compactions, a wedged lane, two lanes of one session through
//! different paths. Each turn is logged as a [`TurnRecord`] with the
//! intervals in which its lock was released and its prompt windows, and
//! every wait, acknowledged entry and non-benign change as it happens.

use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;
use sessionlock::attempt::{Attempt, CleanupLock, State};
use sessionlock::fs::{Fs, RealFs};
use sessionlock::runs::AbortKind;
use sessionlock::transcript::Durability;
use sessionlock::{monotonic_ns, Error};

use super::backends::DemoBackend;
use super::entries::{
    aborted_note, compaction_marker, foreign_message, late_entry, reply, tool_result, Reply,
};
use super::lanes::{LaneKind, Shared};
use super::record::{
    Fact, FaultKind, LateWrite, MutationKind, Outcome, Takeover, TurnRecord, WaitKind,
};
use super::rng::Rng;

/// Lease of every lane except a wedged one: far longer than any turn, so
/// only the wedge fault ever runs into a lease.
const NORMAL_LEASE: Duration = Duration::from_secs(60);
/// A wedged lane spins this many times its lease.
const WEDGE_FACTOR: u32 = 3;

pub(super) fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Spins on the CPU, blocking the calling thread (and its runtime).
fn spin(d: Duration) {
    let until = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < until {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// A file system whose `stat`, `fstat` and `pread` fail with EIO while
/// armed: the fence-error fault (docs/design.md §10.1, incident 1).
#[derive(Default)]
struct FaultFs {
    armed: AtomicBool,
}

impl FaultFs {
    fn arm(&self, on: bool) {
        self.armed.store(on, Ordering::SeqCst);
    }

    fn fail(&self) -> io::Result<()> {
        if self.armed.load(Ordering::SeqCst) {
            Err(io::Error::from_raw_os_error(
                rustix::io::Errno::IO.raw_os_error(),
            ))
        } else {
            Ok(())
        }
    }
}

impl Fs for FaultFs {
    fn stat(&self, path: &std::path::Path) -> io::Result<std::fs::Metadata> {
        self.fail()?;
        RealFs.stat(path)
    }
    fn metadata(&self, file: &File) -> io::Result<std::fs::Metadata> {
        self.fail()?;
        RealFs.metadata(file)
    }
    fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.fail()?;
        RealFs.read_at(file, buf, offset)
    }
}

/// How an injected fault played out.
pub(super) struct FaultNote {
    pub(super) ok: bool,
    pub(super) detail: String,
}

impl FaultNote {
    pub(super) fn new(ok: bool, detail: impl Into<String>) -> FaultNote {
        FaultNote {
            ok,
            detail: detail.into(),
        }
    }
}

/// A fault that plays out inside a prompt turn.
#[derive(Debug, Clone, Copy)]
pub(super) enum TurnFault {
    /// Arm the EIO file system around `release_for_prompt`.
    FenceError,
    /// Abort the attempt this far into the model call.
    UserAbort { at_ms: u64 },
    /// Have another lane append a user message this far into the model call.
    ForeignWrite { at_ms: u64 },
}

/// One prompt turn, decided up front.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) lane: String,
    pub(super) session: usize,
    pub(super) alias: bool,
    /// Length of the simulated model call.
    pub(super) model_ms: u64,
    /// When, into the model call, tool results are written.
    pub(super) tools: Vec<u64>,
    pub(super) reply: Reply,
    pub(super) fault: Option<TurnFault>,
}

/// A turn being recorded.
struct Turn<'a> {
    sh: &'a Shared,
    rec: TurnRecord,
    released_since: Option<u64>,
    window_since: Option<u64>,
    begin_ms: f64,
    turn_ms: f64,
}

impl<'a> Turn<'a> {
    fn new(sh: &'a Shared, lane: &str, session: usize, alias: bool) -> Turn<'a> {
        sh.in_flight.fetch_add(1, Ordering::SeqCst);
        Turn {
            sh,
            rec: TurnRecord {
                id: sh.turn_id(lane),
                slot: sh.slot,
                inc: sh.inc,
                lane: lane.to_owned(),
                session,
                alias,
                start_ns: monotonic_ns(),
                end_ns: 0,
                released: Vec::new(),
                windows: Vec::new(),
                outcome: Outcome::Completed,
                takeover: None,
                expect_takeover: None,
                targeted: false,
                error: None,
            },
            released_since: None,
            window_since: None,
            begin_ms: 0.0,
            turn_ms: 0.0,
        }
    }

    fn lane(&self) -> &str {
        &self.rec.lane
    }

    fn session(&self) -> usize {
        self.rec.session
    }

    /// The attempt is about to release its lock (fence armed).
    fn releasing(&mut self) {
        self.released_since = Some(monotonic_ns());
    }

    /// The attempt holds its lock again, fence checked (or gave up on it).
    fn held(&mut self) {
        if let Some(s) = self.released_since.take() {
            self.rec.released.push([s, monotonic_ns()]);
        }
    }

    fn window_open(&mut self) {
        self.window_since = Some(monotonic_ns());
    }

    /// Ends the recorded prompt window, if one is open; returns whether one
    /// was. Call it before anything that can give the prompt turn up, so
    /// that recorded windows lie inside the real ones.
    fn window_close(&mut self) -> bool {
        match self.window_since.take() {
            Some(s) => {
                self.rec.windows.push([s, monotonic_ns()]);
                true
            }
            None => false,
        }
    }

    fn taken_over(&mut self, phase: &str, detail: String) {
        self.window_close();
        self.held();
        if self.rec.outcome == Outcome::Completed {
            self.rec.outcome = Outcome::TakenOver;
        }
        if self.rec.takeover.is_none() {
            self.rec.takeover = Some(Takeover {
                phase: phase.to_owned(),
                detail,
            });
        }
    }

    /// Records an error of the attempt: a takeover, or a failure.
    fn error(&mut self, e: &Error) {
        match e {
            Error::Takeover { phase, reason, .. } => {
                self.taken_over(&phase.to_string(), reason.to_string())
            }
            e => {
                self.window_close();
                self.rec.outcome = Outcome::Failed;
                self.rec.error.get_or_insert_with(|| e.to_string());
            }
        }
    }

    fn failed(&self) -> bool {
        self.rec.outcome == Outcome::Failed
    }

    /// Logs the turn.
    fn finish(mut self) -> Result<TurnRecord> {
        self.window_close();
        self.held();
        self.rec.end_ns = monotonic_ns();
        self.sh.fact(&Fact::Turn(self.rec.clone()))?;
        self.sh.turns.fetch_add(1, Ordering::SeqCst);
        Ok(self.rec.clone())
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.sh.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a write through the attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrote {
    Landed,
    Skipped,
    Refused,
}

/// Appends one entry through the attempt (its held lock, or a short one
/// when released) and acknowledges it once the append returned `Ok`.
async fn write_entry<B: DemoBackend>(
    t: &mut Turn<'_>,
    a: &Attempt<B>,
    entry: Value,
    id: &str,
) -> Result<Wrote> {
    let released = a.state() == State::Released;
    let since = Instant::now();
    let r = a.append(&[entry], Durability::None).await;
    if released {
        t.sh.wait(t.session(), t.lane(), WaitKind::Write, since)?;
    }
    Ok(match r {
        Ok(_) => {
            t.sh.ack(id, t.session())?;
            Wrote::Landed
        }
        // Disposed meanwhile: the write did not happen, and says so.
        Err(sessionlock::Error::Cancelled { .. }) => Wrote::Skipped,
        Err(e) => {
            t.error(&e);
            Wrote::Refused
        }
    })
}

/// What the caller of a turn learns.
pub(super) struct TurnEnd {
    pub(super) rec: TurnRecord,
    pub(super) begin_ms: f64,
    pub(super) turn_ms: f64,
    pub(super) note: Option<FaultNote>,
}

/// Runs one prompt turn: begin, prepare, release for the model call (tool
/// results written meanwhile under short locks), reacquire, reply, cleanup.
pub(super) fn prompt_turn<'a, B: DemoBackend>(
    sh: &'a Shared,
    be: &'a B,
    plan: Plan,
) -> Pin<Box<dyn Future<Output = Result<TurnEnd>> + 'a>> {
    Box::pin(async move {
        let mut t = Turn::new(sh, &plan.lane, plan.session, plan.alias);
        let note = drive(&mut t, be, &plan).await?;
        let (begin_ms, turn_ms) = (t.begin_ms, t.turn_ms);
        let rec = t.finish()?;
        Ok(TurnEnd {
            rec,
            begin_ms,
            turn_ms,
            note,
        })
    })
}

async fn drive<B: DemoBackend>(t: &mut Turn<'_>, be: &B, plan: &Plan) -> Result<Option<FaultNote>> {
    let sh = t.sh;
    let fs = Arc::new(FaultFs::default());
    let locks = be.locks(Some(fs.clone()));
    let path = be.session(sh, plan.session, plan.alias);
    let opts = sh.attempt_options(&plan.lane, &t.rec.id, NORMAL_LEASE);
    let since = Instant::now();
    let a = match Attempt::begin(&locks, &path, opts).await {
        Ok(a) => a,
        Err(e) => {
            t.error(&e);
            return Ok(plan
                .fault
                .map(|_| FaultNote::new(false, format!("the turn could not begin: {e}"))));
        }
    };
    t.begin_ms = sh.wait(t.session(), t.lane(), WaitKind::Begin, since)?;
    // Prepare the context under the lock.
    sleep_ms(1).await;

    let mut note = None;
    let fence_fault = matches!(plan.fault, Some(TurnFault::FenceError));
    if fence_fault {
        t.rec.expect_takeover = Some(FaultKind::FenceError);
    }
    t.releasing();
    let since = Instant::now();
    fs.arm(fence_fault);
    let released = a.release_for_prompt().await;
    fs.arm(false);
    match released {
        Ok(()) => {
            t.turn_ms = sh.wait(t.session(), t.lane(), WaitKind::PromptTurn, since)?;
            t.window_open();
            if fence_fault {
                note = Some(FaultNote::new(
                    false,
                    "the fence snapshot succeeded although stat and read failed",
                ));
            }
        }
        Err(e) if fence_fault => note = Some(probe_after_fence_error(t, be, &a, &e).await?),
        Err(e) => t.rec.error = Some(format!("release_for_prompt: {e}")),
    }

    // The model call, with what happens during it.
    #[derive(Clone, Copy)]
    enum Event {
        Tool,
        Abort,
        Foreign,
    }
    let mut events: Vec<(u64, Event)> = plan.tools.iter().map(|&at| (at, Event::Tool)).collect();
    match plan.fault {
        Some(TurnFault::UserAbort { at_ms }) => events.push((at_ms, Event::Abort)),
        Some(TurnFault::ForeignWrite { at_ms }) => events.push((at_ms, Event::Foreign)),
        _ => {}
    }
    events.sort_by_key(|e| e.0);
    let mut elapsed = 0;
    let mut aborted = false;
    for (at, event) in events {
        sleep_ms(at.saturating_sub(elapsed)).await;
        elapsed = at;
        if a.state() == State::TakenOver || t.failed() {
            break;
        }
        match event {
            Event::Tool => {
                // A write that finds a takeover gives the prompt turn up
                // inside `with_write`: the recorded window ends before it.
                let in_window = t.window_close();
                let id = sh.entry_id(t.lane(), t.session());
                if write_entry(t, &a, tool_result(&id, &t.rec.id), &id).await? == Wrote::Refused {
                    break;
                }
                if in_window {
                    t.window_open();
                }
            }
            Event::Foreign => match intrude(sh, be, t.session(), &t.rec.id).await? {
                Ok(()) => t.rec.targeted = true,
                Err(why) => note = Some(FaultNote::new(false, why)),
            },
            Event::Abort => {
                // The abort gives the prompt turn up.
                t.window_close();
                a.abort(AbortKind::User);
                t.rec.outcome = Outcome::Aborted;
                aborted = true;
                break;
            }
        }
    }
    let live = !aborted && !t.failed() && a.state() == State::Released;
    if live {
        sleep_ms(plan.model_ms.saturating_sub(elapsed)).await;
    }
    t.window_close();
    if aborted {
        // The user's next message arrives before this attempt's cleanup
        // runs: it must find the lock and the prompt turn free.
        let state = a.state();
        note = Some(follow_up(sh, be, plan, state).await?);
    }

    if live {
        let since = Instant::now();
        let r = a.reacquire_after_prompt().await;
        sh.wait(t.session(), t.lane(), WaitKind::Reacquire, since)?;
        match r {
            Ok(_) => t.held(),
            Err(e) => t.error(&e),
        }
    }
    if a.state() == State::Held {
        let id = sh.entry_id(t.lane(), t.session());
        write_entry(t, &a, reply(plan.reply, &id, &t.rec.id), &id).await?;
    }

    let was_released = a.state() == State::Released;
    let since = Instant::now();
    let cleanup = a.acquire_for_cleanup().await;
    if was_released {
        sh.wait(t.session(), t.lane(), WaitKind::Cleanup, since)?;
    }
    match cleanup {
        Ok(CleanupLock::Held) => {
            t.held();
            if aborted {
                let id = sh.entry_id(t.lane(), t.session());
                write_entry(t, &a, aborted_note(&id, &t.rec.id), &id).await?;
            }
        }
        Ok(CleanupLock::NoOp) => {
            if was_released && a.is_taken_over() {
                t.taken_over("cleanup", "the fence check at cleanup failed".to_owned());
            }
        }
        Err(e) => t.error(&e),
    }
    if let Err(e) = a.dispose() {
        t.error(&e);
    }
    if matches!(plan.fault, Some(TurnFault::ForeignWrite { .. }))
        && note.is_none()
        && t.rec.targeted
    {
        note = Some(match &t.rec.takeover {
            Some(tk) => FaultNote::new(
                true,
                format!(
                    "a user message appended in the prompt window of {} was detected: takeover ({}: {})",
                    t.rec.id, tk.phase, tk.detail
                ),
            ),
            _ => FaultNote::new(
                false,
                format!(
                    "a user message appended in the prompt window of {} went unnoticed",
                    t.rec.id
                ),
            ),
        });
    }
    Ok(note)
}

/// After a fence error at prompt release: the lock must be free, so the
/// next acquisition does not wait for this attempt (incident 1).
async fn probe_after_fence_error<B: DemoBackend>(
    t: &Turn<'_>,
    be: &B,
    a: &Attempt<B>,
    err: &Error,
) -> Result<FaultNote> {
    let sh = t.sh;
    let eio = rustix::io::Errno::IO.raw_os_error();
    let is_eio = matches!(err, Error::Io { source, .. } if source.raw_os_error() == Some(eio));
    let state = a.state();
    let locks = be.locks(None);
    let path = be.session(sh, t.session(), false);
    let since = Instant::now();
    let got = locks
        .acquire_async_with(&path, &sh.lock_options("probe", &t.rec.id, NORMAL_LEASE))
        .await;
    let ms = sh.wait(t.session(), "probe", WaitKind::Probe, since)?;
    Ok(match got {
        Ok(g) => {
            drop(g);
            FaultNote::new(
                is_eio && state == State::Released,
                format!(
                    "release_for_prompt of {} failed ({err}{}); attempt {state:?}; the next acquire held the lock after {ms:.1} ms",
                    t.rec.id,
                    if is_eio { ": EIO" } else { ", not EIO" },
                ),
            )
        }
        Err(e) => FaultNote::new(
            false,
            format!("after the fence error the lock could not be taken: {e}"),
        ),
    })
}

/// The user's next turn on the session of an aborted attempt, run before
/// that attempt's cleanup (incident 3).
async fn follow_up<B: DemoBackend>(
    sh: &Shared,
    be: &B,
    plan: &Plan,
    state: State,
) -> Result<FaultNote> {
    let next = Plan {
        tools: Vec::new(),
        model_ms: 50,
        fault: None,
        alias: false,
        ..plan.clone()
    };
    let since = Instant::now();
    Ok(
        match tokio::time::timeout(sh.lock_timeout, prompt_turn(sh, be, next)).await {
            Ok(end) => {
                let end = end?;
                FaultNote::new(
                    state == State::Released && end.rec.outcome != Outcome::Failed,
                    format!(
                        "aborted mid-prompt (attempt {state:?}); the next turn on s{} held the lock after {:.1} ms and its prompt turn after {:.1} ms, finished {:?} in {:.0} ms",
                        plan.session,
                        end.begin_ms,
                        end.turn_ms,
                        end.rec.outcome,
                        ms_since(since)
                    ),
                )
            }
            Err(_) => FaultNote::new(
                false,
                format!(
                    "the turn after the abort was still waiting after {:?}: a stale prompt turn or lock",
                    sh.lock_timeout
                ),
            ),
        },
    )
}

/// Another lane appends a user message (not benign) under its own lock.
/// `Err` explains why it could not.
async fn intrude<B: DemoBackend>(
    sh: &Shared,
    be: &B,
    session: usize,
    target: &str,
) -> Result<Result<(), String>> {
    let lane = "intruder";
    let locks = be.locks(None);
    let path = be.session(sh, session, false);
    let since = Instant::now();
    let g = match locks
        .acquire_async_with(&path, &sh.lock_options(lane, target, NORMAL_LEASE))
        .await
    {
        Ok(g) => g,
        Err(e) => return Ok(Err(format!("the foreign writer could not lock: {e}"))),
    };
    sh.wait(session, lane, WaitKind::Intruder, since)?;
    let id = sh.entry_id(lane, session);
    let mutation = sh.mutation_id();
    sh.fact(&Fact::MutationBegin {
        id: mutation.clone(),
        session,
        kind: MutationKind::ForeignWrite,
        owner_turn: None,
        at_ns: monotonic_ns(),
    })?;
    let r = be
        .foreign_append(sh, session, &g, &foreign_message(&id, target))
        .await;
    sh.fact(&Fact::MutationEnd {
        id: mutation,
        at_ns: monotonic_ns(),
        landed: r.is_ok(),
    })?;
    if r.is_ok() {
        sh.ack(&id, session)?;
    }
    if let Err(e) = g.release() {
        return Ok(Err(format!("the foreign writer could not unlock: {e}")));
    }
    Ok(r)
}

/// A lane that wedges on the CPU while holding, past its lease (incident 2):
/// it must lose the lock at the lease end, and its late write must be
/// refused.
pub(super) async fn wedge_turn<B: DemoBackend>(
    sh: &Shared,
    be: &B,
    session: usize,
) -> Result<FaultNote> {
    let lane = "wedged";
    let mut t = Turn::new(sh, lane, session, false);
    t.rec.expect_takeover = Some(FaultKind::Wedge);
    let locks = be.locks(None);
    let opts = sh.attempt_options(lane, &t.rec.id, sh.wedge_lease);
    let since = Instant::now();
    let a = match Attempt::begin(&locks, be.session(sh, session, false), opts).await {
        Ok(a) => a,
        Err(e) => {
            t.error(&e);
            t.finish()?;
            return Ok(FaultNote::new(false, format!("could not begin: {e}")));
        }
    };
    sh.wait(session, lane, WaitKind::Begin, since)?;
    // Another lane wants the session meanwhile: it must hold it within the
    // lease plus a short delay, although this lane's thread never yields.
    let contender = {
        let path = be.session(sh, session, false);
        let opts = sh.lock_options("contender", &t.rec.id, NORMAL_LEASE);
        let be = be.clone();
        std::thread::Builder::new()
            .name("contender".into())
            .spawn(move || {
                let locks = be.locks(None);
                let since = Instant::now();
                locks.acquire_with(&path, &opts).map(|g| {
                    let ms = ms_since(since);
                    drop(g);
                    ms
                })
            })
            .context("start the contender thread")?
    };
    let spun = sh.wedge_lease * WEDGE_FACTOR;
    spin(spun);
    let contended = match contender.join() {
        Ok(Ok(ms)) => {
            sh.record_wait(session, "contender", WaitKind::Contender, ms)?;
            format!("a contender held the lock after {ms:.1} ms")
        }
        Ok(Err(e)) => format!("the contender failed: {e}"),
        Err(_) => "the contender panicked".to_owned(),
    };
    let (rejected, rec, late) = late_write(t, &a).await?;
    Ok(FaultNote::new(
        rejected && contended.starts_with("a contender held"),
        format!(
            "{} held s{session} with a {:?} lease and spun {spun:?} on the CPU; {contended}; its late write was {late}",
            rec.id,
            sh.wedge_lease,
        ),
    ))
}

/// A holder that the demo puts out of play mid-hold (`fault`: its
/// liveness connection cut, or the process stopped past its lease): it
/// holds `session`, writes one entry, and hands over to `hold`, which
/// returns what the demo's contender (another process) found; then this
/// holder's late write must be refused.
pub(super) async fn victim_turn<B: DemoBackend>(
    sh: &Shared,
    be: &B,
    fault: FaultKind,
    session: usize,
    hold: impl FnOnce() -> Result<String>,
) -> Result<FaultNote> {
    let lane = "victim";
    let mut t = Turn::new(sh, lane, session, false);
    t.rec.expect_takeover = Some(fault);
    let lease = if fault == FaultKind::StopPastLease {
        sh.wedge_lease
    } else {
        NORMAL_LEASE
    };
    let locks = be.locks(None);
    let opts = sh.attempt_options(lane, &t.rec.id, lease);
    let since = Instant::now();
    let a = match Attempt::begin(&locks, be.session(sh, session, false), opts).await {
        Ok(a) => a,
        Err(e) => {
            t.error(&e);
            t.finish()?;
            return Ok(FaultNote::new(false, format!("could not begin: {e}")));
        }
    };
    sh.wait(session, lane, WaitKind::Begin, since)?;
    let id = sh.entry_id(lane, session);
    let entry = reply(Reply::Label, &id, &t.rec.id);
    let first = write_entry(&mut t, &a, entry, &id).await?;
    // The demo cuts the connection or stops this process here, and takes
    // the session from another process.
    let contended = hold()?;
    let (rejected, rec, late) = late_write(t, &a).await?;
    Ok(FaultNote::new(
        first == Wrote::Landed
            && rejected
            && contended.starts_with("a contender in another process held"),
        format!(
            "{} held s{session} ({}); {contended}; its late write was {late}",
            rec.id,
            match fault {
                FaultKind::ConnCut => "its liveness connection was terminated".to_owned(),
                _ => format!("stopped past its {lease:?} lease, then continued"),
            },
        ),
    ))
}

/// The late write of a fault lane that lost its lock: it must be refused.
/// Records whether it was, cleans up and logs the turn. Returns whether it
/// was refused, the turn's record and how the late write went (`refused
/// (PHASE: DETAIL)`, or why not).
async fn late_write<B: DemoBackend>(
    mut t: Turn<'_>,
    a: &Attempt<B>,
) -> Result<(bool, TurnRecord, String)> {
    let (sh, session) = (t.sh, t.session());
    let id = sh.entry_id(t.lane(), session);
    let wrote = write_entry(&mut t, a, late_entry(&id), &id).await?;
    let rejected = wrote == Wrote::Refused && !t.failed();
    sh.fact(&Fact::LateWrite(LateWrite {
        id: id.clone(),
        session,
        rejected,
    }))?;
    // Cleanup after a takeover gets a no-op lock.
    if let Err(e) = a.acquire_for_cleanup().await {
        t.error(&e);
    }
    if let Err(e) = a.dispose() {
        t.error(&e);
    }
    let rec = t.finish()?;
    let late = match (&rec.takeover, rec.error.as_deref()) {
        (Some(tk), _) if rejected => format!("refused ({}: {})", tk.phase, tk.detail),
        (_, Some(e)) => format!("not refused as a takeover: {e}"),
        _ => "LANDED".to_owned(),
    };
    Ok((rejected, rec, late))
}

/// A compaction: a summary model call, then a rewrite of the transcript
/// with every entry kept and a marker added, under the fence.
pub(super) async fn compaction_turn<B: DemoBackend>(
    sh: &Shared,
    be: &B,
    session: usize,
    rng: &mut Rng,
) -> Result<()> {
    let lane = LaneKind::Compaction.label();
    let mut t = Turn::new(sh, lane, session, false);
    let locks = be.locks(None);
    let opts = sh.attempt_options(lane, &t.rec.id, NORMAL_LEASE);
    let since = Instant::now();
    let a = match Attempt::begin(&locks, be.session(sh, session, false), opts).await {
        Ok(a) => a,
        Err(e) => {
            t.error(&e);
            t.finish()?;
            return Ok(());
        }
    };
    sh.wait(session, lane, WaitKind::Begin, since)?;
    t.releasing();
    let since = Instant::now();
    match a.release_for_prompt().await {
        Ok(()) => {
            sh.wait(session, lane, WaitKind::PromptTurn, since)?;
            t.window_open();
        }
        Err(e) => t.rec.error = Some(format!("release_for_prompt: {e}")),
    }
    sleep_ms(rng.range(30, 120)).await;
    t.window_close();
    let since = Instant::now();
    let r = a.reacquire_after_prompt().await;
    sh.wait(session, lane, WaitKind::Reacquire, since)?;
    match r {
        Ok(_) => t.held(),
        Err(e) => t.error(&e),
    }
    if a.state() == State::Held {
        let marker_id = sh.entry_id(lane, session);
        let marker = compaction_marker(&marker_id, &t.rec.id);
        let mutation = sh.mutation_id();
        sh.fact(&Fact::MutationBegin {
            id: mutation.clone(),
            session,
            kind: MutationKind::Compaction,
            owner_turn: Some(t.rec.id.clone()),
            at_ns: monotonic_ns(),
        })?;
        // Read and rewrite under the held lock: nobody appends between.
        let r = async {
            let mut entries = a.read().await?.entries;
            entries.push(marker);
            a.rewrite(&entries).await
        }
        .await;
        sh.fact(&Fact::MutationEnd {
            id: mutation,
            at_ns: monotonic_ns(),
            landed: r.is_ok(),
        })?;
        match r {
            Ok(()) => sh.ack(&marker_id, session)?,
            Err(sessionlock::Error::Cancelled { .. }) => {}
            Err(e) => t.error(&e),
        }
    }
    if let Err(e) = a.acquire_for_cleanup().await {
        t.error(&e);
    }
    if let Err(e) = a.dispose() {
        t.error(&e);
    }
    t.finish()?;
    Ok(())
}

/// Two lanes of one session at once, one through the symlinked directory
/// (incident 5): their prompt windows must not overlap (the verdict checks
/// every window of a process), and neither may lose a write.
pub(super) async fn alias_turns<B: DemoBackend>(
    sh: &Shared,
    be: &B,
    lane: LaneKind,
    session: usize,
    rng: &mut Rng,
) -> Result<FaultNote> {
    let direct = Plan {
        lane: lane.label().to_owned(),
        ..LaneKind::Channel.plan(session, rng)
    };
    let aliased = Plan {
        lane: format!("{}-alias", lane.label()),
        alias: true,
        ..LaneKind::Channel.plan(session, rng)
    };
    let (d, x) = tokio::join!(prompt_turn(sh, be, direct), prompt_turn(sh, be, aliased));
    let (d, x) = (d?, x?);
    Ok(FaultNote::new(
        d.rec.outcome != Outcome::Failed && x.rec.outcome != Outcome::Failed,
        format!(
            "{} ({:?}) and {} through {} ({:?}) ran on s{session} at once",
            d.rec.id,
            d.rec.outcome,
            x.rec.id,
            sh.layout.alias_dir().display(),
            x.rec.outcome
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_fs_fails_only_while_armed() {
        let fs = FaultFs::default();
        let here = std::path::Path::new(".");
        assert!(fs.stat(here).is_ok());
        fs.arm(true);
        let err = fs.stat(here).expect_err("armed");
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::IO.raw_os_error())
        );
        fs.arm(false);
        assert!(fs.stat(here).is_ok());
    }
}
