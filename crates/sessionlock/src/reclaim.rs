//! Stale classification ([design §4](crate::design#4-stale-classification)):
//! what is wrong with a lock someone else holds, and what a contender may do
//! about it.

use std::time::{Duration, SystemTime};

use crate::config::{HoldExceededPolicy, DEFAULT_MAX_HOLD, MAX_HOLD_CAP};
use crate::identity::Liveness;
use crate::payload::{Malformed, Payload};
pub use crate::reason::{Reason, Reasons};

/// Payload grace for malformed or payload-less locks.
pub const PAYLOAD_GRACE: Duration = Duration::from_secs(30);
/// Payload grace when the acquire budget is under 30 s.
pub const SHORT_PAYLOAD_GRACE: Duration = Duration::from_secs(5);
/// How far a payload's `createdAt` may lie after the lock file's mtime (or
/// now) before the lock is flagged [`Reason::FutureCreatedAt`]: the file
/// times come from the kernel's coarse clock, which lags the clock a
/// writer reads by a few milliseconds.
pub const CLOCK_SLACK: Duration = Duration::from_secs(1);

/// What a contender may do about a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Remove it (remove-if-unchanged) and take the lock.
    Reclaim,
    /// Fail fast with a `Stale` error (hold-exceeded under policy `report`).
    Report,
    /// Wait. Something may change by itself at `until` (lease end, end of the
    /// payload grace); with `watch_holder`, the holder is alive and its end
    /// (a local process exiting, say) ends the wait too.
    Wait {
        /// When the verdict will change without any event, if ever.
        until: Option<SystemTime>,
        /// Whether the backend should watch the inspected holder.
        watch_holder: bool,
    },
}

impl Action {
    /// The name used in messages and JSON (`reclaim`, `report`, `wait`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reclaim => "reclaim",
            Action::Report => "report",
            Action::Wait { .. } => "wait",
        }
    }
}

/// The rules a contender applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Age after which a live lock is reported too old.
    pub stale_after: Duration,
    /// What to do with a live sessionlock holder past its lease.
    pub hold_exceeded: HoldExceededPolicy,
    /// What to do with a live foreign (OpenClaw) holder past its lease: it
    /// cannot be fenced, so reclaiming it is an *unfenced* reclaim.
    pub foreign_hold_exceeded: HoldExceededPolicy,
    /// How long a malformed or payload-less lock is left alone (by file mtime).
    pub payload_grace: Duration,
}

impl Policy {
    /// The payload grace [design §4](crate::design#4-stale-classification)
    /// gives for an acquire budget: 30 s, or 5 s when the budget is under 30 s;
    /// never longer than `stale_after`.
    pub fn grace_for_budget(budget: Option<Duration>, stale_after: Duration) -> Duration {
        let grace = match budget {
            Some(b) if b < PAYLOAD_GRACE => SHORT_PAYLOAD_GRACE,
            _ => PAYLOAD_GRACE,
        };
        grace.min(stale_after)
    }
}

/// The classification of one lock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Assessment {
    /// Why the lock looks stale (empty for a healthy lock).
    pub reasons: Reasons,
    /// The liveness check's verdict.
    pub liveness: Liveness,
    /// Age of the lock (from `createdAt`, never later than the file's
    /// mtime or now; else from the file's mtime).
    pub age: Duration,
    /// When the holder's lease ends, if known: `createdAt` (clamped as for
    /// `age`) plus `maxHoldMs` (at most [`MAX_HOLD_CAP`]).
    pub lease_end: Option<SystemTime>,
    /// What a contender may do.
    pub action: Action,
}

/// Classifies a lock. `payload` is the parsed payload or why it could not be
/// parsed; `written` is when the lock was last written and `now` the
/// backend's clock; `liveness` and `ours` are the backend's verdict on the
/// holder (see [`Inspection`](crate::backend::Inspection)).
///
/// A payload's claims are bounded by what sessionlock itself would write, so
/// that no lock pins a session longer than the longest lease there is: its
/// lease counts from `createdAt` but never from later than `written` or
/// `now` ([`Reason::FutureCreatedAt`] beyond [`CLOCK_SLACK`]), and lasts
/// `maxHoldMs` but never longer than [`MAX_HOLD_CAP`]
/// ([`Reason::LeaseClamped`]).
pub fn classify(
    payload: Result<&Payload, &Malformed>,
    mtime: SystemTime,
    now: SystemTime,
    policy: &Policy,
    liveness: Liveness,
    mine: bool,
    held_here: bool,
) -> Assessment {
    let since = |t: SystemTime| now.duration_since(t).unwrap_or(Duration::ZERO);
    let grace = |reasons: Reasons, liveness| {
        // A time near the end of `SystemTime` never comes: no overflow.
        let ready = mtime.checked_add(policy.payload_grace).unwrap_or(mtime);
        Assessment {
            reasons,
            liveness,
            age: since(mtime),
            lease_end: None,
            action: if now >= ready {
                Action::Reclaim
            } else {
                Action::Wait {
                    until: Some(ready),
                    watch_holder: false,
                }
            },
        }
    };
    let p = match payload {
        Err(_) => return grace(Reasons::from_iter([Reason::Malformed]), liveness),
        Ok(p) => p,
    };
    let mut reasons = Reasons::default();
    if p.pid.is_none() {
        reasons.insert(Reason::MissingPid);
    }
    let Some(created) = p.created_at else {
        reasons.insert(Reason::Malformed);
        return grace(reasons, liveness);
    };
    if p.pid.is_none() {
        return grace(reasons, liveness);
    }
    let written = mtime.min(now);
    let created = if created > written {
        if created.duration_since(written).unwrap_or_default() > CLOCK_SLACK {
            reasons.insert(Reason::FutureCreatedAt);
        }
        written
    } else {
        created
    };
    let mut lease = p
        .max_hold_ms
        .map_or(DEFAULT_MAX_HOLD, Duration::from_millis);
    if lease > MAX_HOLD_CAP {
        reasons.insert(Reason::LeaseClamped);
        lease = MAX_HOLD_CAP;
    }
    let age = since(created);
    // `created` is at most now and `lease` at most the cap: no overflow.
    let lease_end = created.checked_add(lease).unwrap_or(created);
    let dead = match liveness {
        Liveness::Dead => Some(Reason::DeadPid),
        Liveness::Recycled => Some(Reason::RecycledPid),
        _ if mine && !held_here => Some(Reason::OrphanSelfPid),
        _ => None,
    };
    let action = if let Some(r) = dead {
        reasons.insert(r);
        Action::Reclaim
    } else if now > lease_end {
        reasons.insert(Reason::HoldExceeded);
        let rule = if crate::openclaw::is_foreign(p) {
            policy.foreign_hold_exceeded
        } else {
            policy.hold_exceeded
        };
        match rule {
            HoldExceededPolicy::Reclaim => Action::Reclaim,
            HoldExceededPolicy::Report => Action::Report,
        }
    } else {
        if age > policy.stale_after {
            reasons.insert(Reason::TooOld);
        }
        Action::Wait {
            until: Some(lease_end),
            watch_holder: liveness == Liveness::Alive,
        }
    };
    Assessment {
        reasons,
        liveness,
        age,
        lease_end: Some(lease_end),
        action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{self, SelfIdentity};

    /// Classifies on the file backend's local evidence, as its inspection
    /// would.
    fn assess(
        payload: Result<&Payload, &Malformed>,
        written: SystemTime,
        now: SystemTime,
        policy: &Policy,
        me: &SelfIdentity,
        held_here: bool,
    ) -> Assessment {
        let (liveness, ours) = match payload {
            Ok(p) => identity::judge(p, me),
            Err(_) => (Liveness::Unknown, false),
        };
        classify(payload, written, now, policy, liveness, ours, held_here)
    }

    fn policy() -> Policy {
        Policy {
            stale_after: Duration::from_secs(60),
            hold_exceeded: HoldExceededPolicy::Reclaim,
            foreign_hold_exceeded: HoldExceededPolicy::Reclaim,
            payload_grace: Duration::from_secs(30),
        }
    }

    fn live(me: &SelfIdentity, created: SystemTime, max_hold_s: u64) -> Payload {
        Payload {
            pid: Some(me.pid),
            starttime: me.starttime,
            created_at: Some(created),
            max_hold_ms: Some(max_hold_s * 1000),
            owner: Some(crate::payload::OWNER.into()),
            ..Payload::default()
        }
    }

    #[test]
    fn healthy_live_lock_waits_for_lease_end() {
        let me = SelfIdentity::current();
        let now = SystemTime::now();
        let p = live(&me, now, 10);
        let a = assess(Ok(&p), now, now, &policy(), &me, true);
        assert!(a.reasons.is_empty());
        assert_eq!(
            a.action,
            Action::Wait {
                until: Some(now + Duration::from_secs(10)),
                watch_holder: true
            }
        );
    }

    #[test]
    fn own_pid_not_held_here_is_orphan() {
        let me = SelfIdentity::current();
        let now = SystemTime::now();
        let p = live(&me, now, 10);
        let a = assess(Ok(&p), now, now, &policy(), &me, false);
        assert_eq!(a.reasons, Reasons::from_iter([Reason::OrphanSelfPid]));
        assert_eq!(a.action, Action::Reclaim);
    }

    #[test]
    fn hold_exceeded_follows_policy_and_too_old_is_report_only() {
        let me = SelfIdentity::current();
        let now = SystemTime::now();
        let p = live(&me, now - Duration::from_secs(20), 10);
        let a = assess(Ok(&p), now, now, &policy(), &me, true);
        assert_eq!(a.reasons, Reasons::from_iter([Reason::HoldExceeded]));
        assert_eq!(a.action, Action::Reclaim);
        let report = Policy {
            hold_exceeded: HoldExceededPolicy::Report,
            ..policy()
        };
        assert_eq!(
            assess(Ok(&p), now, now, &report, &me, true).action,
            Action::Report
        );

        let p = live(&me, now - Duration::from_secs(120), 3600);
        let a = assess(Ok(&p), now, now, &policy(), &me, true);
        assert_eq!(a.reasons, Reasons::from_iter([Reason::TooOld]));
        assert!(matches!(a.action, Action::Wait { .. }));
    }

    // Issue 9 item 3: a live foreign (OpenClaw) holder past its lease cannot
    // be fenced, so its policy is separate from sessionlock's own holders'.
    #[test]
    fn foreign_hold_exceeded_follows_its_own_policy() {
        let me = SelfIdentity::current();
        let now = SystemTime::now();
        let mut p = live(&me, now - Duration::from_secs(20), 10);
        p.owner = None; // what OpenClaw writes
        let report_foreign = Policy {
            foreign_hold_exceeded: HoldExceededPolicy::Report,
            ..policy()
        };
        assert_eq!(
            assess(Ok(&p), now, now, &report_foreign, &me, true).action,
            Action::Report
        );
        assert_eq!(
            assess(Ok(&p), now, now, &policy(), &me, true).action,
            Action::Reclaim
        );
        // sessionlock's own holders follow `hold_exceeded` alone.
        p.owner = Some(crate::payload::OWNER.into());
        assert_eq!(
            assess(Ok(&p), now, now, &report_foreign, &me, true).action,
            Action::Reclaim
        );
    }

    #[test]
    fn malformed_and_missing_pid_wait_out_the_grace() {
        let me = SelfIdentity::current();
        let now = SystemTime::now();
        let fresh = now - Duration::from_secs(1);
        let old = now - Duration::from_secs(31);
        let bad = Malformed::Empty;
        let a = assess(Err(&bad), fresh, now, &policy(), &me, false);
        assert_eq!(a.reasons, Reasons::from_iter([Reason::Malformed]));
        assert_eq!(
            a.action,
            Action::Wait {
                until: Some(fresh + Duration::from_secs(30)),
                watch_holder: false
            }
        );
        assert_eq!(
            assess(Err(&bad), old, now, &policy(), &me, false).action,
            Action::Reclaim
        );

        let no_pid = Payload {
            created_at: Some(now),
            max_hold_ms: Some(1000),
            ..Payload::default()
        };
        let a = assess(Ok(&no_pid), fresh, now, &policy(), &me, false);
        assert_eq!(a.reasons, Reasons::from_iter([Reason::MissingPid]));
        assert!(matches!(a.action, Action::Wait { .. }));
        assert_eq!(
            assess(Ok(&no_pid), old, now, &policy(), &me, false).action,
            Action::Reclaim
        );

        let no_time = Payload {
            pid: Some(me.pid),
            ..Payload::default()
        };
        let a = assess(Ok(&no_time), old, now, &policy(), &me, true);
        assert_eq!(a.reasons, Reasons::from_iter([Reason::Malformed]));
        assert_eq!(a.action, Action::Reclaim);
    }

    #[test]
    fn grace_for_budget() {
        let long = Duration::from_secs(3600);
        assert_eq!(Policy::grace_for_budget(None, long), PAYLOAD_GRACE);
        assert_eq!(
            Policy::grace_for_budget(Some(Duration::from_secs(30)), long),
            PAYLOAD_GRACE
        );
        assert_eq!(
            Policy::grace_for_budget(Some(Duration::from_secs(29)), long),
            SHORT_PAYLOAD_GRACE
        );
        assert_eq!(
            Policy::grace_for_budget(None, Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }

    // Issue 9 item 4: a payload's createdAt and maxHoldMs are bounded by
    // the file's write time, now and the lease cap; small skews are not
    // flagged.
    #[test]
    fn future_created_at_and_huge_leases_are_bounded() {
        let me = SelfIdentity::current();
        let now = SystemTime::now();
        let written = now - Duration::from_secs(5);
        let mut p = live(&me, now + Duration::from_secs(3600 * 24 * 365 * 900), 10);
        let a = assess(Ok(&p), written, now, &policy(), &me, true);
        assert_eq!(a.reasons, Reasons::from_iter([Reason::FutureCreatedAt]));
        assert_eq!(a.lease_end, Some(written + Duration::from_secs(10)));
        assert_eq!(a.age, Duration::from_secs(5));

        // The kernel's coarse file clock lags a writer's clock a little.
        p.created_at = Some(written + Duration::from_millis(4));
        let a = assess(Ok(&p), written, now, &policy(), &me, true);
        assert!(a.reasons.is_empty(), "{:?}", a.reasons);
        assert_eq!(a.lease_end, Some(written + Duration::from_secs(10)));

        // A clock stepped back: the file seems written in the future.
        p.created_at = Some(now + Duration::from_secs(60));
        let a = assess(
            Ok(&p),
            now + Duration::from_secs(60),
            now,
            &policy(),
            &me,
            true,
        );
        assert_eq!(a.reasons, Reasons::from_iter([Reason::FutureCreatedAt]));
        assert_eq!(a.lease_end, Some(now + Duration::from_secs(10)));

        p.created_at = Some(written);
        p.max_hold_ms = Some(u64::MAX);
        let a = assess(Ok(&p), written, now, &policy(), &me, true);
        assert_eq!(a.reasons, Reasons::from_iter([Reason::LeaseClamped]));
        assert_eq!(a.lease_end, Some(written + MAX_HOLD_CAP));
        assert!(matches!(a.action, Action::Wait { .. }));

        // A grace counted from a file time at the end of time never overflows.
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64);
        let _ = assess(Err(&Malformed::Empty), far, now, &policy(), &me, false);
    }

    #[test]
    fn reasons_display_in_stable_order() {
        let r = Reasons::from_iter([Reason::TooOld, Reason::DeadPid]);
        assert_eq!(r.to_string(), "dead-pid,too-old");
    }
}
