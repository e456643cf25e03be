#!/usr/bin/env node
// `npm run bench:eval`: the demo's whole evaluation of one model (every old suite's held-out
// records, the held-out and seen new tasks; batched greedy generation stopping at EOS, as the demo
// runs it) with the shipped base model, timed in a fresh process per repeat. With --baseline DIR
// (another checkout of this package with its dist/ and addon built, e.g. an older commit's
// worktree), the two alternate, and the ratio and the share of identical predictions are printed.
// Usage: npm run bench:eval [-- --baseline DIR] [-- --repeats N] [-- --json]
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { packageRoot } from '../../dist/locate.js';
import { median, progressLine } from './harness.mjs';

const { values } = parseArgs({ options: { baseline: { type: 'string' }, repeats: { type: 'string', default: '3' }, json: { type: 'boolean' } } });
const repeats = Number(values.repeats);
if (!(repeats >= 1)) throw new RangeError(`--repeats must be a positive integer, got ${values.repeats}`);
const sides = { ours: packageRoot, ...(values.baseline ? { baseline: resolve(values.baseline) } : {}) };
const progress = progressLine('bench:eval');

function once(root) {
  const r = spawnSync(process.execPath, [resolve(packageRoot, 'scripts', 'bench', 'eval-worker.mjs'), root], { encoding: 'utf8', maxBuffer: 64 * 2 ** 20, stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error(`bench:eval: the evaluation in ${root} failed (exit ${r.status ?? r.signal})`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1));
}

const runs = Object.fromEntries(Object.keys(sides).map((k) => [k, []]));
for (let i = 0; i < repeats; i++)
  for (const [k, root] of Object.entries(sides)) {
    progress(`${k} ${i + 1}/${repeats}`);
    runs[k].push(once(root));
  }
progress.done();
const summary = Object.fromEntries(Object.entries(runs).map(([k, rs]) => [k, { ms: median(rs.map((r) => r.ms)), oldMs: median(rs.map((r) => r.oldMs)), newMs: median(rs.map((r) => r.newMs)), records: rs[0].records, newRougeL: rs[0].newRougeL }]));
const result = { repeats, ...summary };
if (runs.baseline) {
  const a = runs.ours[0].predictions, b = runs.baseline[0].predictions;
  result.speedup = summary.baseline.ms / summary.ours.ms;
  result.identicalPredictions = a.filter((p, i) => p === b[i]).length / a.length;
}
if (values.json) console.log(JSON.stringify(result, null, 2));
else {
  for (const [k, s] of Object.entries(summary))
    console.log(`${k.padEnd(8)} ${s.records} records in ${(s.ms / 1000).toFixed(2)} s (old suites ${(s.oldMs / 1000).toFixed(2)} s, held-out new tasks ${(s.newMs / 1000).toFixed(2)} s), held-out ROUGE-L ${(100 * s.newRougeL).toFixed(1)}`);
  if (runs.baseline) console.log(`speedup ${result.speedup.toFixed(2)}x over the baseline; identical new-task predictions ${(100 * result.identicalPredictions).toFixed(1)}%`);
}
