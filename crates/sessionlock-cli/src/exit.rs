//! The command's exit statuses, named once: every command returns one of
//! these (or, for `exec`, its command's own status), and every `--help`,
//! the man page and `docs/cli.md` describe them by these names.
//!
//! The scheme is the style guide's: 0 ok, 1 a finding the user can act on
//! (a lock held by someone else, doctor findings, a torn tail, a failed
//! check, a demo verdict of FAIL), 2 an error. Usage errors exit 2 as well
//! (clap's own). `exec` adds the shell's conventions for the command it
//! runs.

use std::process::ExitCode;

use rustix::process::Signal;

/// Success.
pub(crate) const OK: u8 = 0;
/// A finding the user can act on; also `exec`'s default status for a lock
/// it could not get (see [`DEFAULT_CONFLICT`]).
pub(crate) const FINDING: u8 = 1;
/// sessionlock itself failed: bad arguments, I/O, an unreachable server.
pub(crate) const ERROR: u8 = 2;
/// `exec`: the command was found but could not be started.
pub(crate) const CANNOT_RUN: u8 = 126;
/// `exec`: the command was not found.
pub(crate) const NOT_FOUND: u8 = 127;
/// `exec`: 128+N reports signal N (what shells report).
pub(crate) const SIGNAL_BASE: u8 = 128;
/// `exec --conflict-exit-code`'s default: the lock could not be had (held
/// by someone else until the timeout ran out, or past its lease with the
/// `report` policy). The same status `append` and `repair` give then, and
/// `flock -E`'s default.
pub(crate) const DEFAULT_CONFLICT: u8 = FINDING;

/// 128+N for signal N.
pub(crate) fn signalled(sig: Signal) -> u8 {
    u8::try_from(i32::from(SIGNAL_BASE) + sig.as_raw()).unwrap_or(u8::MAX)
}

/// [`ERROR`] when `failed`, else [`OK`].
pub(crate) fn error_if(failed: bool) -> ExitCode {
    ExitCode::from(if failed { ERROR } else { OK })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_reported_as_128_plus_its_number() {
        assert_eq!(signalled(Signal::TERM), 143);
        assert_eq!(signalled(Signal::KILL), 137);
    }
}
