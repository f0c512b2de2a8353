//! Connections to the server: the pool for ordinary statements, the
//! liveness connection that proves this process alive, and the mapping of
//! the client's errors to sessionlock's.
//!
//! Correctness never rests on a connection's session state: the pool's
//! connections run single statements or whole transactions. Only the
//! liveness connection keeps state (a session-level advisory lock), and it
//! is a hint: when it is lost, others may reclaim this process's leases at
//! once and this process stops writing through them; when it is wrongly
//! kept (a half-open connection), leases still end on the server's clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sessionlock::Error;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::PgConfig;
use crate::listen::Listener;
use crate::schema;

/// What every [`PgBackend`](crate::PgBackend) of one server and schema in
/// this process shares: one pool, one liveness connection, one listener.
pub(crate) struct Shared {
    pub(crate) cfg: PgConfig,
    pub(crate) pool: Pool,
    /// Connections whose commits do not wait for the disk
    /// (`synchronous_commit = off`): for statements whose loss in a crash
    /// is harmless (a release: after a restart the holder's liveness lock
    /// is gone and its lease is reclaimed at once; a fence's row lock), so
    /// that a hand-off costs one durable commit, the grant's.
    pub(crate) lazy_pool: Pool,
    pub(crate) tls: MakeRustlsConnect,
    /// This process's id on the server (random, per process and server).
    pub(crate) client_id: String,
    pub(crate) live: tokio::sync::Mutex<Option<Live>>,
    /// The liveness connection's generation: each new connection claims
    /// the next one, and the end of the current one bumps it. Leases
    /// granted under an older generation are lost.
    pub(crate) live_gen: AtomicU64,
    pub(crate) listener: Listener,
    pub(crate) sql: crate::sql::Sql,
}

/// The liveness connection: holds the session-level advisory lock
/// `lock` for as long as it lives.
pub(crate) struct Live {
    pub(crate) lock: i64,
    pub(crate) gen: u64,
    /// Kept so the connection stays open (and to see whether it closed);
    /// statements never run on it after the lock is taken.
    client: Client,
}

impl Shared {
    /// The shared state for `cfg`, made (connected, schema migrated) on
    /// first use in this process.
    pub(crate) async fn get(url: &str, cfg: PgConfig) -> Result<Arc<Shared>, Error> {
        static ALL: OnceLock<Mutex<HashMap<String, Weak<Shared>>>> = OnceLock::new();
        // Backends of one URL but other settings do not share.
        let id = format!("{url}\u{0}{cfg:?}");
        let all = ALL.get_or_init(Default::default);
        if let Some(s) = locked(all).get(&id).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let made = Arc::new(Shared::connect(cfg).await?);
        let mut map = locked(all);
        if let Some(s) = map.get(&id).and_then(Weak::upgrade) {
            return Ok(s); // another task made one meanwhile
        }
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(id, Arc::downgrade(&made));
        Ok(made)
    }

    async fn connect(cfg: PgConfig) -> Result<Shared, Error> {
        let tls = tls()?;
        let pool = make_pool(&cfg, cfg.pg.clone(), &tls, cfg.pool_size)?;
        let mut lazy = cfg.pg.clone();
        lazy.options(format!(
            "{} -c synchronous_commit=off",
            cfg.pg.get_options().unwrap_or("")
        ));
        let lazy_pool = make_pool(&cfg, lazy, &tls, cfg.pool_size.div_ceil(2))?;
        // Connect once now: a server that is down, or refuses us, or holds
        // a newer schema, is reported by `connect`, not by a later acquire.
        let mut client = open(&cfg, &tls, "connect to").await?;
        check_session_options(&client, &cfg).await?;
        schema::migrate(&mut client, &cfg.schema, &cfg.target).await?;
        drop(client);
        let sql = crate::sql::Sql::new(&cfg.schema);
        Ok(Shared {
            listener: Listener::new(&sql.channel),
            cfg,
            pool,
            lazy_pool,
            tls,
            client_id: random_hex(),
            live: tokio::sync::Mutex::new(None),
            live_gen: AtomicU64::new(0),
            sql,
        })
    }

    pub(crate) fn target(&self) -> &str {
        &self.cfg.target
    }

    /// A pooled connection.
    pub(crate) async fn client(
        &self,
        op: &'static str,
    ) -> Result<deadpool_postgres::Object, Error> {
        self.checkout(&self.pool, op).await
    }

    /// A pooled connection whose commits do not wait for the disk (see
    /// [`Shared::lazy_pool`]).
    pub(crate) async fn lazy_client(
        &self,
        op: &'static str,
    ) -> Result<deadpool_postgres::Object, Error> {
        self.checkout(&self.lazy_pool, op).await
    }

    async fn checkout(
        &self,
        pool: &Pool,
        op: &'static str,
    ) -> Result<deadpool_postgres::Object, Error> {
        pool.get().await.map_err(|e| {
            let source: Box<dyn std::error::Error + Send + Sync> = match e {
                deadpool_postgres::PoolError::Backend(e) => {
                    return pg_error(op, &self.cfg.target, e)
                }
                other => Box::new(other),
            };
            Error::Backend {
                op,
                target: self.cfg.target.clone(),
                source,
            }
        })
    }

    /// The liveness connection's lock and generation, connecting it if
    /// there is none.
    pub(crate) async fn live(self: &Arc<Self>) -> Result<(i64, u64), Error> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref() {
            if !l.client.is_closed() {
                return Ok((l.lock, l.gen));
            }
            *live = None;
        }
        let lock = random_i64();
        let (client, conn) =
            connect_raw(&self.cfg, &self.tls, "open the liveness connection to").await?;
        // Each connection claims a generation of its own: leases of any
        // earlier one are lost from now on, and the end of a connection
        // whose setup failed cannot touch a later one's leases.
        let gen = self.live_gen.fetch_add(1, Ordering::SeqCst) + 1;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(
                    target: "sessionlock::postgres",
                    error = %e,
                    "the liveness connection to the server ended"
                );
            }
            if let Some(s) = weak.upgrade() {
                // Every lease granted under this connection is lost: others
                // can see our advisory lock is gone and take over.
                if s.live_gen
                    .compare_exchange(gen, gen + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    tracing::warn!(
                        target: "sessionlock::postgres",
                        server = %s.cfg.target,
                        "lost the liveness connection: this process's leases on it are revoked"
                    );
                }
            }
        });
        check_session_options(&client, &self.cfg).await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&lock])
            .await
            .map_err(|e| pg_error("take the liveness lock on", &self.cfg.target, e))?;
        *live = Some(Live { lock, gen, client });
        Ok((lock, gen))
    }

    /// Whether leases of liveness generation `gen` are still backed by a
    /// live connection.
    pub(crate) fn live_since(&self, gen: u64) -> bool {
        self.live_gen.load(Ordering::SeqCst) == gen
    }
}

fn make_pool(
    cfg: &PgConfig,
    pg: tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    size: usize,
) -> Result<Pool, Error> {
    let mgr = Manager::from_config(
        pg,
        tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(cfg.pg.get_connect_timeout().copied())
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| Error::Backend {
            op: "set up a connection pool for",
            target: cfg.target.clone(),
            source: Box::new(e),
        })
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.listener.stop.notify_one();
    }
}

/// A lock of `m`, even after a panic elsewhere poisoned it (the map stays
/// valid: entries are inserted or dropped whole).
pub(crate) fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// TLS for `sslmode=require` and stronger: the web's root certificates.
/// (`sslmode=prefer`, the default, falls back to plain text when the server
/// offers no TLS.)
fn tls() -> Result<MakeRustlsConnect, Error> {
    #[allow(deprecated)] // the post-quantum provider needs aws-lc, a C build
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Backend {
            op: "set up TLS for",
            target: "postgres".to_owned(),
            source: Box::new(e),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A connection whose driver the caller spawns.
pub(crate) async fn connect_raw(
    cfg: &PgConfig,
    tls: &MakeRustlsConnect,
    op: &'static str,
) -> Result<
    (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream>,
    ),
    Error,
>{
    cfg.pg
        .connect(tls.clone())
        .await
        .map_err(|e| pg_error(op, &cfg.target, e))
}

/// A connection whose driver runs as a task of its own.
pub(crate) async fn open(
    cfg: &PgConfig,
    tls: &MakeRustlsConnect,
    op: &'static str,
) -> Result<Client, Error> {
    let (client, conn) = connect_raw(cfg, tls, op).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Refuses a connection that dropped the options sent at its start: what
/// a transaction-pooling proxy (PgBouncer) does, and sessionlock's
/// liveness lock and bounds need a real session.
async fn check_session_options(client: &Client, cfg: &PgConfig) -> Result<(), Error> {
    let want = format!("{}ms", cfg.statement_timeout.as_millis().max(1));
    let row = client
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .await
        .map_err(|e| pg_error("check the session of", &cfg.target, e))?;
    let got: String = row.get(0);
    if normalize_ms(&got) != normalize_ms(&want) {
        return Err(Error::Backend {
            op: "use",
            target: cfg.target.clone(),
            source: format!(
                "the server ignored the connection's startup options (statement_timeout is {got}, sessionlock asked for {want}): a pooling proxy such as PgBouncer in transaction mode seems to sit in between; sessionlock needs a real session for its liveness lock: point it at the server, or at a session-pooled port"
            )
            .into(),
        });
    }
    Ok(())
}

/// `10s` and `10000ms` alike, as milliseconds.
fn normalize_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "" | "ms" => n,
        "s" => n * 1000,
        "min" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return None,
    })
}

/// A client error as sessionlock's: what was being done, on which server,
/// with the server's message as the cause. Never a password: the client's
/// errors do not carry the configuration.
pub(crate) fn pg_error(op: &'static str, target: &str, e: tokio_postgres::Error) -> Error {
    let source: Box<dyn std::error::Error + Send + Sync> = match e.as_db_error() {
        Some(db) => {
            let hint = match db.code() {
                c if *c == SqlState::QUERY_CANCELED => {
                    " (a statement timeout: the server took too long)"
                }
                c if *c == SqlState::LOCK_NOT_AVAILABLE => {
                    " (a lock timeout: a row stayed locked too long)"
                }
                c if *c == SqlState::INVALID_PASSWORD
                    || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
                {
                    " (check the user and password of the URL)"
                }
                _ if db.message().contains("unsupported startup parameter") => {
                    " (a pooling proxy such as PgBouncer? sessionlock needs a direct or session-pooled connection)"
                }
                _ => "",
            };
            format!("{}: {}{hint}", db.severity(), db.message()).into()
        }
        None => Box::new(e),
    };
    Error::Backend {
        op,
        target: target.to_owned(),
        source,
    }
}

/// 32 random hex digits.
pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn random_i64() -> i64 {
    let mut b = [0u8; 8];
    fill_random(&mut b);
    i64::from_le_bytes(b)
}

fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                // No kernel randomness: the clock and pid, mixed; unique
                // enough for ids that only need to differ between clients.
                static COUNTER: AtomicU64 = AtomicU64::new(0);
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64;
                let mix = t
                    ^ (u64::from(std::process::id()) << 40)
                    ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(17);
                for (i, b) in buf[filled..].iter_mut().enumerate() {
                    *b = (mix.rotate_left((i as u32 * 8) % 64) & 0xff) as u8;
                }
                return;
            }
        }
    }
}
