//! The process-global registry
//! ([design §3.2](crate::design#32-in-process-registry-and-hand-off)): one slot
//! per canonical key. A slot serializes this process's holders and waiters of
//! one lock: waiters queue FIFO, and a releasing holder hands the turn, and the
//! still-published lock with it, straight to the next waiter, with no polling
//! and without unpublishing the lock.
//!
//! Fairness: strict FIFO among this process's waiters; across processes,
//! whoever sees the lock free first wins.

use std::any::Any;
use std::any::TypeId;
use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::error::Holder;
use crate::sync::{lock, unpoison, Condvar, Mutex};

/// A lock published by this process and kept across an in-process hand-off.
pub(crate) trait Parked: Send {
    /// Unpublishes it (called when nobody is left to hand it to).
    fn release(self: Box<Self>);
    /// For the next holder to take it back as its backend's lease type.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

#[derive(Default)]
struct SlotState {
    /// Someone in this process has the turn (holds, or is acquiring across
    /// processes).
    busy: bool,
    queue: VecDeque<Arc<Ticket>>,
    parked: Option<Box<dyn Parked>>,
    /// The current holder, for timeout messages, and when it took the lock.
    holder: Option<(Holder, Instant)>,
    /// The current hold, for opt-in reentrancy.
    hold: Option<Weak<dyn Any + Send + Sync>>,
}

/// One canonical key's in-process state.
pub(crate) struct Slot {
    state: Mutex<SlotState>,
}

struct Registry {
    // Not `crate::sync`: the map lives for the whole process, outside any
    // model; the slots inside it are what the model checks exercise.
    slots: std::sync::Mutex<HashMap<(TypeId, OsString), Arc<Slot>>>,
}

/// Slots are pruned when the map grows past this many entries.
const PRUNE_AT: usize = 1024;

/// The slot of a session: its key's locator, within the backend whose key
/// type is `backend` (so two backends' locators never share a line).
pub(crate) fn slot(backend: TypeId, locator: &OsStr) -> Arc<Slot> {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let reg = REGISTRY.get_or_init(|| Registry {
        slots: std::sync::Mutex::new(HashMap::new()),
    });
    let mut slots = lock(&reg.slots);
    if slots.len() >= PRUNE_AT {
        slots.retain(|_, s| Arc::strong_count(s) > 1 || !s.is_idle());
    }
    slots
        .entry((backend, locator.to_owned()))
        .or_insert_with(|| Arc::new(Slot::new()))
        .clone()
}

/// Whether this process holds (or is handing over) the lock of a session.
#[cfg(feature = "internals")] // only the diagnostics (`diag`) use it
pub(crate) fn is_held(backend: TypeId, locator: &OsStr) -> bool {
    slot(backend, locator).holds()
}

/// Entering a slot: either the turn at once, or a place in the queue.
pub(crate) enum Entry {
    Turn(Turn),
    Queued(Queued),
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: Mutex::new(SlotState::default()),
        }
    }

    fn is_idle(&self) -> bool {
        let st = lock(&self.state);
        !st.busy && st.queue.is_empty() && st.parked.is_none()
    }

    /// Takes the turn if free and nobody queues, else queues.
    pub(crate) fn enter(self: &Arc<Self>) -> Entry {
        let mut st = lock(&self.state);
        if !st.busy && st.queue.is_empty() {
            st.busy = true;
            return Entry::Turn(Turn { slot: self.clone() });
        }
        let ticket = Arc::new(Ticket::new());
        st.queue.push_back(ticket.clone());
        Entry::Queued(Queued {
            slot: self.clone(),
            ticket,
            done: false,
        })
    }

    /// Whether a holder of this process has the lock (or it is parked for
    /// the next one).
    #[cfg(feature = "internals")] // only the diagnostics (`diag`) use it
    fn holds(&self) -> bool {
        let st = lock(&self.state);
        st.holder.is_some() || st.parked.is_some()
    }

    /// How many of this process's acquisitions wait for the lock: those
    /// queued for the turn, plus the one whose turn it is while it is still
    /// acquiring across processes (it has the turn, but neither holds nor
    /// has a parked lock to take over).
    pub(crate) fn waiting(&self) -> usize {
        let st = lock(&self.state);
        let acquiring = st.busy && st.holder.is_none() && st.parked.is_none();
        st.queue.len() + usize::from(acquiring)
    }

    /// Whether waiters queue for the turn.
    pub(crate) fn has_waiters(&self) -> bool {
        !lock(&self.state).queue.is_empty()
    }

    /// The current in-process holder, with its age brought up to date.
    pub(crate) fn holder(&self) -> Option<Holder> {
        let st = lock(&self.state);
        st.holder.as_ref().map(|(h, since)| {
            let mut h = h.clone();
            h.age_ms = Some(u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX));
            h
        })
    }

    /// The current hold, if it is of type `T` and still alive.
    pub(crate) fn current_hold<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let st = lock(&self.state);
        st.hold.as_ref()?.upgrade()?.downcast::<T>().ok()
    }

    /// Records the holder that now has the turn.
    pub(crate) fn set_holder(&self, holder: Holder, hold: Weak<dyn Any + Send + Sync>) {
        let mut st = lock(&self.state);
        st.holder = Some((holder, Instant::now()));
        st.hold = Some(hold);
    }

    /// Ends the current turn. With waiters queued, `parked` (the still
    /// published lock) goes to the next one; otherwise it is released here.
    pub(crate) fn release_turn(&self, parked: Option<Box<dyn Parked>>) {
        let mut st = lock(&self.state);
        st.holder = None;
        st.hold = None;
        if let Some(p) = parked {
            st.parked = Some(p);
        }
        if let Some(next) = st.queue.pop_front() {
            next.grant();
            return;
        }
        st.busy = false;
        if let Some(p) = st.parked.take() {
            // Released under the slot lock: a new in-process acquirer must not
            // see our half-released lock and take it for an orphan.
            p.release();
        }
    }

    /// Takes a lock parked by the previous holder.
    pub(crate) fn take_parked(&self) -> Option<Box<dyn Any + Send>> {
        lock(&self.state).parked.take().map(Parked::into_any)
    }
}

/// Having the turn of a slot. Dropping it ends the turn.
#[must_use]
pub(crate) struct Turn {
    slot: Arc<Slot>,
}

impl Turn {
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    /// Ends the turn, handing `parked` on (see [`Slot::release_turn`]).
    pub(crate) fn end(self, parked: Option<Box<dyn Parked>>) {
        let slot = self.slot.clone();
        std::mem::forget(self);
        slot.release_turn(parked);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.slot.release_turn(None);
    }
}

#[derive(Default)]
struct TicketState {
    granted: bool,
    waker: Option<Waker>,
}

/// A waiter's place in a slot's queue.
struct Ticket {
    state: Mutex<TicketState>,
    cv: Condvar,
}

impl Ticket {
    fn new() -> Ticket {
        Ticket {
            state: Mutex::new(TicketState::default()),
            cv: Condvar::new(),
        }
    }

    fn grant(&self) {
        let mut st = lock(&self.state);
        st.granted = true;
        if let Some(w) = st.waker.take() {
            w.wake();
        }
        self.cv.notify_all();
    }

    fn granted(&self) -> bool {
        lock(&self.state).granted
    }
}

/// A queued waiter. Dropping it gives up its place, or, if the turn was
/// already handed to it, passes the turn on: nothing stays queued or held.
#[must_use]
pub(crate) struct Queued {
    slot: Arc<Slot>,
    ticket: Arc<Ticket>,
    done: bool,
}

impl Queued {
    /// Blocks until granted or `deadline`; returns the turn if granted.
    pub(crate) fn wait_blocking(mut self, deadline: Option<Instant>) -> Option<Turn> {
        {
            let mut st = lock(&self.ticket.state);
            while !st.granted {
                match deadline {
                    None => st = unpoison(self.ticket.cv.wait(st)),
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        st = unpoison(self.ticket.cv.wait_timeout(st, left)).0;
                    }
                }
            }
        }
        self.finish()
    }

    /// Waits until granted or `deadline`; returns the turn if granted.
    ///
    /// # Cancel safety
    /// Dropping the future drops `self`, which leaves the queue or passes a
    /// granted turn on.
    pub(crate) async fn wait_async(mut self, deadline: Option<Instant>) -> Option<Turn> {
        let granted = Granted {
            ticket: &self.ticket,
        };
        match deadline {
            None => granted.await,
            Some(d) => {
                let _ = tokio::time::timeout_at(d.into(), granted).await;
            }
        }
        self.finish()
    }

    /// Leaves the queue: the turn if it was granted meanwhile, else nothing.
    fn finish(&mut self) -> Option<Turn> {
        self.done = true;
        let mut st = lock(&self.slot.state);
        if self.ticket.granted() {
            return Some(Turn {
                slot: self.slot.clone(),
            });
        }
        st.queue.retain(|t| !Arc::ptr_eq(t, &self.ticket));
        None
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if !self.done {
            drop(self.finish());
        }
    }
}

struct Granted<'a> {
    ticket: &'a Ticket,
}

impl Future for Granted<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = lock(&self.ticket.state);
        if st.granted {
            return Poll::Ready(());
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fresh_slot(name: &str) -> Arc<Slot> {
        slot(
            TypeId::of::<()>(),
            OsStr::new(&format!("/registry-test/{name}/{:?}", Instant::now())),
        )
    }

    #[test]
    fn fifo_hand_off() {
        let s = fresh_slot("fifo");
        let Entry::Turn(t) = s.enter() else {
            panic!("first enter must get the turn")
        };
        let Entry::Queued(a) = s.enter() else {
            panic!("queued")
        };
        let Entry::Queued(b) = s.enter() else {
            panic!("queued")
        };
        drop(t);
        assert!(a.ticket.granted());
        assert!(!b.ticket.granted());
        let ta = a.wait_blocking(Some(Instant::now())).expect("a granted");
        drop(ta);
        let tb = b.wait_blocking(Some(Instant::now())).expect("b granted");
        drop(tb);
        assert!(s.is_idle());
    }

    #[test]
    fn dropped_waiter_leaves_no_trace_and_passes_a_granted_turn() {
        let s = fresh_slot("drop");
        let Entry::Turn(t) = s.enter() else { panic!() };
        let Entry::Queued(a) = s.enter() else {
            panic!()
        };
        let Entry::Queued(b) = s.enter() else {
            panic!()
        };
        drop(b);
        assert_eq!(lock(&s.state).queue.len(), 1);
        drop(t); // grants a
        drop(a); // a never woke: its turn must be passed on and ended
        assert!(s.is_idle());
    }

    #[test]
    fn timeout_gives_up_place() {
        let s = fresh_slot("timeout");
        let Entry::Turn(_t) = s.enter() else { panic!() };
        let Entry::Queued(a) = s.enter() else {
            panic!()
        };
        assert!(a
            .wait_blocking(Some(Instant::now() + Duration::from_millis(20)))
            .is_none());
        assert!(lock(&s.state).queue.is_empty());
    }
}

/// Model checks of the hand-off over every interleaving loom can reach:
/// `RUSTFLAGS="--cfg loom" cargo test -p sessionlock --release --lib lock::registry::model`
/// (see docs/design.md §"Model checking the registry"). A lost wake-up shows
/// as a deadlock, which loom reports as a failure; the `queue`, `busy` and
/// `parked` state is checked after every execution.
#[cfg(all(test, loom))]
mod model {
    use super::*;
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use loom::thread;

    /// A parked lock that counts its releases.
    struct Probe(Arc<AtomicUsize>);

    impl Parked for Probe {
        fn release(self: Box<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
        fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
            self
        }
    }

    /// Runs `f` over every interleaving (bounded by `LOOM_MAX_PREEMPTIONS`
    /// when set) and prints how many executions it explored.
    fn check(name: &str, f: impl Fn() + Send + Sync + 'static) {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = runs.clone();
        loom::model::Builder::new().check(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f();
        });
        let bound = std::env::var("LOOM_MAX_PREEMPTIONS").unwrap_or_else(|_| "none".into());
        println!(
            "loom model {name}: {} interleavings (preemption bound: {bound})",
            runs.load(std::sync::atomic::Ordering::Relaxed)
        );
    }

    fn turn(slot: &Arc<Slot>) -> Turn {
        match slot.enter() {
            Entry::Turn(t) => t,
            Entry::Queued(_) => panic!("an idle slot gives the turn at once"),
        }
    }

    fn queued(slot: &Arc<Slot>) -> Queued {
        match slot.enter() {
            Entry::Queued(q) => q,
            Entry::Turn(_) => panic!("a busy slot queues"),
        }
    }

    /// Nothing queued, nobody busy, nothing parked: the lock was released.
    fn assert_idle(slot: &Slot) {
        let st = lock(&slot.state);
        assert!(!st.busy && st.queue.is_empty() && st.parked.is_none());
    }

    /// Takes the parked lock (as an acquirer does) and ends the turn handing
    /// it on.
    fn pass_on(turn: Turn, slot: &Slot) {
        let parked = slot
            .take_parked()
            .map(|p| Box::new(*p.downcast::<Probe>().expect("a probe")) as Box<dyn Parked>);
        turn.end(parked);
    }

    // No lost wake-up: a holder releasing while a blocking waiter is between
    // queueing and sleeping still wakes it, and the parked lock is released
    // exactly once, by the last one out.
    #[test]
    fn model_release_wakes_blocking_waiter() {
        check("release_wakes_blocking_waiter", || {
            let released = Arc::new(AtomicUsize::new(0));
            let slot = Arc::new(Slot::new());
            let holder = turn(&slot);
            let q = queued(&slot);
            let s = slot.clone();
            let waiter = thread::spawn(move || {
                let t = q.wait_blocking(None).expect("granted");
                pass_on(t, &s);
            });
            holder.end(Some(Box::new(Probe(released.clone()))));
            waiter.join().expect("waiter");
            assert_eq!(released.load(SeqCst), 1);
            assert_idle(&slot);
        });
    }

    // No lost wake-up for the async twin: the waker registered by `poll`
    // and the grant cannot miss each other.
    #[test]
    fn model_release_wakes_async_waiter() {
        check("release_wakes_async_waiter", || {
            let released = Arc::new(AtomicUsize::new(0));
            let slot = Arc::new(Slot::new());
            let holder = turn(&slot);
            let q = queued(&slot);
            let s = slot.clone();
            let waiter = thread::spawn(move || {
                let t = loom::future::block_on(q.wait_async(None)).expect("granted");
                pass_on(t, &s);
            });
            holder.end(Some(Box::new(Probe(released.clone()))));
            waiter.join().expect("waiter");
            assert_eq!(released.load(SeqCst), 1);
            assert_idle(&slot);
        });
    }

    // FIFO: waiters get the turn in the order they queued, one at a time,
    // each receiving the still-published lock from the one before.
    #[test]
    fn model_fifo_hand_off() {
        check("fifo_hand_off", || {
            let released = Arc::new(AtomicUsize::new(0));
            let inside = Arc::new(AtomicBool::new(false));
            let order = Arc::new(crate::sync::Mutex::new(Vec::new()));
            let slot = Arc::new(Slot::new());
            let holder = turn(&slot);
            let waiters: Vec<_> = (1..=2)
                .map(|id| {
                    let q = queued(&slot);
                    let (s, inside, order) = (slot.clone(), inside.clone(), order.clone());
                    thread::spawn(move || {
                        let t = q.wait_blocking(None).expect("granted");
                        assert!(!inside.swap(true, SeqCst), "two turns at once");
                        lock(&order).push(id);
                        inside.store(false, SeqCst);
                        pass_on(t, &s);
                    })
                })
                .collect();
            holder.end(Some(Box::new(Probe(released.clone()))));
            for w in waiters {
                w.join().expect("waiter");
            }
            assert_eq!(*lock(&order), [1, 2]);
            assert_eq!(released.load(SeqCst), 1);
            assert_idle(&slot);
        });
    }

    // A cancelled waiter leaves no hole: whether it gives up before or after
    // the turn reached it, the next waiter still gets the turn and the lock.
    #[test]
    fn model_cancelled_waiter_leaves_no_hole() {
        check("cancelled_waiter_leaves_no_hole", || {
            let released = Arc::new(AtomicUsize::new(0));
            let slot = Arc::new(Slot::new());
            let holder = turn(&slot);
            let first = queued(&slot);
            let second = queued(&slot);
            let canceller = thread::spawn(move || drop(first));
            let s = slot.clone();
            let waiter = thread::spawn(move || {
                let t = second
                    .wait_blocking(None)
                    .expect("granted despite the hole");
                pass_on(t, &s);
            });
            holder.end(Some(Box::new(Probe(released.clone()))));
            canceller.join().expect("canceller");
            waiter.join().expect("waiter");
            assert_eq!(released.load(SeqCst), 1);
            assert_idle(&slot);
        });
    }

    // Cancellation at the await point: an async waiter polled once (its
    // waker registered) and then dropped passes a turn it was granted on.
    #[test]
    fn model_dropped_async_wait_passes_turn_on() {
        check("dropped_async_wait_passes_turn_on", || {
            let released = Arc::new(AtomicUsize::new(0));
            let slot = Arc::new(Slot::new());
            let holder = turn(&slot);
            let first = queued(&slot);
            let second = queued(&slot);
            let canceller = thread::spawn(move || {
                let mut fut = Box::pin(first.wait_async(None));
                let mut cx = Context::from_waker(Waker::noop());
                if let Poll::Ready(t) = fut.as_mut().poll(&mut cx) {
                    drop(t.expect("a ready wait has the turn"));
                }
                drop(fut);
            });
            let s = slot.clone();
            let waiter = thread::spawn(move || {
                let t = loom::future::block_on(second.wait_async(None)).expect("granted");
                pass_on(t, &s);
            });
            holder.end(Some(Box::new(Probe(released.clone()))));
            canceller.join().expect("canceller");
            waiter.join().expect("waiter");
            assert_eq!(released.load(SeqCst), 1);
            assert_idle(&slot);
        });
    }

    // All three at once: a waiter in the middle of the queue gives up while
    // the turn travels down it; the others still get it, in order.
    #[test]
    fn model_fifo_around_a_cancelled_waiter() {
        check("fifo_around_a_cancelled_waiter", || {
            let released = Arc::new(AtomicUsize::new(0));
            let order = Arc::new(crate::sync::Mutex::new(Vec::new()));
            let slot = Arc::new(Slot::new());
            let holder = turn(&slot);
            let queue: Vec<_> = (1..=3).map(|id| (id, queued(&slot))).collect();
            let threads: Vec<_> = queue
                .into_iter()
                .map(|(id, q)| {
                    let (s, order) = (slot.clone(), order.clone());
                    thread::spawn(move || {
                        if id == 2 {
                            drop(q);
                            return;
                        }
                        let t = q.wait_blocking(None).expect("granted");
                        lock(&order).push(id);
                        pass_on(t, &s);
                    })
                })
                .collect();
            holder.end(Some(Box::new(Probe(released.clone()))));
            for t in threads {
                t.join().expect("thread");
            }
            assert_eq!(*lock(&order), [1, 3]);
            assert_eq!(released.load(SeqCst), 1);
            assert_idle(&slot);
        });
    }

    // Entering races releasing: three threads that enter concurrently (no
    // order fixed in advance) each get exactly one turn, never two at once,
    // every published lock is released exactly once, and the slot ends idle.
    #[test]
    fn model_concurrent_enter_and_release() {
        check("concurrent_enter_and_release", || {
            let released = Arc::new(AtomicUsize::new(0));
            let published = Arc::new(AtomicUsize::new(0));
            let inside = Arc::new(AtomicBool::new(false));
            let slot = Arc::new(Slot::new());
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    let (s, inside) = (slot.clone(), inside.clone());
                    let (released, published) = (released.clone(), published.clone());
                    thread::spawn(move || {
                        let t = match s.enter() {
                            Entry::Turn(t) => t,
                            Entry::Queued(q) => q.wait_blocking(None).expect("granted"),
                        };
                        assert!(!inside.swap(true, SeqCst), "two turns at once");
                        inside.store(false, SeqCst);
                        // Publish a lock if nobody handed one over.
                        let parked: Box<dyn Parked> = match s.take_parked() {
                            Some(p) => Box::new(*p.downcast::<Probe>().expect("a probe")),
                            None => {
                                published.fetch_add(1, SeqCst);
                                Box::new(Probe(released))
                            }
                        };
                        t.end(Some(parked));
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("thread");
            }
            // Every published lock released exactly once: none leaked by a
            // hand-off, none released twice.
            assert_eq!(released.load(SeqCst), published.load(SeqCst));
            assert_idle(&slot);
        });
    }
}
