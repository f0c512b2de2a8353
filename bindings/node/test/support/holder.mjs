// A child that holds session locks on command, one line per command on
// stdin, one answer line on stdout:
//   acquire {"session":S,"opts":{...}}  -> HELD {"pid","epoch","lockPath","t"} | ERR {...}
//                                          (t: CLOCK_MONOTONIC ns when acquired)
//   append [entries]                    -> APPENDED {"offset","len"} | ERR {...}  (Transcript.append with the held lock)
//   release                             -> RELEASED | ERR {...}
//   ping                                -> PONG (the module is loaded)
//   exit                                -> exits 0
// Errors are reported as ERR {"name","code","message","holder"}.

import readline from 'node:readline';
import sessionlock from '../../index.js';

// Only as a child of the tests (support/procs.mjs sets the mark): a runner
// that takes every file under test/ for a test finds this script inert.
if (!process.env.SESSIONLOCK_TEST_CHILD) process.exit(0);

let lock = null;
let session = null;
let opts = {};

function err(e) {
  return `ERR ${JSON.stringify({ name: e?.name, code: e?.code, message: String(e?.message ?? e), holder: e?.holder ?? null })}`;
}

async function handle(line) {
  const sp = line.indexOf(' ');
  const cmd = sp < 0 ? line : line.slice(0, sp);
  const arg = sp < 0 ? '' : line.slice(sp + 1);
  switch (cmd) {
    case 'acquire': {
      ({ session, opts } = JSON.parse(arg));
      lock = await sessionlock.acquire(session, opts);
      const t = process.hrtime.bigint().toString();
      return `HELD ${JSON.stringify({ pid: process.pid, epoch: lock.epoch, lockPath: lock.lockPath, t })}`;
    }
    case 'append': {
      const t = await sessionlock.Transcript.open(session, { backend: opts.backend });
      const at = await t.append(lock, JSON.parse(arg));
      return `APPENDED ${JSON.stringify(at)}`;
    }
    case 'release':
      await lock.release();
      lock = null;
      return 'RELEASED';
    case 'ping':
      return 'PONG';
    case 'exit':
      process.exit(0);
      break;
    default:
      throw new Error(`unknown command ${cmd}`);
  }
}

// Commands run one after another, in order.
let chain = Promise.resolve();
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  chain = chain.then(async () => {
    let out;
    try {
      out = await handle(line.trim());
    } catch (e) {
      out = err(e);
    }
    process.stdout.write(`${out}\n`);
  });
});
