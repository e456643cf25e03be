#!/usr/bin/env node
// `node scripts/bench/omp.mjs`: what libgomp's wait policy costs, on this machine as it is and with
// one core taken by another process. The demo's whole evaluation (eval-worker.mjs, a fresh process
// per run) is timed under each policy: libgomp's defaults (threads spin between parallel regions),
// OMP_WAIT_POLICY=passive (they sleep at once), and GOMP_SPINCOUNT=N (they spin N times, then sleep),
// alternating, first with nothing else running, then beside a busy loop that holds one core.
// Usage: node scripts/bench/omp.mjs [--repeats N] [--spincounts 10000,100000] [--json]
import { spawn, spawnSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { packageRoot } from '../../dist/locate.js';
import { median, progressLine } from './harness.mjs';

const { values } = parseArgs({ options: { repeats: { type: 'string', default: '3' }, spincounts: { type: 'string', default: '10000' }, json: { type: 'boolean' } } });
const repeats = Number(values.repeats);
if (!Number.isInteger(repeats) || repeats < 1) throw new RangeError(`--repeats must be a positive integer, got ${values.repeats}`);
const spins = values.spincounts.split(',').filter(Boolean).map(Number);
if (spins.some((n) => !Number.isInteger(n) || n < 0)) throw new RangeError(`--spincounts must be non-negative integers, got ${values.spincounts}`);

const base = { ...process.env };
delete base.OMP_WAIT_POLICY;
delete base.GOMP_SPINCOUNT;
const policies = { default: {}, passive: { OMP_WAIT_POLICY: 'passive' }, ...Object.fromEntries(spins.map((n) => [`spincount ${n}`, { GOMP_SPINCOUNT: String(n) }])) };
const progress = progressLine('omp');

function once(env) {
  const r = spawnSync(process.execPath, [resolve(packageRoot, 'scripts', 'bench', 'eval-worker.mjs'), packageRoot], { encoding: 'utf8', env: { ...base, ...env }, maxBuffer: 64 * 2 ** 20, stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error(`omp: the evaluation failed (exit ${r.status ?? r.signal})`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)).ms;
}

function measure(label) {
  const runs = Object.fromEntries(Object.keys(policies).map((k) => [k, []]));
  for (let i = 0; i < repeats; i++)
    for (const [k, env] of Object.entries(policies)) {
      progress(`${label}: ${k} ${i + 1}/${repeats}`);
      runs[k].push(once(env));
    }
  return Object.fromEntries(Object.entries(runs).map(([k, ms]) => [k, { medianMs: median(ms), ms }]));
}

const result = { cores: cpus().length, loadBefore: loadavg()[0], idle: measure('idle') };
// One core held by a busy loop, as another job on a shared machine would hold it.
const busy = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
try {
  result.oneCoreBusy = measure('one core busy');
} finally {
  busy.kill('SIGKILL');
}
progress.done();
if (values.json) console.log(JSON.stringify(result, null, 2));
else {
  console.log(`${result.cores} cores, load ${result.loadBefore.toFixed(2)} before; the demo's evaluation, median of ${repeats} fresh processes:`);
  console.log(`${'policy'.padEnd(18)} ${'idle'.padStart(9)} ${'one core busy'.padStart(14)}`);
  for (const k of Object.keys(policies))
    console.log(`${k.padEnd(18)} ${(result.idle[k].medianMs / 1000).toFixed(2).padStart(8)}s ${(result.oneCoreBusy[k].medianMs / 1000).toFixed(2).padStart(13)}s`);
}
