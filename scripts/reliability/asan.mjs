#!/usr/bin/env node
// The sanitizer pass: builds native/core, its C++ tests and the addon with ASan + UBSan
// (JFA_SANITIZE=1 scripts/build-native.mjs: build-asan/cmake, the addon in build-asan/Release),
// runs the C++ tests, then the vitest suites that exercise native code against that addon.
// Node itself is not instrumented, so the ASan and UBSan runtimes are preloaded (LD_PRELOAD) and
// lib/native.ts is pointed at the sanitized addon with JFA_ADDON. Children (the jfa CLI, the
// PyTorch reference) inherit both; Python merely runs on ASan's malloc.
// Usage: node scripts/reliability/asan.mjs [vitest files...]   (default: SUITES below)
// Prints "asan: ..." last and exits non-zero on any finding or failed test.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { runGroups, testFiles } from '../vitest-groups.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const started = Date.now();
const seconds = () => ((Date.now() - started) / 1000).toFixed(0);

// Every suite but these files:
// - 05.memory measures RSS and the caching CPU allocator's statistics; ASan's shadow memory and
//   quarantine change the one, and the run turns the cache off (below), which the other asserts on;
// - 08.package rebuilds build/ through node-gyp and packs the tarball: no native behaviour of ours
//   that the other suites do not already run, and minutes of compiling under the preloaded runtime;
// - 12.llama, 13.generate, 20.step-reference: parity with the PyTorch reference, each built around
//   Python runs (transformers, PEFT); the model, generation and step code they check runs here in
//   16-19 and 21 as well;
// - 26.consumer and 27.docs-browser drive other programs (npm, pip, tsc, TypeDoc, Chromium), which
//   inherit the preloaded runtimes (Chromium spins for minutes under them); the addon code they
//   reach (load, a forward pass) runs in the other suites;
// - 40.llama-cpp installs and drives node-llama-cpp (another program's native code); the GGUF
//   writer it checks is ours in TypeScript, and 39 runs it here;
// - 42.families-cli runs the CLI per family over the same native family code that 41 runs here;
// - 44.train-evals trains six end-to-end runs around evaluations whose generation and training
//   code 17, 19 and 21 run here.
const SKIPPED = [
  'test/05.memory.test.ts', 'test/08.package.test.ts', 'test/12.llama.test.ts', 'test/13.generate.test.ts', 'test/20.step-reference.test.ts',
  'test/26.consumer.test.ts', 'test/27.docs-browser.test.ts', 'test/40.llama-cpp.test.ts', 'test/42.families-cli.test.ts', 'test/44.train-evals.test.ts',
];
// and these tests, by name:
// - the demo at tiny size (07): minutes of end-to-end stages that 17-19 and 21 run one by one;
// - the event-loop lag bound and the SIGKILL-at-a-moment resume (17): timing assertions, which a
//   sanitized build (several times slower) misses without anything being wrong;
// - the long run (23): 10,000 steps measuring RSS, which ASan's shadow memory and quarantine change
//   (as for 05); the 20-kill and full-disk tests of 23 do run;
// - the allocator cache handed back after train() (37): RSS and the cache's size, which the
//   sanitized run changes and turns off (as for 05).
const SKIPPED_TESTS = ['demo runs every stage', 'training leaves the event loop free', 'a run killed by SIGKILL resumes', 'trains for thousands of steps', 'the allocator cache is handed back'];

function library(name) {
  const r = spawnSync('gcc', [`-print-file-name=${name}`], { encoding: 'utf8' });
  const path = r.stdout?.trim();
  if (r.status !== 0 || !path || !path.startsWith('/') || !existsSync(path)) {
    console.error(`asan: ${name} not found (gcc -print-file-name=${name}); install gcc's sanitizer runtimes (Debian: libasan8 libubsan1, with g++)`);
    process.exit(1);
  }
  return path;
}

// --- build -----------------------------------------------------------------------------------
const build = spawnSync(process.execPath, [join(root, 'scripts', 'build-native.mjs')], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, JFA_SANITIZE: '1' },
});
if (build.status !== 0) {
  console.error('asan: the sanitizer build failed');
  console.log('asan: 0 C++ tests, 0 vitest tests, build failed');
  process.exit(1);
}
const built = seconds();

const supp = (f) => join(root, 'scripts', 'reliability', f);
const sanitizerEnv = {
  // halt_on_error + abort_on_error: the first finding kills the process with a report.
  // detect_leaks=0: Node and V8 leave memory for the OS to take back at exit, by design, and
  // libtorch keeps its registries; leak reports would be theirs, not ours.
  // allow_user_segv_handler: V8 handles some SIGSEGVs itself (WebAssembly bounds traps).
  // allocator_may_return_null: an impossible allocation fails as it does without ASan (test/04
  // asks for 2^62 bytes and expects our allocator's out-of-memory error), instead of aborting.
  ASAN_OPTIONS: [
    'detect_leaks=0', 'halt_on_error=1', 'abort_on_error=1', 'allow_user_segv_handler=1', 'allocator_may_return_null=1',
    `suppressions=${supp('asan.supp')}`,
  ].join(':'),
  UBSAN_OPTIONS: ['halt_on_error=1', 'abort_on_error=1', 'print_stacktrace=1', `suppressions=${supp('ubsan.supp')}`].join(':'),
  // The caching CPU allocator keeps freed tensor memory for reuse, which would hide a use after
  // free from ASan: with a cache of 0 every free reaches ASan's quarantine.
  JFA_CPU_CACHE_MB: '0',
};

// --- C++ tests -------------------------------------------------------------------------------
// The test binary links the runtimes itself (it is an executable built with -fsanitize).
const cppBinary = join(root, 'build-asan', 'cmake', 'native', 'core', 'tests', 'jfa_core_tests');
// Here leaks are checked too: this process is ours and libtorch's alone, and leaves none.
const cppAsan = sanitizerEnv.ASAN_OPTIONS.replace('detect_leaks=0', 'detect_leaks=1');
const cpp = spawnSync(cppBinary, [], { cwd: root, encoding: 'utf8', env: { ...process.env, ...sanitizerEnv, ASAN_OPTIONS: cppAsan } });
process.stdout.write(cpp.stdout ?? '');
process.stderr.write(cpp.stderr ?? '');
const counts = /jfa_core_tests: (\d+) passed, (\d+) failed/.exec(cpp.stdout ?? '');
const cppPassed = Number(counts?.[1] ?? 0);
const cppFailed = cpp.status === 0 && counts ? Number(counts[2]) : Math.max(1, Number(counts?.[2] ?? 1));
const cppDone = seconds();

// --- vitest ----------------------------------------------------------------------------------
// Two files at a time on one thread each (scripts/vitest-groups.mjs); the data-parallel suites after,
// alone: ranks of one job wait on each other with timeouts, and a starved rank would time out for
// no fault of the code.
const ALONE = ['test/30.distributed.test.ts', 'test/43.two-hosts.test.ts', 'test/45.nccl.test.ts'];
const files = process.argv.slice(2).length ? process.argv.slice(2) : testFiles(root, SKIPPED);
const groups = runGroups({
  root,
  files,
  alone: ALONE,
  args: [`--testNamePattern=^(?!.*(${SKIPPED_TESTS.join('|')}))`],
  env: {
    ...sanitizerEnv,
    LD_PRELOAD: [library('libasan.so'), library('libubsan.so'), process.env.LD_PRELOAD].filter(Boolean).join(':'),
    JFA_ADDON: join(root, 'build-asan', 'Release', 'jfa_torch.node'),
  },
});
let jsPassed = 0;
let jsFailed = 0;
const named = [];
for (const { status, report: r } of groups) {
  if (!r) {
    jsFailed += 1; // a sanitizer abort killed vitest before it wrote its report
    continue;
  }
  jsPassed += r.numPassedTests;
  // A file killed by a sanitizer report has no failed test, only a failed file: count it too.
  const died = r.testResults.filter((f) => f.status === 'failed' && !f.assertionResults.some((a) => a.status === 'failed')).length;
  jsFailed += r.numFailedTests + died + (status !== 0 && r.numFailedTests + died === 0 ? 1 : 0);
  for (const f of r.testResults) {
    const file = relative(root, f.name);
    for (const a of f.assertionResults) if (a.status === 'failed') named.push(`asan: failed test ${file} > ${a.fullName}`);
    if (f.status === 'failed' && !f.assertionResults.some((a) => a.status === 'failed')) named.push(`asan: failed file ${file}: ${(f.message ?? '').split('\n')[0]}`);
  }
}

if (cppFailed) named.push(`asan: failed C++ tests: ${cppFailed} (output above)`);
if (jsFailed > 0 && !named.some((l) => l.includes('test ') || l.includes('file '))) named.push('asan: failed vitest run (no report, or exit without a failed test)');
for (const l of named) console.log(l);
console.log(`asan: skipped ${SKIPPED.join(', ')} and the tests named ${SKIPPED_TESTS.map((t) => `'${t}...'`).join(', ')} (why: scripts/reliability/asan.mjs)`);
console.log(
  `asan: ${cppPassed} C++ tests passed, ${cppFailed} failed; ${jsPassed} vitest tests passed, ${jsFailed} failed ` +
    `in ${files.length} files; build ${built} s, C++ tests ${Number(cppDone) - Number(built)} s, total ${seconds()} s`,
);
process.exit(cppFailed === 0 && jsFailed === 0 ? 0 : 1);
