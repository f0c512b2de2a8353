// A holder killed with SIGKILL, both ways between Node and Rust: a Node
// process holding a lock is reclaimed by the `sessionlock` CLI waiting for
// it, and a `sessionlock exec` holding one is reclaimed by a Node `acquire`
// waiting for it, both at once rather than at the end of the (one minute)
// lease. On the file backend the holder is found dead by its pid; on
// PostgreSQL by its liveness connection dropping.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, test } from 'node:test';

import { acquire } from '../index.mjs';
import {
  Procs,
  backends,
  monoNs,
  pidfdCount,
  scratchSuite,
  startHolder,
  waitFor,
  waitForForeignWait,
  within,
} from './support/procs.mjs';

const LEASE_MS = 60_000;
// "At once": far below the lease, with room for a loaded 2-vCPU machine.
const PROMPT_MS = 3_000;

/** Whether `pid` is gone (or a zombie nobody reaped yet). */
function isDead(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z';
  } catch {
    return true;
  }
}

describe('a SIGKILLed holder is reclaimed at once across Node and Rust', () => {
  const procs = new Procs();
  let dir;
  scratchSuite(procs, (d) => {
    dir = d;
  });

  for (const b of backends()) {
    test(`${b.name}: a Node holder killed, the waiting CLI takes the lock`, { skip: b.skip, timeout: 30_000 }, async () => {
      const session = b.session(dir, 'kill-node');
      const holder = await startHolder(procs, session, { backend: b.backend, maxHoldMs: LEASE_MS });

      const exec = procs.cli([...b.cliArgs, 'exec', '--timeout-ms', '20000', '--max-hold-ms', String(LEASE_MS), session, '--',
        'sh', '-c', 'echo ACQUIRED "$SESSIONLOCK_EPOCH"']);
      // exec starts its keeper before it waits; on files, its wait on the
      // holder's death is a pidfd.
      await waitFor(`${exec.describe()} to start its keeper`, () => exec.childPids().length > 0);
      if (b.name === 'file') await waitFor(`${exec.describe()} to wait on the holder's pidfd`, () => pidfdCount(exec.pid) > 0);
      assert.equal(exec.lines.length, 0, `exec ran its command while the Node child held the lock: ${JSON.stringify(exec.lines.map((l) => l.text))}`);

      const killedAt = monoNs();
      holder.child.kill('SIGKILL');
      const got = await exec.line(/^ACQUIRED (\d+)$/, { ms: 15_000 });
      const ms = Number(got.at - killedAt) / 1e6;
      assert.ok(ms < PROMPT_MS, `the CLI took ${ms.toFixed(0)} ms to reclaim the lock of a killed Node holder (lease ${LEASE_MS} ms)`);
      assert.ok(Number(got.match[1]) > holder.epoch, `the CLI's epoch ${got.match[1]} is not above the killed holder's ${holder.epoch}`);
      const { code } = await exec.exited();
      assert.equal(code, 0, exec.describe());
    });

    test(`${b.name}: a sessionlock exec killed, the waiting Node acquire takes the lock`, { skip: b.skip, timeout: 30_000 }, async (t) => {
      const session = b.session(dir, 'kill-cli');
      const exec = procs.cli([...b.cliArgs, 'exec', '--timeout-ms', '10000', '--max-hold-ms', String(LEASE_MS), session, '--',
        'sh', '-c', 'echo HELD $$ "$SESSIONLOCK_EPOCH"; exec sleep 60']);
      const held = await exec.line(/^HELD (\d+) (\d+)$/);
      const commandPid = Number(held.match[1]);
      const cliEpoch = Number(held.match[2]);

      const ac = new AbortController();
      t.after(() => ac.abort());
      const pidfds = pidfdCount(process.pid);
      const waiting = acquire(session, { backend: b.backend, timeoutMs: 20_000, maxHoldMs: LEASE_MS, signal: ac.signal });
      waiting.catch(() => {});
      await waitForForeignWait(session, b.backend, pidfds);

      const killedAt = monoNs();
      exec.kill('SIGKILL');
      const lock = await within(15_000, 'the Node acquire to reclaim the killed exec\'s lock', waiting);
      const ms = Number(monoNs() - killedAt) / 1e6;
      try {
        assert.ok(ms < PROMPT_MS, `Node took ${ms.toFixed(0)} ms to reclaim the lock of a killed sessionlock exec (lease ${LEASE_MS} ms)`);
        assert.ok(lock.epoch > cliEpoch, `Node's epoch ${lock.epoch} is not above the killed exec's ${cliEpoch}`);
        assert.equal(lock.isRevoked, false);
        await lock.check();
        // exec's keeper kills the command when exec dies, however it dies.
        await waitFor(`the command of the killed exec (pid ${commandPid}) to be killed`, () => isDead(commandPid));
      } finally {
        await lock.release();
      }
    });
  }
});
