// From the trainer to where models run: `jfa merge` folds an adapter (a continued run's with all its
// rounds) into its base, and transformers, loading the merged folder as a plain model, continues
// prompts with the same greedy tokens as our model with the adapter on. What cannot be merged (a
// 'retrieve' latent pool, an adapter of another base) or written (an existing or read-only output)
// is refused with one line and nothing left on disk.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { isJfaError } from '../lib/errors.js';
import { loadAdapterWithRounds } from '../lib/jfa/continual.js';
import { mergeAdapter } from '../lib/jfa/merge.js';
import { train, type TrainOptions } from '../lib/jfa/trainer.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { loadSafetensors } from '../lib/model/safetensors.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { jfa, root, tinyJfaRun, venvPython } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-export-'));
const mounts: string[] = [];
afterAll(() => {
  for (const m of mounts) spawnSync('umount', [m]);
  rmSync(dir, { recursive: true, force: true });
});

export const base = join(root, 'models', 'jfa-base');
const { suite, options: tiny } = tinyJfaRun();
const data = { newTrain: suite.newTrain.slice(0, 24), flashbacks: suite.flashbacks.slice(0, 8) };
// 6 steps at a high rate: enough to move greedy continuations away from the base's.
const options: TrainOptions = { ...tiny, lr: 2e-2, maxTokens: 128 };
const runs = { drop: join(dir, 'drop'), retrieve: join(dir, 'retrieve'), round2: join(dir, 'round2'), sft: join(dir, 'sft'), other: join(dir, 'other') };

async function trainRun(out: string, o: TrainOptions, modelDir = base): Promise<void> {
  using model = await LlamaModel.loadAsync(modelDir);
  (await train(model, Tokenizer.fromDir(modelDir), data, { ...o, outDir: out })).pool?.dispose();
}

beforeAll(async () => {
  await trainRun(runs.drop, { ...options, latentMode: 'drop' });
  await trainRun(runs.retrieve, { ...options, latentMode: 'retrieve' });
  await trainRun(runs.sft, { ...options, method: 'sft' });
  await trainRun(runs.round2, { ...options, latentMode: 'drop', continueFrom: runs.drop, seed: 9 });
  const small = join(dir, 'small-base');
  createModel(small, { hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, seed: 1 });
  await trainRun(runs.other, { ...options, method: 'sft' }, small);
});

const prompts = ['Add the numbers.\n12 7\n', 'Reverse the word.\nlantern\n', 'The capital of France is', 'Count the letters in "banana".\n'];
const NEW_TOKENS = 24;

/** Our greedy continuation of `prompts` on the base with `adapter` loaded (rounds beneath), adapters on. */
async function ours(adapter: string | undefined, modelDir = base): Promise<number[][]> {
  using model = await LlamaModel.loadAsync(modelDir);
  if (adapter) loadAdapterWithRounds(model, adapter);
  const tokenizer = Tokenizer.fromDir(modelDir);
  const { ids, attentionMask } = tokenizer.batch(prompts, { padding: 'left' });
  const out = await model.generate(ids, { attentionMask, maxNewTokens: NEW_TOKENS });
  const flat = Array.from(out.toTypedArray() as BigInt64Array, Number);
  return prompts.map((_, i) => flat.slice(i * NEW_TOKENS, (i + 1) * NEW_TOKENS));
}

/** transformers' greedy continuation of `prompts` with the folder loaded as a plain model (AutoTokenizer + AutoModelForCausalLM). */
function transformers(modelDir: string): number[][] {
  const code = `
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1]); tok.padding_side = 'left'
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
enc = tok(json.loads(sys.argv[2]), return_tensors='pt', padding=True)
with torch.no_grad():
    out = model.generate(**enc, max_new_tokens=int(sys.argv[3]), do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=None)
print(json.dumps(out[:, enc.input_ids.shape[1]:].tolist()))`;
  const r = spawnSync(venvPython, ['-c', code, modelDir, JSON.stringify(prompts), String(NEW_TOKENS)], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`transformers failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as number[][];
}

/** Entries of `parent` that were not in `before`: what a refused command left behind. */
const leftovers = (parent: string, before: string[]) => readdirSync(parent).filter((n) => !before.includes(n));

describe('jfa merge: the adapter folded into its base, in Hugging Face layout', () => {
  it('a drop-mode jfa adapter: transformers loads the merged folder and continues with our greedy tokens', async () => {
    const out = join(dir, 'merged-drop');
    const r = await mergeAdapter({ model: base, adapter: join(runs.drop, 'adapter'), out });
    expect(r.adapters).toEqual([join(runs.drop, 'adapter')]);
    for (const f of ['model.safetensors', 'config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json']) expect(existsSync(join(out, f)), f).toBe(true);
    expect(existsSync(join(out, 'latent_pool.safetensors'))).toBe(false);
    const withAdapter = await ours(join(runs.drop, 'adapter'));
    expect(transformers(out)).toEqual(withAdapter);
    // The adapter matters: the base alone continues differently (else equality above proves nothing).
    expect(await ours(undefined)).not.toEqual(withAdapter);
  });

  it('a continued run folds every round, oldest first', async () => {
    const out = join(dir, 'merged-round2');
    const r = await mergeAdapter({ model: base, adapter: join(runs.round2, 'adapter'), out });
    expect(r.adapters).toHaveLength(2);
    const both = await ours(join(runs.round2, 'adapter'));
    expect(transformers(out)).toEqual(both);
    // Round 1 alone is another model: leaving it out would show.
    expect(await ours(join(runs.round2, 'rounds', '1', 'adapter'))).not.toEqual(both);
  });

  it("rsLoRA's scale (lora_alpha / sqrt(r)) when adapter_config.json says use_rslora", async () => {
    const adapter = join(dir, 'sft-rslora');
    cpSync(join(runs.sft, 'adapter'), adapter, { recursive: true });
    const config = JSON.parse(readFileSync(join(adapter, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(adapter, 'adapter_config.json'), JSON.stringify({ ...config, use_rslora: true }));
    const out = join(dir, 'merged-rslora');
    await mergeAdapter({ model: base, adapter, out });
    const rs = await ours(adapter);
    expect(transformers(out)).toEqual(rs);
    // r = 4: the rsLoRA scale is twice the plain one, and the weights show it.
    const plainOut = join(dir, 'merged-plain');
    await mergeAdapter({ model: base, adapter: join(runs.sft, 'adapter'), out: plainOut });
    const key = 'model.layers.0.self_attn.q_proj.weight';
    const [b, p, s] = [base, plainOut, out].map((d) => loadSafetensors(join(d, 'model.safetensors')).tensors[key]!.toTypedArray() as Float32Array);
    let ratio = 0;
    let n = 0;
    for (let i = 0; i < b!.length; i++) {
      const dp = p![i]! - b![i]!;
      if (Math.abs(dp) > 1e-4) {
        ratio += (s![i]! - b![i]!) / dp;
        n++;
      }
    }
    expect(n).toBeGreaterThan(100);
    expect(ratio / n).toBeCloseTo(2, 2);
  });
});

describe('jfa merge refuses, with one line and nothing left on disk', () => {
  it("an adapter trained with latent mode 'retrieve': why, and what to do instead", () => {
    const before = readdirSync(dir);
    const r = jfa('merge', '--model', base, '--adapter', join(runs.retrieve, 'adapter'), '--out', join(dir, 'merged-retrieve'));
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/'retrieve'.*cannot express.*--latent-mode drop.*jfa itself/);
    expect(leftovers(dir, before)).toEqual([]);
  });

  it('an adapter of another base (its shapes do not fit)', async () => {
    const before = readdirSync(dir);
    const e = await mergeAdapter({ model: base, adapter: join(runs.other, 'adapter'), out: join(dir, 'merged-other') }).catch((x: unknown) => x);
    expect(isJfaError(e, 'ERR_JFA_MODEL_FORMAT')).toBe(true);
    expect((e as Error).message).toMatch(/has shape .* this model needs/);
    expect(leftovers(dir, before)).toEqual([]);
  });

  it('an output folder that exists', async () => {
    const out = join(dir, 'exists');
    mkdirSync(out);
    const e = await mergeAdapter({ model: base, adapter: join(runs.sft, 'adapter'), out }).catch((x: unknown) => x);
    expect(isJfaError(e, 'ERR_JFA_OPTION')).toBe(true);
    expect((e as Error).message).toContain('exists');
    expect(readdirSync(out)).toEqual([]);
  });

  it('a read-only destination', () => {
    const ro = join(dir, 'readonly');
    mkdirSync(ro);
    // Root, whom file modes do not stop, gets a read-only tmpfs (as test/reliability does).
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', ro], { encoding: 'utf8' });
    if (m.status !== 0) throw new Error(`cannot mount a read-only tmpfs: ${m.stderr}`);
    mounts.push(ro);
    const r = jfa('merge', '--model', base, '--adapter', join(runs.sft, 'adapter'), '--out', join(ro, 'merged'));
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/cannot write .* \(EROFS\)/);
    expect(readdirSync(ro)).toEqual([]);
  });
});
