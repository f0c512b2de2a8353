// The waits of `acquire` happen off the JavaScript thread: while acquires
// of this process wait on a session another process holds, the event loop
// keeps running timers at their usual rate, and the waits are real (queued
// in the native registry), not rejected or spinning in JavaScript.
import test from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';

import sl from '../index.js';
import { NodeChild, scratch, sleep, waitFor } from './support/nodechild.mjs';

const WAITERS = 8;
const WINDOW_MS = 1000;

/** Fires a 1 ms interval for `ms` and returns how many ticks it got and how long the window really was. */
async function ticksOver(ms) {
  let ticks = 0;
  const start = process.hrtime.bigint();
  const iv = setInterval(() => {
    ticks += 1;
  }, 1);
  await sleep(ms);
  clearInterval(iv);
  return { ticks, elapsedMs: Number(process.hrtime.bigint() - start) / 1e6 };
}

test('a 1 ms interval keeps firing while 8 acquires wait on a session another process holds; they then acquire in turn', async (t) => {
  const dir = scratch(t);
  const session = path.join(dir, 'busy.jsonl');
  const holder = new NodeChild(t);
  await holder.expect('READY');
  const [, heldEpoch] = await holder.ask(`acquire a ${session} 10000`, 'ACQUIRED');

  // What a 1 ms interval achieves on this machine with nothing waiting:
  // libuv's millisecond clock and a loaded 2-vCPU VM keep it below one
  // tick a millisecond, so the bound is relative to it as well as absolute.
  const idle = await ticksOver(WINDOW_MS);

  let inside = 0;
  let overlaps = 0;
  const acquired = [];
  const waits = Array.from({ length: WAITERS }, async () => {
    const lock = await sl.acquire(session, { timeoutMs: 60_000 });
    inside += 1;
    if (inside > 1) overlaps += 1;
    acquired.push(lock.epoch);
    // Hold across turns of the event loop, so that a second holder would overlap.
    await sleep(2);
    inside -= 1;
    await lock.release();
  });
  // Every acquire waits for real: the first has this process's turn and
  // waits on the child's lock, the others queue behind it.
  await waitFor(`${WAITERS} waiting acquires`, async () => (await sl.queued(session)) === WAITERS);

  const busy = await ticksOver(WINDOW_MS);
  assert.equal(await sl.queued(session), WAITERS, 'every acquire still waits after the window');
  assert.equal(acquired.length, 0, 'nobody acquired while the child held the session');

  const expected = busy.elapsedMs; // one tick a millisecond
  t.diagnostic(
    `1 ms interval over ${WINDOW_MS} ms: idle ${idle.ticks} ticks (${idle.elapsedMs.toFixed(1)} ms), ` +
      `with ${WAITERS} waiters ${busy.ticks} ticks (${busy.elapsedMs.toFixed(1)} ms) = ` +
      `${((100 * busy.ticks) / expected).toFixed(1)} % of one a millisecond, ${((100 * busy.ticks) / idle.ticks).toFixed(1)} % of idle`,
  );
  assert.ok(
    busy.ticks >= 0.9 * Math.min(expected, idle.ticks),
    `the interval fired ${busy.ticks} times in ${busy.elapsedMs.toFixed(1)} ms with ${WAITERS} waiters ` +
      `(idle: ${idle.ticks}); expected at least 90 %`,
  );

  await holder.ask('release a', 'RELEASED');
  await Promise.all(waits);
  assert.equal(acquired.length, WAITERS, 'every waiter acquired');
  assert.equal(overlaps, 0, 'the waiters held the session one at a time');
  const epochs = [Number(heldEpoch), ...acquired];
  for (let i = 1; i < epochs.length; i++) {
    assert.ok(epochs[i] > epochs[i - 1], `epochs increase with each acquisition: ${epochs.join(', ')}`);
  }
  assert.equal(await sl.queued(session), 0);
});

// index.d.ts: "How many acquisitions of this process wait for `sessionFile`
// now": the one that has this process's turn and waits on another
// process's lock counts too.
test('queued() counts every acquire of this process that waits on another process\'s lock', async (t) => {
  const dir = scratch(t);
  const session = path.join(dir, 'counted.jsonl');
  const holder = new NodeChild(t);
  await holder.expect('READY');
  await holder.ask(`acquire a ${session} 10000`, 'ACQUIRED');
  const ac = new AbortController();
  const waits = [];
  const start = () => waits.push(sl.acquire(session, { timeoutMs: 30_000, signal: ac.signal }).catch((e) => e.code));
  try {
    start();
    await waitFor('one waiting acquire to be counted', async () => (await sl.queued(session)) === 1, { timeoutMs: 2000 });
    for (let i = 1; i < WAITERS; i++) start();
    await waitFor(`${WAITERS} waiting acquires to be counted`, async () => (await sl.queued(session)) === WAITERS, { timeoutMs: 2000 });
  } finally {
    ac.abort();
    assert.deepEqual(await Promise.all(waits), waits.map(() => 'SESSIONLOCK_CANCELLED'));
  }
  assert.equal(await sl.queued(session), 0);
});
