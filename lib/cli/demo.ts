// `jfa demo`: the whole method on the generated benchmark, end to end. It generates the suites,
// pretrains a small base model (cached under <out>/base for later runs with the same settings),
// fine-tunes it on the new tasks with each method, evaluates every model on the old suites and on
// held-out new tasks, prints a table and writes report.html (table and charts) and results.json.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { z } from 'zod';

import { OLD_SUITE_NAMES, type OldSuiteName } from '../data/old-tasks.js';
import { createRng } from '../data/rng.js';
import { generateSuite, type Suite, writeSuite } from '../data/suite.js';
import { evaluateNew, evaluateOld } from '../jfa/evaluate.js';
import { pretrain } from '../jfa/pretrain.js';
import { type StepProgress, train, type TrainMethod } from '../jfa/trainer.js';
import { learnMerges } from '../model/bpe.js';
import { createModel } from '../model/create.js';
import { LlamaModel } from '../model/llama.js';
import { Tokenizer } from '../model/tokenizer.js';
import { runtimeInfo } from '../runtime.js';
import { readJson, writeFileAtomic } from '../util/files.js';
import { progress } from './progress.js';
import { type DemoResults, type MethodResult, oldAverage, pct, renderReport, resultTable } from './report.js';

export const DEMO_METHODS = ['sft', 'replay', 'flashback', 'jfa', 'jfa-no-latent', 'jfa-no-pcgrad'] as const;
export type DemoMethod = (typeof DEMO_METHODS)[number];

const int = z.number().int().positive();
export const demoSchema = z
  .object({
    out: z.string().default('jfa-demo'),
    seed: z.number().int().nonnegative().default(1),
    methods: z.array(z.enum(DEMO_METHODS)).min(1).default(['sft', 'flashback', 'jfa', 'jfa-no-latent']),
    /** the base model and its pretraining on the old suites' training data */
    base: z
      .object({
        hiddenSize: int.default(256),
        layers: int.default(4),
        heads: int.default(4),
        merges: z.number().int().nonnegative().default(800),
        oldTrainPerSuite: int.default(600),
        epochs: int.default(4),
        lr: z.number().positive().default(2e-3),
        microBatch: int.default(16),
        maxTokens: int.default(200),
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
        /** the paper's default is 1; at this scale 0.5 keeps old outputs as well and learns more */
        alpha: z.number().nonnegative().default(0.5),
        r: int.default(8),
        loraAlpha: z.number().positive().default(16),
        maxTokens: int.default(200),
        groups: int.default(16),
        perGroup: int.default(24),
        k: int.default(2),
        latentRank: int.default(8),
        /** factor on the retrieved latent-task weights (1: the paper's) */
        latentScale: z.number().positive().default(1),
      })
      .strict()
      .prefault({}),
    eval: z
      .object({
        oldPerSuite: int.default(200),
        /** held-out tasks to evaluate (default: all of them) */
        newTasks: int.optional(),
        newInstancesPerTask: int.default(3),
        maxNewTokens: int.default(48),
        batch: int.default(50),
      })
      .strict()
      .prefault({}),
    /** retrain the base even when a cached one matches */
    fresh: z.boolean().optional(),
    json: z.boolean().optional(),
  })
  .strict();

export type DemoOptions = z.infer<typeof demoSchema>;

export const methodLabel = (m: DemoMethod): string => m.replace('-no-', ' --no-');

function trainMethod(m: DemoMethod): { method: TrainMethod; latent?: boolean; pcgrad?: boolean } {
  if (m === 'jfa-no-latent') return { method: 'jfa', latent: false };
  if (m === 'jfa-no-pcgrad') return { method: 'jfa', pcgrad: false };
  return { method: m };
}

const log = (quiet: boolean, line: string) => {
  if (!quiet) process.stderr.write(`${line}\n`);
};

/** The base model for these settings: the cached one when its stamp matches, else pretrained now. */
async function baseModel(o: DemoOptions, suite: Suite, dir: string, quiet: boolean): Promise<{ seconds: number; cached: boolean; parameters: number }> {
  const stampFile = join(dir, 'jfa-demo-base.json');
  const stamp = { version: 2, seed: o.seed, ...o.base };
  if (!o.fresh && existsSync(stampFile)) {
    const saved = readJson<{ stamp: unknown; seconds: number; parameters: number }>(stampFile);
    if (JSON.stringify(saved.stamp) === JSON.stringify(stamp)) {
      log(quiet, `base model: cached in ${dir} (pretrained in ${saved.seconds.toFixed(0)} s); --fresh retrains it`);
      return { seconds: saved.seconds, cached: true, parameters: saved.parameters };
    }
  }
  rmSync(dir, { recursive: true, force: true });
  const b = o.base;
  const oldTrain = OLD_SUITE_NAMES.flatMap((n) => suite.old[n].train);
  // The tokenizer is learned from old and new text alike, as a general-purpose one would be.
  const merges = learnMerges([...oldTrain, ...suite.newTrain].flatMap((r) => [r.instruction, r.input, r.output]), b.merges);
  const intermediate = Math.round((b.hiddenSize * 8) / 3 / 32) * 32;
  createModel(dir, { hiddenSize: b.hiddenSize, intermediateSize: intermediate, numLayers: b.layers, numHeads: b.heads, merges, seed: o.seed });
  const tokenizer = Tokenizer.fromDir(dir);
  using model = LlamaModel.load(dir);
  log(quiet, `base model: ${(model.parameterCount / 1e6).toFixed(1)}M parameters, pretraining on ${oldTrain.length} old-task records (cached afterwards)`);
  const bar = progress('  pretrain', quiet);
  const r = await pretrain(model, tokenizer, oldTrain, {
    epochs: b.epochs,
    lr: b.lr,
    microBatch: b.microBatch,
    maxTokens: b.maxTokens,
    seed: o.seed,
    onStep: (p) => bar.update(p.step, p.totalSteps, { loss: p.sft.toFixed(3), 'tok/s': p.tokensPerSecond.toFixed(0) }),
  });
  bar.stop();
  model.save(dir);
  const seconds = r.elapsedMs / 1000;
  writeFileAtomic(stampFile, `${JSON.stringify({ stamp, seconds, parameters: model.parameterCount }, null, 2)}\n`);
  return { seconds, cached: false, parameters: model.parameterCount };
}

async function evaluateAll(model: LlamaModel, tokenizer: Tokenizer, suite: Suite, o: DemoOptions, label: string, quiet: boolean) {
  const e = o.eval;
  const oldEval = OLD_SUITE_NAMES.map((n) => suite.old[n].eval);
  const total = oldEval.reduce((s, r) => s + r.length, 0) + suite.newEval.length;
  const bar = progress(`  eval ${label}`, quiet);
  let done = 0;
  const onBatch = (d: number) => bar.update(done + d, total);
  const old = {} as Record<OldSuiteName, number>;
  for (const [i, name] of OLD_SUITE_NAMES.entries()) {
    old[name] = (await evaluateOld(model, tokenizer, oldEval[i]!, { batch: e.batch, maxNewTokens: e.maxNewTokens, onBatch })).accuracy;
    done += oldEval[i]!.length;
  }
  const fresh = await evaluateNew(model, tokenizer, suite.newEval, { batch: e.batch, maxNewTokens: e.maxNewTokens, onBatch });
  bar.stop();
  log(quiet, `  ${label}: new-task ROUGE-L ${pct(fresh.rougeL)}, EM ${pct(fresh.exactMatch)}; old-task accuracy ${pct(oldAverage({ old }))} (${OLD_SUITE_NAMES.map((n) => `${n} ${pct(old[n])}`).join(', ')})`);
  return { old, newRougeL: fresh.rougeL, newExactMatch: fresh.exactMatch, examples: suite.newEval.slice(0, 3).map((r, i) => ({ input: `${r.instruction} ${r.input}`, reference: r.output, prediction: fresh.predictions[i]! })) };
}

export async function runDemo(o: DemoOptions): Promise<DemoResults> {
  const quiet = Boolean(o.json);
  const started = performance.now();
  const out = resolve(o.out);
  mkdirSync(out, { recursive: true });
  const info = runtimeInfo();
  log(quiet, `jfa demo -> ${out} (libtorch ${info.torchVersion}, ${info.numThreads} threads)`);

  // 1. The generated benchmark, written where users can read (and replace) it.
  const suite = generateSuite({ seed: o.seed, oldTrainPerSuite: o.base.oldTrainPerSuite, oldEvalPerSuite: o.eval.oldPerSuite, evalInstancesPerTask: o.eval.newInstancesPerTask, newEvalTasks: o.eval.newTasks });
  writeSuite(join(out, 'data'), suite);
  const newTrain = o.train.records >= suite.newTrain.length ? suite.newTrain : createRng(o.seed).fork('demo/new-train').sample(suite.newTrain, o.train.records);
  log(quiet, `data: ${OLD_SUITE_NAMES.length} old suites, ${suite.flashbacks.length} flashback prompts, ${newTrain.length} new-task training records from ${suite.newTrainTaskNames.length} tasks, ${suite.newEval.length} held-out records from ${suite.newEvalTaskNames.length} unseen tasks -> ${join(out, 'data')}`);

  // 2. The base model.
  const baseDir = join(out, 'base');
  const base = await baseModel(o, suite, baseDir, quiet);
  const tokenizer = Tokenizer.fromDir(baseDir);
  const methods: MethodResult[] = [];
  {
    // The base's scores are kept beside it, for the evaluation settings they were made with.
    const evalFile = join(baseDir, 'jfa-demo-eval.json');
    const key = JSON.stringify({ seed: o.seed, eval: o.eval });
    const saved = base.cached && existsSync(evalFile) ? readJson<{ key: string; scores: Awaited<ReturnType<typeof evaluateAll>> }>(evalFile) : undefined;
    let scores = saved?.key === key ? saved.scores : undefined;
    if (scores) log(quiet, '  base: scores cached with the model');
    else {
      using model = LlamaModel.load(baseDir);
      scores = await evaluateAll(model, tokenizer, suite, o, 'base', quiet);
      writeFileAtomic(evalFile, `${JSON.stringify({ key, scores })}\n`);
    }
    methods.push({ method: 'base', label: 'base', ...scores, forgetting: 0 });
  }
  const baseOld = methods[0]!.old;

  // 3. Each method from the same base, then its evaluation.
  const t = o.train;
  for (const m of o.methods) {
    const runDir = join(out, 'runs', m);
    rmSync(runDir, { recursive: true, force: true });
    using model = LlamaModel.load(baseDir);
    const curve: Array<Pick<StepProgress, 'step' | 'sft' | 'divergence'>> = [];
    const bar = progress(`  train ${methodLabel(m)}`, quiet);
    const r = await train(
      model,
      tokenizer,
      { newTrain, flashbacks: suite.flashbacks, replay: OLD_SUITE_NAMES.flatMap((n) => suite.old[n].train) },
      {
        ...trainMethod(m),
        epochs: t.epochs,
        lr: t.lr,
        microBatch: t.microBatch,
        accumulation: t.accumulation,
        alpha: t.alpha,
        maxTokens: t.maxTokens,
        lora: { r: t.r, loraAlpha: t.loraAlpha },
        latentOptions: { groups: t.groups, perGroup: t.perGroup, k: t.k, rank: t.latentRank, scale: t.latentScale },
        seed: o.seed,
        outDir: runDir,
        onStep: (p) => {
          curve.push({ step: p.step, sft: p.sft, divergence: p.divergence });
          bar.update(p.step, p.totalSteps, { sft: p.sft.toFixed(3), div: p.divergence.toFixed(4), 'tok/s': p.tokensPerSecond.toFixed(0) });
        },
      },
    );
    bar.stop();
    r.latent?.dispose();
    // Evaluation uses the plain adapter, without latent retrieval (as the paper evaluates).
    const scores = await evaluateAll(model, tokenizer, suite, o, methodLabel(m), quiet);
    const forgetting = OLD_SUITE_NAMES.reduce((s, n) => s + (baseOld[n]! - scores.old[n]), 0) / OLD_SUITE_NAMES.length;
    methods.push({ method: m, label: methodLabel(m), ...scores, forgetting, trainSeconds: r.elapsedMs / 1000, steps: r.steps, tokensPerSecond: r.tokens / (r.elapsedMs / 1000), curve });
  }

  const results: DemoResults = {
    out,
    seed: o.seed,
    wallSeconds: (performance.now() - started) / 1000,
    base: { dir: baseDir, parameters: base.parameters, pretrainSeconds: base.seconds, cached: base.cached },
    data: { newTrainRecords: newTrain.length, newEvalRecords: suite.newEval.length, oldEvalPerSuite: o.eval.oldPerSuite, flashbacks: suite.flashbacks.length },
    suites: [...OLD_SUITE_NAMES],
    methods,
    options: o,
    runtime: { torchVersion: info.torchVersion, threads: info.numThreads },
  };
  writeFileAtomic(join(out, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileAtomic(join(out, 'report.html'), renderReport(results));
  if (o.json) console.log(JSON.stringify(results));
  else console.log(formatTable(results));
  return results;
}

/** The demo's table and the two checks the method is judged by. */
export function formatTable(r: DemoResults): string {
  const { head, rows } = resultTable(r);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const lines = [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
  lines.push('', 'scores in %; forgetting = base accuracy - accuracy after training, averaged over the old suites');
  lines.push(...verdicts(r));
  lines.push(`wall time ${r.wallSeconds.toFixed(0)} s (base ${r.base.cached ? 'cached' : `pretrained in ${r.base.pretrainSeconds.toFixed(0)} s`}); report: ${join(r.out, 'report.html')}`);
  return lines.join('\n');
}

/** JFA against SFT: forgetting at most half of SFT's, new-task ROUGE-L at least 95% of SFT's. */
export function verdicts(r: DemoResults): string[] {
  const sft = r.methods.find((m) => m.method === 'sft');
  const out: string[] = [];
  if (!sft) return out;
  for (const m of r.methods.filter((x) => x.method.startsWith('jfa') || x.method === 'flashback')) {
    const f = sft.forgetting > 0 ? `${pct(m.forgetting / sft.forgetting)}% of SFT's forgetting` : `SFT did not forget (${pct(sft.forgetting)})`;
    const n = sft.newRougeL > 0 ? `${pct(m.newRougeL / sft.newRougeL)}% of SFT's new-task ROUGE-L` : 'SFT scored 0 ROUGE-L';
    out.push(`${m.label}: ${f}, ${n}`);
  }
  return out;
}
