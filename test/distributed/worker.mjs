// One rank of test/30's data-parallel runs (or the single process they are compared with). Reads
// its settings from argv[2] (JSON): model, out, steps, rank/world/port (absent: one process),
// resume, timeoutMs, stallAfter (hang after that step: SIGKILL'd by the test), stream, extra options;
// addr (MASTER_ADDR, default loopback) and stepDelayMs (a pause after each step, so that a test can
// act in the middle of a run) for test/43's two hosts; device (where the model trains, default the
// CPU) and backend for test/45's NCCL run on a GPU.

import { generateSuite, LlamaModel, Tokenizer, train } from '../../dist/index.js';

const a = JSON.parse(process.argv[2]);
const suite = generateSuite({ seed: 5, oldTrainPerSuite: 4, oldEvalPerSuite: 2, instancesPerTask: 1 });
const records = suite.newTrain.slice(0, a.records ?? 40);
// stream: the records as an AsyncIterable (read in windows), as a streamed run reads them.
const newTrain = a.stream ? { async *[Symbol.asyncIterator]() { yield* records; } } : records;
const data = { newTrain, flashbacks: suite.flashbacks.slice(0, 8) };
const options = {
  method: 'jfa',
  microBatch: 2,
  accumulation: 2,
  flashbackMicroBatches: 1,
  maxTokens: 96,
  lr: 5e-3,
  lora: { r: 4, loraAlpha: 8 },
  latentOptions: { groups: 2, perGroup: 3, k: 2, rank: 2 },
  seed: 3,
  pcgrad: true,
  outDir: a.out,
  resume: a.resume,
  checkpointEvery: a.checkpointEvery,
  ...(a.world ? { distributed: { rank: a.rank, worldSize: a.world, masterAddr: a.addr, masterPort: a.port, timeoutMs: a.timeoutMs ?? 20000, backend: a.backend } } : {}),
  ...(a.extra ?? {}),
  onStep: (p) => {
    process.stdout.write(`step ${p.step}\n`);
    if (a.stepDelayMs) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, a.stepDelayMs);
    if (a.stallAfter !== undefined && p.step >= a.stallAfter) {
      process.stdout.write('stalled\n');
      for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
    }
  },
};
const model = LlamaModel.load(a.model, { device: a.device });
try {
  const r = await train(model, Tokenizer.fromDir(a.model), data, options);
  process.stdout.write(`done ${r.steps}\n`);
} catch (e) {
  process.stdout.write(`error ${e.code ?? e.name}\n`);
  process.stderr.write(`${e.message}\n`);
  process.exit(1);
}
