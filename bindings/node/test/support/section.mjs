// One critical section of the mutual-exclusion tests, run by whoever holds
// the session's lock: it appends a `begin` record to the shared log, does a
// read-modify-write of a shared counter file with a pause in the middle (a
// lost update if two sections overlap), and appends an `end` record. Records
// are JSON lines { ev, w, seq, t, epoch, pid } with `t` from CLOCK_MONOTONIC
// (one clock for every process of the machine).
//
// As a script (what `sessionlock exec ... -- node section.mjs ...` runs):
//   node section.mjs LOG COUNTER WRITER SEQ PAUSE_MS
// takes the epoch from SESSIONLOCK_EPOCH, which exec sets.

import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

function record(log, ev, w, seq, epoch) {
  const line = JSON.stringify({ ev, w, seq, t: process.hrtime.bigint().toString(), epoch, pid: process.pid });
  // One O_APPEND write per record: records never interleave within a line.
  fs.appendFileSync(log, `${line}\n`);
}

/** Runs one critical section of writer `w`, its `seq`-th, under epoch `epoch`. */
export async function section({ log, counter, w, seq, epoch, pauseMs }) {
  record(log, 'begin', w, seq, epoch);
  let n = 0;
  try {
    n = Number(fs.readFileSync(counter, 'utf8'));
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
  }
  await new Promise((resolve) => setTimeout(resolve, pauseMs));
  fs.writeFileSync(counter, String(n + 1));
  record(log, 'end', w, seq, epoch);
}

// As a script, only as a child of the tests (support/procs.mjs sets the
// mark): a runner that takes every file under test/ for a test finds it inert.
if (process.argv[1] === fileURLToPath(import.meta.url) && process.env.SESSIONLOCK_TEST_CHILD) {
  const [log, counter, w, seq, pauseMs] = process.argv.slice(2);
  const epoch = Number(process.env.SESSIONLOCK_EPOCH);
  if (!Number.isSafeInteger(epoch)) {
    process.stderr.write(`section.mjs: SESSIONLOCK_EPOCH is ${process.env.SESSIONLOCK_EPOCH}\n`);
    process.exit(2);
  }
  await section({ log, counter, w, seq: Number(seq), epoch, pauseMs: Number(pauseMs) });
}
