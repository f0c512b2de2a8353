//! Worker child processes for `demo` and `bench`: spawn `sessionlock worker
//! ROLE ...`, read its protocol lines with deadlines, signal it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rustix::process::{kill_process, Pid, Signal};

/// A running worker.
pub(crate) struct Worker {
    pub(crate) name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Worker {
    /// Starts `sessionlock worker <args>`.
    pub(crate) fn spawn(name: impl Into<String>, args: &[String]) -> Result<Worker> {
        let exe = std::env::current_exe().context("locate the sessionlock binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("worker").args(args);
        Worker::start(name, cmd)
    }

    /// Starts `cmd` (which runs a worker somewhere below it, e.g. under
    /// `sessionlock exec` or `flock(1)`) with the workers' protocol pipes.
    pub(crate) fn start(name: impl Into<String>, mut cmd: Command) -> Result<Worker> {
        let mut child = cmd
            // Workers' own warnings (an expected revocation, say) would
            // interleave with the parent's report; the parent reports them.
            .env(
                "SESSIONLOCK_LOG",
                std::env::var("SESSIONLOCK_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("worker has no stdout"))?;
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
        Ok(Worker {
            name: name.into(),
            child,
            stdin,
            lines: rx,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line starting with `prefix`, split into its fields after the
    /// prefix.
    pub(crate) fn expect(&self, prefix: &str, within: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return Ok(rest.split_whitespace().map(str::to_owned).collect());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!(
                        "{} (pid {}) did not report {prefix} within {within:?}",
                        self.name,
                        self.pid()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!(
                        "{} (pid {}) exited before reporting {prefix}",
                        self.name,
                        self.pid()
                    )
                }
            }
        }
    }

    /// Sends a command line.
    pub(crate) fn say(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{} stdin closed", self.name))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Sends a signal.
    pub(crate) fn signal(&self, sig: Signal) -> Result<()> {
        let pid = i32::try_from(self.pid())
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| anyhow!("bad pid"))?;
        kill_process(pid, sig).with_context(|| format!("signal {}", self.name))
    }

    /// Closes stdin and waits for the exit, with a deadline.
    pub(crate) fn finish(mut self, within: Duration) -> Result<std::process::ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} (pid {}) did not exit within {within:?}",
                    self.name,
                    self.pid()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Milliseconds between two `CLOCK_MONOTONIC` nanosecond stamps.
pub(crate) fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}

/// Parses a field of a protocol line.
pub(crate) fn field<T: std::str::FromStr>(fields: &[String], i: usize) -> Result<T> {
    fields
        .get(i)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| anyhow!("malformed worker line: {fields:?}"))
}
