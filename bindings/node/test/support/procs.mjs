// Helpers of the multi-process tests: the `sessionlock` CLI, child processes
// that speak a line protocol, waits with deadlines, temporary directories and
// the backends a test body runs on. Every spawned process is tracked by a
// `Procs` and killed by its `killAll()` (call it from an `after` hook).

import { after, before } from 'node:test';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { acquire, queued } from '../../index.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The package directory (bindings/node). */
export const pkgDir = path.resolve(here, '..', '..');
/** The repository root. */
export const repoDir = path.resolve(pkgDir, '..', '..');
/** Scripts the tests run as child processes. */
export const supportDir = here;

// The library lets the environment override explicit options (spec §11): a
// SESSIONLOCK_MAX_HOLD_MS or ..._ACQUIRE_TIMEOUT_MS in the caller's
// environment would change what these tests measure. They are removed from
// this process (the native module reads the real environment, which
// `process.env` writes through to) and from every child's.
const KEEP = new Set(['SESSIONLOCK_TEST_PG_URL', 'SESSIONLOCK_BIN']);
/**
 * Set in the environment of every child: the scripts of this directory run
 * only with it, so that a test runner that takes every file under `test/`
 * for a test (`node --test` without arguments does) finds them inert.
 */
export const CHILD_MARK = 'SESSIONLOCK_TEST_CHILD';
function scrub(env) {
  for (const k of Object.keys(env)) {
    if ((k.startsWith('SESSIONLOCK_') || k.startsWith('OPENCLAW_')) && !KEEP.has(k)) delete env[k];
  }
  return env;
}
scrub(process.env);

/** The environment of a child: this one, scrubbed, plus `extra`. */
export function childEnv(extra = {}) {
  const env = scrub({ ...process.env });
  delete env.NODE_TEST_CONTEXT;
  return { ...env, [CHILD_MARK]: '1', ...extra };
}

// ---------------------------------------------------------------------------
// Waiting.

/** Resolves after `ms` (for pacing inside critical sections, never to synchronise). */
export function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Resolves with `p`'s value, or rejects with an error saying `what` did not
 * happen within `ms`.
 */
export async function within(ms, what, p) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `cond` (sync or async) every 10 ms until it returns a truthy value, which it resolves with. */
export async function waitFor(what, cond, ms = 10_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await cond();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await delay(10);
  }
}

/** A promise's state right now, without waiting for it: 'pending', 'fulfilled' or 'rejected'. */
export async function settledState(p) {
  const pending = {};
  try {
    return (await Promise.race([p, Promise.resolve(pending)])) === pending ? 'pending' : 'fulfilled';
  } catch {
    return 'rejected';
  }
}

/** Nanoseconds of CLOCK_MONOTONIC, shared by every process of the machine. */
export function monoNs() {
  return process.hrtime.bigint();
}

/**
 * How many pidfds process `pid` has open. On the file backend, a waiter waits
 * for the holder's death on a pidfd, so one more than before says it waits.
 */
export function pidfdCount(pid) {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[pidfd]';
      } catch {
        return false;
      }
    }).length;
  } catch {
    return 0;
  }
}

/**
 * Waits until an `acquire` of this process for `session` waits for another
 * process's holder: `queued()` counts it (it has this process's turn and
 * waits across processes). On the file backend, it also waits for one more
 * pidfd in this process than `pidfdsBefore` (the waiter's on the holder).
 */
export async function waitForForeignWait(session, backend, pidfdsBefore) {
  await waitFor('an acquire of this process to take the turn and wait across processes',
    async () => (await queued(session, { backend })) === 1);
  if (backend === 'file') {
    await waitFor('the waiter to wait on the holder\'s pidfd', () => pidfdCount(process.pid) > pidfdsBefore);
  }
}

// ---------------------------------------------------------------------------
// Temporary directories.

/** A fresh directory (its real path), removed by `cleanup()`. */
export function tempDir(prefix = 'sessionlock-node-') {
  return fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), prefix)));
}

export function removeDir(dir) {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------
// Backends.

/**
 * The backends a test body runs on: the file backend always; PostgreSQL when
 * SESSIONLOCK_TEST_PG_URL is set, else with `skip` saying how to run it.
 * `session(dir, name)` gives the session string of that backend (a path in
 * `dir`, or a fresh key on PostgreSQL, which the CLI takes as given too);
 * `backend` is what `acquire` takes; `cliArgs` go before the CLI's command.
 */
export function backends() {
  const url = process.env.SESSIONLOCK_TEST_PG_URL;
  const run = `${process.pid}-${Date.now().toString(36)}`;
  let n = 0;
  return [
    {
      name: 'file',
      backend: 'file',
      cliArgs: [],
      skip: false,
      session: (dir, name) => path.join(dir, `${name}.jsonl`),
    },
    {
      name: 'postgres',
      backend: url,
      cliArgs: url ? ['--backend', url] : [],
      skip: url ? false : 'SESSIONLOCK_TEST_PG_URL is not set: run under scripts/with-postgres (repo root) to test PostgreSQL',
      session: (_dir, name) => `node-test:${run}:${name}:${n++}`,
    },
  ];
}

// ---------------------------------------------------------------------------
// The CLI.

let cliChecked;

/**
 * The `sessionlock` binary: SESSIONLOCK_BIN, else
 * `$CARGO_TARGET_DIR/debug/sessionlock` (or the repository's `target/`),
 * built with `cargo build -p sessionlock-cli` if missing.
 */
export function cliBin() {
  if (cliChecked) return cliChecked;
  if (process.env.SESSIONLOCK_BIN) {
    cliChecked = process.env.SESSIONLOCK_BIN;
    if (!fs.existsSync(cliChecked)) throw new Error(`SESSIONLOCK_BIN=${cliChecked} does not exist`);
    return cliChecked;
  }
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(repoDir, process.env.CARGO_TARGET_DIR)
    : path.join(repoDir, 'target');
  const bin = path.join(target, 'debug', 'sessionlock');
  // Built every time (a no-op when fresh): a binary left from older sources
  // would test something else.
  const r = spawnSync('cargo', ['build', '--quiet', '-p', 'sessionlock-cli'], { cwd: repoDir, stdio: 'inherit' });
  if (r.status !== 0 || !fs.existsSync(bin)) {
    throw new Error(`cannot build the sessionlock CLI (cargo build -p sessionlock-cli in ${repoDir}): ${r.error ?? `exit ${r.status}`}`);
  }
  cliChecked = bin;
  return bin;
}

// ---------------------------------------------------------------------------
// Child processes.

/** A spawned process whose stdout is read line by line. */
export class Child {
  constructor(name, cp) {
    this.name = name;
    this.cp = cp;
    this.pid = cp.pid;
    this.lines = [];
    this.stderr = '';
    this.waiters = new Set();
    this.exit = new Promise((resolve) => {
      cp.on('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
        this.#wake();
      });
    });
    cp.on('error', (e) => {
      this.spawnError = e;
      this.#wake();
    });
    let buf = '';
    cp.stdout.setEncoding('utf8');
    cp.stdout.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        this.lines.push({ text: buf.slice(0, i), at: monoNs() });
        buf = buf.slice(i + 1);
      }
      this.#wake();
    });
    cp.stderr.setEncoding('utf8');
    cp.stderr.on('data', (chunk) => {
      this.stderr += chunk;
    });
  }

  #wake() {
    for (const w of this.waiters) w();
  }

  /** A description for failure messages: the name, pid, exit and stderr. */
  describe() {
    const exit = this.exitInfo ? ` exited ${JSON.stringify(this.exitInfo)}` : '';
    const err = this.stderr.trim() ? `; stderr:\n${this.stderr.trim()}` : '';
    return `${this.name} (pid ${this.pid})${exit}${err}`;
  }

  /**
   * Waits for a stdout line matching `re` (after the `from`-th line);
   * resolves with `{ text, at, match, index }` (`at`: monotonic ns of its
   * arrival). Fails if the process exits first or after `ms`.
   */
  line(re, { ms = 10_000, from = 0 } = {}) {
    return new Promise((resolve, reject) => {
      const check = () => {
        for (let i = from; i < this.lines.length; i++) {
          const match = this.lines[i].text.match(re);
          if (match) {
            done();
            resolve({ ...this.lines[i], match, index: i });
            return;
          }
        }
        if (this.spawnError || this.exitInfo) {
          done();
          reject(new Error(`${this.describe()} ended before printing a line matching ${re}; stdout: ${JSON.stringify(this.lines.map((l) => l.text))}${this.spawnError ? `; ${this.spawnError}` : ''}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${ms} ms waiting for ${this.describe()} to print a line matching ${re}; stdout so far: ${JSON.stringify(this.lines.map((l) => l.text))}`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Writes one line to the child's stdin. */
  send(line) {
    this.cp.stdin.write(`${line}\n`);
  }

  /** Waits for the process to exit; fails after `ms`. */
  async exited(ms = 10_000) {
    return await within(ms, `${this.describe()} to exit`, this.exit);
  }

  kill(signal = 'SIGKILL') {
    if (!this.exitInfo) {
      try {
        process.kill(this.pid, signal);
      } catch {
        // Already gone.
      }
    }
  }

  /** Pids of this process's children (from /proc), for conditions like "exec has started its keeper". */
  childPids() {
    const pids = [];
    try {
      for (const tid of fs.readdirSync(`/proc/${this.pid}/task`)) {
        const text = fs.readFileSync(`/proc/${this.pid}/task/${tid}/children`, 'utf8').trim();
        if (text) pids.push(...text.split(/\s+/).map(Number));
      }
    } catch {
      // Exited.
    }
    return pids;
  }
}

/** The processes a test started; `killAll()` SIGKILLs those still running and waits for them. */
export class Procs {
  constructor() {
    this.all = [];
  }

  spawn(name, cmd, args, { env = {}, cwd } = {}) {
    const cp = spawn(cmd, args, { cwd, env: childEnv(env), stdio: ['pipe', 'pipe', 'pipe'] });
    // A child that dies early must not crash the test run with EPIPE.
    cp.stdin.on('error', () => {});
    const c = new Child(name, cp);
    this.all.push(c);
    return c;
  }

  /** Node running `test/support/<script>` with `args`. */
  node(script, args = [], opts = {}) {
    return this.spawn(`${script} ${args.join(' ')}`.trim(), process.execPath, [path.join(supportDir, script), ...args], opts);
  }

  /** The `sessionlock` CLI with `args`. */
  cli(args, opts = {}) {
    return this.spawn(`sessionlock ${args.join(' ')}`, cliBin(), args, opts);
  }

  async killAll() {
    const alive = this.all.filter((c) => !c.exitInfo && !c.spawnError);
    for (const c of alive) c.kill('SIGKILL');
    await Promise.all(alive.map((c) => within(10_000, `${c.describe()} to die`, c.exit).catch(() => {})));
    this.all = [];
  }
}

/** A holder child (support/holder.mjs) on `session`, started and waited for until it holds the lock. */
export async function startHolder(procs, session, opts = {}) {
  const h = procs.node('holder.mjs');
  h.send(`acquire ${JSON.stringify({ session, opts })}`);
  const held = await h.line(/^(HELD|ERR) /);
  if (!held.text.startsWith('HELD ')) throw new Error(`${h.describe()} could not acquire ${session}: ${held.text}`);
  const info = JSON.parse(held.text.slice('HELD '.length));
  return { child: h, ...info, heldAt: held.at };
}

/**
 * The fixture of a suite of process tests, inside `describe`: before the
 * suite, builds the CLI (when `cli`) and makes a scratch directory, handed
 * to `setDir`; after it, kills what `procs` started and removes the
 * directory.
 */
export function scratchSuite(procs, setDir, { cli = true } = {}) {
  let dir;
  before(() => {
    if (cli) cliBin();
    dir = tempDir();
    setDir(dir);
  });
  after(async () => {
    await procs.killAll();
    removeDir(dir);
  });
}
