//! The PostgreSQL backend of sessionlock
//! ([design §17](sessionlock::design#17-the-postgresql-backend)): one session
//! lock and one fenced transcript shared by processes on many machines.
//!
//! ```no_run
//! use sessionlock::{LockOptions, SessionLock};
//! use sessionlock_postgres::PgBackend;
//!
//! let backend = PgBackend::connect("postgres://gateway@db.internal/app")?;
//! let locks = SessionLock::with_backend(backend, LockOptions::from_env());
//! let guard = locks.acquire("agent:main:telegram:42")?;
//! // ... write the transcript through the guard ...
//! guard.release()?;
//! # Ok::<(), sessionlock::Error>(())
//! ```
//!
//! How it works (docs/design.md §17 has the protocol and its failure
//! analysis):
//! - **Lease rows are the truth.** One row per session key in
//!   `<schema>.leases`: the fencing epoch, the holder (host, pid, client id,
//!   lane, run), the grant time and the expiry, both on the server's clock.
//!   Rows are never deleted; the epoch only grows.
//! - **Liveness without pids.** Each process keeps one liveness connection
//!   holding a session-level advisory lock; a lease names that lock. When
//!   the connection ends (the process died, or the server cut it), the lock
//!   is gone and the lease is reclaimed at once; a holder that is alive but
//!   wedged, stopped or partitioned away loses its lease when it expires on
//!   the server's clock. Every reclaim bumps the epoch.
//! - **Fenced transcript.** Entries live in `<schema>.entries` in a gapless
//!   per-session sequence; an append locks the lease row and checks epoch,
//!   holder and expiry in the statement that inserts.
//! - **Waits without polling.** Releases and reclaims `NOTIFY`; one LISTEN
//!   connection per process wakes its waiters; a death watch wakes them
//!   when a holder's connection ends.
//!
//! Every operation runs on the backend's own small runtime, so the
//! blocking API, any async runtime and the watchdog's thread can all drive
//! it.

mod config;
mod conn;
mod lease;
mod listen;
mod rt;
mod schema;
mod sql;
mod store;
mod waiters;

use std::ffi::OsString;
use std::sync::Arc;

pub use config::{PgConfig, DEFAULT_SCHEMA};
pub use lease::{PgLease, PgVersion};
pub use listen::{PgWatch, RECHECK};
pub use schema::SCHEMA_VERSION;
use sessionlock::backend::SessionId;
use sessionlock::Error;
pub use store::{PgSnapshot, PgStore, RESOLVE_BOUND};

use conn::Shared;

/// The longest session key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// A session lock and transcript store on a PostgreSQL server.
///
/// Cheap to clone; every backend of one server and schema in a process
/// shares one connection pool, one liveness connection and one listener.
#[derive(Clone)]
pub struct PgBackend {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("server", &self.shared.cfg.target())
            .field("schema", &self.shared.cfg.schema_name())
            .finish()
    }
}

impl PgBackend {
    /// Connects to the server at `url` (`postgres://` or `postgresql://`;
    /// `?schema=NAME` picks the schema, default `sessionlock`), creating or
    /// migrating sessionlock's schema. Blocks until connected.
    ///
    /// # Errors
    /// `Backend` when the URL cannot be read, the server cannot be reached
    /// (the message names host and port, never the password), refuses the
    /// credentials, holds a schema of a newer version, or sits behind a
    /// transaction-pooling proxy.
    pub fn connect(url: &str) -> Result<PgBackend, Error> {
        let cfg = PgConfig::from_url(url)?;
        PgBackend::connect_with(url, cfg)
    }

    /// [`PgBackend::connect`] with a configuration of your own (made by
    /// [`PgConfig::from_url`] from the same `url`).
    ///
    /// # Errors
    /// As [`PgBackend::connect`].
    pub fn connect_with(url: &str, cfg: PgConfig) -> Result<PgBackend, Error> {
        let url = url.to_owned();
        rt::block(async move { Shared::get(&url, cfg).await })?.map(|shared| PgBackend { shared })
    }

    /// The async twin of [`PgBackend::connect`].
    ///
    /// # Errors
    /// As [`PgBackend::connect`].
    ///
    /// # Cancel safety
    /// Dropping the future leaves nothing behind but, possibly, a migrated
    /// schema.
    pub async fn connect_async(url: &str) -> Result<PgBackend, Error> {
        let cfg = PgConfig::from_url(url)?;
        let url = url.to_owned();
        let shared = rt::run(async move { Shared::get(&url, cfg).await }).await?;
        Ok(PgBackend { shared })
    }

    /// The server, as messages name it (`postgres HOST:PORT/DATABASE`).
    pub fn target(&self) -> &str {
        self.shared.cfg.target()
    }

    /// The schema of sessionlock's tables.
    pub fn schema(&self) -> &str {
        self.shared.cfg.schema_name()
    }

    /// This process's id on the server, as lease rows record it.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// The key of session `name`.
    ///
    /// # Errors
    /// `InvalidPath` for an empty key, one longer than
    /// [`MAX_KEY_BYTES`], or one with a NUL byte.
    pub fn key_of(&self, name: &str) -> Result<PgKey, Error> {
        PgKey::new(&self.shared, name)
    }
}

/// A session's key on a PostgreSQL server: the name itself (any string of
/// at most [`MAX_KEY_BYTES`] bytes without NUL), with its locator
/// `postgres://HOST:PORT/DATABASE/SCHEMA/KEY` for people and logs.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PgKey {
    key: String,
    session: OsString,
    locator: OsString,
}

impl PgKey {
    fn new(shared: &Shared, name: &str) -> Result<PgKey, Error> {
        let invalid = |reason: String| Error::InvalidPath {
            path: shown_key(name).into(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("a session key cannot be empty".to_owned()));
        }
        if name.len() > MAX_KEY_BYTES {
            return Err(invalid(format!(
                "a session key is at most {MAX_KEY_BYTES} bytes; this one is {}",
                name.len()
            )));
        }
        if name.contains('\0') {
            return Err(invalid(
                "a session key cannot contain a NUL byte".to_owned(),
            ));
        }
        let base = shared.cfg.target().trim_start_matches("postgres ");
        Ok(PgKey {
            key: name.to_owned(),
            session: name.into(),
            locator: format!("postgres://{base}/{}/{name}", shared.cfg.schema_name()).into(),
        })
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.key
    }
}

/// A key as an error may show it: at most 80 bytes, NULs made visible.
fn shown_key(name: &str) -> String {
    let mut out: String = name.chars().take(80).collect();
    if out.len() < name.len() {
        out.push('…');
    }
    out.replace('\0', "\\0")
}

impl SessionId for PgKey {
    fn session(&self) -> &std::ffi::OsStr {
        &self.session
    }

    fn locator(&self) -> &std::ffi::OsStr {
        &self.locator
    }
}
