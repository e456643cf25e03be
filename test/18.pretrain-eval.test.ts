// Pretraining trains every weight and freezes them after; evaluation by generation scores with
// the benchmark's metrics.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { accuracy, newTaskScores } from '../lib/data/metrics.js';
import { generateSuite } from '../lib/data/suite.js';
import { evaluateNew, evaluateOld } from '../lib/jfa/evaluate.js';
import { epochOrder, pretrain } from '../lib/jfa/pretrain.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { loadSafetensors } from '../lib/model/safetensors.js';
import { Tokenizer } from '../lib/model/tokenizer.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-pretrain-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('pretraining and evaluation', () => {
  it("createModel's initStd sets the spread of the random weights (0.02 by default); a bad one is refused", () => {
    const std = (initStd?: number) => {
      const d = join(dir, `init-${initStd ?? 'default'}`);
      createModel(d, { hiddenSize: 64, intermediateSize: 128, numLayers: 1, numHeads: 2, seed: 3, ...(initStd === undefined ? {} : { initStd }) });
      const w = loadSafetensors(join(d, 'model.safetensors')).tensors['model.layers.0.self_attn.q_proj.weight']!.toTypedArray() as Float32Array;
      const mean = w.reduce((a, x) => a + x, 0) / w.length;
      return Math.sqrt(w.reduce((a, x) => a + (x - mean) ** 2, 0) / w.length);
    };
    // 4,096 draws: the sample spread is within 5% of the asked one
    expect(Math.abs(std() / 0.02 - 1)).toBeLessThan(0.05);
    expect(Math.abs(std(0.06) / 0.06 - 1)).toBeLessThan(0.05);
    for (const bad of [0, -0.1, Number.NaN]) expect(() => createModel(join(dir, 'bad'), { hiddenSize: 32, numHeads: 2, initStd: bad })).toThrow(`createModel: initStd must be a finite number > 0, got ${bad}`);
  });

  it('pretraining lowers the loss on its data, then freezes the weights; evaluation scores generations', async () => {
    createModel(dir, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 2 });
    const tok = Tokenizer.fromDir(dir);
    const suite = generateSuite({ seed: 2, oldTrainPerSuite: 2, oldEvalPerSuite: 2, instancesPerTask: 1 });
    const records = Object.values(suite.old).flatMap((s) => s.train).slice(0, 6);
    const model = LlamaModel.load(dir);
    const losses: number[] = [];
    const r = await pretrain(model, tok, records, { epochs: 20, microBatch: 6, lr: 1e-2, maxTokens: 256, onStep: (p) => losses.push(p.sft) });
    expect(r.steps).toBe(20);
    expect(losses.at(-1)!).toBeLessThan(losses[0]! * 0.6);
    expect(Object.values(model.weights()).every((w) => !w.requiresGrad)).toBe(true);
    // Each epoch is a seeded shuffle: every record once, another order the next epoch.
    const order = epochOrder(203, 1, 0);
    expect([...order].sort((a, b) => a - b)).toEqual(Array.from({ length: 203 }, (_, i) => i));
    expect(epochOrder(203, 1, 0)).toEqual(order);
    expect(epochOrder(203, 1, 1)).not.toEqual(order);
    expect(epochOrder(203, 2, 0)).not.toEqual(order);

    const old = Object.values(suite.old).flatMap((s) => s.eval).slice(0, 4);
    const e = await evaluateOld(model, tok, old, { batch: 3, maxNewTokens: 8 });
    expect(e.predictions).toHaveLength(4);
    expect(e.accuracy).toBe(accuracy(old, e.predictions));
    const fresh = suite.newEval.slice(0, 3);
    const n = await evaluateNew(model, tok, fresh, { maxNewTokens: 8 });
    expect(n).toMatchObject(newTaskScores(fresh.map((x) => x.output), n.predictions));
  });
});
