#!/usr/bin/env node
// Builds the addon with cmake-js from CMakeLists.txt (the one native build) and places
// jfa_torch.node, jfa_preload.so and jfa_torch.build.json in the destination (default build/Release).
// Usage: node scripts/build-native.mjs [dest-dir]
// The CMake tree lives in build-cmake/ so that node-gyp's `rebuild` (which wipes build/) keeps it incremental.
// JFA_SANITIZE=1 builds the ASan + UBSan variant instead (scripts/reliability/asan.mjs runs it): its
// own CMake tree build-asan/cmake and default destination build-asan/Release, never touching the
// normal build.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const fail = (msg) => {
  console.error(`jfa-torch build: ${msg}`);
  process.exit(1);
};

if (!existsSync(join(root, 'dist', 'locate.js'))) fail('dist/ is missing: run `npm run compile` (or `npm run setup`) first');
const { locateLibtorch, locateFaiss } = await import(join(root, 'dist', 'locate.js'));

const torch = locateLibtorch();
if (!torch.found) {
  const lines = torch.tried.map((t) => `  ${t.source}: ${t.path} ${t.problem}`).join('\n');
  fail(`libtorch not found. Looked in:\n${lines}\nFix: run \`npm run setup\` (installs torch into .venv), or set LIBTORCH to an unpacked libtorch or a torch package directory.`);
}
const faiss = locateFaiss();
if (!faiss.found) fail(`FAISS not found (looked for faiss-config.cmake in ${faiss.tried.join(', ')}). Fix: apt-get install libfaiss-dev libopenblas-dev, or set FAISS_DIR.`);

const sanitize = process.env.JFA_SANITIZE === '1';
const dest = resolve(process.argv[2] ?? join(root, sanitize ? 'build-asan' : 'build', 'Release'));
// JFA_CMAKE_DIR: another CMake tree (scripts/cuda-build.mjs builds against the CUDA torch in build-cuda/cmake).
const out = process.env.JFA_CMAKE_DIR ? resolve(process.env.JFA_CMAKE_DIR) : sanitize ? join(root, 'build-asan', 'cmake') : join(root, 'build-cmake');

// A CUDA libtorch builds core/cuda with nvcc: CUDACXX if set, else the nvidia-cuda-nvcc wheel beside
// that torch (site-packages/nvidia/cu*/bin/nvcc), else CUDA_HOME's, else CMake's own search (PATH).
function findNvcc() {
  if (process.env.CUDACXX) return process.env.CUDACXX;
  const site = dirname(torch.found.root);
  const wheel = existsSync(join(site, 'nvidia'))
    ? readdirSync(join(site, 'nvidia')).filter((d) => d.startsWith('cu')).sort().reverse().map((d) => join(site, 'nvidia', d, 'bin', 'nvcc')).find((p) => existsSync(p))
    : undefined;
  if (wheel) return wheel;
  const home = process.env.CUDA_HOME ?? process.env.CUDA_PATH;
  return home && existsSync(join(home, 'bin', 'nvcc')) ? join(home, 'bin', 'nvcc') : undefined;
}
const nvcc = torch.found.cuda ? findNvcc() : undefined;
// -O1 keeps the build quick and the stack traces readable; UBSan findings abort (not just print).
const sanitizeFlags = '-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g1';
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const args = [
  cmakeJs, 'build', '--directory', root, '--out', out, '--parallel', String(Math.min(availableParallelism(), 8)),
  `--CDCMAKE_PREFIX_PATH=${torch.found.cmakePrefix}`,
  `--CDfaiss_DIR=${faiss.found.cmakeDir}`,
  `--CDJFA_CUDA=${torch.found.cuda ? 'ON' : 'OFF'}`,
  // CUDAToolkit_ROOT for CMake's FindCUDAToolkit, CUDA_TOOLKIT_ROOT_DIR for the legacy FindCUDA torch's package still calls.
  ...(nvcc ? [`--CDCMAKE_CUDA_COMPILER=${nvcc}`, `--CDCUDAToolkit_ROOT=${dirname(dirname(nvcc))}`, `--CDCUDA_TOOLKIT_ROOT_DIR=${dirname(dirname(nvcc))}`] : []),
  ...(process.env.JFA_CUDA_ARCHITECTURES ? [`--CDCMAKE_CUDA_ARCHITECTURES=${process.env.JFA_CUDA_ARCHITECTURES}`] : []),
  // gloo's headers from elsewhere than /usr/include (scripts/device/check.sh unpacks them)
  ...(process.env.JFA_GLOO_INCLUDE_DIR ? [`--CDJFA_GLOO_INCLUDE_DIR=${process.env.JFA_GLOO_INCLUDE_DIR}`] : []),
  // c10d's NCCL backend (a CUDA model's data-parallel training), compiled only when asked:
  // JFA_NCCL=1 requires it (the configure step fails without its headers), JFA_NCCL=auto takes it where found.
  `--CDJFA_NCCL=${{ 1: 'ON', auto: 'AUTO' }[process.env.JFA_NCCL ?? ''] ?? 'OFF'}`,
  `--CDNODE_ADDON_API_DIR=${require('node-addon-api').include_dir.replace(/"/g, '')}`,
  // Passed every time so that an earlier JFA_BUILD_TESTS=OFF does not stay in CMake's cache.
  // Default: the C++ tests where they exist (a checkout; the npm package leaves them out).
  `--CDJFA_BUILD_TESTS=${process.env.JFA_BUILD_TESTS ?? (existsSync(join(root, 'native', 'core', 'tests')) ? 'ON' : 'OFF')}`,
  ...(sanitize
    ? [
        // In the *_RELEASE flags: cmake-js sets CMAKE_CXX_FLAGS itself.
        `--CDCMAKE_C_FLAGS_RELEASE=-O1 -DNDEBUG ${sanitizeFlags}`,
        `--CDCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG ${sanitizeFlags}`,
        '--CDCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined',
        '--CDCMAKE_SHARED_LINKER_FLAGS=-fsanitize=address,undefined',
      ]
    : []),
];
console.log(`jfa-torch build${sanitize ? ' (ASan + UBSan)' : ''}: libtorch ${torch.found.version} (${torch.found.root})${torch.found.cuda ? `, CUDA (nvcc: ${nvcc ?? 'from PATH'})` : ''}, FAISS ${faiss.found.version}`);
const started = Date.now();
const r = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: root });
if (r.status !== 0) fail(`cmake-js exited with ${r.status ?? r.signal}`);

mkdirSync(dest, { recursive: true });
const put = (from, name, write) => {
  // Copy then rename: a crash mid-copy never leaves a half-written binary under the final name.
  const tmp = join(dest, `.${name}.tmp-${process.pid}`);
  write ? writeFileSync(tmp, write) : copyFileSync(from, tmp);
  renameSync(tmp, join(dest, name));
};
put(join(out, 'Release', 'jfa_torch.node'), 'jfa_torch.node');
put(join(out, 'Release', 'jfa_preload.so'), 'jfa_preload.so');
const meta = {
  torchVersion: torch.found.version,
  torchCuda: torch.found.cuda,
  faissVersion: faiss.found.version,
  platform: `${process.platform}-${process.arch}`,
  builtAt: new Date().toISOString(),
};
put(null, 'jfa_torch.build.json', JSON.stringify(meta, null, 2) + '\n');
console.log(`jfa-torch build: done in ${((Date.now() - started) / 1000).toFixed(1)} s -> ${dest}`);
