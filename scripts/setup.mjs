#!/usr/bin/env node
// One-time, idempotent set-up for a checkout: npm packages, the TypeScript build, system packages
// (FAISS, OpenBLAS, nlohmann-json, a C++ toolchain) through apt when running as root, a Python .venv
// with the pinned torch and the PyTorch reference, the native build, and Chromium for the browser
// test of report.html. Each step is skipped when already done.
// Prints one line per step; the tools' own output (npm, apt, pip, cmake) goes to .jfa-setup.log,
// whose tail is printed when a step fails.
// Env: LIBTORCH (use that libtorch for the addon), JFA_PIP_ARGS (extra pip flags), PYTHON (python to make .venv),
// JFA_RELIABILITY=1 (also clang and libFuzzer, for the fuzz run of `npm test`).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const started = Date.now();
const timings = [];
const logFile = join(root, '.jfa-setup.log');
writeFileSync(logFile, `jfa-torch setup ${new Date().toISOString()}\n`);

function log(msg) {
  console.log(`[setup] ${msg}`);
}
function fail(msg) {
  console.error(`[setup] FAILED: ${msg}`);
  process.exit(1);
}
/** Runs a tool with its output appended to the log; on failure prints the log's tail and where the whole log is. */
function run(cmd, args, opts = {}) {
  appendFileSync(logFile, `\n$ ${cmd} ${args.join(' ')}\n`);
  const fd = openSync(logFile, 'a');
  const r = spawnSync(cmd, args, { stdio: ['ignore', fd, fd], cwd: root, ...opts });
  closeSync(fd);
  if (r.error) fail(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) {
    const tail = readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-30);
    console.error(tail.map((l) => `  | ${l}`).join('\n'));
    fail(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal} (last 30 lines above; full log: ${logFile})`);
  }
}
function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}
/** One line per step: what it did (or that it was already done) and how long it took. */
function step(name, fn) {
  const t = Date.now();
  const result = fn();
  const s = (Date.now() - t) / 1000;
  const done = result === 'skipped' ? 'already done' : typeof result === 'string' ? result : 'done';
  log(`${name}: ${done} (${s.toFixed(1)} s)`);
  timings.push(`${name} ${s.toFixed(1)} s${result === 'skipped' ? ' (already done)' : ''}`);
}
const digest = (...files) =>
  createHash('sha256')
    .update(files.map((f) => (existsSync(f) ? readFileSync(f) : '')).join('\0'))
    .digest('hex');

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 5)) fail(`Node ${process.version} is too old: jfa-torch needs Node >= 20.5`);
const isRoot = process.getuid?.() === 0;

// --- npm packages ----------------------------------------------------------------------------
step('npm packages', () => {
  const stampFile = join(root, 'node_modules', '.jfa-setup-stamp');
  const stamp = digest(join(root, 'package.json'), join(root, 'package-lock.json'));
  if (existsSync(stampFile) && readFileSync(stampFile, 'utf8') === stamp) return 'skipped';
  run('npm', ['install', '-q', '--no-audit', '--no-fund', '--no-progress'], { env: { ...process.env, JFA_SKIP_INSTALL_BUILD: '1' } });
  writeFileSync(stampFile, stamp);
});

// --- TypeScript -------------------------------------------------------------------------------
step('typescript', () => run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']));

// --- system packages -------------------------------------------------------------------------
// After the TypeScript step, so that FAISS is looked for exactly where the build and `jfa doctor` look.
const { locateFaiss } = await import(join(root, 'dist', 'locate.js'));
// nlohmann-json (header-only): Debian 12 puts its CMake package under /usr/share, others under lib.
// nlohmann_json_ROOT (read by CMake's find_package) names an install of one's own.
const nlohmannConfig = ['/usr/share', '/usr/lib', '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/local/share', '/usr/local/lib']
  .map((d) => join(d, 'cmake', 'nlohmann_json', 'nlohmann_jsonConfig.cmake'));
let aptUpdated = false;
// clang and its libFuzzer runtime (Debian ships the runtime apart, in libclang-rt-N-dev).
function hasLibFuzzer() {
  if (!has('clang++')) return false;
  const dir = spawnSync('clang++', ['--print-runtime-dir'], { encoding: 'utf8' }).stdout?.trim() ?? '';
  const arch = { x64: 'x86_64', arm64: 'aarch64' }[process.arch] ?? process.arch;
  return existsSync(join(dir, `libclang_rt.fuzzer-${arch}.a`)) || existsSync(join(dir, 'libclang_rt.fuzzer.a'));
}
step('system packages', () => {
  const python = process.env.PYTHON ?? 'python3';
  const want = [];
  if (!locateFaiss().found) want.push('libfaiss-dev', 'libopenblas-dev');
  if (!process.env.nlohmann_json_ROOT && !nlohmannConfig.some(existsSync)) want.push('nlohmann-json3-dev');
  // gloo's headers, to compile against c10d's ProcessGroupGloo (data-parallel training); nothing is linked from it.
  if (!process.env.JFA_GLOO_INCLUDE_DIR && !existsSync('/usr/include/gloo/context.h')) want.push('libgloo-dev');
  // test/43 runs two ranks on two hosts made of network namespaces (ip netns, root only; elsewhere it is skipped).
  if (isRoot && !has('ip')) want.push('iproute2');
  if (!has('cmake')) want.push('cmake');
  if (!has('g++') || !has('make')) want.push('g++', 'make');
  if (!has(python)) want.push('python3');
  if (has(python) && spawnSync(python, ['-c', 'import venv, ensurepip'], { stdio: 'ignore' }).status !== 0) want.push('python3-venv');
  // The reliability pass (JFA_RELIABILITY=1, set by .ci/run) builds libFuzzer targets with clang.
  if (process.env.JFA_RELIABILITY === '1' && !hasLibFuzzer()) want.push('clang', 'libclang-rt-14-dev');
  if (!want.length) return 'skipped';
  if (!isRoot || !has('apt-get'))
    fail(`missing system packages: ${want.join(' ')}. Install them (Debian/Ubuntu: sudo apt-get install ${want.join(' ')}) and run setup again.`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  run('apt-get', ['update', '-q'], { env });
  aptUpdated = true;
  run('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...want], { env });
  return `apt-get install ${want.join(' ')}`;
});

// --- Python: torch (and the PyTorch reference for tests) -------------------------------------
step('python .venv', () => {
  const venv = join(root, '.venv');
  const requirements = join(root, 'scripts', 'python-requirements.txt');
  const stampFile = join(venv, '.jfa-setup-stamp');
  const stamp = digest(requirements);
  if (existsSync(stampFile) && readFileSync(stampFile, 'utf8') === stamp) return 'skipped';
  const python = process.env.PYTHON ?? 'python3';
  if (!existsSync(join(venv, 'bin', 'python'))) {
    run(python, ['-m', 'venv', venv]);
  }
  // The public index may be unreachable (offline wheelhouses): fail over quickly instead of retrying for minutes.
  const extra = (process.env.JFA_PIP_ARGS ?? '--retries 1 --timeout 15').split(/\s+/).filter(Boolean);
  log('python .venv: pip install -r scripts/python-requirements.txt (torch is large: a minute or more)');
  run(join(venv, 'bin', 'python'), ['-m', 'pip', 'install', '-q', '--disable-pip-version-check', ...extra, '-r', requirements]);
  writeFileSync(stampFile, stamp);
});

// --- Chromium, for the browser test of report.html (test/27) ------------------------------------
// Debian's package, driven by playwright-core; no browser is ever downloaded by npm.
step('chromium', () => {
  if (existsSync('/usr/bin/chromium')) return 'skipped';
  if (!isRoot || !has('apt-get')) return 'missing: the browser test of report.html needs it (sudo apt-get install chromium)';
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (!aptUpdated) run('apt-get', ['update', '-q'], { env });
  run('apt-get', ['install', '-y', '-q', '--no-install-recommends', 'chromium'], { env });
  return 'apt-get install chromium';
});

// --- the addon -----------------------------------------------------------------------------------
step('native addon', () => run(process.execPath, [join(root, 'scripts', 'build-native.mjs')]));

log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s: ${timings.join(', ')}`);
