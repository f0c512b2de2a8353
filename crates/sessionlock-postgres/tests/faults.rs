//! Faults against a real server, with real processes: this test binary
//! re-executed in a child role (`child_entry`), killed, stopped and
//! continued; connections terminated by the server; servers restarted.
//! Every child takes the server's URL as its first argument.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::{BufRead, ErrorKind, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sessionlock::backend::{StoreBackend, TranscriptStore};
use sessionlock::store::{Durability, RawEntries};
use sessionlock::{Error, Guard, LockBackend, LockOptions, SessionLock, TryAcquireError};
use sessionlock_lab::pgserver::{fresh_database, psql, shared_url, PgServer};
use sessionlock_lab::testkit::{block_on, role_args, Kid, Signal};
use sessionlock_postgres::{PgBackend, PgStore, DEFAULT_SCHEMA};

/// How long a child may take to answer.
const ANSWER: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers

fn connect(url: &str) -> PgBackend {
    PgBackend::connect(url).unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

fn locks(url: &str, opts: LockOptions) -> SessionLock<PgBackend> {
    SessionLock::with_backend(connect(url), opts)
}

fn opts() -> LockOptions {
    LockOptions::default().timeout(Some(Duration::from_secs(30)))
}

fn fresh(tag: &str) -> String {
    format!(
        "faults/{tag}/{}/{}",
        std::process::id(),
        sessionlock::monotonic_ns()
    )
}

fn store(b: &PgBackend, key: &str) -> PgStore {
    let key = b.key(key).expect("key");
    block_on(b.open_store(&key)).expect("open store")
}

fn append(g: &Guard<PgBackend>, store: &mut PgStore, v: &Value) -> sessionlock::Result<()> {
    let mut raw = RawEntries::new();
    raw.push(v.to_string().as_bytes()).expect("entry");
    block_on(g.store_append(store, &raw, Durability::None)).map(drop)
}

fn read(store: &PgStore) -> Vec<Value> {
    block_on(store.read()).expect("read transcript").entries
}

fn epoch_of(line: &str) -> u64 {
    line.split_whitespace()
        .nth(1)
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("no epoch in {line:?}"))
}

fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{s}").expect("stdout");
    o.flush().expect("flush");
}

/// Waits until `cond` holds, or panics with `what` after `within`.
fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Server backends of the database at `url` waiting in a death watch.
fn death_watches(url: &str) -> usize {
    psql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND query LIKE 'SELECT pg_advisory_xact_lock_shared%'",
    )
    .trim()
    .parse()
    .expect("a count")
}

// ---------------------------------------------------------------- child roles

/// Runs the child role this process was started for, if any.
#[test]
fn child_entry() {
    let Some((role, args)) = role_args() else {
        return;
    };
    let url = args[0].as_str();
    match role.as_str() {
        // Acquire `args[1]` with a max hold of args[2] ms, report, then obey
        // `append <json>` and `release`.
        "hold" => {
            let max_hold: u64 = args[2].parse().expect("max hold");
            let locks = locks(url, opts().max_hold(Duration::from_millis(max_hold)));
            let g = locks.acquire(args[1].as_str()).expect("child acquire");
            let mut store = store(locks.backend(), &args[1]);
            out(&format!("HELD {}", g.epoch()));
            for line in std::io::stdin().lock().lines() {
                let line = line.expect("stdin");
                if let Some(json) = line.strip_prefix("append ") {
                    let v: Value = serde_json::from_str(json).expect("json");
                    match append(&g, &mut store, &v) {
                        Ok(()) => out("APPEND ok"),
                        Err(e) => out(&format!("APPEND err {} {e}", e.code())),
                    }
                } else if line == "release" {
                    break;
                }
            }
            drop(g);
            out("RELEASED");
        }
        // Mutual exclusion: args[2] critical sections on args[1], each
        // marked by an exclusive marker file in dir args[3], with one
        // fenced transcript entry.
        "excl" => {
            let locks = locks(url, opts());
            let n: u32 = args[2].parse().expect("n");
            let marker = Path::new(&args[3]).join("inside");
            let pid = std::process::id();
            let mut store = store(locks.backend(), &args[1]);
            for i in 0..n {
                let g = locks.acquire(args[1].as_str()).expect("acquire");
                match OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&marker)
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                        out(&format!("OVERLAP {pid} {i}"));
                        std::process::exit(3);
                    }
                    Err(e) => panic!("marker: {e}"),
                }
                append(&g, &mut store, &json!({"pid": pid, "i": i})).expect("fenced append");
                std::fs::remove_file(&marker).expect("leave the marker");
                g.release().expect("release");
            }
            out("DONE");
        }
        // Appends args[3] entries to args[1] in turns of 10 per
        // acquisition, as writer args[2]; prints `ACK <id>` for each
        // acknowledged one (ids are unique per attempt) and retries
        // through any failure.
        "writer" => {
            let locks = locks(
                url,
                LockOptions::default()
                    .timeout(Some(Duration::from_secs(60)))
                    .max_hold(Duration::from_secs(5)),
            );
            let n: u64 = args[3].parse().expect("n");
            let mut store = store(locks.backend(), &args[1]);
            let (mut acked, mut attempt) = (0, 0u64);
            while acked < n {
                let g = match locks.acquire(args[1].as_str()) {
                    Ok(g) => g,
                    Err(e) => {
                        out(&format!("ERR acquire {} {e}", e.code()));
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                for _ in 0..10 {
                    if acked == n {
                        break;
                    }
                    attempt += 1;
                    let id = format!("{}-{acked}-{attempt}", args[2]);
                    match append(&g, &mut store, &json!({ "id": id })) {
                        Ok(()) => {
                            out(&format!("ACK {id}"));
                            acked += 1;
                        }
                        Err(e) => {
                            out(&format!("ERR append {} {e}", e.code()));
                            break;
                        }
                    }
                }
                drop(g);
            }
            out("DONE");
        }
        // Connects (creating the schema) when told `go`.
        "connect" => {
            out("READY");
            let mut go = String::new();
            std::io::stdin().lock().read_line(&mut go).expect("stdin");
            match PgBackend::connect(url) {
                Ok(_) => out("CONNECTED"),
                Err(e) => out(&format!("FAILED {e}")),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------- resources

/// Regression: every wait on a live holder opened a death-watch connection
/// that outlived the wait (dropping the client left the socket open behind
/// the pending lock wait), so 8 processes contending for one session ran
/// the server out of connections ("sorry, too many clients already") in
/// seconds. A wait that ends must leave no server backend behind.
#[test]
fn ended_waits_leave_no_death_watch_behind() {
    let url = fresh_database(&shared_url());
    let key = fresh("watch");
    let mut holder = Kid::spawn("hold", &[&url, &key, "60000"]);
    holder.expect("HELD", ANSWER);
    let locks = locks(&url, LockOptions::default());
    let short = LockOptions::default().timeout(Some(Duration::from_millis(150)));
    for _ in 0..20 {
        let e = locks
            .acquire_with(key.as_str(), &short)
            .expect_err("the holder is alive");
        assert_eq!(e.code(), "timeout", "{e}");
    }
    // The server notices a closed socket within
    // client_connection_check_interval (1 s).
    wait_until(
        Duration::from_secs(5),
        "the death watches of ended waits are gone",
        || death_watches(&url) == 0,
    );
    holder.say("release");
    holder.expect("RELEASED", ANSWER);
}

// ---------------------------------------------------------------- exclusion and reclaim

/// Eight processes, 40 critical sections each on one session: never two
/// inside at once, and every fenced entry lands exactly once, in order.
#[test]
fn mutual_exclusion_among_eight_processes() {
    const KIDS: usize = 8;
    const EACH: u64 = 40;
    let url = fresh_database(&shared_url());
    let key = fresh("excl");
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().to_str().expect("utf8");
    let each = EACH.to_string();
    let started = Instant::now();
    let kids: Vec<Kid> = (0..KIDS)
        .map(|_| Kid::spawn("excl", &[&url, &key, &each, dir]))
        .collect();
    for k in &kids {
        k.expect("DONE", Duration::from_secs(90));
    }
    let took = started.elapsed();
    println!(
        "mutual exclusion: {} critical sections by {KIDS} processes in {took:?} ({:?} each)",
        KIDS as u64 * EACH,
        took / (KIDS as u32 * EACH as u32)
    );
    let pids: Vec<u32> = kids.iter().map(Kid::pid).collect();
    for k in kids {
        assert!(k.finish().success());
    }
    let entries = read(&store(&connect(&url), &key));
    assert_eq!(
        entries.len(),
        KIDS * EACH as usize,
        "every fenced entry landed"
    );
    for pid in pids {
        let mine: Vec<u64> = entries
            .iter()
            .filter(|e| e["pid"] == pid)
            .map(|e| e["i"].as_u64().expect("i"))
            .collect();
        assert_eq!(mine, (0..EACH).collect::<Vec<_>>(), "entries of {pid}");
    }
}

/// A holder SIGKILLed within a 60 s lease is reclaimed by a waiting
/// contender in well under 5 s (its liveness connection ends with it).
#[test]
fn sigkilled_holder_is_reclaimed_promptly() {
    let url = fresh_database(&shared_url());
    let key = fresh("kill");
    let kid = Kid::spawn("hold", &[&url, &key, "60000"]);
    let held = epoch_of(&kid.expect("HELD", ANSWER));
    let locks = locks(&url, opts());
    assert!(matches!(
        locks.try_acquire(key.as_str()),
        Err(TryAcquireError::WouldBlock(_))
    ));
    let waiter = {
        let (locks, key) = (locks.clone(), key.clone());
        std::thread::spawn(move || {
            let g = locks.acquire(key.as_str());
            (Instant::now(), g.map(|g| g.epoch()))
        })
    };
    // Let the waiter start waiting.
    std::thread::sleep(Duration::from_millis(300));
    kid.signal(Signal::KILL);
    let killed = Instant::now();
    let (got, epoch) = waiter.join().expect("join");
    let epoch = epoch.expect("the waiter acquires after SIGKILL");
    let took = got.saturating_duration_since(killed);
    println!("SIGKILL -> held by the waiter: {took:?}");
    assert!(epoch > held, "epoch {epoch} after {held}");
    assert!(took < Duration::from_secs(5), "reclaim took {took:?}");
    kid.kill_and_reap();
}

/// Terminates the server connection holding advisory lock `live_lock`
/// (a holder's liveness connection); returns how many were terminated.
fn terminate_liveness(url: &str, live_lock: i64) -> usize {
    psql(
        url,
        &format!(
            "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l \
             WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock' \
             AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = {live_lock}"
        ),
    )
    .trim()
    .parse()
    .expect("a count")
}

/// A holder whose liveness connection the server terminates is revoked:
/// a waiting contender takes over at once, and the old holder's append is
/// refused and absent.
#[test]
fn holder_whose_connection_is_terminated_is_revoked() {
    let url = fresh_database(&shared_url());
    let key = fresh("terminate");
    let mut kid = Kid::spawn("hold", &[&url, &key, "60000"]);
    let held = epoch_of(&kid.expect("HELD", ANSWER));
    kid.say(r#"append {"by":"old holder","n":1}"#);
    assert_eq!(kid.expect("APPEND", ANSWER), "APPEND ok");
    let live_lock: i64 = psql(
        &url,
        &format!(
            "SELECT live_lock FROM {DEFAULT_SCHEMA}.leases WHERE key = '{}'",
            key.replace('\'', "''")
        ),
    )
    .trim()
    .parse()
    .expect("the holder's liveness lock");
    let locks = locks(&url, opts());
    let waiter = {
        let (locks, key) = (locks.clone(), key.clone());
        std::thread::spawn(move || {
            let g = locks.acquire(key.as_str()).expect("take over");
            (Instant::now(), g)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        terminate_liveness(&url, live_lock),
        1,
        "one liveness connection"
    );
    let cut = Instant::now();
    let (got, g) = waiter.join().expect("join");
    let took = got.saturating_duration_since(cut);
    println!("pg_terminate_backend -> held by the waiter: {took:?}");
    assert!(took < Duration::from_secs(5), "take-over took {took:?}");
    assert!(g.epoch() > held);
    let mut st = store(locks.backend(), &key);
    append(&g, &mut st, &json!({"by": "new holder"})).expect("the new holder writes");
    kid.say(r#"append {"by":"old holder","n":2}"#);
    let verdict = kid.expect("APPEND", ANSWER);
    assert!(
        verdict.starts_with("APPEND err revoked") || verdict.starts_with("APPEND err fenced"),
        "{verdict}"
    );
    assert_eq!(
        read(&st),
        [
            json!({"by": "old holder", "n": 1}),
            json!({"by": "new holder"})
        ],
        "the refused append is absent"
    );
    kid.say("release");
    kid.expect("RELEASED", ANSWER);
    g.check()
        .expect("still ours after the old holder's release");
}

/// A SIGSTOPped holder with a 1.5 s lease is reclaimed once its lease
/// has passed on the server's clock; after SIGCONT its append is refused
/// and absent.
#[test]
fn stopped_holder_past_its_lease_is_reclaimed_and_refused() {
    let url = fresh_database(&shared_url());
    let key = fresh("stop");
    let mut kid = Kid::spawn("hold", &[&url, &key, "1500"]);
    let held = epoch_of(&kid.expect("HELD", ANSWER));
    kid.signal(Signal::STOP);
    let stopped = Instant::now();
    let locks = locks(&url, opts());
    let g = locks
        .acquire(key.as_str())
        .expect("reclaim after the lease");
    println!("SIGSTOP (1.5 s lease) -> held: {:?}", stopped.elapsed());
    assert!(g.epoch() > held);
    let mut st = store(locks.backend(), &key);
    append(&g, &mut st, &json!({"by": "new holder"})).expect("the new holder writes");
    kid.signal(Signal::CONT);
    kid.say(r#"append {"by":"stopped holder"}"#);
    let verdict = kid.expect("APPEND", ANSWER);
    assert!(
        verdict.starts_with("APPEND err revoked") || verdict.starts_with("APPEND err fenced"),
        "{verdict}"
    );
    assert_eq!(
        read(&st),
        [json!({"by": "new holder"})],
        "the refused append is absent"
    );
    kid.say("release");
    kid.expect("RELEASED", ANSWER);
    g.check().expect("still ours");
}

// ---------------------------------------------------------------- epochs and the transcript through faults

/// `f` until it succeeds, retrying `backend` errors (a server coming back)
/// for up to 10 s; counts the retries.
fn through_backend_errors<T>(
    retries: &mut u32,
    mut f: impl FnMut() -> sessionlock::Result<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Ok(t) => return t,
            Err(e) if e.code() == "backend" && Instant::now() < deadline => {
                *retries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// 1,000 acquisitions on a private server: in-process acquisitions, holder
/// processes SIGKILLed with the lock held, and a server restart halfway.
/// Epochs strictly increase throughout.
#[test]
fn epochs_strictly_increase_across_kills_and_a_server_restart() {
    let srv = PgServer::start();
    let url = srv.url();
    let key = fresh("epochs");
    let locks = locks(&url, opts());
    let mut epochs = Vec::with_capacity(1000);
    let mut retries = 0;
    let started = Instant::now();
    for i in 0..1000 {
        if i == 500 {
            srv.restart();
        }
        if i % 50 == 25 {
            let kid = Kid::spawn("hold", &[&url, &key, "60000"]);
            epochs.push(epoch_of(&kid.expect("HELD", ANSWER)));
            kid.kill_and_reap();
            continue;
        }
        let g = through_backend_errors(&mut retries, || locks.acquire(key.as_str()));
        epochs.push(g.epoch());
        drop(g);
    }
    println!(
        "1000 acquisitions (20 SIGKILLed holders, 1 restart) in {:?}; {retries} retries after the restart",
        started.elapsed()
    );
    for w in epochs.windows(2) {
        assert!(
            w[0] < w[1],
            "epochs must strictly increase: {} then {}",
            w[0],
            w[1]
        );
    }
}

/// A tiny deterministic generator (xorshift64*), seeded per run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Reads a writer's lines until it says DONE (true) or is killed at
/// `kill_at` acknowledgements (false, after draining what it printed).
fn run_writer(
    kid: &Kid,
    acked: &Mutex<Vec<String>>,
    kill_at: Option<usize>,
    count: &AtomicUsize,
) -> (bool, usize) {
    let mut mine = 0;
    loop {
        if kill_at == Some(mine) {
            kid.signal(Signal::KILL);
            while let Ok(line) = kid.next_line(Duration::from_secs(10)) {
                if let Some(id) = line.strip_prefix("ACK ") {
                    acked.lock().expect("acked").push(id.to_owned());
                    count.fetch_add(1, Ordering::SeqCst);
                    mine += 1;
                }
            }
            return (false, mine);
        }
        let line = kid
            .next_line(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("writer: {e}"));
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.lock().expect("acked").push(id.to_owned());
            count.fetch_add(1, Ordering::SeqCst);
            mine += 1;
        } else if line == "DONE" {
            return (true, mine);
        }
    }
}

/// 8 processes × 500 fenced appends (turns of 10 per acquisition) on a
/// private server, with random SIGKILLs, one storm of
/// `pg_terminate_backend` (every backend of the database but ours) and
/// one server restart: every acknowledged entry is in the transcript
/// exactly once, no entry twice, and the sequence is 0..n-1.
#[test]
fn acknowledged_entries_survive_kills_a_termination_storm_and_a_restart() {
    const WRITERS: usize = 8;
    const EACH: usize = 500;
    let srv = PgServer::start();
    let url = srv.url();
    let key = fresh("storm");
    drop(connect(&url)); // the schema, once
    let seed = sessionlock::monotonic_ns() | 1;
    println!("seed {seed}");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let kills = Arc::new(AtomicUsize::new(0));
    let slots: Vec<_> = (0..WRITERS)
        .map(|slot| {
            let (url, key, acked, count, kills) = (
                url.clone(),
                key.clone(),
                acked.clone(),
                count.clone(),
                kills.clone(),
            );
            let mut rng = Rng(seed.wrapping_add(slot as u64 * 0x9e37_79b9));
            std::thread::spawn(move || {
                let mut remaining = EACH;
                // Up to two kills per slot, at random points.
                let mut kills_left = rng.below(3);
                for gen in 0.. {
                    let id = format!("s{slot}g{gen}");
                    let n = remaining.to_string();
                    let kid = Kid::spawn("writer", &[&url, &key, &id, &n]);
                    let kill_at =
                        (kills_left > 0).then(|| 1 + rng.below(remaining as u64 / 2) as usize);
                    let (done, mine) = run_writer(&kid, &acked, kill_at, &count);
                    remaining -= mine.min(remaining);
                    if done {
                        assert!(kid.finish().success());
                        return;
                    }
                    kills.fetch_add(1, Ordering::SeqCst);
                    kid.kill_and_reap();
                    kills_left -= 1;
                }
            })
        })
        .collect();
    let total = WRITERS * EACH;
    wait_until(Duration::from_secs(120), "a quarter acknowledged", || {
        count.load(Ordering::SeqCst) >= total / 4
    });
    let terminated = psql(
        &url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    println!(
        "storm at {} acknowledged: {} backends terminated",
        count.load(Ordering::SeqCst),
        terminated.trim()
    );
    wait_until(Duration::from_secs(120), "half acknowledged", || {
        count.load(Ordering::SeqCst) >= total / 2
    });
    let restart = Instant::now();
    srv.restart();
    println!(
        "server restarted at {} acknowledged in {:?}",
        count.load(Ordering::SeqCst),
        restart.elapsed()
    );
    for s in slots {
        s.join().expect("writer slot");
    }
    let acked = acked.lock().expect("acked").clone();
    println!(
        "{} acknowledged appends by {WRITERS} writer slots ({} SIGKILLs) in {:?}",
        acked.len(),
        kills.load(Ordering::SeqCst),
        started.elapsed()
    );
    assert!(acked.len() >= total, "every slot reached its count");
    let entries = read(&store(&connect(&url), &key));
    let ids: Vec<&str> = entries
        .iter()
        .map(|e| e["id"].as_str().expect("an id"))
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an entry landed twice");
    let acked_set: BTreeSet<&str> = acked.iter().map(String::as_str).collect();
    assert_eq!(acked_set.len(), acked.len(), "an id acknowledged twice");
    let lost: Vec<&&str> = acked_set.difference(&unique).collect();
    assert!(lost.is_empty(), "acknowledged entries lost: {lost:?}");
    let seqs = psql(
        &url,
        &format!(
            "SELECT e.seq FROM {DEFAULT_SCHEMA}.entries e JOIN {DEFAULT_SCHEMA}.leases l \
             ON l.id = e.session WHERE l.key = '{key}' ORDER BY e.seq"
        ),
    );
    let seqs: Vec<usize> = seqs.lines().map(|l| l.parse().expect("seq")).collect();
    assert_eq!(
        seqs,
        (0..entries.len()).collect::<Vec<_>>(),
        "gapless sequence"
    );
}

// ---------------------------------------------------------------- schema

/// Eight processes connect to a fresh schema at once: all succeed, and
/// the schema is at the current version with one meta row.
#[test]
fn eight_clients_create_one_schema_at_once() {
    let schema = format!("t_{}_{}", std::process::id(), sessionlock::monotonic_ns());
    let base = shared_url();
    let url = format!("{base}?schema={schema}");
    let mut kids: Vec<Kid> = (0..8).map(|_| Kid::spawn("connect", &[&url])).collect();
    for k in &kids {
        k.expect("READY", ANSWER);
    }
    for k in &mut kids {
        k.say("go");
    }
    for k in &kids {
        let said = k.expect_any(&["CONNECTED", "FAILED"]);
        assert_eq!(said, "CONNECTED");
    }
    for k in kids {
        assert!(k.finish().success());
    }
    assert_eq!(
        psql(
            &base,
            &format!("SELECT version, count(*) OVER () FROM {schema}.meta")
        )
        .trim(),
        format!("{}|1", sessionlock_postgres::SCHEMA_VERSION)
    );
}

// ---------------------------------------------------------------- bad conditions

/// A closed port: a `backend` error naming host and port, never the
/// password.
#[test]
fn server_down_at_start_names_host_and_port_not_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://gateway:s3cret-pw@127.0.0.1:{port}/app");
    let e = PgBackend::connect(&url).expect_err("nothing listens there");
    assert_eq!(e.code(), "backend", "{e}");
    let mut shown = format!("{e} {e:?}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        shown.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    println!("server down: {e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(!shown.contains("s3cret-pw"), "the password leaked: {shown}");
}

/// Wrong credentials on a server that asks for a password over TCP: a
/// `backend` error naming the server, never the password.
#[test]
fn wrong_credentials_are_a_clear_error() {
    let srv = PgServer::start();
    psql(
        &srv.url(),
        "CREATE ROLE gateway LOGIN PASSWORD 'right-pw'; \
         GRANT CREATE ON DATABASE postgres TO gateway",
    );
    let hba = srv.data_dir().join("pg_hba.conf");
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&hba)
        .and_then(|mut f| {
            f.write_all(
                b"local all all trust\n\
                  host all postgres 127.0.0.1/32 trust\n\
                  host all all 127.0.0.1/32 scram-sha-256\n",
            )
        })
        .expect("write pg_hba.conf");
    psql(&srv.url(), "SELECT pg_reload_conf()");
    let base = format!("127.0.0.1:{}", srv.port());
    let good = format!("postgres://gateway:right-pw@{base}/postgres?schema=gw");
    wait_until(Duration::from_secs(5), "the right password works", || {
        PgBackend::connect(&good).is_ok()
    });
    let bad = format!("postgres://gateway:wrong-pw@{base}/postgres?schema=gw");
    let e = PgBackend::connect(&bad).expect_err("the wrong password");
    println!("wrong credentials: {e}");
    assert_eq!(e.code(), "backend", "{e}");
    let shown = format!("{e} {e:?} {:?}", std::error::Error::source(&e));
    assert!(shown.contains("password authentication failed"), "{shown}");
    assert!(e.to_string().contains(&base), "{e}");
    assert!(!shown.contains("wrong-pw"), "the password leaked: {shown}");
}

/// A schema a newer sessionlock made is refused with a message saying so.
#[test]
fn a_schema_from_a_newer_version_is_refused() {
    let schema = format!("t_{}_{}", std::process::id(), sessionlock::monotonic_ns());
    let base = shared_url();
    let url = format!("{base}?schema={schema}");
    drop(connect(&url));
    psql(&base, &format!("UPDATE {schema}.meta SET version = 99"));
    let e = PgBackend::connect(&url).expect_err("a newer schema");
    println!("newer schema: {e}");
    assert_eq!(e.code(), "backend", "{e}");
    let shown = format!(
        "{e}: {:?}",
        std::error::Error::source(&e).map(ToString::to_string)
    );
    assert!(shown.contains("version 99"), "{shown}");
    assert!(shown.contains("newer"), "{shown}");
}

/// A key of 10 kB, or with a NUL byte, is `InvalidPath`, for the key and
/// for an acquisition.
#[test]
fn oversized_and_nul_keys_are_invalid() {
    let url = fresh_database(&shared_url());
    let b = connect(&url);
    let locks = SessionLock::with_backend(b.clone(), opts());
    for bad in ["k".repeat(10 * 1024), "a\0b".to_owned()] {
        let e = b.key_of(&bad).expect_err("an invalid key");
        assert!(matches!(e, Error::InvalidPath { .. }), "{e}");
        let e = locks.acquire(bad.as_str()).expect_err("an invalid key");
        assert!(matches!(e, Error::InvalidPath { .. }), "{e}");
        println!("invalid key: {e}");
    }
}
