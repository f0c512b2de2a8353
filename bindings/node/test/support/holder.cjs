'use strict';
// A Node process that holds sessionlock locks on command (test/support/
// nodechild.mjs drives it). One command a line on stdin, replies on stdout:
//
//   acquire <name> <session> <timeoutMs>  ACQUIRED <name> <epoch> <lockPath> | ERROR <name> <code>
//   release <name>                        RELEASED <name> | ERROR <name> <code>
//   check <name>                          CHECKED <name> | ERROR <name> <code>
//   drop <name>                           DROPPED <name>   (forgets the Lock: only GC can release it)
//   gc                                    GC <collected>   (needs --expose-gc; <collected>: dropped Locks finalized so far)
//   exit                                  process.exit(0) with the locks held
//   end                                   ENDING, then the script runs out (locks held)
//
// `SESSIONLOCK_TEST_PKG` names the package to load (default: this one).
// Without SESSIONLOCK_TEST_CHILD it does nothing, so that a test runner
// that takes every file under test/ for a test file finds nothing to run.
if (!process.env.SESSIONLOCK_TEST_CHILD) return;

const path = require('node:path');
const readline = require('node:readline');

const sl = require(process.env.SESSIONLOCK_TEST_PKG || path.resolve(__dirname, '..', '..', 'index.js'));

const locks = new Map();
let collected = 0;
const finalized = new FinalizationRegistry(() => {
  collected += 1;
});
const say = (line) => process.stdout.write(`${line}\n`);
const tick = () => new Promise((r) => setImmediate(r));

async function run(words) {
  const [cmd, name, ...rest] = words;
  try {
    switch (cmd) {
      case 'acquire': {
        const [session, timeoutMs] = rest;
        const lock = await sl.acquire(session, { timeoutMs: Number(timeoutMs) });
        locks.set(name, lock);
        return say(`ACQUIRED ${name} ${lock.epoch} ${lock.lockPath}`);
      }
      case 'release':
        await locks.get(name).release();
        locks.delete(name);
        return say(`RELEASED ${name}`);
      case 'check':
        await locks.get(name).check();
        return say(`CHECKED ${name}`);
      case 'drop':
        finalized.register(locks.get(name), name);
        locks.delete(name);
        return say(`DROPPED ${name}`);
      case 'gc':
        // Native finalizers run after the collection, from the event loop:
        // give them turns between collections.
        for (let i = 0; i < 8; i++) {
          global.gc();
          await tick();
          await new Promise((r) => setTimeout(r, 5));
        }
        return say(`GC ${collected}`);
      case 'exit':
        return process.exit(0);
      case 'end':
        rl.close();
        process.stdin.destroy();
        return say('ENDING');
      default:
        return say(`FAILED unknown command ${cmd}`);
    }
  } catch (e) {
    if (e && typeof e.code === 'string' && e.code.startsWith('SESSIONLOCK_')) return say(`ERROR ${name} ${e.code}`);
    return say(`FAILED ${cmd} ${String(e && e.stack ? e.stack : e).replace(/\n/g, ' | ')}`);
  }
}

// Commands run one at a time, in order.
let queue = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const words = line.trim().split(/\s+/);
  if (words[0]) queue = queue.then(() => run(words));
});
say(`READY ${process.pid}`);
