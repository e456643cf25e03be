#!/usr/bin/env node
// `npm run bench:dist`: data-parallel throughput of one training step (bench:step's shape: new-task
// SFT micro-batches + a flashback micro-batch, LoRA, per-micro-batch gradients, PCGrad, clipping,
// AdamW; no latent tasks, which the DDP reference does not all-reduce) in one run, interleaved:
//   ours 1 x 2  one process, 2 threads, the whole micro-batches
//   ours 2 x 1  2 processes x 1 thread on c10d Gloo (loopback), rows rank::2 of every micro-batch,
//               each micro-batch's gradients all-reduced in one flat buffer (and, as a variant, per tensor)
//   torch DDP   torchrun --nproc-per-node 2 over the PyTorch reference step (scripts/reference/dist_step.py)
// It prints tokens/s, the all-reduce ms per step that the backward did not hide (ours), and ratios.
// Usage: npm run bench:dist [-- --json] [-- --rounds N] [-- --steps N] [-- --model DIR]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

import { freePort } from '../../dist/bench/launch.js';
import * as jfa from '../../dist/index.js';
import { median, progressLine } from './harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const { values } = parseArgs({
  options: {
    json: { type: 'boolean' }, rounds: { type: 'string', default: '2' }, steps: { type: 'string', default: '3' }, model: { type: 'string' },
    worker: { type: 'string' }, dir: { type: 'string' }, port: { type: 'string' }, bucket: { type: 'string' }, threads: { type: 'string' },
  },
});
const SHAPE = { newMicroBatches: 3, flashbackMicroBatches: 1, microBatch: 4, seq: 128, promptTokens: 64 };
const KINDS = [...Array(SHAPE.newMicroBatches).fill('new'), ...Array(SHAPE.flashbackMicroBatches).fill('flashback')];
const STEP = { method: 'flashback', pcgrad: true, maxGradNorm: 1 };

/** rows rank::world of a (b, t) tensor */
function rows(t, rank, world) {
  const [b, w] = t.shape;
  const data = t.toTypedArray();
  const mine = [];
  for (let r = rank; r < b; r += world) mine.push(r);
  const out = new data.constructor(mine.length * w);
  mine.forEach((r, i) => out.set(data.subarray(r * w, (r + 1) * w), i * w));
  return jfa.tensor(out, [mine.length, w]);
}

/** A step's micro-batches from the saved file: whole, or this rank's rows (weight 1/world: full-length rows, equal tokens). */
function microBatches(dir, rank, world) {
  const { tensors } = jfa.loadSafetensors(join(dir, 'batches.safetensors'));
  return KINDS.map((kind, i) => {
    const pick = (name) => (world > 1 ? rows(tensors[`mb${i}.${name}`], rank, world) : tensors[`mb${i}.${name}`]);
    return { kind, ids: pick('ids'), attentionMask: pick('mask'), ...(kind === 'new' ? { targets: pick('targets') } : {}), weight: 1 / world };
  });
}

/** One measured setting in this process: ms per step and the all-reduce ms left visible, per step. */
async function measure(dir, { threads, rank = 0, world = 1, port, bucket = 'flat', steps }) {
  jfa.setNumThreads(threads);
  const group = world > 1 ? await jfa.ProcessGroup.connect({ rank, worldSize: world, masterPort: port, bucket }) : undefined;
  const model = jfa.LlamaModel.load(join(dir, 'model'));
  model.loadAdapter(join(dir, 'adapter'));
  const optimizer = new jfa.AdamW(Object.values(model.loraParameters()), { lr: 1e-4 });
  const micro = microBatches(dir, rank, world);
  const ms = [];
  const allreduce = [];
  for (let s = 0; s <= steps; s++) {
    if (group) await group.barrier();
    const timings = jfa.stepTimings();
    const t = performance.now();
    await jfa.trainStep(model, optimizer, micro, { ...STEP, timings, ...(group ? { group, bucket } : {}) });
    if (s > 0) {
      ms.push(performance.now() - t);
      allreduce.push(timings.allreduce);
    }
  }
  group?.dispose();
  return { ms, allreduce };
}

if (values.worker === 'one') {
  process.stdout.write(`${JSON.stringify(await measure(values.dir, { threads: Number(values.threads ?? 2), steps: Number(values.steps) }))}\n`);
  process.exit(0);
}
if (values.worker !== undefined) {
  const r = await measure(values.dir, { threads: 1, rank: Number(values.worker), world: 2, port: Number(values.port), bucket: values.bucket, steps: Number(values.steps) });
  if (values.worker === '0') process.stdout.write(`${JSON.stringify(r)}\n`);
  process.exit(0);
}

const progress = progressLine('bench:dist');
const steps = Number(values.steps);
const dir = mkdtempSync(join(tmpdir(), 'jfa-bench-dist-'));
const python = join(root, '.venv', 'bin', 'python');

function run(cmd, args, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.slice(0, 3).join(' ')} exited with ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`))));
  });
}

async function oursTwo(bucket) {
  const port = await freePort();
  const args = (rank) => [join(here, 'dist.mjs'), '--worker', String(rank), '--dir', dir, '--port', String(port), '--bucket', bucket, '--steps', String(steps)];
  const [out] = await Promise.all([0, 1].map((rank) => run(process.execPath, args(rank), { OMP_NUM_THREADS: '1' })));
  return JSON.parse(out.trim().split('\n').pop());
}

async function ddp() {
  const port = await freePort();
  const out = await run(python, ['-m', 'torch.distributed.run', '--nproc-per-node', '2', '--master-port', String(port), join(root, 'scripts', 'reference', 'dist_step.py'),
    '--model', join(dir, 'model'), '--adapter', join(dir, 'adapter'), '--batches', join(dir, 'batches.safetensors'), '--kinds', KINDS.join(','), '--steps', String(steps)], { OMP_NUM_THREADS: '1' });
  return JSON.parse(out.trim().split('\n').filter((l) => l.startsWith('{')).pop());
}

try {
  progress('setting up');
  const modelDir = values.model ?? join(root, 'models', 'jfa-base');
  if (!existsSync(join(modelDir, 'config.json'))) throw new Error(`no model at ${modelDir} (pass --model DIR)`);
  const model = jfa.LlamaModel.load(modelDir);
  model.save(join(dir, 'model'));
  model.addLora({ r: 8, loraAlpha: 16, seed: 1 });
  model.saveAdapter(join(dir, 'adapter'));
  const vocab = model.config.vocabSize;
  // Full-length rows (no padding), so every rank's shard holds the same number of tokens.
  const { microBatch: b, seq: t } = SHAPE;
  let seed = 7;
  const next = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const tensors = {};
  KINDS.forEach((kind, i) => {
    const ids = BigInt64Array.from({ length: b * t }, () => BigInt(3 + Math.floor(next() * (vocab - 3))));
    tensors[`mb${i}.ids`] = jfa.tensor(ids, [b, t]);
    tensors[`mb${i}.mask`] = jfa.tensor(new Uint8Array(b * t).fill(1), [b, t]);
    if (kind === 'new') {
      const targets = new BigInt64Array(b * t).fill(-100n);
      for (let r = 0; r < b; r++) for (let j = SHAPE.promptTokens - 1; j < t - 1; j++) targets[r * t + j] = ids[r * t + j + 1];
      tensors[`mb${i}.targets`] = jfa.tensor(targets, [b, t]);
    }
  });
  jfa.saveSafetensors(join(dir, 'batches.safetensors'), tensors);
  model.dispose();
  const tokensPerStep = KINDS.length * b * t;
  const hasTorchrun = existsSync(python) && spawnSync(python, ['-c', 'import torch.distributed.run'], { stdio: 'ignore' }).status === 0;

  const results = { '1x2': [], '2x1 flat': [], '2x1 tensor': [], ddp: [] };
  const allreduce = { '2x1 flat': [], '2x1 tensor': [] };
  for (let round = 0; round < Number(values.rounds); round++) {
    progress(`round ${round + 1}: ours 1 x 2`);
    const one = await run(process.execPath, [join(here, 'dist.mjs'), '--worker', 'one', '--threads', '2', '--dir', dir, '--steps', String(steps)], { OMP_NUM_THREADS: '2' });
    results['1x2'].push(...JSON.parse(one).ms);
    for (const bucket of ['flat', 'tensor']) {
      progress(`round ${round + 1}: ours 2 x 1 (${bucket})`);
      const r = await oursTwo(bucket);
      results[`2x1 ${bucket}`].push(...r.ms);
      allreduce[`2x1 ${bucket}`].push(...r.allreduce);
    }
    if (hasTorchrun) {
      progress(`round ${round + 1}: torch DDP 2 x 1`);
      results.ddp.push(...(await ddp()).ms);
    }
  }
  progress('');
  const rowsOut = Object.entries(results).filter(([, ms]) => ms.length).map(([name, ms]) => {
    const m = median(ms);
    return { name, msPerStep: m, tokensPerSecond: tokensPerStep / (m / 1000), allreduceMs: allreduce[name] ? median(allreduce[name]) : null };
  });
  const ddpRow = rowsOut.find((r) => r.name === 'ddp');
  for (const r of rowsOut) r.vsDdp = ddpRow ? r.tokensPerSecond / ddpRow.tokensPerSecond : null;
  if (values.json) console.log(JSON.stringify({ tokensPerStep, steps, rounds: Number(values.rounds), rows: rowsOut }));
  else {
    console.log(`bench:dist: ${tokensPerStep} tokens per step (${KINDS.length} micro-batches of ${b} x ${t}), medians over ${values.rounds} rounds x ${steps} steps`);
    console.log('setting        ms/step   tokens/s   all-reduce ms/step    vs DDP');
    for (const r of rowsOut)
      console.log(`${r.name.padEnd(12)} ${r.msPerStep.toFixed(0).padStart(9)} ${r.tokensPerSecond.toFixed(0).padStart(10)} ${(r.allreduceMs === null ? '-' : r.allreduceMs.toFixed(1)).padStart(20)} ${(r.vsDdp === null ? '-' : `${r.vsDdp.toFixed(2)}x`).padStart(8)}`);
    if (!hasTorchrun) console.log('(torch DDP skipped: no .venv with torch; run npm run setup)');
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
