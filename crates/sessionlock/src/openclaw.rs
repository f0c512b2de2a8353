//! Living beside OpenClaw
//! ([design §14](crate::design#14-living-beside-openclaw)): what OpenClaw needs
//! in order to honour a sessionlock holder, and how sessionlock tells
//! OpenClaw's locks apart.
//!
//! Facts about OpenClaw 2026.6 (checked against 2026.6.11, whose lock code is
//! bundled from `@openclaw/fs-safe` 0.3.0), which shape this module:
//! - Its contenders, its startup cleanup and `openclaw doctor` read
//!   `/proc/<pid>/cmdline` of a *live* holder and delete the lock as
//!   `non-openclaw-owner` unless one argument, trimmed and lowercased (with
//!   `\` read as `/`), is `openclaw` or `openclaw.mjs` or ends in
//!   `/openclaw` or `/openclaw.mjs` (or the executable is `openclaw`,
//!   `.../openclaw` or `.../openclaw-gateway`). No payload field changes
//!   that.
//! - They treat `EPERM` from `kill(pid, 0)` as a dead holder, and a payload
//!   they cannot read (mode 0600 of another user) as a missing one, deleted
//!   once the file's mtime is older than their payload grace (5–30 s).
//! - A live OpenClaw-recognised holder past its `maxHoldMs` is only
//!   *reported* by OpenClaw contenders, never deleted.
//! - A process is taken for an OpenClaw *gateway* (which OpenClaw may signal
//!   on restart) only if an argument is exactly `gateway` and an entry script
//!   or an `openclaw` executable is present; the [`MARKER`] argument
//!   sessionlock adds is neither.
//!
//! So in OpenClaw-compatible mode ([`Settings::openclaw_compat`]) sessionlock
//! writes its lock files with mode 0644, and the `sessionlock` command
//! re-executes itself with a `--openclaw-marker openclaw` argument before it
//! takes a lock. A library embedded in another program cannot change that
//! program's argument vector: OpenClaw does not recognise such a holder
//! whatever sessionlock writes, unless the program itself carries the
//! marker. [`warn_if_self_unmarked`] says so once per process.
//!
//! [`Settings::openclaw_compat`]: crate::Settings::openclaw_compat

use std::ffi::OsString;
use std::sync::Once;

use crate::payload::Payload;
use crate::sys;

/// The argument OpenClaw recognises as one of its own processes.
pub const MARKER: &str = "openclaw";

/// The owner label of a lock whose payload names no `owner`: OpenClaw's
/// (OpenClaw writes `{pid, createdAt, maxHoldMs, starttime}` only).
pub const OWNER: &str = "openclaw";

/// The writer a payload names: its `owner` field, else [`OWNER`] (a lock
/// without `owner` is OpenClaw's).
pub fn owner_of(p: &Payload) -> &str {
    p.owner.as_deref().unwrap_or(OWNER)
}

/// Whether a lock was written by someone other than sessionlock, which
/// therefore cannot be fenced (it never checks sessionlock's epoch).
pub fn is_foreign(p: &Payload) -> bool {
    owner_of(p) != crate::payload::OWNER
}

/// Whether an argument vector passes OpenClaw 2026.6's owner check (see the
/// module docs). This is the part of the check that matters for
/// sessionlock; forms only OpenClaw's own launchers produce (an entry script
/// plus a `gateway` or `agent` argument) are not modelled, so a `false` can
/// be wrong for an OpenClaw process, never for a sessionlock one.
pub fn argv_is_marked(args: &[OsString]) -> bool {
    let norm: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().trim().replace('\\', "/").to_lowercase())
        .filter(|a| !a.is_empty())
        .collect();
    let exe = norm.first().map_or("", |e| {
        [".exe", ".cmd", ".bat"]
            .iter()
            .find_map(|ext| e.strip_suffix(ext))
            .unwrap_or(e)
    });
    exe == MARKER
        || exe.ends_with("/openclaw")
        || exe.ends_with("/openclaw-gateway")
        || norm.iter().any(|a| {
            a == MARKER
                || a.ends_with("/openclaw")
                || a == "openclaw.mjs"
                || a.ends_with("/openclaw.mjs")
        })
}

/// Whether OpenClaw would recognise the local process `pid` as one of its
/// own; `None` when its argument vector cannot be read (then OpenClaw
/// leaves the lock alone too).
#[cfg(feature = "internals")] // only the diagnostics (`diag`) use it
pub fn process_is_marked(pid: u32) -> Option<bool> {
    let args = sys::cmdline(Some(pid)).ok()?;
    (!args.is_empty()).then(|| argv_is_marked(&args))
}

/// Whether this process carries the marker in its argument vector.
pub fn self_is_marked() -> bool {
    sys::cmdline(None).is_ok_and(|a| argv_is_marked(&a))
}

/// Logs a warning, once per process, when OpenClaw-compatible mode is on but
/// this process's argument vector has no OpenClaw marker: OpenClaw deletes
/// the locks such a process holds (its holders still learn it, as
/// `Revoked`, at their next fenced write or release).
pub fn warn_if_self_unmarked() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if !self_is_marked() {
            tracing::warn!(
                target: "sessionlock::openclaw",
                marker = MARKER,
                hint = "run writers through the sessionlock command, or start the program with the marker as an argument",
                "OpenClaw-compatible mode is on, but this process's arguments carry no OpenClaw marker: \
                 OpenClaw treats its locks as non-openclaw-owner and deletes them"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn marker_forms_openclaw_accepts() {
        for yes in [
            &[
                "/usr/bin/sessionlock",
                "--openclaw-marker",
                "openclaw",
                "exec",
            ][..],
            &["node", "/opt/openclaw.mjs"],
            &["node", "/opt/bin/openclaw"],
            &["C:\\bin\\OpenClaw.exe", "x"],
            &["/srv/openclaw-gateway"],
            &["sl", " OPENCLAW "],
        ] {
            assert!(argv_is_marked(&argv(yes)), "{yes:?}");
        }
        for no in [
            &["/usr/bin/sessionlock", "exec", "s.jsonl"][..],
            &["sessionlock", "--openclaw-compat"],
            &["sessionlock", "openclaw-marker"],
            &["node", "openclawx"],
            &[],
        ] {
            assert!(!argv_is_marked(&argv(no)), "{no:?}");
        }
    }

    // Issue 9 item 3: OpenClaw takes a lock it cannot read (0600 of another
    // user) for one without a payload and deletes it; in compatible mode the
    // lock file is 0644 whatever the umask, also after an extend.
    #[test]
    fn compat_mode_lock_files_are_readable_by_everyone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("lock").permissions().mode() & 0o777;
        let locks = crate::SessionLock::new();
        let plain = locks
            .acquire_with(dir.path().join("a.jsonl"), &crate::LockOptions::default())
            .expect("acquire");
        assert_eq!(mode(plain.lock_path()), 0o600);
        let opts = crate::LockOptions::default().openclaw_compat(true);
        let compat = locks
            .acquire_with(dir.path().join("b.jsonl"), &opts)
            .expect("acquire");
        assert_eq!(mode(compat.lock_path()), 0o644);
        compat.extend().expect("extend");
        assert_eq!(mode(compat.lock_path()), 0o644, "after an extend too");
        plain.release().expect("release");
        compat.release().expect("release");
    }

    #[test]
    fn owner_without_field_is_openclaw() {
        let p = Payload::default();
        assert_eq!(owner_of(&p), "openclaw");
        assert!(is_foreign(&p));
        let p = Payload {
            owner: Some("sessionlock".into()),
            ..Payload::default()
        };
        assert!(!is_foreign(&p));
    }
}
