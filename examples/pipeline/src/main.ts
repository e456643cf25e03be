// A training pipeline as a TypeScript team writes it, with every control jfa-torch gives:
// options checked before anything loads, a run cancelled by an AbortSignal and resumed, held-out
// evaluation and a streamed sample between steps, typed errors matched by code, a second run on
// the same model object, and the finished run reloaded in a fresh process (serve.ts).
// Usage: node dist/main.js MODEL_DIR OUT_DIR
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  AbortError,
  checkTrainOptions,
  evaluateNew,
  generateStream,
  isJfaError,
  LlamaModel,
  promptText,
  readJsonl,
  Tokenizer,
  train,
  type TrainOptions,
} from 'jfa-torch';

const here = dirname(fileURLToPath(import.meta.url));
const [modelDir, outDir] = process.argv.slice(2);
if (!modelDir || !outDir) throw new Error('usage: node dist/main.js MODEL_DIR OUT_DIR');
const data = join(here, '..', '..', 'quickstart', 'data');
const records = readJsonl(join(data, 'new-tasks.jsonl'), 'instance');
const [newTrain, heldOut] = [records.slice(0, 24), records.slice(24)];
const flashbacks = readJsonl(join(data, 'flashbacks.jsonl'), 'flashback');

// 1. Options are checked before anything is loaded; a typo names the nearest valid option.
try {
  checkTrainOptions({ method: 'jfa', epoch: 2 } as unknown as TrainOptions);
} catch (e) {
  if (isJfaError(e, 'ERR_JFA_OPTION')) console.log(`options: ${e.message}`);
  else throw e;
}
const options: TrainOptions = { method: 'jfa', epochs: 4, microBatch: 4, accumulation: 1, lr: 2e-3, seed: 0, outDir: join(outDir, 'jfa'), maxSteps: 20 };
checkTrainOptions(options);

const tokenizer = Tokenizer.fromDir(modelDir);
using model = await LlamaModel.loadAsync(modelDir);

// 2. A run cancelled mid-way (here by the pipeline itself after step 8; a Ctrl-C handler or a
//    deadline would call abort() the same way): it stops at a step boundary with a checkpoint.
const controller = new AbortController();
try {
  await train(model, tokenizer, { newTrain, flashbacks }, {
    ...options,
    signal: controller.signal,
    onStep: (p) => {
      if (p.step === 8) controller.abort(new Error('deadline'));
    },
  });
} catch (e) {
  if (!(e instanceof AbortError)) throw e;
  console.log(`cancelled: ${e.message} (${String((e.cause as Error).message)})`);
}

// 3. Resumed on the same model object. Between steps the model is the pipeline's: it evaluates
//    held-out records and streams a sample, awaited, without changing the run.
const result = await train(model, tokenizer, { newTrain, flashbacks }, {
  ...options,
  resume: true,
  onStep: async (p) => {
    if (p.step % 6 !== 0) return;
    // (the adapter alone: the run's latent pool is handed over when train() returns)
    const { rougeL } = await evaluateNew(model, tokenizer, heldOut, { maxNewTokens: 8 });
    let sample = '';
    for await (const piece of generateStream(model, tokenizer, promptText(heldOut[0]!), { maxNewTokens: 8, stopStrings: ['\n'], topK: 1 })) sample += piece;
    console.log(`step ${p.step}/${p.totalSteps}: held-out ROUGE-L ${rougeL.toFixed(3)}, sample ${JSON.stringify(sample)}`);
  },
});
console.log(`trained: ${result.steps}/${result.totalSteps} steps (maxSteps ends the run with its adapter)`);
result.pool?.dispose();

// 4. A second run on the same model object: the SFT baseline, from the base again.
model.removeLora();
const sft = await train(model, tokenizer, { newTrain }, { ...options, method: 'sft', outDir: join(outDir, 'sft') });
console.log(`sft baseline: ${sft.steps} steps`);

// 5. A bad record is a DataError naming it, whatever the caller's types allowed.
try {
  await train(model, tokenizer, { newTrain: [{ ...newTrain[0]!, output: null as unknown as string }] }, { method: 'sft', replaceAdapter: true });
} catch (e) {
  if (isJfaError(e, 'ERR_JFA_DATA')) console.log(`data: ${e.message}`);
  else throw e;
}

// 6. The finished jfa run, served in a fresh process: base + adapter + latent pool in one call.
const served = execFileSync(process.execPath, [join(here, 'serve.js'), join(outDir, 'jfa'), heldOut[0]!.instruction, heldOut[0]!.input], { encoding: 'utf8' });
console.log(served.trim());
console.log(JSON.stringify({ steps: result.steps, totalSteps: result.totalSteps, sftSteps: sft.steps }));
