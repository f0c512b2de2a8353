//! Transcripts on the server: [`TranscriptStore`] for PostgreSQL.
//!
//! Entries are rows of `<schema>.entries` in a gapless per-session
//! sequence. Every mutation locks the session's lease row and checks the
//! lease's epoch, holder and expiry in the same statement or transaction
//! as the change, so a reclaim (which updates that row) either waits for
//! the write to commit or makes it insert nothing. Offsets and ranges the
//! store reports ([`Appended`], [`Change::Benign`], takeover offsets) are
//! in bytes of the transcript as JSONL (each entry's line and its newline),
//! as for every store; the lease row keeps the size.
//!
//! Appends are idempotent: each carries a random batch id, and a retry
//! after a connection lost during COMMIT first asks whether the batch
//! landed. Durability is the server's (`synchronous_commit`): every
//! acknowledged append is as durable as the server makes a commit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sessionlock::backend::{Held, TranscriptStore};
use sessionlock::classify::ChangeClassifier;
use sessionlock::store::{Appended, Change, Durability, RawEntries, Read, Takeover, TornTail};
use sessionlock::Error;

use crate::conn::{pg_error, random_hex, Shared};
use crate::lease::{lease_of, LeaseInner, PgLease};
use crate::rt::run;
use crate::{PgBackend, PgKey};

/// A session's transcript on the server.
#[derive(Debug, Clone)]
pub struct PgStore {
    shared: Arc<Shared>,
    key: PgKey,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("server", &self.cfg.target())
            .finish_non_exhaustive()
    }
}

/// What a fence snapshot of a PostgreSQL transcript records: one read of
/// the lease row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSnapshot {
    /// The session epoch it was taken for.
    pub epoch: u64,
    /// The next sequence number (the number of entries, gapless).
    pub next_seq: i64,
    /// The transcript's size in bytes, as JSONL.
    pub bytes: i64,
    /// How many in-place edits, deletions and rewrites there have been.
    pub edits: i64,
    /// The sum of the entries' hashes (with their sequence), mod 2^64.
    pub digest: String,
}

impl PgStore {
    pub(crate) fn new(shared: Arc<Shared>, key: PgKey) -> PgStore {
        PgStore { shared, key }
    }

    /// The session.
    pub fn key(&self) -> &PgKey {
        &self.key
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(self.key.locator.clone())
    }

    /// The lease of a loan, if it is this session's and usable here.
    fn lease(&self, held: &Held<PgLease>) -> Result<Arc<LeaseInner>, Error> {
        if held.inside_fence() {
            return Err(Error::Misuse {
                what: "a PostgreSQL transcript cannot be written from inside Guard::with_fence: \
                       the store fences each write itself; write outside the closure"
                    .to_owned(),
            });
        }
        let lease = lease_of(held);
        if lease.key() != &self.key {
            return Err(Error::InvalidPath {
                path: self.path(),
                reason: format!("the lease is of another session ({})", lease.key().as_str()),
            });
        }
        lease.local_check()?;
        Ok(lease)
    }
}

/// The lines of a batch, as text.
fn lines(entries: &RawEntries, path: &std::path::Path) -> Result<Vec<String>, Error> {
    entries
        .as_bytes()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            String::from_utf8(l.to_vec()).map_err(|e| Error::InvalidEntry {
                path: path.to_owned(),
                offset: 0,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// A try after one whose outcome is unknown, in one transaction: the
/// lease row is locked first, which waits for the earlier try if the
/// server still runs it; only then (a new statement, so a new snapshot)
/// is its batch looked for, and the entries are inserted only if it is
/// absent and the lease still stands. So the batch lands once at most.
async fn retry(
    lease: &LeaseInner,
    client: &mut deadpool_postgres::Object,
    lines: &[String],
    batch: &str,
    n: u64,
) -> Result<Result<Appended, Error>, tokio_postgres::Error> {
    let s = lease.shared();
    let key = lease.key().as_str();
    let (epoch, token) = lease.epoch_token();
    let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
    let tx = client.transaction().await?;
    let st = tx.prepare_cached(&s.sql.lock_for_retry).await?;
    let row = tx.query_opt(&st, &[&key, &epoch, &token]).await?;
    let st = tx.prepare_cached(&s.sql.batch_landed).await?;
    if let Some(landed) = tx.query_opt(&st, &[&key, &batch]).await? {
        let before: i64 = landed.get(1);
        tx.commit().await?;
        return Ok(Ok(Appended {
            offset: u64::try_from(before).unwrap_or(0),
            len: n,
        }));
    }
    let Some(row) = row else {
        return Ok(Err(lease.refusal(&tx).await));
    };
    if !row.get::<_, bool>(3) {
        return Ok(Err(lease.refusal(&tx).await));
    }
    if let Err(e) = lease.local_check() {
        return Ok(Err(e));
    }
    let (id, next, before): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if !lines.is_empty() {
        let st = tx.prepare_cached(&s.sql.insert_at).await?;
        tx.execute(&st, &[&id, &next, &lines, &batch]).await?;
    }
    tx.commit().await?;
    Ok(Ok(Appended {
        offset: u64::try_from(before).unwrap_or(0),
        len: n,
    }))
}

/// Whether an error means the connection went away, so a COMMIT may or may
/// not have happened: no answer from the server, or a fatal one (the
/// server ended the session: an administrator, a shutdown, a crash).
fn ambiguous(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => {
            matches!(db.severity(), "FATAL" | "PANIC")
                || db.code().code().starts_with("57P")
                || db.code().code().starts_with("08")
        }
    }
}

/// How long an append whose outcome a lost connection left unknown keeps
/// asking the server (a restart, say) before it gives up.
pub const RESOLVE_BOUND: Duration = Duration::from_secs(15);

/// One try of an append: its outcome, or "unknown" (the connection went
/// away after the statement may have been sent).
enum Try {
    Done(Result<Appended, Error>),
    Unknown(String),
}

async fn append(lease: Arc<LeaseInner>, lines: Vec<String>) -> Result<Appended, Error> {
    let s = lease.shared().clone();
    let deadline = Instant::now() + RESOLVE_BOUND;
    let batch = random_hex();
    let mut pause = Duration::from_millis(50);
    let mut unsure = false;
    loop {
        match append_once(&lease, &lines, &batch, unsure).await {
            Try::Done(r) => return r,
            Try::Unknown(why) => {
                if Instant::now() >= deadline {
                    return Err(Error::Backend {
                        op: "append to a transcript on",
                        target: s.target().to_owned(),
                        source: format!(
                            "the connection was lost and for {RESOLVE_BOUND:?} the server could not be asked whether the entries landed (last: {why}); read the transcript before writing them again"
                        )
                        .into(),
                    });
                }
                if !unsure {
                    tracing::warn!(
                        target: "sessionlock::postgres",
                        error = %why,
                        "connection lost during an append; asking whether it landed"
                    );
                }
                unsure = true;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// One try. When `unsure`, an earlier try may have landed: ask first
/// (by its batch id), and insert only if it did not and the lease still
/// stands.
async fn append_once(lease: &LeaseInner, lines: &[String], batch: &str, unsure: bool) -> Try {
    let s = lease.shared();
    let key = lease.key().as_str();
    let (epoch, token) = lease.epoch_token();
    let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
    let n: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let unknown = |e: &dyn std::fmt::Display| Try::Unknown(e.to_string());
    let mut client = match s.client("append to a transcript on").await {
        Ok(c) => c,
        // Nothing was sent by this try: only an earlier one leaves doubt.
        Err(e) if unsure => return unknown(&e),
        Err(e) => return Try::Done(Err(e)),
    };
    let failed = |e: tokio_postgres::Error| {
        if ambiguous(&e) {
            unknown(&e)
        } else {
            Try::Done(Err(pg_error("append to a transcript on", s.target(), e)))
        }
    };
    if unsure {
        return match retry(lease, &mut client, lines, batch, n).await {
            Ok(done) => Try::Done(done),
            Err(e) => failed(e),
        };
    }
    if lines.is_empty() {
        return Try::Done(match lease.state(&client).await {
            Ok(()) => counters(s, lease.key()).await.map(|c| Appended {
                offset: u64::try_from(c.bytes).unwrap_or(0),
                len: 0,
            }),
            Err(e) => Err(e),
        });
    }
    let rows = match client.prepare_cached(&s.sql.append).await {
        Ok(st) => {
            client
                .query(&st, &[&key, &epoch, &token, &lines, &batch])
                .await
        }
        Err(e) => Err(e),
    };
    match rows {
        Ok(rows) if rows.is_empty() => Try::Done(Err(lease.refusal(&client).await)),
        Ok(rows) => {
            // The size before the batch, the same on every row.
            let before: i64 = rows[0].get(1);
            Try::Done(Ok(Appended {
                offset: u64::try_from(before).unwrap_or(0),
                len: n,
            }))
        }
        Err(e) => failed(e),
    }
}

/// Replaces entries from `from` on with `lines` (all of them for a
/// rewrite), under the lease, in one transaction.
async fn replace(
    lease: Arc<LeaseInner>,
    from: i64,
    lines: Option<Vec<String>>,
) -> Result<(), Error> {
    let s = lease.shared().clone();
    let key = lease.key().clone();
    let (epoch, token) = lease.epoch_token();
    let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
    let fail = |e| pg_error("rewrite a transcript on", s.target(), e);
    let mut client = s.client("rewrite a transcript on").await?;
    let tx = client.transaction().await.map_err(fail)?;
    let Some(row) = tx
        .query_opt(
            &tx.prepare_cached(&s.sql.lock_for_write)
                .await
                .map_err(|e| pg_error("prepare a statement on", s.target(), e))?,
            &[&key.as_str(), &epoch, &token],
        )
        .await
        .map_err(fail)?
    else {
        let why = lease.refusal(&tx).await;
        return Err(why);
    };
    let id: i64 = row.get(0);
    match lines {
        Some(lines) => {
            tx.execute(
                &tx.prepare_cached(&s.sql.delete_all)
                    .await
                    .map_err(|e| pg_error("prepare a statement on", s.target(), e))?,
                &[&id],
            )
            .await
            .map_err(fail)?;
            if !lines.is_empty() {
                tx.execute(
                    &tx.prepare_cached(&s.sql.insert_at)
                        .await
                        .map_err(|e| pg_error("prepare a statement on", s.target(), e))?,
                    &[&id, &0i64, &lines, &random_hex()],
                )
                .await
                .map_err(fail)?;
            }
        }
        None => {
            tx.execute(
                &tx.prepare_cached(&s.sql.delete_from)
                    .await
                    .map_err(|e| pg_error("prepare a statement on", s.target(), e))?,
                &[&id, &from],
            )
            .await
            .map_err(fail)?;
        }
    }
    tx.commit().await.map_err(fail)
}

async fn counters(s: &Shared, key: &PgKey) -> Result<PgSnapshot, Error> {
    let client = s.client("read a transcript's state on").await?;
    let row = client
        .query_opt(
            &client
                .prepare_cached(&s.sql.counters)
                .await
                .map_err(|e| pg_error("prepare a statement on", s.target(), e))?,
            &[&key.as_str()],
        )
        .await
        .map_err(|e| pg_error("read a transcript's state on", s.target(), e))?;
    Ok(match row {
        Some(r) => PgSnapshot {
            next_seq: r.get(0),
            edits: r.get(1),
            digest: r.get(2),
            epoch: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            bytes: r.get(4),
        },
        None => PgSnapshot {
            epoch: 0,
            next_seq: 0,
            bytes: 0,
            edits: 0,
            digest: "0".to_owned(),
        },
    })
}

impl TranscriptStore<PgBackend> for PgStore {
    type Snapshot = PgSnapshot;

    fn append(
        &mut self,
        held: &Held<PgLease>,
        entries: &RawEntries,
        _durability: Durability,
    ) -> impl std::future::Future<Output = Result<Appended, Error>> + Send {
        let prepared = self
            .lease(held)
            .and_then(|lease| Ok((lease, lines(entries, &self.path())?)));
        async move {
            let (lease, lines) = prepared?;
            run(append(lease, lines)).await
        }
    }

    fn rewrite(
        &mut self,
        held: &Held<PgLease>,
        entries: &RawEntries,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send {
        let prepared = self
            .lease(held)
            .and_then(|lease| Ok((lease, lines(entries, &self.path())?)));
        async move {
            let (lease, lines) = prepared?;
            run(replace(lease, 0, Some(lines))).await
        }
    }

    fn truncate(
        &mut self,
        held: &Held<PgLease>,
        keep: usize,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send {
        let prepared = self.lease(held);
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        async move { run(replace(prepared?, keep, None)).await }
    }

    fn repair(
        &mut self,
        held: &Held<PgLease>,
    ) -> impl std::future::Future<Output = Result<Option<TornTail>, Error>> + Send {
        // Rows are whole or absent: there is never a torn tail to set aside.
        let prepared = self.lease(held);
        async move {
            let lease = prepared?;
            run(async move {
                let client = lease.shared().client("check a lease on").await?;
                lease.state(&client).await?;
                Ok(None)
            })
            .await
        }
    }

    fn read(&self) -> impl std::future::Future<Output = Result<Read, Error>> + Send {
        let (s, key, path) = (self.shared.clone(), self.key.clone(), self.path());
        run(async move {
            let client = s.client("read a transcript on").await?;
            let rows = client
                .query(
                    &client
                        .prepare_cached(&s.sql.all_entries)
                        .await
                        .map_err(|e| pg_error("prepare a statement on", s.target(), e))?,
                    &[&key.as_str()],
                )
                .await
                .map_err(|e| pg_error("read a transcript on", s.target(), e))?;
            let mut entries = Vec::with_capacity(rows.len());
            let mut offset = 0;
            for row in rows {
                let line: &str = row.get(1);
                let value: Value = serde_json::from_str(line).map_err(|e| Error::InvalidEntry {
                    path: path.clone(),
                    offset,
                    reason: e.to_string(),
                })?;
                entries.push(value);
                offset += line.len() as u64 + 1;
            }
            Ok(Read {
                entries,
                torn: None,
            })
        })
    }

    fn snapshot(
        &self,
        epoch: u64,
    ) -> impl std::future::Future<Output = Result<PgSnapshot, Error>> + Send {
        let (s, key) = (self.shared.clone(), self.key.clone());
        run(async move {
            let mut snap = counters(&s, &key).await?;
            snap.epoch = epoch;
            Ok(snap)
        })
    }

    fn check(
        &self,
        snapshot: &PgSnapshot,
        classifier: &dyn ChangeClassifier,
    ) -> impl std::future::Future<Output = Result<Change, Error>> + Send {
        let (s, key, snap) = (self.shared.clone(), self.key.clone(), snapshot.clone());
        let appended = run(async move {
            let now = counters(&s, &key).await?;
            let same = now.next_seq == snap.next_seq && now.digest == snap.digest;
            if now.edits != snap.edits {
                // Something was edited, deleted or rewritten in place: only a
                // byte-identical result is harmless.
                let kind = if same {
                    let size = u64::try_from(now.bytes).unwrap_or(0);
                    return Ok(Err(Change::Benign {
                        entries: Vec::new(),
                        range: size..size,
                    }));
                } else if now.next_seq == 0 && snap.next_seq > 0 {
                    Takeover::Deleted
                } else if now.next_seq < snap.next_seq {
                    Takeover::Truncated
                } else if now.next_seq == snap.next_seq {
                    Takeover::Edited
                } else {
                    Takeover::Replaced
                };
                return Ok(Err(Change::Takeover(kind)));
            }
            if same {
                return Ok(Err(Change::Unchanged));
            }
            if now.next_seq < snap.next_seq {
                return Ok(Err(Change::Takeover(Takeover::Truncated)));
            }
            let client = s.client("read a transcript on").await?;
            let rows = client
                .query(
                    &client
                        .prepare_cached(&s.sql.entries_from)
                        .await
                        .map_err(|e| pg_error("prepare a statement on", s.target(), e))?,
                    &[&key.as_str(), &snap.next_seq, &now.next_seq],
                )
                .await
                .map_err(|e| pg_error("read a transcript on", s.target(), e))?;
            let lines: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
            // A pure append accounts for every entry and byte the counters
            // gained; anything else (rows slipped in below the snapshot's
            // end, say) is not an append.
            let grown: i64 = lines.iter().map(|l| l.len() as i64 + 1).sum();
            let count = i64::try_from(lines.len()).unwrap_or(i64::MAX);
            if count != now.next_seq - snap.next_seq || grown != now.bytes - snap.bytes {
                return Ok(Err(Change::Takeover(Takeover::Edited)));
            }
            Ok(Ok((lines, snap.bytes)))
        });
        async move {
            let (lines, from) = match appended.await? {
                Err(change) => return Ok(change),
                Ok(found) => found,
            };
            let from = u64::try_from(from).unwrap_or(0);
            let mut offset = from;
            let mut entries = Vec::with_capacity(lines.len());
            for line in lines {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    return Ok(Change::Takeover(Takeover::IncompleteAppend { offset }));
                };
                if !classifier.is_benign(&value) {
                    return Ok(Change::Takeover(Takeover::ForeignEntry { offset }));
                }
                entries.push(value);
                offset += line.len() as u64 + 1;
            }
            Ok(Change::Benign {
                entries,
                range: from..offset,
            })
        }
    }
}
