'use strict';
// sessionlock for Node.js: the session lock, the fenced transcript store and
// the attempt controller of the Rust library, through its native module
// (src/*.rs). This file adds what is JavaScript's business: error classes,
// AbortSignal, fences held across async callbacks (AsyncLocalStorage),
// `await using`, release at exit, and the OpenClaw drop-in. Types and docs:
// index.d.ts.

const fs = require('node:fs');
const path = require('node:path');
const { AsyncLocalStorage } = require('node:async_hooks');

// ---------------------------------------------------------------------------
// The native module: one instance per process (src/instance.rs).

function loadNative() {
  const own = path.join(__dirname, 'sessionlock.node');
  if (!fs.existsSync(own)) {
    throw new Error(
      `sessionlock: the native module ${own} is missing: run \`npm install\` ` +
        `(or \`npm run build\`) in ${__dirname} to build it from source`,
    );
  }
  const mine = require(own);
  const primary = mine.primaryPath();
  if (primary && primary !== own && fs.realpathSync(primary) !== fs.realpathSync(own)) {
    // Another copy of this package loaded its module first: share it, so
    // that one registry and one watchdog serve the whole process.
    return require(primary);
  }
  return mine;
}

const native = loadNative();

// ---------------------------------------------------------------------------
// Errors.

/** Base class of every error sessionlock raises. */
class SessionLockError extends Error {
  constructor(info, options) {
    super(info.message, options);
    this.name = 'SessionLockError';
    this.code = info.code;
    this.kind = info.kind;
    this.holder = info.holder ?? null;
    for (const [k, v] of Object.entries(info)) {
      if (['code', 'kind', 'message', 'holder'].includes(k)) continue;
      // How a lock was lost: not Error's `cause` (another error).
      this[k === 'cause' ? 'lossCause' : k] = v;
    }
  }
}

const errorClasses = {};
function defineError(kind, name) {
  const cls = { [name]: class extends SessionLockError {
    constructor(info, options) {
      super(info, options);
      this.name = name;
    }
  } }[name];
  errorClasses[kind] = cls;
  return cls;
}

const SessionLockTimeoutError = defineError('timeout', 'SessionLockTimeoutError');
const SessionLockBusyError = defineError('busy', 'SessionLockBusyError');
const SessionLockStaleError = defineError('stale', 'SessionLockStaleError');
const SessionLockRevokedError = defineError('revoked', 'SessionLockRevokedError');
const SessionLockFencedError = defineError('fenced', 'SessionLockFencedError');
const SessionLockPoisonedError = defineError('poisoned', 'SessionLockPoisonedError');
const SessionLockTakeoverError = defineError('takeover', 'SessionLockTakeoverError');
const SessionLockCancelledError = defineError('cancelled', 'SessionLockCancelledError');
const SessionLockMisuseError = defineError('misuse', 'SessionLockMisuseError');
const SessionLockInvalidEntryError = defineError('invalid_entry', 'SessionLockInvalidEntryError');
const SessionLockIoError = defineError('io', 'SessionLockIoError');
const SessionLockEpochExhaustedError = defineError('epoch_exhausted', 'SessionLockEpochExhaustedError');
const SessionLockInvalidPathError = defineError('invalid_path', 'SessionLockInvalidPathError');
const SessionLockBackendError = defineError('backend', 'SessionLockBackendError');
const SessionLockPanicError = defineError('panic', 'SessionLockPanicError');

/** An error of the native module as the SessionLockError it describes. */
function convert(e) {
  if (e instanceof Error && typeof e.message === 'string' && e.message.charCodeAt(0) === 1) {
    let info;
    try {
      info = JSON.parse(e.message.slice(1));
    } catch {
      return e;
    }
    const cls = errorClasses[info.kind] ?? SessionLockError;
    return new cls(info);
  }
  return e;
}

function error(kind, message, extra) {
  const cls = errorClasses[kind];
  return new cls({ code: `SESSIONLOCK_${kind.toUpperCase()}`, kind, message, ...extra });
}

function misuse(message) {
  return error('misuse', `misuse: ${message}`);
}

/** Awaits a native promise, converting its rejection. */
async function call(p) {
  try {
    return await p;
  } catch (e) {
    throw convert(e);
  }
}

// ---------------------------------------------------------------------------
// Options.

function checkMs(name, v, infinite) {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number') {
    throw new TypeError(`sessionlock: ${name} must be a number of milliseconds, got ${typeof v} ${JSON.stringify(v)}`);
  }
  if (Number.isNaN(v) || v < 0 || (!Number.isFinite(v) && !infinite) ||
      (Number.isFinite(v) && !Number.isSafeInteger(v))) {
    throw new RangeError(
      `sessionlock: ${name} must be a non-negative integer number of milliseconds${infinite ? ' or Infinity' : ''}, got ${String(v)}`,
    );
  }
  return v;
}

function checkString(name, v) {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new TypeError(`sessionlock: ${name} must be a string, got ${typeof v}`);
  return v;
}

function checkOneOf(name, v, allowed) {
  if (v === undefined || v === null) return undefined;
  if (!allowed.includes(v)) {
    throw new RangeError(`sessionlock: ${name} must be ${allowed.map((a) => JSON.stringify(a)).join(' or ')}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function checkBool(name, v) {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new TypeError(`sessionlock: ${name} must be a boolean, got ${typeof v}`);
  return v;
}

/** The native lock options of `o` (LockOptions in index.d.ts). */
function lockOpts(o = {}) {
  if (o === null || typeof o !== 'object') throw new TypeError('sessionlock: options must be an object');
  const out = {
    timeoutMs: checkMs('timeoutMs', o.timeoutMs, true),
    maxHoldMs: checkMs('maxHoldMs', o.maxHoldMs, false),
    staleMs: checkMs('staleMs', o.staleMs, false),
    lane: checkString('lane', o.lane),
    runId: checkString('runId', o.runId),
    reentrant: checkBool('reentrant', o.reentrant),
    holdExceeded: checkOneOf('holdExceeded', o.holdExceeded, ['reclaim', 'report']),
    openclawCompat: checkBool('openclawCompat', o.openclawCompat),
    backend: checkString('backend', o.backend),
  };
  if (out.maxHoldMs === 0) throw new RangeError('sessionlock: maxHoldMs must be greater than zero');
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
  return out;
}

function sessionArg(s) {
  if (typeof s !== 'string' || s === '') {
    throw new TypeError('sessionlock: the session must be a non-empty string (a transcript path, or a key on PostgreSQL)');
  }
  if (s.includes('\0')) throw new TypeError('sessionlock: the session must not contain NUL');
  return s;
}

function checkSignal(signal) {
  if (signal === undefined || signal === null) return undefined;
  if (typeof signal.aborted !== 'boolean' || typeof signal.addEventListener !== 'function') {
    throw new TypeError('sessionlock: signal must be an AbortSignal');
  }
  return signal;
}

function abortError(signal, what) {
  const e = error('cancelled', `cancelled: ${what}`, {});
  e.name = 'AbortError';
  e.cause = signal.reason;
  return e;
}

// ---------------------------------------------------------------------------
// Release at exit. Each thread (main or worker) releases the locks and
// disposes the attempts it still has when it exits normally; garbage
// collection releases forgotten ones earlier (the native objects' Drop).

const live = new Map();
let nextLive = 1;
const forget = new FinalizationRegistry((id) => live.delete(id));

function track(nativeObj, close) {
  const id = nextLive++;
  live.set(id, { ref: new WeakRef(nativeObj), close });
  forget.register(nativeObj, id);
  return id;
}

process.once('exit', () => {
  for (const { ref, close } of live.values()) {
    const n = ref.deref();
    if (n) {
      try {
        close(n);
      } catch {
        // Exiting: nothing is left to report to.
      }
    }
  }
  live.clear();
});

// ---------------------------------------------------------------------------
// Locks.

/** The native locks whose fence the current async context runs inside. */
const fences = new AsyncLocalStorage();

function insideFence(n) {
  return fences.getStore()?.has(n) ?? false;
}

const internal = Symbol('sessionlock.internal');

/** A held session lock (see index.d.ts). */
class Lock {
  #n;
  #id;
  #revoked;
  #releasing;

  constructor(token, n) {
    if (token !== internal) throw new TypeError('sessionlock: use acquire() to get a Lock');
    this.#n = n;
    this.#id = track(n, (x) => x.releaseSync());
  }

  static [internal](lock) {
    return lock.#n;
  }

  get epoch() { return this.#n.epoch; }
  get epochString() { return this.#n.epochString; }
  get sessionFile() { return this.#n.session; }
  get session() { return this.#n.session; }
  get lockPath() { return this.#n.lockPath; }
  get isRevoked() { return this.#n.isRevoked; }
  get isReleased() { return this.#n.isReleased; }
  get holder() {
    const j = this.#n.holderJson();
    return j === null ? null : JSON.parse(j);
  }

  get revoked() {
    if (!this.#revoked) {
      // Resolves once lost; stays pending if released first. The native
      // watch does not keep the process alive.
      this.#revoked = new Promise((resolve) => {
        this.#n.onLost((message) => {
          if (message) resolve(convert(new Error(message)));
        });
      });
    }
    return this.#revoked;
  }

  async check() {
    if (insideFence(this.#n)) return;
    await call(this.#n.check());
  }

  async extend(ms) {
    checkMs('ms', ms, false);
    if (insideFence(this.#n)) {
      throw misuse('extend() inside this lock\'s own withFence: extend before or after the fenced call');
    }
    await call(this.#n.extend(ms ?? undefined));
  }

  async withFence(fn) {
    if (typeof fn !== 'function') throw new TypeError('sessionlock: withFence needs a function');
    const outer = fences.getStore();
    if (outer?.has(this.#n)) return await fn();
    const fence = await call(this.#n.enterFence());
    let ok = false;
    try {
      const inner = new Set(outer ?? []);
      inner.add(this.#n);
      const out = await fences.run(inner, fn);
      ok = true;
      return out;
    } finally {
      try {
        await call(fence.exit());
      } catch (e) {
        if (ok) throw e;
      }
    }
  }

  release() {
    if (insideFence(this.#n)) {
      return Promise.reject(misuse('release() inside this lock\'s own withFence: release after the fenced call'));
    }
    // A second call while the first is under way gets the same outcome.
    this.#releasing ??= this.#release();
    return this.#releasing;
  }

  #release() {
    live.delete(this.#id);
    // A release that needs no wait (file backend: no operation in flight, no
    // waiter to hand over to, the state lock free) is done at once; any
    // other finishes off this thread.
    try {
      if (this.#n.releaseNow()) return Promise.resolve();
    } catch (e) {
      return Promise.reject(convert(e));
    }
    return this.#n.release().then(undefined, (e) => {
      throw convert(e);
    });
  }

  async [Symbol.asyncDispose]() {
    await this.release();
  }

  toJSON() {
    return {
      session: this.session,
      lockPath: this.lockPath,
      epoch: this.epoch,
      released: this.isReleased,
      revoked: this.isRevoked,
    };
  }

  [Symbol.for('nodejs.util.inspect.custom')](depth, options, inspect) {
    return `Lock ${inspect(this.toJSON(), options)}`;
  }
}

// Symbol.asyncDispose exists from Node 20.4 on; older 20.x get it here so
// that `await using` works once the syntax does.
if (typeof Symbol.asyncDispose !== 'symbol') {
  Object.defineProperty(Symbol, 'asyncDispose', { value: Symbol.for('nodejs.asyncDispose') });
}

async function acquire(sessionFile, options = {}) {
  sessionArg(sessionFile);
  const opts = lockOpts(options);
  const signal = checkSignal(options?.signal);
  if (signal?.aborted) throw abortError(signal, `acquire of ${sessionFile}`);
  const req = new native.AcquireRequest(sessionFile, opts);
  // A free lock file is taken at once (a no-wait try), unless an earlier
  // acquire of this thread still waits for the session: it comes first.
  if (!waiting.has(sessionFile)) {
    const now = req.tryNow();
    if (now) return new Lock(internal, now);
  }
  waiting.set(sessionFile, (waiting.get(sessionFile) ?? 0) + 1);
  const onAbort = () => req.cancel();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return new Lock(internal, await call(req.run()));
  } catch (e) {
    if (e instanceof SessionLockCancelledError && signal?.aborted) {
      e.name = 'AbortError';
      e.cause = signal.reason;
    }
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    const n = waiting.get(sessionFile) - 1;
    if (n === 0) waiting.delete(sessionFile);
    else waiting.set(sessionFile, n);
  }
}

/** Acquires of this thread under way in the background, by session. */
const waiting = new Map();

async function queued(sessionFile, options = {}) {
  sessionArg(sessionFile);
  return await call(native.queued(sessionFile, checkString('backend', options?.backend)));
}

// ---------------------------------------------------------------------------
// Transcripts.

function entryTexts(entries) {
  if (!Array.isArray(entries)) throw new TypeError('sessionlock: entries must be an array');
  return entries.map((e, i) => {
    let s;
    try {
      s = JSON.stringify(e);
    } catch (err) {
      throw new TypeError(`sessionlock: entry ${i} cannot be written as JSON: ${err.message}`, { cause: err });
    }
    if (typeof s !== 'string') throw new TypeError(`sessionlock: entry ${i} cannot be written as JSON (${typeof e})`);
    return s;
  });
}

function durabilityArg(o) {
  return checkOneOf('durability', o?.durability, ['none', 'data', 'full']);
}

function lockArg(lock, what) {
  if (!(lock instanceof Lock)) throw new TypeError(`sessionlock: ${what} needs the Lock of the session`);
  const n = Lock[internal](lock);
  if (insideFence(n)) {
    throw misuse(`${what} inside withFence of the same lock: transcript writes are fenced already, call them outside it`);
  }
  return n;
}

/** A transcript (see index.d.ts). */
class Transcript {
  #n;

  constructor(token, n) {
    if (token !== internal) throw new TypeError('sessionlock: use Transcript.open()');
    this.#n = n;
  }

  static async open(sessionFile, options = {}) {
    sessionArg(sessionFile);
    return new Transcript(internal, await call(native.openTranscript(sessionFile, checkString('backend', options?.backend))));
  }

  get session() { return this.#n.session; }

  async append(lock, entries, options) {
    const n = lockArg(lock, 'append');
    return JSON.parse(await call(this.#n.append(n, entryTexts(entries), durabilityArg(options))));
  }

  async rewrite(lock, entries) {
    const n = lockArg(lock, 'rewrite');
    await call(this.#n.rewrite(n, entryTexts(entries)));
  }

  async truncate(lock, keep) {
    const n = lockArg(lock, 'truncate');
    if (!Number.isSafeInteger(keep) || keep < 0 || keep > 0xffffffff) {
      throw new RangeError('sessionlock: keep must be a non-negative integer');
    }
    await call(this.#n.truncate(n, keep));
  }

  async repair(lock) {
    const n = lockArg(lock, 'repair');
    return JSON.parse(await call(this.#n.repair(n)));
  }

  async readAll() {
    return JSON.parse(await call(this.#n.read()));
  }

  async *read() {
    const { entries } = await this.readAll();
    yield* entries;
  }

  [Symbol.asyncIterator]() {
    return this.read();
  }
}

// ---------------------------------------------------------------------------
// Attempts.

const classifiers = Object.freeze({ acceptNothing: 'accept-nothing', openclaw: 'openclaw' });

/** An attempt (see index.d.ts). */
class Attempt {
  #n;
  #id;

  constructor(token, n) {
    if (token !== internal) throw new TypeError('sessionlock: use Attempt.begin()');
    this.#n = n;
    this.#id = track(n, (x) => x.disposeSync());
  }

  static async begin(sessionFile, options = {}) {
    sessionArg(sessionFile);
    if (options === null || typeof options !== 'object') throw new TypeError('sessionlock: options must be an object');
    const opts = {
      lock: lockOpts(options),
      classifier: checkOneOf('classifier', options.classifier, Object.values(classifiers)),
      overlap: checkBool('overlap', options.overlap),
      ownerTimeoutMs: checkMs('ownerTimeoutMs', options.ownerTimeoutMs, true),
    };
    for (const k of Object.keys(opts)) if (opts[k] === undefined) delete opts[k];
    return new Attempt(internal, await call(native.beginAttempt(sessionFile, opts)));
  }

  get sessionFile() { return this.#n.session; }
  get session() { return this.#n.session; }
  get state() { return this.#n.state; }
  get aborted() { return this.#n.aborted ?? null; }
  get isTakenOver() { return this.#n.state === 'taken-over'; }
  get takeover() {
    const j = this.#n.takeoverJson();
    return j === null ? null : JSON.parse(j);
  }

  progress() { this.#n.progress(); }

  async releaseForPrompt() { await call(this.#n.releaseForPrompt()); }

  async reacquireAfterPrompt() {
    const r = JSON.parse(await call(this.#n.reacquireAfterPrompt()));
    return { entries: r.entries, range: r.range };
  }

  async append(entries, options) {
    return JSON.parse(await call(this.#n.append(entryTexts(entries), durabilityArg(options))));
  }

  async rewrite(entries) { await call(this.#n.rewrite(entryTexts(entries))); }

  async truncate(keep) {
    if (!Number.isSafeInteger(keep) || keep < 0 || keep > 0xffffffff) {
      throw new RangeError('sessionlock: keep must be a non-negative integer');
    }
    await call(this.#n.truncate(keep));
  }

  async read() { return JSON.parse(await call(this.#n.read())); }

  abort(kind = 'user') {
    let p;
    try {
      p = this.#n.abort(checkOneOf('kind', kind, ['user', 'timeout', 'stuck', 'yield']));
    } catch (e) {
      return Promise.reject(convert(e));
    }
    return call(p);
  }

  async acquireForCleanup() { return await call(this.#n.acquireForCleanup()); }

  async dispose() {
    try {
      await call(this.#n.dispose());
    } finally {
      live.delete(this.#id);
    }
  }

  async [Symbol.asyncDispose]() {
    await this.dispose();
  }
}

// ---------------------------------------------------------------------------
// Diagnostics.

function dirsArg(dirs) {
  const list = typeof dirs === 'string' ? [dirs] : dirs;
  if (!Array.isArray(list) || list.length === 0 || !list.every((d) => typeof d === 'string' && d !== '')) {
    throw new TypeError('sessionlock: give a directory, or an array of directories');
  }
  if (list.some((d) => /^postgres(ql)?:\/\//.test(d))) {
    throw new TypeError('sessionlock: status and doctor read lock files (the file backend); for PostgreSQL use `sessionlock status --backend URL`');
  }
  return list;
}

async function status(dirs) {
  return JSON.parse(await call(native.status(dirsArg(dirs))));
}

async function doctor(dirs, options = {}) {
  const fix = checkBool('fix', options?.fix) ?? false;
  const force = checkBool('force', options?.force) ?? false;
  if (force && !fix) throw new TypeError('sessionlock: doctor: force applies to fix; pass { fix: true, force: true }');
  return JSON.parse(await call(native.doctor(dirsArg(dirs), fix, force)));
}

// ---------------------------------------------------------------------------
// Metrics (src/metrics.rs).

function metrics() {
  return JSON.parse(native.metrics());
}

// ---------------------------------------------------------------------------
// The OpenClaw drop-in: `acquireSessionWriteLock` with OpenClaw's parameter
// names and errors (README: "From Node.js").

const SESSION_WRITE_LOCK_TIMEOUT_CODE = 'OPENCLAW_SESSION_WRITE_LOCK_TIMEOUT';
const SESSION_WRITE_LOCK_STALE_CODE = 'OPENCLAW_SESSION_WRITE_LOCK_STALE';

/** `pid=… alive=… ageMs=…` (or `owner=unknown`), as OpenClaw describes a holder. */
function describeOwner(holder) {
  const parts = [];
  if (holder && typeof holder.pid === 'number') {
    parts.push(`pid=${holder.pid}`, `alive=${holder.alive ? 'true' : 'false'}`);
  } else {
    parts.push('owner=unknown');
  }
  if (holder && typeof holder.ageMs === 'number') parts.push(`ageMs=${Math.floor(holder.ageMs)}`);
  return parts.join(' ');
}

class SessionWriteLockTimeoutError extends Error {
  constructor(params, options) {
    super(`session file locked (timeout ${params.timeoutMs}ms): ${params.owner} ${params.lockPath}`, options);
    this.code = SESSION_WRITE_LOCK_TIMEOUT_CODE;
    this.name = 'SessionWriteLockTimeoutError';
    this.timeoutMs = params.timeoutMs;
    this.owner = params.owner;
    this.lockPath = params.lockPath;
  }
}

class SessionWriteLockStaleError extends Error {
  constructor(params, options) {
    const staleReasons = params.staleReasons?.length ? params.staleReasons : ['unknown'];
    super(`session file lock stale (${staleReasons.join(', ')}): ${params.owner} ${params.lockPath}`, options);
    this.code = SESSION_WRITE_LOCK_STALE_CODE;
    this.name = 'SessionWriteLockStaleError';
    this.owner = params.owner;
    this.lockPath = params.lockPath;
    this.staleReasons = staleReasons;
  }
}

function isSessionWriteLockTimeoutError(err) {
  return err instanceof SessionWriteLockTimeoutError || err?.code === SESSION_WRITE_LOCK_TIMEOUT_CODE;
}

function isSessionWriteLockStaleError(err) {
  return err instanceof SessionWriteLockStaleError || err?.code === SESSION_WRITE_LOCK_STALE_CODE;
}

function isSessionWriteLockAcquireError(err) {
  return isSessionWriteLockTimeoutError(err) || isSessionWriteLockStaleError(err);
}

/**
 * A duration parameter as OpenClaw reads it: a positive number, else
 * undefined (the default applies); `Infinity` only where allowed.
 */
function openclawMs(v, allowInfinity) {
  if (typeof v !== 'number' || Number.isNaN(v) || v <= 0) return undefined;
  if (!Number.isFinite(v)) return allowInfinity ? v : undefined;
  // sessionlock counts whole milliseconds (OpenClaw compares fractions).
  return Math.max(1, Math.floor(v));
}

async function acquireSessionWriteLock(params) {
  if (params === null || typeof params !== 'object') {
    throw new TypeError('acquireSessionWriteLock: pass { sessionFile, timeoutMs?, staleMs?, maxHoldMs?, allowReentrant? }');
  }
  const { sessionFile } = params;
  if (typeof sessionFile !== 'string' || sessionFile === '') {
    throw new TypeError('acquireSessionWriteLock: sessionFile must be a non-empty string');
  }
  const backend = checkString('backend', params.backend) ?? process.env.SESSIONLOCK_BACKEND;
  const onFiles = backend === undefined || backend.trim() === '' || backend.trim() === 'file';
  let lock;
  try {
    lock = await acquire(onFiles ? path.resolve(sessionFile) : sessionFile, {
      timeoutMs: openclawMs(params.timeoutMs, true),
      staleMs: openclawMs(params.staleMs, false),
      maxHoldMs: openclawMs(params.maxHoldMs, false),
      reentrant: Boolean(params.allowReentrant),
      holdExceeded: params.holdExceeded,
      openclawCompat: params.openclawCompat,
      lane: params.lane,
      runId: params.runId,
      backend: params.backend,
      signal: params.signal,
    });
  } catch (e) {
    if (e instanceof SessionLockTimeoutError) {
      throw new SessionWriteLockTimeoutError(
        { timeoutMs: e.timeoutMs, owner: describeOwner(e.holder), lockPath: e.holder?.lockPath ?? `${sessionFile}.lock` },
        { cause: e },
      );
    }
    if (e instanceof SessionLockStaleError) {
      throw new SessionWriteLockStaleError(
        { owner: describeOwner(e.holder), lockPath: e.holder?.lockPath ?? `${sessionFile}.lock`, staleReasons: e.staleReasons },
        { cause: e },
      );
    }
    throw e;
  }
  return {
    // OpenClaw's release resolves once the lock is gone whatever happened
    // to it; a lock this holder had already lost (revoked at its lease
    // end, or removed by someone else) is gone too: a warning, not an
    // error, so that `finally { await release() }` keeps working.
    release: () =>
      lock.release().catch((e) => {
        if (!(e instanceof SessionLockRevokedError)) throw e;
        process.emitWarning(e.message, { type: 'SessionLockWarning', code: e.code });
      }),
    lock,
  };
}

module.exports = {
  acquire,
  queued,
  Lock,
  Transcript,
  Attempt,
  classifiers,
  status,
  doctor,
  metrics,
  acquireSessionWriteLock,
  SessionWriteLockTimeoutError,
  SessionWriteLockStaleError,
  isSessionWriteLockTimeoutError,
  isSessionWriteLockStaleError,
  isSessionWriteLockAcquireError,
  SessionLockError,
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
};
