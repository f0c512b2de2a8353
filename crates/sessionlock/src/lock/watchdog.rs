//! The watchdog ([design §3.8](crate::design#38-revoke-watchdog)): one
//! dedicated OS thread per process that revokes every lock this process has
//! held past its `max_hold`.
//!
//! It is a plain thread, not an async task, so a holder whose tokio runtime
//! is blocked by a CPU-bound loop still loses its lock on time. It never
//! extends anything: extension is explicit (`Guard::extend`). Entries are
//! cancelled when their lock is released or extended, so the schedule holds
//! only live leases.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;

use crate::sync::{lock, unpoison};

/// Something the watchdog can revoke.
pub(crate) trait Revocable: Send + Sync {
    /// Revokes it if `ticket` is still its scheduled revocation (an
    /// extension that raced with the deadline replaced it); a no-op if
    /// already released.
    fn revoke_overdue(&self, ticket: Ticket);
}

/// A scheduled revocation, for [`cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket(Instant, u64);

#[derive(Default)]
struct Schedule {
    due: BTreeMap<Ticket, Weak<dyn Revocable>>,
    seq: u64,
    /// When the watchdog thread will wake up by itself (`None`: never).
    /// Cancelling never wakes it: it finds nothing due and sleeps again. So
    /// a register that is not earlier than this needs no wake-up, and the
    /// common acquire/release cycle costs no context switch.
    wakes_at: Option<Instant>,
}

struct Watchdog {
    schedule: Mutex<Schedule>,
    cv: Condvar,
}

fn watchdog() -> Option<&'static Arc<Watchdog>> {
    static WD: OnceLock<Option<Arc<Watchdog>>> = OnceLock::new();
    WD.get_or_init(|| {
        let wd = Arc::new(Watchdog {
            schedule: Mutex::new(Schedule::default()),
            cv: Condvar::new(),
        });
        let runner = wd.clone();
        match std::thread::Builder::new()
            .name("sessionlock-watchdog".into())
            .spawn(move || runner.run())
        {
            Ok(_) => Some(wd),
            Err(e) => {
                tracing::error!(
                    target: "sessionlock::watchdog",
                    error = %e,
                    "cannot start the sessionlock watchdog thread; leases will only be enforced by other processes"
                );
                None
            }
        }
    })
    .as_ref()
}

/// Schedules the revocation of `target` at `at`.
pub(crate) fn register(at: Instant, target: Weak<dyn Revocable>) -> Option<Ticket> {
    let wd = watchdog()?;
    let mut s = lock(&wd.schedule);
    s.seq += 1;
    let ticket = Ticket(at, s.seq);
    s.due.insert(ticket, target);
    if s.wakes_at.is_none_or(|w| at < w) {
        s.wakes_at = Some(at);
        wd.cv.notify_one();
    }
    Some(ticket)
}

/// Cancels a scheduled revocation (the lock was released or extended).
pub(crate) fn cancel(ticket: Ticket) {
    if let Some(wd) = watchdog() {
        lock(&wd.schedule).due.remove(&ticket);
    }
}

/// Revokes on a thread of its own: a revocation waits for the hold's mutex,
/// which a fenced write in progress holds (for its write and sync, or for as
/// long as a foreign `flock` on the state file keeps it waiting, up to the
/// state-lock budget). Done inline, that wait would delay the revocation of
/// every other session of the process. Revocations are rare (a lease ran
/// out), so a thread each costs nothing that matters; if none can be
/// started, the revocation runs here.
fn revoke_apart(target: Arc<dyn Revocable>, ticket: Ticket) {
    let apart = target.clone();
    let spawned = std::thread::Builder::new()
        .name("sessionlock-revoke".into())
        .spawn(move || apart.revoke_overdue(ticket));
    if spawned.is_err() {
        target.revoke_overdue(ticket);
    }
}

impl Watchdog {
    fn run(&self) {
        let mut s = lock(&self.schedule);
        loop {
            let now = Instant::now();
            let first = s.due.keys().next().copied();
            match first {
                Some(t) if t.0 <= now => {
                    let target = s.due.remove(&t);
                    drop(s);
                    if let Some(target) = target.and_then(|w| w.upgrade()) {
                        revoke_apart(target, t);
                    }
                    s = lock(&self.schedule);
                }
                Some(t) => {
                    s.wakes_at = Some(t.0);
                    let wait = t.0.saturating_duration_since(now);
                    s = unpoison(self.cv.wait_timeout(s, wait)).0;
                }
                None => {
                    s.wakes_at = None;
                    s = unpoison(self.cv.wait(s));
                }
            }
        }
    }
}
