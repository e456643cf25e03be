// `jfa demo`: the whole method on the generated benchmark, end to end. It starts from the shipped
// base model (models/jfa-base, hash-checked) or pretrains one (--pretrain, cached under
// <out>/base), fine-tunes it on the new tasks with each method for each seed, evaluates every model
// on the old suites and on held-out new tasks, prints a table (mean ± sd over seeds) and writes
// report.html (tables and charts) and results.json.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { z } from 'zod';

import { OLD_SUITE_NAMES, type OldSuiteName } from '../data/old-tasks.js';
import { type InstanceRecord } from '../data/records.js';
import { createRng } from '../data/rng.js';
import { rougeL } from '../data/metrics.js';
import { taskFamily } from '../data/new-tasks.js';
import { sampleFlashbacks, type Suite, writeSuite } from '../data/suite.js';
import { promptText } from '../jfa/examples.js';
import { evaluateNew, evaluateOld } from '../jfa/evaluate.js';
import { LATENT_MODES, type LatentPool } from '../jfa/pool.js';
import { METHOD_PRESETS, type Method, METHODS } from '../jfa/methods.js';
import { type StepProgress, train, type TrainData, type TrainOptions } from '../jfa/trainer.js';
import { type Device, deviceSchema } from '../device.js';
import { LlamaModel } from '../model/llama.js';
import { Tokenizer } from '../model/tokenizer.js';
import { packageRoot } from '../locate.js';
import { runtimeInfo } from '../runtime.js';
import { inOutputFolder, readJson, writeFileAtomic } from '../util/files.js';
import { CHECKPOINT } from '../jfa/checkpoint.js';
import { type BaseCard, baseSchema, baseSuite, buildBase, defaultCheckpointDir, readCard, sha256File, verifyBase } from './base.js';
import { freePort, startPeers } from './launch.js';
import { progress } from '../util/progress.js';
import { aggregate, oldAverage, pct, renderReport, resultTable } from './report.js';
import { type DemoResults, type MethodResult, type RunResult } from './results.js';

/** The base the demo starts from unless told otherwise: pretrained once by `jfa pretrain`, committed. */
export const SHIPPED_BASE = join(packageRoot, 'models', 'jfa-base');

const int = z.number().int().positive();
export const demoSchema = z
  .object({
    out: z.string().default('jfa-demo'),
    /** the first run seed; run i uses seed + i (new-task order, flashback sample, initialisation) */
    seed: z.number().int().nonnegative().default(1),
    /** runs of every method, each with its own seed; the table shows mean ± sd */
    seeds: int.default(1),
    /** data-parallel: each training run on this many local processes (c10d, Gloo); the table is the same within noise */
    nproc: int.default(1),
    /** where every model of the demo runs: 'cpu', 'cuda' or 'cuda:N' (a CUDA libtorch and a GPU) */
    device: deviceSchema,
    /** methods to compare, in this order; `all` (alone) is every method of METHOD_PRESETS */
    methods: z.preprocess((v) => (v === 'all' || (Array.isArray(v) && v.length === 1 && v[0] === 'all') ? [...METHODS] : v), z.array(z.enum(METHODS)).min(1)).default(['sft', 'flashback', 'jfa', 'jfa-no-latent']),
    /**
     * The base model: `dir` (default the shipped models/jfa-base, whose hash is checked), or with
     * `pretrain` one built with the settings here into <out>/base (cached while they match).
     */
    base: baseSchema
      .extend({
        dir: z.string().optional(),
        pretrain: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    /** LoRA fine-tuning on the new tasks */
    train: z
      .object({
        records: int.default(4000),
        epochs: int.default(1),
        lr: z.number().positive().default(5e-3),
        microBatch: int.default(8),
        accumulation: int.default(2),
        alpha: z.number().nonnegative().default(1),
        flashbacksPerSuite: int.default(32),
        r: int.default(8),
        loraAlpha: z.number().positive().default(16),
        maxTokens: int.default(200),
        groups: int.default(16),
        perGroup: int.default(24),
        k: int.default(2),
        latentRank: int.default(8),
        /** factor on the retrieved latent-task weights (1: the paper's) */
        latentScale: z.number().positive().default(1),
        /** how jfa's adapter serves: with the retrieved increments ('retrieve'), or alone ('drop', trained with latent dropout) */
        latentMode: z.enum(LATENT_MODES).default('retrieve'),
        /** 'drop' mode: probability that a micro-batch leaves the increments out */
        latentDropout: z.number().min(0).max(1).default(0.5),
        /** weight of an extra plain-adapter SFT term on new-task micro-batches (jfa with latent tasks) */
        plainSftWeight: z.number().nonnegative().default(0),
      })
      .strict()
      .prefault({}),
    eval: z
      .object({
        oldPerSuite: int.default(200),
        /** held-out tasks to evaluate (default: all of them) */
        newTasks: int.optional(),
        /** training tasks evaluated on fresh inputs (seen-task ROUGE-L; 0: none) */
        seenTasks: z.number().int().nonnegative().default(100),
        newInstancesPerTask: int.default(3),
        maxNewTokens: int.default(48),
        batch: int.default(50),
      })
      .strict()
      .prefault({}),
    /**
     * Continual rounds (`--rounds T`, T >= 2): the new tasks' families dealt into T rounds, each
     * method trained round by round without replay, scored after each round on every round so far.
     */
    rounds: int.optional(),
    /** rounds: keep each finished round's adapter frozen beneath the next (`--stack`) */
    stack: z.boolean().optional(),
    /** rounds: fold each finished round's adapter into the base (`--merge`, the default) */
    merge: z.boolean().optional(),
    /** with base.pretrain: pretrain again even when a cached base matches */
    fresh: z.boolean().optional(),
    json: z.boolean().optional(),
  })
  .strict();

export type DemoOptions = z.infer<typeof demoSchema>;

export const methodLabel = (m: Method): string => m.replace('-no-', ' --no-');

const log = (quiet: boolean, line: string) => {
  if (!quiet) process.stderr.write(`${line}\n`);
};

/** Flashback prompts drawn per suite for each run, from a pool this large (disjoint from train and eval). */
const FLASHBACK_POOL = 128;

/**
 * The base model's directory and card: the given or shipped one (hash-checked against its card),
 * or, with base.pretrain, one pretrained into <out>/base (cached while its settings match).
 */
async function baseModel(o: DemoOptions, out: string, quiet: boolean): Promise<{ dir: string; card: BaseCard; cached: boolean }> {
  const { dir: given, pretrain, ...settings } = o.base;
  if (!pretrain) {
    const dir = resolve(given ?? SHIPPED_BASE);
    const card = readCard(dir);
    if (!card) throw new Error(`${dir}: no jfa-base.json (the base model's card); make one with jfa pretrain, or run jfa demo --pretrain`);
    verifyBase(dir, card);
    log(quiet, `base model: ${dir} (${(card.parameters / 1e6).toFixed(2)}M parameters, sha256 ${card.sha256.slice(0, 12)} verified)`);
    return { dir, card, cached: true };
  }
  const dir = join(out, 'base');
  const card = readCard(dir);
  if (!o.fresh && card && JSON.stringify(card.options) === JSON.stringify(settings) && existsSync(join(dir, 'model.safetensors')) && sha256File(join(dir, 'model.safetensors')) === card.sha256) {
    log(quiet, `base model: cached in ${dir} (pretrained in ${card.seconds.toFixed(0)} s); --fresh retrains it`);
    return { dir, card, cached: true };
  }
  rmSync(dir, { recursive: true, force: true });
  // A pretraining killed earlier continues from its checkpoint (unless --fresh).
  const checkpointDir = defaultCheckpointDir(dir);
  if (o.fresh) rmSync(checkpointDir, { recursive: true, force: true });
  const resume = [CHECKPOINT, `${CHECKPOINT}.old`].some((c) => existsSync(join(checkpointDir, c)));
  const built = await buildBase(dir, settings, { quiet, label: 'base model', checkpointDir, resume });
  if (!('sha256' in built)) throw new Error(`base model: pretraining stopped at step ${built.stoppedAt} of ${built.totalSteps}`);
  return { dir, card: built, cached: false };
}

/**
 * New tokens an old suite's answers need: its longest reference answer plus 8. A model that drifted
 * into another task's format stops there instead of running to the demo's cap on every prompt.
 */
function answerBudget(tokenizer: Tokenizer, records: InstanceRecord[]): number {
  return 8 + Math.max(0, ...records.map((r) => tokenizer.encode(r.output, { addSpecialTokens: false }).length));
}

/**
 * Accuracy on each old suite's held-out records, each suite capped at its answer budget. `onBatch`
 * reports records done over all suites.
 */
export async function evaluateOldSuites(
  model: LlamaModel,
  tokenizer: Tokenizer,
  suite: Suite,
  o: DemoOptions,
  onBatch: (done: number) => void,
  latent?: LatentPool,
  keepCache = false,
): Promise<{ old: Record<OldSuiteName, number>; predictions: string[][] }> {
  const old = {} as Record<OldSuiteName, number>;
  const predictions: string[][] = [];
  let done = 0;
  for (const [i, name] of OLD_SUITE_NAMES.entries()) {
    const records = suite.old[name].eval;
    const maxNewTokens = Math.min(o.eval.maxNewTokens, answerBudget(tokenizer, records));
    // The CPU allocator's blocks stay cached from one suite to the next: given back after each, the
    // next suite's tensors fault their pages in again (half of the evaluation's page faults).
    const keep = keepCache || i < OLD_SUITE_NAMES.length - 1;
    const r = await evaluateOld(model, tokenizer, records, { batch: o.eval.batch, maxNewTokens, onBatch: (d) => onBatch(done + d), latent, keepCache: keep });
    old[name] = r.accuracy;
    predictions.push(r.predictions);
    done += records.length;
  }
  return { old, predictions };
}

async function evaluateAll(model: LlamaModel, tokenizer: Tokenizer, suite: Suite, o: DemoOptions, label: string, quiet: boolean, latent?: LatentPool) {
  const e = o.eval;
  const oldEval = OLD_SUITE_NAMES.map((n) => suite.old[n].eval);
  const total = oldEval.reduce((s, r) => s + r.length, 0) + suite.newEval.length + suite.newSeenEval.length;
  const bar = progress(`  eval ${label}`, quiet);
  let done = 0;
  const onBatch = (d: number) => bar.update(done + d, total);
  const { old, predictions: oldPredictions } = await evaluateOldSuites(model, tokenizer, suite, o, onBatch, latent, true);
  done += oldEval.reduce((s, r) => s + r.length, 0);
  const hasSeen = suite.newSeenEval.length > 0;
  const fresh = await evaluateNew(model, tokenizer, suite.newEval, { batch: e.batch, maxNewTokens: e.maxNewTokens, onBatch, latent, keepCache: hasSeen });
  done += suite.newEval.length;
  const seen = hasSeen ? await evaluateNew(model, tokenizer, suite.newSeenEval, { batch: e.batch, maxNewTokens: e.maxNewTokens, onBatch, latent }) : undefined;
  bar.stop();
  log(quiet, `  ${label}: held-out new-task ROUGE-L ${pct(fresh.rougeL)}, EM ${pct(fresh.exactMatch)}${seen ? `; seen-task ROUGE-L ${pct(seen.rougeL)}` : ''}; old-task accuracy ${pct(oldAverage({ old }))} (${OLD_SUITE_NAMES.map((n) => `${n} ${pct(old[n])}`).join(', ')})`);
  const predictions: PredictionRow[] = [
    ...newRows('held-out', suite.newEval, fresh.predictions),
    ...(seen ? newRows('seen', suite.newSeenEval, seen.predictions) : []),
    ...OLD_SUITE_NAMES.flatMap((n, i) => suite.old[n].eval.map((r, j) => ({ set: n, task: r.task, input: promptText(r), reference: r.answer, prediction: oldPredictions[i]![j]! }))),
  ];
  const scores = {
    old,
    newRougeL: fresh.rougeL,
    newExactMatch: fresh.exactMatch,
    ...(seen ? { seenRougeL: seen.rougeL } : {}),
    families: familyScores(predictions.filter((p) => p.set === 'held-out')),
    examples: suite.newEval.slice(0, 3).map((r, i) => ({ input: `${r.instruction} ${r.input}`, reference: r.output, prediction: fresh.predictions[i]! })),
  };
  return { scores, predictions };
}

/** One generated answer, as predictions.jsonl holds it: which set, the prompt, the reference and the output. */
export interface PredictionRow {
  /** 'held-out' or 'seen' (new tasks) or an old suite's name */
  set: string;
  task: string;
  /** the new task's family (generated tasks only) */
  family?: string;
  input: string;
  reference: string;
  prediction: string;
  /** ROUGE-L against the reference (new tasks) */
  rougeL?: number;
}

function newRows(set: string, records: InstanceRecord[], predictions: string[]): PredictionRow[] {
  return records.map((r, i) => {
    const family = taskFamily(r.task);
    return { set, task: r.task, ...(family === undefined ? {} : { family }), input: promptText(r), reference: r.output, prediction: predictions[i]!, rougeL: rougeL(predictions[i]!, r.output) };
  });
}

/** Mean ROUGE-L per task family (a task's own name where it has no family), families in order of first appearance. */
export function familyScores(rows: readonly PredictionRow[]): Record<string, number> {
  const by = new Map<string, number[]>();
  for (const r of rows) {
    const key = r.family ?? r.task;
    if (!by.has(key)) by.set(key, []);
    by.get(key)!.push(r.rougeL ?? 0);
  }
  return Object.fromEntries([...by].map(([k, v]) => [k, v.reduce((a, b) => a + b, 0) / v.length]));
}

/** Every generated answer of one model, one JSON object a line (what a reader opens to see why a score is what it is). */
function writePredictions(file: string, rows: readonly PredictionRow[]): void {
  writeFileAtomic(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

/** What every run of the demo (and of a study) shares: the base, the data, the base's scores. */
export interface Bench {
  o: DemoOptions;
  out: string;
  quiet: boolean;
  base: { dir: string; card: BaseCard; cached: boolean };
  suite: Suite;
  newTrain: InstanceRecord[];
  tokenizer: Tokenizer;
  baseScores: Awaited<ReturnType<typeof evaluateAll>>['scores'];
}

/**
 * The base model and the generated benchmark it was pretrained on (its held-out part, the
 * flashback pool and the new tasks are what the runs use), written where users can read it, and
 * the base's own scores (cached beside the results for these weights and evaluation settings).
 */
export async function prepareBench(o: DemoOptions, title: string): Promise<Bench> {
  const quiet = Boolean(o.json);
  const out = resolve(o.out);
  mkdirSync(out, { recursive: true });
  const info = runtimeInfo();
  log(quiet, `${title} -> ${out} (libtorch ${info.torchVersion}, ${info.numThreads} threads)`);
  const base = await baseModel(o, out, quiet);
  const data = { dataSeed: base.card.options.dataSeed ?? o.seed, oldTrainPerSuite: base.card.options.oldTrainPerSuite ?? o.base.oldTrainPerSuite };
  const suite = baseSuite(data, { oldEvalPerSuite: o.eval.oldPerSuite, flashbackPoolPerSuite: Math.max(FLASHBACK_POOL, o.train.flashbacksPerSuite), evalInstancesPerTask: o.eval.newInstancesPerTask, newEvalTasks: o.eval.newTasks, seenEvalTasks: o.eval.seenTasks });
  writeSuite(join(out, 'data'), suite);
  const newTrain = o.train.records >= suite.newTrain.length ? suite.newTrain : createRng(data.dataSeed).fork('demo/new-train').sample(suite.newTrain, o.train.records);
  log(quiet, `data: ${OLD_SUITE_NAMES.length} old suites (${o.eval.oldPerSuite} held-out records each), ${o.train.flashbacksPerSuite} flashback prompts per suite per run, ${newTrain.length} new-task training records from ${suite.newTrainTaskNames.length} tasks, ${suite.newEval.length} held-out records from ${suite.newEvalTaskNames.length} unseen tasks -> ${join(out, 'data')}`);
  const tokenizer = Tokenizer.fromDir(base.dir);

  const evalFile = join(out, 'base-eval.json');
  const key = JSON.stringify({ sha256: base.card.sha256, data, eval: o.eval });
  const saved = existsSync(evalFile) ? readJson<{ key: string; scores: Bench['baseScores'] }>(evalFile) : undefined;
  let baseScores = saved?.key === key ? saved.scores : undefined;
  if (baseScores) log(quiet, '  base: scores cached from an earlier run');
  else {
    using model = await loadBase(base.dir, o);
    const evaluated = await evaluateAll(model, tokenizer, suite, o, 'base', quiet);
    baseScores = evaluated.scores;
    writePredictions(join(out, 'base-predictions.jsonl'), evaluated.predictions);
    writeFileAtomic(evalFile, `${JSON.stringify({ key, scores: baseScores })}\n`);
  }
  return { o, out, quiet, base, suite, newTrain, tokenizer, baseScores };
}

/** The base model on the demo's device (checked before any weight is read). */
export function loadBase(dir: string, o: DemoOptions): Promise<LlamaModel> {
  if (o.device !== 'cpu' && o.nproc > 1)
    throw new Error(`demo: --nproc ${o.nproc} runs its processes on the CPU (Gloo); drop --nproc to train on ${o.device}`);
  return LlamaModel.loadAsync(dir, { device: o.device as Device });
}

/** Settings one run may change from the demo's train section (a study's point). */
export type RunOverrides = Partial<DemoOptions['train']> & { pcgrad?: boolean };

/**
 * The data and train() options of one demo run of method `m` with `seed` on `newTrain` (the old
 * suites' flashbacks sampled for the seed), with the demo's train section and `overrides`.
 */
export function demoTraining(b: Bench, m: Method, seed: number, newTrain: InstanceRecord[], runDir: string, overrides: RunOverrides = {}): { data: TrainData; options: TrainOptions } {
  const t = { ...b.o.train, ...overrides };
  // No flashbacks means a method that holds the old outputs with them (the divergence, or the base's
  // answers) has nothing to do it with: that is plain SFT. slm and replay need none.
  const flashbacks = t.flashbacksPerSuite > 0 ? sampleFlashbacks(b.suite, t.flashbacksPerSuite, seed) : [];
  const needsFlashbacks = METHOD_PRESETS[m].flashbacks || METHOD_PRESETS[m].selfReplay;
  const method: Method = flashbacks.length === 0 && needsFlashbacks ? 'sft' : m;
  const withLatent = METHOD_PRESETS[method].latent;
  // jfa-retrieve and jfa-drop fix their latent mode; the other methods take train.latentMode.
  const mode = METHOD_PRESETS[method].latentMode ?? t.latentMode;
  return {
    data: { newTrain, flashbacks, replay: OLD_SUITE_NAMES.flatMap((n) => b.suite.old[n].train) },
    options: {
      method,
      ...(overrides.pcgrad === undefined ? {} : { pcgrad: overrides.pcgrad }),
      ...(withLatent ? { latentMode: mode, latentDropout: mode === 'drop' ? t.latentDropout : 0, plainSftWeight: t.plainSftWeight } : {}),
      epochs: t.epochs,
      lr: t.lr,
      microBatch: t.microBatch,
      accumulation: t.accumulation,
      alpha: t.alpha,
      maxTokens: t.maxTokens,
      lora: { r: t.r, loraAlpha: t.loraAlpha },
      latentOptions: { groups: t.groups, perGroup: t.perGroup, k: t.k, rank: t.latentRank, scale: t.latentScale },
      seed,
      outDir: runDir,
    },
  };
}

/** A progress bar for training and the loss curve it collects. */
export function trainProgress(label: string, quiet: boolean): { curve: RunResult['curve']; onStep: (p: StepProgress) => void; stop: () => void } {
  const curve: RunResult['curve'] = [];
  const bar = progress(`  train ${label}`, quiet);
  return {
    curve,
    onStep: (p: StepProgress) => {
      curve.push({ step: p.step, sft: p.sft, divergence: p.divergence });
      bar.update(p.step, p.totalSteps, { sft: p.sft.toFixed(3), div: p.divergence.toFixed(4), 'tok/s': p.tokensPerSecond.toFixed(0) });
    },
    stop: () => bar.stop(),
  };
}

/** Trains one method from the base with one seed, into `runDir`, and evaluates it. */
export async function runOnce(b: Bench, m: Method, seed: number, runDir: string, label: string, overrides: RunOverrides = {}): Promise<RunResult> {
  rmSync(runDir, { recursive: true, force: true });
  using model = await loadBase(b.base.dir, b.o);
  const { data, options } = demoTraining(b, m, seed, b.newTrain, runDir, overrides);
  const bar = trainProgress(label, b.quiet);
  const curve = bar.curve;
  const r = await trainRun(b.base.dir, model, b.tokenizer, data, options, bar.onStep, b.o.nproc);
  bar.stop();
  // A 'retrieve' adapter serves with its pool, as in training; a 'drop' adapter alone.
  const serving = r.pool?.mode === 'retrieve' ? r.pool : undefined;
  const { scores, predictions } = await evaluateAll(model, b.tokenizer, b.suite, b.o, label, b.quiet, serving);
  writePredictions(join(runDir, 'predictions.jsonl'), predictions);
  r.pool?.dispose();
  const forgetting = OLD_SUITE_NAMES.reduce((s, n) => s + (b.baseScores.old[n]! - scores.old[n]), 0) / OLD_SUITE_NAMES.length;
  return { seed, ...scores, forgetting, trainSeconds: r.elapsedMs / 1000, steps: r.steps, tokensPerSecond: r.tokens / (r.elapsedMs / 1000), curve };
}

/**
 * train(), in this process or, with nproc > 1, as rank 0 of nproc local processes (the others
 * started here with the same model directory, data and options).
 */
async function trainRun(modelDir: string, model: LlamaModel, tokenizer: Tokenizer, data: TrainData, options: TrainOptions, onStep: (p: StepProgress) => void, nproc: number) {
  if (nproc <= 1) return train(model, tokenizer, data, { ...options, onStep });
  const masterPort = await freePort();
  const peers = startPeers({ model: modelDir, data, options: options as unknown as Record<string, unknown>, worldSize: nproc, masterPort }, options.outDir ?? tmpdir());
  try {
    const r = await train(model, tokenizer, data, { ...options, onStep, distributed: { rank: 0, worldSize: nproc, masterPort } });
    await peers.done;
    return r;
  } catch (e) {
    peers.stop();
    // The first rank that failed says most: a peer that died before rank 0 noticed names itself.
    const peer = await peers.done.then(() => undefined, (p: Error) => p);
    throw peer && !/rank \d+ (exited|was killed)/.test((e as Error).message) ? e : (peer ?? e);
  }
}

export async function runDemo(o: DemoOptions): Promise<DemoResults> {
  if (o.stack || o.merge) throw new Error(`option --${o.stack ? 'stack' : 'merge'} applies only with --rounds`);
  // One demo per folder at a time: a second one would overwrite the first's runs mid-way.
  return inOutputFolder(resolve(o.out), 'demo', BENCH_KEEP, () => demoIn(o));
}

/** What a failed demo or study leaves worth keeping in its folder (the cached base and data, finished runs). */
export const BENCH_KEEP = ['base', 'data', 'runs', 'base-eval.json', 'base-predictions.jsonl', 'results.json'];

async function demoIn(o: DemoOptions): Promise<DemoResults> {
  const started = performance.now();
  const b = await prepareBench(o, 'jfa demo');
  const runs = new Map<Method, RunResult[]>(o.methods.map((m) => [m, []]));
  for (let i = 0; i < o.seeds; i++) {
    const seed = o.seed + i;
    for (const m of o.methods) {
      const label = o.seeds > 1 ? `${methodLabel(m)} (seed ${seed})` : methodLabel(m);
      runs.get(m)!.push(await runOnce(b, m, seed, join(b.out, 'runs', o.seeds > 1 ? `${m}-seed${seed}` : m), label));
    }
  }
  const methods: MethodResult[] = [baseRow(b), ...o.methods.map((m) => aggregate(m, methodLabel(m), runs.get(m)!))];
  const results: DemoResults = { ...benchSummary(b, started), methods };
  writeFileAtomic(join(b.out, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileAtomic(join(b.out, 'report.html'), renderReport(results));
  if (o.json) console.log(JSON.stringify(results));
  else console.log(formatTable(results));
  return results;
}

/** The base model's row of a results table (it forgets nothing by definition). */
export function baseRow(b: Bench): MethodResult {
  return { method: 'base', label: 'base', ...b.baseScores, forgetting: 0 };
}

/** Everything of the results but the methods: where, when, which base, which data, which runtime. */
export function benchSummary(b: Bench, started: number): Omit<DemoResults, 'methods'> {
  const info = runtimeInfo();
  return {
    out: b.out,
    seed: b.o.seed,
    seeds: b.o.seeds,
    wallSeconds: (performance.now() - started) / 1000,
    base: { dir: b.base.dir, parameters: b.base.card.parameters, pretrainSeconds: b.base.card.seconds, cached: b.base.cached, sha256: b.base.card.sha256, scores: b.base.card.scores },
    data: { newTrainRecords: b.newTrain.length, newEvalRecords: b.suite.newEval.length, oldEvalPerSuite: b.o.eval.oldPerSuite, flashbacks: b.o.train.flashbacksPerSuite * OLD_SUITE_NAMES.length },
    suites: [...OLD_SUITE_NAMES],
    options: b.o,
    runtime: { torchVersion: info.torchVersion, threads: info.numThreads },
  };
}

/** The demo's table and the two checks the method is judged by. */
export function formatTable(r: DemoResults): string {
  const { head, rows } = resultTable(r);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const lines = [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
  lines.push('', `scores in %${r.seeds > 1 ? `, mean ± sd over ${r.seeds} seeds` : ''}; forgetting = base accuracy - accuracy after training, averaged over the old suites`);
  lines.push(...verdicts(r));
  lines.push(`wall time ${r.wallSeconds.toFixed(0)} s (base ${r.base.cached ? 'cached' : `pretrained in ${r.base.pretrainSeconds.toFixed(0)} s`}); report: ${join(r.out, 'report.html')}`);
  return lines.join('\n');
}

/**
 * Each method against SFT: its share of SFT's forgetting and of SFT's new-task ROUGE-L, and, over
 * several seeds, whether each difference is larger than the seed spread (sd of one plus the other).
 */
export function verdicts(r: DemoResults): string[] {
  const sft = r.methods.find((m) => m.method === 'sft');
  const out: string[] = [];
  if (!sft) return out;
  const spread = (m: MethodResult, key: 'forgetting' | 'newRougeL') => {
    if (!m.sd || !sft.sd) return '';
    const gap = Math.abs(m[key] - sft[key]);
    return gap > m.sd[key] + sft.sd[key] ? '' : ' (within the seed spread)';
  };
  for (const m of r.methods.filter((x) => x.method !== 'sft' && x.method !== 'base')) {
    const f = sft.forgetting > 0 ? `${pct(m.forgetting / sft.forgetting)}% of SFT's forgetting${spread(m, 'forgetting')}` : `SFT did not forget (${pct(sft.forgetting)})`;
    const n = sft.newRougeL > 0 ? `${pct(m.newRougeL / sft.newRougeL)}% of SFT's new-task ROUGE-L${spread(m, 'newRougeL')}` : 'SFT scored 0 ROUGE-L';
    out.push(`${m.label}: ${f}, ${n}`);
  }
  return out;
}
