#!/usr/bin/env node
// `npm test`: `node --test` over test/, beside a PostgreSQL server so that the
// PostgreSQL cases run too. Under scripts/with-postgres (SESSIONLOCK_TEST_PG_URL
// set) it uses that server; otherwise it starts a throwaway one the same way,
// when the server binaries are installed. Without them the PostgreSQL cases
// are skipped (they say so), except under CI=true, where that is an error.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

// The test files, named explicitly: without names, node 20 would also run
// every helper under test/ as a test file.
const testDir = path.resolve(__dirname, '../test');
const files = process.argv.length > 2
  ? process.argv.slice(2)
  : fs.readdirSync(testDir).filter((f) => f.endsWith('.test.mjs')).sort().map((f) => path.join('test', f));
const args = ['--test', '--test-concurrency=1', ...files];
const withPostgres = path.resolve(__dirname, '../../../scripts/with-postgres');

function serverBinaries() {
  if (process.env.SESSIONLOCK_PG_BIN) return fs.existsSync(path.join(process.env.SESSIONLOCK_PG_BIN, 'initdb'));
  try {
    return fs.readdirSync('/usr/lib/postgresql').some((v) => fs.existsSync(`/usr/lib/postgresql/${v}/bin/initdb`));
  } catch {
    return false;
  }
}

let cmd = process.execPath;
let argv = args;
if (!process.env.SESSIONLOCK_TEST_PG_URL) {
  if (fs.existsSync(withPostgres) && serverBinaries()) {
    cmd = withPostgres;
    argv = [process.execPath, ...args];
  } else if (process.env.CI === 'true') {
    console.error('sessionlock: CI=true but no PostgreSQL server: install postgresql or run under scripts/with-postgres');
    process.exit(1);
  } else {
    console.error('sessionlock: no PostgreSQL server binaries: the PostgreSQL cases are skipped (apt-get install -y postgresql)');
  }
}
const r = spawnSync(cmd, argv, { stdio: 'inherit', cwd: path.resolve(__dirname, '..') });
if (r.error) {
  console.error(`sessionlock: cannot run ${cmd}: ${r.error.message}`);
  process.exit(1);
}
process.exit(r.status ?? 1);
