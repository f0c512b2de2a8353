//! Configuration: every setting, its default, its environment variables,
//! where to set it in code and on the command line, and which source wins.
//!
//! | setting | default | environment (sessionlock's, then OpenClaw's) | library | CLI flag | which wins |
//! |---|---|---|---|---|---|
//! | acquire timeout: one budget for the whole acquisition | 60 000 ms | `SESSIONLOCK_ACQUIRE_TIMEOUT_MS` (digits, or `Infinity`: wait forever), `OPENCLAW_SESSION_WRITE_LOCK_ACQUIRE_TIMEOUT_MS` | [`LockOptions::timeout`], [`Config::acquire_timeout`] | `--timeout-ms` (`exec`, `append`, `repair`) | flag or builder, then environment, then `Config`, then default |
//! | max hold: the lease, after which the watchdog revokes the lock and others may reclaim it | 300 000 ms (at most [`MAX_HOLD_CAP`]) | `SESSIONLOCK_MAX_HOLD_MS`, `OPENCLAW_SESSION_WRITE_LOCK_MAX_HOLD_MS` (greater than 0) | [`LockOptions::max_hold`], [`Config::max_hold`] | `--max-hold-ms` (`exec`) | flag or builder, then environment, then `Config`, then default |
//! | stale after: age at which a live lock is reported `too-old` (never acted on) | 1 800 000 ms | `SESSIONLOCK_STALE_MS`, `OPENCLAW_SESSION_WRITE_LOCK_STALE_MS` | [`LockOptions::stale_after`], [`Config::stale_after`] | none | builder, then environment, then `Config`, then default |
//! | hold-exceeded policy: a live sessionlock holder past its lease | `reclaim` (it is fenced) | `SESSIONLOCK_HOLD_EXCEEDED` (`reclaim` or `report`) | [`LockOptions::hold_exceeded`], [`Config::hold_exceeded`] | none | builder, then environment, then `Config`, then default |
//! | foreign hold-exceeded policy: a live OpenClaw holder past its lease (cannot be fenced; a reclaim is logged as unfenced) | the hold-exceeded policy's | `SESSIONLOCK_FOREIGN_HOLD_EXCEEDED` (`reclaim` or `report`) | [`LockOptions::foreign_hold_exceeded`], [`Config::foreign_hold_exceeded`] | none | builder, then environment, then `Config`, then default |
//! | OpenClaw-compatible mode ([`crate::openclaw`]) | off | `SESSIONLOCK_OPENCLAW_COMPAT` (`1` or `0`) | [`LockOptions::openclaw_compat`], [`Config::openclaw_compat`] | `--openclaw-compat` (global; turns it on, never off) | flag or builder, then environment, then `Config`, then default |
//! | change notification | `auto` (inotify and pidfd) | `SESSIONLOCK_NOTIFY` (`auto` or `poll`: 5–100 ms backoff) | [`FileBackend::new`](crate::FileBackend::new) with [`Notify`](crate::Notify) | none | the backend given to [`SessionLock::with_backend`]; the environment only through [`SessionLock::new`] |
//! | lane, run id: labels recorded in the lock | none | none | [`LockOptions::lane`], [`LockOptions::run_id`] | `--lane` (default `cli`), `--run-id` (`exec`) | flag or builder |
//! | reentrant acquisition | off | none | [`LockOptions::reentrant`] | none | builder |
//! | sessions root: session files must resolve inside it | none | none | [`FileBackend::confined`](crate::FileBackend::confined) | `--root` | flag or builder |
//! | backend | files | `SESSIONLOCK_BACKEND` (`file` or a `postgres://` URL; CLI and Node.js binding only) | [`SessionLock::with_backend`] | `--backend` | flag, then environment, then files |
//! | log filter (CLI and Node.js binding) | `warn` | `SESSIONLOCK_LOG` (a `tracing` filter) | your own `tracing` subscriber | none | environment |
//!
//! [`Settings`] has the same fields as [`Config`], resolved.
//!
//! # Which wins
//!
//! 1. **An explicit value at the call**: a [`LockOptions`] builder method
//!    (or field) set in code, a command-line flag, or an option passed to a
//!    call of the Node.js package. It is applied last, so it wins over the
//!    environment.
//! 2. **The environment.** [`LockOptions::from_env`], [`SessionLock::new`]
//!    (whose options [`SessionLock::acquire`] and
//!    [`SessionLock::try_acquire`] use) and [`Config::resolve`] read it.
//!    sessionlock's name is read before OpenClaw's.
//! 3. **A [`Config`]**: an application's own configuration (a file it
//!    read, say), resolved with [`Config::resolve`]. The environment
//!    overrides it, so that an operator can change a deployed gateway's
//!    settings without touching its configuration.
//! 4. **The default** (the constants below).
//!
//! [`LockOptions::default`] reads no environment: the defaults, then
//! whatever builder methods set.
//!
//! Environment values must be plain decimal digits within a safe integer
//! (2^53 − 1, what a JavaScript gateway can represent); anything else
//! (`1e3`, `0x10`, `-5`, `+5`, ` 5`, huge values) is ignored with a
//! warning, and the next name, then the next source, is used. Only the
//! acquire timeout accepts `Infinity`. A lease of zero is meaningless (the
//! payload requires `maxHoldMs > 0`), so `0` is refused for the max hold.
//!
//! ```
//! use std::time::Duration;
//! use sessionlock::config::Config;
//! use sessionlock::LockOptions;
//!
//! // The application's configuration asks for a 60 s lease...
//! let mut app = Config::default();
//! app.max_hold = Some(Duration::from_secs(60));
//! // ...the operator's environment overrides it...
//! let env = |var: &str| (var == "SESSIONLOCK_MAX_HOLD_MS").then(|| "90000".to_owned());
//! let (settings, ignored) = app.resolve_with(env);
//! assert!(ignored.is_empty());
//! assert_eq!(settings.max_hold, Duration::from_secs(90));
//! // ...and a builder method, applied last, overrides both.
//! let opts = LockOptions::from_settings(&settings).max_hold(Duration::from_secs(30));
//! assert_eq!(opts.max_hold, Duration::from_secs(30));
//! ```
//!
//! [`LockOptions`]: crate::LockOptions
//! [`LockOptions::timeout`]: crate::LockOptions::timeout
//! [`LockOptions::max_hold`]: crate::LockOptions::max_hold
//! [`LockOptions::stale_after`]: crate::LockOptions::stale_after
//! [`LockOptions::hold_exceeded`]: crate::LockOptions::hold_exceeded
//! [`LockOptions::foreign_hold_exceeded`]: crate::LockOptions::foreign_hold_exceeded
//! [`LockOptions::openclaw_compat`]: crate::LockOptions::openclaw_compat
//! [`LockOptions::lane`]: crate::LockOptions::lane
//! [`LockOptions::run_id`]: crate::LockOptions::run_id
//! [`LockOptions::reentrant`]: crate::LockOptions::reentrant
//! [`LockOptions::from_env`]: crate::LockOptions::from_env
//! [`LockOptions::default`]: crate::LockOptions::default
//! [`SessionLock::new`]: crate::SessionLock::new
//! [`SessionLock::with_backend`]: crate::SessionLock::with_backend
//! [`SessionLock::acquire`]: crate::SessionLock::acquire
//! [`SessionLock::try_acquire`]: crate::SessionLock::try_acquire

use std::fmt;
use std::time::Duration;

/// Default acquire budget: 60 s.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(60_000);
/// Default age after which a live lock is reported `too-old`: 30 min.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_millis(1_800_000);
/// Default lease: 5 min.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_millis(300_000);
/// The largest lease: 2^31 − 1 ms (about 24.8 days), the longest timer a
/// JavaScript gateway can arm.
pub const MAX_HOLD_CAP: Duration = Duration::from_millis(2_147_483_647);

const SAFE_INTEGER_MAX: u64 = (1 << 53) - 1;

/// What to do when a live holder is past its own lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HoldExceededPolicy {
    /// Reclaim the lock (safe because the old holder is fenced).
    #[default]
    Reclaim,
    /// Fail fast with [`Error::Stale`](crate::Error::Stale) instead of waiting.
    Report,
}

impl fmt::Display for HoldExceededPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HoldExceededPolicy::Reclaim => "reclaim",
            HoldExceededPolicy::Report => "report",
        })
    }
}

/// An application's configuration; `None` fields fall back to the default.
/// The environment overrides both, and [`LockOptions`](crate::LockOptions)
/// builder methods override all three (see the [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Acquire budget; `Some(None)` means wait forever.
    pub acquire_timeout: Option<Option<Duration>>,
    /// Age after which a live lock is reported `too-old`.
    pub stale_after: Option<Duration>,
    /// Lease written into the payload.
    pub max_hold: Option<Duration>,
    /// Policy for live holders past their lease.
    pub hold_exceeded: Option<HoldExceededPolicy>,
    /// Policy for live *foreign* (OpenClaw) holders past their lease; they
    /// cannot be fenced, so reclaiming them is an unfenced reclaim. Unset,
    /// it follows the hold-exceeded policy.
    pub foreign_hold_exceeded: Option<HoldExceededPolicy>,
    /// OpenClaw-compatible mode (see [`crate::openclaw`]).
    pub openclaw_compat: Option<bool>,
}

/// Fully resolved settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Acquire budget; `None` waits forever.
    pub acquire_timeout: Option<Duration>,
    /// Age after which a live lock is reported `too-old`.
    pub stale_after: Duration,
    /// Lease written into the payload.
    pub max_hold: Duration,
    /// Policy for live holders past their lease.
    pub hold_exceeded: HoldExceededPolicy,
    /// Policy for live foreign (OpenClaw) holders past their lease; `None`
    /// follows `hold_exceeded`.
    pub foreign_hold_exceeded: Option<HoldExceededPolicy>,
    /// OpenClaw-compatible mode: lock files readable by OpenClaw, and (for
    /// the CLI) holding processes marked so that OpenClaw honours them.
    pub openclaw_compat: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            acquire_timeout: Some(DEFAULT_ACQUIRE_TIMEOUT),
            stale_after: DEFAULT_STALE_AFTER,
            max_hold: DEFAULT_MAX_HOLD,
            hold_exceeded: HoldExceededPolicy::Reclaim,
            foreign_hold_exceeded: None,
            openclaw_compat: false,
        }
    }
}

/// An environment value that was ignored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigWarning {
    /// The variable.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// Why it was ignored.
    pub reason: &'static str,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ignoring {}={:?}: {}", self.var, self.value, self.reason)
    }
}

/// Environment variable names, sessionlock's first, then OpenClaw's fallback.
pub const ENV_ACQUIRE_TIMEOUT: [&str; 2] = [
    "SESSIONLOCK_ACQUIRE_TIMEOUT_MS",
    "OPENCLAW_SESSION_WRITE_LOCK_ACQUIRE_TIMEOUT_MS",
];
/// See [`ENV_ACQUIRE_TIMEOUT`].
pub const ENV_STALE: [&str; 2] = [
    "SESSIONLOCK_STALE_MS",
    "OPENCLAW_SESSION_WRITE_LOCK_STALE_MS",
];
/// See [`ENV_ACQUIRE_TIMEOUT`].
pub const ENV_MAX_HOLD: [&str; 2] = [
    "SESSIONLOCK_MAX_HOLD_MS",
    "OPENCLAW_SESSION_WRITE_LOCK_MAX_HOLD_MS",
];
/// How waiters learn of changes: `auto` (inotify and pidfd where the file
/// system supports them) or `poll` (5–100 ms backoff); read by
/// [`SessionLock::new`](crate::SessionLock::new).
pub const ENV_NOTIFY: &str = "SESSIONLOCK_NOTIFY";
/// Hold-exceeded policy (`reclaim` or `report`); no OpenClaw equivalent.
pub const ENV_HOLD_EXCEEDED: &str = "SESSIONLOCK_HOLD_EXCEEDED";
/// Hold-exceeded policy for foreign (OpenClaw) holders, which cannot be
/// fenced (`reclaim` or `report`).
pub const ENV_FOREIGN_HOLD_EXCEEDED: &str = "SESSIONLOCK_FOREIGN_HOLD_EXCEEDED";
/// OpenClaw-compatible mode (`1` on, `0` off); see [`crate::openclaw`].
pub const ENV_OPENCLAW_COMPAT: &str = "SESSIONLOCK_OPENCLAW_COMPAT";

/// Parses a millisecond value as the environment's are read (see the
/// [module docs](self)): plain ASCII decimal digits within a safe integer. `allow_infinity` admits `Infinity` (→ `None`).
pub fn parse_ms(value: &str, allow_infinity: bool) -> Result<Option<Duration>, &'static str> {
    if allow_infinity && value == "Infinity" {
        return Ok(None);
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(if allow_infinity {
            "expected decimal digits or Infinity"
        } else {
            "expected decimal digits"
        });
    }
    match value.parse::<u64>() {
        Ok(ms) if ms <= SAFE_INTEGER_MAX => Ok(Some(Duration::from_millis(ms))),
        _ => Err("larger than the largest safe integer"),
    }
}

impl Config {
    /// Resolves against the process environment, logging ignored values as
    /// warnings (`tracing`).
    pub fn resolve(&self) -> Settings {
        let (settings, warnings) = self.resolve_with(|k| std::env::var(k).ok());
        for w in warnings {
            tracing::warn!(
                target: "sessionlock::config",
                var = w.var,
                value = w.value.as_str(),
                reason = w.reason,
                "ignoring an invalid environment variable"
            );
        }
        settings
    }

    /// Resolves against an arbitrary variable lookup; returns the settings and
    /// the values it ignored. This is the seam the tests use.
    pub fn resolve_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> (Settings, Vec<ConfigWarning>) {
        let d = Settings::default();
        let mut warnings = Vec::new();
        let mut env_ms = |names: &[&'static str], infinity: bool, positive: bool| {
            for &var in names {
                let Some(value) = lookup(var) else { continue };
                match parse_ms(&value, infinity) {
                    Ok(Some(v)) if positive && v.is_zero() => warnings.push(ConfigWarning {
                        var,
                        value,
                        reason: "must be greater than zero",
                    }),
                    Ok(v) => return Some(v),
                    Err(reason) => warnings.push(ConfigWarning { var, value, reason }),
                }
            }
            None
        };
        let acquire_timeout = env_ms(&ENV_ACQUIRE_TIMEOUT, true, false)
            .or(self.acquire_timeout)
            .unwrap_or(d.acquire_timeout);
        let stale_after = env_ms(&ENV_STALE, false, false)
            .flatten()
            .or(self.stale_after)
            .unwrap_or(d.stale_after);
        let max_hold = env_ms(&ENV_MAX_HOLD, false, true)
            .flatten()
            .or(self.max_hold)
            .unwrap_or(d.max_hold)
            .min(MAX_HOLD_CAP);
        let mut policy_env = |var: &'static str| {
            lookup(var).and_then(|v| match v.as_str() {
                "reclaim" => Some(HoldExceededPolicy::Reclaim),
                "report" => Some(HoldExceededPolicy::Report),
                _ => {
                    warnings.push(ConfigWarning {
                        var,
                        value: v,
                        reason: "expected reclaim or report",
                    });
                    None
                }
            })
        };
        let hold_exceeded = policy_env(ENV_HOLD_EXCEEDED)
            .or(self.hold_exceeded)
            .unwrap_or(d.hold_exceeded);
        let foreign_hold_exceeded = policy_env(ENV_FOREIGN_HOLD_EXCEEDED)
            .or(self.foreign_hold_exceeded)
            .or(d.foreign_hold_exceeded);
        let compat_env = lookup(ENV_OPENCLAW_COMPAT).and_then(|v| match v.as_str() {
            "1" => Some(true),
            "0" => Some(false),
            _ => {
                warnings.push(ConfigWarning {
                    var: ENV_OPENCLAW_COMPAT,
                    value: v,
                    reason: "expected 1 or 0",
                });
                None
            }
        });
        let openclaw_compat = compat_env
            .or(self.openclaw_compat)
            .unwrap_or(d.openclaw_compat);
        (
            Settings {
                acquire_timeout,
                stale_after,
                max_hold,
                hold_exceeded,
                foreign_hold_exceeded,
                openclaw_compat,
            },
            warnings,
        )
    }
}

/// Derives a lease from a work timeout: `min(cap, max(300 s, timeout + 120 s))`;
/// an infinite timeout (`None`) gives the cap.
///
/// ```
/// use std::time::Duration;
/// use sessionlock::config::{max_hold_for_timeout, MAX_HOLD_CAP};
/// assert_eq!(max_hold_for_timeout(Some(Duration::from_secs(10))), Duration::from_secs(300));
/// assert_eq!(max_hold_for_timeout(Some(Duration::from_secs(600))), Duration::from_secs(720));
/// assert_eq!(max_hold_for_timeout(None), MAX_HOLD_CAP);
/// ```
pub fn max_hold_for_timeout(timeout: Option<Duration>) -> Duration {
    match timeout {
        None => MAX_HOLD_CAP,
        Some(t) => t
            .saturating_add(Duration::from_millis(120_000))
            .max(DEFAULT_MAX_HOLD)
            .min(MAX_HOLD_CAP),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(cfg: &Config, env: &[(&str, &str)]) -> (Settings, Vec<ConfigWarning>) {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cfg.resolve_with(|k| env.get(k).cloned())
    }

    #[test]
    fn parse_ms_accepts_exactly_plain_digits() {
        for ok in ["0", "1", "60000", "007", "9007199254740991"] {
            assert!(parse_ms(ok, false).is_ok(), "{ok} should parse");
        }
        for bad in [
            "",
            "1e3",
            "0x10",
            "-5",
            "+5",
            " 5",
            "5 ",
            "5.0",
            "9007199254740992",
            "99999999999999999999999",
            "Infinity",
            "infinity",
            "NaN",
            "٣",
        ] {
            assert!(parse_ms(bad, false).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(parse_ms("Infinity", true), Ok(None));
        assert!(parse_ms("-Infinity", true).is_err());
        assert!(parse_ms("inf", true).is_err());
    }

    #[test]
    fn env_overrides_explicit_overrides_default() {
        let explicit = Config {
            acquire_timeout: Some(Some(Duration::from_millis(5))),
            stale_after: Some(Duration::from_millis(6)),
            max_hold: Some(Duration::from_millis(7)),
            hold_exceeded: Some(HoldExceededPolicy::Report),
            ..Config::default()
        };
        let (s, w) = resolve(&explicit, &[]);
        assert!(w.is_empty());
        assert_eq!(s.acquire_timeout, Some(Duration::from_millis(5)));
        assert_eq!(s.stale_after, Duration::from_millis(6));
        assert_eq!(s.max_hold, Duration::from_millis(7));
        assert_eq!(s.hold_exceeded, HoldExceededPolicy::Report);

        let (s, w) = resolve(
            &explicit,
            &[
                ("SESSIONLOCK_ACQUIRE_TIMEOUT_MS", "Infinity"),
                ("SESSIONLOCK_STALE_MS", "100"),
                ("SESSIONLOCK_MAX_HOLD_MS", "200"),
                ("SESSIONLOCK_HOLD_EXCEEDED", "reclaim"),
            ],
        );
        assert!(w.is_empty());
        assert_eq!(s.acquire_timeout, None);
        assert_eq!(s.stale_after, Duration::from_millis(100));
        assert_eq!(s.max_hold, Duration::from_millis(200));
        assert_eq!(s.hold_exceeded, HoldExceededPolicy::Reclaim);

        assert_eq!(resolve(&Config::default(), &[]).0, Settings::default());
    }

    #[test]
    fn openclaw_names_are_fallbacks() {
        let (s, w) = resolve(
            &Config::default(),
            &[
                ("OPENCLAW_SESSION_WRITE_LOCK_ACQUIRE_TIMEOUT_MS", "1234"),
                ("OPENCLAW_SESSION_WRITE_LOCK_STALE_MS", "2345"),
                ("OPENCLAW_SESSION_WRITE_LOCK_MAX_HOLD_MS", "3456"),
            ],
        );
        assert!(w.is_empty());
        assert_eq!(s.acquire_timeout, Some(Duration::from_millis(1234)));
        assert_eq!(s.stale_after, Duration::from_millis(2345));
        assert_eq!(s.max_hold, Duration::from_millis(3456));

        // sessionlock's own name wins over OpenClaw's.
        let (s, _) = resolve(
            &Config::default(),
            &[
                ("SESSIONLOCK_MAX_HOLD_MS", "10"),
                ("OPENCLAW_SESSION_WRITE_LOCK_MAX_HOLD_MS", "20"),
            ],
        );
        assert_eq!(s.max_hold, Duration::from_millis(10));

        // An invalid sessionlock value falls through to a valid OpenClaw one.
        let (s, w) = resolve(
            &Config::default(),
            &[
                ("SESSIONLOCK_STALE_MS", "1e3"),
                ("OPENCLAW_SESSION_WRITE_LOCK_STALE_MS", "99"),
            ],
        );
        assert_eq!(s.stale_after, Duration::from_millis(99));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].var, "SESSIONLOCK_STALE_MS");
    }

    #[test]
    fn invalid_values_are_ignored_with_warnings() {
        let explicit = Config {
            max_hold: Some(Duration::from_millis(7)),
            ..Config::default()
        };
        let (s, w) = resolve(
            &explicit,
            &[
                ("SESSIONLOCK_ACQUIRE_TIMEOUT_MS", "0x10"),
                ("SESSIONLOCK_STALE_MS", "Infinity"),
                ("SESSIONLOCK_MAX_HOLD_MS", "0"),
                ("SESSIONLOCK_HOLD_EXCEEDED", "steal"),
            ],
        );
        assert_eq!(s.acquire_timeout, Settings::default().acquire_timeout);
        assert_eq!(s.stale_after, Settings::default().stale_after);
        assert_eq!(s.max_hold, Duration::from_millis(7));
        assert_eq!(s.hold_exceeded, HoldExceededPolicy::Reclaim);
        let vars: Vec<_> = w.iter().map(|w| w.var).collect();
        assert_eq!(
            vars,
            [
                "SESSIONLOCK_ACQUIRE_TIMEOUT_MS",
                "SESSIONLOCK_STALE_MS",
                "SESSIONLOCK_MAX_HOLD_MS",
                "SESSIONLOCK_HOLD_EXCEEDED"
            ]
        );
        assert!(w[0].to_string().contains("0x10"));
    }

    // Issue 9 item 3: OpenClaw-compatible mode and the foreign hold-exceeded
    // policy resolve like every other setting: environment, explicit, default.
    #[test]
    fn openclaw_compat_and_foreign_policy_resolve_env_then_explicit_then_default() {
        let d = resolve(&Config::default(), &[]).0;
        assert!(!d.openclaw_compat);
        assert_eq!(d.foreign_hold_exceeded, None, "follows hold_exceeded");
        let explicit = Config {
            openclaw_compat: Some(true),
            foreign_hold_exceeded: Some(HoldExceededPolicy::Report),
            ..Config::default()
        };
        let (s, w) = resolve(&explicit, &[]);
        assert!(w.is_empty());
        assert!(s.openclaw_compat);
        assert_eq!(s.foreign_hold_exceeded, Some(HoldExceededPolicy::Report));
        assert_eq!(s.hold_exceeded, HoldExceededPolicy::Reclaim);
        let (s, w) = resolve(
            &explicit,
            &[
                ("SESSIONLOCK_OPENCLAW_COMPAT", "0"),
                ("SESSIONLOCK_FOREIGN_HOLD_EXCEEDED", "reclaim"),
            ],
        );
        assert!(w.is_empty());
        assert!(!s.openclaw_compat);
        assert_eq!(s.foreign_hold_exceeded, Some(HoldExceededPolicy::Reclaim));
        let (s, w) = resolve(
            &Config::default(),
            &[
                ("SESSIONLOCK_OPENCLAW_COMPAT", "yes"),
                ("SESSIONLOCK_FOREIGN_HOLD_EXCEEDED", "steal"),
            ],
        );
        assert!(!s.openclaw_compat);
        assert_eq!(s.foreign_hold_exceeded, None);
        let vars: Vec<_> = w.iter().map(|w| w.var).collect();
        assert_eq!(
            vars,
            [
                "SESSIONLOCK_FOREIGN_HOLD_EXCEEDED",
                "SESSIONLOCK_OPENCLAW_COMPAT"
            ]
        );
    }

    #[test]
    fn acquire_timeout_zero_is_allowed() {
        let (s, w) = resolve(
            &Config::default(),
            &[("SESSIONLOCK_ACQUIRE_TIMEOUT_MS", "0")],
        );
        assert!(w.is_empty());
        assert_eq!(s.acquire_timeout, Some(Duration::ZERO));
    }

    #[test]
    fn max_hold_derivation() {
        let ms = Duration::from_millis;
        assert_eq!(max_hold_for_timeout(Some(ms(0))), ms(300_000));
        assert_eq!(max_hold_for_timeout(Some(ms(180_000))), ms(300_000));
        assert_eq!(max_hold_for_timeout(Some(ms(180_001))), ms(300_001));
        assert_eq!(max_hold_for_timeout(Some(Duration::MAX)), MAX_HOLD_CAP);
        assert_eq!(max_hold_for_timeout(Some(ms(3_000_000_000))), MAX_HOLD_CAP);
        assert_eq!(max_hold_for_timeout(None), MAX_HOLD_CAP);
    }
}
