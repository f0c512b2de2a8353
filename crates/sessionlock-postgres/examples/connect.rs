//! Connects to the server named on the command line (or by
//! SESSIONLOCK_BACKEND), takes and gives back one lease, and says how it
//! went: `cargo run -p sessionlock-postgres --example connect -- postgres://...`.

use sessionlock::{LockOptions, SessionLock};
use sessionlock_postgres::PgBackend;

fn main() -> std::process::ExitCode {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SESSIONLOCK_BACKEND").ok())
        .unwrap_or_else(|| "postgres://localhost/postgres".to_owned());
    let run = || -> Result<u64, sessionlock::Error> {
        let backend = PgBackend::connect(&url)?;
        let locks = SessionLock::with_backend(backend, LockOptions::default());
        let guard = locks.acquire("sessionlock-example/connect")?;
        let epoch = guard.epoch();
        guard.release()?;
        Ok(epoch)
    };
    match run() {
        Ok(epoch) => {
            println!("ok: took and gave back a lease (epoch {epoch})");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                eprintln!("caused by: {c}");
                cause = c.source();
            }
            std::process::ExitCode::from(2)
        }
    }
}
