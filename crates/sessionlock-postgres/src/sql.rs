//! Every statement the backend runs, written once per schema.
//!
//! Times are the server's `clock_timestamp()` (the moment of the statement,
//! not of its transaction). An epoch is issued as
//! `greatest(last + 1, milliseconds since 1970 on the server's clock)`: it
//! strictly increases per key, and after a failover to a standby that lost
//! the last commits it still moves past every epoch issued before, as long
//! as the new server's clock is not behind the old one's.

/// The statements, with the schema and channel filled in.
///
/// `grant` first looks (without a lock) whether the session is held: a
/// contender that finds it held writes nothing, so it neither waits for
/// the row nor costs the server a commit to disk; only a session that
/// looked free is upserted, and the upsert checks again under the row lock.
/// When nothing was granted, the same statement returns the inspection
/// of the lock (as of its snapshot), so a contender pays one round trip.
pub(crate) struct Sql {
    pub(crate) channel: String,
    pub(crate) grant: String,
    pub(crate) reclaim: String,
    pub(crate) inspect: String,
    pub(crate) list: String,
    pub(crate) remove: String,
    pub(crate) release: String,
    pub(crate) republish: String,
    pub(crate) revoke: String,
    pub(crate) state: String,
    pub(crate) fence_share: String,
    pub(crate) append: String,
    pub(crate) batch_landed: String,
    pub(crate) lock_for_write: String,
    pub(crate) lock_for_retry: String,
    pub(crate) delete_all: String,
    pub(crate) delete_from: String,
    pub(crate) insert_at: String,
    pub(crate) counters: String,
    pub(crate) entries_from: String,
    pub(crate) all_entries: String,
    pub(crate) enqueue: String,
    pub(crate) dequeue: String,
    pub(crate) waiters: String,
}

/// The next epoch after `e`.
fn next_epoch(e: &str) -> String {
    format!("greatest({e} + 1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)")
}

/// The columns a lease publishes, `$2..$13` of grant, reclaim and
/// republish: token, pid, starttime, hostname, boot_id, client_id, lane,
/// run_id, live_lock, max_hold_ms.
const HOLDER_SET: &str = "token = $2, pid = $3, starttime = $4, hostname = $5, boot_id = $6, \
     client_id = $7, lane = $8, run_id = $9, live_lock = $10, max_hold_ms = $11, \
     granted_at = clock_timestamp(), written_at = clock_timestamp(), \
     expires_at = clock_timestamp() + $11::bigint * interval '1 millisecond'";

/// What an inspection reads of a lease row `l`, with the server's clock and
/// whether the holder's liveness lock is gone (its connection ended).
const INSPECT_COLS: &str =
    "l.key, l.held, l.version, l.epoch, l.token, l.pid, l.starttime, l.hostname, \
     l.boot_id, l.client_id, l.lane, l.run_id, l.live_lock, l.granted_at, l.written_at, \
     l.max_hold_ms, clock_timestamp(), \
     CASE WHEN l.held AND l.live_lock IS NOT NULL \
          THEN pg_try_advisory_xact_lock_shared(l.live_lock) END";

impl Sql {
    pub(crate) fn new(s: &str) -> Sql {
        let channel = format!("sl_{}", &s[..s.len().min(60)]);
        let next = next_epoch("l.epoch");
        let first = next_epoch("0");
        let notify = format!("pg_notify('{channel}', $1)");
        Sql {
            grant: format!(
                "WITH g AS (INSERT INTO {s}.leases AS l (key, epoch, held, version, token, pid, starttime, hostname, \
                     boot_id, client_id, lane, run_id, live_lock, max_hold_ms, granted_at, written_at, expires_at) \
                 SELECT $1::text, {first}, true, 1, $2::text, $3::integer, $4::bigint, $5::text, $6::text, \
                     $7::text, $8::text, $9::text, $10::bigint, $11::bigint, clock_timestamp(), \
                     clock_timestamp(), clock_timestamp() + $11::bigint * interval '1 millisecond' \
                 WHERE NOT EXISTS (SELECT 1 FROM {s}.leases h WHERE h.key = $1 AND h.held) \
                 ON CONFLICT (key) DO UPDATE SET epoch = {next}, held = true, version = l.version + 1, {HOLDER_SET} \
                 WHERE NOT l.held \
                 RETURNING l.epoch, l.version, l.granted_at) \
                 SELECT g.epoch IS NOT NULL, g.epoch, g.version, g.granted_at, i.* \
                 FROM (SELECT 1) AS one LEFT JOIN g ON true \
                 LEFT JOIN LATERAL (SELECT {INSPECT_COLS} FROM {s}.leases l \
                     WHERE l.key = $1 AND NOT EXISTS (SELECT 1 FROM g)) AS i ON true"
            ),
            reclaim: format!(
                "WITH u AS (UPDATE {s}.leases AS l SET epoch = {next}, held = true, version = l.version + 1, {HOLDER_SET} \
                 WHERE l.key = $1 AND l.version = $12 AND l.held \
                 RETURNING l.epoch, l.version, l.granted_at) \
                 SELECT u.*, {notify} FROM u"
            ),
            inspect: format!("SELECT {INSPECT_COLS} FROM {s}.leases l WHERE l.key = $1"),
            list: format!(
                "SELECT {INSPECT_COLS} FROM {s}.leases l WHERE l.held AND starts_with(l.key, $1)"
            ),
            remove: format!(
                "WITH u AS (UPDATE {s}.leases AS l SET held = false, version = l.version + 1, \
                     written_at = clock_timestamp() \
                 WHERE l.key = $1 AND l.version = $2 AND l.held RETURNING l.epoch) \
                 SELECT u.epoch, {notify} FROM u"
            ),
            release: format!(
                "WITH u AS (UPDATE {s}.leases AS l SET held = false, version = l.version + 1, \
                     written_at = clock_timestamp() \
                 WHERE l.key = $1 AND l.epoch = $2 AND l.token = $3 AND l.held RETURNING l.epoch) \
                 SELECT u.epoch, {notify} FROM u"
            ),
            republish: format!(
                "WITH u AS (UPDATE {s}.leases AS l SET \
                     epoch = CASE WHEN $14 THEN {next} ELSE l.epoch END, \
                     version = l.version + 1, {HOLDER_SET} \
                 WHERE l.key = $1 AND l.epoch = $12 AND l.token = $13 AND l.held \
                     AND l.expires_at > clock_timestamp() \
                 RETURNING l.epoch, l.version, l.granted_at) \
                 SELECT u.*, CASE WHEN $14 THEN {notify} END FROM u"
            ),
            revoke: format!(
                "WITH u AS (UPDATE {s}.leases AS l SET \
                     epoch = CASE WHEN l.epoch = $2 THEN {next} ELSE l.epoch END, \
                     held = false, \
                     version = l.version + 1, written_at = clock_timestamp() \
                 WHERE l.key = $1 AND l.epoch = $2 RETURNING l.epoch) \
                 SELECT u.epoch, {notify} FROM u"
            ),
            state: format!(
                "SELECT l.epoch, l.held, l.token, l.expires_at <= clock_timestamp() \
                 FROM {s}.leases l WHERE l.key = $1"
            ),
            fence_share: format!(
                "SELECT l.id FROM {s}.leases l WHERE l.key = $1 AND l.epoch = $2 AND l.token = $3 \
                     AND l.held AND l.expires_at > clock_timestamp() FOR SHARE"
            ),
            append: format!(
                "WITH l AS (SELECT id, next_seq, bytes FROM {s}.leases \
                     WHERE key = $1 AND epoch = $2 AND token = $3 AND held \
                         AND expires_at > clock_timestamp() FOR UPDATE) \
                 INSERT INTO {s}.entries (session, seq, line, batch) \
                 SELECT l.id, l.next_seq + t.ord - 1, t.line, $5 \
                 FROM l, unnest($4::text[]) WITH ORDINALITY AS t(line, ord) \
                 RETURNING seq, (SELECT bytes FROM l)"
            ),
            batch_landed: format!(
                "SELECT b.first, (SELECT coalesce(sum(octet_length(x.line) + 1), 0)::bigint \
                     FROM {s}.entries x WHERE x.session = b.session AND x.seq < b.first) \
                 FROM (SELECT l.id AS session, min(e.seq) AS first \
                     FROM {s}.entries e JOIN {s}.leases l ON l.id = e.session \
                     WHERE l.key = $1 AND e.batch = $2 GROUP BY l.id) b"
            ),
            lock_for_write: format!(
                "SELECT l.id, l.next_seq FROM {s}.leases l WHERE l.key = $1 AND l.epoch = $2 \
                     AND l.token = $3 AND l.held AND l.expires_at > clock_timestamp() FOR UPDATE"
            ),
            lock_for_retry: format!(
                "SELECT l.id, l.next_seq, l.bytes, l.epoch = $2 AND l.token = $3 AND l.held \
                     AND l.expires_at > clock_timestamp() \
                 FROM {s}.leases l WHERE l.key = $1 FOR UPDATE"
            ),
            delete_all: format!("DELETE FROM {s}.entries WHERE session = $1"),
            delete_from: format!("DELETE FROM {s}.entries WHERE session = $1 AND seq >= $2"),
            insert_at: format!(
                "INSERT INTO {s}.entries (session, seq, line, batch) \
                 SELECT $1, $2 + t.ord - 1, t.line, $4 FROM unnest($3::text[]) WITH ORDINALITY AS t(line, ord)"
            ),
            counters: format!(
                "SELECT l.next_seq, l.edits, l.digest::text, l.epoch, l.bytes FROM {s}.leases l WHERE l.key = $1"
            ),
            entries_from: format!(
                "SELECT e.seq, e.line FROM {s}.entries e JOIN {s}.leases l ON l.id = e.session \
                 WHERE l.key = $1 AND e.seq >= $2 AND e.seq < $3 ORDER BY e.seq"
            ),
            all_entries: format!(
                "SELECT e.seq, e.line FROM {s}.entries e JOIN {s}.leases l ON l.id = e.session \
                 WHERE l.key = $1 ORDER BY e.seq"
            ),
            // A waiter that has waited a while: its row (`since` when it
            // started to wait), after deleting the rows of the session's
            // dead waiters (their liveness lock is free).
            enqueue: format!(
                "WITH gone AS (DELETE FROM {s}.waiters w WHERE w.key = $1 \
                     AND pg_try_advisory_xact_lock_shared(w.live_lock)) \
                 INSERT INTO {s}.waiters (key, pid, starttime, hostname, boot_id, client_id, lane, \
                     run_id, live_lock, deadline, since) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                     clock_timestamp() + $10::bigint * interval '1 millisecond', \
                     clock_timestamp() - $11::bigint * interval '1 millisecond') RETURNING id"
            ),
            dequeue: format!("DELETE FROM {s}.waiters WHERE id = $1"),
            // The live waiters of the sessions under a prefix, in arrival
            // order, with the server's clock.
            waiters: format!(
                "SELECT w.key, w.pid, w.hostname, w.client_id, w.lane, w.run_id, w.since, \
                     w.deadline, clock_timestamp() \
                 FROM {s}.waiters w WHERE starts_with(w.key, $1) AND w.live_lock IS NOT NULL \
                     AND NOT pg_try_advisory_xact_lock_shared(w.live_lock) \
                 ORDER BY w.key, w.since, w.id"
            ),
            channel,
        }
    }
}
