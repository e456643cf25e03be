// The jfa command as a user runs it.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { root } from './helpers.js';

const jfa = (...args: string[]) =>
  spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', cwd: root, timeout: 60_000 });

describe('jfa command', () => {
  it('--help lists the commands', () => {
    const r = jfa('--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Usage: jfa');
    expect(r.stdout).toContain('doctor');
  });

  it('doctor --json reports libtorch 2.x, FAISS and the addon, all found', () => {
    const r = jfa('doctor', '--json');
    expect(r.status, r.stderr).toBe(0);
    const checks = JSON.parse(r.stdout) as Array<{ name: string; ok: boolean; detail: string }>;
    const byName = Object.fromEntries(checks.map((c) => [c.name, c]));
    expect(byName.libtorch?.ok).toBe(true);
    expect(byName.libtorch?.detail).toMatch(/^2\.\d+\.\d+/);
    expect(byName['faiss (runtime)']?.ok).toBe(true);
    expect(byName['faiss (runtime)']?.detail).toMatch(/^1\.\d+\.\d+, flat inner-product search works/);
    expect(byName.addon?.ok).toBe(true);
    expect(byName['torch runtime']?.detail).toMatch(/threads \d+/);
  });

  it('doctor names what is missing and exits non-zero', () => {
    const r = spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), 'doctor'], {
      encoding: 'utf8',
      cwd: root,
      env: { ...process.env, LIBTORCH: '/nonexistent/libtorch' },
    });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/MISSING\s+libtorch\s+not found \(LIBTORCH: \/nonexistent\/libtorch does not exist\)/);
    expect(r.stdout).toContain('fix: npm run setup, or set LIBTORCH');
  });

  it('an unknown command exits non-zero with a one-line reason', () => {
    const r = jfa('frobnicate');
    expect(r.status).not.toBe(0);
    expect(r.stderr.split('\n')[0]).toContain("unknown command 'frobnicate'");
  });

  it('demo runs the native walkthrough', () => {
    const r = jfa('demo', '--json');
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { matmul: { gflops: number; scopeFreed: boolean; rejected: string } };
    expect(out.matmul.gflops).toBeGreaterThan(0);
    expect(out.matmul.scopeFreed).toBe(true);
    expect(out.matmul.rejected).toContain('RangeError: matmul: shapes [2, 3] and [2, 3]');
  });
});
