#!/usr/bin/env node
// The CUDA build check: builds the whole addon, core/cuda's .cu kernels included, against the CUDA
// torch wheel, without a GPU and without touching the CPU build. Into their own folders:
//   .venv-cuda/   torch (CUDA 13) + the nvidia-cuda-nvcc / -runtime / -cccl / -crt / nvvm wheels,
//                 installed --no-deps (the build opens libtorch's headers, CMake files and
//                 libraries, never cuBLAS or cuDNN, which libtorch_cuda loads at run time), and
//                 the NCCL, cuBLAS, cuSPARSE and cuSOLVER wheels at the versions torch pins, for their
//                 headers (c10d's ProcessGroupNCCL.hpp includes all four): JFA_WITH_NCCL is compiled in;
//   build-cuda/   the CMake tree (cmake/) and the addon (Release/).
// Then checks the result: the addon needs libtorch_cuda.so, holds the divergence kernel's device
// code and calls c10d's ProcessGroupNCCL. Prints "cuda-build: passed in N s" or "cuda-build: failed: why"; scripts/test.mjs
// runs it when JFA_CUDA_BUILD=1 (.ci/run sets it) and counts it as one test.
// With JFA_CUDA_RUN=1 it then loads that addon with that torch on this GPU-less machine and runs
// test/29, test/12 and test/45 with it.
// Environment: JFA_CUDA_TORCH (default 2.14.1), PYTHON (default python3), JFA_CUDA_RUN.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const venv = join(root, '.venv-cuda');
const torchVersion = process.env.JFA_CUDA_TORCH ?? '2.14.1';
const started = Date.now();
const secs = (from) => ((Date.now() - from) / 1000).toFixed(0);
const fail = (why) => {
  console.log(`cuda-build: failed: ${why}`);
  process.exit(1);
};
const run = (cmd, args, env = {}) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  return r.status ?? 1;
};

const sitePackages = () => {
  const lib = join(venv, 'lib');
  const py = existsSync(lib) ? readdirSync(lib).find((d) => d.startsWith('python')) : undefined;
  return py ? join(lib, py, 'site-packages') : undefined;
};

// 1. The venv and the wheels (skipped when the wanted torch is there already).
const t0 = Date.now();
let site = sitePackages();
const haveTorch = site && existsSync(join(site, `torch-${torchVersion}.dist-info`));
if (!haveTorch) {
  if (!existsSync(venv) && run(process.env.PYTHON ?? 'python3', ['-m', 'venv', venv]) !== 0) fail('could not create .venv-cuda');
  const pip = [join(venv, 'bin', 'python'), '-m', 'pip', 'install', '--retries', '1', '--timeout', '15', '--no-deps', '--no-input'];
  const wheels = [`torch==${torchVersion}`, 'nvidia-cuda-nvcc', 'nvidia-cuda-runtime', 'nvidia-cuda-cccl', 'nvidia-cuda-crt', 'nvidia-nvvm'];
  if (run(pip[0], [...pip.slice(1), ...wheels]) !== 0) fail(`pip could not install ${wheels.join(' ')}`);
  site = sitePackages();
}
if (!site || !existsSync(join(site, 'torch', 'lib', 'libtorch_cuda.so'))) fail(`${venv} has no CUDA torch (torch/lib/libtorch_cuda.so)`);
const toolkit = join(site, 'nvidia', readdirSync(join(site, 'nvidia')).filter((d) => /^cu\d+$/.test(d)).sort().pop() ?? 'cu13');
if (!existsSync(join(toolkit, 'bin', 'nvcc'))) fail(`no nvcc in ${toolkit}/bin (the nvidia-cuda-nvcc wheel)`);
// 1b. NCCL's, cuBLAS's, cuSPARSE's and cuSOLVER's headers (ProcessGroupNCCL.hpp opens ATen's CUDA
// context, which includes the last three), from the wheels torch requires at the versions it pins
// (nvidia-nccl-cuXX, and cuda-toolkit's cublas, cusolver and cusparse extras, which bring nvrtc and nvJitLink):
// step 4 (JFA_CUDA_RUN=1, as in CI) installs them anyway, so there they only move earlier.
const metadata = readFileSync(join(site, `torch-${torchVersion}.dist-info`, 'METADATA'), 'utf8');
const requirement = (re) => metadata.match(re)?.[1]?.replace(/\s+/g, '');
const ncclHeaders = [join(site, 'nvidia', 'nccl', 'include', 'nccl.h'), join(toolkit, 'include', 'cublas_v2.h'), join(toolkit, 'include', 'cusparse.h'), join(toolkit, 'include', 'cusolverDn.h')];
if (!ncclHeaders.every((h) => existsSync(h))) {
  const t = Date.now();
  const nccl = requirement(/^Requires-Dist: (nvidia-nccl-cu\d+==[^;\s]+)/m);
  const toolkitVersion = requirement(/^Requires-Dist: cuda-toolkit\[[^\]]*\](==[^;\s]+)/m);
  if (!nccl || !toolkitVersion) fail(`torch ${torchVersion}'s METADATA pins no nvidia-nccl-cuXX or cuda-toolkit[...] (found: ${nccl ?? '-'}, ${toolkitVersion ?? '-'})`);
  const wanted = [nccl, `cuda-toolkit[cublas,cusolver,cusparse]${toolkitVersion}`];
  const pip = [join(venv, 'bin', 'python'), '-m', 'pip', 'install', '--retries', '1', '--timeout', '15', '--no-input', '--quiet'];
  if (run(pip[0], [...pip.slice(1), ...wanted]) !== 0) fail(`pip could not install ${wanted.join(' ')} (NCCL's, cuBLAS's, cuSPARSE's and cuSOLVER's headers)`);
  const missing = ncclHeaders.filter((h) => !existsSync(h));
  if (missing.length) fail(`${wanted.join(' ')} installed, but ${missing.join(', ')} missing`);
  console.log(`cuda-build: NCCL, cuBLAS, cuSPARSE and cuSOLVER headers installed in ${secs(t)} s (${wanted.join(' ')})`);
}
// The wheels lay the toolkit out flat; nvcc.profile and CMake's FindCUDAToolkit look for
// targets/<arch>-linux/{include,lib} and an unversioned libcudart.so, as a toolkit install has.
const target = join(toolkit, 'targets', `${process.arch === 'arm64' ? 'sbsa' : 'x86_64'}-linux`);
mkdirSync(target, { recursive: true });
for (const d of ['include', 'lib']) if (!existsSync(join(target, d))) symlinkSync(join('..', '..', d), join(target, d));
const cudart = readdirSync(join(toolkit, 'lib')).find((f) => /^libcudart\.so\.\d+$/.test(f));
if (cudart && !existsSync(join(toolkit, 'lib', 'libcudart.so'))) symlinkSync(cudart, join(toolkit, 'lib', 'libcudart.so'));
console.log(`cuda-build: wheels ${haveTorch ? 'already installed' : `installed in ${secs(t0)} s`} (${site})`);

// 2. The build, in build-cuda/ (CMake tree and addon), without the C++ test executables (they would
// need cuBLAS and friends at link time; the CPU build runs them).
const t1 = Date.now();
// A configure step that failed leaves a CMake cache without build files, which cmake-js would not redo.
const tree = join(root, 'build-cuda', 'cmake');
if (existsSync(tree) && !existsSync(join(tree, 'build.ninja')) && !existsSync(join(tree, 'Makefile'))) rmSync(tree, { recursive: true, force: true });
// cmake-js passes its -D flags only to a new tree: one configured without NCCL gets it here.
const cache = join(tree, 'CMakeCache.txt');
if (existsSync(cache) && !/^JFA_NCCL:\w+=ON$/m.test(readFileSync(cache, 'utf8')) && run('cmake', ['-DJFA_NCCL=ON', tree]) !== 0) fail(`cmake could not turn JFA_NCCL on in ${tree}`);
const status = run(process.execPath, [join(root, 'scripts', 'build-native.mjs'), join(root, 'build-cuda', 'Release')], {
  LIBTORCH: join(site, 'torch'),
  JFA_CMAKE_DIR: join(root, 'build-cuda', 'cmake'),
  JFA_BUILD_TESTS: 'OFF',
  JFA_NCCL: '1',
  CUDACXX: join(toolkit, 'bin', 'nvcc'),
});
if (status !== 0) fail(`the build against torch ${torchVersion} (CUDA) failed (exit ${status})`);
console.log(`cuda-build: built in ${secs(t1)} s`);

// 3. What came out: linked to libtorch_cuda, with the kernel's device code for every architecture.
const addon = join(root, 'build-cuda', 'Release', 'jfa_torch.node');
const needed = spawnSync('readelf', ['-d', addon], { encoding: 'utf8' }).stdout ?? '';
if (!/libtorch_cuda\.so|libc10_cuda\.so/.test(needed)) fail(`${addon} does not need libtorch_cuda.so / libc10_cuda.so`);
const cuobjdump = join(toolkit, 'bin', 'cuobjdump');
const symbols = spawnSync('nm', ['-C', '--defined-only', addon], { encoding: 'utf8', maxBuffer: 256 * 2 ** 20 }).stdout ?? '';
if (!/jfa::cuda::kl_rows/.test(symbols)) fail(`${addon} lacks jfa::cuda::kl_rows`);
if (!/kl_rows_kernel/.test(symbols)) fail(`${addon} lacks the kl_rows_kernel device stubs`);
// JFA_WITH_NCCL compiled in: the addon calls ProcessGroupNCCL's constructor (resolved in libtorch_cuda.so).
const dynamic = spawnSync('nm', ['-C', '-D', '--undefined-only', addon], { encoding: 'utf8', maxBuffer: 256 * 2 ** 20 }).stdout ?? '';
if (!/c10d::ProcessGroupNCCL::ProcessGroupNCCL\(/.test(dynamic)) fail(`${addon} does not call c10d::ProcessGroupNCCL: JFA_WITH_NCCL was not compiled in (see the "jfa: c10d NCCL backend" line above)`);
const arches = existsSync(cuobjdump) ? (spawnSync(cuobjdump, ['--list-elf', addon], { encoding: 'utf8' }).stdout ?? '').match(/sm_\d+/g) : null;
console.log(`cuda-build: ${addon} needs libtorch_cuda, has kl_rows and the NCCL backend${arches ? ` (cubins: ${[...new Set(arches)].join(' ')})` : ''}`);

// 4. With JFA_CUDA_RUN=1 (.ci/run sets it): the CUDA build run on this CPU machine. libtorch_cuda
// needs the CUDA runtime libraries to load (cuBLAS, cuDNN, NCCL, ...: the wheels torch requires,
// about 3.4 GB), but no driver or GPU. Then test/29 (devices: the errors of a CUDA libtorch with no
// GPU, bf16 and JFA training on the CPU), test/12 (the Llama model against transformers) and
// test/45 (NCCL: built in, the refusals lifted) run with this addon and this libtorch: a CUDA
// build's CPU results are the CPU build's.
if (process.env.JFA_CUDA_RUN === '1') {
  const t2 = Date.now();
  const runtime = [...metadata.matchAll(/^Requires-Dist: ((?:nvidia-|cuda-toolkit)[^;\s]*(?:\[[^\]]*\])?[^;]*?)\s*(?:;.*)?$/gm)].map((m) => m[1].replace(/\s+/g, ''));
  if (!runtime.length) fail(`no nvidia-* / cuda-toolkit requirement found in torch ${torchVersion}'s METADATA`);
  if (!existsSync(join(site, 'nvidia', 'cublas')) || !existsSync(join(site, 'nvidia', 'cudnn'))) {
    const pip = [join(venv, 'bin', 'python'), '-m', 'pip', 'install', '--retries', '1', '--timeout', '15', '--no-input', '--quiet'];
    if (run(pip[0], [...pip.slice(1), ...runtime]) !== 0) fail(`pip could not install torch's CUDA runtime wheels (${runtime.join(' ')})`);
  }
  console.log(`cuda-build: runtime wheels ready in ${secs(t2)} s (${runtime.join(' ')})`);
  const t3 = Date.now();
  // test/45 too: this build must say it has NCCL (JFA_EXPECT_NCCL), and lift the GPU refusal.
  const tests = run(process.execPath, [join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', 'test/29.device.test.ts', 'test/12.llama.test.ts', 'test/45.nccl.test.ts'], {
    JFA_ADDON: addon,
    LIBTORCH: join(site, 'torch'),
    JFA_EXPECT_NCCL: '1',
  });
  if (tests !== 0) fail(`test/29, test/12 and test/45 with the CUDA build failed (exit ${tests})`);
  console.log(`cuda-build: test/29, test/12 and test/45 passed with the CUDA build and torch ${torchVersion} (no GPU) in ${secs(t3)} s`);
}
console.log(`cuda-build: passed in ${secs(started)} s`);
