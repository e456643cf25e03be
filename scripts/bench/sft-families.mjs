#!/usr/bin/env node
// `npm run bench:sft-families`: what plain SFT learns on the shipped base, task family by task
// family. Trains one LoRA (SFT, as the demo's sft run) on a sample of the demo's new-task training
// records, optionally of some families only, then scores the held-out tasks and fresh inputs of
// seen tasks by greedy generation, printing ROUGE-L overall and per family. docs/demo.md ("What SFT
// learns on this base") has its numbers.
// Usage: npm run bench:sft-families -- [--records N] [--epochs N] [--lr X] [--r N] [--lora-alpha X]
//          [--families a,b] [--tasks N] [--per-task N] [--base DIR] [--show N] [--json]
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { familyScores } from '../../dist/bench/demo.js';
import * as jfa from '../../dist/index.js';

const { values } = parseArgs({
  options: {
    records: { type: 'string', default: '4000' },
    epochs: { type: 'string', default: '1' },
    lr: { type: 'string', default: '5e-3' },
    r: { type: 'string', default: '8' },
    'lora-alpha': { type: 'string', default: '16' },
    families: { type: 'string' },
    tasks: { type: 'string' },
    'per-task': { type: 'string' },
    base: { type: 'string', default: join(fileURLToPath(new URL('../..', import.meta.url)), 'models', 'jfa-base') },
    show: { type: 'string', default: '0' },
    seed: { type: 'string', default: '1' },
    json: { type: 'boolean', default: false },
  },
});

/** A positive number from a flag, or a one-line error. */
function positive(name, integer = true) {
  const v = Number(values[name]);
  if (!(v > 0) || (integer && !Number.isInteger(v))) {
    console.error(`bench:sft-families: --${name} must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(values[name])}`);
    process.exit(2);
  }
  return v;
}

const seed = positive('seed');
const show = Number(values.show) || 0;
const families = values.families?.split(',').map((f) => f.trim()).filter(Boolean);
const known = new Set(jfa.newTasks().map((t) => t.family));
for (const f of families ?? []) {
  if (!known.has(f)) {
    console.error(`bench:sft-families: unknown family ${JSON.stringify(f)}; families: ${[...known].join(', ')}`);
    process.exit(2);
  }
}
// The data seed the base was pretrained with (its card's), so that its held-out prompts stay held out.
const cardFile = join(values.base, 'jfa-base.json');
const card = existsSync(cardFile) ? JSON.parse(readFileSync(cardFile, 'utf8')) : {};
const suite = jfa.generateSuite({
  seed: card.options?.dataSeed ?? 1,
  oldTrainPerSuite: 1,
  oldEvalPerSuite: 1,
  evalInstancesPerTask: 3,
  seenEvalTasks: 100,
  ...(values.tasks ? { newTrainTasks: positive('tasks') } : {}),
  ...(values['per-task'] ? { instancesPerTask: positive('per-task') } : {}),
});
const keep = (r) => !families || families.includes(jfa.taskFamily(r.task));
const pool = suite.newTrain.filter(keep);
const n = positive('records');
const newTrain = n >= pool.length ? pool : jfa.createRng(seed).fork('bench/sft-families').sample(pool, n);

const tokenizer = jfa.Tokenizer.fromDir(values.base);
const model = jfa.LlamaModel.load(values.base);
const started = performance.now();
const run = await jfa.train(model, tokenizer, { newTrain }, {
  method: 'sft',
  epochs: positive('epochs'),
  lr: positive('lr', false),
  microBatch: 8,
  accumulation: 2,
  maxTokens: 200,
  lora: { r: positive('r'), loraAlpha: positive('lora-alpha', false) },
  seed,
  onStep: (p) => { if (!values.json) process.stderr.write(`\r  train ${p.step}/${p.totalSteps}  sft ${p.sft.toFixed(3)}  `); },
});
const trainSeconds = (performance.now() - started) / 1000;
if (!values.json) process.stderr.write('\n');

const result = { records: newTrain.length, steps: run.steps, trainSeconds, sets: {} };
for (const [set, all] of [['held-out', suite.newEval], ['seen', suite.newSeenEval]]) {
  const records = all.filter(keep);
  if (records.length === 0) continue;
  const e = await jfa.evaluateNew(model, tokenizer, records, { batch: 50, maxNewTokens: 48 });
  const perFamily = familyScores(records.map((r, i) => ({ task: r.task, family: jfa.taskFamily(r.task), rougeL: jfa.rougeL(e.predictions[i], r.output) })));
  const copyInput = records.reduce((s, r) => s + jfa.rougeL(r.input, r.output), 0) / records.length;
  result.sets[set] = { records: records.length, rougeL: e.rougeL, copyInput, families: perFamily };
  if (!values.json) {
    const pct = (x) => (100 * x).toFixed(1);
    console.log(`${set}: ROUGE-L ${pct(e.rougeL)} over ${records.length} records (the input copied: ${pct(copyInput)})`);
    console.log(`  ${Object.entries(perFamily).map(([f, v]) => `${f} ${(100 * v).toFixed(0)}`).join(', ')}`);
    for (let i = 0; i < Math.min(show, records.length); i++) console.log(`  reference ${JSON.stringify(records[i].output)}  output ${JSON.stringify(e.predictions[i])}`);
  }
}
model.dispose();
if (values.json) console.log(JSON.stringify(result));
else console.log(`SFT on ${newTrain.length} records: ${run.steps} steps in ${trainSeconds.toFixed(0)} s`);
