//! `sessionlock append`, `read` and `repair`: the transcript store
//! (docs/design.md §5) from the shell.
//!
//! `append` and `repair` take the session lock and write fenced; `read`
//! takes no lock (readers never do) and reports a torn final line instead of
//! printing it. Exit codes: 0 ok, 1 a finding the user can act on (the lock
//! is held by someone else, `read` met a torn tail), 2 an error.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use sessionlock::transcript::{Durability, RawEntries, Reader, TornTail};
use sessionlock::{Error, Guard, LockBackend, SessionLock, StoreBackend, TranscriptStore};

use sessionlock_lab::backend_choice::BackendChoice;
use sessionlock_lab::testkit::block_on;
use sessionlock_postgres::{PgBackend, PgStore};

use super::lock::{
    busy_hint, parse_timeout, pg_key, pg_locks, pg_status_command, release, Budget, RootArg,
};
use crate::exit;
use crate::help::{ExitRow, Status};
use crate::output::report;
use crate::output::{self, shell_word};

/// The most input `append` reads: the batch is held in memory, as given
/// (about one byte per input byte, never a parsed value tree), so that it
/// lands with one write.
const MAX_INPUT_BYTES: u64 = 256 * 1024 * 1024;

/// `append --help`'s notes.
pub(crate) const APPEND_NOTES: &str = "\
Entries come from each --entry, or, when none is given, from stdin: one JSON
value per non-empty line (compact pretty JSON first, e.g. with `jq -c`). Every
entry is validated before the lock is taken, and all of them land with one
fenced write, byte for byte as given (numbers keep their spelling; only line
breaks inside an --entry become spaces). A torn final line left by a crash is
moved to <SESSION_FILE>.torn-<epoch> first. The transcript must be a regular
file (or missing); with --root it must resolve inside that directory.";

/// `append`'s exit statuses.
pub(crate) const APPEND_EXIT: &[ExitRow] = &[
    (Status::Is(exit::OK), "the entries were appended"),
    (Status::Is(exit::FINDING), LOCK_BUSY),
    (
        Status::Is(exit::ERROR),
        "error (invalid entry, no entries, I/O); nothing was appended unless the summary \
         line was printed",
    ),
];

/// `read --help`'s notes.
pub(crate) const READ_NOTES: &str = "\
Entries are printed one per line, byte for byte as stored, each checked to be
one JSON value. No lock is taken.";

/// `read`'s exit statuses.
pub(crate) const READ_EXIT: &[ExitRow] = &[
    (Status::Is(exit::OK), "every line was a complete entry"),
    (
        Status::Is(exit::FINDING),
        "the transcript ends with a torn line (reported on stderr, not printed); \
         `sessionlock repair` moves it aside",
    ),
    (
        Status::Is(exit::ERROR),
        "error (missing file, a complete line that is not JSON, I/O)",
    ),
];

/// `repair --help`'s notes.
pub(crate) const REPAIR_NOTES: &str = "\
A torn final line (left by a crash in the middle of a write) is moved to
<SESSION_FILE>.torn-<epoch> and the transcript is truncated to its last
complete line. Earlier entries are never touched.";

/// `repair`'s exit statuses.
pub(crate) const REPAIR_EXIT: &[ExitRow] = &[
    (Status::Is(exit::OK), "repaired, or nothing to repair"),
    (Status::Is(exit::FINDING), LOCK_BUSY),
    (Status::Is(exit::ERROR), "error"),
];

/// The finding of `append` and `repair` when the lock cannot be had.
const LOCK_BUSY: &str = "the lock was held by someone else until the timeout ran out, or \
                         past its lease while SESSIONLOCK_HOLD_EXCEEDED=report";

/// How the session lock is taken (`append`, `repair`).
#[derive(clap::Args)]
pub(crate) struct LockArgs {
    /// How long to wait for the lock, in milliseconds, or `Infinity`
    /// [default: SESSIONLOCK_ACQUIRE_TIMEOUT_MS, else 60000].
    #[arg(long, value_name = "MS", value_parser = parse_timeout)]
    timeout_ms: Option<Budget>,
    /// Lane label recorded in the lock, for `sessionlock status`.
    #[arg(long, value_name = "LANE", default_value = "cli")]
    lane: String,
    #[command(flatten)]
    root: RootArg,
}

#[derive(clap::Args)]
pub(crate) struct AppendArgs {
    /// The session transcript (e.g. `sessions/abc.jsonl`); created if
    /// missing. Its lock is `<file>.lock`. With a postgres --backend: the
    /// session key (e.g. `agent:main:42`).
    #[arg(value_name = "SESSION_FILE")]
    session: PathBuf,
    /// An entry to append: one JSON value (repeatable, appended in order).
    #[arg(long = "entry", value_name = "JSON", allow_hyphen_values = true)]
    entries: Vec<String>,
    /// How durable the write is before `append` returns: `none` (page
    /// cache), `data` (fdatasync), `full` (fsync, and of the directory when
    /// the transcript was created).
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = DurabilityArg::Data)]
    durability: DurabilityArg,
    #[command(flatten)]
    lock: LockArgs,
    /// Print the summary as a JSON object (version, entries, bytes, offset,
    /// epoch).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub(crate) struct ReadArgs {
    /// The session transcript (with a postgres --backend: the session key;
    /// entries are printed as compact JSON).
    #[arg(value_name = "SESSION_FILE")]
    session: PathBuf,
    /// Skip the first N entries.
    #[arg(long, value_name = "N", default_value_t = 0)]
    from: usize,
    #[command(flatten)]
    root: RootArg,
}

#[derive(clap::Args)]
pub(crate) struct RepairArgs {
    /// The session transcript (with a postgres --backend: the session key).
    #[arg(value_name = "SESSION_FILE")]
    session: PathBuf,
    #[command(flatten)]
    lock: LockArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DurabilityArg {
    None,
    Data,
    Full,
}

impl From<DurabilityArg> for Durability {
    fn from(d: DurabilityArg) -> Self {
        match d {
            DurabilityArg::None => Durability::None,
            DurabilityArg::Data => Durability::Data,
            DurabilityArg::Full => Durability::Full,
        }
    }
}

/// A failure to report (`error:` / `caused by:` / `hint:`) and the exit code
/// that goes with it.
struct Failure {
    err: anyhow::Error,
    hint: Option<String>,
    code: u8,
}

impl Failure {
    /// An error (exit 2).
    fn error(err: impl Into<anyhow::Error>) -> Self {
        Failure {
            err: err.into(),
            hint: None,
            code: exit::ERROR,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Reports a failure and turns it into its exit code.
fn finish(r: Result<ExitCode, Failure>) -> anyhow::Result<ExitCode> {
    Ok(r.unwrap_or_else(|f| {
        report(&f.err, f.hint.as_deref());
        ExitCode::from(f.code)
    }))
}

/// Adds what was being done to an error.
fn context<E>(what: String) -> impl FnOnce(E) -> Failure
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| Failure::error(anyhow::Error::new(e).context(what))
}

pub(crate) fn append(args: AppendArgs, backend: &BackendChoice) -> anyhow::Result<ExitCode> {
    match backend {
        BackendChoice::File => finish(run_append(args)),
        BackendChoice::Postgres(url) => finish(pg_append(args, url, backend)),
    }
}

pub(crate) fn read(args: ReadArgs, backend: &BackendChoice) -> anyhow::Result<ExitCode> {
    match backend {
        BackendChoice::File => finish(run_read(args)),
        BackendChoice::Postgres(url) => finish(pg_read(args, url, backend)),
    }
}

pub(crate) fn repair(args: RepairArgs, backend: &BackendChoice) -> anyhow::Result<ExitCode> {
    match backend {
        BackendChoice::File => finish(run_repair(args)),
        BackendChoice::Postgres(url) => finish(pg_repair(args, url)),
    }
}

/// `append`'s summary with `--json`. Field names are a stable interface:
/// fields may be added; a rename or removal bumps [`AppendedJson::VERSION`].
#[derive(Serialize)]
struct AppendedJson {
    /// [`AppendedJson::VERSION`].
    version: u32,
    entries: usize,
    bytes: u64,
    offset: u64,
    epoch: u64,
}

impl AppendedJson {
    /// The schema version of the summary.
    const VERSION: u32 = 1;
}

fn run_append(args: AppendArgs) -> Result<ExitCode, Failure> {
    let entries = input_entries(&args)?;

    let (locks, session) = resolve(&args.session, &args.lock.root, "append to", true)?;
    let guard = lock(
        &locks,
        &session,
        args.session.display(),
        &args.lock,
        busy_hint,
    )?;
    let epoch = guard.epoch();
    write_locked(
        guard,
        |g| append_locked(&locks, g, &entries, args.durability.into()),
        |(offset, bytes)| appended(&args, &entries, offset, bytes, epoch),
    )
}

/// Entries from each `--entry`, else from stdin; none is an error.
fn input_entries(args: &AppendArgs) -> Result<RawEntries, Failure> {
    let entries = if args.entries.is_empty() {
        if io::stdin().is_terminal() {
            eprintln!("reading entries from stdin, one JSON value per line (end with Ctrl-D)");
        }
        entries_from_lines(io::stdin().lock(), MAX_INPUT_BYTES)?
    } else {
        entries_from_args(&args.entries)?
    };
    if entries.is_empty() {
        return Err(
            Failure::error(anyhow::anyhow!("no entries to append")).hint(
                "pass entries with --entry JSON (repeatable), or one JSON value per line on stdin",
            ),
        );
    }
    Ok(entries)
}

/// `append`'s summary line: `bytes` written at `offset` under `epoch`.
fn appended(
    args: &AppendArgs,
    entries: &RawEntries,
    offset: u64,
    bytes: u64,
    epoch: u64,
) -> Result<String, Failure> {
    if args.json {
        serde_json::to_string(&AppendedJson {
            version: AppendedJson::VERSION,
            entries: entries.len(),
            bytes,
            offset,
            epoch,
        })
        .map_err(context("cannot format the summary".to_owned()))
    } else {
        let noun = if entries.len() == 1 {
            "entry"
        } else {
            "entries"
        };
        Ok(format!(
            "appended {} {noun} ({bytes} bytes) at offset {offset}, epoch {epoch}",
            entries.len()
        ))
    }
}

/// Runs `write` under `guard`, releases the lock, and prints the line
/// `summary` makes of what was written. Exit 0, or 2 when the release
/// failed (reported).
fn write_locked<B: LockBackend, T>(
    guard: Guard<B>,
    write: impl FnOnce(&Guard<B>) -> Result<T, Failure>,
    summary: impl FnOnce(T) -> Result<String, Failure>,
) -> Result<ExitCode, Failure> {
    let written = write(&guard);
    let released = release(guard);
    print_line(&summary(written?)?)?;
    Ok(exit::error_if(!released))
}

/// `repair`'s summary line; `unit` is what the transcript is made of.
fn repaired(torn: Option<TornTail>, unit: &str) -> String {
    match torn {
        Some(torn) => format!("repaired: {}", moved(&torn)),
        None => format!("nothing to repair: the transcript ends with a complete {unit}"),
    }
}

/// Opens the locked session's transcript through the lock's backend (so a
/// confined backend keeps it confined).
fn open_transcript(
    locks: &SessionLock,
    guard: &Guard,
) -> Result<sessionlock::transcript::Transcript, Failure> {
    let session = guard.session_path();
    locks
        .backend()
        .open_transcript(session)
        .map_err(context(format!(
            "cannot open transcript {}",
            session.display()
        )))
}

/// Opens the transcript, moves a torn tail aside (saying so) and appends
/// `entries` in one write. Returns the offset and length of the write.
fn append_locked(
    locks: &SessionLock,
    guard: &Guard,
    entries: &RawEntries,
    durability: Durability,
) -> Result<(u64, u64), Failure> {
    let mut transcript = open_transcript(locks, guard)?;
    // The first fenced write would do this by itself; doing it here first
    // lets the user know where the torn bytes went.
    let repaired = transcript
        .repair(guard)
        .map_err(|e| write_failure(e, "cannot check the transcript's final line"))?;
    if let Some(torn) = repaired {
        eprintln!(
            "warning: the transcript ended with a torn line; {}",
            moved(&torn)
        );
    }
    let a = transcript
        .append_raw(guard, entries, durability)
        .map_err(|e| write_failure(e, "cannot append to the transcript"))?;
    Ok((a.offset, a.len))
}

/// A failed fenced write, with a hint when the lock was lost.
fn write_failure(e: Error, what: &str) -> Failure {
    let lost = matches!(e, Error::Revoked { .. } | Error::Fenced { .. });
    let f = Failure::error(anyhow::Error::new(e).context(what.to_owned()));
    if lost {
        f.hint(
            "the lock was lost before the write (held past its lease, or reclaimed by \
             another process); nothing was written, so it is safe to run the command again",
        )
    } else {
        f
    }
}

/// `moved LEN torn bytes at offset OFFSET to PATH` (the path escaped).
fn moved(torn: &TornTail) -> String {
    let mut s = format!("moved {} torn bytes at offset {}", torn.len, torn.offset);
    if let Some(p) = &torn.saved_to {
        s.push_str(&format!(" to {}", output::path(Path::new(p))));
    }
    s
}

/// Validates each `--entry`.
fn entries_from_args(args: &[String]) -> Result<RawEntries, Failure> {
    let mut entries = RawEntries::new();
    for (i, text) in args.iter().enumerate() {
        push_entry(&mut entries, text.as_bytes()).map_err(|e| {
            Failure::error(e.context(format!(
                "invalid JSON in --entry {} of {}",
                i + 1,
                args.len()
            )))
            .hint("each --entry must be exactly one JSON value; nothing was written")
        })?;
    }
    Ok(entries)
}

/// Reads one JSON value per non-empty line of stdin, all of it before
/// anything is written, up to `max_bytes`. Each line is validated without
/// building its value, and kept as given.
fn entries_from_lines(input: impl BufRead, max_bytes: u64) -> Result<RawEntries, Failure> {
    let mut input = input.take(max_bytes + 1);
    let mut entries = RawEntries::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(context("cannot read entries from stdin".to_owned()))?;
        if n == 0 {
            return Ok(entries);
        }
        if input.limit() == 0 {
            return Err(Failure::error(anyhow::anyhow!(
                "the input is larger than {}",
                size(max_bytes)
            ))
            .hint(
                "all entries of one append are held in memory to land with one write; \
                 split the input into several appends",
            ));
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        push_entry(&mut entries, text).map_err(|e| {
            Failure::error(e.context(format!("invalid JSON on line {number} of stdin"))).hint(
                "each non-empty line must be one complete JSON value (compact pretty JSON \
                 with `jq -c`); nothing was written",
            )
        })?;
    }
}

/// `256 MiB`, or bytes when smaller than a MiB.
fn size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Validates one entry (exactly one JSON value, short enough for readers)
/// and adds it to the batch as given.
fn push_entry(entries: &mut RawEntries, text: &[u8]) -> anyhow::Result<()> {
    entries.push(text).map_err(|e| {
        if e.line() == 0 {
            // Not a syntax error: the message says it all.
            return anyhow::anyhow!("{e}");
        }
        // The position is within one entry: say "column", not "line 1".
        let msg = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let msg = msg.strip_suffix(&suffix).unwrap_or(&msg);
        if e.line() <= 1 {
            anyhow::anyhow!("{msg} at column {}", e.column())
        } else {
            anyhow::anyhow!(
                "{msg} at line {} column {} of the entry",
                e.line(),
                e.column()
            )
        }
    })
}

fn run_read(args: ReadArgs) -> Result<ExitCode, Failure> {
    let (_, session) = resolve(&args.session, &args.root, "read", false)?;
    let mut reader = Reader::open(&session).map_err(context(format!(
        "cannot read transcript {}",
        args.session.display()
    )))?;

    let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let mut index = 0usize;
    // Each line is checked, not parsed into a value: memory stays at one
    // line, and the entry is printed exactly as stored.
    while let Some(entry) = reader.next_raw() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                if !flush(&mut out)? {
                    return Ok(ExitCode::SUCCESS);
                }
                let hint = match &e {
                    Error::InvalidEntry { offset, .. } => Some(format!(
                        "the entries before it were printed; look at the line with \
                         `tail -c +{} {} | head -n 1`",
                        offset + 1,
                        shell_word(args.session.as_os_str())
                    )),
                    _ => None,
                };
                let f = Failure::error(e);
                return Err(match hint {
                    Some(h) => f.hint(h),
                    None => f,
                });
            }
        };
        index += 1;
        if index <= args.from {
            continue;
        }
        if let Err(e) = out
            .write_all(entry.json)
            .and_then(|()| out.write_all(b"\n"))
        {
            return stdout_error(e);
        }
    }
    if !flush(&mut out)? {
        return Ok(ExitCode::SUCCESS);
    }
    match reader.torn_tail() {
        None => Ok(ExitCode::SUCCESS),
        Some(torn) => {
            eprintln!(
                "warning: torn final line at byte {} ({} bytes) — run `sessionlock repair {}`",
                torn.offset,
                torn.len,
                shell_word(args.session.as_os_str())
            );
            eprintln!();
            eprintln!(
                "hint: repair takes the session lock, so it waits for a writer that is still \
                 appending; a line such a writer completes is left alone"
            );
            Ok(ExitCode::from(exit::FINDING))
        }
    }
}

/// Flushes stdout; `false` when the reader went away (not an error).
fn flush(out: &mut impl Write) -> Result<bool, Failure> {
    match out.flush() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::error(
            anyhow::Error::new(e).context("cannot write to stdout"),
        )),
    }
}

/// A failed write to stdout: a closed pipe (`| head -1`) ends quietly.
fn stdout_error(e: io::Error) -> Result<ExitCode, Failure> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Failure::error(
            anyhow::Error::new(e).context("cannot write to stdout"),
        ))
    }
}

/// Prints one line of data on stdout.
fn print_line(line: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) => stdout_error(e).map(drop),
    }
}

fn run_repair(args: RepairArgs) -> Result<ExitCode, Failure> {
    let (locks, session) = resolve(&args.session, &args.lock.root, "repair", false)?;
    let guard = lock(
        &locks,
        &session,
        args.session.display(),
        &args.lock,
        busy_hint,
    )?;
    write_locked(
        guard,
        |g| repair_locked(&locks, g),
        |torn| Ok(repaired(torn, "line")),
    )
}

fn repair_locked(locks: &SessionLock, guard: &Guard) -> Result<Option<TornTail>, Failure> {
    open_transcript(locks, guard)?
        .repair(guard)
        .map_err(|e| write_failure(e, "cannot repair the transcript"))
}

/// Resolves `session` for `verb` (`read`, `repair`, `append to`): the lock
/// manager (confined to `--root` if given) and the canonical transcript
/// path. Fails unless a regular file stands there (or, with `missing_ok`,
/// nothing), so that no lock is taken beside a FIFO, a device or a
/// directory, `read` never blocks on or reads nothing from a FIFO, and
/// `read` and `repair` do not treat a mistyped path as an empty transcript.
fn resolve(
    session: &Path,
    root: &RootArg,
    verb: &str,
    missing_ok: bool,
) -> Result<(SessionLock, PathBuf), Failure> {
    let what = || format!("cannot {verb} transcript {}", session.display());
    let locks = root.session_lock().map_err(context(what()))?;
    // Look at the path as given first: the key would create a missing
    // directory, and its errors say less about a loop or a typo.
    match std::fs::metadata(session) {
        Ok(m) if !m.is_file() => return Err(not_a_transcript(session, verb, &m)),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound && missing_ok => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(context(what())(e)
                .hint("check the path; `sessionlock append SESSION_FILE` creates a transcript"))
        }
        Err(e) => return Err(context(what())(e)),
    }
    let key = locks.backend().key(session).map_err(|e| {
        let confined = matches!(&e, Error::InvalidPath { .. }) && root.root.is_some();
        let f = context(what())(e);
        if confined {
            f.hint("the session file must resolve inside the --root directory; a symlink pointing out of it is refused")
        } else {
            f
        }
    })?;
    // The resolved file, which the lock and every write go to.
    match std::fs::symlink_metadata(&key.session) {
        Ok(m) if !m.is_file() => Err(not_a_transcript(&key.session, verb, &m)),
        Ok(_) => Ok((locks, key.session)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && missing_ok => Ok((locks, key.session)),
        Err(e) => Err(context(what())(e)),
    }
}

/// Something other than a regular file where a transcript belongs.
fn not_a_transcript(path: &Path, verb: &str, m: &std::fs::Metadata) -> Failure {
    let ft = m.file_type();
    let what = sessionlock::fs::kind_of(ft);
    let f = Failure::error(anyhow::anyhow!(
        "cannot {verb} transcript {}: it is {what}, not a regular file",
        path.display()
    ));
    if ft.is_dir() {
        f.hint("pass the session's `.jsonl` file; `sessionlock status DIR` lists the sessions with locks")
    } else {
        f.hint("a transcript is a regular file; nothing was read, locked or written")
    }
}

/// Takes the lock of `session` (`shown` as the user named it), waiting as
/// `args` say. Someone else holding it is a finding (exit 1), with the hint
/// `busy` gives (where to see the holder).
fn lock<B: LockBackend>(
    locks: &SessionLock<B>,
    session: impl AsRef<B::Name>,
    shown: impl std::fmt::Display,
    args: &LockArgs,
    busy: impl FnOnce(&Error) -> String,
) -> Result<Guard<B>, Failure> {
    let mut opts = locks.options().clone().lane(args.lane.clone());
    if let Some(Budget(t)) = args.timeout_ms {
        opts = opts.timeout(t);
    }
    match locks.acquire_with(session, &opts) {
        Ok(g) => Ok(g),
        Err(e @ (Error::Timeout { .. } | Error::Stale { .. })) => {
            let hint = busy(&e);
            Err(Failure {
                err: anyhow::Error::new(e),
                hint: Some(hint),
                code: exit::FINDING,
            })
        }
        Err(e) => Err(context(format!("cannot lock session {shown}"))(e)),
    }
}

// ------------------------------------------------------------ on PostgreSQL

/// The lock manager on the server, or why not (exit 2).
fn pg_manager(url: &str) -> Result<SessionLock<PgBackend>, Failure> {
    pg_locks(url).map_err(Failure::error)
}

/// The session key from the session argument, or why not (exit 2).
fn pg_session(session: &Path, root: &RootArg) -> Result<String, Failure> {
    pg_key(session, root).map_err(Failure::error)
}

/// Opens the transcript of `key` on the server.
fn pg_store(locks: &SessionLock<PgBackend>, key: &str) -> Result<PgStore, Failure> {
    let what = || format!("cannot open transcript {key}");
    let k = locks.backend().key_of(key).map_err(context(what()))?;
    block_on(locks.backend().open_store(&k)).map_err(context(what()))
}

/// Takes the lock of `key` on the server; someone else holding it is a
/// finding (exit 1).
fn pg_lock(
    locks: &SessionLock<PgBackend>,
    key: &str,
    args: &LockArgs,
    backend: &BackendChoice,
) -> Result<Guard<PgBackend>, Failure> {
    lock(locks, key, key, args, |_| {
        format!(
            "run `{}` to see the holder",
            pg_status_command(backend, key)
        )
    })
}

fn pg_append(args: AppendArgs, url: &str, backend: &BackendChoice) -> Result<ExitCode, Failure> {
    let key = pg_session(&args.session, &args.lock.root)?;
    let entries = input_entries(&args)?;
    let locks = pg_manager(url)?;
    let mut store = pg_store(&locks, &key)?;
    let guard = pg_lock(&locks, &key, &args.lock, backend)?;
    let epoch = guard.epoch();
    write_locked(
        guard,
        |g| {
            block_on(g.store_append(&mut store, &entries, args.durability.into()))
                .map_err(|e| write_failure(e, "cannot append to the transcript"))
        },
        // As for files: `offset` is where the batch starts in the
        // transcript as JSONL, in bytes; the bytes are those of the batch.
        |a| {
            appended(
                &args,
                &entries,
                a.offset,
                entries.as_bytes().len() as u64,
                epoch,
            )
        },
    )
}

fn pg_read(args: ReadArgs, url: &str, backend: &BackendChoice) -> Result<ExitCode, Failure> {
    let key = pg_session(&args.session, &args.root)?;
    let locks = pg_manager(url)?;
    let store = pg_store(&locks, &key)?;
    let read = block_on(store.read()).map_err(context(format!("cannot read transcript {key}")))?;
    let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    for value in read.entries.iter().skip(args.from) {
        let line =
            serde_json::to_string(value).map_err(context("cannot format an entry".to_owned()))?;
        if let Err(e) = out
            .write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
        {
            return stdout_error(e);
        }
    }
    if !flush(&mut out)? {
        return Ok(ExitCode::SUCCESS);
    }
    match read.torn {
        None => Ok(ExitCode::SUCCESS),
        Some(torn) => {
            eprintln!(
                "warning: torn final entry at {} ({} bytes) — run `{}`",
                torn.offset,
                torn.len,
                pg_status_command(backend, &key).replacen(" status ", " repair ", 1)
            );
            Ok(ExitCode::from(exit::FINDING))
        }
    }
}

fn pg_repair(args: RepairArgs, url: &str) -> Result<ExitCode, Failure> {
    let key = pg_session(&args.session, &args.lock.root)?;
    let backend = BackendChoice::Postgres(url.to_owned());
    let locks = pg_manager(url)?;
    let mut store = pg_store(&locks, &key)?;
    let guard = pg_lock(&locks, &key, &args.lock, &backend)?;
    write_locked(
        guard,
        |g| {
            block_on(g.store_repair(&mut store))
                .map_err(|e| write_failure(e, "cannot repair the transcript"))
        },
        |torn| Ok(repaired(torn, "entry")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(lines: &[&str]) -> RawEntries {
        let mut b = RawEntries::new();
        for l in lines {
            b.push(l.as_bytes()).expect("valid entry");
        }
        b
    }

    #[test]
    fn stdin_lines_are_entries_and_blank_lines_are_skipped() {
        let input: &[u8] = b"{\"a\":1}\n\n \t\r\n[2]\r\n3";
        let entries = entries_from_lines(input, 1024).unwrap_or_else(|f| panic!("{:#}", f.err));
        assert_eq!(entries, batch(&["{\"a\":1}", "[2]", "3"]));
        assert_eq!(entries.as_bytes(), b"{\"a\":1}\n[2]\n3\n");
    }

    #[test]
    fn entries_keep_their_bytes() {
        // Issue 9 item 4: entries are validated, not re-serialized, so the
        // transcript gets the caller's number spelling and key order.
        let input: &[u8] = b"{\"b\":1.50,\"a\":1e3}\n  [0.10, -0]  \n";
        let entries = entries_from_lines(input, 1024).unwrap_or_else(|f| panic!("{:#}", f.err));
        assert_eq!(entries.as_bytes(), b"{\"b\":1.50,\"a\":1e3}\n[0.10, -0]\n");
        // Line breaks inside an --entry are layout only.
        let entries = entries_from_args(&["{\n  \"a\": 1.50\n}".to_owned()])
            .unwrap_or_else(|f| panic!("{:#}", f.err));
        assert_eq!(entries.as_bytes(), b"{   \"a\": 1.50 }\n");
    }

    #[test]
    fn input_over_the_cap_is_refused_and_input_at_the_cap_is_not() {
        let input: &[u8] = b"1\n2\n3\n";
        assert_eq!(entries_from_lines(input, 6).ok().map(|e| e.len()), Some(3));
        let Err(f) = entries_from_lines(input, 5) else {
            panic!("6 bytes of input passed a 5-byte cap");
        };
        assert_eq!(f.err.to_string(), "the input is larger than 5 bytes");
        assert_eq!(f.code, 2);
    }

    #[test]
    fn an_invalid_line_is_named_by_its_number() {
        let input: &[u8] = b"1\n\n{\"a\"\n";
        let Err(f) = entries_from_lines(input, 1024) else {
            panic!("an invalid line was accepted");
        };
        assert_eq!(f.err.to_string(), "invalid JSON on line 3 of stdin");
        assert_eq!(
            f.err.root_cause().to_string(),
            "EOF while parsing an object at column 4"
        );
    }

    #[test]
    fn an_entry_is_exactly_one_value() {
        let mut b = RawEntries::new();
        assert!(push_entry(&mut b, b" {\"a\": [1, 2]} ").is_ok());
        assert!(push_entry(&mut b, b"1 2").is_err());
        assert!(push_entry(&mut b, b"").is_err());
        assert_eq!(b.len(), 1);
    }
}
