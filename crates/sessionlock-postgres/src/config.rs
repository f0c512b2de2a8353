//! Where the server is and how to talk to it: a `postgres://` URL, the
//! schema of sessionlock's tables, and the time bounds every connection
//! runs under.

use std::time::Duration;

use sessionlock::Error;
use tokio_postgres::config::Host;

/// The schema sessionlock's tables live in unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "sessionlock";

/// How a [`PgBackend`](crate::PgBackend) connects, and the bounds its
/// statements run under.
///
/// The defaults suit a gateway on a local network: a connection attempt
/// gives up after 5 s; a statement after 10 s; a wait for a row lock after
/// 5 s (a reclaim never waits without bound behind a wedged writer); a
/// transaction left idle is ended by the server after 10 s; a half-open TCP
/// connection is found within about 10 s (keepalives every 2 s after 4 s
/// idle, 3 probes; `tcp_user_timeout` 10 s).
#[derive(Clone)]
pub struct PgConfig {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) schema: String,
    pub(crate) target: String,
    pub(crate) statement_timeout: Duration,
    pub(crate) lock_timeout: Duration,
    pub(crate) idle_in_transaction_timeout: Duration,
    pub(crate) pool_size: usize,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password: only what messages show.
        f.debug_struct("PgConfig")
            .field("target", &self.target)
            .field("schema", &self.schema)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl PgConfig {
    /// Reads a `postgres://` or `postgresql://` URL (or a libpq key=value
    /// string). A `schema` query parameter (`?schema=gw1`) names the schema
    /// of sessionlock's tables (default `sessionlock`).
    ///
    /// # Errors
    /// `Backend` for a URL that cannot be read or names no host; the message
    /// never repeats a password.
    pub fn from_url(url: &str) -> Result<PgConfig, Error> {
        let (url, schema) = take_schema_param(url);
        let shown = redact(&url);
        let bad = |why: String| Error::Backend {
            op: "use the server URL",
            target: shown.clone(),
            source: why.into(),
        };
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
        if pg.get_hosts().is_empty() {
            return Err(bad("it names no host".to_owned()));
        }
        let schema = schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
        check_schema_name(&schema).map_err(bad)?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(4))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(10));
        if pg.get_application_name().is_none() {
            pg.application_name("sessionlock");
        }
        let target = describe(&pg);
        let mut cfg = PgConfig {
            pg,
            schema,
            target,
            statement_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(10),
            pool_size: 16,
        };
        cfg.apply_options();
        Ok(cfg)
    }

    /// Puts sessionlock's tables in `schema` instead.
    ///
    /// # Errors
    /// `Backend` unless `schema` is a plain lowercase identifier
    /// (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub fn schema(mut self, schema: &str) -> Result<PgConfig, Error> {
        check_schema_name(schema).map_err(|why| Error::Backend {
            op: "use the schema name for",
            target: self.target.clone(),
            source: why.into(),
        })?;
        self.schema = schema.to_owned();
        Ok(self)
    }

    /// How long one statement may run before the server cancels it.
    pub fn statement_timeout(mut self, t: Duration) -> PgConfig {
        self.statement_timeout = t;
        self.apply_options();
        self
    }

    /// How long a statement may wait for a row lock.
    pub fn lock_timeout(mut self, t: Duration) -> PgConfig {
        self.lock_timeout = t;
        self.apply_options();
        self
    }

    /// How many pooled connections ordinary statements share (the
    /// liveness, LISTEN and death-watch connections are extra).
    pub fn pool_size(mut self, n: usize) -> PgConfig {
        self.pool_size = n.max(1);
        self
    }

    /// The schema of sessionlock's tables.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    /// The server as messages name it: `postgres HOST:PORT/DATABASE`,
    /// never with a password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The server-side bounds, sent at connection start so they hold for
    /// every statement of every connection, pooled or not.
    fn apply_options(&mut self) {
        let ms = |d: Duration| d.as_millis().max(1);
        self.pg.options(format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={} \
             -c tcp_keepalives_idle=4 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 \
             -c tcp_user_timeout=10000 -c client_connection_check_interval=1000",
            ms(self.statement_timeout),
            ms(self.lock_timeout),
            ms(self.idle_in_transaction_timeout),
        ));
    }
}

/// Splits a `schema=` query parameter off a URL.
fn take_schema_param(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("schema=") {
            Some(v) => {
                schema = Some(v.to_owned());
                false
            }
            None => true,
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, schema)
}

fn check_schema_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schema name {s:?} is not a plain lowercase identifier ([a-z_][a-z0-9_]*, at most 63 bytes)"
        ))
    }
}

/// `postgres HOST:PORT/DATABASE` of a parsed configuration.
fn describe(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "?".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let db = pg
        .get_dbname()
        .or(pg.get_user())
        .unwrap_or("postgres")
        .to_owned();
    format!("postgres {host}:{port}/{db}")
}

/// A URL as messages may show it: any password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // key=value form: drop a password=... pair.
        return url
            .split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (auth, tail) = match rest.split_once('@') {
        Some((auth, tail)) if !auth.contains('/') => (auth, tail),
        _ => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gives_its_schema_and_a_target_without_password() {
        let c = PgConfig::from_url("postgres://u:s3cret@db.example:6543/app?schema=gw_1").unwrap();
        assert_eq!(c.schema_name(), "gw_1");
        assert_eq!(c.target(), "postgres db.example:6543/app");
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        let c = PgConfig::from_url("postgresql://localhost/app").unwrap();
        assert_eq!(c.schema_name(), DEFAULT_SCHEMA);
        assert_eq!(c.target(), "postgres localhost:5432/app");
    }

    #[test]
    fn bad_urls_and_schema_names_are_refused_without_the_password() {
        let e = PgConfig::from_url("postgres://u:s3cret@h/app?schema=Bad-Name").unwrap_err();
        let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(text.contains("schema name"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        let e = PgConfig::from_url("postgres://u:s3cret@h:notaport/app").unwrap_err();
        let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(e.code(), "backend");
    }

    #[test]
    fn redact_hides_passwords_in_both_forms() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("host=h password=pw user=u"),
            "host=h password=*** user=u"
        );
    }
}
