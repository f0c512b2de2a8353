// One agent turn through the attempt controller, the way an OpenClaw-style
// runner wraps its model call: hold the session only while writing, release
// it for the model call, and learn whether anyone changed the transcript
// meanwhile.
//
//   node examples/turn.mjs [/tmp/sessions/abc.jsonl]
//
// Run it twice at once on one file: each turn waits for the other's writes,
// never for its model call, and a turn whose transcript the other changed
// during its model call reports the takeover instead of writing over it.
import os from 'node:os';
import path from 'node:path';
// In a gateway: `from 'sessionlock'`.
import { Attempt, SessionLockTakeoverError, Transcript, classifiers } from '../index.mjs';

const session = process.argv[2] ?? path.join(os.tmpdir(), 'sessionlock-example.jsonl');

/** Stands in for the model: takes a while, then answers. */
async function callModel(prompt) {
  await new Promise((resolve) => setTimeout(resolve, 500));
  return `you said: ${prompt}`;
}

// Begin: the attempt holds the session lock (and, in this process, the
// session itself until dispose: another attempt here waits its turn).
const attempt = await Attempt.begin(session, {
  timeoutMs: 10_000,
  lane: 'channel',
  // OpenClaw's transcript-only messages (delivery mirrors, gateway
  // injections) that other lanes append meanwhile are benign.
  classifier: classifiers.openclaw,
});
try {
  await attempt.append(
    [{ type: 'message', message: { role: 'user', content: 'hi' } }],
    { durability: 'data' },
  );

  // The model call: the lock is released for its duration, so other lanes
  // can write to this session meanwhile; reacquiring checks what changed.
  await attempt.releaseForPrompt();
  let reply;
  let modelError;
  try {
    reply = await callModel('hi');
  } catch (e) {
    modelError = e;
  }
  // Reacquire whatever the model call did, so that the attempt can clean up.
  let resync = null;
  try {
    resync = await attempt.reacquireAfterPrompt();
  } catch (e) {
    if (!(e instanceof SessionLockTakeoverError)) throw e;
    // Someone changed the transcript in a way that is not ours to merge:
    // the reply is not written (and no later write of this attempt lands).
    console.error(`not writing the reply: ${e.message}`);
  }
  if (modelError) throw modelError;
  if (resync) {
    // Benign entries other lanes appended meanwhile: merge them into the
    // in-memory session, as a reload would have shown them.
    for (const entry of resync.entries) console.log('merged:', JSON.stringify(entry));
    await attempt.append(
      [{ type: 'message', message: { role: 'assistant', content: reply } }],
      { durability: 'data' },
    );
  }

  // Cleanup always runs; after a takeover its lock is a no-op.
  if ((await attempt.acquireForCleanup()) === 'held') {
    await attempt.append([{ type: 'custom', customType: 'turn-done' }]);
  }
} finally {
  // Releases the lock whatever happened above.
  await attempt.dispose();
}

const { entries } = await (await Transcript.open(session)).readAll();
console.log(`${session}: ${entries.length} entries`);
