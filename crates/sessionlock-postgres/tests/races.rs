//! Races found in review, each against a real server: a foreign edit or
//! deletion that commits just after an append must not move the session's
//! sequence back; an append whose connection is cut on our side while the
//! server still runs it must land once; a wait must not sleep past a holder
//! that died just before it began.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessionlock::backend::{StoreBackend, TranscriptStore};
use sessionlock::{LockBackend, LockOptions, SessionLock};
use sessionlock_lab::pgserver::{fresh_database, psql, shared_url};
use sessionlock_lab::testkit::block_on;
use sessionlock_postgres::PgBackend;

mod common;
use common::{fresh, hold_row, one, plant_live_holder, psql_bg, until_count};

/// A foreign statement on `entries` whose trigger waits for the lease row
/// behind an append: when it runs after the append committed, the
/// session's next sequence must still count the appended entry (else the
/// holder's next append collides with it and fails for ever).
fn foreign_change_behind_an_append(foreign: &str) {
    let url = fresh_database(&shared_url());
    let b = PgBackend::connect(&url).expect("connect");
    let locks = SessionLock::with_backend(b.clone(), LockOptions::default());
    let s = fresh("races/seq");
    let key = b.key_of(&s).unwrap();
    let mut store = block_on(b.open_store(&key)).unwrap();
    let g = locks.acquire(s.as_str()).expect("acquire");
    block_on(g.store_append(&mut store, &one(r#"{"n":0}"#), Default::default())).unwrap();
    block_on(g.store_append(&mut store, &one(r#"{"n":1}"#), Default::default())).unwrap();
    // Someone holds the lease row a while: the append queues for it first,
    // the foreign statement's trigger after it.
    let mut blocker = hold_row(&url, &s, "FOR SHARE", 1.5);
    std::thread::scope(|scope| {
        let appending = {
            let (g, mut store) = (&g, store.clone());
            scope.spawn(move || {
                block_on(g.store_append(&mut store, &one(r#"{"n":2}"#), Default::default()))
            })
        };
        let waiting = |like: &str| {
            format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '{like}' AND wait_event_type = 'Lock'"
        )
        };
        until_count(
            &url,
            &waiting("WITH l AS (SELECT id, next_seq%"),
            "1",
            "the append's wait",
        );
        let id = psql(
            &url,
            &format!("SELECT id FROM sessionlock.leases WHERE key = '{s}'"),
        );
        let foreign = foreign.replace("$ID", id.trim());
        let mut editor = psql_bg(&url, &foreign);
        until_count(
            &url,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' \
             AND query = '{}'",
                foreign.replace('\'', "''")
            ),
            "1",
            "the foreign statement's wait",
        );
        appending.join().unwrap().expect("the append lands");
        assert!(blocker.wait().unwrap().success());
        assert!(editor.wait().unwrap().success());
    });
    let counted = psql(
        &url,
        &format!(
            "SELECT l.next_seq, (SELECT coalesce(max(e.seq) + 1, 0) FROM sessionlock.entries e \
             WHERE e.session = l.id) FROM sessionlock.leases l WHERE l.key = '{s}'"
        ),
    );
    let (next, real) = counted.trim().split_once('|').expect("two columns");
    assert_eq!(
        next, real,
        "the lease row's next_seq went back past an appended entry"
    );
    // The holder goes on writing.
    block_on(g.store_append(&mut store, &one(r#"{"n":3}"#), Default::default()))
        .expect("the holder's next append lands");
    g.release().expect("release");
}

#[test]
fn a_foreign_edit_committed_after_an_append_keeps_the_sequence() {
    foreign_change_behind_an_append(
        r#"UPDATE sessionlock.entries SET line = '{"n":"edited"}' WHERE session = $ID AND seq = 0"#,
    );
}

#[test]
fn a_foreign_deletion_committed_after_an_append_keeps_the_sequence() {
    foreign_change_behind_an_append(
        "DELETE FROM sessionlock.entries WHERE session = $ID AND seq = 0",
    );
}

/// A TCP relay to the server whose connections can be cut on the client's
/// side only: the server keeps its end open and goes on running what it
/// was sent, as after a partition or a middlebox reset.
struct Relay {
    port: u16,
    /// Client-side sockets by the port the server sees the connection from.
    by_server_port: Arc<Mutex<HashMap<u16, TcpStream>>>,
}

impl Relay {
    fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let by_server_port: Arc<Mutex<HashMap<u16, TcpStream>>> = Arc::default();
        let map = by_server_port.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let server_port = server.local_addr().unwrap().port();
                map.lock()
                    .unwrap()
                    .insert(server_port, client.try_clone().unwrap());
                // Copies one way; never closes the server's side, so a
                // connection cut on the client's side stays open there.
                let pump = |mut from: TcpStream, mut to: TcpStream, keep: TcpStream| {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        std::mem::forget(keep);
                    });
                };
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                );
                pump(server.try_clone().unwrap(), client, server);
            }
        });
        Relay {
            port,
            by_server_port,
        }
    }

    /// Cuts the connection the server sees from `server_port`, on the
    /// client's side only.
    fn cut(&self, server_port: u16) {
        let map = self.by_server_port.lock().unwrap();
        let client = map.get(&server_port).expect("a relayed connection");
        client.shutdown(Shutdown::Both).expect("shutdown");
    }
}

/// An append waits for the lease row on the server; its connection is
/// then cut on our side only, so the server still runs it. The append
/// asks whether its batch landed, finds it has not (yet), and tries again:
/// the entry must land once, not twice.
#[test]
fn an_append_still_running_on_the_server_after_a_cut_lands_once() {
    let url = fresh_database(&shared_url());
    let port: u16 = psql(&url, "SELECT current_setting('port')")
        .trim()
        .parse()
        .expect("a port");
    let relay = Relay::start(port);
    let relayed = {
        let at = url.find("://").unwrap() + 3;
        let rest = &url[at..];
        let host_end = rest.find('/').unwrap();
        let authority = &rest[..host_end];
        let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "{}{}127.0.0.1:{}{}",
            &url[..at],
            userinfo.unwrap_or_default(),
            relay.port,
            &rest[host_end..]
        )
    };
    let b = PgBackend::connect(&relayed).expect("connect through the relay");
    let locks = SessionLock::with_backend(b.clone(), LockOptions::default());
    let s = fresh("races/cut");
    let key = b.key_of(&s).unwrap();
    let mut store = block_on(b.open_store(&key)).unwrap();
    let g = locks.acquire(s.as_str()).expect("acquire");
    let mut blocker = hold_row(&url, &s, "FOR SHARE", 2.0);
    let cutter = {
        let url = url.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                let port = psql(
                    &url,
                    "SELECT client_port FROM pg_stat_activity \
                     WHERE datname = current_database() AND query LIKE 'WITH l AS (SELECT id, next_seq%' AND wait_event_type = 'Lock'",
                );
                if let Ok(p) = port.trim().parse::<u16>() {
                    relay.cut(p);
                    return relay;
                }
                assert!(Instant::now() < until, "the append never waited");
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let a = block_on(g.store_append(&mut store, &one(r#"{"n":"once"}"#), Default::default()))
        .expect("the append finishes");
    let _relay = cutter.join().unwrap();
    assert!(blocker.wait().unwrap().success());
    assert_eq!((a.offset, a.len), (0, 13));
    let read = block_on(store.read()).unwrap();
    assert_eq!(
        read.entries,
        vec![serde_json::json!({"n": "once"})],
        "the entry landed more than once"
    );
    g.release().expect("release");
}

/// A wait whose holder died after the waiter's last look, while the
/// waiter's death watch of that holder (kept from an earlier wait) had
/// already seen it die, wakes at once, not at the next re-check.
#[test]
fn a_wait_after_the_holder_died_wakes_at_once() {
    let url = fresh_database(&shared_url());
    let b = PgBackend::connect(&url).expect("connect");
    let s = fresh("races/death");
    let live_lock: i64 = 8_000_000_000 + i64::from(std::process::id());
    let mut holder = plant_live_holder(&url, &s, live_lock);
    let key = b.key_of(&s).unwrap();
    let mut w = block_on(b.watch(&key)).expect("watch");
    let seen = block_on(b.inspect(&key)).unwrap().expect("a holder");
    assert_eq!(seen.liveness, sessionlock::identity::Liveness::Alive);
    // A first wait ends at its timeout, its death watch in place.
    block_on(b.wait(&mut w, Some(&seen), Some(Duration::from_millis(300)))).unwrap();
    // The holder dies before the next wait begins; its death watch sees it.
    psql(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'SELECT pg_advisory_lock(%'",
    );
    let _ = holder.wait();
    until_count(
        &url,
        &format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ExclusiveLock' \
             AND granted AND objid = {}",
            live_lock & 0xffff_ffff
        ),
        "0",
        "the holder's death",
    );
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    block_on(b.wait(&mut w, Some(&seen), Some(Duration::from_secs(5)))).unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "the wait slept {took:?} past a holder already dead"
    );
}
