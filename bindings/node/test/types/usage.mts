// Type-checked (never run) by test/types.test.mjs with `tsc --noEmit
// --strict`: a use of every declaration of index.d.ts, through the
// package's own name and its `exports` map, as a TypeScript ESM consumer
// writes it. Lines marked @ts-expect-error must stay errors.
import sessionlock, {
  acquire,
  acquireSessionWriteLock,
  Attempt,
  classifiers,
  doctor,
  isSessionWriteLockAcquireError,
  isSessionWriteLockStaleError,
  isSessionWriteLockTimeoutError,
  Lock,
  metrics,
  queued,
  SessionLockBackendError,
  SessionLockBusyError,
  SessionLockCancelledError,
  SessionLockEpochExhaustedError,
  SessionLockError,
  SessionLockFencedError,
  SessionLockInvalidEntryError,
  SessionLockInvalidPathError,
  SessionLockIoError,
  SessionLockMisuseError,
  SessionLockPanicError,
  SessionLockPoisonedError,
  SessionLockRevokedError,
  SessionLockStaleError,
  SessionLockTakeoverError,
  SessionLockTimeoutError,
  SessionWriteLockStaleError,
  SessionWriteLockTimeoutError,
  status,
  Transcript,
} from 'sessionlock';
import type {
  AcquireOptions,
  Appended,
  AttemptOptions,
  DoctorReport,
  Holder,
  LockOptions,
  LockStatus,
  LockStatusError,
  MetricHistogram,
  MetricLabels,
  MetricsSnapshot,
  MetricValue,
  StatusReport,
  Resync,
  SessionWriteLockParams,
  TornTail,
  TranscriptContents,
  WriteOptions,
} from 'sessionlock';

const session = '/tmp/s.jsonl';

// acquire, with every option.
const lockOptions: LockOptions = {
  timeoutMs: Infinity,
  maxHoldMs: 300_000,
  staleMs: 1_800_000,
  lane: 'channel',
  runId: 'run-1',
  reentrant: false,
  holdExceeded: 'report',
  openclawCompat: true,
  backend: 'postgres://localhost/db',
};
const options: AcquireOptions = { ...lockOptions, holdExceeded: 'reclaim', signal: AbortSignal.timeout(1000) };
const lock: Lock = await acquire(session, options);
await acquire(session);
// @ts-expect-error: holdExceeded is 'reclaim' | 'report'
await acquire(session, { holdExceeded: 'steal' });
// @ts-expect-error: Lock has no public constructor
new Lock();

// Lock members.
const epoch: number = lock.epoch;
const epochString: string = lock.epochString;
const files: string[] = [lock.sessionFile, lock.session, lock.lockPath];
const holder: Holder | null = lock.holder;
if (holder) {
  const pid: number | null = holder.pid;
  const reasons: string[] = holder.reasons;
  const fields: [string, string | undefined, string | null, boolean, string | null, string | null] = [
    holder.lockPath, holder.lockPathHex, holder.hostname, holder.alive, holder.lane, holder.runId,
  ];
  const numbers: Array<number | null> = [holder.ageMs, holder.maxHoldMs, holder.epoch, pid];
  const owner: string | null = holder.owner;
  void [reasons, fields, numbers, owner];
}
const flags: boolean[] = [lock.isRevoked, lock.isReleased];
const lost: SessionLockError = await lock.revoked;
await lock.check();
const fenced: number = await lock.withFence(() => 42);
const fencedAsync: string = await lock.withFence(async () => 'written');
await lock.extend();
await lock.extend(60_000);
await lock.release();
await lock[Symbol.asyncDispose]();
{
  await using held = await acquire(session, { timeoutMs: 5000 });
  void held.epoch;
}
const n: number = await queued(session, { backend: 'file' });
await queued(session);

// Transcript.
const transcript: Transcript = await Transcript.open(session, { backend: 'file' });
const write: WriteOptions = { durability: 'full' };
const appended: Appended = await transcript.append(lock, [{ role: 'user' }], write);
await transcript.append(lock, ['text'], { durability: 'data' });
await transcript.append(lock, [1, 2, 3]);
// @ts-expect-error: durability is 'none' | 'data' | 'full'
await transcript.append(lock, [], { durability: 'sometimes' });
await transcript.rewrite(lock, []);
await transcript.truncate(lock, 1);
const torn: TornTail | null = await transcript.repair(lock);
const contents: TranscriptContents = await transcript.readAll();
const tornTail: TornTail | null = contents.torn;
const savedTo: string | null | undefined = tornTail?.savedTo;
for await (const entry of transcript.read()) void (entry satisfies unknown);
for await (const entry of transcript) void entry;
const transcriptSession: string = transcript.session;

// Attempt.
const attemptOptions: AttemptOptions = {
  ...lockOptions,
  classifier: classifiers.openclaw,
  overlap: true,
  ownerTimeoutMs: Infinity,
};
const attempt: Attempt = await Attempt.begin(session, attemptOptions);
await Attempt.begin(session, { classifier: classifiers.acceptNothing });
await Attempt.begin(session);
const state: 'held' | 'released' | 'cleanup' | 'taken-over' | 'disposed' = attempt.state;
const aborted: 'user' | 'timeout' | 'stuck' | 'yield' | null = attempt.aborted;
const takeover: { phase: string; reason: string } | null = attempt.takeover;
const attemptFields: [string, string, boolean] = [attempt.sessionFile, attempt.session, attempt.isTakenOver];
attempt.progress();
await attempt.releaseForPrompt();
const resync: Resync = await attempt.reacquireAfterPrompt();
const range: [number, number] = resync.range;
const appended2: Appended = await attempt.append([{ role: 'assistant' }], { durability: 'none' });
await attempt.rewrite([]);
await attempt.truncate(0);
const read: TranscriptContents = await attempt.read();
attempt.abort();
attempt.abort('stuck');
// @ts-expect-error: an abort kind the controller does not know
attempt.abort('bored');
const cleanup: 'held' | 'noop' = await attempt.acquireForCleanup();
await attempt.dispose();
await attempt[Symbol.asyncDispose]();
{
  await using turn = await Attempt.begin(session);
  await turn.append([]);
}

// status and doctor.
const report: StatusReport = await status('/tmp');
await status(['/tmp', '/var/tmp']);
const statusVersion: number = report.version;
const dirErrors: Array<{ path: string; error: string }> = report.errors;
void [statusVersion, dirErrors];
for (const entry of report.locks) {
  // \`'error' in entry\` does not narrow (LockStatus has an index signature);
  // \`'action' in entry\` does.
  if ('action' in entry) {
    const action: 'wait' | 'reclaim' | 'report' = entry.action;
    const exposure: 'unmarked-argv' | 'unreadable' | null = entry.openclawExposure;
    const key: string = entry.session;
    const liveness: string = entry.liveness;
    const leaseLeftMs: number | null = entry.leaseLeftMs;
    void [action, exposure, key, liveness, leaseLeftMs];
  } else {
    const e: LockStatusError = entry;
    const where: [string | null, string] = [e.lockPath, e.error];
    void where;
  }
}
const doc: DoctorReport = await doctor('/tmp', { fix: true, force: false });
await doctor(['/tmp']);
const doctorVersion: number = doc.version;
void doctorVersion;
const exitCode: number = doc.summary.exitCode;
const attention: number = doc.summary.needAttention;
const docFields = [doc.dirs, doc.findings, doc.fixed, doc.errors, doc.openclawExposure] as const;

// Metrics.
const snapshot: MetricsSnapshot = metrics();
const waits: MetricHistogram[] = snapshot.histograms['sessionlock_acquire_wait_seconds'] ?? [];
const reclaims: MetricValue[] = snapshot.counters['sessionlock_reclaims_total'] ?? [];
const waiters: MetricValue[] = snapshot.gauges['sessionlock_waiters'] ?? [];
const firstLabels: MetricLabels | undefined = waits[0]?.labels;
const figures: [number, number, number, number] = [waits[0]?.count ?? 0, waits[0]?.sum ?? 0, reclaims[0]?.value ?? 0, waiters[0]?.value ?? 0];
void [firstLabels, figures];
// @ts-expect-error metrics() is synchronous: no options.
metrics({ reset: true });

// Errors.
try {
  await acquire(session);
} catch (e) {
  if (e instanceof SessionLockError) {
    const code: string = e.code;
    const kind: string = e.kind;
    const h: Holder | null = e.holder;
    const p: string | undefined = e.path;
    const extra: unknown = e.anything;
    const base: Error = e;
    void [code, kind, h, p, extra, base];
  }
  if (e instanceof SessionLockTimeoutError) void (e.timeoutMs satisfies number);
  if (e instanceof SessionLockStaleError) void (e.staleReasons satisfies string[]);
  if (e instanceof SessionLockRevokedError) void ([e.epoch, e.currentEpoch] satisfies number[]);
  if (e instanceof SessionLockFencedError) void ([e.epoch, e.currentEpoch] satisfies number[]);
  if (e instanceof SessionLockTakeoverError) void ([e.phase, e.reason] satisfies string[]);
  const classes: Array<typeof SessionLockError> = [
    SessionLockTimeoutError,
    SessionLockBusyError,
    SessionLockStaleError,
    SessionLockRevokedError,
    SessionLockFencedError,
    SessionLockPoisonedError,
    SessionLockTakeoverError,
    SessionLockCancelledError,
    SessionLockMisuseError,
    SessionLockInvalidEntryError,
    SessionLockIoError,
    SessionLockEpochExhaustedError,
    SessionLockInvalidPathError,
    SessionLockBackendError,
    SessionLockPanicError,
  ];
  void classes;
}

// The OpenClaw drop-in.
const params: SessionWriteLockParams = {
  sessionFile: session,
  timeoutMs: 10_000,
  staleMs: 1_800_000,
  maxHoldMs: 300_000,
  allowReentrant: true,
  holdExceeded: 'report',
  openclawCompat: true,
  lane: 'heartbeat',
  runId: 'r',
  backend: 'file',
  signal: new AbortController().signal,
};
const dropIn: { release(): Promise<void>; lock: Lock } = await acquireSessionWriteLock(params);
await dropIn.release();
await acquireSessionWriteLock({ sessionFile: session });
try {
  await acquireSessionWriteLock({ sessionFile: session, timeoutMs: 1 });
} catch (e) {
  if (isSessionWriteLockTimeoutError(e)) {
    const code: 'OPENCLAW_SESSION_WRITE_LOCK_TIMEOUT' = e.code;
    const fields: [number, string, string] = [e.timeoutMs, e.owner, e.lockPath];
    const cause: SessionLockTimeoutError = e.cause;
    void [code, fields, cause];
  }
  if (isSessionWriteLockStaleError(e)) {
    const code: 'OPENCLAW_SESSION_WRITE_LOCK_STALE' = e.code;
    const fields: [string, string, string[]] = [e.owner, e.lockPath, e.staleReasons];
    const cause: SessionLockStaleError = e.cause;
    void [code, fields, cause];
  }
  if (isSessionWriteLockAcquireError(e)) {
    const either: SessionWriteLockTimeoutError | SessionWriteLockStaleError = e;
    const base: Error = either;
    void base;
  }
}

// The default export is the module itself (index.mjs).
const viaDefault: typeof acquire = sessionlock.acquire;

void [
  epoch, epochString, files, flags, lost, fenced, fencedAsync, n, appended, torn, savedTo, transcriptSession,
  state, aborted, takeover, attemptFields, range, appended2, read, cleanup, exitCode, attention, docFields, viaDefault,
];
