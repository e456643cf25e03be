// The baselines added as presets: slm (latent tasks retrieved per sample, no flashbacks) and
// self-replay (the frozen base's greedy answers to the flashback prompts, trained with SFT beside the
// new tasks). Each trains, resumes bit-identically, refuses what it cannot do before any training
// work, and agrees with a PyTorch reference: its steps' losses, gradient norms and weights against
// transformers + PEFT + torch.optim (scripts/reference/jfa_step.py), self-replay's answers against
// transformers' greedy generate. Each comparison is run once more with a coefficient off, and must
// then disagree: the tolerances can see it.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { sftBatch } from '../lib/jfa/examples.js';
import { LatentTasks } from '../lib/jfa/latent.js';
import { METHOD_PRESETS } from '../lib/jfa/methods.js';
import { TRAIN_DEFAULTS } from '../lib/jfa/plan.js';
import { SELF_REPLAY_FILE, selfReplayRecords } from '../lib/jfa/self-replay.js';
import { type MicroBatch, type StepResult, trainStep } from '../lib/jfa/step.js';
import { train } from '../lib/jfa/trainer.js';
import { LlamaModel } from '../lib/model/llama.js';
import { loadSafetensors, saveSafetensors } from '../lib/model/safetensors.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { AdamW, cosineWithWarmup } from '../lib/optim.js';
import { setNumThreads } from '../lib/runtime.js';
import { randn, type Tensor, tensor } from '../lib/tensor.js';
import { createMethodModels, python, relDiff, root, tinyJfaRun, venvPython } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-methods-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'base');
const { suite, options } = tinyJfaRun();
const data = { newTrain: suite.newTrain.slice(0, 16), flashbacks: suite.flashbacks.slice(0, 6) };
const load = () => ({ model: LlamaModel.load(modelDir), tokenizer: Tokenizer.fromDir(modelDir) });
const file = (...p: string[]) => readFileSync(join(dir, ...p));

// The reference comparisons use test/20's shape (createMethodModels says why).
const refDir = join(dir, 'ref-base');
const loadRef = () => ({ model: LlamaModel.load(refDir), tokenizer: Tokenizer.fromDir(refDir) });

beforeAll(() => createMethodModels(modelDir, refDir, suite.newTrain));

describe('slm and self-replay train as presets', () => {
  it('slm: latent tasks served with the adapter, no divergence; flashbacks given change nothing; a paused run resumes bit-identically', async () => {
    expect(METHOD_PRESETS.slm).toMatchObject({ flashbacks: false, latent: true, pcgrad: false, latentMode: 'retrieve' });
    const divergences: number[] = [];
    const a = load();
    const full = await train(a.model, a.tokenizer, data, { ...options, method: 'slm', outDir: join(dir, 'slm-full'), onStep: (p) => divergences.push(p.divergence) });
    expect(full.pool?.mode).toBe('retrieve');
    expect(divergences.every((d) => d === 0)).toBe(true);
    full.pool?.dispose();
    // Without flashbacks, paused after 2 steps and resumed: the same adapter and pool, to the bit.
    const newOnly = { newTrain: data.newTrain };
    const b = load();
    const paused = await train(b.model, b.tokenizer, newOnly, { ...options, method: 'slm', outDir: join(dir, 'slm-resumed'), pauseAfter: 2 });
    expect(paused.stoppedEarly).toBe(true);
    paused.pool?.dispose();
    const c = load();
    (await train(c.model, c.tokenizer, newOnly, { ...options, method: 'slm', outDir: join(dir, 'slm-resumed'), resume: true })).pool?.dispose();
    for (const f of ['adapter_model.safetensors', 'latent_pool.safetensors']) expect(file('slm-resumed', 'adapter', f).equals(file('slm-full', 'adapter', f)), f).toBe(true);
  });

  it("self-replay: the base's greedy answers join the records once, are kept in the run folder, and a resumed run reads them back bit-identically", async () => {
    const a = load();
    const full = await train(a.model, a.tokenizer, data, { ...options, method: 'self-replay', outDir: join(dir, 'sr-full') });
    // one answer per flashback joins the 16 new-task records: 22 records, 4 per step
    expect(full.totalSteps).toBe(Math.ceil(22 / 4));
    const kept = file('sr-full', SELF_REPLAY_FILE).toString().trim().split('\n').map((l) => JSON.parse(l) as { output: string });
    const b = load();
    const fresh = await selfReplayRecords(b.model, b.tokenizer, data.flashbacks, TRAIN_DEFAULTS.selfReplayMaxNewTokens, { resume: false, write: false });
    expect(kept).toEqual(fresh);
    expect(kept.every((r) => r.output.length > 0)).toBe(true);

    const c = load();
    await train(c.model, c.tokenizer, data, { ...options, method: 'self-replay', outDir: join(dir, 'sr-resumed'), pauseAfter: 3 });
    const cache = join(dir, 'sr-resumed', SELF_REPLAY_FILE);
    const written = statSync(cache).mtimeMs;
    const d = load();
    await train(d.model, d.tokenizer, data, { ...options, method: 'self-replay', outDir: join(dir, 'sr-resumed'), resume: true });
    expect(statSync(cache).mtimeMs).toBe(written); // read back, not generated again
    expect(file('sr-resumed', 'adapter', 'adapter_model.safetensors').equals(file('sr-full', 'adapter', 'adapter_model.safetensors'))).toBe(true);
  });

  it('refuses what the methods cannot do, before any training work', async () => {
    const { model, tokenizer } = load();
    const refuse = (d: object, o: object, message: string) => expect(train(model, tokenizer, { newTrain: data.newTrain, ...d }, { ...options, ...o } as never)).rejects.toThrow(message);
    await refuse({}, { method: 'self-replay' }, "train: method 'self-replay' needs flashbacks: the prompts the base answers (data.flashbacks)");
    await refuse(data, { method: 'sft', selfReplayMaxNewTokens: 8 }, "train: selfReplayMaxNewTokens applies only to method 'self-replay' (method 'sft')");
    await refuse(data, { method: 'self-replay', selfReplayMaxNewTokens: 0 }, 'train: selfReplayMaxNewTokens must be a positive integer, got 0');
    await refuse(data, { method: 'self-replay', continueFrom: join(dir, 'sr-full') }, "train: method 'self-replay' cannot continue a run (continueFrom) yet");
    await refuse(data, { method: 'slm', plainSftWeight: -1 }, 'train: plainSftWeight must be a finite number >= 0, got -1');
    async function* stream() {
      yield* data.newTrain;
    }
    await expect(train(model, tokenizer, { newTrain: stream(), flashbacks: data.flashbacks }, { ...options, method: 'self-replay', maxSteps: 2 })).rejects.toThrow(
      "train: method 'self-replay' mixes the base's answers into the new-task records: pass data.newTrain as an array",
    );
    // A resumed self-replay run whose answers file is gone is an incomplete checkpoint, not a silent regeneration.
    const out = join(dir, 'sr-lost');
    const b = load();
    await train(b.model, b.tokenizer, data, { ...options, method: 'self-replay', outDir: out, pauseAfter: 1 });
    rmSync(join(out, SELF_REPLAY_FILE));
    const c = load();
    await expect(train(c.model, c.tokenizer, data, { ...options, method: 'self-replay', outDir: out, resume: true })).rejects.toThrow(`${SELF_REPLAY_FILE} (the base's answers this run trains on) is missing`);
    expect(model.hasLora).toBe(false); // nothing was set up for any refused run
  });
});

// Tolerances as test/20's step reference (fp32 both sides, sums in other orders).
const STEPS = 5;
const LOSS_RTOL = 2e-5;
const WEIGHT_RTOL = 2e-5;
// Adam's eps is 1e-6 (not 1e-8): a few gradient elements here are ~1e-9, where lr x g / (|g| + eps)
// turns float rounding of g (1e-7 relative, as the losses show) into a visible update difference.
// With eps above them, the weights agree within test/20's tolerance and the method's errors still show.
const OPTIM = { lr: 5e-3, betas: [0.9, 0.999] as [number, number], eps: 1e-6, weight_decay: 0.01 };
const MAX_GRAD_NORM = 0.3;
// Warm-up then cosine decay, as test/20 (and a run): Adam's moments fill before the full rate applies.
const lrAt = (step: number) => OPTIM.lr * cosineWithWarmup(step, 2, STEPS);

/** Normal values with standard deviation `std` (0.05: a trained-looking factor). */
function small(shape: number[], seed: number, std = 0.05): Tensor {
  const r = randn(shape, { seed });
  const values = (r.toTypedArray() as Float32Array).map((x) => x * std);
  r.dispose();
  return tensor(values, shape);
}

interface Case {
  name: string;
  /** the two micro-batches of every step (both new-task: SFT), with latent tasks for slm */
  micro: MicroBatch[];
  /** the same micro-batches with one coefficient off, for the reference run that must disagree */
  broken: MicroBatch[];
  pool?: LatentTasks;
}

/** Trains `STEPS` steps here and in the reference (as given, and broken); returns the worst differences. */
async function compare(c: Case, model: LlamaModel, method: 'slm' | 'self-replay'): Promise<{ ours: StepResult[]; loss: number; weight: number; brokenLoss: number; brokenWeight: number }> {
  const caseDir = join(dir, `ref-${c.name}`);
  model.addLora({ seed: 4 });
  const byName = model.loraParameters();
  Object.entries(byName).forEach(([name, p], i) => name.endsWith('lora_B.weight') && p.copyFrom(small(p.shape, 100 + i)));
  const params = [...Object.values(byName), ...(c.pool ? [c.pool.A, c.pool.B] : [])];
  model.saveAdapter(join(caseDir, 'adapter'));
  if (c.pool) saveSafetensors(join(caseDir, 'pool.safetensors'), { A: c.pool.A, B: c.pool.B });
  const save = (name: string, micro: MicroBatch[]) => {
    const t: Record<string, Tensor> = {};
    micro.forEach((mb, i) => {
      Object.assign(t, { [`mb${i}.ids`]: mb.ids, [`mb${i}.mask`]: mb.attentionMask, [`mb${i}.targets`]: mb.targets! });
      if (mb.latent) Object.assign(t, { [`mb${i}.indices`]: mb.latent.indices, [`mb${i}.weights`]: mb.latent.weights });
    });
    saveSafetensors(join(caseDir, `${name}.safetensors`), t);
  };
  save('batches', c.micro);
  save('broken', c.broken);

  const optimizer = new AdamW(params, { lr: OPTIM.lr, betas: OPTIM.betas, eps: OPTIM.eps, weightDecay: OPTIM.weight_decay });
  const ours: StepResult[] = [];
  // The method's own switches (slm: latent tasks on, no divergence; self-replay: SFT) and PCGrad as its preset has it.
  for (let s = 0; s < STEPS; s++) {
    optimizer.lr = lrAt(s);
    ours.push(await trainStep(model, optimizer, c.micro, { method, pcgrad: METHOD_PRESETS[method].pcgrad, maxGradNorm: MAX_GRAD_NORM }));
  }
  optimizer.dispose();

  const setup = (batches: string, out: string) => [
    { cmd: 'setup', model: refDir, adapter: join(caseDir, 'adapter'), pool: c.pool ? join(caseDir, 'pool.safetensors') : null, layer: 1, alpha: 1, max_grad_norm: MAX_GRAD_NORM, kl: 'symmetric', reduction: 'mean', pcgrad: false, ...OPTIM },
    { cmd: 'batches', name: 'b', file: join(caseDir, `${batches}.safetensors`), kinds: ['new', 'new'] },
    ...Array.from({ length: STEPS }, (_, s) => ({ cmd: 'step', batches: 'b', orders: null, lr: lrAt(s) })),
    { cmd: 'save', file: join(caseDir, out) },
  ];
  const script = [{ cmd: 'threads', n: 1 }, ...setup('batches', 'ref.safetensors'), ...setup('broken', 'broken.safetensors')];
  const r = spawnSync(venvPython, [join(root, 'scripts', 'reference', 'jfa_step.py')], { input: script.map((x) => JSON.stringify(x)).join('\n'), encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`reference failed (${r.status}): ${r.stderr}`);
  const steps = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).filter((x) => 'sft' in x) as unknown as StepResult[];
  const [theirs, broken] = [steps.slice(0, STEPS), steps.slice(STEPS)];
  let loss = 0;
  for (let s = 0; s < STEPS; s++) {
    const [a, b] = [ours[s]!, theirs[s]!];
    expect(Math.abs(a.sft - b.sft), `${c.name} step ${s} sft: ours ${a.sft} ref ${b.sft}`).toBeLessThanOrEqual(LOSS_RTOL * b.sft);
    expect(Math.abs(a.gradNorm - b.gradNorm), `${c.name} step ${s} gradNorm: ours ${a.gradNorm} ref ${b.gradNorm}`).toBeLessThanOrEqual(LOSS_RTOL * b.gradNorm);
    expect(a.divergence).toBe(0);
    loss = Math.max(loss, Math.abs(a.sft - b.sft) / b.sft, Math.abs(a.gradNorm - b.gradNorm) / b.gradNorm);
  }
  const mine = { ...model.loraParameters(), ...(c.pool ? { 'pool.A': c.pool.A, 'pool.B': c.pool.B } : {}) };
  const ref = loadSafetensors(join(caseDir, 'ref.safetensors')).tensors;
  const off = loadSafetensors(join(caseDir, 'broken.safetensors')).tensors;
  expect(Object.keys(ref).sort()).toEqual(Object.keys(mine).sort());
  let weight = 0;
  let brokenWeight = 0;
  for (const [name, p] of Object.entries(mine)) {
    const a = p.toTypedArray() as Float32Array;
    const d = relDiff(a, ref[name]!.toTypedArray() as Float32Array);
    expect(d, `${c.name} ${name}: max |diff| / max |ref|`).toBeLessThanOrEqual(WEIGHT_RTOL);
    weight = Math.max(weight, d);
    brokenWeight = Math.max(brokenWeight, relDiff(a, off[name]!.toTypedArray() as Float32Array));
  }
  const brokenLoss = Math.max(...broken.map((b, s) => Math.abs(b.sft - ours[s]!.sft) / ours[s]!.sft));
  return { ours, loss, weight, brokenLoss, brokenWeight };
}

describe('slm and self-replay agree with transformers + PEFT + torch.optim', () => {
  it(`slm: ${STEPS} steps of SFT with retrieved latent tasks (losses, gradient norms, adapter and pool); retrieval weights 5% off fail`, async () => {
    setNumThreads(1);
    const { model, tokenizer } = loadRef();
    const pool = new LatentTasks(64, 64, 64, { groups: 2, perGroup: 3, k: 2, rank: 2, seed: 6 });
    // Values large enough that the increments weigh in the loss, so that their weights 5% off show.
    pool.B.copyFrom(small(pool.B.shape, 99, 0.5));
    model.setLatentPool(1, pool.A, pool.B);
    const emb = Float32Array.from({ length: 6 * 64 }, (_, i) => Math.sin(i * 0.61) + Math.cos(i * 0.013));
    pool.fit(emb, 1);
    const { indices, weights } = pool.retrieve(emb);
    const idx = indices.toTypedArray() as BigInt64Array;
    const w = weights.toTypedArray() as Float32Array;
    const rows = (m: number, scale = 1) => ({ indices: tensor(idx.slice(m * 6, m * 6 + 6), [3, 2]), weights: tensor(w.slice(m * 6, m * 6 + 6).map((x) => x * scale), [3, 2]) });
    const batch = (m: number, scale?: number): MicroBatch => {
      const b = sftBatch(tokenizer, data.newTrain.slice(m * 3, m * 3 + 3), 96);
      return { kind: 'new', ids: b.ids, attentionMask: b.attentionMask, targets: b.targets, latent: rows(m, scale) };
    };
    const r = await compare({ name: 'slm', micro: [batch(0), batch(1)], broken: [batch(0, 1.05), batch(1, 1.05)], pool }, model, 'slm');
    // the increments are a small part of the output, so 5% of them is ~20x the loss tolerance
    expect(r.brokenLoss).toBeGreaterThan(10 * LOSS_RTOL);
    expect(r.brokenWeight).toBeGreaterThan(10 * WEIGHT_RTOL);
    console.log(`slm reference: worst ${r.loss.toExponential(1)} (losses, norms), ${r.weight.toExponential(1)} (weights); retrieval weights 5% off: ${r.brokenLoss.toExponential(1)}, ${r.brokenWeight.toExponential(1)}`);
  });

  it(`self-replay: ${STEPS} steps on a new-task micro-batch and one of the base's answers; the answers' prompts trained on too fail`, async () => {
    setNumThreads(1);
    const { model, tokenizer } = loadRef();
    const answers = await selfReplayRecords(model, tokenizer, data.flashbacks.slice(0, 3), 24, { resume: false, write: false });
    const fresh = sftBatch(tokenizer, data.newTrain.slice(0, 3), 96);
    const replayed = sftBatch(tokenizer, answers as never, 96);
    // broken: the prompt tokens of the answers become targets too (the loss is on the answers alone)
    const withPrompt = sftBatch(tokenizer, answers as never, 96, { promptLoss: true });
    const first: MicroBatch = { kind: 'new', ids: fresh.ids, attentionMask: fresh.attentionMask, targets: fresh.targets };
    const r = await compare(
      { name: 'self-replay', micro: [first, { kind: 'new', ...replayed }], broken: [first, { kind: 'new', ids: withPrompt.ids, attentionMask: withPrompt.attentionMask, targets: withPrompt.targets }] },
      model,
      'self-replay',
    );
    expect(r.brokenLoss).toBeGreaterThan(100 * LOSS_RTOL);
    expect(r.brokenWeight).toBeGreaterThan(100 * WEIGHT_RTOL);
    console.log(`self-replay reference: worst ${r.loss.toExponential(1)} (losses, norms), ${r.weight.toExponential(1)} (weights); prompt tokens as targets: ${r.brokenLoss.toExponential(1)}, ${r.brokenWeight.toExponential(1)}`);
  });

  it("self-replay's answers are transformers' greedy generate of the base; a base without its last MLP answers otherwise", async () => {
    // The shipped demo base (pretrained, so its answers are text rather than a random model's noise).
    const base = join(root, 'models', 'jfa-base');
    const model = LlamaModel.load(base);
    const tokenizer = Tokenizer.fromDir(base);
    const prompts = suite.flashbacks.slice(0, 6);
    const N = 24;
    const ours = await selfReplayRecords(model, tokenizer, prompts, N, { resume: false, write: false });
    const ids = prompts.map((p) => tokenizer.encode('prompt' in p ? p.prompt : `${p.instruction}\n${p.input}\n`));
    const eos = tokenizer.eosTokenId!;
    const ref = python<{ same: number[][]; off: number[][] }>(`
import json, torch
from transformers import AutoModelForCausalLM
torch.set_num_threads(1)
m = AutoModelForCausalLM.from_pretrained(${JSON.stringify(base)}, dtype=torch.float32).eval()
def greedy():
    out = []
    for ids in ${JSON.stringify(ids)}:
        with torch.no_grad():
            g = m.generate(torch.tensor([ids]), max_new_tokens=${N}, do_sample=False, eos_token_id=${eos}, pad_token_id=0)
        out.append(g[0, len(ids):].tolist())
    return out
same = greedy()
with torch.no_grad():
    m.model.layers[-1].mlp.down_proj.weight.zero_()
print(json.dumps({"same": same, "off": greedy()}))
`);
    const text = (row: number[]) => tokenizer.decode(row.includes(eos) ? row.slice(0, row.indexOf(eos)) : row);
    expect(ours.map((r) => r.output)).toEqual(ref.same.map(text));
    expect(ours.some((r) => r.output.length > 0)).toBe(true);
    expect(ours.map((r) => r.output)).not.toEqual(ref.off.map(text));
  });
});
