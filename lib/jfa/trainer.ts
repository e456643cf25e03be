// The training loop: methods sft (plain LoRA), replay (SFT on new tasks mixed with old-task data),
// flashback (SFT + alpha x divergence on flashbacks) and jfa (flashbacks + latent tasks + PCGrad),
// with the ablations as switches. Data order, PCGrad orders and retrieval depend only on the seed,
// so a run resumed from a checkpoint ends bit-identical to an uninterrupted one on the CPU.
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { createRng, hashString } from '../data/rng.js';
import { type DistributedOptions, ProcessGroup } from '../distributed.js';
import { type FlashbackRecord, type InstanceRecord } from '../data/records.js';
import { type KlKind, type Reduction } from '../kernels.js';
import { checkDevice, type Device } from '../device.js';
import { type LlamaModel, type LoraConfig } from '../model/llama.js';
import { saveSafetensors } from '../model/safetensors.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { AdamW, cosineWithWarmup } from '../optim.js';
import { type Tensor, tensor, zeros } from '../tensor.js';
import { errnoOf, inOutputFolder } from '../util/files.js';
import { TensorBoardWriter } from '../util/tensorboard.js';
import { writeJsonl } from '../data/jsonl.js';
import { CHECKPOINT, checkpointTensors, findCheckpoint, lastCheckpoint, removeCheckpoint, restoreOptimizer, saveCheckpoint, saveOptimizer, writeFolder } from './checkpoint.js';
import { accumulateFlashbacks, checkContinue, CONTINUE_MODES, type ContinueMode, earlierPrompts, loadRounds, type PreviousRun, readRun, writeChain, writePrompts } from './continual.js';
import { promptBatch, promptText, sftBatch } from './examples.js';
import { embedRecords, type LatentOptions, LatentTasks } from './latent.js';
import { LATENT_MODES, LATENT_POOL_FILE, type LatentMode, LatentPool } from './pool.js';
import { runSteps, type StepProgress } from './loop.js';
import { TRAIN_DEFAULTS } from './plan.js';
import { type Method, type MicroBatch } from './step.js';

export type { StepProgress };

/** A {@link train} method: sft, flashback, jfa, or the replay baseline (SFT mixed with old-task data). */
export type TrainMethod = Method | 'replay';

/** Options of {@link train}; every default is in {@link TRAIN_DEFAULTS}, which `jfa train` shares. */
export interface TrainOptions {
  /** the training method */
  method: TrainMethod;
  /** where to train: 'cpu' (default: where the model is), 'cuda' or 'cuda:N'; the model is moved there first */
  device?: Device;
  /**
   * 'fp32' or 'bf16': the dtype the base model must have been loaded with (default: the model's).
   * The losses (divergence, cross-entropy) accumulate in float32 either way.
   */
  precision?: Precision;
  /** jfa only: use latent tasks (default true; false is the `--no-latent` ablation) */
  latent?: boolean;
  /** combine micro-batch gradients with PCGrad (default: true for jfa; false is `--no-pcgrad`) */
  pcgrad?: boolean;
  /** passes over the new-task records (default 1) */
  epochs?: number;
  /** samples per micro-batch */
  microBatch?: number;
  /** new-task micro-batches per optimizer step */
  accumulation?: number;
  /** flashback micro-batches per optimizer step (flashback, jfa) */
  flashbackMicroBatches?: number;
  /** the longest tokenized example (default 256) */
  maxTokens?: number;
  /** peak learning rate (default 1e-4), cosine-scheduled after warm-up */
  lr?: number;
  /** share of the steps spent warming up (default 0.1) */
  warmupRatio?: number;
  /** AdamW's decoupled weight decay (default 0) */
  weightDecay?: number;
  /** clip the combined gradient's norm to this (default 1.0, as transformers' Trainer) */
  maxGradNorm?: number;
  /** weight of the flashback divergence (default 1) */
  alpha?: number;
  /** the divergence's KL (default symmetric) */
  kl?: KlKind;
  /** the divergence's reduction over tokens (default mean) */
  reduction?: Reduction;
  /** the LoRA adapters added to the model (default r 8, loraAlpha 16: {@link LlamaModel.addLora}'s) */
  lora?: LoraConfig;
  /** the latent-task pool's size and retrieval (jfa with latent tasks) */
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
  /** seed of the data order, adapters, PCGrad orders and latent tasks (default 0) */
  seed?: number;
  /** where checkpoints, metrics.jsonl and the final adapter go */
  outDir?: string;
  /** save a checkpoint in outDir every this many steps */
  checkpointEvery?: number;
  /** continue from outDir's checkpoint (an Error when there is none) */
  resume?: boolean;
  /** keep the reference's logits (or, when those would pass 1 GiB, its final hidden states) of each flashback micro-batch instead of recomputing them (default true, within 1 GiB) */
  cacheReference?: boolean;
  /** stop after this many steps (the run stays resumable) */
  maxSteps?: number;
  /**
   * Activation checkpointing for the run ({@link LlamaModel.activationCheckpointing}): each decoder
   * layer keeps only its input and is recomputed in the backward. Less memory for one more forward
   * pass of the layers, same results (default: the model's setting, off unless set)
   */
  activationCheckpointing?: boolean;
  /**
   * A finished run folder (an earlier `train({ outDir })`) to continue from: `model` must be the
   * base that run started from, as loaded; the earlier rounds' adapters are loaded into it
   * (folded by `continueMode`), this round trains a fresh adapter on top, its flashback reference is
   * the model after that run (its 'retrieve' latent pool included, which this round keeps training),
   * and its flashbacks are `data.flashbacks` plus prompts of the earlier rounds within
   * `flashbackBudget`. The run folder then records the whole chain (continual.json).
   */
  continueFrom?: string;
  /** with continueFrom: 'merge' (default) folds each finished round's adapter into the weights, 'stack' keeps it frozen beneath */
  continueMode?: ContinueMode;
  /** with continueFrom: flashbacks in all, spread evenly over the old suites and the earlier rounds (default: data.flashbacks.length) */
  flashbackBudget?: number;
  /** called after each step */
  onStep?: (p: StepProgress) => void;
  /**
   * Also log each step's scalars to a TensorBoard event file in this directory (created if needed):
   * train/sft, train/divergence, train/grad_norm, train/lr, train/conflicts, train/tokens_per_second
   * (and train/plain_sft when plainSftWeight is set). `tensorboard --logdir DIR` shows them.
   */
  tensorboard?: string;
  /**
   * Data-parallel training over processes and hosts (c10d: a TCPStore at masterAddr:masterPort,
   * Gloo on CPU): this process's rank and the world size, or a group already joined. Every rank
   * calls train() with the same model, data and options; each takes its shard of every micro-batch
   * (rows i with i % worldSize == rank), gradients are summed per micro-batch before PCGrad, and the
   * result equals a single process's run at the same global batch. Rank 0 alone writes outDir
   * (metrics, checkpoints, the adapter); the others read a checkpoint from it with resume, so it must
   * be reachable from every host then. `distributedFromEnv()` reads torchrun's variables.
   */
  distributed?: DistributedOptions | ProcessGroup;
}

/** What {@link train} trains on. */
export interface TrainData {
  /** the new tasks' examples */
  newTrain: InstanceRecord[];
  /** prompts of old tasks, for the divergence (flashback, jfa) */
  flashbacks?: FlashbackRecord[];
  /** old-task training data, for the replay baseline only */
  replay?: InstanceRecord[];
}


/** What {@link train} returns. */
export interface TrainResult {
  /** steps done (a resumed run counts the checkpoint's too) */
  steps: number;
  /** steps of the whole run */
  totalSteps: number;
  /** maxSteps stopped the run before totalSteps */
  stoppedEarly: boolean;
  /** tokens trained on in this call */
  tokens: number;
  /** milliseconds this call took */
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

/** A checkpoint's retrieved tasks per record (the pool itself is its LATENT_POOL_FILE). */
const RETRIEVAL = 'retrieval.safetensors';
const REFERENCE_CACHE_BYTES = 1 << 30;

/**
 * What of the frozen reference to keep for `tokens` flashback tokens in all: its logits when they
 * fit in 1 GiB (the reference then costs nothing per step), else its final hidden states when those
 * fit (the LM head still runs on them), else nothing (recomputed every step).
 * @param model - the model being trained.
 * @param tokens - flashback tokens in all (rows x width of every flashback micro-batch).
 * @returns 'logits', 'hidden', or undefined (keep nothing).
 * @example
 * ```ts
 * referenceKeeping(model, 160 * 64); // 'logits' for a small vocabulary
 * ```
 */
export function referenceKeeping(model: LlamaModel, tokens: number): 'logits' | 'hidden' | undefined {
  const { vocabSize, hiddenSize } = model.config;
  if (tokens * vocabSize * 4 <= REFERENCE_CACHE_BYTES) return 'logits';
  if (tokens * hiddenSize * 4 <= REFERENCE_CACHE_BYTES) return 'hidden';
  return undefined;
}

/**
 * The reference's logits or final hidden states for these ids: by default the model with adapters
 * and latent tasks off; `model` as it is now with `{ adapters: true }` (and a round's `latent`
 * increments) when a continued run keeps the previous round's model before folding its adapter.
 * @param model - the model being trained.
 * @param kind - what to keep, as {@link referenceKeeping} chose.
 * @param ids - a flashback micro-batch's ids (b, t).
 * @param attentionMask - its mask (b, t).
 * @param current - adapters on (and latent increments) to keep the model as it is now, for a continued run.
 * @returns logits (b, t, vocab) or hidden states (b, t, hidden), to pass as the micro-batch's referenceLogits or referenceHidden.
 * @throws the errors of {@link LlamaModel.logits}.
 * @example
 * ```ts
 * const referenceLogits = keepReference(model, 'logits', f.ids, f.attentionMask);
 * ```
 */
export function keepReference(
  model: LlamaModel,
  kind: 'logits' | 'hidden',
  ids: Tensor,
  attentionMask: Tensor,
  current: { adapters?: boolean; latent?: { indices: Tensor; weights: Tensor } } = {},
): Tensor {
  const options = { attentionMask, adapters: current.adapters ?? false, latent: current.latent };
  const kept = kind === 'logits' ? model.logits(ids, options) : model.hiddenStates(ids, options);
  // Detached: with the adapters on, the forward recorded a graph the kept tensor must not hold.
  const values = kept.detach();
  kept.dispose();
  return values;
}

/** The latent-task options, checked: RangeErrors for values out of range or options that cannot apply. */
function latentSettings(o: TrainOptions, useLatent: boolean): { mode: LatentMode; dropout: number; plainSftWeight: number } {
  const given = (['latentMode', 'latentDropout', 'plainSftWeight'] as const).filter((k) => o[k] !== undefined);
  if (!useLatent && given.length)
    throw new RangeError(`train: ${given.join(', ')} appl${given.length > 1 ? 'y' : 'ies'} only to method 'jfa' with latent tasks (method '${o.method}'${o.latent === false ? ', latent off' : ''})`);
  const mode = o.latentMode ?? TRAIN_DEFAULTS.latentMode;
  if (!(LATENT_MODES as readonly string[]).includes(mode)) throw new RangeError(`train: latentMode must be ${LATENT_MODES.join(' or ')}, got ${JSON.stringify(o.latentMode)}`);
  const dropout = o.latentDropout ?? TRAIN_DEFAULTS.latentDropout[mode];
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout <= 1)) throw new RangeError(`train: latentDropout must be a probability in [0, 1], got ${dropout}`);
  const plainSftWeight = o.plainSftWeight ?? TRAIN_DEFAULTS.plainSftWeight;
  if (typeof plainSftWeight !== 'number' || !(plainSftWeight >= 0) || !Number.isFinite(plainSftWeight))
    throw new RangeError(`train: plainSftWeight must be a finite number >= 0, got ${plainSftWeight}`);
  return { mode, dropout, plainSftWeight };
}

/** A run's settings, checked and resolved: everything the stages below share. */
interface RunPlan {
  method: Method;
  seed: number;
  microBatch: number;
  accumulation: number;
  flashbackMicro: number;
  maxTokens: number;
  useLatent: boolean;
  latentRun: ReturnType<typeof latentSettings>;
  latentLayer: number;
  usePcgrad: boolean;
  lr: number;
  /** the records trained on, in file order (new tasks, plus old-task data for replay) */
  stream: InstanceRecord[];
  flashbacks: FlashbackRecord[];
  stepsPerEpoch: number;
  totalSteps: number;
  warmup: number;
  /** what a checkpoint must share with this run to continue it */
  state: Record<string, unknown>;
}

const METHODS: readonly TrainMethod[] = ['sft', 'replay', 'flashback', 'jfa'];

/** RangeErrors for numeric options out of range and unknown methods, before anything is touched. */
function checkOptions(o: TrainOptions, latentLayers: number): void {
  if (!METHODS.includes(o.method)) throw new RangeError(`train: method must be one of ${METHODS.join(', ')}, got ${JSON.stringify(o.method)}`);
  const check = (name: string, v: number | undefined, ok: (n: number) => boolean, what: string) => {
    if (v !== undefined && !(typeof v === 'number' && ok(v))) throw new RangeError(`train: ${name} must be ${what}, got ${JSON.stringify(v) ?? String(v)}`);
  };
  const positiveInt = (n: number) => Number.isInteger(n) && n >= 1;
  const finite = Number.isFinite;
  for (const k of ['epochs', 'microBatch', 'accumulation', 'maxTokens', 'checkpointEvery'] as const) check(k, o[k], positiveInt, 'a positive integer');
  check('flashbackMicroBatches', o.flashbackMicroBatches, (n) => Number.isInteger(n) && n >= 0, 'an integer >= 0');
  check('maxSteps', o.maxSteps, (n) => Number.isInteger(n) && n >= 0, 'an integer >= 0');
  check('seed', o.seed, (n) => Number.isSafeInteger(n) && n >= 0, 'an integer >= 0');
  check('lr', o.lr, (n) => finite(n) && n > 0, 'a finite number > 0');
  check('maxGradNorm', o.maxGradNorm, (n) => finite(n) && n > 0, 'a finite number > 0');
  for (const k of ['alpha', 'weightDecay'] as const) check(k, o[k], (n) => finite(n) && n >= 0, 'a finite number >= 0');
  check('warmupRatio', o.warmupRatio, (n) => n >= 0 && n <= 1, 'a number in [0, 1]');
  check('lora.r', o.lora?.r, positiveInt, 'a positive integer');
  check('lora.loraAlpha', o.lora?.loraAlpha, (n) => finite(n) && n > 0, 'a finite number > 0');
  if (o.activationCheckpointing !== undefined && typeof o.activationCheckpointing !== 'boolean')
    throw new TypeError(`train: activationCheckpointing must be a boolean, got ${JSON.stringify(o.activationCheckpointing)}`);
  check('latentLayer', o.latentLayer, (n) => Number.isInteger(n) && n >= 0 && n < latentLayers, `a layer in 0..${latentLayers - 1}`);
}

function planRun(model: LlamaModel, data: TrainData, o: TrainOptions, continued?: Record<string, unknown>): RunPlan {
  checkOptions(o, model.config.numLayers);
  const method: Method = o.method === 'replay' ? 'sft' : o.method;
  const microBatch = o.microBatch ?? TRAIN_DEFAULTS.microBatch;
  const accumulation = o.accumulation ?? TRAIN_DEFAULTS.accumulation;
  const useLatent = method === 'jfa' && (o.latent ?? TRAIN_DEFAULTS.latent);
  const latentRun = latentSettings(o, useLatent);
  const flashbackMicro = method === 'sft' ? 0 : (o.flashbackMicroBatches ?? TRAIN_DEFAULTS.flashbackMicroBatches);
  const flashbacks = data.flashbacks ?? [];
  if (!data.newTrain?.length) throw new RangeError('train: no new-task records (data.newTrain is empty)');
  if (flashbackMicro > 0 && flashbacks.length === 0) throw new RangeError(`train: method '${o.method}' needs flashbacks`);
  if (o.method === 'replay' && !data.replay?.length) throw new RangeError("train: method 'replay' needs old-task training data");
  const stream = o.method === 'replay' ? [...data.newTrain, ...data.replay!] : data.newTrain;
  const stepsPerEpoch = Math.ceil(stream.length / (microBatch * accumulation));
  const totalSteps = stepsPerEpoch * (o.epochs ?? TRAIN_DEFAULTS.epochs);
  const latentLayer = o.latentLayer ?? Math.floor(model.config.numLayers / 2);
  return {
    method,
    seed: o.seed ?? TRAIN_DEFAULTS.seed,
    microBatch,
    accumulation,
    flashbackMicro,
    maxTokens: o.maxTokens ?? TRAIN_DEFAULTS.maxTokens,
    useLatent,
    latentRun,
    latentLayer,
    usePcgrad: o.pcgrad ?? method === 'jfa',
    lr: o.lr ?? TRAIN_DEFAULTS.lr,
    stream,
    flashbacks,
    stepsPerEpoch,
    totalSteps,
    warmup: Math.round(totalSteps * (o.warmupRatio ?? TRAIN_DEFAULTS.warmupRatio)),
    state: { totalSteps, method: o.method, ...(useLatent ? { latent: { ...latentRun, layer: latentLayer, options: o.latentOptions ?? {} } } : {}), ...(continued ? { continued } : {}) },
  };
}

/** The checkpoint to resume from, when resuming. */
function findRunCheckpoint(plan: RunPlan, o: TrainOptions): { dir: string; step: number } | undefined {
  if (!o.resume) return undefined;
  if (!o.outDir) throw new Error('train: nothing to resume without an outDir');
  return findCheckpoint('train', o.outDir, plan.state, plan.totalSteps);
}

/** Latent tasks: keys, groups and every record's retrieval, fixed before training (or restored). */
function setUpLatent(model: LlamaModel, tokenizer: Tokenizer, plan: RunPlan, o: TrainOptions, from?: string, continued?: LatentPool) {
  if (from) {
    continued?.dispose();
    const poolFile = join(from, LATENT_POOL_FILE);
    if (!existsSync(poolFile)) throw new Error(`train: the checkpoint is incomplete: ${poolFile} is missing`);
    const pool = LatentPool.load(poolFile, model);
    const saved = checkpointTensors('train', join(from, RETRIEVAL), ['newIndices', 'newWeights', 'flashIndices', 'flashWeights']);
    const arrays = (i: string, w: string): Retrieved => ({ indices: saved[i]!.toTypedArray() as BigInt64Array, weights: saved[w]!.toTypedArray() as Float32Array });
    const retrieved = { new: arrays('newIndices', 'newWeights'), flash: arrays('flashIndices', 'flashWeights') };
    Object.values(saved).forEach((t) => t.dispose());
    return { pool, retrieved };
  }
  if (continued) {
    // The previous round's pool keeps training: its keys and groups stay, this round's records are
    // retrieved with the model beneath the new adapter, as inference after this round will.
    const retrieved = { new: toArrays(continued.retrieve(model, tokenizer, plan.stream)), flash: toArrays(continued.retrieve(model, tokenizer, plan.flashbacks)) };
    return { pool: continued, retrieved };
  }
  const cfg = model.config;
  const tasks = new LatentTasks(cfg.hiddenSize, cfg.numHeads * cfg.headDim, cfg.hiddenSize, { seed: plan.seed, ...o.latentOptions, device: model.device });
  const embNew = embedRecords(model, tokenizer, plan.stream, plan.maxTokens);
  const embFlash = embedRecords(model, tokenizer, plan.flashbacks, plan.maxTokens);
  tasks.fit(concat(embNew, embFlash), plan.seed);
  const retrieved = { new: toArrays(tasks.retrieve(embNew)), flash: toArrays(tasks.retrieve(embFlash)) };
  const pool = new LatentPool(tasks, plan.latentLayer, plan.latentRun.mode, plan.maxTokens);
  model.setLatentPool(pool.layer, tasks.A, tasks.B);
  return { pool, retrieved };
}

/**
 * Flashbacks come in fixed micro-batches, visited in turn. The reference's logits (or final hidden
 * states) of each are computed once and kept: the base model never changes.
 */
function flashbackSource(model: LlamaModel, tokenizer: Tokenizer, plan: RunPlan, o: TrainOptions, previous?: { pool?: LatentPool }, shard?: Shard) {
  const batches: number[][] = [];
  if (plan.flashbackMicro > 0) {
    const shuffled = createRng(hashString(`${plan.seed}:flash`)).shuffle(plan.flashbacks.map((_, i) => i));
    for (let i = 0; i < shuffled.length; i += plan.microBatch) batches.push(shuffled.slice(i, i + plan.microBatch));
  }
  const keep = (o.cacheReference ?? TRAIN_DEFAULTS.cacheReference) ? referenceKeeping(model, plan.flashbacks.length * plan.maxTokens) : undefined;
  const cache = new Map<number, Tensor>();
  if (previous && batches.length > 0) {
    // A continued run: the model is now the previous round's (its adapter on, its pool attached).
    // Every flashback micro-batch's reference is kept before that adapter is folded beneath the new one.
    if (!keep) {
      if (previous.pool)
        throw new Error(`train: continuing a run with a 'retrieve' latent pool needs the reference kept (cacheReference, and ${plan.flashbacks.length} flashbacks x ${plan.maxTokens} tokens within 1 GiB of hidden states)`);
    } else {
      const retrieved = previous.pool && toArrays(previous.pool.retrieve(model, tokenizer, plan.flashbacks));
      batches.forEach((rows, which) => {
        const b = promptBatch(tokenizer, rows.map((i) => plan.flashbacks[i]!), plan.maxTokens);
        const latent = retrieved && select(retrieved, rows, previous.pool!.tasks.k);
        try {
          cache.set(which, keepReference(model, keep, b.ids, b.attentionMask, { adapters: true, latent }));
        } finally {
          for (const t of [b.ids, b.attentionMask, latent?.indices, latent?.weights]) t?.dispose();
        }
      });
    }
  }
  return {
    /** flashback micro-batch f of `step`: its rows and tensors */
    batch(step: number, f: number) {
      const which = (step * plan.flashbackMicro + f) % batches.length;
      const all = batches[which]!;
      const rows = shard ? shardOf(all, shard) : all;
      // A shard's divergence weighs its real tokens over the whole micro-batch's (mean reduction).
      let weight: number | undefined;
      if (shard) {
        const whole = all.reduce((n, i) => n + tokenizer.encode(promptText(plan.flashbacks[i]!)).slice(0, plan.maxTokens).length, 0);
        const mine = rows.reduce((n, i) => n + tokenizer.encode(promptText(plan.flashbacks[i]!)).slice(0, plan.maxTokens).length, 0);
        weight = o.reduction === 'sum' ? 1 : whole ? mine / whole : 0;
      }
      if (rows.length === 0) return { rows, ...emptyBatch(), reference: {}, weight };
      const b = promptBatch(tokenizer, rows.map((i) => plan.flashbacks[i]!), plan.maxTokens);
      let kept = cache.get(which);
      if (!kept && keep) {
        kept = keepReference(model, keep, b.ids, b.attentionMask);
        cache.set(which, kept);
      }
      const reference = keep === 'logits' ? { referenceLogits: kept } : { referenceHidden: kept };
      return { rows, ids: b.ids, attentionMask: b.attentionMask, reference, weight };
    },
    dispose: () => cache.forEach((t) => t.dispose()),
  };
}

/**
 * A step's micro-batches: new-task records in a per-epoch shuffled order, then flashback
 * micro-batches in turn, each with its latent tasks unless latent dropout drew otherwise.
 */
function batchMaker(
  tokenizer: Tokenizer,
  plan: RunPlan,
  flash: ReturnType<typeof flashbackSource>,
  latent: { pool: LatentPool; retrieved: { new: Retrieved; flash: Retrieved } } | undefined,
  shard?: Shard,
): (step: number) => { micro: MicroBatch[]; tokens: number } {
  let cached = { epoch: -1, order: [] as number[] };
  return (step) => {
    const epoch = Math.floor(step / plan.stepsPerEpoch);
    if (epoch !== cached.epoch) cached = { epoch, order: createRng(hashString(`${plan.seed}:order:${epoch}`)).shuffle(plan.stream.map((_, i) => i)) };
    const start = (step % plan.stepsPerEpoch) * plan.microBatch * plan.accumulation;
    // Latent dropout: one draw per micro-batch, in order, from this step's own stream.
    const dropRng = plan.latentRun.dropout > 0 ? createRng(hashString(`${plan.seed}:latent-dropout:${step}`)) : undefined;
    const increments = (r: Retrieved | undefined, rows: number[]) =>
      r && !(dropRng && dropRng.next() < plan.latentRun.dropout) ? select(r, rows, latent!.pool.tasks.k) : undefined;
    const micro: MicroBatch[] = [];
    let tokens = 0;
    for (let m = 0; m < plan.accumulation; m++) {
      const idx = cached.order.slice(start + m * plan.microBatch, start + (m + 1) * plan.microBatch);
      if (idx.length === 0) break;
      if (!shard) {
        const b = sftBatch(tokenizer, idx.map((i) => plan.stream[i]!), plan.maxTokens);
        tokens += b.tokens;
        micro.push({ kind: 'new', ids: b.ids, attentionMask: b.attentionMask, targets: b.targets, latent: increments(latent?.retrieved.new, idx) });
        continue;
      }
      // This rank's rows; its loss weighs its target tokens over the whole micro-batch's (the SFT
      // loss is a token mean), so the ranks' gradients sum to the whole micro-batch's.
      const whole = sftTokens(tokenizer, idx.map((i) => plan.stream[i]!), plan.maxTokens);
      const mine = shardOf(idx, shard);
      const b = mine.length ? sftBatch(tokenizer, mine.map((i) => plan.stream[i]!), plan.maxTokens) : emptyBatch();
      tokens += whole;
      micro.push({ kind: 'new', ids: b.ids, attentionMask: b.attentionMask, targets: b.targets, latent: increments(latent?.retrieved.new, mine), weight: whole ? b.tokens / whole : 0 });
    }
    for (let f = 0; f < plan.flashbackMicro; f++) {
      const b = flash.batch(step, f);
      micro.push({ kind: 'flashback', ids: b.ids, attentionMask: b.attentionMask, ...b.reference, latent: increments(latent?.retrieved.flash, b.rows), weight: b.weight });
    }
    return { micro, tokens };
  };
}

/** The earlier rounds of a continued run and this round's flashbacks, checked; undefined when not continuing. */
function continuation(model: LlamaModel, data: TrainData, o: TrainOptions): { prev: PreviousRun; mode: ContinueMode; flashbacks: FlashbackRecord[]; budget: number } | undefined {
  if (!o.continueFrom) {
    const given = (['continueMode', 'flashbackBudget'] as const).filter((k) => o[k] !== undefined);
    if (given.length) throw new RangeError(`train: ${given.join(', ')} appl${given.length > 1 ? 'y' : 'ies'} only with continueFrom`);
    return undefined;
  }
  const mode = o.continueMode ?? TRAIN_DEFAULTS.continueMode;
  if (!(CONTINUE_MODES as readonly string[]).includes(mode)) throw new RangeError(`train: continueMode must be ${CONTINUE_MODES.join(' or ')}, got ${JSON.stringify(o.continueMode)}`);
  const budget = o.flashbackBudget ?? data.flashbacks?.length ?? 0;
  if (!Number.isInteger(budget) || budget < 0) throw new RangeError(`train: flashbackBudget must be a non-negative integer, got ${o.flashbackBudget}`);
  const prev = readRun(o.continueFrom);
  checkContinue(model, prev, mode);
  return { prev, mode, budget, flashbacks: accumulateFlashbacks(data.flashbacks ?? [], earlierPrompts(prev), budget, o.seed ?? TRAIN_DEFAULTS.seed) };
}

/**
 * Fine-tunes `model` on new tasks with LoRA by one of the methods: sft, replay, flashback
 * (SFT + alpha x divergence to the base on flashback prompts) or jfa (flashbacks + latent tasks +
 * PCGrad). With outDir it writes metrics.jsonl, checkpoints (resumable bit-identically on the CPU)
 * and the final adapter in PEFT's layout (with latent_pool.safetensors for jfa).
 * @param model - the base model; adapters are added to it and trained in place.
 * @param tokenizer - its tokenizer.
 * @param data - new-task examples, flashback prompts, and old-task data for replay.
 * @param o - the method and its settings.
 * @returns a promise of the steps, tokens and time, and for jfa with latent tasks the trained pool.
 * @throws (rejects with) RangeError for no new-task records, a method without the data it needs, or an option out of range; Error for a checkpoint that is missing, incomplete or from another run.
 * @example
 * ```ts
 * using model = loadModel('models/jfa-base');
 * const tokenizer = Tokenizer.fromDir('models/jfa-base');
 * const result = await train(model, tokenizer, {
 *   newTrain: readJsonl('new-train.jsonl', 'instance'),
 *   flashbacks: readJsonl('flashbacks.jsonl', 'flashback'),
 * }, { method: 'jfa', epochs: 2, lr: 2e-4, outDir: 'runs/jfa', onStep: (p) => console.log(p.step, p.sft, p.divergence) });
 * ```
 */
export async function train(model: LlamaModel, tokenizer: Tokenizer, data: TrainData, o: TrainOptions): Promise<TrainResult> {
  placeModel(model, o);
  const cont = continuation(model, data, o);
  const plan = planRun(model, cont ? { ...data, flashbacks: cont.flashbacks } : data, o, cont && { run: cont.prev.run, mode: cont.mode, budget: cont.budget });
  tokenizer.checkFits(model.config.vocabSize);
  if (o.distributed !== undefined) {
    if (cont) throw new RangeError('train: continueFrom cannot be combined with distributed (yet): continue the run in one process');
    // The data-parallel path is built and tested on Gloo over CPU tensors; its NCCL path (one GPU
    // per rank) has never run, so a GPU model is refused rather than half-supported.
    if (model.device !== 'cpu')
      throw new RangeError(`train: distributed training runs on the CPU (c10d Gloo); a model on ${model.device} trains in one process (drop distributed / --nproc)`);
    const own = !(o.distributed instanceof ProcessGroup);
    // NCCL (where built) when the model trains on a GPU, Gloo otherwise ('auto').
    const group = o.distributed instanceof ProcessGroup ? o.distributed : await ProcessGroup.connect(o.distributed, model.device.startsWith('cuda'));
    try {
      await checkRanks(group, model, data, o);
      const run = () => trainIn(model, tokenizer, data, o, plan, cont, group);
      // Rank 0 alone holds and writes the output folder.
      if (o.outDir === undefined || group.rank !== 0) return await run();
      return await inOutputFolder(o.outDir, 'train', [CHECKPOINT, `${CHECKPOINT}.old`, 'adapter'], run);
    } finally {
      if (own) group.dispose();
    }
  }
  // The output folder is held (a lock file) for the run. A run that fails before it has a checkpoint
  // or an adapter to show removes the folder again if it created it.
  if (o.outDir === undefined) return trainIn(model, tokenizer, data, o, plan, cont);
  return inOutputFolder(o.outDir, 'train', [CHECKPOINT, `${CHECKPOINT}.old`, 'adapter'], () => trainIn(model, tokenizer, data, o, plan, cont));
}

/** Training precisions: the base model's dtype. */
export type Precision = 'fp32' | 'bf16';
const PRECISION_DTYPE = { fp32: 'float32', bf16: 'bfloat16' } as const;

// Checks precision against the model's dtype and moves the model to the asked device, before any
// adapter, pool or optimizer state is made (they are made where the weights are).
function placeModel(model: LlamaModel, o: TrainOptions): void {
  if (o.precision !== undefined) {
    const want = PRECISION_DTYPE[o.precision];
    if (!want) throw new RangeError(`train: precision must be 'fp32' or 'bf16', got ${JSON.stringify(o.precision)}`);
    if (model.dtype !== want) {
      throw new RangeError(`train: precision '${o.precision}' needs the model loaded as ${want}, but it is ${model.dtype}: loadModel(dir, { dtype: '${want}' })`);
    }
  }
  if (o.device === undefined) return;
  const device = checkDevice(o.device, 'train');
  if (model.device !== (device === 'cuda' ? 'cuda:0' : device)) model.toDevice(device);
}

async function trainIn(
  model: LlamaModel,
  tokenizer: Tokenizer,
  data: TrainData,
  o: TrainOptions,
  plan: RunPlan,
  cont: ReturnType<typeof continuation>,
  group?: ProcessGroup,
): Promise<TrainResult> {
  const resume = findRunCheckpoint(plan, o);
  const writer = !group || group.rank === 0;
  const checkpointOut = writer ? o.outDir : undefined;

  // A continued run: the earlier rounds beneath, the previous round's model kept as the reference.
  let flash: ReturnType<typeof flashbackSource> | undefined;
  let previousPool: LatentPool | undefined;
  if (cont) {
    if (cont.prev.pool && !(plan.useLatent && plan.latentRun.mode === 'retrieve'))
      throw new Error(`train: ${cont.prev.run} serves with a 'retrieve' latent pool (${cont.prev.pool}), part of its model; continue it with method 'jfa', latent tasks on, latentMode 'retrieve'`);
    const { foldLast } = loadRounds(model, cont.prev, cont.mode);
    previousPool = cont.prev.pool ? LatentPool.load(cont.prev.pool, model) : undefined;
    try {
      flash = flashbackSource(model, tokenizer, plan, o, { pool: previousPool });
    } catch (e) {
      previousPool?.dispose();
      throw e;
    }
    foldLast();
  }

  // Adapters (fresh, or the checkpoint's), then the latent pool: the trained parameters.
  if (resume) {
    const adapterDir = join(resume.dir, 'adapter');
    if (!existsSync(adapterDir)) throw new Error(`train: the checkpoint is incomplete: ${adapterDir} is missing`);
    model.loadAdapter(adapterDir);
  } else model.addLora({ ...TRAIN_DEFAULTS.lora, ...o.lora, seed: o.lora?.seed ?? plan.seed });
  const params = Object.values(model.loraParameters());
  const latent = plan.useLatent
    ? group && !resume && group.rank !== 0
      ? await receiveLatent(model, plan, o, group)
      : setUpLatent(model, tokenizer, plan, o, resume?.dir, previousPool)
    : undefined;
  if (latent && group && !resume && group.rank === 0) await sendLatent(latent.retrieved, group);
  if (latent) params.push(latent.pool.tasks.A, latent.pool.tasks.B);
  const optimizer = new AdamW(params, { lr: plan.lr, weightDecay: o.weightDecay ?? TRAIN_DEFAULTS.weightDecay });
  if (resume) restoreOptimizer('train', optimizer, resume.dir, resume.step);
  // Every rank starts from rank 0's parameters and moments (equal by construction; this makes sure).
  if (group) await group.broadcast([...optimizer.params, ...optimizer.expAvg, ...optimizer.expAvgSq, optimizer.steps], 0);

  if (o.outDir && writer) mkdirSync(o.outDir, { recursive: true });
  const metricsFile = writer ? o.outDir && join(o.outDir, 'metrics.jsonl') : undefined;
  const shard = group && { rank: group.rank, world: group.worldSize };
  flash ??= flashbackSource(model, tokenizer, plan, o, undefined, shard);
  const stepBatches = batchMaker(tokenizer, plan, flash, latent, shard);
  const save = (step: number) => checkpointOut && saveRunCheckpoint(checkpointOut, model, optimizer, latent?.pool, latent?.retrieved, { step, ...plan.state });

  let reached = resume?.step ?? 0;
  let stats = { tokens: 0, elapsedMs: 0 };
  const board = o.tensorboard === undefined || !writer ? undefined : new TensorBoardWriter(o.tensorboard);
  const checkpointing = model.activationCheckpointing;
  if (o.activationCheckpointing !== undefined) model.activationCheckpointing = o.activationCheckpointing;
  try {
    const r = await runSteps({
      model,
      optimizer,
      from: reached,
      to: Math.min(plan.totalSteps, o.maxSteps ?? plan.totalSteps),
      totalSteps: plan.totalSteps,
      lr: (step) => plan.lr * cosineWithWarmup(step, plan.warmup, plan.totalSteps),
      batches: (step) => stepBatches(step),
      options: (step) => ({
        method: plan.method,
        alpha: o.alpha ?? TRAIN_DEFAULTS.alpha,
        kl: o.kl ?? TRAIN_DEFAULTS.kl,
        reduction: o.reduction ?? TRAIN_DEFAULTS.reduction,
        pcgrad: plan.usePcgrad,
        maxGradNorm: o.maxGradNorm ?? TRAIN_DEFAULTS.maxGradNorm,
        seed: hashString(`${plan.seed}:pcgrad:${step}`),
        plainSftWeight: plan.latentRun.plainSftWeight,
        ...(group ? { group, bucket: group.options.bucket } : {}),
      }),
      onStep: o.onStep,
      after: (p) => {
        reached = p.step;
        if (metricsFile) {
          try {
            appendFileSync(metricsFile, `${JSON.stringify({ type: 'train', method: o.method, ...p })}\n`);
          } catch (e) {
            throw new Error(`train: cannot write ${metricsFile} at step ${p.step} (${errnoOf(e)})${lastCheckpoint(o.outDir!)}`);
          }
        }
        board?.scalars(p.step, {
          'train/sft': p.sft,
          'train/divergence': p.divergence,
          'train/grad_norm': p.gradNorm,
          'train/lr': p.lr,
          'train/conflicts': p.conflicts,
          'train/tokens_per_second': p.tokensPerSecond,
          ...(plan.latentRun.plainSftWeight ? { 'train/plain_sft': p.plainSft } : {}),
        });
        if (o.checkpointEvery && p.step % o.checkpointEvery === 0 && p.step < plan.totalSteps) save(p.step);
      },
    });
    stats = r;
  } finally {
    model.activationCheckpointing = checkpointing;
    flash.dispose();
    board?.close();
  }


  if (o.outDir && writer && reached === plan.totalSteps) {
    // Written whole beside the final name, then swapped in: a kill or a full disk never leaves a
    // half-written adapter (or an earlier run's pool beside this adapter).
    const adapterDir = join(o.outDir, 'adapter');
    writeFolder('train', adapterDir, `the adapter`, o.outDir, (tmp) => {
      model.saveAdapter(tmp);
      latent?.pool.save(join(tmp, LATENT_POOL_FILE), join(adapterDir, LATENT_POOL_FILE));
    });
    // What a later round needs to continue from this one: the chain beneath, and this round's prompts.
    writePrompts(o.outDir, data.newTrain, plan.seed);
    writeChain(o.outDir, cont?.prev.base ?? model.dir ?? null, cont?.mode ?? TRAIN_DEFAULTS.continueMode, cont?.prev);
    if (cont) writeJsonl(join(o.outDir, 'flashbacks.jsonl'), plan.flashbacks);
    // The run is complete: its checkpoint goes (atomically, so a kill now never leaves half of one to resume from).
    removeCheckpoint(o.outDir);
  } else if (reached < plan.totalSteps) save(reached);
  optimizer.dispose();
  return {
    steps: reached,
    totalSteps: plan.totalSteps,
    stoppedEarly: reached < plan.totalSteps,
    tokens: stats.tokens,
    elapsedMs: stats.elapsedMs,
    latent: latent?.pool.tasks,
    pool: latent?.pool,
  };
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

/** A training run's checkpoint: the adapter, the optimizer, and the latent pool with every record's retrieval. */
function saveRunCheckpoint(
  outDir: string,
  model: LlamaModel,
  optimizer: AdamW,
  pool: LatentPool | undefined,
  retrieved: { new: Retrieved; flash: Retrieved } | undefined,
  state: { step: number },
): void {
  saveCheckpoint('train', outDir, state, (tmp) => {
    model.saveAdapter(join(tmp, 'adapter'));
    saveOptimizer(tmp, optimizer);
    if (pool && retrieved) {
      const { new: retrievedNew, flash: retrievedFlash } = retrieved;
      const k = pool.tasks.k;
      const owned = {
        newIndices: tensor(retrievedNew.indices, [retrievedNew.indices.length / k, k]),
        newWeights: tensor(retrievedNew.weights, [retrievedNew.weights.length / k, k]),
        flashIndices: tensor(retrievedFlash.indices, [retrievedFlash.indices.length / k, k]),
        flashWeights: tensor(retrievedFlash.weights, [retrievedFlash.weights.length / k, k]),
      };
      try {
        pool.save(join(tmp, LATENT_POOL_FILE));
        saveSafetensors(join(tmp, RETRIEVAL), owned);
      } finally {
        Object.values(owned).forEach((t) => t.dispose());
      }
    }
  });
}


/** This process's place in a data-parallel run. */
interface Shard {
  rank: number;
  world: number;
}

/** The rows of a micro-batch this rank trains on: every world-th, from its rank. */
function shardOf(rows: number[], shard: Shard): number[] {
  return rows.filter((_, j) => j % shard.world === shard.rank);
}

/** Target tokens of a whole micro-batch of these records, as sftBatch counts them. */
function sftTokens(tokenizer: Tokenizer, records: InstanceRecord[], maxTokens: number): number {
  const b = sftBatch(tokenizer, records, maxTokens);
  for (const t of [b.ids, b.attentionMask, b.targets]) t.dispose();
  return b.tokens;
}

/** A micro-batch of no rows: this rank's shard is empty, it still takes part in the all-reduce. */
function emptyBatch(): { ids: Tensor; attentionMask: Tensor; targets: Tensor; tokens: number } {
  return { ids: zeros([0, 1], 'int64'), attentionMask: zeros([0, 1], 'uint8'), targets: zeros([0, 1], 'int64'), tokens: 0 };
}

/** A stable JSON text (sorted keys), so equal settings give equal text on every rank. */
function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object')
    return `{${Object.keys(v)
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined && typeof (v as Record<string, unknown>)[k] !== 'function')
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v) ?? 'null';
}

/** The model's identity: its config and every weight's name, shape and sum. */
function modelHash(model: LlamaModel): string {
  const parts: string[] = [stableJson(model.config)];
  for (const [name, t] of Object.entries(model.weights())) {
    const s = t.sum();
    parts.push(`${name}:${t.shape.join('x')}:${(s.toTypedArray() as Float32Array)[0]}`);
    s.dispose();
  }
  return hashString(parts.join('|')).toString(16);
}

/**
 * Start-up check of a data-parallel run: every rank must train the same model on the same data
 * with the same settings (the world size is checked when the group is joined). A mismatch is an
 * Error on every rank naming what differs and the ranks.
 */
async function checkRanks(group: ProcessGroup, model: LlamaModel, data: TrainData, o: TrainOptions): Promise<void> {
  const { distributed: _d, onStep: _s, outDir: _o, tensorboard: _t, ...settings } = o;
  const mine = {
    model: modelHash(model),
    config: hashString(stableJson(settings)).toString(16),
    data: hashString(stableJson([data.newTrain, data.flashbacks ?? [], data.replay ?? []])).toString(16),
  };
  const all = (await group.exchange('train-check', JSON.stringify({ ...mine, settings: stableJson(settings) }))).map((s) => JSON.parse(s) as typeof mine & { settings: string });
  for (const [r, theirs] of all.entries()) {
    for (const what of ['model', 'data', 'config'] as const) {
      if (theirs[what] === all[0]![what]) continue;
      let detail = `${all[0]![what]} vs ${theirs[what]}`;
      if (what === 'config') {
        const a = JSON.parse(all[0]!.settings) as Record<string, unknown>;
        const b = JSON.parse(theirs.settings) as Record<string, unknown>;
        const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => stableJson(a[k]) !== stableJson(b[k]));
        detail = keys.map((k) => `${k} ${stableJson(a[k])} vs ${stableJson(b[k])}`).join(', ');
      }
      throw new Error(`train: rank ${r}'s ${what} differs from rank 0's (${detail}); every rank must train the same model on the same data with the same settings`);
    }
  }
}

/** Rank 0's retrieval (k-means and FAISS ran there alone) to the other ranks. */
async function sendLatent(retrieved: { new: Retrieved; flash: Retrieved }, group: ProcessGroup): Promise<void> {
  const ts = [retrieved.new.indices, retrieved.new.weights, retrieved.flash.indices, retrieved.flash.weights].map((a) => tensor(a, [a.length]));
  try {
    await group.broadcast(ts, 0);
  } finally {
    ts.forEach((t) => t.dispose());
  }
}

/** A rank other than 0: the pool's tasks built from the same seed (so the same shapes), its retrieval from rank 0. */
async function receiveLatent(model: LlamaModel, plan: RunPlan, o: TrainOptions, group: ProcessGroup) {
  const cfg = model.config;
  const tasks = new LatentTasks(cfg.hiddenSize, cfg.numHeads * cfg.headDim, cfg.hiddenSize, { seed: plan.seed, ...o.latentOptions, device: model.device });
  const k = tasks.k;
  const ts = [
    zeros([plan.stream.length * k], 'int64'),
    zeros([plan.stream.length * k]),
    zeros([plan.flashbacks.length * k], 'int64'),
    zeros([plan.flashbacks.length * k]),
  ];
  try {
    await group.broadcast(ts, 0);
    const arr = ts.map((t) => t.toTypedArray());
    const retrieved = {
      new: { indices: arr[0] as BigInt64Array, weights: arr[1] as Float32Array },
      flash: { indices: arr[2] as BigInt64Array, weights: arr[3] as Float32Array },
    };
    const pool = new LatentPool(tasks, plan.latentLayer, plan.latentRun.mode, plan.maxTokens);
    model.setLatentPool(pool.layer, tasks.A, tasks.B);
    return { pool, retrieved };
  } finally {
    ts.forEach((t) => t.dispose());
  }
}
