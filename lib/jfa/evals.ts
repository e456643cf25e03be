// Evaluation during training: the old suites (accuracy) and the new tasks (ROUGE-L) scored by the
// same batched generation as `jfa eval`, at step 0 and every `evalEvery` steps; the checkpoint to
// keep (a copy of the trained tensors at the best evaluation so far) and the forgetting guard. The
// state lives in the run's checkpoints (evals.json and best.safetensors), so a resumed run
// evaluates, keeps and stops exactly as an uninterrupted one.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { checkRecords } from '../data/jsonl.js';
import { accuracy } from '../data/metrics.js';
import { hashString } from '../data/rng.js';
import { suiteOf } from '../data/importers/flashbacks.js';
import { type InstanceRecord, type OldRecord } from '../data/records.js';
import { type Device } from '../device.js';
import { CheckpointError, DataError, describeValue, OptionError } from '../errors.js';
import { type LlamaModel } from '../model/llama.js';
import { saveSafetensors } from '../model/safetensors.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { type Tensor, zeros } from '../tensor.js';
import { readJson, writeFileAtomic } from '../util/files.js';
import { checkpointTensors } from './checkpoint.js';
import { EVAL_DEFAULTS, evaluateNew, evaluateOld } from './evaluate.js';
import { type LatentPool } from './pool.js';

/** The rules train()'s `keepBest` picks the checkpoint to keep by. */
export const KEEP_BEST = ['old', 'new', 'balanced'] as const;
/** A rule of {@link KEEP_BEST}: old-task accuracy, new-task ROUGE-L, or ROUGE-L minus forgetting. */
export type KeepBest = (typeof KEEP_BEST)[number];

/** The old suites' scores of one evaluation ({@link EvalScores.old}). */
export interface OldEvalScores {
  /** the mean of the suites' accuracies (each suite counts the same), 0 to 1 */
  accuracy: number;
  /** each suite's accuracy, 0 to 1 */
  suites: Record<string, number>;
  /** old-suite records evaluated */
  records: number;
}

/** The new tasks' scores of one evaluation ({@link EvalScores.new}). */
export interface NewEvalScores {
  /** mean ROUGE-L, 0 to 1 */
  rougeL: number;
  /** exact-match rate, 0 to 1 */
  exactMatch: number;
  /** new-task records evaluated */
  records: number;
}

/** The generated outputs of one evaluation ({@link EvalProgress.predictions}), in the order of the evaluated records. */
export interface EvalPredictions {
  /** for the old-suite records, with evalOld */
  old?: string[];
  /** for the new-task records, with evalNew */
  new?: string[];
}

/** One evaluation during a training run. Scores are fractions (0 to 1); forgetting and score are in points (0 to 100). */
export interface EvalScores {
  /** the step evaluated after (0: before training) */
  step: number;
  /** the old suites: accuracy, the mean of the suites' accuracies (each suite counts the same), and each suite's */
  old?: OldEvalScores;
  /** the new tasks: mean ROUGE-L and exact-match rate */
  new?: NewEvalScores;
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
  predictions: EvalPredictions;
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

/** train()'s defaults for its evaluations (gathered in TRAIN_DEFAULTS, which `jfa train` reads). */
export const EVAL_RUN_DEFAULTS = {
  /** records of each eval set scored at most */
  evalLimit: 64,
  /** prompts generated together (jfa eval's) */
  evalBatch: EVAL_DEFAULTS.batch,
  /** tokens generated per prompt at most (jfa eval's) */
  evalMaxNewTokens: EVAL_DEFAULTS.maxNewTokens,
} as const;

/** The evaluation options of train() (part of its TrainOptions); defaults in {@link EVAL_RUN_DEFAULTS}. */
export interface TrainEvalOptions {
  /**
   * Evaluate every this many steps (and before the first step, and after the last) on `evalOld`
   * (accuracy) and/or `evalNew` (ROUGE-L), by the same batched greedy generation as
   * {@link evaluateOld}/{@link evaluateNew} (`jfa eval`); with a 'retrieve' latent pool, each prompt
   * retrieves its latent tasks. The scores go to metrics.jsonl (`type: 'eval'`), TensorBoard
   * (eval/*) and `onEval`. Evaluating changes nothing in the training: the adapter at every step is
   * the same as without it.
   */
  evalEvery?: number | undefined;
  /** old-suite records with their `answer`, scored by accuracy (the mean of the suites' accuracies) */
  evalOld?: OldRecord[] | undefined;
  /** new-task records, scored by ROUGE-L against their outputs */
  evalNew?: InstanceRecord[] | undefined;
  /** records of each eval set scored at most (default 64), one of each suite (old) or task (new) in turn */
  evalLimit?: number | undefined;
  /** prompts generated together when evaluating (default 16, as jfa eval) */
  evalBatch?: number | undefined;
  /** tokens generated per prompt at most when evaluating (default 64, as jfa eval) */
  evalMaxNewTokens?: number | undefined;
  /**
   * Keep the checkpoint of the best evaluation instead of the last step's: at the end of the run the
   * model's adapter (and latent pool) are those tensors, and so is outDir/adapter. 'old': old-task
   * accuracy (needs evalOld); 'new': new-task ROUGE-L (evalNew); 'balanced': ROUGE-L minus
   * forgetting, in points, where forgetting is the old-task accuracy lost since step 0 (a gain counts
   * as 0; needs both). Step 0 (the untrained adapter) competes too; ties go to the later step, and an
   * evaluation beyond `maxForgetting` is never kept.
   */
  keepBest?: KeepBest | undefined;
  /**
   * Stop the run once old-task accuracy is more than this many points (0 to 100) below step 0's
   * (needs evalOld). The run then ends cleanly (no error): its adapter is the kept checkpoint, by
   * `keepBest`, or without it the last evaluation within the limit, and `evals.stopped` says why.
   */
  maxForgetting?: number | undefined;
  /**
   * Called after each evaluation (once its metrics are written, before the step's checkpoint and
   * `onStep`) and awaited when it returns a promise; a throw or rejection stops the run as `onStep`'s does.
   */
  onEval?: ((e: EvalProgress) => unknown) | undefined;
  /** Called while evaluating, after each batch of prompts: the step, which set, the records done and the set's total. */
  onEvalBatch?: ((p: EvalBatchProgress) => void) | undefined;
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

/**
 * The evaluation options, checked: how they combine (keepBest 'old' without evalOld, say), their
 * values, and the eval records (DataError naming each item; old-suite records need an answer).
 */
export function checkEvalOptions(o: TrainEvalOptions & { distributed?: unknown }): void {
  const given = (['evalOld', 'evalNew', 'evalLimit', 'evalBatch', 'evalMaxNewTokens', 'keepBest', 'maxForgetting', 'onEval', 'onEvalBatch'] as const).filter((k) => o[k] !== undefined);
  if (o.evalEvery === undefined) {
    if (given.length) throw new OptionError(`train: ${given.join(', ')} need${given.length > 1 ? '' : 's'} evalEvery (how many steps between evaluations)`);
    return;
  }
  const positiveInt = (name: string, v: unknown) => {
    if (v !== undefined && !(typeof v === 'number' && Number.isInteger(v) && v >= 1)) throw new OptionError(`train: ${name} must be a positive integer, got ${describeValue(v)}`);
  };
  positiveInt('evalEvery', o.evalEvery);
  positiveInt('evalLimit', o.evalLimit);
  positiveInt('evalBatch', o.evalBatch);
  positiveInt('evalMaxNewTokens', o.evalMaxNewTokens);
  if (o.distributed !== undefined) throw new OptionError('train: evalEvery cannot be combined with distributed (yet): evaluate the run in one process, or its checkpoints with jfa eval');
  if (o.evalOld === undefined && o.evalNew === undefined) throw new OptionError('train: evalEvery needs something to evaluate: evalOld (old-suite records with answers) and/or evalNew (new-task records)');
  if (o.keepBest !== undefined) {
    if (!(KEEP_BEST as readonly string[]).includes(o.keepBest)) throw new OptionError(`train: keepBest must be ${KEEP_BEST.join(', ')}, got ${describeValue(o.keepBest)}`);
    const needs = { old: ['evalOld'], new: ['evalNew'], balanced: ['evalOld', 'evalNew'] }[o.keepBest].filter((k) => o[k as 'evalOld' | 'evalNew'] === undefined);
    if (needs.length) throw new OptionError(`train: keepBest '${o.keepBest}' needs ${needs.join(' and ')}`);
  }
  if (o.maxForgetting !== undefined) {
    if (!(typeof o.maxForgetting === 'number' && o.maxForgetting >= 0 && o.maxForgetting <= 100)) throw new OptionError(`train: maxForgetting must be a number of points in [0, 100], got ${describeValue(o.maxForgetting)}`);
    if (o.evalOld === undefined) throw new OptionError('train: maxForgetting needs evalOld (the old-suite accuracy it watches)');
  }
  const old = o.evalOld === undefined ? undefined : checkRecords('train: evalOld', o.evalOld, 'instance');
  const fresh = o.evalNew === undefined ? undefined : checkRecords('train: evalNew', o.evalNew, 'instance');
  if (old?.length === 0 || fresh?.length === 0) throw new DataError([`train: ${old?.length === 0 ? 'evalOld' : 'evalNew'} has no records`]);
  const unanswered = old?.map((r, i) => (r.answer === undefined ? `train: evalOld[${i}]: missing field 'answer' (old-suite records are scored by their answer)` : '')).filter(Boolean) ?? [];
  if (unanswered.length) throw new DataError(unanswered);
}

/** The evaluations of a run (its options checked by checkEvalOptions), resolved; undefined without evalEvery. */
export function planEvals(o: TrainEvalOptions): EvalPlan | undefined {
  if (o.evalEvery === undefined) return undefined;
  const limit = o.evalLimit ?? EVAL_RUN_DEFAULTS.evalLimit;
  const keep = o.keepBest ?? (o.maxForgetting !== undefined ? ('latest' as const) : undefined);
  return {
    every: o.evalEvery,
    ...evalSample(o.evalOld, o.evalNew, limit),
    batch: o.evalBatch ?? EVAL_RUN_DEFAULTS.evalBatch,
    maxNewTokens: o.evalMaxNewTokens ?? EVAL_RUN_DEFAULTS.evalMaxNewTokens,
    ...(keep ? { keep } : {}),
    ...(o.maxForgetting !== undefined ? { maxForgetting: o.maxForgetting } : {}),
  };
}

/** What a resumed run's evaluations must share with the checkpoint's: the settings and a hash of the records evaluated. */
export function evalIdentity(e: EvalPlan): Record<string, unknown> {
  const { old, new: fresh, ...settings } = e;
  return { ...settings, ...(old ? { old: hashString(JSON.stringify(old)) } : {}), ...(fresh ? { new: hashString(JSON.stringify(fresh)) } : {}) };
}
