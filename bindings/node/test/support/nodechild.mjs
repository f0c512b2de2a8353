// Support for the tests that need more than one Node process or thread:
// scratch directories, condition waits with deadlines, and Node children
// driven over a line protocol (test/support/holder.cjs). Not a test file:
// it only exports.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The package directory (bindings/node) and its CommonJS entry. */
export const PKG_DIR = path.resolve(here, '..', '..');
export const PKG = path.join(PKG_DIR, 'index.js');
/** The child script every multi-process test drives. */
export const HOLDER = path.join(here, 'holder.cjs');

/** A fresh directory under the system temp dir, removed after `t`. */
export function scratch(t, prefix = 'sl-node-') {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), prefix)));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits until `cond()` (sync or async) returns a truthy value, and returns
 * it; throws naming `what` after `timeoutMs`.
 */
export async function waitFor(what, cond, { timeoutMs = 10_000, everyMs = 5 } = {}) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/**
 * A Node child process speaking a line protocol: `say()` writes a line to
 * its stdin, `expect(prefix)` returns the words of its next stdout line that
 * starts with `prefix` (other lines are kept for later `expect`s). Killed
 * with SIGKILL after `t` if it is still running.
 */
export class NodeChild {
  constructor(t, { script = HOLDER, args = [], execArgv = [], env = {}, node = process.execPath } = {}) {
    this.proc = spawn(node, [...execArgv, script, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, SESSIONLOCK_TEST_CHILD: '1', ...env },
    });
    this.pid = this.proc.pid;
    this.lines = [];
    this.waiters = [];
    this.stderr = '';
    this.proc.stderr.setEncoding('utf8');
    this.proc.stderr.on('data', (d) => {
      this.stderr += d;
    });
    this.proc.stdin.on('error', () => {});
    readline.createInterface({ input: this.proc.stdout }).on('line', (line) => {
      this.lines.push(line);
      this.#wake();
    });
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
        this.#wake();
      });
    });
    t.after(async () => {
      if (!this.exit) {
        this.proc.kill('SIGKILL');
        await this.exited;
      }
    });
  }

  #wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  say(line) {
    this.proc.stdin.write(`${line}\n`);
  }

  /** The words of the next stdout line starting with `prefix`. */
  async expect(prefix, timeoutMs = 15_000) {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const i = this.lines.findIndex((l) => l === prefix || l.startsWith(`${prefix} `));
      if (i >= 0) return this.lines.splice(i, 1)[0].split(' ').slice(1);
      const err = this.lines.find((l) => l.startsWith('FAILED '));
      if (err) throw new Error(`child ${this.pid}: ${err} (waiting for ${prefix})\nstderr: ${this.stderr}`);
      if (this.exit) {
        throw new Error(`child ${this.pid} exited (${JSON.stringify(this.exit)}) before printing ${prefix}\nstdout: ${this.lines.join('\n')}\nstderr: ${this.stderr}`);
      }
      const left = end - Date.now();
      if (left <= 0) throw new Error(`child ${this.pid}: no ${prefix} within ${timeoutMs} ms\nstderr: ${this.stderr}`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Sends `line` and returns the words of the reply starting with `prefix`. */
  async ask(line, prefix, timeoutMs) {
    this.say(line);
    return this.expect(prefix, timeoutMs);
  }

  /** Waits for the child to exit, at most `timeoutMs`. */
  async waitExit(timeoutMs = 15_000) {
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`child ${this.pid} did not exit within ${timeoutMs} ms\nstderr: ${this.stderr}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, late]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Runs `node ARGS` to its end with `env` added to this process's: its exit
 * code (or the signal that ended it) and what it printed.
 */
export async function runNode(args, env = {}) {
  const proc = spawn(process.execPath, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout.on('data', (d) => {
    out += d;
  });
  proc.stderr.on('data', (d) => {
    err += d;
  });
  const code = await new Promise((resolve) => proc.on('exit', (c, sig) => resolve(c ?? sig)));
  return { code, out, err };
}
