// Every family beside Llama (Qwen2, Qwen3, Mistral, Phi-3, Gemma 2, Gemma 3: tiny random models made by transformers,
// test/families.ts) through the jfa command and the library: `jfa train --method sft` and
// `--method jfa` (paused after a step and resumed), `jfa eval` and `jfa generate` with the jfa run's
// adapter and latent pool, and their library twins. The library's train() must write the same
// adapter and pool bytes as the paused-and-resumed CLI run, evaluateNew()'s predictions must be what
// `jfa eval` scores, and generateText() must write the text `jfa generate` prints. Parity of the
// families' numbers against transformers is test/41's.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readJsonl, writeJsonl } from '../lib/data/jsonl.js';
import { generateSuite, writeSuite } from '../lib/data/suite.js';
import { evaluateNew } from '../lib/jfa/evaluate.js';
import { promptText } from '../lib/jfa/examples.js';
import { loadRun } from '../lib/jfa/run.js';
import { train } from '../lib/jfa/trainer.js';
import { createModel } from '../lib/model/create.js';
import { generateText } from '../lib/model/generate.js';
import { LlamaModel } from '../lib/model/llama.js';
import { loadSafetensors } from '../lib/model/safetensors.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { setNumThreads } from '../lib/runtime.js';
import { FAMILIES, type Family, FAMILY_MODELS } from './families.js';
import { root, venvPython } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-families-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const data = join(dir, 'data');
const modelDir = (f: Family) => join(dir, f);

// One thread here and in every CLI process: the runs must be bit-identical across processes, and a
// tiny model gains nothing from a second thread that may wait on a busy core.
setNumThreads(1);
const jfa = (...args: string[]) =>
  spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', cwd: dir, timeout: 120_000, env: { ...process.env, OMP_NUM_THREADS: '1' } });

// Eight records in micro-batches of 2 with 2 accumulated: 2 steps. The 10 flashbacks with them are the
// 16 samples the latent pool's 16 groups need at least. A learning rate at which 2 steps move the
// adapter and the pool enough that each visibly changes the logits (checked below).
const TRAIN = { epochs: 1, microBatch: 2, accumulation: 2, maxTokens: 64, r: 2, lr: 0.01 };
const trainFlags = ['--epochs', `${TRAIN.epochs}`, '--micro-batch', `${TRAIN.microBatch}`, '--accumulation', `${TRAIN.accumulation}`, '--max-tokens', `${TRAIN.maxTokens}`, '--r', `${TRAIN.r}`, '--lr', `${TRAIN.lr}`];
const SEVEN = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
// What each family's adapter must adapt by default: every linear module it has (Phi-3's are fused).
const MODULES: Record<Family, string[]> = { qwen2: SEVEN, qwen3: SEVEN, mistral: SEVEN, phi3: ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'], gemma2: SEVEN, gemma3: SEVEN };
const ATTENTION = new Set(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'qkv_proj']);

beforeAll(() => {
  const tok = join(dir, 'tokenizer');
  createModel(tok, { hiddenSize: 16, intermediateSize: 32, numLayers: 1, numHeads: 2, seed: 1 });
  const r = spawnSync(venvPython, [join(root, 'scripts', 'reference', 'tiny_families.py'), 'models', dir, JSON.stringify({ families: FAMILY_MODELS })], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`tiny_families.py models failed: ${r.stderr}`);
  for (const f of FAMILIES) for (const file of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(tok, file), join(modelDir(f), file));
  const suite = generateSuite({ seed: 4, oldTrainPerSuite: 2, oldEvalPerSuite: 1, flashbacksPerSuite: 2, instancesPerTask: 1, evalInstancesPerTask: 1 });
  suite.newTrain = suite.newTrain.slice(0, 8);
  suite.newEval = suite.newEval.slice(0, 4);
  writeSuite(data, suite);
});

/** The LoRA tensors of an adapter folder, by name. */
function adapterTensors(adapter: string) {
  return loadSafetensors(join(adapter, 'adapter_model.safetensors')).tensors;
}

describe.each(FAMILIES)('%s through the CLI and the library', (f) => {
  const run = (name: string) => join(dir, `${f}-${name}`);

  it('jfa train --method sft: every step logged, an adapter on the family\'s own modules, trained away from zero', () => {
    const r = jfa('train', '--model', modelDir(f), '--data', join(data, 'new-train.jsonl'), '--method', 'sft', '--out', run('sft'), ...trainFlags, '--json');
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ method: 'sft', steps: 2 });
    const lines = readFileSync(join(run('sft'), 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { sft: number });
    expect(lines).toHaveLength(2);
    expect(lines.every((l) => Number.isFinite(l.sft) && l.sft > 0)).toBe(true);
    const config = JSON.parse(readFileSync(join(run('sft'), 'adapter', 'adapter_config.json'), 'utf8')) as { target_modules: string[] };
    expect(config.target_modules).toEqual(MODULES[f]);
    const tensors = adapterTensors(join(run('sft'), 'adapter'));
    // 2 layers x each module x (A, B), under PEFT's names
    expect(Object.keys(tensors)).toHaveLength(2 * MODULES[f].length * 2);
    for (const m of MODULES[f]) expect(Object.keys(tensors)).toContain(`base_model.model.model.layers.1.${ATTENTION.has(m) ? 'self_attn' : 'mlp'}.${m}.lora_B.weight`);
    // B starts at zero: a trained adapter has moved it
    const bs = Object.entries(tensors).filter(([k]) => k.includes('lora_B'));
    expect(bs.every(([, t]) => (t.toTypedArray() as Float32Array).some((x) => x !== 0))).toBe(true);
  });

  it('jfa train --method jfa paused after a step and resumed writes the adapter and latent pool that train() writes', async () => {
    const args = ['train', '--model', modelDir(f), '--data', join(data, 'new-train.jsonl'), '--flashbacks', join(data, 'flashbacks.jsonl'), '--method', 'jfa', '--out', run('jfa'), ...trainFlags, '--json'];
    const paused = jfa(...args, '--pause-after', '1');
    expect(paused.status, paused.stderr).toBe(0);
    expect(JSON.parse(paused.stdout)).toMatchObject({ method: 'jfa', steps: 1 });
    const resumed = jfa(...args, '--resume');
    expect(resumed.status, resumed.stderr).toBe(0);
    expect(JSON.parse(resumed.stdout)).toMatchObject({ method: 'jfa', steps: 2, latentMode: 'retrieve' });
    const lines = readFileSync(join(run('jfa'), 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { divergence: number });
    expect(lines).toHaveLength(2);
    expect(lines.some((l) => l.divergence > 0)).toBe(true); // the flashbacks' divergence ran

    using model = LlamaModel.load(modelDir(f));
    const result = await train(model, Tokenizer.fromDir(modelDir(f)), { newTrain: readJsonl(join(data, 'new-train.jsonl'), 'instance'), flashbacks: readJsonl(join(data, 'flashbacks.jsonl'), 'flashback') }, {
      method: 'jfa',
      epochs: TRAIN.epochs,
      microBatch: TRAIN.microBatch,
      accumulation: TRAIN.accumulation,
      maxTokens: TRAIN.maxTokens,
      lr: TRAIN.lr,
      lora: { r: TRAIN.r },
      outDir: run('lib'),
    });
    expect(result.steps).toBe(2);
    expect(result.pool).toBeDefined();
    result.pool?.dispose();
    for (const file of ['adapter_model.safetensors', 'latent_pool.safetensors'])
      expect(readFileSync(join(run('jfa'), 'adapter', file)).equals(readFileSync(join(run('lib'), 'adapter', file))), file).toBe(true);
  });

  it('jfa eval scores the predictions evaluateNew makes; jfa generate prints what generateText writes (adapter and latent pool)', async () => {
    using loaded = await loadRun(run('jfa'));
    expect(loaded.pool).toBeDefined();
    const records = readJsonl(join(data, 'new-eval.jsonl'), 'instance');
    const { predictions } = await evaluateNew(loaded.model, loaded.tokenizer, records, { latent: loaded.pool, maxNewTokens: 8 });
    expect(predictions).toHaveLength(4);
    // References: the library's own predictions for records 0 and 2, text no model writes for 1 and 3.
    const scored = join(dir, `${f}-scored.jsonl`);
    writeJsonl(scored, records.map((r, i) => ({ ...r, output: i % 2 === 0 ? predictions[i]! : 'a reference nobody predicts' })));
    const e = jfa('eval', '--model', modelDir(f), '--adapter', join(run('jfa'), 'adapter'), '--data', scored, '--metric', 'em', '--max-new-tokens', '8', '--json');
    expect(e.status, e.stderr).toBe(0);
    expect(JSON.parse(e.stdout)).toMatchObject({ records: 4, exactMatch: 0.5, latentPool: true });

    // Prompts of two training records: they retrieve pool entries that training moved (an entry no
    // training sample retrieved still has B = 0 and adds nothing).
    const PROMPTS = readJsonl(join(data, 'new-train.jsonl'), 'instance').slice(0, 2).map(promptText);
    const latent = loaded.pool!.retrieve(loaded.model, loaded.tokenizer, PROMPTS.map((prompt) => ({ task: '', prompt })));
    const ours = await generateText(loaded.model, loaded.tokenizer, PROMPTS, { latent, maxNewTokens: 8 });
    // What is compared is the trained run's: the adapter and the pool (which joins this family's
    // o_proj; Qwen3's takes 4 heads x 16 = 64 features, not the hidden 32) each move these prompts' logits.
    const batch = loaded.tokenizer.batch(PROMPTS);
    const logits = (o: { latent?: typeof latent; adapters?: boolean }) => loaded.model.logits(batch.ids, { attentionMask: batch.attentionMask, ...o }).toTypedArray() as Float32Array;
    const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((d, x, i) => Math.max(d, Math.abs(x - b[i]!)), 0);
    const adapted = logits({});
    expect(maxDiff(logits({ latent }), adapted)).toBeGreaterThan(1e-3);
    expect(maxDiff(adapted, logits({ adapters: false }))).toBeGreaterThan(1e-3);
    latent.indices.dispose();
    latent.weights.dispose();
    const g = jfa('generate', '--model', modelDir(f), '--adapter', join(run('jfa'), 'adapter'), '--prompt', ...PROMPTS, '--max-new-tokens', '8', '--json');
    expect(g.status, g.stderr).toBe(0);
    const cli = JSON.parse(g.stdout) as { results: Array<{ text: string; tokens: number }>; latentPool: boolean };
    expect(cli.latentPool).toBe(true);
    expect(cli.results.every((r) => r.tokens > 0)).toBe(true);
    expect(cli.results.map((r) => r.text)).toEqual(ours.map((r) => r.text));
  });
});
