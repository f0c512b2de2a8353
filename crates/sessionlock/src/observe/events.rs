//! The event log: what the locks did, one JSON object per line
//! ([design §20.2](crate::design#202-the-event-log)).
//!
//! Off unless a program turns it on ([`EventLog::install`], or the
//! `SESSIONLOCK_EVENT_LOG` environment variable, read at the first event).
//! While it is off an event costs one atomic load. While it is on, an event
//! is serialized into a buffer in memory under a mutex; a background
//! thread, woken by the first line after each write (the only system call
//! an event may make, at most once per [`FLUSH_EVERY`]), appends the buffer
//! to the file [`FLUSH_EVERY`] later, and the process flushes what is left
//! when it exits normally. The file is opened `O_APPEND` and each write is whole lines,
//! so several processes can share one log: their lines never interleave
//! inside a line.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::sync::{lock, unpoison};

/// The environment variable naming the event log's file: set, every
/// process started with it writes its events there.
pub const ENV_EVENT_LOG: &str = "SESSIONLOCK_EVENT_LOG";

/// The schema version written in every line's `v`.
pub const SCHEMA_VERSION: u32 = 1;

/// How often the background thread writes what was logged.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// How many bytes may wait for the background thread: past that (the disk
/// is stalled), events are dropped and counted, and the next write says so
/// in a `dropped` line. Locks never wait for the log.
const MAX_BUFFERED: usize = 8 << 20;

/// How long the exit hook waits for another thread's event or write.
const EXIT_WAIT: Duration = Duration::from_millis(100);

/// The log's state in this process.
struct Sink {
    file: Arc<File>,
    path: PathBuf,
    /// Whole lines not yet written.
    buf: Vec<u8>,
    /// Events dropped since the last write (buffer full, or writes failing).
    dropped: u64,
    /// Whether a write failed and was reported: reported once.
    failing: bool,
    /// Whether the last write was cut short inside a line.
    torn: bool,
}

impl Sink {
    fn new(file: File, path: PathBuf) -> Sink {
        Sink {
            file: Arc::new(file),
            path,
            buf: Vec::with_capacity(64 << 10),
            dropped: 0,
            failing: false,
            torn: false,
        }
    }
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);
/// Signalled when the buffer stops being empty: the writer thread sleeps
/// on it while nothing happens, so an idle process never wakes.
static FILLED: Condvar = Condvar::new();
/// Held while a buffer is written out, so that two flushes keep the order
/// of their lines; never while [`SINK`] is held, so an event never waits
/// for the disk.
static WRITING: Mutex<()> = Mutex::new(());
/// Whether a sink is installed: the only thing an event looks at while the
/// log is off.
static ON: AtomicBool = AtomicBool::new(false);
static FROM_ENV: Once = Once::new();
static FLUSHER: Once = Once::new();

/// The event log of this process: where the library writes its events as
/// JSON Lines (schema in
/// [design §20.2](crate::design#202-the-event-log)), for
/// `sessionlock timeline` and for your own tools.
///
/// # Example
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let log = dir.path().join("events.jsonl");
/// sessionlock::observe::EventLog::install(&log)?;
///
/// let locks = sessionlock::SessionLock::new();
/// locks.acquire(dir.path().join("s.jsonl"))?.release()?;
/// sessionlock::observe::EventLog::flush();
///
/// let text = std::fs::read_to_string(&log)?;
/// let kinds: Vec<String> = text
///     .lines()
///     .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["kind"].to_string()))
///     .collect::<Result<_, _>>()?;
/// assert_eq!(kinds, [r#""acquired""#, r#""released""#]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct EventLog(());

impl EventLog {
    /// Starts writing this process's events to `path` (created if missing,
    /// appended to), instead of the file `SESSIONLOCK_EVENT_LOG` names or
    /// of none. Installing again switches to the new file (what was
    /// logged so far goes to the old one).
    ///
    /// # Errors
    /// `Io` when the file cannot be opened for appending; the log stays as
    /// it was.
    pub fn install(path: impl AsRef<Path>) -> crate::Result<()> {
        // The environment's log, if any, must not replace this one later.
        FROM_ENV.call_once(|| {});
        let path = path.as_ref();
        let file = open(path)?;
        EventLog::flush();
        *lock(&SINK) = Some(Sink::new(file, path.to_owned()));
        start();
        Ok(())
    }

    /// Stops logging: writes out what was logged and closes the file.
    pub fn uninstall() {
        FROM_ENV.call_once(|| {});
        ON.store(false, Ordering::SeqCst);
        EventLog::flush();
        *lock(&SINK) = None;
    }

    /// The file events go to, if the log is on.
    #[must_use]
    pub fn path() -> Option<PathBuf> {
        init_from_env();
        lock(&SINK).as_ref().map(|s| s.path.clone())
    }

    /// Writes out what was logged so far (the background thread does it
    /// every [`FLUSH_EVERY`], and a normal exit does it too). Call it
    /// before reading the log in the same process, or before an exit that
    /// skips `atexit` handlers (`_exit`, an abort).
    pub fn flush() {
        let _writing = lock(&WRITING);
        write_out(|| Some(lock(&SINK)));
    }

    /// Adds a line of your own to the log, for instance a fault a test
    /// injects, so that it appears on the timeline beside the locks'
    /// events: `{"v":1,"ts_us":..,"pid":..,"host":..,"kind":KIND, ..fields}`.
    /// Fields named like the common ones (`v`, `ts_us`, `pid`, `host`,
    /// `kind`) are left out. Does nothing while the log is off.
    pub fn note(kind: &str, fields: &serde_json::Map<String, serde_json::Value>) {
        if !on() {
            return;
        }
        let head = head(kind);
        let mut line = match serde_json::to_value(&head) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return,
        };
        for (k, v) in fields {
            if !line.contains_key(k) {
                line.insert(k.clone(), v.clone());
            }
        }
        push(&serde_json::Value::Object(line));
    }
}

fn open(path: &Path) -> crate::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        // Non-blocking: opening a FIFO without a reader fails instead of
        // waiting (it happens at an acquisition's first event), and a
        // full pipe drops lines instead of stalling the writer or the exit.
        .custom_flags((rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .map_err(|e| crate::Error::io("open the event log", path, e))
}

/// Whether events are logged: reads `SESSIONLOCK_EVENT_LOG` the first time.
pub(crate) fn on() -> bool {
    init_from_env();
    ON.load(Ordering::Relaxed)
}

fn init_from_env() {
    FROM_ENV.call_once(|| {
        let Some(path) = std::env::var_os(ENV_EVENT_LOG).filter(|p| !p.is_empty()) else {
            return;
        };
        let path = PathBuf::from(path);
        match open(&path) {
            Ok(file) => {
                *lock(&SINK) = Some(Sink::new(file, path));
                start();
            }
            Err(e) => tracing::warn!(
                target: "sessionlock::config",
                var = ENV_EVENT_LOG,
                error = %e,
                "cannot open the event log; events are not logged"
            ),
        }
    });
}

/// Turns logging on, and starts the background writer and the exit hook
/// (once per process).
fn start() {
    ON.store(true, Ordering::SeqCst);
    FLUSHER.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("sessionlock-events".into())
            .spawn(|| loop {
                {
                    let mut sink = lock(&SINK);
                    while sink.as_ref().is_none_or(|s| s.buf.is_empty()) {
                        sink = unpoison(FILLED.wait(sink));
                    }
                }
                // Lines that come meanwhile go out with the first one.
                std::thread::sleep(FLUSH_EVERY);
                EventLog::flush();
            });
        if let Err(e) = spawned {
            tracing::warn!(
                target: "sessionlock::config",
                error = %e,
                "cannot start the event log's writer thread; events are written at exit"
            );
        }
        // SAFETY: `flush_at_exit` is an `extern "C" fn()` that never
        // unwinds; registering it has no other precondition.
        unsafe {
            libc::atexit(flush_at_exit);
        }
    });
}

extern "C" fn flush_at_exit() {
    // Another thread may be writing or logging right now (it goes on while
    // the process exits), or hold a mutex for ever (it was stopped
    // mid-event): wait for the mutexes a little, never for ever.
    let deadline = Instant::now() + EXIT_WAIT;
    let Some(_writing) = patiently(&WRITING, deadline) else {
        return;
    };
    write_out(|| patiently(&SINK, deadline));
}

/// Takes `m` if it comes free before `deadline`.
fn patiently<T>(m: &'static Mutex<T>, deadline: Instant) -> Option<MutexGuard<'static, T>> {
    loop {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return None,
        }
    }
}

/// Takes the buffered lines (from the sink `sink` gives, under its mutex),
/// and appends them to the file with the mutex released. The caller holds
/// [`WRITING`].
fn write_out<'a>(sink: impl Fn() -> Option<MutexGuard<'a, Option<Sink>>>) {
    // Allocated before the mutex is taken: an event never waits for it.
    let mut fresh = Vec::with_capacity(64 << 10);
    // `buf` is: a `\n` ending a torn line (if the last write was cut
    // short), a `dropped` line (if events were lost), then the events from
    // `events_at` on.
    let (file, buf, noted, events_at) = {
        let Some(mut guard) = sink() else {
            return;
        };
        let Some(s) = guard.as_mut() else {
            return;
        };
        if s.buf.is_empty() {
            return;
        }
        let noted = std::mem::take(&mut s.dropped);
        if s.torn {
            // The last write was cut short: end its torn line, so that
            // only that line is lost, not the first of this write.
            fresh.push(b'\n');
        }
        if noted > 0 {
            fresh.extend_from_slice(
                format!(
                    "{{\"v\":{SCHEMA_VERSION},\"ts_us\":{},\"pid\":{},\"host\":{},\"kind\":\"dropped\",\"events\":{noted}}}\n",
                    now_us(),
                    std::process::id(),
                    serde_json::Value::from(crate::sys::hostname()),
                )
                .as_bytes(),
            );
        }
        let events_at = fresh.len();
        if fresh.is_empty() {
            std::mem::swap(&mut fresh, &mut s.buf);
        } else {
            fresh.extend_from_slice(&s.buf);
            s.buf.clear();
        }
        (Arc::clone(&s.file), fresh, noted, events_at)
    };
    let mut done = 0;
    let written = loop {
        match (&*file).write(&buf[done..]) {
            Ok(0) => break Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
            Ok(n) => {
                done += n;
                if done == buf.len() {
                    break Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let Some(mut guard) = sink() else {
        return;
    };
    let Some(s) = guard.as_mut() else {
        return;
    };
    if !Arc::ptr_eq(&s.file, &file) {
        return;
    }
    match written {
        Ok(()) => {
            s.failing = false;
            s.torn = false;
        }
        Err(e) => {
            // Counted, not kept: a full disk must not grow memory. The
            // `dropped` line was one of the lines lost: its count is
            // carried over instead.
            s.dropped += bytecount_lines(&buf[done.max(events_at)..]);
            if done < events_at {
                s.dropped += noted;
            }
            if done > 0 {
                // Else nothing of it was written: a torn line stays torn.
                s.torn = buf[done - 1] != b'\n';
            }
            if !s.failing {
                s.failing = true;
                tracing::warn!(
                    target: "sessionlock::config",
                    path = %s.path.display(),
                    error = %e,
                    "cannot write the event log; dropping events until it works again"
                );
            }
        }
    }
}

fn bytecount_lines(buf: &[u8]) -> u64 {
    buf.iter().filter(|&&b| b == b'\n').count() as u64
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The fields every line starts with.
#[derive(Serialize)]
struct Head<'a> {
    v: u32,
    ts_us: u64,
    pid: u32,
    host: &'a str,
    kind: &'a str,
}

fn head(kind: &str) -> Head<'_> {
    Head {
        v: SCHEMA_VERSION,
        ts_us: now_us(),
        pid: pid(),
        host: crate::sys::hostname(),
        kind,
    }
}

/// One line of the library's own events: the common fields, the lock's,
/// and those of its kind (absent ones left out).
#[derive(Serialize, Default)]
pub(crate) struct Line<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backend: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "lossy_opt")]
    pub(crate) session: Option<&'a OsStr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lane: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) run: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) epoch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) waited_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) held_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) window_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) handed_off: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cause: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reasons: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) holder_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) holder_epoch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) phase: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<&'a str>,
}

fn lossy_opt<S: serde::Serializer>(v: &Option<&OsStr>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&v.to_string_lossy()),
        None => s.serialize_none(),
    }
}

/// Logs one of the library's events (`kind`, then `line`'s fields). The
/// caller checked [`on`].
pub(crate) fn log(kind: &'static str, line: &Line<'_>) {
    log_at(kind, now_us(), line);
}

/// [`log`], for something that happened at `ts_us`.
///
/// `kind` is one of the library's own (plain ASCII): the common fields are
/// written as text, and `line`'s object is spliced after them, which costs
/// a fraction of serializing them as one flattened object.
pub(crate) fn log_at(kind: &'static str, ts_us: u64, line: &Line<'_>) {
    let mut guard = lock(&SINK);
    let Some(s) = guard.as_mut() else {
        return;
    };
    if s.buf.len() > MAX_BUFFERED {
        s.dropped += 1;
        return;
    }
    let start = s.buf.len();
    let head = write!(
        s.buf,
        "{{\"v\":{SCHEMA_VERSION},\"ts_us\":{ts_us},\"pid\":{},\"host\":{},\"kind\":\"{kind}\"",
        pid(),
        host_json()
    );
    let at = s.buf.len();
    if head.is_err() || serde_json::to_writer(&mut s.buf, line).is_err() {
        s.buf.truncate(start);
        return;
    }
    // `line` wrote `{...}` or `{}`: its fields follow the common ones.
    if s.buf.len() == at + 2 {
        s.buf.truncate(at);
        s.buf.push(b'}');
    } else {
        s.buf[at] = b',';
    }
    s.buf.push(b'\n');
    drop(guard);
    if start == 0 {
        FILLED.notify_one();
    }
}

/// This process's id, asked once (and again in a forked child).
fn pid() -> u32 {
    static PID: AtomicU32 = AtomicU32::new(0);
    static AT_FORK: Once = Once::new();
    extern "C" fn forked() {
        PID.store(0, Ordering::Relaxed);
    }
    let known = PID.load(Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    AT_FORK.call_once(|| {
        // SAFETY: `forked` only stores to an atomic, which is
        // async-signal-safe, as a child handler of fork must be.
        unsafe {
            libc::pthread_atfork(None, None, Some(forked));
        }
    });
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

/// The host name as a JSON string, made once.
fn host_json() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| serde_json::Value::from(crate::sys::hostname()).to_string())
}

/// Serializes `value` as one line into the buffer.
fn push(value: &impl Serialize) {
    let mut guard = lock(&SINK);
    let Some(s) = guard.as_mut() else {
        return;
    };
    if s.buf.len() > MAX_BUFFERED {
        s.dropped += 1;
        return;
    }
    let start = s.buf.len();
    if serde_json::to_writer(&mut s.buf, value).is_err() {
        s.buf.truncate(start);
        return;
    }
    s.buf.push(b'\n');
    drop(guard);
    if start == 0 {
        // The first line since the last write: wake the writer (one
        // notification per write, not per event).
        FILLED.notify_one();
    }
}
