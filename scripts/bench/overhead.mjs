#!/usr/bin/env node
// Per-call overhead of trivial ops: ours (through the TypeScript API and the raw addon) against
// the same ops from Python torch, same thread count, interleaved runs, medians.
// Usage: npm run bench:overhead [-- --json] [-- --calls N] [-- --repeats R]
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import { add, matmul, sum, tensor } from '../../dist/index.js';
import { native } from '../../dist/native.js';
import { median, startReference } from './harness.mjs';

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
// The addon's own surface: tensor ids in, an id out, freed by dispose(id).
const raw = {
  add: () => addon.dispose(addon.add(a.handle, b.handle, 1)),
  matmul8: () => addon.dispose(addon.matmul(m.handle, m.handle)),
  sum: () => addon.dispose(addon.sum(a.handle, undefined, false)),
};

function perCall(fn) {
  for (let i = 0; i < 1000; i++) fn();
  const t = performance.now();
  for (let i = 0; i < calls; i++) fn();
  return ((performance.now() - t) / calls) * 1000;
}

const samples = { ours: {}, raw: {}, torch: {} };
for (const op of Object.keys(ours)) for (const k of Object.keys(samples)) samples[k][op] = [];
const reference = startReference('overhead.py');
await reference.ask({ cmd: 'threads', n: threads });
for (let r = 0; r < repeats; r++) {
  const py = await reference.ask({ cmd: 'time', calls });
  for (const op of Object.keys(ours)) {
    samples.ours[op].push(perCall(ours[op]));
    samples.raw[op].push(perCall(raw[op]));
    samples.torch[op].push(py[op]);
  }
}
reference.close();
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
