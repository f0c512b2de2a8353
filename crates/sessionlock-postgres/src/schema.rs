//! sessionlock's tables, created and migrated by the backend itself in a
//! schema of their own.
//!
//! - `meta`: one row, the schema's version.
//! - `leases`: one row per session key, never deleted: the last epoch
//!   issued, whether a lease is published and by whom, its expiry on the
//!   server's clock, and the transcript's sequence, size in bytes (as
//!   JSONL: each line and its newline), edit count and digest.
//! - `entries`: the transcripts, one row per entry, keyed by session and a
//!   gapless sequence.
//! - `waiters` (version 3): one row per acquisition waiting for a session,
//!   written by the waiting client when it starts to wait and deleted when
//!   it stops; a row whose client's liveness lock is gone (its connection
//!   ended) is a dead waiter's, never shown, and deleted by the next waiter
//!   of that session.
//!
//! Triggers on `entries` keep the lease row's `next_seq`, `bytes`, `edits`
//! and `digest` true whoever writes the table (sessionlock or a foreign hand),
//! so that a fence snapshot is one row read and its check O(appended).
//!
//! Migration runs in one transaction under a transaction-level advisory
//! lock, so any number of clients may start at once; a schema whose version
//! is newer than this code's is refused.

use sessionlock::Error;
use tokio_postgres::Client;

/// The version of the schema this code creates and understands.
pub const SCHEMA_VERSION: i32 = 3;

/// 2^64, the modulus of the transcript digest.
pub(crate) const DIGEST_MOD: &str = "18446744073709551616";

/// The SQL of one entry's contribution to the digest: 60 bits of the MD5 of
/// its sequence and text (so a sum of many fits a numeric at once).
fn entry_hash(row: &str) -> String {
    format!("('x' || left(md5({row}.seq::text || ':' || {row}.line), 15))::bit(60)::bigint")
}

/// The statements that create version 1 in schema `s`.
fn version_1(s: &str) -> String {
    let h_new = entry_hash("n");
    format!(
        r#"
CREATE TABLE {s}.leases (
    id bigserial UNIQUE NOT NULL,
    key text PRIMARY KEY,
    epoch bigint NOT NULL,
    held boolean NOT NULL DEFAULT false,
    version bigint NOT NULL DEFAULT 0,
    token text,
    pid integer,
    starttime bigint,
    hostname text,
    boot_id text,
    client_id text,
    lane text,
    run_id text,
    live_lock bigint,
    granted_at timestamptz,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz,
    max_hold_ms bigint,
    next_seq bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    edits bigint NOT NULL DEFAULT 0,
    digest numeric NOT NULL DEFAULT 0
);
COMMENT ON TABLE {s}.leases IS 'sessionlock: one row per session, never deleted; the epoch only grows';
CREATE TABLE {s}.entries (
    session bigint NOT NULL REFERENCES {s}.leases (id),
    seq bigint NOT NULL,
    line text NOT NULL,
    batch text,
    PRIMARY KEY (session, seq)
);
COMMENT ON TABLE {s}.entries IS 'sessionlock: transcripts, one row per entry in sequence';

CREATE FUNCTION {s}.entries_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {s}.leases l
       SET next_seq = greatest(l.next_seq, x.top + 1),
           bytes = l.bytes + x.b,
           digest = mod(l.digest + x.h, {m})
      FROM (SELECT n.session, max(n.seq) AS top, sum({h_new}) AS h,
                   sum(octet_length(n.line) + 1) AS b
              FROM new_rows n GROUP BY n.session) x
     WHERE l.id = x.session;
    RETURN NULL;
END $$;
{edits}
CREATE FUNCTION {s}.entries_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {s}.leases SET next_seq = 0, bytes = 0, digest = 0, edits = edits + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_inserted AFTER INSERT ON {s}.entries
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {s}.entries_inserted();
CREATE TRIGGER entries_deleted AFTER DELETE ON {s}.entries
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {s}.entries_deleted();
CREATE TRIGGER entries_updated AFTER UPDATE ON {s}.entries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {s}.entries_updated();
CREATE TRIGGER entries_truncated AFTER TRUNCATE ON {s}.entries
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.entries_truncated();
"#,
        m = DIGEST_MOD,
        edits = edit_functions(s),
    )
}

/// Version 2: the delete and update triggers lock the sessions' lease rows
/// before they recount `next_seq`. In version 1 the recount's snapshot
/// could predate an append that held the row while the trigger waited for
/// it, so `next_seq` went back below the appended entries and every later
/// append collided with them. (A schema created now gets these functions
/// with version 1 already; this replaces them in older ones.)
fn version_2(s: &str) -> String {
    edit_functions(s)
}

/// Version 3: the waiters table (who waits for whom; design §17.2).
/// `id` orders arrivals; `live_lock` is the waiting client's liveness lock,
/// which tells a live waiter from a dead one.
fn version_3(s: &str) -> String {
    format!(
        r#"
CREATE TABLE IF NOT EXISTS {s}.waiters (
    id bigserial PRIMARY KEY,
    key text NOT NULL,
    pid integer,
    starttime bigint,
    hostname text,
    boot_id text,
    client_id text,
    lane text,
    run_id text,
    live_lock bigint,
    since timestamptz NOT NULL DEFAULT clock_timestamp(),
    deadline timestamptz
);
CREATE INDEX IF NOT EXISTS waiters_key ON {s}.waiters (key, id);
COMMENT ON TABLE {s}.waiters IS 'sessionlock: acquisitions waiting for a session, one row each while they wait';
"#
    )
}

/// The functions of the delete and update triggers, as of version 2.
fn edit_functions(s: &str) -> String {
    let h_new = entry_hash("n");
    let h_old = entry_hash("o");
    format!(
        r#"
CREATE OR REPLACE FUNCTION {s}.entries_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Lock first: the recount below then runs with a snapshot taken after
    -- every writer that held these rows committed.
    PERFORM 1 FROM {s}.leases l WHERE l.id IN (SELECT o.session FROM old_rows o)
      ORDER BY l.id FOR NO KEY UPDATE;
    UPDATE {s}.leases l
       SET next_seq = coalesce((SELECT max(e.seq) + 1 FROM {s}.entries e WHERE e.session = l.id), 0),
           bytes = l.bytes - x.b,
           digest = mod(mod(l.digest - x.h, {m}) + {m}, {m}),
           edits = l.edits + 1
      FROM (SELECT o.session, sum({h_old}) AS h, sum(octet_length(o.line) + 1) AS b
              FROM old_rows o GROUP BY o.session) x
     WHERE l.id = x.session;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION {s}.entries_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM {s}.leases l
     WHERE l.id IN (SELECT n.session FROM new_rows n UNION SELECT o.session FROM old_rows o)
      ORDER BY l.id FOR NO KEY UPDATE;
    UPDATE {s}.leases l
       SET digest = mod(mod(l.digest + x.h, {m}) + {m}, {m}),
           bytes = l.bytes + x.b,
           next_seq = coalesce((SELECT max(e.seq) + 1 FROM {s}.entries e WHERE e.session = l.id), 0),
           edits = l.edits + 1
      FROM (SELECT d.session, sum(d.h) AS h, sum(d.b) AS b FROM (
                SELECT n.session, {h_new} AS h, octet_length(n.line) + 1 AS b FROM new_rows n
                UNION ALL
                SELECT o.session, -{h_old} AS h, -(octet_length(o.line) + 1) AS b FROM old_rows o) d
             GROUP BY d.session) x
     WHERE l.id = x.session;
    RETURN NULL;
END $$;
"#,
        m = DIGEST_MOD,
    )
}

/// The advisory lock (transaction-level) that serializes migrations of one
/// schema across every client.
fn migrate_lock(schema: &str) -> String {
    format!("SELECT pg_advisory_xact_lock(hashtextextended('sessionlock-migrate:{schema}', 0))")
}

/// Creates or migrates the schema. Safe when many clients run it at once.
///
/// # Errors
/// `Backend` when the server holds a newer version, or a statement fails.
pub(crate) async fn migrate(client: &mut Client, schema: &str, target: &str) -> Result<(), Error> {
    let fail = |op: &'static str| {
        move |e: tokio_postgres::Error| Error::Backend {
            op,
            target: target.to_owned(),
            source: Box::new(e),
        }
    };
    // The fast path: an up-to-date schema needs one read and no lock.
    if let Some(v) = read_version(client, schema)
        .await
        .map_err(fail("read the schema version of"))?
    {
        return check_version(v, schema, target);
    }
    let tx = client
        .transaction()
        .await
        .map_err(fail("begin the schema migration on"))?;
    tx.batch_execute(&migrate_lock(schema))
        .await
        .map_err(fail("lock the schema migration on"))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.meta (
             singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
             version integer NOT NULL);"
    ))
    .await
    .map_err(fail("create the schema on"))?;
    let row = tx
        .query_opt(&format!("SELECT version FROM {schema}.meta"), &[])
        .await
        .map_err(fail("read the schema version of"))?;
    let have: i32 = row.map_or(0, |r| r.get(0));
    if have > SCHEMA_VERSION {
        return check_version(have, schema, target);
    }
    if have < 1 {
        tx.batch_execute(&version_1(schema))
            .await
            .map_err(fail("create sessionlock's tables on"))?;
    }
    if have < 2 {
        tx.batch_execute(&version_2(schema))
            .await
            .map_err(fail("migrate sessionlock's tables on"))?;
    }
    if have < 3 {
        tx.batch_execute(&version_3(schema))
            .await
            .map_err(fail("migrate sessionlock's tables on"))?;
    }
    // Later versions add their steps here, each guarded by `have < N`.
    tx.execute(
        &format!(
            "INSERT INTO {schema}.meta (version) VALUES ($1)
             ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version"
        ),
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(fail("record the schema version on"))?;
    tx.commit()
        .await
        .map_err(fail("commit the schema migration on"))?;
    if have < SCHEMA_VERSION {
        tracing::info!(
            target: "sessionlock::postgres",
            schema,
            from = have,
            to = SCHEMA_VERSION,
            server = target,
            "migrated sessionlock's schema"
        );
    }
    Ok(())
}

/// The schema's version, or `None` when it has none yet (or is older than
/// this code).
async fn read_version(client: &Client, schema: &str) -> Result<Option<i32>, tokio_postgres::Error> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{schema}.meta")],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(&format!("SELECT version FROM {schema}.meta"), &[])
        .await?;
    Ok(row
        .map(|r| r.get::<_, i32>(0))
        .filter(|&v| v >= SCHEMA_VERSION))
}

fn check_version(v: i32, schema: &str, target: &str) -> Result<(), Error> {
    if v > SCHEMA_VERSION {
        return Err(Error::Backend {
            op: "use the schema on",
            target: target.to_owned(),
            source: format!(
                "schema {schema} is at version {v}, newer than this sessionlock understands ({SCHEMA_VERSION}): upgrade sessionlock, or point it at another schema (?schema=NAME)"
            )
            .into(),
        });
    }
    Ok(())
}
