// One side of bench.mjs's Node → Node hand-off: a process that takes and
// gives back one session's lock on command. Stamps are CLOCK_MONOTONIC
// nanoseconds (process.hrtime.bigint() on Linux), comparable across
// processes.
//
//   node cycler.mjs <package index.js> <session> [backend]
//   go       start an acquire: replies WAITING at once, ACQUIRED <ns> once it
//            holds the lock
//   release  replies RELEASED <ns after release() resolved> <ns before the call>
//   exit
import { createRequire } from 'node:module';
import readline from 'node:readline';

const [pkg, session, backend] = process.argv.slice(2);
const sl = createRequire(import.meta.url)(pkg);
const opts = backend ? { backend } : {};
const now = () => process.hrtime.bigint();
const say = (line) => process.stdout.write(`${line}\n`);

let lock = null;

async function go() {
  const acquiring = sl.acquire(session, { ...opts, timeoutMs: 60_000 });
  // The acquire is under way (queued() cannot tell: it does not count a
  // lone waiter on another process's lock); the driver lets it fall asleep.
  say('WAITING');
  lock = await acquiring;
  say(`ACQUIRED ${now()}`);
}

let queue = Promise.resolve();
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = line.trim();
  if (cmd === 'go') {
    // Not queued behind: the driver's next command (to the other process)
    // must not wait for this acquire.
    go().catch((e) => say(`FAILED ${e.code ?? ''} ${e.message}`));
  } else if (cmd === 'release') {
    queue = queue.then(async () => {
      const t0 = now();
      await lock.release();
      const t1 = now();
      lock = null;
      say(`RELEASED ${t1} ${t0}`);
    }).catch((e) => say(`FAILED ${e.code ?? ''} ${e.message}`));
  } else if (cmd === 'exit') {
    process.exit(0);
  }
});
say(`READY ${process.pid}`);
