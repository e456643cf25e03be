// `jfa generate`: a model directory (and optionally an adapter, with its latent pool) continues a prompt.
import { type Device } from '../device.js';
import { loadAdapterWithRounds } from '../jfa/continual.js';
import { LlamaModel } from '../model/llama.js';
import { generateText } from '../model/generate.js';
import { Tokenizer } from '../model/tokenizer.js';
import { type LatentChoice, servingPool } from './latent.js';

export interface GenerateCommandOptions {
  model: string;
  adapter?: string;
  prompt: string[];
  maxNewTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  repetitionPenalty: number;
  stop?: string[];
  seed?: number;
  chat?: boolean;
  latent: LatentChoice;
  dtype: 'float32' | 'bfloat16';
  /** cpu, cuda or cuda:N */
  device?: Device;
  json?: boolean;
}

export async function runGenerate(o: GenerateCommandOptions): Promise<void> {
  const tokenizer = Tokenizer.fromDir(o.model);
  const started = performance.now();
  using model = await LlamaModel.loadAsync(o.model, { dtype: o.dtype, device: o.device });
  tokenizer.checkFits(model.config.vocabSize, `${o.model}/config.json`);
  // A continued run's adapter serves on the earlier rounds beneath it.
  const earlier = o.adapter ? loadAdapterWithRounds(model, o.adapter) : 0;
  if (earlier > 0 && !o.json) process.stderr.write(`${o.adapter}: served on the ${earlier} earlier round${earlier > 1 ? 's' : ''} recorded in its run folder's continual.json\n`);
  using pool = servingPool(model, o.adapter, o.latent);
  const loadMs = performance.now() - started;
  const t = performance.now();
  // Retrieval embeds the prompt as given (before any chat template): training embedded the plain prompt text.
  const latent = pool?.retrieve(model, tokenizer, o.prompt.map((prompt) => ({ task: '', prompt })));
  let results;
  try {
    results = await generateText(model, tokenizer, o.prompt, {
      latent,
      maxNewTokens: o.maxNewTokens,
      temperature: o.temperature,
      topP: o.topP,
      topK: o.topK,
      repetitionPenalty: o.repetitionPenalty,
      stopStrings: o.stop,
      seed: o.seed,
      chat: o.chat,
    });
  } finally {
    latent?.indices.dispose();
    latent?.weights.dispose();
  }
  const genMs = performance.now() - t;
  const tokens = results.reduce((s, r) => s + r.tokens, 0);
  if (o.json) {
    console.log(JSON.stringify({ results, latentPool: Boolean(pool), loadMs, generateMs: genMs, tokensPerSecond: tokens / (genMs / 1000) }, null, 2));
    return;
  }
  for (const r of results) console.log(o.prompt.length > 1 ? `> ${r.prompt}\n${r.text}\n` : r.text);
  console.error(`(${tokens} tokens in ${(genMs / 1000).toFixed(2)} s, ${(tokens / (genMs / 1000)).toFixed(1)} tokens/s; load ${loadMs.toFixed(0)} ms)`);
}
