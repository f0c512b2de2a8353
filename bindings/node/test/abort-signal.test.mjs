// AbortSignal: an acquire aborted while it waits rejects with an AbortError
// (SESSIONLOCK_CANCELLED) and leaves nothing queued: the holder's release
// then hands the lock to nobody, so a fresh acquire gets it at once. An
// already-aborted signal rejects without waiting or taking anything.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { SessionLockCancelledError, SessionLockError, acquire, queued } from '../index.mjs';
import {
  Procs,
  backends,
  pidfdCount,
  scratchSuite,
  startHolder,
  waitFor,
  waitForForeignWait,
  within,
} from './support/procs.mjs';

/** The rejection of `p`, failing if it fulfils or takes longer than `ms`. */
async function rejection(p, what, ms = 5_000) {
  return await within(ms, what, p.then(
    (v) => assert.fail(`${what}: resolved with ${v} instead of rejecting`),
    (e) => e,
  ));
}

function assertAbortError(err, reason) {
  assert.ok(err instanceof SessionLockCancelledError, `not a SessionLockCancelledError: ${err?.stack ?? err}`);
  assert.ok(err instanceof SessionLockError);
  assert.equal(err.name, 'AbortError');
  assert.equal(err.code, 'SESSIONLOCK_CANCELLED');
  assert.equal(err.cause, reason, 'the cause is the signal\'s reason');
}

describe('acquire with an AbortSignal', () => {
  const procs = new Procs();
  let dir;
  scratchSuite(procs, (d) => {
    dir = d;
  }, { cli: false });

  for (const b of backends()) {
    for (const where of ['this process', 'another process']) {
      test(`${b.name}: aborted while waiting for a holder in ${where}, nothing stays queued`, { skip: b.skip, timeout: 30_000 }, async () => {
        const session = b.session(dir, `abort-${where.split(' ')[0]}`);
        const opts = { backend: b.backend };
        let releaseHolder;
        if (where === 'this process') {
          const lock = await acquire(session, opts);
          releaseHolder = () => lock.release();
        } else {
          const h = await startHolder(procs, session, opts);
          releaseHolder = async () => {
            const from = h.child.lines.length;
            h.child.send('release');
            await h.child.line(/^RELEASED$/, { from });
          };
        }

        const ac = new AbortController();
        const pidfds = pidfdCount(process.pid);
        const waiting = acquire(session, { ...opts, timeoutMs: 30_000, signal: ac.signal });
        if (where === 'this process') {
          await waitFor('the acquire to queue', async () => (await queued(session, opts)) === 1);
        } else {
          await waitForForeignWait(session, b.backend, pidfds);
        }
        const reason = new Error('the user gave up');
        ac.abort(reason);
        const err = await rejection(waiting, 'the aborted acquire');
        assertAbortError(err, reason);
        assert.equal(await queued(session, opts), 0, 'the aborted acquire is still queued');

        await releaseHolder();
        // Nobody was handed the lock, and the aborted acquire's place at the
        // head of the line is free: a try-once acquire gets it.
        const fresh = await within(5_000, 'a fresh acquire after the release', acquire(session, { ...opts, timeoutMs: 0 }));
        assert.equal(fresh.isRevoked, false);
        await fresh.release();
      });
    }

    test(`${b.name}: an already-aborted signal rejects without waiting or taking the lock`, { skip: b.skip, timeout: 30_000 }, async () => {
      const session = b.session(dir, 'pre-aborted');
      const opts = { backend: b.backend };
      const reason = new Error('aborted before the call');

      // The lock is free: the acquire must not take it.
      const err = await rejection(acquire(session, { ...opts, signal: AbortSignal.abort(reason) }), 'an acquire with an aborted signal on a free lock');
      assertAbortError(err, reason);
      const lock = await acquire(session, { ...opts, timeoutMs: 0 });

      // The lock is held: the acquire must not wait its 30 s.
      const started = Date.now();
      const err2 = await rejection(acquire(session, { ...opts, timeoutMs: 30_000, signal: AbortSignal.abort(reason) }), 'an acquire with an aborted signal on a held lock', 2_000);
      assertAbortError(err2, reason);
      assert.ok(Date.now() - started < 1_000, `it took ${Date.now() - started} ms to reject`);
      assert.equal(await queued(session, opts), 0);
      await lock.release();
    });

    test(`${b.name}: aborting after the acquire succeeded changes nothing`, { skip: b.skip }, async () => {
      const session = b.session(dir, 'abort-late');
      const ac = new AbortController();
      const lock = await acquire(session, { backend: b.backend, signal: ac.signal });
      ac.abort();
      await lock.check();
      assert.equal(lock.isRevoked, false);
      await lock.release();
      assert.equal(lock.isReleased, true);
    });
  }
});
