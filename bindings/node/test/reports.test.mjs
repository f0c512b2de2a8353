// `status` and `doctor` hand back the documents `sessionlock status --json`
// and `doctor --json` print: objects that open with their schema version
// (issue 14 item 7), with the lock and the findings inside.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { acquire, doctor, status } from '../index.mjs';
import { removeDir, tempDir } from './support/procs.mjs';

test('status and doctor reports carry their schema version first', async () => {
  const dir = tempDir();
  try {
    const session = path.join(dir, 's.jsonl');
    fs.writeFileSync(session, '{"a":1}\n');
    const lock = await acquire(session, { lane: 'reports' });
    try {
      const report = await status(dir);
      assert.deepEqual(Object.keys(report), ['version', 'locks', 'errors']);
      assert.equal(report.version, 1);
      assert.equal(report.locks.length, 1);
      assert.equal(report.locks[0].lane, 'reports');
      assert.deepEqual(report.errors, []);

      const doc = await doctor(dir);
      assert.equal(Object.keys(doc)[0], 'version');
      assert.equal(doc.version, 1);
      assert.equal(doc.summary.locks, 1);
    } finally {
      await lock.release();
    }
  } finally {
    removeDir(dir);
  }
});
