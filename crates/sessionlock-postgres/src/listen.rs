//! Waits without polling: one LISTEN connection per process (per server and
//! schema) fanned out to its waiters, and death watches that wake a waiter
//! when a holder's liveness connection ends.
//!
//! Releases, reclaims and removals `NOTIFY` the session's key (never the
//! append path). After the listener reconnects it LISTENs again and then
//! wakes every waiter, so each re-reads the state after the LISTEN is in
//! place. A waiter also wakes after [`RECHECK`] whatever happened, which
//! bounds the cost of any notification lost all the same.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::sync::{watch, Notify};
use tokio_postgres::AsyncMessage;

use crate::conn::{connect_raw, locked, Shared};
use crate::waiters::Queued;

/// The most death watches (server connections) a process keeps at once.
pub const MAX_DEATH_WATCHES: usize = 32;

/// How long a death watch outlives its last wait.
const DEATH_KEEP: Duration = Duration::from_secs(2);

struct Kept {
    death: Arc<Death>,
    used: std::time::Instant,
}

/// The longest a waiter sleeps without looking again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// The fan-out of one process's notifications.
pub(crate) struct Listener {
    started: AtomicBool,
    /// Whether the LISTEN is in place (waiters of `watch` wait for it).
    ready: watch::Sender<bool>,
    keys: Mutex<HashMap<String, Weak<Signal>>>,
    /// Death watches by liveness lock, kept a while after their last wait
    /// ([`DEATH_KEEP`]) so that the holders this process keeps meeting do
    /// not cost a new connection at every hand-off.
    deaths: Mutex<HashMap<i64, Kept>>,
    channel: String,
    /// Told when the shared state goes away: the listener then ends.
    pub(crate) stop: Arc<Notify>,
}

/// Something a waiter can sleep on: a generation that moves on every
/// event, and a notifier.
#[derive(Default)]
pub(crate) struct Signal {
    gen: AtomicU64,
    notify: Notify,
}

impl Signal {
    fn fire(&self) {
        self.gen.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// A watch of one holder's liveness lock: fires when its connection ends.
pub(crate) struct Death {
    signal: Signal,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Drop for Death {
    fn drop(&mut self) {
        if let Some(tx) = locked(&self.stop).take() {
            let _ = tx.send(());
        }
    }
}

/// What [`LockBackend::watch`](sessionlock::LockBackend::watch) hands out for a PostgreSQL session.
pub struct PgWatch {
    key: Arc<Signal>,
    seen: u64,
    death: Option<(i64, Arc<Death>)>,
    /// This acquisition's row among the session's waiters, once it queued:
    /// written once it has waited a while, deleted when the last copy of
    /// the watch drops.
    pub(crate) waiter: Option<Arc<Queued>>,
}

impl std::fmt::Debug for PgWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgWatch")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl PgWatch {
    /// The watch, moved out for a task (what stays behind watches the same
    /// key; a death watch moves with the task).
    pub(crate) fn take(&mut self) -> PgWatch {
        PgWatch {
            key: self.key.clone(),
            seen: self.seen,
            death: self.death.take(),
            waiter: self.waiter.clone(),
        }
    }
}

impl Listener {
    pub(crate) fn new(channel: &str) -> Listener {
        Listener {
            started: AtomicBool::new(false),
            ready: watch::channel(false).0,
            keys: Mutex::new(HashMap::new()),
            deaths: Mutex::new(HashMap::new()),
            channel: channel.to_owned(),
            stop: Arc::new(Notify::new()),
        }
    }

    fn signal(&self, key: &str) -> Arc<Signal> {
        let mut keys = locked(&self.keys);
        if let Some(s) = keys.get(key).and_then(Weak::upgrade) {
            return s;
        }
        keys.retain(|_, w| w.strong_count() > 0);
        let s = Arc::new(Signal::default());
        keys.insert(key.to_owned(), Arc::downgrade(&s));
        s
    }

    fn wake(&self, key: &str) {
        if let Some(s) = locked(&self.keys).get(key).and_then(Weak::upgrade) {
            s.fire();
        }
    }

    fn wake_all(&self) {
        let all: Vec<_> = locked(&self.keys)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for s in all {
            s.fire();
        }
    }
}

/// Starts watching `key`: makes sure the LISTEN is in place (waiting at
/// most a short while for it), then returns a watch.
pub(crate) async fn watch(shared: &Arc<Shared>, key: &str) -> PgWatch {
    let l = &shared.listener;
    if !l.started.swap(true, Ordering::SeqCst) {
        tokio::spawn(listen_loop(Arc::downgrade(shared)));
        tokio::spawn(sweep_loop(Arc::downgrade(shared)));
    }
    let signal = l.signal(key);
    let seen = signal.gen.load(Ordering::SeqCst);
    let mut ready = l.ready.subscribe();
    // Without a LISTEN (the server is unreachable) waits still end at
    // RECHECK: no notification is needed for correctness.
    let _ = tokio::time::timeout(Duration::from_secs(2), ready.wait_for(|r| *r)).await;
    PgWatch {
        key: signal,
        seen,
        death: None,
        waiter: None,
    }
}

/// Sleeps until the key's lock may have changed, the holder whose
/// liveness lock is `holder_lock` loses its connection, `timeout` passes or
/// [`RECHECK`] does.
pub(crate) async fn wait(
    shared: &Arc<Shared>,
    w: &mut PgWatch,
    holder_lock: Option<i64>,
    timeout: Option<Duration>,
) {
    let death = match holder_lock {
        Some(id) => match &w.death {
            // Only one that has not fired: a fired watch never fires again,
            // so a holder that died after our last look would go unseen.
            Some((old, d)) if *old == id && d.signal.gen.load(Ordering::SeqCst) == 0 => {
                Some(d.clone())
            }
            _ => {
                let d = death_watch(shared, id);
                w.death = d.clone().map(|d| (id, d));
                d
            }
        },
        None => {
            w.death = None;
            None
        }
    };
    let death_seen = death.as_ref().map(|d| d.signal.gen.load(Ordering::SeqCst));
    let limit = timeout.map_or(RECHECK, |t| t.min(RECHECK));
    let key_changed = async {
        loop {
            let n = w.key.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if w.key.gen.load(Ordering::SeqCst) != w.seen {
                return;
            }
            n.await;
        }
    };
    let holder_died = async {
        match (&death, death_seen) {
            (Some(d), Some(seen)) => loop {
                let n = d.signal.notify.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if d.signal.gen.load(Ordering::SeqCst) != seen {
                    return;
                }
                n.await;
            },
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        () = key_changed => {}
        () = holder_died => {}
        () = tokio::time::sleep(limit) => {}
    }
    w.seen = w.key.gen.load(Ordering::SeqCst);
}

/// The death watch of liveness lock `id`, shared by this process's waiters:
/// a connection of its own waits for the lock in shared mode, which the
/// server grants when the holder's connection ends.
fn death_watch(shared: &Arc<Shared>, id: i64) -> Option<Arc<Death>> {
    let mut deaths = locked(&shared.listener.deaths);
    let now = std::time::Instant::now();
    if let Some(k) = deaths.get_mut(&id) {
        if k.death.signal.gen.load(Ordering::SeqCst) == 0 {
            k.used = now;
            return Some(k.death.clone());
        }
    }
    sweep(&mut deaths, now);
    if deaths.len() >= MAX_DEATH_WATCHES {
        // Each is a server connection: past the cap, waits fall back to
        // the re-check (a dead holder is then seen within RECHECK).
        return None;
    }
    let (tx, stop) = tokio::sync::oneshot::channel();
    let d = Arc::new(Death {
        signal: Signal::default(),
        stop: Mutex::new(Some(tx)),
    });
    deaths.insert(
        id,
        Kept {
            death: d.clone(),
            used: now,
        },
    );
    let weak = Arc::downgrade(&d);
    let shared = shared.clone();
    tokio::spawn(async move {
        let (mut client, conn) =
            match connect_raw(&shared.cfg, &shared.tls, "watch a holder on").await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(
                        target: "sessionlock::postgres",
                        error = %e,
                        "no death watch; waits fall back to re-checks"
                    );
                    let _ = stop.await;
                    return;
                }
            };
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let cancel = client.cancel_token();
        let waited = async {
            let tx = client.transaction().await?;
            tx.batch_execute("SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0")
                .await?;
            tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&id])
                .await?;
            tx.rollback().await
        };
        tokio::select! {
            r = waited => {
                if let Err(e) = r {
                    tracing::debug!(target: "sessionlock::postgres", error = %e, "death watch ended");
                }
                if let Some(d) = weak.upgrade() {
                    d.signal.fire();
                }
            }
            _ = stop => {
                // Nobody waits any more: end the server's wait for the
                // lock, so that the connection closes now rather than when
                // the holder's does.
                if let Err(e) = cancel.cancel_query(shared.tls.clone()).await {
                    tracing::debug!(
                        target: "sessionlock::postgres",
                        error = %e,
                        "cannot cancel a death watch; it ends with its holder"
                    );
                }
            }
        }
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    });
    Some(d)
}

/// Drops the death watches nobody waits on that have fired, or that no
/// wait used for [`DEATH_KEEP`] (their connections close).
fn sweep(deaths: &mut HashMap<i64, Kept>, now: std::time::Instant) {
    deaths.retain(|_, k| {
        let unused = Arc::strong_count(&k.death) == 1;
        let fired = k.death.signal.gen.load(Ordering::SeqCst) != 0;
        !(unused && (fired || now.duration_since(k.used) >= DEATH_KEEP))
    });
}

/// Sweeps the death watches every second, for as long as the shared
/// state lives.
async fn sweep_loop(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(s) = shared.upgrade() else { return };
        sweep(&mut locked(&s.listener.deaths), std::time::Instant::now());
    }
}

async fn listen_loop(shared: Weak<Shared>) {
    let Some(stop) = shared.upgrade().map(|s| s.listener.stop.clone()) else {
        return;
    };
    tokio::select! {
        () = listen_forever(shared) => {}
        () = stop.notified() => {}
    }
}

async fn listen_forever(shared: Weak<Shared>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(s) = shared.upgrade() else { return };
        let connected = connect_raw(&s.cfg, &s.tls, "listen for lock changes on").await;
        let (client, mut conn) = match connected {
            Ok(c) => c,
            Err(e) => {
                drop(s);
                tracing::debug!(
                    target: "sessionlock::postgres",
                    error = %e,
                    "listener cannot connect; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let channel = s.listener.channel.clone();
        drop(s);
        // Drive the connection while LISTEN runs, then read notifications.
        let (msgs_tx, mut msgs_rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            loop {
                match poll_fn(|cx| conn.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if msgs_tx.send(n.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                }
            }
        });
        if client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .is_err()
        {
            driver.abort();
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(50);
        if let Some(s) = shared.upgrade() {
            s.listener.ready.send_replace(true);
            // Anything may have changed while we were not listening.
            s.listener.wake_all();
        }
        while let Some(key) = msgs_rx.recv().await {
            let Some(s) = shared.upgrade() else { return };
            s.listener.wake(&key);
        }
        drop(client);
        if let Some(s) = shared.upgrade() {
            s.listener.ready.send_replace(false);
            s.listener.wake_all();
        }
        tokio::time::sleep(backoff).await;
    }
}
