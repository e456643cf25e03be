#!/usr/bin/env node
// One timed evaluation for `npm run bench:eval`, in its own process: the package at ROOT (this
// checkout or a baseline's) evaluates the demo's base model on the demo's evaluation sets, as the
// demo does, and prints one JSON line {ms, records, predictions}.
// Usage: node eval-worker.mjs ROOT
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

const root = process.argv[2];
const load = (p) => import(pathToFileURL(join(root, 'dist', p)).href);
const jfa = await load('index.js');
const { demoSchema, evaluateOldSuites, SHIPPED_BASE } = await load('bench/demo.js');
const { baseSuite, readCard } = await load('bench/base.js');

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
