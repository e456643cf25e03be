// The trainer's pieces: examples (targets masked to the output), latent-task retrieval (top-k
// keys of the sample's group, weights sim / sum) and the training step (per-micro-batch gradients,
// PCGrad, clipping, AdamW), checked against the same computation spelled out by hand.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { generateSuite } from '../lib/data/suite.js';
import { promptBatch, sftBatch } from '../lib/jfa/examples.js';
import { LatentTasks } from '../lib/jfa/latent.js';
import { type MicroBatch, trainStep } from '../lib/jfa/step.js';
import { keepReference, referenceKeeping } from '../lib/jfa/trainer.js';
import { flashbackDivergence, pcgrad, tokenCrossEntropy } from '../lib/kernels.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { AdamW, clipGradNorm } from '../lib/optim.js';
import { type Tensor, tensor } from '../lib/tensor.js';
import { expectClose } from './reference.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-step-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'base');
const suite = generateSuite({ seed: 3, oldTrainPerSuite: 4, oldEvalPerSuite: 2, instancesPerTask: 1 });
let tokenizer: Tokenizer;

beforeAll(() => {
  createModel(modelDir, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 1 });
  tokenizer = Tokenizer.fromDir(modelDir);
});

const values = (t: Tensor) => Array.from(t.toTypedArray() as Float32Array);

/** A model with adapters and a latent pool on layer 1, identical for identical seeds. */
function setup() {
  const model = LlamaModel.load(modelDir);
  model.addLora({ r: 4, loraAlpha: 8, seed: 5 });
  const latent = new LatentTasks(32, 32, 32, { groups: 2, perGroup: 3, k: 2, rank: 2, seed: 7 });
  model.setLatentPool(1, latent.A, latent.B);
  const params = [...Object.values(model.loraParameters()), latent.A, latent.B];
  return { model, latent, params, optimizer: new AdamW(params, { lr: 0.01 }) };
}

function microBatches(latent: LatentTasks): MicroBatch[] {
  const news = suite.newTrain.slice(0, 3);
  const flash = suite.flashbacks.slice(0, 3);
  const sft = sftBatch(tokenizer, news, 160);
  const fb = promptBatch(tokenizer, flash, 160);
  const emb = Float32Array.from({ length: 6 * 32 }, (_, i) => Math.sin(i * 0.37));
  latent.fit(emb, 1);
  const r = latent.retrieve(emb);
  const slice = (t: Tensor, from: number) => tensor((t.toTypedArray() as never as Float32Array).slice(from * 2, from * 2 + 6) as never, [3, 2]);
  return [
    { kind: 'new', ids: sft.ids, attentionMask: sft.attentionMask, targets: sft.targets, latent: { indices: slice(r.indices, 0), weights: slice(r.weights, 0) } },
    { kind: 'flashback', ids: fb.ids, attentionMask: fb.attentionMask, latent: { indices: slice(r.indices, 3), weights: slice(r.weights, 3) } },
  ];
}

describe('examples', () => {
  it('targets are the next output token, -100 over the prompt and padding', () => {
    const records = suite.newTrain.slice(0, 2);
    const b = sftBatch(tokenizer, records, 1000);
    const [rows, width] = b.ids.shape as [number, number];
    const ids = Array.from(b.ids.toTypedArray() as BigInt64Array, Number);
    const targets = Array.from(b.targets.toTypedArray() as BigInt64Array, Number);
    for (let r = 0; r < rows; r++) {
      const prompt = tokenizer.encode(`${records[r]!.instruction}\n${records[r]!.input}\n`).length;
      const output = tokenizer.encode(records[r]!.output, { addSpecialTokens: false }).length;
      const row = targets.slice(r * width, (r + 1) * width);
      expect(row.slice(0, prompt - 1).every((t) => t === -100)).toBe(true);
      for (let i = prompt - 1; i < prompt + output; i++) expect(row[i]).toBe(ids[r * width + i + 1]);
      expect(row[prompt + output - 1]).toBe(tokenizer.eosTokenId); // the last output token predicts EOS
      expect(row.slice(prompt + output).every((t) => t === -100)).toBe(true);
    }
    expect(b.tokens).toBe(records.reduce((s, r) => s + tokenizer.encode(r.output, { addSpecialTokens: false }).length + 1, 0));
  });

  it('a long example loses the start of its prompt, never its output', () => {
    const r = suite.newTrain[0]!;
    const output = tokenizer.encode(r.output, { addSpecialTokens: false });
    const b = sftBatch(tokenizer, [r], output.length + 11);
    const ids = Array.from(b.ids.toTypedArray() as BigInt64Array, Number);
    expect(ids).toHaveLength(output.length + 11);
    expect(ids[0]).toBe(tokenizer.bosTokenId);
    expect(ids.slice(10, 10 + output.length)).toEqual(output);
    expect(b.tokens).toBe(output.length + 1);
  });
});

describe('latent tasks', () => {
  it('retrieves the top-k keys of the sample\'s group by cosine, weighted by similarity / sum', () => {
    const latent = new LatentTasks(8, 16, 16, { groups: 3, perGroup: 4, k: 2, rank: 2, seed: 2 });
    const keys = latent.keys;
    // keys within a group are orthonormal (dimension 8 >= 4 keys)
    for (let g = 0; g < 3; g++)
      for (let a = 0; a < 4; a++)
        for (let b = 0; b < 4; b++) {
          let dot = 0;
          for (let j = 0; j < 8; j++) dot += keys[(g * 4 + a) * 8 + j]! * keys[(g * 4 + b) * 8 + j]!;
          expect(dot).toBeCloseTo(a === b ? 1 : 0, 5);
        }
    const emb = Float32Array.from({ length: 40 * 8 }, (_, i) => Math.cos(i * 1.7) + (i % 8 === Math.floor(i / 80) ? 3 : 0));
    latent.fit(emb, 3);
    const r = latent.retrieve(emb);
    const idx = Array.from(r.indices.toTypedArray() as BigInt64Array, Number);
    const w = values(r.weights);
    for (let i = 0; i < 40; i++) {
      const [a, b] = [idx[2 * i]!, idx[2 * i + 1]!];
      const g = Math.floor(a / 4);
      expect(Math.floor(b / 4)).toBe(g);
      const e = emb.subarray(i * 8, (i + 1) * 8);
      const norm = Math.hypot(...e);
      const sims = [0, 1, 2, 3].map((q) => e.reduce((s, v, j) => s + (v / norm) * keys[(g * 4 + q) * 8 + j]!, 0));
      const order = [0, 1, 2, 3].sort((x, y) => sims[y]! - sims[x]!);
      expect([a - g * 4, b - g * 4]).toEqual(order.slice(0, 2));
      const s = [sims[order[0]!]!, sims[order[1]!]!].map((v) => Math.max(v, 1e-6));
      expect(w[2 * i]).toBeCloseTo(s[0]! / (s[0]! + s[1]!), 5);
    }
    latent.dispose();
  });
});

describe('latent task weights', () => {
  it('scale multiplies every retrieved weight; a non-positive scale is refused', () => {
    const emb = Float32Array.from({ length: 20 * 8 }, (_, i) => Math.sin(i * 0.91));
    const [one, half] = [1, 0.5].map((scale) => {
      const l = new LatentTasks(8, 16, 16, { groups: 2, perGroup: 3, k: 2, rank: 2, seed: 4, scale });
      l.fit(emb, 1);
      const r = l.retrieve(emb);
      const out = { idx: Array.from(r.indices.toTypedArray() as BigInt64Array), w: values(r.weights) };
      l.dispose();
      return out;
    }) as [{ idx: bigint[]; w: number[] }, { idx: bigint[]; w: number[] }];
    expect(half.idx).toEqual(one.idx);
    one.w.forEach((w, i) => expect(half.w[i]).toBeCloseTo(w / 2, 6));
    expect(() => new LatentTasks(8, 16, 16, { scale: 0 })).toThrow(/scale must be positive/);
  });
});

describe('training step', () => {
  it('equals per-micro-batch gradients, PCGrad, clipping and AdamW done by hand', async () => {
    // A few steps of SFT first, so that the model departs from the reference and the divergence has a gradient.
    const a = setup();
    const b = setup();
    const mbA = microBatches(a.latent);
    const mbB = microBatches(b.latent);
    for (let i = 0; i < 3; i++) {
      await trainStep(a.model, a.optimizer, [mbA[0]!], { method: 'sft' });
      await trainStep(b.model, b.optimizer, [mbB[0]!], { method: 'sft' });
    }
    const result = await trainStep(a.model, a.optimizer, mbA, { method: 'jfa', alpha: 2, pcgrad: true, seed: 9, maxGradNorm: 0.5 });
    expect(result.divergence).toBeGreaterThan(0);

    // by hand on b
    const grads: Tensor[][] = [];
    const cur = b.model.logits(mbB[0]!.ids, { attentionMask: mbB[0]!.attentionMask, latent: mbB[0]!.latent });
    tokenCrossEntropy(cur, mbB[0]!.targets!).backward();
    grads.push(b.params.map((p) => p.grad!));
    b.params.forEach((p) => p.zeroGrad());
    const fbCur = b.model.logits(mbB[1]!.ids, { attentionMask: mbB[1]!.attentionMask, latent: mbB[1]!.latent });
    const fbRef = b.model.logits(mbB[1]!.ids, { attentionMask: mbB[1]!.attentionMask, adapters: false });
    const div = flashbackDivergence(fbCur, fbRef, mbB[1]!.attentionMask);
    expect((div.toTypedArray() as Float32Array)[0]).toBeCloseTo(result.divergence, 6);
    div.backward(tensor([2], []));
    grads.push(b.params.map((p) => p.grad!));
    b.params.forEach((p) => p.zeroGrad());
    const combined = pcgrad(grads, { seed: 9 });
    expect(combined.conflicts).toBe(result.conflicts);
    b.params.forEach((p, i) => p.setGrad(combined.grads[i]));
    expect(clipGradNorm(b.params, 0.5)).toBeCloseTo(result.gradNorm, 5);
    b.optimizer.step();
    a.params.forEach((p, i) => expectClose(p, { shape: p.shape, data: b.params[i]!.toTypedArray() as Float32Array }, 1e-6, `param ${i}`));
  });

  it.each(['hidden', 'logits'] as const)('a kept reference (%s) gives the same step as recomputing the reference', async (kind) => {
    const [a, b] = [setup(), setup()];
    const [mbA, mbB] = [microBatches(a.latent), microBatches(b.latent)];
    for (let i = 0; i < 2; i++) {
      await trainStep(a.model, a.optimizer, [mbA[0]!], { method: 'sft' });
      await trainStep(b.model, b.optimizer, [mbB[0]!], { method: 'sft' });
    }
    // kept before the adapters moved further: the reference does not depend on them
    const kept = keepReference(b.model, kind, mbB[1]!.ids, mbB[1]!.attentionMask);
    await trainStep(b.model, b.optimizer, [mbB[0]!], { method: 'sft' });
    await trainStep(a.model, a.optimizer, [mbA[0]!], { method: 'sft' });
    const ra = await trainStep(a.model, a.optimizer, mbA, { method: 'jfa', pcgrad: true, seed: 3 });
    const flashback = { ...mbB[1]!, ...(kind === 'logits' ? { referenceLogits: kept } : { referenceHidden: kept }) };
    const rb = await trainStep(b.model, b.optimizer, [mbB[0]!, flashback], { method: 'jfa', pcgrad: true, seed: 3 });
    expect(rb).toEqual(ra);
    expect(ra.divergence).toBeGreaterThan(0);
    a.params.forEach((p, i) => expect(values(p)).toEqual(values(b.params[i]!)));
    kept.dispose();
    // the trainer's choice: logits while they fit in 1 GiB, then hidden states, then nothing
    const { vocabSize, hiddenSize } = a.model.config;
    expect(referenceKeeping(a.model, 1000)).toBe('logits');
    expect(referenceKeeping(a.model, Math.floor(2 ** 30 / (4 * vocabSize)) + 1)).toBe(hiddenSize < vocabSize ? 'hidden' : undefined);
    expect(referenceKeeping(a.model, Math.floor(2 ** 30 / (4 * Math.min(vocabSize, hiddenSize))) + 1)).toBeUndefined();
  });

  it('the latent pool trains, and the divergence holds the model closer to its reference than SFT alone', async () => {
    const runs: { method: string; poolMoved: boolean; div: number; sft: number }[] = [];
    for (const method of ['sft', 'jfa'] as const) {
      const s = setup();
      const mb = microBatches(s.latent);
      const before = values(s.latent.B);
      let last = { sft: 0, divergence: 0 };
      for (let i = 0; i < 12; i++) last = await trainStep(s.model, s.optimizer, mb, { method, alpha: 5, pcgrad: true, seed: i });
      // measure the divergence on the flashbacks after training, for both methods alike
      const cur = s.model.logits(mb[1]!.ids, { attentionMask: mb[1]!.attentionMask });
      const ref = s.model.logits(mb[1]!.ids, { attentionMask: mb[1]!.attentionMask, adapters: false });
      const div = (flashbackDivergence(cur, ref, mb[1]!.attentionMask).toTypedArray() as Float32Array)[0]!;
      runs.push({ method, poolMoved: values(s.latent.B).some((v, i) => v !== before[i]), div, sft: last.sft });
    }
    const [sft, jfa] = runs as [(typeof runs)[0], (typeof runs)[0]];
    expect(jfa.poolMoved).toBe(true); // latent tasks are trained (the released code's were inert)
    expect(sft.poolMoved).toBe(false); // SFT does not use them
    expect(jfa.div).toBeLessThan(sft.div);
    console.log(`after 12 steps: divergence on flashbacks sft ${sft.div.toFixed(4)} vs jfa ${jfa.div.toFixed(4)}; sft loss ${sft.sft.toFixed(3)} vs ${jfa.sft.toFixed(3)}`);
  });
});
