#!/usr/bin/env node
// `npm test`: set-up (idempotent), the native/core C++ tests (ctest), a type-check of lib/ and
// test/, then the vitest suites.
// Ends with one summary line, "tests: N passed, N failed", over both.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => spawnSync(cmd, args, { cwd: root, stdio: 'inherit' }).status ?? 1;

if (run(process.execPath, [join(root, 'scripts', 'setup.mjs')]) !== 0) process.exit(1);

let passed = 0;
let failed = 0;

// The C++ test binary prints "jfa_core_tests: N passed, N failed"; ctest shows it with -V.
const ctest = spawnSync('ctest', ['--test-dir', join(root, 'build-cmake'), '--output-on-failure', '-V'], { cwd: root, encoding: 'utf8' });
process.stdout.write(ctest.stdout ?? '');
process.stderr.write(ctest.stderr ?? '');
const counts = /jfa_core_tests: (\d+) passed, (\d+) failed/.exec(ctest.stdout ?? '');
if (ctest.status !== 0 || !counts) failed += Math.max(1, Number(counts?.[2] ?? 1));
if (counts) passed += Number(counts[1]);

// The suites themselves type-check (vitest only strips types).
const typecheck = run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.test.json']);
if (typecheck !== 0) {
  console.error('type-check of lib/ and test/ failed');
  failed += 1;
}

const tmp = mkdtempSync(join(tmpdir(), 'jfa-vitest-'));
const report = join(tmp, 'report.json');
const extra = process.argv.slice(2);
const vitest = run(process.execPath, [
  join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...extra,
]);
try {
  const r = JSON.parse(readFileSync(report, 'utf8'));
  passed += r.numPassedTests;
  failed += r.numFailedTests + (vitest !== 0 && r.numFailedTests === 0 ? 1 : 0);
} catch {
  failed += 1; // vitest died before writing its report
}
rmSync(tmp, { recursive: true, force: true });
console.log(`tests: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && vitest === 0 && typecheck === 0 ? 0 : 1);
