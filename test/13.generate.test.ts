// Generation, adapters and the from-scratch model against transformers + PEFT: greedy tokens equal
// transformers' generate (with and without an adapter), PEFT loads our adapters and we load PEFT's
// with the same logits, a model we create loads in transformers with our tokenizer's ids and logits,
// and `jfa generate` runs on it.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { learnMerges } from '../lib/model/bpe.js';
import { createModel } from '../lib/model/create.js';
import { LlamaModel } from '../lib/model/llama.js';
import { tokenCrossEntropy } from '../lib/kernels.js';
import { loadSafetensors, saveSafetensors } from '../lib/model/safetensors.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { randn, tensor } from '../lib/tensor.js';
import { expectError, root, venvPython } from './helpers.js';
import { expectClose } from './reference.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-gen-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function py<T>(spec: Record<string, unknown>): T {
  const r = spawnSync(venvPython, [join(root, 'scripts', 'reference', 'model_reference.py'), JSON.stringify(spec)], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`model_reference.py ${String(spec.op)} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as T;
}

const tiny = join(dir, 'tiny');
const scratch = join(dir, 'scratch');
const peftAdapter = join(dir, 'peft-adapter');
// Left padding: row 1's prompt is three tokens shorter.
const ids = [
  [5, 17, 3, 99, 210, 42],
  [0, 0, 0, 1, 2, 3],
];
const mask = [
  [1, 1, 1, 1, 1, 1],
  [0, 0, 0, 1, 1, 1],
];
const idsT = () => tensor(BigInt64Array.from(ids.flat().map(BigInt)), [2, 6]);
const maskT = () => tensor(Uint8Array.from(mask.flat()), [2, 6]);

beforeAll(() => {
  const r = spawnSync(
    venvPython,
    [
      join(root, 'scripts', 'reference', 'tiny_llama.py'),
      tiny,
      JSON.stringify({
        config: { vocab_size: 211, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, tie_word_embeddings: false },
        seed: 4,
        ids: [[1, 2]],
        mask: [[1, 1]],
      }),
    ],
    { encoding: 'utf8', timeout: 300_000 },
  );
  if (r.status !== 0) throw new Error(r.stderr);
  py({ op: 'make_adapter', model: tiny, out: peftAdapter, r: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'down_proj'], seed: 5 });
  createModel(scratch, { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKeyValueHeads: 2, seed: 7 });
});

describe('generation matches transformers generate (greedy, KV cache, left padding)', () => {
  it('base model', async () => {
    const model = LlamaModel.load(tiny);
    const ours = await model.generate(idsT(), { attentionMask: maskT(), maxNewTokens: 12 });
    const ref = py<{ tokens: number[][] }>({ op: 'generate', model: tiny, ids, mask, max_new_tokens: 12 });
    expect(Array.from(ours.toTypedArray() as BigInt64Array, Number)).toEqual(ref.tokens.flat());
  });

  it('with a PEFT adapter loaded into our model', async () => {
    const model = LlamaModel.load(tiny);
    model.loadAdapter(peftAdapter);
    const ours = await model.generate(idsT(), { attentionMask: maskT(), maxNewTokens: 12 });
    const ref = py<{ tokens: number[][] }>({ op: 'generate', model: tiny, adapter: peftAdapter, ids, mask, max_new_tokens: 12 });
    expect(Array.from(ours.toTypedArray() as BigInt64Array, Number)).toEqual(ref.tokens.flat());
    const base = await model.generate(idsT(), { attentionMask: maskT(), maxNewTokens: 12, adapters: false });
    const refBase = py<{ tokens: number[][] }>({ op: 'generate', model: tiny, ids, mask, max_new_tokens: 12 });
    expect(Array.from(base.toTypedArray() as BigInt64Array, Number)).toEqual(refBase.tokens.flat());
  });

  it('refuses structural changes while generating; dispose() during generation is safe', async () => {
    const model = LlamaModel.load(tiny);
    const running = model.generate(idsT(), { attentionMask: maskT(), maxNewTokens: 8 });
    expect(() => model.addLora({ r: 2 })).toThrow('addLora: the model is generating; await generate() before changing it');
    await running;
    model.addLora({ r: 2 });
    const again = model.generate(idsT(), { attentionMask: maskT(), maxNewTokens: 8 });
    model.dispose();
    expect((await again).shape[0]).toBe(2);
    expect(() => model.logits(idsT())).toThrow('model.logits: the model is disposed');
  });

  it('stops at EOS and pads after it; sampling is seeded', async () => {
    const model = LlamaModel.load(tiny);
    const greedy = Array.from((await model.generate(idsT(), { attentionMask: maskT(), maxNewTokens: 6 })).toTypedArray() as BigInt64Array, Number);
    const eos = greedy[2]!; // row 0's third token
    const stopped = await model.generate(idsT(), { attentionMask: maskT(), maxNewTokens: 6, eosTokenIds: [eos], padTokenId: 0 });
    const row0 = Array.from(stopped.toTypedArray() as BigInt64Array, Number).slice(0, stopped.shape[1]);
    expect(row0.slice(0, 3)).toEqual(greedy.slice(0, 3));
    expect(row0.slice(3).every((t) => t === 0)).toBe(true);
    const a = await model.generate(idsT(), { attentionMask: maskT(), maxNewTokens: 8, temperature: 1, topP: 0.9, seed: 3 });
    const b = await model.generate(idsT(), { attentionMask: maskT(), maxNewTokens: 8, temperature: 1, topP: 0.9, seed: 3 });
    expect(a.toTypedArray()).toEqual(b.toTypedArray());
  });
});

describe('adapters in PEFT layout', () => {
  it('PEFT loads an adapter we saved and gives our logits', () => {
    const model = LlamaModel.load(tiny);
    model.loadAdapter(peftAdapter); // nonzero factors, so the adapter matters
    const ours = join(dir, 'our-adapter');
    model.saveAdapter(ours);
    const config = JSON.parse(readFileSync(join(ours, 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8 });
    expect([...config.target_modules].sort()).toEqual(['down_proj', 'q_proj', 'v_proj']);
    const out = join(dir, 'peft-logits.safetensors');
    py({ op: 'adapter_logits', model: tiny, adapter: ours, ids: [ids[0]], out });
    const logits = model.logits(tensor(BigInt64Array.from(ids[0]!.map(BigInt)), [1, 6]));
    expectClose(logits, { shape: [1, 6, 211], data: loadSafetensors(out).tensors.logits!.toTypedArray() as Float32Array }, 1e-5, 'logits');
  });

  it('merging folds the adapter into the weights with the same logits', () => {
    const model = LlamaModel.load(tiny);
    model.loadAdapter(peftAdapter);
    const before = model.logits(idsT());
    model.mergeLora();
    expect(Object.keys(model.loraParameters())).toHaveLength(0);
    expectClose(model.logits(idsT()), { shape: before.shape, data: before.toTypedArray() as Float32Array }, 1e-5, 'merged');
    const merged = join(dir, 'merged');
    model.save(merged);
    const again = LlamaModel.load(merged);
    expectClose(again.logits(idsT()), { shape: before.shape, data: before.toTypedArray() as Float32Array }, 1e-5, 'saved merged');
  });

  it('bad adapters are named', () => {
    const model = LlamaModel.load(tiny);
    expectError(() => model.loadAdapter(join(dir, 'none')), Error, 'adapter_config.json: cannot read (ENOENT)');
    expectError(() => model.saveAdapter(join(dir, 'x')), Error, 'saveAdapter: this model has no adapters');
  });
});

describe('training path matches transformers + PEFT', () => {
  it('loss and every LoRA gradient, with a latent pool on one o_proj', () => {
    const model = LlamaModel.load(tiny);
    model.loadAdapter(peftAdapter);
    const A = randn([5, 2, 64], { seed: 11 }).setRequiresGrad();
    const B = randn([5, 64, 2], { seed: 12 }).setRequiresGrad();
    const indices = tensor(new BigInt64Array([1n, 4n]), [1, 2]);
    const weights = tensor([0.6, 0.4], [1, 2]);
    const pool = join(dir, 'pool.safetensors');
    saveSafetensors(pool, { A, B, indices, weights });
    model.setLatentPool(1, A, B);
    const out = join(dir, 'loss-grads.safetensors');
    py({ op: 'loss_grads', model: tiny, adapter: peftAdapter, ids: [ids[0]], pool, layer: 1, out });
    const ref = loadSafetensors(out).tensors;

    const row = ids[0]!;
    const input = tensor(BigInt64Array.from(row.map(BigInt)), [1, 6]);
    // next-token targets: position i predicts token i + 1; the last position predicts nothing
    const targets = tensor(BigInt64Array.from([...row.slice(1), -100].map(BigInt)), [1, 6]);
    const logits = model.logits(input, { latent: { indices, weights } });
    expectClose(logits, { shape: [1, 6, 211], data: ref.logits!.toTypedArray() as Float32Array }, 1e-5, 'logits');
    const loss = tokenCrossEntropy(logits, targets);
    expect(Math.abs((loss.toTypedArray() as Float32Array)[0]! - (ref.loss!.toTypedArray() as Float32Array)[0]!)).toBeLessThan(1e-5);
    loss.backward();
    const params = model.loraParameters();
    expect(Object.keys(params).length).toBe(2 * 2 * 3);
    for (const [name, p] of Object.entries(params)) {
      expectClose(p.grad, { shape: p.shape, data: ref[name]!.toTypedArray() as Float32Array }, 1e-4, name);
    }
    expectClose(A.grad, { shape: A.shape, data: ref['pool.A']!.toTypedArray() as Float32Array }, 1e-4, 'pool A');
    expectClose(B.grad, { shape: B.shape, data: ref['pool.B']!.toTypedArray() as Float32Array }, 1e-4, 'pool B');
    // the base weights stay frozen: no gradient reaches them, and without latent tasks the pool is unused
    expect(() => model.logits(input, { latent: { indices, weights: 3 as never } })).toThrow('model.logits: latent.weights must be a Tensor, got number 3');
  });
});

describe('the from-scratch model', () => {
  it('loads in transformers with AutoTokenizer: same ids, same logits', () => {
    const text = 'Add 12 and 30: 42.';
    const out = join(dir, 'scratch-logits.safetensors');
    const ref = py<{ ids: number[]; decoded: string; chat: string }>({ op: 'hf_load', model: scratch, text, out });
    const tokenizer = Tokenizer.fromDir(scratch);
    const ours = tokenizer.encode(text);
    expect(ours).toEqual(ref.ids);
    expect(tokenizer.decode(ours)).toBe(text);
    expect(tokenizer.decode([])).toBe(''); // a generation that stopped at once
    expect(ref.decoded).toBe(text);
    expect(tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }])).toBe(ref.chat);
    const model = LlamaModel.load(scratch);
    const logits = model.logits(tensor(BigInt64Array.from(ours.map(BigInt)), [1, ours.length]));
    expectClose(logits, { shape: [1, ours.length, 259], data: loadSafetensors(out).tensors.logits!.toTypedArray() as Float32Array }, 1e-5, 'logits');
  });

  it('with learned BPE merges: shorter sequences, and transformers tokenizes exactly as we do', () => {
    const texts = ['Add 12 and 30 to get 42.', 'The answer is 42.', 'Which of these is a liquid? A) water B) stone'];
    const merges = learnMerges([...texts, ...texts, 'answer answer the the is is'], 40);
    expect(merges.length).toBeGreaterThan(10);
    const bpeDir = join(dir, 'scratch-bpe');
    createModel(bpeDir, { hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, merges, seed: 3 });
    const text = 'The answer is 42. Which of these is water?';
    const ours = Tokenizer.fromDir(bpeDir).encode(text);
    expect(ours.length).toBeLessThan(Tokenizer.fromDir(scratch).encode(text).length);
    const ref = py<{ ids: number[]; decoded: string }>({ op: 'hf_load', model: bpeDir, text, out: join(dir, 'bpe-logits.safetensors') });
    expect(ours).toEqual(ref.ids);
    expect(ref.decoded).toBe(text);
    // No merge holds a digit (numbers stay a token per digit), unless asked for.
    expect(merges.some((m) => /[0-9]/.test(m))).toBe(false);
    const numbers = Array.from({ length: 30 }, () => 'x 42 = 42 and 1234 1234');
    expect(learnMerges(numbers, 10, { splitDigits: false }).some((m) => /[0-9]/.test(m))).toBe(true);
    expect(learnMerges(numbers, 10).some((m) => /[0-9]/.test(m))).toBe(false);
  });

  it("the demo's shipped base matches its card's hash and loads in transformers with our tokenization and logits", () => {
    const shipped = join(root, 'models', 'jfa-base');
    const card = JSON.parse(readFileSync(join(shipped, 'jfa-base.json'), 'utf8')) as { sha256: string; parameters: number };
    expect(createHash('sha256').update(readFileSync(join(shipped, 'model.safetensors'))).digest('hex')).toBe(card.sha256);
    expect(statSync(join(shipped, 'model.safetensors')).size).toBeLessThanOrEqual(24 * 1024 * 1024);
    const text = "Solve the math word problem step by step. End with 'The answer is N.'\nAna buys 3 packs of pencils with 4 pencils in each pack.\n";
    const ours = Tokenizer.fromDir(shipped).encode(text);
    const out = join(dir, 'shipped-logits.safetensors');
    const ref = py<{ ids: number[]; decoded: string }>({ op: 'hf_load', model: shipped, text, out });
    expect(ours).toEqual(ref.ids);
    using model = LlamaModel.load(shipped);
    expect(model.parameterCount).toBe(card.parameters);
    const logits = model.logits(tensor(BigInt64Array.from(ours.map(BigInt)), [1, ours.length]));
    expectClose(logits, { shape: [1, ours.length, model.config.vocabSize], data: loadSafetensors(out).tensors.logits!.toTypedArray() as Float32Array }, 1e-4, 'logits');
  });

  it('jfa generate runs on it and on the transformers model, and names a missing tokenizer', () => {
    const jfa = (...args: string[]) => spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', cwd: root, timeout: 120_000 });
    const r = jfa('generate', '--model', scratch, '--prompt', 'hello', 'two prompts', '--max-new-tokens', '5', '--json');
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { results: Array<{ prompt: string; tokens: number }>; tokensPerSecond: number };
    expect(out.results.map((x) => x.prompt)).toEqual(['hello', 'two prompts']);
    expect(out.results.every((x) => x.tokens <= 5)).toBe(true);
    const chat = jfa('generate', '--model', scratch, '--prompt', 'hi', '--chat', '--max-new-tokens', '3', '--temperature', '0.8', '--seed', '2');
    expect(chat.status, chat.stderr).toBe(0);
    // A transformers-made model with our tokenizer's vocabulary size, given that tokenizer.
    const withTokenizer = join(dir, 'tiny-tok');
    const made = spawnSync(venvPython, [join(root, 'scripts', 'reference', 'tiny_llama.py'), withTokenizer, JSON.stringify({
      config: { vocab_size: 259, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2 }, seed: 8, ids: [[1]], mask: [[1]],
    })], { encoding: 'utf8', timeout: 300_000 });
    expect(made.status, made.stderr).toBe(0);
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(scratch, f), join(withTokenizer, f));
    const onTiny = jfa('generate', '--model', withTokenizer, '--prompt', 'abc', '--max-new-tokens', '4', '--json');
    expect(onTiny.status, onTiny.stderr).toBe(0);
    expect((JSON.parse(onTiny.stdout) as { results: unknown[] }).results).toHaveLength(1);
    expect(existsSync(join(tiny, 'tokenizer.json'))).toBe(false);
    const noTok = jfa('generate', '--model', tiny, '--prompt', 'x');
    expect(noTok.status).not.toBe(0);
    expect(noTok.stderr.trim()).toBe(`jfa: ${join(tiny, 'tokenizer.json')}: missing (the model directory has no tokenizer)`);
    const bad = jfa('generate', '--model', scratch, '--prompt', 'x', '--max-new-tokens', '0');
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('--max-new-tokens must be a positive integer');
  });
});
