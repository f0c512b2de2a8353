//! The throwaway PostgreSQL server of the test kit: it starts, answers,
//! keeps committed data across a restart, and is gone when its owner drops
//! it or dies by SIGKILL.

use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use sessionlock_lab::pgserver::{fresh_database, psql, shared_url, PgServer};
use sessionlock_lab::testkit::{role_args, Kid, Signal};

/// Child roles: `serve` starts a server, prints `server <port> <dir>`, and
/// sleeps until killed.
#[test]
fn child_entry() {
    let Some((role, _args)) = role_args() else {
        return;
    };
    match role.as_str() {
        "serve" => {
            let server = PgServer::start();
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "server {} {}",
                server.port(),
                server.data_dir().display()
            )
            .expect("stdout");
            out.flush().expect("flush");
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn refuses(port: u16) -> bool {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )
    .is_err()
}

/// Waits up to `within` for `cond`.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn starts_answers_on_loopback_and_socket_with_durable_settings() {
    let server = PgServer::start();
    assert_eq!(server.psql("select 1 + 1").trim(), "2");
    assert_eq!(psql(&server.socket_url(), "select 3").trim(), "3");
    assert!(
        server
            .socket_dir()
            .join(format!(".s.PGSQL.{}", server.port()))
            .exists(),
        "no unix socket in {}",
        server.socket_dir().display()
    );
    let settings = server.psql(
        "select current_setting('synchronous_commit'), current_setting('fsync'), \
         current_setting('max_connections'), current_setting('listen_addresses')",
    );
    assert_eq!(settings.trim(), "on|on|300|127.0.0.1");
    assert!(server
        .url()
        .ends_with(&format!(":{}/postgres", server.port())));
}

#[test]
fn psql_failure_panics_with_the_servers_message() {
    let server = PgServer::start();
    let err = std::panic::catch_unwind(|| server.psql("select * from no_such_table"))
        .expect_err("psql on a missing table must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("no_such_table"), "panic message: {msg}");
}

#[test]
fn restart_keeps_committed_data_and_the_port() {
    let server = PgServer::start();
    let port = server.port();
    server.psql("create table t (x int); insert into t values (41), (1)");
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(server.psql("select sum(x) from t").trim(), "42");
    // After a crash the WAL brings the rows back too.
    server.psql("insert into t values (100)");
    server.crash();
    assert!(refuses(port), "crashed server still accepts");
    server.restart();
    assert_eq!(server.psql("select sum(x) from t").trim(), "142");
    server.stop();
    assert!(refuses(port), "stopped server still accepts");
    server.restart();
    assert_eq!(server.psql("select count(*) from t").trim(), "3");
}

#[test]
fn drop_stops_the_server_and_removes_its_dir() {
    let server = PgServer::start();
    let port = server.port();
    let data = server.data_dir();
    assert!(!refuses(port));
    drop(server);
    assert!(refuses(port), "port {port} still accepts after drop");
    assert!(!data.exists(), "{} left behind", data.display());
}

#[test]
fn guardian_stops_the_server_of_a_sigkilled_owner() {
    let kid = Kid::spawn("serve", &[]);
    let line = kid.expect("server ", Duration::from_secs(60));
    let mut parts = line.split_whitespace().skip(1);
    let port: u16 = parts.next().expect("port").parse().expect("port number");
    let data = Path::new(parts.next().expect("data dir")).to_path_buf();
    assert!(!refuses(port), "the child's server does not answer");
    assert!(data.exists());
    kid.signal(Signal::KILL);
    kid.kill_and_reap();
    assert!(
        eventually(Duration::from_secs(10), || refuses(port)),
        "port {port} still accepts 10 s after its owner was SIGKILLed"
    );
    assert!(
        eventually(Duration::from_secs(10), || !data.exists()),
        "{} left behind 10 s after its owner was SIGKILLed",
        data.display()
    );
}

#[test]
fn fresh_databases_on_the_shared_server_are_apart() {
    let url = shared_url();
    let a = fresh_database(&url);
    let b = fresh_database(&url);
    assert_ne!(a, b);
    psql(&a, "create table only_in_a (x int)");
    assert_eq!(
        psql(
            &a,
            "select count(*) from pg_tables where tablename = 'only_in_a'"
        )
        .trim(),
        "1"
    );
    assert_eq!(
        psql(
            &b,
            "select count(*) from pg_tables where tablename = 'only_in_a'"
        )
        .trim(),
        "0"
    );
    assert_eq!(shared_url(), url, "one shared server per process");
}
