//! The backend conformance suite: the lock and store guarantees (the
//! invariants of docs/design.md §10, and the takeover kinds of §7.2), written
//! against the backend seam only ([`LockBackend`], [`StoreBackend`],
//! [`TranscriptStore`], [`SessionLock`], [`Guard`]), with real processes. Every
//! backend passes it.
//!
//! # How to run this suite for a new backend
//!
//! 1. Implement [`Harness`] for your backend in a test file of its own,
//!    `crates/sessionlock/tests/conformance_<name>.rs` (a backend in a crate
//!    of its own includes this directory and `common/` into one of its test
//!    binaries with `#[path = ...] mod conformance;` and `mod common;`):
//!    - [`Harness::backend`] builds a backend (connected to the test
//!      database, say); it is called in the test process and in its child
//!      processes;
//!    - [`Harness::fresh_session`] names a session nobody used before, as a
//!      string a child process receives on its command line;
//!      [`Harness::Session`] turns it into what [`LockBackend::Name`] borrows
//!      from (`PathBuf` for files, `String` for a database);
//!    - [`Harness::tamper_lock`] and [`Harness::tamper_transcript`] are the
//!      foreign hands: what a program that ignores sessionlock does to a
//!      session's lock (remove it; publish its own) and transcript (append,
//!      cut, edit, rewrite, replace, delete), each described at its variant
//!      of [`LockTamper`] and [`TranscriptTamper`].
//! 2. Instantiate the suite with one line (after `mod common; mod
//!    conformance;`):
//!    ```ignore
//!    conformance::conformance_suite!(postgres, PgHarness::new());
//!    ```
//!    which expands to one `#[test]` per guarantee, named
//!    `<name>::<guarantee>`, and the `child_entry` test through which the
//!    suite's child processes (this test binary, re-executed) run their
//!    roles. One backend per test binary: `child_entry` is the binary's.
//! 3. Run it: `cargo test -p sessionlock --test conformance_<name>`.
//!
//! The tests are listed in `conformance_suite!`, each named for the
//! guarantee it checks; every one fails when the file backend's code for
//! that guarantee is broken on purpose (publish over a held lock, a dead
//! holder judged alive, no lease end, no epoch check, no version check,
//! each takeover kind misjudged).
//!
//! The harness expression is evaluated once per test and once in each
//! child process, so it must be cheap and must not depend on state the test
//! process made (sessions reach children by name).

use std::fmt::Debug;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sessionlock::backend::{
    Inspection, LeaseRequest, LockBackend, Outcome, StoreBackend, TranscriptStore,
};
use sessionlock::classify::{AcceptNothing, ChangeClassifier};
use sessionlock::identity::SelfIdentity;
use sessionlock::store::{Change, Durability, RawEntries, Takeover};
use sessionlock::{Error, Guard, LockOptions, LossCause, SessionLock, TryAcquireError};

use crate::testkit::{block_on, role_args, Kid, Signal};

// ---------------------------------------------------------------- the harness

/// What a program that ignores sessionlock does to a session's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockTamper {
    /// Removes the lock, whoever holds it, without going through the
    /// backend (files: `unlink` of the lock file; a database: `DELETE` of
    /// the lease row). The session's epoch record is left alone.
    Remove,
    /// Replaces the lock (or creates one) with a lock a dead process
    /// published, carrying `epoch`, written as a new version that no
    /// earlier inspection can match (files: a new file renamed over the
    /// lock; a database: an `UPSERT` of the lease row). A contender may
    /// reclaim it at once (its holder is dead).
    Plant {
        /// The epoch the planted lock carries.
        epoch: u64,
    },
}

/// What a program that ignores sessionlock does to a session's transcript
/// (which holds at least two complete entries when it is called). Each
/// change must be visible to the next [`TranscriptStore::check`] when the
/// hook returns (files: whatever moves the file's times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranscriptTamper {
    /// Appends these bytes as they are, unfenced: whole JSONL lines, or an
    /// incomplete one (files: an `O_APPEND` write; a database: rows holding
    /// these lines).
    Append(Vec<u8>),
    /// Drops the last entry in place (files: `truncate` to the end of the
    /// line before).
    DropLast,
    /// Changes one byte inside the first entry in place, keeping every
    /// length (files: a `pwrite` of one byte).
    EditFirst,
    /// Rewrites the transcript with byte-identical content as a new object
    /// (files: a copy renamed over the transcript).
    RewriteIdentical,
    /// Puts a different transcript in its place: the same entries plus one
    /// more, as a new object (files: a new file renamed over it).
    Replace,
    /// Deletes the transcript.
    Delete,
}

/// What a backend provides to run the conformance suite.
pub trait Harness: Send + Sync + 'static {
    /// The backend under test.
    type Backend: StoreBackend;
    /// An owned session name the backend's names borrow from (`PathBuf`
    /// for files, `String` for a database), made from the strings
    /// [`Harness::fresh_session`] returns.
    type Session: AsRef<<Self::Backend as LockBackend>::Name>
        + From<String>
        + Clone
        + Debug
        + Send
        + Sync
        + 'static;

    /// A backend to test, as the library's users build it.
    fn backend(&self) -> Self::Backend;

    /// The name of a session nobody used before (no lock, no transcript,
    /// no epoch), the same in every process of the test.
    fn fresh_session(&self) -> String;

    /// Changes the lock of `session` as a foreign program would.
    fn tamper_lock(&self, session: &str, how: LockTamper);

    /// Changes the transcript of `session` as a foreign program would.
    fn tamper_transcript(&self, session: &str, how: TranscriptTamper);
}

/// Expands to the suite for one backend: `$name::<guarantee>` tests and the
/// binary's `child_entry`. See the module docs.
#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $harness:expr) => {
        /// Entry point of the suite's child processes (a no-op in a normal
        /// test run).
        #[test]
        fn child_entry() {
            $crate::conformance::child_entry(&$harness);
        }

        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $crate::conformance_suite!(@tests $harness;
                mutual_exclusion_across_processes,
                sigkilled_holder_is_reclaimed_promptly,
                stopped_holder_past_its_lease_is_reclaimed_and_fenced,
                epochs_strictly_increase_across_acquisitions_crashes_and_removed_locks,
                remove_if_unchanged_removes_only_the_inspected_lock_and_keeps_its_epoch,
                fenced_store_write_of_a_reclaimed_guard_is_refused_and_lands_nothing,
                stale_release_never_removes_the_replacement,
                lock_removed_from_outside_revokes_the_holder_and_refuses_its_writes,
                eight_racing_reclaimers_exactly_one_wins,
                reclaim_of_a_changed_lock_removes_nothing,
                eight_reclaiming_processes_exactly_one_wins,
                unchanged_transcript_is_unchanged,
                own_fenced_writes_are_unchanged_after_a_new_snapshot,
                byte_identical_rewrite_is_benign,
                benign_append_is_accepted_with_its_entries_and_range,
                truncation_is_a_takeover,
                edit_is_a_takeover,
                replacement_is_a_takeover,
                deletion_is_a_takeover,
                foreign_entry_is_a_takeover,
                incomplete_append_is_a_takeover,
                metrics_and_events_follow_a_scripted_scenario,
            );
        }
    };
    (@tests $harness:expr; $($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                $crate::conformance::$test(&$harness);
            }
        )*
    };
}

// ---------------------------------------------------------------- helpers

/// How long an acquisition of the suite may wait.
const BUDGET: Duration = Duration::from_secs(20);

/// How long a child may take to answer.
const ANSWER: Duration = Duration::from_secs(60);

fn opts() -> LockOptions {
    LockOptions::default().timeout(Some(BUDGET))
}

fn locks<H: Harness>(h: &H) -> SessionLock<H::Backend> {
    SessionLock::with_backend(h.backend(), opts())
}

fn name<H: Harness>(session: &str) -> H::Session {
    H::Session::from(session.to_owned())
}

fn key<H: Harness>(b: &H::Backend, session: &str) -> <H::Backend as LockBackend>::Key {
    b.key(name::<H>(session).as_ref()).expect("session key")
}

fn req() -> LeaseRequest {
    LeaseRequest {
        max_hold: Duration::from_secs(60),
        lane: Some("conformance".into()),
        run_id: None,
        me: SelfIdentity::current(),
        openclaw_compat: false,
    }
}

fn raw(values: &[Value]) -> RawEntries {
    let mut r = RawEntries::new();
    for v in values {
        r.push(v.to_string().as_bytes()).expect("entry");
    }
    r
}

fn line(v: &Value) -> Vec<u8> {
    let mut l = v.to_string().into_bytes();
    l.push(b'\n');
    l
}

fn store<H: Harness>(
    b: &H::Backend,
    guard: &Guard<H::Backend>,
) -> <H::Backend as StoreBackend>::Store {
    block_on(b.open_store(guard.key())).expect("open store")
}

fn append<H: Harness>(
    guard: &Guard<H::Backend>,
    store: &mut <H::Backend as StoreBackend>::Store,
    values: &[Value],
) -> sessionlock::Result<()> {
    block_on(guard.store_append(store, &raw(values), Durability::None)).map(drop)
}

fn read<H: Harness>(store: &<H::Backend as StoreBackend>::Store) -> Vec<Value> {
    let r = block_on(store.read()).expect("read transcript");
    assert_eq!(r.torn, None, "no torn tail expected");
    r.entries
}

fn inspect<H: Harness>(
    b: &H::Backend,
    key: &<H::Backend as LockBackend>::Key,
) -> Option<Inspection<<H::Backend as LockBackend>::Version>> {
    block_on(b.inspect(key)).expect("inspect")
}

/// The lock's token, as inspected (the published holder's identity).
fn published_token<H: Harness>(
    b: &H::Backend,
    key: &<H::Backend as LockBackend>::Key,
) -> Option<String> {
    let seen = inspect::<H>(b, key).expect("a lock is published");
    seen.payload.expect("a well-formed payload").token
}

/// The epoch after `prefix ` in a child's line.
fn epoch_of(line: &str, prefix: &str) -> u64 {
    line[prefix.len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("no epoch in {line:?}: {e}"))
}

fn is_refusal(e: &Error) -> bool {
    matches!(e, Error::Revoked { .. } | Error::Fenced { .. })
}

// ---------------------------------------------------------------- child roles

/// Runs the child role this process was started for, if any.
pub fn child_entry<H: Harness>(h: &H) {
    let Some((role, args)) = role_args() else {
        return;
    };
    let out = |s: String| {
        let mut o = std::io::stdout().lock();
        writeln!(o, "{s}").expect("stdout");
        o.flush().expect("flush");
    };
    let locks = locks(h);
    match role.as_str() {
        // Acquire with a max hold of args[1] ms, report, then obey:
        // `append <json>`, `check`, `release`.
        "hold" => {
            let session = name::<H>(&args[0]);
            let max_hold: u64 = args[1].parse().expect("max hold");
            let o = opts()
                .max_hold(Duration::from_millis(max_hold))
                .lane("child");
            let g = locks.acquire_with(&session, &o).expect("child acquire");
            let mut store = store::<H>(locks.backend(), &g);
            out(format!("HELD {}", g.epoch()));
            let mut input = String::new();
            while std::io::stdin()
                .lock()
                .read_line(&mut input)
                .expect("stdin")
                > 0
            {
                let cmd = input.trim();
                if let Some(json) = cmd.strip_prefix("append ") {
                    let v: Value = serde_json::from_str(json).expect("json");
                    match append::<H>(&g, &mut store, &[v]) {
                        Ok(()) => out("APPEND ok".into()),
                        Err(e) => out(format!("APPEND err {} {e}", e.code())),
                    }
                } else if cmd == "check" {
                    match g.check() {
                        Ok(()) => out("CHECK ok".into()),
                        Err(e) => out(format!("CHECK err {e}")),
                    }
                } else if cmd == "release" {
                    break;
                }
                input.clear();
            }
            drop(g);
            out("RELEASED".into());
        }
        // Acquire, report the epoch, wait to be killed.
        "crash" => {
            let g = locks.acquire(name::<H>(&args[0])).expect("acquire");
            out(format!("HELD {}", g.epoch()));
            std::thread::sleep(Duration::from_secs(120));
            drop(g);
        }
        // Try once; if won, hold until stdin closes.
        "try-hold" => match locks.try_acquire(name::<H>(&args[0])) {
            Ok(g) => {
                out(format!("WON {}", g.epoch()));
                let mut sink = String::new();
                let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
                drop(g);
            }
            Err(TryAcquireError::WouldBlock(h)) => out(format!("BLOCKED {:?}", h.pid)),
            Err(e) => out(format!("FAILED {e}")),
        },
        // Mutual exclusion: `n` critical sections, each marked by an
        // exclusive marker file, logged begin/end under the fence, with one
        // fenced transcript entry.
        "excl" => {
            let session = name::<H>(&args[0]);
            let dir = Path::new(&args[1]);
            let n: u32 = args[2].parse().expect("n");
            let pid = std::process::id();
            let marker = dir.join("inside");
            let mut log = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(dir.join("cs.log"))
                .expect("log");
            let mut opened = None;
            for i in 0..n {
                let g = locks.acquire(&session).expect("acquire");
                let store = opened.get_or_insert_with(|| store::<H>(locks.backend(), &g));
                match OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&marker)
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                        out(format!("OVERLAP {pid} {i}"));
                        std::process::exit(3);
                    }
                    Err(e) => panic!("marker: {e}"),
                }
                g.with_fence(|| {
                    log.write_all(format!("B {pid} {i}\n").as_bytes())
                        .expect("write");
                    std::thread::yield_now();
                    log.write_all(format!("E {pid} {i}\n").as_bytes())
                        .expect("write");
                })
                .expect("fenced");
                append::<H>(&g, store, &[json!({"pid": pid, "i": i})]).expect("fenced append");
                fs::remove_file(&marker).expect("leave the marker");
                g.release().expect("release");
            }
            out("DONE".into());
        }
        // Runs the metrics and event-log scenario: `observe <session> <log>`.
        "observe" => observe_role(h, &args[0], Path::new(&args[1])),
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------- §1.1 mutual exclusion

/// Eight processes contend for one session, 60 critical sections each: no
/// two are ever inside at once (an exclusive marker, begin/end pairs in a
/// shared log), and every fenced entry lands exactly once.
pub fn mutual_exclusion_across_processes<H: Harness>(h: &H) {
    let session = h.fresh_session();
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().to_str().expect("utf8");
    const KIDS: u32 = 8;
    const EACH: u32 = 60;
    let each = EACH.to_string();
    let kids: Vec<Kid> = (0..KIDS)
        .map(|_| Kid::spawn("excl", &[&session, dir, &each]))
        .collect();
    for k in &kids {
        let said = k.expect_any(&["DONE", "OVERLAP"]);
        assert_eq!(said, "DONE", "critical sections overlapped");
    }
    let text = fs::read_to_string(scratch.path().join("cs.log")).expect("log");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        (KIDS * EACH * 2) as usize,
        "every critical section logged"
    );
    for pair in lines.chunks(2) {
        let b = pair[0]
            .strip_prefix("B ")
            .unwrap_or_else(|| panic!("expected begin, got {:?}", pair[0]));
        let e = pair[1]
            .strip_prefix("E ")
            .unwrap_or_else(|| panic!("expected end, got {:?}", pair[1]));
        assert_eq!(b, e, "critical sections overlapped: {pair:?}");
    }
    let pids: Vec<u32> = kids.iter().map(Kid::pid).collect();
    for k in kids {
        assert!(k.finish().success());
    }
    let b = h.backend();
    let g = locks(h).acquire(name::<H>(&session)).expect("acquire");
    let entries = read::<H>(&store::<H>(&b, &g));
    assert_eq!(
        entries.len(),
        (KIDS * EACH) as usize,
        "every fenced entry landed"
    );
    for pid in pids {
        let mine: Vec<u64> = entries
            .iter()
            .filter(|e| e["pid"] == pid)
            .map(|e| e["i"].as_u64().expect("i"))
            .collect();
        assert_eq!(
            mine,
            (0..u64::from(EACH)).collect::<Vec<_>>(),
            "entries of {pid}"
        );
    }
}

// ---------------------------------------------------------------- §1.2 crash reclaim

/// A holder SIGKILLed within a 60 s lease is reclaimed by a waiting
/// contender within seconds, with a larger epoch.
pub fn sigkilled_holder_is_reclaimed_promptly<H: Harness>(h: &H) {
    let session = h.fresh_session();
    let kid = Kid::spawn("hold", &[&session, "60000"]);
    let held = epoch_of(&kid.expect("HELD", ANSWER), "HELD");
    let locks = locks(h);
    let tried = locks.try_acquire(name::<H>(&session));
    assert!(
        matches!(tried, Err(TryAcquireError::WouldBlock(_))),
        "a live holder was robbed: {tried:?}"
    );
    drop(tried);
    let waiter = {
        let (locks, session) = (locks.clone(), name::<H>(&session));
        std::thread::spawn(move || {
            let g = locks.acquire(&session);
            (Instant::now(), g.map(|g| g.epoch()))
        })
    };
    kid.signal(Signal::KILL);
    let killed = Instant::now();
    let (got, epoch) = waiter.join().expect("join");
    let epoch = epoch.expect("the waiter acquires after SIGKILL");
    assert!(epoch > held, "epoch {epoch} after {held}");
    let took = got.saturating_duration_since(killed);
    assert!(
        took < Duration::from_secs(5),
        "reclaim of a dead holder took {took:?} of a 60 s lease"
    );
    kid.kill_and_reap();
}

// ---------------------------------------------------------------- §1.3 lease-end reclaim

/// A holder stopped (SIGSTOP) with a 1.5 s lease is not robbed within it,
/// is reclaimed after it, and after SIGCONT its fenced write is refused and
/// lands nothing; its release leaves the new holder's lock.
pub fn stopped_holder_past_its_lease_is_reclaimed_and_fenced<H: Harness>(h: &H) {
    const LEASE: Duration = Duration::from_millis(1500);
    let session = h.fresh_session();
    let b = h.backend();
    let spawned = Instant::now();
    let mut kid = Kid::spawn("hold", &[&session, "1500"]);
    let held = epoch_of(&kid.expect("HELD", ANSWER), "HELD");
    kid.signal(Signal::STOP);
    let locks = locks(h);
    // Within its lease (it took the lock after `spawned`) a stopped holder
    // is alive: nobody may take its lock.
    let tried = locks.try_acquire(name::<H>(&session));
    if Instant::now() < spawned + LEASE {
        assert!(
            matches!(tried, Err(TryAcquireError::WouldBlock(_))),
            "a live holder within its lease was robbed: {tried:?}"
        );
    }
    drop(tried);
    let started = Instant::now();
    let g = locks
        .acquire(name::<H>(&session))
        .expect("the stopped holder is reclaimed after its lease");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "reclaim after a 1.5 s lease took {:?}",
        started.elapsed()
    );
    assert!(g.epoch() > held, "epoch {} after {held}", g.epoch());
    let mut store = store::<H>(&b, &g);
    append::<H>(&g, &mut store, &[json!({"by": "new holder"})]).expect("the new holder writes");

    kid.signal(Signal::CONT);
    kid.say(r#"append {"by":"stopped holder"}"#);
    let verdict = kid.expect("APPEND", ANSWER);
    assert!(
        verdict.starts_with("APPEND err revoked") || verdict.starts_with("APPEND err fenced"),
        "the stale holder's write must be refused: {verdict:?}"
    );
    kid.say("check");
    let verdict = kid.expect("CHECK", ANSWER);
    assert!(
        verdict.starts_with("CHECK err"),
        "stale holder must be fenced, got {verdict:?}"
    );
    assert!(verdict.contains(&format!("epoch {held}")), "{verdict}");
    assert_eq!(
        read::<H>(&store),
        [json!({"by": "new holder"})],
        "the refused write is absent"
    );
    // The stale holder's release must not touch our lock.
    kid.say("release");
    kid.expect("RELEASED", ANSWER);
    g.check().expect("still ours after the stale release");
    assert_eq!(
        published_token::<H>(&b, g.key()),
        g.payload().token,
        "the published lock is still ours"
    );
}

// ---------------------------------------------------------------- §6 epochs

/// 1000 acquisitions: in-process acquisitions and releases, holder
/// processes that crash (their locks reclaimed), locks removed from outside
/// while held and after a crash. Epochs strictly increase throughout.
pub fn epochs_strictly_increase_across_acquisitions_crashes_and_removed_locks<H: Harness>(h: &H) {
    let session = h.fresh_session();
    let locks = locks(h);
    let mut epochs = Vec::new();
    for i in 0..1000 {
        if i % 50 == 25 {
            // A holder process crashes with the lock held.
            let kid = Kid::spawn("crash", &[&session]);
            epochs.push(epoch_of(&kid.expect("HELD", ANSWER), "HELD"));
            kid.kill_and_reap();
            if i % 100 == 25 {
                // ... and an operator deletes its lock by hand.
                h.tamper_lock(&session, LockTamper::Remove);
            }
            continue;
        }
        let g = locks.acquire(name::<H>(&session)).expect("acquire");
        epochs.push(g.epoch());
        if i % 10 == 3 {
            // The lock vanishes while held (someone deleted it).
            h.tamper_lock(&session, LockTamper::Remove);
        }
        drop(g);
    }
    assert_eq!(epochs.len(), 1000);
    for w in epochs.windows(2) {
        assert!(
            w[0] < w[1],
            "epochs must strictly increase: {} then {}",
            w[0],
            w[1]
        );
    }
}

// ---------------------------------------------------------------- §1.5 remove-if-unchanged

/// `remove_if_unchanged` of a lock that changed after inspection removes
/// nothing, of a stale inspection removes nothing, and of the inspected
/// lock removes it; the removed lock's epoch (ahead of the session's) is
/// never issued again.
pub fn remove_if_unchanged_removes_only_the_inspected_lock_and_keeps_its_epoch<H: Harness>(h: &H) {
    let session = h.fresh_session();
    let b = h.backend();
    let key = key::<H>(&b, &session);
    // A dead holder's lock whose epoch is ahead of the session's.
    let high = 9_000_000_000_000_000u64;
    h.tamper_lock(&session, LockTamper::Plant { epoch: high });
    let seen = inspect::<H>(&b, &key).expect("present");
    // Replaced after inspection: nothing is removed.
    h.tamper_lock(&session, LockTamper::Plant { epoch: 1 });
    let replacement = inspect::<H>(&b, &key).expect("present");
    assert!(
        !block_on(b.remove_if_unchanged(&key, &seen, None)).expect("remove"),
        "a changed lock is kept"
    );
    assert_eq!(
        inspect::<H>(&b, &key).expect("kept").version,
        replacement.version,
        "the replacement is untouched"
    );
    // Unchanged: removed, and its epoch is never issued again.
    let seen = inspect::<H>(&b, &key).expect("present");
    h.tamper_lock(&session, LockTamper::Plant { epoch: high });
    let seen_high = inspect::<H>(&b, &key).expect("present");
    assert!(
        !block_on(b.remove_if_unchanged(&key, &seen, None)).expect("stale inspection"),
        "a stale inspection removes nothing"
    );
    assert!(block_on(b.remove_if_unchanged(&key, &seen_high, None)).expect("remove"));
    assert!(
        inspect::<H>(&b, &key).is_none(),
        "the inspected lock is gone"
    );
    let g = locks(h).acquire(name::<H>(&session)).expect("acquire");
    assert!(
        g.epoch() > high,
        "epoch {} must exceed the removed lock's {high}",
        g.epoch()
    );
}

// ---------------------------------------------------------------- §1.4 fenced writes

/// A guard whose lock another holder reclaimed (within its lease, through
/// the seam, as another process would) cannot land a store mutation: append,
/// rewrite, truncate and repair are refused, and the transcript keeps only
/// what was written under a current epoch.
pub fn fenced_store_write_of_a_reclaimed_guard_is_refused_and_lands_nothing<H: Harness>(h: &H) {
    let session = h.fresh_session();
    let b = h.backend();
    let key = key::<H>(&b, &session);
    let a = locks(h).acquire(name::<H>(&session)).expect("a");
    let mut store = store::<H>(&b, &a);
    append::<H>(&a, &mut store, &[json!({"n": 1}), json!({"n": 2})])
        .expect("a writes while it holds");
    let seen = inspect::<H>(&b, &key).expect("a's lock");
    let Outcome::Acquired(lease) = block_on(b.reclaim(&key, &seen, &req(), None)).expect("reclaim")
    else {
        panic!("reclaim of an unchanged lock must win");
    };
    let new_epoch = <H::Backend as LockBackend>::info(&lease).epoch;
    assert!(
        new_epoch > a.epoch(),
        "the reclaim issued epoch {new_epoch} after {}",
        a.epoch()
    );
    let err = append::<H>(&a, &mut store, &[json!({"n": "stale"})]).expect_err("stale append");
    assert!(is_refusal(&err), "{err}");
    let err = block_on(a.store_rewrite(&mut store, &raw(&[json!({"n": "stale"})])))
        .expect_err("stale rewrite");
    assert!(is_refusal(&err), "{err}");
    let err = block_on(a.store_truncate(&mut store, 0)).expect_err("stale truncate");
    assert!(is_refusal(&err), "{err}");
    let err = block_on(a.store_repair(&mut store)).expect_err("stale repair");
    assert!(is_refusal(&err), "{err}");
    let mut ran = false;
    let err = a.with_fence(|| ran = true).expect_err("stale fence");
    assert!(is_refusal(&err), "{err}");
    assert!(!ran, "the fenced closure must not run");
    assert_eq!(
        read::<H>(&store),
        [json!({"n": 1}), json!({"n": 2})],
        "nothing stale landed"
    );
    // A fresh handle sees the same.
    let fresh = block_on(b.open_store(&key)).expect("open store");
    assert_eq!(read::<H>(&fresh), [json!({"n": 1}), json!({"n": 2})]);
    drop(a);
    assert!(block_on(b.release(&lease, None)).expect("release the reclaimer's lease"));
}

/// The release of a guard whose lock was reclaimed reports the loss and
/// leaves the reclaimer's lock in place.
pub fn stale_release_never_removes_the_replacement<H: Harness>(h: &H) {
    let session = h.fresh_session();
    let b = h.backend();
    let key = key::<H>(&b, &session);
    let a = locks(h).acquire(name::<H>(&session)).expect("a");
    // Someone decides A is stale and reclaims it (through the backend, as
    // another process would).
    let seen = inspect::<H>(&b, &key).expect("lock present");
    let Outcome::Acquired(lease) = block_on(b.reclaim(&key, &seen, &req(), None)).expect("reclaim")
    else {
        panic!("reclaim of an unchanged lock must win");
    };
    let replacement = inspect::<H>(&b, &key).expect("the reclaimer's lock");
    assert!(matches!(a.check(), Err(Error::Fenced { .. })));
    // The stale release touches nothing, and says the lock was no longer ours.
    assert!(matches!(
        a.release(),
        Err(Error::Revoked {
            cause: LossCause::Replaced,
            ..
        })
    ));
    assert_eq!(
        inspect::<H>(&b, &key)
            .expect("replacement still there")
            .version,
        replacement.version
    );
    assert!(block_on(b.release(&lease, None)).expect("release the reclaimer's lease"));
    assert!(inspect::<H>(&b, &key).is_none(), "released");
}

/// A lock removed by a program that ignores sessionlock (issue 9 item 2:
/// OpenClaw deleting the lock of a live holder it does not recognise) revokes
/// its holder: the fence refuses, the store refuses and lands nothing, and
/// the release reports the loss and recreates nothing.
pub fn lock_removed_from_outside_revokes_the_holder_and_refuses_its_writes<H: Harness>(h: &H) {
    let session = h.fresh_session();
    let b = h.backend();
    let key = key::<H>(&b, &session);
    let g = locks(h).acquire(name::<H>(&session)).expect("acquire");
    let mut store = store::<H>(&b, &g);
    append::<H>(&g, &mut store, &[json!({"n": 1})]).expect("first append while the lock is ours");
    h.tamper_lock(&session, LockTamper::Remove);

    let mut ran = false;
    let err = g.with_fence(|| ran = true).expect_err("lock is gone");
    assert!(!ran, "the fenced closure must not run");
    assert!(
        matches!(
            err,
            Error::Revoked {
                cause: LossCause::Removed,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("removed by someone else"), "{err}");
    assert!(g.is_revoked(), "losing the lock revokes the guard");
    let err = append::<H>(&g, &mut store, &[json!({"n": 2})]).expect_err("append after removal");
    assert!(matches!(err, Error::Revoked { .. }), "{err}");
    assert_eq!(
        read::<H>(&store),
        [json!({"n": 1})],
        "the refused append is absent"
    );
    assert!(matches!(
        g.release(),
        Err(Error::Revoked {
            cause: LossCause::Removed,
            ..
        })
    ));
    assert!(
        inspect::<H>(&b, &key).is_none(),
        "release recreated nothing"
    );
}

/// Eight threads reclaim one inspected dead lock at once: exactly one gets
/// `Acquired` (and the lock is its), the others `Changed` or `Busy`; a
/// later `remove_if_unchanged` of the stale inspection removes nothing.
pub fn eight_racing_reclaimers_exactly_one_wins<H: Harness>(h: &H) {
    let session = h.fresh_session();
    h.tamper_lock(&session, LockTamper::Plant { epoch: 7 });
    let b = Arc::new(h.backend());
    let key = key::<H>(&b, &session);
    let seen = Arc::new(inspect::<H>(&b, &key).expect("present"));
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (b, key, seen, barrier) = (b.clone(), key.clone(), seen.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                block_on(b.reclaim(&key, &seen, &req(), None)).expect("reclaim")
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in threads {
        match t.join().expect("join") {
            Outcome::Acquired(l) => winners.push(l),
            Outcome::Changed | Outcome::Busy(_) | Outcome::Queued => {}
        }
    }
    assert_eq!(winners.len(), 1, "exactly one reclaimer wins");
    let winner = &winners[0];
    let info = <H::Backend as LockBackend>::info(winner);
    let now = inspect::<H>(&b, &key).expect("the winner's lock");
    assert_eq!(
        now.payload.as_ref().expect("payload").token,
        info.payload.token,
        "the lock is the winner's"
    );
    assert!(
        !block_on(b.remove_if_unchanged(&key, &seen, None)).expect("remove"),
        "a stale inspection removes nothing"
    );
    assert_eq!(inspect::<H>(&b, &key).expect("kept").version, now.version);
    block_on(b.fenced(winner, || ())).expect("the winner still holds");
    assert!(block_on(b.release(winner, None)).expect("release"));
}

/// A reclaim whose inspected lock was replaced meanwhile (by a program
/// that ignores sessionlock) returns `Changed` and leaves the replacement.
pub fn reclaim_of_a_changed_lock_removes_nothing<H: Harness>(h: &H) {
    let session = h.fresh_session();
    h.tamper_lock(&session, LockTamper::Plant { epoch: 3 });
    let b = h.backend();
    let key = key::<H>(&b, &session);
    let seen = inspect::<H>(&b, &key).expect("present");
    // The lock is replaced between inspection and reclaim.
    h.tamper_lock(&session, LockTamper::Plant { epoch: 4 });
    let before = inspect::<H>(&b, &key).expect("present");
    assert!(matches!(
        block_on(b.reclaim(&key, &seen, &req(), None)).expect("reclaim"),
        Outcome::Changed
    ));
    let after = inspect::<H>(&b, &key).expect("still there");
    assert_eq!(
        after.version, before.version,
        "the replacement is untouched"
    );
    assert_eq!(
        after.payload.expect("payload").epoch,
        Some(4),
        "the replacement is untouched"
    );
}

/// Eight processes try once for a session whose dead holder's lock is
/// there: exactly one wins, the others are blocked by the winner.
pub fn eight_reclaiming_processes_exactly_one_wins<H: Harness>(h: &H) {
    let session = h.fresh_session();
    h.tamper_lock(&session, LockTamper::Plant { epoch: 5 });
    let kids: Vec<Kid> = (0..8)
        .map(|_| Kid::spawn("try-hold", &[&session]))
        .collect();
    let answers: Vec<String> = kids
        .iter()
        .map(|k| k.expect_any(&["WON", "BLOCKED", "FAILED"]))
        .collect();
    assert_eq!(answers.len(), 8, "{answers:?}");
    assert_eq!(
        answers.iter().filter(|a| a.starts_with("WON")).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|a| a.starts_with("BLOCKED")).count(),
        7,
        "{answers:?}"
    );
}

// ---------------------------------------------------------------- §8.4 takeover kinds

/// Accepts the entries marked `"benign": true`.
struct AcceptMarked;

impl ChangeClassifier for AcceptMarked {
    fn is_benign(&self, entry: &Value) -> bool {
        entry["benign"] == true
    }
}

/// A transcript of three entries written under a guard, its store and its
/// size in bytes, and a snapshot taken for the guard's epoch.
struct Snapped<H: Harness> {
    session: String,
    guard: Guard<H::Backend>,
    store: <H::Backend as StoreBackend>::Store,
    snapshot: <<H::Backend as StoreBackend>::Store as TranscriptStore<H::Backend>>::Snapshot,
    size: u64,
    entries: Vec<Value>,
}

fn snapped<H: Harness>(h: &H) -> Snapped<H> {
    let session = h.fresh_session();
    let b = h.backend();
    let guard = locks(h).acquire(name::<H>(&session)).expect("acquire");
    let mut store = store::<H>(&b, &guard);
    let entries = vec![
        json!({"type": "message", "n": 1, "text": "first entry of the transcript"}),
        json!({"type": "message", "n": 2}),
        json!({"type": "message", "n": 3}),
    ];
    let batch = raw(&entries);
    let appended =
        block_on(guard.store_append(&mut store, &batch, Durability::None)).expect("append");
    let size = batch.as_bytes().len() as u64;
    assert_eq!(
        (appended.offset, appended.len),
        (0, size),
        "where the append landed"
    );
    let snapshot = block_on(store.snapshot(guard.epoch())).expect("snapshot");
    Snapped {
        session,
        guard,
        store,
        snapshot,
        size,
        entries,
    }
}

impl<H: Harness> Snapped<H> {
    fn check(&self, classifier: &dyn ChangeClassifier) -> Change {
        block_on(self.store.check(&self.snapshot, classifier)).expect("check")
    }

    fn resnapshot(&mut self) {
        self.snapshot = block_on(self.store.snapshot(self.guard.epoch())).expect("snapshot");
    }

    /// A change by a foreign hand is judged `want`, whatever the classifier.
    fn after(h: &H, how: TranscriptTamper, want: Change) {
        let s = snapped(h);
        h.tamper_transcript(&s.session, how.clone());
        assert_eq!(s.check(&AcceptMarked), want, "{how:?}");
        assert_eq!(s.check(&AcceptNothing), want, "{how:?}");
    }
}

/// No change: `Unchanged`, also when checked again.
pub fn unchanged_transcript_is_unchanged<H: Harness>(h: &H) {
    let s = snapped(h);
    assert_eq!(s.check(&AcceptNothing), Change::Unchanged);
    assert_eq!(s.check(&AcceptMarked), Change::Unchanged);
    assert_eq!(s.check(&AcceptNothing), Change::Unchanged);
}

/// The holder's own fenced append, rewrite and truncation are what a new
/// snapshot starts from: `Unchanged` against it (an attempt re-snapshots
/// after its writes), while against the old snapshot the same writes are
/// changes (a check that sees them is not blind).
pub fn own_fenced_writes_are_unchanged_after_a_new_snapshot<H: Harness>(h: &H) {
    let mut s = snapped(h);
    let more = json!({"type": "message", "n": 4});
    append::<H>(&s.guard, &mut s.store, std::slice::from_ref(&more)).expect("own append");
    assert_eq!(
        s.check(&AcceptNothing),
        Change::Takeover(Takeover::ForeignEntry { offset: s.size }),
        "the old snapshot sees the append"
    );
    s.resnapshot();
    assert_eq!(
        s.check(&AcceptNothing),
        Change::Unchanged,
        "after own append"
    );
    let mut want = s.entries.clone();
    want.push(more.clone());
    assert_eq!(read::<H>(&s.store), want, "after own append");

    let rewritten = vec![json!({"type": "message", "n": "rewritten"})];
    block_on(s.guard.store_rewrite(&mut s.store, &raw(&rewritten))).expect("own rewrite");
    s.resnapshot();
    assert_eq!(
        s.check(&AcceptNothing),
        Change::Unchanged,
        "after own rewrite"
    );
    assert_eq!(read::<H>(&s.store), rewritten, "after own rewrite");

    append::<H>(&s.guard, &mut s.store, &[more.clone(), more.clone()]).expect("own append");
    s.resnapshot();
    assert_eq!(
        s.check(&AcceptNothing),
        Change::Unchanged,
        "after own append"
    );
    assert_eq!(
        read::<H>(&s.store),
        [rewritten.clone(), vec![more.clone(), more]].concat(),
        "own appends after own rewrite land in the transcript"
    );

    block_on(s.guard.store_truncate(&mut s.store, 1)).expect("own truncate");
    s.resnapshot();
    assert_eq!(
        s.check(&AcceptNothing),
        Change::Unchanged,
        "after own truncate"
    );
    assert_eq!(read::<H>(&s.store), rewritten, "after own truncate");
}

/// A byte-identical rewrite by someone else is benign, with nothing
/// appended.
pub fn byte_identical_rewrite_is_benign<H: Harness>(h: &H) {
    let s = snapped(h);
    h.tamper_transcript(&s.session, TranscriptTamper::RewriteIdentical);
    let want = Change::Benign {
        entries: Vec::new(),
        range: s.size..s.size,
    };
    assert_eq!(s.check(&AcceptNothing), want);
    assert_eq!(read::<H>(&s.store), s.entries, "content unchanged");
}

/// A pure append of entries the classifier accepts is benign and returns
/// them with their byte range; the default classifier refuses the same.
pub fn benign_append_is_accepted_with_its_entries_and_range<H: Harness>(h: &H) {
    let s = snapped(h);
    let foreign = [
        json!({"type": "custom", "benign": true, "n": "a"}),
        json!({"type": "custom", "benign": true, "n": "b"}),
    ];
    let bytes: Vec<u8> = foreign.iter().flat_map(line).collect();
    let added = bytes.len() as u64;
    h.tamper_transcript(&s.session, TranscriptTamper::Append(bytes));
    assert_eq!(
        s.check(&AcceptMarked),
        Change::Benign {
            entries: foreign.to_vec(),
            range: s.size..s.size + added,
        }
    );
    assert_eq!(
        s.check(&AcceptNothing),
        Change::Takeover(Takeover::ForeignEntry { offset: s.size }),
        "the default classifier accepts nothing"
    );
}

/// Dropping the last entry is `Truncated`.
pub fn truncation_is_a_takeover<H: Harness>(h: &H) {
    Snapped::<H>::after(
        h,
        TranscriptTamper::DropLast,
        Change::Takeover(Takeover::Truncated),
    );
}

/// A same-size edit of an earlier entry is `Edited`.
pub fn edit_is_a_takeover<H: Harness>(h: &H) {
    Snapped::<H>::after(
        h,
        TranscriptTamper::EditFirst,
        Change::Takeover(Takeover::Edited),
    );
}

/// A different transcript in its place is `Replaced`.
pub fn replacement_is_a_takeover<H: Harness>(h: &H) {
    Snapped::<H>::after(
        h,
        TranscriptTamper::Replace,
        Change::Takeover(Takeover::Replaced),
    );
}

/// A deleted transcript is `Deleted`.
pub fn deletion_is_a_takeover<H: Harness>(h: &H) {
    Snapped::<H>::after(
        h,
        TranscriptTamper::Delete,
        Change::Takeover(Takeover::Deleted),
    );
}

/// An appended entry the classifier does not accept is `ForeignEntry` at
/// its line, also after accepted ones.
pub fn foreign_entry_is_a_takeover<H: Harness>(h: &H) {
    let s = snapped(h);
    let ok = line(&json!({"type": "custom", "benign": true}));
    let bad = line(&json!({"type": "message", "role": "assistant"}));
    let at = s.size + ok.len() as u64;
    h.tamper_transcript(&s.session, TranscriptTamper::Append([ok, bad].concat()));
    let want = Change::Takeover(Takeover::ForeignEntry { offset: at });
    assert_eq!(s.check(&AcceptMarked), want);
    assert_eq!(
        s.check(&AcceptNothing),
        Change::Takeover(Takeover::ForeignEntry { offset: s.size })
    );
}

/// An appended line that is not complete JSON, or has no line end, is
/// `IncompleteAppend` at its line, even after accepted entries.
pub fn incomplete_append_is_a_takeover<H: Harness>(h: &H) {
    let s = snapped(h);
    let ok = line(&json!({"type": "custom", "benign": true}));
    let at = s.size + ok.len() as u64;
    let torn = br#"{"type": "custom", "benign": tr"#.to_vec();
    h.tamper_transcript(&s.session, TranscriptTamper::Append([ok, torn].concat()));
    assert_eq!(
        s.check(&AcceptMarked),
        Change::Takeover(Takeover::IncompleteAppend { offset: at }),
        "a line without its end"
    );
    let s = snapped(h);
    h.tamper_transcript(
        &s.session,
        TranscriptTamper::Append(b"{\"benign\": true,}\n".to_vec()),
    );
    assert_eq!(
        s.check(&AcceptMarked),
        Change::Takeover(Takeover::IncompleteAppend { offset: s.size }),
        "a complete line that is not JSON"
    );
}

// ---------------------------------------------------------------- §20 metrics and the event log

/// One metric of a snapshot: name, labels, and its value since the
/// previous snapshot (a counter's increments, a histogram's number of
/// samples) or now (a gauge).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Seen {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// What the metrics recorder holds, as [`Seen`] rows (counters and
/// histograms are drained by each snapshot).
fn snapshot(s: &metrics_util::debugging::Snapshotter) -> Vec<Seen> {
    use metrics_util::debugging::DebugValue;
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, _, _, v)| Seen {
            name: ck.key().name().to_owned(),
            labels: ck
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect(),
            value: match v {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(samples) => samples.len() as f64,
            },
        })
        .collect()
}

/// The child of [`metrics_and_events_follow_a_scripted_scenario`]: records
/// the library's metrics and events while it acquires, contends, times
/// out, reclaims a SIGKILLed holder's lock and has a late write refused,
/// printing `STEP <name> <metrics as JSON>` after each step.
fn observe_role<H: Harness>(h: &H, session: &str, log: &Path) {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snaps = recorder.snapshotter();
    recorder.install().expect("install the recorder");
    sessionlock::observe::EventLog::install(log).expect("install the event log");
    let out = |step: &str, seen: &[Seen]| {
        let json = serde_json::to_string(seen).expect("json");
        let mut o = std::io::stdout().lock();
        writeln!(o, "STEP {step} {json}").expect("stdout");
        o.flush().expect("flush");
    };
    let locks = locks(h);
    let s = name::<H>(session);
    let lane = |l: &str| opts().lane(l);

    // An uncontended hold.
    let g = locks.acquire_with(&s, &lane("a")).expect("acquire");
    std::thread::sleep(Duration::from_millis(20));
    g.release().expect("release");
    out("acquire", &snapshot(&snaps));

    // Lane b waits (the gauge counts it) and gets the lock handed over.
    let g = locks.acquire_with(&s, &lane("a")).expect("acquire");
    let waiter = {
        let (locks, s) = (locks.clone(), s.clone());
        std::thread::spawn(move || {
            let g = locks
                .acquire_with(&s, &opts().lane("b"))
                .expect("acquire b");
            g.release().expect("release b");
        })
    };
    let deadline = Instant::now() + BUDGET;
    let waiting = loop {
        let seen = snapshot(&snaps);
        let w = seen
            .iter()
            .find(|m| m.name == "sessionlock_waiters")
            .map_or(0.0, |m| m.value);
        if w >= 1.0 || Instant::now() > deadline {
            break w;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    out(
        "waiting",
        &[Seen {
            name: "sessionlock_waiters".into(),
            labels: Default::default(),
            value: waiting,
        }],
    );
    g.release().expect("release a");
    waiter.join().expect("join b");
    out("handoff", &snapshot(&snaps));

    // Lane c gives up behind a holder.
    let g = locks.acquire_with(&s, &lane("a")).expect("acquire");
    let gave_up = locks.acquire_with(
        &s,
        &opts().timeout(Some(Duration::from_millis(100))).lane("c"),
    );
    assert!(matches!(gave_up, Err(Error::Timeout { .. })), "{gave_up:?}");
    g.release().expect("release");
    out("timeout", &snapshot(&snaps));

    // A SIGKILLed holder's lock is reclaimed.
    let kid = Kid::spawn("crash", &[session]);
    kid.expect("HELD", ANSWER);
    out(
        "holder",
        &[Seen {
            name: "pid".into(),
            labels: Default::default(),
            value: f64::from(kid.pid()),
        }],
    );
    kid.signal(Signal::KILL);
    kid.kill_and_reap();
    let g = locks.acquire_with(&s, &lane("r")).expect("reclaim");
    g.release().expect("release");
    out("reclaim", &snapshot(&snaps));

    // Two entries land; the watchdog revokes the hold past its lease; the
    // late write is refused.
    let g = locks
        .acquire_with(&s, &lane("f").max_hold(Duration::from_millis(300)))
        .expect("acquire");
    let mut st = store::<H>(locks.backend(), &g);
    block_on(g.store_append(
        &mut st,
        &raw(&[json!({"n": 1}), json!({"n": 2})]),
        Durability::None,
    ))
    .expect("append");
    block_on(g.revoked());
    let late = append::<H>(&g, &mut st, &[json!({"n": 3})]);
    assert!(late.as_ref().is_err_and(is_refusal), "{late:?}");
    drop(g);
    out("refused", &snapshot(&snaps));

    // A reentrant join shares the hold: no acquisition of its own.
    let g = locks.acquire_with(&s, &lane("j")).expect("acquire");
    let joined = locks
        .acquire_with(&s, &lane("j").reentrant(true))
        .expect("join");
    assert_eq!(joined.epoch(), g.epoch());
    drop(joined);
    // The lock removed from outside; the release finds it gone.
    h.tamper_lock(session, LockTamper::Remove);
    let lost = g.release();
    assert!(
        matches!(lost, Err(Error::Revoked { .. })),
        "the release reports the loss: {lost:?}"
    );
    out("lost", &snapshot(&snaps));

    // An async acquisition dropped while it waits is no longer counted.
    let g = locks.acquire_with(&s, &lane("a")).expect("acquire");
    let dropped = block_on(async {
        tokio::time::timeout(
            Duration::from_millis(100),
            locks.acquire_async_with(&s, &opts().lane("x")),
        )
        .await
    });
    assert!(
        dropped.is_err(),
        "the acquisition was dropped while it waited"
    );
    g.release().expect("release");
    out("cancelled", &snapshot(&snaps));
    sessionlock::observe::EventLog::flush();
    out("done", &[]);
}

/// The library's metrics (design §20.1) and event log (§20.2) follow a
/// scripted scenario step by step: an uncontended hold; a waiter counted by
/// the gauge and handed the lock; a timeout; a SIGKILLed holder reclaimed;
/// a watchdog revocation and a refused late write. Run in a child process
/// of its own, so that its process-wide recorder and log see nothing of the
/// suite's other tests.
pub fn metrics_and_events_follow_a_scripted_scenario<H: Harness>(h: &H) {
    let session = h.fresh_session();
    let scratch = tempfile::tempdir().expect("tempdir");
    let log = scratch.path().join("events.jsonl");
    let kid = Kid::spawn("observe", &[&session, log.to_str().expect("utf8")]);
    let mut steps = std::collections::BTreeMap::new();
    loop {
        let line = kid.expect("STEP", ANSWER);
        let mut parts = line.splitn(3, ' ');
        let (_, step, json) = (parts.next(), parts.next().expect("step"), parts.next());
        if step == "done" {
            break;
        }
        let seen: Vec<Seen> = serde_json::from_str(json.expect("json")).expect("snapshot json");
        steps.insert(step.to_owned(), seen);
    }
    let child = kid.pid();
    assert!(kid.finish().success(), "the scenario's child failed");
    // The sum of a metric's values in a step, over the rows whose labels
    // include every `(label, value)` of `with`.
    let sum = |step: &str, name: &str, with: &[(&str, &str)]| -> f64 {
        steps[step]
            .iter()
            .filter(|m| m.name == name)
            .filter(|m| {
                with.iter()
                    .all(|(k, v)| m.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|m| m.value)
            .sum()
    };
    let b = H::Backend::NAME;
    let wait = "sessionlock_acquire_wait_seconds";
    let hold = "sessionlock_hold_seconds";

    assert_eq!(
        sum(
            "acquire",
            wait,
            &[("backend", b), ("lane", "a"), ("outcome", "acquired")]
        ),
        1.0
    );
    assert_eq!(
        sum("acquire", hold, &[("lane", "a"), ("end", "released")]),
        1.0
    );
    assert_eq!(sum("acquire", "sessionlock_handoffs_total", &[]), 0.0);

    assert_eq!(
        sum("waiting", "sessionlock_waiters", &[]),
        1.0,
        "the waiting lane is counted"
    );
    assert_eq!(
        sum("handoff", hold, &[("lane", "a"), ("end", "handed_off")]),
        1.0
    );
    assert_eq!(
        sum(
            "handoff",
            "sessionlock_handoffs_total",
            &[("backend", b), ("lane", "a")]
        ),
        1.0
    );
    assert_eq!(
        sum("handoff", wait, &[("lane", "b"), ("outcome", "acquired")]),
        1.0
    );
    assert_eq!(
        sum("handoff", hold, &[("lane", "b"), ("end", "released")]),
        1.0
    );

    assert_eq!(
        sum("timeout", wait, &[("lane", "c"), ("outcome", "timeout")]),
        1.0
    );
    assert_eq!(
        sum("timeout", wait, &[("lane", "c"), ("outcome", "acquired")]),
        0.0
    );

    assert_eq!(
        sum("reclaim", "sessionlock_reclaims_total", &[("backend", b)]),
        1.0,
        "one reclaim"
    );
    assert_eq!(
        sum("reclaim", wait, &[("lane", "r"), ("outcome", "acquired")]),
        1.0
    );

    assert_eq!(
        sum(
            "refused",
            "sessionlock_transcript_appends_total",
            &[("backend", b)]
        ),
        1.0
    );
    assert_eq!(
        sum("refused", "sessionlock_transcript_entries_total", &[]),
        2.0
    );
    assert!(sum("refused", "sessionlock_transcript_bytes_total", &[]) >= 2.0 * 8.0);
    assert_eq!(
        sum(
            "refused",
            "sessionlock_revocations_total",
            &[("lane", "f"), ("cause", "overdue")]
        ),
        1.0
    );
    assert_eq!(
        sum("refused", hold, &[("lane", "f"), ("end", "revoked")]),
        1.0
    );
    assert_eq!(
        sum(
            "refused",
            "sessionlock_fenced_writes_refused_total",
            &[("backend", b), ("lane", "f"), ("error", "revoked")]
        ),
        1.0
    );
    // Nothing was refused, revoked or reclaimed before it was due.
    for step in ["acquire", "handoff", "timeout", "reclaim"] {
        assert_eq!(
            sum(step, "sessionlock_fenced_writes_refused_total", &[]),
            0.0,
            "{step}"
        );
        assert_eq!(
            sum(step, "sessionlock_revocations_total", &[]),
            0.0,
            "{step}"
        );
    }
    assert_eq!(
        sum("refused", "sessionlock_waiters", &[]),
        0.0,
        "nobody waits at the end"
    );

    assert_eq!(
        sum("lost", wait, &[("lane", "j"), ("outcome", "acquired")]),
        1.0,
        "a join is no acquisition"
    );
    assert_eq!(
        sum(
            "lost",
            "sessionlock_revocations_total",
            &[("lane", "j"), ("cause", "removed")]
        ),
        1.0
    );
    assert_eq!(sum("lost", hold, &[("lane", "j"), ("end", "revoked")]), 1.0);
    assert_eq!(
        sum("lost", hold, &[("lane", "j"), ("end", "released")]),
        0.0
    );

    assert_eq!(sum("cancelled", wait, &[("lane", "x")]), 0.0, "no outcome");
    assert_eq!(
        sum("cancelled", "sessionlock_waiters", &[]),
        0.0,
        "the dropped waiter is gone"
    );

    // The event log tells the same story, line by line.
    let text = fs::read_to_string(&log).expect("event log");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect();
    for e in &events {
        assert_eq!(e["v"], 1, "{e}");
        assert!(
            e["ts_us"]
                .as_u64()
                .is_some_and(|t| t > 1_600_000_000_000_000),
            "{e}"
        );
        assert_eq!(e["pid"], child, "{e}");
        assert!(e["host"].is_string(), "{e}");
        assert_eq!(e["backend"], b, "{e}");
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    let count = |k: &str| kinds.iter().filter(|&&x| x == k).count();
    assert_eq!(count("acquired"), 8, "{kinds:?}");
    assert_eq!(count("released"), 6, "{kinds:?}");
    assert_eq!(count("gave-up"), 1, "{kinds:?}");
    assert_eq!(count("cancelled"), 1, "{kinds:?}");
    assert_eq!(count("reclaimed"), 1, "{kinds:?}");
    assert_eq!(count("revoked"), 2, "{kinds:?}");
    assert_eq!(count("refused"), 1, "{kinds:?}");
    assert_eq!(count("appended"), 1, "{kinds:?}");
    let holder: u32 = steps["holder"][0].value as u32;
    let reclaimed = events
        .iter()
        .find(|e| e["kind"] == "reclaimed")
        .expect("reclaimed");
    assert_eq!(
        reclaimed["holder_pid"], holder,
        "the reclaim names the SIGKILLed holder"
    );
    assert!(
        reclaimed["reasons"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{reclaimed}"
    );
    let handed: Vec<&Value> = events.iter().filter(|e| e["handed_off"] == true).collect();
    assert_eq!(handed.len(), 1, "one hand-off");
    assert_eq!(handed[0]["lane"], "a");
    let revoked = events
        .iter()
        .find(|e| e["kind"] == "revoked")
        .expect("revoked");
    assert_eq!(revoked["cause"], "overdue");
    let lost = events
        .iter()
        .filter(|e| e["kind"] == "revoked")
        .nth(1)
        .expect("lost");
    assert_eq!(
        (&lost["cause"], &lost["lane"]),
        (&json!("removed"), &json!("j"))
    );
    let cancelled = events
        .iter()
        .find(|e| e["kind"] == "cancelled")
        .expect("cancelled");
    assert_eq!(cancelled["lane"], "x");
    let refused = events
        .iter()
        .find(|e| e["kind"] == "refused")
        .expect("refused");
    assert_eq!(
        refused["epoch"], revoked["epoch"],
        "the refused write is the revoked hold's"
    );
    assert_eq!(refused["lane"], "f");
    let appended = events
        .iter()
        .find(|e| e["kind"] == "appended")
        .expect("appended");
    assert_eq!(appended["entries"], 2);
    // Every hold that ended was one that began: epochs of acquisitions
    // strictly increase, and each release names an acquired epoch.
    let acquired: Vec<u64> = events
        .iter()
        .filter(|e| e["kind"] == "acquired")
        .map(|e| e["epoch"].as_u64().expect("epoch"))
        .collect();
    assert!(
        acquired.windows(2).all(|w| w[0] < w[1]),
        "epochs {acquired:?}"
    );
    for e in events
        .iter()
        .filter(|e| e["kind"] == "released" || e["kind"] == "revoked")
    {
        let epoch = e["epoch"].as_u64().expect("epoch");
        assert!(
            acquired.contains(&epoch),
            "{e} ends a hold that never began"
        );
    }
    // A hold's end is stamped before the lock is let go: the next hold
    // begins after it (one process, one clock).
    let mut ends: Vec<(u64, u64)> = Vec::new();
    for e in &events {
        let ts = e["ts_us"].as_u64().expect("ts");
        match e["kind"].as_str() {
            Some("acquired") => {
                if let Some(&(epoch, end)) = ends.last() {
                    assert!(
                        ts >= end,
                        "hold {} began at {ts} before hold {epoch} ended at {end}",
                        e["epoch"]
                    );
                }
            }
            Some("released" | "revoked") => ends.push((e["epoch"].as_u64().expect("epoch"), ts)),
            _ => {}
        }
    }
}
