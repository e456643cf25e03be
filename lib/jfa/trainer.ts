// train(): the run's orchestration. Planning (plan.ts) checks and resolves every option; then the
// parameters are set up (a continued run's rounds beneath, fresh or restored adapters, the latent
// pool with every record's retrieval, AdamW), the loop runs the native steps over batches.ts's
// micro-batches, and the run's folder gets metrics, checkpoints and the final adapter. Data order,
// PCGrad orders and retrieval depend only on the seed, so a run resumed from a checkpoint ends
// bit-identical to an uninterrupted one on the CPU.
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { writeJsonl } from '../data/jsonl.js';
import { type InstanceRecord } from '../data/records.js';
import { hashString } from '../data/rng.js';
import { ProcessGroup } from '../distributed.js';
import { type LlamaModel } from '../model/llama.js';
import { type Tokenizer } from '../model/tokenizer.js';
import { AdamW, cosineWithWarmup } from '../optim.js';
import { AbortError, CallbackError, CheckpointError, OptionError } from '../errors.js';
import { emptyCpuCache } from '../runtime.js';
import { errnoOf, inOutputFolder } from '../util/files.js';
import { TensorBoardWriter } from '../util/tensorboard.js';
import { batchMaker, type FlashbackSource, flashbackSource, streamBatchMaker } from './batches.js';
import { CHECKPOINT, findCheckpoint, lastCheckpoint, removeCheckpoint, restoreOptimizer, saveCheckpoint, saveOptimizer, writeFolder } from './checkpoint.js';
import { loadRounds, writeChain, writePrompts } from './continual.js';
import { checkDataParallelDevice, checkRanks, receiveLatent, type ResumePoint, resumePoint, sendLatent } from './data-parallel.js';
import { type LatentTasks } from './latent.js';
import { type EvalBatchProgress, type EvalProgress, type EvalScores, type ForgettingStop, type KeepBest, RunEvals } from './evals.js';
import { runSteps, type StepProgress } from './loop.js';
import { planTrain, type RunPlan, TRAIN_DEFAULTS, type TrainData, type TrainOptions } from './plan.js';
import { LATENT_POOL_FILE, LatentPool } from './pool.js';
import { type RunLatent, saveLatent, setUpLatent } from './retrieval.js';
import { stepPenalties } from './regularizers.js';
import { selfReplayRecords } from './self-replay.js';
import { checkPosition, firstRecords, StreamedRecords, type StreamPosition } from './streamed.js';

export { keepReference, referenceKeeping } from './batches.js';
export type { Precision, TrainData, TrainOptions } from './plan.js';
export type { EvalBatchProgress, EvalProgress, EvalScores, ForgettingStop, KeepBest, StepProgress };

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
  /** with evalEvery: the step-0 evaluation, the last one, the kept checkpoint's, and the forgetting stop */
  evals?: TrainEvals;
}

/** The evaluations of a run ({@link TrainResult.evals}). */
export interface TrainEvals {
  /** the evaluation before training */
  start: EvalScores;
  /** the last evaluation (of this call, or the checkpoint's) */
  last?: EvalScores;
  /** with keepBest or maxForgetting: the evaluation whose checkpoint the model (and outDir/adapter) ends with */
  kept?: EvalScores;
  /** set when maxForgetting ended the run: after which step, and why */
  stopped?: ForgettingStop;
}

/** What the run folder may hold that a failed run must leave in place. */
const KEEP = [CHECKPOINT, `${CHECKPOINT}.old`, 'adapter'];

/**
 * Fine-tunes `model` on new tasks with LoRA by one of the methods: sft, replay, flashback
 * (SFT + alpha x divergence to the base on flashback prompts) or jfa (flashbacks + latent tasks +
 * PCGrad), or one of jfa's ablations (see METHOD_PRESETS). With outDir it writes metrics.jsonl, checkpoints (resumable bit-identically on the CPU)
 * and the final adapter in PEFT's layout (with latent_pool.safetensors for jfa).
 * @param model - the base model; adapters are added to it and trained in place.
 * @param tokenizer - its tokenizer.
 * @param data - new-task examples (an array, or a stream such as {@link readJsonlStream}'s, read in windows of `streamWindow` records; a stream needs `maxSteps`), flashback prompts, and old-task data for replay.
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
  // Data-parallel: Gloo for a CPU model, NCCL for a GPU one; refused before the model moves when
  // this build cannot carry its tensors.
  if (o.distributed !== undefined) checkDataParallelDevice(typeof o.device === 'string' ? o.device : model.device, o.distributed);
  const plan = planTrain(model, data, o);
  tokenizer.checkFits(model.config.vocabSize);
  if (o.distributed !== undefined) {
    if (plan.continued) throw new RangeError('train: continueFrom cannot be combined with distributed (yet): continue the run in one process');
    const own = !(o.distributed instanceof ProcessGroup);
    const group = o.distributed instanceof ProcessGroup ? o.distributed : await ProcessGroup.connect(o.distributed, model.device);
    try {
      await checkRanks(group, model, data, o);
      const run = () => trainIn(model, tokenizer, plan, group);
      // Rank 0 alone holds and writes the output folder.
      if (plan.outDir === undefined || group.rank !== 0) return await run();
      return await inOutputFolder(plan.outDir, 'train', KEEP, run);
    } finally {
      if (own) group.dispose();
    }
  }
  // The output folder is held (a lock file) for the run. A run that fails before it has a checkpoint
  // or an adapter to show removes the folder again if it created it.
  if (plan.outDir === undefined) return trainIn(model, tokenizer, plan);
  return inOutputFolder(plan.outDir, 'train', KEEP, () => trainIn(model, tokenizer, plan));
}

/** The trained parameters, set up: adapters, latent pool and AdamW, and a continued run's flashbacks. */
interface Parameters {
  optimizer: AdamW;
  latent?: RunLatent;
  /** a continued run's flashbacks, whose reference was kept before the previous adapter was folded */
  flash?: FlashbackSource;
}

async function trainIn(model: LlamaModel, tokenizer: Tokenizer, planned: RunPlan, group?: ProcessGroup): Promise<TrainResult> {
  const resume = !planned.resume ? undefined : group ? await resumePoint(group, () => findRunCheckpoint(planned)) : findRunCheckpoint(planned);
  const writer = !group || group.rank === 0;
  const { optimizer, latent, flash: continued } = await setUpParameters(model, tokenizer, planned, resume, group);
  if (planned.outDir && writer) mkdirSync(planned.outDir, { recursive: true });
  const plan = planned.selfReplay ? await withSelfReplay(model, tokenizer, planned, resume !== undefined, writer).catch((e: unknown) => {
    optimizer.dispose();
    throw e;
  }) : planned;
  // ewc's Fisher (estimated, or the run folder's when resuming), o-lora's earlier A, pace's noise.
  const cache = { dir: plan.outDir, resume: resume !== undefined, write: writer };
  const run = { flashbacks: plan.flashbacks, seed: plan.seed, maxTokens: plan.maxTokens, previous: plan.continued?.prev, ...cache };
  const penalties = await stepPenalties(model, tokenizer, plan.regularizers, run).catch((e: unknown) => {
    optimizer.dispose();
    throw e;
  });
  const metricsFile = writer && plan.outDir ? join(plan.outDir, 'metrics.jsonl') : undefined;
  const shard = group && { rank: group.rank, world: group.worldSize };
  const flash = continued ?? flashbackSource(model, tokenizer, plan, undefined, shard);
  const records = plan.streamed && new StreamedRecords(plan.streamed.source, plan.seed, plan.streamed.window, resume?.position);
  const stepBatches = records ? streamBatchMaker(tokenizer, plan, flash, records, shard) : batchMaker(tokenizer, plan, flash, latent, shard);
  // A streamed run's checkpoint also says how far into the stream its steps have read.
  const save = (step: number) =>
    writer && plan.outDir && saveRunCheckpoint(plan.outDir, model, optimizer, latent, evals, { step, ...plan.state, ...(records ? { position: records.position } : {}) });

  let reached = resume?.step ?? 0;
  let saved = resume?.step;
  let stats = { tokens: 0, elapsedMs: 0 };
  const board = plan.tensorboard === undefined || !writer ? undefined : new TensorBoardWriter(plan.tensorboard);
  const evals = plan.evals && new RunEvals(plan.evals, plan.totalSteps, optimizer.params);
  let last: EvalScores | undefined;
  if (evals && resume?.dir) evals.restore(resume.dir);
  const evaluate = async (step: number) => {
    const e = await evals!.evaluate(step, model, tokenizer, {
      pool: latent?.pool.mode === 'retrieve' ? latent.pool : undefined,
      signal: plan.signal,
      onBatch: plan.onEvalBatch,
    });
    const { predictions: _, totalSteps: __, kept, stop, elapsedMs, ...scores } = e;
    last = scores;
    if (metricsFile) logRow(metricsFile, plan, step, { type: 'eval', method: plan.method, ...scores, elapsedMs, ...(kept ? { kept: kept.step } : {}), ...(stop ? { stop } : {}) });
    board?.scalars(step, evalScalars(scores));
    if (plan.onEval) {
      try {
        await plan.onEval(e);
      } catch (err) {
        throw new CallbackError(`train: onEval failed after step ${step}: ${(err as Error)?.message ?? String(err)}`, step, { cause: err });
      }
    }
  };
  const checkpointing = model.activationCheckpointing;
  if (plan.activationCheckpointing !== undefined) model.activationCheckpointing = plan.activationCheckpointing;
  try {
    // Before the first step (step 0, the reference forgetting is measured from), or a step whose
    // checkpoint was written but whose evaluation was cut short.
    if (evals?.pending(reached)) await evaluate(reached);
    stats = await runSteps({
      model,
      optimizer,
      from: reached,
      to: plan.stopAt,
      totalSteps: plan.totalSteps,
      lr: (step) => plan.lr * cosineWithWarmup(step, plan.warmup, plan.totalSteps),
      batches: stepBatches,
      options: (step) => ({
        method: plan.switches,
        ...plan.loss,
        pcgrad: plan.usePcgrad,
        seed: hashString(`${plan.seed}:pcgrad:${step}`),
        plainSftWeight: plan.latentRun.plainSftWeight,
        ...(penalties ? { penalties } : {}),
        ...(group ? { group, bucket: group.options.bucket } : {}),
      }),
      onStep: plan.onStep,
      signal: plan.signal,
      done: () => evals?.stopped !== undefined,
      after: (p) => {
        reached = p.step;
        if (metricsFile) logRow(metricsFile, plan, p.step, { type: 'train', method: plan.method, ...p });
        board?.scalars(p.step, {
          'train/sft': p.sft,
          'train/divergence': p.divergence,
          'train/grad_norm': p.gradNorm,
          'train/lr': p.lr,
          'train/conflicts': p.conflicts,
          'train/tokens_per_second': p.tokensPerSecond,
          ...(plan.latentRun.plainSftWeight ? { 'train/plain_sft': p.plainSft } : {}),
          ...(penalties ? { 'train/penalty': p.penalty } : {}),
        });
        const checkpoint = () => {
          if (plan.checkpointEvery && p.step % plan.checkpointEvery === 0 && p.step < plan.totalSteps && !evals?.stopped) {
            save(p.step);
            saved = p.step;
          }
        };
        // The step's evaluation goes first, so its checkpoint holds what the evaluation kept.
        if (!evals?.due(p.step)) return checkpoint();
        return evaluate(p.step).then(checkpoint);
      },
    });
  } catch (e) {
    // Cancelled, or the caller's onStep or onEval failed: at a step boundary, so the run is left
    // resumable where it stopped (unless that step's checkpoint is already written). An evaluation
    // cut short is done again on resume.
    if ((e instanceof AbortError || e instanceof CallbackError) && reached > (resume?.step ?? 0) && reached < plan.totalSteps && saved !== reached) save(reached);
    optimizer.dispose();
    evals?.dispose();
    throw e;
  } finally {
    model.activationCheckpointing = checkpointing;
    flash.dispose();
    for (const t of [...(penalties?.ewc?.fisher ?? []), ...(penalties?.olora?.previous ?? [])]) t.dispose();
    board?.close();
    await records?.close();
  }

  // A run the forgetting guard stopped is finished too (no checkpoint to resume).
  const finished = reached === plan.totalSteps || evals?.stopped !== undefined;
  // The kept checkpoint's tensors go back into the model before its adapter is written.
  if (finished && evals?.kept) evals.restoreKept();
  evals?.dispose();
  if (writer && plan.outDir && finished) {
    // A streamed run keeps the prompts of its source's first window (bounded, and the same however the run was resumed).
    const prompts = plan.streamed ? await firstRecords(plan.streamed.source, plan.streamed.window) : plan.newTrain;
    finishRun(plan.outDir, model, plan, latent, prompts);
    if (evals?.kept && metricsFile) logRow(metricsFile, plan, reached, { type: 'kept', method: plan.method, ...evals.kept, ...(evals.stopped ? { stopped: evals.stopped } : {}) });
  }
  else if (!finished) save(reached);
  optimizer.dispose();
  if (!plan.keepCache) emptyCpuCache();
  return {
    steps: reached,
    totalSteps: plan.totalSteps,
    stoppedEarly: reached < plan.totalSteps,
    tokens: stats.tokens,
    elapsedMs: stats.elapsedMs,
    latent: latent?.pool.tasks,
    pool: latent?.pool,
    ...(evals?.start
      ? { evals: { start: evals.start, ...(last ? { last } : {}), ...(evals.kept ? { kept: evals.kept } : {}), ...(evals.stopped ? { stopped: evals.stopped } : {}) } }
      : {}),
  };
}

/**
 * The trained parameters: a continued run's earlier rounds loaded beneath (the previous round's
 * model kept as the reference), adapters fresh or the checkpoint's, then the latent pool, then
 * AdamW (restored when resuming). Every rank of a data-parallel run starts from rank 0's.
 */
async function setUpParameters(model: LlamaModel, tokenizer: Tokenizer, plan: RunPlan, resume: ResumePoint | undefined, group?: ProcessGroup): Promise<Parameters> {
  // An earlier run's adapters (planning refused them unless replaceAdapter was given).
  if (model.hasLora) model.removeLora();
  let flash: FlashbackSource | undefined;
  let previousPool: LatentPool | undefined;
  const cont = plan.continued;
  if (cont) {
    if (cont.prev.pool && !(plan.useLatent && plan.latentRun.mode === 'retrieve'))
      throw new Error(`train: ${cont.prev.run} serves with a 'retrieve' latent pool (${cont.prev.pool}), part of its model; continue it with method 'jfa', latent tasks on, latentMode 'retrieve'`);
    const { foldLast } = loadRounds(model, cont.prev, cont.mode);
    previousPool = cont.prev.pool ? LatentPool.load(cont.prev.pool, model) : undefined;
    try {
      flash = flashbackSource(model, tokenizer, plan, { pool: previousPool });
    } catch (e) {
      previousPool?.dispose();
      throw e;
    }
    foldLast();
  }

  // A resuming rank other than 0 has no checkpoint (resumePoint): fresh tensors of the same shapes, overwritten by rank 0's below.
  if (resume?.dir) {
    const adapterDir = join(resume.dir, 'adapter');
    if (!existsSync(adapterDir)) throw new CheckpointError(`train: the checkpoint is incomplete: ${adapterDir} is missing`);
    model.loadAdapter(adapterDir);
  } else model.addLora(plan.lora);
  const params = Object.values(model.loraParameters());
  const latent = plan.useLatent
    ? group && group.rank !== 0
      ? await receiveLatent(model, plan, group)
      : setUpLatent(model, tokenizer, plan, resume?.dir, previousPool)
    : undefined;
  if (latent && group && group.rank === 0) await sendLatent(latent.retrieved, group);
  if (latent) params.push(latent.pool.tasks.A, latent.pool.tasks.B);
  const optimizer = new AdamW(params, { lr: plan.lr, weightDecay: plan.weightDecay });
  if (resume?.dir) restoreOptimizer('train', optimizer, resume.dir, resume.step);
  else if (resume) optimizer.stepCount = resume.step;
  // Every rank starts from rank 0's parameters and moments (equal by construction on a fresh start,
  // this makes sure; on resume the other ranks' come from here).
  if (group) await group.broadcast([...optimizer.params, ...optimizer.expAvg, ...optimizer.expAvgSq, optimizer.steps], 0);
  return { optimizer, latent, flash };
}

/** The plan with self-replay's records (the base's answers to the flashbacks, generated or the run folder's) joined to its stream. */
async function withSelfReplay(model: LlamaModel, tokenizer: Tokenizer, plan: RunPlan, resume: boolean, write: boolean): Promise<RunPlan> {
  const answers = await selfReplayRecords(model, tokenizer, plan.flashbacks, plan.selfReplay!.maxNewTokens, { dir: plan.outDir, resume, write });
  return { ...plan, stream: [...plan.stream, ...(answers as InstanceRecord[])] };
}

/** The checkpoint to resume from. */
function findRunCheckpoint(plan: RunPlan): { dir: string; step: number; position?: StreamPosition } {
  if (!plan.outDir) throw new OptionError('train: nothing to resume without an outDir');
  const { position, ...found } = findCheckpoint('train', plan.outDir, plan.state, plan.totalSteps);
  return plan.streamed ? { ...found, position: checkPosition(position, found.dir) } : found;
}

function logRow(file: string, plan: RunPlan, step: number, row: Record<string, unknown>): void {
  try {
    appendFileSync(file, `${JSON.stringify(row)}\n`);
  } catch (e) {
    throw new Error(`train: cannot write ${file} at step ${step} (${errnoOf(e)})${lastCheckpoint(plan.outDir!)}`);
  }
}

/** An evaluation's TensorBoard scalars: eval/old_accuracy (and eval/old/<suite>), eval/forgetting, eval/new_rougeL, eval/new_exact_match, eval/score. */
function evalScalars(s: EvalScores): Record<string, number> {
  return {
    ...(s.old ? { 'eval/old_accuracy': s.old.accuracy, ...Object.fromEntries(Object.entries(s.old.suites).map(([k, v]) => [`eval/old/${k}`, v])) } : {}),
    ...(s.forgetting !== undefined ? { 'eval/forgetting': s.forgetting } : {}),
    ...(s.new ? { 'eval/new_rougeL': s.new.rougeL, 'eval/new_exact_match': s.new.exactMatch } : {}),
    ...(s.score !== undefined ? { 'eval/score': s.score } : {}),
  };
}

/** A training run's checkpoint: the adapter, the optimizer, and the latent pool with every record's retrieval. */
function saveRunCheckpoint(outDir: string, model: LlamaModel, optimizer: AdamW, latent: RunLatent | undefined, evals: RunEvals | undefined, state: { step: number }): void {
  saveCheckpoint('train', outDir, state, (tmp) => {
    model.saveAdapter(join(tmp, 'adapter'));
    saveOptimizer(tmp, optimizer);
    if (latent) saveLatent(tmp, latent);
    evals?.save(tmp);
  });
}

/** A finished run's folder: the adapter (with its pool), what a later round continues from, no checkpoint. */
function finishRun(outDir: string, model: LlamaModel, plan: RunPlan, latent: RunLatent | undefined, prompts: InstanceRecord[]): void {
  // Written whole beside the final name, then swapped in: a kill or a full disk never leaves a
  // half-written adapter (or an earlier run's pool beside this adapter).
  const adapterDir = join(outDir, 'adapter');
  writeFolder('train', adapterDir, `the adapter`, outDir, (tmp) => {
    model.saveAdapter(tmp);
    latent?.pool.save(join(tmp, LATENT_POOL_FILE));
  });
  // What a later round needs to continue from this one: the chain beneath, and this round's prompts.
  const cont = plan.continued;
  writePrompts(outDir, prompts, plan.seed);
  writeChain(outDir, cont?.prev.base ?? model.dir ?? null, cont?.mode ?? TRAIN_DEFAULTS.continueMode, cont?.prev);
  if (cont) writeJsonl(join(outDir, 'flashbacks.jsonl'), plan.flashbacks);
  // The run is complete: its checkpoint goes (atomically, so a kill now never leaves half of one to resume from).
  removeCheckpoint(outDir);
}
