//! What the library's test binaries share: child processes running a role
//! of the test binary itself, with line-based I/O and deadlines.
//!
//! A test binary re-executes itself with `SESSIONLOCK_TEST_ROLE=<role>` and
//! `--exact child_entry`; its `child_entry` test runs the role.
#![allow(dead_code)] // each test binary uses a different subset

pub mod sessions;
pub mod waits;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The variable naming a child's role and its arguments.
pub const ROLE_VAR: &str = "SESSIONLOCK_TEST_ROLE";

/// The role and arguments of this process, if it is a child.
pub fn role_args() -> Option<(String, Vec<String>)> {
    let raw = std::env::var(ROLE_VAR).ok()?;
    let mut parts = raw.split('\u{1f}').map(str::to_owned);
    let role = parts.next()?;
    Some((role, parts.filter(|s| !s.is_empty()).collect()))
}

/// A child process running a role, with line-based I/O and deadlines.
pub struct Kid {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub lines: mpsc::Receiver<String>,
}

impl Kid {
    pub fn spawn(role: &str, args: &[&str]) -> Kid {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "child_entry",
                "--nocapture",
                "--test-threads=1",
                "--quiet",
            ])
            .env(ROLE_VAR, format!("{role}\u{1f}{}", args.join("\u{1f}")))
            .env_remove("SESSIONLOCK_ACQUIRE_TIMEOUT_MS")
            .env_remove("SESSIONLOCK_MAX_HOLD_MS")
            .env_remove("SESSIONLOCK_STALE_MS")
            .env_remove("SESSIONLOCK_HOLD_EXCEEDED")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Kid {
            child,
            stdin,
            lines: rx,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next protocol line starting with `prefix` (other output, such as
    /// the test harness's own, is skipped).
    pub fn expect(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(e) => panic!(
                    "child {} did not say {prefix:?} within {within:?}: {e}",
                    self.pid()
                ),
            }
        }
    }

    /// The next line starting with any of `prefixes`.
    pub fn expect_any(&self, prefixes: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if prefixes.iter().any(|p| l.starts_with(p)) => return l,
                Ok(_) => continue,
                Err(e) => panic!("child {} did not answer {prefixes:?}: {e}", self.pid()),
            }
        }
    }

    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to child");
        stdin.flush().expect("flush child stdin");
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{sig} failed");
    }

    pub fn kill_and_reap(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "child did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start time (field 22 of /proc/<pid>/stat) of a process.
pub fn starttime_of(pid: u32) -> u64 {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let rest = &raw[raw.rfind(')').expect("paren") + 1..];
    rest.split_whitespace()
        .nth(19)
        .expect("field 22")
        .parse()
        .expect("number")
}

/// The pid of a process that has exited and been reaped.
pub fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().expect("spawn true");
    let pid = c.id();
    c.wait().expect("reap");
    pid
}

/// Drives a backend future to completion on this thread (the file backend's
/// complete at once).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}
