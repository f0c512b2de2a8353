//! Seeing what the locks do: metrics and an event log
//! ([design §20](crate::design#20-observability-metrics-and-the-event-log)).
//!
//! - **Metrics** go through the [`metrics`] facade: install the exporter
//!   of your choice (`metrics-exporter-prometheus`, say) in your program
//!   and the library's counters, gauges and histograms appear in it. The
//!   names and labels are stable ([`names`]); a label never carries a
//!   session's path. Without a recorder a record costs a few small
//!   allocations (the facade builds the key before it finds no recorder).
//! - **The event log** ([`EventLog`]) writes every acquisition, release,
//!   hand-off, reclaim, revocation, refused write, prompt window and
//!   takeover as a line of JSON, for `sessionlock timeline` and your own
//!   tools. Off unless a program installs it or sets
//!   `SESSIONLOCK_EVENT_LOG`.
//!
//! Tracing ([design §19](crate::design#19-observability-spans-and-events))
//! is the third view: what went wrong, in words, for a person reading logs.
//!
//! # Example: Prometheus
//! With `metrics-exporter-prometheus` in your program's dependencies, one
//! call at start-up serves every metric of the library:
//!
//! ```text
//! metrics_exporter_prometheus::PrometheusBuilder::new()
//!     .with_http_listener(([127, 0, 0, 1], 9185))
//!     .install()?;
//! // sessionlock_acquire_wait_seconds, sessionlock_hold_seconds, ... are
//! // served at http://127.0.0.1:9185/metrics from now on.
//! ```
//!
//! `sessionlock serve-metrics` does the same for a directory or a
//! PostgreSQL schema as a whole, from the outside.

mod events;
pub mod names;

pub use events::{EventLog, ENV_EVENT_LOG, FLUSH_EVERY, SCHEMA_VERSION};

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use events::Line;

/// The labels and identity of one acquisition, as events and metrics
/// report it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) backend: &'static str,
    pub(crate) session: &'a OsStr,
    pub(crate) lane: Option<&'a str>,
    pub(crate) run: Option<&'a str>,
}

impl<'a> Ctx<'a> {
    fn line(&self) -> Line<'a> {
        Line {
            backend: Some(self.backend),
            session: Some(self.session),
            lane: self.lane,
            run: self.run,
            ..Line::default()
        }
    }

    fn lane(&self) -> String {
        self.lane.unwrap_or_default().to_owned()
    }

    /// Records how long an acquisition waited, and how it ended.
    fn record_wait(&self, waited: Duration, outcome: &'static str) {
        metrics::histogram!(names::ACQUIRE_WAIT_SECONDS, "backend" => self.backend, "lane" => self.lane(), "outcome" => outcome)
            .record(waited.as_secs_f64());
    }

    /// Records how long a lock was held, and how the hold ended.
    fn record_hold(&self, held: Duration, end: &'static str) {
        metrics::histogram!(names::HOLD_SECONDS, "backend" => self.backend, "lane" => self.lane(), "end" => end)
            .record(held.as_secs_f64());
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// When something happened, on both clocks: the event's time (the wall
/// clock) and what durations are measured with. Taken before a release, so
/// that a hold's end is logged before the next holder's start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    pub(crate) at: Instant,
    us: u64,
}

impl Stamp {
    pub(crate) fn now() -> Stamp {
        Stamp {
            at: Instant::now(),
            us: events::now_us(),
        }
    }
}

/// An acquisition took its lock after waiting `waited`.
pub(crate) fn acquired(c: &Ctx<'_>, epoch: u64, waited: Duration) {
    c.record_wait(waited, "acquired");
    if events::on() {
        events::log(
            "acquired",
            &Line {
                epoch: Some(epoch),
                waited_us: Some(us(waited)),
                ..c.line()
            },
        );
    }
}

/// An acquisition's budget ran out.
pub(crate) fn gave_up(c: &Ctx<'_>, waited: Duration, holder_pid: Option<u32>) {
    c.record_wait(waited, "timeout");
    if events::on() {
        events::log(
            "gave-up",
            &Line {
                waited_us: Some(us(waited)),
                holder_pid,
                ..c.line()
            },
        );
    }
}

/// An acquisition failed otherwise.
pub(crate) fn failed(c: &Ctx<'_>, waited: Duration, error: &dyn std::fmt::Display) {
    c.record_wait(waited, "error");
    if events::on() {
        let error = error.to_string();
        events::log(
            "failed",
            &Line {
                waited_us: Some(us(waited)),
                error: Some(&error),
                ..c.line()
            },
        );
    }
}

/// A hold ended by a release; `handed_off` when the lock went straight to
/// a lane of this process.
pub(crate) fn released(c: &Ctx<'_>, epoch: u64, held: Duration, handed_off: bool, ended: Stamp) {
    let end = if handed_off { "handed_off" } else { "released" };
    c.record_hold(held, end);
    if handed_off {
        metrics::counter!(names::HANDOFFS_TOTAL, "backend" => c.backend, "lane" => c.lane())
            .increment(1);
    }
    if events::on() {
        events::log_at(
            "released",
            ended.us,
            &Line {
                epoch: Some(epoch),
                held_us: Some(us(held)),
                handed_off: Some(handed_off),
                ..c.line()
            },
        );
    }
}

/// A hold ended by the lock's loss (`cause`: `overdue`, `removed`,
/// `replaced`, `connection_lost`).
pub(crate) fn revoked(c: &Ctx<'_>, epoch: u64, held: Duration, cause: &'static str, ended: Stamp) {
    c.record_hold(held, "revoked");
    metrics::counter!(names::REVOCATIONS_TOTAL, "backend" => c.backend, "lane" => c.lane(), "cause" => cause)
        .increment(1);
    if events::on() {
        events::log_at(
            "revoked",
            ended.us,
            &Line {
                epoch: Some(epoch),
                held_us: Some(us(held)),
                cause: Some(cause),
                ..c.line()
            },
        );
    }
}

/// A release failed (the lock stays, for the next waiter to reclaim): the
/// hold ends for its holder all the same.
pub(crate) fn release_failed(
    c: &Ctx<'_>,
    epoch: u64,
    held: Duration,
    error: &dyn std::fmt::Display,
    ended: Stamp,
) {
    c.record_hold(held, "release_failed");
    if events::on() {
        let error = error.to_string();
        events::log_at(
            "released",
            ended.us,
            &Line {
                epoch: Some(epoch),
                held_us: Some(us(held)),
                handed_off: Some(false),
                error: Some(&error),
                ..c.line()
            },
        );
    }
}

/// A stale lock was taken over by this process.
pub(crate) fn reclaimed(
    c: &Ctx<'_>,
    reasons: &[&'static str],
    holder_pid: Option<u32>,
    holder_epoch: Option<u64>,
) {
    let reason = reasons.first().copied().unwrap_or("unknown");
    metrics::counter!(names::RECLAIMS_TOTAL, "backend" => c.backend, "reason" => reason)
        .increment(1);
    if events::on() {
        events::log(
            "reclaimed",
            &Line {
                reasons: Some(reasons.to_vec()),
                holder_pid,
                holder_epoch,
                ..c.line()
            },
        );
    }
}

/// A fenced write of the hold at `epoch` was refused (`error`: `revoked`,
/// `fenced`).
pub(crate) fn refused(c: &Ctx<'_>, epoch: u64, error: &'static str) {
    metrics::counter!(names::FENCED_WRITES_REFUSED_TOTAL, "backend" => c.backend, "lane" => c.lane(), "error" => error)
        .increment(1);
    if events::on() {
        events::log(
            "refused",
            &Line {
                epoch: Some(epoch),
                error: Some(error),
                ..c.line()
            },
        );
    }
}

/// A fenced append of `entries` entries, `bytes` bytes, landed.
pub(crate) fn appended(c: &Ctx<'_>, epoch: u64, entries: u64, bytes: u64) {
    metrics::counter!(names::TRANSCRIPT_APPENDS_TOTAL, "backend" => c.backend).increment(1);
    metrics::counter!(names::TRANSCRIPT_ENTRIES_TOTAL, "backend" => c.backend).increment(entries);
    metrics::counter!(names::TRANSCRIPT_BYTES_TOTAL, "backend" => c.backend).increment(bytes);
    if events::on() {
        events::log(
            "appended",
            &Line {
                epoch: Some(epoch),
                entries: Some(entries),
                bytes: Some(bytes),
                ..c.line()
            },
        );
    }
}

/// A torn tail of `bytes` bytes was cut off the transcript of `session`.
pub(crate) fn repaired(backend: &'static str, session: &OsStr, bytes: u64) {
    metrics::counter!(names::TORN_TAILS_REPAIRED_TOTAL, "backend" => backend).increment(1);
    if events::on() {
        events::log(
            "repaired",
            &Line {
                backend: Some(backend),
                session: Some(session),
                bytes: Some(bytes),
                ..Line::default()
            },
        );
    }
}

/// A waiter took its place in the session's line, the session being at
/// `epoch` then.
pub(crate) fn queued(c: &Ctx<'_>, epoch: Option<u64>) {
    if events::on() {
        events::log("queued", &Line { epoch, ..c.line() });
    }
}

/// For a backend of another crate: logs that a waiter of `session`
/// (with `lane` and `run`) queued, the session being at `epoch` then.
#[cfg(feature = "internals")]
pub fn backend_queued(
    backend: &'static str,
    session: &OsStr,
    lane: Option<&str>,
    run: Option<&str>,
    epoch: Option<u64>,
) {
    queued(
        &Ctx {
            backend,
            session,
            lane,
            run,
        },
        epoch,
    );
}

/// An attempt detected a takeover.
pub(crate) fn takeover(
    c: &Ctx<'_>,
    phase: &str,
    kind: &'static str,
    detail: &dyn std::fmt::Display,
) {
    metrics::counter!(names::TAKEOVERS_TOTAL, "backend" => c.backend, "kind" => kind).increment(1);
    if events::on() {
        let detail = detail.to_string();
        events::log(
            "takeover",
            &Line {
                phase: Some(phase),
                cause: Some(kind),
                detail: Some(&detail),
                ..c.line()
            },
        );
    }
}

/// An attempt released its lock for a model call.
pub(crate) fn prompt_start(c: &Ctx<'_>) {
    if events::on() {
        events::log("prompt-start", &c.line());
    }
}

/// An attempt's model call ended (it reacquires next, or was aborted).
pub(crate) fn prompt_end(c: &Ctx<'_>, since: Instant) {
    if events::on() {
        events::log(
            "prompt-end",
            &Line {
                window_us: Some(us(since.elapsed())),
                ..c.line()
            },
        );
    }
}

/// Counts an acquisition as waiting while it lives
/// ([`names::WAITERS`]); dropped before [`Waiting::finish`] (a cancelled
/// async acquisition), logs it as `cancelled`.
#[must_use]
pub(crate) struct Waiting {
    backend: &'static str,
    started: Instant,
    /// The acquisition's session, lane and run, kept only while the event
    /// log is on.
    cancelled: Option<(std::ffi::OsString, Option<String>, Option<String>)>,
}

impl Waiting {
    pub(crate) fn start(c: &Ctx<'_>, started: Instant) -> Waiting {
        metrics::gauge!(names::WAITERS, "backend" => c.backend).increment(1.0);
        Waiting {
            backend: c.backend,
            started,
            cancelled: events::on().then(|| {
                (
                    c.session.to_owned(),
                    c.lane.map(str::to_owned),
                    c.run.map(str::to_owned),
                )
            }),
        }
    }

    /// The acquisition has its outcome (logged by the caller).
    pub(crate) fn finish(mut self) {
        self.cancelled = None;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!(names::WAITERS, "backend" => self.backend).decrement(1.0);
        if let Some((session, lane, run)) = self.cancelled.take() {
            events::log(
                "cancelled",
                &Line {
                    backend: Some(self.backend),
                    session: Some(&session),
                    lane: lane.as_deref(),
                    run: run.as_deref(),
                    waited_us: Some(us(self.started.elapsed())),
                    ..Line::default()
                },
            );
        }
    }
}
