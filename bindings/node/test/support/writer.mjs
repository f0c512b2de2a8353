// A Node writer of the mutual-exclusion tests:
//   node writer.mjs MODE SESSION BACKEND LOG COUNTER WRITER N PAUSE_MS
// MODE is `acquire` (the API) or `dropin` (acquireSessionWriteLock). Prints
// `READY` once the module is loaded, waits for `go` on stdin, then runs N
// critical sections (section.mjs), each under a fresh acquisition of
// SESSION's lock, and prints `DONE`.

import readline from 'node:readline';
import sessionlock from '../../index.js';
import { section } from './section.mjs';

// Only as a child of the tests (support/procs.mjs sets the mark): a runner
// that takes every file under test/ for a test finds this script inert.
if (!process.env.SESSIONLOCK_TEST_CHILD) process.exit(0);

const [mode, session, backend, log, counter, w, n, pauseMs] = process.argv.slice(2);

async function take() {
  if (mode === 'dropin') {
    const held = await sessionlock.acquireSessionWriteLock({ sessionFile: session, timeoutMs: 60_000, backend });
    return { epoch: held.lock.epoch, release: held.release };
  }
  const lock = await sessionlock.acquire(session, { timeoutMs: 60_000, backend });
  return { epoch: lock.epoch, release: () => lock.release() };
}

const rl = readline.createInterface({ input: process.stdin });
const go = new Promise((resolve) => rl.on('line', (l) => l.trim() === 'go' && resolve()));
process.stdout.write('READY\n');
await go;
rl.close();
for (let seq = 0; seq < Number(n); seq++) {
  const held = await take();
  await section({ log, counter, w, seq, epoch: held.epoch, pauseMs: Number(pauseMs) });
  await held.release();
}
process.stdout.write('DONE\n');
