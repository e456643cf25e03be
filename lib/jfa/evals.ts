// Evaluation during training: the old suites (accuracy) and the new tasks (ROUGE-L) scored by the
// same batched generation as `jfa eval`, at step 0 and every `evalEvery` steps; the checkpoint to
// keep (a copy of the trained tensors at the best evaluation so far) and the forgetting guard. The
// state lives in the run's checkpoints (evals.json and best.safetensors), so a resumed run
// evaluates, keeps and stops exactly as an uninterrupted one.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { accuracy } from '../data/metrics.js';
import { suiteOf } from '../data/importers/flashbacks.js';
import { type InstanceRecord, type OldRecord } from '../data/records.js';
import { type Device } from '../device.js';
import { CheckpointError } from '../errors.js';
import { type LlamaModel } from '../model/llama.js';
import { saveSafetensors } from '../model/safetensors.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { type Tensor, zeros } from '../tensor.js';
import { readJson, writeFileAtomic } from '../util/files.js';
import { checkpointTensors } from './checkpoint.js';
import { evaluateNew, evaluateOld } from './evaluate.js';
import { type LatentPool } from './pool.js';

/** The rules train()'s `keepBest` picks the checkpoint to keep by. */
export const KEEP_BEST = ['old', 'new', 'balanced'] as const;
/** A rule of {@link KEEP_BEST}: old-task accuracy, new-task ROUGE-L, or ROUGE-L minus forgetting. */
export type KeepBest = (typeof KEEP_BEST)[number];

/** One evaluation during a training run. Scores are fractions (0 to 1); forgetting and score are in points (0 to 100). */
export interface EvalScores {
  /** the step evaluated after (0: before training) */
  step: number;
  /** the old suites: accuracy, the mean of the suites' accuracies (each suite counts the same), and each suite's */
  old?: { accuracy: number; suites: Record<string, number>; records: number };
  /** the new tasks: mean ROUGE-L and exact-match rate */
  new?: { rougeL: number; exactMatch: number; records: number };
  /** points of old-task accuracy below step 0's (negative when above), with evalOld */
  forgetting?: number;
  /** the score the kept checkpoint is chosen by (keepBest's rule, in points), when one is kept */
  score?: number;
}

/** What train()'s `onEval` receives after each evaluation. */
export interface EvalProgress extends EvalScores {
  /** steps the run will take */
  totalSteps: number;
  /** milliseconds the evaluation took */
  elapsedMs: number;
  /** the evaluation whose checkpoint is kept so far (this one when it is the best), when one is kept */
  kept?: EvalScores;
  /** why the run stops after this evaluation (maxForgetting), when it does */
  stop?: string;
  /** the generated outputs, in the order of the evaluated records */
  predictions: { old?: string[]; new?: string[] };
}

/** What train()'s `onEvalBatch` receives while an evaluation runs. */
export interface EvalBatchProgress {
  /** the step being evaluated after */
  step: number;
  /** steps the run will take */
  totalSteps: number;
  /** the set being scored */
  set: 'old' | 'new';
  /** its records done */
  done: number;
  /** its records */
  records: number;
}

/** How a run evaluates, resolved by planning. */
export interface EvalPlan {
  every: number;
  /** the old-suite records evaluated (at most `limit`, spread over the suites) */
  old?: OldRecord[];
  /** the new-task records evaluated (at most `limit`, spread over the tasks) */
  new?: InstanceRecord[];
  batch: number;
  maxNewTokens: number;
  /** what the kept checkpoint is chosen by: a keepBest rule, or 'latest' (maxForgetting alone: the last evaluation within it) */
  keep?: KeepBest | 'latest';
  maxForgetting?: number;
}

/** How a run stopped on its forgetting guard. */
export interface ForgettingStop {
  /** the step it stopped after */
  step: number;
  /** points of old-task accuracy lost since step 0 */
  forgetting: number;
  /** the limit it passed */
  maxForgetting: number;
  /** the reason in words */
  reason: string;
}

/**
 * At most `limit` records, spread evenly over the groups `key` names: one of each group in turn (in
 * the order the groups first appear, each group's records in file order) until `limit` are taken.
 * A file sorted by suite is then still sampled from every suite.
 * @param records - the records.
 * @param limit - how many to take at most.
 * @param key - a record's group.
 * @returns the records taken, in the order they appear in `records`.
 * @example
 * ```ts
 * spreadSample([{ task: 'a' }, { task: 'a' }, { task: 'b' }], 2, (r) => r.task); // [{ task: 'a' }, { task: 'b' }]
 * ```
 */
export function spreadSample<T>(records: readonly T[], limit: number, key: (r: T) => string): T[] {
  if (records.length <= limit) return [...records];
  const groups = new Map<string, number[]>();
  records.forEach((r, i) => {
    const k = key(r);
    const g = groups.get(k);
    if (g) g.push(i);
    else groups.set(k, [i]);
  });
  const taken: number[] = [];
  for (let round = 0; taken.length < limit; round++)
    for (const g of groups.values()) if (round < g.length && taken.length < limit) taken.push(g[round]!);
  return taken.sort((a, b) => a - b).map((i) => records[i]!);
}

/** The eval file records, the sample a run evaluates: old records spread over suites, new over tasks. */
export function evalSample(old: OldRecord[] | undefined, fresh: InstanceRecord[] | undefined, limit: number): { old?: OldRecord[]; new?: InstanceRecord[] } {
  return {
    ...(old ? { old: spreadSample(old, limit, (r) => suiteOf(r.task)) } : {}),
    ...(fresh ? { new: spreadSample(fresh, limit, (r) => r.task) } : {}),
  };
}

/** Rounded to 1e-6 so that 100 * (0.7 - 0.6) is 10 points, as a user reads it, not 9.999999999999998. */
const points = (x: number) => Math.round(x * 1e8) / 1e6;

/** Mean of the suites' accuracies, and each suite's. */
function suiteAccuracy(records: OldRecord[], predictions: string[]): { accuracy: number; suites: Record<string, number> } {
  const bySuite = new Map<string, number[]>();
  records.forEach((r, i) => {
    const s = suiteOf(r.task);
    bySuite.set(s, [...(bySuite.get(s) ?? []), i]);
  });
  const suites: Record<string, number> = {};
  for (const [s, idx] of bySuite) suites[s] = accuracy(idx.map((i) => records[i]!), idx.map((i) => predictions[i]!));
  const values = Object.values(suites);
  return { accuracy: values.reduce((a, b) => a + b, 0) / values.length, suites };
}

const STATE_FILE = 'evals.json';
const KEPT_FILE = 'best.safetensors';

/**
 * A run's evaluations: which steps are due, the step-0 scores, the kept checkpoint (a copy of the
 * trained tensors) and the forgetting stop. Saved in and restored from the run's checkpoints.
 */
export class RunEvals {
  /** the step-0 evaluation */
  start?: EvalScores;
  /** the evaluation whose tensors are kept */
  kept?: EvalScores;
  /** the last step evaluated */
  last?: number;
  /** set when the forgetting guard stops the run */
  stopped?: ForgettingStop;
  /** copies of `params` at the kept evaluation */
  #copy?: Tensor[];

  /**
   * @param plan - what to evaluate and how.
   * @param totalSteps - the run's steps; the last is always evaluated.
   * @param params - the trained tensors (adapters, latent tasks) a kept checkpoint copies.
   */
  constructor(readonly plan: EvalPlan, readonly totalSteps: number, readonly params: Tensor[]) {}

  /** Whether step `step` is evaluated: step 0, every `every` steps, and the last. */
  due(step: number): boolean {
    return step % this.plan.every === 0 || step === this.totalSteps;
  }

  /** Whether step `step` is due and not yet evaluated (a run resumed from a checkpoint written before its evaluation finished). */
  pending(step: number): boolean {
    return this.due(step) && this.last !== step;
  }

  /**
   * Evaluates the model as it is after `step`, updates the kept checkpoint and the stop.
   * @returns the scores, what is kept, why the run stops (if it does) and the predictions.
   */
  async evaluate(
    step: number,
    model: LlamaModel,
    tokenizer: Tokenizer,
    o: { pool?: LatentPool | undefined; signal?: AbortSignal | undefined; onBatch?: ((p: EvalBatchProgress) => void) | undefined },
  ): Promise<EvalProgress> {
    const started = performance.now();
    const generation = { batch: this.plan.batch, maxNewTokens: this.plan.maxNewTokens, latent: o.pool, signal: o.signal };
    const scores: EvalScores = { step };
    const predictions: EvalProgress['predictions'] = {};
    if (this.plan.old) {
      const r = await evaluateOld(model, tokenizer, this.plan.old, { ...generation, onBatch: (done, records) => o.onBatch?.({ step, totalSteps: this.totalSteps, set: 'old', done, records }) });
      scores.old = { ...suiteAccuracy(this.plan.old, r.predictions), records: this.plan.old.length };
      predictions.old = r.predictions;
    }
    if (this.plan.new) {
      const r = await evaluateNew(model, tokenizer, this.plan.new, { ...generation, onBatch: (done, records) => o.onBatch?.({ step, totalSteps: this.totalSteps, set: 'new', done, records }) });
      scores.new = { rougeL: r.rougeL, exactMatch: r.exactMatch, records: this.plan.new.length };
      predictions.new = r.predictions;
    }
    if (step === 0) this.start = { ...scores };
    if (!this.start) throw new Error(`train: no step-0 evaluation before step ${step}`);
    if (scores.old) scores.forgetting = points(this.start.old!.accuracy - scores.old.accuracy);
    const { keep, maxForgetting } = this.plan;
    const beyond = maxForgetting !== undefined && scores.forgetting! > maxForgetting;
    if (keep) {
      scores.score = this.score(scores, keep);
      // Ties go to the later step (more training at the same score); an evaluation beyond the
      // forgetting limit is never kept.
      if (!beyond && (this.kept === undefined || scores.score >= this.kept.score!)) this.keep(scores);
    }
    this.last = step;
    if (beyond) {
      const kept = this.kept ? `kept the checkpoint of step ${this.kept.step}${this.kept.step === 0 ? ' (the untrained adapter: no evaluation after it stayed within the limit)' : ''}` : 'nothing kept';
      this.stopped = {
        step,
        forgetting: scores.forgetting!,
        maxForgetting: maxForgetting!,
        reason: `old-task accuracy fell ${scores.forgetting!.toFixed(1)} points below step 0's (${(100 * this.start.old!.accuracy).toFixed(1)}% -> ${(100 * scores.old!.accuracy).toFixed(1)}%), more than maxForgetting ${maxForgetting}: stopped after step ${step} of ${this.totalSteps}; ${kept}`,
      };
    }
    return {
      ...scores,
      totalSteps: this.totalSteps,
      elapsedMs: performance.now() - started,
      ...(this.kept ? { kept: this.kept } : {}),
      ...(this.stopped ? { stop: this.stopped.reason } : {}),
      predictions,
    };
  }

  /** The keep rule's score, in points. */
  private score(s: EvalScores, keep: KeepBest | 'latest'): number {
    switch (keep) {
      case 'old':
        return points(s.old!.accuracy);
      case 'new':
        return points(s.new!.rougeL);
      case 'balanced':
        // Forgetting counts only as a loss: old-task accuracy above the start is noise of a small
        // eval set more often than skill, and must not buy a checkpoint worse on the new tasks.
        return points(s.new!.rougeL) - Math.max(0, s.forgetting!);
      case 'latest':
        return s.step;
    }
  }

  /** Copies the trained tensors as they are now: the checkpoint to keep. */
  private keep(scores: EvalScores): void {
    this.#copy ??= this.params.map((p) => zeros(p.shape, p.dtype, { device: p.device as Device }));
    this.#copy.forEach((c, i) => c.copyFrom(this.params[i]!));
    this.kept = { ...scores };
  }

  /** Puts the kept checkpoint's tensors back into the trained ones (at the end of the run). */
  restoreKept(): void {
    this.#copy?.forEach((c, i) => this.params[i]!.copyFrom(c));
  }

  /** Writes the evaluation state into a checkpoint folder being filled. */
  save(dir: string): void {
    writeFileAtomic(join(dir, STATE_FILE), `${JSON.stringify({ start: this.start, kept: this.kept, last: this.last })}\n`);
    if (this.#copy) saveSafetensors(join(dir, KEPT_FILE), Object.fromEntries(this.#copy.map((t, i) => [`param.${i}`, t])));
  }

  /** Reads the evaluation state of a checkpoint (written by {@link RunEvals.save}). */
  restore(dir: string): void {
    const file = join(dir, STATE_FILE);
    if (!existsSync(file)) throw new CheckpointError(`train: the checkpoint is incomplete: ${file} is missing`);
    const state = readJson<{ start?: EvalScores; kept?: EvalScores; last?: number }>(file);
    Object.assign(this, { start: state.start, kept: state.kept, last: state.last });
    if (!state.kept) return;
    const saved = checkpointTensors('train', join(dir, KEPT_FILE), this.params.map((_, i) => `param.${i}`));
    try {
      this.#copy = this.params.map((p, i) => zeros(p.shape, p.dtype, { device: p.device as Device }).copyFrom(saved[`param.${i}`]!));
    } catch (e) {
      throw new CheckpointError(`train: ${join(dir, KEPT_FILE)} does not fit this run's parameters (${(e as Error).message})`);
    } finally {
      Object.values(saved).forEach((t) => t.dispose());
    }
  }

  /** Frees the kept copy. */
  dispose(): void {
    this.#copy?.forEach((t) => t.dispose());
    this.#copy = undefined;
  }
}
