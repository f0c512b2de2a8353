//! What test binaries share: child processes running a role of the test
//! binary itself, with line-based I/O and deadlines, and a few process
//! facts. Every failure panics (these are for tests).
//!
//! A test binary re-executes itself with `SESSIONLOCK_TEST_ROLE=<role>` and
//! `--exact child_entry`; its `child_entry` test runs the role
//! ([`role_args`] tells a child its role).

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::harness;
pub use crate::harness::Signal;

/// The variable naming a child's role and its arguments.
pub const ROLE_VAR: &str = "SESSIONLOCK_TEST_ROLE";

/// The role and arguments of this process, if it is a child.
pub fn role_args() -> Option<(String, Vec<String>)> {
    let raw = std::env::var(ROLE_VAR).ok()?;
    let mut parts = raw.split('\u{1f}').map(str::to_owned);
    let role = parts.next()?;
    Some((role, parts.filter(|s| !s.is_empty()).collect()))
}

/// A child process running a role (or any command), with line-based I/O
/// and deadlines ([`harness::Child`]); every failure panics.
pub struct Kid(harness::Child);

impl Kid {
    pub fn spawn(role: &str, args: &[&str]) -> Kid {
        Kid::start(role, Kid::command(role, args))
    }

    /// The command [`Kid::spawn`] runs, for a caller that adds to it (an
    /// environment variable, say) before [`Kid::start`].
    pub fn command(role: &str, args: &[&str]) -> Command {
        let exe = std::env::current_exe().expect("test binary path");
        let mut cmd = Command::new(exe);
        cmd.args([
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
        .env_remove("SESSIONLOCK_HOLD_EXCEEDED");
        cmd
    }

    /// Runs `cmd` (not a role), e.g. a live process that is not us.
    pub fn start(name: &str, cmd: Command) -> Kid {
        Kid(harness::Child::start(name, cmd).expect("spawn child"))
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// The next line the child prints, or why there is none.
    pub fn next_line(&self, within: Duration) -> Result<String, harness::Error> {
        self.0.next_line(within)
    }

    /// The next protocol line starting with `prefix` (other output, such as
    /// the test harness's own, is skipped).
    pub fn expect(&self, prefix: &str, within: Duration) -> String {
        self.0
            .expect_line(prefix, within)
            .unwrap_or_else(|e| panic!("child did not say {prefix:?}: {e}"))
    }

    /// The next line starting with any of `prefixes`.
    pub fn expect_any(&self, prefixes: &[&str]) -> String {
        self.0
            .expect_any(prefixes, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("child did not answer: {e}"))
    }

    pub fn say(&mut self, line: &str) {
        self.0.say(line).expect("write to child");
    }

    pub fn signal(&self, sig: Signal) {
        self.0.signal(sig).expect("signal child");
    }

    pub fn kill_and_reap(self) {
        self.0.kill_and_reap();
    }

    pub fn finish(self) -> ExitStatus {
        self.0
            .finish(Duration::from_secs(20))
            .expect("child did not exit")
    }
}

/// Start time (field 22 of `/proc/<pid>/stat`) of a process.
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

/// A command running `program` as `nobody`: `setpriv` or `runuser`
/// (util-linux). `None` when neither exists.
pub fn as_nobody(program: &Path) -> Option<Command> {
    let has = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has("setpriv") {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(program);
        Some(c)
    } else if has("runuser") {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        Some(c)
    } else {
        None
    }
}

/// Writes `line` to stdout and flushes it: a child role's protocol line.
pub fn say(line: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}").expect("stdout");
    o.flush().expect("flush");
}

/// Whether process `pid` is stopped (`T` or `t` in `/proc/<pid>/stat`).
pub fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, rest)| rest.starts_with(['T', 't']))
        })
        .unwrap_or(false)
}

/// Waits (at most 10 s) until process `pid` is stopped.
///
/// # Panics
/// When it does not stop in time.
pub fn wait_until_stopped(pid: u32) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !is_stopped(pid) {
        assert!(
            std::time::Instant::now() < until,
            "process {pid} did not stop"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Stops the calling thread's process at once: `raise(SIGSTOP)`, which the
/// calling thread takes itself (a signal sent to the process with `kill`
/// could be taken by another thread, and this one go on for a while).
pub fn stop_myself() {
    // SAFETY: raising a signal has no memory-safety preconditions.
    assert_eq!(unsafe { libc::raise(libc::SIGSTOP) }, 0, "stop myself");
}

/// Takes a `flock` (`shared` or not) on `path` (created if missing), says
/// `LOCKED`, then stops this process (`stop`) or not, and holds the lock
/// until killed: a process stuck inside a session's state-lock window.
pub fn flock_and_hold(path: &Path, shared: bool, stop: bool) -> ! {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open");
    let how = if shared {
        rustix::fs::FlockOperation::LockShared
    } else {
        rustix::fs::FlockOperation::LockExclusive
    };
    rustix::fs::flock(&f, how).expect("flock");
    say("LOCKED");
    if stop {
        stop_myself();
    }
    park()
}

/// Sleeps until killed: a child role that keeps what it holds.
pub fn park() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Waits (at most 10 s) until process `pid` has its place in the line of
/// waiters for `session`, as `status` sees it.
///
/// # Panics
/// When it does not queue in time, or the session cannot be inspected.
pub fn wait_until_in_line(session: &Path, pid: u32) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let queued = sessionlock::status::inspect_session(session, &Default::default())
            .expect("status")
            .is_some_and(|s| s.contention.waiting.contains(&pid));
        if queued {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "process {pid} never queued"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
