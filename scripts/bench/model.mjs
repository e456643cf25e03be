#!/usr/bin/env node
// `npm run bench:model`: a ~100M-parameter Llama (random weights) loaded, run forward and used for
// greedy generation by us and by transformers (scripts/reference/bench_model.py) in the same run,
// interleaved, same thread count, medians. Load time and its peak RSS growth come from one load each.
// --family llama|qwen2|qwen3|mistral|phi3 builds that family's model at the same size on both sides
// (scripts/bench/families.mjs: Qwen2.5's biases and tied embeddings, Qwen3's q/k norm, Mistral's
// window, Phi-3's fused projections); default llama.
// Usage: npm run bench:model [-- --json] [-- --repeats N] [-- --family NAME]
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import * as jfa from '../../dist/index.js';
import { benchFamily, familyConfig } from './families.mjs';
import { BenchUsageError, positiveInt } from './gpu.mjs';
import { median, progressLine, resetPeak, rss, startReference } from './harness.mjs';

const { values } = parseArgs({ options: { json: { type: 'boolean' }, repeats: { type: 'string', default: '5' }, family: { type: 'string' } } });
let repeats, family;
try {
  repeats = positiveInt('bench:model', 'repeats', values.repeats);
  family = benchFamily('bench:model', values.family);
} catch (e) {
  if (!(e instanceof BenchUsageError)) throw e;
  console.error(e.message); // one line and exit 2, as the other benches
  process.exit(2);
}
const threads = jfa.runtimeInfo().numThreads;
const CONFIG = familyConfig(family, {
  model_type: 'llama', vocab_size: 32000, hidden_size: 768, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 12,
  num_key_value_heads: 12, max_position_embeddings: 1024, tie_word_embeddings: true,
});
const FORWARD = { batch: 4, seq: 256 };
// Greedy generation at batch 1 and 8: 32-token prompts, 128 new tokens (no stop token: all of them).
const GENERATE = [{ batch: 1, prompt: 32, new: 128 }, { batch: 8, prompt: 32, new: 128 }];

const progress = progressLine('bench:model');
const dir = mkdtempSync(join(tmpdir(), 'jfa-bench-model-'));
// The model is made by a reference process of its own: the measuring one starts fresh, with no
// freed memory of the creation for its load to reuse (a peak measured that way would be too low).
progress(`creating a ~100M ${family} model with transformers`);
const maker = startReference('bench_model.py');
await maker.ask({ cmd: 'create', dir, config: CONFIG });
maker.close();
const { ask, close } = startReference('bench_model.py');

try {
  await ask({ cmd: 'threads', n: threads });

  resetPeak();
  const base = rss('VmRSS');
  let t = performance.now();
  const model = jfa.LlamaModel.load(dir);
  const ours = { loadMs: performance.now() - t, loadPeakMiB: rss('VmHWM') - base };
  // A load maps the file; the first forward touches every weight page.
  const theirs = await ask({ cmd: 'load', dir });

  const ids = (b, n, seed) => jfa.tensor(BigInt64Array.from({ length: b * n }, (_, i) => BigInt(3 + ((i * 7919 + seed) % (CONFIG.vocab_size - 3)))), [b, n]);
  const fwdIds = ids(FORWARD.batch, FORWARD.seq, 1);
  // Loading maps the files; the first forward touches every weight: the peak that matters.
  model.logits(fwdIds).dispose();
  ours.firstForwardPeakMiB = rss('VmHWM') - base;
  const first = await ask({ cmd: 'forward', ...FORWARD });
  theirs.firstForwardPeakMiB = first.hwmMiB - theirs.baseMiB;
  const f = { ours: [], theirs: [] };
  for (let i = 0; i < repeats; i++) {
    progress(`forward ${i + 1}/${repeats}`);
    t = performance.now();
    model.logits(fwdIds).dispose();
    f.ours.push(performance.now() - t);
    f.theirs.push((await ask({ cmd: 'forward', ...FORWARD })).ms);
  }
  // transformers' generate with its dynamic cache and with its static cache: the faster is the anchor.
  const gen = [];
  for (const G of GENERATE) {
    const genIds = ids(G.batch, G.prompt, 2);
    const g = { ours: [], dynamic: [], static: [] };
    for (let i = 0; i < repeats; i++) {
      progress(`generate ${G.batch}x${G.new} ${i + 1}/${repeats}`);
      t = performance.now();
      const out = await model.generate(genIds, { maxNewTokens: G.new });
      g.ours.push((performance.now() - t) / out.shape[1]);
      out.dispose();
      for (const cache of ['dynamic', 'static']) {
        const r = await ask({ cmd: 'generate', ...G, cache });
        g[cache].push(r.ms / (r.tokens / G.batch));
      }
    }
    genIds.dispose();
    const perS = (xs) => G.batch / (median(xs) / 1000);
    const dynamic = perS(g.dynamic), stat = perS(g.static);
    gen.push({ ...G, oursTokensPerS: perS(g.ours), torchTokensPerS: Math.max(dynamic, stat), torchCache: stat > dynamic ? 'static' : 'dynamic', torchDynamicTokensPerS: dynamic, torchStaticTokensPerS: stat });
  }
  const fwdTokens = FORWARD.batch * FORWARD.seq;
  const result = {
    family,
    config: CONFIG,
    threads,
    parameters: model.parameterCount,
    load: {
      oursMs: ours.loadMs,
      torchMs: theirs.ms,
      oursPeakMiB: ours.loadPeakMiB,
      torchPeakMiB: theirs.peakMiB,
      oursPeakAfterFirstForwardMiB: ours.firstForwardPeakMiB,
      torchPeakAfterFirstForwardMiB: theirs.firstForwardPeakMiB,
    },
    forward: { ...FORWARD, oursTokensPerS: fwdTokens / (median(f.ours) / 1000), torchTokensPerS: fwdTokens / (median(f.theirs) / 1000) },
    generate: gen,
  };
  progress.done();
  if (values.json) console.log(JSON.stringify(result, null, 2));
  else {
    console.log(`bench:model: ${(result.parameters / 1e6).toFixed(0)}M-parameter ${family} model, fp32, ${threads} threads, medians of ${repeats} interleaved repeats`);
    console.log(`load           ours ${result.load.oursMs.toFixed(0)} ms (peak +${result.load.oursPeakMiB.toFixed(0)} MiB)   transformers ${result.load.torchMs.toFixed(0)} ms (peak +${result.load.torchPeakMiB.toFixed(0)} MiB)`);
    console.log(`peak RSS growth through the first forward: ours +${result.load.oursPeakAfterFirstForwardMiB.toFixed(0)} MiB   transformers +${result.load.torchPeakAfterFirstForwardMiB.toFixed(0)} MiB`);
    console.log(`forward ${FORWARD.batch}x${FORWARD.seq}  ours ${result.forward.oursTokensPerS.toFixed(0)} tok/s   transformers ${result.forward.torchTokensPerS.toFixed(0)} tok/s   ratio ${(result.forward.oursTokensPerS / result.forward.torchTokensPerS).toFixed(2)}x`);
    for (const g of result.generate)
      console.log(`generate batch ${g.batch}, ${g.new} new tokens: ours ${g.oursTokensPerS.toFixed(1)} tok/s   transformers ${g.torchTokensPerS.toFixed(1)} tok/s (${g.torchCache} cache; dynamic ${g.torchDynamicTokensPerS.toFixed(1)}, static ${g.torchStaticTokensPerS.toFixed(1)})   ratio ${(g.oursTokensPerS / g.torchTokensPerS).toFixed(2)}x`);
  }
  model.dispose();
} finally {
  close();
  if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
}
