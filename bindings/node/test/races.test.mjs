// Calls on one lock that overlap, and what must never wait on the
// JavaScript thread: a release racing a fence or a write, a check while
// another context holds the fence, a busy session state file.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';

import { Transcript, acquire, acquireSessionWriteLock, queued } from '../index.mjs';
import { Procs, delay, scratchSuite, settledState, within } from './support/procs.mjs';

describe('overlapping calls on one lock', () => {
  const procs = new Procs();
  let dir;
  scratchSuite(procs, (d) => {
    dir = d;
  }, { cli: false });

  test('a release called while a fence is held waits for it, then releases', async () => {
    for (let i = 0; i < 10; i++) {
      const session = path.join(dir, `fence-release-${i}.jsonl`);
      const lock = await acquire(session);
      let inside = false;
      const fenced = lock.withFence(async () => {
        inside = true;
        await delay(30);
        return 'done';
      });
      while (!inside) await delay(1);
      const released = lock.release();
      assert.equal(await settledState(released), 'pending', 'the release waits for the fence');
      assert.equal(await within(5_000, `the fenced call (round ${i})`, fenced), 'done');
      await within(5_000, `the release after the fence (round ${i})`, released);
      assert.ok(!fs.existsSync(`${session}.lock`), `the lock file is gone (round ${i})`);
    }
  });

  test('a transcript write called before release() lands, and the release follows it', async () => {
    for (let i = 0; i < 20; i++) {
      const session = path.join(dir, `write-release-${i}.jsonl`);
      const lock = await acquire(session);
      const transcript = await Transcript.open(session);
      const written = transcript.append(lock, [{ round: i }]);
      const released = lock.release();
      await within(5_000, `the append (round ${i})`, written);
      await within(5_000, `the release (round ${i})`, released);
      assert.deepEqual((await transcript.readAll()).entries, [{ round: i }]);
      assert.ok(!fs.existsSync(`${session}.lock`));
    }
  });

  test('a check from outside a held fence does not stall the module', async () => {
    const session = path.join(dir, 'fence-check.jsonl');
    const other = path.join(dir, 'unrelated.jsonl');
    const lock = await acquire(session);
    let inside = false;
    const fenced = lock.withFence(async () => {
      inside = true;
      await delay(400);
      // A call of the module from inside the fence: it must not wait for
      // the check queued behind the fence.
      return await queued(other);
    });
    while (!inside) await delay(1);
    const checked = lock.check();
    const started = performance.now();
    assert.equal(await within(2_000, 'an unrelated call while the fence is held', queued(other)), 0);
    const took = performance.now() - started;
    assert.ok(took < 200, `an unrelated call took ${took.toFixed(0)} ms while the fence was held`);
    assert.equal(await within(5_000, 'the fenced call', fenced), 0);
    await within(5_000, 'the check after the fence', checked);
    await lock.release();
  });

  test('acquire never waits on the JavaScript thread for a busy state file', async (t) => {
    const session = path.join(dir, 'busy-state.jsonl');
    await (await acquire(session)).release();
    const holder = procs.spawn('flock', 'flock', ['-x', `${session}.epoch`, '-c', 'echo locked; sleep 2']);
    await holder.line(/^locked$/);
    const started = performance.now();
    const acquiring = acquire(session, { timeoutMs: 10_000 });
    const blocked = performance.now() - started;
    t.diagnostic(`acquire() returned its promise after ${blocked.toFixed(2)} ms`);
    assert.ok(blocked < 20, `acquire() held the JavaScript thread for ${blocked.toFixed(1)} ms`);
    assert.equal(await settledState(acquiring), 'pending', 'the acquire waits for the state file');
    const lock = await within(10_000, 'the acquire once the state file is free', acquiring);
    await lock.release();
  });

  test('a second release() while the first is under way settles with it', async () => {
    const session = path.join(dir, 'double-release.jsonl');
    const lock = await acquire(session);
    let inside = false;
    const fenced = lock.withFence(async () => {
      inside = true;
      await delay(50);
    });
    while (!inside) await delay(1);
    const first = lock.release();
    const second = lock.release();
    assert.equal(await settledState(second), 'pending', 'the second release waits like the first');
    await fenced;
    await Promise.all([first, second]);
    assert.ok(!fs.existsSync(`${session}.lock`));
  });

  test('the drop-in reads parameters as OpenClaw does: anything but a positive number is the default', async () => {
    const session = path.join(dir, 'dropin-params.jsonl');
    const { release, lock } = await acquireSessionWriteLock({
      sessionFile: session,
      timeoutMs: -1,
      staleMs: Number.NaN,
      maxHoldMs: Number.POSITIVE_INFINITY,
      allowReentrant: 1,
    });
    assert.equal(lock.holder.maxHoldMs, 300_000, 'maxHoldMs: Infinity means the default lease');
    await release();
    const fractional = await acquireSessionWriteLock({ sessionFile: session, maxHoldMs: 1500.7 });
    assert.equal(fractional.lock.holder.maxHoldMs, 1500);
    await fractional.release();
  });
});
