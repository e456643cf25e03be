// Latent tasks at inference: the pool saved beside the adapter, retrieval at inference that picks
// exactly the tasks training picked, generation with the retrieved increments (equal to scoring the
// growing sequence step by step with the same increments), `jfa eval` on the saved directory equal
// to evaluation in process, refused pool files, and the 'drop' mode's latent dropout.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { servingPool } from '../lib/cli/latent.js';
import { writeJsonl } from '../lib/data/jsonl.js';
import { evaluateNew } from '../lib/jfa/evaluate.js';
import { promptText } from '../lib/jfa/examples.js';
import { embedRecords } from '../lib/jfa/latent.js';
import { LATENT_POOL_FILE, LatentPool } from '../lib/jfa/pool.js';
import { train, type TrainOptions, type TrainResult } from '../lib/jfa/trainer.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { loadSafetensors, saveSafetensors } from '../lib/model/safetensors.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { randn, type Tensor, tensor } from '../lib/tensor.js';
import { root, tinyJfaRun } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-latent-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'base');
const { suite, options } = tinyJfaRun();
const data = { newTrain: suite.newTrain.slice(0, 24), flashbacks: suite.flashbacks.slice(0, 8) };
const evalRecords = suite.newEval.slice(0, 6);
const run = join(dir, 'retrieve');
const poolFile = join(run, 'adapter', LATENT_POOL_FILE);
let tokenizer: Tokenizer;
let trained: LlamaModel;
let result: TrainResult;
let stopped: { indices: Tensor; weights: Tensor; flashIndices: Tensor; flashWeights: Tensor };

const ints = (t: Tensor) => Array.from(t.toTypedArray() as BigInt64Array);
const floats = (t: Tensor) => Array.from(t.toTypedArray() as Float32Array);
const jfa = (...args: string[]) => spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', cwd: dir, timeout: 120_000 });

beforeAll(async () => {
  createModel(modelDir, { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 2, seed: 1 });
  tokenizer = Tokenizer.fromDir(modelDir);
  // Stopped after 2 steps: the checkpoint keeps what training retrieved for every record. Then
  // resumed to the end, which saves the adapter and its pool.
  await train(LlamaModel.load(modelDir), tokenizer, data, { ...options, outDir: run, pauseAfter: 2 });
  const saved = loadSafetensors(join(run, 'checkpoint', 'retrieval.safetensors')).tensors;
  stopped = { indices: saved.newIndices!, weights: saved.newWeights!, flashIndices: saved.flashIndices!, flashWeights: saved.flashWeights! };
  trained = LlamaModel.load(modelDir);
  result = await train(trained, tokenizer, data, { ...options, outDir: run, resume: true });
});

/** A fresh base model with the run's adapter and its pool loaded from disk. */
function loaded(): { model: LlamaModel; pool: LatentPool } {
  const model = LlamaModel.load(modelDir);
  model.loadAdapter(join(run, 'adapter'));
  return { model, pool: LatentPool.load(poolFile, model) };
}

describe('latent pool file', () => {
  it('is saved beside the adapter, self-described, and loads back to identical tensors', () => {
    expect(existsSync(poolFile)).toBe(true);
    const { metadata } = loadSafetensors(poolFile);
    expect(metadata.format).toBe('jfa-latent-pool');
    expect(metadata.version).toBe('1');
    expect(JSON.parse(metadata.pool!)).toMatchObject({
      groups: 2, perGroup: 3, k: 2, scale: 1, rank: 2, layers: [1], mode: 'retrieve', hiddenSize: 64, oProjIn: 64, oProjOut: 64,
      embedding: { dim: 64, maxTokens: 160 },
    });
    const { pool } = loaded();
    const t = result.pool!.tasks;
    expect(pool.tasks.B.shape).toEqual([6, 64, 2]);
    expect(floats(t.B).some((v) => v !== 0)).toBe(true); // the pool trained
    expect(floats(pool.tasks.A)).toEqual(floats(t.A));
    expect(floats(pool.tasks.B)).toEqual(floats(t.B));
    expect(Array.from(pool.tasks.keys)).toEqual(Array.from(t.keys));
    expect(Array.from(pool.tasks.centroids!)).toEqual(Array.from(t.centroids!));
    expect([pool.layer, pool.mode, pool.maxTokens, pool.tasks.k, pool.tasks.scale]).toEqual([1, 'retrieve', 160, 2, 1]);
  });

  it('retrieval at inference picks exactly the tasks and weights training picked, in any batch', () => {
    const { model, pool } = loaded();
    // A batch's shape changes float rounding in the forward pass: each prompt is embedded alone.
    const all = embedRecords(model, tokenizer, data.newTrain, 160);
    const dim = model.config.hiddenSize;
    data.newTrain.forEach((r, i) => expect(embedRecords(model, tokenizer, [r], 160), `record ${i}`).toEqual(all.subarray(i * dim, (i + 1) * dim)));
    // other batches than training's: reversed, in chunks of 5
    const records = [...data.newTrain].reverse();
    const indices: bigint[] = [];
    const weights: number[] = [];
    for (let i = 0; i < records.length; i += 5) {
      const r = pool.retrieve(model, tokenizer, records.slice(i, i + 5));
      indices.push(...ints(r.indices));
      weights.push(...floats(r.weights));
    }
    const k = 2;
    const back = (xs: Array<bigint | number>) => Array.from({ length: records.length }, (_, i) => xs.slice((records.length - 1 - i) * k, (records.length - i) * k)).flat();
    expect(back(indices)).toEqual(ints(stopped.indices));
    expect(back(weights)).toEqual(floats(stopped.weights));
    const f = pool.retrieve(model, tokenizer, data.flashbacks);
    expect(ints(f.indices)).toEqual(ints(stopped.flashIndices));
    expect(floats(f.weights)).toEqual(floats(stopped.flashWeights));
  });

  it('greedy generation with the increments equals step-by-step argmax of logits with them, and differs without them', async () => {
    const { model, pool } = loaded();
    // Larger increments than a few steps train, so that they change the continuations.
    pool.tasks.B.copyFrom(randn(pool.tasks.B.shape, { seed: 4 }));
    const records = [evalRecords[0]!, { task: 't', prompt: 'Short.' }, evalRecords[3]!];
    const texts = records.map(promptText);
    expect(new Set(texts.map((t) => tokenizer.encode(t).length)).size).toBe(3);
    const latent = pool.retrieve(model, tokenizer, records);
    const batch = tokenizer.batch(texts, { padding: 'left' });
    const eos = tokenizer.eosTokenId!;
    const n = 8;
    const generate = (withLatent: boolean) =>
      model.generate(batch.ids, { attentionMask: batch.attentionMask, maxNewTokens: n, eosTokenIds: [eos], latent: withLatent ? latent : undefined });
    const out = ints(await generate(true));
    const plain = ints(await generate(false));
    const width = out.length / records.length;
    texts.forEach((text, b) => {
      const ids = tokenizer.encode(text).map(BigInt);
      const one = { indices: tensor(BigInt64Array.from(ints(latent.indices).slice(b * 2, b * 2 + 2)), [1, 2]), weights: tensor(floats(latent.weights).slice(b * 2, b * 2 + 2), [1, 2]) };
      const expected: bigint[] = [];
      while (expected.length < n) {
        const logits = model.logits(tensor(BigInt64Array.from(ids), [1, ids.length]), { latent: one });
        const vocab = logits.shape[2]!;
        const last = floats(logits).slice((ids.length - 1) * vocab);
        const next = BigInt(last.indexOf(Math.max(...last)));
        expected.push(next);
        ids.push(next);
        if (next === BigInt(eos)) break;
      }
      expect(out.slice(b * width, b * width + expected.length), `prompt ${b}`).toEqual(expected);
    });
    expect(out).not.toEqual(plain);
  });

  it('evaluation in process (the trained model) equals the reloaded pool and `jfa eval` on the saved directory', async () => {
    const inProcess = await evaluateNew(trained, tokenizer, evalRecords, { latent: result.pool, maxNewTokens: 8, batch: 4 });
    const { model, pool } = loaded();
    const reloaded = await evaluateNew(model, tokenizer, evalRecords, { latent: pool, maxNewTokens: 8, batch: 3 });
    expect(reloaded.predictions).toEqual(inProcess.predictions);
    const file = join(dir, 'eval.jsonl');
    writeJsonl(file, evalRecords);
    const args = ['eval', '--model', modelDir, '--adapter', join(run, 'adapter'), '--data', file, '--metric', 'rougeL', '--max-new-tokens', '8', '--json'];
    const e = jfa(...args);
    expect(e.status, e.stderr).toBe(0);
    expect(e.stderr).toContain(`latent pool: used: ${poolFile}`);
    expect(JSON.parse(e.stdout)).toMatchObject({ rougeL: inProcess.rougeL, exactMatch: inProcess.exactMatch, latentPool: true });
    const off = jfa(...args, '--latent', 'off');
    expect(off.status, off.stderr).toBe(0);
    expect(off.stderr).toContain('latent pool: not used (--latent off)');
    expect(JSON.parse(off.stdout).latentPool).toBe(false);
    // bf16 base weights, the float32 adapter and pool as saved: it serves with the pool, and its
    // greedy outputs stay close to fp32's (bf16 rounding may flip a near tie).
    const bf16 = jfa(...args, '--dtype', 'bfloat16');
    expect(bf16.status, bf16.stderr).toBe(0);
    expect(bf16.stderr).toContain(`latent pool: used: ${poolFile}`);
    const scores = JSON.parse(bf16.stdout) as { rougeL: number; latentPool: boolean };
    expect(scores.latentPool).toBe(true);
    expect(Math.abs(scores.rougeL - inProcess.rougeL)).toBeLessThan(0.25);
    const bad = jfa(...args, '--dtype', 'float16');
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/dtype/);
  });
});

describe('refused pool files', () => {
  const broken = (name: string) => {
    const d = join(dir, name);
    rmSync(d, { recursive: true, force: true });
    spawnSync('cp', ['-r', join(run, 'adapter'), d]);
    return join(d, LATENT_POOL_FILE);
  };
  /** Rewrites the pool file with `edit` applied to its metadata and description. */
  const rewrite = (file: string, edit: (meta: Record<string, string>, pool: Record<string, unknown>) => void) => {
    const { tensors, metadata } = loadSafetensors(file);
    const pool = JSON.parse(metadata.pool!) as Record<string, unknown>;
    edit(metadata, pool);
    const copy = Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, tensor(t.toTypedArray(), t.shape)]));
    Object.values(tensors).forEach((t) => t.dispose());
    saveSafetensors(file, copy, { ...metadata, pool: JSON.stringify(pool) });
  };
  const refuses = (file: string, model: LlamaModel, ...parts: string[]) => {
    let thrown: unknown;
    try {
      LatentPool.load(file, model);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(Error);
    for (const p of [file, ...parts]) expect((thrown as Error).message).toContain(p);
  };

  it('truncated, wrong version, missing field, another model, missing: each an Error naming the file and the problem', () => {
    const model = LlamaModel.load(modelDir);
    const truncated = broken('truncated');
    const bytes = readFileSync(truncated);
    writeFileSync(truncated, bytes.subarray(0, bytes.length - 100));
    refuses(truncated, model);

    const version = broken('version');
    rewrite(version, (meta) => (meta.version = '2'));
    refuses(version, model, 'version "2" is not supported');

    const missing = broken('missing');
    rewrite(missing, (_, pool) => delete pool.k);
    refuses(missing, model, "field 'k'");

    const bigger = join(dir, 'bigger');
    createModel(bigger, { hiddenSize: 48, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 1 });
    refuses(poolFile, LlamaModel.load(bigger), 'hidden size 64', 'hidden size 48');

    const shallow = join(dir, 'shallow');
    createModel(shallow, { hiddenSize: 64, intermediateSize: 64, numLayers: 1, numHeads: 2, seed: 1 });
    refuses(poolFile, LlamaModel.load(shallow), 'layer 1', 'layers 0..0');

    refuses(join(dir, 'nowhere', LATENT_POOL_FILE), model);
  });

  it('`jfa eval` with a corrupt pool exits non-zero with one line naming the file', () => {
    const truncated = join(dir, 'truncated', LATENT_POOL_FILE);
    const file = join(dir, 'eval.jsonl');
    const e = jfa('eval', '--model', modelDir, '--adapter', join(dir, 'truncated'), '--data', file, '--metric', 'rougeL', '--max-new-tokens', '2');
    expect(e.status).not.toBe(0);
    expect(e.stderr.trim().split('\n')).toHaveLength(1);
    expect(e.stderr).toContain(`jfa: ${truncated}`);
  });
});

describe("'drop' mode", () => {
  it('latentDropout 1 trains the same adapter as jfa without latent tasks, leaves the pool untouched, and eval does not use it by default', async () => {
    const noLatent = join(dir, 'no-latent');
    const drop = join(dir, 'drop');
    await train(LlamaModel.load(modelDir), tokenizer, data, { ...options, latent: false, outDir: noLatent });
    const r = await train(LlamaModel.load(modelDir), tokenizer, data, { ...options, latentMode: 'drop', latentDropout: 1, outDir: drop });
    const adapter = (d: string) => readFileSync(join(d, 'adapter', 'adapter_model.safetensors'));
    expect(adapter(drop).equals(adapter(noLatent))).toBe(true);
    expect(existsSync(join(noLatent, 'adapter', LATENT_POOL_FILE))).toBe(false);
    expect(floats(r.pool!.tasks.B).every((v) => v === 0)).toBe(true);
    const model = LlamaModel.load(modelDir);
    model.loadAdapter(join(drop, 'adapter'));
    expect(LatentPool.load(join(drop, 'adapter', LATENT_POOL_FILE), model).mode).toBe('drop');
    expect(servingPool(model, join(drop, 'adapter'), 'auto')).toBeUndefined();
    expect(servingPool(model, join(drop, 'adapter'), 'on')?.mode).toBe('drop');
    // a run without a pool clears one an earlier run left in the same directory
    copyFileSync(join(drop, 'adapter', LATENT_POOL_FILE), join(noLatent, 'adapter', LATENT_POOL_FILE));
    await train(LlamaModel.load(modelDir), tokenizer, data, { ...options, latent: false, outDir: noLatent });
    expect(existsSync(join(noLatent, 'adapter', LATENT_POOL_FILE))).toBe(false);
  });

  it('with dropout 0.5 and a plain SFT term, a run stopped and resumed ends bit-identical to one run through', async () => {
    const o: TrainOptions = { ...options, latentMode: 'drop', latentDropout: 0.5, plainSftWeight: 0.3 };
    const [whole, parted] = [join(dir, 'drop-whole'), join(dir, 'drop-parted')];
    await train(LlamaModel.load(modelDir), tokenizer, data, { ...o, outDir: whole });
    await train(LlamaModel.load(modelDir), tokenizer, data, { ...o, outDir: parted, pauseAfter: 3 });
    await train(LlamaModel.load(modelDir), tokenizer, data, { ...o, outDir: parted, resume: true });
    for (const f of ['adapter_model.safetensors', LATENT_POOL_FILE])
      expect(readFileSync(join(parted, 'adapter', f)).equals(readFileSync(join(whole, 'adapter', f))), f).toBe(true);
    const resumed = { ...o, outDir: parted, resume: true, latentDropout: 0.25 };
    await train(LlamaModel.load(modelDir), tokenizer, data, { ...o, outDir: parted, pauseAfter: 3 });
    await expect(train(LlamaModel.load(modelDir), tokenizer, data, resumed)).rejects.toThrow('is from another run');
  });

  it('plainSftWeight adds a plain SFT loss where increments apply, and changes the adapter', async () => {
    const plain = join(dir, 'plain');
    const steps: number[] = [];
    await train(LlamaModel.load(modelDir), tokenizer, data, { ...options, plainSftWeight: 0.5, outDir: plain, onStep: (p) => steps.push(p.plainSft) });
    expect(steps.every((v) => v > 0)).toBe(true);
    const adapter = (d: string) => readFileSync(join(d, 'adapter', 'adapter_model.safetensors'));
    expect(adapter(plain).equals(adapter(run))).toBe(false);
  });

  it('refuses bad latent options with RangeErrors before training', async () => {
    const model = LlamaModel.load(modelDir);
    const bad: Array<[Partial<TrainOptions>, string]> = [
      [{ latentDropout: 1.5 }, 'latentDropout must be a probability in [0, 1], got 1.5'],
      [{ latentDropout: -0.1 }, 'latentDropout must be a probability in [0, 1], got -0.1'],
      [{ latentDropout: Number.NaN }, 'latentDropout must be a probability in [0, 1], got NaN'],
      [{ plainSftWeight: -1 }, 'plainSftWeight must be a finite number >= 0, got -1'],
      [{ latentMode: 'sometimes' as never }, 'latentMode must be retrieve or drop'],
      [{ method: 'sft', latentMode: 'drop' }, "latentMode applies only to method 'jfa' with latent tasks (method 'sft')"],
      [{ latent: false, latentDropout: 0.2, plainSftWeight: 1 }, "latentDropout, plainSftWeight apply only to method 'jfa' with latent tasks (method 'jfa', latent off)"],
    ];
    for (const [o, message] of bad) {
      const p = train(model, tokenizer, data, { ...options, ...o, outDir: join(dir, 'never') });
      await expect(p).rejects.toThrow(RangeError);
      await expect(p).rejects.toThrow(message);
    }
    expect(existsSync(join(dir, 'never'))).toBe(false);
    const cli = jfa('train', '--model', modelDir, '--data', join(dir, 'eval.jsonl'), '--method', 'jfa', '--out', join(dir, 'never'), '--latent-dropout', '2');
    expect(cli.status).not.toBe(0);
    expect(cli.stderr.trim()).toMatch(/^jfa: option 'latentDropout': /);
  });
});
