// `jfa doctor`: what was found (libtorch, FAISS, the addon, the Python reference) and the fix for what was not.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import { baseVersion, isCheckout, locateFaiss, locateLibtorch, packageRoot, torchCacheVenv } from '../locate.js';
import { findAddon, loadNative, NativeLoadError } from '../native.js';
import { inspectPython, pinnedTorchVersion } from '../setup-torch.js';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string;
}

function pythonReference(): Check {
  const lib = join(packageRoot, '.venv', 'lib');
  const site = existsSync(lib)
    ? readdirSync(lib)
        .filter((d) => d.startsWith('python'))
        .map((d) => join(lib, d, 'site-packages'))
    : [];
  const wanted = ['torch', 'transformers', 'peft', 'safetensors'];
  const missing = wanted.filter((p) => !site.some((s) => existsSync(join(s, p))));
  return {
    name: 'python reference',
    ok: missing.length === 0,
    detail: missing.length ? `missing in .venv: ${missing.join(', ')} (the parity tests need them)` : `${wanted.join(', ')} in .venv (tests only)`,
    fix: missing.length ? 'npm run setup' : undefined,
  };
}

/** What the Python on PATH (or $PYTHON) offers to `jfa setup-torch`. */
function pythonCheck(torchFound: boolean, version: string): Check {
  const py = inspectPython();
  const ready = py.executable !== undefined && (py.venv || py.pip);
  const detail = py.executable
    ? `${py.executable} ${py.version}; venv ${py.venv ? 'yes' : 'no (no ensurepip)'}, pip ${py.pip ? 'yes' : 'no'}, torch ${py.torch ? `at ${py.torch}` : 'no'}`
    : `${py.python} not found or does not run`;
  if (torchFound) return { name: 'python', ok: true, detail: `${detail} (not needed: libtorch is found)` };
  return {
    name: 'python',
    ok: ready,
    detail,
    fix: !py.executable
      ? `install Python 3 with venv (Debian/Ubuntu: apt-get install python3 python3-venv), then npx jfa setup-torch; or download libtorch ${baseVersion(version)} (CPU) from https://pytorch.org and set LIBTORCH to it`
      : !ready
        ? 'apt-get install python3-venv (Debian/Ubuntu), then npx jfa setup-torch'
        : undefined,
  };
}

/**
 * The checks `jfa doctor` prints. Fixes are the commands that work where the package runs: in a
 * checkout (`npm run setup`), or in a project that installed it (`npx jfa setup-torch`), where the
 * Python reference packages (tests only) are not checked.
 */
export function doctor(): Check[] {
  const checkout = isCheckout();
  const checks: Check[] = [];
  checks.push({
    name: 'node',
    ok: true,
    detail: `${process.version} ${process.platform}-${process.arch}; jfa-torch at ${packageRoot} (${checkout ? 'a checkout' : 'installed as a dependency'})`,
  });

  const addon = findAddon();
  const version = (() => {
    try {
      return pinnedTorchVersion();
    } catch {
      return 'unknown';
    }
  })();
  const torch = locateLibtorch(process.env, process.cwd(), addon?.build?.torchVersion);
  const torchFix = checkout
    ? 'npm run setup, or set LIBTORCH to an unpacked libtorch or a torch package directory'
    : `npx jfa setup-torch (installs torch ${version} into ${torchCacheVenv(version)}), or set LIBTORCH to an unpacked libtorch ${baseVersion(version)} or a torch ${baseVersion(version)} package directory`;
  checks.push(
    torch.found
      ? {
          name: 'libtorch',
          ok: true,
          detail: `${torch.found.version} at ${torch.found.root} (from ${torch.found.source}${torch.found.cuda ? ', CUDA' : ', CPU'})`,
        }
      : {
          name: 'libtorch',
          ok: false,
          detail: `not found (${torch.tried.map((t) => `${t.source}: ${t.path} ${t.problem}`).join('; ')}); the addon needs torch ${version}`,
          fix: torchFix,
        },
  );
  if (!checkout) checks.push(pythonCheck(torch.found !== undefined, version));

  const faiss = locateFaiss();
  const prebuilt = addon?.kind === 'prebuilt';
  // A project running the prebuilt binary never builds: FAISS is inside it.
  checks.push(
    prebuilt && !checkout
      ? { name: 'faiss (build)', ok: true, detail: 'not needed: the prebuilt binary has FAISS linked in' }
      : faiss.found
        ? { name: 'faiss (build)', ok: true, detail: `${faiss.found.version} at ${faiss.found.cmakeDir}` }
        : {
            name: 'faiss (build)',
            ok: false,
            detail: 'no faiss-config.cmake (only needed to build the addon from source)',
            fix: 'apt-get install libfaiss-dev libopenblas-dev (or set FAISS_DIR)',
          },
  );

  try {
    const l = loadNative();
    const info = l.addon.info();
    const faissProblem = l.addon.faissSelfCheck();
    checks.push({
      name: 'addon',
      ok: true,
      detail: `${l.binaryPath} (${l.binaryKind}, built for libtorch ${l.build.torchVersion}, loaded in ${l.loadMs.toFixed(0)} ms)`,
    });
    checks.push({
      name: 'torch runtime',
      ok: true,
      detail: `threads ${info.numThreads}, MKL ${info.mkl ? 'yes' : 'no'}, OpenMP ${info.openmp ? 'yes' : 'no'}, CUDA ${
        info.cuda ? `yes (${info.cudaDevices} device${info.cudaDevices === 1 ? '' : 's'})` : 'no'
      }`,
    });
    // GPUs: name, memory, capability and the CUDA caching allocator's bytes; none on a CPU build.
    const gpus = l.addon.stats().gpus;
    const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
    checks.push({
      name: 'gpu',
      ok: true,
      detail: !info.cuda
        ? 'none: this libtorch has no CUDA (CPU build)'
        : gpus.length === 0
          ? `none visible (CUDA ${info.cudaVersion || 'runtime of libtorch'}; check nvidia-smi and CUDA_VISIBLE_DEVICES)`
          : `CUDA ${info.cudaVersion || '(addon built without CUDA kernels)'}: ` +
            gpus.map((g) => `cuda:${g.index} ${g.name}, ${gib(g.totalMemory)}, capability ${g.capability}, allocator ${gib(g.allocatedBytes)} allocated / ${gib(g.reservedBytes)} reserved`).join('; '),
    });
    checks.push({
      name: 'faiss (runtime)',
      ok: faissProblem === null,
      detail: faissProblem === null ? `${info.faissVersion}, flat inner-product search works` : faissProblem,
      fix: faissProblem === null ? undefined : checkout ? 'rebuild the addon: npm run build:native' : 'npm rebuild jfa-torch --build-from-source',
    });
  } catch (e) {
    const problems = e instanceof NativeLoadError ? e.problems : [(e as Error).message];
    const onlyTorch = problems.every((p) => p.startsWith('libtorch:'));
    checks.push({
      name: 'addon',
      ok: false,
      detail: problems.join(' | '),
      fix: onlyTorch ? (checkout ? 'npm run setup' : 'npx jfa setup-torch') : checkout ? 'npm run setup' : 'npm rebuild jfa-torch --build-from-source (with LIBTORCH set)',
    });
  }
  if (checkout) checks.push(pythonReference());
  return checks;
}

export function formatChecks(checks: Check[]): string {
  const width = Math.max(...checks.map((c) => c.name.length));
  return checks
    .map((c) => `${c.ok ? 'ok     ' : 'MISSING'}  ${c.name.padEnd(width)}  ${c.detail}${c.fix ? `\n         ${' '.repeat(width)}  fix: ${c.fix}` : ''}`)
    .join('\n');
}
