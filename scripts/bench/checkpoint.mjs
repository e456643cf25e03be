#!/usr/bin/env node
// `npm run bench:checkpoint`: what activation checkpointing saves and costs in a training step. A
// ~100M-parameter Llama (random weights, transformers' layout) trains LoRA (r 8, every linear layer)
// with SFT on full 512-token sequences, with and without checkpointing, each in its own process
// (peak memory is per process), alternating, medians. Peak memory is the growth of the peak RSS over
// the loaded model, through the steps; time is the step's wall time after a first warm-up step.
// Usage: npm run bench:checkpoint [-- --repeats N] [-- --steps N] [-- --batch B] [-- --json]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import * as jfa from '../../dist/index.js';
import { median, progressLine, resetPeak, rss, startReference } from './harness.mjs';

const { values } = parseArgs({
  options: {
    child: { type: 'string' }, dir: { type: 'string' }, json: { type: 'boolean' },
    repeats: { type: 'string', default: '2' }, steps: { type: 'string', default: '3' }, batch: { type: 'string', default: '4' },
  },
});
const SEQ = 512;
const steps = Number(values.steps);
const batch = Number(values.batch);

if (values.child) {
  // One process, one setting: load, a small forward to touch the weights, then the steps.
  const model = jfa.LlamaModel.load(values.dir);
  model.addLora({ r: 8, loraAlpha: 16, seed: 1 });
  model.activationCheckpointing = values.child === 'on';
  const vocab = model.config.vocabSize;
  const ids = jfa.tensor(BigInt64Array.from({ length: batch * SEQ }, (_, i) => BigInt(3 + ((i * 7919) % (vocab - 3)))), [batch, SEQ]);
  const targets = jfa.tensor(BigInt64Array.from({ length: batch * SEQ }, (_, i) => BigInt(3 + (((i + 1) * 7919) % (vocab - 3)))), [batch, SEQ]);
  const mask = jfa.tensor(new Uint8Array(batch * SEQ).fill(1), [batch, SEQ]);
  model.logits(jfa.tensor(BigInt64Array.from([5n, 6n, 7n, 8n]), [1, 4])).dispose();
  const optimizer = new jfa.AdamW(Object.values(model.loraParameters()), { lr: 1e-4 });
  const base = rss('VmRSS');
  resetPeak();
  const ms = [];
  for (let s = 0; s < steps; s++) {
    const t = performance.now();
    await jfa.trainStep(model, optimizer, [{ kind: 'new', ids, attentionMask: mask, targets }], { method: 'sft', seed: s });
    ms.push(performance.now() - t);
  }
  console.log(JSON.stringify({ stepMs: median(ms.slice(1)), peakMiB: rss('VmHWM') - base }));
  process.exit(0);
}

const CONFIG = {
  vocab_size: 32000, hidden_size: 768, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 12,
  num_key_value_heads: 12, max_position_embeddings: 1024, tie_word_embeddings: true, model_type: 'llama',
};
const progress = progressLine('bench:checkpoint');
const dir = mkdtempSync(join(tmpdir(), 'jfa-bench-ckpt-'));
try {
  progress('creating a ~100M model with transformers');
  const { ask, close } = startReference('bench_model.py');
  await ask({ cmd: 'create', dir, config: CONFIG });
  close();
  const runs = { off: [], on: [] };
  for (let r = 0; r < Number(values.repeats); r++)
    for (const mode of ['off', 'on']) {
      progress(`${mode} ${r + 1}/${values.repeats}`);
      const c = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--child', mode, '--dir', dir, '--steps', String(steps), '--batch', String(batch)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      if (c.status !== 0) throw new Error(`bench:checkpoint: the ${mode} run failed (exit ${c.status ?? c.signal})`);
      runs[mode].push(JSON.parse(c.stdout.trim().split('\n').at(-1)));
    }
  progress.done();
  const m = (mode, k) => median(runs[mode].map((x) => x[k]));
  const result = {
    threads: jfa.runtimeInfo().numThreads, batch, seq: SEQ,
    off: { stepMs: m('off', 'stepMs'), peakMiB: m('off', 'peakMiB') },
    on: { stepMs: m('on', 'stepMs'), peakMiB: m('on', 'peakMiB') },
  };
  result.memoryRatio = result.on.peakMiB / result.off.peakMiB;
  result.timeRatio = result.on.stepMs / result.off.stepMs;
  if (values.json) console.log(JSON.stringify(result, null, 2));
  else {
    console.log(`bench:checkpoint: ~100M Llama, LoRA r 8 on every linear layer, SFT on ${batch}x${SEQ} tokens, ${result.threads} threads, medians of ${values.repeats} runs`);
    console.log(`without checkpointing: ${(result.off.stepMs / 1000).toFixed(2)} s/step, peak +${result.off.peakMiB.toFixed(0)} MiB over the loaded model`);
    console.log(`with checkpointing:    ${(result.on.stepMs / 1000).toFixed(2)} s/step, peak +${result.on.peakMiB.toFixed(0)} MiB`);
    console.log(`memory ${result.memoryRatio.toFixed(2)}x, time ${result.timeRatio.toFixed(2)}x`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
