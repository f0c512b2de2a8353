//! The active-run registry and stuck recovery
//! ([design §9.2](crate::design#92-active-run-registry-and-stuck-recovery)).
//!
//! Every running attempt registers itself ([`RunRegistry::register`]) and is
//! indexed by its canonical session file, its session key and its run id. The
//! attempt reports progress (a transcript write, model output) through its
//! [`RunHandle`]; the stuck detector ([`RunRegistry::stuck`]) reports attempts
//! that made none for longer than a threshold, and recovery
//! ([`RunRegistry::recover`]) aborts them with [`AbortKind::Stuck`], which
//! releases their locks (`abort`, [design §8.2](crate::design#82-transitions)),
//! and waits, for a bounded time, until they have unregistered.
//!
//! Time comes from an injectable clock ([`RunRegistry::with_clock`]), so the
//! detector can be tested without sleeping.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::sync::lock;

/// Why an attempt is aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AbortKind {
    /// The user stopped the run.
    User,
    /// The run exceeded its time budget.
    Timeout,
    /// Stuck recovery: the run made no progress for too long.
    Stuck,
    /// The run yields to other work.
    Yield,
}

/// Aborts one running attempt (implemented by the attempt controller).
pub trait AbortHandle: Send + Sync {
    /// Asks the attempt to stop. Must not block: the attempt releases its lock
    /// promptly and unregisters (drops its [`RunHandle`]) when it has stopped.
    /// Called without any registry lock held, so it may drop the
    /// [`RunHandle`] synchronously.
    fn abort(&self, kind: AbortKind);
}

/// What identifies a running attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunInfo {
    /// The canonical path of the session transcript.
    pub session_file: PathBuf,
    /// The session key.
    pub session_key: String,
    /// The run id, expected to be unique among live runs.
    pub run_id: String,
    /// The lane the run came from, if any.
    pub lane: Option<String>,
}

/// Where a registered run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RunPhase {
    /// Waiting for its turn to own the session (another attempt of this
    /// process owns it): making no progress is expected, so a queued run is
    /// never [stuck](RunRegistry::stuck).
    Queued,
    /// Running.
    Running,
}

/// A registered run as seen at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunSnapshot {
    /// What identifies the run.
    pub info: RunInfo,
    /// Queued or running.
    pub phase: RunPhase,
    /// When it registered.
    pub started: Instant,
    /// When it last made progress (initially `started`).
    pub last_progress: Instant,
}

/// The registry's source of "now".
type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// What [`RunRegistry::recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The stuck runs that were aborted, as they were when found stuck.
    pub aborted: Vec<RunSnapshot>,
    /// Run ids of aborted runs that unregistered within the settle time.
    pub settled: Vec<String>,
    /// Run ids of aborted runs still registered when the settle time ran out.
    pub unsettled: Vec<String>,
}

/// The registry of running attempts.
///
/// Lookups return runs in registration order. Clones share one registry.
#[derive(Clone)]
pub struct RunRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Clock,
    state: Mutex<State>,
    /// Bumped after every unregistration.
    unregistered: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    runs: BTreeMap<u64, Entry>,
    by_file: HashMap<PathBuf, BTreeSet<u64>>,
    by_key: HashMap<String, BTreeSet<u64>>,
    by_run: HashMap<String, BTreeSet<u64>>,
}

struct Entry {
    info: RunInfo,
    phase: RunPhase,
    started: Instant,
    last_progress: Instant,
    abort: Arc<dyn AbortHandle>,
}

impl Entry {
    fn snapshot(&self) -> RunSnapshot {
        RunSnapshot {
            info: self.info.clone(),
            phase: self.phase,
            started: self.started,
            last_progress: self.last_progress,
        }
    }
}

fn unindex<K: Eq + Hash>(index: &mut HashMap<K, BTreeSet<u64>>, key: &K, id: u64) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(&id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

impl State {
    fn snapshots<'a>(&self, ids: impl IntoIterator<Item = &'a u64>) -> Vec<RunSnapshot> {
        ids.into_iter()
            .filter_map(|id| self.runs.get(id))
            .map(Entry::snapshot)
            .collect()
    }
}

impl Default for RunRegistry {
    fn default() -> Self {
        RunRegistry::new()
    }
}

impl RunRegistry {
    /// An empty registry on the system monotonic clock.
    pub fn new() -> RunRegistry {
        RunRegistry::with_clock(Arc::new(Instant::now))
    }

    /// An empty registry that reads "now" from `clock` (for tests).
    pub fn with_clock(clock: Arc<dyn Fn() -> Instant + Send + Sync>) -> RunRegistry {
        RunRegistry {
            inner: Arc::new(Inner {
                clock,
                state: Mutex::new(State::default()),
                unregistered: watch::Sender::new(0),
            }),
        }
    }

    /// Registers a running attempt; it stays registered until the returned
    /// handle is dropped or [finished](RunHandle::finish).
    pub fn register(&self, info: RunInfo, abort: Arc<dyn AbortHandle>) -> RunHandle {
        self.register_in(info, abort, RunPhase::Running)
    }

    /// Registers a run that waits for its turn ([`RunPhase::Queued`]) until
    /// [`RunHandle::running`]; it can be aborted while it waits.
    pub fn register_queued(&self, info: RunInfo, abort: Arc<dyn AbortHandle>) -> RunHandle {
        self.register_in(info, abort, RunPhase::Queued)
    }

    fn register_in(
        &self,
        info: RunInfo,
        abort: Arc<dyn AbortHandle>,
        phase: RunPhase,
    ) -> RunHandle {
        let now = (self.inner.clock)();
        let mut guard = lock(&self.inner.state);
        let st = &mut *guard;
        let id = st.next_id;
        st.next_id += 1;
        st.by_file
            .entry(info.session_file.clone())
            .or_default()
            .insert(id);
        st.by_key
            .entry(info.session_key.clone())
            .or_default()
            .insert(id);
        st.by_run.entry(info.run_id.clone()).or_default().insert(id);
        st.runs.insert(
            id,
            Entry {
                info,
                phase,
                started: now,
                last_progress: now,
                abort,
            },
        );
        RunHandle {
            inner: self.inner.clone(),
            id,
        }
    }

    /// The runs on the session file `path` (canonical; compared as given).
    pub fn by_session_file(&self, path: &Path) -> Vec<RunSnapshot> {
        let st = lock(&self.inner.state);
        st.by_file
            .get(path)
            .map_or_else(Vec::new, |ids| st.snapshots(ids))
    }

    /// The runs of the session `key`.
    pub fn by_session_key(&self, key: &str) -> Vec<RunSnapshot> {
        let st = lock(&self.inner.state);
        st.by_key
            .get(key)
            .map_or_else(Vec::new, |ids| st.snapshots(ids))
    }

    /// The run with id `run_id`; if several live runs share it, the newest.
    pub fn by_run_id(&self, run_id: &str) -> Option<RunSnapshot> {
        let st = lock(&self.inner.state);
        let id = st.by_run.get(run_id)?.last()?;
        st.runs.get(id).map(Entry::snapshot)
    }

    /// All registered runs.
    pub fn all(&self) -> Vec<RunSnapshot> {
        lock(&self.inner.state)
            .runs
            .values()
            .map(Entry::snapshot)
            .collect()
    }

    /// Aborts every registered run with id `run_id`, queued or running (a
    /// user stop, a timeout): each run's abort handle is called, outside the
    /// registry's lock. Returns how many were aborted. A queued attempt
    /// stops waiting for its session at once (its `begin` returns
    /// `Cancelled`); a running one releases its lock at once.
    pub fn abort(&self, run_id: &str, kind: AbortKind) -> usize {
        let handles: Vec<Arc<dyn AbortHandle>> = {
            let st = lock(&self.inner.state);
            st.by_run.get(run_id).map_or_else(Vec::new, |ids| {
                ids.iter()
                    .filter_map(|id| st.runs.get(id))
                    .map(|e| e.abort.clone())
                    .collect()
            })
        };
        for h in &handles {
            h.abort(kind);
        }
        handles.len()
    }

    /// The running runs that made no progress for longer than `threshold`
    /// before `now` (queued runs wait for another, and are never stuck).
    pub fn stuck(&self, now: Instant, threshold: Duration) -> Vec<RunSnapshot> {
        self.stuck_entries(now, threshold)
            .into_iter()
            .map(|(_, snap, _)| snap)
            .collect()
    }

    fn stuck_entries(
        &self,
        now: Instant,
        threshold: Duration,
    ) -> Vec<(u64, RunSnapshot, Arc<dyn AbortHandle>)> {
        lock(&self.inner.state)
            .runs
            .iter()
            .filter(|(_, e)| {
                e.phase == RunPhase::Running
                    && now.saturating_duration_since(e.last_progress) > threshold
            })
            .map(|(id, e)| (*id, e.snapshot(), e.abort.clone()))
            .collect()
    }

    /// Aborts every run [stuck](RunRegistry::stuck) at `now` with
    /// [`AbortKind::Stuck`], then waits until each has unregistered, or until
    /// `settle` has passed.
    ///
    /// Waiting is event-driven: it wakes on each unregistration, never polls.
    ///
    /// # Panics
    /// Panics if called outside a Tokio runtime with the time driver enabled.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future stops only the waiting; the aborts
    /// already issued stand, and the registry is left as it was.
    pub async fn recover(
        &self,
        now: Instant,
        threshold: Duration,
        settle: Duration,
    ) -> RecoveryReport {
        // Subscribed before aborting, so no unregistration is missed.
        let mut unregistered = self.inner.unregistered.subscribe();
        let deadline = tokio::time::Instant::now() + settle;
        let stuck = self.stuck_entries(now, threshold);
        for (_, snap, abort) in &stuck {
            tracing::warn!(
                target: "sessionlock::attempt",
                run = %snap.info.run_id,
                session = %snap.info.session_file.display(),
                "aborting stuck run"
            );
            abort.abort(AbortKind::Stuck);
        }
        let registered = |id: &u64| lock(&self.inner.state).runs.contains_key(id);
        while stuck.iter().any(|(id, _, _)| registered(id)) {
            match tokio::time::timeout_at(deadline, unregistered.changed()).await {
                Ok(Ok(())) => {}
                // Timed out (the sender cannot close: we hold `inner`).
                Ok(Err(_)) | Err(_) => break,
            }
        }
        let mut report = RecoveryReport::default();
        for (id, snap, _) in stuck {
            if registered(&id) {
                report.unsettled.push(snap.info.run_id.clone());
            } else {
                report.settled.push(snap.info.run_id.clone());
            }
            report.aborted.push(snap);
        }
        report
    }
}

impl fmt::Debug for RunRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunRegistry")
            .field("runs", &lock(&self.inner.state).runs.len())
            .finish()
    }
}

/// A registered run. Dropping it, like [`RunHandle::finish`], unregisters the
/// run.
#[must_use = "dropping a RunHandle unregisters the run at once"]
pub struct RunHandle {
    inner: Arc<Inner>,
    id: u64,
}

impl RunHandle {
    /// Records that the run made progress (a write, model output) now.
    pub fn progress(&self) {
        let now = (self.inner.clock)();
        if let Some(e) = lock(&self.inner.state).runs.get_mut(&self.id) {
            e.last_progress = now;
        }
    }

    /// Marks a queued run as running, counting its progress from now.
    pub fn running(&self) {
        let now = (self.inner.clock)();
        if let Some(e) = lock(&self.inner.state).runs.get_mut(&self.id) {
            e.phase = RunPhase::Running;
            e.last_progress = now;
        }
    }

    /// The run as registered now.
    pub fn snapshot(&self) -> Option<RunSnapshot> {
        lock(&self.inner.state)
            .runs
            .get(&self.id)
            .map(Entry::snapshot)
    }

    /// Unregisters the run.
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for RunHandle {
    fn drop(&mut self) {
        let removed = {
            let mut guard = lock(&self.inner.state);
            let st = &mut *guard;
            st.runs.remove(&self.id).inspect(|e| {
                unindex(&mut st.by_file, &e.info.session_file, self.id);
                unindex(&mut st.by_key, &e.info.session_key, self.id);
                unindex(&mut st.by_run, &e.info.run_id, self.id);
            })
        };
        if removed.is_some() {
            self.inner
                .unregistered
                .send_modify(|n| *n = n.wrapping_add(1));
        }
        // `removed` (and its abort handle) drops here, outside the lock.
    }
}

impl fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunHandle").field("id", &self.id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A clock that moves only when told to.
    #[derive(Clone)]
    struct FakeClock(Arc<Mutex<Instant>>);

    impl FakeClock {
        fn new() -> Self {
            FakeClock(Arc::new(Mutex::new(Instant::now())))
        }
        fn now(&self) -> Instant {
            *lock(&self.0)
        }
        fn advance(&self, d: Duration) {
            *lock(&self.0) += d;
        }
        fn registry(&self) -> RunRegistry {
            let c = self.clone();
            RunRegistry::with_clock(Arc::new(move || c.now()))
        }
    }

    /// Records abort calls and forwards them to a channel.
    #[derive(Default)]
    struct FakeAbort {
        calls: Mutex<Vec<AbortKind>>,
        tx: Option<mpsc::UnboundedSender<AbortKind>>,
    }

    impl FakeAbort {
        fn forwarding(tx: mpsc::UnboundedSender<AbortKind>) -> Arc<Self> {
            Arc::new(FakeAbort {
                calls: Mutex::default(),
                tx: Some(tx),
            })
        }
        fn calls(&self) -> Vec<AbortKind> {
            lock(&self.calls).clone()
        }
    }

    impl AbortHandle for FakeAbort {
        fn abort(&self, kind: AbortKind) {
            lock(&self.calls).push(kind);
            if let Some(tx) = &self.tx {
                let _ = tx.send(kind);
            }
        }
    }

    /// Drops the handle it holds, synchronously, when aborted.
    struct DropOnAbort(Mutex<Option<RunHandle>>);

    impl AbortHandle for DropOnAbort {
        fn abort(&self, _: AbortKind) {
            drop(lock(&self.0).take());
        }
    }

    fn info(file: &str, key: &str, run: &str) -> RunInfo {
        RunInfo {
            session_file: PathBuf::from(file),
            session_key: key.to_owned(),
            run_id: run.to_owned(),
            lane: None,
        }
    }

    fn ids(snaps: &[RunSnapshot]) -> Vec<&str> {
        snaps.iter().map(|s| s.info.run_id.as_str()).collect()
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn send_sync_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<RunRegistry>();
        check::<RunHandle>();
        check::<RunSnapshot>();
        fn check_send<T: Send>(_: &T) {}
        let reg = RunRegistry::new();
        check_send(&reg.recover(Instant::now(), MIN, MIN));
    }

    #[test]
    fn register_and_lookup_by_all_indices() {
        let reg = RunRegistry::new();
        let abort: Arc<dyn AbortHandle> = Arc::new(FakeAbort::default());
        let a = reg.register(info("/s/a.jsonl", "agent:a", "r1"), abort.clone());
        let b = reg.register(info("/s/a.jsonl", "agent:a", "r2"), abort.clone());
        let mut ci = info("/s/c.jsonl", "agent:c", "r3");
        ci.lane = Some("cron".into());
        let c = reg.register(ci.clone(), abort);

        assert_eq!(
            ids(&reg.by_session_file(Path::new("/s/a.jsonl"))),
            ["r1", "r2"]
        );
        assert_eq!(ids(&reg.by_session_file(Path::new("/s/c.jsonl"))), ["r3"]);
        assert!(reg.by_session_file(Path::new("/s/x.jsonl")).is_empty());
        assert_eq!(ids(&reg.by_session_key("agent:a")), ["r1", "r2"]);
        assert_eq!(ids(&reg.by_session_key("agent:c")), ["r3"]);
        assert!(reg.by_session_key("agent:x").is_empty());
        assert_eq!(reg.by_run_id("r3").map(|s| s.info), Some(ci));
        assert!(reg.by_run_id("nope").is_none());
        assert_eq!(ids(&reg.all()), ["r1", "r2", "r3"]);
        assert_eq!(c.snapshot().map(|s| s.info.run_id), Some("r3".into()));

        a.finish();
        assert_eq!(ids(&reg.by_session_file(Path::new("/s/a.jsonl"))), ["r2"]);
        assert!(reg.by_run_id("r1").is_none());
        drop(b);
        drop(c);
        assert!(reg.all().is_empty());
        let st = lock(&reg.inner.state);
        assert!(st.by_file.is_empty() && st.by_key.is_empty() && st.by_run.is_empty());
    }

    #[test]
    fn progress_moves_last_progress() {
        let clock = FakeClock::new();
        let reg = clock.registry();
        let t0 = clock.now();
        let h = reg.register(
            info("/s/a.jsonl", "k", "r1"),
            Arc::new(FakeAbort::default()),
        );
        let s = reg.by_run_id("r1").expect("registered");
        assert_eq!((s.started, s.last_progress), (t0, t0));
        clock.advance(Duration::from_secs(5));
        h.progress();
        let s = reg.by_run_id("r1").expect("registered");
        assert_eq!(s.started, t0);
        assert_eq!(s.last_progress, t0 + Duration::from_secs(5));
    }

    #[test]
    fn stuck_detection_with_fake_clock() {
        let clock = FakeClock::new();
        let reg = clock.registry();
        let idle = reg.register(
            info("/s/a.jsonl", "k", "idle"),
            Arc::new(FakeAbort::default()),
        );
        let busy = reg.register(
            info("/s/b.jsonl", "k", "busy"),
            Arc::new(FakeAbort::default()),
        );
        assert!(reg.stuck(clock.now(), MIN).is_empty());

        clock.advance(MIN);
        busy.progress();
        // Exactly at the threshold is not yet stuck.
        assert!(reg.stuck(clock.now(), MIN).is_empty());

        clock.advance(Duration::from_millis(1));
        assert_eq!(ids(&reg.stuck(clock.now(), MIN)), ["idle"]);
        idle.progress();
        assert!(reg.stuck(clock.now(), MIN).is_empty());

        clock.advance(MIN * 2);
        assert_eq!(ids(&reg.stuck(clock.now(), MIN)), ["idle", "busy"]);
        // A `now` before the last progress never counts as stuck.
        assert!(reg.stuck(clock.now() - MIN * 10, MIN).is_empty());
    }

    #[tokio::test]
    async fn recover_aborts_only_stuck_runs_and_reports_settled() {
        let clock = FakeClock::new();
        let reg = clock.registry();

        // The stuck run: a task that drops its handle when aborted.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stuck_abort = FakeAbort::forwarding(tx);
        let stuck = reg.register(info("/s/a.jsonl", "k", "stuck"), stuck_abort.clone());
        let run = tokio::spawn(async move {
            let kind = rx.recv().await;
            stuck.finish();
            kind
        });

        clock.advance(MIN * 2);
        let fresh_abort = Arc::new(FakeAbort::default());
        let _fresh = reg.register(info("/s/b.jsonl", "k", "fresh"), fresh_abort.clone());

        let report = reg.recover(clock.now(), MIN, Duration::from_secs(10)).await;
        assert_eq!(ids(&report.aborted), ["stuck"]);
        assert_eq!(report.settled, ["stuck"]);
        assert!(report.unsettled.is_empty());
        assert_eq!(stuck_abort.calls(), [AbortKind::Stuck]);
        assert!(fresh_abort.calls().is_empty());
        assert_eq!(run.await.expect("run task"), Some(AbortKind::Stuck));
        assert_eq!(ids(&reg.all()), ["fresh"]);
    }

    #[tokio::test]
    async fn recover_reports_unsettled_within_bounded_wait() {
        let clock = FakeClock::new();
        let reg = clock.registry();
        let ignoring = Arc::new(FakeAbort::default());
        let _h = reg.register(info("/s/a.jsonl", "k", "deaf"), ignoring.clone());
        clock.advance(MIN * 2);

        let started = Instant::now();
        let report = tokio::time::timeout(
            Duration::from_secs(10),
            reg.recover(clock.now(), MIN, Duration::from_millis(50)),
        )
        .await
        .expect("recover is bounded by settle");
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(ids(&report.aborted), ["deaf"]);
        assert!(report.settled.is_empty());
        assert_eq!(report.unsettled, ["deaf"]);
        assert_eq!(ignoring.calls(), [AbortKind::Stuck]);
        assert!(reg.by_run_id("deaf").is_some());
    }

    #[tokio::test]
    async fn recover_tolerates_abort_that_unregisters_synchronously() {
        let clock = FakeClock::new();
        let reg = clock.registry();
        let abort = Arc::new(DropOnAbort(Mutex::new(None)));
        let h = reg.register(info("/s/a.jsonl", "k", "sync"), abort.clone());
        *lock(&abort.0) = Some(h);
        clock.advance(MIN * 2);

        let report = tokio::time::timeout(
            Duration::from_secs(10),
            reg.recover(clock.now(), MIN, Duration::from_secs(10)),
        )
        .await
        .expect("no deadlock, no wait");
        assert_eq!(report.settled, ["sync"]);
        assert!(reg.all().is_empty());
    }

    #[tokio::test]
    async fn recover_with_nothing_stuck_returns_at_once() {
        let clock = FakeClock::new();
        let reg = clock.registry();
        let abort = Arc::new(FakeAbort::default());
        let _h = reg.register(info("/s/a.jsonl", "k", "ok"), abort.clone());
        let report = tokio::time::timeout(
            Duration::from_secs(10),
            reg.recover(clock.now(), MIN, Duration::from_secs(3600)),
        )
        .await
        .expect("returns at once");
        assert_eq!(report, RecoveryReport::default());
        assert!(abort.calls().is_empty());
    }
}
