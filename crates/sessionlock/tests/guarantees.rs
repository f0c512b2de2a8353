//! Guarantees that are implemented and must stay so, each tested so that
//! breaking it on purpose fails a test: re-entrant fenced calls answer at
//! once (never hang), a panic in a holder releases the lock (spec §1.2), a
//! holder of another user counts as alive (spec §3), and the durability the
//! caller picks reaches the disk (spec §7).
//!
//! Child processes are this test binary re-executed in child mode (see
//! `common`); the liveness test runs one as the unprivileged user `nobody`.

use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sessionlock::fs::{Fs, RealFs};
use sessionlock::transcript::{Durability, Reader, Transcript};
use sessionlock::{Error, Guard, LockOptions, SessionLock, Settings, TryAcquireError};

mod common;

use common::{as_nobody, role_args, Kid, ROLE_VAR};

// ---------------------------------------------------------------- harness

fn opts() -> LockOptions {
    LockOptions::default()
        .timeout(Some(Duration::from_secs(10)))
        .max_hold(Duration::from_secs(120))
}

fn acquire(session: &Path) -> Guard {
    SessionLock::new()
        .acquire_with(session, &opts())
        .expect("acquire")
}

fn entries(session: &Path) -> Vec<Value> {
    Reader::open(session)
        .expect("open reader")
        .map(|e| e.expect("entry").value)
        .collect()
}

/// Runs `f` on a thread of its own and returns its result; fails the test
/// if it has not returned within `limit`, so a self-deadlock fails instead
/// of hanging the test run (the stuck thread is left behind; the test
/// binary exits regardless).
fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} hung for {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

const HANG: Duration = Duration::from_secs(10);

/// A child process acquires `session` with a 5 s budget; returns how long
/// it took. The lock must be free (or reclaimable) at once.
fn next_process_acquires_at_once(session: &Path) -> Duration {
    let kid = Kid::spawn("acquire", &[&session.display().to_string(), "5000"]);
    let line = kid.expect_any(&["ACQUIRED", "FAILED"]);
    let ms: u64 = match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["ACQUIRED", _epoch, ms] => ms.parse().expect("elapsed ms"),
        _ => panic!("the next process could not take the lock: {line}"),
    };
    assert!(kid.finish().success());
    let took = Duration::from_millis(ms);
    assert!(
        took < Duration::from_secs(2),
        "the next process waited {took:?} for a lock that was released"
    );
    took
}

#[test]
fn child_entry() {
    let Some((role, args)) = role_args() else {
        return;
    };
    let out = |s: String| {
        let mut o = std::io::stdout().lock();
        writeln!(o, "{s}").expect("stdout");
        o.flush().expect("flush");
    };
    match role.as_str() {
        // Acquire once within a budget, say how long it took, release.
        "acquire" => {
            let budget = Duration::from_millis(args[1].parse().expect("budget"));
            let started = Instant::now();
            match SessionLock::new()
                .acquire_with(&args[0], &LockOptions::default().timeout(Some(budget)))
            {
                Ok(g) => {
                    out(format!(
                        "ACQUIRED {} {}",
                        g.epoch(),
                        started.elapsed().as_millis()
                    ));
                    g.release().expect("release");
                }
                Err(e) => out(format!("FAILED {e}")),
            }
        }
        // Who this process is and what `kill(holder, 0)` answers it, how it
        // sees the holder of a lock, then whether it can take it (it must
        // not, from a live holder within its lease).
        "probe" => {
            let session = Path::new(&args[0]);
            let holder: i32 = args[1].parse().expect("holder pid");
            let holder = rustix::process::Pid::from_raw(holder).expect("holder pid is positive");
            let kill0 = match rustix::process::test_kill_process(holder) {
                Ok(()) => "ok".to_owned(),
                Err(e) if e == rustix::io::Errno::PERM => "EPERM".to_owned(),
                Err(e) => format!("errno {}", e.raw_os_error()),
            };
            out(format!(
                "WHO euid={} kill0={kill0}",
                rustix::process::geteuid().as_raw()
            ));
            match sessionlock::status::inspect_session(session, &Settings::default()) {
                Ok(Some(st)) => out(format!(
                    "ALIVE {} {:?} reasons={}",
                    st.holder.alive, st.liveness, st.holder.reasons
                )),
                Ok(None) => out("ALIVE none".into()),
                Err(e) => out(format!("ALIVE error {e}")),
            }
            match SessionLock::new().try_acquire(session) {
                Ok(g) => {
                    out(format!("TRY won {}", g.epoch()));
                    g.release().expect("release");
                }
                Err(TryAcquireError::WouldBlock(h)) => {
                    out(format!("TRY blocked {:?} {}", h.pid, h.alive));
                }
                Err(TryAcquireError::Failed(e)) => out(format!("TRY failed {e}")),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

// ------------------------------------------------- re-entrant fenced calls

// Issue 10, item 2a: the README put "mutate the transcript here" inside
// `with_fence`, and the obvious line there, `transcript.append(&guard, ..)`,
// fences again on the same guard: it waited forever on the guard's mutex.
#[test]
fn append_inside_with_fence_lands_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let guard = acquire(&session);
    let mut t = Transcript::open(&session).expect("open transcript");
    let (guard, mut t) = within("append inside with_fence", HANG, move || {
        let r = guard.with_fence(|| t.append(&guard, &[json!({"n": 1})], Durability::Data));
        r.expect("outer fence").expect("inner append");
        (guard, t)
    });
    assert_eq!(entries(&session), [json!({"n": 1})], "landed exactly once");
    // Nothing was left locked: the next fenced write and release go through.
    t.append(&guard, &[json!({"n": 2})], Durability::None)
        .expect("append after");
    assert_eq!(entries(&session), [json!({"n": 1}), json!({"n": 2})]);
    guard.release().expect("release");
}

#[test]
fn check_payload_and_holder_inside_with_fence_answer_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let s = session.clone();
    within("calls inside with_fence", HANG, move || {
        let locks = SessionLock::new();
        let guard = locks
            .acquire_with(&s, &opts().lane("channel"))
            .expect("acquire");
        let epoch = guard.epoch();
        let inner = guard
            .with_fence(|| {
                guard.check().expect("check inside");
                assert_eq!(guard.with_fence(|| 7).expect("nested with_fence"), 7);
                assert_eq!(guard.payload().epoch, Some(epoch));
                assert_eq!(guard.holder().lane.as_deref(), Some("channel"));
                assert!(!guard.is_revoked());
                // A guard sharing the acquisition (opt-in reentrancy) is
                // inside the same fence.
                let again = locks
                    .acquire_with(&s, &opts().reentrant(true))
                    .expect("reentrant acquire");
                assert_eq!(again.epoch(), epoch);
                again.check().expect("reentrant guard's check inside");
                again.with_fence(|| ()).expect("reentrant guard's fence");
                "done"
            })
            .expect("outer fence");
        assert_eq!(inner, "done");
        guard.check().expect("check after");
        guard.release().expect("release");
    });
}

#[test]
fn extend_inside_with_fence_fails_at_once_and_works_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let guard = acquire(&session);
    let guard = within("extend inside with_fence", HANG, move || {
        let started = Instant::now();
        let err = guard
            .with_fence(|| guard.extend())
            .expect("outer fence")
            .expect_err("extend cannot republish under its own fence");
        assert!(
            matches!(&err, Error::Misuse { what } if what.ends_with(&guard.lock_path().display().to_string())),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "misuse: cannot extend the session lock inside its own fence: {}",
                guard.lock_path().display()
            )
        );
        assert!(started.elapsed() < Duration::from_secs(1), "at once");
        guard
    });
    guard.extend().expect("extend outside the fence");
    guard.check().expect("still ours");
    guard.release().expect("release");
}

// Acquiring the same session again (without reentrancy) inside its own
// fence would wait for a turn that this very thread holds: with no budget,
// forever. It fails at once; with reentrancy it shares the acquisition.
#[test]
fn acquiring_the_same_session_inside_its_fence_fails_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    within("acquire inside with_fence", HANG, move || {
        let locks = SessionLock::new();
        let guard = acquire(&session);
        let forever = LockOptions::default().timeout(None);
        let err = guard
            .with_fence(|| locks.acquire_with(&session, &forever))
            .expect("outer fence")
            .expect_err("the turn is this thread's own");
        assert!(matches!(err, Error::Misuse { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "misuse: cannot acquire the session lock again inside its own fence: {}",
                guard.lock_path().display()
            )
        );
        let tried = guard
            .with_fence(|| locks.try_acquire(&session).map(drop))
            .expect("outer fence");
        assert!(
            matches!(tried, Err(TryAcquireError::Failed(Error::Misuse { .. }))),
            "{tried:?}"
        );
        assert_eq!(locks.queued(&session).expect("queued"), 0, "nothing queued");
        guard.release().expect("release");
        acquire(&session).release().expect("acquire after");
    });
}

// ------------------------------------------------------ §1.2 panics release

/// The exclusive state lock (`flock` on `<session>.epoch`) through a file
/// description of its own: fails while anyone holds it, this process too.
fn state_lock_is_free(session: &Path) -> bool {
    let mut state = session.as_os_str().to_owned();
    state.push(".epoch");
    let f = File::open(PathBuf::from(state)).expect("open epoch file");
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            rustix::fs::flock(&f, rustix::fs::FlockOperation::Unlock).expect("unlock");
            true
        }
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => false,
        Err(e) => panic!("flock: {e}"),
    }
}

// Spec §1.2: a panic inside the critical section unwinds through the fence
// and drops the guard, which releases the lock at once: another process
// gets it without waiting for the lease (120 s here) to run out.
#[test]
fn a_panic_inside_with_fence_releases_the_lock_to_the_next_process_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let s = session.clone();
    let joined = std::thread::spawn(move || {
        let guard = acquire(&s);
        let _ = guard.with_fence(|| panic!("holder panics inside its fence"));
    })
    .join();
    assert!(joined.is_err(), "the holder thread panicked");
    assert!(state_lock_is_free(&session));
    next_process_acquires_at_once(&session);
    // And in this process.
    acquire(&session).release().expect("release");
}

#[test]
fn a_guard_alive_in_a_panicking_thread_or_task_is_released_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");

    let s = session.clone();
    let joined = std::thread::spawn(move || {
        let _guard = acquire(&s);
        panic!("holder thread panics");
    })
    .join();
    assert!(joined.is_err());
    next_process_acquires_at_once(&session);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let s = session.clone();
    let joined = rt.block_on(async move {
        tokio::spawn(async move {
            let locks = SessionLock::with_backend(sessionlock::FileBackend::default(), opts());
            let _guard = locks.acquire_async(&s).await.expect("acquire async");
            tokio::task::yield_now().await;
            panic!("holder task panics");
        })
        .await
    });
    assert!(joined.expect_err("the task panicked").is_panic());
    next_process_acquires_at_once(&session);
}

// A panic caught inside the process (a server's catch_unwind per request)
// leaves the guard alive: its fence, mutex and state lock must not stay
// held, poisoned or marked in a way that wedges its later use.
#[test]
fn a_caught_panic_inside_with_fence_leaves_the_guard_usable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let guard = acquire(&session);
    let mut t = Transcript::open(&session).expect("open transcript");
    let s = session.clone();
    // On one thread: what a panic leaves behind may be thread-local.
    let guard = within("the guard after a caught panic", HANG, move || {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = guard.with_fence(|| panic!("caught panic inside the fence"));
        }));
        assert!(caught.is_err());
        assert!(state_lock_is_free(&s), "the panic left the state lock held");
        guard.check().expect("check after the panic");
        assert_eq!(guard.with_fence(|| 5).expect("fence after the panic"), 5);
        guard.extend().expect("extend after the panic");
        t.append(&guard, &[json!({"after": "panic"})], Durability::None)
            .expect("append after the panic");
        guard
    });
    assert_eq!(entries(&session), [json!({"after": "panic"})]);
    guard.release().expect("release");
    next_process_acquires_at_once(&session);
}

// ------------------------------------------- §3 EPERM from kill(pid, 0) is alive

/// Runs `cmd` to completion within 30 s, retrying a spawn that finds the
/// freshly copied executable still open for writing in a forked sibling.
fn output_within(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(26) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("child output")
}

// Spec §3: `kill(pid, 0)` failing with EPERM means the process exists (it
// belongs to another user). Tests run as root, so the checking side runs as
// `nobody`: a lock held by this (root) process must look alive to it, and it
// must not take the lock.
#[test]
fn a_root_holder_is_alive_to_an_unprivileged_process() {
    let bin_dir = tempfile::tempdir().expect("tempdir");
    let probe = bin_dir.path().join("probe");
    let Some(mut cmd) = as_nobody(&probe) else {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v != "true"),
            "CI needs setpriv or runuser (util-linux) for this test"
        );
        eprintln!("skipped: neither setpriv nor runuser is installed");
        return;
    };
    // `nobody` must reach the binary (the build may sit under a 0700 home),
    // list and write the session directory (so that a wrong verdict could
    // act), and read the lock (0644 in OpenClaw-compatible mode) and use the
    // state file.
    std::fs::copy(std::env::current_exe().expect("test binary"), &probe).expect("copy binary");
    let chmod = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    chmod(bin_dir.path(), 0o755);
    chmod(&probe, 0o755);
    let dir = tempfile::tempdir().expect("tempdir");
    chmod(dir.path(), 0o777);
    let session = dir.path().join("s.jsonl");
    let guard = SessionLock::new()
        .acquire_with(&session, &opts().openclaw_compat(true).lane("root-lane"))
        .expect("acquire");
    let mut state = session.as_os_str().to_owned();
    state.push(".epoch");
    chmod(Path::new(&state), 0o666);

    let out = output_within(
        cmd.args([
            "--exact",
            "child_entry",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .current_dir(dir.path())
        .env(
            ROLE_VAR,
            format!(
                "probe\u{1f}{}\u{1f}{}",
                session.display(),
                std::process::id()
            ),
        ),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| {
                panic!(
                    "no {prefix} line from the unprivileged probe: {text}\nstderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_owned()
    };
    // Without this the test proves nothing if the wrapper left the probe
    // root: root's `kill(pid, 0)` succeeds, and the holder looks alive too.
    let who = line("WHO");
    let euid = who
        .strip_prefix("WHO euid=")
        .and_then(|r| r.split(' ').next())
        .and_then(|u| u.parse::<u32>().ok());
    assert!(
        euid.is_some_and(|u| u != 0),
        "the probe must run unprivileged: {who}"
    );
    assert!(
        who.ends_with(" kill0=EPERM"),
        "kill(holder, 0) must fail with EPERM in the probe: {who}"
    );
    assert_eq!(
        line("ALIVE"),
        "ALIVE true Alive reasons=",
        "a process of another user is alive"
    );
    assert_eq!(
        line("TRY"),
        format!("TRY blocked Some({}) true", std::process::id()),
        "a live holder within its lease is not reclaimed"
    );
    guard.check().expect("the lock is still ours");
    guard.release().expect("release");
}

// ---------------------------------------------------------- §7 durability

/// The real file system, counting the sync calls made through it.
#[derive(Default)]
struct CountingFs {
    data: AtomicUsize,
    all: AtomicUsize,
    dir: AtomicUsize,
}

impl CountingFs {
    /// (fdatasync, fsync, directory fsync) since the last call.
    fn take(&self) -> (usize, usize, usize) {
        (
            self.data.swap(0, Ordering::SeqCst),
            self.all.swap(0, Ordering::SeqCst),
            self.dir.swap(0, Ordering::SeqCst),
        )
    }
}

impl Fs for CountingFs {
    fn open_append(&self, path: &Path) -> io::Result<File> {
        RealFs.open_append(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<File> {
        RealFs.open_read(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<File> {
        RealFs.create_new(path)
    }
    fn write(&self, file: &File, buf: &[u8]) -> io::Result<usize> {
        RealFs.write(file, buf)
    }
    fn read_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        RealFs.read_at(file, buf, offset)
    }
    fn metadata(&self, file: &File) -> io::Result<Metadata> {
        RealFs.metadata(file)
    }
    fn stat(&self, path: &Path) -> io::Result<Metadata> {
        RealFs.stat(path)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.data.fetch_add(1, Ordering::SeqCst);
        RealFs.sync_data(file)
    }
    fn sync_all(&self, file: &File) -> io::Result<()> {
        self.all.fetch_add(1, Ordering::SeqCst);
        RealFs.sync_all(file)
    }
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        RealFs.set_len(file, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.dir.fetch_add(1, Ordering::SeqCst);
        RealFs.sync_dir(dir)
    }
}

// Spec §7: `data` is an fdatasync, `full` an fsync of the file and, when
// this handle created it, of its directory; `none` syncs nothing.
#[test]
fn durability_data_and_full_really_sync_and_none_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let session = dir.path().join("s.jsonl");
    let guard = acquire(&session);
    let fs = Arc::new(CountingFs::default());
    let mut t = Transcript::open_with(&session, fs.clone()).expect("open (creates)");
    let append = |t: &mut Transcript, d| {
        t.append(&guard, &[json!({"d": format!("{d:?}")})], d)
            .expect("append");
        fs.take()
    };

    assert_eq!(append(&mut t, Durability::None), (0, 0, 0), "none");
    assert_eq!(append(&mut t, Durability::Data), (1, 0, 0), "data");
    assert_eq!(
        append(&mut t, Durability::Full),
        (0, 1, 1),
        "full, on the handle that created the file: file and directory"
    );
    assert_eq!(
        append(&mut t, Durability::Full),
        (0, 1, 0),
        "full again: the creation is durable already"
    );

    // A handle that found the file existing never syncs the directory.
    let mut t = Transcript::open_with(&session, fs.clone()).expect("reopen");
    assert_eq!(append(&mut t, Durability::Full), (0, 1, 0), "full");
    assert_eq!(append(&mut t, Durability::Data), (1, 0, 0), "data");
    assert_eq!(append(&mut t, Durability::None), (0, 0, 0), "none");
    assert_eq!(entries(&session).len(), 7);
    drop(t);
    guard.release().expect("release");
}
