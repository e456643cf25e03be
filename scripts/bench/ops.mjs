#!/usr/bin/env node
// `npm run bench:ops`: each kernel (forward + backward) against the PyTorch reference
// (scripts/reference/bench_ops.py) in the same run: interleaved repeats, medians, the same thread
// count, peak memory of one run on each side, on the same device in the same dtype.
// Usage: npm run bench:ops [-- --json] [-- --json-out FILE] [-- --repeats N] [-- --ops lora,divergence]
//        [-- --device cpu|cuda|cuda:N] [-- --preset fp32|bf16|tiny|tiny-bf16[,...]]
// The device and preset default to JFA_BENCH_DEVICE and JFA_BENCH_PRESET, else cpu and fp32. On CUDA
// each timed run sits between two synchronisations on both sides, and peak memory is the caching
// allocator's (ours: memoryStats().gpus[i].peakAllocatedBytes; torch: max_memory_allocated), over
// what was allocated before the run. With OUT set, the JSON goes to $OUT/bench-ops.json as well.
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import * as jfa from '../../dist/index.js';
import { BenchUsageError, benchTarget, gpuMemory, jsonTarget, positiveInt, runBench, writeJson } from './gpu.mjs';
import { median, progressLine, resetPeak, rss, startReference } from './harness.mjs';

// The ops' sizes; `tiny` is for a quick run of every code path (a test, a CPU dry run of the GPU mode).
const FULL = {
  lora: { label: 'LoRA 4096x4096 r8, 2048 tokens', tokens: 2048, d: 4096, r: 8 },
  divergence: { label: 'symmetric KL, 2048 x 32000', tokens: 2048, vocab: 32000 },
  cross_entropy: { label: 'cross-entropy, 2048 x 32000', tokens: 2048, vocab: 32000 },
  pcgrad: { label: 'PCGrad, 4 grads x 10M params', n: 4, params: 10, numel: 1_000_000 },
  mixture: { label: 'mixture k2 of 384, 8x256x4096 r8', b: 8, t: 256, d: 4096, r: 8, pool: 384, k: 2 },
};
const TINY = {
  lora: { label: 'LoRA 256x256 r8, 128 tokens', tokens: 128, d: 256, r: 8 },
  divergence: { label: 'symmetric KL, 128 x 1000', tokens: 128, vocab: 1000 },
  cross_entropy: { label: 'cross-entropy, 128 x 1000', tokens: 128, vocab: 1000 },
  pcgrad: { label: 'PCGrad, 4 grads x 40k params', n: 4, params: 4, numel: 10_000 },
  mixture: { label: 'mixture k2 of 16, 2x32x256 r8', b: 2, t: 32, d: 256, r: 8, pool: 16, k: 2 },
};
/** Sizes and dtype of each preset: every input of an op is in that dtype (the mixture's weights too). */
const PRESETS = {
  fp32: { sizes: FULL, dtype: 'float32' },
  bf16: { sizes: FULL, dtype: 'bfloat16' },
  tiny: { sizes: TINY, dtype: 'float32' },
  'tiny-bf16': { sizes: TINY, dtype: 'bfloat16' },
};

const { values } = parseArgs({
  options: {
    json: { type: 'boolean' },
    'json-out': { type: 'string' },
    repeats: { type: 'string', default: '7' },
    ops: { type: 'string', default: 'lora,divergence,cross_entropy,pcgrad,mixture' },
    threads: { type: 'string' },
    device: { type: 'string' },
    preset: { type: 'string' },
  },
});

let seed = 1;

/** The op's inputs on `device` in the preset's dtype, and one forward + backward of it. */
function make(op, s, dtype, device) {
  const on = device === 'cpu' ? {} : { device };
  const rnd = (shape) => jfa.randn(shape, { seed: seed++, dtype, ...on });
  const randomIds = (n, max) => jfa.tensor(BigInt64Array.from({ length: n }, () => BigInt(Math.floor(Math.random() * max))), [n], on);
  if (op === 'lora') {
    const x = rnd([s.tokens, s.d]).setRequiresGrad();
    const W = rnd([s.d, s.d]);
    const A = rnd([s.r, s.d]).setRequiresGrad();
    const B = rnd([s.d, s.r]).setRequiresGrad();
    const up = rnd([s.tokens, s.d]);
    return () => {
      const y = jfa.loraLinear(x, W, A, B, { scale: 2 });
      y.backward(up);
      y.dispose();
      for (const t of [x, A, B]) t.zeroGrad();
    };
  }
  if (op === 'divergence') {
    const cur = rnd([s.tokens, s.vocab]).setRequiresGrad();
    const ref = rnd([s.tokens, s.vocab]);
    const mask = jfa.tensor(new Uint8Array(s.tokens).fill(1), [s.tokens], on);
    return () => {
      const loss = jfa.flashbackDivergence(cur, ref, mask);
      loss.backward();
      loss.dispose();
      cur.zeroGrad();
    };
  }
  if (op === 'cross_entropy') {
    const logits = rnd([s.tokens, s.vocab]).setRequiresGrad();
    const targets = randomIds(s.tokens, s.vocab);
    return () => {
      const loss = jfa.tokenCrossEntropy(logits, targets);
      loss.backward();
      loss.dispose();
      logits.zeroGrad();
    };
  }
  if (op === 'pcgrad') {
    const grads = Array.from({ length: s.n }, () => Array.from({ length: s.params }, () => rnd([s.numel])));
    let round = 0;
    return () => {
      const r = jfa.pcgrad(grads, { seed: round++ });
      for (const g of r.grads) g.dispose();
    };
  }
  if (op === 'mixture') {
    const x = rnd([s.b, s.t, s.d]).setRequiresGrad();
    const A = rnd([s.pool, s.r, s.d]).setRequiresGrad();
    const B = rnd([s.pool, s.d, s.r]).setRequiresGrad();
    const idx = jfa.tensor(BigInt64Array.from({ length: s.b * s.k }, () => BigInt(Math.floor(Math.random() * s.pool))), [s.b, s.k], on);
    const w32 = jfa.tensor(Float32Array.from({ length: s.b * s.k }, () => Math.random()), [s.b, s.k], on);
    const w = dtype === 'float32' ? w32 : w32.to(dtype);
    const up = rnd([s.b, s.t, s.d]);
    return () => {
      const y = jfa.latentMixture(x, A, B, idx, w);
      y.backward(up);
      y.dispose();
      for (const t of [x, A, B]) t.zeroGrad();
    };
  }
  throw new Error(`unknown op ${op}`);
}

async function main() {
  const { device, presets } = benchTarget('bench:ops', values, PRESETS, { defaultPreset: 'fp32', several: true });
  const repeats = positiveInt('bench:ops', 'repeats', values.repeats);
  const ops = values.ops.split(',');
  for (const op of ops) if (!Object.hasOwn(FULL, op)) throw new BenchUsageError(`bench:ops: --ops '${op}' is not an op; known: ${Object.keys(FULL).join(', ')}`);
  const threads = values.threads ? positiveInt('bench:ops', 'threads', values.threads) : jfa.runtimeInfo().numThreads;
  const jsonFile = jsonTarget(values['json-out'], 'bench-ops');
  if (device !== 'cpu') jfa.checkDevice(device, 'bench:ops --device');
  jfa.setNumThreads(threads);
  const gpu = device === 'cpu' ? undefined : gpuMemory(jfa, device);
  const sync = () => jfa.cudaSynchronize(); // a no-op on a CPU build or before CUDA was used

  // The peak of one run over what was allocated before it: RSS on the CPU, the allocator's on a GPU.
  function peakMiB(run) {
    if (gpu) {
      gpu.reset();
      const base = gpu.allocatedMiB();
      run();
      return gpu.peakMiB() - base;
    }
    jfa.emptyCpuCache(); // what earlier runs left cached must not hide this run's own peak
    resetPeak();
    const base = rss('VmRSS');
    run();
    return rss('VmHWM') - base;
  }

  const ref = startReference('bench_ops.py');
  const progress = progressLine('bench:ops');
  const rows = [];
  let torchGpu = null;
  try {
    for (const preset of presets) {
      const { sizes, dtype } = PRESETS[preset];
      for (const op of ops) {
        progress(`${preset} ${op}: setting up`);
        const { label, ...size } = sizes[op];
        const setup = await ref.ask({ cmd: 'setup', op, threads, size, device, dtype });
        if (setup.threads !== threads) throw new Error(`reference runs ${setup.threads} threads, ours ${threads}`);
        torchGpu = setup.gpu;
        const run = make(op, sizes[op], dtype, device);
        for (let i = 0; i < 3; i++) run(); // warm up, as the reference does
        const ours = [];
        const theirs = [];
        for (let i = 0; i < repeats; i++) {
          progress(`${preset} ${op}: repeat ${i + 1}/${repeats}`);
          sync();
          const t = performance.now();
          run();
          sync();
          ours.push(performance.now() - t);
          theirs.push((await ref.ask({ cmd: 'time', op })).ms);
        }
        const oursPeak = peakMiB(run);
        const theirPeak = (await ref.ask({ cmd: 'memory', op })).peakMiB;
        rows.push({
          preset,
          dtype,
          op,
          size: label,
          oursMs: median(ours),
          torchMs: median(theirs),
          ratio: median(ours) / median(theirs),
          oursPeakMiB: oursPeak,
          torchPeakMiB: theirPeak,
          memoryRatio: oursPeak / theirPeak,
        });
      }
    }
  } finally {
    ref.close();
    progress.done();
  }

  const memory = gpu ? 'the CUDA caching allocator\'s peak over what was allocated before the run' : 'RSS growth of one run';
  const result = { device, gpu: gpu?.name ?? null, torchGpu, threads, repeats, presets, memory, rows };
  writeJson(jsonFile, result);
  if (values.json) {
    console.log(JSON.stringify(result, null, 2));
  } else {
    const where = gpu ? `${device} (${gpu.name}), synchronised around each run` : `cpu, ${threads} threads`;
    console.log(`bench:ops: forward + backward on ${where}, medians of ${repeats} interleaved repeats; peak = ${memory}`);
    console.log('preset     op              size                                ours ms  torch ms  ratio  ours peak MiB  torch peak MiB  mem ratio');
    for (const r of rows)
      console.log(
        `${r.preset.padEnd(10)} ${r.op.padEnd(15)} ${r.size.padEnd(34)} ${r.oursMs.toFixed(2).padStart(8)} ${r.torchMs.toFixed(2).padStart(9)} ${r.ratio.toFixed(2).padStart(6)} ${r.oursPeakMiB.toFixed(1).padStart(14)} ${r.torchPeakMiB.toFixed(1).padStart(15)} ${r.memoryRatio.toFixed(2).padStart(10)}`,
      );
    if (jsonFile) console.log(`JSON: ${jsonFile}`);
  }
}

await runBench(main);
