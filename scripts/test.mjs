#!/usr/bin/env node
// `npm test`: set-up (idempotent), the native/core C++ tests (ctest), a type-check of lib/ and
// test/, then the vitest suites; with JFA_RELIABILITY=1 also fuzzing and the sanitizer pass.
// Ends with one summary line, "tests: N passed, N failed", over both.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { runGroups, testFiles } from './vitest-groups.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => spawnSync(cmd, args, { cwd: root, stdio: 'inherit' }).status ?? 1;

if (run(process.execPath, [join(root, 'scripts', 'setup.mjs')]) !== 0) process.exit(1);

let passed = 0;
let failed = 0;
// What failed, by name, printed again just above the summary line: CI keeps only the tail of the log.
const failures = [];
const failedTests = (r, where) =>
  r.testResults.flatMap((f) => {
    const file = relative(root, f.name);
    const tests = f.assertionResults.filter((a) => a.status === 'failed').map((a) => `${where}${file} > ${a.fullName}`);
    // A file that died (a crash, an error outside any test) has no failed test of its own.
    return tests.length || f.status !== 'failed' ? tests : [`${where}${file}: ${(f.message ?? 'the file failed').split('\n')[0]}`];
  });

// The C++ test binary prints "jfa_core_tests: N passed, N failed"; ctest shows it with -V.
const ctest = spawnSync('ctest', ['--test-dir', join(root, 'build-cmake'), '--output-on-failure', '-V'], { cwd: root, encoding: 'utf8' });
process.stdout.write(ctest.stdout ?? '');
process.stderr.write(ctest.stderr ?? '');
const counts = /jfa_core_tests: (\d+) passed, (\d+) failed/.exec(ctest.stdout ?? '');
if (ctest.status !== 0 || !counts) {
  failed += Math.max(1, Number(counts?.[2] ?? 1));
  failures.push(...((ctest.stdout ?? '').match(/^.*FAIL.*$/gm) ?? ['C++ tests (ctest): see above']).map((l) => `C++: ${l.trim()}`));
}
if (counts) passed += Number(counts[1]);

// The suites themselves type-check (vitest only strips types).
const typecheck = run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.test.json']);
if (typecheck !== 0) {
  console.error('type-check of lib/ and test/ failed');
  failed += 1;
  failures.push('type-check of lib/ and test/ (tsc -p tsconfig.test.json)');
}

// Two files at a time on one thread each, then the files that need the machine alone
// (scripts/vitest-groups.mjs): RSS and allocator measurements (05, 23's long run, 37), event-loop
// timing (06, 10, 17), speed ratios (31, 32), the packaging builds (08 and 26 run `npm run prebuild`,
// whose node-gyp rebuild empties build/ while it compiles: a file beside them finds no addon), ranks
// of one data-parallel job (30, 43, 45). Arguments (`npm test -- FILES -t NAME`) go to one serial
// vitest run as given.
const ALONE = [
  'test/05.memory.test.ts', 'test/06.async.test.ts', 'test/08.package.test.ts', 'test/10.faiss.test.ts', 'test/17.trainer.test.ts',
  'test/23.reliability.test.ts', 'test/26.consumer.test.ts', 'test/30.distributed.test.ts', 'test/31.speed.test.ts', 'test/32.gpu-bench.test.ts',
  'test/37.training-control.test.ts', 'test/43.two-hosts.test.ts', 'test/45.nccl.test.ts',
];
const extra = process.argv.slice(2);
const groups = runGroups({ root, files: extra.length ? [] : testFiles(root), alone: ALONE, args: extra });
let vitest = 0;
for (const { status, report: r } of groups) {
  if (status !== 0) vitest = status;
  if (!r) {
    failed += 1; // vitest died before writing its report
    failures.push('vitest died before writing its report');
    continue;
  }
  passed += r.numPassedTests;
  const names = failedTests(r, '');
  failed += r.numFailedTests + (status !== 0 && r.numFailedTests === 0 ? 1 : 0);
  failures.push(...names);
  if (status !== 0 && r.numFailedTests === 0 && !names.length) failures.push(`vitest exited ${status} with no failed test`);
}

// The reliability pass (JFA_RELIABILITY=1, which .ci/run sets): the bounded fuzz run (each fuzz
// target counts as one test) and the ASan + UBSan build with its C++ and vitest tests.
if (process.env.JFA_RELIABILITY === '1') {
  const script = (name) => spawnSync(process.execPath, [join(root, 'scripts', 'reliability', name)], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 256 * 2 ** 20 });
  // The sanitized build compiles while the fuzz targets run (each for a fixed time, on one core),
  // so its minutes of compiling overlap them; asan.mjs then finds it built. Its output goes to a
  // file (a pipe nobody reads while spawnSync waits would fill and stall it), printed below.
  const buildLog = join(mkdtempSync(join(tmpdir(), 'jfa-asan-build-')), 'build.log');
  const fd = openSync(buildLog, 'w');
  const asanBuild = new Promise((done) => {
    const child = spawn(process.execPath, [join(root, 'scripts', 'build-native.mjs')], { cwd: root, stdio: ['ignore', fd, fd], env: { ...process.env, JFA_SANITIZE: '1' } });
    child.on('error', () => done(1));
    child.on('exit', (code) => done(code ?? 1));
  });
  const fuzz = script('fuzz.mjs');
  process.stdout.write(fuzz.stdout ?? '');
  const clean = /fuzz: (\d+) of (\d+) targets clean/.exec(fuzz.stdout ?? '');
  if (clean) {
    passed += Number(clean[1]);
    failed += Number(clean[2]) - Number(clean[1]);
  }
  if (fuzz.status !== 0 && (!clean || clean[1] === clean[2])) failed += 1;
  if (fuzz.status !== 0) failures.push(`fuzz: ${clean ? `${clean[1]} of ${clean[2]} targets clean` : 'no summary line'}`);

  const built = await asanBuild;
  closeSync(fd);
  const tail = readFileSync(buildLog, 'utf8').split('\n');
  // The whole log when the build failed (asan.mjs rebuilds and fails on it too); its end otherwise.
  process.stdout.write(`asan build (alongside the fuzz run): exit ${built}\n${(built === 0 ? tail.slice(-5) : tail).join('\n')}\n`);
  rmSync(dirname(buildLog), { recursive: true, force: true });
  const asan = script('asan.mjs');
  process.stdout.write(asan.stdout ?? '');
  const c = /asan: (\d+) C\+\+ tests passed, (\d+) failed; (\d+) vitest tests passed, (\d+) failed/.exec(asan.stdout ?? '');
  if (c) {
    passed += Number(c[1]) + Number(c[3]);
    failed += Number(c[2]) + Number(c[4]);
  }
  if (asan.status !== 0 && (!c || Number(c[2]) + Number(c[4]) === 0)) failed += 1;
  // asan.mjs names each failed test on a line of its own.
  if (asan.status !== 0) failures.push(...((asan.stdout ?? '').match(/^asan: failed .*$/gm) ?? ['asan: no summary line']));
}
// The CUDA build (JFA_CUDA_BUILD=1, which .ci/run sets): the whole addon, .cu kernels included,
// built against the CUDA torch wheel in .venv-cuda/ and build-cuda/ (scripts/cuda-build.mjs); one test.
if (process.env.JFA_CUDA_BUILD === '1') {
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'cuda-build.mjs')], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 256 * 2 ** 20 });
  process.stdout.write(r.stdout ?? '');
  if (r.status === 0 && /cuda-build: passed/.test(r.stdout ?? '')) passed += 1;
  else {
    failed += 1;
    failures.push(`cuda-build: exit ${r.status}`);
  }
}
for (const f of failures) console.log(`failed: ${f}`);
console.log(`tests: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && vitest === 0 && typecheck === 0 ? 0 : 1);
