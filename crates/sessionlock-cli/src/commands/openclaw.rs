//! OpenClaw-compatible mode for the command (docs/design.md §14.2): a
//! `sessionlock` process that will hold a session lock carries the argument
//! OpenClaw looks for, so that OpenClaw's contenders, startup cleanup and
//! doctor honour its lock instead of deleting it as `non-openclaw-owner`.
//!
//! The marker cannot be added to a running process's `/proc/<pid>/cmdline`
//! portably, so the command re-executes itself, early in `main` and before
//! it takes any lock, through `/proc/self/exe` with `--openclaw-marker
//! openclaw` in front of its own arguments. `exec(2)` keeps the pid, start
//! time, standard streams, environment and exit status the caller sees; the
//! marker's presence on the new command line is what stops a second
//! re-execution. The marker is not a word OpenClaw uses to recognise a
//! gateway process (`gateway` plus an OpenClaw entry point), so OpenClaw
//! never takes a sessionlock process for one of its gateways.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use sessionlock::openclaw::MARKER;

/// The hidden global option that carries the marker.
pub(crate) const MARKER_FLAG: &str = "--openclaw-marker";

/// Parses `--openclaw-marker`'s value: only the marker itself.
pub(crate) fn parse_marker(s: &str) -> Result<String, String> {
    if s == MARKER {
        Ok(s.to_owned())
    } else {
        Err(format!("expected {MARKER}"))
    }
}

/// Whether OpenClaw-compatible mode is on: the flag, else the environment
/// (`SESSIONLOCK_OPENCLAW_COMPAT`), read without logging (the command's
/// own resolution of the settings logs ignored values once).
pub(crate) fn compat_on(flag: bool) -> bool {
    flag || sessionlock::Config::default()
        .resolve_with(|k| std::env::var(k).ok())
        .0
        .openclaw_compat
}

/// Replaces this process with itself, the marker added in front of its
/// arguments. Returns only if `exec` failed.
pub(crate) fn reexec_marked() -> anyhow::Error {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from("sessionlock"));
    let err = Command::new("/proc/self/exe")
        .arg0(&argv0)
        .arg(MARKER_FLAG)
        .arg(MARKER)
        .args(args)
        .exec();
    anyhow::Error::new(err).context(
        "cannot re-execute sessionlock with the openclaw marker (OpenClaw-compatible mode)",
    )
}
