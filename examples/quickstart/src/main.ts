// Fine-tunes a model on new tasks with Joint Flashback Adaptation, then evaluates and generates.
// Usage: node dist/main.js [MODEL_DIR] [OUT_DIR]
//   MODEL_DIR: a Hugging Face Llama folder (default: the small base model shipped with jfa-torch)
//   env MAX_STEPS: stop after this many steps (a quick try); EVAL_RECORDS: how many records to score
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { evaluateNew, generateText, LlamaModel, promptText, readJsonl, type StepProgress, Tokenizer, train } from 'jfa-torch';

const here = dirname(fileURLToPath(import.meta.url));
const shipped = join(dirname(createRequire(import.meta.url).resolve('jfa-torch/package.json')), 'models', 'jfa-base');
const modelDir = process.argv[2] ?? shipped;
const outDir = process.argv[3] ?? join(here, '..', 'runs', 'jfa');
const maxSteps = process.env.MAX_STEPS ? Number(process.env.MAX_STEPS) : undefined;

// New tasks to learn ({task, instruction, input, output}) and prompts of what the model already
// knows ({task, instruction, input}): the flashbacks keep its answers there from drifting.
const newTasks = readJsonl(join(here, '..', 'data', 'new-tasks.jsonl'), 'instance');
const flashbacks = readJsonl(join(here, '..', 'data', 'flashbacks.jsonl'), 'flashback');

const tokenizer = Tokenizer.fromDir(modelDir);
using model = await LlamaModel.loadAsync(modelDir);

// Progress arrives once per optimizer step.
function onStep(p: StepProgress): void {
  const pct = ((100 * p.step) / p.totalSteps).toFixed(0).padStart(3);
  console.log(`${pct}% step ${p.step}/${p.totalSteps}  sft ${p.sft.toFixed(3)}  divergence ${p.divergence.toFixed(4)}  ${p.tokensPerSecond.toFixed(0)} tok/s`);
}

const result = await train(model, tokenizer, { newTrain: newTasks, flashbacks }, {
  method: 'jfa',
  epochs: 2,
  microBatch: 4,
  accumulation: 1,
  lr: 2e-3,
  alpha: 1,
  lora: { r: 8, loraAlpha: 16 },
  seed: 0,
  outDir, // adapter/ (PEFT layout), metrics.jsonl, checkpoints
  tensorboard: join(outDir, 'tensorboard'),
  maxSteps,
  onStep,
});
console.log(`trained ${result.steps}/${result.totalSteps} steps on ${result.tokens} tokens in ${(result.elapsedMs / 1000).toFixed(1)} s`);

const evalRecords = newTasks.slice(0, Number(process.env.EVAL_RECORDS ?? newTasks.length));
const scores = await evaluateNew(model, tokenizer, evalRecords, {
  maxNewTokens: 8,
  latent: result.pool, // the latent tasks trained with the adapter, retrieved per prompt
  onBatch: (done, total) => console.log(`eval ${done}/${total}`),
});
console.log(`new tasks: ROUGE-L ${scores.rougeL.toFixed(3)}, exact match ${scores.exactMatch.toFixed(3)}`);

// The prompt layout training used (instruction, input, one line each).
const prompt = promptText({ task: 'reverse-word', instruction: 'Write the word backwards.', input: 'lemon' });
const [sample] = await generateText(model, tokenizer, [prompt], { maxNewTokens: 8 });
console.log(`generate: ${JSON.stringify(sample?.text)}`);
result.pool?.dispose();
console.log(JSON.stringify({ steps: result.steps, rougeL: scores.rougeL, exactMatch: scores.exactMatch, adapter: join(outDir, 'adapter') }));
