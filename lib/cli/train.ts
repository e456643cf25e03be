// `jfa pretrain`, `jfa train` and `jfa eval`. Options come from flags and/or --config (JSON or YAML),
// validated with zod (unknown keys are errors) before any data is read; data files are validated
// (file:line) before any training starts.
import { type Device, deviceSchema } from '../device.js';
import { readFileSync } from 'node:fs';

import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

import { AbortError } from '../errors.js';

import { IMPORT_FORMATS } from '../data/importers/index.js';
import { readJsonl } from '../data/jsonl.js';
import { corpusBleu, type FormatScores } from '../data/metrics.js';
import { type OldRecord } from '../data/records.js';
import { loadAdapterWithRounds, readRun } from '../jfa/continual.js';
import { EVAL_DEFAULTS, evaluateByFormat, evaluateNew, evaluateOld } from '../jfa/evaluate.js';
import { LATENT_MODES } from '../jfa/pool.js';
import { distributedFromEnv, type DistributedOptions } from '../distributed.js';
import { checkDataParallelDevice } from '../jfa/data-parallel.js';
import { KEEP_BEST, type EvalScores } from '../jfa/evals.js';
import { METHODS } from '../jfa/methods.js';
import { checkTrainOptions, TRAIN_DEFAULTS } from '../jfa/plan.js';
import { type EvalBatchProgress, type EvalProgress, train, type TrainOptions } from '../jfa/trainer.js';
import { LlamaModel } from '../model/llama.js';
import { Tokenizer } from '../model/tokenizer.js';
import { PROBES } from '../data/probes.js';
import { probe } from '../jfa/probe.js';
import { baseSchema, buildBase, CARD_FILE, defaultCheckpointDir } from '../bench/base.js';
import { LATENT_CHOICES, servingPool } from './latent.js';
import { launchWorkers, withoutNproc } from '../bench/launch.js';
import { progress } from '../util/progress.js';
import { inOutputFolder } from '../util/files.js';

/** Reads --config (JSON, or YAML by its .yaml/.yml name) and overlays the flags given on the command line, then validates. */
export function withConfig<T extends z.ZodType>(schema: T, flags: Record<string, unknown>): z.infer<T> {
  let fromFile: Record<string, unknown> = {};
  if (typeof flags.config === 'string') {
    try {
      const text = readFileSync(flags.config, 'utf8');
      fromFile = (/\.ya?ml$/i.test(flags.config) ? parseYaml(text) : JSON.parse(text)) as Record<string, unknown>;
      if (typeof fromFile !== 'object' || fromFile === null || Array.isArray(fromFile)) throw new Error('the config must be an object of options');
    } catch (e) {
      throw new Error(`${flags.config}: ${(e as Error).message}`);
    }
  }
  const given = Object.fromEntries(Object.entries(flags).filter(([k, v]) => v !== undefined && k !== 'config'));
  const input = { ...fromFile, ...given };
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const value = issue.path.reduce<unknown>((o, k) => (o !== null && typeof o === 'object' ? (o as Record<PropertyKey, unknown>)[k] : undefined), input);
    throw new Error(`${issue.path.length ? `option '${issue.path.join('.')}'` : 'options'}: ${explain(issue, value)}`);
  }
  return parsed.data;
}

/** A zod issue in plain words, with the value that was given. */
function explain(issue: z.core.$ZodIssue, value: unknown): string {
  const got = value === undefined ? '' : `, got ${typeof value === 'number' && !Number.isFinite(value) ? String(value) : JSON.stringify(value)}`;
  switch (issue.code) {
    case 'invalid_type':
      if (value === undefined) return 'is required';
      return `must be ${issue.expected === 'int' ? 'an integer' : `a${/^[aeiou]/.test(issue.expected) ? 'n' : ''} ${issue.expected}`}${got}`;
    case 'too_small':
      return issue.origin === 'array' ? `needs at least ${issue.minimum} item(s)` : `must be ${issue.inclusive ? '>=' : '>'} ${issue.minimum}${got}`;
    case 'too_big':
      return issue.origin === 'array' ? `takes at most ${issue.maximum} item(s)` : `must be ${issue.inclusive ? '<=' : '<'} ${issue.maximum}${got}`;
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => String(v)).join(', ')}${got}`;
    case 'unrecognized_keys':
      return `unknown option${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
    default:
      return issue.message;
  }
}

const json = z.boolean().optional();

export const pretrainSchema = baseSchema
  .extend({
    out: z.string(),
    data: z.array(z.string()).optional(),
    /** the run's checkpoint folder (default: <out>.pretrain); keep it outside a repository */
    checkpointDir: z.string().optional(),
    checkpointEvery: z.number().int().positive().default(500),
    resume: z.boolean().optional(),
    /** stop after this step; --resume continues */
    pauseAfter: z.number().int().positive().optional(),
    json,
  })
  .strict();

/**
 * Runs `work` with a signal that Ctrl-C (SIGINT) or SIGTERM aborts: the run stops at its next step
 * boundary with a checkpoint. Then it says how to continue, sets exit code 130 and gives undefined.
 * A second Ctrl-C quits at once.
 */
async function interruptible<T>(where: string, quiet: boolean, work: (signal: AbortSignal) => Promise<T>, stopBar: () => void): Promise<T | undefined> {
  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (stop.signal.aborted) process.exit(130);
    if (!quiet) process.stderr.write(`\n${signal}: stopping at the next step boundary (again to quit at once)\n`);
    stop.abort(signal);
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
  try {
    return await work(stop.signal);
  } catch (e) {
    if (!(e instanceof AbortError)) throw e;
    if (!quiet) console.error(`${e.message}; continue with the same command and --resume (the checkpoint is in ${where})`);
    process.exitCode = 130;
    return undefined;
  } finally {
    stopBar();
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
}

export async function runPretrain(o: z.infer<typeof pretrainSchema>): Promise<void> {
  const { out, data, json: quiet, checkpointDir, checkpointEvery, resume, pauseAfter, ...options } = o;
  // Data files are read (and their errors reported) before anything is written.
  data?.forEach((f) => readJsonl(f, 'instance'));
  // The folder is held while the model is built; a run that fails before the card is written
  // removes it again if it created it (the checkpoint folder keeps the run for --resume).
  const built = await interruptible(checkpointDir ?? defaultCheckpointDir(out), Boolean(quiet), (signal) =>
    inOutputFolder(out, 'pretrain', [CARD_FILE], () => buildBase(out, options, { data, quiet, checkpointDir, checkpointEvery, resume, pauseAfter, signal })), () => {});
  if (!built) return;
  if (!('sha256' in built)) {
    console.log(quiet ? JSON.stringify({ out, ...built }) : `pretraining stopped at step ${built.stoppedAt} of ${built.totalSteps}; continue with --resume (checkpoint in ${built.checkpointDir})`);
    return;
  }
  const card = built;
  const probes = card.probes ? `; probes ${Object.entries(card.probes).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}`).join(', ')}` : '';
  const scores = card.scores ? `; old suites ${Object.entries(card.scores).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}`).join(', ')}` : '';
  console.log(quiet ? JSON.stringify({ out, ...card }) : `pretrained ${card.parameters} parameters, ${card.steps} steps in ${card.seconds.toFixed(1)} s${probes}${scores} -> ${out}`);
}


export const trainSchema = z
  .object({
    /** where to train: cpu (default), cuda, cuda:N */
    device: deviceSchema,
    /** fp32 (default) or bf16: the dtype the base model is loaded in; the losses accumulate in fp32 */
    precision: z.enum(['fp32', 'bf16']).default('fp32'),
    /** the base model; with continueFrom, the run's recorded base by default */
    model: z.string().optional(),
    data: z.string(),
    flashbacks: z.string().optional(),
    /** a finished run folder (an earlier --out) to continue from: this round trains on the model after it */
    continueFrom: z.string().optional(),
    /** with continueFrom: keep the earlier rounds' adapters frozen beneath the new one */
    stack: z.boolean().optional(),
    /** with continueFrom: fold the earlier rounds' adapters into the weights (the default) */
    merge: z.boolean().optional(),
    /** with continueFrom: flashbacks in all, over the old suites and earlier rounds (default: as many as --flashbacks holds) */
    flashbackBudget: z.number().int().nonnegative().optional(),
    replay: z.string().optional(),
    method: z.enum(METHODS),
    out: z.string(),
    latent: z.boolean().default(TRAIN_DEFAULTS.latent),
    latentMode: z.enum(LATENT_MODES).optional(),
    latentDropout: z.number().min(0).max(1).optional(),
    plainSftWeight: z.number().nonnegative().optional(),
    pcgrad: z.boolean().optional(),
    epochs: z.number().int().positive().default(TRAIN_DEFAULTS.epochs),
    /** end the run after this many steps, with its adapter (transformers' max_steps) */
    maxSteps: z.number().int().positive().optional(),
    /** pause after this step with a checkpoint; --resume continues */
    pauseAfter: z.number().int().positive().optional(),
    lr: z.number().positive().default(TRAIN_DEFAULTS.lr),
    alpha: z.number().nonnegative().default(TRAIN_DEFAULTS.alpha),
    microBatch: z.number().int().positive().default(TRAIN_DEFAULTS.microBatch),
    accumulation: z.number().int().positive().default(TRAIN_DEFAULTS.accumulation),
    maxTokens: z.number().int().positive().default(TRAIN_DEFAULTS.maxTokens),
    r: z.number().int().positive().default(TRAIN_DEFAULTS.lora.r),
    loraAlpha: z.number().positive().default(TRAIN_DEFAULTS.lora.loraAlpha),
    checkpointEvery: z.number().int().positive().optional(),
    resume: z.boolean().optional(),
    tensorboard: z.string().optional(),
    activationCheckpointing: z.boolean().optional(),
    /** data-parallel: start this many local workers (torchrun's --nproc-per-node) */
    nproc: z.number().int().positive().optional(),
    /** data-parallel, as torchrun's variables (which they override) */
    rank: z.number().int().nonnegative().optional(),
    worldSize: z.number().int().positive().optional(),
    masterAddr: z.string().min(1).optional(),
    masterPort: z.number().int().min(1).max(65535).optional(),
    /** data-parallel: how long ranks wait for each other before failing (ms) */
    distTimeoutMs: z.number().int().positive().optional(),
    seed: z.number().int().nonnegative().default(TRAIN_DEFAULTS.seed),
    /** self-replay: tokens the base generates per flashback answer at most */
    selfReplayMaxNewTokens: z.number().int().positive().optional(),
    /** ewc, o-lora, pace: their weights, EWC's prompts and PACE's noise (train()'s defaults when absent) */
    ewcLambda: z.number().nonnegative().optional(),
    ewcSamples: z.number().int().positive().optional(),
    oloraLambda: z.number().nonnegative().optional(),
    paceSigma: z.number().positive().optional(),
    paceLambda: z.number().nonnegative().optional(),
    /** evaluate every N steps (and at step 0 and the last) on --eval-old and/or --eval-new */
    evalEvery: z.number().int().positive().optional(),
    /** old-suite JSONL with answers, scored by accuracy */
    evalOld: z.string().optional(),
    /** new-task JSONL, scored by ROUGE-L */
    evalNew: z.string().optional(),
    evalLimit: z.number().int().positive().default(TRAIN_DEFAULTS.evalLimit),
    evalBatch: z.number().int().positive().default(TRAIN_DEFAULTS.evalBatch),
    evalMaxNewTokens: z.number().int().positive().default(TRAIN_DEFAULTS.evalMaxNewTokens),
    /** keep the best evaluation's checkpoint as the run's adapter */
    keepBest: z.enum(KEEP_BEST).optional(),
    /** stop once old-task accuracy is more than this many points below step 0's */
    maxForgetting: z.number().min(0).max(100).optional(),
    json,
  })
  .strict();

/**
 * The values `jfa train` fills in for options not given (train()'s, from TRAIN_DEFAULTS, and where
 * the model loads), by flag name, for --help.
 */
export function trainDefaults(): Record<string, unknown> {
  const required = { data: '', method: 'sft', out: '' } as const;
  const filled = trainSchema.parse(required) as Record<string, unknown>;
  return Object.fromEntries(Object.entries(filled).filter(([k, v]) => !(k in required) && v !== undefined));
}

/**
 * This process's place in a data-parallel run: flags over torchrun's environment variables, or
 * undefined for a single process.
 */
export function distributedOf(o: { rank?: number; worldSize?: number; masterAddr?: string; masterPort?: number; distTimeoutMs?: number }): DistributedOptions | undefined {
  const env = distributedFromEnv();
  if (o.rank === undefined && o.worldSize === undefined && !env) return undefined;
  const rank = o.rank ?? env?.rank;
  const worldSize = o.worldSize ?? env?.worldSize;
  if (rank === undefined || worldSize === undefined) throw new Error(`option --${rank === undefined ? 'rank' : 'world-size'} is needed with --${rank === undefined ? 'world-size' : 'rank'} (or set RANK and WORLD_SIZE)`);
  return {
    rank,
    worldSize,
    masterAddr: o.masterAddr ?? env?.masterAddr,
    masterPort: o.masterPort ?? env?.masterPort,
    timeoutMs: o.distTimeoutMs,
  };
}

/**
 * The GPU of a data-parallel rank: 'cuda' alone means the GPU of its LOCAL_RANK (as torchrun's
 * workers take), since NCCL refuses two ranks on one GPU; 'cuda:N' and 'cpu' stay as given.
 */
export function rankDevice(device: Device, distributed: DistributedOptions | undefined, env: NodeJS.ProcessEnv = process.env): Device {
  if (device !== 'cuda' || !distributed || env.LOCAL_RANK === undefined || !/^\d+$/.test(env.LOCAL_RANK)) return device;
  return `cuda:${Number(env.LOCAL_RANK)}`;
}

export async function runTrain(o: z.infer<typeof trainSchema>): Promise<void> {
  if (o.stack && o.merge) throw new Error('options --stack and --merge exclude each other');
  if ((o.stack || o.merge || o.flashbackBudget !== undefined) && !o.continueFrom) throw new Error(`option --${o.stack ? 'stack' : o.merge ? 'merge' : 'flashback-budget'} applies only with --continue-from`);
  // The launcher: N workers of this same command line, each with its rank in the environment.
  // Data-parallel on a GPU needs NCCL in this build: refused before any worker starts.
  if ((o.nproc ?? 1) > 1 || o.rank !== undefined || process.env.RANK !== undefined) checkDataParallelDevice(o.device, { rank: 0, worldSize: 1 });
  if (o.nproc !== undefined && o.nproc > 1 && o.rank === undefined && process.env.RANK === undefined) {
    if (o.worldSize !== undefined && o.worldSize !== o.nproc) throw new Error(`--nproc ${o.nproc} and --world-size ${o.worldSize} disagree (--nproc starts the whole world on this host)`);
    const env = process.env;
    await launchWorkers(o.nproc, withoutNproc(process.argv.slice(2)), {
      masterAddr: o.masterAddr ?? (env.MASTER_ADDR || undefined),
      masterPort: o.masterPort ?? (env.MASTER_PORT ? distributedFromEnv({ RANK: '0', WORLD_SIZE: '1', MASTER_PORT: env.MASTER_PORT })!.masterPort : undefined),
    });
    return;
  }
  const distributed = distributedOf(o);
  const leader = !distributed || distributed.rank === 0;
  const prev = o.continueFrom ? readRun(o.continueFrom) : undefined;
  const modelDir = o.model ?? prev?.base ?? undefined;
  if (!modelDir) throw new Error(o.continueFrom ? `option --model: ${o.continueFrom} records no base model; pass --model` : "option 'model': Required");
  // Every input is read and validated before the model is touched.
  const data = {
    newTrain: readJsonl(o.data, 'instance'),
    flashbacks: o.flashbacks ? readJsonl(o.flashbacks, 'flashback') : undefined,
    replay: o.replay ? readJsonl(o.replay, 'instance') : undefined,
  };
  const quiet = Boolean(o.json) || !leader;
  const bar = progress(`train ${o.method}`, quiet);
  // The latest evaluation stays on the progress line; each evaluation's progress shows while it runs.
  let scores: Record<string, string> = {};
  let shown: Record<string, string> = {};
  const options: TrainOptions = {
    method: o.method,
    precision: o.precision,
    latent: o.latent,
    latentMode: o.latentMode,
    latentDropout: o.latentDropout,
    plainSftWeight: o.plainSftWeight,
    pcgrad: o.pcgrad,
    epochs: o.epochs,
    lr: o.lr,
    alpha: o.alpha,
    microBatch: o.microBatch,
    accumulation: o.accumulation,
    maxTokens: o.maxTokens,
    lora: { r: o.r, loraAlpha: o.loraAlpha },
    seed: o.seed,
    selfReplayMaxNewTokens: o.selfReplayMaxNewTokens,
    ewcLambda: o.ewcLambda,
    ewcSamples: o.ewcSamples,
    oloraLambda: o.oloraLambda,
    paceSigma: o.paceSigma,
    paceLambda: o.paceLambda,
    outDir: o.out,
    checkpointEvery: o.checkpointEvery,
    resume: o.resume,
    tensorboard: o.tensorboard,
    activationCheckpointing: o.activationCheckpointing,
    distributed,
    ...(o.continueFrom ? { continueFrom: o.continueFrom, continueMode: o.stack ? ('stack' as const) : o.merge ? ('merge' as const) : undefined, flashbackBudget: o.flashbackBudget } : {}),
    maxSteps: o.maxSteps,
    pauseAfter: o.pauseAfter,
    ...evalsOf(o),
    ...(o.evalEvery !== undefined
      ? {
          onEvalBatch: (b: EvalBatchProgress) => bar.update(b.step, b.totalSteps, { ...shown, eval: `${b.set} ${b.done}/${b.records}` }),
          onEval: (e: EvalProgress) => {
            scores = evalFields(e);
            bar.note(`step ${e.step}/${e.totalSteps} eval: ${Object.entries(scores).map(([k, v]) => `${k} ${v}`).join(', ')}${e.kept ? `; kept: step ${e.kept.step}` : ''}`);
          },
        }
      : {}),
    onStep: (p) => {
      shown = { sft: p.sft.toFixed(3), div: p.divergence.toFixed(4), 'tok/s': p.tokensPerSecond.toFixed(0), ...scores };
      bar.update(p.step, p.totalSteps, shown);
    },
  };
  // How the options combine (keepBest without its eval file, say) is refused before the model loads.
  checkTrainOptions(options);
  const tokenizer = Tokenizer.fromDir(modelDir);
  using model = await LlamaModel.loadAsync(modelDir, { dtype: o.precision === 'bf16' ? 'bfloat16' : 'float32', device: rankDevice(o.device as Device, distributed) });
  tokenizer.checkFits(model.config.vocabSize, `${modelDir}/config.json`);
  const r = await interruptible(o.out, !leader, (signal) => train(model, tokenizer, data, { ...options, signal }), () => bar.stop());
  if (!r) return;
  r.pool?.dispose();
  // A run the forgetting guard ended is a finished run: why it stopped and what it kept, on stderr.
  if (r.evals?.stopped && !quiet) process.stderr.write(`${r.evals.stopped.reason} -> ${o.out}/adapter\n`);
  const summary = {
    out: o.out,
    method: o.method,
    steps: r.steps,
    tokens: r.tokens,
    elapsedMs: r.elapsedMs,
    tokensPerSecond: r.tokens / (r.elapsedMs / 1000),
    latentMode: r.pool?.mode ?? null,
    ...(r.evals ? { evals: r.evals } : {}),
  };
  if (!leader) return;
  const kept = r.evals?.kept ? ` (the checkpoint of step ${r.evals.kept.step}: ${Object.entries(evalFields(r.evals.kept)).map(([k, v]) => `${k} ${v}`).join(', ')})` : '';
  const stopped = r.evals?.stopped ? `, stopped by --max-forgetting ${r.evals.stopped.maxForgetting}` : '';
  console.log(o.json ? JSON.stringify(summary) : `trained ${o.method}: ${r.steps} steps${stopped}, ${summary.tokensPerSecond.toFixed(0)} tokens/s -> ${o.out}/adapter${kept}`);
}

/**
 * The evaluation options of `jfa train`, their files read and checked (file:line; old-suite records
 * need an answer) before the model is loaded; train() checks how they combine.
 */
function evalsOf(o: z.infer<typeof trainSchema>): Partial<TrainOptions> {
  const evalOld = o.evalOld === undefined ? undefined : readJsonl(o.evalOld, 'instance');
  const unanswered = evalOld?.findIndex((r) => r.answer === undefined) ?? -1;
  if (unanswered >= 0) throw new Error(`${o.evalOld}: record ${unanswered + 1} has no 'answer' (--eval-old records are scored by their answer)`);
  const files = { evalOld: evalOld as OldRecord[] | undefined, evalNew: o.evalNew === undefined ? undefined : readJsonl(o.evalNew, 'instance') };
  if (o.evalEvery === undefined) {
    const given = (['evalOld', 'evalNew', 'keepBest', 'maxForgetting'] as const).filter((k) => o[k] !== undefined);
    if (given.length) throw new Error(`option --${kebab(given[0]!)} needs --eval-every N (steps between evaluations)`);
    return {};
  }
  if (!files.evalOld && !files.evalNew) throw new Error('option --eval-every needs --eval-old FILE (old suites with answers) and/or --eval-new FILE (new tasks)');
  return {
    evalEvery: o.evalEvery,
    ...files,
    evalLimit: o.evalLimit,
    evalBatch: o.evalBatch,
    evalMaxNewTokens: o.evalMaxNewTokens,
    keepBest: o.keepBest,
    maxForgetting: o.maxForgetting,
  };
}

const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** An evaluation's scores for the progress line, in percent. */
function evalFields(e: EvalScores): Record<string, string> {
  return {
    ...(e.old ? { old: `${(100 * e.old.accuracy).toFixed(1)}%` } : {}),
    ...(e.forgetting !== undefined ? { forgot: e.forgetting.toFixed(1) } : {}),
    ...(e.new ? { rougeL: (100 * e.new.rougeL).toFixed(1) } : {}),
  };
}

export const evalSchema = z
  .object({
    /** where to run: cpu (default), cuda, cuda:N */
    device: deviceSchema,
    /** the base weights' dtype: float32 (default) or bfloat16 (adapters and pools stay float32) */
    dtype: z.enum(['float32', 'bfloat16']).default('float32'),
    model: z.string(),
    adapter: z.string().optional(),
    data: z.string(),
    metric: z.enum(['rougeL', 'em', 'bleu', 'accuracy', 'auto']),
    format: z.enum(IMPORT_FORMATS).optional(),
    latent: z.enum(LATENT_CHOICES).default('auto'),
    maxNewTokens: z.number().int().positive().default(EVAL_DEFAULTS.maxNewTokens),
    batch: z.number().int().positive().default(EVAL_DEFAULTS.batch),
    json,
  })
  .strict();

const formatLine = (f: FormatScores): string =>
  f.accuracy !== undefined
    ? `${f.format}: accuracy ${f.accuracy.toFixed(4)} on ${f.records} records`
    : `${f.format}: rougeL ${f.rougeL!.toFixed(4)}, bleu ${f.bleu!.toFixed(4)}, em ${f.exactMatch!.toFixed(4)} on ${f.records} records`;

export async function runEval(o: z.infer<typeof evalSchema>): Promise<void> {
  const records = readJsonl(o.data, 'instance');
  if (o.format !== undefined && o.metric !== 'auto') throw new Error(`--format goes with --metric auto, not ${o.metric}`);
  if (o.metric === 'accuracy') {
    const missing = records.findIndex((r) => r.answer === undefined);
    if (missing >= 0) throw new Error(`${o.data}: record ${missing + 1} has no 'answer' (needed for --metric accuracy)`);
  }
  const tokenizer = Tokenizer.fromDir(o.model);
  using model = await LlamaModel.loadAsync(o.model, { dtype: o.dtype, device: o.device as Device });
  tokenizer.checkFits(model.config.vocabSize, `${o.model}/config.json`);
  // A continued run's adapter serves on the earlier rounds beneath it.
  const earlier = o.adapter ? loadAdapterWithRounds(model, o.adapter) : 0;
  if (earlier > 0 && !o.json) process.stderr.write(`${o.adapter}: served on the ${earlier} earlier round${earlier > 1 ? 's' : ''} recorded in its run folder's continual.json\n`);
  using pool = servingPool(model, o.adapter, o.latent);
  const bar = progress('eval', Boolean(o.json));
  const options = { maxNewTokens: o.maxNewTokens, batch: o.batch, latent: pool, onBatch: (done: number, total: number) => bar.update(done, total) };
  if (o.metric === 'auto') {
    const { formats } = await evaluateByFormat(model, tokenizer, records, { ...options, format: o.format });
    bar.stop();
    console.log(o.json ? JSON.stringify({ records: records.length, formats, latentPool: Boolean(pool) }) : formats.map(formatLine).join('\n'));
    return;
  }
  const scores =
    o.metric === 'accuracy'
      ? { accuracy: (await evaluateOld(model, tokenizer, records as OldRecord[], options)).accuracy }
      : await evaluateNew(model, tokenizer, records, options).then((r) => ({
          rougeL: r.rougeL,
          exactMatch: r.exactMatch,
          ...(o.metric === 'bleu' ? { bleu: corpusBleu(r.predictions, records.map((x) => x.output)) } : {}),
        }));
  bar.stop();
  const value = 'accuracy' in scores ? scores.accuracy : o.metric === 'em' ? scores.exactMatch : o.metric === 'bleu' ? scores.bleu! : scores.rougeL;
  console.log(
    o.json
      ? JSON.stringify({ records: records.length, ...scores, latentPool: Boolean(pool) })
      : `${o.metric} ${value.toFixed(4)} on ${records.length} records`,
  );
}

export const probeSchema = z
  .object({
    model: z.string(),
    adapter: z.string().optional(),
    perProbe: z.number().int().positive().default(100),
    batch: z.number().int().positive().default(50),
    json,
  })
  .strict();

/** `jfa probe`: one line per general skill, the share of held-out records generated exactly. */
export async function runProbe(o: z.infer<typeof probeSchema>): Promise<void> {
  const tokenizer = Tokenizer.fromDir(o.model);
  using model = await LlamaModel.loadAsync(o.model);
  tokenizer.checkFits(model.config.vocabSize, `${o.model}/config.json`);
  if (o.adapter) model.loadAdapter(o.adapter);
  const scores = await probe(model, tokenizer, {
    perProbe: o.perProbe,
    batch: o.batch,
    onProbe: (name, score) => o.json || console.log(`${name.padEnd(8)} ${(100 * score).toFixed(1).padStart(5)}%  (${PROBES[name]}, ${o.perProbe} records)`),
  });
  if (o.json) console.log(JSON.stringify({ perProbe: o.perProbe, scores }));
}
