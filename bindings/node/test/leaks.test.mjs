// Acquire/release cycles leak neither file descriptors nor memory. The
// measurement runs in a child (this file, in child mode) started with
// --expose-gc, so that it can collect garbage before each reading and
// starts from a clean process.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { runNode } from './support/nodechild.mjs';

const WARMUP = 1_000;
const CYCLES = 10_000;
const MiB = 1024 * 1024;

// The child runs with a fixed young generation (--max-semi-space-size=1)
// and one malloc arena that is trimmed on every free (GLIBC_TUNABLES
// below), so that what grows is what the cycles keep, not allocator and GC
// sizing. Measured on this package without them: V8 grows its new space
// from 2 to 15 MiB over 40 000 cycles (heapUsed flat: promise churn makes
// the young generation grow), and glibc adds a 1-2 MiB arena per thread
// that ran a task plus an untrimmed main heap: RSS +8-10 MiB over the first
// 10 000 cycles, levelling off later; meanwhile heaptrack showed the live
// malloc heap flat, and the same bytes unfreed at exit after 1 000 and after
// 31 000 cycles. With the settings, RSS still steps up over the first
// 10 000 cycles after the warm-up (glibc and V8 settling): by 3-4 MiB when
// every acquire and release went through the native runtime, by 7.6-8 MiB
// since an uncontended acquire and release run on the JavaScript thread
// (the cycle is twice as fast; the main thread's heap, which those calls
// now allocate from, settles higher); over the next 10 000 it moves by
// -0.5 to +0.6 MiB.
//
// Bounds on the growth over each 10 000 cycles, after full collections:
// - descriptors: none. Each cycle opens and closes the lock file: any
//   per-cycle descriptor, or one per N cycles, shows up as a difference.
// - V8 heap (heapUsed): 512 KiB. Anything a cycle left reachable costs at
//   least ~50 bytes (a Map entry of the exit registry, a closure, a
//   promise) = 0.5 MB over 10 000 cycles, while the heap of a settled
//   process moves by tens of KiB between two collections.
// - RSS: 12 MiB over the first 10 000 cycles (half again the settling
//   step: this window only catches a gross leak), and 2 MiB over the next
//   10 000, the leak detector: a native leak of 200 bytes a cycle (less than
//   one lock's guard, paths and holder record) exceeds it.
const BOUNDS = { fds: 0, heapUsed: 512 * 1024, rss: 12 * MiB, rssLater: 2 * MiB };
const CHILD_ARGV = ['--expose-gc', '--max-semi-space-size=1'];
const CHILD_ENV = { GLIBC_TUNABLES: 'glibc.malloc.arena_max=1:glibc.malloc.trim_threshold=0' };

async function settle() {
  for (let i = 0; i < 6; i++) {
    global.gc();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 10));
  }
}

function fds() {
  return fs.readdirSync('/proc/self/fd').map((fd) => {
    try {
      return `${fd} -> ${fs.readlinkSync(`/proc/self/fd/${fd}`)}`;
    } catch {
      return `${fd} (gone)`; // the descriptor readdir itself used
    }
  });
}

async function reading() {
  await settle();
  const m = process.memoryUsage();
  return { fds: fds(), rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
}

async function child() {
  const { default: sl } = await import('../index.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sl-node-leak-'));
  try {
    const session = path.join(dir, 'leak.jsonl');
    // `uncontended`: the calls' fast paths on the JavaScript thread.
    // `hand-off`: a second acquire queues behind the first (the native
    // runtime's path), and the first's release hands the lock over (a
    // release finished off the JavaScript thread).
    const handOff = process.env.SESSIONLOCK_LEAK_CHILD === 'hand-off';
    const cycles = async (n) => {
      for (let i = 0; i < n; i++) {
        const lock = await sl.acquire(session);
        if (handOff) {
          const next = sl.acquire(session);
          await lock.release();
          await (await next).release();
        } else {
          await lock.release();
        }
      }
    };
    await cycles(WARMUP);
    const before = await reading();
    const t0 = process.hrtime.bigint();
    await cycles(CYCLES);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const after = await reading();
    await cycles(CYCLES);
    const later = await reading();
    process.stdout.write(`${JSON.stringify({ before, after, later, seconds })}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.env.SESSIONLOCK_LEAK_CHILD) {
  await child();
} else {
  for (const mode of ['uncontended', 'hand-off']) {
  test(`${CYCLES} ${mode} acquire/release cycles (and ${CYCLES} more) leak no descriptors and no memory`, async (t) => {
    const { code, out, err } = await runNode([...CHILD_ARGV, fileURLToPath(import.meta.url)], {
      ...CHILD_ENV,
      SESSIONLOCK_LEAK_CHILD: mode,
    });
    assert.equal(code, 0, `the measuring child failed: ${err}`);
    const { before, after, later, seconds } = JSON.parse(out.trim().split('\n').pop());
    const kib = (n) => `${n >= 0 ? '+' : ''}${(n / 1024).toFixed(0)} KiB`;
    const size = (n) => `${(n / 1024).toFixed(0)} KiB`;
    t.diagnostic(
      `${CYCLES} cycles in ${seconds.toFixed(2)} s (${((seconds * 1e6) / CYCLES).toFixed(0)} µs each) after ${WARMUP} warm-up cycles; ` +
        `child: node ${CHILD_ARGV.join(' ')}, ${Object.entries(CHILD_ENV).map(([k, v]) => `${k}=${v}`).join(' ')}`,
    );
    t.diagnostic(`descriptors: ${before.fds.length} -> ${after.fds.length} -> ${later.fds.length}`);
    for (const k of ['rss', 'heapUsed', 'external', 'arrayBuffers']) {
      t.diagnostic(
        `${k}: ${size(before[k])} -> ${size(after[k])} (${kib(after[k] - before[k])}) -> ${size(later[k])} (${kib(later[k] - after[k])})`,
      );
    }
    for (const [from, to, which] of [[before, after, 'first'], [after, later, 'next']]) {
      const opened = to.fds.filter((f) => !from.fds.includes(f) && !f.endsWith('(gone)'));
      assert.ok(
        to.fds.length - from.fds.length <= BOUNDS.fds,
        `descriptors grew from ${from.fds.length} to ${to.fds.length} over the ${which} ${CYCLES} cycles; new: ${opened.join(', ')}`,
      );
      const heap = to.heapUsed - from.heapUsed;
      assert.ok(heap <= BOUNDS.heapUsed, `heapUsed grew by ${kib(heap)} over the ${which} ${CYCLES} cycles (bound ${size(BOUNDS.heapUsed)})`);
    }
    const rss = after.rss - before.rss;
    const rssLater = later.rss - after.rss;
    assert.ok(rss <= BOUNDS.rss, `RSS grew by ${kib(rss)} over the first ${CYCLES} cycles (bound ${size(BOUNDS.rss)})`);
    assert.ok(rssLater <= BOUNDS.rssLater, `RSS grew by ${kib(rssLater)} over the next ${CYCLES} cycles (bound ${size(BOUNDS.rssLater)})`);
  });
  }
}
