//! The metrics' names, labels and help texts: a stable interface
//! ([design §20.1](crate::design#201-metrics)). A name is never reused for
//! another meaning; a metric whose meaning changes gets a new name.

/// How long acquisitions waited, in seconds, whatever their outcome
/// (histogram; labels `backend`, `lane`, `outcome`: `acquired`, `timeout`,
/// `error`).
pub const ACQUIRE_WAIT_SECONDS: &str = "sessionlock_acquire_wait_seconds";
/// How long locks were held, in seconds, from acquisition to release or
/// loss (histogram; labels `backend`, `lane`, `end`: `released`,
/// `handed_off`, `revoked`).
pub const HOLD_SECONDS: &str = "sessionlock_hold_seconds";
/// Locks passed straight to a waiting lane of the same process at release
/// (counter; labels `backend`, `lane`: the releaser's).
pub const HANDOFFS_TOTAL: &str = "sessionlock_handoffs_total";
/// Stale locks this process took over (counter; labels `backend`,
/// `reason`: the first of the stale reasons, `dead-pid`, `hold-exceeded`,
/// ... as `sessionlock status` names them).
pub const RECLAIMS_TOTAL: &str = "sessionlock_reclaims_total";
/// Held locks this process lost (counter; labels `backend`, `lane`,
/// `cause`: `overdue` (revoked by the watchdog past its lease), `removed`,
/// `replaced` (taken by another program), `connection_lost`).
pub const REVOCATIONS_TOTAL: &str = "sessionlock_revocations_total";
/// Fenced writes refused because their guard no longer owned the session
/// (counter; labels `backend`, `lane`, `error`: `revoked`, `fenced`).
pub const FENCED_WRITES_REFUSED_TOTAL: &str = "sessionlock_fenced_writes_refused_total";
/// Takeovers detected (counter; labels `backend`, `kind`: the
/// takeover reason, `changed`, `changed_while_held`, ...).
pub const TAKEOVERS_TOTAL: &str = "sessionlock_takeovers_total";
/// Fenced transcript appends that landed, one per call or batch (counter;
/// label `backend`).
pub const TRANSCRIPT_APPENDS_TOTAL: &str = "sessionlock_transcript_appends_total";
/// Entries those appends wrote (counter; label `backend`).
pub const TRANSCRIPT_ENTRIES_TOTAL: &str = "sessionlock_transcript_entries_total";
/// Bytes those appends wrote (counter; label `backend`).
pub const TRANSCRIPT_BYTES_TOTAL: &str = "sessionlock_transcript_bytes_total";
/// Torn transcript tails cut off and set aside (counter; label `backend`).
pub const TORN_TAILS_REPAIRED_TOTAL: &str = "sessionlock_torn_tails_repaired_total";
/// Acquisitions of this process under way now, waiting for their lock
/// (gauge; label `backend`).
pub const WAITERS: &str = "sessionlock_waiters";

/// Every metric: name, kind (`counter`, `gauge`, `histogram`), unit and
/// help text, as exporters describe them.
pub const ALL: [(&str, &str, &str, &str); 12] = [
    (
        ACQUIRE_WAIT_SECONDS,
        "histogram",
        "seconds",
        "Time acquisitions waited for a session lock, by outcome.",
    ),
    (
        HOLD_SECONDS,
        "histogram",
        "seconds",
        "Time session locks were held, by how the hold ended.",
    ),
    (
        HANDOFFS_TOTAL,
        "counter",
        "",
        "Locks handed straight to a waiting lane of the same process.",
    ),
    (
        RECLAIMS_TOTAL,
        "counter",
        "",
        "Stale session locks taken over, by reason.",
    ),
    (
        REVOCATIONS_TOTAL,
        "counter",
        "",
        "Held session locks lost, by cause.",
    ),
    (
        FENCED_WRITES_REFUSED_TOTAL,
        "counter",
        "",
        "Fenced writes refused because the guard no longer owned the session.",
    ),
    (
        TAKEOVERS_TOTAL,
        "counter",
        "",
        "Takeovers detected by attempts, by kind.",
    ),
    (
        TRANSCRIPT_APPENDS_TOTAL,
        "counter",
        "",
        "Fenced transcript appends (calls or batches) that landed.",
    ),
    (
        TRANSCRIPT_ENTRIES_TOTAL,
        "counter",
        "",
        "Transcript entries written by fenced appends.",
    ),
    (
        TRANSCRIPT_BYTES_TOTAL,
        "counter",
        "bytes",
        "Transcript bytes written by fenced appends.",
    ),
    (
        TORN_TAILS_REPAIRED_TOTAL,
        "counter",
        "",
        "Torn transcript tails cut off and set aside.",
    ),
    (
        WAITERS,
        "gauge",
        "",
        "Acquisitions of this process waiting for a session lock now.",
    ),
];
