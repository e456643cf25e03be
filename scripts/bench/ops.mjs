#!/usr/bin/env node
// `npm run bench:ops`: each kernel (forward + backward) against the PyTorch reference
// (scripts/reference/bench_ops.py) in the same run: interleaved repeats, medians, the same thread
// count, peak memory of one run on each side.
// Usage: npm run bench:ops [-- --json] [-- --repeats N] [-- --ops lora,divergence]
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import * as jfa from '../../dist/index.js';
import { median, progressLine, resetPeak, rss, startReference } from './harness.mjs';

const { values } = parseArgs({
  options: {
    json: { type: 'boolean' },
    repeats: { type: 'string', default: '7' },
    ops: { type: 'string', default: 'lora,divergence,cross_entropy,pcgrad,mixture' },
    threads: { type: 'string' },
  },
});
const repeats = Number(values.repeats);
const threads = Number(values.threads ?? jfa.runtimeInfo().numThreads);
jfa.setNumThreads(threads);

const SIZES = {
  lora: { label: 'LoRA 4096x4096 r8, 2048 tokens', tokens: 2048, d: 4096, r: 8 },
  divergence: { label: 'symmetric KL, 2048 x 32000', tokens: 2048, vocab: 32000 },
  cross_entropy: { label: 'cross-entropy, 2048 x 32000', tokens: 2048, vocab: 32000 },
  pcgrad: { label: 'PCGrad, 4 grads x 10M params', n: 4, params: 10, numel: 1_000_000 },
  mixture: { label: 'mixture k2 of 384, 8x256x4096 r8', b: 8, t: 256, d: 4096, r: 8, pool: 384, k: 2 },
};

let seed = 1;
const rnd = (shape) => jfa.randn(shape, { seed: seed++ });
const randomIds = (n, max) => jfa.tensor(BigInt64Array.from({ length: n }, () => BigInt(Math.floor(Math.random() * max))), [n]);

function make(op) {
  const s = SIZES[op];
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
    const mask = jfa.tensor(new Uint8Array(s.tokens).fill(1), [s.tokens]);
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
    const idx = jfa.tensor(BigInt64Array.from({ length: s.b * s.k }, () => BigInt(Math.floor(Math.random() * s.pool))), [s.b, s.k]);
    const w = jfa.tensor(Float32Array.from({ length: s.b * s.k }, () => Math.random()), [s.b, s.k]);
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

function peakMiB(run) {
  jfa.emptyCpuCache(); // what earlier runs left cached must not hide this run's own peak
  resetPeak();
  const base = rss('VmRSS');
  run();
  return rss('VmHWM') - base;
}

const ref = startReference('bench_ops.py');
const progress = progressLine('bench:ops');
const rows = [];
for (const op of values.ops.split(',')) {
  progress(`${op}: setting up`);
  const setup = await ref.ask({ cmd: 'setup', op, threads });
  if (setup.threads !== threads) throw new Error(`reference runs ${setup.threads} threads, ours ${threads}`);
  const run = make(op);
  for (let i = 0; i < 3; i++) run(); // warm up, as the reference does
  const ours = [];
  const theirs = [];
  for (let i = 0; i < repeats; i++) {
    progress(`${op}: repeat ${i + 1}/${repeats}`);
    const t = performance.now();
    run();
    ours.push(performance.now() - t);
    theirs.push((await ref.ask({ cmd: 'time', op })).ms);
  }
  const oursPeak = peakMiB(run);
  const theirPeak = (await ref.ask({ cmd: 'memory', op })).peakMiB;
  rows.push({
    op,
    size: SIZES[op].label,
    oursMs: median(ours),
    torchMs: median(theirs),
    ratio: median(ours) / median(theirs),
    oursPeakMiB: oursPeak,
    torchPeakMiB: theirPeak,
    memoryRatio: oursPeak / theirPeak,
  });
}
ref.close();
progress.done();

if (values.json) {
  console.log(JSON.stringify({ threads, repeats, rows }, null, 2));
} else {
  console.log(`bench:ops: forward + backward, ${threads} threads, medians of ${repeats} interleaved repeats; peak = RSS growth of one run`);
  console.log('op              size                                ours ms  torch ms  ratio  ours peak MiB  torch peak MiB  mem ratio');
  for (const r of rows)
    console.log(
      `${r.op.padEnd(15)} ${r.size.padEnd(34)} ${r.oursMs.toFixed(1).padStart(8)} ${r.torchMs.toFixed(1).padStart(9)} ${r.ratio.toFixed(2).padStart(6)} ${r.oursPeakMiB.toFixed(0).padStart(14)} ${r.torchPeakMiB.toFixed(0).padStart(15)} ${r.memoryRatio.toFixed(2).padStart(10)}`,
    );
}
