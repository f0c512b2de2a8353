//! A throwaway PostgreSQL server for tests: [`PgServer`] starts a private
//! cluster in a temp dir, and [`shared_url`] gives the server ordinary
//! tests share. Every failure panics with what went wrong and what to do
//! (these are for tests).
//!
//! A cluster listens on 127.0.0.1 (a free port) and on a unix socket in
//! its temp dir, trusts every local client (`initdb -A trust`, user
//! `postgres`) and keeps synchronous commit and fsync on, so commit
//! latencies are real. `initdb` refuses root: as root the cluster belongs
//! to the `postgres` OS user (`runuser -u postgres --`).
//!
//! No server is ever left behind: dropping a [`PgServer`] stops it
//! (`pg_ctl stop -m immediate`) and removes its dir, and a guardian
//! process does the same when the owning process dies by any means
//! (SIGKILL, `panic=abort`, a server in a `static`). The guardian waits
//! on a pipe whose only writer is the owner, so it wakes at once.

use std::fs;
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The variable naming a running server for ordinary tests (CI exports it).
pub const URL_VAR: &str = "SESSIONLOCK_TEST_PG_URL";
/// The variable naming the directory of the server binaries (`initdb`,
/// `pg_ctl`, `postgres`), overriding the search.
pub const BIN_VAR: &str = "SESSIONLOCK_PG_BIN";

const READY_WITHIN: Duration = Duration::from_secs(30);
const HOW_TO_GET_ONE: &str = "install the server (`apt-get install -y postgresql`), \
     point SESSIONLOCK_PG_BIN at its binaries, or set SESSIONLOCK_TEST_PG_URL to a running server \
     (`scripts/with-postgres cargo test` does both)";

/// A throwaway PostgreSQL cluster, stopped and removed on drop.
pub struct PgServer {
    bin: PathBuf,
    /// The temp dir: `data/` (the cluster), `server.log`, and the socket.
    root: PathBuf,
    port: u16,
    /// Run server tools as the `postgres` OS user (we are root).
    as_postgres: bool,
    /// Closing it wakes the guardian.
    guardian_pipe: Option<ChildStdin>,
    guardian: Option<Child>,
}

impl PgServer {
    /// Starts a new cluster and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// If no server binaries are found, `initdb` fails, or the server is
    /// not ready within 30 s (the message holds the server's log).
    pub fn start() -> PgServer {
        let bin = server_bin()
            .unwrap_or_else(|| panic!("PostgreSQL server binaries not found: {HOW_TO_GET_ONE}"));
        let as_postgres = rustix::process::geteuid().is_root();
        // As root the cluster's owner must reach the dir: /tmp, not a
        // TMPDIR that may be private to root.
        let base = if as_postgres {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let root = tempfile::Builder::new()
            .prefix("sessionlock-pg-")
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("cannot create a temp dir in {}: {e}", base.display()))
            .keep();
        let mut server = PgServer {
            bin,
            root,
            port: 0,
            as_postgres,
            guardian_pipe: None,
            guardian: None,
        };
        // The guardian first: from here on the dir goes away with us.
        server.spawn_guardian();
        if as_postgres {
            let out = run(Command::new("chown").args(["postgres:", path_str(&server.root)]));
            if !out.status.success() {
                panic!(
                    "cannot give {} to the postgres OS user (is there one?): {}",
                    server.root.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        server.initdb();
        let conf = server.data_dir().join("postgresql.conf");
        let base_conf = fs::read_to_string(&conf)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", conf.display()));
        // A free port can be taken between our probe and the server's bind:
        // try a few.
        let mut last_failure = String::new();
        for _ in 0..5 {
            server.port = free_port();
            let settings = format!(
                "\n# sessionlock test server\n\
                 listen_addresses = '127.0.0.1'\n\
                 port = {}\n\
                 unix_socket_directories = '{}'\n\
                 max_connections = 300\n\
                 synchronous_commit = on\n\
                 fsync = on\n\
                 logging_collector = off\n",
                server.port,
                server.root.display()
            );
            write_as_is(&conf, &format!("{base_conf}{settings}"));
            let out = server.pg_ctl(&["start", "-w", "-t", "30"]);
            if out.status.success() {
                server.wait_ready();
                return server;
            }
            last_failure = format!(
                "pg_ctl start: {}{}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                server.log()
            );
            if !server.log().contains("could not bind") {
                break;
            }
        }
        panic!("PostgreSQL test server did not start: {last_failure}");
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The same server through its unix socket
    /// (`postgres://postgres@/postgres?host=DIR&port=PORT`).
    pub fn socket_url(&self) -> String {
        format!(
            "postgres://postgres@/postgres?host={}&port={}",
            self.socket_dir().display(),
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the unix socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    /// Restarts the server (`pg_ctl restart -m fast`) on the same port and
    /// waits until it accepts connections; starts it if it was stopped.
    /// Committed data survives.
    ///
    /// # Panics
    ///
    /// If the server is not ready again within 30 s.
    pub fn restart(&self) {
        self.ctl_or_panic(&["restart", "-m", "fast", "-w", "-t", "30"]);
        self.wait_ready();
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`), keeping its data;
    /// [`restart`](Self::restart) brings it back.
    pub fn stop(&self) {
        self.ctl_or_panic(&["stop", "-m", "fast", "-w", "-t", "30"]);
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no
    /// shutdown checkpoint; the next start recovers from the WAL).
    pub fn crash(&self) {
        self.ctl_or_panic(&["stop", "-m", "immediate", "-w", "-t", "30"]);
    }

    /// Runs `sql` with `psql` against this server ([`psql`]).
    pub fn psql(&self, sql: &str) -> String {
        psql(&self.url(), sql)
    }

    fn initdb(&self) {
        let mut cmd = self.tool("initdb");
        cmd.args(["-A", "trust", "-U", "postgres", "--no-sync", "--no-locale"])
            .args(["-E", "UTF8", "-D"])
            .arg(self.data_dir());
        let out = run(&mut cmd);
        if !out.status.success() {
            panic!(
                "initdb failed in {}:\n{}{}",
                self.root.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// A server tool from the bin dir, as the cluster's owner, run from the
    /// temp dir (the owner may not reach our working dir).
    fn tool(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.current_dir(&self.root).stdin(Stdio::null());
        cmd
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let mut cmd = self.tool("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.root.join("server.log"))
            .args(args);
        run(&mut cmd)
    }

    fn ctl_or_panic(&self, args: &[&str]) {
        let out = self.pg_ctl(args);
        if !out.status.success() {
            panic!(
                "pg_ctl {} failed: {}{}\nserver log:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
    }

    /// Polls `pg_isready` until the server accepts connections.
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_WITHIN;
        let port = self.port.to_string();
        loop {
            let out = run(Command::new(self.bin.join("pg_isready")).args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "1",
            ]));
            if out.status.success() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "PostgreSQL test server on port {port} not ready within {READY_WITHIN:?}; \
                     server log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Spawns the process that stops the server and removes the dir once
    /// we are gone: it blocks reading a pipe whose only writer is us (the
    /// end is close-on-exec, so no other child holds it), in its own
    /// process group so a Ctrl-C to ours does not kill it first.
    fn spawn_guardian(&mut self) {
        let mut stop: Vec<String> = Vec::new();
        if self.as_postgres {
            stop.extend(["runuser", "-u", "postgres", "--"].map(String::from));
        }
        stop.push(path_str(&self.bin.join("pg_ctl")).to_owned());
        stop.extend(
            ["-D", path_str(&self.data_dir()), "stop", "-m", "immediate"].map(String::from),
        );
        let script = "trap '' HUP INT; dir=$1; shift; read -r _; \
                      [ -d \"$dir\" ] || exit 0; \"$@\" >/dev/null 2>&1; rm -rf \"$dir\"";
        let mut child = Command::new("sh")
            .args(["-c", script, "sessionlock-pg-guardian"])
            .arg(&self.root)
            .args(&stop)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn the PostgreSQL test server's guardian: {e}"));
        self.guardian_pipe = child.stdin.take();
        self.guardian = Some(child);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        let _ = fs::remove_dir_all(&self.root);
        drop(self.guardian_pipe.take());
        if let Some(mut g) = self.guardian.take() {
            let _ = g.wait();
        }
    }
}

/// The URL of the server ordinary tests share: `SESSIONLOCK_TEST_PG_URL`
/// when set, else one [`PgServer`] started on first use and stopped when
/// this process exits.
///
/// # Panics
///
/// If the variable is unset and no server binaries are found: a test that
/// needs PostgreSQL never passes silently.
pub fn shared_url() -> String {
    if let Some(url) = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()) {
        return url;
    }
    static SHARED: OnceLock<PgServer> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if server_bin().is_none() {
                panic!(
                    "this test needs PostgreSQL: {URL_VAR} is not set and no server binaries \
                     were found; {HOW_TO_GET_ONE}"
                );
            }
            PgServer::start()
        })
        .url()
}

/// Creates a database with a fresh name on the server at `url` and returns
/// `url` pointing at it, so a test does not see other tests' rows. It is
/// never dropped: the server is a throwaway.
pub fn fresh_database(url: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "t_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    psql(url, &format!("CREATE DATABASE {name}"));
    with_database(url, &name)
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let (head, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_end = head[after_scheme..]
        .find('/')
        .map_or(head.len(), |i| after_scheme + i);
    format!("{}/{db}{query}", &head[..authority_end])
}

/// Runs `sql` with `psql -X -A -t -v ON_ERROR_STOP=1` against `url` and
/// returns its stdout (rows one a line, columns split by `|`), so tests
/// can inspect tables and terminate backends without a Rust client.
///
/// # Panics
///
/// If psql cannot run or the SQL fails (the message holds psql's stderr).
pub fn psql(url: &str, sql: &str) -> String {
    let program = server_bin()
        .map(|b| b.join("psql"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"));
    let out = Command::new(&program)
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env_remove("PGOPTIONS")
        .env_remove("PGSERVICE")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if !out.status.success() {
        panic!(
            "psql failed ({}) on {sql:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The directory of the server binaries: `SESSIONLOCK_PG_BIN`, else the
/// highest version under `/usr/lib/postgresql/*/bin`, else
/// `pg_config --bindir`; only one that holds `initdb`.
pub fn server_bin() -> Option<PathBuf> {
    let has_initdb = |d: &Path| d.join("initdb").is_file();
    if let Some(dir) = std::env::var_os(BIN_VAR).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if !has_initdb(&dir) {
            panic!("{BIN_VAR}={} holds no initdb", dir.display());
        }
        return Some(dir);
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_initdb(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && has_initdb(&dir)).then_some(dir)
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        let what = if e.kind() == ErrorKind::NotFound {
            " (not found)"
        } else {
            ""
        };
        panic!("cannot run {:?}{what}: {e}", cmd.get_program())
    })
}

/// Overwrites `path`, keeping its owner (it may be the postgres user's).
fn write_as_is(path: &Path, text: &str) {
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("path is not UTF-8: {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgresql://u:p@h:1", "t1"),
            "postgresql://u:p@h:1/t1"
        );
        assert_eq!(
            with_database("postgres://u@/postgres?host=/tmp/x&port=5", "t1"),
            "postgres://u@/t1?host=/tmp/x&port=5"
        );
    }
}
