//! Environment configuration: any values in the variables sessionlock and
//! OpenClaw read (spec §11), checked against an independent reading of the
//! rules.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sessionlock::config::{
    parse_ms, Config, HoldExceededPolicy, Settings, ENV_ACQUIRE_TIMEOUT, ENV_FOREIGN_HOLD_EXCEEDED,
    ENV_HOLD_EXCEEDED, ENV_MAX_HOLD, ENV_OPENCLAW_COMPAT, ENV_STALE, MAX_HOLD_CAP,
};
use sessionlock_fuzz::fields;

const SAFE_INTEGER_MAX: u128 = (1 << 53) - 1;

/// Spec §11, written independently of `parse_ms`: plain ASCII digits within
/// a safe integer; `Infinity` where allowed.
fn oracle_ms(v: &str, infinity: bool) -> Option<Option<Duration>> {
    if infinity && v == "Infinity" {
        return Some(None);
    }
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = v.trim_start_matches('0');
    if significant.len() > 16 {
        return None;
    }
    let n: u128 = significant
        .bytes()
        .fold(0, |n, d| n * 10 + u128::from(d - b'0'));
    (n <= SAFE_INTEGER_MAX).then(|| Some(Duration::from_millis(n as u64)))
}

fuzz_target!(|data: &[u8]| {
    let names: Vec<&'static str> = ENV_ACQUIRE_TIMEOUT
        .iter()
        .chain(&ENV_STALE)
        .chain(&ENV_MAX_HOLD)
        .chain([
            &ENV_HOLD_EXCEEDED,
            &ENV_FOREIGN_HOLD_EXCEEDED,
            &ENV_OPENCLAW_COMPAT,
        ])
        .copied()
        .collect();
    // The first byte picks which explicit settings are present.
    let (flags, rest) = data.split_first().unwrap_or((&0, &[]));
    let values = fields(rest, names.len());
    let lookup = |k: &str| {
        let i = names.iter().position(|&n| n == k).expect("known variable");
        values[i].clone()
    };
    let mut explicit = Config::default();
    if flags & 1 != 0 {
        explicit.acquire_timeout = Some(Some(Duration::from_millis(1)));
    }
    if flags & 2 != 0 {
        explicit.stale_after = Some(Duration::from_millis(2));
    }
    if flags & 4 != 0 {
        explicit.max_hold = Some(Duration::from_millis(3));
    }
    if flags & 8 != 0 {
        explicit.hold_exceeded = Some(HoldExceededPolicy::Report);
    }
    if flags & 16 != 0 {
        explicit.foreign_hold_exceeded = Some(HoldExceededPolicy::Reclaim);
    }
    if flags & 32 != 0 {
        explicit.openclaw_compat = Some(true);
    }
    let (s, warnings) = explicit.resolve_with(lookup);
    let d = Settings::default();

    for (i, v) in values.iter().enumerate().take(6) {
        if let Some(v) = v {
            assert_eq!(
                parse_ms(v, i < 2).ok(),
                oracle_ms(v, i < 2),
                "parse_ms({v:?})"
            );
        }
    }
    // The first acceptable value in name order wins; else explicit; else default.
    let pick = |range: std::ops::Range<usize>, infinity: bool, positive: bool| {
        values[range].iter().flatten().find_map(|v| {
            oracle_ms(v, infinity).filter(|ms| !(positive && *ms == Some(Duration::ZERO)))
        })
    };
    let acquire = pick(0..2, true, false)
        .or(explicit.acquire_timeout)
        .unwrap_or(d.acquire_timeout);
    assert_eq!(s.acquire_timeout, acquire);
    let stale = pick(2..4, false, false)
        .flatten()
        .or(explicit.stale_after)
        .unwrap_or(d.stale_after);
    assert_eq!(s.stale_after, stale);
    let hold = pick(4..6, false, true)
        .flatten()
        .or(explicit.max_hold)
        .unwrap_or(d.max_hold)
        .min(MAX_HOLD_CAP);
    assert_eq!(s.max_hold, hold);
    assert!(!s.max_hold.is_zero() && s.max_hold <= MAX_HOLD_CAP);
    let policy = |v: &Option<String>| match v.as_deref() {
        Some("reclaim") => Some(HoldExceededPolicy::Reclaim),
        Some("report") => Some(HoldExceededPolicy::Report),
        _ => None,
    };
    assert_eq!(
        s.hold_exceeded,
        policy(&values[6])
            .or(explicit.hold_exceeded)
            .unwrap_or(d.hold_exceeded)
    );
    assert_eq!(
        s.foreign_hold_exceeded,
        policy(&values[7])
            .or(explicit.foreign_hold_exceeded)
            .or(d.foreign_hold_exceeded)
    );
    let compat = match values[8].as_deref() {
        Some("1") => Some(true),
        Some("0") => Some(false),
        _ => None,
    };
    assert_eq!(
        s.openclaw_compat,
        compat
            .or(explicit.openclaw_compat)
            .unwrap_or(d.openclaw_compat)
    );
    // Each warning names a variable that was set, with its exact value, and
    // renders without panicking.
    assert!(warnings.len() <= names.len());
    for w in &warnings {
        let i = names
            .iter()
            .position(|&n| n == w.var)
            .expect("known variable");
        assert_eq!(values[i].as_deref(), Some(w.value.as_str()));
        let _ = w.to_string();
    }
});
