// The published package (test/pack.ts: `npm run prebuild`, then `npm pack`, once per vitest run),
// installed into an empty folder twice: with install scripts on and no compiler available (the prebuilt binary), and with
// --build-from-source and LIBTORCH (compiles the addon from the tarball's sources), and use each.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { locateLibtorch } from '../lib/locate.js';
import { packedTarball, sh } from './pack.js';

const work = mkdtempSync(join(tmpdir(), 'jfa-pack-'));
let tarball = '';

function emptyApp(name: string): string {
  const app = join(work, name);
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name, version: '1.0.0', type: 'module' }));
  return app;
}

/** Runs a matmul through the package installed in `app`, in a fresh Node process, with LIBTORCH set. */
function useInstalled(app: string, env: NodeJS.ProcessEnv) {
  const script = `
    import { matmul, tensor, nativeLocation, runtimeInfo } from 'jfa-torch';
    const c = matmul(tensor([1, 2, 3, 4], [2, 2]), tensor([1, 1, 1, 1], [2, 2]));
    console.log(JSON.stringify({ values: Array.from(c.toTypedArray()), where: nativeLocation(), info: runtimeInfo() }));`;
  const libtorch = locateLibtorch().found!;
  const out = sh(process.execPath, ['--input-type=module', '-e', script], app, { ...env, LIBTORCH: libtorch.root });
  return {
    libtorch,
    ...(JSON.parse(out) as { values: number[]; where: { binaryKind: string; binaryPath: string }; info: { torchVersion: string } }),
  };
}

beforeAll(() => {
  tarball = packedTarball();
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('packed package', () => {
  it('the tarball holds the prebuilt binary, the preload module, the build record and dist', () => {
    const list = sh('tar', ['-tzf', tarball], work).split('\n');
    const plat = `package/prebuilds/${process.platform}-${process.arch}/`;
    expect(list.some((f) => f.startsWith(plat) && f.endsWith('.node'))).toBe(true);
    expect(list).toContain(`${plat}jfa_preload.so`);
    expect(list).toContain(`${plat}jfa_torch.build.json`);
    expect(list).toContain('package/dist/index.js');
    expect(list).toContain('package/dist/index.d.ts');
    expect(list.some((f) => f.includes('/tests/'))).toBe(false);
  });

  it('installs into an empty folder without compiling and runs an op from the prebuilt binary', () => {
    const app = emptyApp('app');
    // Every compiler and build tool on PATH is a trap that records being called and fails.
    const bin = join(work, 'no-compilers');
    mkdirSync(bin);
    const marker = join(work, 'compiler-was-called');
    for (const tool of ['cc', 'gcc', 'c++', 'g++', 'clang', 'clang++', 'cmake', 'make', 'ninja', 'node-gyp']) {
      writeFileSync(join(bin, tool), `#!/bin/sh\necho "$0 $*" >> ${marker}\nexit 1\n`);
      chmodSync(join(bin, tool), 0o755);
    }
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, CC: join(bin, 'cc'), CXX: join(bin, 'c++') };
    const out = sh('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts', tarball], app, env);
    expect(out).toContain('using the prebuilt binary');
    expect(out).not.toContain('building from source');
    expect(existsSync(marker)).toBe(false);
    const pkg = join(app, 'node_modules', 'jfa-torch');
    expect(existsSync(join(pkg, 'build'))).toBe(false);
    expect(readdirSync(join(pkg, 'prebuilds'))).toContain(`${process.platform}-${process.arch}`);

    const result = useInstalled(app, env);
    expect(result.values).toEqual([3, 3, 7, 7]);
    expect(result.where.binaryKind).toBe('prebuilt');
    expect(result.where.binaryPath.startsWith(join(pkg, 'prebuilds'))).toBe(true);
    expect(existsSync(marker)).toBe(false);
  });

  // Compiles the whole addon (110-150 s here on 2 cores), hence its own timeout.
  it('installs from source out of the tarball with LIBTORCH, without the C++ tests, and loads its own build', () => {
    const app = emptyApp('app-from-source');
    const env: NodeJS.ProcessEnv = { ...process.env, LIBTORCH: locateLibtorch().found!.root };
    delete env.JFA_BUILD_TESTS; // the default is what is under test: OFF where native/**/tests/ is not shipped
    const args = ['install', '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts', '--build-from-source', tarball];
    const out = sh('npm', args, app, env, 1_500_000);
    expect(out).toContain('building from source');
    const pkg = join(app, 'node_modules', 'jfa-torch');
    expect(existsSync(join(pkg, 'native', 'core', 'tests'))).toBe(false);
    expect(readFileSync(join(pkg, 'build-cmake', 'CMakeCache.txt'), 'utf8')).toContain('JFA_BUILD_TESTS:BOOL=OFF');
    expect(existsSync(join(pkg, 'build', 'Release', 'jfa_torch.build.json'))).toBe(true);

    // The tarball still holds the prebuilt binary; the one just built must win over it, as in node-gyp-build.
    const result = useInstalled(app, env);
    expect(result.values).toEqual([3, 3, 7, 7]);
    expect(result.where.binaryKind).toBe('source build');
    expect(result.where.binaryPath).toBe(join(pkg, 'build', 'Release', 'jfa_torch.node'));
    expect(result.libtorch.version.startsWith(result.info.torchVersion)).toBe(true);
  }, 1_600_000);
});
