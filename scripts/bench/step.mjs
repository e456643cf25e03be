#!/usr/bin/env node
// `npm run bench:step`: one JFA optimizer step (new-task SFT micro-batches + a flashback micro-batch
// with its reference forward, latent tasks on one layer's o_proj, per-micro-batch gradients, PCGrad,
// clipping, AdamW) by our trainStep and by the PyTorch reference (scripts/reference/jfa_step.py:
// transformers + PEFT) in the same run, interleaved, same thread count, same device and dtype, same
// start state and batches, same PCGrad orders; medians over repeats.
// Presets (--preset, or JFA_BENCH_PRESET):
//   default    fp32: the demo's size (or --model DIR) and a ~100M-parameter Llama (random weights,
//              bench:model's config); 4 new + 1 flashback micro-batches of 4 x 256, LoRA r 8.
//   1b-bf16    bf16: a ~1.1B Llama of TinyLlama-1.1B's shape (random weights, written by the Python
//              reference on the device); 4 new + 1 flashback micro-batches of 8 x 512, LoRA r 16.
//   tiny-bf16  bf16: a ~4M Llama, the 1b-bf16 path at a size a CPU runs in seconds.
// --family llama|qwen2|qwen3|mistral|phi3 builds the preset's generated models (100M, 1.1B, tiny) as
// that family at the same size, on both sides (scripts/bench/families.mjs: Qwen2.5's biases and tied
// embeddings, Qwen3's q/k norm and head_dim, Mistral's window, Phi-3's fused projections, adapted
// through its fused modules as PEFT does); the default preset's demo-size model is the demo's Llama
// and runs for llama only. Default llama.
// The device (--device, or JFA_BENCH_DEVICE): cpu (default), cuda or cuda:N. On CUDA both sides time
// the step between synchronisations (ours: trainStep resolves after its stream is synchronised), peak
// memory is each side's CUDA caching allocator (peak allocated during the step), and MFU is the counted
// FLOPs per second over the GPU's dense bf16 peak (gpu.mjs's table, or JFA_PEAK_TFLOPS).
// Flashback micro-batches carry what the trainer keeps of the reference (the base is frozen): its
// logits when they fit in 1 GiB, else its final hidden states; --recompute-reference runs the
// reference forward in every step instead, as the PyTorch reference does.
// Usage: npm run bench:step [-- --json] [-- --json-out FILE] [-- --repeats N] [-- --threads N] [-- --model DIR]
//        [-- --only LABEL] [-- --recompute-reference] [-- --device cpu|cuda|cuda:N] [-- --preset NAME] [-- --family NAME]
// With OUT set (scripts/device/check.sh), the JSON goes to $OUT/bench-step.json as well.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import * as jfa from '../../dist/index.js';
import { benchFamily, familyConfig, loraTargetsText } from './families.mjs';
import { BenchUsageError, benchTarget, canonicalDevice, gpuMemory, jsonTarget, peakTflops, positiveInt, runBench, writeJson } from './gpu.mjs';
import { median, progressLine, rss as status, startReference } from './harness.mjs';

const { values } = parseArgs({
  options: {
    json: { type: 'boolean' }, 'json-out': { type: 'string' }, repeats: { type: 'string' }, model: { type: 'string' }, only: { type: 'string' },
    threads: { type: 'string' }, 'recompute-reference': { type: 'boolean' }, device: { type: 'string' }, preset: { type: 'string' },
    family: { type: 'string' },
  },
});
const llama = (shape) => ({
  architectures: ['LlamaForCausalLM'], model_type: 'llama', rms_norm_eps: 1e-5, rope_theta: 10000.0, hidden_act: 'silu', ...shape,
});
const BIG = llama({
  vocab_size: 32000, hidden_size: 768, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 12, num_key_value_heads: 12,
  max_position_embeddings: 1024, tie_word_embeddings: true, torch_dtype: 'float32',
});
// TinyLlama-1.1B's shape (grouped-query attention, untied head): 1.10B parameters.
const ONE_B = llama({
  vocab_size: 32000, hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: 22, num_attention_heads: 32, num_key_value_heads: 4,
  max_position_embeddings: 2048, tie_word_embeddings: false, torch_dtype: 'bfloat16',
});
const TINY = llama({
  vocab_size: 4000, hidden_size: 256, intermediate_size: 704, num_hidden_layers: 4, num_attention_heads: 8, num_key_value_heads: 2,
  max_position_embeddings: 256, tie_word_embeddings: false, torch_dtype: 'bfloat16',
});
/**
 * Each preset: the models (`demo`: the demo's size or --model; `js`: LlamaModel.random in fp32; `py`:
 * random weights written by the Python reference on the bench's device, in the preset's dtype), the
 * step's shape, the LoRA, the matmul that measures the device's rate, and the default repeats.
 */
const PRESETS = {
  default: {
    dtype: 'float32', repeats: 3,
    models: [{ label: 'demo-size', from: 'demo' }, { label: '100M', from: 'js', config: BIG }],
    // The trainer's shape of a step: 4 new-task micro-batches of 4 and 1 flashback micro-batch of 4.
    shape: { newMicroBatches: 4, flashbackMicroBatches: 1, microBatch: 4, seq: 256, promptTokens: 128 },
    lora: { r: 8, loraAlpha: 16 }, matmul: 2048,
  },
  '1b-bf16': {
    dtype: 'bfloat16', repeats: 5,
    models: [{ label: '1.1B', from: 'py', config: ONE_B }],
    shape: { newMicroBatches: 4, flashbackMicroBatches: 1, microBatch: 8, seq: 512, promptTokens: 256 },
    lora: { r: 16, loraAlpha: 32 }, matmul: 8192,
  },
  'tiny-bf16': {
    dtype: 'bfloat16', repeats: 2,
    models: [{ label: 'tiny', from: 'py', config: TINY }],
    shape: { newMicroBatches: 2, flashbackMicroBatches: 1, microBatch: 2, seq: 64, promptTokens: 32 },
    lora: { r: 16, loraAlpha: 32 }, matmul: 512,
  },
};
const OPTIM = { lr: 1e-4, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.0 };

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

/** Full-length sequences (no padding); new-task targets are the next token over the second half. CPU tensors. */
function makeBatches(shape, vocab, latent, seed) {
  const next = rng(seed);
  const { microBatch: b, seq: t } = shape;
  const micro = [];
  const kinds = [...Array(shape.newMicroBatches).fill('new'), ...Array(shape.flashbackMicroBatches).fill('flashback')];
  for (const kind of kinds) {
    const ids = BigInt64Array.from({ length: b * t }, () => BigInt(3 + Math.floor(next() * (vocab - 3))));
    const mb = { kind, ids: jfa.tensor(ids, [b, t]), attentionMask: jfa.tensor(new Uint8Array(b * t).fill(1), [b, t]) };
    if (kind === 'new') {
      const targets = new BigInt64Array(b * t).fill(-100n);
      for (let r = 0; r < b; r++) for (let i = shape.promptTokens - 1; i < t - 1; i++) targets[r * t + i] = ids[r * t + i + 1];
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

const batchTensors = (mb) => [mb.ids, mb.attentionMask, mb.targets, mb.referenceHidden, mb.referenceLogits, mb.latent.indices, mb.latent.weights];

/** The micro-batches' tensors moved to `device` (the CPU ones disposed); the latent weights in `weightDtype`. */
function toDevice(micro, device, weightDtype) {
  const move = (t) => {
    if (!t) return t;
    const moved = device === 'cpu' ? t : t.to(device);
    if (moved !== t) t.dispose();
    return moved;
  };
  for (const mb of micro) {
    for (const key of ['ids', 'attentionMask', 'targets']) mb[key] = move(mb[key]);
    let w = move(mb.latent.weights);
    if (w.dtype !== weightDtype) {
      const converted = w.to(weightDtype);
      w.dispose();
      w = converted;
    }
    mb.latent = { indices: move(mb.latent.indices), weights: w };
  }
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
function stepFlops(config, seq, trainTokens, refTokens) {
  const H = config.hidden_size, I = config.intermediate_size, L = config.num_hidden_layers;
  const hd = config.head_dim ?? H / config.num_attention_heads;
  const q = config.num_attention_heads * hd, kv = (config.num_key_value_heads ?? config.num_attention_heads) * hd;
  const N = L * (H * q + 2 * H * kv + q * H + 3 * H * I) + config.vocab_size * H;
  const attn = 2 * seq * q * L;
  return { N, flops: trainTokens * (4 * N + 3 * attn) + refTokens * (2 * N + attn) };
}

/** Our median ms of an (n x n) @ (n x n) in `dtype` on `device`, synchronised on CUDA. */
function matmulMs(n, dtype, device) {
  const on = device === 'cpu' ? {} : { device };
  const a = jfa.randn([n, n], { seed: 1, dtype, ...on });
  const b = jfa.randn([n, n], { seed: 2, dtype, ...on });
  jfa.matmul(a, b).dispose();
  const times = [];
  for (let i = 0; i < 10; i++) {
    jfa.cudaSynchronize();
    const t = performance.now();
    const c = jfa.matmul(a, b);
    jfa.cudaSynchronize();
    times.push(performance.now() - t);
    c.dispose();
  }
  a.dispose();
  b.dispose();
  return median(times);
}

/** Throws unless every tensor is on `device`: a bench that silently ran half on the CPU would mislead. */
function expectOn(device, tensors, what) {
  const want = canonicalDevice(device);
  for (const [name, t] of Object.entries(tensors))
    if (t.device !== want) throw new Error(`bench:step: ${what} ${name} is on ${t.device}, not ${want}`);
}

/**
 * The latent pool on the model's device: float32 masters beside a bf16 model (as the trainer makes
 * them), attached to `layer`.
 */
function attachPool(model, layer, cfg, device) {
  const latent = new jfa.LatentTasks(cfg.hiddenSize, cfg.numHeads * cfg.headDim, cfg.hiddenSize, { seed: 1, device });
  if (latent.A.device !== canonicalDevice(device)) throw new Error(`bench:step: the latent pool was made on ${latent.A.device}, not ${device}`);
  model.setLatentPool(layer, latent.A, latent.B);
  return { latent, A: latent.A, B: latent.B, dtype: latent.A.dtype, note: latent.A.dtype, dispose: () => latent.dispose() };
}

async function benchModel(run, label, dir) {
  const { preset, device, ask, progress } = run;
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const shape = preset.shape;
  progress(`${label}: loading on ${device}`);
  const model = jfa.LlamaModel.load(dir, { dtype: preset.dtype, device });
  model.addLora({ ...preset.lora, seed: 1 });
  const cfg = model.config;
  const layer = Math.floor(cfg.numLayers / 2);
  const pool = attachPool(model, layer, cfg, device);
  const params = [...Object.values(model.loraParameters()), pool.A, pool.B];
  const loraDtype = params[0].dtype;
  expectOn(device, { ...model.loraParameters(), 'pool.A': pool.A, 'pool.B': pool.B }, 'trainable');
  const optimizer = new jfa.AdamW(params, { lr: OPTIM.lr, betas: OPTIM.betas, eps: OPTIM.eps, weightDecay: OPTIM.weight_decay });
  const work = mkdtempSync(join(tmpdir(), 'jfa-bench-step-state-'));
  const gpu = run.gpu;
  let micro = [];
  try {
    model.saveAdapter(join(work, 'adapter'));
    const [hostA, hostB] = [pool.A.to('cpu'), pool.B.to('cpu')];
    jfa.saveSafetensors(join(work, 'pool.safetensors'), { A: hostA, B: hostB });
    hostA.dispose();
    hostB.dispose();
    const made = makeBatches(shape, cfg.vocabSize, pool.latent, 7);
    micro = made.micro;
    const { kinds } = made;
    saveBatches(join(work, 'batches.safetensors'), micro);
    toDevice(micro, device, pool.dtype); // the mixture's weights in the pool's dtype, as latentMixture asks
    expectOn(device, { ids: micro[0].ids, 'latent.weights': micro[0].latent.weights }, 'batch');
    // What the trainer keeps of the reference for these flashbacks (logits within 1 GiB).
    const flashbackTokens = micro.filter((mb) => mb.kind === 'flashback').reduce((s, mb) => s + mb.ids.shape[0] * mb.ids.shape[1], 0);
    const keep = values['recompute-reference'] ? undefined : jfa.referenceKeeping(model, flashbackTokens);
    if (keep)
      for (const mb of micro)
        if (mb.kind === 'flashback') mb[keep === 'logits' ? 'referenceLogits' : 'referenceHidden'] = jfa.keepReference(model, keep, mb.ids, mb.attentionMask);
    progress(`${label}: setting up the reference on ${device}`);
    const theirsSetup = await ask({ cmd: 'setup', model: dir, adapter: join(work, 'adapter'), pool: join(work, 'pool.safetensors'), layer, alpha: 1,
      max_grad_norm: 1.0, kl: 'symmetric', reduction: 'mean', pcgrad: true, device, dtype: preset.dtype, ...OPTIM });
    await ask({ cmd: 'batches', name: label, file: join(work, 'batches.safetensors'), kinds });
    const oursBase = status('VmRSS');
    const stepOptions = (seed, timings) => ({ method: 'jfa', alpha: 1, pcgrad: true, maxGradNorm: 1.0, seed, timings });
    const orders = (seed) => jfa.pcgradOrders(micro.length, seed);

    progress(`${label}: warm-up step`);
    await jfa.trainStep(model, optimizer, micro, stepOptions(0));
    await ask({ cmd: 'step', batches: label, orders: orders(0) });

    const ours = { ms: [], hwm: [], gpuPeak: [], gpuBase: [], timings: [], losses: [] };
    const theirs = { ms: [], hwm: [], gpuPeak: [], gpuBase: [], split: [], losses: [] };
    for (let i = 1; i <= run.repeats; i++) {
      progress(`${label}: step ${i}/${run.repeats} (ours)`);
      const timings = jfa.stepTimings();
      if (gpu) {
        gpu.reset();
        ours.gpuBase.push(gpu.allocatedMiB());
      }
      writeFileSync('/proc/self/clear_refs', '5');
      const t = performance.now();
      const result = await jfa.trainStep(model, optimizer, micro, stepOptions(i, timings));
      ours.ms.push(performance.now() - t);
      ours.hwm.push(status('VmHWM'));
      if (gpu) ours.gpuPeak.push(gpu.peakMiB());
      ours.timings.push(timings);
      ours.losses.push({ sft: result.sft, divergence: result.divergence });
      progress(`${label}: step ${i}/${run.repeats} (reference)`);
      const r = await ask({ cmd: 'step', batches: label, orders: orders(i) });
      theirs.ms.push(r.ms);
      theirs.hwm.push(r.hwmMiB);
      theirs.split.push(r.split);
      theirs.losses.push({ sft: r.sft, divergence: r.divergence });
      if (r.gpuPeakMiB !== null) {
        theirs.gpuPeak.push(r.gpuPeakMiB);
        theirs.gpuBase.push(r.gpuBaseMiB);
      }
    }
    const trainTokens = micro.reduce((s, mb) => s + mb.ids.shape[0] * mb.ids.shape[1], 0);
    const refTokens = micro.filter((mb) => mb.kind === 'flashback').reduce((s, mb) => s + mb.ids.shape[0] * mb.ids.shape[1], 0);
    const { N, flops } = stepFlops(config, shape.seq, trainTokens, refTokens);
    const oursMs = median(ours.ms);
    const theirsMs = median(theirs.ms);
    const phases = Object.keys(ours.timings[0]).filter((k) => k !== 'total');
    const split = Object.fromEntries(phases.map((k) => [k, median(ours.timings.map((x) => x[k]))]));
    // The phases cover trainStep end to end; what is left is the call itself.
    split.untimed = median(ours.ms.map((ms, i) => ms - phases.reduce((s, k) => s + ours.timings[i][k], 0)));
    const refSplit = Object.fromEntries(Object.keys(theirs.split[0]).map((k) => [k, median(theirs.split.map((x) => x[k]))]));
    const mfu = (ms) => (run.peak.tflops ? flops / (ms / 1000) / (run.peak.tflops * 1e12) : null);
    return {
      model: label,
      dtype: model.dtype,
      device: model.device,
      loraDtype,
      poolDtype: pool.note,
      torchTrainableDtypes: theirsSetup.trainableDtypes,
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
      oursMfu: mfu(oursMs),
      torchMfu: mfu(theirsMs),
      oursPeakMiB: Math.max(...ours.hwm),
      oursBaseMiB: oursBase,
      torchPeakMiB: Math.max(...theirs.hwm),
      torchBaseMiB: theirsSetup.rssMiB,
      oursGpuPeakMiB: gpu ? Math.max(...ours.gpuPeak) : null,
      oursGpuBaseMiB: gpu ? median(ours.gpuBase) : null,
      torchGpuPeakMiB: theirs.gpuPeak.length ? Math.max(...theirs.gpuPeak) : null,
      torchGpuBaseMiB: theirs.gpuBase.length ? median(theirs.gpuBase) : null,
      oursLosses: ours.losses,
      torchLosses: theirs.losses,
      oursSplitMs: split,
      torchSplitMs: refSplit,
    };
  } finally {
    for (const mb of micro) for (const t of batchTensors(mb)) t?.dispose();
    rmSync(work, { recursive: true, force: true });
    optimizer.dispose();
    pool.dispose();
    params.slice(0, -2).forEach((p) => p.dispose()); // the LoRA handles; the last two are the pool's
    model.dispose();
    jfa.emptyCpuCache();
    jfa.emptyCudaCache();
  }
}

async function main() {
  const { device, presets: [presetName] } = benchTarget('bench:step', values, PRESETS, { defaultPreset: 'default' });
  const preset = PRESETS[presetName];
  const family = benchFamily('bench:step', values.family);
  if (values.model && values.family) throw new BenchUsageError('bench:step: --family builds the generated models; a --model brings its own config.json');
  const repeats = values.repeats ? positiveInt('bench:step', 'repeats', values.repeats) : preset.repeats;
  const labels = preset.models.map((m) => m.label);
  if (values.only && !labels.includes(values.only) && !(presetName === 'default' && ['small', '100m'].includes(values.only)))
    throw new BenchUsageError(`bench:step: --only '${values.only}' is not a model of preset '${presetName}' (${labels.join(', ')})`);
  if (values.model && !preset.models.some((m) => m.from === 'demo')) throw new BenchUsageError(`bench:step: --model is for the default preset, not '${presetName}'`);
  // --threads 1 on a machine shared with other work: a thread that waits for a descheduled peer at
  // each of a step's thousands of parallel regions costs more than the second core gives.
  if (values.threads) jfa.setNumThreads(positiveInt('bench:step', 'threads', values.threads));
  const jsonFile = jsonTarget(values['json-out'], 'bench-step');
  if (device !== 'cpu') jfa.checkDevice(device, 'bench:step --device');
  const threads = jfa.runtimeInfo().numThreads;
  const { ask, close } = startReference('jfa_step.py');
  const progress = progressLine('bench:step');
  const dir = mkdtempSync(join(tmpdir(), 'jfa-bench-step-'));
  try {
    await ask({ cmd: 'threads', n: threads });
    // Touch the device first, so that the allocator's counters exist (memoryStats() reads them once CUDA is used).
    if (device !== 'cpu') jfa.zeros([1], 'float32', { device }).dispose();
    const gpu = device === 'cpu' ? undefined : gpuMemory(jfa, device);
    const peak = peakTflops(gpu?.name);
    const run = { preset, device, ask, progress, gpu, peak, repeats };
    const results = [];
    const wanted = (m) => !values.only || values.only === m.label || (values.only === 'small' && m.from === 'demo') || (values.only === '100m' && m.label === '100M');
    let created = null;
    const models = preset.models.filter(wanted).filter((m) => family === 'llama' || m.from !== 'demo');
    if (!models.length) throw new BenchUsageError(`bench:step: --only '${values.only}' is the demo's Llama; with --family ${family} the preset runs ${preset.models.filter((m) => m.from !== 'demo').map((m) => m.label).join(', ')}`);
    for (const m of models) {
      let modelDir = join(dir, m.label);
      let label = family === 'llama' ? m.label : `${m.label}-${family}`;
      const config = m.config && familyConfig(family, m.config);
      if (m.from === 'demo') {
        if (values.model) {
          modelDir = values.model;
          label = 'given';
        } else {
          progress('creating the demo-size model (600 BPE merges)');
          const records = Object.values(jfa.generateSuite({ seed: 0 }).old).flatMap((s) => s.train);
          const merges = jfa.learnMerges(records.flatMap((r) => [r.instruction, r.input, r.output]), 600);
          jfa.createModel(modelDir, { hiddenSize: 192, intermediateSize: 512, numLayers: 4, numHeads: 4, merges, seed: 0 });
        }
      } else if (m.from === 'js') {
        progress(`creating the ${m.label} model`);
        const r = jfa.LlamaModel.random(config, { seed: 0 });
        r.save(modelDir, { 'config.json': `${JSON.stringify(config, null, 2)}\n` });
        r.dispose();
      } else {
        progress(`creating the ${m.label} model (random ${preset.dtype} weights, drawn on ${device} by the reference)`);
        created = await ask({ cmd: 'create', dir: modelDir, config, seed: 0, device, dtype: preset.dtype });
      }
      results.push(await benchModel(run, label, modelDir));
      if (m.from !== 'demo' || !values.model) rmSync(modelDir, { recursive: true, force: true });
    }
    progress('matmul');
    const oursMatmul = matmulMs(preset.matmul, preset.dtype, device);
    const torchMatmul = (await ask({ cmd: 'matmul', n: preset.matmul, repeats: 10, dtype: preset.dtype, device })).ms;
    const matmulFlops = 2 * preset.matmul ** 3;
    const result = {
      preset: presetName,
      family,
      device,
      gpu: gpu?.name ?? null,
      dtype: preset.dtype,
      threads,
      repeats,
      shape: preset.shape,
      lora: { ...preset.lora, targets: loraTargetsText(family) },
      peakTflops: peak.tflops,
      peakSource: peak.source,
      createMs: created?.ms ?? null,
      tokens: 'tokens/s counts every token of every forward of the trained model (b x t of each micro-batch, no padding); the reference forwards (refTokensPerStep) are extra work not counted',
      flops: 'per step: trainTokens x (4N + 3A) + refTokens x (2N + A), N = linear-layer + LM-head weights, A = 2 x seq x heads x head_dim x layers (causal attention); the nominal work of a step, the same for both sides: work skipped (LM head on untargeted rows, a kept reference) shows as a higher effective rate',
      mfu: 'counted FLOPs per second over peakTflops (dense bf16 peak of the GPU); null on the CPU or for an unknown GPU',
      memory: gpu
        ? "gpu*: the CUDA caching allocator's peak allocated bytes during a step (max over repeats) and what was allocated before it (weights, adapters, optimizer state, batches); *PeakMiB/*BaseMiB: host RSS"
        : 'peak RSS during a step (max over repeats) and RSS once loaded',
      matmul: { n: preset.matmul, dtype: preset.dtype, oursGflops: matmulFlops / 1e6 / oursMatmul, torchGflops: matmulFlops / 1e6 / torchMatmul },
      models: results,
    };
    progress.done();
    writeJson(jsonFile, result);
    if (values.json) console.log(JSON.stringify(result, null, 2));
    else printResult(result, jsonFile);
  } finally {
    close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function printResult(result, jsonFile) {
  const f = (x, d = 0) => (x === null || x === undefined ? 'n/a' : x.toFixed(d));
  const { shape } = result;
  const where = result.gpu ? `${result.device} (${result.gpu})` : `cpu, ${result.threads} threads`;
  console.log(`bench:step [${result.preset}, ${result.family}]: one JFA step (${shape.newMicroBatches} new x ${shape.microBatch} + ${shape.flashbackMicroBatches} flashback x ${shape.microBatch}, seq ${shape.seq}, LoRA r ${result.lora.r} ${result.lora.targets}, latent pool on one o_proj, PCGrad, clip, AdamW), ${result.dtype} on ${where}, medians of ${result.repeats} interleaved repeats; torch+peft recomputes the reference every step`);
  console.log(`${result.dtype} matmul ${result.matmul.n}^2: ours ${f(result.matmul.oursGflops, 1)} GFLOP/s, torch ${f(result.matmul.torchGflops, 1)} GFLOP/s; MFU peak: ${result.peakTflops === null ? result.peakSource : `${result.peakTflops} TFLOP/s (${result.peakSource})`}`);
  for (const r of result.models) {
    console.log(`\n${r.model}: ${f(r.parameters / 1e6, 1)}M parameters (vocab ${r.vocab}, ${r.dtype}), ${f(r.trainableParameters / 1e6, 2)}M trainable (LoRA ${r.loraDtype}, pool ${r.poolDtype}), ${r.trainTokensPerStep} trained + ${r.refTokensPerStep} reference tokens per step, ${f(r.gflopPerStep, 0)} GFLOP per step; ours ${r.referenceKept === 'none' ? 'recomputes the reference every step too' : `keeps the reference's ${r.referenceKept}`}`);
    console.log(`  trainable   ours LoRA ${r.loraDtype}, pool ${r.poolDtype.split(' ')[0]}   torch+peft ${r.torchTrainableDtypes.join(' + ')} (PEFT's default adapter dtype)`);
    console.log(`  step        ours ${f(r.oursStepMs)} ms   torch+peft ${f(r.torchStepMs)} ms`);
    console.log(`  tokens/s    ours ${f(r.oursTokensPerS)}   torch+peft ${f(r.torchTokensPerS)}   ratio ours/ref ${f(r.ratio, 2)}x`);
    console.log(`  GFLOP/s     ours ${f(r.oursGflops, 1)} (${f((100 * r.oursGflops) / result.matmul.oursGflops)}% of matmul)   torch+peft ${f(r.torchGflops, 1)} (${f((100 * r.torchGflops) / result.matmul.torchGflops)}%)`);
    if (result.gpu) {
      console.log(`  MFU         ours ${r.oursMfu === null ? 'unknown' : `${f(100 * r.oursMfu, 1)}%`}   torch+peft ${r.torchMfu === null ? 'unknown' : `${f(100 * r.torchMfu, 1)}%`}`);
      console.log(`  peak GPU    ours ${f(r.oursGpuPeakMiB)} MiB (${f(r.oursGpuBaseMiB)} before the step)   torch+peft ${f(r.torchGpuPeakMiB)} MiB (${f(r.torchGpuBaseMiB)})   ratio ${f(r.oursGpuPeakMiB / r.torchGpuPeakMiB, 2)}`);
    }
    console.log(`  peak RSS    ours ${f(r.oursPeakMiB)} MiB (+${f(r.oursPeakMiB - r.oursBaseMiB)} over loaded)   torch+peft ${f(r.torchPeakMiB)} MiB (+${f(r.torchPeakMiB - r.torchBaseMiB)})`);
    console.log(`  losses      ours sft ${f(r.oursLosses[0].sft, 4)} div ${f(r.oursLosses[0].divergence, 5)}   torch+peft sft ${f(r.torchLosses[0].sft, 4)} div ${f(r.torchLosses[0].divergence, 5)} (first timed step)`);
    console.log(`  split ms    ours   ${Object.entries(r.oursSplitMs).map(([k, v]) => `${k} ${f(v)}`).join(', ')}`);
    console.log(`              torch  ${Object.entries(r.torchSplitMs).map(([k, v]) => `${k} ${f(v)}`).join(', ')}`);
  }
  if (jsonFile) console.log(`\nJSON: ${jsonFile}`);
}

await runBench(main);
