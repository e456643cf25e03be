// `jfa doctor`: what was found (libtorch, FAISS, the addon, the Python reference) and the fix for what was not.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import { locateFaiss, locateLibtorch, packageRoot } from '../locate.js';
import { loadNative, NativeLoadError } from '../native.js';

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
    detail: missing.length ? `missing in .venv: ${missing.join(', ')}` : `${wanted.join(', ')} in .venv (tests only)`,
    fix: missing.length ? 'npm run setup' : undefined,
  };
}

export function doctor(): Check[] {
  const checks: Check[] = [];
  checks.push({ name: 'node', ok: true, detail: `${process.version} ${process.platform}-${process.arch}` });

  const torch = locateLibtorch();
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
          detail: `not found (${torch.tried.map((t) => `${t.source}: ${t.path} ${t.problem}`).join('; ')})`,
          fix: 'npm run setup, or set LIBTORCH to an unpacked libtorch or a torch package directory',
        },
  );

  const faiss = locateFaiss();
  checks.push(
    faiss.found
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
    checks.push({
      name: 'faiss (runtime)',
      ok: faissProblem === null,
      detail: faissProblem === null ? `${info.faissVersion}, flat inner-product search works` : faissProblem,
      fix: faissProblem === null ? undefined : 'rebuild the addon: npm run build:native',
    });
  } catch (e) {
    const problems = e instanceof NativeLoadError ? e.problems : [(e as Error).message];
    checks.push({ name: 'addon', ok: false, detail: problems.join(' | '), fix: 'npm run setup' });
  }
  checks.push(pythonReference());
  return checks;
}

export function formatChecks(checks: Check[]): string {
  const width = Math.max(...checks.map((c) => c.name.length));
  return checks
    .map((c) => `${c.ok ? 'ok     ' : 'MISSING'}  ${c.name.padEnd(width)}  ${c.detail}${c.fix ? `\n         ${' '.repeat(width)}  fix: ${c.fix}` : ''}`)
    .join('\n');
}
