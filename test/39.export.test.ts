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
import { exportGguf } from '../lib/jfa/export.js';
import { encodeTensor, fromHalfBits, GGUF_ALIGNMENT, toHalfBits, writeGguf } from '../lib/model/gguf.js';
import { interleaveHeads } from '../lib/model/gguf-llama.js';
import { tensor } from '../lib/tensor.js';
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

describe('jfa export gguf refuses, with one line and nothing left on disk', () => {
  it('an unknown --type', () => {
    const before = readdirSync(dir);
    const r = jfa('export', 'gguf', '--model', base, '--out', join(dir, 'x.gguf'), '--type', 'q4_k');
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/type must be one of f32, f16, q8_0, got "q4_k"/);
    expect(leftovers(dir, before)).toEqual([]);
  });

  it("a 'retrieve' adapter, an adapter of another base, a file that exists, a read-only folder", async () => {
    const before = readdirSync(dir);
    const codeOf = async (o: Parameters<typeof exportGguf>[0]) => ((await exportGguf(o).catch((x: unknown) => x)) as { code?: string }).code;
    expect(await codeOf({ model: base, adapter: join(runs.retrieve, 'adapter'), out: join(dir, 'r.gguf') })).toBe('ERR_JFA_MODEL_FORMAT');
    expect(await codeOf({ model: base, adapter: join(runs.other, 'adapter'), out: join(dir, 'o.gguf') })).toBe('ERR_JFA_MODEL_FORMAT');
    expect(leftovers(dir, before)).toEqual([]);
    // --as-adapter writes one adapter: a continued run's earlier rounds belong in the base.
    expect(await codeOf({ model: base, adapter: join(runs.round2, 'adapter'), out: join(dir, 'a.gguf'), asAdapter: true })).toBe('ERR_JFA_OPTION');
    expect(leftovers(dir, before)).toEqual([]);
    const existing = join(dir, 'existing.gguf');
    writeFileSync(existing, 'keep me');
    expect(await codeOf({ model: base, out: existing })).toBe('ERR_JFA_OPTION');
    expect(readFileSync(existing, 'utf8')).toBe('keep me');
    const ro = mounts[0] ?? join(dir, 'readonly');
    const r = jfa('export', 'gguf', '--model', base, '--out', join(ro, 'm.gguf'));
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/cannot write .* \(EROFS\)/);
  });
});

/** A GGUF file's header, read back: version, metadata and tensor infos (a reader written for this test). */
function readGguf(file: string) {
  const b = readFileSync(file);
  let at = 0;
  const u32 = () => ((at += 4), b.readUInt32LE(at - 4));
  const u64 = () => ((at += 8), Number(b.readBigUInt64LE(at - 8)));
  const str = () => {
    const n = u64();
    at += n;
    return b.toString('utf8', at - n, at);
  };
  const value = (type: number): unknown => {
    if (type === 4) return u32();
    if (type === 5) return ((at += 4), b.readInt32LE(at - 4));
    if (type === 6) return ((at += 4), b.readFloatLE(at - 4));
    if (type === 7) return b[at++] === 1;
    if (type === 8) return str();
    if (type === 9) {
      const inner = u32();
      return Array.from({ length: u64() }, () => value(inner));
    }
    throw new Error(`type ${type}`);
  };
  const magic = b.toString('latin1', 0, 4);
  at = 4;
  const version = u32();
  const [nTensors, nKv] = [u64(), u64()];
  const metadata: Record<string, unknown> = {};
  for (let i = 0; i < nKv; i++) {
    const key = str();
    metadata[key] = value(u32());
  }
  const tensors = Array.from({ length: nTensors }, () => {
    const name = str();
    const dims = Array.from({ length: u32() }, () => u64());
    return { name, dims, type: u32(), offset: u64() };
  });
  const dataStart = Math.ceil(at / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
  return { magic, version, metadata, tensors, dataStart, bytes: b };
}

describe('the GGUF writer', () => {
  it('f16: the same bits as PyTorch, subnormals, overflow and ties included', () => {
    const values = new Float32Array(4096);
    let s = 1;
    for (let i = 0; i < values.length; i++) {
      s = (s * 16807) % 2147483647;
      values[i] = ((s / 2147483647) * 2 - 1) * 2 ** ((i % 48) - 30);
    }
    values.set([65504, 65520, 65519.99, 1e6, -1e6, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 0, -0], 0);
    const torch = tensor(values).to('float16').toTypedArray() as Float32Array;
    const ours = Array.from(values, (v) => fromHalfBits(toHalfBits(v)));
    expect(ours).toEqual(Array.from(torch));
    expect(toHalfBits(NaN) & 0x7c00).toBe(0x7c00);
  });

  it('q8_0: an fp16 scale of max|x| / 127 and rounded int8s per block of 32', () => {
    const values = Float32Array.from({ length: 64 }, (_, i) => (i < 32 ? (i - 16) / 8 : i === 40 ? -3 : 0.01 * i));
    const bytes = encodeTensor(values, 'q8_0');
    expect(bytes.length).toBe(2 * 34);
    const view = new DataView(bytes.buffer);
    for (let blk = 0; blk < 2; blk++) {
      const d = fromHalfBits(view.getUint16(blk * 34, true));
      const amax = Math.max(...values.slice(blk * 32, blk * 32 + 32).map(Math.abs));
      expect(d).toBeCloseTo(amax / 127, 4);
      for (let i = 0; i < 32; i++) expect(Math.abs(view.getInt8(blk * 34 + 2 + i) * d - values[blk * 32 + i]!)).toBeLessThanOrEqual(d / 2 + 1e-6);
    }
    expect(view.getInt8(2 + 0)).toBe(-127); // -2 is the block's largest magnitude
    expect(() => encodeTensor(new Float32Array(33), 'q8_0')).toThrow(RangeError);
  });

  it('interleaveHeads pairs row i with row i + headDim/2 of each head', () => {
    // 2 heads of headDim 4, one column: rows 0..7 become 0 2 1 3 | 4 6 5 7.
    expect(Array.from(interleaveHeads(Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]), 2, 1))).toEqual([0, 2, 1, 3, 4, 6, 5, 7]);
  });

  it('a file reads back: magic, version 3, typed metadata, dimensions innermost first, aligned data', () => {
    const file = join(dir, 'small.gguf');
    const w = Float32Array.from({ length: 3 * 64 }, (_, i) => i / 7);
    const size = writeGguf(
      file,
      [
        ['general.architecture', { type: 'string', value: 'llama' }],
        ['x.ids', { type: 'i32[]', value: [1, -2, 3] }],
        ['x.words', { type: 'string[]', value: ['a b', 'ü'] }],
        ['x.eps', { type: 'f32', value: 1e-5 }],
        ['x.flag', { type: 'bool', value: true }],
      ],
      [
        { name: 'norm', shape: [5], type: 'f32', data: () => Float32Array.from([1, 2, 3, 4, 5]) },
        { name: 'w16', shape: [3, 64], type: 'f16', data: () => w },
        { name: 'w8', shape: [3, 64], type: 'q8_0', data: () => w },
      ],
    );
    const g = readGguf(file);
    expect([g.magic, g.version]).toEqual(['GGUF', 3]);
    expect(g.metadata).toMatchObject({ 'general.architecture': 'llama', 'x.ids': [1, -2, 3], 'x.words': ['a b', 'ü'], 'x.flag': true, 'general.alignment': 32 });
    expect(g.metadata['x.eps']).toBeCloseTo(1e-5, 10);
    expect(g.tensors.map((t) => [t.name, t.dims, t.type])).toEqual([['norm', [5], 0], ['w16', [64, 3], 1], ['w8', [64, 3], 8]]);
    expect(g.tensors.map((t) => t.offset)).toEqual([0, 32, 32 + 384]);
    expect(g.dataStart % 32).toBe(0);
    expect(g.bytes.readFloatLE(g.dataStart + 4 * 4)).toBe(5);
    expect(fromHalfBits(g.bytes.readUInt16LE(g.dataStart + 32 + 2 * 65))).toBe(fromHalfBits(toHalfBits(65 / 7)));
    // w8: 3 rows x 2 blocks x 34 bytes = 204, padded to 224.
    expect(g.bytes.length).toBe(g.dataStart + 32 + 384 + 224);
    expect(size).toBe(g.bytes.length);
  });

  it("the shipped base's file carries llama.cpp's keys, tied embeddings without an output tensor", async () => {
    const file = join(dir, 'base.f16.gguf');
    await exportGguf({ model: base, out: file, type: 'f16' });
    const g = readGguf(file);
    // the shape from the base's own config and tokenizer (the shipped base is replaced now and then)
    const config = JSON.parse(readFileSync(join(base, 'config.json'), 'utf8')) as Record<string, number>;
    const merges = (JSON.parse(readFileSync(join(base, 'tokenizer.json'), 'utf8')) as { model: { merges: unknown[] } }).model.merges.length;
    const [H, L, I, heads, vocab] = [config.hidden_size!, config.num_hidden_layers!, config.intermediate_size!, config.num_attention_heads!, config.vocab_size!];
    expect(g.metadata).toMatchObject({
      'general.architecture': 'llama',
      'llama.context_length': config.max_position_embeddings,
      'llama.embedding_length': H,
      'llama.block_count': L,
      'llama.feed_forward_length': I,
      'llama.attention.head_count': heads,
      'llama.attention.head_count_kv': config.num_key_value_heads,
      'llama.rope.dimension_count': H / heads,
      'llama.vocab_size': vocab,
      'tokenizer.ggml.model': 'gpt2',
      'tokenizer.ggml.pre': 'gpt-2',
      'tokenizer.ggml.bos_token_id': 1,
      'tokenizer.ggml.eos_token_id': 2,
      'tokenizer.ggml.padding_token_id': 0,
      'tokenizer.ggml.add_bos_token': true,
    });
    expect((g.metadata['tokenizer.ggml.tokens'] as string[]).length).toBe(vocab);
    expect((g.metadata['tokenizer.ggml.merges'] as string[]).length).toBe(merges);
    expect(g.metadata['tokenizer.chat_template']).toContain('<|assistant|>');
    const names = g.tensors.map((t) => t.name);
    expect(names).toHaveLength(2 + L * 9);
    expect(names).not.toContain('output.weight');
    expect(g.tensors.find((t) => t.name === 'token_embd.weight')?.dims).toEqual([H, vocab]);
    expect(g.tensors.find((t) => t.name === `blk.${L - 1}.ffn_down.weight`)?.dims).toEqual([I, H]);
  });
});
