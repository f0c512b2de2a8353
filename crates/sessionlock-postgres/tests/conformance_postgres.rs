//! The backend conformance suite (`sessionlock_lab::conformance`) for the
//! PostgreSQL backend, against a real server.
//!
//! The test binary uses one database of its own on the shared test server
//! (`fresh_database(shared_url())`), made by the first harness in the test
//! process; its URL reaches the child processes through
//! `SESSIONLOCK_CONFORMANCE_PG_URL`, which children inherit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use sessionlock_lab::conformance::{Harness, LockTamper, TranscriptTamper};
use sessionlock_lab::pgserver::{fresh_database, psql, shared_url};
use sessionlock_postgres::{PgBackend, DEFAULT_SCHEMA};

sessionlock_lab::conformance_suite!(postgres, PgHarness);

/// The variable carrying this binary's database URL to its children.
const URL_VAR: &str = "SESSIONLOCK_CONFORMANCE_PG_URL";

/// The database this test binary uses (the same in its children).
fn url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()) {
            return url;
        }
        let url = fresh_database(&shared_url());
        // Children spawned from here on inherit it.
        std::env::set_var(URL_VAR, &url);
        url
    })
}

/// A PostgreSQL string literal of `text` (standard-conforming strings).
fn lit(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The lease row id of `session`, as SQL.
fn session_id(session: &str) -> String {
    format!(
        "(SELECT id FROM {DEFAULT_SCHEMA}.leases WHERE key = {})",
        lit(session)
    )
}

struct PgHarness;

impl Harness for PgHarness {
    type Backend = PgBackend;
    type Session = String;

    fn backend(&self) -> PgBackend {
        PgBackend::connect(url()).expect("connect to the test database")
    }

    fn fresh_session(&self) -> String {
        // The database exists (and its URL is exported to children) before
        // the first session is handed to a child.
        url();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        format!(
            "conformance/{}/{}/{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            sessionlock::monotonic_ns()
        )
    }

    fn tamper_lock(&self, session: &str, how: LockTamper) {
        // The schema exists before any tamper: the backend made it.
        drop(self.backend());
        let s = DEFAULT_SCHEMA;
        let key = lit(session);
        let sql = match how {
            LockTamper::Remove => format!(
                "UPDATE {s}.leases SET held = false, version = version + 1 WHERE key = {key}"
            ),
            LockTamper::Plant { epoch } => format!(
                // A holder nobody is: a liveness lock no connection holds.
                "INSERT INTO {s}.leases AS l (key, epoch, held, version, token, pid, hostname, \
                     client_id, lane, live_lock, granted_at, written_at, expires_at, max_hold_ms) \
                 VALUES ({key}, {epoch}, true, 1, md5(random()::text), 999999, 'planted', \
                     'planted', 'foreign', (random() * 9e18)::bigint, clock_timestamp(), \
                     clock_timestamp(), clock_timestamp() + interval '1 second', 1000) \
                 ON CONFLICT (key) DO UPDATE SET epoch = EXCLUDED.epoch, held = true, \
                     version = l.version + 1, token = EXCLUDED.token, pid = EXCLUDED.pid, \
                     hostname = EXCLUDED.hostname, client_id = EXCLUDED.client_id, \
                     lane = EXCLUDED.lane, live_lock = EXCLUDED.live_lock, \
                     granted_at = EXCLUDED.granted_at, written_at = EXCLUDED.written_at, \
                     expires_at = EXCLUDED.expires_at, max_hold_ms = EXCLUDED.max_hold_ms"
            ),
        };
        psql(url(), &sql);
    }

    fn tamper_transcript(&self, session: &str, how: TranscriptTamper) {
        let s = DEFAULT_SCHEMA;
        let id = session_id(session);
        let sql = match how {
            TranscriptTamper::Append(bytes) => {
                // One row per line; a fragment without its line end is a
                // row too.
                let text = String::from_utf8(bytes).expect("UTF-8 lines");
                let lines: Vec<String> = text
                    .split_inclusive('\n')
                    .map(|l| lit(l.strip_suffix('\n').unwrap_or(l)))
                    .collect();
                format!(
                    "INSERT INTO {s}.entries (session, seq, line) \
                     SELECT l.id, l.next_seq + t.ord - 1, t.line \
                     FROM {s}.leases l, unnest(ARRAY[{}]::text[]) WITH ORDINALITY AS t(line, ord) \
                     WHERE l.key = {}",
                    lines.join(", "),
                    lit(session)
                )
            }
            TranscriptTamper::DropLast => format!(
                "DELETE FROM {s}.entries WHERE session = {id} \
                 AND seq = (SELECT max(seq) FROM {s}.entries WHERE session = {id})"
            ),
            TranscriptTamper::EditFirst => format!(
                // One character inside the first string, same length.
                "UPDATE {s}.entries SET line = overlay(line PLACING \
                     CASE WHEN substr(line, 3, 1) = 'y' THEN 'z' ELSE 'y' END FROM 3 FOR 1) \
                 WHERE session = {id} AND seq = 0"
            ),
            TranscriptTamper::RewriteIdentical => format!(
                "BEGIN; \
                 CREATE TEMP TABLE kept AS SELECT seq, line FROM {s}.entries WHERE session = {id}; \
                 DELETE FROM {s}.entries WHERE session = {id}; \
                 INSERT INTO {s}.entries (session, seq, line) SELECT {id}, seq, line FROM kept; \
                 COMMIT;"
            ),
            TranscriptTamper::Replace => format!(
                "BEGIN; \
                 CREATE TEMP TABLE kept AS SELECT seq, line FROM {s}.entries WHERE session = {id}; \
                 DELETE FROM {s}.entries WHERE session = {id}; \
                 INSERT INTO {s}.entries (session, seq, line) SELECT {id}, seq, line FROM kept; \
                 INSERT INTO {s}.entries (session, seq, line) \
                     SELECT {id}, count(*), '{{\"type\":\"message\",\"n\":\"replaced\"}}' FROM kept; \
                 COMMIT;"
            ),
            TranscriptTamper::Delete => format!("DELETE FROM {s}.entries WHERE session = {id}"),
        };
        psql(url(), &sql);
    }
}
