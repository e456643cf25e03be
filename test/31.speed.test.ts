// What the speed work must not change: activation checkpointing gives the same training, bit for
// bit; generation that drops finished rows from its batch gives every row the tokens it gets alone;
// evaluation that batches prompts by length returns the same predictions in the records' order.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { evaluateNew } from '../lib/jfa/evaluate.js';
import { train } from '../lib/jfa/trainer.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { scope, tensor, type Tensor } from '../lib/tensor.js';
import { expectError, tinyJfaRun } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-speed-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'base');
const gqaDir = join(dir, 'gqa');
const { suite, options } = tinyJfaRun();

beforeAll(() => {
  createModel(modelDir, { hiddenSize: 32, intermediateSize: 64, numLayers: 3, numHeads: 2, seed: 1 });
  createModel(gqaDir, { hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKeyValueHeads: 2, seed: 2 });
});

const bytes = (run: string, file: string) => readFileSync(join(dir, run, 'adapter', file));
const ids = (rows: number[][]) => tensor(BigInt64Array.from(rows.flat(), BigInt), [rows.length, rows[0]!.length]);
const values = (t: Tensor) => Array.from(t.toTypedArray() as BigInt64Array, Number);

describe('activation checkpointing', () => {
  it('trains jfa (latent pool, PCGrad, flashbacks) to bit-identical adapter and pool files', async () => {
    const data = { newTrain: suite.newTrain.slice(0, 16), flashbacks: suite.flashbacks.slice(0, 8) };
    for (const [run, on] of [['plain', false], ['checkpointed', true]] as const) {
      const model = LlamaModel.load(modelDir);
      await train(model, Tokenizer.fromDir(modelDir), data, { ...options, outDir: join(dir, run), activationCheckpointing: on });
      expect(model.activationCheckpointing).toBe(false); // the run's setting does not outlive it
      model.dispose();
    }
    for (const f of ['adapter_model.safetensors', 'latent_pool.safetensors']) expect(bytes('checkpointed', f).equals(bytes('plain', f)), f).toBe(true);
  });

  it('gives every base weight the same gradient when the base trains (grouped-query attention, padding)', () => {
    const grads = (on: boolean) =>
      scope(() => {
        const model = LlamaModel.load(gqaDir);
        model.setBaseTrainable(true);
        model.activationCheckpointing = on;
        const mask = tensor(new Uint8Array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]), [2, 6]);
        model.logits(ids([[5, 9, 3, 7, 2, 8], [4, 4, 6, 1, 0, 0]]), { attentionMask: mask }).sum().backward();
        const out = Object.fromEntries(Object.entries(model.weights()).map(([k, w]) => [k, Array.from(w.grad!.toTypedArray() as Float32Array)]));
        model.dispose();
        return out;
      });
    const plain = grads(false);
    const checkpointed = grads(true);
    expect(Object.keys(checkpointed).sort()).toEqual(Object.keys(plain).sort());
    for (const [k, g] of Object.entries(plain)) expect(checkpointed[k], k).toEqual(g);
    expect(Object.values(plain).some((g) => g.some((x) => x !== 0))).toBe(true);
  });

  it('refuses a non-boolean', async () => {
    const model = LlamaModel.load(modelDir);
    expectError(() => ((model as unknown as { activationCheckpointing: unknown }).activationCheckpointing = 1), TypeError, 'activationCheckpointing must be a boolean, got');
    const data = { newTrain: suite.newTrain.slice(0, 4), flashbacks: suite.flashbacks.slice(0, 2) };
    await expect(train(model, Tokenizer.fromDir(modelDir), data, { ...options, activationCheckpointing: 'yes' as unknown as boolean })).rejects.toThrow('train: activationCheckpointing must be a boolean, got "yes"');
    model.dispose();
  });
});

describe('generation drops finished rows from its batch', () => {
  it('each row gets the tokens it gets alone; rows that ended are padded', async () => {
    const model = LlamaModel.load(gqaDir);
    const prompts = [[3, 8, 2, 9], [0, 7, 7, 1], [0, 0, 4, 6], [5, 5, 5, 5], [0, 2, 9, 3]];
    const mask = tensor(Uint8Array.from(prompts.flat(), (_, i) => ((i % 4) >= [0, 1, 2, 0, 1][Math.floor(i / 4)]! ? 1 : 0)), [5, 4]);
    const greedy = await model.generate(ids(prompts), { attentionMask: mask, maxNewTokens: 10 });
    const free = values(greedy);
    // An end-of-sequence token that ends rows at different steps: the second token of row 0.
    const eos = free[1]!;
    const stopped = await model.generate(ids(prompts), { attentionMask: mask, maxNewTokens: 10, eosTokenIds: [eos], padTokenId: 0 });
    const width = stopped.shape[1]!;
    const got = values(stopped);
    let ended = 0;
    for (let r = 0; r < prompts.length; r++) {
      const row = free.slice(r * 10, r * 10 + width);
      const end = row.indexOf(eos);
      const want = end < 0 ? row : [...row.slice(0, end + 1), ...Array(width - end - 1).fill(0)];
      expect(got.slice(r * width, (r + 1) * width), `row ${r}`).toEqual(want);
      if (end >= 0 && end < width - 1) ended++;
    }
    expect(ended).toBeGreaterThan(0);
    // each row alone, greedy, with the same stop: the same tokens
    for (let r = 0; r < prompts.length; r++) {
      const real = prompts[r]!.filter((_, j) => j >= [0, 1, 2, 0, 1][r]!);
      const alone = values(await model.generate(ids([real]), { maxNewTokens: 10, eosTokenIds: [eos], padTokenId: 0 }));
      expect(got.slice(r * width, r * width + alone.length), `row ${r} alone`).toEqual(alone);
    }
    model.dispose();
  });
});

describe('evaluation batches prompts by length', () => {
  it('returns the same predictions, in the records order, whatever the batch', async () => {
    const model = LlamaModel.load(modelDir);
    const tokenizer = Tokenizer.fromDir(modelDir);
    const records = suite.newEval.slice(0, 9);
    const one = await evaluateNew(model, tokenizer, records, { batch: 1, maxNewTokens: 6 });
    const four = await evaluateNew(model, tokenizer, records, { batch: 4, maxNewTokens: 6 });
    expect(four.predictions).toEqual(one.predictions);
    await expect(evaluateNew(model, tokenizer, records, { batch: 0 })).rejects.toThrow('evaluate: batch must be a positive integer, got 0');
    model.dispose();
  });
});
