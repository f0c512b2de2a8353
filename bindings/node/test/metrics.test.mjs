// `metrics()` (issue 16, part 1): the library's metrics of this process as
// a plain object, under the names and labels of docs/design.md §20.1. A
// scripted scenario on each backend (acquire, contend with a hand-off, time
// out, append, lose the lock past its lease and have a write refused,
// reclaim a SIGKILLed holder's lock) moves each figure by what it should.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  acquire,
  metrics,
  queued,
  SessionLockRevokedError,
  SessionLockTimeoutError,
  Transcript,
} from '../index.mjs';
import { backends, Procs, scratchSuite, startHolder, waitFor, within } from './support/procs.mjs';

const LIBRARY = {
  counters: [
    'sessionlock_handoffs_total',
    'sessionlock_reclaims_total',
    'sessionlock_revocations_total',
    'sessionlock_fenced_writes_refused_total',
    'sessionlock_takeovers_total',
    'sessionlock_transcript_appends_total',
    'sessionlock_transcript_entries_total',
    'sessionlock_transcript_bytes_total',
    'sessionlock_torn_tails_repaired_total',
  ],
  gauges: ['sessionlock_waiters'],
  histograms: ['sessionlock_acquire_wait_seconds', 'sessionlock_hold_seconds'],
};

/** The series of `name` in `snap` whose labels are exactly `labels`. */
function series(snap, kind, name, labels) {
  const list = snap[kind][name];
  assert.ok(Array.isArray(list), `${kind}.${name} is listed`);
  const want = JSON.stringify(Object.entries(labels).sort());
  return list.find((s) => JSON.stringify(Object.entries(s.labels).sort()) === want);
}

const value = (snap, kind, name, labels) => series(snap, kind, name, labels)?.value ?? 0;
const count = (snap, name, labels) => series(snap, 'histograms', name, labels)?.count ?? 0;
/** A counter's total over every label set with `backend`. */
const total = (snap, name, backend) =>
  snap.counters[name].filter((s) => s.labels.backend === backend).reduce((n, s) => n + s.value, 0);

test('metrics() lists every metric of the library, in a plain object', () => {
  const snap = metrics();
  assert.deepEqual(Object.keys(snap), ['counters', 'gauges', 'histograms']);
  for (const [kind, names] of Object.entries(LIBRARY)) {
    for (const name of names) assert.ok(Array.isArray(snap[kind][name]), `${kind}.${name}`);
  }
  for (const list of Object.values(snap.histograms)) {
    for (const s of list) {
      assert.equal(typeof s.count, 'number');
      assert.equal(typeof s.sum, 'number');
      assert.equal(typeof s.labels, 'object');
    }
  }
  // A fresh object each time: the caller may keep or change it.
  assert.notEqual(metrics(), snap);
});

describe('the figures move as the locks do', () => {
  const procs = new Procs();
  let dir;
  scratchSuite(procs, (d) => {
    dir = d;
  }, { cli: false });

  for (const b of backends()) {
    test(`on ${b.name}`, { skip: b.skip, timeout: 60_000 }, async () => {
      const backend = b.name;
      const opts = (lane, extra = {}) => ({ backend: b.backend, lane, timeoutMs: 20_000, ...extra });
      const at = (extra) => ({ backend, ...extra });
      const session = b.session(dir, 'metrics');
      const before = metrics();
      const delta = (after, kind, name, labels) => value(after, kind, name, labels) - value(before, kind, name, labels);
      const deltaCount = (after, name, labels) => count(after, name, labels) - count(before, name, labels);

      // Acquire (chat); another lane of this process (cron) waits for it:
      // counted as waiting until the release hands the lock over.
      const chat = await acquire(session, opts('chat'));
      const cronP = acquire(session, opts('cron'));
      await waitFor('cron in line', async () => (await queued(session, { backend: b.backend })) >= 1);
      const waiting = metrics();
      assert.equal(value(waiting, 'gauges', 'sessionlock_waiters', at({})), 1, JSON.stringify(waiting.gauges));
      await chat.release();
      const cron = await cronP;
      assert.equal(value(metrics(), 'gauges', 'sessionlock_waiters', at({})), 0);

      // A third acquisition times out behind cron.
      await assert.rejects(acquire(session, opts('chat', { timeoutMs: 50 })), SessionLockTimeoutError);

      // cron appends two entries and releases.
      const transcript = await Transcript.open(session, { backend: b.backend });
      await transcript.append(cron, [{ role: 'user', text: 'hi' }, { role: 'assistant', text: 'hello' }]);
      await cron.release();

      // A hold past its lease is revoked; its write is refused.
      const late = await acquire(session, opts('chat', { maxHoldMs: 100 }));
      const lost = await within(10_000, 'the revocation', late.revoked);
      assert.ok(lost instanceof SessionLockRevokedError, String(lost));
      await assert.rejects(transcript.append(late, [{ text: 'late' }]), SessionLockRevokedError);
      await late.release().catch(() => {});

      const after = metrics();
      const acquired = (lane) => deltaCount(after, 'sessionlock_acquire_wait_seconds', at({ lane, outcome: 'acquired' }));
      assert.equal(acquired('chat'), 2, 'chat and late');
      assert.equal(acquired('cron'), 1);
      assert.equal(deltaCount(after, 'sessionlock_acquire_wait_seconds', at({ lane: 'chat', outcome: 'timeout' })), 1);
      const held = (lane, end) => deltaCount(after, 'sessionlock_hold_seconds', at({ lane, end }));
      assert.equal(held('chat', 'handed_off'), 1, 'chat handed the lock to cron');
      assert.equal(held('cron', 'released'), 1);
      assert.equal(held('chat', 'revoked'), 1);
      assert.equal(held('chat', 'released'), 0);
      assert.equal(delta(after, 'counters', 'sessionlock_handoffs_total', at({ lane: 'chat' })), 1);
      assert.equal(delta(after, 'counters', 'sessionlock_transcript_appends_total', at({})), 1);
      assert.equal(delta(after, 'counters', 'sessionlock_transcript_entries_total', at({})), 2);
      assert.ok(delta(after, 'counters', 'sessionlock_transcript_bytes_total', at({})) > 40);
      assert.equal(delta(after, 'counters', 'sessionlock_fenced_writes_refused_total', at({ lane: 'chat', error: 'revoked' })), 1);
      assert.equal(delta(after, 'counters', 'sessionlock_revocations_total', at({ lane: 'chat', cause: 'overdue' })), 1);
      assert.equal(value(after, 'gauges', 'sessionlock_waiters', at({})), 0);
      // The waits' sum is in seconds: cron waited for chat's release, the
      // timeout for its 50 ms budget.
      const timeoutSum = series(after, 'histograms', 'sessionlock_acquire_wait_seconds', at({ lane: 'chat', outcome: 'timeout' })).sum -
        (series(before, 'histograms', 'sessionlock_acquire_wait_seconds', at({ lane: 'chat', outcome: 'timeout' }))?.sum ?? 0);
      assert.ok(timeoutSum >= 0.045 && timeoutSum < 10, `timeout waited ${timeoutSum} s`);

      // A holder in another process is SIGKILLed; this one takes its lock
      // over.
      const other = b.session(dir, 'reclaimed');
      const holder = await startHolder(procs, other, { backend: b.backend, lane: 'chat' });
      holder.child.kill('SIGKILL');
      await within(10_000, 'the holder to die', holder.child.exit);
      const beforeReclaim = total(metrics(), 'sessionlock_reclaims_total', backend);
      const taker = await acquire(other, opts('chat', { timeoutMs: 30_000 }));
      await taker.release();
      const reclaimed = metrics();
      assert.equal(total(reclaimed, 'sessionlock_reclaims_total', backend) - beforeReclaim, 1, JSON.stringify(reclaimed.counters.sessionlock_reclaims_total));
      if (backend === 'file') {
        assert.equal(value(reclaimed, 'counters', 'sessionlock_reclaims_total', at({ reason: 'dead-pid' })) -
          value(before, 'counters', 'sessionlock_reclaims_total', at({ reason: 'dead-pid' })), 1);
      }
      // No label names a session.
      const text = JSON.stringify(reclaimed);
      assert.ok(!text.includes(session) && !text.includes(other), text);
    });
  }
});
