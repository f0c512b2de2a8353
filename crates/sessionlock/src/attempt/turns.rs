//! The prompt-turn queue ([design §9.1](crate::design#91-prompt-turn-queue)):
//! per canonical session key, a FIFO queue of prompt windows, so that only one
//! attempt of this process is inside a prompt window of one transcript at a
//! time.
//!
//! Fairness: strict FIFO per key. A vacated turn is handed straight to the
//! oldest waiter, and [`PromptTurns::try_take`] never jumps the queue. Different
//! keys never wait on each other.
//!
//! Nothing strands: a [`PromptTurn`] vacates on drop (including while a
//! panicking task unwinds or is torn down), and a dropped
//! [`PromptTurns::take`] future leaves the queue, or, if the turn had already
//! been handed to it, passes it to the next waiter. A key's entry is removed
//! as soon as it has neither a holder nor waiters.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::sync::lock;

/// Who has a turn, for diagnostics: a timeout waiting for a turn names it,
/// as a lock timeout names the lock's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TurnHolder {
    /// The holder's lane, if it has one.
    pub lane: Option<String>,
    /// The holder's run id, if it has one.
    pub run_id: Option<String>,
    /// When it got the turn.
    pub since: Instant,
}

/// The prompt-turn queues of all keys.
///
/// Keys are compared as given: callers pass the canonical session path.
///
/// Fairness: strict FIFO per key (see the [module docs](self)).
#[derive(Clone, Default)]
pub struct PromptTurns {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Hands out waiter ids, unique across keys.
    next_id: u64,
    /// Only keys with a holder or waiters have an entry.
    keys: HashMap<PathBuf, KeyState>,
}

/// One key's queue. Invariant: waiters queue only while the turn is held
/// (`held`), and `granted` implies `held`.
struct KeyState {
    /// Someone has the turn: a [`PromptTurn`], or a waiter it was handed to
    /// that has not yet woken up (`granted`).
    held: bool,
    /// The waiter the turn was handed to, until its future claims it.
    granted: Option<u64>,
    /// Who has the turn, when it said ([`PromptTurns::take_as`]).
    holder: Option<TurnHolder>,
    queue: VecDeque<Waiter>,
}

struct Waiter {
    id: u64,
    waker: Waker,
    label: Option<Label>,
}

/// What a waiter says about itself: lane and run id.
type Label = (Option<String>, Option<String>);

fn holder_of(label: Option<Label>) -> Option<TurnHolder> {
    label.map(|(lane, run_id)| TurnHolder {
        lane,
        run_id,
        since: Instant::now(),
    })
}

impl State {
    /// Ends the current turn of `key`: hands it to the oldest waiter (whose
    /// waker is returned, to be woken outside the lock) or, with nobody
    /// waiting, removes the key's entry.
    fn vacate(&mut self, key: &Path) -> Option<Waker> {
        let ks = self.keys.get_mut(key)?;
        debug_assert!(ks.held, "vacating a turn that is not held");
        if let Some(next) = ks.queue.pop_front() {
            ks.granted = Some(next.id);
            ks.holder = holder_of(next.label);
            return Some(next.waker);
        }
        self.keys.remove(key);
        None
    }
}

impl PromptTurns {
    /// The process-wide prompt-turn queues.
    pub fn global() -> &'static PromptTurns {
        static GLOBAL: OnceLock<PromptTurns> = OnceLock::new();
        GLOBAL.get_or_init(PromptTurns::new)
    }

    /// The process-wide attempt-owner queues: one whole attempt per session
    /// file at a time in this process (see [`crate::attempt`]). The same
    /// FIFO discipline as the prompt turns, in queues of their own.
    pub fn owners() -> &'static PromptTurns {
        static OWNERS: OnceLock<PromptTurns> = OnceLock::new();
        OWNERS.get_or_init(PromptTurns::new)
    }

    /// A set of queues independent of [`PromptTurns::global`] (for tests and
    /// embedding).
    pub fn new() -> PromptTurns {
        PromptTurns::default()
    }

    /// Waits, in FIFO order, for the turn of `key`.
    ///
    /// # Cancel safety
    /// Cancel safe at every await point: dropping the future removes its place
    /// in the queue, and if the turn had already been handed to it, passes the
    /// turn to the next waiter (or frees it). Nothing is left queued or held.
    pub async fn take(&self, key: &Path) -> PromptTurn {
        Take {
            inner: self.inner.clone(),
            key: key.to_owned(),
            id: None,
            label: None,
        }
        .await
    }

    /// [`PromptTurns::take`], saying who takes the turn: while it is held,
    /// [`PromptTurns::holder`] names its lane and run id.
    ///
    /// # Cancel safety
    /// As [`PromptTurns::take`].
    pub async fn take_as(
        &self,
        key: &Path,
        lane: Option<String>,
        run_id: Option<String>,
    ) -> PromptTurn {
        Take {
            inner: self.inner.clone(),
            key: key.to_owned(),
            id: None,
            label: Some((lane, run_id)),
        }
        .await
    }

    /// Who holds the turn of `key`, if it is held by a taker that said
    /// ([`PromptTurns::take_as`]).
    pub fn holder(&self, key: &Path) -> Option<TurnHolder> {
        lock(&self.inner.state)
            .keys
            .get(key)
            .and_then(|ks| ks.holder.clone())
    }

    /// Takes the turn of `key` if nobody holds it or waits for it.
    pub fn try_take(&self, key: &Path) -> Option<PromptTurn> {
        let mut st = lock(&self.inner.state);
        if st.keys.contains_key(key) {
            return None;
        }
        st.keys.insert(
            key.to_owned(),
            KeyState {
                held: true,
                granted: None,
                holder: None,
                queue: VecDeque::new(),
            },
        );
        Some(PromptTurn {
            inner: self.inner.clone(),
            key: key.to_owned(),
        })
    }

    /// [`PromptTurns::try_take`], saying who takes the turn (see
    /// [`PromptTurns::take_as`]).
    pub fn try_take_as(
        &self,
        key: &Path,
        lane: Option<String>,
        run_id: Option<String>,
    ) -> Option<PromptTurn> {
        let turn = self.try_take(key)?;
        if let Some(ks) = lock(&self.inner.state).keys.get_mut(key) {
            ks.holder = holder_of(Some((lane, run_id)));
        }
        Some(turn)
    }

    /// How many futures wait for the turn of `key` (not counting the holder).
    pub fn waiting(&self, key: &Path) -> usize {
        lock(&self.inner.state)
            .keys
            .get(key)
            .map_or(0, |ks| ks.queue.len())
    }

    /// Whether the turn of `key` is held, or handed to a waiter that has not
    /// woken up yet.
    pub fn is_held(&self, key: &Path) -> bool {
        lock(&self.inner.state)
            .keys
            .get(key)
            .is_some_and(|ks| ks.held)
    }

    /// How many keys have an entry (a holder or waiters).
    #[cfg(test)]
    fn keys(&self) -> usize {
        lock(&self.inner.state).keys.len()
    }
}

impl fmt::Debug for PromptTurns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptTurns")
            .field("keys", &lock(&self.inner.state).keys.len())
            .finish()
    }
}

/// Holding the prompt turn of one key. Dropping it, like
/// [`PromptTurn::vacate`], hands the turn to the next waiter.
#[must_use = "dropping a PromptTurn vacates the turn at once"]
pub struct PromptTurn {
    inner: Arc<Inner>,
    key: PathBuf,
}

impl PromptTurn {
    /// The key whose turn this is.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// Vacates the turn, handing it to the next waiter (FIFO).
    pub fn vacate(self) {
        drop(self);
    }
}

impl Drop for PromptTurn {
    fn drop(&mut self) {
        let waker = lock(&self.inner.state).vacate(&self.key);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl fmt::Debug for PromptTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptTurn")
            .field("key", &self.key)
            .finish()
    }
}

/// The future of [`PromptTurns::take`].
struct Take {
    inner: Arc<Inner>,
    key: PathBuf,
    /// Our id once queued; `None` before the first poll and after completion.
    id: Option<u64>,
    /// Who we are, when we said.
    label: Option<Label>,
}

impl Future for Take {
    type Output = PromptTurn;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<PromptTurn> {
        let this = &mut *self;
        let mut guard = lock(&this.inner.state);
        let st = &mut *guard;
        match (this.id, st.keys.get_mut(&this.key)) {
            (id, None) => {
                // Nobody holds or waits: the turn is ours. (A queued waiter's
                // key always has an entry while it waits.)
                debug_assert!(id.is_none(), "a queued waiter's key lost its entry");
                st.keys.insert(
                    this.key.clone(),
                    KeyState {
                        held: true,
                        granted: None,
                        holder: holder_of(this.label.take()),
                        queue: VecDeque::new(),
                    },
                );
            }
            (None, Some(ks)) => {
                let id = st.next_id;
                st.next_id += 1;
                ks.queue.push_back(Waiter {
                    id,
                    waker: cx.waker().clone(),
                    label: this.label.take(),
                });
                this.id = Some(id);
                return Poll::Pending;
            }
            (Some(id), Some(ks)) => {
                if ks.granted != Some(id) {
                    if let Some(w) = ks.queue.iter_mut().find(|w| w.id == id) {
                        w.waker.clone_from(cx.waker());
                    }
                    return Poll::Pending;
                }
                ks.granted = None;
            }
        }
        this.id = None;
        Poll::Ready(PromptTurn {
            inner: this.inner.clone(),
            key: this.key.clone(),
        })
    }
}

impl Drop for Take {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let mut st = lock(&self.inner.state);
        let Some(ks) = st.keys.get_mut(&self.key) else {
            return;
        };
        if ks.granted == Some(id) {
            // The turn was handed to us but we never woke to claim it.
            ks.granted = None;
            let waker = st.vacate(&self.key);
            drop(st);
            if let Some(w) = waker {
                w.wake();
            }
            return;
        }
        ks.queue.retain(|w| w.id != id);
        if !ks.held && ks.queue.is_empty() {
            st.keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    /// Lets spawned tasks run until `cond` holds (current-thread runtime).
    async fn until(mut cond: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if cond() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition not reached");
    }

    const BOUND: Duration = Duration::from_secs(10);

    #[test]
    fn send_sync_static() {
        fn check<T: Send + Sync + 'static>() {}
        fn check_send<T: Send>(_: &T) {}
        check::<PromptTurns>();
        check::<PromptTurn>();
        let turns = PromptTurns::new();
        check_send(&turns.take(Path::new("/k")));
    }

    #[test]
    fn try_take_excludes_and_vacate_frees() {
        let turns = PromptTurns::new();
        let key = Path::new("/s/a.jsonl");
        let t = turns.try_take(key).expect("free");
        assert_eq!(t.key(), key);
        assert!(turns.is_held(key));
        assert!(turns.try_take(key).is_none());
        t.vacate();
        assert!(!turns.is_held(key));
        assert!(turns.try_take(key).is_some());
    }

    #[tokio::test]
    async fn fifo_order_with_five_waiters() {
        let turns = PromptTurns::new();
        let key = Path::new("/s/fifo.jsonl");
        let first = turns.take(key).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (turns2, order) = (turns.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let turn = turns2.take(Path::new("/s/fifo.jsonl")).await;
                lock(&order).push(i);
                tokio::task::yield_now().await;
                turn.vacate();
            }));
            until(|| turns.waiting(key) == i + 1).await;
        }
        // A newcomer cannot jump the queue while waiters exist.
        assert!(turns.try_take(key).is_none());
        first.vacate();
        for t in tasks {
            tokio::time::timeout(BOUND, t)
                .await
                .expect("waiter finishes")
                .expect("waiter task");
        }
        assert_eq!(*lock(&order), vec![0, 1, 2, 3, 4]);
        assert_eq!(turns.keys(), 0);
    }

    #[tokio::test]
    async fn different_keys_are_independent() {
        let turns = PromptTurns::new();
        let a = turns.take(Path::new("/s/a.jsonl")).await;
        let b = tokio::time::timeout(BOUND, turns.take(Path::new("/s/b.jsonl")))
            .await
            .expect("b never waits on a");
        assert!(turns.is_held(Path::new("/s/a.jsonl")));
        assert!(turns.is_held(Path::new("/s/b.jsonl")));
        drop(b);
        assert!(turns.is_held(Path::new("/s/a.jsonl")));
        drop(a);
        assert_eq!(turns.keys(), 0);
    }

    #[test]
    fn dropped_waiter_leaves_no_trace() {
        let turns = PromptTurns::new();
        let key = Path::new("/s/drop.jsonl");
        let held = turns.try_take(key).expect("free");

        // Dropped before its first poll.
        drop(turns.take(key));
        assert_eq!(turns.waiting(key), 0);

        // Dropped while queued.
        let mut w = Box::pin(turns.take(key));
        assert!(poll_once(&mut w).is_pending());
        assert_eq!(turns.waiting(key), 1);
        drop(w);
        assert_eq!(turns.waiting(key), 0);

        // The holder's vacate finds nobody to hand to: the turn is free.
        drop(held);
        assert!(!turns.is_held(key));
        assert_eq!(turns.keys(), 0);
        let mut again = Box::pin(turns.take(key));
        let Poll::Ready(t) = poll_once(&mut again) else {
            panic!("a later take succeeds at once")
        };
        drop(t);
    }

    #[tokio::test]
    async fn dropped_waiter_cancelled_by_timeout_leaves_no_trace() {
        let turns = PromptTurns::new();
        let key = Path::new("/s/timeout.jsonl");
        let held = turns.take(key).await;
        let res = tokio::time::timeout(Duration::from_millis(10), turns.take(key)).await;
        assert!(res.is_err());
        assert_eq!(turns.waiting(key), 0);
        drop(held);
        let t = tokio::time::timeout(BOUND, turns.take(key))
            .await
            .expect("take succeeds at once");
        drop(t);
        assert_eq!(turns.keys(), 0);
    }

    #[test]
    fn turn_handed_to_a_dropped_future_passes_on() {
        let turns = PromptTurns::new();
        let key = Path::new("/s/handed.jsonl");
        let held = turns.try_take(key).expect("free");
        let mut a = Box::pin(turns.take(key));
        let mut b = Box::pin(turns.take(key));
        assert!(poll_once(&mut a).is_pending());
        assert!(poll_once(&mut b).is_pending());
        assert_eq!(turns.waiting(key), 2);

        held.vacate(); // hands the turn to `a`
        assert_eq!(turns.waiting(key), 1);
        assert!(turns.is_held(key));
        drop(a); // `a` never claimed it: it must pass to `b`
        assert_eq!(turns.waiting(key), 0);
        let Poll::Ready(tb) = poll_once(&mut b) else {
            panic!("b got the turn")
        };
        assert!(turns.try_take(key).is_none());
        drop(tb);
        assert_eq!(turns.keys(), 0);

        // With nobody behind it, a dropped granted future frees the turn.
        let held = turns.try_take(key).expect("free");
        let mut c = Box::pin(turns.take(key));
        assert!(poll_once(&mut c).is_pending());
        held.vacate();
        drop(c);
        assert!(!turns.is_held(key));
        assert_eq!(turns.keys(), 0);
    }

    #[tokio::test]
    async fn panicking_holder_vacates() {
        let turns = PromptTurns::new();
        let key = Path::new("/s/panic.jsonl");
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let turns2 = turns.clone();
        let holder = tokio::spawn(async move {
            let _turn = turns2.take(Path::new("/s/panic.jsonl")).await;
            let _ = held_tx.send(());
            let _ = go_rx.await;
            panic!("holder panics while holding its turn");
        });
        held_rx.await.expect("holder took the turn");
        let turns3 = turns.clone();
        let next = tokio::spawn(async move {
            turns3.take(Path::new("/s/panic.jsonl")).await.vacate();
        });
        until(|| turns.waiting(key) == 1).await;
        let _ = go_tx.send(());
        let err = holder.await.expect_err("holder panicked");
        assert!(err.is_panic());
        tokio::time::timeout(BOUND, next)
            .await
            .expect("next waiter proceeds")
            .expect("next task");
        assert_eq!(turns.keys(), 0);
    }

    #[test]
    fn idle_keys_are_removed() {
        let turns = PromptTurns::new();
        for i in 0..100 {
            let key = PathBuf::from(format!("/s/{i}.jsonl"));
            let t = turns.try_take(&key).expect("free");
            let mut w = Box::pin(turns.take(&key));
            assert!(poll_once(&mut w).is_pending());
            t.vacate();
            let Poll::Ready(t) = poll_once(&mut w) else {
                panic!("granted")
            };
            drop(t);
        }
        assert_eq!(turns.keys(), 0);
    }

    #[test]
    fn global_is_shared() {
        let key = Path::new("/turns-test/global.jsonl");
        let t = PromptTurns::global().try_take(key).expect("free");
        assert!(PromptTurns::global().is_held(key));
        drop(t);
        assert!(!PromptTurns::global().is_held(key));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn mutual_exclusion_under_contention() {
        let turns = PromptTurns::new();
        let inside = Arc::new(AtomicBool::new(false));
        let entered = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (turns, inside, entered) = (turns.clone(), inside.clone(), entered.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..200 {
                    let t = turns.take(Path::new("/s/contended.jsonl")).await;
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders");
                    entered.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.store(false, Ordering::SeqCst);
                    t.vacate();
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(BOUND, t)
                .await
                .expect("no task strands")
                .expect("task");
        }
        assert_eq!(entered.load(Ordering::SeqCst), 8 * 200);
        assert_eq!(turns.keys(), 0);
    }
}
