//! The watchdog (spec §6): one dedicated OS thread per process that revokes
//! every lock this process has held past its `max_hold`.
//!
//! It is a plain thread, not an async task, so a holder whose tokio runtime
//! is blocked by a CPU-bound loop still loses its lock on time. It never
//! extends anything: extension is explicit (`Guard::extend`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;

/// Something the watchdog can revoke.
pub(crate) trait Revocable: Send + Sync {
    /// When it must be revoked, if it is still held.
    fn deadline(&self) -> Option<Instant>;
    /// Revokes it (idempotent; a no-op if already released).
    fn revoke_overdue(&self);
}

struct Entry {
    at: Instant,
    seq: u64,
    target: Weak<dyn Revocable>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

struct Watchdog {
    queue: Mutex<Queue>,
    cv: Condvar,
}

fn watchdog() -> Option<&'static Arc<Watchdog>> {
    static WD: OnceLock<Option<Arc<Watchdog>>> = OnceLock::new();
    WD.get_or_init(|| {
        let wd = Arc::new(Watchdog {
            queue: Mutex::new(Queue::default()),
            cv: Condvar::new(),
        });
        let runner = wd.clone();
        match std::thread::Builder::new()
            .name("sessionlock-watchdog".into())
            .spawn(move || runner.run())
        {
            Ok(_) => Some(wd),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the sessionlock watchdog thread; leases will only be enforced by other processes");
                None
            }
        }
    })
    .as_ref()
}

/// Asks the watchdog to revoke `target` at `at` unless it is released or
/// extended first (an extension registers again with its new deadline).
pub(crate) fn register(at: Instant, target: Weak<dyn Revocable>) {
    let Some(wd) = watchdog() else { return };
    let mut q = wd.queue.lock().unwrap_or_else(|p| p.into_inner());
    q.seq += 1;
    let seq = q.seq;
    let earliest = q.heap.peek().is_none_or(|Reverse(e)| at < e.at);
    q.heap.push(Reverse(Entry { at, seq, target }));
    if earliest {
        wd.cv.notify_one();
    }
}

impl Watchdog {
    fn run(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while q.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
                if let Some(Reverse(e)) = q.heap.pop() {
                    due.push(e.target);
                }
            }
            if !due.is_empty() {
                drop(q);
                for target in due {
                    if let Some(t) = target.upgrade() {
                        // Re-check: an extension moves the deadline (and has
                        // its own entry); a release clears it.
                        if t.deadline().is_some_and(|d| d <= Instant::now()) {
                            t.revoke_overdue();
                        }
                    }
                }
                q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                continue;
            }
            q = match q.heap.peek() {
                None => self.cv.wait(q).unwrap_or_else(|p| p.into_inner()),
                Some(Reverse(e)) => {
                    let wait = e.at.saturating_duration_since(now);
                    self.cv
                        .wait_timeout(q, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}
