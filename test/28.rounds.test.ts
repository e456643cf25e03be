// Continual rounds: BWT and forgetting against hand-computed matrices; the flashback budget across
// rounds; a round continuing from a run starts from that run's model (merged or stacked, checked
// numerically), with that model as its reference; a killed continued round resumes bit-identical;
// `jfa train --continue-from` and `jfa demo --rounds 3` end to end at tiny size.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readJsonl } from '../lib/data/jsonl.js';
import { OLD_SUITE_NAMES } from '../lib/data/old-tasks.js';
import { type FlashbackRecord } from '../lib/data/records.js';
import { writeSuite } from '../lib/data/suite.js';
import { splitRounds } from '../lib/bench/rounds.js';
import { accumulateFlashbacks, columnForgetting, continualMetrics, loadRounds, readRun } from '../lib/jfa/continual.js';
import { evaluateNew } from '../lib/jfa/evaluate.js';
import { promptBatch } from '../lib/jfa/examples.js';
import { train, type TrainOptions } from '../lib/jfa/trainer.js';
import { flashbackDivergence } from '../lib/kernels.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { type Tensor } from '../lib/tensor.js';
import { expectError, root, tinyJfaRun } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-rounds-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'base');
const { suite, options: jfaOptions } = tinyJfaRun();
const options: TrainOptions = { ...jfaOptions, method: 'flashback', lr: 2e-2 };
// 2 flashbacks of each of the 5 old suites
const round1 = { newTrain: suite.newTrain.slice(0, 16), flashbacks: OLD_SUITE_NAMES.flatMap((n) => suite.flashbacks.filter((f) => f.task === n).slice(0, 2)) };
const round2 = { newTrain: suite.newTrain.slice(40, 56), flashbacks: round1.flashbacks };
const round3 = { newTrain: suite.newTrain.slice(80, 96), flashbacks: round1.flashbacks };
const tokenizer = () => Tokenizer.fromDir(modelDir);
const maxDiff = (a: Tensor, b: Tensor) => {
  const x = a.toTypedArray() as Float32Array, y = b.toTypedArray() as Float32Array;
  return x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i]!)), 0);
};
/** Logits of the first flashbacks through `model` (adapters on). */
const probe = (model: LlamaModel, adapters = true) => {
  const b = promptBatch(tokenizer(), round1.flashbacks.slice(0, 4), 96);
  return { logits: model.logits(b.ids, { attentionMask: b.attentionMask, adapters }), mask: b.attentionMask };
};

beforeAll(async () => {
  createModel(modelDir, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 1 });
  await train(LlamaModel.load(modelDir), tokenizer(), round1, { ...options, outDir: join(dir, 'r1') });
});

describe('BWT and forgetting', () => {
  it('match hand-computed values, rounds numbered as in the papers', () => {
    // BWT = ((0.3 - 0.5) + (0.5 - 0.6)) / 2; F = ((0.5 - 0.3) + (0.6 - 0.5)) / 2
    const a = continualMetrics([[0.5, null, null], [0.4, 0.6, null], [0.3, 0.5, 0.7]]);
    expect(a.bwt).toBeCloseTo(-0.15, 12);
    expect(a.forgetting).toBeCloseTo(0.15, 12);
    // The best score on a round's tasks need not be right after it: F takes the max over rounds j..T-1.
    const b = continualMetrics([[0.2, null, null], [0.6, 0.5, null], [0.3, 0.4, 0.9]]);
    expect(b.bwt).toBeCloseTo(0, 12); // ((0.3 - 0.2) + (0.4 - 0.5)) / 2
    expect(b.forgetting).toBeCloseTo(0.2, 12); // ((0.6 - 0.3) + (0.5 - 0.4)) / 2
    expect(b.perRound.map((p) => p.best)).toEqual([0.6, 0.5]);
    // Positive backward transfer: negative forgetting.
    const c = continualMetrics([[0.1, null], [0.4, 0.5]]);
    expect(c.bwt).toBeCloseTo(0.3, 12);
    expect(c.forgetting).toBeCloseTo(-0.3, 12);
    // Four rounds: BWT = (-0.1 - 0.2 + 0) / 3; F = (max(.5,.6,.4)-.4 + max(.7,.5)-.5 + .3-.3) / 3 = (0.2 + 0.2 + 0) / 3
    const d = continualMetrics([[0.5, null, null, null], [0.6, 0.7, null, null], [0.4, 0.5, 0.3, null], [0.4, 0.5, 0.3, 0.8]]);
    expect(d.bwt).toBeCloseTo(-0.1, 12);
    expect(d.forgetting).toBeCloseTo(0.4 / 3, 12);
    expect(columnForgetting([0.41, 0.3, 0.35, 0.2])).toBeCloseTo(0.21, 12);
  });

  it('refuse fewer than 2 rounds and missing entries, naming them', () => {
    expectError(() => continualMetrics([[0.5]]), RangeError, 'at least 2 rounds, got 1');
    expectError(() => continualMetrics([[0.5, null], [null, 0.4]]), RangeError, 'R[1][0]', 'after round 2', "round 1's tasks");
    expectError(() => continualMetrics([[0.5, null], [0.4]]), RangeError, 'row 1 must have 2 entries');
    expectError(() => columnForgetting([0.5]), RangeError, 'at least 2 finite scores');
  });
});

describe('the demo\'s split into rounds', () => {
  it('deals whole families, deterministic by seed, every training record once, each round with held-out records', () => {
    const a = splitRounds(suite.newTrain, suite.newEval, 3, 1);
    expect(splitRounds(suite.newTrain, suite.newEval, 3, 1)).toEqual(a);
    expect(splitRounds(suite.newTrain, suite.newEval, 3, 2).map((s) => s.families)).not.toEqual(a.map((s) => s.families));
    const families = a.flatMap((s) => s.families);
    expect(new Set(families).size).toBe(families.length);
    expect(a.reduce((n, s) => n + s.train.length, 0)).toBe(suite.newTrain.length);
    for (const s of a) {
      expect(s.eval.length).toBeGreaterThan(0);
      // no task is both trained and evaluated
      const trained = new Set(s.train.map((r) => r.task));
      expect(s.eval.some((r) => trained.has(r.task))).toBe(false);
    }
    expectError(() => splitRounds(suite.newTrain.slice(0, 1), suite.newEval, 2, 1), RangeError, '--rounds 2', 'only 1 families');
  });
});

describe('flashbacks across rounds', () => {
  const old = suite.flashbacks; // 5 suites x 32
  const prompts = (n: number, tag: string): FlashbackRecord[] => Array.from({ length: n }, (_, i) => ({ task: `${tag}-${i % 3}`, instruction: 'say', input: `${tag} ${i}` }));
  const count = (fb: FlashbackRecord[], pred: (f: FlashbackRecord) => boolean) => fb.filter(pred).length;

  it('spread the budget evenly over the old suites and the earlier rounds, deterministic by seed', () => {
    const fb = accumulateFlashbacks(old, [prompts(100, 'r1')], 160, 7);
    expect(fb).toHaveLength(160);
    const suites = [...new Set(old.map((f) => f.task))];
    expect(suites.map((s) => count(fb, (f) => f.task === s))).toEqual([27, 27, 27, 27, 26]);
    expect(count(fb, (f) => f.task.startsWith('r1-'))).toBe(26);
    expect(accumulateFlashbacks(old, [prompts(100, 'r1')], 160, 7)).toEqual(fb);
    expect(accumulateFlashbacks(old, [prompts(100, 'r1')], 160, 8)).not.toEqual(fb);
    // No duplicates: each source is sampled without replacement.
    expect(new Set(fb.map((f) => JSON.stringify(f))).size).toBe(160);
  });

  it('give a small source all it has and share the rest; never exceed the budget or what exists', () => {
    const fb = accumulateFlashbacks(old, [prompts(3, 'r1'), prompts(100, 'r2')], 160, 1);
    expect(fb).toHaveLength(160);
    expect(count(fb, (f) => f.task.startsWith('r1-'))).toBe(3);
    // 157 over 5 suites and round 2: 27, 26, 26, 26, 26 and 26
    expect(count(fb, (f) => f.task.startsWith('r2-'))).toBe(26);
    expect(accumulateFlashbacks(old.slice(0, 4), [prompts(2, 'r1')], 100, 1)).toHaveLength(6);
    expect(accumulateFlashbacks(old, [], 0, 1)).toEqual([]);
    expectError(() => accumulateFlashbacks(old, [], -1, 1), RangeError, 'budget must be a non-negative integer, got -1');
  });
});

describe('continueFrom', () => {
  it('the model after round 1, rebuilt by merge or stack, gives round 1\'s outputs (and the base\'s differ)', () => {
    const r1 = LlamaModel.load(modelDir);
    r1.loadAdapter(join(dir, 'r1', 'adapter'));
    const want = probe(r1).logits;
    const base = probe(LlamaModel.load(modelDir)).logits;
    expect(maxDiff(want, base)).toBeGreaterThan(1e-3);
    for (const mode of ['merge', 'stack'] as const) {
      const m = LlamaModel.load(modelDir);
      loadRounds(m, readRun(join(dir, 'r1')), mode).foldLast();
      m.addLora({ r: 4, loraAlpha: 8, seed: 9 });
      expect(m.stackedAdapters).toBe(mode === 'stack' ? 1 : 0);
      // a fresh adapter starts at zero: round 2 starts exactly from round 1's model
      expect(maxDiff(probe(m).logits, want), mode).toBeLessThan(1e-5);
      // and the reference (adapters off) is round 1's model too
      expect(maxDiff(probe(m, false).logits, want), mode).toBeLessThan(1e-5);
    }
  });

  const firstLoss: Record<string, number> = {};
  for (const mode of ['merge', 'stack'] as const) {
    it(`${mode}: round 2 starts from round 1's model, which is its reference; its flashbacks accumulate within the budget; round 3 continues the chain`, async () => {
      const out2 = join(dir, `r2-${mode}`);
      const divergences: number[] = [];
      const sft: number[] = [];
      await train(LlamaModel.load(modelDir), tokenizer(), round2, { ...options, outDir: out2, continueFrom: join(dir, 'r1'), continueMode: mode, flashbackBudget: 12, onStep: (p) => (divergences.push(p.divergence), sft.push(p.sft)) });
      // Step 1's new-task loss is the start model's: round 1's in both modes, not the base's.
      firstLoss[mode] = sft[0]!;
      if (mode === 'merge') {
        const fromBase: number[] = [];
        await train(LlamaModel.load(modelDir), tokenizer(), round2, { ...options, maxSteps: 1, onStep: (p) => fromBase.push(p.sft) });
        expect(Math.abs(fromBase[0]! - sft[0]!)).toBeGreaterThan(1e-4);
      } else expect(sft[0]).toBeCloseTo(firstLoss.merge!, 5);
      // At step 1 the new adapter is zero, so the model is round 1's: against that reference the
      // divergence is zero; against the original base it would be what the control below measures.
      expect(divergences[0]).toBeLessThan(1e-9);
      const r1 = LlamaModel.load(modelDir);
      r1.loadAdapter(join(dir, 'r1', 'adapter'));
      const after1 = probe(r1);
      const control = flashbackDivergence(after1.logits, probe(LlamaModel.load(modelDir)).logits, after1.mask).toTypedArray()[0]!;
      expect(control).toBeGreaterThan(1e-6);
      expect(divergences.slice(1).some((d) => d > 1e-9)).toBe(true);

      // 12 flashbacks: 5 old suites (the 10 given: 2 of each) and round 1's prompts, 2 each
      const used = readJsonl(join(out2, 'flashbacks.jsonl'), 'flashback');
      expect(used).toHaveLength(12);
      const round1Tasks = new Set(round1.newTrain.map((r) => r.task));
      expect(used.filter((f) => round1Tasks.has(f.task))).toHaveLength(2);
      expect(used).toEqual(accumulateFlashbacks(round1.flashbacks, [readJsonl(join(dir, 'r1', 'prompts.jsonl'), 'flashback')], 12, options.seed!));

      const chain = JSON.parse(readFileSync(join(out2, 'continual.json'), 'utf8'));
      expect(chain).toMatchObject({ version: 1, base: modelDir, mode, rounds: [{ adapter: 'rounds/1/adapter', prompts: 'rounds/1/prompts.jsonl' }] });

      // Round 3 from round 2: two rounds beneath; its start is round 2's model.
      const r2 = LlamaModel.load(modelDir);
      r2.loadAdapter(join(dir, 'r1', 'adapter'));
      if (mode === 'merge') r2.mergeLora();
      else r2.stackLora();
      r2.loadAdapter(join(out2, 'adapter'));
      const want = probe(r2).logits;
      const m = LlamaModel.load(modelDir);
      const prev = readRun(out2);
      expect(prev.rounds).toHaveLength(2);
      loadRounds(m, prev, mode).foldLast();
      expect(m.stackedAdapters).toBe(mode === 'stack' ? 2 : 0);
      expect(maxDiff(probe(m, false).logits, want)).toBeLessThan(1e-5);
      const out3 = join(dir, `r3-${mode}`);
      const d3: number[] = [];
      await train(LlamaModel.load(modelDir), tokenizer(), round3, { ...options, outDir: out3, continueFrom: out2, continueMode: mode, onStep: (p) => d3.push(p.divergence) });
      expect(d3[0]).toBeLessThan(1e-9);
      expect(readJsonl(join(out3, 'flashbacks.jsonl'), 'flashback')).toHaveLength(10); // the budget defaults to the flashbacks given
      expect(JSON.parse(readFileSync(join(out3, 'continual.json'), 'utf8')).rounds).toHaveLength(2);
    }, 180_000);
  }

  it('jfa with a retrieve pool: continues the pool; a killed round 2 resumes to a bit-identical adapter and pool', async () => {
    const jfa: TrainOptions = { ...options, method: 'jfa' };
    await train(LlamaModel.load(modelDir), tokenizer(), round1, { ...jfa, outDir: join(dir, 'j1') });
    const go = (out: string, extra: Partial<TrainOptions> = {}) => train(LlamaModel.load(modelDir), tokenizer(), round2, { ...jfa, outDir: out, continueFrom: join(dir, 'j1'), ...extra });
    const full = await go(join(dir, 'j2-full'));
    expect(full.pool?.mode).toBe('retrieve');
    const stopped = await go(join(dir, 'j2-killed'), { pauseAfter: 2 });
    expect(stopped.stoppedEarly).toBe(true);
    expect(existsSync(join(dir, 'j2-killed', 'checkpoint', 'state.json'))).toBe(true);
    const resumed = await go(join(dir, 'j2-killed'), { resume: true });
    expect(resumed.steps).toBe(resumed.totalSteps);
    for (const f of ['adapter/adapter_model.safetensors', 'adapter/latent_pool.safetensors'])
      expect(readFileSync(join(dir, 'j2-killed', f)).equals(readFileSync(join(dir, 'j2-full', f))), f).toBe(true);
    // The pool carried over: same keys as round 1's (the file's first tensor bytes differ only where A and B trained).
    // A checkpoint made for another chain is refused.
    await expect(train(LlamaModel.load(modelDir), tokenizer(), round2, { ...jfa, outDir: join(dir, 'j2-killed2'), pauseAfter: 1, continueFrom: join(dir, 'j1') }).then(() =>
      train(LlamaModel.load(modelDir), tokenizer(), round2, { ...jfa, outDir: join(dir, 'j2-killed2'), continueFrom: join(dir, 'j1'), continueMode: 'stack', resume: true }),
    )).rejects.toThrow(/is from another run/);
    // A round that cannot serve the previous round's pool is refused, naming it.
    await expect(train(LlamaModel.load(modelDir), tokenizer(), round2, { ...options, outDir: join(dir, 'j2-sft'), continueFrom: join(dir, 'j1') })).rejects.toThrow(/serves with a 'retrieve' latent pool/);
  }, 300_000);

  it('refuses bad continuations with the folder, model or option named', async () => {
    await expect(train(LlamaModel.load(modelDir), tokenizer(), round2, { ...options, outDir: join(dir, 'x'), continueFrom: join(dir, 'nothing') })).rejects.toThrow(/nothing is not a finished run/);
    const adapted = LlamaModel.load(modelDir);
    adapted.addLora();
    await expect(train(adapted, tokenizer(), round2, { ...options, continueFrom: join(dir, 'r1') })).rejects.toThrow(/already has adapters/);
    await expect(train(LlamaModel.load(modelDir), tokenizer(), round2, { ...options, continueMode: 'stack' })).rejects.toThrow(/continueMode applies only with continueFrom/);
    await expect(train(LlamaModel.load(modelDir), tokenizer(), round2, { ...options, continueFrom: join(dir, 'r2-merge'), continueMode: 'stack' })).rejects.toThrow(/folded its earlier rounds with 'merge'/);
    const stacked = LlamaModel.load(modelDir);
    stacked.loadAdapter(join(dir, 'r1', 'adapter'));
    stacked.stackLora();
    expect(() => stacked.save(join(dir, 'nope'))).toThrow(/1 stacked adapter/);
    expect(() => LlamaModel.load(modelDir).stackLora()).toThrow(/no adapters to stack/);
  }, 120_000);
});

const jfaCli = (...args: string[]) => spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', cwd: dir, timeout: 390_000 });

describe('the jfa command', () => {
  it('train --continue-from RUN --stack trains round 2 on round 1\'s base and records the chain; eval serves the chain', async () => {
    const data = join(dir, 'cli-data');
    writeSuite(data, { ...suite, newTrain: round2.newTrain, flashbacks: round1.flashbacks });
    const out = join(dir, 'cli-r2');
    const r = jfaCli('train', '--continue-from', join(dir, 'r1'), '--stack', '--data', join(data, 'new-train.jsonl'), '--flashbacks', join(data, 'flashbacks.jsonl'), '--method', 'flashback', '--out', out, '--micro-batch', '2', '--accumulation', '2', '--max-tokens', '160', '--r', '4', '--flashback-budget', '8', '--json');
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(readFileSync(join(out, 'continual.json'), 'utf8'))).toMatchObject({ base: modelDir, mode: 'stack' });
    expect(readJsonl(join(out, 'flashbacks.jsonl'), 'flashback')).toHaveLength(8);
    // jfa eval --adapter of a continued run serves it on the rounds beneath: the same scores as the rebuilt model.
    const e = jfaCli('eval', '--model', modelDir, '--adapter', join(out, 'adapter'), '--data', join(data, 'new-train.jsonl'), '--metric', 'rougeL', '--max-new-tokens', '6');
    expect(e.status, e.stderr).toBe(0);
    expect(e.stderr).toContain('served on the 1 earlier round recorded');
    const rebuilt = LlamaModel.load(modelDir);
    loadRounds(rebuilt, readRun(out), 'stack');
    const want = await evaluateNew(rebuilt, tokenizer(), round2.newTrain, { maxNewTokens: 6 });
    expect(e.stdout.trim()).toBe(`rougeL ${want.rougeL.toFixed(4)} on ${round2.newTrain.length} records`);
    const plain = LlamaModel.load(modelDir);
    plain.loadAdapter(join(out, 'adapter'));
    const without = await evaluateNew(plain, tokenizer(), round2.newTrain, { maxNewTokens: 6 });
    expect(without.predictions).not.toEqual(want.predictions);
    const both = jfaCli('train', '--continue-from', join(dir, 'r1'), '--stack', '--merge', '--data', join(data, 'new-train.jsonl'), '--method', 'sft', '--out', join(dir, 'cli-bad'));
    expect(both.status).toBe(1);
    expect(both.stderr).toContain('--stack and --merge exclude each other');
    const alone = jfaCli('train', '--model', modelDir, '--stack', '--data', join(data, 'new-train.jsonl'), '--method', 'sft', '--out', join(dir, 'cli-bad'));
    expect(alone.status).toBe(1);
    expect(alone.stderr).toContain('--stack applies only with --continue-from');
  }, 300_000);

  it('demo --rounds 3 at tiny size prints the matrix, BWT and forgetting, and writes them into results.json and report.html', () => {
    const out = join(dir, 'demo');
    const config = join(dir, 'rounds.yaml');
    writeFileSync(
      config,
      [
        'methods: [sft, flashback]',
        'base: { pretrain: true, hiddenSize: 32, layers: 1, heads: 2, merges: 50, oldTrainPerSuite: 16, steps: 12, phases: [{ steps: 2, mix: { copy: 1 } }, { steps: 4, mix: { inContext: 1, named: { lookup-one: 1 } } }, { steps: 0, mix: { old: 0.5, skills: 0.2, inContext: 0.3 } }], microBatch: 8, evalPerSuite: 0, probes: 0 }',
        'train: { records: 60, microBatch: 4, accumulation: 2, flashbacksPerSuite: 2 }',
        'eval: { oldPerSuite: 2, newInstancesPerTask: 1, seenTasks: 0, maxNewTokens: 3 }',
      ].join('\n'),
    );
    const r = jfaCli('demo', '--config', config, '--out', out, '--rounds', '3');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^after\s+round 1\s+round 2\s+round 3\s+old avg$/m);
    expect(r.stdout).toMatch(/^BWT -?\d+\.\d  forgetting -?\d+\.\d  old-suite forgetting -?\d+\.\d$/m);
    const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    const rounds = results.rounds;
    expect(rounds).toMatchObject({ count: 3, mode: 'merge', flashbackBudget: 10 });
    expect(rounds.split.map((s: { round: number }) => s.round)).toEqual([1, 2, 3]);
    expect(rounds.split.reduce((a: number, s: { trainRecords: number }) => a + s.trainRecords, 0)).toBe(60);
    expect(rounds.methods.map((m: { method: string }) => m.method)).toEqual(['sft', 'flashback']);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    for (const m of rounds.methods) {
      expect(m.matrix).toHaveLength(3);
      expect(m.matrix[0][1]).toBeNull();
      expect(m.matrix[2].every((v: number | null) => typeof v === 'number')).toBe(true);
      const metrics = continualMetrics(m.matrix);
      expect(m.bwt).toBeCloseTo(metrics.bwt, 12);
      expect(m.forgetting).toBeCloseTo(metrics.forgetting, 12);
      expect(m.oldForgetting).toBeCloseTo(columnForgetting([rounds.base.old, ...m.old]), 12);
      // the heat map holds every number of the matrix, readable in the DOM
      const table = html.match(new RegExp(`<table class="rounds-matrix" data-method="${m.method}">(.*?)</table>`))![1]!;
      const cells = [...table.matchAll(/<td class="heat"[^>]*data-value="([^"]+)"[^>]*>([^<]+)<\/td>/g)].map((c) => [Number(c[1]), c[2]]);
      const want = [...rounds.base.tasks, rounds.base.old, ...m.matrix.flatMap((row: Array<number | null>, i: number) => [...row.filter((v) => v !== null), m.old[i]])];
      expect(cells.map((c) => c[0])).toEqual(want);
      expect(cells.map((c) => c[1])).toEqual(want.map((v: number) => (100 * v).toFixed(1)));
    }
    expect(existsSync(join(out, 'rounds', 'flashback', 'round-3', 'continual.json'))).toBe(true);
    expect(results.methods.map((m: { method: string }) => m.method)).toEqual(['base', 'sft', 'flashback']);
  }, 400_000);
});
