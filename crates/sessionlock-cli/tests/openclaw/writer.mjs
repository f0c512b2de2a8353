// Test driver for the OpenClaw interop tests (crates/sessionlock-cli/tests/openclaw_interop.rs).
//
//   node writer.mjs loop    --oc-dir DIR --session S --log L --counter C --writer W --duration-ms N [--hold-ms H] openclaw
//   node writer.mjs once    --oc-dir DIR --session S --timeout-ms T openclaw
//   node writer.mjs section --log L --counter C --writer W [--hold-ms H]
//
// `loop` takes OpenClaw's real session write lock (acquireSessionWriteLock from
// openclaw/plugin-sdk/agent-harness-runtime) again and again for N ms; inside each critical
// section it logs `begin`, does a read-modify-write of the counter file, and logs `end`.
// `once` tries to take the lock once and prints one JSON line: {"ok":..., "ms":..., "error":...}.
// `section` is one critical section without any lock: the command `sessionlock exec` runs. Its
// `end` line says whether the exec's lock was gone by then (`lost`).
//
// Log lines are JSON objects {"w", "seq", "ev", "t"} with t = CLOCK_MONOTONIC in ns
// (process.hrtime.bigint()), appended with one write(2) each to the --log file.
//
// The trailing bare `openclaw` argument marks the process as an OpenClaw process: OpenClaw's
// lock deletes a live holder's lock unless its argv carries such a token, and real holders are
// OpenClaw processes. The driver ignores it.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const argv = process.argv.slice(2);
const mode = argv[0];
function opt(name, dflt) {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
}
const now = () => process.hrtime.bigint().toString();
const sleepSync = (ms) => {
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

function log(file, w, seq, ev, extra = {}) {
  fs.appendFileSync(file, `${JSON.stringify({ w, seq, ev, t: now(), ...extra })}\n`);
}

// Read-modify-write of a decimal counter, with a pause between read and write so that two
// writers inside at once lose an update.
function bumpCounter(file, holdMs) {
  let n = 0;
  try {
    n = Number.parseInt(fs.readFileSync(file, "utf8").trim() || "0", 10);
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
  }
  sleepSync(holdMs);
  fs.writeFileSync(file, `${n + 1}\n`);
}

async function loadOpenClaw(ocDir) {
  const req = createRequire(path.join(ocDir, "package.json"));
  const entry = req.resolve("openclaw/plugin-sdk/agent-harness-runtime");
  const m = await import(pathToFileURL(entry).href);
  if (typeof m.acquireSessionWriteLock !== "function") {
    throw new Error(`no acquireSessionWriteLock in ${entry}`);
  }
  return m;
}

// Whether the lock `sessionlock exec` took for this command is gone: the lock file no longer
// holds this acquisition's epoch (SESSIONLOCK_EPOCH, unique per acquisition). A deleted lock
// file cannot come back, so this is ground truth for "someone removed or replaced our lock".
// Compared as text: epochs may exceed 2^53.
function lockLost() {
  const lockPath = process.env.SESSIONLOCK_LOCK_PATH;
  const epoch = process.env.SESSIONLOCK_EPOCH;
  if (!lockPath || !epoch) return null;
  let raw;
  try {
    raw = fs.readFileSync(lockPath, "utf8");
  } catch (e) {
    if (e.code === "ENOENT") return true;
    throw e;
  }
  return raw.match(/"epoch":\s*(\d+)/)?.[1] !== epoch;
}

if (mode === "section") {
  const logFile = opt("--log");
  const w = opt("--writer");
  const seq = Number(process.env.SECTION_SEQ ?? opt("--seq", "0"));
  log(logFile, w, seq, "begin", { epoch: process.env.SESSIONLOCK_EPOCH ?? null });
  bumpCounter(opt("--counter"), Number(opt("--hold-ms", "2")));
  log(logFile, w, seq, "end", { lost: lockLost() });
  process.exit(0);
}

const oc = await loadOpenClaw(opt("--oc-dir"));
const session = opt("--session");

if (mode === "once") {
  const t0 = process.hrtime.bigint();
  try {
    const lock = await oc.acquireSessionWriteLock({ sessionFile: session, timeoutMs: Number(opt("--timeout-ms")) });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    await lock.release();
    process.stdout.write(`${JSON.stringify({ ok: true, ms })}\n`);
  } catch (e) {
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    process.stdout.write(`${JSON.stringify({ ok: false, ms, error: e?.name ?? String(e), message: String(e?.message ?? e) })}\n`);
  }
  process.exit(0);
}

if (mode === "loop") {
  const logFile = opt("--log");
  const w = opt("--writer");
  const counter = opt("--counter");
  const holdMs = Number(opt("--hold-ms", "2"));
  const end = Date.now() + Number(opt("--duration-ms"));
  let seq = 0;
  while (Date.now() < end) {
    let lock;
    try {
      lock = await oc.acquireSessionWriteLock({ sessionFile: session, timeoutMs: 20000 });
    } catch (e) {
      log(logFile, w, seq, "error", { error: e?.name ?? String(e) });
      await new Promise((r) => setTimeout(r, 20));
      continue;
    }
    log(logFile, w, seq, "begin");
    bumpCounter(counter, holdMs);
    log(logFile, w, seq, "end");
    await lock.release();
    seq += 1;
    await new Promise((r) => setImmediate(r));
  }
  process.exit(0);
}

process.stderr.write(`unknown mode ${mode}\n`);
process.exit(2);
