//! Leases on the server: [`LockBackend`] for PostgreSQL.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::GenericClient;
use sessionlock::backend::{
    Held, Inspection, LeaseInfo, LeaseRequest, Listed, LockBackend, Outcome, StoreBackend,
};
use sessionlock::identity::Liveness;
use sessionlock::payload::Payload;
use sessionlock::{Error, Holder, LossCause};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use crate::conn::{locked, pg_error, random_hex, Shared};
use crate::listen::{self, PgWatch};
use crate::rt::{block, run, run_undo};
use crate::store::PgStore;
use crate::{PgBackend, PgKey};

/// How long the watchdog's revocation waits for the server.
pub const REVOKE_BOUND: Duration = Duration::from_secs(2);

/// Which version of a lease row an inspection saw: the row's change
/// counter, and the liveness lock its holder named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgVersion {
    version: i64,
    live_lock: Option<i64>,
}

/// A lease this process holds on the server. Cheap to share with the
/// backend's tasks: clones of its inside see one state.
pub struct PgLease(Arc<LeaseInner>);

pub(crate) struct LeaseInner {
    shared: Arc<Shared>,
    key: PgKey,
    /// The liveness connection's generation it was granted under.
    gen: u64,
    cur: Mutex<Cur>,
}

#[derive(Clone)]
struct Cur {
    epoch: u64,
    token: String,
    payload: Payload,
    /// When this holder must stop writing: its own clock from when it sent
    /// the request, so never after the server's expiry.
    deadline: Instant,
}

impl std::fmt::Debug for PgLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLease")
            .field("key", &self.0.key.as_str())
            .field("epoch", &self.0.cur().epoch)
            .finish_non_exhaustive()
    }
}

impl PgLease {
    /// The session.
    pub fn key(&self) -> &PgKey {
        &self.0.key
    }

    pub(crate) fn inner(&self) -> Arc<LeaseInner> {
        self.0.clone()
    }
}

impl LeaseInner {
    fn cur(&self) -> Cur {
        locked(&self.cur).clone()
    }

    pub(crate) fn key(&self) -> &PgKey {
        &self.key
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn epoch_token(&self) -> (u64, String) {
        let c = self.cur();
        (c.epoch, c.token)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(&self.key.locator)
    }

    /// Refuses, without asking the server, a lease whose liveness
    /// connection was lost or whose holder's own deadline has passed.
    pub(crate) fn local_check(&self) -> Result<(), Error> {
        let c = self.cur();
        let cause = if !self.shared.live_since(self.gen) {
            LossCause::ConnectionLost
        } else if Instant::now() >= c.deadline {
            LossCause::Overdue
        } else {
            return Ok(());
        };
        Err(Error::Revoked {
            path: self.path(),
            epoch: c.epoch,
            current_epoch: c.epoch,
            cause,
        })
    }

    /// Why a statement guarded by this lease found no row: asks the server
    /// for the session's state now.
    pub(crate) async fn refusal(&self, client: &impl GenericClient) -> Error {
        match self.state(client).await {
            Ok(()) => Error::Revoked {
                // The lease looks fine again: the row changed between the
                // two statements (an expiry right at the write, say).
                path: self.path(),
                epoch: self.cur().epoch,
                current_epoch: self.cur().epoch,
                cause: LossCause::Overdue,
            },
            Err(e) => e,
        }
    }

    /// Whether the lease is still the session's, as the server says.
    pub(crate) async fn state(&self, client: &impl GenericClient) -> Result<(), Error> {
        let (epoch, token) = self.epoch_token();
        let row = client
            .query_opt(
                &client
                    .prepare_cached(&self.shared.sql.state)
                    .await
                    .map_err(|e| pg_error("prepare a statement on", self.shared.target(), e))?,
                &[&self.key.key],
            )
            .await
            .map_err(|e| pg_error("check a lease on", self.shared.target(), e))?;
        let path = self.path();
        let revoked = |current: u64, cause| Error::Revoked {
            path: path.clone(),
            epoch,
            current_epoch: current,
            cause,
        };
        let Some(row) = row else {
            return Err(revoked(epoch, LossCause::Removed));
        };
        let now = to_u64(row.get::<_, i64>(0));
        let held: bool = row.get(1);
        let holder: Option<String> = row.get(2);
        let expired: Option<bool> = row.get(3);
        if now != epoch {
            return Err(Error::Fenced {
                path,
                epoch,
                current_epoch: now,
            });
        }
        if !held {
            return Err(revoked(now, LossCause::Removed));
        }
        if holder.as_deref() != Some(token.as_str()) {
            return Err(revoked(now, LossCause::Replaced));
        }
        if expired != Some(false) {
            return Err(revoked(now, LossCause::Overdue));
        }
        Ok(())
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// A row of [`Sql::inspect`](crate::sql::Sql) as an inspection; `None` for
/// a session nobody holds.
fn inspection(shared: &Shared, row: &Row) -> Option<Inspection<PgVersion>> {
    inspection_at(shared, row, 0)
}

/// [`inspection`] of the columns from `base` on (after a grant's own).
fn inspection_at(shared: &Shared, row: &Row, base: usize) -> Option<Inspection<PgVersion>> {
    let held: Option<bool> = row.get(base + 1);
    if held != Some(true) {
        return None;
    }
    let granted: Option<SystemTime> = row.get(base + 13);
    let written: SystemTime = row.get(base + 14);
    let observed: SystemTime = row.get(base + 16);
    let gone: Option<bool> = row.get(base + 17);
    let client: Option<String> = row.get(base + 9);
    let mut payload = Payload::default();
    payload.pid = row
        .get::<_, Option<i32>>(base + 5)
        .and_then(|p| u32::try_from(p).ok());
    payload.created_at = granted;
    payload.max_hold_ms = row
        .get::<_, Option<i64>>(base + 15)
        .and_then(|m| u64::try_from(m).ok());
    payload.starttime = row
        .get::<_, Option<i64>>(base + 6)
        .and_then(|s| u64::try_from(s).ok());
    payload.owner = Some("sessionlock".to_owned());
    payload.token = row.get(base + 4);
    payload.epoch = Some(to_u64(row.get(base + 3)));
    payload.hostname = row.get(base + 7);
    payload.boot_id = row.get(base + 8);
    payload.lane = row.get(base + 10);
    payload.run_id = row.get(base + 11);
    let liveness = match gone {
        Some(true) => Liveness::Dead,
        Some(false) => Liveness::Alive,
        None => Liveness::Unknown,
    };
    Some(Inspection {
        payload: Ok(payload),
        written,
        observed,
        liveness,
        ours: gone == Some(false) && client.as_deref() == Some(shared.client_id.as_str()),
        version: PgVersion {
            version: row.get(base + 2),
            live_lock: row.get(base + 12),
        },
    })
}

async fn inspect(shared: &Shared, key: &PgKey) -> Result<Option<Inspection<PgVersion>>, Error> {
    let client = shared.client("inspect a lease on").await?;
    let row = client
        .query_opt(
            &client
                .prepare_cached(&shared.sql.inspect)
                .await
                .map_err(|e| pg_error("prepare a statement on", shared.target(), e))?,
            &[&key.key],
        )
        .await
        .map_err(|e| pg_error("inspect a lease on", shared.target(), e))?;
    Ok(row.as_ref().and_then(|r| inspection(shared, r)))
}

/// The `Timeout` of a statement that waited for a row lock too long.
fn busy(shared: &Shared, key: &PgKey, e: tokio_postgres::Error, op: &'static str) -> Error {
    if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        return Error::Timeout {
            timeout_ms: u64::try_from(shared.cfg.lock_timeout.as_millis()).unwrap_or(u64::MAX),
            holder: Box::new(Holder::unknown(PathBuf::from(&key.locator))),
        };
    }
    if e.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) {
        return Error::EpochExhausted {
            path: PathBuf::from(&key.locator),
            epoch: u64::MAX,
        };
    }
    pg_error(op, shared.target(), e)
}

/// Publishes a lease: a fresh one, or over the lock `reclaim` inspected.
async fn grant(
    shared: Arc<Shared>,
    key: PgKey,
    req: LeaseRequest,
    reclaim: Option<PgVersion>,
) -> Result<Outcome<PgLease, PgVersion>, Error> {
    let (live_lock, gen) = shared.live().await?;
    let client = shared.client("acquire a lease on").await?;
    let token = random_hex();
    let sent = Instant::now();
    let max_hold = ms(req.max_hold);
    let pid = i32::try_from(req.me.pid).unwrap_or(i32::MAX);
    let starttime = req.me.starttime.and_then(|s| i64::try_from(s).ok());
    let version = reclaim.map(|v| v.version);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &key.key,
        &token,
        &pid,
        &starttime,
        &req.me.hostname,
        &req.me.boot_id,
        &shared.client_id,
        &req.lane,
        &req.run_id,
        &live_lock,
        &max_hold,
    ];
    let sql = match &version {
        Some(v) => {
            params.push(v);
            &shared.sql.reclaim
        }
        None => &shared.sql.grant,
    };
    let op = if reclaim.is_some() {
        "reclaim a lease on"
    } else {
        "acquire a lease on"
    };
    let statement = client
        .prepare_cached(sql)
        .await
        .map_err(|e| pg_error("prepare a statement on", shared.target(), e))?;
    let row = client
        .query_opt(&statement, &params)
        .await
        .map_err(|e| busy(&shared, &key, e, op))?;
    let Some(row) = row else {
        return Ok(Outcome::Changed);
    };
    // A reclaim returns (epoch, version, grant time); a grant returns
    // whether it granted, those three, then the lock's inspection.
    let first = if reclaim.is_some() {
        0
    } else {
        if !row.get::<_, bool>(0) {
            return Ok(match inspection_at(&shared, &row, 4) {
                Some(seen) => Outcome::Busy(Box::new(seen)),
                None => Outcome::Changed,
            });
        }
        1
    };
    let epoch = to_u64(row.get(first));
    let granted: SystemTime = row.get(first + 2);
    let mut payload = Payload::default();
    payload.pid = Some(req.me.pid);
    payload.created_at = Some(granted);
    payload.max_hold_ms = u64::try_from(max_hold).ok();
    payload.starttime = req.me.starttime;
    payload.owner = Some("sessionlock".to_owned());
    payload.token = Some(token.clone());
    payload.epoch = Some(epoch);
    payload.hostname = Some(req.me.hostname.clone());
    payload.boot_id = req.me.boot_id.clone();
    payload.lane = req.lane.clone();
    payload.run_id = req.run_id.clone();
    Ok(Outcome::Acquired(PgLease(Arc::new(LeaseInner {
        shared: shared.clone(),
        key,
        gen,
        cur: Mutex::new(Cur {
            epoch,
            token,
            payload,
            deadline: sent + req.max_hold,
        }),
    }))))
}

/// Gives back a lease nobody will hold (its acquirer went away).
async fn give_back(outcome: Outcome<PgLease, PgVersion>) {
    if let Outcome::Acquired(lease) = outcome {
        if let Err(e) = release(&lease.0).await {
            tracing::warn!(
                target: "sessionlock::postgres",
                lock = %std::path::Path::new(&lease.0.key.locator).display(),
                error = %e,
                "cannot give back a lease whose acquirer went away; it ends at its expiry"
            );
        }
    }
}

async fn release(lease: &LeaseInner) -> Result<bool, Error> {
    let shared = &lease.shared;
    let (epoch, token) = lease.epoch_token();
    let client = shared.lazy_client("release a lease on").await?;
    let row = client
        .query_opt(
            &client
                .prepare_cached(&shared.sql.release)
                .await
                .map_err(|e| pg_error("prepare a statement on", shared.target(), e))?,
            &[&lease.key.key, &to_i64(epoch), &token],
        )
        .await
        .map_err(|e| pg_error("release a lease on", shared.target(), e))?;
    Ok(row.is_some())
}

impl LockBackend for PgBackend {
    type Name = str;
    type Key = PgKey;
    type Version = PgVersion;
    type Lease = PgLease;
    type Watch = PgWatch;
    type Scope = str;
    const NAME: &'static str = "postgres";

    fn key(&self, name: &str) -> Result<PgKey, Error> {
        self.key_of(name)
    }

    fn try_acquire(
        &self,
        key: &PgKey,
        req: &LeaseRequest,
        _deadline: Option<Instant>,
    ) -> impl std::future::Future<Output = Result<Outcome<PgLease, PgVersion>, Error>> + Send {
        // The server bounds the wait for the row (lock_timeout); a client
        // timeout could leave a granted lease behind.
        run_undo(
            grant(self.shared.clone(), key.clone(), req.clone(), None),
            give_back,
        )
    }

    fn inspect(
        &self,
        key: &PgKey,
    ) -> impl std::future::Future<Output = Result<Option<Inspection<PgVersion>>, Error>> + Send
    {
        let (s, k) = (self.shared.clone(), key.clone());
        run(async move { inspect(&s, &k).await })
    }

    fn reclaim(
        &self,
        key: &PgKey,
        seen: &Inspection<PgVersion>,
        req: &LeaseRequest,
        _deadline: Option<Instant>,
    ) -> impl std::future::Future<Output = Result<Outcome<PgLease, PgVersion>, Error>> + Send {
        run_undo(
            grant(
                self.shared.clone(),
                key.clone(),
                req.clone(),
                Some(seen.version),
            ),
            give_back,
        )
    }

    fn remove_if_unchanged(
        &self,
        key: &PgKey,
        seen: &Inspection<PgVersion>,
        _deadline: Option<Instant>,
    ) -> impl std::future::Future<Output = Result<bool, Error>> + Send {
        let (s, k, v) = (self.shared.clone(), key.clone(), seen.version.version);
        run(async move {
            let client = s.client("remove a lease on").await?;
            let row = client
                .query_opt(
                    &client
                        .prepare_cached(&s.sql.remove)
                        .await
                        .map_err(|e| pg_error("prepare a statement on", s.target(), e))?,
                    &[&k.key, &v],
                )
                .await
                .map_err(|e| busy(&s, &k, e, "remove a lease on"))?;
            if row.is_some() {
                tracing::info!(
                    target: "sessionlock::reclaim",
                    lock = %std::path::Path::new(&k.locator).display(),
                    "removed stale session lock"
                );
            }
            Ok(row.is_some())
        })
    }

    fn list(
        &self,
        scope: &str,
    ) -> impl std::future::Future<Output = Result<Vec<Listed<PgKey, PgVersion>>, Error>> + Send
    {
        let (s, prefix) = (self.shared.clone(), scope.to_owned());
        run(async move {
            let client = s.client("list leases on").await?;
            let rows = client
                .query(
                    &client
                        .prepare_cached(&s.sql.list)
                        .await
                        .map_err(|e| pg_error("prepare a statement on", s.target(), e))?,
                    &[&prefix],
                )
                .await
                .map_err(|e| pg_error("list leases on", s.target(), e))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let name: String = row.get(0);
                let listed = match (PgKey::new(&s, &name), inspection(&s, row)) {
                    (Ok(key), Some(seen)) => Listed::Lock {
                        key,
                        inspection: Box::new(seen),
                    },
                    (Err(error), _) => Listed::Unreadable {
                        locator: OsString::from(format!("postgres://{}/{}", s.target(), name)),
                        error,
                    },
                    (Ok(_), None) => continue,
                };
                out.push(listed);
            }
            out.sort_by(|a, b| a.locator().cmp(b.locator()));
            Ok(out)
        })
    }

    // The deadline is not applied: every statement is bounded by the
    // backend's statement timeout (design §17.1), and cutting one short would
    // leave it unknown whether it ran.
    fn release(
        &self,
        lease: &PgLease,
        _deadline: Option<std::time::Instant>,
    ) -> impl std::future::Future<Output = Result<bool, Error>> + Send {
        let lease = self.lease_ref(lease);
        run(async move { release(&lease).await })
    }

    fn republish(
        &self,
        lease: &PgLease,
        req: &LeaseRequest,
        new_epoch: bool,
        _deadline: Option<std::time::Instant>,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send {
        let lease = self.lease_ref(lease);
        let req = req.clone();
        run(async move {
            lease.local_check()?;
            let s = &lease.shared;
            let (epoch, old_token) = lease.epoch_token();
            let client = s.client("extend a lease on").await?;
            let token = random_hex();
            let sent = Instant::now();
            let max_hold = ms(req.max_hold);
            let pid = i32::try_from(req.me.pid).unwrap_or(i32::MAX);
            let starttime = req.me.starttime.and_then(|s| i64::try_from(s).ok());
            let (live_lock, _) = s.live().await?;
            let row = client
                .query_opt(
                    &client
                        .prepare_cached(&s.sql.republish)
                        .await
                        .map_err(|e| pg_error("prepare a statement on", s.target(), e))?,
                    &[
                        &lease.key.key,
                        &token,
                        &pid,
                        &starttime,
                        &req.me.hostname,
                        &req.me.boot_id,
                        &s.client_id,
                        &req.lane,
                        &req.run_id,
                        &live_lock,
                        &max_hold,
                        &to_i64(epoch),
                        &old_token,
                        &new_epoch,
                    ],
                )
                .await
                .map_err(|e| busy(s, &lease.key, e, "extend a lease on"))?;
            let Some(row) = row else {
                return Err(lease.refusal(&client).await);
            };
            let epoch = to_u64(row.get(0));
            let granted: SystemTime = row.get(2);
            let mut cur = locked(&lease.cur);
            cur.epoch = epoch;
            cur.token = token.clone();
            cur.deadline = sent + req.max_hold;
            cur.payload.created_at = Some(granted);
            cur.payload.epoch = Some(epoch);
            cur.payload.token = Some(token);
            cur.payload.max_hold_ms = u64::try_from(max_hold).ok();
            cur.payload.lane = req.lane.clone();
            cur.payload.run_id = req.run_id.clone();
            Ok(())
        })
    }

    fn revoke(
        &self,
        lease: &PgLease,
    ) -> impl std::future::Future<Output = Result<u64, Error>> + Send {
        let lease = self.lease_ref(lease);
        run(async move {
            let s = lease.shared.clone();
            let (epoch, _) = lease.epoch_token();
            let work = async {
                let client = s.client("revoke a lease on").await?;
                let row = client
                    .query_opt(
                        &client
                            .prepare_cached(&s.sql.revoke)
                            .await
                            .map_err(|e| pg_error("prepare a statement on", s.target(), e))?,
                        &[&lease.key.key, &to_i64(epoch)],
                    )
                    .await
                    .map_err(|e| busy(&s, &lease.key, e, "revoke a lease on"))?;
                match row {
                    Some(r) => Ok(to_u64(r.get(0))),
                    // Already fenced out by a newer epoch: nothing to
                    // change (a newer holder's row is left alone).
                    None => {
                        let st = client
                            .prepare_cached(&s.sql.state)
                            .await
                            .map_err(|e| pg_error("prepare a statement on", s.target(), e))?;
                        let now = client
                            .query_opt(&st, &[&lease.key.key])
                            .await
                            .map_err(|e| pg_error("revoke a lease on", s.target(), e))?;
                        Ok(now.map_or(epoch, |r| to_u64(r.get(0))))
                    }
                }
            };
            match tokio::time::timeout(REVOKE_BOUND, work).await {
                Ok(r) => r,
                Err(_) => Err(Error::Backend {
                    op: "revoke a lease on",
                    target: s.target().to_owned(),
                    source: format!("no answer within {REVOKE_BOUND:?}; the lease still ends at its expiry on the server's clock").into(),
                }),
            }
        })
    }

    fn current_epoch(
        &self,
        lease: &PgLease,
    ) -> impl std::future::Future<Output = Result<u64, Error>> + Send {
        let lease = self.lease_ref(lease);
        run(async move {
            let s = &lease.shared;
            let client = s.client("read the epoch on").await?;
            let row = client
                .query_opt(
                    &client
                        .prepare_cached(&s.sql.state)
                        .await
                        .map_err(|e| pg_error("prepare a statement on", s.target(), e))?,
                    &[&lease.key.key],
                )
                .await
                .map_err(|e| pg_error("read the epoch on", s.target(), e))?;
            Ok(row.map_or(0, |r| to_u64(r.get(0))))
        })
    }

    fn check(
        &self,
        lease: &PgLease,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send {
        let lease = self.lease_ref(lease);
        run(async move {
            lease.local_check()?;
            let client = lease.shared.client("check a lease on").await?;
            lease.state(&client).await
        })
    }

    async fn fenced<T>(&self, lease: &PgLease, f: impl FnOnce() -> T) -> Result<T, Error> {
        lease.0.local_check()?;
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel::<Result<(), Error>>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<bool>();
        let lease_ref = self.lease_ref(lease);
        let started = crate::rt::runtime().map(|rt| {
            rt.spawn(async move {
                let s = lease_ref.shared.clone();
                let mut client = match s.lazy_client("fence a write on").await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = locked_tx.send(Err(e));
                        return;
                    }
                };
                let tx = match client.transaction().await {
                    Ok(tx) => tx,
                    Err(e) => {
                        let _ = locked_tx.send(Err(pg_error("fence a write on", s.target(), e)));
                        return;
                    }
                };
                let (epoch, token) = lease_ref.epoch_token();
                let row = match tx.prepare_cached(&s.sql.fence_share).await {
                    Ok(st) => {
                        tx.query_opt(&st, &[&lease_ref.key.key, &to_i64(epoch), &token])
                            .await
                    }
                    Err(e) => Err(e),
                };
                let locked = match row {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(lease_ref.refusal(&tx).await),
                    Err(e) => Err(busy(&s, &lease_ref.key, e, "fence a write on")),
                };
                let ok = locked.is_ok();
                if locked_tx.send(locked).is_ok() && ok {
                    // The row stays locked (reclaims and revocations wait)
                    // until the caller's closure returns.
                    let _ = done_rx.await;
                }
                let _ = ended_tx.send(tx.commit().await.is_ok());
            })
        });
        started?;
        locked_rx.await.map_err(|_| Error::Backend {
            op: "fence a write on",
            target: self.target().to_owned(),
            source: "the backend's task ended without an answer".into(),
        })??;
        let out = f();
        let _ = done_tx.send(());
        // The row lock held only if the transaction lasted until now: the
        // server ends one left idle past idle_in_transaction_session_timeout
        // (10 s by default), and then a reclaim may have run beside `f`.
        if ended_rx.await != Ok(true) {
            return Err(Error::Backend {
                op: "fence a write on",
                target: self.target().to_owned(),
                source: "the fence did not hold until the closure returned (it ran longer than the server keeps an idle transaction, or the connection was lost): treat its work as unfenced".into(),
            });
        }
        Ok(out)
    }

    fn info(lease: &PgLease) -> LeaseInfo<PgKey> {
        let c = lease.0.cur();
        LeaseInfo {
            key: lease.0.key.clone(),
            payload: c.payload,
            epoch: c.epoch,
        }
    }

    fn watch(
        &self,
        key: &PgKey,
    ) -> impl std::future::Future<Output = Result<PgWatch, Error>> + Send {
        let (s, k) = (self.shared.clone(), key.key.clone());
        run(async move { Ok(listen::watch(&s, &k).await) })
    }

    fn queue(
        &self,
        key: &PgKey,
        watch: &mut PgWatch,
        req: &LeaseRequest,
        deadline: Option<Instant>,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send {
        // No line is kept (whoever looks first after a release wins): the
        // row, written once the waiter has waited a while, only lets others
        // see who waits (design §17.2).
        if watch.waiter.is_none() {
            sessionlock::observe::backend_queued(
                Self::NAME,
                sessionlock::backend::SessionId::session(key),
                req.lane.as_deref(),
                req.run_id.as_deref(),
                None,
            );
            watch.waiter = Some(crate::waiters::Queued::new(
                key.key.clone(),
                req.clone(),
                deadline,
            ));
        }
        async { Ok(()) }
    }

    fn wait_blocking(
        &self,
        watch: &mut PgWatch,
        holder: Option<&Inspection<PgVersion>>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let (s, lock) = (self.shared.clone(), holder_lock(holder));
        if let Some(q) = &watch.waiter {
            q.write_if_due(&s);
        }
        let mut w = watch.take();
        let w = block(async move {
            listen::wait(&s, &mut w, lock, timeout).await;
            w
        })?;
        *watch = w;
        Ok(())
    }

    fn wait(
        &self,
        watch: &mut PgWatch,
        holder: Option<&Inspection<PgVersion>>,
        timeout: Option<Duration>,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send {
        let (s, lock) = (self.shared.clone(), holder_lock(holder));
        if let Some(q) = &watch.waiter {
            q.write_if_due(&s);
        }
        let mut w = watch.take();
        let done = run(async move {
            listen::wait(&s, &mut w, lock, timeout).await;
            Ok(w)
        });
        async move {
            *watch = done.await?;
            Ok(())
        }
    }
}

/// The liveness lock of a holder found alive: what a death watch waits on.
fn holder_lock(holder: Option<&Inspection<PgVersion>>) -> Option<i64> {
    holder
        .filter(|h| h.liveness == Liveness::Alive)
        .and_then(|h| h.version.live_lock)
}

impl PgBackend {
    /// The inside of a lease, for the backend's tasks (the seam lends the
    /// lease by reference; a task outlives the borrow).
    fn lease_ref(&self, lease: &PgLease) -> Arc<LeaseInner> {
        lease.inner()
    }
}

impl StoreBackend for PgBackend {
    type Store = PgStore;

    fn open_store(
        &self,
        key: &PgKey,
    ) -> impl std::future::Future<Output = Result<PgStore, Error>> + Send {
        let store = PgStore::new(self.shared.clone(), key.clone());
        async move { Ok(store) }
    }
}

/// Used by the store: the lease inside a guard's loan.
pub(crate) fn lease_of(held: &Held<PgLease>) -> Arc<LeaseInner> {
    held.lease().inner()
}
