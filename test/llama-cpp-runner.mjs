// Runs in its own Node process, from a scratch folder where node-llama-cpp is installed (test/40):
// loads a GGUF file on the CPU, greedily continues token-id prompts and tokenizes texts, and prints
// one JSON line. node-llama-cpp tests its binary in a forked child, which needs a script file.
// Usage: node llama-cpp-runner.mjs SPEC_JSON_FILE, where the spec is
// { gguf, lora?: string (a GGUF LoRA adapter), prompts: number[][], newTokens, texts: string[] }.
import { readFileSync } from 'node:fs';

const { getLlama } = await import('node-llama-cpp');
const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
const model = await llama.loadModel({ modelPath: spec.gguf, gpuLayers: 0 });
const context = await model.createContext({ contextSize: 512, sequences: 1, threads: 1, ...(spec.lora ? { lora: { adapters: [{ filePath: spec.lora }] } } : {}) });
const sequence = context.getSequence();
const continuations = [];
const started = performance.now();
for (const prompt of spec.prompts) {
  await sequence.clearHistory();
  const out = [];
  // temperature 0: greedy; no repeat penalty, no token bias; the end-of-sequence token is a token like any other.
  for await (const token of sequence.evaluate(prompt, { temperature: 0, repeatPenalty: false, yieldEogToken: true })) {
    out.push(token);
    if (out.length >= spec.newTokens) break;
  }
  continuations.push(out);
}
const generateMs = performance.now() - started;
const tokenized = spec.texts.map((t) => model.tokenize(t, false));
console.log(JSON.stringify({ continuations, tokenized, generateMs, bos: model.tokens.bos, eos: model.tokens.eos }));
await context.dispose();
await model.dispose();
await llama.dispose();
