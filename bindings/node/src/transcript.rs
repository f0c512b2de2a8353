//! The fenced transcript store: `Transcript` in JavaScript.
//!
//! A transcript is opened on a backend by session name; its mutations take
//! a `Lock` of the same session on the same backend and land only while
//! that lock owns the session (the library's store runs the epoch check and
//! the write as one unit). Entries cross as JSON text: JavaScript
//! stringifies each entry, and reads parse one JSON document.

use std::sync::Arc;

use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;
use serde_json::{json, Value};
use sessionlock::store::{Appended, Durability, RawEntries, TornTail};
use sessionlock::{Error, FileBackend, LockBackend, SessionId, StoreBackend, TranscriptStore};
use sessionlock_postgres::PgBackend;
use tokio::sync::Mutex;

use crate::backend::{store_op, Backend, Kind};
use crate::errors::misuse;
use crate::lock::{Cell, NativeLock, Op};
use crate::promise;

/// The store of either backend.
enum AnyStore {
    File(Arc<Mutex<<FileBackend as StoreBackend>::Store>>),
    Pg(Arc<Mutex<<PgBackend as StoreBackend>::Store>>),
}

/// An open transcript.
#[napi]
pub struct NativeTranscript {
    store: AnyStore,
    session: String,
}

/// Opens the transcript of `session` on `backend`.
#[napi(ts_return_type = "Promise<NativeTranscript>")]
pub fn open_transcript<'env>(
    env: &'env Env,
    session: String,
    backend: Option<String>,
) -> napi::Result<PromiseRaw<'env, NativeTranscript>> {
    promise(env, async move {
        match Backend::open(backend.as_deref()).await? {
            Backend::File(locks) => {
                let key = locks.backend().key(std::path::Path::new(&session))?;
                let store = locks.backend().open_store(&key).await?;
                Ok(NativeTranscript {
                    session: key.session().to_string_lossy().into_owned(),
                    store: AnyStore::File(Arc::new(Mutex::new(store))),
                })
            }
            Backend::Pg(locks) => {
                let key = locks.backend().key(session.as_str())?;
                let store = locks.backend().open_store(&key).await?;
                Ok(NativeTranscript {
                    session: key.session().to_string_lossy().into_owned(),
                    store: AnyStore::Pg(Arc::new(Mutex::new(store))),
                })
            }
        }
    })
}

/// Entries from their JSON texts, each one JSON value.
pub(crate) fn entries(lines: &[String]) -> Result<RawEntries, Error> {
    let mut raw = RawEntries::new();
    for (i, l) in lines.iter().enumerate() {
        raw.push(l.as_bytes())
            .map_err(|e| misuse(format!("entry {i} is not one JSON value: {e}")))?;
    }
    Ok(raw)
}

/// `none`, `data` or `full`.
pub(crate) fn durability(d: Option<&str>) -> Result<Durability, Error> {
    Ok(match d {
        None | Some("none") => Durability::None,
        Some("data") => Durability::Data,
        Some("full") => Durability::Full,
        Some(other) => {
            return Err(misuse(format!(
                "durability must be \"none\", \"data\" or \"full\", not {other:?}"
            )))
        }
    })
}

/// A torn tail as JSON for JavaScript.
pub(crate) fn torn_json(t: &TornTail) -> Value {
    json!({
        "offset": t.offset,
        "len": t.len,
        "savedTo": t.saved_to.as_ref().map(|p| p.to_string_lossy().into_owned()),
    })
}

/// The lock of `lock` on the backend of `store`, for the same session.
fn same<B: Kind>(
    cell: Option<Arc<Cell<B>>>,
    session: &str,
    what: &str,
) -> Result<Arc<Cell<B>>, Error> {
    let cell = cell.ok_or_else(|| {
        misuse(format!(
            "{what}: the lock is on another backend than the transcript"
        ))
    })?;
    if cell.session() != session {
        return Err(misuse(format!(
            "{what}: the lock is of session {}, the transcript is {session}",
            cell.session()
        )));
    }
    Ok(cell)
}

/// One mutation, generic over the backend.
enum Write {
    Append(RawEntries, Durability),
    Rewrite(RawEntries),
    Truncate(usize),
    Repair,
}

async fn write<B: Kind>(op: Op<B>, store: Arc<Mutex<B::Store>>, w: Write) -> Result<Value, Error> {
    store_op::<B, _>(async move {
        let mut st = store.lock().await;
        let g = op.guard();
        let out = async {
            Ok(match w {
                Write::Append(e, d) => {
                    let Appended { offset, len } = g.store_append(&mut st, &e, d).await?;
                    json!({"offset": offset, "len": len})
                }
                Write::Rewrite(e) => {
                    g.store_rewrite(&mut st, &e).await?;
                    Value::Null
                }
                Write::Truncate(keep) => {
                    g.store_truncate(&mut st, keep).await?;
                    Value::Null
                }
                Write::Repair => match g.store_repair(&mut st).await? {
                    Some(t) => torn_json(&t),
                    None => Value::Null,
                },
            })
        }
        .await;
        drop(op);
        out
    })
    .await
}

async fn read<B: Kind>(store: Arc<Mutex<B::Store>>) -> Result<String, Error> {
    store_op::<B, _>(async move {
        let st = store.lock().await;
        let r = st.read().await?;
        Ok(json!({
            "entries": r.entries,
            "torn": r.torn.as_ref().map(torn_json),
        })
        .to_string())
    })
    .await
}

#[napi]
impl NativeTranscript {
    /// The session: canonical path, or key on PostgreSQL.
    #[napi(getter)]
    pub fn session(&self) -> String {
        self.session.clone()
    }

    /// Runs mutation `w` under `lock`; resolves with its result as JSON.
    fn mutate<'env>(
        &self,
        env: &'env Env,
        lock: &NativeLock,
        what: &'static str,
        w: impl FnOnce() -> Result<Write, Error> + Send + 'static,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        let session = self.session.clone();
        match &self.store {
            // The lock's share is taken now, at the call, so that a
            // `release()` called after it waits for the write.
            AnyStore::File(s) => {
                let (s, op) = (
                    s.clone(),
                    same(lock.file(), &session, what).and_then(|c| c.op(what)),
                );
                promise(
                    env,
                    async move { Ok(write(op?, s, w()?).await?.to_string()) },
                )
            }
            AnyStore::Pg(s) => {
                let (s, op) = (
                    s.clone(),
                    same(lock.pg(), &session, what).and_then(|c| c.op(what)),
                );
                promise(
                    env,
                    async move { Ok(write(op?, s, w()?).await?.to_string()) },
                )
            }
        }
    }

    /// Appends entries (JSON texts) under `lock`: `{"offset", "len"}`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn append<'env>(
        &self,
        env: &'env Env,
        lock: &NativeLock,
        lines: Vec<String>,
        durability: Option<String>,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        self.mutate(env, lock, "append", move || {
            Ok(Write::Append(
                entries(&lines)?,
                self::durability(durability.as_deref())?,
            ))
        })
    }

    /// Replaces the transcript with entries (JSON texts) under `lock`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn rewrite<'env>(
        &self,
        env: &'env Env,
        lock: &NativeLock,
        lines: Vec<String>,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        self.mutate(env, lock, "rewrite", move || {
            Ok(Write::Rewrite(entries(&lines)?))
        })
    }

    /// Keeps the first `keep` entries, under `lock`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn truncate<'env>(
        &self,
        env: &'env Env,
        lock: &NativeLock,
        keep: u32,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        self.mutate(env, lock, "truncate", move || {
            Ok(Write::Truncate(keep as usize))
        })
    }

    /// Sets a torn final line aside, under `lock`: the torn tail as JSON, or
    /// `null`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn repair<'env>(
        &self,
        env: &'env Env,
        lock: &NativeLock,
    ) -> napi::Result<PromiseRaw<'env, String>> {
        self.mutate(env, lock, "repair", || Ok(Write::Repair))
    }

    /// Every complete entry and the torn tail: `{"entries", "torn"}` JSON.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn read<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, String>> {
        match &self.store {
            AnyStore::File(s) => promise(env, read::<FileBackend>(s.clone())),
            AnyStore::Pg(s) => promise(env, read::<PgBackend>(s.clone())),
        }
    }
}
