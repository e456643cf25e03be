// The jfa command as a user runs it.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { rougeL } from '../lib/data/metrics.js';
import { demoSchema } from '../lib/bench/demo.js';
import { METHODS } from '../lib/jfa/methods.js';
import { studyPoints } from '../lib/bench/study.js';
import { root } from './helpers.js';

const jfa = (...args: string[]) =>
  spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', cwd: root, timeout: 230_000 });

describe('jfa command', () => {
  it('--help lists the commands', () => {
    const r = jfa('--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Usage: jfa');
    expect(r.stdout).toContain('doctor');
  });

  it('a bad flag prints its error and one hint line, not the usage text', () => {
    for (const [args, error, hint] of [
      [['train', '--epochs', 'x'], "error: option '--epochs <n>' argument 'x' is invalid. --epochs must be a number", 'hint: see jfa train --help'],
      [['eval', '--bogus'], "error: unknown option '--bogus'", 'hint: see jfa eval --help'],
      [['frobnicate'], "error: unknown command 'frobnicate'", 'hint: see jfa --help'],
    ] as const) {
      const r = jfa(...args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr.trim().split('\n')).toEqual([error, hint]);
      expect(r.stdout).toBe('');
    }
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

  it('demo runs every stage at tiny size, writes report.html and results.json, and reuses the cached base', () => {
    const out = mkdtempSync(join(tmpdir(), 'jfa-demo-'));
    const config = join(out, 'demo.yaml');
    writeFileSync(
      config,
      [
        'methods: [sft, flashback, jfa, jfa-no-latent]',
        'base: { pretrain: true, hiddenSize: 32, layers: 1, heads: 2, merges: 50, oldTrainPerSuite: 16, steps: 12, phases: [{ steps: 2, mix: { copy: 1 } }, { steps: 4, mix: { inContext: 1, named: { lookup-one: 1 } } }, { steps: 0, mix: { old: 0.5, skills: 0.2, inContext: 0.3 } }], microBatch: 8, evalPerSuite: 0, probes: 0 }',
        'train: { records: 16, microBatch: 4, accumulation: 2, groups: 2, perGroup: 2, latentRank: 2 }',
        'eval: { oldPerSuite: 4, newTasks: 3, newInstancesPerTask: 1, maxNewTokens: 4 }',
      ].join('\n'),
    );
    try {
      const first = jfa('demo', '--config', config, '--out', join(out, 'run'));
      expect(first.status, first.stderr).toBe(0);
      expect(first.stderr).toMatch(/base model: 0\.0\dM parameters, 12 steps of fresh records/);
      const table = first.stdout.split('\n');
      expect(table[0]).toMatch(/^method\s+new ROUGE-L\s+new EM\s+seen ROUGE-L\s+arith-gsm/);
      for (const m of ['base', 'sft', 'flashback', 'jfa', 'jfa --no-latent']) expect(table.some((l) => l.startsWith(`${m} `))).toBe(true);
      expect(first.stdout).toMatch(/^jfa: (SFT did not forget|.*of SFT's forgetting)/m);
      const results = JSON.parse(readFileSync(join(out, 'run', 'results.json'), 'utf8')) as {
        methods: Array<{ method: string; steps?: number; forgetting: number; old: Record<string, number>; curve?: unknown[] }>;
        base: { cached: boolean };
      };
      expect(results.base.cached).toBe(false);
      expect(results.methods.map((m) => m.method)).toEqual(['base', 'sft', 'flashback', 'jfa', 'jfa-no-latent']);
      for (const m of results.methods.slice(1)) {
        expect(m.steps).toBe(2);
        expect(m.curve).toHaveLength(2);
        const base = results.methods[0]!.old;
        const mean = Object.keys(base).reduce((s, k) => s + base[k]! - m.old[k]!, 0) / Object.keys(base).length;
        expect(m.forgetting).toBeCloseTo(mean, 10);
      }
      const html = readFileSync(join(out, 'run', 'report.html'), 'utf8');
      expect(html).toContain('<table>');
      // per-seed chart, old-task bars, loss and divergence curves; one dot and one mean ring per trained run
      expect(html.match(/<svg /g)).toHaveLength(4);
      expect(html.match(/<circle /g)).toHaveLength(4 * 2);
      expect(existsSync(join(out, 'run', 'data', 'new-eval.jsonl'))).toBe(true);
      expect(existsSync(join(out, 'run', 'runs', 'jfa', 'adapter', 'adapter_model.safetensors'))).toBe(true);
      // Every answer of a run in its predictions.jsonl: the held-out rows give the run's ROUGE-L and
      // its per-family scores, which report.html tabulates; the base's answers beside the runs.
      type Row = { set: string; task: string; family?: string; reference: string; prediction: string; rougeL?: number };
      const rows = readFileSync(join(out, 'run', 'runs', 'jfa', 'predictions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Row);
      const heldOut = rows.filter((r) => r.set === 'held-out');
      expect(heldOut).toHaveLength(3);
      expect(rows.filter((r) => r.set === 'arith-gsm')).toHaveLength(4);
      for (const r of heldOut) expect(r.rougeL).toBe(rougeL(r.prediction, r.reference));
      const jfaResult = results.methods.find((m) => m.method === 'jfa')! as unknown as { newRougeL: number; families: Record<string, number> };
      expect(heldOut.reduce((s, r) => s + r.rougeL!, 0) / heldOut.length).toBeCloseTo(jfaResult.newRougeL, 12);
      expect(Object.keys(jfaResult.families).sort()).toEqual([...new Set(heldOut.map((r) => r.family!))].sort());
      expect(html).toContain('<table class="families">');
      expect(existsSync(join(out, 'run', 'base-predictions.jsonl'))).toBe(true);

      // Same settings: the base is not pretrained again; --json prints the results; two seeds give
      // two runs, means and standard deviations.
      const second = jfa('demo', '--config', config, '--out', join(out, 'run'), '--methods', 'sft', '--seeds', '2', '--json');
      expect(second.status, second.stderr).toBe(0);
      type Run = { seed: number; newRougeL: number; forgetting: number };
      const again = JSON.parse(second.stdout) as { base: { cached: boolean }; methods: Array<{ method: string; old: Record<string, number>; newRougeL: number; runs?: Run[]; sd?: { newRougeL: number } }> };
      expect(again.base.cached).toBe(true);
      expect(again.methods.map((m) => m.method)).toEqual(['base', 'sft']);
      expect(again.methods[0]!.old).toEqual(results.methods[0]!.old);
      const sft = again.methods[1]!;
      expect(sft.runs!.map((r) => r.seed)).toEqual([1, 2]);
      expect(sft.newRougeL).toBeCloseTo((sft.runs![0]!.newRougeL + sft.runs![1]!.newRougeL) / 2, 12);
      expect(sft.sd!.newRougeL).toBeCloseTo(Math.abs(sft.runs![0]!.newRougeL - sft.runs![1]!.newRougeL) / Math.SQRT2, 12);

      // A base whose weights do not match its card is refused, naming the file and the fix.
      const copy = join(out, 'copy');
      cpSync(join(out, 'run', 'base'), copy, { recursive: true });
      const weights = readFileSync(join(copy, 'model.safetensors'));
      weights[weights.length - 1]! ^= 1;
      writeFileSync(join(copy, 'model.safetensors'), weights);
      const badConfig = join(out, 'bad.yaml');
      writeFileSync(badConfig, `base: { dir: ${JSON.stringify(copy)} }\n`);
      const refused = jfa('demo', '--out', join(out, 'run3'), '--methods', 'sft', '--config', badConfig);
      expect(refused.status).toBe(1);
      expect(refused.stderr).toMatch(/model\.safetensors: sha256 [0-9a-f]{16}\.\.\. does not match its card's/);

      // A study on the same (cached) base: one row per point, a report titled for it.
      const st = jfa('study', 'pcgrad', '--config', config, '--out', join(out, 'run'), '--json');
      expect(st.status, st.stderr).toBe(0);
      const study = JSON.parse(st.stdout) as { study: string; base: { cached: boolean }; methods: Array<{ label: string; runs?: unknown[] }>; points: unknown[] };
      expect(study.study).toBe('pcgrad');
      expect(study.base.cached).toBe(true);
      expect(study.methods.map((m) => m.label)).toEqual(['base', 'PCGrad', 'mean of gradients']);
      expect(study.methods[1]!.runs).toHaveLength(1);
      expect(readFileSync(join(out, 'run', 'report.html'), 'utf8')).toContain('study: pcgrad');
      const unknown = jfa('study', 'magic', '--out', join(out, 'run4'));
      expect(unknown.status).toBe(1);
      expect(unknown.stderr.trim()).toMatch(/^jfa: option 'study': must be one of flashbacks, alpha, .*, got "[^"]*"$/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 240_000);

  it('study points are the paper\'s sweeps', () => {
    expect(studyPoints('flashbacks').map((p) => p.x)).toEqual([0, 5, 10, 20, 32]);
    expect(studyPoints('flashbacks').map((p) => p.overrides.flashbacksPerSuite)).toEqual([0, 5, 10, 20, 32]);
    expect(studyPoints('alpha').map((p) => p.overrides.alpha)).toEqual([0.1, 0.3, 1, 3, 10]);
    expect(studyPoints('latent')[0]!.method).toBe('jfa-no-latent');
    expect(studyPoints('latent').slice(1).every((p) => p.method === 'jfa' && p.overrides.groups! > 0)).toBe(true);
    expect(studyPoints('pcgrad').map((p) => p.overrides.pcgrad)).toEqual([true, false]);
  });

  it('demo options: sections left out get every default, a partial section keeps the rest', () => {
    const d = demoSchema.parse({ train: { lr: 0.01 } });
    expect(d.train).toMatchObject({ lr: 0.01, records: 4000, microBatch: 8, accumulation: 2, alpha: 1, r: 8, loraAlpha: 16, groups: 16, perGroup: 24, k: 2 });
    expect(d.base.epochs).toBeGreaterThan(0);
    expect(d.eval).toMatchObject({ oldPerSuite: 200, newInstancesPerTask: 3 });
    expect(d.methods).toEqual(['sft', 'flashback', 'jfa', 'jfa-no-latent']);
    expect(demoSchema.parse({ methods: ['all'] }).methods).toEqual([...METHODS]);
    expect(demoSchema.parse({ methods: 'all' }).methods).toEqual([...METHODS]);
    expect(() => demoSchema.parse({ methods: ['all', 'sft'] })).toThrow();
  });

  it('demo refuses an unknown config key and an unknown method, in one line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'jfa-demo-bad-'));
    try {
      writeFileSync(join(dir, 'bad.yaml'), 'train: { lrr: 0.1 }\n');
      const r = jfa('demo', '--config', join(dir, 'bad.yaml'), '--out', join(dir, 'run'));
      expect(r.status).toBe(1);
      expect(r.stderr.trim()).toMatch(/^jfa: option 'train': unknown option 'lrr'$/);
      const m = jfa('demo', '--methods', 'sft', 'magic', '--out', join(dir, 'run'));
      expect(m.status).toBe(1);
      expect(m.stderr.trim()).toMatch(/^jfa: option 'methods\.1': must be one of sft, replay, .*, got "[^"]*"$/);
      expect(existsSync(join(dir, 'run'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
