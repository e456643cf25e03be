// Pretraining a base model from scratch (every weight trained, cross-entropy on the outputs): the
// demo's stand-in for an off-the-shelf aligned model that is good at the old tasks. The records
// come from a list (epochs over it, length-bucketed) or from a stream of fresh records per step. With
// a checkpoint folder, a run saves its weights and optimizer every few hundred steps and `resume`
// continues it bit-identically on the CPU: a step's batch depends only on the seed and the step.
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { createRng, hashString } from '../data/rng.js';
import { type InstanceRecord } from '../data/records.js';
import { type RecordStream } from '../data/stream.js';
import { AbortError, CallbackError, OptionError } from '../errors.js';
import { type LlamaModel } from '../model/llama.js';
import { saveSafetensors } from '../model/safetensors.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { AdamW, cosineWithWarmup } from '../optim.js';
import { errnoOf } from '../util/files.js';
import { checkpointTensors, findCheckpoint, lastCheckpoint, restoreOptimizer, saveCheckpoint, saveOptimizer } from './checkpoint.js';
import { sftBatch } from './examples.js';
import { runSteps, type StepProgress } from './loop.js';
import { type MicroBatch } from './step.js';

/** Options of {@link pretrain}. */
export interface PretrainOptions {
  /** passes over the records (a list of records; default 1) */
  epochs?: number | undefined;
  /** steps to run (a stream; required there) */
  steps?: number | undefined;
  /** records per micro-batch (default 8) */
  microBatch?: number | undefined;
  /** micro-batches per optimisation step (default 1) */
  accumulation?: number | undefined;
  /** the longest tokenized record (default 256) */
  maxTokens?: number | undefined;
  /** peak learning rate (default 3e-3) */
  lr?: number | undefined;
  /** share of the steps spent warming up (default 0.05) */
  warmupRatio?: number | undefined;
  /** seed of the record order (default 0) */
  seed?: number | undefined;
  /** train on every token, prompt included (language modelling), not only on the outputs */
  promptLoss?: boolean | undefined;
  /** gradient clipping: the largest global L2 norm (default 1.0) */
  maxGradNorm?: number | undefined;
  /**
   * A folder for the run's checkpoint and metrics.jsonl. With it, a checkpoint is written every
   * `checkpointEvery` steps and at the end; the caller removes it once the model is saved.
   */
  checkpointDir?: string | undefined;
  /** steps between checkpoints (default 500) */
  checkpointEvery?: number | undefined;
  /** continue from checkpointDir's checkpoint (an Error when there is none or it is from another run) */
  resume?: boolean | undefined;
  /** what identifies the run: a checkpoint resumes only a run with the same (JSON-equal) identity */
  identity?: Record<string, unknown> | undefined;
  /** stop after this step (the run stays resumable), e.g. to pretrain in sittings */
  pauseAfter?: number | undefined;
  /** called after each step, awaited; a throw or rejection stops the run (a checkpoint) with a CallbackError */
  onStep?: ((p: StepProgress) => unknown) | undefined;
  /** cancels the run at the next step boundary: a checkpoint (with checkpointDir), then an AbortError */
  signal?: AbortSignal | undefined;
  /** every `every.steps` steps, a measurement (e.g. the probes) whose numbers go to metrics.jsonl */
  every?: {
    /** how often, in steps */
    steps: number;
    /** the measurement, given the step; its numbers are logged as one metrics.jsonl row */
    run: (step: number) => Promise<Record<string, number>>;
  };
}

/** What {@link pretrain} resolves to. */
export interface PretrainResult {
  /** steps done (a resumed run counts the checkpoint's too) */
  steps: number;
  /** the steps of the whole run */
  totalSteps: number;
  /** tokens trained on in this sitting */
  tokens: number;
  /** milliseconds of this sitting */
  elapsedMs: number;
}

/** The weights' file in a pretraining checkpoint folder. */
export const WEIGHTS_FILE = 'weights.safetensors';

/**
 * Trains all of `model`'s weights on `source` in place; they are frozen again at the end.
 * @param model - the model (e.g. from {@link createModel}).
 * @param tokenizer - its tokenizer.
 * @param source - training records (epochs over them) or a stream of fresh records per step ({@link createStream}).
 * @param o - epochs or steps, batch sizes, learning rate, seed, checkpoints, progress.
 * @returns a promise of the steps run, tokens trained on and milliseconds taken.
 * @throws (rejects with) RangeError when there are no records or a stream has no step count; Error for a checkpoint that is missing or from another run.
 * @example
 * ```ts
 * const oldTrain = Object.values(generateSuite({ seed: 1 }).old).flatMap((s) => s.train);
 * const { steps } = await pretrain(model, tokenizer, oldTrain, { epochs: 2, onStep: (p) => console.log(p.step, p.sft) });
 * model.save('base');
 * ```
 */
export async function pretrain(model: LlamaModel, tokenizer: Tokenizer, source: InstanceRecord[] | RecordStream, o: PretrainOptions = {}): Promise<PretrainResult> {
  const microBatch = o.microBatch ?? 8;
  const accumulation = o.accumulation ?? 1;
  const perStep = microBatch * accumulation;
  let totalSteps: number;
  let stepRecords: (step: number) => InstanceRecord[];
  if (Array.isArray(source)) {
    if (source.length === 0) throw new RangeError('pretrain: no records');
    const records = source;
    const stepsPerEpoch = Math.ceil(records.length / perStep);
    totalSteps = stepsPerEpoch * (o.epochs ?? 1);
    let order = { epoch: -1, order: [] as number[] };
    stepRecords = (step) => {
      const epoch = Math.floor(step / stepsPerEpoch);
      if (epoch !== order.epoch) order = { epoch, order: epochOrder(records.length, o.seed ?? 0, epoch) };
      const start = (step % stepsPerEpoch) * perStep;
      return order.order.slice(start, start + perStep).map((i) => records[i]!);
    };
  } else {
    if (!Number.isInteger(o.steps) || o.steps! < 1) throw new RangeError(`pretrain: a stream needs steps, a positive integer (got ${o.steps})`);
    totalSteps = o.steps!;
    stepRecords = (step) => source.at(step);
  }
  const warmup = Math.round(totalSteps * (o.warmupRatio ?? 0.05));
  const lr = o.lr ?? 3e-3;
  const dir = o.checkpointDir;
  const state = { totalSteps, ...(o.identity ?? {}) };
  const resume = o.resume ? (dir ? findCheckpoint('pretrain', dir, state, totalSteps) : undefined) : undefined;
  if (o.resume && !dir) throw new OptionError('pretrain: resume needs a checkpointDir');
  model.setBaseTrainable(true);
  const weights = model.weights();
  const params = Object.values(weights);
  const optimizer = new AdamW(params, { lr, weightDecay: 0.01 });
  try {
    if (resume) restore(model, weights, optimizer, resume.dir, resume.step);
    if (dir) mkdirSync(dir, { recursive: true });
    const metricsFile = dir && join(dir, 'metrics.jsonl');
    const log = (row: Record<string, unknown>) => {
      if (!metricsFile) return;
      try {
        appendFileSync(metricsFile, `${JSON.stringify(row)}\n`);
      } catch (e) {
        throw new Error(`pretrain: cannot write ${metricsFile} (${errnoOf(e)})${lastCheckpoint(dir!)}`);
      }
    };
    const save = (step: number) => dir && saveCheckpoint('pretrain', dir, { step, ...state }, (tmp) => {
      saveSafetensors(join(tmp, WEIGHTS_FILE), weights);
      saveOptimizer(tmp, optimizer);
    });
    const every = o.checkpointEvery ?? 500;
    let reached = resume?.step ?? 0;
    const pending: number[] = [];
    const stopped = (e: unknown) => {
      // Cancelled, or onStep failed, at a step boundary: resumable from where it stopped.
      if ((e instanceof AbortError || e instanceof CallbackError) && reached > (resume?.step ?? 0) && reached % every !== 0) save(reached);
      throw e;
    };
    const r = await runSteps({
      model,
      optimizer,
      signal: o.signal,
      what: 'pretrain',
      from: reached,
      to: Math.min(totalSteps, o.pauseAfter ?? totalSteps),
      totalSteps,
      lr: (step) => lr * cosineWithWarmup(step, warmup, totalSteps),
      batches: (step) => {
        const records = stepRecords(step);
        const micro: MicroBatch[] = [];
        let tokens = 0;
        for (let m = 0; m < accumulation; m++) {
          const chunk = records.slice(m * microBatch, (m + 1) * microBatch);
          if (!chunk.length) break;
          const b = sftBatch(tokenizer, chunk, o.maxTokens ?? 256, { promptLoss: o.promptLoss });
          tokens += b.tokens;
          micro.push({ kind: 'new', ids: b.ids, attentionMask: b.attentionMask, targets: b.targets });
        }
        return { micro, tokens };
      },
      options: () => ({ method: 'sft', maxGradNorm: o.maxGradNorm ?? 1.0 }),
      onStep: o.onStep,
      after: (p) => {
        reached = p.step;
        if (p.step % 50 === 0 || p.step === totalSteps) log({ type: 'pretrain', step: p.step, loss: p.sft, lr: p.lr, gradNorm: p.gradNorm, tokensPerSecond: p.tokensPerSecond });
        if (o.every && p.step % o.every.steps === 0) pending.push(p.step);
        if (p.step % every === 0 && p.step < totalSteps) save(p.step);
      },
      between: async () => {
        // measurements run between steps (the weights are not changing then)
        for (const step of pending.splice(0)) log({ type: 'probe', step, ...(await o.every!.run(step)) });
      },
    }).catch(stopped);
    // Also when finished: the caller saves the model, then removes the checkpoint (removeCheckpoint),
    // so a kill in between loses nothing.
    save(reached);
    return { steps: reached, totalSteps, tokens: r.tokens, elapsedMs: r.elapsedMs };
  } finally {
    optimizer.dispose();
    params.forEach((w) => w.dispose());
    model.setBaseTrainable(false);
  }
}

/** A checkpoint's weights and optimizer state into the model and optimizer, in place. */
function restore(model: LlamaModel, weights: ReturnType<LlamaModel['weights']>, optimizer: AdamW, dir: string, step: number): void {
  const names = Object.keys(weights);
  const saved = checkpointTensors('pretrain', join(dir, WEIGHTS_FILE), names);
  try {
    for (const n of names) weights[n]!.copyFrom(saved[n]!);
  } catch (e) {
    throw new Error(`pretrain: ${join(dir, WEIGHTS_FILE)} does not fit this model (${(e as Error).message})`);
  } finally {
    Object.values(saved).forEach((t) => t.dispose());
  }
  restoreOptimizer('pretrain', optimizer, dir, step);
}

/**
 * An epoch's order: a seeded shuffle, every record once. Not sorted by length: batches of similar
 * lengths save padding but hold one kind of record each, and a model learns in-context skills
 * several times more slowly from them (measured on copying: 10% against 48% after 500 steps).
 * @param n - the records.
 * @param seed - the run's seed.
 * @param epoch - the epoch (0-based).
 * @returns the record indices in training order.
 * @example
 * ```ts
 * epochOrder(5, 1, 0); // e.g. [3, 0, 4, 1, 2]
 * ```
 */
export function epochOrder(n: number, seed: number, epoch: number): number[] {
  return createRng(hashString(`${seed}:pretrain:${epoch}`)).shuffle(Array.from({ length: n }, (_, i) => i));
}
