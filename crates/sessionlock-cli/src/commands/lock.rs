//! What the commands that take a session lock share: the `--timeout-ms`
//! budget, the hint for a busy lock, and an explicit, reported release.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sessionlock::config::parse_ms;
use sessionlock::{Error, Guard, LockBackend, LockOptions, SessionLock};
use sessionlock_lab::backend_choice::BackendChoice;
use sessionlock_postgres::PgBackend;

use crate::output::report;
use crate::output::shell_word;

/// An acquire budget; `None` waits forever.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget(pub(crate) Option<Duration>);

/// `--root DIR`: the sessions root a command's session file must resolve into.
#[derive(clap::Args)]
pub(crate) struct RootArg {
    /// Refuse the session file unless it resolves (through symlinks) inside
    /// DIR: a symlink planted among the sessions cannot lead this command
    /// to lock, repair or write another file. (Symlinks owned by another
    /// user in a directory others can write to are never followed.)
    #[arg(long, value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,
}

impl RootArg {
    /// The lock manager from the environment, confined to `--root` if given.
    ///
    /// # Errors
    /// `Io` when the root cannot be resolved.
    pub(crate) fn session_lock(&self) -> Result<SessionLock, Error> {
        let locks = SessionLock::new();
        match &self.root {
            None => Ok(locks),
            Some(root) => {
                let backend = locks.backend().clone().confined(root)?;
                Ok(SessionLock::with_backend(backend, locks.options().clone()))
            }
        }
    }
}

/// Parses `--timeout-ms`: decimal milliseconds or `Infinity`.
pub(crate) fn parse_timeout(s: &str) -> Result<Budget, String> {
    parse_ms(s, true).map(Budget).map_err(str::to_owned)
}

/// The hint for a lock someone else holds: where to look at the holder.
pub(crate) fn busy_hint(e: &Error) -> String {
    let dir = e
        .holder()
        .and_then(|h| h.lock_path.parent())
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = shell_word(dir.as_os_str());
    match e {
        Error::Stale { holder, .. } => format!(
            "the holder is past its lease and {} forbids taking the lock over; \
             run `sessionlock status {dir}` to see the holder",
            if holder.owner.as_deref() == Some(sessionlock::payload::OWNER) {
                "SESSIONLOCK_HOLD_EXCEEDED=report"
            } else {
                // A foreign (OpenClaw) holder cannot be fenced.
                "the foreign holders' policy `report` (SESSIONLOCK_FOREIGN_HOLD_EXCEEDED, \
                 unset: SESSIONLOCK_HOLD_EXCEEDED)"
            },
        ),
        _ => format!("run `sessionlock status {dir}` to see the holder"),
    }
}

/// Releases the lock, reporting a failure, or a lock that was no longer ours
/// by then. Returns whether all was well.
pub(crate) fn release<B: LockBackend>(guard: Guard<B>) -> bool {
    let lock_path = guard.lock_path().to_owned();
    match guard.release() {
        Ok(()) => true,
        Err(e @ Error::Revoked { .. }) => {
            report(
                &anyhow::Error::new(e).context(format!(
                    "the session lock {} was no longer ours when released",
                    lock_path.display()
                )),
                Some(
                    "another writer may have run meanwhile; if OpenClaw shares this directory, \
                     see `sessionlock status` and the README's OpenClaw section",
                ),
            );
            false
        }
        Err(e) => {
            report(
                &anyhow::Error::new(e).context(format!(
                    "cannot release the session lock {}",
                    lock_path.display()
                )),
                Some("the lock names this process, which is exiting: the next waiter reclaims it"),
            );
            false
        }
    }
}

/// Connects to the PostgreSQL server of `url` (blocking). The error names
/// host and port, never the password.
///
/// # Errors
/// `Backend` when the server cannot be reached or refuses us.
pub(crate) fn pg_backend(url: &str) -> Result<PgBackend, Error> {
    PgBackend::connect(url)
}

/// The key prefixes that `status` and `doctor` look under on a PostgreSQL
/// server: the arguments as given, or all keys (the empty prefix) without
/// any.
pub(crate) fn pg_prefixes(dirs: &[PathBuf]) -> Vec<String> {
    if dirs.is_empty() {
        vec![String::new()]
    } else {
        dirs.iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }
}

/// The lock manager on the PostgreSQL server of `url`, with the options of
/// the environment.
///
/// # Errors
/// As [`pg_backend`].
pub(crate) fn pg_locks(url: &str) -> Result<SessionLock<PgBackend>, Error> {
    Ok(SessionLock::with_backend(
        pg_backend(url)?,
        LockOptions::from_env(),
    ))
}

/// The command that shows a PostgreSQL session's holder, for hints:
/// `sessionlock --backend URL status KEY` (the URL without its password).
pub(crate) fn pg_status_command(backend: &BackendChoice, key: &str) -> String {
    format!(
        "sessionlock --backend {} status {}",
        shell_word(std::ffi::OsStr::new(&backend.to_string())),
        shell_word(std::ffi::OsStr::new(key))
    )
}

/// The session key a PostgreSQL command got as its session argument, and
/// the refusal of `--root` (a file-system confinement) there.
pub(crate) fn pg_key(session: &Path, root: &RootArg) -> anyhow::Result<String> {
    if root.root.is_some() {
        anyhow::bail!("--root confines session files to a directory; it has no meaning with a postgres backend");
    }
    match session.to_str() {
        Some(k) => Ok(k.to_owned()),
        None => anyhow::bail!(
            "the session key {} is not UTF-8: keys on a postgres backend are strings",
            crate::output::path(session)
        ),
    }
}
