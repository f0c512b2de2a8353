//! `sessionlock verify-fs`: does a directory's file system give what
//! sessionlock relies on, and which fallbacks will be used there
//! (`docs/design.md` §11)?
//!
//! One line per check (`ok`, `fallback` or `FAIL`, its name, what was found)
//! and a summary go to stdout; with `--json`, a JSON object holding the
//! checks.
//! Exit codes: 0 when no check failed (fallbacks are fine), 1 when one did,
//! 2 when the directory could not be checked at all.

use sessionlock_lab::backend_choice::BackendChoice;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde::Serialize;
use sessionlock::fscheck::{self, Check, Status};
use sessionlock::Error;

use crate::exit;
use crate::output::report;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The directory to check: the one that holds (or will hold) the session
    /// transcripts and their locks. A scratch directory is created in it and
    /// removed afterwards.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Print a JSON object (`version`, `dir`, `checks`: `name`, `status`,
    /// `detail` each) instead of lines and a summary.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args, backend: &BackendChoice) -> anyhow::Result<ExitCode> {
    if !backend.is_file() {
        report(
            &anyhow::anyhow!(
                "verify-fs checks a directory's file system, so it runs on the file backend only \
                 (the backend is {backend})"
            ),
            Some("run it without --backend (and with SESSIONLOCK_BACKEND unset or `file`)"),
        );
        return Ok(ExitCode::from(exit::ERROR));
    }
    let checks = match fscheck::verify(&args.dir) {
        Ok(checks) => checks,
        Err(e) => {
            let hint = hint(&e);
            report(&anyhow::Error::new(e), hint);
            return Ok(ExitCode::from(exit::ERROR));
        }
    };
    let mut out = io::stdout().lock();
    let written = if args.json {
        write_json(&mut out, &checks, &args.dir)
    } else {
        write_lines(&mut out, &checks, &args.dir)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        // The reader went away (`sessionlock verify-fs DIR | head`): not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e).context("cannot write to stdout"),
    }
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    Ok(ExitCode::from(if failed {
        exit::FINDING
    } else {
        exit::OK
    }))
}

/// A hint for a directory that could not be checked, where one helps.
fn hint(e: &Error) -> Option<&'static str> {
    match e {
        Error::Io { op, source, .. } => match (*op, source.kind()) {
            ("open directory", io::ErrorKind::NotFound) => Some(
                "pass an existing directory: the one that holds (or will hold) the session transcripts",
            ),
            ("open directory", io::ErrorKind::PermissionDenied) | ("create scratch directory in", _) => Some(
                "verify-fs creates and removes a scratch directory in DIR: run it as the user that writes the sessions, on a directory that user can write",
            ),
            ("remove scratch directory", _) => {
                Some("the checks ran, but their scratch directory is left over: remove it by hand")
            }
            _ => None,
        },
        Error::InvalidPath { .. } => {
            Some("pass the directory that holds the session transcripts, not a file in it")
        }
        _ => None,
    }
}

fn label(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Fallback => "fallback",
        Status::Fail => "FAIL",
    }
}

/// One aligned line per check, then a summary.
fn write_lines(out: &mut impl Write, checks: &[Check], dir: &Path) -> io::Result<()> {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        writeln!(
            out,
            "{:<8}  {:<width$}  {}",
            label(c.status),
            c.name,
            c.detail
        )?;
    }
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    let (ok, fallback, failed) = (
        count(Status::Ok),
        count(Status::Fallback),
        count(Status::Fail),
    );
    writeln!(out)?;
    let dir = crate::output::path(dir);
    if failed > 0 {
        writeln!(
            out,
            "{dir}: {ok} ok, {fallback} fallback, {failed} FAILED: sessionlock's guarantees do not hold in this directory"
        )
    } else if fallback > 0 {
        writeln!(
            out,
            "{dir}: {ok} ok, {fallback} fallback: sessionlock works here, with the fallbacks above"
        )
    } else {
        writeln!(
            out,
            "{dir}: all {ok} checks ok: sessionlock works here without fallbacks"
        )
    }
}

/// `--json` output. Field names are a stable interface: fields may be
/// added; a rename or removal bumps [`VerifyFsJson::VERSION`].
#[derive(Serialize)]
struct VerifyFsJson<'a> {
    /// [`VerifyFsJson::VERSION`].
    version: u32,
    /// The directory checked, as given (lossy UTF-8).
    dir: String,
    checks: Vec<CheckJson<'a>>,
}

impl VerifyFsJson<'_> {
    /// The schema version of the document.
    const VERSION: u32 = 1;
}

/// One check in `--json` output. Field names are a stable interface.
#[derive(Serialize)]
struct CheckJson<'a> {
    name: &'a str,
    /// `ok`, `fallback` or `fail`.
    status: &'static str,
    detail: &'a str,
}

fn write_json(out: &mut impl Write, checks: &[Check], dir: &Path) -> io::Result<()> {
    let checks: Vec<CheckJson<'_>> = checks
        .iter()
        .map(|c| CheckJson {
            name: c.name,
            status: c.status.as_str(),
            detail: &c.detail,
        })
        .collect();
    let doc = VerifyFsJson {
        version: VerifyFsJson::VERSION,
        dir: dir.to_string_lossy().into_owned(),
        checks,
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}
