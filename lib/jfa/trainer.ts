// The training loop: methods sft (plain LoRA), replay (SFT on new tasks mixed with old-task data),
// flashback (SFT + alpha x divergence on flashbacks) and jfa (flashbacks + latent tasks + PCGrad),
// with the ablations as switches. Data order, PCGrad orders and retrieval depend only on the seed,
// so a run resumed from a checkpoint ends bit-identical to an uninterrupted one on the CPU.
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';

import { createRng, hashString } from '../data/rng.js';
import { type FlashbackRecord, type InstanceRecord } from '../data/records.js';
import { type KlKind, type Reduction } from '../kernels.js';
import { type LlamaModel, type LoraConfig } from '../model/llama.js';
import { loadSafetensors, saveSafetensors } from '../model/safetensors.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { AdamW, cosineWithWarmup } from '../optim.js';
import { type Tensor, tensor } from '../tensor.js';
import { readJson, writeFileAtomic } from '../util/files.js';
import { promptBatch, sftBatch } from './examples.js';
import { embedRecords, type LatentOptions, LatentTasks } from './latent.js';
import { LATENT_MODES, LATENT_POOL_FILE, type LatentMode, LatentPool } from './pool.js';
import { type Method, type MicroBatch, trainStep } from './step.js';

export type TrainMethod = Method | 'replay';

export interface TrainOptions {
  method: TrainMethod;
  /** jfa only: use latent tasks (default true; false is the `--no-latent` ablation) */
  latent?: boolean;
  /** combine micro-batch gradients with PCGrad (default: true for jfa; false is `--no-pcgrad`) */
  pcgrad?: boolean;
  epochs?: number;
  /** samples per micro-batch */
  microBatch?: number;
  /** new-task micro-batches per optimizer step */
  accumulation?: number;
  /** flashback micro-batches per optimizer step (flashback, jfa) */
  flashbackMicroBatches?: number;
  maxTokens?: number;
  lr?: number;
  warmupRatio?: number;
  weightDecay?: number;
  maxGradNorm?: number;
  alpha?: number;
  kl?: KlKind;
  reduction?: Reduction;
  lora?: LoraConfig;
  latentOptions?: LatentOptions;
  /** layer whose o_proj carries the latent tasks (default: the middle one) */
  latentLayer?: number;
  /**
   * jfa with latent tasks: how the adapter is meant to serve. 'retrieve' (default): with the pool,
   * retrieved per prompt as in training (`jfa eval` applies adapter/latent_pool.safetensors);
   * 'drop': alone, so training leaves the increments out of some micro-batches (latentDropout).
   * The pool file is saved in both modes and records the mode; eval uses a 'drop' pool only when asked.
   */
  latentMode?: LatentMode;
  /**
   * jfa with latent tasks: the probability that a micro-batch runs without its increments (default
   * 0.5 in 'drop' mode, 0 in 'retrieve'). Drawn per micro-batch from the seed and the step, so a
   * resumed run draws the same.
   */
  latentDropout?: number;
  /**
   * jfa with latent tasks: weight of an extra SFT loss computed with the increments off, on the
   * new-task micro-batches that carry them (a dropped one is plain SFT already). Default 0.
   */
  plainSftWeight?: number;
  seed?: number;
  /** where checkpoints, metrics.jsonl and the final adapter go */
  outDir?: string;
  checkpointEvery?: number;
  resume?: boolean;
  /** keep the reference's logits (or, when those would pass 1 GiB, its final hidden states) of each flashback micro-batch instead of recomputing them (default true, within 1 GiB) */
  cacheReference?: boolean;
  /** stop after this many steps (the run stays resumable) */
  maxSteps?: number;
  onStep?: (p: StepProgress) => void;
}

export interface TrainData {
  newTrain: InstanceRecord[];
  flashbacks?: FlashbackRecord[];
  /** old-task training data, for the replay baseline only */
  replay?: InstanceRecord[];
}

export interface StepProgress {
  step: number;
  totalSteps: number;
  sft: number;
  /** the plain (latent off) SFT loss, where plainSftWeight adds it; else 0 */
  plainSft: number;
  divergence: number;
  lr: number;
  gradNorm: number;
  conflicts: number;
  tokens: number;
  tokensPerSecond: number;
  elapsedMs: number;
}

export interface TrainResult {
  steps: number;
  totalSteps: number;
  stoppedEarly: boolean;
  tokens: number;
  elapsedMs: number;
  /** jfa with latent tasks: the trained pool's tasks (the same as pool.tasks) */
  latent?: LatentTasks;
  /** jfa with latent tasks: the trained pool, attached to the model; saved as adapter/latent_pool.safetensors */
  pool?: LatentPool;
}

interface Retrieved {
  indices: BigInt64Array;
  weights: Float32Array;
}

const CHECKPOINT = 'checkpoint';
/** A checkpoint's retrieved tasks per record (the pool itself is its LATENT_POOL_FILE). */
const RETRIEVAL = 'retrieval.safetensors';
const REFERENCE_CACHE_BYTES = 1 << 30;

/**
 * What of the frozen reference to keep for `tokens` flashback tokens in all: its logits when they
 * fit in 1 GiB (the reference then costs nothing per step), else its final hidden states when those
 * fit (the LM head still runs on them), else nothing (recomputed every step).
 */
export function referenceKeeping(model: LlamaModel, tokens: number): 'logits' | 'hidden' | undefined {
  const { vocabSize, hiddenSize } = model.config;
  if (tokens * vocabSize * 4 <= REFERENCE_CACHE_BYTES) return 'logits';
  if (tokens * hiddenSize * 4 <= REFERENCE_CACHE_BYTES) return 'hidden';
  return undefined;
}

/** The reference's logits or final hidden states (adapters and latent tasks off) for these ids. */
export function keepReference(model: LlamaModel, kind: 'logits' | 'hidden', ids: Tensor, attentionMask: Tensor): Tensor {
  const options = { attentionMask, adapters: false };
  return kind === 'logits' ? model.logits(ids, options) : model.hiddenStates(ids, options);
}

/** The latent-task options, checked: RangeErrors for values out of range or options that cannot apply. */
function latentSettings(o: TrainOptions, useLatent: boolean): { mode: LatentMode; dropout: number; plainSftWeight: number } {
  const given = (['latentMode', 'latentDropout', 'plainSftWeight'] as const).filter((k) => o[k] !== undefined);
  if (!useLatent && given.length)
    throw new RangeError(`train: ${given.join(', ')} appl${given.length > 1 ? 'y' : 'ies'} only to method 'jfa' with latent tasks (method '${o.method}'${o.latent === false ? ', latent off' : ''})`);
  const mode = o.latentMode ?? 'retrieve';
  if (!(LATENT_MODES as readonly string[]).includes(mode)) throw new RangeError(`train: latentMode must be ${LATENT_MODES.join(' or ')}, got ${JSON.stringify(o.latentMode)}`);
  const dropout = o.latentDropout ?? (mode === 'drop' ? 0.5 : 0);
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout <= 1)) throw new RangeError(`train: latentDropout must be a probability in [0, 1], got ${dropout}`);
  const plainSftWeight = o.plainSftWeight ?? 0;
  if (typeof plainSftWeight !== 'number' || !(plainSftWeight >= 0) || !Number.isFinite(plainSftWeight))
    throw new RangeError(`train: plainSftWeight must be a finite number >= 0, got ${plainSftWeight}`);
  return { mode, dropout, plainSftWeight };
}

export async function train(model: LlamaModel, tokenizer: Tokenizer, data: TrainData, o: TrainOptions): Promise<TrainResult> {
  const method: Method = o.method === 'replay' ? 'sft' : o.method;
  const seed = o.seed ?? 0;
  const microBatch = o.microBatch ?? 4;
  const accumulation = o.accumulation ?? 4;
  const flashbackMicro = method === 'sft' ? 0 : (o.flashbackMicroBatches ?? 1);
  const maxTokens = o.maxTokens ?? 256;
  const useLatent = method === 'jfa' && (o.latent ?? true);
  const latentRun = latentSettings(o, useLatent);
  const usePcgrad = o.pcgrad ?? method === 'jfa';
  const flashbacks = data.flashbacks ?? [];
  if (data.newTrain.length === 0) throw new RangeError('train: no new-task records');
  if (flashbackMicro > 0 && flashbacks.length === 0) throw new RangeError(`train: method '${o.method}' needs flashbacks`);
  const stream = o.method === 'replay' ? [...data.newTrain, ...(data.replay ?? [])] : data.newTrain;
  if (o.method === 'replay' && !data.replay?.length) throw new RangeError("train: method 'replay' needs old-task training data");

  const perStep = microBatch * accumulation;
  const stepsPerEpoch = Math.ceil(stream.length / perStep);
  const totalSteps = stepsPerEpoch * (o.epochs ?? 1);
  const warmup = Math.round(totalSteps * (o.warmupRatio ?? 0.1));
  const checkpointDir = o.outDir && join(o.outDir, CHECKPOINT);
  const resuming = Boolean(o.resume && checkpointDir && (existsSync(checkpointDir) || existsSync(`${checkpointDir}.old`)));
  if (o.resume && !resuming) throw new Error(`train: nothing to resume in ${o.outDir}`);
  const fromDir = resuming ? (existsSync(checkpointDir!) ? checkpointDir! : `${checkpointDir}.old`) : undefined;
  const latentLayer = o.latentLayer ?? Math.floor(model.config.numLayers / 2);
  // What a checkpoint must share with this run to continue it.
  const state = { totalSteps, method: o.method, ...(useLatent ? { latent: { ...latentRun, layer: latentLayer, options: o.latentOptions ?? {} } } : {}) };
  let step = 0;
  if (fromDir) {
    const { step: savedStep, ...savedState } = readJson<{ step: number } & typeof state>(join(fromDir, 'state.json'));
    if (JSON.stringify(savedState) !== JSON.stringify(state))
      throw new Error(`train: ${fromDir} is from another run (${JSON.stringify(savedState)}; now ${JSON.stringify(state)})`);
    step = savedStep;
  }

  // Adapters: fresh, or the checkpoint's.
  if (fromDir) model.loadAdapter(join(fromDir, 'adapter'));
  else model.addLora({ ...o.lora, seed: o.lora?.seed ?? seed });
  const params = Object.values(model.loraParameters());

  // Latent tasks: keys, groups and retrieval fixed before training (or restored).
  let pool: LatentPool | undefined;
  let retrievedNew: Retrieved | undefined;
  let retrievedFlash: Retrieved | undefined;
  if (useLatent) {
    if (fromDir) {
      pool = LatentPool.load(join(fromDir, LATENT_POOL_FILE), model);
      const saved = loadSafetensors(join(fromDir, RETRIEVAL)).tensors;
      retrievedNew = { indices: saved.newIndices!.toTypedArray() as BigInt64Array, weights: saved.newWeights!.toTypedArray() as Float32Array };
      retrievedFlash = { indices: saved.flashIndices!.toTypedArray() as BigInt64Array, weights: saved.flashWeights!.toTypedArray() as Float32Array };
      Object.values(saved).forEach((t) => t.dispose());
    } else {
      const cfg = model.config;
      const tasks = new LatentTasks(cfg.hiddenSize, cfg.numHeads * cfg.headDim, cfg.hiddenSize, { seed, ...o.latentOptions });
      const embNew = embedRecords(model, tokenizer, stream, maxTokens);
      const embFlash = embedRecords(model, tokenizer, flashbacks, maxTokens);
      tasks.fit(concat(embNew, embFlash), seed);
      retrievedNew = toArrays(tasks.retrieve(embNew));
      retrievedFlash = toArrays(tasks.retrieve(embFlash));
      pool = new LatentPool(tasks, latentLayer, latentRun.mode, maxTokens);
      model.setLatentPool(pool.layer, tasks.A, tasks.B);
    }
    params.push(pool.tasks.A, pool.tasks.B);
  }
  const latent = pool?.tasks;

  const optimizer = new AdamW(params, { lr: o.lr ?? 1e-4, weightDecay: o.weightDecay ?? 0.0 });
  if (fromDir) {
    const saved = loadSafetensors(join(fromDir, 'optimizer.safetensors')).tensors;
    params.forEach((_, i) => {
      optimizer.expAvg[i]!.copyFrom(saved[`exp_avg.${i}`]!);
      optimizer.expAvgSq[i]!.copyFrom(saved[`exp_avg_sq.${i}`]!);
    });
    optimizer.steps.copyFrom(saved.steps!);
    optimizer.stepCount = step;
    Object.values(saved).forEach((t) => t.dispose());
  }

  if (o.outDir) mkdirSync(o.outDir, { recursive: true });
  const metricsFile = o.outDir && join(o.outDir, 'metrics.jsonl');
  const started = performance.now();
  let tokens = 0;
  const order = (epoch: number) => createRng(hashString(`${seed}:order:${epoch}`)).shuffle(stream.map((_, i) => i));
  let cachedEpoch = -1;
  let epochOrder: number[] = [];
  const stopAt = Math.min(totalSteps, o.maxSteps ?? totalSteps);

  const flashbackBatches: number[][] = [];
  if (flashbackMicro > 0) {
    const shuffled = createRng(hashString(`${seed}:flash`)).shuffle(flashbacks.map((_, i) => i));
    for (let i = 0; i < shuffled.length; i += microBatch) flashbackBatches.push(shuffled.slice(i, i + microBatch));
  }
  const keep = (o.cacheReference ?? true) ? referenceKeeping(model, flashbacks.length * maxTokens) : undefined;
  const referenceCache = new Map<number, Tensor>();

  try {
    while (step < stopAt) {
      const epoch = Math.floor(step / stepsPerEpoch);
      if (epoch !== cachedEpoch) {
        epochOrder = order(epoch);
        cachedEpoch = epoch;
      }
      const start = (step % stepsPerEpoch) * perStep;
      const micro: MicroBatch[] = [];
      // Latent dropout: one draw per micro-batch, in order, from this step's own stream.
      const dropRng = latentRun.dropout > 0 ? createRng(hashString(`${seed}:latent-dropout:${step}`)) : undefined;
      const increments = (r: Retrieved | undefined, rows: number[]) =>
        r && !(dropRng && dropRng.next() < latentRun.dropout) ? select(r, rows, latent!.k) : undefined;
      for (let m = 0; m < accumulation; m++) {
        const idx = epochOrder.slice(start + m * microBatch, start + (m + 1) * microBatch);
        if (idx.length === 0) break;
        const b = sftBatch(tokenizer, idx.map((i) => stream[i]!), maxTokens);
        tokens += b.tokens;
        micro.push({ kind: 'new', ids: b.ids, attentionMask: b.attentionMask, targets: b.targets, latent: increments(retrievedNew, idx) });
      }
      for (let f = 0; f < flashbackMicro; f++) {
        // Flashbacks come in fixed micro-batches, visited in turn; the reference's logits (or final
        // hidden states) for each are computed once and kept (the base model never changes).
        const which = (step * flashbackMicro + f) % flashbackBatches.length;
        const rows = flashbackBatches[which]!;
        const b = promptBatch(tokenizer, rows.map((i) => flashbacks[i]!), maxTokens);
        let kept = referenceCache.get(which);
        if (!kept && keep) {
          kept = keepReference(model, keep, b.ids, b.attentionMask);
          referenceCache.set(which, kept);
        }
        micro.push({
          kind: 'flashback',
          ids: b.ids,
          attentionMask: b.attentionMask,
          ...(keep === 'logits' ? { referenceLogits: kept } : { referenceHidden: kept }),
          latent: increments(retrievedFlash, rows),
        });
      }
      optimizer.lr = (o.lr ?? 1e-4) * cosineWithWarmup(step, warmup, totalSteps);
      const r = await trainStep(model, optimizer, micro, {
        method,
        alpha: o.alpha,
        kl: o.kl,
        reduction: o.reduction,
        pcgrad: usePcgrad,
        maxGradNorm: o.maxGradNorm,
        seed: hashString(`${seed}:pcgrad:${step}`),
        plainSftWeight: latentRun.plainSftWeight,
      });
      for (const mb of micro) for (const t of [mb.ids, mb.attentionMask, mb.targets, mb.latent?.indices, mb.latent?.weights]) t?.dispose();
      step += 1;
      const elapsedMs = performance.now() - started;
      const progress: StepProgress = { step, totalSteps, ...r, lr: optimizer.lr, tokens, tokensPerSecond: tokens / (elapsedMs / 1000), elapsedMs };
      if (metricsFile) appendFileSync(metricsFile, `${JSON.stringify({ type: 'train', method: o.method, ...progress })}\n`);
      o.onStep?.(progress);
      if (checkpointDir && o.checkpointEvery && step % o.checkpointEvery === 0 && step < totalSteps)
        saveCheckpoint(checkpointDir, model, optimizer, pool, retrievedNew, retrievedFlash, { step, ...state });
      await tick(); // let the event loop run between steps
    }
  } finally {
    referenceCache.forEach((t) => t.dispose());
  }
  if (o.outDir && step === totalSteps) {
    const adapterDir = join(o.outDir, 'adapter');
    // A pool left from an earlier run in this directory would be applied to this adapter.
    rmSync(join(adapterDir, LATENT_POOL_FILE), { force: true });
    model.saveAdapter(adapterDir);
    pool?.save(join(adapterDir, LATENT_POOL_FILE));
    rmSync(checkpointDir!, { recursive: true, force: true });
  } else if (checkpointDir && step < totalSteps) {
    saveCheckpoint(checkpointDir, model, optimizer, pool, retrievedNew, retrievedFlash, { step, ...state });
  }
  optimizer.dispose();
  return { steps: step, totalSteps, stoppedEarly: step < totalSteps, tokens, elapsedMs: performance.now() - started, latent, pool };
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function toArrays(r: { indices: Tensor; weights: Tensor }): Retrieved {
  const out = { indices: r.indices.toTypedArray() as BigInt64Array, weights: r.weights.toTypedArray() as Float32Array };
  r.indices.dispose();
  r.weights.dispose();
  return out;
}

function select(r: Retrieved, rows: number[], k: number) {
  const indices = new BigInt64Array(rows.length * k);
  const weights = new Float32Array(rows.length * k);
  rows.forEach((row, i) => {
    indices.set(r.indices.subarray(row * k, (row + 1) * k), i * k);
    weights.set(r.weights.subarray(row * k, (row + 1) * k), i * k);
  });
  return { indices: tensor(indices, [rows.length, k]), weights: tensor(weights, [rows.length, k]) };
}

/**
 * Writes a complete checkpoint beside the current one, then swaps them: a run killed at any moment
 * leaves `checkpoint` (or, between the two renames, `checkpoint.old`) loadable.
 */
function saveCheckpoint(
  dir: string,
  model: LlamaModel,
  optimizer: AdamW,
  pool: LatentPool | undefined,
  retrievedNew: Retrieved | undefined,
  retrievedFlash: Retrieved | undefined,
  state: { step: number },
): void {
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  model.saveAdapter(join(tmp, 'adapter'));
  const moments: Record<string, Tensor> = { steps: optimizer.steps };
  optimizer.expAvg.forEach((t, i) => (moments[`exp_avg.${i}`] = t));
  optimizer.expAvgSq.forEach((t, i) => (moments[`exp_avg_sq.${i}`] = t));
  saveSafetensors(join(tmp, 'optimizer.safetensors'), moments);
  if (pool && retrievedNew && retrievedFlash) {
    const k = pool.tasks.k;
    const owned = {
      newIndices: tensor(retrievedNew.indices, [retrievedNew.indices.length / k, k]),
      newWeights: tensor(retrievedNew.weights, [retrievedNew.weights.length / k, k]),
      flashIndices: tensor(retrievedFlash.indices, [retrievedFlash.indices.length / k, k]),
      flashWeights: tensor(retrievedFlash.weights, [retrievedFlash.weights.length / k, k]),
    };
    pool.save(join(tmp, LATENT_POOL_FILE));
    saveSafetensors(join(tmp, RETRIEVAL), owned);
    Object.values(owned).forEach((t) => t.dispose());
  }
  writeFileAtomic(join(tmp, 'state.json'), `${JSON.stringify(state)}\n`);
  rmSync(`${dir}.old`, { recursive: true, force: true });
  if (existsSync(dir)) renameSync(dir, `${dir}.old`);
  renameSync(tmp, dir);
  rmSync(`${dir}.old`, { recursive: true, force: true });
}
