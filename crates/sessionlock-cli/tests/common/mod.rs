//! What the CLI's test binaries share: running the real `sessionlock`
//! binary with a clean environment, reading its output, holding a lock from
//! the test process.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sessionlock::{LockOptions, SessionLock};

/// The binary, with a clean lock environment.
pub fn sessionlock() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessionlock"));
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("SESSIONLOCK_") || k.starts_with("OPENCLAW_SESSION_WRITE_LOCK_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("NO_COLOR", "1").stdin(Stdio::null());
    cmd
}

/// The `field` array of a `--json` document, which must carry its schema
/// version (`"version": 1`).
pub fn listed(doc: &serde_json::Value, field: &str) -> Vec<serde_json::Value> {
    assert_eq!(doc["version"], 1, "no schema version 1 in {doc}");
    doc[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} array in {doc}"))
        .clone()
}

/// Runs a command to completion.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run sessionlock")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The lock file of a session.
pub fn lock_path(session: &Path) -> PathBuf {
    let mut s = session.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Holds `session`'s lock in this (the test) process.
pub fn hold(session: &Path) -> sessionlock::Guard {
    SessionLock::new()
        .acquire_with(
            session,
            &LockOptions::default()
                .timeout(Some(Duration::from_secs(10)))
                .lane("channel")
                .run_id("run-7"),
        )
        .expect("hold the lock in the test process")
}

/// The pid of a process that has exited and been reaped.
pub fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("reap true");
    pid
}

/// A live process to name in locks; killed and reaped on drop.
pub struct Sleeper(std::process::Child);

impl Sleeper {
    pub fn spawn() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// `/proc/<pid>/stat` field 22: start time in clock ticks since boot.
    pub fn starttime(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("read /proc/<pid>/stat");
        // The command name (field 2) may hold spaces: count from after it.
        let after = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
        after
            .split(' ')
            .nth(22 - 3)
            .and_then(|s| s.parse().ok())
            .expect("field 22 is the start time")
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
