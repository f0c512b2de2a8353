//! Child processes that speak a line protocol: spawn one with its stdin and
//! stdout piped, read its stdout line by line with deadlines, write lines to
//! its stdin, signal it, wait for its exit with a deadline. A child is
//! killed and reaped when its handle is dropped.
//!
//! Shared by the lab's workers and by the test binaries of the workspace;
//! nothing here knows about locks or transcripts.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use rustix::process::Signal;
use rustix::process::{kill_process, Pid};

/// What can go wrong with a child.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program could not be started.
    #[error("spawn {program:?}")]
    Spawn {
        /// The program.
        program: OsString,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The child did not print an awaited line in time.
    #[error("{name} (pid {pid}) did not report {what} within {within:?}")]
    Silent {
        /// The child's name.
        name: String,
        /// The child's pid.
        pid: u32,
        /// The awaited line.
        what: String,
        /// How long it was awaited.
        within: Duration,
    },
    /// The child closed its stdout (usually: exited) before printing an
    /// awaited line.
    #[error("{name} (pid {pid}) exited before reporting {what}")]
    Exited {
        /// The child's name.
        name: String,
        /// The child's pid.
        pid: u32,
        /// The awaited line.
        what: String,
    },
    /// A line could not be written to the child's stdin.
    #[error("write to {name}")]
    Write {
        /// The child's name.
        name: String,
        /// Why (`BrokenPipe` once stdin is closed or the child exited).
        #[source]
        source: io::Error,
    },
    /// The child could not be signalled.
    #[error("signal {name}")]
    Signal {
        /// The child's name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The child's exit could not be awaited.
    #[error("wait for {name}")]
    Wait {
        /// The child's name.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The child did not exit in time.
    #[error("{name} (pid {pid}) did not exit within {within:?}")]
    Linger {
        /// The child's name.
        name: String,
        /// The child's pid.
        pid: u32,
        /// How long its exit was awaited.
        within: Duration,
    },
}

/// A running child with line-based I/O.
pub struct Child {
    name: String,
    child: std::process::Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Child {
    /// Starts `cmd` with its stdin and stdout piped and its stderr
    /// inherited; `name` names the child in errors. A thread forwards its
    /// stdout, line by line, until the child closes it.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if the program cannot be started.
    pub fn start(name: impl Into<String>, mut cmd: Command) -> Result<Child, Error> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: cmd.get_program().to_owned(),
                source,
            })?;
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Child {
            name: name.into(),
            child,
            stdin,
            lines: rx,
        })
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the child prints.
    ///
    /// # Errors
    ///
    /// [`Error::Silent`] if none comes within `within`, [`Error::Exited`] if
    /// the child closed its stdout.
    pub fn next_line(&self, within: Duration) -> Result<String, Error> {
        self.await_line(within, |_| true, || "a line".to_owned())
    }

    /// The next line starting with `prefix`, whole; lines before it are
    /// skipped.
    ///
    /// # Errors
    ///
    /// As [`Child::next_line`].
    pub fn expect_line(&self, prefix: &str, within: Duration) -> Result<String, Error> {
        self.await_line(within, |l| l.starts_with(prefix), || prefix.to_owned())
    }

    /// The next line starting with `prefix`, split into its
    /// whitespace-separated fields after the prefix; lines before it are
    /// skipped.
    ///
    /// # Errors
    ///
    /// As [`Child::next_line`].
    pub fn expect(&self, prefix: &str, within: Duration) -> Result<Vec<String>, Error> {
        let line = self.expect_line(prefix, within)?;
        Ok(line[prefix.len()..]
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    }

    /// The next line starting with any of `prefixes`, whole; lines before it
    /// are skipped.
    ///
    /// # Errors
    ///
    /// As [`Child::next_line`].
    pub fn expect_any(&self, prefixes: &[&str], within: Duration) -> Result<String, Error> {
        self.await_line(
            within,
            |l| prefixes.iter().any(|p| l.starts_with(p)),
            || format!("one of {prefixes:?}"),
        )
    }

    fn await_line(
        &self,
        within: Duration,
        wanted: impl Fn(&str) -> bool,
        what: impl Fn() -> String,
    ) -> Result<String, Error> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if wanted(&l) => return Ok(l),
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(Error::Silent {
                        name: self.name.clone(),
                        pid: self.pid(),
                        what: what(),
                        within,
                    })
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Exited {
                        name: self.name.clone(),
                        pid: self.pid(),
                        what: what(),
                    })
                }
            }
        }
    }

    /// Writes `line` and a newline to the child's stdin.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] if the write fails or stdin was closed.
    pub fn say(&mut self, line: &str) -> Result<(), Error> {
        let write_error = |source| Error::Write {
            name: self.name.clone(),
            source,
        };
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(write_error(io::ErrorKind::BrokenPipe.into()));
        };
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(write_error)
    }

    /// Sends `sig` to the child.
    ///
    /// # Errors
    ///
    /// [`Error::Signal`] if the signal cannot be sent.
    pub fn signal(&self, sig: Signal) -> Result<(), Error> {
        let signal_error = |source| Error::Signal {
            name: self.name.clone(),
            source,
        };
        let pid = i32::try_from(self.pid())
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| signal_error(io::ErrorKind::InvalidInput.into()))?;
        kill_process(pid, sig).map_err(|e| signal_error(e.into()))
    }

    /// Closes the child's stdin and waits for its exit.
    ///
    /// # Errors
    ///
    /// [`Error::Linger`] if it does not exit within `within` (it is then
    /// killed and reaped), [`Error::Wait`] if its status cannot be read.
    pub fn finish(mut self, within: Duration) -> Result<ExitStatus, Error> {
        drop(self.stdin.take());
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return Ok(st),
                Ok(None) => {}
                Err(source) => {
                    return Err(Error::Wait {
                        name: self.name.clone(),
                        source,
                    })
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Linger {
                    name: self.name.clone(),
                    pid: self.pid(),
                    within,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the child (SIGKILL) and reaps it; what dropping the handle does.
    pub fn kill_and_reap(self) {
        drop(self);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
