//! A transaction-pooling proxy (PgBouncer) between sessionlock and the
//! server drops the session state the liveness lock needs: the backend
//! refuses it with a clear error, whether the proxy rejects the startup
//! options or silently ignores them. Needs the `pgbouncer` binary
//! (`.ci/run` installs it).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sessionlock_lab::pgserver::PgServer;
use sessionlock_postgres::PgBackend;

/// A PgBouncer in transaction mode in front of `server`, stopped on drop.
struct Bouncer {
    dir: tempfile::TempDir,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn as_postgres(cmd: &str, args: &[&str]) -> Command {
    let root = rustix::process::geteuid().is_root();
    let mut c = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", cmd]);
        c
    } else {
        Command::new(cmd)
    };
    c.args(args);
    c
}

impl Bouncer {
    fn start(server: &PgServer, extra: &str) -> Bouncer {
        let bin = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("pgbouncer is not installed: apt-get install -y pgbouncer (.ci/run does)");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        std::fs::write(
            &ini,
            format!(
                "[databases]\npostgres = host=127.0.0.1 port={} dbname=postgres user=postgres\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n\
                 auth_file = {d}/users.txt\npool_mode = transaction\nunix_socket_dir =\n\
                 logfile = {d}/log\npidfile = {d}/pid\n{extra}\n",
                server.port(),
                d = dir.path().display()
            ),
        )
        .unwrap();
        Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status()
            .ok();
        let ok = as_postgres(bin, &["-d", ini.to_str().unwrap()])
            .status()
            .expect("run pgbouncer");
        assert!(ok.success(), "pgbouncer did not start");
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "pgbouncer never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Bouncer { dir, port }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn refusal(url: &str) -> String {
    let e = PgBackend::connect(url).expect_err("a transaction-pooling proxy must be refused");
    assert_eq!(e.code(), "backend", "{e}");
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[test]
fn a_transaction_pooling_proxy_is_refused_whether_it_rejects_or_ignores_startup_options() {
    let server = PgServer::start();
    // Direct: fine.
    PgBackend::connect(&server.url()).expect("a direct connection works");
    let rejecting = Bouncer::start(&server, "");
    let text = refusal(&rejecting.url());
    assert!(text.contains("PgBouncer"), "{text}");
    drop(rejecting);
    let ignoring = Bouncer::start(
        &server,
        "ignore_startup_parameters = options,extra_float_digits",
    );
    let text = refusal(&ignoring.url());
    assert!(
        text.contains("ignored the connection's startup options") && text.contains("PgBouncer"),
        "{text}"
    );
}
