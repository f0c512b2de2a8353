// What a caller sees when the lock is busy or the call is wrong: a timeout
// names the holder in another process (a Node child or `sessionlock exec`),
// the OpenClaw drop-in's timeout has OpenClaw's error shape, bad arguments
// are TypeErrors and RangeErrors, and a fence held across an async callback
// keeps another process from reclaiming the lock past its lease until the
// callback is done.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  SessionLockTimeoutError,
  SessionWriteLockTimeoutError,
  acquire,
  acquireSessionWriteLock,
  isSessionWriteLockAcquireError,
  isSessionWriteLockTimeoutError,
  queued,
} from '../index.mjs';
import {
  Procs,
  backends,
  delay,
  monoNs,
  pidfdCount,
  removeDir,
  scratchSuite,
  startHolder,
  tempDir,
  waitFor,
  within,
} from './support/procs.mjs';

const TIMEOUT_MS = 200;

describe('timeouts name the holder', () => {
  const procs = new Procs();
  let dir;
  scratchSuite(procs, (d) => {
    dir = d;
  });

  /** Holders in another process: `{ pid, lockPath?, stop() }`. */
  const holders = {
    async node(b, session) {
      const h = await startHolder(procs, session, { backend: b.backend });
      return { pid: h.pid, lockPath: h.lockPath, stop: () => h.child.kill('SIGKILL') };
    },
    async cli(b, session) {
      const exec = procs.cli([...b.cliArgs, 'exec', session, '--', 'sh', '-c', 'echo HELD "$SESSIONLOCK_LOCK_PATH"; exec sleep 60']);
      const held = await exec.line(/^HELD (.+)$/);
      return { pid: exec.pid, lockPath: held.match[1], stop: () => exec.kill('SIGKILL') };
    },
  };

  for (const b of backends()) {
    for (const who of Object.keys(holders)) {
      test(`${b.name}: acquire's timeout names the ${who === 'cli' ? 'sessionlock exec' : 'Node'} holder`, { skip: b.skip, timeout: 20_000 }, async () => {
        const session = b.session(dir, `timeout-${who}`);
        const holder = await holders[who](b, session);
        try {
          const started = Date.now();
          const err = await acquire(session, { backend: b.backend, timeoutMs: TIMEOUT_MS }).then(
            () => assert.fail('acquired a lock another process holds'),
            (e) => e,
          );
          assert.ok(Date.now() - started >= TIMEOUT_MS, `gave up after ${Date.now() - started} ms`);
          assert.ok(err instanceof SessionLockTimeoutError, `rejected with ${err?.stack ?? err}`);
          assert.equal(err.name, 'SessionLockTimeoutError');
          assert.equal(err.code, 'SESSIONLOCK_TIMEOUT');
          assert.equal(err.timeoutMs, TIMEOUT_MS);
          assert.ok(err.holder, 'the error names no holder');
          assert.equal(err.holder.pid, holder.pid, `the holder named: ${JSON.stringify(err.holder)}`);
          assert.equal(err.holder.alive, true);
          assert.equal(err.holder.lockPath, holder.lockPath);
          assert.equal(await queued(session, { backend: b.backend }), 0, 'the timed-out acquire is still queued');
        } finally {
          holder.stop();
        }
      });
    }

    test(`${b.name}: the drop-in's timeout is OpenClaw's SessionWriteLockTimeoutError`, { skip: b.skip, timeout: 20_000 }, async () => {
      const session = b.session(dir, 'dropin-timeout');
      const holder = await holders.node(b, session);
      try {
        const err = await acquireSessionWriteLock({ sessionFile: session, timeoutMs: TIMEOUT_MS, backend: b.backend }).then(
          () => assert.fail('acquired a lock another process holds'),
          (e) => e,
        );
        assert.ok(err instanceof SessionWriteLockTimeoutError, `rejected with ${err?.stack ?? err}`);
        assert.ok(err instanceof Error);
        assert.equal(err.name, 'SessionWriteLockTimeoutError');
        assert.equal(err.code, 'OPENCLAW_SESSION_WRITE_LOCK_TIMEOUT');
        assert.ok(isSessionWriteLockTimeoutError(err) && isSessionWriteLockAcquireError(err));
        assert.equal(err.timeoutMs, TIMEOUT_MS);
        assert.equal(err.lockPath, holder.lockPath);
        if (b.name === 'file') assert.equal(err.lockPath, `${session}.lock`);
        const owner = err.owner.match(/^pid=(\d+) alive=true ageMs=(\d+)$/);
        assert.ok(owner, `owner: ${JSON.stringify(err.owner)}`);
        assert.equal(Number(owner[1]), holder.pid);
        assert.equal(err.message, `session file locked (timeout ${TIMEOUT_MS}ms): ${err.owner} ${err.lockPath}`);
        assert.match(err.message, /^session file locked \(timeout \d+ms\): pid=\d+ alive=true ageMs=\d+ \S/);
        assert.ok(err.cause instanceof SessionLockTimeoutError, 'the cause is the SessionLockTimeoutError');
        assert.equal(err.cause.holder.pid, holder.pid);
      } finally {
        holder.stop();
      }
    });

    test(`${b.name}: withFence around an async callback holds off another process's reclaim past the lease`, { skip: b.skip, timeout: 20_000 }, async () => {
      const LEASE_MS = 500;
      const session = b.session(dir, 'fence');
      const waiter = procs.node('holder.mjs');
      waiter.send('ping');
      await waiter.line(/^PONG$/, { ms: 10_000 });

      const lock = await acquire(session, { backend: b.backend, maxHoldMs: LEASE_MS });
      const takenAt = Date.now();
      const from = waiter.lines.length;
      waiter.send(`acquire ${JSON.stringify({ session, opts: { backend: b.backend, timeoutMs: 15_000, maxHoldMs: 60_000 } })}`);
      if (b.name === 'file') {
        // Within the lease, the other process waits for this one's death.
        await waitFor('the other process to wait on this process\'s pidfd', () => pidfdCount(waiter.pid) > 0);
      }
      assert.ok(Date.now() - takenAt < LEASE_MS / 2, 'too slow to enter the fence well within the lease: inconclusive');
      let fenceEnd;
      const inside = lock.withFence(async () => {
        // Well past the lease, with the other process trying to reclaim it,
        // the fence still holds: nobody has the lock. (Waiting for time to
        // pass is the point here.)
        await delay(Math.max(0, 2 * LEASE_MS - (Date.now() - takenAt)));
        assert.equal(waiter.lines.length, from, `the waiter got the lock inside the fence: ${JSON.stringify(waiter.lines.map((l) => l.text))}`);
        fenceEnd = monoNs();
        return 'done';
      });
      // The fence's exit may report the lock lost; the callback ran whole.
      await inside.catch((e) => assert.match(e.code, /^SESSIONLOCK_(REVOKED|FENCED)$/, e.stack));
      assert.ok(fenceEnd, 'the fenced callback did not finish');
      assert.ok(Date.now() - takenAt > LEASE_MS);

      const held = await waiter.line(/^(HELD|ERR) /, { ms: 10_000, from });
      assert.match(held.text, /^HELD /);
      const t = BigInt(JSON.parse(held.text.slice(5)).t);
      assert.ok(t > fenceEnd, 'the waiter took the lock before the fenced callback ended');
      const err = await within(5_000, 'the lock to report its loss', lock.revoked);
      assert.match(err.code, /^SESSIONLOCK_(REVOKED|FENCED)$/);
      assert.equal(lock.isRevoked, true);
      await lock.release().catch(() => {});
    });
  }
});

// A call's own option wins over the environment, as a builder value does in
// Rust and a flag on the command line; without one, the environment applies.
describe('options and the environment', () => {
  let dir;
  before(() => {
    dir = tempDir();
  });
  after(() => removeDir(dir));

  test("a call's timeoutMs wins over SESSIONLOCK_ACQUIRE_TIMEOUT_MS, which applies without one", { timeout: 20_000 }, async () => {
    const session = `${dir}/env-precedence.jsonl`;
    const held = await acquire(session);
    const saved = process.env.SESSIONLOCK_ACQUIRE_TIMEOUT_MS;
    process.env.SESSIONLOCK_ACQUIRE_TIMEOUT_MS = '150';
    const refused = (p) => p.then((l) => assert.fail(`acquired a held lock: ${l}`), (e) => e);
    try {
      const explicit = await refused(acquire(session, { timeoutMs: 50 }));
      assert.ok(explicit instanceof SessionLockTimeoutError, `${explicit?.stack ?? explicit}`);
      assert.equal(explicit.timeoutMs, 50);
      const fromEnv = await refused(acquire(session));
      assert.ok(fromEnv instanceof SessionLockTimeoutError, `${fromEnv?.stack ?? fromEnv}`);
      assert.equal(fromEnv.timeoutMs, 150);
    } finally {
      if (saved === undefined) delete process.env.SESSIONLOCK_ACQUIRE_TIMEOUT_MS;
      else process.env.SESSIONLOCK_ACQUIRE_TIMEOUT_MS = saved;
      await held.release();
    }
  });
});

describe('bad arguments', () => {
  let dir;
  before(() => {
    dir = tempDir();
  });
  after(() => removeDir(dir));

  test('acquire rejects wrong types with TypeError and bad numbers with RangeError', async () => {
    const s = `${dir}/args.jsonl`;
    for (const bad of ['', 42, undefined, 'a\0b']) {
      await assert.rejects(acquire(bad), TypeError, `session ${JSON.stringify(bad)}`);
    }
    for (const opts of [{ timeoutMs: -1 }, { timeoutMs: Number.NaN }, { timeoutMs: 1.5 }, { maxHoldMs: Infinity }, { maxHoldMs: 0 }, { staleMs: -5 }, { holdExceeded: 'never' }]) {
      await assert.rejects(acquire(s, opts), RangeError, JSON.stringify(opts));
    }
    for (const opts of [null, 'fast', { timeoutMs: '100' }, { reentrant: 'yes' }, { lane: 5 }, { backend: 1 }, { signal: {} }, { openclawCompat: 1 }]) {
      await assert.rejects(acquire(s, opts), TypeError, String(JSON.stringify(opts)));
    }
    await assert.rejects(acquireSessionWriteLock(null), TypeError);
    await assert.rejects(acquireSessionWriteLock({ sessionFile: '' }), TypeError);
    // The drop-in reads a non-positive duration as OpenClaw does: the default.
    await (await acquireSessionWriteLock({ sessionFile: s, timeoutMs: -1 })).release();
    await assert.rejects(queued(''), TypeError);

    // None of them took or queued anything.
    assert.equal(await queued(s), 0);
    const lock = await acquire(s, { timeoutMs: 0 });
    await assert.rejects(lock.withFence('not a function'), TypeError);
    await assert.rejects(lock.extend(-1), RangeError);
    await lock.release();
  });
});
