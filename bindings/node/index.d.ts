// Type declarations of the `sessionlock` Node.js package, written by hand
// and checked against index.js (test/types.test.mjs). Every promise-returning
// function runs its work off the JavaScript thread.

/**
 * Options of one acquisition. Values given here win; unset values come from
 * the environment, then the defaults:
 *
 * | option | default | environment |
 * |---|---|---|
 * | `timeoutMs` | 60 000 | `SESSIONLOCK_ACQUIRE_TIMEOUT_MS` (or `OPENCLAW_SESSION_WRITE_LOCK_ACQUIRE_TIMEOUT_MS`) |
 * | `maxHoldMs` | 300 000 | `SESSIONLOCK_MAX_HOLD_MS` (or `OPENCLAW_SESSION_WRITE_LOCK_MAX_HOLD_MS`) |
 * | `staleMs` | 1 800 000 | `SESSIONLOCK_STALE_MS` (or `OPENCLAW_SESSION_WRITE_LOCK_STALE_MS`) |
 * | `holdExceeded` | `"reclaim"` | `SESSIONLOCK_HOLD_EXCEEDED` |
 * | `openclawCompat` | `false` | `SESSIONLOCK_OPENCLAW_COMPAT=1` |
 * | `backend` | `"file"` | `SESSIONLOCK_BACKEND` |
 */
export interface LockOptions {
  /** Budget of the whole acquire in milliseconds; `Infinity` waits forever. */
  timeoutMs?: number;
  /**
   * The lease in milliseconds: the watchdog revokes the lock this long after
   * it was taken (or last extended), and other processes may reclaim it then.
   */
  maxHoldMs?: number;
  /** Age in milliseconds after which a lock is reported `too-old` (never acted on). */
  staleMs?: number;
  /** Diagnostic lane label (`channel`, `heartbeat`, …), shown by `status`. */
  lane?: string;
  /** Diagnostic run id, shown by `status`. */
  runId?: string;
  /**
   * Acquiring a session this process already holds succeeds at once and
   * shares the acquisition (off by default: it then waits like anyone else).
   */
  reentrant?: boolean;
  /** What to do when a live holder is past its lease: reclaim it (fenced) or fail with `SESSIONLOCK_STALE`. */
  holdExceeded?: 'reclaim' | 'report';
  /** Write lock files that OpenClaw processes sharing the directory can read and honour (docs/design.md §14). */
  openclawCompat?: boolean;
  /**
   * `"file"` (lock files beside the transcripts) or a `postgres://` URL. On
   * PostgreSQL the session name is the key, as given.
   */
  backend?: string;
}

/** Options of {@link acquire}. */
export interface AcquireOptions extends LockOptions {
  /**
   * Aborting it ends the wait: the promise rejects with a
   * {@link SessionLockCancelledError} named `AbortError` (its `cause` is the
   * signal's reason) and nothing stays queued.
   */
  signal?: AbortSignal;
}

/** A holder of a lock, as errors, `status` and {@link Lock.holder} describe it. */
export interface Holder {
  /** The lock file (or, on PostgreSQL, the key's locator). */
  lockPath: string;
  /** The path's bytes in hexadecimal, only when they are not UTF-8. */
  lockPathHex?: string;
  pid: number | null;
  hostname: string | null;
  /** Whether the holder is alive as far as this machine can tell. */
  alive: boolean;
  lane: string | null;
  runId: string | null;
  /** Milliseconds since the holder took or last extended the lock. */
  ageMs: number | null;
  maxHoldMs: number | null;
  epoch: number | null;
  /** `sessionlock`, or `null` for OpenClaw's locks. */
  owner: string | null;
  /** Why the lock looks stale, e.g. `dead-pid`, `hold-exceeded`. */
  reasons: string[];
  /**
   * What the named process holds when it is not the lock's holder but in the
   * way of an acquisition: `state-lock` (the session's state lock: it is
   * stuck inside a protocol step) or `first-in-line` (the first place in the
   * session's line of waiters). Absent for the lock's holder.
   */
  holds?: 'state-lock' | 'first-in-line';
  /** `true` when the named process was seen stopped (SIGSTOP, a debugger); absent otherwise. */
  stopped?: true;
}

/**
 * A held session lock. Release it with {@link Lock.release} (or `await
 * using`); one that is forgotten is released when it is garbage-collected or
 * when its thread or process exits normally. A process killed with SIGKILL
 * leaves a lock the next acquirer reclaims at once.
 */
export declare class Lock {
  private constructor();
  /** This acquisition's fencing epoch (strictly increasing per session). */
  readonly epoch: number;
  /** The epoch as a decimal string. */
  readonly epochString: string;
  /** The session: the canonical transcript path (the key on PostgreSQL). */
  readonly sessionFile: string;
  /** Same as {@link Lock.sessionFile}. */
  readonly session: string;
  /** Where the lock lives: the lock file, or the key's locator on PostgreSQL. */
  readonly lockPath: string;
  /** This process as the holder; `null` once released. */
  readonly holder: Holder | null;
  /** Whether the lock was revoked: held past its lease (watchdog), or removed or replaced by someone else. */
  readonly isRevoked: boolean;
  /** Whether {@link Lock.release} was called. */
  readonly isReleased: boolean;
  /**
   * Resolves, with the error a fenced write would now get
   * ({@link SessionLockRevokedError} or {@link SessionLockFencedError}), as
   * soon as this lock no longer owns the session; never, if it is released
   * first. Woken by the backend's change notifications, not by polling.
   * Watching does not keep the process alive by itself: await it beside the
   * work it guards (`Promise.race([work, lock.revoked])`).
   */
  readonly revoked: Promise<SessionLockError>;
  /**
   * Checks that the lock still owns the session.
   * @throws {SessionLockRevokedError | SessionLockFencedError} when it does not.
   */
  check(): Promise<void>;
  /**
   * Runs `fn` only while this lock's epoch is current: reclaims and
   * revocations of the lock wait until the promise `fn` returns settles, so no
   * write of a stale epoch lands after a newer epoch exists. Keep `fn` short.
   * Inside `fn` (and what it awaits), `check()` and a nested `withFence` of
   * this lock run at once; `extend`, `release` and the transcript's writes
   * with this lock are refused ({@link SessionLockMisuseError}): the
   * transcript's writes are fenced already.
   * @throws {SessionLockRevokedError | SessionLockFencedError} and `fn` does not run.
   */
  withFence<T>(fn: () => T | PromiseLike<T>): Promise<T>;
  /**
   * Extends the lease by `ms` (default: the acquisition's `maxHoldMs`) from
   * now. Nothing extends a lease in the background.
   */
  extend(ms?: number): Promise<void>;
  /**
   * Releases the lock, after the operations of this lock still in flight.
   * Calling it again does nothing. A lock file with nothing in flight and
   * no waiter of this process is removed at once (a few system calls that
   * never wait); anything else finishes off the JavaScript thread.
   * @throws {SessionLockRevokedError} when the lock was no longer ours (what was left of it is released);
   * a lock sharing its acquisition with others (`reentrant`) throws it when the acquisition is already
   * known to have lost its lock, and only the last of them releases the lock file.
   * @throws {SessionLockIoError} when the lock file cannot be removed (it stays reclaimable).
   */
  release(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
  /** What `JSON.stringify` and `console.log` show of the lock. */
  toJSON(): { session: string; lockPath: string; epoch: number; released: boolean; revoked: boolean };
}

/**
 * Acquires the session write lock of `sessionFile` (a transcript path; on
 * PostgreSQL, the session key). Waits are event-driven: a release, the
 * holder's death and its lease end wake the waiter, and run off the
 * JavaScript thread; a free lock file is taken at once (a few system calls
 * that never wait).
 *
 * @throws {SessionLockTimeoutError} naming the holder when `timeoutMs` runs out.
 * @throws {SessionLockStaleError} when a live holder is past its lease and `holdExceeded` is `report`.
 * @throws {SessionLockCancelledError} (name `AbortError`) when `signal` aborts.
 * @throws {SessionLockInvalidPathError | SessionLockIoError | SessionLockBackendError}
 */
export declare function acquire(sessionFile: string, options?: AcquireOptions): Promise<Lock>;

/** How many acquisitions of this process wait for `sessionFile` now. */
export declare function queued(sessionFile: string, options?: { backend?: string }): Promise<number>;

/** Durability of a transcript write. */
export interface WriteOptions {
  /** `none` (page cache; the default), `data` (`fdatasync`) or `full` (`fsync`, and the directory's). */
  durability?: 'none' | 'data' | 'full';
}

/** Where an append landed, in bytes of the transcript as JSONL. */
export interface Appended {
  offset: number;
  len: number;
}

/** A final line without `\n`, left by a crash in the middle of a write. */
export interface TornTail {
  offset: number;
  len: number;
  /** Where a repair set the torn bytes aside (`<session>.torn-<epoch>`), if it did. */
  savedTo: string | null;
}

/** A transcript and its torn tail, if any. */
export interface TranscriptContents {
  entries: unknown[];
  torn: TornTail | null;
}

/**
 * A session transcript: one JSON value per line. Its writes take the
 * session's {@link Lock} (same session, same backend) and land only while it
 * owns the session, whole or not at all; the first write after a crash sets a
 * torn final line aside first.
 */
export declare class Transcript {
  private constructor();
  /** Opens the transcript of `sessionFile` (created on the first write). */
  static open(sessionFile: string, options?: { backend?: string }): Promise<Transcript>;
  /** The canonical session file (the key on PostgreSQL). */
  readonly session: string;
  /** Appends `entries` in one write. */
  append(lock: Lock, entries: unknown[], options?: WriteOptions): Promise<Appended>;
  /** Replaces the whole transcript with `entries`. */
  rewrite(lock: Lock, entries: unknown[]): Promise<void>;
  /** Keeps the first `keep` entries. */
  truncate(lock: Lock, keep: number): Promise<void>;
  /** Sets a torn final line aside; `null` when there was none. */
  repair(lock: Lock): Promise<TornTail | null>;
  /** Every complete entry, and the torn tail. */
  readAll(): Promise<TranscriptContents>;
  /** The complete entries, in order: `for await (const entry of transcript.read())`. */
  read(): AsyncIterableIterator<unknown>;
  [Symbol.asyncIterator](): AsyncIterableIterator<unknown>;
}

/** Classifiers of foreign appends an {@link Attempt} can use, by name. */
export declare const classifiers: {
  /** Every entry someone else appends is a takeover (the default). */
  readonly acceptNothing: 'accept-nothing';
  /** OpenClaw's transcript-only assistant messages (delivery mirrors, gateway injections) are benign. */
  readonly openclaw: 'openclaw';
};

/** Options of {@link Attempt.begin}: the lock's, and the attempt's own. */
export interface AttemptOptions extends LockOptions {
  /** Which foreign appends are benign: a name from {@link classifiers}. */
  classifier?: 'accept-nothing' | 'openclaw';
  /** Let this process's attempts on one session overlap (only their prompt windows are serialized). */
  overlap?: boolean;
  /** Budget in ms of the wait for this process's other attempt on the session (`Infinity`: forever; default 300 000). */
  ownerTimeoutMs?: number;
}

/** Foreign entries an attempt accepted while it had released its lock. */
export interface Resync {
  entries: unknown[];
  /** The bytes of the transcript they occupy: `[start, end)`. */
  range: [number, number];
}

/**
 * One agent turn on a session (docs/design.md §8): holds the lock except while the
 * model is called, and detects, before its next write, any change to the
 * transcript it cannot accept (a takeover, sticky).
 */
export declare class Attempt {
  private constructor();
  /**
   * Waits for this process's other attempt on the session (unless `overlap`),
   * acquires the lock and opens the transcript.
   * @throws {SessionLockBusyError | SessionLockTimeoutError}
   */
  static begin(sessionFile: string, options?: AttemptOptions): Promise<Attempt>;
  readonly sessionFile: string;
  readonly session: string;
  readonly state: 'held' | 'released' | 'cleanup' | 'taken-over' | 'disposed';
  /** The kind of the first abort, or `null`. */
  readonly aborted: 'user' | 'timeout' | 'stuck' | 'yield' | null;
  readonly isTakenOver: boolean;
  /** Where and why a takeover was detected, or `null`. */
  readonly takeover: { phase: string; reason: string } | null;
  /** Records model output for the stuck detector. */
  progress(): void;
  /** Snapshots the transcript and releases the lock for the model call. */
  releaseForPrompt(): Promise<void>;
  /**
   * Reacquires after the model call and checks the transcript.
   * @throws {SessionLockTakeoverError} when someone changed it in a way the classifier does not accept.
   */
  reacquireAfterPrompt(): Promise<Resync>;
  /** Appends entries (checked and fenced). */
  append(entries: unknown[], options?: WriteOptions): Promise<Appended>;
  rewrite(entries: unknown[]): Promise<void>;
  truncate(keep: number): Promise<void>;
  read(): Promise<TranscriptContents>;
  /**
   * Aborts the attempt (default `user`): it stops, and its lock is released
   * at once, before its cleanup runs. Resolves once that is done (the
   * release may wait, so it runs off the JavaScript thread).
   */
  abort(kind?: 'user' | 'timeout' | 'stuck' | 'yield'): Promise<void>;
  /** Takes the lock for cleanup: `held`, or `noop` after a takeover (writes are then skipped). */
  acquireForCleanup(): Promise<'held' | 'noop'>;
  /**
   * Releases whatever the attempt holds; later calls find it disposed.
   * @throws {SessionLockTakeoverError} when the transcript was changed under the held lock after the last write (the lock goes all the same).
   */
  dispose(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** One lock in {@link status}'s report: the fields of `sessionlock status --json`. */
export interface LockStatus extends Holder {
  session: string;
  sessionHex?: string;
  /** `alive`, `remote`, `dead`, `recycled` or `unknown`. */
  liveness: string;
  /** Time left on the lease in ms: 0 when past it, `null` when unknown or the holder is gone. */
  leaseLeftMs: number | null;
  /** What a contender would do now. */
  action: 'wait' | 'reclaim' | 'report';
  /** Why OpenClaw would delete this holder's lock, or `null`. */
  openclawExposure: 'unmarked-argv' | 'unreadable' | null;
  /** The processes waiting for this session, in arrival order (`[]` when none). */
  queue?: Waiter[];
  [field: string]: unknown;
}

/** A process waiting for a session, as `status` shows it (fields it did not record are `null`). */
export interface Waiter {
  pid: number | null;
  hostname: string | null;
  lane: string | null;
  runId: string | null;
  /** When it started waiting, ISO 8601 UTC (its own clock). */
  since: string | null;
  waitedMs: number | null;
  /** When it gives up, ISO 8601 UTC, or `null` for never. */
  deadline: string | null;
  /** Whether the process is stopped (SIGSTOP, a debugger). */
  stopped: boolean | null;
  [field: string]: unknown;
}

/** A lock `status` could not read. */
export interface LockStatusError {
  lockPath: string | null;
  lockPathHex?: string;
  error: string;
}

/** `sessionlock status --json`'s report (see docs/cli.md for every field). */
export interface StatusReport {
  /** The schema version (1): bumped on an incompatible change, not when fields are added. */
  version: number;
  /** Every lock, and the locks that could not be read. */
  locks: Array<LockStatus | LockStatusError>;
  /** Directories that could not be listed (always empty here: `status` rejects instead). */
  errors: Array<{ path: string; error: string }>;
}

/**
 * Every lock under `dirs`, as `sessionlock status --json` prints it.
 * @throws {SessionLockIoError} naming a directory that cannot be listed.
 */
export declare function status(dirs: string | string[]): Promise<StatusReport>;

/** `sessionlock doctor --json`'s report (see docs/cli.md for every field). */
export interface DoctorReport {
  /** The schema version (1): bumped on an incompatible change, not when fields are added. */
  version: number;
  dirs: string[];
  findings: Array<Record<string, unknown>>;
  fixed: Array<Record<string, unknown>>;
  errors: Array<{ path: string; error: string }>;
  openclawExposure: Array<{ lockPath: string; reason: string }>;
  summary: Record<string, number> & { exitCode: number; needAttention: number };
}

/**
 * Explains every lock, transcript tail and leftover under `dirs`; with `fix`,
 * removes what is safe to remove (never a live holder within its lease) and
 * repairs torn tails; `force` also reclaims live holders past their lease.
 */
export declare function doctor(dirs: string | string[], options?: { fix?: boolean; force?: boolean }): Promise<DoctorReport>;

// ---------------------------------------------------------------------------
// Metrics.

/** The labels of one series: `backend` (`file`, `postgres`), and per metric `lane`, `outcome`, `end`, `reason`, `cause`, `error`, `kind`. Never a session. */
export type MetricLabels = Record<string, string>;

/** A counter's or a gauge's series: its labels and its value. */
export interface MetricValue {
  labels: MetricLabels;
  value: number;
}

/** A histogram's series: how many values were recorded and their sum (seconds). */
export interface MetricHistogram {
  labels: MetricLabels;
  count: number;
  sum: number;
}

/**
 * The library's metrics of this process (docs/design.md §20.1), by name:
 * every metric of the library is a key (its list is empty until it is
 * recorded), each series once, sorted by labels. Counters count from the
 * module's load.
 */
export interface MetricsSnapshot {
  /**
   * `sessionlock_handoffs_total`, `sessionlock_reclaims_total`,
   * `sessionlock_revocations_total`, `sessionlock_fenced_writes_refused_total`,
   * `sessionlock_takeovers_total`, `sessionlock_transcript_appends_total`,
   * `sessionlock_transcript_entries_total`, `sessionlock_transcript_bytes_total`,
   * `sessionlock_torn_tails_repaired_total`.
   */
  counters: Record<string, MetricValue[]>;
  /** `sessionlock_waiters`: acquisitions of this process waiting now. */
  gauges: Record<string, MetricValue[]>;
  /** `sessionlock_acquire_wait_seconds`, `sessionlock_hold_seconds`. */
  histograms: Record<string, MetricHistogram[]>;
}

/**
 * The library's metrics of this process, as a plain object: the figures an
 * in-process Prometheus exporter would serve, under the same names and
 * labels (`sessionlock serve-metrics` serves them for a whole directory).
 * Synchronous and cheap: read them as often as you like.
 */
export declare function metrics(): MetricsSnapshot;

// ---------------------------------------------------------------------------
// Errors. `code` is stable; messages may be reworded.

/** Base class of sessionlock's errors. */
export declare class SessionLockError extends Error {
  /** `SESSIONLOCK_TIMEOUT`, `SESSIONLOCK_STALE`, `SESSIONLOCK_REVOKED`, … */
  readonly code: string;
  /** The library's code: `timeout`, `stale`, `revoked`, … */
  readonly kind: string;
  /** The holder the error names (`TIMEOUT`, `BUSY`, `STALE`), else `null`. */
  readonly holder: Holder | null;
  /** The file concerned, where there is one. */
  readonly path?: string;
  /** Further fields of the error kind (`timeoutMs`, `epoch`, `currentEpoch`, `lossCause`, `phase`, `reason`, `errno`, …). */
  readonly [field: string]: unknown;
}
/** `SESSIONLOCK_TIMEOUT`: the acquire budget ran out; `holder` names the holder. */
export declare class SessionLockTimeoutError extends SessionLockError { readonly timeoutMs: number; }
/** `SESSIONLOCK_BUSY`: this process's other attempt kept the session past `ownerTimeoutMs`. */
export declare class SessionLockBusyError extends SessionLockError {}
/** `SESSIONLOCK_STALE`: a live holder is past its lease and the policy is `report`. */
export declare class SessionLockStaleError extends SessionLockError { readonly staleReasons: string[]; }
/** `SESSIONLOCK_REVOKED`: the lock was revoked, or removed or replaced by someone else. */
export declare class SessionLockRevokedError extends SessionLockError {
  readonly epoch: number;
  readonly currentEpoch: number;
  /** How the lock was lost: `overdue` (held past its lease), `removed`, `replaced`, `connection_lost`. */
  readonly lossCause: string;
}
/** `SESSIONLOCK_FENCED`: a newer epoch exists; nothing was written. */
export declare class SessionLockFencedError extends SessionLockError { readonly epoch: number; readonly currentEpoch: number; }
/** `SESSIONLOCK_POISONED`: an earlier write error left the handle unusable. */
export declare class SessionLockPoisonedError extends SessionLockError {}
/** `SESSIONLOCK_TAKEOVER`: the transcript changed while the attempt had released its lock. */
export declare class SessionLockTakeoverError extends SessionLockError { readonly phase: string; readonly reason: string; }
/** `SESSIONLOCK_CANCELLED`: the wait was cancelled (named `AbortError` when an AbortSignal did it). */
export declare class SessionLockCancelledError extends SessionLockError {}
/** `SESSIONLOCK_MISUSE`: a call that cannot work where it was made. */
export declare class SessionLockMisuseError extends SessionLockError {}
/** `SESSIONLOCK_INVALID_ENTRY`: a transcript line is not JSON. */
export declare class SessionLockInvalidEntryError extends SessionLockError {}
/** `SESSIONLOCK_IO`: a system call failed (`path`, `op`, `errno`). */
export declare class SessionLockIoError extends SessionLockError {}
/** `SESSIONLOCK_EPOCH_EXHAUSTED`: the session's epoch reached its maximum. */
export declare class SessionLockEpochExhaustedError extends SessionLockError {}
/** `SESSIONLOCK_INVALID_PATH`: a symlink or non-regular file where a lock or transcript belongs. */
export declare class SessionLockInvalidPathError extends SessionLockError {}
/** `SESSIONLOCK_BACKEND`: the backend (PostgreSQL) failed or refused. */
export declare class SessionLockBackendError extends SessionLockError {}
/** `SESSIONLOCK_PANIC`: a bug in sessionlock; the call failed, the process goes on. */
export declare class SessionLockPanicError extends SessionLockError {}

// ---------------------------------------------------------------------------
// The OpenClaw drop-in.

/** OpenClaw's `acquireSessionWriteLock` parameters, plus sessionlock's. */
export interface SessionWriteLockParams {
  sessionFile: string;
  timeoutMs?: number;
  staleMs?: number;
  maxHoldMs?: number;
  allowReentrant?: boolean;
  holdExceeded?: 'reclaim' | 'report';
  openclawCompat?: boolean;
  lane?: string;
  runId?: string;
  backend?: string;
  signal?: AbortSignal;
}

/**
 * A drop-in for OpenClaw's `acquireSessionWriteLock`: same parameters, same
 * result (`{ release() }`), same error classes, codes and messages; the lock
 * is sessionlock's (fenced, event-driven, reclaimed at lease end). `lock` is
 * the underlying {@link Lock}, for fenced writes.
 * @throws {SessionWriteLockTimeoutError} code `OPENCLAW_SESSION_WRITE_LOCK_TIMEOUT`.
 * @throws {SessionWriteLockStaleError} code `OPENCLAW_SESSION_WRITE_LOCK_STALE` (policy `report`).
 */
export declare function acquireSessionWriteLock(params: SessionWriteLockParams): Promise<{ release(): Promise<void>; lock: Lock }>;

/** OpenClaw's timeout error: `session file locked (timeout Nms): pid=… alive=… ageMs=… <lock path>`. */
export declare class SessionWriteLockTimeoutError extends Error {
  readonly code: 'OPENCLAW_SESSION_WRITE_LOCK_TIMEOUT';
  readonly timeoutMs: number;
  readonly owner: string;
  readonly lockPath: string;
  /** The {@link SessionLockTimeoutError} behind it. */
  readonly cause: SessionLockTimeoutError;
}
/** OpenClaw's stale error: `session file lock stale (<reasons>): <owner> <lock path>`. */
export declare class SessionWriteLockStaleError extends Error {
  readonly code: 'OPENCLAW_SESSION_WRITE_LOCK_STALE';
  readonly owner: string;
  readonly lockPath: string;
  readonly staleReasons: string[];
  readonly cause: SessionLockStaleError;
}
export declare function isSessionWriteLockTimeoutError(err: unknown): err is SessionWriteLockTimeoutError;
export declare function isSessionWriteLockStaleError(err: unknown): err is SessionWriteLockStaleError;
export declare function isSessionWriteLockAcquireError(err: unknown): err is SessionWriteLockTimeoutError | SessionWriteLockStaleError;
