//! `status` and `doctor`: the command-line tool's JSON reports, built by the
//! library ([`sessionlock::report`]) for the file backend, handed to
//! JavaScript as JSON text. A directory that cannot be listed rejects the
//! call (`SESSIONLOCK_IO`, naming it) for `status`, as the command exits 2
//! for it; `doctor` reports it in its `errors` field, as the command does.

use std::path::PathBuf;

use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;
use sessionlock::doctor::FixOptions;
use sessionlock::report::{doctor_report, status_report};
use sessionlock::{Config, Error};

use crate::promise;

/// Runs a directory scan (blocking file-system work) off the runtime's
/// threads.
async fn scan<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// `sessionlock status --json` of `dirs`, as JSON text.
#[napi(ts_return_type = "Promise<string>")]
pub fn status<'env>(env: &'env Env, dirs: Vec<String>) -> napi::Result<PromiseRaw<'env, String>> {
    promise(
        env,
        scan(move || {
            let dirs: Vec<PathBuf> = dirs.into_iter().map(PathBuf::from).collect();
            let report = status_report(&dirs, &Config::default().resolve());
            if let Some(e) = report.errors.first() {
                // The report says `cannot list directory DIR: CAUSE`; the
                // error names the directory itself.
                let prefix = format!("cannot list directory {}: ", e.path);
                let cause = e.error.strip_prefix(&prefix).unwrap_or(&e.error);
                return Err(Error::Io {
                    op: "list the directory",
                    path: PathBuf::from(&e.path),
                    source: std::io::Error::other(cause.to_owned()),
                });
            }
            serde_json::to_string(&report).map_err(|e| Error::Misuse {
                what: format!("cannot write the status report as JSON: {e}"),
            })
        }),
    )
}

/// `sessionlock doctor --json [--fix [--force]]` of `dirs`, as JSON text.
#[napi(ts_return_type = "Promise<string>")]
pub fn doctor<'env>(
    env: &'env Env,
    dirs: Vec<String>,
    fix: bool,
    force: bool,
) -> napi::Result<PromiseRaw<'env, String>> {
    promise(
        env,
        scan(move || {
            let dirs: Vec<PathBuf> = dirs.into_iter().map(PathBuf::from).collect();
            let fix = fix.then(|| FixOptions::default().force(force));
            let report = doctor_report(&dirs, &Config::default().resolve(), fix);
            serde_json::to_string(&report).map_err(|e| Error::Misuse {
                what: format!("cannot write the doctor report as JSON: {e}"),
            })
        }),
    )
}
