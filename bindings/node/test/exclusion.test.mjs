// Mutual exclusion across processes: four Node processes (through `acquire`,
// or through the OpenClaw drop-in `acquireSessionWriteLock`) and the Rust
// CLI (`sessionlock exec`) take turns on one session, on the file backend
// and on PostgreSQL. Each critical section logs `begin` and `end` records
// and does a read-modify-write of a counter with a pause in the middle
// (support/section.mjs); the log must show every section, whole, one at a
// time, in strictly increasing epochs, and the counter must not have lost an
// update.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';

import {
  Procs,
  backends,
  scratchSuite,
  supportDir,
  within,
} from './support/procs.mjs';

const NODE_WRITERS = 4;
const NODE_SECTIONS = 6;
const CLI_SECTIONS = 4;
const PAUSE_MS = 5;

/**
 * Checks the log of critical sections against the `expected` sections
 * (`"writer/seq"` strings): every record parses, sections do not nest or
 * overlap (begin, then the same section's end, in log order and in monotonic
 * time), each section carries one epoch and epochs increase strictly, and
 * the sections are exactly the expected ones. Returns the sections in order.
 */
function checkLog(text, expected) {
  const lines = text.split('\n').filter((l) => l !== '');
  const recs = lines.map((l, i) => {
    try {
      return JSON.parse(l);
    } catch {
      assert.fail(`log line ${i + 1} is not a whole record: ${JSON.stringify(l)}`);
    }
  });
  const context = (i) => recs.slice(Math.max(0, i - 2), i + 3).map((r) => JSON.stringify(r)).join('\n');
  assert.equal(recs.length % 2, 0, `odd number of records (${recs.length}): a section was cut short`);
  const sections = [];
  let lastEnd = -1n;
  let lastEpoch = -Infinity;
  for (let i = 0; i < recs.length; i += 2) {
    const b = recs[i];
    const e = recs[i + 1];
    assert.equal(b.ev, 'begin', `record ${i + 1} should begin a section:\n${context(i)}`);
    assert.equal(e.ev, 'end', `record ${i + 2} should end the section begun just before (overlap):\n${context(i + 1)}`);
    assert.ok(b.w === e.w && b.seq === e.seq && b.pid === e.pid,
      `sections overlap: ${b.w}/${b.seq} began, then ${e.w}/${e.seq} ended:\n${context(i)}`);
    const bt = BigInt(b.t);
    const et = BigInt(e.t);
    assert.ok(bt > lastEnd, `section ${b.w}/${b.seq} began before the previous one ended (monotonic time):\n${context(i)}`);
    assert.ok(et > bt, `section ${b.w}/${b.seq} ended before it began:\n${context(i)}`);
    lastEnd = et;
    assert.equal(b.epoch, e.epoch, `section ${b.w}/${b.seq} changed epoch`);
    assert.ok(Number.isSafeInteger(b.epoch) && b.epoch > lastEpoch,
      `epoch ${b.epoch} of ${b.w}/${b.seq} is not above the previous section's ${lastEpoch}:\n${context(i)}`);
    lastEpoch = b.epoch;
    sections.push(`${b.w}/${b.seq}`);
  }
  const seen = new Set();
  for (const s of sections) {
    assert.ok(!seen.has(s), `section ${s} ran twice`);
    seen.add(s);
  }
  const missing = expected.filter((s) => !seen.has(s));
  assert.deepEqual(missing, [], `sections missing from the log: ${missing.join(', ')}`);
  assert.equal(sections.length, expected.length, `unexpected sections: ${sections.filter((s) => !expected.includes(s)).join(', ')}`);
  return sections;
}

test('the checker catches overlapping, lost and torn sections', () => {
  const rec = (ev, w, seq, t, epoch) => JSON.stringify({ ev, w, seq, t: String(t), epoch, pid: w.length });
  const good = [rec('begin', 'a', 0, 1, 1), rec('end', 'a', 0, 2, 1), rec('begin', 'b', 0, 3, 2), rec('end', 'b', 0, 4, 2)].join('\n');
  assert.deepEqual(checkLog(good, ['a/0', 'b/0']), ['a/0', 'b/0']);
  const overlap = [rec('begin', 'a', 0, 1, 1), rec('begin', 'b', 0, 2, 2), rec('end', 'a', 0, 3, 1), rec('end', 'b', 0, 4, 2)].join('\n');
  assert.throws(() => checkLog(overlap, ['a/0', 'b/0']), /overlap/);
  assert.throws(() => checkLog(good, ['a/0', 'b/0', 'c/0']), /missing.*c\/0/);
  const sameEpoch = [rec('begin', 'a', 0, 1, 1), rec('end', 'a', 0, 2, 1), rec('begin', 'b', 0, 3, 1), rec('end', 'b', 0, 4, 1)].join('\n');
  assert.throws(() => checkLog(sameEpoch, ['a/0', 'b/0']), /epoch/);
  const backInTime = [rec('begin', 'a', 0, 1, 1), rec('end', 'a', 0, 5, 1), rec('begin', 'b', 0, 3, 2), rec('end', 'b', 0, 6, 2)].join('\n');
  assert.throws(() => checkLog(backInTime, ['a/0', 'b/0']), /before the previous one ended/);
  assert.throws(() => checkLog(`${good}\n{"ev":"beg`, ['a/0', 'b/0']), /not a whole record/);
});

describe('mutual exclusion between Node processes and the sessionlock CLI', () => {
  const procs = new Procs();
  let dir;
  scratchSuite(procs, (d) => {
    dir = d;
  });

  for (const b of backends()) {
    for (const mode of ['acquire', 'dropin']) {
      test(`${mode === 'dropin' ? 'acquireSessionWriteLock' : 'acquire'} on ${b.name}: every section whole, one at a time, none lost`, { skip: b.skip, timeout: 60_000 }, async (t) => {
        const session = b.session(dir, `excl-${mode}`);
        const log = path.join(dir, `excl-${b.name}-${mode}.log`);
        const counter = path.join(dir, `excl-${b.name}-${mode}.count`);
        const writers = [];
        for (let i = 0; i < NODE_WRITERS; i++) {
          const w = procs.node('writer.mjs', [mode, session, b.backend, log, counter, `node${i}`, String(NODE_SECTIONS), String(PAUSE_MS)]);
          writers.push(w);
        }
        await Promise.all(writers.map((w) => w.line(/^READY$/, { ms: 20_000 })));
        for (const w of writers) w.send('go');

        // The CLI takes its turns meanwhile, one exec after another.
        const cli = (async () => {
          for (let seq = 0; seq < CLI_SECTIONS; seq++) {
            const exec = procs.cli([...b.cliArgs, 'exec', '--timeout-ms', '60000', session, '--',
              process.execPath, path.join(supportDir, 'section.mjs'), log, counter, 'cli', String(seq), String(PAUSE_MS)]);
            const { code, signal } = await exec.exited(60_000);
            assert.equal(code, 0, `${exec.describe()} failed (signal ${signal})`);
          }
        })();
        await within(60_000, 'the Node writers to finish', Promise.all(writers.map((w) => w.line(/^DONE$/, { ms: 60_000 }))));
        await cli;
        for (const w of writers) {
          const { code } = await w.exited();
          assert.equal(code, 0, w.describe());
        }

        const expected = [];
        for (let i = 0; i < NODE_WRITERS; i++) for (let s = 0; s < NODE_SECTIONS; s++) expected.push(`node${i}/${s}`);
        for (let s = 0; s < CLI_SECTIONS; s++) expected.push(`cli/${s}`);
        const order = checkLog(fs.readFileSync(log, 'utf8'), expected);
        assert.equal(Number(fs.readFileSync(counter, 'utf8')), expected.length, 'the counter lost updates');
        // How much the writers interleaved (a diagnostic: scheduling decides it).
        let switches = 0;
        for (let i = 1; i < order.length; i++) if (order[i].split('/')[0] !== order[i - 1].split('/')[0]) switches++;
        t.diagnostic(`${order.length} sections, ${switches} hand-overs between writers`);
      });
    }
  }
});
