// The regularising baselines added as presets: ewc (a Fisher-weighted penalty on the adapters' weight
// change, the Fisher estimated once at the base on the flashback prompts and kept in the run folder),
// o-lora (this round's A kept orthogonal to the earlier rounds') and pace (multiplicative noise on the
// adapters' outputs, with a consistency loss between two perturbed passes). Each trains, resumes
// bit-identically, refuses what it cannot do before any training work, and agrees with a PyTorch
// reference (transformers + PEFT + torch.optim, scripts/reference/reg_step.py): losses, penalties,
// gradient norms and the adapter after a few steps, and EWC's Fisher itself. Each comparison is run
// once more with its weight 5% off, and must then disagree: the tolerances can see it.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { sftBatch } from '../lib/jfa/examples.js';
import { METHOD_PRESETS } from '../lib/jfa/methods.js';
import { EWC_FISHER_FILE, REGULARIZER_DEFAULTS } from '../lib/jfa/regularizers.js';
import { type MicroBatch, type StepPenalties, type StepResult, trainStep } from '../lib/jfa/step.js';
import { train } from '../lib/jfa/trainer.js';
import { LlamaModel, modelHandle } from '../lib/model/llama.js';
import { loadSafetensors, saveSafetensors } from '../lib/model/safetensors.js';
import { Tokenizer } from '../lib/model/tokenizer.js';
import { AdamW, cosineWithWarmup } from '../lib/optim.js';
import { setNumThreads } from '../lib/runtime.js';
import { randn, Tensor, tensor } from '../lib/tensor.js';
import { createMethodModels, relDiff, root, tinyJfaRun, venvPython } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'jfa-methods-reg-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const modelDir = join(dir, 'base');
const { suite, options } = tinyJfaRun();
const data = { newTrain: suite.newTrain.slice(0, 16), flashbacks: suite.flashbacks.slice(0, 6) };
const load = () => ({ model: LlamaModel.load(modelDir), tokenizer: Tokenizer.fromDir(modelDir) });
const file = (...p: string[]) => readFileSync(join(dir, ...p));
const adapterOf = (run: string, checkpoint = false) => file(run, ...(checkpoint ? ['checkpoint'] : []), 'adapter', 'adapter_model.safetensors');

// The reference comparisons use test/20's shape (createMethodModels says why).
const refDir = join(dir, 'ref-base');
const loadRef = () => ({ model: LlamaModel.load(refDir), tokenizer: Tokenizer.fromDir(refDir) });

beforeAll(() => createMethodModels(modelDir, refDir, suite.newTrain));

describe('ewc, o-lora and pace train as presets', () => {
  it('ewc: the Fisher is estimated once and kept in the run folder; the penalty applies; a paused run resumes bit-identically', async () => {
    expect(METHOD_PRESETS.ewc).toMatchObject({ flashbacks: false, latent: false, pcgrad: false, ewc: true });
    const penalties: number[] = [];
    const a = load();
    await train(a.model, a.tokenizer, data, { ...options, method: 'ewc', ewcLambda: 1e4, outDir: join(dir, 'ewc-full'), onStep: (p) => penalties.push(p.penalty) });
    const fisher = loadSafetensors(join(dir, 'ewc-full', EWC_FISHER_FILE)).tensors;
    // one tensor per adapted layer (every linear of the 2 layers), of the base weight's shape
    expect(Object.keys(fisher).length).toBe(14);
    expect(fisher['base_model.model.model.layers.0.self_attn.q_proj.fisher']!.shape).toEqual([32, 32]);
    expect(penalties[0]).toBe(0); // B starts at zero: no weight change yet
    expect(penalties.slice(1).every((p) => p > 0)).toBe(true);

    const b = load();
    await train(b.model, b.tokenizer, data, { ...options, method: 'ewc', ewcLambda: 1e4, outDir: join(dir, 'ewc-resumed'), pauseAfter: 2 });
    const kept = join(dir, 'ewc-resumed', EWC_FISHER_FILE);
    const written = statSync(kept).mtimeMs;
    const c = load();
    await train(c.model, c.tokenizer, data, { ...options, method: 'ewc', ewcLambda: 1e4, outDir: join(dir, 'ewc-resumed'), resume: true });
    expect(statSync(kept).mtimeMs).toBe(written); // read back, not estimated again
    expect(adapterOf('ewc-resumed').equals(adapterOf('ewc-full'))).toBe(true);
    // and the penalty changes the run: plain SFT ends elsewhere
    const d = load();
    await train(d.model, d.tokenizer, data, { ...options, method: 'sft', outDir: join(dir, 'sft') });
    expect(adapterOf('sft').equals(adapterOf('ewc-full'))).toBe(false);
  });

  it('o-lora: a first round is plain SFT; a continued round is penalised against the earlier A and resumes bit-identically', async () => {
    const a = load();
    await train(a.model, a.tokenizer, data, { ...options, method: 'o-lora', outDir: join(dir, 'olora-1') });
    if (!existsSync(join(dir, 'sft'))) throw new Error('the ewc test trains the sft run this one compares with');
    expect(adapterOf('olora-1').equals(adapterOf('sft'))).toBe(true);

    const round2 = { newTrain: suite.newTrain.slice(16, 32), flashbacks: data.flashbacks };
    const penalties: number[] = [];
    const b = load();
    await train(b.model, b.tokenizer, round2, { ...options, method: 'o-lora', oloraLambda: 50, continueFrom: join(dir, 'olora-1'), outDir: join(dir, 'olora-2'), onStep: (p) => penalties.push(p.penalty) });
    expect(penalties.every((p) => p > 0)).toBe(true); // A starts random: never orthogonal to round 1's
    const c = load();
    await train(c.model, c.tokenizer, round2, { ...options, method: 'o-lora', oloraLambda: 50, continueFrom: join(dir, 'olora-1'), outDir: join(dir, 'olora-2r'), pauseAfter: 2 });
    const d = load();
    await train(d.model, d.tokenizer, round2, { ...options, method: 'o-lora', oloraLambda: 50, continueFrom: join(dir, 'olora-1'), outDir: join(dir, 'olora-2r'), resume: true });
    expect(adapterOf('olora-2r').equals(adapterOf('olora-2'))).toBe(true);
  });

  it('pace: noise and consistency in training only, reproducible from the seed; a paused run resumes bit-identically', async () => {
    const penalties: number[] = [];
    const a = load();
    await train(a.model, a.tokenizer, data, { ...options, method: 'pace', outDir: join(dir, 'pace-full'), onStep: (p) => penalties.push(p.penalty) });
    expect(penalties[0]).toBe(0); // B starts at zero: both passes are the base
    expect(penalties.slice(1).every((p) => p > 0)).toBe(true);
    const b = load();
    await train(b.model, b.tokenizer, data, { ...options, method: 'pace', outDir: join(dir, 'pace-resumed'), pauseAfter: 3 });
    const c = load();
    await train(c.model, c.tokenizer, data, { ...options, method: 'pace', outDir: join(dir, 'pace-resumed'), resume: true });
    expect(adapterOf('pace-resumed').equals(adapterOf('pace-full'))).toBe(true);
    expect(adapterOf('pace-full').equals(adapterOf('sft'))).toBe(false);
    // Serving is unperturbed: the trained adapter's logits are the same on every call.
    const d = load();
    d.model.loadAdapter(join(dir, 'pace-full', 'adapter'));
    const batch = sftBatch(d.tokenizer, data.newTrain.slice(0, 2), 64);
    const once = d.model.logits(batch.ids, { attentionMask: batch.attentionMask }).toTypedArray() as Float32Array;
    const again = d.model.logits(batch.ids, { attentionMask: batch.attentionMask }).toTypedArray() as Float32Array;
    expect(relDiff(once, again)).toBe(0);
  });

  it('refuses what the methods cannot do, before any training work', async () => {
    const { model, tokenizer } = load();
    const refuse = (d: object, o: object, message: string) => expect(train(model, tokenizer, { newTrain: data.newTrain, ...d }, { ...options, ...o } as never)).rejects.toThrow(message);
    await refuse({}, { method: 'ewc' }, "train: method 'ewc' needs flashbacks: the prompts its Fisher is estimated on (data.flashbacks, --flashbacks)");
    await refuse(data, { method: 'ewc', ewcLambda: -1 }, 'train: ewcLambda must be a finite number >= 0, got -1');
    await refuse(data, { method: 'ewc', ewcSamples: 0 }, 'train: ewcSamples must be a positive integer, got 0');
    await refuse(data, { method: 'o-lora', oloraLambda: Number.NaN }, 'train: oloraLambda must be a finite number >= 0, got NaN');
    await refuse(data, { method: 'pace', paceLambda: -0.5 }, 'train: paceLambda must be a finite number >= 0, got -0.5');
    await refuse(data, { method: 'pace', paceSigma: 0 }, 'train: paceSigma must be > 0');
    await refuse(data, { method: 'sft', ewcLambda: 1 }, "train: ewcLambda applies only to method 'ewc' (method 'sft')");
    await refuse(data, { method: 'ewc', paceSigma: 0.1, paceLambda: 1 }, "train: paceSigma, paceLambda apply only to method 'pace' (method 'ewc')");
    await refuse(data, { method: 'pace', oloraLambda: 1 }, "train: oloraLambda applies only to method 'o-lora' (method 'pace')");
    // A resumed ewc run whose Fisher file is gone is an incomplete checkpoint, not a silent re-estimate.
    const out = join(dir, 'ewc-lost');
    const b = load();
    await train(b.model, b.tokenizer, data, { ...options, method: 'ewc', outDir: out, pauseAfter: 1 });
    rmSync(join(out, EWC_FISHER_FILE));
    const c = load();
    await expect(train(c.model, c.tokenizer, data, { ...options, method: 'ewc', outDir: out, resume: true })).rejects.toThrow(`${EWC_FISHER_FILE} (the Fisher this run's EWC penalty weighs with) is missing`);
    expect(model.hasLora).toBe(false); // nothing was set up for any refused run
    expect(REGULARIZER_DEFAULTS.ewcLambda).toBeGreaterThan(0);
  });
});

// Tolerances as test/20's and test/46's step reference (fp32 both sides, sums in other orders).
const STEPS = 5;
const LOSS_RTOL = 2e-5;
const WEIGHT_RTOL = 2e-5;
const OPTIM = { lr: 5e-3, betas: [0.9, 0.999] as [number, number], eps: 1e-6, weight_decay: 0.01 };
const MAX_GRAD_NORM = 0.3;
const lrAt = (step: number) => OPTIM.lr * cosineWithWarmup(step, 2, STEPS);
const seedAt = (step: number) => 1000 + step;

function small(shape: number[], seed: number, std = 0.05): Tensor {
  const r = randn(shape, { seed });
  const values = (r.toTypedArray() as Float32Array).map((x) => x * std);
  r.dispose();
  return tensor(values, shape);
}

interface RefStep {
  sft: number;
  penalty: number;
  gradNorm: number;
}

/**
 * `STEPS` steps of SFT on two micro-batches with `penalties`, here and in the reference (as given,
 * and with the weight `broken` gives); returns the worst differences.
 */
async function compare(name: string, model: LlamaModel, micro: MicroBatch[], penalties: StepPenalties, ref: Record<string, unknown>, broken: Record<string, unknown>, fisherCheck?: Record<string, unknown>) {
  const caseDir = join(dir, `ref-${name}`);
  const byName = model.loraParameters();
  model.saveAdapter(join(caseDir, 'adapter'));
  const t: Record<string, Tensor> = {};
  micro.forEach((mb, i) => Object.assign(t, { [`mb${i}.ids`]: mb.ids, [`mb${i}.mask`]: mb.attentionMask, [`mb${i}.targets`]: mb.targets! }));
  saveSafetensors(join(caseDir, 'batches.safetensors'), t);

  const optimizer = new AdamW(Object.values(byName), { lr: OPTIM.lr, betas: OPTIM.betas, eps: OPTIM.eps, weightDecay: OPTIM.weight_decay });
  const ours: StepResult[] = [];
  for (let s = 0; s < STEPS; s++) {
    optimizer.lr = lrAt(s);
    ours.push(await trainStep(model, optimizer, micro, { method: 'sft', maxGradNorm: MAX_GRAD_NORM, seed: seedAt(s), penalties }));
  }
  optimizer.dispose();

  const job = (extra: Record<string, unknown>, save: string) => ({
    threads: 1, model: refDir, adapter: join(caseDir, 'adapter'), max_grad_norm: MAX_GRAD_NORM, ...OPTIM,
    batches: join(caseDir, 'batches.safetensors'), count: micro.length, steps: Array.from({ length: STEPS }, (_, s) => ({ lr: lrAt(s), seed: seedAt(s) })),
    save: join(caseDir, save), ...extra,
  });
  const run = (j: object) => {
    const r = spawnSync(venvPython, [join(root, 'scripts', 'reference', 'reg_step.py')], { input: JSON.stringify(j), encoding: 'utf8', timeout: 120_000 });
    if (r.status !== 0) throw new Error(`reference failed (${r.status}): ${r.stderr}`);
    return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as RefStep);
  };
  const theirs = run(job({ ...ref, ...(fisherCheck ? { fisher: fisherCheck } : {}) }, 'ref.safetensors'));
  const off = run(job(broken, 'broken.safetensors'));
  let loss = 0;
  for (let s = 0; s < STEPS; s++) {
    const [a, b] = [ours[s]!, theirs[s]!];
    for (const k of ['sft', 'penalty', 'gradNorm'] as const) {
      const scale = Math.max(Math.abs(b[k]), 1e-12);
      expect(Math.abs(a[k] - b[k]), `${name} step ${s} ${k}: ours ${a[k]} ref ${b[k]}`).toBeLessThanOrEqual(LOSS_RTOL * scale + (b[k] === 0 ? 1e-12 : 0));
      if (b[k] !== 0) loss = Math.max(loss, Math.abs(a[k] - b[k]) / scale);
    }
  }
  const mine = model.loraParameters();
  const refW = loadSafetensors(join(caseDir, 'ref.safetensors')).tensors;
  const offW = loadSafetensors(join(caseDir, 'broken.safetensors')).tensors;
  expect(Object.keys(refW).sort()).toEqual(Object.keys(mine).sort());
  let weight = 0;
  let brokenWeight = 0;
  for (const [key, p] of Object.entries(mine)) {
    const a = p.toTypedArray() as Float32Array;
    const d = relDiff(a, refW[key]!.toTypedArray() as Float32Array);
    expect(d, `${name} ${key}: max |diff| / max |ref|`).toBeLessThanOrEqual(WEIGHT_RTOL);
    weight = Math.max(weight, d);
    brokenWeight = Math.max(brokenWeight, relDiff(a, offW[key]!.toTypedArray() as Float32Array));
  }
  const brokenLoss = Math.max(...off.map((b, s) => Math.max(Math.abs(b.gradNorm - ours[s]!.gradNorm) / ours[s]!.gradNorm, Math.abs(b.sft - ours[s]!.sft) / ours[s]!.sft)));
  return { loss, weight, brokenLoss, brokenWeight, ours };
}

/** The reference model with a fresh adapter whose B is non-zero (a trained-looking start), and two new-task micro-batches. */
function start(): { model: LlamaModel; micro: MicroBatch[] } {
  const { model, tokenizer } = loadRef();
  model.addLora({ seed: 4 });
  Object.entries(model.loraParameters()).forEach(([key, p], i) => key.endsWith('lora_B.weight') && p.copyFrom(small(p.shape, 100 + i)));
  const micro = [0, 1].map((m): MicroBatch => {
    const b = sftBatch(tokenizer, data.newTrain.slice(m * 3, m * 3 + 3), 96);
    return { kind: 'new', ids: b.ids, attentionMask: b.attentionMask, targets: b.targets };
  });
  return { model, micro };
}

const modules = (model: LlamaModel) => Object.keys(model.loraParameters()).filter((k) => k.endsWith('.lora_A.weight')).map((k) => k.slice(0, -'.lora_A.weight'.length));

describe('ewc, o-lora and pace agree with transformers + PEFT + torch.optim', () => {
  it(`ewc: the Fisher, and ${STEPS} steps of SFT + lambda x sum F (sBA)^2 (losses, penalties, gradient norms, adapter); lambda 5% off fails`, async () => {
    setNumThreads(1);
    const { model, micro } = start();
    const { tokenizer } = loadRef();
    // The Fisher on prompts with answers (the run samples them; here they are given, on both sides).
    const fb = sftBatch(tokenizer, data.newTrain.slice(6, 10), 96);
    const fisher = (await modelHandle(model).fisherDiagonalAsync(fb.ids.handle, { attentionMask: fb.attentionMask.handle, targets: fb.targets.handle })).map((h) => new Tensor(h));
    saveSafetensors(join(dir, 'ewc-fisher-in.safetensors'), { ids: fb.ids, mask: fb.attentionMask, targets: fb.targets });
    const names = modules(model);
    saveSafetensors(join(dir, 'ewc-fisher-ours.safetensors'), Object.fromEntries(names.map((m, i) => [`${m}.fisher`, fisher[i]!])));
    // lambda such that the penalty's gradient is a visible share of the step's, without drowning the
    // cross-entropy's (clipping and Adam would then hide a 5% change of lambda)
    const lambda = 1;
    const fisherFile = join(dir, 'ewc-fisher-ours.safetensors');
    const r = await compare('ewc', model, micro, { ewc: { lambda, fisher } }, { ewc: { lambda, fisher: fisherFile } }, { ewc: { lambda: lambda * 1.05, fisher: fisherFile } }, {
      file: join(dir, 'ewc-fisher-in.safetensors'),
      save: join(dir, 'ewc-fisher-ref.safetensors'),
    });
    const refFisher = loadSafetensors(join(dir, 'ewc-fisher-ref.safetensors')).tensors;
    let fisherErr = 0;
    names.forEach((m, i) => (fisherErr = Math.max(fisherErr, relDiff(fisher[i]!.toTypedArray() as Float32Array, refFisher[`${m}.fisher`]!.toTypedArray() as Float32Array))));
    expect(fisherErr).toBeLessThanOrEqual(1e-4);
    expect(r.ours.slice(1).every((s) => s.penalty > 0)).toBe(true);
    expect(r.brokenLoss).toBeGreaterThan(10 * LOSS_RTOL);
    expect(r.brokenWeight).toBeGreaterThan(10 * WEIGHT_RTOL);
    console.log(`ewc reference: Fisher ${fisherErr.toExponential(1)}; worst ${r.loss.toExponential(1)} (losses, penalties, norms), ${r.weight.toExponential(1)} (weights); lambda 5% off: ${r.brokenLoss.toExponential(1)}, ${r.brokenWeight.toExponential(1)}; penalty/sft at the last step ${(r.ours.at(-1)!.penalty / r.ours.at(-1)!.sft).toFixed(3)}`);
  }, 180_000); // two reference runs in Python (the method, and lambda 5% off)

  it(`o-lora: ${STEPS} steps of SFT + lambda x sum ||A A_old^T||^2 against earlier rounds' A (6 rows); lambda 5% off fails`, async () => {
    setNumThreads(1);
    const { model, micro } = start();
    const names = modules(model);
    const params = model.loraParameters();
    // earlier rounds' A stacked by rows (6 of them, as the trainer reads them from the rounds' adapters)
    const previous = names.map((m, i) => small([6, params[`${m}.lora_A.weight`]!.shape[1]!], 300 + i, 0.1));
    const prevFile = join(dir, 'olora-previous.safetensors');
    saveSafetensors(prevFile, Object.fromEntries(names.map((m, i) => [m, previous[i]!])));
    const lambda = 2;
    const r = await compare('o-lora', model, micro, { olora: { lambda, previous } }, { olora: { lambda, previous: prevFile } }, { olora: { lambda: lambda * 1.05, previous: prevFile } });
    expect(r.ours.every((s) => s.penalty > 0)).toBe(true);
    expect(r.brokenLoss).toBeGreaterThan(10 * LOSS_RTOL);
    expect(r.brokenWeight).toBeGreaterThan(10 * WEIGHT_RTOL);
    console.log(`o-lora reference: worst ${r.loss.toExponential(1)} (losses, penalties, norms), ${r.weight.toExponential(1)} (weights); lambda 5% off: ${r.brokenLoss.toExponential(1)}, ${r.brokenWeight.toExponential(1)}`);
  }, 180_000); // two reference runs in Python (the method, and lambda 5% off)

  it(`pace: ${STEPS} steps with the same noise drawn on both sides (seeded generators) and the consistency loss; lambda 5% off fails`, async () => {
    setNumThreads(1);
    const { model, micro } = start();
    const pace = { sigma: 0.5, lambda: 20 };
    const r = await compare('pace', model, micro, { pace }, { pace }, { pace: { ...pace, lambda: pace.lambda * 1.05 } });
    expect(r.ours.every((s) => s.penalty > 0)).toBe(true);
    expect(r.brokenLoss).toBeGreaterThan(10 * LOSS_RTOL);
    // the consistency's gradient is a small share of the step's here: 5% of it moves the weights ~13x the tolerance (measured 2.6e-4)
    expect(r.brokenWeight).toBeGreaterThan(5 * WEIGHT_RTOL);
    console.log(`pace reference: worst ${r.loss.toExponential(1)} (losses, penalties, norms), ${r.weight.toExponential(1)} (weights); lambda 5% off: ${r.brokenLoss.toExponential(1)}, ${r.brokenWeight.toExponential(1)}`);
  }, 180_000); // two reference runs in Python (the method, and lambda 5% off)
});
