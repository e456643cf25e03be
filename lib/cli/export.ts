// `jfa merge` and `jfa export gguf`: a trained adapter folded into its base, for runtimes that do not
// know LoRA (transformers without PEFT, vLLM, llama.cpp, Ollama, node-llama-cpp).
import { exportGguf } from '../jfa/export.js';
import { mergeAdapter } from '../jfa/merge.js';
import { type GgufTensorType } from '../model/gguf.js';

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

export interface ExportGgufCommandOptions {
  model: string;
  adapter?: string;
  out: string;
  type: string;
  asAdapter?: boolean;
  json?: boolean;
}

export async function runExportGguf(o: ExportGgufCommandOptions): Promise<void> {
  const r = await exportGguf({ model: o.model, adapter: o.adapter, out: o.out, type: o.type as GgufTensorType, asAdapter: o.asAdapter });
  if (o.json) console.log(JSON.stringify(r, null, 2));
  else
    console.log(
      `${r.out}: ${(r.bytes / 2 ** 20).toFixed(1)} MiB, ${r.type}` +
        `${o.asAdapter ? ', a LoRA adapter' : r.adapters.length ? `, ${r.adapters.length} adapter${r.adapters.length > 1 ? 's' : ''} folded in` : ''} (${(r.ms / 1000).toFixed(1)} s)`,
    );
}
