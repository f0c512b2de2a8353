// The watchdog: a lock held past its lease (`maxHoldMs`) is revoked, and
// JavaScript sees it: `isRevoked`, the `revoked` promise resolving with a
// SESSIONLOCK_REVOKED error, and `withFence` refusing to run its callback.
// Another process may take the session then.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { SessionLockRevokedError, acquire } from '../index.mjs';
import {
  Procs,
  backends,
  delay,
  scratchSuite,
  settledState,
  within,
} from './support/procs.mjs';

const LEASE_MS = 300;

describe('watchdog revocation', () => {
  const procs = new Procs();
  let dir;
  scratchSuite(procs, (d) => {
    dir = d;
  });

  for (const b of backends()) {
    test(`${b.name}: a lock held past maxHoldMs is revoked and its fence refused`, { skip: b.skip, timeout: 30_000 }, async () => {
      const session = b.session(dir, 'watchdog');
      const started = Date.now();
      const lock = await acquire(session, { backend: b.backend, maxHoldMs: LEASE_MS });
      assert.equal(lock.isRevoked, false);
      assert.equal(await lock.withFence(() => 'ran'), 'ran', 'the fence runs within the lease');

      const err = await within(5_000, 'the revoked promise to resolve', lock.revoked);
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= LEASE_MS, `revoked after ${elapsed} ms, before the ${LEASE_MS} ms lease ended`);
      assert.ok(err instanceof SessionLockRevokedError, `revoked resolved with ${err?.stack ?? err}`);
      assert.equal(err.code, 'SESSIONLOCK_REVOKED');
      assert.equal(lock.isRevoked, true);

      let ran = false;
      const refused = await lock.withFence(() => {
        ran = true;
      }).then(() => assert.fail('withFence ran on a revoked lock'), (e) => e);
      assert.ok(refused instanceof SessionLockRevokedError, `withFence rejected with ${refused?.stack ?? refused}`);
      assert.equal(refused.code, 'SESSIONLOCK_REVOKED');
      assert.equal(ran, false, 'the fenced callback ran');
      await assert.rejects(lock.check(), { code: 'SESSIONLOCK_REVOKED' });

      // The session is free for another process (the CLI, trying once).
      const exec = procs.cli([...b.cliArgs, 'exec', '--timeout-ms', '0', session, '--', 'true']);
      const { code } = await exec.exited();
      assert.equal(code, 0, `the CLI could not take the revoked session: ${exec.describe()}`);

      await lock.release().catch((e) => assert.equal(e.code, 'SESSIONLOCK_REVOKED', `release of a revoked lock: ${e.stack}`));
    });

    test(`${b.name}: revoked never resolves for a lock released within its lease`, { skip: b.skip, timeout: 10_000 }, async () => {
      const session = b.session(dir, 'released');
      const lock = await acquire(session, { backend: b.backend, maxHoldMs: LEASE_MS });
      const revoked = lock.revoked;
      await lock.release();
      // Past the lease that was released: nothing revokes a released lock.
      await delay(LEASE_MS + 200);
      assert.equal(await settledState(revoked), 'pending');
      assert.equal(lock.isRevoked, false);
    });
  }
});
