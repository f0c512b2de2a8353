//! Who waits for whom on the server (design §17.2, the `waiters` table):
//! an acquisition that has to wait writes a row naming itself, and deletes
//! it when it stops waiting; `status` and the doctor read the rows of
//! waiters whose client is still connected.
//!
//! The row is written once the acquisition has waited [`RECORD_AFTER`]
//! (its `since` is when it started to wait all the same).
//!
//! A waiter's row names its client's liveness lock (the session-level
//! advisory lock its liveness connection holds, as a lease does). While
//! that connection lives, the lock is held and the row is shown; once it
//! ends (the process died, the network went) the lock is free, the row is
//! never shown again and the session's next waiter deletes it. A waiter
//! that stops waiting (it got the lock, gave up, or its future was
//! dropped) deletes its row itself, in the background.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sessionlock::backend::LeaseRequest;
use sessionlock::status::Waiter;
use sessionlock::Error;

use crate::conn::{locked, pg_error, Shared};
use crate::rt::run;
use crate::PgBackend;

/// A waiter's row, deleted when the last watch holding it drops.
pub(crate) struct WaiterRow {
    shared: Arc<Shared>,
    id: i64,
}

impl Drop for WaiterRow {
    fn drop(&mut self) {
        let (shared, id) = (self.shared.clone(), self.id);
        let Ok(rt) = crate::rt::runtime() else {
            return; // the connection's end removes it from view anyway
        };
        rt.spawn(async move {
            let gone = async {
                let client = shared.lazy_client("leave the waiters on").await?;
                let st = client
                    .prepare_cached(&shared.sql.dequeue)
                    .await
                    .map_err(|e| pg_error("prepare a statement on", shared.target(), e))?;
                client
                    .execute(&st, &[&id])
                    .await
                    .map_err(|e| pg_error("leave the waiters on", shared.target(), e))?;
                Ok::<(), Error>(())
            };
            if let Err(e) = gone.await {
                tracing::debug!(
                    target: "sessionlock::postgres",
                    error = %e,
                    "cannot delete a waiter's row; it is shown until this client disconnects"
                );
            }
        });
    }
}

/// How long an acquisition waits before it writes its row, at its next
/// wake (within [`RECHECK`](crate::RECHECK)): most waits under contention
/// are short, and a row for each would cost every contended acquisition
/// an insert and a delete, for waits nobody could see.
pub const RECORD_AFTER: Duration = Duration::from_millis(20);

/// An acquisition that queued: its row, written once it has waited
/// [`RECORD_AFTER`] ([`Queued::write_if_due`]) and deleted when the last
/// holder of this drops (its watch, and a write still running).
pub(crate) struct Queued {
    due: Mutex<Option<(String, LeaseRequest, Option<Instant>)>>,
    queued: Instant,
    row: Mutex<Option<WaiterRow>>,
}

impl Queued {
    pub(crate) fn new(key: String, req: LeaseRequest, deadline: Option<Instant>) -> Arc<Queued> {
        Arc::new(Queued {
            due: Mutex::new(Some((key, req, deadline))),
            queued: Instant::now(),
            row: Mutex::new(None),
        })
    }

    /// Starts writing the row (in the background) if it is due.
    pub(crate) fn write_if_due(self: &Arc<Self>, shared: &Arc<Shared>) {
        if self.queued.elapsed() < RECORD_AFTER {
            return;
        }
        let Some((key, req, deadline)) = locked(&self.due).take() else {
            return;
        };
        let Ok(rt) = crate::rt::runtime() else {
            return;
        };
        let (me, shared) = (self.clone(), shared.clone());
        rt.spawn(async move {
            match enqueue(&shared, &key, &req, deadline, me.queued).await {
                Ok(id) => *locked(&me.row) = Some(WaiterRow { shared, id }),
                Err(e) => tracing::debug!(
                    target: "sessionlock::postgres",
                    error = %e,
                    "cannot write the waiter's row; waiting without one"
                ),
            }
        });
    }
}

/// Inserts the row of a waiter of `key` (the session's key on the server)
/// that queued at `queued` and gives up at `deadline`.
async fn enqueue(
    shared: &Arc<Shared>,
    key: &str,
    req: &LeaseRequest,
    deadline: Option<Instant>,
    queued: Instant,
) -> Result<i64, Error> {
    let pid = i32::try_from(req.me.pid).unwrap_or(i32::MAX);
    let starttime = req.me.starttime.and_then(|s| i64::try_from(s).ok());
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let left_ms: Option<i64> = deadline.map(|d| ms(d.saturating_duration_since(Instant::now())));
    let waited_ms = ms(queued.elapsed());
    let (live_lock, _) = shared.live().await?;
    let client = shared.client("join the waiters on").await?;
    let st = client
        .prepare_cached(&shared.sql.enqueue)
        .await
        .map_err(|e| pg_error("prepare a statement on", shared.target(), e))?;
    let row = client
        .query_one(
            &st,
            &[
                &key,
                &pid,
                &starttime,
                &req.me.hostname,
                &req.me.boot_id,
                &shared.client_id,
                &req.lane,
                &req.run_id,
                &live_lock,
                &left_ms,
                &waited_ms,
            ],
        )
        .await
        .map_err(|e| pg_error("join the waiters on", shared.target(), e))?;
    Ok(row.get(0))
}

impl PgBackend {
    /// The live waiters of every session whose key starts with `prefix`,
    /// by key, each queue in arrival order, with the server's clock when
    /// it was read (waiters' times are the server's).
    ///
    /// # Errors
    /// `Backend` when the server cannot be asked.
    pub async fn waiters(
        &self,
        prefix: &str,
    ) -> Result<(BTreeMap<String, Vec<Waiter>>, SystemTime), Error> {
        let (s, prefix) = (self.shared.clone(), prefix.to_owned());
        run(async move {
            let client = s.client("list the waiters on").await?;
            let st = client
                .prepare_cached(&s.sql.waiters)
                .await
                .map_err(|e| pg_error("prepare a statement on", s.target(), e))?;
            let rows = client
                .query(&st, &[&prefix])
                .await
                .map_err(|e| pg_error("list the waiters on", s.target(), e))?;
            let mut out: BTreeMap<String, Vec<Waiter>> = BTreeMap::new();
            let mut now = SystemTime::now();
            for row in &rows {
                let mut w = Waiter::new(
                    row.get::<_, Option<i32>>(1)
                        .and_then(|p| u32::try_from(p).ok()),
                );
                w.hostname = row.get(2);
                w.client_id = row.get(3);
                w.lane = row.get(4);
                w.run_id = row.get(5);
                w.since = row.get(6);
                w.deadline = row.get(7);
                now = row.get(8);
                out.entry(row.get(0)).or_default().push(w);
            }
            Ok((out, now))
        })
        .await
    }
}
