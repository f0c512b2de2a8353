//! Which backend a command runs on: the global `--backend` option and the
//! `SESSIONLOCK_BACKEND` variable (`file`, the default, or a `postgres://`
//! / `postgresql://` URL), shared by the command-line tool, the demo and
//! the bench.

use std::fmt;

use anyhow::{bail, Result};

/// The variable that picks the backend when `--backend` is not given.
pub const ENV_BACKEND: &str = "SESSIONLOCK_BACKEND";

/// A backend a command can run on.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Lock files beside the transcripts (the default).
    #[default]
    File,
    /// A PostgreSQL server, by URL (which may hold a password: shown
    /// redacted).
    Postgres(String),
}

impl BackendChoice {
    /// Reads `file` or a `postgres://` / `postgresql://` URL.
    ///
    /// # Errors
    /// Anything else, with what is accepted.
    pub fn parse(s: &str) -> Result<BackendChoice> {
        let s = s.trim();
        if s.is_empty() || s == "file" {
            return Ok(BackendChoice::File);
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(BackendChoice::Postgres(s.to_owned()));
        }
        bail!(
            "unknown backend {:?}: use `file` or a postgres:// URL",
            redact(s)
        )
    }

    /// `--backend` when given, else `SESSIONLOCK_BACKEND`, else files.
    ///
    /// # Errors
    /// As [`BackendChoice::parse`], naming where the value came from.
    pub fn resolve(flag: Option<&str>) -> Result<BackendChoice> {
        if let Some(f) = flag {
            return BackendChoice::parse(f);
        }
        match std::env::var(ENV_BACKEND) {
            Ok(v) => BackendChoice::parse(&v).map_err(|e| anyhow::anyhow!("{ENV_BACKEND}: {e}")),
            Err(_) => Ok(BackendChoice::File),
        }
    }

    /// Whether this is the file backend.
    pub fn is_file(&self) -> bool {
        matches!(self, BackendChoice::File)
    }
}

impl fmt::Debug for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendChoice::File => f.write_str("file"),
            BackendChoice::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// A URL without its password.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((auth, tail)) if !auth.contains('/') => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{tail}"),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_and_postgres_urls_and_refuses_the_rest_without_passwords() {
        assert_eq!(BackendChoice::parse("file").unwrap(), BackendChoice::File);
        assert_eq!(
            BackendChoice::parse("postgresql://u@h/db").unwrap(),
            BackendChoice::Postgres("postgresql://u@h/db".into())
        );
        let e = BackendChoice::parse("mysql://u:pw@h/db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown backend") && !e.contains("pw"), "{e}");
        let shown = BackendChoice::parse("postgres://u:pw@h/db")
            .unwrap()
            .to_string();
        assert_eq!(shown, "postgres://u:***@h/db");
    }
}
