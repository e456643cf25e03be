#!/usr/bin/env node
// One timed evaluation for `npm run bench:eval`, in its own process: the package at ROOT (this
// checkout or a baseline's) evaluates this checkout's shipped base model on the demo's evaluation
// sets, as the demo does, and prints one JSON line {ms, records, predictions}. Both sides evaluate
// the same model: an older checkout's own models/jfa-base may be another base.
// Usage: node eval-worker.mjs ROOT
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = process.argv[2];
const load = (p) => import(pathToFileURL(join(root, 'dist', p)).href);
// The demo's harness lives in dist/bench since ee01366, in dist/cli before it.
const loadEither = async (...paths) => {
  for (const p of paths.slice(0, -1)) {
    try {
      return await load(p);
    } catch (e) {
      if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !String(e.message).includes(p)) throw e;
    }
  }
  return load(paths.at(-1));
};
const jfa = await load('index.js');
const { demoSchema, evaluateOldSuites } = await loadEither('bench/demo.js', 'cli/demo.js');
const { baseSuite, readCard } = await loadEither('bench/base.js', 'cli/base.js');
const SHIPPED_BASE = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'models', 'jfa-base');

const o = demoSchema.parse({});
const card = readCard(SHIPPED_BASE);
const data = { dataSeed: card.options.dataSeed ?? o.seed, oldTrainPerSuite: card.options.oldTrainPerSuite ?? o.base.oldTrainPerSuite };
const suite = baseSuite(data, { oldEvalPerSuite: o.eval.oldPerSuite, evalInstancesPerTask: o.eval.newInstancesPerTask, newEvalTasks: o.eval.newTasks, seenEvalTasks: o.eval.seenTasks });
const tokenizer = jfa.Tokenizer.fromDir(SHIPPED_BASE);
const model = jfa.LlamaModel.load(SHIPPED_BASE);
const e = { batch: o.eval.batch, maxNewTokens: o.eval.maxNewTokens };

const t = performance.now();
const predictions = [];
await evaluateOldSuites(model, tokenizer, suite, o, () => {}, undefined, true);
const parts = { oldMs: performance.now() - t };
const fresh = await jfa.evaluateNew(model, tokenizer, suite.newEval, { ...e, keepCache: true });
predictions.push(...fresh.predictions);
parts.newMs = performance.now() - t - parts.oldMs;
const seen = await jfa.evaluateNew(model, tokenizer, suite.newSeenEval, e);
predictions.push(...seen.predictions);
const ms = performance.now() - t;
const records = suite.newEval.length + suite.newSeenEval.length + Object.values(suite.old).reduce((s, x) => s + x.eval.length, 0);
console.log(JSON.stringify({ ms, ...parts, records, newRougeL: fresh.rougeL, predictions }));
model.dispose();
