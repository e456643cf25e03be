#!/usr/bin/env node
// Per-call overhead of trivial ops: ours (through the TypeScript API and the raw addon) against
// the same ops from Python torch, same thread count, interleaved runs, medians.
// Usage: npm run bench:overhead [-- --json] [-- --calls N] [-- --repeats R]
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import { add, matmul, sum, tensor } from '../../dist/index.js';
import { native } from '../../dist/native.js';
import { packageRoot } from '../../dist/locate.js';

const { values } = parseArgs({
  options: { json: { type: 'boolean' }, calls: { type: 'string', default: '100000' }, repeats: { type: 'string', default: '5' } },
});
const calls = Number(values.calls);
const repeats = Number(values.repeats);
const addon = native();
const threads = addon.info().numThreads;

const a = tensor([1]);
const b = tensor([1]);
const m = tensor(new Float32Array(64).fill(1), [8, 8]);
const ours = {
  add: () => add(a, b).dispose(),
  matmul8: () => matmul(m, m).dispose(),
  sum: () => sum(a).dispose(),
};
const raw = {
  add: () => addon.add(a.handle, b.handle, 1).dispose(),
  matmul8: () => addon.matmul(m.handle, m.handle).dispose(),
  sum: () => addon.sum(a.handle, undefined, false).dispose(),
};

function perCall(fn) {
  for (let i = 0; i < 1000; i++) fn();
  const t = performance.now();
  for (let i = 0; i < calls; i++) fn();
  return ((performance.now() - t) / calls) * 1000;
}

// The reference runs in its best configuration (glibc's thresholds raised, as for our benchmarks).
const pyEnv = { ...process.env, MALLOC_MMAP_THRESHOLD_: '1073741824', MALLOC_TRIM_THRESHOLD_: '1073741824' };
function python() {
  const r = spawnSync(join(packageRoot, '.venv', 'bin', 'python'), [join(packageRoot, 'scripts', 'reference', 'overhead.py'), String(calls), String(threads)], {
    encoding: 'utf8',
    env: pyEnv,
  });
  if (r.status !== 0) throw new Error(`reference failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const samples = { ours: {}, raw: {}, torch: {} };
for (const op of Object.keys(ours)) for (const k of Object.keys(samples)) samples[k][op] = [];
for (let r = 0; r < repeats; r++) {
  const py = python();
  for (const op of Object.keys(ours)) {
    samples.ours[op].push(perCall(ours[op]));
    samples.raw[op].push(perCall(raw[op]));
    samples.torch[op].push(py[op]);
  }
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const rows = Object.keys(ours).map((op) => {
  const o = median(samples.ours[op]);
  const w = median(samples.raw[op]);
  const t = median(samples.torch[op]);
  return { op, oursUs: o, rawAddonUs: w, torchUs: t, ratio: o / t };
});
if (values.json) {
  console.log(JSON.stringify({ threads, calls, repeats, rows }, null, 2));
} else {
  console.log(`per-call overhead, ${threads} threads, ${calls} calls x ${repeats} interleaved repeats (medians)`);
  console.log('op        ours (TS API)  raw addon  python torch  ours/torch');
  for (const r of rows)
    console.log(`${r.op.padEnd(9)} ${r.oursUs.toFixed(2).padStart(10)} us ${r.rawAddonUs.toFixed(2).padStart(7)} us ${r.torchUs.toFixed(2).padStart(9)} us ${r.ratio.toFixed(2).padStart(10)}`);
}
