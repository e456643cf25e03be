#!/usr/bin/env node
// `npm run bench:step`: one JFA optimizer step (new-task SFT micro-batches + a flashback micro-batch
// with its reference forward, latent tasks on one layer's o_proj, per-micro-batch gradients, PCGrad,
// clipping, AdamW) by our trainStep and by the PyTorch reference (scripts/reference/jfa_step.py:
// transformers + PEFT) in the same run, interleaved, same thread count, same start state and
// batches, same PCGrad orders; medians over repeats. Two models: the demo's size (or --model DIR)
// and a ~100M-parameter Llama (random weights, bench:model's config).
// Flashback micro-batches carry what the trainer keeps of the reference (the base is frozen): its
// logits when they fit in 1 GiB, else its final hidden states; --recompute-reference runs the
// reference forward in every step instead, as the PyTorch reference does.
// Usage: npm run bench:step [-- --json] [-- --repeats N] [-- --threads N] [-- --model DIR] [-- --only small|100m]
//        [-- --recompute-reference]
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import * as jfa from '../../dist/index.js';
import { median, progressLine, rss as status, startReference } from './harness.mjs';

const { values } = parseArgs({
  options: {
    json: { type: 'boolean' }, repeats: { type: 'string', default: '3' }, model: { type: 'string' }, only: { type: 'string' },
    threads: { type: 'string' }, 'recompute-reference': { type: 'boolean' },
  },
});
const repeats = Number(values.repeats);
// --threads 1 on a machine shared with other work: a thread that waits for a descheduled peer at
// each of a step's thousands of parallel regions costs more than the second core gives.
if (values.threads) jfa.setNumThreads(Number(values.threads));
const threads = jfa.runtimeInfo().numThreads;
const BIG = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 32000, hidden_size: 768, intermediate_size: 2048,
  num_hidden_layers: 12, num_attention_heads: 12, num_key_value_heads: 12, max_position_embeddings: 1024,
  tie_word_embeddings: true, rms_norm_eps: 1e-5, rope_theta: 10000.0, hidden_act: 'silu', torch_dtype: 'float32',
};
// The trainer's shape of a step: 4 new-task micro-batches of 4 and 1 flashback micro-batch of 4.
const SHAPE = { newMicroBatches: 4, flashbackMicroBatches: 1, microBatch: 4, seq: 256, promptTokens: 128 };
const OPTIM = { lr: 1e-4, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.0 };
const LORA = { r: 8, loraAlpha: 16 };
const MATMUL = 2048;

const { ask, close } = startReference('jfa_step.py');
const progress = progressLine('bench:step');

// A small deterministic generator (mulberry32) for token ids and retrieval.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Full-length sequences (no padding); new-task targets are the next token over the second half. */
function makeBatches(vocab, latent, seed) {
  const next = rng(seed);
  const { microBatch: b, seq: t } = SHAPE;
  const micro = [];
  const kinds = [...Array(SHAPE.newMicroBatches).fill('new'), ...Array(SHAPE.flashbackMicroBatches).fill('flashback')];
  for (const kind of kinds) {
    const ids = BigInt64Array.from({ length: b * t }, () => BigInt(3 + Math.floor(next() * (vocab - 3))));
    const mb = { kind, ids: jfa.tensor(ids, [b, t]), attentionMask: jfa.tensor(new Uint8Array(b * t).fill(1), [b, t]) };
    if (kind === 'new') {
      const targets = new BigInt64Array(b * t).fill(-100n);
      for (let r = 0; r < b; r++) for (let i = SHAPE.promptTokens - 1; i < t - 1; i++) targets[r * t + i] = ids[r * t + i + 1];
      mb.targets = jfa.tensor(targets, [b, t]);
    }
    // k tasks of one group per sample, weights sim / sum as retrieval gives them
    const indices = new BigInt64Array(b * latent.k);
    const weights = new Float32Array(b * latent.k);
    for (let r = 0; r < b; r++) {
      const group = Math.floor(next() * latent.groups);
      const picks = new Set();
      while (picks.size < latent.k) picks.add(Math.floor(next() * latent.perGroup));
      const sims = [...picks].map(() => 0.2 + next());
      const total = sims.reduce((x, y) => x + y, 0);
      [...picks].forEach((q, j) => {
        indices[r * latent.k + j] = BigInt(group * latent.perGroup + q);
        weights[r * latent.k + j] = sims[j] / total;
      });
    }
    mb.latent = { indices: jfa.tensor(indices, [b, latent.k]), weights: jfa.tensor(weights, [b, latent.k]) };
    micro.push(mb);
  }
  return { micro, kinds };
}

function saveBatches(file, micro) {
  const tensors = {};
  micro.forEach((mb, i) => {
    Object.assign(tensors, { [`mb${i}.ids`]: mb.ids, [`mb${i}.mask`]: mb.attentionMask, [`mb${i}.indices`]: mb.latent.indices, [`mb${i}.weights`]: mb.latent.weights });
    if (mb.targets) tensors[`mb${i}.targets`] = mb.targets;
  });
  jfa.saveSafetensors(file, tensors);
}

/**
 * FLOPs of one step, counted on the matmuls: N = weights of the linear layers and the LM head; per
 * token of a trained forward 2N, of its backward 2N (input gradients only: the base is frozen; the
 * LoRA and latent factors' own gradients are < 1% of it and not counted), of a reference forward
 * 2N; causal attention adds 2 * t * (heads * head_dim) per token and layer forward, twice that backward.
 */
function stepFlops(config, trainTokens, refTokens) {
  const H = config.hidden_size, I = config.intermediate_size, L = config.num_hidden_layers;
  const hd = config.head_dim ?? H / config.num_attention_heads;
  const q = config.num_attention_heads * hd, kv = (config.num_key_value_heads ?? config.num_attention_heads) * hd;
  const N = L * (H * q + 2 * H * kv + q * H + 3 * H * I) + config.vocab_size * H;
  const attn = 2 * SHAPE.seq * q * L;
  return { N, flops: trainTokens * (4 * N + 3 * attn) + refTokens * (2 * N + attn) };
}

function matmulMs() {
  const a = jfa.randn([MATMUL, MATMUL], { seed: 1 });
  const b = jfa.randn([MATMUL, MATMUL], { seed: 2 });
  jfa.matmul(a, b).dispose();
  const times = [];
  for (let i = 0; i < 10; i++) {
    const t = performance.now();
    jfa.matmul(a, b).dispose();
    times.push(performance.now() - t);
  }
  a.dispose();
  b.dispose();
  return median(times);
}

async function benchModel(label, dir) {
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  progress(`${label}: setting up`);
  const model = jfa.LlamaModel.load(dir);
  model.addLora({ ...LORA, seed: 1 });
  const cfg = model.config;
  const layer = Math.floor(cfg.numLayers / 2);
  const latent = new jfa.LatentTasks(cfg.hiddenSize, cfg.numHeads * cfg.headDim, cfg.hiddenSize, { seed: 1 });
  model.setLatentPool(layer, latent.A, latent.B);
  const params = [...Object.values(model.loraParameters()), latent.A, latent.B];
  const optimizer = new jfa.AdamW(params, { lr: OPTIM.lr, betas: OPTIM.betas, eps: OPTIM.eps, weightDecay: OPTIM.weight_decay });
  const work = mkdtempSync(join(tmpdir(), 'jfa-bench-step-state-'));
  try {
    model.saveAdapter(join(work, 'adapter'));
    jfa.saveSafetensors(join(work, 'pool.safetensors'), { A: latent.A, B: latent.B });
    const { micro, kinds } = makeBatches(cfg.vocabSize, latent, 7);
    // What the trainer keeps of the reference for these flashbacks (logits within 1 GiB).
    const flashbackTokens = micro.filter((mb) => mb.kind === 'flashback').reduce((s, mb) => s + mb.ids.shape[0] * mb.ids.shape[1], 0);
    const keep = values['recompute-reference'] ? undefined : jfa.referenceKeeping(model, flashbackTokens);
    if (keep)
      for (const mb of micro)
        if (mb.kind === 'flashback') mb[keep === 'logits' ? 'referenceLogits' : 'referenceHidden'] = jfa.keepReference(model, keep, mb.ids, mb.attentionMask);
    saveBatches(join(work, 'batches.safetensors'), micro);
    const theirsSetup = await ask({ cmd: 'setup', model: dir, adapter: join(work, 'adapter'), pool: join(work, 'pool.safetensors'), layer, alpha: 1,
      max_grad_norm: 1.0, kl: 'symmetric', reduction: 'mean', pcgrad: true, ...OPTIM });
    await ask({ cmd: 'batches', name: label, file: join(work, 'batches.safetensors'), kinds });
    const oursBase = status('VmRSS');
    const stepOptions = (seed, timings) => ({ method: 'jfa', alpha: 1, pcgrad: true, maxGradNorm: 1.0, seed, timings });
    const orders = (seed) => jfa.pcgradOrders(micro.length, seed);

    progress(`${label}: warm-up step`);
    await jfa.trainStep(model, optimizer, micro, stepOptions(0));
    await ask({ cmd: 'step', batches: label, orders: orders(0) });

    const ours = { ms: [], hwm: [], timings: [] };
    const theirs = { ms: [], hwm: [], split: [] };
    for (let i = 1; i <= repeats; i++) {
      progress(`${label}: step ${i}/${repeats} (ours)`);
      const timings = jfa.stepTimings();
      writeFileSync('/proc/self/clear_refs', '5');
      const t = performance.now();
      await jfa.trainStep(model, optimizer, micro, stepOptions(i, timings));
      ours.ms.push(performance.now() - t);
      ours.hwm.push(status('VmHWM'));
      ours.timings.push(timings);
      progress(`${label}: step ${i}/${repeats} (reference)`);
      const r = await ask({ cmd: 'step', batches: label, orders: orders(i) });
      theirs.ms.push(r.ms);
      theirs.hwm.push(r.hwmMiB);
      theirs.split.push(r.split);
    }
    const trainTokens = micro.reduce((s, mb) => s + mb.ids.shape[0] * mb.ids.shape[1], 0);
    const refTokens = micro.filter((mb) => mb.kind === 'flashback').reduce((s, mb) => s + mb.ids.shape[0] * mb.ids.shape[1], 0);
    const { N, flops } = stepFlops(config, trainTokens, refTokens);
    const oursMs = median(ours.ms);
    const theirsMs = median(theirs.ms);
    const phases = Object.keys(ours.timings[0]).filter((k) => k !== 'total');
    const split = Object.fromEntries(phases.map((k) => [k, median(ours.timings.map((x) => x[k]))]));
    // The phases cover trainStep end to end; what is left is the call itself.
    split.untimed = median(ours.ms.map((ms, i) => ms - phases.reduce((s, k) => s + ours.timings[i][k], 0)));
    const refSplit = Object.fromEntries(Object.keys(theirs.split[0]).map((k) => [k, median(theirs.split.map((x) => x[k]))]));
    for (const mb of micro) for (const t of [mb.ids, mb.attentionMask, mb.targets, mb.referenceHidden, mb.referenceLogits, mb.latent.indices, mb.latent.weights]) t?.dispose();
    return {
      model: label,
      referenceKept: keep ?? 'none',
      parameters: model.parameterCount,
      matmulParameters: N,
      trainableParameters: params.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0),
      vocab: cfg.vocabSize,
      trainTokensPerStep: trainTokens,
      refTokensPerStep: refTokens,
      oursStepMs: oursMs,
      torchStepMs: theirsMs,
      oursTokensPerS: trainTokens / (oursMs / 1000),
      torchTokensPerS: trainTokens / (theirsMs / 1000),
      ratio: theirsMs / oursMs,
      gflopPerStep: flops / 1e9,
      oursGflops: flops / 1e6 / oursMs,
      torchGflops: flops / 1e6 / theirsMs,
      oursPeakMiB: Math.max(...ours.hwm),
      oursBaseMiB: oursBase,
      torchPeakMiB: Math.max(...theirs.hwm),
      torchBaseMiB: theirsSetup.rssMiB,
      oursSplitMs: split,
      torchSplitMs: refSplit,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
    optimizer.dispose();
    latent.dispose();
    params.slice(0, -2).forEach((p) => p.dispose()); // the LoRA handles; the last two are the pool's
    model.dispose();
    jfa.emptyCpuCache();
  }
}

const dir = mkdtempSync(join(tmpdir(), 'jfa-bench-step-'));
try {
  await ask({ cmd: 'threads', n: threads });
  const results = [];
  const only = values.only ?? 'all';
  if (only === 'all' || only === 'small') {
    let small = values.model;
    if (!small) {
      progress('creating the demo-size model (600 BPE merges)');
      small = join(dir, 'small');
      const records = Object.values(jfa.generateSuite({ seed: 0 }).old).flatMap((s) => s.train);
      const merges = jfa.learnMerges(records.flatMap((r) => [r.instruction, r.input, r.output]), 600);
      jfa.createModel(small, { hiddenSize: 192, intermediateSize: 512, numLayers: 4, numHeads: 4, merges, seed: 0 });
    }
    results.push(await benchModel(values.model ? 'given' : 'demo-size', small));
  }
  if (only === 'all' || only === '100m') {
    progress('creating a ~100M model');
    const big = join(dir, 'big');
    const m = jfa.LlamaModel.random(BIG, { seed: 0 });
    m.save(big, { 'config.json': `${JSON.stringify(BIG, null, 2)}\n` });
    m.dispose();
    results.push(await benchModel('100M', big));
  }
  progress('matmul');
  const oursMatmul = matmulMs();
  const torchMatmul = (await ask({ cmd: 'matmul', n: MATMUL, repeats: 10 })).ms;
  const matmulFlops = 2 * MATMUL ** 3;
  const result = {
    threads,
    repeats,
    shape: SHAPE,
    tokens: 'tokens/s counts every token of every forward of the trained model (b x t of each micro-batch, no padding); the reference forwards (refTokensPerStep) are extra work not counted',
    flops: 'per step: trainTokens x (4N + 3A) + refTokens x (2N + A), N = linear-layer + LM-head weights, A = 2 x seq x heads x head_dim x layers (causal attention); the nominal work of a step, the same for both sides: work skipped (LM head on untargeted rows, a kept reference) shows as a higher effective rate',
    matmul: { n: MATMUL, oursGflops: matmulFlops / 1e6 / oursMatmul, torchGflops: matmulFlops / 1e6 / torchMatmul },
    models: results,
  };
  progress.done();
  if (values.json) console.log(JSON.stringify(result, null, 2));
  else {
    const f = (x, d = 0) => x.toFixed(d);
    console.log(`bench:step: one JFA step (${SHAPE.newMicroBatches} new x ${SHAPE.microBatch} + ${SHAPE.flashbackMicroBatches} flashback x ${SHAPE.microBatch}, seq ${SHAPE.seq}, LoRA r 8 all linear, latent pool on one o_proj, PCGrad, clip, AdamW), fp32, ${threads} threads, medians of ${repeats} interleaved repeats; torch+peft recomputes the reference every step`);
    console.log(`fp32 matmul ${MATMUL}^2: ours ${f(result.matmul.oursGflops, 1)} GFLOP/s, torch ${f(result.matmul.torchGflops, 1)} GFLOP/s`);
    for (const r of results) {
      console.log(`\n${r.model}: ${f(r.parameters / 1e6, 1)}M parameters (vocab ${r.vocab}), ${f(r.trainableParameters / 1e6, 2)}M trainable, ${r.trainTokensPerStep} trained + ${r.refTokensPerStep} reference tokens per step, ${f(r.gflopPerStep, 0)} GFLOP per step; ours ${r.referenceKept === 'none' ? 'recomputes the reference every step too' : `keeps the reference's ${r.referenceKept}`}`);
      console.log(`  step        ours ${f(r.oursStepMs)} ms   torch+peft ${f(r.torchStepMs)} ms`);
      console.log(`  tokens/s    ours ${f(r.oursTokensPerS)}   torch+peft ${f(r.torchTokensPerS)}   ratio ours/ref ${f(r.ratio, 2)}x`);
      console.log(`  GFLOP/s     ours ${f(r.oursGflops, 1)} (${f((100 * r.oursGflops) / result.matmul.oursGflops)}% of matmul)   torch+peft ${f(r.torchGflops, 1)} (${f((100 * r.torchGflops) / result.matmul.torchGflops)}%)`);
      console.log(`  peak RSS    ours ${f(r.oursPeakMiB)} MiB (+${f(r.oursPeakMiB - r.oursBaseMiB)} over loaded)   torch+peft ${f(r.torchPeakMiB)} MiB (+${f(r.torchPeakMiB - r.torchBaseMiB)})`);
      console.log(`  split ms    ours   ${Object.entries(r.oursSplitMs).map(([k, v]) => `${k} ${f(v)}`).join(', ')}`);
      console.log(`              torch  ${Object.entries(r.torchSplitMs).map(([k, v]) => `${k} ${f(v)}`).join(', ')}`);
    }
  }
} finally {
  close();
  rmSync(dir, { recursive: true, force: true });
}
