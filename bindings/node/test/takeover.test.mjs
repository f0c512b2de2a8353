// Takeover detection of an Attempt: while it has released its lock for the
// model call (between releaseForPrompt and reacquireAfterPrompt), another
// process appends to its transcript (the CLI's `sessionlock append`, or a
// Node child); the reacquire then fails with SESSIONLOCK_TAKEOVER, and the
// attempt writes nothing more. Without a foreign change (even with another
// process taking and releasing the lock meanwhile) the reacquire succeeds
// and the next append lands.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Attempt, SessionLockTakeoverError, Transcript } from '../index.mjs';
import {
  Procs,
  backends,
  scratchSuite,
  startHolder,
} from './support/procs.mjs';

describe('Attempt takeover across processes', () => {
  const procs = new Procs();
  let dir;
  scratchSuite(procs, (d) => {
    dir = d;
  });

  /** Another process appends `entry` to `session`, under the lock. */
  const intruders = {
    async cli(b, session, entry) {
      const c = procs.cli([...b.cliArgs, 'append', '--timeout-ms', '10000', session, '--entry', JSON.stringify(entry)]);
      const { code } = await c.exited();
      assert.equal(code, 0, c.describe());
    },
    async node(b, session, entry) {
      const h = await startHolder(procs, session, { backend: b.backend });
      h.child.send(`append ${JSON.stringify([entry])}`);
      const appended = await h.child.line(/^(APPENDED|ERR) /);
      assert.match(appended.text, /^APPENDED /, `the Node child could not append: ${appended.text}`);
      h.child.send('release');
      await h.child.line(/^RELEASED$/);
      h.child.send('exit');
      await h.child.exited();
    },
  };

  for (const b of backends()) {
    for (const who of Object.keys(intruders)) {
      test(`${b.name}: an append by ${who === 'cli' ? 'the CLI' : 'a Node child'} in the prompt window is a takeover`, { skip: b.skip, timeout: 30_000 }, async () => {
        const session = b.session(dir, `takeover-${who}`);
        const attempt = await Attempt.begin(session, { backend: b.backend });
        try {
          await attempt.append([{ role: 'user', text: 'hello' }]);
          await attempt.releaseForPrompt();
          assert.equal(attempt.state, 'released');

          await intruders[who](b, session, { role: 'intruder', by: who });

          const err = await attempt.reacquireAfterPrompt().then(
            (r) => assert.fail(`reacquireAfterPrompt accepted the foreign append: ${JSON.stringify(r)}`),
            (e) => e,
          );
          assert.ok(err instanceof SessionLockTakeoverError, `reacquire rejected with ${err?.stack ?? err}`);
          assert.equal(err.code, 'SESSIONLOCK_TAKEOVER');
          assert.equal(attempt.isTakenOver, true);
          assert.ok(attempt.takeover && typeof attempt.takeover.phase === 'string' && typeof attempt.takeover.reason === 'string',
            `takeover: ${JSON.stringify(attempt.takeover)}`);
          // Sticky: the attempt writes nothing more.
          await assert.rejects(attempt.append([{ role: 'assistant', text: 'too late' }]), { code: 'SESSIONLOCK_TAKEOVER' });
          assert.equal(await attempt.acquireForCleanup(), 'noop');
        } finally {
          await attempt.dispose().catch(() => {});
        }
        const { entries } = await (await Transcript.open(session, { backend: b.backend })).readAll();
        assert.deepEqual(entries, [{ role: 'user', text: 'hello' }, { role: 'intruder', by: who }]);
      });
    }

    test(`${b.name}: no foreign change in the prompt window, the reacquire succeeds and an append lands`, { skip: b.skip, timeout: 30_000 }, async () => {
      const session = b.session(dir, 'no-takeover');
      const attempt = await Attempt.begin(session, { backend: b.backend });
      try {
        await attempt.append([{ role: 'user', text: 'hello' }]);
        await attempt.releaseForPrompt();
        // Another process takes the lock and lets it go without writing.
        const h = await startHolder(procs, session, { backend: b.backend });
        h.child.send('release');
        await h.child.line(/^RELEASED$/);

        const resync = await attempt.reacquireAfterPrompt();
        assert.deepEqual(resync.entries, []);
        assert.equal(attempt.state, 'held');
        assert.equal(attempt.isTakenOver, false);
        await attempt.append([{ role: 'assistant', text: 'hi' }]);
        await attempt.dispose();
      } finally {
        await attempt.dispose().catch(() => {});
      }
      const { entries } = await (await Transcript.open(session, { backend: b.backend })).readAll();
      assert.deepEqual(entries, [{ role: 'user', text: 'hello' }, { role: 'assistant', text: 'hi' }]);
    });
  }
});
