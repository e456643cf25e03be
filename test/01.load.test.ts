// Loading the addon: where it comes from, what it reports, and the errors when something is missing.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { locateLibtorch } from '../lib/locate.js';
import { loadNative } from '../lib/native.js';
import { node } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'jfa-load-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const loadSnippet = `
import { loadNative } from './dist/native.js';
try { loadNative(); console.log('LOADED'); } catch (e) { console.log(e.name + '|' + e.message); }`;

describe('loading the addon', () => {
  it('loads with the located libtorch and reports it', () => {
    const l = loadNative();
    const torch = locateLibtorch().found!;
    expect(l.libtorch.root).toBe(torch.root);
    expect(l.build.torchVersion).toBe(torch.version);
    const info = l.addon.info();
    expect(info.torchVersion).toMatch(/^2\.\d+\.\d+/);
    expect(torch.version.startsWith(info.torchVersion)).toBe(true);
    expect(info.numThreads).toBeGreaterThanOrEqual(1);
    expect(info.faissVersion).toMatch(/^1\.\d+/);
    expect(l.addon.faissSelfCheck()).toBeNull();
  });

  it('names LIBTORCH and the fix when LIBTORCH points nowhere', () => {
    const r = node(loadSnippet, { LIBTORCH: join(tmp, 'nothing-here') });
    expect(r.stdout).toContain('NativeLoadError|');
    expect(r.stdout).toContain(`LIBTORCH ${join(tmp, 'nothing-here')} (does not exist)`);
    expect(r.stdout).toContain('Fix: run `npm run setup`');
  });

  it('refuses a libtorch of another version, naming both versions and the fix', () => {
    // A libtorch that is the real one in every file but its version.
    const real = locateLibtorch().found!;
    const fake = join(tmp, 'libtorch-2.0.0');
    mkdirSync(join(fake, 'share', 'cmake'), { recursive: true });
    symlinkSync(real.libDir, join(fake, 'lib'));
    symlinkSync(join(real.cmakePrefix, 'Torch'), join(fake, 'share', 'cmake', 'Torch'));
    writeFileSync(join(fake, 'build-version'), '2.0.0+cpu\n');
    const r = node(loadSnippet, { LIBTORCH: fake });
    expect(r.stdout).toContain('NativeLoadError|');
    expect(r.stdout).toContain(`built against libtorch ${real.version}`);
    expect(r.stdout).toContain(`is 2.0.0+cpu`);
    expect(r.stdout).toContain('npm run build:native');
    expect(r.stdout).not.toContain('LOADED');
  });

  it('names where it looked for the addon when there is none', () => {
    // node-gyp-build's override of the package directory: one with neither build/ nor prebuilds/;
    // and no JFA_ADDON (the sanitizer run sets it), which would be looked at first.
    const r = node(loadSnippet, { JFA_TORCH_PREBUILD: join(tmp, 'no-addon'), JFA_ADDON: undefined });
    expect(r.stdout).toContain('NativeLoadError|');
    expect(r.stdout).toContain('build/Release/*.node (missing)');
    expect(r.stdout).toContain(`prebuilds/${process.platform}-${process.arch}/*.node (none fits`);
    expect(r.stdout).toContain(`loaded from: ${join(tmp, 'no-addon')}`);
    // The fix for where this runs: a checkout (a project that installed the package gets `npm rebuild jfa-torch`).
    expect(r.stdout).toContain('Fix: in this checkout, run `npm run setup` (builds the addon).');
  });

  it('loads through LIBTORCH set to the same libtorch', () => {
    const r = node(loadSnippet, { LIBTORCH: locateLibtorch().found!.root });
    expect(r.stdout.trim()).toBe('LOADED');
  });
});
