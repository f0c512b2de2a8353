'use strict';
// Loads two copies of the package (argv: copy1 dir, copy2 dir, session) in
// one process, copy 1 first, holds the session through copy 1 and reports,
// as one JSON line on stdout, what copy 2 (in this thread and in a worker
// thread) does when it tries to take it. Driven by test/lifetime.test.mjs;
// does nothing without SESSIONLOCK_TEST_CHILD.
if (!process.env.SESSIONLOCK_TEST_CHILD) return;

const path = require('node:path');
const { Worker } = require('node:worker_threads');

const [dir1, dir2, session] = process.argv.slice(2);

async function codeOf(p) {
  try {
    const lock = await p;
    await lock.release();
    return 'ACQUIRED';
  } catch (e) {
    return e.code ?? String(e);
  }
}

async function inWorker(dir) {
  const w = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const sl = require(workerData.pkg);
     sl.acquire(workerData.session, { timeoutMs: 300 }).then(
       async (lock) => { await lock.release(); parentPort.postMessage('ACQUIRED'); },
       (e) => parentPort.postMessage(e.code ?? String(e)));`,
    { eval: true, workerData: { pkg: path.join(dir, 'index.js'), session } },
  );
  const [code] = await Promise.all([
    new Promise((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    }),
    new Promise((resolve) => w.once('exit', resolve)),
  ]);
  return code;
}

(async () => {
  const c1 = require(path.join(dir1, 'index.js'));
  const c2 = require(path.join(dir2, 'index.js'));
  const out = { distinctModules: c1 !== c2 };
  const lock = await c1.acquire(session);
  out.epoch = lock.epoch;
  out.copy2 = await codeOf(c2.acquire(session, { timeoutMs: 300 }));
  out.copy2InWorker = await inWorker(dir2);
  out.copy1InWorker = await inWorker(dir1);
  // Copy 2 sees copy 1's waiters: one registry.
  const ac = new AbortController();
  const waiting = codeOf(c1.acquire(session, { timeoutMs: 10_000, signal: ac.signal }));
  const deadline = Date.now() + 5000;
  while ((await c2.queued(session)) !== 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  out.copy2SeesCopy1Waiter = (await c2.queued(session)) === 1;
  ac.abort();
  out.abortedWaiter = await waiting;
  try {
    await lock.check();
    out.copy1Check = 'ok';
  } catch (e) {
    out.copy1Check = e.code ?? String(e);
  }
  out.copy1Revoked = lock.isRevoked;
  await lock.release();
  out.copy2AfterRelease = await codeOf(c2.acquire(session, { timeoutMs: 2000 }));
  process.stdout.write(`${JSON.stringify(out)}\n`);
})().catch((e) => {
  process.stdout.write(`FAILED ${String(e.stack ?? e).replace(/\n/g, ' | ')}\n`);
  process.exitCode = 1;
});
