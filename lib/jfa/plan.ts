// A training run's plan: every default of train() in one object (which `jfa train`'s flags and
// --help read too), the options checked, the continued run read, the model placed, and the run's
// settings resolved once. Only the plan travels on from here: nothing after planning reads the
// options again.
import { checkRecords } from '../data/jsonl.js';
import { type FlashbackRecord, type InstanceRecord } from '../data/records.js';
import { checkDevice, type Device } from '../device.js';
import { checkKeys, DataError, describeValue, OptionError } from '../errors.js';
import { type DistributedOptions, type ProcessGroup } from '../distributed.js';
import { type KlKind, type Reduction } from '../kernels.js';
import { type LlamaModel } from '../model/llama.js';
import { LORA_DEFAULTS, type LoraConfig } from '../model/peft.js';
import { accumulateFlashbacks, checkContinue, CONTINUE_MODES, type ContinueMode, DEFAULT_CONTINUE_MODE, earlierPrompts, type PreviousRun, readRun } from './continual.js';
import { checkEvalOptions, EVAL_RUN_DEFAULTS, evalIdentity, type EvalBatchProgress, type EvalPlan, type EvalProgress, planEvals, type TrainEvalOptions } from './evals.js';
import { type LatentOptions } from './latent.js';
import { type StepProgress } from './loop.js';
import { type Method, type MethodPreset, presetOf } from './methods.js';
import { LATENT_MODES, type LatentMode } from './pool.js';
import { REGULARIZER_DEFAULTS, type RegularizerOptions, regularizerSettings, type RunRegularizers } from './regularizers.js';
import { STEP_DEFAULTS, type StepSwitches } from './step.js';
import { isStream } from './streamed.js';

/**
 * Every default of {@link train}'s options. `latentDropout` depends on the latent mode; PCGrad,
 * flashbacks, latent tasks and replay come with the method (its row of METHOD_PRESETS). The step's
 * loss and clipping settings, the LoRA shape and the continue mode are written where their layer
 * is, and gathered here.
 */
export const TRAIN_DEFAULTS = {
  /** passes over the new-task records */
  epochs: 1,
  /** samples per micro-batch */
  microBatch: 4,
  /** new-task micro-batches per optimizer step */
  accumulation: 4,
  /** flashback micro-batches per optimizer step, for methods with flashbacks */
  flashbackMicroBatches: 1,
  /** the longest tokenized example */
  maxTokens: 256,
  /** peak learning rate, cosine-scheduled after warm-up (jfa train's too) */
  lr: 1e-4,
  /** share of the steps spent warming up */
  warmupRatio: 0.1,
  /** AdamW's decoupled weight decay */
  weightDecay: 0,
  /** the combined gradient's norm is clipped to this */
  maxGradNorm: STEP_DEFAULTS.maxGradNorm,
  /** weight of the flashback divergence */
  alpha: STEP_DEFAULTS.alpha,
  /** the divergence's KL */
  kl: STEP_DEFAULTS.kl,
  /** the divergence's reduction over tokens */
  reduction: STEP_DEFAULTS.reduction,
  /** latent tasks on, for methods that have them */
  latent: true,
  /** how a latent pool serves, unless the method fixes it */
  latentMode: 'retrieve',
  /** the probability that a micro-batch trains without its latent increments, per latent mode */
  latentDropout: Object.freeze({
    /** the pool serves with the adapter: train with the increments always on */
    retrieve: 0,
    /** the adapter serves alone: leave the increments out of half the micro-batches */
    drop: 0.5,
  }),
  /** weight of the extra SFT loss with the latent increments off */
  plainSftWeight: STEP_DEFAULTS.plainSftWeight,
  /** the adapters' rank and alpha (LoRA's defaults) */
  lora: Object.freeze({
    /** the rank */
    r: LORA_DEFAULTS.r,
    /** PEFT's lora_alpha */
    loraAlpha: LORA_DEFAULTS.loraAlpha,
  }),
  /** seed of the data order, adapters, PCGrad orders and latent tasks */
  seed: 0,
  /** self-replay: tokens the base generates per flashback answer at most */
  selfReplayMaxNewTokens: 64,
  ...REGULARIZER_DEFAULTS,
  /** keep the reference's outputs of each flashback micro-batch (within 1 GiB) */
  cacheReference: true,
  /** how a continued run folds the earlier rounds' adapters */
  continueMode: DEFAULT_CONTINUE_MODE,
  /** records read, shuffled and held at a time when data.newTrain is a stream */
  streamWindow: 4096,
  /** with evalEvery: records of each eval set scored at most, spread over its suites or tasks */
  evalLimit: EVAL_RUN_DEFAULTS.evalLimit,
  /** with evalEvery: prompts generated together (jfa eval's) */
  evalBatch: EVAL_RUN_DEFAULTS.evalBatch,
  /** with evalEvery: tokens generated per prompt at most (jfa eval's) */
  evalMaxNewTokens: EVAL_RUN_DEFAULTS.evalMaxNewTokens,
} as const;

/** Options of {@link train}; every default is in {@link TRAIN_DEFAULTS}, which `jfa train` shares. */
export interface TrainOptions extends TrainEvalOptions, RegularizerOptions {
  /** the training method: a row of {@link METHOD_PRESETS}, which sets the switches below unless they are given */
  method: Method;
  /** where to train: 'cpu' (default: where the model is), 'cuda' or 'cuda:N'; the model is moved there first */
  device?: Device | undefined;
  /**
   * 'fp32' or 'bf16': the dtype the base model must have been loaded with (default: the model's).
   * The losses (divergence, cross-entropy) accumulate in float32 either way.
   */
  precision?: Precision | undefined;
  /** use latent tasks where the method has them (default true; false is the `--no-latent` ablation) */
  latent?: boolean | undefined;
  /** combine micro-batch gradients with PCGrad (default: the method's, true for jfa; false is `--no-pcgrad`) */
  pcgrad?: boolean | undefined;
  /** passes over the new-task records (default 1) */
  epochs?: number | undefined;
  /** samples per micro-batch */
  microBatch?: number | undefined;
  /** new-task micro-batches per optimizer step */
  accumulation?: number | undefined;
  /** flashback micro-batches per optimizer step (flashback, jfa) */
  flashbackMicroBatches?: number | undefined;
  /** the longest tokenized example (default 256) */
  maxTokens?: number | undefined;
  /** peak learning rate (default 1e-4), cosine-scheduled after warm-up */
  lr?: number | undefined;
  /** share of the steps spent warming up (default 0.1) */
  warmupRatio?: number | undefined;
  /** AdamW's decoupled weight decay (default 0) */
  weightDecay?: number | undefined;
  /** clip the combined gradient's norm to this (default 1.0, as transformers' Trainer) */
  maxGradNorm?: number | undefined;
  /** weight of the flashback divergence (default 1) */
  alpha?: number | undefined;
  /** the divergence's KL (default symmetric) */
  kl?: KlKind | undefined;
  /** the divergence's reduction over tokens (default mean) */
  reduction?: Reduction | undefined;
  /** the LoRA adapters added to the model (default r 8, loraAlpha 16: {@link LlamaModel.addLora}'s) */
  lora?: LoraConfig | undefined;
  /** the latent-task pool's size and retrieval (jfa with latent tasks) */
  latentOptions?: LatentOptions | undefined;
  /** layer whose o_proj carries the latent tasks (default: the middle one) */
  latentLayer?: number | undefined;
  /**
   * jfa with latent tasks: how the adapter is meant to serve. 'retrieve' (default): with the pool,
   * retrieved per prompt as in training (`jfa eval` applies adapter/latent_pool.safetensors);
   * 'drop': alone, so training leaves the increments out of some micro-batches (latentDropout).
   * The pool file is saved in both modes and records the mode; eval uses a 'drop' pool only when asked.
   */
  latentMode?: LatentMode | undefined;
  /**
   * jfa with latent tasks: the probability that a micro-batch runs without its increments (default
   * 0.5 in 'drop' mode, 0 in 'retrieve'). Drawn per micro-batch from the seed and the step, so a
   * resumed run draws the same.
   */
  latentDropout?: number | undefined;
  /**
   * jfa with latent tasks: weight of an extra SFT loss computed with the increments off, on the
   * new-task micro-batches that carry them (a dropped one is plain SFT already). Default 0.
   */
  plainSftWeight?: number | undefined;
  /** seed of the data order, adapters, PCGrad orders and latent tasks (default 0) */
  seed?: number | undefined;
  /**
   * self-replay: tokens the frozen base generates (greedily) per flashback answer at most (default
   * 64). The answers are made once before training and kept in outDir (self-replay.jsonl), which a
   * resumed run reads instead of generating again.
   */
  selfReplayMaxNewTokens?: number | undefined;
  /** where checkpoints, metrics.jsonl and the final adapter go */
  outDir?: string | undefined;
  /** save a checkpoint in outDir every this many steps */
  checkpointEvery?: number | undefined;
  /** continue from outDir's checkpoint (an Error when there is none) */
  resume?: boolean | undefined;
  /** keep the reference's logits (or, when those would pass 1 GiB, its final hidden states) of each flashback micro-batch instead of recomputing them (default true, within 1 GiB) */
  cacheReference?: boolean | undefined;
  /**
   * End the run after this many optimizer steps, with its final adapter, as transformers'
   * `max_steps`: the schedule (warm-up, cosine decay) spans these steps, whatever `epochs` says.
   */
  maxSteps?: number | undefined;
  /**
   * When data.newTrain is a stream (an AsyncIterable): records read at a time (default 4096). Each
   * window is shuffled by the seed, the epoch and the window's index, and is all of the stream
   * that is held; a larger window mixes records from further apart.
   */
  streamWindow?: number | undefined;
  /**
   * Pause after this step: a checkpoint is written (with outDir) and train() resolves with
   * `stoppedEarly`; `resume: true` continues the same run bit-identically. The schedule is the whole run's.
   */
  pauseAfter?: number | undefined;
  /**
   * Cancels the run: it stops at the next step boundary, writes a checkpoint (with outDir; resume
   * continues it) and rejects with an AbortError (code 'ABORT_ERR').
   */
  signal?: AbortSignal | undefined;
  /** the model's adapters from an earlier run are removed first (default: an error when it has some, unless resuming) */
  replaceAdapter?: boolean | undefined;
  /** keep the CPU allocator's cached blocks after the run (default: they go back to the system) */
  keepCache?: boolean | undefined;
  /**
   * Activation checkpointing for the run ({@link LlamaModel.activationCheckpointing}): each decoder
   * layer keeps only its input and is recomputed in the backward. Less memory for one more forward
   * pass of the layers, same results (default: the model's setting, off unless set)
   */
  activationCheckpointing?: boolean | undefined;
  /**
   * A finished run folder (an earlier `train({ outDir })`) to continue from: `model` must be the
   * base that run started from, as loaded; the earlier rounds' adapters are loaded into it
   * (folded by `continueMode`), this round trains a fresh adapter on top, its flashback reference is
   * the model after that run (its 'retrieve' latent pool included, which this round keeps training),
   * and its flashbacks are `data.flashbacks` plus prompts of the earlier rounds within
   * `flashbackBudget`. The run folder then records the whole chain (continual.json).
   */
  continueFrom?: string | undefined;
  /** with continueFrom: 'merge' (default) folds each finished round's adapter into the weights, 'stack' keeps it frozen beneath */
  continueMode?: ContinueMode | undefined;
  /** with continueFrom: flashbacks in all, spread evenly over the old suites and the earlier rounds (default: data.flashbacks.length) */
  flashbackBudget?: number | undefined;
  /**
   * Called after each step, once its metrics (and checkpoint, if due) are written, and awaited when
   * it returns a promise. Between steps the model is the caller's: generate(), logits() and the
   * evaluations work on it and change nothing in the run. A throw or rejection stops the run like
   * an abort (a checkpoint with outDir) and rejects with a CallbackError whose cause is the error.
   */
  onStep?: ((p: StepProgress) => unknown) | undefined;
  /**
   * Also log each step's scalars to a TensorBoard event file in this directory (created if needed):
   * train/sft, train/divergence, train/grad_norm, train/lr, train/conflicts, train/tokens_per_second
   * (and train/plain_sft when plainSftWeight is set). `tensorboard --logdir DIR` shows them.
   */
  tensorboard?: string | undefined;
  /**
   * Data-parallel training over processes and hosts (c10d: a TCPStore at masterAddr:masterPort,
   * Gloo on CPU): this process's rank and the world size, or a group already joined. Every rank
   * calls train() with the same model, data and options; each takes its shard of every micro-batch
   * (rows i with i % worldSize == rank), gradients are summed per micro-batch before PCGrad, and the
   * result equals a single process's run at the same global batch. Rank 0 alone writes outDir
   * (metrics, checkpoints, the adapter); the others read a checkpoint from it with resume, so it must
   * be reachable from every host then. `distributedFromEnv()` reads torchrun's variables.
   */
  distributed?: DistributedOptions | ProcessGroup | undefined;
}

/** What {@link train} trains on. */
export interface TrainData {
  /**
   * the new tasks' examples: an array, or a stream (an AsyncIterable such as
   * {@link readJsonlStream}'s, iterated again for each epoch and for resuming) read in windows of
   * `streamWindow` records; a stream needs `maxSteps`
   */
  newTrain: InstanceRecord[] | AsyncIterable<InstanceRecord>;
  /** prompts of old tasks, for the divergence (flashback, jfa) */
  flashbacks?: FlashbackRecord[] | undefined;
  /** old-task training data, for the replay baseline only */
  replay?: InstanceRecord[] | undefined;
}

/** Training precisions: the base model's dtype. */
export type Precision = 'fp32' | 'bf16';
const PRECISION_DTYPE = { fp32: 'float32', bf16: 'bfloat16' } as const;

/** The earlier rounds a continued run trains on top of. */
export interface Continuation {
  prev: PreviousRun;
  mode: ContinueMode;
  /** flashbacks in all, over the old suites and the earlier rounds */
  budget: number;
}

/** A run's settings, checked and resolved: all that the stages after planning read. */
export interface RunPlan {
  /** the method asked for, recorded in metrics and checkpoints */
  method: Method;
  /** what the native step does with the micro-batches */
  switches: StepSwitches;
  seed: number;
  microBatch: number;
  accumulation: number;
  flashbackMicro: number;
  maxTokens: number;
  useLatent: boolean;
  latentRun: { mode: LatentMode; dropout: number; plainSftWeight: number };
  latentLayer: number;
  /** the pool's size and retrieval, as given (LatentTasks' own defaults fill the rest) */
  latentOptions: LatentOptions;
  usePcgrad: boolean;
  lr: number;
  weightDecay: number;
  /** the step's divergence and clipping */
  loss: { alpha: number; kl: KlKind; reduction: Reduction; maxGradNorm: number };
  /** the adapters added to a fresh run */
  lora: LoraConfig;
  /** keep the reference's outputs of every flashback micro-batch (within 1 GiB) */
  cacheReference: boolean;
  /** the new tasks' examples */
  newTrain: InstanceRecord[];
  /** the records trained on, in file order (new tasks, plus old-task data for replay; self-replay's answers join at the start of the run) */
  stream: InstanceRecord[];
  /** self-replay: the base answers every flashback (greedy, this many tokens at most) and the answers join the stream */
  selfReplay?: { maxNewTokens: number };
  /** ewc, o-lora, pace: the penalties and noise of the step */
  regularizers: RunRegularizers;
  flashbacks: FlashbackRecord[];
  stepsPerEpoch: number;
  totalSteps: number;
  warmup: number;
  /** the step to stop before: totalSteps, or pauseAfter when that comes first */
  stopAt: number;
  outDir?: string;
  resume: boolean;
  checkpointEvery?: number;
  tensorboard?: string;
  activationCheckpointing?: boolean;
  onStep?: (p: StepProgress) => unknown;
  signal?: AbortSignal;
  replaceAdapter: boolean;
  keepCache: boolean;
  /** the earlier rounds of a continued run */
  continued?: Continuation;
  /** data.newTrain as a stream, read in windows of `window` records (newTrain and stream are then empty, stepsPerEpoch 0) */
  streamed?: { source: AsyncIterable<unknown>; window: number };
  /** the evaluations during the run, with evalEvery */
  evals?: EvalPlan;
  onEval?: (e: EvalProgress) => unknown;
  onEvalBatch?: (p: EvalBatchProgress) => void;
  /** what a checkpoint must share with this run to continue it */
  state: Record<string, unknown>;
}

/**
 * Plans a run of {@link train}: checks every option (RangeErrors before anything is touched),
 * places the model where it trains, reads the run it continues, and resolves every setting.
 * @param model - the base model (moved to options.device).
 * @param data - what it trains on.
 * @param o - train()'s options.
 * @returns the run's plan.
 * @throws RangeError for an option out of range, a method without the data it needs, or a precision the model was not loaded in; the errors of a continued run's folder.
 */
export function planTrain(model: LlamaModel, data: TrainData, o: TrainOptions): RunPlan {
  checkTrainOptions(o);
  data = checkTrainData(data);
  // A resumed run loads its checkpoint's adapter over whatever the model has (the same object
  // after an abort, typically); a fresh run on a model with adapters must say so.
  if (model.hasLora && !o.replaceAdapter && !o.resume)
    throw new OptionError('train: this model already has adapters (an earlier train() or loadAdapter()): call model.removeLora() first, or pass replaceAdapter: true');
  const evals = planEvals(o);
  placeModel(model, o);
  const cont = continuation(model, data, o);
  return planRun(model, cont ? { ...data, flashbacks: cont.flashbacks } : data, o, evals, cont && { prev: cont.prev, mode: cont.mode, budget: cont.budget });
}

/** Every option name of {@link train} ({@link TrainOptions}' keys), for the unknown-key check. */
export const TRAIN_OPTION_NAMES = [
  'method', 'device', 'precision', 'latent', 'pcgrad', 'epochs', 'microBatch', 'accumulation', 'flashbackMicroBatches', 'maxTokens', 'lr',
  'warmupRatio', 'weightDecay', 'maxGradNorm', 'alpha', 'kl', 'reduction', 'lora', 'latentOptions', 'latentLayer', 'latentMode', 'latentDropout',
  'plainSftWeight', 'seed', 'selfReplayMaxNewTokens', 'ewcLambda', 'ewcSamples', 'oloraLambda', 'paceSigma', 'paceLambda', 'outDir', 'checkpointEvery', 'resume', 'cacheReference', 'maxSteps', 'pauseAfter', 'signal', 'replaceAdapter', 'keepCache',
  'activationCheckpointing', 'continueFrom', 'continueMode', 'flashbackBudget', 'onStep', 'tensorboard', 'distributed', 'streamWindow',
  'evalEvery', 'evalOld', 'evalNew', 'evalLimit', 'evalBatch', 'evalMaxNewTokens', 'keepBest', 'maxForgetting', 'onEval', 'onEvalBatch',
] as const satisfies readonly (keyof TrainOptions)[];
// Every key of TrainOptions is listed (a compile error here names the one missing).
const everyOption: Record<Exclude<keyof TrainOptions, (typeof TRAIN_OPTION_NAMES)[number]>, never> = {};
void everyOption;

const LORA_OPTION_NAMES = ['targets', 'r', 'loraAlpha', 'rslora', 'seed'] as const satisfies readonly (keyof LoraConfig)[];
const LATENT_OPTION_NAMES = ['groups', 'perGroup', 'k', 'scale', 'rank', 'seed', 'device'] as const satisfies readonly (keyof LatentOptions)[];

/**
 * Checks train()'s options as a JavaScript caller may pass them: unknown keys (at the top, in
 * `lora` and in `latentOptions`) are refused with the nearest valid name, values of the wrong type
 * or out of range are named as they are (NaN, Infinity, null), and the evaluation options and records
 * are checked as they combine (keepBest without its eval set, say). train() calls it first; callers may
 * too, to check options before loading anything.
 * @param o - the options.
 * @throws OptionError (code 'ERR_JFA_OPTION', a RangeError) naming the option and its value.
 * @example
 * ```ts
 * checkTrainOptions({ method: 'jfa', lr: 2e-4 }); // fine
 * checkTrainOptions({ method: 'jfa', epoch: 2 } as never); // OptionError: train: unknown option 'epoch' (did you mean 'epochs'?)
 * ```
 */
export function checkTrainOptions(o: TrainOptions): void {
  checkKeys('train', o, TRAIN_OPTION_NAMES);
  if (o.lora !== undefined) checkKeys('train: lora', o.lora, LORA_OPTION_NAMES);
  if (o.latentOptions !== undefined) checkKeys('train: latentOptions', o.latentOptions, LATENT_OPTION_NAMES);
  if (typeof o.method !== 'string') throw new OptionError(`train: method must be one of the methods' names (METHODS), got ${describeValue(o.method)}`);
  for (const k of ['latent', 'pcgrad', 'resume', 'cacheReference', 'replaceAdapter', 'keepCache'] as const)
    if (o[k] !== undefined && typeof o[k] !== 'boolean') throw new OptionError(`train: ${k} must be a boolean, got ${describeValue(o[k])}`);
  for (const k of ['outDir', 'continueFrom', 'tensorboard'] as const)
    if (o[k] !== undefined && (typeof o[k] !== 'string' || o[k] === '')) throw new OptionError(`train: ${k} must be a non-empty path, got ${describeValue(o[k])}`);
  for (const k of ['onStep', 'onEval', 'onEvalBatch'] as const)
    if (o[k] !== undefined && typeof o[k] !== 'function') throw new OptionError(`train: ${k} must be a function, got ${describeValue(o[k])}`);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new OptionError(`train: signal must be an AbortSignal, got ${describeValue(o.signal)}`);
  checkEvalOptions(o);
}

/**
 * The records of train()'s data, checked as readJsonl() checks a file (DataError naming each item);
 * a stream's records are checked as they are read.
 */
function checkTrainData(data: TrainData): TrainData {
  if (data === null || typeof data !== 'object') throw new DataError([`train: data must be { newTrain, flashbacks?, replay? }, got ${describeValue(data)}`]);
  checkKeys('train: data', data, ['newTrain', 'flashbacks', 'replay']);
  if (data.newTrain === undefined || (Array.isArray(data.newTrain) && data.newTrain.length === 0)) throw new DataError(['train: no new-task records (data.newTrain is empty)']);
  return {
    newTrain: isStream(data.newTrain) ? data.newTrain : checkRecords('train: data.newTrain', data.newTrain, 'instance'),
    ...(data.flashbacks === undefined ? {} : { flashbacks: checkRecords('train: data.flashbacks', data.flashbacks, 'flashback') }),
    ...(data.replay === undefined ? {} : { replay: checkRecords('train: data.replay', data.replay, 'instance') }),
  };
}

/** The latent-task options, checked: RangeErrors for values out of range or options that cannot apply. */
function latentSettings(o: TrainOptions, useLatent: boolean, preset: MethodPreset): { mode: LatentMode; dropout: number; plainSftWeight: number } {
  const given = (['latentMode', 'latentDropout', 'plainSftWeight'] as const).filter((k) => o[k] !== undefined);
  if (!useLatent && given.length)
    throw new OptionError(`train: ${given.join(', ')} appl${given.length > 1 ? 'y' : 'ies'} only to method 'jfa' with latent tasks (method '${o.method}'${o.latent === false ? ', latent off' : ''})`);
  const mode = o.latentMode ?? preset.latentMode ?? TRAIN_DEFAULTS.latentMode;
  if (!(LATENT_MODES as readonly string[]).includes(mode)) throw new OptionError(`train: latentMode must be ${LATENT_MODES.join(' or ')}, got ${JSON.stringify(o.latentMode)}`);
  const dropout = o.latentDropout ?? TRAIN_DEFAULTS.latentDropout[mode];
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout <= 1)) throw new OptionError(`train: latentDropout must be a probability in [0, 1], got ${describeValue(dropout)}`);
  const plainSftWeight = o.plainSftWeight ?? TRAIN_DEFAULTS.plainSftWeight;
  if (typeof plainSftWeight !== 'number' || !(plainSftWeight >= 0) || !Number.isFinite(plainSftWeight))
    throw new OptionError(`train: plainSftWeight must be a finite number >= 0, got ${describeValue(plainSftWeight)}`);
  return { mode, dropout, plainSftWeight };
}

/** RangeErrors for numeric options out of range, before anything is touched. */
function checkOptions(o: TrainOptions, latentLayers: number): void {
  const check = (name: string, v: number | undefined, ok: (n: number) => boolean, what: string) => {
    if (v !== undefined && !(typeof v === 'number' && ok(v))) throw new OptionError(`train: ${name} must be ${what}, got ${describeValue(v)}`);
  };
  const positiveInt = (n: number) => Number.isInteger(n) && n >= 1;
  const finite = Number.isFinite;
  for (const k of ['epochs', 'microBatch', 'accumulation', 'maxTokens', 'checkpointEvery', 'streamWindow'] as const) check(k, o[k], positiveInt, 'a positive integer');
  check('flashbackMicroBatches', o.flashbackMicroBatches, (n) => Number.isInteger(n) && n >= 0, 'an integer >= 0');
  check('maxSteps', o.maxSteps, positiveInt, 'a positive integer');
  check('pauseAfter', o.pauseAfter, (n) => Number.isInteger(n) && n >= 0, 'an integer >= 0');
  check('seed', o.seed, (n) => Number.isSafeInteger(n) && n >= 0, 'an integer >= 0');
  check('lr', o.lr, (n) => finite(n) && n > 0, 'a finite number > 0');
  check('maxGradNorm', o.maxGradNorm, (n) => finite(n) && n > 0, 'a finite number > 0');
  for (const k of ['alpha', 'weightDecay'] as const) check(k, o[k], (n) => finite(n) && n >= 0, 'a finite number >= 0');
  check('warmupRatio', o.warmupRatio, (n) => n >= 0 && n <= 1, 'a number in [0, 1]');
  check('lora.r', o.lora?.r, positiveInt, 'a positive integer');
  check('lora.loraAlpha', o.lora?.loraAlpha, (n) => finite(n) && n > 0, 'a finite number > 0');
  if (o.activationCheckpointing !== undefined && typeof o.activationCheckpointing !== 'boolean')
    throw new OptionError(`train: activationCheckpointing must be a boolean, got ${describeValue(o.activationCheckpointing)}`);
  check('selfReplayMaxNewTokens', o.selfReplayMaxNewTokens, positiveInt, 'a positive integer');
  check('latentLayer', o.latentLayer, (n) => Number.isInteger(n) && n >= 0 && n < latentLayers, `a layer in 0..${latentLayers - 1}`);
}

function planRun(model: LlamaModel, data: TrainData, o: TrainOptions, evals: EvalPlan | undefined, continued?: Continuation): RunPlan {
  const preset = presetOf(o.method, 'train');
  checkOptions(o, model.config.numLayers);
  const seed = o.seed ?? TRAIN_DEFAULTS.seed;
  const microBatch = o.microBatch ?? TRAIN_DEFAULTS.microBatch;
  const accumulation = o.accumulation ?? TRAIN_DEFAULTS.accumulation;
  const useLatent = preset.latent && (o.latent ?? TRAIN_DEFAULTS.latent);
  const latentRun = latentSettings(o, useLatent, preset);
  const flashbackMicro = preset.flashbacks ? (o.flashbackMicroBatches ?? TRAIN_DEFAULTS.flashbackMicroBatches) : 0;
  const flashbacks = data.flashbacks ?? [];
  const source = isStream(data.newTrain) ? data.newTrain : undefined;
  if (source) checkStreamed(o, preset, useLatent);
  else if (o.streamWindow !== undefined) throw new OptionError('train: streamWindow applies only when data.newTrain is a stream (an AsyncIterable)');
  const newTrain = source ? [] : (data.newTrain as InstanceRecord[]);
  if (!source && !newTrain.length) throw new OptionError('train: no new-task records (data.newTrain is empty)');
  if (flashbackMicro > 0 && flashbacks.length === 0) throw new OptionError(`train: method '${o.method}' needs flashbacks`);
  if (preset.replay && !data.replay?.length) throw new OptionError(`train: method '${o.method}' needs old-task training data`);
  const selfReplay = selfReplaySettings(o, preset, flashbacks.length);
  const regularizers = regularizerSettings(o, preset, flashbacks.length);
  const stream = preset.replay ? [...newTrain, ...data.replay!] : newTrain;
  // Self-replay adds one record per flashback (answered when the run starts).
  const records = stream.length + (selfReplay ? flashbacks.length : 0);
  // A stream's length is unknown: the run is maxSteps long (checkStreamed made sure it is given).
  const stepsPerEpoch = source ? 0 : Math.ceil(records / (microBatch * accumulation));
  const totalSteps = source ? o.maxSteps! : Math.min(stepsPerEpoch * (o.epochs ?? TRAIN_DEFAULTS.epochs), o.maxSteps ?? Infinity);
  const streamed = source && { source, window: o.streamWindow ?? TRAIN_DEFAULTS.streamWindow };
  const latentLayer = o.latentLayer ?? Math.floor(model.config.numLayers / 2);
  const latentOptions = o.latentOptions ?? {};
  return {
    method: o.method,
    switches: { divergence: preset.flashbacks, latent: useLatent },
    seed,
    microBatch,
    accumulation,
    flashbackMicro,
    maxTokens: o.maxTokens ?? TRAIN_DEFAULTS.maxTokens,
    useLatent,
    latentRun,
    latentLayer,
    latentOptions,
    usePcgrad: o.pcgrad ?? preset.pcgrad,
    lr: o.lr ?? TRAIN_DEFAULTS.lr,
    weightDecay: o.weightDecay ?? TRAIN_DEFAULTS.weightDecay,
    loss: {
      alpha: o.alpha ?? TRAIN_DEFAULTS.alpha,
      kl: o.kl ?? TRAIN_DEFAULTS.kl,
      reduction: o.reduction ?? TRAIN_DEFAULTS.reduction,
      maxGradNorm: o.maxGradNorm ?? TRAIN_DEFAULTS.maxGradNorm,
    },
    lora: { ...TRAIN_DEFAULTS.lora, ...o.lora, seed: o.lora?.seed ?? seed },
    cacheReference: o.cacheReference ?? TRAIN_DEFAULTS.cacheReference,
    newTrain,
    stream,
    ...(selfReplay ? { selfReplay } : {}),
    regularizers,
    flashbacks,
    stepsPerEpoch,
    totalSteps,
    warmup: Math.round(totalSteps * (o.warmupRatio ?? TRAIN_DEFAULTS.warmupRatio)),
    stopAt: Math.min(totalSteps, o.pauseAfter ?? totalSteps),
    outDir: o.outDir,
    resume: Boolean(o.resume),
    checkpointEvery: o.checkpointEvery,
    tensorboard: o.tensorboard,
    activationCheckpointing: o.activationCheckpointing,
    onStep: o.onStep,
    signal: o.signal,
    replaceAdapter: o.replaceAdapter ?? false,
    keepCache: o.keepCache ?? false,
    continued,
    ...(streamed ? { streamed } : {}),
    ...(evals ? { evals } : {}),
    onEval: o.onEval,
    onEvalBatch: o.onEvalBatch,
    state: {
      totalSteps,
      method: o.method,
      ...(streamed ? { stream: { window: streamed.window } } : {}),
      ...(useLatent ? { latent: { ...latentRun, layer: latentLayer, options: latentOptions } } : {}),
      ...(selfReplay ? { selfReplay } : {}),
      ...(Object.keys(regularizers).length ? { regularizers } : {}),
      ...(continued ? { continued: { run: continued.prev.run, mode: continued.mode, budget: continued.budget } } : {}),
      ...(evals ? { evals: evalIdentity(evals) } : {}),
    },
  };
}

/** What a streamed data.newTrain cannot be combined with, refused with what to do instead. */
function checkStreamed(o: TrainOptions, preset: MethodPreset, useLatent: boolean): void {
  if (o.maxSteps === undefined)
    throw new OptionError('train: data.newTrain is a stream (an AsyncIterable) of unknown length: give maxSteps, the length of the run (the learning-rate schedule spans it)');
  if (o.epochs !== undefined) throw new OptionError('train: epochs does not apply to a streamed data.newTrain: maxSteps sets the length of the run (the stream is read again as often as it takes)');
  if (useLatent)
    throw new OptionError(`train: method '${o.method}' with latent tasks retrieves for every new-task record before training, which a stream cannot give: pass data.newTrain as an array, or latent: false`);
  if (preset.replay) throw new OptionError(`train: method '${o.method}' mixes data.replay into the new-task records: pass data.newTrain as an array`);
  if (preset.selfReplay) throw new OptionError(`train: method '${o.method}' mixes the base's answers into the new-task records: pass data.newTrain as an array`);
}

/** Self-replay's settings, checked: undefined for other methods (which must not be given them). */
function selfReplaySettings(o: TrainOptions, preset: MethodPreset, flashbacks: number): { maxNewTokens: number } | undefined {
  if (!preset.selfReplay) {
    if (o.selfReplayMaxNewTokens !== undefined) throw new OptionError(`train: selfReplayMaxNewTokens applies only to method 'self-replay' (method '${o.method}')`);
    return undefined;
  }
  if (flashbacks === 0) throw new OptionError(`train: method '${o.method}' needs flashbacks: the prompts the base answers (data.flashbacks)`);
  if (o.continueFrom !== undefined) throw new OptionError(`train: method '${o.method}' cannot continue a run (continueFrom) yet: its answers come from the base without earlier rounds`);
  if (o.distributed !== undefined) throw new OptionError(`train: method '${o.method}' trains in one process (drop distributed)`);
  return { maxNewTokens: o.selfReplayMaxNewTokens ?? TRAIN_DEFAULTS.selfReplayMaxNewTokens };
}

/** The earlier rounds of a continued run and this round's flashbacks, checked; undefined when not continuing. */
function continuation(model: LlamaModel, data: TrainData, o: TrainOptions): (Continuation & { flashbacks: FlashbackRecord[] }) | undefined {
  if (!o.continueFrom) {
    const given = (['continueMode', 'flashbackBudget'] as const).filter((k) => o[k] !== undefined);
    if (given.length) throw new OptionError(`train: ${given.join(', ')} appl${given.length > 1 ? 'y' : 'ies'} only with continueFrom`);
    return undefined;
  }
  const mode = o.continueMode ?? TRAIN_DEFAULTS.continueMode;
  if (!(CONTINUE_MODES as readonly string[]).includes(mode)) throw new OptionError(`train: continueMode must be ${CONTINUE_MODES.join(' or ')}, got ${JSON.stringify(o.continueMode)}`);
  const budget = o.flashbackBudget ?? data.flashbacks?.length ?? 0;
  if (!Number.isInteger(budget) || budget < 0) throw new OptionError(`train: flashbackBudget must be a non-negative integer, got ${describeValue(o.flashbackBudget)}`);
  const prev = readRun(o.continueFrom);
  checkContinue(model, prev, mode);
  return { prev, mode, budget, flashbacks: accumulateFlashbacks(data.flashbacks ?? [], earlierPrompts(prev), budget, o.seed ?? TRAIN_DEFAULTS.seed) };
}

// Checks precision against the model's dtype and moves the model to the asked device, before any
// adapter, pool or optimizer state is made (they are made where the weights are).
function placeModel(model: LlamaModel, o: TrainOptions): void {
  if (o.precision !== undefined) {
    const want = PRECISION_DTYPE[o.precision];
    if (!want) throw new OptionError(`train: precision must be 'fp32' or 'bf16', got ${JSON.stringify(o.precision)}`);
    if (model.dtype !== want) {
      throw new OptionError(`train: precision '${o.precision}' needs the model loaded as ${want}, but it is ${model.dtype}: loadModel(dir, { dtype: '${want}' })`);
    }
  }
  if (o.device === undefined) return;
  const device = checkDevice(o.device, 'train');
  if (model.device !== (device === 'cuda' ? 'cuda:0' : device)) model.toDevice(device);
}
