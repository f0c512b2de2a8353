// What happens to a lock its program does not release: garbage collection,
// normal exit, SIGKILL; and that the threads and package copies of one
// process share one registry, so none of them takes another's lock for an
// orphan of the process.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import sl from '../index.js';
import { NodeChild, PKG, PKG_DIR, runNode, scratch, waitFor } from './support/nodechild.mjs';

const exists = (p) => fs.existsSync(p);

/** Acquires `session` here with a short budget: the lock, or the error's code. */
async function tryAcquire(session, timeoutMs) {
  try {
    return await sl.acquire(session, { timeoutMs });
  } catch (e) {
    return e.code ?? e;
  }
}

test('a Lock the program forgets is released when it is garbage-collected; one it keeps is not', async (t) => {
  const dir = scratch(t);
  const dropped = path.join(dir, 'dropped.jsonl');
  const kept = path.join(dir, 'kept.jsonl');
  const child = new NodeChild(t, { execArgv: ['--expose-gc'] });
  await child.expect('READY');
  const [, keptEpoch, keptLock] = await child.ask(`acquire kept ${kept} 5000`, 'ACQUIRED');
  const [, , droppedLock] = await child.ask(`acquire dropped ${dropped} 5000`, 'ACQUIRED');
  assert.ok(exists(droppedLock), 'the lock file is there while the Lock is referenced');

  await child.ask('drop dropped', 'DROPPED');
  // Collect until the native finalizer has released the lock file (its
  // finalizer runs from the event loop after a collection).
  let collected = 0;
  await waitFor('the forgotten lock to be released', async () => {
    [collected] = await child.ask('gc', 'GC');
    return !exists(droppedLock);
  });
  assert.ok(Number(collected) >= 1, 'the forgotten Lock was collected');
  assert.equal(child.exit, undefined, 'the child is alive: garbage collection, not exit, released the lock');
  const mine = await tryAcquire(dropped, 500);
  assert.ok(mine instanceof sl.Lock, `another process takes the forgotten session at once (got ${mine})`);
  await mine.release();

  // The Lock still referenced survived the same collections.
  assert.ok(exists(keptLock));
  assert.equal(await tryAcquire(kept, 300), 'SESSIONLOCK_TIMEOUT');
  await child.ask('check kept', 'CHECKED');
  await child.ask('release kept', 'RELEASED');
  assert.ok(!exists(keptLock));
  const next = await tryAcquire(kept, 500);
  assert.ok(next.epoch > Number(keptEpoch));
  await next.release();
});

for (const how of ['end', 'exit']) {
  const label = how === 'end' ? 'the end of its script' : 'process.exit(0)';
  test(`a process that ends normally (${label}) while holding a lock removes its lock file`, async (t) => {
    const dir = scratch(t);
    const session = path.join(dir, `${how}.jsonl`);
    const child = new NodeChild(t);
    await child.expect('READY');
    const [, epoch, lockPath] = await child.ask(`acquire a ${session} 5000`, 'ACQUIRED');
    assert.ok(exists(lockPath));
    child.say(how);
    const { code, signal } = await child.waitExit();
    assert.deepEqual({ code, signal }, { code: 0, signal: null });
    // Removed, not merely reclaimable: look before anyone acquires.
    assert.ok(!exists(lockPath), `${lockPath} is left behind after ${label}`);
    const next = await tryAcquire(session, 500);
    assert.ok(next.epoch > Number(epoch));
    await next.release();
  });
}

test('a SIGKILLed Node holder leaves a lock the next acquirer reclaims at once, and a waiting one too', async (t) => {
  const dir = scratch(t);
  const later = path.join(dir, 'later.jsonl');
  const waited = path.join(dir, 'waited.jsonl');
  const child = new NodeChild(t);
  await child.expect('READY');
  const [, laterEpoch, laterLock] = await child.ask(`acquire a ${later} 5000`, 'ACQUIRED');
  const [, waitedEpoch] = await child.ask(`acquire b ${waited} 5000`, 'ACQUIRED');

  // Two waiters: one takes this process's turn and waits on the child's
  // lock, the other queues behind it, which is what shows that the first is
  // waiting (queued() counts only the second: see eventloop.test.mjs). Which
  // of the two gets the turn is up to the native runtime's scheduling.
  const waiters = [1, 2].map(() => sl.acquire(waited, { timeoutMs: 10_000 }));
  await waitFor('the waiters to queue', async () => (await sl.queued(waited)) >= 1);
  const killedAt = process.hrtime.bigint();
  child.proc.kill('SIGKILL');
  const got = await Promise.race(waiters);
  const waitedMs = Number(process.hrtime.bigint() - killedAt) / 1e6;
  assert.equal((await child.exited).signal, 'SIGKILL');
  assert.ok(got.epoch > Number(waitedEpoch));
  await got.release();
  for (const lock of await Promise.all(waiters)) if (lock !== got) await lock.release();

  assert.ok(exists(laterLock), 'SIGKILL leaves the lock file behind');
  const t0 = process.hrtime.bigint();
  const reclaimed = await tryAcquire(later, 2000);
  const laterMs = Number(process.hrtime.bigint() - t0) / 1e6;
  assert.ok(reclaimed instanceof sl.Lock, `the dead holder's lock is reclaimed (got ${reclaimed})`);
  assert.ok(reclaimed.epoch > Number(laterEpoch));
  t.diagnostic(`kill -> waiter holds: ${waitedMs.toFixed(2)} ms; acquire of the dead holder's lock: ${laterMs.toFixed(2)} ms`);
  // "At once": a reclaim is a few file operations, not a poll interval or a lease.
  assert.ok(waitedMs < 1000, `kill -> waiter holds took ${waitedMs.toFixed(1)} ms`);
  assert.ok(laterMs < 1000, `reclaim took ${laterMs.toFixed(1)} ms`);
  await reclaimed.release();
});

/** A worker thread that acquires on request: post `{session, timeoutMs}`, get the code back. */
function acquirer(t) {
  const w = new Worker(
    `const { parentPort } = require('node:worker_threads');
     const sl = require(${JSON.stringify(PKG)});
     parentPort.on('message', async ({ session, timeoutMs }) => {
       try {
         const lock = await sl.acquire(session, { timeoutMs });
         const epoch = lock.epoch;
         await lock.release();
         parentPort.postMessage({ code: 'ACQUIRED', epoch });
       } catch (e) {
         parentPort.postMessage({ code: e.code ?? String(e) });
       }
     });`,
    { eval: true },
  );
  t.after(() => w.terminate());
  return (msg) =>
    new Promise((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
      w.postMessage(msg);
    });
}

test('a worker thread waits for the main thread\'s lock and does not reclaim it', async (t) => {
  const dir = scratch(t);
  const session = path.join(dir, 'threads.jsonl');
  const ask = acquirer(t);
  const lock = await sl.acquire(session);
  const lockBytes = fs.readFileSync(lock.lockPath);

  assert.deepEqual(await ask({ session, timeoutMs: 300 }), { code: 'SESSIONLOCK_TIMEOUT' });
  await lock.check();
  assert.equal(lock.isRevoked, false);
  assert.deepEqual(fs.readFileSync(lock.lockPath), lockBytes, 'the lock file is untouched');

  const epoch = lock.epoch;
  await lock.release();
  const got = await ask({ session, timeoutMs: 2000 });
  assert.equal(got.code, 'ACQUIRED');
  assert.ok(got.epoch > epoch);
});

test('a worker thread that exits normally while holding a lock releases it', async (t) => {
  const dir = scratch(t);
  const session = path.join(dir, 'worker-exit.jsonl');
  const w = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     require(${JSON.stringify(PKG)}).acquire(workerData, { timeoutMs: 5000 })
       .then((lock) => parentPort.postMessage({ lockPath: lock.lockPath, epoch: lock.epoch }));`,
    { eval: true, workerData: session },
  );
  const exited = new Promise((resolve) => w.once('exit', resolve));
  const { lockPath, epoch } = await new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  assert.equal(await exited, 0);
  assert.ok(!exists(lockPath), 'the exited thread\'s lock file is removed');
  const next = await tryAcquire(session, 500);
  assert.ok(next.epoch > epoch);
  await next.release();
});

test('two copies of the package in one process share one registry: the second waits for the first\'s lock', async (t) => {
  const dir = scratch(t);
  const copies = [1, 2].map((i) => {
    const d = path.join(dir, `copy${i}`);
    fs.mkdirSync(d);
    for (const f of ['index.js', 'index.mjs', 'package.json', 'sessionlock.node']) {
      fs.copyFileSync(path.join(PKG_DIR, f), path.join(d, f));
    }
    return d;
  });
  const session = path.join(dir, 'copies.jsonl');
  const { code, out, err } = await runNode([path.join(PKG_DIR, 'test', 'support', 'twocopies.cjs'), ...copies, session], {
    SESSIONLOCK_TEST_CHILD: '1',
  });
  assert.equal(code, 0, `the child failed: ${out}${err}`);
  const r = JSON.parse(out.trim());
  t.diagnostic(JSON.stringify(r));
  assert.equal(r.distinctModules, true, 'two copies were loaded');
  assert.equal(r.copy2, 'SESSIONLOCK_TIMEOUT', 'copy 2 waits for copy 1\'s lock instead of reclaiming it');
  assert.equal(r.copy2InWorker, 'SESSIONLOCK_TIMEOUT', 'copy 2 in a worker thread waits too');
  assert.equal(r.copy1InWorker, 'SESSIONLOCK_TIMEOUT', 'copy 1 in a worker thread waits too');
  assert.equal(r.copy2SeesCopy1Waiter, true, 'copy 2 counts copy 1\'s waiter: one registry');
  assert.equal(r.abortedWaiter, 'SESSIONLOCK_CANCELLED');
  assert.equal(r.copy1Check, 'ok', 'copy 1\'s lock is intact');
  assert.equal(r.copy1Revoked, false);
  assert.equal(r.copy2AfterRelease, 'ACQUIRED');
});
