// `jfa merge` and `jfa export gguf`: a trained adapter folded into its base, for runtimes that do not
// know LoRA (transformers without PEFT, vLLM, llama.cpp, Ollama, node-llama-cpp).
import { mergeAdapter } from '../jfa/merge.js';

export interface MergeCommandOptions {
  model: string;
  adapter: string;
  out: string;
  json?: boolean;
}

export async function runMerge(o: MergeCommandOptions): Promise<void> {
  const r = await mergeAdapter({ model: o.model, adapter: o.adapter, out: o.out });
  if (o.json) console.log(JSON.stringify(r, null, 2));
  else console.log(`${r.out}: ${r.adapters.length} adapter${r.adapters.length > 1 ? 's' : ''} folded into ${o.model} (${(r.ms / 1000).toFixed(1)} s)`);
}
