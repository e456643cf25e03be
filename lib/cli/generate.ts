// `jfa generate`: a model directory (and optionally an adapter) continues a prompt.
import { LlamaModel } from '../model/llama.js';
import { generateText } from '../model/generate.js';
import { Tokenizer } from '../model/tokenizer.js';

export interface GenerateCommandOptions {
  model: string;
  adapter?: string;
  prompt: string[];
  maxNewTokens: number;
  temperature: number;
  topP: number;
  seed?: number;
  chat?: boolean;
  dtype: 'float32' | 'bfloat16';
  json?: boolean;
}

export async function runGenerate(o: GenerateCommandOptions): Promise<void> {
  const tokenizer = Tokenizer.fromDir(o.model);
  const started = performance.now();
  using model = LlamaModel.load(o.model, { dtype: o.dtype });
  if (o.adapter) model.loadAdapter(o.adapter);
  const loadMs = performance.now() - started;
  const t = performance.now();
  const results = await generateText(model, tokenizer, o.prompt, {
    maxNewTokens: o.maxNewTokens,
    temperature: o.temperature,
    topP: o.topP,
    seed: o.seed,
    chat: o.chat,
  });
  const genMs = performance.now() - t;
  const tokens = results.reduce((s, r) => s + r.tokens, 0);
  if (o.json) {
    console.log(JSON.stringify({ results, loadMs, generateMs: genMs, tokensPerSecond: tokens / (genMs / 1000) }, null, 2));
    return;
  }
  for (const r of results) console.log(o.prompt.length > 1 ? `> ${r.prompt}\n${r.text}\n` : r.text);
  console.error(`(${tokens} tokens in ${(genMs / 1000).toFixed(2)} s, ${(tokens / (genMs / 1000)).toFixed(1)} tokens/s; load ${loadMs.toFixed(0)} ms)`);
}
