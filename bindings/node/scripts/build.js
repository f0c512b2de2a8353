#!/usr/bin/env node
// Builds the native module from source with the workspace's Rust toolchain
// (`cargo build -p sessionlock-node`) and puts it beside index.js as
// `sessionlock.node`. `npm install` runs it; nothing is downloaded but the
// crates cargo fetches from the registry.
//
//   SESSIONLOCK_NODE_PROFILE=debug   build without optimisations (default: release)
//   CARGO_TARGET_DIR                 honoured, as by cargo
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const pkg = path.resolve(__dirname, '..');
const profile = process.env.SESSIONLOCK_NODE_PROFILE || 'release';
if (!['release', 'debug'].includes(profile)) {
  console.error(`sessionlock: SESSIONLOCK_NODE_PROFILE must be "release" or "debug", not ${JSON.stringify(profile)}`);
  process.exit(1);
}
const cargo = process.env.CARGO || 'cargo';

function run(args, opts = {}) {
  try {
    return execFileSync(cargo, args, { cwd: pkg, stdio: ['ignore', opts.capture ? 'pipe' : 'inherit', 'inherit'], encoding: 'utf8' });
  } catch (e) {
    if (e.code === 'ENOENT') {
      console.error('sessionlock: `cargo` was not found: the native module is built from source and needs a Rust toolchain (https://rustup.rs)');
    } else {
      console.error(`sessionlock: \`cargo ${args.join(' ')}\` failed (exit ${e.status ?? e.signal})`);
    }
    process.exit(1);
  }
}

const meta = JSON.parse(run(['metadata', '--format-version', '1', '--no-deps'], { capture: true }));
const args = ['build', '-p', 'sessionlock-node'];
if (profile === 'release') args.push('--release');
console.error(`sessionlock: building the native module (cargo ${args.join(' ')})`);
run(args);

const built = path.join(meta.target_directory, profile, 'libsessionlock_node.so');
if (!fs.existsSync(built)) {
  console.error(`sessionlock: cargo finished but ${built} is missing`);
  process.exit(1);
}
// Copy, then rename: a process that has the old module loaded keeps its
// mapping, and no reader ever sees half a file.
const dest = path.join(pkg, 'sessionlock.node');
const tmp = `${dest}.${process.pid}.tmp`;
fs.copyFileSync(built, tmp);
fs.renameSync(tmp, dest);
console.error(`sessionlock: ${path.relative(process.cwd(), dest) || dest} is ready (${profile})`);
