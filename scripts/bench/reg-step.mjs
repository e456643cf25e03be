#!/usr/bin/env node
// The regularising methods' step beside sft's, in one process per method (so each peak RSS is its own):
// the median step over the timed steps and the process's peak RSS, plus what the method holds besides
// (EWC: the Fisher, the size of the targeted base weights, and the time to estimate it once).
// Usage: node scripts/bench/reg-step.mjs <sft|ewc> [modelDir|random:HIDDEN:INTER:LAYERS] [steps] [microBatch] [maxTokens]
// `random:...` makes a random Llama of that shape in a temporary folder (the ~100M measurement).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { AdamW, createModel, generateSuite, LlamaModel, setNumThreads, sftBatch, Tokenizer, trainStep } from '../../dist/index.js';
import { stepPenalties } from '../../dist/jfa/regularizers.js';

const [method = 'sft', where = 'models/jfa-base', stepsArg = '8', mbArg = '4', tokensArg = '256'] = process.argv.slice(2);
const steps = Number(stepsArg);
const microBatch = Number(mbArg);
const maxTokens = Number(tokensArg);
setNumThreads(Number(process.env.THREADS ?? 2));
let dir = where;
let tmp;
if (where.startsWith('random:')) {
  const [hiddenSize, intermediateSize, numLayers] = where.slice(7).split(':').map(Number);
  tmp = mkdtempSync(join(tmpdir(), 'jfa-reg-bench-'));
  dir = tmp;
  createModel(dir, { hiddenSize, intermediateSize, numLayers, numHeads: hiddenSize / 64, seed: 1 });
}
const hwm = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;
const model = LlamaModel.load(dir);
const tokenizer = Tokenizer.fromDir(dir);
const suite = generateSuite({ seed: 5, oldTrainPerSuite: 4, oldEvalPerSuite: 2, instancesPerTask: 4 });
model.addLora({ seed: 4 });
const params = Object.values(model.loraParameters());
const micro = [0, 1, 2, 3].map((m) => ({ kind: 'new', ...sftBatch(tokenizer, suite.newTrain.slice(m * microBatch, (m + 1) * microBatch), maxTokens) }));
const before = hwm();
let extra = {};
let penalties;
if (method === 'ewc') {
  const t = performance.now();
  penalties = await stepPenalties(model, tokenizer, { ewc: { lambda: 1, samples: 64 } }, { flashbacks: suite.flashbacks, seed: 0, maxTokens, resume: false, write: false });
  const bytes = penalties.ewc.fisher.reduce((n, f) => n + f.shape.reduce((a, b) => a * b, 1) * 4, 0);
  extra = { fisherMiB: bytes / 2 ** 20, fisherMs: performance.now() - t, fisherPeakMiB: hwm() };
}
const optimizer = new AdamW(params, { lr: 1e-4 });
const times = [];
for (let s = 0; s < steps; s++) {
  const t = performance.now();
  await trainStep(model, optimizer, micro, { method: 'sft', seed: s, ...(penalties ? { penalties } : {}) });
  times.push(performance.now() - t);
}
const timed = times.slice(1).sort((a, b) => a - b);
console.log(JSON.stringify({ method, model: where, parameters: model.parameterCount, microBatch, maxTokens, medianStepMs: timed[Math.floor(timed.length / 2)], loadPeakMiB: before, peakMiB: hwm(), ...extra }));
if (tmp) rmSync(tmp, { recursive: true, force: true });
