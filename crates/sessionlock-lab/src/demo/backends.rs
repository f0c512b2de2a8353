//! The two backends the demo runs on, behind one small trait: how a lane
//! names a session, builds its `SessionLock`, and makes a foreign write.
//!
//! - Files: session `k` is `sessions/s<k>.jsonl` in the run directory (or
//!   the same file through the `alias` symlink); a foreign write is an
//!   append through sessionlock's transcript by another lock holder.
//! - PostgreSQL: session `k` is the key `<prefix>/s<k>`, the prefix naming
//!   the run (`demo-<seed>-<pid>`), so runs never share rows; a foreign
//!   write is a plain SQL `INSERT` of an entry row (design.md §17),
//!   taken under the session's lock so it lands inside the target's prompt
//!   window and nobody else's hold.

use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::Value;
use sessionlock::fs::Fs;
use sessionlock::transcript::{Durability, Transcript};
use sessionlock::{FileBackend, Guard, LockOptions, SessionLock, StoreBackend};
use sessionlock_postgres::PgBackend;

use super::lanes::Shared;

/// A backend the demo's lanes run on.
pub(super) trait DemoBackend: StoreBackend + Clone + Send + Sync + 'static {
    /// A session's name, owned.
    type Session: AsRef<Self::Name> + Clone + Send + Sync + 'static;

    /// A lock manager; `fs` (files only) is the file system its lock and
    /// fence go through.
    fn locks(&self, fs: Option<Arc<dyn Fs>>) -> SessionLock<Self>;

    /// Session `k`, through the alias when `alias` (files only).
    fn session(&self, sh: &Shared, k: usize, alias: bool) -> Self::Session;

    /// Appends `entry` to session `k` while `guard` holds its lock, not
    /// through the attempt controller. `Err` says why it could not.
    async fn foreign_append(
        &self,
        sh: &Shared,
        k: usize,
        guard: &Guard<Self>,
        entry: &Value,
    ) -> Result<(), String>;
}

impl DemoBackend for FileBackend {
    type Session = std::path::PathBuf;

    fn locks(&self, fs: Option<Arc<dyn Fs>>) -> SessionLock<Self> {
        let backend = match fs {
            Some(fs) => self.clone().with_fs(fs),
            None => self.clone(),
        };
        SessionLock::with_backend(backend, LockOptions::default())
    }

    fn session(&self, sh: &Shared, k: usize, alias: bool) -> Self::Session {
        sh.layout.session(k, alias)
    }

    async fn foreign_append(
        &self,
        sh: &Shared,
        k: usize,
        guard: &Guard<Self>,
        entry: &Value,
    ) -> Result<(), String> {
        let mut transcript = Transcript::open(sh.layout.session(k, false))
            .map_err(|e| format!("the foreign writer could not open: {e}"))?;
        transcript
            .append(guard, std::slice::from_ref(entry), Durability::None)
            .map(drop)
            .map_err(|e| format!("the foreign append failed: {e}"))
    }
}

impl DemoBackend for PgBackend {
    type Session = String;

    fn locks(&self, _fs: Option<Arc<dyn Fs>>) -> SessionLock<Self> {
        SessionLock::with_backend(self.clone(), LockOptions::default())
    }

    fn session(&self, sh: &Shared, k: usize, _alias: bool) -> Self::Session {
        pg_session(&sh.keys, k)
    }

    async fn foreign_append(
        &self,
        sh: &Shared,
        k: usize,
        _guard: &Guard<Self>,
        entry: &Value,
    ) -> Result<(), String> {
        let url = sh.pg_url.as_deref().ok_or("no server URL")?;
        let sql = format!(
            "INSERT INTO {s}.entries(session, seq, line) SELECT id, next_seq, $2 FROM {s}.leases WHERE key = $1",
            s = quote_ident(self.schema())
        );
        let key = pg_session(&sh.keys, k);
        let line = entry.to_string();
        let client = sql_client(url)
            .await
            .map_err(|e| format!("the foreign writer could not connect: {e:#}"))?;
        match client.execute(&sql, &[&key, &line]).await {
            Ok(1) => Ok(()),
            Ok(n) => Err(format!("the foreign insert wrote {n} rows, not 1")),
            Err(e) => Err(format!("the foreign insert failed: {e}")),
        }
    }
}

/// Session `k`'s key on PostgreSQL under the run's prefix.
pub(super) fn pg_session(prefix: &str, k: usize) -> String {
    format!("{prefix}/s{k}")
}

/// A SQL identifier, quoted.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A plain client of the server at `url` (sessionlock's own `schema`
/// parameter left out), its connection driven on the current runtime.
/// The demo's raw SQL (foreign writes, cutting a connection) goes through
/// it, beside sessionlock, like a foreign program's would.
pub(super) async fn sql_client(url: &str) -> Result<tokio_postgres::Client> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("schema="))
        .collect();
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .context("connect to the server")?;
    tokio::spawn(async move {
        // The connection ends with the client; an error then is moot.
        let _ = conn.await;
    });
    Ok(client)
}
